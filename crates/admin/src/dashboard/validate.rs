//! `POST /rules/validate` (Portcullis extension): compiles an expression without storing anything, for the
//! dashboard's expression editor (validation as you type).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AdminState;
use crate::api::{ApiJson, ApiResult, ok};

/// Body: the expression to check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateExpression {
    pub expression: String,
}

/// Whether the expression compiles, and if not, where and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct Validation {
    pub valid: bool,
    /// What is wrong (with the hint, if any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// 1-based line of the problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column of the problem, in characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The multi-line diagnostic with the source line and a caret under the problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<String>,
}

/// Check a rule expression (nothing is stored).
#[utoipa::path(post, path = "/rules/validate", tag = "rulesets",
    request_body = ValidateExpression,
    responses((status = 200, description = "Whether it compiles, with the caret diagnostic when not", body = Validation)))]
pub async fn validate(State(state): State<AdminState>, ApiJson(body): ApiJson<ValidateExpression>) -> ApiResult {
    // Dashboard sessions hold tokens for the whole account, which may list the lists.
    let lists = crate::rulesets::lists_named_in(
        &state,
        std::iter::once(body.expression.as_str()),
        crate::rulesets::Suggest::ListNames,
    )
    .await?;
    Ok(ok(check(&body.expression, &lists)))
}

fn check(expression: &str, lists: &portcullis_rules::Lists) -> Validation {
    match portcullis_rules::compile_with(expression, lists) {
        Ok(_) => Validation {
            valid: true,
            message: None,
            line: None,
            column: None,
            diagnostic: None,
        },
        Err(err) => Validation {
            valid: false,
            message: Some(match err.hint() {
                Some(hint) => format!("{}; {hint}", err.message()),
                None => err.message().to_owned(),
            }),
            line: Some(err.line()),
            column: Some(err.column()),
            diagnostic: Some(err.render(expression)),
        },
    }
}
