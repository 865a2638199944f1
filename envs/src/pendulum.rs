//! Pendulum-v1, as Gymnasium 1.0.0's `PendulumEnv` wrapped in `TimeLimit(200)`.
//!
//! The inverted-pendulum swing-up: a pendulum hangs from a fixed pivot and starts at a random
//! angle; torque applied at the pivot must swing it up and keep it upright.
//!
//! ## Action space
//! `Box([-2], [2])` of f32: the torque (N·m, counter-clockwise positive); actions outside are
//! clipped, as in Gymnasium.
//!
//! ## Observation space
//! `Box(3)` of f32: `cos θ ∈ [-1, 1]`, `sin θ ∈ [-1, 1]`, angular velocity `θ̇ ∈ [-8, 8]`.
//!
//! ## Transition
//! `θ̇ ← clip(θ̇ + (3g/2 · sin θ + 3u) · 0.05, ±8)`, `θ ← θ + θ̇ · 0.05`, with the f64/f32 mix
//! of NumPy 2's promotion rules (the torque terms are f32 because the action is f32).
//!
//! ## Reward
//! `−(normalize(θ)² + 0.1 θ̇² + 0.001 u²)`, with θ normalised to [-π, π) (0 is upright), so
//! rewards lie in [-16.27, 0].
//!
//! ## Start state
//! θ uniform in [-π, π], θ̇ uniform in [-1, 1] (NumPy PCG64 stream seeded as Gymnasium seeds it).
//!
//! ## Episode end
//! Never terminates; truncation after `max-episode-steps` (200) steps.
//!
//! Config: `[env] type = "pendulum"`, option `g` (gravity, default 10).
//!
//! ## Group rewards
//! `pendulum-upright` ((1 + cos θ)/2 per step: keep it up) and `pendulum-gentle` (1 − |u|/2 per
//! step: use little torque), both in [0, 1], for `[population.groups.reward]`.

use crate::common::{
    from_bits, parse_snapshot, scalar_action, snapshot_value, time_limit, to_bits,
    validate_max_steps,
};
use crate::np_rng::NpRng;
use maxmin_core::env::{Action, Env, EnvConfig, EnvSpec, Space, StepOutcome};
use maxmin_core::error::check;
use maxmin_core::prefs::group_reward::{GroupReward, GroupRewardConfig};
use maxmin_core::Result;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Gymnasium id.
pub const ID: &str = "Pendulum-v1";
/// Gymnasium's `max_episode_steps` for Pendulum-v1.
pub const MAX_EPISODE_STEPS: usize = 200;

const MAX_SPEED: f64 = 8.0;
const MAX_TORQUE: f32 = 2.0;
const DT: f64 = 0.05;
const M: f64 = 1.0;
const L: f64 = 1.0;

/// `[env] type = "pendulum"`: Gymnasium's Pendulum-v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PendulumConfig {
    /// Steps after which an episode is truncated (Gymnasium's `max_episode_steps`, default 200).
    #[serde(default = "default_max_steps")]
    pub max_episode_steps: usize,
    /// Gravitational acceleration in m/s² (Gymnasium's `g`, default 10).
    #[serde(default = "default_g")]
    pub g: f64,
}

fn default_max_steps() -> usize {
    MAX_EPISODE_STEPS
}

fn default_g() -> f64 {
    10.0
}

impl Default for PendulumConfig {
    fn default() -> Self {
        Self {
            max_episode_steps: MAX_EPISODE_STEPS,
            g: default_g(),
        }
    }
}

#[typetag::serde(name = "pendulum")]
impl EnvConfig for PendulumConfig {
    fn validate(&self) -> Result<()> {
        validate_max_steps(self.max_episode_steps)?;
        check::non_negative_f64("g", self.g)
    }
    fn build(&self) -> Result<Box<dyn Env>> {
        self.validate()?;
        Ok(Box::new(Pendulum::new(self)))
    }
}

maxmin_core::register_plugin!(
    EnvConfig,
    "pendulum",
    "Pendulum-v1 (Gymnasium-exact): swing a pendulum up with a continuous torque"
);

