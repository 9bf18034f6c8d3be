//! Everything about certificates in Portcullis, as a pure library.
//!
//! What it does:
//! - [`ca`]: the managed CA (create, rotate by creating another, seal the private key at rest)
//!   and issuance of client certificates from a CSR or from a freshly generated key;
//! - [`ca_request`]: a managed CA signed by the operator's own CA (its CSR, then the checks of what was signed);
//! - [`seal`]: AES-256-GCM sealing of CA private keys under a 32-byte master key;
//! - [`acme`]: TLS-ALPN-01 answer certificates and the CSRs of ACME orders;
//! - [`server`]: validation of uploaded server certificates and keys (`custom_certificates`) and sealing their keys;
//! - [`status`]: the client-certificate status machine with Cloudflare's status names;
//! - [`est`]: EST's (RFC 7030) certs-only PKCS#7 and the re-enrollment CSR check, and the device's side (its CSR,
//!   reading the answer, the chain above the new certificate);
//! - [`crl`]: CRL v2 encoding and signing, fast enough for 100,000 entries;
//! - [`byoca`]: validation of uploaded ("bring your own") CA bundles and their CRLs;
//! - [`verify`]: chain verification against a set of trust anchors with rustls-webpki,
//!   reported the way Cloudflare reports it (verified and revoked are separate);
//! - [`facts`] and [`dn`]: every `cf.tls_client_auth.*` value in Cloudflare's exact formats.
//!
//! What it does not do: no I/O, no async, no clock. Callers pass bytes and the current time in;
//! only randomness (serials, ids, nonces, keys) comes from aws-lc-rs. Storing CAs, certificate
//! records and revocation state is the caller's job (the store).

mod der;
mod error;
mod keys;

pub mod acme;
pub mod byoca;
pub mod ca;
pub mod ca_request;
pub mod crl;
pub mod dn;
pub mod est;
pub mod facts;
pub mod name_policy;
pub mod ocsp;
pub mod ocsp_check;
pub mod pem;
pub mod seal;
pub mod server;
pub mod status;
pub mod verify;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ca_request;

pub use byoca::{
    MtlsCertificateRecord, UploadedCa, UploadedCrl, certificate_issuer, certificate_not_after, certificate_validity,
    check_crl_for_ca, check_crls_for_bundle, crl_distribution_points, crl_next_update, parse_ca_bundle,
};
pub use ca::{
    CaParams, CertificateAuthorityRef, ClientCertificateRecord, GeneratedKeyRequest, IssueOptions, IssuedCertificate,
    IssuedWithKey, ManagedCa, SubjectAltNames, SubjectFields,
};
pub use ca_request::{CaRequest, CaRequestParams, InstalledCa};
pub use crl::{Crl, CrlParams, RevocationReason, RevokedEntry};
pub use error::PkiError;
pub use facts::{
    ClientAuthFacts, FACT_COUNT, FactValue, IssuerInfo, OUTCOME_FIELDS, RFC9440_CHAIN_LIMIT, RFC9440_LEAF_LIMIT,
    compute_facts, reserved_header,
};
pub use keys::KeyType;
pub use ocsp::{CertId, CertIdHash, OcspError, OcspStatus};
pub use ocsp_check::{OcspAnswer, OcspPolicy, OcspTarget};
pub use seal::MasterKey;
pub use server::{ServerCertificate, parse_client_identity, parse_server_certificate};
pub use status::{CertificateStatus, StatusAction, transition};
pub use verify::{AuthStatus, Verdict, Verifier, VerifierBuilder};

/// Re-exported so callers can pass rustls' certificate type straight in.
pub use rustls_pki_types::CertificateDer;

/// Lower-case hex without separators (record fields such as `ski`, `serial_number`).
pub fn hex_lower(bytes: &[u8]) -> String {
    der::hex(bytes, false)
}

/// Upper-case hex without separators (rule fields such as `cert_serial`, `cert_ski`).
pub fn hex_upper(bytes: &[u8]) -> String {
    der::hex(bytes, true)
}

/// Bytes from hex (either case, no separators), e.g. a record's `serial_number` for
/// [`VerifierBuilder::revoke_serials`] or [`RevokedEntry`]; `None` if it is not even-length hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    der::unhex(text)
}
