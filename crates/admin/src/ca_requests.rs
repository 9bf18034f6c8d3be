//! `/accounts/{id}/managed_ca/requests`: a managed CA signed by the operator's own CA instead of by itself.
//!
//! A request makes the CA's key (sealed at once, like every managed CA key) and a CSR; the operator has their CA
//! sign it and installs the certificate with its chain, and the CA becomes the active managed CA exactly as a
//! rotation's would (the previous one stays trusted until retired). The checks of what is installed are
//! `portcullis_pki::ca_request`'s. Account-wide tokens only: these are not among the paths a zone-limited token
//! may use.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use portcullis_pki::{CaRequest, CaRequestParams, KeyType};
use portcullis_store::{Actor, ManagedCaRequest, NewManagedCa, NewManagedCaRequest};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, Path, ok, ok_all, ok_status};
use crate::certs::{ManagedCaView, ca_view, check_account};
use crate::time_fmt::rfc3339;

/// Largest PEM text accepted for a certificate and its chain together.
const MAX_PEM: usize = 64 * 1024;

/// A managed CA waiting for its certificate.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManagedCaRequestView {
    /// The id the CA keeps once installed.
    pub id: String,
    /// The common name asked for.
    pub name: String,
    pub key_type: String,
    /// The CSR (PEM) for your CA to sign; it asks for `CA:TRUE, pathlen:0` and `keyCertSign, cRLSign, digitalSignature`.
    pub csr: String,
    pub created_on: String,
}

fn view(request: ManagedCaRequest) -> ManagedCaRequestView {
    ManagedCaRequestView {
        id: request.id,
        name: request.name,
        key_type: request.key_type,
        csr: request.csr,
        created_on: rfc3339(request.created_on),
    }
}

/// `POST …/managed_ca/requests` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// `p256` (default), `p384`, `rsa2048`, `rsa3072` or `rsa4096`.
    pub key_type: Option<String>,
    /// The CA's `CN=`; `Portcullis Managed CA <first 8 hex of its id>` by default.
    pub common_name: Option<String>,
    /// The CA's `O=`.
    pub organization: Option<String>,
}

/// `POST …/managed_ca/requests/{id}/install` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// The certificate your CA signed for the request's CSR (PEM); the chain may follow it here.
    pub certificate: String,
    /// The certificates above it (PEM): the CA that signed it first, up to and including your root.
    #[serde(default)]
    pub chain: String,
}

/// The managed CAs waiting for a certificate, newest first.
#[utoipa::path(get, path = "/accounts/{account_id}/managed_ca/requests", tag = "managed CA",
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The requests", body = [ManagedCaRequestView])))]
pub async fn list_requests(State(state): State<AdminState>, Path(account_id): Path<String>) -> ApiResult {
    check_account(&state, &account_id).await?;
    let requests: Vec<_> = state.store.managed_ca_requests().await?.into_iter().map(view).collect();
    Ok(ok_all(requests))
}

/// Make a managed CA's key and a CSR for your own CA to sign; nothing issues until the certificate is installed.
#[utoipa::path(post, path = "/accounts/{account_id}/managed_ca/requests", tag = "managed CA",
    request_body = NewRequest,
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 201, description = "The request and its CSR", body = ManagedCaRequestView)))]
pub async fn create_request(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(account_id): Path<String>,
    ApiJson(body): ApiJson<NewRequest>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    let key_type = match &body.key_type {
        Some(k) => k.parse::<KeyType>().map_err(|e| ApiError::invalid(e.to_string()))?,
        None => KeyType::P256,
    };
    let params = CaRequestParams {
        common_name: body.common_name,
        organization: body.organization,
        key_type,
    };
    let request = CaRequest::create(&params).map_err(|e| ApiError::invalid(e.to_string()))?;
    let stored = state
        .store
        .add_managed_ca_request(
            NewManagedCaRequest {
                id: request.id().to_owned(),
                name: request.name().to_owned(),
                csr: request.csr_pem(),
                sealed_key: request.sealed_key(&state.master_key),
                key_type: request.key_type().as_str().to_owned(),
            },
            &actor,
        )
        .await?;
    Ok(ok_status(StatusCode::CREATED, view(stored)))
}

/// Install the certificate your CA signed for a request: it becomes the active managed CA (the one before stays
/// trusted until retired), and the request is gone.
#[utoipa::path(post, path = "/accounts/{account_id}/managed_ca/requests/{request_id}/install", tag = "managed CA",
    request_body = Install,
    params(("account_id" = String, Path, description = "Account id"), ("request_id" = String, Path, description = "Request id")),
    responses((status = 201, description = "The new active CA", body = ManagedCaView)))]
pub async fn install(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, request_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<Install>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    if body.certificate.len() + body.chain.len() > MAX_PEM {
        return Err(ApiError::invalid(format!(
            "certificate and chain together exceed {MAX_PEM} bytes"
        )));
    }
    let stored = state.store.managed_ca_request(&request_id).await?;
    let key_type: KeyType = stored.key_type.parse().map_err(ApiError::internal)?;
    let request = CaRequest::from_sealed(
        &stored.id,
        &stored.name,
        key_type,
        &stored.csr,
        &stored.sealed_key,
        &state.master_key,
    )
    .map_err(|e| ApiError::internal(format!("cannot unseal managed CA request {}: {e}", stored.id)))?;
    let installed = request
        .install(&body.certificate, &body.chain, OffsetDateTime::now_utc())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let ca = installed.ca;
    let record = state
        .store
        .install_managed_ca(
            &request_id,
            NewManagedCa {
                id: ca.id().to_owned(),
                name: ca.name().to_owned(),
                certificate: ca.certificate_pem(),
                // The request's sealed key as stored: the same key, sealed under the same id.
                sealed_key: stored.sealed_key,
                key_type: ca.key_type().as_str().to_owned(),
                chain: installed.chain_pem,
            },
            &actor,
        )
        .await?;
    Ok(ok_status(StatusCode::CREATED, ca_view(record)))
}

/// Delete a request and its key; a certificate signed for it can no longer be installed.
#[utoipa::path(delete, path = "/accounts/{account_id}/managed_ca/requests/{request_id}", tag = "managed CA",
    params(("account_id" = String, Path, description = "Account id"), ("request_id" = String, Path, description = "Request id")),
    responses((status = 200, description = "Its id", body = Object)))]
pub async fn delete_request(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, request_id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    state.store.delete_managed_ca_request(&request_id, &actor).await?;
    Ok(ok(serde_json::json!({ "id": request_id })))
}
