//! A zone's name policy for the client certificates the managed CA issues: which names a certificate may carry, by
//! kind, as step-ca's and Vault's name policies have it. Every name of the certificate must match a pattern of its
//! own kind: each subject attribute (`cn:`, `o:`, `ou:`, `c:`, `st:`, `l:`; any other attribute is refused) and each
//! subject alternative name (`dns:`, `uri:`, `email:`, and `ip:` with an address or a CIDR block). A certificate
//! must name something (a common name or a SAN).
//!
//! In a pattern `*` stands for any run of characters within one part of a name, never across the separators that
//! give the name its structure: a DNS label (`.`), a URI path segment (`/`, `?`, `#`), an email's local part or
//! domain (`@`). Subject attribute values may not contain the characters that give a DN its structure
//! (`, + = \ " < > ; #`), so `cn:device-*` can never match `device-1,OU=admins`. URIs with dot segments
//! (`/../`) are refused. Case is ignored except in URIs.
//!
//! Not here: how long a certificate lives (the admin API's `max_validity_days`), or where a policy is stored.

use std::net::IpAddr;

use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::x509::X509Name;

use crate::dn::{OID_C, OID_CN, OID_L, OID_O, OID_OU, OID_ST, decode_string};
use crate::error::{PkiError, Result};

/// The kind of a name, as a pattern's prefix names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Dns,
    Uri,
    Email,
    Ip,
    Cn,
    O,
    Ou,
    C,
    St,
    L,
}

impl NameKind {
    const ALL: [(NameKind, &'static str); 10] = [
        (NameKind::Dns, "dns"),
        (NameKind::Uri, "uri"),
        (NameKind::Email, "email"),
        (NameKind::Ip, "ip"),
        (NameKind::Cn, "cn"),
        (NameKind::O, "o"),
        (NameKind::Ou, "ou"),
        (NameKind::C, "c"),
        (NameKind::St, "st"),
        (NameKind::L, "l"),
    ];

    pub fn prefix(self) -> &'static str {
        NameKind::ALL.iter().find(|(k, _)| *k == self).map_or("", |(_, p)| p)
    }

    fn is_subject_attribute(self) -> bool {
        matches!(
            self,
            NameKind::Cn | NameKind::O | NameKind::Ou | NameKind::C | NameKind::St | NameKind::L
        )
    }

    /// The characters `*` does not match in names of this kind.
    fn separators(self) -> &'static [u8] {
        match self {
            NameKind::Dns => b".",
            NameKind::Uri => b"/?#",
            NameKind::Email => b"@",
            _ => b"",
        }
    }
}

/// Characters that give a DN its structure: no subject attribute value under a policy may hold one.
const DN_STRUCTURE: &[char] = &[',', '+', '=', '\\', '"', '<', '>', ';', '#'];

#[derive(Debug, Clone)]
enum Rule {
    Glob(NameKind, String),
    Net(IpAddr, u8),
}

/// Parsed patterns; empty allows any name.
#[derive(Debug, Clone, Default)]
pub struct NamePolicy {
    rules: Vec<Rule>,
}

