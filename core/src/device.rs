//! Device selection: the CPU (default) or one CUDA GPU driven through cudarc 0.19.
//!
//! `device = "cuda"` in a config (or `--device cuda`) selects the custom kernels of
//! [`crate::ops`]; there is no silent CPU fallback (docs/architecture.md ("Conventions")): when no GPU can be used the
//! request fails with [`Error::Input`] and a `hint:`. cudarc loads `libcuda` and `libnvrtc` at
//! run time (feature `dynamic-loading`) and panics when they are missing, so both libraries are
//! probed before any cudarc call ([`cuda_driver_present`], [`nvrtc_present`]).
//!
//! Kernels are compiled from `core/kernels/*.cu` with NVRTC for `sm_90` (H100/H200), once per
//! process ([`compile`], cached in a `OnceLock`), and loaded into each opened device once.
//!
//! In the `cuda` build (candle's CUDA backend, `scripts/build-cuda.sh`) there is one cudarc,
//! linked: [`CudaDevice`] is made from candle's device for the GPU ([`candle_cuda`], one per
//! process), so the kernels run in candle's context on candle's stream, and the candle ops of
//! [`crate::ops`] read and write candle's CUDA storage directly (unverified on GPU).

use crate::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::{CompileOptions, Ptx};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

/// GPU architecture the kernels are compiled for (H100 / H200).
pub const ARCH: &str = "sm_90";

/// Which device an experiment runs its kernels on; `device = "cpu"` or `device = "cuda"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceConfig {
    /// The Rust CPU implementations (default; the tests' oracle).
    #[default]
    Cpu,
    /// GPU 0 through CUDA; an error when no usable GPU is present.
    Cuda,
}

impl DeviceConfig {
    /// Open the configured device. `cuda` without a usable GPU is an [`Error::Input`].
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceConfig::Cpu => Ok(Device::Cpu),
            DeviceConfig::Cuda => Ok(Device::Cuda(CudaDevice::open(0)?)),
        }
    }
}

impl FromStr for DeviceConfig {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceConfig::Cpu),
            "cuda" => Ok(DeviceConfig::Cuda),
            other => Err(Error::input(
                format!("unknown device `{other}`: expected `cpu` or `cuda`"),
                None,
            )),
        }
    }
}

impl fmt::Display for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceConfig::Cpu => "cpu",
            DeviceConfig::Cuda => "cuda",
        })
    }
}

/// An opened device.
#[derive(Clone)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// A CUDA GPU with its stream and loaded kernels.
    Cuda(Arc<CudaDevice>),
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("Cpu"),
            Device::Cuda(d) => write!(f, "Cuda({})", d.name()),
        }
    }
}

impl Device {
    /// Whether this is a GPU.
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// Human-readable name (`cpu` or the GPU's name).
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(d) => d.name().to_string(),
        }
    }
}

/// Hint shown when the driver library is missing.
const DRIVER_HINT: &str = "use `device = \"cpu\"` (or `--device cpu`) on a machine without an \
NVIDIA GPU; on a GPU machine make sure the NVIDIA driver is installed and `libcuda.so.1` is on \
the loader path (e.g. `LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu`)";

/// Hint shown when NVRTC is missing or incomplete.
pub const NVRTC_HINT: &str = "install NVRTC 13.0 (`python3 -m pip install \
nvidia-cuda-nvrtc==13.0.88`) and put its `nvidia/cu13/lib` folder (with \
`libnvrtc-builtins.so.13.0`) on `LD_LIBRARY_PATH`; on the GPU machine \
`/usr/local/cuda/lib64` has it";

/// Whether the CUDA driver library (`libcuda.so`) can be loaded. cudarc panics on its first
/// driver call when it cannot, so every CUDA path checks this first.
///
/// In the `cuda` build cudarc is linked against `libcuda.so.1` (candle's `dynamic-linking`): the
/// process could not have started without it, so this is `true`.
pub fn cuda_driver_present() -> bool {
    #[cfg(not(feature = "cuda"))]
    // SAFETY: only tries `dlopen` on the candidate names; no symbol is called.
    unsafe {
        cudarc::driver::sys::is_culib_present()
    }
    #[cfg(feature = "cuda")]
    true
}

/// Whether the NVRTC library (`libnvrtc.so.13`) can be loaded.
/// Linked (so `true`) in the `cuda` build, like the driver.
pub fn nvrtc_present() -> bool {
    #[cfg(not(feature = "cuda"))]
    // SAFETY: only tries `dlopen` on the candidate names; no symbol is called.
    unsafe {
        cudarc::nvrtc::sys::is_culib_present()
    }
    #[cfg(feature = "cuda")]
    true
}

