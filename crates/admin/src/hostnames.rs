//! `/zones/{zone_id}/hostnames` (Portcullis extension): the hostnames the edge serves, their origins and settings.

use std::collections::BTreeMap;

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use portcullis_store::{Actor, Hostname};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, codes, ok, ok_all};
use crate::auth::ZoneLimit;
use crate::time_fmt::rfc3339;
use crate::zones::IdOnly;

/// How the TLS layer treats client certificates on a hostname that has mTLS enabled (a CA associated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TlsClientAuth {
    /// Ask for a certificate but complete the handshake without one (Cloudflare's behaviour); rules decide.
    #[default]
    Request,
    /// Fail the handshake unless a valid certificate is presented.
    Require,
    /// Complete the handshake without a certificate, but fail it when one is presented that does not verify or is
    /// revoked at the handshake (Caddy's `verify_if_given`, HAProxy's `verify optional`): clients without
    /// certificates reach the rules. As under `require`, a certificate revoked or expiring while its connection is
    /// open is left to the rules.
    VerifyIfGiven,
}

/// The oldest TLS version a hostname accepts, in Cloudflare's `min_tls_version` spelling. Only 1.2 and 1.3: the
/// edge speaks no older TLS, so "1.0" and "1.1" are refused rather than accepted and not honoured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum MinTlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// Which headers carry the client certificate to the origin. Client-sent copies of all of them are always removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertificateForwarding {
    /// Nothing is forwarded.
    #[default]
    None,
    /// `Cf-Client-Cert-Der-Base64` and `Cf-Client-Cert-Sha256`.
    Cloudflare,
    /// The 17 `cf-cert-*` headers of Cloudflare's managed transform.
    CfCertHeaders,
    /// RFC 9440 `Client-Cert` and `Client-Cert-Chain`.
    Rfc9440,
    /// Envoy's `X-Forwarded-Client-Cert` with `Hash`, `Subject`, `URI` and `DNS`.
    Xfcc,
    /// `X-Forwarded-Client-Cert` with Envoy's `Cert` and `Chain` too (URL-encoded PEM).
    XfccCert,
}

/// The names of the styles, for error messages.
const STYLE_NAMES: &str = "none, cloudflare, cf_cert_headers, rfc9440, xfcc, xfcc_cert";

/// A hostname's forwarding styles: one (`"rfc9440"`) or several together (`["rfc9440", "xfcc"]`). One style is
/// shown as a string, as before styles could be combined; `"none"` when nothing is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ForwardingStyles {
    One(CertificateForwarding),
    Several(Vec<CertificateForwarding>),
}

impl Default for ForwardingStyles {
    fn default() -> Self {
        ForwardingStyles::One(CertificateForwarding::None)
    }
}

impl ForwardingStyles {
    /// The styles in the order given, each once, without `none`, in the shape the API shows.
    pub fn from_styles(styles: impl IntoIterator<Item = CertificateForwarding>) -> ForwardingStyles {
        let mut list: Vec<CertificateForwarding> = Vec::new();
        for style in styles {
            if style != CertificateForwarding::None && !list.contains(&style) {
                list.push(style);
            }
        }
        match list.len() {
            0 => ForwardingStyles::default(),
            1 => ForwardingStyles::One(list[0]),
            _ => ForwardingStyles::Several(list),
        }
    }

    /// The styles, without `none`.
    pub fn styles(&self) -> Vec<CertificateForwarding> {
        match self {
            ForwardingStyles::One(CertificateForwarding::None) => Vec::new(),
            ForwardingStyles::One(style) => vec![*style],
            ForwardingStyles::Several(list) => list.clone(),
        }
    }

    pub fn contains(&self, style: CertificateForwarding) -> bool {
        self.styles().contains(&style)
    }
}

impl<'de> Deserialize<'de> for ForwardingStyles {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let parse = |value: serde_json::Value| -> Result<CertificateForwarding, D::Error> {
            let shown = value.to_string();
            serde_json::from_value(value).map_err(|_| {
                D::Error::custom(format!(
                    "unknown forwarding style {shown}; the styles are {STYLE_NAMES}"
                ))
            })
        };
        match serde_json::Value::deserialize(deserializer)? {
            one @ serde_json::Value::String(_) => Ok(ForwardingStyles::One(parse(one)?)),
            serde_json::Value::Array(items) => {
                let styles = items.into_iter().map(parse).collect::<Result<Vec<_>, _>>()?;
                if styles.len() > 1 && styles.contains(&CertificateForwarding::None) {
                    return Err(D::Error::custom(
                        "\"none\" cannot be combined with other forwarding styles",
                    ));
                }
                Ok(ForwardingStyles::from_styles(styles))
            }
            other => Err(D::Error::custom(format!(
                "expected a forwarding style or a list of them, not {other}; the styles are {STYLE_NAMES}"
            ))),
        }
    }
}

