//! The supported architectures, one file each in the manner of candle-transformers. A model file
//! implements [`crate::lm::CausalLm`] on the runtime modules (`checkpoint`, `lm`, `lora`, `ops`)
//! and imports no other model file; [`crate::auto`] picks one by `config.json`'s `model_type`.

pub mod gpt2;
pub mod llama;
