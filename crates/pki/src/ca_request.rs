//! A managed CA whose certificate another CA signs: an intermediate under the operator's own root.
//!
//! [`CaRequest::create`] makes the CA's key and a CSR for it; the operator has their CA sign the CSR; and
//! [`CaRequest::install`] checks the signed certificate and the chain above it, and yields the [`ManagedCa`] that
//! issues from then on. The key never leaves Portcullis: only the CSR does.
//!
//! What it checks at install: the certificate is for this request's key, is a CA that may sign certificates and
//! CRLs (and whose extended key usage, if any, allows client authentication), is valid now, has a subject key
//! identifier (its CRLs name it) and a subject that can be written back byte for byte as the issuer of what it
//! signs; each certificate of the chain signed the one below it, is a CA that may sign certificates (client
//! authentication allowed if it has an extended key usage), is valid now and allows the path length below it
//! (self-issued links not counted); and the chain ends at a self-signed root. What it does not check: the chain's revocation (CRLs, OCSP) and name constraints. The edge
//! trusts the managed CA's certificate itself, so the chain matters to relying parties that trust the root, not to
//! the edge.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::ca::ManagedCa;
use crate::der;
use crate::dn;
use crate::error::{PkiError, Result};
use crate::keys::{self, KeyType};
use crate::pem;
use crate::seal::{self, MasterKey};

/// Most certificates a chain above a managed CA may hold.
pub const MAX_CHAIN: usize = 8;
/// Longest common name or organization a request may ask for (X.520's upper bound for both).
const MAX_NAME: usize = 64;

/// What to ask the other CA for.
#[derive(Debug, Clone, Default)]
pub struct CaRequestParams {
    /// `CN=`; `Portcullis Managed CA <first 8 hex of id>` when `None`.
    pub common_name: Option<String>,
    /// `O=`; omitted when `None`.
    pub organization: Option<String>,
    pub key_type: KeyType,
}

/// A managed CA that waits for its certificate: its id, key and CSR.
pub struct CaRequest {
    id: String,
    name: String,
    key_type: KeyType,
    key: KeyPair,
    csr_der: Vec<u8>,
}

impl std::fmt::Debug for CaRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaRequest")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

/// A managed CA made from a request, and the chain above it as PEM (its issuer first, the root last).
#[derive(Debug)]
pub struct InstalledCa {
    pub ca: ManagedCa,
    pub chain_pem: String,
}

fn checked_name(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() || value.len() > MAX_NAME || value.chars().any(char::is_control) {
        return Err(PkiError::InvalidParameter(format!(
            "{what} must be 1 to {MAX_NAME} bytes without control characters (got {value:?})"
        )));
    }
    Ok(())
}

impl CaRequest {
    /// Makes the key and the CSR: subject `CN=…, O=…`, asking for `basicConstraints CA:TRUE, pathlen:0` and
    /// `keyUsage keyCertSign, cRLSign, digitalSignature` (what a managed CA needs; the other CA decides).
    pub fn create(params: &CaRequestParams) -> Result<CaRequest> {
        let id = der::random_id();
        let name = match params.common_name.as_deref() {
            Some(cn) => {
                checked_name("common_name", cn)?;
                cn.to_owned()
            }
            None => format!("Portcullis Managed CA {}", &id[..8]),
        };
        let mut cp = CertificateParams::default();
        cp.distinguished_name = DistinguishedName::new();
        if let Some(org) = params.organization.as_deref() {
            checked_name("organization", org)?;
            cp.distinguished_name.push(DnType::OrganizationName, org);
        }
        cp.distinguished_name.push(DnType::CommonName, name.as_str());
        cp.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        cp.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        cp.key_identifier_method = KeyIdMethod::Sha256;
        let key = params.key_type.generate()?;
        let csr = cp.serialize_request(&key)?;
        Ok(CaRequest {
            id,
            name,
            key_type: params.key_type,
            key,
            csr_der: csr.der().to_vec(),
        })
    }

