//! The preference and reward-model stages of the LM pipeline (docs/algorithms.md, experiment 1; docs/architecture.md
//! stages 1–3):
//!
//! 1. **reference pool**: two completions per pool prompt from the reference policy, each scored
//!    by every group's ground truth; the groups' ground truths' Pearson correlation over the pool
//!    is recorded (docs/lm-rlhf.md, "Ground truths");
//! 2. **labels**: each simulated user labels pool pairs with a Bradley–Terry draw on their
//!    group's ground truth (core's `bt_prefers_first`), or recorded P-Soups comparisons are read;
//! 3. **features**: every distinct (prompt, completion) is encoded once by the frozen backbone
//!    ([`crate::features`]); a linear head keeps only one feature sum per completion
//!    (`Encoded::from_sums`), an MLP head the per-token rows;
//! 4. **reward models**: the single pooled BT model, the EM mixture (core's `fit_mixture`, the
//!    paper's Algorithm 2) and, with `[em] oracle`, one model per true group trained on the true
//!    split; held-out pairwise accuracy per true group of each, beside the **oracle**: the
//!    group's own ground truth predicting the same noisy held-out labels (the ceiling any learned
//!    model can reach given the BT noise), scored by the same `accuracy` as the models.
//!
//! With `[em] ratio-sweep`, stages 2 and 4 are rerun per majority:minority ratio on the same pool
//! and features (only the users' shares change), as the control stage does; the report's table
//! and plot are core's (`maxmin_core::prefs::report::sweep_section`).

use crate::config::TextPopulation;
use crate::context::{complete, content_len, score_truth, Completion, Ctx};
use crate::features::Featurizer;
use maxmin_core::prefs::data::{Comparison, Segment};
use maxmin_core::prefs::diagnostics::{ari, match_groups, purity};
use maxmin_core::prefs::em::{fit_mixture, fit_model, IterStats, UserData};
use maxmin_core::prefs::population::{sample_users, User};
use maxmin_core::prefs::reward_model::{accuracy, Encoded, Features, RewardModel, RewardSpec};
use maxmin_core::prefs::simulate::bt_prefers_first;
use maxmin_core::rng::stream;
use maxmin_core::run::{Metrics, Progress};
use maxmin_core::{Error, Result};
use rand::seq::SliceRandom;
use rand::Rng as _;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// (prompt text, completion text): how a completion is looked up.
pub type Key = (String, String);

/// The scored reference completions users compare (simulation).
pub struct Pool {
    /// Two completions per pool prompt, in pairs `(2j, 2j + 1)`.
    pub scored: Vec<Completion>,
    /// (prompt, completion) → (prompt ids, completion ids with EOS where generation stopped).
    pub ids: HashMap<Key, (Vec<u32>, Vec<u32>)>,
    /// Pool statistics for `summary.json` (mean scores, length, EOS rate, correlation).
    pub stats: Value,
}

/// Pearson correlation of `a` and `b` (NaN when either is constant).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// Pearson correlation of every pair of groups' ground truths over `cs`, keyed `a~b`.
pub fn truth_correlations(names: &[String], cs: &[Completion]) -> BTreeMap<String, f64> {
    let col = |g: usize| cs.iter().map(|c| c.scores[g]).collect::<Vec<f64>>();
    let mut out = BTreeMap::new();
    for i in 0..names.len() {
        for j in i + 1..names.len() {
            out.insert(
                format!("{}~{}", names[i], names[j]),
                pearson(&col(i), &col(j)),
            );
        }
    }
    out
}

