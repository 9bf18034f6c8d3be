//! Commands that manage a running server through its admin API: `zone`, `host`, `mtls`, `token`.
//! Each prints a table for people, or the API's JSON result with `--json`, and fails with the API's message.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{ApiArgs, ApiClient, array, print_json, print_table, s, zone_named, zone_or_only, zones};

#[derive(Debug, clap::Args)]
pub struct ZoneArgs {
    #[command(subcommand)]
    pub command: ZoneCommand,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum ZoneCommand {
    /// Create a zone (a DNS name under which hostnames are configured).
    Add { name: String },
    /// List zones.
    List,
    /// Delete a zone and everything in it: hostnames, rules, server certificates. Its client certificates are
    /// revoked (they stay in the CRL and refused by every hostname until they expire).
    Remove {
        /// Zone id or name.
        zone: String,
        /// Confirm: without it nothing is deleted.
        #[arg(long)]
        yes: bool,
    },
    /// Show or set a zone's URL normalization: which path rules (and, with `both`, the origin) see.
    UrlNormalization {
        /// Zone id or name.
        zone: String,
        /// incoming (rules see the normalized path, the default), both (rules and origin), none.
        #[arg(long, value_parser = ["incoming", "both", "none"])]
        scope: Option<String>,
        /// cloudflare (RFC 3986 plus `\` as `/` and merged slashes, the default) or rfc3986.
        #[arg(long = "type", value_parser = ["cloudflare", "rfc3986"])]
        kind: Option<String>,
    },
    /// Show or set what the client certificates issued in a zone may be: how long they live and which names
    /// they carry. Without options, shows it.
    CertPolicy {
        /// Zone id or name.
        zone: String,
        /// The longest validity, in days (also the default validity when a request names none).
        #[arg(long, value_name = "DAYS")]
        max_validity_days: Option<u32>,
        /// A typed pattern every subject attribute and SAN must match (cn:, o:, ou:, c:, st:, l:, dns:, uri:,
        /// email:, ip: with an address or CIDR block; * stays within one DNS label, URI path segment or email part),
        /// e.g. 'cn:device-*', 'dns:*.devices.example.com' or 'uri:spiffe://example.com/team-a/*'; repeat for
        /// several. Replaces the zone's list.
        #[arg(long = "allow", value_name = "PATTERN")]
        allow: Vec<String>,
        /// Remove the policy (no limits).
        #[arg(long, conflicts_with_all = ["max_validity_days", "allow"])]
        clear: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct HostArgs {
    #[command(subcommand)]
    pub command: HostCommand,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// The API's certificate forwarding styles.
const FORWARDING_STYLES: [&str; 6] = ["none", "cloudflare", "cf_cert_headers", "rfc9440", "xfcc", "xfcc_cert"];

#[derive(Debug, clap::Subcommand)]
pub enum HostCommand {
    /// Serve HOST and forward its requests to an origin.
    Add {
        host: String,
        /// http://host:port or https://host:port. Repeat it for several servers (same scheme), which
        /// take requests by --steering and stand in for each other when one is down.
        #[arg(long, required = true)]
        origin: Vec<String>,
        /// How requests are spread over several --origin servers: round_robin, or failover (the first
        /// server that is up, in the order given) [default: round_robin].
        #[arg(long, value_parser = ["round_robin", "failover"])]
        steering: Option<String>,
        #[command(flatten)]
        health: HealthCheckArgs,
        /// Zone id or name; by default the zone HOST belongs to.
        #[arg(long)]
        zone: Option<String>,
        /// TLS-layer behaviour when mTLS is enabled: request (rules decide), require (the handshake fails without
        /// a valid certificate) or verify_if_given (fails only when a certificate is presented and is not valid).
        #[arg(long, value_parser = ["request", "require", "verify_if_given"])]
        tls_client_auth: Option<String>,
        /// Forward the client certificate to the origin: none, cloudflare, cf_cert_headers, rfc9440, xfcc,
        /// xfcc_cert (XFCC with the certificate and chain); several with commas (rfc9440,xfcc).
        #[arg(long, value_delimiter = ',', value_parser = FORWARDING_STYLES)]
        forward_cert: Vec<String>,
        /// Speak HTTP/2 to the origin (h2c prior knowledge for http:// origins); gRPC origins need it.
        #[arg(long)]
        origin_h2: bool,
        /// Send this Host (NAME or NAME:PORT) to the origin instead of the client's: for origins that serve by a
        /// name of their own (cloud load balancers, virtual hosts). HTTP/1.1 origins only.
        #[arg(long, value_name = "NAME", conflicts_with = "origin_h2")]
        origin_host_header: Option<String>,
        /// Send a client-certificate field to the origin under a header name of your choosing, as NGINX's
        /// proxy_set_header does: HEADER=FIELD, e.g. X-SSL-Client-Verify=portcullis.tls_client_auth.verify_result;
        /// repeat for several.
        #[arg(long, value_name = "HEADER=FIELD", value_parser = header_field)]
        cert_header: Vec<(String, String)>,
        #[command(flatten)]
        origin_tls: OriginTlsArgs,
        /// Name the trusted CAs when asking clients for a certificate (default true); false keeps them private.
        #[arg(long, value_name = "BOOL")]
        client_ca_names: Option<bool>,
        /// The oldest TLS version clients may use [default: 1.2].
        #[arg(long, value_name = "VERSION", value_parser = ["1.2", "1.3"])]
        min_tls_version: Option<String>,
    },
    /// Change a hostname's origin or settings; what is not given stays as it is.
    Set {
        host: String,
        /// http://host:port or https://host:port; repeated, the servers replace all of the hostname's.
        #[arg(long)]
        origin: Vec<String>,
        /// How requests are spread over several origin servers: round_robin or failover.
        #[arg(long, value_parser = ["round_robin", "failover"])]
        steering: Option<String>,
        #[command(flatten)]
        health: HealthCheckArgs,
        /// Stop the active health checks.
        #[arg(long, conflicts_with_all = ["health_check", "health_check_interval", "health_check_timeout"])]
        no_health_check: bool,
        /// request, require or verify_if_given (as for `host add`).
        #[arg(long, value_parser = ["request", "require", "verify_if_given"])]
        tls_client_auth: Option<String>,
        /// The forwarding styles, replacing the hostname's (as for `host add`).
        #[arg(long, value_delimiter = ',', value_parser = FORWARDING_STYLES)]
        forward_cert: Vec<String>,
        /// Speak HTTP/2 to the origin (true or false).
        #[arg(long)]
        origin_h2: Option<bool>,
        /// Send this Host to the origin instead of the client's (as for `host add`).
        #[arg(long, value_name = "NAME")]
        origin_host_header: Option<String>,
        /// Send the client's Host to the origin again.
        #[arg(long, conflicts_with = "origin_host_header")]
        no_origin_host_header: bool,
        /// The certificate fields sent under header names of your choosing, replacing the hostname's (as for
        /// `host add`).
        #[arg(long, value_name = "HEADER=FIELD", value_parser = header_field)]
        cert_header: Vec<(String, String)>,
        /// Send no certificate fields under names of your choosing any more.
        #[arg(long, conflicts_with = "cert_header")]
        no_cert_headers: bool,
        #[command(flatten)]
        origin_tls: OriginTlsArgs,
        /// Stop trusting the --origin-ca set before (back to the public roots).
        #[arg(long, conflicts_with = "origin_ca")]
        no_origin_ca: bool,
        /// Stop presenting the --origin-client-cert set before.
        #[arg(long, conflicts_with = "origin_client_cert")]
        no_origin_client_cert: bool,
        /// Verify the origin's certificate again after --origin-insecure.
        #[arg(long, conflicts_with = "origin_insecure")]
        origin_verify: bool,
        /// Name the trusted CAs when asking clients for a certificate (true or false).
        #[arg(long, value_name = "BOOL")]
        client_ca_names: Option<bool>,
        /// The oldest TLS version clients may use.
        #[arg(long, value_name = "VERSION", value_parser = ["1.2", "1.3"])]
        min_tls_version: Option<String>,
    },
    /// List hostnames, of one zone or of all.
    List {
        #[arg(long)]
        zone: Option<String>,
    },
    /// Show one hostname.
    Show { host: String },
    /// Stop serving a hostname.
    Remove { host: String },
}

/// Active health checks of a hostname's origin servers (with several --origin).
#[derive(Debug, Clone, clap::Args)]
pub struct HealthCheckArgs {
    /// GET this path on each origin server; two failed checks in a row (not 2xx or 3xx, or no answer) take a
    /// server out until one passes.
    #[arg(long, value_name = "PATH")]
    health_check: Option<String>,
    /// Seconds between checks [default: 10].
    #[arg(long, value_name = "SECONDS")]
    health_check_interval: Option<u32>,
    /// Seconds a check may take [default: 2].
    #[arg(long, value_name = "SECONDS")]
    health_check_timeout: Option<u32>,
}

impl HealthCheckArgs {
    /// The API's `origin_health_check` from these options over `current` (the hostname's, for `host set`), or
    /// `None` when none was given.
    fn body(&self, current: &Value) -> anyhow::Result<Option<Value>> {
        if self.health_check.is_none() && self.health_check_interval.is_none() && self.health_check_timeout.is_none() {
            return Ok(None);
        }
        let mut check = if current.is_object() {
            current.clone()
        } else {
            json!({})
        };
        if let Some(path) = &self.health_check {
            check["path"] = json!(path);
        }
        if let Some(interval) = self.health_check_interval {
            check["interval"] = json!(interval);
        }
        if let Some(timeout) = self.health_check_timeout {
            check["timeout"] = json!(timeout);
        }
        if !check["path"].is_string() {
            bail!("give the path to check with --health-check PATH");
        }
        Ok(Some(check))
    }
}

/// A hostname's health check, in words.
fn health_check_text(h: &Value) -> String {
    let check = &h["origin_health_check"];
    if !check.is_object() {
        return "none".to_owned();
    }
    format!(
        "GET {} every {} s (timeout {} s)",
        s(check, "path"),
        s(check, "interval"),
        s(check, "timeout")
    )
}

/// How the edge talks TLS to an `https://` origin.
#[derive(Debug, clap::Args)]
pub struct OriginTlsArgs {
    /// The CA (PEM file) that issues the origin's certificate, instead of the public web roots.
    #[arg(long, value_name = "FILE.pem")]
    origin_ca: Option<PathBuf>,
    /// Accept any origin certificate (a self-signed origin on a network you trust).
    #[arg(long)]
    origin_insecure: bool,
    /// Present this client certificate to the origin (an id from `ca upload-client`), for origins that require one.
    #[arg(long, value_name = "ID")]
    origin_client_cert: Option<String>,
}

impl OriginTlsArgs {
    /// Adds the given settings to a hostname body.
    fn apply(&self, body: &mut Value) -> anyhow::Result<()> {
        if let Some(path) = &self.origin_ca {
            let pem = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            body["origin_ca"] = json!(pem);
        }
        if self.origin_insecure {
            body["origin_tls_verify"] = json!(false);
        }
        if let Some(id) = &self.origin_client_cert {
            body["origin_client_certificate"] = json!(id);
        }
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
pub struct MtlsArgs {
    #[command(subcommand)]
    pub command: MtlsCommand,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum MtlsCommand {
    /// Ask clients of HOST for a certificate, verified against the managed CA or the CA given.
    Enable {
        host: String,
        /// A bring-your-own CA (mtls_certificates id); the managed CA by default.
        #[arg(long)]
        ca: Option<String>,
    },
    /// Stop asking clients of HOST for a certificate (removes it from the CA given, or from the managed CA).
    Disable {
        host: String,
        #[arg(long)]
        ca: Option<String>,
    },
    /// Print the warnings about the zone's mTLS setup (a hostname no rule enforces, a rule that lets revoked
    /// certificates through, a certificate rule on a hostname without mTLS, a skip placed before the certificate
    /// rules); exits 1 when there is one, for deployment pipelines.
    Check {
        /// Zone id or name; by default the only zone there is.
        #[arg(long)]
        zone: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create an API token; its secret is printed once.
    Create {
        /// read (GET only), write (everything) or certificates (GET, and issuing, revoking and reactivating client
        /// certificates: for a provisioning service).
        #[arg(long, value_parser = ["read", "write", "certificates"])]
        scope: String,
        #[arg(long, default_value = "cli")]
        name: String,
        /// The token stops working after this long: `90d`, `12h`, `30m`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "expires_on")]
        expires_in: Option<i64>,
        /// The token stops working at this time (RFC 3339, `2027-01-31T00:00:00Z`).
        #[arg(long, value_name = "TIME")]
        expires_on: Option<String>,
        /// The token works only from this address or CIDR; repeat for several.
        #[arg(long, value_name = "CIDR")]
        allow_ip: Vec<String>,
        /// The token never works from this address or CIDR; repeat for several.
        #[arg(long, value_name = "CIDR")]
        deny_ip: Vec<String>,
        /// The token may reach only this zone (name or id), not the account's CAs, tokens or other zones; repeat for
        /// several.
        #[arg(long, value_name = "ZONE")]
        zone: Vec<String>,
    },
    /// List API tokens.
    List,
    /// Revoke an API token.
    Revoke { id: String },
}

pub async fn zone(args: ZoneArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    match args.command {
        ZoneCommand::Add { name } => {
            let zone = api.send(Method::POST, "/zones", &json!({ "name": name })).await?.result;
            if args.api.json {
                print_json(&zone)?;
            } else {
                outln!("created zone {} ({})", s(&zone, "name"), s(&zone, "id"));
            }
        }
        ZoneCommand::Remove { zone, yes } => {
            let found = zone_named(&zones(&api).await?, &zone)?;
            if !yes {
                bail!(
                    "removing zone {} deletes its hostnames, rules and certificates and revokes its client \
                     certificates; run again with --yes",
                    s(&found, "name")
                );
            }
            api.delete(&format!("/zones/{}", s(&found, "id"))).await?;
            if args.api.json {
                print_json(&json!({ "id": s(&found, "id") }))?;
            } else {
                outln!("removed zone {} ({})", s(&found, "name"), s(&found, "id"));
            }
        }
        ZoneCommand::List => {
            let zones = Value::Array(zones(&api).await?);
            if args.api.json {
                print_json(&zones)?;
            } else {
                let rows: Vec<_> = array(&zones)
                    .iter()
                    .map(|z| vec![s(z, "id"), s(z, "name"), s(z, "status")])
                    .collect();
                print_table(&["ID", "NAME", "STATUS"], &rows);
            }
        }
        ZoneCommand::UrlNormalization { zone, scope, kind } => {
            let zone = find_zone(&api, Some(&zone), None).await?;
            let path = format!("/zones/{}/url_normalization", s(&zone, "id"));
            let current = api.get(&path).await?.result;
            let setting = if scope.is_none() && kind.is_none() {
                current
            } else {
                // Cloudflare's PUT takes both fields; an option left out keeps its value.
                let body = json!({
                    "scope": scope.unwrap_or_else(|| s(&current, "scope")),
                    "type": kind.unwrap_or_else(|| s(&current, "type")),
                });
                api.send(Method::PUT, &path, &body).await?.result
            };
            if args.api.json {
                print_json(&setting)?;
            } else {
                outln!(
                    "zone {}: URL normalization scope {}, type {}",
                    s(&zone, "name"),
                    s(&setting, "scope"),
                    s(&setting, "type")
                );
            }
        }
        ZoneCommand::CertPolicy {
            zone,
            max_validity_days,
            allow,
            clear,
        } => {
            let zone = find_zone(&api, Some(&zone), None).await?;
            let path = format!("/zones/{}/portcullis/client_certificate_policy", s(&zone, "id"));
            let mut policy = api.get(&path).await?.result;
            if clear || max_validity_days.is_some() || !allow.is_empty() {
                if clear {
                    policy = json!({});
                }
                // An option left out keeps its value.
                if let Some(days) = max_validity_days {
                    policy["max_validity_days"] = json!(days);
                }
                if !allow.is_empty() {
                    policy["allowed_names"] = json!(allow);
                }
                policy = api.send(Method::PUT, &path, &policy).await?.result;
            }
            if args.api.json {
                print_json(&policy)?;
            } else {
                let days = policy["max_validity_days"].as_u64().map_or_else(
                    || "of any validity".to_owned(),
                    |d| format!("valid for at most {d} days"),
                );
                let names = array(&policy["allowed_names"])
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                outln!(
                    "zone {}: client certificates {days}; names: {}",
                    s(&zone, "name"),
                    if names.is_empty() { "any" } else { &names }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The zone named by id or name, or else the zone `host` lies in (the longest matching zone name).
async fn find_zone(api: &ApiClient, zone: Option<&str>, host: Option<&str>) -> anyhow::Result<Value> {
    let zones = zones(api).await?;
    if let Some(wanted) = zone {
        return zone_named(&zones, wanted);
    }
    let host = host.map(str::to_ascii_lowercase).unwrap_or_default();
    zones
        .iter()
        .filter(|z| {
            let name = s(z, "name");
            host == name || host.ends_with(&format!(".{name}"))
        })
        .max_by_key(|z| s(z, "name").len())
        .cloned()
        .with_context(|| format!("no zone contains {host:?}; create one with `portcullis zone add` or pass --zone"))
}

async fn find_host(api: &ApiClient, host: &str) -> anyhow::Result<(Value, Value)> {
    let zone = find_zone(api, None, Some(host)).await?;
    let hosts = api.get(&format!("/zones/{}/hostnames", s(&zone, "id"))).await?.result;
    let wanted = host.to_ascii_lowercase();
    let found = array(&hosts)
        .iter()
        .find(|h| s(h, "hostname") == wanted || s(h, "id") == host)
        .cloned()
        .with_context(|| format!("no hostname {host:?} in zone {}", s(&zone, "name")))?;
    Ok((zone, found))
}

/// A hostname's forwarding styles: one, or several joined with commas.
fn styles(h: &Value) -> String {
    match &h["client_certificate_forwarding"] {
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        _ => s(h, "client_certificate_forwarding"),
    }
}

fn host_row(h: &Value) -> Vec<String> {
    let more = array(&h["additional_origins"]).len();
    vec![
        s(h, "hostname"),
        if more == 0 {
            s(h, "origin")
        } else {
            format!("{} (+{more})", s(h, "origin"))
        },
        s(h, "tls_client_auth"),
        styles(h),
        s(h, "id"),
    ]
}

const HOST_HEADERS: [&str; 5] = ["HOSTNAME", "ORIGIN", "TLS_CLIENT_AUTH", "FORWARDING", "ID"];

pub async fn host(args: HostArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    match args.command {
        HostCommand::Add {
            host,
            origin,
            steering,
            health,
            zone,
            tls_client_auth,
            forward_cert,
            origin_h2,
            origin_host_header,
            cert_header,
            origin_tls,
            client_ca_names,
            min_tls_version,
        } => {
            let zone = find_zone(&api, zone.as_deref(), Some(&host)).await?;
            let mut body = json!({ "hostname": host, "origin": origin[0], "additional_origins": origin[1..] });
            if let Some(steering) = steering {
                body["origin_steering"] = json!(steering);
            }
            if let Some(check) = health.body(&Value::Null)? {
                body["origin_health_check"] = check;
            }
            origin_tls.apply(&mut body)?;
            if let Some(send) = client_ca_names {
                body["send_client_ca_names"] = json!(send);
            }
            if let Some(min) = min_tls_version {
                body["min_tls_version"] = json!(min);
            }
            if let Some(mode) = tls_client_auth {
                body["tls_client_auth"] = json!(mode);
            }
            if !forward_cert.is_empty() {
                body["client_certificate_forwarding"] = json!(forward_cert);
            }
            if origin_h2 {
                body["origin_http2"] = json!(true);
            }
            if let Some(name) = origin_host_header {
                body["origin_host_header"] = json!(name);
            }
            if !cert_header.is_empty() {
                body["client_certificate_headers"] = header_map(cert_header);
            }
            let created = api
                .send(Method::POST, &format!("/zones/{}/hostnames", s(&zone, "id")), &body)
                .await?
                .result;
            if args.api.json {
                print_json(&created)?;
            } else {
                outln!(
                    "added {} → {} in zone {}",
                    s(&created, "hostname"),
                    s(&created, "origin"),
                    s(&zone, "name")
                );
            }
        }
        HostCommand::Set {
            host,
            origin,
            steering,
            health,
            no_health_check,
            tls_client_auth,
            forward_cert,
            origin_h2,
            origin_host_header,
            no_origin_host_header,
            cert_header,
            no_cert_headers,
            origin_tls,
            no_origin_ca,
            no_origin_client_cert,
            origin_verify,
            client_ca_names,
            min_tls_version,
        } => {
            let (zone, found) = find_host(&api, &host).await?;
            let mut body = json!({});
            if let Some((first, more)) = origin.split_first() {
                body["origin"] = json!(first);
                body["additional_origins"] = json!(more);
            }
            if let Some(steering) = steering {
                body["origin_steering"] = json!(steering);
            }
            if let Some(check) = health.body(&found["origin_health_check"])? {
                body["origin_health_check"] = check;
            }
            if no_health_check {
                body["origin_health_check"] = Value::Null;
            }
            if let Some(mode) = tls_client_auth {
                body["tls_client_auth"] = json!(mode);
            }
            if !forward_cert.is_empty() {
                body["client_certificate_forwarding"] = json!(forward_cert);
            }
            if let Some(h2) = origin_h2 {
                body["origin_http2"] = json!(h2);
            }
            if let Some(name) = origin_host_header {
                body["origin_host_header"] = json!(name);
            }
            if no_origin_host_header {
                body["origin_host_header"] = json!("");
            }
            if !cert_header.is_empty() {
                body["client_certificate_headers"] = header_map(cert_header);
            }
            if no_cert_headers {
                body["client_certificate_headers"] = json!({});
            }
            origin_tls.apply(&mut body)?;
            // The API's way to remove a setting: an empty string.
            if no_origin_ca {
                body["origin_ca"] = json!("");
            }
            if no_origin_client_cert {
                body["origin_client_certificate"] = json!("");
            }
            if origin_verify {
                body["origin_tls_verify"] = json!(true);
            }
            if let Some(send) = client_ca_names {
                body["send_client_ca_names"] = json!(send);
            }
            if let Some(min) = min_tls_version {
                body["min_tls_version"] = json!(min);
            }
            if body.as_object().is_some_and(serde_json::Map::is_empty) {
                bail!(
                    "nothing to change: give --origin, --steering, --health-check, --no-health-check, --tls-client-auth, --forward-cert, --origin-h2, --origin-host-header, --no-origin-host-header, --cert-header, --no-cert-headers, --client-ca-names, --min-tls-version or an origin TLS option"
                );
            }
            let updated = api
                .send(
                    Method::PATCH,
                    &format!("/zones/{}/hostnames/{}", s(&zone, "id"), s(&found, "id")),
                    &body,
                )
                .await?
                .result;
            if args.api.json {
                print_json(&updated)?;
            } else {
                outln!("updated {} → {}", s(&updated, "hostname"), s(&updated, "origin"));
            }
        }
        HostCommand::List { zone } => {
            let zones: Vec<Value> = match zone {
                Some(z) => vec![find_zone(&api, Some(&z), None).await?],
                None => zones(&api).await?,
            };
            let mut all = Vec::new();
            for z in &zones {
                all.extend(
                    array(&api.get(&format!("/zones/{}/hostnames", s(z, "id"))).await?.result)
                        .iter()
                        .cloned(),
                );
            }
            if args.api.json {
                print_json(&Value::Array(all))?;
            } else {
                print_table(&HOST_HEADERS, &all.iter().map(host_row).collect::<Vec<_>>());
            }
        }
        HostCommand::Show { host } => {
            let (zone, found) = find_host(&api, &host).await?;
            if args.api.json {
                print_json(&found)?;
            } else {
                let assoc = api
                    .get(&format!(
                        "/zones/{}/certificate_authorities/hostname_associations",
                        s(&zone, "id")
                    ))
                    .await?
                    .result;
                let managed = array(&assoc["hostnames"])
                    .iter()
                    .any(|h| h.as_str() == Some(s(&found, "hostname").as_str()));
                for (key, value) in [
                    ("hostname", s(&found, "hostname")),
                    ("zone", s(&zone, "name")),
                    ("origin", s(&found, "origin")),
                    (
                        "additional_origins",
                        array(&found["additional_origins"])
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    ("origin_steering", s(&found, "origin_steering")),
                    ("origin_health_check", health_check_text(&found)),
                    ("tls_client_auth", s(&found, "tls_client_auth")),
                    ("client_certificate_forwarding", styles(&found)),
                    ("origin_tls_verify", s(&found, "origin_tls_verify")),
                    ("origin_http2", s(&found, "origin_http2")),
                    (
                        "client_certificate_headers",
                        found["client_certificate_headers"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(h, f)| format!("{h}: {}", f.as_str().unwrap_or_default()))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default(),
                    ),
                    (
                        "origin_host_header",
                        found["origin_host_header"]
                            .as_str()
                            .map_or_else(|| "the client's".to_owned(), str::to_owned),
                    ),
                    (
                        "origin_ca",
                        if found["origin_ca"].is_string() {
                            "set"
                        } else {
                            "public roots"
                        }
                        .to_owned(),
                    ),
                    ("origin_client_certificate", s(&found, "origin_client_certificate")),
                    ("send_client_ca_names", s(&found, "send_client_ca_names")),
                    ("min_tls_version", s(&found, "min_tls_version")),
                    ("managed_ca_mtls", managed.to_string()),
                    ("id", s(&found, "id")),
                ] {
                    outln!("{key:<30} {value}");
                }
            }
        }
        HostCommand::Remove { host } => {
            let (zone, found) = find_host(&api, &host).await?;
            api.delete(&format!("/zones/{}/hostnames/{}", s(&zone, "id"), s(&found, "id")))
                .await?;
            outln!("removed {}", s(&found, "hostname"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn mtls(args: MtlsArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let (enable, host, ca) = match args.command {
        MtlsCommand::Enable { host, ca } => (true, host, ca),
        MtlsCommand::Disable { host, ca } => (false, host, ca),
        MtlsCommand::Check { zone } => {
            let zone = zone_or_only(&api, zone.as_deref()).await?;
            let found = api
                .get(&format!("/zones/{}/portcullis/mtls_check", s(&zone, "id")))
                .await?
                .result;
            if args.api.json {
                print_json(&found)?;
            } else {
                for warning in array(&found) {
                    outln!("warning: {}", s(warning, "message"));
                }
                if array(&found).is_empty() {
                    outln!("zone {}: no warnings", s(&zone, "name"));
                }
            }
            return Ok(if array(&found).is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    };
    let (zone, found) = find_host(&api, &host).await?;
    let name = s(&found, "hostname");
    let path = format!(
        "/zones/{}/certificate_authorities/hostname_associations",
        s(&zone, "id")
    );
    let query = ca
        .as_ref()
        .map(|id| format!("?mtls_certificate_id={id}"))
        .unwrap_or_default();
    let current = api.get(&format!("{path}{query}")).await?.result;
    let mut hostnames: Vec<String> = array(&current["hostnames"])
        .iter()
        .filter_map(|h| h.as_str().map(str::to_owned))
        .collect();
    let present = hostnames.contains(&name);
    match (enable, present) {
        (true, true) | (false, false) => {
            outln!("{name}: nothing to change");
            return Ok(ExitCode::SUCCESS);
        }
        (true, false) => hostnames.push(name.clone()),
        (false, true) => hostnames.retain(|h| *h != name),
    }
    let mut body = json!({ "hostnames": hostnames });
    if let Some(id) = &ca {
        body["mtls_certificate_id"] = json!(id);
    }
    let result = api.send(Method::PUT, &path, &body).await?.result;
    if args.api.json {
        print_json(&result)?;
    } else {
        let ca_name = ca.map_or_else(|| "the managed CA".to_owned(), |id| format!("CA {id}"));
        if enable {
            outln!("mTLS enabled on {name} with {ca_name}");
        } else {
            outln!("mTLS disabled on {name} for {ca_name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `90d`, `12h`, `30m` or `45s`, in seconds.
fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{text:?}: give a number and a unit, as 90d, 12h, 30m or 45s"))?;
    let per = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("{text:?}: the unit is d, h, m or s")),
    };
    match n.checked_mul(per) {
        Some(seconds) if seconds > 0 && seconds <= 100 * 365 * 86_400 => Ok(seconds),
        _ => Err(format!("{text:?}: from 1 second to 100 years")),
    }
}

pub async fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    match args.command {
        TokenCommand::Create {
            scope,
            name,
            expires_in,
            expires_on,
            allow_ip,
            deny_ip,
            zone,
        } => {
            let mut body = json!({ "name": name, "scope": scope });
            let expires_on = match (expires_in, expires_on) {
                (Some(seconds), _) => Some(
                    (time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
                        .format(&time::format_description::well_known::Rfc3339)?,
                ),
                (None, at) => at,
            };
            if let Some(at) = expires_on {
                body["expires_on"] = json!(at);
            }
            if !allow_ip.is_empty() || !deny_ip.is_empty() {
                body["condition"] = json!({"request_ip": {"in": allow_ip, "not_in": deny_ip}});
            }
            if !zone.is_empty() {
                let all = zones(&api).await?;
                let ids = zone
                    .iter()
                    .map(|z| zone_named(&all, z).map(|found| s(&found, "id")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                body["zones"] = json!(ids);
            }
            let token = api.send(Method::POST, "/user/tokens", &body).await?.result;
            if args.api.json {
                print_json(&token)?;
            } else {
                outln!(
                    "created {} token {} ({}); its secret, shown once:",
                    s(&token, "scope"),
                    s(&token, "name"),
                    s(&token, "id")
                );
                outln!("{}", s(&token, "value"));
            }
        }
        TokenCommand::List => {
            let tokens = api.get("/user/tokens").await?.result;
            if args.api.json {
                print_json(&tokens)?;
            } else {
                let rows: Vec<_> = array(&tokens)
                    .iter()
                    .map(|t| {
                        vec![
                            s(t, "id"),
                            s(t, "name"),
                            s(t, "scope"),
                            s(t, "status"),
                            s(t, "issued_on"),
                            s(t, "expires_on"),
                            array(&t["zones"])
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(" "),
                        ]
                    })
                    .collect();
                print_table(
                    &["ID", "NAME", "SCOPE", "STATUS", "ISSUED_ON", "EXPIRES_ON", "ZONES"],
                    &rows,
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if id.is_empty() {
                bail!("a token id is required");
            }
            api.delete(&format!("/user/tokens/{id}")).await?;
            outln!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--cert-header HEADER=FIELD`.
fn header_field(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((header, field)) if !header.trim().is_empty() && !field.trim().is_empty() => {
            Ok((header.trim().to_owned(), field.trim().to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not HEADER=FIELD (e.g. X-SSL-Client-Verify=portcullis.tls_client_auth.verify_result)"
        )),
    }
}

/// The API's `client_certificate_headers` from `--cert-header` pairs.
fn header_map(pairs: Vec<(String, String)>) -> Value {
    Value::Object(pairs.into_iter().map(|(h, f)| (h, Value::String(f))).collect())
}
