//! The client's address from a trusted front proxy's header. Behind a proxy that terminates TLS or HTTP itself (a
//! CDN, AWS ALB, NGINX), every connection comes from the proxy, and the client's address arrives in a header:
//! `X-Forwarded-For`, RFC 7239's `Forwarded`, or a single-address one (`X-Real-IP`, `CF-Connecting-IP`,
//! `True-Client-IP`). On connections from the configured proxies, that address becomes `ip.src`, the address rate
//! limits count, security events and the access log name, and `True-Client-IP`.
//!
//! The header is read from the right, as each proxy appends the address it was connected from: the first address
//! that is not one of the configured proxies is the client, so a client cannot name itself by sending the header
//! (its own entries are to the left of what the proxy appended). An entry that is not an address ends the walk with
//! no answer, and the connection's address stays. Does not change `X-Forwarded-For` to the origin, which ends with
//! the connection's address as it always does, or read the header from anywhere else.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName};

use crate::proxy_protocol::TrustedProxies;

/// Most entries read from the right before giving up (the chains of proxies in front of an edge are short).
const MAX_HOPS: usize = 32;

/// The header and the proxies it is read from, as configured (`serve --client-ip-header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpHeader {
    name: HeaderName,
    from: TrustedProxies,
}

impl ClientIpHeader {
    /// `name` read on connections from `from` (which must name at least one address).
    pub fn new(name: &str, from: TrustedProxies) -> Result<ClientIpHeader, String> {
        let name = Self::header_name(name)?;
        if from.is_empty() {
            return Err("a client address header needs the front proxies it is read from".into());
        }
        Ok(ClientIpHeader { name, from })
    }

    /// `name` as a header that can carry an address (not one that frames or routes the request).
    pub fn header_name(name: &str) -> Result<HeaderName, String> {
        crate::cert_header::carrier_header(name, "a client's address")
    }

    /// Whether requests on a connection from `ip` name their client in the header.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.from.contains(ip)
    }

    /// The client's address in `headers`, if the header names one (see the module's doc).
    pub(crate) fn client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let forwarded = self.name.as_str() == "forwarded";
        let values: Vec<&[u8]> = headers.get_all(&self.name).iter().map(|v| v.as_bytes()).collect();
        let mut last = None;
        for entry in values
            .iter()
            .rev()
            .flat_map(|v| v.rsplit(|b| *b == b','))
            .take(MAX_HOPS)
        {
            let entry = std::str::from_utf8(entry).ok()?.trim();
            let addr = if forwarded {
                forwarded_for(entry)?
            } else {
                address(entry)?
            };
            if !self.from.contains(addr) {
                return Some(addr);
            }
            last = Some(addr);
        }
        // Every entry is one of the proxies: the leftmost read is as far as the chain goes.
        last
    }
}

/// An address as proxies write them: `192.0.2.1`, `2001:db8::1`, and with a port, `192.0.2.1:4711` or
/// `[2001:db8::1]:4711` (or bracketed without one).
fn address(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sock) = entry.parse::<SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

/// The `for=` of one RFC 7239 element (`for=192.0.2.60;proto=http`, `For="[2001:db8::1]:4711"`); `None` for an
/// element without one or with an obfuscated or `unknown` node.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        address(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(name: &str) -> ClientIpHeader {
        ClientIpHeader::new(name, TrustedProxies::parse(["10.0.0.0/8", "2001:db8:f::/48"]).unwrap()).unwrap()
    }

    fn client(name: &str, values: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), v.parse().unwrap());
        }
        reader(name).client(&headers).map(|ip| ip.to_string())
    }

    #[test]
    fn the_client_is_the_first_address_from_the_right_that_is_not_a_proxy() {
        let xff = "x-forwarded-for";
        assert_eq!(client(xff, &[]), None);
        assert_eq!(client(xff, &["203.0.113.7"]).as_deref(), Some("203.0.113.7"));
        // What the client sent itself is to the left of what the proxies appended.
        assert_eq!(
            client(xff, &["6.6.6.6, 203.0.113.7, 10.1.2.3"]).as_deref(),
            Some("203.0.113.7")
        );
        // Several lines are one list, in order.
        assert_eq!(
            client(xff, &["6.6.6.6", "203.0.113.7", "10.1.2.3"]).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client(xff, &["[2001:db8::1]:4711, 2001:db8:f::2"]).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(client(xff, &["198.51.100.9:443"]).as_deref(), Some("198.51.100.9"));
        assert_eq!(client(xff, &["::ffff:198.51.100.9"]).as_deref(), Some("198.51.100.9"));
        // Only proxies: the leftmost. Garbage where the client's address should be: none.
        assert_eq!(client(xff, &["10.0.0.1, 10.0.0.2"]).as_deref(), Some("10.0.0.1"));
        assert_eq!(client(xff, &["203.0.113.7, unknown, 10.0.0.2"]), None);
        assert_eq!(client(xff, &["203.0.113.7, "]), None);
        let long = vec!["10.0.0.1"; MAX_HOPS + 5].join(",");
        assert_eq!(
            client(xff, &[&format!("203.0.113.7,{long}")]).as_deref(),
            Some("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_elements_name_the_client_in_for() {
        let f = "forwarded";
        assert_eq!(
            client(
                f,
                &[r#"for=6.6.6.6, For="[2001:db8::7]:4711";proto=https, for=10.0.0.9;by=10.0.0.1"#]
            )
            .as_deref(),
            Some("2001:db8::7")
        );
        assert_eq!(client(f, &["for=_hidden"]), None);
        assert_eq!(client(f, &["proto=https"]), None);
    }

    #[test]
    fn a_header_needs_a_name_that_can_carry_it_and_front_proxies() {
        let from = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        assert!(ClientIpHeader::new("X-Forwarded-For", from.clone()).is_ok());
        assert!(ClientIpHeader::new("Host", from.clone()).is_err());
        assert!(ClientIpHeader::new("a b", from).is_err());
        assert!(ClientIpHeader::new("X-Real-IP", TrustedProxies::default()).is_err());
    }
}
