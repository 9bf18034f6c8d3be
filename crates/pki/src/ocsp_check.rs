//! Checking a client certificate's status with its CA's OCSP responder (RFC 6960), for uploaded CAs: the request
//! to send and the verified meaning of the answer.
//!
//! An answer counts only if it is signed by the certificate's issuer, or by a responder certificate that the issuer
//! signed for OCSP signing (id-kp-OCSPSigning) and that is valid now; if it answers for exactly the certificate
//! asked about; and if it is current (`thisUpdate` not in the future, `nextUpdate` not past, or, without a
//! `nextUpdate`, `thisUpdate` within the last hour), with five minutes' allowance for clocks. Requests carry no
//! nonce, so that answers can be cached, as responders expect. Only the leaf is checked, not intermediates.
//! No I/O and no clock: the caller fetches and passes the time.

use aws_lc_rs::digest;
use rustls_pki_types::CertificateDer;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::crl::RevocationReason;
use crate::der::{self, TAG_BIT_STRING, TAG_ENUMERATED, TAG_INTEGER, TAG_OCTET_STRING, TAG_SEQUENCE};
use crate::error::{PkiError, Result};
use crate::ocsp::{CertId, CertIdHash, OcspStatus, read_tlv};

/// The largest response read; responders answer one certificate in 1–3 KB, with their certificate.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Allowance for the responder's clock and ours.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);
/// How old an answer without a `nextUpdate` may be.
const MAX_AGE_WITHOUT_NEXT_UPDATE: time::Duration = time::Duration::hours(1);

const OID_OCSP_BASIC: &[u8] = &[0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9), as webpki wants it: the OID's value.
const EKU_OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];
/// id-ad-ocsp, in the authority information access extension.
const AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";

/// How a CA's certificates are checked with OCSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspPolicy {
    /// When no verified answer can be had (responder down, no responder, `unknown`): refuse the certificate
    /// (`true`) or accept it as the chain check did (`false`).
    pub hard_fail: bool,
    /// A responder to ask instead of the one the certificate names.
    pub responder: Option<String>,
}

/// One certificate to check: what to send where, and what to check the answer against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspTarget {
    pub cert_id: CertId,
    /// The DER request (one SHA-1 CertID, as `openssl ocsp` sends and every responder reads).
    pub request: Vec<u8>,
    /// The policy's responder, else the certificate's first OCSP URL; `None` when neither exists.
    pub url: Option<String>,
    pub hard_fail: bool,
    /// The trust anchor the chain leads to (its subject public key info), whose policy applies
    /// ([`crate::Verifier::anchor_policy`]).
    pub anchor_key: Vec<u8>,
    /// When the certificate expires: a revocation holds until then.
    pub not_after: OffsetDateTime,
    issuer: Vec<u8>,
}

/// A certificate that should be checked but for which no request can be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspUnusable {
    pub hard_fail: bool,
    /// As [`OcspTarget::anchor_key`].
    pub anchor_key: Vec<u8>,
    pub reason: String,
}

/// A verified answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OcspAnswer {
    pub status: OcspStatus,
    pub this_update: OffsetDateTime,
    pub next_update: Option<OffsetDateTime>,
}

fn bad(what: &str) -> PkiError {
    PkiError::InvalidParameter(format!("OCSP response: {what}"))
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8])> {
    match read_tlv(input) {
        Some((t, content, rest)) if t == tag => Ok((content, rest)),
        _ => Err(bad(&format!("malformed {what}"))),
    }
}

/// The whole element (tag and length included) at the start of `input`, and what follows it.
fn element<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8])> {
    let (_, rest) = expect(input, tag, what)?;
    Ok((&input[..input.len() - rest.len()], rest))
}

