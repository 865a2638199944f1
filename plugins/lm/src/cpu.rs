//! Plain-slice f32 CPU kernels for transformer layers, and GPT-2's no-gradient forward on them
//! ([`crate::models::gpt2`] takes it for generation, scoring and the reference policy; the
//! pretraining trainer, `maxmin_imdb::trainer`, shares the kernels). See docs/lm.md, "Speed".
//!
//! Why this is fast: an engine of tensor ops (candle) pays, per op, an output allocation, a shape
//! and stride walk, and often a copy to make an operand contiguous; a GPT-2 layer is ~20 such ops,
//! and attention runs as batched small matmuls plus a mask add and a softmax over every
//! `(row, head)`. Here a layer is four large `gemm` calls (both cores, operands read through
//! strides, biases accumulated in place) and a handful of row loops over preallocated buffers:
//! layer norm, tanh-GELU with the branch-free exponential of
//! [`maxmin_core::ops::fastmath`], and a masked attention that splits over `(row, head)` pairs so
//! one long sequence still uses both cores. Every loop splits its work into fixed chunks and
//! each output element is computed by one thread in a fixed order, so results do not depend on
//! the thread count.

use maxmin_core::ops::fastmath::{exp_nonpos, gelu_new, gelu_new_grad};
use rayon::prelude::*;

/// Rows per parallel chunk in row-wise loops (fixed, so chunking never depends on threads).
pub const ROW_CHUNK: usize = 64;