/// How requests are spread over a hostname's origin servers (`origin` and `additional_origins`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OriginSteering {
    /// In turn, skipping servers that are down.
    #[default]
    RoundRobin,
    /// The first server that is up, in order (`origin` first): the others are standbys.
    Failover,
}

/// An active health check of a hostname's origin servers: a `GET` of `path` on each server every `interval`
/// seconds. Two failed checks in a row (a status other than 2xx or 3xx, no answer within `timeout` seconds)
/// take a server out; the first check that passes brings it back. Only hostnames with several origin servers
/// are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, from = "HealthCheckBody")]
pub struct OriginHealthCheck {
    /// Path (and query) of the check, from `/`.
    pub path: String,
    /// Seconds between checks of a server (1 to 3600; default 10).
    pub interval: u32,
    /// Seconds a check may take, connecting included (1 to 60, at most `interval`; default 2, or the interval
    /// when that is shorter).
    pub timeout: u32,
}

/// [`OriginHealthCheck`] as sent, with its defaults still to fill in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckBody {
    path: String,
    interval: Option<u32>,
    timeout: Option<u32>,
}

impl From<HealthCheckBody> for OriginHealthCheck {
    fn from(body: HealthCheckBody) -> OriginHealthCheck {
        let interval = body.interval.unwrap_or(10);
        OriginHealthCheck {
            path: body.path,
            interval,
            timeout: body.timeout.unwrap_or(interval.clamp(1, 2)),
        }
    }
}

impl OriginHealthCheck {
    /// Checks the path and the times, naming the problem.
    pub fn check(&self) -> Result<(), ApiError> {
        let bad = |why: String| Err(ApiError::invalid(format!("invalid origin_health_check: {why}")));
        if !self.path.starts_with('/') || self.path.len() > 1024 {
            return bad(format!("path {:?} must start with / (at most 1024 bytes)", self.path));
        }
        if self.path.parse::<axum::http::uri::PathAndQuery>().is_err() {
            return bad(format!("path {:?} is not a valid request path", self.path));
        }
        if !(1..=3600).contains(&self.interval) {
            return bad(format!("interval {} must be 1 to 3600 seconds", self.interval));
        }
        if !(1..=60).contains(&self.timeout) || self.timeout > self.interval {
            return bad(format!(
                "timeout {} must be 1 to 60 seconds and at most the interval ({})",
                self.timeout, self.interval
            ));
        }
        Ok(())
    }
}

/// A field that may be absent (left as it is), `null` (removed) or set.
fn set_or_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The most origin servers a hostname may list besides `origin`.
pub const MAX_ADDITIONAL_ORIGINS: usize = 32;

/// Per-hostname settings, stored as JSON beside the hostname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HostnameSettings {
    pub tls_client_auth: TlsClientAuth,
    pub client_certificate_forwarding: ForwardingStyles,
    /// Verify the origin's certificate (for `https://` origins).
    pub origin_tls_verify: bool,
    /// PEM of the CA(s) that issued the origin's certificate; the system's roots when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_ca: Option<String>,
    /// Speak HTTP/2 to the origin: with prior knowledge (h2c) to `http://` origins, by ALPN to `https://` ones.
    /// gRPC origins need it.
    pub origin_http2: bool,
    /// The client certificate (an `mtls_certificates` entry with `"ca": false`) presented to an `https://` origin
    /// that requires one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_client_certificate: Option<String>,
    /// Name the trusted CAs in the TLS CertificateRequest (so that clients pick a matching certificate). Off, the
    /// request names none: the CAs' names are not shown to whoever connects, and clients offer their certificate
    /// whatever its issuer (NGINX and HAProxy cannot turn this off per host).
    pub send_client_ca_names: bool,
    /// The oldest TLS version clients may use: `"1.2"` (the default) or `"1.3"`.
    pub min_tls_version: MinTlsVersion,
    /// More origin servers with the same scheme as `origin`, which share its settings. A server that
    /// refuses or times out a connection is left alone for 10 s (doubling while it keeps failing, up to
    /// 2 min) and the request, with its body, goes to the next server.
    pub additional_origins: Vec<String>,
    /// How requests are spread over `origin` and `additional_origins`.
    pub origin_steering: OriginSteering,
    /// Active health checks of the origin servers; without, only failed connections take a server out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_health_check: Option<OriginHealthCheck>,
    /// The `Host` sent to the origin instead of the client's (`name` or `name:port`), for origins that serve by a
    /// name of their own: cloud load balancers, virtual hosts (NGINX's `proxy_set_header Host`, Cloudflare's
    /// host header override). Health checks send it too. HTTP/1.1 origins only: an HTTP/2 origin gets the origin
    /// URL's authority as `:authority`, so name the origin by the name it wants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_host_header: Option<String>,
    /// Client-certificate fields sent to the origin under header names of the operator's choosing: header name →
    /// field name (`{"X-SSL-Client-Verify": "portcullis.tls_client_auth.verify_result"}`), for origins that read
    /// them as NGINX's `proxy_set_header` set them. Client-sent copies are always removed; the holder's fields are
    /// sent for a trusted certificate only; a field without a value sends no header; a list is joined with `", "`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub client_certificate_headers: BTreeMap<String, String>,
}

