//! Trainable heads on a language model's final hidden states: the PPO value head (a scalar per
//! position, as TRL's `AutoModelForCausalLMWithValueHead`) and the Bradley–Terry reward head (a
//! scalar per sequence read at the last non-pad token, as HF `*ForSequenceClassification` with
//! one label). Both are f32 variables, separate from the frozen base weights.

use crate::lm::LmInput;
use candle_core::{DType, Device, Tensor, Var};
use maxmin_core::{rng, Result};
use rand::Rng as _;

/// A linear map hidden → 1 with its own variables.
#[derive(Debug, Clone)]
struct ScalarHead {
    weight: Var,
    bias: Var,
}

impl ScalarHead {
    fn new(hidden: usize, seed: u64, stream: &str, device: &Device) -> Result<Self> {
        let mut r = rng::stream(seed, stream);
        // nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in)) for the weight; bias zero so an
        // untrained head starts centred.
        let bound = 1.0 / (hidden as f64).sqrt();
        let w: Vec<f32> = (0..hidden)
            .map(|_| r.random_range(-bound..bound) as f32)
            .collect();
        Ok(ScalarHead {
            weight: Var::from_tensor(&Tensor::from_vec(w, (hidden, 1), device)?)?,
            bias: Var::zeros(1, DType::F32, device)?,
        })
    }

    /// `(…, hidden)` → `(…)`.
    fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        let h = *dims.last().unwrap_or(&0);
        let n: usize = dims[..dims.len() - 1].iter().product();
        let x = hidden.to_dtype(DType::F32)?.reshape((n, h))?;
        let y = x
            .matmul(self.weight.as_tensor())?
            .broadcast_add(self.bias.as_tensor())?;
        Ok(y.reshape(&dims[..dims.len() - 1])?)
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.weight.clone(), self.bias.clone()]
    }
}

/// PPO value head: one value per position.
#[derive(Debug, Clone)]
pub struct ValueHead(ScalarHead);

impl ValueHead {
    /// A fresh head for `hidden`-wide states, initialised from the stream `value-head` of `seed`.
    pub fn new(hidden: usize, seed: u64, device: &Device) -> Result<Self> {
        Ok(ValueHead(ScalarHead::new(
            hidden,
            seed,
            "value-head",
            device,
        )?))
    }

    /// `(batch, t, hidden)` → `(batch, t)` values, f32.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        self.0.forward(hidden)
    }

    /// Trainable variables.
    pub fn vars(&self) -> Vec<Var> {
        self.0.vars()
    }
}

/// Bradley–Terry reward head: one scalar per sequence, read at its last non-pad token.
#[derive(Debug, Clone)]
pub struct RewardHead(ScalarHead);

impl RewardHead {
    /// A fresh head for `hidden`-wide states, initialised from the stream `reward-head` of `seed`.
    pub fn new(hidden: usize, seed: u64, device: &Device) -> Result<Self> {
        Ok(RewardHead(ScalarHead::new(
            hidden,
            seed,
            "reward-head",
            device,
        )?))
    }

    /// `(batch, t, hidden)` states of `input` → `(batch,)` rewards, f32. Works for left and right
    /// padding alike.
    pub fn forward(&self, hidden: &Tensor, input: &LmInput) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        let idx: Vec<u32> = input
            .last_token_index()?
            .into_iter()
            .enumerate()
            .map(|(r, i)| (r * t + i) as u32)
            .collect();
        let idx = Tensor::from_vec(idx, b, hidden.device())?;
        let last = hidden.reshape((b * t, h))?.index_select(&idx, 0)?;
        self.0.forward(&last)
    }

    /// Trainable variables.
    pub fn vars(&self) -> Vec<Var> {
        self.0.vars()
    }
}
