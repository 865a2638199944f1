//! Bradley–Terry reward models for control (`[reward-model]`, docs/algorithms.md "Setup"): a per-step
//! reward r(obs, action), summed over a segment, trained to minimise
//! −E[log σ(r(y_w) − r(y_l))] with a stable log-sigmoid (softplus(−d) = max(−d, 0) +
//! log(1 + e^(−|d|)); never log(e^a / (e^a + e^b)), which overflows as the released scripts do).
//!
//! Two plugins build the same runtime [`RewardModel`]:
//! - `type = "mlp-reward"`: an MLP (tanh) over the step features;
//! - `type = "linear-reward"`: a linear function of the step features, trained on per-segment
//!   feature sums (exact for a linear model, and much cheaper).
//!
//! Step features: the observation, the action one-hot (Discrete) or vector (Box), and with
//! `squares = true` the squared observation. Training uses core's [`Adam`] on minibatches of
//! comparisons, each optionally weighted (the soft E-step's responsibilities).

use super::data::Comparison;
use crate::env::Space;
use crate::error::{check, Error, Result};
use crate::mlp::orthogonal;
use crate::optim::{Adam, Params};
use crate::policy::RewardModelConfig;
use crate::rng::Rng;
use candle_core::{Device, Tensor, Var, D};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::HashMap;

/// How a reward model is trained (shared by both plugins).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrainOptions {
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Epochs over the data for a model trained from scratch (single pooled and oracle models).
    pub epochs: usize,
    /// Comparisons per minibatch.
    pub batch_size: usize,
}

impl TrainOptions {
    fn validate(&self) -> Result<()> {
        check::positive_f64("learning-rate", self.learning_rate)?;
        check::positive_usize("epochs", self.epochs)?;
        check::positive_usize("batch-size", self.batch_size)
    }
}

/// `[reward-model] type = "mlp-reward"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MlpRewardConfig {
    /// Hidden layer sizes (tanh between layers).
    #[serde(default = "d_hidden")]
    pub hidden: Vec<usize>,
    /// Add squared observations to the step features.
    #[serde(default)]
    pub squares: bool,
    /// Training options.
    #[serde(flatten)]
    pub train: TrainOptions,
}

fn d_hidden() -> Vec<usize> {
    vec![32]
}

/// `[reward-model] type = "linear-reward"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LinearRewardConfig {
    /// Add squared observations to the step features.
    #[serde(default)]
    pub squares: bool,
    /// Training options.
    #[serde(flatten)]
    pub train: TrainOptions,
}

impl Default for LinearRewardConfig {
    fn default() -> Self {
        Self {
            squares: false,
            train: TrainOptions {
                learning_rate: 0.05,
                epochs: 30,
                batch_size: 256,
            },
        }
    }
}

#[typetag::serde(name = "mlp-reward")]
impl RewardModelConfig for MlpRewardConfig {
    fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() {
            return Err(Error::config(
                "hidden",
                "expected at least one hidden layer (or use `linear-reward`)",
            ));
        }
        for (i, h) in self.hidden.iter().enumerate() {
            check::positive_usize(&format!("hidden.{i}"), *h)?;
        }
        self.train.validate()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[typetag::serde(name = "linear-reward")]
impl RewardModelConfig for LinearRewardConfig {
    fn validate(&self) -> Result<()> {
        self.train.validate()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

crate::register_plugin!(
    RewardModelConfig,
    "mlp-reward",
    "BT reward model: MLP r(obs, action) summed over a segment"
);
crate::register_plugin!(
    RewardModelConfig,
    "linear-reward",
    "BT reward model: linear r(obs, action) over step features, summed over a segment"
);

/// What a reward-model config asks for, whichever plugin it came from.
#[derive(Debug, Clone)]
pub struct RewardSpec {
    /// Hidden sizes (empty: linear).
    pub hidden: Vec<usize>,
    /// Squared observations as features.
    pub squares: bool,
    /// Training options.
    pub train: TrainOptions,
}

impl RewardSpec {
    /// From a `[reward-model]` config; an unsupported plugin is a config error.
    pub fn from_config(cfg: &dyn RewardModelConfig) -> Result<Self> {
        let any = cfg.as_any();
        if let Some(c) = any.downcast_ref::<MlpRewardConfig>() {
            return Ok(Self {
                hidden: c.hidden.clone(),
                squares: c.squares,
                train: c.train.clone(),
            });
        }
        if let Some(c) = any.downcast_ref::<LinearRewardConfig>() {
            return Ok(Self {
                hidden: vec![],
                squares: c.squares,
                train: c.train.clone(),
            });
        }
        Err(Error::config(
            "reward-model.type",
            "the control preference stage needs `mlp-reward` or `linear-reward`",
        ))
    }
}

/// Step features of `(obs, action)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Observation length.
    pub obs_dim: usize,
    /// Action space (Discrete actions are one-hot encoded).
    pub action_space: Space,
    /// Append squared observations.
    pub squares: bool,
}

impl Features {
    /// Feature length.
    pub fn dim(&self) -> usize {
        let a = match &self.action_space {
            Space::Discrete { n } => *n,
            Space::Box { low, .. } => low.len(),
        };
        self.obs_dim * if self.squares { 2 } else { 1 } + a
    }

