//! `/user/tokens`: API tokens. The secret (`value`) is returned once, at creation, as Cloudflare does. A token may
//! be restricted, with Cloudflare's fields where it has them: `not_before`, `expires_on`, `condition.request_ip`
//! (`in` and `not_in` CIDRs), and Portcullis' `zones` (the zone ids it may reach). `auth` enforces them.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use portcullis_store::{Actor, ApiToken, TokenRestrictions, TokenScope};

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

/// Most CIDRs in a token's condition, and most zones.
const MAX_RESTRICTION_ITEMS: usize = 100;

/// Client addresses, as Cloudflare's `condition.request_ip`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestIp {
    /// The token works only from these addresses or CIDRs.
    #[serde(rename = "in", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_in: Vec<String>,
    /// The token never works from these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_in: Vec<String>,
}

/// Cloudflare's `condition`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub request_ip: Option<RequestIp>,
}

/// `POST /user/tokens` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub scope: Scope,
    /// RFC 3339; the token does not work before it.
    pub not_before: Option<String>,
    /// RFC 3339; the token stops working then.
    pub expires_on: Option<String>,
    /// The client addresses it works from.
    pub condition: Option<Condition>,
    /// Zone ids: the token may reach only these zones (and not the account's CAs, tokens or other zones).
    pub zones: Option<Vec<String>>,
}

/// A token as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// `active`, `expired` (past `expires_on`, or before `not_before`) or `revoked`.
    pub status: &'static str,
    pub issued_on: String,
    pub not_before: Option<String>,
    pub expires_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// The zones it may reach; `null`: all.
    pub zones: Option<Vec<String>>,
    /// The secret: present only in the response that created the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

fn view(token: ApiToken, value: Option<String>) -> TokenView {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let r = token.restrictions;
    let condition = (!r.ip_in.is_empty() || !r.ip_not_in.is_empty()).then(|| Condition {
        request_ip: Some(RequestIp {
            ip_in: r.ip_in.clone(),
            not_in: r.ip_not_in.clone(),
        }),
    });
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
        } else if !r.live_at(now) {
            "expired"
        } else {
            "active"
        },
        issued_on: rfc3339(token.created_on),
        not_before: r.not_before.map(rfc3339),
        expires_on: r.expires_on.map(rfc3339),
        condition,
        zones: r.zones,
        value,
    }
}

fn rfc3339_time(field: &str, text: &str) -> Result<i64, ApiError> {
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .map(time::OffsetDateTime::unix_timestamp)
        .map_err(|_| {
            ApiError::invalid(format!(
                "{field} {text:?} is not an RFC 3339 time (2027-01-31T00:00:00Z)"
            ))
        })
}

/// The restrictions of a new token, checked: times in order and not over, CIDRs that parse, zones that exist.
async fn check_restrictions(state: &AdminState, body: &CreateToken) -> Result<TokenRestrictions, ApiError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let not_before = body
        .not_before
        .as_deref()
        .map(|t| rfc3339_time("not_before", t))
        .transpose()?;
    let expires_on = body
        .expires_on
        .as_deref()
        .map(|t| rfc3339_time("expires_on", t))
        .transpose()?;
    if let Some(expires) = expires_on {
        if expires <= now {
            return Err(ApiError::invalid("expires_on is in the past"));
        }
        if not_before.is_some_and(|start| start >= expires) {
            return Err(ApiError::invalid("not_before must be before expires_on"));
        }
    }
    let (ip_in, ip_not_in) = match body.condition.as_ref().and_then(|c| c.request_ip.as_ref()) {
        Some(ips) => (ips.ip_in.clone(), ips.not_in.clone()),
        None => (Vec::new(), Vec::new()),
    };
    if ip_in.len() + ip_not_in.len() > MAX_RESTRICTION_ITEMS {
        return Err(ApiError::invalid(format!(
            "condition.request_ip: at most {MAX_RESTRICTION_ITEMS} addresses"
        )));
    }
    let checked = |list: Vec<String>| -> Result<Vec<String>, ApiError> {
        list.into_iter()
            .map(|item| {
                let item = item.trim().to_owned();
                // Clients' IPv4 addresses are compared as IPv4: an IPv4-mapped IPv6 form would never match.
                let mapped = item.to_ascii_lowercase().contains("::ffff:");
                if !mapped && (item.parse::<ipnet::IpNet>().is_ok() || item.parse::<std::net::IpAddr>().is_ok()) {
                    Ok(item)
                } else {
                    Err(ApiError::invalid(format!(
                        "condition.request_ip: {item:?} is not an IP address or CIDR (IPv4 ones in IPv4 form)"
                    )))
                }
            })
            .collect()
    };
    let (ip_in, ip_not_in) = (checked(ip_in)?, checked(ip_not_in)?);
    let zones = match &body.zones {
        None => None,
        Some(zones) => {
            if zones.is_empty() || zones.len() > MAX_RESTRICTION_ITEMS {
                return Err(ApiError::invalid(format!(
                    "zones: give 1 to {MAX_RESTRICTION_ITEMS} zone ids (leave it out for every zone)"
                )));
            }
            for zone in zones {
                state.store.zone(zone).await?;
            }
            Some(zones.clone())
        }
    };
    Ok(TokenRestrictions {
        not_before,
        expires_on,
        ip_in,
        ip_not_in,
        zones,
    })
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
    // A restricted token could otherwise make itself an unrestricted one.
    if let Some(caller) = &actor.token_id {
        let tokens = state.store.list_tokens().await?;
        if tokens.iter().any(|t| &t.id == caller && t.restrictions.any()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                crate::api::codes::UNAUTHORIZED,
                "Unauthorized to access requested resource: a token with restrictions cannot create tokens",
            ));
        }
    }
    crate::api::check_text("name", &body.name, crate::api::MAX_NAME_CHARS)?;
    let restrictions = check_restrictions(&state, &body).await?;
    let (token, secret) = state
        .store
        .create_token(&body.name, scope, &restrictions, &actor)
        .await?;
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
    // The store refuses the last live unrestricted write token.
    state.store.revoke_token(&token_id, &actor).await?;
    // Its dashboard sessions end now, not at their next API call.
    state.sessions.remove_token(&token_id);
    Ok(ok(IdOnly { id: token_id }))
}
