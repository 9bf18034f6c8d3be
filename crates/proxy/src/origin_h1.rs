//! The proxy's own HTTP/1.1 client, for requests without a body to plain `http://` HTTP/1.1
//! origins (most API reads: GET, HEAD, DELETE). The connection task writes the request and reads
//! the response itself, on a keep-alive connection from its edge thread's pool, with no client
//! task, channel or wake-up in between; the response body is read by whoever writes it to the
//! client. Everything else (request bodies, WebSocket upgrades, `https://` and HTTP/2 origins)
//! goes through hyper's client (see `forward`).
//!
//! Responses are framed per RFC 9112 6.3 (HEAD, 1xx, 204 and 304 have no body; then
//! `Transfer-Encoding`, then `Content-Length`, else until the origin closes). A connection goes
//! back to the pool only when its response was read to the end with nothing after it, and only
//! if both sides keep it alive. A kept connection the origin has closed is noticed at checkout;
//! if the origin closes one just as it is reused, an idempotent request is retried once on a new
//! connection (RFC 9110 9.2.2), any other request fails with 502.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Method, Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, SizeHint};
use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use crate::body::{BoxError, IdleTimer, StreamIdle};
use crate::fields::Seen;
use crate::forward::Body;
use crate::h1::{Chunk, Framing, Wire, field_map, has_token, tokens};

/// Idle connections kept per origin and edge thread.
const MAX_IDLE_PER_ORIGIN: usize = 256;
/// An idle connection is closed rather than reused after this many sweeps (see
/// [`OriginPool::sweep`], every 30 s): after 60 to 90 s idle.
const IDLE_SWEEPS: u64 = 3;
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;

/// Why a request to the origin failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OriginError {
    #[error("connecting to the origin: {0}")]
    Connect(io::Error),
    #[error("origin response: {0}")]
    Protocol(String),
}

struct Idle {
    wire: Wire<TcpStream>,
    /// The sweep count when the connection became idle: a clock without a clock read.
    since: u64,
}

/// Fx rather than SipHash: the keys are origin authorities from the configuration, never from
/// clients, so flooding resistance buys nothing, and it cost two hashes' worth of time per
/// request (checkout and checkin).
type ByAuthority = FxHashMap<String, Vec<Idle>>;

/// Room for the fields an HTTP/2 response may gain on its way out (hyper adds `Date` and
/// `Content-Length` when missing), so the map does not grow and rehash.
const RESPONSE_HEADROOM: usize = 2;

/// This edge thread's keep-alive connections to plain-HTTP origins, by authority.
pub(crate) struct OriginPool {
    idle: Mutex<ByAuthority>,
    connect_timeout: Duration,
    /// The stream idle timeout of response bodies (see `ProxyConfig::stream_idle_timeout`).
    stream_idle: Duration,
    /// Sweeps so far.
    sweeps: AtomicU64,
}

/// The outcome of one request on one connection.
// Lives only as a return value; boxing the common variant would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Exchange {
    Done(Wire<TcpStream>, http::response::Parts, bool),
    /// The connection was closed before any byte of a response: nothing was processed that a
    /// retry could repeat, if the request is idempotent.
    Closed,
    Failed(OriginError),
}

