//! The preference stage of a run (docs/architecture.md stages 1–3): build the population, simulate (or
//! read) comparisons, train the single pooled model, run EM (docs/algorithms.md Algorithm 2 plus our
//! additions), train the oracle on the true split, evaluate every model's held-out accuracy per
//! true group, and write metrics, `preferences/*.jsonl`, `reward_models.safetensors`, the
//! summary's `em` object and `report.md`. With `[em] ratio-sweep`, the stage is rerun per
//! majority:minority ratio (same seed, only the shares change) for the report's table and plot.
//!
//! Interrupts: the stage polls [`crate::run::interrupted`] at EM iteration boundaries and stops
//! with [`Error::Interrupted`]; `--resume` restarts the stage from the beginning (it is
//! deterministic, so the result equals an uninterrupted run's).

pub use super::outcome::{GroupAccuracy, Outcome, SweepRow};

use super::data::{read_all, Comparison, PrefWriter, ReadOptions};
use super::diagnostics::match_groups;
use super::em::{
    fit_mixture, fit_model, held_out_log_likelihood, EmConfig, IterStats, MixtureFit,
    RewardEnsemble, UserData,
};
use super::population::{sample_users, PopulationConfig};
use super::reward_model::{accuracy, Encoded, Features, RewardModel, RewardSpec};
use super::simulate::{label, segments, PreferencesConfig};
use crate::env::EnvConfig;
use crate::error::{Error, Result};
use crate::policy::RewardModelConfig;
use crate::rng::stream;
use crate::run::{Metrics, Progress};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// The config sections the stage reads.
pub struct StageConfig<'a> {
    /// `[env]`.
    pub env: &'a dyn EnvConfig,
    /// Root seed.
    pub seed: u64,
    /// `[population]`.
    pub population: &'a PopulationConfig,
    /// `[preferences]`.
    pub preferences: &'a PreferencesConfig,
    /// `[reward-model]`.
    pub reward_model: &'a dyn RewardModelConfig,
    /// `[em]`.
    pub em: &'a EmConfig,
}

/// Cross-section checks `validate` cannot do per section.
pub fn validate(c: &StageConfig) -> Result<()> {
    let k_max = c.em.select_k.iter().copied().max().unwrap_or(c.em.k);
    if c.preferences.data.is_none() && k_max > c.population.users {
        return Err(Error::config(
            "em.k",
            format!(
                "K = {k_max} groups is more than the {} users of [population]",
                c.population.users
            ),
        ));
    }
    if !c.em.ratio_sweep.is_empty()
        && (c.population.groups.len() != 2 || c.preferences.data.is_some())
    {
        return Err(Error::config(
            "em.ratio-sweep",
            "a ratio sweep needs exactly two simulated groups",
        ));
    }
    RewardSpec::from_config(c.reward_model)?;
    let spec = c.env.build().map_err(|e| e.under("env"))?.spec().clone();
    for (i, g) in c.population.groups.iter().enumerate() {
        crate::prefs::group_reward::build(g.reward.as_ref(), &spec)
            .map_err(|e| e.under(&format!("population.groups.{i}.reward")))?;
    }
    Ok(())
}

struct Split {
    train: Vec<Comparison>,
    held_out: Vec<Comparison>,
    skipped: usize,
}

fn simulate(c: &StageConfig, shares: &[f64], out: Option<&Path>) -> Result<Split> {
    let mut env = c.env.build()?;
    let spec = env.spec().clone();
    let obs_dim = spec.observation_space.dim();
    let rewards = c
        .population
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            crate::prefs::group_reward::build(g.reward.as_ref(), &spec)
                .map_err(|e| e.under(&format!("population.groups.{i}.reward")))
        })
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = c.population.groups.iter().map(|g| g.name.clone()).collect();
    let mut rng = stream(c.seed, "population");
    let users = sample_users(c.population.users, shares, "u", &mut rng);
    let held = sample_users(c.population.held_out_users, shares, "h", &mut rng);
    let segs = segments(
        env.as_mut(),
        c.preferences,
        &mut stream(c.seed, "preferences/segments"),
    )?;
    let per = c.population.comparisons_per_user;
    let mut lrng = stream(c.seed, "preferences/labels");
    let train = label(
        &users,
        &names,
        &rewards,
        &segs,
        obs_dim,
        per,
        c.preferences,
        &spec.id,
        &mut lrng,
    );
    let held_out = label(
        &held,
        &names,
        &rewards,
        &segs,
        obs_dim,
        per,
        c.preferences,
        &spec.id,
        &mut lrng,
    );
    let Some(dir) = out else {
        return Ok(Split {
            train,
            held_out,
            skipped: 0,
        });
    };
    // Write the data, then train from what is on disk: the file is the record of the run.
    let opts = ReadOptions {
        width: Some(obs_dim + spec.action_space.dim()),
        skip_bad: false,
    };
    let mut split = Split {
        train: vec![],
        held_out: vec![],
        skipped: 0,
    };
    for (name, cs, dst) in [
        ("train", train, &mut split.train),
        ("held_out", held_out, &mut split.held_out),
    ] {
        let path = dir.join(format!("{name}.jsonl"));
        let mut w = PrefWriter::create(&path)?;
        for x in &cs {
            w.write(x)?;
        }
        w.finish()?;
        *dst = read_all(&path, opts)?.comparisons;
    }
    Ok(split)
}