impl Default for HostnameSettings {
    /// Verification of the origin's certificate is on unless turned off.
    fn default() -> Self {
        HostnameSettings {
            tls_client_auth: TlsClientAuth::default(),
            client_certificate_forwarding: ForwardingStyles::default(),
            origin_tls_verify: true,
            origin_ca: None,
            origin_http2: false,
            origin_client_certificate: None,
            send_client_ca_names: true,
            min_tls_version: MinTlsVersion::default(),
            additional_origins: Vec::new(),
            origin_steering: OriginSteering::default(),
            origin_health_check: None,
            origin_host_header: None,
            client_certificate_headers: BTreeMap::new(),
        }
    }
}

impl HostnameSettings {
    /// Reads stored settings; anything missing takes its default.
    pub fn from_stored(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value.clone())
    }
}

/// A hostname as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostnameView {
    pub id: String,
    pub zone_id: String,
    pub hostname: String,
    pub origin: String,
    #[serde(flatten)]
    pub settings: HostnameSettings,
    pub created_on: String,
    pub modified_on: String,
}

fn view(host: Hostname) -> Result<HostnameView, ApiError> {
    let settings = HostnameSettings::from_stored(&host.settings).map_err(ApiError::internal)?;
    Ok(HostnameView {
        id: host.id,
        zone_id: host.zone_id,
        hostname: host.hostname,
        origin: host.origin,
        settings,
        created_on: rfc3339(host.created_on),
        modified_on: rfc3339(host.modified_on),
    })
}

/// `POST /zones/{zone_id}/hostnames` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHostname {
    pub hostname: String,
    /// `http://host:port` or `https://host:port`.
    pub origin: String,
    #[serde(default)]
    pub tls_client_auth: TlsClientAuth,
    /// One style, or a list of styles to forward together.
    #[serde(default)]
    pub client_certificate_forwarding: ForwardingStyles,
    #[serde(default = "yes")]
    pub origin_tls_verify: bool,
    #[serde(default)]
    pub origin_ca: Option<String>,
    #[serde(default)]
    pub origin_http2: bool,
    /// Id of an uploaded client certificate (`"ca": false`) for origins that require one.
    #[serde(default)]
    pub origin_client_certificate: Option<String>,
    /// Name the trusted CAs in the TLS CertificateRequest (default true).
    #[serde(default = "yes")]
    pub send_client_ca_names: bool,
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_tls_version: MinTlsVersion,
    /// More origin servers (same scheme as `origin`).
    #[serde(default)]
    pub additional_origins: Vec<String>,
    /// `round_robin` (default) or `failover`.
    #[serde(default)]
    pub origin_steering: OriginSteering,
    /// Active health checks of the origin servers.
    #[serde(default)]
    pub origin_health_check: Option<OriginHealthCheck>,
    /// The `Host` sent to an HTTP/1.1 origin instead of the client's.
    #[serde(default)]
    pub origin_host_header: Option<String>,
    /// Header name → client-certificate field, sent to the origin.
    #[serde(default)]
    pub client_certificate_headers: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// `PATCH /zones/{zone_id}/hostnames/{id}` body; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateHostname {
    pub origin: Option<String>,
    pub tls_client_auth: Option<TlsClientAuth>,
    pub client_certificate_forwarding: Option<ForwardingStyles>,
    pub origin_tls_verify: Option<bool>,
    /// An empty string removes the origin CA.
    pub origin_ca: Option<String>,
    pub origin_http2: Option<bool>,
    /// An empty string removes the origin client certificate.
    pub origin_client_certificate: Option<String>,
    pub send_client_ca_names: Option<bool>,
    pub min_tls_version: Option<MinTlsVersion>,
    /// Replaces the list; `[]` leaves `origin` alone.
    pub additional_origins: Option<Vec<String>>,
    pub origin_steering: Option<OriginSteering>,
    /// `null` removes the health check.
    #[serde(default, deserialize_with = "set_or_null")]
    #[schema(value_type = Option<OriginHealthCheck>)]
    pub origin_health_check: Option<Option<OriginHealthCheck>>,
    /// An empty string sends the client's `Host` again.
    pub origin_host_header: Option<String>,
    /// Replaces the map; `{}` removes them all.
    pub client_certificate_headers: Option<BTreeMap<String, String>>,
}

