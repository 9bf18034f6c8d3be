//! EST (RFC 7030) for the managed CA: clients renew their own certificates, authenticated by the certificate they
//! renew, with no API token. `GET /.well-known/est/cacerts` gives the managed CAs (and the chains above them);
//! `POST /.well-known/est/simplereenroll` takes a CSR naming exactly what the client's current certificate names and
//! answers with a new certificate from the active managed CA (so renewing also moves clients onto a rotated CA).
//!
//! Who may renew: a client whose TLS certificate chains to a managed CA that is not retired, is valid, is on record
//! as active (not revoked) and is at least [`crate::AdminSettings::est_renew_after`] old; each certificate once (a
//! second renewal of the same certificate is refused, naming the one that replaced it). The new certificate keeps
//! the old one's validity, bounded by the zone's policy and the CA's and its chain's life, and its zone; the old one stays valid
//! (the device may not have installed the new one yet) until the new one renews in turn, which revokes it: a line
//! of renewals holds at most two active certificates. The zone's quota counts them.
//!
//! Not here: TLS (the binary's EST listener asks for client certificates and passes them in as
//! [`PeerCertificates`]); initial enrollment (`simpleenroll`), server-side key generation and CSR attributes, which
//! need an enrollment authorization EST leaves to each deployment: issue first certificates with the API.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use portcullis_pki::VerifierBuilder;
use portcullis_store::{Actor, ClientCertificateStatus, ManagedCaStatus};

use crate::AdminState;
use crate::certs::{issue_options, issuing_ca, stored, within_ca_life};

/// The TLS client's certificates (DER, its own first), as the listener received them.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<Vec<u8>>>);

/// Largest request body: a base64 CSR (an RSA-4096 one is about 2 KB).
const MAX_BODY: usize = 16 * 1024;

/// The EST routes, for the binary's EST listener.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/.well-known/est/cacerts", get(cacerts))
        .route("/.well-known/est/simplereenroll", post(simplereenroll))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        format!("{}\n", message.into()),
    )
        .into_response()
}

/// An API error told as EST tells errors: plain text.
fn api_refusal(e: crate::api::ApiError) -> Response {
    refuse(e.status, e.message)
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "EST request failed");
    refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// The certs-only PKCS#7 answer, base64 as RFC 7030 sends it.
