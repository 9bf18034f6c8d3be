//! Certificate authorities: the managed CAs (with rotation, and requests for CAs the operator's root signs),
//! bring-your-own CAs (`mtls_certificates`, with CRLs), and hostname associations, which say which CAs guard which
//! hostnames.

use portcullis_pki::OcspPolicy;

use crate::Store;
use crate::db::{RowExt, commit_write, on_db};
use crate::error::StoreError;
use crate::hostnames::check_hostname;
use crate::ids::{new_id, now};
use crate::model::{
    Actor, CaRef, HostnameAssociation, ManagedCa, ManagedCaRequest, ManagedCaStatus, MtlsCertificate, MtlsRevocation,
    NewManagedCa, NewManagedCaRequest, NewMtlsCertificate, NewMtlsRevocation,
};

/// The longest grace after a CRL's `nextUpdate` that [`Store::set_mtls_crl_grace`] takes: 30 days.
pub const MAX_CRL_GRACE_SECONDS: i64 = 30 * 86_400;

/// Most certificates one uploaded CA may have revoked at the edge; past that, its CRL is the way.
pub const MAX_REVOCATIONS_PER_CA: i64 = 10_000;

macro_rules! revocation_columns {
    () => {
        "id, mtls_certificate_id, serial_number, issuer_der, issuer, fingerprint_sha256, note, created_on"
    };
}

macro_rules! managed_ca_columns {
    () => {
        "id, account_id, name, certificate, sealed_key, key_type, status, crl_number, created_on, retired_on, chain"
    };
}

/// Active first, then still-trusted, then retired; newest first within each. Creation times are whole seconds, so
/// the status is what makes "the current CA first" deterministic across a rotation within one second.
macro_rules! managed_ca_order {
    () => {
        "CASE status WHEN 'active' THEN 0 WHEN 'trusted' THEN 1 ELSE 2 END, created_on DESC, id"
    };
}

macro_rules! mtls_columns {
    () => {
        "id, account_id, name, ca, certificates, issuer, serial_number, signature, expires_on, uploaded_on, \
         updated_at, crl, crl_updated_on, sealed_key, crl_urls, crl_fetched_on, crl_fetch_error, ocsp_check, \
         ocsp_responder, crl_grace_seconds"
    };
}

/// Most managed CA requests that may wait for a certificate at once.
pub const MAX_MANAGED_CA_REQUESTS: i64 = 10;

/// Most hostnames one association call may name; keeps a single request's work bounded.
pub const MAX_ASSOCIATED_HOSTNAMES: usize = 1_000;

impl Store {
    /// Stores a new managed CA and makes it the active one. The previously active CA stays trusted (rotation), so
    /// certificates it issued keep working until it is retired.
    pub async fn add_managed_ca(&self, ca: NewManagedCa, actor: &Actor) -> Result<ManagedCa, StoreError> {
        self.insert_managed_ca(ca, None, actor).await
    }

    /// Makes request `request_id` a managed CA with the certificate its signer gave (`ca`, same id), in one
    /// transaction: the request is gone and the CA active, or nothing changed.
    pub async fn install_managed_ca(
        &self,
        request_id: &str,
        ca: NewManagedCa,
        actor: &Actor,
    ) -> Result<ManagedCa, StoreError> {
        if ca.id != request_id {
            return Err(StoreError::Invalid(format!(
                "managed CA {:?} is not request {request_id:?}",
                ca.id
            )));
        }
        self.insert_managed_ca(ca, Some(request_id), actor).await
    }

