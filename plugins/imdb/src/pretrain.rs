//! Pretraining a small GPT-2 from scratch on IMDB review sentences: the SFT / reference policy of
//! the small-scale LM experiment (docs/algorithms.md, experiment 1), standing in for the paper's GPT-2
//! (no pretrained weights can be downloaded here).
//!
//! Data shape (chosen for the RLHF experiment, whose conciseness reward 1 − length/max must be
//! controllable): every sentence of every training review (see [`crate::data::split_sentences`])
//! with between `min-sentence-tokens` and `max-sentence-tokens` tokens becomes one unit
//! `sentence <|endoftext|>`. A training window starts at a random unit and concatenates the
//! following units (in review order) up to `context + 1` tokens, so every window starts at a
//! sentence start — as prompts (review openings) do — and the model learns to end a sentence
//! with EOS. Held-out perplexity is measured on held-out reviews' units packed the same way.
//!
//! Architecture and layout are GPT-2's as `maxmin_lm::Gpt2::load` reads them (HF names, Conv1D
//! `[in, out]` weights, tied `lm_head`, `gelu_new`); the forward is that same model built with
//! [`maxmin_lm::Gpt2::from_tensors`] over `Var`s. Init as GPT-2: N(0, 0.02), residual
//! projections N(0, 0.02/√(2·layers)), zero biases, unit layer-norm gains. Optimiser:
//! `maxmin_core::optim::Adam` (no weight decay), linear warm-up then cosine decay to
//! `min-lr-frac`·lr, global gradient-norm clip 1.0.

use crate::bpe::EOS_TOKEN;
use crate::data::{split_sentences, Review};
use crate::trainer::Gpt2Trainer;
use candle_core::{Device, Tensor, Var};
use maxmin_core::error::check;
use maxmin_core::optim::Params;
use maxmin_core::{Error, Result};
use maxmin_lm::lm::{CausalLm, LmInput};
use maxmin_lm::{Gpt2, Gpt2ModelConfig};
use rand::Rng as _;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Shape and schedule of a pretraining run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PretrainConfig {
    /// Transformer blocks.
    pub layers: usize,
    /// Hidden size (n_embd).
    pub hidden: usize,
    /// Attention heads (must divide `hidden`).
    pub heads: usize,
    /// Positions (n_positions) and training window length.
    pub context: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Windows per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Final learning rate as a fraction of `lr` (cosine decay).
    pub min_lr_frac: f64,
    /// Shortest sentence kept, in tokens (without EOS).
    pub min_sentence_tokens: usize,
    /// Longest sentence kept, in tokens (without EOS).
    pub max_sentence_tokens: usize,
    /// Held-out windows used for perplexity.
    pub eval_windows: usize,
    /// Root seed (init and window sampling).
    pub seed: u64,
    /// How `model.safetensors` stores the weights: `f32`, or `f16` (half the size; held-out
    /// perplexity is measured on the stored, rounded weights).
    #[serde(default)]
    pub storage: Storage,
}

/// Storage precision of the written weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// 32-bit floats, as trained.
    #[default]
    F32,
    /// IEEE half precision (the loader converts back to the compute dtype).
    F16,
}

impl std::str::FromStr for Storage {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Storage::F32),
            "f16" => Ok(Storage::F16),
            other => Err(format!("unknown storage `{other}` (expected f32 or f16)")),
        }
    }
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            layers: 4,
            hidden: 128,
            heads: 4,
            context: 64,
            steps: 600,
            batch: 32,
            lr: 2e-3,
            warmup: 40,
            min_lr_frac: 0.1,
            min_sentence_tokens: 4,
            max_sentence_tokens: 40,
            eval_windows: 256,
            seed: 1,
            storage: Storage::F32,
        }
    }
}

