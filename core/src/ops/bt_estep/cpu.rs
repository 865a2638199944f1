//! CPU E-step: per user, the comparisons' log σ(r_k(chosen) − r_k(rejected)) summed per group.
//!
//! Comparisons are grouped by user with a stable counting sort ([`segments`]); each user's
//! segment is then summed in comparison order with f64 accumulators, in parallel over users.
//! The result does not depend on the thread count, and the CUDA kernel sums in the same order.

use rayon::prelude::*;

/// Numerically stable log σ(x) = min(x, 0) − log1p(e^(−|x|)).
#[inline]
pub fn log_sigmoid(x: f32) -> f32 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

/// CSR grouping of comparisons by user: `order` lists comparison indices user by user (stable),
/// user `u`'s comparisons are `order[offsets[u]..offsets[u + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// Comparison indices sorted by user.
    pub order: Vec<u32>,
    /// `users + 1` offsets into `order`.
    pub offsets: Vec<u32>,
}

/// Stable counting sort of comparisons by user id (ids must be `< users`, checked by the
/// caller).
pub fn segments(user: &[u32], users: usize) -> Segments {
    let mut offsets = vec![0u32; users + 1];
    for &u in user {
        offsets[u as usize + 1] += 1;
    }
    for i in 0..users {
        offsets[i + 1] += offsets[i];
    }
    let mut next = offsets.clone();
    let mut order = vec![0u32; user.len()];
    for (i, &u) in user.iter().enumerate() {
        let slot = &mut next[u as usize];
        order[*slot as usize] = i as u32;
        *slot += 1;
    }
    Segments { order, offsets }
}

/// The [users, k] log-likelihood matrix (row-major) from [m, k] chosen / rejected rewards.
pub fn estep(r_chosen: &[f32], r_rejected: &[f32], seg: &Segments, k: usize) -> Vec<f32> {
    let users = seg.offsets.len() - 1;
    let mut out = vec![0f32; users * k];
    out.par_chunks_mut(k.max(1))
        .with_min_len(64)
        .enumerate()
        .for_each(|(u, row)| {
            let (a, b) = (seg.offsets[u] as usize, seg.offsets[u + 1] as usize);
            for (g, o) in row.iter_mut().enumerate() {
                let mut acc = 0f64;
                for &i in &seg.order[a..b] {
                    let j = i as usize * k + g;
                    acc += log_sigmoid(r_chosen[j] - r_rejected[j]) as f64;
                }
                *o = acc as f32;
            }
        });
    out
}