/// A client certificate can only be presented over TLS.
fn check_https(origin: &str) -> Result<(), ApiError> {
    if origin.starts_with("https://") {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "origin_client_certificate needs an https:// origin, not {origin:?}"
        )))
    }
}

/// Refuses a token limited to zones that picks an `origin_client_certificate` other than the hostname's own
/// (`current`). Uploaded client certificates are the account's, not a zone's: such a token could otherwise have the
/// edge present another zone's certificate, and prove its key, to a server the token names. Keeping or clearing the
/// one the hostname has is its zone's business.
fn zone_token_may_choose(
    limit: Option<&Extension<ZoneLimit>>,
    current: Option<&str>,
    chosen: &str,
) -> Result<(), ApiError> {
    if limit.is_some() && current != Some(chosen) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::UNAUTHORIZED,
            "Unauthorized to access requested resource: origin_client_certificate names an account certificate, \
             which a token limited to zones cannot choose; set it with an account-wide token",
        ));
    }
    Ok(())
}

/// Checks that `id` names an uploaded client certificate (`"ca": false`) with its key.
async fn check_origin_client_certificate(state: &AdminState, id: &str) -> Result<(), ApiError> {
    let cert = state.store.mtls_certificate(id).await.map_err(|_| {
        ApiError::invalid(format!(
            "origin_client_certificate {id:?} is not an uploaded certificate (POST /accounts/{{account_id}}/mtls_certificates with \"ca\": false)"
        ))
    })?;
    if cert.ca || cert.sealed_key.is_none() {
        return Err(ApiError::invalid(format!(
            "origin_client_certificate {id:?} is a CA; upload the client certificate and its key with \"ca\": false"
        )));
    }
    Ok(())
}

/// Checks an origin URL: `http` or `https`, a host, optionally a port, and nothing else.
pub fn check_origin(origin: &str) -> Result<String, ApiError> {
    let bad = |why: &str| Err(ApiError::invalid(format!("invalid origin {origin:?}: {why}")));
    let uri: Uri = match origin.parse() {
        Ok(uri) => uri,
        Err(err) => return bad(&err.to_string()),
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return bad("the scheme must be http or https"),
    }
    let Some(authority) = uri.authority() else {
        return bad("a host is required");
    };
    if authority.host().is_empty() {
        return bad("a host is required");
    }
    if authority.as_str().contains('@') {
        return bad("credentials in the URL are not supported");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return bad("only scheme, host and port are allowed (no path or query)");
    }
    Ok(format!("{}://{}", uri.scheme_str().unwrap_or("http"), authority))
}

/// Checks `additional` against the primary `origin`: each a valid origin URL with the same scheme, none
/// listed twice, at most [`MAX_ADDITIONAL_ORIGINS`]. Returns them in canonical form.
pub fn check_additional_origins(origin: &str, additional: &[String]) -> Result<Vec<String>, ApiError> {
    if additional.len() > MAX_ADDITIONAL_ORIGINS {
        return Err(ApiError::invalid(format!(
            "additional_origins has {} entries; at most {MAX_ADDITIONAL_ORIGINS} are allowed",
            additional.len()
        )));
    }
    let scheme = |url: &str| url.split_once("://").map(|(s, _)| s.to_owned()).unwrap_or_default();
    let mut seen = vec![origin.to_owned()];
    for url in additional {
        let url = check_origin(url)?;
        if scheme(&url) != scheme(origin) {
            return Err(ApiError::invalid(format!(
                "additional origin {url:?} must use the scheme of origin {origin:?}: the servers share its TLS settings"
            )));
        }
        if seen.iter().any(|s| s.eq_ignore_ascii_case(&url)) {
            return Err(ApiError::invalid(format!("origin {url:?} is listed twice")));
        }
        seen.push(url);
    }
    Ok(seen.split_off(1))
}

/// The most `client_certificate_headers` a hostname may have.
pub const MAX_CERTIFICATE_HEADERS: usize = 32;

