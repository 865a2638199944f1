//! The policy-comparison stage end to end on a tiny CartPole population: results in
//! `summary.json`, the report and its plots, `maxmin report` rebuilding the report from files,
//! resume after SIGINT in the middle of the policy trainings, and `maxmin bandit`.

use crate::common::{run, run_and_interrupt, text};
use std::path::Path;

fn tiny(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("tiny_maxmin.toml");
    std::fs::write(
        &p,
        r#"name = "tiny"
seed = 2
[env]
type = "cartpole"
[population]
users = 12
held-out-users = 4
comparisons-per-user = 20
[[population.groups]]
name = "left"
share = 0.75
reward = { type = "cart-position", target = -1.0, angle-weight = 1.0, alive-bonus = 4.0 }
[[population.groups]]
name = "right"
share = 0.25
reward = { type = "cart-position", target = 1.0, angle-weight = 1.0, alive-bonus = 4.0 }
[preferences]
segment-length = 5
segments = 200
[reward-model]
type = "linear-reward"
squares = true
learning-rate = 0.05
epochs = 10
batch-size = 64
[em]
k = 2
restarts = 1
max-iterations = 5
m-step-epochs = 5
[policy]
type = "mlp"
hidden = [16, 16]
[ppo]
total-timesteps = 2048
num-envs = 4
num-steps = 32
num-minibatches = 2
update-epochs = 2
checkpoint-every = 2
[compare]
seeds = [1, 2]
eval-episodes = 3
calibration-steps = 256
[[compare.objectives]]
type = "single"
[[compare.objectives]]
type = "maxmin"
"#,
    )
    .unwrap();
    p
}

fn results(dir: &Path) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    s["results"].clone()
}

#[test]
fn compare_stage_writes_results_report_and_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path());
    let out = dir.path().join("r");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    let r = results(&out);
    let r = r.as_array().expect("summary.json has results");
    assert_eq!(r.len(), 4, "2 objectives × 2 seeds");
    for x in r {
        assert!(
            x["groups"]["left"].is_number() && x["groups"]["right"].is_number(),
            "{x}"
        );
        assert!(["left", "right"].contains(&x["worst_group"].as_str().unwrap()));
        assert!(["single", "maxmin"].contains(&x["objective"].as_str().unwrap()));
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("# Preferences and EM reward mixture"),
        "{report}"
    );
    assert!(
        report.contains("| single |") && report.contains("| maxmin |"),
        "{report}"
    );
    assert!(out.join("plots/final_utilities.svg").exists());
    let metrics =
        std::fs::read_to_string(out.join("policies/maxmin__seed1/metrics.jsonl")).unwrap();
    for key in [
        "objective/kl",
        "objective/kl_coef",
        "objective/selected_group",
        "objective/worst_group",
    ] {
        assert!(metrics.contains(key), "{key} missing");
    }
    std::fs::remove_file(out.join("report.md")).unwrap();
    let o = run(&["report", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        report
    );
}

#[test]
fn compare_stage_resumes_after_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path());
    let full = dir.path().join("full");
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o).1);

    let part = dir.path().join("part");
    // Interrupt during the second policy's training.
    let watched = part.join("policies/single__seed2/metrics.jsonl");
    let o = run_and_interrupt(&cfg, &part, &watched, |m| {
        m.matches("losses/approx_kl").count() >= 3
    });
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !part.join("policies/maxmin__seed1/result.json").exists(),
        "interrupt came too late"
    );
    let o = run(&["run", "--resume", part.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(results(&part), results(&full));
}

#[test]
fn bandit_sweep_writes_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b");
    let o = run(&[
        "bandit",
        "--out",
        out.to_str().unwrap(),
        "--set",
        "minority-shares=[0.5, 0.1]",
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| 0.10 | 180 |"), "{report}");
    assert!(out.join("plots/minority_gap.svg").exists());
    let o = run(&["bandit", "--set", "beta=-1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("beta"));
}
