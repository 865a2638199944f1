//! CPU E-step: per user, the comparisons' log σ(r_k(chosen) − r_k(rejected)) summed per group.
//!
//! Two schedules, both with f64 accumulators and results independent of the thread count:
//! - few users relative to comparisons ([`estep_dense`]): the comparisons are cut into a fixed
//!   number of contiguous blocks, each block adds into its own [users, k] partial matrix in
//!   comparison order (streaming reads), and the partials are added in block order;
//! - many users ([`estep`]): comparisons grouped by user with a stable counting sort
//!   ([`segments`]), each user's segment summed in comparison order, in parallel over users —
//!   the order the CUDA kernel uses.
//!
//! Why it is fast: the work is one log σ per comparison and group, and libm's `exp` and
//! `log1p` are calls the compiler cannot vectorise. Both schedules first compute log σ over
//! contiguous runs of the `[m, k]` inputs with the branch-free [`crate::ops::fastmath`]
//! functions (8 lanes with AVX2, detected at run time; bit-identical to the SSE2 fallback),
//! then do the per-user additions, which are cheap, from that buffer.

use crate::ops::fastmath::log_sigmoid_diff;
use rayon::prelude::*;

/// Numerically stable log σ(x) = min(x, 0) − log1p(e^(−|x|)) (the kernels' own, vectorisable
/// form: [`crate::ops::fastmath::log_sigmoid`]).
pub use crate::ops::fastmath::log_sigmoid;

/// Comparisons per chunk of the log σ buffer in the dense schedule (fits in L1 with k ≤ 4).
const CHUNK: usize = 1024;

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
    // log σ of every comparison and group, in contiguous parallel chunks.
    let mut ls = vec![0f32; r_chosen.len()];
    let run = CHUNK * k.max(1);
    ls.par_chunks_mut(run)
        .zip(r_chosen.par_chunks(run))
        .zip(r_rejected.par_chunks(run))
        .for_each(|((o, a), b)| log_sigmoid_diff(a, b, o));
    let mut out = vec![0f32; users * k];
    out.par_chunks_mut(k.max(1))
        .with_min_len(64)
        .enumerate()
        .for_each(|(u, row)| {
            let (a, b) = (seg.offsets[u] as usize, seg.offsets[u + 1] as usize);
            for (g, o) in row.iter_mut().enumerate() {
                let mut acc = 0f64;
                for &i in &seg.order[a..b] {
                    acc += ls[i as usize * k + g] as f64;
                }
                *o = acc as f32;
            }
        });
    out
}

/// Blocks of the dense schedule (fixed, so the summation order never depends on threads).
const BLOCKS: usize = 16;

/// The dense schedule (see the module doc); `user` ids must be `< users`.
pub fn estep_dense(
    r_chosen: &[f32],
    r_rejected: &[f32],
    user: &[u32],
    users: usize,
    k: usize,
) -> Vec<f32> {
    let m = user.len();
    let per = m.div_ceil(BLOCKS).max(1);
    let partials: Vec<Vec<f64>> = (0..BLOCKS)
        .into_par_iter()
        .map(|b| {
            let mut acc = vec![0f64; users * k];
            let mut ls = vec![0f32; CHUNK * k];
            let (lo, hi) = ((b * per).min(m), ((b + 1) * per).min(m));
            let mut c = lo;
            while c < hi {
                let e = (c + CHUNK).min(hi);
                let buf = &mut ls[..(e - c) * k];
                log_sigmoid_diff(&r_chosen[c * k..e * k], &r_rejected[c * k..e * k], buf);
                for (row, &u) in buf.chunks_exact(k).zip(&user[c..e]) {
                    let dst = &mut acc[u as usize * k..(u as usize + 1) * k];
                    for (d, x) in dst.iter_mut().zip(row) {
                        *d += *x as f64;
                    }
                }
                c = e;
            }
            acc
        })
        .collect();
    let mut out = vec![0f64; users * k];
    for p in &partials {
        for (o, x) in out.iter_mut().zip(p) {
            *o += x;
        }
    }
    out.into_iter().map(|x| x as f32).collect()
}