/// Pendulum-v1 as one [`Env`].
#[derive(Debug, Clone)]
pub struct Pendulum {
    spec: EnvSpec,
    max_steps: usize,
    g: f64,
    /// `(θ, θ̇)`.
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

/// Gymnasium's `angle_normalize`: `((x + π) mod 2π) − π` with Python's floored modulo.
fn angle_normalize(x: f64) -> f64 {
    (x + PI).rem_euclid(2.0 * PI) - PI
}

impl Pendulum {
    /// A new environment (call [`Env::reset`] before stepping).
    pub fn new(cfg: &PendulumConfig) -> Self {
        let high = vec![1.0, 1.0, MAX_SPEED as f32];
        Self {
            spec: EnvSpec {
                id: ID.into(),
                observation_space: Space::Box {
                    low: high.iter().map(|h| -h).collect(),
                    high,
                },
                action_space: Space::Box {
                    low: vec![-MAX_TORQUE],
                    high: vec![MAX_TORQUE],
                },
                max_episode_steps: Some(cfg.max_episode_steps),
                reward_threshold: None,
            },
            max_steps: cfg.max_episode_steps,
            g: cfg.g,
            state: [0.0; 2],
            rng: NpRng::default(),
            steps: 0,
        }
    }

    /// The f64 state `(θ, θ̇)`.
    pub fn state(&self) -> [f64; 2] {
        self.state
    }

    /// Set the f64 state (for tests that start from a given state).
    pub fn set_state(&mut self, s: [f64; 2]) {
        self.state = s;
    }

