//! `/zones`: create, list, get and delete zones.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use portcullis_store::{Actor, Zone};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiQuery, ApiResult, ResultInfo, ok, ok_page, ok_status};
use crate::time_fmt::rfc3339;

/// The account a zone belongs to, as Cloudflare nests it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A zone, with Cloudflare's field names.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ZoneView {
    pub id: String,
    pub name: String,
    pub status: String,
    pub paused: bool,
    #[serde(rename = "type")]
    pub kind: String,
    pub account: AccountRef,
    pub created_on: String,
    pub modified_on: String,
}

pub fn zone_view(zone: Zone, account_name: &str) -> ZoneView {
    ZoneView {
        id: zone.id,
        name: zone.name,
        status: zone.status,
        paused: false,
        kind: "full".to_owned(),
        account: AccountRef {
            id: zone.account_id,
            name: Some(account_name.to_owned()),
        },
        created_on: rfc3339(zone.created_on),
        modified_on: rfc3339(zone.modified_on),
    }
}

/// `POST /zones` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateZone {
    /// The zone's DNS name, e.g. `example.com`.
    pub name: String,
    /// Accepted for Cloudflare compatibility; must be this server's account if given.
    #[serde(default)]
    pub account: Option<AccountRef>,
    /// Accepted for Cloudflare compatibility; only `full` exists here.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// Create a zone.
#[utoipa::path(post, path = "/zones", tag = "zones", request_body = CreateZone,
    responses((status = 201, description = "The new zone", body = ZoneView)))]
pub async fn create_zone(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreateZone>,
) -> ApiResult {
    let account = state.store.account().await?;
    if let Some(given) = &body.account
        && given.id != account.id
    {
        return Err(crate::api::ApiError::invalid(format!(
            "account.id {:?} is not this server's account {:?}",
            given.id, account.id
        )));
    }
    if let Some(kind) = body.kind.as_deref().filter(|k| *k != "full") {
        return Err(crate::api::ApiError::invalid(format!(
            "zone type {kind:?} is not supported; use \"full\""
        )));
    }
    let zone = state.store.create_zone(&body.name, &actor).await?;
    Ok(ok_status(StatusCode::CREATED, zone_view(zone, &account.name)))
}

/// Filters and pages of `GET /zones`, as Cloudflare takes them (`?name=example.com` is how scripts and Terraform
/// look a zone up).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ZoneQuery {
    /// Only the zone of this name (case-insensitive).
    pub name: Option<String>,
    /// Only zones with this status (`active`).
    pub status: Option<String>,
    /// Only zones of this account.
    #[serde(rename = "account.id")]
    #[param(rename = "account.id")]
    pub account_id: Option<String>,
    /// Only zones of the account of this name.
    #[serde(rename = "account.name")]
    #[param(rename = "account.name")]
    pub account_name: Option<String>,
    /// Page number, from 1 (default 1).
    pub page: Option<u32>,
    /// Zones per page, 5 to 1,000 (default 20).
    pub per_page: Option<u32>,
    /// `name` or `status` (default `name`).
    pub order: Option<String>,
    /// `asc` (default) or `desc`.
    pub direction: Option<String>,
}

/// List zones.
#[utoipa::path(get, path = "/zones", tag = "zones", params(ZoneQuery),
    responses((status = 200, description = "A page of zones", body = [ZoneView])))]
pub async fn list_zones(
    State(state): State<AdminState>,
    limit: Option<axum::Extension<crate::auth::ZoneLimit>>,
    ApiQuery(query): ApiQuery<ZoneQuery>,
) -> ApiResult {
    let account = state.store.account().await?;
    let name = query.name.as_deref().map(str::to_ascii_lowercase);
    let other_account = query.account_id.as_deref().is_some_and(|id| id != account.id)
        || query.account_name.as_deref().is_some_and(|n| n != account.name);
    let mut zones: Vec<Zone> = state
        .store
        .list_zones()
        .await?
        .into_iter()
        .filter(|_| !other_account)
        .filter(|z| name.as_deref().is_none_or(|n| z.name == n))
        .filter(|z| query.status.as_deref().is_none_or(|s| z.status == s))
        // A zone-restricted token sees its zones only.
        .filter(|z| limit.as_ref().is_none_or(|axum::Extension(l)| l.0.contains(&z.id)))
        .collect();
    match query.order.as_deref() {
        None | Some("name") => {}
        Some("status") => zones.sort_by(|a, b| a.status.cmp(&b.status).then_with(|| a.name.cmp(&b.name))),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "unknown order {other:?}: use name or status"
            )));
        }
    }
    match query.direction.as_deref() {
        None | Some("asc") => {}
        Some("desc") => zones.reverse(),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "unknown direction {other:?}: use asc or desc"
            )));
        }
    }
    let per_page = query.per_page.unwrap_or(20).clamp(5, 1000);
    let page = query.page.unwrap_or(1).max(1);
    let total = zones.len() as u64;
    let start = usize::try_from(u64::from(page - 1) * u64::from(per_page)).unwrap_or(usize::MAX);
    let views: Vec<ZoneView> = zones
        .into_iter()
        .skip(start)
        .take(per_page as usize)
        .map(|z| zone_view(z, &account.name))
        .collect();
    let info = ResultInfo::new(page, per_page, views.len(), total);
    Ok(ok_page(views, info))
}

/// Get a zone.
#[utoipa::path(get, path = "/zones/{zone_id}", tag = "zones",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The zone", body = ZoneView)))]
pub async fn get_zone(State(state): State<AdminState>, Path(zone_id): Path<String>) -> ApiResult {
    let account = state.store.account().await?;
    Ok(ok(zone_view(state.store.zone(&zone_id).await?, &account.name)))
}

/// The `{id}` result of a delete.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdOnly {
    pub id: String,
}

/// Delete a zone and everything configured in it.
#[utoipa::path(delete, path = "/zones/{zone_id}", tag = "zones",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The deleted zone's id", body = IdOnly)))]
pub async fn delete_zone(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
) -> ApiResult {
    state.store.delete_zone(&zone_id, &actor).await?;
    Ok(ok(IdOnly { id: zone_id }))
}
