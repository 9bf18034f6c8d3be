//! OCSP (RFC 6960) for a managed CA: reading requests and building responses signed by the CA itself.
//!
//! The answers mean what the CA's CRL means: a serial is `revoked` if the CRL lists it and `good` otherwise
//! (RFC 6960 2.2: no certificate with that serial within its validity interval is revoked). Requests are read
//! with a small DER reader that refuses anything malformed, with limits on the number of certificates asked
//! about; nonces and request signatures are not used (responses can then be cached by relying parties, as
//! CRLs are). It does no I/O and reads no clock: callers pass the statuses and the times.

use aws_lc_rs::digest;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::ca::ManagedCa;
use crate::crl::RevocationReason;
use crate::der::{self, TAG_BIT_STRING, TAG_ENUMERATED, TAG_INTEGER, TAG_OCTET_STRING, TAG_SEQUENCE};
use crate::error::{PkiError, Result};

/// The most certificates one request may ask about.
pub const MAX_REQUESTS: usize = 20;
/// The largest request read (a request for 20 certificates with SHA-256 hashes is about 2.5 KB).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

const OID_SHA1: &[u8] = &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// id-pkix-ocsp-basic.
const OID_OCSP_BASIC: &[u8] = &[0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];

/// The hash a request's CertID uses for the issuer's name and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertIdHash {
    Sha1,
    Sha256,
}

impl CertIdHash {
    pub(crate) fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            CertIdHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            CertIdHash::Sha256 => &digest::SHA256,
        }
    }

    pub(crate) fn oid(self) -> &'static [u8] {
        match self {
            CertIdHash::Sha1 => OID_SHA1,
            CertIdHash::Sha256 => OID_SHA256,
        }
    }
}

/// One certificate a request asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    pub hash: CertIdHash,
    pub issuer_name_hash: Vec<u8>,
    pub issuer_key_hash: Vec<u8>,
    /// The serial's magnitude, big-endian, without leading zeros.
    pub serial: Vec<u8>,
}

/// What the responder says about one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspStatus {
    Good,
    Revoked {
        at: OffsetDateTime,
        reason: Option<RevocationReason>,
    },
    /// Not issued by this CA: the request named another issuer.
    Unknown,
}

/// An OCSP response without a signed body (RFC 6960 4.2.1), for requests that cannot be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspError {
    MalformedRequest = 1,
    InternalError = 2,
    TryLater = 3,
    Unauthorized = 6,
}

impl OcspError {
    /// The DER of the response.
    pub fn response(self) -> Vec<u8> {
        der::wrap(TAG_SEQUENCE, &[TAG_ENUMERATED, 1, self as u8])
    }
}

/// A DER element: its tag, its content, and what follows it.
pub(crate) fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags do not occur in OCSP requests.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        // DER: the shortest length form, no leading zero byte.
        if bytes[0] == 0 {
            return None;
        }
        let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if len < 0x80 {
            return None;
        }
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// The content of an element with `tag`, and what follows it.
fn expect(input: &[u8], tag: u8) -> Result<(&[u8], &[u8])> {
    match read_tlv(input) {
        Some((t, content, rest)) if t == tag => Ok((content, rest)),
        _ => Err(PkiError::InvalidParameter(format!(
            "malformed OCSP request: expected tag {tag:#04x}"
        ))),
    }
}

fn malformed(what: &str) -> PkiError {
    PkiError::InvalidParameter(format!("malformed OCSP request: {what}"))
}

