//! Forwarding an allowed request to the host's origin: header hygiene (hop-by-hop headers,
//! spoofed certificate headers, `X-Forwarded-*`), the host's certificate-forwarding style, and the
//! pooled upstream clients. Bodies stream through untouched, and trailers with only what
//! `clean_trailers` leaves of them; nothing is buffered.
//!
//! Supported origins: `http://` (HTTP/1.1, or h2c with prior knowledge for gRPC) and `https://`
//! (HTTP/1.1 or HTTP/2 by ALPN). WebSocket upgrades pass through to HTTP/1.1 origins. Request
//! bodies are capped in size and read time (see `body`). A request without a body goes to the next
//! of the host's origin servers when connecting to one fails (see `origin_health`); nothing else is
//! retried. Not here: other upgrades, WebSocket over HTTP/2 (extended CONNECT).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portcullis_pki::ClientAuthFacts;
use rustls::pki_types::CertificateDer;

use crate::body::{BodyFailure, BodyState, HeldBody, IdleBody, LimitedBody, RequestBody};
use crate::config::ProxyConfig;
use crate::conn::ConnInfo;
use crate::fields::Seen;
use crate::observe;
use crate::origin_h1::{OriginError, OriginPool};
use crate::origin_health::Attempts;
use crate::origin_tls::{HttpsConnector, OriginTls};
use crate::respond;
use crate::snapshot::{Forwarding, ForwardingSet, Host, Origin};

/// The body type of every response the proxy sends.
pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// On a 101 response to a WebSocket upgrade: the origin's side of the upgraded connection.
#[derive(Clone)]
pub(crate) struct OriginUpgrade(pub(crate) OnUpgrade);

/// The 17 headers of Cloudflare's "Add TLS client auth headers" managed transform.
pub const CF_CERT_HEADERS: [&str; 17] = [
    "cf-cert-revoked",
    "cf-cert-verified",
    "cf-cert-presented",
    "cf-cert-issuer-dn",
    "cf-cert-subject-dn",
    "cf-cert-issuer-dn-rfc2253",
    "cf-cert-subject-dn-rfc2253",
    "cf-cert-issuer-dn-legacy",
    "cf-cert-subject-dn-legacy",
    "cf-cert-serial",
    "cf-cert-issuer-serial",
    "cf-cert-fingerprint-sha256",
    "cf-cert-fingerprint-sha1",
    "cf-cert-not-before",
    "cf-cert-not-after",
    "cf-cert-ski",
    "cf-cert-issuer-ski",
];

/// Certificate headers the proxy alone may set; client-sent copies are always removed.
pub const CERT_HEADERS: [&str; 5] = [
    "cf-client-cert-der-base64",
    "cf-client-cert-sha256",
    "client-cert",
    "client-cert-chain",
    "x-forwarded-client-cert",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_seen(headers, Seen::of(headers));
}

/// [`strip_hop_by_hop`] with the fields of `headers` already noted.
fn strip_seen(headers: &mut HeaderMap, seen: Seen) {
    if seen.has(Seen::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in seen.hop_by_hop() {
        headers.remove(name);
    }
}

/// Whether `a` and `b` are the same header name once `_` is read as `-`, as CGI, WSGI and Rack origins read
/// them (`X_Forwarded_Client_Cert` reaches them as `HTTP_X_FORWARDED_CLIENT_CERT`, like the real header).
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'_' && y == b'-') || (x == b'-' && y == b'_'))
}

/// The fields the proxy sets itself, whose underscore spellings a client could use to stand in for them at an
/// origin that reads `_` as `-`.
const FORWARDED_HEADERS: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// `True-Client-IP`, which the zone's managed transform sets: a client-sent one is always removed, so that an origin
/// that trusts it can never be handed a forged one (also not after the transform is turned off).
const TRUE_CLIENT_IP: &str = "true-client-ip";
const TRUE_CLIENT_IP_NAME: HeaderName = HeaderName::from_static(TRUE_CLIENT_IP);

