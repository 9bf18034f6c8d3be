//! A zone's DNS-01 settings, `/zones/{zone_id}/ssl/acme_dns`: where and with which TSIG key the ACME manager
//! publishes the `_acme-challenge` TXT records of certificate packs validated over DNS (validation method `txt`),
//! which is what wildcard names and names the ACME server cannot reach need.
//!
//! Not a Cloudflare path: at Cloudflare the zone's DNS is Cloudflare's own. Here it is the user's primary name
//! server, updated with DNS UPDATE (RFC 2136) signed with TSIG (RFC 8945). The secret is sealed with the master key
//! and never returned. This module only checks and stores the settings; the binary's ACME manager uses them.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use portcullis_store::{AcmeDns, Actor};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, ok};
use crate::time_fmt::rfc3339;
use crate::zones::IdOnly;

/// The TSIG algorithms offered (RFC 8945 §6; SHA-1 and MD5 are not).
pub const TSIG_ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

/// The default wait between publishing the records and asking the ACME server to look.
pub const DEFAULT_PROPAGATION_SECONDS: u32 = 10;

/// The longest wait allowed: the ACME manager gives a DNS-01 validation three minutes in all.
pub const MAX_PROPAGATION_SECONDS: u32 = 120;

/// The sealing label of a zone's TSIG secret; the ACME manager unseals with it.
pub fn tsig_seal_label(zone_id: &str) -> String {
    format!("acme-dns:{zone_id}")
}

/// The settings as shown: everything but the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcmeDnsView {
    /// The primary name server, `host:port`.
    pub server: String,
    /// The DNS zone updated there.
    pub dns_zone: String,
    pub key_name: String,
    pub algorithm: String,
    pub propagation_seconds: i64,
    pub modified_on: String,
}

fn view(settings: AcmeDns) -> AcmeDnsView {
    AcmeDnsView {
        server: settings.server,
        dns_zone: settings.dns_zone,
        key_name: settings.key_name,
        algorithm: settings.algorithm,
        propagation_seconds: settings.propagation_seconds,
        modified_on: rfc3339(settings.modified_on),
    }
}

/// New settings.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAcmeDns {
    /// The zone's primary name server that accepts dynamic updates: `host`, `host:port`, `ip` or `[ipv6]:port`
    /// (port 53 by default).
    pub server: String,
    /// The DNS zone to update: the zone's own name unless given; it must be that name or a parent of it.
    pub dns_zone: Option<String>,
    /// The TSIG key's name, as the name server knows it.
    pub key_name: String,
    /// `hmac-sha256` (the default), `hmac-sha384` or `hmac-sha512`.
    pub algorithm: Option<String>,
    /// The TSIG secret in base64, as `tsig-keygen` prints it. Stored sealed; never returned.
    pub secret: String,
    /// Seconds to wait after publishing the records before the ACME server looks (for secondaries to follow):
    /// 0 to 120, 10 by default.
    pub propagation_seconds: Option<u32>,
}

/// `host[:port]`, `ip`, `ip:port` or `[ipv6]:port`, as `host:port` (port 53 unless given).
pub fn check_dns_server(server: &str) -> Result<String, ApiError> {
    let server = server.trim();
    let bad = |why: &str| ApiError::invalid(format!("server {server:?}: {why}"));
    if let Ok(addr) = server.parse::<std::net::SocketAddr>() {
        return Ok(addr.to_string());
    }
    if let Ok(ip) = server.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, 53).to_string());
    }
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        ),
        None => (server, 53),
    };
    if host.contains('*') || host.contains(':') {
        return Err(bad("give a host name or an IP address, with an optional :port"));
    }
    let host = host.to_ascii_lowercase();
    let host = portcullis_store::check_hostname(&host, &host).map_err(|e| bad(&e.to_string()))?;
    Ok(format!("{host}:{port}"))
}

