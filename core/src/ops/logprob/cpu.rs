//! CPU implementation of the fused token log-prob op: the default path and the tests' oracle.
//!
//! Rows are spread over rayon's pool. Within a row the vocabulary is read once, in chunks
//! that stay in L1: a chunk's maximum, then (the online log-sum-exp trick) the row's running
//! sums are rescaled if the maximum grew, then the chunk's terms are summed in f32 lanes the
//! compiler vectorises, and the lane sums are added to the row's f64 sums. Chunk-local f32
//! sums over ≤ 2,048 terms followed by f64 accumulation keep the result within ~1e-6 of an
//! f64 computation at V = 50,257.
//!
//! Why it is fast: one pass over the logits (online log-sum-exp), a branch-free polynomial `exp`
//! the compiler vectorises, rows split over both cores, and the row loops compiled twice — for
//! the baseline target (SSE2, 4 f32 lanes) and, chosen at run time, for AVX2 (8 lanes; the work
//! is `exp`-bound, not memory-bound, so the wider lanes are what pays). The lane layout
//! (`LANES` = 8 accumulators) is explicit and no FMA is enabled, so both builds do the same IEEE
//! operations in the same order: results are bit-identical with and without AVX2 and for any
//! number of threads. The lane accumulators must stay in registers: a conditional add
//! (`acc += if e > 0 { … } else { 0 }`) compiles to a masked store whose reload stalls, which
//! cost 4× at V = 32,000 until the terms were written without a select against zero
//! ([`times_clamped`], and `exp_nonpos`'s multiply by 0/1).

use super::types::{Stats, NSTATS};
use crate::ops::fastmath::exp_nonpos;
use half::bf16;
use rayon::prelude::*;

/// Logit element types the CPU path reads (f32 and bf16).
pub trait Elem: Copy + Send + Sync + 'static {
    /// Widen to f32.
    fn to_f32(self) -> f32;
    /// Narrow from f32 (round to nearest even for bf16).
    fn from_f32(v: f32) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

const CHUNK: usize = 2048;
const LANES: usize = 8;
// Rows per rayon task: enough work per task that scheduling costs nothing at small V.
const MIN_ROWS_PER_TASK: usize = 4;

/// Forward over `n` rows of `v` logits. `stats` is `[n, NSTATS]`; targets must be `< v`
/// (checked by the caller).
pub fn forward<T: Elem>(
    logits: &[T],
    reference: Option<&[T]>,
    targets: &[u32],
    v: usize,
    stats: &mut [f32],
) {
    stats
        .par_chunks_mut(NSTATS)
        .with_min_len(MIN_ROWS_PER_TASK)
        .enumerate()
        .for_each(|(row, out)| {
            let z = &logits[row * v..(row + 1) * v];
            let w = reference.map(|r| &r[row * v..(row + 1) * v]);
            let s = row_forward_dispatch(z, w, targets[row] as usize);
            out.copy_from_slice(&s.to_array());
        });
}

/// Whether this CPU runs the AVX2 builds of the row loops (checked once).
#[inline]
fn use_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn row_forward_dispatch<T: Elem>(z: &[T], w: Option<&[T]>, target: usize) -> Stats {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the CPU supports AVX2 (`use_avx2`).
        return unsafe { row_forward_avx2(z, w, target) };
    }
    row_forward(z, w, target)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_forward_avx2<T: Elem>(z: &[T], w: Option<&[T]>, target: usize) -> Stats {
    row_forward(z, w, target)
}

