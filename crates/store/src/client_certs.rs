//! Client certificates issued by the managed CAs: inventory, quota, revocation status, and the links of EST
//! renewals (each certificate renewed once; renewing a renewal revokes the certificate before it).

use crate::Store;
use crate::db::{RowExt, commit_write, on_db};
use crate::error::StoreError;
use crate::model::{Actor, ClientCertificate, ClientCertificateStatus};

macro_rules! client_cert_columns {
    () => {
        "id, zone_id, ca_id, certificate, csr, common_name, country, state, location, organization, \
         organizational_unit, ski, serial_number, fingerprint_sha256, signature, issued_on, expires_on, \
         validity_days, status, revoked_on"
    };
}

/// The certificates that count towards a zone's quota: active and not yet expired. An expired certificate can no
/// longer pass verification, so it frees its slot as a revocation does (Cloudflare counts it until it is revoked,
/// which makes short-lived certificates fill the quota with dead ones).
const ACTIVE_UNEXPIRED: &str =
    "SELECT COUNT(*) FROM client_certificates WHERE zone_id = $1 AND status = 'active' AND expires_on > $2";

/// Which of a zone's client certificates [`Store::list_client_certificates`] returns, and in what order.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCertQuery<'a> {
    /// Only certificates with this status.
    pub status: Option<ClientCertificateStatus>,
    /// Only certificates whose common name, organization, organizational unit, serial number, SHA-256 fingerprint
    /// or id contains this, ignoring ASCII case.
    pub search: Option<&'a str>,
    /// Only certificates that expire before this time (Unix seconds).
    pub expires_before: Option<i64>,
    /// Soonest to expire first, instead of newest first.
    pub by_expiry: bool,
}

/// Largest page a list call returns.
pub const MAX_PER_PAGE: u32 = 1_000;

impl Store {
    /// Stores a newly issued certificate. `quota` caps the zone's *active, unexpired* certificates (Cloudflare's
    /// error 1445); revoked and expired ones do not count.
    pub async fn add_client_certificate(
        &self,
        cert: &ClientCertificate,
        quota: u32,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        self.insert_client_certificate(cert, quota, None, actor)
            .await
            .map(|_| ())
    }

    /// Stores `cert`, issued to renew certificate `renewed_id` (EST re-enrollment), in one transaction with the
    /// note that `renewed_id` is renewed. Refused (a conflict) unless `renewed_id` is still active and was never
    /// renewed before. The certificate `renewed_id` itself renewed, if still active, is revoked: the client has shown
    /// it moved on by presenting `renewed_id`, so a line of renewals holds at most two active certificates. Returns
    /// the id of the certificate so revoked.
    pub async fn add_renewed_client_certificate(
        &self,
        renewed_id: &str,
        cert: &ClientCertificate,
        quota: u32,
        actor: &Actor,
    ) -> Result<Option<String>, StoreError> {
        self.insert_client_certificate(cert, quota, Some(renewed_id), actor)
            .await
    }

