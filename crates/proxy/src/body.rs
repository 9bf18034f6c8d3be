//! The request body as forwarded upstream: the client's body (read by `h1` for HTTP/1.1, by
//! hyper for HTTP/2), streamed frame by frame (never buffered, so gRPC streams and large uploads
//! pass through), with a size limit and a per-frame read timeout.
//!
//! When the limit or the timeout is hit, the body yields an error, which makes the upstream client
//! abort the request; the shared [`BodyState`] tells the forwarder why, so it can answer 413 or
//! 408 instead of 502. A trailer section is cleaned on the way (`forward::clean_trailers`). Does not decide
//! anything else about the request.
//!
//! Also here: the stream idle timeout of response bodies ([`IdleBody`], [`IdleTimer`]).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::h1::{ClientIo, H1Body};

/// Why a request body was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    TooLarge,
    Timeout,
}

impl fmt::Display for BodyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyFailure::TooLarge => "request body larger than the limit",
            BodyFailure::Timeout => "request body read timed out",
        })
    }
}

impl StdError for BodyFailure {}

/// What the body and the forwarder share: why the body failed (if it did), and whether the
/// origin's response has started (after which the read timeout no longer applies).
#[derive(Debug, Default)]
pub(crate) struct BodyState {
    /// 0: fine, 1: too large, 2: timeout.
    failure: AtomicU8,
    response_started: AtomicBool,
}

impl BodyState {
    pub(crate) fn failure(&self) -> Option<BodyFailure> {
        match self.failure.load(Ordering::Acquire) {
            1 => Some(BodyFailure::TooLarge),
            2 => Some(BodyFailure::Timeout),
            _ => None,
        }
    }

    fn fail(&self, failure: BodyFailure) {
        let code = match failure {
            BodyFailure::TooLarge => 1,
            BodyFailure::Timeout => 2,
        };
        // The first failure is the reason; later ones are consequences.
        let _ = self
            .failure
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }

    pub(crate) fn response_started(&self) {
        self.response_started.store(true, Ordering::Release);
    }
}

/// A client's request body, from either HTTP server.
pub(crate) enum RequestBody {
    Empty,
    H1(H1Body<ClientIo>),
    H2(Incoming),
    /// A body that may go to another origin server if the first cannot be reached (see [`HeldBody`]).
    Held(Arc<HeldBody>),
}

/// A request body shared between attempts at several origin servers. hyper's client consumes the request it is
/// given, also when connecting fails; through this, the body stays here, and a next attempt can send it as long
/// as not one frame of it was read (which is always so when connecting failed: the body is read only on a
/// connection).
pub(crate) struct HeldBody {
    body: Mutex<RequestBody>,
    read: AtomicBool,
}

impl HeldBody {
    pub(crate) fn new(body: RequestBody) -> HeldBody {
        HeldBody {
            body: Mutex::new(body),
            read: AtomicBool::new(false),
        }
    }

    /// Whether a frame was read (then it cannot be sent again).
    pub(crate) fn was_read(&self) -> bool {
        self.read.load(Ordering::Acquire)
    }
}

impl From<H1Body<ClientIo>> for RequestBody {
    fn from(body: H1Body<ClientIo>) -> RequestBody {
        RequestBody::H1(body)
    }
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> RequestBody {
        RequestBody::H2(body)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::H1(body) => Pin::new(body).poll_frame(cx),
            RequestBody::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            RequestBody::Held(held) => {
                held.read.store(true, Ordering::Release);
                match held.body.lock() {
                    Ok(mut body) => Pin::new(&mut *body).poll_frame(cx),
                    Err(_) => Poll::Ready(Some(Err("request body unavailable".into()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::H1(body) => body.is_end_stream(),
            RequestBody::H2(body) => body.is_end_stream(),
            RequestBody::Held(held) => held.body.lock().is_ok_and(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::H1(body) => body.size_hint(),
            RequestBody::H2(body) => body.size_hint(),
            RequestBody::Held(held) => held.body.lock().map(|b| b.size_hint()).unwrap_or_default(),
        }
    }
}

/// The client's request body with a byte limit and a per-frame timeout.
pub(crate) struct LimitedBody {
    inner: RequestBody,
    limit: u64,
    seen: u64,
    timeout: Duration,
    /// Armed while waiting for a frame; reset after each one.
    sleep: Option<Pin<Box<Sleep>>>,
    state: Arc<BodyState>,
    done: bool,
    /// Passed to [`crate::forward::clean_trailers`].
    front_cert: Arc<[HeaderName]>,
}

impl LimitedBody {
    pub(crate) fn new(
        inner: RequestBody,
        limit: u64,
        timeout: Duration,
        state: Arc<BodyState>,
        front_cert: Arc<[HeaderName]>,
    ) -> LimitedBody {
        LimitedBody {
            inner,
            limit,
            seen: 0,
            timeout,
            sleep: None,
            state,
            done: false,
            front_cert,
        }
    }

    fn failed(&mut self, failure: BodyFailure) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state.fail(failure);
        self.done = true;
        self.sleep = None;
        Poll::Ready(Some(Err(Box::new(failure))))
    }
}

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                self.sleep = None;
                if let Some(trailers) = frame.trailers_mut() {
                    crate::forward::clean_trailers(trailers, &self.front_cert);
                }
                if let Some(data) = frame.data_ref() {
                    self.seen = self.seen.saturating_add(data.len() as u64);
                    if self.seen > self.limit {
                        return self.failed(BodyFailure::TooLarge);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                self.sleep = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                self.sleep = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if self.state.response_started.load(Ordering::Acquire) {
                    self.sleep = None;
                    return Poll::Pending;
                }
                let timeout = self.timeout;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return self.failed(BodyFailure::Timeout);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a response body or tunnel was cut off: nothing moved for the stream idle timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamIdle;

impl fmt::Display for StreamIdle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no bytes for the stream idle timeout")
    }
}

impl StdError for StreamIdle {}

/// The stream idle timeout of one body: armed only while the body waits (most bodies are read without waiting, and
/// cost no timer), and started again after every frame.
pub(crate) struct IdleTimer {
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    /// `idle` zero: never expires.
    pub(crate) fn new(idle: Duration) -> IdleTimer {
        IdleTimer { idle, sleep: None }
    }

    /// A frame arrived.
    pub(crate) fn reset(&mut self) {
        self.sleep = None;
    }

    /// The body is waiting: whether it has waited too long (else `cx` is woken when it has).
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.idle.is_zero() {
            return false;
        }
        let idle = self.idle;
        self.sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)))
            .as_mut()
            .poll(cx)
            .is_ready()
    }
}

/// A response body cut off with an error when the origin sends nothing for the stream idle timeout.
pub(crate) struct IdleBody<B> {
    inner: B,
    timer: IdleTimer,
}

impl<B> IdleBody<B> {
    pub(crate) fn new(inner: B, idle: Duration) -> IdleBody<B> {
        IdleBody {
            inner,
            timer: IdleTimer::new(idle),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer.reset();
                Poll::Ready(frame)
            }
            Poll::Pending if this.timer.expired(cx) => Poll::Ready(Some(Err(Box::new(StreamIdle)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
