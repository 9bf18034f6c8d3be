//! One request: check SNI against Host, fill the rules context, decide, then block or forward.
//!
//! The host's configuration (ruleset, origin, forwarding, trust) is read from the newest snapshot
//! on every request, so rule and revocation changes apply to open connections at once. Never
//! fails: every outcome is a response.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use portcullis_pki::ClientAuthFacts;
use portcullis_rules::{Action, Context};

use crate::conn::ConnInfo;
use crate::context::{self, RequestFacts};
use crate::events::{EventSink, SecurityEvent};
use crate::forward::{Body, Upstream};
use crate::respond;
use crate::snapshot::Snapshot;

/// What every connection shares.
pub(crate) struct Shared {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub events: Arc<dyn EventSink>,
    pub upstream: Upstream,
}

/// The request's host: `:authority` (HTTP/2, absolute-form) or `Host`, port removed, lower-cased.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.host().to_ascii_lowercase());
    }
    let raw = req.headers().get(http::header::HOST)?.to_str().ok()?;
    let authority: http::uri::Authority = raw.parse().ok()?;
    Some(authority.host().to_ascii_lowercase())
}

/// `(service, method)` of a gRPC request (content type `application/grpc…`) with path
/// `/pkg.Service/Method`; `("", "")` for a gRPC request with another path.
pub(crate) fn grpc_call<'a>(headers: &http::HeaderMap, uri: &'a http::Uri) -> Option<(&'a str, &'a str)> {
    let ct = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    if !ct.starts_with("application/grpc") {
        return None;
    }
    let call = uri.path().strip_prefix('/').and_then(|p| p.split_once('/'));
    match call {
        Some((service, method)) if !service.is_empty() && !method.is_empty() && !method.contains('/') => {
            Some((service, method))
        }
        // Still gRPC (a block must answer with a gRPC status); just no service/method fields.
        _ => Some(("", "")),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Handles one request and writes one access-log event (`tracing` target `portcullis::access`).
pub(crate) async fn handle(req: Request<Incoming>, shared: Arc<Shared>, conn: Arc<ConnInfo>) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = decide(req, shared, &conn).await;
    tracing::info!(
        target: "portcullis::access",
        host = %conn.host_name,
        client = %conn.remote.ip().to_canonical(),
        %method,
        path,
        status = resp.status().as_u16(),
        ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    );
    resp
}

async fn decide(req: Request<Incoming>, shared: Arc<Shared>, conn: &ConnInfo) -> Response<Body> {
    let version = req.version();
    if req.method() == http::Method::CONNECT {
        // A reverse proxy has no tunnels to offer.
        return respond::status_page(StatusCode::METHOD_NOT_ALLOWED, version);
    }
    let snapshot = shared.snapshot.load_full();
    let Some(host) = snapshot.hosts.get(&conn.host_name).cloned() else {
        // The host left the configuration: make the client reconnect (and re-handshake).
        return respond::status_page(StatusCode::MISDIRECTED_REQUEST, version);
    };
    let req_host = request_host(&req);
    if host.mtls.is_some() && req_host.as_deref() != Some(host.hostname.as_str()) {
        // The certificate was requested and checked for the SNI's host; never apply it to another.
        return respond::status_page(StatusCode::MISDIRECTED_REQUEST, version);
    }
    let req_host = req_host.unwrap_or_else(|| host.hostname.clone());
    let facts = conn.facts(&snapshot, &host);
    // Only `host` is needed from here on; do not pin the whole snapshot for a long request.
    drop(snapshot);
    let is_grpc = grpc_call(req.headers(), req.uri()).is_some();

    let wanted = host.ruleset.fields();
    if !wanted.is_empty() {
        let (parts, body) = req.into_parts();
        let mut ctx = Context::new();
        context::fill(
            &mut ctx,
            wanted,
            &parts,
            &RequestFacts {
                host: &req_host,
                conn,
                cert: &facts,
                grpc: grpc_call(&parts.headers, &parts.uri),
            },
        );
        let verdict = host.ruleset.eval(&ctx);
        let event = |action: &'static str, rule_id: Option<String>, status: u16| SecurityEvent {
            at: unix_now(),
            zone_id: host.zone_id.clone(),
            host: req_host.clone(),
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            client_ip: conn.remote.ip().to_canonical().to_string(),
            action,
            rule_id,
            status_code: status,
            mtls_status: facts.status.as_str(),
            cert_fingerprint_sha256: facts.cert_fingerprint_sha256.clone(),
            cert_serial: facts.cert_serial.clone(),
        };
        for rule in &verdict.logged {
            shared.events.record(event("log", rule.rule().id.clone(), 0));
        }
        if let Some(rule) = verdict.terminal
            && rule.action() == Action::Block
        {
            let resp = block_response(is_grpc, &facts, rule.response(), version);
            shared
                .events
                .record(event("block", rule.rule().id.clone(), resp.status().as_u16()));
            tracing::debug!(host = %req_host, path = parts.uri.path(), "request blocked");
            return resp;
        }
        let req = Request::from_parts(parts, body);
        return shared.upstream.forward(req, &host, conn, &facts, &req_host).await;
    }
    shared.upstream.forward(req, &host, conn, &facts, &req_host).await
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
