//! The log-prob benchmarks (`ops::logprob`): forward in f32 without and with a reference
//! policy, forward in bf16, and the backward, each against its baseline on the same inputs
//! (see [`super::kernels`] for what is measured).

use super::kernels::{
    bench_loss, bench_loss_grad, compared, logprob_bwd_bytes, logprob_bytes, max_abs_diff,
    random_logits, time, KernelBenchConfig, KernelResult,
};
use candle_core::{DType, Device as CDevice, Tensor};
use half::bf16;
use maxmin_core::cudarc::driver::CudaSlice;
use maxmin_core::device::{driver_err, CudaDevice, Device};
use maxmin_core::ops::logprob::{self, LogProbInput, Logits, NSTATS};
use maxmin_core::{rng, Error, Result};
use rand::Rng;
use std::sync::Arc;

/// The random inputs of one vocabulary size: logits `z`, reference logits `w`, targets `t`.
struct Inputs {
    n: usize,
    v: usize,
    z: Vec<f32>,
    w: Vec<f32>,
    t: Vec<u32>,
    shape: String,
}

impl Inputs {
    fn new(cfg: &KernelBenchConfig, v: usize) -> Self {
        let n = cfg.tokens;
        let mut r = rng::stream(cfg.seed, "bench-targets");
        Inputs {
            n,
            v,
            z: random_logits(n, v, cfg.seed, "bench-logits"),
            w: random_logits(n, v, cfg.seed, "bench-ref-logits"),
            t: (0..n).map(|_| r.random_range(0..v as u32)).collect(),
            shape: format!("N={n} V={v}"),
        }
    }

    fn input<'a>(&'a self, logits: Logits<'a>, with_ref: bool) -> LogProbInput<'a> {
        LogProbInput {
            logits,
            reference: with_ref.then_some(Logits::F32(&self.w)),
            targets: &self.t,
            n: self.n,
            v: self.v,
        }
    }
}

/// Column `c` of an `[n, NSTATS]` statistics matrix.
fn column(stats: &[f32], c: usize) -> Vec<f32> {
    stats.chunks(NSTATS).map(|s| s[c]).collect()
}

fn fwd_name(with_ref: bool) -> &'static str {
    if with_ref {
        "logprob_fwd_f32_kl"
    } else {
        "logprob_fwd_f32"
    }
}

/// The CPU kernels against candle's CPU composition (`logprob::naive`).
pub fn logprob_cpu(
    cfg: &KernelBenchConfig,
    v: usize,
    peak: Option<f64>,
) -> Result<Vec<KernelResult>> {
    let wanted = |k: &str| cfg.wants(k);
    if !["logprob_fwd_f32", "logprob_fwd_bf16", "logprob_bwd_f32_kl"]
        .iter()
        .any(|k| wanted(k))
    {
        return Ok(Vec::new());
    }
    let x = Inputs::new(cfg, v);
    // candle copies of the inputs, only for the baselines
    let cdev = CDevice::Cpu;
    let base = if cfg.baselines {
        Some((
            Tensor::from_slice(&x.z, (x.n, v), &cdev)?,
            Tensor::from_slice(&x.w, (x.n, v), &cdev)?,
            Tensor::from_slice(&x.t, x.n, &cdev)?,
        ))
    } else {
        None
    };
    let base = base.as_ref().map(|(z, w, t)| (z, w, t));
    let mut out = Vec::new();
    for with_ref in [false, true] {
        if wanted(fwd_name(with_ref)) {
            out.push(cpu_fwd_f32(cfg, &x, base, with_ref, peak)?);
        }
    }
    if wanted("logprob_fwd_bf16") {
        out.push(cpu_fwd_bf16(cfg, &x, base.map(|(z, _, t)| (z, t)), peak)?);
    }
    if wanted("logprob_bwd_f32_kl") {
        out.push(cpu_bwd(cfg, &x, base, peak)?);
    }
    Ok(out)
}

