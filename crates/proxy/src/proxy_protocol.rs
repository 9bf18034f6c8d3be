//! The PROXY protocol (HAProxy's, versions 1 and 2) on incoming connections: behind a TCP load balancer (AWS
//! NLB, HAProxy in TCP mode, …) the client's address arrives in a header before the TLS handshake, and becomes
//! `ip.src`, `X-Forwarded-For` and the address in logs and events.
//!
//! Only connections from the configured proxy addresses ([`TrustedProxies`]) are read this way, and they must send
//! a header; from anywhere else a header is never read, so no client can state its own address. A `LOCAL` header
//! (a balancer's health check) or an address family other than TCP over IPv4 or IPv6 keeps the connection's own
//! address. TLVs (v2) are skipped. Does not send the protocol to origins.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// v2's 12-byte signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes, `\r\n` included.
const V1_MAX: usize = 107;
/// Largest v2 address-and-TLV block accepted (the balancers' own TLVs are far smaller).
const V2_MAX_BODY: usize = 4096;

/// Addresses (CIDR blocks) whose connections start with a PROXY protocol header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// From `10.0.0.0/8`, `2001:db8::/32` or a bare address, comma-separated or one per item.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<TrustedProxies, String> {
        let mut blocks = Vec::new();
        for item in items
            .into_iter()
            .flat_map(|i| i.split(','))
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR block"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("{item:?}: the prefix length must be 0 to {max}"))?,
                None => max,
            };
            // Peers are compared as IPv4 when they are IPv4-mapped; so are blocks written that way.
            let (addr, len) = match addr {
                IpAddr::V6(v6) if len >= 96 && v6.to_ipv4_mapped().is_some() => (
                    IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
                    len - 96,
                ),
                other => (other, len),
            };
            blocks.push((addr, len));
        }
        Ok(TrustedProxies(blocks))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether connections from `ip` carry a header.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|&(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            _ => false,
        })
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (bytes, bits) = (usize::from(len / 8), len % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    bits == 0 || {
        let mask = 0xffu8 << (8 - bits);
        a[bytes] & mask == b[bytes] & mask
    }
}

/// Why a trusted proxy's connection was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    /// Closed before sending anything: a balancer's TCP health check.
    #[error("closed before a PROXY protocol header")]
    Closed,
    #[error("malformed PROXY protocol v1 header: {0}")]
    BadV1(&'static str),
    #[error("malformed PROXY protocol v2 header: {0}")]
    BadV2(&'static str),
    #[error("reading the PROXY protocol header: {0}")]
    Io(String),
}

impl From<std::io::Error> for HeaderError {
    fn from(e: std::io::Error) -> Self {
        HeaderError::Io(e.to_string())
    }
}

/// Reads and consumes the header at the start of `tcp`, leaving the TLS handshake's bytes unread; returns the
/// client's address (`peer` for `LOCAL` and unknown families). The caller bounds the time.
pub(crate) async fn read_header(tcp: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, HeaderError> {
    let mut start = [0u8; 6];
    if let Err(e) = tcp.read_exact(&mut start).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            HeaderError::Closed
        } else {
            e.into()
        });
    }
    if &start == b"PROXY " {
        // The line's end is found by peeking, so that no byte of the TLS handshake is taken with it.
        let mut buf = [0u8; V1_MAX];
        let line_len = loop {
            let n = tcp.peek(&mut buf[6..]).await?;
            if n == 0 {
                return Err(HeaderError::BadV1("connection closed inside the header"));
            }
            if let Some(end) = buf[6..6 + n].windows(2).position(|w| w == b"\r\n") {
                break end + 2;
            }
            if 6 + n >= V1_MAX {
                return Err(HeaderError::BadV1("no CRLF within 107 bytes"));
            }
            // The rest of the line is still on its way; peeking again at once would spin.
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        buf[..6].copy_from_slice(&start);
        tcp.read_exact(&mut buf[6..6 + line_len]).await?;
        return parse_v1(&buf[..6 + line_len]).map(|a| a.unwrap_or(peer));
    }
    if start != V2_SIGNATURE[..6] {
        return Err(HeaderError::Missing);
    }
    let mut head = [0u8; 16];
    head[..6].copy_from_slice(&start);
    tcp.read_exact(&mut head[6..]).await?;
    let body_len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if body_len > V2_MAX_BODY {
        return Err(HeaderError::BadV2("address block over 4 KiB"));
    }
    let mut body = vec![0u8; body_len];
    tcp.read_exact(&mut body).await?;
    parse_v2(&head, &body).map(|a| a.unwrap_or(peer))
}