impl CertId {
    /// The CertID of `leaf` as issued by `issuer` (both DER).
    pub fn for_certificate(leaf: &[u8], issuer: &[u8], hash: CertIdHash) -> Result<CertId> {
        let (_, leaf) = X509Certificate::from_der(leaf).map_err(|e| PkiError::Certificate(e.to_string()))?;
        let (_, issuer) = X509Certificate::from_der(issuer).map_err(|e| PkiError::Certificate(e.to_string()))?;
        Ok(CertId {
            hash,
            issuer_name_hash: digest::digest(hash.algorithm(), issuer.subject().as_raw())
                .as_ref()
                .to_vec(),
            issuer_key_hash: digest::digest(hash.algorithm(), &issuer.public_key().subject_public_key.data)
                .as_ref()
                .to_vec(),
            serial: der::strip_leading_zeros(leaf.raw_serial()).to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut cert_id = Vec::new();
        der::tlv(
            &mut cert_id,
            TAG_SEQUENCE,
            &[self.hash.oid(), &[0x05, 0x00][..]].concat(),
        );
        der::tlv(&mut cert_id, TAG_OCTET_STRING, &self.issuer_name_hash);
        der::tlv(&mut cert_id, TAG_OCTET_STRING, &self.issuer_key_hash);
        der::tlv(&mut cert_id, TAG_INTEGER, &der::unsigned_integer_content(&self.serial));
        der::tlv(out, TAG_SEQUENCE, &cert_id);
    }

    /// An unsigned request for this certificate alone, without a nonce.
    pub fn request(&self) -> Vec<u8> {
        let mut cert_id = Vec::new();
        self.encode(&mut cert_id);
        let request = der::wrap(TAG_SEQUENCE, &cert_id);
        let list = der::wrap(TAG_SEQUENCE, &request);
        der::wrap(TAG_SEQUENCE, &der::wrap(TAG_SEQUENCE, &list))
    }
}

/// The first OCSP responder URL in `cert`'s authority information access, if any.
pub fn responder_url(cert: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    cert.iter_extensions().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityInfoAccess(aia) => aia.accessdescs.iter().find_map(|ad| {
            match (&ad.access_location, ad.access_method.to_id_string() == AD_OCSP) {
                (GeneralName::URI(uri), true) => Some((*uri).to_owned()),
                _ => None,
            }
        }),
        _ => None,
    })
}

