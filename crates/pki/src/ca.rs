//! The managed CA and issuance of client certificates.
//!
//! A [`ManagedCa`] is one independent CA (id, certificate, private key). Rotation means creating
//! another one and trusting both until the old one is retired; which CA is active or retired is the
//! store's business, and [`crate::VerifierBuilder`] takes any set of CA certificates as anchors.
//! The private key leaves this type only sealed ([`ManagedCa::sealed_key`]). A managed CA is self-signed
//! ([`ManagedCa::create`]) or signed by the operator's own CA ([`crate::ca_request`]).
//!
//! Every issued certificate gets a random positive 20-byte serial, `basicConstraints CA:FALSE`,
//! `keyUsage digitalSignature`, `extendedKeyUsage clientAuth`, SKI and AKI, and optionally a CRL
//! distribution point. The CA decides all extensions: CSR extension requests other than the
//! subject alternative names are ignored, not refused.

use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::der;
use crate::dn;
use crate::error::{PkiError, Result};
use crate::keys::{self, KeyType};
use crate::pem;
use crate::seal::{self, MasterKey};
use crate::status::CertificateStatus;

/// Cloudflare's default and the bounds Portcullis accepts for `validity_days`.
pub const DEFAULT_VALIDITY_DAYS: u32 = 3650;
pub const MAX_VALIDITY_DAYS: u32 = 5475;
/// Default lifetime of a managed CA: twenty years, so it outlives the longest client certificate.
pub const DEFAULT_CA_VALIDITY_DAYS: u32 = 7300;

/// `certificate_authority` in a client-certificate record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateAuthorityRef {
    pub id: String,
    pub name: String,
}

/// A client certificate as Cloudflare's API shows it (same field names and value formats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCertificateRecord {
    /// 32 lower-hex characters, random.
    pub id: String,
    /// PEM.
    pub certificate: String,
    /// The CSR as PEM, or `""` when Portcullis generated the key.
    pub csr: String,
    pub common_name: String,
    pub country: String,
    pub state: String,
    pub location: String,
    pub organization: String,
    pub organizational_unit: String,
    /// Subject key identifier, lower hex without colons.
    pub ski: String,
    /// Lower hex.
    pub serial_number: String,
    /// SHA-256 of the DER, lower hex.
    pub fingerprint_sha256: String,
    /// Signature algorithm of the issued certificate, e.g. `ECDSAWithSHA256`.
    pub signature: String,
    /// RFC 3339, e.g. `2023-02-23T23:18:00Z`.
    pub issued_on: String,
    pub expires_on: String,
    pub status: CertificateStatus,
    pub validity_days: u32,
    pub certificate_authority: CertificateAuthorityRef,
}

/// Parameters for a new managed CA.
#[derive(Debug, Clone)]
pub struct CaParams {
    /// Goes into `O=`; omitted when `None`.
    pub organization: Option<String>,
    pub key_type: KeyType,
    pub validity_days: u32,
}

impl Default for CaParams {
    fn default() -> Self {
        CaParams {
            organization: None,
            key_type: KeyType::P256,
            validity_days: DEFAULT_CA_VALIDITY_DAYS,
        }
    }
}

/// Options common to both ways of issuing.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    pub validity_days: u32,
    /// URL put in a CRL distribution point extension.
    pub crl_distribution_point: Option<String>,
    /// URL of the CA's OCSP responder, put in an authority information access extension.
    pub ocsp_url: Option<String>,
    /// The zone's name policy (`kind:pattern`, see [`crate::name_policy`]): every subject attribute and subject
    /// alternative name must match a pattern of its kind; empty allows any. Checked before anything is signed.
    pub allowed_names: Vec<String>,
}

impl Default for IssueOptions {
    fn default() -> Self {
        IssueOptions {
            validity_days: DEFAULT_VALIDITY_DAYS,
            crl_distribution_point: None,
            ocsp_url: None,
            allowed_names: Vec::new(),
        }
    }
}