    async fn insert_managed_ca(
        &self,
        ca: NewManagedCa,
        request_id: Option<&str>,
        actor: &Actor,
    ) -> Result<ManagedCa, StoreError> {
        let account = self.account().await?;
        let record = ManagedCa {
            id: ca.id,
            account_id: account.id,
            name: ca.name,
            certificate: ca.certificate,
            sealed_key: ca.sealed_key,
            key_type: ca.key_type,
            status: ManagedCaStatus::Active,
            crl_number: 0,
            created_on: now(),
            retired_on: None,
            chain: ca.chain,
        };
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // Lock the account row: concurrent rotations and installs must not leave two CAs active (PostgreSQL;
            // SQLite serialises writers anyway).
            sqlx::query("UPDATE accounts SET name = name WHERE id = $1")
                .bind(&record.account_id)
                .execute(&mut *tx)
                .await?;
            if let Some(id) = request_id {
                let gone = sqlx::query("DELETE FROM managed_ca_requests WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if gone.rows_affected() == 0 {
                    return Err(StoreError::not_found("managed CA request", id));
                }
            }
            sqlx::query("UPDATE managed_cas SET status = 'trusted' WHERE status = 'active'")
                .execute(&mut *tx)
                .await?;
            sqlx::query(concat!(
                "INSERT INTO managed_cas (",
                managed_ca_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(&record.id)
            .bind(&record.account_id)
            .bind(&record.name)
            .bind(&record.certificate)
            .bind(&record.sealed_key)
            .bind(&record.key_type)
            .bind(record.status.as_str())
            .bind(record.crl_number)
            .bind(record.created_on)
            .bind(record.retired_on)
            .bind(&record.chain)
            .execute(&mut *tx)
            .await?;
            let action = if request_id.is_some() { "install" } else { "create" };
            commit_write!(self, tx, actor, action, "managed_ca", &record.id, &record.name);
        });
        Ok(record)
    }

