//! Seconds per token-level PPO step on CPU at the shapes of `configs/gpt2-imdb__maxmin.toml`:
//! the embedded GPT-2 (`models/gpt2-imdb-tiny`), LoRA r = 8 on `c_attn`, `c_proj`, `c_fc`, 32
//! IMDB prompts per step (`data/imdb/prompts.jsonl`), up to 32 sampled new tokens stopping at EOS,
//! mini-batches of 8, 4 PPO epochs. Scores are seeded pseudo-random numbers (the reward model is
//! not what is timed). docs/lm-rlhf.md ("Speed") records results.
//!
//! `cargo run --release -p maxmin-lm --example ppo_bench -- [MODEL_DIR] [PROMPTS] [STEPS]`
//! prints one JSON line per step (`gen_s`, `score_s`, `train_s`, response length, epochs run)
//! and a last line with the medians over the steps after the first (warm-up).

use maxmin_lm::candle::{DType, Device};
use maxmin_lm::generate::{GenerateOptions, Sampling};
use maxmin_lm::lora::LoraConfig;
use maxmin_lm::policy::LmPolicy;
use maxmin_lm::ppo::{LmPpoConfig, LmPpoTrainer};
use maxmin_lm::tokenizer::Tokenizer;
use rand::Rng as _;
use std::path::PathBuf;
use std::sync::Arc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `maxmin` binary does.
    maxmin_lm::alloc::keep_freed_memory();
    let a: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(a.first().map_or("models/gpt2-imdb-tiny", |s| s.as_str()));
    let prompts_file = PathBuf::from(a.get(1).map_or("data/imdb/prompts.jsonl", |s| s.as_str()));
    let steps: usize = a.get(2).map_or(Ok(6), |s| s.parse())?;
    let base = Arc::new(maxmin_lm::Gpt2::load(&dir, DType::F32, &Device::Cpu)?);
    let tok = Tokenizer::from_dir(&dir)?;
    let text = std::fs::read_to_string(&prompts_file)
        .map_err(|e| format!("{}: {e}", prompts_file.display()))?;
    let mut pool = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let p = v["prompt"]
            .as_str()
            .ok_or("a prompt line has no `prompt`")?;
        let ids = tok.encode(p)?;
        if !ids.is_empty() {
            pool.push(ids);
        }
    }
    let lora = LoraConfig {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        target_modules: vec!["c_attn".into(), "c_proj".into(), "c_fc".into()],
    };
    let cfg = LmPpoConfig {
        batch_size: 32,
        mini_batch_size: 8,
        ppo_epochs: 4,
        learning_rate: 5e-4,
        ..Default::default()
    };
    let policy = LmPolicy::new(base, Some(&lora), 1)?;
    let mut trainer = LmPpoTrainer::new(policy, cfg, 1)?;
    let gen = GenerateOptions {
        max_new_tokens: 32,
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        },
        stop_at_eos: true,
        use_cache: true,
        pad_id: 0,
    };
    let mut rng = maxmin_core::rng::stream(1, "ppo-bench");
    let (mut g, mut s, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..steps {
        let prompts: Vec<Vec<u32>> = (0..32)
            .map(|_| pool[rng.random_range(0..pool.len())].clone())
            .collect();
        let rollout = trainer.rollout(&prompts, &gen, &mut rng)?;
        let scores: Vec<f32> = (0..32).map(|_| rng.random_range(-1.0..1.0)).collect();
        let st = trainer.step(&rollout, &scores)?;
        println!(
            "{{\"step\":{k},\"gen_s\":{:.4},\"score_s\":{:.4},\"train_s\":{:.4},\"response_len\":{:.2},\"epochs_run\":{},\"kl\":{:.5},\"loss\":{:.6}}}",
            st.gen_s, st.score_s, st.train_s, st.response_len, st.epochs_run, st.kl, st.total_loss
        );
        if k > 0 {
            g.push(st.gen_s);
            s.push(st.score_s);
            t.push(st.train_s);
        }
    }
    let (gm, sm, tm) = (median(g), median(s), median(t));
    println!(
        "{{\"median_gen_s\":{gm:.4},\"median_score_s\":{sm:.4},\"median_train_s\":{tm:.4},\"median_total_s\":{:.4}}}",
        gm + sm + tm
    );
    Ok(())
}