fn cpu_fwd_f32(
    cfg: &KernelBenchConfig,
    x: &Inputs,
    tensors: Option<(&Tensor, &Tensor, &Tensor)>,
    with_ref: bool,
    peak: Option<f64>,
) -> Result<KernelResult> {
    let nosync = || Ok(());
    let input = x.input(Logits::F32(&x.z), with_ref);
    let mut stats = Vec::new();
    let fused = time(cfg, &nosync, || {
        stats = logprob::forward(&Device::Cpu, &input)?;
        Ok(())
    })?;
    let bytes = logprob_bytes(x.n, x.v, 4, with_ref);
    let Some((zt, wt, tt)) = tensors else {
        return Ok(compared(
            fwd_name(with_ref),
            &x.shape,
            bytes,
            peak,
            fused,
            None,
            None,
        ));
    };
    let mut naive_out = None;
    let base = time(cfg, &nosync, || {
        let (lp, ent, kl) = logprob::naive(zt, tt, with_ref.then_some(wt))?;
        naive_out = Some((
            lp.to_vec1::<f32>()?,
            ent.to_vec1::<f32>()?,
            kl.map(|k| k.to_vec1::<f32>()).transpose()?,
        ));
        Ok(())
    })?;
    let (lp, ent, kl) = naive_out.ok_or_else(|| Error::Internal("baseline did not run".into()))?;
    let mut diff =
        max_abs_diff(&column(&stats, 0), &lp).max(max_abs_diff(&column(&stats, 1), &ent));
    if let Some(kl) = kl {
        diff = diff.max(max_abs_diff(&column(&stats, 2), &kl));
    }
    let base = Some(("candle-unfused", base));
    Ok(compared(
        fwd_name(with_ref),
        &x.shape,
        bytes,
        peak,
        fused,
        base,
        Some(diff),
    ))
}

/// bf16 logits: the fused kernel reads half the bytes; the baseline is the same composition in
/// bf16.
fn cpu_fwd_bf16(
    cfg: &KernelBenchConfig,
    x: &Inputs,
    tensors: Option<(&Tensor, &Tensor)>,
    peak: Option<f64>,
) -> Result<KernelResult> {
    let nosync = || Ok(());
    let zb: Vec<bf16> = x.z.iter().map(|&v| bf16::from_f32(v)).collect();
    let input = x.input(Logits::Bf16(&zb), false);
    let fused = time(cfg, &nosync, || {
        logprob::forward(&Device::Cpu, &input).map(|_| ())
    })?;
    let bytes = logprob_bytes(x.n, x.v, 2, false);
    let base = match tensors {
        Some((zt, tt)) => {
            let zbt = zt.to_dtype(DType::BF16)?;
            let t = time(cfg, &nosync, || logprob::naive(&zbt, tt, None).map(|_| ()))?;
            Some(("candle-unfused (bf16)", t))
        }
        None => None,
    };
    Ok(compared(
        "logprob_fwd_bf16",
        &x.shape,
        bytes,
        peak,
        fused,
        base,
        None,
    ))
}

/// The backward (log p, entropy and KL columns) against candle autograd through the
/// composition (which includes its forward).
fn cpu_bwd(
    cfg: &KernelBenchConfig,
    x: &Inputs,
    tensors: Option<(&Tensor, &Tensor, &Tensor)>,
    peak: Option<f64>,
) -> Result<KernelResult> {
    let nosync = || Ok(());
    let input = x.input(Logits::F32(&x.z), true);
    let stats = logprob::forward(&Device::Cpu, &input)?;
    let g = bench_loss_grad(x.n);
    let fused = time(cfg, &nosync, || {
        logprob::backward(&Device::Cpu, &input, &stats, &g).map(|_| ())
    })?;
    let bytes = logprob_bwd_bytes(x.n, x.v);
    let base = match tensors {
        Some((zt, wt, tt)) => {
            let zv = candle_core::Var::from_tensor(zt)?;
            let t = time(cfg, &nosync, || {
                let (lp, ent, kl) = logprob::naive(zv.as_tensor(), tt, Some(wt))?;
                bench_loss(&lp, &ent, kl.as_ref())?.backward()?;
                Ok(())
            })?;
            Some(("candle-unfused autograd (fwd+bwd)", t))
        }
        None => None,
    };
    Ok(compared(
        "logprob_bwd_f32_kl",
        &x.shape,
        bytes,
        peak,
        fused,
        base,
        None,
    ))
}