/// Reads an OCSP request: the certificates it asks about. Extensions (a nonce) are ignored, a signed request is
/// read without checking its signature (it would not change the answer).
pub fn parse_request(der_bytes: &[u8]) -> Result<Vec<CertId>> {
    if der_bytes.len() > MAX_REQUEST_BYTES {
        return Err(malformed("too large"));
    }
    let (request, rest) = expect(der_bytes, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return Err(malformed("data after the request"));
    }
    let (mut tbs, _signature) = expect(request, TAG_SEQUENCE)?;
    // version [0] EXPLICIT, requestorName [1] EXPLICIT: optional, skipped.
    while let Some((tag, _, rest)) = read_tlv(tbs) {
        if tag == 0xa0 || tag == 0xa1 {
            tbs = rest;
        } else {
            break;
        }
    }
    let (mut list, _extensions) = expect(tbs, TAG_SEQUENCE)?;
    let mut ids = Vec::new();
    while !list.is_empty() {
        if ids.len() == MAX_REQUESTS {
            return Err(malformed(&format!(
                "more than {MAX_REQUESTS} certificates in one request"
            )));
        }
        let (request, rest) = expect(list, TAG_SEQUENCE)?;
        list = rest;
        let (cert_id, _single_extensions) = expect(request, TAG_SEQUENCE)?;
        let (algorithm, rest) = expect(cert_id, TAG_SEQUENCE)?;
        let hash = match read_tlv(algorithm) {
            Some((0x06, _, params)) => {
                let oid_len = algorithm.len() - params.len();
                // Parameters: absent or NULL.
                if !(params.is_empty() || params == [0x05, 0x00]) {
                    return Err(malformed("hash algorithm parameters"));
                }
                match &algorithm[..oid_len] {
                    oid if oid == OID_SHA1 => CertIdHash::Sha1,
                    oid if oid == OID_SHA256 => CertIdHash::Sha256,
                    _ => return Err(malformed("unsupported CertID hash (SHA-1 and SHA-256 are)")),
                }
            }
            _ => return Err(malformed("CertID hash algorithm")),
        };
        let (name_hash, rest) = expect(rest, TAG_OCTET_STRING)?;
        let (key_hash, rest) = expect(rest, TAG_OCTET_STRING)?;
        let (serial, rest) = expect(rest, TAG_INTEGER)?;
        if !rest.is_empty() {
            return Err(malformed("data after the serial number"));
        }
        let expected = hash.algorithm().output_len();
        if name_hash.len() != expected || key_hash.len() != expected {
            return Err(malformed("hash length does not match its algorithm"));
        }
        let magnitude = der::strip_leading_zeros(serial);
        if serial.is_empty() || serial[0] & 0x80 != 0 || magnitude.len() > 20 {
            return Err(malformed("serial number"));
        }
        ids.push(CertId {
            hash,
            issuer_name_hash: name_hash.to_vec(),
            issuer_key_hash: key_hash.to_vec(),
            serial: magnitude.to_vec(),
        });
    }
    if ids.is_empty() {
        return Err(malformed("no certificate asked about"));
    }
    Ok(ids)
}

/// The issuer's name and key as a CertID hashes them.
struct IssuerHashes {
    name: Vec<u8>,
    key: Vec<u8>,
}

fn issuer_hashes(ca: &X509Certificate<'_>, hash: CertIdHash) -> IssuerHashes {
    IssuerHashes {
        name: digest::digest(hash.algorithm(), ca.subject().as_raw())
            .as_ref()
            .to_vec(),
        key: digest::digest(hash.algorithm(), &ca.public_key().subject_public_key.data)
            .as_ref()
            .to_vec(),
    }
}

impl ManagedCa {
    /// Whether `id` names a certificate this CA issued (its issuer name and key hashes are this CA's).
    pub fn issued(&self, id: &CertId) -> Result<bool> {
        let (_, ca) = X509Certificate::from_der(self.certificate_der())
            .map_err(|e| PkiError::Certificate(format!("CA certificate: {e}")))?;
        let ours = issuer_hashes(&ca, id.hash);
        Ok(ours.name == id.issuer_name_hash && ours.key == id.issuer_key_hash)
    }

    /// A successful OCSP response with one answer per `(certificate, status)`, signed by this CA, valid from
    /// `this_update` until `next_update`.
    pub fn ocsp_response(
        &self,
        answers: &[(CertId, OcspStatus)],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>> {
        if next_update <= this_update {
            return Err(PkiError::InvalidParameter(
                "OCSP nextUpdate must be after thisUpdate".into(),
            ));
        }
        let (_, ca) = X509Certificate::from_der(self.certificate_der())
            .map_err(|e| PkiError::Certificate(format!("CA certificate: {e}")))?;
        let signer = Signer {
            key: self.signing_key(),
            algorithm: self.key_type().signature_algorithm_der(),
            public_key: &ca.public_key().subject_public_key.data,
            certificates: &[],
        };
        signed_response(answers, this_update, Some(next_update), &signer)
    }
}

/// Who signs a response: a key, its signature algorithm (the DER AlgorithmIdentifier), its public key's bits (for
/// the responder ID) and the certificates sent along (a delegated responder's own).
pub(crate) struct Signer<'a> {
    pub key: &'a rcgen::KeyPair,
    pub algorithm: &'a [u8],
    pub public_key: &'a [u8],
    pub certificates: &'a [&'a [u8]],
}

