//! Limits, upgrades and observability: body size and read timeout, header limits, WebSocket
//! pass-through, metrics, the access log and failed-handshake events, HTTP/2 Rapid Reset.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::*;

/// A request body fed through a channel: no content-length, sent as it arrives (chunked in
/// HTTP/1.1, DATA frames in HTTP/2).
pub(super) struct ChannelBody(pub(super) mpsc::UnboundedReceiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// A body of `chunks` already queued (and finished unless `keep_open`); the sender is returned so
/// the caller can keep the body open.
fn streamed(chunks: &[usize], keep_open: bool) -> (ReqBody, Option<mpsc::UnboundedSender<Bytes>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    for n in chunks {
        tx.send(Bytes::from(vec![b'x'; *n])).unwrap();
    }
    (ChannelBody(rx).boxed(), keep_open.then_some(tx))
}

/// The echo origin, counting the requests that reach it.
async fn start_counting_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    echo(req)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, count)
}

fn limits(max_body: u64) -> ProxyConfig {
    ProxyConfig {
        max_request_body_bytes: max_body,
        drain_timeout: Duration::from_secs(5),
        ..ProxyConfig::default()
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let w = world().await;
    let (origin, reached) = start_counting_origin().await;
    let proxy = start_proxy_with(
        build_snapshot(
            1,
            &w.server,
            origin,
            vec![HostSpec::new("api.test", &w.ca), grpc_spec(&w.ca)],
        ),
        limits(1000),
    )
    .await;

    // A content-length over the limit is refused before anything reaches the origin.
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    let req = Request::post("https://api.test/upload")
        .body(Full::new(Bytes::from(vec![b'x'; 1001])).boxed())
        .unwrap();
    let (status, _, _) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut c1 = h1(&proxy, &w.server, "api.test", None).await;
    let req = Request::post("/upload")
        .header("host", "api.test")
        .body(Full::new(Bytes::from(vec![b'x'; 5000])).boxed())
        .unwrap();
    let (status, _, _) = read(c1.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reached.load(Ordering::SeqCst), 0, "nothing may reach the origin");

    // At the limit it passes.
    let req = Request::post("https://api.test/upload")
        .body(Full::new(Bytes::from(vec![b'x'; 1000])).boxed())
        .unwrap();
    let (status, _, body) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(reached.load(Ordering::SeqCst), 1);

    // Streamed bodies without a length are cut off when they pass the limit: HTTP/2 to an
    // HTTP/1.1 origin, HTTP/2 to an h2c origin, and HTTP/1.1 chunked.
    let (body, _) = streamed(&[400, 400, 400], false);
    let req = Request::post("https://api.test/upload").body(body).unwrap();
    let (status, _, _) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let mut g = h2(&proxy, &w.server, "grpc.test", None).await;
    let (body, _) = streamed(&[400, 400, 400], false);
    let req = Request::post("https://grpc.test/other.Service/Upload")
        .body(body)
        .unwrap();
    let (status, _, _) = read(g.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let mut c1 = h1(&proxy, &w.server, "api.test", None).await;
    let (body, _) = streamed(&[600, 600], false);
    let req = Request::post("/upload").header("host", "api.test").body(body).unwrap();
    let (status, _, _) = read(c1.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A streamed body within the limit still streams through.
    let (body, _) = streamed(&[300, 300, 300], false);
    let req = Request::post("https://api.test/upload").body(body).unwrap();
    let (status, _, body) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let json: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(json["body"].as_str().unwrap().len(), 900);

    // The proxy is still healthy.
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("api.test", "/public").await.0, StatusCode::OK);
}

/// An origin that answers at once and streams the request body back as it arrives.
async fn start_streaming_echo() -> SocketAddr {
    origin_with(|req: Request<Incoming>| async move { Ok::<_, Infallible>(Response::new(req.into_body())) }).await
}

#[tokio::test]
async fn a_body_over_the_limit_after_the_response_started_resets_the_stream() {
    let w = world().await;
    let proxy = start_proxy_with(
        build_snapshot(
            1,
            &w.server,
            start_streaming_echo().await,
            vec![HostSpec::new("api.test", &w.ca)],
        ),
        limits(1000),
    )
    .await;
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    let (body, tx) = streamed(&[400], true);
    let tx = tx.unwrap();
    let req = Request::post("https://api.test/stream").body(body).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), c.0.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the origin answered before the body ended"
    );
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first.len(), 400);
    tx.send(Bytes::from(vec![b'x'; 400])).unwrap();
    tx.send(Bytes::from(vec![b'x'; 400])).unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .unwrap();
    assert!(rest.is_err(), "the stream was not reset");

    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    let (body, _) = streamed(&[100], false);
    let req = Request::post("https://api.test/stream").body(body).unwrap();
    let (status, _, text) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!((status, text.len()), (StatusCode::OK, 100));
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let w = world().await;
    let proxy = api_proxy(
        &w,
        ProxyConfig {
            request_body_timeout: Duration::from_millis(300),
            ..limits(1 << 20)
        },
    )
    .await;
    for http2 in [true, false] {
        let (body, _open) = streamed(&[10], true);
        let resp = if http2 {
            let mut c = h2(&proxy, &w.server, "api.test", None).await;
            let req = Request::post("https://api.test/upload").body(body).unwrap();
            tokio::time::timeout(Duration::from_secs(5), c.0.send_request(req)).await
        } else {
            let mut c = h1(&proxy, &w.server, "api.test", None).await;
            let req = Request::post("/upload").header("host", "api.test").body(body).unwrap();
            tokio::time::timeout(Duration::from_secs(5), c.0.send_request(req)).await
        };
        let resp = resp.expect("no answer to a stalled body").unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT, "http2: {http2}");
    }
}

