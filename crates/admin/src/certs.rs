//! Client certificates (`/zones/{zone_id}/client_certificates`), the managed CA (`/accounts/{account_id}/managed_ca`),
//! its CRL (`/crl/{ca_id}.crl`) and its OCSP responder (`/ocsp/{ca_id}`), the last two unauthenticated, for relying
//! parties.
//!
//! Issuance runs in `portcullis-pki` with the active managed CA, unsealed with the master key for the call and
//! dropped after it. CRLs and OCSP answers are signed with the CA as cached beside its CRL: unsealed once per CRL
//! build and kept until the CA is retired (the master key that opens it is in memory anyway). A generated private key
//! is returned once and never stored.

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use portcullis_pki::{
    CaParams, CertificateAuthorityRef, CertificateStatus, ClientCertificateRecord, CrlParams, GeneratedKeyRequest,
    IssueOptions, KeyType, ManagedCa, RevocationReason, RevokedEntry, StatusAction, SubjectAltNames, SubjectFields,
};
use portcullis_store::{Actor, ClientCertificate, ManagedCaStatus, NewManagedCa};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiJsonOrEmpty, ApiQuery, ApiResult, ResultInfo, ok, ok_all, ok_page, ok_status};
use crate::time_fmt::rfc3339;

/// How long a published CRL stays valid; clients re-fetch before then, and every revocation makes a new one.
const CRL_VALIDITY: time::Duration = time::Duration::days(7);
/// A CRL nothing changed is rebuilt after this long, so that a quiet CA's CRL never reaches its `nextUpdate`
/// (relying parties that enforce it, NGINX and HAProxy among them, refuse every certificate once it passes).
const CRL_REFRESH: time::Duration = time::Duration::days(1);

/// Whether a CRL built at `built_at` with the store at `built_generation` may still be served.
fn crl_is_current(built_generation: u64, built_at: OffsetDateTime, generation: u64, now: OffsetDateTime) -> bool {
    built_generation == generation && now >= built_at && now - built_at < CRL_REFRESH
}

/// The active managed CA, unsealed, as it issues.
pub(crate) struct Issuing {
    pub(crate) ca: ManagedCa,
    /// The certificates a client presents above its own: the CA's and, when the operator's CA signed it, the
    /// intermediates of its chain (not the root, which relying parties already hold).
    pub(crate) above: Vec<Vec<u8>>,
    /// When the first of the CA's certificate and its chain expires.
    pub(crate) expires: OffsetDateTime,
}

pub(crate) async fn issuing_ca(state: &AdminState) -> Result<Issuing, ApiError> {
    let stored = state
        .store
        .active_managed_ca()
        .await?
        .ok_or_else(|| ApiError::conflict("there is no managed CA yet; start the server once to create it"))?;
    let ca = unseal(state, &stored)?;
    let mut above = vec![ca.certificate_der().to_vec()];
    let mut expires = ca.not_after();
    if !stored.chain.is_empty() {
        let mut chain =
            portcullis_pki::pem::certificates_from_pem_or_der(stored.chain.as_bytes()).map_err(ApiError::internal)?;
        for der in &chain {
            expires = expires.min(portcullis_pki::certificate_not_after(der).map_err(ApiError::internal)?);
        }
        chain.pop();
        above.extend(chain);
    }
    Ok(Issuing { ca, above, expires })
}

/// `days`, or fewer so that a certificate issued `now` does not outlive the CA or the chain above it; refused when
/// less than a day is left.
pub(crate) fn within_ca_life(issuing: &Issuing, days: u32, now: OffsetDateTime) -> Result<u32, ApiError> {
    let left = u32::try_from((issuing.expires - now).whole_days()).unwrap_or(0);
    if left == 0 {
        return Err(ApiError::conflict(format!(
            "the managed CA {} (or the chain above it) expires in less than a day: rotate it (`portcullis ca \
             rotate` or `ca request`)",
            issuing.ca.id()
        )));
    }
    Ok(days.min(left))
}

/// How `ca` issues: `validity_days`, the zone's `allowed_names`, and the CRL and OCSP URLs the server names.
pub(crate) fn issue_options(
    state: &AdminState,
    ca: &ManagedCa,
    validity_days: u32,
    allowed_names: Vec<String>,
) -> IssueOptions {
    IssueOptions {
        validity_days,
        allowed_names,
        crl_distribution_point: state
            .settings
            .crl_base_url
            .as_ref()
            .map(|base| format!("{}/crl/{}.crl", base.trim_end_matches('/'), ca.id())),
        ocsp_url: state
            .settings
            .ocsp_base_url
            .as_ref()
            .map(|base| format!("{}/ocsp/{}", base.trim_end_matches('/'), ca.id())),
    }
}

