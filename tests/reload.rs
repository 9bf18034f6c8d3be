//! Reloads under load: while clients send requests continuously through the real edge (kept-alive HTTP/1.1 and
//! HTTP/2 connections, and new connections per request), rules are added, disabled and enabled and an unrelated
//! certificate is revoked and reactivated through the CLI. No request that should succeed may fail, and the load's
//! own certificate is blocked within 100 ms of its revocation and let through again after its reactivation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{EdgeConn, Server, issue_client_cert, keep_alive_origin, ok, tls_client_config};

/// What one load request saw.
struct Sample {
    sent: Instant,
    done: Instant,
    /// The status and whether the body was the expected one for it, or the error.
    outcome: Result<(u16, bool), String>,
}

const LOAD_PATH: &str = "/api";

/// Rounds of configuration changes, eight changes each.
const ROUNDS: usize = 8;

fn expected_body(status: u16, body: &str) -> bool {
    match status {
        200 => body == format!("origin saw {LOAD_PATH}"),
        403 => body.contains("403 Forbidden"),
        _ => false,
    }
}

/// Sends GET /api until `stop`, on one kept-alive connection (`fresh` false) or a new connection per request.
async fn load(
    edge_port: u16,
    config: Arc<rustls::ClientConfig>,
    h2: bool,
    fresh: bool,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut conn: Option<EdgeConn> = None;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let outcome = async {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(EdgeConn::connect(edge_port, config.clone(), h2).await?),
            };
            let (status, body) = c.get(LOAD_PATH).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, expected_body(status, &body)))
        }
        .await
        .map_err(|e| format!("{e:?}"));
        if outcome.is_err() || fresh {
            conn = None;
        }
        samples.push(Sample {
            sent,
            done: Instant::now(),
            outcome,
        });
    }
    samples
}

/// Probes `path` on a new connection with `config` until it answers `want` (up to 2 s); returns how long it took.
fn await_status(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    want: u16,
    what: &str,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = rt.block_on(async {
            let mut conn = EdgeConn::connect(server.edge_port, config.clone(), false).await?;
            conn.get(path).await
        });
        match got {
            Ok((status, _)) if status == want => return start.elapsed(),
            Ok(_) | Err(_) if start.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => panic!("{what}: {path} never answered {want}; last: {other:?}"),
        }
    }
}

