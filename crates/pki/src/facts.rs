//! The `cf.tls_client_auth.*` values for a presented certificate, in Cloudflare's exact formats,
//! plus Portcullis' `portcullis.tls_client_auth.*` extension fields.
//!
//! Formats: DNs as described in [`crate::dn`]; serials and SKIs in upper-case hex; fingerprints in
//! lower-case hex of the DER; times as OpenSSL prints them (`Mar 21 13:35:00 2022 GMT`); RFC 9440
//! `Client-Cert` (`:base64:`, empty over 10 KiB) and `Client-Cert-Chain` (`:b64:, :b64:` as sent by
//! the client, empty over 16 KiB). The issuer serial and SKI come from the direct issuer: the
//! matching trust anchor, else the intermediate sent by the client whose key verifies the leaf's
//! signature (a name and key id alone are the client's to forge).
//!
//! This module only describes the certificate; verification results come from [`crate::verify`]
//! and are merged in by [`crate::Verifier::client_auth`]. The struct is plain data: mapping it to rule
//! fields is the proxy's job.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::der;
use crate::dn;
use crate::error::{PkiError, Result};
use crate::verify::{AuthStatus, Verdict};

/// Cloudflare's limit for `cert_rfc9440` (bytes of the encoded value).
pub const RFC9440_LEAF_LIMIT: usize = 10 * 1024;
/// Cloudflare's limit for `cert_chain_rfc9440`.
pub const RFC9440_CHAIN_LIMIT: usize = 16 * 1024;

/// What the facts need to know about a possible issuer (a trust anchor), parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerInfo {
    pub subject_der: Vec<u8>,
    pub key_id: Option<Vec<u8>>,
    /// Upper hex, as `cert_issuer_serial`.
    pub serial: String,
    /// Upper hex, as `cert_issuer_ski`.
    pub ski: String,
}

impl IssuerInfo {
    pub fn from_der(der: &[u8]) -> Result<IssuerInfo> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Certificate(e.to_string()))?;
        Ok(IssuerInfo::from_parsed(&cert))
    }

    fn from_parsed(cert: &X509Certificate<'_>) -> IssuerInfo {
        let key_id = subject_key_id(cert).map(<[u8]>::to_vec);
        IssuerInfo {
            subject_der: cert.subject().as_raw().to_vec(),
            ski: key_id.as_deref().map(|k| der::hex(k, true)).unwrap_or_default(),
            key_id,
            serial: der::hex(der::strip_leading_zeros(cert.raw_serial()), true),
        }
    }
}

/// Every `cf.tls_client_auth.*` field (21) and the `portcullis.tls_client_auth.*` extensions.
/// [`ClientAuthFacts::default`] is Cloudflare's placeholder for "no certificate presented".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientAuthFacts {
    pub cert_presented: bool,
    /// True for a valid chain, revoked or not (Cloudflare semantics).
    pub cert_verified: bool,
    /// Valid but revoked; implies `cert_verified`.
    pub cert_revoked: bool,
    pub cert_issuer_dn: String,
    pub cert_subject_dn: String,
    pub cert_issuer_dn_rfc2253: String,
    pub cert_subject_dn_rfc2253: String,
    pub cert_issuer_dn_legacy: String,
    pub cert_subject_dn_legacy: String,
    pub cert_serial: String,
    pub cert_issuer_serial: String,
    pub cert_fingerprint_sha256: String,
    pub cert_fingerprint_sha1: String,
    /// SHA-256 of the leaf's DER SubjectPublicKeyInfo, lower-case hex: a pin that survives re-issuance with the
    /// same key (Envoy's `verify_certificate_spki`, HPKP's pin, in hex).
    pub cert_spki_sha256: String,
    pub cert_not_before: String,
    pub cert_not_after: String,
    pub cert_ski: String,
    pub cert_issuer_ski: String,
    pub cert_rfc9440: String,
    pub cert_rfc9440_too_large: bool,
    pub cert_chain_rfc9440: String,
    pub cert_chain_rfc9440_too_large: bool,
    /// `SUCCESS`, `NONE` or `FAILED:<OpenSSL-style reason>` (Workers' `certVerified`).
    pub verify_result: String,
    /// The log status: `ok|absent|untrusted|notyetvalid|expired|revoked`.
    pub status: AuthStatus,
    pub san_dns: Vec<String>,
    pub san_uri: Vec<String>,
    pub san_email: Vec<String>,
    /// IP addresses in the subjectAltName, as text (`10.0.0.5`, `2001:db8::1`).
    pub san_ip: Vec<String>,
}