/// Generate and score the reference pool (two completions for each of `pool` training prompts).
pub fn reference_pool(ctx: &Ctx, progress: &mut dyn Progress) -> Result<Pool> {
    let mut rng = stream(ctx.exp.seed, "preferences");
    let pool: Vec<usize> = {
        let mut idx: Vec<usize> = (0..ctx.train.len()).collect();
        idx.shuffle(&mut rng);
        idx.truncate(ctx.exp.preferences.pool);
        idx
    };
    let prompt_ids: Vec<Vec<u32>> = pool
        .iter()
        .flat_map(|&i| [ctx.train[i].1.clone(), ctx.train[i].1.clone()])
        .collect();
    progress.start("reference completions", prompt_ids.len() as u64, 0);
    let mut gen_rng = stream(ctx.exp.seed, "preferences/generate");
    let mut resp = Vec::with_capacity(prompt_ids.len());
    for chunk in prompt_ids.chunks(ctx.exp.ppo.batch_size.max(1)) {
        resp.extend(complete(ctx, None, chunk, &mut gen_rng)?);
        progress.update(resp.len() as u64, "");
    }
    progress.finish();
    let prompt_of = |k: usize| pool[k / 2];
    let scored: Vec<Completion> = (0..resp.len())
        .map(|k| score_truth(ctx, &ctx.train[prompt_of(k)].0, &resp[k]))
        .collect::<Result<_>>()?;
    let mut ids = HashMap::new();
    for (k, c) in scored.iter().enumerate() {
        ids.entry((c.prompt.clone(), c.text.clone()))
            .or_insert_with(|| (ctx.train[prompt_of(k)].1.clone(), resp[k].clone()));
    }
    let n_f = scored.len().max(1) as f64;
    let mean = |g: usize| scored.iter().map(|c| c.scores[g]).sum::<f64>() / n_f;
    let stats = json!({
        "pool_prompts": pool.len(),
        "reference_mean_scores": ctx.names.iter().enumerate().map(|(g, n)| (n.clone(), mean(g))).collect::<BTreeMap<_, _>>(),
        "reference_score_sd": ctx.names.iter().enumerate().map(|(g, n)| {
            let m = mean(g);
            (n.clone(), (scored.iter().map(|c| (c.scores[g] - m).powi(2)).sum::<f64>() / n_f).sqrt())
        }).collect::<BTreeMap<_, _>>(),
        "reference_mean_tokens": scored.iter().map(|c| c.tokens as f64).sum::<f64>() / n_f,
        "reference_eos_rate": resp.iter().filter(|r| content_len(ctx, r) < r.len()).count() as f64 / n_f,
        "truth_correlation": truth_correlations(&ctx.names, &scored),
    });
    Ok(Pool { scored, ids, stats })
}

/// Training and held-out comparisons of users drawn at `shares` (each user labels
/// `comparisons-per-user` random pool pairs with a Bradley–Terry draw on their group's truth).
pub fn label(
    ctx: &Ctx,
    pop: &TextPopulation,
    pool: &Pool,
    shares: &[f64],
) -> (Vec<Comparison>, Vec<Comparison>) {
    let p = &ctx.exp.preferences;
    let mut urng = stream(ctx.exp.seed, "users");
    let users = sample_users(pop.users, shares, "u", &mut urng);
    let held_users = sample_users(pop.held_out_users, shares, "h", &mut urng);
    let mut rng = stream(ctx.exp.seed, "preferences/labels");
    let pairs = pool.scored.len() / 2;
    let mut label = |users: &[User]| -> Vec<Comparison> {
        let mut out = Vec::new();
        for u in users {
            for _ in 0..pop.comparisons_per_user {
                let j = rng.random_range(0..pairs);
                let (a, b) = (&pool.scored[2 * j], &pool.scored[2 * j + 1]);
                let a_wins = bt_prefers_first(
                    a.scores[u.group] - b.scores[u.group],
                    p.temperature,
                    p.label_noise,
                    &mut rng,
                );
                let (w, l) = if a_wins { (a, b) } else { (b, a) };
                out.push(Comparison {
                    user: u.id.clone(),
                    context: Value::from(a.prompt.as_str()),
                    chosen: Segment::Text(w.text.clone()),
                    rejected: Segment::Text(l.text.clone()),
                    group: Some(ctx.names[u.group].clone()),
                });
            }
        }
        out
    };
    let train = label(&users);
    let held = label(&held_users);
    (train, held)
}

/// `(context, completion text)` → (prompt ids, completion ids).
pub type IdsOf<'a> = dyn Fn(&str, &str) -> Result<(Vec<u32>, Vec<u32>)> + 'a;

