//! CUDA path of the fused log-prob op: launches `core/kernels/logprob.cu` through cudarc.
//!
//! **Unverified on GPU** until `benches/gpu-check.sh` has passed on an H100: this code is
//! compiled and type-checked here, and the kernels compile with NVRTC 13.0 in the tests.
//! One block of 512 threads per row; grid = N rows.
//!
//! Device-buffer entry points ([`forward`], [`backward`], [`Unfused`]) are what the benchmark
//! times; [`forward_host`] / [`backward_host`] copy host slices in and out for callers whose
//! tensors live on the CPU (candle's CUDA backend is not built, docs/gpu.md).

use super::types::{Grad, LogProbInput, Logits, NSTATS};
use crate::device::{driver_err, CudaDevice, Kernel};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
use half::slice::HalfFloatSliceExt;

/// Threads per block; must equal `BLOCK` in `logprob.cu`.
pub const BLOCK: u32 = 512;

/// Element types on the device: f32, and bf16 carried as its raw `u16` bits.
pub trait DevElem: DeviceRepr + Copy + Default + Unpin + 'static {
    /// Forward kernel name.
    const FWD: &'static str;
    /// Backward kernel name.
    const BWD: &'static str;
}

impl DevElem for f32 {
    const FWD: &'static str = "logprob_fwd_f32";
    const BWD: &'static str = "logprob_bwd_f32";
}

impl DevElem for u16 {
    const FWD: &'static str = "logprob_fwd_bf16";
    const BWD: &'static str = "logprob_bwd_bf16";
}

fn check_dims(n: usize, v: usize) -> Result<(i32, i32)> {
    let ni = i32::try_from(n).map_err(|_| Error::input(format!("logprob: n = {n} > i32"), None))?;
    let vi = i32::try_from(v).map_err(|_| Error::input(format!("logprob: v = {v} > i32"), None))?;
    Ok((ni, vi))
}

