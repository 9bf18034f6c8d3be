//! Portcullis' admin API: Cloudflare's paths, field names and JSON envelope under `/client/v4`, so that scripts,
//! cloudflare-go and Terraform with a custom base URL can drive Portcullis as they drive Cloudflare.
//!
//! What it does: authenticates API tokens, validates input (expressions are compiled, certificates parsed, CSRs
//! checked) and writes to the store; every write is one store transaction, so a refused request leaves nothing
//! behind. What it does not do: serve traffic or build the edge's snapshot — it never talks to the data plane; the
//! binary rebuilds the snapshot from the store's change feed.

mod access_settings;
mod accounts;
mod acme_dns;
mod api;
mod associations;
mod auth;
mod byoca;
mod ca_requests;
mod cert_policy;
mod certificate_packs;
mod certs;
mod custom_certs;
pub mod dashboard;
pub mod est;
mod events;
mod hostnames;
mod lists;
mod managed_headers;
mod mtls_check;
mod rulesets;
mod time_fmt;
mod tokens;
mod traffic;
mod url_normalization;
mod zones;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use portcullis_pki::MasterKey;
use portcullis_store::Store;

pub use acme_dns::tsig_seal_label;
pub use api::{ApiError, Envelope, ErrorItem, ResultInfo, codes};
pub use byoca::{MAX_CRL_URLS, check_crl_url, check_ocsp_responder};
pub use cert_policy::ClientCertificatePolicy;
pub use certificate_packs::{check_pack_hosts, check_pack_method};
pub use custom_certs::sealed_custom_certificate;
pub use hostnames::{
    CertificateForwarding, ForwardingStyles, HostnameSettings, MinTlsVersion, OriginHealthCheck, OriginSteering,
    TlsClientAuth, check_origin, normalize_settings,
};
pub use managed_headers::{
    REQUEST_TRANSFORMS as MANAGED_REQUEST_TRANSFORMS, RESPONSE_TRANSFORMS as MANAGED_RESPONSE_TRANSFORMS,
};
pub use rulesets::{
    PHASE as FIREWALL_PHASE, RATELIMIT_PHASE, add_list as add_stored_list, compile_stored as compile_stored_rules,
    normalize_rules,
};
pub use traffic::{MinuteCount, TrafficSource};

/// Largest request body the API accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The largest OCSP request body read (a request is well under 1 KB per certificate asked about).
const OCSP_BODY_BYTES: usize = portcullis_pki::ocsp::MAX_REQUEST_BYTES;

/// Limits and options of the API.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Most active client certificates per zone (Cloudflare's error 1445 past it).
    pub client_certificate_quota: u32,
    /// Most bring-your-own CAs per account (Cloudflare's error 1489 past it).
    pub mtls_certificate_limit: u32,
    /// Public base URL of this admin listener's `/crl/…` path, written into issued certificates as their CRL
    /// distribution point; none when unset.
    pub crl_base_url: Option<String>,
    /// Public base URL of the `/ocsp/…` path, written into issued certificates as their OCSP responder
    /// (authority information access); none when unset.
    pub ocsp_base_url: Option<String>,
    /// Seconds a client certificate must have lived before EST renews it (see [`est`]).
    pub est_renew_after: i64,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            client_certificate_quota: 100_000,
            mtls_certificate_limit: 100,
            crl_base_url: None,
            ocsp_base_url: None,
            est_renew_after: 3600,
        }
    }
}

/// A built CRL: the store generation it was built at, when it was built, when that generation was last checked, and
/// its DER.
pub(crate) struct CachedCrl {
    pub(crate) generation: u64,
    pub(crate) built_at: time::OffsetDateTime,
    pub(crate) checked_at: std::time::Instant,
    pub(crate) der: axum::body::Bytes,
    /// The CRL's serials (magnitudes, without leading zeros) with their revocation times and reasons, for OCSP
    /// answers.
    pub(crate) revoked: Arc<certs::Revocations>,
    /// The CA, unsealed, to sign OCSP answers.
    pub(crate) ca: Arc<portcullis_pki::ManagedCa>,
}

/// Built CRLs by CA id.
pub(crate) type CrlCache = HashMap<String, CachedCrl>;

