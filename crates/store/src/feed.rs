//! The change feed: a generation number that grows with every committed write.
//!
//! In-process subscribers get it from a `watch` channel. On PostgreSQL, each write also sends `NOTIFY` on
//! [`CHANNEL`] inside its transaction, and every store handle listens, so a write on one node reaches the others.
//! Notifications can be lost while a listening connection is down; after reconnecting, the listener re-reads the
//! generation from the database, so subscribers converge anyway.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;

/// The PostgreSQL notification channel.
pub(crate) const CHANNEL: &str = "portcullis_changes";

/// Raises the published generation to `generation`; never lowers it, since notifications may arrive out of order.
pub(crate) fn announce(changes: &watch::Sender<u64>, generation: i64) {
    let Ok(generation) = u64::try_from(generation) else {
        return;
    };
    changes.send_if_modified(|current| {
        if generation > *current {
            *current = generation;
            true
        } else {
            false
        }
    });
}

pub(crate) fn spawn_listener(pool: PgPool, changes: watch::Sender<u64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(err) = listen(&pool, &changes).await {
                tracing::warn!(error = %err, "change feed: listener failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    })
}

async fn listen(pool: &PgPool, changes: &watch::Sender<u64>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    // Anything committed while we were not listening is covered by reading the generation after LISTEN.
    catch_up(pool, changes).await?;
    loop {
        match listener.try_recv().await? {
            Some(notification) => match notification.payload().parse::<i64>() {
                Ok(generation) => announce(changes, generation),
                Err(_) => catch_up(pool, changes).await?,
            },
            // The connection dropped and will be re-established on the next call; notifications may be lost.
            None => catch_up(pool, changes).await?,
        }
    }
}

async fn catch_up(pool: &PgPool, changes: &watch::Sender<u64>) -> Result<(), sqlx::Error> {
    let generation: i64 = sqlx::query_scalar("SELECT value FROM generation WHERE id = 1")
        .fetch_one(pool)
        .await?;
    announce(changes, generation);
    Ok(())
}
