//! Vectorised CartPole-v1: a structure-of-arrays [`VecEnv`] with every buffer allocated once.
//!
//! Why it is fast: one step is a few passes over `[num_envs]` arrays. The arithmetic passes
//! (sin/cos through the certified polynomial of [`crate::trig`], and the Euler update) and the
//! bookkeeping passes (termination flags, step counters, rewards; observation rows) are
//! branch-free and compiled twice — for the baseline target and, chosen at run time, for AVX2
//! (4 f64 lanes instead of SSE2's 2; the update's two divisions dominate) — and only the sparse
//! work (libm for the angles the polynomial cannot certify, about one in eight, resets of
//! finished episodes) runs per environment. AVX2 changes the instructions, not the arithmetic: the same IEEE operations in
//! the same order, no FMA contraction, so results are bit-identical to the scalar [`crate::CartPole`]
//! on every machine. From 2,048 sub-environments on, the arrays are halved and the halves
//! stepped on rayon's threads (`rayon::join`, one part per thread of the current pool, each at
//! least [`MIN_PAR_ENVS`]); a sub-environment's step reads and writes only its own entries, so
//! the result does not depend on the thread count.
//!
//! Semantics are those of `maxmin_core::env::SyncVecEnv` over [`crate::CartPole`], trajectory
//! for trajectory: sub-environment `i` owns a NumPy PCG64 stream seeded with `seed + i` on
//! `reset(seed)` (as Gymnasium's `SyncVectorEnv`), and both [`AutoresetMode`]s behave as there.
//! (Gymnasium's own `CartPoleVectorEnv` shares one stream across sub-environments; we keep one
//! stream each so the vector env and the single env agree.)

use crate::cartpole_physics::{euler, is_terminal, spec, start_state, CartPoleConfig, ID};
use crate::common::{parse_snapshot, snapshot_value};
use crate::np_rng::NpRng;
use crate::trig::sin_cos_fast;
use maxmin_core::env::{Actions, AutoresetMode, EnvSpec, VecEnv, VecStep};
use maxmin_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// CartPole-v1 × `num_envs`, stepped as arrays.
#[derive(Debug, Clone)]
pub struct CartPoleVecEnv {
    spec: EnvSpec,
    mode: AutoresetMode,
    max_steps: u32,
    sutton_barto_reward: bool,
    /// `[num_envs]` f64 state, one array per variable.
    x: Vec<f64>,
    x_dot: Vec<f64>,
    theta: Vec<f64>,
    theta_dot: Vec<f64>,
    steps: Vec<u32>,
    rngs: Vec<NpRng>,
    /// Scratch for sin θ and cos θ of every sub-environment.
    sin: Vec<f64>,
    cos: Vec<f64>,
    /// Scratch: whether the fast sin/cos of each sub-environment is certainly libm's.
    certain: Vec<bool>,
    /// Next-step mode: sub-environments whose episode ended in the previous step.
    pending_reset: Vec<bool>,
    obs: Vec<f32>,
    final_obs: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    x: Vec<u64>,
    x_dot: Vec<u64>,
    theta: Vec<u64>,
    theta_dot: Vec<u64>,
    steps: Vec<u32>,
    rngs: Vec<NpRng>,
    pending_reset: Vec<bool>,
}

/// Sub-environments per thread below which a step stays on one thread: waking a second thread
/// costs several µs, about a 1,000-environment step (measured with `examples/bench_vec.rs` on 2
/// cores: 2,048 environments step faster on two threads, 1,024 do not).
const MIN_PAR_ENVS: usize = 1024;

