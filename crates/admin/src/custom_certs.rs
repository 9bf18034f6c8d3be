//! Server certificates the edge presents per SNI: `/zones/{zone_id}/custom_certificates`, in Cloudflare's shape.
//!
//! An upload is validated by `portcullis-pki` (chain order, key matches the leaf, not expired, not a CA, a strong
//! key, DNS names present) and at least one of its DNS names must be in the zone. The private key never reaches the
//! store in the clear and is never returned: it is sealed with the master key by
//! [`portcullis_pki::server::seal_key`], whose associated data is derived from the leaf certificate's SHA-256
//! (`custom-certificate:<hex>`), not from the row id. That namespace cannot collide with a managed-CA id, and it is
//! derivable from the stored row alone, so the store can keep assigning ids and the edge unseals with
//! [`portcullis_pki::server::unseal_key`] from the row's `certificate`.
//!
//! `bundle_method` and `type` are accepted for compatibility with Cloudflare clients, but have no effect: the chain is
//! always served as uploaded — Cloudflare's `force` — so records report `bundle_method: "force"`.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use portcullis_store::{Actor, CustomCertificate, NewCustomCertificate};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiQuery, ApiResult, ResultInfo, ok, ok_page, ok_status};
use crate::time_fmt::rfc3339;
use crate::zones::IdOnly;

/// What records report as `bundle_method`: the chain is served as uploaded.
const BUNDLE_METHOD: &str = "force";

/// Cloudflare's `custom_certificates` object (the private key is never part of it).
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomCertificateView {
    pub id: String,
    pub zone_id: String,
    /// The DNS names the certificate covers, wildcards included.
    pub hosts: Vec<String>,
    pub issuer: String,
    pub signature: String,
    /// Always `active`.
    pub status: &'static str,
    /// Always `force`: the chain is served as uploaded.
    pub bundle_method: &'static str,
    pub expires_on: String,
    pub uploaded_on: String,
    pub modified_on: String,
    pub priority: u32,
}

fn view(cert: CustomCertificate) -> CustomCertificateView {
    CustomCertificateView {
        id: cert.id,
        zone_id: cert.zone_id,
        hosts: cert.hosts,
        issuer: cert.issuer,
        signature: cert.signature,
        status: "active",
        bundle_method: BUNDLE_METHOD,
        expires_on: rfc3339(cert.expires_on),
        uploaded_on: rfc3339(cert.uploaded_on),
        modified_on: rfc3339(cert.modified_on),
        priority: 0,
    }
}

/// Upload body, as Cloudflare's.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadCustomCertificate {
    /// PEM: the server certificate first, then its intermediates.
    pub certificate: String,
    /// PEM: PKCS#8, SEC1 (EC) or PKCS#1 (RSA), unencrypted. Sealed at rest, never returned.
    pub private_key: String,
    /// `ubiquitous`, `optimal` or `force`; accepted for compatibility, the chain is always served as uploaded.
    pub bundle_method: Option<String>,
    /// `legacy_custom` or `sni_custom`; accepted for compatibility, every certificate is selected by SNI.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// Upload a server certificate and its key.
#[utoipa::path(post, path = "/zones/{zone_id}/custom_certificates", tag = "custom certificates",
    request_body = UploadCustomCertificate,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 201, description = "The stored certificate", body = CustomCertificateView)))]
pub async fn create_custom_certificate(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<UploadCustomCertificate>,
) -> ApiResult {
    check_bundle_method(body.bundle_method.as_deref())?;
    if let Some(kind) = body.kind.as_deref()
        && !["legacy_custom", "sni_custom"].contains(&kind)
    {
        return Err(ApiError::invalid(format!(
            "unknown type {kind:?}: use legacy_custom or sni_custom"
        )));
    }
    let new = checked_upload(&state, &zone_id, &body.certificate, &body.private_key).await?;
    let stored = state.store.add_custom_certificate(&zone_id, new, &actor).await?;
    Ok(ok_status(StatusCode::CREATED, view(stored)))
}

fn check_bundle_method(method: Option<&str>) -> Result<(), ApiError> {
    match method {
        Some(method) if !["ubiquitous", "optimal", "force"].contains(&method) => Err(ApiError::invalid(format!(
            "unknown bundle_method {method:?}: use ubiquitous, optimal or force"
        ))),
        _ => Ok(()),
    }
}

/// Validates an uploaded chain and key for zone `zone_id` and seals the key: what the store keeps.
async fn checked_upload(
    state: &AdminState,
    zone_id: &str,
    certificate: &str,
    private_key: &str,
) -> Result<NewCustomCertificate, ApiError> {
    let zone = state.store.zone(zone_id).await?;
    let parsed = portcullis_pki::parse_server_certificate(certificate, private_key, OffsetDateTime::now_utc())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if !parsed.hosts.iter().any(|host| covers_zone_host(host, &zone.name)) {
        return Err(ApiError::invalid(format!(
            "the certificate covers no hostname in zone {:?} (it covers {})",
            zone.name,
            parsed.hosts.join(", ")
        )));
    }
    Ok(sealed_custom_certificate(&state.master_key, &parsed))
}

