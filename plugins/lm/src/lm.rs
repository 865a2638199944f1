//! The causal-LM runtime shared by GPT-2 and Llama: batched, left-padded inputs with an attention
//! mask; position ids derived from the mask (as HF `generate` does: `cumsum(mask) - 1`), so a
//! left-padded row computes exactly what the same row computes alone; an external KV cache; and
//! masked scaled-dot-product attention with grouped-query support.
//!
//! Two execution paths: the fast one uses candle's fused CPU/GPU kernels (softmax, layer/RMS norm,
//! RoPE), which have no backward pass; the differentiable one composes elementary ops. A forward
//! with LoRA adapters takes the differentiable path so gradients reach every adapter. On f32 CPU
//! tensors both use the fused ops of [`crate::ops`] where they apply (linear layers with frozen
//! weights, softmax, GPT-2's layer norm), which have the backward pass LoRA training needs and no
//! more. [`ForwardOpts`] lets generation and scoring skip the graph and the logits they ignore.
//! GPT-2 on f32 CPU weights has two further paths of its own (plain-slice kernels of
//! [`crate::cpu`] without a graph, and one op with a written-out LoRA backward for training;
//! docs/lm.md, "Speed").

use crate::lora::{Lora, LoraTarget};
use crate::ops;
use candle_core::{DType, Device, Tensor, D};
use maxmin_core::{Error, Result};

/// A rectangular batch of token ids with its attention mask (1 = token, 0 = padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmInput {
    /// Row-major `batch × seq_len` token ids.
    pub ids: Vec<u32>,
    /// Row-major `batch × seq_len` mask.
    pub mask: Vec<u8>,
    /// Rows.
    pub batch: usize,
    /// Columns.
    pub seq_len: usize,
}

impl LmInput {
    /// One unpadded sequence.
    pub fn single(ids: &[u32]) -> Result<Self> {
        Self::left_padded(&[ids.to_vec()], 0)
    }

    /// Left-pad sequences of different lengths to the longest with `pad_id` (any id in the
    /// vocabulary: padded positions are masked out).
    pub fn left_padded(seqs: &[Vec<u32>], pad_id: u32) -> Result<Self> {
        if seqs.is_empty() {
            return Err(Error::input("empty batch: no sequences given", None));
        }
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if seqs.iter().any(|s| s.is_empty()) {
            return Err(Error::input("a sequence in the batch has no tokens", None));
        }
        let mut ids = Vec::with_capacity(seqs.len() * t);
        let mut mask = Vec::with_capacity(seqs.len() * t);
        for s in seqs {
            let pad = t - s.len();
            ids.extend(std::iter::repeat_n(pad_id, pad));
            mask.extend(std::iter::repeat_n(0u8, pad));
            ids.extend_from_slice(s);
            mask.extend(std::iter::repeat_n(1u8, s.len()));
        }
        Ok(LmInput {
            ids,
            mask,
            batch: seqs.len(),
            seq_len: t,
        })
    }

    /// From explicit ids and mask (either padding side), checked for consistent lengths.
    pub fn new(ids: Vec<u32>, mask: Vec<u8>, batch: usize, seq_len: usize) -> Result<Self> {
        if batch == 0 || seq_len == 0 || ids.len() != batch * seq_len || mask.len() != ids.len() {
            return Err(Error::input(
                format!(
                    "ids ({}) and mask ({}) must both hold batch × seq_len = {batch} × {seq_len} entries",
                    ids.len(),
                    mask.len()
                ),
                None,
            ));
        }
        Ok(LmInput {
            ids,
            mask,
            batch,
            seq_len,
        })
    }

    /// Index of the last non-pad token of each row (what a reward head reads).
    pub fn last_token_index(&self) -> Result<Vec<usize>> {
        (0..self.batch)
            .map(|r| {
                let row = &self.mask[r * self.seq_len..(r + 1) * self.seq_len];
                row.iter().rposition(|&m| m != 0).ok_or_else(|| {
                    Error::input(format!("row {r} of the batch is all padding"), None)
                })
            })
            .collect()
    }

