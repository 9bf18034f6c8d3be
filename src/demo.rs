//! `portcullis demo`: everything on embedded defaults in a fresh data directory — an echo origin, the hostname
//! `localhost` with mTLS and a revocation-aware rule on `/api`, a client certificate on disk — and the exact `curl`
//! commands that show 200 with the certificate, 403 without it, and 403 after `portcullis cert revoke`.
//!
//! The setup goes through the admin API, exactly as a user's own calls would.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use axum::Json;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};

use crate::client::{ApiArgs, ApiClient};
use crate::serve::{self, ServeArgs};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Data directory; a new one under the system's temporary directory by default.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the edge listener.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Address of the admin API.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    #[command(flatten)]
    pub limits: serve::LimitArgs,
}

/// The demo origin: answers every request with what it received, so the forwarded headers are visible.
async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> Json<Value> {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), json!(String::from_utf8_lossy(value.as_bytes()))))
        .collect();
    Json(
        json!({ "origin": "portcullis demo echo", "method": method.as_str(), "uri": uri.to_string(), "headers": headers }),
    )
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("portcullis-demo-{}", crate::serve::random_suffix())),
    };

    let origin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo origin")?;
    let origin_addr = origin.local_addr()?;
    tokio::spawn(async move { axum::serve(origin, axum::Router::new().fallback(echo)).await });

    let serve_args = ServeArgs {
        data_dir: data_dir.clone(),
        database_url: None,
        listen: vec![args.listen],
        default_host: Some("localhost".to_owned()),
        admin_listen: args.admin_listen,
        admin_tls_cert: None,
        admin_tls_key: None,
        admin_client_ca: None,
        est_listen: None,
        est_tls_cert: None,
        est_tls_key: None,
        est_renew_after: 3600,
        client_certificate_quota: 100_000,
        tidy_expired_after: 0,
        ca_limit: 100,
        crl_base_url: None,
        ocsp_base_url: None,
        public_listen: None,
        https_port: None,
        crl_refresh: 300,
        acme_directory: crate::acme::LETS_ENCRYPT.to_owned(),
        acme_contact: Vec::new(),
        acme_ca_file: None,
        acme_eab_kid: None,
        no_acme: false,
        limits: args.limits,
    };
    let running = serve::start(&serve_args).await?;
    let api_url = format!("http://{}", running.admin_addr);
    let api = ApiClient::new(&ApiArgs {
        api: api_url.clone(),
        token: None,
        data_dir: data_dir.clone(),
        json: false,
        api_ca: None,
        api_cert: None,
        api_key: None,
    })?;

    let zone = api
        .send(Method::POST, "/zones", &json!({ "name": "localhost" }))
        .await?
        .result;
    let zone_id = zone["id"].as_str().context("zone id")?.to_owned();
    api.send(
        Method::POST,
        &format!("/zones/{zone_id}/hostnames"),
        &json!({ "hostname": "localhost", "origin": format!("http://{origin_addr}"), "client_certificate_forwarding": "rfc9440" }),
    )
    .await?;
    api.send(
        Method::PUT,
        &format!("/zones/{zone_id}/certificate_authorities/hostname_associations"),
        &json!({ "hostnames": ["localhost"] }),
    )
    .await?;
    api.send(
        Method::PUT,
        &format!("/zones/{zone_id}/rulesets/phases/http_request_firewall_custom/entrypoint"),
        &json!({ "rules": [{
            "description": "mTLS-enforced authentication",
            "expression": "(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {\"/api\"}",
            "action": "block",
        }]}),
    )
    .await?;
    let cert = api
        .send(
            Method::POST,
            &format!("/zones/{zone_id}/client_certificates"),
            &json!({ "generate_key": { "type": "p256" }, "common_name": "demo-client", "organization": "Portcullis demo" }),
        )
        .await?
        .result;
    let cert_path = data_dir.join("demo-client.pem");
    let key_path = data_dir.join("demo-client.key");
    std::fs::write(&cert_path, cert["certificate"].as_str().context("certificate")?)
        .with_context(|| format!("writing {}", cert_path.display()))?;
    serve::write_private_file_replacing(
        &key_path,
        cert["private_key"].as_str().context("private key")?.as_bytes(),
    )?;
    let cert_id = cert["id"].as_str().context("certificate id")?;
    let account = api.get("/accounts").await?.result;
    let account_id = account[0]["id"].as_str().context("account id")?;
    let cas = api.get(&format!("/accounts/{account_id}/managed_ca")).await?.result;
    let ca_pem = cas[0]["certificate"].as_str().context("managed CA certificate")?;
    let ca_id = cas[0]["id"].as_str().context("managed CA id")?;
    let ca_path = data_dir.join("managed-ca.pem");
    std::fs::write(&ca_path, ca_pem).with_context(|| format!("writing {}", ca_path.display()))?;

    let port = running.edge_addr.port();
    let curl = format!(
        "curl --cacert {} --resolve localhost:{port}:{}",
        running.dev_ca_path.display(),
        running.edge_addr.ip()
    );
    let exe = std::env::current_exe().map_or_else(|_| "portcullis".to_owned(), |p| p.display().to_string());
    outln!();
    outln!(
        "Portcullis demo is running (Ctrl-C stops it). Data directory: {}",
        data_dir.display()
    );
    outln!(
        "  localhost → echo origin http://{origin_addr}; mTLS with the managed CA; rule: block /api without a valid, unrevoked certificate."
    );
    outln!();
    outln!("1. With the client certificate: 200, and the origin sees it in the Client-Cert header");
    outln!(
        "   {curl} --cert {} --key {} https://localhost:{port}/api",
        cert_path.display(),
        key_path.display()
    );
    outln!("2. Without a certificate: 403");
    outln!("   {curl} https://localhost:{port}/api");
    outln!("3. Paths the rule does not name stay open: 200");
    outln!("   {curl} https://localhost:{port}/");
    outln!("4. Revoke the certificate, then repeat 1: 403 at once");
    outln!(
        "   {exe} cert revoke {cert_id} --api {api_url} --data-dir {}",
        data_dir.display()
    );
    outln!(
        "   and to restore it: {exe} cert reactivate {cert_id} --api {api_url} --data-dir {}",
        data_dir.display()
    );
    let crl_path = data_dir.join("managed-ca.crl");
    outln!("5. What the edge computes for the certificate, offline (with the CA's CRL, so a revocation shows):");
    outln!(
        "   curl -s -o {} {api_url}/crl/{ca_id}.crl && {exe} cert inspect {} --ca {} --crl {}",
        crl_path.display(),
        cert_path.display(),
        ca_path.display(),
        crl_path.display()
    );
    outln!(
        "6. The dashboard, signed in with the token in {}:",
        data_dir.join("admin-token").display()
    );
    outln!("   http://{}/dashboard", running.admin_addr);
    running.wait().await
}
