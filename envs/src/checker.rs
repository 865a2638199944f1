//! The environment checker behind `maxmin check-env <type>`, in the spirit of Gymnasium's
//! `utils/env_checker.py`: seeded determinism of `reset` and `step`, observations inside the
//! observation space, sampled actions accepted, the time limit, and exact snapshot/restore.
//!
//! Every check runs even if an earlier one fails, and a panic inside the environment fails the
//! check it happened in instead of aborting the whole run.

use maxmin_core::env::{Action, Env, EnvConfig, Space, StepOutcome};
use maxmin_core::{Error, Result};
use rand::Rng as _;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Steps each stepping check takes (across episodes, resetting as they end).
const CHECK_STEPS: usize = 2_000;
/// Most steps the time-limit check spends looking for an episode that reaches the limit.
const TIME_LIMIT_STEPS: usize = 20_000;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, e.g. `reset determinism`.
    pub name: String,
    /// Whether the environment passed.
    pub passed: bool,
    /// What was checked or what went wrong.
    pub detail: String,
}

/// What [`check_env`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The environment's id.
    pub env_id: String,
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl CheckReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "check-env {}", self.env_id)?;
        for c in &self.checks {
            let mark = if c.passed { "ok  " } else { "FAIL" };
            writeln!(f, "  [{mark}] {}: {}", c.name, c.detail)?;
        }
        let failed = self.failures().count();
        if failed == 0 {
            write!(f, "all {} checks passed", self.checks.len())
        } else {
            write!(f, "{failed} of {} checks failed", self.checks.len())
        }
    }
}

/// Run every check on environments built from `cfg`, seeded with `seed`.
///
/// Errors only when the config is invalid or an environment cannot be built; a misbehaving
/// environment gives a report with failed checks.
pub fn check_env(cfg: &dyn EnvConfig, seed: u64) -> Result<CheckReport> {
    cfg.validate()?;
    let probe = cfg.build()?;
    let spec = probe.spec().clone();
    drop(probe);
    let mut checks = Vec::new();
    let mut run =
        |name: &str, f: &mut dyn FnMut() -> Result<std::result::Result<String, String>>| {
            let (passed, detail) = match catch_unwind(AssertUnwindSafe(f)) {
                Ok(Ok(Ok(d))) => (true, d),
                Ok(Ok(Err(d))) => (false, d),
                Ok(Err(e)) => (false, format!("error: {e}")),
                Err(p) => (false, format!("panicked: {}", panic_message(&p))),
            };
            checks.push(Check {
                name: name.into(),
                passed,
                detail,
            });
        };

    run("spaces", &mut || {
        Ok(check_spaces(&spec.observation_space, &spec.action_space))
    });
    run("reset determinism", &mut || check_reset(cfg, seed));
    run("step determinism", &mut || {
        check_step_determinism(cfg, seed)
    });
    run(
        "observations in space, sampled actions accepted",
        &mut || check_in_space(cfg, seed),
    );
    run("time limit", &mut || check_time_limit(cfg, seed));
    run("snapshot/restore", &mut || check_snapshot(cfg, seed));
    Ok(CheckReport {
        env_id: spec.id,
        checks,
    })
}

type CheckResult = Result<std::result::Result<String, String>>;

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".into())
}

fn check_spaces(obs: &Space, act: &Space) -> std::result::Result<String, String> {
    for (what, s) in [("observation", obs), ("action", act)] {
        match s {
            Space::Discrete { n: 0 } => return Err(format!("{what} space is Discrete(0)")),
            Space::Box { low, high } => {
                if low.is_empty() || low.len() != high.len() {
                    return Err(format!(
                        "{what} space bounds have lengths {} and {}",
                        low.len(),
                        high.len()
                    ));
                }
                if low
                    .iter()
                    .zip(high)
                    .any(|(l, h)| l.is_nan() || h.is_nan() || l > h)
                {
                    return Err(format!("{what} space has a NaN or low > high bound"));
                }
            }
            Space::Discrete { .. } => {}
        }
    }
    Ok(format!("observation {obs:?}, action {act:?}"))
}

/// An action sampler over `space` (Gymnasium's `space.sample()`); unbounded box components are
/// sampled from [-1, 1] around their finite bound.
struct Sampler {
    space: Space,
    rng: maxmin_core::rng::Rng,
    buf: Vec<f32>,
}

