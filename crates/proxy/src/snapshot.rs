//! The immutable configuration the data plane serves from: hosts by SNI, each with its TLS
//! config, client-certificate trust, origin, forwarding style and compiled ruleset.
//!
//! The binary builds a [`Snapshot`] from the store and publishes it through an
//! `ArcSwap<Snapshot>`; every new connection and every request loads the newest one, so a reload
//! never interrupts traffic and a revocation reaches open connections at their next request.
//! Nothing here does I/O.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use http::Uri;
use portcullis_pki::Verifier;
use portcullis_rules::CompiledRuleset;
use rustc_hash::FxHashMap;
use rustls::pki_types::CertificateDer;

use crate::ProxyError;
use crate::normalize::UrlNormalization;
use crate::origin_health::{Attempts, HealthBook, ServerHealth, Steering};
use crate::origin_tls::OriginTls;
use crate::sessions::TlsSessions;
use crate::tls::{self, MtlsMode, ServerCert};

/// Everything the proxy serves, at one store generation.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The store generation this snapshot was built from; connections recompute their
    /// certificate facts when it changes.
    pub generation: u64,
    /// Hosts by lower-case name (the SNI they are reached by). Fx rather than SipHash: the keys
    /// come from the configuration, so flooding resistance buys nothing.
    pub hosts: FxHashMap<String, Arc<Host>>,
    /// The wildcard hosts (`*.example.com`) again, by the suffix they cover (`example.com`), so that a
    /// name is matched without building its wildcard form.
    wildcards: FxHashMap<String, Arc<Host>>,
    /// The host used when the ClientHello has no SNI or an unknown one; without it such
    /// handshakes are refused with an `unrecognized_name` alert.
    pub default_host: Option<String>,
    /// TLS-ALPN-01 answers (RFC 8737) by lower-case name, served to ClientHellos that offer only `acme-tls/1`,
    /// whether or not the name is a host yet: the first certificate of a new hostname is validated this way.
    acme_answers: FxHashMap<String, Arc<rustls::ServerConfig>>,
    /// HTTP-01 answers by token: the lower-case name they are for, and the key authorization. The binary's public
    /// listener serves them; the edge itself does not speak plain HTTP.
    http_answers: FxHashMap<String, (String, String)>,
}

impl Snapshot {
    /// An empty snapshot at `generation`.
    pub fn new(generation: u64) -> Snapshot {
        Snapshot {
            generation,
            ..Snapshot::default()
        }
    }

    /// Adds (or replaces) a host under its lower-case name.
    pub fn insert(&mut self, host: Host) {
        let host = Arc::new(host);
        if let Some(suffix) = host.hostname.strip_prefix("*.") {
            self.wildcards.insert(suffix.to_owned(), host.clone());
        }
        self.hosts.insert(host.hostname.clone(), host);
    }

    /// The host configured for `name` (lower-case): its own, or else the wildcard host that covers it.
    /// `*.example.com` covers `a.example.com`, and neither `example.com` nor `a.b.example.com`, as a
    /// wildcard certificate does.
    pub fn host_named(&self, name: &str) -> Option<&Arc<Host>> {
        if let Some(host) = self.hosts.get(name) {
            return Some(host);
        }
        if self.wildcards.is_empty() {
            return None;
        }
        let (label, suffix) = name.split_once('.')?;
        if label.is_empty() || label == "*" {
            return None;
        }
        self.wildcards.get(suffix)
    }

    /// Adds the TLS-ALPN-01 answer certificate for `name`.
    pub fn add_acme_answer(&mut self, name: &str, cert: ServerCert) -> Result<(), ProxyError> {
        self.acme_answers
            .insert(name.to_ascii_lowercase(), tls::acme_answer_config(cert)?);
        Ok(())
    }

