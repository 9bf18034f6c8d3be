//! API-token authentication: `Authorization: Bearer <token>`. Read tokens may only GET (and HEAD).

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use portcullis_store::{Actor, TokenScope};

use crate::AdminState;
use crate::api::{ApiError, codes};

/// Checks the request's token and its scope, then passes the request on with the caller's [`Actor`] attached.
pub async fn require_token(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    let Some(secret) = bearer(&req) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::AUTHENTICATION,
            "Authentication error: missing bearer token",
        )
        .into_response();
    };
    let token = match state.store.authenticate(secret).await {
        Ok(Some(token)) => token,
        Ok(None) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::AUTHENTICATION,
                "Authentication error: invalid token",
            )
            .into_response();
        }
        Err(err) => return ApiError::from(err).into_response(),
    };
    let reads_only = matches!(*req.method(), Method::GET | Method::HEAD);
    if token.scope == TokenScope::Read && !reads_only {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            codes::UNAUTHORIZED,
            "Unauthorized to access requested resource: this token has read scope",
        )
        .into_response();
    }
    req.extensions_mut().insert(Actor::token(token.id));
    next.run(req).await
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
