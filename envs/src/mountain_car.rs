//! MountainCar-v0, as Gymnasium 1.0.0's `MountainCarEnv` wrapped in `TimeLimit(200)`.
//!
//! A car is placed at the bottom of a sinusoidal valley (Moore, 1990); its engine is too weak to
//! climb the right hill directly, so it must build momentum by driving back and forth.
//!
//! ## Action space
//! `Discrete(3)`: 0 accelerates left, 1 does not accelerate, 2 accelerates right.
//!
//! ## Observation space
//! `Box(2)` of f32: position in [-1.2, 0.6], velocity in [-0.07, 0.07].
//!
//! ## Transition
//! `velocity += (action − 1) · 0.001 − cos(3 · position) · 0.0025`, clipped to ±0.07;
//! `position += velocity`, clipped to [-1.2, 0.6]; hitting the left wall while moving left sets the
//! velocity to 0. The state is f64, as Gymnasium 1.0.0 computes it (it starts as a float64 NumPy
//! array); observations are rounded to f32.
//!
//! ## Reward
//! -1 for every step.
//!
//! ## Start state
//! Position uniform in [-0.6, -0.4] (NumPy PCG64 stream seeded as Gymnasium seeds it), velocity 0.
//!
//! ## Episode end
//! 1. Termination: position ≥ 0.5 and velocity ≥ `goal-velocity` (0).
//! 2. Truncation: the episode reaches `max-episode-steps` (200) steps without terminating.
//!
//! Reward threshold -110. Config: `[env] type = "mountain-car"`.
//!
//! ## Group rewards
//! `mountain-car-goal` (the car's position per step: reach the goal fast) and
//! `mountain-car-frugal` (−1 per accelerating step: use little force), for
//! `[population.groups.reward]`.

use crate::common::{
    discrete_action, from_bits, parse_snapshot, snapshot_value, time_limit, to_bits,
    validate_max_steps,
};
use crate::np_rng::NpRng;
use maxmin_core::env::{Action, Env, EnvConfig, EnvSpec, Space, StepOutcome};
use maxmin_core::prefs::group_reward::{GroupReward, GroupRewardConfig};
use maxmin_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Gymnasium id.
pub const ID: &str = "MountainCar-v0";
/// Gymnasium's `max_episode_steps` for MountainCar-v0.
pub const MAX_EPISODE_STEPS: usize = 200;

const MIN_POSITION: f64 = -1.2;
const MAX_POSITION: f64 = 0.6;
const MAX_SPEED: f64 = 0.07;
const GOAL_POSITION: f64 = 0.5;
const FORCE: f64 = 0.001;
const GRAVITY: f64 = 0.0025;

/// `[env] type = "mountain-car"`: Gymnasium's MountainCar-v0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MountainCarConfig {
    /// Steps after which an episode is truncated (Gymnasium's `max_episode_steps`, default 200).
    #[serde(default = "default_max_steps")]
    pub max_episode_steps: usize,
    /// Gymnasium's `goal_velocity`: the velocity the car must have at the goal (default 0).
    #[serde(default)]
    pub goal_velocity: f64,
}

fn default_max_steps() -> usize {
    MAX_EPISODE_STEPS
}

impl Default for MountainCarConfig {
    fn default() -> Self {
        Self {
            max_episode_steps: MAX_EPISODE_STEPS,
            goal_velocity: 0.0,
        }
    }
}

#[typetag::serde(name = "mountain-car")]
impl EnvConfig for MountainCarConfig {
    fn validate(&self) -> Result<()> {
        validate_max_steps(self.max_episode_steps)?;
        if !self.goal_velocity.is_finite() {
            return Err(Error::config(
                "goal-velocity",
                format!("expected a finite number, found {}", self.goal_velocity),
            ));
        }
        Ok(())
    }
    fn build(&self) -> Result<Box<dyn Env>> {
        self.validate()?;
        Ok(Box::new(MountainCar::new(self)))
    }
}

maxmin_core::register_plugin!(
    EnvConfig,
    "mountain-car",
    "MountainCar-v0 (Gymnasium-exact): drive an underpowered car up a hill"
);

/// MountainCar-v0 as one [`Env`].
#[derive(Debug, Clone)]
pub struct MountainCar {
    spec: EnvSpec,
    max_steps: usize,
    goal_velocity: f64,
    /// `(position, velocity)`.
    state: [f64; 2],
    rng: NpRng,
    steps: usize,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    state_bits: [u64; 2],
    rng: NpRng,
    steps: usize,
}

impl MountainCar {
    /// A new environment (call [`Env::reset`] before stepping).
    pub fn new(cfg: &MountainCarConfig) -> Self {
        let low = vec![MIN_POSITION as f32, -MAX_SPEED as f32];
        let high = vec![MAX_POSITION as f32, MAX_SPEED as f32];
        Self {
            spec: EnvSpec {
                id: ID.into(),
                observation_space: Space::Box { low, high },
                action_space: Space::Discrete { n: 3 },
                max_episode_steps: Some(cfg.max_episode_steps),
                reward_threshold: Some(-110.0),
            },
            max_steps: cfg.max_episode_steps,
            goal_velocity: cfg.goal_velocity,
            state: [0.0; 2],
            rng: NpRng::default(),
            steps: 0,
        }
    }

