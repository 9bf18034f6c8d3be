//! The public listener (`serve --public-listen ADDR`): plain HTTP/1.1 serving what anyone may fetch and nothing
//! else: the managed CAs' CRLs (`GET /crl/<ca-id>.crl`, the distribution point of certificates issued with
//! `--crl-base-url`), their OCSP responders (`/ocsp/<ca-id>`, named in certificates issued with `--ocsp-base-url`)
//! and the health
//! checks (`/healthz`, `/readyz`) for load balancers and Kubernetes. The admin listener serves the same, but it
//! carries the API and the dashboard and belongs on localhost.
//!
//! It is reachable by anyone, so every resource a client controls is bounded: connections at once, the time to send
//! a request head, a head's size and a connection's lifetime. It does not do TLS: CRLs are signed, and RFC 5280
//! clients fetch them over plain HTTP (an `https` CRL URL would need a CRL to check its own certificate).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// Connections served at once; past it, new ones are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// Time to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection's whole life, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves `router` on `listener` until `stop` completes; connections still open then are dropped.
pub async fn serve(listener: TcpListener, router: axum::Router, stop: impl Future<Output = ()>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "public listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "public listener: connection limit reached; closed");
            continue;
        };
        let router = router.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                router.clone().oneshot(req.map(axum::body::Body::new))
            }),
        );
        tokio::spawn(async move {
            let _slot = slot;
            // Past its lifetime the connection is simply dropped.
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                tracing::debug!(%peer, error = %e, "public listener: connection ended with an error");
            }
        });
    }
}
