//! Server certificates the edge presents per SNI (Cloudflare's `custom_certificates`): validating an upload of a
//! certificate chain and its private key, and sealing that key at rest.
//!
//! An upload is a PEM chain (leaf first, then intermediates, each issued by the next) and a PEM private key in
//! PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) form. The leaf must not be a CA,
//! must not have expired, must name at least one DNS subject alternative name (the edge picks certificates by SNI)
//! and must carry an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key; the private key must be the leaf's.
//! The key comes out as PKCS#8 DER for [`seal_key`].
//!
//! Sealing binds the key to its certificate: the associated data is `custom-certificate:<SHA-256 of the leaf DER>`
//! (under [`crate::seal`]'s `portcullis/ca-key/v1/` prefix), which cannot collide with a managed-CA id (32 hex
//! characters) and is derivable from the stored certificate alone, so whoever loads the row later can unseal it
//! with [`unseal_key`] without knowing the row's id, and a sealed key moved onto another certificate fails to open.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};

use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use crate::der;
use crate::dn;
use crate::error::{PkiError, Result};
use crate::keys::{self, OID_EC, OID_ED25519, OID_RSA};
use crate::pem;
use crate::seal::{self, MasterKey};

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// A validated server certificate upload.
pub struct ServerCertificate {
    /// The DNS subject alternative names of the leaf, in certificate order, wildcards kept (`*.example.com`).
    pub hosts: Vec<String>,
    /// Issuer DN of the leaf, Cloudflare style ([`crate::dn::cloudflare`]).
    pub issuer: String,
    /// Subject DN of the leaf, Cloudflare style.
    pub subject: String,
    /// Signature algorithm of the leaf, Cloudflare's name (`ECDSAWithSHA256`, `SHA256WithRSA`, …).
    pub signature: String,
    /// The leaf's key, e.g. `ECDSA P-256` or `RSA 2048`.
    pub key_description: String,
    pub not_before: OffsetDateTime,
    pub expires_on: OffsetDateTime,
    /// Lower hex, without leading zeros.
    pub serial_number: String,
    /// The chain, normalized PEM: leaf first.
    pub chain_pem: String,
    /// DER of every certificate, leaf first.
    pub chain_der: Vec<Vec<u8>>,
    /// The private key as PKCS#8 DER, wiped from memory on drop. Seal it with [`seal_key`] before storing it.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
}

impl ServerCertificate {
    /// DER of the leaf.
    pub fn leaf_der(&self) -> &[u8] {
        // `parse_server_certificate` refuses an empty chain.
        self.chain_der.first().map(Vec::as_slice).unwrap_or_default()
    }
}

