//! One request: check SNI against Host, fill the rules context, decide, then block or forward.
//!
//! The host's configuration (ruleset, origin, forwarding, trust) is read from the newest snapshot
//! on every request, so rule and revocation changes apply to open connections at once. Never
//! fails: every outcome is a response.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use portcullis_pki::ClientAuthFacts;
use portcullis_rules::{Action, Characteristic, CompiledRateLimit, Context, Value};
use rustls::pki_types::CertificateDer;

use crate::body::RequestBody;
use crate::cert_header::{CertHeaderReader, HeaderCert};
use crate::conn::{ConnInfo, apply_ocsp};
use crate::context::{self, RequestFacts};
use crate::events::{EventSink, SecurityEvent};
use crate::forward::{Body, FromClient, Upstream};
use crate::normalize::{self, NormalizationScope, NormalizationType};
use crate::observe;
use crate::ocsp::OcspOutcome;
use crate::ratelimit::Decision;
use crate::respond;
use crate::snapshot::{Host, Snapshot};
use crate::unix_now;

/// What every connection shares.
pub(crate) struct Shared {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub events: Arc<dyn EventSink>,
    pub upstream: Upstream,
    /// Peers whose connections start with a PROXY protocol header.
    pub proxy_protocol: crate::proxy_protocol::TrustedProxies,
    /// Rate-limiting counters of this node.
    pub rates: Arc<crate::ratelimit::RateLimiter>,
    /// OCSP answers for client certificates, shared by the node's threads.
    pub ocsp: Arc<crate::ocsp::OcspChecker>,
    /// The header in which trusted front proxies pass the client's certificate, if configured.
    pub cert_header: Option<CertHeaderReader>,
    /// The header in which trusted front proxies name the client's address, if configured.
    pub client_ip_header: Option<crate::client_ip::ClientIpHeader>,
}

/// The request's host: `:authority` (HTTP/2, absolute-form) or `Host`, port removed, as sent
/// (callers compare it case-insensitively and lower-case it only when they keep it).
/// One trailing dot (a fully qualified name) is removed; a `Host` that is present but not an authority is
/// `Err`: it would otherwise slip past the comparison with the SNI.
fn request_host(req: &Request<RequestBody>) -> Result<Option<&str>, ()> {
    let host = if let Some(a) = req.uri().authority() {
        a.host()
    } else {
        let Some(raw) = req.headers().get(http::header::HOST) else {
            return Ok(None);
        };
        raw.to_str().ok().and_then(host_of_authority).ok_or(())?
    };
    Ok(Some(host.strip_suffix('.').unwrap_or(host)))
}

/// The host part of an authority (`name`, `name:port`, `[v6]:port`), or `None` if it is not one.
fn host_of_authority(raw: &str) -> Option<&str> {
    let raw = raw.trim();
    if raw.is_empty() || raw.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    if raw.starts_with('[') {
        let end = raw.find(']')?;
        let rest = &raw[end + 1..];
        if !(rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())))
        {
            return None;
        }
        return Some(&raw[..=end]);
    }
    match raw.split_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => Some(host),
        Some(_) => None,
        None => Some(raw),
    }
}

/// `(service, method)` of a gRPC request (content type `application/grpc…`) with path
/// `/pkg.Service/Method` (the path the rules see, after URL normalization); `("", "")` for a gRPC
/// request with another path.
pub(crate) fn grpc_call<'a>(headers: &http::HeaderMap, path: &'a str) -> Option<(&'a str, &'a str)> {
    let ct = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    if !ct.starts_with("application/grpc") {
        return None;
    }
    let call = path.strip_prefix('/').and_then(|p| p.split_once('/'));
    match call {
        Some((service, method)) if !service.is_empty() && !method.is_empty() && !method.contains('/') => {
            Some((service, method))
        }
        // Still gRPC (a block must answer with a gRPC status); just no service/method fields.
        _ => Some(("", "")),
    }
}

/// What the access log and the metrics say about a request, besides its response.
struct Outcome {
    /// `allow|block|log|skip|misdirected|error`.
    action: &'static str,
    rule_id: Option<String>,
    /// `None` when the request ended before the certificate was looked at.
    facts: Option<Arc<ClientAuthFacts>>,
    /// The connection's host in the snapshot that judged the request; `None` when it has left
    /// the configuration (or the request ended before the lookup).
    host: Option<Arc<Host>>,
    /// The client's address when a front proxy's header named it (else the connection's is).
    client_ip: Option<String>,
}

