//! Server certificates obtained and renewed over ACME: `/zones/{zone_id}/ssl/certificate_packs`, in the shape of
//! Cloudflare's advanced certificate packs.
//!
//! Ordering a pack only records it; the binary's ACME manager orders the certificate from the configured ACME
//! directory, answers TLS-ALPN-01 on the edge's own TLS listener (RFC 8737), stores the certificate as a custom
//! certificate of the zone and renews it when two thirds of its lifetime have passed. The pack's `status` and
//! `validation_errors` say where that stands. Validation is TLS-ALPN-01 only, so wildcard names (which ACME
//! validates over DNS only) are refused, as are Cloudflare's `txt`, `http` and `email` methods.

use axum::Extension;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use portcullis_store::{Actor, CertificatePack, MAX_PACK_HOSTS};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, ok};
use crate::time_fmt::rfc3339;
use crate::zones::IdOnly;

/// The one validation method: TLS-ALPN-01, answered by the edge on its TLS listener.
pub const VALIDATION_METHOD: &str = "tls-alpn-01";

/// One reason the last attempt failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationError {
    pub message: String,
}

/// A certificate pack, as Cloudflare's (`type` is always `advanced`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificatePackView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub hosts: Vec<String>,
    /// `initializing` (not tried yet), `pending_validation` (being ordered, or waiting to try again: see
    /// `validation_errors`), `active` (its certificate is served), `expired` (its certificate ran out and renewing
    /// it keeps failing).
    pub status: String,
    pub validation_method: String,
    /// The custom certificate the pack keeps current; `null` until the first issuance.
    pub primary_certificate: Option<String>,
    pub validation_errors: Vec<ValidationError>,
    /// When the current certificate expires.
    pub expires_on: Option<String>,
    /// When the next attempt may start, while one is failing.
    pub next_attempt_on: Option<String>,
    pub created_on: String,
    pub modified_on: String,
}

