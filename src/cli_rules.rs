//! `portcullis rules …`: check and evaluate rule expressions offline, and list the fields.
//!
//! Exit codes: 0 when the command did its job (`eval` printing `false` included); 2 for an
//! invalid expression (the caret diagnostic goes to stderr) or bad `--field` input.

use std::process::ExitCode;

use anyhow::Context as _;
use portcullis_rules::{CompileError, Context, Lists, Program, compile_with, parse_field_value, schema};

#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RulesCommand {
    /// Check that an expression compiles; prints `ok` or a diagnostic.
    Check {
        /// The expression, e.g. 'not cf.tls_client_auth.cert_verified'.
        expression: String,
        /// An IP list for `$NAME`, from FILE (one address or CIDR range per line, `#` comments); repeatable.
        #[arg(long = "list", value_name = "NAME=FILE")]
        lists: Vec<String>,
    },
    /// Evaluate an expression against field values; prints `true` or `false`.
    Eval {
        /// The expression.
        expression: String,
        /// A field value, NAME=VALUE (repeatable). Booleans are true/false, IPs and integers
        /// as usual, strings verbatim, arrays and maps as JSON. Unset fields take defaults.
        #[arg(long = "field", short = 'f', value_name = "NAME=VALUE")]
        fields: Vec<String>,
        /// An IP list for `$NAME`, from FILE (one address or CIDR range per line, `#` comments); repeatable.
        #[arg(long = "list", value_name = "NAME=FILE")]
        lists: Vec<String>,
    },
    /// List the fields expressions can use, with their types.
    Fields,
}

pub fn run(args: RulesArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RulesCommand::Check { expression, lists } => Ok(match compile_or_report(&expression, &read_lists(&lists)?) {
            Some(_) => {
                outln!("ok");
                ExitCode::SUCCESS
            }
            None => ExitCode::from(2),
        }),
        RulesCommand::Eval {
            expression,
            fields,
            lists,
        } => {
            let lists = read_lists(&lists)?;
            // Field values are parsed first so bad input is reported whatever the expression.
            let mut ctx = Context::new();
            for spec in &fields {
                let (name, text) = spec
                    .split_once('=')
                    .with_context(|| format!("--field {spec:?}: expected NAME=VALUE"))?;
                let (id, value) = parse_field_value(name, text).with_context(|| format!("--field {spec:?}"))?;
                ctx.set(id, value).with_context(|| format!("--field {spec:?}"))?;
            }
            let Some(program) = compile_or_report(&expression, &lists) else {
                return Ok(ExitCode::from(2));
            };
            outln!("{}", program.eval(&ctx));
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Fields => {
            let rows: Vec<(&str, String, &str)> = schema()
                .iter()
                .map(|f| (f.name(), f.ty().to_string(), f.description()))
                .collect();
            let name_w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
            let ty_w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
            for (name, ty, description) in rows {
                outln!("{name:<name_w$}  {ty:<ty_w$}  {description}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The `--list NAME=FILE` lists, read and checked as the server would (the error names the file and line).
fn read_lists(specs: &[String]) -> anyhow::Result<Lists> {
    let mut lists = Lists::new();
    for spec in specs {
        let (name, path) = spec
            .split_once('=')
            .with_context(|| format!("--list {spec:?}: expected NAME=FILE"))?;
        let name = name.trim_start_matches('$');
        let items = crate::cli_list::items_from_file(std::path::Path::new(path))?;
        lists
            .insert_ip(name, items.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("--list {spec:?}: {e}"))?;
    }
    Ok(lists)
}

/// Compiles, printing the caret diagnostic to stderr on failure.
fn compile_or_report(expression: &str, lists: &Lists) -> Option<Program> {
    match compile_with(expression, lists) {
        Ok(p) => Some(p),
        Err(e) => {
            report(&e, expression);
            None
        }
    }
}

fn report(e: &CompileError, src: &str) {
    eprint!("{}", e.render(src));
}
