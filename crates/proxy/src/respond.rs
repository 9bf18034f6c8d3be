//! Responses the proxy makes itself: block pages (default, custom, gRPC trailers-only) and
//! error pages (405, 408, 413, 421, 429, 501, 502, 504). None of them names internals (rules, origins, errors).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use portcullis_rules::BlockResponse;

use crate::forward::Body;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn with(status: StatusCode, content_type: &'static str, body: Body, version: Version) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

const BLOCK_PAGE: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>403 Forbidden</title></head>\n\
<body><h1>403 Forbidden</h1><p>Access to this resource was denied.</p></body></html>\n";

/// A rule's custom response, or the default 403 page.
pub(crate) fn blocked(custom: Option<&BlockResponse>, version: Version) -> Response<Body> {
    match custom {
        Some(r) => {
            let status = StatusCode::from_u16(r.status_code).unwrap_or(StatusCode::FORBIDDEN);
            let mut resp = with(status, "text/plain", full(r.content.clone()), version);
            // Validated against a short list when the ruleset compiled; fall back rather than fail.
            if let Ok(ct) = HeaderValue::from_str(&r.content_type) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            resp
        }
        None => with(
            StatusCode::FORBIDDEN,
            "text/html; charset=utf-8",
            full(BLOCK_PAGE),
            version,
        ),
    }
}

/// gRPC status codes used for blocks.
pub(crate) const GRPC_PERMISSION_DENIED: u8 = 7;
pub(crate) const GRPC_RESOURCE_EXHAUSTED: u8 = 8;
pub(crate) const GRPC_UNAUTHENTICATED: u8 = 16;

/// A trailers-only gRPC response: HTTP 200, the status in the (only) header block, no body.
pub(crate) fn grpc_blocked(code: u8, version: Version) -> Response<Body> {
    let mut resp = with(StatusCode::OK, "application/grpc", empty(), version);
    resp.headers_mut().remove(header::CACHE_CONTROL);
    resp.headers_mut()
        .insert("grpc-status", HeaderValue::from(u16::from(code)));
    let message = match code {
        GRPC_UNAUTHENTICATED => "client certificate required",
        GRPC_RESOURCE_EXHAUSTED => "rate limit exceeded",
        _ => "permission denied",
    };
    resp.headers_mut()
        .insert("grpc-message", HeaderValue::from_static(message));
    resp
}

/// The proxy's own error (400, 408, 413, 501, 502, 504) for a gRPC call, which a gRPC client can
/// read only as a status: a trailers-only response with the code of gRPC's HTTP mapping, more
/// specific where the proxy knows more (413 → RESOURCE_EXHAUSTED, 408 → DEADLINE_EXCEEDED),
/// and the HTTP reason as the message.
pub(crate) fn grpc_error(status: StatusCode, version: Version) -> Response<Body> {
    let code: u16 = match status.as_u16() {
        400 => 13,             // INTERNAL
        408 => 4,              // DEADLINE_EXCEEDED
        413 => 8,              // RESOURCE_EXHAUSTED
        405 | 501 => 12,       // UNIMPLEMENTED
        502..=504 | 421 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    };
    let mut resp = with(StatusCode::OK, "application/grpc", empty(), version);
    resp.headers_mut().remove(header::CACHE_CONTROL);
    resp.headers_mut().insert("grpc-status", HeaderValue::from(code));
    let reason = status.canonical_reason().unwrap_or("proxy error");
    if let Ok(message) = HeaderValue::from_str(&format!("{} {reason}", status.as_u16())) {
        resp.headers_mut().insert("grpc-message", message);
    }
    resp
}

/// A short plain-text page for `status` (400, 405, 408, 413, 421, 501, 502, 504).
pub(crate) fn status_page(status: StatusCode, version: Version) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Error");
    with(
        status,
        "text/plain; charset=utf-8",
        full(format!("{} {reason}\n", status.as_u16())),
        version,
    )
}
