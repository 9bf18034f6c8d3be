//! API tokens: random secrets shown once, stored as SHA-256.

use base64::Engine as _;

use crate::Store;
use crate::db::{RowExt, commit_write, json_strings, on_db};
use crate::error::StoreError;
use crate::ids::{new_id, now, random_bytes, sha256_hex};
use crate::model::{Actor, ApiToken, TokenRestrictions, TokenScope};

macro_rules! token_columns {
    () => {
        "id, name, scope, created_on, revoked_on, not_before, expires_on, request_ip, zones"
    };
}

/// Every secret starts with this, so that leaked tokens are easy to find with secret scanners.
const SECRET_PREFIX: &str = "pct_";

impl Store {
    /// Creates a token, with `restrictions` (checked by the caller), and returns it with its secret. The secret is
    /// not stored and cannot be shown again.
    pub async fn create_token(
        &self,
        name: &str,
        scope: TokenScope,
        restrictions: &TokenRestrictions,
        actor: &Actor,
    ) -> Result<(ApiToken, String), StoreError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::Invalid("token name must be 1 to 200 characters".to_owned()));
        }
        let secret = format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
        );
        let token = ApiToken {
            id: new_id(),
            name: name.to_owned(),
            scope,
            created_on: now(),
            revoked_on: None,
            restrictions: restrictions.clone(),
        };
        let request_ip = (!restrictions.ip_in.is_empty() || !restrictions.ip_not_in.is_empty())
            .then(|| serde_json::json!({"in": restrictions.ip_in, "not_in": restrictions.ip_not_in}).to_string());
        let zones = restrictions
            .zones
            .as_ref()
            .map(|z| serde_json::Value::from(z.clone()).to_string());
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO api_tokens (id, name, secret_sha256, scope, created_on, not_before, expires_on, \
                 request_ip, zones) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&token.id)
            .bind(&token.name)
            .bind(sha256_hex(secret.as_bytes()))
            .bind(scope.as_str())
            .bind(token.created_on)
            .bind(restrictions.not_before)
            .bind(restrictions.expires_on)
            .bind(&request_ip)
            .bind(&zones)
            .execute(&mut *tx)
            .await?;
            commit_write!(self, tx, actor, "create", "api_token", &token.id, scope.as_str());
        });
        Ok((token, secret))
    }

    /// The live (not revoked) token whose secret is `secret`, if any.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiToken>, StoreError> {
        if !secret.starts_with(SECRET_PREFIX) || secret.len() > 200 {
            return Ok(None);
        }
        let hash = sha256_hex(secret.as_bytes());
        on_db!(&self.db, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens WHERE secret_sha256 = $1 AND revoked_on IS NULL"
            ))
            .bind(&hash)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(token_from_row).transpose()
        })
    }

    /// All tokens, revoked ones included, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens ORDER BY created_on, id"
            ))
            .fetch_all(pool)
            .await?;
            rows.iter().map(token_from_row).collect()
        })
    }

    /// Revokes the token `id`; its secret stops working at once. The last live write token without restrictions
    /// is refused (409): without one, nothing could change the whole server again (the server makes a first token
    /// only when there is none at all).
    pub async fn revoke_token(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        let at = now();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // Serializes revocations (the generation row, which every write updates), so that two cannot each
            // leave the other as the last writer.
            sqlx::query("UPDATE generation SET value = value WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            let rows = sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens WHERE scope = 'write' AND revoked_on IS NULL"
            ))
            .fetch_all(&mut *tx)
            .await?;
            let writers: Vec<ApiToken> = rows
                .iter()
                .map(token_from_row)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|t| t.restrictions.unrestricted_at(at))
                .collect();
            if writers.len() == 1 && writers[0].id == id {
                return Err(StoreError::Conflict(
                    "this is the last live write token without restrictions: create another before revoking it"
                        .to_owned(),
                ));
            }
            let updated = sqlx::query("UPDATE api_tokens SET revoked_on = $1 WHERE id = $2 AND revoked_on IS NULL")
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Err(StoreError::not_found("live api token", id));
            }
            commit_write!(self, tx, actor, "revoke", "api_token", id, "");
        });
        Ok(())
    }
}

fn token_from_row(row: &impl RowExt) -> Result<ApiToken, StoreError> {
    let id = row.text("id")?;
    let scope = row.text("scope")?;
    let scope = TokenScope::parse(&scope)
        .ok_or_else(|| StoreError::Invalid(format!("stored token {id} has unknown scope {scope:?}")))?;
    // Unreadable restrictions are an error, never no restriction.
    let request_ip: serde_json::Value = row
        .opt_text("request_ip")?
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| StoreError::Invalid(format!("stored token {id} has an unreadable request_ip: {e}")))?
        .unwrap_or_default();
    let zones = row
        .opt_text("zones")?
        .map(|t| serde_json::from_str::<Vec<String>>(&t))
        .transpose()
        .map_err(|e| StoreError::Invalid(format!("stored token {id} has unreadable zones: {e}")))?;
    Ok(ApiToken {
        name: row.text("name")?,
        scope,
        created_on: row.int("created_on")?,
        revoked_on: row.opt_int("revoked_on")?,
        restrictions: TokenRestrictions {
            not_before: row.opt_int("not_before")?,
            expires_on: row.opt_int("expires_on")?,
            ip_in: json_strings(&request_ip["in"]),
            ip_not_in: json_strings(&request_ip["not_in"]),
            zones,
        },
        id,
    })
}