/// `out[m×n] (+)= A[m×k] · B[k×n]`, with `A` stored transposed (`[k×m]`) when `at`, `B` stored
/// transposed (`[n×k]`) when `bt`; adds to `out` when `acc`, else overwrites it. Runs on the
/// threads of the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    at: bool,
    bt: bool,
    acc: bool,
) {
    assert!(out.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    if m == 0 || n == 0 {
        return;
    }
    if m <= SMALL_M && !at {
        small_m_matmul(out, a, b, (m, k, n), bt, acc);
        return;
    }
    let threads = rayon::current_num_threads();
    let par = match threads {
        1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    };
    gemm_call(out, a, b, (m, k, n), (at, bt, acc), par);
}

/// One `gemm` call for [`matmul`]'s arguments (no small-`m` path) with the given parallelism.
fn gemm_call(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    (at, bt, acc): (bool, bool, bool),
    par: gemm::Parallelism,
) {
    assert!(out.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    let (a_rs, a_cs) = if at { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if bt { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the asserts above bound every index the strides reach: A is m×k (or k×m), B is
    // k×n (or n×k), out is m×n row-major, and `out` does not alias `a` or `b` (&mut vs &).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            acc,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Up to this many rows of `A`, [`matmul`] streams `B` once through [`small_m_matmul`] instead
/// of packing it for gemm's micro-kernels (decoding a few sequences a token at a time).
pub const SMALL_M: usize = 16;

/// Most output columns per parallel task in [`small_m_matmul`].
const COL_BLOCK: usize = 1024;

/// `out[m×n] (+)= A[m×k] · B` for few rows `m`, `B` `[k×n]` or, when `bt`, `[n×k]`:
/// memory-bound (each weight is read once and used `m` times), so each weight is streamed once
/// by one thread, and every output is a sum in a fixed order, whatever the thread count. AVX2
/// (AVX-512 for the row-major case) where the CPU has it, with no FMA contraction, so the
/// result is bit-identical to the baseline loops.
fn small_m_matmul(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    dims: (usize, usize, usize),
    bt: bool,
    acc: bool,
) {
    if bt {
        small_m_dots(out, a, b, dims, acc);
    } else {
        small_m_rows(out, a, b, dims, acc);
    }
}

/// `dst (+)= src`.
fn store(dst: &mut [f32], src: &[f32], acc: bool) {
    if acc {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
    } else {
        dst.copy_from_slice(src);
    }
}

/// [`small_m_matmul`] with `B` row-major `[k×n]`: the rows of `B` (the sum over `k`) are split
/// into fixed chunks, each streamed front to back by one thread into its own partial product;
/// the partials are added in chunk order. Chunks are fixed, so the sums do not depend on threads.
fn small_m_rows(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    acc: bool,
) {
    const KC: usize = 32;
    let parts: Vec<Vec<f32>> = (0..k.div_ceil(KC))
        .into_par_iter()
        .map(|ch| {
            let rows = ch * KC..(ch * KC + KC).min(k);
            let mut p = vec![0.0f32; m * n];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above).
                unsafe { axpy_rows_avx512(&mut p, a, b, (m, k, n), rows) };
                return p;
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { axpy_rows_avx2(&mut p, a, b, (m, k, n), rows) };
                return p;
            }
            axpy_rows(&mut p, a, b, (m, k, n), rows);
            p
        })
        .collect();
    out[..m * n]
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(r, o)| {
            let mut sum = parts[0][r * n..][..n].to_vec();
            for p in &parts[1..] {
                sum.iter_mut()
                    .zip(&p[r * n..][..n])
                    .for_each(|(s, v)| *s += v);
            }
            store(o, &sum, acc);
        });
}

/// [`small_m_matmul`] with `B` stored `[n×k]`: output column `j` is a dot product with row `j`
/// of `B`, computed over column blocks of about four per thread (the partition changes which
/// thread computes an output, never how).
fn small_m_dots(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    acc: bool,
) {
    let per = n
        .div_ceil(4 * rayon::current_num_threads())
        .next_multiple_of(16)
        .min(COL_BLOCK);
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(per))
        .into_par_iter()
        .map(|blk| {
            let j0 = blk * per;
            let nb = per.min(n - j0);
            let mut y = vec![0.0f32; m * nb];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { dots_block_avx2(&mut y, a, b, (m, k), j0, nb) };
                return y;
            }
            dots_block(&mut y, a, b, (m, k), j0, nb, dot);
            y
        })
        .collect();
    for (blk, y) in blocks.iter().enumerate() {
        let j0 = blk * per;
        let nb = y.len() / m;
        for r in 0..m {
            store(&mut out[r * n + j0..][..nb], &y[r * nb..][..nb], acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn axpy_rows_avx512(
    p: &mut [f32],
    a: &[f32],
    b: &[f32],
    dims: (usize, usize, usize),
    rows: std::ops::Range<usize>,
) {
    axpy_rows(p, a, b, dims, rows);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn axpy_rows_avx2(
    p: &mut [f32],
    a: &[f32],
    b: &[f32],
    dims: (usize, usize, usize),
    rows: std::ops::Range<usize>,
) {
    axpy_rows(p, a, b, dims, rows);
}

/// `p[r] += Σ_{i ∈ rows} A[r, i] · B[i, :]` in `i` order, for every row `r` of `A`.
#[inline(always)]
fn axpy_rows(
    p: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    rows: std::ops::Range<usize>,
) {
    for i in rows {
        let bi = &b[i * n..][..n];
        for r in 0..m {
            let x = a[r * k + i];
            for (o, &w) in p[r * n..][..n].iter_mut().zip(bi) {
                *o += x * w;
            }
        }
    }
}

/// [`dot`] with AVX2 intrinsics: the same eight lanes, the same reduction order, so the same
/// result bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let full = n / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < full {
        // SAFETY: i + 8 <= full <= len of both slices.
        let (x, y) = unsafe {
            (
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            )
        };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(x, y));
        i += 8;
    }
    let mut l = [0.0f32; 8];
    // SAFETY: `l` holds 8 floats.
    unsafe { _mm256_storeu_ps(l.as_mut_ptr(), acc) };
    let mut s = (l[0] + l[4]) + (l[1] + l[5]) + ((l[2] + l[6]) + (l[3] + l[7]));
    for j in full..n {
        s += a[j] * b[j];
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dots_block_avx2(
    y: &mut [f32],
    a: &[f32],
    b: &[f32],
    mk: (usize, usize),
    j0: usize,
    nb: usize,
) {
    // SAFETY: this function runs only where AVX2 is available.
    dots_block(y, a, b, mk, j0, nb, |x, w| unsafe { dot_avx2(x, w) });
}

/// Columns `j0..j0 + nb` of `A · Bᵀ` (`B` stored `[n × k]`) into `y` `[m × nb]`.
#[inline(always)]
fn dots_block(
    y: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k): (usize, usize),
    j0: usize,
    nb: usize,
    dot: impl Fn(&[f32], &[f32]) -> f32,
) {
    for jj in 0..nb {
        let bj = &b[(j0 + jj) * k..][..k];
        for r in 0..m {
            y[r * nb + jj] = dot(&a[r * k..][..k], bj);
        }
    }
}

/// `y = x·W + b` for `x` `[n×cin]`, `W` `[cin×cout]` (GPT-2's Conv1D layout).
pub fn linear(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    n: usize,
    cin: usize,
    cout: usize,
) {
    y[..n * cout]
        .par_chunks_mut(cout * ROW_CHUNK)
        .for_each(|rows| {
            for r in rows.chunks_mut(cout) {
                r.copy_from_slice(bias);
            }
        });
    matmul(y, x, w, (n, cin, cout), false, false, true);
}

/// Token plus position embeddings: row `i` is `wte[ids[i]] + wpe[positions[i]]`, width `c`.
pub fn embed(
    wte: &[f32],
    wpe: &[f32],
    ids: &[u32],
    positions: impl Iterator<Item = usize>,
    c: usize,
) -> Vec<f32> {
    let mut x = vec![0.0f32; ids.len() * c];
    for ((row, &id), pos) in x.chunks_mut(c).zip(ids).zip(positions) {
        let (e, p) = (&wte[id as usize * c..][..c], &wpe[pos * c..][..c]);
        for ((o, a), b) in row.iter_mut().zip(e).zip(p) {
            *o = a + b;
        }
    }
    x
}

/// A LoRA adapter on plain slices: `A` `[r × in]`, `B` `[out × r]` (PEFT layout), and the scale.
#[derive(Debug, Clone, Copy)]
pub struct Adapter<'a> {
    /// `A`, `[r × in]`.
    pub a: &'a [f32],
    /// `B`, `[out × r]`.
    pub b: &'a [f32],
    /// `alpha / r`.
    pub scale: f32,
}

/// [`linear`] plus a LoRA update: `y = x W + b + scale · (x Aᵀ) Bᵀ`. Returns `x Aᵀ` `[n × r]`
/// (unscaled; what the adapter's backward needs), empty without an adapter.
#[allow(clippy::too_many_arguments)]
pub fn linear_lora(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    adapter: Option<Adapter<'_>>,
    n: usize,
    cin: usize,
    cout: usize,
) -> Vec<f32> {
    linear(y, x, w, bias, n, cin, cout);
    let Some(ad) = adapter else {
        return Vec::new();
    };
    let r = ad.a.len() / cin;
    let mut h = vec![0.0f32; n * r];
    matmul(&mut h, x, ad.a, (n, cin, r), false, true, false);
    let hs: Vec<f32> = h.iter().map(|v| v * ad.scale).collect();
    matmul(y, &hs, ad.b, (n, r, cout), false, true, true);
    h
}

/// Layer norm over rows of width `c`; writes per-row (mean, 1/std) into `stats`.
pub fn layer_norm(
    y: &mut [f32],
    stats: &mut [(f32, f32)],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    c: usize,
    eps: f32,
) {
    y.par_chunks_mut(c * ROW_CHUNK)
        .zip(stats.par_chunks_mut(ROW_CHUNK))
        .zip(x.par_chunks(c * ROW_CHUNK))
        .for_each(|((yc, sc), xc)| {
            for ((yr, s), xr) in yc.chunks_mut(c).zip(sc.iter_mut()).zip(xc.chunks(c)) {
                let mean = xr.iter().sum::<f32>() / c as f32;
                let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
                let rstd = 1.0 / (var + eps).sqrt();
                for i in 0..c {
                    yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
                }
                *s = (mean, rstd);
            }
        });
}

/// `gelu_new` (GPT-2's tanh approximation) element-wise; 8 lanes at a time with AVX2 where the
/// CPU has it (the same IEEE operations per element, no FMA contraction: bit-identical).
pub fn gelu(y: &mut [f32], x: &[f32]) {
    y.par_chunks_mut(4096)
        .zip(x.par_chunks(4096))
        .for_each(|(yc, xc)| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { gelu_avx2(yc, xc) };
                return;
            }
            gelu_body(yc, xc);
        });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_avx2(y: &mut [f32], x: &[f32]) {
    gelu_body(y, x);
}

#[inline(always)]
fn gelu_body(y: &mut [f32], x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = gelu_new(v);
    }
}

