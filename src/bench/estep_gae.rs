//! The BT E-step (`ops::bt_estep`) and GAE (`ops::gae`) benchmarks, each against a candle
//! composition on the CPU; neither has a GPU baseline (see [`super::kernels`]).

use super::kernels::{compared, max_abs_diff, time, KernelBenchConfig, KernelResult};
use candle_core::{DType, Device as CDevice, Tensor};
use maxmin_core::device::{driver_err, CudaDevice, Device};
use maxmin_core::ops::{bt_estep, gae};
use maxmin_core::{rng, Error, Result};
use rand::Rng;
use std::sync::Arc;

/// The E-step on M = 64·tokens comparisons of K = 4 models by M/100 users.
pub fn bt_estep_bench(
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
    let bytes = (2 * m * k * 4 + 2 * m * 4 + (users + 1) * 4 + users * k * 4) as u64;
    let shape = format!("M={m} K={k} users={users}");
    let nosync = || Ok(());
    Ok(match device {
        Device::Cpu => {
            let mut ll = Vec::new();
            let fused = time(cfg, &nosync, || {
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
            let base = time(cfg, &nosync, || {
                let d = (&at - &bt)?;
                let ls = (d.minimum(0f32)? - ((d.abs()?.neg()?.exp()? + 1f64)?.log()?))?;
                let out = Tensor::zeros((users, k), DType::F32, &cdev)?.index_add(&ut, &ls, 0)?;
                naive = out.flatten_all()?.to_vec1::<f32>()?;
                Ok(())
            })?;
            let base = Some(("candle-unfused (index_add)", base));
            let diff = Some(max_abs_diff(&ll, &naive));
            compared("bt_estep", &shape, bytes, peak, fused, base, diff)
        }
        Device::Cuda(d) => {
            let seg = bt_estep::cpu::segments(&u, users);
            let dc = bt_estep::cuda::DeviceComparisons::upload(d, &a, &b, &seg, k)?;
            let mut out = d
                .stream()
                .alloc_zeros::<f32>(users * k)
                .map_err(|e| driver_err("allocating", e))?;
            let fused = time(cfg, &cuda_sync(d), || dc.estep_into(d, &mut out))?;
            compared("bt_estep", &shape, bytes, peak, fused, None, None)
        }
    })
}

fn cuda_sync(d: &Arc<CudaDevice>) -> impl Fn() -> Result<()> + '_ {
    move || {
        d.stream()
            .synchronize()
            .map_err(|e| driver_err("synchronising", e))
    }
}

/// One random [T, N] rollout with terminations and truncations sprinkled in.
struct Rollout {
    rewards: Vec<f32>,
    values: Vec<f32>,
    next_values: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    t: usize,
    n: usize,
}

impl Rollout {
    fn new(cfg: &KernelBenchConfig) -> Self {
        let (t, n) = (256usize, (cfg.tokens / 4).max(1));
        let mut r = rng::stream(cfg.seed, "bench-gae");
        let mut f = || -> Vec<f32> { (0..t * n).map(|_| r.random_range(-1.0..1.0)).collect() };
        let (rewards, values, next_values) = (f(), f(), f());
        Rollout {
            rewards,
            values,
            next_values,
            terminated: (0..t * n).map(|i| i % 97 == 0).collect(),
            truncated: (0..t * n).map(|i| i % 89 == 0).collect(),
            t,
            n,
        }
    }

    fn input(&self) -> gae::GaeInput<'_> {
        gae::GaeInput {
            rewards: &self.rewards,
            values: &self.values,
            next_values: &self.next_values,
            terminated: &self.terminated,
            truncated: &self.truncated,
            t: self.t,
            n: self.n,
        }
    }
}

const GAMMA: f32 = 0.99;
const LAMBDA: f32 = 0.95;

/// GAE over a [256, tokens/4] rollout: on the CPU against the recurrence as one [N] tensor step
/// per time step, on the GPU alone.
pub fn gae_bench(
    device: &Device,
    cfg: &KernelBenchConfig,
    peak: Option<f64>,
) -> Result<KernelResult> {
    let ro = Rollout::new(cfg);
    let x = ro.input();
    x.validate()?;
    let (t_len, n) = (ro.t, ro.n);
    let bytes = (t_len * n * (3 * 4 + 2 + 2 * 4)) as u64;
    let shape = format!("T={t_len} N={n}");
    match device {
        Device::Cpu => {
            let nosync = || Ok(());
            let mut got = None;
            let fused = time(cfg, &nosync, || {
                got = Some(gae::gae(&x, GAMMA, LAMBDA)?);
                Ok(())
            })?;
            let (base, naive) = gae_candle(cfg, &ro)?;
            let got = got.ok_or_else(|| Error::Internal("gae did not run".into()))?;
            let base = Some(("candle-unfused (per-step tensor ops)", base));
            let diff = Some(max_abs_diff(&got.advantages, &naive));
            Ok(compared("gae", &shape, bytes, peak, fused, base, diff))
        }
        Device::Cuda(d) => {
            let dro = gae::cuda::DeviceRollout::upload(d, &x)?;
            let alloc = || {
                d.stream()
                    .alloc_zeros::<f32>(t_len * n)
                    .map_err(|e| driver_err("allocating", e))
            };
            let (mut adv, mut ret) = (alloc()?, alloc()?);
            let fused = time(cfg, &cuda_sync(d), || {
                dro.gae_into(d, GAMMA, LAMBDA, &mut adv, &mut ret)
            })?;
            Ok(compared("gae", &shape, bytes, peak, fused, None, None))
        }
    }
}

/// The candle composition of GAE on the CPU: its timing and its advantages.
fn gae_candle(cfg: &KernelBenchConfig, ro: &Rollout) -> Result<((f64, usize), Vec<f32>)> {
    let (t_len, n) = (ro.t, ro.n);
    let cdev = CDevice::Cpu;
    let row = |a: &[f32], t: usize| Tensor::from_slice(&a[t * n..(t + 1) * n], n, &cdev);
    let frow = |a: &[bool], t: usize| {
        let v: Vec<f32> = a[t * n..(t + 1) * n]
            .iter()
            .map(|&b| if b { 0f32 } else { 1.0 })
            .collect();
        Tensor::from_vec(v, n, &cdev)
    };
    let rows: Vec<_> = (0..t_len)
        .map(|t| -> Result<_> {
            let cont = (frow(&ro.terminated, t)? * frow(&ro.truncated, t)?)?;
            Ok((
                row(&ro.rewards, t)?,
                row(&ro.values, t)?,
                row(&ro.next_values, t)?,
                frow(&ro.terminated, t)?,
                cont,
            ))
        })
        .collect::<Result<_>>()?;
    let mut naive = Vec::new();
    let base = time(cfg, &|| Ok(()), || {
        let mut last = Tensor::zeros(n, DType::F32, &cdev)?;
        let mut advs = Vec::with_capacity(t_len);
        for (r, v, nv, nt, cont) in rows.iter().rev() {
            let delta = ((r + (nv * nt)?.affine(GAMMA as f64, 0.0)?)? - v)?;
            last = (delta + (cont * &last)?.affine((GAMMA * LAMBDA) as f64, 0.0)?)?;
            advs.push(last.clone());
        }
        advs.reverse();
        naive = Tensor::stack(&advs, 0)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(())
    })?;
    Ok((base, naive))
}
