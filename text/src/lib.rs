//! MaxMin-RLHF for language models (docs/algorithms.md, "Experiments to reproduce" items 1 and 2): the
//! text environment (prompts → one completion per episode), ground-truth text group rewards,
//! reward models on an LM backbone trained with BT / EM, the P-Soups reader for recorded
//! preferences ([`psoups`]), and the pipeline that compares
//! objectives with token-level PPO.
#![warn(missing_docs)]
#![allow(clippy::result_large_err)]

pub mod config;
pub mod context;
pub mod features;
pub mod pipeline;
pub mod prompts;
pub mod psoups;
pub mod report;
pub mod reward_stage;
pub mod rewards;

pub use config::LmExperiment;
