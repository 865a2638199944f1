//! Adapter for the gym-rs 0.3 crate (cargo feature `gym-rs`): its CartPole and MountainCar as
//! maxmin [`Env`]s, config types `gym-rs-cartpole` and `gym-rs-mountain-car`.
//!
//! gym-rs is not Gymnasium-exact, and the adapter says where:
//! - gym-rs 0.3.0's CartPole draws its start state from ±0.5 instead of Gymnasium's ±0.05 when
//!   `reset` gets no bounds (58 % of random-policy episodes then end after one step). The adapter
//!   passes explicit bounds, `reset-bound` (default 0.05, Gymnasium's value).
//! - gym-rs 0.3.0 computes CartPole's `polemass_length` as `masspole + length` (0.6) where
//!   Gymnasium multiplies them (0.05); the adapter cannot change that, so trajectories differ
//!   from Gymnasium's even from the same state (episode-length statistics are compared in
//!   `tests/gym_rs.rs`).
//! - gym-rs has no time limit; the adapter counts steps and truncates at `max-episode-steps`
//!   (500 for CartPole, 200 for MountainCar, as Gymnasium's registry).
//! - gym-rs seeds its PCG64 from the OS when `reset` gets no seed; the adapter always passes a
//!   seed, drawn from its own ChaCha8 stream (seeded by `reset(Some(seed))`), so every episode
//!   is reproducible and the stream is part of the snapshot.
//! - gym-rs's state is f64; observations are rounded to f32.

use crate::common::{discrete_action, parse_snapshot, snapshot_value, time_limit};
use gym_rs::core::Env as GymEnv;
use gym_rs::envs::classical_control::cartpole::{CartPoleEnv, CartPoleObservation};
use gym_rs::envs::classical_control::mountain_car::{MountainCarEnv, MountainCarObservation};
use gym_rs::spaces::BoxR;
use gym_rs::utils::custom::types::O64;
use gym_rs::utils::renderer::RenderMode;
use maxmin_core::env::{Action, Env, EnvConfig, EnvSpec, Space, StepOutcome};
use maxmin_core::error::check;
use maxmin_core::rng::Rng;
use maxmin_core::Result;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// `[env] type = "gym-rs-cartpole"`: gym-rs 0.3's CartPole with Gymnasium's start-state bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GymRsCartPoleConfig {
    /// Steps after which an episode is truncated (default 500, as CartPole-v1).
    #[serde(default = "default_cartpole_steps")]
    pub max_episode_steps: usize,
    /// Start-state variables are drawn from `[-reset-bound, reset-bound]` (default 0.05, as
    /// Gymnasium; gym-rs's own default is 0.5).
    #[serde(default = "default_reset_bound")]
    pub reset_bound: f64,
}

fn default_cartpole_steps() -> usize {
    500
}

fn default_reset_bound() -> f64 {
    0.05
}

impl Default for GymRsCartPoleConfig {
    fn default() -> Self {
        Self {
            max_episode_steps: default_cartpole_steps(),
            reset_bound: default_reset_bound(),
        }
    }
}

#[typetag::serde(name = "gym-rs-cartpole")]
impl EnvConfig for GymRsCartPoleConfig {
    fn validate(&self) -> Result<()> {
        check::positive_usize("max-episode-steps", self.max_episode_steps)?;
        check::positive_f64("reset-bound", self.reset_bound)
    }
    fn build(&self) -> Result<Box<dyn Env>> {
        self.validate()?;
        Ok(Box::new(GymRsCartPole::new(self)))
    }
}

maxmin_core::register_plugin!(
    EnvConfig,
    "gym-rs-cartpole",
    "gym-rs 0.3 CartPole through the adapter (start bounds fixed to ±0.05; not Gymnasium-exact)"
);

/// `[env] type = "gym-rs-mountain-car"`: gym-rs 0.3's MountainCar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GymRsMountainCarConfig {
    /// Steps after which an episode is truncated (default 200, as MountainCar-v0).
    #[serde(default = "default_mountain_car_steps")]
    pub max_episode_steps: usize,
}

fn default_mountain_car_steps() -> usize {
    200
}

impl Default for GymRsMountainCarConfig {
    fn default() -> Self {
        Self {
            max_episode_steps: default_mountain_car_steps(),
        }
    }
}

#[typetag::serde(name = "gym-rs-mountain-car")]
impl EnvConfig for GymRsMountainCarConfig {
    fn validate(&self) -> Result<()> {
        check::positive_usize("max-episode-steps", self.max_episode_steps)
    }
    fn build(&self) -> Result<Box<dyn Env>> {
        self.validate()?;
        Ok(Box::new(GymRsMountainCar::new(self)))
    }
}

maxmin_core::register_plugin!(
    EnvConfig,
    "gym-rs-mountain-car",
    "gym-rs 0.3 MountainCar through the adapter (time limit and seeding added)"
);

/// A gym-rs environment made `Send`.
struct SendEnv<E>(E);

// SAFETY: gym-rs environments are `!Send` only because their `Screen` may hold an SDL window
// (`Option<ScreenGui>`). The adapter builds them with `RenderMode::None` and never calls
// `render`; with that mode gym-rs's `Renderer` never invokes the drawing closure, so the window
// is never created and the field stays `None`. What remains is plain data (floats, a PCG64).
unsafe impl<E> Send for SendEnv<E> {}

fn o(x: f64) -> O64 {
    O64::from(x)
}

/// gym-rs 0.3's CartPole as an [`Env`].
pub struct GymRsCartPole {
    inner: SendEnv<CartPoleEnv>,
    spec: EnvSpec,
    max_steps: usize,
    reset_bound: f64,
    steps: usize,
    seeds: Rng,
}

