//! Load whichever supported architecture a model directory holds, by `config.json`'s `model_type`.

use crate::checkpoint::model_type;
use crate::lm::CausalLm;
use candle_core::{DType, Device};
use maxmin_core::{Error, Result};
use std::path::Path;

/// Architectures [`load_causal_lm`] understands.
pub const SUPPORTED: &[&str] = &["gpt2", "llama"];

/// Load `dir` as a GPT-2 or Llama model.
pub fn load_causal_lm(dir: &Path, dtype: DType, device: &Device) -> Result<Box<dyn CausalLm>> {
    match model_type(dir)?.as_str() {
        "gpt2" => Ok(Box::new(crate::Gpt2::load(dir, dtype, device)?)),
        "llama" => Ok(Box::new(crate::Llama::load(dir, dtype, device)?)),
        other => Err(unsupported(dir, other)),
    }
}

/// The error for a `model_type` no loader handles.
fn unsupported(dir: &Path, model_type: &str) -> Error {
    Error::data(
        dir.join("config.json"),
        None,
        format!(
            "model_type `{model_type}` is not supported; expected one of {}",
            SUPPORTED.join(", ")
        ),
    )
}

/// Vocabulary size and context window (positions) of `dir`'s architecture, from `config.json`.
pub fn shape(dir: &Path) -> Result<(usize, usize)> {
    use crate::checkpoint::read_config;
    match model_type(dir)?.as_str() {
        "gpt2" => {
            let c = read_config::<crate::Gpt2ModelConfig>(dir)?;
            Ok((c.vocab_size, c.n_positions))
        }
        "llama" => {
            let c = read_config::<crate::LlamaModelConfig>(dir)?;
            Ok((c.vocab_size, c.max_position_embeddings))
        }
        other => Err(unsupported(dir, other)),
    }
}

/// Memory the loader would account for `dir`'s architecture (from `config.json` alone, nothing
/// read from the weights): `(tensors, params, bytes resident in compute dtype, peak bytes)`.
pub fn memory_estimate(
    dir: &Path,
    stored: DType,
    compute: DType,
) -> Result<crate::checkpoint::LoadAccounting> {
    use crate::checkpoint::read_config;
    match model_type(dir)?.as_str() {
        "gpt2" => Ok(read_config::<crate::Gpt2ModelConfig>(dir)?.accounting(stored, compute)),
        "llama" => Ok(read_config::<crate::LlamaModelConfig>(dir)?.accounting(stored, compute)),
        other => Err(unsupported(dir, other)),
    }
}
