//! Bring-your-own CAs: `/accounts/{account_id}/mtls_certificates`, in Cloudflare's shape, plus the Portcullis
//! extension `PUT …/{id}/crl` (Cloudflare checks no CRLs for uploaded CAs; Portcullis does). The same store holds
//! client certificates with their keys (`"ca": false`, as Cloudflare's does for the Workers mTLS binding), which a
//! hostname presents to an `https://` origin that requires one (`origin_client_certificate`); their keys are sealed
//! with the master key and never shown again.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use portcullis_store::{Actor, MtlsCertificate, NewMtlsCertificate};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, ok, ok_all, ok_status};
use crate::certs::check_account;
use crate::time_fmt::rfc3339;
use crate::zones::IdOnly;

/// Cloudflare's `mtls_certificates` object, with the CRL state Portcullis adds.
#[derive(Debug, Serialize, ToSchema)]
pub struct MtlsCertificateView {
    pub id: String,
    pub name: String,
    pub ca: bool,
    pub certificates: String,
    pub issuer: String,
    pub serial_number: String,
    pub signature: String,
    pub expires_on: String,
    pub uploaded_on: String,
    pub updated_at: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the CRLs last changed, uploaded or fetched (Portcullis extension).
    pub crl_updated_on: Option<String>,
    /// Where the edge fetches this CA's CRLs from (Portcullis extension; empty: they are uploaded).
    pub crl_urls: Vec<String>,
    /// The last successful fetch from `crl_urls`.
    pub crl_fetched_on: Option<String>,
    /// Why the last fetch failed, until one succeeds (the last good CRLs stay in use).
    pub crl_fetch_error: Option<String>,
    /// OCSP checks of this CA's client certificates (Portcullis extension): `off`, `soft` or `hard`.
    pub ocsp_check: &'static str,
    /// The responder asked instead of the one each certificate names (`null`: that one).
    pub ocsp_responder: Option<String>,
    /// `null` (the default): a CRL past its `nextUpdate` stays in use. A number: seconds past it after which the
    /// edge trusts none of this CA's certificates, nor any while it has no CRL (Portcullis extension).
    pub crl_grace_seconds: Option<i64>,
}

fn view(cert: MtlsCertificate) -> MtlsCertificateView {
    MtlsCertificateView {
        id: cert.id,
        name: cert.name,
        ca: cert.ca,
        certificates: cert.certificates,
        issuer: cert.issuer,
        serial_number: cert.serial_number,
        signature: cert.signature,
        expires_on: rfc3339(cert.expires_on),
        uploaded_on: rfc3339(cert.uploaded_on),
        updated_at: rfc3339(cert.updated_at),
        kind: "custom",
        crl_updated_on: cert.crl_updated_on.map(rfc3339),
        crl_urls: cert.crl_urls,
        crl_fetched_on: cert.crl_fetched_on.map(rfc3339),
        crl_fetch_error: cert.crl_fetch_error,
        ocsp_check: match &cert.ocsp {
            None => "off",
            Some(p) if p.hard_fail => "hard",
            Some(_) => "soft",
        },
        ocsp_responder: cert.ocsp.and_then(|p| p.responder),
        crl_grace_seconds: cert.crl_grace_seconds,
    }
}

/// Upload body, as Cloudflare's.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadCa {
    /// `true`: a CA that issues your client certificates; `false`: a client certificate the edge presents to origins.
    pub ca: bool,
    /// PEM: the CA (intermediates after it, if any), or the client certificate then its intermediates.
    pub certificates: String,
    #[serde(default)]
    pub name: Option<String>,
    /// PEM: the client certificate's key (`"ca": false` only; a CA key is better kept elsewhere).
    #[serde(default)]
    pub private_key: Option<String>,
}

