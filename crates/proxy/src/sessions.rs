//! TLS session resumption state that outlives a snapshot: each host's session-ID cache (TLS 1.2 clients
//! without tickets) and its session-ticket keys.
//!
//! Every write to the store rebuilds every host's `ServerConfig`; if each rebuild brought new session state, an
//! edge that issues certificates all day would resume almost nothing. The binary keeps one [`TlsSessions`] per
//! hostname across rebuilds instead.
//!
//! Tickets are sealed with AES-256-GCM under a key derived (HKDF-SHA256) from a 32-byte secret, the hostname and
//! a six-hour period; a ticket opens during its period and the next, so keys rotate without a store of old
//! ones. Nodes given the same secret (the binary derives it from the master key every node of a fleet shares)
//! open each other's tickets, so a client resumes on whichever node a load balancer sends it to. Any period's key
//! can be derived again from the secret, so tickets are only as secret as it is: TLS 1.3 resumption in rustls
//! always runs a fresh (EC)DHE exchange, so a ticket never exposes a session's traffic, and TLS 1.2 clients (whose
//! tickets would carry the master secret) get none (see `tls::HostConfigs`). Does not decide whether a resumed
//! session's certificate is still trusted: the connection checks that against the current snapshot.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};

/// How long one ticket key is used to seal; a ticket opens for up to twice this.
const PERIOD_SECS: u64 = 6 * 3600;
const VERSION: u8 = 1;
/// `VERSION || period (8 bytes) || nonce`, before the ciphertext and its tag.
const HEADER_LEN: usize = 1 + 8 + NONCE_LEN;
/// TLS 1.2 session IDs remembered per host. Each entry holds the client's certificate chain, so a few KiB.
const SESSION_CACHE_ENTRIES: usize = 1024;

/// A host's resumption state, shared by every `ServerConfig` built for it.
#[derive(Debug, Clone)]
pub struct TlsSessions {
    pub(crate) cache: Arc<dyn StoresServerSessions>,
    pub(crate) ticketer: Arc<dyn ProducesTickets>,
}

impl TlsSessions {
    /// State for `hostname`, with ticket keys derived from `secret`; nodes with the same secret resume each
    /// other's sessions.
    pub fn new(hostname: &str, secret: [u8; 32]) -> TlsSessions {
        TlsSessions {
            cache: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
            ticketer: Arc::new(Ticketer {
                secret,
                host: hostname.to_ascii_lowercase(),
                rng: SystemRandom::new(),
            }),
        }
    }

    /// State with a random secret: tickets that only this process opens.
    pub fn local(hostname: &str) -> TlsSessions {
        let mut secret = [0u8; 32];
        // The system's random source failing leaves the secret zero; tickets then still work, keyed by
        // hostname and period, and the failure shows elsewhere (no handshake can run without randomness).
        let _ = SystemRandom::new().fill(&mut secret);
        TlsSessions::new(hostname, secret)
    }
}

struct Ticketer {
    secret: [u8; 32],
    host: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticketer")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

fn current_period() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / PERIOD_SECS)
}

impl Ticketer {
    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let prk = Salt::new(HKDF_SHA256, b"portcullis/tls-ticket/v1").extract(&self.secret);
        let info = [self.host.as_bytes(), b"/", &period.to_be_bytes()];
        let mut key = [0u8; 32];
        prk.expand(&info, HKDF_SHA256).ok()?.fill(&mut key).ok()?;
        Some(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).ok()?))
    }

    fn seal_at(&self, period: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + AES_256_GCM.tag_len());
        out.push(VERSION);
        out.extend_from_slice(&period.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key(period)?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&out[..9]), &mut body)
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open_at(&self, now: u64, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < HEADER_LEN + AES_256_GCM.tag_len() || sealed[0] != VERSION {
            return None;
        }
        let period = u64::from_be_bytes(sealed[1..9].try_into().ok()?);
        if period != now && period.checked_add(1) != Some(now) {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[9..HEADER_LEN]).ok()?;
        let mut body = sealed[HEADER_LEN..].to_vec();
        let plain_len = self
            .key(period)?
            .open_in_place(nonce, Aad::from(&sealed[..9]), &mut body)
            .ok()?
            .len();
        body.truncate(plain_len);
        Some(body)
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        // A ticket opens until the end of the period after the one it was sealed in: at least this long.
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(current_period(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(current_period(), cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticketer(host: &str, secret: u8) -> Ticketer {
        Ticketer {
            secret: [secret; 32],
            host: host.into(),
            rng: SystemRandom::new(),
        }
    }

    #[test]
    fn tickets_open_on_every_node_with_the_secret_and_nowhere_else() {
        let a = ticketer("api.test", 1);
        let sealed = a.encrypt(b"session state").unwrap();
        assert_eq!(a.decrypt(&sealed).unwrap(), b"session state");
        assert_eq!(
            ticketer("api.test", 1).decrypt(&sealed).unwrap(),
            b"session state",
            "another node"
        );
        assert_eq!(
            ticketer("API.test", 1).decrypt(&sealed),
            None,
            "hostnames are compared as given"
        );
        assert_eq!(ticketer("api.test", 2).decrypt(&sealed), None, "another secret");
        assert_eq!(ticketer("other.test", 1).decrypt(&sealed), None, "another host");
        assert_ne!(a.encrypt(b"session state").unwrap(), sealed, "a fresh nonce each time");
    }

    #[test]
    fn tickets_open_in_their_period_and_the_next_only() {
        let t = ticketer("api.test", 1);
        let sealed = t.seal_at(100, b"s").unwrap();
        assert!(t.open_at(100, &sealed).is_some());
        assert!(t.open_at(101, &sealed).is_some());
        assert!(t.open_at(102, &sealed).is_none());
        assert!(t.open_at(99, &sealed).is_none(), "not before it was made");
        // The period is authenticated: moving a ticket into a later period breaks it.
        let mut moved = sealed.clone();
        moved[1..9].copy_from_slice(&101u64.to_be_bytes());
        assert!(t.open_at(101, &moved).is_none());
    }

    #[test]
    fn altered_or_foreign_tickets_are_refused() {
        let t = ticketer("api.test", 1);
        let sealed = t.encrypt(b"session state").unwrap();
        for i in [0, 5, 12, HEADER_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(t.decrypt(&bad), None, "byte {i}");
        }
        assert_eq!(t.decrypt(&sealed[..HEADER_LEN + 15]), None);
        assert_eq!(t.decrypt(&[]), None);
        assert_eq!(t.decrypt(&[1; 64]), None);
        assert!(t.lifetime() >= 6 * 3600);
    }
}
