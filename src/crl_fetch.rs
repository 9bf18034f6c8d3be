//! Fetching uploaded CAs' CRLs from the URLs they are published at (`crl_urls`), so that revocations made in the
//! customer's own PKI (Vault, step-ca, AD CS…) reach the edge without anyone uploading a file: NGINX and HAProxy
//! read CRL files only, and need a reload for a new one.
//!
//! Every `--crl-refresh` seconds (and at once when a CA's URLs change) each CA's URLs are fetched, each answer must
//! be exactly one CRL, and the CRLs are checked exactly as an upload is (each signed by a certificate of the bundle,
//! one per certificate) and stored when they differ from the ones in use; the store's change feed then rebuilds every
//! node's snapshot. Someone who can tamper with a plain-HTTP answer can only replay CRLs the CA signed, and no replay
//! un-revokes anything: a CRL older than the one in use from the same CA is refused, and a fetch never removes a CRL
//! (one in use from a CA the answers no longer include is kept; only an upload replaces the whole set). A refused or
//! failed fetch is recorded as the CA's `crl_fetch_error`, and the last good CRLs stay in use. Every node of a fleet
//! fetches; only a change is written, and only if the CRLs are still those the check was made against. Not here:
//! OCSP, or URLs taken from certificates' CRL distribution points.

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_proxy::origin_tls::HttpsConnector;
use portcullis_store::Store;
use tokio::time::Instant;

