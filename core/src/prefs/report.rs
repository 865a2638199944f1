//! `report.md` and SVG plots of the preference stage (docs/architecture.md "Outputs"): recovery of the
//! groups (ARI, purity), each model's held-out accuracy per true group (single pooled vs EM
//! mixture vs oracle), the EM log-likelihood per iteration, and the majority:minority ratio
//! sweep (the paper's Tulu2-7B experiment, docs/algorithms.md "Experiments to reproduce" 2, on control).

use super::outcome::{GroupAccuracy, Outcome, SweepRow};
use crate::error::{Error, Result};
use crate::run::write_atomic;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

fn pct(x: Option<&f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.1}", 100.0 * v))
}

fn opt(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.3}"))
}

fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Internal(format!("cannot draw a plot: {e:?}"))
}

/// Write `report.md` and `plots/*.svg` into `dir`.
pub fn write(dir: &Path, names: &[String], main: &Outcome, sweep: &[SweepRow]) -> Result<()> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| Error::io(&plots, e))?;
    let mut s = String::new();
    let _ = writeln!(s, "# Preferences and EM reward mixture\n");
    let _ = writeln!(
        s,
        "Shares {:?}; K = {}; EM iterations {} (converged: {}); **ARI {}**, purity {}.\n",
        main.shares
            .iter()
            .map(|x| (x * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>(),
        main.k,
        main.iterations,
        main.converged,
        opt(main.ari),
        opt(main.purity)
    );
    let _ = writeln!(s, "## Held-out accuracy (%) per true group\n");
    let _ = writeln!(
        s,
        "| group | single pooled | EM mixture (matched cluster) | oracle (true split) |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    for n in names {
        let _ = writeln!(
            s,
            "| {n} | {} | {} | {} |",
            pct(main.single.get(n)),
            pct(main.mixture.get(n)),
            pct(main.oracle.get(n))
        );
    }
    let _ = writeln!(s, "\n## EM iterations (winning restart)\n");
    let _ = writeln!(
        s,
        "| restart | iteration | log-likelihood | changes | sizes | purity | ARI |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let win = main.detail["restart"].as_u64().unwrap_or(0) as usize;
    for h in main
        .history
        .iter()
        .filter(|h| h.restart == win && h.k == main.k)
    {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {} | {:?} | {} | {} |",
            h.restart,
            h.iteration,
            h.log_likelihood,
            h.assignment_changes,
            h.group_sizes,
            opt(h.purity),
            opt(h.ari)
        );
    }
    let _ = writeln!(
        s,
        "\nRestart log-likelihoods: {}; empty-cluster events: {}.\n",
        main.detail["restart_log_likelihoods"], main.detail["empty_cluster_events"]
    );
    let _ = writeln!(s, "![EM log-likelihood](plots/em_log_likelihood.svg)\n");
    plot_history(&plots.join("em_log_likelihood.svg"), main)?;
    if names.len() == 2 {
        let points: Vec<SweepPoint> = sweep
            .iter()
            .map(|r| SweepPoint {
                ratio: r.ratio,
                ari: r.outcome.ari,
                single: &r.outcome.single,
                mixture: &r.outcome.mixture,
                oracle: &r.outcome.oracle,
            })
            .collect();
        sweep_section(
            &mut s,
            dir,
            names,
            &points,
            "a model trained on the true split",
            "",
        )?;
    }
    write_atomic(&dir.join("report.md"), s.as_bytes())
}

fn plot_history(path: &Path, main: &Outcome) -> Result<()> {
    let hs: Vec<_> = main.history.iter().filter(|h| h.k == main.k).collect();
    let xmax = hs.iter().map(|h| h.iteration).max().unwrap_or(1) as f64;
    let lls: Vec<f64> = hs
        .iter()
        .map(|h| h.log_likelihood)
        .filter(|x| x.is_finite())
        .collect();
    let (lo, hi) = lls
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi + 0.05 * (hi - lo))
    } else {
        (-1.0, 0.0)
    };
    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("EM training log-likelihood", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(1f64..xmax.max(2.0), lo..hi)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc("log-likelihood")
        .draw()
        .map_err(plot_err)?;
    let restarts = hs.iter().map(|h| h.restart).max().map_or(0, |m| m + 1);
    for r in 0..restarts {
        let color = Palette99::pick(r).to_rgba();
        let pts: Vec<(f64, f64)> = hs
            .iter()
            .filter(|h| h.restart == r)
            .map(|h| (h.iteration as f64, h.log_likelihood))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(format!("restart {r}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// One majority:minority ratio of a sweep, as [`sweep_section`] reads it (the control stage's
/// [`SweepRow`] and the LM pipeline's sweep both map onto it).
#[derive(Debug, Clone, Copy)]
pub struct SweepPoint<'a> {
    /// Majority:minority ratio r (shares r/(r+1), 1/(r+1)).
    pub ratio: f64,
    /// ARI of the EM assignment against the true groups.
    pub ari: Option<f64>,
    /// Held-out accuracy per true group of the single pooled model.
    pub single: &'a GroupAccuracy,
    /// … of the mixture model matched to the group.
    pub mixture: &'a GroupAccuracy,
    /// … of the oracle (whatever the caller's oracle is; `oracle_label` names it).
    pub oracle: &'a GroupAccuracy,
}

/// Append the ratio-sweep section (heading, `note` if any, table, plus
/// `plots/em_ratio_sweep.svg` under `dir`) for two groups `names` = [majority, minority];
/// nothing when `points` is empty.
pub fn sweep_section(
    s: &mut String,
    dir: &Path,
    names: &[String],
    points: &[SweepPoint],
    oracle_label: &str,
    note: &str,
) -> Result<()> {
    if points.is_empty() || names.len() != 2 {
        return Ok(());
    }
    let (maj, min) = (&names[0], &names[1]);
    let _ = writeln!(s, "## Ratio sweep ({maj} : {min})\n");
    if !note.is_empty() {
        let _ = writeln!(s, "{note}\n");
    }
    let _ = writeln!(
        s,
        "Held-out accuracy (%) on each group; the minority is `{min}`; oracle = {oracle_label}.\n"
    );
    let _ = writeln!(s, "| ratio | ARI | single {min} | mixture {min} | oracle {min} | single {maj} | mixture {maj} | oracle {maj} |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for p in points {
        let _ = writeln!(
            s,
            "| {}:1 | {} | {} | {} | {} | {} | {} | {} |",
            p.ratio,
            opt(p.ari),
            pct(p.single.get(min)),
            pct(p.mixture.get(min)),
            pct(p.oracle.get(min)),
            pct(p.single.get(maj)),
            pct(p.mixture.get(maj)),
            pct(p.oracle.get(maj))
        );
    }
    let _ = writeln!(s, "\n![Ratio sweep](plots/em_ratio_sweep.svg)\n");
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| Error::io(&plots, e))?;
    plot_sweep(&plots.join("em_ratio_sweep.svg"), min, points)
}

fn plot_sweep(path: &Path, minority: &str, sweep: &[SweepPoint]) -> Result<()> {
    let xmax = sweep.iter().map(|r| r.ratio).fold(1.0, f64::max);
    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Held-out accuracy on the minority ({minority})"),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.5f64..xmax + 0.5, 0f64..100f64)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("majority : minority ratio")
        .y_desc("accuracy (%)")
        .draw()
        .map_err(plot_err)?;
    type Getter = for<'a> fn(&SweepPoint<'a>) -> &'a GroupAccuracy;
    let series: [(&str, RGBColor, Getter); 3] = [
        ("single pooled", RED, |p| p.single),
        ("EM mixture", BLUE, |p| p.mixture),
        ("oracle", GREEN, |p| p.oracle),
    ];
    for (name, color, get) in series {
        let pts: Vec<(f64, f64)> = sweep
            .iter()
            .filter_map(|p| get(p).get(minority).map(|a| (p.ratio, 100.0 * a)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}