impl NamePolicy {
    /// Parses `kind:pattern` strings; an error names the pattern and what is wrong with it.
    pub fn parse(patterns: &[String]) -> std::result::Result<NamePolicy, String> {
        let kinds = NameKind::ALL.map(|(_, p)| format!("{p}:")).join(", ");
        let mut rules = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let (prefix, body) = pattern
                .split_once(':')
                .ok_or_else(|| format!("{pattern:?} names no kind of name: start it with one of {kinds}"))?;
            let prefix = prefix.to_ascii_lowercase();
            let kind = NameKind::ALL
                .iter()
                .find(|(_, p)| *p == prefix)
                .map(|(k, _)| *k)
                .ok_or_else(|| format!("{pattern:?}: {prefix:?} is not a kind of name; the kinds are {kinds}"))?;
            if body.is_empty() || body.chars().any(char::is_control) {
                return Err(format!("{pattern:?}: the pattern is empty or holds control characters"));
            }
            if kind == NameKind::Ip {
                let (addr, len) = match body.split_once('/') {
                    Some((addr, len)) => (addr, Some(len)),
                    None => (body, None),
                };
                let addr: IpAddr = addr
                    .parse()
                    .map_err(|_| format!("{pattern:?}: an ip: pattern is an address or a CIDR block (10.0.0.0/8)"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let len = match len {
                    None => max,
                    Some(len) => len
                        .parse::<u8>()
                        .ok()
                        .filter(|l| *l <= max)
                        .ok_or_else(|| format!("{pattern:?}: the prefix length must be 0 to {max}"))?,
                };
                rules.push(Rule::Net(addr, len));
            } else {
                if kind.is_subject_attribute() && body.contains(DN_STRUCTURE) {
                    return Err(format!(
                        "{pattern:?}: a subject attribute may not hold any of , + = \\ \" < > ; #"
                    ));
                }
                rules.push(Rule::Glob(kind, body.to_owned()));
            }
        }
        Ok(NamePolicy { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Refuses `names` unless each matches a pattern of its kind and one of them is a common name or a SAN.
    pub fn check(&self, names: &[(NameKind, String)]) -> Result<()> {
        if self.rules.is_empty() {
            return Ok(());
        }
        if !names.iter().any(|(k, _)| {
            matches!(
                k,
                NameKind::Cn | NameKind::Dns | NameKind::Uri | NameKind::Email | NameKind::Ip
            )
        }) {
            return Err(PkiError::NameNotAllowed(
                "a certificate with neither a common name nor a subject alternative name".into(),
            ));
        }
        for (kind, name) in names {
            if !self.allows(*kind, name) {
                return Err(PkiError::NameNotAllowed(format!(
                    "the name \"{}:{name}\"",
                    kind.prefix()
                )));
            }
        }
        Ok(())
    }

    fn allows(&self, kind: NameKind, name: &str) -> bool {
        if kind.is_subject_attribute() && name.contains(DN_STRUCTURE) {
            return false;
        }
        if kind == NameKind::Uri && has_dot_segment(name) {
            return false;
        }
        self.rules.iter().any(|rule| match rule {
            Rule::Glob(k, pattern) => {
                *k == kind
                    && glob(
                        pattern.as_bytes(),
                        name.as_bytes(),
                        kind.separators(),
                        kind != NameKind::Uri,
                    )
            }
            Rule::Net(net, len) => kind == NameKind::Ip && name.parse().is_ok_and(|ip| in_net(ip, *net, *len)),
        })
    }
}

/// Whether a URI's path has a `.` or `..` segment, plain or percent-encoded, which a server may resolve into
/// another path than the one a pattern allowed.
fn has_dot_segment(uri: &str) -> bool {
    let path = uri.split(['?', '#']).next().unwrap_or("");
    let path = path.split_once("://").map_or(path, |(_, rest)| rest);
    path.split('/').skip(1).any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let (ip, net, bits) = match (ip.to_canonical(), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(a.to_bits()), u128::from(n.to_bits()), 32u32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (a.to_bits(), n.to_bits(), 128u32),
        _ => return false,
    };
    let len = u32::from(len);
    if len == 0 {
        return true;
    }
    let shift = bits - len;
    (ip >> shift) == (net >> shift)
}

/// `*` stands for any run (none included) of bytes other than `separators`; ASCII case folded when `fold`. The
/// greedy matcher with one backtrack point: linear in practice, never exponential.
fn glob(pattern: &[u8], name: &[u8], separators: &[u8], fold: bool) -> bool {
    let same = |a: u8, b: u8| if fold { a.eq_ignore_ascii_case(&b) } else { a == b };
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < name.len() {
        if pi < pattern.len() && pattern[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < pattern.len() && same(pattern[pi], name[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star.filter(|(_, sn)| !separators.contains(&name[*sn])) {
            // The star takes one more byte, unless that byte is a separator it may not cross.
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[pi..].iter().all(|&c| c == b'*')
}

/// The subject's attributes as names; an attribute other than CN, O, OU, C, ST and L is refused (a policy could not
/// say whether it is allowed), as is one that is not a string.
pub(crate) fn subject_names(subject: &X509Name<'_>) -> Result<Vec<(NameKind, String)>> {
    let mut out = Vec::new();
    for attr in subject.iter_attributes() {
        let oid = attr.attr_type().to_id_string();
        let kind = match oid.as_str() {
            OID_CN => NameKind::Cn,
            OID_O => NameKind::O,
            OID_OU => NameKind::Ou,
            OID_C => NameKind::C,
            OID_ST => NameKind::St,
            OID_L => NameKind::L,
            _ => {
                return Err(PkiError::NameNotAllowed(format!(
                    "a subject attribute of type {oid} (the zone's policy allows only CN, O, OU, C, ST and L)"
                )));
            }
        };
        let value = decode_string(attr.attr_value())
            .ok_or_else(|| PkiError::NameNotAllowed(format!("a {} that is not a string", kind.prefix())))?;
        out.push((kind, value));
    }
    Ok(out)
}

/// The names of subject alternative names as the issuer copies them; any other kind is refused.
pub(crate) fn san_names(names: &[GeneralName<'_>]) -> Result<Vec<(NameKind, String)>> {
    let mut out = Vec::new();
    for name in names {
        out.push(match name {
            GeneralName::DNSName(s) => (NameKind::Dns, (*s).to_owned()),
            GeneralName::URI(s) => (NameKind::Uri, (*s).to_owned()),
            GeneralName::RFC822Name(s) => (NameKind::Email, (*s).to_owned()),
            GeneralName::IPAddress(bytes) => match ip_of(bytes) {
                Some(ip) => (NameKind::Ip, ip.to_string()),
                None => return Err(PkiError::NameNotAllowed("an IP address SAN of the wrong length".into())),
            },
            other => {
                return Err(PkiError::NameNotAllowed(format!(
                    "a subject alternative name of another kind ({other:?})"
                )));
            }
        });
    }
    Ok(out)
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(a))
    } else {
        <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
    }
}

/// Every name of an issued certificate (DER), for checking one against a policy again (a reactivation).
pub fn certificate_names(der: &[u8]) -> Result<Vec<(NameKind, String)>> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| PkiError::Certificate(format!("cannot parse the certificate ({e})")))?;
    let mut names = subject_names(cert.subject())?;
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            names.extend(san_names(&san.general_names)?);
        }
    }
    Ok(names)
}
