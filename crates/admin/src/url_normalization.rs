//! `/zones/{zone_id}/url_normalization`: the zone's URL normalization, with Cloudflare's path, fields and values.
//! `scope` says where the normalized path goes (`incoming`: the rules only, the default; `both`: the rules and the
//! origin; `none`), `type` which normalization (`cloudflare`, the default, or `rfc3986`). DELETE restores the
//! defaults. The edge applies a change with the next snapshot, like any other write.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use portcullis_store::{Actor, URL_NORMALIZATION_SCOPES, URL_NORMALIZATION_TYPES, Zone};

use crate::AdminState;
use crate::api::{ApiJson, ApiResult, ok};

/// Body of the PUT, and the result of every call.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlNormalization {
    /// `incoming`, `both` or `none`.
    pub scope: String,
    /// `cloudflare` or `rfc3986`.
    #[serde(rename = "type")]
    pub kind: String,
}

fn view(zone: Zone) -> UrlNormalization {
    UrlNormalization {
        scope: zone.url_normalization_scope,
        kind: zone.url_normalization_type,
    }
}

/// Get the zone's URL normalization.
#[utoipa::path(get, path = "/zones/{zone_id}/url_normalization", tag = "zones",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The setting", body = UrlNormalization)))]
pub async fn get_url_normalization(State(state): State<AdminState>, Path(zone_id): Path<String>) -> ApiResult {
    Ok(ok(view(state.store.zone(&zone_id).await?)))
}

/// Set the zone's URL normalization.
#[utoipa::path(put, path = "/zones/{zone_id}/url_normalization", tag = "zones", request_body = UrlNormalization,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The setting", body = UrlNormalization)))]
pub async fn put_url_normalization(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<UrlNormalization>,
) -> ApiResult {
    let zone = state
        .store
        .set_url_normalization(&zone_id, &body.scope, &body.kind, &actor)
        .await?;
    Ok(ok(view(zone)))
}

/// Restore the defaults (`incoming`, `cloudflare`).
#[utoipa::path(delete, path = "/zones/{zone_id}/url_normalization", tag = "zones",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The setting", body = UrlNormalization)))]
pub async fn delete_url_normalization(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = state
        .store
        .set_url_normalization(
            &zone_id,
            URL_NORMALIZATION_SCOPES[0],
            URL_NORMALIZATION_TYPES[0],
            &actor,
        )
        .await?;
    Ok(ok(view(zone)))
}