impl Outcome {
    fn early(action: &'static str, host: Option<Arc<Host>>) -> Outcome {
        Outcome {
            action,
            rule_id: None,
            facts: None,
            host,
            client_ip: None,
        }
    }
}

/// The request head's fields an access-log line needs, copied before the request moves on.
struct LogHead {
    method: String,
    path: String,
    protocol: &'static str,
}

/// Handles one request, counts it and writes one access-log event (target `portcullis::access`).
/// The latency is to the response head; a streamed body may go on after it.
pub(crate) async fn handle(req: Request<RequestBody>, shared: Arc<Shared>, conn: Arc<ConnInfo>) -> Response<Body> {
    let started = std::time::Instant::now();
    // Copied only when the line will be written: most edges run with the access log off.
    let head = tracing::enabled!(target: "portcullis::access", tracing::Level::INFO).then(|| LogHead {
        // Extension methods are any token a client likes; keep the line bounded.
        method: observe::truncate(req.method().as_str(), observe::MAX_LOGGED_METHOD).to_owned(),
        // Bounded: a client may send a path as long as the header buffer allows.
        path: observe::truncate(req.uri().path(), observe::MAX_LOGGED_PATH).to_owned(),
        protocol: context::version_name(req.version()),
    });
    let (resp, outcome) = decide(req, &shared, &conn).await;
    let elapsed = started.elapsed();
    match &outcome.host {
        Some(host) => host.metrics.request(outcome.action, elapsed),
        // The host has since left the configuration: `_unknown`, so removed names do not linger
        // as labels.
        None => observe::request_slow(observe::UNKNOWN_HOST, outcome.action, elapsed),
    }
    crate::traffic::TRAFFIC.record(outcome.action == "block");
    let Some(head) = head else {
        return resp;
    };
    let facts = outcome.facts.as_deref();
    tracing::info!(
        target: "portcullis::access",
        host = %conn.host_name,
        method = head.method,
        path = head.path,
        status = resp.status().as_u16(),
        latency_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        client_ip = outcome.client_ip.as_deref().unwrap_or(&conn.client_ip),
        protocol = head.protocol,
        tls_version = conn.tls_version,
        mtls_status = facts.map_or("", |f| f.status.as_str()),
        cert_fingerprint_sha256 = facts.map_or("", |f| f.cert_fingerprint_sha256.as_str()),
        cert_serial = facts.map_or("", |f| f.cert_serial.as_str()),
        cert_subject = observe::truncate(facts.map_or("", |f| f.cert_subject_dn_rfc2253.as_str()), observe::MAX_LOGGED_SUBJECT),
        verify_error = facts.map_or("", |f| f.verify_error()),
        rule_id = outcome.rule_id.as_deref().unwrap_or(""),
        action = outcome.action,
    );
    resp
}