/// The id of the zone's rule with exactly `expression`.
fn rule_id(server: &Server, expression: &str) -> String {
    let rules: serde_json::Value = serde_json::from_str(&ok(&server.cli(&["rule", "list", "--json"]))).expect("json");
    rules
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["expression"] == expression)
        .and_then(|r| r["id"].as_str())
        .unwrap_or_else(|| panic!("no rule {expression:?} in {rules}"))
        .to_owned()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn reloads_under_load_fail_no_request_and_a_revocation_bites_within_100_ms() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let origin = format!("http://127.0.0.1:{}", rt.block_on(keep_alive_origin()));
    let server = Server::start();
    ok(&server.cli(&["zone", "add", "localhost"]));
    ok(&server.cli(&["host", "add", "localhost", "--origin", &origin]));
    ok(&server.cli(&["mtls", "enable", "localhost"]));
    ok(&server.cli(&["rule", "add-mtls", "--path", LOAD_PATH]));
    let api_rule = rule_id(
        &server,
        r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}"#,
    );
    let load_id = issue_client_cert(&server, "load");
    let other_id = issue_client_cert(&server, "other");
    let identity = |cn: &str| {
        let dir = server.dir.path().join(cn);
        (dir.join("cert.pem"), dir.join("key.pem"))
    };
    let (load_cert, load_key) = identity("load");
    let (other_cert, other_key) = identity("other");
    let load_h1 = tls_client_config(&server, Some((&load_cert, &load_key)), &[b"http/1.1"]);
    let load_h2 = tls_client_config(&server, Some((&load_cert, &load_key)), &[b"h2"]);
    let other = tls_client_config(&server, Some((&other_cert, &other_key)), &[b"http/1.1"]);
    let anonymous = tls_client_config(&server, None, &[b"http/1.1"]);
    await_status(&rt, &server, &load_h1, LOAD_PATH, 200, "before the load");
    await_status(&rt, &server, &anonymous, LOAD_PATH, 403, "before the load");

    // The load: four kept-alive connections (two HTTP/1.1, two HTTP/2) and two clients that connect anew for every
    // request (so handshakes, too, meet every snapshot).
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = [
        (false, false),
        (true, false),
        (false, false),
        (true, false),
        (false, true),
        (true, true),
    ]
    .into_iter()
    .map(|(h2, fresh)| {
        let config = if h2 { load_h2.clone() } else { load_h1.clone() };
        rt.spawn(load(server.edge_port, config, h2, fresh, stop.clone()))
    })
    .collect();
    let load_started = Instant::now();

    // Phase 1: changes that must not disturb the load, each checked to have taken effect.
    let mut effect_times = Vec::new();
    for round in 0..ROUNDS {
        let path = format!("/blocked-{round}");
        let expression = format!(r#"http.request.uri.path eq "{path}""#);
        ok(&server.cli(&["rule", "add", "--action", "block", "--expression", &expression]));
        effect_times.push(await_status(&rt, &server, &load_h1, &path, 403, "a rule added"));
        let id = rule_id(&server, &expression);
        ok(&server.cli(&["rule", "disable", &id]));
        effect_times.push(await_status(&rt, &server, &load_h1, &path, 200, "the rule disabled"));
        ok(&server.cli(&["rule", "enable", &id]));
        effect_times.push(await_status(&rt, &server, &load_h1, &path, 403, "the rule enabled"));

        // The load's own rule, off and on: the load has a valid certificate, so it is let through either way.
        ok(&server.cli(&["rule", "disable", &api_rule]));
        effect_times.push(await_status(
            &rt,
            &server,
            &anonymous,
            LOAD_PATH,
            200,
            "the mTLS rule disabled",
        ));
        ok(&server.cli(&["rule", "enable", &api_rule]));
        effect_times.push(await_status(
            &rt,
            &server,
            &anonymous,
            LOAD_PATH,
            403,
            "the mTLS rule enabled",
        ));

        // A new hostname: a new SNI entry (and server certificate) in the snapshot, served at once.
        let hostname = format!("h{round}.localhost");
        ok(&server.cli(&["host", "add", &hostname, "--origin", &origin]));
        let start = Instant::now();
        loop {
            let got = rt.block_on(async {
                EdgeConn::connect_to(server.edge_port, anonymous.clone(), false, &hostname)
                    .await?
                    .get("/new")
                    .await
            });
            match got {
                Ok((200, body)) => {
                    assert_eq!(body, "origin saw /new");
                    break;
                }
                other if start.elapsed() > Duration::from_secs(2) => panic!("{hostname} never served: {other:?}"),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        effect_times.push(start.elapsed());

        ok(&server.cli(&["cert", "revoke", &other_id]));
        effect_times.push(await_status(
            &rt,
            &server,
            &other,
            LOAD_PATH,
            403,
            "another certificate revoked",
        ));
        ok(&server.cli(&["cert", "reactivate", &other_id]));
        effect_times.push(await_status(
            &rt,
            &server,
            &other,
            LOAD_PATH,
            200,
            "another certificate reactivated",
        ));
    }

    // Phase 2: the load's own certificate revoked, then reactivated.
    let revoke_start = Instant::now();
    ok(&server.cli(&["cert", "revoke", &load_id]));
    let revoked = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let reactivate_start = Instant::now();
    ok(&server.cli(&["cert", "reactivate", &load_id]));
    let reactivated = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let per_task: Vec<Vec<Sample>> = tasks
        .into_iter()
        .map(|t| rt.block_on(t).expect("a load task"))
        .collect();
    let load_time = load_started.elapsed();

    let samples: Vec<&Sample> = per_task.iter().flatten().collect();
    let errors: Vec<&String> = samples.iter().filter_map(|s| s.outcome.as_ref().err()).collect();
    let bodies_wrong = samples.iter().filter(|s| matches!(s.outcome, Ok((_, false)))).count();
    let grace = Duration::from_millis(100);
    // Per load client: requests during the changes, in the revoked window, after the reactivation.
    let mut windows = vec![[0usize; 3]; per_task.len()];
    let mut unexpected = Vec::new();
    let mut last_200_after_revoke: Option<Instant> = None;
    let mut last_403_after_reactivate: Option<Instant> = None;
    for (task, s) in per_task
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.iter().map(move |s| (i, s)))
    {
        let Ok((status, _)) = s.outcome else { continue };
        if s.done < revoke_start {
            windows[task][0] += 1;
            if status != 200 {
                unexpected.push(format!("{status} before the revocation"));
            }
        } else if s.sent >= revoked + grace && s.done <= reactivate_start {
            windows[task][1] += 1;
            if status != 403 {
                unexpected.push(format!("{status} {:.1} ms after the revocation", ms(s.sent - revoked)));
            }
        } else if s.sent >= reactivated + grace {
            windows[task][2] += 1;
            if status != 200 {
                unexpected.push(format!(
                    "{status} {:.1} ms after the reactivation",
                    ms(s.sent - reactivated)
                ));
            }
        }
        if status == 200 && s.sent >= revoke_start && s.sent < reactivate_start {
            last_200_after_revoke = last_200_after_revoke.max(Some(s.sent));
        }
        if status == 403 && s.sent >= reactivate_start {
            last_403_after_reactivate = last_403_after_reactivate.max(Some(s.sent));
        }
    }
    let since = |t: Option<Instant>, from: Instant| t.map_or(0.0, |t| ms(t.saturating_duration_since(from)));
    let total = |w: usize| windows.iter().map(|t| t[w]).sum::<usize>();
    eprintln!(
        "reload under load: {} requests in {:.1} s ({} during {} configuration changes, {} in the revoked window, {} \
         after the reactivation; per client {windows:?}); {} errors, {} unexpected statuses, {} wrong bodies; \
         configuration changes took effect after at most {:.1} ms (of probing); `cert revoke` took {:.1} ms and the last \
         200 was sent {:.1} ms after it started; `cert reactivate` took {:.1} ms and the last 403 was sent {:.1} ms \
         after it started",
        samples.len(),
        load_time.as_secs_f64(),
        total(0),
        ROUNDS * 8,
        total(1),
        total(2),
        errors.len(),
        unexpected.len(),
        bodies_wrong,
        effect_times.iter().max().map_or(0.0, |d| ms(*d)),
        ms(revoked - revoke_start),
        since(last_200_after_revoke, revoke_start),
        ms(reactivated - reactivate_start),
        since(last_403_after_reactivate, reactivate_start),
    );
    assert!(
        errors.is_empty(),
        "{} requests failed, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(
        unexpected.is_empty(),
        "{} unexpected statuses, e.g. {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)]
    );
    assert_eq!(
        bodies_wrong, 0,
        "every 200 came from the origin, every 403 was the block page"
    );
    // The windows were really exercised, by every kind of client (kept-alive HTTP/1.1 and HTTP/2, new connections).
    for (task, [changes, revoked, after]) in windows.iter().enumerate() {
        assert!(
            *changes >= 20 && *revoked >= 3 && *after >= 3,
            "load client {task} sent too few requests: {changes} during the changes, {revoked} in the revoked \
             window, {after} after the reactivation"
        );
    }
}
