//! Text generation for policies: greedy decoding and seeded sampling with temperature, top-k and
//! top-p (applied in that order, as HF `generate`'s logits warpers do), over a left-padded batch,
//! with or without the external KV cache (both give the same tokens; the cache is the fast path).
//! Stopping at the end-of-sequence token is a named option; nothing is encoded as a magic id.

use crate::lm::{CausalLm, ForwardOpts, KvCache, LmInput};
use crate::lora::Lora;
use candle_core::{IndexOp, Tensor};
use maxmin_core::{rng::Rng, Error, Result};
use rand::Rng as _;
use rayon::prelude::*;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// The most likely token (first on ties).
    Greedy,
    /// Sample from the softmax of `logits / temperature`, restricted to the `top_k` most likely
    /// tokens and then to the smallest set whose probability reaches `top_p`.
    Sample {
        /// > 0.
        temperature: f64,
        /// Keep only the k most likely tokens; `None` keeps all.
        top_k: Option<usize>,
        /// Nucleus mass in (0, 1]; `None` keeps all.
        top_p: Option<f64>,
    },
}

impl Sampling {
    /// Check values.
    pub fn validate(&self) -> Result<()> {
        if let Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } = self
        {
            if !(temperature.is_finite() && *temperature > 0.0) {
                return Err(Error::input(
                    format!("temperature must be > 0, found {temperature}"),
                    Some("use greedy decoding instead of temperature 0".into()),
                ));
            }
            if *top_k == Some(0) {
                return Err(Error::input("top-k must be ≥ 1", None));
            }
            if let Some(p) = top_p {
                if !(p.is_finite() && *p > 0.0 && *p <= 1.0) {
                    return Err(Error::input(
                        format!("top-p must be in (0, 1], found {p}"),
                        None,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// New tokens per sequence at most.
    pub max_new_tokens: usize,
    /// Greedy or sampled.
    pub sampling: Sampling,
    /// Stop a sequence when it emits the model's end-of-sequence token (which is kept in the
    /// output). Off: always generate `max_new_tokens`.
    pub stop_at_eos: bool,
    /// Reuse keys/values of past positions (fast); off recomputes the whole prefix each step.
    pub use_cache: bool,
    /// Id written into padded positions (masked out; any valid id).
    pub pad_id: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            sampling: Sampling::Greedy,
            stop_at_eos: true,
            use_cache: true,
            pad_id: 0,
        }
    }
}

/// Generated continuations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// New tokens of each prompt (ending with EOS when it stopped there).
    pub tokens: Vec<Vec<u32>>,
    /// Whether each sequence stopped at EOS.
    pub stopped_at_eos: Vec<bool>,
}

/// Pick the next token from one row of logits.
pub fn sample_token(logits: &[f32], sampling: &Sampling, rng: &mut Rng) -> Result<u32> {
    let u = sampling.draws().then(|| rng.random::<f64>());
    pick_token(logits, sampling, u)
}

impl Sampling {
    /// Whether choosing a token takes one uniform draw from the generator (sampling) or none
    /// (greedy).
    fn draws(&self) -> bool {
        matches!(self, Sampling::Sample { .. })
    }
}

/// An error unless `logits` is a non-empty row without NaN or +inf.
fn check_row(logits: &[f32]) -> Result<()> {
    if logits.is_empty() {
        return Err(Error::Internal("empty logits row".into()));
    }
    // NaN or +inf logits come from broken weights or an overflow; sampling from them would
    // print garbage with exit 0. (−inf is a legitimate mask.)
    if let Some(i) = logits
        .iter()
        .position(|x| x.is_nan() || *x == f32::INFINITY)
    {
        return Err(Error::input(
            format!(
                "the model produced a non-finite logit ({}) for token {i}: its weights or \
                 inputs are broken (NaN/inf) or the forward overflowed",
                logits[i]
            ),
            None,
        ));
    }
    Ok(())
}

/// [`sample_token`] given its uniform draw `u` in `[0, 1)` (`None` for greedy decoding): a pure
/// function of the row, so a batch's rows can be picked in parallel once their draws are taken
/// in row order.
fn pick_token(logits: &[f32], sampling: &Sampling, u: Option<f64>) -> Result<u32> {
    check_row(logits)?;
    let argmax = |v: &[f32]| {
        let mut best = 0;
        for (i, &x) in v.iter().enumerate() {
            if x > v[best] {
                best = i;
            }
        }
        best as u32
    };
    let Sampling::Sample {
        temperature,
        top_k,
        top_p,
    } = sampling
    else {
        return Ok(argmax(logits));
    };
    let scaled: Vec<f64> = logits.iter().map(|&x| x as f64 / temperature).collect();
    // Candidates in descending order of logit, ties by index. Only as much of the order as the
    // draw walks is sorted (most of the mass sits in the first few dozen tokens); the order is a
    // total one, so the walk sees exactly the sequence a full sort gives.
    let mut order = LazyOrder::new(&scaled);
    if let Some(k) = top_k {
        order.truncate((*k).max(1));
    }
    let max = scaled[order.get(0)];
    // Each candidate's exp(score − max), computed once (the walk and the total reuse it).
    let mut e = vec![0.0f64; scaled.len()];
    for &i in order.members() {
        e[i] = (scaled[i] - max).exp();
    }
    let sum: f64 = order.members().iter().map(|&i| e[i]).sum();
    let prob = |i: usize| e[i] / sum;
    let kept = match top_p {
        Some(p) => {
            let (mut acc, mut keep) = (0.0, order.len());
            for n in 0..order.len() {
                acc += prob(order.get(n));
                if acc >= *p {
                    keep = n + 1;
                    break;
                }
            }
            keep
        }
        None => order.len(),
    };
    let total: f64 = if kept == order.len() {
        order.members().iter().map(|&i| prob(i)).sum()
    } else {
        (0..kept).map(|n| prob(order.get(n))).sum()
    };
    let Some(u) = u else {
        return Err(Error::Internal("sampling without a draw".into()));
    };
    let mut u = u * total;
    for n in 0..kept {
        let i = order.get(n);
        let q = prob(i);
        if u < q {
            return Ok(i as u32);
        }
        u -= q;
    }
    Ok(order.get(kept - 1) as u32)
}

/// Token ids in descending order of score (ties: lower id first), sorted lazily in growing
/// blocks: `get(n)` sorts only up to `n`, each block found by a linear-time selection.
struct LazyOrder<'a> {
    scores: &'a [f64],
    ids: Vec<usize>,
    sorted: usize,
}

impl<'a> LazyOrder<'a> {
    fn new(scores: &'a [f64]) -> Self {
        LazyOrder {
            scores,
            ids: (0..scores.len()).collect(),
            sorted: 0,
        }
    }

