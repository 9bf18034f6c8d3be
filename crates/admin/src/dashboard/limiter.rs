//! Limits failed dashboard sign-ins, per client address and for the whole process, so that guessing API tokens
//! through the sign-in form is slow (tokens are 256-bit random, but a wrong one still costs a store lookup).
//!
//! Fixed one-minute windows: an address that failed [`PER_ADDRESS`] times within a minute of its first failure is
//! refused until that minute is over, and once [`GLOBAL`] failures happened within a minute every address is. A
//! refused attempt is not checked at all (not even a right token), and it does not extend the wait. A successful
//! sign-in forgets the address's failures. The table holds at most [`MAX_ADDRESSES`] addresses: expired windows are
//! dropped first, then the address whose window is oldest, so memory stays bounded under many addresses (the global
//! limit still applies to them).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins an address may make per window.
pub const PER_ADDRESS: u32 = 5;
/// Failed sign-ins the whole process accepts per window, from all addresses together.
pub const GLOBAL: u32 = 100;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most addresses tracked at once.
pub const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl Window {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) < WINDOW
    }

    /// Seconds until the window ends, at least 1.
    fn retry_after(&self, now: Instant) -> u64 {
        let left = WINDOW.saturating_sub(now.saturating_duration_since(self.start));
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }
}

#[derive(Debug, Default)]
struct Table {
    by_address: HashMap<IpAddr, Window>,
    global: Option<Window>,
}

/// Failed sign-ins of this process. `None` addresses (the peer is unknown) count only globally.
#[derive(Debug, Default)]
pub struct SignInLimiter {
    table: Mutex<Table>,
}

/// Why an attempt is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds to wait.
    pub retry_after: u64,
    /// The whole process is refusing, not just this address.
    pub global: bool,
}

impl SignInLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an attempt from `address` may be checked now.
    pub fn check(&self, address: Option<IpAddr>, now: Instant) -> Result<(), Limited> {
        let table = self.lock();
        if let Some(global) = table.global.filter(|w| w.live(now) && w.failures >= GLOBAL) {
            return Err(Limited {
                retry_after: global.retry_after(now),
                global: true,
            });
        }
        if let Some(window) = address
            .and_then(|a| table.by_address.get(&a))
            .filter(|w| w.live(now) && w.failures >= PER_ADDRESS)
        {
            return Err(Limited {
                retry_after: window.retry_after(now),
                global: false,
            });
        }
        Ok(())
    }

    /// Counts a failed sign-in from `address`.
    pub fn failed(&self, address: Option<IpAddr>, now: Instant) {
        let mut table = self.lock();
        let bump = |window: &mut Option<Window>| match window {
            Some(w) if w.live(now) => w.failures = w.failures.saturating_add(1),
            _ => {
                *window = Some(Window {
                    start: now,
                    failures: 1,
                })
            }
        };
        bump(&mut table.global);
        let Some(address) = address else { return };
        if !table.by_address.contains_key(&address) && table.by_address.len() >= MAX_ADDRESSES {
            table.by_address.retain(|_, w| w.live(now));
            if table.by_address.len() >= MAX_ADDRESSES
                && let Some(oldest) = table.by_address.iter().min_by_key(|(_, w)| w.start).map(|(a, _)| *a)
            {
                table.by_address.remove(&oldest);
            }
        }
        let mut window = table.by_address.get(&address).copied();
        bump(&mut window);
        if let Some(window) = window {
            table.by_address.insert(address, window);
        }
    }

    /// Forgets the failures of `address` after it signed in.
    pub fn succeeded(&self, address: Option<IpAddr>) {
        if let Some(address) = address {
            self.lock().by_address.remove(&address);
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().by_address.len()
    }
}