impl OcspTarget {
    /// What to ask about `leaf`, issued by `issuer` (both DER, the chain already verified), which leads to the
    /// anchor with `anchor_key`.
    pub fn new(leaf: &[u8], issuer: &[u8], anchor_key: &[u8], policy: &OcspPolicy) -> Result<OcspTarget> {
        let cert_id = CertId::for_certificate(leaf, issuer, CertIdHash::Sha1)?;
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| PkiError::Certificate(e.to_string()))?;
        Ok(OcspTarget {
            request: cert_id.request(),
            url: policy.responder.clone().or_else(|| responder_url(leaf)),
            hard_fail: policy.hard_fail,
            anchor_key: anchor_key.to_vec(),
            not_after: cert.validity().not_after.to_datetime(),
            issuer: issuer.to_vec(),
            cert_id,
        })
    }

    /// Identifies the question across connections: the certificate (issuer name and key hashes, serial) and the
    /// responder asked, so that a changed responder is asked afresh.
    pub fn cache_key(&self) -> Vec<u8> {
        [
            &self.cert_id.issuer_name_hash[..],
            &self.cert_id.issuer_key_hash,
            &self.cert_id.serial,
            self.url.as_deref().unwrap_or("").as_bytes(),
        ]
        .concat()
    }

    /// Reads, verifies and interprets `response` (DER) at `now`.
    pub fn check_response(&self, response: &[u8], now: OffsetDateTime) -> Result<OcspAnswer> {
        if response.len() > MAX_RESPONSE_BYTES {
            return Err(bad("too large"));
        }
        let (outer, rest) = expect(response, TAG_SEQUENCE, "response")?;
        if !rest.is_empty() {
            return Err(bad("data after the response"));
        }
        let (status, rest) = expect(outer, TAG_ENUMERATED, "response status")?;
        match status {
            [0] => {}
            [1] => return Err(bad("the responder says the request is malformed")),
            [2] => return Err(bad("the responder had an internal error")),
            [3] => return Err(bad("the responder says to try later")),
            [5] => return Err(bad("the responder wants a signed request")),
            [6] => return Err(bad("the responder is not authorized for this certificate")),
            _ => return Err(bad("unknown response status")),
        }
        let (bytes, _) = expect(rest, 0xa0, "response bytes")?;
        let (bytes, _) = expect(bytes, TAG_SEQUENCE, "response bytes")?;
        let (kind, rest) = element(bytes, 0x06, "response type")?;
        if kind != OID_OCSP_BASIC {
            return Err(bad("not a basic OCSP response"));
        }
        let (basic, _) = expect(rest, TAG_OCTET_STRING, "response")?;
        let (basic, _) = expect(basic, TAG_SEQUENCE, "basic response")?;
        let (tbs, rest) = element(basic, TAG_SEQUENCE, "response data")?;
        let (algorithm, rest) = expect(rest, TAG_SEQUENCE, "signature algorithm")?;
        let (signature, rest) = expect(rest, TAG_BIT_STRING, "signature")?;
        let signature = match signature.split_first() {
            Some((0, bits)) => bits,
            _ => return Err(bad("malformed signature")),
        };
        let mut certs = Vec::new();
        if !rest.is_empty() {
            let (list, _) = expect(rest, 0xa0, "certificates")?;
            let (mut list, _) = expect(list, TAG_SEQUENCE, "certificates")?;
            while !list.is_empty() {
                // A handful at most; more is not an answer for one certificate.
                if certs.len() == 8 {
                    return Err(bad("too many certificates"));
                }
                let (cert, rest) = element(list, TAG_SEQUENCE, "certificate")?;
                certs.push(cert);
                list = rest;
            }
        }
        self.verify_signer(tbs, algorithm, signature, &certs, now)?;
        let answer = self.read_data(tbs)?;
        if let OcspStatus::Revoked { reason, .. } = answer.status
            && reason != Some(RevocationReason::CertificateHold)
        {
            // A signed revocation stays true when the answer is old: only a hold can be lifted.
            return Ok(answer);
        }
        if answer.this_update > now + CLOCK_SKEW {
            return Err(bad("thisUpdate is in the future"));
        }
        match answer.next_update {
            Some(next) if next < now - CLOCK_SKEW => return Err(bad("nextUpdate has passed")),
            None if answer.this_update < now - MAX_AGE_WITHOUT_NEXT_UPDATE => {
                return Err(bad("older than an hour and without nextUpdate"));
            }
            _ => {}
        }
        Ok(answer)
    }

    /// The response is signed by the issuer, or by one of `certs` that the issuer authorized for OCSP signing.
    fn verify_signer(
        &self,
        tbs: &[u8],
        algorithm: &[u8],
        signature: &[u8],
        certs: &[&[u8]],
        now: OffsetDateTime,
    ) -> Result<()> {
        if signature_valid(&self.issuer, tbs, algorithm, signature) {
            return Ok(());
        }
        let issuer = CertificateDer::from(self.issuer.as_slice());
        let anchor =
            webpki::anchor_from_trusted_cert(&issuer).map_err(|e| PkiError::Certificate(format!("issuer: {e}")))?;
        let time = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now.unix_timestamp()).unwrap_or(0),
        ));
        for cert in certs {
            if !signature_valid(cert, tbs, algorithm, signature) {
                continue;
            }
            let der = CertificateDer::from(*cert);
            let Ok(ee) = webpki::EndEntityCert::try_from(&der) else {
                continue;
            };
            let authorized = ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                std::slice::from_ref(&anchor),
                &[],
                time,
                webpki::KeyUsage::required(EKU_OCSP_SIGNING),
                None,
                None,
            );
            return match authorized {
                Ok(_) => Ok(()),
                Err(e) => Err(bad(&format!(
                    "signed by a certificate the issuer did not authorize for OCSP signing ({e:?})"
                ))),
            };
        }
        Err(bad(
            "signature does not verify with the issuer's key or an authorized responder's",
        ))
    }

    /// ResponseData: the single response for our certificate.
    fn read_data(&self, tbs: &[u8]) -> Result<OcspAnswer> {
        let (mut data, _) = expect(tbs, TAG_SEQUENCE, "response data")?;
        // version [0] EXPLICIT, optional.
        if let Some((0xa0, _, rest)) = read_tlv(data) {
            data = rest;
        }
        // responderID: [1] byName or [2] byKey; which signer is checked above, by signature.
        let (_, rest) = match read_tlv(data) {
            Some((0xa1 | 0xa2, content, rest)) => (content, rest),
            _ => return Err(bad("malformed responder ID")),
        };
        let (_produced_at, rest) = expect(rest, 0x18, "producedAt")?;
        let (mut responses, _extensions) = expect(rest, TAG_SEQUENCE, "responses")?;
        let mut wanted = Vec::new();
        self.cert_id.encode(&mut wanted);
        while !responses.is_empty() {
            let (single, rest) = expect(responses, TAG_SEQUENCE, "single response")?;
            responses = rest;
            let (cert_id, rest) = element(single, TAG_SEQUENCE, "CertID")?;
            if !same_cert_id(cert_id, &wanted) {
                continue;
            }
            let status = match read_tlv(rest) {
                Some((0x80, [], _)) => OcspStatus::Good,
                // Signed and about our certificate: revoked, whatever the state of the details, which are read
                // as far as they can be (a malformed reason or time must not turn a revocation into a failure
                // that soft-fail would accept).
                Some((0xa1, info, _)) => {
                    let (at, info) = match read_tlv(info) {
                        Some((0x18, at, rest)) => (generalized_time(at).ok(), rest),
                        _ => (None, &[][..]),
                    };
                    let reason = match read_tlv(info) {
                        Some((0xa0, reason, _)) => match read_tlv(reason) {
                            Some((TAG_ENUMERATED, [code], _)) => RevocationReason::from_code(*code),
                            _ => None,
                        },
                        _ => None,
                    };
                    OcspStatus::Revoked {
                        at: at.unwrap_or(OffsetDateTime::UNIX_EPOCH),
                        reason,
                    }
                }
                Some((0x82, _, _)) => OcspStatus::Unknown,
                _ => return Err(bad("malformed certificate status")),
            };
            let rest = read_tlv(rest).map(|(_, _, rest)| rest).unwrap_or(&[]);
            let (this_update, rest) = expect(rest, 0x18, "thisUpdate")?;
            let next_update = match read_tlv(rest) {
                Some((0xa0, next, _)) => Some(generalized_time(expect(next, 0x18, "nextUpdate")?.0)?),
                _ => None,
            };
            return Ok(OcspAnswer {
                status,
                this_update: generalized_time(this_update)?,
                next_update,
            });
        }
        Err(bad("no answer for the certificate asked about"))
    }
}

