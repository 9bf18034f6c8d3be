//! `portcullis audit`: the audit log of a running server (every write: when, by which token, what), newest first.

use std::process::ExitCode;

use crate::client::{ApiArgs, ApiClient, account_id, array, print_json, print_table, s};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// How many of the newest entries to show (at most 1,000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let account = account_id(&api).await?;
    let entries = api
        .get(&format!("/accounts/{account}/audit_logs?per_page={}", args.limit))
        .await?
        .result;
    if args.api.json {
        print_json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<_> = array(&entries)
        .iter()
        .map(|e| {
            vec![
                s(e, "when"),
                format!("{} {}", s(&e["actor"], "type"), s(&e["actor"], "id"))
                    .trim()
                    .to_owned(),
                s(&e["action"], "type"),
                s(&e["resource"], "type"),
                s(&e["resource"], "id"),
                s(&e["metadata"], "detail"),
            ]
        })
        .collect();
    print_table(&["WHEN", "ACTOR", "ACTION", "RESOURCE", "ID", "DETAIL"], &rows);
    Ok(ExitCode::SUCCESS)
}
