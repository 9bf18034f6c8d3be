//! `portcullis events`: a zone's security events (blocks and logs by rules and rate limits) on a running server,
//! newest first, or followed as they happen (`--follow`, oldest first, like `tail -f`).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::client::{ApiArgs, ApiClient, array, print_json, print_table, s, zone_or_only};

/// How often `--follow` asks for new events.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// The API's largest page.
const MAX_PER_POLL: usize = 1000;
/// How far back (in event ids) each poll looks for events that committed late.
const REPOLL_IDS: i64 = 500;

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Zone id or name; by default the only zone there is.
    #[arg(long)]
    pub zone: Option<String>,
    /// Only this hostname's.
    #[arg(long)]
    pub host: Option<String>,
    /// Only blocks or only logs.
    #[arg(long, value_parser = ["block", "log"])]
    pub action: Option<String>,
    /// Only requests whose client certificate had this outcome.
    #[arg(long, value_parser = ["ok", "absent", "untrusted", "notyetvalid", "expired", "revoked"])]
    pub mtls_status: Option<String>,
    /// How many of the newest to show (at most 1,000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Keep printing new events as they are recorded, until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

fn row(e: &Value) -> Vec<String> {
    vec![
        s(e, "occurred_at"),
        s(e, "action"),
        e["status_code"]
            .as_i64()
            .filter(|c| *c != 0)
            .map(|c| c.to_string())
            .unwrap_or_default(),
        s(e, "host"),
        format!("{} {}", s(e, "method"), s(e, "path")),
        s(e, "client_ip"),
        s(e, "mtls_status"),
        s(e, "cert_verify_error"),
        s(e, "cert_serial"),
        s(e, "rule_id"),
    ]
}

const HEADERS: [&str; 10] = [
    "TIME",
    "ACTION",
    "STATUS",
    "HOST",
    "REQUEST",
    "CLIENT_IP",
    "MTLS",
    "VERIFY_ERROR",
    "CERT_SERIAL",
    "RULE",
];

pub async fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let zone = zone_or_only(&api, args.zone.as_deref()).await?;
    let mut filters = String::new();
    for (key, value) in [
        ("host", &args.host),
        ("action", &args.action),
        ("mtls_status", &args.mtls_status),
    ] {
        if let Some(value) = value {
            filters.push_str(&format!("&{key}={}", encode(value)));
        }
    }
    let base = format!(
        "/zones/{}/security/events?{}",
        s(&zone, "id"),
        filters.trim_start_matches('&')
    );
    let first = api.get(&format!("{base}&per_page={}", args.limit)).await?.result;
    let events = array(&first);
    if !args.follow {
        if args.api.json {
            print_json(&first)?;
        } else {
            print_table(&HEADERS, &events.iter().map(row).collect::<Vec<_>>());
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Followed: oldest first, one line (or one JSON object) per event, as each batch arrives.
    let print = |batch: &[&Value]| -> anyhow::Result<()> {
        for e in batch.iter().rev() {
            if args.api.json {
                outln!("{}", serde_json::to_string(e)?);
            } else {
                outln!("{}", row(e).join("  ").trim_end());
            }
        }
        Ok(())
    };
    if !args.api.json {
        outln!("{}", HEADERS.join("  "));
    }
    // Ids are handed out when events are written, and with several edge nodes on PostgreSQL a batch may commit
    // after a later id was already seen: each poll looks back REPOLL_IDS ids and skips those already printed.
    let mut seen: std::collections::BTreeSet<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
    // Nothing older than what was listed first is printed later: --limit chose how far back to start.
    let floor = seen.last().copied().unwrap_or(0);
    print(&events.iter().collect::<Vec<_>>())?;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let newest = seen.last().copied().unwrap_or(0);
        let after = newest.saturating_sub(REPOLL_IDS);
        let batch = match api
            .get(&format!("{base}&after_id={after}&per_page={MAX_PER_POLL}"))
            .await
        {
            Ok(resp) => resp.result,
            Err(e) => {
                // A restart of the server or a network blip: keep following, as tail -F does.
                eprintln!("(cannot read events: {e:#}; trying again)");
                continue;
            }
        };
        let batch = array(&batch);
        // A full page whose oldest event is still newer than the newest printed: the API answers newest first, so
        // what came in between was not fetched.
        let oldest = batch.iter().filter_map(|e| e["id"].as_i64()).min().unwrap_or(0);
        if batch.len() >= MAX_PER_POLL && oldest > newest + 1 {
            eprintln!("(more than {MAX_PER_POLL} events in a second: older ones of this second are not shown)");
        }
        let fresh: Vec<&Value> = batch
            .iter()
            .filter(|e| e["id"].as_i64().is_some_and(|id| id > floor && !seen.contains(&id)))
            .collect();
        print(&fresh)?;
        seen.extend(fresh.iter().filter_map(|e| e["id"].as_i64()));
        let keep_from = seen.last().copied().unwrap_or(0).saturating_sub(REPOLL_IDS);
        seen = seen.split_off(&keep_from);
    }
}

/// Percent-encodes a query value (hostnames and the fixed choices need little, but a value never breaks the URL).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
