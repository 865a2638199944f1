//! The comparison section of `report.md`, rebuilt from the run's files alone
//! (`policies/*/result.json`, `policies/*/metrics.jsonl`), so `maxmin report RUN_DIR` can
//! regenerate it: a table per objective (each group's true utility, worst group, best − worst
//! gap, each as mean ± 95 % interval over seeds), per-group utility curves, and final bars.

use crate::compare::{mean_ci95, policy_dirs, PolicyResult};
use crate::error::{Error, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Internal(format!("plotting failed: {e:?}"))
}

/// Every `result.json` under `policies/`, in objective order of first appearance in the config
/// (the folder order is alphabetical, so the caller passes the order it wants when known).
pub fn load_results(run_dir: &Path) -> Result<Vec<PolicyResult>> {
    let mut out = Vec::new();
    for d in policy_dirs(run_dir) {
        let p = d.join("result.json");
        if let Ok(text) = std::fs::read_to_string(&p) {
            let r: PolicyResult =
                serde_json::from_str(&text).map_err(|e| Error::data(&p, None, e.to_string()))?;
            out.push(r);
        }
    }
    Ok(out)
}

fn fmt_ci((m, h): (f64, f64)) -> String {
    if h.is_nan() {
        format!("{m:.2}")
    } else {
        format!("{m:.2} ± {h:.2}")
    }
}

/// Write the plots and return the Markdown section.
pub fn section(run_dir: &Path, results: &[PolicyResult], order: &[String]) -> Result<String> {
    let mut objectives: Vec<String> = order.to_vec();
    for r in results {
        if !objectives.contains(&r.objective) {
            objectives.push(r.objective.clone());
        }
    }
    objectives.retain(|o| results.iter().any(|r| &r.objective == o));
    let groups: Vec<String> = results
        .first()
        .map(|r| r.groups.keys().cloned().collect())
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Policies: objectives compared on the groups' true utilities\n"
    );
    let seeds: Vec<u64> = {
        let mut v: Vec<u64> = results.iter().map(|r| r.seed).collect();
        v.sort();
        v.dedup();
        v
    };
    let _ = writeln!(
        s,
        "Mean episodic ground-truth return per group over the evaluation episodes, then mean ± 95 % \
         Student-t interval over policy seeds {seeds:?}. Higher is better; *worst group* is the \
         egalitarian objective's score.\n"
    );
    let mut header = String::from("| objective |");
    let mut rule = String::from("|---|");
    for g in &groups {
        let _ = write!(header, " {g} |");
        rule.push_str("---|");
    }
    header.push_str(" worst group | best − worst gap | env return |");
    rule.push_str("---|---|---|");
    let _ = writeln!(s, "{header}\n{rule}");
    let mut table: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for o in &objectives {
        let rs: Vec<&PolicyResult> = results.iter().filter(|r| &r.objective == o).collect();
        let mut row = format!("| {o} |");
        let mut cells = Vec::new();
        for g in &groups {
            let ci = mean_ci95(&rs.iter().map(|r| r.groups[g]).collect::<Vec<_>>());
            cells.push(ci);
            let _ = write!(row, " {} |", fmt_ci(ci));
        }
        let worst = mean_ci95(&rs.iter().map(|r| r.worst_utility).collect::<Vec<_>>());
        let gap = mean_ci95(&rs.iter().map(|r| r.gap).collect::<Vec<_>>());
        let env = mean_ci95(&rs.iter().map(|r| r.env_return).collect::<Vec<_>>());
        let _ = write!(
            row,
            " **{}** | {} | {} |",
            fmt_ci(worst),
            fmt_ci(gap),
            fmt_ci(env)
        );
        let _ = writeln!(s, "{row}");
        table.insert(o.clone(), cells);
    }
    let plots = run_dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| Error::io(&plots, e))?;
    plot_bars(
        &plots.join("final_utilities.svg"),
        &objectives,
        &groups,
        &table,
        "episodic true return",
    )?;
    let _ = writeln!(
        s,
        "\n![final per-group utilities](plots/final_utilities.svg)\n"
    );
    for (gi, g) in groups.iter().enumerate() {
        let file = format!("utility_curve_{gi}.svg");
        if plot_curves(
            run_dir,
            &plots.join(&file),
            &format!("group/{g}/utility"),
            &format!("{g}: true utility during training"),
            &objectives,
        )? {
            let _ = writeln!(s, "![{g}: utility during training](plots/{file})\n");
        }
    }
    let _ = writeln!(
        s,
        "Per-policy runs: `policies/<objective>__seed<s>/` (metrics.jsonl, result.json)."
    );
    Ok(s)
}