/// Checks `client_certificate_headers`: at most [`MAX_CERTIFICATE_HEADERS`], each a header name (lower-cased) that
/// is not reserved nor a style's and appears once, mapped to a client-certificate field. Errors name the entry.
fn check_certificate_headers(map: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError> {
    if map.len() > MAX_CERTIFICATE_HEADERS {
        return Err(ApiError::invalid(format!(
            "client_certificate_headers has {} entries; at most {MAX_CERTIFICATE_HEADERS} are allowed",
            map.len()
        )));
    }
    let fields = portcullis_pki::ClientAuthFacts::default();
    let fields = fields.fields().map(|(name, _)| name);
    let mut out = BTreeMap::new();
    for (header, field) in map {
        let bad = |why: String| {
            Err(ApiError::invalid(format!(
                "client_certificate_headers {header:?}: {why}"
            )))
        };
        let name = header.trim().to_ascii_lowercase();
        if name.is_empty() || name.len() > 64 || axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return bad("not a header name (letters, digits and - _ . ! # $ % & ' * + ^ ` | ~, at most 64)".into());
        }
        if let Some(why) = portcullis_pki::reserved_header(&name) {
            return bad(why.into());
        }
        let spelled = name.replace('_', "-");
        if !fields.contains(&field.as_str()) {
            return bad(format!(
                "{field:?} is not a client-certificate field; the fields are {}",
                fields.join(", ")
            ));
        }
        if out.keys().any(|k: &String| k.replace('_', "-") == spelled) {
            return bad("named twice".into());
        }
        out.insert(name, field);
    }
    Ok(out)
}

/// The longest `origin_host_header`: a DNS name (253) and a port.
const MAX_HOST_HEADER: usize = 259;

/// Checks an `origin_host_header`: a host name or address with an optional port, nothing else; lower-cased, as
/// names are compared. Empty is none. Refused with an HTTP/2 origin, which would never send it.
fn check_host_header(value: Option<String>, http2: bool) -> Result<Option<String>, ApiError> {
    let Some(value) = value.map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Err(ApiError::invalid(format!(
            "invalid origin_host_header {value:?}: {why}"
        )))
    };
    if value.len() > MAX_HOST_HEADER {
        return bad(&format!("longer than {MAX_HOST_HEADER} bytes"));
    }
    if value.contains(['@', '/', '?', '#']) {
        return bad("only a host name and an optional port are allowed");
    }
    match value.parse::<axum::http::uri::Authority>() {
        Ok(a) if a.host().is_empty() => return bad("a host name is required"),
        // The parser takes any port text; rebuilt from a numeric port, anything else differs.
        Ok(a)
            if a.port_u16()
                .map_or(a.host().to_owned(), |p| format!("{}:{p}", a.host()))
                != value =>
        {
            return bad("the port must be a number from 0 to 65535");
        }
        Ok(_) => {}
        Err(e) => return bad(&e.to_string()),
    }
    if http2 {
        return Err(ApiError::invalid(
            "origin_host_header applies to HTTP/1.1 origins; an HTTP/2 origin (origin_http2) gets the origin URL's \
             name as :authority, so give the origin by the name it expects",
        ));
    }
    Ok(Some(value))
}

fn check_origin_ca(pem: &str) -> Result<(), ApiError> {
    match portcullis_pki::pem::certificates_from_pem_or_der(pem.as_bytes()) {
        Ok(certs) if !certs.is_empty() => Ok(()),
        Ok(_) => Err(ApiError::invalid("invalid origin_ca: no certificate in it")),
        Err(err) => Err(ApiError::invalid(format!("invalid origin_ca: {err}"))),
    }
}

/// `origin` and `settings` checked as creating a hostname checks them (except that an `origin_client_certificate`
/// is an uploaded client certificate, which needs the store) and in the form the API stores them: origins as
/// `scheme://authority`, an empty `origin_ca` or `origin_client_certificate` as none. Also for clients that check
/// a configuration before writing it or compare it with the server's (`portcullis apply`).
pub fn normalize_settings(
    origin: &str,
    mut settings: HostnameSettings,
) -> Result<(String, HostnameSettings), ApiError> {
    let origin = check_origin(origin)?;
    settings.additional_origins = check_additional_origins(&origin, &settings.additional_origins)?;
    if let Some(check) = &settings.origin_health_check {
        check.check()?;
    }
    settings.origin_ca = settings.origin_ca.filter(|pem| !pem.trim().is_empty());
    if let Some(pem) = &settings.origin_ca {
        check_origin_ca(pem)?;
    }
    settings.origin_client_certificate = settings.origin_client_certificate.filter(|id| !id.is_empty());
    if settings.origin_client_certificate.is_some() {
        check_https(&origin)?;
    }
    settings.origin_host_header = check_host_header(settings.origin_host_header, settings.origin_http2)?;
    settings.client_certificate_headers = check_certificate_headers(settings.client_certificate_headers)?;
    Ok((origin, settings))
}