fn from_file(c: &StageConfig, path: &Path) -> Result<Split> {
    let spec = c.env.build()?.spec().clone();
    let width = spec.observation_space.dim() + spec.action_space.dim();
    let r = read_all(
        path,
        ReadOptions {
            width: Some(width),
            skip_bad: c.preferences.skip_bad,
        },
    )?;
    if r.comparisons.is_empty() {
        return Err(Error::data(path, None, "no comparisons"));
    }
    // Held-out users: a seeded, per-group share of the users (by user, never by comparison).
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for x in &r.comparisons {
        let g = x.group.clone().unwrap_or_default();
        let v = by_group.entry(g).or_default();
        if !v.contains(&x.user) {
            v.push(x.user.clone());
        }
    }
    let mut rng = stream(c.seed, "preferences/held-out");
    let mut held = std::collections::HashSet::new();
    for users in by_group.values_mut() {
        use rand::seq::SliceRandom;
        users.sort();
        users.shuffle(&mut rng);
        let n = (users.len() as f64 * c.preferences.held_out_fraction).round() as usize;
        held.extend(
            users
                .iter()
                .take(n.min(users.len().saturating_sub(1)))
                .cloned(),
        );
    }
    let (held_out, train) = r
        .comparisons
        .into_iter()
        .partition(|x| held.contains(&x.user));
    Ok(Split {
        train,
        held_out,
        skipped: r.skipped,
    })
}

/// Users (in first-seen order), their true groups (if every comparison names a known group),
/// and the encoded comparisons.
fn user_data(
    cs: &[Comparison],
    names: &[String],
    feats: &Features,
) -> Result<(UserData, Vec<String>)> {
    let mut ids: Vec<String> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut user_of = Vec::with_capacity(cs.len());
    let mut truth: Vec<Option<usize>> = Vec::new();
    for x in cs {
        let u = *index.entry(x.user.clone()).or_insert_with(|| {
            ids.push(x.user.clone());
            truth.push(None);
            ids.len() - 1
        });
        user_of.push(u as u32);
        let g = x
            .group
            .as_ref()
            .and_then(|g| names.iter().position(|n| n == g));
        match (truth[u], g) {
            (None, Some(g)) => truth[u] = Some(g),
            (Some(a), Some(b)) if a != b => {
                return Err(Error::input(
                    format!(
                        "user {} appears in groups {} and {}",
                        x.user, names[a], names[b]
                    ),
                    Some("a user belongs to one group".into()),
                ))
            }
            _ => {}
        }
    }
    let truth = truth.into_iter().collect::<Option<Vec<usize>>>();
    let refs: Vec<&Comparison> = cs.iter().collect();
    let n = ids.len();
    Ok((
        UserData::new(Encoded::new(&refs, feats)?, user_of, n, truth),
        ids,
    ))
}

fn rows_of_group(ud: &UserData, g: usize) -> Vec<usize> {
    match &ud.truth {
        Some(t) => (0..ud.users())
            .filter(|&h| t[h] == g)
            .flat_map(|h| ud.rows_of[h].clone())
            .collect(),
        None => vec![],
    }
}

/// What the stage trains and evaluates on, built from the config before any model is fitted.
struct Inputs {
    rspec: RewardSpec,
    feats: Features,
    /// Group names, in config order (a group's index is its true label).
    names: Vec<String>,
    train: UserData,
    /// Training user ids, in the order of `train`'s users.
    train_ids: Vec<String>,
    held: Option<UserData>,
    /// Malformed lines skipped when reading a preference file.
    skipped: usize,
}

