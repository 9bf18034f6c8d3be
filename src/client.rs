//! A small client of the admin API for the CLI: sends JSON, unwraps Cloudflare's envelope, and turns API errors
//! into error messages that carry the API's own message.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How the CLI reaches a running server.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The admin API's base URL.
    #[arg(long, global = true, env = "PORTCULLIS_API", default_value = "http://127.0.0.1:8081")]
    pub api: String,
    /// API token; defaults to PORTCULLIS_TOKEN, then the data directory's admin-token file.
    #[arg(long, global = true, env = "PORTCULLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory holding admin-token (used when no token is given).
    #[arg(long, global = true, env = "PORTCULLIS_DATA_DIR", default_value = "portcullis-data")]
    pub data_dir: PathBuf,
    /// Print the API's JSON result instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// For an https:// --api: the CA certificate(s) (PEM) that issued the admin listener's certificate; the
    /// public web roots without it.
    #[arg(long, global = true, env = "PORTCULLIS_API_CA", value_name = "FILE")]
    pub api_ca: Option<PathBuf>,
    /// For an https:// --api that requires a client certificate (serve --admin-client-ca): the certificate chain
    /// (PEM, leaf first).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_API_CERT",
        requires = "api_key",
        value_name = "FILE"
    )]
    pub api_cert: Option<PathBuf>,
    /// The key of --api-cert (PEM).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_API_KEY",
        requires = "api_cert",
        value_name = "FILE"
    )]
    pub api_key: Option<PathBuf>,
}

/// How requests reach the admin API.
enum Transport {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<portcullis_proxy::origin_tls::HttpsConnector, Full<Bytes>>),
}

impl Transport {
    fn for_args(args: &ApiArgs, base: &str) -> anyhow::Result<Transport> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        if base.starts_with("http://") {
            // --api-ca and --api-cert (perhaps from the environment, set for a remote server) have nothing to do here.
            return Ok(Transport::Plain(Client::builder(TokioExecutor::new()).build(connector)));
        }
        if !base.starts_with("https://") {
            bail!("--api must be an http:// or https:// URL, not {base:?}");
        }
        let ca = match &args.api_ca {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("reading --api-ca {}", path.display()))?),
            None => None,
        };
        let identity = match (&args.api_cert, &args.api_key) {
            (Some(cert), Some(key)) => Some(identity(cert, key)?),
            _ => None,
        };
        let tls = portcullis_proxy::OriginTls::with_identity(ca.as_deref(), true, false, identity)
            .context("the TLS settings for --api")?;
        let https = portcullis_proxy::origin_tls::HttpsConnector::new(connector, &tls, Duration::from_secs(10));
        Ok(Transport::Tls(Client::builder(TokioExecutor::new()).build(https)))
    }

    /// What a failed request says, before its cause.
    fn unreachable(&self) -> &'static str {
        match self {
            Transport::Plain(_) => "cannot reach the admin API (is `portcullis serve` running?)",
            Transport::Tls(_) => {
                "cannot reach the admin API over TLS (is `portcullis serve` running? Does --api-ca name the CA of its \
                 certificate, and --api-cert/--api-key one its --admin-client-ca trusts?)"
            }
        }
    }

    async fn request(&self, req: Request<Full<Bytes>>) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        Ok(match self {
            Transport::Plain(client) => client.request(req).await?,
            Transport::Tls(client) => client.request(req).await?,
        })
    }
}