impl std::fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("hosts", &self.hosts)
            .field("issuer", &self.issuer)
            .field("signature", &self.signature)
            .field("expires_on", &self.expires_on)
            .field("key_pkcs8", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Validates a server certificate chain (`certificate`, PEM, leaf first) and its private key (`private_key`, PEM)
/// at time `now`. See the module documentation for what is checked.
pub fn parse_server_certificate(
    certificate: &str,
    private_key: &str,
    now: OffsetDateTime,
) -> Result<ServerCertificate> {
    parse_with_key(certificate, private_key, now, true)
}

/// Validates a client certificate chain and its key for the edge to present to origins (upstream mTLS): as
/// [`parse_server_certificate`], except that no DNS names are required. `hosts` holds whatever DNS names it has.
pub fn parse_client_identity(certificate: &str, private_key: &str, now: OffsetDateTime) -> Result<ServerCertificate> {
    parse_with_key(certificate, private_key, now, false)
}

fn parse_with_key(
    certificate: &str,
    private_key: &str,
    now: OffsetDateTime,
    server: bool,
) -> Result<ServerCertificate> {
    let what = if server { "server" } else { "client" };
    let chain_der = chain_blocks(certificate)?;
    let mut parsed = Vec::with_capacity(chain_der.len());
    for (i, der_bytes) in chain_der.iter().enumerate() {
        let (rest, cert) = X509Certificate::from_der(der_bytes)
            .map_err(|e| PkiError::Certificate(format!("certificate {}: {e}", i + 1)))?;
        if !rest.is_empty() {
            return Err(PkiError::Certificate(format!("certificate {}: trailing data", i + 1)));
        }
        parsed.push(cert);
    }
    let leaf = &parsed[0];
    let subject = dn::cloudflare(leaf.subject());
    if let Ok(Some(bc)) = leaf.basic_constraints()
        && bc.value.ca
    {
        return Err(PkiError::InvalidParameter(format!(
            "the first certificate ({subject}) is a CA certificate (basicConstraints CA:TRUE), not a {what} certificate: put the {what} certificate first, then its intermediates (a self-signed {what} certificate needs CA:FALSE, e.g. openssl req -x509 -addext basicConstraints=critical,CA:FALSE)"
        )));
    }
    let key_description = keys::check_client_key(leaf.public_key())?;
    let not_before = der::from_timestamp(leaf.validity().not_before.timestamp());
    let expires_on = der::from_timestamp(leaf.validity().not_after.timestamp());
    if now > expires_on {
        return Err(PkiError::InvalidParameter(format!(
            "the certificate ({subject}) expired on {}",
            der::rfc3339(expires_on)
        )));
    }
    let hosts = dns_names(leaf)?;
    if server && hosts.is_empty() {
        return Err(PkiError::InvalidParameter(format!(
            "the certificate ({subject}) has no DNS subject alternative names; the edge selects certificates by SNI, so at least one is required"
        )));
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Err(PkiError::InvalidParameter(format!(
                "certificate {} ({}) did not issue certificate {} (issued by {}); give the leaf first, then each issuer in order",
                i + 2,
                dn::cloudflare(pair[1].subject()),
                i + 1,
                dn::cloudflare(pair[0].issuer()),
            )));
        }
    }
    let key_pkcs8 = match_private_key(private_key, leaf.public_key(), &key_description)?;
    Ok(ServerCertificate {
        hosts,
        issuer: dn::cloudflare(leaf.issuer()),
        subject,
        signature: keys::signature_name_or_oid(&leaf.signature_algorithm),
        key_description,
        not_before,
        expires_on,
        serial_number: der::hex(der::strip_leading_zeros(leaf.raw_serial()), false),
        chain_pem: chain_der.iter().map(|d| pem::encode("CERTIFICATE", d)).collect(),
        chain_der: chain_der.clone(),
        key_pkcs8,
    })
}

/// The associated-data namespace a server key is sealed under: see the module documentation.
pub fn seal_namespace(leaf_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf_der);
    format!("custom-certificate:{}", der::hex(digest.as_ref(), false))
}

/// Seals `pkcs8` (a server certificate's key) for the certificate whose leaf DER is `leaf_der`.
pub fn seal_key(master: &MasterKey, leaf_der: &[u8], pkcs8: &[u8]) -> Vec<u8> {
    seal::seal(master, &seal_namespace(leaf_der), pkcs8)
}

/// Seals `pkcs8`, the key of an origin client certificate whose leaf DER is `leaf_der`; under its own namespace,
/// so that a sealed key cannot be passed off as another kind.
pub fn seal_client_key(master: &MasterKey, leaf_der: &[u8], pkcs8: &[u8]) -> Vec<u8> {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf_der);
    seal::seal(master, &client_namespace(digest.as_ref()), pkcs8)
}

/// Opens what [`seal_client_key`] sealed, given the stored chain (PEM, leaf first). Returns PKCS#8 DER.
pub fn unseal_client_key(master: &MasterKey, certificate_pem: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let leaf = pem::certificates_from_pem_or_der(certificate_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Pem("no certificate found".into()))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &leaf);
    seal::unseal(master, &client_namespace(digest.as_ref()), sealed)
}

fn client_namespace(leaf_sha256: &[u8]) -> String {
    format!("origin-client-certificate:{}", der::hex(leaf_sha256, false))
}

/// Opens what [`seal_key`] sealed, given the stored certificate chain (PEM, leaf first). Returns PKCS#8 DER.
pub fn unseal_key(master: &MasterKey, certificate_pem: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let leaf = pem::certificates_from_pem_or_der(certificate_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Pem("no certificate found".into()))?;
    seal::unseal(master, &seal_namespace(&leaf), sealed)
}