/// Features of every distinct (context, completion) of some comparisons, computed once: one
/// feature sum per completion for a linear head, the per-token rows for an MLP.
pub struct Bank {
    index: HashMap<Key, usize>,
    sums: Option<Vec<Vec<f32>>>,
    rows: Option<Vec<Vec<Vec<f32>>>>,
    /// Feature description for the heads.
    pub feats: Features,
}

fn key_of(c: &Comparison, seg: &Segment) -> Result<Key> {
    let Segment::Text(t) = seg else {
        return Err(Error::Internal("text comparison expected".into()));
    };
    Ok((
        c.context.as_str().unwrap_or_default().to_string(),
        t.clone(),
    ))
}

impl Bank {
    /// Encode the distinct completions of `cs` with `fz` (`linear`: keep sums only).
    pub fn new(fz: &Featurizer, cs: &[&Comparison], ids_of: &IdsOf, linear: bool) -> Result<Self> {
        let mut keys = Vec::new();
        for c in cs {
            for seg in [&c.chosen, &c.rejected] {
                keys.push(key_of(c, seg)?);
            }
        }
        Self::from_keys(fz, keys, ids_of, linear)
    }

    /// Encode the distinct completions `keys` (duplicates are encoded once).
    pub fn from_keys(
        fz: &Featurizer,
        keys: Vec<Key>,
        ids_of: &IdsOf,
        linear: bool,
    ) -> Result<Self> {
        if fz.has_token_counts() && !linear {
            return Err(Error::config(
                "features.token-counts",
                "token counts need a linear head ([reward-model] type = \"linear-reward\")",
            ));
        }
        let mut index = HashMap::new();
        let (mut prompts, mut comps) = (Vec::new(), Vec::new());
        for key in keys {
            if let std::collections::hash_map::Entry::Vacant(e) = index.entry(key) {
                let (p, ids) = ids_of(&e.key().0, &e.key().1)?;
                prompts.push(p);
                comps.push(ids);
                e.insert(comps.len() - 1);
            }
        }
        let (sums, rows) = if linear {
            (Some(fz.completion_sums(&prompts, &comps)?), None)
        } else {
            (None, Some(fz.token_rows(&prompts, &comps)?))
        };
        Ok(Self {
            index,
            sums,
            rows,
            feats: fz.reward_features(),
        })
    }

