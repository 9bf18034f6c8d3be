//! Asking uploaded CAs' OCSP responders about client certificates, once per certificate for as long as the answer
//! is valid, shared by every edge thread.
//!
//! A connection whose verified certificate comes from a CA with an OCSP policy waits, after its handshake and
//! before its first request, for the certificate's status: from the cache, or from the responder (one query per
//! certificate however many connections wait for it). Answers are cached until their `nextUpdate` (at most an
//! hour; five minutes without one), failures for ten seconds, so that a responder that is down is not asked by
//! every connection. What an answer means for the certificate (revoked; or, under a hard-fail policy, not
//! verified when no answer could be had) is applied by `conn`. Responders are reached over plain HTTP, as RFC 6960
//! A.1 describes and as nearly all are published: the answer is signed, which is what protects it. Not here:
//! checking intermediates, nonces, or OCSP stapling by clients (TLS clients cannot staple their own status).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use portcullis_pki::{OcspStatus, OcspTarget, RevocationReason};
use time::OffsetDateTime;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// The most certificates whose status is kept; the cache is swept of expired entries when it is full.
const MAX_CACHED: usize = 100_000;
/// How long an answer is kept at most, and without a `nextUpdate`.
const MAX_KEEP: Duration = Duration::from_secs(3600);
const KEEP_WITHOUT_NEXT_UPDATE: Duration = Duration::from_secs(300);
/// How long a failure (responder down, bad answer) is kept, so a dead responder is not asked by every connection.
const KEEP_FAILURE: Duration = Duration::from_secs(10);
/// How long a revocation is kept at most (until the certificate expires, within this).
const MAX_KEEP_REVOKED: Duration = Duration::from_secs(30 * 24 * 3600);

/// What the responder said about a certificate, or why nothing usable was had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcspOutcome {
    Good,
    Revoked,
    /// The responder does not know the certificate.
    Unknown,
    /// No verified answer: the error.
    Failed(String),
}

impl OcspOutcome {
    /// The label of `portcullis_ocsp_checks_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            OcspOutcome::Good => "good",
            OcspOutcome::Revoked => "revoked",
            OcspOutcome::Unknown => "unknown",
            OcspOutcome::Failed(_) => "failed",
        }
    }
}

struct Slot {
    answer: OnceCell<(OcspOutcome, Instant)>,
}

/// The process' OCSP cache and client.
pub struct OcspChecker {
    cache: Mutex<HashMap<Vec<u8>, Arc<Slot>>>,
    timeout: Duration,
}

impl std::fmt::Debug for OcspChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspChecker")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OcspChecker {
    /// A checker whose queries (connect, send, and the whole answer) take at most `timeout` each.
    pub fn new(timeout: Duration) -> OcspChecker {
        OcspChecker {
            cache: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// The status of `target`'s certificate: cached, or asked of the responder (waiting for a query already under
    /// way for the same certificate).
    pub async fn check(&self, target: &OcspTarget) -> OcspOutcome {
        let key = target.cache_key();
        let slot = {
            let Ok(mut cache) = self.cache.lock() else {
                return OcspOutcome::Failed("OCSP cache unavailable".into());
            };
            let now = Instant::now();
            let fresh = |slot: &Arc<Slot>| slot.answer.get().is_none_or(|(_, until)| *until > now);
            match cache.get(&key) {
                Some(slot) if fresh(slot) => slot.clone(),
                _ => {
                    if cache.len() >= MAX_CACHED {
                        cache.retain(|_, slot| fresh(slot));
                        if cache.len() >= MAX_CACHED {
                            cache.clear();
                        }
                    }
                    let slot = Arc::new(Slot {
                        answer: OnceCell::new(),
                    });
                    cache.insert(key, slot.clone());
                    slot
                }
            }
        };
        let (outcome, _) = slot
            .answer
            .get_or_init(|| async {
                let (outcome, keep) = self.query(target).await;
                metrics::counter!(crate::observe::OCSP_QUERIES_TOTAL, "outcome" => outcome.label()).increment(1);
                if let OcspOutcome::Failed(e) = &outcome {
                    tracing::warn!(
                        responder = target.url.as_deref().unwrap_or(""),
                        error = %e,
                        "OCSP query failed"
                    );
                }
                (outcome, Instant::now() + keep)
            })
            .await;
        outcome.clone()
    }

    /// One query and how long its outcome may be kept.
    async fn query(&self, target: &OcspTarget) -> (OcspOutcome, Duration) {
        let Some(url) = target.url.as_deref() else {
            return (
                OcspOutcome::Failed("the certificate names no OCSP responder and its CA sets none".into()),
                KEEP_FAILURE,
            );
        };
        let body = match tokio::time::timeout(self.timeout, fetch(url, &target.request)).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => return (OcspOutcome::Failed(e), KEEP_FAILURE),
            Err(_) => {
                return (
                    OcspOutcome::Failed(format!("no answer from {url} within {:?}", self.timeout)),
                    KEEP_FAILURE,
                );
            }
        };
        let now = OffsetDateTime::now_utc();
        match target.check_response(&body, now) {
            Ok(answer) => {
                let until = |t: OffsetDateTime| Duration::try_from(t - now).unwrap_or(Duration::ZERO);
                let keep = match answer.next_update {
                    Some(next) => until(next).min(MAX_KEEP),
                    None => KEEP_WITHOUT_NEXT_UPDATE,
                };
                match answer.status {
                    OcspStatus::Good => (OcspOutcome::Good, keep),
                    // A revocation is final, except a hold: it is kept until the certificate expires, so that a
                    // responder blocked later cannot have soft-fail accept the certificate again.
                    OcspStatus::Revoked { reason, .. } if reason != Some(RevocationReason::CertificateHold) => (
                        OcspOutcome::Revoked,
                        until(target.not_after).clamp(keep, MAX_KEEP_REVOKED),
                    ),
                    OcspStatus::Revoked { .. } => (OcspOutcome::Revoked, keep),
                    OcspStatus::Unknown => (OcspOutcome::Unknown, keep),
                }
            }
            Err(e) => (OcspOutcome::Failed(format!("{url}: {e}")), KEEP_FAILURE),
        }
    }
}

/// POSTs `request` to `url` (plain HTTP) and returns the answer's body.
async fn fetch(url: &str, request: &[u8]) -> Result<Bytes, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("OCSP responder URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("OCSP responder URL {url:?}: only http:// responders are asked"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("OCSP responder URL {url:?} has no host"))?
        .clone();
    let address = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.host()),
    };
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("cannot connect to the OCSP responder {address}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| format!("OCSP responder {address}: {e}"))?;
    let driver = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let post = http::Request::post(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/ocsp-request")
        .header(http::header::ACCEPT, "application/ocsp-response")
        .body(Full::new(Bytes::copy_from_slice(request)))
        .map_err(|e| format!("OCSP request: {e}"))?;
    let result = async {
        let response = sender
            .send_request(post)
            .await
            .map_err(|e| format!("OCSP responder {address}: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("OCSP responder {address} answered {}", response.status()));
        }
        Limited::new(response.into_body(), portcullis_pki::ocsp_check::MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("OCSP responder {address}: {e}"))
    }
    .await;
    driver.abort();
    result
}
