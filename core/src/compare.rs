//! The comparison stage (docs/architecture.md stages 4–5): after the preference stage has learned the
//! pooled reward model and the EM mixture, train one PPO policy per objective and seed on the
//! same learned rewards, evaluate every policy with the groups' ground-truth rewards, and
//! summarise per objective: each group's true utility, the worst group, the best − worst gap,
//! each with a 95 % interval over seeds.
//!
//! Training reward of a step (docs/algorithms.md "MaxMin alignment", adapted to control):
//! `env-reward-weight · r_env + objective(calibrated learned rewards) − β·(log π − log π_ref)`.
//! The environment's own reward is kept (weight 1 by default) because Bradley–Terry rewards
//! learned from equal-length segments are blind to a per-step constant, so alone they cannot
//! say whether ending an episode early is good; the groups differ in *how* to act, and both
//! still want the episode to go on. Calibration (z-score of each learned model on rollouts of
//! π_ref, on by default) makes the K models comparable before a min is taken. π_ref is the
//! policy at initialisation (the "SFT" policy of control: near-uniform).
//!
//! Group utility is the mean episodic ground-truth return Σ_t r_u(s_t, a_t): logged during
//! training from the rollouts (`group/<name>/utility`) and measured at the end over
//! `eval-episodes` fresh episodes.

