//! `maxmin lm …`: language-model utilities over `maxmin-lm` (GPT-2, Llama) — generate text from a
//! prompt, print the logits at every position (the check against HF transformers), and estimate
//! a model's load memory from its `config.json`.

use anyhow::Context as _;
use maxmin_core::Error;
use maxmin_imdb::card::SampleStats;
use maxmin_imdb::data::{read_reviews, Review, Split};
use maxmin_imdb::pretrain::{PretrainConfig, PretrainReport};
use maxmin_lm::checkpoint::parse_dtype;
use maxmin_lm::generate::{generate, GenerateOptions, Sampling};
use maxmin_lm::hub::resolve_model;
use maxmin_lm::lm::LmInput;
use maxmin_lm::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// Language-model subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LmCmd {
    /// Continue a prompt (greedy or seeded sampling) and print prompt + continuation.
    Generate(GenerateArgs),
    /// Print the logits at every position of a token-id sequence.
    Logits(LogitsArgs),
    /// Estimate load memory from `config.json` alone (the loader's per-tensor accounting).
    Memory(MemoryArgs),
    /// Train the IMDB sentiment scorer (logistic regression; stands in for the paper's DistilBERT
    /// IMDB classifier) and write `sentiment.json` + `metrics.json` into `--out`.
    TrainSentiment(TrainSentimentArgs),
    /// Score a text with a trained sentiment model: logit and P(positive).
    ScoreSentiment(ScoreSentimentArgs),
    /// Train a byte-level BPE tokenizer and pretrain a small GPT-2 on IMDB review sentences.
    Pretrain(PretrainArgs),
    /// Write experiment prompts: the first 2–8 tokens of held-out IMDB reviews, as JSONL.
    ImdbPrompts(ImdbPromptsArgs),
}

/// Arguments of `maxmin lm generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Model directory or Hugging Face hub id (looked up in the local HF cache).
    #[arg(long)]
    model: String,
    /// Prompt text.
    #[arg(long)]
    prompt: String,
    /// New tokens at most.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Seed of the sampling stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Softmax temperature (> 0).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sample only among the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only from the smallest set of tokens with this much probability.
    #[arg(long)]
    top_p: Option<f64>,
    /// Pick the most likely token instead of sampling (temperature / top-k / top-p unused).
    #[arg(long)]
    greedy: bool,
    /// Keep generating after the end-of-sequence token.
    #[arg(long)]
    no_stop_at_eos: bool,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// tokenizer.json to use (default: the model directory's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print `{"prompt_ids", "new_ids", "text"}` as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `maxmin lm logits`.
#[derive(Debug, clap::Args)]
pub struct LogitsArgs {
    /// Model directory or hub id.
    #[arg(long)]
    model: String,
    /// Comma-separated token ids, e.g. `1,2,3`.
    #[arg(long)]
    ids: String,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print `{"logits": [[…], …]}`, one row per input id.
    #[arg(long)]
    json: bool,
}

/// Arguments of `maxmin lm memory`.
#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// Model directory (only config.json is read) or hub id.
    #[arg(long)]
    model: String,
    /// Dtype the checkpoint stores.
    #[arg(long, default_value = "bf16")]
    stored: String,
    /// Compute dtype.
    #[arg(long, default_value = "bf16")]
    dtype: String,
}

/// Arguments of `maxmin lm train-sentiment`.
#[derive(Debug, clap::Args)]
pub struct TrainSentimentArgs {
    /// imdb.csv from `scripts/fetch-imdb.sh`.
    #[arg(long, default_value = "data/imdb/imdb.csv")]
    data: PathBuf,
    /// Output directory.
    #[arg(long, default_value = "models/sentiment-imdb")]
    out: PathBuf,
    /// Seed of the example order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Most frequent n-grams kept as features.
    #[arg(long, default_value_t = 30_000)]
    max_features: usize,
    /// Passes over the training split.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
}

/// Arguments of `maxmin lm score-sentiment`.
#[derive(Debug, clap::Args)]
pub struct ScoreSentimentArgs {
    /// Model directory or sentiment.json.
    #[arg(long, default_value = "models/sentiment-imdb")]
    model: PathBuf,
    /// Text to score.
    #[arg(long)]
    text: String,
}

