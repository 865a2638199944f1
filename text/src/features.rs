//! Reward models on an LM backbone: the frozen backbone turns each completion token (in the
//! context of the prompt and the tokens before it) into its final hidden state, and the
//! Bradley–Terry heads of `maxmin-core` (linear or MLP, single or EM mixture) score a completion
//! as the **sum of a per-token reward over its tokens** (the final EOS included) — the same
//! "segment return" form the control reward models use. A sum of per-token terms can express
//! both groups of the IMDB experiment: length (a constant per token) and sentiment (per-word
//! evidence, as in a bag-of-words classifier).
//!
//! With `token-identity` (default on; `[features]`), each row also carries the token's
//! context-free representation — the backbone's final hidden state for the token alone — so a
//! linear head can weigh words directly; a small model's contextual states keep word identity
//! only weakly. The table is computed once per vocabulary entry (skip it for very large
//! vocabularies × widths, e.g. 32,000 × 4,096 for Llama-2).
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
    /// Context-free hidden state of every token id, when token identity is on.
    token_table: Option<Vec<Vec<f32>>>,
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
            token_table: None,
        }
    }

    /// Add each token's context-free hidden state to its row (see the module doc).
    pub fn with_token_identity(mut self) -> Result<Self> {
        let v = self.base.vocab_size();
        let mut table = Vec::with_capacity(v);
        let chunk = 512;
        for start in (0..v).step_by(chunk) {
            let n = chunk.min(v - start);
            let ids: Vec<u32> = (start..start + n).map(|i| i as u32).collect();
            let input = LmInput::new(ids, vec![1; n], n, 1)?;
            let h = self
                .base
                .forward(&input, None, None)?
                .hidden
                .to_dtype(candle_core::DType::F32)?
                .squeeze(1)?;
            table.extend(h.to_vec2::<f32>()?);
        }
        self.token_table = Some(table);
        Ok(self)
    }

    /// Feature length of one token row (the hidden size, twice with token identity).
    pub fn dim(&self) -> usize {
        self.base.hidden_size() * if self.token_table.is_some() { 2 } else { 1 }
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

    /// Hidden-state rows of each completion's tokens (in context of its prompt): `[n][len][dim]`.
    /// Completions must be non-empty.
    pub fn token_rows(
        &self,
        prompts: &[Vec<u32>],
        completions: &[Vec<u32>],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        if prompts.len() != completions.len() {
            return Err(Error::Internal(format!(
                "{} prompts for {} completions",
                prompts.len(),
                completions.len()
            )));
        }
        let mut out = Vec::with_capacity(prompts.len());
        for start in (0..prompts.len()).step_by(self.batch) {
            let end = (start + self.batch).min(prompts.len());
            let seqs: Vec<Vec<u32>> = (start..end)
                .map(|i| {
                    let mut s = prompts[i].clone();
                    s.extend_from_slice(&completions[i]);
                    s
                })
                .collect();
            if let Some(i) = (start..end).find(|&i| completions[i].is_empty()) {
                return Err(Error::input(
                    format!("completion {i} is empty: nothing to score"),
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
                // Left padding: the completion occupies the last `len` positions.
                let len = completions[i].len();
                let mut rows: Vec<Vec<f32>> = hidden.i((r, t - len..t))?.to_vec2()?;
                if let Some(table) = &self.token_table {
                    for (row, &tok) in rows.iter_mut().zip(&completions[i]) {
                        let e = table.get(tok as usize).ok_or_else(|| {
                            Error::input(format!("token id {tok} outside the vocabulary"), None)
                        })?;
                        row.extend_from_slice(e);
                    }
                }
                out.push(rows);
            }
        }
        Ok(out)
    }
}
