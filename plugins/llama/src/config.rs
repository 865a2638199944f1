//! `[policy] type = "llama"` / `[reward-model] type = "llama"`: a Llama-2 (or Tulu2) backbone.

use maxmin_core::policy::{PolicyConfig, RewardModelConfig};
use maxmin_core::Result;
use maxmin_gpt2::LmConfig;
use serde::{Deserialize, Serialize};
use std::any::Any;

/// `type = "llama"`: the shared [`LmConfig`] table (model, dtype, device, tokenizer, lora).
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
