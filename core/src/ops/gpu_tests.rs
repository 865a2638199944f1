//! Kernel compile checks (every `.cu` through NVRTC 13.0 for sm_90) and GPU-vs-CPU parity.
//!
//! - `nvrtc_compiles_every_kernel` runs everywhere. Without a loadable NVRTC it **fails** with
//!   the install hint, unless `MAXMIN_SKIP_NVRTC=1` says to skip it (CI installs NVRTC, so
//!   there it really compiles).
//! - `gpu_parity_*` are `#[ignore = "needs a GPU: …"]`, so a plain test run lists them as
//!   ignored and never counts them as passed. `benches/gpu-check.sh` runs them with
//!   `--ignored` on the GPU machine; there, without a usable GPU they fail, so the check script
//!   cannot pass by accident.

use crate::device::{compile, CudaDevice, Device, Kernel};
use crate::ops::{bt_estep, gae, logprob};
use crate::rng;
use half::bf16;
use rand::Rng;
use std::sync::Arc;

fn env_is(name: &str) -> bool {
    std::env::var(name).map(|v| v == "1").unwrap_or(false)
}

#[test]
fn nvrtc_compiles_every_kernel() {
    if env_is("MAXMIN_SKIP_NVRTC") {
        eprintln!("MAXMIN_SKIP_NVRTC=1: NVRTC compile check NOT run");
        return;
    }
    for k in Kernel::ALL {
        match compile(k) {
            Ok(ptx) => {
                let src = ptx.to_src();
                assert!(
                    src.contains(".target sm_90"),
                    "{}: PTX not for sm_90",
                    k.file()
                );
            }
            Err(e) => panic!(
                "kernel `{}` did not compile with NVRTC: {e}\n(set MAXMIN_SKIP_NVRTC=1 to skip \
                 this check on a machine without NVRTC)",
                k.file()
            ),
        }
    }
}

/// The GPU to run parity on; panics (the test fails) when there is none.
fn gpu() -> Arc<CudaDevice> {
    match CudaDevice::open(0) {
        Ok(d) => {
            eprintln!("GPU parity on {}", d.name());
            d
        }
        Err(e) => panic!("GPU parity test run without a usable GPU: {e}"),
    }
}

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], rtol: f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let mut worst = (0.0f32, 0usize);
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        // NaN counts as the worst possible error
        let err = (g - c).abs() / (1.0 + c.abs());
        let err = if err.is_nan() { f32::INFINITY } else { err };
        if err > worst.0 {
            worst = (err, i);
        }
    }
    eprintln!(
        "{what}: worst relative error {:.3e} at {}",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= rtol,
        "{what}: GPU {} vs CPU {} at {} (relative {:.3e} > {rtol:e})",
        gpu[worst.1],
        cpu[worst.1],
        worst.1,
        worst.0
    );
}

fn logits(n: usize, v: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut r = rng::stream(seed, "gpu-parity");
    (0..n * v).map(|_| r.random_range(-scale..scale)).collect()
}

#[test]
#[ignore = "needs a GPU: run with --ignored on the GPU machine (benches/gpu-check.sh)"]
fn gpu_parity_logprob() {
    let dev = gpu();
    let gpu_dev = Device::Cuda(dev);
    for &(n, v, scale) in &[
        (67usize, 50_257usize, 8.0f32),
        (33, 32_000, 1e4),
        (5, 7, 3.0),
    ] {
        let z = logits(n, v, scale, 1);
        let w = logits(n, v, scale, 2);
        let mut r = rng::stream(3, "targets");
        let t: Vec<u32> = (0..n).map(|_| r.random_range(0..v as u32)).collect();
        let g: Vec<f32> = (0..n * logprob::NSTATS)
            .map(|_| r.random_range(-1.0..1.0))
            .collect();
        for with_ref in [false, true] {
            let input = logprob::LogProbInput {
                logits: logprob::Logits::F32(&z),
                reference: with_ref.then_some(logprob::Logits::F32(&w)),
                targets: &t,
                n,
                v,
            };
            let cpu = logprob::forward(&Device::Cpu, &input).unwrap();
            let gpu = logprob::forward(&gpu_dev, &input).unwrap();
            let tag = format!("logprob fwd f32 n={n} v={v} scale={scale} ref={with_ref}");
            assert_close(&tag, &gpu, &cpu, 1e-5);
            let gc = logprob::backward(&Device::Cpu, &input, &cpu, &g).unwrap();
            let gg = logprob::backward(&gpu_dev, &input, &cpu, &g).unwrap();
            let (logprob::Grad::F32(gc), logprob::Grad::F32(gg)) = (gc, gg) else {
                panic!("f32 logits gave a non-f32 gradient")
            };
            assert_close(&format!("{tag} bwd"), &gg, &gc, 1e-5);
        }
        // bf16: same inputs rounded to bf16, outputs are f32 on both sides
        let zb: Vec<bf16> = z.iter().map(|&x| bf16::from_f32(x)).collect();
        let wb: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
        let input = logprob::LogProbInput {
            logits: logprob::Logits::Bf16(&zb),
            reference: Some(logprob::Logits::Bf16(&wb)),
            targets: &t,
            n,
            v,
        };
        let cpu = logprob::forward(&Device::Cpu, &input).unwrap();
        let gpu = logprob::forward(&gpu_dev, &input).unwrap();
        assert_close(&format!("logprob fwd bf16 n={n} v={v}"), &gpu, &cpu, 1e-5);
    }
}

