//! The reward stage of every MaxMin-RLHF run (docs/architecture.md stages 2–3), whatever the
//! domain: on the comparisons a [`crate::pipeline::Domain`] encodes ([`StageData`]), train the
//! single pooled model, run EM (docs/algorithms.md Algorithm 2 plus our additions) at every
//! candidate K and keep one (`[em] select-k`), train the oracle on the true split, match clusters
//! to true groups, and evaluate every model's held-out accuracy per true group — beside the ground
//! truths' own accuracy on the same labels when the domain knows them. The pipeline
//! ([`crate::pipeline::run`]) calls [`learn`] once at the configured shares and once per ratio of
//! `[em] ratio-sweep`.
//!
//! Interrupts: [`learn`] polls [`crate::run::interrupted`] at EM iteration boundaries and stops
//! with [`Error::Interrupted`]; `--resume` restarts the stage from the beginning (it is
//! deterministic, so the result equals an uninterrupted run's).

pub use super::outcome::{GroupAccuracy, Outcome, SweepRow};

use super::diagnostics::match_groups;
use super::em::{
    fit_mixture, fit_model, held_out_log_likelihood, EmConfig, IterStats, MixtureFit,
    RewardEnsemble, UserData,
};
use super::reward_model::{accuracy, Features, RewardModel, RewardSpec};
use crate::error::{Error, Result};
use crate::rng::stream;
use crate::run::{Metrics, Progress};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// The settings the stage reads.
pub struct Settings<'a> {
    /// Root seed: the single model's and the oracles' streams derive from it.
    pub seed: u64,
    /// Seed of EM's restarts. The control domain passes the root seed, the text domain a stream
    /// derived from it (`derive_seed(seed, "em")`); each keeps its recorded results.
    pub em_seed: u64,
    /// `[reward-model]`.
    pub reward_model: RewardSpec,
    /// `[em]`.
    pub em: &'a EmConfig,
}

/// Comparisons a domain hands to the stage, encoded per user.
pub struct StageData {
    /// True group names, in config order (a group's index is its true label).
    pub names: Vec<String>,
    /// Feature layout of the encoded comparisons.
    pub feats: Features,
    /// Training comparisons by user.
    pub train: UserData,
    /// Training user ids, in the order of `train`'s users.
    pub train_ids: Vec<String>,
    /// Held-out comparisons by user, if any.
    pub held: Option<UserData>,
    /// Malformed lines skipped when reading a preference file.
    pub skipped: usize,
    /// Ground-truth score differences (chosen − rejected, under the comparison's user's group's
    /// truth) of the held-out comparisons, when the domain knows its groups' truths: their
    /// accuracy on the same noisy labels is the ceiling any learned model can reach.
    pub truth_diffs: Option<Vec<f32>>,
}

/// Where EM's iterations are reported: metrics (the main run only), the progress bar, and the
/// directory an interrupt names.
pub struct EmHooks<'a> {
    /// The run's metrics, or `None` (the ratio sweep).
    pub log: Option<&'a mut Metrics>,
    /// Progress bar.
    pub progress: &'a mut dyn Progress,
    /// Reported by [`Error::Interrupted`].
    pub interrupt_dir: &'a Path,
}

/// Groups with no user in the training data (empty when the true groups are unknown).
fn absent_groups(inp: &StageData) -> Vec<String> {
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

/// One fitted K: the K, its fit and its held-out log-likelihood (when there is held-out data).
type Candidate = (usize, MixtureFit, Option<f64>);

/// Fit the mixture at every candidate K (`[em] select-k`, else just `[em] k`).
fn fit_candidates(c: &Settings, inp: &StageData, hooks: EmHooks) -> Result<Vec<Candidate>> {
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
            &c.reward_model,
            &inp.feats,
            c.em,
            c.em_seed,
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
fn select(c: &Settings, mut fits: Vec<Candidate>) -> Selected {
    let by_k: Vec<Value> = fits.iter().map(|(k, f, h)| json!({"k": k, "train_log_likelihood": f.log_likelihood, "held_out_log_likelihood": h})).collect();
    let best = select_k(&fits, c.em.select_k_margin);
    let (k, fit, _) = fits.swap_remove(best);
    Selected { k, fit, by_k }
}

/// With `[em] oracle`, one model per true group trained on that group's users (`None` for a
/// group without training data); empty otherwise.
fn fit_oracles(c: &Settings, inp: &StageData) -> Result<Vec<Option<RewardModel>>> {
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
                &c.reward_model,
                &inp.feats,
                &mut stream(c.seed, &format!("oracle/{g}")),
            )
            .map(Some)
        })
        .collect()
}