    /// The TLS-ALPN-01 answer for a ClientHello, if it offers only `acme-tls/1` and one is pending for its SNI.
    pub(crate) fn acme_answer<'a>(
        &self,
        sni: Option<&str>,
        alpn: Option<impl Iterator<Item = &'a [u8]>>,
    ) -> Option<Arc<rustls::ServerConfig>> {
        if self.acme_answers.is_empty() || !tls::offers_only_acme(alpn?) {
            return None;
        }
        self.acme_answers.get(&sni?.to_ascii_lowercase()).cloned()
    }

    /// Adds the HTTP-01 answer `key_authorization` at `token`, for requests to `name`.
    pub fn add_http_answer(&mut self, token: &str, name: &str, key_authorization: &str) {
        self.http_answers.insert(
            token.to_owned(),
            (name.to_ascii_lowercase(), key_authorization.to_owned()),
        );
    }

    /// The key authorization of the HTTP-01 answer at `token`, if one is pending for `name` (lower-case).
    pub fn http_answer(&self, token: &str, name: &str) -> Option<&str> {
        match self.http_answers.get(token) {
            Some((for_name, answer)) if for_name == name => Some(answer),
            _ => None,
        }
    }

    /// The host for a ClientHello's SNI, falling back to the default host.
    pub fn host_for_sni(&self, sni: Option<&str>) -> Option<&Arc<Host>> {
        let by_sni = sni.and_then(|s| {
            // SNI is case-insensitive; avoid an allocation when it is already lower-case.
            if s.bytes().any(|b| b.is_ascii_uppercase()) {
                self.host_named(&s.to_ascii_lowercase())
            } else {
                self.host_named(s)
            }
        });
        by_sni.or_else(|| self.default_host.as_ref().and_then(|d| self.hosts.get(d)))
    }
}

/// Client-certificate policy of a host.
#[derive(Debug, Clone)]
pub struct Mtls {
    /// Trust anchors, CRLs and revoked serials, prepared once per snapshot.
    pub verifier: Arc<Verifier>,
    pub mode: MtlsMode,
}

/// One trusted CA as the store holds it, for [`Mtls::from_cas`].
#[derive(Debug, Clone, Copy)]
pub struct TrustedCa<'a> {
    /// The CA certificate(s): PEM (a bundle may hold several) or one DER certificate.
    pub certificates: &'a [u8],
    /// The uploaded CRLs (PEM, one or more; or one DER) for these CAs, if any.
    pub crl: Option<&'a [u8]>,
    /// Serial numbers (hex, either case) this CA's certificates must be refused for.
    pub revoked_serials: &'a [String],
    /// Certificates revoked at the edge: `(serial, issuer)`, both hex; the serial's issuer is the name `issuer` (the
    /// raw DER of an issuer name without its outer header) or, when that is empty, any of these certificates.
    pub revoked_at_edge: &'a [(String, String)],
    /// Whether the certificates these CAs issued are checked with OCSP after the handshake.
    pub ocsp: Option<&'a portcullis_pki::OcspPolicy>,
    /// `Some(grace)`: a path ending at one of these certificates is refused once its CRL is `grace` seconds past its
    /// `nextUpdate`, or while it has none (see [`portcullis_pki::VerifierBuilder::require_fresh_crl`]).
    pub crl_grace: Option<i64>,
}