    /// Stores a managed CA that waits for the operator's CA to sign its CSR. At most
    /// [`MAX_MANAGED_CA_REQUESTS`] wait at once.
    pub async fn add_managed_ca_request(
        &self,
        request: NewManagedCaRequest,
        actor: &Actor,
    ) -> Result<ManagedCaRequest, StoreError> {
        let account = self.account().await?;
        let record = ManagedCaRequest {
            id: request.id,
            account_id: account.id,
            name: request.name,
            csr: request.csr,
            sealed_key: request.sealed_key,
            key_type: request.key_type,
            created_on: now(),
        };
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // Lock the account row so that concurrent requests cannot overrun the limit.
            sqlx::query("UPDATE accounts SET name = name WHERE id = $1")
                .bind(&record.account_id)
                .execute(&mut *tx)
                .await?;
            let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM managed_ca_requests")
                .fetch_one(&mut *tx)
                .await?;
            if waiting >= MAX_MANAGED_CA_REQUESTS {
                return Err(StoreError::Conflict(format!(
                    "{waiting} managed CA requests already wait for a certificate (at most \
                     {MAX_MANAGED_CA_REQUESTS}); install or delete one first"
                )));
            }
            sqlx::query(
                "INSERT INTO managed_ca_requests (id, account_id, name, csr, sealed_key, key_type, created_on) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&record.id)
            .bind(&record.account_id)
            .bind(&record.name)
            .bind(&record.csr)
            .bind(&record.sealed_key)
            .bind(&record.key_type)
            .bind(record.created_on)
            .execute(&mut *tx)
            .await?;
            commit_write!(
                self,
                tx,
                actor,
                "create",
                "managed_ca_request",
                &record.id,
                &record.name
            );
        });
        Ok(record)
    }

    /// The managed CAs waiting for a certificate, newest first.
    pub async fn managed_ca_requests(&self) -> Result<Vec<ManagedCaRequest>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT id, account_id, name, csr, sealed_key, key_type, created_on FROM managed_ca_requests \
                 ORDER BY created_on DESC, id",
            )
            .fetch_all(pool)
            .await?;
            rows.iter().map(request_from_row).collect()
        })
    }

    /// One managed CA request.
    pub async fn managed_ca_request(&self, id: &str) -> Result<ManagedCaRequest, StoreError> {
        self.managed_ca_requests()
            .await?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| StoreError::not_found("managed CA request", id))
    }

    /// Deletes a request and its key: a certificate signed for it can no longer be installed.
    pub async fn delete_managed_ca_request(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let gone = sqlx::query("DELETE FROM managed_ca_requests WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if gone.rows_affected() == 0 {
                return Err(StoreError::not_found("managed CA request", id));
            }
            commit_write!(self, tx, actor, "delete", "managed_ca_request", id, "");
        });
        Ok(())
    }

    /// All managed CAs: the active one first, then those still trusted, then retired ones, newest first in each.
    pub async fn managed_cas(&self) -> Result<Vec<ManagedCa>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                managed_ca_columns!(),
                " FROM managed_cas ORDER BY ",
                managed_ca_order!()
            ))
            .fetch_all(pool)
            .await?;
            rows.iter().map(managed_ca_from_row).collect()
        })
    }

    /// The managed CA that issues new certificates, if one has been created.
    pub async fn active_managed_ca(&self) -> Result<Option<ManagedCa>, StoreError> {
        Ok(self
            .managed_cas()
            .await?
            .into_iter()
            .find(|ca| ca.status == ManagedCaStatus::Active))
    }

    /// Stops trusting a managed CA that a rotation replaced. The active CA cannot be retired.
    pub async fn retire_managed_ca(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM managed_cas WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            match status.as_deref() {
                None => return Err(StoreError::not_found("managed CA", id)),
                Some("active") => {
                    return Err(StoreError::Conflict(
                        "the active managed CA cannot be retired; rotate to a new CA first".to_owned(),
                    ));
                }
                Some("retired") => {
                    return Err(StoreError::Conflict(format!("managed CA {id:?} is already retired")));
                }
                Some(_) => {}
            }
            sqlx::query("UPDATE managed_cas SET status = 'retired', retired_on = $1 WHERE id = $2")
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            commit_write!(self, tx, actor, "retire", "managed_ca", id, "");
        });
        Ok(())
    }

    /// Takes the next CRL number of a managed CA. CRL numbers only grow, as RFC 5280 requires; taking one is not a
    /// configuration change, so it bumps no generation.
    pub async fn next_crl_number(&self, ca_id: &str) -> Result<i64, StoreError> {
        on_db!(&self.db, |pool| {
            let number: Option<i64> = sqlx::query_scalar(
                "UPDATE managed_cas SET crl_number = crl_number + 1 WHERE id = $1 RETURNING crl_number",
            )
            .bind(ca_id)
            .fetch_optional(pool)
            .await?;
            number.ok_or_else(|| StoreError::not_found("managed CA", ca_id))
        })
    }

    /// Stores a bring-your-own CA. `limit` caps how many the account may hold (Cloudflare's error 1489 when hit).
    pub async fn add_mtls_certificate(
        &self,
        new: NewMtlsCertificate,
        limit: u32,
        actor: &Actor,
    ) -> Result<MtlsCertificate, StoreError> {
        let account = self.account().await?;
        let at = now();
        let record = MtlsCertificate {
            id: new_id(),
            account_id: account.id,
            name: new.name,
            ca: new.ca,
            certificates: new.certificates,
            issuer: new.issuer,
            serial_number: new.serial_number,
            signature: new.signature,
            expires_on: new.expires_on,
            uploaded_on: at,
            updated_at: at,
            crl: None,
            crl_updated_on: None,
            sealed_key: new.sealed_key,
            crl_urls: Vec::new(),
            crl_fetched_on: None,
            crl_fetch_error: None,
            ocsp: None,
            crl_grace_seconds: None,
        };
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // Lock the account row so that two uploads at once cannot both pass the limit (PostgreSQL; SQLite
            // serialises writers anyway).
            sqlx::query("UPDATE accounts SET name = name WHERE id = $1")
                .bind(&record.account_id)
                .execute(&mut *tx)
                .await?;
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mtls_certificates")
                .fetch_one(&mut *tx)
                .await?;
            if count >= i64::from(limit) {
                return Err(StoreError::LimitReached {
                    code: 1489,
                    message: "Hit maximum CA cert allocation.".into(),
                });
            }
            sqlx::query(concat!(
                "INSERT INTO mtls_certificates (",
                mtls_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
            ))
            .bind(&record.id)
            .bind(&record.account_id)
            .bind(&record.name)
            .bind(i64::from(record.ca))
            .bind(&record.certificates)
            .bind(&record.issuer)
            .bind(&record.serial_number)
            .bind(&record.signature)
            .bind(record.expires_on)
            .bind(record.uploaded_on)
            .bind(record.updated_at)
            .bind(&record.crl)
            .bind(record.crl_updated_on)
            .bind(&record.sealed_key)
            .bind(record.crl_urls.join(" "))
            .bind(record.crl_fetched_on)
            .bind(&record.crl_fetch_error)
            .bind(ocsp_check_text(record.ocsp.as_ref()))
            .bind(record.ocsp.as_ref().and_then(|p| p.responder.as_deref()))
            .bind(record.crl_grace_seconds)
            .execute(&mut *tx)
            .await?;
            commit_write!(self, tx, actor, "create", "mtls_certificate", &record.id, &record.name);
        });
        Ok(record)
    }

    /// All bring-your-own CAs, newest first.
    pub async fn list_mtls_certificates(&self) -> Result<Vec<MtlsCertificate>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                mtls_columns!(),
                " FROM mtls_certificates ORDER BY uploaded_on DESC, id"
            ))
            .fetch_all(pool)
            .await?;
            rows.iter().map(mtls_from_row).collect()
        })
    }

    /// The bring-your-own CA `id`.
    pub async fn mtls_certificate(&self, id: &str) -> Result<MtlsCertificate, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                mtls_columns!(),
                " FROM mtls_certificates WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| StoreError::not_found("mtls_certificate", id))?;
            mtls_from_row(&row)
        })
    }

    /// Deletes a bring-your-own CA; refused while any hostname is associated with it.
    pub async fn delete_mtls_certificate(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // On PostgreSQL the row lock orders this delete with an association being written for the same CA
            // (which takes a share lock on it), so that neither commits unseen by the other. SQLite has one
            // writer: an association committed since this transaction's read makes its delete a conflict.
            if self.is_postgres() {
                sqlx::query("SELECT id FROM mtls_certificates WHERE id = $1 FOR UPDATE")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            let in_use: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hostname_associations WHERE ca_ref = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            if in_use > 0 {
                return Err(StoreError::Conflict(format!(
                    "mtls_certificate {id:?} is associated with {in_use} hostname(s); remove the associations first"
                )));
            }
            // An origin client certificate named in a hostname's settings (`origin_client_certificate`).
            let pattern = format!("%\"origin_client_certificate\":\"{id}\"%");
            let used_by: Option<String> =
                sqlx::query_scalar("SELECT hostname FROM hostnames WHERE settings LIKE $1 ORDER BY hostname LIMIT 1")
                    .bind(&pattern)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(host) = used_by {
                return Err(StoreError::Conflict(format!(
                    "mtls_certificate {id:?} is the origin client certificate of {host}; change that hostname first"
                )));
            }
            let deleted = sqlx::query("DELETE FROM mtls_certificates WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::not_found("mtls_certificate", id));
            }
            commit_write!(self, tx, actor, "delete", "mtls_certificate", id, "");
        });
        Ok(())
    }

    /// Sets (replaces) the CRL of a bring-your-own CA. The caller has checked its signature against the CA.
    pub async fn set_mtls_certificate_crl(&self, id: &str, crl_der: &[u8], actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let at = now();
            let updated = sqlx::query(
                "UPDATE mtls_certificates SET crl = $1, crl_updated_on = $2, updated_at = $2, crl_fetched_on = NULL \
                 WHERE id = $3",
            )
            .bind(crl_der)
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::not_found("mtls_certificate", id));
            }
            commit_write!(self, tx, actor, "set_crl", "mtls_certificate", id, "");
        });
        Ok(())
    }

    /// Sets the URLs the CRLs of a bring-your-own CA are fetched from (none: stop fetching; the last CRL stays).
    /// The caller has checked the URLs.
    pub async fn set_mtls_crl_urls(&self, id: &str, urls: &[String], actor: &Actor) -> Result<(), StoreError> {
        let joined = urls.join(" ");
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE mtls_certificates SET crl_urls = $1, crl_fetch_error = NULL, crl_fetched_on = NULL, \
                 updated_at = $2 WHERE id = $3 AND ca = 1",
            )
            .bind(&joined)
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::not_found("uploaded CA", id));
            }
            commit_write!(self, tx, actor, "set_crl_urls", "mtls_certificate", id, &joined);
        });
        Ok(())
    }

    /// Revokes, at the edge, the certificate `revocation` names that the uploaded CA `ca_id` issued. Revoking it
    /// again returns the existing revocation unchanged.
    pub async fn add_mtls_revocation(
        &self,
        ca_id: &str,
        revocation: &NewMtlsRevocation,
        actor: &Actor,
    ) -> Result<MtlsRevocation, StoreError> {
        let serial = normal_serial(&revocation.serial_number)?;
        let issuer_der = revocation.issuer_der.to_ascii_lowercase();
        if issuer_der.len() > 2 * 4096
            || !issuer_der.len().is_multiple_of(2)
            || !issuer_der.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(StoreError::Invalid(
                "issuer_der must be hex, at most 4,096 bytes".into(),
            ));
        }
        let fingerprint = revocation.fingerprint_sha256.to_ascii_lowercase();
        if !(fingerprint.is_empty() || fingerprint.len() == 64 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(StoreError::Invalid("fingerprint_sha256 must be 64 hex digits".into()));
        }
        let record = MtlsRevocation {
            id: new_id(),
            mtls_certificate_id: ca_id.to_owned(),
            serial_number: serial.clone(),
            issuer_der: issuer_der.clone(),
            issuer: revocation.issuer.clone(),
            fingerprint_sha256: fingerprint,
            note: revocation.note.clone(),
            created_on: now(),
        };
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // A write to the CA's row first: it must exist and be a CA, and the row lock (PostgreSQL) or the write
            // lock (SQLite) keeps it from being deleted before this commits.
            let touched = sqlx::query("UPDATE mtls_certificates SET updated_at = $1 WHERE id = $2 AND ca = 1")
                .bind(now())
                .bind(ca_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if touched == 0 {
                return Err(StoreError::not_found("uploaded CA", ca_id));
            }
            if let Some(row) = sqlx::query(concat!(
                "SELECT ",
                revocation_columns!(),
                " FROM mtls_certificate_revocations \
                 WHERE mtls_certificate_id = $1 AND serial_number = $2 AND issuer_der = $3"
            ))
            .bind(ca_id)
            .bind(&serial)
            .bind(&issuer_der)
            .fetch_optional(&mut *tx)
            .await?
            {
                return revocation_from_row(&row);
            }
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM mtls_certificate_revocations WHERE mtls_certificate_id = $1")
                    .bind(ca_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if count >= MAX_REVOCATIONS_PER_CA {
                return Err(StoreError::Invalid(format!(
                    "uploaded CA {ca_id:?} already has {MAX_REVOCATIONS_PER_CA} certificates revoked at the edge, the \
                     most it may have: publish a CRL (`crl_urls`) for more"
                )));
            }
            sqlx::query(
                "INSERT INTO mtls_certificate_revocations (id, mtls_certificate_id, serial_number, issuer_der, issuer, \
                 fingerprint_sha256, note, created_on) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&record.id)
            .bind(ca_id)
            .bind(&record.serial_number)
            .bind(&record.issuer_der)
            .bind(&record.issuer)
            .bind(&record.fingerprint_sha256)
            .bind(&record.note)
            .bind(record.created_on)
            .execute(&mut *tx)
            .await?;
            commit_write!(self, tx, actor, "revoke", "mtls_certificate", ca_id, &serial);
        });
        Ok(record)
    }

    /// The certificates revoked at the edge under the uploaded CA `ca_id`, oldest first.
    pub async fn mtls_revocations(&self, ca_id: &str) -> Result<Vec<MtlsRevocation>, StoreError> {
        self.mtls_certificate(ca_id).await?;
        on_db!(&self.db, |pool| {
            sqlx::query(concat!(
                "SELECT ",
                revocation_columns!(),
                " FROM mtls_certificate_revocations WHERE mtls_certificate_id = $1 ORDER BY created_on, id"
            ))
            .bind(ca_id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(revocation_from_row)
            .collect()
        })
    }

    /// Takes back the revocation `id` of the uploaded CA `ca_id`: the certificate is trusted again.
    pub async fn delete_mtls_revocation(&self, ca_id: &str, id: &str, actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let serial: Option<String> = sqlx::query_scalar(
                "DELETE FROM mtls_certificate_revocations WHERE id = $1 AND mtls_certificate_id = $2 \
                 RETURNING serial_number",
            )
            .bind(id)
            .bind(ca_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(serial) = serial else {
                return Err(StoreError::not_found("revocation", id));
            };
            sqlx::query("UPDATE mtls_certificates SET updated_at = $1 WHERE id = $2")
                .bind(now())
                .bind(ca_id)
                .execute(&mut *tx)
                .await?;
            commit_write!(self, tx, actor, "unrevoke", "mtls_certificate", ca_id, &serial);
        });
        Ok(())
    }

    /// Sets whether a bring-your-own CA fails closed on stale CRLs: `None` keeps a CRL in use past its `nextUpdate`;
    /// `Some(grace)` (0 to 30 days, in seconds) has the edge trust none of its certificates `grace` seconds after
    /// it, or while the CA has no CRL.
    pub async fn set_mtls_crl_grace(&self, id: &str, grace: Option<i64>, actor: &Actor) -> Result<(), StoreError> {
        if grace.is_some_and(|g| !(0..=MAX_CRL_GRACE_SECONDS).contains(&g)) {
            return Err(StoreError::Invalid(format!(
                "the grace must be 0 to {MAX_CRL_GRACE_SECONDS} seconds (30 days)"
            )));
        }
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE mtls_certificates SET crl_grace_seconds = $1, updated_at = $2 WHERE id = $3 AND ca = 1",
            )
            .bind(grace)
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::not_found("uploaded CA", id));
            }
            let detail = grace.map_or_else(|| "off".to_owned(), |g| g.to_string());
            commit_write!(self, tx, actor, "set_crl_grace", "mtls_certificate", id, &detail);
        });
        Ok(())
    }

    /// Sets how the client certificates of a bring-your-own CA are checked with OCSP (`None`: not at all).
    /// The caller has checked the responder URL.
    pub async fn set_mtls_ocsp(&self, id: &str, policy: Option<&OcspPolicy>, actor: &Actor) -> Result<(), StoreError> {
        let check = ocsp_check_text(policy);
        let responder = policy.and_then(|p| p.responder.as_deref());
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE mtls_certificates SET ocsp_check = $1, ocsp_responder = $2, updated_at = $3 \
                 WHERE id = $4 AND ca = 1",
            )
            .bind(check)
            .bind(responder)
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::not_found("uploaded CA", id));
            }
            let detail = format!("{check} {}", responder.unwrap_or(""));
            commit_write!(self, tx, actor, "set_ocsp", "mtls_certificate", id, detail.trim_end());
        });
        Ok(())
    }

    /// The uploaded CAs whose CRLs are fetched from URLs: (id, name, URLs), without the CRLs themselves.
    pub async fn crl_sources(&self) -> Result<Vec<(String, String, Vec<String>)>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT id, name, crl_urls FROM mtls_certificates WHERE ca = 1 AND crl_urls <> '' ORDER BY id",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.text("id")?,
                        r.text("name")?,
                        r.text("crl_urls")?.split_whitespace().map(str::to_owned).collect(),
                    ))
                })
                .collect()
        })
    }

    /// Records a fetch of the CA's CRLs from `urls`, judged against the CRLs `based_on` (what the CA held when the
    /// fetch started): `Ok(crls)` (checked by the caller) replaces them when they differ, a new edge state only
    /// then; `Err` records why the fetch failed and keeps the last CRLs. Nothing is written when the CA's URLs or
    /// CRLs changed meanwhile (another node's fetch, an upload: the next round judges again) or the CA is gone.
    /// Returns whether the CRLs changed.
    pub async fn record_crl_fetch(
        &self,
        id: &str,
        urls: &[String],
        based_on: Option<&[u8]>,
        fetched: Result<&[u8], &str>,
    ) -> Result<bool, StoreError> {
        let joined = urls.join(" ");
        let at = now();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // Locked on PostgreSQL, so that the comparison below still holds when the update runs (SQLite has one
            // writer, and refuses this transaction's write if another committed since its read).
            let query = if self.is_postgres() {
                "SELECT crl, crl_urls FROM mtls_certificates WHERE id = $1 FOR UPDATE"
            } else {
                "SELECT crl, crl_urls FROM mtls_certificates WHERE id = $1"
            };
            let row = sqlx::query(query).bind(id).fetch_optional(&mut *tx).await?;
            let Some(row) = row else { return Ok(false) };
            let current = row.opt_bytes("crl")?;
            if row.text("crl_urls")? != joined || current.as_deref() != based_on {
                return Ok(false);
            }
            match fetched {
                Err(error) => {
                    sqlx::query("UPDATE mtls_certificates SET crl_fetch_error = $1 WHERE id = $2")
                        .bind(error)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(false)
                }
                Ok(crls) if current.as_deref() == Some(crls) => {
                    sqlx::query(
                        "UPDATE mtls_certificates SET crl_fetched_on = $1, crl_fetch_error = NULL WHERE id = $2",
                    )
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(false)
                }
                Ok(crls) => {
                    sqlx::query(
                        "UPDATE mtls_certificates SET crl = $1, crl_updated_on = $2, crl_fetched_on = $2, \
                         crl_fetch_error = NULL, updated_at = $2 WHERE id = $3",
                    )
                    .bind(crls)
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    commit_write!(self, tx, &Actor::system(), "fetch_crl", "mtls_certificate", id, &joined);
                    Ok(true)
                }
            }
        })
    }

    /// The hostnames of zone `zone_id` guarded by any CA (those with mTLS enabled), sorted, each once.
    pub async fn mtls_hostnames(&self, zone_id: &str) -> Result<Vec<String>, StoreError> {
        on_db!(&self.db, |pool| {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT hostname FROM hostname_associations WHERE zone_id = $1 ORDER BY hostname",
            )
            .bind(zone_id)
            .fetch_all(pool)
            .await?;
            Ok(names)
        })
    }

    /// The hostnames of zone `zone_id` guarded by `ca`, sorted.
    pub async fn hostname_associations(&self, zone_id: &str, ca: &CaRef) -> Result<Vec<String>, StoreError> {
        self.zone(zone_id).await?;
        on_db!(&self.db, |pool| {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT hostname FROM hostname_associations WHERE zone_id = $1 AND ca_ref = $2 ORDER BY hostname",
            )
            .bind(zone_id)
            .bind(ca.as_db())
            .fetch_all(pool)
            .await?;
            Ok(names)
        })
    }

    /// Replaces the list of hostnames of zone `zone_id` guarded by `ca` (Cloudflare's PUT semantics: an empty list
    /// removes them all). Every hostname must lie in the zone. Returns the new list, sorted and deduplicated.
    pub async fn replace_hostname_associations(
        &self,
        zone_id: &str,
        ca: &CaRef,
        hostnames: &[String],
        actor: &Actor,
    ) -> Result<Vec<String>, StoreError> {
        if hostnames.len() > MAX_ASSOCIATED_HOSTNAMES {
            return Err(StoreError::Invalid(format!(
                "too many hostnames: {} (at most {MAX_ASSOCIATED_HOSTNAMES} per call)",
                hostnames.len()
            )));
        }
        let zone = self.zone(zone_id).await?;
        let mut names = hostnames
            .iter()
            .map(|h| check_hostname(h, &zone.name))
            .collect::<Result<Vec<_>, _>>()?;
        names.sort();
        names.dedup();
        if let CaRef::Mtls(id) = ca
            && !self.mtls_certificate(id).await?.ca
            && !names.is_empty()
        {
            return Err(StoreError::Invalid(format!(
                "mtls_certificate {id:?} is a client certificate (\"ca\": false), not a CA: it cannot verify clients"
            )));
        }
        let detail = format!("{}: {}", ca.as_db(), names.join(" "));
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM hostname_associations WHERE zone_id = $1 AND ca_ref = $2")
                .bind(zone_id)
                .bind(ca.as_db())
                .execute(&mut *tx)
                .await?;
            let at = now();
            for name in &names {
                sqlx::query(
                    "INSERT INTO hostname_associations (zone_id, hostname, ca_ref, created_on) VALUES ($1, $2, $3, $4)",
                )
                .bind(zone_id)
                .bind(name)
                .bind(ca.as_db())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            // The CA checked above may have been deleted since; the associations must not outlive it. Inside
            // the transaction, after this one's writes: see `delete_mtls_certificate` for the ordering.
            if let CaRef::Mtls(id) = ca
                && !names.is_empty()
            {
                let query = if self.is_postgres() {
                    "SELECT id FROM mtls_certificates WHERE id = $1 FOR SHARE"
                } else {
                    "SELECT id FROM mtls_certificates WHERE id = $1"
                };
                let still: Option<String> = sqlx::query_scalar(query).bind(id).fetch_optional(&mut *tx).await?;
                if still.is_none() {
                    return Err(StoreError::not_found("mtls_certificate", id));
                }
            }
            commit_write!(self, tx, actor, "replace", "hostname_associations", zone_id, &detail);
        });
        Ok(names)
    }

    /// Every association naming the bring-your-own CA `id`, across zones.
    pub async fn mtls_certificate_associations(&self, id: &str) -> Result<Vec<HostnameAssociation>, StoreError> {
        self.mtls_certificate(id).await?;
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT zone_id, hostname, ca_ref FROM hostname_associations WHERE ca_ref = $1 ORDER BY hostname",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(association_from_row).collect()
        })
    }
}