    /// Number of distinct completions encoded.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing was encoded.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn at(&self, c: &Comparison, seg: &Segment) -> Result<usize> {
        let key = key_of(c, seg)?;
        self.index
            .get(&key)
            .copied()
            .ok_or_else(|| Error::Internal(format!("completion {:?} was not encoded", key.1)))
    }

    /// The comparisons `cs` encoded for the heads.
    fn encode(&self, cs: &[Comparison]) -> Result<Encoded> {
        if let Some(sums) = &self.sums {
            let mut flat = Vec::with_capacity(cs.len() * 2 * self.feats.dim());
            for c in cs {
                flat.extend_from_slice(&sums[self.at(c, &c.chosen)?]);
                flat.extend_from_slice(&sums[self.at(c, &c.rejected)?]);
            }
            return Encoded::from_sums(flat, cs.len(), &self.feats);
        }
        let rows = self.rows.as_deref().unwrap_or_default();
        let cs: Vec<Comparison> = cs
            .iter()
            .map(|c| {
                Ok(Comparison {
                    user: c.user.clone(),
                    context: Value::Null,
                    chosen: Segment::Rows(rows[self.at(c, &c.chosen)?].clone()),
                    rejected: Segment::Rows(rows[self.at(c, &c.rejected)?].clone()),
                    group: c.group.clone(),
                })
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Comparison> = cs.iter().collect();
        Encoded::new(&refs, &self.feats)
    }

    /// Comparisons grouped by user (first-seen order), with true groups when every comparison
    /// names a known one.
    pub fn user_data(&self, cs: &[Comparison], names: &[String]) -> Result<UserData> {
        let mut ids: Vec<String> = Vec::new();
        let mut index = BTreeMap::new();
        let mut truth = Vec::new();
        let mut user_of = Vec::with_capacity(cs.len());
        for c in cs {
            let u = *index.entry(c.user.clone()).or_insert_with(|| {
                ids.push(c.user.clone());
                truth.push(
                    c.group
                        .as_ref()
                        .and_then(|g| names.iter().position(|n| n == g)),
                );
                ids.len() - 1
            });
            user_of.push(u as u32);
        }
        let truth = truth.into_iter().collect::<Option<Vec<usize>>>();
        Ok(UserData::new(self.encode(cs)?, user_of, ids.len(), truth))
    }
}

/// Ground-truth score differences (chosen − rejected) of each comparison under its user's
/// group's truth: the oracle's "model" diffs. `None` without ground truths.
pub fn oracle_diffs(
    cs: &[Comparison],
    names: &[String],
    scores: &HashMap<Key, Vec<f64>>,
) -> Option<Vec<f32>> {
    cs.iter()
        .map(|c| {
            let g = names.iter().position(|n| Some(n) == c.group.as_ref())?;
            let s = |seg: &Segment| scores.get(&key_of(c, seg).ok()?).map(|v| v[g]);
            Some((s(&c.chosen)? - s(&c.rejected)?) as f32)
        })
        .collect()
}

/// The preference stage's product, encoded.
pub struct Prefs {
    /// Training comparisons grouped by user.
    pub train: UserData,
    /// Held-out comparisons by user, if any.
    pub held: Option<UserData>,
    /// Ground-truth diffs of the held-out comparisons (simulation only).
    pub oracle: Option<Vec<f32>>,
    /// Feature description.
    pub feats: Features,
}

/// The learned reward models.
pub struct Learned {
    /// Pooled model.
    pub single: RewardModel,
    /// Mixture models, reordered so model u matches true group u where groups are known.
    pub mixture: Vec<RewardModel>,
    /// Cluster shares (utilitarian weights).
    pub shares: Vec<f64>,
    /// Report data.
    pub summary: Value,
}

/// Fit the single model and the EM mixture (and the true-split models with `[em] oracle`);
/// held-out accuracy per group of each, and of the ground-truth oracle.
pub fn learn(
    ctx: &Ctx,
    prefs: &Prefs,
    mut metrics: Option<&mut Metrics>,
    progress: &mut dyn Progress,
) -> Result<Learned> {
    let exp = ctx.exp;
    let spec = RewardSpec::from_config(exp.reward_model.as_ref())?;
    let all: Vec<usize> = (0..prefs.train.data.m).collect();
    let t0 = Instant::now();
    let single = fit_model(
        &prefs.train,
        &all,
        &spec,
        &prefs.feats,
        &mut stream(exp.seed, "single"),
    )?;
    let t_single = t0.elapsed().as_secs_f64();
    let k = exp.em.k;
    progress.start("EM", (exp.em.restarts * exp.em.max_iterations) as u64, 0);
    let mut step = 0u64;
    let mut on_iter = |s: &IterStats| -> Result<()> {
        step += 1;
        progress.update(
            step,
            &format!(
                "restart {} iter {} ll {:.1}",
                s.restart, s.iteration, s.log_likelihood
            ),
        );
        match metrics.as_deref_mut() {
            Some(m) => m.log_value(&s.metrics_line(step)),
            None => Ok(()),
        }
    };
    let fit = fit_mixture(
        &prefs.train,
        k,
        &spec,
        &prefs.feats,
        &exp.em,
        maxmin_core::rng::derive_seed(exp.seed, "em"),
        &mut on_iter,
    )?;
    progress.finish();
    let t_em = t0.elapsed().as_secs_f64() - t_single;
    let (order, ari_v, purity_v) = cluster_order(prefs, &fit.assign, k, ctx.names.len());
    let mut models: Vec<Option<RewardModel>> = fit.models.into_iter().map(Some).collect();
    let mixture: Vec<RewardModel> = order.iter().filter_map(|&c| models[c].take()).collect();
    let shares: Vec<f64> = order.iter().map(|&c| fit.weights[c]).collect();
    let true_split = true_split_models(ctx, prefs, &spec)?;
    let acc = held_out_accuracy(ctx, prefs, &single, &mixture, &true_split)?;
    let summary = json!({
        "k": k,
        "ari": ari_v,
        "purity": purity_v,
        "iterations": fit.iterations,
        "converged": fit.converged,
        "log_likelihood": fit.log_likelihood,
        "cluster_shares": shares,
        "held_out_accuracy": acc,
        "features": { "width": prefs.feats.dim(), "encoding": if spec.hidden.is_empty() { "sums" } else { "rows" } },
        "seconds": t0.elapsed().as_secs_f64(),
        "seconds_single": t_single,
        "seconds_em": t_em,
    });
    Ok(Learned {
        single,
        mixture,
        shares,
        summary,
    })
}

/// Cluster order putting the cluster matched to true group g at position g (unmatched clusters
/// follow), with the assignment's ARI and purity when the true groups are known.
fn cluster_order(
    prefs: &Prefs,
    assign: &[usize],
    k: usize,
    n_groups: usize,
) -> (Vec<usize>, Option<f64>, Option<f64>) {
    let Some(t) = &prefs.train.truth else {
        return ((0..k).collect(), None, None);
    };
    let m = match_groups(assign, t, k, n_groups);
    let mut order: Vec<usize> = m.iter().flatten().copied().collect();
    for c in 0..k {
        if !order.contains(&c) {
            order.push(c);
        }
    }
    (order, Some(ari(assign, t)), Some(purity(assign, t)))
}

/// One model per true group trained on that group's training users (`[em] oracle`).
fn true_split_models(ctx: &Ctx, prefs: &Prefs, spec: &RewardSpec) -> Result<Vec<RewardModel>> {
    let Some(t) = prefs.train.truth.as_ref().filter(|_| ctx.exp.em.oracle) else {
        return Ok(vec![]);
    };
    (0..ctx.names.len())
        .map(|g| {
            let rows: Vec<usize> = (0..prefs.train.data.m)
                .filter(|&i| t[prefs.train.user_of[i] as usize] == g)
                .collect();
            fit_model(
                &prefs.train,
                &rows,
                spec,
                &prefs.feats,
                &mut stream(ctx.exp.seed, &format!("oracle/{g}")),
            )
        })
        .collect()
}

/// Held-out accuracy per true group: `{group: {comparisons, single, mixture, oracle,
/// true_split}}` (a key is absent where its model is).
fn held_out_accuracy(
    ctx: &Ctx,
    prefs: &Prefs,
    single: &RewardModel,
    mixture: &[RewardModel],
    true_split: &[RewardModel],
) -> Result<BTreeMap<String, Value>> {
    let mut acc = BTreeMap::new();
    let Some(h) = &prefs.held else {
        return Ok(acc);
    };
    let Some(t) = &h.truth else {
        return Ok(acc);
    };
    let diffs = |ms: &[RewardModel]| -> Result<Vec<Vec<f32>>> {
        ms.iter().map(|m| m.diffs(&h.data)).collect()
    };
    let single_d = single.diffs(&h.data)?;
    let (mix_d, split_d) = (diffs(mixture)?, diffs(true_split)?);
    for (g, name) in ctx.names.iter().enumerate() {
        let rows: Vec<usize> = (0..h.data.m)
            .filter(|&i| t[h.user_of[i] as usize] == g)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let mut e = serde_json::Map::new();
        e.insert("comparisons".into(), rows.len().into());
        e.insert("single".into(), accuracy(&single_d, &rows).into());
        if let Some(d) = mix_d.get(g) {
            e.insert("mixture".into(), accuracy(d, &rows).into());
        }
        if let Some(d) = &prefs.oracle {
            e.insert("oracle".into(), accuracy(d, &rows).into());
        }
        if let Some(d) = split_d.get(g) {
            e.insert("true_split".into(), accuracy(d, &rows).into());
        }
        acc.insert(name.clone(), Value::Object(e));
    }
    Ok(acc)
}

/// Everything the reward stage needs besides the context: the labelled comparisons, the
/// featurizer's bank and the ground-truth scores for the oracle.
pub struct Labelled<'a> {
    /// Training comparisons.
    pub train: &'a [Comparison],
    /// Held-out comparisons.
    pub held: &'a [Comparison],
    /// Encoded completions.
    pub bank: &'a Bank,
    /// Ground-truth scores per completion (simulation).
    pub scores: Option<&'a HashMap<Key, Vec<f64>>>,
}