/// What the store keeps of a validated certificate and key: the chain, the facts the API shows, and the key sealed
/// with the master key. Uploads and the ACME manager's issuances both go through it.
pub fn sealed_custom_certificate(
    master: &portcullis_pki::MasterKey,
    parsed: &portcullis_pki::ServerCertificate,
) -> NewCustomCertificate {
    NewCustomCertificate {
        certificate: parsed.chain_pem.clone(),
        sealed_key: portcullis_pki::server::seal_key(master, parsed.leaf_der(), &parsed.key_pkcs8),
        hosts: parsed.hosts.clone(),
        issuer: parsed.issuer.clone(),
        signature: parsed.signature.clone(),
        expires_on: parsed.expires_on.unix_timestamp(),
    }
}

/// `PATCH` body, as Cloudflare's: a renewal sends the new `certificate` and `private_key` together.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditCustomCertificate {
    /// PEM: the new server certificate first, then its intermediates.
    pub certificate: Option<String>,
    /// PEM: the new certificate's key. Sealed at rest, never returned.
    pub private_key: Option<String>,
    /// Accepted for compatibility, as on upload.
    pub bundle_method: Option<String>,
}

/// Replace a server certificate and its key (a renewal), keeping its id.
#[utoipa::path(patch, path = "/zones/{zone_id}/custom_certificates/{custom_certificate_id}", tag = "custom certificates",
    request_body = EditCustomCertificate,
    params(("zone_id" = String, Path, description = "Zone id"), ("custom_certificate_id" = String, Path, description = "Certificate id")),
    responses((status = 200, description = "The updated certificate", body = CustomCertificateView)))]
pub async fn edit_custom_certificate(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<EditCustomCertificate>,
) -> ApiResult {
    check_bundle_method(body.bundle_method.as_deref())?;
    let (certificate, private_key) = match (&body.certificate, &body.private_key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => return Ok(ok(view(state.store.custom_certificate(&zone_id, &id).await?))),
        _ => {
            return Err(ApiError::invalid(
                "certificate and private_key go together: a new certificate needs its own key",
            ));
        }
    };
    // Checked before parsing, so that a wrong id is a 404 and not an error about the upload.
    state.store.custom_certificate(&zone_id, &id).await?;
    let new = checked_upload(&state, &zone_id, certificate, private_key).await?;
    let stored = state
        .store
        .replace_custom_certificate(&zone_id, &id, new, &actor)
        .await?;
    Ok(ok(view(stored)))
}

/// Whether certificate name `host` (possibly `*.`-wildcard) names a hostname of zone `zone`.
fn covers_zone_host(host: &str, zone: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    host == zone || host.strip_suffix(zone).is_some_and(|prefix| prefix.ends_with('.'))
}

/// Pages of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CustomListQuery {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

/// List the zone's server certificates, newest first.
#[utoipa::path(get, path = "/zones/{zone_id}/custom_certificates", tag = "custom certificates",
    params(("zone_id" = String, Path, description = "Zone id"), CustomListQuery),
    responses((status = 200, description = "A page of certificates", body = [CustomCertificateView])))]
pub async fn list_custom_certificates(
    State(state): State<AdminState>,
    Path(zone_id): Path<String>,
    ApiQuery(query): ApiQuery<CustomListQuery>,
) -> ApiResult {
    let all = state.store.list_custom_certificates(&zone_id).await?;
    let per_page = query.per_page.unwrap_or(20).clamp(1, portcullis_store::MAX_PER_PAGE);
    let page = query.page.unwrap_or(1).max(1);
    let total = all.len() as u64;
    let skip = usize::try_from(u64::from(page - 1) * u64::from(per_page)).unwrap_or(usize::MAX);
    let certs: Vec<_> = all.into_iter().skip(skip).take(per_page as usize).map(view).collect();
    let info = ResultInfo::new(page, per_page, certs.len(), total);
    Ok(ok_page(certs, info))
}

/// Get a server certificate.
#[utoipa::path(get, path = "/zones/{zone_id}/custom_certificates/{custom_certificate_id}", tag = "custom certificates",
    params(("zone_id" = String, Path, description = "Zone id"), ("custom_certificate_id" = String, Path, description = "Certificate id")),
    responses((status = 200, description = "The certificate", body = CustomCertificateView)))]
pub async fn get_custom_certificate(
    State(state): State<AdminState>,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult {
    Ok(ok(view(state.store.custom_certificate(&zone_id, &id).await?)))
}

/// Delete a server certificate (and its sealed key).
#[utoipa::path(delete, path = "/zones/{zone_id}/custom_certificates/{custom_certificate_id}", tag = "custom certificates",
    params(("zone_id" = String, Path, description = "Zone id"), ("custom_certificate_id" = String, Path, description = "Certificate id")),
    responses((status = 200, description = "The deleted certificate's id", body = IdOnly)))]
pub async fn delete_custom_certificate(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult {
    state.store.delete_custom_certificate(&zone_id, &id, &actor).await?;
    Ok(ok(IdOnly { id }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn zone_hosts() {
        use super::covers_zone_host;
        assert!(covers_zone_host("example.com", "example.com"));
        assert!(covers_zone_host("*.example.com", "example.com"));
        assert!(covers_zone_host("a.b.example.com", "example.com"));
        assert!(!covers_zone_host("badexample.com", "example.com"));
        assert!(!covers_zone_host("example.org", "example.com"));
    }
}
