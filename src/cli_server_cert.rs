//! `portcullis server-cert …`: the server certificates the edge presents (Cloudflare's custom certificates) on a
//! running server: list, upload, replace (a renewal, e.g. from a certbot deploy hook) and remove. The server checks
//! each upload (key matches, chain, names in the zone) and seals the key; nothing here parses certificates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{ApiArgs, ApiClient, array, print_json, print_table, s, zone_or_only};

#[derive(Debug, clap::Args)]
pub struct ServerCertArgs {
    #[command(subcommand)]
    pub command: ServerCertCommand,
    /// Zone id or name; by default the only zone there is.
    #[arg(long, global = true)]
    pub zone: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum ServerCertCommand {
    /// List the zone's server certificates: the names each covers and when it expires.
    #[command(alias = "ls")]
    List,
    /// Upload a certificate and its key; the edge presents it to clients whose SNI it covers.
    Upload {
        /// The certificate, then its intermediates, PEM (certbot's fullchain.pem).
        #[arg(value_name = "CERT.pem")]
        cert: PathBuf,
        /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1; certbot's privkey.pem). Sealed at rest, never shown again.
        #[arg(value_name = "KEY.pem")]
        key: PathBuf,
    },
    /// Replace a server certificate and its key in one step, keeping its id: the edge switches at its next
    /// snapshot with no moment without a certificate.
    Replace {
        /// The server certificate's id (see `server-cert list`).
        id: String,
        #[arg(value_name = "CERT.pem")]
        cert: PathBuf,
        #[arg(value_name = "KEY.pem")]
        key: PathBuf,
    },
    /// Remove a server certificate; its hostnames fall back to another that covers them, or to the development CA.
    #[command(alias = "rm")]
    Remove {
        /// The server certificate's id (see `server-cert list`).
        id: String,
    },
}

fn read_pem(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {} as PEM text", path.display()))
}

fn summary(cert: &Value) -> String {
    let hosts: Vec<&str> = array(&cert["hosts"]).iter().filter_map(Value::as_str).collect();
    format!(
        "{} for {}, issuer {}, expires {}",
        s(cert, "id"),
        hosts.join(" "),
        s(cert, "issuer"),
        s(cert, "expires_on")
    )
}

pub async fn server_cert(args: ServerCertArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let zone = zone_or_only(&api, args.zone.as_deref()).await?;
    let base = format!("/zones/{}/custom_certificates", s(&zone, "id"));
    let json = args.api.json;
    match args.command {
        ServerCertCommand::List => {
            let mut all = Vec::new();
            for page in 1.. {
                let resp = api.get(&format!("{base}?per_page=100&page={page}")).await?;
                all.extend(array(&resp.result).iter().cloned());
                let pages = resp
                    .result_info
                    .as_ref()
                    .and_then(|i| i["total_pages"].as_u64())
                    .unwrap_or(1);
                if page >= pages {
                    break;
                }
            }
            if json {
                print_json(&Value::from(all))?;
            } else {
                let rows: Vec<_> = all
                    .iter()
                    .map(|c| {
                        let hosts: Vec<&str> = array(&c["hosts"]).iter().filter_map(Value::as_str).collect();
                        vec![
                            s(c, "id"),
                            hosts.join(" "),
                            s(c, "issuer"),
                            s(c, "expires_on"),
                            s(c, "modified_on"),
                        ]
                    })
                    .collect();
                print_table(&["ID", "HOSTS", "ISSUER", "EXPIRES", "MODIFIED"], &rows);
            }
        }
        ServerCertCommand::Upload { cert, key } => {
            let body = json!({"certificate": read_pem(&cert)?, "private_key": read_pem(&key)?});
            let created = api.send(Method::POST, &base, &body).await?.result;
            if json {
                print_json(&created)?;
            } else {
                outln!("uploaded server certificate {}", summary(&created));
            }
        }
        ServerCertCommand::Replace { id, cert, key } => {
            let body = json!({"certificate": read_pem(&cert)?, "private_key": read_pem(&key)?});
            let replaced = api.send(Method::PATCH, &format!("{base}/{id}"), &body).await?.result;
            if json {
                print_json(&replaced)?;
            } else {
                outln!("replaced server certificate {}", summary(&replaced));
            }
        }
        ServerCertCommand::Remove { id } => {
            api.delete(&format!("{base}/{id}")).await?;
            if !json {
                outln!("removed server certificate {id}");
            } else {
                print_json(&json!({"id": id}))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
