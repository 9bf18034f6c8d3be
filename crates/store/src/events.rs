//! Security events: the requests the rules blocked or logged. Written in batches by the edge, kept for a bounded
//! number of events, listed by the API and dashboard. Events are data, not configuration: recording them bumps no
//! generation and writes no audit entry.

use crate::Store;
use crate::db::{RowExt, on_db};
use crate::error::StoreError;
use crate::model::{EventFilter, SecurityEvent};

/// Most events one list call returns.
pub const MAX_EVENTS_PER_PAGE: u32 = 1_000;

impl Store {
    /// Appends `events` in one transaction, then drops the oldest so that at most `retain` remain.
    pub async fn record_security_events(&self, events: &[SecurityEvent], retain: u64) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for e in events {
                sqlx::query(
                    "INSERT INTO security_events (at, zone_id, host, method, path, client_ip, action, rule_id, \
                     status_code, mtls_status, cert_fingerprint_sha256, cert_serial, cert_subject_dn, cert_verify_error) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(e.at)
                .bind(&e.zone_id)
                .bind(&e.host)
                .bind(&e.method)
                .bind(&e.path)
                .bind(&e.client_ip)
                .bind(&e.action)
                .bind(&e.rule_id)
                .bind(e.status_code)
                .bind(&e.mtls_status)
                .bind(&e.cert_fingerprint_sha256)
                .bind(&e.cert_serial)
                .bind(&e.cert_subject_dn)
                .bind(&e.cert_verify_error)
                .execute(&mut *tx)
                .await?;
            }
            let max_id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM security_events")
                .fetch_one(&mut *tx)
                .await?;
            if let Some(max_id) = max_id {
                let keep_from = max_id
                    .saturating_sub(i64::try_from(retain).unwrap_or(i64::MAX))
                    .saturating_add(1);
                sqlx::query("DELETE FROM security_events WHERE id < $1")
                    .bind(keep_from)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Events matching `filter`, newest first.
    pub async fn list_security_events(&self, filter: &EventFilter) -> Result<Vec<SecurityEvent>, StoreError> {
        let limit = i64::from(filter.limit.clamp(1, MAX_EVENTS_PER_PAGE));
        on_db!(&self.db, |pool| {
            // '' (or 0 for after_id) disables a filter, so one query text serves every combination.
            let rows = sqlx::query(
                "SELECT id, at, zone_id, host, method, path, client_ip, action, rule_id, status_code, mtls_status, \
                 cert_fingerprint_sha256, cert_serial, cert_subject_dn, cert_verify_error FROM security_events \
                 WHERE ($1 = '' OR zone_id = $1) AND ($2 = '' OR host = $2) AND ($3 = '' OR action = $3) \
                 AND ($4 = '' OR mtls_status = $4) AND id > $5 \
                 ORDER BY id DESC LIMIT $6",
            )
            .bind(filter.zone_id.as_deref().unwrap_or(""))
            .bind(filter.host.as_deref().unwrap_or(""))
            .bind(filter.action.as_deref().unwrap_or(""))
            .bind(filter.mtls_status.as_deref().unwrap_or(""))
            .bind(filter.after_id.unwrap_or(0))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter().map(event_from_row).collect()
        })
    }
}

fn event_from_row(row: &impl RowExt) -> Result<SecurityEvent, StoreError> {
    Ok(SecurityEvent {
        id: row.int("id")?,
        at: row.int("at")?,
        zone_id: row.opt_text("zone_id")?,
        host: row.text("host")?,
        method: row.text("method")?,
        path: row.text("path")?,
        client_ip: row.text("client_ip")?,
        action: row.text("action")?,
        rule_id: row.opt_text("rule_id")?,
        status_code: row.int("status_code")?,
        mtls_status: row.text("mtls_status")?,
        cert_fingerprint_sha256: row.text("cert_fingerprint_sha256")?,
        cert_serial: row.text("cert_serial")?,
        cert_subject_dn: row.text("cert_subject_dn")?,
        cert_verify_error: row.text("cert_verify_error")?,
    })
}
