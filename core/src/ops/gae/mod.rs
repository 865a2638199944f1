//! Generalised advantage estimation (Schulman et al. 2016) over a [T, N] rollout, with
//! Gymnasium's `terminated` and `truncated` kept apart.
//!
//! **Layout**: every array is [T, N] row-major, element (t, i) — step t of env i — at
//! `t * N + i`. Step t is: observe s_t (value `values[t,i]` = V(s_t)), act, receive
//! `rewards[t,i]`, and the flags `terminated[t,i]` / `truncated[t,i]` of that step.
//! `next_values[t,i]` is V of the observation that *followed* step t: V(s_{t+1}) normally (so
//! `next_values[t] = values[t+1]` inside an episode and the bootstrap value V(s_T) in the last
//! row), **V(final observation) at a truncation** (a vector env with autoreset has already
//! replaced it with the next episode's first observation: the caller keeps the final one and
//! evaluates it), and anything (ignored) at a termination.
//!
//! Recurrence, backwards from A_T = 0 (CleanRL `ppo.py` with `nextnonterminal` split in two):
//!
//! ```text
//! δ_t = r_t + γ (1 − terminated_t) next_value_t − V(s_t)
//! A_t = δ_t + γ λ (1 − (terminated_t ∨ truncated_t)) A_{t+1}
//! R_t = A_t + V(s_t)
//! ```
//!
//! With no truncations this is exactly CleanRL's computation (their `dones[t+1]` is our
//! `terminated[t]`, their `next_value` our last row of `next_values`). CleanRL treats a
//! truncation as a termination (no bootstrap); here it bootstraps from the final observation,
//! as Gymnasium's `terminated`/`truncated` split intends.
//!
//! **Variable-length rows** ([`gae_rows`], token-level PPO for language models): a batch of
//! B episodes laid out [B, W] row-major, row i holding `lens[i]` steps and then padding. Each
//! row is one whole episode that ends at its last step with V = 0 after it (TRL's
//! `compute_advantages`; a response cut at the length limit counts as finished), so inside a
//! row `next_value_t = V(s_{t+1})` and at the end `A_t = r_t − V(s_t)`. Padding gets advantage
//! and return 0. It runs the same recurrence as [`gae`] on the rows laid out time-major.
//!
//! Both PPO loops use this op: the control trainer (`maxmin_core::ppo`) calls [`gae`], the
//! token-level trainer (`maxmin_lm::ppo`) calls [`gae_rows`] (docs/algorithms.md, "PPO
//! details"). CPU ([`cpu`]) and CUDA ([`cuda`], [T, N] input only, unverified on GPU).

pub mod cpu;
pub mod cuda;
mod input;

pub use cpu::Gae;
use input::check_params;
pub use input::{GaeInput, GaeRows};

use crate::device::Device;
use crate::Result;

/// GAE(γ, λ) over a [T, N] rollout on the CPU: the control PPO trainer's entry point.
pub fn gae(input: &GaeInput, gamma: f32, lambda: f32) -> Result<Gae> {
    input.validate()?;
    check_params(gamma, lambda)?;
    Ok(cpu::gae(input, gamma, lambda))
}

/// GAE(γ, λ) over variable-length rows on the CPU (see the module doc); results are [B, W]
/// with padding 0.
pub fn gae_rows(input: &GaeRows, gamma: f32, lambda: f32) -> Result<Gae> {
    input.validate()?;
    check_params(gamma, lambda)?;
    Ok(cpu::gae_rows(input, gamma, lambda))
}

