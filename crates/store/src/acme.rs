//! Server certificates obtained over ACME (Cloudflare's certificate packs), the TLS-ALPN-01 answers the edge serves
//! while an order is validated, the ACME account of each directory, and leases.
//!
//! This module stores what the ACME manager of the binary decides; it does not speak ACME. A pack's certificate is
//! an ordinary custom certificate (sealed key, same selection by SNI), which the pack keeps current: each issuance
//! replaces it in the same write that marks the pack active, so the edge never lacks one.

use crate::Store;
use crate::db::{RowExt, commit_write, json_strings, on_db};
use crate::error::StoreError;
use crate::ids::{new_id, now};
use crate::model::{Actor, NewCustomCertificate};

/// Most names in one pack (Let's Encrypt allows 100 per certificate; Cloudflare's advanced packs 50).
pub const MAX_PACK_HOSTS: usize = 50;

/// Most packs in a zone.
pub const MAX_PACKS_PER_ZONE: usize = 100;

/// Server certificates ordered and renewed over ACME for some names of a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePack {
    pub id: String,
    pub zone_id: String,
    pub hosts: Vec<String>,
    pub validation_method: String,
    /// `initializing` (not attempted yet), `pending_validation` (being ordered, or waiting to try again), `active`
    /// (a certificate is served).
    pub status: String,
    /// The custom certificate this pack keeps current.
    pub certificate_id: Option<String>,
    pub issued_on: Option<i64>,
    pub expires_on: Option<i64>,
    /// Why the last attempt failed; empty after a success.
    pub validation_errors: Vec<String>,
    /// Failed attempts since the last success.
    pub attempts: i64,
    /// Unix time before which no new attempt starts.
    pub next_attempt_on: i64,
    pub created_on: i64,
    pub modified_on: i64,
}

/// A TLS-ALPN-01 answer: the self-signed certificate the edge presents for `hostname` to a client offering only the
/// `acme-tls/1` protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeChallenge {
    pub hostname: String,
    pub pack_id: String,
    pub certificate: String,
    pub sealed_key: Vec<u8>,
    pub expires_on: i64,
}

/// An HTTP-01 answer: the key authorization the public listener serves at `/.well-known/acme-challenge/<token>` to
/// requests for `hostname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeHttpAnswer {
    pub token: String,
    pub hostname: String,
    pub pack_id: String,
    pub key_authorization: String,
    pub expires_on: i64,
}

/// How a zone's certificate packs are validated over DNS-01 (validation method `txt`): DNS UPDATEs (RFC 2136) of
/// `dns_zone` sent to `server`, signed with a TSIG key whose secret is sealed with the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeDns {
    pub zone_id: String,
    /// `host:port` of the primary name server.
    pub server: String,
    /// The DNS zone the `_acme-challenge` records are written to (the zone's own name unless set).
    pub dns_zone: String,
    pub key_name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    pub sealed_secret: Vec<u8>,
    /// How long to wait after an update before the ACME server is told to look.
    pub propagation_seconds: i64,
    pub modified_on: i64,
}

/// The validation method of packs validated over DNS-01 (Cloudflare's name for it).
pub const DNS_VALIDATION: &str = "txt";

/// The validation method of packs validated over HTTP-01 on the public listener (Cloudflare's name for it).
pub const HTTP_VALIDATION: &str = "http";

/// Deletes a pack's TLS-ALPN-01 and HTTP-01 answers inside the write transaction `$tx`.
macro_rules! withdraw_answers {
    ($tx:ident, $pack_id:expr) => {
        sqlx::query("DELETE FROM acme_challenges WHERE pack_id = $1")
            .bind($pack_id)
            .execute(&mut *$tx)
            .await?;
        sqlx::query("DELETE FROM acme_http_answers WHERE pack_id = $1")
            .bind($pack_id)
            .execute(&mut *$tx)
            .await?;
    };
}

