//! Cloudflare's JSON envelope, the API's error type, and the extractors (JSON body, query, path) whose rejections
//! come back in it.
//!
//! Every response has the shape `{success, errors: [{code, message}], messages, result, result_info?}`. This module
//! is the one place where errors become HTTP responses: 4xx carry a message that names the problem; 5xx say only
//! that something failed on the server, and the details go to the log.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::ToSchema;

use portcullis_store::StoreError;

/// Cloudflare's error codes that Portcullis uses, and its own where Cloudflare documents none.
pub mod codes {
    /// Missing, malformed or unknown API token (Cloudflare's).
    pub const AUTHENTICATION: u32 = 10000;
    /// The token may not do this, e.g. a read token sending a write (Cloudflare's).
    pub const UNAUTHORIZED: u32 = 9109;
    /// The request body is not valid JSON of the expected shape (Cloudflare's "Malformed JSON in request body").
    pub const MALFORMED_JSON: u32 = 6007;
    /// No such object (Cloudflare's "Could not route to …, perhaps your object identifier is invalid?").
    pub const NOT_FOUND: u32 = 7003;
    /// No such path (Cloudflare's "No route for that URI").
    pub const NO_ROUTE: u32 = 7000;
    /// The method is not allowed on this path.
    pub const METHOD_NOT_ALLOWED: u32 = 7001;
    /// A field's value is not acceptable (Portcullis).
    pub const INVALID: u32 = 1400;
    /// The write conflicts with the current state (Portcullis).
    pub const CONFLICT: u32 = 1409;
    /// The body is larger than the limit (Portcullis).
    pub const TOO_LARGE: u32 = 1413;
    /// Something failed on the server (Portcullis).
    pub const INTERNAL: u32 = 1500;
    /// What was asked for depends on a part that does not run here (Portcullis).
    pub const UNAVAILABLE: u32 = 1503;
    /// Too many failed attempts; retry later (Portcullis).
    pub const TOO_MANY: u32 = 1429;
}

/// One error in the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorItem {
    pub code: u32,
    pub message: String,
}

/// Pagination facts for list results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResultInfo {
    pub page: u32,
    pub per_page: u32,
    pub count: u64,
    pub total_count: u64,
    pub total_pages: u64,
}

impl ResultInfo {
    /// The facts for page `page` of `per_page` holding `count` items out of `total_count`.
    pub fn new(page: u32, per_page: u32, count: usize, total_count: u64) -> Self {
        let per_page = per_page.max(1);
        ResultInfo {
            page,
            per_page,
            count: count as u64,
            total_count,
            total_pages: total_count.div_ceil(u64::from(per_page)),
        }
    }
}

/// The response envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_info: Option<ResultInfo>,
}

/// A successful response: `result` in the envelope.
pub fn ok<T: Serialize>(result: T) -> Response {
    Json(Envelope {
        success: true,
        errors: vec![],
        messages: vec![],
        result: Some(result),
        result_info: None,
    })
    .into_response()
}

/// A successful response with `messages` (warnings about what was written, which is in effect nonetheless).
pub fn ok_with<T: Serialize>(status: StatusCode, result: T, messages: Vec<ErrorItem>) -> Response {
    let body = Envelope {
        success: true,
        errors: vec![],
        messages,
        result: Some(result),
        result_info: None,
    };
    (status, Json(body)).into_response()
}

/// A successful response with a status other than 200 (e.g. 201).
pub fn ok_status<T: Serialize>(status: StatusCode, result: T) -> Response {
    (status, ok(result)).into_response()
}

/// A successful list response with pagination facts.
pub fn ok_page<T: Serialize>(result: Vec<T>, info: ResultInfo) -> Response {
    Json(Envelope {
        success: true,
        errors: vec![],
        messages: vec![],
        result: Some(result),
        result_info: Some(info),
    })
    .into_response()
}

/// A successful list response holding the whole list as its one page.
pub fn ok_all<T: Serialize>(result: Vec<T>) -> Response {
    let len = result.len();
    let info = ResultInfo::new(1, u32::try_from(len).unwrap_or(u32::MAX).max(1), len, len as u64);
    ok_page(result, info)
}

/// Why a request failed, as the client will be told.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

pub type ApiResult = Result<Response, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with a message naming the problem.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID, message)
    }

    /// 404 for an unknown object.
    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("{what} {id:?} not found"),
        )
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, message)
    }

    /// 500; `detail` goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "admin API: internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body: Envelope<Value> = Envelope {
            success: false,
            errors: vec![ErrorItem {
                code: self.code,
                message: self.message,
            }],
            messages: vec![],
            result: None,
            result_info: None,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { kind, id } => ApiError::not_found(kind, &id),
            StoreError::Conflict(message) => ApiError::conflict(message),
            StoreError::Invalid(message) => ApiError::invalid(message),
            StoreError::LimitReached { code, message } => ApiError::new(StatusCode::BAD_REQUEST, code, message),
            other @ (StoreError::UnsupportedUrl(_) | StoreError::Database(_) | StoreError::Migrate(_)) => {
                ApiError::internal(other)
            }
        }
    }
}