/// Whether `name` (lower-case, as `http` keeps names) is one of [`CERT_HEADERS`] or [`CF_CERT_HEADERS`] or
/// [`TRUE_CLIENT_IP`], with `_` for `-` or not, or an underscore spelling of one of [`FORWARDED_HEADERS`] (their real
/// spellings are handled apart: `X-Forwarded-For` is kept and extended).
fn is_cert_header(name: &str) -> bool {
    // Every request's fields pass through here: most (content-type, cookie…) are told apart by their start.
    let b = name.as_bytes();
    if b.len() == TRUE_CLIENT_IP.len() && b[0] == b't' {
        return same_name(name, TRUE_CLIENT_IP);
    }
    let candidate = b.starts_with(b"cf")
        || b.starts_with(b"client")
        || (b.len() > 11 && b[0] == b'x' && same_name(&name[..11], "x-forwarded"));
    candidate
        && (CERT_HEADERS.iter().chain(&CF_CERT_HEADERS).any(|n| same_name(name, n))
            || (name.contains('_') && FORWARDED_HEADERS.iter().any(|n| same_name(name, n))))
}

/// Removes client-sent copies of the certificate headers, also spelled with underscores, and underscore
/// spellings of the `X-Forwarded-*` fields. One pass finds whether there are any: there are none unless a
/// client is trying to spoof them.
fn remove_cert_headers(headers: &mut HeaderMap) {
    remove_where(headers, is_cert_header);
}

/// Removes every field whose name `unwanted` picks, with all its values. One pass finds whether there are any: most
/// messages have none, and then nothing is collected.
pub(crate) fn remove_where(headers: &mut HeaderMap, unwanted: impl Fn(&str) -> bool) {
    if headers.keys().any(|k| unwanted(k.as_str())) {
        let found: Vec<HeaderName> = headers.keys().filter(|k| unwanted(k.as_str())).cloned().collect();
        for name in found {
            headers.remove(name);
        }
    }
}

/// Fields a request's trailer section may not carry to the origin, besides the certificate headers and the
/// hop-by-hop fields: those only the proxy sets (`X-Forwarded-*`, `Forwarded`), and those that frame, route or
/// authenticate a request, which the rules and the proxy read in the header section only.
const NOT_IN_TRAILERS: [&str; 10] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-length",
    "transfer-encoding",
];

/// Cleans a request's trailer section before it goes to the origin. RFC 9110 forbids merging trailers into the
/// header section, but some origin frameworks do it: there a trailer could stand in for a field the proxy sets
/// (a certificate header, `X-Forwarded-For`) or for one the rules were evaluated without. Removed, in any
/// `_`/`-` spelling: the certificate headers, `True-Client-IP`, [`NOT_IN_TRAILERS`], `front` (the names a front
/// proxy passes the client's certificate in), and the hop-by-hop fields. Other trailers (gRPC's, checksums) go on.
pub(crate) fn clean_trailers(trailers: &mut HeaderMap, front: &[HeaderName]) {
    strip_hop_by_hop(trailers);
    remove_where(trailers, |name| {
        is_cert_header(name)
            || NOT_IN_TRAILERS.iter().any(|n| same_name(name, n))
            || front.iter().any(|n| same_name(name, n.as_str()))
    });
}

/// A header value from arbitrary text: bytes a header cannot carry (controls) become `?`.
pub(crate) fn value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_bytes(text.as_bytes()).ok().or_else(|| {
        let cleaned: Vec<u8> = text
            .bytes()
            .map(|b| if b < 0x20 && b != b'\t' || b == 0x7f { b'?' } else { b })
            .collect();
        HeaderValue::from_bytes(&cleaned).ok()
    })
}

/// Sets `name` to `text`. Names come from constants where the call is per request: `HeaderName::from_static` in a
/// constant is parsed once, at compile time, and per call otherwise.
fn put(headers: &mut HeaderMap, name: HeaderName, text: &str) {
    if let Some(v) = value(text) {
        headers.insert(name, v);
    }
}

fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// An XFCC `Subject`: always a quoted string, as Envoy writes it, with no `"` inside, so that no subject can
/// end the quotes early and add keys or elements of its own, whichever way an origin parses quoted strings.
/// A quote (escaped `\"` in the DN, or bare) is written as the DN escape `\22`, which DN parsers read as a
/// quote; the DN's other escapes (`\,`) stay as they are.
fn xfcc_subject(dn: &str) -> String {
    let mut v = dn.replace("\\\"", "\\22").replace('"', "\\22");
    if v.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1 {
        // A lone trailing backslash would escape the closing quote.
        v.pop();
        v.push_str("\\5C");
    }
    format!("\"{v}\"")
}

/// An XFCC `URI` or `DNS` value: `"` and `\` percent-encoded (neither belongs in a URI or a DNS name), and
/// quoted when it holds `,`, `;` or `=`.
fn xfcc_value(v: &str) -> String {
    let v = v.replace('"', "%22").replace('\\', "%5C");
    if v.contains([',', ';', '=']) {
        format!("\"{v}\"")
    } else {
        v
    }
}

