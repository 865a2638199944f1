//! The fused log-prob op on candle's CUDA tensors (the `cuda` build): [`super::LogProbOp`]'s
//! `cuda_fwd` and the CUDA branch of its backward. The kernels of `core/kernels/logprob.cu` are
//! loaded into candle's device (`get_or_load_custom_func`), launched on candle's stream, and
//! read and write candle's CUDA storage in place — no host copies, one cudarc.
//!
//! **Unverified on GPU**: compiled in the CUDA build only; `benches/gpu-check.sh` runs
//! `ops::gpu_tests::candle_storage_*` against the CPU op.

use super::types::NSTATS;
use crate::device::{compile, Kernel};
use candle_core::backend::BackendStorage;
use candle_core::cuda::{CudaDType, CudaStorageSlice};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, Layout, Shape, Storage, Tensor};
use cudarc::driver::{CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use half::bf16;
use std::sync::OnceLock;

/// Module name under which candle keeps the kernels (one load per candle device).
const MODULE: &str = "maxmin-logprob";

fn err(msg: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(format!("logprob (cuda): {}", msg.into()))
}

/// The PTX of `logprob.cu` as text (NVRTC once per process, see [`compile`]).
fn ptx() -> candle_core::Result<&'static str> {
    static SRC: OnceLock<String> = OnceLock::new();
    if let Some(s) = SRC.get() {
        return Ok(s);
    }
    let p = compile(Kernel::LogProb).map_err(|e| err(e.to_string()))?;
    Ok(SRC.get_or_init(|| p.to_src()))
}

fn function(dev: &CudaDevice, name: &str) -> candle_core::Result<CudaFunction> {
    Ok(dev
        .get_or_load_custom_func(name, MODULE, ptx()?)?
        .into_cuda_function())
}

/// The contiguous element range of a layout, and that it holds `len` elements.
fn range(l: &Layout, len: usize, what: &str) -> candle_core::Result<(usize, usize)> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| err(format!("`{what}` must be contiguous")))?;
    if b - a != len {
        return Err(err(format!(
            "`{what}` has {} elements, expected {len}",
            b - a
        )));
    }
    Ok((a, b))
}

fn dims(n: usize, v: usize) -> candle_core::Result<(i32, i32)> {
    match (i32::try_from(n), i32::try_from(v)) {
        (Ok(n), Ok(v)) => Ok((n, v)),
        _ => Err(err(format!("n = {n} or v = {v} does not fit in i32"))),
    }
}

fn rows(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (super::cuda::BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A view of a contiguous CUDA storage of element type `T`.
fn view<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    len: usize,
    what: &str,
) -> candle_core::Result<CudaView<'a, T>> {
    let (a, b) = range(l, len, what)?;
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}

/// Kernel names and element type per logits dtype.
trait Elem: CudaDType + DeviceRepr {
    const FWD: &'static str;
    const BWD: &'static str;
}

impl Elem for f32 {
    const FWD: &'static str = "logprob_fwd_f32";
    const BWD: &'static str = "logprob_bwd_f32";
}

// The bf16 kernels take the raw bits (`unsigned short`); candle's bf16 storage is those bits.
impl Elem for bf16 {
    const FWD: &'static str = "logprob_fwd_bf16";
    const BWD: &'static str = "logprob_bwd_bf16";
}

/// `cuda_fwd` of the op: stats [n, NSTATS] f32 from logits z [n, v], optional reference w, and
/// targets t [n] u32, all candle CUDA storages on one device.
pub(super) fn forward(
    z: &CudaStorage,
    lz: &Layout,
    w: Option<(&CudaStorage, &Layout)>,
    t: &CudaStorage,
    lt: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let (n, v) = lz.shape().dims2()?;
    let dev = &z.device;
    let mut stats = dev.alloc_zeros::<f32>(n * NSTATS)?;
    if n > 0 {
        match &z.slice {
            CudaStorageSlice::F32(_) => fwd_typed::<f32>(z, lz, w, t, lt, &mut stats, n, v)?,
            CudaStorageSlice::BF16(_) => fwd_typed::<bf16>(z, lz, w, t, lt, &mut stats, n, v)?,
            _ => {
                return Err(err(format!(
                    "logits must be f32 or bf16, found {:?}",
                    z.dtype()
                )))
            }
        }
    }
    Ok((
        CudaStorage::wrap_cuda_slice(stats, dev.clone()),
        Shape::from((n, NSTATS)),
    ))
}

