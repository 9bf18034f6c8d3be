//! `/zones/{zone_id}/security/events` (Portcullis extension): requests the rules blocked or logged.

use crate::api::Path;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use portcullis_store::{EventFilter, SecurityEvent};

use crate::AdminState;
use crate::api::{ApiQuery, ApiResult, ResultInfo, ok_page};
use crate::time_fmt::rfc3339;

/// Filters of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    pub host: Option<String>,
    /// `block` or `log`.
    pub action: Option<String>,
    /// `ok`, `absent`, `untrusted`, `notyetvalid`, `expired` or `revoked`.
    pub mtls_status: Option<String>,
    /// Only events newer than this id (for polling).
    pub after_id: Option<i64>,
    /// At most this many, newest first (default 100, at most 1,000).
    pub per_page: Option<u32>,
}

/// One security event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub occurred_at: String,
    pub host: String,
    pub method: String,
    pub path: String,
    pub client_ip: String,
    pub action: String,
    pub rule_id: Option<String>,
    pub status_code: i64,
    pub mtls_status: String,
    pub cert_fingerprint_sha256: String,
    pub cert_serial: String,
    /// The client certificate's subject (RFC 2253); `""` when none was presented.
    pub cert_subject_dn: String,
    /// Why the client certificate is not trusted, in OpenSSL's words (`certificate has expired`, `certificate
    /// revoked`, `unable to get local issuer certificate`); `""` when it is trusted or none was presented.
    pub cert_verify_error: String,
}

fn view(e: SecurityEvent) -> EventView {
    EventView {
        id: e.id,
        occurred_at: rfc3339(e.at),
        host: e.host,
        method: e.method,
        path: e.path,
        client_ip: e.client_ip,
        action: e.action,
        rule_id: e.rule_id,
        status_code: e.status_code,
        mtls_status: e.mtls_status,
        cert_fingerprint_sha256: e.cert_fingerprint_sha256,
        cert_serial: e.cert_serial,
        cert_subject_dn: e.cert_subject_dn,
        cert_verify_error: e.cert_verify_error,
    }
}

/// List recent security events of a zone.
#[utoipa::path(get, path = "/zones/{zone_id}/security/events", tag = "security",
    params(("zone_id" = String, Path, description = "Zone id"), EventQuery),
    responses((status = 200, description = "Events, newest first", body = [EventView])))]
pub async fn list_events(
    State(state): State<AdminState>,
    Path(zone_id): Path<String>,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> ApiResult {
    state.store.zone(&zone_id).await?;
    let per_page = query
        .per_page
        .unwrap_or(100)
        .clamp(1, portcullis_store::MAX_EVENTS_PER_PAGE);
    let filter = EventFilter {
        zone_id: Some(zone_id),
        host: query.host,
        action: query.action,
        mtls_status: query.mtls_status,
        after_id: query.after_id,
        limit: per_page,
    };
    let events: Vec<_> = state
        .store
        .list_security_events(&filter)
        .await?
        .into_iter()
        .map(view)
        .collect();
    let info = ResultInfo::new(1, per_page, events.len(), events.len() as u64);
    Ok(ok_page(events, info))
}