/// Sends raw bytes over TLS and returns what comes back until the peer closes or `wait` passes.
async fn raw_exchange(proxy: &Proxy, server: &ServerPki, request: &[u8], wait: Duration) -> String {
    raw_exchange_sni(proxy, server, "api.test", request, wait).await
}

async fn raw_exchange_sni(proxy: &Proxy, server: &ServerPki, sni: &str, request: &[u8], wait: Duration) -> String {
    let mut tls = tls_connect(proxy, server, sni, None, b"http/1.1").await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(wait, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if out.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_header_blocks_are_refused() {
    let w = world().await;
    let proxy = api_proxy(
        &w,
        ProxyConfig {
            h1_max_headers: 20,
            h1_max_buf_size: 16 * 1024,
            h2_max_header_list_size: 8 * 1024,
            ..limits(1 << 20)
        },
    )
    .await;
    let wait = Duration::from_secs(5);

    // HTTP/1.1: too many headers, then one header larger than the buffer.
    let mut many = String::from("GET /public HTTP/1.1\r\nHost: api.test\r\n");
    for i in 0..40 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let out = raw_exchange(&proxy, &w.server, many.as_bytes(), wait).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    let big = format!(
        "GET /public HTTP/1.1\r\nHost: api.test\r\nx-big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let out = raw_exchange(&proxy, &w.server, big.as_bytes(), wait).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    let ok = raw_exchange(
        &proxy,
        &w.server,
        b"GET /public HTTP/1.1\r\nHost: api.test\r\n\r\n",
        wait,
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");

    // HTTP/2: a header list over the limit gets 431 from h2 itself (a response, then the stream
    // is reset); the origin never sees it. hyper's client does not check the limit first.
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    let req = Request::get("https://api.test/public")
        .header("x-big", "a".repeat(16 * 1024))
        .body(empty())
        .unwrap();
    let resp = c.0.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Far over the limit (more than 4x), h2 closes the connection instead.
    let req = Request::get("https://api.test/public")
        .header("x-big", "a".repeat(40 * 1024))
        .body(empty())
        .unwrap();
    // (An error here is the closed connection; any response must be the 431.)
    if let Ok(resp) = c.0.send_request(req).await {
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("api.test", "/public").await.0, StatusCode::OK);
}

/// An origin that answers a WebSocket handshake with 101 and then echoes bytes; it sends the
/// request head it received on `heads`.
async fn start_websocket_origin() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let _ = heads.send(head.clone());
                if !head.contains("upgrade: websocket") {
                    let _ = tcp
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                    )
                    .await;
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, rx)
}

/// Connects to `api.test` with `cert`, sends [`WS_HANDSHAKE`] and reads the response head.
async fn websocket_handshake(proxy: &Proxy, w: &World, cert: &ClientCert) -> (TlsStream<TcpStream>, String) {
    let mut tls = tls_connect(proxy, &w.server, "api.test", Some(cert), b"http/1.1")
        .await
        .unwrap();
    tls.write_all(WS_HANDSHAKE.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut byte))
            .await
            .expect("no response head")
            .unwrap();
        head.push(byte[0]);
    }
    (tls, String::from_utf8_lossy(&head).into_owned())
}

