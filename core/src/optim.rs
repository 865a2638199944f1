//! Adam (Kingma & Ba 2015) with global gradient-norm clipping, over a named, ordered set of
//! parameters, with state that goes into checkpoints. PyTorch's `torch.optim.Adam` semantics
//! (bias-corrected moments, `eps` added to the corrected second-moment root), which is what
//! CleanRL's PPO uses (`eps = 1e-5`).
//!
//! The update runs in plain Rust loops over the parameter buffers: for the small networks of
//! classic control this is several times faster than expressing it as tensor ops.

use crate::error::{Error, Result};
use candle_core::{backprop::GradStore, Tensor, Var};
use std::collections::{BTreeMap, HashMap};

/// Parameters by name, in a fixed order (so every run visits them identically).
pub type Params = BTreeMap<String, Var>;

/// Adam's hyper-parameters and state.
#[derive(Debug)]
pub struct Adam {
    /// Learning rate (changed by schedules between steps).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Steps taken.
    pub t: u64,
    m: BTreeMap<String, Vec<f32>>,
    v: BTreeMap<String, Vec<f32>>,
}

impl Adam {
    /// A fresh optimiser for `params`.
    pub fn new(params: &Params, lr: f64, eps: f64) -> Self {
        let zeros = |p: &Params| {
            p.iter()
                .map(|(k, v)| (k.clone(), vec![0.0f32; v.elem_count()]))
                .collect()
        };
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps,
            t: 0,
            m: zeros(params),
            v: zeros(params),
        }
    }

    /// One step from `grads`. If `max_grad_norm` is set, gradients are first scaled so their
    /// global L2 norm is at most that (PyTorch's `clip_grad_norm_`). Returns the norm before
    /// clipping. Parameters without a gradient are left alone (their moments too).
    pub fn step(
        &mut self,
        params: &Params,
        grads: &GradStore,
        max_grad_norm: Option<f64>,
    ) -> Result<f64> {
        let mut gs: Vec<(&String, &Var, Vec<f32>)> = Vec::with_capacity(params.len());
        for (name, var) in params {
            if let Some(g) = grads.get(var.as_tensor()) {
                gs.push((name, var, g.flatten_all()?.to_vec1::<f32>()?));
            }
        }
        let norm = gs
            .iter()
            .flat_map(|(_, _, g)| g.iter())
            .map(|x| (*x as f64) * (*x as f64))
            .sum::<f64>()
            .sqrt();
        let scale = match max_grad_norm {
            Some(max) if norm > max => (max / (norm + 1e-6)) as f32,
            _ => 1.0,
        };
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        let step_size = (self.lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let (b1, b2, eps) = (self.beta1 as f32, self.beta2 as f32, self.eps as f32);
        for (name, var, g) in gs {
            let m = self.m.get_mut(name).ok_or_else(|| missing(name))?;
            let v = self.v.get_mut(name).ok_or_else(|| missing(name))?;
            let mut p = var.flatten_all()?.to_vec1::<f32>()?;
            for i in 0..p.len() {
                let gi = g[i] * scale;
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                p[i] -= step_size * m[i] / (v[i].sqrt() / bc2_sqrt + eps);
            }
            var.set(&Tensor::from_vec(p, var.shape(), var.device())?)?;
        }
        Ok(norm)
    }

    /// The moments as named tensors (`adam.m.<param>`, `adam.v.<param>`) for a checkpoint.
    pub fn state_tensors(&self, params: &Params) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (name, var) in params {
            for (prefix, store) in [("adam.m.", &self.m), ("adam.v.", &self.v)] {
                let data = store.get(name).ok_or_else(|| missing(name))?;
                out.insert(
                    format!("{prefix}{name}"),
                    Tensor::from_slice(data, var.shape(), var.device())?,
                );
            }
        }
        Ok(out)
    }

    /// Restore moments saved by [`Adam::state_tensors`] and the step count.
    pub fn load_state(&mut self, t: u64, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (prefix, store) in [("adam.m.", &mut self.m), ("adam.v.", &mut self.v)] {
            for (name, data) in store.iter_mut() {
                let key = format!("{prefix}{name}");
                let tensor = tensors.get(&key).ok_or_else(|| {
                    Error::Internal(format!("checkpoint lacks optimiser tensor `{key}`"))
                })?;
                let v = tensor.flatten_all()?.to_vec1::<f32>()?;
                if v.len() != data.len() {
                    return Err(Error::Internal(format!(
                        "checkpoint tensor `{key}` has {} values, expected {}",
                        v.len(),
                        data.len()
                    )));
                }
                *data = v;
            }
        }
        self.t = t;
        Ok(())
    }
}

fn missing(name: &str) -> Error {
    Error::Internal(format!("optimiser has no state for parameter `{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adam_matches_hand_computation_and_clips() {
        let x = Var::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let mut params = Params::new();
        params.insert("x".into(), x.clone());
        let mut adam = Adam::new(&params, 0.1, 1e-8);
        // loss = sum(x^2) → grad 2x = [2, -4]; first Adam step moves each by lr·sign(g).
        let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
        let norm = adam.step(&params, &loss.backward().unwrap(), None).unwrap();
        assert!((norm - 20f64.sqrt()).abs() < 1e-5);
        let got = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (got[0] - 0.9).abs() < 1e-6 && (got[1] + 1.9).abs() < 1e-6,
            "{got:?}"
        );
        // Clipping scales the gradient; Adam's first step is scale-invariant, the moments are not.
        let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
        adam.step(&params, &loss.backward().unwrap(), Some(1e-3))
            .unwrap();
        let st = adam.state_tensors(&params).unwrap();
        let m = st["adam.m.x"].to_vec1::<f32>().unwrap();
        assert!(m[0].abs() < 0.2 && m[0] > 0.0, "{m:?}");
        let mut other = Adam::new(&params, 0.1, 1e-8);
        other.load_state(adam.t, &st).unwrap();
        assert_eq!(other.t, 2);
    }
}
