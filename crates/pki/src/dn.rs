//! Distinguished names as strings, in the three styles Cloudflare exposes, matching OpenSSL output.
//!
//! - [`rfc2253`]: exactly `openssl x509 -noout -subject -nameopt RFC2253` — RDNs in reverse order,
//!   `,` between RDNs and `+` inside a multi-valued RDN, OpenSSL short names (`CN`, `emailAddress`,
//!   `DC`, …), backslash escapes for `, + " \ < > ;`, a leading `#` or space and a trailing space,
//!   `\XX` for control characters and for every byte of non-ASCII UTF-8, unknown attribute types as
//!   the dotted OID with `#` and the DER in hex.
//! - [`cloudflare`] (the default `cert_subject_dn`): the same, except that non-ASCII text stays as
//!   UTF-8 instead of `\XX` escapes (`-nameopt RFC2253,-esc_msb`), which is what people can read and
//!   write in rules.
//! - [`legacy`]: exactly `openssl x509 -noout -subject -nameopt compat` (`X509_NAME_oneline`): DER
//!   order, `/` before each RDN, `+` inside a multi-valued RDN, `\/` and `\+` escapes, and `\xHH` for
//!   bytes outside printable ASCII.
//!
//! It also converts a parsed subject into rcgen's form for issuing (one value per attribute type,
//! no multi-valued RDNs: rcgen's limits, reported as errors instead of silently dropping data).

use std::fmt::Write as _;

use x509_parser::der_parser::asn1_rs::{Any, Class, Tag};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::error::{PkiError, Result};

pub(crate) const OID_CN: &str = "2.5.4.3";
pub(crate) const OID_C: &str = "2.5.4.6";
pub(crate) const OID_L: &str = "2.5.4.7";
pub(crate) const OID_ST: &str = "2.5.4.8";
pub(crate) const OID_O: &str = "2.5.4.10";
pub(crate) const OID_OU: &str = "2.5.4.11";

/// OpenSSL's short names for the attribute types that appear in practice.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        OID_CN => "CN",
        OID_C => "C",
        OID_L => "L",
        OID_ST => "ST",
        OID_O => "O",
        OID_OU => "OU",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.9" => "street",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.72" => "role",
        "2.5.4.97" => "organizationIdentifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "1.2.840.113549.1.9.2" => "unstructuredName",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.3.6.1.4.1.311.60.2.1.1" => "jurisdictionL",
        "1.3.6.1.4.1.311.60.2.1.2" => "jurisdictionST",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return None,
    })
}

/// [`short_name`] keyed by the OID's DER content bytes, which avoids formatting the OID as text
/// for every attribute on the per-connection path.
fn short_name_der(oid: &[u8]) -> Option<&'static str> {
    const PKCS9: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09];
    const PILOT: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01];
    const EV: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x3c, 0x02, 0x01];
    match oid {
        [0x55, 0x04, n] => short_name_for_arc(*n, "2.5.4."),
        [rest @ .., n] if rest == PKCS9 => short_name_for_arc(*n, "1.2.840.113549.1.9."),
        [rest @ .., n] if rest == PILOT => short_name_for_arc(*n, "0.9.2342.19200300.100.1."),
        [rest @ .., n] if rest == EV => short_name_for_arc(*n, "1.3.6.1.4.1.311.60.2.1."),
        _ => None,
    }
}

/// Looks up `prefix` followed by the small arc `n` without allocating.
fn short_name_for_arc(n: u8, prefix: &str) -> Option<&'static str> {
    if n >= 0x80 {
        return None;
    }
    let mut buf = [0u8; 40];
    let len = prefix.len();
    let digits = if n >= 100 {
        3
    } else if n >= 10 {
        2
    } else {
        1
    };
    if len + digits > buf.len() {
        return None;
    }
    buf[..len].copy_from_slice(prefix.as_bytes());
    let mut v = n;
    for i in (0..digits).rev() {
        buf[len + i] = b'0' + v % 10;
        v /= 10;
    }
    std::str::from_utf8(&buf[..len + digits]).ok().and_then(short_name)
}