/// The ids of the managed CAs that have CRLs, and when the store said so.
pub(crate) type KnownCas = (std::time::Instant, Vec<String>);

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub settings: Arc<AdminSettings>,
    /// Unseals managed-CA keys for issuing and CRL signing.
    pub master_key: Arc<MasterKey>,
    /// Built CRLs by CA id, with the store generation they were built at.
    crl_cache: Arc<Mutex<CrlCache>>,
    /// Held while a CRL request reads the store, so that a flood of CRL requests costs one store read or rebuild at
    /// a time, never one each.
    crl_build: Arc<tokio::sync::Mutex<()>>,
    /// The managed CAs that have CRLs, and when the store was last asked: the public listener answers requests for
    /// other ids from it without the store.
    crl_known: Arc<Mutex<Option<KnownCas>>>,
    /// OCSP answers being signed at once (see `certs::OCSP_SIGNING`).
    ocsp_signing: Arc<tokio::sync::Semaphore>,
    /// Renders the process's metrics in Prometheus' text format, for `GET /metrics`; none when not wired.
    metrics: Option<MetricsRender>,
    /// The dashboard's sign-in sessions (in memory: they do not survive a restart).
    sessions: Arc<dashboard::sessions::Sessions>,
    /// Failed dashboard sign-ins per client address, to slow down token guessing.
    sign_in_limiter: Arc<dashboard::limiter::SignInLimiter>,
    /// Requests and blocks per minute of the edge in this process; none when the API runs alone.
    traffic: Option<Arc<dyn TrafficSource>>,
    /// What `GET /readyz` asks besides the store; none when the API runs alone.
    readiness: Option<ReadinessCheck>,
}

/// Whether the process should get new traffic (`Err` says why not, e.g. it is draining).
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// How long `GET /readyz` waits for the store.
const READY_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Renders metrics in Prometheus' text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

impl AdminState {
    /// Serves `render()` at `GET /metrics` (no token: it is for the local Prometheus scraper, and the admin listener
    /// binds to localhost by default).
    pub fn with_metrics(mut self, render: MetricsRender) -> Self {
        self.metrics = Some(render);
        self
    }

    /// Serves the edge's traffic counts at `GET /accounts/{account_id}/portcullis/traffic` (the dashboard's
    /// overview chart).
    pub fn with_traffic(mut self, source: Arc<dyn TrafficSource>) -> Self {
        self.traffic = Some(source);
        self
    }

    /// Makes `GET /readyz` answer 503 while `check` fails (the edge draining for shutdown).
    pub fn with_readiness(mut self, check: ReadinessCheck) -> Self {
        self.readiness = Some(check);
        self
    }

    pub fn new(store: Store, settings: AdminSettings, master_key: Arc<MasterKey>) -> Self {
        AdminState {
            store,
            settings: Arc::new(settings),
            master_key,
            crl_cache: Arc::default(),
            crl_build: Arc::default(),
            crl_known: Arc::default(),
            ocsp_signing: Arc::new(tokio::sync::Semaphore::new(certs::OCSP_SIGNING)),
            metrics: None,
            sessions: Arc::default(),
            sign_in_limiter: Arc::default(),
            traffic: None,
            readiness: None,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Portcullis admin API", description = "Cloudflare-compatible mTLS management API."),
    servers((url = "/client/v4")),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes and their OpenAPI description, from one list so that they cannot drift apart.
fn api_routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::list_accounts))
        .routes(routes!(accounts::audit_logs))
        .routes(routes!(zones::create_zone, zones::list_zones))
        .routes(routes!(zones::get_zone, zones::delete_zone))
        .routes(routes!(
            url_normalization::get_url_normalization,
            url_normalization::put_url_normalization,
            url_normalization::delete_url_normalization
        ))
        .routes(routes!(hostnames::create_hostname, hostnames::list_hostnames))
        .routes(routes!(
            hostnames::get_hostname,
            hostnames::update_hostname,
            hostnames::delete_hostname
        ))
        .routes(routes!(associations::get_associations, associations::put_associations))
        .routes(routes!(mtls_check::get_mtls_check))
        .routes(routes!(access_settings::get_settings, access_settings::put_settings))
        .routes(routes!(rulesets::get_entrypoint, rulesets::put_entrypoint))
        .routes(routes!(rulesets::list_rulesets, rulesets::create_ruleset))
        .routes(routes!(
            rulesets::get_ruleset,
            rulesets::put_ruleset,
            rulesets::delete_ruleset
        ))
        .routes(routes!(rulesets::add_rule))
        .routes(routes!(rulesets::update_rule, rulesets::delete_rule))
        .routes(routes!(dashboard::validate::validate))
        .routes(routes!(lists::create_list, lists::list_lists))
        .routes(routes!(lists::get_list, lists::update_list, lists::delete_list))
        .routes(routes!(
            lists::list_items,
            lists::add_items,
            lists::replace_items,
            lists::delete_items
        ))
        .routes(routes!(lists::get_item))
        .routes(routes!(lists::get_operation))
        .routes(routes!(
            certs::create_client_certificate,
            certs::list_client_certificates
        ))
        .routes(routes!(
            certs::get_client_certificate,
            certs::patch_client_certificate,
            certs::revoke_client_certificate
        ))
        .routes(routes!(cert_policy::get_policy, cert_policy::put_policy))
        .routes(routes!(
            custom_certs::create_custom_certificate,
            custom_certs::list_custom_certificates
        ))
        .routes(routes!(
            custom_certs::get_custom_certificate,
            custom_certs::edit_custom_certificate,
            custom_certs::delete_custom_certificate
        ))
        .routes(routes!(
            managed_headers::get_managed_headers,
            managed_headers::patch_managed_headers
        ))
        .routes(routes!(certificate_packs::order_certificate_pack))
        .routes(routes!(
            acme_dns::get_acme_dns,
            acme_dns::set_acme_dns,
            acme_dns::delete_acme_dns
        ))
        .routes(routes!(certificate_packs::list_certificate_packs))
        .routes(routes!(
            certificate_packs::get_certificate_pack,
            certificate_packs::restart_certificate_pack,
            certificate_packs::delete_certificate_pack
        ))
        .routes(routes!(certs::list_managed_cas))
        .routes(routes!(certs::rotate_managed_ca))
        .routes(routes!(certs::retire_managed_ca))
        .routes(routes!(ca_requests::list_requests, ca_requests::create_request))
        .routes(routes!(ca_requests::install))
        .routes(routes!(ca_requests::delete_request))
        .routes(routes!(byoca::upload, byoca::list))
        .routes(routes!(byoca::get, byoca::delete))
        .routes(routes!(byoca::associations))
        .routes(routes!(byoca::put_crl))
        .routes(routes!(byoca::put_crl_urls))
        .routes(routes!(byoca::put_ocsp))
        .routes(routes!(byoca::put_crl_grace))
        .routes(routes!(byoca::add_revocation, byoca::list_revocations))
        .routes(routes!(byoca::delete_revocation))
        .routes(routes!(events::list_events))
        .routes(routes!(traffic::traffic))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(tokens::verify_token))
}

