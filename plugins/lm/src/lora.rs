//! LoRA adapters (Hu et al. 2021, as PEFT implements them): a frozen linear `W` becomes
//! `W x + (alpha / rank) · B A dropout(x)` with `A` (`rank × in`) Kaiming-uniform initialised and
//! `B` (`out × rank`) zero, so a fresh adapter leaves the model unchanged. Adapters live in their
//! own variables, apart from the memory-mapped base weights, so an optimiser over
//! [`Lora::vars`] (plus the heads' vars) trains only them, and the base model called without
//! adapters is the frozen reference policy at no extra memory.

use candle_core::{DType, Device, Tensor, Var};
use maxmin_core::error::check;
use maxmin_core::{rng, Error, Result};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// `[policy.lora]`: which linear layers get adapters and how big they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r of the update `B A`.
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// Scale numerator: the update is multiplied by `alpha / rank`.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Dropout probability on the adapter input while training (0 disables).
    #[serde(default)]
    pub dropout: f64,
    /// Module names to adapt, matched against the end of each module path (`c_attn` matches
    /// `h.3.attn.c_attn`); empty = the model's default (GPT-2: `c_attn`; Llama: `q_proj`, `v_proj`).
    #[serde(default)]
    pub target_modules: Vec<String>,
}

fn default_rank() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: default_rank(),
            alpha: default_alpha(),
            dropout: 0.0,
            target_modules: Vec::new(),
        }
    }
}

impl LoraConfig {
    /// Check values; errors name keys relative to the `lora` table.
    pub fn validate(&self) -> Result<()> {
        check::positive_usize("rank", self.rank)?;
        check::positive_f64("alpha", self.alpha)?;
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(Error::config(
                "dropout",
                format!("expected a probability in [0, 1), found {}", self.dropout),
            ));
        }
        if let Some(i) = self.target_modules.iter().position(|m| m.trim().is_empty()) {
            return Err(Error::config(
                format!("target-modules[{i}]"),
                "empty module name",
            ));
        }
        Ok(())
    }
}

/// A linear module that LoRA can adapt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraTarget {
    /// Module path as in the checkpoint without `.weight` (`h.0.attn.c_attn`, `model.layers.0.self_attn.q_proj`).
    pub name: String,
    /// Input width.
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
}

fn matches(target: &str, module: &str) -> bool {
    module == target || module.ends_with(&format!(".{target}"))
}

/// A set of adapters for one model.
pub struct Lora {
    adapters: BTreeMap<String, (Var, Var)>,
    scale: f64,
    dropout: f64,
    training: AtomicBool,
    dropout_rng: Mutex<rng::Rng>,
}

impl std::fmt::Debug for Lora {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lora")
            .field("modules", &self.adapters.keys().collect::<Vec<_>>())
            .field("scale", &self.scale)
            .finish()
    }
}

