//! Hugging Face checkpoints as they are on disk: `model.safetensors`, or shards
//! `model-0000N-of-0000M.safetensors` routed by `model.safetensors.index.json`, memory-mapped
//! (candle's `MmapedSafetensors`), read tensor by tensor with shape and dtype checks, converted to
//! the compute dtype, and counted so the loader can state how much memory a model takes.

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Tensor};
use maxmin_core::{Error, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Parse a dtype name as written in configs and on the command line (`f32`, `f16`, `bf16`).
pub fn parse_dtype(key: &str, s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(Error::Config {
            loc: maxmin_core::error::Location {
                key: Some(key.into()),
                ..Default::default()
            },
            msg: format!("unsupported dtype `{other}`; expected one of f32, f16, bf16"),
            hint: None,
        }),
    }
}

/// Bytes per element of the dtypes a checkpoint may store.
pub fn dtype_bytes(dt: DType) -> usize {
    dt.size_in_bytes()
}

/// What loading has cost so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadAccounting {
    /// Tensors read.
    pub tensors: usize,
    /// Parameters (elements) read.
    pub params: u64,
    /// Bytes of those tensors as stored in the checkpoint (memory-mapped, paged in on read).
    pub stored_bytes: u64,
    /// Bytes of those tensors in the compute dtype (resident after loading).
    pub compute_bytes: u64,
    /// The largest single tensor in compute dtype: the transient extra while one tensor is
    /// converted.
    pub largest_tensor_bytes: u64,
}

impl LoadAccounting {
    /// Count one tensor of `numel` elements stored as `stored` and kept as `compute`.
    pub fn add(&mut self, numel: usize, stored: DType, compute: DType) {
        let c = (numel * dtype_bytes(compute)) as u64;
        self.tensors += 1;
        self.params += numel as u64;
        self.stored_bytes += (numel * dtype_bytes(stored)) as u64;
        self.compute_bytes += c;
        self.largest_tensor_bytes = self.largest_tensor_bytes.max(c);
    }

    /// Estimated peak resident memory of loading: every tensor in compute dtype plus one tensor
    /// in flight (the mapped pages are file-backed and can be dropped by the OS).
    pub fn peak_bytes(&self) -> u64 {
        self.compute_bytes + self.largest_tensor_bytes
    }
}

/// An opened checkpoint directory.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<(PathBuf, MmapedSafetensors)>,
    routing: HashMap<String, usize>,
    device: Device,
    dtype: DType,
    accounting: LoadAccounting,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field(
                "files",
                &self.files.iter().map(|f| &f.0).collect::<Vec<_>>(),
            )
            .field("dtype", &self.dtype)
            .finish()
    }
}

fn open_file(path: &Path) -> Result<MmapedSafetensors> {
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint file not found"),
        ));
    }
    // SAFETY: the file is mapped read-only; as with every mmap, a concurrent writer truncating
    // it would be undefined behaviour, which we accept for checkpoints as candle does.
    unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
        Error::data(
            path,
            None,
            format!("not a valid safetensors file (truncated or corrupt header?): {e}"),
        )
    })
}

