//! Which of the header fields the proxy treats specially a message carries, found in one pass
//! over its fields: the ones that decide framing and persistence (`Connection`, `TE`,
//! `Transfer-Encoding`, `Content-Length`, `Expect`), the other hop-by-hop fields,
//! `X-Forwarded-For`, and `Host` (and whether it came twice). Most messages carry few of them, and asking a `HeaderMap` for an absent
//! field costs a hashed lookup; on the HTTP/1.1 path those lookups had been 7 % of a request's
//! instructions. It does not read values or change the map.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// The fields [`Seen`] notes, in the order of its bits. The first [`HOP_BY_HOP`] are the
/// hop-by-hop fields (RFC 9110 7.6.1). A `static`: a `const` array of names would be built and
/// dropped at every use.
pub(crate) static NOTED: [HeaderName; 13] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("x-forwarded-for"),
    header::CONTENT_LENGTH,
    header::EXPECT,
    header::HOST,
];

/// How many of [`NOTED`], from the start, are hop-by-hop.
pub(crate) const HOP_BY_HOP: usize = 9;

/// The set of [`NOTED`] fields a message carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen(u16);

impl Seen {
    pub(crate) const CONNECTION: u16 = 1;
    pub(crate) const TE: u16 = 1 << 5;
    pub(crate) const TRANSFER_ENCODING: u16 = 1 << 7;
    pub(crate) const UPGRADE: u16 = 1 << 8;
    pub(crate) const X_FORWARDED_FOR: u16 = 1 << 9;
    pub(crate) const CONTENT_LENGTH: u16 = 1 << 10;
    pub(crate) const EXPECT: u16 = 1 << 11;
    pub(crate) const HOST: u16 = 1 << 12;
    /// Not a field: `Host` more than once, which RFC 9112 §3.2 answers with 400 (an origin could route by
    /// another `Host` than the one the proxy checked).
    pub(crate) const HOST_REPEATED: u16 = 1 << 13;

    /// The noted fields of `headers`.
    pub(crate) fn of(headers: &HeaderMap) -> Seen {
        let mut seen = Seen::default();
        for key in headers.keys() {
            seen.note(key);
        }
        seen
    }

    /// Adds `name` if it is one of [`NOTED`].
    pub(crate) fn note(&mut self, name: &HeaderName) {
        let bit = bit(name.as_str());
        if bit == Seen::HOST && self.has(Seen::HOST) {
            self.0 |= Seen::HOST_REPEATED;
        }
        self.0 |= bit;
    }

    /// Whether any of `fields` (bits of this type) was seen.
    pub(crate) fn has(self, fields: u16) -> bool {
        self.0 & fields != 0
    }

    /// The hop-by-hop fields seen, as names.
    pub(crate) fn hop_by_hop(self) -> impl Iterator<Item = &'static HeaderName> {
        NOTED[..HOP_BY_HOP]
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, name)| name)
    }
}

/// The bit of `name` in [`NOTED`], 0 if it is not there. A `match` on the text branches on its
/// length first, so most names are ruled out without comparing bytes.
fn bit(name: &str) -> u16 {
    match name {
        "connection" => Seen::CONNECTION,
        "keep-alive" => 1 << 1,
        "proxy-connection" => 1 << 2,
        "proxy-authenticate" => 1 << 3,
        "proxy-authorization" => 1 << 4,
        "te" => Seen::TE,
        "trailer" => 1 << 6,
        "transfer-encoding" => Seen::TRANSFER_ENCODING,
        "upgrade" => Seen::UPGRADE,
        "x-forwarded-for" => Seen::X_FORWARDED_FOR,
        "content-length" => Seen::CONTENT_LENGTH,
        "expect" => Seen::EXPECT,
        "host" => Seen::HOST,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bits_follow_the_list() {
        for (i, name) in NOTED.iter().enumerate() {
            assert_eq!(bit(name.as_str()), 1 << i, "{name}");
        }
        assert_eq!(bit("user-agent"), 0);
    }

    #[test]
    fn a_map_is_noted_by_its_names() {
        let mut h = HeaderMap::new();
        h.append("te", HeaderValue::from_static("trailers"));
        h.append("host", HeaderValue::from_static("a"));
        h.append("upgrade", HeaderValue::from_static("h2c"));
        let seen = Seen::of(&h);
        assert!(seen.has(Seen::TE) && seen.has(Seen::UPGRADE));
        assert!(!seen.has(Seen::CONNECTION | Seen::CONTENT_LENGTH));
        let hop: Vec<_> = seen.hop_by_hop().collect();
        assert_eq!(hop, [&header::TE, &header::UPGRADE]);
    }
}
