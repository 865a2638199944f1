//! Kernel benchmarks behind `maxmin bench kernels`: each fused kernel against the unfused
//! composition it replaces, measured in the same run on the same inputs, with achieved
//! bandwidth and its share of the device's memory bandwidth.
//!
//! - **Time**: median of the timed iterations after one warm-up; each iteration ends with a
//!   stream synchronisation on the GPU before the clock is read (docs/architecture.md ("Conventions")).
//! - **GB/s**: the *minimum* bytes the fused kernel must move (each input read once, each
//!   output written once) divided by the time; the baseline is charged the same bytes, so the
//!   two GB/s columns compare like with like ("effective bandwidth").
//! - **% of peak**: GPU — of the theoretical DRAM bandwidth from the driver (memory clock ×
//!   bus width × 2) or the card's datasheet; CPU — of a read bandwidth measured in the same
//!   run (a rayon sum over a 256 MiB buffer, best of 5), reported as `cpu_read_gbs`.
//! - **Baseline on CPU**: the candle composition ([`super::logprob::naive`], `index_add`,
//!   a per-step tensor loop for GAE). **On GPU**: [`super::logprob::cuda::Unfused`], one kernel
//!   per step of the same composition; and in the `cuda` build (candle's CUDA backend) also the
//!   candle op on candle's CUDA tensors against candle's own CUDA composition
//!   ([`super::logprob::naive`], autograd for the backward), rows `candle_*`. The BT E-step and
//!   GAE have no GPU baseline.

use super::{bt_estep, gae, logprob};
use crate::device::{CudaDevice, Device};
use crate::{rng, Error, Result};
use candle_core::{DType, Device as CDevice, Tensor};
use half::bf16;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// GPT-2's vocabulary size.
pub const GPT2_VOCAB: usize = 50_257;
/// Llama-2's vocabulary size.
pub const LLAMA2_VOCAB: usize = 32_000;

/// Every kernel name a report can hold (what [`KernelBenchConfig::only`] selects from).
pub const KERNELS: [&str; 10] = [
    "logprob_fwd_f32",
    "logprob_fwd_f32_kl",
    "logprob_fwd_bf16",
    "logprob_bwd_f32_kl",
    "candle_logprob_fwd_f32",
    "candle_logprob_fwd_f32_kl",
    "candle_logprob_fwd_bf16",
    "candle_logprob_fwd_bwd_f32_kl",
    "bt_estep",
    "gae",
];

/// What to run.
#[derive(Debug, Clone)]
pub struct KernelBenchConfig {
    /// Tokens N per log-prob call (the shape is 16,384).
    pub tokens: usize,
    /// Vocabulary sizes to run.
    pub vocabs: Vec<usize>,
    /// Minimum timed iterations per measurement.
    pub min_iters: usize,
    /// Keep iterating until this much time has been spent (seconds).
    pub min_seconds: f64,
    /// Override of the peak memory bandwidth (GB/s) used for "% of peak".
    pub peak_gbs: Option<f64>,
    /// Seed of the random inputs.
    pub seed: u64,
    /// Run only the kernels whose name starts with one of these (`logprob_fwd_f32`,
    /// `bt_estep`, …); empty runs every kernel.
    pub only: Vec<String>,
    /// Time the unfused candle baselines of the CPU log-prob kernels too (off for side-by-side
    /// runs against other libraries, where the composition's intermediates cost minutes and
    /// gigabytes at N = 4096; the other kernels' baselines are cheap and always run).
    pub baselines: bool,
}

impl KernelBenchConfig {
    /// Whether the kernel (result name) `name` is selected by [`KernelBenchConfig::only`].
    pub fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.starts_with(o.as_str()))
    }

    /// Whether any kernel whose name starts with `prefix` may be selected.
    fn wants_group(&self, prefix: &str) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|o| o.starts_with(prefix) || prefix.starts_with(o.as_str()))
    }
}

impl Default for KernelBenchConfig {
    fn default() -> Self {
        KernelBenchConfig {
            tokens: 16_384,
            vocabs: vec![GPT2_VOCAB, LLAMA2_VOCAB],
            min_iters: 3,
            min_seconds: 0.5,
            peak_gbs: None,
            seed: 0,
            only: Vec::new(),
            baselines: true,
        }
    }
}

