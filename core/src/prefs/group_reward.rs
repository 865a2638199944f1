//! Ground-truth rewards of simulated groups (`GroupRewardConfig`, docs/architecture.md "Plugins"): each
//! group of the population (docs/algorithms.md "Setup": groups u with rewards r_u) scores a step
//! `(obs, action)`; a segment's return is the sum over its steps, and users label pairs of
//! segments with their group's Bradley–Terry model of that return (Christiano et al. 2017).
//!
//! Only the plugin point lives here. The rewards themselves read one environment's observations,
//! so they sit next to that environment (`envs/src/cartpole.rs`: `cart-position`, …; the guide
//! `envs/README.md`, "4. Group rewards") and are registered with the ids of the environments
//! they score: `register_plugin!(GroupRewardConfig, "…", "…", envs = [ID])`. [`build`] refuses
//! one on any other environment, so a reward's own `build` may rely on the observation layout.

use crate::env::EnvSpec;
use crate::error::Result;
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
    /// Build for an environment; an error names the environment it cannot score. Call it
    /// through [`build`], which first checks the environments the reward is registered for.
    fn build(&self, env: &EnvSpec) -> Result<Box<dyn GroupReward>>;
}

/// Build `cfg` for `env`: an error (key `type`) if `cfg`'s registration names other
/// environments, otherwise `cfg.build(env)`.
pub fn build(cfg: &dyn GroupRewardConfig, env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
    crate::registry::check_env("GroupRewardConfig", cfg.typetag_name(), &env.id)?;
    cfg.build(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Space;
    use serde::{Deserialize, Serialize};

    /// A reward registered for `Test-v0` only.
    #[derive(Debug, Serialize, Deserialize)]
    struct OnlyTestConfig {}

    #[derive(Debug)]
    struct Zero;

    impl GroupReward for Zero {
        fn step_reward(&self, _obs: &[f32], _act: &[f32]) -> f64 {
            0.0
        }
    }

    #[typetag::serde(name = "group-reward-unit-test")]
    impl GroupRewardConfig for OnlyTestConfig {
        fn build(&self, _env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
            Ok(Box::new(Zero))
        }
    }

    crate::register_plugin!(
        GroupRewardConfig,
        "group-reward-unit-test",
        "unit-test group reward",
        envs = ["Test-v0"]
    );

    fn spec(id: &str) -> EnvSpec {
        EnvSpec {
            id: id.into(),
            observation_space: Space::Discrete { n: 2 },
            action_space: Space::Discrete { n: 2 },
            max_episode_steps: None,
            reward_threshold: None,
        }
    }

    #[test]
    fn build_refuses_environments_the_reward_is_not_registered_for() {
        assert!(build(&OnlyTestConfig {}, &spec("Test-v0")).is_ok());
        let e = build(&OnlyTestConfig {}, &spec("CartPole-v1")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("group-reward-unit-test"), "{msg}");
        assert!(
            msg.contains("Test-v0") && msg.contains("CartPole-v1"),
            "{msg}"
        );
    }
}
