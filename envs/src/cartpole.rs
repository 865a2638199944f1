//! CartPole-v1, as Gymnasium 1.0.0's `CartPoleEnv` wrapped in `TimeLimit(500)`.
//!
//! A pole is attached by an un-actuated joint to a cart moving along a frictionless track
//! (Barto, Sutton & Anderson, 1983). The pole starts upright; the goal is to keep it upright by
//! pushing the cart left or right.
//!
//! ## Action space
//! `Discrete(2)`: 0 pushes the cart to the left, 1 to the right, with a force of 10 N.
//!
//! ## Observation space
//! `Box(4)` of f32:
//!
//! | index | observation           | min     | max    |
//! |-------|-----------------------|---------|--------|
//! | 0     | cart position         | -4.8    | 4.8    |
//! | 1     | cart velocity         | -inf    | inf    |
//! | 2     | pole angle (rad)      | -0.4189 | 0.4189 |
//! | 3     | pole angular velocity | -inf    | inf    |
//!
//! The internal state is f64 and integrated with explicit Euler (τ = 0.02 s) exactly as
//! Gymnasium computes it; observations are the state rounded to f32.
//!
//! ## Reward
//! +1 for every step, including the terminating one. With `sutton-barto-reward = true`: 0 for
//! every non-terminating step and -1 for the terminating one. Stepping again after termination
//! (without reset) gives 0 (-1 with the Sutton–Barto reward), as in Gymnasium.
//!
//! ## Start state
//! Every state variable uniform in [-0.05, 0.05], drawn with NumPy's PCG64 stream seeded as
//! Gymnasium seeds it, so `reset(Some(seed))` gives Gymnasium's `reset(seed=seed)` start state.
//!
//! ## Episode end
//! 1. Termination: the pole angle leaves ±12° (±0.2095 rad).
//! 2. Termination: the cart position leaves ±2.4.
//! 3. Truncation: the episode reaches `max-episode-steps` (500) steps without terminating.
//!
//! Reward threshold 475. Config: `[env] type = "cartpole"`.
//!
//! ## Group rewards
//! `cart-position` (`[population.groups.reward]`): keep the cart near `target`, optionally also
//! the pole upright (`angle-weight`) and the episode going (`alive-bonus`).

use crate::common::{
    discrete_action, from_bits, parse_snapshot, snapshot_value, time_limit, to_bits,
    validate_max_steps,
};
use crate::np_rng::NpRng;
use maxmin_core::env::{Action, AutoresetMode, Env, EnvConfig, EnvSpec, StepOutcome, VecEnv};
use maxmin_core::error::check;
use maxmin_core::prefs::group_reward::{GroupReward, GroupRewardConfig};
use maxmin_core::Result;
use serde::{Deserialize, Serialize};

use crate::cartpole_physics::{dynamics, is_terminal, start_state};
pub use crate::cartpole_physics::{spec, CartPoleConfig, ID, MAX_EPISODE_STEPS};

#[typetag::serde(name = "cartpole")]
impl EnvConfig for CartPoleConfig {
    fn validate(&self) -> Result<()> {
        validate_max_steps(self.max_episode_steps)
    }
    fn build(&self) -> Result<Box<dyn Env>> {
        self.validate()?;
        Ok(Box::new(CartPole::new(self)))
    }
    fn build_vec(&self, num_envs: usize, mode: AutoresetMode) -> Result<Box<dyn VecEnv>> {
        self.validate()?;
        Ok(Box::new(crate::CartPoleVecEnv::new(self, num_envs, mode)?))
    }
}

maxmin_core::register_plugin!(
    EnvConfig,
    "cartpole",
    "CartPole-v1 (Gymnasium-exact): balance a pole on a cart; vectorised structure-of-arrays"
);

/// CartPole-v1 as one [`Env`].
#[derive(Debug, Clone)]
pub struct CartPole {
    spec: EnvSpec,
    max_steps: usize,
    sutton_barto_reward: bool,
    state: [f64; 4],
    rng: NpRng,
    steps: usize,
    /// Gymnasium's `steps_beyond_terminated`: steps taken since termination without a reset.
    steps_beyond_terminated: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    state_bits: [u64; 4],
    rng: NpRng,
    steps: usize,
    steps_beyond_terminated: Option<u64>,
}

impl CartPole {
    /// A new environment (call [`Env::reset`] before stepping).
    pub fn new(cfg: &CartPoleConfig) -> Self {
        Self {
            spec: spec(cfg.max_episode_steps),
            max_steps: cfg.max_episode_steps,
            sutton_barto_reward: cfg.sutton_barto_reward,
            state: [0.0; 4],
            rng: NpRng::default(),
            steps: 0,
            steps_beyond_terminated: None,
        }
    }

    /// The f64 state `(x, x_dot, theta, theta_dot)`.
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Set the f64 state (for tests that start from a given state).
    pub fn set_state(&mut self, s: [f64; 4]) {
        self.state = s;
    }