impl PretrainConfig {
    /// Reject zero sizes and inconsistent shapes, naming the option.
    pub fn validate(&self) -> Result<()> {
        for (k, v) in [
            ("layers", self.layers),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("context", self.context),
            ("steps", self.steps),
            ("batch", self.batch),
            ("min-sentence-tokens", self.min_sentence_tokens),
            ("max-sentence-tokens", self.max_sentence_tokens),
            ("eval-windows", self.eval_windows),
        ] {
            check::positive_usize(k, v)?;
        }
        check::positive_f64("lr", self.lr)?;
        check::in_range("min-lr-frac", self.min_lr_frac, 0.0, 1.0)?;
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(Error::config(
                "heads",
                format!("{} heads do not divide hidden {}", self.heads, self.hidden),
            ));
        }
        if self.min_sentence_tokens > self.max_sentence_tokens {
            return Err(Error::config(
                "min-sentence-tokens",
                "must not exceed max-sentence-tokens",
            ));
        }
        Ok(())
    }

    /// The GPT-2 config of this shape for a vocabulary of `vocab` tokens with EOS `eos`.
    pub fn model_config(&self, vocab: usize, eos: u32) -> Gpt2ModelConfig {
        Gpt2ModelConfig {
            vocab_size: vocab,
            n_positions: self.context,
            n_embd: self.hidden,
            n_layer: self.layers,
            n_head: self.heads,
            n_inner: None,
            eos_token_id: Some(eos),
            ..Gpt2ModelConfig::gpt2_124m()
        }
    }

    /// Learning rate at step `s` (0-based).
    pub fn lr_at(&self, s: usize) -> f64 {
        if s < self.warmup {
            return self.lr * (s + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup.min(self.steps)).max(1) as f64;
        let p = ((s - self.warmup) as f64 / span).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
        self.lr * (self.min_lr_frac + (1.0 - self.min_lr_frac) * cos)
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainReport {
    /// Parameters (tied embedding counted once).
    pub params: usize,
    /// Training units (sentences) available.
    pub train_sentences: usize,
    /// Held-out units.
    pub heldout_sentences: usize,
    /// Tokens seen in training (targets).
    pub train_tokens_seen: usize,
    /// Mean training loss over the first 10 steps.
    pub first_loss: f64,
    /// Mean training loss over the last 10 steps.
    pub last_loss: f64,
    /// Held-out mean negative log-likelihood per token (nats).
    pub heldout_nll: f64,
    /// exp(heldout_nll).
    pub heldout_perplexity: f64,
    /// Held-out target tokens scored.
    pub heldout_tokens: usize,
    /// Training wall time in seconds.
    pub wall_seconds: f64,
}

/// Tokenised sentence units `ids… EOS` of `reviews` (review order kept), filtered by length.
pub fn sentence_units(
    reviews: &[&Review],
    tok: &tokenizers::Tokenizer,
    eos: u32,
    cfg: &PretrainConfig,
) -> Result<Vec<Vec<u32>>> {
    let sentences: Vec<String> = reviews
        .iter()
        .flat_map(|r| split_sentences(&r.text))
        .collect();
    let mut out = Vec::with_capacity(sentences.len());
    for chunk in sentences.chunks(4096) {
        let enc = tok
            .encode_batch(chunk.to_vec(), false)
            .map_err(|e| Error::Internal(format!("tokenizing sentences: {e}")))?;
        for e in enc {
            let ids = e.get_ids();
            if (cfg.min_sentence_tokens..=cfg.max_sentence_tokens).contains(&ids.len()) {
                let mut u = ids.to_vec();
                u.push(eos);
                out.push(u);
            }
        }
    }
    Ok(out)
}

/// One window of `len` tokens: units from `start` onwards (wrapping), the last one cut.
fn window(units: &[Vec<u32>], mut start: usize, len: usize) -> Vec<u32> {
    let mut w = Vec::with_capacity(len);
    while w.len() < len {
        let u = &units[start % units.len()];
        let take = (len - w.len()).min(u.len());
        w.extend_from_slice(&u[..take]);
        start += 1;
    }
    w
}

/// Fresh GPT-2 parameters for `mc` by name (row-major data), initialised as GPT-2 from `seed`.
pub fn init_named(mc: &Gpt2ModelConfig, seed: u64) -> Result<HashMap<String, Vec<f32>>> {
    let mut rng = maxmin_core::rng::stream(seed, "imdb/pretrain/init");
    let resid_std = 0.02 / (2.0 * mc.n_layer as f64).sqrt();
    let mut out = HashMap::new();
    for (name, shape) in mc.tensor_shapes() {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; n]
        } else if name.contains("ln_") {
            vec![1.0; n]
        } else {
            let std = if name.ends_with("c_proj.weight") {
                resid_std
            } else {
                0.02
            };
            let d = Normal::new(0.0f32, std as f32)
                .map_err(|e| Error::Internal(format!("normal init: {e}")))?;
            (0..n).map(|_| d.sample(&mut rng)).collect()
        };
        out.insert(name, data);
    }
    Ok(out)
}

