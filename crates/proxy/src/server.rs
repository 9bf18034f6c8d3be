//! Accepting connections: the connection limit, the TLS handshake with a per-SNI config, then
//! HTTP/1.1 or HTTP/2 (hyper-util's auto builder) with the limits of [`ProxyConfig`], and a
//! graceful drain on shutdown, an idle timeout and a maximum connection age. Counts handshakes
//! and open connections and logs each failed handshake with its reason (see `observe`).
//!
//! An upgraded (WebSocket) connection keeps its permit until the tunnel closes; the idle timeout
//! and maximum age do not apply to tunnels, shutdown closes them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::BodyExt as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::LazyConfigAcceptor;

use crate::ProxyError;
use crate::config::ProxyConfig;
use crate::conn::{self, ConnInfo};
use crate::events::EventSink;
use crate::forward::Upstream;
use crate::handler::{self, Shared};
use crate::observe;
use crate::snapshot::Snapshot;
use crate::tls;

/// A fatal `unrecognized_name` alert as a plaintext TLS record, for a ClientHello no host answers.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

fn http_builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // hyper's clock would also run while a keep-alive connection waits for its next
        // request; `conn::HeadWatch` times heads instead.
        .header_read_timeout(None)
        .max_headers(config.h1_max_headers)
        .max_buf_size(config.h1_max_buf_size.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(Some(config.h2_max_pending_accept_reset_streams))
        .max_local_error_reset_streams(Some(config.h2_max_local_error_reset_streams))
        .max_header_list_size(config.h2_max_header_list_size)
        .keep_alive_interval(Some(config.h2_keep_alive_interval))
        .keep_alive_timeout(config.h2_keep_alive_timeout);
    b
}

/// Serves TLS clients on `listener` until `shutdown` completes, then stops accepting, asks every
/// connection to finish (GOAWAY for HTTP/2, no more keep-alive for HTTP/1.1) and waits up to
/// [`ProxyConfig::drain_timeout`] for them.
///
/// With [`ProxyConfig::worker_threads`] above zero, connections are served by that many threads,
/// each with its own single-threaded runtime, accept loop (on a duplicate of the listening
/// socket) and upstream pools: a connection, its requests and its origin connections stay on one
/// thread, as in NGINX's worker model, so the hot path has no cross-thread wake-ups or
/// work-stealing queues. Only the snapshot, the connection limit and the event sink are shared.
/// With zero, everything runs on the caller's runtime (tests, embedding).
///
/// hyper-util's `GracefulShutdown` is not used because it hides the connection, and the idle
/// timeout and maximum age need to call `graceful_shutdown` on it too; the connection semaphore
/// doubles as the drain counter instead.
pub async fn serve(
    listener: TcpListener,
    snapshot: Arc<ArcSwap<Snapshot>>,
    config: ProxyConfig,
    events: Arc<dyn EventSink>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let max = u32::try_from(config.max_connections)
        .ok()
        .filter(|m| *m > 0 && (*m as usize) <= Semaphore::MAX_PERMITS)
        .ok_or_else(|| ProxyError::Config("max_connections must be between 1 and 2^32-1".into()))?;
    let (phase, phases) = watch::channel(Phase::Serving);
    let worker = Worker {
        snapshot,
        events,
        config: Arc::new(config),
        limiter: Arc::new(Semaphore::new(max as usize)),
        phases,
    };
    let drain_timeout = worker.config.drain_timeout;
    let limiter = worker.limiter.clone();
    let threads = worker.config.worker_threads;
    let stop_and_drain = async move {
        shutdown.await;
        let _ = phase.send(Phase::Stopping);
        // Every connection holds a permit until it ends: holding them all means all have ended.
        if tokio::time::timeout(drain_timeout, limiter.acquire_many(max))
            .await
            .is_err()
        {
            tracing::warn!("drain timeout reached with connections still open");
        }
        let _ = phase.send(Phase::Drained);
        phase
    };
    if threads == 0 {
        let ((), phase) = tokio::join!(worker.accept_loop(listener), stop_and_drain);
        drop(phase);
        return Ok(());
    }
    let listener = listener.into_std()?;
    let mut finished = Vec::with_capacity(threads);
    for index in 0..threads {
        // Built here so that a failure is this call's error, not a dead thread.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let socket = listener.try_clone()?;
        let worker = worker.clone();
        let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("portcullis-edge-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(socket) {
                        Ok(listener) => worker.accept_loop(listener).await,
                        Err(e) => tracing::error!(error = %e, "edge worker cannot use the listener"),
                    }
                });
                // Dropping the runtime cancels connections still open after the drain timeout.
                drop(runtime);
                let _ = done.send(());
            })?;
        finished.push(finished_rx);
    }
    drop(listener);
    drop(worker);
    let phase = stop_and_drain.await;
    for rx in finished {
        let _ = rx.await;
    }
    drop(phase);
    Ok(())
}

