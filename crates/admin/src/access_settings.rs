//! `/zones/{zone_id}/access/certificates/settings`: Cloudflare's switch for forwarding the client certificate to the
//! origin in `Cf-Client-Cert-Der-Base64` and `Cf-Client-Cert-Sha256`, per hostname, with Cloudflare's fields.
//! `client_certificate_forwarding: true` adds the `cloudflare` forwarding style to the hostname's styles; `false`
//! removes it and leaves the other styles (RFC 9440, XFCC, `cf-cert-*`) as they are. `china_network` is accepted only as
//! `false`. Changes to several hostnames are written together or not at all.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use portcullis_store::Actor;

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, ok};
use crate::hostnames::{CertificateForwarding, ForwardingStyles, HostnameSettings};

/// One hostname's setting, as Cloudflare shows and takes it (all three fields required).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardingSetting {
    pub hostname: String,
    pub china_network: bool,
    pub client_certificate_forwarding: bool,
}

/// `PUT` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSettings {
    pub settings: Vec<ForwardingSetting>,
}

async fn current(state: &AdminState, zone_id: &str) -> Result<Vec<ForwardingSetting>, ApiError> {
    let mut out = Vec::new();
    for host in state.store.list_hostnames(zone_id).await? {
        let settings = HostnameSettings::from_stored(&host.settings).map_err(ApiError::internal)?;
        out.push(ForwardingSetting {
            hostname: host.hostname,
            china_network: false,
            client_certificate_forwarding: settings
                .client_certificate_forwarding
                .contains(CertificateForwarding::Cloudflare),
        });
    }
    Ok(out)
}

/// The zone's hostnames and whether each forwards the client certificate in Cloudflare's headers.
#[utoipa::path(get, path = "/zones/{zone_id}/access/certificates/settings", tag = "mtls",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "One entry per hostname", body = [ForwardingSetting])))]
pub async fn get_settings(State(state): State<AdminState>, Path(zone_id): Path<String>) -> ApiResult {
    Ok(crate::api::ok_all(current(&state, &zone_id).await?))
}

/// Turn forwarding in Cloudflare's headers on or off for the listed hostnames.
#[utoipa::path(put, path = "/zones/{zone_id}/access/certificates/settings", tag = "mtls", request_body = PutSettings,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "One entry per hostname of the zone", body = [ForwardingSetting])))]
pub async fn put_settings(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<PutSettings>,
) -> ApiResult {
    let hosts = state.store.list_hostnames(&zone_id).await?;
    let mut changes = Vec::with_capacity(body.settings.len());
    for entry in &body.settings {
        if entry.china_network {
            return Err(ApiError::invalid(format!(
                "{}: china_network is not available here; send false",
                entry.hostname
            )));
        }
        let wanted = entry.hostname.trim_end_matches('.').to_ascii_lowercase();
        let host = hosts
            .iter()
            .find(|h| h.hostname == wanted)
            .ok_or_else(|| ApiError::not_found("hostname", &entry.hostname))?;
        if changes.iter().any(|(id, _, _)| *id == host.id) {
            return Err(ApiError::invalid(format!("{} is listed twice", entry.hostname)));
        }
        let mut settings = HostnameSettings::from_stored(&host.settings).map_err(ApiError::internal)?;
        let styles = settings.client_certificate_forwarding.styles();
        settings.client_certificate_forwarding = if entry.client_certificate_forwarding {
            ForwardingStyles::from_styles(styles.into_iter().chain([CertificateForwarding::Cloudflare]))
        } else {
            ForwardingStyles::from_styles(styles.into_iter().filter(|s| *s != CertificateForwarding::Cloudflare))
        };
        changes.push((
            host.id.clone(),
            host.settings.clone(),
            serde_json::to_value(settings).map_err(ApiError::internal)?,
        ));
    }
    state.store.update_hostname_settings(&zone_id, &changes, &actor).await?;
    Ok(ok(current(&state, &zone_id).await?))
}
