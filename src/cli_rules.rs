//! `portcullis rules …` (placeholder until the rules engine lands).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RulesArgs {}

pub fn run(_args: RulesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
