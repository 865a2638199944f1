//! Criterion benchmarks of the CPU kernels against the unfused candle compositions they
//! replace (`cargo bench -p maxmin-core --bench kernels`). Shapes are small enough for a
//! 2-core machine; `maxmin bench kernels` runs the shapes and reports bandwidth.

use candle_core::{Device as CDevice, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use maxmin_core::device::Device;
use maxmin_core::ops::{bt_estep, gae, logprob};
use maxmin_core::rng;
use rand::Rng;

fn logits(n: usize, v: usize, name: &str) -> Vec<f32> {
    let mut r = rng::stream(0, name);
    (0..n * v).map(|_| r.random_range(-8.0f32..8.0)).collect()
}

fn bench_logprob(c: &mut Criterion) {
    let mut g = c.benchmark_group("logprob_fwd_f32");
    g.sample_size(10);
    let n = 64;
    for v in [32_000usize, 50_257] {
        let z = logits(n, v, "z");
        let mut r = rng::stream(0, "t");
        let t: Vec<u32> = (0..n).map(|_| r.random_range(0..v as u32)).collect();
        g.throughput(Throughput::Bytes((n * v * 4) as u64));
        let input = logprob::LogProbInput {
            logits: logprob::Logits::F32(&z),
            reference: None,
            targets: &t,
            n,
            v,
        };
        g.bench_with_input(BenchmarkId::new("fused", v), &input, |b, x| {
            b.iter(|| logprob::forward(&Device::Cpu, x).expect("valid input"))
        });
        let zt = Tensor::from_slice(&z, (n, v), &CDevice::Cpu).expect("shape");
        let tt = Tensor::from_slice(&t, n, &CDevice::Cpu).expect("shape");
        g.bench_function(BenchmarkId::new("candle_unfused", v), |b| {
            b.iter(|| logprob::naive(&zt, &tt, None).expect("valid input"))
        });
    }
    g.finish();
}

fn bench_bt_estep(c: &mut Criterion) {
    let (m, k, users) = (200_000usize, 4usize, 2_000usize);
    let mut r = rng::stream(0, "bt");
    let a: Vec<f32> = (0..m * k).map(|_| r.random_range(-4.0..4.0)).collect();
    let b: Vec<f32> = (0..m * k).map(|_| r.random_range(-4.0..4.0)).collect();
    let u: Vec<u32> = (0..m).map(|_| r.random_range(0..users as u32)).collect();
    let cmp = bt_estep::Comparisons {
        r_chosen: &a,
        r_rejected: &b,
        user: &u,
        k,
        users,
    };
    let mut g = c.benchmark_group("bt_estep");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((2 * m * k * 4 + m * 4) as u64));
    g.bench_function("fused", |bch| {
        bch.iter(|| bt_estep::bt_estep(&Device::Cpu, &cmp).expect("valid input"))
    });
    g.finish();
}

fn bench_gae(c: &mut Criterion) {
    let (t, n) = (256usize, 1024usize);
    let mut r = rng::stream(0, "gae");
    let mut f = || -> Vec<f32> { (0..t * n).map(|_| r.random_range(-1.0..1.0)).collect() };
    let (rew, val, nv) = (f(), f(), f());
    let term: Vec<bool> = (0..t * n).map(|i| i % 97 == 0).collect();
    let trunc: Vec<bool> = (0..t * n).map(|i| i % 89 == 0).collect();
    let x = gae::GaeInput {
        rewards: &rew,
        values: &val,
        next_values: &nv,
        terminated: &term,
        truncated: &trunc,
        t,
        n,
    };
    let mut g = c.benchmark_group("gae");
    g.throughput(Throughput::Elements((t * n) as u64));
    g.bench_function("cpu", |b| {
        b.iter(|| gae::gae(&x, 0.99, 0.95).expect("valid input"))
    });
    g.finish();
}

criterion_group!(benches, bench_logprob, bench_bt_estep, bench_gae);
criterion_main!(benches);
