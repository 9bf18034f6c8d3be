//! The one error type of the crate. Messages name the problem in words a user can act on.

/// Everything that can go wrong in the PKI library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// What the zone's name policy refuses, as a noun phrase (`the name "cn:admin"`).
    #[error("{0} is not allowed by the zone's client certificate policy (allowed_names)")]
    NameNotAllowed(String),
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    #[error(
        "cannot unseal the CA private key: wrong master key, or the sealed data was changed or belongs to another CA"
    )]
    UnsealFailed,
    #[error("sealed key is malformed: {0}")]
    SealedKeyMalformed(String),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("malformed certificate: {0}")]
    Certificate(String),
    #[error("malformed CSR: {0}")]
    Csr(String),
    #[error("CSR signature is invalid: {0}")]
    CsrSignature(String),
    #[error("unsupported or weak key: {0}")]
    WeakKey(String),
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("validity_days must be between 1 and 5475 (got {0})")]
    ValidityDays(i64),
    #[error("not a CA certificate: {0}")]
    NotCa(String),
    #[error("unsupported signature algorithm: {0}")]
    UnsupportedSignature(String),
    #[error("CA certificate is not valid now: {0}")]
    CaValidity(String),
    #[error("malformed CRL: {0}")]
    Crl(String),
    #[error("CRL does not belong to this CA: {0}")]
    CrlIssuer(String),
    #[error("invalid status transition: {0}")]
    InvalidTransition(String),
    #[error("certificate generation failed: {0}")]
    Generation(String),
    #[error("PKCS#12 export failed: {0}")]
    Pkcs12(String),
}

impl From<rcgen::Error> for PkiError {
    fn from(err: rcgen::Error) -> Self {
        PkiError::Generation(err.to_string())
    }
}

pub(crate) type Result<T> = std::result::Result<T, PkiError>;
