//! Zones.

use sqlx::Row;

use crate::Store;
use crate::db::{commit_write, on_db};
use crate::error::{StoreError, is_unique_violation};
use crate::ids::{new_id, now};
use crate::model::{Actor, URL_NORMALIZATION_SCOPES, URL_NORMALIZATION_TYPES, Zone};

/// The zone columns, as a macro so that queries stay `&'static str` (sqlx refuses SQL built at run time).
macro_rules! zone_columns {
    () => {
        "id, account_id, name, status, created_on, modified_on, url_normalization_scope, url_normalization_type, \
         managed_request_headers, managed_response_headers"
    };
}

impl Store {
    /// Creates the zone `name` (a DNS name, stored lower-cased).
    pub async fn create_zone(&self, name: &str, actor: &Actor) -> Result<Zone, StoreError> {
        let name = normalize_dns_name(name)?;
        // The other way round from `create_hostname`'s check: a new zone must not take over names a parent zone
        // already serves.
        for parent in self.list_zones().await? {
            if parent.name.len() < name.len() && crate::hostnames::in_zone(&name, &parent.name) {
                let taken = self.list_hostnames(&parent.id).await?.into_iter().find(|h| {
                    let covered = h.hostname.strip_prefix("*.").unwrap_or(&h.hostname);
                    crate::hostnames::in_zone(covered, &name)
                });
                if let Some(h) = taken {
                    return Err(StoreError::Conflict(format!(
                        "zone {:?} serves {:?}, which would be in zone {name:?}: delete that hostname first",
                        parent.name, h.hostname
                    )));
                }
            }
        }
        let account = self.account().await?;
        let at = now();
        let zone = Zone {
            id: new_id(),
            account_id: account.id,
            name,
            status: "active".to_owned(),
            created_on: at,
            modified_on: at,
            url_normalization_scope: URL_NORMALIZATION_SCOPES[0].to_owned(),
            url_normalization_type: URL_NORMALIZATION_TYPES[0].to_owned(),
            managed_request_headers: Vec::new(),
            managed_response_headers: Vec::new(),
        };
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO zones (id, account_id, name, status, created_on, modified_on) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&zone.id)
            .bind(&zone.account_id)
            .bind(&zone.name)
            .bind(&zone.status)
            .bind(zone.created_on)
            .bind(zone.modified_on)
            .execute(&mut *tx)
            .await;
            match inserted {
                Err(err) if is_unique_violation(&err) => {
                    return Err(StoreError::Conflict(format!("zone {:?} already exists", zone.name)));
                }
                other => other?,
            };
            commit_write!(self, tx, actor, "create", "zone", &zone.id, &zone.name);
        });
        Ok(zone)
    }

    /// All zones, ordered by name.
    pub async fn list_zones(&self) -> Result<Vec<Zone>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(concat!("SELECT ", zone_columns!(), " FROM zones ORDER BY name"))
                .fetch_all(pool)
                .await?;
            rows.iter().map(zone_from_row).collect()
        })
    }

    /// The zone with id `id`.
    pub async fn zone(&self, id: &str) -> Result<Zone, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query(concat!("SELECT ", zone_columns!(), " FROM zones WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
                .ok_or_else(|| StoreError::not_found("zone", id))?;
            zone_from_row(&row)
        })
    }

    /// Sets the zone's URL normalization (`scope` one of [`URL_NORMALIZATION_SCOPES`], `kind` one of
    /// [`URL_NORMALIZATION_TYPES`]) and returns the zone.
    pub async fn set_url_normalization(
        &self,
        id: &str,
        scope: &str,
        kind: &str,
        actor: &Actor,
    ) -> Result<Zone, StoreError> {
        if !URL_NORMALIZATION_SCOPES.contains(&scope) {
            return Err(StoreError::Invalid(format!(
                "scope {scope:?} is not one of {}",
                URL_NORMALIZATION_SCOPES.join(", ")
            )));
        }
        if !URL_NORMALIZATION_TYPES.contains(&kind) {
            return Err(StoreError::Invalid(format!(
                "type {kind:?} is not one of {}",
                URL_NORMALIZATION_TYPES.join(", ")
            )));
        }
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE zones SET url_normalization_scope = $1, url_normalization_type = $2, modified_on = $3 \
                 WHERE id = $4",
            )
            .bind(scope)
            .bind(kind)
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::not_found("zone", id));
            }
            commit_write!(
                self,
                tx,
                actor,
                "update",
                "zone",
                id,
                &format!("url_normalization {scope} {kind}")
            );
        });
        self.zone(id).await
    }

    /// Zone `id`'s client certificate policy (JSON as the admin API gave it), or `None` when it has none.
    pub async fn client_certificate_policy(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> = on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT client_certificate_policy FROM zones WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        match text {
            None => Err(StoreError::not_found("zone", id)),
            Some(text) if text.is_empty() => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::Invalid(format!("the stored client certificate policy: {e}"))),
        }
    }

    /// Sets (or with `None` removes) zone `id`'s client certificate policy; audited as a change of the zone.
    pub async fn set_client_certificate_policy(
        &self,
        id: &str,
        policy: Option<&serde_json::Value>,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let text = policy.map(serde_json::Value::to_string).unwrap_or_default();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated =
                sqlx::query("UPDATE zones SET client_certificate_policy = $1, modified_on = $2 WHERE id = $3")
                    .bind(&text)
                    .bind(now())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::not_found("zone", id));
            }
            let detail = if text.is_empty() {
                "client_certificate_policy none".to_owned()
            } else {
                format!("client_certificate_policy {text}")
            };
            commit_write!(self, tx, actor, "update", "zone", id, &detail);
        });
        Ok(())
    }

    /// Changes which of Cloudflare's managed transforms are on in zone `id`: `change` gets the ids on now (for
    /// requests, for responses) and returns the new lists, or why not (an `Invalid` error). Read and written in one
    /// transaction, so that two changes made at once both count; nothing is written when nothing changes.
    pub async fn update_managed_headers(
        &self,
        id: &str,
        actor: &Actor,
        change: impl Fn(&[String], &[String]) -> Result<(Vec<String>, Vec<String>), String>,
    ) -> Result<Zone, StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // A write first: the row's lock on PostgreSQL, the database's write lock on SQLite, so that the read
            // below is not overtaken.
            let locked = sqlx::query("UPDATE zones SET modified_on = modified_on WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if locked.rows_affected() == 0 {
                return Err(StoreError::not_found("zone", id));
            }
            let row = sqlx::query("SELECT managed_request_headers, managed_response_headers FROM zones WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let (request_now, response_now) = (
                managed_headers(&row.try_get::<String, _>("managed_request_headers")?),
                managed_headers(&row.try_get::<String, _>("managed_response_headers")?),
            );
            let (request, response) = change(&request_now, &response_now).map_err(StoreError::Invalid)?;
            if request == request_now && response == response_now {
                tx.rollback().await?;
            } else {
                let request = serde_json::Value::from(request).to_string();
                let response = serde_json::Value::from(response).to_string();
                sqlx::query(
                    "UPDATE zones SET managed_request_headers = $1, managed_response_headers = $2, \
                     modified_on = $3 WHERE id = $4",
                )
                .bind(&request)
                .bind(&response)
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                commit_write!(
                    self,
                    tx,
                    actor,
                    "update",
                    "zone",
                    id,
                    &format!("managed headers {request} {response}")
                );
            }
        });
        self.zone(id).await
    }

    /// Deletes the zone with id `id` and everything configured in it. Its client certificates that have not
    /// expired are revoked first: the account's managed CA issued them and other zones' hostnames trust it, so
    /// their serials stay refused and listed in the CRL (`deleted_zone_certificates`) until they expire.
    pub async fn delete_zone(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        let at = crate::ids::now();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO deleted_zone_certificates (ca_id, serial_number, revoked_on, expires_on) \
                 SELECT ca_id, serial_number, COALESCE(revoked_on, $2), expires_on FROM client_certificates \
                 WHERE zone_id = $1 AND expires_on > $2 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            // Expired ones are refused by every verifier anyway, and leave the CRL: keep the table small.
            sqlx::query("DELETE FROM deleted_zone_certificates WHERE expires_on <= $1")
                .bind(at)
                .execute(&mut *tx)
                .await?;
            let name: Option<String> = sqlx::query_scalar("DELETE FROM zones WHERE id = $1 RETURNING name")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(name) = name else {
                return Err(StoreError::not_found("zone", id));
            };
            commit_write!(self, tx, actor, "delete", "zone", id, &name);
        });
        Ok(())
    }
}

