//! Server certificates obtained and renewed over ACME: `/zones/{zone_id}/ssl/certificate_packs`, in the shape of
//! Cloudflare's advanced certificate packs.
//!
//! Ordering a pack only records it; the binary's ACME manager orders the certificate from the configured ACME
//! directory, answers TLS-ALPN-01 on the edge's own TLS listener (RFC 8737), stores the certificate as a custom
//! certificate of the zone and renews it when two thirds of its lifetime have passed. The pack's `status` and
//! `validation_errors` say where that stands. Validation is TLS-ALPN-01 on the edge's listener, DNS-01 (Cloudflare's
//! `txt`) through the zone's DNS update settings (`acme_dns`), which wildcard names need, or HTTP-01 (`http`) on the
//! server's public listener; Cloudflare's `email` method is refused.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use portcullis_store::{Actor, CertificatePack, DNS_VALIDATION, HTTP_VALIDATION, MAX_PACK_HOSTS};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, ok};
use crate::time_fmt::rfc3339;
use crate::zones::IdOnly;

/// Validation by TLS-ALPN-01, answered by the edge on its TLS listener.
pub const TLS_ALPN: &str = "tls-alpn-01";

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
    /// The names the certificate covers (1 to 50), each in the zone; wildcards (`*.example.com`) only over DNS.
    pub hosts: Vec<String>,
    /// `txt` (DNS-01, through the zone's `acme_dns` settings), `tls-alpn-01` (on the edge's TLS listener) or `http`
    /// (HTTP-01, on the public listener at port 80). By default `txt` when the zone has DNS settings, else
    /// `tls-alpn-01`.
    pub validation_method: Option<String>,
    /// Refused: the ACME CA decides the validity (90 days at Let's Encrypt).
    pub validity_days: Option<u32>,
    /// Refused: certificates come from the server's `--acme-directory`.
    pub certificate_authority: Option<String>,
    /// `false`, if given.
    pub cloudflare_branding: Option<bool>,
}

/// Checks an order's names: each a DNS name in zone `zone` (wildcards too: see [`check_pack_method`]), none twice.
/// Lower-cased.
pub fn check_pack_hosts(hosts: &[String], zone: &str) -> Result<Vec<String>, ApiError> {
    if hosts.is_empty() || hosts.len() > MAX_PACK_HOSTS {
        return Err(ApiError::invalid(format!(
            "hosts: give 1 to {MAX_PACK_HOSTS} names, not {}",
            hosts.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(hosts.len());
    for host in hosts {
        let name = portcullis_store::check_hostname(host, zone).map_err(|e| ApiError::invalid(e.to_string()))?;
        if out.contains(&name) {
            return Err(ApiError::invalid(format!("{name} is listed twice")));
        }
        out.push(name);
    }
    Ok(out)
}

/// The validation method of an order for `hosts` (checked) asking for `requested`, in a zone with or without DNS
/// update settings.
pub fn check_pack_method(hosts: &[String], requested: Option<&str>, has_dns: bool) -> Result<&'static str, ApiError> {
    let method = match requested.map(str::trim) {
        None if has_dns => DNS_VALIDATION,
        None => TLS_ALPN,
        Some(m) if m == TLS_ALPN => TLS_ALPN,
        Some(m) if m == DNS_VALIDATION || m == "dns-01" => DNS_VALIDATION,
        Some(m) if m == HTTP_VALIDATION || m == "http-01" => HTTP_VALIDATION,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "validation_method {other:?} is not available: use {DNS_VALIDATION} (DNS-01, through the zone's \
                 DNS update settings), {TLS_ALPN} (on the edge's own TLS listener) or {HTTP_VALIDATION} (HTTP-01, on \
                 the public listener)"
            )));
        }
    };
    if method == DNS_VALIDATION && !has_dns {
        return Err(ApiError::invalid(
            "validation over DNS (txt) needs the zone's DNS update settings first: PUT /zones/{zone_id}/ssl/acme_dns \
             (portcullis acme dns set)",
        ));
    }
    if method != DNS_VALIDATION
        && let Some(wildcard) = hosts.iter().find(|h| h.starts_with("*."))
    {
        return Err(ApiError::invalid(format!(
            "{wildcard}: wildcard names are validated over DNS (dns-01) only: give the zone DNS update settings \
             (portcullis acme dns set), or upload a wildcard certificate"
        )));
    }
    Ok(method)
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
    let has_dns = state.store.acme_dns(&zone_id).await?.is_some();
    let method = check_pack_method(&hosts, body.validation_method.as_deref(), has_dns)?;
    let pack = state
        .store
        .add_certificate_pack(&zone_id, &hosts, method, &actor)
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
