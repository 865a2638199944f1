//! `report.md` of a language-model run, rebuilt from `summary.json` and `policies/*` alone (so
//! `maxmin report RUN_DIR` regenerates it): setup (with the ground truths' correlation), reward
//! learning (EM agreement with the true groups, held-out accuracy per group of the single and
//! mixture models beside the ground-truth oracle and the true-split models), the ratio sweep's
//! table and plot (drawn by core's preference-stage report) when there is one, the policies' table
//! (each group's ground-truth score, worst group, completion length; mean ± 95 % interval over
//! seeds, plus the untuned reference), the paper's claims checked on that table (each marked as
//! holding or not), a bar plot, training curves of the true scores, and sample generations.

use crate::context::{table, Completion, LmResult, Table};
use maxmin_core::compare::policy_dirs;
use maxmin_core::prefs::report::SweepPoint;
use maxmin_core::prefs::stage::GroupAccuracy;
use maxmin_core::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

fn fmt_ci((m, h): (f64, f64)) -> String {
    if h.is_nan() {
        format!("{m:.3}")
    } else {
        format!("{m:.3} ± {h:.3}")
    }
}

fn read_json(p: &Path) -> Result<Value> {
    let t = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
    serde_json::from_str(&t).map_err(|e| Error::data(p, None, e.to_string()))
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ").replace('|', "\\|")
}

