//! The clipped PPO losses both trainers use (docs/algorithms.md, "PPO details"): the clipped
//! surrogate policy loss and the clipped value loss, on candle tensors so that gradients flow.
//!
//! Each loss is a mean over the entries that count ([`Over`]): every entry for the control
//! trainer (a plain mean over the mini-batch, CleanRL), or the response tokens of a padded
//! `[b, R]` batch for the language-model trainer (a token-level masked mean, TRL). Both return
//! their per-entry terms too, for the statistics each trainer logs.

use crate::Result;
use candle_core::Tensor;

/// Which entries of a per-entry loss tensor its mean runs over.
#[derive(Debug, Clone, Copy)]
pub enum Over<'a> {
    /// All entries: `mean_all`.
    All,
    /// The entries where `mask` (same shape, 0/1) is 1; `count` is the number of ones:
    /// Σ x·mask / count.
    Mask {
        /// 0/1 mask, the shape of the loss tensor.
        mask: &'a Tensor,
        /// Number of ones in `mask`.
        count: f64,
    },
}

/// The mean of `x` over the entries `over` selects.
pub fn mean(x: &Tensor, over: Over<'_>) -> Result<Tensor> {
    Ok(match over {
        Over::All => x.mean_all()?,
        Over::Mask { mask, count } => ((x * mask)?.sum_all()? / count)?,
    })
}

/// The clipped surrogate and its parts.
#[derive(Debug)]
pub struct PolicyLoss {
    /// log π − log π_old per entry.
    pub logratio: Tensor,
    /// ρ = exp(logratio).
    pub ratio: Tensor,
    /// −A·ρ.
    pub unclipped: Tensor,
    /// −A·clip(ρ, 1 − ε, 1 + ε).
    pub clipped: Tensor,
    /// mean of max(unclipped, clipped): the loss (scalar).
    pub loss: Tensor,
}

/// Clipped surrogate objective (Schulman et al. 2017) as a loss to minimise:
/// `mean(max(−A·ρ, −A·clip(ρ, 1 − clip, 1 + clip)))` with ρ = exp(logp − old_logp).
pub fn clipped_policy_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    clip: f64,
    over: Over<'_>,
) -> Result<PolicyLoss> {
    let logratio = logp.sub(old_logp)?;
    let ratio = logratio.exp()?;
    let unclipped = advantages.neg()?.mul(&ratio)?;
    let clipped = advantages
        .neg()?
        .mul(&ratio.clamp(1.0 - clip, 1.0 + clip)?)?;
    let loss = mean(&unclipped.maximum(&clipped)?, over)?;
    Ok(PolicyLoss {
        logratio,
        ratio,
        unclipped,
        clipped,
        loss,
    })
}

/// The value loss and its parts.
#[derive(Debug)]
pub struct ValueLoss {
    /// (V − R)² per entry.
    pub unclipped: Tensor,
    /// (V_old + clip(V − V_old, ±clip) − R)² per entry, when clipping.
    pub clipped: Option<Tensor>,
    /// ½·mean of max(unclipped, clipped), or ½·mean(unclipped) without clipping (scalar).
    pub loss: Tensor,
}

/// Value loss `½·mean((V − R)²)`, or with `clip = Some(c)` the clipped form
/// `½·mean(max((V − R)², (V_old + clip(V − V_old, −c, c) − R)²))`.
pub fn clipped_value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    clip: Option<f64>,
    over: Over<'_>,
) -> Result<ValueLoss> {
    let unclipped = values.sub(returns)?.sqr()?;
    let Some(c) = clip else {
        let loss = (mean(&unclipped, over)? * 0.5)?;
        return Ok(ValueLoss {
            unclipped,
            clipped: None,
            loss,
        });
    };
    let v_clipped = (old_values + values.sub(old_values)?.clamp(-c, c)?)?;
    let clipped = v_clipped.sub(returns)?.sqr()?;
    let loss = (mean(&unclipped.maximum(&clipped)?, over)? * 0.5)?;
    Ok(ValueLoss {
        unclipped,
        clipped: Some(clipped),
        loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap()
    }

    fn close(a: f32, b: f32) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn policy_loss_by_hand() {
        // ratios e^0.5 ≈ 1.6487 (clipped to 1.2), 1, e^−0.5 ≈ 0.6065 (clipped to 0.8); ε = 0.2.
        let logp = t(&[0.5, 0.0, -0.5]);
        let old = t(&[0.0, 0.0, 0.0]);
        let adv = t(&[1.0, -2.0, -1.0]);
        let l = clipped_policy_loss(&logp, &old, &adv, 0.2, Over::All).unwrap();
        let r0 = 0.5f32.exp();
        let r2 = (-0.5f32).exp();
        // max(−A·ρ, −A·clip(ρ)) per entry: max(−1.6487, −1.2) = −1.2; 2; max(0.6065, 0.8) = 0.8.
        let per = [-1.2f32, 2.0, 0.8];
        close(
            l.loss.to_scalar::<f32>().unwrap(),
            per.iter().sum::<f32>() / 3.0,
        );
        let ratio = l.ratio.to_vec1::<f32>().unwrap();
        close(ratio[0], r0);
        close(ratio[2], r2);
        assert_eq!(l.logratio.to_vec1::<f32>().unwrap(), vec![0.5, 0.0, -0.5]);
        // masked: only entries 0 and 2 count
        let m = t(&[1.0, 0.0, 1.0]);
        let over = Over::Mask {
            mask: &m,
            count: 2.0,
        };
        let l = clipped_policy_loss(&logp, &old, &adv, 0.2, over).unwrap();
        close(l.loss.to_scalar::<f32>().unwrap(), (-1.2 + 0.8) / 2.0);
    }

    #[test]
    fn value_loss_by_hand() {
        let v = t(&[1.0, 0.0, 3.0]);
        let old = t(&[0.5, 0.5, 2.0]);
        let ret = t(&[2.0, 1.0, 2.5]);
        // unclipped (V − R)²: 1, 1, 0.25. Clipped V (c = 0.2): 0.7, 0.3, 2.2 → (V' − R)²:
        // 1.69, 0.49, 0.09. max: 1.69, 1, 0.25.
        let l = clipped_value_loss(&v, &old, &ret, Some(0.2), Over::All).unwrap();
        close(
            l.loss.to_scalar::<f32>().unwrap(),
            0.5 * (1.69 + 1.0 + 0.25) / 3.0,
        );
        let l = clipped_value_loss(&v, &old, &ret, None, Over::All).unwrap();
        close(
            l.loss.to_scalar::<f32>().unwrap(),
            0.5 * (1.0 + 1.0 + 0.25) / 3.0,
        );
        assert!(l.clipped.is_none());
        let m = t(&[0.0, 1.0, 1.0]);
        let over = Over::Mask {
            mask: &m,
            count: 2.0,
        };
        let l = clipped_value_loss(&v, &old, &ret, Some(0.2), over).unwrap();
        close(l.loss.to_scalar::<f32>().unwrap(), 0.5 * (1.0 + 0.25) / 2.0);
    }

    #[test]
    fn an_all_ones_mask_is_the_plain_mean_bit_for_bit() {
        let x = t(&[0.1, -0.7, 2.3, 1e-3, 5.5]);
        let ones = t(&[1.0; 5]);
        let a = mean(&x, Over::All).unwrap().to_scalar::<f32>().unwrap();
        let over = Over::Mask {
            mask: &ones,
            count: 5.0,
        };
        let b = mean(&x, over).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(a.to_bits(), b.to_bits());
    }
}
