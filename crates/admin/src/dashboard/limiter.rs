//! Limits failed dashboard sign-ins, per client address and for the whole process, so that guessing API tokens
//! through the sign-in form is slow (tokens are 256-bit random, but a wrong one still costs a store lookup).
//!
//! Fixed one-minute windows. Every attempt counts as a failure when it begins ([`SignInLimiter::begin`]), so
//! attempts sent in parallel are counted before any of them is answered; a successful sign-in then takes back its
//! own attempt only (so that a valid token cannot be used to reset the count between guesses). An address (an IPv6
//! client's /64, which one host can hold whole) that failed [`PER_ADDRESS`] times within a minute of its first
//! failure is refused until that minute is over. Once [`GLOBAL`] failures happened within a minute, an address that
//! failed at all in its minute is refused too, as is a peer whose address is unknown; an address with no failure
//! still gets its attempt, so that outsiders who fail on purpose from a few addresses cannot lock the operators out.
//! Past [`CEILING`] failures within a minute, from however many addresses, every attempt waits: the bound on the
//! store lookups that guessing can cost. A refused attempt is not checked at all (not even a right token), and it
//! does not extend the wait. The table holds at most [`MAX_ADDRESSES`] addresses: expired windows are dropped first,
//! then the address whose window is oldest, so memory stays bounded under many addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins an address may make per window.
pub const PER_ADDRESS: u32 = 5;
/// Failed sign-ins the whole process accepts per window before only addresses without a failure may try.
pub const GLOBAL: u32 = 100;
/// Failed sign-ins the whole process accepts per window at all.
pub const CEILING: u32 = 10 * GLOBAL;
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

    /// Begins an attempt from `address`: refused if it may not be checked now, else counted as a failure until
    /// [`SignInLimiter::succeeded`] forgets it.
    pub fn begin(&self, address: Option<IpAddr>, now: Instant) -> Result<(), Limited> {
        let address = address.map(group);
        let mut table = self.lock();
        if let Some(global) = table.global.filter(|w| w.live(now) && w.failures >= CEILING) {
            return Err(Limited {
                retry_after: global.retry_after(now),
                global: true,
            });
        }
        let pressed = table.global.filter(|w| w.live(now) && w.failures >= GLOBAL);
        let own = address
            .and_then(|a| table.by_address.get(&a))
            .copied()
            .filter(|w| w.live(now));
        if let Some(window) = own.filter(|w| w.failures >= PER_ADDRESS) {
            return Err(Limited {
                retry_after: window.retry_after(now),
                global: false,
            });
        }
        if let Some(global) = pressed {
            // Under pressure, an address gets one attempt per window, and an unknown peer none.
            match own {
                Some(window) => {
                    return Err(Limited {
                        retry_after: window.retry_after(now),
                        global: true,
                    });
                }
                None if address.is_none() => {
                    return Err(Limited {
                        retry_after: global.retry_after(now),
                        global: true,
                    });
                }
                None => {}
            }
        }
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
        let Some(address) = address else { return Ok(()) };
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
        Ok(())
    }

    /// Takes back the attempt of `address` that [`SignInLimiter::begin`] counted at `began`, which signed in; from
    /// the windows it was counted in only (a window that started since did not count it).
    pub fn succeeded(&self, address: Option<IpAddr>, began: Instant) {
        let mut table = self.lock();
        if let Some(global) = table.global.as_mut().filter(|w| w.start <= began) {
            global.failures = global.failures.saturating_sub(1);
        }
        let Some(address) = address.map(group) else { return };
        if let Some(window) = table.by_address.get_mut(&address).filter(|w| w.start <= began) {
            window.failures = window.failures.saturating_sub(1);
            if window.failures == 0 {
                table.by_address.remove(&address);
            }
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().by_address.len()
    }
}

/// The unit an address is counted in: an IPv4 address, or an IPv6 address's /64 (the smallest prefix a network
/// hands a host, so one client can rotate through all of it).
fn group(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}