/// One timed measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Median milliseconds per call.
    pub ms: f64,
    /// Effective GB/s (the fused kernel's minimum bytes / time).
    pub gbs: f64,
    /// Percentage of the device's peak bandwidth, when known.
    pub pct_peak: Option<f64>,
    /// Timed iterations.
    pub iters: usize,
}

/// One kernel at one shape.
#[derive(Debug, Clone, Serialize)]
pub struct KernelResult {
    /// Kernel and variant, e.g. `logprob_fwd_f32`.
    pub kernel: String,
    /// Shape in words, e.g. `N=16384 V=50257`.
    pub shape: String,
    /// Minimum bytes moved by the fused kernel.
    pub bytes: u64,
    /// The fused kernel.
    pub fused: Timing,
    /// What the baseline is (`candle-unfused`, `cuda-unfused`), if there is one.
    pub baseline_name: Option<String>,
    /// The baseline, same inputs, same run.
    pub baseline: Option<Timing>,
    /// baseline time / fused time.
    pub speedup: Option<f64>,
    /// Largest |fused − baseline| over the outputs both produce (a sanity check).
    pub max_abs_diff: Option<f64>,
}

/// The whole report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    /// `cpu` or `cuda`.
    pub device: String,
    /// The CPU model or GPU name.
    pub device_name: String,
    /// Peak bandwidth used for "% of peak" (GB/s) and where it came from.
    pub peak_gbs: Option<f64>,
    /// How `peak_gbs` was obtained.
    pub peak_source: String,
    /// rayon threads (CPU runs).
    pub threads: usize,
    /// Tokens N of the log-prob shapes.
    pub tokens: usize,
    /// Results, kernel by kernel.
    pub results: Vec<KernelResult>,
}

fn time<F: FnMut() -> Result<()>>(
    cfg: &KernelBenchConfig,
    sync: &dyn Fn() -> Result<()>,
    mut f: F,
) -> Result<(f64, usize)> {
    f()?;
    sync()?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < cfg.min_iters || start.elapsed().as_secs_f64() < cfg.min_seconds {
        let t0 = Instant::now();
        f()?;
        sync()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        if times.len() >= 1000 {
            break;
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[times.len() / 2], times.len()))
}

fn timing(ms: f64, iters: usize, bytes: u64, peak: Option<f64>) -> Timing {
    let gbs = bytes as f64 / (ms * 1e-3) / 1e9;
    Timing {
        ms,
        gbs,
        pct_peak: peak.map(|p| 100.0 * gbs / p),
        iters,
    }
}