/// A TSIG key name: labels of letters, digits, `-` and `_`; lower-cased.
fn check_key_name(name: &str) -> Result<String, ApiError> {
    let trimmed = name.trim().trim_end_matches('.');
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !ok {
        return Err(ApiError::invalid(format!(
            "key_name {name:?}: a DNS name of letters, digits, '-' and '_' (as in the server's `key` statement)"
        )));
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// The decoded secret: standard base64 (with or without padding), 16 bytes or more.
fn check_secret(secret: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let trimmed = secret.trim().trim_end_matches('=');
    // The decoder's error quotes the offending character and its place: not repeated.
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .map_err(|_| ApiError::invalid("secret: not base64 (as tsig-keygen prints it)"))?;
    let decoded = Zeroizing::new(decoded);
    if decoded.len() < 16 {
        return Err(ApiError::invalid(format!(
            "secret: {} bytes is too short for a TSIG key; use 32 (tsig-keygen makes them)",
            decoded.len()
        )));
    }
    Ok(decoded)
}

/// The zone's DNS-01 settings (`null` when there are none).
#[utoipa::path(get, path = "/zones/{zone_id}/ssl/acme_dns", tag = "certificate packs",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The settings, without the secret", body = Option<AcmeDnsView>)))]
pub async fn get_acme_dns(State(state): State<AdminState>, Path(zone_id): Path<String>) -> ApiResult {
    state.store.zone(&zone_id).await?;
    Ok(ok(state.store.acme_dns(&zone_id).await?.map(view)))
}

/// Set the zone's DNS-01 settings: certificate packs of the zone are then validated over DNS by default, and may
/// cover wildcard names.
#[utoipa::path(put, path = "/zones/{zone_id}/ssl/acme_dns", tag = "certificate packs",
    request_body = SetAcmeDns,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The settings, without the secret", body = AcmeDnsView)))]
pub async fn set_acme_dns(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<SetAcmeDns>,
) -> ApiResult {
    let zone = state.store.zone(&zone_id).await?;
    let server = check_dns_server(&body.server)?;
    let dns_zone = match body.dns_zone.as_deref() {
        None => zone.name.clone(),
        Some(name) => {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            let covers = zone.name == name
                || zone
                    .name
                    .strip_suffix(name.as_str())
                    .is_some_and(|prefix| prefix.ends_with('.'));
            if !covers || name.is_empty() {
                return Err(ApiError::invalid(format!(
                    "dns_zone {name:?}: the zone's names must be in it: give {:?} or a parent of it",
                    zone.name
                )));
            }
            name
        }
    };
    let key_name = check_key_name(&body.key_name)?;
    let algorithm = body.algorithm.as_deref().map_or("hmac-sha256".to_owned(), |a| {
        a.trim().trim_end_matches('.').to_ascii_lowercase()
    });
    if !TSIG_ALGORITHMS.contains(&algorithm.as_str()) {
        return Err(ApiError::invalid(format!(
            "algorithm {algorithm:?}: use one of {}",
            TSIG_ALGORITHMS.join(", ")
        )));
    }
    let secret = check_secret(&body.secret)?;
    let propagation = body.propagation_seconds.unwrap_or(DEFAULT_PROPAGATION_SECONDS);
    if propagation > MAX_PROPAGATION_SECONDS {
        return Err(ApiError::invalid(format!(
            "propagation_seconds: 0 to {MAX_PROPAGATION_SECONDS}, not {propagation}"
        )));
    }
    let settings = AcmeDns {
        sealed_secret: portcullis_pki::seal::seal(&state.master_key, &tsig_seal_label(&zone_id), &secret),
        zone_id,
        server,
        dns_zone,
        key_name,
        algorithm,
        propagation_seconds: i64::from(propagation),
        modified_on: 0,
    };
    Ok(ok(view(state.store.set_acme_dns(&settings, &actor).await?)))
}

/// Remove the zone's DNS-01 settings; refused while a certificate pack of the zone is validated over DNS.
#[utoipa::path(delete, path = "/zones/{zone_id}/ssl/acme_dns", tag = "certificate packs",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The zone's id", body = IdOnly)))]
pub async fn delete_acme_dns(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(zone_id): Path<String>,
) -> ApiResult {
    state.store.zone(&zone_id).await?;
    state.store.delete_acme_dns(&zone_id, &actor).await?;
    Ok(ok(IdOnly { id: zone_id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_host_and_port() {
        assert_eq!(check_dns_server("192.0.2.1").expect("ip"), "192.0.2.1:53");
        assert_eq!(check_dns_server("192.0.2.1:5353").expect("ip:port"), "192.0.2.1:5353");
        assert_eq!(check_dns_server("[2001:db8::1]:53").expect("v6"), "[2001:db8::1]:53");
        assert_eq!(check_dns_server("2001:db8::1").expect("bare v6"), "[2001:db8::1]:53");
        assert_eq!(check_dns_server("NS1.Example.com").expect("host"), "ns1.example.com:53");
        assert_eq!(
            check_dns_server("ns1.example.com:1053").expect("host:port"),
            "ns1.example.com:1053"
        );
        for bad in ["", "ns1.example.com:0", "ns1.example.com:x", "*.example.com", "a b"] {
            assert!(check_dns_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_names_and_secrets_are_checked_without_quoting_the_secret() {
        assert_eq!(check_key_name("Portcullis_ACME.").expect("name"), "portcullis_acme");
        assert!(check_key_name("a..b").is_err());
        assert!(check_key_name("key name").is_err());
        assert_eq!(
            check_secret("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=")
                .expect("secret")
                .len(),
            32
        );
        let err = check_secret("s3cr3t!!").expect_err("not base64");
        assert!(!err.message.contains("s3cr3t"), "{}", err.message);
        assert!(
            check_secret("c2hvcnQ=")
                .expect_err("short")
                .message
                .contains("too short")
        );
    }
}
