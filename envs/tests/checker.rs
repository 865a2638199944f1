//! `check_env` passes on every environment of the crate and fails on deliberately broken ones.

use maxmin_core::env::{Action, Env, EnvConfig, EnvSpec, Space, StepOutcome};
use maxmin_core::Result;
use maxmin_envs::{check_env, CartPoleConfig};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Every registered environment, default config (the registry is the one list: an environment
/// added to the crate is checked without editing this test).
fn registered() -> Vec<(&'static str, Box<dyn EnvConfig>)> {
    let names = maxmin_core::registry::names("EnvConfig");
    for must in ["cartpole", "corridor", "pendulum"] {
        assert!(names.contains(&must), "{must} not registered: {names:?}");
    }
    names
        .into_iter()
        .map(|n| {
            let cfg: Box<dyn EnvConfig> =
                serde_json::from_str(&format!(r#"{{"type": "{n}"}}"#)).unwrap();
            (n, cfg)
        })
        .collect()
}

#[test]
fn passes_on_all_envs() {
    let mut cfgs = registered();
    // A short limit so the time-limit check sees truncations of CartPole too.
    cfgs.push((
        "cartpole, 15 steps",
        Box::new(CartPoleConfig {
            max_episode_steps: 15,
            ..CartPoleConfig::default()
        }),
    ));
    for (name, cfg) in cfgs {
        let report = check_env(cfg.as_ref(), 7).unwrap();
        println!("{report}");
        assert!(report.passed(), "{name}: {report}");
        assert_eq!(report.checks.len(), 6);
    }
}

#[test]
fn invalid_config_is_an_error() {
    let cfg = CartPoleConfig {
        max_episode_steps: 0,
        ..CartPoleConfig::default()
    };
    let err = check_env(&cfg, 0).unwrap_err().to_string();
    assert!(err.contains("max-episode-steps"), "{err}");
}

/// What to break in [`Broken`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Fault {
    /// `reset` ignores its seed and draws from a global counter.
    NondeterministicReset,
    /// Observations leave the declared box.
    ObsOutOfBounds,
    /// Truncates one step early.
    EarlyTruncation,
    /// `restore` forgets the step counter.
    LossySnapshot,
    /// Panics on action 1.
    PanicsOnAction,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BrokenConfig {
    fault: Fault,
}

#[typetag::serde(name = "broken-test-env")]
impl EnvConfig for BrokenConfig {
    fn build(&self) -> Result<Box<dyn Env>> {
        Ok(Box::new(Broken {
            fault: self.fault,
            spec: EnvSpec {
                id: "Broken-v0".into(),
                observation_space: Space::Box {
                    low: vec![0.0],
                    high: vec![10.0],
                },
                action_space: Space::Discrete { n: 2 },
                max_episode_steps: Some(20),
                reward_threshold: None,
            },
            pos: 0,
            steps: 0,
        }))
    }
}

/// A walk on 0..=10 that terminates at 10; correct except for its `fault`.
struct Broken {
    fault: Fault,
    spec: EnvSpec,
    pos: u64,
    steps: usize,
}

impl Env for Broken {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        self.pos = match (self.fault, seed) {
            (Fault::NondeterministicReset, _) => COUNTER.fetch_add(1, Ordering::Relaxed) % 5,
            (_, Some(s)) => s % 5,
            (_, None) => 0,
        };
        self.steps = 0;
        obs[0] = self.pos as f32;
    }
    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> StepOutcome {
        match action {
            Action::Discrete(1) if self.fault == Fault::PanicsOnAction => panic!("action 1"),
            Action::Discrete(1) => self.pos += 1,
            _ => self.pos = self.pos.saturating_sub(1),
        }
        self.steps += 1;
        obs[0] = if self.fault == Fault::ObsOutOfBounds {
            self.pos as f32 + 10.5
        } else {
            self.pos as f32
        };
        let terminated = self.pos >= 10;
        let limit = if self.fault == Fault::EarlyTruncation {
            19
        } else {
            20
        };
        StepOutcome {
            reward: 1.0,
            terminated,
            truncated: !terminated && self.steps >= limit,
        }
    }
    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!([self.pos, self.steps])
    }
    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        self.pos = state[0].as_u64().unwrap_or(0);
        if self.fault != Fault::LossySnapshot {
            self.steps = state[1].as_u64().unwrap_or(0) as usize;
        }
        Ok(())
    }
}

#[test]
fn fails_on_broken_envs() {
    let cases = [
        (Fault::NondeterministicReset, "reset determinism"),
        (
            Fault::ObsOutOfBounds,
            "observations in space, sampled actions accepted",
        ),
        (Fault::EarlyTruncation, "time limit"),
        (Fault::LossySnapshot, "snapshot/restore"),
        (Fault::PanicsOnAction, "step determinism"),
    ];
    for (fault, check) in cases {
        let report = check_env(&BrokenConfig { fault }, 1).unwrap();
        println!("{fault:?}:\n{report}");
        assert!(!report.passed(), "{fault:?} passed:\n{report}");
        let failed: Vec<&str> = report.failures().map(|c| c.name.as_str()).collect();
        assert!(
            failed.contains(&check),
            "{fault:?}: failed {failed:?}, expected {check}"
        );
        assert!(report.to_string().contains("FAIL"));
    }
}

#[test]
fn a_single_fault_fails_only_its_check() {
    // Every other check passes on the same env, so the failures above are the faults' doing.
    let report = check_env(
        &BrokenConfig {
            fault: Fault::LossySnapshot,
        },
        1,
    )
    .unwrap();
    let failed: Vec<&str> = report.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, vec!["snapshot/restore"], "{report}");
}
