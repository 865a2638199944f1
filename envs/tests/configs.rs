//! Configs: typetag names, kebab-case keys, defaults, validation naming the key, the plugin
//! registry, and the specs the configs build.

use maxmin_core::env::{EnvConfig, Space};
use maxmin_core::registry;
use maxmin_envs as _;

fn parse(json: &str) -> Result<Box<dyn EnvConfig>, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// The expected id and time limit of each environment the crate registers.
const SPECS: &[(&str, &str, usize)] = &[
    ("cartpole", "CartPole-v1", 500),
    ("mountain-car", "MountainCar-v0", 200),
    ("acrobot", "Acrobot-v1", 500),
    ("pendulum", "Pendulum-v1", 200),
    ("corridor", "Corridor-v0", 100),
];

/// Registered environments, except the gym-rs adapters (feature `gym-rs`, checked in
/// `tests/gym_rs.rs`).
fn registered() -> Vec<&'static str> {
    registry::names("EnvConfig")
        .into_iter()
        .filter(|n| !n.starts_with("gym-rs-"))
        .collect()
}

#[test]
fn every_env_is_registered_and_deserialises() {
    let names = registered();
    for (ty, _, _) in SPECS {
        assert!(names.contains(ty), "{ty} not in {names:?}");
    }
    for ty in names {
        let (_, id, limit) = SPECS
            .iter()
            .find(|s| s.0 == ty)
            .unwrap_or_else(|| panic!("`{ty}` is registered: add its id and limit to SPECS"));
        let cfg = parse(&format!(r#"{{"type": "{ty}"}}"#)).unwrap();
        cfg.validate().unwrap();
        let env = cfg.build().unwrap();
        assert_eq!(env.spec().id, *id);
        assert_eq!(env.spec().max_episode_steps, Some(*limit), "{ty}");
    }
}

#[test]
fn overrides_apply() {
    let cfg =
        parse(r#"{"type": "cartpole", "max-episode-steps": 42, "sutton-barto-reward": true}"#)
            .unwrap();
    assert_eq!(cfg.build().unwrap().spec().max_episode_steps, Some(42));
    let cfg = parse(r#"{"type": "pendulum", "g": 9.81}"#).unwrap();
    cfg.validate().unwrap();
    let cfg = parse(r#"{"type": "mountain-car", "goal-velocity": 0.01}"#).unwrap();
    cfg.validate().unwrap();
}

#[test]
fn unknown_keys_are_rejected() {
    let err = parse(r#"{"type": "cartpole", "max_episode_steps": 10}"#).unwrap_err();
    assert!(err.contains("max_episode_steps"), "{err}");
    let err = parse(r#"{"type": "acrobot", "book-or-nips": "nips"}"#).unwrap_err();
    assert!(err.contains("book-or-nips"), "{err}");
}

#[test]
fn validation_names_the_key() {
    for (json, key) in [
        (
            r#"{"type": "cartpole", "max-episode-steps": 0}"#,
            "max-episode-steps",
        ),
        (
            r#"{"type": "mountain-car", "max-episode-steps": 0}"#,
            "max-episode-steps",
        ),
        (
            r#"{"type": "acrobot", "max-episode-steps": 0}"#,
            "max-episode-steps",
        ),
        (
            r#"{"type": "pendulum", "max-episode-steps": 0}"#,
            "max-episode-steps",
        ),
        (r#"{"type": "pendulum", "g": -1.0}"#, "g"),
        (r#"{"type": "corridor", "length": 1}"#, "length"),
    ] {
        let cfg = parse(json).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{json}: {err}");
        assert!(cfg.build().is_err(), "{json}: build must validate");
    }
}

#[test]
fn spaces_match_gymnasium() {
    let cartpole = parse(r#"{"type": "cartpole"}"#).unwrap().build().unwrap();
    let Space::Box { high, .. } = &cartpole.spec().observation_space else {
        panic!("box");
    };
    // np.float32(12 * 2 * math.pi / 360 * 2) and np.float32(4.8).
    assert_eq!(high[2], 0.41887903f32);
    assert_eq!(high[0], 4.8f32);
    assert!(high[1].is_infinite() && high[3].is_infinite());
    let pendulum = parse(r#"{"type": "pendulum"}"#).unwrap().build().unwrap();
    assert_eq!(
        pendulum.spec().action_space,
        Space::Box {
            low: vec![-2.0],
            high: vec![2.0]
        }
    );
    let acrobot = parse(r#"{"type": "acrobot"}"#).unwrap().build().unwrap();
    let Space::Box { high, .. } = &acrobot.spec().observation_space else {
        panic!("box");
    };
    assert_eq!(high[4], (4.0 * std::f64::consts::PI) as f32);
    assert_eq!(high[5], (9.0 * std::f64::consts::PI) as f32);
}

#[test]
fn never_seeded_env_uses_seed_zero_stream() {
    for ty in registered() {
        let cfg = parse(&format!(r#"{{"type": "{ty}"}}"#)).unwrap();
        let (mut a, mut b) = (cfg.build().unwrap(), cfg.build().unwrap());
        let d = a.spec().observation_space.dim();
        let (mut oa, mut ob) = (vec![0.0; d], vec![0.0; d]);
        a.reset(None, &mut oa);
        b.reset(Some(0), &mut ob);
        assert_eq!(oa, ob, "{ty}");
    }
}
