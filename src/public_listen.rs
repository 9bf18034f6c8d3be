//! The public listener (`serve --public-listen ADDR`): plain HTTP/1.1 serving what anyone may fetch and nothing
//! else: the managed CAs' CRLs (`GET /crl/<ca-id>.crl`, the distribution point of certificates issued with
//! `--crl-base-url`), their OCSP responders (`/ocsp/<ca-id>`, named in certificates issued with `--ocsp-base-url`)
//! and the health
//! checks (`/healthz`, `/readyz`) for load balancers and Kubernetes. The admin listener serves the same, but it
//! carries the API and the dashboard and belongs on localhost.
//!
//! On port 80 it is also the edge's plain-HTTP side ([`with_edge`]): ACME HTTP-01 answers, and for the edge's
//! hostnames a redirect to HTTPS. It never proxies plain HTTP to an origin: that would step around mTLS.
//!
//! It is reachable by anyone, so every resource a client controls is bounded: connections at once, the time to send
//! a request head, a head's size and a connection's lifetime. It does not do TLS: CRLs are signed, and RFC 5280
//! clients fetch them over plain HTTP (an `https` CRL URL would need a CRL to check its own certificate).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use portcullis_proxy::Snapshot;
use tokio::net::TcpListener;

/// Connections served at once; past it, new ones are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// Time to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection's whole life, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Where HTTP-01 answers are asked for (RFC 8555 §8.3).
const ACME_PREFIX: &str = "/.well-known/acme-challenge/";

/// What the edge adds to the public listener.
#[derive(Clone)]
pub struct EdgeSide {
    /// The edge's configuration: its hostnames and the pending HTTP-01 answers.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The HTTPS port redirects send clients to (443 is left out of the URL).
    pub https_port: u16,
}

/// `router` with the edge's side in front: HTTP-01 answers at `/.well-known/acme-challenge/<token>` (for the name
/// the answer is for only), and, for a request to a name the edge serves over TLS (one of its hostnames, or any
/// name when it has a default host), a redirect to the same URL over HTTPS: 301 for GET and HEAD, 308 otherwise (the client repeats the method and body). The public routes (CRLs,
/// OCSP, health checks) are served for every name, as before.
pub fn with_edge(router: axum::Router, edge: EdgeSide) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(edge, edge_first))
}

/// The request's host name from `Host` (or the request target's authority), lower-case and without its port; none
/// when it is not a DNS name or IPv4 address, so that nothing else reaches a `Location` header.
fn request_host(req: &Request) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => req.uri().authority()?.as_str(),
    };
    let host = match raw.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => raw,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(host)
}

async fn edge_first(State(edge): State<EdgeSide>, req: Request, next: Next) -> Response {
    let host = request_host(&req);
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(ACME_PREFIX) {
        let snapshot = edge.snapshot.load();
        let readable = matches!(*req.method(), Method::GET | Method::HEAD);
        return match host.as_deref().and_then(|h| snapshot.http_answer(token, h)) {
            Some(answer) if readable => {
                ([(header::CONTENT_TYPE, "application/octet-stream")], answer.to_owned()).into_response()
            }
            _ => (StatusCode::NOT_FOUND, "no such ACME challenge\n").into_response(),
        };
    }
    let public_route =
        path.starts_with("/crl/") || path.starts_with("/ocsp/") || path == "/healthz" || path == "/readyz";
    if !public_route
        && let Some(host) = host
        && edge.snapshot.load().host_for_sni(Some(&host)).is_some()
    {
        let port = if edge.https_port == 443 {
            String::new()
        } else {
            format!(":{}", edge.https_port)
        };
        // An asterisk-form target (`OPTIONS *`) has no path to keep.
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or("/");
        let status = if matches!(*req.method(), Method::GET | Method::HEAD) {
            StatusCode::MOVED_PERMANENTLY
        } else {
            StatusCode::PERMANENT_REDIRECT
        };
        return match HeaderValue::from_str(&format!("https://{host}{port}{target}")) {
            Ok(location) => (status, [(header::LOCATION, location)], "use HTTPS\n").into_response(),
            Err(_) => (StatusCode::BAD_REQUEST, "bad request target\n").into_response(),
        };
    }
    next.run(req).await
}

/// Serves `router` on `listener` until `stop` completes; connections still open then are dropped.
pub async fn serve(listener: TcpListener, router: axum::Router, stop: impl Future<Output = ()>) {
    let limits = crate::bounded_http::Limits {
        connections: MAX_CONNECTIONS,
        head_timeout: HEAD_TIMEOUT,
        max_head: MAX_HEAD_BYTES,
        lifetime: CONNECTION_LIFETIME,
        // Served until the process exits: there is no drain.
        drain: Duration::ZERO,
    };
    crate::bounded_http::serve("public listener", listener, router, limits, None, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(host: Option<&str>, uri: &str) -> Option<String> {
        let mut req = axum::http::Request::builder().uri(uri);
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        request_host(&req.body(axum::body::Body::empty()).expect("request"))
    }

    #[test]
    fn only_plain_host_names_reach_a_redirect() {
        assert_eq!(host_of(Some("API.Example.com:80"), "/"), Some("api.example.com".into()));
        assert_eq!(host_of(Some("api.example.com."), "/"), Some("api.example.com".into()));
        assert_eq!(host_of(Some("192.0.2.1:8080"), "/"), Some("192.0.2.1".into()));
        assert_eq!(
            host_of(None, "http://api.example.com:80/x"),
            Some("api.example.com".into())
        );
        for bad in ["[2001:db8::1]:80", "evil.com/x", "a b", "a@b", "", "host:"] {
            assert_eq!(host_of(Some(bad), "/"), None, "{bad}");
        }
    }
}