/// The CUDA kernels, the f32 forward against `logprob::cuda::Unfused` (one kernel per step of
/// the composition); bf16 and the backward have no GPU baseline.
pub fn logprob_cuda(
    dev: &Arc<CudaDevice>,
    cfg: &KernelBenchConfig,
    v: usize,
    peak: Option<f64>,
) -> Result<Vec<KernelResult>> {
    let x = Inputs::new(cfg, v);
    let s = dev.stream();
    let e = |what: &'static str| move |err| driver_err(what, err);
    let zd = s.clone_htod(&x.z).map_err(e("uploading logits"))?;
    let wd = s.clone_htod(&x.w).map_err(e("uploading logits"))?;
    let td = s.clone_htod(&x.t).map_err(e("uploading targets"))?;
    let mut stats = s
        .alloc_zeros::<f32>(x.n * NSTATS)
        .map_err(e("allocating stats"))?;
    let sync = || {
        s.synchronize()
            .map_err(|err| driver_err("synchronising", err))
    };
    let (n, v) = (x.n, x.v);
    let mut out = Vec::new();
    let mut unfused = logprob::cuda::Unfused::new(dev, n, v)?;
    for with_ref in [false, true] {
        let fused = time(cfg, &sync, || {
            logprob::cuda::forward(dev, &zd, with_ref.then_some(&wd), &td, &mut stats, n, v)
        })?;
        let got = s.clone_dtoh(&stats).map_err(e("downloading stats"))?;
        let bytes = logprob_bytes(n, v, 4, with_ref);
        let (base, diff) = if with_ref {
            (None, None)
        } else {
            let base = time(cfg, &sync, || unfused.run(dev, &zd, &td))?;
            let (lp, ent) = unfused.results(dev)?;
            let diff =
                max_abs_diff(&column(&got, 0), &lp).max(max_abs_diff(&column(&got, 1), &ent));
            (Some(("cuda-unfused", base)), Some(diff))
        };
        out.push(compared(
            fwd_name(with_ref),
            &x.shape,
            bytes,
            peak,
            fused,
            base,
            diff,
        ));
    }
    drop(unfused);
    out.push(cuda_fwd_bf16(dev, cfg, &x, (&td, &mut stats), peak)?);
    logprob::cuda::forward(dev, &zd, Some(&wd), &td, &mut stats, n, v)?;
    let gd = s
        .clone_htod(&bench_loss_grad(n))
        .map_err(e("uploading grads"))?;
    let mut grad = s.alloc_zeros::<f32>(n * v).map_err(e("allocating grads"))?;
    let fused = time(cfg, &sync, || {
        logprob::cuda::backward(dev, &zd, Some(&wd), &td, &stats, &gd, &mut grad, n, v)
    })?;
    let bytes = logprob_bwd_bytes(n, v);
    out.push(compared(
        "logprob_bwd_f32_kl",
        &x.shape,
        bytes,
        peak,
        fused,
        None,
        None,
    ));
    Ok(out)
}

/// The bf16 forward on the GPU (no baseline).
fn cuda_fwd_bf16(
    dev: &Arc<CudaDevice>,
    cfg: &KernelBenchConfig,
    x: &Inputs,
    (td, stats): (&CudaSlice<u32>, &mut CudaSlice<f32>),
    peak: Option<f64>,
) -> Result<KernelResult> {
    use half::slice::HalfFloatSliceExt;
    let s = dev.stream();
    let zb: Vec<bf16> = x.z.iter().map(|&v| bf16::from_f32(v)).collect();
    let bits: &[u16] = zb.reinterpret_cast();
    let zbd = s
        .clone_htod(bits)
        .map_err(|err| driver_err("uploading logits", err))?;
    let sync = || {
        s.synchronize()
            .map_err(|err| driver_err("synchronising", err))
    };
    let fused = time(cfg, &sync, || {
        logprob::cuda::forward(dev, &zbd, None, td, stats, x.n, x.v)
    })?;
    let bytes = logprob_bytes(x.n, x.v, 2, false);
    Ok(compared(
        "logprob_fwd_bf16",
        &x.shape,
        bytes,
        peak,
        fused,
        None,
        None,
    ))
}

