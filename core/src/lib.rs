//! maxmin-core: the plugin traits, config loading, and the algorithms of MaxMin-RLHF
//! (Chakraborty et al., ICML 2024; see `docs/algorithms.md`).
//!
//! Library code returns [`error::Error`]; only the `maxmin` binary uses `anyhow`.
#![warn(missing_docs)]

pub mod budget;
pub mod checkpoint;
pub mod compare;
pub mod compare_report;
pub mod config;
pub mod control;
pub mod device;
pub mod env;
pub mod error;
pub mod experiment;
pub mod mlp;
pub mod normalize;
pub mod objective;
pub mod ops;
pub mod optim;
pub mod pipeline;
pub mod policy;
pub mod ppo;
pub mod prefs;
pub mod registry;
pub mod rng;
pub mod run;

pub use error::{Error, Result};

/// The cudarc the custom kernels run on, for code that holds their device buffers (the kernel
/// benchmarks of `maxmin bench kernels`).
pub use cudarc;
#[doc(hidden)]
pub use inventory;
#[doc(hidden)]
pub use typetag;
