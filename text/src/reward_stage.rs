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
//! 4. **reward models**: core's reward stage (`maxmin_core::prefs::stage::learn`, run by the
//!    pipeline driver): the single pooled BT model, the EM mixture (the paper's Algorithm 2, with
//!    `[em] select-k`) and, with `[em] oracle`, one model per true group trained on the true
//!    split; held-out pairwise accuracy per true group of each, beside the **oracle** column of
//!    the text report: the group's own ground truth predicting the same noisy held-out labels
//!    ([`oracle_diffs`]; the ceiling any learned model can reach given the BT noise), scored by
//!    the same `accuracy` as the models. [`accuracy_table`], [`reward_summary`] and
//!    [`sweep_row`] lay the stage's outcome out for the text report.
//!
//! With `[em] ratio-sweep`, the driver reruns stages 2 and 4 per majority:minority ratio on the
//! same pool and features (only the users' shares change), as for control; the report's table
//! and plot are core's (`maxmin_core::prefs::report::sweep_section`).

use crate::config::{HeldOutShares, TextPopulation};
use crate::context::{complete, content_len, score_truth, Completion, Ctx};
use crate::features::Featurizer;
use maxmin_core::prefs::data::{Comparison, Segment};
use maxmin_core::prefs::em::UserData;
use maxmin_core::prefs::population::{sample_users, User};
#[cfg(test)]
use maxmin_core::prefs::reward_model::accuracy;
use maxmin_core::prefs::reward_model::{Encoded, Features};
use maxmin_core::prefs::simulate::bt_prefers_first;
use maxmin_core::prefs::stage::{Outcome, StageData, SweepRow};
use maxmin_core::rng::{stream, Rng};
use maxmin_core::run::Progress;
use maxmin_core::{Error, Result};
use rand::seq::SliceRandom;
use rand::Rng as _;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

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
    let equal = pop.held_out_shares == HeldOutShares::Equal;
    let mut urng = stream(ctx.exp.seed, "users");
    let users = sample_users(pop.users, shares, "u", &mut urng);
    let held_users = if equal {
        // Their own stream: the same held-out users whatever the training shares.
        let even = vec![1.0 / shares.len() as f64; shares.len()];
        let mut hrng = stream(ctx.exp.seed, "users/held-out");
        sample_users(pop.held_out_users, &even, "h", &mut hrng)
    } else {
        sample_users(pop.held_out_users, shares, "h", &mut urng)
    };
    let mut rng = stream(ctx.exp.seed, "preferences/labels");
    let pairs = pool.scored.len() / 2;
    let label = |users: &[User], rng: &mut Rng| -> Vec<Comparison> {
        let mut out = Vec::new();
        for u in users {
            for _ in 0..pop.comparisons_per_user {
                let j = rng.random_range(0..pairs);
                let (a, b) = (&pool.scored[2 * j], &pool.scored[2 * j + 1]);
                let a_wins = bt_prefers_first(
                    a.scores[u.group] - b.scores[u.group],
                    p.temperature,
                    p.label_noise,
                    rng,
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
    let train = label(&users, &mut rng);
    let held = if equal {
        label(
            &held_users,
            &mut stream(ctx.exp.seed, "preferences/held-out labels"),
        )
    } else {
        label(&held_users, &mut rng)
    };
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
    pub fn user_data(
        &self,
        cs: &[Comparison],
        names: &[String],
    ) -> Result<(UserData, Vec<String>)> {
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
        let n = ids.len();
        Ok((UserData::new(self.encode(cs)?, user_of, n, truth), ids))
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

/// Encode labelled comparisons for core's reward stage ([`maxmin_core::prefs::stage::learn`]),
/// with the ground truths' held-out score differences when the completions were scored.
pub fn stage_data(ctx: &Ctx, l: &Labelled) -> Result<StageData> {
    let (train, train_ids) = l.bank.user_data(l.train, &ctx.names)?;
    Ok(StageData {
        names: ctx.names.clone(),
        feats: l.bank.feats.clone(),
        train,
        train_ids,
        held: if l.held.is_empty() {
            None
        } else {
            Some(l.bank.user_data(l.held, &ctx.names)?.0)
        },
        skipped: 0,
        truth_diffs: l.scores.and_then(|s| oracle_diffs(l.held, &ctx.names, s)),
    })
}

/// Held-out accuracy per true group as the text report reads it: `{group: {comparisons,
/// single, mixture, oracle, true_split}}`, where `oracle` is the group's own ground truth on the
/// same labels and `true_split` the model trained on the group's users (core's `oracle`); a key
/// is absent where its model is.
pub fn accuracy_table(names: &[String], o: &Outcome) -> BTreeMap<String, Value> {
    let mut acc = BTreeMap::new();
    for name in names {
        let Some(n) = o.held_out_comparisons.get(name) else {
            continue;
        };
        let mut e = serde_json::Map::new();
        e.insert("comparisons".into(), (*n).into());
        for (key, table) in [
            ("single", &o.single),
            ("mixture", &o.mixture),
            ("oracle", &o.truth),
            ("true_split", &o.oracle),
        ] {
            if let Some(v) = table.get(name) {
                e.insert(key.into(), (*v).into());
            }
        }
        acc.insert(name.clone(), Value::Object(e));
    }
    acc
}

/// The mixture's cluster order that puts the cluster matched to true group g at position g
/// (unmatched clusters follow): how the text domain names its reward models after groups.
pub fn cluster_order(o: &Outcome) -> Vec<usize> {
    let mut order: Vec<usize> = o.matching.iter().flatten().copied().collect();
    for c in 0..o.k {
        if !order.contains(&c) {
            order.push(c);
        }
    }
    order
}

/// `summary.json`'s `reward_models`: the stage's outcome in the text report's layout.
pub fn reward_summary(names: &[String], o: &Outcome, feats: &Features, linear: bool) -> Value {
    let shares: Vec<f64> = match &o.ensemble {
        Some(e) => cluster_order(o).iter().map(|&c| e.shares[c]).collect(),
        None => vec![],
    };
    json!({
        "k": o.k,
        "ari": o.ari,
        "purity": o.purity,
        "iterations": o.iterations,
        "converged": o.converged,
        "log_likelihood": o.detail["log_likelihood"],
        "cluster_shares": shares,
        "held_out_accuracy": accuracy_table(names, o),
        "features": { "width": feats.dim(), "encoding": if linear { "sums" } else { "rows" } },
        "seconds": o.seconds[2],
        "seconds_single": o.seconds[0],
        "seconds_em": o.seconds[1],
        "em": o.detail,
    })
}

/// One row of `summary.json`'s `ratio_sweep` (the text report's sweep table and plot).
pub fn sweep_row(names: &[String], row: &SweepRow) -> Value {
    let o = &row.outcome;
    let acc = accuracy_table(names, o);
    let per = |k: &str| -> BTreeMap<String, f64> {
        names
            .iter()
            .filter_map(|n| {
                acc.get(n)
                    .and_then(|a| a[k].as_f64())
                    .map(|v| (n.clone(), v))
            })
            .collect()
    };
    json!({
        "ratio": row.ratio,
        "ari": o.ari,
        "comparisons": o.detail["comparisons"],
        "held_out_per_group": o.held_out_comparisons,
        "single": per("single"),
        "mixture": per("mixture"),
        "oracle": per("oracle"),
        "true_split": per("true_split"),
        "seconds": o.seconds[2],
    })
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
