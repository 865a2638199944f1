//! Custom fused operations. Each op is a folder `<op>/` with `mod.rs` (the API, dispatch on
//! [`crate::device::Device`], tests), `cpu.rs` (a fast Rust implementation: the default path
//! and the tests' oracle) and `cuda.rs` (launches the kernel in `core/kernels/<op>.cu`, which
//! NVRTC compiles at run time; see `docs/gpu.md`). Layout after dfdx's `tensor_ops/<op>/`.
//!
//! - [`logprob`]: per-token log p(target), entropy and KL to a reference policy from logits,
//!   forward and backward, also as a candle op that autograd differentiates through (PPO).
//! - [`bt_estep`]: the E-step of the Bradley–Terry mixture, a [users, K] log-likelihood matrix.
//! - [`gae`]: generalised advantage estimation over [T, N] rollouts.
//! - [`fastmath`]: a branch-free, vectorisable `exp` shared by the CPU kernels and the GPT-2
//!   pretraining loop.

pub mod bt_estep;
pub mod gae;
pub mod logprob;

pub mod fastmath;

#[cfg(test)]
mod gpu_tests;