/// The OpenAPI document of the whole API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// The admin router: `/client/v4/…` behind token (or dashboard session) authentication, the unauthenticated OpenAPI
/// document, and the dashboard under `/dashboard`.
pub fn router(state: AdminState) -> Router {
    let (api, spec) = api_routes().split_for_parts();
    let spec = Arc::new(spec);
    let api = api
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        .layer(middleware::map_response(no_store))
        .with_state(state.clone());
    Router::new()
        .route(
            "/client/v4/openapi.json",
            get(move || {
                let spec = spec.clone();
                async move { axum::Json(spec.as_ref().clone()) }
            }),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // CRLs are public: whoever verifies our certificates must be able to fetch them.
        .route("/crl/{file}", get(certs::crl))
        .route("/client/v4/crl/{file}", get(certs::crl))
        // So is OCSP, for the same reason.
        .route(
            "/ocsp/{ca_id}",
            post(certs::ocsp_post).layer(DefaultBodyLimit::max(OCSP_BODY_BYTES)),
        )
        .route("/ocsp/{ca_id}/{*request}", get(certs::ocsp_get))
        .nest("/client/v4", api)
        .merge(dashboard::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The router of the public listener: `GET /crl/<ca-id>.crl` (the managed CAs' CRLs, as the admin listener serves
/// them) and the health checks `/healthz` and `/readyz`, and nothing else, so that relying parties and load
/// balancers reach neither the API, the dashboard nor `/metrics`.
pub fn public_router(state: AdminState) -> Router {
    Router::new()
        .route("/crl/{file}", get(certs::public_crl))
        .route(
            "/ocsp/{ca_id}",
            post(certs::public_ocsp_post).layer(DefaultBodyLimit::max(OCSP_BODY_BYTES)),
        )
        .route("/ocsp/{ca_id}/{*request}", get(certs::public_ocsp_get))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// API answers are never cached: some carry secrets once (a new token's value, an issued private key or PKCS#12),
/// and every one reflects state that changes under it.
async fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    resp
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness, for load balancers and Kubernetes: 200 while this node should get new connections, 503 with the
/// reason while it drains for shutdown or cannot reach its store (the edge keeps serving its last configuration,
/// but revocations and changes would no longer reach it).
async fn readyz(axum::extract::State(state): axum::extract::State<AdminState>) -> Response {
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response();
    if let Some(check) = &state.readiness
        && let Err(why) = check()
    {
        return unavailable(why);
    }
    match tokio::time::timeout(READY_STORE_TIMEOUT, state.store.generation()).await {
        Ok(Ok(_)) => "ready\n".into_response(),
        Ok(Err(e)) => {
            // The error can name database hosts and users; `/readyz` is also on the public listener.
            tracing::warn!(error = %e, "readiness: the store did not answer");
            unavailable("the store did not answer (see the log)".to_owned())
        }
        Err(_) => unavailable(format!("the store did not answer within {READY_STORE_TIMEOUT:?}")),
    }
}

async fn metrics(axum::extract::State(state): axum::extract::State<AdminState>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(),
        )
            .into_response(),
        None => no_route().await,
    }
}

async fn no_route() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, codes::NO_ROUTE, "No route for that URI").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "Method not allowed for this path",
    )
    .into_response()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_certs;
#[cfg(test)]
mod tests_dashboard_api;
