//! Active health checks of origin servers: a `GET` of a host's check path on each of its servers at an
//! interval, so that a server that accepts connections but cannot serve (its application is down, it
//! answers 503) stops receiving requests before clients meet it, and one that recovers gets them back.
//!
//! A server is marked down after [`FALL`] failed checks in a row (a status other than 2xx or 3xx, a
//! timeout, a refused connection) and up again at the first check that passes; a request's success
//! does not bring it back. The host's requests pass over a server that is down either way: by its check
//! or by a failed connection ([`ServerHealth`](crate::origin_health::ServerHealth)). Only origins with
//! several servers are checked: with one, there is nothing else to send to. A check carries the hostname's
//! `Host` override if it has one; otherwise a wildcard host's checks carry no `Host` of its own, so the origin
//! sees the server's address.
//!
//! What it does not do: read the store (it follows the snapshot the binary publishes), or check
//! origins of hosts without a check path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Uri, header};

use crate::config::ProxyConfig;
use crate::origin_health::ServerHealth;
use crate::snapshot::{Host, Snapshot};

/// Failed checks in a row that mark a server down.
pub const FALL: u32 = 2;

/// What to check on each of a host's origin servers, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path (and query) of the `GET`.
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    /// How long a check may take, connecting included.
    pub timeout: Duration,
}

/// One server's checking state, kept across snapshots by server and check.
#[derive(Debug, Default)]
struct Checked {
    next: Option<Instant>,
    failures: u32,
    in_flight: bool,
}

/// Runs the checks of every host in the newest snapshot until `stop` completes, one probe per host and server at
/// a time (health is kept per host: see [`crate::origin_health`]).
pub async fn run_health_checks(
    snapshot: Arc<ArcSwap<Snapshot>>,
    config: ProxyConfig,
    stop: impl std::future::Future<Output = ()>,
) {
    let upstream = Arc::new(crate::forward::Upstream::new(&config));
    let state: Arc<std::sync::Mutex<HashMap<String, Checked>>> = Arc::default();
    let ticks = async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let snap = snapshot.load_full();
            let mut due = Vec::new();
            {
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                let mut seen = std::collections::HashSet::new();
                for host in snap.hosts.values() {
                    let Some(check) = &host.origin.health_check else {
                        // A check removed while one of its probes was out may have marked a server down after
                        // the snapshot builder let go of the marks; nothing else would ever clear it.
                        host.origin.clear_check_marks();
                        continue;
                    };
                    if host.origin.servers().len() < 2 {
                        host.origin.clear_check_marks();
                        continue;
                    }
                    for index in 0..host.origin.servers().len() {
                        let key = format!(
                            "{} {}://{}{}",
                            host.hostname,
                            host.origin.scheme,
                            host.origin.server(index),
                            check.path
                        );
                        seen.insert(key.clone());
                        let entry = state.entry(key.clone()).or_default();
                        if entry.in_flight || entry.next.is_some_and(|next| next > now) {
                            continue;
                        }
                        entry.in_flight = true;
                        entry.next = Some(now + check.interval);
                        due.push((key, host.clone(), index));
                    }
                }
                // Checks no host asks for any more are forgotten.
                state.retain(|key, _| seen.contains(key));
            }
            for (key, host, index) in due {
                let upstream = upstream.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let passed = probe(&upstream, &host, index).await;
                    let health = host.origin.health_of(index);
                    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = state.entry(key).or_default();
                    entry.in_flight = false;
                    record(&host, index, health, entry, passed);
                });
            }
        }
    };
    tokio::select! {
        () = stop => {}
        () = ticks => {}
    }
}

/// Applies one check's outcome to the server's health.
fn record(host: &Host, index: usize, health: &ServerHealth, entry: &mut Checked, outcome: Result<(), String>) {
    let server = host.origin.server(index);
    match outcome {
        Ok(()) => {
            if health.is_check_down() {
                tracing::info!(host = %host.hostname, %server, "origin server passed its health check; it takes requests again");
            }
            entry.failures = 0;
            health.recovered();
        }
        Err(why) => {
            entry.failures = entry.failures.saturating_add(1);
            if entry.failures >= FALL && !health.is_check_down() {
                tracing::warn!(
                    host = %host.hostname,
                    %server,
                    reason = %why,
                    "origin server failed its health check; the other servers take its requests"
                );
                crate::observe::origin_server_down(&host.hostname);
            }
            if entry.failures >= FALL {
                health.checked_down();
            }
        }
    }
}

/// One check of server `index` of `host`: `Ok` for a 2xx or 3xx answer within the timeout.
async fn probe(upstream: &crate::forward::Upstream, host: &Host, index: usize) -> Result<(), String> {
    let Some(check) = &host.origin.health_check else {
        return Ok(());
    };
    let origin = &host.origin;
    let uri = Uri::builder()
        .scheme(origin.scheme.clone())
        .authority(origin.server(index).clone())
        .path_and_query(check.path.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = Request::get(uri);
    if let Some(name) = origin.host_header.as_ref().filter(|_| !origin.http2) {
        request = request.header(header::HOST, name);
    } else if !origin.http2 && !host.hostname.starts_with("*.") {
        // The name the host's requests carry, so that virtual hosts at the origin answer as they would.
        request = request.header(header::HOST, host.hostname.as_str());
    }
    let (head, ()) = request
        .header(header::USER_AGENT, HeaderValue::from_static("portcullis-health-check"))
        .body(())
        .map_err(|e| e.to_string())?
        .into_parts();
    let sent = upstream.check(origin, head);
    match tokio::time::timeout(check.timeout, sent).await {
        Err(_) => Err(format!("no answer within {} s", check.timeout.as_secs_f64())),
        Ok(Err(e)) => Err(e),
        Ok(Ok(status)) if status.is_success() || status.is_redirection() => Ok(()),
        Ok(Ok(status)) => Err(format!("status {}", status.as_u16())),
    }
}