    /// Width of a data row `obs ++ act`.
    pub fn row_width(&self) -> usize {
        self.obs_dim + self.action_space.dim()
    }

    /// Append the features of one step to `out`.
    pub fn encode(&self, obs: &[f32], act: &[f32], out: &mut Vec<f32>) {
        out.extend_from_slice(obs);
        if self.squares {
            out.extend(obs.iter().map(|x| x * x));
        }
        match &self.action_space {
            Space::Discrete { n } => {
                let a = (act[0].max(0.0) as usize).min(n - 1);
                out.extend((0..*n).map(|i| if i == a { 1.0 } else { 0.0 }));
            }
            Space::Box { .. } => out.extend_from_slice(act),
        }
    }
}

/// Comparisons encoded for training and scoring: per comparison, chosen then rejected, each
/// padded to the longest segment (`mask` marks real steps), plus per-segment feature sums.
/// Built by [`Encoded::from_sums`], only the sums are held: enough for a linear model, whose
/// segment reward is a function of the feature sum, at a fraction of the memory when features
/// are wide (e.g. a token one-hot at vocabulary width).
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Number of comparisons.
    pub m: usize,
    l: usize,
    f: usize,
    /// Per-step rows `[m, 2·l·f]` and their mask `[m, 2·l]`; `None` when built from sums.
    steps: Option<(Tensor, Tensor)>,
    sums: Tensor,
}

impl Encoded {
    /// Encode control comparisons (text segments are an input error).
    pub fn new(cs: &[&Comparison], feats: &Features) -> Result<Self> {
        let l = cs
            .iter()
            .flat_map(|c| [&c.chosen, &c.rejected])
            .map(|s| s.rows().map_or(0, |r| r.len()))
            .max()
            .unwrap_or(1);
        let f = feats.dim();
        let w = feats.row_width();
        let mut x = Vec::with_capacity(cs.len() * 2 * l * f);
        let mut mask = Vec::with_capacity(cs.len() * 2 * l);
        let mut sums = Vec::with_capacity(cs.len() * 2 * f);
        let mut step = Vec::with_capacity(f);
        for c in cs {
            for s in [&c.chosen, &c.rejected] {
                let rows = s.rows().ok_or_else(|| {
                    Error::input(
                        format!(
                            "user {}: text segments cannot train a control reward model",
                            c.user
                        ),
                        None,
                    )
                })?;
                let mut sum = vec![0f32; f];
                for t in 0..l {
                    step.clear();
                    match rows.get(t) {
                        Some(r) if r.len() == w => {
                            feats.encode(&r[..feats.obs_dim], &r[feats.obs_dim..], &mut step);
                            mask.push(1.0f32);
                        }
                        Some(r) => {
                            return Err(Error::input(
                                format!("user {}: a segment row has {} values, expected obs ({}) + action ({})", c.user, r.len(), feats.obs_dim, w - feats.obs_dim),
                                None,
                            ))
                        }
                        None => {
                            step.resize(f, 0.0);
                            mask.push(0.0f32);
                        }
                    }
                    for (a, b) in sum.iter_mut().zip(&step) {
                        *a += b;
                    }
                    x.extend_from_slice(&step);
                }
                sums.extend_from_slice(&sum);
            }
        }
        let m = cs.len();
        let dev = Device::Cpu;
        Ok(Self {
            m,
            l,
            f,
            steps: Some((
                Tensor::from_vec(x, (m, 2 * l * f), &dev)?,
                Tensor::from_vec(mask, (m, 2 * l), &dev)?,
            )),
            sums: Tensor::from_vec(sums, (m, 2 * f), &dev)?,
        })
    }