async fn decide(req: Request<RequestBody>, shared: &Shared, conn: &Arc<ConnInfo>) -> (Response<Body>, Outcome) {
    let version = req.version();
    let snapshot = shared.snapshot.load();
    let host = snapshot.hosts.get(&conn.host_name).cloned();
    if req.method() == http::Method::CONNECT {
        // A reverse proxy has no tunnels to offer; this also refuses HTTP/2 extended CONNECT
        // (WebSocket over HTTP/2), which is not supported.
        return (
            respond::status_page(StatusCode::METHOD_NOT_ALLOWED, version),
            Outcome::early("error", host),
        );
    }
    let Some(host) = host else {
        // The host left the configuration: make the client reconnect (and re-handshake).
        return (
            respond::status_page(StatusCode::MISDIRECTED_REQUEST, version),
            Outcome::early("misdirected", None),
        );
    };
    let Ok(req_host) = request_host(&req) else {
        return (
            respond::status_page(StatusCode::BAD_REQUEST, version),
            Outcome::early("error", Some(host)),
        );
    };
    let mut same_host = req_host.is_some_and(|h| h.eq_ignore_ascii_case(&host.hostname));
    // A wildcard host's own names are every name it covers that has no host of its own; those are
    // lower-cased below, since `host.hostname` is not the name to show rules or the origin.
    let mut covered: Option<String> = None;
    if host.wildcard {
        let Some(h) = req_host else {
            // Nothing says which of the names the request is for.
            return (
                respond::status_page(StatusCode::BAD_REQUEST, version),
                Outcome::early("error", Some(host)),
            );
        };
        let lower = h.to_ascii_lowercase();
        same_host = snapshot
            .host_named(&lower)
            .is_some_and(|found| Arc::ptr_eq(found, &host));
        if !same_host {
            // A wildcard host serves the names it covers and nothing else: its rules are written for them.
            return (
                respond::status_page(StatusCode::MISDIRECTED_REQUEST, version),
                Outcome::early("misdirected", Some(host)),
            );
        }
        covered = Some(lower);
    }
    // On an mTLS host the certificate was requested and checked for the SNI's host: never apply it to
    // another. On any host, a request for another configured host (an HTTP/2 connection a browser reuses
    // for every name a wildcard certificate covers, or domain fronting) must not reach this host's origin:
    // 421 makes the client open a connection with the right SNI. Other names (an IP address, an alias, a
    // client of the default host) are served by the SNI's host.
    if !same_host
        && (host.mtls.is_some()
            || req_host.is_some_and(|h| snapshot.host_named(h.to_ascii_lowercase().as_str()).is_some()))
    {
        return (
            respond::status_page(StatusCode::MISDIRECTED_REQUEST, version),
            Outcome::early("misdirected", Some(host)),
        );
    }
    // Lower-cased (and allocated) only when it differs from the host's own name.
    let req_host: Option<String> = match req_host {
        _ if covered.is_some() => covered,
        Some(h) if !same_host => Some(h.to_ascii_lowercase()),
        _ => None,
    };
    // Behind a trusted front proxy the client's certificate is the one in its header, never the connection's own.
    let header_cert = match &shared.cert_header {
        Some(reader) if reader.trusts(conn.remote.ip()) => Some(reader.read(req.headers(), &host, snapshot.generation)),
        _ => None,
    };
    let facts = match &header_cert {
        Some(cert) => cert.facts.clone(),
        None => conn.facts(&snapshot, &host),
    };
    // Only `host` is needed from here on; do not pin the whole snapshot for a long request.
    drop(snapshot);
    let client_addr = match &shared.client_ip_header {
        Some(reader) if reader.trusts(conn.remote.ip()) => reader.client(req.headers()),
        _ => None,
    };
    let client_ip: Option<String> = client_addr.map(|ip| ip.to_string());
    let facts = match &header_cert {
        Some(cert) => header_ocsp(shared, &host, cert).await,
        None => facts,
    };
    let chain: &[CertificateDer<'static>] = header_cert.as_ref().map_or(&conn.peer_chain, |c| &c.chain);
    let req_host = req_host.as_deref().unwrap_or(&host.hostname);
    // Rules see the hostname the request was routed to: a wildcard host's the name asked for, any other host's
    // its own. A Host that names no configured host (an IP address, an alias) must not steer a request past
    // rules written for this one, as `http.host eq "admin.example.com"` would be otherwise; the origin still
    // gets the Host as sent.
    let rules_host: &str = if host.wildcard { req_host } else { &host.hostname };
    let event =
        |method: &http::Method, path: &str, action: &'static str, rule_id: Option<String>, status: u16| SecurityEvent {
            at: unix_now(),
            zone_id: host.zone_id.clone(),
            host: rules_host.to_owned(),
            method: observe::truncate(method.as_str(), observe::MAX_LOGGED_METHOD).to_owned(),
            path: observe::truncate(path, observe::MAX_LOGGED_PATH).to_owned(),
            client_ip: client_ip.clone().unwrap_or_else(|| conn.client_ip.clone()),
            action,
            rule_id,
            status_code: status,
            mtls_status: facts.status.as_str(),
            cert_fingerprint_sha256: facts.cert_fingerprint_sha256.clone(),
            cert_serial: facts.cert_serial.clone(),
            cert_subject_dn: observe::truncate(&facts.cert_subject_dn_rfc2253, observe::MAX_LOGGED_SUBJECT).to_owned(),
            cert_verify_error: facts.verify_error().to_owned(),
        };
    // `require` and `verify_if_given` refuse at the handshake what they refuse (OCSP's answer included). A front
    // proxy's header is judged here by the same measure, with a 403 (or a gRPC status), and so is a connection's
    // certificate that has lost trust since its handshake (revoked, expired, its CA's CRL stale past its grace).
    if let Some(mtls) = &host.mtls
        && !mtls.mode.admits(&facts)
    {
        if header_cert.is_none() {
            // The connection's own certificate: a new connection is the client's way to present another one.
            conn.end();
        }
        let grpc = grpc_call(req.headers(), req.uri().path()).is_some();
        let resp = block_response(grpc, &facts, None, version);
        shared.events.record(event(
            req.method(),
            req.uri().path(),
            "block",
            None,
            resp.status().as_u16(),
        ));
        let outcome = Outcome {
            action: "block",
            rule_id: None,
            facts: Some(facts),
            host: Some(host),
            client_ip,
        };
        return (resp, outcome);
    }

    let mut action = "allow";
    let mut rule_id = None;
    let wanted = &host.rule_fields;
    let req = if !host.has_rules {
        req
    } else {
        let (parts, body) = req.into_parts();
        let mut ctx = Context::new();
        let path = host.url_normalization.for_rules(parts.uri.path());
        // From the normalized path, so that `/pkg.Users/%44eleteUser` is DeleteUser to the rules too.
        let grpc = grpc_call(&parts.headers, &path);
        context::fill(
            &mut ctx,
            wanted,
            &parts,
            &RequestFacts {
                host: rules_host,
                path: &path,
                conn,
                client: client_addr.unwrap_or_else(|| conn.remote.ip().to_canonical()),
                cert: &facts,
                grpc,
            },
        );
        let verdict = host.ruleset.eval(&ctx);
        let event = |action: &'static str, rule_id: Option<String>, status: u16| {
            event(&parts.method, parts.uri.path(), action, rule_id, status)
        };
        for rule in &verdict.logged {
            shared.events.record(event("log", rule.rule().id.clone(), 0));
            action = "log";
            rule_id = rule.rule().id.clone();
        }
        if let Some(rule) = verdict.terminal {
            rule_id = rule.rule().id.clone();
            if rule.action() == Action::Block {
                let resp = block_response(grpc.is_some(), &facts, rule.response(), version);
                shared
                    .events
                    .record(event("block", rule.rule().id.clone(), resp.status().as_u16()));
                tracing::debug!(host = %rules_host, "request blocked");
                let outcome = Outcome {
                    action: "block",
                    rule_id,
                    facts: Some(facts),
                    host: Some(host),
                    client_ip,
                };
                return (resp, outcome);
            }
            action = "skip";
        } else if let Some(rule) = verdict.phase_skip {
            rule_id = rule.rule().id.clone();
            action = "skip";
        }
        // Rate limits, as Cloudflare's `http_ratelimit` phase runs after the custom rules; a matching `skip` with
        // `phases: ["http_ratelimit"]` exempts the request.
        let ratelimits = if verdict.skip_ratelimit {
            &[][..]
        } else {
            host.ratelimit.rules()
        };
        for rule in ratelimits.iter().filter(|r| r.rule().enabled) {
            let Some(limit) = rule.ratelimit() else { continue };
            if !rule.program().eval(&ctx) {
                continue;
            }
            let key = ratelimit_key(&host, rule, limit, &ctx, &parts.headers);
            let Decision::Exceeded { retry_after } = shared.rates.hit(&key, limit) else {
                continue;
            };
            rule_id = rule.rule().id.clone();
            if rule.action() == Action::Block {
                let resp = ratelimited_response(grpc.is_some(), rule.response(), retry_after, version);
                shared
                    .events
                    .record(event("block", rule.rule().id.clone(), resp.status().as_u16()));
                let outcome = Outcome {
                    action: "block",
                    rule_id,
                    facts: Some(facts),
                    host: Some(host),
                    client_ip,
                };
                return (resp, outcome);
            }
            shared.events.record(event("log", rule.rule().id.clone(), 0));
            action = "log";
        }
        Request::from_parts(parts, body)
    };
    let mut req = if host.url_normalization.scope == NormalizationScope::Both {
        normalized_for_origin(req, host.url_normalization.kind)
    } else {
        req
    };
    if let Some(reader) = &shared.cert_header {
        reader.strip(req.headers_mut());
    }
    let (resp, failed) = shared
        .upstream
        .forward(
            req,
            &host,
            conn,
            FromClient {
                facts: &facts,
                chain,
                ip: client_ip.as_deref().unwrap_or(&conn.client_ip),
            },
            req_host,
        )
        .await;
    if failed {
        action = "error";
    }
    let outcome = Outcome {
        action,
        rule_id,
        facts: Some(facts),
        host: Some(host),
        client_ip,
    };
    (resp, outcome)
}