/// On PostgreSQL, takes a key-share lock on zone `$zone_id` first, inside the write transaction `$tx`: the writes
/// below insert rows that reference the zone, and a zone's deletion locks the zone and then the rows that go with
/// it, so taking the zone first keeps the two from waiting on each other. SQLite has one writer at a time.
macro_rules! lock_zone {
    ($store:expr, $tx:ident, $zone_id:expr) => {
        if $store.is_postgres() {
            sqlx::query("SELECT id FROM zones WHERE id = $1 FOR KEY SHARE")
                .bind($zone_id)
                .execute(&mut *$tx)
                .await?;
        }
    };
}

macro_rules! pack_columns {
    () => {
        "id, zone_id, hosts, validation_method, status, certificate_id, issued_on, expires_on, validation_errors, \
         attempts, next_attempt_on, created_on, modified_on"
    };
}

fn pack_from_row(row: &impl RowExt) -> Result<CertificatePack, StoreError> {
    Ok(CertificatePack {
        id: row.text("id")?,
        zone_id: row.text("zone_id")?,
        hosts: json_strings(&row.json("hosts")?),
        validation_method: row.text("validation_method")?,
        status: row.text("status")?,
        certificate_id: row.opt_text("certificate_id")?,
        issued_on: row.opt_int("issued_on")?,
        expires_on: row.opt_int("expires_on")?,
        validation_errors: json_strings(&row.json("validation_errors")?),
        attempts: row.int("attempts")?,
        next_attempt_on: row.int("next_attempt_on")?,
        created_on: row.int("created_on")?,
        modified_on: row.int("modified_on")?,
    })
}

pub(crate) fn http_answer_from_row(row: &impl RowExt) -> Result<AcmeHttpAnswer, StoreError> {
    Ok(AcmeHttpAnswer {
        token: row.text("token")?,
        hostname: row.text("hostname")?,
        pack_id: row.text("pack_id")?,
        key_authorization: row.text("key_authorization")?,
        expires_on: row.int("expires_on")?,
    })
}

pub(crate) fn challenge_from_row(row: &impl RowExt) -> Result<AcmeChallenge, StoreError> {
    Ok(AcmeChallenge {
        hostname: row.text("hostname")?,
        pack_id: row.text("pack_id")?,
        certificate: row.text("certificate")?,
        sealed_key: row.bytes("sealed_key")?,
        expires_on: row.int("expires_on")?,
    })
}

