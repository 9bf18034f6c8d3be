//! Choosing among a host's origin servers, and passive health: a server that refuses or times out a
//! connection is left alone for a while, and the request goes to the next one.
//!
//! What counts against a server is a failure to connect (refused, unreachable, connect timeout, or the
//! TLS handshake with it failing), because then nothing of the request was sent and another server can
//! take it safely, whatever the method. A slow or failing response does not count: the request may have
//! had effects, and an origin that answers 5xx is the application's business. A server left alone gets a
//! real request again when its time is up (and, if it fails again, is left alone twice as long, up to
//! [`MAX_DOWN`]). Separately, a host's active health check ([`crate::health_check`]) can mark a server
//! down until a check passes; no request's success undoes that.
//!
//! The health of a server is kept per host (one host's origin CA or check path says nothing about
//! another's), and it outlives snapshots: the binary keeps one [`HealthBook`] and every rebuilt origin
//! takes its servers' state and its round-robin turn from it, so a reload does not send traffic back to
//! a dead server.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

/// How long a server is left alone after its first failed connection (NGINX's `fail_timeout`).
pub const FIRST_DOWN: Duration = Duration::from_secs(10);
/// The longest a server is left alone: each further failure in a row doubles the time, up to this.
pub const MAX_DOWN: Duration = Duration::from_secs(120);

/// How requests are spread over a host's origin servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Steering {
    /// In turn, skipping servers that are down.
    #[default]
    RoundRobin,
    /// Always the first server that is up, in the configured order: the others are standbys.
    Failover,
}

/// What is known about one origin server, shared by every snapshot's origins that name it.
#[derive(Debug, Default)]
pub struct ServerHealth {
    /// Milliseconds since [`epoch`] until which the server is left alone; 0 when it is up.
    down_until: AtomicU64,
    /// Failed connections in a row.
    failures: AtomicU32,
    /// Down by the host's health check, until a check passes.
    check_down: AtomicBool,
}

/// The process's time base for [`ServerHealth`] (monotonic).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl ServerHealth {
    /// Whether the server may be tried now.
    pub fn is_up(&self) -> bool {
        self.is_up_at(now_ms())
    }

    fn is_up_at(&self, now: u64) -> bool {
        self.down_until.load(Ordering::Relaxed) <= now && !self.check_down.load(Ordering::Relaxed)
    }

    /// Records a failed connection and returns how long the server is now left alone.
    pub fn failed(&self) -> Duration {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let down = FIRST_DOWN.saturating_mul(1u32 << (failures - 1).min(16)).min(MAX_DOWN);
        let until = now_ms().saturating_add(u64::try_from(down.as_millis()).unwrap_or(u64::MAX));
        self.down_until.store(until, Ordering::Relaxed);
        down
    }

    /// Marks the server down until a health check passes (see [`crate::health_check`]).
    pub fn checked_down(&self) {
        self.check_down.store(true, Ordering::Relaxed);
    }

    /// Whether the health check holds the server down.
    pub fn is_check_down(&self) -> bool {
        self.check_down.load(Ordering::Relaxed)
    }

    /// A health check passed: the check no longer holds the server down (a failed connection still may).
    pub fn recovered(&self) {
        self.check_down.store(false, Ordering::Relaxed);
    }

    /// Records a connection that worked.
    pub fn succeeded(&self) {
        // Read first: a healthy server is written to only when it recovers, so the request path of
        // several threads does not share a written cache line.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.down_until.store(0, Ordering::Relaxed);
        }
    }
}

/// The health of every origin server the edge sends to, by host and `scheme://authority`, and each host's
/// round-robin turn, kept by the binary from one snapshot to the next.
#[derive(Debug, Default)]
pub struct HealthBook {
    servers: Mutex<FxHashMap<String, Arc<ServerHealth>>>,
    turns: Mutex<FxHashMap<String, Arc<AtomicUsize>>>,
}

impl HealthBook {
    pub fn new() -> HealthBook {
        HealthBook::default()
    }

    /// The state of the server `key` (host and `scheme://authority`), created up on first use.
    pub fn get(&self, key: &str) -> Arc<ServerHealth> {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.entry(key.to_owned()).or_default().clone()
    }

    /// The round-robin counter of `host`, created on first use.
    pub fn turn(&self, host: &str) -> Arc<AtomicUsize> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(host.to_owned()).or_default().clone()
    }

    /// Forgets servers and hosts no snapshot refers to any more (only this book holds them).
    pub fn prune(&self) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.retain(|_, health| Arc::strong_count(health) > 1);
        drop(servers);
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.retain(|_, turn| Arc::strong_count(turn) > 1);
    }

    /// How many servers the book knows.
    pub fn len(&self) -> usize {
        self.servers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The order in which one request tries a host's servers: the steering's choice first, then the
/// others that are up, in the configured order from there on. When every server is down, the
/// steering's choice is tried anyway (and only it), since refusing the request outright cannot be
/// better than trying.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempts {
    start: usize,
    len: usize,
    tried: usize,
}

