//! The proxy's own HTTP/1.1 server side, from a raw TLS client: interim responses, pipelining,
//! HTTP/1.0, chunked uploads with trailers, strict framing, HEAD, unread bodies, and HTTP/2 with
//! prior knowledge.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::{NormalizationScope, NormalizationType, UrlNormalization};

const WAIT: Duration = Duration::from_secs(5);

async fn raw(proxy: &Proxy, w: &World) -> TlsStream<TcpStream> {
    tls_connect(proxy, &w.server, "api.test", None, b"http/1.1")
        .await
        .unwrap()
}

/// Reads until `n` complete responses (heads and `content-length` bodies) have arrived.
async fn responses(tls: &mut TlsStream<TcpStream>, n: usize) -> Vec<(String, String)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < n {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = end {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .map_or(0, |v| v.trim().parse().unwrap());
            let length = if head.starts_with("HTTP/1.1 100") { 0 } else { length };
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                buf.drain(..end + 4 + length);
                out.push((head, body));
                continue;
            }
        }
        let n = tokio::time::timeout(WAIT, tls.read(&mut chunk))
            .await
            .expect("no response")
            .unwrap();
        assert!(
            n > 0,
            "connection closed after {} responses: {:?}",
            out.len(),
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    out
}

/// The connection is closed by the proxy (after what it already sent).
async fn closed(tls: &mut TlsStream<TcpStream>) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(WAIT, tls.read_to_end(&mut rest)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

fn echoed_body(body: &str) -> String {
    let json: Json = serde_json::from_str(body).unwrap();
    json["body"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn expect_continue_pipelining_and_http10() {
    let w = world().await;
    let proxy = api_proxy(&w, ProxyConfig::default()).await;

    // `Expect: 100-continue`: the interim response comes before the body is sent.
    let mut tls = raw(&proxy, &w).await;
    tls.write_all(b"PUT /public HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let interim = responses(&mut tls, 1).await;
    assert!(interim[0].0.starts_with("HTTP/1.1 100 Continue"), "{interim:?}");
    tls.write_all(b"hello").await.unwrap();
    let (head, body) = responses(&mut tls, 1).await.remove(0);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(echoed_body(&body), "hello");

    // Two requests in one write: two responses, in order, on the same connection.
    tls.write_all(
        b"POST /public HTTP/1.1\r\nHost: api.test\r\nContent-Length: 3\r\n\r\none\
          POST /public HTTP/1.1\r\nHost: api.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\ntwo",
    )
    .await
    .unwrap();
    let both = responses(&mut tls, 2).await;
    assert_eq!(echoed_body(&both[0].1), "one");
    assert_eq!(echoed_body(&both[1].1), "two");
    assert!(both[1].0.contains("connection: close"), "{both:?}");
    assert!(closed(&mut tls).await, "Connection: close is honoured");

    // HTTP/1.0 without keep-alive: one response with a length, then the connection closes.
    let mut tls = raw(&proxy, &w).await;
    tls.write_all(b"GET /public HTTP/1.0\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = responses(&mut tls, 1).await.remove(0);
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.contains("content-length:"),
        "{head}"
    );
    assert!(body.contains("\"method\":\"GET\""), "{body}");
    assert!(closed(&mut tls).await);
    // HTTP/1.0 with keep-alive stays open.
    let mut tls = raw(&proxy, &w).await;
    for _ in 0..2 {
        tls.write_all(b"GET /public HTTP/1.0\r\nHost: api.test\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = responses(&mut tls, 1).await.remove(0);
        assert!(head.contains("connection: keep-alive"), "{head}");
    }
}

/// A request with `Expect: 100-continue` answered before its body was asked for: the client may or may not send the
/// body (RFC 9110 §10.1.1), so what follows cannot be read as a next request; the connection ends instead.
#[tokio::test]
async fn a_refused_expect_continue_request_ends_the_connection() {
    let w = world().await;
    let proxy = api_proxy(&w, ProxyConfig::default()).await;
    let mut tls = raw(&proxy, &w).await;
    // Blocked by the rules (no certificate on /api) before the body is read.
    tls.write_all(b"POST /api HTTP/1.1\r\nHost: api.test\r\nContent-Length: 39\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = responses(&mut tls, 1).await.remove(0);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    // A client that skips the body and sends its next request: never read as a request of its own.
    let _ = tls.write_all(b"GET /public HTTP/1.1\r\nHost: api.test\r\n\r\n").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, tls.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection closes");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

    // With the body asked for and sent, the connection stays open.
    let mut tls = raw(&proxy, &w).await;
    for _ in 0..2 {
        tls.write_all(b"PUT /public HTTP/1.1\r\nHost: api.test\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
            .await
            .unwrap();
        assert!(responses(&mut tls, 1).await[0].0.starts_with("HTTP/1.1 100"));
        tls.write_all(b"hi").await.unwrap();
        let (head, _) = responses(&mut tls, 1).await.remove(0);
        assert!(
            head.starts_with("HTTP/1.1 200") && !head.contains("connection: close"),
            "{head}"
        );
    }
}

/// A head that arrives a byte at a time (one TLS record each) is parsed when its lines end, whole, and answered.
#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_answered() {
    let w = world().await;
    let proxy = api_proxy(&w, ProxyConfig::default()).await;
    let mut tls = raw(&proxy, &w).await;
    for byte in b"GET /public HTTP/1.1\r\nHost: api.test\r\nX-A: 1\r\n\r\n" {
        tls.write_all(&[*byte]).await.unwrap();
        tls.flush().await.unwrap();
    }
    let (head, body) = responses(&mut tls, 1).await.remove(0);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("\"x-a\":[\"1\"]"), "{body}");
    // Bare LFs end lines too.
    for byte in b"GET /public HTTP/1.1\nHost: api.test\n\n" {
        tls.write_all(&[*byte]).await.unwrap();
        tls.flush().await.unwrap();
    }
    assert!(responses(&mut tls, 1).await[0].0.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn chunked_uploads_head_requests_and_unread_bodies() {
    let w = world().await;
    let proxy = api_proxy(&w, ProxyConfig::default()).await;
    let mut tls = raw(&proxy, &w).await;

    // A chunked body with an extension and a trailer reaches the origin whole.
    tls.write_all(
        b"POST /public HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 1\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, body) = responses(&mut tls, 1).await.remove(0);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(echoed_body(&body), "hello world");

    // HEAD: the length of the GET, no body, and the connection goes on.
    tls.write_all(b"HEAD /public HTTP/1.1\r\nHost: api.test\r\nX-Head: yes\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(b"GET /public HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    while got.windows(4).filter(|w| *w == b"\r\n\r\n").count() < 2 || !got.ends_with(b"}") {
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    let (head_resp, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head_resp.contains("content-length:"), "{head_resp}");
    assert!(
        rest.starts_with("HTTP/1.1 200 OK"),
        "the HEAD response has no body: {rest}"
    );

    // A blocked request's small body is read and dropped; the connection stays usable.
    tls.write_all(b"POST /api HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let (head, _) = responses(&mut tls, 1).await.remove(0);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    tls.write_all(b"GET /public HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = responses(&mut tls, 1).await.remove(0);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let w = world().await;
    let proxy = api_proxy(&w, ProxyConfig::default()).await;
    for (request, status) in [
        (
            &b"POST /public HTTP/1.1\r\nHost: api.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            "400",
        ),
        (b"POST /public HTTP/1.1\r\nHost: api.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "400"),
        (b"POST /public HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "501"),
        (b"GET /public HTTP/3.0\r\nHost: api.test\r\n\r\n", "505"),
        (b"GET /public HTTP/1.1\r\nHost: api.test\r\nbad header\r\n\r\n", "400"),
    ] {
        let mut tls = raw(&proxy, &w).await;
        tls.write_all(request).await.unwrap();
        let (head, _) = responses(&mut tls, 1).await.remove(0);
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(closed(&mut tls).await);
    }
    // A chunked body that breaks its framing mid-way ends the connection, not the proxy.
    let mut tls = raw(&proxy, &w).await;
    tls.write_all(b"POST /public HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX")
        .await
        .unwrap();
    assert!(closed(&mut tls).await);
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("api.test", "/public", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn http2_with_prior_knowledge_and_no_alpn() {
    let w = world().await;
    let proxy = api_proxy(&w, ProxyConfig::default()).await;
    let mut config = (*client_config(&w.server, None, b"h2", true)).clone();
    config.alpn_protocols.clear();
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("api.test").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut c = H2(sender);
    let (status, _, body) = c.get("api.test", "/public").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("HTTP/1.1"), "forwarded to the HTTP/1.1 origin: {body}");
}

/// An origin on raw TCP that answers every request head with `reply`, then closes the connection
/// if `close_after` (without saying so, as when a keep-alive timeout strikes); counts connections.
async fn raw_origin(reply: &'static [u8], close_after: bool) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    let Ok(n) = tcp.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        if tcp.write_all(reply).await.is_err() || close_after {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn origin_connections_are_reused_and_stale_ones_replaced() {
    use std::sync::atomic::Ordering;
    let w = world().await;
    let get3 = |origin: SocketAddr| {
        let w = &w;
        async move {
            let proxy = start_proxy(build_snapshot(
                1,
                &w.server,
                origin,
                vec![HostSpec::new("api.test", &w.ca)],
            ))
            .await;
            let mut c = h1(&proxy, &w.server, "api.test", None).await;
            let mut bodies = Vec::new();
            for _ in 0..3 {
                let (status, _, body) = c.get("api.test", "/public", &[]).await;
                assert_eq!(status, StatusCode::OK);
                bodies.push(body);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            bodies
        }
    };

    // Kept alive: one origin connection for three requests.
    let (origin, connections) = raw_origin(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false).await;
    assert_eq!(get3(origin).await, ["ok", "ok", "ok"]);
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    // The origin closes each connection after its response without saying so: the pooled
    // connection is found closed and replaced, and no request fails.
    let (origin, connections) = raw_origin(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true).await;
    assert_eq!(get3(origin).await, ["ok", "ok", "ok"]);
    assert_eq!(connections.load(Ordering::SeqCst), 3);

    // A body delimited by the origin's close arrives whole; the connection is not reused.
    let (origin, connections) = raw_origin(b"HTTP/1.1 200 OK\r\n\r\nuntil close", true).await;
    assert_eq!(get3(origin).await, ["until close", "until close", "until close"]);
    assert_eq!(connections.load(Ordering::SeqCst), 3);

    // Interim responses are skipped; a chunked body with a trailer is relayed.
    let (origin, _) = raw_origin(
        b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(get3(origin).await, ["ok", "ok", "ok"]);
}

/// A client that stops reading a response is cut off after the send timeout, not held forever.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    // An origin whose response never ends.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = tcp.read(&mut head).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                let chunk = [b"10000\r\n".as_slice(), &[b'x'; 0x10000], b"\r\n"].concat();
                while tcp.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let w = world().await;
    let proxy = start_proxy_with(
        build_snapshot(1, &w.server, origin, vec![HostSpec::new("api.test", &w.ca)]),
        ProxyConfig {
            h1_send_timeout: Duration::from_millis(300),
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut tls = raw(&proxy, &w).await;
    tls.write_all(b"GET /public HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    // Not reading while the socket buffers fill up and the proxy's write waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection is still open after {} bytes", got.len());
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&got[..got.len().min(100)])
    );
}

/// Sends `GET path` with the `api.test` host and returns the status line and the body.
async fn get_raw(tls: &mut TlsStream<TcpStream>, path: &str) -> (String, String) {
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (head, body) = responses(tls, 1).await.remove(0);
    (head.lines().next().unwrap_or("").to_owned(), body)
}

fn echoed_uri(body: &str) -> String {
    let json: Json = serde_json::from_str(body).unwrap();
    json["uri"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn url_normalization_keeps_path_rules_from_being_bypassed() {
    let w = world().await;
    let spec = |scope, kind, rules| HostSpec {
        normalization: UrlNormalization { scope, kind },
        rules,
        ..HostSpec::new("api.test", &w.ca)
    };

    // The default (Cloudflare's): the rules see the normalized path, the origin the path as sent.
    let proxy = api_proxy(&w, ProxyConfig::default()).await;
    let mut tls = raw(&proxy, &w).await;
    for path in [
        "/api",
        "/%61pi",
        "/%61%70%69",
        "/./api",
        "//api",
        "/x/../api",
        "/x/%2e%2E/api",
        "/.//api",
    ] {
        let (status, _) = get_raw(&mut tls, path).await;
        assert!(status.starts_with("HTTP/1.1 403"), "{path}: {status}");
    }
    let (status, body) = get_raw(&mut tls, "/x/%2e%2e/public?a=%61").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(echoed_uri(&body), "/x/%2e%2e/public?a=%61");
    let events = proxy.events.events();
    assert_eq!(events.len(), 8);
    // Security events keep the path as it was sent.
    assert_eq!(events[1].path, "/%61pi");
    // Backslashes, which some origins take for slashes, count as slashes.
    let (status, _) = get_raw(&mut tls, "/x\\..\\api").await;
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");

    // RFC 3986 alone does not merge slashes.
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![spec(
            NormalizationScope::Incoming,
            NormalizationType::Rfc3986,
            default_rules(),
        )],
    ))
    .await;
    let mut tls = raw(&proxy, &w).await;
    assert!(get_raw(&mut tls, "/%61pi").await.0.starts_with("HTTP/1.1 403"));
    assert!(get_raw(&mut tls, "//api").await.0.starts_with("HTTP/1.1 200"));

    // Normalization off: the rule sees the path as sent, as on Cloudflare with the setting off.
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![spec(
            NormalizationScope::None,
            NormalizationType::Cloudflare,
            default_rules(),
        )],
    ))
    .await;
    let mut tls = raw(&proxy, &w).await;
    assert!(get_raw(&mut tls, "/api").await.0.starts_with("HTTP/1.1 403"));
    assert!(get_raw(&mut tls, "/%61pi").await.0.starts_with("HTTP/1.1 200"));

    // Both: the origin gets the normalized path with the query as sent; `raw.*` fields keep
    // what the client sent.
    let rules = ruleset(&[
        (DEFAULT_RULE, Action::Block, None),
        (
            r#"raw.http.request.full_uri eq "https://api.test/%70ublic?a=1" or raw.http.request.uri.path eq "/%2E/public""#,
            Action::Block,
            None,
        ),
    ]);
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![spec(NormalizationScope::Both, NormalizationType::Cloudflare, rules)],
    ))
    .await;
    let mut tls = raw(&proxy, &w).await;
    let (status, body) = get_raw(&mut tls, "/x/%2e%2e//public?a=%61").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(echoed_uri(&body), "/public?a=%61");
    assert!(get_raw(&mut tls, "/%70ublic?a=1").await.0.starts_with("HTTP/1.1 403"));
    assert!(get_raw(&mut tls, "/%2E/public").await.0.starts_with("HTTP/1.1 403"));
    assert!(get_raw(&mut tls, "/%70ublic?a=2").await.0.starts_with("HTTP/1.1 200"));
    assert!(get_raw(&mut tls, "/%61pi").await.0.starts_with("HTTP/1.1 403"));
}

/// A TLS connection to the proxy that first sends `preamble` (a PROXY protocol header) on the TCP stream.
async fn raw_behind_balancer(proxy: &Proxy, w: &World, preamble: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    let mut tcp = TcpStream::connect(proxy.addr).await?;
    tcp.write_all(preamble).await?;
    tokio_rustls::TlsConnector::from(client_config(&w.server, None, b"http/1.1", true))
        .connect(ServerName::try_from("api.test").unwrap(), tcp)
        .await
}

#[tokio::test]
async fn client_addresses_come_from_the_proxy_protocol_of_trusted_balancers_only() {
    use crate::proxy_protocol::{TrustedProxies, v2_header};
    let w = world().await;
    let rules = ruleset(&[("ip.src eq 203.0.113.66", Action::Block, None)]);
    let spec = HostSpec {
        rules,
        ..HostSpec::new("api.test", &w.ca)
    };
    let config = ProxyConfig {
        proxy_protocol_from: TrustedProxies::parse(["127.0.0.0/8"]).unwrap(),
        ..ProxyConfig::default()
    };
    let proxy = start_proxy_with(build_snapshot(1, &w.server, w.origin, vec![spec]), config).await;
    let forwarded_for = |body: &str| header(&origin_headers(body), "x-forwarded-for").map(str::to_owned);

    // v2, as AWS NLB and HAProxy send it.
    let header = v2_header("203.0.113.7:4242".parse().unwrap(), proxy.addr);
    let mut tls = raw_behind_balancer(&proxy, &w, &header).await.unwrap();
    let (status, body) = get_raw(&mut tls, "/public").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(forwarded_for(&body).as_deref(), Some("203.0.113.7"));

    // v1, and the address reaches the rules and the security events.
    let mut tls = raw_behind_balancer(&proxy, &w, b"PROXY TCP4 203.0.113.66 127.0.0.1 5555 443\r\n")
        .await
        .unwrap();
    assert!(get_raw(&mut tls, "/public").await.0.starts_with("HTTP/1.1 403"));
    let events = proxy.events.events();
    assert_eq!(events.last().map(|e| e.client_ip.as_str()), Some("203.0.113.66"));

    // A balancer's health check (LOCAL) keeps the connection's own address.
    let mut local = v2_header("203.0.113.7:4242".parse().unwrap(), proxy.addr);
    local[12] = 0x20;
    let mut tls = raw_behind_balancer(&proxy, &w, &local).await.unwrap();
    let (_, body) = get_raw(&mut tls, "/public").await;
    assert_eq!(forwarded_for(&body).as_deref(), Some("127.0.0.1"));

    // From a trusted address the header is required, and a broken one ends the connection.
    assert!(raw_behind_balancer(&proxy, &w, b"").await.is_err());
    assert!(
        raw_behind_balancer(&proxy, &w, b"PROXY TCP4 nonsense\r\n")
            .await
            .is_err()
    );

    // From anywhere else no header is read: a client cannot state its own address.
    let direct = api_proxy(&w, ProxyConfig::default()).await;
    assert!(raw_behind_balancer(&direct, &w, &header).await.is_err());
    let mut tls = raw(&direct, &w).await;
    let (_, body) = get_raw(&mut tls, "/public").await;
    assert_eq!(forwarded_for(&body).as_deref(), Some("127.0.0.1"));
}

/// Behind an HTTP front proxy, the client's address is the first from the right of its `X-Forwarded-For` that is not
/// a front proxy: rules, security events and `True-Client-IP` see it, while `X-Forwarded-For` to the origin goes on
/// ending with the connection's address. From other addresses the header names nobody.
#[tokio::test]
async fn client_addresses_come_from_the_header_of_trusted_front_proxies_only() {
    use crate::client_ip::ClientIpHeader;
    use crate::proxy_protocol::TrustedProxies;
    let w = world().await;
    let spec = || {
        let mut spec = HostSpec {
            rules: ruleset(&[("ip.src eq 203.0.113.66", Action::Block, None)]),
            ..HostSpec::new("api.test", &w.ca)
        };
        spec.transforms.true_client_ip = true;
        spec
    };
    let config = |from: &[&str]| ProxyConfig {
        client_ip_header: Some(
            ClientIpHeader::new("X-Forwarded-For", TrustedProxies::parse(from.iter().copied()).unwrap()).unwrap(),
        ),
        ..ProxyConfig::default()
    };
    let proxy = start_proxy_with(
        build_snapshot(1, &w.server, w.origin, vec![spec()]),
        config(&["127.0.0.1", "10.0.0.0/8"]),
    )
    .await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    // The client put 203.0.113.66 first; a CDN and the front proxy appended what they saw.
    let (status, _, body) = c
        .get(
            "api.test",
            "/",
            &[("x-forwarded-for", "203.0.113.66, 198.51.100.4, 10.1.1.1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = origin_headers(&body);
    assert_eq!(header(&seen, "true-client-ip"), Some("198.51.100.4"));
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        Some("203.0.113.66, 198.51.100.4, 10.1.1.1, 127.0.0.1")
    );
    let (status, _, _) = c
        .get("api.test", "/", &[("x-forwarded-for", "198.51.100.4, 203.0.113.66")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let events = proxy.events.events();
    assert_eq!(events.last().map(|e| e.client_ip.as_str()), Some("203.0.113.66"));
    // No header, or one that names no address where the client's should be: the connection's address.
    for xff in [None, Some("203.0.113.66, garbage")] {
        let extra: Vec<(&str, &str)> = xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
        let (status, _, body) = c.get("api.test", "/", &extra).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&origin_headers(&body), "true-client-ip"), Some("127.0.0.1"));
    }

    let direct = start_proxy_with(
        build_snapshot(1, &w.server, w.origin, vec![spec()]),
        config(&["10.0.0.0/8"]),
    )
    .await;
    let mut c = h1(&direct, &w.server, "api.test", None).await;
    let (status, _, body) = c.get("api.test", "/", &[("x-forwarded-for", "203.0.113.66")]).await;
    assert_eq!(status, StatusCode::OK, "a client cannot name itself");
    assert_eq!(header(&origin_headers(&body), "true-client-ip"), Some("127.0.0.1"));
}

#[tokio::test]
async fn a_host_header_that_is_not_an_authority_is_refused() {
    let w = world().await;
    let proxy = api_proxy(&w, ProxyConfig::default()).await;
    for host in ["other.test:x", "api.test/evil", "a b"] {
        let mut tls = raw(&proxy, &w).await;
        tls.write_all(format!("GET /public HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, _) = responses(&mut tls, 1).await.remove(0);
        assert!(head.starts_with("HTTP/1.1 400"), "{host}: {head}");
    }
}