impl Checkpoint {
    /// Open `dir`: `model.safetensors.index.json` (sharded) if present, else `model.safetensors`.
    /// Tensors are converted to `dtype` on `device` as they are read.
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let mut files = Vec::new();
        let mut routing = HashMap::new();
        if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::data(&index, Some(e.line()), e.to_string()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    Error::data(
                        &index,
                        None,
                        "missing object `weight_map` (tensor name → shard file)",
                    )
                })?;
            let mut names = BTreeSet::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    Error::data(
                        &index,
                        None,
                        format!("weight_map[`{tensor}`] is not a file name"),
                    )
                })?;
                if file.contains('/') || file.contains('\\') {
                    return Err(Error::data(
                        &index,
                        None,
                        format!("weight_map[`{tensor}`] = `{file}` must be a file name in the directory"),
                    ));
                }
                names.insert(file.to_string());
            }
            let order: Vec<String> = names.into_iter().collect();
            for f in &order {
                let p = dir.join(f);
                files.push((p.clone(), open_file(&p)?));
            }
            for (tensor, file) in map {
                // Unwrap-free: every file name was inserted into `order` above.
                let i = order
                    .iter()
                    .position(|f| Some(f.as_str()) == file.as_str())
                    .unwrap_or(0);
                routing.insert(tensor.clone(), i);
            }
        } else if single.is_file() {
            let st = open_file(&single)?;
            for (name, _) in st.tensors() {
                routing.insert(name, 0);
            }
            files.push((single, st));
        } else {
            return Err(Error::data(
                dir,
                None,
                "no model.safetensors or model.safetensors.index.json in the model directory \
                 (PyTorch .bin checkpoints are not read; convert them with safetensors)",
            ));
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            files,
            routing,
            device: device.clone(),
            dtype,
            accounting: LoadAccounting::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Compute dtype tensors are converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device tensors are loaded on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the checkpoint has a tensor of that name.
    pub fn contains(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.routing.keys().map(|s| s.as_str()).collect();
        v.sort_unstable();
        v
    }

    /// What has been loaded so far.
    pub fn accounting(&self) -> LoadAccounting {
        self.accounting
    }

    /// Read tensor `name`, check it has `shape` and a float dtype, convert to the compute dtype.
    pub fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let Some(&i) = self.routing.get(name) else {
            let names = self.names();
            let sample: Vec<&str> = names.iter().take(4).copied().collect();
            return Err(Error::data(
                &self.dir,
                None,
                format!(
                    "missing tensor `{name}` (the checkpoint has {} tensors, e.g. {})",
                    names.len(),
                    sample.join(", ")
                ),
            ));
        };
        let (file, st) = &self.files[i];
        let view = st.get(name).map_err(|e| {
            Error::data(
                file,
                None,
                format!("tensor `{name}` listed in the index but not in this shard: {e}"),
            )
        })?;
        if view.shape() != shape {
            return Err(Error::data(
                file,
                None,
                format!(
                    "tensor `{name}` has the wrong shape: expected {:?}, found {:?}",
                    shape,
                    view.shape()
                ),
            ));
        }
        let stored = match DType::try_from(view.dtype()) {
            Ok(d @ (DType::F32 | DType::F16 | DType::BF16)) => d,
            _ => {
                return Err(Error::data(
                    file,
                    None,
                    format!(
                        "tensor `{name}` has unsupported dtype {:?}; expected F32, F16 or BF16",
                        view.dtype()
                    ),
                ))
            }
        };
        if let Some(at) = first_non_finite(view.data(), stored) {
            return Err(Error::data(
                file,
                None,
                format!(
                    "tensor `{name}` holds a non-finite value (NaN or ±inf) at flat index {at}; \
                     the checkpoint is corrupt or was saved from a diverged run"
                ),
            ));
        }
        let t = view
            .load(&self.device)
            .map_err(|e| Error::data(file, None, format!("cannot read tensor `{name}`: {e}")))?
            .to_dtype(self.dtype)?;
        self.accounting.add(t.elem_count(), stored, self.dtype);
        Ok(t)
    }
}

/// Index of the first NaN or ±inf in little-endian `data` of `dtype` (F32, F16 or BF16), read
/// from the stored bits: an all-ones exponent is non-finite in each of the three formats.
fn first_non_finite(data: &[u8], dtype: DType) -> Option<usize> {
    match dtype {
        DType::F32 => data.chunks_exact(4).position(|b| {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7F80_0000 == 0x7F80_0000
        }),
        DType::F16 => data
            .chunks_exact(2)
            .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7C00 == 0x7C00),
        DType::BF16 => data
            .chunks_exact(2)
            .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7F80 == 0x7F80),
        _ => None,
    }
}

/// Read and parse `dir/config.json` into `T`; a missing or mistyped field is a data error naming
/// the file, line and field.
pub fn read_config<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<T> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::data(&path, Some(e.line()), e.to_string()))
}

/// The `model_type` field of `dir/config.json` (`gpt2`, `llama`, …).
pub fn model_type(dir: &Path) -> Result<String> {
    let v: serde_json::Value = read_config(dir)?;
    v.get("model_type")
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::data(dir.join("config.json"), None, "missing field `model_type`"))
}

/// Parse a device name: `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(key: &str, s: &str) -> Result<Device> {
    let ordinal = match s {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => {
                return Err(Error::config(
                    key,
                    format!("unknown device `{s}`; expected cpu, cuda or cuda:N"),
                ))
            }
        },
    };
    // one candle device per GPU and process, shared with the kernels (maxmin_core::device)
    maxmin_core::device::candle_cuda(ordinal).map_err(|e| Error::Config {
        loc: maxmin_core::error::Location {
            key: Some(key.into()),
            ..Default::default()
        },
        msg: format!("device `{s}` is not available: {e}"),
        hint: Some(
            "use device = \"cpu\", or build with candle's cuda feature on a GPU machine".into(),
        ),
    })
}
