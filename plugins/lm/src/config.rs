//! [`LmConfig`]: the table that names a language-model backbone (the `[model]` table of an
//! `lm-rlhf` experiment file), whatever its architecture.

use crate::checkpoint::{parse_device, parse_dtype};
use crate::hub::resolve_model;
use crate::lora::LoraConfig;
use crate::tokenizer::Tokenizer;
use candle_core::{DType, Device};
use maxmin_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A language-model backbone: where the weights are, how to compute, which adapters to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LmConfig {
    /// Model directory (`config.json`, `*.safetensors`, `tokenizer.json`) or a hub id found in
    /// the local Hugging Face cache.
    pub model: String,
    /// Compute dtype: `f32`, `f16` or `bf16` (weights are converted from their stored dtype).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// `tokenizer.json` to use instead of the one in the model directory.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// LoRA adapters; absent = the backbone stays frozen and only heads train.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
}

fn default_dtype() -> String {
    "f32".into()
}
fn default_device() -> String {
    "cpu".into()
}

impl LmConfig {
    /// A config for `model` with every default.
    pub fn new(model: impl Into<String>) -> Self {
        LmConfig {
            model: model.into(),
            dtype: default_dtype(),
            device: default_device(),
            tokenizer: None,
            lora: None,
        }
    }

    /// Check values without touching the disk; errors name keys relative to the table.
    pub fn validate(&self) -> Result<()> {
        if self.model.trim().is_empty() {
            return Err(Error::config(
                "model",
                "expected a model directory or hub id, found an empty string",
            ));
        }
        parse_dtype("dtype", &self.dtype)?;
        if !(self.device == "cpu" || self.device == "cuda" || self.device.starts_with("cuda:")) {
            return Err(Error::config(
                "device",
                format!(
                    "unknown device `{}`; expected cpu, cuda or cuda:N",
                    self.device
                ),
            ));
        }
        if let Some(l) = &self.lora {
            l.validate().map_err(|e| e.under("lora"))?;
        }
        Ok(())
    }

    /// The resolved model directory.
    pub fn model_dir(&self) -> Result<PathBuf> {
        resolve_model(&self.model)
    }

    /// Compute dtype.
    pub fn compute_dtype(&self) -> Result<DType> {
        parse_dtype("dtype", &self.dtype)
    }

    /// Device.
    pub fn device(&self) -> Result<Device> {
        parse_device("device", &self.device)
    }

    /// The tokenizer (`tokenizer` if set, else `<model>/tokenizer.json`).
    pub fn load_tokenizer(&self) -> Result<Tokenizer> {
        match &self.tokenizer {
            Some(p) => Tokenizer::from_file(p),
            None => Tokenizer::from_dir(&self.model_dir()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_unknown_field() {
        let c: LmConfig = toml::from_str(
            "model = \"tests/x\"\ndtype = \"bf16\"\n[lora]\nrank = 4\ntarget-modules = [\"c_attn\"]\n",
        )
        .unwrap();
        assert_eq!(c.dtype, "bf16");
        assert_eq!(c.lora.as_ref().unwrap().rank, 4);
        c.validate().unwrap();
        let e = toml::from_str::<LmConfig>("model = \"x\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
        let c: LmConfig = toml::from_str("model = \"m\"\n").unwrap();
        assert_eq!(c, LmConfig::new("m"));
        c.validate().unwrap();
    }

    #[test]
    fn validate_names_keys() {
        let mut c = LmConfig::new("m");
        c.dtype = "f64".into();
        assert!(c.validate().unwrap_err().to_string().contains("dtype"));
        let mut c = LmConfig::new("m");
        c.lora = Some(LoraConfig {
            rank: 0,
            ..Default::default()
        });
        assert!(c.validate().unwrap_err().to_string().contains("lora.rank"));
        assert!(LmConfig::new(" ")
            .validate()
            .unwrap_err()
            .to_string()
            .contains("model"));
    }
}
