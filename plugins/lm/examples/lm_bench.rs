//! Forward and generation throughput of a GPT-2 checkpoint on CPU, for
//! `benches/lm_vs_transformers.sh` (which runs HF transformers on the same shapes and threads).
//!
//! `cargo run --release -p maxmin-lm --example lm_bench -- DIR BATCH SEQ ITERS GEN_PROMPT GEN_TOKENS`
//! prints one JSON line: forward tokens/s (full logits at every position, no cache) and greedy
//! generation tokens/s with the KV cache.

use maxmin_lm::candle::{DType, Device};
use maxmin_lm::generate::{generate, GenerateOptions, Sampling};
use maxmin_lm::lm::{CausalLm, LmInput};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 6 {
        return Err("usage: lm_bench DIR BATCH SEQ ITERS GEN_PROMPT GEN_TOKENS".into());
    }
    let dir = std::path::PathBuf::from(&a[0]);
    let (batch, seq, iters, gen_prompt, gen_tokens): (usize, usize, usize, usize, usize) = (
        a[1].parse()?,
        a[2].parse()?,
        a[3].parse()?,
        a[4].parse()?,
        a[5].parse()?,
    );
    // As the `maxmin` binary does: freed buffers are reused instead of returned to the kernel.
    maxmin_lm::alloc::keep_freed_memory();
    let t0 = Instant::now();
    let m = maxmin_lm::Gpt2::load(&dir, DType::F32, &Device::Cpu)?;
    let load_s = t0.elapsed().as_secs_f64();
    let vocab = m.vocab_size() as u32;
    let seqs: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..seq)
                .map(|i| ((b * 7919 + i * 104_729) as u32) % vocab)
                .collect()
        })
        .collect();
    let input = LmInput::left_padded(&seqs, 0)?;
    m.forward(&input, None, None)?; // warm-up
    let t = Instant::now();
    for _ in 0..iters {
        let out = m.forward(&input, None, None)?;
        std::hint::black_box(out.logits);
    }
    let fwd_s = t.elapsed().as_secs_f64();
    let prompt: Vec<u32> = (0..gen_prompt)
        .map(|i| ((i * 104_729) as u32) % vocab)
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: gen_tokens,
        sampling: Sampling::Greedy,
        stop_at_eos: false,
        use_cache: true,
        pad_id: 0,
    };
    let mut rng = maxmin_core::rng::stream(0, "bench");
    generate(
        &m,
        None,
        std::slice::from_ref(&prompt),
        &GenerateOptions {
            max_new_tokens: 2,
            ..opts.clone()
        },
        &mut rng,
    )?;
    let t = Instant::now();
    let g = generate(&m, None, std::slice::from_ref(&prompt), &opts, &mut rng)?;
    let gen_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"impl\":\"maxmin\",\"load_s\":{load_s:.3},\"forward_tokens_per_s\":{:.1},\"generate_tokens_per_s\":{:.2},\"generated\":{}}}",
        (batch * seq * iters) as f64 / fwd_s,
        g.tokens[0].len() as f64 / gen_s,
        g.tokens[0].len()
    );
    Ok(())
}