/// The longest `Cert` plus `Chain` of an XFCC value (the URL-encoded PEMs); past it `Chain` is left out, then
/// `Cert`, rather than send a field origins refuse (NGINX's default limit is 8 KiB per header line, which the
/// rest of the value must fit in too).
const MAX_XFCC_CERTS: usize = 6 * 1024;

/// A certificate's PEM, percent-encoded as Envoy does for XFCC's `Cert` and `Chain`: everything but
/// RFC 3986's unreserved characters.
fn url_encoded_pem(out: &mut String, der: &[u8]) {
    for b in portcullis_pki::pem::encode("CERTIFICATE", der).bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Who a forwarded request is from: the certificate's facts and chain, and the address, each from the connection
/// or from a trusted front proxy's headers.
pub(crate) struct FromClient<'a> {
    pub facts: &'a ClientAuthFacts,
    pub chain: &'a [CertificateDer<'static>],
    pub ip: &'a str,
}

/// Removes client-sent certificate headers and adds the host's styles.
pub(crate) fn certificate_headers(
    headers: &mut HeaderMap,
    styles: ForwardingSet,
    facts: &ClientAuthFacts,
    chain: &[CertificateDer<'static>],
) {
    remove_cert_headers(headers);
    for style in styles.iter() {
        // `xfcc_cert` writes the XFCC field with more in it.
        if style == Forwarding::Xfcc && styles.contains(Forwarding::XfccCert) {
            continue;
        }
        add_certificate_headers(headers, style, facts, chain);
    }
}

fn add_certificate_headers(
    headers: &mut HeaderMap,
    style: Forwarding,
    facts: &ClientAuthFacts,
    chain: &[CertificateDer<'static>],
) {
    let leaf = chain.first().map(|c| c.as_ref());
    let trusted = facts.cert_verified && !facts.cert_revoked;
    match style {
        Forwarding::None => {}
        Forwarding::Cloudflare => {
            if let Some(der) = leaf {
                put(
                    headers,
                    HeaderName::from_static("cf-client-cert-der-base64"),
                    &base64::engine::general_purpose::STANDARD.encode(der),
                );
                put(
                    headers,
                    HeaderName::from_static("cf-client-cert-sha256"),
                    &facts.cert_fingerprint_sha256,
                );
            }
        }
        Forwarding::CfCertHeaders => {
            let f = facts;
            let values: [&str; 17] = [
                bool_text(f.cert_revoked),
                bool_text(f.cert_verified),
                bool_text(f.cert_presented),
                &f.cert_issuer_dn,
                &f.cert_subject_dn,
                &f.cert_issuer_dn_rfc2253,
                &f.cert_subject_dn_rfc2253,
                &f.cert_issuer_dn_legacy,
                &f.cert_subject_dn_legacy,
                &f.cert_serial,
                &f.cert_issuer_serial,
                &f.cert_fingerprint_sha256,
                &f.cert_fingerprint_sha1,
                &f.cert_not_before,
                &f.cert_not_after,
                &f.cert_ski,
                &f.cert_issuer_ski,
            ];
            for (name, text) in CF_CERT_HEADERS.into_iter().zip(values) {
                put(headers, HeaderName::from_static(name), text);
            }
        }
        Forwarding::Rfc9440 => {
            // Cloudflare's recommended transform rules (8.3): only a trusted certificate, never a truncated one.
            if trusted && !facts.cert_rfc9440_too_large && !facts.cert_rfc9440.is_empty() {
                put(headers, HeaderName::from_static("client-cert"), &facts.cert_rfc9440);
                if !facts.cert_chain_rfc9440.is_empty() && !facts.cert_chain_rfc9440_too_large {
                    put(
                        headers,
                        HeaderName::from_static("client-cert-chain"),
                        &facts.cert_chain_rfc9440,
                    );
                }
            }
        }
        Forwarding::Xfcc | Forwarding::XfccCert => {
            // As Envoy does for validated certificates only, so an origin can trust the header as is.
            if trusted {
                let mut xfcc = format!("Hash={}", facts.cert_fingerprint_sha256);
                if style == Forwarding::XfccCert
                    && let Some(leaf) = leaf
                {
                    let mut cert = String::new();
                    url_encoded_pem(&mut cert, leaf);
                    let mut all = String::new();
                    for der in chain {
                        url_encoded_pem(&mut all, der);
                    }
                    if cert.len() + all.len() <= MAX_XFCC_CERTS {
                        xfcc.push_str(&format!(";Cert=\"{cert}\";Chain=\"{all}\""));
                    } else if cert.len() <= MAX_XFCC_CERTS {
                        xfcc.push_str(&format!(";Cert=\"{cert}\""));
                    }
                }
                xfcc.push_str(";Subject=");
                xfcc.push_str(&xfcc_subject(&facts.cert_subject_dn_rfc2253));
                for uri in &facts.san_uri {
                    xfcc.push_str(";URI=");
                    xfcc.push_str(&xfcc_value(uri));
                }
                for dns in &facts.san_dns {
                    xfcc.push_str(";DNS=");
                    xfcc.push_str(&xfcc_value(dns));
                }
                put(headers, HeaderName::from_static("x-forwarded-client-cert"), &xfcc);
            }
        }
    }
}

fn client_builder(http2: bool) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .http2_only(http2);
    b
}

/// The pooled upstream clients, shared by all connections and snapshots.
pub(crate) struct Upstream {
    /// Requests without a body to plain-HTTP HTTP/1.1 origins.
    origin_h1: Arc<OriginPool>,
    http1: Client<HttpConnector, LimitedBody>,
    h2c: Client<HttpConnector, LimitedBody>,
    /// One client per distinct origin TLS setting ([`OriginTls`] key), created on first use, so
    /// pools survive snapshot reloads.
    https: Mutex<HashMap<String, Client<HttpsConnector, LimitedBody>>>,
    connector: HttpConnector,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_body: u64,
    body_timeout: Duration,
    /// See `ProxyConfig::stream_idle_timeout`.
    stream_idle: Duration,
    /// The header a front proxy passes the client's certificate in (when configured): never forwarded, also not
    /// as a request trailer.
    front_cert: Arc<[HeaderName]>,
}

impl Upstream {
    pub(crate) fn new(config: &ProxyConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.upstream_connect_timeout));
        connector.set_nodelay(true);
        Upstream {
            origin_h1: OriginPool::new(config.upstream_connect_timeout, config.stream_idle_timeout),
            http1: client_builder(false).build(connector.clone()),
            h2c: client_builder(true).build(connector.clone()),
            https: Mutex::new(HashMap::new()),
            connector,
            connect_timeout: config.upstream_connect_timeout,
            response_timeout: config.upstream_response_timeout,
            max_body: config.max_request_body_bytes,
            // A zero timeout would fail every body that is not already buffered.
            body_timeout: config.request_body_timeout.max(Duration::from_millis(10)),
            front_cert: config.client_cert_header.iter().map(|h| h.name().clone()).collect(),
            stream_idle: config.stream_idle_timeout,
        }
    }

    /// Closes pooled origin connections that are idle too long or closed by the origin.
    pub(crate) fn sweep(&self) {
        self.origin_h1.sweep();
    }

    fn https_client(&self, tls: &OriginTls, http2: bool) -> Client<HttpsConnector, LimitedBody> {
        let build =
            || client_builder(http2).build(HttpsConnector::new(self.connector.clone(), tls, self.connect_timeout));
        match self.https.lock() {
            Ok(mut map) => map.entry(tls.key.clone()).or_insert_with(build).clone(),
            // A poisoned map only costs pooling.
            Err(_) => build(),
        }
    }

    /// Sends a health check (a request without a body) to the server its URI names, with `origin`'s
    /// protocol and TLS settings; the status, or why there is none.
    pub(crate) async fn check(&self, origin: &Origin, head: http::request::Parts) -> Result<StatusCode, String> {
        let body = LimitedBody::new(
            RequestBody::Empty,
            self.max_body,
            self.body_timeout,
            Arc::new(BodyState::default()),
            self.front_cert.clone(),
        );
        let mut request = Request::from_parts(head, body);
        if origin.http2 {
            *request.version_mut() = Version::HTTP_2;
        }
        let sent = match &origin.tls {
            Some(tls) => self.https_client(tls, origin.http2).request(request),
            None if origin.http2 => self.h2c.request(request),
            None => self.http1.request(request),
        };
        // The body is not read: a check needs only the status.
        sent.await.map(|resp| resp.status()).map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                source = inner.source();
            }
            text
        })
    }

    /// Sends `req` to `host`'s origin and returns its response, or an error page that names
    /// nothing internal: 413 (body over the limit), 408 (body read timeout), 502, 504 (for a gRPC
    /// call, the matching gRPC status instead); the flag says whether the proxy answered with an
    /// error of its own.
    ///
    /// A WebSocket upgrade (HTTP/1.1 `Connection: upgrade`, `Upgrade: websocket`) is forwarded
    /// with its upgrade headers; the origin's 101 carries its upgraded side as an
    /// [`OriginUpgrade`] extension, for the client connection to relay bytes to.
    pub(crate) async fn forward(
        &self,
        req: Request<RequestBody>,
        host: &Host,
        conn: &Arc<ConnInfo>,
        client: FromClient<'_>,
        request_host: &str,
    ) -> (Response<Body>, bool) {
        let downstream_version = req.version();
        let grpc = crate::handler::grpc_call(req.headers(), req.uri().path()).is_some();
        let error = |status| failure(status, grpc, downstream_version);
        let seen = Seen::of(req.headers());
        if seen.has(Seen::CONTENT_LENGTH) && content_length(req.headers()).is_some_and(|len| len > self.max_body) {
            // Refused before anything reaches the origin.
            return error(StatusCode::PAYLOAD_TOO_LARGE);
        }
        let upgrade = if seen.has(Seen::CONNECTION) && seen.has(Seen::UPGRADE) {
            websocket_upgrade(&req)
        } else {
            None
        };
        if upgrade.is_some() && host.origin.http2 {
            // An HTTP/2 origin cannot take an HTTP/1.1 upgrade.
            return error(StatusCode::NOT_IMPLEMENTED);
        }

        let (mut parts, body) = req.into_parts();
        // HTTP/2 clients name the host in `:authority` (and an absolute-form HTTP/1.1 target
        // overrides `Host`); an HTTP/1.1 origin needs it as `Host`.
        let authority_host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());

        let wants_trailers = seen.has(Seen::TE)
            && parts.headers.get_all(header::TE).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")))
            });
        strip_seen(&mut parts.headers, seen);
        if wants_trailers {
            parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(protocol) = &upgrade {
            // Hop-by-hop, so stripped above; an upgrade is the one case where they must go on.
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol.clone());
        }
        certificate_headers(&mut parts.headers, host.forwarding, client.facts, client.chain);
        host.field_headers.apply(&mut parts.headers, client.facts);

        // Earlier X-Forwarded-For fields are folded, in order, into one value ending with the client.
        let mut xff = String::new();
        let earlier_xff = seen
            .has(Seen::X_FORWARDED_FOR)
            .then(|| parts.headers.get_all(X_FORWARDED_FOR));
        for earlier in earlier_xff.into_iter().flatten() {
            if let Ok(v) = earlier.to_str()
                && !v.trim().is_empty()
            {
                xff.push_str(v.trim());
                xff.push_str(", ");
            }
        }
        if xff.is_empty() {
            // The usual case: the connection's address, made a header value once per connection.
            parts.headers.insert(X_FORWARDED_FOR, conn.client_ip_value.clone());
        } else {
            xff.push_str(&conn.client_ip);
            put(&mut parts.headers, X_FORWARDED_FOR, &xff);
        }
        parts
            .headers
            .insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        if host.transforms.true_client_ip {
            put(&mut parts.headers, TRUE_CLIENT_IP_NAME, client.ip);
        }
        match &host.hostname_header {
            Some(v) if request_host == host.hostname => {
                parts.headers.insert(X_FORWARDED_HOST, v.clone());
            }
            _ => put(&mut parts.headers, X_FORWARDED_HOST, request_host),
        }

        let origin = &host.origin;
        let mut attempts = origin.attempts();
        let mut server = origin.next_server(&mut attempts).unwrap_or(0);
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(origin.scheme.clone());
        uri.authority = Some(origin.server(server).clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        let Ok(uri) = Uri::from_parts(uri) else {
            return error(StatusCode::BAD_REQUEST);
        };
        parts.uri = uri;

        if host.origin.http2 {
            parts.version = Version::HTTP_2;
            // HTTP/2 carries the authority in the URI; a Host field would contradict it.
            parts.headers.remove(header::HOST);
        } else {
            parts.version = Version::HTTP_11;
            // The hostname's override, or the client's Host, so the origin sees the name it was asked for.
            if let Some(h) = host.origin.host_header.clone().or(authority_host) {
                parts.headers.insert(header::HOST, h);
            }
        }

        if host.origin.tls.is_none()
            && !host.origin.http2
            && upgrade.is_none()
            && hyper::body::Body::is_end_stream(&body)
        {
            // Most API reads: the proxy's own client, in this task (see `origin_h1`).
            let resp = loop {
                let sent = self.origin_h1.send(&parts, origin.server(server).as_str());
                match tokio::time::timeout(self.response_timeout, sent).await {
                    Ok(Ok(resp)) => {
                        origin.connected(server, &host.hostname, None);
                        break resp;
                    }
                    Err(_) => {
                        observe::upstream_error(&host.hostname, "timeout");
                        return error(StatusCode::GATEWAY_TIMEOUT);
                    }
                    Ok(Err(OriginError::Connect(e))) => {
                        // Nothing was sent, so the next server may take the request.
                        origin.connected(server, &host.hostname, Some(&e));
                        if let Some(next) = origin.next_server(&mut attempts) {
                            server = next;
                            continue;
                        }
                        origin_failed(host, "connect", &e);
                        return error(StatusCode::BAD_GATEWAY);
                    }
                    Ok(Err(e)) => {
                        origin_failed(host, "protocol", &e);
                        return error(StatusCode::BAD_GATEWAY);
                    }
                }
            };
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if host.transforms.on_responses() {
                transform_response(&mut parts.headers, host.transforms);
            }
            parts.version = downstream_version;
            return (Response::from_parts(parts, body), false);
        }
        // Boxed: this path (bodies, upgrades, https and HTTP/2 origins) holds hyper's client
        // futures, which would otherwise enlarge every request's future, including the
        // fast path's above.
        let boxed = Box::pin(self.forward_with_hyper(
            parts,
            body,
            host,
            (attempts, server),
            upgrade,
            (downstream_version, grpc),
        ));
        boxed.await
    }

    /// [`Upstream::forward`] through hyper's client: requests with a body, WebSocket upgrades,
    /// and https or HTTP/2 origins.
    ///
    /// `(attempts, server)` is where the request goes first and where next if connecting fails. With several
    /// servers, the body is held apart ([`HeldBody`]) so that a request, with or without a body, goes on to the
    /// next server when the first cannot be reached, as nothing of it was sent; once a byte of the body went to an
    /// origin, it is not sent again.
    async fn forward_with_hyper(
        &self,
        parts: http::request::Parts,
        body: RequestBody,
        host: &Host,
        (mut attempts, mut server): (Attempts, usize),
        upgrade: Option<HeaderValue>,
        (downstream_version, grpc): (Version, bool),
    ) -> (Response<Body>, bool) {
        let error = |status| failure(status, grpc, downstream_version);
        let origin = &host.origin;
        let state = Arc::new(BodyState::default());
        let (held, mut body) = if origin.servers().len() > 1 {
            let held = Arc::new(HeldBody::new(body));
            (Some(held.clone()), Some(RequestBody::Held(held)))
        } else {
            (None, Some(body))
        };
        // The names the front proxy passes certificates in, and the hostname's own certificate headers: no trailer
        // may stand in for them at an origin that folds trailers into the header section.
        let trailer_names: Arc<[HeaderName]> = if host.field_headers.is_empty() {
            self.front_cert.clone()
        } else {
            self.front_cert
                .iter()
                .chain(host.field_headers.names())
                .cloned()
                .collect()
        };
        let mut next_head = Some(parts);
        let mut resp = loop {
            let Some(head) = next_head.take() else {
                return error(StatusCode::BAD_GATEWAY);
            };
            if held.is_some() {
                next_head = Some(copy_head(&head));
            }
            let body = match (body.take(), &held) {
                (Some(first), _) => first,
                (None, Some(held)) => RequestBody::Held(held.clone()),
                (None, None) => return error(StatusCode::BAD_GATEWAY),
            };
            let body = LimitedBody::new(
                body,
                self.max_body,
                self.body_timeout,
                state.clone(),
                trailer_names.clone(),
            );
            let request = Request::from_parts(head, body);
            let sent = match &origin.tls {
                Some(tls) => self.https_client(tls, origin.http2).request(request),
                None if origin.http2 => self.h2c.request(request),
                None => self.http1.request(request),
            };
            match tokio::time::timeout(self.response_timeout, sent).await {
                Ok(Ok(resp)) => {
                    origin.connected(server, &host.hostname, None);
                    break resp;
                }
                // The origin request failed because the client's body was cut off: say so, not 502.
                _ if state.failure() == Some(BodyFailure::TooLarge) => return error(StatusCode::PAYLOAD_TOO_LARGE),
                _ if state.failure() == Some(BodyFailure::Timeout) => return error(StatusCode::REQUEST_TIMEOUT),
                Err(_) => {
                    observe::upstream_error(&host.hostname, "timeout");
                    return error(StatusCode::GATEWAY_TIMEOUT);
                }
                Ok(Err(e)) if e.is_connect() => {
                    origin.connected(server, &host.hostname, Some(&e));
                    if let Some(head) = next_head.as_mut()
                        && held.as_ref().is_some_and(|h| !h.was_read())
                        && let Some(next) = origin.next_server(&mut attempts)
                    {
                        server = next;
                        let mut uri = std::mem::take(&mut head.uri).into_parts();
                        uri.authority = Some(origin.server(server).clone());
                        match Uri::from_parts(uri) {
                            Ok(uri) => head.uri = uri,
                            Err(_) => return error(StatusCode::BAD_GATEWAY),
                        }
                        continue;
                    }
                    origin_failed(host, "connect", &e);
                    return error(StatusCode::BAD_GATEWAY);
                }
                Ok(Err(e)) => {
                    origin_failed(host, "protocol", &e);
                    return error(StatusCode::BAD_GATEWAY);
                }
            }
        };
        state.response_started();
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(protocol) = upgrade else {
                // A 101 nobody asked for cannot be relayed.
                observe::upstream_error(&host.hostname, "protocol");
                return error(StatusCode::BAD_GATEWAY);
            };
            // The HTTP/1.1 connection relays bytes once it has sent this response (see `h1`).
            let upstream = OriginUpgrade(hyper::upgrade::on(&mut resp));
            let (mut parts, _) = resp.into_parts();
            parts.extensions.insert(upstream);
            strip_hop_by_hop(&mut parts.headers);
            if host.transforms.on_responses() {
                transform_response(&mut parts.headers, host.transforms);
            }
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol);
            parts.version = downstream_version;
            return (Response::from_parts(parts, respond::empty()), false);
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if host.transforms.on_responses() {
            transform_response(&mut parts.headers, host.transforms);
        }
        parts.version = downstream_version;
        let body = IdleBody::new(body.map_err(Into::into), self.stream_idle);
        (Response::from_parts(parts, body.boxed()), false)
    }
}