    /// Check every id is below `vocab`.
    pub fn check_vocab(&self, vocab: usize) -> Result<()> {
        if let Some(&bad) = self.ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::input(
                format!("token id {bad} is out of range: the vocabulary has {vocab} tokens"),
                None,
            ));
        }
        Ok(())
    }
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct LmOutput {
    /// `(batch, seq_len, vocab)` logits at every position, f32.
    pub logits: Tensor,
    /// `(batch, seq_len, hidden)` final hidden states (after the last norm), compute dtype: the
    /// input of value and reward heads.
    pub hidden: Tensor,
}

/// Keys and values of past positions, kept outside the model so one model can serve many
/// sequences (policy rollouts, reference scoring) at once.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Row-major `batch × len` attention mask of the cached positions.
    mask: Vec<u8>,
    batch: usize,
}

impl KvCache {
    /// An empty cache for a model with `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        KvCache {
            layers: vec![None; n_layers],
            mask: Vec::new(),
            batch: 0,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.mask.len().checked_div(self.batch).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        let n = self.layers.len();
        *self = KvCache::new(n);
    }

    /// Keep only rows `rows` (in that order) of every layer's keys and values and of the mask:
    /// generation drops the sequences that have finished.
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let len = self.len();
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch) {
            return Err(Error::Internal(format!(
                "KV cache has {} rows; row {bad} asked",
                self.batch
            )));
        }
        let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        for (k, v) in self.layers.iter_mut().flatten() {
            let idx = Tensor::from_slice(&ids, ids.len(), k.device())?;
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        self.mask = rows
            .iter()
            .flat_map(|&r| self.mask[r * len..(r + 1) * len].iter().copied())
            .collect();
        self.batch = rows.len();
        Ok(())
    }

    /// Layer `i`'s cached `(k, v)`, each `(batch, kv_heads, len, head_dim)`.
    pub fn layer(&self, i: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(i).and_then(|l| l.as_ref())
    }

    /// Append new keys/values of layer `i` and return the full `(k, v)`.
    pub fn append(&mut self, i: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(i)
            .ok_or_else(|| Error::Internal(format!("KV cache has no layer {i}")))?;
        let kv = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *slot = Some(kv.clone());
        Ok(kv)
    }
}

/// Per-forward attention context: the full mask (cache + new tokens), position ids of the new
/// tokens, and the additive attention bias.
#[derive(Debug)]
pub struct AttnCtx {
    /// `(batch, 1, t, past + t)` additive bias, f32: 0 where a query may attend, -1e9 elsewhere
    /// (finite so an all-padding query row stays finite instead of NaN).
    pub bias: Tensor,
    /// Position ids of the new tokens, row-major `batch × t`.
    pub positions: Vec<u32>,
    /// Cached positions before this forward.
    pub past: usize,
    /// The full mask after this forward (to store in the cache).
    pub full_mask: Vec<u8>,
}

/// Value that masks an attention score out.
pub const MASKED: f32 = -1e9;

impl AttnCtx {
    /// Build the context for `input` after `cache` (if any) on `device`.
    pub fn new(input: &LmInput, cache: Option<&KvCache>, device: &Device) -> Result<Self> {
        let (b, t) = (input.batch, input.seq_len);
        let past = cache.map(|c| c.len()).unwrap_or(0);
        if let Some(c) = cache {
            if past > 0 && c.batch != b {
                return Err(Error::input(
                    format!("KV cache holds {} rows but the input has {b}", c.batch),
                    None,
                ));
            }
        }
        let total = past + t;
        let mut full_mask = Vec::with_capacity(b * total);
        for r in 0..b {
            if past > 0 {
                if let Some(c) = cache {
                    full_mask.extend_from_slice(&c.mask[r * past..(r + 1) * past]);
                }
            }
            full_mask.extend_from_slice(&input.mask[r * t..(r + 1) * t]);
        }
        let mut positions = Vec::with_capacity(b * t);
        let mut bias = vec![MASKED; b * t * total];
        for r in 0..b {
            let row = &full_mask[r * total..(r + 1) * total];
            let mut count: u32 = 0;
            for (j, &m) in row.iter().enumerate() {
                if m != 0 {
                    count += 1;
                }
                if j >= past {
                    positions.push(if m != 0 { count - 1 } else { 0 });
                }
            }
            for i in 0..t {
                let q = past + i;
                let base = (r * t + i) * total;
                for (j, &m) in row.iter().enumerate().take(q + 1) {
                    if m != 0 {
                        bias[base + j] = 0.0;
                    }
                }
            }
        }
        let bias = Tensor::from_vec(bias, (b, 1, t, total), device)?;
        Ok(AttnCtx {
            bias,
            positions,
            past,
            full_mask,
        })
    }