impl Mtls {
    /// Builds the verifier for `cas` and returns the policy together with the CA certificates
    /// (for the certificate-request hints), ready for [`HostParams::mtls`]. Hosts that trust the
    /// same CAs may share one `Arc<Verifier>` instead of calling this per host.
    pub fn from_cas(mode: MtlsMode, cas: &[TrustedCa<'_>]) -> Result<(Mtls, Vec<CertificateDer<'static>>), ProxyError> {
        let mut builder = portcullis_pki::VerifierBuilder::new();
        let mut hints = Vec::new();
        for ca in cas {
            let ders = portcullis_pki::pem::certificates_from_pem_or_der(ca.certificates)
                .map_err(|e| ProxyError::Config(format!("trusted CA: {e}")))?;
            let mut serials = Vec::with_capacity(ca.revoked_serials.len());
            for s in ca.revoked_serials {
                let bytes = portcullis_pki::hex_decode(s)
                    .ok_or_else(|| ProxyError::Config(format!("revoked serial {s:?} is not hex")))?;
                serials.push(bytes);
            }
            let mut indexes = Vec::with_capacity(ders.len());
            for der in ders {
                let index = builder
                    .add_anchor(&der)
                    .map_err(|e| ProxyError::Config(format!("trusted CA: {e}")))?;
                builder
                    .revoke_serials(index, &serials)
                    .map_err(|e| ProxyError::Config(format!("trusted CA: {e}")))?;
                if let Some(policy) = ca.ocsp {
                    builder
                        .set_ocsp(index, policy.clone())
                        .map_err(|e| ProxyError::Config(format!("trusted CA: {e}")))?;
                }
                hints.push(CertificateDer::from(der));
                indexes.push(index);
            }
            if let Some(grace) = ca.crl_grace {
                for &index in &indexes {
                    builder
                        .require_fresh_crl(index, grace)
                        .map_err(|e| ProxyError::Config(format!("trusted CA: {e}")))?;
                }
            }
            for (serial, issuer) in ca.revoked_at_edge {
                // The store checked both; a row that is not hex is skipped rather than keeping every later
                // change from reaching the edge.
                let (Some(serial), Some(issuer)) =
                    (portcullis_pki::hex_decode(serial), portcullis_pki::hex_decode(issuer))
                else {
                    tracing::warn!(serial, issuer, "a revocation at the edge that is not hex: skipped");
                    continue;
                };
                if issuer.is_empty() {
                    for &index in &indexes {
                        builder
                            .deny_issued_by(index, &serial)
                            .map_err(|e| ProxyError::Config(format!("trusted CA: {e}")))?;
                    }
                } else {
                    builder.deny(&issuer, &serial);
                }
            }
            if let Some(crl) = ca.crl {
                builder
                    .add_crls(crl)
                    .map_err(|e| ProxyError::Config(format!("CRL: {e}")))?;
            }
        }
        Ok((
            Mtls {
                verifier: Arc::new(builder.build()),
                mode,
            },
            hints,
        ))
    }
}

/// Where requests go: one origin server, or several of the same scheme and settings with a
/// [`Steering`] among them and passive health (see [`crate::origin_health`]).
#[derive(Debug, Clone)]
pub struct Origin {
    /// `http` or `https`. The request's path and query are appended as received (a path in the
    /// origin URL is ignored).
    pub scheme: http::uri::Scheme,
    /// The servers, in the configured order; never empty.
    servers: Vec<http::uri::Authority>,
    /// Each server's health, in the order of `servers`.
    health: Vec<Arc<ServerHealth>>,
    /// How requests are spread over several servers.
    pub steering: Steering,
    /// The round-robin counter, shared by the threads that serve this snapshot.
    turn: Arc<AtomicUsize>,
    /// Speak HTTP/2: with prior knowledge (h2c) to `http` origins, by ALPN `h2` to `https` ones.
    /// gRPC origins need it.
    pub http2: bool,
    /// TLS settings, for `https` origins.
    pub tls: Option<OriginTls>,
    /// The active health check of the servers, if any (only origins with several servers are checked).
    pub health_check: Option<crate::health_check::HealthCheck>,
    /// The `Host` sent instead of the client's (HTTP/1.1 origins; health checks too).
    pub host_header: Option<http::HeaderValue>,
}

impl Origin {
    /// Parses `http://host:port` or `https://host:port`. For `https`, `ca_pem` is the CA that
    /// issues the origin's certificate (`None`: the public web roots) and `verify: false` accepts
    /// any certificate; both are ignored for `http`.
    pub fn new(url: &str, http2: bool, ca_pem: Option<&[u8]>, verify: bool) -> Result<Origin, ProxyError> {
        Origin::with_identity(url, http2, ca_pem, verify, None)
    }