/// Fresh GPT-2 parameters for `mc` as candle `Var`s (see [`init_named`]).
pub fn init_params(mc: &Gpt2ModelConfig, seed: u64, device: &Device) -> Result<Params> {
    let named = init_named(mc, seed)?;
    params_of(mc, named, device)
}

/// Candle `Var`s from named row-major data, shaped as `mc` lists them.
pub(crate) fn params_of(
    mc: &Gpt2ModelConfig,
    mut named: HashMap<String, Vec<f32>>,
    device: &Device,
) -> Result<Params> {
    let mut params = Params::new();
    for (name, shape) in mc.tensor_shapes() {
        let data = named
            .remove(&name)
            .ok_or_else(|| Error::Internal(format!("no data for {name}")))?;
        let t = Tensor::from_vec(data, shape.as_slice(), device)?;
        params.insert(name, Var::from_tensor(&t)?);
    }
    Ok(params)
}

pub(crate) fn model_of(mc: &Gpt2ModelConfig, params: &Params, device: &Device) -> Result<Gpt2> {
    let map: HashMap<String, Tensor> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    Gpt2::from_tensors(mc.clone(), &map, device)
}

/// Mean next-token cross-entropy over `windows` (each `t + 1` tokens) and the graph for backprop.
pub(crate) fn batch_loss(model: &Gpt2, windows: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let b = windows.len();
    let t = windows[0].len() - 1;
    let mut ids = Vec::with_capacity(b * t);
    let mut targets = Vec::with_capacity(b * t);
    for w in windows {
        ids.extend_from_slice(&w[..t]);
        targets.extend_from_slice(&w[1..]);
    }
    let input = LmInput::new(ids, vec![1; b * t], b, t)?;
    let out = model.forward(&input, None, None)?;
    let logits = out.logits.reshape((b * t, model.vocab_size()))?;
    let targets = Tensor::from_vec(targets, b * t, device)?;
    Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
}

/// Held-out mean NLL per token over `n` windows packed consecutively from `units`.
pub fn heldout_nll(
    model: &Gpt2,
    units: &[Vec<u32>],
    context: usize,
    n: usize,
    device: &Device,
) -> Result<(f64, usize)> {
    // Consecutive, non-overlapping windows starting at unit boundaries.
    let mut windows = Vec::with_capacity(n);
    let mut i = 0;
    while windows.len() < n && i < units.len() {
        let mut w: Vec<u32> = Vec::with_capacity(context + 1);
        while w.len() < context + 1 && i < units.len() {
            let take = (context + 1 - w.len()).min(units[i].len());
            w.extend_from_slice(&units[i][..take]);
            i += 1;
        }
        if w.len() == context + 1 {
            windows.push(w);
        }
    }
    if windows.is_empty() {
        return Err(Error::input(
            "too few held-out sentences for one evaluation window",
            None,
        ));
    }
    let mut total = 0.0;
    for chunk in windows.chunks(32) {
        let l = batch_loss(model, chunk, device)?.to_scalar::<f32>()? as f64;
        total += l * chunk.len() as f64;
    }
    Ok((total / windows.len() as f64, windows.len() * context))
}

