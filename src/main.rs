//! The `portcullis` binary: command line, wiring and exit codes. Library crates hold the logic.

mod cli_admin;
mod cli_cert;
mod cli_rules;
mod client;
mod serve;

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
    /// Run Portcullis: the admin API (and, as it lands, the edge).
    Serve(serve::ServeArgs),
    /// Zones of a running server.
    Zone(cli_admin::ZoneArgs),
    /// Hostnames of a running server: origins and per-host settings.
    Host(cli_admin::HostArgs),
    /// Enable or disable mTLS on a hostname of a running server.
    Mtls(cli_admin::MtlsArgs),
    /// API tokens of a running server.
    Token(cli_admin::TokenArgs),
    /// Check, evaluate and list the fields of rule expressions (offline).
    Rules(cli_rules::RulesArgs),
    /// Client certificates: inspect what the edge would see (offline).
    Cert(cli_cert::CertArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Rules(args) => cli_rules::run(args),
        Command::Cert(args) => cli_cert::run(args),
        Command::Serve(args) => block_on(async { serve::run(args).await.map(|()| ExitCode::SUCCESS) }),
        Command::Zone(args) => block_on(cli_admin::zone(args)),
        Command::Host(args) => block_on(cli_admin::host(args)),
        Command::Mtls(args) => block_on(cli_admin::mtls(args)),
        Command::Token(args) => block_on(cli_admin::token(args)),
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

/// Runs `future` on a multi-threaded runtime (the server's and the API client's).
fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(future: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// Logs to stderr; `RUST_LOG` sets the filter (default: info for Portcullis, warnings for the rest).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,portcullis=info,portcullis_store=info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