/// Arguments of `maxmin lm pretrain`.
#[derive(Debug, clap::Args)]
pub struct PretrainArgs {
    /// imdb.csv from `scripts/fetch-imdb.sh`.
    #[arg(long, default_value = "data/imdb/imdb.csv")]
    data: PathBuf,
    /// Output model directory.
    #[arg(long, default_value = "models/gpt2-imdb-tiny")]
    out: PathBuf,
    /// Existing tokenizer.json to use instead of training one (copied into --out).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// BPE vocabulary size (special token included) when training the tokenizer.
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    /// Root seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Optimiser steps.
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Windows per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Positions and training window length.
    #[arg(long, default_value_t = 64)]
    context: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 40)]
    warmup: usize,
    /// Longest training sentence in tokens.
    #[arg(long, default_value_t = 40)]
    max_sentence_tokens: usize,
    /// Final learning rate as a fraction of --lr (cosine decay).
    #[arg(long, default_value_t = 0.1)]
    min_lr_frac: f64,
    /// Precision of the written weights: f32, or f16 (half the size).
    #[arg(long, default_value = "f32")]
    storage: maxmin_imdb::pretrain::Storage,
}

/// Arguments of `maxmin lm imdb-prompts`.
#[derive(Debug, clap::Args)]
pub struct ImdbPromptsArgs {
    /// imdb.csv from `scripts/fetch-imdb.sh`.
    #[arg(long, default_value = "data/imdb/imdb.csv")]
    data: PathBuf,
    /// tokenizer.json that counts tokens.
    #[arg(long, default_value = "models/gpt2-imdb-tiny/tokenizer.json")]
    tokenizer: PathBuf,
    /// Output JSONL (`{"prompt": …}` per line).
    #[arg(long, default_value = "data/imdb/prompts.jsonl")]
    out: PathBuf,
    /// Number of prompts.
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Fewest prompt tokens.
    #[arg(long, default_value_t = 2)]
    min_tokens: usize,
    /// Most prompt tokens.
    #[arg(long, default_value_t = 8)]
    max_tokens: usize,
    /// Seed of the review choice and lengths.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[allow(clippy::result_large_err)] // maxmin_core::Error is the project-wide type
fn parse_ids(s: &str) -> Result<Vec<u32>, Error> {
    let ids: Result<Vec<u32>, _> = s
        .split(',')
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>().map_err(|_| {
                Error::input(
                    format!("--ids: `{p}` is not a token id"),
                    Some("pass e.g. --ids 1,2,3".into()),
                )
            })
        })
        .collect();
    let ids = ids?;
    if ids.is_empty() {
        return Err(Error::input(
            "--ids is empty",
            Some("pass e.g. --ids 1,2,3".into()),
        ));
    }
    Ok(ids)
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Run an `lm` subcommand.
pub fn run(cmd: LmCmd) -> anyhow::Result<()> {
    match cmd {
        LmCmd::Generate(a) => generate_cmd(a),
        LmCmd::Logits(a) => logits_cmd(a),
        LmCmd::Memory(a) => memory_cmd(a),
        LmCmd::TrainSentiment(a) => train_sentiment_cmd(a),
        LmCmd::ScoreSentiment(a) => score_sentiment_cmd(a),
        LmCmd::Pretrain(a) => pretrain_cmd(a),
        LmCmd::ImdbPrompts(a) => imdb_prompts_cmd(a),
    }
}

/// `maxmin lm generate`.
fn generate_cmd(a: GenerateArgs) -> anyhow::Result<()> {
    let device = maxmin_lm::candle::Device::Cpu;
    let dtype = parse_dtype("--dtype", &a.dtype)?;
    let dir = resolve_model(&a.model)?;
    let tok = match a.tokenizer {
        Some(p) => Tokenizer::from_file(&p)?,
        None => Tokenizer::from_dir(&dir)?,
    };
    let lm = maxmin_lm::load_causal_lm(&dir, dtype, &device)?;
    let ids = tok.encode(&a.prompt)?;
    if ids.is_empty() {
        return Err(Error::input("the prompt encodes to no tokens", None).into());
    }
    let sampling = if a.greedy {
        Sampling::Greedy
    } else {
        Sampling::Sample {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
        }
    };
    let stop_at_eos = !a.no_stop_at_eos && lm.eos_token_id().is_some();
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling,
        stop_at_eos,
        use_cache: true,
        pad_id: 0,
    };
    let mut rng = maxmin_core::rng::stream(a.seed, "lm/generate");
    let out = generate(
        lm.as_ref(),
        None,
        std::slice::from_ref(&ids),
        &opts,
        &mut rng,
    )
    .context("generation failed")?;
    let new = &out.tokens[0];
    let text = tok.decode(new)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "prompt_ids": ids, "new_ids": new, "text": text })
        );
    } else {
        println!("{}{text}", a.prompt);
    }
    Ok(())
}