    /// Position ids as a `(batch, t)` u32 tensor.
    pub fn positions_tensor(&self, b: usize, t: usize, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.positions.clone(), (b, t), device)?)
    }

    /// Store the mask in the cache after all layers appended their keys and values.
    pub fn commit(self, cache: Option<&mut KvCache>, batch: usize) {
        if let Some(c) = cache {
            c.mask = self.full_mask;
            c.batch = batch;
        }
    }
}

/// Masked attention. `q`: `(b, heads, t, d)`; `k`, `v`: `(b, kv_heads, T, d)` with
/// `heads % kv_heads == 0` (grouped-query attention repeats each kv head); returns `(b, t, heads·d)`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    differentiable: bool,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let kvh = k.dim(1)?;
    let (k, v) = if kvh != h {
        (repeat_kv(k, h / kvh)?, repeat_kv(v, h / kvh)?)
    } else {
        (k.clone(), v.clone())
    };
    let dtype = q.dtype();
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
    let scores = scores.broadcast_add(bias)?;
    let probs = if scores.device().is_cpu() {
        ops::softmax_last_dim(&scores)?
    } else if differentiable {
        candle_nn::ops::softmax(&scores, D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&scores)?
    };
    let out = probs.to_dtype(dtype)?.matmul(&v.contiguous()?)?;
    Ok(out.transpose(1, 2)?.reshape((b, t, h * d))?)
}

fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    let (b, kvh, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kvh, n, t, d))?
        .reshape((b, kvh * n, t, d))?)
}

/// Layer norm over the last dim (GPT-2). Frozen f32 weights on the CPU: the fused op of
/// [`crate::ops::layer_norm`] (with a backward pass). Otherwise the differentiable path composes
/// elementary ops in f32 like the fused kernel does.
pub fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
    differentiable: bool,
) -> Result<Tensor> {
    if let Some(y) = ops::layer_norm(x, w, b, eps)? {
        return Ok(y);
    }
    if !differentiable {
        return Ok(candle_nn::ops::layer_norm(x, w, b, eps as f32)?);
    }
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?.to_dtype(dtype)?;
    Ok(y.broadcast_mul(w)?.broadcast_add(b)?)
}

/// RMS norm over the last dim (Llama), computed in f32 as HF does.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, differentiable: bool) -> Result<Tensor> {
    if !differentiable {
        return Ok(candle_nn::ops::rms_norm(x, w, eps as f32)?);
    }
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xf.broadcast_div(&(ms + eps)?.sqrt()?)?.to_dtype(dtype)?;
    Ok(y.broadcast_mul(w)?)
}

/// `x @ w` for a `(…, in)` input and a `[in, out]` weight (GPT-2 Conv1D layout), plus bias, plus
/// the LoRA update of module `name` when adapters are given.
pub fn linear_in_out(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    name: &str,
    lora: Option<&Lora>,
) -> Result<Tensor> {
    adapted_linear(x, w, b, name, lora, true)
}

/// [`linear_in_out`] for a `w` of any strides (`[in, out]` or a transposed `[out, in]`), with
/// `grad = false` applying the adapters as constants (no graph for a backward pass). The frozen
/// product is [`crate::ops::frozen_linear`]: its backward computes no gradient for `w` or `b`.
pub fn adapted_linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    name: &str,
    lora: Option<&Lora>,
    grad: bool,
) -> Result<Tensor> {
    let y = ops::frozen_linear(x, w, b)?;
    Ok(match lora {
        Some(l) => l.apply_with(name, x, y, grad)?,
        None => y,
    })
}