pub(crate) fn managed_ca_from_row(row: &impl RowExt) -> Result<ManagedCa, StoreError> {
    let status = row.text("status")?;
    Ok(ManagedCa {
        id: row.text("id")?,
        account_id: row.text("account_id")?,
        name: row.text("name")?,
        certificate: row.text("certificate")?,
        sealed_key: row.bytes("sealed_key")?,
        key_type: row.text("key_type")?,
        status: ManagedCaStatus::parse(&status)
            .ok_or_else(|| StoreError::Invalid(format!("stored managed CA has unknown status {status:?}")))?,
        crl_number: row.int("crl_number")?,
        created_on: row.int("created_on")?,
        retired_on: row.opt_int("retired_on")?,
        chain: row.text("chain")?,
    })
}

fn request_from_row(row: &impl RowExt) -> Result<ManagedCaRequest, StoreError> {
    Ok(ManagedCaRequest {
        id: row.text("id")?,
        account_id: row.text("account_id")?,
        name: row.text("name")?,
        csr: row.text("csr")?,
        sealed_key: row.bytes("sealed_key")?,
        key_type: row.text("key_type")?,
        created_on: row.int("created_on")?,
    })
}

fn revocation_from_row(row: &impl RowExt) -> Result<MtlsRevocation, StoreError> {
    Ok(MtlsRevocation {
        id: row.text("id")?,
        mtls_certificate_id: row.text("mtls_certificate_id")?,
        serial_number: row.text("serial_number")?,
        issuer_der: row.text("issuer_der")?,
        issuer: row.text("issuer")?,
        fingerprint_sha256: row.text("fingerprint_sha256")?,
        note: row.text("note")?,
        created_on: row.int("created_on")?,
    })
}

