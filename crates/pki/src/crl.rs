//! CRL v2 building and signing for a managed CA.
//!
//! The TBSCertList is DER-encoded here by hand (rcgen's generic encoder is too slow for 100,000
//! entries) and signed with the CA key. Contents: version 2, the CA's subject as issuer,
//! thisUpdate/nextUpdate, one entry per revoked serial with its revocation date and optional reason
//! code, and the extensions authorityKeyIdentifier and cRLNumber. It does not decide which
//! certificates are revoked; the store passes the entries.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::ca::ManagedCa;
use crate::der::{self, TAG_BIT_STRING, TAG_ENUMERATED, TAG_INTEGER, TAG_OCTET_STRING, TAG_SEQUENCE};
use crate::error::{PkiError, Result};
use crate::pem;

/// CRL reason codes (RFC 5280 5.3.1); 7 is unused by the standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    Unspecified = 0,
    KeyCompromise = 1,
    CaCompromise = 2,
    AffiliationChanged = 3,
    Superseded = 4,
    CessationOfOperation = 5,
    CertificateHold = 6,
    RemoveFromCrl = 8,
    PrivilegeWithdrawn = 9,
    AaCompromise = 10,
}

impl RevocationReason {
    /// The reason for a CRLReason code, `None` for codes RFC 5280 does not define.
    pub fn from_code(code: u8) -> Option<RevocationReason> {
        use RevocationReason as R;
        [
            R::Unspecified,
            R::KeyCompromise,
            R::CaCompromise,
            R::AffiliationChanged,
            R::Superseded,
            R::CessationOfOperation,
            R::CertificateHold,
            R::RemoveFromCrl,
            R::PrivilegeWithdrawn,
            R::AaCompromise,
        ]
        .into_iter()
        .find(|r| *r as u8 == code)
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The serial's magnitude, big-endian (leading zero bytes are ignored).
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
    pub reason: Option<RevocationReason>,
}

/// Header fields of a CRL.
#[derive(Debug, Clone, Copy)]
pub struct CrlParams {
    /// Monotonic CRL number; the store keeps the counter.
    pub crl_number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
}

/// A signed CRL.
#[derive(Debug, Clone)]
pub struct Crl {
    der: Vec<u8>,
}

impl Crl {
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn pem(&self) -> String {
        pem::encode("X509 CRL", &self.der)
    }
}

const OID_AKI: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x23];
const OID_CRL_NUMBER: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x14];
const OID_REASON: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x15];

fn extension(out: &mut Vec<u8>, oid: &[u8], value_der: &[u8]) {
    let mut content = Vec::with_capacity(oid.len() + value_der.len() + 4);
    content.extend_from_slice(oid);
    der::tlv(&mut content, TAG_OCTET_STRING, value_der);
    der::tlv(out, TAG_SEQUENCE, &content);
}

impl ManagedCa {
    /// Builds and signs a CRL listing `entries`.
    pub fn build_crl(&self, params: &CrlParams, entries: &[RevokedEntry]) -> Result<Crl> {
        if params.next_update <= params.this_update {
            return Err(PkiError::InvalidParameter(
                "CRL nextUpdate must be after thisUpdate".into(),
            ));
        }
        let (_, ca) = X509Certificate::from_der(self.certificate_der())
            .map_err(|e| PkiError::Certificate(format!("CA certificate: {e}")))?;
        let ski = crate::facts::subject_key_id(&ca)
            .ok_or_else(|| PkiError::Certificate("the CA certificate has no subject key identifier".into()))?;

        // Each entry is about 60 bytes; reserving up front avoids repeated copies of a big list.
        let mut revoked = Vec::with_capacity(entries.len() * 64);
        let mut entry = Vec::with_capacity(64);
        for e in entries {
            let magnitude = der::strip_leading_zeros(&e.serial);
            if e.serial.is_empty() || magnitude.len() > 20 {
                return Err(PkiError::InvalidParameter(format!(
                    "revoked serial {} must be 1 to 20 bytes",
                    der::hex(&e.serial, false)
                )));
            }
            entry.clear();
            der::tlv(&mut entry, TAG_INTEGER, &der::unsigned_integer_content(magnitude));
            der::push_time(&mut entry, e.revoked_at);
            if let Some(reason) = e.reason {
                let mut exts = Vec::with_capacity(16);
                extension(&mut exts, OID_REASON, &[TAG_ENUMERATED, 1, reason as u8]);
                der::tlv(&mut entry, TAG_SEQUENCE, &exts);
            }
            der::tlv(&mut revoked, TAG_SEQUENCE, &entry);
        }

        let mut tbs = Vec::with_capacity(revoked.len() + 512);
        der::tlv(&mut tbs, TAG_INTEGER, &[1]); // v2
        tbs.extend_from_slice(self.key_type().signature_algorithm_der());
        tbs.extend_from_slice(ca.subject().as_raw());
        der::push_time(&mut tbs, params.this_update);
        der::push_time(&mut tbs, params.next_update);
        if !entries.is_empty() {
            der::tlv(&mut tbs, TAG_SEQUENCE, &revoked);
        }
        drop(revoked);
        let mut exts = Vec::new();
        extension(&mut exts, OID_AKI, &der::wrap(TAG_SEQUENCE, &der::wrap(0x80, ski)));
        extension(
            &mut exts,
            OID_CRL_NUMBER,
            &der::wrap(
                TAG_INTEGER,
                &der::unsigned_integer_content(&params.crl_number.to_be_bytes()),
            ),
        );
        der::tlv(&mut tbs, 0xa0, &der::wrap(TAG_SEQUENCE, &exts));
        let tbs = der::wrap(TAG_SEQUENCE, &tbs);

        let signature = rcgen::SigningKey::sign(self.signing_key(), &tbs)?;
        let mut bits = Vec::with_capacity(signature.len() + 1);
        bits.push(0); // no unused bits
        bits.extend_from_slice(&signature);

        let mut body = tbs;
        body.extend_from_slice(self.key_type().signature_algorithm_der());
        der::tlv(&mut body, TAG_BIT_STRING, &bits);
        Ok(Crl {
            der: der::wrap(TAG_SEQUENCE, &body),
        })
    }
}
