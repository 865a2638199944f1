//! The language-model domain of core's one MaxMin-RLHF pipeline (`maxmin_core::pipeline`;
//! docs/algorithms.md, experiments 1 and 2; docs/lm-rlhf.md). The driver runs the stages; this
//! file says what they mean for text:
//!
//! 1. **preferences**: two completions per pool prompt from the reference policy; each simulated
//!    user (in a group with a ground-truth text reward) labels pairs with a Bradley–Terry draw —
//!    or recorded P-Soups comparisons are read and split into users;
//! 2. **reward models** (core's reward stage on [`crate::reward_stage`]'s encodings):
//!    frozen-backbone features (see [`crate::features`]), a single pooled BT model and the EM
//!    mixture of K models (the paper's Algorithm 2);
//! 3. **policies**: for every objective × seed, token-level PPO (TRL semantics, `maxmin_lm::ppo`)
//!    on LoRA adapters, the sequence score being the objective's combination of the calibrated
//!    learned rewards (docs/algorithms.md Algorithm 1 for `maxmin`);
//! 4. **evaluation**: every policy and the reference complete the same held-out prompts with the
//!    same sampling seed; the groups' ground-truth scores are averaged per policy, then over seeds.
//!
//! Outputs under the run directory: `preferences.jsonl`, `reward_models/`, `policies/<objective>__seed<s>/`
//! (`metrics.jsonl`, `checkpoint-*/`, `result.json`, `samples.json`), `summary.json`, `report.md`, `plots/`.
//! Resume: the preference and reward stages are deterministic and rerun; finished policies are
//! reused; an interrupted policy continues from its last checkpoint.

use crate::config::{LmCompare, LmExperiment, Shaping};
pub use crate::context::{build_ctx, table, Completion, Ctx, LmResult, Table};
use crate::context::{complete, gen_options, score_truth};
use crate::features::Featurizer;
use crate::reward_stage;
use maxmin_core::config::Loaded;
use maxmin_core::objective::{Batch, Calibration, Groups, ObjectiveConfig};
use maxmin_core::pipeline::{Domain, MainRun, Plan};
use maxmin_core::prefs::data::Comparison;
use maxmin_core::prefs::em::RewardEnsemble;
use maxmin_core::prefs::reward_model::{RewardModel, RewardSpec};
use maxmin_core::prefs::stage::{Outcome, Settings, StageData, SweepRow};
use maxmin_core::rng::{stream, Rng};
use maxmin_core::run::{write_json_atomic, Metrics, Progress, RunDir};
use maxmin_core::{Error, Result};
use maxmin_lm::policy::LmPolicy;
use maxmin_lm::ppo::LmPpoTrainer;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Models above this many resident bytes are not loaded by `maxmin check` (a 7B model would take
/// minutes and 13 GiB just to be checked); their config, tokenizer and prompts still are.
const CHECK_LOAD_LIMIT: u64 = 2 << 30;

/// `maxmin check`: everything [`run`] builds before training — for small models the model itself,
/// for large ones its `config.json` (architecture and memory estimate), tokenizer and prompts.
pub fn check(exp: &LmExperiment) -> Result<()> {
    let dir = exp.model.model_dir().map_err(|e| e.under("model"))?;
    exp.model.device().map_err(|e| e.under("model"))?;
    let dtype = exp.model.compute_dtype()?;
    let est = maxmin_lm::auto::memory_estimate(&dir, dtype, dtype)?;
    if est.compute_bytes > CHECK_LOAD_LIMIT {
        let tok = exp.model.load_tokenizer()?;
        let (train, eval) = exp.prompts.load_split()?;
        for p in train.iter().chain(&eval) {
            tok.encode(p)?;
        }
        tracing::info!(
            "{}: {:.1} B parameters, {:.2} GiB resident in {:?}; not loaded by check",
            dir.display(),
            est.params as f64 / 1e9,
            est.compute_bytes as f64 / (1u64 << 30) as f64,
            dtype
        );
        if let Some(p) = &exp.population {
            for (i, g) in p.groups.iter().enumerate() {
                g.reward
                    .build()
                    .map_err(|e| e.under(&format!("population.groups.{i}.reward")))?;
            }
        }
    } else {
        let ctx = build_ctx(exp)?;
        tracing::info!(
            "{} training and {} evaluation prompts; groups {:?}",
            ctx.train.len(),
            ctx.eval.len(),
            ctx.names
        );
    }
    if !exp.preferences.files.is_empty() {
        let d = crate::psoups::load(&exp.preferences.files, &psoups_split(exp))?;
        tracing::info!(
            "P-Soups: {} training and {} held-out comparisons",
            d.train.len(),
            d.held_out.len()
        );
    }
    Ok(())
}

/// `[preferences.split]`, or its defaults with the seed derived from the root seed.
fn psoups_split(exp: &LmExperiment) -> crate::psoups::PsoupsSplit {
    exp.preferences
        .split
        .clone()
        .unwrap_or_else(|| crate::psoups::PsoupsSplit {
            seed: maxmin_core::rng::derive_seed(exp.seed, "psoups"),
            ..Default::default()
        })
}

fn summarise(ctx: &Ctx, objective: &str, seed: u64, cs: &[Completion]) -> LmResult {
    let n = cs.len().max(1) as f64;
    let groups: BTreeMap<String, f64> = ctx
        .names
        .iter()
        .enumerate()
        .filter(|_| ctx.truth.is_some())
        .map(|(g, name)| {
            (
                name.clone(),
                cs.iter().map(|c| c.scores[g]).sum::<f64>() / n,
            )
        })
        .collect();
    let (worst_group, worst_utility) = groups
        .iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(g, v)| (g.clone(), *v))
        .unwrap_or_default();
    let best = groups.values().copied().fold(f64::NEG_INFINITY, f64::max);
    LmResult {
        objective: objective.into(),
        seed,
        gap: if groups.is_empty() {
            0.0
        } else {
            best - worst_utility
        },
        groups,
        worst_group,
        worst_utility,
        mean_tokens: cs.iter().map(|c| c.tokens as f64).sum::<f64>() / n,
        learned: BTreeMap::new(),
        train_seconds: 0.0,
    }
}