/// Add a hostname.
#[utoipa::path(post, path = "/zones/{zone_id}/hostnames", tag = "hostnames", request_body = CreateHostname,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 201, description = "The new hostname", body = HostnameView)))]
pub async fn create_hostname(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    limit: Option<Extension<ZoneLimit>>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<CreateHostname>,
) -> ApiResult {
    let settings = HostnameSettings {
        tls_client_auth: body.tls_client_auth,
        client_certificate_forwarding: body.client_certificate_forwarding,
        origin_tls_verify: body.origin_tls_verify,
        origin_ca: body.origin_ca,
        origin_http2: body.origin_http2,
        origin_client_certificate: body.origin_client_certificate,
        send_client_ca_names: body.send_client_ca_names,
        min_tls_version: body.min_tls_version,
        additional_origins: body.additional_origins,
        origin_steering: body.origin_steering,
        origin_health_check: body.origin_health_check,
        origin_host_header: body.origin_host_header,
        client_certificate_headers: body.client_certificate_headers,
    };
    let (origin, settings) = normalize_settings(&body.origin, settings)?;
    if let Some(id) = &settings.origin_client_certificate {
        zone_token_may_choose(limit.as_ref(), None, id)?;
        check_origin_client_certificate(&state, id).await?;
    }
    let settings = serde_json::to_value(settings).map_err(ApiError::internal)?;
    let host = state
        .store
        .create_hostname(&zone_id, &body.hostname, &origin, settings, &actor)
        .await?;
    Ok(crate::mtls_check::answer(&state, &zone_id, StatusCode::CREATED, view(host)?).await)
}

/// List a zone's hostnames.
#[utoipa::path(get, path = "/zones/{zone_id}/hostnames", tag = "hostnames",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The zone's hostnames", body = [HostnameView])))]
pub async fn list_hostnames(State(state): State<AdminState>, Path(zone_id): Path<String>) -> ApiResult {
    state.store.zone(&zone_id).await?;
    let hosts = state
        .store
        .list_hostnames(&zone_id)
        .await?
        .into_iter()
        .map(view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ok_all(hosts))
}

/// Get a hostname.
#[utoipa::path(get, path = "/zones/{zone_id}/hostnames/{hostname_id}", tag = "hostnames",
    params(("zone_id" = String, Path, description = "Zone id"), ("hostname_id" = String, Path, description = "Hostname id")),
    responses((status = 200, description = "The hostname", body = HostnameView)))]
pub async fn get_hostname(State(state): State<AdminState>, Path((zone_id, id)): Path<(String, String)>) -> ApiResult {
    Ok(ok(view(state.store.hostname(&zone_id, &id).await?)?))
}

/// Change a hostname's origin or settings.
#[utoipa::path(patch, path = "/zones/{zone_id}/hostnames/{hostname_id}", tag = "hostnames", request_body = UpdateHostname,
    params(("zone_id" = String, Path, description = "Zone id"), ("hostname_id" = String, Path, description = "Hostname id")),
    responses((status = 200, description = "The updated hostname", body = HostnameView)))]
