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
}

/// A connected client.
pub struct ApiClient {
    base: String,
    token: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// A successful response: the envelope's `result` and `result_info`.
pub struct ApiResponse {
    pub result: Value,
    pub result_info: Option<Value>,
}

impl ApiClient {
    pub fn new(args: &ApiArgs) -> anyhow::Result<ApiClient> {
        let base = args.api.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            bail!("--api must be an http:// URL (the admin API listens on plain HTTP, normally on localhost)");
        }
        let token = match &args.token {
            Some(token) => token.trim().to_owned(),
            None => {
                let path = args.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| format!("no --token or PORTCULLIS_TOKEN, and cannot read {}", path.display()))?
                    .trim()
                    .to_owned()
            }
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(ApiClient { base, token, http })
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

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<ApiResponse> {
        let url = format!("{}/client/v4{path}", self.base);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
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
            .with_context(|| format!("{method} {url}: cannot reach the admin API (is `portcullis serve` running?)"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{method} {url}: reading the answer"))?;
        let envelope: Value = serde_json::from_slice(&bytes.to_bytes())
            .with_context(|| format!("{method} {url}: the answer (HTTP {status}) is not JSON"))?;
        if envelope["success"] != Value::Bool(true) {
            let messages: Vec<String> = envelope["errors"]
                .as_array()
                .map(|errors| {
                    errors
                        .iter()
                        .map(|e| format!("{} (code {})", e["message"].as_str().unwrap_or("?"), e["code"]))
                        .collect()
                })
                .unwrap_or_default();
            if messages.is_empty() {
                bail!("{method} {path}: HTTP {status}");
            }
            bail!("{}", messages.join("; "));
        }
        Ok(ApiResponse {
            result: envelope["result"].clone(),
            result_info: envelope.get("result_info").cloned(),
        })
    }
}

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
        println!("{}", out.trim_end());
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