fn pkcs7(certs: &[&[u8]]) -> Response {
    let body = base64::engine::general_purpose::STANDARD.encode(portcullis_pki::est::pkcs7_certs_only(certs));
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pkcs7-mime; smime-type=certs-only"),
            ),
            (
                header::HeaderName::from_static("content-transfer-encoding"),
                HeaderValue::from_static("base64"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The managed CAs that are not retired (the active one first) and the certificates above them, each once.
async fn cacerts(State(state): State<AdminState>) -> Response {
    let cas = match state.store.managed_cas().await {
        Ok(cas) => cas,
        Err(e) => return internal(e),
    };
    let mut ders: Vec<Vec<u8>> = Vec::new();
    for ca in cas.iter().filter(|ca| ca.status != ManagedCaStatus::Retired) {
        let text = format!("{}{}", ca.certificate, ca.chain);
        match portcullis_pki::pem::certificates_from_pem_or_der(text.as_bytes()) {
            Ok(certs) => {
                for der in certs {
                    if !ders.contains(&der) {
                        ders.push(der);
                    }
                }
            }
            Err(e) => return internal(format!("managed CA {}: {e}", ca.id)),
        }
    }
    pkcs7(&ders.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// A CSR as EST sends it: base64 of the DER (line breaks allowed); a PEM one is taken too.
fn csr_der(body: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the CSR is neither base64 nor PEM text".to_owned())?;
    if text.trim_start().starts_with("-----BEGIN") {
        return portcullis_pki::pem::single_from_pem_or_der(text.as_bytes(), "CERTIFICATE REQUEST")
            .or_else(|_| portcullis_pki::pem::single_from_pem_or_der(text.as_bytes(), "NEW CERTIFICATE REQUEST"))
            .map_err(|e| format!("the CSR: {e}"));
    }
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("the CSR is not base64 ({e})"))
}

async fn simplereenroll(
    State(state): State<AdminState>,
    peer: Option<axum::Extension<PeerCertificates>>,
    body: Bytes,
) -> Response {
    let Some(axum::Extension(PeerCertificates(chain))) = peer else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a re-enrollment needs the certificate it renews as the TLS client certificate",
        );
    };
    let Some(leaf) = chain.first() else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a re-enrollment needs the certificate it renews as the TLS client certificate",
        );
    };
    let now = OffsetDateTime::now_utc();

    // Trusted by a managed CA that is not retired, right now.
    let cas = match state.store.managed_cas().await {
        Ok(cas) => cas,
        Err(e) => return internal(e),
    };
    let mut anchors = VerifierBuilder::new();
    for ca in cas.iter().filter(|ca| ca.status != ManagedCaStatus::Retired) {
        if let Err(e) = anchors.add_anchors_pem_or_der(ca.certificate.as_bytes()) {
            return internal(format!("managed CA {}: {e}", ca.id));
        }
    }
    let presented: Vec<CertificateDer<'_>> = chain.iter().map(|d| CertificateDer::from(d.as_slice())).collect();
    let verdict = anchors.build().verify(&presented, now);
    if !verdict.is_trusted() {
        let why = verdict
            .reason
            .strip_prefix("FAILED:")
            .unwrap_or(&verdict.reason)
            .to_owned();
        return refuse(
            StatusCode::FORBIDDEN,
            format!("the client certificate is not one of a managed CA's that can be renewed: {why}"),
        );
    }
    let fingerprint: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let old = match state.store.client_certificate_by_fingerprint(&fingerprint).await {
        Ok(Some(old)) => old,
        Ok(None) => {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("no client certificate with fingerprint {fingerprint} is on record"),
            );
        }
        Err(e) => return internal(e),
    };
    if old.status != ClientCertificateStatus::Active {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("client certificate {} is {}, not active", old.id, old.status.as_str()),
        );
    }
    let age = now.unix_timestamp() - old.issued_on;
    let wait = state.settings.est_renew_after;
    if age < wait {
        let mut refused = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "client certificate {} was issued {age} s ago; it can be renewed {wait} s after issuance",
                old.id
            ),
        );
        if let Ok(after) = HeaderValue::from_str(&(wait - age).to_string()) {
            refused.headers_mut().insert(header::RETRY_AFTER, after);
        }
        return refused;
    }
    match state.store.client_certificate_renewed_by(&old.id).await {
        Ok(None) => {}
        Ok(Some(by)) => {
            return refuse(
                StatusCode::CONFLICT,
                format!(
                    "client certificate {} was already renewed, as {by}; renew that one",
                    old.id
                ),
            );
        }
        Err(e) => return internal(e),
    }

    let csr = match csr_der(&body) {
        Ok(csr) => csr,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = portcullis_pki::est::check_renewal_csr(&csr, leaf) {
        return refuse(StatusCode::BAD_REQUEST, e.to_string());
    }
    let issuing = match issuing_ca(&state).await {
        Ok(issuing) => issuing,
        Err(e) => return api_refusal(e),
    };
    let ca = &issuing.ca;
    let policy = match crate::cert_policy::ClientCertificatePolicy::of_zone(&state, &old.zone_id).await {
        Ok(policy) => policy,
        Err(e) => return api_refusal(e),
    };
    let days = u32::try_from(old.validity_days).unwrap_or(portcullis_pki::ca::DEFAULT_VALIDITY_DAYS);
    let days = policy.max_validity_days.map_or(days, |max| days.min(max));
    let days = match within_ca_life(&issuing, days, now) {
        Ok(days) => days,
        Err(e) => return api_refusal(e),
    };
    let options = issue_options(&state, ca, days, policy.allowed_names);
    let issued = match ca.issue_from_csr(&csr, &options, now) {
        Ok(issued) => issued,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let row = match stored(&issued.record, &old.zone_id) {
        Ok(row) => row,
        Err(e) => return api_refusal(e),
    };
    let actor = Actor::system();
    let superseded = match state
        .store
        .add_renewed_client_certificate(&old.id, &row, state.settings.client_certificate_quota, &actor)
        .await
    {
        Ok(superseded) => superseded,
        Err(portcullis_store::StoreError::Conflict(message)) => return refuse(StatusCode::CONFLICT, message),
        Err(portcullis_store::StoreError::LimitReached { message, .. }) => {
            return refuse(StatusCode::CONFLICT, message);
        }
        Err(other) => return internal(other),
    };
    tracing::info!(
        renewed = %old.id,
        new = %row.id,
        zone = %old.zone_id,
        revoked = superseded.as_deref().unwrap_or(""),
        "client certificate renewed over EST"
    );
    pkcs7(&[&issued.der])
}