/// Backward of [`layer_norm`] with respect to its input only: `dx += r (ĝ − mean ĝ − x̂ mean(ĝ x̂))`,
/// `ĝ = dy w`, `r = 1/std` from `stats`.
pub fn layer_norm_back_dx(
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    stats: &[(f32, f32)],
    w: &[f32],
    c: usize,
) {
    dx.par_chunks_mut(c * ROW_CHUNK)
        .zip(dy.par_chunks(c * ROW_CHUNK))
        .zip(x.par_chunks(c * ROW_CHUNK))
        .zip(stats.par_chunks(ROW_CHUNK))
        .for_each(|(((dxc, dyc), xc), sc)| {
            for (((dxr, dyr), xr), &(mean, rstd)) in dxc
                .chunks_mut(c)
                .zip(dyc.chunks(c))
                .zip(xc.chunks(c))
                .zip(sc)
            {
                let (mut m1, mut m2) = (0.0f32, 0.0f32);
                for i in 0..c {
                    let xhat = (xr[i] - mean) * rstd;
                    let dxhat = dyr[i] * w[i];
                    m1 += dxhat;
                    m2 += dxhat * xhat;
                }
                m1 /= c as f32;
                m2 /= c as f32;
                for i in 0..c {
                    let xhat = (xr[i] - mean) * rstd;
                    dxr[i] += rstd * (dyr[i] * w[i] - m1 - xhat * m2);
                }
            }
        });
}

/// `dx = dy · gelu'(x)` (overwritten); AVX2 as [`gelu`].
pub fn gelu_back(dx: &mut [f32], dy: &[f32], x: &[f32]) {
    dx.par_chunks_mut(4096)
        .zip(dy.par_chunks(4096))
        .zip(x.par_chunks(4096))
        .for_each(|((dc, gc), xc)| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { gelu_back_avx2(dc, gc, xc) };
                return;
            }
            gelu_back_body(dc, gc, xc);
        });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_back_avx2(dx: &mut [f32], dy: &[f32], x: &[f32]) {
    gelu_back_body(dx, dy, x);
}

