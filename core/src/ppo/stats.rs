//! Whitening and masked statistics on host arrays, shared by both PPO trainers
//! (docs/algorithms.md, "PPO details"): mean and unbiased variance over the entries a 0/1
//! mask keeps (all entries without a mask), whitening in TRL's form (ε inside the square root)
//! or CleanRL's (ε added to the standard deviation), and the explained variance.

/// Where whitening adds its ε.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Eps {
    /// (x − μ)·(σ² + ε)^−½, TRL's `masked_whiten`.
    InVariance(f64),
    /// (x − μ)/(σ + ε), CleanRL's advantage normalisation (`torch.std` + ε).
    OnStd(f64),
}

/// Mean and unbiased variance Σ(x − μ)²/(n − 1) of the entries of `x` where `mask` is nonzero
/// (all of them without a mask), in f64; n = Σ mask. With one entry the variance is 0 (no
/// Bessel correction); with none both are 0.
pub fn mean_var(x: &[f32], mask: Option<&[f32]>) -> (f64, f64) {
    let w = |k: usize| mask.map_or(1.0, |m| m[k] as f64);
    let n: f64 = match mask {
        Some(m) => m.iter().map(|&v| v as f64).sum(),
        None => x.len() as f64,
    };
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let mu = x
        .iter()
        .enumerate()
        .map(|(k, &a)| a as f64 * w(k))
        .sum::<f64>()
        / n;
    let ss = x
        .iter()
        .enumerate()
        .map(|(k, &a)| (a as f64 - mu).powi(2) * w(k))
        .sum::<f64>();
    let var = if n > 1.0 { ss / (n - 1.0) } else { ss / n };
    (mu, var)
}

/// Whiten `x` in place with the statistics of [`mean_var`]: (x − μ) scaled by `eps`'s rule,
/// plus μ again when `!shift_mean` (TRL's `shift_mean = False`); entries outside `mask` become 0.
pub fn whiten(x: &mut [f32], mask: Option<&[f32]>, eps: Eps, shift_mean: bool) {
    let (mu, var) = mean_var(x, mask);
    let (inv, sd) = match eps {
        Eps::InVariance(e) => (1.0 / (var + e).sqrt(), 0.0),
        Eps::OnStd(e) => (0.0, var.sqrt() + e),
    };
    let scale = |d: f64| match eps {
        Eps::InVariance(_) => d * inv,
        Eps::OnStd(_) => d / sd,
    };
    for (k, a) in x.iter_mut().enumerate() {
        let mut y = scale(*a as f64 - mu);
        if !shift_mean {
            y += mu;
        }
        *a = match mask {
            Some(m) => (y * m[k] as f64) as f32,
            None => y as f32,
        };
    }
}

/// 1 − Var(target − pred)/Var(target) (population variances, f64); NaN when the target is
/// constant.
pub fn explained_variance(pred: &[f32], target: &[f32]) -> f64 {
    let var = |x: &mut dyn Iterator<Item = f64>, n: f64| {
        let v: Vec<f64> = x.collect();
        let m = v.iter().sum::<f64>() / n;
        v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n
    };
    let n = target.len() as f64;
    let vy = var(&mut target.iter().map(|x| *x as f64), n);
    if vy == 0.0 {
        return f64::NAN;
    }
    let vd = var(
        &mut target.iter().zip(pred).map(|(y, p)| (*y - *p) as f64),
        n,
    );
    1.0 - vd / vy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_mean_and_unbiased_variance() {
        let (mu, var) = mean_var(&[1.0, 2.0, 3.0, 100.0], Some(&[1.0, 1.0, 1.0, 0.0]));
        assert_eq!((mu, var), (2.0, 1.0));
        assert_eq!(mean_var(&[1.0, 2.0, 3.0], None), (2.0, 1.0));
        assert_eq!(mean_var(&[5.0, 7.0], Some(&[1.0, 0.0])), (5.0, 0.0));
        assert_eq!(mean_var(&[5.0], Some(&[0.0])), (0.0, 0.0));
    }

    #[test]
    fn whitening_matches_trl() {
        let m = [1.0, 1.0, 1.0, 0.0];
        let mut x = [1.0f32, 2.0, 3.0, 100.0];
        // mean 2, unbiased var 1.
        whiten(&mut x, Some(&m), Eps::InVariance(1e-8), true);
        for (got, want) in x.iter().zip([-1.0f32, 0.0, 1.0, 0.0]) {
            assert!((got - want).abs() < 1e-6, "{x:?}");
        }
        let mut y = [1.0f32, 2.0, 3.0, 100.0];
        whiten(&mut y, Some(&m), Eps::InVariance(1e-8), false);
        assert!((y[0] - 1.0).abs() < 1e-6 && y[3] == 0.0, "{y:?}");
        // One token: no Bessel correction (TRL divides by zero), the result is 0, finite.
        let mut z = [5.0f32, 7.0];
        whiten(&mut z, Some(&[1.0, 0.0]), Eps::InVariance(1e-8), true);
        assert_eq!(z, [0.0, 0.0]);
    }

    #[test]
    fn whitening_matches_cleanrl() {
        // mean 2.5, unbiased std √(5/3); (x − μ)/(σ + 1e-8) as torch computes it
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        whiten(&mut x, None, Eps::OnStd(1e-8), true);
        let sd = (5.0f64 / 3.0).sqrt();
        for (got, a) in x.iter().zip([1.0f64, 2.0, 3.0, 4.0]) {
            assert_eq!(*got, ((a - 2.5) / (sd + 1e-8)) as f32);
        }
    }

    #[test]
    fn explained_variance_by_hand() {
        assert_eq!(explained_variance(&[1.0, 2.0], &[1.0, 2.0]), 1.0);
        // target var 1, residual (−0.5, 0.5, −0.5, 0.5) var 0.25
        let ev = explained_variance(&[0.5, 1.5, 0.5, 1.5], &[0.0, 2.0, 0.0, 2.0]);
        assert_eq!(ev, 1.0 - 0.25 / 1.0);
        assert!(explained_variance(&[1.0], &[3.0]).is_nan());
    }
}
