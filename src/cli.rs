//! Argument definitions and dispatch for the `maxmin` binary.

use clap::{Parser, Subcommand};
use maxmin_core::env::EnvConfig;
use maxmin_core::pipeline::RunOptions;
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
        /// Experiment file (TOML); optional with --resume, which uses the run's own config.
        #[arg(required_unless_present = "resume")]
        config: Option<PathBuf>,
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
    /// Regenerate a run's report.md (and plots) from the files in its run directory.
    Report {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// The impossibility result in numbers: sweep diversity and minority share on a closed-form
    /// KL-regularised bandit, single-reward RLHF vs MaxMin; writes report.md and a plot.
    Bandit {
        /// Output folder (default `runs/bandit__<timestamp>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a `[bandit]` value, e.g. `--set beta=0.5`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
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
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(crate::logfile::LogFile)
                .with_ansi(false)
                .with_target(false),
        )
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
        Cmd::Run {
            config,
            sets,
            seed,
            out,
            resume,
        } => run(config, sets, seed, out, resume),
        Cmd::Check { config, sets } => {
            let kind = maxmin_core::pipeline::kind_of_file(&config)?;
            (kind.check)(&config, &sets)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Cmd::Report { run_dir } => {
            let kind = maxmin_core::pipeline::kind_of_file(&run_dir.join("config.resolved.toml"))?;
            (kind.report)(&run_dir)?;
            println!("{}", run_dir.join("report.md").display());
            Ok(())
        }
        Cmd::Bandit { out, sets } => Ok(crate::bandit::run(out, &sets)?),
        Cmd::List => {
            list();
            Ok(())
        }
        Cmd::CheckEnv { env_type, seed } => check_env(&env_type, seed),
    }
}

fn run(
    config: Option<PathBuf>,
    mut sets: Vec<String>,
    seed: Option<u64>,
    out: Option<PathBuf>,
    resume: Option<PathBuf>,
) -> anyhow::Result<()> {
    let path = match (&resume, config) {
        (Some(dir), config) => {
            if !sets.is_empty() || seed.is_some() || out.is_some() {
                return Err(maxmin_core::Error::input(
                    "--resume continues a run with its own config; --set, --seed and --out cannot change it",
                    Some("start a new run to change the config".into()),
                )
                .into());
            }
            if config.is_some() {
                tracing::warn!(
                    "--resume uses {}/config.resolved.toml; the CONFIG argument is ignored",
                    dir.display()
                );
            }
            maxmin_core::run::RunDir::open(dir)?;
            dir.join("config.resolved.toml")
        }
        (None, Some(c)) => c,
        (None, None) => unreachable!("clap requires CONFIG without --resume"),
    };
    if let Some(s) = seed {
        sets.push(format!("seed={s}"));
    }
    let kind = maxmin_core::pipeline::kind_of_file(&path)?;
    install_interrupt_handler()?;
    let opts = RunOptions { out, resume };
    let mut progress = crate::progress::CliProgress::new();
    let mut on_dir = |dir: &std::path::Path| {
        if let Err(e) = crate::logfile::attach(&dir.join("log.txt")) {
            tracing::warn!("cannot write {}/log.txt: {e}", dir.display());
        }
    };
    match (kind.run)(&path, &sets, &opts, &mut progress, &mut on_dir) {
        Ok(d) => {
            println!("{}", d.display());
            Ok(())
        }
        Err(maxmin_core::Error::Interrupted(ck)) => interrupted_exit(&ck),
        Err(e) => Err(e.into()),
    }
}

fn install_interrupt_handler() -> anyhow::Result<()> {
    // The first SIGINT asks the trainer to checkpoint and stop at the next update boundary.
    ctrlc::set_handler(|| {
        if maxmin_core::run::INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "interrupt: saving a checkpoint at the next update boundary (Ctrl-C again to abort)"
        );
    })?;
    Ok(())
}

fn interrupted_exit(ck: &std::path::Path) -> ! {
    eprintln!("interrupted; checkpoint in {}", ck.display());
    let run_dir = ck
        .ancestors()
        .find(|p| p.join("config.resolved.toml").exists())
        .unwrap_or(ck);
    eprintln!("continue with: maxmin run --resume {}", run_dir.display());
    println!("{}", run_dir.display());
    std::process::exit(130);
}

/// `maxmin run` on a language-model experiment file.
fn list() {
    println!("experiment kinds (`kind = \"…\"`, default control):");
    for k in maxmin_core::pipeline::kinds() {
        println!("  {:<22} {}", k.name, k.doc);
    }
    let all = maxmin_core::registry::all();
    let mut kind = "";
    for p in &all {
        if p.kind != kind {
            kind = p.kind;
            println!("{kind}:");
        }
        let envs = if p.envs.is_empty() {
            String::new()
        } else {
            format!(" (for {})", p.envs.join(", "))
        };
        println!("  {:<22} {}{envs}", p.name, p.doc);
    }
}

fn check_env(env_type: &str, seed: u64) -> anyhow::Result<()> {
    let text = format!("type = {}", toml_quote(env_type));
    let cfg: Box<dyn EnvConfig> =
        maxmin_core::config::from_str_at(&text, std::path::Path::new("<check-env TYPE>"))?;
    cfg.validate()?;
    let report = maxmin_envs::check_env(cfg.as_ref(), seed)?;
    print!("{report}");
    if !report.passed() {
        return Err(maxmin_core::Error::input(
            format!(
                "environment `{env_type}` failed {} check(s)",
                report.failures().count()
            ),
            None,
        )
        .into());
    }
    Ok(())
}

fn toml_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