#[inline(always)]
fn gelu_back_body(dx: &mut [f32], dy: &[f32], x: &[f32]) {
    for ((d, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
        *d = g * gelu_new_grad(v);
    }
}

/// Dot product with eight independent accumulators (so the loop vectorises).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// Shapes of a masked attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Rows of the batch.
    pub b: usize,
    /// Heads.
    pub nh: usize,
    /// New (query) positions per row.
    pub t: usize,
    /// Cached positions before the new ones.
    pub past: usize,
    /// Head width.
    pub hd: usize,
}

/// One (row, head) of [`masked_attention`]: its queries, keys, values and key mask.
#[derive(Clone, Copy)]
struct HeadRefs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    mask: &'a [u8],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_head_avx2(out: &mut [f32], h: HeadRefs<'_>, s: AttnShape) {
    attend_head(out, h, s);
}

/// Attention of one (row, head): `out` `[t × hd]`. The same operations in the same order on
/// every path (no FMA contraction), so AVX2 and the baseline loop agree bit for bit.
// Indexed loops: `p`, `mask` and the key rows are read at the same position `j`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn attend_head(out: &mut [f32], h: HeadRefs<'_>, s: AttnShape) {
    let (t, hd) = (s.t, s.hd);
    let total = s.past + t;
    let scale = 1.0 / (hd as f32).sqrt();
    if t >= GEMM_ATTN_MIN_T {
        let mut sc = vec![0.0f32; t * total];
        return attend_head_gemm(out, &mut sc, h, s);
    }
    let mut p = vec![0.0f32; total];
    for i in 0..t {
        let qi = &h.q[i * hd..][..hd];
        let last = s.past + i;
        let mut mx = f32::NEG_INFINITY;
        let mut any = false;
        for j in 0..=last {
            if h.mask[j] != 0 {
                let sc = dot(qi, &h.k[j * hd..][..hd]) * scale;
                p[j] = sc;
                mx = mx.max(sc);
                any = true;
            }
        }
        let o = &mut out[i * hd..][..hd];
        o.fill(0.0);
        if !any {
            let w = 1.0 / total as f32;
            for j in 0..total {
                for (a, &vv) in o.iter_mut().zip(&h.v[j * hd..][..hd]) {
                    *a += w * vv;
                }
            }
            continue;
        }
        let mut sum = 0.0f32;
        for j in 0..=last {
            if h.mask[j] != 0 {
                p[j] = exp_nonpos(p[j] - mx);
                sum += p[j];
            }
        }
        let inv = 1.0 / sum;
        for j in 0..=last {
            if h.mask[j] != 0 {
                let w = p[j] * inv;
                for (a, &vv) in o.iter_mut().zip(&h.v[j * hd..][..hd]) {
                    *a += w * vv;
                }
            }
        }
    }
}

/// From this many queries per row on, [`attend_head`] multiplies whole matrices (`Q Kᵀ`, then
/// `P V`, one thread's gemm each) instead of one dot product per (query, key): twice the
/// multiply-adds above the diagonal, but at matrix-product speed.
const GEMM_ATTN_MIN_T: usize = 8;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_head_gemm_avx2(out: &mut [f32], sc: &mut [f32], h: HeadRefs<'_>, s: AttnShape) {
    attend_head_gemm(out, sc, h, s);
}

/// [`attend_head`] for many queries: scores `S = Q Kᵀ · scale` `[t × total]` by gemm, a masked
/// softmax per row (masked entries exactly 0, a row with no key uniform), then `out = P V`.
/// The probabilities `P` `[t × total]` are left in `sc`.
#[inline(always)]
fn attend_head_gemm(out: &mut [f32], sc: &mut [f32], h: HeadRefs<'_>, s: AttnShape) {
    let (t, hd) = (s.t, s.hd);
    let total = s.past + t;
    let scale = 1.0 / (hd as f32).sqrt();
    let serial = gemm::Parallelism::None;
    gemm_call(sc, h.q, h.k, (t, hd, total), (false, true, false), serial);
    // Keys before the first unmasked one are left padding; a query whose keys first..=last are
    // all unmasked (every query before the first hole, e.g. right padding) runs its loops
    // without a per-key branch, so they vectorise.
    let first = h.mask.iter().position(|&m| m != 0).unwrap_or(total);
    let hole = h.mask[first..]
        .iter()
        .position(|&m| m == 0)
        .map_or(total, |p| first + p);
    for (i, row) in sc.chunks_mut(total).enumerate() {
        let last = s.past + i;
        if first > last || last >= hole {
            softmax_row_masked(row, h.mask, last, scale);
            continue;
        }
        // The same operations in the same order as the masked loop, minus the branch: the max
        // does not depend on order, the sum stays sequential over keys first..=last.
        let (pre, rest) = row.split_at_mut(first);
        let (live, post) = rest.split_at_mut(last + 1 - first);
        pre.fill(0.0);
        post.fill(0.0);
        live.iter_mut().for_each(|r| *r *= scale);
        let mx = live.iter().fold(f32::NEG_INFINITY, |m, &r| m.max(r));
        live.iter_mut().for_each(|r| *r = exp_nonpos(*r - mx));
        let mut sum = 0.0f32;
        for &r in live.iter() {
            sum += r;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|r| *r *= inv);
    }
    gemm_call(out, sc, h.v, (t, total, hd), (false, false, false), serial);
}

