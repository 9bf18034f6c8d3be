//! HTTP/1.1 on a client connection, served by the proxy itself: request heads parsed with
//! `httparse`, request bodies (content-length or chunked, with trailers) streamed to the
//! forwarder, responses written in one write where the body is already there, keep-alive,
//! pipelining, `Expect: 100-continue` and WebSocket tunnels. The header-read timeout, the idle
//! timeout, the maximum connection age and the graceful stop are this loop's own clocks.
//!
//! Why not hyper's server: it keeps an 8 KiB write buffer and a read buffer that grows to 16 KiB
//! for the whole life of a connection, and its dispatcher costs more per request than the proxy
//! needs. Here a connection waiting for its next request holds no buffer at all (BENCHMARKS.md,
//! figure 6). Request framing follows RFC 9112 strictly, because a proxy that frames a request
//! differently from its origin is a request-smuggling hole: `Transfer-Encoding` other than exactly
//! `chunked` is refused (501), both `Transfer-Encoding` and `Content-Length` is refused (400),
//! as are differing or malformed lengths, bare LFs in chunk framing and HTTP/1.0 with
//! `Transfer-Encoding`.
//!
//! Not here: HTTP/2 (a connection that starts with the HTTP/2 preface is handed back to the
//! caller), deciding or forwarding requests (`handler`), `CONNECT` (refused by the handler).

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::body::{BoxError, RequestBody};
use crate::conn::ConnInfo;
use crate::fields::Seen;
use crate::forward::{Body, OriginUpgrade};
use crate::handler::{self, Shared};
use crate::respond;

/// The limits and clocks of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_headers: usize,
    /// The largest request head (request line and header fields), in bytes.
    pub max_head: usize,
    /// From the first byte of a head (for the first request: from the handshake) to its end.
    pub header_read: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle: Duration,
    /// How long one response write may wait for the client to read.
    pub send: Duration,
    /// How long a WebSocket tunnel may carry no byte either way (zero: for ever).
    pub stream_idle: Duration,
    /// No new request starts after this; a response then says `Connection: close`.
    pub max_age: Instant,
}

/// How a connection ended.
pub(crate) enum Outcome<IO> {
    Closed,
    /// The client spoke HTTP/2 with prior knowledge: the stream, with the bytes read so far
    /// put back in front.
    Http2(Prefixed<IO>),
}

/// Headers in one request head. httparse needs a fixed array; a limit configured above this
/// is capped here.
const HEADERS_CAP: usize = 256;
/// Fields in a chunked body's trailer section.
const TRAILERS_CAP: usize = 64;
/// A chunk-size line (size and extensions); longer ones are refused.
const MAX_CHUNK_LINE: usize = 4096;
/// A chunked body's trailer section.
const MAX_TRAILERS: usize = 16 * 1024;
/// Reads for request heads start with this much buffer (grown up to `max_head`).
const HEAD_READ: usize = 4096;
/// Reads of request bodies.
const BODY_READ: usize = 16 * 1024;
/// Response bytes gathered before a write, when more body frames are ready at once.
const WRITE_BATCH: usize = 64 * 1024;
/// An unread request body this small is read and discarded after the response, so the
/// connection can be kept; a larger one closes it.
const DRAIN_MAX: u64 = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_millis(500);
/// Closing a connection: time for the TLS close_notify to go out.
const SHUTDOWN_TIME: Duration = Duration::from_secs(1);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Request heads

/// How a request's body is delimited, and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body, or all of it read.
    Done,
    Length(u64),
    Chunked(Chunk),
    /// A response body without a length: everything until the origin closes.
    UntilClose,
    /// Bad framing or a failed read: the connection cannot carry another request.
    Broken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// A parsed request head and what the connection must do about it.
#[derive(Debug)]
struct Head {
    parts: http::request::Parts,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    /// `TE: trailers`: the client takes trailers in a chunked response.
    trailers: bool,
}

/// A request head the proxy refuses, with the status it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal(StatusCode);

/// Parses a complete head from the start of `buf`: `Ok(None)` if more bytes are needed.
fn parse_head(buf: &[u8], max_headers: usize) -> Result<Option<(usize, Head)>, Refusal> {
    let bad = Refusal(StatusCode::BAD_REQUEST);
    let mut slots = [httparse::EMPTY_HEADER; HEADERS_CAP];
    let mut req = httparse::Request::new(&mut slots[..max_headers.clamp(1, HEADERS_CAP)]);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)),
        Err(httparse::Error::Version) if names_another_version(buf) => {
            return Err(Refusal(StatusCode::HTTP_VERSION_NOT_SUPPORTED));
        }
        Err(_) => return Err(bad),
    };
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(bad);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad)?;
    let shared = Bytes::copy_from_slice(&buf[..len]);
    let uri = Uri::from_maybe_shared(shared.slice_ref_in(buf, path.as_bytes())).map_err(|_| bad)?;
    let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let (mut headers, seen) = field_map(buf, &shared, req.headers, FORWARDING_HEADROOM).ok_or(bad)?;
    if seen.has(Seen::HOST_REPEATED) {
        return Err(bad);
    }
    let framing = request_framing(&headers, version, seen)?;
    if seen.has(Seen::CONTENT_LENGTH) {
        // Framing comes from the Content-Length here: with Transfer-Encoding too, the request was refused.
        let n = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        // One value for the origin, whatever form the client used (`5, 5`, or the field twice): an origin that
        // read such a field differently would see another body length than the proxy does.
        let single = headers.get_all(header::CONTENT_LENGTH).iter().nth(1).is_none()
            && headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| !v.as_bytes().contains(&b','));
        if !single {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    let connection = |token| seen.has(Seen::CONNECTION) && has_token(&headers, header::CONNECTION, token);
    let keep_alive = if version == Version::HTTP_11 {
        !connection("close")
    } else {
        connection("keep-alive")
    };
    let expect_continue = version == Version::HTTP_11
        && seen.has(Seen::EXPECT)
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let trailers = seen.has(Seen::TE) && has_token(&headers, header::TE, "trailers");
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some((
        len,
        Head {
            parts,
            framing,
            keep_alive,
            expect_continue,
            trailers,
        },
    )))
}

