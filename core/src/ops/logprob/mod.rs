//! Fused per-token log-probabilities, entropy and KL from logits — the quantities PPO's loss
//! needs at every generated token (docs/architecture.md "Language models"; docs/algorithms.md's PPO objective with a
//! KL penalty to the reference policy).
//!
//! From logits z [N, V], target ids t [N] and optionally reference logits w [N, V], one pass
//! over the vocabulary (online max / log-sum-exp) gives per row the [`Stats`]:
//! `log p(t)`, the entropy `H(p)`, the exact `KL(p‖q) = Σ_j p_j (log p_j − log q_j)` and
//! `log q(t)` (so the caller can also form the sampled estimators `log p(t) − log q(t)` or
//! `e^(log q − log p) − 1 − (log q − log p)`), plus both log-sum-exps; p = softmax(z),
//! q = softmax(w).
//! f32 and bf16 logits are read; statistics are f32.
//!
//! The backward gives ∂L/∂z from ∂L/∂stats, with ∂ log p(t)/∂z_j = 1[j=t] − p_j,
//! ∂H/∂z_j = −p_j (log p_j + H), ∂KL/∂z_j = p_j (log p_j − log q_j − KL);
//! the reference is treated as a constant. [`token_logprobs`] exposes both as a candle
//! [`CustomOp2`] / [`CustomOp3`] so autograd differentiates a loss through the op.
//!
//! The CPU path ([`cpu`]) is the default and the oracle; `--device cuda` runs
//! `core/kernels/logprob.cu` ([`cuda`], unverified on GPU until `benches/gpu-check.sh` passes).
//! In the `cuda` build the candle op also runs on candle's CUDA tensors, in place on candle's
//! stream (`candle_cuda`, unverified on GPU).

#[cfg(feature = "cuda")]
mod candle_cuda;
pub mod cpu;
pub mod cuda;
mod types;

pub use types::{Grad, LogProbInput, Logits, Stats, NSTATS};

use crate::device::Device;
use crate::{Error, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Storage, Tensor};
use half::bf16;

/// Forward on `device`: the `[n, NSTATS]` stats matrix (row-major).
pub fn forward(device: &Device, input: &LogProbInput) -> Result<Vec<f32>> {
    input.validate()?;
    match device {
        Device::Cpu => {
            let mut stats = vec![0f32; input.n * NSTATS];
            match (input.logits, input.reference) {
                (Logits::F32(z), Some(Logits::F32(w))) => {
                    cpu::forward(z, Some(w), input.targets, input.v, &mut stats)
                }
                (Logits::F32(z), _) => cpu::forward(z, None, input.targets, input.v, &mut stats),
                (Logits::Bf16(z), Some(Logits::Bf16(w))) => {
                    cpu::forward(z, Some(w), input.targets, input.v, &mut stats)
                }
                (Logits::Bf16(z), _) => cpu::forward(z, None, input.targets, input.v, &mut stats),
            }
            Ok(stats)
        }
        Device::Cuda(dev) => cuda::forward_host(dev, input),
    }
}

/// Backward on `device`: ∂L/∂logits from the forward's `stats` and `grad_stats` = ∂L/∂stats
/// (both `[n, NSTATS]`).
pub fn backward(
    device: &Device,
    input: &LogProbInput,
    stats: &[f32],
    grad_stats: &[f32],
) -> Result<Grad> {
    input.validate()?;
    for (name, s) in [("stats", stats), ("grad_stats", grad_stats)] {
        if s.len() != input.n * NSTATS {
            return Err(Error::input(
                format!(
                    "logprob backward: `{name}` has {} values, expected n × {NSTATS} = {}",
                    s.len(),
                    input.n * NSTATS
                ),
                None,
            ));
        }
    }
    match device {
        Device::Cpu => Ok(match (input.logits, input.reference) {
            (Logits::F32(z), r) => {
                let w = match r {
                    Some(Logits::F32(w)) => Some(w),
                    _ => None,
                };
                let mut g = vec![0f32; z.len()];
                cpu::backward(z, w, input.targets, stats, grad_stats, input.v, &mut g);
                Grad::F32(g)
            }
            (Logits::Bf16(z), r) => {
                let w = match r {
                    Some(Logits::Bf16(w)) => Some(w),
                    _ => None,
                };
                let mut g = vec![bf16::ZERO; z.len()];
                cpu::backward(z, w, input.targets, stats, grad_stats, input.v, &mut g);
                Grad::Bf16(g)
            }
        }),
        Device::Cuda(dev) => cuda::backward_host(dev, input, stats, grad_stats),
    }
}

