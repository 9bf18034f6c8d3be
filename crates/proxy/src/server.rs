//! Accepting connections: the connection limit, the TLS handshake with a per-SNI config, then
//! HTTP/1.1 (`h1`, the proxy's own) or HTTP/2 (hyper's, chosen by ALPN or the HTTP/2 preface)
//! with the limits of [`ProxyConfig`], and a graceful drain on shutdown, an idle timeout and a
//! maximum connection age. Counts handshakes and open connections and logs each failed
//! handshake with its reason (see `observe`).
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
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::LazyConfigAcceptor;

use crate::ProxyError;
use crate::body::RequestBody;
use crate::cert_header::CertHeaderReader;
use crate::config::ProxyConfig;
use crate::conn::{self, ConnInfo};
use crate::events::EventSink;
use crate::forward::Upstream;
use crate::h1;
use crate::handler::{self, Shared};
use crate::observe;
use crate::ocsp::OcspOutcome;
use crate::proxy_protocol;
use crate::snapshot::Snapshot;
use crate::tls;

/// A fatal `unrecognized_name` alert as a plaintext TLS record, for a ClientHello no host answers.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

fn h2_builder(config: &ProxyConfig) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
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
    serve_all(vec![listener], snapshot, config, events, shutdown).await
}

/// [`serve`] on several listeners (addresses, ports, IPv4 and IPv6) at once: each edge thread accepts on
/// all of them, and they share the connection limit, the snapshot and the drain.
pub async fn serve_all(
    listeners: Vec<TcpListener>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    config: ProxyConfig,
    events: Arc<dyn EventSink>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    if listeners.is_empty() {
        return Err(ProxyError::Config("no listener to serve".into()));
    }
    let max = u32::try_from(config.max_connections)
        .ok()
        .filter(|m| *m > 0 && (*m as usize) <= Semaphore::MAX_PERMITS)
        .ok_or_else(|| ProxyError::Config("max_connections must be between 1 and 2^32-1".into()))?;
    let (phase, phases) = watch::channel(Phase::Serving);
    let config_ocsp_timeout = config.ocsp_timeout;
    let worker = Worker {
        snapshot,
        events,
        config: Arc::new(config),
        limiter: Arc::new(Semaphore::new(max as usize)),
        rates: Arc::default(),
        ocsp: Arc::new(crate::ocsp::OcspChecker::new(config_ocsp_timeout)),
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
        let ((), phase) = tokio::join!(worker.accept_loop(listeners), stop_and_drain);
        drop(phase);
        return Ok(());
    }
    let listeners = listeners
        .into_iter()
        .map(TcpListener::into_std)
        .collect::<Result<Vec<_>, _>>()?;
    let mut finished = Vec::with_capacity(threads);
    for index in 0..threads {
        // Built here so that a failure is this call's error, not a dead thread.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let sockets = listeners
            .iter()
            .map(std::net::TcpListener::try_clone)
            .collect::<Result<Vec<_>, _>>()?;
        let worker = worker.clone();
        let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("portcullis-edge-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match sockets.into_iter().map(TcpListener::from_std).collect() {
                        Ok(listeners) => worker.accept_loop(listeners).await,
                        Err(e) => tracing::error!(error = %e, "edge worker cannot use the listener"),
                    }
                });
                // Dropping the runtime cancels connections still open after the drain timeout.
                drop(runtime);
                let _ = done.send(());
            })?;
        finished.push(finished_rx);
    }
    drop(listeners);
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
    /// Rate-limiting counters, shared by every thread so that a limit holds for the whole node.
    rates: Arc<crate::ratelimit::RateLimiter>,
    ocsp: Arc<crate::ocsp::OcspChecker>,
    phases: watch::Receiver<Phase>,
}