/// `maxmin lm logits`.
fn logits_cmd(a: LogitsArgs) -> anyhow::Result<()> {
    let device = maxmin_lm::candle::Device::Cpu;
    let ids = parse_ids(&a.ids)?;
    let dtype = parse_dtype("--dtype", &a.dtype)?;
    let dir = resolve_model(&a.model)?;
    let lm = maxmin_lm::load_causal_lm(&dir, dtype, &device)?;
    let out = lm.forward(&LmInput::single(&ids)?, None, None)?;
    let rows: Vec<Vec<f32>> = out.logits.squeeze(0)?.to_vec2()?;
    if a.json {
        println!("{}", serde_json::json!({ "logits": rows }));
        return Ok(());
    }
    for (id, row) in ids.iter().zip(&rows) {
        let (arg, max) =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |a, (i, &v)| {
                    if v > a.1 {
                        (i, v)
                    } else {
                        a
                    }
                },
            );
        println!(
            "id {id:>7}  argmax {arg:>7}  max {max:>10.4}  logits[..4] {:?}",
            &row[..row.len().min(4)]
        );
    }
    Ok(())
}

/// `maxmin lm memory`.
fn memory_cmd(args: MemoryArgs) -> anyhow::Result<()> {
    let stored = parse_dtype("--stored", &args.stored)?;
    let compute = parse_dtype("--dtype", &args.dtype)?;
    let dir = resolve_model(&args.model)?;
    let a = maxmin_lm::memory_estimate(&dir, stored, compute)?;
    println!("tensors            {}", a.tensors);
    println!("parameters         {}", a.params);
    println!(
        "checkpoint bytes   {} ({:.2} GiB, {stored:?})",
        a.stored_bytes,
        gib(a.stored_bytes)
    );
    println!(
        "resident bytes     {} ({:.2} GiB, {compute:?})",
        a.compute_bytes,
        gib(a.compute_bytes)
    );
    println!(
        "largest tensor     {} ({:.2} GiB)",
        a.largest_tensor_bytes,
        gib(a.largest_tensor_bytes)
    );
    println!(
        "peak while loading {} ({:.2} GiB)",
        a.peak_bytes(),
        gib(a.peak_bytes())
    );
    Ok(())
}