/// Why `wanted` cannot issue, naming the CA that can.
async fn not_issuing(state: &AdminState, wanted: &str, active: &str) -> Result<String, ApiError> {
    let managed = state.store.managed_cas().await?;
    if let Some(ca) = managed.iter().find(|ca| ca.id == wanted) {
        let status = match ca.status {
            ManagedCaStatus::Active => "active",
            ManagedCaStatus::Trusted => "trusted (replaced by a rotation)",
            ManagedCaStatus::Retired => "retired",
        };
        return Ok(format!(
            "managed CA {wanted} is {status} and no longer issues; the active managed CA is {active}"
        ));
    }
    let uploaded = match state.store.mtls_certificate(wanted).await {
        Ok(_) => true,
        Err(portcullis_store::StoreError::NotFound { .. }) => false,
        Err(err) => return Err(err.into()),
    };
    if uploaded {
        return Ok(format!(
            "{wanted} is a CA you uploaded: Portcullis holds no key for it, so issue its certificates with your own \
             CA; the managed CA that issues here is {active}"
        ));
    }
    Ok(format!(
        "certificate authority {wanted:?} not found; the active managed CA is {active}"
    ))
}

fn unseal(state: &AdminState, stored: &portcullis_store::ManagedCa) -> Result<ManagedCa, ApiError> {
    let key_type: KeyType = stored.key_type.parse().map_err(ApiError::internal)?;
    let der = portcullis_pki::pem::single_from_pem_or_der(stored.certificate.as_bytes(), "CERTIFICATE")
        .map_err(ApiError::internal)?;
    ManagedCa::from_sealed(&stored.id, key_type, &der, &stored.sealed_key, &state.master_key).map_err(|err| {
        ApiError::internal(format!(
            "cannot unseal managed CA {} (wrong master key?): {err}",
            stored.id
        ))
    })
}

fn unix(text: &str) -> Result<i64, ApiError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(ApiError::internal)
}

/// The store's row for a record pki issued.
pub(crate) fn stored(record: &ClientCertificateRecord, zone_id: &str) -> Result<ClientCertificate, ApiError> {
    Ok(ClientCertificate {
        id: record.id.clone(),
        zone_id: zone_id.to_owned(),
        ca_id: record.certificate_authority.id.clone(),
        certificate: record.certificate.clone(),
        csr: record.csr.clone(),
        common_name: record.common_name.clone(),
        country: record.country.clone(),
        state: record.state.clone(),
        location: record.location.clone(),
        organization: record.organization.clone(),
        organizational_unit: record.organizational_unit.clone(),
        ski: record.ski.clone(),
        serial_number: record.serial_number.clone(),
        fingerprint_sha256: record.fingerprint_sha256.clone(),
        signature: record.signature.clone(),
        issued_on: unix(&record.issued_on)?,
        expires_on: unix(&record.expires_on)?,
        validity_days: i64::from(record.validity_days),
        status: record.status,
        revoked_on: None,
    })
}

/// Cloudflare's record for a stored certificate.
async fn record(state: &AdminState, cert: ClientCertificate) -> Result<ClientCertificateRecord, ApiError> {
    let cas = state.store.managed_cas().await?;
    Ok(record_with(&cas, cert))
}

/// As [`record`], with the managed CAs already read (a page of certificates reads them once).
fn record_with(cas: &[portcullis_store::ManagedCa], cert: ClientCertificate) -> ClientCertificateRecord {
    let ca_name = cas
        .iter()
        .find(|ca| ca.id == cert.ca_id)
        .map(|ca| ca.name.clone())
        .unwrap_or_default();
    ClientCertificateRecord {
        id: cert.id,
        certificate: cert.certificate,
        csr: cert.csr,
        common_name: cert.common_name,
        country: cert.country,
        state: cert.state,
        location: cert.location,
        organization: cert.organization,
        organizational_unit: cert.organizational_unit,
        ski: cert.ski,
        serial_number: cert.serial_number,
        fingerprint_sha256: cert.fingerprint_sha256,
        signature: cert.signature,
        issued_on: rfc3339(cert.issued_on),
        expires_on: rfc3339(cert.expires_on),
        status: cert.status,
        validity_days: u32::try_from(cert.validity_days).unwrap_or(0),
        certificate_authority: CertificateAuthorityRef {
            id: cert.ca_id,
            name: ca_name,
        },
    }
}

/// Key generation request (Portcullis extension).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateKey {
    /// `p256` (default), `p384`, `rsa2048` or `rsa3072`.
    #[serde(rename = "type", default = "default_key_type")]
    pub key_type: String,
}

fn default_key_type() -> String {
    "p256".to_owned()
}

/// `POST /zones/{zone_id}/client_certificates` body: Cloudflare's `{csr, validity_days}`, or (extension)
/// `generate_key` with subject fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClientCertificate {
    /// PEM CSR; its subject and SANs are copied.
    pub csr: Option<String>,
    /// 1 to 5,475; 3,650 by default, or the zone policy's max_validity_days when shorter, and shortened to end, in
    /// whole days, before the managed CA or the chain above it expires (a validity asked for that would outlive
    /// them is refused).
    pub validity_days: Option<u32>,
    pub generate_key: Option<GenerateKey>,
    pub common_name: Option<String>,
    pub country: Option<String>,
    pub state: Option<String>,
    pub location: Option<String>,
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    /// SANs for a generated key: `{"dns": [...], "uri": [...], "email": [...], "ip": [...]}`.
    #[schema(value_type = Option<Object>)]
    pub subject_alt_names: Option<SubjectAltNames>,
    /// With a generated key: also return a PKCS#12 bundle (base64) protected by this password.
    pub pkcs12_password: Option<String>,
    /// Portcullis extension: the managed CA the caller expects to issue. Only the active managed CA issues; naming
    /// another one (replaced by a rotation, or a bring-your-own CA, whose key Portcullis never holds) is refused
    /// rather than silently issuing from a different CA.
    pub certificate_authority_id: Option<String>,
}