impl Worker {
    /// Accepts and serves connections on the current runtime until the phase leaves `Serving`,
    /// then waits until the edge is drained, so this runtime's connections can finish.
    async fn accept_loop(self, listeners: Vec<TcpListener>) {
        let config = &self.config;
        // Per worker: the upstream pools belong to this thread's runtime.
        let (stop_tunnels, tunnels_stopping) = watch::channel(false);
        let shared = Arc::new(Shared {
            snapshot: self.snapshot.clone(),
            events: self.events.clone(),
            upstream: Upstream::new(config),
            proxy_protocol: config.proxy_protocol_from.clone(),
            rates: self.rates.clone(),
            ocsp: self.ocsp.clone(),
            cert_header: config.client_cert_header.clone().map(CertHeaderReader::new),
            client_ip_header: config.client_ip_header.clone(),
        });
        let builder = Arc::new(h2_builder(config));
        // Pooled origin connections that outlive their usefulness are closed in the background;
        // the sweeper ends with this worker's `Shared`.
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                shared.upstream.sweep();
                shared.rates.sweep();
            }
        });
        let limits = ConnLimits {
            timers: Timers {
                handshake: config.handshake_timeout,
                header_read: config.h1_header_read_timeout,
                // A zero timeout would make the idle check spin.
                idle: config.idle_timeout.max(Duration::from_millis(100)),
                max_age: config.max_connection_age,
            },
            max_headers: config.h1_max_headers,
            max_head: config.h1_max_buf_size.max(8192),
            send: config.h1_send_timeout,
            stream_idle: config.stream_idle_timeout,
        };
        let mut phases = self.phases.clone();
        let stop = async {
            let _ = phases.wait_for(|p| *p != Phase::Serving).await;
        };
        tokio::pin!(stop);
        let mut next_listener = 0;
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
                accepted = accept_any(&listeners, &mut next_listener) => match accepted {
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
                connection(tcp, remote, shared, &builder, stopping, limits).await;
            });
        }
        drop(listeners);
        let _ = stop_tunnels.send(true);
        let mut phases = self.phases;
        let _ = phases.wait_for(|p| *p == Phase::Drained).await;
    }
}

