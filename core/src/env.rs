//! The environment plugin point: Gymnasium's `Env` API (`reset(seed)`, `step` returning
//! `terminated` and `truncated` separately), its spaces, and the vectorised `VecEnv`.
//!
//! Implement [`Env`] for one environment and [`EnvConfig`] for its config; the generic
//! [`SyncVecEnv`] vectorises any `Env`, and an environment may provide a faster structure-of-arrays
//! `VecEnv` by overriding [`EnvConfig::build_vec`]. See `envs/README.md` for a walk-through.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// An observation or action space (Gymnasium's `Discrete` and `Box`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Space {
    /// Integers `0..n`.
    Discrete {
        /// Number of actions.
        n: usize,
    },
    /// A box `[low, high]` of f32 vectors (bounds may be ±inf).
    Box {
        /// Lower bounds.
        low: Vec<f32>,
        /// Upper bounds.
        high: Vec<f32>,
    },
}

impl Space {
    /// Length of one flat element: 1 for `Discrete`, the dimension for `Box`.
    pub fn dim(&self) -> usize {
        match self {
            Space::Discrete { .. } => 1,
            Space::Box { low, .. } => low.len(),
        }
    }

    /// Whether `x` (one flat element; a discrete value as its index) lies in the space.
    pub fn contains(&self, x: &[f32]) -> bool {
        match self {
            Space::Discrete { n } => {
                x.len() == 1 && x[0] >= 0.0 && x[0].fract() == 0.0 && (x[0] as usize) < *n
            }
            Space::Box { low, high } => {
                x.len() == low.len()
                    && x.iter()
                        .zip(low.iter().zip(high))
                        .all(|(v, (l, h))| !v.is_nan() && v >= l && v <= h)
            }
        }
    }
}

/// What an environment is: its id, spaces and episode limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvSpec {
    /// Gymnasium-style id, e.g. `CartPole-v1`.
    pub id: String,
    /// Observation space.
    pub observation_space: Space,
    /// Action space.
    pub action_space: Space,
    /// Steps after which an episode is truncated (Gymnasium's `TimeLimit`), if any.
    pub max_episode_steps: Option<usize>,
    /// Return at which the task counts as solved, if Gymnasium defines one.
    pub reward_threshold: Option<f64>,
}

/// One action for a single environment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action<'a> {
    /// An index into a `Discrete` space.
    Discrete(usize),
    /// A point of a `Box` space (environments clip it where Gymnasium does).
    Continuous(&'a [f32]),
}

impl<'a> Action<'a> {
    /// The action a flat row `a` stands for in `space` (a discrete action as its index in `a[0]`,
    /// the layout rollouts and reward models use).
    pub fn from_flat(space: &Space, a: &'a [f32]) -> Self {
        match space {
            Space::Discrete { .. } => Action::Discrete(a[0] as usize),
            Space::Box { .. } => Action::Continuous(a),
        }
    }
}

/// A batch of actions, one per sub-environment (structure of arrays).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Actions<'a> {
    /// `[num_envs]` indices.
    Discrete(&'a [u32]),
    /// `[num_envs * act_dim]` values, row-major.
    Continuous(&'a [f32]),
}

impl<'a> Actions<'a> {
    /// The action of sub-environment `i` given the action dimension.
    pub fn get(&self, i: usize, act_dim: usize) -> Action<'a> {
        match *self {
            Actions::Discrete(a) => Action::Discrete(a[i] as usize),
            Actions::Continuous(a) => Action::Continuous(&a[i * act_dim..(i + 1) * act_dim]),
        }
    }
}

/// The outcome of one step of one environment (the observation is written to a caller buffer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// Reward for the transition.
    pub reward: f32,
    /// The episode reached a terminal state of the MDP.
    pub terminated: bool,
    /// The episode was cut short (time limit) without reaching a terminal state.
    pub truncated: bool,
}

/// A single environment with Gymnasium semantics. Time limits are part of the environment
/// (it counts its steps and sets `truncated`), so no wrapper is needed.
pub trait Env: Send {
    /// Id, spaces, limits.
    fn spec(&self) -> &EnvSpec;
    /// Start an episode and write the first observation into `obs`. `Some(seed)` reseeds the
    /// environment's RNG (Gymnasium's `reset(seed=…)`); `None` continues its stream.
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]);
    /// Apply `action`, write the next observation into `obs`.
    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> StepOutcome;
    /// Full state (dynamics, step counter, RNG) for checkpoints.
    fn snapshot(&self) -> serde_json::Value;
    /// Restore a state from [`Env::snapshot`].
    fn restore(&mut self, state: &serde_json::Value) -> Result<()>;
}

/// What a vector environment does when a sub-environment's episode ends (Gymnasium 1.x names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AutoresetMode {
    /// Reset in the same step: the returned observation is the new episode's first one, and the
    /// terminal observation is in [`VecStep::final_obs`] (what PPO implementations expect).
    #[default]
    SameStep,
    /// Gymnasium 1.x's default: the step after an episode ends resets that sub-environment and
    /// returns its first observation with reward 0 and no `terminated`/`truncated`.
    NextStep,
}

/// The outcome of one vectorised step; slices borrow the vector env's buffers.
#[derive(Debug)]
pub struct VecStep<'a> {
    /// `[num_envs * obs_dim]` observations after the step (see [`AutoresetMode`]).
    pub obs: &'a [f32],
    /// `[num_envs]` rewards.
    pub rewards: &'a [f32],
    /// `[num_envs]` terminated flags.
    pub terminated: &'a [bool],
    /// `[num_envs]` truncated flags.
    pub truncated: &'a [bool],
    /// `[num_envs * obs_dim]`: in same-step mode, the last observation of an episode that ended
    /// in this step (rows of other sub-environments are unspecified).
    pub final_obs: &'a [f32],
}

