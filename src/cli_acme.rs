//! `portcullis acme …`: server certificates obtained and renewed over ACME (Cloudflare's certificate packs) on a
//! running server: order one for some of a zone's names, list the packs with their status and last error, try a
//! failing one again now, remove one. The server's ACME manager does the ordering; see `serve --acme-directory`.

use std::process::ExitCode;

use hyper::Method;
use serde_json::{Value, json};

use crate::client::{ApiArgs, ApiClient, array, print_json, print_table, s, zone_or_only};

#[derive(Debug, clap::Args)]
pub struct AcmeArgs {
    #[command(subcommand)]
    pub command: AcmeCommand,
    /// Zone id or name; by default the only zone there is.
    #[arg(long, global = true)]
    pub zone: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum AcmeCommand {
    /// Order a certificate for names of the zone (no wildcards); the server obtains it over ACME with TLS-ALPN-01 on
    /// its edge listener, which must be what port 443 of each name reaches, and renews it.
    Order {
        /// The names the certificate covers.
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// List the zone's certificate packs: names, status, expiry, and why the last attempt failed.
    #[command(alias = "ls")]
    List,
    /// Try a failing pack again now instead of after its back-off (once what made it fail is fixed).
    Retry {
        /// The pack's id (see `acme list`).
        id: String,
    },
    /// Remove a certificate pack and its certificate; its names fall back to another certificate that covers them.
    #[command(alias = "rm")]
    Remove {
        /// The pack's id (see `acme list`).
        id: String,
    },
}

fn names(pack: &Value) -> String {
    array(&pack["hosts"])
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

fn errors(pack: &Value) -> String {
    array(&pack["validation_errors"])
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn acme(args: AcmeArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let zone = zone_or_only(&api, args.zone.as_deref()).await?;
    let base = format!("/zones/{}/ssl/certificate_packs", s(&zone, "id"));
    let json = args.api.json;
    match args.command {
        AcmeCommand::Order { hosts } => {
            let body = json!({"type": "advanced", "hosts": hosts, "validation_method": "tls-alpn-01"});
            let pack = api.send(Method::POST, &format!("{base}/order"), &body).await?.result;
            if json {
                print_json(&pack)?;
            } else {
                outln!(
                    "ordered certificate pack {} for {} ({}); `portcullis acme list` shows its progress",
                    s(&pack, "id"),
                    names(&pack),
                    s(&pack, "status")
                );
            }
        }
        AcmeCommand::List => {
            let packs = api.get(&base).await?.result;
            if json {
                print_json(&packs)?;
            } else {
                let rows: Vec<_> = array(&packs)
                    .iter()
                    .map(|p| vec![s(p, "id"), names(p), s(p, "status"), s(p, "expires_on"), errors(p)])
                    .collect();
                print_table(&["ID", "HOSTS", "STATUS", "EXPIRES", "LAST ERROR"], &rows);
            }
        }
        AcmeCommand::Retry { id } => {
            let pack = api
                .send(Method::PATCH, &format!("{base}/{id}"), &json!({}))
                .await?
                .result;
            if json {
                print_json(&pack)?;
            } else {
                outln!("certificate pack {id} ({}) is tried again now", names(&pack));
            }
        }
        AcmeCommand::Remove { id } => {
            api.delete(&format!("{base}/{id}")).await?;
            if json {
                print_json(&json!({"id": id}))?;
            } else {
                outln!("removed certificate pack {id} and its certificate");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