impl Lora {
    /// Adapters for every module of `targets` that `cfg.target_modules` (or `defaults` when
    /// empty) selects; `A` drawn from the seeded stream `lora/init` of `seed`. Adapter weights are
    /// f32 whatever the model's compute dtype, so small updates are not lost to rounding.
    pub fn new(
        cfg: &LoraConfig,
        targets: &[LoraTarget],
        defaults: &[&str],
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let wanted: Vec<String> = if cfg.target_modules.is_empty() {
            defaults.iter().map(|s| s.to_string()).collect()
        } else {
            cfg.target_modules.clone()
        };
        for (i, w) in wanted.iter().enumerate() {
            if !targets.iter().any(|t| matches(w, &t.name)) {
                let mut leaves: Vec<&str> = targets
                    .iter()
                    .map(|t| t.name.rsplit('.').next().unwrap_or(&t.name))
                    .collect();
                leaves.sort_unstable();
                leaves.dedup();
                return Err(Error::Config {
                    loc: maxmin_core::error::Location {
                        key: Some(format!("target-modules[{i}]")),
                        ..Default::default()
                    },
                    msg: format!("`{w}` matches no linear module of this model"),
                    hint: Some(format!("modules: {}", leaves.join(", "))),
                });
            }
        }
        let mut init = rng::stream(seed, "lora/init");
        let mut adapters = BTreeMap::new();
        for t in targets
            .iter()
            .filter(|t| wanted.iter().any(|w| matches(w, &t.name)))
        {
            // PEFT: kaiming_uniform_(a = sqrt(5)) → U(-1/sqrt(in), 1/sqrt(in)).
            let bound = 1.0 / (t.in_dim as f64).sqrt();
            let a: Vec<f32> = (0..cfg.rank * t.in_dim)
                .map(|_| init.random_range(-bound..bound) as f32)
                .collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (cfg.rank, t.in_dim), device)?)?;
            let b = Var::zeros((t.out_dim, cfg.rank), DType::F32, device)?;
            adapters.insert(t.name.clone(), (a, b));
        }
        Ok(Lora {
            adapters,
            scale: cfg.alpha / cfg.rank as f64,
            dropout: cfg.dropout,
            training: AtomicBool::new(false),
            dropout_rng: Mutex::new(rng::stream(seed, "lora/dropout")),
        })
    }

    /// Every trainable variable (A and B of each module), in a stable order.
    pub fn vars(&self) -> Vec<Var> {
        self.adapters
            .values()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect()
    }

    /// Named trainable tensors (`<module>.lora_A.weight`, `<module>.lora_B.weight`, PEFT names).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.adapters
            .iter()
            .flat_map(|(n, (a, b))| {
                [
                    (format!("{n}.lora_A.weight"), a.as_tensor().clone()),
                    (format!("{n}.lora_B.weight"), b.as_tensor().clone()),
                ]
            })
            .collect()
    }

    /// Adapted module paths.
    pub fn modules(&self) -> Vec<&str> {
        self.adapters.keys().map(|s| s.as_str()).collect()
    }

    /// Training mode turns dropout on.
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    /// Module `name`'s `(A, B)` (the variables' tensors, gradients tracked), for forwards that
    /// apply the update themselves ([`crate::cpu`]); `None` when `name` is not adapted.
    pub(crate) fn adapter(&self, name: &str) -> Option<(Tensor, Tensor)> {
        self.adapters
            .get(name)
            .map(|(a, b)| (a.as_tensor().clone(), b.as_tensor().clone()))
    }

    /// The update's scale, `alpha / rank`.
    pub(crate) fn scale(&self) -> f64 {
        self.scale
    }

    /// Whether a forward now draws a dropout mask (training mode with dropout > 0).
    pub(crate) fn dropout_active(&self) -> bool {
        self.dropout > 0.0 && self.is_training()
    }

    /// Whether dropout is on.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// `base + scale · (dropout(x) Aᵀ) Bᵀ` for module `name` (unchanged when not adapted);
    /// `x` is `(…, in)`, `base` is `(…, out)`.
    pub fn apply(&self, name: &str, x: &Tensor, base: Tensor) -> Result<Tensor> {
        self.apply_with(name, x, base, true)
    }

    /// [`Lora::apply`]; with `grad = false` the adapters enter as constants, so no graph is kept
    /// for a backward pass (generation and scoring).
    pub fn apply_with(&self, name: &str, x: &Tensor, base: Tensor, grad: bool) -> Result<Tensor> {
        let Some((a, b)) = self.adapters.get(name) else {
            return Ok(base);
        };
        let (a, b) = if grad {
            (a.as_tensor().clone(), b.as_tensor().clone())
        } else {
            (a.as_tensor().detach(), b.as_tensor().detach())
        };
        let dtype = base.dtype();
        let mut x = x.to_dtype(DType::F32)?;
        if self.dropout > 0.0 && self.training.load(Ordering::Relaxed) {
            let keep = 1.0 - self.dropout;
            let mut rng = self
                .dropout_rng
                .lock()
                .map_err(|_| Error::Internal("LoRA dropout RNG lock poisoned".into()))?;
            let mask: Vec<f32> = (0..x.elem_count())
                .map(|_| {
                    if rng.random::<f64>() < keep {
                        (1.0 / keep) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
            x = (x * mask)?;
        }
        // Scaled at rank width (… × r), not at output width; batched (broadcast) products, so
        // no reshape of the output-wide tensors.
        let delta = (x.broadcast_matmul(&a.t()?)? * self.scale)?.broadcast_matmul(&b.t()?)?;
        Ok((base + delta.to_dtype(dtype)?)?)
    }

    /// Save the adapters as safetensors (PEFT tensor names).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let map: std::collections::HashMap<String, Tensor> =
            self.named_tensors().into_iter().collect();
        candle_core::safetensors::save(&map, path)
            .map_err(|e| Error::data(path, None, e.to_string()))
    }

    /// Load adapter weights saved by [`Lora::save`] into this (same-shaped) set.
    pub fn load_weights(&self, path: &std::path::Path) -> Result<()> {
        let map = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::data(path, None, e.to_string()))?;
        for (n, (a, b)) in &self.adapters {
            for (suffix, var) in [("lora_A", a), ("lora_B", b)] {
                let key = format!("{n}.{suffix}.weight");
                let t = map
                    .get(&key)
                    .ok_or_else(|| Error::data(path, None, format!("missing tensor `{key}`")))?;
                if t.dims() != var.dims() {
                    return Err(Error::data(
                        path,
                        None,
                        format!(
                            "tensor `{key}`: expected shape {:?}, found {:?}",
                            var.dims(),
                            t.dims()
                        ),
                    ));
                }
                var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Vec<LoraTarget> {
        vec![
            LoraTarget {
                name: "h.0.attn.c_attn".into(),
                in_dim: 4,
                out_dim: 12,
            },
            LoraTarget {
                name: "h.0.attn.c_proj".into(),
                in_dim: 4,
                out_dim: 4,
            },
            LoraTarget {
                name: "h.0.mlp.c_proj".into(),
                in_dim: 16,
                out_dim: 4,
            },
        ]
    }

    #[test]
    fn suffix_matching_and_unknown_module_error() {
        let cfg = LoraConfig {
            rank: 2,
            target_modules: vec!["c_proj".into()],
            ..Default::default()
        };
        let l = Lora::new(&cfg, &targets(), &["c_attn"], 0, &Device::Cpu).unwrap();
        assert_eq!(l.modules(), vec!["h.0.attn.c_proj", "h.0.mlp.c_proj"]);
        let l = Lora::new(
            &LoraConfig::default(),
            &targets(),
            &["c_attn"],
            0,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(l.modules(), vec!["h.0.attn.c_attn"]);
        let cfg = LoraConfig {
            target_modules: vec!["q_proj".into()],
            ..Default::default()
        };
        let e = Lora::new(&cfg, &targets(), &[], 0, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("target-modules[0]") && e.contains("q_proj") && e.contains("c_attn"),
            "{e}"
        );
    }

    #[test]
    fn validate_names_keys() {
        for (cfg, key) in [
            (
                LoraConfig {
                    rank: 0,
                    ..Default::default()
                },
                "rank",
            ),
            (
                LoraConfig {
                    alpha: -1.0,
                    ..Default::default()
                },
                "alpha",
            ),
            (
                LoraConfig {
                    dropout: 1.0,
                    ..Default::default()
                },
                "dropout",
            ),
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let cfg = LoraConfig {
            rank: 2,
            ..Default::default()
        };
        let a = Lora::new(&cfg, &targets(), &["c_attn"], 1, &Device::Cpu).unwrap();
        let b = Lora::new(&cfg, &targets(), &["c_attn"], 2, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("adapters.safetensors");
        a.save(&p).unwrap();
        b.load_weights(&p).unwrap();
        for ((_, x), (_, y)) in a.named_tensors().iter().zip(b.named_tensors().iter()) {
            let d = (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0);
        }
    }
}