/// The request line ends in a well-formed version other than HTTP/1.x (`HTTP/2.0`, `HTTP/3.0`),
/// rather than in garbage (`GET /a b HTTP/1.1`).
fn names_another_version(buf: &[u8]) -> bool {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default().trim_ascii_end();
    let version = line.rsplit(|b| *b == b' ').next().unwrap_or_default();
    line.split(|b| *b == b' ').count() == 3
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// Parsed fields as a `HeaderMap` whose values share `shared`, one copy of the head in `buf`:
/// one allocation per head instead of one per value. `None` if a name or value is invalid.
pub(crate) fn field_map(
    buf: &[u8],
    shared: &Bytes,
    fields: &[httparse::Header<'_>],
    headroom: usize,
) -> Option<(HeaderMap, Seen)> {
    let mut headers = HeaderMap::with_capacity(fields.len() + headroom);
    let mut seen = Seen::default();
    for h in fields {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        seen.note(&name);
        let value = HeaderValue::from_maybe_shared(shared.slice_ref_in(buf, h.value)).ok()?;
        headers.append(name, value);
    }
    Some((headers, seen))
}

/// Room for the fields forwarding adds to a request (`X-Forwarded-*`, certificate headers),
/// so that adding them does not grow and rehash the map, which had been three reallocations
/// per request.
const FORWARDING_HEADROOM: usize = 8;

/// `Bytes::slice` by the position of `part` within `whole`, of which `self` is a copy.
trait SliceIn {
    fn slice_ref_in(&self, whole: &[u8], part: &[u8]) -> Bytes;
}

impl SliceIn for Bytes {
    fn slice_ref_in(&self, whole: &[u8], part: &[u8]) -> Bytes {
        // Addresses compared as integers: `part` was parsed out of `whole`.
        let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
        let end = start + part.len();
        if end <= self.len() {
            self.slice(start..end)
        } else {
            Bytes::copy_from_slice(part)
        }
    }
}

/// The comma-separated tokens of every `name` field.
pub(crate) fn tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

pub(crate) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// RFC 9112 6.1–6.3 for requests, strictly (see the module doc).
fn request_framing(headers: &HeaderMap, version: Version, seen: Seen) -> Result<Framing, Refusal> {
    let bad = Refusal(StatusCode::BAD_REQUEST);
    if seen.has(Seen::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 || seen.has(Seen::CONTENT_LENGTH) {
            return Err(bad);
        }
        let codings: Vec<&[u8]> = tokens(headers, header::TRANSFER_ENCODING).collect();
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked(Chunk::Size)),
            // The length cannot be known without `chunked` last.
            [.., last] if !last.eq_ignore_ascii_case(b"chunked") => Err(bad),
            [] => Err(bad),
            // `gzip, chunked` and the like: a coding the proxy does not decode.
            _ => Err(Refusal(StatusCode::NOT_IMPLEMENTED)),
        };
    }
    if !seen.has(Seen::CONTENT_LENGTH) {
        return Ok(Framing::Done);
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(bad);
            }
            let n: u64 = std::str::from_utf8(part).ok().and_then(|s| s.parse().ok()).ok_or(bad)?;
            if length.is_some_and(|l| l != n) {
                return Err(bad);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) if n > 0 => Framing::Length(n),
        _ => Framing::Done,
    })
}

// ---------------------------------------------------------------------------------------------
// The wire: the stream and its read buffer, shared by the connection task and the request body

/// The client stream and the bytes read from it but not yet used. The connection task reads
/// heads and writes responses; the request body, polled by the task that sends it upstream,
/// reads body bytes. Neither holds the lock across an await.
pub(crate) struct Wire<IO> {
    /// `None` once the connection is closed or handed over.
    pub(crate) io: Option<IO>,
    /// Zero-filled up to its length; `[start, end)` is unread. Empty while the connection waits
    /// for its next request with nothing buffered.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pub(crate) framing: Framing,
    /// Which request the current body belongs to, so a body still held upstream after its
    /// response cannot read the next request's bytes.
    pub(crate) body_id: u64,
    /// Bytes of the interim `100 Continue` already written, while one is due.
    continue_sent: Option<usize>,
}

type WireRef<IO> = Arc<Mutex<Wire<IO>>>;

/// The client stream of a served connection.
pub(crate) type ClientIo = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

