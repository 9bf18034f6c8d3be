//! Hostnames: what the edge serves, where it forwards, and per-host settings.

use crate::Store;
use crate::db::{RowExt, commit_write, on_db};
use crate::error::{StoreError, is_unique_violation};
use crate::ids::{new_id, now};
use crate::model::{Actor, Hostname};
use crate::zones::normalize_dns_name;

macro_rules! hostname_columns {
    () => {
        "id, zone_id, hostname, origin, settings, created_on, modified_on"
    };
}

/// Whether `hostname` is `zone` or a name under it: Cloudflare only lets a zone configure its own names.
pub(crate) fn in_zone(hostname: &str, zone: &str) -> bool {
    hostname == zone || hostname.strip_suffix(zone).is_some_and(|prefix| prefix.ends_with('.'))
}

/// Checks a hostname and that it lies in the zone named `zone`. A wildcard (`*.api.example.com`) is one `*`
/// label in front of a name in the zone, and covers the names one label under it, as a wildcard certificate does.
pub fn check_hostname(hostname: &str, zone: &str) -> Result<String, StoreError> {
    let trimmed = hostname.trim();
    let hostname = match trimmed.strip_prefix("*.") {
        Some(rest) => format!("*.{}", normalize_dns_name(rest)?),
        None if trimmed.contains('*') => {
            return Err(StoreError::Invalid(format!(
                "invalid hostname {trimmed:?}: a wildcard is a whole first label, as in \"*.example.com\""
            )));
        }
        None => normalize_dns_name(trimmed)?,
    };
    if !in_zone(&hostname, zone) {
        return Err(StoreError::Invalid(format!(
            "hostname {hostname:?} is not in zone {zone:?}"
        )));
    }
    Ok(hostname)
}