impl Default for ClientAuthFacts {
    fn default() -> Self {
        ClientAuthFacts {
            cert_presented: false,
            cert_verified: false,
            cert_revoked: false,
            cert_issuer_dn: String::new(),
            cert_subject_dn: String::new(),
            cert_issuer_dn_rfc2253: String::new(),
            cert_subject_dn_rfc2253: String::new(),
            cert_issuer_dn_legacy: String::new(),
            cert_subject_dn_legacy: String::new(),
            cert_serial: String::new(),
            cert_issuer_serial: String::new(),
            cert_fingerprint_sha256: String::new(),
            cert_fingerprint_sha1: String::new(),
            cert_spki_sha256: String::new(),
            cert_not_before: String::new(),
            cert_not_after: String::new(),
            cert_ski: String::new(),
            cert_issuer_ski: String::new(),
            cert_rfc9440: String::new(),
            cert_rfc9440_too_large: false,
            cert_chain_rfc9440: String::new(),
            cert_chain_rfc9440_too_large: false,
            verify_result: "NONE".to_owned(),
            status: AuthStatus::Absent,
            san_dns: Vec::new(),
            san_uri: Vec::new(),
            san_email: Vec::new(),
            san_ip: Vec::new(),
        }
    }
}

/// A field value, for callers that list or map the fields generically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactValue<'a> {
    Bool(bool),
    Str(&'a str),
    Array(&'a [String]),
}

/// How many fields [`ClientAuthFacts::fields`] lists.
pub const FACT_COUNT: usize = 29;

/// The fields that say how verification went rather than who the certificate names: the rest (subject, issuer,
/// serial, fingerprints, SANs, the PEMs) are whatever a client put in a certificate until it verified, so a
/// forwarder sends them only for a trusted one.
pub const OUTCOME_FIELDS: [&str; 8] = [
    "cf.tls_client_auth.cert_presented",
    "cf.tls_client_auth.cert_verified",
    "cf.tls_client_auth.cert_revoked",
    "cf.tls_client_auth.cert_rfc9440_too_large",
    "cf.tls_client_auth.cert_chain_rfc9440_too_large",
    "portcullis.tls_client_auth.verify_error",
    "portcullis.tls_client_auth.verify_result",
    "portcullis.tls_client_auth.cert_status",
];

/// Header names no certificate field may be forwarded under (`_` read as `-`, as some origins read it): framing,
/// hop-by-hop, routing and authentication fields, those the edge sets itself, and the forwarding styles' names.
/// `None` for a name that is free; otherwise why it is not. Shared by the admin API's check and the proxy's.
pub fn reserved_header(name: &str) -> Option<&'static str> {
    const EDGE_OWN: [&str; 20] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "expect",
        "cookie",
        "authorization",
        "proxy-authorization",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "true-client-ip",
    ];
    const STYLE_PREFIXES: [&str; 4] = ["cf-client-cert-", "cf-cert-", "client-cert", "x-forwarded-client-cert"];
    let spelled = name.to_ascii_lowercase().replace('_', "-");
    if EDGE_OWN.contains(&spelled.as_str()) {
        Some("the edge sets or reads this field itself; choose another name")
    } else if STYLE_PREFIXES.iter().any(|p| spelled.starts_with(p)) {
        Some("a forwarding style writes this name (client_certificate_forwarding); choose another")
    } else {
        None
    }
}