/// Outputs of [`token_logprobs`], each of the logits' leading shape (e.g. [batch, time]).
/// All are differentiable with respect to the policy logits.
#[derive(Debug, Clone)]
pub struct TokenLogProbs {
    /// log p(target).
    pub logp: Tensor,
    /// Entropy of p.
    pub entropy: Tensor,
    /// KL(p ‖ q) per token when reference logits were given.
    pub kl: Option<Tensor>,
    /// log q(target) when reference logits were given (no gradient flows into the reference).
    pub ref_logp: Option<Tensor>,
    /// The raw `[N, NSTATS]` stats matrix (column order of [`Stats`]).
    pub stats: Tensor,
}

/// Fused log-probs as a differentiable candle op. `logits` is `[..., V]` (f32 or bf16),
/// `targets` the leading shape (any integer dtype), `reference` like `logits`.
/// CPU tensors run the kernels of `device`: `Device::Cuda` copies the rows to the GPU and back.
/// CUDA tensors (the `cuda` build) run the CUDA kernels on them in place, whatever `device`
/// says (candle dispatches on where the tensors are).
///
/// ```text
/// let out = token_logprobs(&Device::Cpu, &logits, &actions, Some(&ref_logits))?;
/// let loss = (out.logp.mul(&adv)?.neg()? - out.entropy * 0.01)?.mean_all()?;
/// let grads = loss.backward()?; // flows through LogProbOp::bwd
/// ```
pub fn token_logprobs(
    device: &Device,
    logits: &Tensor,
    targets: &Tensor,
    reference: Option<&Tensor>,
) -> Result<TokenLogProbs> {
    let dims = logits.dims().to_vec();
    if dims.len() < 2 {
        return Err(Error::input(
            format!("logprob: `logits` must be [..., V], found shape {dims:?}"),
            None,
        ));
    }
    let lead = &dims[..dims.len() - 1];
    if targets.dims() != lead {
        return Err(Error::input(
            format!(
                "logprob: `targets` must have shape {lead:?} (the logits' leading shape), found {:?}",
                targets.dims()
            ),
            None,
        ));
    }
    if !matches!(logits.dtype(), DType::F32 | DType::BF16) {
        return Err(Error::input(
            format!(
                "logprob: `logits` must be f32 or bf16, found {:?}",
                logits.dtype()
            ),
            None,
        ));
    }
    let v = dims[dims.len() - 1];
    let z = logits.reshape(((), v))?.contiguous()?;
    let t = targets.flatten_all()?.to_dtype(DType::U32)?.contiguous()?;
    let stats = match reference {
        None => z.apply_op2(
            &t,
            LogProbOp {
                device: device.clone(),
            },
        )?,
        Some(r) => {
            if r.dims() != dims.as_slice() || r.dtype() != logits.dtype() {
                return Err(Error::input(
                    format!(
                        "logprob: `reference` logits must be {dims:?} {:?}, found {:?} {:?}",
                        logits.dtype(),
                        r.dims(),
                        r.dtype()
                    ),
                    None,
                ));
            }
            let w = r.detach().reshape(((), v))?.contiguous()?;
            z.apply_op3(
                &w,
                &t,
                LogProbOp {
                    device: device.clone(),
                },
            )?
        }
    };
    let col = |c: usize| -> Result<Tensor> { Ok(stats.narrow(1, c, 1)?.reshape(lead)?) };
    Ok(TokenLogProbs {
        logp: col(0)?,
        entropy: col(1)?,
        kl: reference.map(|_| col(2)).transpose()?,
        ref_logp: reference.map(|_| col(3)).transpose()?,
        stats,
    })
}

/// The candle custom op behind [`token_logprobs`]: `CustomOp2(logits, targets)` and
/// `CustomOp3(logits, reference, targets)`, output `[N, NSTATS]` f32, with `bwd`.
#[derive(Debug, Clone)]
pub struct LogProbOp {
    /// Where the kernels run.
    pub device: Device,
}

fn slice_of<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<Logits<'a>> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("logprob: `{what}` must be contiguous")))?;
    match s {
        CpuStorage::F32(x) => Ok(Logits::F32(&x[a..b])),
        CpuStorage::BF16(x) => Ok(Logits::Bf16(&x[a..b])),
        other => Err(candle_core::Error::Msg(format!(
            "logprob: `{what}` must be f32 or bf16, found {:?}",
            other.dtype()
        ))),
    }
}

fn targets_of<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [u32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("logprob: `targets` must be contiguous".into()))?;
    match s {
        CpuStorage::U32(x) => Ok(&x[a..b]),
        other => Err(candle_core::Error::Msg(format!(
            "logprob: `targets` must be u32, found {:?}",
            other.dtype()
        ))),
    }
}

