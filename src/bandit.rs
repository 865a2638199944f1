//! `maxmin bandit`: the impossibility result in numbers (docs/algorithms.md, "Impossibility result"): a K-armed bandit with
//! two groups whose rewards are linear in arm features, where every KL-regularised optimum is
//! closed form, π ∝ π_ref·exp(r/β). No sampling and no training noise: the pooled Bradley–Terry
//! reward is the exact population maximum-likelihood fit (Newton's method on the expected
//! logistic loss over all ordered arm pairs), so the gaps below are properties of the objectives,
//! not of estimation error.
//!
//! - Arms: `arms` points on the unit circle, φ(a) = (cos 2πa/A, sin 2πa/A); π_ref uniform.
//! - Group rewards: r_1(a) = s·θ_1·φ(a), r_2(a) = s·θ_2·φ(a) with θ_1 = (1, 0) and θ_2 at angle α.
//! - Diversity ε: total-variation distance between the groups' preference distributions,
//!   averaged over uniformly drawn pairs: E_{a,b}|σ(r_1(a) − r_1(b)) − σ(r_2(a) − r_2(b))|.
//! - Utility F_u(π) = E_π r_u − β·KL(π‖π_ref); its maximum F_u* = β·log E_ref exp(r_u/β).
//! - Single-reward RLHF: π ∝ π_ref·exp(r̂/β) for the pooled fit r̂ on the share-weighted mixture.
//! - MaxMin: max_π min_u F_u(π) = min_{λ∈[0,1]} β·log E_ref exp((λr_1 + (1−λ)r_2)/β) (minimax for
//!   a concave–linear game), attained by π ∝ π_ref·exp(r_λ*/β); λ* by golden-section search.
//! - Alignment gap of group u under π: F_u* − F_u(π) ≥ 0.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `maxmin bandit [--out DIR] [--set key=value]…`: the defaults of [`BanditConfig`] with the
/// overrides, the sweep, and its report in `DIR` (default `runs/bandit__<timestamp>`), whose
/// path is printed.
pub fn run(out: Option<PathBuf>, sets: &[String]) -> maxmin_core::Result<()> {
    let cfg: BanditConfig =
        maxmin_core::config::load_str("", Path::new("<bandit defaults>"), sets)?.value;
    let dir = out.unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("bandit__{}", maxmin_core::run::timestamp()))
    });
    let rows = sweep(&cfg);
    write_report(&dir, &cfg, &rows)?;
    println!("{}", dir.display());
    Ok(())
}

/// `[bandit]`: the sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BanditConfig {
    /// Number of arms.
    #[serde(default = "d_arms")]
    pub arms: usize,
    /// Reward scale s.
    #[serde(default = "d_scale")]
    pub reward_scale: f64,
    /// KL coefficient β.
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// Angles α between the groups' reward directions, in degrees.
    #[serde(default = "d_angles")]
    pub angles_deg: Vec<f64>,
    /// Minority shares η_2 to sweep (the majority has 1 − η_2).
    #[serde(default = "d_shares")]
    pub minority_shares: Vec<f64>,
}

fn d_arms() -> usize {
    24
}
fn d_scale() -> f64 {
    2.0
}
fn d_beta() -> f64 {
    1.0
}
fn d_angles() -> Vec<f64> {
    (0..=12).map(|i| i as f64 * 15.0).collect()
}
fn d_shares() -> Vec<f64> {
    vec![0.5, 0.3, 0.2, 0.1, 0.05]
}

impl Default for BanditConfig {
    fn default() -> Self {
        Self {
            arms: d_arms(),
            reward_scale: d_scale(),
            beta: d_beta(),
            angles_deg: d_angles(),
            minority_shares: d_shares(),
        }
    }
}

impl maxmin_core::config::Validate for BanditConfig {
    fn validate(&self) -> maxmin_core::Result<()> {
        BanditConfig::validate(self)
    }
}

impl BanditConfig {
    /// Check values; keys relative to `[bandit]`.
    pub fn validate(&self) -> maxmin_core::Result<()> {
        use maxmin_core::error::check;
        if self.arms < 2 {
            return Err(maxmin_core::Error::config(
                "arms",
                format!("expected at least 2 arms, found {}", self.arms),
            ));
        }
        check::positive_f64("reward-scale", self.reward_scale)?;
        check::positive_f64("beta", self.beta)?;
        for (i, a) in self.angles_deg.iter().enumerate() {
            check::in_range(&format!("angles-deg.{i}"), *a, 0.0, 180.0)?;
        }
        for (i, s) in self.minority_shares.iter().enumerate() {
            if !(s.is_finite() && *s > 0.0 && *s <= 0.5) {
                return Err(maxmin_core::Error::config(
                    format!("minority-shares.{i}"),
                    format!("expected a share in (0, 0.5], found {s}"),
                ));
            }
        }
        Ok(())
    }
}

