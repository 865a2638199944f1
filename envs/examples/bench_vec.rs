//! Steps per second of vectorised CartPole-v1: the structure-of-arrays `CartPoleVecEnv` and, for
//! reference, core's generic `SyncVecEnv` over single CartPoles, for several `num_envs`.
//!
//! Run: `cargo run --release -p maxmin-envs --example bench_vec [-- SECONDS_PER_SIZE [SIZES..]]`.
//! Actions are uniform random, drawn from a seeded stream before timing (a pool of 64 steps that
//! the timed loop cycles through), and both autoreset semantics are those of training (same-step).
//! Prints one line per size: `num_envs soa_steps_per_s sync_steps_per_s`.

use maxmin_core::env::{Actions, AutoresetMode, Env, EnvConfig, SyncVecEnv, VecEnv};
use maxmin_envs::{CartPole, CartPoleConfig};
use rand::Rng as _;
use std::time::{Duration, Instant};

const POOL_STEPS: usize = 64;

/// Env-steps per second of `env` stepped for about `budget`.
fn measure(env: &mut dyn VecEnv, pool: &[Vec<u32>], budget: Duration) -> f64 {
    env.reset(0);
    // Warm-up: caches, branch predictors, and episodes at all stages.
    for a in pool.iter().cycle().take(200) {
        std::hint::black_box(env.step(Actions::Discrete(a)).rewards[0]);
    }
    let n = env.num_envs();
    let mut steps = 0usize;
    let start = Instant::now();
    loop {
        for a in pool {
            std::hint::black_box(env.step(Actions::Discrete(a)).rewards[0]);
        }
        steps += pool.len();
        let el = start.elapsed();
        if el >= budget {
            return (steps * n) as f64 / el.as_secs_f64();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let sizes: Vec<usize> = if args.len() > 1 {
        args[1..].iter().filter_map(|s| s.parse().ok()).collect()
    } else {
        vec![1, 8, 64, 1024]
    };
    let budget = Duration::from_secs_f64(secs);
    let cfg = CartPoleConfig::default();
    // RAYON_NUM_THREADS threads (default: one per core).
    let threads = rayon::ThreadPoolBuilder::new()
        .build()
        .expect("rayon thread pool");
    println!("num_envs soa_steps_per_s sync_steps_per_s");
    for n in sizes {
        let mut rng = maxmin_core::rng::stream(0, "bench-actions");
        let pool: Vec<Vec<u32>> = (0..POOL_STEPS)
            .map(|_| (0..n).map(|_| rng.random_range(0..2u32)).collect())
            .collect();
        let mut soa = cfg
            .build_vec(n, AutoresetMode::SameStep)
            .expect("CartPole vector env");
        // Stepped from a rayon worker, as in `maxmin run` (whose policy jobs run in rayon pools),
        // so that a large env's halves are handed between pool threads.
        let soa_sps = threads.install(|| measure(soa.as_mut(), &pool, budget));
        let envs: Vec<Box<dyn Env>> = (0..n)
            .map(|_| Box::new(CartPole::new(&cfg)) as Box<dyn Env>)
            .collect();
        let mut sync = SyncVecEnv::new(envs, AutoresetMode::SameStep).expect("sync vector env");
        let sync_sps = measure(&mut sync, &pool, budget);
        println!("{n} {soa_sps:.0} {sync_sps:.0}");
    }
}
