//! Opening a store, migrations, and the write path every mutation goes through.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::feed;
use crate::ids::{new_id, now};
use crate::model::{Account, Actor, AuditEntry};

/// The connection pool of one backend.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever backend's pool the store has. The body is written once and compiled
/// for both backends, which is how every query here stays identical on SQLite and PostgreSQL.
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Ends a write transaction: bumps the change-feed generation, records the audit entry, notifies other processes
/// (PostgreSQL: delivered only if the transaction commits), commits, and announces the new generation in-process.
/// Expands inside an `on_db!` body, where `$tx` is that backend's transaction.
macro_rules! commit_write {
    ($store:expr, $tx:ident, $actor:expr, $action:expr, $object_type:expr, $object_id:expr, $detail:expr) => {{
        let generation: i64 =
            sqlx::query_scalar("UPDATE generation SET value = value + 1 WHERE id = 1 RETURNING value")
                .fetch_one(&mut *$tx)
                .await?;
        sqlx::query(
            "INSERT INTO audit_log (at, token_id, action, object_type, object_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($crate::ids::now())
        .bind($actor.token_id.clone())
        .bind($action)
        .bind($object_type)
        .bind($object_id)
        .bind($detail)
        .execute(&mut *$tx)
        .await?;
        if $store.is_postgres() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind($crate::feed::CHANNEL)
                .bind(generation.to_string())
                .execute(&mut *$tx)
                .await?;
        }
        $tx.commit().await?;
        $store.announce(generation);
        generation
    }};
}
pub(crate) use commit_write;

/// A handle on the store. Cheap to clone; all clones share the pool and the change feed.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) db: Db,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    changes: watch::Sender<u64>,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.listener {
            task.abort();
        }
    }
}

impl Store {
    /// Opens the store named by `url` (`sqlite://PATH`, `postgres://…` or `postgresql://…`), runs pending
    /// migrations and makes sure the account exists.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Store::finish_open(Db::Postgres(pool)).await
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Store::open_sqlite(Path::new(path)).await
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }

    /// Opens (creating if missing) the SQLite database file at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Writers queue on SQLite's one write lock; wait for it rather than fail under load.
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Store::finish_open(Db::Sqlite(pool)).await
    }

    /// Copies the SQLite database at `db` into the new file `out` with `VACUUM INTO`: one consistent snapshot,
    /// compacted, taken while a server may be using the database (WAL readers do not block it, nor it them).
    /// It opens `db` read-only and runs no migration, so a backup never changes the database it copies.
    pub async fn backup_sqlite(db: &Path, out: &Path) -> Result<(), StoreError> {
        if !db.is_file() {
            return Err(StoreError::Invalid(format!("no SQLite database at {}", db.display())));
        }
        // Created empty (VACUUM INTO fills an empty file) and private: the copy holds token hashes, sealed keys and
        // the audit log.
        let mut create = std::fs::OpenOptions::new();
        create.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o600);
        if let Err(err) = create.open(out) {
            return Err(StoreError::Invalid(
                if err.kind() == std::io::ErrorKind::AlreadyExists {
                    format!("{} exists already; a backup never overwrites a file", out.display())
                } else {
                    format!("cannot create {}: {err}", out.display())
                },
            ));
        }
        let target = out
            .to_str()
            .ok_or_else(|| StoreError::Invalid(format!("{} is not a UTF-8 path", out.display())))?;
        let options = SqliteConnectOptions::new()
            .filename(db)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        let copied = sqlx::query("VACUUM INTO $1").bind(target).execute(&pool).await;
        pool.close().await;
        if let Err(err) = copied {
            // No half-written backup is left behind.
            let _ = std::fs::remove_file(out);
            return Err(err.into());
        }
        // SQLite does not sync the file VACUUM INTO writes.
        std::fs::File::open(out)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::Invalid(format!("syncing {}: {e}", out.display())))?;
        Ok(())
    }

    async fn finish_open(db: Db) -> Result<Store, StoreError> {
        let generation = read_generation(&db).await?;
        let (changes, _) = watch::channel(generation);
        let listener = match &db {
            Db::Postgres(pool) => Some(feed::spawn_listener(pool.clone(), changes.clone())),
            Db::Sqlite(_) => None,
        };
        let store = Store {
            db,
            inner: Arc::new(Inner { changes, listener }),
        };
        store.ensure_account().await?;
        Ok(store)
    }

    /// Which backend this store runs on: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// A receiver of the change-feed generation. It changes after every committed write, made by this process or,
    /// on PostgreSQL, by any process sharing the database.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The generation as the database has it now.
    pub async fn generation(&self) -> Result<u64, StoreError> {
        read_generation(&self.db).await
    }

    pub(crate) fn announce(&self, generation: i64) {
        feed::announce(&self.inner.changes, generation);
    }

    /// The account. There is exactly one; it is created when the store is first opened.
    pub async fn account(&self) -> Result<Account, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query("SELECT id, name, created_on FROM accounts")
                .fetch_optional(pool)
                .await?
                .ok_or_else(|| StoreError::not_found("account", ""))?;
            Ok(Account {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                created_on: row.try_get("created_on")?,
            })
        })
    }

    async fn ensure_account(&self) -> Result<(), StoreError> {
        let id = new_id();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // `singleton` makes a second node starting at the same moment a no-op instead of a second account.
            let inserted = sqlx::query(
                "INSERT INTO accounts (id, name, created_on, singleton) VALUES ($1, $2, $3, 1) \
                 ON CONFLICT (singleton) DO NOTHING",
            )
            .bind(&id)
            .bind("Portcullis")
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                commit_write!(self, tx, Actor::system(), "create", "account", &id, "first start");
            } else {
                tx.rollback().await?;
            }
            Ok(())
        })
    }

    /// The newest audit entries, newest first, at most `limit`.
    pub async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT id, at, token_id, action, object_type, object_id, detail FROM audit_log \
                 ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(AuditEntry {
                        id: row.try_get("id")?,
                        at: row.try_get("at")?,
                        token_id: row.try_get("token_id")?,
                        action: row.try_get("action")?,
                        object_type: row.try_get("object_type")?,
                        object_id: row.try_get("object_id")?,
                        detail: row.try_get("detail")?,
                    })
                })
                .collect()
        })
    }
}

async fn read_generation(db: &Db) -> Result<u64, StoreError> {
    let value: i64 = on_db!(db, |pool| {
        sqlx::query_scalar("SELECT value FROM generation WHERE id = 1")
            .fetch_one(pool)
            .await?
    });
    Ok(u64::try_from(value).unwrap_or(0))
}

/// Typed column reads that work the same on both backends' rows, so each record's decoder is written once.
pub(crate) trait RowExt {
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error>;
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error>;

    fn flag(&self, column: &str) -> Result<bool, sqlx::Error> {
        Ok(self.int(column)? != 0)
    }

    /// A JSON column; a stored value that does not parse is reported as a decode error naming the column.
    fn json(&self, column: &str) -> Result<serde_json::Value, sqlx::Error> {
        let text = self.text(column)?;
        serde_json::from_str(&text).map_err(|err| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: Box::new(err),
        })
    }
}

macro_rules! impl_row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn text(&self, column: &str) -> Result<String, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(column)
            }
            fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(column)
            }
            fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
                self.try_get(column)
            }
        }
    };
}
impl_row_ext!(sqlx::sqlite::SqliteRow);
impl_row_ext!(sqlx::postgres::PgRow);

/// The strings of a JSON array column (hosts, messages); anything else in it is skipped.
pub(crate) fn json_strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}