/// Two CertIDs name the same certificate: the same bytes, except that the hash algorithm's parameters may be
/// NULL in one and absent in the other.
fn same_cert_id(got: &[u8], wanted: &[u8]) -> bool {
    fn parts(id: &[u8]) -> Option<(&[u8], &[u8])> {
        let (_, content, _) = read_tlv(id)?;
        let (_, algorithm, rest) = read_tlv(content)?;
        let (_, oid, params) = read_tlv(algorithm)?;
        if !(params.is_empty() || params == [0x05, 0x00]) {
            return None;
        }
        Some((oid, rest))
    }
    matches!((parts(got), parts(wanted)), (Some(a), Some(b)) if a == b)
}

/// Whether `signature` over `message` verifies with the key of `cert` (DER) under `algorithm` (the content of
/// an AlgorithmIdentifier), with any algorithm webpki accepts for certificates.
fn signature_valid(cert: &[u8], message: &[u8], algorithm: &[u8], signature: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(cert) else {
        return false;
    };
    let Some((_, spki, _)) = read_tlv(cert.tbs_certificate.subject_pki.raw) else {
        return false;
    };
    let Some((_, key_algorithm, _)) = read_tlv(spki) else {
        return false;
    };
    let key = &cert.public_key().subject_public_key.data;
    webpki::ALL_VERIFICATION_ALGS.iter().any(|alg| {
        alg.public_key_alg_id().as_ref() == key_algorithm
            && alg.signature_alg_id().as_ref() == algorithm
            && alg.verify_signature(key, message, signature).is_ok()
    })
}

