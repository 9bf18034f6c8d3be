//! The `portcullis` binary: command line, wiring and exit codes. Library crates hold the logic.

/// `println!` for command output, except that a closed stdout (`portcullis … | head`) ends the program quietly
/// instead of panicking.
macro_rules! outln {
    () => {
        $crate::write_stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*), true)
    };
}

/// `print!` with the same treatment of a closed stdout as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*), false)
    };
}

mod acme;
mod admin_tls;
mod bounded_http;
mod cli_acme;
mod cli_admin;
mod cli_apply;
mod cli_audit;
mod cli_backup;
mod cli_ca;
mod cli_cert;
mod cli_events;
mod cli_list;
mod cli_renew;
mod cli_rule;
mod cli_rules;
mod cli_server_cert;
mod client;
mod crl_fetch;
mod demo;
mod dns_update;
mod edge;
mod public_listen;
mod serve;

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the edge allocates and frees small buffers on every
/// request, and glibc's malloc spent several times longer on them (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Portcullis: a self-hostable mTLS edge.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `json` (one object per line, e.g. the access log), `text`, or `auto` (text on a
    /// terminal, JSON otherwise).
    #[arg(long, global = true, env = "PORTCULLIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Portcullis: the edge (TLS) listener and the admin API.
    Serve(Box<serve::ServeArgs>),
    /// Try Portcullis: a ready-made mTLS setup for `localhost` with an echo origin and a client certificate.
    Demo(demo::DemoArgs),
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
    /// Client certificates: issue, list, revoke and reactivate them on a running server, or inspect one offline.
    Cert(cli_cert::CertArgs),
    /// The managed CA (show, rotate, retire, CRLs) and bring-your-own CAs of a running server.
    Ca(cli_ca::CaArgs),
    /// Custom rules (the http_request_firewall_custom phase) of a zone of a running server.
    Rule(cli_rule::RuleArgs),
    /// Named IP lists of a running server, for rules such as `ip.src in $office`.
    List(cli_list::ListArgs),
    /// Server certificates the edge presents, per SNI, on a running server: list, upload, replace (renew), remove.
    ServerCert(cli_server_cert::ServerCertArgs),
    /// Server certificates obtained and renewed over ACME (Let's Encrypt or a private CA): order, list, retry, remove.
    Acme(cli_acme::AcmeArgs),
    /// Security events of a zone of a running server (blocks and logs), newest first, or followed with -f.
    Events(cli_events::EventsArgs),
    /// The audit log of a running server: every write, when, and by which token.
    Audit(cli_audit::AuditArgs),
    /// Copy the SQLite database of a data directory into a new file, consistently, while the server runs.
    Backup(cli_backup::BackupArgs),
    /// Make a running server match a configuration file (zones, hostnames, mTLS, rules, IP lists), printing each
    /// change; --dry-run only prints them.
    Apply(cli_apply::ApplyArgs),
    /// Print a running server's configuration as a file for `apply` (TOML).
    Export(cli_apply::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Rules(args) => cli_rules::run(args),
        Command::Cert(args) => cli_cert::run(args),
        Command::Serve(args) => block_on(async { serve::run(*args).await.map(|()| ExitCode::SUCCESS) }),
        Command::Demo(args) => block_on(async { demo::run(args).await.map(|()| ExitCode::SUCCESS) }),
        Command::Zone(args) => block_on(cli_admin::zone(args)),
        Command::Host(args) => block_on(cli_admin::host(args)),
        Command::Mtls(args) => block_on(cli_admin::mtls(args)),
        Command::Token(args) => block_on(cli_admin::token(args)),
        Command::Ca(args) => block_on(cli_ca::ca(args)),
        Command::Rule(args) => block_on(cli_rule::rule(args)),
        Command::List(args) => block_on(cli_list::list(args)),
        Command::ServerCert(args) => block_on(cli_server_cert::server_cert(args)),
        Command::Acme(args) => block_on(cli_acme::acme(args)),
        Command::Events(args) => block_on(cli_events::events(args)),
        Command::Audit(args) => block_on(cli_audit::audit(args)),
        Command::Backup(args) => block_on(cli_backup::backup(args)),
        Command::Apply(args) => block_on(cli_apply::apply(args)),
        Command::Export(args) => block_on(cli_apply::export(args)),
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
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,portcullis=info,portcullis_store=info"));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.with_ansi(terminal).init();
    }
}

/// Writes command output. When the reader has gone away (a pipe into `head`), there is nobody left to tell anything:
/// exit 0 as other Unix tools do. Any other write failure is an error (exit 2).
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let result = stdout
        .write_fmt(args)
        .and_then(|()| if newline { stdout.write_all(b"\n") } else { Ok(()) });
    if let Err(err) = result {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {err}");
        std::process::exit(2);
    }
}