fn chain_blocks(certificate: &str) -> Result<Vec<Vec<u8>>> {
    let blocks = pem::parse_blocks(certificate).map_err(|e| PkiError::Pem(format!("certificate: {e}")))?;
    let mut chain = Vec::with_capacity(blocks.len());
    for (i, b) in blocks.into_iter().enumerate() {
        match b.label.as_str() {
            "CERTIFICATE" => chain.push(b.der),
            l if l.contains("PRIVATE KEY") => {
                return Err(PkiError::InvalidParameter(format!(
                    "certificate: block {} is a private key ({l}); send it in private_key",
                    i + 1
                )));
            }
            l => {
                return Err(PkiError::InvalidParameter(format!(
                    "certificate: block {} is a {l}; only CERTIFICATE blocks are accepted",
                    i + 1
                )));
            }
        }
    }
    if chain.is_empty() {
        return Err(PkiError::Pem(
            "certificate: no -----BEGIN CERTIFICATE----- block found".into(),
        ));
    }
    Ok(chain)
}

fn dns_names(cert: &X509Certificate<'_>) -> Result<Vec<String>> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Certificate(format!("subject alternative names: {e}")))?;
    let mut hosts: Vec<String> = Vec::new();
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        if let GeneralName::DNSName(dns) = name {
            let dns = dns.trim_end_matches('.').to_ascii_lowercase();
            if !dns.is_empty() && !hosts.contains(&dns) {
                hosts.push(dns);
            }
        }
    }
    Ok(hosts)
}