/// GAE(γ, λ) on `device` (`Device::Cuda` copies the rollout to the GPU and back).
pub fn gae_on(device: &Device, input: &GaeInput, gamma: f32, lambda: f32) -> Result<Gae> {
    input.validate()?;
    check_params(gamma, lambda)?;
    match device {
        Device::Cpu => Ok(cpu::gae(input, gamma, lambda)),
        Device::Cuda(dev) => cuda::DeviceRollout::upload(dev, input)?.gae(dev, gamma, lambda),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;
    use rand::Rng;

    /// CleanRL's loop, transcribed with its own `dones` alignment (done flag observed with
    /// s_t) and `next_value`/`next_done` for the bootstrap: the oracle when nothing truncates.
    #[allow(clippy::too_many_arguments)] // mirrors CleanRL's variables one to one
    fn cleanrl(
        rewards: &[f32],
        values: &[f32],
        dones: &[f32],
        next_value: &[f32],
        next_done: &[f32],
        t_len: usize,
        n: usize,
        gamma: f32,
        lam: f32,
    ) -> Vec<f32> {
        let mut adv = vec![0f32; t_len * n];
        for i in 0..n {
            let mut lastgaelam = 0f32;
            for t in (0..t_len).rev() {
                let (nnt, nv) = if t == t_len - 1 {
                    (1.0 - next_done[i], next_value[i])
                } else {
                    (1.0 - dones[(t + 1) * n + i], values[(t + 1) * n + i])
                };
                let delta = rewards[t * n + i] + gamma * nv * nnt - values[t * n + i];
                lastgaelam = delta + gamma * lam * nnt * lastgaelam;
                adv[t * n + i] = lastgaelam;
            }
        }
        adv
    }

    #[test]
    fn equals_cleanrl_without_truncation() {
        let (t_len, n) = (33, 5);
        let mut r = rng::stream(4, "gae-test");
        let rewards: Vec<f32> = (0..t_len * n).map(|_| r.random_range(-1.0..1.0)).collect();
        let values: Vec<f32> = (0..t_len * n).map(|_| r.random_range(-2.0..2.0)).collect();
        let last_v: Vec<f32> = (0..n).map(|_| r.random_range(-2.0..2.0)).collect();
        let term: Vec<bool> = (0..t_len * n).map(|_| r.random_bool(0.1)).collect();
        // CleanRL's dones[t] = done after step t-1; next_done = done after the last step
        let mut dones = vec![0f32; t_len * n];
        for t in 1..t_len {
            for i in 0..n {
                dones[t * n + i] = term[(t - 1) * n + i] as u8 as f32;
            }
        }
        let next_done: Vec<f32> = (0..n)
            .map(|i| term[(t_len - 1) * n + i] as u8 as f32)
            .collect();
        let mut next_values = vec![0f32; t_len * n];
        for t in 0..t_len {
            for i in 0..n {
                next_values[t * n + i] = if t + 1 < t_len {
                    values[(t + 1) * n + i]
                } else {
                    last_v[i]
                };
            }
        }
        let trunc = vec![false; t_len * n];
        let x = GaeInput {
            rewards: &rewards,
            values: &values,
            next_values: &next_values,
            terminated: &term,
            truncated: &trunc,
            t: t_len,
            n,
        };
        let got = gae(&x, 0.99, 0.95).unwrap();
        let want = cleanrl(
            &rewards, &values, &dones, &last_v, &next_done, t_len, n, 0.99, 0.95,
        );
        for (g, w) in got.advantages.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
        for ((r, a), v) in got.returns.iter().zip(&got.advantages).zip(&values) {
            assert_eq!(*r, a + v);
        }
    }

    #[test]
    fn truncation_bootstraps_from_the_final_observation_and_cuts_the_trace() {
        // one env, 3 steps; the episode is truncated after step 1, a new one starts at step 2
        let rewards = [1.0, 1.0, 1.0];
        let values = [0.5, 0.6, 0.7];
        let next_values = [0.6, 9.0, 0.8]; // 9.0 = V(final observation of episode 1)
        let x = GaeInput {
            rewards: &rewards,
            values: &values,
            next_values: &next_values,
            terminated: &[false, false, false],
            truncated: &[false, true, false],
            t: 3,
            n: 1,
        };
        let (g, l) = (0.9f32, 0.8f32);
        let out = gae(&x, g, l).unwrap();
        let a2 = 1.0 + g * 0.8 - 0.7;
        let a1 = 1.0 + g * 9.0 - 0.6; // bootstrapped, and A_2 does not leak in
        let a0 = (1.0 + g * 0.6 - 0.5) + g * l * a1;
        for (got, want) in out.advantages.iter().zip([a0, a1, a2]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        // the same step terminated instead: no bootstrap
        let x = GaeInput {
            terminated: &[false, true, false],
            truncated: &[false, false, false],
            ..x
        };
        let out = gae(&x, g, l).unwrap();
        assert!((out.advantages[1] - (1.0 - 0.6)).abs() < 1e-6);
    }

    /// GAE over each row on its own, written directly from the definition: the oracle for
    /// [`gae_rows`].
    fn per_row(
        rewards: &[f32],
        values: &[f32],
        lens: &[usize],
        w: usize,
        g: f32,
        l: f32,
    ) -> Vec<f32> {
        let mut adv = vec![0f32; rewards.len()];
        for (i, &n) in lens.iter().enumerate() {
            let mut last = 0f32;
            for t in (0..n).rev() {
                let k = i * w + t;
                let next = if t + 1 < n { values[k + 1] } else { 0.0 };
                let delta = rewards[k] + g * next - values[k];
                last = delta + g * l * last;
                adv[k] = last;
            }
        }
        adv
    }

    #[test]
    fn rows_equal_a_direct_per_row_loop() {
        let (b, w) = (7, 9);
        let mut r = rng::stream(5, "gae-rows-test");
        let lens: Vec<usize> = (0..b)
            .map(|i| if i == 2 { w } else { r.random_range(1..=w) })
            .collect();
        let rewards: Vec<f32> = (0..b * w).map(|_| r.random_range(-1.0..1.0)).collect();
        let values: Vec<f32> = (0..b * w).map(|_| r.random_range(-2.0..2.0)).collect();
        for (g, l) in [(1.0, 0.95), (0.9, 0.5), (0.0, 1.0)] {
            let x = GaeRows {
                rewards: &rewards,
                values: &values,
                lens: &lens,
                width: w,
            };
            let got = gae_rows(&x, g, l).unwrap();
            let want = per_row(&rewards, &values, &lens, w, g, l);
            // the same operations in the same order: bit for bit
            assert_eq!(got.advantages, want);
            for (i, &len) in lens.iter().enumerate() {
                for t in 0..w {
                    let k = i * w + t;
                    let ret = if t < len { want[k] + values[k] } else { 0.0 };
                    assert_eq!(got.returns[k], ret, "row {i} step {t}");
                }
            }
        }
    }

    #[test]
    fn rows_by_hand_and_padding_stays_zero() {
        // Row 0: 2 tokens, row 1: 1 token (+1 pad, whose reward and value are ignored).
        let rewards = [0.0, 1.0, 2.0, 5.0];
        let values = [0.5, 0.25, 1.0, 3.0];
        let x = GaeRows {
            rewards: &rewards,
            values: &values,
            lens: &[2, 1],
            width: 2,
        };
        let out = gae_rows(&x, 1.0, 0.5).unwrap();
        // Row 0: δ1 = 1 − 0.25 = 0.75; δ0 = 0 + 0.25 − 0.5 = −0.25; A0 = δ0 + 0.5·A1 = 0.125.
        // Row 1: δ0 = 2 − 1 = 1.
        assert_eq!(out.advantages, vec![0.125, 0.75, 1.0, 0.0]);
        assert_eq!(out.returns, vec![0.625, 1.0, 2.0, 0.0]);
        let bad = GaeRows { lens: &[3, 1], ..x };
        assert!(gae_rows(&bad, 1.0, 0.5)
            .unwrap_err()
            .to_string()
            .contains("row 0"));
        let bad = GaeRows {
            values: &values[..3],
            ..x
        };
        assert!(gae_rows(&bad, 1.0, 0.5)
            .unwrap_err()
            .to_string()
            .contains("`values`"));
    }

    #[test]
    fn bad_shapes_and_params_are_input_errors() {
        let a = [0.0f32; 4];
        let f = [false; 4];
        let x = GaeInput {
            rewards: &a,
            values: &a[..3],
            next_values: &a,
            terminated: &f,
            truncated: &f,
            t: 2,
            n: 2,
        };
        assert!(gae(&x, 0.99, 0.95)
            .unwrap_err()
            .to_string()
            .contains("`values`"));
        let x = GaeInput { values: &a, ..x };
        assert!(gae(&x, 1.5, 0.95)
            .unwrap_err()
            .to_string()
            .contains("gamma"));
        assert!(gae(&x, 0.99, 0.95).is_ok());
    }
}
