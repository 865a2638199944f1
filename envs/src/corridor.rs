//! Corridor-v0: the smallest useful environment, and the worked example of `envs/README.md`.
//!
//! An agent stands in a corridor of `length` cells and must walk to the rightmost one.
//!
//! ## Action space
//! `Discrete(2)`: 0 steps left (a wall stops it at cell 0), 1 steps right.
//!
//! ## Observation space
//! `Box([0], [1])` of f32: the agent's cell divided by `length - 1`.
//!
//! ## Reward
//! -0.01 per step that does not reach the goal, +1 for the step that does.
//!
//! ## Start state
//! A cell drawn uniformly from the left half, `0..length/2`, with a seeded ChaCha8 stream
//! (`maxmin_core::rng`, checkpointable).
//!
//! ## Episode end
//! 1. Termination: the agent reaches cell `length - 1`.
//! 2. Truncation: the episode reaches `max-episode-steps` (100) steps without terminating.
//!
//! Config: `[env] type = "corridor"`, options `length` (default 10) and `max-episode-steps`.
//!
//! ## Group rewards
//! For a population of users (`[population.groups.reward]`): `corridor-right` scores the
//! position (0 at the left wall, 1 at the goal) per step, `corridor-left` one minus it. Two
//! groups that want opposite ends make the smallest MaxMin experiment (`envs/README.md`).

use maxmin_core::env::{Action, Env, EnvConfig, EnvSpec, Space, StepOutcome};
use maxmin_core::error::check;
use maxmin_core::prefs::group_reward::{GroupReward, GroupRewardConfig};
use maxmin_core::rng::Rng;
use maxmin_core::{Error, Result};
use rand::{Rng as _, SeedableRng};
use serde::{Deserialize, Serialize};

/// Environment id.
pub const ID: &str = "Corridor-v0";

/// `[env] type = "corridor"`: walk right to the end of a corridor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CorridorConfig {
    /// Number of cells, at least 2 (default 10).
    #[serde(default = "default_length")]
    pub length: usize,
    /// Steps after which an episode is truncated (default 100).
    #[serde(default = "default_max_steps")]
    pub max_episode_steps: usize,
}

fn default_length() -> usize {
    10
}

fn default_max_steps() -> usize {
    100
}

impl Default for CorridorConfig {
    fn default() -> Self {
        Self {
            length: default_length(),
            max_episode_steps: default_max_steps(),
        }
    }
}

#[typetag::serde(name = "corridor")]
impl EnvConfig for CorridorConfig {
    fn validate(&self) -> Result<()> {
        if self.length < 2 {
            return Err(Error::config(
                "length",
                format!("expected at least 2 cells, found {}", self.length),
            ));
        }
        check::positive_usize("max-episode-steps", self.max_episode_steps)
    }
    fn build(&self) -> Result<Box<dyn Env>> {
        self.validate()?;
        Ok(Box::new(Corridor::new(self)))
    }
}

maxmin_core::register_plugin!(
    EnvConfig,
    "corridor",
    "Corridor-v0: walk right to the end of a 1-D corridor (the plugin guide's example)"
);

/// Corridor-v0 as one [`Env`].
#[derive(Debug, Clone)]
pub struct Corridor {
    spec: EnvSpec,
    length: usize,
    /// Everything a checkpoint needs, kept in one serde struct so snapshot/restore are one line.
    state: State,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    cell: usize,
    steps: usize,
    rng: Rng,
}

impl Corridor {
    /// A new environment (call [`Env::reset`] before stepping).
    pub fn new(cfg: &CorridorConfig) -> Self {
        Self {
            spec: EnvSpec {
                id: ID.into(),
                observation_space: Space::Box {
                    low: vec![0.0],
                    high: vec![1.0],
                },
                action_space: Space::Discrete { n: 2 },
                max_episode_steps: Some(cfg.max_episode_steps),
                reward_threshold: None,
            },
            length: cfg.length,
            state: State {
                cell: 0,
                steps: 0,
                // Never-seeded environments draw from seed 0: no unseeded randomness.
                rng: Rng::seed_from_u64(0),
            },
        }
    }

    fn write_obs(&self, obs: &mut [f32]) {
        obs[0] = self.state.cell as f32 / (self.length - 1) as f32;
    }
}