fn lock<IO>(wire: &Mutex<Wire<IO>>) -> MutexGuard<'_, Wire<IO>> {
    // A panic while holding the lock leaves only plain data behind.
    wire.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Wire<IO> {
    pub(crate) fn new(io: IO) -> Wire<IO> {
        Wire {
            io: Some(io),
            buf: Vec::new(),
            start: 0,
            end: 0,
            framing: Framing::Done,
            body_id: 0,
            continue_sent: None,
        }
    }

    pub(crate) fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Gives the buffer back to this thread's spares if it holds nothing.
    pub(crate) fn release(&mut self) {
        if self.start == self.end && !self.buf.is_empty() {
            spare_put(std::mem::take(&mut self.buf));
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes after the unread ones, growing the buffer up to `limit` if it is full.
    /// `Ok(0)` is the end of the stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<io::Result<usize>> {
        if self.io.is_none() {
            return Poll::Ready(Err(closed()));
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.is_empty() {
                self.buf = spare_take();
            }
            if self.end == self.buf.len() {
                let grown = (self.buf.len() * 2).clamp(HEAD_READ, limit.max(HEAD_READ));
                if grown <= self.buf.len() {
                    return Poll::Ready(Err(io::Error::other("read buffer full")));
                }
                self.buf.resize(grown, 0);
            }
        }
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(closed()));
        };
        let mut read = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }

    /// Writes `bytes[*pos..]` and flushes; `pos` keeps the progress across `Pending`.
    pub(crate) fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        bytes: &[u8],
        pos: &mut usize,
    ) -> Poll<io::Result<()>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(closed()));
        };
        while *pos < bytes.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &bytes[*pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *pos += n;
        }
        Pin::new(io).poll_flush(cx)
    }

    /// Sends the `100 Continue` a request asked for, if it is due.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(mut sent) = self.continue_sent else {
            return Poll::Ready(Ok(()));
        };
        let result = self.poll_write_all(cx, CONTINUE, &mut sent);
        self.continue_sent = if result.is_pending() { Some(sent) } else { None };
        result
    }

    /// The next piece of the current request body from the bytes already read, or `None` if
    /// more bytes are needed.
    fn decode(&mut self) -> Result<Option<Option<Frame<Bytes>>>, &'static str> {
        loop {
            match self.framing {
                Framing::Done => return Ok(Some(None)),
                Framing::Broken => return Err("the request body could not be read"),
                Framing::UntilClose => {
                    return Ok(self.take_data(u64::MAX).map(|data| Some(Frame::data(data))));
                }
                Framing::Length(left) => {
                    let Some(data) = self.take_data(left) else {
                        return Ok(None);
                    };
                    let left = left - data.len() as u64;
                    self.framing = if left == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(left)
                    };
                    return Ok(Some(Some(Frame::data(data))));
                }
                Framing::Chunked(Chunk::Size) => {
                    let unread = self.unread();
                    let Some(lf) = unread.iter().position(|b| *b == b'\n') else {
                        if unread.len() > MAX_CHUNK_LINE {
                            return Err("chunk-size line too long");
                        }
                        return Ok(None);
                    };
                    if lf == 0 || unread[lf - 1] != b'\r' || lf > MAX_CHUNK_LINE {
                        return Err("malformed chunk-size line");
                    }
                    let size = chunk_size(&unread[..lf - 1]).ok_or("malformed chunk size")?;
                    self.consume(lf + 1);
                    self.framing = Framing::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let Some(data) = self.take_data(left) else {
                        return Ok(None);
                    };
                    let left = left - data.len() as u64;
                    self.framing = Framing::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                    return Ok(Some(Some(Frame::data(data))));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    let unread = self.unread();
                    if unread.len() < 2 {
                        if unread.first().is_some_and(|b| *b != b'\r') {
                            return Err("chunk data not followed by CRLF");
                        }
                        return Ok(None);
                    }
                    if &unread[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    self.consume(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let unread = self.unread();
                    if unread.starts_with(b"\r\n") {
                        self.consume(2);
                        self.framing = Framing::Done;
                        return Ok(Some(None));
                    }
                    if unread.len() < 2 {
                        return Ok(None);
                    }
                    let mut slots = [httparse::EMPTY_HEADER; TRAILERS_CAP];
                    match httparse::parse_headers(unread, &mut slots) {
                        Ok(httparse::Status::Partial) if unread.len() > MAX_TRAILERS => {
                            return Err("trailer section too large");
                        }
                        Ok(httparse::Status::Partial) => return Ok(None),
                        Ok(httparse::Status::Complete((len, fields))) => {
                            // httparse takes a bare LF as a line end; chunk framing here never does.
                            let section = &unread[..len];
                            if section
                                .iter()
                                .enumerate()
                                .any(|(i, b)| *b == b'\n' && (i == 0 || section[i - 1] != b'\r'))
                            {
                                return Err("bare LF in the trailer section");
                            }
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                let name =
                                    HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| "bad trailer field")?;
                                let value = HeaderValue::from_bytes(f.value).map_err(|_| "bad trailer field")?;
                                trailers.append(name, value);
                            }
                            self.consume(len);
                            self.framing = Framing::Done;
                            return Ok(Some(Some(Frame::trailers(trailers))));
                        }
                        Err(_) => return Err("malformed trailer section"),
                    }
                }
            }
        }
    }

    /// Up to `left` buffered body bytes, copied out so the buffer can be reused at once.
    fn take_data(&mut self, left: u64) -> Option<Bytes> {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(self.end - self.start);
        if n == 0 {
            return None;
        }
        let data = Bytes::copy_from_slice(&self.unread()[..n]);
        self.consume(n);
        Some(data)
    }

    /// The next frame of the body of request `id`.
    pub(crate) fn poll_body(&mut self, cx: &mut Context<'_>, id: u64) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if id != self.body_id {
            // The body outlived its response; its connection has moved on.
            return Poll::Ready(Some(Err("request body read after its response".into())));
        }
        if let Err(e) = ready!(self.poll_continue(cx)) {
            self.framing = Framing::Broken;
            return Poll::Ready(Some(Err(e.into())));
        }
        loop {
            match self.decode() {
                Ok(Some(frame)) => return Poll::Ready(frame.map(Ok)),
                Ok(None) => {}
                Err(e) => {
                    self.framing = Framing::Broken;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            match ready!(self.poll_fill(cx, BODY_READ)) {
                Ok(0) if self.framing == Framing::UntilClose => {
                    self.framing = Framing::Done;
                    // Ended by the close: the stream cannot be used again.
                    self.io = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.framing = Framing::Broken;
                    return Poll::Ready(Some(Err("connection closed in the middle of the request body".into())));
                }
                Ok(_) => {}
                Err(e) => {
                    self.framing = Framing::Broken;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

/// Idle read buffers kept per thread: a connection gives its buffer back while it waits for
/// the next request (so an idle connection holds none) and takes one when bytes arrive, without
/// allocating and zeroing a fresh one each time.
const SPARES: usize = 256;

thread_local! {
    static SPARE_BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A zero-initialised (or reused) buffer of `HEAD_READ` bytes.
fn spare_take() -> Vec<u8> {
    SPARE_BUFFERS
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; HEAD_READ])
}

fn spare_put(buf: Vec<u8>) {
    // Grown buffers (large heads, bodies) are freed rather than kept.
    if buf.len() == HEAD_READ {
        SPARE_BUFFERS.with(|s| {
            let mut spares = s.borrow_mut();
            if spares.len() < SPARES {
                spares.push(buf);
            }
        });
    }
}

/// The size of a chunk-size line (`1*HEXDIG [ BWS ";" extensions ]`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|b| *b == b';').next()?.trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// The body of a request read from an HTTP/1.1 connection.
pub(crate) struct H1Body<IO> {
    wire: WireRef<IO>,
    id: u64,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> hyper::body::Body for H1Body<IO> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        lock(&self.wire).poll_body(cx, self.id)
    }

    fn is_end_stream(&self) -> bool {
        let wire = lock(&self.wire);
        wire.body_id != self.id || wire.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match lock(&self.wire).framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The connection loop

/// What waiting for the next request gave.
enum Next {
    Head(Box<Head>),
    Http2,
    Refuse(StatusCode),
    Close,
}

/// Serves HTTP/1.1 requests on `io` until the client closes, a clock runs out, `stopping`
/// becomes true between requests, or the client turns out to speak HTTP/2 (returned).
pub(crate) fn serve<IO>(
    io: IO,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    limits: Limits,
    stopping: watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = Outcome<IO>> + Send>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    RequestBody: From<H1Body<IO>>,
{
    // The stream goes to the heap first, so that the connection's future does not also carry
    // room for it.
    let wire: WireRef<IO> = Arc::new(Mutex::new(Wire::new(io)));
    Box::pin(serve_wire(wire, conn, shared, limits, stopping))
}

async fn serve_wire<IO>(
    wire: WireRef<IO>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) -> Outcome<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    RequestBody: From<H1Body<IO>>,
{
    // What lives as long as the connection, or is large and rare, is on the heap rather than in
    // this future: its size is paid by every idle connection.
    let mut sleep = Box::pin(tokio::time::sleep_until(limits.max_age));
    // Accepted while the edge stops: no request is served unless one is already there.
    let mut closing = *stopping.borrow();
    let mut first = true;
    loop {
        let waiting_since = Instant::now();
        let next = next_head(
            &wire,
            &limits,
            &mut stopping,
            &mut closing,
            sleep.as_mut(),
            first,
            waiting_since,
        )
        .await;
        let head = match next {
            Next::Head(head) => head,
            Next::Http2 => {
                let mut w = lock(&wire);
                let prefix = w.unread().to_vec();
                return match w.io.take() {
                    Some(io) => Outcome::Http2(Prefixed::new(prefix, io)),
                    None => Outcome::Closed,
                };
            }
            Next::Refuse(status) => {
                let page = respond::status_page(status, Version::HTTP_11);
                let _ = Box::pin(write_response(
                    &wire,
                    limits.send,
                    page,
                    false,
                    Version::HTTP_11,
                    false,
                    false,
                ))
                .await;
                break;
            }
            Next::Close => break,
        };
        first = false;
        let Head {
            parts,
            framing,
            keep_alive,
            expect_continue,
            trailers,
        } = *head;
        let version = parts.version;
        let head_method = parts.method == Method::HEAD;
        let body = {
            let mut w = lock(&wire);
            w.framing = framing;
            w.body_id += 1;
            w.continue_sent = (expect_continue && framing != Framing::Done).then_some(0);
            if framing == Framing::Done {
                RequestBody::Empty
            } else {
                RequestBody::from(H1Body {
                    wire: wire.clone(),
                    id: w.body_id,
                })
            }
        };
        let in_progress = conn.request_in_progress();
        // Boxed so that the connection task stays small while it waits between requests.
        let mut resp = Box::pin(handler::handle(
            Request::from_parts(parts, body),
            shared.clone(),
            conn.clone(),
        ))
        .await;
        let upgrade = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            resp.extensions_mut().remove::<OriginUpgrade>()
        } else {
            None
        };
        // A client that sent `Expect: 100-continue` and is answered before it was asked for the body may send the
        // body or may not (RFC 9110 §10.1.1): what it sends next could be either, and reading a next request as
        // the rest of this body (or the reverse) desynchronises the connection, so it ends after this response.
        let body_unasked = lock(&wire).continue_sent == Some(0);
        // Judged by when the request was awaited: no second clock read per request.
        let keep = keep_alive
            && !closing
            && !body_unasked
            && !*stopping.borrow()
            && waiting_since < limits.max_age
            && !conn.is_ending();
        let written = Box::pin(write_response(
            &wire,
            limits.send,
            resp,
            head_method,
            version,
            keep,
            trailers,
        ))
        .await;
        if let Some(upgrade) = upgrade {
            if written.is_ok() {
                Box::pin(tunnel(&wire, upgrade, &mut stopping, limits.stream_idle)).await;
            }
            drop(in_progress);
            return Outcome::Closed;
        }
        drop(in_progress);
        let Ok(kept) = written else { break };
        // The interim response is no longer due once the final one went out.
        let body_done = {
            let mut w = lock(&wire);
            w.continue_sent = None;
            w.framing == Framing::Done
        };
        if !body_done && !drain(&wire).await {
            break;
        }
        if !kept {
            break;
        }
    }
    close(&wire).await;
    Outcome::Closed
}

/// Waits for and parses the next request head.
async fn next_head<IO: AsyncRead + AsyncWrite + Unpin>(
    wire: &WireRef<IO>,
    limits: &Limits,
    stopping: &mut watch::Receiver<bool>,
    closing: &mut bool,
    mut sleep: Pin<&mut Sleep>,
    first: bool,
    waiting_since: Instant,
) -> Next {
    // The first request's head is timed from the handshake: a client that connects and sends
    // nothing is cut off as soon as one that sends a partial head. So is a pipelined head whose
    // first bytes came with the previous request.
    let mut head_begun = (first || !lock(wire).unread().is_empty()).then_some(waiting_since);
    // How much of the unread bytes was parsed and found incomplete: a head ends with a line end, so bytes that
    // bring none cannot complete it, and are not parsed again from the start (a head sent a byte per TLS record
    // would otherwise cost a parse of everything before each byte).
    let mut partial_at = 0;
    loop {
        let buffered = {
            let mut w = lock(wire);
            let unread = w.unread();
            if unread.is_empty() {
                // Nothing to keep while the client thinks.
                w.release();
            } else if first && H2_PREFACE.starts_with(&unread[..unread.len().min(H2_PREFACE.len())]) {
                if unread.len() >= H2_PREFACE.len() {
                    return Next::Http2;
                }
            } else if partial_at > 0 && partial_at < unread.len() && !unread[partial_at..].contains(&b'\n') {
                if unread.len() >= limits.max_head {
                    return Next::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
                }
            } else {
                match parse_head(unread, limits.max_headers) {
                    Ok(Some((len, head))) => {
                        w.consume(len);
                        return Next::Head(Box::new(head));
                    }
                    Ok(None) if unread.len() >= limits.max_head => {
                        return Next::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
                    }
                    Ok(None) => partial_at = unread.len(),
                    Err(Refusal(status)) => return Next::Refuse(status),
                }
            }
            !w.unread().is_empty()
        };
        if *closing && !buffered {
            return Next::Close;
        }
        if buffered && head_begun.is_none() {
            // Read just now, so the head's clock starts now (within one parse of its first byte).
            head_begun = Some(Instant::now());
        }
        let deadline = match head_begun {
            Some(begun) => begun + limits.header_read,
            None => waiting_since + limits.idle,
        };
        sleep.as_mut().reset(deadline.min(limits.max_age));
        tokio::select! {
            biased;
            filled = poll_fn(|cx| lock(wire).poll_fill(cx, limits.max_head)) => match filled {
                Ok(n) if n > 0 => {}
                _ => return Next::Close,
            },
            () = sleep.as_mut() => {
                if head_begun.is_some() && !lock(wire).unread().is_empty() {
                    tracing::debug!("request head not received within the header-read timeout");
                }
                return Next::Close;
            }
            _ = stopping.changed(), if !*closing => *closing = true,
        }
    }
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client and a body of unknown length).
    Close,
}

/// Writes `resp`; `Ok(true)` if the connection may carry another request.
async fn write_response<IO: AsyncRead + AsyncWrite + Unpin>(
    wire: &WireRef<IO>,
    send: Duration,
    resp: Response<Body>,
    head_method: bool,
    version: Version,
    keep_alive: bool,
    trailers_ok: bool,
) -> io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let out = if head_method
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Out::None
    } else if let Some(n) = declared {
        Out::Length(n)
    } else if body.is_end_stream() {
        Out::Length(0)
    } else if let Some(n) = body.size_hint().exact() {
        Out::Length(n)
    } else if version == Version::HTTP_11 {
        Out::Chunked
    } else {
        Out::Close
    };
    let keep_alive = keep_alive && out != Out::Close && status != StatusCode::SWITCHING_PROTOCOLS;
    let mut buf = Vec::with_capacity(512);
    encode_head(&mut buf, &parts, out, keep_alive, version);
    if out == Out::None {
        write_all(wire, &buf, send).await?;
        return Ok(keep_alive);
    }
    let mut sent: u64 = 0;
    loop {
        let polled = if buf.is_empty() {
            poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        } else {
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Nothing more yet: send what is gathered, then wait.
                    write_all(wire, &buf, send).await?;
                    buf.clear();
                    continue;
                }
            }
        };
        match polled {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    sent += data.len() as u64;
                    match out {
                        Out::Length(n) if sent > n => {
                            return Err(io::Error::other("response body longer than its content-length"));
                        }
                        Out::Chunked if !data.is_empty() => {
                            buf.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                            buf.extend_from_slice(&data);
                            buf.extend_from_slice(b"\r\n");
                        }
                        _ => buf.extend_from_slice(&data),
                    }
                }
                Err(frame) => {
                    if let (Out::Chunked, true, Ok(trailers)) = (out, trailers_ok, frame.into_trailers()) {
                        buf.extend_from_slice(b"0\r\n");
                        encode_fields(&mut buf, &trailers);
                        buf.extend_from_slice(b"\r\n");
                        write_all(wire, &buf, send).await?;
                        return Ok(keep_alive);
                    }
                }
            },
            Some(Err(e)) => return Err(io::Error::other(e)),
            None => {
                match out {
                    Out::Length(n) if sent != n => {
                        return Err(io::Error::other("response body shorter than its content-length"));
                    }
                    Out::Chunked => buf.extend_from_slice(b"0\r\n\r\n"),
                    _ => {}
                }
                write_all(wire, &buf, send).await?;
                return Ok(keep_alive);
            }
        }
        if buf.len() >= WRITE_BATCH {
            write_all(wire, &buf, send).await?;
            buf.clear();
        }
    }
}

