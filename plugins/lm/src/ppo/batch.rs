//! The data of one PPO step: the [`Rollout`] (responses and what the policy, reference and
//! value head said about them), the [`StepStats`] it produces, and the packing of prompts and
//! responses into `[b, P + R]` inputs. GAE, whitening and the masked statistics on the `[B, R]`
//! response-token arrays are the shared PPO core's ([`maxmin_core::ops::gae`],
//! [`maxmin_core::ppo::stats`]).

use crate::lm::LmInput;
use candle_core::Tensor;
use maxmin_core::{Error, Result};

/// Any id in the vocabulary works for padding: padded positions are masked out.
const PAD: u32 = 0;

/// One batch of responses with what the policy and reference said about them before training.
/// Per-token vectors have one entry per response token.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Prompt tokens (unpadded).
    pub prompts: Vec<Vec<u32>>,
    /// Response tokens (unpadded; ending with EOS when generation stopped there).
    pub responses: Vec<Vec<u32>>,
    /// Whether each response stopped at EOS (false when cut at `max_new_tokens` or when the
    /// responses were given, not generated).
    pub stopped_at_eos: Vec<bool>,
    /// log π(y_t) under the policy at rollout time (the PPO "old" log-probabilities).
    pub logprobs: Vec<Vec<f32>>,
    /// log π_ref(y_t) under the reference (the base without adapters).
    pub ref_logprobs: Vec<Vec<f32>>,
    /// Value-head estimates V(s_t) at rollout time.
    pub values: Vec<Vec<f32>>,
    /// Σ_t (log π − log π_ref) per response: the sampled KL TRL penalises and logs.
    pub kl_per_sample: Vec<f32>,
    /// Wall-clock seconds spent generating.
    pub gen_seconds: f64,
    /// Wall-clock seconds spent scoring (policy, reference, values).
    pub score_seconds: f64,
}

impl Rollout {
    /// Number of responses.
    pub fn len(&self) -> usize {
        self.responses.len()
    }

