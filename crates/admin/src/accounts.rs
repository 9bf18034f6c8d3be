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
