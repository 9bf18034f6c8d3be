//! Bring-your-own CA: validating an uploaded CA bundle and CRLs for it.
//!
//! An upload must contain only `CERTIFICATE` blocks (private keys and CSRs are refused by name),
//! every certificate must have `basicConstraints CA:TRUE`, be signed with RSA or ECDSA over
//! SHA-1/256/384/512 (Cloudflare's list) and be valid at upload time. The first certificate is the
//! issuing CA and describes the `mtls_certificates` record. The CRLs uploaded for a BYO CA must each
//! be signed by a certificate of its bundle, one per certificate at most. Nothing is stored here.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::der;
use crate::dn;
use crate::error::{PkiError, Result};
use crate::keys;
use crate::pem;

/// Cloudflare's `mtls_certificates` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtlsCertificateRecord {
    pub id: String,
    pub ca: bool,
    /// The bundle as normalized PEM.
    pub certificates: String,
    pub expires_on: String,
    /// Issuer DN of the first certificate (Cloudflare style, see [`crate::dn::cloudflare`]).
    pub issuer: String,
    pub name: String,
    /// Decimal, as Cloudflare's API shows BYO CA serials.
    pub serial_number: String,
    pub signature: String,
    pub uploaded_on: String,
}

/// A validated upload.
#[derive(Debug, Clone)]
pub struct UploadedCa {
    pub record: MtlsCertificateRecord,
    /// DER of every certificate, issuing CA first.
    pub certificates_der: Vec<Vec<u8>>,
}

/// A CRL whose signature was checked against its CA.
#[derive(Debug, Clone)]
pub struct UploadedCrl {
    pub der: Vec<u8>,
    /// The issuing CA's subject, in Cloudflare's DN format.
    pub issuer: String,
    pub this_update: OffsetDateTime,
    pub next_update: Option<OffsetDateTime>,
    pub entries: usize,
    /// Revoked serials, magnitude without leading zeros.
    pub revoked_serials: Vec<Vec<u8>>,
}

const ALLOWED_SIGNATURES: [&str; 8] = [
    "SHA1WithRSA",
    "SHA256WithRSA",
    "SHA384WithRSA",
    "SHA512WithRSA",
    "ECDSAWithSHA1",
    "ECDSAWithSHA256",
    "ECDSAWithSHA384",
    "ECDSAWithSHA512",
];

/// Validates an uploaded CA bundle (PEM) and builds its record.
pub fn parse_ca_bundle(pem_text: &str, name: &str, now: OffsetDateTime) -> Result<UploadedCa> {
    let blocks = pem::parse_blocks(pem_text)?;
    if blocks.is_empty() {
        return Err(PkiError::Pem("no -----BEGIN CERTIFICATE----- block found".into()));
    }
    for (i, b) in blocks.iter().enumerate() {
        match b.label.as_str() {
            "CERTIFICATE" => {}
            l if l.contains("PRIVATE KEY") => {
                return Err(PkiError::InvalidParameter(format!(
                    "block {} is a private key ({l}); the certificates field takes CA certificates only",
                    i + 1
                )));
            }
            l if l.contains("CERTIFICATE REQUEST") => {
                return Err(PkiError::InvalidParameter(format!(
                    "block {} is a certificate signing request; the certificates field takes CA certificates only",
                    i + 1
                )));
            }
            l => {
                return Err(PkiError::InvalidParameter(format!(
                    "block {} is a {l}; the certificates field takes CA certificates only",
                    i + 1
                )));
            }
        }
    }
    let mut record = None;
    for (i, b) in blocks.iter().enumerate() {
        let n = i + 1;
        let (rest, cert) =
            X509Certificate::from_der(&b.der).map_err(|e| PkiError::Certificate(format!("certificate {n}: {e}")))?;
        if !rest.is_empty() {
            return Err(PkiError::Certificate(format!("certificate {n}: trailing data")));
        }
        let subject = dn::cloudflare(cert.subject());
        match cert.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => {
                return Err(PkiError::NotCa(format!(
                    "certificate {n} ({subject}) lacks basicConstraints CA:TRUE; upload the CA that issued your client certificates, not a client certificate"
                )));
            }
            Err(e) => return Err(PkiError::Certificate(format!("certificate {n}: {e}"))),
        }
        let sig = keys::signature_name_or_oid(&cert.signature_algorithm);
        if !ALLOWED_SIGNATURES.contains(&sig.as_str()) {
            return Err(PkiError::UnsupportedSignature(format!(
                "certificate {n} ({subject}) is signed with {sig}; allowed are RSA and ECDSA with SHA-1/256/384/512"
            )));
        }
        let not_before = der::from_timestamp(cert.validity().not_before.timestamp());
        let not_after = der::from_timestamp(cert.validity().not_after.timestamp());
        if now > not_after {
            return Err(PkiError::CaValidity(format!(
                "certificate {n} ({subject}) expired on {}",
                der::rfc3339(not_after)
            )));
        }
        if now < not_before {
            return Err(PkiError::CaValidity(format!(
                "certificate {n} ({subject}) is not valid before {}",
                der::rfc3339(not_before)
            )));
        }
        if record.is_none() {
            record = Some(MtlsCertificateRecord {
                id: der::random_id(),
                ca: true,
                certificates: String::new(),
                expires_on: der::rfc3339(not_after),
                issuer: dn::cloudflare(cert.issuer()),
                name: name.to_owned(),
                serial_number: der::decimal(der::strip_leading_zeros(cert.raw_serial())),
                signature: sig,
                uploaded_on: der::rfc3339(now),
            });
        }
    }
    let mut record = record.ok_or_else(|| PkiError::Pem("no certificate found".into()))?;
    record.certificates = blocks.iter().map(|b| pem::encode("CERTIFICATE", &b.der)).collect();
    Ok(UploadedCa {
        record,
        certificates_der: blocks.into_iter().map(|b| b.der).collect(),
    })
}

