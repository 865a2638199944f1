//! The MLP actor-critic for classic control (`[policy] type = "mlp"`), as CleanRL's `ppo.py` and
//! `ppo_continuous_action.py` build it: separate actor and critic MLPs with tanh activations,
//! orthogonal initialisation (gain √2 for hidden layers, 0.01 for the actor's output, 1 for the
//! critic's), zero biases; a categorical head for `Discrete` actions and a diagonal Gaussian with
//! a state-independent learned log-std (initialised to 0) for `Box` actions.

use crate::env::Space;
use crate::error::{check, Error, Result};
use crate::optim::Params;
use crate::rng::Rng;
use candle_core::{DType, Device, Tensor, Var, D};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::any::Any;

mod fused;

/// `[policy] type = "mlp"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MlpPolicyConfig {
    /// Hidden layer sizes of both actor and critic.
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
}

fn default_hidden() -> Vec<usize> {
    vec![64, 64]
}

impl Default for MlpPolicyConfig {
    fn default() -> Self {
        Self {
            hidden: default_hidden(),
        }
    }
}

#[typetag::serde(name = "mlp")]
impl crate::policy::PolicyConfig for MlpPolicyConfig {
    fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() {
            return Err(Error::config(
                "hidden",
                "expected at least one hidden layer size",
            ));
        }
        for (i, h) in self.hidden.iter().enumerate() {
            check::positive_usize(&format!("hidden.{i}"), *h)?;
        }
        // Actor and critic each hold the hidden-to-hidden layers (input and output layers come
        // on top), trained with Adam.
        let params = crate::budget::mlp_params(&self.hidden).saturating_mul(2);
        crate::budget::check(
            "hidden",
            &format!("an actor-critic with hidden layers {:?} ({params} parameters at least, with gradients and Adam moments)", self.hidden),
            crate::budget::adam_training_bytes(params),
        )
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

crate::register_plugin!(
    PolicyConfig,
    "mlp",
    "MLP actor-critic (tanh, orthogonal init) for vector observations, CleanRL-style"
);

/// One dense layer `y = x Wᵀ + b` over parameters held in [`Params`].
#[derive(Debug, Clone)]
struct Dense {
    w: Tensor,
    b: Tensor,
}

impl Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(fused::bias_add(&x.matmul(&self.w.t()?)?, &self.b)?)
    }
}

/// An MLP of [`Dense`] layers with tanh between them.
#[derive(Debug, Clone)]
struct Mlp {
    layers: Vec<Dense>,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = h.apply_op1(FastTanh)?;
            }
        }
        Ok(h)
    }
}

/// tanh through one `expf` instead of libm's `tanhf` (which goes through the slower `expm1f`):
/// tanh made up a third of PPO's CPU time on CartPole. Accurate to ~1e-7 absolute.
struct FastTanh;

fn tanh_f32(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    // Beyond |x| = 9, tanh is 1 to within f32 precision.
    let t = (-2.0 * x.abs().min(9.0)).exp();
    ((1.0 - t) / (1.0 + t)).copysign(x)
}

