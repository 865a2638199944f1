//! Branch-free `exp` for the CPU kernels and the GPT-2 pretraining loop: the standard library's
//! `f32::exp` is a libm call the compiler cannot vectorise, and the log-prob kernels spend most
//! of their time in `exp`.

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