/// Refuses a certificate with a name `options.allowed_names` does not allow (see [`crate::name_policy`]).
fn check_names(options: &IssueOptions, names: &[(crate::name_policy::NameKind, String)]) -> Result<()> {
    if options.allowed_names.is_empty() {
        return Ok(());
    }
    crate::name_policy::NamePolicy::parse(&options.allowed_names)
        .map_err(PkiError::InvalidParameter)?
        .check(names)
}

/// Subject fields for a certificate whose key Portcullis generates. Empty strings are omitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubjectFields {
    pub common_name: String,
    #[serde(default)]
    pub country: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub organization: String,
    #[serde(default)]
    pub organizational_unit: String,
}

/// Subject alternative names: DNS names, URIs (SPIFFE IDs and the like), email addresses and IP addresses.
/// Unknown keys are refused, so that a misspelt one is not silently left out of a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectAltNames {
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub uri: Vec<String>,
    #[serde(default)]
    pub email: Vec<String>,
    /// IPv4 or IPv6 addresses (`"10.0.0.5"`, `"2001:db8::1"`).
    #[serde(default)]
    pub ip: Vec<std::net::IpAddr>,
}

/// A request to issue a certificate for a key that Portcullis generates.
#[derive(Debug, Clone, Default)]
pub struct GeneratedKeyRequest {
    pub key_type: KeyType,
    pub subject: SubjectFields,
    pub sans: SubjectAltNames,
}

/// A certificate issued from a CSR.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub record: ClientCertificateRecord,
    pub der: Vec<u8>,
}

/// A certificate issued for a generated key. The key is here once and is never stored.
pub struct IssuedWithKey {
    pub record: ClientCertificateRecord,
    pub der: Vec<u8>,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), wiped from memory when dropped.
    pub private_key_pem: Zeroizing<String>,
    private_key_der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for IssuedWithKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedWithKey")
            .field("record", &self.record)
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl IssuedWithKey {
    /// A PKCS#12 bundle (certificate, key and `chain`, e.g. the CA certificate) protected by
    /// `password`: PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC, HMAC-SHA256 MAC, as OpenSSL 3
    /// writes by default (so browsers, phones, `openssl pkcs12` and Java read it).
    pub fn to_pkcs12(&self, password: &str, friendly_name: &str, chain: &[&[u8]]) -> Result<Vec<u8>> {
        if password.is_empty() {
            return Err(PkiError::Pkcs12("the password must not be empty".into()));
        }
        let p12_err = |e: p12_keystore::error::Error| PkiError::Pkcs12(e.to_string());
        let key = p12_keystore::PrivateKey::from_der(&self.private_key_der).map_err(p12_err)?;
        let mut certs = vec![p12_keystore::Certificate::from_der(&self.der).map_err(p12_err)?];
        for der in chain {
            certs.push(p12_keystore::Certificate::from_der(der).map_err(p12_err)?);
        }
        let local_key_id = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.der);
        let key_chain = p12_keystore::PrivateKeyChain::new(local_key_id.as_ref(), key, certs);
        let mut store = p12_keystore::KeyStore::new();
        let alias = if friendly_name.is_empty() {
            "client"
        } else {
            friendly_name
        };
        store.add_entry(alias, p12_keystore::KeyStoreEntry::PrivateKeyChain(key_chain));
        store
            .writer(password)
            .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
            .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha256)
            .encryption_iterations(10_000)
            .mac_iterations(10_000)
            .write()
            .map_err(p12_err)
    }
}