/// Write `report.md` and `plots/` for the run in `dir`.
pub fn write(dir: &Path) -> Result<()> {
    let summary = read_json(&dir.join("summary.json"))?;
    // A reward-model-only run (no `[compare]`) has no results.
    let results: Vec<LmResult> = match &summary["results"] {
        Value::Null => vec![],
        r => serde_json::from_value(r.clone())
            .map_err(|e| Error::data(dir.join("summary.json"), None, e.to_string()))?,
    };
    let reference: Option<LmResult> = serde_json::from_value(summary["reference"].clone()).ok();
    let mut s = String::new();
    preferences_section(&mut s, &summary);
    reward_models_section(&mut s, &summary["reward_models"]);
    let names: Vec<String> = summary["groups"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    sweep_section(&mut s, dir, &names, &summary["ratio_sweep"])?;
    if results.is_empty() {
        return write_atomic_str(&dir.join("report.md"), &s);
    }
    // Groups in the config's order (summary.json), falling back to the results' keys.
    let groups: Vec<String> = match summary["groups"].as_array() {
        Some(_) if reference.as_ref().is_some_and(|r| !r.groups.is_empty()) => names.clone(),
        _ => results
            .first()
            .or(reference.as_ref())
            .map(|r| r.groups.keys().cloned().collect())
            .unwrap_or_default(),
    };
    let seeds: Vec<u64> = {
        let mut v: Vec<u64> = results.iter().map(|r| r.seed).collect();
        v.sort();
        v.dedup();
        v
    };
    let tab = table(&results);
    policies_section(&mut s, &groups, &seeds, &tab, reference.as_ref(), &results);
    if let Some(r) = &reference {
        claims_section(&mut s, &groups, &summary["group_shares"], &tab, r);
    }
    plots_section(&mut s, dir, &groups, &tab)?;
    samples_section(&mut s, dir, &groups, &summary, seeds.first().copied());
    write_atomic_str(&dir.join("report.md"), &s)
}

/// Title, wall time and the preference data (pool, reference scores, truths' correlation).
fn preferences_section(s: &mut String, summary: &Value) {
    let name = summary["name"].as_str().unwrap_or("run");
    let _ = writeln!(s, "# {name}\n");
    let _ = writeln!(
        s,
        "MaxMin-RLHF on a language model (docs/algorithms.md, experiments to reproduce, items 1–2). \
         Wall time {:.0} s. Config: `config.resolved.toml`.\n",
        summary["seconds"].as_f64().unwrap_or(f64::NAN)
    );
    let _ = writeln!(s, "## Preferences\n");
    let _ = writeln!(
        s,
        "- comparisons: {} training, {} held out",
        summary["comparisons"]["train"], summary["comparisons"]["held_out"]
    );
    if let Some(m) = summary["preferences"]["reference_mean_scores"].as_object() {
        let _ = writeln!(
            s,
            "- reference completions in the comparison pool: mean ground-truth scores {}; mean length {:.1} tokens; {:.0} % end with EOS",
            m.iter()
                .map(|(k, v)| format!("{k} {:.3}", v.as_f64().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(", "),
            summary["preferences"]["reference_mean_tokens"].as_f64().unwrap_or(f64::NAN),
            100.0 * summary["preferences"]["reference_eos_rate"].as_f64().unwrap_or(f64::NAN)
        );
    }
    if let Some(c) = summary["preferences"]["truth_correlation"].as_object() {
        let _ = writeln!(
            s,
            "- ground truths' Pearson correlation over those completions: {}",
            c.iter()
                .map(|(k, v)| format!(
                    "{} r = {}",
                    k.replace('~', " ~ "),
                    v.as_f64().map_or("n/a".into(), |x| format!("{x:.3}"))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// EM's agreement with the true groups and the held-out accuracy table.
fn reward_models_section(s: &mut String, rm: &Value) {
    let _ = writeln!(
        s,
        "\n## Reward models (frozen-backbone features, BT heads)\n"
    );
    let _ = writeln!(
        s,
        "EM with K = {}: {} iterations (converged: {}), ARI {} / purity {} against the true groups, cluster shares {}.\n",
        rm["k"],
        rm["iterations"],
        rm["converged"],
        rm["ari"].as_f64().map_or("n/a".into(), |v| format!("{v:.3}")),
        rm["purity"].as_f64().map_or("n/a".into(), |v| format!("{v:.3}")),
        rm["cluster_shares"]
    );
    accuracy_table(s, rm);
}

/// The policies' table (mean ± interval over seeds, reference first) and the per-seed table.
fn policies_section(
    s: &mut String,
    groups: &[String],
    seeds: &[u64],
    tab: &Table,
    reference: Option<&LmResult>,
    results: &[LmResult],
) {
    let _ = writeln!(
        s,
        "\n## Policies: ground-truth scores on held-out prompts\n"
    );
    let _ = writeln!(
        s,
        "Mean ground-truth score per group over the evaluation prompts (same prompts and sampling \
         seed for every policy), then mean ± 95 % Student-t interval over policy seeds {seeds:?}. \
         Higher is better; *worst group* is the egalitarian objective's score. `reference` is the \
         untuned model.\n"
    );
    let mut header = "| policy |".to_string();
    let mut rule = "|---|".to_string();
    for g in groups {
        let _ = write!(header, " {g} |");
        rule.push_str("---|");
    }
    header.push_str(" worst group | tokens |");
    rule.push_str("---|---|");
    let _ = writeln!(s, "{header}\n{rule}");
    if let Some(r) = reference {
        let mut row = "| reference |".to_string();
        for g in groups {
            let _ = write!(
                row,
                " {:.3} |",
                r.groups.get(g).copied().unwrap_or(f64::NAN)
            );
        }
        let _ = writeln!(row, " **{:.3}** | {:.1} |", r.worst_utility, r.mean_tokens);
        s.push_str(&row);
    }
    for (o, m) in tab {
        let mut row = format!("| {o} |");
        for g in groups {
            let _ = write!(row, " {} |", m.get(g).map_or("n/a".into(), |c| fmt_ci(*c)));
        }
        let _ = writeln!(
            row,
            " **{}** | {} |",
            m.get("worst group").map_or("n/a".into(), |c| fmt_ci(*c)),
            m.get("tokens").map_or("n/a".into(), |c| fmt_ci(*c))
        );
        s.push_str(&row);
    }
    let _ = writeln!(
        s,
        "\nPer seed:\n\n| policy | seed | {} | worst | tokens | train s |",
        groups.join(" | ")
    );
    let _ = writeln!(s, "|---|---|{}---|---|---|", "---|".repeat(groups.len()));
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {:.1} | {:.0} |",
            r.objective,
            r.seed,
            groups
                .iter()
                .map(|g| format!("{:.3}", r.groups.get(g).copied().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(" | "),
            r.worst_utility,
            r.mean_tokens,
            r.train_seconds
        );
    }
}

/// The paper's claims for this experiment (docs/lm-rlhf.md, "Acceptance"), each checked on the
/// table above and marked as holding or not — nothing here is tuned away — once for every
/// max-min row: `maxmin` (Algorithm 1, or a variant such as `maxmin(ema=0.9)`) and
/// `pointwise-min` (the per-sample minimum of the authors' scripts). The majority is the group
/// with the largest population share; skipped without shares, without two groups, or without
/// a `single` row.
fn claims_section(
    s: &mut String,
    groups: &[String],
    shares: &Value,
    tab: &Table,
    reference: &LmResult,
) {
    let shares: Vec<f64> = groups
        .iter()
        .map(|g| shares[g.as_str()].as_f64().unwrap_or(f64::NAN))
        .collect();
    let row = |o: &str| tab.iter().find(|(n, _)| n == o).map(|(_, m)| m);
    let Some(single) = row("single") else {
        return;
    };
    if groups.len() < 2 || shares.iter().any(|x| !x.is_finite()) {
        return;
    }
    let egalitarian = tab
        .iter()
        .filter(|(n, _)| n == "maxmin" || n.starts_with("maxmin(") || n == "pointwise-min");
    for (name, maxmin) in egalitarian {
        let claims = claims_of(
            name,
            groups,
            &shares,
            single,
            maxmin,
            row("utilitarian"),
            reference,
        );
        let _ = writeln!(
            s,
            "\n### The paper's claims, checked on this table: `{name}`\n\n| claim | holds | numbers (means; ± 95 % interval) |\n|---|---|---|"
        );
        for (c, ok, nums) in claims {
            let _ = writeln!(
                s,
                "| {c} | {} | {nums} |",
                if ok { "yes" } else { "**no**" }
            );
        }
    }
}

/// One max-min row's claims: (claim, holds, numbers).
fn claims_of(
    name: &str,
    groups: &[String],
    shares: &[f64],
    single: &BTreeMap<String, (f64, f64)>,
    maxmin: &BTreeMap<String, (f64, f64)>,
    utilitarian: Option<&BTreeMap<String, (f64, f64)>>,
    reference: &LmResult,
) -> Vec<(String, bool, String)> {
    let maj = (0..groups.len())
        .max_by(|&a, &b| shares[a].total_cmp(&shares[b]))
        .unwrap_or(0);
    let major = &groups[maj];
    let r = |g: &str| reference.groups.get(g).copied().unwrap_or(f64::NAN);
    let get = |m: &BTreeMap<String, (f64, f64)>, k: &str| {
        m.get(k).copied().unwrap_or((f64::NAN, f64::NAN))
    };
    let (sm, sh) = get(single, major);
    let (wm, wh) = get(maxmin, "worst group");
    let ref_worst = reference.worst_utility;
    let util_worst = utilitarian.map(|m| get(m, "worst group").0);
    let single_worst = get(single, "worst group").0;
    let mm_major = get(maxmin, major).0;
    let gain = sm - r(major);
    let all_at_least = groups.iter().all(|g| get(maxmin, g).0 >= r(g));
    let mut claims = vec![
        (
            format!("single raises the majority ({major}): interval above the reference"),
            sm - sh > r(major),
            format!("{} vs {:.3}", fmt_ci((sm, sh)), r(major)),
        ),
        (
            format!("{name} raises the worst group: interval above the reference's worst group"),
            wm - wh > ref_worst,
            format!("{} vs {ref_worst:.3}", fmt_ci((wm, wh))),
        ),
        (
            format!("{name}: every group at or above the reference"),
            all_at_least,
            groups
                .iter()
                .map(|g| format!("{g} {:.3} vs {:.3}", get(maxmin, g).0, r(g)))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        (
            format!("{name}'s worst group above single's"),
            wm > single_worst,
            format!("{wm:.3} vs {single_worst:.3}"),
        ),
    ];
    if let Some(util_worst) = util_worst {
        claims.push((
            format!("{name}'s worst group above utilitarian's"),
            wm > util_worst,
            format!("{wm:.3} vs {util_worst:.3}"),
        ));
    }
    claims.push((
        format!("{name} keeps at least half of single's gain on {major}"),
        gain > 0.0 && mm_major - r(major) >= 0.5 * gain,
        format!("gain {:+.3} vs single's {gain:+.3}", mm_major - r(major)),
    ));
    claims
}

/// The final-score bar plot and each group's training curve.
fn plots_section(s: &mut String, dir: &Path, groups: &[String], tab: &Table) -> Result<()> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| Error::io(&plots, e))?;
    let objectives: Vec<String> = tab.iter().map(|(o, _)| o.clone()).collect();
    let bars: BTreeMap<String, Vec<(f64, f64)>> = tab
        .iter()
        .map(|(o, m)| {
            (
                o.clone(),
                groups
                    .iter()
                    .map(|g| m.get(g).copied().unwrap_or((f64::NAN, f64::NAN)))
                    .collect(),
            )
        })
        .collect();
    if groups.is_empty() || objectives.is_empty() {
        return Ok(());
    }
    maxmin_core::compare_report::plot_bars(
        &plots.join("final_scores.svg"),
        &objectives,
        groups,
        &bars,
        "ground-truth score",
    )?;
    let _ = writeln!(s, "\n![final per-group scores](plots/final_scores.svg)\n");
    for (gi, g) in groups.iter().enumerate() {
        let file = format!("true_score_curve_{gi}.svg");
        if maxmin_core::compare_report::plot_curves(
            dir,
            &plots.join(&file),
            &format!("true/{g}"),
            &format!("{g}: ground-truth score of training batches"),
            &objectives,
        )? {
            let _ = writeln!(s, "![{g} during training](plots/{file})\n");
        }
    }
    Ok(())
}

/// Sample generations of the reference and of each objective's first seed.
fn samples_section(
    s: &mut String,
    dir: &Path,
    groups: &[String],
    summary: &Value,
    first_seed: Option<u64>,
) {
    let _ = writeln!(s, "## Sample generations (first evaluation prompts)\n");
    let _ = writeln!(
        s,
        "| policy | prompt | completion | scores ({}) |\n|---|---|---|---|",
        groups.join(" / ")
    );
    let mut sample_rows = |label: &str, cs: &[Completion]| {
        for c in cs {
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} |",
                one_line(&c.prompt),
                one_line(&c.text),
                c.scores
                    .iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
        }
    };
    if let Ok(cs) = serde_json::from_value::<Vec<Completion>>(summary["reference_samples"].clone())
    {
        sample_rows("reference", &cs);
    }
    for d in policy_dirs(dir) {
        let Some(n) = d.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // One seed per objective keeps the table readable.
        if !n.ends_with(&format!("__seed{}", first_seed.unwrap_or(0))) {
            continue;
        }
        if let Ok(v) = read_json(&d.join("samples.json")) {
            if let Ok(cs) = serde_json::from_value::<Vec<Completion>>(v) {
                sample_rows(n, &cs);
            }
        }
    }
}

/// Held-out accuracy per true group: single, mixture, the ground-truth oracle and (with
/// `[em] oracle`) a model trained on the group's own users.
fn accuracy_table(s: &mut String, rm: &Value) {
    let Some(acc) = rm["held_out_accuracy"]
        .as_object()
        .filter(|a| !a.is_empty())
    else {
        return;
    };
    let split = acc.values().any(|v| v.get("true_split").is_some());
    let _ = writeln!(
        s,
        "Held-out pairwise accuracy per true group (users not seen in training). *Oracle*: the \
         group's own ground truth predicting the same noisy held-out labels — the ceiling any \
         learned model can reach given the Bradley–Terry noise (ties count ½).{}\n",
        if split {
            " *True split*: one model trained on the group's own training users (EM given the answer)."
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "| group | comparisons | single reward | mixture model of the group | oracle |{}\n|---|---|---|---|---|{}",
        if split { " true split |" } else { "" },
        if split { "---|" } else { "" }
    );
    for (g, v) in acc {
        let pct = |k: &str| {
            v[k].as_f64()
                .map_or("n/a".into(), |x| format!("{:.1} %", 100.0 * x))
        };
        let _ = writeln!(
            s,
            "| {g} | {} | {} | {} | {} |{}",
            v["comparisons"],
            pct("single"),
            pct("mixture"),
            pct("oracle"),
            if split {
                format!(" {} |", pct("true_split"))
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(s);
}

/// The ratio sweep's table and plot, drawn by core's preference-stage report.
fn sweep_section(s: &mut String, dir: &Path, names: &[String], sweep: &Value) -> Result<()> {
    let Some(rows) = sweep.as_array().filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let acc = |r: &Value, k: &str| -> GroupAccuracy {
        serde_json::from_value(r[k].clone()).unwrap_or_default()
    };
    let owned: Vec<(f64, Option<f64>, [GroupAccuracy; 3])> = rows
        .iter()
        .map(|r| {
            (
                r["ratio"].as_f64().unwrap_or(f64::NAN),
                r["ari"].as_f64(),
                [acc(r, "single"), acc(r, "mixture"), acc(r, "oracle")],
            )
        })
        .collect();
    let points: Vec<SweepPoint> = owned
        .iter()
        .map(|(ratio, ari, [single, mixture, oracle])| SweepPoint {
            ratio: *ratio,
            ari: *ari,
            single,
            mixture,
            oracle,
        })
        .collect();
    // How many held-out comparisons each group's accuracy rests on, per ratio.
    let counts: Vec<String> = rows
        .iter()
        .map(|r| {
            let per: Vec<String> = names
                .iter()
                .map(|n| format!("{n} {}", r["held_out_per_group"][n].as_u64().unwrap_or(0)))
                .collect();
            format!(
                "{}:1 {}",
                r["ratio"].as_f64().unwrap_or(f64::NAN),
                per.join(", ")
            )
        })
        .collect();
    let about = format!(
        "The same reference pool relabelled by users drawn at each majority:minority ratio (same \
         seed and numbers of users; only the shares change); single and mixture relearned. \
         Held-out comparisons per group: {}.",
        counts.join("; ")
    );
    maxmin_core::prefs::report::sweep_section(
        s,
        dir,
        names,
        &points,
        "the group's ground truth on the same held-out labels",
        &about,
    )
}

fn write_atomic_str(p: &Path, s: &str) -> Result<()> {
    maxmin_core::run::write_atomic(p, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[(&str, f64, f64)]) -> BTreeMap<String, (f64, f64)> {
        cells
            .iter()
            .map(|(k, m, h)| (k.to_string(), (*m, *h)))
            .collect()
    }

    #[test]
    fn claims_are_checked_for_every_max_min_row() {
        let groups = vec!["concise".to_string(), "sentiment".to_string()];
        let shares = serde_json::json!({"concise": 0.2, "sentiment": 0.8});
        let reference = LmResult {
            objective: "reference".into(),
            seed: 0,
            groups: [("concise".into(), 0.47), ("sentiment".into(), 0.30)].into(),
            worst_group: "sentiment".into(),
            worst_utility: 0.30,
            gap: 0.17,
            mean_tokens: 17.0,
            learned: BTreeMap::new(),
            train_seconds: 0.0,
        };
        let tab: Table = vec![
            (
                "single".into(),
                row(&[
                    ("sentiment", 0.42, 0.02),
                    ("concise", 0.1, 0.05),
                    ("worst group", 0.1, 0.05),
                ]),
            ),
            (
                // Both groups up, worst group's interval above 0.30, 0.07 of single's 0.12.
                "pointwise-min".into(),
                row(&[
                    ("sentiment", 0.37, 0.02),
                    ("concise", 0.55, 0.02),
                    ("worst group", 0.37, 0.02),
                ]),
            ),
            (
                // Interval includes the reference; concise below it.
                "maxmin".into(),
                row(&[
                    ("sentiment", 0.31, 0.03),
                    ("concise", 0.46, 0.1),
                    ("worst group", 0.31, 0.03),
                ]),
            ),
        ];
        let mut s = String::new();
        claims_section(&mut s, &groups, &shares, &tab, &reference);
        let (pw, mm) = s.split_at(s.find("`maxmin`").unwrap());
        assert!(pw.contains("`pointwise-min`"), "{s}");
        for c in [
            "| pointwise-min raises the worst group: interval above the reference's worst group | yes |",
            "| pointwise-min: every group at or above the reference | yes |",
            "| pointwise-min keeps at least half of single's gain on sentiment | yes |",
        ] {
            assert!(pw.contains(c), "{c}\n{s}");
        }
        for c in [
            "| maxmin raises the worst group: interval above the reference's worst group | **no** |",
            "| maxmin: every group at or above the reference | **no** |",
            "| maxmin keeps at least half of single's gain on sentiment | **no** |",
            "| maxmin's worst group above single's | yes |",
        ] {
            assert!(mm.contains(c), "{c}\n{s}");
        }
    }
}