    fn write_obs(&self, obs: &mut [f32]) {
        for (o, s) in obs.iter_mut().zip(self.state) {
            *o = s as f32;
        }
    }
}

impl Env for CartPole {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            self.rng = NpRng::from_seed(seed);
        }
        self.state = start_state(&mut self.rng);
        self.steps = 0;
        self.steps_beyond_terminated = None;
        self.write_obs(obs);
    }

    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> StepOutcome {
        let a = discrete_action(ID, action, 2);
        self.state = dynamics(self.state, a);
        let terminated = is_terminal(&self.state);
        let reward = match (terminated, self.steps_beyond_terminated) {
            (false, _) => {
                if self.sutton_barto_reward {
                    0.0
                } else {
                    1.0
                }
            }
            (true, None) => {
                self.steps_beyond_terminated = Some(0);
                if self.sutton_barto_reward {
                    -1.0
                } else {
                    1.0
                }
            }
            (true, Some(n)) => {
                self.steps_beyond_terminated = Some(n + 1);
                if self.sutton_barto_reward {
                    -1.0
                } else {
                    0.0
                }
            }
        };
        self.steps += 1;
        self.write_obs(obs);
        StepOutcome {
            reward,
            terminated,
            truncated: time_limit(self.steps, self.max_steps, terminated),
        }
    }

    fn snapshot(&self) -> serde_json::Value {
        snapshot_value(&Snapshot {
            state_bits: to_bits(&self.state),
            rng: self.rng,
            steps: self.steps,
            steps_beyond_terminated: self.steps_beyond_terminated,
        })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: Snapshot = parse_snapshot(ID, state)?;
        self.state = from_bits(&s.state_bits);
        self.rng = s.rng;
        self.steps = s.steps;
        self.steps_beyond_terminated = s.steps_beyond_terminated;
        Ok(())
    }
}

// Group rewards (ground truths of simulated groups, `[population.groups.reward]`): they read
// this environment's observations, so they live here and are registered for its id only.

/// `type = "cart-position"`: r = alive-bonus − |x − target| − angle-weight·|θ| per step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CartPositionConfig {
    /// Cart position the group wants (CartPole's track is [−2.4, 2.4]).
    pub target: f64,
    /// Weight of keeping the pole upright (|θ| in radians); 0 = position only.
    #[serde(default)]
    pub angle_weight: f64,
    /// Constant added to every step's reward. Comparisons of equal-length segments cannot see
    /// it, but an episode's utility can: with a bonus larger than the worst position penalty
    /// (3.4 on CartPole's track) the group also wants the episode to go on, as CartPole's own
    /// reward does. 0 keeps the reward a pure position preference.
    #[serde(default)]
    pub alive_bonus: f64,
}

#[derive(Debug)]
struct CartPosition {
    target: f64,
    angle_weight: f64,
    alive_bonus: f64,
}

impl GroupReward for CartPosition {
    fn step_reward(&self, obs: &[f32], _act: &[f32]) -> f64 {
        self.alive_bonus
            - (obs[0] as f64 - self.target).abs()
            - self.angle_weight * (obs[2] as f64).abs()
    }
}

#[typetag::serde(name = "cart-position")]
impl GroupRewardConfig for CartPositionConfig {
    fn validate(&self) -> Result<()> {
        check::in_range("target", self.target, -2.4, 2.4)?;
        check::non_negative_f64("alive-bonus", self.alive_bonus)?;
        check::non_negative_f64("angle-weight", self.angle_weight)
    }
    fn build(&self, _env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        self.validate()?;
        Ok(Box::new(CartPosition {
            target: self.target,
            angle_weight: self.angle_weight,
            alive_bonus: self.alive_bonus,
        }))
    }
}

maxmin_core::register_plugin!(
    GroupRewardConfig,
    "cart-position",
    "CartPole group reward: keep the cart near `target` (−|x − target|, optional pole angle term)",
    envs = [ID]
);

#[cfg(test)]
mod group_reward_tests {
    use super::*;
    use maxmin_core::prefs::group_reward::build;

    fn cart(target: f64) -> CartPositionConfig {
        CartPositionConfig {
            target,
            angle_weight: 0.0,
            alive_bonus: 0.0,
        }
    }

    #[test]
    fn cart_position_prefers_its_side_and_checks_env() {
        let spec = CartPoleConfig::default().build().unwrap().spec().clone();
        let left = build(&cart(-1.0), &spec).unwrap();
        let a = vec![vec![-0.2, 0.0, 0.0, 0.0, 1.0]];
        let b = vec![vec![0.2, 0.0, 0.0, 0.0, 0.0]];
        assert!(left.segment_return(&a, 4) > left.segment_return(&b, 4));
        let mut other = spec.clone();
        other.id = "MountainCar-v0".into();
        let e = build(&cart(1.0), &other).unwrap_err();
        assert!(e.to_string().contains("MountainCar-v0"), "{e}");
        assert!(cart(9.0).validate().is_err());
    }
}