impl Store {
    /// Adds a pack for `hosts` (lower-case, already checked against the zone by the caller). A name may be in one
    /// pack only, since two orders for it would fight over its TLS-ALPN-01 answer.
    pub async fn add_certificate_pack(
        &self,
        zone_id: &str,
        hosts: &[String],
        validation_method: &str,
        actor: &Actor,
    ) -> Result<CertificatePack, StoreError> {
        if hosts.is_empty() || hosts.len() > MAX_PACK_HOSTS {
            return Err(StoreError::Invalid(format!(
                "a certificate pack has 1 to {MAX_PACK_HOSTS} hosts, not {}",
                hosts.len()
            )));
        }
        self.zone(zone_id).await?;
        let at = now();
        let record = CertificatePack {
            id: new_id(),
            zone_id: zone_id.to_owned(),
            hosts: hosts.to_vec(),
            validation_method: validation_method.to_owned(),
            status: "initializing".to_owned(),
            certificate_id: None,
            issued_on: None,
            expires_on: None,
            validation_errors: Vec::new(),
            attempts: 0,
            next_attempt_on: 0,
            created_on: at,
            modified_on: at,
        };
        let hosts_json = serde_json::Value::from(record.hosts.clone()).to_string();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            lock_zone!(self, tx, zone_id);
            // Names are unique across zones, so two orders anywhere must not both pass the check below: the
            // generation row, which every write updates, serializes them (a row lock on PostgreSQL; on SQLite this
            // first write takes the database's write lock). It also orders this against removing DNS-01 settings.
            sqlx::query("UPDATE generation SET value = value WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            if validation_method == DNS_VALIDATION {
                let configured: Option<String> = sqlx::query_scalar("SELECT zone_id FROM acme_dns WHERE zone_id = $1")
                    .bind(zone_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if configured.is_none() {
                    return Err(StoreError::Invalid(
                        "validation over DNS (txt) needs the zone's DNS update settings first".to_owned(),
                    ));
                }
            }
            let rows = sqlx::query("SELECT id, zone_id, hosts FROM certificate_packs")
                .fetch_all(&mut *tx)
                .await?;
            let mut in_zone = 0;
            for row in &rows {
                if row.text("zone_id")? == zone_id {
                    in_zone += 1;
                }
                let taken = json_strings(&row.json("hosts")?);
                if let Some(host) = hosts.iter().find(|h| taken.contains(h)) {
                    return Err(StoreError::Conflict(format!(
                        "{host} is already in certificate pack {}",
                        row.text("id")?
                    )));
                }
            }
            if in_zone >= MAX_PACKS_PER_ZONE {
                return Err(StoreError::LimitReached {
                    code: 1400,
                    message: format!("a zone has at most {MAX_PACKS_PER_ZONE} certificate packs"),
                });
            }
            sqlx::query(concat!(
                "INSERT INTO certificate_packs (",
                pack_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL, '[]', 0, 0, $6, $6)"
            ))
            .bind(&record.id)
            .bind(&record.zone_id)
            .bind(&hosts_json)
            .bind(&record.validation_method)
            .bind(&record.status)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            commit_write!(self, tx, actor, "create", "certificate_pack", &record.id, &hosts_json);
        });
        Ok(record)
    }

    /// The zone's packs, oldest first.
    pub async fn list_certificate_packs(&self, zone_id: &str) -> Result<Vec<CertificatePack>, StoreError> {
        self.zone(zone_id).await?;
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                pack_columns!(),
                " FROM certificate_packs WHERE zone_id = $1 ORDER BY created_on, id"
            ))
            .bind(zone_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(pack_from_row).collect()
        })
    }

    /// Every zone's packs, for the ACME manager.
    pub async fn all_certificate_packs(&self) -> Result<Vec<CertificatePack>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                pack_columns!(),
                " FROM certificate_packs ORDER BY created_on, id"
            ))
            .fetch_all(pool)
            .await?;
            rows.iter().map(pack_from_row).collect()
        })
    }

    /// Pack `id` of zone `zone_id`.
    pub async fn certificate_pack(&self, zone_id: &str, id: &str) -> Result<CertificatePack, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                pack_columns!(),
                " FROM certificate_packs WHERE zone_id = $1 AND id = $2"
            ))
            .bind(zone_id)
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| StoreError::not_found("certificate_pack", id))?;
            pack_from_row(&row)
        })
    }

    /// Deletes a pack with its certificate and its pending answers, in one write: the edge stops presenting the
    /// certificate at its next snapshot (hostnames fall back to another certificate that covers them).
    pub async fn delete_certificate_pack(&self, zone_id: &str, id: &str, actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // The pack's row first, as every other write to a pack takes it (its answers go by cascade), returning
            // its certificate: an issuance running at the same time either finishes before (its certificate is the
            // one returned) or finds no pack.
            let certificate_id: Option<Option<String>> = sqlx::query_scalar(
                "DELETE FROM certificate_packs WHERE zone_id = $1 AND id = $2 RETURNING certificate_id",
            )
            .bind(zone_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(certificate_id) = certificate_id else {
                return Err(StoreError::not_found("certificate_pack", id));
            };
            if let Some(cert) = &certificate_id {
                sqlx::query("DELETE FROM custom_certificates WHERE zone_id = $1 AND id = $2")
                    .bind(zone_id)
                    .bind(cert)
                    .execute(&mut *tx)
                    .await?;
            }
            commit_write!(
                self,
                tx,
                actor,
                "delete",
                "certificate_pack",
                id,
                certificate_id.unwrap_or_default()
            );
        });
        Ok(())
    }

    /// Replaces the answers of pack `pack_id` with `challenges` (TLS-ALPN-01) and `http` (HTTP-01) (none: withdraws
    /// them) and marks an unissued pack `pending_validation`. Returns the store generation the write made, so that
    /// the caller can wait for the edge's snapshot to include the answers before telling the ACME server to look.
    pub async fn set_acme_challenges(
        &self,
        pack_id: &str,
        challenges: &[AcmeChallenge],
        http: &[AcmeHttpAnswer],
    ) -> Result<u64, StoreError> {
        let at = now();
        let generation = on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE certificate_packs SET status = CASE WHEN status = 'initializing' THEN 'pending_validation' \
                 ELSE status END, modified_on = $2 WHERE id = $1",
            )
            .bind(pack_id)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::not_found("certificate_pack", pack_id));
            }
            withdraw_answers!(tx, pack_id);
            for c in challenges {
                sqlx::query(
                    "INSERT INTO acme_challenges (hostname, pack_id, certificate, sealed_key, expires_on) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&c.hostname)
                .bind(pack_id)
                .bind(&c.certificate)
                .bind(&c.sealed_key)
                .bind(c.expires_on)
                .execute(&mut *tx)
                .await?;
            }
            for a in http {
                sqlx::query(
                    "INSERT INTO acme_http_answers (token, hostname, pack_id, key_authorization, expires_on) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token) DO UPDATE SET hostname = excluded.hostname, \
                     pack_id = excluded.pack_id, key_authorization = excluded.key_authorization, \
                     expires_on = excluded.expires_on",
                )
                .bind(&a.token)
                .bind(&a.hostname)
                .bind(pack_id)
                .bind(&a.key_authorization)
                .bind(a.expires_on)
                .execute(&mut *tx)
                .await?;
            }
            let names: Vec<&str> = challenges
                .iter()
                .map(|c| c.hostname.as_str())
                .chain(http.iter().map(|a| a.hostname.as_str()))
                .collect();
            commit_write!(
                self,
                tx,
                Actor::system(),
                "update",
                "acme_challenges",
                pack_id,
                names.join(" ")
            )
        });
        Ok(u64::try_from(generation).unwrap_or(0))
    }

    /// Clears a pack's failures so that the next attempt starts now (Cloudflare's "restart validation").
    pub async fn retry_certificate_pack(&self, zone_id: &str, id: &str, actor: &Actor) -> Result<(), StoreError> {
        let at = now();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE certificate_packs SET attempts = 0, next_attempt_on = 0, modified_on = $3 \
                 WHERE zone_id = $1 AND id = $2",
            )
            .bind(zone_id)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::not_found("certificate_pack", id));
            }
            commit_write!(self, tx, actor, "update", "certificate_pack", id, "retry");
        });
        Ok(())
    }

    /// Records a failed attempt: its answers withdrawn, `errors` kept for the API, the next attempt not before
    /// `next_attempt_on`.
    pub async fn certificate_pack_failed(
        &self,
        pack_id: &str,
        errors: &[String],
        next_attempt_on: i64,
    ) -> Result<(), StoreError> {
        let at = now();
        let errors_json = serde_json::Value::from(errors.to_vec()).to_string();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE certificate_packs SET status = CASE WHEN status = 'initializing' THEN 'pending_validation' \
                 ELSE status END, validation_errors = $2, attempts = attempts + 1, next_attempt_on = $3, \
                 modified_on = $4 WHERE id = $1",
            )
            .bind(pack_id)
            .bind(&errors_json)
            .bind(next_attempt_on)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::not_found("certificate_pack", pack_id));
            }
            withdraw_answers!(tx, pack_id);
            commit_write!(
                self,
                tx,
                Actor::system(),
                "update",
                "certificate_pack",
                pack_id,
                &errors_json
            );
        });
        Ok(())
    }

    /// Records an issuance in one write: the pack's certificate is replaced (or created, the first time, or if it
    /// was removed by hand), its answers withdrawn, and the pack marked `active`. A pack deleted meanwhile stays
    /// deleted and its certificate is not stored.
    pub async fn certificate_pack_issued(
        &self,
        pack_id: &str,
        new: NewCustomCertificate,
        issued_on: i64,
    ) -> Result<CertificatePack, StoreError> {
        let at = now();
        let hosts = serde_json::Value::from(new.hosts.clone()).to_string();
        let zone_id = on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let zone: Option<String> = sqlx::query_scalar("SELECT zone_id FROM certificate_packs WHERE id = $1")
                .bind(pack_id)
                .fetch_optional(&mut *tx)
                .await?;
            let zone = zone.ok_or_else(|| StoreError::not_found("certificate_pack", pack_id))?;
            lock_zone!(self, tx, &zone);
            // Then the pack's row, locked until the end (a deletion waits, then finds the certificate this stores).
            let row = sqlx::query(
                "UPDATE certificate_packs SET modified_on = $2 WHERE id = $1 RETURNING zone_id, certificate_id",
            )
            .bind(pack_id)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::not_found("certificate_pack", pack_id))?;
            let zone_id = row.text("zone_id")?;
            let mut certificate_id = row.opt_text("certificate_id")?;
            if let Some(id) = &certificate_id {
                let replaced = sqlx::query(
                    "UPDATE custom_certificates SET certificate = $3, sealed_key = $4, hosts = $5, issuer = $6, \
                     signature = $7, expires_on = $8, modified_on = $9 WHERE zone_id = $1 AND id = $2",
                )
                .bind(&zone_id)
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
                if replaced == 0 {
                    certificate_id = None;
                }
            }
            let certificate_id = match certificate_id {
                Some(id) => id,
                None => {
                    let id = new_id();
                    sqlx::query(
                        "INSERT INTO custom_certificates (id, zone_id, certificate, sealed_key, hosts, issuer, \
                         signature, expires_on, uploaded_on, modified_on) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                    )
                    .bind(&id)
                    .bind(&zone_id)
                    .bind(&new.certificate)
                    .bind(&new.sealed_key)
                    .bind(&hosts)
                    .bind(&new.issuer)
                    .bind(&new.signature)
                    .bind(new.expires_on)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    id
                }
            };
            sqlx::query(
                "UPDATE certificate_packs SET status = 'active', certificate_id = $2, issued_on = $3, \
                 expires_on = $4, validation_errors = '[]', attempts = 0, next_attempt_on = 0, modified_on = $5 \
                 WHERE id = $1",
            )
            .bind(pack_id)
            .bind(&certificate_id)
            .bind(issued_on)
            .bind(new.expires_on)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            withdraw_answers!(tx, pack_id);
            commit_write!(
                self,
                tx,
                Actor::system(),
                "update",
                "certificate_pack",
                pack_id,
                &certificate_id
            );
            zone_id
        });
        self.certificate_pack(&zone_id, pack_id).await
    }

    /// The sealed credentials of the ACME account at `directory`, if one was made.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<Vec<u8>>, StoreError> {
        on_db!(&self.db, |pool| {
            Ok(
                sqlx::query_scalar("SELECT sealed_credentials FROM acme_accounts WHERE directory = $1")
                    .bind(directory)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// Keeps the sealed credentials of a new ACME account at `directory`. If another node stored one first, that
    /// one stays and is returned, so that a fleet uses one account.
    pub async fn save_acme_account(&self, directory: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO acme_accounts (directory, sealed_credentials, created_on) VALUES ($1, $2, $3) \
                 ON CONFLICT (directory) DO NOTHING",
            )
            .bind(directory)
            .bind(sealed)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                let kept: Vec<u8> =
                    sqlx::query_scalar("SELECT sealed_credentials FROM acme_accounts WHERE directory = $1")
                        .bind(directory)
                        .fetch_one(&mut *tx)
                        .await?;
                tx.commit().await?;
                return Ok(kept);
            }
            commit_write!(self, tx, Actor::system(), "create", "acme_account", directory, "");
        });
        Ok(sealed.to_vec())
    }

    /// The zone's DNS-01 settings, if any.
    pub async fn acme_dns(&self, zone_id: &str) -> Result<Option<AcmeDns>, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query(
                "SELECT zone_id, server, dns_zone, key_name, algorithm, sealed_secret, propagation_seconds, \
                 modified_on FROM acme_dns WHERE zone_id = $1",
            )
            .bind(zone_id)
            .fetch_optional(pool)
            .await?;
            Ok(row
                .map(|row| -> Result<AcmeDns, sqlx::Error> {
                    Ok(AcmeDns {
                        zone_id: row.text("zone_id")?,
                        server: row.text("server")?,
                        dns_zone: row.text("dns_zone")?,
                        key_name: row.text("key_name")?,
                        algorithm: row.text("algorithm")?,
                        sealed_secret: row.bytes("sealed_secret")?,
                        propagation_seconds: row.int("propagation_seconds")?,
                        modified_on: row.int("modified_on")?,
                    })
                })
                .transpose()?)
        })
    }

    /// Sets (or replaces) the zone's DNS-01 settings, checked by the caller. The audit log records the server and
    /// the key's name, never its secret.
    pub async fn set_acme_dns(&self, settings: &AcmeDns, actor: &Actor) -> Result<AcmeDns, StoreError> {
        self.zone(&settings.zone_id).await?;
        let at = now();
        let detail = format!(
            "{} zone {} key {} ({})",
            settings.server, settings.dns_zone, settings.key_name, settings.algorithm
        );
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            lock_zone!(self, tx, &settings.zone_id);
            // The generation row before the settings' row, as delete_acme_dns takes them, so that the two cannot wait
            // on each other.
            sqlx::query("UPDATE generation SET value = value WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO acme_dns (zone_id, server, dns_zone, key_name, algorithm, sealed_secret, \
                 propagation_seconds, modified_on) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (zone_id) DO UPDATE SET server = excluded.server, dns_zone = excluded.dns_zone, \
                 key_name = excluded.key_name, algorithm = excluded.algorithm, \
                 sealed_secret = excluded.sealed_secret, propagation_seconds = excluded.propagation_seconds, \
                 modified_on = excluded.modified_on",
            )
            .bind(&settings.zone_id)
            .bind(&settings.server)
            .bind(&settings.dns_zone)
            .bind(&settings.key_name)
            .bind(&settings.algorithm)
            .bind(&settings.sealed_secret)
            .bind(settings.propagation_seconds)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            commit_write!(self, tx, actor, "update", "acme_dns", &settings.zone_id, &detail);
        });
        Ok(AcmeDns {
            modified_on: at,
            ..settings.clone()
        })
    }

    /// Removes the zone's DNS-01 settings; refused while a pack of the zone is validated over DNS, since its
    /// renewals would then fail.
    pub async fn delete_acme_dns(&self, zone_id: &str, actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // Ordered against orders (see add_certificate_pack) by the generation row.
            sqlx::query("UPDATE generation SET value = value WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            let using: Option<String> = sqlx::query_scalar(
                "SELECT id FROM certificate_packs WHERE zone_id = $1 AND validation_method = $2 LIMIT 1",
            )
            .bind(zone_id)
            .bind(DNS_VALIDATION)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(pack) = using {
                return Err(StoreError::Conflict(format!(
                    "certificate pack {pack} is validated over DNS with these settings: remove it first"
                )));
            }
            let deleted = sqlx::query("DELETE FROM acme_dns WHERE zone_id = $1")
                .bind(zone_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::not_found("acme_dns", zone_id));
            }
            commit_write!(self, tx, actor, "delete", "acme_dns", zone_id, "");
        });
        Ok(())
    }

    /// Takes or extends lease `name` for `holder` until `ttl_secs` from now. True when `holder` has it: it was free,
    /// had run out, or was already `holder`'s. Not a change of configuration, so nothing is announced.
    pub async fn try_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Result<bool, StoreError> {
        let at = now();
        on_db!(&self.db, |pool| {
            let taken = sqlx::query(
                "INSERT INTO leases (name, holder, expires_on) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_on = excluded.expires_on \
                 WHERE leases.holder = excluded.holder OR leases.expires_on < $4",
            )
            .bind(name)
            .bind(holder)
            .bind(at + ttl_secs)
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(taken == 1)
        })
    }

    /// Gives lease `name` up, if `holder` has it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await?;
            Ok(())
        })
    }
}
