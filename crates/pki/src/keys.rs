//! Key types, signature algorithm names and signature checks over parsed X.509 structures.
//! Signature checks for CSRs and CRLs use aws-lc-rs directly; certificate chains go through
//! rustls-webpki in [`crate::verify`].

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use crate::error::{PkiError, Result};

pub(crate) const OID_RSA: &str = "1.2.840.113549.1.1.1";
pub(crate) const OID_EC: &str = "1.2.840.10045.2.1";
pub(crate) const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

/// Key types Portcullis generates (for CAs and for client certificates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// ECDSA P-256 with SHA-256: the default.
    #[default]
    P256,
    /// ECDSA P-384 with SHA-384.
    P384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyType {
    pub const ALL: [KeyType; 5] = [
        KeyType::P256,
        KeyType::P384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa3072 => "rsa3072",
            KeyType::Rsa4096 => "rsa4096",
        }
    }

    pub(crate) fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    pub(crate) fn generate(self) -> Result<rcgen::KeyPair> {
        let size = match self {
            KeyType::P256 | KeyType::P384 => {
                return Ok(rcgen::KeyPair::generate_for(self.rcgen_alg())?);
            }
            KeyType::Rsa2048 => rcgen::RsaKeySize::_2048,
            KeyType::Rsa3072 => rcgen::RsaKeySize::_3072,
            KeyType::Rsa4096 => rcgen::RsaKeySize::_4096,
        };
        Ok(rcgen::KeyPair::generate_rsa_for(self.rcgen_alg(), size)?)
    }

    /// Loads a PKCS#8 key of this type (the unsealed CA key).
    pub(crate) fn load(self, pkcs8: &[u8]) -> Result<rcgen::KeyPair> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8);
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, self.rcgen_alg())
            .map_err(|e| PkiError::SealedKeyMalformed(format!("the unsealed key is not a {self} key: {e}")))
    }

    /// DER of the AlgorithmIdentifier this key type signs with (for the hand-made CRL encoding).
    pub(crate) fn signature_algorithm_der(self) -> &'static [u8] {
        match self {
            KeyType::P256 => &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
            KeyType::P384 => &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
            ],
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                PkiError::InvalidParameter(format!(
                    "unknown key type {s:?}; expected one of p256, p384, rsa2048, rsa3072, rsa4096"
                ))
            })
    }
}

/// Cloudflare's name for a signature algorithm OID (`SHA256WithRSA`, `ECDSAWithSHA256`, …).
pub(crate) fn signature_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "1.2.840.113549.1.1.5" => "SHA1WithRSA",
        "1.2.840.113549.1.1.11" => "SHA256WithRSA",
        "1.2.840.113549.1.1.12" => "SHA384WithRSA",
        "1.2.840.113549.1.1.13" => "SHA512WithRSA",
        "1.2.840.10045.4.1" => "ECDSAWithSHA1",
        "1.2.840.10045.4.3.2" => "ECDSAWithSHA256",
        "1.2.840.10045.4.3.3" => "ECDSAWithSHA384",
        "1.2.840.10045.4.3.4" => "ECDSAWithSHA512",
        "1.3.101.112" => "Ed25519",
        "1.2.840.113549.1.1.10" => "SHA256WithRSAPSS",
        _ => return None,
    })
}

pub(crate) fn signature_name_or_oid(alg: &AlgorithmIdentifier<'_>) -> String {
    let oid = alg.algorithm.to_id_string();
    signature_name(&oid).map(str::to_owned).unwrap_or(oid)
}

fn curve_oid(spki: &SubjectPublicKeyInfo<'_>) -> Option<String> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string())
}

fn curve_name(oid: &str) -> String {
    match oid {
        OID_P256 => "P-256".into(),
        OID_P384 => "P-384".into(),
        OID_P521 => "P-521".into(),
        "1.3.132.0.10" => "secp256k1".into(),
        other => other.into(),
    }
}

