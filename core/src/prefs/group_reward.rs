//! Ground-truth rewards of simulated groups (`GroupRewardConfig`, docs/architecture.md "Plugins"): each
//! group of the population (docs/algorithms.md "Setup": groups u with rewards r_u) scores a step
//! `(obs, action)`; a segment's return is the sum over its steps, and users label pairs of
//! segments with their group's Bradley–Terry model of that return (Christiano et al. 2017).
//!
//! Control implementations:
//! - `cart-position` (CartPole): keep the cart near `target` (e.g. −1 for one group, +1 for
//!   another), optionally also keep the pole upright (`angle-weight`);
//! - `mountain-car-goal` (MountainCar): reach the goal fast — reward the car's position;
//! - `mountain-car-frugal` (MountainCar): use little force — penalise accelerating.

use crate::env::{EnvSpec, Space};
use crate::error::{check, Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// A built ground-truth reward: per-step score of `(obs, action)`. Discrete actions are passed
/// as their index (one value), continuous ones as the action vector.
pub trait GroupReward: Send + Sync + Debug {
    /// Reward of one step.
    fn step_reward(&self, obs: &[f32], act: &[f32]) -> f64;
    /// Return of a segment given as rows `obs ++ act` of width `obs_dim + act_dim`.
    fn segment_return(&self, rows: &[Vec<f32>], obs_dim: usize) -> f64 {
        rows.iter()
            .map(|r| self.step_reward(&r[..obs_dim], &r[obs_dim..]))
            .sum()
    }
}

/// Config of a group's ground-truth reward: `[population.groups.reward] type = "…"`.
#[typetag::serde(tag = "type")]
pub trait GroupRewardConfig: Debug + Send + Sync {
    /// Check values; errors name keys relative to the `reward` table.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// Build for an environment; an error names the environment it cannot score.
    fn build(&self, env: &EnvSpec) -> Result<Box<dyn GroupReward>>;
}

fn expect_env(env: &EnvSpec, prefix: &str, what: &str) -> Result<()> {
    if !env.id.starts_with(prefix) {
        return Err(Error::config(
            "type",
            format!(
                "{what} scores {prefix} observations, but the environment is {}",
                env.id
            ),
        ));
    }
    Ok(())
}

/// `type = "cart-position"`: r = −|x − target| − angle-weight·|θ| per step (CartPole).
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
    fn build(&self, env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        self.validate()?;
        expect_env(env, "CartPole", "`cart-position`")?;
        Ok(Box::new(CartPosition {
            target: self.target,
            angle_weight: self.angle_weight,
            alive_bonus: self.alive_bonus,
        }))
    }
}

crate::register_plugin!(
    GroupRewardConfig,
    "cart-position",
    "CartPole group reward: keep the cart near `target` (−|x − target|, optional pole angle term)"
);

/// `type = "mountain-car-goal"`: reach the goal fast — r = position per step (MountainCar).
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
    fn build(&self, env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        expect_env(env, "MountainCar", "`mountain-car-goal`")?;
        Ok(Box::new(MountainCarGoal))
    }
}

crate::register_plugin!(
    GroupRewardConfig,
    "mountain-car-goal",
    "MountainCar group reward: reach the goal fast (the car's position per step)"
);

/// `type = "mountain-car-frugal"`: use little force — r = −1 per step that accelerates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MountainCarFrugalConfig {}

#[derive(Debug)]
struct MountainCarFrugal;

impl GroupReward for MountainCarFrugal {
    fn step_reward(&self, _obs: &[f32], act: &[f32]) -> f64 {
        // Action 1 is "do not accelerate" in MountainCar-v0.
        -((act[0] as f64 - 1.0).abs())
    }
}

#[typetag::serde(name = "mountain-car-frugal")]
impl GroupRewardConfig for MountainCarFrugalConfig {
    fn build(&self, env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        expect_env(env, "MountainCar", "`mountain-car-frugal`")?;
        if env.action_space != (Space::Discrete { n: 3 }) {
            return Err(Error::config(
                "type",
                "expected MountainCar's Discrete(3) actions",
            ));
        }
        Ok(Box::new(MountainCarFrugal))
    }
}

crate::register_plugin!(
    GroupRewardConfig,
    "mountain-car-frugal",
    "MountainCar group reward: use little force (−1 per accelerating step)"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> EnvSpec {
        EnvSpec {
            id: id.into(),
            observation_space: Space::Box {
                low: vec![0.0; 4],
                high: vec![1.0; 4],
            },
            action_space: Space::Discrete { n: 2 },
            max_episode_steps: None,
            reward_threshold: None,
        }
    }

    #[test]
    fn cart_position_prefers_its_side_and_checks_env() {
        let left = CartPositionConfig {
            target: -1.0,
            angle_weight: 0.0,
            alive_bonus: 0.0,
        }
        .build(&spec("CartPole-v1"))
        .unwrap();
        let a = vec![vec![-0.2, 0.0, 0.0, 0.0, 1.0]];
        let b = vec![vec![0.2, 0.0, 0.0, 0.0, 0.0]];
        assert!(left.segment_return(&a, 4) > left.segment_return(&b, 4));
        let e = CartPositionConfig {
            target: 1.0,
            angle_weight: 0.0,
            alive_bonus: 0.0,
        }
        .build(&spec("MountainCar-v0"))
        .unwrap_err();
        assert!(e.to_string().contains("MountainCar-v0"), "{e}");
        assert!(CartPositionConfig {
            target: 9.0,
            angle_weight: 0.0,
            alive_bonus: 0.0,
        }
        .validate()
        .is_err());
    }
}