/// Parses `private_key` (PEM), checks that it is the key of `leaf_spki` and returns it as PKCS#8 DER.
fn match_private_key(
    private_key: &str,
    leaf_spki: &SubjectPublicKeyInfo<'_>,
    leaf_key: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    let blocks = pem::parse_blocks(private_key).map_err(|e| PkiError::Pem(format!("private_key: {e}")))?;
    let block = blocks
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or_else(|| {
            PkiError::Pem("private_key: no -----BEGIN PRIVATE KEY----- (or EC/RSA PRIVATE KEY) block found".into())
        })?;
    let der_bytes = Zeroizing::new(block.der);
    let wrong_type = || {
        PkiError::InvalidParameter(format!(
            "private_key does not match the certificate, whose key is {leaf_key}"
        ))
    };
    let unusable = |what: &str, e: &dyn std::fmt::Display| {
        PkiError::InvalidParameter(format!("private_key: cannot read the {what} ({e})"))
    };
    let alg = leaf_spki.algorithm.algorithm.to_id_string();
    let curve = leaf_spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let (public, pkcs8): (PublicKeyX509Der<'static>, Zeroizing<Vec<u8>>) = match (block.label.as_str(), alg.as_str()) {
        ("ENCRYPTED PRIVATE KEY", _) => {
            return Err(PkiError::InvalidParameter(
                "private_key is encrypted; upload it unencrypted (e.g. openssl pkey -in key.pem -out plain.pem)".into(),
            ));
        }
        ("PRIVATE KEY" | "RSA PRIVATE KEY", OID_RSA) => {
            let pair = if block.label == "PRIVATE KEY" {
                RsaKeyPair::from_pkcs8(&der_bytes)
            } else {
                RsaKeyPair::from_der(&der_bytes)
            }
            .map_err(|_| wrong_type())?;
            let public = pair.public_key().as_der().map_err(|e| unusable("RSA key", &e))?;
            let pkcs8: Pkcs8V1Der<'static> = pair.as_der().map_err(|e| unusable("RSA key", &e))?;
            (public, Zeroizing::new(pkcs8.as_ref().to_vec()))
        }
        ("PRIVATE KEY" | "EC PRIVATE KEY", OID_EC) => {
            let signing = match curve.as_deref() {
                Some(OID_P256) => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                Some(OID_P384) => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                _ => return Err(wrong_type()),
            };
            let pair = EcdsaKeyPair::from_private_key_der(signing, &der_bytes).map_err(|_| wrong_type())?;
            let public = pair.public_key().as_der().map_err(|e| unusable("EC key", &e))?;
            let document = pair.to_pkcs8v1().map_err(|e| unusable("EC key", &e))?;
            (public, Zeroizing::new(document.as_ref().to_vec()))
        }
        ("PRIVATE KEY", OID_ED25519) => {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der_bytes).map_err(|_| wrong_type())?;
            let public = pair.public_key().as_der().map_err(|e| unusable("Ed25519 key", &e))?;
            let document = pair.to_pkcs8v1().map_err(|e| unusable("Ed25519 key", &e))?;
            (public, Zeroizing::new(document.as_ref().to_vec()))
        }
        ("PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY", _) => return Err(wrong_type()),
        (other, _) => {
            return Err(PkiError::InvalidParameter(format!(
                "private_key: {other} blocks are not supported; use PKCS#8 (PRIVATE KEY), SEC1 (EC PRIVATE KEY) or PKCS#1 (RSA PRIVATE KEY)"
            )));
        }
    };
    let (_, key_spki) = SubjectPublicKeyInfo::from_der(public.as_ref())
        .map_err(|e| PkiError::InvalidParameter(format!("private_key: cannot encode its public key ({e})")))?;
    if key_spki.algorithm.algorithm != leaf_spki.algorithm.algorithm
        || key_spki.subject_public_key.data != leaf_spki.subject_public_key.data
    {
        return Err(PkiError::InvalidParameter(
            "private_key does not match the certificate: its public key differs from the certificate's".into(),
        ));
    }
    Ok(pkcs8)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer as _;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use time::{Duration, macros::datetime};

    use super::*;

    fn now() -> OffsetDateTime {
        datetime!(2026-03-01 12:00:00 UTC)
    }

    fn params(names: &[&str]) -> CertificateParams {
        let mut p = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, "www.example.com");
        p.not_before = now() - Duration::days(1);
        p.not_after = now() + Duration::days(90);
        p
    }

    fn self_signed(p: CertificateParams, key: &KeyPair) -> String {
        p.self_signed(key).unwrap().pem()
    }

    fn err(cert: &str, key: &str) -> String {
        parse_server_certificate(cert, key, now()).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_p256_chain_and_reports_cloudflare_fields() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = params(&[]);
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Issuing CA");
        ca_params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = params(&["www.example.com", "*.Example.com"])
            .signed_by(&key, &issuer)
            .unwrap();
        let chain = format!("{}{}", leaf.pem(), ca_cert.pem());
        let parsed = parse_server_certificate(&chain, &key.serialize_pem(), now()).unwrap();
        assert_eq!(parsed.hosts, ["www.example.com", "*.example.com"]);
        assert_eq!(parsed.issuer, "O=Acme\\, Inc.,CN=Test Issuing CA");
        assert_eq!(parsed.signature, "ECDSAWithSHA256");
        assert_eq!(parsed.key_description, "ECDSA P-256");
        assert_eq!(parsed.expires_on, now() + Duration::days(90));
        assert_eq!(parsed.chain_der.len(), 2);
        assert_eq!(parsed.leaf_der(), leaf.der().as_ref());
        assert_eq!(parsed.key_pkcs8.as_slice(), key.serialize_der().as_slice());
        assert!(!format!("{parsed:?}").contains("key_pkcs8: ["), "the key is redacted");

        // The CA first is refused; so is a chain whose second certificate did not issue the first.
        let reversed = format!("{}{}", ca_cert.pem(), leaf.pem());
        assert!(err(&reversed, &key.serialize_pem()).contains("is a CA certificate"));
        let other = self_signed(params(&["other.example.com"]), &KeyPair::generate().unwrap());
        let e = err(&format!("{}{other}", leaf.pem()), &key.serialize_pem());
        assert!(e.contains("did not issue certificate 1"), "{e}");
    }

    #[test]
    fn key_forms_and_types() {
        // SEC1 (`EC PRIVATE KEY`) P-384.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = self_signed(params(&["a.example.com"]), &key);
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, &key.serialize_der()).unwrap();
        let sec1 = pem::encode("EC PRIVATE KEY", pair.private_key().as_der().unwrap().as_ref());
        let parsed = parse_server_certificate(&cert, &sec1, now()).unwrap();
        assert_eq!(
            (parsed.signature.as_str(), parsed.key_description.as_str()),
            ("ECDSAWithSHA384", "ECDSA P-384")
        );
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, &parsed.key_pkcs8).unwrap();

        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = self_signed(params(&["ed.example.com"]), &key);
        let parsed = parse_server_certificate(&cert, &key.serialize_pem(), now()).unwrap();
        assert_eq!(parsed.signature, "Ed25519");

        let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        let cert = self_signed(params(&["rsa.example.com"]), &key);
        let parsed = parse_server_certificate(&cert, &key.serialize_pem(), now()).unwrap();
        assert_eq!(
            (parsed.signature.as_str(), parsed.key_description.as_str()),
            ("SHA256WithRSA", "RSA 2048")
        );
    }

    #[test]
    fn bad_uploads_are_named() {
        let key = KeyPair::generate().unwrap();
        let good = self_signed(params(&["www.example.com"]), &key);
        let key_pem = key.serialize_pem();

        let other = KeyPair::generate().unwrap().serialize_pem();
        assert_eq!(
            err(&good, &other),
            "invalid parameter: private_key does not match the certificate: its public key differs from the certificate's"
        );
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .unwrap()
            .serialize_pem();
        assert_eq!(
            err(&good, &p384),
            "invalid parameter: private_key does not match the certificate, whose key is ECDSA P-256"
        );

        let mut expired = params(&["www.example.com"]);
        expired.not_before = now() - Duration::days(100);
        expired.not_after = now() - Duration::days(10);
        assert_eq!(
            err(&self_signed(expired, &key), &key_pem),
            "invalid parameter: the certificate (CN=www.example.com) expired on 2026-02-19T12:00:00Z"
        );

        assert!(err("hello", &key_pem).contains("no -----BEGIN CERTIFICATE----- block"));
        let garbage = "-----BEGIN CERTIFICATE-----\nMIIBaGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(err(garbage, &key_pem).starts_with("malformed certificate: certificate 1:"));
        assert!(err(&good, "garbage").contains("private_key: no -----BEGIN PRIVATE KEY-----"));
        assert!(err(&key_pem, &key_pem).contains("block 1 is a private key (PRIVATE KEY); send it in private_key"));
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(err(&good, encrypted).contains("private_key is encrypted"));

        let mut ca = params(&["ca.example.com"]);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert!(
            err(&self_signed(ca, &key), &key_pem).contains("is a CA certificate (basicConstraints CA:TRUE)"),
            "CA as leaf"
        );

        assert_eq!(
            err(&self_signed(params(&[]), &key), &key_pem),
            "invalid parameter: the certificate (CN=www.example.com) has no DNS subject alternative names; the edge selects certificates by SNI, so at least one is required"
        );

        let p521 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
        let e = err(&self_signed(params(&["x.example.com"]), &p521), &p521.serialize_pem());
        assert!(e.contains("elliptic curve P-521 is not supported"), "{e}");
    }

    #[test]
    fn sealed_keys_are_bound_to_their_certificate() {
        let master = MasterKey::generate();
        let key = KeyPair::generate().unwrap();
        let cert = self_signed(params(&["www.example.com"]), &key);
        let parsed = parse_server_certificate(&cert, &key.serialize_pem(), now()).unwrap();
        let sealed = seal_key(&master, parsed.leaf_der(), &parsed.key_pkcs8);
        assert!(
            !sealed
                .windows(parsed.key_pkcs8.len())
                .any(|w| w == parsed.key_pkcs8.as_slice())
        );
        assert_eq!(
            unseal_key(&master, &parsed.chain_pem, &sealed).unwrap().as_slice(),
            parsed.key_pkcs8.as_slice()
        );
        assert!(seal_namespace(parsed.leaf_der()).starts_with("custom-certificate:"));
        let other = self_signed(params(&["www.example.com"]), &key);
        assert!(matches!(
            unseal_key(&master, &other, &sealed),
            Err(PkiError::UnsealFailed)
        ));
        assert!(matches!(
            unseal_key(&MasterKey::generate(), &cert, &sealed),
            Err(PkiError::UnsealFailed)
        ));
    }
}