/// `x @ wᵀ` for a `[out, in]` weight (PyTorch `nn.Linear` layout, Llama), plus the LoRA update.
pub fn linear_out_in(x: &Tensor, w: &Tensor, name: &str, lora: Option<&Lora>) -> Result<Tensor> {
    adapted_linear(x, &w.t()?, None, name, lora, true)
}

/// How a forward pass runs ([`CausalLm::forward_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardOpts {
    /// Keep the graph so gradients reach the adapters (training). Off: adapters enter as
    /// constants and the outputs are detached (generation, scoring, the reference policy).
    pub grad: bool,
    /// First position whose logits are computed (generation needs only the last, PPO only the
    /// response's).
    pub logits_from: usize,
    /// How many positions from `logits_from` on get logits; `None`: up to the last.
    pub logits_len: Option<usize>,
}

impl Default for ForwardOpts {
    /// Logits at every position, differentiable: what [`CausalLm::forward`] does.
    fn default() -> Self {
        ForwardOpts {
            grad: true,
            logits_from: 0,
            logits_len: None,
        }
    }
}

impl ForwardOpts {
    /// No graph, logits from `logits_from` to the end.
    pub fn inference(logits_from: usize) -> Self {
        ForwardOpts {
            grad: false,
            logits_from,
            logits_len: None,
        }
    }

    /// The positions `(from, len)` that get logits in a forward over `t` new positions, checked.
    pub fn logit_span(&self, t: usize) -> Result<(usize, usize)> {
        let from = self.logits_from;
        let len = self.logits_len.unwrap_or(t.saturating_sub(from));
        if from >= t || len == 0 || from + len > t {
            return Err(Error::input(
                format!(
                    "logits of positions {from}..{} asked of a forward over {t} positions",
                    from + len
                ),
                None,
            ));
        }
        Ok((from, len))
    }
}

/// A causal language model as the trainers drive it.
pub trait CausalLm: Send + Sync {
    /// Logits at every position and final hidden states for `input`, continuing after `cache`
    /// (which is extended), with `lora` adapters applied when given. `lora = None` is the base
    /// model: the frozen reference policy is the same model called without adapters.
    fn forward(
        &self,
        input: &LmInput,
        cache: Option<&mut KvCache>,
        lora: Option<&Lora>,
    ) -> Result<LmOutput>;
    /// [`CausalLm::forward`] with options: logits only from `opts.logits_from` on, and without a
    /// graph when `opts.grad` is off. The default narrows and detaches what `forward` returns;
    /// models override it to skip the work.
    fn forward_with(
        &self,
        input: &LmInput,
        cache: Option<&mut KvCache>,
        lora: Option<&Lora>,
        opts: ForwardOpts,
    ) -> Result<LmOutput> {
        let (from, len) = opts.logit_span(input.seq_len)?;
        let out = self.forward(input, cache, lora)?;
        let logits = out.logits.narrow(1, from, len)?;
        Ok(if opts.grad {
            LmOutput {
                logits,
                hidden: out.hidden,
            }
        } else {
            LmOutput {
                logits: logits.detach(),
                hidden: out.hidden.detach(),
            }
        })
    }
    /// An empty cache sized for this model.
    fn new_cache(&self) -> KvCache;
    /// Vocabulary size (logit width).
    fn vocab_size(&self) -> usize;
    /// Hidden size (head input width).
    fn hidden_size(&self) -> usize;
    /// Longest sequence the position embedding supports, if bounded.
    fn max_positions(&self) -> Option<usize>;
    /// End-of-sequence token from `config.json`, if any.
    fn eos_token_id(&self) -> Option<u32>;
    /// Compute dtype.
    fn dtype(&self) -> DType;
    /// Device.
    fn device(&self) -> &Device;
    /// Linear modules LoRA may adapt, with their shapes.
    fn lora_targets(&self) -> Vec<LoraTarget>;
    /// LoRA `target-modules` used when a config names none (as PEFT's defaults).
    fn default_lora_modules(&self) -> &'static [&'static str];
}