/// One score row of [`attend_head_gemm`] with a per-key mask test: scale, masked softmax over the
/// unmasked keys at positions `≤ last` (masked entries exactly 0; no such key: uniform).
#[inline(always)]
fn softmax_row_masked(row: &mut [f32], mask: &[u8], last: usize, scale: f32) {
    let mut mx = f32::NEG_INFINITY;
    for (j, r) in row.iter_mut().enumerate() {
        if j <= last && mask[j] != 0 {
            *r *= scale;
            mx = mx.max(*r);
        }
    }
    if mx == f32::NEG_INFINITY {
        row.fill(1.0 / row.len() as f32);
        return;
    }
    let mut sum = 0.0f32;
    for (j, r) in row.iter_mut().enumerate() {
        if j <= last && mask[j] != 0 {
            *r = exp_nonpos(*r - mx);
            sum += *r;
        } else {
            *r = 0.0;
        }
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|r| *r *= inv);
}

/// Masked causal attention, no gradient. `q` is `[b × nh × t × hd]`, `k` and `v` are
/// `[b × nh × (past + t) × hd]`, `mask` is `[b × (past + t)]` (1 = token); query `i` of a row
/// attends to the unmasked keys at positions `≤ past + i`. A query with no such key (a padding
/// position before the row's first token) averages every value uniformly, as an additive
/// `-1e9` bias does in the tensor path, so its output stays finite. Writes `y`, one row per kept
/// position of `rows` (heads side by side, the layout the output projection reads).
#[allow(clippy::too_many_arguments)]
pub fn masked_attention(
    y: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[u8],
    s: AttnShape,
    rows: &Rows,
) {
    let (t, hd, nh) = (s.t, s.hd, s.nh);
    let total = s.past + t;
    // One output block per (row, head), computed in parallel, then laid out side by side.
    let mut heads = vec![0.0f32; s.b * nh * t * hd];
    heads
        .par_chunks_mut(t * hd)
        .enumerate()
        .for_each(|(bh, out)| {
            let r = bh / nh;
            let head = HeadRefs {
                q: &q[bh * t * hd..][..t * hd],
                k: &k[bh * total * hd..][..total * hd],
                v: &v[bh * total * hd..][..total * hd],
                mask: &mask[r * total..][..total],
            };
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { attend_head_avx2(out, head, s) };
                return;
            }
            attend_head(out, head, s);
        });
    from_heads(y, nh * hd, 0, &heads, (s.b, t, nh, hd), rows);
}

/// The unmasked positions of a padded `[b × t]` batch, in order: the rows the position-wise
/// layers (embeddings, layer norms, linear layers, GELU, residual adds) compute on. Padding is
/// masked out of attention and of every loss, so its activations are never read; dropping its
/// rows leaves every kept row's value as it was and saves their share of the work (LM PPO's
/// mini-batches are about 40 % padding; docs/lm-rlhf.md, "Speed"). Only attention sees the
/// padded layout: [`to_heads`] fills padded positions with zeros and [`from_heads`] skips them.
#[derive(Debug, Clone)]
pub struct Rows {
    /// For each padded position, its index among the kept rows; `u32::MAX` for padding.
    slot: Vec<u32>,
    kept: usize,
}

impl Rows {
    /// The positions whose `mask` entry is non-zero.
    pub fn of_mask(mask: &[u8]) -> Self {
        let mut kept = 0usize;
        let slot = mask
            .iter()
            .map(|&m| {
                if m == 0 {
                    u32::MAX
                } else {
                    kept += 1;
                    (kept - 1) as u32
                }
            })
            .collect();
        Rows { slot, kept }
    }

    /// Every one of `n` positions (no padding).
    pub fn all(n: usize) -> Self {
        Rows {
            slot: (0..n as u32).collect(),
            kept: n,
        }
    }

    /// Kept rows.
    pub fn len(&self) -> usize {
        self.kept
    }

    /// No row kept.
    pub fn is_empty(&self) -> bool {
        self.kept == 0
    }

    /// Positions of the padded layout.
    pub fn positions(&self) -> usize {
        self.slot.len()
    }

    /// Where padded position `p` sits among the kept rows, `None` for padding.
    #[inline]
    pub fn slot(&self, p: usize) -> Option<usize> {
        let s = self.slot[p];
        (s != u32::MAX).then_some(s as usize)
    }