impl Sampler {
    fn new(space: &Space, seed: u64) -> Self {
        Self {
            space: space.clone(),
            rng: maxmin_core::rng::stream(seed, "check-env/actions"),
            buf: vec![0.0; space.dim()],
        }
    }

    fn sample(&mut self) -> Action<'_> {
        match &self.space {
            Space::Discrete { n } => Action::Discrete(self.rng.random_range(0..*n)),
            Space::Box { low, high } => {
                for (b, (l, h)) in self.buf.iter_mut().zip(low.iter().zip(high)) {
                    let (l, h) = match (l.is_finite(), h.is_finite()) {
                        (true, true) => (*l, *h),
                        (true, false) => (*l, *l + 1.0),
                        (false, true) => (*h - 1.0, *h),
                        (false, false) => (-1.0, 1.0),
                    };
                    *b = l + (h - l) * self.rng.random::<f32>();
                }
                Action::Continuous(&self.buf)
            }
        }
    }
}

/// A trajectory of `steps` steps with sampled actions, resetting (unseeded) when episodes end.
fn rollout(env: &mut dyn Env, sampler: &mut Sampler, steps: usize) -> Vec<(Vec<f32>, StepOutcome)> {
    let mut obs = vec![0.0; env.spec().observation_space.dim()];
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let o = env.step(sampler.sample(), &mut obs);
        out.push((obs.clone(), o));
        if o.terminated || o.truncated {
            env.reset(None, &mut obs);
            out.push((
                obs.clone(),
                StepOutcome {
                    reward: 0.0,
                    terminated: false,
                    truncated: false,
                },
            ));
        }
    }
    out
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn check_reset(cfg: &dyn EnvConfig, seed: u64) -> CheckResult {
    let (mut a, mut b) = (cfg.build()?, cfg.build()?);
    let d = a.spec().observation_space.dim();
    let (mut oa, mut ob, mut oc) = (vec![0.0; d], vec![0.0; d], vec![0.0; d]);
    a.reset(Some(seed), &mut oa);
    b.reset(Some(seed), &mut ob);
    // Reseeding an environment that has already been used must also give the same start.
    a.reset(None, &mut oc);
    a.reset(Some(seed), &mut oc);
    if !same_bits(&oa, &ob) {
        return Ok(Err(format!(
            "two environments reset with seed {seed} gave {oa:?} and {ob:?}"
        )));
    }
    if !same_bits(&oa, &oc) {
        return Ok(Err(format!(
            "reset with seed {seed} after other resets gave {oc:?}, first time {oa:?}"
        )));
    }
    let mut od = vec![0.0; d];
    b.reset(Some(seed.wrapping_add(1)), &mut od);
    let note = if same_bits(&oa, &od) {
        " (seeds differing by 1 gave the same start: is the seed used?)"
    } else {
        ""
    };
    Ok(Ok(format!(
        "reset(Some({seed})) twice gives the same observation{note}"
    )))
}

fn check_step_determinism(cfg: &dyn EnvConfig, seed: u64) -> CheckResult {
    let mut trajs = Vec::new();
    for _ in 0..2 {
        let mut env = cfg.build()?;
        let mut obs = vec![0.0; env.spec().observation_space.dim()];
        env.reset(Some(seed), &mut obs);
        let mut sampler = Sampler::new(&env.spec().action_space, seed);
        trajs.push(rollout(env.as_mut(), &mut sampler, CHECK_STEPS));
    }
    for (t, (a, b)) in trajs[0].iter().zip(&trajs[1]).enumerate() {
        if !same_bits(&a.0, &b.0) || a.1 != b.1 {
            return Ok(Err(format!(
                "same seed and actions diverged at step {t}: {a:?} vs {b:?}"
            )));
        }
    }
    Ok(Ok(format!(
        "{CHECK_STEPS} steps identical under the same seed and actions"
    )))
}