impl ClientAuthFacts {
    /// Field names (`cf.tls_client_auth.*` then `portcullis.tls_client_auth.*`) and values, in a stable order.
    /// An array, not a `Vec`: the proxy calls this per request when a rule reads a certificate field, and
    /// the list is larger than an allocator's small-size fast path.
    pub fn fields(&self) -> [(&'static str, FactValue<'_>); FACT_COUNT] {
        use FactValue::{Array, Bool, Str};
        [
            ("cf.tls_client_auth.cert_presented", Bool(self.cert_presented)),
            ("cf.tls_client_auth.cert_verified", Bool(self.cert_verified)),
            ("cf.tls_client_auth.cert_revoked", Bool(self.cert_revoked)),
            ("cf.tls_client_auth.cert_issuer_dn", Str(&self.cert_issuer_dn)),
            ("cf.tls_client_auth.cert_subject_dn", Str(&self.cert_subject_dn)),
            (
                "cf.tls_client_auth.cert_issuer_dn_rfc2253",
                Str(&self.cert_issuer_dn_rfc2253),
            ),
            (
                "cf.tls_client_auth.cert_subject_dn_rfc2253",
                Str(&self.cert_subject_dn_rfc2253),
            ),
            (
                "cf.tls_client_auth.cert_issuer_dn_legacy",
                Str(&self.cert_issuer_dn_legacy),
            ),
            (
                "cf.tls_client_auth.cert_subject_dn_legacy",
                Str(&self.cert_subject_dn_legacy),
            ),
            ("cf.tls_client_auth.cert_serial", Str(&self.cert_serial)),
            ("cf.tls_client_auth.cert_issuer_serial", Str(&self.cert_issuer_serial)),
            (
                "cf.tls_client_auth.cert_fingerprint_sha256",
                Str(&self.cert_fingerprint_sha256),
            ),
            (
                "cf.tls_client_auth.cert_fingerprint_sha1",
                Str(&self.cert_fingerprint_sha1),
            ),
            ("cf.tls_client_auth.cert_not_before", Str(&self.cert_not_before)),
            ("cf.tls_client_auth.cert_not_after", Str(&self.cert_not_after)),
            ("cf.tls_client_auth.cert_ski", Str(&self.cert_ski)),
            ("cf.tls_client_auth.cert_issuer_ski", Str(&self.cert_issuer_ski)),
            ("cf.tls_client_auth.cert_rfc9440", Str(&self.cert_rfc9440)),
            (
                "cf.tls_client_auth.cert_rfc9440_too_large",
                Bool(self.cert_rfc9440_too_large),
            ),
            ("cf.tls_client_auth.cert_chain_rfc9440", Str(&self.cert_chain_rfc9440)),
            (
                "cf.tls_client_auth.cert_chain_rfc9440_too_large",
                Bool(self.cert_chain_rfc9440_too_large),
            ),
            ("portcullis.tls_client_auth.verify_error", Str(self.verify_error())),
            (
                "portcullis.tls_client_auth.verify_result",
                Str(self.nginx_verify_result()),
            ),
            ("portcullis.tls_client_auth.cert_status", Str(self.status.as_str())),
            ("portcullis.tls_client_auth.cert_san_dns", Array(&self.san_dns)),
            ("portcullis.tls_client_auth.cert_san_uri", Array(&self.san_uri)),
            ("portcullis.tls_client_auth.cert_san_email", Array(&self.san_email)),
            ("portcullis.tls_client_auth.cert_san_ip", Array(&self.san_ip)),
            (
                "portcullis.tls_client_auth.cert_spki_sha256",
                Str(&self.cert_spki_sha256),
            ),
        ]
    }

    /// Why the certificate is not trusted, OpenSSL-style (`certificate has expired`, `certificate revoked`); `""`
    /// when it is trusted or none was presented. The rule field `portcullis.tls_client_auth.verify_error`.
    pub fn verify_error(&self) -> &str {
        self.nginx_verify_result().strip_prefix("FAILED:").unwrap_or("")
    }

    /// `SUCCESS`, `NONE` or `FAILED:<reason>` as NGINX's `$ssl_client_verify` has it: a revoked certificate is
    /// `FAILED:certificate revoked` (where [`ClientAuthFacts::verify_result`], Workers' `certVerified`, says
    /// `SUCCESS` beside `cert_revoked`). The rule field `portcullis.tls_client_auth.verify_result`.
    pub fn nginx_verify_result(&self) -> &str {
        if self.cert_revoked {
            "FAILED:certificate revoked"
        } else {
            &self.verify_result
        }
    }

    /// Copies a verification result in.
    pub fn apply(&mut self, verdict: &Verdict) {
        self.cert_presented = verdict.presented;
        self.cert_verified = verdict.verified;
        self.cert_revoked = verdict.revoked;
        self.verify_result.clone_from(&verdict.reason);
        self.status = verdict.status;
    }
}

pub(crate) fn subject_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.iter_extensions().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
        _ => None,
    })
}

fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.iter_extensions().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    })
}

fn rfc9440(der: &[u8]) -> String {
    let mut out = String::with_capacity(der.len() * 4 / 3 + 6);
    out.push(':');
    STANDARD.encode_string(der, &mut out);
    out.push(':');
    out
}