impl candle_core::CustomOp1 for FastTanh {
    fn name(&self) -> &'static str {
        "fast-tanh"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let v = s.as_slice::<f32>()?;
        let v = match l.contiguous_offsets() {
            Some((a, b)) => &v[a..b],
            None => candle_core::bail!("fast-tanh needs a contiguous f32 tensor"),
        };
        let out: Vec<f32> = v.iter().map(|x| tanh_f32(*x)).collect();
        Ok((candle_core::CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // d tanh(x)/dx = 1 − tanh(x)², in one pass (fused::TanhGrad).
        Ok(Some(fused::TanhGrad::apply(res, grad_res)?))
    }
}

/// The action head.
#[derive(Debug, Clone)]
enum Head {
    Categorical { n: usize },
    Gaussian { dim: usize, log_std: Tensor },
}

/// Actor and critic networks.
#[derive(Debug)]
pub struct ActorCritic {
    actor: Mlp,
    critic: Mlp,
    head: Head,
    params: Params,
    obs_dim: usize,
}

/// Sampled actions with their log-probabilities and values (one row per sub-environment).
#[derive(Debug, Clone, Default)]
pub struct ActOutput {
    /// Flat actions: indices (as f32) for discrete, `[n * act_dim]` values for continuous.
    pub actions: Vec<f32>,
    /// log π(a|s).
    pub logprobs: Vec<f32>,
    /// V(s).
    pub values: Vec<f32>,
}

/// Differentiable evaluation of given actions.
#[derive(Debug)]
pub struct Evaluation {
    /// log π(a|s), `[B]`.
    pub logprob: Tensor,
    /// Entropy of π(·|s), `[B]`.
    pub entropy: Tensor,
    /// V(s), `[B]`.
    pub value: Tensor,
}

impl ActorCritic {
    /// Build with fresh orthogonal weights drawn from `rng`.
    pub fn new(
        cfg: &MlpPolicyConfig,
        obs: &Space,
        act: &Space,
        rng: &mut Rng,
        dev: &Device,
    ) -> Result<Self> {
        let obs_dim = match obs {
            Space::Box { low, .. } => low.len(),
            Space::Discrete { .. } => {
                return Err(Error::input(
                    "the mlp policy needs a Box observation space",
                    Some("one-hot encode discrete observations in the environment".into()),
                ))
            }
        };
        let (out_dim, head) = match act {
            Space::Discrete { n } => (*n, Head::Categorical { n: *n }),
            Space::Box { low, .. } => (
                low.len(),
                Head::Gaussian {
                    dim: low.len(),
                    log_std: Tensor::zeros(low.len(), DType::F32, dev)?,
                },
            ),
        };
        let mut params = Params::new();
        let sqrt2 = std::f64::consts::SQRT_2;
        let mut build = |name: &str, out_dim: usize, out_gain: f64| -> Result<Mlp> {
            let mut sizes = vec![obs_dim];
            sizes.extend(&cfg.hidden);
            sizes.push(out_dim);
            let mut layers = Vec::new();
            for i in 0..sizes.len() - 1 {
                let gain = if i + 2 == sizes.len() {
                    out_gain
                } else {
                    sqrt2
                };
                let w = orthogonal(sizes[i + 1], sizes[i], gain, rng);
                let w = Var::from_vec(w, (sizes[i + 1], sizes[i]), dev)?;
                let b = Var::zeros(sizes[i + 1], DType::F32, dev)?;
                layers.push(Dense {
                    w: w.as_tensor().clone(),
                    b: b.as_tensor().clone(),
                });
                params.insert(format!("{name}.{i}.weight"), w);
                params.insert(format!("{name}.{i}.bias"), b);
            }
            Ok(Mlp { layers })
        };
        let critic = build("critic", 1, 1.0)?;
        let actor = build("actor", out_dim, 0.01)?;
        let head = match head {
            Head::Gaussian { dim, log_std } => {
                let v = Var::from_tensor(&log_std)?;
                let t = v.as_tensor().clone();
                params.insert("actor.log_std".into(), v);
                Head::Gaussian { dim, log_std: t }
            }
            h => h,
        };
        Ok(Self {
            actor,
            critic,
            head,
            params,
            obs_dim,
        })
    }

    /// The trainable parameters by name.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Flat action dimension (1 for discrete).
    pub fn act_dim(&self) -> usize {
        match &self.head {
            Head::Categorical { .. } => 1,
            Head::Gaussian { dim, .. } => *dim,
        }
    }

    /// V(s) for a `[B, obs_dim]` batch, as `[B]`.
    pub fn value(&self, obs: &Tensor) -> Result<Tensor> {
        Ok(self.critic.forward(obs)?.squeeze(D::Minus1)?)
    }

    /// Values of flat observations `[n * obs_dim]`.
    pub fn values_of(&self, obs: &[f32]) -> Result<Vec<f32>> {
        let t = self.obs_tensor(obs)?;
        Ok(self.value(&t)?.to_vec1::<f32>()?)
    }