/// Build the feature layout, get the comparisons (simulated or read) and encode them per user.
fn prepare(c: &StageConfig, shares: &[f64], out: Option<&Path>) -> Result<Inputs> {
    let env_spec = c.env.build()?.spec().clone();
    let rspec = RewardSpec::from_config(c.reward_model)?;
    let feats = Features {
        obs_dim: env_spec.observation_space.dim(),
        action_space: env_spec.action_space.clone(),
        squares: rspec.squares,
    };
    let names: Vec<String> = c.population.groups.iter().map(|g| g.name.clone()).collect();
    let split = match &c.preferences.data {
        Some(p) => from_file(c, p)?,
        None => simulate(c, shares, out)?,
    };
    let (train, train_ids) = user_data(&split.train, &names, &feats)?;
    let held = if split.held_out.is_empty() {
        None
    } else {
        Some(user_data(&split.held_out, &names, &feats)?.0)
    };
    Ok(Inputs {
        rspec,
        feats,
        names,
        train,
        train_ids,
        held,
        skipped: split.skipped,
    })
}

/// Groups with no user in the training data (empty when the true groups are unknown).
fn absent_groups(inp: &Inputs) -> Vec<String> {
    match &inp.train.truth {
        Some(t) => inp
            .names
            .iter()
            .enumerate()
            .filter(|(g, _)| !t.contains(g))
            .map(|(_, n)| n.clone())
            .collect(),
        None => vec![],
    }
}

/// Where EM's iterations are reported: metrics, the progress bar, and the interrupt check.
struct EmHooks<'a> {
    log: Option<&'a mut Metrics>,
    progress: &'a mut dyn Progress,
    interrupt_dir: &'a Path,
}

/// One fitted K: the K, its fit and its held-out log-likelihood (when there is held-out data).
type Candidate = (usize, MixtureFit, Option<f64>);

/// Fit the mixture at every candidate K (`[em] select-k`, else just `[em] k`).
fn fit_candidates(c: &StageConfig, inp: &Inputs, hooks: EmHooks) -> Result<Vec<Candidate>> {
    let EmHooks {
        mut log,
        progress,
        interrupt_dir,
    } = hooks;
    let ks = if c.em.select_k.is_empty() {
        vec![c.em.k]
    } else {
        c.em.select_k.clone()
    };
    let total = (ks.len() * c.em.restarts * c.em.max_iterations) as u64;
    progress.start("EM", total, 0);
    let mut step = 0u64;
    let mut fits: Vec<Candidate> = Vec::new();
    for &k in &ks {
        let mut on_iter = |s: &IterStats| -> Result<()> {
            step += 1;
            progress.update(
                step,
                &format!(
                    "K={k} restart {} iter {} ll {:.1}",
                    s.restart, s.iteration, s.log_likelihood
                ),
            );
            if let Some(m) = log.as_deref_mut() {
                m.log_value(&s.metrics_line(step))?;
            }
            if crate::run::interrupted() {
                return Err(Error::Interrupted(interrupt_dir.to_path_buf()));
            }
            Ok(())
        };
        let fit = fit_mixture(
            &inp.train,
            k,
            &inp.rspec,
            &inp.feats,
            c.em,
            c.seed,
            &mut on_iter,
        )?;
        let hll = match &inp.held {
            Some(h) => Some(held_out_log_likelihood(&fit.models, &fit.weights, h)?),
            None => None,
        };
        fits.push((k, fit, hll));
    }
    progress.finish();
    Ok(fits)
}

/// The EM fit kept after choosing K, with what the summary reports about the choice.
struct Selected {
    k: usize,
    fit: MixtureFit,
    /// `k_candidates` of the summary: every candidate's log-likelihoods.
    by_k: Vec<Value>,
}

/// Keep the candidate [`select_k`] picks.
fn select(c: &StageConfig, mut fits: Vec<Candidate>) -> Selected {
    let by_k: Vec<Value> = fits.iter().map(|(k, f, h)| json!({"k": k, "train_log_likelihood": f.log_likelihood, "held_out_log_likelihood": h})).collect();
    let best = select_k(&fits, c.em.select_k_margin);
    let (k, fit, _) = fits.swap_remove(best);
    Selected { k, fit, by_k }
}