/// One row: see the module doc for the scheme, `core/kernels/logprob.cu` for the same
/// quantities on the GPU.
#[inline(always)]
fn row_forward<T: Elem>(z: &[T], w: Option<&[T]>, target: usize) -> Stats {
    let mut zb = [0f32; CHUNK];
    let mut wb = [0f32; CHUNK];
    // running max and f64 sums relative to it: s = Σe^(z-m), a = Σe^(z-m)(z-m),
    // c = Σe^(z-m)(w-mw), sw = Σe^(w-mw)
    let (mut m, mut s, mut a) = (f32::NEG_INFINITY, 0f64, 0f64);
    let (mut mw, mut sw, mut c) = (f32::NEG_INFINITY, 0f64, 0f64);
    for (ci, zc) in z.chunks(CHUNK).enumerate() {
        let len = zc.len();
        let zb = &mut zb[..len];
        for (d, x) in zb.iter_mut().zip(zc) {
            *d = x.to_f32();
        }
        let cm = max_lanes(zb);
        if cm > m {
            if s > 0.0 {
                let f = ((m - cm) as f64).exp();
                a = f * (a + (m - cm) as f64 * s);
                c *= f;
                s *= f;
            }
            m = cm;
        }
        if let Some(w) = w {
            let wc = &w[ci * CHUNK..ci * CHUNK + len];
            let wb = &mut wb[..len];
            for (d, x) in wb.iter_mut().zip(wc) {
                *d = x.to_f32();
            }
            let cmw = max_lanes(wb);
            if cmw > mw {
                if sw > 0.0 {
                    // (w - mw_old) = (w - mw_new) + (mw_new - mw_old) for the terms so far
                    c += (mw - cmw) as f64 * s;
                    sw *= ((mw - cmw) as f64).exp();
                }
                mw = cmw;
            }
            let (ls, la, lc, lsw) = chunk_sums_ref(zb, wb, m, mw);
            s += ls;
            a += la;
            c += lc;
            sw += lsw;
        } else {
            let (ls, la) = chunk_sums(zb, m);
            s += ls;
            a += la;
        }
    }
    let ls = s.ln();
    let mut out = Stats {
        logp: ((z[target].to_f32() - m) as f64 - ls) as f32,
        entropy: (ls - a / s) as f32,
        max: m,
        log_sum: ls as f32,
        ..Stats::default()
    };
    if let Some(w) = w {
        let lsw = sw.ln();
        out.kl = ((a - c) / s - ls + lsw) as f32;
        out.ref_logp = ((w[target].to_f32() - mw) as f64 - lsw) as f32;
        out.ref_max = mw;
        out.ref_log_sum = lsw as f32;
    }
    out
}

#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    let mut mx = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &r in it.remainder() {
        mx = mx.max(r);
    }
    mx
}

/// `e·d` for the sums, +0 or −0 where `e = 0` even if `d = −inf` (a masked logit adds nothing
/// rather than 0·(−inf) = NaN). Clamping `d` rather than testing `e`: LLVM turns
/// `acc += if e > 0.0 { e * d } else { 0.0 }` into a masked store to the accumulator array whose
/// reload stalls on store forwarding (most of the row loop's time in a profile). `e > 0` only
/// where `d > −87.4`, so the clamp changes no other term; a reference logit of −inf where the
/// policy's is finite counts as −1e30 (a KL of about 1e30·p instead of +inf).
#[inline(always)]
fn times_clamped(e: f32, d: f32) -> f32 {
    e * d.max(-1e30)
}

/// Σ e^(z-m) and Σ e^(z-m)(z-m) over a chunk, in f32 lanes.
#[inline(always)]
fn chunk_sums(z: &[f32], m: f32) -> (f64, f64) {
    let mut s = [0f32; LANES];
    let mut a = [0f32; LANES];
    let mut it = z.chunks_exact(LANES);
    for c in &mut it {
        for l in 0..LANES {
            let d = c[l] - m;
            let e = exp_nonpos(d);
            s[l] += e;
            a[l] += times_clamped(e, d);
        }
    }
    let mut st = s.iter().map(|&x| x as f64).sum::<f64>();
    let mut at = a.iter().map(|&x| x as f64).sum::<f64>();
    for &x in it.remainder() {
        let d = x - m;
        let e = exp_nonpos(d);
        st += e as f64;
        at += if e > 0.0 { (e * d) as f64 } else { 0.0 };
    }
    (st, at)
}

/// As [`chunk_sums`], plus Σ e^(z-m)(w-mw) and Σ e^(w-mw).
#[inline(always)]
fn chunk_sums_ref(z: &[f32], w: &[f32], m: f32, mw: f32) -> (f64, f64, f64, f64) {
    let mut s = [0f32; LANES];
    let mut a = [0f32; LANES];
    let mut c = [0f32; LANES];
    let mut sw = [0f32; LANES];
    let mut iz = z.chunks_exact(LANES);
    let mut iw = w.chunks_exact(LANES);
    for (cz, cw) in (&mut iz).zip(&mut iw) {
        for l in 0..LANES {
            let d = cz[l] - m;
            let e = exp_nonpos(d);
            let dw = cw[l] - mw;
            s[l] += e;
            a[l] += times_clamped(e, d);
            c[l] += times_clamped(e, dw);
            sw[l] += exp_nonpos(dw);
        }
    }
    let sum = |x: &[f32; LANES]| x.iter().map(|&v| v as f64).sum::<f64>();
    let (mut st, mut at, mut ct, mut swt) = (sum(&s), sum(&a), sum(&c), sum(&sw));
    for (&x, &y) in iz.remainder().iter().zip(iw.remainder()) {
        let d = x - m;
        let e = exp_nonpos(d);
        let dw = y - mw;
        st += e as f64;
        at += if e > 0.0 { (e * d) as f64 } else { 0.0 };
        ct += if e > 0.0 { (e * dw) as f64 } else { 0.0 };
        swt += exp_nonpos(dw) as f64;
    }
    (st, at, ct, swt)
}