impl Attempts {
    /// The first server for a request, by `steering`, given each server's health; `turn` is the
    /// origin's round-robin counter.
    pub(crate) fn begin(steering: Steering, health: &[Arc<ServerHealth>], turn: &AtomicUsize) -> Attempts {
        let len = health.len();
        if len <= 1 {
            return Attempts {
                start: 0,
                len,
                tried: 0,
            };
        }
        let now = now_ms();
        let start = match steering {
            // The turn counts among the servers that are up, so that they share the requests evenly
            // (a down server's turn is not passed to its neighbour). One atomic step per request.
            Steering::RoundRobin => {
                let drawn = turn.fetch_add(1, Ordering::Relaxed);
                let up = health.iter().filter(|h| h.is_up_at(now)).count();
                if up == 0 {
                    drawn % len
                } else {
                    let nth = drawn % up;
                    (0..len)
                        .filter(|&i| health[i].is_up_at(now))
                        .nth(nth)
                        .unwrap_or(drawn % len)
                }
            }
            Steering::Failover => (0..len).find(|&i| health[i].is_up_at(now)).unwrap_or(0),
        };
        Attempts { start, len, tried: 0 }
    }

    /// The next server to try, or `None` when each has been tried once. Servers that are down are
    /// skipped after the first attempt unless all of them are down.
    pub(crate) fn next(&mut self, health: &[Arc<ServerHealth>]) -> Option<usize> {
        if self.tried == 0 {
            self.tried = 1;
            return (self.len > 0).then_some(self.start);
        }
        let now = now_ms();
        while self.tried < self.len {
            let i = (self.start + self.tried) % self.len;
            self.tried += 1;
            if health[i].is_up_at(now) {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<Arc<ServerHealth>> {
        (0..n).map(|_| Arc::new(ServerHealth::default())).collect()
    }

    fn order(steering: Steering, health: &[Arc<ServerHealth>], turn: &AtomicUsize) -> Vec<usize> {
        let mut attempts = Attempts::begin(steering, health, turn);
        std::iter::from_fn(|| attempts.next(health)).collect()
    }

    #[test]
    fn round_robin_takes_turns_and_skips_servers_that_are_down() {
        let health = servers(3);
        let turn = AtomicUsize::new(0);
        assert_eq!(order(Steering::RoundRobin, &health, &turn), [0, 1, 2]);
        assert_eq!(order(Steering::RoundRobin, &health, &turn), [1, 2, 0]);
        assert_eq!(order(Steering::RoundRobin, &health, &turn), [2, 0, 1]);
        health[1].failed();
        // The others take turns evenly.
        assert_eq!(order(Steering::RoundRobin, &health, &turn), [2, 0]);
        assert_eq!(order(Steering::RoundRobin, &health, &turn), [0, 2]);
        assert_eq!(order(Steering::RoundRobin, &health, &turn), [2, 0]);
        assert_eq!(order(Steering::RoundRobin, &health, &turn), [0, 2]);
        health[1].succeeded();
        assert_eq!(order(Steering::RoundRobin, &health, &turn), [1, 2, 0]);
    }

    #[test]
    fn failover_prefers_the_first_server_that_is_up() {
        let health = servers(3);
        let turn = AtomicUsize::new(0);
        assert_eq!(order(Steering::Failover, &health, &turn), [0, 1, 2]);
        assert_eq!(order(Steering::Failover, &health, &turn), [0, 1, 2]);
        health[0].failed();
        assert_eq!(order(Steering::Failover, &health, &turn), [1, 2]);
        health[1].failed();
        assert_eq!(order(Steering::Failover, &health, &turn), [2]);
    }

    #[test]
    fn when_every_server_is_down_the_steering_choice_is_tried() {
        let health = servers(2);
        let turn = AtomicUsize::new(0);
        health[0].failed();
        health[1].failed();
        assert_eq!(order(Steering::Failover, &health, &turn), [0]);
        assert_eq!(order(Steering::RoundRobin, &health, &turn), [0]);
        assert_eq!(order(Steering::RoundRobin, &health, &turn), [1]);
    }

    #[test]
    fn one_server_is_always_tried() {
        let health = servers(1);
        health[0].failed();
        assert_eq!(order(Steering::RoundRobin, &health, &AtomicUsize::new(0)), [0]);
    }

    #[test]
    fn repeated_failures_double_the_time_left_alone_up_to_the_maximum() {
        let health = ServerHealth::default();
        assert_eq!(health.failed(), FIRST_DOWN);
        assert_eq!(health.failed(), FIRST_DOWN * 2);
        assert_eq!(health.failed(), FIRST_DOWN * 4);
        for _ in 0..40 {
            health.failed();
        }
        assert_eq!(health.failed(), MAX_DOWN);
        assert!(!health.is_up());
        health.succeeded();
        assert!(health.is_up());
        assert_eq!(health.failed(), FIRST_DOWN);
    }

    #[test]
    fn a_health_check_holds_a_server_down_whatever_requests_do() {
        let health = ServerHealth::default();
        health.checked_down();
        health.succeeded();
        assert!(!health.is_up(), "a request's success does not undo the check");
        health.failed();
        health.recovered();
        assert!(!health.is_up(), "nor does a passing check undo a failed connection");
        health.succeeded();
        assert!(health.is_up());
    }

    #[test]
    fn the_book_keeps_state_by_server_and_forgets_unused_ones() {
        let book = HealthBook::new();
        let a = book.get("http://a:1");
        a.failed();
        assert!(!book.get("http://a:1").is_up());
        assert!(book.get("http://b:1").is_up());
        assert_eq!(book.len(), 2);
        book.prune();
        assert_eq!(book.len(), 1, "only a is still held");
        drop(a);
        book.prune();
        assert!(book.is_empty());
    }
}