/// GeneralizedTime content: `YYYYMMDDHHMMSS[.fff]Z`.
fn generalized_time(text: &[u8]) -> Result<OffsetDateTime> {
    let invalid = || bad("malformed time");
    let text = std::str::from_utf8(text).map_err(|_| invalid())?;
    let text = text.strip_suffix('Z').ok_or_else(invalid)?;
    let (main, fraction) = text.split_once('.').unwrap_or((text, ""));
    if main.len() != 14 || !main.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let n = |range: std::ops::Range<usize>| main[range].parse::<u16>().map_err(|_| invalid());
    let month = Month::try_from(u8::try_from(n(4..6)?).map_err(|_| invalid())?).map_err(|_| invalid())?;
    let date = Date::from_calendar_date(i32::from(n(0..4)?), month, n(6..8)? as u8).map_err(|_| invalid())?;
    let time = Time::from_hms(n(8..10)? as u8, n(10..12)? as u8, n(12..14)? as u8).map_err(|_| invalid())?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::ManagedCa;

    fn ca() -> ManagedCa {
        ManagedCa::create(&crate::CaParams::default(), OffsetDateTime::now_utc()).unwrap()
    }

    fn leaf(ca: &ManagedCa) -> Vec<u8> {
        let mut request = crate::ca::GeneratedKeyRequest::default();
        request.subject.common_name = "client".into();
        let options = crate::ca::IssueOptions::default();
        ca.issue_with_generated_key(&request, &options, OffsetDateTime::now_utc())
            .unwrap()
            .der
    }

    fn target(ca: &ManagedCa, leaf: &[u8]) -> OcspTarget {
        let policy = OcspPolicy {
            hard_fail: true,
            responder: Some("http://ocsp.example/".into()),
        };
        OcspTarget::new(leaf, ca.certificate_der(), &anchor_key(ca), &policy).unwrap()
    }

    fn anchor_key(ca: &ManagedCa) -> Vec<u8> {
        let der = CertificateDer::from(ca.certificate_der());
        webpki::anchor_from_trusted_cert(&der)
            .unwrap()
            .subject_public_key_info
            .as_ref()
            .to_vec()
    }

    /// A responder certificate issued by `ca` for `key`, with `eku` (OCSP signing or not), valid from `from` for a
    /// day.
    fn responder_cert(ca: &ManagedCa, key: &rcgen::KeyPair, ocsp_signing: bool, from: OffsetDateTime) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "OCSP responder");
        params.extended_key_usages = vec![if ocsp_signing {
            rcgen::ExtendedKeyUsagePurpose::OcspSigning
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.not_before = from;
        params.not_after = from + time::Duration::days(1);
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(ca.certificate_der()), ca.signing_key()).unwrap();
        params.signed_by(key, &issuer).unwrap().der().to_vec()
    }

    /// A response for `t` signed by `key` (with `cert` sent along), valid for an hour from `now`, or without a
    /// nextUpdate.
    fn delegated_answer(
        t: &OcspTarget,
        key: &rcgen::KeyPair,
        cert: &[u8],
        status: OcspStatus,
        now: OffsetDateTime,
        next_update: Option<OffsetDateTime>,
    ) -> Vec<u8> {
        let (_, parsed) = X509Certificate::from_der(cert).unwrap();
        let signer = crate::ocsp::Signer {
            key,
            algorithm: crate::KeyType::P256.signature_algorithm_der(),
            public_key: &parsed.public_key().subject_public_key.data,
            certificates: &[cert],
        };
        crate::ocsp::signed_response(&[(t.cert_id.clone(), status)], now, next_update, &signer).unwrap()
    }

    #[test]
    fn a_delegated_responder_counts_only_with_the_issuers_ocsp_signing_certificate_valid_now() {
        let ca = ca();
        let leaf = leaf(&ca);
        let t = target(&ca, &leaf);
        let now = OffsetDateTime::now_utc();
        let key = rcgen::KeyPair::generate().unwrap();
        let hour = Some(now + time::Duration::hours(1));
        let authorized = responder_cert(&ca, &key, true, now - time::Duration::hours(1));
        let answer = t.check_response(
            &delegated_answer(&t, &key, &authorized, OcspStatus::Good, now, hour),
            now,
        );
        assert_eq!(answer.unwrap().status, OcspStatus::Good);

        let refused = |cert: &[u8]| {
            let response = delegated_answer(&t, &key, cert, OcspStatus::Good, now, hour);
            t.check_response(&response, now).unwrap_err().to_string()
        };
        let err = refused(&responder_cert(&ca, &key, false, now - time::Duration::hours(1)));
        assert!(
            err.contains("did not authorize for OCSP signing"),
            "without the EKU: {err}"
        );
        let err = refused(&responder_cert(&ca, &key, true, now - time::Duration::days(3)));
        assert!(err.contains("did not authorize for OCSP signing"), "expired: {err}");
        let stranger = self::ca();
        let err = refused(&responder_cert(&stranger, &key, true, now - time::Duration::hours(1)));
        assert!(
            err.contains("did not authorize for OCSP signing"),
            "another CA's: {err}"
        );
        // A certificate sent along that did not sign the answer does not help another key's signature.
        let other_key = rcgen::KeyPair::generate().unwrap();
        let response = delegated_answer(&t, &other_key, &authorized, OcspStatus::Good, now, hour);
        assert!(
            t.check_response(&response, now)
                .unwrap_err()
                .to_string()
                .contains("signature")
        );
    }

    #[test]
    fn answers_without_next_update_count_for_an_hour_and_revocations_for_good() {
        let ca = ca();
        let leaf = leaf(&ca);
        let t = target(&ca, &leaf);
        let now = OffsetDateTime::now_utc();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = responder_cert(&ca, &key, true, now - time::Duration::hours(12));
        let good = delegated_answer(&t, &key, &cert, OcspStatus::Good, now, None);
        assert_eq!(t.check_response(&good, now).unwrap().next_update, None);
        assert!(t.check_response(&good, now + time::Duration::minutes(50)).is_ok());
        let err = t.check_response(&good, now + time::Duration::minutes(70)).unwrap_err();
        assert!(err.to_string().contains("older than an hour"), "{err}");
        // A revocation stays a revocation when its answer is old; a hold does not.
        let revoked = |reason| OcspStatus::Revoked {
            at: now.replace_nanosecond(0).unwrap(),
            reason,
        };
        let later = now + time::Duration::hours(3);
        let past = Some(now + time::Duration::hours(1));
        let compromised = delegated_answer(
            &t,
            &key,
            &cert,
            revoked(Some(RevocationReason::KeyCompromise)),
            now,
            past,
        );
        assert!(matches!(
            t.check_response(&compromised, later).unwrap().status,
            OcspStatus::Revoked { .. }
        ));
        let hold = delegated_answer(
            &t,
            &key,
            &cert,
            revoked(Some(RevocationReason::CertificateHold)),
            now,
            past,
        );
        assert!(t.check_response(&hold, later).is_err());
    }

    #[test]
    fn the_issuers_answers_are_read_and_checked() {
        let ca = ca();
        let leaf = leaf(&ca);
        let t = target(&ca, &leaf);
        assert_eq!(t.url.as_deref(), Some("http://ocsp.example/"));
        let ids = crate::ocsp::parse_request(&t.request).unwrap();
        assert_eq!(ids, std::slice::from_ref(&t.cert_id));
        assert!(ca.issued(&ids[0]).unwrap());
        let now = OffsetDateTime::now_utc();
        let hour = time::Duration::hours(1);
        let answer = |status| {
            ca.ocsp_response(&[(t.cert_id.clone(), status)], now, now + hour)
                .unwrap()
        };

        let good = t.check_response(&answer(OcspStatus::Good), now).unwrap();
        assert_eq!(good.status, OcspStatus::Good);
        assert_eq!(
            good.next_update.map(|n| n.unix_timestamp()),
            Some((now + hour).unix_timestamp())
        );
        let revoked = OcspStatus::Revoked {
            at: now.replace_nanosecond(0).unwrap(),
            reason: Some(RevocationReason::KeyCompromise),
        };
        assert_eq!(t.check_response(&answer(revoked), now).unwrap().status, revoked);
        assert_eq!(
            t.check_response(&answer(OcspStatus::Unknown), now).unwrap().status,
            OcspStatus::Unknown
        );

        // Stale, early, and answers about other certificates or from other CAs.
        assert!(t.check_response(&answer(OcspStatus::Good), now + 2 * hour).is_err());
        assert!(t.check_response(&answer(OcspStatus::Good), now - hour).is_err());
        let other = target(&ca, &self::leaf(&ca));
        assert!(other.check_response(&answer(OcspStatus::Good), now).is_err());
        let stranger = self::ca();
        let forged = stranger
            .ocsp_response(&[(t.cert_id.clone(), OcspStatus::Good)], now, now + hour)
            .unwrap();
        let err = t.check_response(&forged, now).unwrap_err().to_string();
        assert!(err.contains("signature"), "{err}");
    }

    #[test]
    fn responder_errors_and_garbage_are_errors_never_panics() {
        let ca = ca();
        let leaf = leaf(&ca);
        let t = target(&ca, &leaf);
        let now = OffsetDateTime::now_utc();
        let try_later = crate::OcspError::TryLater.response();
        assert!(
            t.check_response(&try_later, now)
                .unwrap_err()
                .to_string()
                .contains("try later")
        );
        let good = ca
            .ocsp_response(
                &[(t.cert_id.clone(), OcspStatus::Good)],
                now,
                now + time::Duration::hours(1),
            )
            .unwrap();
        for end in 0..good.len() {
            assert!(t.check_response(&good[..end], now).is_err(), "truncated at {end}");
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut corrupt = good.clone();
                corrupt[i] ^= 1 << bit;
                // A flipped bit anywhere that matters breaks the signature or the structure.
                if let Ok(answer) = t.check_response(&corrupt, now) {
                    assert_eq!(answer.status, OcspStatus::Good, "byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn the_verifier_names_what_to_ask_for_anchors_with_a_policy() {
        use crate::verify::VerifierBuilder;
        let ca = ca();
        let mut request = crate::ca::GeneratedKeyRequest::default();
        request.subject.common_name = "client".into();
        let options = crate::ca::IssueOptions {
            ocsp_url: Some("http://ocsp.ca.example/ocsp".into()),
            ..Default::default()
        };
        let now = OffsetDateTime::now_utc();
        let issued = ca.issue_with_generated_key(&request, &options, now).unwrap().der;
        let chain = [CertificateDer::from(issued.clone())];
        assert_eq!(responder_url(&issued).as_deref(), Some("http://ocsp.ca.example/ocsp"));

        let build = |policy: Option<OcspPolicy>, revoked: &[&[u8]]| {
            let mut b = VerifierBuilder::new();
            let i = b.add_anchor(ca.certificate_der()).unwrap();
            if let Some(p) = policy {
                b.set_ocsp(i, p).unwrap();
            }
            b.revoke_serials(i, revoked.iter().copied()).unwrap();
            b.build()
        };
        let soft = OcspPolicy {
            hard_fail: false,
            responder: None,
        };
        assert!(
            build(None, &[]).ocsp_target(&chain, now).is_none(),
            "no policy, no check"
        );
        let t = build(Some(soft.clone()), &[])
            .ocsp_target(&chain, now)
            .unwrap()
            .unwrap();
        assert_eq!(t.url.as_deref(), Some("http://ocsp.ca.example/ocsp"));
        assert!(!t.hard_fail);
        assert_eq!(
            t,
            OcspTarget::new(&issued, ca.certificate_der(), &anchor_key(&ca), &soft).unwrap()
        );
        let pinned = OcspPolicy {
            hard_fail: true,
            responder: Some("http://elsewhere/".into()),
        };
        let t = build(Some(pinned), &[]).ocsp_target(&chain, now).unwrap().unwrap();
        assert_eq!(t.url.as_deref(), Some("http://elsewhere/"));
        let (_, cert) = X509Certificate::from_der(&issued).unwrap();
        let serial = der::strip_leading_zeros(cert.raw_serial()).to_vec();
        assert!(
            build(Some(soft.clone()), &[&serial]).ocsp_target(&chain, now).is_none(),
            "already revoked: nothing to ask"
        );
        let later = now + time::Duration::days(4000);
        assert!(
            build(Some(soft), &[]).ocsp_target(&chain, later).is_none(),
            "expired: nothing to ask"
        );
    }

    #[test]
    fn times_are_read() {
        let t = generalized_time(b"20270115080000Z").unwrap();
        assert_eq!(t.unix_timestamp(), 1_800_000_000);
        assert_eq!(generalized_time(b"20270115080000.123Z").unwrap(), t);
        for bad in [
            &b"2027011508000Z"[..],
            b"20271315080000Z",
            b"20270115080000",
            b"2027011508000aZ",
            b"",
        ] {
            assert!(generalized_time(bad).is_err());
        }
    }
}
