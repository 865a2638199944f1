//! `maxmin`: the command-line front end. Parses arguments, sets up logging, dispatches to the
//! library, and turns errors into exit codes (0 success, 2 bad input, 1 internal error).

// maxmin_core::Error is the project-wide error type; its size is core's decision.
#![allow(clippy::result_large_err)]

mod bandit;
mod bench;
mod cli;
mod lm;
mod logfile;
mod plugins;
mod progress;

use clap::Parser;

fn main() {
    // Training allocates and frees large tensors every step; keep that memory for reuse.
    maxmin_lm::alloc::keep_freed_memory();
    let cli = cli::Cli::parse();
    if matches!(cli.cmd, cli::Cmd::Run { .. }) {
        one_thread_per_policy();
    }
    cli::init_logging(cli.verbose);
    let code = match cli::dispatch(cli) {
        Ok(()) => 0,
        Err(e) => {
            let code = cli::exit_code(&e);
            eprintln!("error: {e:#}");
            code
        }
    };
    std::process::exit(code);
}

/// `maxmin run` trains its policies in parallel, one per core by default (`[compare] jobs`), and
/// is fastest when each policy's matrix products stay on one thread: on a 2-core VM six 10-step
/// policies of the LM main job took 61 s this way and 112 s with candle's default of two
/// threads per product (its small products gain little from a second thread and the two
/// policies' products then compete for both cores), with bit-identical results
/// (docs/lm-rlhf.md, "Speed"). candle reads its thread count from `RAYON_NUM_THREADS` at every
/// product, so this sets that variable to 1 — while the program is still single-threaded, so no
/// other thread can be reading the environment — and builds rayon's global pool (our own
/// parallel kernels, EM, the per-policy pools of `run_jobs`) with one thread per core
/// explicitly. A `RAYON_NUM_THREADS` the user set is left alone and then governs both.
fn one_thread_per_policy() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    std::env::set_var("RAYON_NUM_THREADS", "1");
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .build_global()
    {
        eprintln!("warning: rayon's thread pool was already built ({e}); it keeps its size");
    }
}
