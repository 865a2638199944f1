//! `maxmin bench …`: benchmarks (filled in by the kernels issue).

/// Benchmark subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {}

/// Run a `bench` subcommand.
pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {}
}