/// The command line as typed, with the program called `maxmin` whatever its path.
fn invocation() -> String {
    std::iter::once("maxmin".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

// The IMDB asset subcommands (docs/algorithms.md experiment 1; library code in `maxmin-imdb`).

/// `maxmin lm train-sentiment`.
fn train_sentiment_cmd(a: TrainSentimentArgs) -> anyhow::Result<()> {
    let reviews = read_reviews(&a.data)?;
    let (train, held) = (Split::Train.of(&reviews), Split::HeldOut.of(&reviews));
    let cfg = maxmin_imdb::sentiment::SentimentConfig {
        seed: a.seed,
        max_features: a.max_features,
        epochs: a.epochs,
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let m = maxmin_imdb::sentiment::SentimentModel::train(&train, &cfg)?;
    let wall = t0.elapsed().as_secs_f64();
    let (acc_train, acc_held) = (m.accuracy(&train), m.accuracy(&held));
    m.save(&a.out.join(maxmin_imdb::sentiment::MODEL_FILE))?;
    let metrics = serde_json::json!({
        "command": invocation(),
        "config": cfg,
        "train_reviews": train.len(),
        "heldout_reviews": held.len(),
        "features": m.weights.len(),
        "train_accuracy": acc_train,
        "heldout_accuracy": acc_held,
        "wall_seconds": wall,
    });
    maxmin_core::run::write_json_atomic(&a.out.join("metrics.json"), &metrics)?;
    println!(
        "held-out accuracy {acc_held:.4} ({} reviews), train accuracy {acc_train:.4}, {} features, {wall:.1} s",
        held.len(),
        m.weights.len()
    );
    Ok(())
}

/// `maxmin lm score-sentiment`.
fn score_sentiment_cmd(a: ScoreSentimentArgs) -> anyhow::Result<()> {
    let m = maxmin_imdb::sentiment::SentimentModel::load(&a.model)?;
    println!(
        "logit {:.4}  P(positive) {:.4}",
        m.logit(&a.text),
        m.prob_positive(&a.text)
    );
    Ok(())
}

impl PretrainArgs {
    /// The pretraining config these options describe.
    fn config(&self) -> PretrainConfig {
        PretrainConfig {
            layers: self.layers,
            hidden: self.hidden,
            heads: self.heads,
            context: self.context,
            steps: self.steps,
            batch: self.batch,
            lr: self.lr,
            warmup: self.warmup,
            max_sentence_tokens: self.max_sentence_tokens,
            min_lr_frac: self.min_lr_frac,
            seed: self.seed,
            storage: self.storage,
            ..Default::default()
        }
    }
}

/// Prompts whose continuations go into the model card.
const SAMPLE_PROMPTS: [&str; 5] = [
    "This movie",
    "I watched this film",
    "The acting",
    "What a",
    "This is one of the",
];

/// `maxmin lm pretrain`: tokenizer, model, samples, `metrics.json` and the model card.
fn pretrain_cmd(a: PretrainArgs) -> anyhow::Result<()> {
    let cfg = a.config();
    cfg.validate()?;
    let reviews = read_reviews(&a.data)?;
    let (train, held) = (Split::Train.of(&reviews), Split::HeldOut.of(&reviews));
    let out = &a.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tok_path = out.join("tokenizer.json");
    let t0 = std::time::Instant::now();
    write_tokenizer(&a, &train, &tok_path, t0)?;
    let mut progress = crate::progress::CliProgress::new();
    let report =
        maxmin_imdb::pretrain::pretrain(&train, &held, &tok_path, &cfg, out, &mut progress)?;
    let stats = maxmin_imdb::card::sample_saved(out, &SAMPLE_PROMPTS, 4, 48, a.seed)?;
    let command = invocation();
    let metrics = serde_json::json!({
        "command": command,
        "config": cfg,
        "report": report,
        "total_seconds": t0.elapsed().as_secs_f64(),
        "samples": stats,
    });
    maxmin_core::run::write_json_atomic(&out.join("metrics.json"), &metrics)?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let readme = maxmin_imdb::card::readme(&name, &command, &cfg, &report, &stats);
    maxmin_core::run::write_atomic(&out.join("README.md"), readme.as_bytes())?;
    print_pretrain_summary(&report, &stats);
    Ok(())
}

/// Put `tokenizer.json` at `tok_path`: a copy of `--tokenizer`, else a BPE tokenizer trained
/// on the `train` reviews.
fn write_tokenizer(
    a: &PretrainArgs,
    train: &[&Review],
    tok_path: &Path,
    t0: std::time::Instant,
) -> anyhow::Result<()> {
    match &a.tokenizer {
        Some(src) => {
            let bytes = std::fs::read(src).map_err(|e| Error::io(src, e))?;
            maxmin_core::run::write_atomic(tok_path, &bytes)?;
        }
        None => {
            tracing::info!(
                vocab_size = a.vocab_size,
                reviews = train.len(),
                "training the BPE tokenizer"
            );
            maxmin_imdb::bpe::train_tokenizer(
                train.iter().map(|r| r.text.as_str()),
                a.vocab_size,
                tok_path,
            )?;
            tracing::info!(secs = t0.elapsed().as_secs_f64(), "tokenizer trained");
        }
    }
    Ok(())
}

/// The one-line result of `maxmin lm pretrain` and the first samples.
fn print_pretrain_summary(report: &PretrainReport, stats: &SampleStats) {
    println!(
        "held-out perplexity {:.2} ({} tokens), {} params, train loss {:.3} -> {:.3}, {:.0} s; samples: EOS rate {:.2}, mean {:.1} new tokens",
        report.heldout_perplexity,
        report.heldout_tokens,
        report.params,
        report.first_loss,
        report.last_loss,
        report.wall_seconds,
        stats.eos_rate,
        stats.mean_new_tokens
    );
    for s in stats.samples.iter().take(10) {
        println!("  {s}");
    }
}

/// `maxmin lm imdb-prompts`.
fn imdb_prompts_cmd(a: ImdbPromptsArgs) -> anyhow::Result<()> {
    let reviews = read_reviews(&a.data)?;
    let held = Split::HeldOut.of(&reviews);
    let tok = Tokenizer::from_file(&a.tokenizer)?;
    let prompts = maxmin_imdb::prompts::extract_prompts(
        &held,
        &tok,
        a.n,
        a.min_tokens,
        a.max_tokens,
        a.seed,
    )?;
    let mut s = String::new();
    for p in &prompts {
        s.push_str(&serde_json::json!({ "prompt": p }).to_string());
        s.push('\n');
    }
    maxmin_core::run::write_atomic(&a.out, s.as_bytes())?;
    println!("wrote {} prompts to {}", prompts.len(), a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_reject_garbage() {
        assert_eq!(parse_ids("1, 2,3").unwrap(), vec![1, 2, 3]);
        let e = parse_ids("1,x").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("`x`"));
        assert!(parse_ids(" , ").is_err());
    }
}
