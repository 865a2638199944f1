//! Acrobot-v1, as Gymnasium 1.0.0's `AcrobotEnv` (book dynamics) wrapped in `TimeLimit(500)`.
//!
//! Two links hang from a pivot, joined by an actuated joint (Sutton, 1996; Sutton & Barto's
//! book). Torque on the middle joint must swing the free end above a target height.
//!
//! ## Action space
//! `Discrete(3)`: torque -1, 0 or +1 on the joint between the links.
//!
//! ## Observation space
//! `Box(6)` of f32: `cos θ1, sin θ1, cos θ2, sin θ2` in [-1, 1], `θ̇1 ∈ [-4π, 4π]`,
//! `θ̇2 ∈ [-9π, 9π]`. θ1 = 0 is the first link pointing down; θ2 is relative to the first link.
//!
//! ## Transition
//! One RK4 step of dt = 0.2 s of the book's equations of motion in f64, in Gymnasium's
//! operation order; angles wrapped to [-π, π], velocities clipped to the bounds above.
//!
//! ## Reward
//! -1 for every step that does not reach the target, 0 for the step that does.
//!
//! ## Start state
//! θ1, θ2, θ̇1, θ̇2 each uniform in [-0.1, 0.1] (NumPy PCG64 stream seeded as Gymnasium seeds
//! it), rounded to f32 as Gymnasium does (`.astype(np.float32)`); later states are f64.
//!
//! ## Episode end
//! 1. Termination: the free end is above the target, `−cos θ1 − cos(θ1 + θ2) > 1`.
//! 2. Truncation: the episode reaches `max-episode-steps` (500) steps without terminating.
//!
//! Reward threshold -100. Config: `[env] type = "acrobot"`.

use crate::common::{
    discrete_action, from_bits, parse_snapshot, snapshot_value, time_limit, to_bits,
    validate_max_steps,
};
use crate::np_rng::NpRng;
use maxmin_core::env::{Action, Env, EnvConfig, EnvSpec, Space, StepOutcome};
use maxmin_core::Result;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Gymnasium id.
pub const ID: &str = "Acrobot-v1";
/// Gymnasium's `max_episode_steps` for Acrobot-v1.
pub const MAX_EPISODE_STEPS: usize = 500;

const DT: f64 = 0.2;
const LINK_LENGTH_1: f64 = 1.0;
const LINK_MASS_1: f64 = 1.0;
const LINK_MASS_2: f64 = 1.0;
const LINK_COM_POS_1: f64 = 0.5;
const LINK_COM_POS_2: f64 = 0.5;
const LINK_MOI: f64 = 1.0;
const MAX_VEL_1: f64 = 4.0 * PI;
const MAX_VEL_2: f64 = 9.0 * PI;
const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];

/// `[env] type = "acrobot"`: Gymnasium's Acrobot-v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AcrobotConfig {
    /// Steps after which an episode is truncated (Gymnasium's `max_episode_steps`, default 500).
    #[serde(default = "default_max_steps")]
    pub max_episode_steps: usize,
}

fn default_max_steps() -> usize {
    MAX_EPISODE_STEPS
}

impl Default for AcrobotConfig {
    fn default() -> Self {
        Self {
            max_episode_steps: MAX_EPISODE_STEPS,
        }
    }
}

#[typetag::serde(name = "acrobot")]
impl EnvConfig for AcrobotConfig {
    fn validate(&self) -> Result<()> {
        validate_max_steps(self.max_episode_steps)
    }
    fn build(&self) -> Result<Box<dyn Env>> {
        self.validate()?;
        Ok(Box::new(Acrobot::new(self)))
    }
}

maxmin_core::register_plugin!(
    EnvConfig,
    "acrobot",
    "Acrobot-v1 (Gymnasium-exact): swing a two-link robot's tip above a line"
);

/// Acrobot-v1 as one [`Env`].
#[derive(Debug, Clone)]
pub struct Acrobot {
    spec: EnvSpec,
    max_steps: usize,
    /// `(θ1, θ2, θ̇1, θ̇2)`.
    state: [f64; 4],
    rng: NpRng,
    steps: usize,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    state_bits: [u64; 4],
    rng: NpRng,
    steps: usize,
}

