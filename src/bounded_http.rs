//! An axum router served over HTTP/1.1 with every resource a client controls bounded: connections at once (past
//! the limit, new ones are closed at once), the TLS handshake's time when the listener does TLS, a request head's
//! time and size, and a connection's whole life (past it, the connection is dropped). Each request carries the
//! peer's address as `ConnectInfo`; over TLS also `X-Forwarded-Proto: https` (a client's own value replaced), which
//! the dashboard reads to mark its cookie `Secure`, as behind a TLS-terminating proxy, and the client's certificates
//! when it sent any (`portcullis_admin::est::PeerCertificates`, which the EST routes read).
//!
//! Used by the public listener, the admin listener over TLS and the EST listener. Not here: the plain admin listener (axum's own
//! server), the edge (the proxy crate), what the routers serve.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Time to send a request head.
    pub head_timeout: Duration,
    /// Largest request head, bytes.
    pub max_head: usize,
    /// A connection's whole life, keep-alive included.
    pub lifetime: Duration,
    /// Time in-flight requests get to finish once `stop` resolves.
    pub drain: Duration,
}

/// TLS on the listener.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Time for a client to finish its handshake.
    pub handshake_timeout: Duration,
}

/// Serves `router` on `listener` until `stop`, then lets in-flight requests finish for up to `limits.drain`.
/// `name` ("public listener") starts its log lines.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    tls: Option<Tls>,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.max_head);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "{name}: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "{name}: connection limit reached; closed");
            continue;
        };
        let (router, http, tls) = (router.clone(), http.clone(), tls.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let Some(tls) = tls else {
                connection(
                    name,
                    TokioIo::new(tcp),
                    peer,
                    router,
                    &http,
                    watcher,
                    limits.lifetime,
                    None,
                )
                .await;
                return;
            };
            match tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let certs = stream.get_ref().1.peer_certificates().map(|chain| {
                        portcullis_admin::est::PeerCertificates(Arc::new(
                            chain.iter().map(|c| c.as_ref().to_vec()).collect(),
                        ))
                    });
                    connection(
                        name,
                        TokioIo::new(stream),
                        peer,
                        router,
                        &http,
                        watcher,
                        limits.lifetime,
                        Some(certs),
                    )
                    .await;
                }
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "{name}: TLS handshake failed"),
                Err(_) => tracing::info!(%peer, "{name}: TLS handshake not finished in time"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("{name}: requests still in flight after the drain; closed");
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection<IO>(
    name: &'static str,
    io: TokioIo<IO>,
    peer: SocketAddr,
    router: axum::Router,
    http: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    lifetime: Duration,
    // Over TLS: the client's certificates, if it sent any.
    tls: Option<Option<portcullis_admin::est::PeerCertificates>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        if let Some(certs) = &tls {
            req.headers_mut().insert(
                axum::http::HeaderName::from_static("x-forwarded-proto"),
                axum::http::HeaderValue::from_static("https"),
            );
            if let Some(certs) = certs {
                req.extensions_mut().insert(certs.clone());
            }
        }
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let served = watcher.watch(http.serve_connection(io, service));
    // Past its lifetime the connection is simply dropped.
    if let Ok(Err(e)) = tokio::time::timeout(lifetime, served).await {
        tracing::debug!(%peer, error = %e, "{name}: connection ended with an error");
    }
}
