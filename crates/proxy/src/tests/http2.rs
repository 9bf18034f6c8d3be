//! The proxy's HTTP/2 sides: keep-alive PINGs on client connections (raw frames, so the client
//! can refuse to answer), and h2c origins (connections shared by requests, replaced when the
//! origin closes them, request bodies streamed while the response is read).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::limits::{h2_frame as frame, h2_frames};
use super::*;

#[tokio::test]
async fn a_client_that_does_not_answer_pings_is_closed() {
    let w = world().await;
    let config = ProxyConfig {
        h2_keep_alive_interval: Duration::from_millis(200),
        h2_keep_alive_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(30),
        ..ProxyConfig::default()
    };
    let proxy = api_proxy(&w, config).await;

    // A client that sends the preface and its SETTINGS (and acknowledges the proxy's), then
    // only reads.
    let mut tls = tls_connect(&proxy, &w.server, "api.test", None, b"h2").await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x4, 0x1, 0, &[]));
    tls.write_all(&out).await.unwrap();
    tls.flush().await.unwrap();
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open after 5 s");
    let types: Vec<(u8, u8)> = h2_frames(&seen)
        .into_iter()
        .map(|(kind, flags, _)| (kind, flags))
        .collect();
    // PING (type 6) without the ACK flag: the proxy's own.
    assert!(types.contains(&(0x6, 0)), "no PING from the proxy: {types:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "closed before the PING could time out"
    );

    // hyper's client answers PINGs: its connection outlives many intervals.
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("api.test", "/public").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.get("api.test", "/public").await.0, StatusCode::OK);
}

/// An h2c origin that answers one request per connection (then GOAWAY and close), counting
/// the connections it accepted.
async fn start_one_shot_h2c_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                if let Some(Ok((_req, mut respond))) = conn.accept().await {
                    let resp = Response::builder().status(200).body(()).unwrap();
                    if let Ok(mut tx) = respond.send_response(resp, false) {
                        let _ = tx.send_data(Bytes::from(format!("connection {n}")), true);
                    }
                }
                conn.graceful_shutdown();
                while conn.accept().await.is_some() {}
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn an_h2c_origin_that_closes_its_connection_is_reconnected() {
    let w = world().await;
    let (origin, accepted) = start_one_shot_h2c_origin().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.origin = Some(Origin::new(&format!("http://{origin}"), true, None, false).unwrap());
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    for n in 1..=3 {
        let (status, _, body) = c.get("api.test", "/public").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, format!("connection {n}").as_str())
        );
        // Time for the origin's GOAWAY to arrive before the next request.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn h2c_origin_connections_are_shared_by_requests() {
    let w = world().await;
    let mut spec = HostSpec::new("grpc.test", &w.ca);
    spec.h2c = true;
    let accepted = Arc::new(AtomicUsize::new(0));
    // A TCP relay in front of the echo origin, counting connections.
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let count = accepted.clone();
    let echo = w.origin;
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = relay.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(echo).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    spec.origin = Some(Origin::new(&format!("http://{relay_addr}"), true, None, false).unwrap());
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(h2(&proxy, &w.server, "grpc.test", None).await);
    }
    for c in &mut clients {
        for _ in 0..3 {
            let (status, _, _, trailers) = c.grpc("grpc.test", "/other.Service/Call").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(trailers.unwrap()["grpc-status"], "0");
        }
    }
    // Nine calls from three clients on one origin connection (tests run on one proxy thread).
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// The request body keeps flowing to an h2c origin after its response has started: the origin
/// echoes each chunk as it arrives, and the client sends the next only after reading the echo.
#[tokio::test]
async fn h2c_request_and_response_bodies_stream_both_ways() {
    let w = world().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        let resp = Response::builder().status(200).body(()).unwrap();
                        let Ok(mut tx) = respond.send_response(resp, false) else {
                            return;
                        };
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            let _ = tx.send_data(chunk, false);
                        }
                        let mut trailers = HeaderMap::new();
                        trailers.insert("x-done", HeaderValue::from_static("yes"));
                        let _ = tx.send_trailers(trailers);
                    });
                }
            });
        }
    });
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.origin = Some(Origin::new(&format!("http://{origin}"), true, None, false).unwrap());
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let c = h2(&proxy, &w.server, "api.test", None).await;

    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let body = super::limits::ChannelBody(rx).boxed();
    let req = Request::post("https://api.test/public").body(body).unwrap();
    let mut sender = c.0.clone();
    let resp = tokio::time::timeout(Duration::from_secs(5), async {
        tx.send(Bytes::from_static(b"one")).unwrap();
        sender.send_request(req).await.unwrap()
    })
    .await
    .expect("no response head while the request body is open");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    for word in ["one", "two", "three"] {
        if word != "one" {
            tx.send(Bytes::from(word)).unwrap();
        }
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("echo did not arrive")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), word);
    }
    drop(tx);
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.trailers().unwrap()["x-done"], "yes");
}