/// One managed CA: its id, certificate and (unsealed, in memory) private key.
pub struct ManagedCa {
    id: String,
    name: String,
    key_type: KeyType,
    cert_der: Vec<u8>,
    key: KeyPair,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for ManagedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedCa")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

fn check_validity_days(days: u32) -> Result<()> {
    if (1..=MAX_VALIDITY_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(PkiError::ValidityDays(i64::from(days)))
    }
}

/// Random positive 20-byte serial: the top bit is cleared so the INTEGER is positive, and a zero
/// first byte becomes 1 so the encoding is always exactly 20 bytes (159 random bits, less a sliver).
fn random_serial() -> [u8; 20] {
    let mut serial = der::random_bytes::<20>();
    serial[0] &= 0x7f;
    if serial[0] == 0 {
        serial[0] = 1;
    }
    serial
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

impl ManagedCa {
    /// Creates a new CA, subject `CN=Portcullis Managed CA <first 8 hex of id>, O=<organization>`.
    pub fn create(params: &CaParams, now: OffsetDateTime) -> Result<ManagedCa> {
        if !(1..=36_500).contains(&params.validity_days) {
            return Err(PkiError::InvalidParameter(format!(
                "CA validity must be between 1 and 36500 days (got {})",
                params.validity_days
            )));
        }
        let id = der::random_id();
        let name = format!("Portcullis Managed CA {}", &id[..8]);
        let key = params.key_type.generate()?;
        let now = whole_seconds(now);
        let mut cp = CertificateParams::default();
        cp.distinguished_name = DistinguishedName::new();
        // DER order O then CN, so the RFC 2253 form reads `CN=…,O=…` as usual.
        if let Some(org) = params.organization.as_deref().filter(|o| !o.is_empty()) {
            cp.distinguished_name.push(DnType::OrganizationName, org);
        }
        cp.distinguished_name.push(DnType::CommonName, name.as_str());
        cp.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        cp.not_before = now;
        cp.not_after = now + Duration::days(i64::from(params.validity_days));
        // Path length 0: the managed CA signs client certificates directly, never sub-CAs.
        cp.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        cp.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        cp.key_identifier_method = KeyIdMethod::Sha256;
        let cert = cp.self_signed(&key)?;
        Ok(ManagedCa {
            id,
            name,
            key_type: params.key_type,
            cert_der: cert.der().to_vec(),
            key,
            not_after: cp.not_after,
        })
    }

    /// Rebuilds a CA from its stored parts; the key must match the certificate.
    pub fn from_sealed(
        id: &str,
        key_type: KeyType,
        certificate_der: &[u8],
        sealed_key: &[u8],
        master: &MasterKey,
    ) -> Result<ManagedCa> {
        let pkcs8 = seal::unseal(master, id, sealed_key)?;
        let key = key_type.load(&pkcs8)?;
        let (_, cert) = X509Certificate::from_der(certificate_der)
            .map_err(|e| PkiError::Certificate(format!("CA certificate: {e}")))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::SealedKeyMalformed(
                "the unsealed private key does not match the CA certificate".into(),
            ));
        }
        let name = dn::first_value(cert.subject(), dn::OID_CN).unwrap_or_else(|| dn::rfc2253(cert.subject()));
        let not_after = der::from_timestamp(cert.validity().not_after.timestamp());
        Ok(ManagedCa {
            id: id.to_owned(),
            name,
            key_type,
            cert_der: certificate_der.to_vec(),
            key,
            not_after,
        })
    }

    /// A CA from parts already checked together (see [`crate::ca_request`]).
    pub(crate) fn from_parts(
        id: String,
        name: String,
        key_type: KeyType,
        cert_der: Vec<u8>,
        key: KeyPair,
        not_after: OffsetDateTime,
    ) -> ManagedCa {
        ManagedCa {
            id,
            name,
            key_type,
            cert_der,
            key,
            not_after,
        }
    }

