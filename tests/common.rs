//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `maxmin` binary under test.
pub fn maxmin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_maxmin"))
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `maxmin args…` in the repository root and capture everything.
pub fn run(args: &[&str]) -> Output {
    maxmin()
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .output()
        .expect("maxmin binary runs")
}

/// stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A small CartPole PPO experiment file in `dir` (fast in a debug build).
pub fn small_cartpole(dir: &Path, total: u64) -> PathBuf {
    let p = dir.join("small.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"small\"\nseed = 3\n[env]\ntype = \"cartpole\"\n[policy]\ntype = \"mlp\"\nhidden = [16, 16]\n\
             [ppo]\ntotal-timesteps = {total}\nnum-envs = 4\nnum-steps = 32\nnum-minibatches = 2\n\
             update-epochs = 2\ncheckpoint-every = 3\n"
        ),
    )
    .unwrap();
    p
}

/// metrics.jsonl of a run with the wall-clock field `charts/SPS` removed from every line.
pub fn metrics_without_sps(run_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(l).unwrap();
            v.remove("charts/SPS");
            serde_json::Value::Object(v).to_string()
        })
        .collect()
}

/// Start `maxmin run CONFIG --out OUT`, wait until `ready` holds for the text of `watched`
/// (polling), send SIGINT, and return the interrupted process's output.
pub fn run_and_interrupt(
    config: &Path,
    out: &Path,
    watched: &Path,
    ready: impl Fn(&str) -> bool,
) -> Output {
    let child = maxmin()
        .args([
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !ready(&std::fs::read_to_string(watched).unwrap_or_default()) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(300),
            "{} never reached the interrupt point",
            watched.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    child.wait_with_output().unwrap()
}