const WS_HANDSHAKE: &str = "GET /ws HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn websocket_upgrades_pass_through_after_the_rules() {
    let w = world().await;
    let (origin, mut heads) = start_websocket_origin().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.rules = ruleset(&[(
        r#"not cf.tls_client_auth.cert_verified and http.request.uri.path eq "/ws""#,
        Action::Block,
        None,
    )]);
    let mut h2_origin = HostSpec::new("grpc.test", &w.ca);
    h2_origin.h2c = true;
    let proxy = start_proxy(build_snapshot(1, &w.server, origin, vec![spec, h2_origin])).await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());

    let (mut tls, head) = websocket_handshake(&proxy, &w, &good).await;
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let seen = heads.recv().await.unwrap();
    assert!(seen.contains("connection: upgrade"), "{seen}");
    assert!(seen.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="), "{seen}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1"), "{seen}");

    // Bytes flow both ways, several times.
    for msg in [&b"hello"[..], b"\x81\x05world"] {
        tls.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut back))
            .await
            .expect("no echo")
            .unwrap();
        assert_eq!(back, msg);
    }
    drop(tls);

    // Without a certificate the rules block the upgrade before the origin sees it.
    let out = raw_exchange(&proxy, &w.server, WS_HANDSHAKE.as_bytes(), Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(heads.try_recv().is_err(), "a blocked upgrade reached the origin");

    // An HTTP/2 origin cannot take an HTTP/1.1 upgrade: a clear 501, not a hang or a 502.
    let handshake = WS_HANDSHAKE.replace("api.test", "grpc.test");
    let out = raw_exchange_sni(
        &proxy,
        &w.server,
        "grpc.test",
        handshake.as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 501"), "{out}");
    assert!(heads.try_recv().is_err());
}

/// With a stream idle timeout, a tunnel that carries bytes stays open, and one quiet for the timeout is closed.
#[tokio::test]
async fn a_quiet_websocket_tunnel_is_closed_after_the_stream_idle_timeout() {
    let w = world().await;
    let (origin, _heads) = start_websocket_origin().await;
    let proxy = start_proxy_with(
        build_snapshot(1, &w.server, origin, vec![HostSpec::new("api.test", &w.ca)]),
        ProxyConfig {
            stream_idle_timeout: Duration::from_millis(600),
            ..ProxyConfig::default()
        },
    )
    .await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let (mut tls, head) = websocket_handshake(&proxy, &w, &good).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Traffic every 300 ms keeps it open past the timeout.
    for _ in 0..4 {
        tls.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut back))
            .await
            .expect("no echo")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let quiet = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the quiet tunnel is closed");
    assert!(quiet.elapsed() >= Duration::from_millis(250), "{:?}", quiet.elapsed());
}

/// A response body that stops half way: one frame, then nothing, for ever.
struct Stall(bool);

impl hyper::body::Body for Stall {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if std::mem::replace(&mut self.0, true) {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"part")))))
        }
    }
}

/// An origin whose response body stalls is cut off after the stream idle timeout, on both origin paths (the
/// proxy's own HTTP/1.1 client, hyper's for h2c), to HTTP/1.1 and HTTP/2 clients, instead of holding the
/// client's request for ever.
#[tokio::test]
async fn a_stalled_response_body_is_cut_off_after_the_stream_idle_timeout() {
    let w = world().await;
    let origin =
        origin_with(|_req: Request<Incoming>| async { Ok::<_, Infallible>(Response::new(Stall(false))) }).await;
    let mut h2c = HostSpec::new("grpc.test", &w.ca);
    h2c.h2c = true;
    let proxy = start_proxy_with(
        build_snapshot(1, &w.server, origin, vec![HostSpec::new("api.test", &w.ca), h2c]),
        ProxyConfig {
            stream_idle_timeout: Duration::from_millis(500),
            ..ProxyConfig::default()
        },
    )
    .await;
    for host in ["api.test", "grpc.test"] {
        let mut c = h1(&proxy, &w.server, host, None).await;
        let req = Request::get("/public").header("host", host).body(empty()).unwrap();
        let resp = c.0.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await;
        assert!(
            matches!(body, Ok(Err(_))),
            "{host}, HTTP/1.1: the body ends in an error"
        );

        let mut c = h2(&proxy, &w.server, host, None).await;
        let req = Request::get(format!("https://{host}/public")).body(empty()).unwrap();
        let resp = c.0.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await;
        assert!(matches!(body, Ok(Err(_))), "{host}, HTTP/2: the stream is reset");
    }
}