/// Upload a CA.
#[utoipa::path(post, path = "/accounts/{account_id}/mtls_certificates", tag = "mtls certificates",
    request_body = UploadCa,
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 201, description = "The stored CA", body = MtlsCertificateView)))]
pub async fn upload(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(account_id): Path<String>,
    ApiJson(body): ApiJson<UploadCa>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    if let Some(name) = &body.name {
        crate::api::check_text("name", name, crate::api::MAX_NAME_CHARS)?;
    }
    let key = body.private_key.as_deref().filter(|k| !k.trim().is_empty());
    if !body.ca {
        let key = key.ok_or_else(|| {
            ApiError::invalid(
                "a client certificate (\"ca\": false) needs its private_key: the edge presents it to origins",
            )
        })?;
        let identity = portcullis_pki::parse_client_identity(&body.certificates, key, OffsetDateTime::now_utc())
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let sealed =
            portcullis_pki::server::seal_client_key(&state.master_key, identity.leaf_der(), &identity.key_pkcs8);
        let stored = state
            .store
            .add_mtls_certificate(
                NewMtlsCertificate {
                    name: body.name.unwrap_or_default(),
                    ca: false,
                    certificates: identity.chain_pem.clone(),
                    issuer: identity.issuer.clone(),
                    serial_number: identity.serial_number.clone(),
                    signature: identity.signature.clone(),
                    expires_on: identity.expires_on.unix_timestamp(),
                    sealed_key: Some(sealed),
                },
                state.settings.mtls_certificate_limit,
                &actor,
            )
            .await?;
        return Ok(ok_status(StatusCode::CREATED, view(stored)));
    }
    if key.is_some() {
        return Err(ApiError::invalid(
            "private_key is not accepted with a CA: Portcullis needs only the CA certificate",
        ));
    }
    let name = body.name.unwrap_or_default();
    let uploaded = portcullis_pki::parse_ca_bundle(&body.certificates, &name, OffsetDateTime::now_utc())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let r = &uploaded.record;
    let expires_on = OffsetDateTime::parse(&r.expires_on, &Rfc3339)
        .map_err(ApiError::internal)?
        .unix_timestamp();
    let stored = state
        .store
        .add_mtls_certificate(
            NewMtlsCertificate {
                name: r.name.clone(),
                ca: true,
                certificates: r.certificates.clone(),
                issuer: r.issuer.clone(),
                serial_number: r.serial_number.clone(),
                signature: r.signature.clone(),
                expires_on,
                sealed_key: None,
            },
            state.settings.mtls_certificate_limit,
            &actor,
        )
        .await?;
    Ok(ok_status(StatusCode::CREATED, view(stored)))
}

/// List uploaded CAs.
#[utoipa::path(get, path = "/accounts/{account_id}/mtls_certificates", tag = "mtls certificates",
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The uploaded CAs", body = [MtlsCertificateView])))]
pub async fn list(State(state): State<AdminState>, Path(account_id): Path<String>) -> ApiResult {
    check_account(&state, &account_id).await?;
    let certs: Vec<_> = state
        .store
        .list_mtls_certificates()
        .await?
        .into_iter()
        .map(view)
        .collect();
    Ok(ok_all(certs))
}

/// Get an uploaded CA.
#[utoipa::path(get, path = "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}", tag = "mtls certificates",
    params(("account_id" = String, Path, description = "Account id"), ("mtls_certificate_id" = String, Path, description = "CA id")),
    responses((status = 200, description = "The CA", body = MtlsCertificateView)))]
pub async fn get(State(state): State<AdminState>, Path((account_id, id)): Path<(String, String)>) -> ApiResult {
    check_account(&state, &account_id).await?;
    Ok(ok(view(state.store.mtls_certificate(&id).await?)))
}

/// Delete an uploaded CA; refused while hostnames are associated with it.
#[utoipa::path(delete, path = "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}", tag = "mtls certificates",
    params(("account_id" = String, Path, description = "Account id"), ("mtls_certificate_id" = String, Path, description = "CA id")),
    responses((status = 200, description = "The deleted CA's id", body = IdOnly)))]
pub async fn delete(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    state.store.delete_mtls_certificate(&id, &actor).await?;
    Ok(ok(IdOnly { id }))
}

/// One service using a CA.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssociationView {
    /// Always `ssl_client_certificates`: hostname mTLS is the one service here.
    pub service: &'static str,
    pub status: &'static str,
    pub zone_id: String,
    pub hostname: String,
}