    fn obs_tensor(&self, obs: &[f32]) -> Result<Tensor> {
        let n = obs.len() / self.obs_dim;
        Ok(Tensor::from_slice(obs, (n, self.obs_dim), &Device::Cpu)?)
    }

    /// Sample actions for flat observations `[n * obs_dim]`; no gradients are recorded.
    pub fn act(&self, obs: &[f32], rng: &mut Rng) -> Result<ActOutput> {
        let x = self.obs_tensor(obs)?;
        let n = obs.len() / self.obs_dim;
        let values = self.value(&x)?.to_vec1::<f32>()?;
        let out = self.actor.forward(&x)?.to_vec2::<f32>()?;
        let mut actions = Vec::with_capacity(n * self.act_dim());
        let mut logprobs = Vec::with_capacity(n);
        match &self.head {
            Head::Categorical { n: k } => {
                for row in &out {
                    let lse = log_sum_exp(row);
                    let u: f64 = rand::Rng::random(rng);
                    let mut acc = 0.0f64;
                    let mut a = k - 1;
                    for (j, l) in row.iter().enumerate() {
                        acc += ((*l as f64) - lse).exp();
                        if u < acc {
                            a = j;
                            break;
                        }
                    }
                    actions.push(a as f32);
                    logprobs.push((row[a] as f64 - lse) as f32);
                }
            }
            Head::Gaussian { log_std, .. } => {
                let ls = log_std.to_vec1::<f32>()?;
                for row in &out {
                    let mut lp = 0.0f64;
                    for (mean, l) in row.iter().zip(&ls) {
                        let z: f64 = StandardNormal.sample(rng);
                        let a = *mean as f64 + (*l as f64).exp() * z;
                        actions.push(a as f32);
                        lp += -0.5 * z * z - *l as f64 - 0.5 * (2.0 * std::f64::consts::PI).ln();
                    }
                    logprobs.push(lp as f32);
                }
            }
        }
        Ok(ActOutput {
            actions,
            logprobs,
            values,
        })
    }

    /// log π(a|s), entropy and V(s) for a batch, differentiable.
    /// `obs`: `[B, obs_dim]`; `actions`: `[B]` (discrete, as f32 indices) or `[B, act_dim]`.
    pub fn evaluate(&self, obs: &Tensor, actions: &Tensor) -> Result<Evaluation> {
        let value = self.value(obs)?;
        let out = self.actor.forward(obs)?;
        let (logprob, entropy) = match &self.head {
            Head::Categorical { .. } => {
                let logp = candle_nn::ops::log_softmax(&out, D::Minus1)?;
                let idx = actions.to_dtype(DType::U32)?.unsqueeze(1)?;
                let logprob = logp.gather(&idx, 1)?.squeeze(1)?;
                let entropy = (logp.exp()? * &logp)?.sum(D::Minus1)?.neg()?;
                (logprob, entropy)
            }
            Head::Gaussian { log_std, dim } => {
                let std = log_std.exp()?;
                let z = actions.broadcast_sub(&out)?.broadcast_div(&std)?;
                let c = 0.5 * (2.0 * std::f64::consts::PI).ln();
                let lp = ((z.sqr()? * -0.5)?.broadcast_sub(log_std)? - c)?;
                let logprob = lp.sum(D::Minus1)?;
                let ent = (log_std.sum_all()? + (*dim as f64) * (0.5 + c))?;
                let entropy = ent.broadcast_as(logprob.shape())?.contiguous()?;
                (logprob, entropy)
            }
        };
        Ok(Evaluation {
            logprob,
            entropy,
            value,
        })
    }
}

fn log_sum_exp(row: &[f32]) -> f64 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b)) as f64;
    m + row.iter().map(|x| (*x as f64 - m).exp()).sum::<f64>().ln()
}