pub async fn update_hostname(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    limit: Option<Extension<ZoneLimit>>,
    Path((zone_id, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateHostname>,
) -> ApiResult {
    let current = state.store.hostname(&zone_id, &id).await?;
    let mut settings = HostnameSettings::from_stored(&current.settings).map_err(ApiError::internal)?;
    let origin = body.origin.as_deref().map(check_origin).transpose()?;
    if let Some(mode) = body.tls_client_auth {
        settings.tls_client_auth = mode;
    }
    if let Some(style) = body.client_certificate_forwarding {
        settings.client_certificate_forwarding = style;
    }
    if let Some(verify) = body.origin_tls_verify {
        settings.origin_tls_verify = verify;
    }
    if let Some(send) = body.send_client_ca_names {
        settings.send_client_ca_names = send;
    }
    if let Some(min) = body.min_tls_version {
        settings.min_tls_version = min;
    }
    if let Some(http2) = body.origin_http2 {
        settings.origin_http2 = http2;
    }
    match body.origin_ca {
        Some(pem) if pem.trim().is_empty() => settings.origin_ca = None,
        Some(pem) => {
            check_origin_ca(&pem)?;
            settings.origin_ca = Some(pem);
        }
        None => {}
    }
    match body.origin_client_certificate {
        Some(id) if id.is_empty() => settings.origin_client_certificate = None,
        Some(id) => {
            zone_token_may_choose(limit.as_ref(), settings.origin_client_certificate.as_deref(), &id)?;
            check_origin_client_certificate(&state, &id).await?;
            settings.origin_client_certificate = Some(id);
        }
        None => {}
    }
    if let Some(steering) = body.origin_steering {
        settings.origin_steering = steering;
    }
    if let Some(check) = body.origin_health_check {
        if let Some(check) = &check {
            check.check()?;
        }
        settings.origin_health_check = check;
    }
    let primary = origin.as_deref().unwrap_or(&current.origin);
    // Checked again when only `origin` changes: a new scheme must not strand the others.
    settings.additional_origins = check_additional_origins(
        primary,
        body.additional_origins.as_ref().unwrap_or(&settings.additional_origins),
    )?;
    if settings.origin_client_certificate.is_some() {
        check_https(primary)?;
    }
    if let Some(map) = body.client_certificate_headers {
        settings.client_certificate_headers = check_certificate_headers(map)?;
    }
    // Checked whichever of the two changed: turning HTTP/2 on under a Host override is refused too.
    settings.origin_host_header = check_host_header(
        body.origin_host_header.or(settings.origin_host_header.take()),
        settings.origin_http2,
    )?;
    let settings = serde_json::to_value(settings).map_err(ApiError::internal)?;
    let host = state
        .store
        .update_hostname(
            &zone_id,
            &id,
            origin.as_deref(),
            Some(settings),
            Some(&current.settings),
            &actor,
        )
        .await?;
    Ok(crate::mtls_check::answer(&state, &zone_id, StatusCode::OK, view(host)?).await)
}

/// Remove a hostname (and its CA associations).
#[utoipa::path(delete, path = "/zones/{zone_id}/hostnames/{hostname_id}", tag = "hostnames",
    params(("zone_id" = String, Path, description = "Zone id"), ("hostname_id" = String, Path, description = "Hostname id")),
    responses((status = 200, description = "The removed hostname's id", body = IdOnly)))]
