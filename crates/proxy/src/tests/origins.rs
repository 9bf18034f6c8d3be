//! Hosts with several origin servers: steering, passive health, and which requests go to the next server
//! when connecting fails.

use super::*;
use crate::Steering;

/// An origin that answers every request with its `name` in `x-served-by`, and counts them.
async fn named_origin(name: &'static str) -> SocketAddr {
    origin_with(move |req: Request<Incoming>| async move {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut resp = Response::new(Full::new(body).boxed());
        resp.headers_mut().insert("x-served-by", HeaderValue::from_static(name));
        Ok::<_, Infallible>(resp)
    })
    .await
}

/// An address nothing listens on.
async fn dead_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn origin_of(servers: &[SocketAddr], steering: Steering, http2: bool) -> Origin {
    let mut origin = Origin::new(&format!("http://{}", servers[0]), http2, None, false).unwrap();
    for s in &servers[1..] {
        origin.add_server(&format!("http://{s}")).unwrap();
    }
    origin.steering = steering;
    origin
}

fn served_by(headers: &HeaderMap) -> String {
    headers
        .get("x-served-by")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn post(c: &mut H1, body: &'static str) -> (StatusCode, HeaderMap, String) {
    let req = Request::post("/p")
        .header("host", "api.test")
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .unwrap();
    read(c.0.send_request(req).await.unwrap()).await
}

#[tokio::test]
async fn round_robin_spreads_requests_and_passes_over_a_dead_server() {
    let w = world().await;
    let (a, b, dead) = (named_origin("a").await, named_origin("b").await, dead_address().await);
    let origin = origin_of(&[dead, a, b], Steering::RoundRobin, false);
    let spec = HostSpec {
        origin: Some(origin),
        ..HostSpec::new("api.test", &w.ca)
    };
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    // The first request's turn is the dead server's: it goes on to the next one, not 502.
    let (status, headers, _) = c.get("api.test", "/public", &[]).await;
    assert_eq!((status, served_by(&headers)), (StatusCode::OK, "a".into()));
    // From then on the dead server gives up its turns, and the other two share evenly.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (status, headers, _) = c.get("api.test", "/public", &[]).await;
        assert_eq!(status, StatusCode::OK);
        seen.push(served_by(&headers));
    }
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "b").count(), 3, "{seen:?}");
    let host = proxy.snapshot.load().hosts["api.test"].clone();
    assert_eq!(host.origin.servers_up(), [false, true, true]);

    // With the dead server known, requests with a body avoid it too.
    for _ in 0..4 {
        let (status, headers, body) = post(&mut c, "payload").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "payload"));
        assert!(["a", "b"].contains(&served_by(&headers).as_str()));
    }
}

#[tokio::test]
async fn failover_uses_the_standby_only_while_the_first_server_is_down() {
    let w = world().await;
    let (standby, dead) = (named_origin("standby").await, dead_address().await);
    let spec = HostSpec {
        origin: Some(origin_of(&[dead, standby], Steering::Failover, false)),
        ..HostSpec::new("api.test", &w.ca)
    };
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;

    // A request with a body that meets the dead server first goes on to the standby with its body: nothing of
    // it was sent. The dead server is marked down, so the next ones go straight to the standby.
    for body in ["first", "second"] {
        let (status, headers, echoed) = post(&mut c, body).await;
        assert_eq!(
            (status, served_by(&headers), echoed.as_str()),
            (StatusCode::OK, "standby".into(), body)
        );
    }
    let (status, headers, _) = c.get("api.test", "/public", &[]).await;
    assert_eq!((status, served_by(&headers)), (StatusCode::OK, "standby".into()));
    let host = proxy.snapshot.load().hosts["api.test"].clone();
    assert_eq!(host.origin.servers_up(), [false, true]);

    // The same over HTTP/2 with a large body, on a fresh snapshot (fresh health) so that the dead server is met
    // first again.
    let spec = HostSpec {
        origin: Some(origin_of(&[dead, standby], Steering::Failover, false)),
        ..HostSpec::new("api.test", &w.ca)
    };
    proxy
        .snapshot
        .store(Arc::new(build_snapshot(2, &w.server, w.origin, vec![spec])));
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    let big = "y".repeat(200 * 1024);
    let req = Request::put("https://api.test/p")
        .body(Full::new(Bytes::from(big.clone())).boxed())
        .unwrap();
    let (status, headers, echoed) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!((status, served_by(&headers)), (StatusCode::OK, "standby".into()));
    assert!(echoed == big, "the whole body arrived ({} bytes)", echoed.len());

    // And to h2c origin servers, where hyper's HTTP/2 client sends the body from a task of its own.
    let spec = HostSpec {
        origin: Some(origin_of(&[dead, standby], Steering::Failover, true)),
        ..HostSpec::new("api.test", &w.ca)
    };
    proxy
        .snapshot
        .store(Arc::new(build_snapshot(3, &w.server, w.origin, vec![spec])));
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    let (status, headers, echoed) = post(&mut c, "over h2c").await;
    assert_eq!(
        (status, served_by(&headers), echoed.as_str()),
        (StatusCode::OK, "standby".into(), "over h2c")
    );
}

