//! Golden trajectories: replay the action lists recorded from Python Gymnasium 1.0.0 by
//! `tests/data/gen_golden.py` and compare observations, rewards, `terminated` and `truncated`
//! step by step, including the seeded start state and the unseeded resets that continue the
//! NumPy stream after an episode ends.

use maxmin_core::env::{Action, EnvConfig};
use serde::Deserialize;
// Link the crate so its typetag registrations exist in this test binary.
use maxmin_envs as _;

/// Largest absolute difference allowed between our f32 observations / rewards and Gymnasium's.
const TOL: f64 = 1e-6;

#[derive(Deserialize)]
struct Golden {
    gymnasium: String,
    trajectories: Vec<Trajectory>,
}

#[derive(Deserialize)]
struct Trajectory {
    env_id: String,
    config: serde_json::Value,
    seed: u64,
    reset_obs: Vec<f64>,
    actions: Vec<serde_json::Value>,
    obs: Vec<Vec<f64>>,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    resets: Vec<Reset>,
}

#[derive(Deserialize)]
struct Reset {
    after_step: usize,
    obs: Vec<f64>,
}

fn max_abs_diff(ours: &[f32], theirs: &[f64]) -> f64 {
    assert_eq!(ours.len(), theirs.len(), "observation length");
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max)
}

/// Replay every trajectory of one fixture file; returns the largest observation error seen.
fn replay(file: &str) -> f64 {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let golden: Golden = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(golden.gymnasium, "1.0.0");
    let mut worst: f64 = 0.0;
    for tr in &golden.trajectories {
        let what = format!("{} seed {} ({})", tr.env_id, tr.seed, tr.config);
        let cfg: Box<dyn EnvConfig> =
            serde_json::from_value(tr.config.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut env = cfg.build().unwrap();
        assert_eq!(env.spec().id, tr.env_id);
        let mut obs = vec![0.0f32; env.spec().observation_space.dim()];
        env.reset(Some(tr.seed), &mut obs);
        let d = max_abs_diff(&obs, &tr.reset_obs);
        assert!(d <= TOL, "{what}: reset obs {obs:?} vs {:?}", tr.reset_obs);
        worst = worst.max(d);
        let mut resets = tr.resets.iter();
        for (t, a) in tr.actions.iter().enumerate() {
            let cont;
            let action = match a.as_u64() {
                Some(i) if a.is_u64() => Action::Discrete(i as usize),
                _ => {
                    cont = [a.as_f64().unwrap() as f32];
                    Action::Continuous(&cont)
                }
            };
            let out = env.step(action, &mut obs);
            let d = max_abs_diff(&obs, &tr.obs[t]);
            worst = worst.max(d);
            assert!(d <= TOL, "{what} step {t}: obs {obs:?} vs {:?}", tr.obs[t]);
            assert!(
                (out.reward as f64 - tr.rewards[t]).abs() <= TOL * tr.rewards[t].abs().max(1.0),
                "{what} step {t}: reward {} vs {}",
                out.reward,
                tr.rewards[t]
            );
            assert_eq!(
                out.terminated, tr.terminated[t],
                "{what} step {t}: terminated"
            );
            assert_eq!(out.truncated, tr.truncated[t], "{what} step {t}: truncated");
            if out.terminated || out.truncated {
                let r = resets
                    .next()
                    .expect("a recorded reset after the episode end");
                assert_eq!(r.after_step, t, "{what}: reset position");
                env.reset(None, &mut obs);
                let d = max_abs_diff(&obs, &r.obs);
                assert!(
                    d <= TOL,
                    "{what} reset after step {t}: {obs:?} vs {:?}",
                    r.obs
                );
                worst = worst.max(d);
            }
        }
        assert!(
            resets.next().is_none(),
            "{what}: Gymnasium reset more often"
        );
    }
    eprintln!("{file}: largest observation difference {worst:e}");
    worst
}

#[test]
fn cartpole_matches_gymnasium() {
    replay("golden_cartpole.json");
}

#[test]
fn mountain_car_matches_gymnasium() {
    replay("golden_mountain_car.json");
}

#[test]
fn acrobot_matches_gymnasium() {
    replay("golden_acrobot.json");
}

#[test]
fn pendulum_matches_gymnasium() {
    replay("golden_pendulum.json");
}

/// The fixtures exercise both ways an episode ends, so a wrong time limit cannot pass unseen.
#[test]
fn fixtures_cover_termination_and_truncation() {
    for file in [
        "golden_cartpole.json",
        "golden_mountain_car.json",
        "golden_acrobot.json",
        "golden_pendulum.json",
    ] {
        let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
        let golden: Golden =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let trunc = golden
            .trajectories
            .iter()
            .any(|t| t.truncated.iter().any(|&x| x));
        assert!(trunc, "{file}: no truncation");
        if file != "golden_pendulum.json" {
            let term = golden
                .trajectories
                .iter()
                .any(|t| t.terminated.iter().any(|&x| x));
            assert!(term, "{file}: no termination");
        }
    }
}