/// A JSON body whose rejections (bad JSON, wrong types, unknown fields, too large) come back in the envelope with a
/// message that names the problem and where.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let essence = v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
                essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
            });
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    codes::TOO_LARGE,
                    format!(
                        "request body is larger than the limit of {} bytes",
                        crate::MAX_BODY_BYTES
                    ),
                )
            } else {
                ApiError::new(e.status(), codes::MALFORMED_JSON, e.body_text())
            }
        })?;
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::MALFORMED_JSON,
                "the request body must be JSON with Content-Type: application/json",
            ));
        }
        if json_has_nul(&bytes) {
            // PostgreSQL cannot store it in text, SQLite can: refused on both, so both answer alike.
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::MALFORMED_JSON,
                "invalid request body: a string contains a NUL character (\\u0000)",
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// The longest name (tokens, rulesets, uploaded certificates) the API stores, in characters: names and descriptions
/// go into every edge snapshot and every listing, so they are bounded like everything else a client sends.
pub const MAX_NAME_CHARS: usize = 256;
/// The longest description (rules, rulesets), in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// The longest rule `id` or `ref`, in bytes (a key of the store's indexes on both backends).
pub const MAX_RULE_ID_BYTES: usize = 128;

/// Refuses `text` (the field `what`) if it is longer than `max` characters or holds control characters.
pub fn check_text(what: &str, text: &str, max: usize) -> Result<(), ApiError> {
    let chars = text.chars().count();
    if chars > max {
        return Err(ApiError::invalid(format!(
            "{what} is {chars} characters long; the limit is {max}"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!("{what} contains a control character")));
    }
    Ok(())
}

/// Whether JSON text has a `\u0000` escape (a raw NUL is not valid JSON anyway). Backslashes appear only inside
/// strings, where each starts an escape of its own, so one pass over the escapes finds them.
fn json_has_nul(text: &[u8]) -> bool {
    let mut i = 0;
    while let Some(at) = text[i..].iter().position(|b| *b == b'\\') {
        let escape = i + at + 1;
        if text.get(escape) == Some(&b'u') && text.get(escape + 1..escape + 5) == Some(b"0000") {
            return true;
        }
        // The escaped character (`\\` included) is skipped with it.
        i = escape + 1;
        if i >= text.len() {
            return false;
        }
    }
    false
}

/// Path parameters whose rejections come back in the envelope; a path with a NUL (`%00`) in it is refused, so that
/// SQLite and PostgreSQL (which cannot store one) answer alike.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path().as_bytes();
        if path.windows(3).any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0') {
            return Err(ApiError::invalid("the path contains a NUL character (%00)"));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                codes::INVALID,
                format!("invalid path: {}", rejection.body_text()),
            )),
        }
    }
}

/// [`ApiJson`], except that a request without a body reads as `T::default()`: for calls Cloudflare documents
/// without one.
#[derive(Debug)]
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S, T> FromRequest<S> for ApiJsonOrEmpty<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::body::HttpBody as _;
        if req.body().size_hint().exact() == Some(0) {
            return Ok(ApiJsonOrEmpty(T::default()));
        }
        ApiJson::from_request(req, state)
            .await
            .map(|ApiJson(value)| ApiJsonOrEmpty(value))
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(err) => ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::MALFORMED_JSON,
            format!(
                "invalid request body: {}",
                std::error::Error::source(&err).map_or(err.body_text(), |s| s.to_string())
            ),
        ),
        JsonRejection::JsonSyntaxError(err) => ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::MALFORMED_JSON,
            format!(
                "malformed JSON in request body: {}",
                std::error::Error::source(&err).map_or(err.body_text(), |s| s.to_string())
            ),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::MALFORMED_JSON,
            "the request body must be JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::TOO_LARGE,
            format!(
                "request body is larger than the limit of {} bytes",
                crate::MAX_BODY_BYTES
            ),
        ),
        other => ApiError::new(other.status(), codes::MALFORMED_JSON, other.body_text()),
    }
}

/// Query parameters whose rejections come back in the envelope.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::invalid(format!("invalid query string: {}", rejection.body_text()))
}

#[cfg(test)]
mod tests {
    use super::json_has_nul;

    #[test]
    fn nul_escapes_are_found_and_escaped_backslashes_are_not() {
        assert!(json_has_nul(br#"{"a": "x\u0000"}"#));
        assert!(json_has_nul(br#"["\"", "\u0000"]"#));
        assert!(!json_has_nul(br#"{"a": "x\\u0000"}"#));
        assert!(!json_has_nul(br#"{"a": "\u0001 \\ \n"}"#));
        assert!(!json_has_nul(br#"{"a": "trailing\"#));
        assert!(!json_has_nul(b""));
    }
}
