//! Llama-2 architecture (covers Tulu2-7B, a Llama-2-7B fine-tune, and grouped-query attention
//! variants) as a maxmin policy / reward-model backbone.
//!
//! Upstream behaviour followed: Hugging Face transformers 4.47 `LlamaForCausalLM` with eager
//! attention (pinned by the fixtures in `tests/data/lm/`). The runtime around the model (checkpoint
//! loading, KV cache, LoRA, heads, sampling, tokenizer) is `maxmin_gpt2`'s, re-exported here.
#![warn(missing_docs)]
// `maxmin_core::Error` is the project-wide error type; its size is core's decision, not ours.
#![allow(clippy::result_large_err)]

pub mod auto;
pub mod config;
pub mod model;

pub use auto::{load_causal_lm, memory_estimate};
pub use config::LlamaConfig;
pub use maxmin_gpt2::{checkpoint, generate, heads, hub, lm, lora, policy, tokenizer, LmConfig};
pub use model::{Llama, LlamaModelConfig};