    /// [`Origin::new`] for an origin that requires a client certificate: `identity` is presented to it.
    /// An `http` origin with an identity is refused, since it could never be sent.
    pub fn with_identity(
        url: &str,
        http2: bool,
        ca_pem: Option<&[u8]>,
        verify: bool,
        identity: Option<crate::origin_tls::OriginIdentity>,
    ) -> Result<Origin, ProxyError> {
        let (scheme, authority) = parse_origin_url(url)?;
        let tls = if scheme == http::uri::Scheme::HTTPS {
            Some(OriginTls::with_identity(ca_pem, verify, http2, identity)?)
        } else {
            if identity.is_some() {
                return Err(ProxyError::Config(format!(
                    "origin {url:?}: a client certificate needs an https:// origin"
                )));
            }
            None
        };
        Ok(Origin {
            scheme,
            servers: vec![authority],
            health: vec![Arc::default()],
            steering: Steering::default(),
            turn: Arc::default(),
            http2,
            tls,
            health_check: None,
            host_header: None,
        })
    }

    /// Adds another server, with the same scheme and settings as the first.
    pub fn add_server(&mut self, url: &str) -> Result<(), ProxyError> {
        let (scheme, authority) = parse_origin_url(url)?;
        if scheme != self.scheme {
            return Err(ProxyError::Config(format!(
                "origin {url:?}: every server of an origin must use {}://",
                self.scheme
            )));
        }
        if self.servers.contains(&authority) {
            return Err(ProxyError::Config(format!("origin {url:?} is listed twice")));
        }
        self.servers.push(authority);
        self.health.push(Arc::default());
        Ok(())
    }

    /// Takes the servers' health and the round-robin turn of `hostname` from `book`, so that they carry over
    /// from earlier snapshots.
    pub fn track_health(&mut self, book: &HealthBook, hostname: &str) {
        for (server, health) in self.servers.iter().zip(self.health.iter_mut()) {
            *health = book.get(&format!("{hostname} {}://{}", self.scheme, server));
        }
        self.turn = book.turn(hostname);
    }

    /// Lets go of health-check marks: for an origin that is no longer checked, a mark from when it was would
    /// otherwise hold a server down for good, since only a passing check clears it.
    pub fn clear_check_marks(&self) {
        for health in &self.health {
            // Read first: this runs for every unchecked host twice a second.
            if health.is_check_down() {
                health.recovered();
            }
        }
    }

    /// The servers, in the configured order.
    pub fn servers(&self) -> &[http::uri::Authority] {
        &self.servers
    }

    /// Whether each server may be tried now, in the configured order.
    pub fn servers_up(&self) -> Vec<bool> {
        self.health.iter().map(|h| h.is_up()).collect()
    }

    /// The order in which one request tries the servers.
    pub(crate) fn attempts(&self) -> Attempts {
        Attempts::begin(self.steering, &self.health, &self.turn)
    }

    /// The next server of `attempts` to try, if any is left.
    pub(crate) fn next_server(&self, attempts: &mut Attempts) -> Option<usize> {
        attempts.next(&self.health)
    }

    pub(crate) fn server(&self, index: usize) -> &http::uri::Authority {
        &self.servers[index]
    }

    pub(crate) fn health_of(&self, index: usize) -> &ServerHealth {
        &self.health[index]
    }

    /// Records how connecting to server `index` went; only origins with several servers keep track.
    pub(crate) fn connected(&self, index: usize, hostname: &str, failure: Option<&dyn std::fmt::Display>) {
        if self.servers.len() < 2 {
            return;
        }
        match failure {
            None => self.health[index].succeeded(),
            Some(error) => {
                let down = self.health[index].failed();
                crate::observe::origin_server_down(hostname);
                tracing::warn!(
                    host = %hostname,
                    server = %self.servers[index],
                    %error,
                    down_for_secs = down.as_secs(),
                    "origin server unreachable; the other servers take its requests"
                );
            }
        }
    }
}

fn parse_origin_url(url: &str) -> Result<(http::uri::Scheme, http::uri::Authority), ProxyError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ProxyError::Config(format!("origin {url:?}: {e}")))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| ProxyError::Config(format!("origin {url:?}: no scheme")))?;
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| ProxyError::Config(format!("origin {url:?}: no host")))?;
    if scheme != http::uri::Scheme::HTTPS && scheme != http::uri::Scheme::HTTP {
        return Err(ProxyError::Config(format!(
            "origin {url:?}: the scheme must be http or https"
        )));
    }
    Ok((scheme, authority))
}