impl CartPoleVecEnv {
    /// `num_envs` (≥ 1) CartPoles with the given autoreset mode.
    pub fn new(cfg: &CartPoleConfig, num_envs: usize, mode: AutoresetMode) -> Result<Self> {
        if num_envs == 0 {
            return Err(Error::input(
                "a vector environment needs at least one environment",
                Some("set num-envs to 1 or more".into()),
            ));
        }
        let max_steps = u32::try_from(cfg.max_episode_steps).map_err(|_| {
            Error::config(
                "max-episode-steps",
                format!(
                    "expected at most {}, found {}",
                    u32::MAX,
                    cfg.max_episode_steps
                ),
            )
        })?;
        let n = num_envs;
        Ok(Self {
            spec: spec(cfg.max_episode_steps),
            mode,
            max_steps,
            sutton_barto_reward: cfg.sutton_barto_reward,
            x: vec![0.0; n],
            x_dot: vec![0.0; n],
            theta: vec![0.0; n],
            theta_dot: vec![0.0; n],
            steps: vec![0; n],
            rngs: vec![NpRng::default(); n],
            sin: vec![0.0; n],
            cos: vec![0.0; n],
            certain: vec![false; n],
            pending_reset: vec![false; n],
            obs: vec![0.0; n * 4],
            final_obs: vec![0.0; n * 4],
            rewards: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
        })
    }

    /// Every sub-environment's mutable state, as one [`Lanes`].
    fn lanes(&mut self) -> Lanes<'_> {
        Lanes {
            x: &mut self.x,
            x_dot: &mut self.x_dot,
            theta: &mut self.theta,
            theta_dot: &mut self.theta_dot,
            steps: &mut self.steps,
            rngs: &mut self.rngs,
            sin: &mut self.sin,
            cos: &mut self.cos,
            certain: &mut self.certain,
            pending_reset: &mut self.pending_reset,
            obs: &mut self.obs,
            final_obs: &mut self.final_obs,
            rewards: &mut self.rewards,
            terminated: &mut self.terminated,
            truncated: &mut self.truncated,
        }
    }
}

#[inline(always)]
fn write_row(buf: &mut [f32], i: usize, s: &[f64; 4]) {
    let row = &mut buf[i * 4..i * 4 + 4];
    for (o, v) in row.iter_mut().zip(s) {
        *o = *v as f32;
    }
}

/// What one step needs besides the state: the same for every sub-environment.
#[derive(Clone, Copy)]
struct StepParams {
    max_steps: u32,
    step_reward: f32,
    end_reward: f32,
    next_step: bool,
}

/// The mutable state of a contiguous range of sub-environments (observation buffers: 4 values
/// per sub-environment). A step of one sub-environment touches only its own entries, so a range
/// can be split and its halves stepped on different threads with the same result.
struct Lanes<'a> {
    x: &'a mut [f64],
    x_dot: &'a mut [f64],
    theta: &'a mut [f64],
    theta_dot: &'a mut [f64],
    steps: &'a mut [u32],
    rngs: &'a mut [NpRng],
    sin: &'a mut [f64],
    cos: &'a mut [f64],
    certain: &'a mut [bool],
    pending_reset: &'a mut [bool],
    obs: &'a mut [f32],
    final_obs: &'a mut [f32],
    rewards: &'a mut [f32],
    terminated: &'a mut [bool],
    truncated: &'a mut [bool],
}

impl<'a> Lanes<'a> {
    fn len(&self) -> usize {
        self.x.len()
    }

    /// `[0, mid)` and `[mid, len)`.
    fn split_at(self, mid: usize) -> (Lanes<'a>, Lanes<'a>) {
        let (x, x2) = self.x.split_at_mut(mid);
        let (x_dot, x_dot2) = self.x_dot.split_at_mut(mid);
        let (theta, theta2) = self.theta.split_at_mut(mid);
        let (theta_dot, theta_dot2) = self.theta_dot.split_at_mut(mid);
        let (steps, steps2) = self.steps.split_at_mut(mid);
        let (rngs, rngs2) = self.rngs.split_at_mut(mid);
        let (sin, sin2) = self.sin.split_at_mut(mid);
        let (cos, cos2) = self.cos.split_at_mut(mid);
        let (certain, certain2) = self.certain.split_at_mut(mid);
        let (pending_reset, pending_reset2) = self.pending_reset.split_at_mut(mid);
        let (obs, obs2) = self.obs.split_at_mut(mid * 4);
        let (final_obs, final_obs2) = self.final_obs.split_at_mut(mid * 4);
        let (rewards, rewards2) = self.rewards.split_at_mut(mid);
        let (terminated, terminated2) = self.terminated.split_at_mut(mid);
        let (truncated, truncated2) = self.truncated.split_at_mut(mid);
        (
            Lanes {
                x,
                x_dot,
                theta,
                theta_dot,
                steps,
                rngs,
                sin,
                cos,
                certain,
                pending_reset,
                obs,
                final_obs,
                rewards,
                terminated,
                truncated,
            },
            Lanes {
                x: x2,
                x_dot: x_dot2,
                theta: theta2,
                theta_dot: theta_dot2,
                steps: steps2,
                rngs: rngs2,
                sin: sin2,
                cos: cos2,
                certain: certain2,
                pending_reset: pending_reset2,
                obs: obs2,
                final_obs: final_obs2,
                rewards: rewards2,
                terminated: terminated2,
                truncated: truncated2,
            },
        )
    }