    /// The kept rows of `full` (`[positions × width]`), in order.
    pub fn gather<T: Copy>(&self, full: &[T], width: usize) -> Vec<T> {
        if self.kept == self.slot.len() {
            return full[..self.kept * width].to_vec();
        }
        let mut out = Vec::with_capacity(self.kept * width);
        for (p, &s) in self.slot.iter().enumerate() {
            if s != u32::MAX {
                out.extend_from_slice(&full[p * width..][..width]);
            }
        }
        out
    }

    /// `compact` (`[len × width]`) laid out at its positions, zeros at padding.
    pub fn scatter(&self, compact: &[f32], width: usize) -> Vec<f32> {
        if self.kept == self.slot.len() {
            return compact[..self.kept * width].to_vec();
        }
        let mut out = vec![0.0f32; self.slot.len() * width];
        for (p, &s) in self.slot.iter().enumerate() {
            if s != u32::MAX {
                out[p * width..][..width].copy_from_slice(&compact[s as usize * width..][..width]);
            }
        }
        out
    }
}

/// Write head-major `heads` `[b × nh × t × hd]` into columns `off..off + nh·hd` of the row-major
/// matrix `dst` whose rows are the kept positions `rows` of the `[b·t]` layout (padded
/// positions are skipped).
pub fn from_heads(
    dst: &mut [f32],
    width: usize,
    off: usize,
    heads: &[f32],
    (b, t, nh, hd): (usize, usize, usize, usize),
    rows: &Rows,
) {
    assert!(rows.positions() == b * t && dst.len() >= rows.len() * width);
    // Rows of the batch own disjoint runs of kept rows: split `dst` at each row's first kept row.
    let kept: Vec<Vec<usize>> = (0..b)
        .map(|r| (0..t).filter(|&i| rows.slot(r * t + i).is_some()).collect())
        .collect();
    let mut parts = Vec::with_capacity(b);
    let mut rest = &mut dst[..rows.len() * width];
    for k in &kept {
        let (head, tail) = rest.split_at_mut(k.len() * width);
        parts.push(head);
        rest = tail;
    }
    parts
        .into_par_iter()
        .zip(&kept)
        .enumerate()
        .for_each(|(r, (dr, kept))| {
            for h in 0..nh {
                let src = &heads[(r * nh + h) * t * hd..][..t * hd];
                for (j, &i) in kept.iter().enumerate() {
                    dr[j * width + off + h * hd..][..hd].copy_from_slice(&src[i * hd..][..hd]);
                }
            }
        });
}

/// Columns `off..off + nh·hd` of the row-major matrix `src` whose rows are the kept positions
/// `rows` of the `[b·t]` layout, head-major `[b × nh × t × hd]` with zeros at padded positions.
pub fn to_heads(
    src: &[f32],
    width: usize,
    off: usize,
    (b, t, nh, hd): (usize, usize, usize, usize),
    rows: &Rows,
) -> Vec<f32> {
    assert!(rows.positions() == b * t && src.len() >= rows.len() * width);
    let mut out = vec![0.0f32; b * nh * t * hd];
    out.par_chunks_mut(t * hd).enumerate().for_each(|(bh, o)| {
        let (r, h) = (bh / nh, bh % nh);
        for i in 0..t {
            if let Some(s) = rows.slot(r * t + i) {
                o[i * hd..][..hd].copy_from_slice(&src[s * width + off + h * hd..][..hd]);
            }
        }
    });
    out
}

/// [`masked_attention`] without a cache (`s.past == 0`), keeping the probabilities `probs`
/// `[b × nh × t × t]` (0 where masked) for [`masked_attention_back`].
#[allow(clippy::too_many_arguments)]
pub fn masked_attention_keep(
    y: &mut [f32],
    probs: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[u8],
    s: AttnShape,
    rows: &Rows,
) {
    let (t, hd, nh) = (s.t, s.hd, s.nh);
    assert_eq!(s.past, 0, "masked_attention_keep: no cache");
    let mut heads = vec![0.0f32; s.b * nh * t * hd];
    heads
        .par_chunks_mut(t * hd)
        .zip(probs.par_chunks_mut(t * t))
        .enumerate()
        .for_each(|(bh, (out, p))| {
            let r = bh / nh;
            let head = HeadRefs {
                q: &q[bh * t * hd..][..t * hd],
                k: &k[bh * t * hd..][..t * hd],
                v: &v[bh * t * hd..][..t * hd],
                mask: &mask[r * t..][..t],
            };
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { attend_head_gemm_avx2(out, p, head, s) };
                return;
            }
            attend_head_gemm(out, p, head, s);
        });
    from_heads(y, nh * hd, 0, &heads, (s.b, t, nh, hd), rows);
}

