//! The records the store keeps, as callers see them. Times are unix seconds.

use serde::Serialize;

/// Who made a write, for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The API token that authorised the write; `None` for the server itself (first start, CLI on the data dir).
    pub token_id: Option<String>,
}

impl Actor {
    /// The server acting on its own behalf.
    pub fn system() -> Self {
        Actor { token_id: None }
    }

    /// A write authorised by the API token `token_id`.
    pub fn token(token_id: impl Into<String>) -> Self {
        Actor {
            token_id: Some(token_id.into()),
        }
    }
}

/// The one account, created when the store is first opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_on: i64,
}

/// A zone: a DNS name under which hostnames are configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Zone {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub status: String,
    pub created_on: i64,
    pub modified_on: i64,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// GET requests only.
    Read,
    /// Everything.
    Write,
}

impl TokenScope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Write => "write",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(TokenScope::Read),
            "write" => Some(TokenScope::Write),
            _ => None,
        }
    }
}

/// An API token. Only the SHA-256 of its secret is stored; the secret is shown once, at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub scope: TokenScope,
    pub created_on: i64,
    pub revoked_on: Option<i64>,
}

/// One audited write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub token_id: Option<String>,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub detail: String,
}