impl Store {
    /// Adds `hostname` to the zone `zone_id`, forwarding to `origin`.
    pub async fn create_hostname(
        &self,
        zone_id: &str,
        hostname: &str,
        origin: &str,
        settings: serde_json::Value,
        actor: &Actor,
    ) -> Result<Hostname, StoreError> {
        let zone = self.zone(zone_id).await?;
        let hostname = check_hostname(hostname, &zone.name)?;
        // A name under a more specific zone (`api.sub.example.com` while `sub.example.com` is a zone) is that
        // zone's: else whoever may write the parent zone could take names the child zone's tokens never see.
        let covered = hostname.strip_prefix("*.").unwrap_or(&hostname);
        if let Some(child) = self
            .list_zones()
            .await?
            .into_iter()
            .find(|z| z.id != zone.id && z.name.len() > zone.name.len() && in_zone(covered, &z.name))
        {
            return Err(StoreError::Invalid(format!(
                "hostname {hostname:?} is in zone {:?}, which is more specific than {:?}: add it there",
                child.name, zone.name
            )));
        }
        let at = now();
        let record = Hostname {
            id: new_id(),
            zone_id: zone.id,
            hostname,
            origin: origin.to_owned(),
            settings,
            created_on: at,
            modified_on: at,
        };
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO hostnames (id, zone_id, hostname, origin, settings, created_on, modified_on) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&record.id)
            .bind(&record.zone_id)
            .bind(&record.hostname)
            .bind(&record.origin)
            .bind(record.settings.to_string())
            .bind(record.created_on)
            .bind(record.modified_on)
            .execute(&mut *tx)
            .await;
            match inserted {
                Err(err) if is_unique_violation(&err) => {
                    return Err(StoreError::Conflict(format!(
                        "hostname {:?} already exists",
                        record.hostname
                    )));
                }
                other => other?,
            };
            commit_write!(self, tx, actor, "create", "hostname", &record.id, &record.hostname);
        });
        Ok(record)
    }

    /// The zone's hostnames, ordered by name.
    pub async fn list_hostnames(&self, zone_id: &str) -> Result<Vec<Hostname>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                hostname_columns!(),
                " FROM hostnames WHERE zone_id = $1 ORDER BY hostname"
            ))
            .bind(zone_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(hostname_from_row).collect()
        })
    }

    /// The hostname `id` of zone `zone_id`.
    pub async fn hostname(&self, zone_id: &str, id: &str) -> Result<Hostname, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                hostname_columns!(),
                " FROM hostnames WHERE zone_id = $1 AND id = $2"
            ))
            .bind(zone_id)
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| StoreError::not_found("hostname", id))?;
            hostname_from_row(&row)
        })
    }

    /// Changes a hostname's origin and/or settings; `None` leaves a field as it is. With `based_on` (the settings
    /// the new ones were derived from), the write is refused as a conflict if the stored settings changed since, so
    /// that two concurrent edits of different settings cannot silently lose one.
    pub async fn update_hostname(
        &self,
        zone_id: &str,
        id: &str,
        origin: Option<&str>,
        settings: Option<serde_json::Value>,
        based_on: Option<&serde_json::Value>,
        actor: &Actor,
    ) -> Result<Hostname, StoreError> {
        let mut record = self.hostname(zone_id, id).await?;
        let expected = based_on.cloned().unwrap_or_else(|| record.settings.clone());
        // The origin too: an edit of the settings alone writes the origin read here back.
        let expected_origin = record.origin.clone();
        if let Some(origin) = origin {
            record.origin = origin.to_owned();
        }
        if let Some(settings) = settings {
            record.settings = settings;
        }
        record.modified_on = now();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // Compared as JSON, not as text, and locked on PostgreSQL until the update (SQLite has one writer, and
            // refuses this transaction's write if another committed since its read).
            let query = if self.is_postgres() {
                "SELECT settings, origin FROM hostnames WHERE zone_id = $1 AND id = $2 FOR UPDATE"
            } else {
                "SELECT settings, origin FROM hostnames WHERE zone_id = $1 AND id = $2"
            };
            let stored: Option<(String, String)> = sqlx::query_as(query)
                .bind(zone_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((stored, stored_origin)) = stored else {
                return Err(StoreError::not_found("hostname", id));
            };
            if serde_json::from_str::<serde_json::Value>(&stored).ok().as_ref() != Some(&expected)
                || stored_origin != expected_origin
            {
                return Err(StoreError::Conflict(format!(
                    "hostname {:?} changed while this edit was being made; read it again and retry",
                    record.hostname
                )));
            }
            sqlx::query(
                "UPDATE hostnames SET origin = $1, settings = $2, modified_on = $3 WHERE zone_id = $4 AND id = $5",
            )
            .bind(&record.origin)
            .bind(record.settings.to_string())
            .bind(record.modified_on)
            .bind(zone_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            commit_write!(self, tx, actor, "update", "hostname", id, &record.hostname);
        });
        Ok(record)
    }

    /// Replaces the settings of several hostnames of one zone in one transaction: all of them or none. Each change
    /// is `(id, based_on, settings)`: the write is refused as a conflict if a hostname's stored settings are no
    /// longer `based_on` (what the new ones were derived from), so that a concurrent edit is not silently undone.
    pub async fn update_hostname_settings(
        &self,
        zone_id: &str,
        changes: &[(String, serde_json::Value, serde_json::Value)],
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let at = now();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let query = if self.is_postgres() {
                "SELECT settings FROM hostnames WHERE zone_id = $1 AND id = $2 FOR UPDATE"
            } else {
                "SELECT settings FROM hostnames WHERE zone_id = $1 AND id = $2"
            };
            for (id, based_on, settings) in changes {
                let stored: Option<String> = sqlx::query_scalar(query)
                    .bind(zone_id)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(stored) = stored else {
                    return Err(StoreError::not_found("hostname", id));
                };
                if serde_json::from_str::<serde_json::Value>(&stored).ok().as_ref() != Some(based_on) {
                    return Err(StoreError::Conflict(format!(
                        "hostname {id:?} changed while this edit was being made; read it again and retry"
                    )));
                }
                sqlx::query("UPDATE hostnames SET settings = $1, modified_on = $2 WHERE zone_id = $3 AND id = $4")
                    .bind(settings.to_string())
                    .bind(at)
                    .bind(zone_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            let detail = format!("settings of {} hostnames", changes.len());
            commit_write!(self, tx, actor, "update", "hostname", zone_id, &detail);
        });
        Ok(())
    }

    /// Removes a hostname and its CA associations.
    pub async fn delete_hostname(&self, zone_id: &str, id: &str, actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let name: Option<String> =
                sqlx::query_scalar("DELETE FROM hostnames WHERE zone_id = $1 AND id = $2 RETURNING hostname")
                    .bind(zone_id)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(name) = name else {
                return Err(StoreError::not_found("hostname", id));
            };
            sqlx::query("DELETE FROM hostname_associations WHERE zone_id = $1 AND hostname = $2")
                .bind(zone_id)
                .bind(&name)
                .execute(&mut *tx)
                .await?;
            commit_write!(self, tx, actor, "delete", "hostname", id, &name);
        });
        Ok(())
    }
}

pub(crate) fn hostname_from_row(row: &impl RowExt) -> Result<Hostname, StoreError> {
    Ok(Hostname {
        id: row.text("id")?,
        zone_id: row.text("zone_id")?,
        hostname: row.text("hostname")?,
        origin: row.text("origin")?,
        settings: row.json("settings")?,
        created_on: row.int("created_on")?,
        modified_on: row.int("modified_on")?,
    })
}

#[cfg(test)]
mod wildcard_tests {
    use super::check_hostname;

    #[test]
    fn a_wildcard_is_a_whole_first_label_in_the_zone() {
        assert_eq!(
            check_hostname("*.API.example.com", "example.com").unwrap(),
            "*.api.example.com"
        );
        assert_eq!(check_hostname("*.example.com", "example.com").unwrap(), "*.example.com");
        for bad in [
            "a*.example.com",
            "*.*.example.com",
            "a.*.example.com",
            "*",
            "*.other.com",
            "*example.com",
        ] {
            assert!(check_hostname(bad, "example.com").is_err(), "{bad}");
        }
    }
}