/// The attribute type as written in DN strings: OpenSSL's short name, else the dotted OID.
fn attribute_name(attr: &AttributeTypeAndValue<'_>) -> std::borrow::Cow<'static, str> {
    match short_name_der(attr.attr_type().as_bytes()) {
        Some(sn) => std::borrow::Cow::Borrowed(sn),
        None => {
            let oid = attr.attr_type().to_id_string();
            match short_name(&oid) {
                Some(sn) => std::borrow::Cow::Borrowed(sn),
                None => std::borrow::Cow::Owned(oid),
            }
        }
    }
}

/// The value as text when it is a string type (UTF-8 conversion as OpenSSL's `UTF8_CONVERT` does:
/// T61String is read as Latin-1, BMPString as UTF-16, UniversalString as UTF-32).
pub(crate) fn decode_string(value: &Any<'_>) -> Option<String> {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => {
            match std::str::from_utf8(data) {
                Ok(s) => Some(s.to_owned()),
                Err(_) => Some(data.iter().map(|b| char::from(*b)).collect()),
            }
        }
        Tag::TeletexString => Some(data.iter().map(|b| char::from(*b)).collect()),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            Some(char::decode_utf16(units).map(|r| r.unwrap_or('\u{fffd}')).collect())
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            Some(
                data.chunks(4)
                    .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}'))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// The first value of attribute `oid` as text (record fields such as `common_name`).
pub(crate) fn first_value(name: &X509Name<'_>, oid: &str) -> Option<String> {
    name.iter_attributes()
        .find(|a| a.attr_type().to_id_string() == oid)
        .and_then(|a| decode_string(a.attr_value()))
}

fn der_of(value: &Any<'_>) -> Vec<u8> {
    let header = &value.header;
    let class = match header.class() {
        Class::Universal => 0u8,
        Class::Application => 0x40,
        Class::ContextSpecific => 0x80,
        Class::Private => 0xc0,
    };
    let constructed = if header.is_constructed() { 0x20 } else { 0 };
    let mut out = Vec::with_capacity(value.data.len() + 4);
    // Tags above 30 need the multi-byte form; attribute values never use them in practice.
    let tag = u8::try_from(header.tag().0).unwrap_or(0x1f).min(0x1e);
    out.push(class | constructed | tag);
    crate::der::push_len(&mut out, value.data.len());
    out.extend_from_slice(value.data);
    out
}

fn push_rfc2253_value(out: &mut String, attr: &AttributeTypeAndValue<'_>, escape_msb: bool) {
    let Some(text) = decode_string(attr.attr_value()) else {
        out.push('#');
        out.push_str(&crate::der::hex(&der_of(attr.attr_value()), true));
        return;
    };
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0'..='\x1f' | '\x7f' => {
                let _ = write!(out, "\\{:02X}", u32::from(c));
            }
            c if !c.is_ascii() && escape_msb => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

fn rfc2253_style(name: &X509Name<'_>, escape_msb: bool) -> String {
    let mut out = String::with_capacity(name.as_raw().len());
    for (i, rdn) in name.iter().collect::<Vec<_>>().into_iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().collect::<Vec<_>>().into_iter().rev().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let name = attribute_name(attr);
            out.push_str(&name);
            out.push('=');
            if matches!(name, std::borrow::Cow::Owned(_)) {
                // Unknown attribute types are dumped as DER in hex (OpenSSL's DUMP_UNKNOWN_FIELDS).
                out.push('#');
                out.push_str(&crate::der::hex(&der_of(attr.attr_value()), true));
            } else {
                push_rfc2253_value(&mut out, attr, escape_msb);
            }
        }
    }
    out
}

/// `openssl x509 -noout -subject -nameopt RFC2253` (without the `subject=` prefix).
pub fn rfc2253(name: &X509Name<'_>) -> String {
    rfc2253_style(name, true)
}