/// Encode labelled comparisons into [`Prefs`].
pub fn prefs_of(ctx: &Ctx, l: &Labelled) -> Result<Prefs> {
    Ok(Prefs {
        train: l.bank.user_data(l.train, &ctx.names)?,
        held: if l.held.is_empty() {
            None
        } else {
            Some(l.bank.user_data(l.held, &ctx.names)?)
        },
        oracle: l.scores.and_then(|s| oracle_diffs(l.held, &ctx.names, s)),
        feats: l.bank.feats.clone(),
    })
}

/// `[em] ratio-sweep`: relabel the same pool with users at shares r/(r+1), 1/(r+1) per ratio r
/// and relearn; one JSON row per ratio (`ratio`, `ari`, `single`/`mixture`/`oracle` accuracy per
/// group, `seconds`).
pub fn ratio_sweep(
    ctx: &Ctx,
    pop: &TextPopulation,
    pool: &Pool,
    bank: &Bank,
    scores: &HashMap<Key, Vec<f64>>,
    progress: &mut dyn Progress,
) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for &r in &ctx.exp.em.ratio_sweep {
        tracing::info!("ratio sweep: {r}:1");
        let t0 = Instant::now();
        let (train, held) = label(ctx, pop, pool, &[r / (r + 1.0), 1.0 / (r + 1.0)]);
        let prefs = prefs_of(
            ctx,
            &Labelled {
                train: &train,
                held: &held,
                bank,
                scores: Some(scores),
            },
        )?;
        let l = learn(ctx, &prefs, None, progress)?;
        let acc = &l.summary["held_out_accuracy"];
        let per = |k: &str| -> BTreeMap<String, f64> {
            ctx.names
                .iter()
                .filter_map(|n| acc[n][k].as_f64().map(|v| (n.clone(), v)))
                .collect()
        };
        rows.push(json!({
            "ratio": r,
            "ari": l.summary["ari"],
            "comparisons": { "train": train.len(), "held_out": held.len() },
            "held_out_per_group": ctx.names.iter().map(|n| (n.clone(), acc[n]["comparisons"].clone())).collect::<BTreeMap<_, _>>(),
            "single": per("single"),
            "mixture": per("mixture"),
            "oracle": per("oracle"),
            "true_split": per("true_split"),
            "seconds": t0.elapsed().as_secs_f64(),
        }));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_of_known_series() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&a, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(pearson(&a, &[1.0, 1.0, 1.0, 1.0]).is_nan());
        let names = vec!["x".to_string(), "y".to_string()];
        let c = |s: [f64; 2]| Completion {
            prompt: String::new(),
            text: String::new(),
            tokens: 0,
            scores: s.to_vec(),
        };
        let r = truth_correlations(&names, &[c([0.0, 1.0]), c([1.0, 0.0]), c([2.0, -1.0])]);
        assert!((r["x~y"] + 1.0).abs() < 1e-12, "{r:?}");
    }

    /// The oracle's diffs are each comparison's own group's truth, chosen minus rejected; a
    /// comparison of an unknown group or completion means no oracle.
    #[test]
    fn oracle_diffs_use_the_users_group() {
        let names = vec!["a".to_string(), "b".to_string()];
        let mut scores = HashMap::new();
        scores.insert(("p".to_string(), "x".to_string()), vec![0.9, 0.1]);
        scores.insert(("p".to_string(), "y".to_string()), vec![0.2, 0.6]);
        let cmp = |g: &str, w: &str, l: &str| Comparison {
            user: "u".into(),
            context: Value::from("p"),
            chosen: Segment::Text(w.into()),
            rejected: Segment::Text(l.into()),
            group: Some(g.into()),
        };
        let d = oracle_diffs(&[cmp("a", "x", "y"), cmp("b", "x", "y")], &names, &scores).unwrap();
        assert!(
            (d[0] - 0.7).abs() < 1e-6 && (d[1] + 0.5).abs() < 1e-6,
            "{d:?}"
        );
        assert_eq!(accuracy(&d, &[0, 1]), 0.5);
        assert!(oracle_diffs(&[cmp("c", "x", "y")], &names, &scores).is_none());
        assert!(oracle_diffs(&[cmp("a", "x", "z")], &names, &scores).is_none());
    }
}
