//! `maxmin lm …`: language-model utilities over the GPT-2 / Llama plugins — generate text from a
//! prompt, print the logits at every position (the check against HF transformers), and estimate
//! a model's load memory from its `config.json`.

use anyhow::Context as _;
use maxmin_core::Error;
use maxmin_gpt2::checkpoint::parse_dtype;
use maxmin_gpt2::generate::{generate, GenerateOptions, Sampling};
use maxmin_gpt2::hub::resolve_model;
use maxmin_gpt2::lm::LmInput;
use maxmin_gpt2::tokenizer::Tokenizer;
use std::path::PathBuf;

/// Language-model subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LmCmd {
    /// Continue a prompt (greedy or seeded sampling) and print prompt + continuation.
    Generate {
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
    },
    /// Print the logits at every position of a token-id sequence.
    Logits {
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
    },
    /// Estimate load memory from `config.json` alone (the loader's per-tensor accounting).
    Memory {
        /// Model directory (only config.json is read) or hub id.
        #[arg(long)]
        model: String,
        /// Dtype the checkpoint stores.
        #[arg(long, default_value = "bf16")]
        stored: String,
        /// Compute dtype.
        #[arg(long, default_value = "bf16")]
        dtype: String,
    },
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
    let device = maxmin_gpt2::candle::Device::Cpu;
    match cmd {
        LmCmd::Generate {
            model,
            prompt,
            max_new_tokens,
            seed,
            temperature,
            top_k,
            top_p,
            greedy,
            no_stop_at_eos,
            dtype,
            tokenizer,
            json,
        } => {
            let dtype = parse_dtype("--dtype", &dtype)?;
            let dir = resolve_model(&model)?;
            let tok = match tokenizer {
                Some(p) => Tokenizer::from_file(&p)?,
                None => Tokenizer::from_dir(&dir)?,
            };
            let lm = maxmin_llama::load_causal_lm(&dir, dtype, &device)?;
            let ids = tok.encode(&prompt)?;
            if ids.is_empty() {
                return Err(Error::input("the prompt encodes to no tokens", None).into());
            }
            let sampling = if greedy {
                Sampling::Greedy
            } else {
                Sampling::Sample {
                    temperature,
                    top_k,
                    top_p,
                }
            };
            let stop_at_eos = !no_stop_at_eos && lm.eos_token_id().is_some();
            let opts = GenerateOptions {
                max_new_tokens,
                sampling,
                stop_at_eos,
                use_cache: true,
                pad_id: 0,
            };
            let mut rng = maxmin_core::rng::stream(seed, "lm/generate");
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
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "prompt_ids": ids, "new_ids": new, "text": text })
                );
            } else {
                println!("{prompt}{text}");
            }
            Ok(())
        }
        LmCmd::Logits {
            model,
            ids,
            dtype,
            json,
        } => {
            let ids = parse_ids(&ids)?;
            let dtype = parse_dtype("--dtype", &dtype)?;
            let dir = resolve_model(&model)?;
            let lm = maxmin_llama::load_causal_lm(&dir, dtype, &device)?;
            let out = lm.forward(&LmInput::single(&ids)?, None, None)?;
            let rows: Vec<Vec<f32>> = out.logits.squeeze(0)?.to_vec2()?;
            if json {
                println!("{}", serde_json::json!({ "logits": rows }));
            } else {
                for (id, row) in ids.iter().zip(&rows) {
                    let (arg, max) =
                        row.iter()
                            .enumerate()
                            .fold(
                                (0, f32::NEG_INFINITY),
                                |a, (i, &v)| if v > a.1 { (i, v) } else { a },
                            );
                    println!(
                        "id {id:>7}  argmax {arg:>7}  max {max:>10.4}  logits[..4] {:?}",
                        &row[..row.len().min(4)]
                    );
                }
            }
            Ok(())
        }
        LmCmd::Memory {
            model,
            stored,
            dtype,
        } => {
            let stored = parse_dtype("--stored", &stored)?;
            let compute = parse_dtype("--dtype", &dtype)?;
            let dir = resolve_model(&model)?;
            let a = maxmin_llama::memory_estimate(&dir, stored, compute)?;
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
    }
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