#[allow(clippy::too_many_arguments)]
fn fwd_typed<T: Elem>(
    z: &CudaStorage,
    lz: &Layout,
    w: Option<(&CudaStorage, &Layout)>,
    t: &CudaStorage,
    lt: &Layout,
    stats: &mut CudaSlice<f32>,
    n: usize,
    v: usize,
) -> candle_core::Result<()> {
    let (ni, vi) = dims(n, v)?;
    let zv = view::<T>(z, lz, n * v, "logits")?;
    let wv = match w {
        Some((ws, lw)) => Some(view::<T>(ws, lw, n * v, "reference")?),
        None => None,
    };
    let tv = view::<u32>(t, lt, n, "targets")?;
    let f = function(&z.device, T::FWD)?;
    let stream = z.device.cuda_stream();
    let null: u64 = 0;
    let mut b = stream.launch_builder(&f);
    b.arg(&zv);
    match &wv {
        Some(w) => b.arg(w),
        None => b.arg(&null),
    };
    b.arg(&tv).arg(stats).arg(&ni).arg(&vi);
    // SAFETY: arguments follow `logprob_fwd_*(const T* z, const T* w, const u32* targets,
    // float* stats, int n, int v)`; every view was checked to hold exactly the elements the
    // kernel reads (n × v, n), stats holds n × NSTATS, w is a view or a null pointer (the
    // kernel checks), and the grid has one block per row.
    unsafe { b.launch(rows(n)) }.map_err(|e| err(format!("launching {}: {e:?}", T::FWD)))?;
    Ok(())
}

fn cuda_of<'a>(s: &'a Storage, what: &str) -> candle_core::Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => Err(err(format!(
            "`{what}` must be on the same CUDA device as the logits"
        ))),
    }
}

/// The backward on CUDA tensors: ∂L/∂z [n, v] (dtype of z) from the stats `res` and
/// `grad_res` = ∂L/∂stats, both contiguous f32 [n, NSTATS]. The reference is a constant.
pub(super) fn grad(
    z: &Tensor,
    w: Option<&Tensor>,
    t: &Tensor,
    res: &Tensor,
    grad_res: &Tensor,
) -> candle_core::Result<Tensor> {
    let (n, v) = z.dims2()?;
    let (zs, zl) = z.storage_and_layout();
    let ws = w.map(|w| w.storage_and_layout());
    let (ts, tl) = t.storage_and_layout();
    let (rs, rl) = res.storage_and_layout();
    let (gs, gl) = grad_res.storage_and_layout();
    let zc = cuda_of(&zs, "logits")?;
    let wc = match &ws {
        Some((s, l)) => Some((cuda_of(s, "reference")?, *l)),
        None => None,
    };
    let (tc, rc, gc) = (
        cuda_of(&ts, "targets")?,
        cuda_of(&rs, "stats")?,
        cuda_of(&gs, "gradient")?,
    );
    let a = BwdArgs {
        z: (zc, zl),
        w: wc,
        t: (tc, tl),
        stats: (rc, rl),
        gout: (gc, gl),
        n,
        v,
    };
    let dev = zc.device.clone();
    let out = match &zc.slice {
        CudaStorageSlice::F32(_) => {
            let mut g = dev.alloc_zeros::<f32>(n * v)?;
            bwd_typed::<f32>(&a, &mut g)?;
            CudaStorage::wrap_cuda_slice(g, dev)
        }
        CudaStorageSlice::BF16(_) => {
            let mut g = dev.alloc_zeros::<bf16>(n * v)?;
            bwd_typed::<bf16>(&a, &mut g)?;
            CudaStorage::wrap_cuda_slice(g, dev)
        }
        _ => {
            return Err(err(format!(
                "logits must be f32 or bf16, found {:?}",
                zc.dtype()
            )))
        }
    };
    Ok(Tensor::from_storage(
        Storage::Cuda(out),
        (n, v),
        BackpropOp::none(),
        false,
    ))
}

struct BwdArgs<'a> {
    z: (&'a CudaStorage, &'a Layout),
    w: Option<(&'a CudaStorage, &'a Layout)>,
    t: (&'a CudaStorage, &'a Layout),
    stats: (&'a CudaStorage, &'a Layout),
    gout: (&'a CudaStorage, &'a Layout),
    n: usize,
    v: usize,
}

fn bwd_typed<T: Elem>(a: &BwdArgs, out: &mut CudaSlice<T>) -> candle_core::Result<()> {
    let (n, v) = (a.n, a.v);
    if n == 0 {
        return Ok(());
    }
    let (ni, vi) = dims(n, v)?;
    let zv = view::<T>(a.z.0, a.z.1, n * v, "logits")?;
    let wv = match a.w {
        Some((s, l)) => Some(view::<T>(s, l, n * v, "reference")?),
        None => None,
    };
    let tv = view::<u32>(a.t.0, a.t.1, n, "targets")?;
    let sv = view::<f32>(a.stats.0, a.stats.1, n * NSTATS, "stats")?;
    let gv = view::<f32>(a.gout.0, a.gout.1, n * NSTATS, "gradient of the stats")?;
    let f = function(&a.z.0.device, T::BWD)?;
    let stream = a.z.0.device.cuda_stream();
    let null: u64 = 0;
    let mut b = stream.launch_builder(&f);
    b.arg(&zv);
    match &wv {
        Some(w) => b.arg(w),
        None => b.arg(&null),
    };
    b.arg(&tv).arg(&sv).arg(&gv).arg(out).arg(&ni).arg(&vi);
    // SAFETY: arguments follow `logprob_bwd_*(const T* z, const T* w, const u32* targets,
    // const float* stats, const float* gout, T* grad, int n, int v)`; lengths checked above,
    // `out` holds n × v elements.
    unsafe { b.launch(rows(n)) }.map_err(|e| err(format!("launching {}: {e:?}", T::BWD)))?;
    Ok(())
}