/// Whether a kept connection is still open and quiet (the probe reads nothing unless the origin
/// closed it or sent something unasked).
fn usable(wire: &Wire<TcpStream>) -> bool {
    let Some(stream) = wire.io.as_ref() else { return false };
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl OriginPool {
    pub(crate) fn new(connect_timeout: Duration, stream_idle: Duration) -> Arc<OriginPool> {
        Arc::new(OriginPool {
            idle: Mutex::new(ByAuthority::default()),
            connect_timeout,
            stream_idle,
            sweeps: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByAuthority> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn checkout(&self, authority: &str) -> Option<Wire<TcpStream>> {
        let now = self.sweeps.load(Ordering::Relaxed);
        let mut map = self.lock();
        let list = map.get_mut(authority)?;
        while let Some(idle) = list.pop() {
            if now.saturating_sub(idle.since) < IDLE_SWEEPS && usable(&idle.wire) {
                return Some(idle.wire);
            }
        }
        None
    }

    fn checkin(&self, authority: &str, mut wire: Wire<TcpStream>) {
        if !wire.unread().is_empty() || wire.io.is_none() {
            // Bytes after the response: the origin is not speaking HTTP/1.1 as agreed.
            return;
        }
        wire.release();
        let idle = Idle {
            wire,
            since: self.sweeps.load(Ordering::Relaxed),
        };
        let mut map = self.lock();
        // Looked up before inserting, so the common case allocates no key.
        match map.get_mut(authority) {
            Some(list) if list.len() < MAX_IDLE_PER_ORIGIN => list.push(idle),
            Some(_) => {}
            None => {
                map.insert(authority.to_owned(), vec![idle]);
            }
        }
    }

    /// Closes idle connections that are too old or that the origin has closed; called every 30 s.
    pub(crate) fn sweep(&self) {
        let now = self.sweeps.fetch_add(1, Ordering::Relaxed) + 1;
        let mut map = self.lock();
        for list in map.values_mut() {
            list.retain(|idle| now.saturating_sub(idle.since) < IDLE_SWEEPS && usable(&idle.wire));
        }
        map.retain(|_, list| !list.is_empty());
    }

    async fn connect(&self, authority: &str) -> Result<Wire<TcpStream>, OriginError> {
        // An authority without a port means port 80 (`[v6]` ends in `]`).
        let target = match authority.rsplit_once(':') {
            Some((_, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => authority.to_owned(),
            _ => format!("{authority}:80"),
        };
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(target))
            .await
            .map_err(|_| OriginError::Connect(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
            .map_err(OriginError::Connect)?;
        let _ = tcp.set_nodelay(true);
        Ok(Wire::new(tcp))
    }

    /// Sends a request without a body (`parts.uri` names the origin; its path and query are
    /// sent) and returns the response with its body streaming from the origin.
    pub(crate) async fn send(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        authority: &str,
    ) -> Result<Response<Body>, OriginError> {
        let head = encode_request(parts, authority);
        if let Some(wire) = self.checkout(authority) {
            match exchange(wire, &head, &parts.method).await {
                Exchange::Done(wire, resp, keep) => return Ok(self.response(wire, resp, keep, authority)),
                Exchange::Closed if parts.method.is_idempotent() => {}
                Exchange::Closed => {
                    return Err(OriginError::Protocol("origin closed a kept-alive connection".into()));
                }
                Exchange::Failed(e) => return Err(e),
            }
        }
        // Boxed: connecting is the rare case (the pool is empty), and its future (address
        // lookup, timer) would otherwise make every request's future larger.
        let wire = Box::pin(self.connect(authority)).await?;
        match exchange(wire, &head, &parts.method).await {
            Exchange::Done(wire, resp, keep) => Ok(self.response(wire, resp, keep, authority)),
            Exchange::Closed => Err(OriginError::Protocol(
                "origin closed the connection without a response".into(),
            )),
            Exchange::Failed(e) => Err(e),
        }
    }

    fn response(
        self: &Arc<Self>,
        wire: Wire<TcpStream>,
        parts: http::response::Parts,
        keep: bool,
        authority: &str,
    ) -> Response<Body> {
        if wire.framing == Framing::Done {
            if keep {
                self.checkin(authority, wire);
            }
            return Response::from_parts(parts, crate::respond::empty());
        }
        let body = OriginBody {
            wire: Some(wire),
            pool: self.clone(),
            authority: authority.to_owned(),
            keep,
            timer: IdleTimer::new(self.stream_idle),
        };
        Response::from_parts(parts, body.boxed())
    }
}

/// Writes the request head and reads the response head, skipping interim (1xx) responses.
async fn exchange(mut wire: Wire<TcpStream>, head: &[u8], method: &Method) -> Exchange {
    let mut pos = 0;
    if poll_fn(|cx| wire.poll_write_all(cx, head, &mut pos)).await.is_err() {
        return Exchange::Closed;
    }
    let mut received = false;
    loop {
        if !wire.unread().is_empty() {
            match parse_response(wire.unread(), method) {
                Ok(Some((len, parts, framing, keep))) => {
                    wire.consume(len);
                    if parts.status.is_informational() {
                        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                            return Exchange::Failed(OriginError::Protocol("101 without an upgrade request".into()));
                        }
                        continue;
                    }
                    wire.framing = framing;
                    return Exchange::Done(wire, parts, keep);
                }
                Ok(None) if wire.unread().len() >= MAX_RESPONSE_HEAD => {
                    return Exchange::Failed(OriginError::Protocol("response head too large".into()));
                }
                Ok(None) => {}
                Err(e) => return Exchange::Failed(e),
            }
        }
        match poll_fn(|cx| wire.poll_fill(cx, MAX_RESPONSE_HEAD)).await {
            Ok(n) if n > 0 => received = true,
            Ok(_) | Err(_) if !received => return Exchange::Closed,
            Ok(_) => return Exchange::Failed(OriginError::Protocol("connection closed in the response head".into())),
            Err(e) => return Exchange::Failed(OriginError::Protocol(e.to_string())),
        }
    }
}

/// The request head: origin-form target, the fields as forwarded, and `Host` if the client
/// sent none.
fn encode_request(parts: &http::request::Parts, authority: &str) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(256 + 64 * parts.headers.len());
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::HOST) {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(authority.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

type ParsedResponse = (usize, http::response::Parts, Framing, bool);

/// A complete response head at the start of `buf` (`None`: more bytes needed), with its body's
/// framing and whether the origin keeps the connection.
fn parse_response(buf: &[u8], method: &Method) -> Result<Option<ParsedResponse>, OriginError> {
    let bad = |why: &str| OriginError::Protocol(format!("malformed response head: {why}"));
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(&e.to_string())),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| bad("status"))?;
    let shared = Bytes::copy_from_slice(&buf[..len]);
    let (mut headers, seen) = field_map(buf, &shared, resp.headers, RESPONSE_HEADROOM).ok_or_else(|| bad("field"))?;
    let connection = |token| seen.has(Seen::CONNECTION) && has_token(&headers, header::CONNECTION, token);
    let keep = if resp.version == Some(1) {
        !connection("close")
    } else {
        connection("keep-alive")
    };
    let mut mixed_framing = false;
    let framing = if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Done
    } else if seen.has(Seen::TRANSFER_ENCODING) {
        let codings: Vec<&[u8]> = tokens(&headers, header::TRANSFER_ENCODING).collect();
        if !matches!(codings.as_slice(), [only] if only.eq_ignore_ascii_case(b"chunked")) {
            // Transfer-Encoding is hop-by-hop: a body in another coding (gzip…) would reach the client without
            // the field that says how to read it.
            return Err(bad("transfer coding other than chunked"));
        }
        // RFC 9112 §6.3: chunked framing overrides a Content-Length, which must not be passed on; an origin that
        // sends both is not trusted with a next request on this connection.
        if seen.has(Seen::CONTENT_LENGTH) {
            headers.remove(header::CONTENT_LENGTH);
            mixed_framing = true;
        }
        Framing::Chunked(Chunk::Size)
    } else if seen.has(Seen::CONTENT_LENGTH) {
        let mut length = None;
        for part in tokens(&headers, header::CONTENT_LENGTH) {
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("differing content-length values"));
            }
            length = Some(n);
        }
        match length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            // An empty value says nothing of where the body ends.
            None => return Err(bad("empty content-length")),
        }
    } else {
        Framing::UntilClose
    };
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Ok(Some((
        len,
        parts,
        framing,
        keep && !mixed_framing && framing != Framing::UntilClose,
    )))
}

/// A response body read from a pooled origin connection; the connection returns to the pool
/// when the body ends, and is closed if the body is dropped before.
struct OriginBody {
    wire: Option<Wire<TcpStream>>,
    pool: Arc<OriginPool>,
    authority: String,
    keep: bool,
    timer: IdleTimer,
}

impl hyper::body::Body for OriginBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(wire) = this.wire.as_mut() else {
            return Poll::Ready(None);
        };
        let id = wire.body_id;
        let polled = match wire.poll_body(cx, id) {
            Poll::Ready(polled) => {
                this.timer.reset();
                polled
            }
            Poll::Pending if this.timer.expired(cx) => {
                // The connection goes with the body: a late byte cannot reach the next request.
                this.wire = None;
                return Poll::Ready(Some(Err(Box::new(StreamIdle))));
            }
            Poll::Pending => return Poll::Pending,
        };
        let finished = !matches!(polled, Some(Ok(_))) || wire.framing == Framing::Done;
        if finished && let Some(wire) = this.wire.take() {
            // Returned as soon as its last byte is read: an HTTP/2 client side stops polling
            // once the body says it has ended.
            if this.keep && wire.framing == Framing::Done {
                this.pool.checkin(&this.authority, wire);
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.wire.as_ref().is_none_or(|w| w.framing == Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.wire.as_ref().map(|w| w.framing) {
            Some(Framing::Length(n)) => SizeHint::with_exact(n),
            None | Some(Framing::Done) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn parse(text: &str, method: Method) -> Result<Option<ParsedResponse>, OriginError> {
        parse_response(text.as_bytes(), &method)
    }

    fn framing(text: &str) -> (Framing, bool) {
        let (_, _, framing, keep) = parse(text, Method::GET).unwrap().unwrap();
        (framing, keep)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            (Framing::Done, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (Framing::Chunked(Chunk::Size), true)
        );
        // Both: chunked decides, the Content-Length is not passed on, and the connection is not reused.
        let (_, parts, mixed, keep) = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!((mixed, keep), (Framing::Chunked(Chunk::Size), false));
        assert!(!parts.headers.contains_key(header::CONTENT_LENGTH));
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), (Framing::UntilClose, false));
        // A body in a transfer coding the client would not be told of, or without a length in its Content-Length.
        for refused in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: ,\r\n\r\n",
        ] {
            assert!(parse(refused, Method::GET).is_err(), "{refused:?}");
        }
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n"), (Framing::Done, true));
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
            (Framing::Done, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"),
            (Framing::Length(5), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n"),
            (Framing::Length(5), false)
        );
        let head = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD)
            .unwrap()
            .unwrap();
        assert_eq!(head.2, Framing::Done, "a HEAD response has no body");
        assert!(
            parse(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Method::GET
            )
            .is_err()
        );
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", Method::GET).is_err());
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Len", Method::GET).unwrap().is_none());
        assert!(parse("HTTP/1.1 2000 OK\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn requests_go_out_in_origin_form_with_a_host() {
        let mut req = http::Request::get("http://127.0.0.1:9/a/b?c=d").body(()).unwrap();
        req.headers_mut().insert("x-one", HeaderValue::from_static("1"));
        let (parts, ()) = req.into_parts();
        let text = String::from_utf8(encode_request(&parts, "127.0.0.1:9")).unwrap();
        assert_eq!(text, "GET /a/b?c=d HTTP/1.1\r\nx-one: 1\r\nhost: 127.0.0.1:9\r\n\r\n");
        let (mut parts, ()) = http::Request::get("http://o/").body(()).unwrap().into_parts();
        parts.headers.insert(header::HOST, HeaderValue::from_static("api.test"));
        let text = String::from_utf8(encode_request(&parts, "o")).unwrap();
        assert_eq!(text, "GET / HTTP/1.1\r\nhost: api.test\r\n\r\n");
    }
}
