//! Ground-truth group rewards for Pendulum-v1 (`GroupRewardConfig`, docs/architecture.md "Plugins";
//! docs/algorithms.md "Setup": groups u with rewards r_u, and "Experiments to reproduce" item 3, the
//! continuous task). Two groups that disagree on *how* to act:
//!
//! - `pendulum-upright`: r = (1 + cos θ)/2 ∈ [0, 1] — wants the pendulum up;
//! - `pendulum-gentle`: r = 1 − |u|/2 ∈ [0, 1] — wants little torque (u ∈ [−2, 2]).
//!
//! Both lie in [0, 1] per step, so episodic utilities (200 steps) share a scale and the worst
//! group is meaningful. Observations are Pendulum's `[cos θ, sin θ, θ̇]`, actions the torque.

use super::group_reward::{GroupReward, GroupRewardConfig};
use crate::env::{EnvSpec, Space};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Pendulum-v1's torque bound.
const MAX_TORQUE: f64 = 2.0;

/// Reject environments other than Pendulum (3-dim observations, 1-dim continuous action).
fn expect_pendulum(env: &EnvSpec, what: &str) -> Result<()> {
    if !env.id.starts_with("Pendulum") {
        return Err(Error::config(
            "type",
            format!(
                "{what} scores Pendulum observations, but the environment is {}",
                env.id
            ),
        ));
    }
    let obs_ok = env.observation_space.dim() == 3;
    let act_ok = matches!(&env.action_space, Space::Box { low, .. } if low.len() == 1);
    if !obs_ok || !act_ok {
        return Err(Error::config(
            "type",
            format!(
                "{what} expects Pendulum's 3-dim observation and 1-dim torque, but {} has \
                 {:?} / {:?}",
                env.id, env.observation_space, env.action_space
            ),
        ));
    }
    Ok(())
}

/// `type = "pendulum-upright"`: r = (1 + cos θ)/2 per step (Pendulum).
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
    fn build(&self, env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        expect_pendulum(env, "`pendulum-upright`")?;
        Ok(Box::new(PendulumUpright))
    }
}

crate::register_plugin!(
    GroupRewardConfig,
    "pendulum-upright",
    "Pendulum group reward: keep the pendulum up ((1 + cos θ)/2 per step, in [0, 1])"
);

/// `type = "pendulum-gentle"`: r = 1 − |u|/2 per step (Pendulum).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PendulumGentleConfig {}

#[derive(Debug)]
struct PendulumGentle;

impl GroupReward for PendulumGentle {
    fn step_reward(&self, _obs: &[f32], act: &[f32]) -> f64 {
        // Rollout actions may be unclipped Gaussian samples; the environment applies the
        // clipped torque, so score that one (keeps r in [0, 1]).
        let u = (act[0] as f64).clamp(-MAX_TORQUE, MAX_TORQUE);
        1.0 - u.abs() / MAX_TORQUE
    }
}

#[typetag::serde(name = "pendulum-gentle")]
impl GroupRewardConfig for PendulumGentleConfig {
    fn build(&self, env: &EnvSpec) -> Result<Box<dyn GroupReward>> {
        expect_pendulum(env, "`pendulum-gentle`")?;
        Ok(Box::new(PendulumGentle))
    }
}

crate::register_plugin!(
    GroupRewardConfig,
    "pendulum-gentle",
    "Pendulum group reward: use little torque (1 − |u|/2 per step, in [0, 1])"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn pendulum() -> EnvSpec {
        EnvSpec {
            id: "Pendulum-v1".into(),
            observation_space: Space::Box {
                low: vec![-1.0, -1.0, -8.0],
                high: vec![1.0, 1.0, 8.0],
            },
            action_space: Space::Box {
                low: vec![-2.0],
                high: vec![2.0],
            },
            max_episode_steps: Some(200),
            reward_threshold: None,
        }
    }

    fn cartpole() -> EnvSpec {
        EnvSpec {
            id: "CartPole-v1".into(),
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
    fn upright_rewards_the_top_and_ignores_torque() {
        let r = PendulumUprightConfig {}.build(&pendulum()).unwrap();
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
        let r = PendulumGentleConfig {}.build(&pendulum()).unwrap();
        assert!((r.step_reward(&[-1.0, 0.0, 0.0], &[0.0]) - 1.0).abs() < 1e-12);
        assert!((r.step_reward(&[1.0, 0.0, 0.0], &[-1.0]) - 0.5).abs() < 1e-12);
        assert!(r.step_reward(&[1.0, 0.0, 0.0], &[2.0]).abs() < 1e-12);
        // An unclipped sample beyond the bound scores as the applied (clipped) torque.
        assert!(r.step_reward(&[1.0, 0.0, 0.0], &[5.0]).abs() < 1e-12);
    }

    #[test]
    fn both_reject_other_environments() {
        let e = PendulumUprightConfig {}.build(&cartpole()).unwrap_err();
        assert!(e.to_string().contains("CartPole-v1"), "{e}");
        let e = PendulumGentleConfig {}.build(&cartpole()).unwrap_err();
        assert!(e.to_string().contains("pendulum-gentle"), "{e}");
        let mut wrong = pendulum();
        wrong.action_space = Space::Discrete { n: 3 };
        assert!(PendulumGentleConfig {}.build(&wrong).is_err());
    }

    #[test]
    fn configs_parse_from_toml() {
        #[derive(Deserialize)]
        struct W {
            reward: Box<dyn GroupRewardConfig>,
        }
        let w: W = toml::from_str("reward = { type = \"pendulum-gentle\" }").unwrap();
        assert!(w.reward.build(&pendulum()).is_ok());
        assert!(toml::from_str::<W>("reward = { type = \"pendulum-upright\", x = 1 }").is_err());
    }
}
