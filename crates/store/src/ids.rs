//! Identifiers, secrets and times.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// A random 32-character lower-hex identifier, the shape of Cloudflare's ids.
pub(crate) fn new_id() -> String {
    hex(&random_bytes::<16>())
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The system RNG failing means the OS cannot give entropy; no id or secret can be made safely then.
    SystemRandom::new()
        .fill(&mut out)
        .expect("the operating system's random number generator works");
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

/// Now, in unix seconds.
pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