pub async fn delete_hostname(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult {
    state.store.delete_hostname(&zone_id, &id, &actor).await?;
    Ok(crate::mtls_check::answer(&state, &zone_id, StatusCode::OK, IdOnly { id }).await)
}

#[cfg(test)]
mod tests {
    use super::{
        OriginHealthCheck, check_additional_origins, check_certificate_headers, check_host_header, check_origin,
    };

    #[test]
    fn certificate_headers_name_fields_under_free_names() {
        let check = |pairs: &[(&str, &str)]| {
            check_certificate_headers(pairs.iter().map(|(h, f)| ((*h).to_owned(), (*f).to_owned())).collect())
                .map_err(|e| e.message)
        };
        let ok = check(&[
            ("X-SSL-Client-Verify", "portcullis.tls_client_auth.verify_result"),
            ("x-client-spiffe", "portcullis.tls_client_auth.cert_san_uri"),
        ])
        .expect("valid");
        assert_eq!(
            ok.keys().map(String::as_str).collect::<Vec<_>>(),
            ["x-client-spiffe", "x-ssl-client-verify"],
            "lower-cased"
        );
        for (pairs, why) in [
            (
                vec![("Host", "cf.tls_client_auth.cert_serial")],
                "sets or reads this field itself",
            ),
            (
                vec![("x_forwarded_for", "cf.tls_client_auth.cert_serial")],
                "sets or reads this field itself",
            ),
            (
                vec![("cf-cert-serial", "cf.tls_client_auth.cert_serial")],
                "a forwarding style writes",
            ),
            (
                vec![("client_cert", "cf.tls_client_auth.cert_serial")],
                "a forwarding style writes",
            ),
            (
                vec![("bad header", "cf.tls_client_auth.cert_serial")],
                "not a header name",
            ),
            (vec![("x-a", "http.host")], "is not a client-certificate field"),
            (
                vec![
                    ("x-a", "cf.tls_client_auth.cert_serial"),
                    ("X_A", "cf.tls_client_auth.cert_serial"),
                ],
                "named twice",
            ),
        ] {
            let err = check(&pairs).expect_err(why);
            assert!(
                err.starts_with("client_certificate_headers") && err.contains(why),
                "{why}: {err}"
            );
        }
        let many: Vec<(String, &str)> = (0..33)
            .map(|i| (format!("x-h{i}"), "cf.tls_client_auth.cert_serial"))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(h, f)| (h.as_str(), *f)).collect();
        assert!(check(&many).expect_err("too many").contains("at most 32"));
    }

    #[test]
    fn host_header_overrides_are_names_with_an_optional_port() {
        let ok = |v: &str| check_host_header(Some(v.into()), false).map_err(|e| e.message);
        assert_eq!(ok("Backend.Example.com"), Ok(Some("backend.example.com".into())));
        assert_eq!(ok("lb.internal:8080"), Ok(Some("lb.internal:8080".into())));
        assert_eq!(ok("[::1]:8443"), Ok(Some("[::1]:8443".into())));
        assert_eq!(ok("  "), Ok(None), "empty is none");
        for bad in [
            "user@host",
            "host/path",
            "host?q",
            "a b",
            "host:port",
            ":80",
            &"a".repeat(300),
        ] {
            let err = ok(bad).expect_err(bad);
            assert!(err.starts_with("invalid origin_host_header"), "{bad}: {err}");
        }
        let err = check_host_header(Some("a.example".into()), true).expect_err("h2");
        assert!(err.message.contains("HTTP/1.1 origins"), "{}", err.message);
        assert_eq!(check_host_header(None, true).map_err(|e| e.message), Ok(None));
    }

    #[test]
    fn health_checks_take_defaults_and_are_checked() {
        let parse = |v: serde_json::Value| serde_json::from_value::<OriginHealthCheck>(v);
        let check = parse(serde_json::json!({"path": "/healthz"})).expect("parses");
        assert_eq!((check.interval, check.timeout), (10, 2));
        assert!(check.check().is_ok());
        let check = parse(serde_json::json!({"path": "/h", "interval": 1})).expect("parses");
        assert_eq!(check.timeout, 1, "never longer than the interval by default");
        assert!(
            parse(serde_json::json!({"path": "/h", "every": 1})).is_err(),
            "unknown fields"
        );
        let msg = |v: serde_json::Value| parse(v).expect("parses").check().expect_err("refused").message;
        assert_eq!(
            msg(serde_json::json!({"path": "healthz"})),
            "invalid origin_health_check: path \"healthz\" must start with / (at most 1024 bytes)"
        );
        assert_eq!(
            msg(serde_json::json!({"path": "/h", "interval": 0})),
            "invalid origin_health_check: interval 0 must be 1 to 3600 seconds"
        );
        assert_eq!(
            msg(serde_json::json!({"path": "/h", "interval": 5, "timeout": 6})),
            "invalid origin_health_check: timeout 6 must be 1 to 60 seconds and at most the interval (5)"
        );
        assert!(msg(serde_json::json!({"path": "/a b"})).contains("not a valid request path"));
    }

    #[test]
    fn additional_origins_are_checked_against_the_origin() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_additional_origins("http://a:1", &strings(&["http://b:1/", "http://c:1"])).expect("ok"),
            ["http://b:1", "http://c:1"]
        );
        let msg = |v: &[&str]| {
            check_additional_origins("http://a:1", &strings(v))
                .expect_err("refused")
                .message
        };
        assert_eq!(
            msg(&["https://b:1"]),
            "additional origin \"https://b:1\" must use the scheme of origin \"http://a:1\": the servers share its TLS settings"
        );
        assert_eq!(msg(&["http://A:1"]), "origin \"http://A:1\" is listed twice");
        assert_eq!(
            msg(&["http://b:1", "http://b:1"]),
            "origin \"http://b:1\" is listed twice"
        );
        assert!(msg(&["http://b/path"]).contains("no path or query"));
        let many: Vec<String> = (0..33).map(|i| format!("http://b{i}:1")).collect();
        assert_eq!(
            check_additional_origins("http://a:1", &many)
                .expect_err("too many")
                .message,
            "additional_origins has 33 entries; at most 32 are allowed"
        );
    }

    #[test]
    fn origins_are_checked() {
        assert_eq!(
            check_origin("http://127.0.0.1:8080").expect("ok"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            check_origin("https://api.internal/").expect("ok"),
            "https://api.internal"
        );
        let msg = |o: &str| check_origin(o).expect_err(o).message;
        assert_eq!(
            msg("ftp://x"),
            "invalid origin \"ftp://x\": the scheme must be http or https"
        );
        assert_eq!(
            msg("http://x/path"),
            "invalid origin \"http://x/path\": only scheme, host and port are allowed (no path or query)"
        );
        assert_eq!(
            msg("http://u:p@x"),
            "invalid origin \"http://u:p@x\": credentials in the URL are not supported"
        );
        assert!(msg("not a url").starts_with("invalid origin \"not a url\": "));
    }
}
