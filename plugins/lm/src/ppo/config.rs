//! `[ppo]` of a language-model RLHF run: TRL's `PPOConfig` fields that the trainer in
//! [`super`] uses, with TRL's defaults except where [`super`]'s module doc says otherwise.

use maxmin_core::error::check;
use maxmin_core::objective::KlConfig;
use maxmin_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// `[ppo]` for language models; defaults are TRL's `PPOConfig` except where the module doc says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LmPpoConfig {
    /// Responses per PPO step (the rollout size [`LmPpoTrainer::step`] expects).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Responses per gradient step; must divide `batch-size`.
    #[serde(default = "d_batch")]
    pub mini_batch_size: usize,
    /// Passes over each batch.
    #[serde(default = "d_epochs")]
    pub ppo_epochs: usize,
    /// Adam learning rate (TRL 1.41e-5, meant for full fine-tuning; LoRA wants more).
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    /// Adam ε (torch's default).
    #[serde(default = "d_adam_eps")]
    pub adam_eps: f64,
    /// KL penalty to the reference policy: β and its adaptive controller. Left out, TRL's
    /// defaults (β 0.2, adaptive towards a KL of 6); written, its missing keys take
    /// [`KlConfig`]'s own defaults, so a table without `target` keeps β fixed.
    #[serde(default = "d_kl")]
    pub kl: KlConfig,
    /// Policy ratio clip range.
    #[serde(default = "d_clip")]
    pub cliprange: f64,
    /// Value clip range around the old values.
    #[serde(default = "d_clip")]
    pub cliprange_value: f64,
    /// Weight of the value loss.
    #[serde(default = "d_vf")]
    pub vf_coef: f64,
    /// Discount over response tokens.
    #[serde(default = "d_gamma")]
    pub gamma: f64,
    /// GAE λ.
    #[serde(default = "d_lam")]
    pub lam: f64,
    /// Whiten token rewards (without shifting their mean) before GAE.
    #[serde(default)]
    pub whiten_rewards: bool,
    /// Stop the epochs early when the policy KL exceeds 1.5·`target-kl`.
    #[serde(default = "d_true")]
    pub early_stopping: bool,
    /// KL target of early stopping.
    #[serde(default = "d_target_kl")]
    pub target_kl: f64,
    /// Zero a mini-batch's loss when its mean probability ratio exceeds this.
    #[serde(default = "d_ratio")]
    pub ratio_threshold: f64,
    /// Clip the global gradient norm to this; none leaves gradients alone.
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
    /// Clip scores to ±this before they enter the rewards; none leaves them alone.
    #[serde(default)]
    pub score_clip: Option<f64>,
}

fn d_batch() -> usize {
    128
}
fn d_epochs() -> usize {
    4
}
fn d_lr() -> f64 {
    1.41e-5
}
fn d_adam_eps() -> f64 {
    1e-8
}
fn d_kl() -> KlConfig {
    KlConfig {
        init: 0.2,
        target: Some(6.0),
        horizon: 10_000.0,
    }
}
fn d_clip() -> f64 {
    0.2
}
fn d_vf() -> f64 {
    0.1
}
fn d_gamma() -> f64 {
    1.0
}
fn d_lam() -> f64 {
    0.95
}
fn d_true() -> bool {
    true
}
fn d_target_kl() -> f64 {
    0.1
}
fn d_ratio() -> f64 {
    10.0
}

impl Default for LmPpoConfig {
    fn default() -> Self {
        LmPpoConfig {
            batch_size: d_batch(),
            mini_batch_size: d_batch(),
            ppo_epochs: d_epochs(),
            learning_rate: d_lr(),
            adam_eps: d_adam_eps(),
            kl: d_kl(),
            cliprange: d_clip(),
            cliprange_value: d_clip(),
            vf_coef: d_vf(),
            gamma: d_gamma(),
            lam: d_lam(),
            whiten_rewards: false,
            early_stopping: true,
            target_kl: d_target_kl(),
            ratio_threshold: d_ratio(),
            max_grad_norm: None,
            score_clip: None,
        }
    }
}

impl LmPpoConfig {
    /// Check values; errors name keys relative to this table.
    pub fn validate(&self) -> Result<()> {
        check::positive_usize("batch-size", self.batch_size)?;
        check::positive_usize("mini-batch-size", self.mini_batch_size)?;
        if !self.batch_size.is_multiple_of(self.mini_batch_size) {
            return Err(Error::config(
                "mini-batch-size",
                format!(
                    "{} does not divide batch-size {}",
                    self.mini_batch_size, self.batch_size
                ),
            ));
        }
        check::positive_usize("ppo-epochs", self.ppo_epochs)?;
        check::positive_f64("learning-rate", self.learning_rate)?;
        check::positive_f64("adam-eps", self.adam_eps)?;
        self.kl.validate().map_err(|e| e.under("kl"))?;
        check::positive_f64("cliprange", self.cliprange)?;
        check::positive_f64("cliprange-value", self.cliprange_value)?;
        check::non_negative_f64("vf-coef", self.vf_coef)?;
        check::in_range("gamma", self.gamma, 0.0, 1.0)?;
        check::in_range("lam", self.lam, 0.0, 1.0)?;
        check::positive_f64("target-kl", self.target_kl)?;
        check::positive_f64("ratio-threshold", self.ratio_threshold)?;
        if let Some(g) = self.max_grad_norm {
            check::positive_f64("max-grad-norm", g)?;
        }
        if let Some(c) = self.score_clip {
            check::positive_f64("score-clip", c)?;
        }
        Ok(())
    }
}
