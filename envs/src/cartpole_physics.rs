//! CartPole-v1's physics, constants and config, shared by the single environment
//! (`cartpole.rs`) and the vectorised one (`cartpole_vec.rs`), so that neither file depends on
//! the other (tests/layering.rs): the dynamics and their Gymnasium provenance are described in
//! `cartpole.rs`'s module doc.

use crate::np_rng::NpRng;
use maxmin_core::env::{EnvSpec, Space};
use serde::{Deserialize, Serialize};

/// Gymnasium id.
pub const ID: &str = "CartPole-v1";
/// Gymnasium's `max_episode_steps` for CartPole-v1.
pub const MAX_EPISODE_STEPS: usize = 500;

const GRAVITY: f64 = 9.8;
const MASSCART: f64 = 1.0;
const MASSPOLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASSPOLE + MASSCART;
const LENGTH: f64 = 0.5;
const POLEMASS_LENGTH: f64 = MASSPOLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
const TAU: f64 = 0.02;
/// 12 degrees, computed in Gymnasium's operation order.
pub(crate) const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
pub(crate) const X_THRESHOLD: f64 = 2.4;
/// Start-state bounds.
pub(crate) const RESET_LOW: f64 = -0.05;
pub(crate) const RESET_HIGH: f64 = 0.05;

/// One Euler step of the cart-pole dynamics given `sin θ` and `cos θ`, in Gymnasium's operation
/// order; `push_right` selects the force direction.
#[inline(always)]
pub(crate) fn euler(s: [f64; 4], push_right: bool, sintheta: f64, costheta: f64) -> [f64; 4] {
    let [x, x_dot, theta, theta_dot] = s;
    let force = if push_right { FORCE_MAG } else { -FORCE_MAG };
    let temp = (force + POLEMASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS;
    let thetaacc = (GRAVITY * sintheta - costheta * temp)
        / (LENGTH * (4.0 / 3.0 - MASSPOLE * (costheta * costheta) / TOTAL_MASS));
    let xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS;
    [
        x + TAU * x_dot,
        x_dot + TAU * xacc,
        theta + TAU * theta_dot,
        theta_dot + TAU * thetaacc,
    ]
}

/// One step of the cart-pole dynamics (`action` 1 pushes right, anything else left).
#[inline(always)]
pub(crate) fn dynamics(s: [f64; 4], action: usize) -> [f64; 4] {
    let (sintheta, costheta) = crate::trig::sin_cos(s[2]);
    euler(s, action == 1, sintheta, costheta)
}

/// Whether a state is terminal (`|`, not `||`: no branches, so the vector env's pass over it
/// vectorises; NaN compares false either way).
#[inline(always)]
pub(crate) fn is_terminal(s: &[f64; 4]) -> bool {
    (s[0] < -X_THRESHOLD)
        | (s[0] > X_THRESHOLD)
        | (s[2] < -THETA_THRESHOLD)
        | (s[2] > THETA_THRESHOLD)
}

/// A start state: four draws in the order Gymnasium's `uniform(size=(4,))` makes them.
#[inline]
pub(crate) fn start_state(rng: &mut NpRng) -> [f64; 4] {
    [(); 4].map(|_| rng.uniform(RESET_LOW, RESET_HIGH))
}

/// The spec of CartPole-v1 with a given time limit.
pub fn spec(max_episode_steps: usize) -> EnvSpec {
    let high = [
        (X_THRESHOLD * 2.0) as f32,
        f32::INFINITY,
        (THETA_THRESHOLD * 2.0) as f32,
        f32::INFINITY,
    ];
    EnvSpec {
        id: ID.into(),
        observation_space: Space::Box {
            low: high.iter().map(|h| -h).collect(),
            high: high.to_vec(),
        },
        action_space: Space::Discrete { n: 2 },
        max_episode_steps: Some(max_episode_steps),
        reward_threshold: Some(475.0),
    }
}

/// `[env] type = "cartpole"`: Gymnasium's CartPole-v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CartPoleConfig {
    /// Steps after which an episode is truncated (Gymnasium's `max_episode_steps`, default 500).
    #[serde(default = "default_max_steps")]
    pub max_episode_steps: usize,
    /// Gymnasium's `sutton_barto_reward`: reward 0 per step and -1 on termination (default false).
    #[serde(default)]
    pub sutton_barto_reward: bool,
}

fn default_max_steps() -> usize {
    MAX_EPISODE_STEPS
}

impl Default for CartPoleConfig {
    fn default() -> Self {
        Self {
            max_episode_steps: MAX_EPISODE_STEPS,
            sutton_barto_reward: false,
        }
    }
}