    fn write_obs(&self, obs: &mut [f32]) {
        let [th, thdot] = self.state;
        obs[0] = th.cos() as f32;
        obs[1] = th.sin() as f32;
        obs[2] = thdot as f32;
    }
}

impl Env for Pendulum {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            self.rng = NpRng::from_seed(seed);
        }
        let th = self.rng.uniform(-PI, PI);
        let thdot = self.rng.uniform(-1.0, 1.0);
        self.state = [th, thdot];
        self.steps = 0;
        self.write_obs(obs);
    }

    /// # Panics
    /// If `action` is not a one-component `Continuous` action.
    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> StepOutcome {
        // np.clip on an f32 array stays f32; a NaN torque stays NaN as in NumPy.
        let u = scalar_action(ID, action).clamp(-MAX_TORQUE, MAX_TORQUE);
        let [th, thdot] = self.state;
        let an = angle_normalize(th);
        // `0.001 * u**2` and `3.0 * u` are f32 products under NumPy 2's weak Python scalars.
        let torque_cost = f64::from(0.001f32 * (u * u));
        let costs = an * an + 0.1 * (thdot * thdot) + torque_cost;
        let torque_acc = f64::from((3.0 / (M * L * L)) as f32 * u);
        let newthdot = thdot + (3.0 * self.g / (2.0 * L) * th.sin() + torque_acc) * DT;
        let newthdot = newthdot.clamp(-MAX_SPEED, MAX_SPEED);
        let newth = th + newthdot * DT;
        self.state = [newth, newthdot];
        self.steps += 1;
        self.write_obs(obs);
        StepOutcome {
            reward: -costs as f32,
            terminated: false,
            truncated: time_limit(self.steps, self.max_steps, false),
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

// Group rewards (ground truths of simulated groups, `[population.groups.reward]`; docs/algorithms.md
// "Experiments to reproduce" item 3, the continuous task). Two groups that disagree on *how* to
// act, both in [0, 1] per step so episodic utilities share a scale and the worst group is
// meaningful. Registered for this environment's id only.

/// `type = "pendulum-upright"`: r = (1 + cos θ)/2 per step — wants the pendulum up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PendulumUprightConfig {}

#[derive(Debug)]
struct PendulumUpright;

impl GroupReward for PendulumUpright {
    fn step_reward(&self, obs: &[f32], _act: &[f32]) -> f64 {
        // obs[0] = cos θ; θ = 0 is upright.
        (1.0 + (obs[0] as f64).clamp(-1.0, 1.0)) / 2.0
    }
}

#[typetag::serde(name = "pendulum-upright")]
impl GroupRewardConfig for PendulumUprightConfig {
    fn build(&self, _env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        Ok(Box::new(PendulumUpright))
    }
}

maxmin_core::register_plugin!(
    GroupRewardConfig,
    "pendulum-upright",
    "Pendulum group reward: keep the pendulum up ((1 + cos θ)/2 per step, in [0, 1])",
    envs = [ID]
);

/// `type = "pendulum-gentle"`: r = 1 − |u|/2 per step — wants little torque (u ∈ [−2, 2]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PendulumGentleConfig {}

#[derive(Debug)]
struct PendulumGentle;

impl GroupReward for PendulumGentle {
    fn step_reward(&self, _obs: &[f32], act: &[f32]) -> f64 {
        // Rollout actions may be unclipped Gaussian samples; the environment applies the
        // clipped torque, so score that one (keeps r in [0, 1]).
        let max = MAX_TORQUE as f64;
        let u = (act[0] as f64).clamp(-max, max);
        1.0 - u.abs() / max
    }
}

#[typetag::serde(name = "pendulum-gentle")]
impl GroupRewardConfig for PendulumGentleConfig {
    fn build(&self, _env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        Ok(Box::new(PendulumGentle))
    }
}

maxmin_core::register_plugin!(
    GroupRewardConfig,
    "pendulum-gentle",
    "Pendulum group reward: use little torque (1 − |u|/2 per step, in [0, 1])",
    envs = [ID]
);

#[cfg(test)]
mod group_reward_tests {
    use super::*;
    use maxmin_core::prefs::group_reward::build;

    fn pendulum() -> EnvSpec {
        PendulumConfig::default().build().unwrap().spec().clone()
    }

    #[test]
    fn upright_rewards_the_top_and_ignores_torque() {
        let r = build(&PendulumUprightConfig {}, &pendulum()).unwrap();
        let up = r.step_reward(&[1.0, 0.0, 0.0], &[2.0]);
        let side = r.step_reward(&[0.0, 1.0, 0.0], &[0.0]);
        let down = r.step_reward(&[-1.0, 0.0, 0.0], &[0.0]);
        assert!((up - 1.0).abs() < 1e-12, "{up}");
        assert!((side - 0.5).abs() < 1e-12, "{side}");
        assert!(down.abs() < 1e-12, "{down}");
        // Segment return sums rows obs ++ act.
        let seg = vec![vec![1.0, 0.0, 0.0, 0.3], vec![-1.0, 0.0, 0.0, -0.3]];
        assert!((r.segment_return(&seg, 3) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn gentle_rewards_little_torque_and_clips() {
        let r = build(&PendulumGentleConfig {}, &pendulum()).unwrap();
        assert!((r.step_reward(&[-1.0, 0.0, 0.0], &[0.0]) - 1.0).abs() < 1e-12);
        assert!((r.step_reward(&[1.0, 0.0, 0.0], &[-1.0]) - 0.5).abs() < 1e-12);
        assert!(r.step_reward(&[1.0, 0.0, 0.0], &[2.0]).abs() < 1e-12);
        // An unclipped sample beyond the bound scores as the applied (clipped) torque.
        assert!(r.step_reward(&[1.0, 0.0, 0.0], &[5.0]).abs() < 1e-12);
    }

    #[test]
    fn both_reject_other_environments() {
        let mut cartpole = pendulum();
        cartpole.id = "CartPole-v1".into();
        let e = build(&PendulumUprightConfig {}, &cartpole).unwrap_err();
        assert!(e.to_string().contains("CartPole-v1"), "{e}");
        let e = build(&PendulumGentleConfig {}, &cartpole).unwrap_err();
        assert!(e.to_string().contains("pendulum-gentle"), "{e}");
    }

    #[test]
    fn configs_parse_from_toml() {
        #[derive(Deserialize)]
        struct W {
            reward: Box<dyn GroupRewardConfig>,
        }
        let w: W = toml::from_str("reward = { type = \"pendulum-gentle\" }").unwrap();
        assert!(build(w.reward.as_ref(), &pendulum()).is_ok());
        assert!(toml::from_str::<W>("reward = { type = \"pendulum-upright\", x = 1 }").is_err());
    }
}
