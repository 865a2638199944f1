//! The gym-rs 0.3 adapter (feature `gym-rs`): random-policy CartPole episode lengths match
//! Gymnasium's (computed with our Gymnasium-exact CartPole in the same test) once the adapter
//! passes ±0.05 start bounds, and gym-rs's own ±0.5 default is shown to differ.
#![cfg(feature = "gym-rs")]

use maxmin_core::env::{Action, EnvConfig};
use maxmin_envs::check_env;
use maxmin_envs::gym_rs::{GymRsCartPoleConfig, GymRsMountainCarConfig};
use maxmin_envs::CartPoleConfig;
use rand::Rng as _;

const EPISODES: usize = 2000;

/// Mean length and share of one-step episodes under uniform random actions.
fn random_policy_lengths(cfg: &dyn EnvConfig, seed: u64) -> (f64, f64) {
    let mut env = cfg.build().unwrap();
    let mut rng = maxmin_core::rng::stream(seed, "gym-rs-test");
    let mut obs = [0.0f32; 4];
    env.reset(Some(seed), &mut obs);
    let (mut total, mut one_step) = (0usize, 0usize);
    for _ in 0..EPISODES {
        let mut len = 0;
        loop {
            len += 1;
            let o = env.step(Action::Discrete(rng.random_range(0..2)), &mut obs);
            if o.terminated || o.truncated {
                break;
            }
        }
        total += len;
        one_step += (len == 1) as usize;
        env.reset(None, &mut obs);
    }
    (
        total as f64 / EPISODES as f64,
        one_step as f64 / EPISODES as f64,
    )
}

#[test]
fn fixed_bounds_match_gymnasium_episode_lengths() {
    let (reference, ref_one) = random_policy_lengths(&CartPoleConfig::default(), 1);
    let (fixed, fixed_one) = random_policy_lengths(&GymRsCartPoleConfig::default(), 2);
    let unfixed_cfg = GymRsCartPoleConfig {
        reset_bound: 0.5,
        ..GymRsCartPoleConfig::default()
    };
    let (unfixed, unfixed_one) = random_policy_lengths(&unfixed_cfg, 3);
    eprintln!(
        "random-policy mean episode length over {EPISODES} episodes: Gymnasium-exact {reference:.2} \
         ({:.1} % one-step), gym-rs ±0.05 {fixed:.2} ({:.1} %), gym-rs ±0.5 {unfixed:.2} ({:.1} %)",
        100.0 * ref_one,
        100.0 * fixed_one,
        100.0 * unfixed_one
    );
    // Random CartPole episode lengths have a standard deviation of about 12, so the difference of
    // two means over 2000 episodes has a standard error of about 0.4: allow 2.0.
    assert!(
        (20.0..25.0).contains(&reference),
        "reference mean {reference}"
    );
    assert!(
        (fixed - reference).abs() < 2.0,
        "fixed {fixed} vs {reference}"
    );
    assert!(fixed_one < 0.05, "fixed: {fixed_one} one-step episodes");
    assert!(
        unfixed < reference - 5.0,
        "unfixed {unfixed} vs {reference}"
    );
    assert!(
        unfixed_one > 0.4,
        "unfixed: {unfixed_one} one-step episodes"
    );
}

#[test]
fn adapters_pass_the_checker() {
    for cfg in [
        Box::new(GymRsCartPoleConfig::default()) as Box<dyn EnvConfig>,
        Box::new(GymRsMountainCarConfig::default()),
    ] {
        let report = check_env(cfg.as_ref(), 5).unwrap();
        assert!(report.passed(), "{report}");
    }
}

#[test]
fn adapters_are_registered() {
    let names = maxmin_core::registry::names("EnvConfig");
    assert!(names.contains(&"gym-rs-cartpole") && names.contains(&"gym-rs-mountain-car"));
    let cfg: Box<dyn EnvConfig> =
        serde_json::from_str(r#"{"type": "gym-rs-cartpole", "reset-bound": 0.5}"#).unwrap();
    let mut env = cfg.build().unwrap();
    let mut obs = [0.0f32; 4];
    env.reset(Some(0), &mut obs);
    assert!(obs.iter().all(|v| v.abs() <= 0.5));
}
