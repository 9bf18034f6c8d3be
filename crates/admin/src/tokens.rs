//! `/user/tokens`: API tokens. The secret (`value`) is returned once, at creation, as Cloudflare does.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use portcullis_store::{Actor, ApiToken, TokenScope};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, ok, ok_all, ok_status};
use crate::time_fmt::rfc3339;
use crate::zones::IdOnly;

/// `read` (GET only), `write` (everything) or `certificates` (GET, and issuing, revoking and reactivating client
/// certificates: for a provisioning service).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Certificates,
}

/// `POST /user/tokens` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub scope: Scope,
}

/// A token as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub status: &'static str,
    pub issued_on: String,
    /// The secret: present only in the response that created the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

fn view(token: ApiToken, value: Option<String>) -> TokenView {
    TokenView {
        id: token.id,
        name: token.name,
        scope: match token.scope {
            TokenScope::Read => Scope::Read,
            TokenScope::Write => Scope::Write,
            TokenScope::Certificates => Scope::Certificates,
        },
        status: if token.revoked_on.is_some() {
            "revoked"
        } else {
            "active"
        },
        issued_on: rfc3339(token.created_on),
        value,
    }
}

/// Create a token. Its `value` is shown once.
#[utoipa::path(post, path = "/user/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, description = "The token and its secret value", body = TokenView)))]
pub async fn create_token(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult {
    let scope = match body.scope {
        Scope::Read => TokenScope::Read,
        Scope::Write => TokenScope::Write,
        Scope::Certificates => TokenScope::Certificates,
    };
    let (token, secret) = state.store.create_token(&body.name, scope, &actor).await?;
    Ok(ok_status(StatusCode::CREATED, view(token, Some(secret))))
}

/// List tokens (never their secrets).
#[utoipa::path(get, path = "/user/tokens", tag = "tokens",
    responses((status = 200, description = "All tokens", body = [TokenView])))]
pub async fn list_tokens(State(state): State<AdminState>) -> ApiResult {
    let tokens: Vec<_> = state
        .store
        .list_tokens()
        .await?
        .into_iter()
        .map(|t| view(t, None))
        .collect();
    Ok(ok_all(tokens))
}

/// Cloudflare's `GET /user/tokens/verify`: what clients and Terraform call to check a token before using it.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedToken {
    /// The token's id (not its secret).
    pub id: Option<String>,
    /// Always `active`: a revoked or unknown token never gets here (401).
    pub status: &'static str,
}

/// Verify the token this request carries (or the one the dashboard session was opened with).
#[utoipa::path(get, path = "/user/tokens/verify", tag = "tokens",
    responses((status = 200, description = "The token is valid and active", body = VerifiedToken)))]
pub async fn verify_token(Extension(actor): Extension<Actor>) -> ApiResult {
    Ok(ok(VerifiedToken {
        id: actor.token_id,
        status: "active",
    }))
}

/// Revoke a token; it stops working at once.
#[utoipa::path(delete, path = "/user/tokens/{token_id}", tag = "tokens",
    params(("token_id" = String, Path, description = "Token id")),
    responses((status = 200, description = "The revoked token's id", body = IdOnly)))]
pub async fn revoke_token(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(token_id): Path<String>,
) -> ApiResult {
    // Tokens are made through the API, with a write token: revoking the last one would leave no way to change
    // anything again (the server makes a first token only when there is none at all).
    let tokens = state.store.list_tokens().await?;
    let writers = |t: &&ApiToken| t.scope == TokenScope::Write && t.revoked_on.is_none();
    if tokens.iter().filter(writers).count() == 1 && tokens.iter().filter(writers).any(|t| t.id == token_id) {
        return Err(ApiError::conflict(
            "this is the last active write token: create another write token before revoking it",
        ));
    }
    state.store.revoke_token(&token_id, &actor).await?;
    // Its dashboard sessions end now, not at their next API call.
    state.sessions.remove_token(&token_id);
    Ok(ok(IdOnly { id: token_id }))
}