/// One certificate an uploaded CA issued, as an operator's revocation at the edge names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Its issuer name: raw DER without the outer SEQUENCE header, as webpki reads it.
    pub issuer: Vec<u8>,
    /// Its issuer name, RFC 2253, for people.
    pub issuer_text: String,
    /// Its serial number, big-endian magnitude.
    pub serial: Vec<u8>,
    /// SHA-256 of its DER (`cf.tls_client_auth.cert_fingerprint_sha256`), for people: matching is by issuer and
    /// serial, which whoever holds the certificate cannot change.
    pub fingerprint_sha256: [u8; 32],
}

/// The one certificate in `cert` (PEM or DER), after checking that a certificate of `bundle` (an uploaded CA's PEM)
/// issued it: its issuer name and signature. It may be a client's certificate or an intermediate CA's.
pub fn issued_certificate(cert: &[u8], bundle: &[u8]) -> Result<IssuedCertificate> {
    let certs = pem::certificates_from_pem_or_der(cert)?;
    let [leaf_der] = certs.as_slice() else {
        return Err(PkiError::Certificate(format!(
            "expected one certificate, found {}",
            certs.len()
        )));
    };
    let (rest, leaf) = X509Certificate::from_der(leaf_der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PkiError::Certificate("trailing data after the certificate".into()));
    }
    if leaf.version() != x509_parser::x509::X509Version::V3 {
        return Err(PkiError::Certificate(format!(
            "it is an X.509 {} certificate; the edge trusts only v3 ones, so it needs no revoking",
            match leaf.version().0 {
                0 => "v1",
                1 => "v2",
                _ => "unknown-version",
            }
        )));
    }
    let cas = pem::certificates_from_pem_or_der(bundle)?;
    let issued = cas
        .iter()
        .any(|ca| X509Certificate::from_der(ca).is_ok_and(|(_, ca)| keys::issued_by(&leaf, &ca)));
    if !issued {
        return Err(PkiError::Certificate(
            "no certificate of this CA issued it (issuer name or signature does not match)".into(),
        ));
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf_der);
    let (issuer, serial) = crate::verify::issuer_key(&leaf);
    Ok(IssuedCertificate {
        issuer,
        issuer_text: dn::rfc2253(leaf.issuer()),
        serial,
        fingerprint_sha256: <[u8; 32]>::try_from(digest.as_ref())
            .map_err(|_| PkiError::Certificate("digest length".into()))?,
    })
}

/// Where the CRL distribution points of the certificates in `pem_or_der` (PEM, one or more, or one DER certificate)
/// say the CRL of each one's issuer is published (RFC 5280 4.2.1.13): the first `http://` or `https://` name of each
/// point (the others name the same CRL elsewhere, and fetching both would give two CRLs of one CA), in order,
/// without repeats. A client certificate's points name its CA's CRL; a bundle intermediate's, its root's. Other
/// schemes (`ldap://`) and relative names are left out: the server fetches over HTTP only. Nothing is fetched or
/// trusted here; the caller decides whether to fetch from them.
pub fn crl_distribution_points(pem_or_der: &[u8]) -> Result<Vec<String>> {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let mut urls: Vec<String> = Vec::new();
    for der in pem::certificates_from_pem_or_der(pem_or_der)? {
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| PkiError::Certificate(e.to_string()))?;
        for ext in cert.extensions() {
            let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() else {
                continue;
            };
            for point in points.iter() {
                let Some(DistributionPointName::FullName(names)) = &point.distribution_point else {
                    continue;
                };
                let first_http = names.iter().find_map(|name| match name {
                    GeneralName::URI(uri)
                        if ["http://", "https://"].iter().any(|scheme| {
                            uri.len() > scheme.len()
                                && uri.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme))
                        }) =>
                    {
                        Some(*uri)
                    }
                    _ => None,
                });
                if let Some(uri) = first_http
                    && !urls.iter().any(|u| u.eq_ignore_ascii_case(uri))
                {
                    urls.push(uri.to_owned());
                }
            }
        }
    }
    Ok(urls)
}

