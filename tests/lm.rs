//! The language-model pipeline (`kind = "lm-rlhf"`) end to end on the tiny fixture GPT-2:
//! run directory contents and report, determinism, exact resume after SIGINT, and bad input
//! (empty prompt file, prompts longer than the context window, a missing model).

use crate::common::{root, run, run_and_interrupt, text};
use std::path::{Path, PathBuf};

/// A tiny LM experiment in `dir` (fixture GPT-2 with 64 positions, conciseness + sentiment).
fn tiny(dir: &Path, steps: usize, prompts: Option<&str>) -> PathBuf {
    let p = dir.join("prompts.txt");
    let body = match prompts {
        Some(b) => b.to_string(),
        None => {
            let words = ["the", "movie", "was", "great", "awful", "I", "this", "film"];
            (0..60)
                .map(|i| {
                    (0..2 + i % 4)
                        .map(|j| words[(i * 7 + j * 3) % words.len()])
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    std::fs::write(&p, body).unwrap();
    let model = root().join("tests/data/lm/gpt2-noprefix");
    let scorer = root().join("models/sentiment-imdb");
    let cfg = dir.join("lm.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"kind = "lm-rlhf"
name = "tiny-lm"
seed = 5
[model]
model = "{}"
[model.lora]
rank = 4
[prompts]
path = "{}"
eval = 6
[generation]
max-new-tokens = 10
[population]
users = 10
held-out-users = 4
comparisons-per-user = 8
[[population.groups]]
name = "sentiment"
share = 0.8
reward = {{ type = "sentiment", model = "{}" }}
[[population.groups]]
name = "concise"
share = 0.2
reward = {{ type = "conciseness" }}
[preferences]
pool = 16
[em]
restarts = 1
max-iterations = 3
m-step-epochs = 2
[ppo]
batch-size = 6
mini-batch-size = 3
learning-rate = 0.001
[compare]
seeds = [1, 2]
steps = {steps}
checkpoint-every = 2
samples = 2
[[compare.objectives]]
type = "single"
[[compare.objectives]]
type = "maxmin"
"#,
            model.display(),
            p.display(),
            scorer.display()
        ),
    )
    .unwrap();
    cfg
}

fn results(run_dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for o in ["single", "maxmin"] {
        for s in [1, 2] {
            let p = run_dir.join(format!("policies/{o}__seed{s}/result.json"));
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("train_seconds");
            out.push(v);
        }
    }
    out
}

/// A policy's metrics without the wall-clock `perf/*` fields.
fn metrics(run_dir: &Path, policy: &str) -> Vec<String> {
    let t =
        std::fs::read_to_string(run_dir.join(format!("policies/{policy}/metrics.jsonl"))).unwrap();
    t.lines()
        .map(|l| {
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(l).unwrap();
            v.retain(|k, _| !k.starts_with("perf/"));
            serde_json::Value::Object(v).to_string()
        })
        .collect()
}

#[test]
fn lm_pipeline_writes_report_and_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), 3, None);
    let a = dir.path().join("a");
    // Three policies train at once here, one at a time in `b` below.
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
        "--set",
        "compare.jobs=3",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(out.lines().last().unwrap(), a.to_str().unwrap());
    for f in [
        "config.resolved.toml",
        "preferences.jsonl",
        "reward_models/reward_models.safetensors",
        "summary.json",
        "report.md",
        "plots/final_scores.svg",
        "policies/maxmin__seed2/samples.json",
    ] {
        assert!(a.join(f).exists(), "missing {f}");
    }
    let report = std::fs::read_to_string(a.join("report.md")).unwrap();
    for row in [
        "| reference |",
        "| single |",
        "| maxmin |",
        "Held-out pairwise accuracy",
        "The paper's claims, checked",
        "| maxmin's worst group above single's |",
    ] {
        assert!(report.contains(row), "report lacks {row}:\n{report}");
    }
    let r = results(&a);
    assert_eq!(r.len(), 4);
    for v in &r {
        let g = v["groups"].as_object().unwrap();
        assert!(
            g.contains_key("sentiment") && g.contains_key("concise"),
            "{v}"
        );
        let c = g["concise"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c), "{v}");
    }
    let m = metrics(&a, "maxmin__seed1");
    assert_eq!(m.len(), 3);
    let raw = std::fs::read_to_string(a.join("policies/maxmin__seed1/metrics.jsonl")).unwrap();
    for k in [
        "perf/gen_s",
        "perf/train_s",
        "perf/tokens_per_s",
        "true/concise",
        "group/sentiment/utility",
        "objective/kl_coef",
        "objective/selected",
    ] {
        assert!(raw.contains(k), "metrics lack {k}");
    }
    // Same seed, same everything (wall-clock fields aside), however many policies train at once.
    let b = dir.path().join("b");
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
        "--set",
        "compare.jobs=1",
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(results(&a), results(&b));
    for p in [
        "single__seed1",
        "single__seed2",
        "maxmin__seed1",
        "maxmin__seed2",
    ] {
        assert_eq!(metrics(&a, p), metrics(&b, p), "{p}");
    }
    // Another seed changes the run.
    let c = dir.path().join("c");
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--seed",
        "6",
        "--out",
        c.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_ne!(metrics(&a, "single__seed1"), metrics(&c, "single__seed1"));
    // The report regenerates from the run's files.
    std::fs::remove_file(a.join("report.md")).unwrap();
    let o = run(&["report", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(
        std::fs::read_to_string(a.join("report.md")).unwrap(),
        report
    );
}

/// `[compare] calibrate = "center"` keeps the z-score's means and drops its scales (each learned
/// reward minus its reference mean only); an unknown mode is a clear error naming the key.
#[test]
fn lm_calibrate_center_keeps_the_means_and_drops_the_scales() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), 1, None);
    let calibration = |mode: &str, out: &str| {
        let d = dir.path().join(out);
        let o = run(&[
            "run",
            cfg.to_str().unwrap(),
            "--out",
            d.to_str().unwrap(),
            "--set",
            "compare.seeds=[1]",
            "--set",
            &format!("compare.calibrate={mode}"),
        ]);
        assert!(o.status.success(), "{}", text(&o).1);
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap())
                .unwrap();
        s["calibration"]["mixture"].clone()
    };
    let z = calibration("true", "z");
    let c = calibration("\"center\"", "c");
    assert_eq!(z["mean"], c["mean"]);
    let stds = |v: &serde_json::Value| -> Vec<f64> {
        v["std"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    assert_eq!(stds(&c), vec![1.0, 1.0]);
    assert!(stds(&z).iter().all(|s| *s != 1.0), "{z}");
    let o = run(&[
        "check",
        cfg.to_str().unwrap(),
        "--set",
        "compare.calibrate=\"scale\"",
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("calibrate") && err.contains("center"),
        "{out}{err}"
    );
}

/// [`tiny`] without `[compare]` and PPO: the reward stage with token counts, a linear head,
/// `[em] ratio-sweep = ratios` and `population` appended to `[population]`.
fn reward_only_sweep(dir: &Path, population: &str, ratios: &[u32]) -> PathBuf {
    let cfg = tiny(dir, 1, None);
    let t = std::fs::read_to_string(&cfg).unwrap();
    let ratios: Vec<String> = ratios.iter().map(|r| r.to_string()).collect();
    let t = t[..t.find("[ppo]").unwrap()]
        .replace("[model.lora]\nrank = 4\n", "")
        .replace(
            "comparisons-per-user = 8\n",
            &format!("comparisons-per-user = 8\n{population}"),
        )
        .replace(
            "[em]\n",
            &format!(
                "[features]\ntoken-counts = true\n[reward-model]\ntype = \"linear-reward\"\n\
                 learning-rate = 0.01\nepochs = 3\nbatch-size = 16\n[em]\nratio-sweep = [{}]\n",
                ratios.join(", ")
            ),
        );
    std::fs::write(&cfg, t).unwrap();
    cfg
}

/// Without `[compare]` the run stops after the reward models; `[em] ratio-sweep` adds core's
/// sweep table and plot, token counts train linear heads on feature sums, and every accuracy
/// (single, mixture, ground-truth oracle) is reported per group and ratio.
#[test]
fn lm_reward_only_ratio_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = reward_only_sweep(dir.path(), "", &[1, 3]);
    let a = dir.path().join("a");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", a.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(a.join("plots/em_ratio_sweep.svg").exists());
    assert!(!a.join("policies").exists());
    let report = std::fs::read_to_string(a.join("report.md")).unwrap();
    for row in [
        "## Ratio sweep (sentiment : concise)",
        "| 1:1 |",
        "| 3:1 |",
        "| oracle |",
        "sentiment ~ concise r = ",
    ] {
        assert!(report.contains(row), "report lacks {row}:\n{report}");
    }
    assert!(!report.contains("## Policies"), "{report}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["reward_models"]["features"]["encoding"], "sums");
    let sweep = s["ratio_sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 2);
    for row in sweep {
        for g in ["sentiment", "concise"] {
            for k in ["single", "oracle"] {
                let v = row[k][g].as_f64().unwrap_or(f64::NAN);
                assert!((0.0..=1.0).contains(&v), "{k} {g}: {row}");
            }
            // A cluster EM left empty on this tiny population has no model to report.
            if let Some(v) = row["mixture"][g].as_f64() {
                assert!((0.0..=1.0).contains(&v), "mixture {g}: {row}");
            }
        }
    }
    // null when a ground truth is constant over the pool (the fixture model's words are
    // unknown to the scorer), else a correlation.
    let r = &s["preferences"]["truth_correlation"]["sentiment~concise"];
    assert!(
        r.is_null() || r.as_f64().is_some_and(|r| (-1.0..=1.0).contains(&r)),
        "{r}"
    );
    let m = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    assert!(m.contains("preferences/truth_correlation/sentiment~concise"));
}

/// `[population] held-out-shares = "equal"`: every ratio is measured on the same held-out users
/// and labels (so each group's oracle accuracy is the same at every ratio) with the same number
/// of comparisons per group; too few held-out users for the groups is refused by key.
#[test]
fn lm_ratio_sweep_with_equal_held_out_shares() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = reward_only_sweep(dir.path(), "held-out-shares = \"equal\"\n", &[1, 4]);
    let t = std::fs::read_to_string(&cfg).unwrap();
    let a = dir.path().join("a");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", a.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    let sweep = s["ratio_sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 2);
    for g in ["sentiment", "concise"] {
        // 4 held-out users, 2 per group, 8 comparisons each, at both ratios.
        for row in sweep {
            assert_eq!(row["held_out_per_group"][g], 16, "{g}: {row}");
        }
        assert_eq!(
            sweep[0]["oracle"][g], sweep[1]["oracle"][g],
            "{g}: {sweep:?}"
        );
    }
    let report = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(
        report.contains("Held-out comparisons per group: 1:1 sentiment 16, concise 16; 4:1"),
        "{report}"
    );
    // One held-out user cannot cover two groups.
    std::fs::write(&cfg, t.replace("held-out-users = 4", "held-out-users = 1")).unwrap();
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("b").to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("held-out-users") && err.contains("at least one held-out user per group"),
        "{out}{err}"
    );
}