    /// Whether the rollout holds no responses.
    pub fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }

    /// Response tokens in total.
    pub fn response_tokens(&self) -> usize {
        self.responses.iter().map(|r| r.len()).sum()
    }

    /// Mean of [`Rollout::kl_per_sample`] (TRL's `objective/kl`).
    pub fn mean_kl(&self) -> f64 {
        mean(self.kl_per_sample.iter().map(|&x| x as f64))
    }

    /// Longest prompt and longest response among `rows`.
    pub(super) fn padded_shape(&self, rows: &[usize]) -> (usize, usize) {
        let longest = |v: &[Vec<u32>]| rows.iter().map(|&i| v[i].len()).max().unwrap_or(1);
        (longest(&self.prompts), longest(&self.responses))
    }

    pub(super) fn check(&self) -> Result<()> {
        let b = self.responses.len();
        for (name, n) in [
            ("prompts", self.prompts.len()),
            ("stopped_at_eos", self.stopped_at_eos.len()),
            ("logprobs", self.logprobs.len()),
            ("ref_logprobs", self.ref_logprobs.len()),
            ("values", self.values.len()),
            ("kl_per_sample", self.kl_per_sample.len()),
        ] {
            if n != b {
                return Err(Error::input(
                    format!("rollout: `{name}` has {n} rows, but there are {b} responses"),
                    None,
                ));
            }
        }
        for (what, seqs) in [("prompt", &self.prompts), ("response", &self.responses)] {
            if let Some(i) = seqs.iter().position(|s| s.is_empty()) {
                return Err(Error::input(
                    format!("rollout: {what} {i} has no tokens"),
                    None,
                ));
            }
        }
        for (i, r) in self.responses.iter().enumerate() {
            for (name, v) in [
                ("logprobs", &self.logprobs[i]),
                ("ref_logprobs", &self.ref_logprobs[i]),
                ("values", &self.values[i]),
            ] {
                if v.len() != r.len() {
                    return Err(Error::input(
                        format!(
                            "rollout: `{name}[{i}]` has {} entries, response {i} has {} tokens",
                            v.len(),
                            r.len()
                        ),
                        None,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What one PPO step reports (TRL's statistic names, see [`StepStats::fields`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    /// Step index (0-based) this was.
    pub step: u64,
    /// Mean over responses of Σ_t (log π − log π_ref).
    pub kl: f64,
    /// β the rewards used (before the controller's update).
    pub kl_coef: f64,
    /// Mean over responses of −Σ_t log π(y_t).
    pub seq_entropy: f64,
    /// Mean over responses of the summed KL penalty −β·Σ_t kl_t.
    pub non_score_reward: f64,
    /// Mean (clipped) score.
    pub mean_scores: f64,
    /// Std of the scores.
    pub std_scores: f64,
    /// Mean response length in tokens.
    pub response_len: f64,
    /// Clipped-surrogate loss (mean over mini-batches).
    pub policy_loss: f64,
    /// Value loss.
    pub value_loss: f64,
    /// policy loss + vf_coef · value loss.
    pub total_loss: f64,
    /// ½·mean (log π − log π_old)².
    pub approxkl: f64,
    /// mean (log π_old − log π), the early-stopping statistic.
    pub policykl: f64,
    /// Fraction of tokens whose ratio was clipped.
    pub clipfrac: f64,
    /// Mean token entropy of the policy's full distribution.
    pub entropy: f64,
    /// Fraction of tokens whose value was clipped.
    pub value_clipfrac: f64,
    /// Masked mean of the returns.
    pub returns_mean: f64,
    /// Masked variance of the returns.
    pub returns_var: f64,
    /// Masked mean of the value predictions.
    pub vpred_mean: f64,
    /// Masked mean of (V − R)².
    pub value_error: f64,
    /// Masked mean of the advantages before whitening.
    pub advantages_mean: f64,
    /// Mean probability ratio.
    pub ratio_mean: f64,
    /// Global gradient norm before clipping (mean over mini-batches).
    pub grad_norm: f64,
    /// Epochs that ran (< `ppo-epochs` after an early stop).
    pub epochs_run: usize,
    /// Mini-batches whose loss the ratio threshold zeroed.
    pub minibatches_skipped: usize,
    /// Generation seconds of the rollout.
    pub gen_s: f64,
    /// Scoring seconds of the rollout.
    pub score_s: f64,
    /// Seconds of this update.
    pub train_s: f64,
    /// Response tokens / (generation + scoring + update seconds).
    pub tokens_per_s: f64,
}

impl StepStats {
    /// Named values for `metrics.jsonl` (stable keys, TRL's where TRL has one).
    pub fn fields(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("objective/kl", self.kl),
            ("objective/kl_coef", self.kl_coef),
            ("objective/entropy", self.seq_entropy),
            ("ppo/mean_non_score_reward", self.non_score_reward),
            ("ppo/mean_scores", self.mean_scores),
            ("ppo/std_scores", self.std_scores),
            ("tokens/responses_len_mean", self.response_len),
            ("ppo/loss/policy", self.policy_loss),
            ("ppo/loss/value", self.value_loss),
            ("ppo/loss/total", self.total_loss),
            ("ppo/policy/approxkl", self.approxkl),
            ("ppo/policy/policykl", self.policykl),
            ("ppo/policy/clipfrac", self.clipfrac),
            ("ppo/policy/entropy", self.entropy),
            ("ppo/policy/advantages_mean", self.advantages_mean),
            ("ppo/policy/ratio_mean", self.ratio_mean),
            ("ppo/returns/mean", self.returns_mean),
            ("ppo/returns/var", self.returns_var),
            ("ppo/val/vpred", self.vpred_mean),
            ("ppo/val/error", self.value_error),
            ("ppo/val/clipfrac", self.value_clipfrac),
            ("ppo/grad_norm", self.grad_norm),
            ("ppo/epochs_run", self.epochs_run as f64),
            ("ppo/minibatches_skipped", self.minibatches_skipped as f64),
            ("perf/gen_s", self.gen_s),
            ("perf/score_s", self.score_s),
            ("perf/train_s", self.train_s),
            ("perf/tokens_per_s", self.tokens_per_s),
        ]
    }
}

/// Prompts and responses packed as `[b, P + R]`: prompts left-padded to `P`, responses
/// right-padded to `R`.
pub(super) struct Packed {
    pub(super) input: LmInput,
    /// `[b, R]` response ids (padding 0).
    pub(super) targets: Tensor,
}

pub(super) fn pack(
    prompts: &[Vec<u32>],
    responses: &[Vec<u32>],
    rows: &[usize],
    p: usize,
    r: usize,
    device: &candle_core::Device,
) -> Result<Packed> {
    let b = rows.len();
    let mut ids = Vec::with_capacity(b * (p + r));
    let mut mask = Vec::with_capacity(b * (p + r));
    let mut tgt = Vec::with_capacity(b * r);
    for &i in rows {
        let (q, y) = (&prompts[i], &responses[i]);
        ids.extend(std::iter::repeat_n(PAD, p - q.len()));
        mask.extend(std::iter::repeat_n(0u8, p - q.len()));
        ids.extend_from_slice(q);
        ids.extend_from_slice(y);
        mask.extend(std::iter::repeat_n(1u8, q.len() + y.len()));
        ids.extend(std::iter::repeat_n(PAD, r - y.len()));
        mask.extend(std::iter::repeat_n(0u8, r - y.len()));
        tgt.extend_from_slice(y);
        tgt.extend(std::iter::repeat_n(PAD, r - y.len()));
    }
    Ok(Packed {
        input: LmInput::new(ids, mask, b, p + r)?,
        targets: Tensor::from_vec(tgt, (b, r), device)?,
    })
}

pub(super) fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for x in it {
        s += x;
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_left_pads_prompts_and_right_pads_responses() {
        let p = vec![vec![7, 8], vec![9]];
        let y = vec![vec![1], vec![2, 3]];
        let pk = pack(&p, &y, &[1, 0], 2, 2, &candle_core::Device::Cpu).unwrap();
        assert_eq!(pk.input.ids, vec![0, 9, 2, 3, 7, 8, 1, 0]);
        assert_eq!(pk.input.mask, vec![0, 1, 1, 1, 1, 1, 1, 0]);
        assert_eq!(
            pk.targets.to_vec2::<u32>().unwrap(),
            vec![vec![2, 3], vec![1, 0]]
        );
    }
}
