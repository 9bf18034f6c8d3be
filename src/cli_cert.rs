//! `portcullis cert …` (placeholder until the PKI crate lands).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CertArgs {}

pub fn run(_args: CertArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
