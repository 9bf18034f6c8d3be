//! What the proxy knows about one client connection after the handshake: the host it was
//! accepted for, the peer's certificate chain, the TLS version and cipher, and the certificate
//! facts, cached per snapshot generation.
//!
//! Facts are computed once per connection and recomputed only when a newer snapshot is in
//! service, so a revocation reaches long-lived HTTP/2 connections at their next request without
//! re-verifying the chain on every request, or when the verdict may change with time (a certificate
//! of the chain expires, a CRL goes stale past its grace: [`portcullis_pki::Verifier::recheck_at`]),
//! so a connection does not outlive its certificate's trust. Does not decide anything; see `handler`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use portcullis_pki::{AuthStatus, ClientAuthFacts};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::forward::Body;
use crate::ocsp::OcspOutcome;
use crate::snapshot::{Host, Snapshot};
use crate::unix_now;

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
    /// `client_ip` as the value of `X-Forwarded-For` (cloned per request, not parsed and copied).
    pub client_ip_value: http::HeaderValue,
    pub local_port: u16,
    facts: Mutex<Option<Cached>>,
    /// The OCSP answer for the certificate, if its CA has an OCSP policy, and the trust anchor (its subject public
    /// key info) whose policy decides what the answer means. Boxed: most connections have none, and every idle
    /// connection pays for this struct's size.
    ocsp: OnceLock<Box<(OcspOutcome, Vec<u8>)>>,
    /// For the idle timeout: when the connection started, requests in progress, and when the
    /// last one started (milliseconds after `started`).
    started: Instant,
    active: AtomicUsize,
    last_request_ms: AtomicU64,
    /// Set when the connection's certificate lost the trust its host's mode requires: the connection ends after
    /// the answer that says so, so that the client connects again (with its renewed certificate) instead of being
    /// refused on it until it is idle or old enough to be closed.
    ending: AtomicBool,
    ending_waker: atomic_waker::AtomicWaker,
}

/// Facts computed with the verifier of snapshot `generation`, good until Unix time `until` (`None`: for as long as
/// that snapshot is in service).
#[derive(Debug)]
struct Cached {
    generation: u64,
    until: Option<i64>,
    facts: Arc<ClientAuthFacts>,
}