use crate::env::{Action, EnvConfig, EnvSpec, Space};
use crate::error::{check, Error, Result};
use crate::mlp::{ActorCritic, MlpPolicyConfig};
use crate::objective::{
    Batch, Calibrate, Calibration, Groups, KlConfig, KlController, Objective, ObjectiveConfig,
};
use crate::ppo::{self, Hooks, PpoConfig, RewardHook, RolloutView, TrainCtx};
use crate::prefs::em::RewardEnsemble;
use crate::prefs::group_reward::GroupReward;
use crate::rng;
use crate::run::{Metrics, Progress};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[compare]`: which objectives to train, over which seeds, and how to evaluate.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CompareConfig {
    /// The objectives (`[[compare.objectives]] type = "maxmin"`, … see `maxmin list`).
    pub objectives: Vec<Box<dyn ObjectiveConfig>>,
    /// Policy seeds; every objective is trained once per seed.
    #[serde(default = "d_seeds")]
    pub seeds: Vec<u64>,
    /// KL penalty to π_ref.
    #[serde(default)]
    pub kl: KlConfig,
    /// Calibrate each learned reward on π_ref rollouts before combining: `true` / `"z-score"`
    /// (default), `"center"` (subtract the mean only) or `false` / `"none"`.
    #[serde(default)]
    pub calibrate: Calibrate,
    /// Environment steps of π_ref used for calibration.
    #[serde(default = "d_cal_steps")]
    pub calibration_steps: usize,
    /// Weight of the environment's own reward in the training reward.
    #[serde(default = "one")]
    pub env_reward_weight: f64,
    /// Episodes per policy in the final ground-truth evaluation.
    #[serde(default = "d_eval")]
    pub eval_episodes: usize,
}

fn d_seeds() -> Vec<u64> {
    vec![1, 2, 3]
}
fn d_cal_steps() -> usize {
    4096
}
fn one() -> f64 {
    1.0
}
fn d_eval() -> usize {
    20
}

impl CompareConfig {
    /// Check values; keys relative to `[compare]`.
    pub fn validate(&self) -> Result<()> {
        if self.objectives.is_empty() {
            return Err(Error::config(
                "objectives",
                "expected at least one objective",
            ));
        }
        for (i, o) in self.objectives.iter().enumerate() {
            o.validate()
                .map_err(|e| e.under(&format!("objectives.{i}")))?;
        }
        if self.seeds.is_empty() {
            return Err(Error::config("seeds", "expected at least one seed"));
        }
        self.kl.validate().map_err(|e| e.under("kl"))?;
        check::positive_usize("calibration-steps", self.calibration_steps)?;
        check::positive_usize("eval-episodes", self.eval_episodes)?;
        check::non_negative_f64("env-reward-weight", self.env_reward_weight)?;
        Ok(())
    }
}

/// One trained policy's evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyResult {
    /// Objective label.
    pub objective: String,
    /// Policy seed.
    pub seed: u64,
    /// Mean episodic ground-truth return per group.
    pub groups: std::collections::BTreeMap<String, f64>,
    /// The group with the lowest utility.
    pub worst_group: String,
    /// Its utility.
    pub worst_utility: f64,
    /// Best − worst utility.
    pub gap: f64,
    /// Mean environment return over the evaluation episodes.
    pub env_return: f64,
}

/// Everything the comparison needs from the rest of the run.
pub struct Inputs<'a> {
    /// `[env]`.
    pub env: &'a dyn EnvConfig,
    /// `[policy]`.
    pub policy: &'a MlpPolicyConfig,
    /// `[ppo]`.
    pub ppo: &'a PpoConfig,
    /// The learned reward models.
    pub ensemble: &'a RewardEnsemble,
    /// True group names and their ground-truth rewards (evaluation only).
    pub truth: &'a [(String, Box<dyn GroupReward>)],
    /// Root seed of the run (calibration rollouts derive from it).
    pub seed: u64,
}

/// Train one objective × seed policy on the learned rewards and evaluate every group's ground
/// truth on it: metrics go to `dir/metrics.jsonl` (appended to on resume), PPO checkpoints to
/// `checkpoints`. The pipeline ([`crate::pipeline`]) reuses finished results and writes
/// `result.json`.
#[allow(clippy::too_many_arguments)]
pub fn train_one(
    cfg: &CompareConfig,
    inp: &Inputs<'_>,
    cals: &Cals,
    oc: &dyn ObjectiveConfig,
    seed: u64,
    dir: &Path,
    checkpoints: PathBuf,
    progress: &mut dyn Progress,
) -> Result<PolicyResult> {
    let spec = inp.env.build()?.spec().clone();
    let k = inp.ensemble.mixture.len();
    let groups = Groups {
        names: (0..k).map(|i| format!("cluster{i}")).collect(),
        shares: inp.ensemble.shares.clone(),
    };
    let label = oc.label();
    let reference = ActorCritic::new(
        inp.policy,
        &spec.observation_space,
        &spec.action_space,
        &mut rng::stream(seed, "policy/init"),
        &Device::Cpu,
    )?;
    let mut hook = LearnedRewards {
        objective: oc.build(&groups)?,
        ensemble: inp.ensemble,
        cal: cals,
        kl: KlController::new(&cfg.kl),
        env_weight: cfg.env_reward_weight,
        truth: inp.truth,
        acc: vec![],
        num_envs: inp.ppo.num_envs,
    };
    let metrics_path = dir.join("metrics.jsonl");
    let existing = std::fs::metadata(&metrics_path)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut metrics = Metrics::open(&metrics_path, existing)?;
    let mut ctx = TrainCtx {
        metrics: &mut metrics,
        checkpoints,
        progress,
    };
    let hooks = Hooks {
        rewards: Some(&mut hook),
        reference: Some(&reference),
    };
    let (summary, policy) = ppo::train_with(inp.ppo, inp.policy, inp.env, seed, &mut ctx, hooks)?;
    metrics.sync()?;
    let utilities = evaluate(
        &policy,
        summary.obs_rms.as_ref(),
        inp.env,
        inp.truth,
        cfg.eval_episodes,
        rng::derive_seed(seed, "eval"),
    )?;
    let r = result(&label, seed, inp.truth, &utilities);
    tracing::info!(
        "{label} seed {seed}: {:?} (worst: {} {:.2})",
        r.groups,
        r.worst_group,
        r.worst_utility
    );
    Ok(r)
}

fn result(
    label: &str,
    seed: u64,
    truth: &[(String, Box<dyn GroupReward>)],
    u: &Evaluation,
) -> PolicyResult {
    let groups: std::collections::BTreeMap<String, f64> = truth
        .iter()
        .zip(&u.group_returns)
        .map(|((n, _), v)| (n.clone(), *v))
        .collect();
    let (worst, wu) = groups
        .iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(n, v)| (n.clone(), *v))
        .unwrap_or_default();
    let best = groups.values().fold(f64::NEG_INFINITY, |a, b| a.max(*b));
    PolicyResult {
        objective: label.to_string(),
        seed,
        groups,
        worst_group: worst,
        worst_utility: wu,
        gap: best - wu,
        env_return: u.env_return,
    }
}

/// Calibrations of the single model (index 0) and each mixture model (1..=K), fitted on
/// uniformly random-action rollouts (π_ref is near-uniform at initialisation).
pub struct Cals {
    single: Calibration,
    mixture: Calibration,
}

/// Fit the calibrations of the learned models ([`Cals`]; identities with `calibrate = false`).
pub fn calibration(cfg: &CompareConfig, inp: &Inputs<'_>) -> Result<Cals> {
    let spec = &inp.env.build()?.spec().clone();
    let k = inp.ensemble.mixture.len();
    if !cfg.calibrate.is_on() {
        return Ok(Cals {
            single: Calibration::identity(1),
            mixture: Calibration::identity(k),
        });
    }
    let (obs, act) = random_rollout(
        inp.env,
        spec,
        cfg.calibration_steps,
        rng::derive_seed(inp.seed, "calibration"),
    )?;
    let single = cfg
        .calibrate
        .fit(&[inp.ensemble.single.reward_batch(&obs, &act)?]);
    let mixture = cfg
        .calibrate
        .fit(&inp.ensemble.mixture_rewards(&obs, &act)?);
    Ok(Cals { single, mixture })
}

fn random_rollout(
    env_cfg: &dyn EnvConfig,
    spec: &EnvSpec,
    steps: usize,
    seed: u64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    use rand::Rng as _;
    let mut env = env_cfg.build()?;
    let od = spec.observation_space.dim();
    let mut r = rng::stream(seed, "actions");
    let mut o = vec![0f32; od];
    let mut next = vec![0f32; od];
    env.reset(Some(seed), &mut o);
    let (mut obs, mut act) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        obs.extend_from_slice(&o);
        let a: Vec<f32> = match &spec.action_space {
            Space::Discrete { n } => vec![r.random_range(0..*n) as f32],
            Space::Box { low, high } => low
                .iter()
                .zip(high)
                .map(|(l, h)| r.random_range(*l..=*h))
                .collect(),
        };
        let out = env.step(Action::from_flat(&spec.action_space, &a), &mut next);
        act.extend_from_slice(&a);
        if out.terminated || out.truncated {
            env.reset(None, &mut o);
        } else {
            o.copy_from_slice(&next);
        }
    }
    Ok((obs, act))
}

/// The reward hook: learned rewards → calibration → objective → minus β·KL (+ env reward).
struct LearnedRewards<'a> {
    objective: Box<dyn Objective>,
    ensemble: &'a RewardEnsemble,
    cal: &'a Cals,
    kl: KlController,
    env_weight: f64,
    truth: &'a [(String, Box<dyn GroupReward>)],
    /// Per true group, per sub-environment: ground-truth return of the running episode.
    acc: Vec<Vec<f64>>,
    num_envs: usize,
}

impl RewardHook for LearnedRewards<'_> {
    fn rewards(&mut self, b: &RolloutView<'_>) -> Result<crate::ppo::HookOutput> {
        let n = b.env_rewards.len();
        let mut group = self.ensemble.mixture_rewards(b.raw_obs, b.actions)?;
        self.cal.mixture.apply(&mut group);
        let mut single = vec![self.ensemble.single.reward_batch(b.raw_obs, b.actions)?];
        self.cal.single.apply(&mut single);
        let kl: Vec<f64> = match b.ref_logprobs {
            Some(r) => b
                .logprobs
                .iter()
                .zip(r)
                .map(|(l, r)| (*l - *r) as f64)
                .collect(),
            None => vec![0.0; n],
        };
        let mean_kl = kl.iter().sum::<f64>() / n.max(1) as f64;
        let beta = self.kl.value;
        let c = self.objective.combine(&Batch {
            group_rewards: &group,
            single_rewards: Some(&single[0]),
            mean_kl,
            beta,
        })?;
        let rewards: Vec<f32> = (0..n)
            .map(|i| {
                (self.env_weight * b.env_rewards[i] as f64 + c.rewards[i] as f64 - beta * kl[i])
                    as f32
            })
            .collect();
        self.kl.update(mean_kl, n);
        let mut m = vec![
            ("objective/kl".to_string(), mean_kl),
            ("objective/kl_coef".to_string(), beta),
        ];
        let worst = c
            .utilities
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        m.push(("objective/worst_group".to_string(), worst as f64));
        if let Some(s) = c.selected {
            m.push(("objective/selected_group".to_string(), s as f64));
        }
        for (i, (u, w)) in c.utilities.iter().zip(&c.weights).enumerate() {
            m.push((format!("objective/cluster{i}/utility_estimate"), *u));
            m.push((format!("objective/cluster{i}/weight"), *w));
        }
        // Ground truth on the rollouts: mean return of the episodes that ended in this batch.
        if self.acc.is_empty() {
            self.acc = vec![vec![0.0; self.num_envs]; self.truth.len()];
        }
        let (od, ad) = (b.obs_dim, b.act_dim);
        for (g, (name, gr)) in self.truth.iter().enumerate() {
            let (mut sum, mut count) = (0.0, 0usize);
            for i in 0..n {
                let e = i % self.num_envs;
                self.acc[g][e] += gr.step_reward(
                    &b.raw_obs[i * od..(i + 1) * od],
                    &b.actions[i * ad..(i + 1) * ad],
                );
                if b.dones[i] {
                    sum += self.acc[g][e];
                    count += 1;
                    self.acc[g][e] = 0.0;
                }
            }
            if count > 0 {
                m.push((format!("group/{name}/utility"), sum / count as f64));
            }
        }
        Ok((rewards, m))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "objective": self.objective.state(), "kl": self.kl, "acc": self.acc })
    }

    fn restore(&mut self, s: &serde_json::Value) -> Result<()> {
        if s.is_null() {
            return Ok(());
        }
        let bad = |e: serde_json::Error| Error::Internal(format!("bad reward-hook state: {e}"));
        self.objective.restore(&s["objective"])?;
        self.kl = serde_json::from_value(s["kl"].clone()).map_err(bad)?;
        self.acc = serde_json::from_value(s["acc"].clone()).map_err(bad)?;
        Ok(())
    }
}

/// Ground-truth evaluation of a policy.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Mean episodic return per true group.
    pub group_returns: Vec<f64>,
    /// Mean environment return.
    pub env_return: f64,
}

/// Run `episodes` episodes of `policy` (sampling its actions) and average each group's
/// ground-truth episodic return. `obs_rms`: the observation normalisation the policy was
/// trained with (the group rewards always see raw observations).
pub fn evaluate(
    policy: &ActorCritic,
    obs_rms: Option<&crate::normalize::RunningMeanStd>,
    env_cfg: &dyn EnvConfig,
    truth: &[(String, Box<dyn GroupReward>)],
    episodes: usize,
    seed: u64,
) -> Result<Evaluation> {
    let mut env = env_cfg.build()?;
    let spec = env.spec().clone();
    let od = spec.observation_space.dim();
    let mut r = rng::stream(seed, "eval/actions");
    let (mut o, mut next) = (vec![0f32; od], vec![0f32; od]);
    let mut totals = vec![0.0; truth.len()];
    let mut env_total = 0.0;
    for ep in 0..episodes {
        env.reset(Some(seed.wrapping_add(ep as u64)), &mut o);
        loop {
            let out = policy.act(&ppo::normalized(&o, obs_rms), &mut r)?;
            let a = match &spec.action_space {
                Space::Discrete { .. } => out.actions.clone(),
                Space::Box { low, high } => out
                    .actions
                    .iter()
                    .zip(low.iter().zip(high))
                    .map(|(a, (l, h))| a.clamp(*l, *h))
                    .collect(),
            };
            for (t, (_, g)) in totals.iter_mut().zip(truth) {
                *t += g.step_reward(&o, &a);
            }
            let s = env.step(Action::from_flat(&spec.action_space, &a), &mut next);
            env_total += s.reward as f64;
            o.copy_from_slice(&next);
            if s.terminated || s.truncated {
                break;
            }
        }
    }
    let n = episodes.max(1) as f64;
    Ok(Evaluation {
        group_returns: totals.into_iter().map(|t| t / n).collect(),
        env_return: env_total / n,
    })
}

/// Mean and half-width of a two-sided 95 % Student-t interval.
pub fn mean_ci95(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let m = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (m, f64::NAN);
    }
    let sd = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    // t_{0.975, n−1} for n − 1 = 1…10, then the normal quantile.
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    let t = T.get(n - 2).copied().unwrap_or(1.96);
    (m, t * sd / (n as f64).sqrt())
}

/// Where each training writes its metrics.
pub fn policy_dirs(run_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run_dir.join("policies"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_interval_matches_tables() {
        let (m, h) = mean_ci95(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12);
        assert!((h - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!(mean_ci95(&[5.0]).1.is_nan());
    }
}