/// Checks a client's public key against Portcullis' policy and describes it (`RSA 2048`, `ECDSA P-256`).
/// Accepted: RSA 2048–8192 bits, ECDSA P-256 and P-384, Ed25519 (rustls verifies Ed25519 client
/// signatures, so there is no reason to refuse it).
pub(crate) fn check_client_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<String> {
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        OID_RSA => {
            let bits = match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
                _ => {
                    return Err(PkiError::WeakKey("the RSA public key cannot be parsed".into()));
                }
            };
            if bits < 2048 {
                Err(PkiError::WeakKey(format!(
                    "RSA key of {bits} bits is too small; at least 2048 bits are required"
                )))
            } else if bits > 8192 {
                Err(PkiError::WeakKey(format!(
                    "RSA key of {bits} bits is larger than the 8192-bit maximum"
                )))
            } else {
                Ok(format!("RSA {bits}"))
            }
        }
        OID_EC => match curve_oid(spki).as_deref() {
            Some(OID_P256) => Ok("ECDSA P-256".into()),
            Some(OID_P384) => Ok("ECDSA P-384".into()),
            Some(other) => Err(PkiError::WeakKey(format!(
                "elliptic curve {} is not supported; use P-256 or P-384",
                curve_name(other)
            ))),
            None => Err(PkiError::WeakKey(
                "EC key without a named curve is not supported".into(),
            )),
        },
        OID_ED25519 => Ok("Ed25519".into()),
        other => Err(PkiError::WeakKey(format!(
            "key algorithm {other} is not supported; use RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519"
        ))),
    }
}

/// Whether `parent` issued `child`: its subject is the child's issuer and its key verifies the child's signature.
pub(crate) fn issued_by(
    child: &x509_parser::certificate::X509Certificate<'_>,
    parent: &x509_parser::certificate::X509Certificate<'_>,
) -> bool {
    parent.subject().as_raw() == child.issuer().as_raw()
        && verify_signed_data(
            parent.public_key(),
            &child.signature_algorithm,
            child.tbs_certificate.as_ref(),
            &child.signature_value.data,
        )
        .is_ok()
}

/// Verifies `signature` over `message` made by the key in `spki` with algorithm `sig_alg`.
pub(crate) fn verify_signed_data(
    spki: &SubjectPublicKeyInfo<'_>,
    sig_alg: &AlgorithmIdentifier<'_>,
    message: &[u8],
    signature: &[u8],
) -> std::result::Result<(), String> {
    let sig_oid = sig_alg.algorithm.to_id_string();
    let key_alg = spki.algorithm.algorithm.to_id_string();
    let curve = curve_oid(spki);
    let alg: &'static dyn VerificationAlgorithm = match (key_alg.as_str(), sig_oid.as_str(), curve.as_deref()) {
        (OID_RSA, "1.2.840.113549.1.1.5", _) => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        (OID_RSA, "1.2.840.113549.1.1.11", _) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (OID_RSA, "1.2.840.113549.1.1.12", _) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (OID_RSA, "1.2.840.113549.1.1.13", _) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (OID_EC, "1.2.840.10045.4.1", Some(OID_P256)) => &signature::ECDSA_P256_SHA1_ASN1,
        (OID_EC, "1.2.840.10045.4.3.2", Some(OID_P256)) => &signature::ECDSA_P256_SHA256_ASN1,
        (OID_EC, "1.2.840.10045.4.3.3", Some(OID_P256)) => &signature::ECDSA_P256_SHA384_ASN1,
        (OID_EC, "1.2.840.10045.4.3.4", Some(OID_P256)) => &signature::ECDSA_P256_SHA512_ASN1,
        (OID_EC, "1.2.840.10045.4.3.2", Some(OID_P384)) => &signature::ECDSA_P384_SHA256_ASN1,
        (OID_EC, "1.2.840.10045.4.3.3", Some(OID_P384)) => &signature::ECDSA_P384_SHA384_ASN1,
        (OID_EC, "1.2.840.10045.4.3.4", Some(OID_P384)) => &signature::ECDSA_P384_SHA512_ASN1,
        (OID_EC, "1.2.840.10045.4.1", Some(OID_P521)) => &signature::ECDSA_P521_SHA1_ASN1,
        (OID_EC, "1.2.840.10045.4.3.2", Some(OID_P521)) => &signature::ECDSA_P521_SHA256_ASN1,
        (OID_EC, "1.2.840.10045.4.3.3", Some(OID_P521)) => &signature::ECDSA_P521_SHA384_ASN1,
        (OID_EC, "1.2.840.10045.4.3.4", Some(OID_P521)) => &signature::ECDSA_P521_SHA512_ASN1,
        (OID_ED25519, OID_ED25519, _) => &signature::ED25519,
        _ => {
            return Err(format!(
                "signature algorithm {} with a {} key is not supported",
                signature_name(&sig_oid).unwrap_or(&sig_oid),
                match key_alg.as_str() {
                    OID_RSA => "RSA".to_owned(),
                    OID_EC => format!("EC {}", curve.as_deref().map(curve_name).unwrap_or_default()),
                    other => other.to_owned(),
                }
            ));
        }
    };
    UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
        .verify(message, signature)
        .map_err(|_| "the signature does not match the public key".to_owned())
}