/// One point of the sweep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GapRow {
    /// Minority share η_2.
    pub minority_share: f64,
    /// Angle α in degrees.
    pub angle_deg: f64,
    /// Diversity ε.
    pub diversity: f64,
    /// Majority's gap under the single-reward policy.
    pub single_majority_gap: f64,
    /// Minority's gap under the single-reward policy.
    pub single_minority_gap: f64,
    /// Majority's gap under the MaxMin policy.
    pub maxmin_majority_gap: f64,
    /// Minority's gap under the MaxMin policy.
    pub maxmin_minority_gap: f64,
    /// min_u F_u under the single-reward policy.
    pub single_worst_utility: f64,
    /// min_u F_u under the MaxMin policy.
    pub maxmin_worst_utility: f64,
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// π ∝ π_ref·exp(r/β) with π_ref uniform.
fn tilt(r: &[f64], beta: f64) -> Vec<f64> {
    let m = r.iter().fold(f64::NEG_INFINITY, |a, b| a.max(*b));
    let e: Vec<f64> = r.iter().map(|x| ((x - m) / beta).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// β·log E_ref exp(r/β) with π_ref uniform: the best attainable F for reward r.
fn soft_value(r: &[f64], beta: f64) -> f64 {
    let m = r.iter().fold(f64::NEG_INFINITY, |a, b| a.max(*b));
    let s: f64 = r.iter().map(|x| ((x - m) / beta).exp()).sum();
    m + beta * (s / r.len() as f64).ln()
}

/// F(π) = E_π r − β KL(π‖uniform).
fn utility(pi: &[f64], r: &[f64], beta: f64) -> f64 {
    let n = pi.len() as f64;
    let kl: f64 = pi
        .iter()
        .filter(|p| **p > 0.0)
        .map(|p| p * (p * n).ln())
        .sum();
    pi.iter().zip(r).map(|(p, x)| p * x).sum::<f64>() - beta * kl
}

/// Exact pooled BT fit: θ̂ = argmin Σ_{a≠b} Σ_u η_u CE(σ(Δr_u), σ(θ·Δφ)), by Newton's method.
fn pooled_fit(phi: &[[f64; 2]], rewards: &[Vec<f64>], shares: &[f64]) -> [f64; 2] {
    let n = phi.len();
    let mut theta = [0.0f64; 2];
    for _ in 0..100 {
        let (mut g, mut h) = ([0.0; 2], [[0.0; 2]; 2]);
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                let d = [phi[a][0] - phi[b][0], phi[a][1] - phi[b][1]];
                let p: f64 = rewards
                    .iter()
                    .zip(shares)
                    .map(|(r, s)| s * sigmoid(r[a] - r[b]))
                    .sum();
                let q = sigmoid(theta[0] * d[0] + theta[1] * d[1]);
                for i in 0..2 {
                    g[i] += (q - p) * d[i];
                    for j in 0..2 {
                        h[i][j] += q * (1.0 - q) * d[i] * d[j];
                    }
                }
            }
        }
        let det = h[0][0] * h[1][1] - h[0][1] * h[1][0];
        if det.abs() < 1e-300 {
            break;
        }
        let step = [
            (h[1][1] * g[0] - h[0][1] * g[1]) / det,
            (h[0][0] * g[1] - h[1][0] * g[0]) / det,
        ];
        theta[0] -= step[0];
        theta[1] -= step[1];
        if step[0].abs() + step[1].abs() < 1e-12 {
            break;
        }
    }
    theta
}