/// Cloudflare's default DN style: RFC 2253 with UTF-8 left readable.
pub fn cloudflare(name: &X509Name<'_>) -> String {
    rfc2253_style(name, false)
}

/// `openssl x509 -noout -subject -nameopt compat` (without the `subject=` prefix).
pub fn legacy(name: &X509Name<'_>) -> String {
    let mut out = String::with_capacity(name.as_raw().len() + 16);
    for rdn in name.iter() {
        for (j, attr) in rdn.iter().enumerate() {
            out.push(if j == 0 { '/' } else { '+' });
            out.push_str(&attribute_name(attr));
            out.push('=');
            for &b in attr.attr_value().data {
                match b {
                    b'/' | b'+' => {
                        out.push('\\');
                        out.push(char::from(b));
                    }
                    b' '..=b'~' => out.push(char::from(b)),
                    _ => {
                        let _ = write!(out, "\\x{b:02X}");
                    }
                }
            }
        }
    }
    out
}

/// The subject in rcgen's form, for copying a CSR's subject into the certificate.
pub(crate) fn to_rcgen(name: &X509Name<'_>) -> Result<rcgen::DistinguishedName> {
    let mut dn = rcgen::DistinguishedName::new();
    let mut seen: Vec<String> = Vec::new();
    for rdn in name.iter() {
        if rdn.iter().count() > 1 {
            return Err(PkiError::Csr(
                "multi-valued RDNs (attributes joined with '+') in the subject are not supported".into(),
            ));
        }
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let label = short_name(&oid).map(str::to_owned).unwrap_or_else(|| oid.clone());
            if seen.contains(&oid) {
                return Err(PkiError::Csr(format!(
                    "the subject repeats the attribute {label}; Portcullis copies one value per attribute type"
                )));
            }
            seen.push(oid.clone());
            let ty = match oid.as_str() {
                OID_CN => rcgen::DnType::CommonName,
                OID_C => rcgen::DnType::CountryName,
                OID_L => rcgen::DnType::LocalityName,
                OID_ST => rcgen::DnType::StateOrProvinceName,
                OID_O => rcgen::DnType::OrganizationName,
                OID_OU => rcgen::DnType::OrganizationalUnitName,
                _ => {
                    let arcs: Option<Vec<u64>> = attr.attr_type().iter().map(|i| i.collect());
                    let arcs =
                        arcs.ok_or_else(|| PkiError::Csr(format!("attribute type {oid} has arcs too large to copy")))?;
                    // X.660: at least two arcs, the first 0, 1 or 2, and the second below 40 under 0 and 1. The
                    // encoder the certificate is written with asserts this, so a CSR with such a type is refused
                    // here rather than failing (or panicking) at signing.
                    let valid = match arcs.as_slice() {
                        [first @ (0 | 1), second, ..] => *first <= 1 && *second < 40,
                        [2, _, ..] => true,
                        _ => false,
                    };
                    if !valid {
                        return Err(PkiError::Csr(format!(
                            "the subject has an attribute of type {oid:?}, which is not a valid object identifier"
                        )));
                    }
                    rcgen::DnType::CustomDnType(arcs)
                }
            };
            let value = attr.attr_value();
            let text = decode_string(value)
                .ok_or_else(|| PkiError::Csr(format!("the subject attribute {label} is not a string")))?;
            let dn_value = match value.tag() {
                Tag::PrintableString => rcgen::DnValue::PrintableString(
                    rcgen::string::PrintableString::try_from(text.as_str())
                        .map_err(|e| PkiError::Csr(format!("subject attribute {label}: {e}")))?,
                ),
                Tag::Ia5String => rcgen::DnValue::Ia5String(
                    rcgen::string::Ia5String::try_from(text.as_str())
                        .map_err(|e| PkiError::Csr(format!("subject attribute {label}: {e}")))?,
                ),
                _ => rcgen::DnValue::Utf8String(text),
            };
            dn.push(ty, dn_value);
        }
    }
    Ok(dn)
}
