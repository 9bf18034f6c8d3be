//! `GET /accounts`: the one account, as Cloudflare lists accounts (scripts need its id for the account-scoped paths).

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AdminState;
use crate::api::{ApiResult, ResultInfo, ok_page};
use crate::time_fmt::rfc3339;

/// An account, with Cloudflare's field names.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    pub created_on: String,
}

/// List accounts (there is exactly one).
#[utoipa::path(get, path = "/accounts", tag = "accounts",
    responses((status = 200, description = "The account", body = [AccountView])))]
pub async fn list_accounts(State(state): State<AdminState>) -> ApiResult {
    let account = state.store.account().await?;
    let view = AccountView {
        id: account.id,
        name: account.name,
        created_on: rfc3339(account.created_on),
    };
    Ok(ok_page(vec![view], ResultInfo::new(1, 1, 1, 1)))
}

/// Query of the audit log.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most this many entries, newest first (default 100, at most 1,000).
    pub per_page: Option<u32>,
}

/// One audited write, in the shape of Cloudflare's audit logs.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub when: String,
    pub action: AuditAction,
    pub actor: AuditActor,
    pub resource: AuditResource,
    pub metadata: AuditMetadata,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditAction {
    #[serde(rename = "type")]
    pub kind: String,
    pub result: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditActor {
    /// `token` for API writes, `system` for the server's own (first start).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditResource {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditMetadata {
    pub detail: String,
}

/// The audit log: every write, who made it and when, newest first.
#[utoipa::path(get, path = "/accounts/{account_id}/audit_logs", tag = "accounts",
    params(("account_id" = String, Path, description = "Account id"), AuditQuery),
    responses((status = 200, description = "Audit entries, newest first", body = [AuditView])))]
pub async fn audit_logs(
    State(state): State<AdminState>,
    crate::api::Path(account_id): crate::api::Path<String>,
    crate::api::ApiQuery(query): crate::api::ApiQuery<AuditQuery>,
) -> ApiResult {
    crate::certs::check_account(&state, &account_id).await?;
    let per_page = query.per_page.unwrap_or(100).clamp(1, 1_000);
    let entries: Vec<AuditView> = state
        .store
        .audit_log(per_page)
        .await?
        .into_iter()
        .map(|e| AuditView {
            id: e.id.to_string(),
            when: rfc3339(e.at),
            action: AuditAction {
                kind: e.action,
                result: true,
            },
            actor: match e.token_id {
                Some(id) => AuditActor { kind: "token", id },
                None => AuditActor {
                    kind: "system",
                    id: String::new(),
                },
            },
            resource: AuditResource {
                kind: e.object_type,
                id: e.object_id,
            },
            metadata: AuditMetadata { detail: e.detail },
        })
        .collect();
    let info = ResultInfo::new(1, per_page, entries.len(), entries.len() as u64);
    Ok(ok_page(entries, info))
}
