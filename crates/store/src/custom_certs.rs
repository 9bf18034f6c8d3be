//! Server certificates the edge presents (Cloudflare's `custom_certificates`), with keys sealed at rest.

use crate::Store;
use crate::db::{RowExt, commit_write, json_strings, on_db};
use crate::error::StoreError;
use crate::ids::{new_id, now};
use crate::model::{Actor, CustomCertificate, NewCustomCertificate};

macro_rules! custom_cert_columns {
    () => {
        "id, zone_id, certificate, sealed_key, hosts, issuer, signature, expires_on, uploaded_on, modified_on"
    };
}

/// Why a write to custom certificate `$id` that changed no row did not: a certificate pack keeps it current (the
/// pack would not notice a change, and its names would go without until its renewal; the pack is removed instead),
/// or there is no such certificate. Checked after the write, inside its transaction, so that on SQLite the
/// transaction writes before it reads.
macro_rules! unchanged_certificate {
    ($tx:ident, $id:expr) => {{
        let pack: Option<String> = sqlx::query_scalar("SELECT id FROM certificate_packs WHERE certificate_id = $1")
            .bind($id)
            .fetch_optional(&mut *$tx)
            .await?;
        match pack {
            Some(pack) => StoreError::Conflict(format!(
                "custom certificate {} is obtained over ACME by certificate pack {pack}: remove the pack \
                 (`portcullis acme remove {pack}`) rather than its certificate",
                $id
            )),
            None => StoreError::not_found("custom_certificate", $id),
        }
    }};
}

impl Store {
    /// Stores a server certificate for zone `zone_id`.
    pub async fn add_custom_certificate(
        &self,
        zone_id: &str,
        new: NewCustomCertificate,
        actor: &Actor,
    ) -> Result<CustomCertificate, StoreError> {
        self.zone(zone_id).await?;
        let at = now();
        let record = CustomCertificate {
            id: new_id(),
            zone_id: zone_id.to_owned(),
            certificate: new.certificate,
            sealed_key: new.sealed_key,
            hosts: new.hosts,
            issuer: new.issuer,
            signature: new.signature,
            expires_on: new.expires_on,
            uploaded_on: at,
            modified_on: at,
        };
        let hosts = serde_json::Value::from(record.hosts.clone()).to_string();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(concat!(
                "INSERT INTO custom_certificates (",
                custom_cert_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(&record.id)
            .bind(&record.zone_id)
            .bind(&record.certificate)
            .bind(&record.sealed_key)
            .bind(&hosts)
            .bind(&record.issuer)
            .bind(&record.signature)
            .bind(record.expires_on)
            .bind(record.uploaded_on)
            .bind(record.modified_on)
            .execute(&mut *tx)
            .await?;
            commit_write!(self, tx, actor, "create", "custom_certificate", &record.id, &hosts);
        });
        Ok(record)
    }

    /// The zone's server certificates, newest first.
    pub async fn list_custom_certificates(&self, zone_id: &str) -> Result<Vec<CustomCertificate>, StoreError> {
        self.zone(zone_id).await?;
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                custom_cert_columns!(),
                " FROM custom_certificates WHERE zone_id = $1 ORDER BY uploaded_on DESC, id"
            ))
            .bind(zone_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(custom_cert_from_row).collect()
        })
    }

    /// The server certificate `id` of zone `zone_id`.
    pub async fn custom_certificate(&self, zone_id: &str, id: &str) -> Result<CustomCertificate, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                custom_cert_columns!(),
                " FROM custom_certificates WHERE zone_id = $1 AND id = $2"
            ))
            .bind(zone_id)
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| StoreError::not_found("custom_certificate", id))?;
            custom_cert_from_row(&row)
        })
    }

    /// Replaces the certificate, key and the facts derived from them of server certificate `id` in one write, as a
    /// renewal does: the edge goes from the old certificate to the new one at its next snapshot, with no moment
    /// without either. The id and `uploaded_on` stay.
    pub async fn replace_custom_certificate(
        &self,
        zone_id: &str,
        id: &str,
        new: NewCustomCertificate,
        actor: &Actor,
    ) -> Result<CustomCertificate, StoreError> {
        let at = now();
        let hosts = serde_json::Value::from(new.hosts.clone()).to_string();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE custom_certificates SET certificate = $3, sealed_key = $4, hosts = $5, issuer = $6, \
                 signature = $7, expires_on = $8, modified_on = $9 WHERE zone_id = $1 AND id = $2 \
                 AND NOT EXISTS (SELECT 1 FROM certificate_packs WHERE certificate_id = $2)",
            )
            .bind(zone_id)
            .bind(id)
            .bind(&new.certificate)
            .bind(&new.sealed_key)
            .bind(&hosts)
            .bind(&new.issuer)
            .bind(&new.signature)
            .bind(new.expires_on)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(unchanged_certificate!(tx, id));
            }
            commit_write!(self, tx, actor, "update", "custom_certificate", id, &hosts);
        });
        self.custom_certificate(zone_id, id).await
    }

    /// Deletes the server certificate `id` of zone `zone_id`.
    pub async fn delete_custom_certificate(&self, zone_id: &str, id: &str, actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query(
                "DELETE FROM custom_certificates WHERE zone_id = $1 AND id = $2 \
                 AND NOT EXISTS (SELECT 1 FROM certificate_packs WHERE certificate_id = $2)",
            )
            .bind(zone_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if deleted == 0 {
                return Err(unchanged_certificate!(tx, id));
            }
            commit_write!(self, tx, actor, "delete", "custom_certificate", id, "");
        });
        Ok(())
    }
}

pub(crate) fn custom_cert_from_row(row: &impl RowExt) -> Result<CustomCertificate, StoreError> {
    let hosts = json_strings(&row.json("hosts")?);
    Ok(CustomCertificate {
        id: row.text("id")?,
        zone_id: row.text("zone_id")?,
        certificate: row.text("certificate")?,
        sealed_key: row.bytes("sealed_key")?,
        hosts,
        issuer: row.text("issuer")?,
        signature: row.text("signature")?,
        expires_on: row.int("expires_on")?,
        uploaded_on: row.int("uploaded_on")?,
        modified_on: row.int("modified_on")?,
    })
}