/// Where an uploaded CA is used.
#[utoipa::path(get, path = "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/associations", tag = "mtls certificates",
    params(("account_id" = String, Path, description = "Account id"), ("mtls_certificate_id" = String, Path, description = "CA id")),
    responses((status = 200, description = "The hostnames using the CA", body = [AssociationView])))]
pub async fn associations(
    State(state): State<AdminState>,
    Path((account_id, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    let list: Vec<_> = state
        .store
        .mtls_certificate_associations(&id)
        .await?
        .into_iter()
        .map(|a| AssociationView {
            service: "ssl_client_certificates",
            status: "active",
            zone_id: a.zone_id,
            hostname: a.hostname,
        })
        .collect();
    Ok(ok_all(list))
}

/// `PUT …/{id}/crl` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadCrl {
    /// The CRLs as PEM (one `-----BEGIN X509 CRL-----` block per CA of the bundle that has one: the root's, an
    /// intermediate's…), or one CRL as base64 DER.
    pub crl: String,
}

/// The CRLs' facts after upload: totals over all of them, and each one.
#[derive(Debug, Serialize, ToSchema)]
pub struct CrlView {
    pub mtls_certificate_id: String,
    /// Revoked certificates listed, in all CRLs.
    pub entries: usize,
    /// The oldest `thisUpdate`.
    pub this_update: String,
    /// The earliest `nextUpdate`: when the first CRL goes stale.
    pub next_update: Option<String>,
    pub crls: Vec<OneCrlView>,
}

/// One uploaded CRL.
#[derive(Debug, Serialize, ToSchema)]
pub struct OneCrlView {
    /// The CA that signed it (a certificate of the bundle), in Cloudflare's DN format.
    pub issuer: String,
    pub entries: usize,
    pub this_update: String,
    pub next_update: Option<String>,
}

/// Upload (replace) the CRLs of an uploaded CA bundle: each must be signed by a certificate of the bundle, one per
/// certificate at most.
#[utoipa::path(put, path = "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/crl", tag = "mtls certificates",
    request_body = UploadCrl,
    params(("account_id" = String, Path, description = "Account id"), ("mtls_certificate_id" = String, Path, description = "CA id")),
    responses((status = 200, description = "The accepted CRLs", body = CrlView)))]
pub async fn put_crl(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UploadCrl>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    let ca = uploaded_ca(&state, &id, "CRLs").await?;
    let bundle =
        portcullis_pki::pem::certificates_from_pem_or_der(ca.certificates.as_bytes()).map_err(ApiError::internal)?;
    let text = body.crl.trim();
    let bytes = if text.starts_with("-----BEGIN") {
        text.as_bytes().to_vec()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| ApiError::invalid("crl must be PEM (-----BEGIN X509 CRL-----) or base64 DER"))?
    };
    let crls = portcullis_pki::check_crls_for_bundle(&bundle, &bytes).map_err(|e| ApiError::invalid(e.to_string()))?;
    let stored: String = crls
        .iter()
        .map(|c| portcullis_pki::pem::encode("X509 CRL", &c.der))
        .collect();
    state
        .store
        .set_mtls_certificate_crl(&id, stored.as_bytes(), &actor)
        .await?;
    let fmt = |t: OffsetDateTime| rfc3339(t.unix_timestamp());
    Ok(ok(CrlView {
        mtls_certificate_id: id,
        entries: crls.iter().map(|c| c.entries).sum(),
        this_update: crls.iter().map(|c| c.this_update).min().map(fmt).unwrap_or_default(),
        next_update: crls.iter().filter_map(|c| c.next_update).min().map(fmt),
        crls: crls
            .iter()
            .map(|c| OneCrlView {
                issuer: c.issuer.clone(),
                entries: c.entries,
                this_update: fmt(c.this_update),
                next_update: c.next_update.map(fmt),
            })
            .collect(),
    }))
}

/// Most CRL URLs one CA may have.
pub const MAX_CRL_URLS: usize = 8;