fn view(pack: CertificatePack, now: i64) -> CertificatePackView {
    let status = match pack.expires_on {
        Some(expires) if pack.status == "active" && expires <= now => "expired".to_owned(),
        _ => pack.status,
    };
    CertificatePackView {
        id: pack.id,
        kind: "advanced",
        hosts: pack.hosts,
        status,
        validation_method: pack.validation_method,
        primary_certificate: pack.certificate_id,
        validation_errors: pack
            .validation_errors
            .into_iter()
            .map(|message| ValidationError { message })
            .collect(),
        expires_on: pack.expires_on.map(rfc3339),
        next_attempt_on: (pack.next_attempt_on > now).then(|| rfc3339(pack.next_attempt_on)),
        created_on: rfc3339(pack.created_on),
        modified_on: rfc3339(pack.modified_on),
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Order body, as Cloudflare's. The fields whose choices this edge does not offer are refused with the reason when
/// given, rather than ignored: the CA is the server's `--acme-directory`, and it decides the validity.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCertificatePack {
    /// `advanced`, if given.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The names the certificate covers (1 to 50), each in the zone; no wildcards.
    pub hosts: Vec<String>,
    /// `tls-alpn-01`, if given.
    pub validation_method: Option<String>,
    /// Refused: the ACME CA decides the validity (90 days at Let's Encrypt).
    pub validity_days: Option<u32>,
    /// Refused: certificates come from the server's `--acme-directory`.
    pub certificate_authority: Option<String>,
    /// `false`, if given.
    pub cloudflare_branding: Option<bool>,
}

/// Checks an order's names: each a DNS name in zone `zone`, none a wildcard, none twice. Lower-cased.
pub fn check_pack_hosts(hosts: &[String], zone: &str) -> Result<Vec<String>, ApiError> {
    if hosts.is_empty() || hosts.len() > MAX_PACK_HOSTS {
        return Err(ApiError::invalid(format!(
            "hosts: give 1 to {MAX_PACK_HOSTS} names, not {}",
            hosts.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(hosts.len());
    for host in hosts {
        if host.trim().starts_with("*.") {
            return Err(ApiError::invalid(format!(
                "{host}: wildcard names are validated over DNS (dns-01), which this edge does not do; \
                 upload a wildcard certificate instead"
            )));
        }
        let name = portcullis_store::check_hostname(host, zone).map_err(|e| ApiError::invalid(e.to_string()))?;
        if out.contains(&name) {
            return Err(ApiError::invalid(format!("{name} is listed twice")));
        }
        out.push(name);
    }
    Ok(out)
}

/// Order a certificate for some of the zone's names, to be obtained and renewed over ACME.
#[utoipa::path(post, path = "/zones/{zone_id}/ssl/certificate_packs/order", tag = "certificate packs",
    request_body = OrderCertificatePack,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The recorded pack; its certificate follows", body = CertificatePackView)))]
pub async fn order_certificate_pack(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<OrderCertificatePack>,
) -> ApiResult {
    if let Some(kind) = body.kind.as_deref()
        && kind != "advanced"
    {
        return Err(ApiError::invalid(format!("unknown type {kind:?}: use advanced")));
    }
    if let Some(method) = body.validation_method.as_deref()
        && method != VALIDATION_METHOD
    {
        return Err(ApiError::invalid(format!(
            "validation_method {method:?} is not available: this edge validates with {VALIDATION_METHOD} \
             on its own TLS listener"
        )));
    }
    if body.validity_days.is_some() {
        return Err(ApiError::invalid(
            "validity_days: the ACME CA decides how long certificates are valid (Let's Encrypt: 90 days); leave it out",
        ));
    }
    if let Some(ca) = &body.certificate_authority {
        return Err(ApiError::invalid(format!(
            "certificate_authority {ca:?}: certificates come from the server's ACME directory \
             (serve --acme-directory); leave it out"
        )));
    }
    if body.cloudflare_branding == Some(true) {
        return Err(ApiError::invalid(
            "cloudflare_branding: there is no branding to add; leave it out",
        ));
    }
    let zone = state.store.zone(&zone_id).await?;
    let hosts = check_pack_hosts(&body.hosts, &zone.name)?;
    let pack = state
        .store
        .add_certificate_pack(&zone_id, &hosts, VALIDATION_METHOD, &actor)
        .await?;
    Ok(ok(view(pack, now())))
}

/// Restart validation: the next attempt starts now instead of after the failure's back-off (after fixing what
/// made it fail, such as DNS or a firewall).
#[utoipa::path(patch, path = "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}", tag = "certificate packs",
    params(("zone_id" = String, Path, description = "Zone id"), ("certificate_pack_id" = String, Path, description = "Pack id")),
    responses((status = 200, description = "The pack", body = CertificatePackView)))]
pub async fn restart_certificate_pack(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult {
    state.store.retry_certificate_pack(&zone_id, &id, &actor).await?;
    Ok(ok(view(state.store.certificate_pack(&zone_id, &id).await?, now())))
}

/// List the zone's certificate packs.
#[utoipa::path(get, path = "/zones/{zone_id}/ssl/certificate_packs", tag = "certificate packs",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The packs", body = [CertificatePackView])))]
pub async fn list_certificate_packs(State(state): State<AdminState>, Path(zone_id): Path<String>) -> ApiResult {
    let at = now();
    let packs: Vec<_> = state
        .store
        .list_certificate_packs(&zone_id)
        .await?
        .into_iter()
        .map(|p| view(p, at))
        .collect();
    Ok(ok(packs))
}

/// Get a certificate pack.
#[utoipa::path(get, path = "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}", tag = "certificate packs",
    params(("zone_id" = String, Path, description = "Zone id"), ("certificate_pack_id" = String, Path, description = "Pack id")),
    responses((status = 200, description = "The pack", body = CertificatePackView)))]
pub async fn get_certificate_pack(
    State(state): State<AdminState>,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult {
    Ok(ok(view(state.store.certificate_pack(&zone_id, &id).await?, now())))
}

/// Delete a certificate pack and its certificate: its names fall back to another certificate that covers them.
#[utoipa::path(delete, path = "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}", tag = "certificate packs",
    params(("zone_id" = String, Path, description = "Zone id"), ("certificate_pack_id" = String, Path, description = "Pack id")),
    responses((status = 200, description = "The deleted pack's id", body = IdOnly)))]
pub async fn delete_certificate_pack(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult {
    state.store.delete_certificate_pack(&zone_id, &id, &actor).await?;
    Ok(ok(IdOnly { id }))
}