    /// Rebuilds a request from its stored parts; the key must match the CSR.
    pub fn from_sealed(
        id: &str,
        name: &str,
        key_type: KeyType,
        csr_pem: &str,
        sealed_key: &[u8],
        master: &MasterKey,
    ) -> Result<CaRequest> {
        let pkcs8 = seal::unseal(master, id, sealed_key)?;
        let key = key_type.load(&pkcs8)?;
        let csr_der = pem::single_from_pem_or_der(csr_pem.as_bytes(), "CERTIFICATE REQUEST")
            .map_err(|e| PkiError::Csr(e.to_string()))?;
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der)
            .map_err(|e| PkiError::Csr(format!("stored CA request: {e}")))?;
        if csr.certification_request_info.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::SealedKeyMalformed(
                "the unsealed private key does not match the request's CSR".into(),
            ));
        }
        Ok(CaRequest {
            id: id.to_owned(),
            name: name.to_owned(),
            key_type,
            key,
            csr_der,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The common name asked for.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn csr_pem(&self) -> String {
        pem::encode("CERTIFICATE REQUEST", &self.csr_der)
    }

    /// The private key sealed under `master` for this request's id, which the installed CA keeps.
    pub fn sealed_key(&self, master: &MasterKey) -> Vec<u8> {
        seal::seal(master, &self.id, &Zeroizing::new(self.key.serialize_der()))
    }

    /// Checks the signed certificate (`certificate`: PEM, optionally followed by the chain) and the chain above it
    /// (`chain`: PEM, the signing CA first and the root last; may be empty when `certificate` carries it), and
    /// makes the CA. Nothing is changed when a check fails.
    pub fn install(self, certificate: &str, chain: &str, now: OffsetDateTime) -> Result<InstalledCa> {
        let mut ders = certificate_blocks(certificate, "certificate")?;
        if ders.is_empty() {
            return Err(PkiError::Pem(
                "certificate: no -----BEGIN CERTIFICATE----- block found".into(),
            ));
        }
        ders.extend(certificate_blocks(chain, "chain")?);
        if ders.len() - 1 > MAX_CHAIN {
            return Err(PkiError::InvalidParameter(format!(
                "the chain holds {} certificates; at most {MAX_CHAIN} are accepted",
                ders.len() - 1
            )));
        }
        let mut certs = Vec::with_capacity(ders.len());
        for (i, d) in ders.iter().enumerate() {
            let (rest, cert) =
                X509Certificate::from_der(d).map_err(|e| PkiError::Certificate(format!("{}: {e}", place(i))))?;
            if !rest.is_empty() {
                return Err(PkiError::Certificate(format!("{}: trailing data", place(i))));
            }
            certs.push(cert);
        }
        let own = &certs[0];
        if own.public_key().raw != self.key.subject_public_key_info().as_slice() {
            return Err(PkiError::InvalidParameter(format!(
                "the certificate ({}) is for another key, not the one of request {}'s CSR",
                dn::rfc2253(own.subject()),
                self.id
            )));
        }
        if certs.len() == 1 {
            return Err(PkiError::InvalidParameter(
                "no chain: give the certificate of the CA that signed it and every CA above, up to and including \
                 the root"
                    .into(),
            ));
        }
        for (i, pair) in certs.windows(2).enumerate() {
            signed_by(&pair[0], i, &pair[1], i + 1)?;
        }
        let last = certs.len() - 1;
        let root = &certs[last];
        if root.subject().as_raw() != root.issuer().as_raw() {
            return Err(PkiError::InvalidParameter(format!(
                "the chain ends at {}, which is not a self-signed root: add the certificates above it",
                dn::rfc2253(root.subject())
            )));
        }
        signed_by(root, last, root, last)?;
        for (i, cert) in certs.iter().enumerate() {
            check_ca(i, cert, now)?;
            // A CA above the managed CA is followed by the managed CA and every CA between them, self-issued ones
            // (key rollover links) not counted, as RFC 5280 counts. The root's own limit is held to as well, as
            // OpenSSL does, though RFC 5280 leaves a trust anchor's to the relying party.
            let below = certs[..i]
                .iter()
                .filter(|c| c.subject().as_raw() != c.issuer().as_raw())
                .count();
            if i > 0
                && let Ok(Some(bc)) = cert.basic_constraints()
                && let Some(limit) = bc.value.path_len_constraint
                && (limit as usize) < below
            {
                return Err(PkiError::NotCa(format!(
                    "{} ({}) allows {limit} CA(s) below it, but the path to the managed CA has {below}",
                    place(i),
                    dn::rfc2253(cert.subject())
                )));
            }
        }
        if crate::facts::subject_key_id(own).is_none() {
            return Err(PkiError::NotCa(
                "the certificate has no subjectKeyIdentifier, which the managed CA's CRLs name (as their \
                 authorityKeyIdentifier): have your CA add one (OpenSSL: subjectKeyIdentifier=hash)"
                    .into(),
            ));
        }
        let name = dn::first_value(own.subject(), dn::OID_CN).unwrap_or_else(|| dn::rfc2253(own.subject()));
        let not_after = der::from_timestamp(own.validity().not_after.timestamp());
        let chain_pem = ders[1..].iter().map(|d| pem::encode("CERTIFICATE", d)).collect();
        let ca = ManagedCa::from_parts(self.id, name, self.key_type, ders.swap_remove(0), self.key, not_after);
        ca.check_issuer_name()?;
        Ok(InstalledCa { ca, chain_pem })
    }
}

/// The `CERTIFICATE` blocks of `text`, refusing anything else (a key pasted by mistake is named, not kept).
fn certificate_blocks(text: &str, field: &str) -> Result<Vec<Vec<u8>>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let blocks = pem::parse_blocks(text).map_err(|e| PkiError::Pem(format!("{field}: {e}")))?;
    if blocks.is_empty() {
        return Err(PkiError::Pem(format!(
            "{field}: no -----BEGIN CERTIFICATE----- block found"
        )));
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            if b.label == "CERTIFICATE" {
                Ok(b.der)
            } else {
                Err(PkiError::InvalidParameter(format!(
                    "{field}: block {} is a {}; only certificates belong here",
                    i + 1,
                    b.label
                )))
            }
        })
        .collect()
}

