//! Argument definitions and dispatch for the `maxmin` binary.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// MaxMin-RLHF: reinforcement learning with diverse human preferences.
#[derive(Debug, Parser)]
#[command(name = "maxmin", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the experiment a config file declares; prints the run directory as the last line.
    Run {
        /// Experiment file (TOML).
        config: PathBuf,
        /// Override a config value by key path, e.g. `--set ppo.learning-rate=1e-3`.
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        sets: Vec<String>,
        /// Root seed (overrides `seed` in the file).
        #[arg(long)]
        seed: Option<u64>,
        /// Run directory (default `runs/<name>__<timestamp>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this directory from its last checkpoint.
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<PathBuf>,
    },
    /// Parse, resolve and build everything a config declares without running it.
    Check {
        /// Experiment file (TOML).
        config: PathBuf,
        /// Override a config value by key path.
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        sets: Vec<String>,
    },
    /// List every registered plugin type per plugin trait.
    List,
    /// Run Gymnasium-style checks on a registered environment type.
    CheckEnv {
        /// Environment type, as in `[env] type = "…"` (see `maxmin list`).
        #[arg(value_name = "TYPE")]
        env_type: String,
        /// Seed for the checks.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Language-model utilities.
    #[command(subcommand)]
    Lm(crate::lm::LmCmd),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(crate::bench::BenchCmd),
}

/// Set up tracing: `RUST_LOG` if set, else `info` (or more with `-v`).
pub fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Exit code for an error: the library's classification where there is one, else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<maxmin_core::Error>())
        .map(|e| e.exit_code())
        .unwrap_or(1)
}

/// Run a parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Lm(cmd) => crate::lm::run(cmd),
        Cmd::Bench(cmd) => crate::bench::run(cmd),
        _ => anyhow::bail!("not implemented yet"),
    }
}
