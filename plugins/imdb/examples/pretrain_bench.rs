//! Times the pretraining loop's step (forward, backward, Adam) on random tokens, so its speed can
//! be measured apart from data loading and evaluation.
//!
//! `cargo run --release -p maxmin-imdb --example pretrain_bench -- [layers hidden heads batch context vocab steps]`
//! (defaults: 6 256 8 64 64 4096 5). Prints tokens/s and the achieved GFLOP/s, counting
//! 6 · (parameters without position embeddings) + 12 · layers · context · hidden FLOPs per token.

use maxmin_imdb::pretrain::{init_named, PretrainConfig};
use maxmin_imdb::trainer::Gpt2Trainer;
use rand::Rng as _;
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("numeric arguments"))
        .collect();
    let arg = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    let (layers, hidden, heads) = (arg(0, 6), arg(1, 256), arg(2, 8));
    let (batch, context, vocab, steps) = (arg(3, 64), arg(4, 64), arg(5, 4096), arg(6, 5));
    let cfg = PretrainConfig {
        layers,
        hidden,
        heads,
        context,
        ..Default::default()
    };
    let mc = cfg.model_config(vocab, 0);
    let mut tr = Gpt2Trainer::new(mc.clone(), &init_named(&mc, 1).expect("init")).expect("trainer");
    let mut rng = maxmin_core::rng::stream(1, "bench");
    let windows: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..=context)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect()
        })
        .collect();
    tr.loss_and_grads(&windows).expect("warm-up step");
    let t0 = Instant::now();
    for _ in 0..steps {
        tr.loss_and_grads(&windows).expect("step");
        tr.adam_step(1e-4, 1.0).expect("adam");
    }
    let secs = t0.elapsed().as_secs_f64() / steps as f64;
    let tokens = (batch * context) as f64;
    let dense = (tr.num_params() - context * hidden) as f64;
    let flops = tokens * (6.0 * dense + 12.0 * (layers * context * hidden) as f64);
    println!(
        "{} params, {layers}x{hidden} ({heads} heads), batch {batch}x{context}, vocab {vocab}: \
         {:.3} s/step, {:.0} tokens/s, {:.1} GFLOP/s, {} threads",
        tr.num_params(),
        secs,
        tokens / secs,
        flops / secs / 1e9,
        rayon::current_num_threads()
    );
    // The same as one JSON line, for benches/side_by_side.py (`lmtrain` row).
    println!(
        "{{\"params\":{},\"step_s\":{:.4},\"tokens_per_s\":{:.1},\"gflops\":{:.2},\"threads\":{}}}",
        tr.num_params(),
        secs,
        tokens / secs,
        flops / secs / 1e9,
        rayon::current_num_threads()
    );
}