    /// Comparisons given only their per-segment feature sums: `sums` is `[m][2][feats.dim()]`
    /// row-major (chosen, then rejected). Only linear models can train on or score the result.
    pub fn from_sums(sums: Vec<f32>, m: usize, feats: &Features) -> Result<Self> {
        let f = feats.dim();
        if sums.len() != m * 2 * f {
            return Err(Error::Internal(format!(
                "{} feature-sum values for {m} comparisons of 2 × {f} features",
                sums.len()
            )));
        }
        Ok(Self {
            m,
            l: 0,
            f,
            steps: None,
            sums: Tensor::from_vec(sums, (m, 2 * f), &Device::Cpu)?,
        })
    }
}

/// A trained (or training) reward model r(obs, action).
#[derive(Debug)]
pub struct RewardModel {
    feats: Features,
    layers: Vec<(Var, Var)>,
    params: Params,
}

impl RewardModel {
    /// Fresh weights from `rng` (orthogonal, gain √2 for hidden layers and 1 for the output).
    pub fn new(hidden: &[usize], feats: Features, rng: &mut Rng) -> Result<Self> {
        let mut sizes = vec![feats.dim()];
        sizes.extend_from_slice(hidden);
        sizes.push(1);
        let mut layers = Vec::new();
        let mut params = Params::new();
        for i in 0..sizes.len() - 1 {
            let gain = if i + 2 == sizes.len() {
                1.0
            } else {
                2f64.sqrt()
            };
            let w = Var::from_vec(
                orthogonal(sizes[i + 1], sizes[i], gain, rng),
                (sizes[i + 1], sizes[i]),
                &Device::Cpu,
            )?;
            let b = Var::zeros(sizes[i + 1], candle_core::DType::F32, &Device::Cpu)?;
            params.insert(format!("l{i}.weight"), w.clone());
            params.insert(format!("l{i}.bias"), b.clone());
            layers.push((w, b));
        }
        Ok(Self {
            feats,
            layers,
            params,
        })
    }

    /// The step features it reads.
    pub fn features(&self) -> &Features {
        &self.feats
    }

    fn is_linear(&self) -> bool {
        self.layers.len() == 1
    }

