//! The environment guide's example (`envs/README.md`, "Writing a new environment"): a new
//! environment with two group rewards and a MaxMin experiment on it is one file
//! (`envs/src/corridor.rs`) plus one registration line, no core edit. Checked as the guide shows
//! it: every Rust block of the guide is code of that file, the file is registered by the one
//! line the guide names, core never names it, and the guide's experiment runs as written.

use crate::common::{root, run, text};

const GUIDE: &str = "envs/README.md";
const FILE: &str = "envs/src/corridor.rs";

/// The fenced blocks of `markdown` whose info string is `lang`.
fn blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => {
                current = (info.trim() == lang).then(String::new);
                if current.is_none() {
                    // skip a block of another language: consume until its end
                    current = Some("\u{0}skip".into());
                }
            }
            (Some(b), Some(_)) => {
                if !b.starts_with('\u{0}') {
                    out.push(std::mem::take(b));
                }
                current = None;
            }
            (Some(b), None) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// Code without comments, whitespace or trailing commas, for comparing a guide's excerpt with
/// the formatted file.
fn normalise(code: &str) -> String {
    let mut s: String = code
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    for closer in [")", "}", "]"] {
        s = s.replace(&format!(",{closer}"), closer);
    }
    s
}

#[test]
fn every_rust_block_of_the_guide_is_code_of_the_example_file() {
    let guide = std::fs::read_to_string(root().join(GUIDE)).unwrap();
    let file = normalise(&std::fs::read_to_string(root().join(FILE)).unwrap());
    let rust = blocks(&guide, "rust");
    assert!(
        rust.len() >= 5,
        "expected the guide's Rust blocks, found {}",
        rust.len()
    );
    for b in &rust {
        assert!(
            file.contains(&normalise(b)),
            "this block of {GUIDE} is not in {FILE}:\n{b}"
        );
    }
}

#[test]
fn the_example_is_one_file_and_one_registration_line_outside_core() {
    let lib = std::fs::read_to_string(root().join("envs/src/lib.rs")).unwrap();
    assert!(
        lib.lines().any(|l| l.trim() == "pub mod corridor;"),
        "envs/src/lib.rs"
    );
    // The registrations the guide relies on are in the file itself.
    let file = std::fs::read_to_string(root().join(FILE)).unwrap();
    for name in ["\"corridor\"", "\"corridor-right\"", "\"corridor-left\""] {
        assert!(
            file.contains(&format!("typetag::serde(name = {name})")),
            "{name}"
        );
    }
    // Core never names the example.
    let mut core = Vec::new();
    collect(&root().join("core/src"), &mut core);
    for p in core {
        let s = std::fs::read_to_string(&p).unwrap().to_lowercase();
        assert!(
            !s.contains("corridor"),
            "{} names the corridor",
            p.display()
        );
    }
}

fn collect(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_guides_maxmin_experiment_runs_as_written() {
    let guide = std::fs::read_to_string(root().join(GUIDE)).unwrap();
    let toml = blocks(&guide, "toml");
    assert_eq!(toml.len(), 1, "expected one experiment in {GUIDE}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("corridor__maxmin.toml");
    std::fs::write(&cfg, &toml[0]).unwrap();
    let out = dir.path().join("run");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let results = summary["results"]
        .as_array()
        .expect("summary.json has results");
    let objectives: Vec<&str> = results
        .iter()
        .filter_map(|r| r["objective"].as_str())
        .collect();
    assert!(
        objectives.contains(&"maxmin") && objectives.contains(&"single"),
        "{summary}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("right") && report.contains("left"),
        "{report}"
    );
}