/// The certificate facts for `chain` (leaf first, then the intermediates as the client sent them),
/// with `anchors` as possible issuers. Verification fields keep their placeholder values except
/// `cert_presented`; see [`crate::Verifier::client_auth`] for the complete picture.
pub fn compute_facts(chain: &[CertificateDer<'_>], anchors: &[IssuerInfo]) -> ClientAuthFacts {
    let mut facts = ClientAuthFacts::default();
    let Some(leaf_der) = chain.first() else {
        return facts;
    };
    facts.cert_presented = true;
    let leaf_bytes: &[u8] = leaf_der.as_ref();

    let encoded = rfc9440(leaf_bytes);
    if encoded.len() > RFC9440_LEAF_LIMIT {
        facts.cert_rfc9440_too_large = true;
    } else {
        facts.cert_rfc9440 = encoded;
    }
    if chain.len() > 1 {
        let parts: Vec<String> = chain[1..].iter().map(|c| rfc9440(c.as_ref())).collect();
        let joined = parts.join(", ");
        if joined.len() > RFC9440_CHAIN_LIMIT {
            facts.cert_chain_rfc9440_too_large = true;
        } else {
            facts.cert_chain_rfc9440 = joined;
        }
    }
    facts.cert_fingerprint_sha256 = der::hex(digest::digest(&digest::SHA256, leaf_bytes).as_ref(), false);
    facts.cert_fingerprint_sha1 = der::hex(
        digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, leaf_bytes).as_ref(),
        false,
    );

    let Ok((_, leaf)) = X509Certificate::from_der(leaf_bytes) else {
        return facts;
    };
    let subject = leaf.subject();
    let issuer = leaf.issuer();
    facts.cert_subject_dn = dn::cloudflare(subject);
    facts.cert_subject_dn_rfc2253 = dn::rfc2253(subject);
    facts.cert_subject_dn_legacy = dn::legacy(subject);
    facts.cert_issuer_dn = dn::cloudflare(issuer);
    facts.cert_issuer_dn_rfc2253 = dn::rfc2253(issuer);
    facts.cert_issuer_dn_legacy = dn::legacy(issuer);
    facts.cert_serial = der::hex(der::strip_leading_zeros(leaf.raw_serial()), true);
    facts.cert_not_before = der::openssl_time(der::from_timestamp(leaf.validity().not_before.timestamp()));
    facts.cert_not_after = der::openssl_time(der::from_timestamp(leaf.validity().not_after.timestamp()));
    facts.cert_ski = subject_key_id(&leaf).map(|k| der::hex(k, true)).unwrap_or_default();
    facts.cert_spki_sha256 = der::hex(digest::digest(&digest::SHA256, leaf.public_key().raw).as_ref(), false);
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) => facts.san_dns.push((*s).to_owned()),
                GeneralName::URI(s) => facts.san_uri.push((*s).to_owned()),
                GeneralName::RFC822Name(s) => facts.san_email.push((*s).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        // Other lengths belong to name constraints, not to a certificate's own names.
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        facts.san_ip.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }

    let aki = authority_key_id(&leaf);
    let issuer_raw = issuer.as_raw();
    let key_matches = |key_id: Option<&[u8]>| match (aki, key_id) {
        (Some(a), Some(k)) => a == k,
        _ => true,
    };
    // The configured anchors first: the client sends the rest, and could send a certificate of its own making with
    // the issuer's name and key id, so one from the chain counts only if its key verifies the leaf's signature
    // (a verification only for leaves under an intermediate that is not itself an anchor).
    let from_anchors = anchors
        .iter()
        .find(|a| a.subject_der.as_slice() == issuer_raw && key_matches(a.key_id.as_deref()));
    let from_chain = || {
        chain[1..].iter().find_map(|c| {
            let (_, cert) = X509Certificate::from_der(c.as_ref()).ok()?;
            (key_matches(subject_key_id(&cert)) && crate::keys::issued_by(&leaf, &cert))
                .then(|| IssuerInfo::from_parsed(&cert))
        })
    };
    let found = match from_anchors {
        Some(info) => Some(info.clone()),
        None => from_chain(),
    };
    if let Some(info) = &found {
        facts.cert_issuer_serial.clone_from(&info.serial);
        facts.cert_issuer_ski.clone_from(&info.ski);
    }
    facts
}