    /// The f64 state `(position, velocity)`.
    pub fn state(&self) -> [f64; 2] {
        self.state
    }

    /// Set the f64 state (for tests that start from a given state).
    pub fn set_state(&mut self, s: [f64; 2]) {
        self.state = s;
    }

    fn write_obs(&self, obs: &mut [f32]) {
        obs[0] = self.state[0] as f32;
        obs[1] = self.state[1] as f32;
    }
}

impl Env for MountainCar {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            self.rng = NpRng::from_seed(seed);
        }
        self.state = [self.rng.uniform(-0.6, -0.4), 0.0];
        self.steps = 0;
        self.write_obs(obs);
    }

    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> StepOutcome {
        let a = discrete_action(ID, action, 3) as f64;
        let [mut position, mut velocity] = self.state;
        velocity += (a - 1.0) * FORCE + (3.0 * position).cos() * (-GRAVITY);
        velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED);
        position += velocity;
        position = position.clamp(MIN_POSITION, MAX_POSITION);
        if position == MIN_POSITION && velocity < 0.0 {
            velocity = 0.0;
        }
        let terminated = position >= GOAL_POSITION && velocity >= self.goal_velocity;
        self.state = [position, velocity];
        self.steps += 1;
        self.write_obs(obs);
        StepOutcome {
            reward: -1.0,
            terminated,
            truncated: time_limit(self.steps, self.max_steps, terminated),
        }
    }

    fn snapshot(&self) -> serde_json::Value {
        snapshot_value(&Snapshot {
            state_bits: to_bits(&self.state),
            rng: self.rng,
            steps: self.steps,
        })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: Snapshot = parse_snapshot(ID, state)?;
        self.state = from_bits(&s.state_bits);
        self.rng = s.rng;
        self.steps = s.steps;
        Ok(())
    }
}

// Group rewards (ground truths of simulated groups, `[population.groups.reward]`): they read
// this environment's observations and actions, so they live here and are registered for its id
// only.

/// `type = "mountain-car-goal"`: reach the goal fast — r = position per step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MountainCarGoalConfig {}

#[derive(Debug)]
struct MountainCarGoal;

impl GroupReward for MountainCarGoal {
    fn step_reward(&self, obs: &[f32], _act: &[f32]) -> f64 {
        obs[0] as f64
    }
}

#[typetag::serde(name = "mountain-car-goal")]
impl GroupRewardConfig for MountainCarGoalConfig {
    fn build(&self, _env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        Ok(Box::new(MountainCarGoal))
    }
}

maxmin_core::register_plugin!(
    GroupRewardConfig,
    "mountain-car-goal",
    "MountainCar group reward: reach the goal fast (the car's position per step)",
    envs = [ID]
);

/// `type = "mountain-car-frugal"`: use little force — r = −1 per step that accelerates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MountainCarFrugalConfig {}

#[derive(Debug)]
struct MountainCarFrugal;

impl GroupReward for MountainCarFrugal {
    fn step_reward(&self, _obs: &[f32], act: &[f32]) -> f64 {
        // Action 1 is "do not accelerate".
        -((act[0] as f64 - 1.0).abs())
    }
}

#[typetag::serde(name = "mountain-car-frugal")]
impl GroupRewardConfig for MountainCarFrugalConfig {
    fn build(&self, _env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        Ok(Box::new(MountainCarFrugal))
    }
}

maxmin_core::register_plugin!(
    GroupRewardConfig,
    "mountain-car-frugal",
    "MountainCar group reward: use little force (−1 per accelerating step)",
    envs = [ID]
);

#[cfg(test)]
mod group_reward_tests {
    use super::*;
    use maxmin_core::prefs::group_reward::build;

    #[test]
    fn goal_rewards_position_frugal_penalises_force_and_both_check_env() {
        let spec = MountainCarConfig::default().build().unwrap().spec().clone();
        let goal = build(&MountainCarGoalConfig {}, &spec).unwrap();
        assert!(goal.step_reward(&[0.4, 0.0], &[1.0]) > goal.step_reward(&[-0.4, 0.0], &[1.0]));
        let frugal = build(&MountainCarFrugalConfig {}, &spec).unwrap();
        assert_eq!(frugal.step_reward(&[0.0, 0.0], &[1.0]), 0.0);
        assert_eq!(frugal.step_reward(&[0.0, 0.0], &[2.0]), -1.0);
        let mut other = spec.clone();
        other.id = "CartPole-v1".into();
        let e = build(&MountainCarFrugalConfig {}, &other).unwrap_err();
        assert!(e.to_string().contains("mountain-car-frugal"), "{e}");
        assert!(build(&MountainCarGoalConfig {}, &other).is_err());
    }
}