/// A `rows × cols` matrix with orthonormal rows or columns (whichever are fewer), scaled by
/// `gain` — the distribution of PyTorch's `orthogonal_` (QR of a Gaussian matrix with the sign
/// of R's diagonal folded in), computed here by modified Gram–Schmidt.
pub fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut Rng) -> Vec<f32> {
    // Work on a tall matrix (t_rows ≥ t_cols) stored column by column.
    let (t_rows, t_cols) = if rows >= cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    let mut q: Vec<Vec<f64>> = (0..t_cols)
        .map(|_| (0..t_rows).map(|_| StandardNormal.sample(rng)).collect())
        .collect();
    for j in 0..t_cols {
        for k in 0..j {
            let (done, rest) = q.split_at_mut(j);
            let (qk, qj) = (&done[k], &mut rest[0]);
            let dot: f64 = qj.iter().zip(qk).map(|(a, b)| a * b).sum();
            for (a, b) in qj.iter_mut().zip(qk) {
                *a -= dot * b;
            }
        }
        let norm = q[j].iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        for x in q[j].iter_mut() {
            *x /= norm;
        }
    }
    let mut out = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let v = if rows >= cols { q[c][r] } else { q[r][c] };
            out[r * cols + c] = (gain * v) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_tanh_matches_libm_and_differentiates() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            assert!((tanh_f32(x) - x.tanh()).abs() < 2e-7, "{x}");
        }
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(1e30), 1.0);
        let x = Var::from_slice(&[0.3f32, -1.2], 2, &Device::Cpu).unwrap();
        let y = x.as_tensor().apply_op1(FastTanh).unwrap();
        let y_vals = y.to_vec1::<f32>().unwrap();
        assert!((y_vals[1] - (-1.2f32).tanh()).abs() < 2e-7);
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (gi, xi) in g.iter().zip([0.3f32, -1.2]) {
            assert!((gi - (1.0 - xi.tanh().powi(2))).abs() < 1e-6);
        }
    }

    #[test]
    fn orthogonal_rows_or_columns_are_orthonormal() {
        let mut rng = crate::rng::stream(0, "t");
        for (r, c) in [(4, 3), (3, 4), (5, 5)] {
            let w = orthogonal(r, c, 2.0, &mut rng);
            type Entry<'a> = Box<dyn Fn(usize, usize) -> f32 + 'a>;
            let (n, m, get): (usize, usize, Entry) = if r >= c {
                (c, r, Box::new(|a, i| w[i * c + a]))
            } else {
                (r, c, Box::new(|a, i| w[a * c + i]))
            };
            for a in 0..n {
                for b in 0..n {
                    let dot: f32 = (0..m).map(|i| get(a, i) * get(b, i)).sum();
                    let want = if a == b { 4.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-4, "{r}x{c} {a},{b}: {dot}");
                }
            }
        }
    }

    #[test]
    fn sampled_logprobs_match_evaluate() {
        let dev = Device::Cpu;
        let obs_space = Space::Box {
            low: vec![-1.0; 3],
            high: vec![1.0; 3],
        };
        for act in [
            Space::Discrete { n: 4 },
            Space::Box {
                low: vec![-2.0; 2],
                high: vec![2.0; 2],
            },
        ] {
            let mut rng = crate::rng::stream(1, "t");
            let ac = ActorCritic::new(
                &MlpPolicyConfig::default(),
                &obs_space,
                &act,
                &mut rng,
                &dev,
            )
            .unwrap();
            let obs: Vec<f32> = (0..15).map(|i| (i as f32 * 0.37).sin()).collect();
            let out = ac.act(&obs, &mut rng).unwrap();
            let x = Tensor::from_slice(&obs, (5, 3), &dev).unwrap();
            let a = match act {
                Space::Discrete { .. } => Tensor::from_slice(&out.actions, 5, &dev).unwrap(),
                _ => Tensor::from_slice(&out.actions, (5, 2), &dev).unwrap(),
            };
            let ev = ac.evaluate(&x, &a).unwrap();
            let lp = ev.logprob.to_vec1::<f32>().unwrap();
            for (x, y) in lp.iter().zip(&out.logprobs) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
            let v = ev.value.to_vec1::<f32>().unwrap();
            assert_eq!(v, out.values);
            assert_eq!(ev.entropy.dims(), &[5]);
        }
    }
}
