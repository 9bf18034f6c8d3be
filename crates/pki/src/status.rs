//! The client-certificate status machine, with Cloudflare's status names.
//!
//! Cloudflare: `active → pending_revocation → revoked` on DELETE, and back through
//! `pending_reactivation` on PATCH `{"reactivate": true}`, the pending states being asynchronous.
//! Portcullis applies transitions at once, so [`transition`] goes straight to `revoked` or `active`;
//! records that arrive in a pending state (imported from Cloudflare) can still be moved on, and a
//! `revoked` certificate can be reactivated. It does not store anything.

use serde::{Deserialize, Serialize};

use crate::error::{PkiError, Result};

/// `status` of a client certificate (serialized in snake_case, as Cloudflare does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateStatus {
    Active,
    PendingRevocation,
    PendingReactivation,
    Revoked,
}

impl CertificateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateStatus::Active => "active",
            CertificateStatus::PendingRevocation => "pending_revocation",
            CertificateStatus::PendingReactivation => "pending_reactivation",
            CertificateStatus::Revoked => "revoked",
        }
    }

    /// Whether the edge refuses the certificate (and its CA's CRL lists it): every status but `active`.
    /// Portcullis makes revocation take effect at once, so a certificate whose revocation was asked for is refused
    /// already, and one on its way back is not good until it is `active` again.
    pub fn is_revoked(self) -> bool {
        self != CertificateStatus::Active
    }
}

impl std::fmt::Display for CertificateStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CertificateStatus {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self> {
        [
            CertificateStatus::Active,
            CertificateStatus::PendingRevocation,
            CertificateStatus::PendingReactivation,
            CertificateStatus::Revoked,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| PkiError::InvalidParameter(format!("unknown certificate status {s:?}")))
    }
}

/// What a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    /// DELETE on Cloudflare's API.
    Revoke,
    /// PATCH `{"reactivate": true}`.
    Reactivate,
}

/// The status after `action`, or an error naming the invalid transition.
pub fn transition(current: CertificateStatus, action: StatusAction) -> Result<CertificateStatus> {
    use CertificateStatus::*;
    match (current, action) {
        (Active | PendingRevocation | PendingReactivation, StatusAction::Revoke) => Ok(Revoked),
        (Revoked | PendingRevocation | PendingReactivation, StatusAction::Reactivate) => Ok(Active),
        (Revoked, StatusAction::Revoke) => Err(PkiError::InvalidTransition(
            "revoke: the certificate is already revoked".into(),
        )),
        (Active, StatusAction::Reactivate) => Err(PkiError::InvalidTransition(
            "reactivate: the certificate is already active".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::CertificateStatus::*;
    use super::*;

    #[test]
    fn transitions() {
        assert_eq!(transition(Active, StatusAction::Revoke).unwrap(), Revoked);
        assert_eq!(transition(PendingRevocation, StatusAction::Revoke).unwrap(), Revoked);
        assert_eq!(transition(PendingRevocation, StatusAction::Reactivate).unwrap(), Active);
        assert_eq!(transition(Revoked, StatusAction::Reactivate).unwrap(), Active);
        assert_eq!(
            transition(PendingReactivation, StatusAction::Reactivate).unwrap(),
            Active
        );
        let err = transition(Revoked, StatusAction::Revoke).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid status transition: revoke: the certificate is already revoked"
        );
        let err = transition(Active, StatusAction::Reactivate).unwrap_err();
        assert!(err.to_string().contains("already active"));
    }

    #[test]
    fn serde_names() {
        assert_eq!(
            serde_json::to_string(&PendingRevocation).unwrap(),
            "\"pending_revocation\""
        );
        assert_eq!(PendingRevocation.to_string(), "pending_revocation");
        assert_eq!(
            "pending_reactivation".parse::<CertificateStatus>().unwrap(),
            PendingReactivation
        );
        assert!(Revoked.is_revoked() && PendingReactivation.is_revoked() && PendingRevocation.is_revoked());
        assert!(!Active.is_revoked());
    }
}