/// A serial number as stored: lower hex of its magnitude in whole bytes (no leading zero bytes, "00" for zero), from
/// hex in either case with optional `:` separators, at most 20 bytes (RFC 5280) once leading zeros are gone.
fn normal_serial(text: &str) -> Result<String, StoreError> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    let bad = || {
        StoreError::Invalid(format!(
            "serial_number must be hex (at most 20 bytes, `:` between bytes allowed), got {:?}",
            text.chars().take(64).collect::<String>()
        ))
    };
    if digits.is_empty() || digits.len() > 128 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let trimmed = digits.trim_start_matches('0').to_ascii_lowercase();
    if trimmed.len() > 40 {
        return Err(bad());
    }
    Ok(if trimmed.is_empty() {
        "00".to_owned()
    } else if !trimmed.len().is_multiple_of(2) {
        format!("0{trimmed}")
    } else {
        trimmed
    })
}

pub(crate) fn mtls_from_row(row: &impl RowExt) -> Result<MtlsCertificate, StoreError> {
    Ok(MtlsCertificate {
        id: row.text("id")?,
        account_id: row.text("account_id")?,
        name: row.text("name")?,
        ca: row.flag("ca")?,
        certificates: row.text("certificates")?,
        issuer: row.text("issuer")?,
        serial_number: row.text("serial_number")?,
        signature: row.text("signature")?,
        expires_on: row.int("expires_on")?,
        uploaded_on: row.int("uploaded_on")?,
        updated_at: row.int("updated_at")?,
        crl: row.opt_bytes("crl")?,
        crl_updated_on: row.opt_int("crl_updated_on")?,
        sealed_key: row.opt_bytes("sealed_key")?,
        crl_urls: row.text("crl_urls")?.split_whitespace().map(str::to_owned).collect(),
        crl_fetched_on: row.opt_int("crl_fetched_on")?,
        crl_fetch_error: row.opt_text("crl_fetch_error")?,
        ocsp: match row.text("ocsp_check")?.as_str() {
            "off" => None,
            check @ ("soft" | "hard") => Some(OcspPolicy {
                hard_fail: check == "hard",
                responder: row.opt_text("ocsp_responder")?,
            }),
            other => {
                return Err(StoreError::Invalid(format!(
                    "stored CA has unknown ocsp_check {other:?}"
                )));
            }
        },
        crl_grace_seconds: row.opt_int("crl_grace_seconds")?,
    })
}

/// How `ocsp_check` stores a policy.
fn ocsp_check_text(policy: Option<&OcspPolicy>) -> &'static str {
    match policy {
        None => "off",
        Some(p) if p.hard_fail => "hard",
        Some(_) => "soft",
    }
}

pub(crate) fn association_from_row(row: &impl RowExt) -> Result<HostnameAssociation, StoreError> {
    Ok(HostnameAssociation {
        zone_id: row.text("zone_id")?,
        hostname: row.text("hostname")?,
        ca: CaRef::from_db(row.text("ca_ref")?),
    })
}