/// The headers of Cloudflare's "Add security headers" managed transform.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    ("x-xss-protection", "1; mode=block"),
    ("referrer-policy", "same-origin"),
];

/// Applies a host's response transforms to an origin's response headers.
fn transform_response(headers: &mut HeaderMap, transforms: crate::snapshot::Transforms) {
    if transforms.remove_powered_by {
        headers.remove("x-powered-by");
    }
    if transforms.security_headers {
        for (name, value) in SECURITY_HEADERS {
            // The origin's own choice stands.
            headers
                .entry(HeaderName::from_static(name))
                .or_insert(HeaderValue::from_static(value));
        }
    }
}

/// Counts and logs a failed origin request (`kind`: `connect` or `protocol`); the client gets a 502.
fn origin_failed(host: &Host, kind: &'static str, error: &dyn std::fmt::Display) {
    observe::upstream_error(&host.hostname, kind);
    tracing::warn!(host = %host.hostname, %error, kind, "origin request failed");
}

/// The proxy's own error answer when forwarding fails (a gRPC status for gRPC calls), with
/// [`Upstream::forward`]'s flag set: the proxy answered with an error of its own.
fn failure(status: StatusCode, grpc: bool, version: Version) -> (Response<Body>, bool) {
    let page = if grpc {
        respond::grpc_error(status, version)
    } else {
        respond::status_page(status, version)
    };
    (page, true)
}