/// Backward: `grad[n, v]` = Σ_c `grad_stats[n, c]` · ∂`stats[n, c]`/∂`logits[n, ·]` for the
/// differentiable columns (log p(t), entropy, KL), using the forward's saved `stats`. The
/// reference is a constant; the gradient arriving on the other columns is ignored.
pub fn backward<T: Elem>(
    logits: &[T],
    reference: Option<&[T]>,
    targets: &[u32],
    stats: &[f32],
    grad_stats: &[f32],
    v: usize,
    grad: &mut [T],
) {
    grad.par_chunks_mut(v)
        .with_min_len(MIN_ROWS_PER_TASK)
        .enumerate()
        .for_each(|(row, gr)| {
            let st = Stats::from_slice(&stats[row * NSTATS..(row + 1) * NSTATS]);
            let g = Stats::from_slice(&grad_stats[row * NSTATS..(row + 1) * NSTATS]);
            let z = &logits[row * v..(row + 1) * v];
            let w = reference.map(|r| &r[row * v..(row + 1) * v]);
            let t = targets[row] as usize;
            #[cfg(target_arch = "x86_64")]
            if use_avx2() {
                // SAFETY: the CPU supports AVX2 (`use_avx2`).
                unsafe { row_backward_avx2(z, w, t, &st, &g, gr) };
                return;
            }
            row_backward(z, w, t, &st, &g, gr);
        });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_backward_avx2<T: Elem>(
    z: &[T],
    w: Option<&[T]>,
    t: usize,
    st: &Stats,
    g: &Stats,
    gr: &mut [T],
) {
    row_backward(z, w, t, st, g, gr)
}

/// One row of [`backward`].
#[inline(always)]
fn row_backward<T: Elem>(z: &[T], w: Option<&[T]>, t: usize, st: &Stats, g: &Stats, gr: &mut [T]) {
    let (g0, g1) = (g.logp, g.entropy);
    let g2 = if w.is_some() { g.kl } else { 0.0 };
    // −p (g0 + g1 (log p + H)) + g2 p (log p − log q − KL), plus g0 at the target;
    // log p is formed as (z − max) − log_sum so it keeps its digits at |z| ~ 1e4.
    let policy = |x: f32| -> (f32, f32) {
        let lp = (x - st.max) - st.log_sum;
        let p = exp_nonpos(lp.min(0.0));
        (lp, p)
    };
    match w {
        Some(w) if g2 != 0.0 => {
            let elem = |x: f32, y: f32| -> f32 {
                let (lp, p) = policy(x);
                let lq = (y - st.ref_max) - st.ref_log_sum;
                let val = -p * (g0 + g1 * (lp + st.entropy)) + g2 * p * (lp - lq - st.kl);
                if p > 0.0 {
                    val
                } else {
                    0.0
                }
            };
            for ((d, x), y) in gr.iter_mut().zip(z).zip(w) {
                *d = T::from_f32(elem(x.to_f32(), y.to_f32()));
            }
            gr[t] = T::from_f32(elem(z[t].to_f32(), w[t].to_f32()) + g0);
        }
        _ => {
            let elem = |x: f32| -> f32 {
                let (lp, p) = policy(x);
                let val = -p * (g0 + g1 * (lp + st.entropy));
                if p > 0.0 {
                    val
                } else {
                    0.0
                }
            };
            for (d, x) in gr.iter_mut().zip(z) {
                *d = T::from_f32(elem(x.to_f32()));
            }
            gr[t] = T::from_f32(elem(z[t].to_f32()) + g0);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use rand::Rng as _;

    /// The AVX2 build of the row loops gives the same bits as the baseline build.
    #[test]
    fn avx2_rows_equal_baseline_rows_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        let mut r = crate::rng::stream(3, "avx2-rows");
        let v = 5_003; // not a multiple of the chunk or lane width
        let z: Vec<f32> = (0..v).map(|_| r.random_range(-30.0f32..30.0)).collect();
        let w: Vec<f32> = (0..v).map(|_| r.random_range(-30.0f32..30.0)).collect();
        for reference in [None, Some(&w[..])] {
            let a = row_forward(&z, reference, 17);
            // SAFETY: AVX2 checked above.
            let b = unsafe { row_forward_avx2(&z, reference, 17) };
            assert_eq!(
                a.to_array().map(f32::to_bits),
                b.to_array().map(f32::to_bits)
            );
            let g = Stats {
                logp: 1.0,
                entropy: 0.01,
                kl: 0.1,
                ..Stats::default()
            };
            let (mut ga, mut gb) = (vec![0f32; v], vec![0f32; v]);
            row_backward(&z, reference, 17, &a, &g, &mut ga);
            // SAFETY: AVX2 checked above.
            unsafe { row_backward_avx2(&z, reference, 17, &a, &g, &mut gb) };
            assert!(ga.iter().zip(&gb).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}
