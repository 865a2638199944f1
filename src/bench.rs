//! `maxmin bench …`: benchmarks.
//!
//! `maxmin bench kernels [--device cpu|cuda] [--tokens N] [--json PATH]` times every fused
//! kernel of `maxmin_core::ops` against the unfused composition it replaces, in the same run
//! (see [`kernels`] for what is measured and how), prints one line per kernel and shape, and
//! writes the full report as JSON. Output is documented in docs/gpu.md.

mod estep_gae;
mod kernels;
mod logprob;

use anyhow::Context as _;
use kernels::{self as bench, KernelBenchConfig, KernelReport, Timing};
use maxmin_core::device::{Device, DeviceConfig};
use maxmin_core::Result;
use std::path::PathBuf;

/// Benchmark subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// Fused kernels (log-prob, BT E-step, GAE) vs the unfused composition, same run.
    Kernels(KernelsArgs),
}

/// Arguments of `maxmin bench kernels`.
#[derive(Debug, clap::Args)]
pub struct KernelsArgs {
    /// `cpu` or `cuda` (no fallback: `cuda` without a GPU is an error).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Tokens N per log-prob call (16,384 is the shape; use fewer for a quick CPU run).
    #[arg(long, default_value_t = 16_384)]
    pub tokens: usize,
    /// Vocabulary sizes, comma-separated (GPT-2 50,257 and Llama-2 32,000 by default).
    #[arg(long, value_delimiter = ',', default_values_t = [bench::GPT2_VOCAB, bench::LLAMA2_VOCAB])]
    pub vocab: Vec<usize>,
    /// Minimum timed iterations per measurement (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Keep timing each measurement for at least this many seconds.
    #[arg(long, default_value_t = 0.5)]
    pub min_seconds: f64,
    /// Peak memory bandwidth in GB/s for "% of peak" (default: driver / measured CPU read).
    #[arg(long)]
    pub peak_gbs: Option<f64>,
    /// Run only these kernels (comma-separated name prefixes, e.g. `logprob_fwd_f32,bt_estep`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip the candle compositions the CPU log-prob kernels are compared with.
    #[arg(long)]
    pub no_baseline: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Run a `bench` subcommand.
pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Kernels(a) => kernels(a),
    }
}

fn kernels(a: KernelsArgs) -> anyhow::Result<()> {
    let device: DeviceConfig = a.device.parse()?;
    let device = device.open()?;
    let cfg = KernelBenchConfig {
        tokens: a.tokens,
        vocabs: a.vocab,
        min_iters: a.iters,
        min_seconds: a.min_seconds,
        peak_gbs: a.peak_gbs,
        only: a.only,
        baselines: !a.no_baseline,
        ..KernelBenchConfig::default()
    };
    let report = run_kernels(&device, &cfg)?;
    print!("{}", render(&report));
    if let Some(path) = a.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Run every kernel benchmark on `device`.
/// Run every kernel benchmark on `device` (the log-prob ones per vocabulary size).
fn run_kernels(device: &Device, cfg: &KernelBenchConfig) -> Result<KernelReport> {
    if cfg.tokens == 0 || cfg.vocabs.contains(&0) || cfg.min_iters == 0 {
        return Err(maxmin_core::Error::input(
            "bench kernels: --tokens, vocabulary sizes and --iters must be positive",
            None,
        ));
    }
    if let Some(o) = cfg
        .only
        .iter()
        .find(|o| !kernels::KERNELS.iter().any(|k| k.starts_with(o.as_str())))
    {
        return Err(maxmin_core::Error::input(
            format!("bench kernels: --only {o:?} names no kernel"),
            Some(format!("kernels: {}", kernels::KERNELS.join(", "))),
        ));
    }
    let (device_name, peak, peak_source) = match device {
        Device::Cpu => {
            let bw = kernels::cpu_read_gbs();
            (
                kernels::cpu_name(),
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
            Device::Cpu => results.extend(logprob::logprob_cpu(cfg, v, peak)?),
            Device::Cuda(d) => {
                if cfg.wants_group("logprob") {
                    results.extend(logprob::logprob_cuda(d, cfg, v, peak)?);
                }
                #[cfg(feature = "cuda")]
                if cfg.wants_group("candle_logprob") {
                    results.extend(logprob::logprob_candle_cuda(d, cfg, v, peak)?);
                }
            }
        }
    }
    if cfg.wants("bt_estep") {
        results.push(estep_gae::bt_estep_bench(device, cfg, peak)?);
    }
    if cfg.wants("gae") {
        results.push(estep_gae::gae_bench(device, cfg, peak)?);
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

fn fmt_timing(t: &Timing) -> String {
    let pct = t
        .pct_peak
        .map(|p| format!("{p:5.1}%"))
        .unwrap_or_else(|| "   n/a".into());
    format!("{:10.3} ms {:9.1} GB/s {pct}", t.ms, t.gbs)
}

/// The human-readable table.
pub fn render(r: &KernelReport) -> String {
    let mut s = String::new();
    let peak = r
        .peak_gbs
        .map(|p| format!("{p:.1} GB/s ({})", r.peak_source))
        .unwrap_or_else(|| "unknown".into());
    s += &format!(
        "device: {} ({}), {} threads; peak bandwidth: {peak}\n",
        r.device, r.device_name, r.threads
    );
    s += &format!(
        "{:<20} {:<28} {:>37}   {:>37}   {:>8}  {}\n",
        "kernel",
        "shape",
        "fused: time, GB/s, % peak",
        "baseline: time, GB/s, % peak",
        "speedup",
        "baseline"
    );
    for k in &r.results {
        let base = k
            .baseline
            .as_ref()
            .map(fmt_timing)
            .unwrap_or_else(|| format!("{:>37}", "n/a"));
        let speed = k
            .speedup
            .map(|x| format!("{x:7.2}x"))
            .unwrap_or_else(|| "     n/a".into());
        let name = k.baseline_name.clone().unwrap_or_else(|| "none".into());
        let diff = k
            .max_abs_diff
            .map(|d| format!(", max |diff| {d:.1e}"))
            .unwrap_or_default();
        s += &format!(
            "{:<20} {:<28} {}   {}   {}  {name}{diff}\n",
            k.kernel,
            k.shape,
            fmt_timing(&k.fused),
            base,
            speed
        );
    }
    s
}