/// A copy of a request head without its extensions (nothing the origin clients read is kept there).
fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// The request's `content-length`, if it has one that parses.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The `Upgrade` value of an HTTP/1.1 WebSocket upgrade request; other upgrades (h2c, TLS) are
/// not passed through, their headers are dropped as hop-by-hop.
fn websocket_upgrade<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = req.headers().get(header::UPGRADE)?;
    let websocket = upgrade
        .to_str()
        .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")));
    (connection_upgrade && websocket).then(|| upgrade.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn listed_headers_removed_with_every_value() {
        let mut h = HeaderMap::new();
        h.append("te", HeaderValue::from_static("trailers"));
        h.append("te", HeaderValue::from_static("gzip"));
        h.append("upgrade", HeaderValue::from_static("h2c"));
        h.append("content-type", HeaderValue::from_static("application/grpc"));
        h.append("x-forwarded-client-cert", HeaderValue::from_static("spoofed"));
        h.append("cf-cert-ski", HeaderValue::from_static("spoofed"));
        strip_hop_by_hop(&mut h);
        remove_cert_headers(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["content-type"]);
    }

    #[test]
    fn spoofed_headers_removed_for_every_style() {
        for style in Forwarding::ALL {
            let mut h = HeaderMap::new();
            for name in CERT_HEADERS.iter().chain(CF_CERT_HEADERS.iter()) {
                h.insert(*name, HeaderValue::from_static("spoofed"));
            }
            certificate_headers(&mut h, style.into(), &ClientAuthFacts::default(), &[]);
            assert!(h.values().all(|v| v != "spoofed"), "{style:?}");
        }
    }

    #[test]
    fn pems_in_xfcc_are_percent_encoded() {
        let mut out = String::new();
        url_encoded_pem(&mut out, &[0xfb, 0xff, 0xbf]);
        // "+/+/" in base64, spaces and line ends: none of it unreserved.
        assert_eq!(
            out,
            "-----BEGIN%20CERTIFICATE-----%0A%2B%2F%2B%2F%0A-----END%20CERTIFICATE-----%0A"
        );
    }

    #[test]
    fn forwarding_sets() {
        let set: ForwardingSet = [Forwarding::Rfc9440, Forwarding::Xfcc, Forwarding::None]
            .into_iter()
            .collect();
        assert_eq!(set.iter().collect::<Vec<_>>(), [Forwarding::Rfc9440, Forwarding::Xfcc]);
        assert!(set.contains(Forwarding::None) && !set.contains(Forwarding::Cloudflare));
        assert!(ForwardingSet::from(Forwarding::None).is_empty());
    }

    #[test]
    fn xfcc_quoting() {
        assert_eq!(xfcc_subject("CN=a,O=b\\, Inc."), "\"CN=a,O=b\\, Inc.\"");
        // A DN's escaped quote, or a bare one, becomes `\22`: nothing inside the quotes can close them.
        assert_eq!(xfcc_subject("CN=x\\\";URI=evil"), "\"CN=x\\22;URI=evil\"");
        assert_eq!(xfcc_subject("CN=x\";DNS=evil"), "\"CN=x\\22;DNS=evil\"");
        assert_eq!(xfcc_subject("CN=x\\"), "\"CN=x\\5C\"");
        assert_eq!(
            xfcc_subject("CN=x\\\\"),
            "\"CN=x\\\\\"",
            "an escaped backslash is whole"
        );
        assert_eq!(xfcc_subject("CN=x\\\\\\"), "\"CN=x\\\\\\5C\"");
        assert_eq!(xfcc_value("spiffe://x/y"), "spiffe://x/y");
        assert_eq!(xfcc_value("https://x/?a=b"), "\"https://x/?a=b\"");
        assert_eq!(xfcc_value("x\";URI=evil"), "\"x%22;URI=evil\"");
        assert_eq!(xfcc_value("a\\b"), "a%5Cb");
    }

    #[test]
    fn underscore_spellings_of_certificate_headers_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "x_forwarded_client_cert",
            "client_cert",
            "cf_cert_verified",
            "cf-cert_revoked",
            "x-forwarded_for",
            "x_forwarded_proto",
            "x-forwarded-for",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("spoofed"));
        }
        remove_cert_headers(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-forwarded-for"],
            "the real X-Forwarded-For is extended, not removed"
        );
    }

    #[test]
    fn trailers_lose_what_only_the_proxy_sets_and_what_routes_a_request() {
        let mut t = HeaderMap::new();
        for name in [
            "grpc-status",
            "x-checksum",
            "x-forwarded-client-cert",
            "cf_cert_verified",
            "x-forwarded-for",
            "x_forwarded_host",
            "forwarded",
            "true-client-ip",
            "host",
            "authorization",
            "cookie",
            "content-length",
            "transfer-encoding",
            "connection",
            "x-hop",
            "x-client-cert",
            "x_client_cert",
        ] {
            t.insert(HeaderName::from_static(name), HeaderValue::from_static("spoofed"));
        }
        t.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        clean_trailers(&mut t, &[HeaderName::from_static("x-client-cert")]);
        assert_eq!(
            t.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["grpc-status", "x-checksum"]
        );
        // Without a front proxy, a trailer of that name is nobody's and goes on.
        let mut t = HeaderMap::new();
        t.insert("x-client-cert", HeaderValue::from_static("x"));
        clean_trailers(&mut t, &[]);
        assert_eq!(t.len(), 1);
    }
}