/// The created certificate: Cloudflare's record, plus the generated key and bundle when Portcullis made the key.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedCertificate {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub record: ClientCertificateRecord,
    /// PKCS#8 PEM; shown once, never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// PKCS#12 (base64), when `pkcs12_password` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkcs12: Option<String>,
}

/// Issue a client certificate.
#[utoipa::path(post, path = "/zones/{zone_id}/client_certificates", tag = "client certificates",
    request_body = CreateClientCertificate,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 201, description = "The certificate (and a generated key, once)", body = CreatedCertificate)))]
pub async fn create_client_certificate(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<CreateClientCertificate>,
) -> ApiResult {
    state.store.zone(&zone_id).await?;
    let issuing = issuing_ca(&state).await?;
    let ca = &issuing.ca;
    if let Some(wanted) = body.certificate_authority_id.as_deref().filter(|id| *id != ca.id()) {
        return Err(ApiError::invalid(not_issuing(&state, wanted, ca.id()).await?));
    }
    let policy = crate::cert_policy::ClientCertificatePolicy::of_zone(&state, &zone_id).await?;
    let now = OffsetDateTime::now_utc();
    let mut validity_days = policy.validity(body.validity_days)?;
    if let Some(days) = body.validity_days
        && issuing.expires < ca.not_after()
        && now + time::Duration::days(i64::from(days)) > issuing.expires
    {
        // The CA itself is checked where the certificate is made; a certificate of the chain above it can expire
        // first, and relying parties that trust the root would then refuse the certificate.
        return Err(ApiError::invalid(format!(
            "validity_days {days} would outlive the chain above the managed CA, whose first certificate expires on {}",
            rfc3339(issuing.expires.unix_timestamp())
        )));
    }
    if body.validity_days.is_none() {
        // The default shortens to the CA's own life (a CA your root signed may live a year, not ten); a validity
        // asked for is never shortened, and is refused if the CA would expire first.
        validity_days = within_ca_life(&issuing, validity_days, now)?;
    }
    let options = issue_options(&state, ca, validity_days, policy.allowed_names);
    let subject_given = [
        &body.common_name,
        &body.country,
        &body.state,
        &body.location,
        &body.organization,
    ]
    .iter()
    .any(|f| f.is_some())
        || body.organizational_unit.is_some()
        || body.subject_alt_names.is_some();
    let (record, private_key, pkcs12) = match (&body.csr, &body.generate_key) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give either csr or generate_key, not both")),
        (None, None) => {
            return Err(ApiError::invalid(
                "csr is required (or, as a Portcullis extension, generate_key)",
            ));
        }
        (Some(csr), None) => {
            if subject_given || body.pkcs12_password.is_some() {
                return Err(ApiError::invalid(
                    "with a csr, the subject comes from the CSR: remove the subject fields and pkcs12_password",
                ));
            }
            let issued = ca
                .issue_from_csr(csr.as_bytes(), &options, now)
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            (issued.record, None, None)
        }
        (None, Some(generate)) => {
            let key_type: KeyType = generate
                .key_type
                .parse()
                .map_err(|e: portcullis_pki::PkiError| ApiError::invalid(e.to_string()))?;
            let request = GeneratedKeyRequest {
                key_type,
                subject: SubjectFields {
                    common_name: body.common_name.clone().unwrap_or_default(),
                    country: body.country.clone().unwrap_or_default(),
                    state: body.state.clone().unwrap_or_default(),
                    location: body.location.clone().unwrap_or_default(),
                    organization: body.organization.clone().unwrap_or_default(),
                    organizational_unit: body.organizational_unit.clone().unwrap_or_default(),
                },
                sans: body.subject_alt_names.clone().unwrap_or_default(),
            };
            let issued = ca
                .issue_with_generated_key(&request, &options, now)
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            let pkcs12 = match &body.pkcs12_password {
                Some(password) => {
                    let bundle = issued
                        .to_pkcs12(
                            password,
                            &issued.record.common_name,
                            &issuing.above.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                        )
                        .map_err(|e| ApiError::invalid(e.to_string()))?;
                    Some(base64::engine::general_purpose::STANDARD.encode(bundle))
                }
                None => None,
            };
            (
                issued.record.clone(),
                Some(String::clone(&issued.private_key_pem)),
                pkcs12,
            )
        }
    };
    let row = stored(&record, &zone_id)?;
    state
        .store
        .add_client_certificate(&row, state.settings.client_certificate_quota, &actor)
        .await?;
    Ok(ok_status(
        StatusCode::CREATED,
        CreatedCertificate {
            record,
            private_key,
            pkcs12,
        },
    ))
}

/// List filters and pages, as Cloudflare takes them.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `all` (default), `active`, `pending_revocation`, `pending_reactivation` or `revoked`.
    pub status: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    /// Portcullis extension: only certificates whose common name, organization, organizational unit, serial
    /// number, SHA-256 fingerprint or id contains this (ASCII case ignored; at most 256 bytes).
    pub search: Option<String>,
    /// Portcullis extension: only certificates that expire before this time (RFC 3339, or Unix seconds).
    pub expires_before: Option<String>,
    /// Portcullis extension: `expires_on` lists the soonest to expire first; `issued_on` (the default) the newest
    /// first.
    pub order: Option<String>,
}

