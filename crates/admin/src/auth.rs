//! API authentication: `Authorization: Bearer <token>`, or the dashboard's session cookie. Read tokens (and sessions
//! signed in with one) may only GET (and HEAD), and POST `/rules/validate`, which compiles an expression and stores
//! nothing (the dashboard's expression editor uses it in read-only sessions too). With a session cookie, every other
//! method must also carry the session's CSRF token in `X-CSRF-Token`, `/rules/validate` included. A bearer token,
//! when present, always wins over a cookie.
//!
//! A token's restrictions are checked on every request, a session's too: its validity period (`not_before`,
//! `expires_on`), the client addresses it works from (`condition.request_ip`, against the TCP peer: behind a reverse
//! proxy that is the proxy), and the zones it may reach (then only `/zones/{one of them}/…`, the zone list, which
//! shows only them, and `/user/tokens/verify`).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use portcullis_store::{Actor, TokenRestrictions, TokenScope};

use crate::AdminState;
use crate::api::{ApiError, codes};
use crate::dashboard::sessions::{cookie_value, same_secret};

/// Header that must carry the session's CSRF token on state-changing calls made with the session cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";

fn scope_error(scope: TokenScope) -> Response {
    let message = match scope {
        TokenScope::Certificates => {
            "Unauthorized to access requested resource: this token may only read and manage client certificates"
        }
        _ => "Unauthorized to access requested resource: this token has read scope",
    };
    ApiError::new(StatusCode::FORBIDDEN, codes::UNAUTHORIZED, message).into_response()
}

/// Whether a `certificates` token may make this non-read request: issuing (`POST …/client_certificates`),
/// reactivating or revoking one (`PATCH`/`DELETE …/client_certificates/{id}`), and revoking one an uploaded CA
/// issued, or taking that back (`POST …/mtls_certificates/{id}/revocations`, `DELETE …/revocations/{id}`).
fn certificates_scope_may(req: &Request) -> bool {
    let path = req.uri().path();
    let path = path.strip_prefix("/client/v4").unwrap_or(path);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (&Method::POST, ["zones", zone, "client_certificates"]) => !zone.is_empty(),
        (&Method::PATCH | &Method::DELETE, ["zones", zone, "client_certificates", id]) => {
            !zone.is_empty() && !id.is_empty()
        }
        (&Method::POST, ["accounts", account, "mtls_certificates", ca, "revocations"]) => {
            !account.is_empty() && !ca.is_empty()
        }
        (&Method::DELETE, ["accounts", account, "mtls_certificates", ca, "revocations", id]) => {
            !account.is_empty() && !ca.is_empty() && !id.is_empty()
        }
        _ => false,
    }
}

/// Whether a token (or session) of `scope` may make this request.
fn scope_may(scope: TokenScope, req: &Request) -> bool {
    match scope {
        TokenScope::Write => true,
        TokenScope::Read => read_scope_may(req),
        TokenScope::Certificates => read_scope_may(req) || certificates_scope_may(req),
    }
}

/// The one non-GET route a read-scope token may call: it compiles an expression and stores nothing.
const VALIDATE_PATH: &str = "/rules/validate";

/// Whether a read-scope token may make this request: GET and HEAD, and POST `/rules/validate`.
fn read_scope_may(req: &Request) -> bool {
    match *req.method() {
        Method::GET | Method::HEAD => true,
        // Nested under `/client/v4`, the route sees the path without that prefix.
        Method::POST => matches!(req.uri().path(), VALIDATE_PATH | "/client/v4/rules/validate"),
        _ => false,
    }
}

/// The zones a zone-restricted token may reach, for the handlers that list zones.
#[derive(Debug, Clone)]
pub struct ZoneLimit(pub Vec<String>);

/// Whether `addr` (a client's address) is one `net` (a CIDR or a bare address) covers. IPv4 clients of a dual-stack
/// listener arrive as `::ffff:a.b.c.d` and are compared as IPv4.
pub fn ip_in(net: &str, addr: IpAddr) -> bool {
    let addr = addr.to_canonical();
    match net.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&addr),
        Err(_) => net.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical() == addr),
    }
}

/// Whether `restrictions` let a client at `peer` (none: unknown) use the token.
pub fn address_allowed(restrictions: &TokenRestrictions, peer: Option<IpAddr>) -> bool {
    if restrictions.ip_in.is_empty() && restrictions.ip_not_in.is_empty() {
        return true;
    }
    // Without the peer's address (the API served without it) the condition cannot hold.
    peer.is_some_and(|ip| {
        (restrictions.ip_in.is_empty() || restrictions.ip_in.iter().any(|n| ip_in(n, ip)))
            && !restrictions.ip_not_in.iter().any(|n| ip_in(n, ip))
    })
}