/// A successful basic response for `answers`, signed by `signer`.
pub(crate) fn signed_response(
    answers: &[(CertId, OcspStatus)],
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
    signer: &Signer<'_>,
) -> Result<Vec<u8>> {
    let mut responses = Vec::new();
    for (id, status) in answers {
        let mut single = Vec::new();
        id.encode(&mut single);
        match status {
            OcspStatus::Good => single.extend_from_slice(&[0x80, 0x00]),
            OcspStatus::Revoked { at, reason } => {
                let mut info = Vec::new();
                der::push_generalized_time(&mut info, *at);
                if let Some(reason) = reason {
                    der::tlv(&mut info, 0xa0, &[TAG_ENUMERATED, 1, *reason as u8]);
                }
                der::tlv(&mut single, 0xa1, &info);
            }
            OcspStatus::Unknown => single.extend_from_slice(&[0x82, 0x00]),
        }
        der::push_generalized_time(&mut single, this_update);
        if let Some(next_update) = next_update {
            let mut next = Vec::new();
            der::push_generalized_time(&mut next, next_update);
            der::tlv(&mut single, 0xa0, &next);
        }
        der::tlv(&mut responses, TAG_SEQUENCE, &single);
    }

    let mut data = Vec::new();
    // responderID byKey: the SHA-1 of the signer's public key (RFC 6960 4.2.1).
    let key_hash = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, signer.public_key);
    der::tlv(&mut data, 0xa2, &der::wrap(TAG_OCTET_STRING, key_hash.as_ref()));
    der::push_generalized_time(&mut data, this_update);
    der::tlv(&mut data, TAG_SEQUENCE, &responses);
    let tbs = der::wrap(TAG_SEQUENCE, &data);

    let signature = rcgen::SigningKey::sign(signer.key, &tbs)?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0);
    bits.extend_from_slice(&signature);
    let mut basic = tbs;
    basic.extend_from_slice(signer.algorithm);
    der::tlv(&mut basic, TAG_BIT_STRING, &bits);
    if !signer.certificates.is_empty() {
        let certs = der::wrap(TAG_SEQUENCE, &signer.certificates.concat());
        der::tlv(&mut basic, 0xa0, &certs);
    }
    let basic = der::wrap(TAG_SEQUENCE, &basic);

    let mut bytes = Vec::with_capacity(basic.len() + 32);
    bytes.extend_from_slice(OID_OCSP_BASIC);
    der::tlv(&mut bytes, TAG_OCTET_STRING, &basic);
    let mut response = vec![TAG_ENUMERATED, 1, 0];
    der::tlv(&mut response, 0xa0, &der::wrap(TAG_SEQUENCE, &bytes));
    Ok(der::wrap(TAG_SEQUENCE, &response))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request as `openssl ocsp -issuer … -serial …` sends it (SHA-1 CertID), for `ca` and `serial`.
    fn request_for(ca: &ManagedCa, serial: &[u8], hash: CertIdHash) -> Vec<u8> {
        let (_, cert) = X509Certificate::from_der(ca.certificate_der()).unwrap();
        let hashes = issuer_hashes(&cert, hash);
        let id = CertId {
            hash,
            issuer_name_hash: hashes.name,
            issuer_key_hash: hashes.key,
            serial: serial.to_vec(),
        };
        id.request()
    }

    fn ca() -> ManagedCa {
        ManagedCa::create(&crate::CaParams::default(), OffsetDateTime::now_utc()).unwrap()
    }

    #[test]
    fn requests_are_read_and_matched_to_their_issuer() {
        let ca = ca();
        for hash in [CertIdHash::Sha1, CertIdHash::Sha256] {
            let ids = parse_request(&request_for(&ca, &[0x00, 0x8f, 0x01], hash)).unwrap();
            assert_eq!(ids.len(), 1);
            assert_eq!(ids[0].serial, [0x8f, 0x01]);
            assert_eq!(ids[0].hash, hash);
            assert!(ca.issued(&ids[0]).unwrap());
            assert!(!super::tests::ca().issued(&ids[0]).unwrap(), "another CA's");
        }
    }

    #[test]
    fn malformed_requests_are_refused_without_panicking() {
        let ca = ca();
        let good = request_for(&ca, &[1, 2, 3], CertIdHash::Sha1);
        // Every truncation and every single-byte corruption: an error or a parse, never a panic.
        for end in 0..good.len() {
            assert!(parse_request(&good[..end]).is_err(), "truncated at {end}");
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                let _ = parse_request(&bad);
            }
        }
        assert!(parse_request(&[]).is_err());
        assert!(parse_request(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(parse_request(&trailing).is_err());
    }

    #[test]
    fn responses_are_signed_and_carry_each_status() {
        let ca = ca();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let ids = parse_request(&request_for(&ca, &[7], CertIdHash::Sha1)).unwrap();
        let answers = [
            (ids[0].clone(), OcspStatus::Good),
            (
                ids[0].clone(),
                OcspStatus::Revoked {
                    at: now,
                    reason: Some(RevocationReason::CertificateHold),
                },
            ),
            (ids[0].clone(), OcspStatus::Unknown),
        ];
        let der_bytes = ca.ocsp_response(&answers, now, now + time::Duration::hours(1)).unwrap();
        // successful, basic response, with the three statuses' tags in order.
        let (response, rest) = expect(&der_bytes, TAG_SEQUENCE).unwrap();
        assert!(rest.is_empty());
        assert_eq!(&response[..3], &[TAG_ENUMERATED, 1, 0]);
        let find = |needle: &[u8]| der_bytes.windows(needle.len()).any(|w| w == needle);
        assert!(find(OID_OCSP_BASIC));
        assert!(find(&[0x80, 0x00]) && find(&[0x82, 0x00]));
        assert!(find(b"20270115080000Z"), "times are GeneralizedTime");
        assert!(ca.ocsp_response(&answers, now, now).is_err());
        assert_eq!(OcspError::TryLater.response(), [0x30, 0x03, 0x0a, 0x01, 0x03]);
    }
}
