//! `maxmin lm …`: language-model utilities (filled in by the LM-plugins issue).

/// Language-model subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LmCmd {}

/// Run an `lm` subcommand.
pub fn run(cmd: LmCmd) -> anyhow::Result<()> {
    match cmd {}
}