/// One way of passing the client certificate to the origin. Client-sent copies of every one of these
/// headers are removed whatever a host forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forwarding {
    /// Nothing is added.
    #[default]
    None,
    /// `Cf-Client-Cert-Der-Base64` and `Cf-Client-Cert-Sha256` (Cloudflare's Access headers).
    Cloudflare,
    /// The 17 `cf-cert-*` headers of Cloudflare's managed transform.
    CfCertHeaders,
    /// RFC 9440 `Client-Cert` and `Client-Cert-Chain`, only for a verified, unrevoked certificate.
    Rfc9440,
    /// Envoy's `X-Forwarded-Client-Cert` with `Hash`, `Subject`, `URI` and `DNS`.
    Xfcc,
    /// [`Forwarding::Xfcc`] with Envoy's `Cert` and `Chain` too (the URL-encoded PEM of the certificate and of its
    /// chain).
    XfccCert,
}

impl Forwarding {
    /// Every style, `None` first.
    pub(crate) const ALL: [Forwarding; 6] = [
        Forwarding::None,
        Forwarding::Cloudflare,
        Forwarding::CfCertHeaders,
        Forwarding::Rfc9440,
        Forwarding::Xfcc,
        Forwarding::XfccCert,
    ];

    fn bit(self) -> u8 {
        match self {
            Forwarding::None => 0,
            Forwarding::Cloudflare => 1,
            Forwarding::CfCertHeaders => 1 << 1,
            Forwarding::Rfc9440 => 1 << 2,
            Forwarding::Xfcc => 1 << 3,
            Forwarding::XfccCert => 1 << 4,
        }
    }
}

/// The ways a host passes the client certificate to the origin: any combination of [`Forwarding`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardingSet(u8);

impl ForwardingSet {
    /// Whether `style` is one of them (`None` is in every set).
    pub fn contains(self, style: Forwarding) -> bool {
        self.0 & style.bit() == style.bit()
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The styles, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = Forwarding> {
        Forwarding::ALL
            .into_iter()
            .filter(move |f| *f != Forwarding::None && self.contains(*f))
    }
}

impl From<Forwarding> for ForwardingSet {
    fn from(style: Forwarding) -> ForwardingSet {
        ForwardingSet(style.bit())
    }
}

impl FromIterator<Forwarding> for ForwardingSet {
    fn from_iter<I: IntoIterator<Item = Forwarding>>(styles: I) -> ForwardingSet {
        ForwardingSet(styles.into_iter().fold(0, |bits, f| bits | f.bit()))
    }
}

/// Cloudflare's managed transforms a host applies (those its zone turned on), besides certificate forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transforms {
    /// `add_true_client_ip_headers`: `True-Client-IP` carries the client's address (a client-sent one is replaced).
    pub true_client_ip: bool,
    /// `add_security_headers`: responses get `X-Content-Type-Options`, `X-Frame-Options`, `X-XSS-Protection` and
    /// `Referrer-Policy` when the origin set none of its own.
    pub security_headers: bool,
    /// `remove_x-powered-by_header`: responses lose `X-Powered-By`.
    pub remove_powered_by: bool,
}

impl Transforms {
    /// Whether any applies to responses.
    pub(crate) fn on_responses(self) -> bool {
        self.security_headers || self.remove_powered_by
    }
}