    /// The id of the certificate that `id` was issued to renew, if it was.
    pub async fn client_certificate_renewed_from(&self, id: &str) -> Result<Option<String>, StoreError> {
        on_db!(&self.db, |pool| {
            Ok(
                sqlx::query_scalar("SELECT renewed_id FROM client_certificate_renewals WHERE new_id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// The id of the certificate that renewed `id`, if one did.
    pub async fn client_certificate_renewed_by(&self, id: &str) -> Result<Option<String>, StoreError> {
        on_db!(&self.db, |pool| {
            Ok(
                sqlx::query_scalar("SELECT new_id FROM client_certificate_renewals WHERE renewed_id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// The client certificate whose SHA-256 fingerprint (lower hex) is `fingerprint`, in any zone.
    pub async fn client_certificate_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<ClientCertificate>, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                client_cert_columns!(),
                " FROM client_certificates WHERE fingerprint_sha256 = $1"
            ))
            .bind(fingerprint)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(client_cert_from_row).transpose()
        })
    }

    async fn insert_client_certificate(
        &self,
        cert: &ClientCertificate,
        quota: u32,
        renewed_id: Option<&str>,
        actor: &Actor,
    ) -> Result<Option<String>, StoreError> {
        self.zone(&cert.zone_id).await?;
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // Lock the zone row so that concurrent issuances cannot overrun the quota (PostgreSQL; SQLite
            // serialises writers anyway). First, before any certificate's row: deleting a zone takes its row, then
            // its certificates'.
            sqlx::query("UPDATE zones SET modified_on = modified_on WHERE id = $1")
                .bind(&cert.zone_id)
                .execute(&mut *tx)
                .await?;
            let mut superseded = None;
            if let Some(renewed) = renewed_id {
                // Locks the renewed certificate's row until the commit (PostgreSQL): a revocation waits for the
                // renewal or happens before it, and concurrent renewals of it take turns.
                let still_active =
                    sqlx::query("UPDATE client_certificates SET status = status WHERE id = $1 AND status = 'active'")
                        .bind(renewed)
                        .execute(&mut *tx)
                        .await?;
                if still_active.rows_affected() == 0 {
                    return Err(StoreError::Conflict(format!(
                        "client certificate {renewed} is no longer active"
                    )));
                }
                let taken: Option<String> =
                    sqlx::query_scalar("SELECT new_id FROM client_certificate_renewals WHERE renewed_id = $1")
                        .bind(renewed)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(by) = taken {
                    return Err(StoreError::Conflict(format!(
                        "client certificate {renewed} was already renewed, as {by}; renew that one"
                    )));
                }
                // Concurrent renewals of one certificate: the primary key lets one of them in.
                sqlx::query(
                    "INSERT INTO client_certificate_renewals (renewed_id, new_id, renewed_on) VALUES ($1, $2, $3)",
                )
                .bind(renewed)
                .bind(&cert.id)
                .bind(crate::ids::now())
                .execute(&mut *tx)
                .await?;
                let parent: Option<String> =
                    sqlx::query_scalar("SELECT renewed_id FROM client_certificate_renewals WHERE new_id = $1")
                        .bind(renewed)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(parent) = parent {
                    let revoked = sqlx::query(
                        "UPDATE client_certificates SET status = 'revoked', revoked_on = $1 \
                         WHERE id = $2 AND status = 'active'",
                    )
                    .bind(crate::ids::now())
                    .bind(&parent)
                    .execute(&mut *tx)
                    .await?;
                    if revoked.rows_affected() > 0 {
                        // Its own audit entry, so that the revoked certificate's history shows it.
                        sqlx::query(
                            "INSERT INTO audit_log (at, token_id, action, object_type, object_id, detail) \
                             VALUES ($1, $2, 'revoke', 'client_certificate', $3, $4)",
                        )
                        .bind(crate::ids::now())
                        .bind(actor.token_id.clone())
                        .bind(&parent)
                        .bind(format!(
                            "superseded: {renewed}, which renewed it, was renewed as {}",
                            cert.id
                        ))
                        .execute(&mut *tx)
                        .await?;
                        superseded = Some(parent);
                    }
                }
            }
            let active: i64 = sqlx::query_scalar(ACTIVE_UNEXPIRED)
                .bind(&cert.zone_id)
                .bind(crate::ids::now())
                .fetch_one(&mut *tx)
                .await?;
            if active >= i64::from(quota) {
                return Err(StoreError::LimitReached {
                    code: 1445,
                    message: format!("Hit maximum certificate allocation: {quota} certificates per zone are allowed"),
                });
            }
            sqlx::query(concat!(
                "INSERT INTO client_certificates (",
                client_cert_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
            ))
            .bind(&cert.id)
            .bind(&cert.zone_id)
            .bind(&cert.ca_id)
            .bind(&cert.certificate)
            .bind(&cert.csr)
            .bind(&cert.common_name)
            .bind(&cert.country)
            .bind(&cert.state)
            .bind(&cert.location)
            .bind(&cert.organization)
            .bind(&cert.organizational_unit)
            .bind(&cert.ski)
            .bind(&cert.serial_number)
            .bind(&cert.fingerprint_sha256)
            .bind(&cert.signature)
            .bind(cert.issued_on)
            .bind(cert.expires_on)
            .bind(cert.validity_days)
            .bind(cert.status.as_str())
            .bind(cert.revoked_on)
            .execute(&mut *tx)
            .await?;
            let (action, detail) = match renewed_id {
                None => ("create", cert.common_name.clone()),
                Some(renewed) => (
                    "renew",
                    match &superseded {
                        Some(parent) => {
                            format!(
                                "{}: renews {renewed}, revokes {parent} (renewed before)",
                                cert.common_name
                            )
                        }
                        None => format!("{}: renews {renewed}", cert.common_name),
                    },
                ),
            };
            commit_write!(self, tx, actor, action, "client_certificate", &cert.id, &detail);
            Ok::<_, StoreError>(superseded)
        })
    }

    /// Up to `limit` of the zone's client certificates that `query` selects, after skipping `offset`, newest first
    /// (or soonest to expire first); with the total count of matching certificates.
    pub async fn list_client_certificates(
        &self,
        zone_id: &str,
        query: &ClientCertQuery<'_>,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<ClientCertificate>, u64), StoreError> {
        self.zone(zone_id).await?;
        let per_page = limit.clamp(1, MAX_PER_PAGE);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        // '' matches every status: one query text serves both the filtered and the unfiltered list.
        let status = query.status.map_or("", ClientCertificateStatus::as_str);
        // Lower-cased on both sides, by the database, as for list items.
        let pattern = query.search.map(|s| format!("%{}%", crate::lists::escape_like(s)));
        let expires_before = query.expires_before.unwrap_or(i64::MAX);
        // The ORDER BY cannot be a parameter; both texts are fixed.
        macro_rules! filter {
            () => {
                " FROM client_certificates WHERE zone_id = $1 AND ($2 = '' OR status = $2) \
                 AND expires_on < $3 \
                 AND ($4 IS NULL OR lower(common_name) LIKE lower($4) ESCAPE '\\' \
                      OR lower(organization) LIKE lower($4) ESCAPE '\\' \
                      OR lower(organizational_unit) LIKE lower($4) ESCAPE '\\' \
                      OR lower(serial_number) LIKE lower($4) ESCAPE '\\' \
                      OR lower(fingerprint_sha256) LIKE lower($4) ESCAPE '\\' \
                      OR lower(id) LIKE lower($4) ESCAPE '\\')"
            };
        }
        let select = if query.by_expiry {
            concat!(
                "SELECT ",
                client_cert_columns!(),
                filter!(),
                " ORDER BY expires_on, id LIMIT $5 OFFSET $6"
            )
        } else {
            concat!(
                "SELECT ",
                client_cert_columns!(),
                filter!(),
                " ORDER BY issued_on DESC, id LIMIT $5 OFFSET $6"
            )
        };
        on_db!(&self.db, |pool| {
            let total: i64 = sqlx::query_scalar(concat!("SELECT COUNT(*)", filter!()))
                .bind(zone_id)
                .bind(status)
                .bind(expires_before)
                .bind(pattern.as_deref())
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query(select)
                .bind(zone_id)
                .bind(status)
                .bind(expires_before)
                .bind(pattern.as_deref())
                .bind(i64::from(per_page))
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let certs = rows.iter().map(client_cert_from_row).collect::<Result<Vec<_>, _>>()?;
            Ok((certs, u64::try_from(total).unwrap_or(0)))
        })
    }

    /// The client certificate `id` of zone `zone_id`.
    pub async fn client_certificate(&self, zone_id: &str, id: &str) -> Result<ClientCertificate, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                client_cert_columns!(),
                " FROM client_certificates WHERE zone_id = $1 AND id = $2"
            ))
            .bind(zone_id)
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| StoreError::not_found("client_certificate", id))?;
            client_cert_from_row(&row)
        })
    }

    /// Moves a certificate from status `from` to `to`, atomically: if its status is no longer `from` (someone else
    /// changed it meanwhile), nothing is written and a conflict is returned. The caller decides which transitions
    /// are allowed (`portcullis-pki`'s status machine).
    pub async fn set_client_certificate_status(
        &self,
        zone_id: &str,
        id: &str,
        from: ClientCertificateStatus,
        to: ClientCertificateStatus,
        actor: &Actor,
    ) -> Result<ClientCertificate, StoreError> {
        self.change_client_certificate_status(zone_id, id, from, to, None, actor)
            .await
    }

    /// Like [`Store::set_client_certificate_status`], but a move to `active` is refused with Cloudflare's error 1445
    /// when the zone already has `quota` active, unexpired certificates (checked in the same transaction as the
    /// update, under the zone's row lock, like [`Store::add_client_certificate`]), so reactivation cannot overrun the
    /// quota. A certificate that has expired meanwhile takes no slot, so its reactivation is never refused.
    pub async fn set_client_certificate_status_within_quota(
        &self,
        zone_id: &str,
        id: &str,
        from: ClientCertificateStatus,
        to: ClientCertificateStatus,
        quota: u32,
        actor: &Actor,
    ) -> Result<ClientCertificate, StoreError> {
        self.change_client_certificate_status(zone_id, id, from, to, Some(quota), actor)
            .await
    }

    async fn change_client_certificate_status(
        &self,
        zone_id: &str,
        id: &str,
        from: ClientCertificateStatus,
        to: ClientCertificateStatus,
        quota: Option<u32>,
        actor: &Actor,
    ) -> Result<ClientCertificate, StoreError> {
        // Only an active certificate is accepted by the edge; every other status refuses it from this moment.
        let revoked_on = (to != ClientCertificateStatus::Active).then(crate::ids::now);
        let quota = quota.filter(|_| to == ClientCertificateStatus::Active && from != ClientCertificateStatus::Active);
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            if let Some(quota) = quota {
                sqlx::query("UPDATE zones SET modified_on = modified_on WHERE id = $1")
                    .bind(zone_id)
                    .execute(&mut *tx)
                    .await?;
                let now = crate::ids::now();
                // A certificate that has expired since it was revoked takes no slot when reactivated.
                let expires_on: Option<i64> =
                    sqlx::query_scalar("SELECT expires_on FROM client_certificates WHERE zone_id = $1 AND id = $2")
                        .bind(zone_id)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let active: i64 = sqlx::query_scalar(ACTIVE_UNEXPIRED)
                    .bind(zone_id)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                if expires_on.is_some_and(|e| e > now) && active >= i64::from(quota) {
                    tx.rollback().await?;
                    return Err(StoreError::LimitReached {
                        code: 1445,
                        message: format!(
                            "Hit maximum certificate allocation: {quota} certificates per zone are allowed"
                        ),
                    });
                }
            }
            let updated = sqlx::query(
                "UPDATE client_certificates SET status = $1, revoked_on = $2 \
                 WHERE zone_id = $3 AND id = $4 AND status = $5",
            )
            .bind(to.as_str())
            .bind(revoked_on)
            .bind(zone_id)
            .bind(id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                tx.rollback().await?;
                let current = self.client_certificate(zone_id, id).await?;
                return Err(StoreError::Conflict(format!(
                    "client_certificate {id:?} is {}, not {}",
                    current.status.as_str(),
                    from.as_str()
                )));
            }
            let detail = format!("{} -> {}", from.as_str(), to.as_str());
            commit_write!(self, tx, actor, "set_status", "client_certificate", id, &detail);
        });
        self.client_certificate(zone_id, id).await
    }
}