/// That `parent` (the `p`th certificate) signed `child` (the `c`th): its subject is the child's issuer and its key
/// verifies the child's signature; each failure named as such.
fn signed_by(child: &X509Certificate<'_>, c: usize, parent: &X509Certificate<'_>, p: usize) -> Result<()> {
    if parent.subject().as_raw() != child.issuer().as_raw() {
        return Err(PkiError::InvalidParameter(format!(
            "{} is issued by {}, not by {} ({}): the chain must go from the signing CA up to the root, in order",
            place(c),
            dn::rfc2253(child.issuer()),
            place(p),
            dn::rfc2253(parent.subject())
        )));
    }
    keys::verify_signed_data(
        parent.public_key(),
        &child.signature_algorithm,
        child.tbs_certificate.as_ref(),
        &child.signature_value.data,
    )
    .map_err(|e| {
        PkiError::InvalidParameter(format!(
            "{}'s signature does not verify with the key of {} ({}): {e}",
            place(c),
            place(p),
            dn::rfc2253(parent.subject())
        ))
    })
}

/// How messages name the `i`th certificate: the managed CA's own, then the chain's from 1.
fn place(i: usize) -> String {
    if i == 0 {
        "the certificate".to_owned()
    } else {
        format!("chain certificate {i}")
    }
}

/// That `cert` is a CA that may sign certificates (and CRLs, for the managed CA itself), may serve client
/// authentication, and is valid at `now`.
fn check_ca(i: usize, cert: &X509Certificate<'_>, now: OffsetDateTime) -> Result<()> {
    let what = || format!("{} ({})", place(i), dn::rfc2253(cert.subject()));
    let bad = |e: x509_parser::error::X509Error| PkiError::Certificate(format!("{}: {e}", what()));
    match cert.basic_constraints().map_err(bad)? {
        Some(bc) if bc.value.ca => {}
        _ => return Err(PkiError::NotCa(format!("{} lacks basicConstraints CA:TRUE", what()))),
    }
    if let Some(ku) = cert.key_usage().map_err(bad)? {
        if !ku.value.key_cert_sign() {
            return Err(PkiError::NotCa(format!("{}: its keyUsage lacks keyCertSign", what())));
        }
        if i == 0 && !ku.value.crl_sign() {
            return Err(PkiError::NotCa(format!(
                "{}: its keyUsage lacks cRLSign, and the managed CA signs its own CRLs",
                what()
            )));
        }
    }
    if let Some(eku) = cert.extended_key_usage().map_err(bad)?
        && !eku.value.any
        && !eku.value.client_auth
    {
        return Err(PkiError::NotCa(format!(
            "{}: its extendedKeyUsage does not include clientAuth, so verifiers would refuse the client \
             certificates under it",
            what()
        )));
    }
    let not_before = der::from_timestamp(cert.validity().not_before.timestamp());
    let not_after = der::from_timestamp(cert.validity().not_after.timestamp());
    if now > not_after {
        return Err(PkiError::CaValidity(format!(
            "{} expired on {}",
            what(),
            der::rfc3339(not_after)
        )));
    }
    if now < not_before {
        return Err(PkiError::CaValidity(format!(
            "{} is not valid before {}",
            what(),
            der::rfc3339(not_before)
        )));
    }
    Ok(())
}