#[test]
fn lm_pipeline_resumes_after_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), 8, None);
    let full = dir.path().join("full");
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o).1);

    let part = dir.path().join("part");
    // Interrupt during the second policy, after its first checkpoint.
    let watched = part.join("policies/single__seed2/metrics.jsonl");
    let o = run_and_interrupt(&cfg, &part, &watched, |m| m.lines().count() >= 3);
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !part.join("policies/single__seed2/result.json").exists(),
        "interrupt came too late"
    );
    let o = run(&["run", "--resume", part.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(results(&part), results(&full));
    assert_eq!(
        metrics(&part, "single__seed2"),
        metrics(&full, "single__seed2")
    );
}

#[test]
fn lm_bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Empty prompt file.
    let cfg = tiny(dir.path(), 2, Some("\n\n"));
    for cmd in ["check", "run"] {
        let o = run(&[cmd, cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o).1);
        let err = text(&o).1;
        assert!(
            err.contains("prompts.txt") && err.contains("no prompts"),
            "{err}"
        );
    }
    // A prompt longer than the fixture's 64 positions minus the 10-token budget.
    let long = format!("{}\n", ["the movie was great"; 40].join(" "));
    let mut body = "a movie\n".repeat(20);
    body.push_str(&long);
    let cfg = tiny(dir.path(), 2, Some(&body));
    let o = run(&["check", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    let err = text(&o).1;
    assert!(
        err.contains("prompts.txt") && err.contains("positions"),
        "{err}"
    );
    // A model directory that does not exist.
    let cfg = tiny(dir.path(), 2, None);
    let o = run(&[
        "check",
        cfg.to_str().unwrap(),
        "--set",
        "model.model=no/such/model",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    assert!(text(&o).1.contains("no/such/model"), "{}", text(&o).1);
}

/// An LM run whose buffers or weights cannot fit in memory exits 2 at once, naming the key and
/// the estimate, before the model is loaded.
#[test]
fn lm_memory_bombs_exit_2_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), 2, None);
    let out = dir.path().join("bomb");
    for cmd in ["check", "run"] {
        let t0 = std::time::Instant::now();
        let mut args = vec![
            cmd,
            cfg.to_str().unwrap(),
            "--set",
            "ppo.batch-size=4000000000",
            "--set",
            "ppo.mini-batch-size=4000000000",
        ];
        if cmd == "run" {
            args.extend(["--out", out.to_str().unwrap()]);
        }
        let o = run(&args);
        let err = text(&o).1;
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        for n in ["ppo.mini-batch-size", "needs at least", "TiB", "lm.toml"] {
            assert!(err.contains(n), "{cmd}: expected `{n}` in {err}");
        }
        assert!(
            t0.elapsed().as_secs_f64() < 5.0,
            "{cmd} took {:?}",
            t0.elapsed()
        );
    }
    // The weights alone, against a memory limit below them.
    let o = crate::common::maxmin()
        .args(["check", cfg.to_str().unwrap()])
        .current_dir(root())
        .env("MAXMIN_MEMORY_LIMIT", "1000")
        .output()
        .unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("model.model") && err.contains("parameters") && err.contains("needs at least"),
        "{err}"
    );
}