    /// Per-row rewards of a `[n, F]` feature tensor, `[n]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            if i + 1 < self.layers.len() {
                h = h.tanh()?;
            }
        }
        Ok(h.squeeze(D::Minus1)?)
    }

    /// r(obs_i, act_i) for a batch: `obs` is `[n * obs_dim]`, `act` `[n * act_dim]` (a
    /// Discrete action as its index), row-major — what a PPO rollout holds.
    pub fn reward_batch(&self, obs: &[f32], act: &[f32]) -> Result<Vec<f32>> {
        let od = self.feats.obs_dim;
        let ad = self.feats.action_space.dim();
        if od == 0 || !obs.len().is_multiple_of(od) || act.len() != obs.len() / od * ad {
            return Err(Error::input(
                format!("reward_batch: {} observation values and {} action values do not make rows of {od} + {ad}", obs.len(), act.len()),
                None,
            ));
        }
        let n = obs.len() / od;
        let mut x = Vec::with_capacity(n * self.feats.dim());
        for i in 0..n {
            self.feats.encode(
                &obs[i * od..(i + 1) * od],
                &act[i * ad..(i + 1) * ad],
                &mut x,
            );
        }
        let x = Tensor::from_vec(x, (n, self.feats.dim()), &Device::Cpu)?;
        Ok(self.forward(&x)?.to_vec1::<f32>()?)
    }

    /// r(obs, act) for one step.
    pub fn reward(&self, obs: &[f32], act: &[f32]) -> Result<f32> {
        Ok(self.reward_batch(obs, act)?[0])
    }

    /// Score differences d = R(chosen) − R(rejected) for comparisons `rows` of `data`, `[b]`.
    fn diffs_t(&self, data: &Encoded, rows: &Tensor) -> Result<Tensor> {
        let b = rows.dim(0)?;
        let s = if self.is_linear() {
            let sums = data.sums.index_select(rows, 0)?.reshape((b * 2, data.f))?;
            self.forward(&sums)?.reshape((b, 2))?
        } else {
            let (x, mask) = data.steps.as_ref().ok_or_else(|| {
                Error::Internal(
                    "comparisons encoded as feature sums can only train a linear reward model"
                        .into(),
                )
            })?;
            let x = x.index_select(rows, 0)?.reshape((b * 2 * data.l, data.f))?;
            let mask = mask.index_select(rows, 0)?;
            let r = self.forward(&x)?.reshape((b, 2 * data.l))?;
            (r * mask)?.reshape((b, 2, data.l))?.sum(2)?
        };
        // The linear bias adds L·b to both sides: only differences matter.
        Ok((s.narrow(1, 0, 1)? - s.narrow(1, 1, 1)?)?.squeeze(1)?)
    }

    /// d = R(chosen) − R(rejected) for every comparison of `data`.
    pub fn diffs(&self, data: &Encoded) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(data.m);
        let chunk = 2048;
        for start in (0..data.m).step_by(chunk) {
            let n = chunk.min(data.m - start);
            let rows = Tensor::arange(start as u32, (start + n) as u32, &Device::Cpu)?;
            out.extend(self.diffs_t(data, &rows)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Train on comparisons `rows` of `data` for `epochs` (weights per comparison, if given:
    /// the loss is the weighted mean). Returns the last epoch's mean loss.
    pub fn train(
        &mut self,
        data: &Encoded,
        rows: &[usize],
        weights: Option<&[f32]>,
        opts: &TrainOptions,
        epochs: usize,
        rng: &mut Rng,
    ) -> Result<f64> {
        if rows.is_empty() {
            return Ok(f64::NAN);
        }
        let mut adam = Adam::new(&self.params, opts.learning_rate, 1e-8);
        let mut order = rows.to_vec();
        let mut last = f64::NAN;
        for _ in 0..epochs {
            order.shuffle(rng);
            let (mut tot, mut wsum) = (0f64, 0f64);
            for batch in order.chunks(opts.batch_size) {
                let idx: Vec<u32> = batch.iter().map(|&i| i as u32).collect();
                let w: Vec<f32> = match weights {
                    Some(w) => batch.iter().map(|&i| w[i]).collect(),
                    None => vec![1.0; batch.len()],
                };
                let ws: f32 = w.iter().sum();
                if ws <= 0.0 {
                    continue;
                }
                let idx = Tensor::from_vec(idx, batch.len(), &Device::Cpu)?;
                let d = self.diffs_t(data, &idx)?;
                let wt = Tensor::from_vec(w, batch.len(), &Device::Cpu)?;
                let loss = (neg_log_sigmoid(&d)? * wt)?
                    .sum_all()?
                    .affine(1.0 / ws as f64, 0.0)?;
                tot += loss.to_scalar::<f32>()? as f64 * ws as f64;
                wsum += ws as f64;
                adam.step(&self.params, &loss.backward()?, Some(10.0))?;
            }
            last = tot / wsum.max(1e-12);
        }
        Ok(last)
    }

    /// A deep copy (independent parameters).
    pub fn try_clone(&self) -> Result<Self> {
        let mut params = Params::new();
        let mut layers = Vec::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            let w = Var::from_tensor(&w.as_tensor().copy()?)?;
            let b = Var::from_tensor(&b.as_tensor().copy()?)?;
            params.insert(format!("l{i}.weight"), w.clone());
            params.insert(format!("l{i}.bias"), b.clone());
            layers.push((w, b));
        }
        Ok(Self {
            feats: self.feats.clone(),
            layers,
            params,
        })
    }

    /// Named weights (`<prefix>.l0.weight`, …) for a checkpoint or safetensors file.
    pub fn tensors(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|(k, v)| (format!("{prefix}.{k}"), v.as_tensor().clone()))
            .collect()
    }

    /// Load weights saved by [`RewardModel::tensors`].
    pub fn load(&mut self, prefix: &str, t: &HashMap<String, Tensor>) -> Result<()> {
        for (k, v) in &self.params {
            let key = format!("{prefix}.{k}");
            let src = t
                .get(&key)
                .ok_or_else(|| Error::Internal(format!("checkpoint lacks `{key}`")))?;
            if src.shape() != v.shape() {
                return Err(Error::Internal(format!(
                    "checkpoint tensor `{key}` has shape {:?}, expected {:?}",
                    src.shape(),
                    v.shape()
                )));
            }
            v.set(src)?;
        }
        Ok(())
    }
}