fn cpu_of<'a>(s: &'a Storage, what: &str) -> candle_core::Result<&'a CpuStorage> {
    match s {
        Storage::Cpu(c) => Ok(c),
        _ => Err(candle_core::Error::Msg(format!(
            "logprob: `{what}` must be on the CPU like the logits"
        ))),
    }
}

fn to_candle(e: Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

impl LogProbOp {
    fn fwd(
        &self,
        z: Logits,
        w: Option<Logits>,
        t: &[u32],
        lz: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, v) = lz.shape().dims2()?;
        let input = LogProbInput {
            logits: z,
            reference: w,
            targets: t,
            n,
            v,
        };
        let stats = forward(&self.device, &input).map_err(to_candle)?;
        Ok((CpuStorage::F32(stats), Shape::from((n, NSTATS))))
    }

    /// ∂L/∂logits as a tensor, reading the CPU storages directly (no copies).
    fn grad(
        &self,
        z: &Tensor,
        w: Option<&Tensor>,
        t: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (n, v) = z.dims2()?;
        let grad_res = grad_res.to_dtype(DType::F32)?.contiguous()?;
        let res = res.contiguous()?;
        #[cfg(feature = "cuda")]
        if z.device().is_cuda() {
            return candle_cuda::grad(z, w, t, &res, &grad_res);
        }
        let (zs, zl) = z.storage_and_layout();
        let ws = w.map(|w| w.storage_and_layout());
        let (ts, tl) = t.storage_and_layout();
        let (rs, rl) = res.storage_and_layout();
        let (gs, gl) = grad_res.storage_and_layout();
        let (zc, tc, rc, gc) = (
            cpu_of(&zs, "logits")?,
            cpu_of(&ts, "targets")?,
            cpu_of(&rs, "stats")?,
            cpu_of(&gs, "grad")?,
        );
        let wl = match &ws {
            Some((s, l)) => Some(slice_of(cpu_of(s, "reference")?, l, "reference")?),
            None => None,
        };
        let input = LogProbInput {
            logits: slice_of(zc, zl, "logits")?,
            reference: wl,
            targets: targets_of(tc, tl)?,
            n,
            v,
        };
        let f32s = |c: &CpuStorage, l: &Layout| -> candle_core::Result<Vec<f32>> {
            let (a, b) = l.contiguous_offsets().ok_or_else(|| {
                candle_core::Error::Msg("logprob backward: stats not contiguous".into())
            })?;
            Ok(c.as_slice::<f32>()?[a..b].to_vec())
        };
        let (sv, gv) = (f32s(rc, rl)?, f32s(gc, gl)?);
        let g = backward(&self.device, &input, &sv, &gv).map_err(to_candle)?;
        let dev = z.device();
        match g {
            Grad::F32(g) => Tensor::from_vec(g, (n, v), dev),
            Grad::Bf16(g) => Tensor::from_vec(g, (n, v), dev),
        }
    }
}

impl CustomOp2 for LogProbOp {
    fn name(&self) -> &'static str {
        "maxmin-logprob"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(slice_of(s1, l1, "logits")?, None, targets_of(s2, l2)?, l1)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        candle_cuda::forward(s1, l1, None, s2, l2)
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.grad(logits, None, targets, res, grad_res)?), None))
    }
}

impl CustomOp3 for LogProbOp {
    fn name(&self) -> &'static str {
        "maxmin-logprob-ref"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(
            slice_of(s1, l1, "logits")?,
            Some(slice_of(s2, l2, "reference")?),
            targets_of(s3, l3)?,
            l1,
        )
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        candle_cuda::forward(s1, l1, Some((s2, l2)), s3, l3)
    }

    fn bwd(
        &self,
        logits: &Tensor,
        reference: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.grad(logits, Some(reference), targets, res, grad_res)?;
        Ok((Some(g), None, None))
    }
}

/// The unfused composition of candle ops that the fused op replaces (benchmark baseline and
/// test oracle): `log_softmax`, `gather`, `exp`, `mul`, `sum` — each a separate pass that
/// materialises an [N, V] intermediate. Returns (log p(t), entropy, KL if `reference`).
pub fn naive(
    logits: &Tensor,
    targets: &Tensor,
    reference: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let ls = candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?;
    let logp = ls
        .gather(&targets.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    let p = ls.exp()?;
    let entropy = (&p * &ls)?.sum(1)?.neg()?;
    let kl = match reference {
        Some(r) => {
            let lq = candle_nn::ops::log_softmax(r, candle_core::D::Minus1)?;
            Some((&p * (&ls - &lq)?)?.sum(1)?)
        }
        None => None,
    };
    Ok((logp, entropy, kl))
}

#[cfg(test)]
mod tests;