/// `PUT …/{id}/crl_urls` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrlUrls {
    /// `http://` or `https://` URLs (public roots for https), one per CA of the bundle that publishes a CRL; empty
    /// stops fetching (the last CRLs stay until replaced).
    pub urls: Vec<String>,
}

/// Have the edge fetch an uploaded CA's CRLs from URLs, now and every `--crl-refresh` seconds (Portcullis
/// extension). Each fetch is checked like an upload; a CRL that fails to fetch or check is reported in
/// `crl_fetch_error` and the last good one stays in use.
#[utoipa::path(put, path = "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/crl_urls", tag = "mtls certificates",
    request_body = CrlUrls,
    params(("account_id" = String, Path, description = "Account id"), ("mtls_certificate_id" = String, Path, description = "CA id")),
    responses((status = 200, description = "The CA with its CRL URLs", body = MtlsCertificateView)))]
pub async fn put_crl_urls(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<CrlUrls>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    if body.urls.len() > MAX_CRL_URLS {
        return Err(ApiError::invalid(format!("at most {MAX_CRL_URLS} CRL URLs")));
    }
    let mut urls: Vec<String> = Vec::with_capacity(body.urls.len());
    for url in &body.urls {
        let url = check_crl_url(url).map_err(ApiError::invalid)?;
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    uploaded_ca(&state, &id, "CRLs").await?;
    state.store.set_mtls_crl_urls(&id, &urls, &actor).await?;
    Ok(ok(view(state.store.mtls_certificate(&id).await?)))
}

/// A certificate of an uploaded CA that the edge refuses as revoked (Portcullis extension).
#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationView {
    pub id: String,
    pub mtls_certificate_id: String,
    /// Upper hex, as `cf.tls_client_auth.cert_serial` shows it.
    pub serial_number: String,
    /// Its issuer (RFC 2253); `null`: issued by any certificate of this CA.
    pub issuer: Option<String>,
    /// SHA-256 of the certificate, lower hex, when it was given whole; for people (matching is by issuer and serial,
    /// which whoever holds the certificate cannot change, where an ECDSA signature, and so the fingerprint, can be
    /// re-encoded).
    pub fingerprint_sha256: Option<String>,
    pub note: String,
    pub created_on: String,
}

fn revocation_view(r: portcullis_store::MtlsRevocation) -> RevocationView {
    let some = |s: String| (!s.is_empty()).then_some(s);
    RevocationView {
        id: r.id,
        mtls_certificate_id: r.mtls_certificate_id,
        serial_number: r.serial_number.to_ascii_uppercase(),
        issuer: if r.issuer_der.is_empty() { None } else { Some(r.issuer) },
        fingerprint_sha256: some(r.fingerprint_sha256),
        note: r.note,
        created_on: rfc3339(r.created_on),
    }
}

/// `POST …/{id}/revocations` body: the certificate, or its serial number.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRevocation {
    /// The certificate to revoke (PEM or base64 DER); a certificate of this CA must have issued it. It may be an
    /// intermediate CA's, which revokes every certificate under it.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Or its serial number (hex, either case, `:` between bytes allowed, as `cf.tls_client_auth.cert_serial` and
    /// the security events show it), for a certificate issued directly by a certificate of this CA.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Why, for the record (at most 500 characters).
    #[serde(default)]
    pub note: String,
}

/// Revoke one certificate an uploaded CA issued, at the edge and at once (Portcullis extension): every edge node
/// refuses it as revoked (`cf.tls_client_auth.cert_revoked`; closed in the handshake on hostnames that require a
/// trusted certificate) from its next snapshot, without waiting for the CA's own CRL. Matched by issuer and serial
/// number. At most 10,000 per CA.
#[utoipa::path(post, path = "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/revocations", tag = "mtls certificates",
    request_body = NewRevocation,
    params(("account_id" = String, Path, description = "Account id"), ("mtls_certificate_id" = String, Path, description = "CA id")),
    responses((status = 200, description = "The revocation", body = RevocationView)))]
