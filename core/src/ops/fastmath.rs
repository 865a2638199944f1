//! Branch-free `exp` (and GPT-2's tanh-GELU built on it) for the CPU kernels, the LM runtime's
//! fused ops and the GPT-2 pretraining loop: the standard library's `f32::exp` is a libm call
//! the compiler cannot vectorise, and these loops spend most of their time in `exp`.

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
    let n = (xc * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Taylor series of e^r to degree 7 on |r| <= ln2/2: truncation error < 1e-8 relative.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits((((n as i32) + 127) as u32) << 23);
    if x < MIN_ARG {
        0.0
    } else {
        p * scale
    }
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
}