/// Where the edge is in its life; every worker watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Stop accepting; connections finish their requests.
    Stopping,
    /// All connections have ended, or the drain timeout passed.
    Drained,
}

/// What one accept loop needs; cloned into every worker thread.
#[derive(Clone)]
struct Worker {
    snapshot: Arc<ArcSwap<Snapshot>>,
    events: Arc<dyn EventSink>,
    config: Arc<ProxyConfig>,
    limiter: Arc<Semaphore>,
    phases: watch::Receiver<Phase>,
}

impl Worker {
    /// Accepts and serves connections on the current runtime until the phase leaves `Serving`,
    /// then waits until the edge is drained, so this runtime's connections can finish.
    async fn accept_loop(self, listener: TcpListener) {
        let config = &self.config;
        // Per worker: the upstream pools belong to this thread's runtime.
        let (stop_tunnels, tunnels_stopping) = watch::channel(false);
        let shared = Arc::new(Shared {
            snapshot: self.snapshot.clone(),
            events: self.events.clone(),
            upstream: Upstream::new(config, tunnels_stopping.clone()),
        });
        let builder = Arc::new(http_builder(config));
        let timers = Timers {
            handshake: config.handshake_timeout,
            header_read: config.h1_header_read_timeout,
            // A zero timeout would make the idle check spin.
            idle: config.idle_timeout.max(Duration::from_millis(100)),
            max_age: config.max_connection_age,
        };
        let mut phases = self.phases.clone();
        let stop = async {
            let _ = phases.wait_for(|p| *p != Phase::Serving).await;
        };
        tokio::pin!(stop);
        loop {
            // Take a permit before accepting, so at the limit new clients wait in the listen backlog.
            let permit = tokio::select! {
                () = &mut stop => break,
                permit = self.limiter.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, remote) = tokio::select! {
                () = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let shared = shared.clone();
            let builder = builder.clone();
            let stopping = tunnels_stopping.clone();
            tokio::spawn(async move {
                let _permit = permit;
                connection(tcp, remote, shared, &builder, stopping, timers).await;
            });
        }
        drop(listener);
        let _ = stop_tunnels.send(true);
        let mut phases = self.phases;
        let _ = phases.wait_for(|p| *p == Phase::Drained).await;
    }
}

/// The reason label and a log detail for a failed handshake. The detail is rustls' own text
/// (e.g. "invalid peer certificate: Expired"), which names no key material.
fn handshake_error(e: &std::io::Error) -> (&'static str, String) {
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let reason = match tls {
        Some(rustls::Error::NoCertificatesPresented) => "client_cert_required",
        Some(rustls::Error::InvalidCertificate(_)) => "client_cert_invalid",
        Some(_) => "tls_error",
        None if matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ) =>
        {
            "closed"
        }
        None => "tls_error",
    };
    (reason, e.to_string())
}