/// Held-out accuracy per true group of each kind of model.
struct Accuracies {
    single: GroupAccuracy,
    mixture: GroupAccuracy,
    oracle: GroupAccuracy,
    truth: GroupAccuracy,
    comparisons: BTreeMap<String, usize>,
}

/// Evaluate the single model, the mixture model matched to each group (`matching`: cluster of
/// each group), the oracles and the ground truths on the held-out users of each group.
fn held_out_accuracy(
    inp: &StageData,
    single: &RewardModel,
    fit: &MixtureFit,
    matching: &[Option<usize>],
    oracle: &[Option<RewardModel>],
) -> Result<Accuracies> {
    let mut acc = Accuracies {
        single: GroupAccuracy::new(),
        mixture: GroupAccuracy::new(),
        oracle: GroupAccuracy::new(),
        truth: GroupAccuracy::new(),
        comparisons: BTreeMap::new(),
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
        acc.comparisons.insert(name.clone(), rows.len());
        acc.single.insert(name.clone(), accuracy(&ds, &rows));
        if let Some(cl) = matching[g] {
            acc.mixture.insert(name.clone(), accuracy(&dm[cl], &rows));
        }
        if let Some(Some(o)) = oracle.get(g) {
            acc.oracle
                .insert(name.clone(), accuracy(&o.diffs(&h.data)?, &rows));
        }
        if let Some(d) = &inp.truth_diffs {
            acc.truth.insert(name.clone(), accuracy(d, &rows));
        }
    }
    Ok(acc)
}

/// The summary's `em` object beyond the [`Outcome`] fields.
fn detail(
    inp: &StageData,
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

/// Run the stage once on `inp` (encoded at group `shares`): the single model, EM with K
/// selection, the oracles, the cluster ↔ group matching and every held-out accuracy.
pub fn learn(c: &Settings, inp: &StageData, shares: &[f64], hooks: EmHooks) -> Result<Outcome> {
    let t0 = Instant::now();
    let absent = absent_groups(inp);
    if !absent.is_empty() {
        tracing::warn!("groups absent from the training data: {absent:?} (their oracle and accuracy are reported as null)");
    }
    let all: Vec<usize> = (0..inp.train.data.m).collect();
    let single = fit_model(
        &inp.train,
        &all,
        &c.reward_model,
        &inp.feats,
        &mut stream(c.seed, "single"),
    )?;
    let t_single = t0.elapsed().as_secs_f64();
    let sel = select(c, fit_candidates(c, inp, hooks)?);
    let t_em = t0.elapsed().as_secs_f64() - t_single;
    let oracle = fit_oracles(c, inp)?;
    let groups = inp.names.len();
    let matching = match &inp.train.truth {
        Some(t) => match_groups(&sel.fit.assign, t, sel.k, groups),
        None => vec![None; groups],
    };
    let acc = held_out_accuracy(inp, &single, &sel.fit, &matching, &oracle)?;
    let truth = inp.train.truth.as_ref();
    let ari = truth.map(|t| super::diagnostics::ari(&sel.fit.assign, t));
    let purity = truth.map(|t| super::diagnostics::purity(&sel.fit.assign, t));
    let detail = detail(inp, &sel, &matching, &absent, t0);
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
        truth: acc.truth,
        held_out_comparisons: acc.comparisons,
        matching,
        seconds: [t_single, t_em, t0.elapsed().as_secs_f64()],
        detail,
        history: fit.history,
        ensemble: Some(RewardEnsemble {
            single,
            shares: fit.weights.clone(),
            mixture: fit.models,
        }),
    })
}

/// The rows of `ud` whose user is in true group `g` (none when the groups are unknown).
fn rows_of_group(ud: &UserData, g: usize) -> Vec<usize> {
    match &ud.truth {
        Some(t) => (0..ud.users())
            .filter(|&h| t[h] == g)
            .flat_map(|h| ud.rows_of[h].clone())
            .collect(),
        None => vec![],
    }
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
