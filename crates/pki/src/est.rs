//! The pieces of EST (RFC 7030) that are about certificates: the degenerate PKCS#7 (`certs-only`) that carries
//! certificates back to the client, and the check that a re-enrollment CSR names exactly what the certificate being
//! renewed names.
//!
//! For the device's side: [`renewal_csr`] makes the CSR of a re-enrollment, [`pkcs7_certificates`] reads the
//! answer, [`certificate_for_csr`] picks the new certificate from it, [`chain_above`] finds what to send after it
//! and [`key_type_of`] what key to make.
//!
//! Not here: TLS, HTTP, which certificate the client authenticated with and whether it may renew (the caller's),
//! and the signing itself ([`crate::ManagedCa::issue_from_csr`]).

use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use zeroize::Zeroizing;

use crate::ca::SubjectAltNames;
use crate::der;
use crate::error::{PkiError, Result};
use crate::keys::KeyType;
use crate::name_policy::{self, NameKind};
use crate::pem;

/// `id-signedData` (1.2.840.113549.1.7.2), DER.
const OID_SIGNED_DATA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// `id-data` (1.2.840.113549.1.7.1), DER.
const OID_DATA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];

/// A CMS `SignedData` with no content and no signers that carries `certs` (DER each): what EST answers with
/// (`application/pkcs7-mime; smime-type=certs-only`, base64 of this).
pub fn pkcs7_certs_only(certs: &[&[u8]]) -> Vec<u8> {
    let mut signed = Vec::new();
    der::tlv(&mut signed, 0x02, &[1]); // version
    der::tlv(&mut signed, 0x31, &[]); // digestAlgorithms
    der::tlv(&mut signed, 0x30, OID_DATA); // encapContentInfo, no content
    // A SET OF, which DER orders by encoding.
    let mut sorted = certs.to_vec();
    sorted.sort_unstable();
    der::tlv(&mut signed, 0xa0, &sorted.concat()); // [0] IMPLICIT certificates
    der::tlv(&mut signed, 0x31, &[]); // signerInfos
    let signed = der::wrap(0x30, &signed);
    let mut info = OID_SIGNED_DATA.to_vec();
    der::tlv(&mut info, 0xa0, &signed);
    der::wrap(0x30, &info)
}

/// The certificates (DER each) of a certs-only PKCS#7 (DER), as an EST server answers; refuses anything else.
pub fn pkcs7_certificates(p7: &[u8]) -> Result<Vec<Vec<u8>>> {
    use crate::ocsp::read_tlv;
    let bad = |what: &str| PkiError::Certificate(format!("not a certs-only PKCS#7: {what}"));
    let (tag, info, rest) = read_tlv(p7).ok_or_else(|| bad("no ContentInfo"))?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(bad("ContentInfo"));
    }
    let (tag, oid, rest) = read_tlv(info).ok_or_else(|| bad("no content type"))?;
    if tag != 0x06 || oid != &OID_SIGNED_DATA[2..] {
        return Err(bad("the content type is not signedData"));
    }
    let (tag, explicit, _) = read_tlv(rest).ok_or_else(|| bad("no content"))?;
    if tag != 0xa0 {
        return Err(bad("content"));
    }
    let (tag, signed, _) = read_tlv(explicit).ok_or_else(|| bad("no SignedData"))?;
    if tag != 0x30 {
        return Err(bad("SignedData"));
    }
    // version, digestAlgorithms, encapContentInfo; then the certificates, [0] IMPLICIT.
    let mut rest = signed;
    for _ in 0..3 {
        rest = read_tlv(rest).ok_or_else(|| bad("SignedData's fields"))?.2;
    }
    let (tag, mut certs, _) = read_tlv(rest).ok_or_else(|| bad("no certificates"))?;
    if tag != 0xa0 {
        return Err(bad("no certificates"));
    }
    let mut out = Vec::new();
    while !certs.is_empty() {
        let (tag, content, next) = read_tlv(certs).ok_or_else(|| bad("a certificate"))?;
        if tag != 0x30 {
            return Err(bad("a certificate"));
        }
        let len = certs.len() - next.len();
        debug_assert!(content.len() < len);
        out.push(certs[..len].to_vec());
        certs = next;
    }
    Ok(out)
}

fn sorted(mut names: Vec<(NameKind, String)>) -> Vec<(String, String)> {
    let mut out: Vec<_> = names.drain(..).map(|(k, v)| (format!("{k:?}"), v)).collect();
    out.sort();
    out
}