#[derive(Debug, Clone, Copy)]
struct Timers {
    handshake: Duration,
    header_read: Duration,
    idle: Duration,
    max_age: Duration,
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    mut stopping: watch::Receiver<bool>,
    timers: Timers,
) {
    let _open = observe::OpenConnection::new();
    let local_port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = tcp.set_nodelay(true);
    let client = remote.ip();
    let accepted_at = Instant::now();
    let deadline = accepted_at + timers.handshake;
    let start = match timeout_at(
        deadline,
        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp),
    )
    .await
    {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // Port scanners and TCP health checks: counted, but not worth an INFO line each.
                observe::handshake_closed_early();
                tracing::debug!(%remote, "connection closed before a ClientHello");
            } else {
                observe::handshake_failed(client, None, "bad_client_hello", &e.to_string());
            }
            return;
        }
        Err(_) => {
            observe::handshake_failed(client, None, "timeout", "no ClientHello before the handshake timeout");
            return;
        }
    };
    let sni = start.client_hello().server_name().map(str::to_owned);
    let snapshot = shared.snapshot.load_full();
    let Some(host) = snapshot.host_for_sni(sni.as_deref()).cloned() else {
        let reason = if sni.is_some() { "unknown_sni" } else { "no_sni" };
        observe::handshake_failed(
            client,
            sni.as_deref(),
            reason,
            "no host for this name and no default host",
        );
        let mut io = start.io;
        let _ = timeout_at(deadline, io.write_all(&UNRECOGNIZED_NAME_ALERT)).await;
        return;
    };
    let handshake = timeout_at(deadline, start.into_stream(host.server_config.clone())).await;
    // Taken whatever the outcome, so that it can never be attributed to a later handshake.
    let refused_cert = tls::take_refused_cert();
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let (reason, detail) = handshake_error(&e);
            // Only our verifier's refusals carry a certificate; never attach one to another failure.
            let cert = refused_cert.filter(|_| reason == "client_cert_invalid");
            observe::handshake_refused(client, sni.as_deref(), reason, &detail, cert.as_ref());
            return;
        }
        Err(_) => {
            observe::handshake_failed(client, sni.as_deref(), "timeout", "handshake not finished in time");
            return;
        }
    };
    let session = tls.get_ref().1;
    let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let chain = session
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let conn = Arc::new(ConnInfo::new(
        host.hostname.clone(),
        chain,
        tls::version_name(session.protocol_version()),
        tls::cipher_name(session.negotiated_cipher_suite()),
        remote,
        local_port,
    ));
    // Verify once now, so the first request does not pay for it.
    let facts = conn.facts_at_handshake(&snapshot, &host, !resumed);
    drop(snapshot);
    let required = host.mtls.as_ref().is_some_and(|m| m.mode == tls::MtlsMode::Require);
    if resumed && required && (!facts.cert_verified || facts.cert_revoked) {
        // Resumption skips the certificate check; `require` must still never serve a certificate
        // that a full handshake would refuse now (it expired since the session began).
        observe::handshake_failed(
            client,
            sni.as_deref(),
            "client_cert_invalid",
            &format!(
                "resumed session's client certificate is no longer trusted: {}",
                facts.verify_result
            ),
        );
        return;
    }
    observe::handshake_ok(resumed);
    observe::client_cert(facts.status.as_str());
    drop(facts);

    let service = {
        let conn = conn.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let conn = conn.clone();
            async move {
                let in_progress = conn.request_started();
                let resp = handler::handle(req, shared, conn.clone()).await;
                Ok::<_, Infallible>(resp.map(|body| conn::GuardedBody::new(body, in_progress).boxed()))
            }
        })
    };
    // With upgrades, the connection future ends after a 101 and hands the stream to the tunnel.
    let http1 = tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice());
    let io = conn::HeadWatch::new(tls, conn.clone());
    if !http1 {
        conn.head_clock_off();
    }
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(served);
    let max_age = accepted_at + timers.max_age;
    let mut closing = *stopping.borrow();
    if closing {
        served.as_mut().graceful_shutdown();
    }
    loop {
        let now = Instant::now();
        let mut idle_at = conn.idle_deadline(timers.idle);
        if idle_at <= now {
            // Past the deadline but a request is in progress: look again one period later.
            idle_at = now + timers.idle;
        }
        // Heads are checked once per header-read period, so a slow head is cut off between one
        // and two periods after its first byte, without a timer per request.
        let check_at = idle_at.min(now + timers.header_read.max(Duration::from_millis(10)));
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                // An upgraded tunnel outlives the HTTP connection; keep the permit until it ends.
                conn.wait_no_requests().await;
                return;
            }
            // A dropped sender also means shutdown.
            _ = stopping.changed(), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(max_age), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(check_at), if !closing => {
                if conn.head_overdue(timers.header_read) {
                    tracing::debug!(%remote, "request head not received within the header-read timeout");
                    return;
                }
                if conn.is_idle(timers.idle) {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