// ---------------------------------------------------------------------------------------------
// Observability

/// Collects `(target, fields)` of every event. Installed once as the global subscriber (a
/// thread-scoped one races with callsite-interest caching when tests run in parallel), so it also
/// sees other tests' events: assertions filter on names only one test uses.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, EventFields)>>>);

type EventFields = HashMap<String, String>;

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    // Only our own targets: h2 and others trace a lot, and every test in the binary runs under it.
    fn register_callsite(&self, metadata: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if metadata.target().starts_with("portcullis::") {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) -> bool {
        metadata.target().starts_with("portcullis::")
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        if let Ok(mut events) = self.0.lock() {
            events.push((event.metadata().target().to_owned(), fields));
        }
    }
}

impl Capture {
    /// Events on `target` whose `field` starts with `prefix`.
    fn events(&self, target: &str, field: &str, prefix: &str) -> Vec<EventFields> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(t, f)| t == target && f.get(field).is_some_and(|v| v.starts_with(prefix)))
            .map(|(_, f)| f.clone())
            .collect()
    }
}

fn capture() -> &'static Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        let capture = Capture::default();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
            .expect("a global subscriber is already set");
        capture
    })
}

#[tokio::test]
async fn access_log_and_failed_handshakes_are_logged() {
    let capture = capture();
    // Callsites first hit before the subscriber was installed may have cached "never".
    tracing::callsite::rebuild_interest_cache();
    // The metrics recorder, installed before the handshakes it counts.
    let _ = metric_values();

    let w = World {
        ca: managed_ca(),
        server: server_pki(&["log.test", "log-open.test", "log-unknown.test"]),
        origin: start_origin().await,
    };
    let mut spec = HostSpec::new("log.test", &w.ca);
    spec.mtls = Some((MtlsMode::Require, verifier(&w.ca, &[]), w.ca.certificate_der().to_vec()));
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![spec, HostSpec::new("log-open.test", &w.ca)],
    ))
    .await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let f = facts_for(&w.ca, &good);

    let mut c = h2(&proxy, &w.server, "log.test", Some(&good)).await;
    let long = format!("/{}", "p".repeat(5000));
    assert_eq!(c.get("log.test", &long).await.0, StatusCode::OK);
    let mut anon = h1(&proxy, &w.server, "log-open.test", None).await;
    assert_eq!(anon.get("log-open.test", "/api", &[]).await.0, StatusCode::FORBIDDEN);

    let access = capture.events("portcullis::access", "host", "log");
    assert_eq!(access.len(), 2, "{access:?}");
    let a = &access[0];
    assert_eq!(a["host"], "log.test");
    assert_eq!(a["method"], "GET");
    assert_eq!(
        a["path"].len(),
        crate::observe::MAX_LOGGED_PATH,
        "the path is truncated"
    );
    assert_eq!(a["status"], "200");
    assert!(a["latency_ms"].parse::<u64>().is_ok());
    assert_eq!(a["client_ip"], "127.0.0.1");
    assert_eq!(a["protocol"], "HTTP/2");
    assert_eq!(a["tls_version"], "TLSv1.3");
    assert_eq!(a["mtls_status"], "ok");
    assert_eq!(a["cert_fingerprint_sha256"], f.cert_fingerprint_sha256);
    assert_eq!(a["cert_serial"], f.cert_serial);
    assert_eq!(a["cert_subject"], f.cert_subject_dn_rfc2253);
    assert_eq!(a["verify_error"], "");
    assert_eq!(a["rule_id"], "");
    assert_eq!(a["action"], "allow");
    let b = &access[1];
    assert_eq!(b["protocol"], "HTTP/1.1");
    assert_eq!(b["status"], "403");
    assert_eq!(b["mtls_status"], "absent");
    assert_eq!((b["cert_subject"].as_str(), b["verify_error"].as_str()), ("", ""));
    assert_eq!(b["rule_id"], "rule0");
    assert_eq!(b["action"], "block");

    // A handshake without the required certificate, and one for an unknown name.
    assert!(refused_on_first_use(&proxy, &w, None).await);
    // A certificate from another CA: refused, and the line names it.
    let stranger = issue(&managed_ca(), "stranger", SubjectAltNames::default());
    let sf = facts_for(&managed_ca(), &stranger);
    assert!(refused_on_first_use(&proxy, &w, Some(&stranger)).await);
    assert!(
        tls_connect(&proxy, &w.server, "log-unknown.test", None, b"http/1.1")
            .await
            .is_err()
    );
    // The server side may log a moment after the client saw the alert.
    let mut failures = Vec::new();
    for _ in 0..50 {
        failures = capture.events("portcullis::handshake", "sni", "log");
        if failures.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert_eq!(failures[0]["reason"], "client_cert_required");
    assert_eq!(failures[0]["sni"], "log.test");
    assert_eq!(failures[0]["client_ip"], "127.0.0.1");
    assert_eq!(failures[0]["cert_subject"], "");
    assert_eq!(failures[1]["reason"], "client_cert_invalid");
    assert_eq!(failures[1]["cert_subject"], sf.cert_subject_dn_rfc2253);
    assert!(failures[1]["cert_subject"].contains("CN=stranger"), "{:?}", failures[1]);
    assert_eq!(failures[1]["cert_serial"], sf.cert_serial);
    assert_eq!(failures[1]["cert_fingerprint_sha256"], sf.cert_fingerprint_sha256);
    assert_eq!(failures[1]["verify_error"], "unable to get local issuer certificate");
    assert_eq!(failures[0]["verify_error"], "");
    assert_eq!(failures[2]["reason"], "unknown_sni");
    assert_eq!(failures[2]["sni"], "log-unknown.test");
    // The refusals count by hostname and why, beside the accepted certificate.
    let m = metric_values();
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(
        get("portcullis_client_cert_total{host=log.test,status=ok}"),
        1.0,
        "{m:#?}"
    );
    assert_eq!(get("portcullis_client_cert_total{host=log.test,status=absent}"), 1.0);
    assert_eq!(get("portcullis_client_cert_total{host=log.test,status=untrusted}"), 1.0);
}