pub async fn add_revocation(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<NewRevocation>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    crate::api::check_text("note", &body.note, crate::api::MAX_DESCRIPTION_CHARS)?;
    let ca = uploaded_ca(&state, &id, "revocations").await?;
    let revocation = match (body.certificate.as_deref(), body.serial_number) {
        (Some(given), None) => {
            let bytes = if given.trim_start().starts_with("-----BEGIN") {
                given.as_bytes().to_vec()
            } else {
                let compact: String = given.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|_| ApiError::invalid("certificate must be PEM or base64 DER"))?
            };
            let issued = portcullis_pki::byoca::issued_certificate(&bytes, ca.certificates.as_bytes())
                .map_err(|e| ApiError::invalid(format!("certificate: {e}")))?;
            portcullis_store::NewMtlsRevocation {
                serial_number: portcullis_pki::hex_lower(&issued.serial),
                issuer_der: portcullis_pki::hex_lower(&issued.issuer),
                issuer: issued.issuer_text,
                fingerprint_sha256: portcullis_pki::hex_lower(&issued.fingerprint_sha256),
                note: body.note,
            }
        }
        (None, Some(serial)) => portcullis_store::NewMtlsRevocation {
            serial_number: serial,
            note: body.note,
            ..Default::default()
        },
        _ => {
            return Err(ApiError::invalid("give either certificate or serial_number"));
        }
    };
    let revocation = state.store.add_mtls_revocation(&id, &revocation, &actor).await?;
    Ok(ok(revocation_view(revocation)))
}

/// The certificates of an uploaded CA revoked at the edge, oldest first (Portcullis extension).
#[utoipa::path(get, path = "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/revocations", tag = "mtls certificates",
    params(("account_id" = String, Path, description = "Account id"), ("mtls_certificate_id" = String, Path, description = "CA id")),
    responses((status = 200, description = "The revocations", body = [RevocationView])))]
pub async fn list_revocations(
    State(state): State<AdminState>,
    Path((account_id, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    let list = state.store.mtls_revocations(&id).await?;
    Ok(ok_all(list.into_iter().map(revocation_view).collect()))
}

/// Take back a revocation: the certificate is trusted again (unless the CA's CRL lists it).
#[utoipa::path(delete, path = "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/revocations/{revocation_id}", tag = "mtls certificates",
    params(("account_id" = String, Path, description = "Account id"), ("mtls_certificate_id" = String, Path, description = "CA id"),
        ("revocation_id" = String, Path, description = "Revocation id")),
    responses((status = 200, description = "The removed revocation's id", body = IdOnly)))]
pub async fn delete_revocation(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id, revocation_id)): Path<(String, String, String)>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    state.store.delete_mtls_revocation(&id, &revocation_id, &actor).await?;
    Ok(ok(IdOnly { id: revocation_id }))
}

/// `PUT …/{id}/crl_grace` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrlGrace {
    /// `null` or absent: a CRL past its `nextUpdate` stays in use (the default: stale revocation data must not take
    /// the edge down). 0 to 2,592,000 (30 days): that many seconds past it, the edge trusts none of this CA's
    /// certificates until a newer CRL arrives, nor any while a certificate of the bundle on clients' paths (the CA
    /// that issued them and every CA above it in the bundle, the root included) has no CRL.
    pub grace_seconds: Option<i64>,
}

/// Choose whether this CA fails closed on stale CRLs (Portcullis extension; OpenSSL's, and so NGINX's and
/// HAProxy's, only behaviour is to fail closed at once). Refused paths read `FAILED:CRL has expired` or
/// `FAILED:unable to get certificate CRL`.
#[utoipa::path(put, path = "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/crl_grace", tag = "mtls certificates",
    request_body = CrlGrace,
    params(("account_id" = String, Path, description = "Account id"), ("mtls_certificate_id" = String, Path, description = "CA id")),
    responses((status = 200, description = "The CA with its CRL grace", body = MtlsCertificateView)))]