/// Backward of [`masked_attention_keep`]: from `dy` head-major `[b × nh × t × hd]`, the
/// gradients of `q`, `k`, `v` (head-major, overwritten). Per (row, head), with `S` the scaled
/// scores: `dV = Pᵀ dY`, `dP = dY Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = dS K · scale`,
/// `dK = dSᵀ Q · scale`. A query with no key to attend to (uniform `P`, scores masked away)
/// passes no gradient to the scores.
#[allow(clippy::too_many_arguments)]
pub fn masked_attention_back(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dy: &[f32],
    probs: &[f32],
    (q, k, v): (&[f32], &[f32], &[f32]),
    mask: &[u8],
    s: AttnShape,
) {
    let (t, hd, nh) = (s.t, s.hd, s.nh);
    let scale = 1.0 / (hd as f32).sqrt();
    let serial = gemm::Parallelism::None;
    let th = t * hd;
    dq.par_chunks_mut(th)
        .zip(dk.par_chunks_mut(th))
        .zip(dv.par_chunks_mut(th))
        .enumerate()
        .for_each(|(bh, ((dqh, dkh), dvh))| {
            let r = bh / nh;
            // Queries before the row's first token have no key to attend to.
            let first = mask[r * t..][..t].iter().position(|&m| m != 0).unwrap_or(t);
            let p = &probs[bh * t * t..][..t * t];
            let (qh, kh, vh) = (
                &q[bh * th..][..th],
                &k[bh * th..][..th],
                &v[bh * th..][..th],
            );
            let dyh = &dy[bh * th..][..th];
            gemm_call(dvh, p, dyh, (t, t, hd), (true, false, false), serial);
            let mut ds = vec![0.0f32; t * t];
            gemm_call(&mut ds, dyh, vh, (t, hd, t), (false, true, false), serial);
            for (i, (dsr, pr)) in ds.chunks_mut(t).zip(p.chunks(t)).enumerate() {
                if i < first {
                    dsr.fill(0.0);
                    continue;
                }
                let dot_pdp: f32 = dsr.iter().zip(pr).map(|(d, p)| d * p).sum();
                for (d, &pp) in dsr.iter_mut().zip(pr) {
                    *d = pp * (*d - dot_pdp) * scale;
                }
            }
            gemm_call(dqh, &ds, kh, (t, t, hd), (false, false, false), serial);
            gemm_call(dkh, &ds, qh, (t, t, hd), (true, false, false), serial);
        });
}