/// The candle op ([`logprob::token_logprobs`]) on candle's CUDA tensors against candle's own
/// CUDA composition ([`logprob::naive`]) on the same tensors: forward f32 (without and with
/// the reference), forward bf16, and the backward through autograd (fused op vs composition).
#[cfg(feature = "cuda")]
pub fn logprob_candle_cuda(
    dev: &Arc<CudaDevice>,
    cfg: &KernelBenchConfig,
    v: usize,
    peak: Option<f64>,
) -> Result<Vec<KernelResult>> {
    let x = Inputs::new(cfg, v);
    let cd = dev.candle_device().clone();
    let zt = Tensor::from_slice(&x.z, (x.n, v), &cd)?;
    let wt = Tensor::from_slice(&x.w, (x.n, v), &cd)?;
    let tt = Tensor::from_slice(&x.t, x.n, &cd)?;
    let mut out = Vec::new();
    for (name, dtype, with_ref) in [
        ("candle_logprob_fwd_f32", DType::F32, false),
        ("candle_logprob_fwd_f32_kl", DType::F32, true),
        ("candle_logprob_fwd_bf16", DType::BF16, false),
    ] {
        out.push(candle_fwd(
            cfg,
            &x,
            (&zt, &wt, &tt),
            (name, dtype, with_ref),
            peak,
        )?);
    }
    out.push(candle_bwd(cfg, &x, (&zt, &wt, &tt), peak)?);
    Ok(out)
}

#[cfg(feature = "cuda")]
fn candle_fwd(
    cfg: &KernelBenchConfig,
    x: &Inputs,
    (zt, wt, tt): (&Tensor, &Tensor, &Tensor),
    (name, dtype, with_ref): (&str, DType, bool),
    peak: Option<f64>,
) -> Result<KernelResult> {
    let sync = || -> Result<()> { Ok(zt.device().synchronize()?) };
    let host = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(t.to_dtype(DType::F32)?
            .to_device(&CDevice::Cpu)?
            .to_vec1()?)
    };
    let z = zt.to_dtype(dtype)?;
    let w = wt.to_dtype(dtype)?;
    let wref = with_ref.then_some(&w);
    let mut fused_out = None;
    let fused = time(cfg, &sync, || {
        fused_out = Some(logprob::token_logprobs(&Device::Cpu, &z, tt, wref)?);
        Ok(())
    })?;
    let mut base_out = None;
    let base = time(cfg, &sync, || {
        base_out = Some(logprob::naive(&z, tt, wref)?);
        Ok(())
    })?;
    let (f, (lp, ent, _)) = match (fused_out, base_out) {
        (Some(f), Some(b)) => (f, b),
        _ => return Err(Error::Internal("benchmark did not run".into())),
    };
    let diff = max_abs_diff(&host(&f.logp)?, &host(&lp)?)
        .max(max_abs_diff(&host(&f.entropy)?, &host(&ent)?));
    let elem = if dtype == DType::BF16 { 2 } else { 4 };
    let bytes = logprob_bytes(x.n, x.v, elem, with_ref);
    let base = Some(("candle-cuda composition", base));
    Ok(compared(
        name,
        &x.shape,
        bytes,
        peak,
        fused,
        base,
        Some(diff),
    ))
}

/// Backward through autograd, fused op vs composition (both include their forward).
#[cfg(feature = "cuda")]
fn candle_bwd(
    cfg: &KernelBenchConfig,
    x: &Inputs,
    (zt, wt, tt): (&Tensor, &Tensor, &Tensor),
    peak: Option<f64>,
) -> Result<KernelResult> {
    let sync = || -> Result<()> { Ok(zt.device().synchronize()?) };
    let zv = candle_core::Var::from_tensor(zt)?;
    let fused = time(cfg, &sync, || {
        let o = logprob::token_logprobs(&Device::Cpu, zv.as_tensor(), tt, Some(wt))?;
        bench_loss(&o.logp, &o.entropy, o.kl.as_ref())?.backward()?;
        Ok(())
    })?;
    let base = time(cfg, &sync, || {
        let (lp, ent, kl) = logprob::naive(zv.as_tensor(), tt, Some(wt))?;
        bench_loss(&lp, &ent, kl.as_ref())?.backward()?;
        Ok(())
    })?;
    let (n, v) = (x.n, x.v);
    let bytes = (5 * n * v * 4 + 2 * n * 4 + 3 * n * NSTATS * 4) as u64;
    let base = Some(("candle-cuda composition autograd (fwd+bwd)", base));
    let name = "candle_logprob_fwd_bwd_f32_kl";
    Ok(compared(name, &x.shape, bytes, peak, fused, base, None))
}
