//! Counting for rate-limiting rules: per rule and per client (the values of the rule's characteristics), how many
//! requests fell in the current period and the one before, Cloudflare's sliding-window estimate of the rate, and
//! how long a client that went over stays blocked.
//!
//! One [`RateLimiter`] per `serve` call, shared by its edge threads and kept across snapshots, so limits hold for
//! the whole node and survive configuration changes. Counts are per edge node (Cloudflare counts per location).
//! Memory is bounded whatever clients send: a client is known by the SHA-256 of its key, at most [`MAX_CLIENTS`]
//! are tracked, entries idle for two periods are swept in the background, and when the table is full a few
//! entries that are not serving a mitigation timeout make room (a client that is blocked stays blocked).
//! Refused requests are not counted unless a mitigation timeout applies, so a client over its rate is throttled
//! to the rate, not shut out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use portcullis_rules::CompiledRateLimit;

/// Most clients tracked at once, over all rules (about 100 bytes each).
pub const MAX_CLIENTS: usize = 1 << 18;
const SHARDS: usize = 16;
/// Entries dropped at most to make room for one new client.
const EVICT_BATCH: usize = 8;

type Key = [u8; 32];

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

impl Counter {
    fn idle(&self, now: u64) -> bool {
        self.blocked_until <= now && self.window + 2 <= now / self.period
    }
}

/// Counters for every rate-limiting rule of a node.
#[derive(Debug)]
pub struct RateLimiter {
    start: Instant,
    shards: Vec<Mutex<HashMap<Key, Counter>>>,
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

    fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// Counts one request of the client `key` (the rule and its characteristics' values) under `limit`.
    pub(crate) fn hit(&self, key: &[u8], limit: &CompiledRateLimit) -> Decision {
        self.hit_at(key, limit, self.now())
    }

    /// Drops entries idle for two periods; run in the background, never on a request.
    pub(crate) fn sweep(&self) {
        self.sweep_at(self.now());
    }

