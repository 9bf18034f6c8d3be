//! `/zones/{zone_id}/portcullis/client_certificate_policy` (Portcullis extension): what the client certificates
//! issued in a zone may be. The managed CA is the account's, as at Cloudflare, so a certificate issued in one zone is
//! trusted by every hostname that trusts that CA: a zone's policy bounds what its tokens can issue (a
//! `certificates` token for a provisioning service, say): how long a certificate may live (`max_validity_days`,
//! also the default when a request names none and the usual default is longer) and which names it may carry
//! (`allowed_names`: typed patterns, `cn:device-*`, `dns:*.devices.example.com`, `ip:10.0.0.0/8`…, that every
//! subject attribute and subject alternative name must match; see `portcullis_pki::name_policy`). Issuing and
//! reactivating are both checked against it.
//!
//! Only an account-wide write token may change a policy: a token limited to the zone is what it bounds. A token
//! that reaches a zone without a policy (an account-wide `certificates` token, one limited to several zones) is
//! not bounded there. Not here: certificates issued before a policy and never reactivated (they stay valid; revoke
//! them), uploaded CAs (Portcullis holds no key).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use portcullis_store::Actor;

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, Path, codes, ok};
use crate::auth::ZoneLimit;

/// Most patterns a policy may list.
pub const MAX_ALLOWED_NAMES: usize = 100;
/// The longest pattern: a URI SAN can be long, but not without bound.
const MAX_PATTERN: usize = 1024;

/// A zone's client certificate policy. Both fields are optional; `{}` is no policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificatePolicy {
    /// The longest validity a certificate issued in the zone may have, 1 to 5,475 days; also the default validity
    /// when a request names none (if shorter than the usual 3,650).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_validity_days: Option<u32>,
    /// Typed patterns that every subject attribute (`cn:`, `o:`, `ou:`, `c:`, `st:`, `l:`) and subject alternative
    /// name (`dns:`, `uri:`, `email:`, `ip:` as an address or CIDR block) of an issued certificate must match; `*`
    /// stands for any characters within one label, path segment or email part: e.g. `"cn:device-*"`,
    /// `"dns:*.devices.example.com"`, `"uri:spiffe://example.com/team-a/*"`. Empty: any name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_names: Vec<String>,
}

impl ClientCertificatePolicy {
    /// Checks the values, naming the one that is wrong.
    pub fn check(&self) -> Result<(), ApiError> {
        if let Some(days) = self.max_validity_days
            && !(1..=portcullis_pki::ca::MAX_VALIDITY_DAYS).contains(&days)
        {
            return Err(ApiError::invalid(format!(
                "max_validity_days must be between 1 and {}, found {days}",
                portcullis_pki::ca::MAX_VALIDITY_DAYS
            )));
        }
        if self.allowed_names.len() > MAX_ALLOWED_NAMES {
            return Err(ApiError::invalid(format!(
                "allowed_names has {} patterns; at most {MAX_ALLOWED_NAMES} are allowed",
                self.allowed_names.len()
            )));
        }
        if let Some(long) = self.allowed_names.iter().find(|p| p.len() > MAX_PATTERN) {
            return Err(ApiError::invalid(format!(
                "allowed_names {long:?}: a pattern is at most {MAX_PATTERN} bytes"
            )));
        }
        portcullis_pki::name_policy::NamePolicy::parse(&self.allowed_names)
            .map(|_| ())
            .map_err(|e| ApiError::invalid(format!("allowed_names {e}")))
    }

    /// The policy stored for `zone_id`; the default (no limits) when there is none.
    pub(crate) async fn of_zone(state: &AdminState, zone_id: &str) -> Result<ClientCertificatePolicy, ApiError> {
        match state.store.client_certificate_policy(zone_id).await? {
            None => Ok(ClientCertificatePolicy::default()),
            Some(value) => serde_json::from_value(value).map_err(ApiError::internal),
        }
    }

    /// Refuses an issued certificate (PEM, and the validity it was issued with) that this policy would not issue.
    pub(crate) fn allows_existing(&self, pem: &str, validity_days: i64) -> Result<(), ApiError> {
        if let Some(max) = self.max_validity_days
            && validity_days > i64::from(max)
        {
            return Err(ApiError::invalid(format!(
                "this certificate was issued for {validity_days} days, more than the zone's client certificate \
                 policy allows ({max}, max_validity_days); issue a new one"
            )));
        }
        if self.allowed_names.is_empty() {
            return Ok(());
        }
        let der = portcullis_pki::pem::certificates_from_pem_or_der(pem.as_bytes())
            .ok()
            .and_then(|certs| certs.into_iter().next())
            .ok_or_else(|| ApiError::internal("a stored client certificate is not PEM"))?;
        let names = portcullis_pki::name_policy::certificate_names(&der).and_then(|names| {
            portcullis_pki::name_policy::NamePolicy::parse(&self.allowed_names)
                .map_err(portcullis_pki::PkiError::InvalidParameter)?
                .check(&names)
        });
        names.map_err(|e| ApiError::invalid(format!("{e}; issue a new certificate")))
    }

    /// The validity of a certificate requested with `asked` days (`None`: the default), or why it is refused.
    pub(crate) fn validity(&self, asked: Option<u32>) -> Result<u32, ApiError> {
        let default = portcullis_pki::ca::DEFAULT_VALIDITY_DAYS;
        match (asked, self.max_validity_days) {
            (Some(days), Some(max)) if days > max => Err(ApiError::invalid(format!(
                "validity_days {days} is more than the zone's client certificate policy allows ({max}, \
                 max_validity_days)"
            ))),
            (Some(days), _) => Ok(days),
            (None, Some(max)) => Ok(default.min(max)),
            (None, None) => Ok(default),
        }
    }
}

/// A zone's client certificate policy.
#[utoipa::path(get, path = "/zones/{zone_id}/portcullis/client_certificate_policy", tag = "client certificates",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The policy; {} when the zone has none", body = ClientCertificatePolicy)))]
pub async fn get_policy(State(state): State<AdminState>, Path(zone_id): Path<String>) -> ApiResult {
    state.store.zone(&zone_id).await?;
    Ok(ok(ClientCertificatePolicy::of_zone(&state, &zone_id).await?))
}

/// Set a zone's client certificate policy (`{}` removes it). Account-wide tokens only.
#[utoipa::path(put, path = "/zones/{zone_id}/portcullis/client_certificate_policy", tag = "client certificates",
    request_body = ClientCertificatePolicy,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The policy now", body = ClientCertificatePolicy)))]
pub async fn put_policy(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    limit: Option<Extension<ZoneLimit>>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<ClientCertificatePolicy>,
) -> ApiResult {
    if limit.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::UNAUTHORIZED,
            "Unauthorized to access requested resource: a zone's client certificate policy bounds the tokens \
             limited to it, so only an account-wide token may change it",
        ));
    }
    body.check()?;
    state.store.zone(&zone_id).await?;
    let value = (body != ClientCertificatePolicy::default())
        .then(|| serde_json::to_value(&body))
        .transpose()
        .map_err(ApiError::internal)?;
    state
        .store
        .set_client_certificate_policy(&zone_id, value.as_ref(), &actor)
        .await?;
    Ok(ok(body))
}