/// The client certificate presented to an admin listener that requires one.
fn identity(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<portcullis_proxy::OriginIdentity> {
    let (chain, key) = crate::admin_tls::read_pem_pair(cert, key).context("--api-cert and --api-key")?;
    Ok(portcullis_proxy::OriginIdentity {
        id: "cli".to_owned(),
        chain,
        key,
    })
}

/// A connected client.
pub struct ApiClient {
    base: String,
    /// The token, or why there is none.
    token: Result<String, String>,
    http: Transport,
    /// With [`ApiClient::hold_warnings`]: per zone id, the warnings of the latest write that answers with them,
    /// printed by [`ApiClient::print_held_warnings`] instead of after each write.
    held: Option<std::sync::Mutex<std::collections::BTreeMap<String, Vec<String>>>>,
}

/// A successful response: the envelope's `result` and `result_info`.
pub struct ApiResponse {
    pub result: Value,
    pub result_info: Option<Value>,
}

impl ApiClient {
    pub fn new(args: &ApiArgs) -> anyhow::Result<ApiClient> {
        let base = args.api.trim_end_matches('/').to_owned();
        let http = Transport::for_args(args, &base)?;
        // A missing token is reported by the first call that needs one: public paths (`get_raw`) do not.
        let token = match &args.token {
            Some(token) => Ok(token.trim().to_owned()),
            None => {
                let path = args.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .map(|text| text.trim().to_owned())
                    .map_err(|err| {
                        format!(
                            "no --token or PORTCULLIS_TOKEN, and cannot read {}: {err}",
                            path.display()
                        )
                    })
            }
        };
        Ok(ApiClient {
            base,
            token,
            http,
            held: None,
        })
    }

    /// Holds the API's warnings instead of printing them after each write: for a series of writes (`apply`), whose
    /// states on the way would be warned about although the last one is right. Each zone's latest warnings describe
    /// it as it is after the series.
    pub fn hold_warnings(mut self) -> ApiClient {
        self.held = Some(Default::default());
        self
    }

    /// Prints the held warnings (each once).
    pub fn print_held_warnings(&self) {
        let Some(held) = &self.held else { return };
        let held = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut seen = std::collections::BTreeSet::new();
        for text in held.values().flatten() {
            if seen.insert(text) {
                eprintln!("warning: {text}");
            }
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<ApiResponse> {
        self.call(Method::GET, path, None).await
    }

    pub async fn send(&self, method: Method, path: &str, body: &Value) -> anyhow::Result<ApiResponse> {
        self.call(method, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<ApiResponse> {
        self.call(Method::DELETE, path, None).await
    }

    /// GETs `path` at the server's root (not under `/client/v4`), without a token, and returns the body's bytes:
    /// for public files such as `/crl/<ca-id>.crl`.
    pub async fn get_raw(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let req = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .body(Full::new(Bytes::new()))
            .with_context(|| format!("building the request to {url}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), self.http.request(req))
            .await
            .map_err(|_| anyhow!("GET {url}: no answer within 60 s"))?
            .with_context(|| format!("GET {url}: {}", self.http.unreachable()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("GET {url}: reading the answer"))?
            .to_bytes();
        if !status.is_success() {
            let envelope: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(ApiFailure::from_envelope(status.as_u16(), &envelope, &format!("GET {path}")).into());
        }
        Ok(bytes.to_vec())
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<ApiResponse> {
        let token = self.token.as_ref().map_err(|why| anyhow!("{why}"))?;
        let url = format!("{}/client/v4{path}", self.base);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let payload = match body {
            Some(body) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .with_context(|| format!("building the request to {url}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), self.http.request(req))
            .await
            .map_err(|_| anyhow!("{method} {url}: no answer within 60 s"))?
            .with_context(|| format!("{method} {url}: {}", self.http.unreachable()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{method} {url}: reading the answer"))?;
        let envelope: Value = serde_json::from_slice(&bytes.to_bytes())
            .with_context(|| format!("{method} {url}: the answer (HTTP {status}) is not JSON"))?;
        if envelope["success"] != Value::Bool(true) {
            return Err(ApiFailure::from_envelope(status.as_u16(), &envelope, &format!("{method} {path}")).into());
        }
        // Warnings about what was just written (an mTLS setup that enforces nothing, say): it is in effect, but the
        // person who wrote it should hear of them.
        if method != Method::GET {
            let warnings = array(&envelope["messages"])
                .iter()
                .filter_map(|m| m["message"].as_str().map(str::to_owned));
            // Only these writes answer with the zone's warnings; the others' empty `messages` say nothing of it.
            let zone = path.strip_prefix("/zones/").and_then(|rest| {
                let (zone, rest) = rest.split_once('/')?;
                ["hostnames", "rulesets", "certificate_authorities"]
                    .iter()
                    .any(|p| rest.starts_with(p))
                    .then_some(zone)
            });
            match (&self.held, zone) {
                (Some(held), Some(zone)) => {
                    held.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(zone.to_owned(), warnings.collect());
                }
                (Some(_), None) => {}
                (None, _) => warnings.for_each(|text| eprintln!("warning: {text}")),
            }
        }
        Ok(ApiResponse {
            result: envelope["result"].clone(),
            result_info: envelope.get("result_info").cloned(),
        })
    }
}

/// An error the API answered with: its HTTP status and its errors' messages and codes. Commands that need to tell
/// "not found" from other failures downcast to it.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    message: String,
}

impl ApiFailure {
    fn from_envelope(status: u16, envelope: &Value, what: &str) -> ApiFailure {
        let errors = envelope["errors"].as_array().map_or(&[][..], Vec::as_slice);
        let messages: Vec<String> = errors
            .iter()
            .map(|e| {
                let message = e["message"].as_str().unwrap_or("?");
                // A multi-line message (a rule expression's caret diagnostic) keeps its lines exactly as sent: the
                // code goes after the first one.
                let (first, rest) = message.split_once('\n').unwrap_or((message, ""));
                let mut line = format!("{first} (code {})", e["code"]);
                if !rest.is_empty() {
                    line.push('\n');
                    line.push_str(rest.trim_end());
                }
                line
            })
            .collect();
        let message = if messages.is_empty() {
            format!("{what}: HTTP {status}")
        } else {
            messages.join("; ")
        };
        ApiFailure { status, message }
    }

    /// Whether `err` is the API saying that the object does not exist (HTTP 404).
    pub fn is_not_found(err: &anyhow::Error) -> bool {
        err.downcast_ref::<ApiFailure>().is_some_and(|f| f.status == 404)
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// Prints rows as aligned columns under a header.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        outln!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A string field of a JSON object, or "".
pub fn s(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Prints `value` as indented JSON (the `--json` output).
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The items of a JSON array, or none.
pub fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// The server's zones, all pages of them.
pub async fn zones(api: &ApiClient) -> anyhow::Result<Vec<Value>> {
    const PER_PAGE: usize = 1000;
    let mut all = Vec::new();
    for page in 1.. {
        let got = api
            .get(&format!("/zones?per_page={PER_PAGE}&page={page}"))
            .await?
            .result;
        let items = array(&got);
        all.extend_from_slice(items);
        if items.len() < PER_PAGE {
            break;
        }
    }
    Ok(all)
}

/// The zone of `zones` whose id or (case-insensitive) name is `wanted`.
pub fn zone_named(zones: &[Value], wanted: &str) -> anyhow::Result<Value> {
    let lower = wanted.to_ascii_lowercase();
    zones
        .iter()
        .find(|z| s(z, "id") == wanted || s(z, "name") == lower)
        .cloned()
        .with_context(|| format!("no zone {wanted:?}"))
}

/// The zone named by id or name, or else the only zone there is.
pub async fn zone_or_only(api: &ApiClient, zone: Option<&str>) -> anyhow::Result<Value> {
    let all = zones(api).await?;
    match zone {
        Some(wanted) => zone_named(&all, wanted),
        None => match <[Value; 1]>::try_from(all) {
            Ok([only]) => Ok(only),
            Err(all) if all.is_empty() => bail!("there is no zone yet; create one with `portcullis zone add NAME`"),
            Err(all) => bail!(
                "there are {} zones ({}); say which with --zone",
                all.len(),
                all.iter().map(|z| s(z, "name")).collect::<Vec<_>>().join(", ")
            ),
        },
    }
}

/// The account id, from `GET /accounts` (there is exactly one account).
pub async fn account_id(api: &ApiClient) -> anyhow::Result<String> {
    let accounts = api.get("/accounts").await?.result;
    array(&accounts)
        .first()
        .map(|a| s(a, "id"))
        .filter(|id| !id.is_empty())
        .context("the server lists no account")
}

/// A line such as `page 2 of 3 (20 of 45 certificates; more with --page)` from a list's `result_info`, when the list
/// has more than one page or a later page was asked for.
pub fn page_footer(info: Option<&Value>, noun: &str) -> Option<String> {
    let info = info?;
    let total_pages = info["total_pages"].as_u64()?;
    if total_pages <= 1 && info["page"].as_u64().unwrap_or(1) <= 1 {
        return None;
    }
    let page = info["page"].as_u64().unwrap_or(1);
    Some(format!(
        "page {page} of {total_pages} ({} of {} {noun}{})",
        info["count"].as_u64().unwrap_or(0),
        info["total_count"].as_u64().unwrap_or(0),
        if page < total_pages { "; more with --page" } else { "" }
    ))
}
