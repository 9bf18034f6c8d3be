//! The store's error type.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one this store understands.
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// Opening or talking to the database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed; the database is left at the last complete version.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The named object does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    /// The write conflicts with an existing object (for example a duplicate name).
    #[error("{0}")]
    Conflict(String),
    /// A configured limit or quota is reached; `code` is Cloudflare's error code for it.
    #[error("{message}")]
    LimitReached { code: u32, message: String },
    /// The input is not acceptable; the message names the problem.
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn not_found(kind: &'static str, id: &str) -> Self {
        StoreError::NotFound {
            kind,
            id: id.to_owned(),
        }
    }
}

/// True when `err` is a unique-constraint violation, on either backend.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// True when `err` is a foreign-key violation, on either backend.
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}
