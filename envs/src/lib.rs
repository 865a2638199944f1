//! maxmin-envs: Gymnasium-exact classic-control environments (CartPole-v1, MountainCar-v0,
//! Acrobot-v1, Pendulum-v1), a structure-of-arrays vectorised CartPole, the environment checker
//! behind `maxmin check-env`, a tiny `corridor` example environment, and (feature `gym-rs`) an
//! adapter for gym-rs 0.3.
//!
//! Every environment implements `maxmin_core::env::{Env, EnvConfig}` and is registered with
//! typetag and `maxmin_core::register_plugin!`, so `[env] type = "cartpole"` in a config builds
//! it. Dynamics, spaces, rewards, time limits and (through [`np_rng`]) seeded start states match
//! Gymnasium 1.0.0; `tests/golden.rs` checks them against trajectories recorded from Python.
//! See `envs/README.md` for how to write a new environment.
#![warn(missing_docs)]
// maxmin_core::Error is the project-wide error type; its size is core's decision.
#![allow(clippy::result_large_err)]

pub mod acrobot;
pub mod cartpole;
mod cartpole_physics;
mod cartpole_vec;
pub mod checker;
mod common;
pub mod corridor;
#[cfg(feature = "gym-rs")]
pub mod gym_rs;
pub mod mountain_car;
pub mod np_rng;
pub mod pendulum;
mod trig;

pub use acrobot::{Acrobot, AcrobotConfig};
pub use cartpole::{CartPole, CartPoleConfig};
pub use cartpole_vec::CartPoleVecEnv;
pub use checker::{check_env, Check, CheckReport};
pub use corridor::{Corridor, CorridorConfig};
pub use mountain_car::{MountainCar, MountainCarConfig};
pub use pendulum::{Pendulum, PendulumConfig};
