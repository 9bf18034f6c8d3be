//! `portcullis backup`: a consistent copy of the SQLite database of a data directory, taken while the server runs.
//! It reads the file directly (no API, no token) and never changes it. PostgreSQL deployments back up with their
//! own tools (`pg_dump`), which this refuses to stand in for.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The data directory whose database to copy.
    #[arg(long, env = "PORTCULLIS_DATA_DIR", default_value = "portcullis-data")]
    pub data_dir: PathBuf,
    /// The server's database URL, when it is not the data directory's SQLite file: `sqlite://PATH` is copied,
    /// PostgreSQL is refused.
    #[arg(long, env = "PORTCULLIS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The file to write (it must not exist).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let db = match args.database_url.as_deref() {
        None => args.data_dir.join("portcullis.db"),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            bail!("this server keeps its state in PostgreSQL: back it up with pg_dump");
        }
        Some(url) => match url.strip_prefix("sqlite://") {
            Some(path) => PathBuf::from(path),
            None => bail!("unsupported database URL {url:?}: expected sqlite://PATH"),
        },
    };
    portcullis_store::Store::backup_sqlite(&db, &args.out)
        .await
        .with_context(|| format!("backing up {}", db.display()))?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    outln!("backed up {} to {} ({size} bytes)", db.display(), args.out.display());
    outln!(
        "CA and server-certificate keys in it are sealed: restoring needs the master key too ({} or \
         PORTCULLIS_MASTER_KEY); keep a copy of it apart from the backup.",
        args.data_dir.join("master.key").display()
    );
    outln!(
        "To restore: stop the server, put the file in place of {} (removing its -wal and -shm files), start it. \
         Revocations made after this backup are not in it: revoke them again (portcullis audit lists them).",
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}
