//! TLS-ALPN-01 answer certificates (RFC 8737) and the CSR of an ACME order.
//!
//! What it does: makes the self-signed certificate an edge presents to an ACME server that connects with only the
//! `acme-tls/1` protocol, carrying the name being validated and the SHA-256 of the key authorization in a critical
//! `id-pe-acmeIdentifier` extension; and makes the key and CSR an order is finalized with.
//!
//! What it does not do: speak ACME, or decide when to order. The binary's ACME manager does.

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::error::{PkiError, Result};

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// An answer certificate and its key.
pub struct AlpnChallenge {
    pub certificate_pem: String,
    /// PKCS#8 DER; seal it before storing it.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    pub expires_on: OffsetDateTime,
}

/// The TLS-ALPN-01 answer for `hostname` (a DNS name, not a wildcard) and `key_authorization_sha256`, the SHA-256
/// of the challenge's key authorization. Valid from an hour before `now` for a day: an order lives minutes.
pub fn tls_alpn_01(hostname: &str, key_authorization_sha256: &[u8], now: OffsetDateTime) -> Result<AlpnChallenge> {
    if key_authorization_sha256.len() != 32 {
        return Err(PkiError::InvalidParameter(format!(
            "a key authorization digest is 32 bytes, not {}",
            key_authorization_sha256.len()
        )));
    }
    if hostname.starts_with("*.") {
        return Err(PkiError::InvalidParameter(format!(
            "{hostname}: wildcard names cannot be validated with TLS-ALPN-01"
        )));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![hostname.to_owned()])?;
    params.distinguished_name = DistinguishedName::new();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(1);
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(key_authorization_sha256)];
    let cert = params.self_signed(&key)?;
    Ok(AlpnChallenge {
        certificate_pem: cert.pem(),
        key_pkcs8: Zeroizing::new(key.serialize_der()),
        expires_on: params.not_after,
    })
}

/// A fresh P-256 key (PKCS#8 DER) and a CSR (DER) for `hosts`, to finalize an order with.
pub fn order_csr(hosts: &[String]) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    Ok((Zeroizing::new(key.serialize_der()), csr.der().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn answers_carry_the_name_and_a_critical_acme_identifier() {
        let digest = [7u8; 32];
        let now = OffsetDateTime::now_utc();
        let answer = tls_alpn_01("api.example.test", &digest, now).expect("answer");
        let der = crate::pem::certificates_from_pem_or_der(answer.certificate_pem.as_bytes()).expect("pem");
        let (_, cert) = X509Certificate::from_der(&der[0]).expect("der");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        // The extension's value is an OCTET STRING holding the digest.
        assert_eq!(ext.value[..2], [0x04, 0x20]);
        assert_eq!(&ext.value[2..], &digest);
        let san = cert.subject_alternative_name().expect("san").expect("present");
        assert_eq!(san.value.general_names, vec![GeneralName::DNSName("api.example.test")]);
        assert!(answer.expires_on > now);
    }

    #[test]
    fn bad_answers_are_refused() {
        let now = OffsetDateTime::now_utc();
        let err = tls_alpn_01("a.example.test", &[0u8; 20], now)
            .err()
            .expect("short digest");
        assert!(err.to_string().contains("32 bytes"), "{err}");
        let err = tls_alpn_01("*.example.test", &[0u8; 32], now).err().expect("wildcard");
        assert!(err.to_string().contains("wildcard"), "{err}");
    }

    #[test]
    fn order_csrs_name_every_host() {
        let hosts = vec!["a.example.test".to_owned(), "b.example.test".to_owned()];
        let (key, csr) = order_csr(&hosts).expect("csr");
        assert!(!key.is_empty());
        let (_, req) = X509CertificationRequest::from_der(&csr).expect("csr der");
        let names: Vec<String> = req
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                ParsedExtension::SubjectAlternativeName(san) => Some(san.general_names.clone()),
                _ => None,
            })
            .flatten()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["DNSName(a.example.test)", "DNSName(b.example.test)"]);
    }
}
