//! Minimal DER writing and small encoding helpers (hex, time) shared by the modules.
//! Only what the CRL encoder and the record builders need; parsing is x509-parser's job.

use time::OffsetDateTime;

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_ENUMERATED: u8 = 0x0a;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

pub(crate) fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

pub(crate) fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_len(out, content.len());
    out.extend_from_slice(content);
}

pub(crate) fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    tlv(&mut out, tag, content);
    out
}

/// Content octets of a positive INTEGER whose magnitude is `magnitude` (big-endian).
pub(crate) fn unsigned_integer_content(magnitude: &[u8]) -> Vec<u8> {
    let trimmed = strip_leading_zeros(magnitude);
    let mut out = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
    out
}

/// The content octets of the DER element `tlv` (its tag and length removed), as webpki holds names: a
/// certificate's issuer and subject without the outer SEQUENCE header. Empty if `tlv` is cut short.
pub(crate) fn content_of(tlv: &[u8]) -> &[u8] {
    let Some(&first) = tlv.get(1) else { return &[] };
    let header = if first < 0x80 { 2 } else { 2 + usize::from(first & 0x7f) };
    tlv.get(header..).unwrap_or(&[])
}

/// The magnitude of a DER INTEGER's content octets, without sign padding; `[0]` for zero.
pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    if skip == bytes.len() {
        bytes.get(bytes.len().saturating_sub(1)..).unwrap_or(&[])
    } else {
        &bytes[skip..]
    }
}

/// `YYYYMMDDHHMMSSZ`, GeneralizedTime's text to the second.
fn generalized_text(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// GeneralizedTime to the second, as OCSP writes every time (RFC 6960 4.2.1).
pub(crate) fn push_generalized_time(out: &mut Vec<u8>, t: OffsetDateTime) {
    tlv(out, 0x18, generalized_text(t).as_bytes());
}

/// UTCTime up to 2049, GeneralizedTime from 2050 on (RFC 5280 4.1.2.5).
pub(crate) fn push_time(out: &mut Vec<u8>, t: OffsetDateTime) {
    let text = generalized_text(t);
    if (1950..2050).contains(&t.to_offset(time::UtcOffset::UTC).year()) {
        // UTCTime is the same text without the century.
        tlv(out, 0x17, &text.as_bytes()[2..]);
    } else {
        tlv(out, 0x18, text.as_bytes());
    }
}

pub(crate) fn hex(bytes: &[u8], upper: bool) -> String {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(digits[(b >> 4) as usize] as char);
        s.push(digits[(b & 0x0f) as usize] as char);
    }
    s
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

/// RFC 3339 with second precision and `Z`, as Cloudflare's `issued_on`/`expires_on`.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// OpenSSL's `ASN1_TIME_print` format: `Mar  1 13:35:00 2022 GMT` (day padded with a space).
pub(crate) fn openssl_time(t: OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{} {:2} {:02}:{:02}:{:02} {} GMT",
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
}

pub(crate) fn from_timestamp(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Decimal rendering of a big-endian unsigned integer (Cloudflare shows BYO CA serials in decimal).
pub(crate) fn decimal(magnitude: &[u8]) -> String {
    let mut digits: Vec<u8> = vec![0];
    for byte in magnitude {
        let mut carry = u32::from(*byte);
        for d in digits.iter_mut() {
            let v = u32::from(*d) * 256 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The system RNG failing is not something a caller can recover from.
    aws_lc_rs::rand::fill(&mut buf).expect("the system random number generator works");
    buf
}

/// A random 32-lower-hex id (Cloudflare's record ids).
pub(crate) fn random_id() -> String {
    hex(&random_bytes::<16>(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_and_hex() {
        assert_eq!(decimal(&[0x01, 0x00]), "256");
        assert_eq!(decimal(&[]), "0");
        assert_eq!(hex(&[0xab, 0x01], true), "AB01");
        assert_eq!(unhex("ab01"), Some(vec![0xab, 0x01]));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unsigned_integer_content(&[0x80]), vec![0, 0x80]);
        assert_eq!(unsigned_integer_content(&[0, 0, 1]), vec![1]);
        assert_eq!(strip_leading_zeros(&[0, 0]), &[0]);
    }

    #[test]
    fn times() {
        let t = from_timestamp(1_646_012_100); // 2022-02-28T01:35:00Z
        assert_eq!(openssl_time(t), "Feb 28 01:35:00 2022 GMT");
        let t = from_timestamp(1_646_098_500); // 2022-03-01T01:35:00Z
        assert_eq!(openssl_time(t), "Mar  1 01:35:00 2022 GMT");
        assert_eq!(rfc3339(t), "2022-03-01T01:35:00Z");
    }
}