/// Bars of each group's mean (± interval) per objective; `table[objective][group]`.
pub fn plot_bars(
    path: &Path,
    objectives: &[String],
    groups: &[String],
    table: &BTreeMap<String, Vec<(f64, f64)>>,
    y_desc: &str,
) -> Result<()> {
    let vals: Vec<f64> = table
        .values()
        .flatten()
        .flat_map(|(m, h)| [m - h.clamp(0.0, 1e9), m + h.clamp(0.0, 1e9), *m])
        .filter(|x| x.is_finite())
        .collect();
    let lo = vals.iter().cloned().fold(0.0f64, f64::min);
    let hi = vals.iter().cloned().fold(0.0f64, f64::max);
    let pad = 0.05 * (hi - lo).max(1e-9);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let n = objectives.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "True utility per group (mean ± 95 % CI over seeds)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n - 0.5, (lo - pad)..(hi + pad))
        .map_err(plot_err)?;
    let objs = objectives.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(objectives.len().max(2))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                objs.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .draw()
        .map_err(plot_err)?;
    let w = 0.8 / groups.len().max(1) as f64;
    for (gi, g) in groups.iter().enumerate() {
        let color = Palette99::pick(gi).to_rgba();
        let bars: Vec<(f64, f64, f64)> = objectives
            .iter()
            .enumerate()
            .filter_map(|(oi, o)| {
                table
                    .get(o)
                    .map(|c| (oi as f64 - 0.4 + w * gi as f64, c[gi].0, c[gi].1))
            })
            .collect();
        chart
            .draw_series(
                bars.iter().map(|(x, m, _)| {
                    Rectangle::new([(*x, 0.0), (*x + w * 0.9, *m)], color.filled())
                }),
            )
            .map_err(plot_err)?
            .label(g.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart
            .draw_series(
                bars.iter()
                    .filter(|(_, _, h)| h.is_finite())
                    .map(|(x, m, h)| {
                        let xc = x + w * 0.45;
                        PathElement::new(vec![(xc, m - h), (xc, m + h)], BLACK.stroke_width(2))
                    }),
            )
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// Metric `key` of the policies' `metrics.jsonl` over training, one line per objective (mean
/// over seeds at each step), titled `caption`. Returns false when no curve data exists.
pub fn plot_curves(
    run_dir: &Path,
    path: &Path,
    key: &str,
    caption: &str,
    objectives: &[String],
) -> Result<bool> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for o in objectives {
        let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for d in policy_dirs(run_dir) {
            let name = d
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let Ok(text) = std::fs::read_to_string(d.join("result.json")) else {
                continue;
            };
            // Only the objective label is needed, so any result.json shape with one will do.
            let Ok(r) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if r["objective"].as_str() != Some(o.as_str()) {
                continue;
            }
            let Ok(m) = std::fs::read_to_string(d.join("metrics.jsonl")) else {
                continue;
            };
            for line in m.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    tracing::warn!("{name}: unreadable metrics line skipped in the plot");
                    continue;
                };
                if let (Some(s), Some(u)) = (v["global_step"].as_u64(), v[key].as_f64()) {
                    by_step.entry(s).or_default().push(u);
                }
            }
        }
        let pts: Vec<(f64, f64)> = by_step
            .into_iter()
            .map(|(s, v)| (s as f64, v.iter().sum::<f64>() / v.len() as f64))
            .collect();
        if !pts.is_empty() {
            series.push((o.clone(), smooth(&pts, 10)));
        }
    }
    if series.is_empty() {
        return Ok(false);
    }
    let all: Vec<&(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter()).collect();
    let xmax = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let pad = 0.05 * (hi - lo).max(1e-9);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, (lo - pad)..(hi + pad))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("training steps (global_step)")
        .y_desc("mean over seeds (smoothed)")
        .draw()
        .map_err(plot_err)?;
    for (i, (o, pts)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(o)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(true)
}

/// Trailing moving average over `w` points.
fn smooth(pts: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    (0..pts.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let s: f64 = pts[lo..=i].iter().map(|p| p.1).sum();
            (pts[i].0, s / (i + 1 - lo) as f64)
        })
        .collect()
}