/// A batch of environments stepped together.
pub trait VecEnv: Send {
    /// Number of sub-environments.
    fn num_envs(&self) -> usize;
    /// Spec of each sub-environment.
    fn spec(&self) -> &EnvSpec;
    /// The autoreset mode.
    fn autoreset_mode(&self) -> AutoresetMode;
    /// Reset all; sub-environment `i` is seeded with `seed + i` (as Gymnasium's vector envs).
    fn reset(&mut self, seed: u64) -> &[f32];
    /// Step all sub-environments.
    fn step(&mut self, actions: Actions<'_>) -> VecStep<'_>;
    /// Full state for checkpoints.
    fn snapshot(&self) -> serde_json::Value;
    /// Restore a state from [`VecEnv::snapshot`].
    fn restore(&mut self, state: &serde_json::Value) -> Result<()>;
}

/// Config of an environment plugin: `[env] type = "cartpole"`.
#[typetag::serde(tag = "type")]
pub trait EnvConfig: Debug + Send + Sync {
    /// Check values; errors name the key relative to the `[env]` table.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// Build one environment.
    fn build(&self) -> Result<Box<dyn Env>>;
    /// Build `num_envs` copies stepped together. The default wraps [`Env`]s in a [`SyncVecEnv`].
    fn build_vec(&self, num_envs: usize, mode: AutoresetMode) -> Result<Box<dyn VecEnv>> {
        let envs = (0..num_envs)
            .map(|_| self.build())
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(SyncVecEnv::new(envs, mode)?))
    }
}

/// Any list of [`Env`]s as a [`VecEnv`], with buffers allocated once.
pub struct SyncVecEnv {
    envs: Vec<Box<dyn Env>>,
    spec: EnvSpec,
    mode: AutoresetMode,
    obs_dim: usize,
    act_dim: usize,
    obs: Vec<f32>,
    final_obs: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    /// Next-step mode: sub-environments whose episode ended in the previous step.
    pending_reset: Vec<bool>,
}

impl SyncVecEnv {
    /// Vectorise `envs` (at least one, all with the same spec).
    pub fn new(envs: Vec<Box<dyn Env>>, mode: AutoresetMode) -> Result<Self> {
        let first = envs.first().ok_or_else(|| {
            Error::input("a vector environment needs at least one environment", None)
        })?;
        let spec = first.spec().clone();
        if envs.iter().any(|e| e.spec() != &spec) {
            return Err(Error::input(
                "all sub-environments of a vector environment must share one spec",
                None,
            ));
        }
        let n = envs.len();
        let obs_dim = spec.observation_space.dim();
        let act_dim = spec.action_space.dim();
        Ok(Self {
            envs,
            spec,
            mode,
            obs_dim,
            act_dim,
            obs: vec![0.0; n * obs_dim],
            final_obs: vec![0.0; n * obs_dim],
            rewards: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
            pending_reset: vec![false; n],
        })
    }
}

impl VecEnv for SyncVecEnv {
    fn num_envs(&self) -> usize {
        self.envs.len()
    }
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }
    fn autoreset_mode(&self) -> AutoresetMode {
        self.mode
    }
    fn reset(&mut self, seed: u64) -> &[f32] {
        let d = self.obs_dim;
        for (i, env) in self.envs.iter_mut().enumerate() {
            env.reset(
                Some(seed.wrapping_add(i as u64)),
                &mut self.obs[i * d..(i + 1) * d],
            );
        }
        self.pending_reset.fill(false);
        &self.obs
    }
    fn step(&mut self, actions: Actions<'_>) -> VecStep<'_> {
        let d = self.obs_dim;
        for (i, env) in self.envs.iter_mut().enumerate() {
            let row = i * d..(i + 1) * d;
            if self.mode == AutoresetMode::NextStep && self.pending_reset[i] {
                env.reset(None, &mut self.obs[row]);
                self.rewards[i] = 0.0;
                self.terminated[i] = false;
                self.truncated[i] = false;
                self.pending_reset[i] = false;
                continue;
            }
            let out = env.step(actions.get(i, self.act_dim), &mut self.obs[row.clone()]);
            self.rewards[i] = out.reward;
            self.terminated[i] = out.terminated;
            self.truncated[i] = out.truncated;
            if out.terminated || out.truncated {
                match self.mode {
                    AutoresetMode::SameStep => {
                        self.final_obs[row.clone()].copy_from_slice(&self.obs[row.clone()]);
                        env.reset(None, &mut self.obs[row]);
                    }
                    AutoresetMode::NextStep => self.pending_reset[i] = true,
                }
            }
        }
        VecStep {
            obs: &self.obs,
            rewards: &self.rewards,
            terminated: &self.terminated,
            truncated: &self.truncated,
            final_obs: &self.final_obs,
        }
    }
    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "envs": self.envs.iter().map(|e| e.snapshot()).collect::<Vec<_>>(),
            "obs": self.obs,
            "pending_reset": self.pending_reset,
        })
    }
    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let bad = || Error::Internal("vector-env snapshot does not match this environment".into());
        let envs = state["envs"].as_array().ok_or_else(bad)?;
        if envs.len() != self.envs.len() {
            return Err(bad());
        }
        for (e, s) in self.envs.iter_mut().zip(envs) {
            e.restore(s)?;
        }
        self.obs = serde_json::from_value(state["obs"].clone()).map_err(|_| bad())?;
        self.pending_reset =
            serde_json::from_value(state["pending_reset"].clone()).map_err(|_| bad())?;
        if self.obs.len() != self.envs.len() * self.obs_dim {
            return Err(bad());
        }
        Ok(())
    }
}
