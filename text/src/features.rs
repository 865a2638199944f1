//! Reward models on an LM backbone: the frozen backbone turns prompt + completion into a feature
//! vector, and the Bradley–Terry heads of `maxmin-core` (linear or MLP, single or EM mixture) are
//! trained on those vectors. Features = [final hidden state of the last token ‖ mean final hidden
//! state over the completion's tokens], so a head sees both what the sequence ended on (EOS or
//! not, the position) and what the completion said overall.
//!
//! Why frozen: EM trains K heads for several iterations on the same comparisons; with the
//! backbone frozen each completion is encoded once and the whole EM runs on vectors, which is
//! what makes the embedded experiment fit a 2-core CPU. The backbone is the reference policy
//! itself (the paper trains reward models from the SFT model too). LoRA-tuned reward backbones
//! exist as `maxmin_gpt2::policy::LmRewardModel` but are not used by this pipeline.

use candle_core::IndexOp;
use maxmin_core::env::Space;
use maxmin_core::prefs::reward_model::Features;
use maxmin_core::{Error, Result};
use maxmin_gpt2::lm::{CausalLm, LmInput};
use std::sync::Arc;

/// Encodes (prompt, completion) token sequences with a frozen LM.
pub struct Featurizer {
    base: Arc<dyn CausalLm>,
    pad_id: u32,
    batch: usize,
}

impl std::fmt::Debug for Featurizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Featurizer")
            .field("hidden", &self.base.hidden_size())
            .finish()
    }
}

impl Featurizer {
    /// A featurizer on `base`; `batch` sequences per forward pass.
    pub fn new(base: Arc<dyn CausalLm>, pad_id: u32, batch: usize) -> Self {
        Self {
            base,
            pad_id,
            batch: batch.max(1),
        }
    }

    /// Feature length (2 × hidden size).
    pub fn dim(&self) -> usize {
        2 * self.base.hidden_size()
    }

    /// The reward-model feature description (one "step" per completion, no action).
    pub fn reward_features(&self) -> Features {
        Features {
            obs_dim: self.dim(),
            action_space: Space::Box {
                low: vec![],
                high: vec![],
            },
            squares: false,
        }
    }

    /// Features of each `prompt ++ completion`, row-major `[n * dim]`.
    pub fn encode(&self, prompts: &[Vec<u32>], completions: &[Vec<u32>]) -> Result<Vec<f32>> {
        if prompts.len() != completions.len() {
            return Err(Error::Internal(format!(
                "{} prompts for {} completions",
                prompts.len(),
                completions.len()
            )));
        }
        let h = self.base.hidden_size();
        let mut out = Vec::with_capacity(prompts.len() * 2 * h);
        for start in (0..prompts.len()).step_by(self.batch) {
            let end = (start + self.batch).min(prompts.len());
            let seqs: Vec<Vec<u32>> = (start..end)
                .map(|i| {
                    let mut s = prompts[i].clone();
                    s.extend_from_slice(&completions[i]);
                    s
                })
                .collect();
            if let Some((i, _)) = seqs.iter().enumerate().find(|(_, s)| s.is_empty()) {
                return Err(Error::input(
                    format!("sequence {} is empty: nothing to encode", start + i),
                    None,
                ));
            }
            let input = LmInput::left_padded(&seqs, self.pad_id)?;
            let hidden = self
                .base
                .forward(&input, None, None)?
                .hidden
                .to_dtype(candle_core::DType::F32)?;
            let t = hidden.dim(1)?;
            for (r, i) in (start..end).enumerate() {
                let rows: Vec<Vec<f32>> = hidden.i(r)?.to_vec2()?;
                out.extend_from_slice(&rows[t - 1]);
                // Left padding: the completion occupies the last `len` positions. An empty
                // completion falls back to the last prompt token.
                let len = completions[i].len().max(1);
                let mut mean = vec![0f32; h];
                for row in &rows[t - len..] {
                    for (m, x) in mean.iter_mut().zip(row) {
                        *m += x;
                    }
                }
                out.extend(mean.into_iter().map(|m| m / len as f32));
            }
        }
        Ok(out)
    }
}