/// Whether a zone-restricted token may make this request.
fn zone_path_allowed(zones: &[String], req: &Request) -> bool {
    let path = req.uri().path();
    let path = path.strip_prefix("/client/v4").unwrap_or(path);
    let parts: Vec<&str> = path.trim_start_matches('/').trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["zones"] => matches!(*req.method(), Method::GET | Method::HEAD),
        ["zones", zone, ..] => zones.iter().any(|z| z == zone),
        // The managed CA's certificates, which its clients need beside the certificates the token issues (and
        // which the CRL and the handshake's CA names show anyway).
        ["accounts", _, "managed_ca"] => matches!(*req.method(), Method::GET | Method::HEAD),
        ["user", "tokens", "verify"] => true,
        _ => false,
    }
}

/// Why `restrictions` refuse this request at `now`, if they do.
fn restriction_error(restrictions: &TokenRestrictions, req: &Request, now: i64) -> Option<Response> {
    if !restrictions.live_at(now) {
        let why = match restrictions.expires_on {
            Some(at) if now >= at => format!("this token expired at {}", crate::time_fmt::rfc3339(at)),
            _ => format!(
                "this token is not valid before {}",
                crate::time_fmt::rfc3339(restrictions.not_before.unwrap_or(0))
            ),
        };
        return Some(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::AUTHENTICATION,
                format!("Authentication error: {why}"),
            )
            .into_response(),
        );
    }
    {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        if !address_allowed(restrictions, peer) {
            return Some(
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    codes::UNAUTHORIZED,
                    "Unauthorized to access requested resource: this token may not be used from this address",
                )
                .into_response(),
            );
        }
    }
    if let Some(zones) = &restrictions.zones
        && !zone_path_allowed(zones, req)
    {
        return Some(
            ApiError::new(
                StatusCode::FORBIDDEN,
                codes::UNAUTHORIZED,
                "Unauthorized to access requested resource: this token may only reach its zones",
            )
            .into_response(),
        );
    }
    None
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Checks the request's token (or session) and its scope, then passes the request on with the caller's [`Actor`]
/// attached.
pub async fn require_token(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    let reads_only = matches!(*req.method(), Method::GET | Method::HEAD);
    let Some(secret) = bearer(&req) else {
        if let Some(id) = cookie_value(req.headers()) {
            return with_session(&state, &id, reads_only, req, next).await;
        }
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::AUTHENTICATION,
            "Authentication error: missing bearer token",
        )
        .into_response();
    };
    let token = match state.store.authenticate(secret).await {
        Ok(Some(token)) => token,
        Ok(None) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::AUTHENTICATION,
                "Authentication error: invalid token",
            )
            .into_response();
        }
        Err(err) => return ApiError::from(err).into_response(),
    };
    if let Some(refused) = restriction_error(&token.restrictions, &req, now()) {
        return refused;
    }
    if !scope_may(token.scope, &req) {
        return scope_error(token.scope);
    }
    if let Some(zones) = token.restrictions.zones {
        req.extensions_mut().insert(ZoneLimit(zones));
    }
    req.extensions_mut().insert(Actor::token(token.id));
    next.run(req).await
}

/// A call made by the dashboard with its session cookie.
async fn with_session(state: &AdminState, id: &str, reads_only: bool, mut req: Request, next: Next) -> Response {
    let Some(session) = state.sessions.get(id) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::AUTHENTICATION,
            "Authentication error: the dashboard session expired; sign in again",
        )
        .into_response();
    };
    if !reads_only {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_secret(sent, &session.csrf) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                codes::UNAUTHORIZED,
                "Unauthorized: a session-authenticated write needs the session's X-CSRF-Token header",
            )
            .into_response();
        }
        if !scope_may(session.scope, &req) {
            return scope_error(session.scope);
        }
    }
    // The token behind the session may have been revoked since sign-in, or have expired: that ends the session.
    match state.store.list_tokens().await {
        Ok(tokens) => match tokens
            .iter()
            .find(|t| t.id == session.token_id && t.revoked_on.is_none() && t.restrictions.live_at(now()))
        {
            Some(token) => {
                if let Some(refused) = restriction_error(&token.restrictions, &req, now()) {
                    return refused;
                }
                if let Some(zones) = &token.restrictions.zones {
                    req.extensions_mut().insert(ZoneLimit(zones.clone()));
                }
            }
            None => {
                state.sessions.remove(id);
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    codes::AUTHENTICATION,
                    "Authentication error: the token of this session was revoked or expired",
                )
                .into_response();
            }
        },
        Err(err) => return ApiError::from(err).into_response(),
    }
    req.extensions_mut().insert(Actor::token(session.token_id));
    next.run(req).await
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
