//! Verifying a presented client chain against a set of trust anchors, the Cloudflare way.
//!
//! A [`Verifier`] is built once per trust configuration (any mix of managed and BYO CAs, their CRLs
//! and the store's revoked serials) and is `Send + Sync`; [`Verifier::verify`] costs one
//! rustls-webpki path build plus a hash-set lookup, so it can run per connection.
//!
//! Semantics (Cloudflare's): `verified` is true for a valid chain (client-auth EKU, validity at the
//! given time, signatures up to an anchor) even when the certificate is revoked; `revoked` is true
//! only for a verified certificate whose serial is revoked by a CRL of the anchor or by the anchor's
//! revoked-serial set, or that an operator revoked at the edge by issuer and serial number (see
//! [`VerifierBuilder::deny`]; a certificate on the path above the leaf, or the anchor, revokes what is under it). Revocation is checked for the certificate the anchor issued directly (the
//! leaf, or the top intermediate), with the CRL of the anchor that issued it: every certificate of an uploaded
//! bundle is an anchor, so a bundle's intermediate revokes its leaves with its own CRL, and an anchor that the CRL
//! of its own issuer (another anchor) lists revokes everything under it. CRL signatures are
//! checked once, when added, and CRL `nextUpdate` is not enforced unless asked for
//! ([`VerifierBuilder::require_fresh_crl`]: then for the anchor a path ends at, every copy of it counting, and for
//! the anchors above it, such as the root above a bundle's intermediate). The anchor a path ends at must be within its
//! validity period, allow client authentication by its extended key usage and have no more CAs below it than its
//! path length constraint allows (webpki checks these on the rest of the path only). A path that ends at an
//! intermediate of an uploaded bundle whose issuer is an anchor too must also reach a root through the bundle, so
//! that the root's name constraints and terms apply, as OpenSSL builds it; an intermediate uploaded on its own is
//! trusted on its own, and so are CAs that certified each other with no root among the anchors. A presented
//! certificate that is
//! byte-for-byte one of the anchors (a self-signed certificate uploaded as its own CA) is accepted
//! within its validity period, as OpenSSL does. Failure reasons use OpenSSL's
//! wording as Cloudflare shows it (`FAILED:certificate has expired`, …).

use std::collections::HashSet;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::byoca;
use crate::der;
use crate::error::{PkiError, Result};
use crate::facts::{self, ClientAuthFacts, IssuerInfo};
use crate::keys;
use crate::ocsp_check::{OcspPolicy, OcspTarget, OcspUnusable};
use crate::pem;

/// The log status (Cloudflare's `ClientMTLSAuthStatus`, plus `revoked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthStatus {
    Ok,
    Absent,
    Untrusted,
    NotYetValid,
    Expired,
    /// Portcullis' addition: verified but revoked.
    Revoked,
}

impl AuthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStatus::Ok => "ok",
            AuthStatus::Absent => "absent",
            AuthStatus::Untrusted => "untrusted",
            AuthStatus::NotYetValid => "notyetvalid",
            AuthStatus::Expired => "expired",
            AuthStatus::Revoked => "revoked",
        }
    }
}

/// The outcome of verifying one presented chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub presented: bool,
    pub verified: bool,
    pub revoked: bool,
    /// `SUCCESS`, `NONE` or `FAILED:<reason>`.
    pub reason: String,
    pub status: AuthStatus,
}

impl Verdict {
    pub fn absent() -> Verdict {
        Verdict {
            presented: false,
            verified: false,
            revoked: false,
            reason: "NONE".into(),
            status: AuthStatus::Absent,
        }
    }

    fn failed(reason: &str, status: AuthStatus) -> Verdict {
        Verdict {
            presented: true,
            verified: false,
            revoked: false,
            reason: format!("FAILED:{reason}"),
            status,
        }
    }

    /// Verified and not revoked: what "let it in" means.
    pub fn is_trusted(&self) -> bool {
        self.verified && !self.revoked
    }
}

struct Anchor {
    der: Vec<u8>,
    revoked: HashSet<Vec<u8>>,
    ocsp: Option<OcspPolicy>,
    /// Whether a CRL of this anchor was added, and the latest `nextUpdate` of those added (`Some(None)`: one has
    /// none, so it never goes stale). The newest CRL is the one that says what is revoked now.
    crl: Option<Option<i64>>,
    /// Seconds past its CRL's `nextUpdate` after which the anchor vouches for nobody (see
    /// [`VerifierBuilder::require_fresh_crl`]).
    crl_grace: Option<i64>,
}

/// Until when a path that ends at an anchor may be trusted for want of a fresh CRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrlFreshness {
    /// No requirement, or a CRL with no `nextUpdate`.
    Always,
    /// Until this Unix time: the CRL's `nextUpdate` and the grace.
    Until(i64),
    /// Never: a fresh CRL is required and none was added.
    NoCrl,
}