#[derive(Serialize, Deserialize)]
struct CartPoleSnapshot {
    state_bits: [u64; 4],
    steps_beyond_terminated: Option<usize>,
    steps: usize,
    seeds: Rng,
}

impl GymRsCartPole {
    /// A new environment (call [`Env::reset`] before stepping).
    pub fn new(cfg: &GymRsCartPoleConfig) -> Self {
        let mut spec = crate::cartpole::spec(cfg.max_episode_steps);
        spec.id = "gym-rs/CartPole".into();
        Self {
            inner: SendEnv(CartPoleEnv::new(RenderMode::None)),
            spec,
            max_steps: cfg.max_episode_steps,
            reset_bound: cfg.reset_bound,
            steps: 0,
            seeds: Rng::seed_from_u64(0),
        }
    }

    fn write_obs(&self, obs: &mut [f32]) {
        let v: Vec<f64> = self.inner.0.state.into();
        for (d, s) in obs.iter_mut().zip(v) {
            *d = s as f32;
        }
    }
}

impl Env for GymRsCartPole {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            self.seeds = Rng::seed_from_u64(seed);
        }
        let b = self.reset_bound;
        let bounds = BoxR::new(
            CartPoleObservation::new(o(-b), o(-b), o(-b), o(-b)),
            CartPoleObservation::new(o(b), o(b), o(b), o(b)),
        );
        self.inner
            .0
            .reset(Some(self.seeds.next_u64()), false, Some(bounds));
        self.steps = 0;
        self.write_obs(obs);
    }

    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> StepOutcome {
        let a = discrete_action(&self.spec.id, action, 2);
        let out = self.inner.0.step(a);
        self.steps += 1;
        self.write_obs(obs);
        StepOutcome {
            reward: out.reward.into_inner() as f32,
            terminated: out.done,
            truncated: time_limit(self.steps, self.max_steps, out.done),
        }
    }

    fn snapshot(&self) -> serde_json::Value {
        let v: Vec<f64> = self.inner.0.state.into();
        snapshot_value(&CartPoleSnapshot {
            state_bits: [v[0], v[1], v[2], v[3]].map(f64::to_bits),
            steps_beyond_terminated: self.inner.0.steps_beyond_terminated,
            steps: self.steps,
            seeds: self.seeds.clone(),
        })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: CartPoleSnapshot = parse_snapshot(&self.spec.id, state)?;
        let [x, x_dot, theta, theta_dot] = s.state_bits.map(f64::from_bits);
        self.inner.0.state = CartPoleObservation::new(o(x), o(x_dot), o(theta), o(theta_dot));
        self.inner.0.steps_beyond_terminated = s.steps_beyond_terminated;
        self.steps = s.steps;
        self.seeds = s.seeds;
        Ok(())
    }
}

/// gym-rs 0.3's MountainCar as an [`Env`].
pub struct GymRsMountainCar {
    inner: SendEnv<MountainCarEnv>,
    spec: EnvSpec,
    max_steps: usize,
    steps: usize,
    seeds: Rng,
}

#[derive(Serialize, Deserialize)]
struct MountainCarSnapshot {
    state_bits: [u64; 2],
    steps: usize,
    seeds: Rng,
}

impl GymRsMountainCar {
    /// A new environment (call [`Env::reset`] before stepping).
    pub fn new(cfg: &GymRsMountainCarConfig) -> Self {
        Self {
            inner: SendEnv(MountainCarEnv::new(RenderMode::None)),
            spec: EnvSpec {
                id: "gym-rs/MountainCar".into(),
                observation_space: Space::Box {
                    low: vec![-1.2, -0.07],
                    high: vec![0.6, 0.07],
                },
                action_space: Space::Discrete { n: 3 },
                max_episode_steps: Some(cfg.max_episode_steps),
                reward_threshold: Some(-110.0),
            },
            max_steps: cfg.max_episode_steps,
            steps: 0,
            seeds: Rng::seed_from_u64(0),
        }
    }

    fn write_obs(&self, obs: &mut [f32]) {
        let s = &self.inner.0.state;
        obs[0] = s.position.into_inner() as f32;
        obs[1] = s.velocity.into_inner() as f32;
    }
}

impl Env for GymRsMountainCar {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            self.seeds = Rng::seed_from_u64(seed);
        }
        self.inner.0.reset(Some(self.seeds.next_u64()), false, None);
        self.steps = 0;
        self.write_obs(obs);
    }

    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> StepOutcome {
        let a = discrete_action(&self.spec.id, action, 3);
        let out = self.inner.0.step(a);
        self.steps += 1;
        self.write_obs(obs);
        StepOutcome {
            reward: out.reward.into_inner() as f32,
            terminated: out.done,
            truncated: time_limit(self.steps, self.max_steps, out.done),
        }
    }

    fn snapshot(&self) -> serde_json::Value {
        let s = &self.inner.0.state;
        snapshot_value(&MountainCarSnapshot {
            state_bits: [s.position.into_inner(), s.velocity.into_inner()].map(f64::to_bits),
            steps: self.steps,
            seeds: self.seeds.clone(),
        })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: MountainCarSnapshot = parse_snapshot(&self.spec.id, state)?;
        let [p, v] = s.state_bits.map(f64::from_bits);
        self.inner.0.state = MountainCarObservation {
            position: o(p),
            velocity: o(v),
        };
        self.steps = s.steps;
        self.seeds = s.seeds;
        Ok(())
    }
}
