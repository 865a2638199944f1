//! Branch-free `exp`, `log1p` and log-sigmoid (and GPT-2's tanh-GELU built on `exp`) for the
//! CPU kernels, the LM runtime's fused ops and the GPT-2 pretraining loop: the standard
//! library's `f32::exp` and `ln_1p` are libm calls the compiler cannot vectorise, and these
//! loops spend most of their time in them.

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so n * LN2_HI is exact for |n| < 2^10 (Cody–Waite reduction).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
// Below this e^x is subnormal; the kernels treat it as 0.
const MIN_ARG: f32 = -87.336_55;
// 1.5 * 2^23: adding and subtracting it rounds to the nearest integer with plain SSE2.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `e^x` for `x <= 0` (and `-inf`, which gives 0), within about 2 ulp of `f32::exp`; returns 0
/// where `e^x` would be subnormal. Written without branches so loops over it vectorise.
#[inline(always)]
pub fn exp_nonpos(x: f32) -> f32 {
    let xc = x.clamp(MIN_ARG, 0.0);
    let t = xc * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Taylor series of e^r to degree 7 on |r| <= ln2/2: truncation error < 1e-8 relative.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n from the integer n held in t's low mantissa bits (ulp of t is 1 here): the same n as
    // `n as i32`, but integer lanes instead of a saturating float→int conversion, which the
    // compiler cannot vectorise.
    let k = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    // × 1 or × 0 rather than `if`: a select against 0 lets LLVM turn `acc += exp_nonpos(x)` in a
    // lane loop into a masked store to the accumulator, whose reload then stalls on store
    // forwarding; a multiply it cannot see through (p·scale is finite here, so ×0 is +0).
    p * scale * if x < MIN_ARG { 0.0 } else { 1.0 }
}

/// `e^x` in f32, vectorisable: Cephes' `expf` (x = n ln 2 + r with |r| ≤ ln 2 / 2, a degree-7
/// polynomial for `e^r`, `2^n` written into the exponent bits); max relative error ≈ 2 ulp on
/// [-87, 88], clamped outside (no infinities or denormal results). NaN propagates.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // Adding 1.5 · 2^23 rounds to an integer in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * (r * r) + r + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    e * f32::from_bits(((k + 127) << 23) as u32)
}

/// `ln(1 + t)` for `t` in `[0, 1]`, branch-free: ln(1 + t) = 2·atanh(s) with s = t / (2 + t) in
/// `[0, 1/3]` (no cancellation for small `t`, so `log1p_unit(1e-30) = 1e-30`), and the atanh
/// series 2s·Σ s^(2j)/(2j+1) to j = 7 (truncation < 2e-9 relative).
#[inline(always)]
pub fn log1p_unit(t: f32) -> f32 {
    let s = t / (2.0 + t);
    let z = s * s;
    let p = 1.0
        + z * (1.0 / 3.0
            + z * (1.0 / 5.0
                + z * (1.0 / 7.0
                    + z * (1.0 / 9.0 + z * (1.0 / 11.0 + z * (1.0 / 13.0 + z * (1.0 / 15.0)))))));
    2.0 * s * p
}

/// log σ(x) = min(x, 0) − ln(1 + e^(−|x|)), branch-free ([`exp_nonpos`], [`log1p_unit`]);
/// within about 3e-7 relative (or 1e-7 absolute) of the f64 value.
#[inline(always)]
pub fn log_sigmoid(x: f32) -> f32 {
    x.min(0.0) - log1p_unit(exp_nonpos(-x.abs()))
}

/// `out[i] = log σ(a[i] − b[i])` over equal-length slices, 8 lanes at a time with AVX2 where the
/// CPU has it (detected once at run time), else the baseline SSE2 loop. Both run the same
/// IEEE operations in the same order (no FMA contraction), so the result is bit-identical on
/// either path.
pub fn log_sigmoid_diff(a: &[f32], b: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { log_sigmoid_diff_avx2(a, b, out) };
        return;
    }
    log_sigmoid_diff_body(a, b, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn log_sigmoid_diff_avx2(a: &[f32], b: &[f32], out: &mut [f32]) {
    log_sigmoid_diff_body(a, b, out);
}

#[inline(always)]
fn log_sigmoid_diff_body(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = log_sigmoid(x - y);
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_K: f32 = 0.044_715;

/// GPT-2's `gelu_new`, 0.5·x·(1 + tanh u) with u = √(2/π)(x + 0.044715 x³), computed as the
/// identical x·σ(2u): the sigmoid form has no cancellation for negative `x`, where
/// `1 + tanh u` would lose every digit.
#[inline(always)]
pub fn gelu_new(x: f32) -> f32 {
    let z = 2.0 * SQRT_2_OVER_PI * x * (1.0 + GELU_K * x * x);
    x / (1.0 + exp_f32(-z))
}

/// Derivative of [`gelu_new`]: d/dx x σ(z) = σ + x σ (1 − σ) z', with 1 − σ = e^{−z} σ (again no cancellation).
#[inline(always)]
pub fn gelu_new_grad(x: f32) -> f32 {
    let x2 = x * x;
    let z = 2.0 * SQRT_2_OVER_PI * x * (1.0 + GELU_K * x2);
    let e = exp_f32(-z);
    let s = 1.0 / (1.0 + e);
    s + x * s * (e * s) * (2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_K * x2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_std_exp_within_a_few_ulp() {
        let mut x = -87.0f32;
        let mut worst = 0.0f64;
        while x <= 0.0 {
            let want = (x as f64).exp();
            let got = exp_nonpos(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(-100.0), 0.0);
        assert_eq!(exp_nonpos(0.0), 1.0);
    }

    #[test]
    fn log1p_and_log_sigmoid_match_f64() {
        let mut worst = 0.0f64;
        for i in 0..=100_000 {
            let t = i as f32 / 100_000.0;
            let want = (t as f64).ln_1p();
            let got = log1p_unit(t) as f64;
            worst = worst.max((got - want).abs() / want.max(1e-30));
        }
        assert!(worst < 3e-7, "log1p worst relative error {worst}");
        assert_eq!(log1p_unit(1e-30), 1e-30);
        let mut worst = 0.0f64;
        let mut x = -120.0f32;
        while x <= 120.0 {
            let xd = x as f64;
            let want = xd.min(0.0) - (-xd.abs()).exp().ln_1p();
            let got = log_sigmoid(x) as f64;
            worst = worst.max((got - want).abs() / want.abs().max(1e-7));
            x += 0.003_1;
        }
        assert!(worst < 5e-7, "log_sigmoid worst error {worst}");
        assert_eq!(log_sigmoid(f32::INFINITY), 0.0);
        assert_eq!(log_sigmoid(f32::NEG_INFINITY), f32::NEG_INFINITY);
        // The slice form (AVX2 or not) equals the scalar function bit for bit.
        let a: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin() * 30.0).collect();
        let b: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.11).cos() * 5.0).collect();
        let mut out = vec![0f32; a.len()];
        log_sigmoid_diff(&a, &b, &mut out);
        for i in 0..a.len() {
            assert_eq!(
                out[i].to_bits(),
                log_sigmoid(a[i] - b[i]).to_bits(),
                "at {i}"
            );
        }
    }
}