/// `req` with its path normalized, for a zone whose origin gets normalized URLs; the query stays
/// as sent.
fn normalized_for_origin<B>(req: Request<B>, kind: NormalizationType) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path();
    if let std::borrow::Cow::Owned(normal) = normalize::normalize_path(path, kind) {
        let rest = parts
            .uri
            .path_and_query()
            .and_then(|pq| pq.as_str().strip_prefix(path))
            .unwrap_or("")
            .to_owned();
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        // The normalized path is plain ASCII path characters, so it parses; if it somehow did not,
        // the request goes on with its path as sent (the rules saw the normalized one).
        if let Ok(pq) = http::uri::PathAndQuery::try_from(format!("{normal}{rest}")) {
            uri.path_and_query = Some(pq);
        }
        // Only the path changed, so the parts of a valid URI still make one.
        parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
    }
    Request::from_parts(parts, body)
}

/// Who a request is for a rate-limiting rule: the zone, the rule and its characteristics' values, each
/// ended by a NUL so that no two lists of values run into the same key.
fn ratelimit_key(
    host: &Host,
    rule: &portcullis_rules::CompiledRule,
    limit: &CompiledRateLimit,
    ctx: &Context,
    headers: &http::HeaderMap,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(96);
    key.extend_from_slice(host.zone_id.as_deref().unwrap_or(&host.hostname).as_bytes());
    key.push(0);
    key.extend_from_slice(rule.rule().id.as_deref().unwrap_or("").as_bytes());
    key.push(0);
    for c in &limit.characteristics {
        match c {
            Characteristic::Colo => {}
            Characteristic::Field(id) => match ctx.get(*id) {
                Some(Value::Bytes(b)) => key.extend_from_slice(b),
                Some(Value::Ip(ip)) => key.extend_from_slice(ip.to_string().as_bytes()),
                Some(Value::Int(i)) => key.extend_from_slice(i.to_string().as_bytes()),
                Some(Value::Bool(b)) => key.push(u8::from(*b)),
                Some(_) | None => {}
            },
            Characteristic::Header(name) => {
                for (i, v) in headers.get_all(name.as_str()).iter().enumerate() {
                    if i > 0 {
                        key.extend_from_slice(b", ");
                    }
                    key.extend_from_slice(v.as_bytes());
                }
            }
        }
        key.push(0);
    }
    key
}