/// A whole v1 line (`PROXY TCP4 1.2.3.4 5.6.7.8 1234 443\r\n`); `None` for `PROXY UNKNOWN`.
fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    let text = std::str::from_utf8(line).map_err(|_| HeaderError::BadV1("not ASCII"))?;
    let text = text
        .strip_suffix("\r\n")
        .ok_or(HeaderError::BadV1("no CRLF at the end"))?;
    let mut parts = text.split(' ');
    let (Some("PROXY"), Some(family)) = (parts.next(), parts.next()) else {
        return Err(HeaderError::BadV1("it does not start with PROXY and a family"));
    };
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(HeaderError::BadV1(
            "expected source and destination addresses and ports",
        ));
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| HeaderError::BadV1("bad IPv4 source"))?
                .into(),
            dst.parse::<Ipv4Addr>()
                .map_err(|_| HeaderError::BadV1("bad IPv4 destination"))?
                .into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| HeaderError::BadV1("bad IPv6 source"))?
                .into(),
            dst.parse::<Ipv6Addr>()
                .map_err(|_| HeaderError::BadV1("bad IPv6 destination"))?
                .into(),
        ),
        _ => return Err(HeaderError::BadV1("family is not TCP4, TCP6 or UNKNOWN")),
    };
    let _ = dst;
    let port = |p: &str| {
        // Ports are decimal without leading zeros or signs.
        p.parse::<u16>()
            .ok()
            .filter(|_| !p.starts_with('+') && (p == "0" || !p.starts_with('0')))
            .ok_or(HeaderError::BadV1("bad port"))
    };
    let (sport, _dport) = (port(sport)?, port(dport)?);
    Ok(Some(SocketAddr::new(src, sport)))
}

/// A v2 header (the 16 fixed bytes and the block they announce); `None` for `LOCAL` and families other than TCP
/// over IPv4 or IPv6.
fn parse_v2(head: &[u8; 16], body: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    if head[..12] != V2_SIGNATURE {
        return Err(HeaderError::BadV2("wrong signature"));
    }
    let (version, command) = (head[12] >> 4, head[12] & 0x0f);
    if version != 2 {
        return Err(HeaderError::BadV2("version is not 2"));
    }
    match command {
        0 => return Ok(None),
        1 => {}
        _ => return Err(HeaderError::BadV2("command is neither LOCAL nor PROXY")),
    }
    let (family, transport) = (head[13] >> 4, head[13] & 0x0f);
    if transport != 1 {
        // UDP or unspecified: nothing this edge serves; keep the connection's own address.
        return Ok(None);
    }
    match family {
        1 => {
            let b: [u8; 12] = body
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(HeaderError::BadV2("IPv4 addresses cut short"))?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(ip.into(), u16::from_be_bytes([b[8], b[9]]))))
        }
        2 => {
            let b: [u8; 36] = body
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(HeaderError::BadV2("IPv6 addresses cut short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            let ip = Ipv6Addr::from(octets);
            Ok(Some(SocketAddr::new(ip.into(), u16::from_be_bytes([b[32], b[33]]))))
        }
        _ => Ok(None),
    }
}

