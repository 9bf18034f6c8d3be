//! Counting for rate-limiting rules: per rule and per client (the values of the rule's characteristics), how many
//! requests fell in the current period and the one before, Cloudflare's sliding-window estimate of the rate, and
//! how long a client that went over stays blocked.
//!
//! One [`RateLimiter`] per `serve` call, shared by its edge threads and kept across snapshots, so limits hold for
//! the whole node and survive configuration changes. Counts are per edge node (Cloudflare counts per location).
//! Memory is bounded: at most [`MAX_CLIENTS`] clients are tracked; when full, clients idle for two periods are
//! dropped, and if none is, a new client is not tracked (it is let through and counted in
//! `portcullis_ratelimit_untracked_total`) rather than evicting one that may be over its limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use portcullis_rules::CompiledRateLimit;

/// Most clients tracked at once, over all rules.
pub const MAX_CLIENTS: usize = 1 << 20;
const SHARDS: usize = 16;

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    /// Over the limit; the client may try again after this many seconds.
    Exceeded {
        retry_after: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// Index of the current period (seconds since the limiter's start ÷ period).
    window: u64,
    current: u64,
    previous: u64,
    /// Blocked until this second (limiter time), for a mitigation timeout.
    blocked_until: u64,
    /// The period, to tell when the entry is idle.
    period: u64,
}

/// Counters for every rate-limiting rule of a node.
#[derive(Debug)]
pub struct RateLimiter {
    start: Instant,
    shards: Vec<Mutex<HashMap<Vec<u8>, Counter>>>,
    per_shard: usize,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::with_capacity(MAX_CLIENTS)
    }
}

impl RateLimiter {
    fn with_capacity(clients: usize) -> RateLimiter {
        RateLimiter {
            start: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (clients / SHARDS).max(1),
        }
    }

    /// Counts one request of the client `key` (the rule and its characteristics' values) under `limit`.
    pub(crate) fn hit(&self, key: &[u8], limit: &CompiledRateLimit) -> Decision {
        self.hit_at(key, limit, self.start.elapsed().as_secs())
    }

    fn hit_at(&self, key: &[u8], limit: &CompiledRateLimit, now: u64) -> Decision {
        let period = u64::from(limit.period.max(1));
        let window = now / period;
        let shard = &self.shards[shard_of(key)];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(key) && map.len() >= self.per_shard {
            // Idle for two periods: its counts no longer matter.
            map.retain(|_, c| c.blocked_until > now || c.window + 2 > now / c.period);
            if map.len() >= self.per_shard {
                metrics::counter!("portcullis_ratelimit_untracked_total").increment(1);
                return Decision::Allow;
            }
        }
        let counter = map.entry(key.to_vec()).or_insert(Counter {
            window,
            current: 0,
            previous: 0,
            blocked_until: 0,
            period,
        });
        if counter.window != window {
            counter.previous = if counter.window + 1 == window {
                counter.current
            } else {
                0
            };
            counter.current = 0;
            counter.window = window;
        }
        counter.current = counter.current.saturating_add(1);
        if counter.blocked_until > now {
            return Decision::Exceeded {
                retry_after: counter.blocked_until - now,
            };
        }
        // The previous period's count weighs by how much of it the sliding window still covers.
        let elapsed = now - window * period;
        let estimate = u128::from(counter.previous) * u128::from(period - elapsed)
            + u128::from(counter.current) * u128::from(period);
        if estimate <= u128::from(limit.requests_per_period) * u128::from(period) {
            return Decision::Allow;
        }
        let retry_after = if limit.mitigation_timeout > 0 {
            counter.blocked_until = now + u64::from(limit.mitigation_timeout);
            u64::from(limit.mitigation_timeout)
        } else {
            period - elapsed
        };
        Decision::Exceeded { retry_after }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

fn shard_of(key: &[u8]) -> usize {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(key);
    (h.finish() as usize) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(period: u32, rpp: u64, timeout: u32) -> CompiledRateLimit {
        CompiledRateLimit {
            characteristics: Vec::new(),
            period,
            requests_per_period: rpp,
            mitigation_timeout: timeout,
        }
    }

    #[test]
    fn a_client_gets_its_requests_per_period_and_no_more() {
        let rl = RateLimiter::default();
        let l = limit(10, 3, 0);
        for _ in 0..3 {
            assert_eq!(rl.hit_at(b"a", &l, 100), Decision::Allow);
        }
        assert_eq!(rl.hit_at(b"a", &l, 100), Decision::Exceeded { retry_after: 10 });
        assert_eq!(rl.hit_at(b"b", &l, 100), Decision::Allow, "another client counts apart");
        // Later in the next period the previous one weighs less: at 115, half of it (4 requests, 2 of them)
        // plus this one is within 3.
        assert_eq!(rl.hit_at(b"a", &l, 115), Decision::Allow);
        // Two periods on, nothing is left of the burst.
        for _ in 0..3 {
            assert_eq!(rl.hit_at(b"a", &l, 130), Decision::Allow);
        }
    }

    #[test]
    fn the_sliding_window_spans_the_period_boundary() {
        let rl = RateLimiter::default();
        let l = limit(10, 4, 0);
        for _ in 0..4 {
            assert_eq!(rl.hit_at(b"a", &l, 109), Decision::Allow);
        }
        // Just after the boundary almost all of the previous period still counts.
        assert!(matches!(rl.hit_at(b"a", &l, 110), Decision::Exceeded { .. }));
    }

    #[test]
    fn a_mitigation_timeout_blocks_for_its_length() {
        let rl = RateLimiter::default();
        let l = limit(10, 1, 60);
        assert_eq!(rl.hit_at(b"a", &l, 0), Decision::Allow);
        assert_eq!(rl.hit_at(b"a", &l, 1), Decision::Exceeded { retry_after: 60 });
        assert_eq!(rl.hit_at(b"a", &l, 30), Decision::Exceeded { retry_after: 31 });
        assert_eq!(rl.hit_at(b"a", &l, 61), Decision::Allow);
    }

    #[test]
    fn memory_is_bounded_and_idle_clients_make_room() {
        let rl = RateLimiter::with_capacity(SHARDS * 4);
        let l = limit(10, 1, 0);
        for n in 0u64..1000 {
            rl.hit_at(&n.to_be_bytes(), &l, 0);
        }
        assert_eq!(rl.tracked(), SHARDS * 4, "every shard full, none over");
        // While all are fresh, a new client is let through untracked: it is never counted over its limit,
        // and no tracked client (which may be over its own) is dropped for it.
        for _ in 0..3 {
            assert_eq!(rl.hit_at(b"newcomer-1", &l, 5), Decision::Allow);
        }
        // Two periods on, the idle ones make room and new clients are counted again.
        assert_eq!(rl.hit_at(b"late", &l, 30), Decision::Allow);
        assert!(matches!(rl.hit_at(b"late", &l, 30), Decision::Exceeded { .. }));
        assert!(rl.tracked() < SHARDS * 4);
    }
}