    #[inline(always)]
    fn get(&self, i: usize) -> [f64; 4] {
        [self.x[i], self.x_dot[i], self.theta[i], self.theta_dot[i]]
    }

    /// Draw a start state for sub-environment `i` and write its observation row.
    #[inline]
    fn reset_one(&mut self, i: usize) {
        let s = start_state(&mut self.rngs[i]);
        (self.x[i], self.x_dot[i], self.theta[i], self.theta_dot[i]) = (s[0], s[1], s[2], s[3]);
        self.steps[i] = 0;
        write_row(self.obs, i, &s);
    }

    /// One step on `parts` threads at most (rayon's current pool): the range is halved and the
    /// halves stepped with `rayon::join` until each part is one thread's share.
    fn step_parallel(self, acts: &[u32], p: StepParams, parts: usize) {
        if parts <= 1 {
            self.step(acts, p);
            return;
        }
        let left_parts = parts / 2;
        // A multiple of 8 keeps both halves' f64 arrays on whole vector lanes.
        let mid = (self.len() * left_parts / parts) & !7;
        let (a, b) = self.split_at(mid);
        let (acts_a, acts_b) = acts.split_at(mid);
        rayon::join(
            || a.step_parallel(acts_a, p, left_parts),
            || b.step_parallel(acts_b, p, parts - left_parts),
        );
    }

    /// One step of every sub-environment of the range: the dense passes, then the sparse one.
    fn step(mut self, acts: &[u32], p: StepParams) {
        self.dense(acts, p);
        // Sparse pass: pending resets (next-step mode) and finished episodes.
        for i in 0..self.len() {
            if p.next_step && self.pending_reset[i] {
                self.reset_one(i);
                self.rewards[i] = 0.0;
                self.terminated[i] = false;
                self.truncated[i] = false;
                self.pending_reset[i] = false;
                continue;
            }
            if self.terminated[i] || self.truncated[i] {
                if p.next_step {
                    // the observation row already holds the final state
                    self.pending_reset[i] = true;
                } else {
                    let s = self.get(i);
                    write_row(self.final_obs, i, &s);
                    self.reset_one(i);
                }
            }
        }
    }

    /// The branch-free passes (see the module doc). Pending (next-step) sub-environments are
    /// integrated too and then overwritten by their reset in the sparse pass, which costs less
    /// than branching.
    fn dense(&mut self, acts: &[u32], p: StepParams) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { self.dense_avx2(acts, p) };
            return;
        }
        self.dense_generic(acts, p);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn dense_avx2(&mut self, acts: &[u32], p: StepParams) {
        self.dense_generic(acts, p);
    }

    #[inline(always)]
    fn dense_generic(&mut self, acts: &[u32], p: StepParams) {
        let n = self.len();
        let (sin, cos) = (&mut self.sin[..n], &mut self.cos[..n]);
        let certain = &mut self.certain[..n];
        let (x, x_dot) = (&mut self.x[..n], &mut self.x_dot[..n]);
        let (theta, theta_dot) = (&mut self.theta[..n], &mut self.theta_dot[..n]);
        let acts = &acts[..n];
        for i in 0..n {
            (sin[i], cos[i], certain[i]) = sin_cos_fast(theta[i]);
        }
        for i in 0..n {
            if !certain[i] {
                (sin[i], cos[i]) = (theta[i].sin(), theta[i].cos());
            }
        }
        for i in 0..n {
            let s = euler(
                [x[i], x_dot[i], theta[i], theta_dot[i]],
                acts[i] == 1,
                sin[i],
                cos[i],
            );
            (x[i], x_dot[i], theta[i], theta_dot[i]) = (s[0], s[1], s[2], s[3]);
        }
        let (steps, rewards) = (&mut self.steps[..n], &mut self.rewards[..n]);
        let (terminated, truncated) = (&mut self.terminated[..n], &mut self.truncated[..n]);
        for i in 0..n {
            let term = is_terminal(&[x[i], x_dot[i], theta[i], theta_dot[i]]);
            let st = steps[i] + 1;
            steps[i] = st;
            terminated[i] = term;
            truncated[i] = !term & (st >= p.max_steps);
            rewards[i] = if term { p.end_reward } else { p.step_reward };
        }
        let obs = &mut self.obs[..n * 4];
        for i in 0..n {
            write_row(obs, i, &[x[i], x_dot[i], theta[i], theta_dot[i]]);
        }
    }
}