/// The status line and header fields, with the framing and connection fields this side decides.
fn encode_head(buf: &mut Vec<u8>, parts: &http::response::Parts, out: Out, keep_alive: bool, version: Version) {
    let status = parts.status;
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    // A no-body response to HEAD or a 304 keeps the length the origin declared.
    let keep_length = matches!(out, Out::Length(_))
        || (out == Out::None && !upgrade && status != StatusCode::NO_CONTENT && !status.is_informational());
    for (name, value) in &parts.headers {
        let skip = name == header::TRANSFER_ENCODING
            || (name == header::CONNECTION && !upgrade)
            || name == "keep-alive"
            || (name == header::CONTENT_LENGTH && !keep_length);
        if !skip {
            field(buf, name.as_str(), value.as_bytes());
        }
    }
    match out {
        Out::Length(n) if !parts.headers.contains_key(header::CONTENT_LENGTH) => {
            field(buf, "content-length", n.to_string().as_bytes());
        }
        Out::Chunked => field(buf, "transfer-encoding", b"chunked"),
        _ => {}
    }
    if !parts.headers.contains_key(header::DATE) {
        field(buf, "date", &http_date());
    }
    if !upgrade {
        if !keep_alive {
            field(buf, "connection", b"close");
        } else if version == Version::HTTP_10 {
            field(buf, "connection", b"keep-alive");
        }
    }
    buf.extend_from_slice(b"\r\n");
}

