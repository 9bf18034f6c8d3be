//! Reading everything the edge needs in one consistent snapshot of the database.

use std::collections::HashMap;

use crate::Store;
use crate::acme::{challenge_from_row, http_answer_from_row};
use crate::cas::{association_from_row, managed_ca_from_row, mtls_from_row};
use crate::custom_certs::custom_cert_from_row;
use crate::db::{RowExt, on_db};
use crate::error::StoreError;
use crate::hostnames::hostname_from_row;
use crate::model::{Account, EdgeState, Ruleset, Zone};
use crate::rulesets::rule_from_row;

impl Store {
    /// Everything the edge serves, as of one moment: all reads happen in one transaction (REPEATABLE READ on
    /// PostgreSQL; SQLite's read transactions are snapshots), so the result never mixes two generations.
    pub async fn load_edge_state(&self) -> Result<EdgeState, StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            if self.is_postgres() {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .execute(&mut *tx)
                    .await?;
            }
            let generation: i64 = sqlx::query_scalar("SELECT value FROM generation WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            let account = sqlx::query("SELECT id, name, created_on FROM accounts")
                .fetch_one(&mut *tx)
                .await?;
            let account = Account {
                id: account.text("id")?,
                name: account.text("name")?,
                created_on: account.int("created_on")?,
            };
            let zones = sqlx::query(
                "SELECT id, account_id, name, status, created_on, modified_on, url_normalization_scope, \
                     url_normalization_type, managed_request_headers, managed_response_headers FROM zones ORDER BY name",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok(Zone {
                    id: r.text("id")?,
                    account_id: r.text("account_id")?,
                    name: r.text("name")?,
                    status: r.text("status")?,
                    created_on: r.int("created_on")?,
                    modified_on: r.int("modified_on")?,
                    url_normalization_scope: r.text("url_normalization_scope")?,
                    url_normalization_type: r.text("url_normalization_type")?,
                    managed_request_headers: crate::zones::managed_headers(&r.text("managed_request_headers")?),
                    managed_response_headers: crate::zones::managed_headers(&r.text("managed_response_headers")?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            let hostnames = sqlx::query(
                "SELECT id, zone_id, hostname, origin, settings, created_on, modified_on FROM hostnames ORDER BY hostname",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(hostname_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            let associations = sqlx::query(
                "SELECT zone_id, hostname, ca_ref FROM hostname_associations ORDER BY zone_id, hostname, ca_ref",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(association_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            let managed_cas = sqlx::query(
                "SELECT id, account_id, name, certificate, sealed_key, key_type, status, crl_number, created_on, \
                 retired_on, chain FROM managed_cas WHERE status <> 'retired' ORDER BY \
                 CASE status WHEN 'active' THEN 0 ELSE 1 END, created_on DESC, id",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(managed_ca_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            let mtls_certificates = sqlx::query(
                "SELECT id, account_id, name, ca, certificates, issuer, serial_number, signature, expires_on, \
                 uploaded_on, updated_at, crl, crl_updated_on, sealed_key, crl_urls, crl_fetched_on, crl_fetch_error, ocsp_check, ocsp_responder, crl_grace_seconds \
                 FROM mtls_certificates \
                 ORDER BY uploaded_on DESC, id",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(mtls_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            let mtls_revocations = sqlx::query(
                "SELECT mtls_certificate_id, serial_number, issuer_der FROM mtls_certificate_revocations \
                 ORDER BY mtls_certificate_id, serial_number, issuer_der",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.text("mtls_certificate_id")?,
                    r.text("serial_number")?,
                    r.text("issuer_der")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            let revoked_serials = sqlx::query(
                "SELECT ca_id, serial_number FROM client_certificates WHERE status <> 'active' \
                 UNION ALL SELECT ca_id, serial_number FROM deleted_zone_certificates WHERE expires_on > $1 \
                 ORDER BY ca_id, serial_number",
            )
            .bind(crate::ids::now())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.text("ca_id")?, r.text("serial_number")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
            let client_certificate_expiry = sqlx::query(
                "SELECT zone_id, COUNT(*) AS active, MIN(expires_on) AS soonest FROM client_certificates \
                 WHERE status = 'active' AND expires_on > $1 GROUP BY zone_id ORDER BY zone_id",
            )
            .bind(crate::ids::now())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.text("zone_id")?,
                    u64::try_from(r.int("active")?).unwrap_or(0),
                    r.int("soonest")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            let custom_certificates = sqlx::query(
                "SELECT id, zone_id, certificate, sealed_key, hosts, issuer, signature, expires_on, uploaded_on, \
                 modified_on FROM custom_certificates ORDER BY uploaded_on DESC, id",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(custom_cert_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            let acme_challenges = sqlx::query(
                "SELECT hostname, pack_id, certificate, sealed_key, expires_on FROM acme_challenges ORDER BY hostname",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(challenge_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            let acme_http_answers = sqlx::query(
                "SELECT token, hostname, pack_id, key_authorization, expires_on FROM acme_http_answers ORDER BY token",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(http_answer_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            let mut rulesets = sqlx::query(
                "SELECT id, zone_id, phase, name, description, version, last_updated FROM rulesets ORDER BY zone_id, phase",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok(Ruleset {
                    id: r.text("id")?,
                    zone_id: r.text("zone_id")?,
                    phase: r.text("phase")?,
                    name: r.text("name")?,
                    description: r.text("description")?,
                    version: r.int("version")?,
                    last_updated: r.int("last_updated")?,
                    rules: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            let index: HashMap<String, usize> = rulesets.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
            let rules = sqlx::query(
                "SELECT ruleset_id, id, description, expression, action, action_parameters, enabled, version, \
                 last_updated, ratelimit, lists FROM rules ORDER BY ruleset_id, position",
            )
            .fetch_all(&mut *tx)
            .await?;
            for row in &rules {
                if let Some(&i) = index.get(&row.text("ruleset_id")?) {
                    rulesets[i].rules.push(rule_from_row(row)?);
                }
            }
            let lists = crate::lists::edge_lists!(&mut *tx, None::<&[String]>);
            tx.commit().await?;
            Ok(EdgeState {
                generation: u64::try_from(generation).unwrap_or(0),
                account,
                zones,
                hostnames,
                associations,
                managed_cas,
                mtls_certificates,
                mtls_revocations,
                revoked_serials,
                custom_certificates,
                acme_challenges,
                acme_http_answers,
                rulesets,
                lists,
                client_certificate_expiry,
            })
        })
    }
}