/// Marks a request in progress until dropped.
pub(crate) struct RequestGuard(Arc<ConnInfo>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
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
    type Error = crate::body::BoxError;

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
        let client_ip = remote.ip().to_canonical().to_string();
        ConnInfo {
            host_name,
            peer_chain,
            tls_version,
            tls_cipher,
            remote,
            client_ip_value: http::HeaderValue::from_maybe_shared(bytes::Bytes::from(client_ip.clone()))
                .unwrap_or_else(|_| http::HeaderValue::from_static("unknown")),
            client_ip,
            local_port,
            facts: Mutex::new(None),
            ocsp: OnceLock::new(),
            started: Instant::now(),
            active: AtomicUsize::new(0),
            last_request_ms: AtomicU64::new(0),
            ending: AtomicBool::new(false),
            ending_waker: atomic_waker::AtomicWaker::new(),
        }
    }

    /// Ends the connection once the requests in progress are answered (see `ending`).
    pub(crate) fn end(&self) {
        self.ending.store(true, Ordering::Release);
        self.ending_waker.wake();
    }

    /// Whether [`ConnInfo::end`] was called.
    pub(crate) fn is_ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// Resolves once [`ConnInfo::end`] is called.
    pub(crate) fn ended(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.is_ending() {
                return Poll::Ready(());
            }
            self.ending_waker.register(cx.waker());
            // Set between the first look and the registration: it woke no one.
            if self.is_ending() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Counts a request as in progress until the guard drops, without recording its start time
    /// (HTTP/1.1 keeps its own idle clock).
    pub(crate) fn request_in_progress(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// Records a request start; the request counts as in progress until the guard drops.
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_request_ms.fetch_max(ms, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// When the connection becomes idle if nothing else happens.
    pub(crate) fn idle_deadline(&self, idle_timeout: Duration) -> Instant {
        self.started + Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed)) + idle_timeout
    }

    /// No request in progress and none started within `idle_timeout`.
    pub(crate) fn is_idle(&self, idle_timeout: Duration) -> bool {
        self.active.load(Ordering::Relaxed) == 0 && Instant::now() >= self.idle_deadline(idle_timeout)
    }

    /// Records the OCSP answer for the connection's certificate (once), for the anchor with `anchor_key`, and
    /// returns `facts` (computed a moment ago with `host`'s verifier of snapshot `generation`) with the answer
    /// applied, which are kept as the connection's facts.
    pub(crate) fn set_ocsp(
        &self,
        outcome: OcspOutcome,
        anchor_key: Vec<u8>,
        facts: &ClientAuthFacts,
        host: &Host,
        generation: u64,
    ) -> Arc<ClientAuthFacts> {
        let _ = self.ocsp.set(Box::new((outcome, anchor_key)));
        let Some(mtls) = &host.mtls else {
            return Arc::new(facts.clone());
        };
        let facts = Arc::new(self.with_ocsp(facts.clone(), &mtls.verifier));
        // The facts were judged before the responder was asked, which may have taken seconds: they hold only
        // until the time already kept with them.
        let kept = self
            .facts
            .lock()
            .ok()
            .and_then(|guard| guard.as_ref().filter(|c| c.generation == generation).map(|c| c.until));
        // None kept (a poisoned lock): judged again at the next request.
        let until = kept.unwrap_or(Some(i64::MIN));
        self.keep(generation, until, &facts);
        facts
    }

    /// Until when facts judged at `judged_at` with `verifier` hold (see [`portcullis_pki::Verifier::recheck_at`]).
    fn until(&self, verifier: &portcullis_pki::Verifier, judged_at: OffsetDateTime) -> Option<i64> {
        if self.peer_chain.is_empty() {
            None
        } else {
            verifier.recheck_at(&self.peer_chain, judged_at)
        }
    }

    /// Keeps `facts`, computed with the verifier of snapshot `generation`, until Unix time `until`.
    fn keep(&self, generation: u64, until: Option<i64>, facts: &Arc<ClientAuthFacts>) {
        if let Ok(mut guard) = self.facts.lock() {
            *guard = Some(Cached {
                generation,
                until,
                facts: facts.clone(),
            });
        }
    }

    /// `facts` with the connection's OCSP answer applied (see [`apply_ocsp`]).
    fn with_ocsp(&self, facts: ClientAuthFacts, verifier: &portcullis_pki::Verifier) -> ClientAuthFacts {
        match self.ocsp.get() {
            Some(answer) => apply_ocsp(facts, &answer.0, &answer.1, verifier),
            None => facts,
        }
    }

    /// The certificate facts right after the handshake, which used `snapshot`'s configuration
    /// for `host`. After a full handshake with a certificate under `require` or
    /// `verify_if_given`, the handshake has just verified the chain with the same verifier and
    /// refused anything untrusted, expired or revoked, so it is not verified again. A resumed
    /// session is verified here: resumption skips the handshake's check, and the certificate may
    /// have been revoked since. `handshake_began`: a time no later than the handshake's check.
    pub(crate) fn facts_at_handshake(
        &self,
        snapshot: &Snapshot,
        host: &Host,
        full: bool,
        handshake_began: OffsetDateTime,
    ) -> Arc<ClientAuthFacts> {
        let verified = full && !self.peer_chain.is_empty();
        match &host.mtls {
            Some(mtls) if verified && mtls.mode.verifies_at_handshake() => {
                let facts =
                    Arc::new(self.with_ocsp(mtls.verifier.client_auth_accepted(&self.peer_chain), &mtls.verifier));
                self.keep(snapshot.generation, self.until(&mtls.verifier, handshake_began), &facts);
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
            && let Some(cached) = guard.as_ref()
            && cached.generation == snapshot.generation
            && cached.until.is_none_or(|until| unix_now() < until)
        {
            return cached.facts.clone();
        }
        // Computed outside the lock: concurrent streams may both compute once, which is harmless.
        let now = OffsetDateTime::now_utc();
        let facts = Arc::new(self.with_ocsp(mtls.verifier.client_auth(&self.peer_chain, now), &mtls.verifier));
        self.keep(snapshot.generation, self.until(&mtls.verifier, now), &facts);
        facts
    }
}

/// `facts` with an OCSP answer (`outcome`, for the anchor with `anchor_key`) applied under the policy `verifier` has
/// now for the answer's CA (none: the answer no longer counts): a revoked certificate is revoked, as by a CRL; under
/// a hard-fail policy, a certificate without a good answer is not verified (OpenSSL's wording for the reason).
pub(crate) fn apply_ocsp(
    mut facts: ClientAuthFacts,
    outcome: &OcspOutcome,
    anchor_key: &[u8],
    verifier: &portcullis_pki::Verifier,
) -> ClientAuthFacts {
    if !facts.cert_verified || facts.cert_revoked {
        return facts;
    }
    let Some(policy) = verifier.anchor_policy(anchor_key) else {
        return facts;
    };
    match (outcome, policy.hard_fail) {
        (OcspOutcome::Good, _) => {}
        (OcspOutcome::Revoked, _) => {
            facts.cert_revoked = true;
            facts.status = AuthStatus::Revoked;
        }
        (OcspOutcome::Unknown, true) => {
            facts.cert_verified = false;
            facts.verify_result = "FAILED:OCSP unknown cert".into();
            facts.status = AuthStatus::Untrusted;
        }
        (OcspOutcome::Failed(_), true) => {
            facts.cert_verified = false;
            facts.verify_result = "FAILED:OCSP verification failed".into();
            facts.status = AuthStatus::Untrusted;
        }
        (OcspOutcome::Unknown | OcspOutcome::Failed(_), false) => {}
    }
    facts
}
