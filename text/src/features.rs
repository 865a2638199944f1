//! Reward models on an LM backbone: the frozen backbone turns each completion token (in the
//! context of the prompt and the tokens before it) into its final hidden state, and the
//! Bradley–Terry heads of `maxmin-core` (linear or MLP, single or EM mixture) score a completion
//! as the **sum of a per-token reward over its tokens** (the final EOS included) — the same
//! "segment return" form the control reward models use. A sum of per-token terms can express
//! both groups of the IMDB experiment: length (a constant per token) and sentiment (per-word
//! evidence, as in a bag-of-words classifier).
//!
//! What each token row holds is `[features]` ([`crate::config::FeatureConfig`]), in this order:
//! - `contextual` (default on): the token's final hidden state in context;
//! - `token-identity` (default on): the token's context-free representation — the backbone's
//!   final hidden state for the token alone — so a linear head can weigh words directly; a small
//!   model's contextual states keep word identity only weakly. The table is computed once per
//!   vocabulary entry;
//! - `token-counts` (default off): a one-hot of the token id at vocabulary width. Summed over a
//!   completion it is the bag-of-tokens count vector, and a linear head on it is a weight per
//!   vocabulary entry: word-level sentiment evidence and length (the same weight on every token)
//!   are both exactly expressible, which a projection to the hidden width is not. Only linear
//!   heads take it: for them the pipeline keeps one feature sum per completion
//!   ([`Featurizer::completion_sums`], `Encoded::from_sums`), never per-token one-hot rows, so
//!   memory is comparisons × 2 × width rather than × completion length as well;
//! - `length` (default off): the completion's length in tokens over `max-new-tokens`, one column.
//!
//! `pooling` decides how the rows become a reward. `sum` (default): one row per token, the
//! completion's reward is the sum of per-token rewards, so every occurrence of a word adds its
//! weight again and a head with positive word weights rewards length. `mean`: one row per
//! completion, the mean of its token rows (the length column stays the length), so the content
//! part of the reward does not grow with the text and length enters only through its own column —
//! the form of a length-independent ground truth such as the IMDB sentiment scorer's mean evidence
//! (docs/lm-rlhf.md, "Reward features").
//!
//! Why frozen: EM trains K heads for several iterations on the same comparisons; with the
//! backbone frozen each completion is encoded once and the whole EM runs on vectors, which is
//! what makes the embedded experiment fit a 2-core CPU. The backbone is the reference policy
//! itself (the paper trains reward models from the SFT model too). LoRA-tuned reward backbones
//! are not implemented.

use crate::config::{FeatureConfig, Pooling};
use candle_core::IndexOp;
use maxmin_core::env::Space;
use maxmin_core::prefs::reward_model::Features;
use maxmin_core::{Error, Result};
use maxmin_lm::lm::{CausalLm, LmInput};
use std::sync::Arc;

/// Encodes (prompt, completion) token sequences with a frozen LM.
pub struct Featurizer {
    base: Arc<dyn CausalLm>,
    pad_id: u32,
    batch: usize,
    /// Contextual hidden state per token.
    contextual: bool,
    /// Context-free hidden state of every token id, when token identity is on.
    token_table: Option<Vec<Vec<f32>>>,
    /// Vocabulary width of the token one-hot, when token counts are on.
    counts: Option<usize>,
    /// One row per completion, the mean of its token rows.
    mean: bool,
    /// Pseudo-tokens added to the mean's denominator (`prior-tokens`).
    prior: f32,
    /// Tokens per unit of the length column, when it is on.
    length: Option<f32>,
}

impl std::fmt::Debug for Featurizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Featurizer")
            .field("hidden", &self.base.hidden_size())
            .field("contextual", &self.contextual)
            .field("token_identity", &self.token_table.is_some())
            .field("token_counts", &self.counts)
            .field("mean", &self.mean)
            .field("prior", &self.prior)
            .field("length", &self.length)
            .finish()
    }
}

impl Featurizer {
    /// A featurizer on `base` with contextual hidden states only; `batch` sequences per forward
    /// pass.
    pub fn new(base: Arc<dyn CausalLm>, pad_id: u32, batch: usize) -> Self {
        Self {
            base,
            pad_id,
            batch: batch.max(1),
            contextual: true,
            token_table: None,
            counts: None,
            mean: false,
            prior: 0.0,
            length: None,
        }
    }