/// Time derivative of `(θ1, θ2, θ̇1, θ̇2, torque)` (Gymnasium's `_dsdt`, book variant).
fn dsdt(s: &[f64; 5]) -> [f64; 5] {
    let (m1, m2, l1) = (LINK_MASS_1, LINK_MASS_2, LINK_LENGTH_1);
    let (lc1, lc2, i1, i2) = (LINK_COM_POS_1, LINK_COM_POS_2, LINK_MOI, LINK_MOI);
    let g = 9.8;
    let [theta1, theta2, dtheta1, dtheta2, a] = *s;
    let d1 =
        m1 * (lc1 * lc1) + m2 * (l1 * l1 + lc2 * lc2 + 2.0 * l1 * lc2 * theta2.cos()) + i1 + i2;
    let d2 = m2 * (lc2 * lc2 + l1 * lc2 * theta2.cos()) + i2;
    let phi2 = m2 * lc2 * g * (theta1 + theta2 - PI / 2.0).cos();
    let phi1 = -m2 * l1 * lc2 * (dtheta2 * dtheta2) * theta2.sin()
        - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * theta2.sin()
        + (m1 * lc1 + m2 * l1) * g * (theta1 - PI / 2.0).cos()
        + phi2;
    let ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * theta2.sin() - phi2)
        / (m2 * (lc2 * lc2) + i2 - (d2 * d2) / d1);
    let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    [dtheta1, dtheta2, ddtheta1, ddtheta2, 0.0]
}

/// One classic RK4 step of length `dt` (Gymnasium's `rk4` over `t = [0, dt]`).
fn rk4(y0: [f64; 5], dt: f64) -> [f64; 5] {
    let dt2 = dt / 2.0;
    let axpy = |y: &[f64; 5], h: f64, k: &[f64; 5]| -> [f64; 5] {
        std::array::from_fn(|j| y[j] + h * k[j])
    };
    let k1 = dsdt(&y0);
    let k2 = dsdt(&axpy(&y0, dt2, &k1));
    let k3 = dsdt(&axpy(&y0, dt2, &k2));
    let k4 = dsdt(&axpy(&y0, dt, &k3));
    let h = dt / 6.0;
    std::array::from_fn(|j| y0[j] + h * (k1[j] + 2.0 * k2[j] + 2.0 * k3[j] + k4[j]))
}

/// Gymnasium's `wrap`: shift `x` by whole periods into `[m, big_m]`.
fn wrap(mut x: f64, m: f64, big_m: f64) -> f64 {
    let diff = big_m - m;
    while x > big_m {
        x -= diff;
    }
    while x < m {
        x += diff;
    }
    x
}

/// Gymnasium's `bound`: `min(max(x, m), big_m)`.
fn bound(x: f64, m: f64, big_m: f64) -> f64 {
    x.max(m).min(big_m)
}

impl Acrobot {
    /// A new environment (call [`Env::reset`] before stepping).
    pub fn new(cfg: &AcrobotConfig) -> Self {
        let high: Vec<f32> = vec![1.0, 1.0, 1.0, 1.0, MAX_VEL_1 as f32, MAX_VEL_2 as f32];
        Self {
            spec: EnvSpec {
                id: ID.into(),
                observation_space: Space::Box {
                    low: high.iter().map(|h| -h).collect(),
                    high,
                },
                action_space: Space::Discrete { n: 3 },
                max_episode_steps: Some(cfg.max_episode_steps),
                reward_threshold: Some(-100.0),
            },
            max_steps: cfg.max_episode_steps,
            state: [0.0; 4],
            rng: NpRng::default(),
            steps: 0,
        }
    }

    /// The f64 state `(θ1, θ2, θ̇1, θ̇2)`.
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Set the f64 state (for tests that start from a given state).
    pub fn set_state(&mut self, s: [f64; 4]) {
        self.state = s;
    }

    fn write_obs(&self, obs: &mut [f32]) {
        let s = self.state;
        let o = [s[0].cos(), s[0].sin(), s[1].cos(), s[1].sin(), s[2], s[3]];
        for (d, v) in obs.iter_mut().zip(o) {
            *d = v as f32;
        }
    }
}

impl Env for Acrobot {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            self.rng = NpRng::from_seed(seed);
        }
        self.state = [(); 4].map(|_| self.rng.uniform(-0.1, 0.1) as f32 as f64);
        self.steps = 0;
        self.write_obs(obs);
    }

    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> StepOutcome {
        let torque = AVAIL_TORQUE[discrete_action(ID, action, 3)];
        let s = self.state;
        let ns = rk4([s[0], s[1], s[2], s[3], torque], DT);
        self.state = [
            wrap(ns[0], -PI, PI),
            wrap(ns[1], -PI, PI),
            bound(ns[2], -MAX_VEL_1, MAX_VEL_1),
            bound(ns[3], -MAX_VEL_2, MAX_VEL_2),
        ];
        let s = self.state;
        let terminated = -s[0].cos() - (s[1] + s[0]).cos() > 1.0;
        self.steps += 1;
        self.write_obs(obs);
        StepOutcome {
            reward: if terminated { 0.0 } else { -1.0 },
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