fn rows_cfg(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Forward on device buffers: `z`, `w` [n, v], `t` [n], `stats` [n, NSTATS].
pub fn forward<T: DevElem>(
    dev: &CudaDevice,
    z: &CudaSlice<T>,
    w: Option<&CudaSlice<T>>,
    t: &CudaSlice<u32>,
    stats: &mut CudaSlice<f32>,
    n: usize,
    v: usize,
) -> Result<()> {
    let (ni, vi) = check_dims(n, v)?;
    if n == 0 {
        return Ok(());
    }
    let f = dev.function(Kernel::LogProb, T::FWD)?;
    let null: u64 = 0;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(z);
    match w {
        Some(w) => b.arg(w),
        None => b.arg(&null),
    };
    b.arg(t).arg(stats).arg(&ni).arg(&vi);
    // SAFETY: arguments follow `logprob_fwd_*(const T* z, const T* w, const u32* targets,
    // float* stats, int n, int v)`; w is a device buffer or a null pointer (the kernel
    // checks), buffers have the documented lengths (checked by the host wrappers), and the
    // grid has exactly one block per row.
    unsafe { b.launch(rows_cfg(n)) }.map_err(|e| driver_err("launching logprob forward", e))?;
    Ok(())
}

/// Backward on device buffers: `grad` [n, v] from `stats` and `gout` = ∂L/∂stats [n, NSTATS].
#[allow(clippy::too_many_arguments)]
pub fn backward<T: DevElem>(
    dev: &CudaDevice,
    z: &CudaSlice<T>,
    w: Option<&CudaSlice<T>>,
    t: &CudaSlice<u32>,
    stats: &CudaSlice<f32>,
    gout: &CudaSlice<f32>,
    grad: &mut CudaSlice<T>,
    n: usize,
    v: usize,
) -> Result<()> {
    let (ni, vi) = check_dims(n, v)?;
    if n == 0 {
        return Ok(());
    }
    let f = dev.function(Kernel::LogProb, T::BWD)?;
    let null: u64 = 0;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(z);
    match w {
        Some(w) => b.arg(w),
        None => b.arg(&null),
    };
    b.arg(t).arg(stats).arg(gout).arg(grad).arg(&ni).arg(&vi);
    // SAFETY: arguments follow `logprob_bwd_*(const T* z, const T* w, const u32* targets,
    // const float* stats, const float* gout, T* grad, int n, int v)`, lengths as documented.
    unsafe { b.launch(rows_cfg(n)) }.map_err(|e| driver_err("launching logprob backward", e))?;
    Ok(())
}

fn upload<T: DeviceRepr>(dev: &CudaDevice, x: &[T]) -> Result<CudaSlice<T>> {
    dev.stream()
        .clone_htod(x)
        .map_err(|e| driver_err("copying to the GPU", e))
}

fn download<T: DeviceRepr + Default + Clone>(dev: &CudaDevice, x: &CudaSlice<T>) -> Result<Vec<T>> {
    dev.stream()
        .clone_dtoh(x)
        .map_err(|e| driver_err("copying from the GPU", e))
}

/// Forward from host slices (validated by the caller): copy in, launch, copy the stats out.
pub fn forward_host(dev: &CudaDevice, input: &LogProbInput) -> Result<Vec<f32>> {
    let t = upload(dev, input.targets)?;
    let mut stats = dev
        .stream()
        .alloc_zeros::<f32>(input.n * NSTATS)
        .map_err(|e| driver_err("allocating stats", e))?;
    match (input.logits, input.reference) {
        (Logits::F32(z), w) => {
            let z = upload(dev, z)?;
            let w = match w {
                Some(Logits::F32(w)) => Some(upload(dev, w)?),
                _ => None,
            };
            forward(dev, &z, w.as_ref(), &t, &mut stats, input.n, input.v)?;
        }
        (Logits::Bf16(z), w) => {
            let z = upload(dev, z.reinterpret_cast())?;
            let w = match w {
                Some(Logits::Bf16(w)) => Some(upload(dev, w.reinterpret_cast())?),
                _ => None,
            };
            forward(dev, &z, w.as_ref(), &t, &mut stats, input.n, input.v)?;
        }
    }
    download(dev, &stats)
}

/// Backward from host slices: copy in, launch, copy the gradient out.
pub fn backward_host(
    dev: &CudaDevice,
    input: &LogProbInput,
    stats: &[f32],
    grad_stats: &[f32],
) -> Result<Grad> {
    let t = upload(dev, input.targets)?;
    let st = upload(dev, stats)?;
    let g = upload(dev, grad_stats)?;
    let len = input.n * input.v;
    match (input.logits, input.reference) {
        (Logits::F32(z), w) => {
            let z = upload(dev, z)?;
            let w = match w {
                Some(Logits::F32(w)) => Some(upload(dev, w)?),
                _ => None,
            };
            let mut out = dev
                .stream()
                .alloc_zeros::<f32>(len)
                .map_err(|e| driver_err("allocating the gradient", e))?;
            backward(dev, &z, w.as_ref(), &t, &st, &g, &mut out, input.n, input.v)?;
            Ok(Grad::F32(download(dev, &out)?))
        }
        (Logits::Bf16(z), w) => {
            let z = upload(dev, z.reinterpret_cast())?;
            let w = match w {
                Some(Logits::Bf16(w)) => Some(upload(dev, w.reinterpret_cast())?),
                _ => None,
            };
            let mut out = dev
                .stream()
                .alloc_zeros::<u16>(len)
                .map_err(|e| driver_err("allocating the gradient", e))?;
            backward(dev, &z, w.as_ref(), &t, &st, &g, &mut out, input.n, input.v)?;
            let bits = download(dev, &out)?;
            Ok(Grad::Bf16(
                bits.into_iter().map(half::bf16::from_bits).collect(),
            ))
        }
    }
}

/// The unfused baseline on the GPU (benchmarks only): the steps of the candle composition in
/// [`super::naive`] (max, subtract, exp, sum, log-softmax, gather, exp, multiply, sum), one
/// kernel each, every intermediate written to memory. It stands in for candle's CUDA backend,
/// which this project does not build (docs/gpu.md).
pub struct Unfused {
    n: usize,
    v: usize,
    row_a: CudaSlice<f32>,
    row_b: CudaSlice<f32>,
    logp: CudaSlice<f32>,
    diff: CudaSlice<f32>,
    tmp: CudaSlice<f32>,
    ls: CudaSlice<f32>,
}

impl Unfused {
    /// Allocate the intermediates for [n, v] f32 logits (3 × n × v floats).
    pub fn new(dev: &CudaDevice, n: usize, v: usize) -> Result<Self> {
        let s = dev.stream();
        let a = |len: usize| {
            s.alloc_zeros::<f32>(len)
                .map_err(|e| driver_err("allocating the unfused baseline's buffers", e))
        };
        Ok(Unfused {
            n,
            v,
            row_a: a(n)?,
            row_b: a(n)?,
            logp: a(n)?,
            diff: a(n * v)?,
            tmp: a(n * v)?,
            ls: a(n * v)?,
        })
    }

    /// Run the composition on `z` [n, v] and `t` [n]; results stay on the device
    /// (log p(t) in `logp`, the entropy in `row_b`).
    pub fn run(&mut self, dev: &CudaDevice, z: &CudaSlice<f32>, t: &CudaSlice<u32>) -> Result<()> {
        let (ni, vi) = check_dims(self.n, self.v)?;
        let total = (self.n * self.v) as i64;
        let ew = LaunchConfig::for_num_elems(0);
        let ew = LaunchConfig {
            grid_dim: ((total as usize).div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            ..ew
        };
        let rows = rows_cfg(self.n);
        let st = dev.stream();
        let reduce = dev.function(Kernel::LogProb, "unfused_row_reduce")?;
        let sub = dev.function(Kernel::LogProb, "unfused_sub_row")?;
        let exp = dev.function(Kernel::LogProb, "unfused_exp")?;
        let mul = dev.function(Kernel::LogProb, "unfused_neg_mul")?;
        let gather = dev.function(Kernel::LogProb, "unfused_gather")?;
        let (zero, one) = (0i32, 1i32);
        let err = |e| driver_err("launching the unfused baseline", e);
        // SAFETY (all launches): argument lists follow the `unfused_*` signatures in
        // logprob.cu; every buffer was allocated with the length the kernel indexes
        // (n or n × v), and `total` = n × v.
        unsafe {
            st.launch_builder(&reduce)
                .arg(z)
                .arg(&mut self.row_a)
                .arg(&ni)
                .arg(&vi)
                .arg(&zero)
                .launch(rows)
                .map_err(err)?;
            st.launch_builder(&sub)
                .arg(z)
                .arg(&self.row_a)
                .arg(&mut self.diff)
                .arg(&total)
                .arg(&vi)
                .arg(&zero)
                .launch(ew)
                .map_err(err)?;
            st.launch_builder(&exp)
                .arg(&self.diff)
                .arg(&mut self.tmp)
                .arg(&total)
                .launch(ew)
                .map_err(err)?;
            st.launch_builder(&reduce)
                .arg(&self.tmp)
                .arg(&mut self.row_b)
                .arg(&ni)
                .arg(&vi)
                .arg(&one)
                .launch(rows)
                .map_err(err)?;
            st.launch_builder(&sub)
                .arg(&self.diff)
                .arg(&self.row_b)
                .arg(&mut self.ls)
                .arg(&total)
                .arg(&vi)
                .arg(&one)
                .launch(ew)
                .map_err(err)?;
            st.launch_builder(&gather)
                .arg(&self.ls)
                .arg(t)
                .arg(&mut self.logp)
                .arg(&ni)
                .arg(&vi)
                .launch(LaunchConfig::for_num_elems(self.n as u32))
                .map_err(err)?;
            st.launch_builder(&exp)
                .arg(&self.ls)
                .arg(&mut self.tmp)
                .arg(&total)
                .launch(ew)
                .map_err(err)?;
            st.launch_builder(&mul)
                .arg(&self.tmp)
                .arg(&self.ls)
                .arg(&mut self.diff)
                .arg(&total)
                .launch(ew)
                .map_err(err)?;
            st.launch_builder(&reduce)
                .arg(&self.diff)
                .arg(&mut self.row_b)
                .arg(&ni)
                .arg(&vi)
                .arg(&one)
                .launch(rows)
                .map_err(err)?;
        }
        Ok(())
    }

    /// Download (log p(t), entropy) of the last run.
    pub fn results(&self, dev: &CudaDevice) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((download(dev, &self.logp)?, download(dev, &self.row_b)?))
    }
}