fn encode_fields(buf: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        field(buf, name.as_str(), value.as_bytes());
    }
}

fn field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// The `Date` value, formatted once per second per thread.
fn http_date() -> [u8; 29] {
    thread_local! {
        static CACHED: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let (at, text) = cached.get();
        if at == second {
            return text;
        }
        let mut fresh = [0u8; 29];
        let formatted = httpdate::fmt_http_date(now);
        if formatted.len() == fresh.len() {
            fresh.copy_from_slice(formatted.as_bytes());
        }
        cached.set((second, fresh));
        fresh
    })
}

/// Writes `bytes` to the client. A client that stops reading is cut off after `send` without
/// finishing one write; the clock is armed only for a write that has to wait, so the common
/// write that completes at once costs no timer.
async fn write_all<IO: AsyncRead + AsyncWrite + Unpin>(
    wire: &WireRef<IO>,
    bytes: &[u8],
    send: Duration,
) -> io::Result<()> {
    let mut pos = 0;
    let mut write = poll_fn(|cx| {
        let mut w = lock(wire);
        // A `100 Continue` half written must be finished first; one not begun is dropped, as
        // the final response makes it moot.
        match w.continue_sent {
            Some(0) => w.continue_sent = None,
            Some(_) => ready!(w.poll_continue(cx))?,
            None => {}
        }
        w.poll_write_all(cx, bytes, &mut pos)
    });
    match poll_fn(|cx| Poll::Ready(Pin::new(&mut write).poll(cx))).await {
        Poll::Ready(result) => result,
        Poll::Pending => tokio::time::timeout(send, write)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))),
    }
}

