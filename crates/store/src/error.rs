//! The store's error type.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one this store understands.
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// Opening or talking to the database failed.
    #[error("database error: {0}")]
    Database(sqlx::Error),
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

impl From<sqlx::Error> for StoreError {
    /// A write that lost a race with another (SQLite's `SQLITE_BUSY` family, among them `SQLITE_BUSY_SNAPSHOT` when
    /// a transaction that read first cannot write after another committed; PostgreSQL's serialization failures
    /// and deadlocks) is a conflict the caller can retry, not a server fault: both stores then answer 409 alike.
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            let code = db.code();
            let lost_race = if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite's primary result code is the low byte of the extended one: 5 is SQLITE_BUSY.
                code.as_deref()
                    .and_then(|c| c.parse::<u32>().ok())
                    .is_some_and(|n| n & 0xff == 5)
            } else {
                db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some()
                    && matches!(code.as_deref(), Some("40001" | "40P01"))
            };
            if lost_race {
                return StoreError::Conflict("another write changed the same data at the same time; retry".into());
            }
        }
        StoreError::Database(err)
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

#[cfg(test)]
mod tests {
    use super::StoreError;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    /// A transaction that read, then writes after another connection committed a write, gets SQLite's
    /// `SQLITE_BUSY_SNAPSHOT`: a conflict to retry.
    #[tokio::test]
    async fn a_lost_write_race_on_sqlite_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("race.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER)").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)").execute(&pool).await.unwrap();
        let mut first = pool.begin().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT v FROM t")
            .fetch_one(&mut *first)
            .await
            .unwrap();
        sqlx::query("UPDATE t SET v = 2").execute(&pool).await.unwrap();
        let err = sqlx::query("UPDATE t SET v = 3")
            .execute(&mut *first)
            .await
            .unwrap_err();
        assert!(matches!(StoreError::from(err), StoreError::Conflict(_)));
        // Other database errors stay what they are.
        let err = sqlx::query("SELECT nope FROM t").execute(&pool).await.unwrap_err();
        assert!(matches!(StoreError::from(err), StoreError::Database(_)));
    }
}