/// The next connection on any of `listeners`. The one asked first takes turns, so that a busy listener
/// cannot starve the others.
async fn accept_any(listeners: &[TcpListener], next: &mut usize) -> std::io::Result<(TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for i in 0..n {
            let index = (*next + i) % n;
            if let std::task::Poll::Ready(accepted) = listeners[index].poll_accept(cx) {
                *next = (index + 1) % n;
                return std::task::Poll::Ready(accepted);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Completes a TLS-ALPN-01 validation handshake with the answer certificate and closes: RFC 8737 has the ACME
/// server look only at the certificate, and nothing is served on such a connection.
async fn answer_acme(
    start: tokio_rustls::StartHandshake<TcpStream>,
    config: Arc<rustls::ServerConfig>,
    deadline: tokio::time::Instant,
    client: std::net::IpAddr,
    sni: Option<&str>,
) {
    match timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(mut tls)) => {
            tracing::info!(%client, sni, "answered an ACME TLS-ALPN-01 validation");
            let _ = timeout_at(deadline, tls.shutdown()).await;
        }
        Ok(Err(e)) => observe::handshake_failed(client, sni, "acme_tls_alpn", &e.to_string()),
        Err(_) => observe::handshake_failed(client, sni, "timeout", "ACME validation handshake not finished in time"),
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

/// The per-connection limits, from [`ProxyConfig`].
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    timers: Timers,
    max_headers: usize,
    max_head: usize,
    send: Duration,
    stream_idle: Duration,
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    h2: &http2::Builder<TokioExecutor>,
    stopping: watch::Receiver<bool>,
    limits: ConnLimits,
) {
    let _open = observe::OpenConnection::new();
    let accepted_at = Instant::now();
    // Boxed: the handshake's state is large and needed only once.
    let Some((tls, conn)) = Box::pin(handshake(tcp, remote, &shared, limits.timers)).await else {
        return;
    };
    let max_age = accepted_at + limits.timers.max_age;
    let io = if tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
        h1::Prefixed::new(Vec::new(), tls)
    } else {
        let h1_limits = h1::Limits {
            max_headers: limits.max_headers,
            max_head: limits.max_head,
            header_read: limits.timers.header_read,
            idle: limits.timers.idle,
            send: limits.send,
            stream_idle: limits.stream_idle,
            max_age,
        };
        match h1::serve(tls, conn.clone(), shared.clone(), h1_limits, stopping.clone()).await {
            h1::Outcome::Closed => return,
            // HTTP/2 with prior knowledge (no ALPN).
            h1::Outcome::Http2(io) => io,
        }
    };
    // Boxed, like `h1::serve`: the connection task itself stays small.
    Box::pin(serve_h2(io, conn, shared, h2, stopping, limits.timers.idle, max_age)).await;
}

/// The TLS handshake with the configuration of the host the ClientHello names, and the
/// connection's facts; `None` (logged and counted) if it fails.
async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    shared: &Shared,
    timers: Timers,
) -> Option<(h1::ClientIo, Arc<ConnInfo>)> {
    let mut tcp = tcp;
    let local_port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + timers.handshake;
    // Behind a TCP load balancer the client's address comes first, inside the same deadline.
    let remote = if shared.proxy_protocol.contains(remote.ip()) {
        match timeout_at(deadline, proxy_protocol::read_header(&mut tcp, remote)).await {
            Ok(Ok(client)) => client,
            Ok(Err(proxy_protocol::HeaderError::Closed)) => {
                // A balancer's TCP health check: counted, not logged, like any connection closed early.
                observe::handshake_closed_early();
                return None;
            }
            Ok(Err(e)) => {
                observe::handshake_failed(remote.ip(), None, "proxy_protocol", &e.to_string());
                return None;
            }
            Err(_) => {
                observe::handshake_failed(remote.ip(), None, "timeout", "no PROXY protocol header in time");
                return None;
            }
        }
    } else {
        remote
    };
    let client = remote.ip();
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
            return None;
        }
        Err(_) => {
            observe::handshake_failed(client, None, "timeout", "no ClientHello before the handshake timeout");
            return None;
        }
    };
    let sni = start.client_hello().server_name().map(str::to_owned);
    let snapshot = shared.snapshot.load_full();
    if let Some(config) = snapshot.acme_answer(sni.as_deref(), start.client_hello().alpn()) {
        drop(snapshot);
        answer_acme(start, config, deadline, client, sni.as_deref()).await;
        return None;
    }
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
        return None;
    };
    let config = host.server_configs.for_suites(start.client_hello().cipher_suites());
    let handshake_began = time::OffsetDateTime::now_utc();
    let handshake = timeout_at(deadline, start.into_stream(config)).await;
    // Taken whatever the outcome, so that it can never be attributed to a later handshake.
    let refused_cert = tls::take_refused_cert();
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let (reason, detail) = handshake_error(&e);
            // Only our verifier's refusals carry a certificate; never attach one to another failure.
            let cert = refused_cert.filter(|_| reason == "client_cert_invalid");
            match (&cert, reason) {
                (Some(cert), _) => host.metrics.client_cert(cert.status),
                (None, "client_cert_required") => host.metrics.client_cert("absent"),
                _ => {}
            }
            observe::handshake_refused(client, sni.as_deref(), reason, &detail, cert.as_ref());
            return None;
        }
        Err(_) => {
            observe::handshake_failed(client, sni.as_deref(), "timeout", "handshake not finished in time");
            return None;
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
    let mut facts = conn.facts_at_handshake(&snapshot, &host, !resumed, handshake_began);
    let generation = snapshot.generation;
    // Not held while waiting for a responder.
    drop(snapshot);
    let ocsp_target = match &host.mtls {
        Some(mtls) if facts.cert_verified && !facts.cert_revoked && mtls.verifier.has_ocsp() => mtls
            .verifier
            .ocsp_target(&conn.peer_chain, time::OffsetDateTime::now_utc()),
        _ => None,
    };
    // Under `require`, and under `verify_if_given` once a certificate is presented, the edge never
    // serves a certificate that the handshake's check would refuse now.
    let required = host.mtls.as_ref().is_some_and(|m| {
        m.mode == tls::MtlsMode::Require || (m.mode == tls::MtlsMode::VerifyIfGiven && !conn.peer_chain.is_empty())
    });
    if let Some(target) = ocsp_target {
        let (outcome, hard_fail, anchor_key) = match target {
            Ok(target) => (shared.ocsp.check(&target).await, target.hard_fail, target.anchor_key),
            Err(unusable) => (
                OcspOutcome::Failed(unusable.reason),
                unusable.hard_fail,
                unusable.anchor_key,
            ),
        };
        let refuses = matches!(outcome, OcspOutcome::Revoked) || (hard_fail && !matches!(outcome, OcspOutcome::Good));
        if refuses && required {
            let detail = match &outcome {
                OcspOutcome::Failed(e) => format!("no OCSP answer for the client certificate: {e}"),
                other => format!("OCSP says the client certificate is {}", other.label()),
            };
            let status = if matches!(outcome, OcspOutcome::Revoked) {
                "revoked"
            } else {
                "untrusted"
            };
            host.metrics.client_cert(status);
            observe::handshake_failed(client, sni.as_deref(), "client_cert_invalid", &detail);
            return None;
        }
        facts = conn.set_ocsp(outcome, anchor_key, &facts, &host, generation);
    }
    if resumed && required && (!facts.cert_verified || facts.cert_revoked) {
        // Resumption skips the certificate check; `require` (and `verify_if_given` with a
        // certificate) must still never serve a certificate that a full handshake would refuse
        // now (it expired since the session began).
        host.metrics.client_cert(facts.status.as_str());
        observe::handshake_failed(
            client,
            sni.as_deref(),
            "client_cert_invalid",
            &format!(
                "resumed session's client certificate is no longer trusted: {}",
                facts.verify_result
            ),
        );
        return None;
    }
    observe::handshake_ok(resumed);
    host.metrics.client_cert(facts.status.as_str());
    Some((tls, conn))
}

