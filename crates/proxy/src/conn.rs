//! What the proxy knows about one client connection after the handshake: the host it was
//! accepted for, the peer's certificate chain, the TLS version and cipher, and the certificate
//! facts, cached per snapshot generation.
//!
//! Facts are computed once per connection and recomputed only when a newer snapshot is in
//! service, so a revocation reaches long-lived HTTP/2 connections at their next request without
//! re-verifying the chain on every request. Does not decide anything; see `handler`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use portcullis_pki::ClientAuthFacts;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::forward::Body;
use crate::snapshot::{Host, Snapshot};
use crate::tls::MtlsMode;

/// One accepted TLS connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The host chosen at the handshake (by SNI, or the default host).
    pub host_name: String,
    pub peer_chain: Vec<CertificateDer<'static>>,
    pub tls_version: &'static str,
    pub tls_cipher: String,
    pub remote: SocketAddr,
    /// `remote`'s address as text (IPv4-mapped IPv6 addresses as IPv4), for logs, events and
    /// `X-Forwarded-For`; formatted once per connection.
    pub client_ip: String,
    pub local_port: u16,
    /// (snapshot generation, facts computed with that snapshot's verifier).
    facts: Mutex<Option<(u64, Arc<ClientAuthFacts>)>>,
    /// For the idle timeout: when the connection started, requests in progress, and when the
    /// last one started (milliseconds after `started`).
    started: Instant,
    active: AtomicUsize,
    last_request_ms: AtomicU64,
    /// HTTP/1.1 header-read timeout: when the bytes of a request head that has not been fully
    /// received yet began to arrive (milliseconds after `started`, plus one); 0 when no head is
    /// pending. See [`HeadWatch`].
    head_begun_ms: AtomicU64,
    /// Woken when the last request in progress (or upgraded tunnel) ends.
    idle: Notify,
}

