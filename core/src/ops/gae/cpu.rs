//! CPU GAE: the backward recurrence of CleanRL's `ppo.py`, over all envs of a time step at
//! once (the inner loop runs along a contiguous row, so it vectorises).

use super::input::{GaeInput, GaeRows};

/// Advantages and returns, both [T, N] row-major like the inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Gae {
    /// A_t, the GAE(γ, λ) advantage.
    pub advantages: Vec<f32>,
    /// A_t + V(s_t), the value target.
    pub returns: Vec<f32>,
}

/// GAE(γ, λ) over a validated [T, N] rollout; see [`super`] for the exact semantics.
pub fn gae(x: &GaeInput, gamma: f32, lambda: f32) -> Gae {
    let (t_len, n) = (x.t, x.n);
    let mut adv = vec![0f32; t_len * n];
    let mut ret = vec![0f32; t_len * n];
    let mut last = vec![0f32; n];
    for t in (0..t_len).rev() {
        let row = t * n..(t + 1) * n;
        let (r, v, nv) = (
            &x.rewards[row.clone()],
            &x.values[row.clone()],
            &x.next_values[row.clone()],
        );
        let (term, trunc) = (&x.terminated[row.clone()], &x.truncated[row.clone()]);
        let (a_row, r_row) = (&mut adv[row.clone()], &mut ret[row]);
        for i in 0..n {
            let not_term = if term[i] { 0.0 } else { 1.0 };
            let cont = if term[i] || trunc[i] { 0.0 } else { 1.0 };
            let delta = r[i] + gamma * not_term * nv[i] - v[i];
            last[i] = delta + gamma * lambda * cont * last[i];
            a_row[i] = last[i];
            r_row[i] = last[i] + v[i];
        }
    }
    Gae {
        advantages: adv,
        returns: ret,
    }
}

/// GAE(γ, λ) over a validated batch of variable-length rows ([`super::GaeRows`]): the rows are
/// laid out time-major as a [W, B] rollout — the end of each row a termination with V = 0 after
/// it, padding a terminated step with zero reward and value — run through [`gae`], and
/// transposed back. The recurrence, and so the floating-point order, is [`gae`]'s.
pub fn gae_rows(x: &GaeRows, gamma: f32, lambda: f32) -> Gae {
    let (b, w) = (x.lens.len(), x.width);
    let mut rewards = vec![0f32; w * b];
    let mut values = vec![0f32; w * b];
    let mut next_values = vec![0f32; w * b];
    let mut terminated = vec![true; w * b];
    for (i, &len) in x.lens.iter().enumerate() {
        for t in 0..len {
            let (src, dst) = (i * w + t, t * b + i);
            rewards[dst] = x.rewards[src];
            values[dst] = x.values[src];
            if t + 1 < len {
                next_values[dst] = x.values[src + 1];
                terminated[dst] = false;
            }
        }
    }
    let time_major = gae(
        &GaeInput {
            rewards: &rewards,
            values: &values,
            next_values: &next_values,
            terminated: &terminated,
            truncated: &vec![false; w * b],
            t: w,
            n: b,
        },
        gamma,
        lambda,
    );
    let row_major = |v: &[f32]| -> Vec<f32> {
        let mut out = vec![0f32; b * w];
        for (i, &len) in x.lens.iter().enumerate() {
            for t in 0..len {
                out[i * w + t] = v[t * b + i];
            }
        }
        out
    };
    Gae {
        advantages: row_major(&time_major.advantages),
        returns: row_major(&time_major.returns),
    }
}
