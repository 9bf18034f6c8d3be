//! `portcullis acme …`: server certificates obtained and renewed over ACME (Cloudflare's certificate packs) on a
//! running server: order one for some of a zone's names, list the packs with their status and last error, try a
//! failing one again now, remove one; and `acme dns …`, the zone's DNS update settings for DNS-01 (wildcards). The
//! server's ACME manager does the ordering; see `serve --acme-directory`.

use std::process::ExitCode;

use anyhow::Context as _;
use hyper::Method;
use serde_json::{Value, json};
use zeroize::Zeroizing;

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
    /// Order a certificate for names of the zone; the server obtains it over ACME and renews it. With the zone's DNS
    /// update settings (`acme dns set`) it validates over DNS (DNS-01: wildcards too); without, with TLS-ALPN-01 on
    /// its edge listener, which must be what port 443 of each name reaches.
    Order {
        /// The names the certificate covers (`*.example.com` over DNS only).
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
        /// `txt` (DNS-01), `tls-alpn-01`, or `http` (HTTP-01 on the public listener, `serve --public-listen` on port
        /// 80); by default `txt` when the zone has DNS update settings, else `tls-alpn-01`.
        #[arg(long, value_name = "METHOD")]
        method: Option<String>,
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
    /// The zone's DNS update settings, for validation over DNS (DNS-01): its primary name server and a TSIG key
    /// allowed to update `_acme-challenge` TXT records there (RFC 2136).
    #[command(subcommand)]
    Dns(DnsCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum DnsCommand {
    /// Set (or replace) the settings. The key comes from a `tsig-keygen` file (`--key-file`), or from `--key-name`
    /// and the environment variable PORTCULLIS_TSIG_SECRET, so that the secret shows in no process listing.
    Set {
        /// The primary name server: `host`, `host:port`, `ip` or `[ipv6]:port` (port 53 by default).
        #[arg(long)]
        server: String,
        /// A key file as `tsig-keygen NAME` writes it: `key "NAME" { algorithm …; secret "…"; };`.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["key_name", "algorithm"])]
        key_file: Option<std::path::PathBuf>,
        /// The key's name, with its secret in PORTCULLIS_TSIG_SECRET (base64).
        #[arg(long, required_unless_present = "key_file")]
        key_name: Option<String>,
        /// hmac-sha256 (the default), hmac-sha384 or hmac-sha512.
        #[arg(long)]
        algorithm: Option<String>,
        /// The DNS zone to update, if it is a parent of the zone's name.
        #[arg(long)]
        dns_zone: Option<String>,
        /// Seconds to wait after publishing the records before the ACME server looks (0 to 120; 10 by default).
        #[arg(long, value_name = "SECONDS")]
        propagation_seconds: Option<u32>,
    },
    /// Show the settings (never the secret).
    Show,
    /// Remove the settings (refused while a pack of the zone is validated over DNS).
    #[command(alias = "rm")]
    Remove,
}

/// The words, quoted strings and punctuation of a BIND configuration file, without its comments (`#`, `//`,
/// `/* */`). Quoted strings keep their quotes, so that `"key"` is not the word `key`.
fn bind_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                chars.by_ref().find(|&c| c == '\n');
            }
            '/' if chars.peek() == Some(&'/') => {
                chars.by_ref().find(|&c| c == '\n');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                let quoted: String = chars.by_ref().take_while(|&c| c != '"').collect();
                tokens.push(format!("\"{quoted}\""));
            }
            '{' | '}' | ';' => tokens.push(c.to_string()),
            c if c.is_whitespace() => {}
            c => {
                let mut word = c.to_string();
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || matches!(next, '{' | '}' | ';' | '"' | '#') {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(word);
            }
        }
    }
    tokens
}

