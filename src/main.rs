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