/// Serialise `params` as `model.safetensors` bytes (HF GPT-2 names without prefix) in `storage`
/// precision.
pub fn safetensors_bytes(params: &Params, storage: Storage) -> Result<Vec<u8>> {
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, var) in params {
        let v = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = match storage {
            Storage::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Storage::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
        };
        data.push((name.clone(), var.dims().to_vec(), bytes));
    }
    let dtype = match storage {
        Storage::F32 => safetensors::Dtype::F32,
        Storage::F16 => safetensors::Dtype::F16,
    };
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(dtype, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Internal(format!("tensor view {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| Error::Internal(format!("serialising safetensors: {e}")))
}

/// `x` as `storage` would round it.
fn stored_value(x: f32, storage: Storage) -> f32 {
    match storage {
        Storage::F32 => x,
        Storage::F16 => half::f16::from_f32(x).to_f32(),
    }
}

/// `config.json` of the trained model, as HF transformers writes a GPT-2's.
pub fn config_json(mc: &Gpt2ModelConfig, storage: Storage) -> serde_json::Value {
    let eos = mc.eos_token_id.unwrap_or(0);
    serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": mc.vocab_size,
        "n_positions": mc.n_positions,
        "n_ctx": mc.n_positions,
        "n_embd": mc.n_embd,
        "n_layer": mc.n_layer,
        "n_head": mc.n_head,
        "n_inner": null,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": mc.layer_norm_epsilon,
        "initializer_range": 0.02,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "tie_word_embeddings": true,
        "torch_dtype": match storage {
            Storage::F32 => "float32",
            Storage::F16 => "float16",
        }
    })
}

/// The tokenised sentence units of the training and held-out reviews, and the vocabulary facts
/// the model config needs.
struct Corpus {
    train: Vec<Vec<u32>>,
    held: Vec<Vec<u32>>,
    vocab: usize,
    eos: u32,
}

/// Read the tokenizer at `tok_path` and cut both review sets into sentence units; no training
/// unit within the length limits is an input error.
fn tokenise(
    train: &[&Review],
    heldout: &[&Review],
    tok_path: &Path,
    cfg: &PretrainConfig,
) -> Result<Corpus> {
    let tok = tokenizers::Tokenizer::from_file(tok_path)
        .map_err(|e| Error::data(tok_path, None, format!("cannot read tokenizer: {e}")))?;
    let eos = tok
        .token_to_id(EOS_TOKEN)
        .ok_or_else(|| Error::data(tok_path, None, format!("the vocabulary lacks {EOS_TOKEN}")))?;
    let vocab = tok.get_vocab_size(true);
    let t0 = Instant::now();
    let units = sentence_units(train, &tok, eos, cfg)?;
    let held = sentence_units(heldout, &tok, eos, cfg)?;
    if units.is_empty() {
        return Err(Error::input(
            "no training sentences within the token-length limits",
            None,
        ));
    }
    tracing::info!(
        train_sentences = units.len(),
        heldout_sentences = held.len(),
        secs = t0.elapsed().as_secs_f64(),
        "tokenised sentence units"
    );
    Ok(Corpus {
        train: units,
        held,
        vocab,
        eos,
    })
}

/// What the training loop hands to the report.
struct TrainLosses {
    /// Losses of the first 10 steps.
    first: Vec<f64>,
    /// Losses of the last 10 steps.
    last: std::collections::VecDeque<f64>,
    /// Wall time of the loop in seconds.
    wall: f64,
}

/// `cfg.steps` Adam steps on batches of random windows of `units`, with progress and the
/// interrupt check; a non-finite loss stops training.
fn train_steps(
    trainer: &mut Gpt2Trainer,
    units: &[Vec<u32>],
    cfg: &PretrainConfig,
    progress: &mut dyn maxmin_core::run::Progress,
) -> Result<TrainLosses> {
    let mut rng = maxmin_core::rng::stream(cfg.seed, "imdb/pretrain/windows");
    let (mut first, mut last) = (Vec::new(), std::collections::VecDeque::new());
    let train_start = Instant::now();
    progress.start("pretrain", cfg.steps as u64, 0);
    for step in 0..cfg.steps {
        if maxmin_core::run::interrupted() {
            return Err(Error::Internal(
                "interrupted before the end of pretraining".into(),
            ));
        }
        let windows: Vec<Vec<u32>> = (0..cfg.batch)
            .map(|_| window(units, rng.random_range(0..units.len()), cfg.context + 1))
            .collect();
        let l = trainer.loss_and_grads(&windows)?;
        if !l.is_finite() {
            return Err(Error::Internal(format!("loss is {l} at step {step}")));
        }
        let gnorm = trainer
            .adam_step(cfg.lr_at(step), 1.0)
            .map_err(|e| Error::Internal(format!("pretraining step {step}: {e}")))?;
        if step < 10 {
            first.push(l);
        }
        last.push_back(l);
        if last.len() > 10 {
            last.pop_front();
        }
        let secs = train_start.elapsed().as_secs_f64();
        let tok_s = ((step + 1) * cfg.batch * cfg.context) as f64 / secs;
        progress.update(
            step as u64 + 1,
            &format!("loss {l:.3} grad-norm {gnorm:.2} {tok_s:.0} tok/s"),
        );
    }
    progress.finish();
    let wall = train_start.elapsed().as_secs_f64();
    Ok(TrainLosses { first, last, wall })
}