    /// The private key sealed under `master` for this CA's id (what the store keeps).
    pub fn sealed_key(&self, master: &MasterKey) -> Vec<u8> {
        seal::seal(master, &self.id, &Zeroizing::new(self.key.serialize_der()))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// That certificates this CA signs name it as their issuer byte for byte. rcgen rebuilds the issuer name from
    /// the CA certificate's subject and cannot keep every subject as it is (repeated attribute types such as two
    /// `DC=`, multi-valued components): a CA whose certificate another CA signed is checked with this before it is
    /// installed, by signing a throwaway certificate.
    pub(crate) fn check_issuer_name(&self) -> Result<()> {
        let (_, own) = X509Certificate::from_der(&self.cert_der)
            .map_err(|e| PkiError::Certificate(format!("CA certificate: {e}")))?;
        let subject = dn::rfc2253(own.subject());
        let unusable = |why: String| {
            PkiError::InvalidParameter(format!(
                "the certificate's subject ({subject}) cannot be reproduced as the issuer of the certificates it \
                 would sign ({why}); have your CA keep the subject the CSR asks for"
            ))
        };
        let key = KeyType::P256.generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "issuer name check");
        let issuer = self.issuer().map_err(|e| unusable(e.to_string()))?;
        let probe = params.signed_by(&key, &issuer).map_err(|e| unusable(e.to_string()))?;
        let (_, probe) = X509Certificate::from_der(probe.der())
            .map_err(|e| PkiError::Certificate(format!("issuer name check: {e}")))?;
        if probe.issuer().as_raw() != own.subject().as_raw() {
            return Err(unusable(format!("it would read {}", dn::rfc2253(probe.issuer()))));
        }
        Ok(())
    }

    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn certificate_pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.cert_der)
    }

    pub fn authority_ref(&self) -> CertificateAuthorityRef {
        CertificateAuthorityRef {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }

    pub(crate) fn signing_key(&self) -> &KeyPair {
        &self.key
    }

    /// Signs a client certificate for the key in `csr_pem` (PEM or DER). The CSR's signature and
    /// key are checked; its subject and subject alternative names are copied.
    pub fn issue_from_csr(&self, csr: &[u8], options: &IssueOptions, now: OffsetDateTime) -> Result<IssuedCertificate> {
        check_validity_days(options.validity_days)?;
        let csr_der = pem::single_from_pem_or_der(csr, "CERTIFICATE REQUEST")
            .or_else(|_| pem::single_from_pem_or_der(csr, "NEW CERTIFICATE REQUEST"))
            .map_err(|e| PkiError::Csr(e.to_string()))?;
        let (rest, req) = X509CertificationRequest::from_der(&csr_der)
            .map_err(|e| PkiError::Csr(format!("cannot parse the DER ({e})")))?;
        if !rest.is_empty() {
            return Err(PkiError::Csr(format!("{} trailing bytes after the CSR", rest.len())));
        }
        let info = &req.certification_request_info;
        keys::check_client_key(&info.subject_pki)?;
        keys::verify_signed_data(
            &info.subject_pki,
            &req.signature_algorithm,
            info.raw,
            &req.signature_value.data,
        )
        .map_err(PkiError::CsrSignature)?;
        let subject = dn::to_rcgen(&info.subject)?;
        let mut sans = SubjectAltNames::default();
        if let Some(exts) = req.requested_extensions() {
            for ext in exts {
                if let ParsedExtension::SubjectAlternativeName(san) = ext {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(s) => sans.dns.push((*s).to_owned()),
                            GeneralName::URI(s) => sans.uri.push((*s).to_owned()),
                            GeneralName::RFC822Name(s) => sans.email.push((*s).to_owned()),
                            GeneralName::IPAddress(bytes) => {
                                if let Ok(a) = <[u8; 4]>::try_from(*bytes) {
                                    sans.ip.push(std::net::IpAddr::from(a));
                                } else if let Ok(a) = <[u8; 16]>::try_from(*bytes) {
                                    sans.ip.push(std::net::IpAddr::from(a));
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if !options.allowed_names.is_empty() {
            let mut names = crate::name_policy::subject_names(&info.subject)?;
            if let Some(exts) = req.requested_extensions() {
                for ext in exts {
                    if let ParsedExtension::SubjectAlternativeName(san) = ext {
                        names.extend(crate::name_policy::san_names(&san.general_names)?);
                    }
                }
            }
            check_names(options, &names)?;
        }
        let san_types = san_types(&sans)?;
        let spki = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
            .map_err(|e| PkiError::WeakKey(format!("the CSR's public key cannot be used ({e})")))?;
        let params = self.leaf_params(subject, san_types, options, now)?;
        let cert = params.signed_by(&spki, &self.issuer()?)?;
        let der = cert.der().to_vec();
        let record = self.record(
            &der,
            pem::encode("CERTIFICATE REQUEST", &csr_der),
            options.validity_days,
        )?;
        Ok(IssuedCertificate { record, der })
    }

    /// Generates a key of `request.key_type` and issues a certificate for it.
    pub fn issue_with_generated_key(
        &self,
        request: &GeneratedKeyRequest,
        options: &IssueOptions,
        now: OffsetDateTime,
    ) -> Result<IssuedWithKey> {
        check_validity_days(options.validity_days)?;
        let s = &request.subject;
        if s.common_name.trim().is_empty() {
            return Err(PkiError::InvalidParameter("the subject needs a common name".into()));
        }
        if !options.allowed_names.is_empty() {
            use crate::name_policy::NameKind;
            let mut names: Vec<(NameKind, String)> = [
                (NameKind::Cn, &s.common_name),
                (NameKind::O, &s.organization),
                (NameKind::Ou, &s.organizational_unit),
                (NameKind::C, &s.country),
                (NameKind::St, &s.state),
                (NameKind::L, &s.location),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, v.clone()))
            .collect();
            let sans = &request.sans;
            names.extend(sans.dns.iter().map(|n| (NameKind::Dns, n.clone())));
            names.extend(sans.uri.iter().map(|n| (NameKind::Uri, n.clone())));
            names.extend(sans.email.iter().map(|n| (NameKind::Email, n.clone())));
            names.extend(sans.ip.iter().map(|n| (NameKind::Ip, n.to_string())));
            check_names(options, &names)?;
        }
        if !s.country.is_empty() && (s.country.len() != 2 || !s.country.bytes().all(|b| b.is_ascii_alphabetic())) {
            return Err(PkiError::InvalidParameter(format!(
                "country must be a two-letter ISO 3166 code (got {:?})",
                s.country
            )));
        }
        let mut subject = DistinguishedName::new();
        for (ty, value) in [
            (DnType::CountryName, &s.country),
            (DnType::StateOrProvinceName, &s.state),
            (DnType::LocalityName, &s.location),
            (DnType::OrganizationName, &s.organization),
            (DnType::OrganizationalUnitName, &s.organizational_unit),
            (DnType::CommonName, &s.common_name),
        ] {
            if value.is_empty() {
                continue;
            }
            let value = if ty == DnType::CountryName {
                DnValue::PrintableString(
                    rcgen::string::PrintableString::try_from(value.as_str())
                        .map_err(|e| PkiError::InvalidParameter(format!("country: {e}")))?,
                )
            } else {
                DnValue::Utf8String(value.clone())
            };
            subject.push(ty, value);
        }
        let key = request.key_type.generate()?;
        let params = self.leaf_params(subject, san_types(&request.sans)?, options, now)?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        let der = cert.der().to_vec();
        let record = self.record(&der, String::new(), options.validity_days)?;
        Ok(IssuedWithKey {
            record,
            der,
            private_key_pem: Zeroizing::new(key.serialize_pem()),
            private_key_der: Zeroizing::new(key.serialize_der()),
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>> {
        Ok(Issuer::from_ca_cert_der(
            &CertificateDer::from(self.cert_der.as_slice()),
            &self.key,
        )?)
    }

    fn leaf_params(
        &self,
        subject: DistinguishedName,
        sans: Vec<SanType>,
        options: &IssueOptions,
        now: OffsetDateTime,
    ) -> Result<CertificateParams> {
        let now = whole_seconds(now);
        let not_after = now + Duration::days(i64::from(options.validity_days));
        if not_after > self.not_after {
            return Err(PkiError::InvalidParameter(format!(
                "validity_days {} would outlive the CA, which expires on {}",
                options.validity_days,
                der::rfc3339(self.not_after)
            )));
        }
        let mut p = CertificateParams::default();
        p.distinguished_name = subject;
        p.subject_alt_names = sans;
        p.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        p.not_before = now;
        p.not_after = not_after;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::Sha256;
        if let Some(url) = options.crl_distribution_point.as_deref().filter(|u| !u.is_empty()) {
            if !(url.starts_with("http://") || url.starts_with("https://")) || !url.is_ascii() {
                return Err(PkiError::InvalidParameter(format!(
                    "CRL distribution point must be an ASCII http:// or https:// URL (got {url:?})"
                )));
            }
            p.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.to_owned()],
            }];
        }
        if let Some(url) = options.ocsp_url.as_deref().filter(|u| !u.is_empty()) {
            if !(url.starts_with("http://") || url.starts_with("https://")) || !url.is_ascii() || url.len() > 1024 {
                return Err(PkiError::InvalidParameter(format!(
                    "OCSP URL must be an ASCII http:// or https:// URL (got {url:?})"
                )));
            }
            // AuthorityInfoAccessSyntax: one AccessDescription, id-ad-ocsp with a URI ([6] IA5String).
            let mut description = vec![0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
            crate::der::tlv(&mut description, 0x86, url.as_bytes());
            let access = crate::der::wrap(0x30, &crate::der::wrap(0x30, &description));
            p.custom_extensions.push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                access,
            ));
        }
        Ok(p)
    }

    fn record(&self, der: &[u8], csr: String, validity_days: u32) -> Result<ClientCertificateRecord> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| PkiError::Generation(format!("issued certificate does not parse: {e}")))?;
        let subject = cert.subject();
        let field = |oid: &str| dn::first_value(subject, oid).unwrap_or_default();
        Ok(ClientCertificateRecord {
            id: der::random_id(),
            certificate: pem::encode("CERTIFICATE", der),
            csr,
            common_name: field(dn::OID_CN),
            country: field(dn::OID_C),
            state: field(dn::OID_ST),
            location: field(dn::OID_L),
            organization: field(dn::OID_O),
            organizational_unit: field(dn::OID_OU),
            ski: crate::facts::subject_key_id(&cert)
                .map(|k| der::hex(k, false))
                .unwrap_or_default(),
            serial_number: der::hex(der::strip_leading_zeros(cert.raw_serial()), false),
            fingerprint_sha256: der::hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref(),
                false,
            ),
            signature: keys::signature_name_or_oid(&cert.signature_algorithm),
            issued_on: der::rfc3339(der::from_timestamp(cert.validity().not_before.timestamp())),
            expires_on: der::rfc3339(der::from_timestamp(cert.validity().not_after.timestamp())),
            status: CertificateStatus::Active,
            validity_days,
            certificate_authority: self.authority_ref(),
        })
    }
}

fn ia5(kind: &str, value: &str) -> Result<rcgen::string::Ia5String> {
    rcgen::string::Ia5String::try_from(value)
        .map_err(|_| PkiError::InvalidParameter(format!("{kind} SAN {value:?} must be ASCII")))
}

pub(crate) fn san_types(sans: &SubjectAltNames) -> Result<Vec<SanType>> {
    let mut out = Vec::new();
    for d in &sans.dns {
        out.push(SanType::DnsName(ia5("DNS", d)?));
    }
    for u in &sans.uri {
        out.push(SanType::URI(ia5("URI", u)?));
    }
    for e in &sans.email {
        out.push(SanType::Rfc822Name(ia5("email", e)?));
    }
    out.extend(sans.ip.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(out)
}