/// When the first certificate of `pem_or_der` expires: for expiry metrics.
pub fn certificate_not_after(pem_or_der: &[u8]) -> Result<OffsetDateTime> {
    certificate_validity(pem_or_der).map(|(_, not_after)| not_after)
}

/// `notBefore` and `notAfter` of the first certificate in `pem_or_der`, without checking anything else: for
/// metrics of certificates that were checked when stored.
pub fn certificate_validity(pem_or_der: &[u8]) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let first = pem::certificates_from_pem_or_der(pem_or_der)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Certificate("no certificate".into()))?;
    let (_, cert) = X509Certificate::from_der(&first).map_err(|e| PkiError::Certificate(e.to_string()))?;
    let validity = cert.validity();
    Ok((
        der::from_timestamp(validity.not_before.timestamp()),
        der::from_timestamp(validity.not_after.timestamp()),
    ))
}

/// The issuer name (RFC 2253) of the first certificate in `pem_or_der`, for people.
pub fn certificate_issuer(pem_or_der: &[u8]) -> Result<String> {
    let first = pem::certificates_from_pem_or_der(pem_or_der)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Certificate("no certificate".into()))?;
    let (_, cert) = X509Certificate::from_der(&first).map_err(|e| PkiError::Certificate(e.to_string()))?;
    Ok(dn::rfc2253(cert.issuer()))
}

/// The earliest `nextUpdate` of the CRLs in `crls` (PEM, possibly several, or one DER; `None` when none has one),
/// without checking signatures: for expiry metrics of CRLs that were checked when uploaded.
pub fn crl_next_update(crls: &[u8]) -> Result<Option<OffsetDateTime>> {
    let mut earliest = None;
    for der in pem::crls_from_pem_or_der(crls)? {
        if let Some(next) = one_crl_next_update(&der)? {
            earliest = Some(earliest.map_or(next, |e: OffsetDateTime| e.min(next)));
        }
    }
    Ok(earliest)
}

fn one_crl_next_update(crl_der: &[u8]) -> Result<Option<OffsetDateTime>> {
    let (_, parsed) = CertificateRevocationList::from_der(crl_der)
        .map_err(|e| PkiError::Crl(format!("cannot parse the DER ({e})")))?;
    Ok(parsed
        .tbs_cert_list
        .next_update
        .map(|t| der::from_timestamp(t.timestamp())))
}