/// candle's device for CUDA GPU `ordinal`, created once per process and shared, so that every
/// model, adapter and kernel of a run is on the same candle device and stream (candle checks
/// device identity, and each `Device::new_cuda` call makes a new device). Without the `cuda`
/// build this is candle's own error ("not compiled with cuda support").
pub fn candle_cuda(ordinal: usize) -> candle_core::Result<candle_core::Device> {
    static OPEN: OnceLock<Mutex<HashMap<usize, candle_core::Device>>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| candle_core::Error::Msg("candle device table poisoned".into()))?;
    if let Some(d) = open.get(&ordinal) {
        return Ok(d.clone());
    }
    let d = candle_core::Device::new_cuda(ordinal)?;
    open.insert(ordinal, d.clone());
    Ok(d)
}

/// The CUDA sources, one module per op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `core/kernels/logprob.cu`: fused token log-probs, entropy and KL (+ backward).
    LogProb,
    /// `core/kernels/bt_estep.cu`: Bradley–Terry mixture E-step.
    BtEstep,
    /// `core/kernels/gae.cu`: generalised advantage estimation.
    Gae,
}

impl Kernel {
    /// Every kernel module.
    pub const ALL: [Kernel; 3] = [Kernel::LogProb, Kernel::BtEstep, Kernel::Gae];

    /// The file name under `core/kernels/`.
    pub fn file(self) -> &'static str {
        match self {
            Kernel::LogProb => "logprob.cu",
            Kernel::BtEstep => "bt_estep.cu",
            Kernel::Gae => "gae.cu",
        }
    }

    /// The CUDA source, embedded at build time.
    pub fn source(self) -> &'static str {
        match self {
            Kernel::LogProb => include_str!("../kernels/logprob.cu"),
            Kernel::BtEstep => include_str!("../kernels/bt_estep.cu"),
            Kernel::Gae => include_str!("../kernels/gae.cu"),
        }
    }

    fn index(self) -> usize {
        match self {
            Kernel::LogProb => 0,
            Kernel::BtEstep => 1,
            Kernel::Gae => 2,
        }
    }
}

/// Compile a kernel module to PTX with NVRTC (`sm_90`), once per process.
///
/// Fails with [`Error::Input`] and an install hint when NVRTC (or its builtins library) is
/// missing, and with [`Error::Internal`] carrying the compiler log when the source is wrong.
pub fn compile(kernel: Kernel) -> Result<Ptx> {
    static CACHE: [OnceLock<std::result::Result<Ptx, String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    if !nvrtc_present() {
        return Err(Error::input(
            format!(
                "cannot compile `{}`: libnvrtc could not be loaded",
                kernel.file()
            ),
            Some(NVRTC_HINT.to_string()),
        ));
    }
    let cached = CACHE[kernel.index()].get_or_init(|| {
        let opts = CompileOptions {
            arch: Some(ARCH),
            name: Some(kernel.file().to_string()),
            ..Default::default()
        };
        cudarc::nvrtc::compile_ptx_with_opts(kernel.source(), opts).map_err(|e| match e {
            cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. } => {
                format!("{nvrtc:?}\n{}", log.to_string_lossy())
            }
            other => format!("{other:?}"),
        })
    });
    match cached {
        Ok(ptx) => Ok(ptx.clone()),
        // NVRTC_ERROR_BUILTIN_OPERATION_FAILURE: libnvrtc-builtins is not on the loader path.
        Err(msg) if msg.contains("BUILTIN_OPERATION_FAILURE") || msg.contains("builtins") => {
            Err(Error::input(
                format!("NVRTC could not compile `{}`: {msg}", kernel.file()),
                Some(NVRTC_HINT.to_string()),
            ))
        }
        Err(msg) => Err(Error::Internal(format!(
            "NVRTC failed to compile `{}`: {msg}",
            kernel.file()
        ))),
    }
}

/// A CUDA GPU: its context, one stream every op runs on, and the modules loaded so far.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    peak_gbs: Option<f64>,
    modules: Mutex<HashMap<Kernel, Arc<CudaModule>>>,
    /// candle's device this one was made from (the `cuda` build).
    #[cfg(feature = "cuda")]
    candle: candle_core::Device,
}

/// Turn a driver error into ours, naming what was being done.
pub fn driver_err(what: &str, e: cudarc::driver::DriverError) -> Error {
    Error::Internal(format!("CUDA driver error while {what}: {e:?}"))
}