/// Most bytes read from all of one CA's URLs together.
pub const MAX_CRL_BYTES: usize = 16 * 1024 * 1024;
/// A whole fetch (connect, TLS, response) may take this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// A failed fetch is tried again after this long (or the refresh period, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Fetches CRLs until the process ends.
pub async fn run(store: Store, refresh: Duration) {
    let mut fetcher = match Fetcher::new(store.clone(), refresh) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "CRL fetching is off: cannot set up the HTTPS client");
            return;
        }
    };
    let mut changes = store.subscribe();
    let mut tick = tokio::time::interval(refresh.min(Duration::from_secs(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        fetcher.round().await;
    }
}

struct Fetcher {
    store: Store,
    refresh: Duration,
    http: Client<HttpConnector, Empty<Bytes>>,
    https: Client<HttpsConnector, Empty<Bytes>>,
    /// Per CA: the URLs last fetched, when, and whether it worked.
    last: HashMap<String, (Vec<String>, Instant, bool)>,
}

impl Fetcher {
    fn new(store: Store, refresh: Duration) -> anyhow::Result<Fetcher> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let tls = portcullis_proxy::OriginTls::new(None, true, false)?;
        let https = HttpsConnector::new(connector.clone(), &tls, Duration::from_secs(10));
        Ok(Fetcher {
            store,
            refresh,
            http: Client::builder(TokioExecutor::new()).build(connector),
            https: Client::builder(TokioExecutor::new()).build(https),
            last: HashMap::new(),
        })
    }

    async fn round(&mut self) {
        let sources = match self.store.crl_sources().await {
            Ok(sources) => sources,
            Err(e) => {
                tracing::warn!(error = %e, "CRL fetching: cannot read the uploaded CAs");
                return;
            }
        };
        let now = Instant::now();
        self.last
            .retain(|id, _| sources.iter().any(|(source, _, _)| source == id));
        for (id, name, urls) in &sources {
            let due = match self.last.get(id) {
                None => true,
                Some((last_urls, at, ok)) => {
                    let wait = if *ok {
                        self.refresh
                    } else {
                        self.refresh.min(RETRY_AFTER_FAILURE)
                    };
                    last_urls != urls || now.duration_since(*at) >= wait
                }
            };
            if !due {
                continue;
            }
            let ca = match self.store.mtls_certificate(id).await {
                Ok(ca) => ca,
                Err(e) => {
                    tracing::warn!(ca = %id, error = %e, "CRL fetching: cannot read the CA");
                    continue;
                }
            };
            let result = self.fetch_checked(&ca.certificates, ca.crl.as_deref(), urls).await;
            let recorded = match &result {
                Ok(crls) => self.store.record_crl_fetch(id, urls, ca.crl.as_deref(), Ok(crls)).await,
                Err(e) => {
                    metrics::counter!("portcullis_crl_fetch_failures_total").increment(1);
                    tracing::warn!(ca = %id, name = %name, error = %e, "CRL fetch failed; the last CRLs stay in use");
                    self.store.record_crl_fetch(id, urls, ca.crl.as_deref(), Err(e)).await
                }
            };
            match recorded {
                Ok(true) => tracing::info!(ca = %id, name = %name, "fetched new CRLs"),
                Ok(false) => {}
                Err(e) => tracing::warn!(ca = %id, error = %e, "CRL fetching: cannot record the result"),
            }
            self.last
                .insert(id.clone(), (urls.clone(), Instant::now(), result.is_ok()));
        }
    }

    /// The CRLs from `urls` as PEM, checked against the CA's bundle (PEM) and against the CRLs in use (`in_use`),
    /// with those of the CRLs in use whose CA the answers do not include.
    async fn fetch_checked(&self, bundle: &str, in_use: Option<&[u8]>, urls: &[String]) -> Result<Vec<u8>, String> {
        let mut pem = String::new();
        let mut budget = MAX_CRL_BYTES;
        for url in urls {
            let body = self.fetch(url, budget).await.map_err(|e| format!("{url}: {e}"))?;
            budget = budget.saturating_sub(body.len());
            let der = one_crl(&body).map_err(|e| format!("{url}: {e}"))?;
            pem.push_str(&portcullis_pki::pem::encode("X509 CRL", &der));
        }
        let bundle = portcullis_pki::pem::certificates_from_pem_or_der(bundle.as_bytes())
            .map_err(|e| format!("the stored CA bundle: {e}"))?;
        let fetched = portcullis_pki::check_crls_for_bundle(&bundle, pem.as_bytes()).map_err(|e| e.to_string())?;
        if let Some(stored) = in_use
            && let Ok(in_use) = portcullis_pki::check_crls_for_bundle(&bundle, stored)
        {
            for old in &in_use {
                match fetched.iter().find(|new| new.issuer == old.issuer) {
                    Some(new) if new.this_update < old.this_update => {
                        return Err(format!(
                            "the CRL from {} is older than the one in use (thisUpdate {} < {}): refused",
                            new.issuer, new.this_update, old.this_update
                        ));
                    }
                    Some(_) => {}
                    // Not among the answers (a URL now serves another CA's CRL, or the URLs changed): keep it.
                    None => pem.push_str(&portcullis_pki::pem::encode("X509 CRL", &old.der)),
                }
            }
        }
        Ok(pem.into_bytes())
    }

    /// The body of `url`'s 200 answer, at most `limit` bytes.
    async fn fetch(&self, url: &str, limit: usize) -> Result<Bytes, String> {
        let uri: hyper::Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
        let request = hyper::Request::get(uri.clone())
            .header(
                hyper::header::USER_AGENT,
                concat!("portcullis/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let work = async {
            let response = match uri.scheme_str() {
                Some("https") => self.https.request(request).await,
                _ => self.http.request(request).await,
            }
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
            if response.status() != hyper::StatusCode::OK {
                return Err(format!("HTTP {}", response.status()));
            }
            Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| {
                    format!("reading the response: {e} (at most {MAX_CRL_BYTES} bytes for all of a CA's URLs)")
                })
        };
        tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .map_err(|_| format!("no complete answer within {} s", FETCH_TIMEOUT.as_secs()))?
    }
}

/// The one CRL an answer must be: PEM holding exactly one `X509 CRL` block and nothing else, or DER.
fn one_crl(body: &[u8]) -> Result<Vec<u8>, String> {
    match std::str::from_utf8(body) {
        Ok(text) if text.contains("-----BEGIN") => {
            let blocks = portcullis_pki::pem::parse_blocks(text).map_err(|e| e.to_string())?;
            match blocks.as_slice() {
                [one] if one.label == "X509 CRL" => Ok(one.der.clone()),
                _ => Err(format!(
                    "the answer must be exactly one CRL; it holds {}",
                    blocks.iter().map(|b| b.label.as_str()).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        _ => Ok(body.to_vec()),
    }
}

/// An error with its causes, `outer: inner: …` (hyper-util's own text says only "client error (Connect)").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
