//! The preference + EM stage through the binary: run-directory contents and determinism, and
//! the bad-input handling issue 3 asks for (malformed JSONL, `skip-bad`, K > users, a group
//! absent from the data, a user with no comparisons).

use crate::common::{run, text};
use std::path::{Path, PathBuf};

/// A small two-group CartPole preference experiment (fast in a debug build).
fn small(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("em.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"em-small\"\nseed = 2\n[env]\ntype = \"cartpole\"\n\
             [population]\nusers = 10\nheld-out-users = 4\ncomparisons-per-user = 30\n\
             [[population.groups]]\nname = \"left\"\nshare = 0.7\nreward = {{ type = \"cart-position\", target = -1.0 }}\n\
             [[population.groups]]\nname = \"right\"\nshare = 0.3\nreward = {{ type = \"cart-position\", target = 1.0 }}\n\
             [preferences]\nsegment-length = 8\nsegments = 300\ntemperature = 0.1\n{extra}\n\
             [reward-model]\ntype = \"linear-reward\"\nlearning-rate = 0.05\nepochs = 20\nbatch-size = 64\n\
             [em]\nk = 2\nrestarts = 2\nmax-iterations = 6\nm-step-epochs = 10\n"
        ),
    )
    .unwrap();
    p
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn em_run_writes_everything_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small(tmp.path(), "");
    let mut ems = Vec::new();
    for name in ["a", "b"] {
        let out = tmp.path().join(name);
        let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let (so, se) = text(&o);
        assert!(o.status.success(), "{so}{se}");
        let s = summary(&out);
        let em = &s["em"];
        for key in ["ari", "purity", "iterations", "single", "mixture", "oracle"] {
            assert!(!em[key].is_null(), "summary.em lacks {key}: {em}");
        }
        assert!(em["single"]["right"].is_number(), "{em}");
        let train = std::fs::read_to_string(out.join("preferences/train.jsonl")).unwrap();
        assert_eq!(train.lines().count(), 10 * 30);
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
        for key in [
            "em/log_likelihood",
            "em/assignment_changes",
            "em/group_sizes",
            "em/purity",
            "em/ari",
        ] {
            assert!(first.get(key).is_some(), "metrics lack {key}: {first}");
        }
        assert!(std::fs::read_to_string(out.join("report.md"))
            .unwrap()
            .contains("ARI"));
        assert!(out.join("plots/em_log_likelihood.svg").is_file());
        assert!(out.join("reward_models.safetensors").is_file());
        let mut em = em.clone();
        em.as_object_mut().unwrap().remove("wall_time_s");
        em["detail"].as_object_mut().unwrap().remove("wall_time_s");
        ems.push(em);
    }
    assert_eq!(ems[0], ems[1], "same seed, different results");
}

fn data_file(dir: &Path, lines: &[String]) -> PathBuf {
    let p = dir.join("prefs.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn line(user: &str, group: &str, sign: f32) -> String {
    let seg = |x: f32| format!("[[{x}, 0, 0, 0, 1], [{x}, 0, 0, 0, 0]]");
    format!("{{\"user\": \"{user}\", \"context\": null, \"chosen\": {}, \"rejected\": {}, \"group\": \"{group}\"}}", seg(sign * 0.1), seg(-sign * 0.1))
}

fn file_lines(groups: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        for _ in 0..6 {
            v.push(line(
                &format!("u{i}"),
                g,
                if *g == "left" { -1.0 } else { 1.0 },
            ));
        }
    }
    v
}

#[test]
fn malformed_jsonl_names_file_and_line_or_is_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines = file_lines(&["left", "left", "left", "right", "right", "right"]);
    lines[2] =
        "{\"user\": \"u0\", \"chosen\": [[0.1, 0, 0, 0]], \"rejected\": [[0.1, 0, 0, 0, 1]]}"
            .into();
    let data = data_file(tmp.path(), &lines);
    let cfg = small(tmp.path(), &format!("data = {:?}", data.to_str().unwrap()));
    let out = tmp.path().join("r1");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let (so, se) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{so}{se}");
    assert!(
        se.contains("prefs.jsonl:3") && se.contains("values, expected 5"),
        "{se}"
    );
    let cfg = small(
        tmp.path(),
        &format!("data = {:?}\nskip-bad = true", data.to_str().unwrap()),
    );
    let out = tmp.path().join("r2");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}{se}");
    assert_eq!(summary(&out)["em"]["detail"]["skipped_lines"], 1);
}

#[test]
fn a_group_absent_from_the_data_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_file(tmp.path(), &file_lines(&["left", "left", "left", "left"]));
    let cfg = small(tmp.path(), &format!("data = {:?}", data.to_str().unwrap()));
    let out = tmp.path().join("r");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}{se}");
    let em = &summary(&out)["em"];
    assert_eq!(
        em["detail"]["absent_groups"],
        serde_json::json!(["right"]),
        "{em}"
    );
    assert!(em["oracle"].get("right").is_none(), "{em}");
}

#[test]
fn k_above_users_and_users_without_comparisons_are_config_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small(tmp.path(), "");
    let o = run(&["check", cfg.to_str().unwrap(), "--set", "em.k=11"]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{se}");
    assert!(se.contains("em.k") && se.contains("10 users"), "{se}");
    let o = run(&[
        "check",
        cfg.to_str().unwrap(),
        "--set",
        "population.comparisons-per-user=0",
    ]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{se}");
    assert!(se.contains("population.comparisons-per-user"), "{se}");
    // A data file with fewer users than K: a clear input error.
    let data = data_file(tmp.path(), &file_lines(&["left", "right"]));
    let cfg = small(
        tmp.path(),
        &format!(
            "data = {:?}\nheld-out-fraction = 0.0",
            data.to_str().unwrap()
        ),
    );
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--set",
        "em.k=3",
        "--out",
        tmp.path().join("r").to_str().unwrap(),
    ]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{se}");
    assert!(se.contains("K = 3") && se.contains("found 2"), "{se}");
}
