//! Cloudflare's Managed Transforms of a zone, `/zones/{zone_id}/managed_headers`. Offered here:
//! - `add_client_certificate_headers` ("Add TLS client auth headers"): every hostname of the zone sends its origin the
//!   17 `cf-cert-*` headers, as the hostname forwarding style `cf_cert_headers` does for one hostname (client-sent
//!   copies are stripped whatever is set here);
//! - `add_true_client_ip_headers`: `True-Client-IP` carries the client's address (a client-sent one is replaced);
//! - `add_security_headers` (responses): `X-Content-Type-Options: nosniff`, `X-Frame-Options: SAMEORIGIN`,
//!   `X-XSS-Protection: 1; mode=block` and `Referrer-Policy: same-origin`, each when the origin sent none;
//! - `remove_x-powered-by_header` (responses).
//!
//! Not offered: visitor location headers (there is no geolocation here); asked for, they are refused by name rather
//! than ignored.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use portcullis_store::Actor;

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, ok};

/// The managed request-header transforms this edge offers.
pub const REQUEST_TRANSFORMS: [&str; 2] = ["add_client_certificate_headers", "add_true_client_ip_headers"];

/// The managed response-header transforms this edge offers.
pub const RESPONSE_TRANSFORMS: [&str; 2] = ["add_security_headers", "remove_x-powered-by_header"];

/// One transform and whether it is on.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagedHeader {
    pub id: String,
    pub enabled: bool,
}

/// The zone's managed transforms, in Cloudflare's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManagedHeaders {
    pub managed_request_headers: Vec<ManagedHeader>,
    pub managed_response_headers: Vec<ManagedHeader>,
}

/// `PATCH` body: the transforms to turn on or off; those left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchManagedHeaders {
    #[serde(default)]
    pub managed_request_headers: Vec<ManagedHeader>,
    #[serde(default)]
    pub managed_response_headers: Vec<ManagedHeader>,
}

fn listed(offered: &[&str], enabled: &[String]) -> Vec<ManagedHeader> {
    offered
        .iter()
        .map(|id| ManagedHeader {
            id: (*id).to_owned(),
            enabled: enabled.iter().any(|e| e == id),
        })
        .collect()
}

fn view(zone: &portcullis_store::Zone) -> ManagedHeaders {
    ManagedHeaders {
        managed_request_headers: listed(&REQUEST_TRANSFORMS, &zone.managed_request_headers),
        managed_response_headers: listed(&RESPONSE_TRANSFORMS, &zone.managed_response_headers),
    }
}

/// `enabled` with `changes` made, each checked against `offered`; sorted.
fn changed(
    kind: &str,
    offered: &[&str],
    enabled: &[String],
    changes: &[ManagedHeader],
) -> Result<Vec<String>, ApiError> {
    let mut out = enabled.to_vec();
    for change in changes {
        if !offered.contains(&change.id.as_str()) {
            return Err(ApiError::invalid(format!(
                "managed {kind} header transform {:?} is not offered here: {} are",
                change.id,
                offered.join(", ")
            )));
        }
        out.retain(|id| id != &change.id);
        if change.enabled {
            out.push(change.id.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// List the zone's managed transforms.
#[utoipa::path(get, path = "/zones/{zone_id}/managed_headers", tag = "zones",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The transforms and whether each is on", body = ManagedHeaders)))]
pub async fn get_managed_headers(State(state): State<AdminState>, Path(zone_id): Path<String>) -> ApiResult {
    let zone = state.store.zone(&zone_id).await?;
    Ok(ok(view(&zone)))
}

/// Turn managed transforms on or off.
#[utoipa::path(patch, path = "/zones/{zone_id}/managed_headers", tag = "zones",
    request_body = PatchManagedHeaders,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The transforms and whether each is on", body = ManagedHeaders)))]
pub async fn patch_managed_headers(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<PatchManagedHeaders>,
) -> ApiResult {
    let zone = state
        .store
        .update_managed_headers(&zone_id, &actor, |request, response| {
            Ok((
                changed("request", &REQUEST_TRANSFORMS, request, &body.managed_request_headers)
                    .map_err(|e| e.message)?,
                changed(
                    "response",
                    &RESPONSE_TRANSFORMS,
                    response,
                    &body.managed_response_headers,
                )
                .map_err(|e| e.message)?,
            ))
        })
        .await?;
    Ok(ok(view(&zone)))
}