/// Whether `log.test` refuses this client: at the handshake, or (TLS 1.3, where the client
/// finishes first) by closing the connection instead of answering its first request.
async fn refused_on_first_use(proxy: &Proxy, w: &World, cert: Option<&ClientCert>) -> bool {
    match tls_connect(proxy, &w.server, "log.test", cert, b"http/1.1").await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(b"GET / HTTP/1.1\r\nHost: log.test\r\n\r\n").await;
            let mut buf = [0u8; 64];
            !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
        }
    }
}

static RECORDER: std::sync::OnceLock<metrics_util::debugging::Snapshotter> = std::sync::OnceLock::new();

/// The one process-wide recorder; other tests record into it too, so assertions use labels only
/// this test produces, or lower bounds.
fn snapshotter() -> &'static metrics_util::debugging::Snapshotter {
    RECORDER.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("a metrics recorder is already installed");
        snapshotter
    })
}

/// Counter and gauge values by `name{k=v,...}` (labels sorted), since the last call.
fn metric_values() -> HashMap<String, f64> {
    use metrics_util::debugging::DebugValue;
    let mut out = HashMap::new();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        #[allow(clippy::cast_precision_loss)]
        let v = match value {
            DebugValue::Counter(c) => c as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(h) => h.len() as f64,
        };
        out.insert(name, v);
    }
    out
}

