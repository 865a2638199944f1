//! Runs end to end: run directory contents, determinism, and exact resume after SIGINT.

use crate::common::{metrics_without_sps, run, run_and_interrupt, small_cartpole, text};
use std::path::Path;

fn run_to(cfg: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&args);
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        stdout.lines().last().unwrap(),
        out.to_str().unwrap(),
        "last stdout line is the run dir"
    );
}

#[test]
fn run_writes_the_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_cartpole(dir.path(), 1024);
    let out = dir.path().join("r");
    run_to(&cfg, &out, &[]);
    for f in [
        "config.resolved.toml",
        "metrics.jsonl",
        "summary.json",
        "log.txt",
        "checkpoints/ppo/latest.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["env_steps"], 1024);
    assert!(summary["final_return"].as_f64().unwrap() > 0.0);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    for key in [
        "charts/episodic_return",
        "charts/SPS",
        "losses/policy_loss",
        "losses/value_loss",
        "losses/entropy",
        "losses/approx_kl",
        "losses/clipfrac",
        "global_step",
    ] {
        assert!(metrics.contains(&format!("\"{key}\"")), "{key} missing");
    }
    // The resolved config is complete and loads again.
    let resolved = std::fs::read_to_string(out.join("config.resolved.toml")).unwrap();
    assert!(resolved.contains("gae-lambda"), "{resolved}");
    let o = run(&["check", out.join("config.resolved.toml").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    // A second run into the same folder is refused.
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn same_seed_same_metrics_other_seed_other_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_cartpole(dir.path(), 2048);
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    run_to(&cfg, &a, &[]);
    run_to(&cfg, &b, &[]);
    run_to(&cfg, &c, &["--seed", "4"]);
    let (ma, mb, mc) = (
        metrics_without_sps(&a),
        metrics_without_sps(&b),
        metrics_without_sps(&c),
    );
    assert!(ma.len() > 20);
    assert_eq!(ma, mb);
    assert_ne!(ma, mc);
}

#[test]
fn resume_after_sigint_reproduces_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_cartpole(dir.path(), 16384);
    let full = dir.path().join("full");
    run_to(&cfg, &full, &[]);

    let part = dir.path().join("part");
    // Interrupt once a few updates are logged (well before the 128th and last).
    let o = run_and_interrupt(&cfg, &part, &part.join("metrics.jsonl"), |m| {
        m.matches("losses/approx_kl").count() >= 5
    });
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(130),
        "interrupted run exits 130: {err}"
    );
    assert!(err.contains("--resume"), "{err}");
    let interrupted = metrics_without_sps(&part);
    let updates_done = interrupted
        .iter()
        .filter(|l| l.contains("approx_kl"))
        .count();
    assert!(
        updates_done < 128,
        "the interrupt came too late to test anything"
    );

    let o = run(&["run", "--resume", part.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(metrics_without_sps(&part), metrics_without_sps(&full));
    let s = |d: &Path| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap())
                .unwrap();
        v.as_object_mut().unwrap().remove("wall_time_s");
        v
    };
    assert_eq!(s(&part), s(&full));
}