/// Serves HTTP/2 on `io` with hyper until the client closes, the connection is idle or too old,
/// or the edge stops (each a GOAWAY).
async fn serve_h2(
    io: h1::Prefixed<h1::ClientIo>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    builder: &http2::Builder<TokioExecutor>,
    mut stopping: watch::Receiver<bool>,
    idle: Duration,
    max_age: Instant,
) {
    let service = {
        let conn = conn.clone();
        service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let shared = shared.clone();
            let conn = conn.clone();
            async move {
                let in_progress = conn.request_started();
                // Boxed: hyper moves this future into a task per stream, and a pointer moves faster
                // than the handler's few KiB of state.
                let resp = Box::pin(handler::handle(req.map(RequestBody::from), shared, conn.clone())).await;
                Ok::<_, Infallible>(resp.map(|body| conn::GuardedBody::new(body, in_progress).boxed()))
            }
        })
    };
    // Boxed: hyper's connection state lives on the heap either way; the task stays small.
    let mut served = Box::pin(builder.serve_connection(TokioIo::new(io), service));
    let mut closing = *stopping.borrow();
    if closing {
        served.as_mut().graceful_shutdown();
    }
    loop {
        let now = Instant::now();
        let mut idle_at = conn.idle_deadline(idle);
        if idle_at <= now {
            // Past the deadline but a request is in progress: look again one period later.
            idle_at = now + idle;
        }
        // One timer for both deadlines: this select is polled twice per request, and each
        // timer polled costs about as much as a small header lookup.
        tokio::select! {
            biased;
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(remote = %conn.remote, error = %e, "connection ended with an error");
                }
                return;
            }
            // A dropped sender also means shutdown.
            _ = stopping.changed(), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            () = conn.ended(), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_at.min(max_age)), if !closing => {
                if Instant::now() >= max_age || conn.is_idle(idle) {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