fn zone_from_row<R: Row>(row: &R) -> Result<Zone, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Zone {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        created_on: row.try_get("created_on")?,
        modified_on: row.try_get("modified_on")?,
        url_normalization_scope: row.try_get("url_normalization_scope")?,
        url_normalization_type: row.try_get("url_normalization_type")?,
        managed_request_headers: managed_headers(&row.try_get::<String, _>("managed_request_headers")?),
        managed_response_headers: managed_headers(&row.try_get::<String, _>("managed_response_headers")?),
    })
}

/// Lower-cases and checks a DNS name: 1 to 253 characters, dot-separated labels of 1 to 63 letters, digits and
/// hyphens, no label starting or ending with a hyphen, and no trailing dot.
pub(crate) fn normalize_dns_name(name: &str) -> Result<String, StoreError> {
    let lower = name.trim().to_ascii_lowercase();
    let invalid = |why: &str| Err(StoreError::Invalid(format!("invalid DNS name {name:?}: {why}")));
    if lower.is_empty() {
        return invalid("it is empty");
    }
    if lower.len() > 253 {
        return invalid("longer than 253 characters");
    }
    for label in lower.split('.') {
        if label.is_empty() {
            return invalid("empty label");
        }
        if label.len() > 63 {
            return invalid("a label is longer than 63 characters");
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return invalid(&format!("character {c:?} is not allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid("a label starts or ends with '-'");
        }
    }
    Ok(lower)
}

/// The stored list of managed transforms that are on; anything unreadable counts as none.
pub(crate) fn managed_headers(text: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(text).unwrap_or_default()
}
