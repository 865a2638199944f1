//! The kernel benchmark harness behind `maxmin bench kernels`: each fused kernel of
//! `maxmin_core::ops` against the unfused composition it replaces, measured in the same run on
//! the same inputs, with achieved bandwidth and its share of the device's memory bandwidth.
//! The measurements themselves are in `logprob.rs` and `estep_gae.rs` beside this file; the
//! driver that runs them all is `run_kernels` in `src/bench.rs`.
//!
//! - **Time**: median of the timed iterations after one warm-up; each iteration ends with a
//!   stream synchronisation on the GPU before the clock is read (docs/architecture.md ("Conventions")).
//! - **GB/s**: the *minimum* bytes the fused kernel must move (each input read once, each
//!   output written once) divided by the time; the baseline is charged the same bytes, so the
//!   two GB/s columns compare like with like ("effective bandwidth").
//! - **% of peak**: GPU — of the theoretical DRAM bandwidth from the driver (memory clock ×
//!   bus width × 2) or the card's datasheet; CPU — of a read bandwidth measured in the same
//!   run (a rayon sum over a 256 MiB buffer, best of 5), reported as `cpu_read_gbs`.
//! - **Baseline on CPU**: the candle composition (`ops::logprob::naive`, `index_add`,
//!   a per-step tensor loop for GAE). **On GPU**: `ops::logprob::cuda::Unfused`, one kernel
//!   per step of the same composition; and in the `cuda` build (candle's CUDA backend) also the
//!   candle op on candle's CUDA tensors against candle's own CUDA composition
//!   (`ops::logprob::naive`, autograd for the backward), rows `candle_*`. The BT E-step and
//!   GAE have no GPU baseline.

use candle_core::Tensor;
use maxmin_core::ops::logprob;
use maxmin_core::{rng, Error, Result};
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::Serialize;
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
    pub fn wants_group(&self, prefix: &str) -> bool {
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

/// Median milliseconds of `f` over at least `cfg.min_iters` calls and `cfg.min_seconds`
/// (after one warm-up; `sync` waits for the device before each clock read), and the count.
pub fn time<F: FnMut() -> Result<()>>(
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

/// A [`Timing`] from a median time and the fused kernel's minimum bytes.
pub fn timing(ms: f64, iters: usize, bytes: u64, peak: Option<f64>) -> Timing {
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

/// The CPU's model name from `/proc/cpuinfo`.
pub fn cpu_name() -> String {
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

/// `n × v` logits ~ N(0, 3²) from the named stream of `seed`.
pub fn random_logits(n: usize, v: usize, seed: u64, name: &str) -> Vec<f32> {
    let mut r = rng::stream(seed, name);
    let d = Normal::new(0.0f32, 3.0).expect("valid normal");
    (0..n * v).map(|_| d.sample(&mut r)).collect()
}

/// Largest |a − b| over the common length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

/// The minimum bytes of one log-prob forward: the logits (and the reference's) read once, the
/// targets read and the statistics written once.
pub fn logprob_bytes(n: usize, v: usize, elem: usize, with_ref: bool) -> u64 {
    let logits = n * v * elem * if with_ref { 2 } else { 1 };
    (logits + n * 4 + n * logprob::NSTATS * 4) as u64
}

/// The minimum bytes of one log-prob backward with a reference: both logits read, the gradient
/// written, targets, statistics and their gradients.
pub fn logprob_bwd_bytes(n: usize, v: usize) -> u64 {
    (3 * n * v * 4 + n * 4 + 2 * n * logprob::NSTATS * 4) as u64
}

/// Weight of the summed entropy in the benchmarked backward's loss.
const LOSS_ENTROPY: f64 = 0.01;
/// Weight of the summed KL in the benchmarked backward's loss.
const LOSS_KL: f64 = 0.1;

/// The backward benchmarks' loss: Σ log p + 0.01 Σ H + 0.1 Σ KL over the tokens.
pub fn bench_loss(logp: &Tensor, entropy: &Tensor, kl: Option<&Tensor>) -> Result<Tensor> {
    let kl = kl.ok_or_else(|| Error::Internal("the backward benchmark needs the KL".into()))?;
    let loss = (logp.sum_all()? + (entropy.sum_all()? * LOSS_ENTROPY)?)?;
    Ok((loss + (kl.sum_all()? * LOSS_KL)?)?)
}

/// The upstream gradient of [`bench_loss`] for `n` rows of log-prob statistics (log p, entropy,
/// KL, then the columns the loss does not use), as the fused backward takes it.
pub fn bench_loss_grad(n: usize) -> Vec<f32> {
    let mut row = [0f32; logprob::NSTATS];
    row[..3].copy_from_slice(&[1.0, LOSS_ENTROPY as f32, LOSS_KL as f32]);
    (0..n).flat_map(|_| row).collect()
}

/// A fused result against a baseline measured on the same inputs.
pub fn compared(
    kernel: &str,
    shape: &str,
    bytes: u64,
    peak: Option<f64>,
    fused: (f64, usize),
    baseline: Option<(&str, (f64, usize))>,
    max_abs_diff: Option<f64>,
) -> KernelResult {
    let f = timing(fused.0, fused.1, bytes, peak);
    let b = baseline.map(|(name, (ms, it))| (name.to_string(), timing(ms, it, bytes, peak)));
    KernelResult {
        kernel: kernel.into(),
        shape: shape.into(),
        bytes,
        speedup: b.as_ref().map(|(_, t)| t.ms / f.ms),
        fused: f,
        baseline_name: b.as_ref().map(|(n, _)| n.clone()),
        baseline: b.map(|(_, t)| t),
        max_abs_diff,
    }
}