/// A v2 `PROXY` header for a TCP connection from `src` to `dst`, for tests and tools.
pub fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    let mut body = Vec::new();
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            body.extend_from_slice(&s.port().to_be_bytes());
            body.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            out.push(0x21);
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            body.extend_from_slice(&v6(s).octets());
            body.extend_from_slice(&v6(d).octets());
            body.extend_from_slice(&s.port().to_be_bytes());
            body.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn trusted_blocks() {
        let t = TrustedProxies::parse(["10.0.0.0/8, 192.168.1.7", "2001:db8::/32"]).unwrap();
        assert!(t.contains("10.200.3.4".parse().unwrap()));
        assert!(t.contains("192.168.1.7".parse().unwrap()));
        assert!(!t.contains("192.168.1.8".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(t.contains("2001:db8:1::9".parse().unwrap()));
        assert!(
            t.contains("::ffff:10.1.1.1".parse().unwrap()),
            "IPv4-mapped addresses count as IPv4"
        );
        let mapped = TrustedProxies::parse(["::ffff:10.0.0.0/104"]).unwrap();
        assert!(
            mapped.contains("10.9.9.9".parse().unwrap()),
            "blocks written IPv4-mapped count as IPv4"
        );
        assert!(!mapped.contains("11.0.0.1".parse().unwrap()));
        let odd = TrustedProxies::parse(["172.16.0.0/12"]).unwrap();
        assert!(odd.contains("172.31.255.255".parse().unwrap()));
        assert!(!odd.contains("172.32.0.0".parse().unwrap()));
        assert!(
            TrustedProxies::parse(["0.0.0.0/0"])
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert_eq!(
            TrustedProxies::parse(["10.0.0.0/33"]).unwrap_err(),
            "\"10.0.0.0/33\": the prefix length must be 0 to 32"
        );
        assert_eq!(
            TrustedProxies::parse(["lb.internal"]).unwrap_err(),
            "\"lb.internal\" is not an IP address or CIDR block"
        );
        assert!(TrustedProxies::parse([""]).unwrap().is_empty());
    }

    #[test]
    fn v1_lines() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 443\r\n"),
            Ok(Some(addr("203.0.113.7:4242")))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 443\r\n"),
            Ok(Some(addr("[2001:db8::7]:4242")))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(None));
        assert_eq!(parse_v1(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), Ok(None));
        for bad in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 4242\r\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 4242 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 04242 443\r\n",
            b"PROXY UDP4 203.0.113.7 10.0.0.1 4242 443\r\n",
            b"PROXY TCP4 203.0.113.7  10.0.0.1 4242 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 443\n",
            b"PROXY TCP4 \xff 10.0.0.1 4242 443\r\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn v2_headers() {
        let split = |h: &[u8]| -> ([u8; 16], Vec<u8>) { (h[..16].try_into().unwrap(), h[16..].to_vec()) };
        let (head, body) = split(&v2_header(addr("203.0.113.7:4242"), addr("10.0.0.1:443")));
        assert_eq!(parse_v2(&head, &body), Ok(Some(addr("203.0.113.7:4242"))));
        let (head, body) = split(&v2_header(addr("[2001:db8::7]:9"), addr("[2001:db8::1]:443")));
        assert_eq!(parse_v2(&head, &body), Ok(Some(addr("[2001:db8::7]:9"))));
        // TLVs after the addresses are skipped.
        let mut with_tlv = v2_header(addr("203.0.113.7:4242"), addr("10.0.0.1:443"));
        with_tlv[15] += 7;
        with_tlv.extend_from_slice(&[0xEA, 0, 4, 1, 2, 3, 4]);
        let (head, body) = split(&with_tlv);
        assert_eq!(parse_v2(&head, &body), Ok(Some(addr("203.0.113.7:4242"))));
        // LOCAL: a health check; the connection's own address stands.
        let (mut head, body) = split(&v2_header(addr("203.0.113.7:4242"), addr("10.0.0.1:443")));
        head[12] = 0x20;
        assert_eq!(parse_v2(&head, &body), Ok(None));
        let (mut bad, body) = split(&v2_header(addr("203.0.113.7:4242"), addr("10.0.0.1:443")));
        bad[12] = 0x31;
        assert!(parse_v2(&bad, &body).is_err());
        let (head, body) = split(&v2_header(addr("203.0.113.7:4242"), addr("10.0.0.1:443")));
        assert!(parse_v2(&head, &body[..8]).is_err(), "addresses cut short");
    }
}
