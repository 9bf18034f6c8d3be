//! `/zones/{zone_id}/certificate_authorities/hostname_associations`: which hostnames have mTLS enabled, and with
//! which CA. Without `mtls_certificate_id` the call is about the managed CA, as in Cloudflare's API.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use portcullis_store::{Actor, CaRef};

use crate::AdminState;
use crate::api::{ApiJson, ApiQuery, ApiResult, ok};

/// Query of the GET.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AssociationQuery {
    /// A bring-your-own CA; the managed CA when absent.
    pub mtls_certificate_id: Option<String>,
}

/// Body of the PUT, and the result of both calls.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Associations {
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_certificate_id: Option<String>,
}

fn ca_ref(id: Option<&str>) -> CaRef {
    match id.filter(|id| !id.is_empty()) {
        Some(id) => CaRef::Mtls(id.to_owned()),
        None => CaRef::Managed,
    }
}

/// List the hostnames associated with a CA.
#[utoipa::path(get, path = "/zones/{zone_id}/certificate_authorities/hostname_associations", tag = "mtls",
    params(("zone_id" = String, Path, description = "Zone id"), AssociationQuery),
    responses((status = 200, description = "The associated hostnames", body = Associations)))]
pub async fn get_associations(
    State(state): State<AdminState>,
    Path(zone_id): Path<String>,
    ApiQuery(query): ApiQuery<AssociationQuery>,
) -> ApiResult {
    let ca = ca_ref(query.mtls_certificate_id.as_deref());
    if let CaRef::Mtls(id) = &ca {
        state.store.mtls_certificate(id).await?;
    }
    let hostnames = state.store.hostname_associations(&zone_id, &ca).await?;
    Ok(ok(Associations {
        hostnames,
        mtls_certificate_id: query.mtls_certificate_id.filter(|id| !id.is_empty()),
    }))
}

/// Replace the hostnames associated with a CA (an empty list removes them all).
#[utoipa::path(put, path = "/zones/{zone_id}/certificate_authorities/hostname_associations", tag = "mtls",
    request_body = Associations,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The associated hostnames", body = Associations)))]
pub async fn put_associations(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<Associations>,
) -> ApiResult {
    let ca = ca_ref(body.mtls_certificate_id.as_deref());
    let hostnames = state
        .store
        .replace_hostname_associations(&zone_id, &ca, &body.hostnames, &actor)
        .await?;
    let result = Associations {
        hostnames,
        mtls_certificate_id: body.mtls_certificate_id.filter(|id| !id.is_empty()),
    };
    Ok(crate::mtls_check::answer(&state, &zone_id, axum::http::StatusCode::OK, result).await)
}