/// With `[em] oracle`, one model per true group trained on that group's users (`None` for a
/// group without training data); empty otherwise.
fn fit_oracles(c: &StageConfig, inp: &Inputs) -> Result<Vec<Option<RewardModel>>> {
    if !c.em.oracle {
        return Ok(vec![]);
    }
    (0..inp.names.len())
        .map(|g| {
            let rows = rows_of_group(&inp.train, g);
            if rows.is_empty() {
                return Ok(None);
            }
            fit_model(
                &inp.train,
                &rows,
                &inp.rspec,
                &inp.feats,
                &mut stream(c.seed, &format!("oracle/{g}")),
            )
            .map(Some)
        })
        .collect()
}

/// Held-out accuracy per true group of the three kinds of model.
struct Accuracies {
    single: GroupAccuracy,
    mixture: GroupAccuracy,
    oracle: GroupAccuracy,
}

/// Evaluate the single model, the mixture model matched to each group (`matching`: cluster of
/// each group) and the oracles on the held-out users of each group.
fn held_out_accuracy(
    inp: &Inputs,
    single: &RewardModel,
    fit: &MixtureFit,
    matching: &[Option<usize>],
    oracle: &[Option<RewardModel>],
) -> Result<Accuracies> {
    let mut acc = Accuracies {
        single: GroupAccuracy::new(),
        mixture: GroupAccuracy::new(),
        oracle: GroupAccuracy::new(),
    };
    let Some(h) = &inp.held else {
        return Ok(acc);
    };
    let ds = single.diffs(&h.data)?;
    let dm: Vec<Vec<f32>> = fit
        .models
        .iter()
        .map(|m| m.diffs(&h.data))
        .collect::<Result<_>>()?;
    for (g, name) in inp.names.iter().enumerate() {
        let rows = rows_of_group(h, g);
        if rows.is_empty() {
            continue;
        }
        acc.single.insert(name.clone(), accuracy(&ds, &rows));
        if let Some(cl) = matching[g] {
            acc.mixture.insert(name.clone(), accuracy(&dm[cl], &rows));
        }
        if let Some(Some(o)) = oracle.get(g) {
            acc.oracle
                .insert(name.clone(), accuracy(&o.diffs(&h.data)?, &rows));
        }
    }
    Ok(acc)
}

/// The summary's `em` object beyond the [`Outcome`] fields.
fn detail(
    inp: &Inputs,
    sel: &Selected,
    matching: &[Option<usize>],
    absent: &[String],
    t0: Instant,
) -> Value {
    let (k, fit, held) = (sel.k, &sel.fit, &inp.held);
    let sizes: Vec<usize> = (0..k)
        .map(|c| fit.assign.iter().filter(|&&a| a == c).count())
        .collect();
    let assignment: BTreeMap<&String, usize> = inp
        .train_ids
        .iter()
        .zip(fit.assign.iter().copied())
        .collect();
    json!({
        "k_candidates": sel.by_k,
        "log_likelihood": fit.log_likelihood,
        "restart": fit.restart,
        "restart_log_likelihoods": fit.restart_log_likelihoods,
        "empty_cluster_events": fit.empty_events,
        "group_sizes": sizes,
        "mixing_weights": fit.weights,
        "cluster_of_group": inp.names.iter().zip(matching).map(|(n, m)| (n.clone(), json!(m))).collect::<BTreeMap<_, _>>(),
        "absent_groups": absent,
        "users": {"train": inp.train.users(), "held_out": held.as_ref().map_or(0, |h| h.users())},
        "comparisons": {"train": inp.train.data.m, "held_out": held.as_ref().map_or(0, |h| h.data.m)},
        "skipped_lines": inp.skipped,
        "assignment": assignment,
        "wall_time_s": t0.elapsed().as_secs_f64(),
    })
}