/// One protected hostname.
#[derive(Debug)]
pub struct Host {
    /// Lower-case host name; also the SNI it answers. `*.example.com` answers every name one label
    /// under `example.com` that has no host of its own.
    pub hostname: String,
    /// Whether `hostname` is a wildcard (`*.example.com`).
    pub(crate) wildcard: bool,
    /// For security events; the proxy does not interpret it.
    pub zone_id: Option<String>,
    /// The host's TLS configs (with session tickets for TLS 1.3 clients, without for TLS 1.2 ones).
    pub(crate) server_configs: tls::HostConfigs,
    pub mtls: Option<Mtls>,
    pub origin: Origin,
    pub forwarding: ForwardingSet,
    /// Certificate fields sent to the origin under header names of the operator's choosing.
    pub field_headers: crate::field_headers::FieldHeaders,
    /// The zone's managed transforms.
    pub transforms: Transforms,
    /// The zone's ruleset. Not public: `has_rules` is derived from it when the host is built.
    pub(crate) ruleset: Arc<CompiledRuleset>,
    /// The zone's rate-limiting rules (`http_ratelimit`), evaluated after `ruleset` lets a request through.
    pub(crate) ratelimit: Arc<CompiledRuleset>,
    /// The fields `ruleset` and `ratelimit` read together: what a request's rules context is filled with.
    pub(crate) rule_fields: portcullis_rules::FieldSet,
    /// Whether either ruleset has an enabled rule. Not the same as `rule_fields` being non-empty: `true` reads no
    /// field and must still block.
    pub(crate) has_rules: bool,
    /// The zone's URL normalization: which path the rules and the origin see.
    pub url_normalization: UrlNormalization,
    /// Request counters and latency histogram labelled with this host.
    pub(crate) metrics: crate::observe::HostMetrics,
    /// `hostname` as a header value (`X-Forwarded-Host` of requests whose host is the SNI's).
    pub(crate) hostname_header: Option<http::HeaderValue>,
}

/// Everything needed to build a [`Host`].
#[derive(Debug)]
pub struct HostParams {
    pub hostname: String,
    pub zone_id: Option<String>,
    pub cert: ServerCert,
    /// The policy plus the CA certificates whose subjects are sent as hints (normally the same
    /// CAs the verifier trusts).
    pub mtls: Option<(Mtls, Vec<CertificateDer<'static>>)>,
    pub origin: Origin,
    pub forwarding: ForwardingSet,
    pub transforms: Transforms,
    pub ruleset: Arc<CompiledRuleset>,
    /// Compiled with `CompiledRuleset::compile_ratelimit`; empty when the zone has none.
    pub ratelimit: Arc<CompiledRuleset>,
    pub url_normalization: UrlNormalization,
    /// The host's resumption state; pass the same one to every rebuild so sessions survive it.
    pub sessions: TlsSessions,
    /// The oldest TLS version the host accepts.
    pub min_tls_version: MinTlsVersion,
    /// Certificate fields sent to the origin under header names of the operator's choosing.
    pub field_headers: crate::field_headers::FieldHeaders,
}

/// The oldest TLS version a host accepts: 1.2 (the default, as on Cloudflare) or 1.3. rustls speaks neither 1.0
/// nor 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinTlsVersion {
    #[default]
    Tls12,
    Tls13,
}

impl Host {
    /// Builds the host and its `ServerConfig` (TLS 1.2+1.3, ALPN h2/http1.1, client auth per
    /// the mTLS policy).
    pub fn new(params: HostParams) -> Result<Host, ProxyError> {
        let client_auth = params
            .mtls
            .as_ref()
            .map(|(m, cas)| (m.mode, m.verifier.clone(), cas.as_slice()));
        let server_configs = tls::server_config(params.cert, client_auth, &params.sessions, params.min_tls_version)?;
        let hostname = params.hostname.to_ascii_lowercase();
        Ok(Host {
            metrics: crate::observe::HostMetrics::new(&hostname),
            // A wildcard host forwards the name each request asked for, never `*.…`.
            hostname_header: http::HeaderValue::from_str(&hostname)
                .ok()
                .filter(|_| !hostname.starts_with("*.")),
            wildcard: hostname.starts_with("*."),
            hostname,
            zone_id: params.zone_id,
            server_configs,
            mtls: params.mtls.map(|(m, _)| m),
            origin: params.origin,
            forwarding: params.forwarding,
            field_headers: params.field_headers,
            transforms: params.transforms,
            rule_fields: {
                let mut fields = *params.ruleset.fields();
                fields.extend(params.ratelimit.fields());
                fields
            },
            has_rules: params
                .ruleset
                .rules()
                .iter()
                .chain(params.ratelimit.rules())
                .any(|r| r.rule().enabled),
            ruleset: params.ruleset,
            ratelimit: params.ratelimit,
            url_normalization: params.url_normalization,
        })
    }
}