impl VecEnv for CartPoleVecEnv {
    fn num_envs(&self) -> usize {
        self.x.len()
    }

    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn autoreset_mode(&self) -> AutoresetMode {
        self.mode
    }

    fn reset(&mut self, seed: u64) -> &[f32] {
        let mut lanes = self.lanes();
        for i in 0..lanes.len() {
            lanes.rngs[i] = NpRng::from_seed(seed.wrapping_add(i as u64));
            lanes.reset_one(i);
        }
        self.pending_reset.fill(false);
        &self.obs
    }

    /// # Panics
    /// If `actions` is not `Discrete` with one action per sub-environment, each 0 or 1.
    fn step(&mut self, actions: Actions<'_>) -> VecStep<'_> {
        let n = self.num_envs();
        let acts = match actions {
            Actions::Discrete(a) if a.len() == n => a,
            other => panic!("{ID} vector env: expected {n} discrete actions, found {other:?}"),
        };
        let (step_reward, end_reward) = if self.sutton_barto_reward {
            (0.0, -1.0)
        } else {
            (1.0, 1.0)
        };
        assert!(
            acts.iter().all(|&a| a < 2),
            "{ID}: an action is outside the action space Discrete(2): {acts:?}"
        );
        let p = StepParams {
            max_steps: self.max_steps,
            step_reward,
            end_reward,
            next_step: self.mode == AutoresetMode::NextStep,
        };
        let parts = rayon::current_num_threads().min(n / MIN_PAR_ENVS).max(1);
        self.lanes().step_parallel(acts, p, parts);
        VecStep {
            obs: &self.obs,
            rewards: &self.rewards,
            terminated: &self.terminated,
            truncated: &self.truncated,
            final_obs: &self.final_obs,
        }
    }

    fn snapshot(&self) -> serde_json::Value {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        snapshot_value(&Snapshot {
            x: bits(&self.x),
            x_dot: bits(&self.x_dot),
            theta: bits(&self.theta),
            theta_dot: bits(&self.theta_dot),
            steps: self.steps.clone(),
            rngs: self.rngs.clone(),
            pending_reset: self.pending_reset.clone(),
        })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: Snapshot = parse_snapshot(ID, state)?;
        let n = self.num_envs();
        let lens = [
            s.x.len(),
            s.x_dot.len(),
            s.theta.len(),
            s.theta_dot.len(),
            s.steps.len(),
            s.rngs.len(),
            s.pending_reset.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(Error::input(
                format!("{ID} vector env: snapshot is not of {n} sub-environments"),
                None,
            ));
        }
        let floats = |v: &[u64]| v.iter().map(|b| f64::from_bits(*b)).collect::<Vec<_>>();
        self.x = floats(&s.x);
        self.x_dot = floats(&s.x_dot);
        self.theta = floats(&s.theta);
        self.theta_dot = floats(&s.theta_dot);
        self.steps = s.steps;
        self.rngs = s.rngs;
        self.pending_reset = s.pending_reset;
        // The observation buffer is the current state (next-step mode keeps the final
        // observation of a pending sub-environment, which is also its current state).
        let lanes = self.lanes();
        for i in 0..n {
            write_row(lanes.obs, i, &lanes.get(i));
        }
        Ok(())
    }
}