    fn cmp(scores: &[f64], a: usize, b: usize) -> std::cmp::Ordering {
        scores[b].total_cmp(&scores[a]).then(a.cmp(&b))
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Keep the `k` first (all when `k` ≥ len).
    fn truncate(&mut self, k: usize) {
        if k < self.ids.len() {
            let s = self.scores;
            self.ids
                .select_nth_unstable_by(k - 1, |&a, &b| Self::cmp(s, a, b));
            self.ids.truncate(k);
            self.sorted = 0;
        }
    }

    /// The members in no particular order.
    fn members(&self) -> &[usize] {
        &self.ids
    }

    /// The `n`-th member in order.
    fn get(&mut self, n: usize) -> usize {
        while n >= self.sorted && self.sorted < self.ids.len() {
            let s = self.scores;
            let end = (self.sorted + self.sorted.max(32)).min(self.ids.len());
            let rest = &mut self.ids[self.sorted..];
            let block = end - self.sorted;
            if block < rest.len() {
                rest.select_nth_unstable_by(block - 1, |&a, &b| Self::cmp(s, a, b));
            }
            rest[..block].sort_unstable_by(|&a, &b| Self::cmp(s, a, b));
            self.sorted = end;
        }
        self.ids[n]
    }
}

/// Continue each prompt; `rng` drives sampling (untouched by greedy decoding).
pub fn generate(
    model: &dyn CausalLm,
    lora: Option<&Lora>,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    rng: &mut Rng,
) -> Result<Generation> {
    opts.sampling.validate()?;
    if opts.stop_at_eos && model.eos_token_id().is_none() {
        return Err(Error::input(
            "stop at EOS was asked but the model's config.json has no eos_token_id",
            Some("turn stopping at EOS off".into()),
        ));
    }
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    if let Some(max) = model.max_positions() {
        if longest + opts.max_new_tokens > max {
            return Err(Error::input(
                format!(
                    "prompt ({longest} tokens) + max new tokens ({}) exceeds the model's {max} positions",
                    opts.max_new_tokens
                ),
                None,
            ));
        }
    }
    let b = prompts.len();
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut stopped = vec![false; b];
    // Rows still generating, in batch order; finished rows leave the batch (and the cache), so
    // no compute is spent on tokens that are thrown away. Rows sample in the same order as
    // with the full batch, so the draws are the same.
    let mut active: Vec<usize> = (0..b).collect();
    let mut cache = model.new_cache();
    let mut next_input = LmInput::left_padded(prompts, opts.pad_id)?;
    next_input.check_vocab(model.vocab_size())?;
    for _ in 0..opts.max_new_tokens {
        let logits = if opts.use_cache {
            let last = next_input.seq_len - 1;
            model
                .forward_with(
                    &next_input,
                    Some(&mut cache),
                    lora,
                    ForwardOpts::inference(last),
                )?
                .logits
        } else {
            let rows: Vec<Vec<u32>> = active.iter().map(|&r| seqs[r].clone()).collect();
            let input = LmInput::left_padded(&rows, opts.pad_id)?;
            let last = input.seq_len - 1;
            model
                .forward_with(
                    &input,
                    None::<&mut KvCache>,
                    lora,
                    ForwardOpts::inference(last),
                )?
                .logits
        };
        let t = logits.dim(1)?;
        let last: Vec<Vec<f32>> = logits.i((.., t - 1, ..))?.to_vec2()?;
        // Draws in row order (as one row after another would take them), then the rows' picks
        // in parallel: the same tokens, whatever the thread count.
        let draws: Vec<Option<f64>> = active
            .iter()
            .map(|_| opts.sampling.draws().then(|| rng.random::<f64>()))
            .collect();
        let picked: Vec<u32> = last
            .par_iter()
            .zip(&draws)
            .map(|(row, &u)| pick_token(row, &opts.sampling, u))
            .collect::<Result<_>>()?;
        let mut keep = Vec::with_capacity(active.len());
        let mut step = Vec::with_capacity(active.len());
        for (k, &r) in active.iter().enumerate() {
            let tok = picked[k];
            out[r].push(tok);
            seqs[r].push(tok);
            if opts.stop_at_eos && Some(tok) == model.eos_token_id() {
                stopped[r] = true;
            } else {
                keep.push(k);
                step.push(tok);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            if opts.use_cache {
                cache.select_rows(&keep)?;
            }
            active = keep.iter().map(|&k| active[k]).collect();
        }
        let n = active.len();
        next_input = LmInput::new(step, vec![1; n], n, 1)?;
    }
    Ok(Generation {
        tokens: out,
        stopped_at_eos: stopped,
    })
}

/// Log-probabilities `(batch, t-1)` of each next token of `input` under `logits` `(batch, t, V)`
/// (position j scores token j+1); padded targets get 0.
pub fn token_logprobs(logits: &Tensor, input: &LmInput) -> Result<Tensor> {
    let (b, t, _v) = logits.dims3()?;
    if t < 2 {
        return Err(Error::input(
            "need at least 2 positions to score next tokens",
            None,
        ));
    }
    let lp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, t - 1)?, candle_core::D::Minus1)?;
    let mut tgt = Vec::with_capacity(b * (t - 1));
    let mut m = Vec::with_capacity(b * (t - 1));
    for r in 0..b {
        for j in 1..t {
            tgt.push(input.ids[r * t + j]);
            m.push(input.mask[r * t + j] as f32);
        }
    }
    let tgt = Tensor::from_vec(tgt, (b, t - 1, 1), logits.device())?;
    let m = Tensor::from_vec(m, (b, t - 1), logits.device())?;
    Ok((lp.gather(&tgt, 2)?.squeeze(2)? * m)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxmin_core::rng;

    #[test]
    fn greedy_top_k_top_p() {
        let logits = [0.0f32, 3.0, 1.0, 2.9];
        let mut r = rng::stream(0, "t");
        assert_eq!(sample_token(&logits, &Sampling::Greedy, &mut r).unwrap(), 1);
        let k1 = Sampling::Sample {
            temperature: 1.0,
            top_k: Some(1),
            top_p: None,
        };
        for _ in 0..20 {
            assert_eq!(sample_token(&logits, &k1, &mut r).unwrap(), 1);
        }
        // Top-2 by mass: tokens 1 and 3 only.
        let k2 = Sampling::Sample {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
        };
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            seen[sample_token(&logits, &k2, &mut r).unwrap() as usize] += 1;
        }
        assert_eq!(seen[0] + seen[2], 0);
        assert!(seen[1] > 100 && seen[3] > 100, "{seen:?}");
        // Tiny nucleus keeps only the argmax.
        let p = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.01),
        };
        assert_eq!(sample_token(&logits, &p, &mut r).unwrap(), 1);
        // Same seed, same draws.
        let all = Sampling::Sample {
            temperature: 0.7,
            top_k: None,
            top_p: None,
        };
        let a: Vec<u32> = {
            let mut r = rng::stream(5, "s");
            (0..30)
                .map(|_| sample_token(&logits, &all, &mut r).unwrap())
                .collect()
        };
        let b: Vec<u32> = {
            let mut r = rng::stream(5, "s");
            (0..30)
                .map(|_| sample_token(&logits, &all, &mut r).unwrap())
                .collect()
        };
        assert_eq!(a, b);
    }

    /// The draw as a full sort computes it (the implementation before lazy ordering).
    #[test]
    fn non_finite_logits_are_an_error_not_garbage() {
        let mut r = maxmin_core::rng::stream(1, "t");
        for bad in [f32::NAN, f32::INFINITY] {
            for s in [
                Sampling::Greedy,
                Sampling::Sample {
                    temperature: 1.0,
                    top_k: None,
                    top_p: None,
                },
            ] {
                let e = sample_token(&[0.0, bad, 1.0], &s, &mut r)
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains("non-finite logit") && e.contains("token 1"),
                    "{e}"
                );
            }
        }
        // A masked (−inf) entry is fine.
        let t = sample_token(&[0.0, f32::NEG_INFINITY, 1.0], &Sampling::Greedy, &mut r).unwrap();
        assert_eq!(t, 2);
    }

    fn sample_sorted(
        logits: &[f32],
        temperature: f64,
        top_k: Option<usize>,
        top_p: Option<f64>,
        rng: &mut Rng,
    ) -> u32 {
        let scaled: Vec<f64> = logits.iter().map(|&x| x as f64 / temperature).collect();
        let mut order: Vec<usize> = (0..scaled.len()).collect();
        order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]).then(a.cmp(&b)));
        if let Some(k) = top_k {
            order.truncate(k.max(1));
        }
        let max = scaled[order[0]];
        let mut probs: Vec<f64> = order.iter().map(|&i| (scaled[i] - max).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if let Some(p) = top_p {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (n, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
            order.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut u = rng.random::<f64>() * total;
        for (q, &i) in probs.iter().zip(order.iter()) {
            if u < *q {
                return i as u32;
            }
            u -= q;
        }
        order[order.len() - 1] as u32
    }

    #[test]
    fn lazy_order_draws_what_a_full_sort_draws() {
        let mut data = rng::stream(3, "logits");
        for (temperature, top_k, top_p) in [
            (1.0, None, None),
            (0.7, Some(50), None),
            (1.3, None, Some(0.9)),
            (1.0, Some(3), Some(0.5)),
            (1.0, Some(5000), None),
        ] {
            let s = Sampling::Sample {
                temperature,
                top_k,
                top_p,
            };
            let (mut a, mut b) = (rng::stream(9, "draw"), rng::stream(9, "draw"));
            for row in 0..300 {
                // Ties on purpose (coarse logits) and a spread like a small LM's.
                let logits: Vec<f32> = (0..4096)
                    .map(|_| (data.random_range(-4.0f32..4.0) * 4.0).round() / 4.0)
                    .collect();
                let got = sample_token(&logits, &s, &mut a).unwrap();
                let want = sample_sorted(&logits, temperature, top_k, top_p, &mut b);
                assert_eq!(got, want, "row {row}, {s:?}");
            }
        }
    }

    #[test]
    fn invalid_sampling_is_rejected() {
        for s in [
            Sampling::Sample {
                temperature: 0.0,
                top_k: None,
                top_p: None,
            },
            Sampling::Sample {
                temperature: 1.0,
                top_k: Some(0),
                top_p: None,
            },
            Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(1.5),
            },
        ] {
            assert!(s.validate().is_err(), "{s:?}");
        }
    }
}
