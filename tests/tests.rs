//! Whole-program tests of the `maxmin` binary, one test binary with a module per area:
//!
//! - `cli`: exit codes and error messages for broken configs and arguments, `list`, `check-env`.
//! - `compare`: the policy-comparison stage (objectives × seeds), its report, resume, `bandit`.
//! - `configs`: every file in `configs/` passes `maxmin check`.
//! - `guide`: the environment guide's example (`envs/README.md`): its code is
//!   `envs/src/corridor.rs`, and its MaxMin experiment runs as written.
//! - `gpu`: GPT-2 on the GPU against the CPU, the fused log-prob op on GPU logits (ignored
//!   unless run with `--ignored` from the CUDA build; `benches/gpu-check.sh`).
//! - `layering`: crate dependencies, core's imports, model files and file cycles against
//!   docs/architecture.md "Layering".
//! - `lm`: the language-model pipeline on the fixture GPT-2: report, determinism, resume after
//!   SIGINT, bad input.
//! - `prefs`: the preference + EM stage: run contents, determinism, bad-input handling.
//! - `runs`: run directory contents, determinism (same seed → same metrics), and resume after
//!   SIGINT reproducing the uninterrupted run's metrics.

mod cli;
mod common;
mod compare;
mod configs;
mod gpu;
mod guide;
mod layering;
mod lm;
mod prefs;
mod runs;