/// Longest `search` a certificate list takes.
const MAX_SEARCH_BYTES: usize = 256;

/// List client certificates.
#[utoipa::path(get, path = "/zones/{zone_id}/client_certificates", tag = "client certificates",
    params(("zone_id" = String, Path, description = "Zone id"), ListQuery),
    responses((status = 200, description = "A page of certificates", body = [Object])))]
pub async fn list_client_certificates(
    State(state): State<AdminState>,
    Path(zone_id): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult {
    let status = match query.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(s.parse::<CertificateStatus>().map_err(|_| {
            ApiError::invalid(format!(
                "unknown status {s:?}: use all, active, pending_revocation, pending_reactivation or revoked"
            ))
        })?),
    };
    let per_page = query
        .per_page
        .or(query.limit)
        .unwrap_or(20)
        .clamp(1, portcullis_store::MAX_PER_PAGE);
    // `offset` skips exactly that many; `page` counts pages of `per_page`.
    let offset = match (query.page, query.offset) {
        (Some(page), _) => u64::from(page.max(1) - 1) * u64::from(per_page),
        (None, Some(offset)) => u64::from(offset),
        (None, None) => 0,
    };
    let page = u32::try_from(offset / u64::from(per_page) + 1).unwrap_or(u32::MAX);
    let search = query.search.as_deref().filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.len() > MAX_SEARCH_BYTES) {
        return Err(ApiError::invalid(format!("search is over {MAX_SEARCH_BYTES} bytes")));
    }
    let expires_before = match query.expires_before.as_deref() {
        None => None,
        Some(t) => Some(match t.parse::<i64>() {
            Ok(unix) => unix,
            Err(_) => OffsetDateTime::parse(t, &Rfc3339)
                .map(OffsetDateTime::unix_timestamp)
                .map_err(|_| {
                    ApiError::invalid(format!(
                        "expires_before {t:?} is neither an RFC 3339 time (2026-01-31T00:00:00Z) nor Unix seconds"
                    ))
                })?,
        }),
    };
    let by_expiry = match query.order.as_deref() {
        None | Some("issued_on") => false,
        Some("expires_on") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "unknown order {other:?}: use issued_on or expires_on"
            )));
        }
    };
    let filter = portcullis_store::ClientCertQuery {
        status,
        search,
        expires_before,
        by_expiry,
    };
    let (certs, total) = state
        .store
        .list_client_certificates(&zone_id, &filter, offset, per_page)
        .await?;
    let cas = state.store.managed_cas().await?;
    let records: Vec<_> = certs.into_iter().map(|cert| record_with(&cas, cert)).collect();
    let info = ResultInfo::new(page, per_page, records.len(), total);
    Ok(ok_page(records, info))
}

/// Get a client certificate.
#[utoipa::path(get, path = "/zones/{zone_id}/client_certificates/{client_certificate_id}", tag = "client certificates",
    params(("zone_id" = String, Path, description = "Zone id"), ("client_certificate_id" = String, Path, description = "Certificate id")),
    responses((status = 200, description = "The certificate", body = Object)))]
pub async fn get_client_certificate(
    State(state): State<AdminState>,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult {
    let cert = state.store.client_certificate(&zone_id, &id).await?;
    let renewed_from = state.store.client_certificate_renewed_from(&id).await?;
    let renewed_as = state.store.client_certificate_renewed_by(&id).await?;
    Ok(ok(WithRenewals {
        record: record(&state, cert).await?,
        renewed_from,
        renewed_as,
    }))
}

/// One certificate with its place in a line of EST renewals (Portcullis extensions; absent when none).
#[derive(Debug, Serialize)]
struct WithRenewals {
    #[serde(flatten)]
    record: ClientCertificateRecord,
    /// The certificate this one was issued to renew (`cert renew`, EST).
    #[serde(skip_serializing_if = "Option::is_none")]
    renewed_from: Option<String>,
    /// The certificate that renewed this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    renewed_as: Option<String>,
}

/// `PATCH` body. Cloudflare documents the call without one: no body, `{}` and `{"reactivate": true}` all
/// reactivate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchClientCertificate {
    /// `true` (the default) restores a revoked certificate.
    #[serde(default = "reactivate_by_default")]
    pub reactivate: bool,
}

fn reactivate_by_default() -> bool {
    true
}

impl Default for PatchClientCertificate {
    fn default() -> Self {
        PatchClientCertificate { reactivate: true }
    }
}