/// λ* ∈ [0, 1] minimising β·log E exp((λr_1 + (1−λ)r_2)/β), by golden-section search (convex).
fn maxmin_lambda(r1: &[f64], r2: &[f64], beta: f64) -> f64 {
    let f = |l: f64| {
        let r: Vec<f64> = r1
            .iter()
            .zip(r2)
            .map(|(a, b)| l * a + (1.0 - l) * b)
            .collect();
        soft_value(&r, beta)
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..200 {
        let (x1, x2) = (hi - g * (hi - lo), lo + g * (hi - lo));
        if f(x1) <= f(x2) {
            hi = x2;
        } else {
            lo = x1;
        }
    }
    (lo + hi) / 2.0
}

/// One sweep point.
pub fn gap_point(cfg: &BanditConfig, angle_deg: f64, minority_share: f64) -> GapRow {
    let n = cfg.arms;
    let phi: Vec<[f64; 2]> = (0..n)
        .map(|a| {
            let t = 2.0 * std::f64::consts::PI * a as f64 / n as f64;
            [t.cos(), t.sin()]
        })
        .collect();
    let al = angle_deg.to_radians();
    let thetas = [[1.0, 0.0], [al.cos(), al.sin()]];
    let rewards: Vec<Vec<f64>> = thetas
        .iter()
        .map(|t| {
            phi.iter()
                .map(|p| cfg.reward_scale * (t[0] * p[0] + t[1] * p[1]))
                .collect()
        })
        .collect();
    let shares = [1.0 - minority_share, minority_share];
    let mut tv = 0.0;
    for a in 0..n {
        for b in 0..n {
            if a != b {
                tv += (sigmoid(rewards[0][a] - rewards[0][b])
                    - sigmoid(rewards[1][a] - rewards[1][b]))
                .abs();
            }
        }
    }
    let diversity = tv / (n * (n - 1)) as f64;
    let th = pooled_fit(&phi, &rewards, &shares);
    let r_hat: Vec<f64> = phi.iter().map(|p| th[0] * p[0] + th[1] * p[1]).collect();
    let beta = cfg.beta;
    let pi_single = tilt(&r_hat, beta);
    let lam = maxmin_lambda(&rewards[0], &rewards[1], beta);
    let r_mm: Vec<f64> = rewards[0]
        .iter()
        .zip(&rewards[1])
        .map(|(a, b)| lam * a + (1.0 - lam) * b)
        .collect();
    let pi_mm = tilt(&r_mm, beta);
    let best: Vec<f64> = rewards.iter().map(|r| soft_value(r, beta)).collect();
    let f = |pi: &[f64], u: usize| utility(pi, &rewards[u], beta);
    GapRow {
        minority_share,
        angle_deg,
        diversity,
        single_majority_gap: best[0] - f(&pi_single, 0),
        single_minority_gap: best[1] - f(&pi_single, 1),
        maxmin_majority_gap: best[0] - f(&pi_mm, 0),
        maxmin_minority_gap: best[1] - f(&pi_mm, 1),
        single_worst_utility: f(&pi_single, 0).min(f(&pi_single, 1)),
        maxmin_worst_utility: f(&pi_mm, 0).min(f(&pi_mm, 1)),
    }
}

/// The whole sweep: every minority share × every angle.
pub fn sweep(cfg: &BanditConfig) -> Vec<GapRow> {
    cfg.minority_shares
        .iter()
        .flat_map(|s| cfg.angles_deg.iter().map(move |a| gap_point(cfg, *a, *s)))
        .collect()
}

/// The sweep as a Markdown table.
pub fn markdown_table(rows: &[GapRow]) -> String {
    let mut s = String::from(
        "| minority share η | angle α (°) | diversity ε | single: majority gap | single: minority gap | maxmin: majority gap | maxmin: minority gap | worst-group F: single | worst-group F: maxmin |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    // Print tiny negative rounding residue as 0.
    let z = |x: f64| if x.abs() < 5e-5 { 0.0 } else { x };
    for r in rows {
        s.push_str(&format!(
            "| {:.2} | {:.0} | {:.3} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            r.minority_share,
            r.angle_deg,
            r.diversity,
            z(r.single_majority_gap),
            z(r.single_minority_gap),
            z(r.maxmin_majority_gap),
            z(r.maxmin_minority_gap),
            z(r.single_worst_utility),
            z(r.maxmin_worst_utility)
        ));
    }
    s
}

/// Write `report.md`, `sweep.json` and `plots/minority_gap.svg` for a sweep into `dir`.
pub fn write_report(
    dir: &std::path::Path,
    cfg: &BanditConfig,
    rows: &[GapRow],
) -> maxmin_core::Result<()> {
    use plotters::prelude::*;
    let err =
        |e: &dyn std::fmt::Debug| maxmin_core::Error::Internal(format!("plotting failed: {e:?}"));
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| maxmin_core::Error::io(&plots, e))?;
    maxmin_core::run::write_json_atomic(
        &dir.join("sweep.json"),
        &serde_json::json!({ "config": cfg, "rows": rows }),
    )?;
    let path = plots.join("minority_gap.svg");
    {
        let ymax = rows
            .iter()
            .map(|r| r.single_minority_gap)
            .fold(0.1, f64::max)
            * 1.05;
        let xmax = rows.iter().map(|r| r.diversity).fold(0.01, f64::max) * 1.02;
        let root = SVGBackend::new(&path, (720, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Minority's alignment gap F* − F(π) (solid: single reward, dashed: maxmin)",
                ("sans-serif", 17),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("diversity ε (TV distance between the groups' preferences)")
            .y_desc("minority's alignment gap")
            .draw()
            .map_err(|e| err(&e))?;
        for (i, s) in cfg.minority_shares.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let col: Vec<&GapRow> = rows.iter().filter(|r| r.minority_share == *s).collect();
            chart
                .draw_series(LineSeries::new(
                    col.iter().map(|r| (r.diversity, r.single_minority_gap)),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(format!("single, minority share {s}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            let pts: Vec<(f64, f64)> = col
                .iter()
                .map(|r| (r.diversity, r.maxmin_minority_gap))
                .collect();
            for w in pts.windows(2).step_by(2) {
                chart
                    .draw_series(LineSeries::new(w.to_vec(), color.stroke_width(1)))
                    .map_err(|e| err(&e))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    let text = format!(
        "# The impossibility result in numbers\n\n\
         Closed-form KL-regularised bandit ({} arms on a circle, reward scale {}, β = {}): two groups \
         with linear rewards at angle α, the pooled Bradley–Terry fit of single-reward RLHF versus \
         MaxMin (see `src/bandit.rs` for every formula). The gap is F_u* − F_u(π), the \
         utility the group loses against its own optimal policy.\n\n\
         ![minority gap](plots/minority_gap.svg)\n\n{}",
        cfg.arms,
        cfg.reward_scale,
        cfg.beta,
        markdown_table(rows)
    );
    maxmin_core::run::write_atomic(&dir.join("report.md"), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_diversity_no_gap() {
        let r = gap_point(&BanditConfig::default(), 0.0, 0.2);
        assert!(r.diversity < 1e-12);
        for g in [
            r.single_majority_gap,
            r.single_minority_gap,
            r.maxmin_majority_gap,
            r.maxmin_minority_gap,
        ] {
            assert!(g.abs() < 1e-6, "{r:?}");
        }
    }

    #[test]
    fn single_gap_grows_with_diversity_and_minority_smallness_maxmin_closes_it() {
        let cfg = BanditConfig::default();
        let rows = sweep(&cfg);
        for s in &cfg.minority_shares {
            let col: Vec<&GapRow> = rows.iter().filter(|r| r.minority_share == *s).collect();
            for w in col.windows(2) {
                assert!(w[1].diversity >= w[0].diversity - 1e-12);
                assert!(
                    w[1].single_minority_gap >= w[0].single_minority_gap - 1e-9,
                    "gap not monotone in diversity at η={s}: {:?} → {:?}",
                    w[0],
                    w[1]
                );
            }
        }
        for a in &cfg.angles_deg {
            let col: Vec<&GapRow> = rows.iter().filter(|r| r.angle_deg == *a).collect();
            for w in col.windows(2) {
                // Shares are listed from large to small: the minority's gap must not shrink.
                assert!(
                    w[1].single_minority_gap >= w[0].single_minority_gap - 1e-9,
                    "{w:?}"
                );
            }
        }
        for r in &rows {
            // Tolerance: λ* comes from a golden-section search.
            assert!(
                r.maxmin_worst_utility >= r.single_worst_utility - 1e-7,
                "{r:?}"
            );
            // MaxMin's minority gap never exceeds single-reward RLHF's.
            assert!(
                r.maxmin_minority_gap <= r.single_minority_gap + 1e-7,
                "{r:?}"
            );
        }
        // The effect is large, not a rounding artefact: opposite groups, 5 % minority.
        let worst = gap_point(&cfg, 180.0, 0.05);
        assert!(worst.single_minority_gap > 1.0, "{worst:?}");
        assert!(
            worst.maxmin_minority_gap < 0.5 * worst.single_minority_gap,
            "{worst:?}"
        );
    }
}