impl CudaDevice {
    /// Open GPU `ordinal` (shared per process: a second call returns the same device).
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>> {
        static OPEN: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .map_err(|_| Error::Internal("device table poisoned".into()))?;
        if let Some(d) = open.get(&ordinal) {
            return Ok(d.clone());
        }
        if !cuda_driver_present() {
            return Err(Error::input(
                "device = \"cuda\" was requested but the CUDA driver library (libcuda.so) could \
                 not be loaded",
                Some(DRIVER_HINT.to_string()),
            ));
        }
        let cannot_open = |e: String| {
            Error::input(
                format!(
                    "device = \"cuda\" was requested but CUDA device {ordinal} cannot be \
                     opened: {e}"
                ),
                Some(DRIVER_HINT.to_string()),
            )
        };
        // the `cuda` build: candle's device, its context and its stream
        #[cfg(feature = "cuda")]
        let (ctx, stream, candle) = {
            let candle = candle_cuda(ordinal).map_err(|e| cannot_open(e.to_string()))?;
            let stream = candle
                .as_cuda_device()
                .map_err(|e| cannot_open(e.to_string()))?
                .cuda_stream();
            (stream.context().clone(), stream, candle)
        };
        #[cfg(not(feature = "cuda"))]
        let (ctx, stream) = {
            let ctx = CudaContext::new(ordinal).map_err(|e| cannot_open(format!("{e:?}")))?;
            let stream = ctx.default_stream();
            (ctx, stream)
        };
        let name = ctx.name().map_err(|e| driver_err("reading the name", e))?;
        let peak_gbs = peak_bandwidth_gbs(&ctx, &name);
        let dev = Arc::new(CudaDevice {
            ctx,
            stream,
            name,
            peak_gbs,
            modules: Mutex::new(HashMap::new()),
            #[cfg(feature = "cuda")]
            candle,
        });
        open.insert(ordinal, dev.clone());
        Ok(dev)
    }

    /// The GPU's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream every op is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// candle's device sharing this context and stream (the `cuda` build).
    #[cfg(feature = "cuda")]
    pub fn candle_device(&self) -> &candle_core::Device {
        &self.candle
    }

    /// Theoretical memory bandwidth in GB/s (1e9 bytes/s): from the driver's memory clock and
    /// bus width, else from a table of known cards, else `None`.
    pub fn peak_bandwidth_gbs(&self) -> Option<f64> {
        self.peak_gbs
    }

    /// A kernel function, compiling and loading its module on first use.
    pub fn function(&self, kernel: Kernel, name: &str) -> Result<CudaFunction> {
        let module = {
            let mut modules = self
                .modules
                .lock()
                .map_err(|_| Error::Internal("module table poisoned".into()))?;
            match modules.get(&kernel) {
                Some(m) => m.clone(),
                None => {
                    let ptx = compile(kernel)?;
                    let m = self
                        .ctx
                        .load_module(ptx)
                        .map_err(|e| driver_err(&format!("loading `{}`", kernel.file()), e))?;
                    modules.insert(kernel, m.clone());
                    m
                }
            }
        };
        module
            .load_function(name)
            .map_err(|e| driver_err(&format!("finding `{name}` in `{}`", kernel.file()), e))
    }
}

/// Peak DRAM bandwidth: 2 (double data rate) × memory clock × bus width. CUDA 13 may report
/// the clock as 0 on some cards, hence the table of datasheet numbers as a second source.
fn peak_bandwidth_gbs(ctx: &Arc<CudaContext>, name: &str) -> Option<f64> {
    use cudarc::driver::sys::CUdevice_attribute as A;
    let clock_khz = ctx.attribute(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE).ok();
    let bus_bits = ctx
        .attribute(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)
        .ok();
    if let (Some(c), Some(b)) = (clock_khz, bus_bits) {
        if c > 0 && b > 0 {
            return Some(2.0 * c as f64 * 1e3 * (b as f64 / 8.0) / 1e9);
        }
    }
    known_bandwidth_gbs(name)
}

/// Datasheet memory bandwidth (GB/s) of the cards this project is verified on.
pub fn known_bandwidth_gbs(name: &str) -> Option<f64> {
    let n = name.to_ascii_lowercase();
    if n.contains("h200") {
        Some(4800.0)
    } else if n.contains("h100") && n.contains("pcie") {
        Some(2000.0)
    } else if n.contains("h100") {
        Some(3350.0)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_as_kebab_case_strings() {
        #[derive(Deserialize)]
        struct C {
            device: DeviceConfig,
        }
        let c: C = toml::from_str("device = \"cuda\"").unwrap();
        assert_eq!(c.device, DeviceConfig::Cuda);
        let c: C = toml::from_str("device = \"cpu\"").unwrap();
        assert_eq!(c.device, DeviceConfig::Cpu);
        assert!(toml::from_str::<C>("device = \"gpu\"").is_err());
        assert_eq!("cuda".parse::<DeviceConfig>().unwrap(), DeviceConfig::Cuda);
        assert!("tpu".parse::<DeviceConfig>().is_err());
        assert_eq!(DeviceConfig::default(), DeviceConfig::Cpu);
    }

    #[test]
    fn cuda_without_a_gpu_is_an_input_error_not_a_fallback() {
        if cuda_driver_present() {
            eprintln!("a CUDA driver is present: the no-GPU error path was not exercised");
            return;
        }
        let err = DeviceConfig::Cuda.open().unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("libcuda") && msg.contains("hint:"), "{msg}");
    }
}