impl Env for Corridor {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            self.state.rng = Rng::seed_from_u64(seed);
        }
        self.state.cell = self.state.rng.random_range(0..self.length / 2);
        self.state.steps = 0;
        self.write_obs(obs);
    }

    /// # Panics
    /// If `action` is not `Discrete(0)` or `Discrete(1)`.
    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> StepOutcome {
        let s = &mut self.state;
        match action {
            Action::Discrete(0) => s.cell = s.cell.saturating_sub(1),
            Action::Discrete(1) => s.cell = (s.cell + 1).min(self.length - 1),
            other => panic!("Corridor-v0: action {other:?} is outside Discrete(2)"),
        }
        s.steps += 1;
        let terminated = s.cell == self.length - 1;
        let truncated = !terminated && s.steps >= self.spec.max_episode_steps.unwrap_or(usize::MAX);
        self.write_obs(obs);
        StepOutcome {
            reward: if terminated { 1.0 } else { -0.01 },
            terminated,
            truncated,
        }
    }

    fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(&self.state).unwrap_or(serde_json::Value::Null)
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: State = serde_json::from_value(state.clone())
            .map_err(|e| Error::input(format!("Corridor-v0: bad snapshot: {e}"), None))?;
        if s.cell >= self.length {
            return Err(Error::input(
                format!(
                    "Corridor-v0: snapshot cell {} is outside a corridor of {}",
                    s.cell, self.length
                ),
                None,
            ));
        }
        self.state = s;
        Ok(())
    }
}

/// `[population.groups.reward] type = "corridor-right"`: r = position per step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorridorRightConfig {}

/// `[population.groups.reward] type = "corridor-left"`: r = 1 − position per step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorridorLeftConfig {}

/// Both rewards: the observation is the position in [0, 1].
#[derive(Debug)]
struct Side {
    right: bool,
}

impl GroupReward for Side {
    fn step_reward(&self, obs: &[f32], _act: &[f32]) -> f64 {
        let x = obs[0] as f64;
        if self.right {
            x
        } else {
            1.0 - x
        }
    }
}

#[typetag::serde(name = "corridor-right")]
impl GroupRewardConfig for CorridorRightConfig {
    fn build(&self, _env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        Ok(Box::new(Side { right: true }))
    }
}

#[typetag::serde(name = "corridor-left")]
impl GroupRewardConfig for CorridorLeftConfig {
    fn build(&self, _env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        Ok(Box::new(Side { right: false }))
    }
}

maxmin_core::register_plugin!(
    GroupRewardConfig,
    "corridor-right",
    "Corridor group reward: be near the goal (the position per step)",
    envs = [ID]
);

maxmin_core::register_plugin!(
    GroupRewardConfig,
    "corridor-left",
    "Corridor group reward: stay near the left wall (1 − the position per step)",
    envs = [ID]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walking_right_reaches_the_goal() {
        let cfg = CorridorConfig {
            length: 6,
            max_episode_steps: 100,
        };
        let mut env = Corridor::new(&cfg);
        let mut obs = [0.0f32];
        env.reset(Some(3), &mut obs);
        let start = env.state.cell;
        assert!(start < 3);
        for i in start..5 {
            let out = env.step(Action::Discrete(1), &mut obs);
            assert_eq!(out.terminated, i == 4);
            assert!(!out.truncated);
            assert_eq!(out.reward, if i == 4 { 1.0 } else { -0.01 });
        }
        assert_eq!(obs[0], 1.0);
    }

    #[test]
    fn truncates_at_the_limit() {
        let cfg = CorridorConfig {
            length: 10,
            max_episode_steps: 3,
        };
        let mut env = Corridor::new(&cfg);
        let mut obs = [0.0f32];
        env.reset(Some(0), &mut obs);
        let ends: Vec<bool> = (0..3)
            .map(|_| env.step(Action::Discrete(0), &mut obs).truncated)
            .collect();
        assert_eq!(ends, [false, false, true]);
    }

    #[test]
    fn group_rewards_want_opposite_ends_of_this_corridor_only() {
        use maxmin_core::prefs::group_reward::build;
        let spec = Corridor::new(&CorridorConfig::default()).spec().clone();
        let right = build(&CorridorRightConfig {}, &spec).unwrap();
        let left = build(&CorridorLeftConfig {}, &spec).unwrap();
        assert_eq!(right.step_reward(&[0.75], &[1.0]), 0.75);
        assert_eq!(left.step_reward(&[0.75], &[1.0]), 0.25);
        let mut other = spec;
        other.id = "CartPole-v1".into();
        let e = build(&CorridorLeftConfig {}, &other).unwrap_err();
        assert!(e.to_string().contains("corridor-left"), "{e}");
    }
}