async fn change_status(state: &AdminState, zone_id: &str, id: &str, action: StatusAction, actor: &Actor) -> ApiResult {
    let current = state.store.client_certificate(zone_id, id).await?;
    let next = portcullis_pki::transition(current.status, action).map_err(|e| ApiError::conflict(e.to_string()))?;
    if action == StatusAction::Reactivate {
        // A revoked certificate brought back is a certificate the zone vouches for again: it must be one the zone's
        // policy would issue now (one issued before the policy, or revoked for breaking it, stays revoked).
        let policy = crate::cert_policy::ClientCertificatePolicy::of_zone(state, zone_id).await?;
        policy.allows_existing(&current.certificate, current.validity_days)?;
    }
    let updated = state
        .store
        .set_client_certificate_status_within_quota(
            zone_id,
            id,
            current.status,
            next,
            state.settings.client_certificate_quota,
            actor,
        )
        .await?;
    // Revoking a certificate whose key may be compromised leaves the rest of its line of renewals: say so. The
    // revocation is done by now, so a failed lookup only costs the warning.
    let mut messages = Vec::new();
    if action == StatusAction::Revoke {
        let store = &state.store;
        let active = |other: Option<String>| async move {
            let other = other?;
            let cert = store.client_certificate(zone_id, &other).await.ok()?;
            (cert.status == portcullis_store::ClientCertificateStatus::Active).then_some(other)
        };
        if let Some(successor) = active(store.client_certificate_renewed_by(id).await.ok().flatten()).await {
            messages.push(format!(
                "client certificate {id} was renewed over EST as {successor}, which stays active: revoke it too if \
                 this certificate's key may be compromised"
            ));
        }
        if let Some(predecessor) = active(store.client_certificate_renewed_from(id).await.ok().flatten()).await {
            messages.push(format!(
                "client certificate {id} renewed {predecessor} over EST, which stays active until it expires: \
                 revoke it too if the device's keys may be compromised"
            ));
        }
    }
    let messages = messages
        .into_iter()
        .map(|message| crate::api::ErrorItem {
            code: crate::mtls_check::WARNING_CODE,
            message,
        })
        .collect();
    Ok(crate::api::ok_with(
        StatusCode::OK,
        record(state, updated).await?,
        messages,
    ))
}

/// Reactivate a revoked certificate (takes effect at once).
#[utoipa::path(patch, path = "/zones/{zone_id}/client_certificates/{client_certificate_id}", tag = "client certificates",
    request_body = PatchClientCertificate,
    params(("zone_id" = String, Path, description = "Zone id"), ("client_certificate_id" = String, Path, description = "Certificate id")),
    responses((status = 200, description = "The certificate", body = Object)))]
pub async fn patch_client_certificate(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<PatchClientCertificate>,
) -> ApiResult {
    if !body.reactivate {
        return Err(ApiError::invalid(
            "the only change a PATCH makes is {\"reactivate\": true}",
        ));
    }
    change_status(&state, &zone_id, &id, StatusAction::Reactivate, &actor).await
}

/// Revoke a certificate (takes effect at once; the certificate stays listed and can be reactivated).
#[utoipa::path(delete, path = "/zones/{zone_id}/client_certificates/{client_certificate_id}", tag = "client certificates",
    params(("zone_id" = String, Path, description = "Zone id"), ("client_certificate_id" = String, Path, description = "Certificate id")),
    responses((status = 200, description = "The certificate", body = Object)))]
pub async fn revoke_client_certificate(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult {
    change_status(&state, &zone_id, &id, StatusAction::Revoke, &actor).await
}

/// A managed CA as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManagedCaView {
    pub id: String,
    pub name: String,
    /// `active` (issues), `trusted` (replaced but still accepted) or `retired`.
    pub status: String,
    pub key_type: String,
    /// PEM: give it to your origins or clients that want to verify what Portcullis issued.
    pub certificate: String,
    /// Who signed it (RFC 2253): itself, or your own CA (`portcullis ca request`).
    pub issuer: String,
    /// When the CA's certificate expires (RFC 3339).
    pub expires_on: String,
    /// When your own CA signed it: the certificates above it, PEM, its issuer first and the root last; empty for a
    /// self-signed CA.
    pub chain: String,
    pub created_on: String,
    /// Path of the CRL on the admin listener.
    pub crl_path: String,
}

pub(crate) fn ca_view(ca: portcullis_store::ManagedCa) -> ManagedCaView {
    let issuer = portcullis_pki::certificate_issuer(ca.certificate.as_bytes()).unwrap_or_default();
    let expires_on = portcullis_pki::certificate_not_after(ca.certificate.as_bytes())
        .map(|t| rfc3339(t.unix_timestamp()))
        .unwrap_or_default();
    ManagedCaView {
        issuer,
        expires_on,
        chain: ca.chain,
        crl_path: format!("/crl/{}.crl", ca.id),
        id: ca.id,
        name: ca.name,
        status: match ca.status {
            ManagedCaStatus::Active => "active",
            ManagedCaStatus::Trusted => "trusted",
            ManagedCaStatus::Retired => "retired",
        }
        .to_owned(),
        key_type: ca.key_type,
        certificate: ca.certificate,
        created_on: rfc3339(ca.created_on),
    }
}

pub(crate) async fn check_account(state: &AdminState, account_id: &str) -> Result<(), ApiError> {
    if state.store.account().await?.id == account_id {
        Ok(())
    } else {
        Err(ApiError::not_found("account", account_id))
    }
}