/// Checks the CRLs in `crls` (PEM with one or more `X509 CRL` blocks, or one DER CRL) for an uploaded CA bundle
/// (`bundle`: its certificates' DER): each must be signed by a certificate of the bundle, at most one per
/// certificate, so that a bundle of a root and its intermediates can have a CRL for each. Returns them in order.
pub fn check_crls_for_bundle(bundle: &[Vec<u8>], crls: &[u8]) -> Result<Vec<UploadedCrl>> {
    let ders = pem::crls_from_pem_or_der(crls).map_err(|e| PkiError::Crl(e.to_string()))?;
    let mut out: Vec<UploadedCrl> = Vec::with_capacity(ders.len());
    for (n, der) in ders.iter().enumerate() {
        let mut last = None;
        let mut found = None;
        for ca in bundle {
            match check_crl_der(ca, der) {
                Ok(crl) => {
                    found = Some(crl);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let crl = match (found, last) {
            (Some(crl), _) => crl,
            // With one CA, its own reason (wrong issuer, bad signature) says the most.
            (None, Some(e)) if bundle.len() == 1 => return Err(e),
            (None, _) => {
                return Err(PkiError::CrlIssuer(format!(
                    "CRL {} was not issued by any certificate of the bundle (issuer name or signature does not match)",
                    n + 1
                )));
            }
        };
        if let Some(other) = out.iter().position(|c| c.issuer == crl.issuer) {
            return Err(PkiError::Crl(format!(
                "CRLs {} and {} are both from {}: upload one CRL per CA",
                other + 1,
                n + 1,
                crl.issuer
            )));
        }
        out.push(crl);
    }
    Ok(out)
}

/// Refuses a CRL that does not list every revoked certificate of its CA, since the CA's revocations are taken to be
/// exactly what it lists (a newer one replaces the one before): a delta CRL, one limited to CA certificates,
/// attribute certificates or some revocation reasons, an indirect CRL, and one with a critical extension this
/// code does not know (RFC 5280 §5.2 forbids using it). `onlyContainsUserCerts` is kept: client certificates are
/// user certificates.
fn check_crl_scope(extensions: &[x509_parser::extensions::X509Extension<'_>]) -> Result<()> {
    use x509_parser::extensions::ParsedExtension;
    const KNOWN: [&str; 8] = [
        "2.5.29.20",            // CRL number
        "2.5.29.35",            // authority key identifier
        "2.5.29.28",            // issuing distribution point (checked below)
        "2.5.29.18",            // issuer alternative name
        "2.5.29.46",            // freshest CRL (where delta CRLs are; this one is complete)
        "2.5.29.60",            // expired certificates on CRL
        "1.3.6.1.5.5.7.1.1",    // authority information access
        "1.3.6.1.4.1.311.21.1", // Microsoft CA version
    ];
    for ext in extensions {
        let oid = ext.oid.to_id_string();
        if oid == "2.5.29.27" {
            return Err(PkiError::Crl(
                "it is a delta CRL, which lists only the changes since a full one; use the CA's full CRL".into(),
            ));
        }
        if let ParsedExtension::IssuingDistributionPoint(idp) = ext.parsed_extension() {
            let limit = if idp.only_contains_ca_certs {
                Some("only CA certificates")
            } else if idp.only_contains_attribute_certs {
                Some("only attribute certificates")
            } else if idp.only_some_reasons.is_some() {
                Some("only some revocation reasons")
            } else if idp.indirect_crl {
                Some("certificates of other CAs (an indirect CRL)")
            } else {
                None
            };
            if let Some(limit) = limit {
                return Err(PkiError::Crl(format!(
                    "its issuing distribution point limits it to {limit}; use the CA's CRL of all its certificates"
                )));
            }
        } else if oid == "2.5.29.28" {
            return Err(PkiError::Crl("its issuing distribution point cannot be read".into()));
        }
        if ext.critical && !KNOWN.contains(&oid.as_str()) {
            return Err(PkiError::Crl(format!(
                "it has the critical extension {oid}, which Portcullis does not know, so cannot use it (RFC 5280)"
            )));
        }
    }
    Ok(())
}

/// Checks that `crl` (PEM or DER) is a well-formed CRL signed by `ca_der`.
pub fn check_crl_for_ca(ca_der: &[u8], crl: &[u8]) -> Result<UploadedCrl> {
    let crl_der = pem::single_from_pem_or_der(crl, "X509 CRL").map_err(|e| PkiError::Crl(e.to_string()))?;
    check_crl_der(ca_der, &crl_der)
}

pub(crate) fn check_crl_der(ca_der: &[u8], crl_der: &[u8]) -> Result<UploadedCrl> {
    let (_, ca) = X509Certificate::from_der(ca_der).map_err(|e| PkiError::Certificate(format!("CA: {e}")))?;
    let (rest, parsed) = CertificateRevocationList::from_der(crl_der)
        .map_err(|e| PkiError::Crl(format!("cannot parse the DER ({e})")))?;
    if !rest.is_empty() {
        return Err(PkiError::Crl(format!("{} trailing bytes after the CRL", rest.len())));
    }
    let tbs = &parsed.tbs_cert_list;
    if tbs.issuer.as_raw() != ca.subject().as_raw() {
        return Err(PkiError::CrlIssuer(format!(
            "it was issued by {}, not by {}",
            dn::cloudflare(&tbs.issuer),
            dn::cloudflare(ca.subject())
        )));
    }
    keys::verify_signed_data(
        ca.public_key(),
        &parsed.signature_algorithm,
        tbs.as_ref(),
        &parsed.signature_value.data,
    )
    .map_err(|e| PkiError::CrlIssuer(format!("its signature does not verify with the CA's key: {e}")))?;
    check_crl_scope(tbs.extensions())?;
    let revoked_serials: Vec<Vec<u8>> = tbs
        .revoked_certificates
        .iter()
        .map(|r| der::strip_leading_zeros(r.raw_serial()).to_vec())
        .collect();
    Ok(UploadedCrl {
        der: crl_der.to_vec(),
        issuer: dn::cloudflare(&tbs.issuer),
        this_update: der::from_timestamp(tbs.this_update.timestamp()),
        next_update: tbs.next_update.map(|t| der::from_timestamp(t.timestamp())),
        entries: revoked_serials.len(),
        revoked_serials,
    })
}
