//! Cloudflare's Managed Transforms of a zone, `/zones/{zone_id}/managed_headers`: the one offered here is
//! `add_client_certificate_headers` ("Add TLS client auth headers"), which makes every hostname of the zone send its
//! origin the 17 `cf-cert-*` headers, as the hostname forwarding style `cf_cert_headers` does for one hostname.
//!
//! Client-sent copies of those headers are stripped whatever is set here (the proxy does that for every request).
//! Not offered: Cloudflare's other transforms (visitor location, True-Client-IP, security response headers), which
//! are refused by name rather than ignored.

use axum::Extension;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use portcullis_store::Actor;

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, ok};

/// The managed request-header transforms this edge offers.
pub const REQUEST_TRANSFORMS: [&str; 1] = ["add_client_certificate_headers"];

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
    /// None offered.
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

fn view(enabled: &[String]) -> ManagedHeaders {
    ManagedHeaders {
        managed_request_headers: REQUEST_TRANSFORMS
            .iter()
            .map(|id| ManagedHeader {
                id: (*id).to_owned(),
                enabled: enabled.iter().any(|e| e == id),
            })
            .collect(),
        managed_response_headers: Vec::new(),
    }
}

/// List the zone's managed transforms.
#[utoipa::path(get, path = "/zones/{zone_id}/managed_headers", tag = "zones",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The transforms and whether each is on", body = ManagedHeaders)))]
pub async fn get_managed_headers(State(state): State<AdminState>, Path(zone_id): Path<String>) -> ApiResult {
    let zone = state.store.zone(&zone_id).await?;
    Ok(ok(view(&zone.managed_request_headers)))
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
    let zone = state.store.zone(&zone_id).await?;
    if let Some(response) = body.managed_response_headers.first() {
        return Err(ApiError::invalid(format!(
            "managed response header transform {:?} is not offered here (none is)",
            response.id
        )));
    }
    let mut enabled = zone.managed_request_headers.clone();
    for change in &body.managed_request_headers {
        if !REQUEST_TRANSFORMS.contains(&change.id.as_str()) {
            return Err(ApiError::invalid(format!(
                "managed request header transform {:?} is not offered here: {} is",
                change.id,
                REQUEST_TRANSFORMS.join(", ")
            )));
        }
        enabled.retain(|id| id != &change.id);
        if change.enabled {
            enabled.push(change.id.clone());
        }
    }
    enabled.sort();
    if enabled == zone.managed_request_headers {
        return Ok(ok(view(&enabled)));
    }
    let zone = state
        .store
        .set_managed_request_headers(&zone_id, &enabled, &actor)
        .await?;
    Ok(ok(view(&zone.managed_request_headers)))
}