/// The managed CAs, newest first: the active one and any still trusted after a rotation.
#[utoipa::path(get, path = "/accounts/{account_id}/managed_ca", tag = "managed CA",
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The managed CAs", body = [ManagedCaView])))]
pub async fn list_managed_cas(State(state): State<AdminState>, Path(account_id): Path<String>) -> ApiResult {
    check_account(&state, &account_id).await?;
    let cas: Vec<_> = state.store.managed_cas().await?.into_iter().map(ca_view).collect();
    Ok(ok_all(cas))
}

/// `POST …/managed_ca/rotate` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateCa {
    /// `p256` (default), `p384`, `rsa2048`, `rsa3072` or `rsa4096`.
    pub key_type: Option<String>,
    /// Goes into the new CA's `O=`.
    pub organization: Option<String>,
}

/// Create a new managed CA that issues from now on; the previous one stays trusted until retired.
#[utoipa::path(post, path = "/accounts/{account_id}/managed_ca/rotate", tag = "managed CA",
    request_body = RotateCa,
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 201, description = "The new active CA", body = ManagedCaView)))]
pub async fn rotate_managed_ca(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(account_id): Path<String>,
    ApiJson(body): ApiJson<RotateCa>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    let key_type = match &body.key_type {
        Some(k) => k.parse::<KeyType>().map_err(|e| ApiError::invalid(e.to_string()))?,
        None => KeyType::P256,
    };
    let params = CaParams {
        organization: body.organization,
        key_type,
        ..CaParams::default()
    };
    let ca = ManagedCa::create(&params, OffsetDateTime::now_utc()).map_err(|e| ApiError::invalid(e.to_string()))?;
    let stored = state
        .store
        .add_managed_ca(
            NewManagedCa {
                id: ca.id().to_owned(),
                name: ca.name().to_owned(),
                certificate: ca.certificate_pem(),
                sealed_key: ca.sealed_key(&state.master_key),
                key_type: ca.key_type().as_str().to_owned(),
                chain: String::new(),
            },
            &actor,
        )
        .await?;
    Ok(ok_status(StatusCode::CREATED, ca_view(stored)))
}

/// Stop trusting a managed CA that a rotation replaced.
#[utoipa::path(delete, path = "/accounts/{account_id}/managed_ca/{ca_id}", tag = "managed CA",
    params(("account_id" = String, Path, description = "Account id"), ("ca_id" = String, Path, description = "Managed CA id")),
    responses((status = 200, description = "The retired CA", body = ManagedCaView)))]
pub async fn retire_managed_ca(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, ca_id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    state.store.retire_managed_ca(&ca_id, &actor).await?;
    let ca = state
        .store
        .managed_cas()
        .await?
        .into_iter()
        .find(|ca| ca.id == ca_id)
        .ok_or_else(|| ApiError::not_found("managed CA", &ca_id))?;
    Ok(ok(ca_view(ca)))
}

/// How long the public listener serves a CRL without asking the store whether it changed: anyone on the internet
/// may send CRL requests, and each check is a store read. The admin listener always checks.
const PUBLIC_CRL_FRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a CRL request waits for another one's store read or rebuild.
const CRL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The CRL of managed CA `{ca_id}`, DER (`application/pkix-crl`), without authentication: CRL distribution points
/// must be fetchable by anyone who verifies our certificates. It is rebuilt only after configuration changes.
pub async fn crl(State(state): State<AdminState>, Path(file): Path<String>) -> Response {
    crl_response(&state, &file, std::time::Duration::ZERO).await
}

/// [`crl`] for the public listener: a CRL checked against the store in the last [`PUBLIC_CRL_FRESH`] is served
/// as it is, so that a flood of requests never reaches the store (revocations reach it that much later).
pub async fn public_crl(State(state): State<AdminState>, Path(file): Path<String>) -> Response {
    crl_response(&state, &file, PUBLIC_CRL_FRESH).await
}