impl Store {
    /// Removes the client certificates that expired more than `expired_for` seconds ago, whatever their status,
    /// and the remembered serials of deleted zones' certificates that did: Vault's `tidy`. "Ago" is by the
    /// database's clock, so that in a fleet a node whose own clock runs ahead cannot remove live certificates (and
    /// with them revocations). An expired certificate
    /// fails verification at the edge and has left its CA's CRL, so nothing needs its record any more; without
    /// this, a fleet that rotates short-lived certificates grows the table by a row per device and rotation for
    /// ever. Returns how many records went; a run that removes nothing writes nothing (no audit entry, no new
    /// generation).
    pub async fn tidy_client_certificates(&self, expired_for: i64, actor: &Actor) -> Result<u64, StoreError> {
        let clock = if self.is_postgres() {
            "SELECT CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)"
        } else {
            "SELECT CAST(strftime('%s', 'now') AS INTEGER)"
        };
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let now: i64 = sqlx::query_scalar(clock).fetch_one(&mut *tx).await?;
            let expired_before = now.saturating_sub(expired_for);
            // In the order zone deletion takes these tables, so that the two cannot deadlock on PostgreSQL.
            let remembered = sqlx::query("DELETE FROM deleted_zone_certificates WHERE expires_on < $1")
                .bind(expired_before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let certificates = sqlx::query("DELETE FROM client_certificates WHERE expires_on < $1")
                .bind(expired_before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let removed = certificates + remembered;
            if removed == 0 {
                tx.rollback().await?;
                return Ok(0);
            }
            let detail = format!(
                "{certificates} client certificates and {remembered} serials of deleted zones expired before {expired_before}"
            );
            commit_write!(self, tx, actor, "tidy", "client_certificate", "", &detail);
            Ok(removed)
        })
    }