pub async fn put_crl_grace(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<CrlGrace>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    uploaded_ca(&state, &id, "CRL policies").await?;
    state.store.set_mtls_crl_grace(&id, body.grace_seconds, &actor).await?;
    Ok(ok(view(state.store.mtls_certificate(&id).await?)))
}

/// `PUT …/{id}/ocsp` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OcspSettings {
    /// `off`; `soft`: a certificate the responder says is revoked is revoked, and one without an answer (responder
    /// down, no responder, `unknown`) is accepted as the chain check found it; `hard`: one without a good answer
    /// is not verified.
    pub check: String,
    /// An `http://` responder to ask instead of the one each certificate names in its authority information
    /// access extension.
    #[serde(default)]
    pub responder: Option<String>,
}

/// Have the edge check this CA's client certificates with OCSP (Portcullis extension; NGINX's `ssl_ocsp`). A
/// connection waits for the answer after its handshake, before its first request; answers are cached until their
/// `nextUpdate` (at most an hour). A revoked certificate gets `cert_revoked`, as with a CRL; on hostnames that
/// refuse untrusted certificates in the handshake, its connection is closed.
#[utoipa::path(put, path = "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/ocsp", tag = "mtls certificates",
    request_body = OcspSettings,
    params(("account_id" = String, Path, description = "Account id"), ("mtls_certificate_id" = String, Path, description = "CA id")),
    responses((status = 200, description = "The CA with its OCSP settings", body = MtlsCertificateView)))]
pub async fn put_ocsp(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<OcspSettings>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    let hard_fail = match body.check.as_str() {
        "off" => None,
        "soft" => Some(false),
        "hard" => Some(true),
        other => {
            return Err(ApiError::invalid(format!(
                "check must be \"off\", \"soft\" or \"hard\" (got {other:?})"
            )));
        }
    };
    let responder = match body.responder.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => Some(check_ocsp_responder(url).map_err(ApiError::invalid)?),
    };
    if hard_fail.is_none() && responder.is_some() {
        return Err(ApiError::invalid(
            "a responder is set only with check \"soft\" or \"hard\"",
        ));
    }
    uploaded_ca(&state, &id, "OCSP checks").await?;
    let policy = hard_fail.map(|hard_fail| portcullis_pki::OcspPolicy { hard_fail, responder });
    state.store.set_mtls_ocsp(&id, policy.as_ref(), &actor).await?;
    Ok(ok(view(state.store.mtls_certificate(&id).await?)))
}

/// The uploaded CA `id`; refused if it is a client certificate, which has no `what` (for the error).
async fn uploaded_ca(state: &AdminState, id: &str, what: &str) -> Result<MtlsCertificate, ApiError> {
    let ca = state.store.mtls_certificate(id).await?;
    if !ca.ca {
        return Err(ApiError::invalid(format!(
            "mtls_certificate {id:?} is a client certificate; {what} belong to CAs"
        )));
    }
    Ok(ca)
}

/// A CRL URL as it will be fetched: `http://` or `https://`, with a host, no user or password, at most 2,048
/// bytes, no spaces.
pub fn check_crl_url(url: &str) -> Result<String, String> {
    check_url(url, "a CRL URL", &["http", "https"])
}

/// An OCSP responder URL as it will be asked: `http://` (RFC 6960 A.1; the answers are signed), with a host, no
/// user or password, at most 2,048 bytes.
pub fn check_ocsp_responder(url: &str) -> Result<String, String> {
    check_url(url, "an OCSP responder URL", &["http"])
}

/// `url` (`what`, for errors) with one of `schemes`, a host, no user or password, at most 2,048 bytes, no spaces.
fn check_url(url: &str, what: &str, schemes: &[&str]) -> Result<String, String> {
    let url = url.trim();
    if url.len() > 2048 {
        return Err(format!("{what} must be at most 2048 bytes"));
    }
    let uri: axum::http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if !uri.scheme_str().is_some_and(|s| schemes.contains(&s)) {
        let allowed: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        return Err(format!("{url:?}: {what} must start with {}", allowed.join(" or ")));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{url:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("{url:?}: a user or password in {what} is not supported"));
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(url.to_owned())
}
