//! Cloudflare's Rules language for Portcullis: parse, type-check, compile and evaluate
//! expressions such as
//! `(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}`,
//! and rulesets of such expressions with `block`, `log` and `skip` actions.
//!
//! * [`compile`] turns source text into a [`Program`] or a [`CompileError`] with a position and
//!   a caret rendering. Everything that can go wrong goes wrong here.
//! * [`Program::eval`] evaluates against a [`Context`] (field values indexed by [`FieldId`]) and
//!   cannot fail. [`Program::fields`] says which fields to fill.
//! * [`schema()`] lists the fields; [`parse_field_value`] parses textual values for them.
//! * [`Ruleset`] / [`CompiledRuleset`] handle ordered rules, indexed by the literals they require.
//!
//! ```
//! use portcullis_rules::{compile, fields, Context};
//!
//! let rule = compile(
//!     r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked)
//!        and http.request.uri.path in {"/api"}"#,
//! )?;
//! // Fill only what the rule reads; the rest reads as defaults (false, "", 0, …).
//! assert!(rule.fields().contains(fields::HTTP_REQUEST_URI_PATH));
//! let mut ctx = Context::new();
//! ctx.set(fields::HTTP_REQUEST_URI_PATH, "/api")?;
//! assert!(rule.eval(&ctx));
//! ctx.set(fields::CF_TLS_CLIENT_AUTH_CERT_VERIFIED, true)?;
//! assert!(!rule.eval(&ctx));
//!
//! let err = compile(r#"http.hots eq "x""#).expect_err("a typo");
//! assert_eq!(err.to_string(), r#"unknown field "http.hots" at 1:1; did you mean "http.host"?"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Named lists (`ip.src in $office`) are resolved at compile time from a [`Lists`] passed to
//! [`compile_with`] (or [`CompiledRuleset::compile_with`]).
//!
//! Not here: actions other than block/log/skip,
//! Cloudflare functions limited to transform rules (`regex_replace`, `uuidv4`, …), and
//! anything about how the proxy derives field values.

#![warn(missing_docs)]

mod compile;
mod error;
mod eval;
mod funcs;
pub mod lists;
mod parse;
pub mod ratelimit;
mod ruleset;
mod schema;
mod types;

pub use compile::{FUNCTIONS, Pinned, Program, REGEX_SIZE_LIMIT, compile, compile_with};
pub use error::{CompileError, MAX_EXPRESSION_BYTES, MAX_NESTING, MAX_NODES};
pub use funcs::Wildcard;
pub use lists::{List, Lists};
pub use ratelimit::{Characteristic, CompiledRateLimit, RateLimit};
pub use ruleset::{
    Action, ActionParameters, BlockResponse, CompiledRule, CompiledRuleset, MAX_RESPONSE_BYTES, RESPONSE_CONTENT_TYPES,
    Rule, RuleProblem, Ruleset, RulesetError, SKIPPABLE_PHASES, Verdict,
};
pub use schema::{
    Context, Field, FieldId, FieldSet, ValueError, field_by_name, fields, parse_field_value, parse_value, schema,
};
pub use types::{Type, Value, ValueMap};

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub(crate) fn suggest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