    fn sweep_at(&self, now: u64) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, c| !c.idle(now));
        }
    }

    fn hit_at(&self, key: &[u8], limit: &CompiledRateLimit, now: u64) -> Decision {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
        let mut id: Key = [0; 32];
        id.copy_from_slice(digest.as_ref());
        let period = u64::from(limit.period.max(1));
        let window = now / period;
        let shard = &self.shards[usize::from(id[0]) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&id) && map.len() >= self.per_shard {
            // Make room without scanning: a few entries that no mitigation timeout holds. A client that is
            // blocked is never the one dropped.
            let victims: Vec<Key> = map
                .iter()
                .filter(|(_, c)| c.blocked_until <= now)
                .take(EVICT_BATCH)
                .map(|(k, _)| *k)
                .collect();
            if victims.is_empty() {
                metrics::counter!("portcullis_ratelimit_untracked_total").increment(1);
                return Decision::Allow;
            }
            metrics::counter!("portcullis_ratelimit_evicted_total").increment(victims.len() as u64);
            for k in victims {
                map.remove(&k);
            }
        }
        let counter = map.entry(id).or_insert(Counter {
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
        if counter.blocked_until > now {
            counter.current = counter.current.saturating_add(1);
            return Decision::Exceeded {
                retry_after: counter.blocked_until - now,
            };
        }
        // The previous period's count weighs by how much of it the sliding window still covers.
        let elapsed = now - window * period;
        let (prev, cur, rpp) = (
            u128::from(counter.previous),
            u128::from(counter.current) + 1,
            u128::from(limit.requests_per_period),
        );
        let p = u128::from(period);
        if prev * (p - u128::from(elapsed)) + cur * p <= rpp * p {
            counter.current += 1;
            return Decision::Allow;
        }
        if limit.mitigation_timeout > 0 {
            counter.current += 1;
            counter.blocked_until = now + u64::from(limit.mitigation_timeout);
            return Decision::Exceeded {
                retry_after: u64::from(limit.mitigation_timeout),
            };
        }
        // Throttled, not counted: the next request fits once the estimate has room for it.
        Decision::Exceeded {
            retry_after: seconds_until_room(prev, cur - 1, rpp, p, u128::from(elapsed)),
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

/// Seconds from now until `prev·(p−e)/p + cur + 1 ≤ rpp` holds, where `e` is the time into the current period
/// (now `elapsed`) and the counts roll over at the period's end; at least 1.
fn seconds_until_room(prev: u128, cur: u128, rpp: u128, p: u128, elapsed: u128) -> u64 {
    let wait = if cur < rpp && prev > 0 {
        // In this period: prev·(p−e) ≤ (rpp−cur−1)·p, so e ≥ p − (rpp−cur−1)·p/prev.
        let e = p.saturating_sub((rpp - cur - 1) * p / prev);
        e.saturating_sub(elapsed).max(1)
    } else {
        // After the period ends, this period's count weighs as the previous one: cur·(p−e') ≤ (rpp−1)·p.
        let to_end = p - elapsed;
        let e = rpp
            .saturating_sub(1)
            .saturating_mul(p)
            .checked_div(cur)
            .map_or(0, |room| p.saturating_sub(room));
        to_end + e
    };
    u64::try_from(wait.max(1)).unwrap_or(u64::MAX)
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
        // Three counted: at the period's end they weigh as the previous period's, and a fourth fits once
        // 3·(10−e)/10 + 1 ≤ 3, at e = 4 s into the next period: 10 + 4 seconds from now.
        assert_eq!(rl.hit_at(b"a", &l, 100), Decision::Exceeded { retry_after: 14 });
        assert_eq!(rl.hit_at(b"b", &l, 100), Decision::Allow, "another client counts apart");
        assert!(matches!(rl.hit_at(b"a", &l, 113), Decision::Exceeded { .. }));
        assert_eq!(rl.hit_at(b"a", &l, 114), Decision::Allow, "as Retry-After said");
        // Two periods on, nothing is left of the burst.
        for _ in 0..3 {
            assert_eq!(rl.hit_at(b"a", &l, 130), Decision::Allow);
        }
    }

    #[test]
    fn a_client_over_its_rate_is_throttled_to_the_rate_not_shut_out() {
        let rl = RateLimiter::default();
        let l = limit(10, 10, 0);
        // A steady 20 requests per 10 s, over 10 periods: about half pass, never all refused.
        let mut passed = 0;
        for t in 0..100u64 {
            for _ in 0..2 {
                if rl.hit_at(b"steady", &l, t) == Decision::Allow {
                    passed += 1;
                }
            }
        }
        assert!((90..=110).contains(&passed), "{passed} of 200");
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
    fn memory_is_bounded_and_blocked_clients_are_never_dropped() {
        let rl = RateLimiter::with_capacity(SHARDS * 4);
        let blocking = limit(10, 1, 3600);
        // A client serving a mitigation timeout.
        assert_eq!(rl.hit_at(b"abuser", &blocking, 0), Decision::Allow);
        assert!(matches!(rl.hit_at(b"abuser", &blocking, 0), Decision::Exceeded { .. }));
        // Thousands of other clients, far more than fit: the table stays within its bound, and keys of any
        // size cost the same.
        let l = limit(10, 1, 0);
        for n in 0u64..5000 {
            let mut key = n.to_be_bytes().to_vec();
            key.resize(4096, b'x');
            rl.hit_at(&key, &l, 1);
        }
        assert!(rl.tracked() <= SHARDS * 4);
        assert!(
            matches!(rl.hit_at(b"abuser", &blocking, 2), Decision::Exceeded { .. }),
            "still blocked"
        );
        // New clients are counted: the second request of one is over its limit of one.
        assert_eq!(rl.hit_at(b"newcomer", &l, 3), Decision::Allow);
        assert!(matches!(rl.hit_at(b"newcomer", &l, 3), Decision::Exceeded { .. }));
        // The sweep drops what has been idle for two periods, and keeps the blocked client.
        rl.sweep_at(25);
        assert_eq!(rl.tracked(), 1);
        assert!(matches!(rl.hit_at(b"abuser", &blocking, 26), Decision::Exceeded { .. }));
    }
}