#[tokio::test]
async fn h2c_origins_pass_over_a_dead_server_too() {
    let w = world().await;
    let (a, dead) = (named_origin("a").await, dead_address().await);
    let spec = HostSpec {
        origin: Some(origin_of(&[dead, a], Steering::Failover, true)),
        ..HostSpec::new("api.test", &w.ca)
    };
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    let (status, headers, _) = c.get("api.test", "/public").await;
    assert_eq!((status, served_by(&headers)), (StatusCode::OK, "a".into()));
    let host = proxy.snapshot.load().hosts["api.test"].clone();
    assert_eq!(host.origin.servers_up(), [false, true]);
}

#[test]
fn every_server_of_an_origin_has_the_same_scheme_and_appears_once() {
    let mut origin = Origin::new("http://a:1", false, None, true).unwrap();
    origin.add_server("http://b:1").unwrap();
    let err = origin.add_server("https://c:1").unwrap_err().to_string();
    assert!(err.contains("must use http://"), "{err}");
    let err = origin.add_server("http://a:1").unwrap_err().to_string();
    assert!(err.contains("listed twice"), "{err}");
    let names: Vec<_> = origin.servers().iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["a:1", "b:1"]);
}

#[test]
fn health_carries_over_to_a_rebuilt_origin_through_the_book() {
    let book = crate::HealthBook::new();
    let mut first = origin_of(
        &["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()],
        Steering::RoundRobin,
        false,
    );
    first.track_health(&book, "api.test");
    first.connected(0, "api.test", Some(&"refused"));
    let mut rebuilt = origin_of(
        &["127.0.0.1:2".parse().unwrap(), "127.0.0.1:1".parse().unwrap()],
        Steering::RoundRobin,
        false,
    );
    assert_eq!(rebuilt.servers_up(), [true, true], "a fresh origin knows nothing");
    rebuilt.track_health(&book, "api.test");
    assert_eq!(rebuilt.servers_up(), [true, false]);
    let mut other = origin_of(&["127.0.0.1:1".parse().unwrap()], Steering::RoundRobin, false);
    other.add_server("http://127.0.0.1:2").unwrap();
    other.track_health(&book, "other.test");
    assert_eq!(
        other.servers_up(),
        [true, true],
        "another host's view of the same server is its own"
    );
}

/// An origin named `name` whose `/healthz` answers the status in `health` (every other path 200), or 421 to a
/// check without `Host: backend.internal`, as a virtual host by that name would.
async fn checked_origin(name: &'static str, health: Arc<std::sync::atomic::AtomicU16>) -> SocketAddr {
    origin_with(move |req: Request<Incoming>| {
        let health = health.clone();
        async move {
            let named = req.headers().get("host").is_some_and(|h| h == "backend.internal");
            let status = if req.uri().path() == "/healthz" && !named {
                StatusCode::MISDIRECTED_REQUEST
            } else if req.uri().path() == "/healthz" {
                StatusCode::from_u16(health.load(std::sync::atomic::Ordering::Relaxed)).unwrap()
            } else {
                StatusCode::OK
            };
            let mut resp = Response::new(Full::new(Bytes::new()).boxed());
            *resp.status_mut() = status;
            resp.headers_mut().insert("x-served-by", HeaderValue::from_static(name));
            Ok::<_, Infallible>(resp)
        }
    })
    .await
}

/// Waits up to 5 s for the host's servers to be up as `want`.
async fn until_up(proxy: &Proxy, want: &[bool]) {
    for _ in 0..100 {
        if proxy.snapshot.load().hosts["api.test"].origin.servers_up() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "servers up: {:?}, wanted {want:?}",
        proxy.snapshot.load().hosts["api.test"].origin.servers_up()
    );
}

#[tokio::test]
async fn health_checks_take_a_failing_server_out_and_bring_it_back() {
    use std::sync::atomic::{AtomicU16, Ordering};
    let w = world().await;
    let (good, sick) = (Arc::new(AtomicU16::new(200)), Arc::new(AtomicU16::new(503)));
    let (a, b) = (checked_origin("a", good).await, checked_origin("b", sick.clone()).await);
    let mut origin = origin_of(&[a, b], Steering::RoundRobin, false);
    origin.health_check = Some(crate::HealthCheck {
        path: "/healthz".parse().unwrap(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
    });
    // The checks carry the hostname's Host override, as its requests do.
    origin.host_header = Some(HeaderValue::from_static("backend.internal"));
    let spec = HostSpec {
        origin: Some(origin),
        ..HostSpec::new("api.test", &w.ca)
    };
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(crate::run_health_checks(
        proxy.snapshot.clone(),
        ProxyConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));

    // b answers 503 to its check: after two, it takes no requests, though it would answer them.
    until_up(&proxy, &[true, false]).await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    for _ in 0..4 {
        let (status, headers, _) = c.get("api.test", "/public", &[]).await;
        assert_eq!((status, served_by(&headers)), (StatusCode::OK, "a".into()));
    }
    // Healthy again: back in turn.
    sick.store(200, Ordering::Relaxed);
    until_up(&proxy, &[true, true]).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(served_by(&c.get("api.test", "/public", &[]).await.1));
    }
    assert_eq!(seen.iter().filter(|s| *s == "b").count(), 2, "{seen:?}");
    let _ = stop.send(());
}

#[tokio::test]
async fn origin_server_gauges_show_which_servers_take_requests() {
    let w = world().await;
    let (a, dead) = (named_origin("a").await, dead_address().await);
    let origin = origin_of(&[dead, a], Steering::RoundRobin, false);
    origin.connected(0, "api.test", Some(&"refused"));
    let one = HostSpec::new("other.test", &w.ca);
    let spec = HostSpec {
        origin: Some(origin),
        ..HostSpec::new("api.test", &w.ca)
    };
    let snapshot = build_snapshot(1, &w.server, w.origin, vec![spec, one]);
    let text = crate::origin_server_gauges(&snapshot);
    assert!(text.starts_with("# HELP portcullis_origin_server_up "), "{text}");
    assert!(
        text.contains(&format!(
            "portcullis_origin_server_up{{host=\"api.test\",server=\"{dead}\"}} 0\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "portcullis_origin_server_up{{host=\"api.test\",server=\"{a}\"}} 1\n"
        )),
        "{text}"
    );
    assert!(
        !text.contains("other.test"),
        "hosts with one server have no series: {text}"
    );
    assert_eq!(crate::origin_server_gauges(&Snapshot::new(1)), "");
}

/// A held body counts as read from its first poll on (then it is never sent to another server); asking whether it
/// is at its end or how long it is does not count.
#[tokio::test]
async fn a_held_body_knows_once_it_was_read() {
    let held = Arc::new(crate::body::HeldBody::new(crate::body::RequestBody::Empty));
    let mut body = crate::body::RequestBody::Held(held.clone());
    assert!(hyper::body::Body::is_end_stream(&body));
    assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(0));
    assert!(!held.was_read());
    assert!(body.frame().await.is_none());
    assert!(held.was_read());
}
