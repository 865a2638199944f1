//! [`LmConfig`], the table that names a language-model backbone, and the plugin configs
//! `[policy] type = "gpt2"` / `"llama"` and `[reward-model] type = "gpt2"` / `"llama"` built on it.

use crate::checkpoint::{parse_device, parse_dtype};
use crate::hub::resolve_model;
use crate::lora::LoraConfig;
use crate::tokenizer::Tokenizer;
use candle_core::{DType, Device};
use maxmin_core::policy::{PolicyConfig, RewardModelConfig};
use maxmin_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::any::Any;
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

/// `type = "gpt2"`: a GPT-2 policy or reward-model backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Gpt2Config(pub LmConfig);

impl Gpt2Config {
    /// Load the model this config names.
    pub fn load(&self) -> Result<crate::Gpt2> {
        self.0.validate()?;
        crate::Gpt2::load(
            &self.0.model_dir()?,
            self.0.compute_dtype()?,
            &self.0.device()?,
        )
    }
}

#[typetag::serde(name = "gpt2")]
impl PolicyConfig for Gpt2Config {
    fn validate(&self) -> Result<()> {
        self.0.validate()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[typetag::serde(name = "gpt2")]
impl RewardModelConfig for Gpt2Config {
    fn validate(&self) -> Result<()> {
        self.0.validate()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

maxmin_core::register_plugin!(
    PolicyConfig,
    "gpt2",
    "GPT-2 causal LM policy (HF checkpoint dir or cached hub id; LoRA, value head)"
);
maxmin_core::register_plugin!(
    RewardModelConfig,
    "gpt2",
    "GPT-2 Bradley–Terry reward model (scalar head on the last token)"
);

/// `type = "llama"`: a Llama-2 (or Tulu2) policy or reward-model backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LlamaConfig(pub LmConfig);

impl LlamaConfig {
    /// Load the model this config names.
    pub fn load(&self) -> Result<crate::Llama> {
        self.0.validate()?;
        crate::Llama::load(
            &self.0.model_dir()?,
            self.0.compute_dtype()?,
            &self.0.device()?,
        )
    }
}

#[typetag::serde(name = "llama")]
impl PolicyConfig for LlamaConfig {
    fn validate(&self) -> Result<()> {
        self.0.validate()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[typetag::serde(name = "llama")]
impl RewardModelConfig for LlamaConfig {
    fn validate(&self) -> Result<()> {
        self.0.validate()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

maxmin_core::register_plugin!(
    PolicyConfig,
    "llama",
    "Llama-2 / Tulu2 causal LM policy (HF checkpoint dir or cached hub id; LoRA, value head)"
);
maxmin_core::register_plugin!(
    RewardModelConfig,
    "llama",
    "Llama-2 / Tulu2 Bradley–Terry reward model (scalar head on the last token)"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typetag_round_trip_and_unknown_field() {
        let p: Box<dyn PolicyConfig> = toml::from_str(
            "type = \"gpt2\"\nmodel = \"tests/x\"\ndtype = \"bf16\"\n[lora]\nrank = 4\ntarget-modules = [\"c_attn\"]\n",
        )
        .unwrap();
        let c = p.as_any().downcast_ref::<Gpt2Config>().unwrap();
        assert_eq!(c.0.dtype, "bf16");
        assert_eq!(c.0.lora.as_ref().unwrap().rank, 4);
        p.validate().unwrap();
        let e =
            toml::from_str::<Box<dyn PolicyConfig>>("type = \"gpt2\"\nmodel = \"x\"\nbogus = 1\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("bogus"), "{e}");
        let r: Box<dyn RewardModelConfig> =
            toml::from_str("type = \"gpt2\"\nmodel = \"m\"\n").unwrap();
        r.validate().unwrap();
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