/// The trainer's weights as `storage` rounds them, as parameters on `device`.
fn stored_params(
    trainer: &Gpt2Trainer,
    mc: &Gpt2ModelConfig,
    storage: Storage,
    device: &Device,
) -> Result<Params> {
    let stored: HashMap<String, Vec<f32>> = trainer
        .named_params()
        .into_iter()
        .map(|(n, _, v)| (n, v.into_iter().map(|x| stored_value(x, storage)).collect()))
        .collect();
    params_of(mc, stored, device)
}

/// Write `config.json`, `model.safetensors` and `metrics.json` into `out`.
fn write_model(
    out: &Path,
    mc: &Gpt2ModelConfig,
    cfg: &PretrainConfig,
    params: &Params,
    report: &PretrainReport,
) -> Result<()> {
    let cfg_json = serde_json::to_string_pretty(&config_json(mc, cfg.storage))
        .map_err(|e| Error::Internal(e.to_string()))?;
    maxmin_core::run::write_atomic(&out.join("config.json"), cfg_json.as_bytes())?;
    maxmin_core::run::write_atomic(
        &out.join("model.safetensors"),
        &safetensors_bytes(params, cfg.storage)?,
    )?;
    maxmin_core::run::write_json_atomic(
        &out.join("metrics.json"),
        &serde_json::json!({ "config": cfg, "report": report }),
    )
}

/// Pretrain on `train` reviews, evaluate on `heldout`, write `config.json`, `model.safetensors`
/// and `metrics.json` into `out` (which must already hold the `tokenizer.json` at `tok_path`'s
/// content; the tokenizer is read from `tok_path`).
pub fn pretrain(
    train: &[&Review],
    heldout: &[&Review],
    tok_path: &Path,
    cfg: &PretrainConfig,
    out: &Path,
    progress: &mut dyn maxmin_core::run::Progress,
) -> Result<PretrainReport> {
    cfg.validate()?;
    let device = Device::Cpu;
    let corpus = tokenise(train, heldout, tok_path, cfg)?;
    let (units, held) = (&corpus.train, &corpus.held);
    let mc = cfg.model_config(corpus.vocab, corpus.eos);
    let mut trainer = Gpt2Trainer::new(mc.clone(), &init_named(&mc, cfg.seed)?)?;
    let n_params = trainer.num_params();
    tracing::info!(
        params = n_params,
        vocab = corpus.vocab,
        threads = rayon::current_num_threads(),
        "initialised GPT-2"
    );
    let mut losses = train_steps(&mut trainer, units, cfg, progress)?;
    let params = stored_params(&trainer, &mc, cfg.storage, &device)?;
    let model = model_of(&mc, &params, &device)?;
    let (nll, ntok) = heldout_nll(&model, held, cfg.context, cfg.eval_windows, &device)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let report = PretrainReport {
        params: n_params,
        train_sentences: units.len(),
        heldout_sentences: held.len(),
        train_tokens_seen: cfg.steps * cfg.batch * cfg.context,
        first_loss: mean(&losses.first),
        last_loss: mean(losses.last.make_contiguous()),
        heldout_nll: nll,
        heldout_perplexity: nll.exp(),
        heldout_tokens: ntok,
        wall_seconds: losses.wall,
    };
    tracing::info!(
        heldout_perplexity = report.heldout_perplexity,
        wall_s = losses.wall,
        "pretraining done"
    );
    write_model(out, &mc, cfg, &params, &report)?;
    Ok(report)
}