/// Read bandwidth of this machine's CPU: best of 5 rayon sums over 256 MiB (GB/s).
pub fn cpu_read_gbs() -> f64 {
    let buf = vec![1.0f32; 64 << 20];
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let s: f32 = buf.par_chunks(1 << 16).map(|c| c.iter().sum::<f32>()).sum();
        let dt = t0.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max((buf.len() * 4) as f64 / dt / 1e9);
    }
    best
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn random_logits(n: usize, v: usize, seed: u64, name: &str) -> Vec<f32> {
    let mut r = rng::stream(seed, name);
    let d = Normal::new(0.0f32, 3.0).expect("valid normal");
    (0..n * v).map(|_| d.sample(&mut r)).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

/// Run every kernel benchmark on `device`.
pub fn run(device: &Device, cfg: &KernelBenchConfig) -> Result<KernelReport> {
    if cfg.tokens == 0 || cfg.vocabs.contains(&0) || cfg.min_iters == 0 {
        return Err(Error::input(
            "bench kernels: --tokens, vocabulary sizes and --iters must be positive",
            None,
        ));
    }
    if let Some(o) = cfg
        .only
        .iter()
        .find(|o| !KERNELS.iter().any(|k| k.starts_with(o.as_str())))
    {
        return Err(Error::input(
            format!("bench kernels: --only {o:?} names no kernel"),
            Some(format!("kernels: {}", KERNELS.join(", "))),
        ));
    }
    let (device_name, peak, peak_source) = match device {
        Device::Cpu => {
            let bw = cpu_read_gbs();
            (
                cpu_name(),
                Some(bw),
                "measured: rayon sum over 256 MiB, best of 5".to_string(),
            )
        }
        Device::Cuda(d) => (
            d.name().to_string(),
            d.peak_bandwidth_gbs(),
            "driver: 2 × memory clock × bus width (or datasheet)".to_string(),
        ),
    };
    let (peak, peak_source) = match cfg.peak_gbs {
        Some(p) => (Some(p), "--peak-gbs".to_string()),
        None => (peak, peak_source),
    };
    let mut results = Vec::new();
    for &v in &cfg.vocabs {
        match device {
            Device::Cpu => results.extend(logprob_cpu(cfg, v, peak)?),
            Device::Cuda(d) => {
                if cfg.wants_group("logprob") {
                    results.extend(logprob_cuda(d, cfg, v, peak)?);
                }
                #[cfg(feature = "cuda")]
                if cfg.wants_group("candle_logprob") {
                    results.extend(logprob_candle_cuda(d, cfg, v, peak)?);
                }
            }
        }
    }
    if cfg.wants("bt_estep") {
        results.push(bt_estep_bench(device, cfg, peak)?);
    }
    if cfg.wants("gae") {
        results.push(gae_bench(device, cfg, peak)?);
    }
    Ok(KernelReport {
        device: if device.is_cuda() { "cuda" } else { "cpu" }.into(),
        device_name,
        peak_gbs: peak,
        peak_source,
        threads: rayon::current_num_threads(),
        tokens: cfg.tokens,
        results,
    })
}

fn logprob_bytes(n: usize, v: usize, elem: usize, with_ref: bool) -> u64 {
    let logits = n * v * elem * if with_ref { 2 } else { 1 };
    (logits + n * 4 + n * logprob::NSTATS * 4) as u64
}

fn logprob_cpu(cfg: &KernelBenchConfig, v: usize, peak: Option<f64>) -> Result<Vec<KernelResult>> {
    let want = |k: &str| cfg.wants(k);
    let any_ref = want("logprob_fwd_f32_kl") || want("logprob_bwd_f32_kl");
    if !(want("logprob_fwd_f32") || any_ref || want("logprob_fwd_bf16")) {
        return Ok(Vec::new());
    }
    let n = cfg.tokens;
    let z = random_logits(n, v, cfg.seed, "bench-logits");
    let w = if any_ref {
        random_logits(n, v, cfg.seed, "bench-ref-logits")
    } else {
        Vec::new()
    };
    let mut r = rng::stream(cfg.seed, "bench-targets");
    let t: Vec<u32> = (0..n).map(|_| r.random_range(0..v as u32)).collect();
    let cdev = CDevice::Cpu;
    // candle copies of the inputs, only for the baselines
    let (zt, wt) = if cfg.baselines {
        (
            Some(Tensor::from_slice(&z, (n, v), &cdev)?),
            any_ref
                .then(|| Tensor::from_slice(&w, (n, v), &cdev))
                .transpose()?,
        )
    } else {
        (None, None)
    };
    let need = |x: &Option<Tensor>| -> Result<Tensor> {
        x.clone()
            .ok_or_else(|| Error::Internal("baseline input missing".into()))
    };
    let tt = Tensor::from_slice(&t, n, &cdev)?;
    let shape = format!("N={n} V={v}");
    let nosync = || Ok(());
    let mut out = Vec::new();
    for with_ref in [false, true] {
        let kernel = if with_ref {
            "logprob_fwd_f32_kl"
        } else {
            "logprob_fwd_f32"
        };
        if !want(kernel) {
            continue;
        }
        let input = logprob::LogProbInput {
            logits: logprob::Logits::F32(&z),
            reference: with_ref.then_some(logprob::Logits::F32(&w)),
            targets: &t,
            n,
            v,
        };
        let mut stats = Vec::new();
        let (fms, fit) = time(cfg, &nosync, || {
            stats = logprob::forward(&Device::Cpu, &input)?;
            Ok(())
        })?;
        let bytes = logprob_bytes(n, v, 4, with_ref);
        let mut row = KernelResult {
            kernel: kernel.into(),
            shape: shape.clone(),
            bytes,
            fused: timing(fms, fit, bytes, peak),
            baseline_name: None,
            baseline: None,
            speedup: None,
            max_abs_diff: None,
        };
        if cfg.baselines {
            let (zt, wt) = (need(&zt)?, if with_ref { Some(need(&wt)?) } else { None });
            let mut naive_out = None;
            let (bms, bit) = time(cfg, &nosync, || {
                let (lp, ent, kl) = logprob::naive(&zt, &tt, wt.as_ref())?;
                naive_out = Some((
                    lp.to_vec1::<f32>()?,
                    ent.to_vec1::<f32>()?,
                    kl.map(|k| k.to_vec1::<f32>()).transpose()?,
                ));
                Ok(())
            })?;
            let (lp, ent, kl) =
                naive_out.ok_or_else(|| Error::Internal("baseline did not run".into()))?;
            let col =
                |c: usize| -> Vec<f32> { stats.chunks(logprob::NSTATS).map(|s| s[c]).collect() };
            let mut diff = max_abs_diff(&col(0), &lp).max(max_abs_diff(&col(1), &ent));
            if let Some(kl) = kl {
                diff = diff.max(max_abs_diff(&col(2), &kl));
            }
            row.baseline_name = Some("candle-unfused".into());
            row.baseline = Some(timing(bms, bit, bytes, peak));
            row.speedup = Some(bms / fms);
            row.max_abs_diff = Some(diff);
        }
        out.push(row);
    }
    // bf16 logits: the fused kernel reads half the bytes; baseline = same composition in bf16
    if want("logprob_fwd_bf16") {
        let zb: Vec<bf16> = z.iter().map(|&x| bf16::from_f32(x)).collect();
        let input = logprob::LogProbInput {
            logits: logprob::Logits::Bf16(&zb),
            reference: None,
            targets: &t,
            n,
            v,
        };
        let (fms, fit) = time(cfg, &nosync, || {
            logprob::forward(&Device::Cpu, &input).map(|_| ())
        })?;
        let bytes = logprob_bytes(n, v, 2, false);
        let baseline = if cfg.baselines {
            let zbt = need(&zt)?.to_dtype(DType::BF16)?;
            let (bms, bit) = time(cfg, &nosync, || logprob::naive(&zbt, &tt, None).map(|_| ()))?;
            Some(timing(bms, bit, bytes, peak))
        } else {
            None
        };
        out.push(KernelResult {
            kernel: "logprob_fwd_bf16".into(),
            shape: shape.clone(),
            bytes,
            fused: timing(fms, fit, bytes, peak),
            baseline_name: baseline
                .as_ref()
                .map(|_| "candle-unfused (bf16)".to_string()),
            speedup: baseline.as_ref().map(|b| b.ms / fms),
            baseline,
            max_abs_diff: None,
        });
    }
    // backward (logp + entropy + KL columns), against candle autograd through the composition
    if want("logprob_bwd_f32_kl") {
        let input = logprob::LogProbInput {
            logits: logprob::Logits::F32(&z),
            reference: Some(logprob::Logits::F32(&w)),
            targets: &t,
            n,
            v,
        };
        let stats = logprob::forward(&Device::Cpu, &input)?;
        let g: Vec<f32> = stats
            .chunks(logprob::NSTATS)
            .flat_map(|_| [1.0, 0.01, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
            .collect();
        let (fms, fit) = time(cfg, &nosync, || {
            logprob::backward(&Device::Cpu, &input, &stats, &g).map(|_| ())
        })?;
        let bytes = (3 * n * v * 4 + n * 4 + 2 * n * logprob::NSTATS * 4) as u64;
        let baseline = if cfg.baselines {
            let zv = candle_core::Var::from_tensor(&need(&zt)?)?;
            let wt = need(&wt)?;
            let (bms, bit) = time(cfg, &nosync, || {
                let (lp, ent, kl) = logprob::naive(zv.as_tensor(), &tt, Some(&wt))?;
                let kl = kl.ok_or_else(|| Error::Internal("naive KL missing".into()))?;
                let loss = ((lp.sum_all()? + (ent.sum_all()? * 0.01)?)? + (kl.sum_all()? * 0.1)?)?;
                loss.backward()?;
                Ok(())
            })?;
            Some(timing(bms, bit, bytes, peak))
        } else {
            None
        };
        out.push(KernelResult {
            kernel: "logprob_bwd_f32_kl".into(),
            shape,
            bytes,
            fused: timing(fms, fit, bytes, peak),
            baseline_name: baseline
                .as_ref()
                .map(|_| "candle-unfused autograd (fwd+bwd)".to_string()),
            speedup: baseline.as_ref().map(|b| b.ms / fms),
            baseline,
            max_abs_diff: None,
        });
    }
    Ok(out)
}

fn logprob_cuda(
    dev: &Arc<CudaDevice>,
    cfg: &KernelBenchConfig,
    v: usize,
    peak: Option<f64>,
) -> Result<Vec<KernelResult>> {
    use crate::device::driver_err;
    use half::slice::HalfFloatSliceExt;
    let n = cfg.tokens;
    let z = random_logits(n, v, cfg.seed, "bench-logits");
    let w = random_logits(n, v, cfg.seed, "bench-ref-logits");
    let mut r = rng::stream(cfg.seed, "bench-targets");
    let t: Vec<u32> = (0..n).map(|_| r.random_range(0..v as u32)).collect();
    let s = dev.stream();
    let e = |what: &'static str| move |err| driver_err(what, err);
    let zd = s.clone_htod(&z).map_err(e("uploading logits"))?;
    let wd = s.clone_htod(&w).map_err(e("uploading logits"))?;
    let td = s.clone_htod(&t).map_err(e("uploading targets"))?;
    let mut stats = s
        .alloc_zeros::<f32>(n * logprob::NSTATS)
        .map_err(e("allocating stats"))?;
    let sync = || {
        s.synchronize()
            .map_err(|err| driver_err("synchronising", err))
    };
    let shape = format!("N={n} V={v}");
    let mut out = Vec::new();
    let mut unfused = logprob::cuda::Unfused::new(dev, n, v)?;
    for with_ref in [false, true] {
        let (fms, fit) = time(cfg, &sync, || {
            logprob::cuda::forward(dev, &zd, with_ref.then_some(&wd), &td, &mut stats, n, v)
        })?;
        let got = s.clone_dtoh(&stats).map_err(e("downloading stats"))?;
        let bytes = logprob_bytes(n, v, 4, with_ref);
        let (baseline, speedup, diff) = if with_ref {
            (None, None, None)
        } else {
            let (bms, bit) = time(cfg, &sync, || unfused.run(dev, &zd, &td))?;
            let (lp, ent) = unfused.results(dev)?;
            let col =
                |c: usize| -> Vec<f32> { got.chunks(logprob::NSTATS).map(|s| s[c]).collect() };
            let diff = max_abs_diff(&col(0), &lp).max(max_abs_diff(&col(1), &ent));
            (
                Some(timing(bms, bit, bytes, peak)),
                Some(bms / fms),
                Some(diff),
            )
        };
        out.push(KernelResult {
            kernel: if with_ref {
                "logprob_fwd_f32_kl"
            } else {
                "logprob_fwd_f32"
            }
            .into(),
            shape: shape.clone(),
            bytes,
            fused: timing(fms, fit, bytes, peak),
            baseline_name: baseline.as_ref().map(|_| "cuda-unfused".to_string()),
            baseline,
            speedup,
            max_abs_diff: diff,
        });
    }
    drop(unfused);
    let zb: Vec<bf16> = z.iter().map(|&x| bf16::from_f32(x)).collect();
    let zbd = s
        .clone_htod({
            let bits: &[u16] = zb.reinterpret_cast();
            bits
        })
        .map_err(e("uploading logits"))?;
    let (fms, fit) = time(cfg, &sync, || {
        logprob::cuda::forward(dev, &zbd, None, &td, &mut stats, n, v)
    })?;
    let bytes = logprob_bytes(n, v, 2, false);
    out.push(KernelResult {
        kernel: "logprob_fwd_bf16".into(),
        shape: shape.clone(),
        bytes,
        fused: timing(fms, fit, bytes, peak),
        baseline_name: None,
        baseline: None,
        speedup: None,
        max_abs_diff: None,
    });
    drop(zbd);
    logprob::cuda::forward(dev, &zd, Some(&wd), &td, &mut stats, n, v)?;
    let g: Vec<f32> = (0..n)
        .flat_map(|_| [1.0, 0.01, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
        .collect();
    let gd = s.clone_htod(&g).map_err(e("uploading grads"))?;
    let mut grad = s.alloc_zeros::<f32>(n * v).map_err(e("allocating grads"))?;
    let (fms, fit) = time(cfg, &sync, || {
        logprob::cuda::backward(dev, &zd, Some(&wd), &td, &stats, &gd, &mut grad, n, v)
    })?;
    let bytes = (3 * n * v * 4 + n * 4 + 2 * n * logprob::NSTATS * 4) as u64;
    out.push(KernelResult {
        kernel: "logprob_bwd_f32_kl".into(),
        shape,
        bytes,
        fused: timing(fms, fit, bytes, peak),
        baseline_name: None,
        baseline: None,
        speedup: None,
        max_abs_diff: None,
    });
    Ok(out)
}

/// The candle op ([`logprob::token_logprobs`]) on candle's CUDA tensors against candle's own
/// CUDA composition ([`logprob::naive`]) on the same tensors: forward f32 (without and with
/// the reference), forward bf16, and the backward through autograd (fused op vs composition).
#[cfg(feature = "cuda")]
fn logprob_candle_cuda(
    dev: &Arc<CudaDevice>,
    cfg: &KernelBenchConfig,
    v: usize,
    peak: Option<f64>,
) -> Result<Vec<KernelResult>> {
    let n = cfg.tokens;
    let cd = dev.candle_device().clone();
    let mut r = rng::stream(cfg.seed, "bench-targets");
    let t: Vec<u32> = (0..n).map(|_| r.random_range(0..v as u32)).collect();
    let zt = Tensor::from_vec(random_logits(n, v, cfg.seed, "bench-logits"), (n, v), &cd)?;
    let wt = Tensor::from_vec(
        random_logits(n, v, cfg.seed, "bench-ref-logits"),
        (n, v),
        &cd,
    )?;
    let tt = Tensor::from_vec(t, n, &cd)?;
    let sync = || -> Result<()> { Ok(cd.synchronize()?) };
    let shape = format!("N={n} V={v}");
    let host = |x: &Tensor| -> Result<Vec<f32>> {
        Ok(x.to_dtype(DType::F32)?
            .to_device(&CDevice::Cpu)?
            .to_vec1()?)
    };
    let mut out = Vec::new();
    for (name, dtype, with_ref) in [
        ("candle_logprob_fwd_f32", DType::F32, false),
        ("candle_logprob_fwd_f32_kl", DType::F32, true),
        ("candle_logprob_fwd_bf16", DType::BF16, false),
    ] {
        let z = zt.to_dtype(dtype)?;
        let w = wt.to_dtype(dtype)?;
        let wref = with_ref.then_some(&w);
        let mut fused = None;
        let (fms, fit) = time(cfg, &sync, || {
            fused = Some(logprob::token_logprobs(&Device::Cpu, &z, &tt, wref)?);
            Ok(())
        })?;
        let mut base = None;
        let (bms, bit) = time(cfg, &sync, || {
            base = Some(logprob::naive(&z, &tt, wref)?);
            Ok(())
        })?;
        let (f, (lp, ent, _)) = match (fused, base) {
            (Some(f), Some(b)) => (f, b),
            _ => return Err(Error::Internal("benchmark did not run".into())),
        };
        let diff = max_abs_diff(&host(&f.logp)?, &host(&lp)?)
            .max(max_abs_diff(&host(&f.entropy)?, &host(&ent)?));
        let elem = if dtype == DType::BF16 { 2 } else { 4 };
        let bytes = logprob_bytes(n, v, elem, with_ref);
        out.push(KernelResult {
            kernel: name.into(),
            shape: shape.clone(),
            bytes,
            fused: timing(fms, fit, bytes, peak),
            baseline_name: Some("candle-cuda composition".into()),
            baseline: Some(timing(bms, bit, bytes, peak)),
            speedup: Some(bms / fms),
            max_abs_diff: Some(diff),
        });
    }
    // backward: loss = Σ logp + 0.01 Σ H + 0.1 Σ KL through autograd, fused op vs composition
    // (both include their forward)
    let zv = candle_core::Var::from_tensor(&zt)?;
    let (fms, fit) = time(cfg, &sync, || {
        let o = logprob::token_logprobs(&Device::Cpu, zv.as_tensor(), &tt, Some(&wt))?;
        let kl =
            o.kl.ok_or_else(|| Error::Internal("fused KL missing".into()))?;
        let loss =
            ((o.logp.sum_all()? + (o.entropy.sum_all()? * 0.01)?)? + (kl.sum_all()? * 0.1)?)?;
        loss.backward()?;
        Ok(())
    })?;
    let (bms, bit) = time(cfg, &sync, || {
        let (lp, ent, kl) = logprob::naive(zv.as_tensor(), &tt, Some(&wt))?;
        let kl = kl.ok_or_else(|| Error::Internal("naive KL missing".into()))?;
        let loss = ((lp.sum_all()? + (ent.sum_all()? * 0.01)?)? + (kl.sum_all()? * 0.1)?)?;
        loss.backward()?;
        Ok(())
    })?;
    let bytes = (5 * n * v * 4 + 2 * n * 4 + 3 * n * logprob::NSTATS * 4) as u64;
    out.push(KernelResult {
        kernel: "candle_logprob_fwd_bwd_f32_kl".into(),
        shape,
        bytes,
        fused: timing(fms, fit, bytes, peak),
        baseline_name: Some("candle-cuda composition autograd (fwd+bwd)".into()),
        baseline: Some(timing(bms, bit, bytes, peak)),
        speedup: Some(bms / fms),
        max_abs_diff: None,
    });
    Ok(out)
}

fn bt_estep_bench(
    device: &Device,
    cfg: &KernelBenchConfig,
    peak: Option<f64>,
) -> Result<KernelResult> {
    // comparisons scale with --tokens so a quick CPU run stays quick
    let (k, m) = (4usize, cfg.tokens * 64);
    let users = (m / 100).max(1);
    let mut r = rng::stream(cfg.seed, "bench-bt");
    let a: Vec<f32> = (0..m * k).map(|_| r.random_range(-4.0..4.0)).collect();
    let b: Vec<f32> = (0..m * k).map(|_| r.random_range(-4.0..4.0)).collect();
    let u: Vec<u32> = (0..m).map(|_| r.random_range(0..users as u32)).collect();
    let c = bt_estep::Comparisons {
        r_chosen: &a,
        r_rejected: &b,
        user: &u,
        k,
        users,
    };
    c.validate()?;
    let seg = bt_estep::cpu::segments(&u, users);
    let bytes = (2 * m * k * 4 + 2 * m * 4 + (users + 1) * 4 + users * k * 4) as u64;
    let shape = format!("M={m} K={k} users={users}");
    let nosync = || Ok(());
    let (fused, ll, baseline) = match device {
        Device::Cpu => {
            let mut ll = Vec::new();
            let (fms, fit) = time(cfg, &nosync, || {
                ll = bt_estep::bt_estep(&Device::Cpu, &c)?;
                Ok(())
            })?;
            let cdev = CDevice::Cpu;
            let (at, bt) = (
                Tensor::from_slice(&a, (m, k), &cdev)?,
                Tensor::from_slice(&b, (m, k), &cdev)?,
            );
            let ut = Tensor::from_slice(&u, m, &cdev)?;
            let mut naive = Vec::new();
            let (bms, bit) = time(cfg, &nosync, || {
                let d = (&at - &bt)?;
                let ls = (d.minimum(0f32)? - ((d.abs()?.neg()?.exp()? + 1f64)?.log()?))?;
                let out = Tensor::zeros((users, k), DType::F32, &cdev)?.index_add(&ut, &ls, 0)?;
                naive = out.flatten_all()?.to_vec1::<f32>()?;
                Ok(())
            })?;
            (
                timing(fms, fit, bytes, peak),
                ll,
                Some((timing(bms, bit, bytes, peak), naive)),
            )
        }
        Device::Cuda(d) => {
            let dc = bt_estep::cuda::DeviceComparisons::upload(d, &a, &b, &seg, k)?;
            let mut out = d
                .stream()
                .alloc_zeros::<f32>(users * k)
                .map_err(|e| crate::device::driver_err("allocating", e))?;
            let sync = || {
                d.stream()
                    .synchronize()
                    .map_err(|e| crate::device::driver_err("synchronising", e))
            };
            let (fms, fit) = time(cfg, &sync, || dc.estep_into(d, &mut out))?;
            (timing(fms, fit, bytes, peak), dc.estep(d)?, None)
        }
    };
    let (baseline_name, speedup, diff, baseline) = match baseline {
        Some((t, naive)) => (
            Some("candle-unfused (index_add)".to_string()),
            Some(t.ms / fused.ms),
            Some(max_abs_diff(&ll, &naive)),
            Some(t),
        ),
        None => (None, None, None, None),
    };
    Ok(KernelResult {
        kernel: "bt_estep".into(),
        shape,
        bytes,
        fused,
        baseline_name,
        baseline,
        speedup,
        max_abs_diff: diff,
    })
}

fn gae_bench(device: &Device, cfg: &KernelBenchConfig, peak: Option<f64>) -> Result<KernelResult> {
    let (t_len, n) = (256usize, (cfg.tokens / 4).max(1));
    let mut r = rng::stream(cfg.seed, "bench-gae");
    let mut f = || -> Vec<f32> { (0..t_len * n).map(|_| r.random_range(-1.0..1.0)).collect() };
    let (rew, val, nv) = (f(), f(), f());
    let term: Vec<bool> = (0..t_len * n).map(|i| i % 97 == 0).collect();
    let trunc: Vec<bool> = (0..t_len * n).map(|i| i % 89 == 0).collect();
    let x = gae::GaeInput {
        rewards: &rew,
        values: &val,
        next_values: &nv,
        terminated: &term,
        truncated: &trunc,
        t: t_len,
        n,
    };
    x.validate()?;
    let bytes = (t_len * n * (3 * 4 + 2 + 2 * 4)) as u64;
    let shape = format!("T={t_len} N={n}");
    let nosync = || Ok(());
    let (gamma, lambda) = (0.99f32, 0.95f32);
    match device {
        Device::Cpu => {
            let mut got = None;
            let (fms, fit) = time(cfg, &nosync, || {
                got = Some(gae::gae(&x, gamma, lambda)?);
                Ok(())
            })?;
            // candle composition: the recurrence as one [N] tensor step per time step
            let cdev = CDevice::Cpu;
            let row = |a: &[f32], t: usize| Tensor::from_slice(&a[t * n..(t + 1) * n], n, &cdev);
            let frow = |a: &[bool], t: usize| {
                Tensor::from_vec(
                    a[t * n..(t + 1) * n]
                        .iter()
                        .map(|&b| if b { 0f32 } else { 1.0 })
                        .collect::<Vec<_>>(),
                    n,
                    &cdev,
                )
            };
            let rows: Vec<_> = (0..t_len)
                .map(|t| -> Result<_> {
                    let cont = (frow(&term, t)? * frow(&trunc, t)?)?;
                    Ok((
                        row(&rew, t)?,
                        row(&val, t)?,
                        row(&nv, t)?,
                        frow(&term, t)?,
                        cont,
                    ))
                })
                .collect::<Result<_>>()?;
            let mut naive = Vec::new();
            let (bms, bit) = time(cfg, &nosync, || {
                let mut last = Tensor::zeros(n, DType::F32, &cdev)?;
                let mut advs = Vec::with_capacity(t_len);
                for (r, v, nv, nt, cont) in rows.iter().rev() {
                    let delta = ((r + (nv * nt)?.affine(gamma as f64, 0.0)?)? - v)?;
                    last = (delta + (cont * &last)?.affine((gamma * lambda) as f64, 0.0)?)?;
                    advs.push(last.clone());
                }
                advs.reverse();
                naive = Tensor::stack(&advs, 0)?.flatten_all()?.to_vec1::<f32>()?;
                Ok(())
            })?;
            let got = got.ok_or_else(|| Error::Internal("gae did not run".into()))?;
            let fused = timing(fms, fit, bytes, peak);
            let base = timing(bms, bit, bytes, peak);
            Ok(KernelResult {
                kernel: "gae".into(),
                shape,
                bytes,
                speedup: Some(base.ms / fused.ms),
                fused,
                baseline_name: Some("candle-unfused (per-step tensor ops)".into()),
                baseline: Some(base),
                max_abs_diff: Some(max_abs_diff(&got.advantages, &naive)),
            })
        }
        Device::Cuda(d) => {
            let ro = gae::cuda::DeviceRollout::upload(d, &x)?;
            let alloc = || {
                d.stream()
                    .alloc_zeros::<f32>(t_len * n)
                    .map_err(|e| crate::device::driver_err("allocating", e))
            };
            let (mut adv, mut ret) = (alloc()?, alloc()?);
            let sync = || {
                d.stream()
                    .synchronize()
                    .map_err(|e| crate::device::driver_err("synchronising", e))
            };
            let (fms, fit) = time(cfg, &sync, || {
                ro.gae_into(d, gamma, lambda, &mut adv, &mut ret)
            })?;
            Ok(KernelResult {
                kernel: "gae".into(),
                shape,
                bytes,
                fused: timing(fms, fit, bytes, peak),
                baseline_name: None,
                baseline: None,
                speedup: None,
                max_abs_diff: None,
            })
        }
    }
}