async fn crl_response(state: &AdminState, file: &str, fresh: std::time::Duration) -> Response {
    match crl_der(state, file, fresh).await {
        Ok(der) => (
            [
                (header::CONTENT_TYPE, "application/pkix-crl"),
                (header::CACHE_CONTROL, "max-age=60"),
            ],
            der,
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}

async fn crl_der(state: &AdminState, file: &str, fresh: std::time::Duration) -> Result<axum::body::Bytes, ApiError> {
    let ca_id = file
        .strip_suffix(".crl")
        // Managed CA ids are 32 lower-case hex digits; anything else is refused before the store is asked.
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .ok_or_else(|| ApiError::not_found("CRL", file))?;
    let recent = |cache: &crate::CrlCache| {
        cache
            .get(ca_id)
            .filter(|c| {
                c.checked_at.elapsed() < fresh
                    && crl_is_current(c.generation, c.built_at, c.generation, OffsetDateTime::now_utc())
            })
            .map(|c| c.der.clone())
    };
    let unknown = || {
        state
            .crl_known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(checked, ids)| checked.elapsed() < fresh && !ids.iter().any(|id| id == ca_id))
    };
    if let Some(der) = recent(&state.crl_cache.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(der);
    }
    if unknown() {
        return Err(ApiError::not_found("CRL", file));
    }
    // One store read or rebuild at a time; whoever waited may find the work done. A store that hangs makes CRL
    // requests fail, not pile up.
    let _building = tokio::time::timeout(CRL_WAIT, state.crl_build.lock())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::api::codes::UNAVAILABLE,
                "CRLs are being rebuilt; try again",
            )
        })?;
    if let Some(der) = recent(&state.crl_cache.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(der);
    }
    if unknown() {
        return Err(ApiError::not_found("CRL", file));
    }
    let generation = state.store.generation().await?;
    {
        let mut cache = state.crl_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = cache.get_mut(ca_id)
            && crl_is_current(
                cached.generation,
                cached.built_at,
                generation,
                OffsetDateTime::now_utc(),
            )
        {
            cached.checked_at = std::time::Instant::now();
            return Ok(cached.der.clone());
        }
    }
    let cas: Vec<_> = state
        .store
        .managed_cas()
        .await?
        .into_iter()
        .filter(|ca| ca.status != ManagedCaStatus::Retired)
        .collect();
    *state.crl_known.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((std::time::Instant::now(), cas.iter().map(|ca| ca.id.clone()).collect()));
    // A retired CA's CRL, and its unsealed key, leave the cache.
    state
        .crl_cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|id, _| cas.iter().any(|ca| ca.id == *id));
    let stored = cas
        .into_iter()
        .find(|ca| ca.id == ca_id)
        .ok_or_else(|| ApiError::not_found("CRL", file))?;
    let ca = unseal(state, &stored)?;
    let revoked = state
        .store
        .revoked_client_certificates(ca_id, OffsetDateTime::now_utc().unix_timestamp())
        .await?;
    let entries = revoked
        .iter()
        .map(|(serial, at)| {
            Ok(RevokedEntry {
                serial: portcullis_pki::hex_decode(serial)
                    .ok_or_else(|| ApiError::internal(format!("stored serial {serial:?} is not hex")))?,
                revoked_at: OffsetDateTime::from_unix_timestamp(*at).map_err(ApiError::internal)?,
                // A revocation can be undone (reactivation); RFC 5280 allows that for certificateHold only.
                reason: Some(RevocationReason::CertificateHold),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let number = state.store.next_crl_number(ca_id).await?;
    let now = OffsetDateTime::now_utc();
    let params = CrlParams {
        crl_number: u64::try_from(number).unwrap_or(0),
        this_update: now,
        next_update: now + CRL_VALIDITY,
    };
    let crl = ca.build_crl(&params, &entries).map_err(ApiError::internal)?;
    let der = axum::body::Bytes::copy_from_slice(crl.der());
    let revoked = entries
        .into_iter()
        .map(|e| {
            (
                e.serial.into_iter().skip_while(|b| *b == 0).collect(),
                (e.revoked_at, e.reason),
            )
        })
        .collect();
    state.crl_cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
        ca_id.to_owned(),
        crate::CachedCrl {
            generation,
            built_at: now,
            checked_at: std::time::Instant::now(),
            der: der.clone(),
            revoked: Arc::new(revoked),
            ca: Arc::new(ca),
        },
    );
    Ok(der)
}

/// How long an OCSP answer is valid (its `nextUpdate`): relying parties cache it that long, so a revocation reaches
/// them within this time (the edge itself refuses a revoked certificate at once).
const OCSP_VALIDITY: time::Duration = time::Duration::minutes(10);
/// How far `thisUpdate` is set back, for relying parties whose clocks run a little behind.
const OCSP_BACKDATE: time::Duration = time::Duration::minutes(1);

/// OCSP answers signed at once, each on a blocking thread so that signing (milliseconds with an RSA CA key) never
/// holds up the runtime; more wait, and past [`OCSP_WAIT`] get `tryLater`. Anyone may send OCSP requests.
pub(crate) const OCSP_SIGNING: usize = 2;
const OCSP_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// `POST /ocsp/{ca_id}` with a DER OCSP request (`application/ocsp-request`): the managed CA's OCSP responder,
/// without authentication, like its CRL. The answers are the CRL's: `revoked` for a serial it lists, `good` for
/// any other serial of this CA, `unknown` for another issuer's beside one of this CA's; a request only about other
/// issuers' certificates is `unauthorized` (RFC 5019 2.2.3), unsigned.
pub async fn ocsp_post(
    State(state): State<AdminState>,
    Path(ca_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    ocsp_response(&state, &ca_id, &body, std::time::Duration::ZERO).await
}

/// `GET /ocsp/{ca_id}/{request}`: the request base64-encoded (RFC 6960 A.1), then URL-encoded.
pub async fn ocsp_get(State(state): State<AdminState>, Path((ca_id, request)): Path<(String, String)>) -> Response {
    match decode_ocsp_get(&request) {
        Some(der) => ocsp_response(&state, &ca_id, &der, std::time::Duration::ZERO).await,
        None => ocsp_error(portcullis_pki::OcspError::MalformedRequest),
    }
}

/// [`ocsp_post`] for the public listener: revocations are read from a CRL checked in the last
/// [`PUBLIC_CRL_FRESH`], as its CRLs are.
pub async fn public_ocsp_post(
    State(state): State<AdminState>,
    Path(ca_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    ocsp_response(&state, &ca_id, &body, PUBLIC_CRL_FRESH).await
}

/// [`ocsp_get`] for the public listener.
pub async fn public_ocsp_get(
    State(state): State<AdminState>,
    Path((ca_id, request)): Path<(String, String)>,
) -> Response {
    match decode_ocsp_get(&request) {
        Some(der) => ocsp_response(&state, &ca_id, &der, PUBLIC_CRL_FRESH).await,
        None => ocsp_error(portcullis_pki::OcspError::MalformedRequest),
    }
}

/// The DER of a GET request's path segment: base64, standard or URL-safe, padded or not (the path was
/// percent-decoded already).
fn decode_ocsp_get(encoded: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    if encoded.len() > portcullis_pki::ocsp::MAX_REQUEST_BYTES * 4 / 3 + 4 {
        return None;
    }
    STANDARD
        .decode(encoded)
        .ok()
        .or_else(|| URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok())
}

/// A signed answer; caches may keep it a minute (it stays valid ten).
fn ocsp_der(der: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/ocsp-response"),
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        der,
    )
        .into_response()
}

/// An OCSP error status; never cached, since most are passing (`tryLater`) or about the request.
fn ocsp_error(error: portcullis_pki::OcspError) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/ocsp-response"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        error.response(),
    )
        .into_response()
}

async fn ocsp_response(state: &AdminState, ca_id: &str, request: &[u8], fresh: std::time::Duration) -> Response {
    use portcullis_pki::{OcspError, OcspStatus};
    // OCSP speaks in its own statuses: an unanswerable request is still HTTP 200 with one of them.
    let ids = match portcullis_pki::ocsp::parse_request(request) {
        Ok(ids) => ids,
        Err(_) => return ocsp_error(OcspError::MalformedRequest),
    };
    let (ca, revoked) = match revocations(state, ca_id, fresh).await {
        Ok(found) => found,
        // Not a managed CA of ours (or a retired one): nobody here may answer for it.
        Err(err) if err.status == StatusCode::NOT_FOUND => return ocsp_error(OcspError::Unauthorized),
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => return ocsp_error(OcspError::TryLater),
        Err(err) => {
            tracing::error!(error = %err.message, "OCSP: reading revocations failed");
            return ocsp_error(OcspError::InternalError);
        }
    };
    let mut answers = Vec::with_capacity(ids.len());
    let mut ours = false;
    for id in ids {
        let status = match ca.issued(&id) {
            Ok(true) => {
                ours = true;
                match revoked.get(&id.serial) {
                    Some((at, reason)) => OcspStatus::Revoked {
                        at: *at,
                        reason: *reason,
                    },
                    None => OcspStatus::Good,
                }
            }
            Ok(false) => OcspStatus::Unknown,
            Err(_) => return ocsp_error(OcspError::InternalError),
        };
        answers.push((id, status));
    }
    if !ours {
        // Nothing to sign for: this costs a flood of made-up requests no signature.
        return ocsp_error(OcspError::Unauthorized);
    }
    let Ok(Ok(permit)) = tokio::time::timeout(OCSP_WAIT, state.ocsp_signing.clone().acquire_owned()).await else {
        return ocsp_error(OcspError::TryLater);
    };
    let now = OffsetDateTime::now_utc();
    let signed = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        ca.ocsp_response(&answers, now - OCSP_BACKDATE, now + OCSP_VALIDITY)
    })
    .await;
    match signed {
        Ok(Ok(der)) => ocsp_der(der),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "OCSP: signing failed");
            ocsp_error(OcspError::InternalError)
        }
        Err(err) => {
            tracing::error!(error = %err, "OCSP: the signing task failed");
            ocsp_error(OcspError::InternalError)
        }
    }
}