/// Run the stage once at `shares`; `log` receives per-iteration metrics (main run only), `out`
/// is where the data files go (main run only).
pub fn run_once(
    c: &StageConfig,
    shares: &[f64],
    log: Option<&mut Metrics>,
    out: Option<&Path>,
    progress: &mut dyn Progress,
    interrupt_dir: &Path,
) -> Result<Outcome> {
    let t0 = Instant::now();
    let inp = prepare(c, shares, out)?;
    let absent = absent_groups(&inp);
    if !absent.is_empty() {
        tracing::warn!("groups absent from the training data: {absent:?} (their oracle and accuracy are reported as null)");
    }
    let all: Vec<usize> = (0..inp.train.data.m).collect();
    let single = fit_model(
        &inp.train,
        &all,
        &inp.rspec,
        &inp.feats,
        &mut stream(c.seed, "single"),
    )?;
    let hooks = EmHooks {
        log,
        progress,
        interrupt_dir,
    };
    let sel = select(c, fit_candidates(c, &inp, hooks)?);
    let oracle = fit_oracles(c, &inp)?;
    let groups = inp.names.len();
    let matching = match &inp.train.truth {
        Some(t) => match_groups(&sel.fit.assign, t, sel.k, groups),
        None => vec![None; groups],
    };
    let acc = held_out_accuracy(&inp, &single, &sel.fit, &matching, &oracle)?;
    let truth = inp.train.truth.as_ref();
    let ari = truth.map(|t| super::diagnostics::ari(&sel.fit.assign, t));
    let purity = truth.map(|t| super::diagnostics::purity(&sel.fit.assign, t));
    let detail = detail(&inp, &sel, &matching, &absent, t0);
    let Selected { k, fit, .. } = sel;
    Ok(Outcome {
        shares: shares.to_vec(),
        k,
        ari,
        purity,
        iterations: fit.iterations,
        converged: fit.converged,
        single: acc.single,
        mixture: acc.mixture,
        oracle: acc.oracle,
        detail,
        history: fit.history,
        ensemble: Some(RewardEnsemble {
            single,
            shares: fit.weights.clone(),
            mixture: fit.models,
        }),
    })
}

/// The K to keep among fitted candidates: the best held-out log-likelihood, except that a fit
/// that ended with an empty cluster is not eligible while another is (the data did not support
/// K clusters), and a larger K must beat every smaller eligible one by more than `margin` nats.
fn select_k(fits: &[(usize, MixtureFit, Option<f64>)], margin: f64) -> usize {
    if fits.len() == 1 {
        return 0;
    }
    let empty = |f: &MixtureFit| {
        let k = f.models.len();
        (0..k).any(|c| !f.assign.contains(&c))
    };
    let mut order: Vec<usize> = (0..fits.len()).filter(|&i| !empty(&fits[i].1)).collect();
    if order.is_empty() {
        order = (0..fits.len()).collect();
    }
    order.sort_by_key(|&i| fits[i].0);
    let score = |i: usize| fits[i].2.unwrap_or(f64::NEG_INFINITY);
    let mut best = order[0];
    for &i in &order[1..] {
        if score(i) > score(best) + margin {
            best = i;
        }
    }
    best
}

/// The whole stage: the main run, then the ratio sweep. Returns the summary's `em` object and
/// the main run's trained reward models (for the policy stage).
pub fn run(
    c: &StageConfig,
    run_dir: &Path,
    metrics: &mut Metrics,
    progress: &mut dyn Progress,
) -> Result<(Value, Option<RewardEnsemble>)> {
    let t0 = Instant::now();
    let shares = c.population.shares();
    let mut main = run_once(
        c,
        &shares,
        Some(metrics),
        Some(&run_dir.join("preferences")),
        progress,
        &run_dir.join("checkpoints"),
    )?;
    if let Some(e) = &main.ensemble {
        e.save(run_dir)?;
    }
    let mut sweep = Vec::new();
    for &r in &c.em.ratio_sweep {
        tracing::info!("ratio sweep: {r}:1");
        let s = [r / (r + 1.0), 1.0 / (r + 1.0)];
        let mut o = run_once(c, &s, None, None, progress, &run_dir.join("checkpoints"))?;
        o.ensemble = None;
        sweep.push(SweepRow {
            ratio: r,
            outcome: o,
        });
    }
    let names: Vec<String> = c.population.groups.iter().map(|g| g.name.clone()).collect();
    super::report::write(run_dir, &names, &main, &sweep)?;
    let mut em = serde_json::to_value(&main).map_err(|e| Error::Internal(e.to_string()))?;
    em["ratio_sweep"] = serde_json::to_value(&sweep).map_err(|e| Error::Internal(e.to_string()))?;
    em["wall_time_s"] = json!(t0.elapsed().as_secs_f64());
    Ok((em, main.ensemble.take()))
}