#[tokio::test]
async fn metrics_move() {
    let _ = metric_values();
    let w = World {
        ca: managed_ca(),
        server: server_pki(&["metrics.test", "metrics-down.test"]),
        origin: start_origin().await,
    };
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let mut down = HostSpec::new("metrics-down.test", &w.ca);
    down.origin = Some(Origin::new(&format!("http://{dead}"), false, None, false).unwrap());
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("metrics.test", &w.ca), down],
    ))
    .await;
    crate::record_snapshot(42);
    let good = issue(&w.ca, "good", SubjectAltNames::default());

    let mut c = h2(&proxy, &w.server, "metrics.test", Some(&good)).await;
    assert_eq!(c.get("metrics.test", "/api").await.0, StatusCode::OK);
    assert_eq!(c.get("metrics.test", "/x").await.0, StatusCode::OK);
    assert_eq!(c.get("other.test", "/x").await.0, StatusCode::MISDIRECTED_REQUEST);
    let mut anon = h1(&proxy, &w.server, "metrics.test", None).await;
    assert_eq!(anon.get("metrics.test", "/api", &[]).await.0, StatusCode::FORBIDDEN);
    let mut d = h1(&proxy, &w.server, "metrics-down.test", None).await;
    assert_eq!(d.get("metrics-down.test", "/x", &[]).await.0, StatusCode::BAD_GATEWAY);
    let _ = tls_connect(&proxy, &w.server, "unknown.test", None, b"http/1.1").await;
    // A host removed from the configuration is counted as `_unknown`, not under its old name.
    let mut only_down = HostSpec::new("metrics-down.test", &w.ca);
    only_down.origin = Some(Origin::new(&format!("http://{dead}"), false, None, false).unwrap());
    proxy
        .snapshot
        .store(Arc::new(build_snapshot(2, &w.server, w.origin, vec![only_down])));
    assert_eq!(c.get("metrics.test", "/x").await.0, StatusCode::MISDIRECTED_REQUEST);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let m = metric_values();
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(
        get("portcullis_requests_total{action=allow,host=metrics.test}"),
        2.0,
        "{m:#?}"
    );
    assert_eq!(
        get("portcullis_requests_total{action=misdirected,host=metrics.test}"),
        1.0
    );
    assert_eq!(get("portcullis_requests_total{action=block,host=metrics.test}"), 1.0);
    assert!(get("portcullis_requests_total{action=misdirected,host=_unknown}") >= 1.0);
    assert_eq!(
        get("portcullis_requests_total{action=error,host=metrics-down.test}"),
        1.0
    );
    assert_eq!(
        get("portcullis_upstream_errors_total{host=metrics-down.test,kind=connect}"),
        1.0
    );
    assert_eq!(get("portcullis_request_duration_seconds{host=metrics.test}"), 4.0);
    assert!(get("portcullis_handshakes_total{reason=ok,result=ok}") >= 3.0);
    assert!(get("portcullis_handshakes_total{reason=unknown_sni,result=failed}") >= 1.0);
    assert_eq!(
        get("portcullis_client_cert_total{host=metrics.test,status=ok}"),
        1.0,
        "{m:#?}"
    );
    assert_eq!(
        get("portcullis_client_cert_total{host=metrics.test,status=absent}"),
        1.0
    );
    assert_eq!(
        get("portcullis_client_cert_total{host=metrics-down.test,status=absent}"),
        1.0
    );
    assert_eq!(get("portcullis_snapshot_generation{}"), 42.0);
    assert!(m.contains_key("portcullis_connections_open{}"));
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 abuse

/// One HTTP/2 frame: 9-byte header, then the payload.
pub(super) fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The frames in `bytes` as (type, flags, payload), in order; a partial frame at the end is left
/// out.
pub(super) fn h2_frames(bytes: &[u8]) -> Vec<(u8, u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        if rest.len() < 9 + len {
            break;
        }
        out.push((rest[3], rest[4], &rest[9..9 + len]));
        rest = &rest[9 + len..];
    }
    out
}

#[tokio::test]
async fn rapid_reset_gets_goaway_and_the_proxy_stays_up() {
    let w = world().await;
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let mut tls = tls_connect(&proxy, &w.server, "api.test", None, b"h2").await.unwrap();

    // Raw frames, so nothing on the client side is clever about it: the preface, empty
    // SETTINGS, then HEADERS immediately followed by RST_STREAM(CANCEL), 100 times (five times the
    // pending-accept reset limit), all in one write; after that the client only reads.
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    // GET https://api.test/slow: static-table :method GET, :scheme https, :path /, and
    // :authority as a literal without indexing (so every block is the same).
    let mut block = vec![0x82, 0x87, 0x84, 0x01, 0x08];
    block.extend_from_slice(b"api.test");
    for i in 0..100u32 {
        let stream = 2 * i + 1;
        // END_STREAM | END_HEADERS
        out.extend(h2_frame(0x1, 0x5, stream, &block));
        out.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes()));
    }
    tls.write_all(&out).await.unwrap();
    tls.flush().await.unwrap();

    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n) = tls.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let goaway = h2_frames(&seen)
        .into_iter()
        .rev()
        .find(|(kind, _, payload)| *kind == 0x7 && payload.len() >= 8)
        .map(|(_, _, payload)| u32::from_be_bytes(payload[4..8].try_into().unwrap()));
    // 0xb: ENHANCE_YOUR_CALM.
    assert_eq!(
        goaway,
        Some(0xb),
        "no GOAWAY(ENHANCE_YOUR_CALM) in {} bytes",
        seen.len()
    );

    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("api.test", "/public").await.0, StatusCode::OK);
}