/// The CRL's serials (magnitudes) with when and why each was revoked.
pub(crate) type Revocations = HashMap<Vec<u8>, (OffsetDateTime, Option<RevocationReason>)>;

/// The managed CA `ca_id` and its revoked serials, as its current CRL has them.
async fn revocations(
    state: &AdminState,
    ca_id: &str,
    fresh: std::time::Duration,
) -> Result<(Arc<ManagedCa>, Arc<Revocations>), ApiError> {
    // Makes sure the cached CRL is current (its bytes are shared, not copied).
    crl_der(state, &format!("{ca_id}.crl"), fresh).await?;
    let cache = state.crl_cache.lock().unwrap_or_else(|e| e.into_inner());
    let cached = cache
        .get(ca_id)
        .ok_or_else(|| ApiError::not_found("managed CA", ca_id))?;
    Ok((cached.ca.clone(), cached.revoked.clone()))
}

#[cfg(test)]
mod crl_tests {
    use super::*;

    #[test]
    fn a_cached_crl_is_rebuilt_after_a_change_or_a_day() {
        let built = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        assert!(crl_is_current(5, built, 5, built));
        assert!(crl_is_current(5, built, 5, built + time::Duration::hours(23)));
        assert!(
            !crl_is_current(5, built, 5, built + CRL_REFRESH),
            "a quiet CA's CRL is refreshed"
        );
        assert!(!crl_is_current(5, built, 6, built), "a write makes a new CRL");
        assert!(
            !crl_is_current(5, built, 5, built - time::Duration::minutes(1)),
            "the clock went back"
        );
        // Refreshed long before relying parties would refuse it.
        assert!(CRL_REFRESH * 3 < CRL_VALIDITY);
    }
}