/// Reads and discards what is left of a small request body the handler did not read, so that
/// the connection can carry the next request. `false`: close it instead.
async fn drain<IO: AsyncRead + AsyncWrite + Unpin>(wire: &WireRef<IO>) -> bool {
    let mut discarded: u64 = 0;
    let drained = poll_fn(|cx| {
        let mut w = lock(wire);
        let id = w.body_id;
        loop {
            match ready!(w.poll_body(cx, id)) {
                None => return Poll::Ready(true),
                Some(Ok(frame)) => {
                    discarded += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if discarded > DRAIN_MAX {
                        return Poll::Ready(false);
                    }
                }
                Some(Err(_)) => return Poll::Ready(false),
            }
        }
    });
    tokio::time::timeout(DRAIN_TIME, drained).await.unwrap_or(false)
}

/// Relays bytes between the client and the origin after both switched protocols, until either
/// side closes or the edge stops.
async fn tunnel<IO: AsyncRead + AsyncWrite + Unpin>(
    wire: &WireRef<IO>,
    upgrade: OriginUpgrade,
    stopping: &mut watch::Receiver<bool>,
    idle: Duration,
) {
    let (io, early) = {
        let mut w = lock(wire);
        let early = w.unread().to_vec();
        (w.io.take(), early)
    };
    let Some(mut client) = io else { return };
    let mut origin = match upgrade.0.await {
        Ok(upgraded) => TokioIo::new(upgraded),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    // Bytes the client sent right after its upgrade request belong to the new protocol.
    if !early.is_empty() && origin.write_all(&early).await.is_err() {
        return;
    }
    let started = Instant::now();
    let moved = AtomicU64::new(0);
    let mut client = Moving {
        io: &mut client,
        started,
        moved: &moved,
    };
    let mut origin = Moving {
        io: &mut origin,
        started,
        moved: &moved,
    };
    // Ends when nothing moved either way for `idle`: the time of the last byte is read again at each deadline, so
    // the clock is not reset for every read and write.
    let quiet = async {
        loop {
            let last = Duration::from_millis(moved.load(Ordering::Relaxed));
            tokio::time::sleep_until(started + last + idle).await;
            if Duration::from_millis(moved.load(Ordering::Relaxed)) == last {
                break;
            }
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut origin) => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        _ = stopping.wait_for(|stop| *stop) => {}
        () = quiet, if !idle.is_zero() => tracing::debug!("upgraded connection idle for the stream idle timeout"),
    }
}

/// One side of a tunnel, noting when bytes last moved through it (milliseconds after `started`).
struct Moving<'a, S> {
    io: &'a mut S,
    started: Instant,
    moved: &'a AtomicU64,
}