    /// The channels and pooling `[features]` asks for (see the module doc); `max_new_tokens`
    /// scales the length column.
    pub fn with_config(mut self, cfg: &FeatureConfig, max_new_tokens: usize) -> Result<Self> {
        cfg.validate()?;
        self.contextual = cfg.contextual;
        self.mean = cfg.pooling == Pooling::Mean;
        self.prior = cfg.prior_tokens;
        self.length = cfg.length.then_some(max_new_tokens.max(1) as f32);
        if cfg.token_identity {
            self = self.with_token_identity()?;
        }
        if cfg.token_counts {
            self.counts = Some(self.base.vocab_size());
        }
        Ok(self)
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

    /// Width of the hidden-state part of a row (contextual and/or context-free).
    fn dense_dim(&self) -> usize {
        let h = self.base.hidden_size();
        h * (self.contextual as usize + self.token_table.is_some() as usize)
    }

    /// Feature length of one row.
    pub fn dim(&self) -> usize {
        self.dense_dim() + self.counts.unwrap_or(0) + self.length.is_some() as usize
    }

    /// Whether rows carry the vocabulary-wide token one-hot (linear heads only).
    pub fn has_token_counts(&self) -> bool {
        self.counts.is_some()
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

    /// Feature rows of each completion (in context of its prompt): `[n][rows][dim]`, one row
    /// per token with `sum` pooling, one row with `mean` pooling. A completion's reward is its
    /// rows' per-row rewards summed. Completions must be non-empty.
    pub fn token_rows(
        &self,
        prompts: &[Vec<u32>],
        completions: &[Vec<u32>],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        if self.mean {
            let pooled = self.completion_sums(prompts, completions)?;
            return Ok(pooled.into_iter().map(|row| vec![row]).collect());
        }
        let mut rows = self.dense_rows(prompts, completions)?;
        for (rs, ids) in rows.iter_mut().zip(completions) {
            for (row, &tok) in rs.iter_mut().zip(ids) {
                if let Some(v) = self.counts {
                    let at = row.len();
                    row.resize(at + v, 0.0);
                    row[at + self.vocab_index(tok)?] = 1.0;
                }
                if let Some(scale) = self.length {
                    row.push(1.0 / scale);
                }
            }
        }
        Ok(rows)
    }

    /// Each completion's rows summed, `[n][dim]`: all a linear head needs (the token one-hots
    /// become counts without being materialised per token). With `mean` pooling this is the
    /// completion's single row.
    pub fn completion_sums(
        &self,
        prompts: &[Vec<u32>],
        completions: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>> {
        let rows = self.dense_rows(prompts, completions)?;
        rows.iter()
            .zip(completions)
            .map(|(rs, ids)| self.pooled(rs, ids))
            .collect()
    }

    /// One completion's dense rows and token ids pooled into one row: summed (divided by the
    /// length plus `prior-tokens` with `mean` pooling), the length column as the length.
    fn pooled(&self, dense: &[Vec<f32>], ids: &[u32]) -> Result<Vec<f32>> {
        let d = self.dense_dim();
        let mut out = vec![0f32; self.dim()];
        for r in dense {
            for (a, b) in out.iter_mut().zip(r) {
                *a += b;
            }
        }
        if self.counts.is_some() {
            for &tok in ids {
                out[d + self.vocab_index(tok)?] += 1.0;
            }
        }
        let n = ids.len() as f32;
        let content = d + self.counts.unwrap_or(0);
        if self.mean && n + self.prior > 0.0 {
            let denominator = n + self.prior;
            for a in &mut out[..content] {
                *a /= denominator;
            }
        }
        if let Some(scale) = self.length {
            out[content] = n / scale;
        }
        Ok(out)
    }

    fn vocab_index(&self, tok: u32) -> Result<usize> {
        let v = self.base.vocab_size();
        if (tok as usize) < v {
            Ok(tok as usize)
        } else {
            Err(Error::input(
                format!("token id {tok} outside the vocabulary of {v}"),
                None,
            ))
        }
    }

    /// The hidden-state part of every token row, `[n][len][dense_dim]` (rows are empty vectors
    /// when neither hidden channel is on; no forward pass is run without `contextual`).
    fn dense_rows(
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
        if let Some(i) = completions.iter().position(|c| c.is_empty()) {
            return Err(Error::input(
                format!("completion {i} is empty: nothing to score"),
                None,
            ));
        }
        let mut out: Vec<Vec<Vec<f32>>> = if self.contextual {
            self.contextual_rows(prompts, completions)?
        } else {
            completions
                .iter()
                .map(|c| vec![Vec::new(); c.len()])
                .collect()
        };
        if let Some(table) = &self.token_table {
            for (rows, ids) in out.iter_mut().zip(completions) {
                for (row, &tok) in rows.iter_mut().zip(ids) {
                    row.extend_from_slice(&table[self.vocab_index(tok)?]);
                }
            }
        }
        Ok(out)
    }

    /// Contextual final hidden states of each completion's tokens, `[n][len][hidden]`.
    fn contextual_rows(
        &self,
        prompts: &[Vec<u32>],
        completions: &[Vec<u32>],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
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
                out.push(hidden.i((r, t - len..t))?.to_vec2()?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn fixture() -> Arc<dyn CausalLm> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/lm/gpt2-noprefix");
        Arc::from(maxmin_lm::auto::load_causal_lm(&dir, DType::F32, &Device::Cpu).unwrap())
    }

    /// Token counts: each row ends in the token's one-hot at vocabulary width; a completion's
    /// sum equals its rows summed (the counts), and only requested channels are present.
    #[test]
    fn token_counts_rows_and_sums_agree() {
        let base = fixture();
        let (h, v) = (base.hidden_size(), base.vocab_size());
        let cfg = |contextual, token_identity, token_counts| FeatureConfig {
            contextual,
            token_identity,
            token_counts,
            ..FeatureConfig::default()
        };
        let fz = Featurizer::new(base.clone(), 0, 2)
            .with_config(&cfg(true, true, true), 32)
            .unwrap();
        assert_eq!(fz.dim(), 2 * h + v);
        let prompts = vec![vec![1, 2], vec![3]];
        let comps = vec![vec![5, 7, 5], vec![9]];
        let rows = fz.token_rows(&prompts, &comps).unwrap();
        let sums = fz.completion_sums(&prompts, &comps).unwrap();
        for (rs, (s, ids)) in rows.iter().zip(sums.iter().zip(&comps)) {
            assert_eq!(rs.len(), ids.len());
            for (r, &t) in rs.iter().zip(ids) {
                assert_eq!(r.len(), fz.dim());
                assert_eq!(r[2 * h + t as usize], 1.0);
                assert_eq!(r[2 * h..].iter().sum::<f32>(), 1.0);
            }
            for j in 0..fz.dim() {
                let want: f32 = rs.iter().map(|r| r[j]).sum();
                assert!(
                    (s[j] - want).abs() < 1e-4,
                    "feature {j}: {} vs {want}",
                    s[j]
                );
            }
        }
        assert_eq!(sums[0][2 * h + 5], 2.0);
        let counts_only = Featurizer::new(base.clone(), 0, 2)
            .with_config(&cfg(false, false, true), 32)
            .unwrap();
        assert_eq!(counts_only.dim(), v);
        let s = counts_only.completion_sums(&prompts, &comps).unwrap();
        assert_eq!(
            (s[0][5], s[0][7], s[1][9], s[1].iter().sum::<f32>()),
            (2.0, 1.0, 1.0, 1.0)
        );
        let e = counts_only
            .token_rows(&prompts, &[vec![5], vec![v as u32]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the vocabulary"), "{e}");
        assert!(Featurizer::new(base, 0, 2)
            .with_config(&cfg(false, false, false), 32)
            .is_err());
    }

    /// `mean` pooling: one row per completion whose content part does not change when the text
    /// repeats itself, and a length column that does; with `sum` pooling the length column's
    /// rows add up to the same length.
    #[test]
    fn mean_pooling_is_length_free_but_for_the_length_column() {
        let base = fixture();
        let v = base.vocab_size();
        let counts = |pooling| FeatureConfig {
            contextual: false,
            token_identity: false,
            token_counts: true,
            pooling,
            prior_tokens: 0.0,
            length: true,
        };
        let mean = Featurizer::new(base.clone(), 0, 2)
            .with_config(&counts(Pooling::Mean), 8)
            .unwrap();
        assert_eq!(mean.dim(), v + 1);
        let prompts = vec![vec![1], vec![1]];
        let comps = vec![vec![5, 7], vec![5, 7, 5, 7]];
        let rows = mean.token_rows(&prompts, &comps).unwrap();
        assert!(rows.iter().all(|r| r.len() == 1));
        let (a, b) = (&rows[0][0], &rows[1][0]);
        assert_eq!(&a[..v], &b[..v]);
        assert_eq!((a[5], a[7], a[v], b[v]), (0.5, 0.5, 0.25, 0.5));
        assert_eq!(
            mean.completion_sums(&prompts, &comps).unwrap(),
            vec![a.clone(), b.clone()]
        );

        let sum = Featurizer::new(base.clone(), 0, 2)
            .with_config(&counts(Pooling::Sum), 8)
            .unwrap();
        let rows = sum.token_rows(&prompts, &comps).unwrap();
        assert_eq!(rows[1].len(), 4);
        let len_col: f32 = rows[1].iter().map(|r| r[v]).sum();
        assert!((len_col - 0.5).abs() < 1e-6, "{len_col}");
        let sums = sum.completion_sums(&prompts, &comps).unwrap();
        assert_eq!((sums[1][5], sums[1][v]), (2.0, 0.5));

        // Contextual states are averaged too: the pooled row is the mean of the token rows.
        let ctx = Featurizer::new(base, 0, 2)
            .with_config(
                &FeatureConfig {
                    token_identity: false,
                    pooling: Pooling::Mean,
                    ..FeatureConfig::default()
                },
                8,
            )
            .unwrap();
        let plain = Featurizer::new(ctx.base.clone(), 0, 2);
        let per_token = plain.token_rows(&prompts, &comps).unwrap();
        let pooled = ctx.token_rows(&prompts, &comps).unwrap();
        for (p, toks) in pooled.iter().zip(&per_token) {
            for j in 0..ctx.dim() {
                let want = toks.iter().map(|r| r[j]).sum::<f32>() / toks.len() as f32;
                assert!((p[0][j] - want).abs() < 1e-5);
            }
        }
    }

    /// `prior-tokens`: the content part is the token sum over (tokens + prior), so a short
    /// completion scores a fraction of its words' weight and a long one nearly their mean; the
    /// length column is untouched. Negative, non-finite and sum-pooled priors are refused.
    #[test]
    fn prior_tokens_shrink_short_completions_towards_zero() {
        let base = fixture();
        let v = base.vocab_size();
        let cfg = |pooling, prior_tokens| FeatureConfig {
            contextual: false,
            token_identity: false,
            token_counts: true,
            pooling,
            prior_tokens,
            length: true,
        };
        let f = Featurizer::new(base.clone(), 0, 2)
            .with_config(&cfg(Pooling::Mean, 2.0), 8)
            .unwrap();
        let prompts = vec![vec![1], vec![1]];
        let comps = vec![vec![5, 7], vec![5, 7, 5, 7, 5, 7]];
        let rows = f.completion_sums(&prompts, &comps).unwrap();
        // 1 / (2 + 2) and 3 / (6 + 2): the longer text carries more of its words' weight.
        assert_eq!((rows[0][5], rows[0][7], rows[0][v]), (0.25, 0.25, 0.25));
        assert_eq!((rows[1][5], rows[1][7], rows[1][v]), (0.375, 0.375, 0.75));
        assert_eq!(f.token_rows(&prompts, &comps).unwrap()[1][0], rows[1]);

        for (pooling, prior, key) in [
            (Pooling::Mean, -1.0, "prior-tokens"),
            (Pooling::Mean, f32::NAN, "prior-tokens"),
            (Pooling::Sum, 4.0, "prior-tokens"),
        ] {
            let err = Featurizer::new(base.clone(), 0, 2)
                .with_config(&cfg(pooling, prior), 8)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