/// The name, algorithm and secret of the first `key "NAME" { algorithm …; secret "…"; };` statement of a key file,
/// as `tsig-keygen` or `ddns-confgen` (BIND) write it.
pub fn read_key_file(text: &str) -> anyhow::Result<(String, String, Zeroizing<String>)> {
    let tokens = Zeroizing::new(bind_tokens(text));
    let unquote = |t: &str| t.strip_prefix('"').and_then(|t| t.strip_suffix('"')).map(str::to_owned);
    let at = tokens
        .iter()
        .position(|t| t == "key")
        .ok_or_else(|| anyhow::anyhow!("no `key \"NAME\" {{ … }};` statement in the key file"))?;
    let name = tokens
        .get(at + 1)
        .map(|t| unquote(t).unwrap_or_else(|| t.clone()))
        .filter(|n| !n.is_empty() && n != "{")
        .ok_or_else(|| anyhow::anyhow!("the key statement has no name"))?;
    if tokens.get(at + 2).map(String::as_str) != Some("{") {
        anyhow::bail!("the key statement of {name:?} has no `{{`");
    }
    let (mut algorithm, mut secret) = (None, None);
    let mut i = at + 3;
    while let Some(token) = tokens.get(i) {
        match token.as_str() {
            "}" => break,
            "algorithm" => algorithm = tokens.get(i + 1).cloned(),
            "secret" => secret = tokens.get(i + 1).and_then(|t| unquote(t)).map(Zeroizing::new),
            _ => {}
        }
        i += 1;
    }
    let algorithm = algorithm.ok_or_else(|| anyhow::anyhow!("key {name:?} has no `algorithm …;`"))?;
    let secret = secret.ok_or_else(|| anyhow::anyhow!("key {name:?} has no `secret \"…\";`"))?;
    Ok((name, algorithm, secret))
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
        AcmeCommand::Order { hosts, method } => {
            let mut body = json!({"type": "advanced", "hosts": hosts});
            if let Some(method) = method {
                body["validation_method"] = json!(method);
            }
            let pack = api.send(Method::POST, &format!("{base}/order"), &body).await?.result;
            if json {
                print_json(&pack)?;
            } else {
                outln!(
                    "ordered certificate pack {} for {} ({}, validated by {}); `portcullis acme list` shows its progress",
                    s(&pack, "id"),
                    names(&pack),
                    s(&pack, "status"),
                    s(&pack, "validation_method")
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
        AcmeCommand::Dns(command) => dns(&api, &s(&zone, "id"), command, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn dns(api: &ApiClient, zone_id: &str, command: DnsCommand, json: bool) -> anyhow::Result<()> {
    let path = format!("/zones/{zone_id}/ssl/acme_dns");
    let show = |settings: &Value| {
        if settings.is_null() {
            outln!("no DNS update settings: packs are validated with TLS-ALPN-01 on the edge's listener");
        } else {
            outln!(
                "DNS-01 through {} (zone {}), TSIG key {} ({}), {} s for propagation",
                s(settings, "server"),
                s(settings, "dns_zone"),
                s(settings, "key_name"),
                s(settings, "algorithm"),
                settings["propagation_seconds"]
            );
        }
    };
    match command {
        DnsCommand::Set {
            server,
            key_file,
            key_name,
            algorithm,
            dns_zone,
            propagation_seconds,
        } => {
            let (key_name, algorithm, secret) = match key_file {
                Some(path) => {
                    let text = Zeroizing::new(
                        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                    );
                    let (name, algorithm, secret) =
                        read_key_file(&text).with_context(|| format!("reading {}", path.display()))?;
                    (name, Some(algorithm), secret)
                }
                None => {
                    let secret = std::env::var("PORTCULLIS_TSIG_SECRET").map_err(|_| {
                        anyhow::anyhow!("give the key's secret in PORTCULLIS_TSIG_SECRET, or use --key-file")
                    })?;
                    (key_name.unwrap_or_default(), algorithm, Zeroizing::new(secret))
                }
            };
            let mut body = json!({"server": server, "key_name": key_name, "secret": secret.as_str()});
            if let Some(algorithm) = algorithm {
                body["algorithm"] = json!(algorithm);
            }
            if let Some(zone) = dns_zone {
                body["dns_zone"] = json!(zone);
            }
            if let Some(seconds) = propagation_seconds {
                body["propagation_seconds"] = json!(seconds);
            }
            let settings = api.send(Method::PUT, &path, &body).await?.result;
            if json {
                print_json(&settings)?;
            } else {
                show(&settings);
            }
        }
        DnsCommand::Show => {
            let settings = api.get(&path).await?.result;
            if json {
                print_json(&settings)?;
            } else {
                show(&settings);
            }
        }
        DnsCommand::Remove => {
            api.delete(&path).await?;
            if json {
                print_json(&json!({"id": zone_id}))?;
            } else {
                outln!("removed the zone's DNS update settings");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsig_keygen_files_are_read() {
        let file = "key \"portcullis-acme\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\";\n};\n";
        let (name, algorithm, secret) = read_key_file(file).expect("read");
        assert_eq!(name, "portcullis-acme");
        assert_eq!(algorithm, "hmac-sha256");
        assert_eq!(secret.as_str(), "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=");
        assert!(read_key_file("key \"x\" { algorithm hmac-sha256; };").is_err());
        assert!(read_key_file("").is_err());
        // ddns-confgen's file: comments first (naming the key too), and a key whose name contains "secret".
        let confgen = "# To activate this key, place the following in named.conf, and\n\
            # in a separate keyfile on the system or systems from which nsupdate\n\
            # will be run:\nkey \"acme-secret-key\" {\n\talgorithm hmac-sha512;\n\tsecret \"AAECAwQFBgcICQoLDA0ODw==\";\n};\n\
            /* update-policy { grant acme-secret-key zonesub ANY; }; */\n";
        let (name, algorithm, secret) = read_key_file(confgen).expect("ddns-confgen");
        assert_eq!(name, "acme-secret-key");
        assert_eq!(algorithm, "hmac-sha512");
        assert_eq!(secret.as_str(), "AAECAwQFBgcICQoLDA0ODw==");
    }
}
