//! Requests and blocks per minute over the last hour, for the dashboard's overview.
//!
//! A ring of 60 buckets, one per minute (`minute % 60`). Each counter is one `AtomicU64` that packs the minute it
//! counts (high 32 bits, minutes since the Unix epoch) with the count (low 32 bits), so that counting a request is a
//! load and one relaxed `fetch_add` in the common case, and a compare-and-swap once per bucket per minute when the
//! bucket still holds a minute from an hour ago. No lock, no allocation; a bucket that was not touched for an hour
//! reads as zero because its stamp is old. A count never reaches 2^32 in one minute (that would be 71 million
//! requests per second), so it cannot spill into the stamp.
//!
//! The process has one ring, [`TRAFFIC`], counted by every request the edge answers; [`Traffic::new`] makes
//! independent ones (tests).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::unix_now;

/// Minutes kept.
pub const MINUTES: usize = 60;

const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Every request the edge of this process answered, per minute.
pub static TRAFFIC: Traffic = Traffic::new();

/// One minute's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteCount {
    /// Start of the minute, in seconds since the Unix epoch.
    pub minute_start: i64,
    /// Requests answered in that minute (blocked ones included).
    pub requests: u64,
    /// Requests a rule blocked.
    pub blocked: u64,
}

/// A ring of per-minute request and block counters.
#[derive(Debug)]
pub struct Traffic {
    requests: [AtomicU64; MINUTES],
    blocked: [AtomicU64; MINUTES],
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic::new()
    }
}

fn bump(cell: &AtomicU64, minute: u64) {
    let stamp = minute << COUNT_BITS;
    let mut seen = cell.load(Ordering::Relaxed);
    loop {
        if seen & !COUNT_MASK == stamp {
            cell.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The bucket still counts an older minute: start this one at 1 (or count again if another request did).
        match cell.compare_exchange_weak(seen, stamp | 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => seen = now,
        }
    }
}

fn read(cell: &AtomicU64, minute: u64) -> u64 {
    let value = cell.load(Ordering::Relaxed);
    if value & !COUNT_MASK == minute << COUNT_BITS {
        value & COUNT_MASK
    } else {
        0
    }
}

/// The current minute since the Unix epoch, truncated to the 32 bits of a stamp.
fn minute_of(unix_seconds: i64) -> u64 {
    (u64::try_from(unix_seconds).unwrap_or(0) / 60) & COUNT_MASK
}

impl Traffic {
    /// An empty ring.
    pub const fn new() -> Traffic {
        Traffic {
            requests: [const { AtomicU64::new(0) }; MINUTES],
            blocked: [const { AtomicU64::new(0) }; MINUTES],
        }
    }

    /// Counts one answered request, blocked or not, in the current minute.
    #[inline]
    pub fn record(&self, blocked: bool) {
        self.record_at(unix_now(), blocked);
    }

    /// Counts one request at `unix_seconds`.
    pub fn record_at(&self, unix_seconds: i64, blocked: bool) {
        let minute = minute_of(unix_seconds);
        let slot = (minute % MINUTES as u64) as usize;
        bump(&self.requests[slot], minute);
        if blocked {
            bump(&self.blocked[slot], minute);
        }
    }

    /// The 60 minutes up to and including the one holding `unix_seconds`, oldest first; minutes without
    /// requests count zero.
    pub fn last_hour(&self, unix_seconds: i64) -> Vec<MinuteCount> {
        let current = minute_of(unix_seconds);
        let base = u64::try_from(unix_seconds).unwrap_or(0) / 60;
        (0..MINUTES as u64)
            .rev()
            .map(|ago| {
                let minute = current.wrapping_sub(ago) & COUNT_MASK;
                let slot = (minute % MINUTES as u64) as usize;
                MinuteCount {
                    minute_start: i64::try_from(base.saturating_sub(ago) * 60).unwrap_or(0),
                    requests: read(&self.requests[slot], minute),
                    blocked: read(&self.blocked[slot], minute),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{MINUTES, Traffic};

    const T0: i64 = 1_700_000_040; // a minute boundary (divisible by 60)

    #[test]
    fn counts_land_in_their_minute_and_the_window_is_oldest_first() {
        assert_eq!(T0 % 60, 0);
        let t = Traffic::new();
        t.record_at(T0, false);
        t.record_at(T0 + 59, true);
        t.record_at(T0 + 60, false);
        let hour = t.last_hour(T0 + 61);
        assert_eq!(hour.len(), MINUTES);
        let last = hour[MINUTES - 1];
        let before = hour[MINUTES - 2];
        assert_eq!(last.minute_start, T0 + 60);
        assert_eq!((last.requests, last.blocked), (1, 0));
        assert_eq!(before.minute_start, T0);
        assert_eq!((before.requests, before.blocked), (2, 1));
        assert_eq!(hour[0].minute_start, T0 + 60 - 59 * 60);
        assert!(hour[..MINUTES - 2].iter().all(|m| m.requests == 0 && m.blocked == 0));
        assert!(hour.windows(2).all(|w| w[1].minute_start - w[0].minute_start == 60));
    }

    #[test]
    fn minutes_older_than_an_hour_drop_out_and_buckets_are_reused() {
        let t = Traffic::new();
        for _ in 0..5 {
            t.record_at(T0, true);
        }
        // 59 minutes later the first minute is still in the window, at its start.
        let hour = t.last_hour(T0 + 59 * 60);
        assert_eq!((hour[0].minute_start, hour[0].requests, hour[0].blocked), (T0, 5, 5));
        // An hour later it is gone, although nothing reused its bucket.
        let hour = t.last_hour(T0 + 60 * 60);
        assert!(hour.iter().all(|m| m.requests == 0), "{hour:?}");
        // The same bucket, an hour later: it restarts at 1 rather than adding to the old count.
        t.record_at(T0 + 60 * 60 + 5, false);
        let hour = t.last_hour(T0 + 60 * 60 + 5);
        let last = hour[MINUTES - 1];
        assert_eq!((last.minute_start, last.requests, last.blocked), (T0 + 3600, 1, 0));
        assert_eq!(hour.iter().map(|m| m.requests).sum::<u64>(), 1);
    }

    #[test]
    fn concurrent_counting_loses_nothing() {
        let t = std::sync::Arc::new(Traffic::new());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for n in 0..10_000 {
                        t.record_at(T0 + 30, (n + i) % 4 == 0);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a counting thread");
        }
        let last = t.last_hour(T0 + 30)[MINUTES - 1];
        assert_eq!((last.requests, last.blocked), (40_000, 10_000));
    }

    #[test]
    fn the_process_ring_counts_now() {
        // Other tests count too, and a minute may end between the reads: retry until one read pair is in one minute.
        let blocked = || -> (i64, u64) {
            let now = super::unix_now();
            (now / 60, super::TRAFFIC.last_hour(now).iter().map(|m| m.blocked).sum())
        };
        for _ in 0..3 {
            let (minute, before) = blocked();
            super::TRAFFIC.record(true);
            let (same, after) = blocked();
            if minute == same {
                assert!(after > before, "{before} then {after}");
                return;
            }
        }
        panic!("three minute boundaries in a row");
    }
}