#[test]
#[ignore = "needs a GPU: run with --ignored on the GPU machine (benches/gpu-check.sh)"]
fn gpu_parity_bt_estep() {
    let dev = gpu();
    let (m, k, users) = (20_011usize, 4usize, 301usize);
    let mut r = rng::stream(5, "bt");
    let a: Vec<f32> = (0..m * k).map(|_| r.random_range(-6.0..6.0)).collect();
    let b: Vec<f32> = (0..m * k).map(|_| r.random_range(-6.0..6.0)).collect();
    let u: Vec<u32> = (0..m).map(|_| r.random_range(0..users as u32)).collect();
    let c = bt_estep::Comparisons {
        r_chosen: &a,
        r_rejected: &b,
        user: &u,
        k,
        users,
    };
    let cpu = bt_estep::bt_estep(&Device::Cpu, &c).unwrap();
    let gpu = bt_estep::bt_estep(&Device::Cuda(dev), &c).unwrap();
    assert_close("bt_estep", &gpu, &cpu, 1e-5);
}

#[test]
#[ignore = "needs a GPU: run with --ignored on the GPU machine (benches/gpu-check.sh)"]
fn gpu_parity_gae() {
    let dev = gpu();
    let (t, n) = (257usize, 1031usize);
    let mut r = rng::stream(6, "gae");
    let f =
        |r: &mut rng::Rng| -> Vec<f32> { (0..t * n).map(|_| r.random_range(-1.0..1.0)).collect() };
    let (rew, val, nv) = (f(&mut r), f(&mut r), f(&mut r));
    let term: Vec<bool> = (0..t * n).map(|_| r.random_bool(0.02)).collect();
    let trunc: Vec<bool> = (0..t * n).map(|_| r.random_bool(0.01)).collect();
    let x = gae::GaeInput {
        rewards: &rew,
        values: &val,
        next_values: &nv,
        terminated: &term,
        truncated: &trunc,
        t,
        n,
    };
    let cpu = gae::gae_on(&Device::Cpu, &x, 0.99, 0.95).unwrap();
    let gpu = gae::gae_on(&Device::Cuda(dev), &x, 0.99, 0.95).unwrap();
    assert_close("gae advantages", &gpu.advantages, &cpu.advantages, 1e-5);
    assert_close("gae returns", &gpu.returns, &cpu.returns, 1e-5);
}

/// The candle op on candle's CUDA tensors (the `cuda` build): forward and autograd backward in
/// place on the GPU against the same op on CPU tensors, f32 and bf16, with and without a
/// reference, on a row count that is not a multiple of anything and a sliced (offset) input.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a GPU: run with --ignored on the GPU machine (benches/gpu-check.sh)"]
fn candle_storage_logprob_matches_cpu() {
    use candle_core::{DType, Tensor, Var};
    let dev = gpu();
    let cd = dev.candle_device().clone();
    let (n, v) = (37usize, 32_000usize);
    let z = Tensor::from_vec(
        logits(n + 3, v, 6.0, 7),
        (n + 3, v),
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .narrow(0, 3, n) // an offset into the storage
    .unwrap();
    let w = Tensor::from_vec(logits(n, v, 6.0, 8), (n, v), &candle_core::Device::Cpu).unwrap();
    let mut r = rng::stream(9, "targets");
    let t: Vec<u32> = (0..n).map(|_| r.random_range(0..v as u32)).collect();
    let t = Tensor::from_vec(t, n, &candle_core::Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        for with_ref in [false, true] {
            let run = |d: &candle_core::Device| -> (Vec<Vec<f32>>, Vec<f32>) {
                let zv =
                    Var::from_tensor(&z.to_dtype(dtype).unwrap().to_device(d).unwrap()).unwrap();
                let wd = w.to_dtype(dtype).unwrap().to_device(d).unwrap();
                let out = logprob::token_logprobs(
                    &Device::Cpu,
                    zv.as_tensor(),
                    &t.to_device(d).unwrap(),
                    with_ref.then_some(&wd),
                )
                .unwrap();
                let mut loss = (out.logp.sum_all().unwrap()
                    + (&out.entropy * 0.5).unwrap().sum_all().unwrap())
                .unwrap();
                if let Some(kl) = &out.kl {
                    loss = (loss - (kl * 0.25).unwrap().sum_all().unwrap()).unwrap();
                }
                let grads = loss.backward().unwrap();
                let g = grads.get(zv.as_tensor()).unwrap();
                assert!(g.device().same_device(d), "gradient left the device");
                let host = |x: &Tensor| -> Vec<f32> {
                    let x = x.to_device(&candle_core::Device::Cpu).unwrap();
                    let x = x.to_dtype(DType::F32).unwrap();
                    x.flatten_all().unwrap().to_vec1().unwrap()
                };
                (vec![host(&out.stats)], host(g))
            };
            let (sc, gc) = run(&candle_core::Device::Cpu);
            let (sg, gg) = run(&cd);
            let tag = format!("candle op {dtype:?} n={n} v={v} ref={with_ref}");
            assert_close(&format!("{tag} stats"), &sg[0], &sc[0], 1e-5);
            // bf16 gradients are rounded to bf16 on both sides; one bf16 ulp apart allowed
            let gtol = if dtype == DType::BF16 { 1e-2 } else { 1e-5 };
            assert_close(&format!("{tag} gradient"), &gg, &gc, gtol);
        }
    }
}
