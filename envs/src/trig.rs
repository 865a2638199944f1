//! sin and cos that return exactly what libm returns, with a branch-free fast path the compiler
//! can vectorise: the cart-pole step's bottleneck in the vectorised CartPole.
//!
//! For `|x| ≤ 0.5` a Taylor polynomial gives sin/cos with a small, bounded error before the final
//! addition; that addition's own rounding error is computed exactly (Fast2Sum). When the result
//! is then provably within `1 − b` ulp of the true value, where `b` is glibc's error bound for
//! that function and range, it is the value glibc returns too: glibc cannot pick the other
//! neighbour, which is more than `b` ulp away. The bounds are those glibc states in its source
//! (`sysdeps/ieee754/dbl-64/s_sin.c`): sin 0.501 ulp for `|x| < 0.126` and 0.548 ulp up to
//! 0.855469, cos 0.51 ulp up to 0.855469; we keep 0.004 ulp of slack on each. Otherwise —
//! about one call in eight for uniform angles in CartPole's range (`|θ| < 0.21`), fewer near
//! upright,, and every `|x| > 0.5`, zero,
//! subnormal or non-finite input — the caller falls back to libm. Gymnasium calls NumPy's
//! sin/cos, which on the machines tested agree with libm; the golden tests compare the result,
//! and the tests below compare every fast value with libm's.

const U: f64 = 1.0 / 9_007_199_254_740_992.0; // 2^-53, the unit roundoff
const EXP_MASK: u64 = 0x7ff0_0000_0000_0000;
const TWO_POW_M52: f64 = 2.0 * U;

/// Largest `|x|` for the polynomial path (there the first omitted Taylor terms, x¹⁷/17! and
/// x¹⁸/18!, are below 1e-19).
pub(crate) const FAST_RANGE: f64 = 0.5;

/// Below `|x|` = 0.126 glibc's sin is within 0.501 ulp (its `do_sin`), above within 0.548.
const SIN_SMALL: f64 = 0.126;
/// How far (ulp) from the true value our rounding may be for glibc to round the same way:
/// 1 − glibc's bound − 0.004 slack.
const SIN_SMALL_MARGIN: f64 = 1.0 - 0.501 - 0.004;
const SIN_MARGIN: f64 = 1.0 - 0.548 - 0.004;
const COS_MARGIN: f64 = 1.0 - 0.51 - 0.004;

/// Whether `r` (≈ `r + err`, with `|error of err| ≤ e`) is within `margin` ulp of the true
/// value, so that a libm within `1 − margin` ulp returns it too.
#[inline(always)]
fn certain(r: f64, err: f64, e: f64, margin: f64) -> bool {
    let a = r.abs();
    let binade = f64::from_bits(a.to_bits() & EXP_MASK);
    let ulp = binade * TWO_POW_M52;
    // A power of two has a closer neighbour below: leave it to libm, as zero and subnormals.
    err.abs() + e <= margin * ulp && a != binade
}

/// `(sin x, cos x, certain)`: when `certain`, both values equal libm's `x.sin()`, `x.cos()`.
#[inline(always)]
pub(crate) fn sin_cos_fast(x: f64) -> (f64, f64, bool) {
    const S: [f64; 7] = [
        -1.0 / 6.0,
        1.0 / 120.0,
        -1.0 / 5040.0,
        1.0 / 362_880.0,
        -1.0 / 39_916_800.0,
        1.0 / 6_227_020_800.0,
        -1.0 / 1_307_674_368_000.0,
    ];
    const C: [f64; 7] = [
        1.0 / 24.0,
        -1.0 / 720.0,
        1.0 / 40_320.0,
        -1.0 / 3_628_800.0,
        1.0 / 479_001_600.0,
        -1.0 / 87_178_291_200.0,
        1.0 / 20_922_789_888_000.0,
    ];
    let z = x * x;
    let ps = S[0] + z * (S[1] + z * (S[2] + z * (S[3] + z * (S[4] + z * (S[5] + z * S[6])))));
    let pc = C[0] + z * (C[1] + z * (C[2] + z * (C[3] + z * (C[4] + z * (C[5] + z * C[6])))));
    // sin x = x + t, t = x³·ps(x²): the roundings of z, x·z, the product and ps (whose leading
    // coefficient dominates) bound t's relative error by 4.5u; |t| < |x|, so Fast2Sum.
    let t = x * z * ps;
    let s = x + t;
    let s_err = t - (s - x);
    // cos x = 1 − w, w = x²/2 − x⁴·pc(x²): z's rounding (u), the subtraction's (u) and the small
    // x⁴ term's (< 0.1u of w) bound w's relative error by 2.1u; w < 1, so Fast2Sum.
    let w = 0.5 * z - z * z * pc;
    let c = 1.0 - w;
    let c_err = (1.0 - c) - w;
    let sin_margin = if x.abs() < SIN_SMALL {
        SIN_SMALL_MARGIN
    } else {
        SIN_MARGIN
    };
    let ok = x.abs() <= FAST_RANGE
        && certain(s, s_err, 5.0 * U * t.abs(), sin_margin)
        && certain(c, c_err, 2.5 * U * w.abs(), COS_MARGIN);
    (s, c, ok)
}

/// `(x.sin(), x.cos())`, bit for bit, through the fast path where it is certain.
#[inline(always)]
pub(crate) fn sin_cos(x: f64) -> (f64, f64) {
    match sin_cos_fast(x) {
        (s, c, true) => (s, c),
        _ => (x.sin(), x.cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_libm_bit_for_bit() {
        let mut rng = crate::np_rng::NpRng::from_seed(1);
        let mut fast = 0usize;
        let n = 400_000;
        let specials = [
            0.0,
            -0.0,
            1e-300,
            5e-324,
            1e-9,
            0.5,
            -0.5,
            0.50001,
            1.0,
            3.0,
            f64::NAN,
        ];
        // Half beyond the fast range's edge, half in CartPole's range (|θ| < 0.21 until the
        // episode ends).
        let xs = specials.into_iter().chain((0..n).map(|i| {
            let r = if i % 2 == 0 { 0.6 } else { 0.21 };
            rng.uniform(-r, r)
        }));
        let mut fast_small = 0usize;
        for x in xs {
            let (s, c) = sin_cos(x);
            assert_eq!(s.to_bits(), x.sin().to_bits(), "sin {x:e}");
            assert_eq!(c.to_bits(), x.cos().to_bits(), "cos {x:e}");
            let f = sin_cos_fast(x).2 as usize;
            fast += f;
            fast_small += f * (x.abs() < 0.21) as usize;
        }
        eprintln!("fast path: {fast} of {n}, {fast_small} in |x| < 0.21");
        // The fast path must carry nearly all of CartPole's work.
        assert!(
            fast_small > n / 2 * 95 / 100,
            "fast path taken {fast_small} times"
        );
    }
}