    /// Serial numbers (lower hex) and revocation times of the certificates of managed CA `ca_id` that the edge
    /// refuses (any status but `active`, and those of deleted zones) and that have not expired at `now` (Unix
    /// seconds): what its CRL lists.
    /// RFC 5280 (5.1.2.6) lets an entry go once its certificate has expired, which any verifier refuses anyway;
    /// without that, a fleet that rotates certificates would grow its CRL forever.
    pub async fn revoked_client_certificates(&self, ca_id: &str, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT serial_number, COALESCE(revoked_on, issued_on) AS revoked_on FROM client_certificates \
                 WHERE ca_id = $1 AND status <> 'active' AND expires_on > $2 \
                 UNION ALL SELECT serial_number, revoked_on FROM deleted_zone_certificates \
                 WHERE ca_id = $1 AND expires_on > $2 ORDER BY serial_number",
            )
            .bind(ca_id)
            .bind(now)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| Ok((r.text("serial_number")?, r.int("revoked_on")?)))
                .collect()
        })
    }
}

pub(crate) fn client_cert_from_row(row: &impl RowExt) -> Result<ClientCertificate, StoreError> {
    let status = row.text("status")?;
    Ok(ClientCertificate {
        id: row.text("id")?,
        zone_id: row.text("zone_id")?,
        ca_id: row.text("ca_id")?,
        certificate: row.text("certificate")?,
        csr: row.text("csr")?,
        common_name: row.text("common_name")?,
        country: row.text("country")?,
        state: row.text("state")?,
        location: row.text("location")?,
        organization: row.text("organization")?,
        organizational_unit: row.text("organizational_unit")?,
        ski: row.text("ski")?,
        serial_number: row.text("serial_number")?,
        fingerprint_sha256: row.text("fingerprint_sha256")?,
        signature: row.text("signature")?,
        issued_on: row.int("issued_on")?,
        expires_on: row.int("expires_on")?,
        validity_days: row.int("validity_days")?,
        status: status
            .parse()
            .map_err(|_| StoreError::Invalid(format!("stored client certificate has unknown status {status:?}")))?,
        revoked_on: row.opt_int("revoked_on")?,
    })
}