impl CrlFreshness {
    /// The one of the two that stops trusting first.
    fn stricter(self, other: CrlFreshness) -> CrlFreshness {
        match (self, other) {
            (CrlFreshness::NoCrl, _) | (_, CrlFreshness::NoCrl) => CrlFreshness::NoCrl,
            (CrlFreshness::Until(a), CrlFreshness::Until(b)) => CrlFreshness::Until(a.min(b)),
            (CrlFreshness::Until(a), CrlFreshness::Always) | (CrlFreshness::Always, CrlFreshness::Until(a)) => {
                CrlFreshness::Until(a)
            }
            (CrlFreshness::Always, CrlFreshness::Always) => CrlFreshness::Always,
        }
    }
}

/// Collects trust anchors, CRLs and revoked serials, then builds a [`Verifier`].
#[derive(Default)]
pub struct VerifierBuilder {
    anchors: Vec<Anchor>,
    denied: HashSet<(Vec<u8>, Vec<u8>)>,
}

impl VerifierBuilder {
    pub fn new() -> Self {
        VerifierBuilder::default()
    }

    /// Adds one CA certificate (DER) as a trust anchor and returns its index.
    pub fn add_anchor(&mut self, der: &[u8]) -> Result<usize> {
        let (rest, _) =
            X509Certificate::from_der(der).map_err(|e| PkiError::Certificate(format!("trust anchor: {e}")))?;
        if !rest.is_empty() {
            return Err(PkiError::Certificate(
                "trust anchor: trailing data after the certificate".into(),
            ));
        }
        webpki::anchor_from_trusted_cert(&CertificateDer::from(der))
            .map_err(|e| PkiError::Certificate(format!("trust anchor: {e}")))?;
        self.anchors.push(Anchor {
            der: der.to_vec(),
            revoked: HashSet::new(),
            ocsp: None,
            crl: None,
            crl_grace: None,
        });
        Ok(self.anchors.len() - 1)
    }

    /// Adds every certificate in `data` (PEM bundle or one DER certificate); returns how many.
    pub fn add_anchors_pem_or_der(&mut self, data: &[u8]) -> Result<usize> {
        let certs = pem::certificates_from_pem_or_der(data)?;
        for der in &certs {
            self.add_anchor(der)?;
        }
        Ok(certs.len())
    }

    /// Checks the certificates anchor `index` issued with OCSP under `policy` (see [`Verifier::ocsp_target`]).
    pub fn set_ocsp(&mut self, index: usize, policy: OcspPolicy) -> Result<()> {
        let anchor = self
            .anchors
            .get_mut(index)
            .ok_or_else(|| PkiError::InvalidParameter(format!("no trust anchor {index}")))?;
        anchor.ocsp = Some(policy);
        Ok(())
    }

    /// Marks serials (big-endian magnitude, e.g. from the store) as revoked for anchor `index`.
    pub fn revoke_serials<I, S>(&mut self, index: usize, serials: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let anchor = self
            .anchors
            .get_mut(index)
            .ok_or_else(|| PkiError::InvalidParameter(format!("no trust anchor with index {index}")))?;
        anchor.revoked.extend(
            serials
                .into_iter()
                .map(|s| der::strip_leading_zeros(s.as_ref()).to_vec()),
        );
        Ok(())
    }

    /// Refuses as revoked the certificate with issuer `issuer` (the raw DER of its issuer name without the outer
    /// SEQUENCE header, as [`crate::byoca::IssuedCertificate::issuer`] holds it) and serial number `serial` (big-endian
    /// magnitude), wherever it stands on a path: an operator's revocation of one certificate an uploaded CA issued,
    /// effective before (or without) that CA's CRL. Issuer and serial are inside the signed part of a certificate,
    /// so whoever holds it cannot re-encode it past this (an ECDSA signature can be re-encoded, and with it the
    /// certificate's fingerprint).
    pub fn deny(&mut self, issuer: &[u8], serial: &[u8]) {
        self.denied
            .insert((issuer.to_vec(), der::strip_leading_zeros(serial).to_vec()));
    }

    /// Refuses as revoked the certificate with serial number `serial` that anchor `index` issued (see
    /// [`VerifierBuilder::deny`]).
    pub fn deny_issued_by(&mut self, index: usize, serial: &[u8]) -> Result<()> {
        let anchor = self
            .anchors
            .get(index)
            .ok_or_else(|| PkiError::InvalidParameter(format!("no trust anchor {index}")))?;
        // Read as add_anchor read it (webpki's end-entity parser refuses CA certificates that anchors may be, such
        // as ones with critical policy constraints).
        let (_, cert) =
            X509Certificate::from_der(&anchor.der).map_err(|e| PkiError::Certificate(format!("trust anchor: {e}")))?;
        let subject = der::content_of(cert.subject().as_raw()).to_vec();
        self.deny(&subject, serial);
        Ok(())
    }

    /// Has anchor `index` vouch for nobody once its CRL is more than `grace` seconds past its `nextUpdate`, or when it
    /// has no CRL at all: an operator's choice of failing closed on stale revocation data (OpenSSL's "CRL has
    /// expired"), where the default keeps a stale CRL in use. A CRL without `nextUpdate` never goes stale.
    pub fn require_fresh_crl(&mut self, index: usize, grace: i64) -> Result<()> {
        let anchor = self
            .anchors
            .get_mut(index)
            .ok_or_else(|| PkiError::InvalidParameter(format!("no trust anchor {index}")))?;
        anchor.crl_grace = Some(grace.max(0));
        Ok(())
    }