impl<S> Moving<'_, S> {
    fn note(&self, n: usize) {
        if n > 0 {
            let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.moved.store(ms, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Moving<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        self.note(buf.filled().len() - before);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Moving<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.io).poll_write(cx, bytes);
        if let Poll::Ready(Ok(n)) = polled {
            self.note(n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

/// Closes the connection: the TLS close_notify, then the socket. A body still held upstream
/// sees the connection closed.
async fn close<IO: AsyncRead + AsyncWrite + Unpin>(wire: &WireRef<IO>) {
    let shutdown = poll_fn(|cx| match lock(wire).io.as_mut() {
        Some(io) => Pin::new(io).poll_shutdown(cx),
        None => Poll::Ready(Ok(())),
    });
    let _ = Box::pin(tokio::time::timeout(SHUTDOWN_TIME, shutdown)).await;
    lock(wire).io = None;
}

// ---------------------------------------------------------------------------------------------
// Handing over to HTTP/2

/// A stream with bytes already read from it put back in front.
pub(crate) struct Prefixed<IO> {
    prefix: Vec<u8>,
    pos: usize,
    io: IO,
}

impl<IO> Prefixed<IO> {
    pub(crate) fn new(prefix: Vec<u8>, io: IO) -> Prefixed<IO> {
        Prefixed { prefix, pos: 0, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(usize, Head)>, Refusal> {
        parse_head(text.as_bytes(), 100)
    }

    fn framing(text: &str) -> Result<Framing, StatusCode> {
        match head(text) {
            Ok(Some((_, h))) => Ok(h.framing),
            Ok(None) => panic!("incomplete: {text:?}"),
            Err(Refusal(status)) => Err(status),
        }
    }

    #[test]
    fn heads_parse_into_parts_and_connection_semantics() {
        let text = "GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\nX-Two: 1\r\nx-two: 2\r\n\r\nrest";
        let (len, h) = head(text).unwrap().unwrap();
        assert_eq!(&text[len..], "rest");
        assert_eq!(h.parts.method, Method::GET);
        assert_eq!(h.parts.uri, "/a?b=1");
        assert_eq!(h.parts.version, Version::HTTP_11);
        assert_eq!(h.parts.headers.get_all("x-two").iter().count(), 2);
        assert!(h.keep_alive);
        assert_eq!(h.framing, Framing::Done);

        let close = head("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n")
            .unwrap()
            .unwrap()
            .1;
        assert!(!close.keep_alive);
        let old = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().1;
        assert!(!old.keep_alive);
        let old_kept = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap()
            .1;
        assert!(old_kept.keep_alive);
        let expect = head("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\nTE: trailers\r\n\r\n")
            .unwrap()
            .unwrap()
            .1;
        assert!(expect.expect_continue && expect.trailers);
        assert_eq!(expect.framing, Framing::Length(3));

        assert!(head("GET / HTTP/1.1\r\nHost: x").unwrap().is_none(), "partial");
        assert!(head("").unwrap().is_none());
    }

    #[test]
    fn request_framing_is_strict() {
        let chunked = Ok(Framing::Chunked(Chunk::Size));
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            chunked
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            chunked
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Ok(Framing::Done)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        // Repeated lengths go on as one value.
        for (text, value) in [
            ("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", "5"),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", "5"),
            ("POST / HTTP/1.1\r\nContent-Length: 0,0\r\n\r\n", "0"),
            ("POST / HTTP/1.1\r\nContent-Length: 7\r\n\r\n", "7"),
        ] {
            let (_, h) = head(text).unwrap().unwrap();
            let values: Vec<_> = h.parts.headers.get_all(header::CONTENT_LENGTH).iter().collect();
            assert_eq!(values, [value], "{text:?}");
        }
        let bad = Err(StatusCode::BAD_REQUEST);
        // Host twice: the proxy checks one, an origin might route by the other.
        assert_eq!(
            framing("GET / HTTP/1.1\r\nHost: api.test\r\nHost: other.test\r\n\r\n"),
            bad
        );
        assert_eq!(
            framing("GET / HTTP/1.1\r\nHost: api.test\r\nhost: api.test\r\n\r\n"),
            bad
        );
        // Smuggling shapes: both framings, differing or malformed lengths, TE in HTTP/1.0.
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
            bad
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            bad
        );
        assert_eq!(framing("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"), bad);
        assert_eq!(framing("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"), bad);
        assert_eq!(framing("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), bad);
        assert_eq!(framing("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"), bad);
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            bad
        );
        assert_eq!(framing("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), bad);
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            bad
        );
        assert_eq!(framing("POST / HTTP/1.1\r\nTransfer-Encoding: ,\r\n\r\n"), bad);
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(StatusCode::NOT_IMPLEMENTED)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(StatusCode::NOT_IMPLEMENTED)
        );
    }

    #[test]
    fn malformed_heads_are_refused_with_a_status() {
        let status = |text: &str| head(text).err().map(|r| r.0);
        assert_eq!(
            status("GET / HTTP/2.0\r\n\r\n"),
            Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED)
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nx: a\r\n folded\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(status("GET /a b HTTP/1.1\r\n\r\n"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status("G@T / HTTP/1.1\r\n\r\n"), Some(StatusCode::BAD_REQUEST));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..101 {
            many.push_str(&format!("x-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(status(&many), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }

    /// Decodes `input` as a body with `framing`, feeding it `step` bytes at a time: the data,
    /// the trailers, or the decoder's error.
    fn decode_all(input: &[u8], framing: Framing, step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), &'static str> {
        let (io, _peer) = tokio::io::duplex(64);
        let mut wire = Wire::new(io);
        wire.framing = framing;
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match wire.decode()? {
                Some(Some(frame)) => match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Some(None) => return Ok((data, trailers)),
                None if fed == input.len() => return Err("input ended"),
                None => {
                    let n = step.min(input.len() - fed);
                    let unread = wire.unread().to_vec();
                    wire.buf = [unread.as_slice(), &input[fed..fed + n]].concat();
                    wire.start = 0;
                    wire.end = wire.buf.len();
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let chunked = Framing::Chunked(Chunk::Size);
        let input = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nx-sum: 1\r\nx-other: 2\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (data, trailers) = decode_all(input, chunked, step).unwrap();
            assert_eq!(data, b"hello world", "step {step}");
            let trailers = trailers.unwrap();
            assert_eq!(trailers["x-sum"], "1");
            assert_eq!(trailers.len(), 2);
        }
        let (data, trailers) = decode_all(b"A\r\n0123456789\r\n0\r\n\r\n", chunked, 4).unwrap();
        assert_eq!((data.as_slice(), trailers), (&b"0123456789"[..], None));
        let (data, _) = decode_all(b"hello, and more", Framing::Length(5), 2).unwrap();
        assert_eq!(data, b"hello");
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        let chunked = Framing::Chunked(Chunk::Size);
        for (input, why) in [
            (&b"5\nhello\r\n0\r\n\r\n"[..], "bare LF after the size"),
            (b"5\r\nhelloX\r\n0\r\n\r\n", "data longer than its size"),
            (b"\r\nhello\r\n", "empty size"),
            (b"-5\r\nhello\r\n", "signed size"),
            (b"g\r\n", "not hex"),
            (b"10000000000000000\r\n", "17 hex digits"),
            (b"0\r\nbad field\r\n\r\n", "malformed trailer"),
        ] {
            assert!(decode_all(input, chunked, 3).is_err(), "{why}");
        }
        // A bare LF ending the body or a trailer line: refused, not read as the end.
        for input in [
            &b"0\r\n\nGET / HTTP/1.1\r\n\r\n"[..],
            b"0\r\nx-sum: 1\n\r\n",
            b"0\r\nx-sum: 1\r\n\n",
        ] {
            for step in [1, 3, 64] {
                assert_eq!(
                    decode_all(input, chunked, step).map(|_| ()),
                    Err("bare LF in the trailer section"),
                    "{input:?}"
                );
            }
        }
        let long_line = format!("5;{}\r\n", "x".repeat(MAX_CHUNK_LINE + 10));
        assert!(decode_all(long_line.as_bytes(), chunked, 1024).is_err());
        assert_eq!(decode_all(b"5\r\nhel", chunked, 2), Err("input ended"));
    }

    fn encoded(resp: Response<()>, out: Out, keep_alive: bool, version: Version) -> String {
        let mut buf = Vec::new();
        encode_head(&mut buf, &resp.into_parts().0, out, keep_alive, version);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn response_heads_carry_the_framing_this_side_chose() {
        let resp = || {
            Response::builder()
                .status(200)
                .header("content-length", "12")
                .header("transfer-encoding", "chunked")
                .header("connection", "x-hop")
                .header("x-kept", "1")
                .body(())
                .unwrap()
        };
        let chunked = encoded(resp(), Out::Chunked, true, Version::HTTP_11);
        assert!(chunked.starts_with("HTTP/1.1 200 OK\r\n"), "{chunked}");
        assert!(chunked.contains("\r\ntransfer-encoding: chunked\r\n"));
        assert!(
            !chunked.contains("content-length") && !chunked.contains("x-hop"),
            "{chunked}"
        );
        assert!(chunked.contains("\r\nx-kept: 1\r\n") && chunked.contains("\r\ndate: "));
        assert!(chunked.ends_with("\r\n\r\n") && !chunked.contains("connection"));

        let head = encoded(resp(), Out::None, false, Version::HTTP_11);
        assert!(
            head.contains("content-length: 12") && head.contains("connection: close"),
            "{head}"
        );
        let old = encoded(resp(), Out::Length(12), true, Version::HTTP_10);
        assert!(
            old.contains("content-length: 12") && old.contains("connection: keep-alive"),
            "{old}"
        );
        assert_eq!(old.matches("content-length").count(), 1);
        let no_content = encoded(
            Response::builder()
                .status(204)
                .header("content-length", "0")
                .body(())
                .unwrap(),
            Out::None,
            true,
            Version::HTTP_11,
        );
        assert!(!no_content.contains("content-length"), "{no_content}");
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let date = http_date();
        let text = std::str::from_utf8(&date).unwrap();
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