/// 429 with `Retry-After` (or the rule's custom response), or `RESOURCE_EXHAUSTED` for a gRPC call.
fn ratelimited_response(
    is_grpc: bool,
    custom: Option<&portcullis_rules::BlockResponse>,
    retry_after: u64,
    version: http::Version,
) -> Response<Body> {
    let mut resp = if is_grpc {
        respond::grpc_blocked(respond::GRPC_RESOURCE_EXHAUSTED, version)
    } else if custom.is_some() {
        respond::blocked(custom, version)
    } else {
        respond::status_page(StatusCode::TOO_MANY_REQUESTS, version)
    };
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(retry_after.max(1)));
    resp
}

fn block_response(
    is_grpc: bool,
    facts: &ClientAuthFacts,
    custom: Option<&portcullis_rules::BlockResponse>,
    version: http::Version,
) -> Response<Body> {
    if is_grpc {
        // A gRPC client cannot read an HTML page; it needs a status it understands.
        let code = if facts.cert_presented {
            respond::GRPC_PERMISSION_DENIED
        } else {
            respond::GRPC_UNAUTHENTICATED
        };
        respond::grpc_blocked(code, version)
    } else {
        respond::blocked(custom, version)
    }
}

/// A front proxy's certificate's facts with its CA's OCSP answer applied, as a connection's are after its handshake
/// (the answer is cached for every connection and request).
async fn header_ocsp(shared: &Shared, host: &Host, cert: &HeaderCert) -> Arc<ClientAuthFacts> {
    let facts = cert.facts.clone();
    let Some(mtls) = &host.mtls else {
        return facts;
    };
    if !facts.cert_verified || facts.cert_revoked || !mtls.verifier.has_ocsp() {
        return facts;
    }
    let Some(target) = mtls.verifier.ocsp_target(&cert.chain, time::OffsetDateTime::now_utc()) else {
        return facts;
    };
    let (outcome, anchor_key) = match target {
        Ok(target) => (shared.ocsp.check(&target).await, target.anchor_key),
        Err(unusable) => (OcspOutcome::Failed(unusable.reason), unusable.anchor_key),
    };
    Arc::new(apply_ocsp((*facts).clone(), &outcome, &anchor_key, &mtls.verifier))
}