    /// Adds a CRL (PEM or DER). Its signature must verify against an anchor with the CRL's issuer
    /// name; its serials are then revoked for that anchor.
    pub fn add_crl(&mut self, crl: &[u8]) -> Result<usize> {
        let crl_der = pem::single_from_pem_or_der(crl, "X509 CRL").map_err(|e| PkiError::Crl(e.to_string()))?;
        let mut last_err = None;
        for anchor in &mut self.anchors {
            match byoca::check_crl_der(&anchor.der, &crl_der) {
                Ok(parsed) => {
                    anchor.revoked.extend(parsed.revoked_serials);
                    let next = parsed.next_update.map(|t| t.unix_timestamp());
                    anchor.crl = newest_crl(anchor.crl, Some(next));
                    return Ok(parsed.entries);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(match last_err {
            Some(PkiError::CrlIssuer(_)) | None => PkiError::CrlIssuer(
                "it was not issued by any of the trust anchors (issuer name or signature does not match)".into(),
            ),
            Some(other) => other,
        })
    }

    /// Adds every CRL in `crls` (PEM with one or more `X509 CRL` blocks, or one DER CRL), as
    /// [`VerifierBuilder::add_crl`] does each; returns how many entries they list in all.
    pub fn add_crls(&mut self, crls: &[u8]) -> Result<usize> {
        let mut entries = 0;
        for der in pem::crls_from_pem_or_der(crls).map_err(|e| PkiError::Crl(e.to_string()))? {
            entries += self.add_crl(&der)?;
        }
        Ok(entries)
    }

    pub fn build(mut self) -> Verifier {
        let mut anchors = Vec::with_capacity(self.anchors.len());
        let mut infos = Vec::with_capacity(self.anchors.len());
        let mut revoked = Vec::with_capacity(self.anchors.len());
        let mut ders = Vec::with_capacity(self.anchors.len());
        let mut ocsp = Vec::with_capacity(self.anchors.len());
        let mut crl_fresh = Vec::with_capacity(self.anchors.len());
        for a in self.anchors.drain(..) {
            // Both were checked in add_anchor; skip rather than panic if that ever changes.
            let cert = CertificateDer::from(a.der.as_slice());
            let Ok(ta) = webpki::anchor_from_trusted_cert(&cert) else {
                continue;
            };
            let Ok(info) = IssuerInfo::from_der(&a.der) else {
                continue;
            };
            anchors.push(ta.to_owned());
            infos.push(info);
            revoked.push(a.revoked);
            ders.push(a.der);
            ocsp.push(a.ocsp);
            crl_fresh.push((a.crl_grace, a.crl));
        }
        let certs: Vec<Option<X509Certificate<'_>>> = ders
            .iter()
            .map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
            .collect();
        let parents = anchor_parents(&certs);
        // An anchor revoked at the edge revokes what is under it, as one its issuer's CRL lists.
        let denied_anchors: Vec<bool> = certs
            .iter()
            .map(|c| c.as_ref().is_some_and(|c| self.denied.contains(&issuer_key(c))))
            .collect();
        let anchor_revoked = revoked_anchors(&certs, &parents, &revoked, denied_anchors);
        let in_force: Vec<AnchorTerms> = ders.iter().map(|der| AnchorTerms::of(der)).collect();
        // A CA uploaded twice (or renewed with the same key) is one CA: add_crl gave its CRLs to the first copy,
        // and the strictest grace any copy asks for holds for all of them.
        let own_crl: Vec<CrlFreshness> = (0..anchors.len())
            .map(|i| {
                let same = (0..anchors.len()).filter(|&j| same_anchor(&anchors[i], &anchors[j]));
                let grace = same.clone().filter_map(|j| crl_fresh[j].0).min();
                let crl = same.fold(None, |newest, j| newest_crl(newest, crl_fresh[j].1));
                match (grace, crl) {
                    (None, _) | (Some(_), Some(None)) => CrlFreshness::Always,
                    (Some(grace), Some(Some(next_update))) => CrlFreshness::Until(next_update.saturating_add(grace)),
                    (Some(_), None) => CrlFreshness::NoCrl,
                }
            })
            .collect();
        // A top is self-issued or has no issuer among the anchors: a path may end there. Any other anchor is an
        // intermediate of an uploaded bundle whose issuer is trusted too, unless no top is above it (CAs that
        // cross-signed each other, with no root among the anchors): then it is a top itself.
        let mut top: Vec<bool> = parents.iter().map(Vec::is_empty).collect();
        let mut reaches_top = top.clone();
        for _ in 0..parents.len() {
            let before = reaches_top.clone();
            for (i, up) in parents.iter().enumerate() {
                reaches_top[i] = reaches_top[i] || up.iter().any(|&j| before[j]);
            }
            if before == reaches_top {
                break;
            }
        }
        for (t, reaches) in top.iter_mut().zip(&reaches_top) {
            *t = *t || !*reaches;
        }
        let below_a_root: Vec<bool> = (0..anchors.len())
            .map(|i| !top[i] && !(0..anchors.len()).any(|j| top[j] && same_anchor(&anchors[i], &anchors[j])))
            .collect();
        // A path that ends at a bundle's intermediate also rests on the CRLs of the anchors above it, up to the
        // roots (the root above it, and the bundle's CAs in between), whichever copies of them the client sends: it
        // is held to the stalest of its own and theirs. A top's paths end there, so nothing above a top counts (a
        // root cross-signed by another CA answers for itself, as do CAs that certified each other).
        let climbed: Vec<CrlFreshness> = (0..anchors.len())
            .map(|i| {
                let mut seen = vec![false; anchors.len()];
                let mut todo = vec![i];
                let mut fresh = CrlFreshness::Always;
                while let Some(j) = todo.pop() {
                    if std::mem::replace(&mut seen[j], true) {
                        continue;
                    }
                    fresh = fresh.stricter(own_crl[j]);
                    if below_a_root[j] {
                        todo.extend(&parents[j]);
                    }
                }
                fresh
            })
            .collect();
        // Every copy of a CA answers the same, whichever of them a path is matched to.
        let crl_fresh: Vec<CrlFreshness> = (0..anchors.len())
            .map(|i| {
                (0..anchors.len())
                    .filter(|&j| same_anchor(&anchors[i], &anchors[j]))
                    .fold(CrlFreshness::Always, |fresh, j| fresh.stricter(climbed[j]))
            })
            .collect();
        let mut deadlines: Vec<i64> = crl_fresh
            .iter()
            .filter_map(|f| match f {
                CrlFreshness::Until(t) => Some(t.saturating_add(1)),
                _ => None,
            })
            .chain(
                in_force
                    .iter()
                    .flat_map(|t| [t.not_before, t.not_after.saturating_add(1)]),
            )
            .collect();
        deadlines.sort_unstable();
        deadlines.dedup();
        let roots = anchors
            .iter()
            .zip(&top)
            .filter(|(_, t)| **t)
            .map(|(a, _)| a.clone())
            .collect();
        let bundle_intermediates = ders
            .iter()
            .zip(&top)
            .filter(|(_, t)| !**t)
            .map(|(d, _)| CertificateDer::from(d.clone()))
            .collect();
        drop(certs);
        Verifier {
            crl_fresh,
            deadlines,
            denied: self.denied,
            anchors,
            infos,
            revoked,
            ders,
            anchor_revoked,
            ocsp,
            in_force,
            below_a_root,
            roots,
            bundle_intermediates,
        }
    }
}

/// parent[i]: the anchors that issued anchor i: the subject is its issuer and the key verifies its signature
/// (a name alone could be a re-keyed CA's, whose serial numbers are another sequence). A self-issued anchor has
/// none: a CA renewed with the same key would otherwise be the parent of its own predecessor.
fn anchor_parents(certs: &[Option<X509Certificate<'_>>]) -> Vec<Vec<usize>> {
    certs
        .iter()
        .enumerate()
        .map(|(i, child)| {
            let Some(child) = child else { return Vec::new() };
            if child.subject().as_raw() == child.issuer().as_raw() {
                return Vec::new();
            }
            certs
                .iter()
                .enumerate()
                .filter(|(j, parent)| *j != i && parent.as_ref().is_some_and(|p| keys::issued_by(child, p)))
                .map(|(j, _)| j)
                .collect()
        })
        .collect()
}

/// Which anchors are themselves revoked: an intermediate of an uploaded bundle is an anchor of its own (so that
/// its CRL revokes its leaves), and the CRL of the anchor that issued it may list it, directly or further up.
fn revoked_anchors(
    certs: &[Option<X509Certificate<'_>>],
    parents: &[Vec<usize>],
    revoked: &[HashSet<Vec<u8>>],
    mut out: Vec<bool>,
) -> Vec<bool> {
    // Each pass reaches one more level of a bundle's hierarchy; a bundle holds a few certificates.
    for _ in 0..certs.len() {
        let mut changed = false;
        for (i, cert) in certs.iter().enumerate() {
            let Some(cert) = cert else { continue };
            if out[i] {
                continue;
            }
            let serial = der::strip_leading_zeros(cert.raw_serial());
            if parents[i]
                .iter()
                .any(|&j| out[j] || revoked.get(j).is_some_and(|set| set.contains(serial)))
            {
                out[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    out
}

/// Prepared trust anchors and revocation data. Cheap to call per connection; `Send + Sync`.
pub struct Verifier {
    anchors: Vec<TrustAnchor<'static>>,
    infos: Vec<IssuerInfo>,
    revoked: Vec<HashSet<Vec<u8>>>,
    ders: Vec<Vec<u8>>,
    /// Per anchor: revoked by the CRL of another anchor that issued it (see `revoked_anchors`).
    anchor_revoked: Vec<bool>,
    /// Per anchor: whether (and how) the certificates under it are checked with OCSP.
    ocsp: Vec<Option<OcspPolicy>>,
    /// Per anchor: what webpki does not check of an anchor (its validity period, purpose and path length).
    in_force: Vec<AnchorTerms>,
    /// Per anchor: an intermediate of an uploaded bundle whose issuer is an anchor too, and not also trusted on its
    /// own (no self-issued or issuer-less anchor has its name and key). A path that ends there must also reach a
    /// root, so that the root's name constraints, path length, validity and purpose apply to it.
    below_a_root: Vec<bool>,
    /// The anchors a path may end at for that second check: the self-issued ones and those with no issuer among
    /// the anchors.
    roots: Vec<TrustAnchor<'static>>,
    /// The other anchors, offered as intermediates for that check.
    bundle_intermediates: Vec<CertificateDer<'static>>,
    /// `(issuer, serial)` of certificates refused as revoked (see [`VerifierBuilder::deny`]).
    denied: HashSet<(Vec<u8>, Vec<u8>)>,
    /// Per anchor: until when its CRL is fresh enough (see [`VerifierBuilder::require_fresh_crl`]).
    crl_fresh: Vec<CrlFreshness>,
    /// The first second at which some anchor's terms change (it expires, or its CRL goes stale past its grace),
    /// sorted: see [`Verifier::recheck_at`].
    deadlines: Vec<i64>,
}

/// The newer of two CRL records (`None`: no CRL; `Some(None)`: a CRL without `nextUpdate`, which is never stale).
fn newest_crl(a: Option<Option<i64>>, b: Option<Option<i64>>) -> Option<Option<i64>> {
    match (a, b) {
        (Some(None), _) | (_, Some(None)) => Some(None),
        (Some(Some(x)), Some(Some(y))) => Some(Some(x.max(y))),
        (a, b) => a.or(b),
    }
}

/// A certificate's issuer name (raw, without the outer header) and serial number (magnitude), as webpki reads them
/// from the certificates of a path: the key of [`VerifierBuilder::deny`]. Read with x509-parser, which (unlike
/// webpki's end-entity parser) accepts every CA certificate an anchor may be.
pub(crate) fn issuer_key(cert: &X509Certificate<'_>) -> (Vec<u8>, Vec<u8>) {
    (
        der::content_of(cert.issuer().as_raw()).to_vec(),
        der::strip_leading_zeros(cert.raw_serial()).to_vec(),
    )
}

/// Whether two anchors are the same CA: the same name and key (a CA uploaded twice, or renewed with the same key).
fn same_anchor(a: &TrustAnchor<'_>, b: &TrustAnchor<'_>) -> bool {
    a.subject.as_ref() == b.subject.as_ref() && a.subject_public_key_info.as_ref() == b.subject_public_key_info.as_ref()
}

/// What an anchor must also satisfy for a path that ends at it, which webpki checks on the rest of the path but not
/// on the anchor: that it is within its validity period (an intermediate of an uploaded bundle is an anchor, and
/// expires like any other certificate; OpenSSL refuses a path through an expired CA), that its extended key
/// usage, if it has one, allows client authentication, and that no more CA certificates stand below it than its
/// path length constraint allows.
#[derive(Debug, Clone, Copy)]
struct AnchorTerms {
    not_before: i64,
    not_after: i64,
    client_auth: bool,
    path_len: Option<u32>,
}

impl AnchorTerms {
    fn of(der: &[u8]) -> AnchorTerms {
        match X509Certificate::from_der(der) {
            Ok((_, cert)) => AnchorTerms {
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
                client_auth: match cert.extended_key_usage() {
                    Ok(Some(eku)) => eku.value.client_auth || eku.value.any,
                    Ok(None) => true,
                    Err(_) => false,
                },
                path_len: match cert.basic_constraints() {
                    Ok(Some(bc)) => bc.value.path_len_constraint,
                    Ok(None) => None,
                    Err(_) => Some(0),
                },
            },
            // Parsed when it was added; a certificate that cannot be read vouches for nothing.
            Err(_) => AnchorTerms {
                not_before: i64::MAX,
                not_after: i64::MIN,
                client_auth: false,
                path_len: Some(0),
            },
        }
    }

    /// Why a path ending at this anchor, with `cas_below` CA certificates between it and the leaf, is refused at
    /// `now`, if it is.
    fn refusal(&self, now: i64, cas_below: usize) -> Option<(&'static str, AuthStatus)> {
        if now > self.not_after {
            Some(("certificate has expired", AuthStatus::Expired))
        } else if now < self.not_before {
            Some(("certificate is not yet valid", AuthStatus::NotYetValid))
        } else if !self.client_auth {
            Some(("unsupported certificate purpose", AuthStatus::Untrusted))
        } else if self.path_len.is_some_and(|n| cas_below > n as usize) {
            Some(("path length constraint exceeded", AuthStatus::Untrusted))
        } else {
            None
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

fn unix_time(now: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now.unix_timestamp()).unwrap_or(0)))
}

fn is_self_issued(der: &[u8]) -> bool {
    X509Certificate::from_der(der)
        .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
        .unwrap_or(false)
}

impl Verifier {
    /// A verifier with no anchors: every presented certificate is untrusted.
    pub fn empty() -> Verifier {
        VerifierBuilder::new().build()
    }

    pub fn anchor_count(&self) -> usize {
        self.anchors.len()
    }

    /// Whether any anchor's certificates are checked with OCSP.
    pub fn has_ocsp(&self) -> bool {
        self.ocsp.iter().any(Option::is_some)
    }

    /// What to ask an OCSP responder about `chain`'s leaf: `Some` only if the chain verifies at `now`, is not
    /// already revoked, and the anchor it leads to has an OCSP policy (the strictest of the anchors with its
    /// name and key, should a CA be uploaded twice). The leaf's issuer (the client's first intermediate on the
    /// verified path, or the anchor) is the one the responder answers for. A certificate that is itself an anchor
    /// is not checked. `Err` when the certificates cannot be read for a request (then no answer can be had).
    pub fn ocsp_target(
        &self,
        chain: &[CertificateDer<'_>],
        now: OffsetDateTime,
    ) -> Option<std::result::Result<OcspTarget, OcspUnusable>> {
        if !self.has_ocsp() {
            return None;
        }
        let leaf = chain.first()?;
        let ee = webpki::EndEntityCert::try_from(leaf).ok()?;
        let path = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                &chain[1..],
                unix_time(now),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .ok()?;
        let anchor_key = path.anchor().subject_public_key_info.as_ref();
        let policy = self.anchor_policy(anchor_key)?;
        let index = self.anchor_index(path.anchor())?;
        if self.path_revoked(index, &ee, &path) || self.denied_on(&ee, &path) {
            return None;
        }
        let issuer = match path.intermediate_certificates().next() {
            Some(cert) => cert.der().as_ref().to_vec(),
            None => self.ders.get(index)?.clone(),
        };
        Some(
            OcspTarget::new(leaf.as_ref(), &issuer, anchor_key, policy).map_err(|e| OcspUnusable {
                hard_fail: policy.hard_fail,
                anchor_key: anchor_key.to_vec(),
                reason: e.to_string(),
            }),
        )
    }

    /// The OCSP policy of the anchors with `key` (a trust anchor's subject public key info, as
    /// [`OcspTarget::anchor_key`] holds it): the strictest one, `None` if none checks OCSP. Connections look their
    /// answer's policy up again with each new snapshot, so a changed policy applies to them too.
    pub fn anchor_policy(&self, key: &[u8]) -> Option<&OcspPolicy> {
        self.anchors
            .iter()
            .zip(&self.ocsp)
            .filter(|(a, _)| a.subject_public_key_info.as_ref() == key)
            .filter_map(|(_, policy)| policy.as_ref())
            .max_by_key(|p| p.hard_fail)
    }

    /// Why `path` is refused at `now` for what webpki does not check of the anchor it ends at (see [`AnchorTerms`]);
    /// none if any anchor with its name and key is in force (a CA uploaded twice, renewed with the same key, counts
    /// once).
    fn anchor_refusal(
        &self,
        path: &webpki::VerifiedPath<'_>,
        now: OffsetDateTime,
    ) -> Option<(&'static str, AuthStatus)> {
        let anchor = path.anchor();
        // RFC 5280 4.2.1.9: self-issued intermediates (a CA's key rollover) do not count.
        let cas_below = path
            .intermediate_certificates()
            .filter(|c| c.subject() != c.issuer())
            .count();
        let now = now.unix_timestamp();
        let mut refusal = None;
        for (a, terms) in self.anchors.iter().zip(&self.in_force) {
            if same_anchor(a, anchor) {
                match terms.refusal(now, cas_below) {
                    None => return None,
                    Some(why) => refusal = refusal.or(Some(why)),
                }
            }
        }
        refusal
    }

    fn anchor_index(&self, anchor: &TrustAnchor<'_>) -> Option<usize> {
        self.anchors.iter().position(|a| same_anchor(a, anchor))
    }

    /// Whether the certificate anchor `index` issued on `path` is revoked (see the module's doc).
    fn path_revoked(&self, index: usize, ee: &webpki::EndEntityCert<'_>, path: &webpki::VerifiedPath<'_>) -> bool {
        // The path runs from the leaf's issuer up to the anchor, so the last one is the anchor's child.
        let issued_by_anchor = path
            .intermediate_certificates()
            .next_back()
            .map(|c| c.serial())
            .unwrap_or(ee.serial());
        self.anchor_revoked.get(index).copied().unwrap_or(false)
            || self
                .revoked
                .get(index)
                .is_some_and(|set| set.contains(der::strip_leading_zeros(issued_by_anchor)))
    }

    /// Why a path ending at anchor `index` is refused at `now` for want of a fresh CRL, if it is.
    fn stale_crl(&self, index: usize, now: OffsetDateTime) -> Option<(&'static str, AuthStatus)> {
        match self.crl_fresh.get(index)? {
            CrlFreshness::Always => None,
            CrlFreshness::Until(deadline) if now.unix_timestamp() <= *deadline => None,
            CrlFreshness::Until(_) => Some(("CRL has expired", AuthStatus::Untrusted)),
            CrlFreshness::NoCrl => Some(("unable to get certificate CRL", AuthStatus::Untrusted)),
        }
    }

    /// Whether the leaf or a certificate above it on `path` was revoked at the edge (the anchor is covered by
    /// `anchor_revoked`).
    fn denied_on(&self, ee: &webpki::EndEntityCert<'_>, path: &webpki::VerifiedPath<'_>) -> bool {
        if self.denied.is_empty() {
            return false;
        }
        let is_denied = |issuer: &[u8], serial: &[u8]| {
            self.denied
                .contains(&(issuer.to_vec(), der::strip_leading_zeros(serial).to_vec()))
        };
        is_denied(ee.issuer(), ee.serial())
            || path
                .intermediate_certificates()
                .any(|c| is_denied(c.issuer(), c.serial()))
    }

    /// Verifies `chain` (leaf first, then the client's intermediates) at `now`.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now: OffsetDateTime) -> Verdict {
        let Some(leaf) = chain.first() else {
            return Verdict::absent();
        };
        let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
            return Verdict::failed("unable to decode certificate", AuthStatus::Untrusted);
        };
        let intermediates = &chain[1..];
        let result = ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            unix_time(now),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        );
        match result {
            Ok(path) => {
                if let Some((reason, status)) = self.anchor_refusal(&path, now) {
                    return Verdict::failed(reason, status);
                }
                let index = self.anchor_index(path.anchor());
                if let Some((reason, status)) = index.and_then(|i| self.stale_crl(i, now)) {
                    return Verdict::failed(reason, status);
                }
                if index.is_some_and(|i| self.below_a_root.get(i).copied().unwrap_or(false))
                    && let Some((reason, status)) = self.root_refusal(&ee, chain, now)
                {
                    return Verdict::failed(reason, status);
                }
                let revoked = index.is_some_and(|i| self.path_revoked(i, &ee, &path)) || self.denied_on(&ee, &path);
                Verdict {
                    presented: true,
                    verified: true,
                    revoked,
                    reason: "SUCCESS".into(),
                    status: if revoked { AuthStatus::Revoked } else { AuthStatus::Ok },
                }
            }
            // Only a self-issued anchor: an intermediate of a bundle presented as the client's own certificate
            // is refused (its issuer's CRL may have revoked it, and it is a CA, not a client).
            Err(webpki::Error::CaUsedAsEndEntity)
                if is_self_issued(leaf.as_ref()) && self.ders.iter().any(|d| d.as_slice() == leaf.as_ref()) =>
            {
                self.pinned_self_signed(leaf.as_ref(), now)
            }
            Err(err) => {
                let (reason, status) = failure(&err, chain);
                Verdict::failed(reason, status)
            }
        }
    }

    /// Why `chain`, verified up to an intermediate of an uploaded bundle, is refused when its path is carried on up
    /// to a root through the bundle's certificates, if it is: the root's name constraints (webpki applies an
    /// anchor's), the path length constraints and the root's own terms. OpenSSL, and so NGINX, builds the path to
    /// the root in the same way.
    fn root_refusal(
        &self,
        ee: &webpki::EndEntityCert<'_>,
        chain: &[CertificateDer<'_>],
        now: OffsetDateTime,
    ) -> Option<(&'static str, AuthStatus)> {
        let intermediates: Vec<CertificateDer<'_>> = chain[1..]
            .iter()
            .map(|c| CertificateDer::from(c.as_ref()))
            .chain(
                self.bundle_intermediates
                    .iter()
                    .map(|c| CertificateDer::from(c.as_ref())),
            )
            .collect();
        match ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.roots,
            &intermediates,
            unix_time(now),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        ) {
            // The CRLs of the root and of the CAs on the way up count already: see `crl_fresh` in `build`.
            Ok(path) => self.anchor_refusal(&path, now),
            Err(err) => Some(failure(&err, chain)),
        }
    }

    /// A presented certificate that is itself one of the trust anchors (typically a self-signed
    /// `openssl req -x509` certificate, which is CA:TRUE, uploaded as its own CA). OpenSSL, and so
    /// Cloudflare, accepts it when it is in its validity period and its EKU allows client auth;
    /// webpki refuses CA certificates as end entities, so this case is checked here.
    fn pinned_self_signed(&self, leaf: &[u8], now: OffsetDateTime) -> Verdict {
        let Ok((_, cert)) = X509Certificate::from_der(leaf) else {
            return Verdict::failed("unable to decode certificate", AuthStatus::Untrusted);
        };
        let t = now.unix_timestamp();
        if t < cert.validity().not_before.timestamp() {
            return Verdict::failed("certificate is not yet valid", AuthStatus::NotYetValid);
        }
        if t > cert.validity().not_after.timestamp() {
            return Verdict::failed("certificate has expired", AuthStatus::Expired);
        }
        match cert.extended_key_usage() {
            Ok(None) => {}
            Ok(Some(eku)) if eku.value.client_auth || eku.value.any => {}
            _ => return Verdict::failed("unsupported certificate purpose", AuthStatus::Untrusted),
        }
        let index = self.ders.iter().position(|d| d.as_slice() == leaf);
        if let Some((reason, status)) = index.and_then(|i| self.stale_crl(i, now)) {
            return Verdict::failed(reason, status);
        }
        let serial = der::strip_leading_zeros(cert.raw_serial());
        let revoked = index
            .and_then(|i| self.revoked.get(i))
            .is_some_and(|set| set.contains(serial))
            || self.denied.contains(&issuer_key(&cert));
        Verdict {
            presented: true,
            verified: true,
            revoked,
            reason: "SUCCESS".into(),
            status: if revoked { AuthStatus::Revoked } else { AuthStatus::Ok },
        }
    }

    /// When a verdict on `chain` reached at `now` may first come out otherwise with this verifier: the first second
    /// after `now` at which a certificate of the chain or an anchor starts or ends its validity, or an anchor's CRL
    /// goes stale past its grace (see [`VerifierBuilder::require_fresh_crl`]). `None`: never. Callers that keep a verdict (a
    /// connection's facts) judge again then, so a client whose certificate expires is not trusted for as long as
    /// its connection lasts. Cheap: it reads validity periods, it does not build a path.
    pub fn recheck_at(&self, chain: &[CertificateDer<'_>], now: OffsetDateTime) -> Option<i64> {
        let now = now.unix_timestamp();
        let chain_terms = chain.iter().flat_map(|c| match X509Certificate::from_der(c.as_ref()) {
            Ok((_, cert)) => {
                let validity = cert.validity();
                vec![
                    validity.not_before.timestamp(),
                    validity.not_after.timestamp().saturating_add(1),
                ]
            }
            Err(_) => Vec::new(),
        });
        let anchors_next = self.deadlines.iter().copied().find(|&t| t > now);
        chain_terms.filter(|&t| t > now).chain(anchors_next).min()
    }

    /// All `cf.tls_client_auth.*` and `portcullis.tls_client_auth.*` values for `chain` at `now`.
    pub fn client_auth(&self, chain: &[CertificateDer<'_>], now: OffsetDateTime) -> ClientAuthFacts {
        let mut facts = facts::compute_facts(chain, &self.infos);
        facts.apply(&self.verify(chain, now));
        facts
    }

    /// The facts of a non-empty chain that [`Verifier::verify`] found trusted a moment ago (the
    /// TLS handshake under a policy that refuses untrusted, expired and revoked certificates):
    /// the same facts as [`Verifier::client_auth`], without checking the signatures a second
    /// time, which would cost as much as the handshake's own signature check.
    pub fn client_auth_accepted(&self, chain: &[CertificateDer<'_>]) -> ClientAuthFacts {
        let mut facts = facts::compute_facts(chain, &self.infos);
        let verdict = if chain.is_empty() {
            Verdict::absent()
        } else {
            Verdict {
                presented: true,
                verified: true,
                revoked: false,
                reason: "SUCCESS".into(),
                status: AuthStatus::Ok,
            }
        };
        facts.apply(&verdict);
        facts
    }
}

/// OpenSSL's wording for a webpki error, and the log status.
fn failure(err: &webpki::Error, chain: &[CertificateDer<'_>]) -> (&'static str, AuthStatus) {
    use webpki::Error as E;
    let leaf_self_issued = || chain.first().is_some_and(|c| is_self_issued(c.as_ref()));
    match err {
        // `openssl req -x509` makes CA:TRUE certificates, so webpki may object to the CA flag
        // before it finds no issuer; OpenSSL (and Cloudflare) call both "self signed".
        E::UnknownIssuer | E::CaUsedAsEndEntity if leaf_self_issued() => {
            ("self signed certificate", AuthStatus::Untrusted)
        }
        E::CertExpired { .. } => ("certificate has expired", AuthStatus::Expired),
        E::CertNotValidYet { .. } => ("certificate is not yet valid", AuthStatus::NotYetValid),
        E::UnknownIssuer | E::MaximumPathDepthExceeded | E::MaximumPathBuildCallsExceeded => {
            let reason = if chain.get(1..).unwrap_or(&[]).iter().any(|c| is_self_issued(c.as_ref())) {
                "self signed certificate in certificate chain"
            } else {
                "unable to get local issuer certificate"
            };
            (reason, AuthStatus::Untrusted)
        }
        E::InvalidSignatureForPublicKey
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::SignatureAlgorithmMismatch => ("certificate signature failure", AuthStatus::Untrusted),
        E::RequiredEkuNotFoundContext(_) | E::CaUsedAsEndEntity | E::EmptyEkuExtension => {
            ("unsupported certificate purpose", AuthStatus::Untrusted)
        }
        E::EndEntityUsedAsCa => ("invalid CA certificate", AuthStatus::Untrusted),
        E::PathLenConstraintViolated => ("path length constraint exceeded", AuthStatus::Untrusted),
        E::NameConstraintViolation => ("permitted subtree violation", AuthStatus::Untrusted),
        E::CertRevoked => ("certificate revoked", AuthStatus::Revoked),
        E::UnsupportedCriticalExtension => ("unhandled critical extension", AuthStatus::Untrusted),
        E::BadDer | E::BadDerTime | E::TrailingData(_) | E::InvalidCertValidity | E::MalformedExtensions => {
            ("unable to decode certificate", AuthStatus::Untrusted)
        }
        _ => ("certificate rejected", AuthStatus::Untrusted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Verifier>();
    }

    #[test]
    fn absent_and_garbage() {
        let v = Verifier::empty();
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(v.verify(&[], now), Verdict::absent());
        let verdict = v.verify(&[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])], now);
        assert_eq!(verdict.reason, "FAILED:unable to decode certificate");
        let facts = v.client_auth(&[], now);
        assert_eq!(facts, ClientAuthFacts::default());
        assert_eq!(facts.verify_result, "NONE");
    }
}