/// −log σ(d) = softplus(−d) = max(−d, 0) + log(1 + e^(−|d|)), finite for any finite d.
pub fn neg_log_sigmoid(d: &Tensor) -> Result<Tensor> {
    let a = d.neg()?.relu()?;
    let b = (d.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((a + b)?)
}

/// log σ(d) in f64, finite for any finite d.
pub fn log_sigmoid(d: f64) -> f64 {
    d.min(0.0) - (-d.abs()).exp().ln_1p()
}

/// Fraction of `rows` where the model ranks chosen above rejected (ties count ½).
pub fn accuracy(diffs: &[f32], rows: &[usize]) -> f64 {
    if rows.is_empty() {
        return f64::NAN;
    }
    rows.iter()
        .map(|&i| match diffs[i].partial_cmp(&0.0) {
            Some(std::cmp::Ordering::Greater) => 1.0,
            Some(std::cmp::Ordering::Equal) => 0.5,
            _ => 0.0,
        })
        .sum::<f64>()
        / rows.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefs::data::Segment;

    #[test]
    fn log_sigmoid_is_finite_at_extremes() {
        assert!(log_sigmoid(1e4).abs() < 1e-12);
        assert!((log_sigmoid(-1e4) + 1e4).abs() < 1e-6);
        let d = Tensor::new(&[1e4f32, -1e4, 0.0], &Device::Cpu).unwrap();
        let v = neg_log_sigmoid(&d).unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
        assert!((v[1] - 1e4).abs() < 1.0 && (v[2] - 2f32.ln()).abs() < 1e-6);
    }

    /// A linear model scores comparisons built from feature sums exactly as from their rows;
    /// an MLP refuses them.
    #[test]
    fn sums_only_encoding_matches_rows_for_a_linear_model() {
        let feats = Features {
            obs_dim: 2,
            action_space: Space::Box {
                low: vec![],
                high: vec![],
            },
            squares: false,
        };
        let seg = |v: &[[f32; 2]]| Segment::Rows(v.iter().map(|r| r.to_vec()).collect());
        let c = Comparison {
            user: "u".into(),
            context: serde_json::Value::Null,
            chosen: seg(&[[1.0, 2.0], [0.5, -1.0]]),
            rejected: seg(&[[0.0, 3.0]]),
            group: None,
        };
        let rows = Encoded::new(&[&c], &feats).unwrap();
        let sums = Encoded::from_sums(vec![1.5, 1.0, 0.0, 3.0], 1, &feats).unwrap();
        let mut rng = crate::rng::stream(1, "t");
        let lin = RewardModel::new(&[], feats.clone(), &mut rng).unwrap();
        let (a, b) = (lin.diffs(&rows).unwrap(), lin.diffs(&sums).unwrap());
        assert!((a[0] - b[0]).abs() < 1e-6, "{a:?} vs {b:?}");
        let mlp = RewardModel::new(&[4], feats.clone(), &mut rng).unwrap();
        let e = mlp.diffs(&sums).unwrap_err().to_string();
        assert!(e.contains("linear"), "{e}");
        assert!(Encoded::from_sums(vec![0.0; 3], 1, &feats).is_err());
    }

    #[test]
    fn linear_and_mlp_learn_a_linear_preference() {
        // Preference: larger first observation wins; both models must learn it.
        let mut rng = crate::rng::stream(3, "t");
        use rand::Rng as _;
        let seg = |rng: &mut Rng| {
            Segment::Rows(
                (0..3)
                    .map(|_| {
                        vec![
                            rng.random_range(-1.0..1.0f32),
                            rng.random_range(0..2) as f32,
                        ]
                    })
                    .collect(),
            )
        };
        let mut cs = Vec::new();
        for _ in 0..300 {
            let (a, b) = (seg(&mut rng), seg(&mut rng));
            let s = |s: &Segment| s.rows().unwrap().iter().map(|r| r[0]).sum::<f32>();
            let (c, r) = if s(&a) > s(&b) { (a, b) } else { (b, a) };
            cs.push(Comparison {
                user: "u".into(),
                context: serde_json::Value::Null,
                chosen: c,
                rejected: r,
                group: None,
            });
        }
        let feats = Features {
            obs_dim: 1,
            action_space: Space::Discrete { n: 2 },
            squares: false,
        };
        let refs: Vec<&Comparison> = cs.iter().collect();
        let data = Encoded::new(&refs, &feats).unwrap();
        let all: Vec<usize> = (0..cs.len()).collect();
        let opts = TrainOptions {
            learning_rate: 0.05,
            epochs: 20,
            batch_size: 64,
        };
        for hidden in [vec![], vec![8]] {
            let mut m = RewardModel::new(&hidden, feats.clone(), &mut rng).unwrap();
            m.train(&data, &all, None, &opts, 20, &mut rng).unwrap();
            let acc = accuracy(&m.diffs(&data).unwrap(), &all);
            assert!(acc > 0.95, "hidden {hidden:?}: accuracy {acc}");
            let hi = m.reward(&[0.9], &[0.0]).unwrap();
            let lo = m.reward(&[-0.9], &[0.0]).unwrap();
            assert!(hi > lo);
            let c = m.try_clone().unwrap();
            assert_eq!(
                c.reward_batch(&[0.9, -0.9], &[0.0, 1.0]).unwrap(),
                m.reward_batch(&[0.9, -0.9], &[0.0, 1.0]).unwrap()
            );
        }
    }
}