/// That the CSR (PEM or DER) is signed by its own key and names exactly the subject and subject alternative names of
/// `renewed` (DER), as RFC 7030 §4.2.2 asks of a re-enrollment. The key may be the same or a new one.
pub fn check_renewal_csr(csr: &[u8], renewed: &[u8]) -> Result<()> {
    let csr_der = pem::single_from_pem_or_der(csr, "CERTIFICATE REQUEST").map_err(|e| PkiError::Csr(e.to_string()))?;
    let (rest, req) = X509CertificationRequest::from_der(&csr_der)
        .map_err(|e| PkiError::Csr(format!("cannot parse the DER ({e})")))?;
    if !rest.is_empty() {
        return Err(PkiError::Csr(format!("{} trailing bytes after the CSR", rest.len())));
    }
    let info = &req.certification_request_info;
    crate::keys::verify_signed_data(
        &info.subject_pki,
        &req.signature_algorithm,
        info.raw,
        &req.signature_value.data,
    )
    .map_err(PkiError::CsrSignature)?;
    let (_, old) = X509Certificate::from_der(renewed)
        .map_err(|e| PkiError::Certificate(format!("the renewed certificate: {e}")))?;
    // The same name, not the same bytes: the issued certificate's subject is written anew from the CSR's anyway.
    if crate::dn::rfc2253(&info.subject) != crate::dn::rfc2253(old.subject()) {
        return Err(PkiError::Csr(format!(
            "its subject ({}) is not the renewed certificate's ({}); a re-enrollment keeps the subject",
            crate::dn::rfc2253(&info.subject),
            crate::dn::rfc2253(old.subject())
        )));
    }
    let mut asked = Vec::new();
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            asked.extend(name_policy::san_names(&san.general_names)?);
        }
    }
    let mut had = Vec::new();
    if let Ok(Some(san)) = old.subject_alternative_name() {
        had.extend(name_policy::san_names(&san.value.general_names)?);
    }
    let (asked, had) = (sorted(asked), sorted(had));
    if asked != had {
        let list = |names: &[(String, String)]| {
            if names.is_empty() {
                "none".to_owned()
            } else {
                names
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", k.to_lowercase()))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        return Err(PkiError::Csr(format!(
            "its subject alternative names ({}) are not the renewed certificate's ({}); a re-enrollment keeps them",
            list(&asked),
            list(&had)
        )));
    }
    Ok(())
}

/// The CSR (DER) of a re-enrollment of `renewed` (DER): a new key of `key_type`, and `renewed`'s subject and subject
/// alternative names. Returns the CSR and the new key (PKCS#8 PEM).
pub fn renewal_csr(renewed: &[u8], key_type: KeyType) -> Result<(Vec<u8>, Zeroizing<String>)> {
    let (_, old) = X509Certificate::from_der(renewed)
        .map_err(|e| PkiError::Certificate(format!("the renewed certificate: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = crate::dn::to_rcgen(old.subject())?;
    let mut sans = SubjectAltNames::default();
    if let Ok(Some(san)) = old.subject_alternative_name() {
        for (kind, value) in name_policy::san_names(&san.value.general_names)? {
            match kind {
                NameKind::Dns => sans.dns.push(value),
                NameKind::Uri => sans.uri.push(value),
                NameKind::Email => sans.email.push(value),
                NameKind::Ip => sans.ip.push(
                    value
                        .parse()
                        .map_err(|e| PkiError::Certificate(format!("IP address SAN {value}: {e}")))?,
                ),
                _ => {}
            }
        }
    }
    params.subject_alt_names = crate::ca::san_types(&sans)?;
    let key = key_type.generate()?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.der().to_vec(), Zeroizing::new(key.serialize_pem())))
}

/// The key type of `cert`'s (DER) public key, when it is one Portcullis generates: what a renewal makes by default,
/// so that a device keeps its kind of key.
pub fn key_type_of(cert: &[u8]) -> Option<KeyType> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    match crate::keys::check_client_key(cert.public_key()).ok()?.as_str() {
        "ECDSA P-256" => Some(KeyType::P256),
        "ECDSA P-384" => Some(KeyType::P384),
        "RSA 2048" => Some(KeyType::Rsa2048),
        "RSA 3072" => Some(KeyType::Rsa3072),
        "RSA 4096" => Some(KeyType::Rsa4096),
        _ => None,
    }
}

/// Of `certs` (DER each, as an EST answer carries them), the one issued for `csr`'s (DER) key; refused when none is.
pub fn certificate_for_csr(certs: &[Vec<u8>], csr: &[u8]) -> Result<Vec<u8>> {
    let (_, req) =
        X509CertificationRequest::from_der(csr).map_err(|e| PkiError::Csr(format!("cannot parse the DER ({e})")))?;
    let key = req.certification_request_info.subject_pki.raw;
    certs
        .iter()
        .find(|der| X509Certificate::from_der(der).is_ok_and(|(_, cert)| cert.public_key().raw == key))
        .cloned()
        .ok_or_else(|| PkiError::Certificate("the answer holds no certificate for the new key".into()))
}

/// The certificates above `leaf` (DER) among `cas` (DER each, e.g. EST's `cacerts`), its issuer first, stopping
/// before a self-signed root: what a client sends after its own certificate. Names and signatures are both checked;
/// at most [`crate::ca_request::MAX_CHAIN`] are followed.
pub fn chain_above(leaf: &[u8], cas: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let parsed: Vec<(&Vec<u8>, X509Certificate<'_>)> = cas
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, cert)| (der, cert)))
        .collect();
    let (_, mut current) =
        X509Certificate::from_der(leaf).map_err(|e| PkiError::Certificate(format!("the certificate: {e}")))?;
    let mut out = Vec::new();
    for _ in 0..crate::ca_request::MAX_CHAIN {
        let Some((der, issuer)) = parsed.iter().find(|(_, ca)| crate::keys::issued_by(&current, ca)) else {
            break;
        };
        if issuer.subject().as_raw() == issuer.issuer().as_raw() {
            break;
        }
        out.push((*der).clone());
        current = issuer.clone();
    }
    Ok(out)
}
