//! `GET /accounts/{account_id}/portcullis/traffic` (Portcullis extension): requests and blocks per minute over the
//! last hour, for the dashboard's overview.
//!
//! The admin crate does not know the data plane: whoever runs it next to an edge hands it a [`TrafficSource`]
//! (`portcullis serve` wires the proxy's per-minute counters). Without one, the endpoint says so instead of
//! answering zeros that would look like an idle edge.

use crate::api::Path;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AdminState;
use crate::api::{ApiError, ApiResult, codes, ok};
use crate::certs::check_account;
use crate::time_fmt::rfc3339;

/// One minute's counts, as a source reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteCount {
    /// Start of the minute, in seconds since the Unix epoch.
    pub minute_start: i64,
    /// Requests answered (blocked ones included).
    pub requests: u64,
    /// Requests a rule blocked.
    pub blocked: u64,
}

/// Where the traffic counts come from: the edge running in this process.
pub trait TrafficSource: Send + Sync {
    /// The minutes of the hour up to `now` (seconds since the Unix epoch), oldest first.
    fn last_hour(&self, now: i64) -> Vec<MinuteCount>;
}

/// One minute in the API's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteView {
    /// Start of the minute (RFC 3339, UTC).
    pub minute_start: String,
    pub requests: u64,
    pub blocked: u64,
}

/// Traffic over the last hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficView {
    /// Always `node`: the counts are this process's edge, all hosts and zones together.
    pub scope: &'static str,
    pub since: String,
    pub until: String,
    /// Totals over the minutes below.
    pub requests: u64,
    pub blocked: u64,
    /// Oldest first, one entry per minute (zeros included).
    pub minutes: Vec<MinuteView>,
}

pub(crate) fn view(minutes: &[MinuteCount], now: i64) -> TrafficView {
    TrafficView {
        scope: "node",
        since: rfc3339(minutes.first().map_or(now, |m| m.minute_start)),
        until: rfc3339(now),
        requests: minutes.iter().map(|m| m.requests).sum(),
        blocked: minutes.iter().map(|m| m.blocked).sum(),
        minutes: minutes
            .iter()
            .map(|m| MinuteView {
                minute_start: rfc3339(m.minute_start),
                requests: m.requests,
                blocked: m.blocked,
            })
            .collect(),
    }
}

/// Requests and blocks per minute over the last hour, counted by this node's edge.
#[utoipa::path(get, path = "/accounts/{account_id}/portcullis/traffic", tag = "portcullis",
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The last hour, per minute", body = TrafficView),
              (status = 503, description = "No edge runs beside this admin API, so there are no counts")))]
pub async fn traffic(State(state): State<AdminState>, Path(account_id): Path<String>) -> ApiResult {
    check_account(&state, &account_id).await?;
    let Some(source) = &state.traffic else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            "traffic counts are not available: no edge runs in this process (portcullis serve provides them)",
        ));
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    Ok(ok(view(&source.last_hour(now), now)))
}