/// Completions of the evaluation prompts (same sampling seed for every policy), with their ids.
fn evaluate(ctx: &Ctx, policy: Option<&LmPolicy>) -> Result<(Vec<Completion>, Vec<Vec<u32>>)> {
    let ids: Vec<Vec<u32>> = ctx.eval.iter().map(|p| p.1.clone()).collect();
    let mut rng = stream(ctx.exp.seed, "evaluation");
    let resp = complete(ctx, policy, &ids, &mut rng)?;
    let cs = ctx
        .eval
        .iter()
        .zip(&resp)
        .map(|((p, _), r)| score_truth(ctx, p, r))
        .collect::<Result<_>>()?;
    Ok((cs, resp))
}

/// Sequence rewards `[K][B]` of the mixture and `[B]` of the single model: each model's
/// per-token reward summed over a completion's token rows.
fn learned_rewards(l: &Learned, rows: &[Vec<Vec<f32>>]) -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
    let flat: Vec<f32> = rows.iter().flatten().flatten().copied().collect();
    let sum = |m: &RewardModel| -> Result<Vec<f32>> {
        let r = m.reward_batch(&flat, &[])?;
        let mut out = Vec::with_capacity(rows.len());
        let mut at = 0;
        for s in rows {
            out.push(r[at..at + s.len()].iter().sum());
            at += s.len();
        }
        Ok(out)
    };
    let g = l.mixture.iter().map(sum).collect::<Result<Vec<_>>>()?;
    Ok((g, sum(&l.single)?))
}

#[derive(Debug, Serialize, Deserialize)]
struct PolicyState {
    step: usize,
    rng: Rng,
    metrics_bytes: u64,
}

fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let t = std::fs::read_to_string(dir.join("latest.json")).ok()?;
    let v: Value = serde_json::from_str(&t).ok()?;
    Some(dir.join(v["checkpoint"].as_str()?))
}