/// Marks a request in progress until dropped.
pub(crate) struct RequestGuard(Arc<ConnInfo>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted as in progress until the body has been sent
/// (or dropped): the idle timeout and the header-read clock must not treat a connection that is
/// still streaming a response as idle, even when the client pipelines its next request meanwhile.
pub(crate) struct GuardedBody {
    inner: Body,
    guard: Option<RequestGuard>,
}

impl GuardedBody {
    pub(crate) fn new(inner: Body, guard: RequestGuard) -> GuardedBody {
        GuardedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl hyper::body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn absent() -> Arc<ClientAuthFacts> {
    static ABSENT: OnceLock<Arc<ClientAuthFacts>> = OnceLock::new();
    ABSENT.get_or_init(|| Arc::new(ClientAuthFacts::default())).clone()
}

impl ConnInfo {
    pub(crate) fn new(
        host_name: String,
        peer_chain: Vec<CertificateDer<'static>>,
        tls_version: &'static str,
        tls_cipher: String,
        remote: SocketAddr,
        local_port: u16,
    ) -> ConnInfo {
        ConnInfo {
            host_name,
            peer_chain,
            tls_version,
            tls_cipher,
            remote,
            client_ip: remote.ip().to_canonical().to_string(),
            local_port,
            facts: Mutex::new(None),
            started: Instant::now(),
            active: AtomicUsize::new(0),
            last_request_ms: AtomicU64::new(0),
            head_begun_ms: AtomicU64::new(0),
            idle: Notify::new(),
        }
    }

    /// Records a request start; the request counts as in progress until the guard drops.
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.head_begun_ms.store(0, Ordering::Relaxed);
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_request_ms.fetch_max(ms, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Starts the header-read clock, unless a head is already pending or a request is in
    /// progress (its body, or a pipelined next request, is not a new head to time).
    pub(crate) fn head_bytes_arrived(&self) {
        if self.active.load(Ordering::Relaxed) == 0 && self.head_begun_ms.load(Ordering::Relaxed) == 0 {
            let _ = self
                .head_begun_ms
                .compare_exchange(0, self.elapsed_ms() + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Stops the header-read clock without a request (the connection turned out to be HTTP/2).
    pub(crate) fn head_clock_off(&self) {
        self.head_begun_ms.store(0, Ordering::Relaxed);
    }

    /// A request head began to arrive `timeout` or longer ago and is still incomplete.
    pub(crate) fn head_overdue(&self, timeout: Duration) -> bool {
        let begun = self.head_begun_ms.load(Ordering::Relaxed);
        begun != 0
            && self.active.load(Ordering::Relaxed) == 0
            && self.elapsed_ms() + 1 >= begun.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
    }

    /// Waits until no request is in progress. An upgraded (WebSocket) tunnel counts as one, so
    /// the connection keeps its slot under the connection limit until the tunnel closes.
    pub(crate) async fn wait_no_requests(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a guard dropped in between still wakes us.
            notified.as_mut().enable();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// When the connection becomes idle if nothing else happens.
    pub(crate) fn idle_deadline(&self, idle_timeout: Duration) -> Instant {
        self.started + Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed)) + idle_timeout
    }

    /// No request in progress and none started within `idle_timeout`.
    pub(crate) fn is_idle(&self, idle_timeout: Duration) -> bool {
        self.active.load(Ordering::Relaxed) == 0 && Instant::now() >= self.idle_deadline(idle_timeout)
    }

    /// The certificate facts right after the handshake, which used `snapshot`'s configuration
    /// for `host`. After a full handshake under `require`, the handshake has just verified the
    /// chain with the same verifier and refused anything untrusted, expired or revoked, so it is
    /// not verified again. A resumed session is verified here: resumption skips the handshake's
    /// check, and the certificate may have been revoked since.
    pub(crate) fn facts_at_handshake(&self, snapshot: &Snapshot, host: &Host, full: bool) -> Arc<ClientAuthFacts> {
        match &host.mtls {
            Some(mtls) if full && mtls.mode == MtlsMode::Require && !self.peer_chain.is_empty() => {
                let facts = Arc::new(mtls.verifier.client_auth_accepted(&self.peer_chain));
                if let Ok(mut guard) = self.facts.lock() {
                    *guard = Some((snapshot.generation, facts.clone()));
                }
                facts
            }
            _ => self.facts(snapshot, host),
        }
    }

    /// The certificate facts under `snapshot`'s trust configuration for `host`.
    pub(crate) fn facts(&self, snapshot: &Snapshot, host: &Host) -> Arc<ClientAuthFacts> {
        let Some(mtls) = &host.mtls else {
            // No client auth was offered, so no certificate can have been presented.
            return absent();
        };
        if let Ok(guard) = self.facts.lock()
            && let Some((generation, facts)) = guard.as_ref()
            && *generation == snapshot.generation
        {
            return facts.clone();
        }
        // Computed outside the lock: concurrent streams may both compute once, which is harmless.
        let facts = Arc::new(mtls.verifier.client_auth(&self.peer_chain, OffsetDateTime::now_utc()));
        if let Ok(mut guard) = self.facts.lock() {
            *guard = Some((snapshot.generation, facts.clone()));
        }
        facts
    }
}

/// The client side of an HTTP/1.1 connection, watched for the header-read timeout: the first
/// bytes of a request head start the clock (and the request's start stops it), so the timeout
/// bounds how long a head takes to arrive, not how long a keep-alive connection may sit idle
/// between requests, which is the idle timeout's job. (hyper's own header-read timeout runs
/// from the end of one response, so it closed idle keep-alive connections.)
///
/// A connection whose first bytes are the HTTP/2 preface (prior knowledge, no ALPN) is not
/// watched.
pub(crate) struct HeadWatch<IO> {
    inner: IO,
    conn: Arc<ConnInfo>,
    watch: Watch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// This many bytes read so far, all matching the start of the HTTP/2 preface.
    Sniffing(usize),
    On,
    Off,
}

const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

impl<IO> HeadWatch<IO> {
    /// Watches `inner` for `conn`; the clock starts now, for the connection's first request.
    pub(crate) fn new(inner: IO, conn: Arc<ConnInfo>) -> HeadWatch<IO> {
        conn.head_bytes_arrived();
        HeadWatch {
            inner,
            conn,
            watch: Watch::Sniffing(0),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for HeadWatch<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let read = &buf.filled()[before..];
            if let Watch::Sniffing(seen) = this.watch {
                let expected = &H2_PREFACE_START[seen..];
                let n = read.len().min(expected.len());
                this.watch = if read[..n] != expected[..n] {
                    Watch::On
                } else if seen + n == H2_PREFACE_START.len() {
                    this.conn.head_clock_off();
                    Watch::Off
                } else {
                    // A head that begins like the preface so far is still timed.
                    Watch::Sniffing(seen + n)
                };
            }
            if this.watch != Watch::Off {
                this.conn.head_bytes_arrived();
            }
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HeadWatch<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
