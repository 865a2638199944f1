//! Exit codes and messages: bad input exits 2 with a message naming the file and key; nothing
//! panics.

use crate::common::{run, text};

/// (what is broken, file contents, extra args, texts the error must contain)
const BROKEN: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "unknown key",
        "name = \"x\"\n[env]\ntype = \"cartpole\"\n[ppo]\nnum-env = 4\n",
        &[],
        &[
            ":5:1",
            "ppo",
            "unknown key `num-env`",
            "did you mean `num-envs`",
        ],
    ),
    (
        "unknown type",
        "name = \"x\"\n[env]\ntype = \"cartpol\"\n",
        &[],
        &[
            ":3:8",
            "env.type",
            "unknown type `cartpol`",
            "did you mean `cartpole`",
            "mountain-car",
        ],
    ),
    (
        "wrong value type",
        "name = \"x\"\n[env]\ntype = \"cartpole\"\n[ppo]\nlearning-rate = \"fast\"\n",
        &[],
        &[":5:", "ppo.learning-rate", "invalid type"],
    ),
    (
        "zero size",
        "name = \"x\"\n[env]\ntype = \"cartpole\"\n[ppo]\nnum-envs = 0\n",
        &[],
        &[":5:1", "ppo.num-envs", "positive"],
    ),
    (
        "negative size",
        "name = \"x\"\n[env]\ntype = \"cartpole\"\n[ppo]\nnum-steps = -5\n",
        &[],
        &[":5:", "ppo.num-steps"],
    ),
    (
        "zero hidden layer",
        "name = \"x\"\n[env]\ntype = \"cartpole\"\n[policy]\ntype = \"mlp\"\nhidden = [64, 0]\n",
        &[],
        &["policy.hidden.1", "positive"],
    ),
    (
        "policy too large for memory",
        "name = \"x\"\n[env]\ntype = \"cartpole\"\n[policy]\ntype = \"mlp\"\nhidden = [64]\n",
        &["--set", "policy.hidden=[100000,100000]"],
        &["policy.hidden", "needs at least", "GiB", "parameters"],
    ),
    (
        "rollout too large for memory",
        "name = \"x\"\n[env]\ntype = \"cartpole\"\n[ppo]\nnum-envs = 100000000000\n",
        &[],
        &["ppo.num-envs", "needs at least", "steps"],
    ),
    (
        "unreadable TOML",
        "name = \"x\"\n[env\ntype = \"cartpole\"\n",
        &[],
        &[":2:", "not valid TOML"],
    ),
    (
        "missing env",
        "name = \"x\"\n",
        &[],
        &["missing field `env`"],
    ),
    (
        "bad --set value",
        "name = \"x\"\n[env]\ntype = \"cartpole\"\n",
        &["--set", "ppo.gamma=2"],
        &["ppo.gamma", "--set", "[0, 1]"],
    ),
];

#[test]
fn broken_configs_exit_2_with_located_messages() {
    let dir = tempfile::tempdir().unwrap();
    for (what, body, extra, needles) in BROKEN {
        let f = dir.path().join(format!("{}.toml", what.replace(' ', "_")));
        std::fs::write(&f, body).unwrap();
        for sub in ["check", "run"] {
            let mut args = vec![sub, f.to_str().unwrap()];
            args.extend_from_slice(extra);
            let o = run(&args);
            let (_, err) = text(&o);
            assert_eq!(o.status.code(), Some(2), "{what} ({sub}): {err}");
            assert!(!err.contains("panicked"), "{what}: {err}");
            assert!(
                err.contains(f.file_name().unwrap().to_str().unwrap()),
                "{what}: no file name in {err}"
            );
            for n in *needles {
                assert!(err.contains(n), "{what} ({sub}): expected `{n}` in:\n{err}");
            }
        }
    }
}

#[test]
fn missing_config_file_exits_2() {
    let o = run(&["check", "configs/does-not-exist.toml"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("configs/does-not-exist.toml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["run"][..],
        &["frobnicate"],
        &["run", "x.toml", "--seed", "minus-one"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    let o = run(&["run", "--resume", "/nonexistent/run"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("not a run directory"), "{err}");
}

#[test]
fn list_names_every_plugin_kind() {
    let o = run(&["list"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    for needle in [
        "EnvConfig:",
        "cartpole",
        "pendulum",
        "PolicyConfig:",
        "mlp",
        "GroupRewardConfig:",
        "corridor-left",
        "(for Corridor-v0)",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
}

#[test]
fn check_env_passes_builtin_and_rejects_unknown() {
    let o = run(&["check-env", "cartpole"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("passed"), "{out}");
    let o = run(&["check-env", "cartpol"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("did you mean `cartpole`"), "{err}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["run", "check", "list", "check-env", "lm", "bench"] {
        let o = run(&[sub, "--help"]);
        let (out, _) = text(&o);
        assert!(o.status.success(), "{sub} --help");
        assert!(out.contains("Usage"), "{sub}: {out}");
    }
}

#[test]
fn group_reward_on_another_environment_is_refused_naming_both() {
    let o = run(&[
        "check",
        "configs/cartpole__maxmin.toml",
        "--set",
        "population.groups.1.reward={type=\"pendulum-upright\"}",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for needle in [
        "population.groups.1.reward.type",
        "pendulum-upright",
        "Pendulum-v1",
        "CartPole-v1",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
}