fn check_in_space(cfg: &dyn EnvConfig, seed: u64) -> CheckResult {
    let mut env = cfg.build()?;
    let space = env.spec().observation_space.clone();
    let mut obs = vec![0.0; space.dim()];
    env.reset(Some(seed), &mut obs);
    if !space.contains(&obs) {
        return Ok(Err(format!(
            "reset observation {obs:?} is outside {space:?}"
        )));
    }
    let mut sampler = Sampler::new(&env.spec().action_space, seed ^ 1);
    for (t, (o, out)) in rollout(env.as_mut(), &mut sampler, CHECK_STEPS)
        .iter()
        .enumerate()
    {
        if !space.contains(o) {
            return Ok(Err(format!(
                "observation {o:?} at step {t} is outside {space:?}"
            )));
        }
        if !out.reward.is_finite() {
            return Ok(Err(format!(
                "reward {} at step {t} is not finite",
                out.reward
            )));
        }
    }
    Ok(Ok(format!(
        "{CHECK_STEPS} steps of sampled actions, every observation inside the space"
    )))
}

fn check_time_limit(cfg: &dyn EnvConfig, seed: u64) -> CheckResult {
    let mut env = cfg.build()?;
    let limit = env.spec().max_episode_steps;
    let mut obs = vec![0.0; env.spec().observation_space.dim()];
    env.reset(Some(seed), &mut obs);
    let mut sampler = Sampler::new(&env.spec().action_space, seed ^ 2);
    let (mut len, mut episodes, mut truncations, mut terminations) =
        (0usize, 0usize, 0usize, 0usize);
    for _ in 0..TIME_LIMIT_STEPS {
        let o = env.step(sampler.sample(), &mut obs);
        len += 1;
        if o.terminated && o.truncated {
            return Ok(Err(format!(
                "step {len} of an episode is both terminated and truncated"
            )));
        }
        match limit {
            None if o.truncated => {
                return Ok(Err(format!("truncated at step {len} without a time limit")))
            }
            Some(m) if o.truncated && len != m => {
                return Ok(Err(format!("truncated at step {len}, the limit is {m}")))
            }
            Some(m) if len >= m && !o.truncated && !o.terminated => {
                return Ok(Err(format!("episode ran past its limit of {m} steps")))
            }
            _ => {}
        }
        if o.terminated || o.truncated {
            episodes += 1;
            truncations += o.truncated as usize;
            terminations += o.terminated as usize;
            len = 0;
            env.reset(None, &mut obs);
            if truncations > 0 && terminations > 0 && episodes >= 10 {
                break;
            }
        }
    }
    let limit_text = limit.map_or("no limit".to_string(), |m| format!("limit {m}"));
    Ok(Ok(format!(
        "{episodes} episodes ({terminations} terminated, {truncations} truncated at the limit), \
         {limit_text}, never both flags"
    )))
}

fn check_snapshot(cfg: &dyn EnvConfig, seed: u64) -> CheckResult {
    let mut env = cfg.build()?;
    let mut obs = vec![0.0; env.spec().observation_space.dim()];
    env.reset(Some(seed), &mut obs);
    let mut sampler = Sampler::new(&env.spec().action_space, seed ^ 3);
    // Mid-run, past at least one unseeded reset so the RNG stream has moved.
    rollout(env.as_mut(), &mut sampler, CHECK_STEPS / 2);
    let snap = env.snapshot();
    let text = serde_json::to_string(&snap)
        .map_err(|e| Error::Internal(format!("snapshot is not serialisable: {e}")))?;
    let sampler_at_snap = Sampler {
        space: sampler.space.clone(),
        rng: sampler.rng.clone(),
        buf: sampler.buf.clone(),
    };
    let expected = rollout(env.as_mut(), &mut sampler, CHECK_STEPS);

    let parsed: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Internal(format!("snapshot text does not parse: {e}")))?;
    let mut fresh = cfg.build()?;
    fresh.restore(&parsed)?;
    let mut sampler = sampler_at_snap;
    let got = rollout(fresh.as_mut(), &mut sampler, CHECK_STEPS);
    for (t, (a, b)) in expected.iter().zip(&got).enumerate() {
        if !same_bits(&a.0, &b.0) || a.1 != b.1 {
            return Ok(Err(format!(
                "a restored environment diverged {t} steps after the snapshot: {a:?} vs {b:?}"
            )));
        }
    }
    Ok(Ok(format!(
        "restored from JSON text into a fresh environment, {CHECK_STEPS} steps identical"
    )))
}