/// Split a fused `q|k|v` projection (rows: the kept positions `rows` of the `[b·t]` layout)
/// into head-major `q`, `k`, `v`, each `[b × nh × t × hd]`, zeros at padded positions.
pub fn split_heads(
    qkv: &[f32],
    (b, t, nh, hd): (usize, usize, usize, usize),
    rows: &Rows,
) -> [Vec<f32>; 3] {
    let c = nh * hd;
    std::array::from_fn(|part| to_heads(qkv, 3 * c, part * c, (b, t, nh, hd), rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        y
    }

    fn rand_vec(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed * 97)
                    >> 8;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matmul_transposes_and_accumulates() {
        let (m, k, n) = (5, 7, 3);
        let a = rand_vec(m * k, 1);
        let b = rand_vec(k * n, 2);
        let want = naive_matmul(&a, &b, m, k, n);
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut y = vec![1.0f32; m * n];
        matmul(&mut y, &at, &bt, (m, k, n), true, true, true);
        for (g, w) in y.iter().zip(&want) {
            assert!((g - (w + 1.0)).abs() < 1e-5, "{g} vs {}", w + 1.0);
        }
        matmul(&mut y, &a, &b, (m, k, n), false, false, false);
        for (g, w) in y.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5);
        }
    }

    #[test]
    fn small_m_path_matches_naive_product() {
        for (m, k, n) in [(1, 9, 700), (3, 33, 257), (SMALL_M, 5, 3)] {
            let a = rand_vec(m * k, 11);
            let b = rand_vec(k * n, 12);
            let want = naive_matmul(&a, &b, m, k, n);
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            for (w, trans) in [(&b, false), (&bt, true)] {
                let mut y = vec![0.5f32; m * n];
                matmul(&mut y, &a, w, (m, k, n), false, trans, true);
                for (g, w) in y.iter().zip(&want) {
                    assert!((g - (w + 0.5)).abs() < 1e-4, "{m}x{k}x{n} bt {trans}");
                }
            }
        }
    }

    /// The AVX2 loops compute exactly what the scalar functions compute, so every recorded
    /// result stays reproducible on CPUs with and without AVX2.
    #[test]
    fn gelu_loops_are_bit_identical_to_scalar() {
        let x: Vec<f32> = (0..200_000)
            .map(|i| (i as f32 - 100_000.0) * 1.7e-4)
            .chain([0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0, 95.0, -95.0])
            .collect();
        let g: Vec<f32> = x.iter().map(|v| 0.3 - v * 0.1).collect();
        let mut y = vec![0.0f32; x.len()];
        let mut dx = vec![0.0f32; x.len()];
        gelu(&mut y, &x);
        gelu_back(&mut dx, &g, &x);
        for i in 0..x.len() {
            assert_eq!(y[i].to_bits(), gelu_new(x[i]).to_bits(), "gelu({})", x[i]);
            let want = g[i] * gelu_new_grad(x[i]);
            assert_eq!(dx[i].to_bits(), want.to_bits(), "gelu'({})", x[i]);
        }
    }

    #[test]
    fn dot_matches_sequential_sum() {
        for n in [0, 1, 7, 8, 9, 64, 67] {
            let (a, b) = (rand_vec(n, 3), rand_vec(n, 4));
            let want: f64 = a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn rows_gather_scatter_and_heads_round_trip() {
        let (b, t, nh, hd) = (2, 4, 2, 3);
        let mask = [0u8, 1, 1, 1, 1, 1, 0, 0];
        let rows = Rows::of_mask(&mask);
        assert_eq!((rows.len(), rows.positions()), (5, 8));
        assert_eq!(
            (rows.slot(0), rows.slot(1), rows.slot(4)),
            (None, Some(0), Some(3))
        );
        let w = nh * hd;
        let full = rand_vec(8 * w, 3);
        let compact = rows.gather(&full, w);
        assert_eq!(compact.len(), 5 * w);
        assert_eq!(&compact[..w], &full[w..2 * w]);
        let back = rows.scatter(&compact, w);
        for p in 0..8 {
            let want: Vec<f32> = if mask[p] == 0 {
                vec![0.0; w]
            } else {
                full[p * w..][..w].to_vec()
            };
            assert_eq!(&back[p * w..][..w], want.as_slice(), "position {p}");
        }
        // Head-major and back: padded positions read as zeros and are skipped on the way back.
        let heads = to_heads(&compact, w, 0, (b, t, nh, hd), &rows);
        let dense = to_heads(&back, w, 0, (b, t, nh, hd), &Rows::all(8));
        assert_eq!(heads, dense);
        let mut again = vec![f32::NAN; 5 * w];
        from_heads(&mut again, w, 0, &heads, (b, t, nh, hd), &rows);
        assert_eq!(again, compact);
    }

    /// Straightforward attention with the additive-bias semantics of the tensor path.
    #[test]
    fn masked_attention_matches_reference_with_cache_and_padding() {
        // Row 0: three padding positions (cached and new), row 1: none (per-query loop, t < 8).
        let small: Vec<u8> = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1].to_vec();
        // Matrix-product path (t ≥ 8): row 0 left padding, row 1 right padding (a hole), row 2
        // a hole in the middle.
        let mut large = vec![1u8; 3 * 12];
        large[..3].fill(0);
        large[12 + 9..24].fill(0);
        large[24 + 5] = 0;
        for (b, t, past, mask) in [(2, 4, 2, small), (3, 10, 2, large)] {
            check_masked_attention(b, t, past, &mask);
        }
    }

    fn check_masked_attention(b: usize, t: usize, past: usize, mask: &[u8]) {
        let (nh, hd) = (3, 5);
        let total = past + t;
        let q = rand_vec(b * nh * t * hd, 5);
        let k = rand_vec(b * nh * total * hd, 6);
        let v = rand_vec(b * nh * total * hd, 7);
        let mut y = vec![0.0f32; b * t * nh * hd];
        let s = AttnShape { b, nh, t, past, hd };
        masked_attention(&mut y, &q, &k, &v, mask, s, &Rows::all(b * t));
        // On the kept rows only (the new positions' mask), the same rows bit for bit.
        let new_mask: Vec<u8> = (0..b * t)
            .map(|p| mask[(p / t) * total + past + p % t])
            .collect();
        let rows = Rows::of_mask(&new_mask);
        assert!(rows.len() < b * t, "the case must drop a row");
        let mut yc = vec![f32::NAN; rows.len() * nh * hd];
        masked_attention(&mut yc, &q, &k, &v, mask, s, &rows);
        assert_eq!(rows.gather(&y, nh * hd), yc);
        let scale = 1.0 / (hd as f64).sqrt();
        for r in 0..b {
            for h in 0..nh {
                for i in 0..t {
                    let bh = r * nh + h;
                    let scores: Vec<f64> = (0..total)
                        .map(|j| {
                            let ok = j <= past + i && mask[r * total + j] != 0;
                            let sc: f64 = (0..hd)
                                .map(|d| {
                                    (q[(bh * t + i) * hd + d] * k[(bh * total + j) * hd + d]) as f64
                                })
                                .sum::<f64>()
                                * scale;
                            // -1e9 added in f32 absorbs the score entirely.
                            if ok {
                                sc
                            } else {
                                -1e9
                            }
                        })
                        .collect();
                    let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores
                        .iter()
                        .map(|&s| if mx < -1e8 { 1.0 } else { (s - mx).exp() })
                        .collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        let want: f64 = (0..total)
                            .map(|j| e[j] / z * v[(bh * total + j) * hd + d] as f64)
                            .sum();
                        let got = y[(r * t + i) * nh * hd + h * hd + d] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "r {r} h {h} i {i} d {d}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
