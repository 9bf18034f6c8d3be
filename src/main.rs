//! The `portcullis` binary: command line, wiring and exit codes. Library crates hold the logic.

mod cli_cert;
mod cli_rules;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Portcullis: a self-hostable mTLS edge.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, evaluate and list the fields of rule expressions (offline).
    Rules(cli_rules::RulesArgs),
    /// Client certificates: inspect what the edge would see (offline).
    Cert(cli_cert::CertArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Rules(args) => cli_rules::run(args),
        Command::Cert(args) => cli_cert::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            // 2 means "could not do what was asked" (bad input, unreadable file), as in grep and curl.
            ExitCode::from(2)
        }
    }
}
