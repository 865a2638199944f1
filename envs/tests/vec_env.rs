//! The structure-of-arrays CartPole vector env against core's generic `SyncVecEnv` over single
//! CartPoles: identical trajectories in both autoreset modes, and snapshot/restore mid-run.

use maxmin_core::env::{Actions, AutoresetMode, Env, EnvConfig, SyncVecEnv, VecEnv};
use maxmin_envs::{CartPole, CartPoleConfig, CartPoleVecEnv};
use rand::Rng as _;

fn sync(cfg: &CartPoleConfig, n: usize, mode: AutoresetMode) -> SyncVecEnv {
    let envs: Vec<Box<dyn Env>> = (0..n)
        .map(|_| Box::new(CartPole::new(cfg)) as Box<dyn Env>)
        .collect();
    SyncVecEnv::new(envs, mode).unwrap()
}

/// Random actions for `steps` steps of `n` envs.
fn actions(n: usize, steps: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = maxmin_core::rng::stream(seed, "test-actions");
    (0..steps)
        .map(|_| (0..n).map(|_| rng.random_range(0..2u32)).collect())
        .collect()
}

/// Step both and require bit-identical outputs; returns how many episodes ended.
fn compare(a: &mut dyn VecEnv, b: &mut dyn VecEnv, acts: &[Vec<u32>]) -> usize {
    let n = a.num_envs();
    let mut ends = 0;
    for (t, act) in acts.iter().enumerate() {
        let sa = a.step(Actions::Discrete(act));
        let (obs, rew, term, trunc, fin) = (
            sa.obs.to_vec(),
            sa.rewards.to_vec(),
            sa.terminated.to_vec(),
            sa.truncated.to_vec(),
            sa.final_obs.to_vec(),
        );
        let sb = b.step(Actions::Discrete(act));
        assert_eq!(obs, sb.obs, "obs at step {t}");
        assert_eq!(rew, sb.rewards, "rewards at step {t}");
        assert_eq!(term, sb.terminated, "terminated at step {t}");
        assert_eq!(trunc, sb.truncated, "truncated at step {t}");
        for i in 0..n {
            if term[i] || trunc[i] {
                ends += 1;
                if a.autoreset_mode() == AutoresetMode::SameStep {
                    assert_eq!(fin[i * 4..i * 4 + 4], sb.final_obs[i * 4..i * 4 + 4]);
                }
            }
        }
    }
    ends
}

fn same_trajectories(mode: AutoresetMode, cfg: CartPoleConfig) {
    let n = 16;
    let mut soa = CartPoleVecEnv::new(&cfg, n, mode).unwrap();
    let mut reference = sync(&cfg, n, mode);
    assert_eq!(soa.reset(11), reference.reset(11));
    let ends = compare(&mut soa, &mut reference, &actions(n, 600, 1));
    // Both episode ends occur: terminations under random actions, truncations at the limit.
    assert!(ends > 100, "only {ends} episode ends");
}

/// Large vector envs are stepped in parts on rayon's threads (one per thread, ≥ 1,024 envs
/// each, split at multiples of 8): 4 threads and an uneven size give three levels of splitting
/// and parts of different lengths, which must still match the single CartPoles exactly.
#[test]
fn soa_stepped_on_several_threads_matches_sync_vec_env() {
    let n = 4 * 1024 + 13;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for mode in [AutoresetMode::SameStep, AutoresetMode::NextStep] {
        let cfg = CartPoleConfig::default();
        let mut soa = CartPoleVecEnv::new(&cfg, n, mode).unwrap();
        let mut reference = sync(&cfg, n, mode);
        assert_eq!(soa.reset(5), reference.reset(5));
        let ends = pool.install(|| compare(&mut soa, &mut reference, &actions(n, 60, 4)));
        assert!(ends > 1000, "{mode:?}: only {ends} episode ends");
    }
}

#[test]
fn soa_matches_sync_vec_env_same_step() {
    same_trajectories(AutoresetMode::SameStep, CartPoleConfig::default());
}

#[test]
fn soa_matches_sync_vec_env_next_step() {
    same_trajectories(AutoresetMode::NextStep, CartPoleConfig::default());
}

#[test]
fn soa_matches_with_truncation_and_sutton_barto_reward() {
    // A 10-step limit makes truncations frequent, in both modes.
    for mode in [AutoresetMode::SameStep, AutoresetMode::NextStep] {
        let cfg = CartPoleConfig {
            max_episode_steps: 10,
            sutton_barto_reward: true,
        };
        let n = 8;
        let mut soa = CartPoleVecEnv::new(&cfg, n, mode).unwrap();
        let mut reference = sync(&cfg, n, mode);
        soa.reset(3);
        reference.reset(3);
        let acts = actions(n, 200, 2);
        let mut truncs = 0;
        for act in &acts {
            let s = soa.step(Actions::Discrete(act));
            truncs += s.truncated.iter().filter(|&&x| x).count();
        }
        assert!(truncs > 20, "{mode:?}: only {truncs} truncations");
        soa.reset(3);
        compare(&mut soa, &mut reference, &acts);
    }
}

#[test]
fn build_vec_gives_the_soa_env() {
    let cfg: Box<dyn EnvConfig> = Box::new(CartPoleConfig::default());
    let mut v = cfg.build_vec(4, AutoresetMode::NextStep).unwrap();
    assert_eq!(v.num_envs(), 4);
    assert_eq!(v.autoreset_mode(), AutoresetMode::NextStep);
    assert_eq!(v.spec().id, "CartPole-v1");
    // Sub-environment i is seeded with seed + i: it starts where a single env seeded so does.
    let obs = v.reset(100).to_vec();
    let mut single = CartPole::new(&CartPoleConfig::default());
    let mut o = [0.0f32; 4];
    single.reset(Some(102), &mut o);
    assert_eq!(&obs[8..12], &o);
    assert!(cfg.build_vec(0, AutoresetMode::SameStep).is_err());
}

#[test]
fn snapshot_restore_continues_identically() {
    for mode in [AutoresetMode::SameStep, AutoresetMode::NextStep] {
        let cfg = CartPoleConfig::default();
        let n = 8;
        let mut a = CartPoleVecEnv::new(&cfg, n, mode).unwrap();
        a.reset(5);
        let acts = actions(n, 300, 9);
        for act in &acts[..150] {
            a.step(Actions::Discrete(act));
        }
        // Through JSON text, into a fresh env, as a checkpoint would.
        let text = serde_json::to_string(&a.snapshot()).unwrap();
        let mut b = CartPoleVecEnv::new(&cfg, n, mode).unwrap();
        b.reset(999);
        b.restore(&serde_json::from_str(&text).unwrap()).unwrap();
        let ends = compare(&mut a, &mut b, &acts[150..]);
        assert!(ends > 10);
        // A snapshot of a different size is refused.
        let mut c = CartPoleVecEnv::new(&cfg, n + 1, mode).unwrap();
        assert!(c.restore(&a.snapshot()).is_err());
    }
}