fn save_checkpoint(pol_dir: &Path, trainer: &LmPpoTrainer, state: &PolicyState) -> Result<PathBuf> {
    let name = format!("checkpoint-{:06}", state.step);
    let tmp = pol_dir.join(format!(".tmp-{name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    trainer.save(&tmp)?;
    write_json_atomic(&tmp.join("pipeline_state.json"), state)?;
    let dst = pol_dir.join(&name);
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
    }
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    let prev = latest_checkpoint(pol_dir);
    write_json_atomic(
        &pol_dir.join("latest.json"),
        &serde_json::json!({ "checkpoint": name }),
    )?;
    if let Some(p) = prev {
        if p != dst {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    Ok(dst)
}

/// What every policy of the run reads.
struct PolicyArgs<'a, 'c> {
    ctx: &'a Ctx<'c>,
    learned: &'a Learned,
    cal: &'a Calibration,
    cal_single: &'a Calibration,
    fz: &'a Featurizer,
}

/// Train (or resume from its last checkpoint in `pol_dir`) one objective × seed policy and
/// evaluate it; writes `samples.json` beside the checkpoints (the pipeline writes `result.json`).
fn train_policy(
    args: &PolicyArgs,
    ocfg: &dyn ObjectiveConfig,
    seed: u64,
    pol_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<LmResult> {
    let (ctx, learned) = (args.ctx, args.learned);
    let exp = ctx.exp;
    let compare = exp
        .compare
        .as_ref()
        .ok_or_else(|| Error::Internal("policies without [compare]".into()))?;
    let label = ocfg.label();
    let mut objective = ocfg.build(&Groups {
        names: ctx.names.clone(),
        shares: learned.shares.clone(),
    })?;
    let (mut trainer, mut state) = new_trainer(ctx, &label, seed)?;
    if let Some(ck) = latest_checkpoint(pol_dir) {
        state = resume(&ck, &mut trainer, objective.as_mut())?;
        tracing::info!("{label} seed {seed}: resuming at step {}", state.step);
    }
    let mut metrics = Metrics::open(&pol_dir.join("metrics.jsonl"), state.metrics_bytes)?;
    let steps = compare.steps;
    progress.start(
        &format!("{label} seed {seed}"),
        steps as u64,
        state.step as u64,
    );
    let t0 = Instant::now();
    let job = PolicyJob {
        ctx,
        compare,
        learned,
        cals: (args.cal, args.cal_single),
        fz: args.fz,
        label: &label,
        seed,
        pol_dir,
    };
    run_steps(
        &job,
        &mut trainer,
        objective.as_mut(),
        &mut state,
        &mut metrics,
        progress,
    )?;
    progress.finish();
    let train_seconds = t0.elapsed().as_secs_f64();
    let (mut result, completions) =
        evaluate_policy(ctx, learned, args.fz, trainer.policy(), &label, seed)?;
    result.train_seconds = train_seconds;
    let samples: Vec<&Completion> = completions.iter().take(compare.samples).collect();
    write_json_atomic(&pol_dir.join("samples.json"), &samples)?;
    Ok(result)
}

/// One objective × seed policy's PPO run, shared by its steps.
struct PolicyJob<'a, 'c> {
    ctx: &'a Ctx<'c>,
    compare: &'a LmCompare,
    learned: &'a Learned,
    /// Group and single calibrations (identities with `calibrate = false`).
    cals: (&'a Calibration, &'a Calibration),
    fz: &'a Featurizer,
    label: &'a str,
    seed: u64,
    pol_dir: &'a Path,
}

/// PPO steps until `[compare] steps`: sample prompts, roll out, score with the learned rewards,
/// combine per the objective, update, log the batch's ground truth, checkpoint every
/// `checkpoint-every` steps; on Ctrl-C checkpoint and return [`Error::Interrupted`].
fn run_steps(
    job: &PolicyJob,
    trainer: &mut LmPpoTrainer,
    objective: &mut dyn maxmin_core::objective::Objective,
    state: &mut PolicyState,
    metrics: &mut Metrics,
    progress: &mut dyn Progress,
) -> Result<()> {
    let (ctx, compare) = (job.ctx, job.compare);
    let (steps, bs) = (compare.steps, ctx.exp.ppo.batch_size);
    while state.step < steps {
        if maxmin_core::run::interrupted() {
            // The checkpoint must record the metrics written since the last periodic one (and
            // the objective's state), or a resume truncates those lines and repeats no step.
            let ck = checkpoint(job.pol_dir, trainer, state, metrics, objective)?;
            return Err(Error::Interrupted(ck));
        }
        let idx: Vec<usize> = (0..bs)
            .map(|_| state.rng.random_range(0..ctx.train.len()))
            .collect();
        let prompts: Vec<Vec<u32>> = idx.iter().map(|&i| ctx.train[i].1.clone()).collect();
        let gen = gen_options(ctx, &mut state.rng);
        let rollout = trainer.rollout(&prompts, &gen, &mut state.rng)?;
        let br = batch_rewards(job.fz, job.learned, job.cals, &prompts, &rollout.responses)?;
        let mean_kl = rollout.kl_per_sample.iter().map(|k| *k as f64).sum::<f64>()
            / rollout.kl_per_sample.len().max(1) as f64;
        let combined = objective.combine(&Batch {
            group_rewards: &br.groups,
            single_rewards: Some(&br.single),
            mean_kl,
            beta: trainer.beta(),
        })?;
        let stepped = match compare.reward_shaping {
            Shaping::None => trainer.step(&rollout, &combined.rewards),
            Shaping::Prefix => {
                let phi = prefix_scores(job, &*objective, &combined, &prompts, &rollout.responses)?;
                trainer.step_tokens(&rollout, &shaped(&phi, &combined.rewards))
            }
        };
        let stats = stepped
            .map_err(|e| step_failed(job.label, job.seed, state.step + 1, job.pol_dir, e))?;
        state.step += 1;
        let truth: Vec<Completion> = idx
            .iter()
            .zip(&rollout.responses)
            .map(|(&i, r)| score_truth(ctx, &ctx.train[i].0, r))
            .collect::<Result<_>>()?;
        let fields = step_fields(ctx, &stats, &combined, &br.raw_means, &truth);
        let refs: Vec<(&str, f64)> = fields.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        metrics.log(state.step as u64, &refs)?;
        let score = combined.rewards.iter().map(|r| *r as f64).sum::<f64>() / bs as f64;
        progress.update(
            state.step as u64,
            &format!("kl {mean_kl:.2} score {score:.2}"),
        );
        if state.step.is_multiple_of(compare.checkpoint_every) || state.step == steps {
            checkpoint(job.pol_dir, trainer, state, metrics, objective)?;
        }
    }
    Ok(())
}

/// Φ(y<n) for every proper prefix of every response (`[B][n − 1]`, prefixes of 1 … n − 1
/// tokens): the objective's score of the prefix as if it were the whole response, under this
/// batch's decision (`combined`), from the same calibrated learned rewards.
fn prefix_scores(
    job: &PolicyJob,
    objective: &dyn maxmin_core::objective::Objective,
    combined: &maxmin_core::objective::Combined,
    prompts: &[Vec<u32>],
    responses: &[Vec<u32>],
) -> Result<Vec<Vec<f32>>> {
    let (mut pp, mut py) = (Vec::new(), Vec::new());
    for (p, y) in prompts.iter().zip(responses) {
        for j in 1..y.len() {
            pp.push(p.clone());
            py.push(y[..j].to_vec());
        }
    }
    let mut flat = if py.is_empty() {
        vec![]
    } else {
        let br = batch_rewards(job.fz, job.learned, job.cals, &pp, &py)?;
        objective.rescore(combined, &br.groups, Some(&br.single))?
    }
    .into_iter();
    Ok(responses
        .iter()
        .map(|y| flat.by_ref().take(y.len().saturating_sub(1)).collect())
        .collect())
}

/// Potential-based token rewards (Ng et al. 1999, γ = 1): token t of a response of n tokens gets
/// Φ(y≤t) − Φ(y<t) with Φ(empty) = 0 and Φ(y≤n) = its sequence score, so the tokens sum to the
/// score exactly and the return from any token on is the score minus a function of the prefix
/// before it (a baseline: the policy gradient's expectation is unchanged).
fn shaped(phi: &[Vec<f32>], scores: &[f32]) -> Vec<Vec<f32>> {
    phi.iter()
        .zip(scores)
        .map(|(p, &s)| {
            let mut prev = 0.0f32;
            let mut t: Vec<f32> = p
                .iter()
                .map(|&v| {
                    let d = v - prev;
                    prev = v;
                    d
                })
                .collect();
            t.push(s - prev);
            t
        })
        .collect()
}

/// A fresh trainer for `label` × `seed` and its state at step 0 (seeds derived from the root seed).
fn new_trainer(ctx: &Ctx, label: &str, seed: u64) -> Result<(LmPpoTrainer, PolicyState)> {
    let exp = ctx.exp;
    let pseed = maxmin_core::rng::derive_seed(exp.seed, &format!("policy/{label}/{seed}"));
    let policy = LmPolicy::new(ctx.base.clone(), exp.model.lora.as_ref(), pseed)?;
    let trainer = LmPpoTrainer::new(policy, exp.ppo.clone(), pseed)?;
    let state = PolicyState {
        step: 0,
        rng: stream(pseed, "rollouts"),
        metrics_bytes: 0,
    };
    Ok((trainer, state))
}

/// Save a checkpoint that records the metrics written so far and the objective's state (a
/// resume truncates `metrics.jsonl` to the recorded length).
fn checkpoint(
    pol_dir: &Path,
    trainer: &LmPpoTrainer,
    state: &mut PolicyState,
    metrics: &mut Metrics,
    objective: &dyn maxmin_core::objective::Objective,
) -> Result<PathBuf> {
    state.metrics_bytes = metrics.sync()?;
    let ck = save_checkpoint(pol_dir, trainer, state)?;
    write_json_atomic(&ck.join("objective.json"), &objective.state())?;
    Ok(ck)
}

/// Learned rewards of a batch: per group `[K][B]` and single `[B]`, calibrated by `cals`, and
/// each group's raw (uncalibrated) batch mean.
fn batch_rewards(
    fz: &Featurizer,
    learned: &Learned,
    (cal, cal_single): (&Calibration, &Calibration),
    prompts: &[Vec<u32>],
    responses: &[Vec<u32>],
) -> Result<BatchRewards> {
    let (mut g, single) = learned_rewards(learned, &fz.token_rows(prompts, responses)?)?;
    let raw_means: Vec<f64> = g
        .iter()
        .map(|r| r.iter().map(|v| *v as f64).sum::<f64>() / r.len() as f64)
        .collect();
    let mut single = vec![single];
    cal.apply(&mut g);
    cal_single.apply(&mut single);
    Ok(BatchRewards {
        groups: g,
        single: single.pop().unwrap_or_default(),
        raw_means,
    })
}

/// What [`batch_rewards`] returns.
struct BatchRewards {
    /// Per group, per response `[K][B]`.
    groups: Vec<Vec<f32>>,
    /// The single model's, per response.
    single: Vec<f32>,
    /// Each group's raw batch mean.
    raw_means: Vec<f64>,
}

/// Trainer, pipeline state and objective state from checkpoint `ck`.
fn resume(
    ck: &Path,
    trainer: &mut LmPpoTrainer,
    objective: &mut dyn maxmin_core::objective::Objective,
) -> Result<PolicyState> {
    trainer.load(ck)?;
    let t = std::fs::read_to_string(ck.join("pipeline_state.json"))
        .map_err(|e| Error::io(ck.join("pipeline_state.json"), e))?;
    let state: PolicyState = serde_json::from_str(&t)
        .map_err(|e| Error::data(ck.join("pipeline_state.json"), None, e.to_string()))?;
    if let Some(o) = std::fs::read_to_string(ck.join("objective.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        objective.restore(&o)?;
    }
    Ok(state)
}

/// The error (and log line) of a PPO step that failed: the update was not applied, and the last
/// good checkpoint is named.
fn step_failed(label: &str, seed: u64, step: usize, pol_dir: &Path, e: Error) -> Error {
    let last = latest_checkpoint(pol_dir).map_or("none".into(), |p| p.display().to_string());
    tracing::error!(
        "{label} seed {seed}: PPO step {step} failed: {e}; last good checkpoint: {last}"
    );
    Error::Internal(format!(
        "{label} seed {seed}: training stopped at PPO step {step}: {e} (the update was not applied; last good checkpoint: {last})"
    ))
}

/// One PPO step's metrics: the trainer's statistics, per group the objective's utility, the raw
/// learned reward, the ground truth of the batch and the objective's weight, and the batch's
/// worst group and length.
fn step_fields(
    ctx: &Ctx,
    stats: &maxmin_lm::ppo::StepStats,
    combined: &maxmin_core::objective::Combined,
    raw_means: &[f64],
    truth: &[Completion],
) -> Vec<(String, f64)> {
    let mut fields: Vec<(String, f64)> = stats
        .fields()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for (u, name) in ctx.names.iter().enumerate() {
        fields.push((format!("group/{name}/utility"), combined.utilities[u]));
        fields.push((format!("group/{name}/learned_raw"), raw_means[u]));
        if ctx.truth.is_some() {
            let m = truth.iter().map(|c| c.scores[u]).sum::<f64>() / truth.len() as f64;
            fields.push((format!("true/{name}"), m));
        }
        fields.push((format!("objective/weight/{name}"), combined.weights[u]));
    }
    if let Some(s) = combined.selected {
        fields.push(("objective/selected".into(), s as f64));
    }
    let worst = combined
        .utilities
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    fields.push(("objective/worst_group".into(), worst));
    fields.push((
        "env/mean_tokens".into(),
        truth.iter().map(|c| c.tokens as f64).sum::<f64>() / truth.len() as f64,
    ));
    fields
}

/// A trained policy's evaluation: ground-truth summary and its learned rewards per group on the
/// evaluation prompts, with the completions.
fn evaluate_policy(
    ctx: &Ctx,
    learned: &Learned,
    fz: &Featurizer,
    policy: &LmPolicy,
    label: &str,
    seed: u64,
) -> Result<(LmResult, Vec<Completion>)> {
    let (cs, resp) = evaluate(ctx, Some(policy))?;
    let mut r = summarise(ctx, label, seed, &cs);
    let p: Vec<Vec<u32>> = ctx.eval.iter().map(|p| p.1.clone()).collect();
    let (g, _) = learned_rewards(learned, &fz.token_rows(&p, &resp)?)?;
    r.learned = ctx
        .names
        .iter()
        .zip(&g)
        .map(|(n, v)| {
            (
                n.clone(),
                v.iter().map(|x| *x as f64).sum::<f64>() / v.len().max(1) as f64,
            )
        })
        .collect();
    Ok((r, cs))
}

/// The learned reward models as the policies use them.
pub struct Learned {
    /// Pooled model.
    pub single: RewardModel,
    /// Mixture models, reordered so model u matches true group u where groups are known.
    pub mixture: Vec<RewardModel>,
    /// Cluster shares in the same order (utilitarian weights).
    pub shares: Vec<f64>,
}

impl Learned {
    /// The stage's models with the mixture in group order (`reward_stage::cluster_order`).
    fn from_stage(e: RewardEnsemble, main: &Outcome) -> Self {
        let order = reward_stage::cluster_order(main);
        let mut models: Vec<Option<RewardModel>> = e.mixture.into_iter().map(Some).collect();
        Self {
            single: e.single,
            mixture: order.iter().filter_map(|&c| models[c].take()).collect(),
            shares: order.iter().map(|&c| e.shares[c]).collect(),
        }
    }
}

pub use maxmin_core::pipeline::RunOptions;

/// Run the whole pipeline; returns the run directory.
pub fn run_with(
    loaded: &Loaded<LmExperiment>,
    opts: &RunOptions,
    progress: &mut dyn Progress,
    on_dir: impl FnOnce(&Path),
) -> Result<PathBuf> {
    let exp = &loaded.value;
    let run = opts.open_dir(&exp.name, &loaded.resolved, on_dir)?;
    let started = Instant::now();
    let ctx = build_ctx(exp)?;
    tracing::info!(
        "{}: {} training / {} evaluation prompts, groups {:?}",
        exp.name,
        ctx.train.len(),
        ctx.eval.len(),
        ctx.names
    );
    let fz = Featurizer::new(ctx.base.clone(), ctx.pad_id, exp.ppo.batch_size.max(8))
        .with_config(&exp.features, exp.generation.max_new_tokens)
        .map_err(|e| e.under("features"))?;
    let mut domain = Lm {
        ctx: &ctx,
        fz: &fz,
        data: None,
        summary: Value::Null,
        started,
    };
    maxmin_core::pipeline::run(&mut domain, &run, progress)?;
    Ok(run.path.clone())
}

/// The language-model domain of core's pipeline ([`maxmin_core::pipeline::Domain`]): prompts,
/// completions of the reference policy compared by simulated users (or P-Soups), frozen-backbone
/// features, token-level PPO with LoRA, ground truths scored on held-out completions.
struct Lm<'a, 'c> {
    ctx: &'a Ctx<'c>,
    fz: &'a Featurizer,
    /// The main run's labelled comparisons and encoded completions (the ratio sweep relabels the
    /// same pool).
    data: Option<Prepared>,
    /// `summary.json` as far as the stages have written it.
    summary: Value,
    started: Instant,
}

/// What stage 1 of the main run produced.
struct Prepared {
    pool: Option<reward_stage::Pool>,
    bank: reward_stage::Bank,
    scores: HashMap<reward_stage::Key, Vec<f64>>,
}

/// What every policy job reads.
struct Shared {
    learned: Learned,
    cal: Calibration,
    cal_single: Calibration,
}

impl Domain for Lm<'_, '_> {
    type Result = LmResult;
    type Shared = Shared;

    fn settings(&self) -> Result<Settings<'_>> {
        let exp = self.ctx.exp;
        Ok(Settings {
            seed: exp.seed,
            em_seed: maxmin_core::rng::derive_seed(exp.seed, "em"),
            reward_model: RewardSpec::from_config(exp.reward_model.as_ref())?,
            em: &exp.em,
        })
    }

    fn shares(&self) -> Vec<f64> {
        self.ctx
            .exp
            .population
            .as_ref()
            .map(|p| p.shares())
            .unwrap_or_default()
    }

    fn ratio_sweep(&self) -> Vec<f64> {
        match (&self.ctx.exp.population, &self.data) {
            (Some(_), Some(Prepared { pool: Some(_), .. })) => self.ctx.exp.em.ratio_sweep.clone(),
            _ => vec![],
        }
    }

    fn comparisons(
        &mut self,
        shares: &[f64],
        main: Option<MainRun<'_>>,
        progress: &mut dyn Progress,
    ) -> Result<StageData> {
        let ctx = self.ctx;
        let Some(main) = main else {
            // The ratio sweep: the same pool and features, users at other shares.
            let (Some(pop), Some(d)) = (&ctx.exp.population, &self.data) else {
                return Err(Error::Internal(
                    "a ratio sweep without a simulated pool".into(),
                ));
            };
            let pool = d
                .pool
                .as_ref()
                .ok_or_else(|| Error::Internal("a ratio sweep without a pool".into()))?;
            let (train, held) = reward_stage::label(ctx, pop, pool, shares);
            let labelled = reward_stage::Labelled {
                train: &train,
                held: &held,
                bank: &d.bank,
                scores: Some(&d.scores),
            };
            return reward_stage::stage_data(ctx, &labelled);
        };
        let labels = preferences(ctx, main.run, main.metrics, progress)?;
        let (prepared, stats) = encode(
            ctx,
            self.fz,
            labels.pool,
            &labels.train,
            &labels.held,
            labels.stats,
        )?;
        let labelled = reward_stage::Labelled {
            train: &labels.train,
            held: &labels.held,
            bank: &prepared.bank,
            scores: prepared.pool.as_ref().map(|_| &prepared.scores),
        };
        let data = reward_stage::stage_data(ctx, &labelled)?;
        let exp = ctx.exp;
        self.summary = serde_json::json!({
            "name": exp.name,
            "groups": ctx.names,
            "group_shares": group_shares(exp),
            "preferences": stats,
            "comparisons": { "train": labels.train.len(), "held_out": labels.held.len() },
        });
        self.data = Some(prepared);
        Ok(data)
    }

    fn rewards_learned(&mut self, run: &RunDir, main: &Outcome, sweep: &[SweepRow]) -> Result<()> {
        let e = main
            .ensemble
            .as_ref()
            .ok_or_else(|| Error::Internal("the reward stage returned no models".into()))?;
        let dir = run.file("reward_models");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let order = reward_stage::cluster_order(main);
        RewardEnsemble {
            single: e.single.try_clone()?,
            mixture: order
                .iter()
                .map(|&c| e.mixture[c].try_clone())
                .collect::<Result<_>>()?,
            shares: order.iter().map(|&c| e.shares[c]).collect(),
        }
        .save(&dir)?;
        let linear = RewardSpec::from_config(self.ctx.exp.reward_model.as_ref())?
            .hidden
            .is_empty();
        let names = &self.ctx.names;
        let feats = &self
            .data
            .as_ref()
            .ok_or_else(|| Error::Internal("reward models without comparisons".into()))?
            .bank
            .feats;
        let rm = reward_stage::reward_summary(names, main, feats, linear);
        tracing::info!("reward models: {rm}");
        self.summary["reward_models"] = rm;
        self.summary["ratio_sweep"] = Value::Array(
            sweep
                .iter()
                .map(|r| reward_stage::sweep_row(names, r))
                .collect(),
        );
        Ok(())
    }

    fn plan(&self) -> Option<Plan<'_>> {
        let c = self.ctx.exp.compare.as_ref()?;
        let n = c.objectives.len() * c.seeds.len();
        Some(Plan {
            objectives: c.objectives.iter().map(|o| o.as_ref()).collect(),
            seeds: c.seeds.clone(),
            workers: c.workers(n),
            steps: c.steps,
        })
    }

    fn prepare(
        &self,
        ensemble: RewardEnsemble,
        main: &Outcome,
        _run: &RunDir,
        _progress: &mut dyn Progress,
    ) -> Result<Shared> {
        let (ctx, exp) = (self.ctx, self.ctx.exp);
        let learned = Learned::from_stage(ensemble, main);
        // Calibration on reference completions of training prompts.
        let mut crng = stream(exp.seed, "calibration");
        let cal_prompts: Vec<Vec<u32>> = (0..exp.ppo.batch_size.max(64))
            .map(|_| ctx.train[crng.random_range(0..ctx.train.len())].1.clone())
            .collect();
        let cal_resp = complete(ctx, None, &cal_prompts, &mut crng)?;
        let (g, s) = learned_rewards(&learned, &self.fz.token_rows(&cal_prompts, &cal_resp)?)?;
        let mode = exp
            .compare
            .as_ref()
            .map(|c| c.calibrate)
            .unwrap_or_default();
        Ok(Shared {
            learned,
            cal: mode.fit(&g),
            cal_single: mode.fit(&[s]),
        })
    }

    fn train(
        &self,
        shared: &Shared,
        objective: &dyn ObjectiveConfig,
        seed: u64,
        dir: &Path,
        progress: &mut dyn Progress,
    ) -> Result<LmResult> {
        let job = PolicyArgs {
            ctx: self.ctx,
            learned: &shared.learned,
            cal: &shared.cal,
            cal_single: &shared.cal_single,
            fz: self.fz,
        };
        train_policy(&job, objective, seed, dir, progress)
    }

    fn finish(
        &self,
        run: &RunDir,
        _main: &Outcome,
        _sweep: &[SweepRow],
        policies: Option<(&Shared, &[LmResult])>,
    ) -> Result<()> {
        let mut summary = self.summary.clone();
        if let (Some((shared, results)), Some(compare)) = (policies, &self.ctx.exp.compare) {
            let (ref_cs, _) = evaluate(self.ctx, None)?;
            let reference = summarise(self.ctx, "reference", 0, &ref_cs);
            let ref_samples: Vec<Completion> = ref_cs.into_iter().take(compare.samples).collect();
            summary["calibration"] =
                serde_json::json!({ "mixture": shared.cal, "single": shared.cal_single });
            summary["reference"] = serde_json::json!(reference);
            summary["reference_samples"] = serde_json::json!(ref_samples);
            summary["results"] = serde_json::json!(results);
        }
        summary["seconds"] = self.started.elapsed().as_secs_f64().into();
        write_json_atomic(&run.file("summary.json"), &summary)?;
        crate::report::write(&run.path)
    }
}

/// The reference pool (simulation), its labelled comparisons and their statistics — or the
/// P-Soups comparisons; all written to `preferences.jsonl`, the ground truths' correlation to
/// the metrics.
fn preferences(
    ctx: &Ctx,
    run: &RunDir,
    metrics: &mut Metrics,
    progress: &mut dyn Progress,
) -> Result<Labels> {
    let exp = ctx.exp;
    let (pool, train, held, stats) = match &exp.population {
        Some(pop) => {
            let pool = reward_stage::reference_pool(ctx, progress)?;
            let (train, held) = reward_stage::label(ctx, pop, &pool, &pop.shares());
            let stats = pool.stats.clone();
            (Some(pool), train, held, stats)
        }
        None => {
            let d = crate::psoups::load(&exp.preferences.files, &psoups_split(exp))?;
            let stats = serde_json::to_value(&d.stats).unwrap_or(Value::Null);
            (None, d.train, d.held_out, stats)
        }
    };
    let all: Vec<&Comparison> = train.iter().chain(&held).collect();
    let mut w = maxmin_core::prefs::data::PrefWriter::create(&run.file("preferences.jsonl"))?;
    for c in all {
        w.write(c)?;
    }
    w.finish()?;
    if let Some(c) = stats["truth_correlation"].as_object() {
        let line: serde_json::Map<String, Value> = c
            .iter()
            .map(|(k, v)| (format!("preferences/truth_correlation/{k}"), v.clone()))
            .collect();
        metrics.log_value(&Value::Object(line))?;
    }
    Ok(Labels {
        pool,
        train,
        held,
        stats,
    })
}

/// What [`preferences`] produces.
struct Labels {
    /// The scored reference pool (simulation only).
    pool: Option<reward_stage::Pool>,
    train: Vec<Comparison>,
    held: Vec<Comparison>,
    stats: Value,
}

/// Encode every completion users compare (with a pool: the whole pool, since the ratio sweep's
/// users compare pairs the main users may not have); returns the encodings and the statistics
/// with the encoding time added.
fn encode(
    ctx: &Ctx,
    fz: &Featurizer,
    pool: Option<reward_stage::Pool>,
    train: &[Comparison],
    held: &[Comparison],
    mut stats: Value,
) -> Result<(Prepared, Value)> {
    let all: Vec<&Comparison> = train.iter().chain(held).collect();
    let scores: HashMap<reward_stage::Key, Vec<f64>> = pool
        .iter()
        .flat_map(|p| &p.scored)
        .map(|c| ((c.prompt.clone(), c.text.clone()), c.scores.clone()))
        .collect();
    // Recorded text is tokenised; a finished answer ends with EOS, as generated ones do.
    let ids_of = |c: &str, t: &str| -> Result<(Vec<u32>, Vec<u32>)> {
        if let Some(v) = pool
            .as_ref()
            .and_then(|p| p.ids.get(&(c.to_string(), t.to_string())))
        {
            return Ok(v.clone());
        }
        let mut ids = ctx.tok.encode(t)?;
        ids.extend(ctx.base.eos_token_id());
        if ids.is_empty() {
            ids.push(ctx.pad_id);
        }
        Ok((ctx.tok.encode(c)?, ids))
    };
    let linear = RewardSpec::from_config(ctx.exp.reward_model.as_ref())?
        .hidden
        .is_empty();
    let t_feat = Instant::now();
    let bank = match &pool {
        Some(p) => reward_stage::Bank::from_keys(
            fz,
            p.scored
                .iter()
                .map(|c| (c.prompt.clone(), c.text.clone()))
                .collect(),
            &ids_of,
            linear,
        )?,
        None => reward_stage::Bank::new(fz, &all, &ids_of, linear)?,
    };
    let feature_seconds = t_feat.elapsed().as_secs_f64();
    tracing::info!(
        "encoded {} distinct completions ({} features each) in {feature_seconds:.1}s",
        bank.len(),
        bank.feats.dim()
    );
    stats["feature_seconds"] = feature_seconds.into();
    Ok((Prepared { pool, bank, scores }, stats))
}

/// Each simulated group's population share (normalised), by name; null without a population.
fn group_shares(exp: &LmExperiment) -> Value {
    let Some(p) = &exp.population else {
        return Value::Null;
    };
    Value::Object(
        p.groups
            .iter()
            .zip(p.shares())
            .map(|(g, s)| (g.name.clone(), serde_json::json!(s)))
            .collect(),
    )
}

maxmin_core::register_kind!(maxmin_core::pipeline::Kind {
    name: crate::config::KIND,
    doc: "language models: MaxMin-RLHF on completions of prompts (simulated groups or P-Soups), token-level PPO with LoRA",
    run: run_kind,
    check: check_kind,
    report: crate::report::write,
});

fn run_kind(
    path: &Path,
    sets: &[String],
    opts: &RunOptions,
    progress: &mut dyn Progress,
    on_dir: &mut dyn FnMut(&Path),
) -> Result<PathBuf> {
    let exp = maxmin_core::config::load::<LmExperiment>(path, sets)?;
    run_with(&exp, opts, progress, |d| on_dir(d))
}

fn check_kind(path: &Path, sets: &[String]) -> Result<()> {
    check(&maxmin_core::config::load::<LmExperiment>(path, sets)?.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxmin_core::objective::SingleConfig;
    use maxmin_core::run::NoProgress;

    #[test]
    fn shaped_token_rewards_telescope_to_the_score() {
        // Φ of the prefixes of a 4-token and a 1-token response.
        let phi = vec![vec![0.5f32, -0.25, 1.0], vec![]];
        let t = shaped(&phi, &[2.0, -3.0]);
        assert_eq!(t, vec![vec![0.5, -0.75, 1.25, 1.0], vec![-3.0]]);
        for (row, s) in t.iter().zip([2.0f32, -3.0]) {
            assert_eq!(row.iter().sum::<f32>(), s);
        }
    }

    fn fixture(dir: &Path, steps: usize) -> LmExperiment {
        fixture_with(dir, steps, "")
    }

    /// [`fixture`] with extra `[compare]` lines.
    fn fixture_with(dir: &Path, steps: usize, compare: &str) -> LmExperiment {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let prompts = dir.join("p.txt");
        std::fs::write(
            &prompts,
            "the movie\nI loved it\nawful film\nthis was\na b c\n",
        )
        .unwrap();
        let text = format!(
            "kind = \"lm-rlhf\"\nname = \"t\"\n[model]\nmodel = \"{}\"\n[model.lora]\nrank = 2\n\
             [prompts]\npath = \"{}\"\neval = 2\n[generation]\nmax-new-tokens = 6\n\
             [population]\nusers = 4\n[[population.groups]]\nname = \"a\"\nshare = 1\n\
             reward = {{ type = \"conciseness\" }}\n[[population.groups]]\nname = \"b\"\nshare = 1\n\
             reward = {{ type = \"conciseness\" }}\n[ppo]\nbatch-size = 4\nmini-batch-size = 2\n\
             [compare]\nsteps = {steps}\ncheckpoint-every = 2\ncalibrate = false\n{compare}\n\
             [[compare.objectives]]\ntype = \"single\"\n",
            root.join("tests/data/lm/gpt2-noprefix").display(),
            prompts.display()
        );
        maxmin_core::config::load_str::<LmExperiment>(&text, Path::new("t.toml"), &[])
            .unwrap()
            .value
    }

    fn models(fz: &Featurizer, value: Option<f32>) -> Learned {
        let mk = |s: u64| {
            let mut m = RewardModel::new(&[4], fz.reward_features(), &mut stream(s, "rm")).unwrap();
            if let Some(v) = value {
                let t: std::collections::HashMap<String, candle_core::Tensor> = m
                    .tensors("m")
                    .into_iter()
                    .map(|(k, t)| (k, (t.ones_like().unwrap() * v as f64).unwrap()))
                    .collect();
                m.load("m", &t).unwrap();
            }
            m
        };
        Learned {
            single: mk(1),
            mixture: vec![mk(2), mk(3)],
            shares: vec![0.5, 0.5],
        }
    }

    /// A non-finite score stops training with a diagnostic naming the step and the last good
    /// checkpoint, which stays on disk untouched.
    #[test]
    fn non_finite_scores_stop_training_and_keep_the_last_good_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let exp = fixture(dir.path(), 2);
        let ctx = build_ctx(&exp).unwrap();
        let fz = Featurizer::new(ctx.base.clone(), ctx.pad_id, 4);
        let run = RunDir::create("t", Some(&dir.path().join("run"))).unwrap();
        let id = Calibration::identity(2);
        let id1 = Calibration::identity(1);
        let good = models(&fz, None);
        let pol = run.path.join("policies/single__seed1");
        std::fs::create_dir_all(&pol).unwrap();
        let args = |ctx, learned| PolicyArgs {
            ctx,
            learned,
            cal: &id,
            cal_single: &id1,
            fz: &fz,
        };
        train_policy(
            &args(&ctx, &good),
            &SingleConfig {},
            1,
            &pol,
            &mut NoProgress,
        )
        .unwrap();
        let before = std::fs::read(pol.join("checkpoint-000002/pipeline_state.json")).unwrap();
        // Two more steps with rewards that are NaN.
        let exp4 = fixture(dir.path(), 4);
        let ctx4 = build_ctx(&exp4).unwrap();
        let bad = models(&fz, Some(f32::NAN));
        let e = train_policy(
            &args(&ctx4, &bad),
            &SingleConfig {},
            1,
            &pol,
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("PPO step 3") && e.contains("checkpoint-000002"),
            "{e}"
        );
        assert_eq!(
            std::fs::read(pol.join("checkpoint-000002/pipeline_state.json")).unwrap(),
            before
        );
        assert!(latest_checkpoint(&pol)
            .unwrap()
            .ends_with("checkpoint-000002"));
        assert!(!pol.join("result.json").exists());
    }

    /// Token rewards train through the whole pipeline, and change the update: the same seeds
    /// with and without `reward-shaping = "prefix"` end with different adapters.
    #[test]
    fn prefix_shaping_trains_and_changes_the_update() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = vec![];
        for (name, extra) in [("none", ""), ("prefix", "reward-shaping = \"prefix\"")] {
            let exp = fixture_with(dir.path(), 2, extra);
            let ctx = build_ctx(&exp).unwrap();
            let fz = Featurizer::new(ctx.base.clone(), ctx.pad_id, 4);
            let (id, id1) = (Calibration::identity(2), Calibration::identity(1));
            let learned = models(&fz, None);
            let pol = dir.path().join(name);
            std::fs::create_dir_all(&pol).unwrap();
            let args = PolicyArgs {
                ctx: &ctx,
                learned: &learned,
                cal: &id,
                cal_single: &id1,
                fz: &fz,
            };
            let r = train_policy(&args, &SingleConfig {}, 1, &pol, &mut NoProgress).unwrap();
            assert!(r.groups.values().all(|v| v.is_finite()), "{name}");
            params.push(std::fs::read(pol.join("checkpoint-000002/lm_ppo.safetensors")).ok());
        }
        assert!(params[0].is_some(), "checkpoint file name changed");
        assert_ne!(params[0], params[1]);
    }

    /// A completion that is only EOS scores as empty text with zero tokens and still encodes.
    #[test]
    fn eos_only_completion_scores_and_encodes() {
        let dir = tempfile::tempdir().unwrap();
        let exp = fixture(dir.path(), 2);
        let ctx = build_ctx(&exp).unwrap();
        let eos = ctx.base.eos_token_id().unwrap();
        let c = score_truth(&ctx, "the movie", &[eos]).unwrap();
        assert_eq!((c.text.as_str(), c.tokens), ("", 0));
        assert_eq!(c.scores, vec![1.0, 1.0]);
        let fz = Featurizer::new(ctx.base.clone(), ctx.pad_id, 4);
        let x = fz.token_rows(&[vec![5, 6]], &[vec![eos]]).unwrap();
        assert_eq!((x.len(), x[0].len(), x[0][0].len()), (1, 1, fz.dim()));
        assert!(x[0][0].iter().all(|v| v.is_finite()));
        assert!(fz.token_rows(&[vec![5]], &[vec![]]).is_err());
    }
}
