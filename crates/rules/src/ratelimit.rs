//! The `ratelimit` parameters of rate-limiting rules (Cloudflare's `http_ratelimit` phase), in Cloudflare's JSON
//! shape: what identifies a client (`characteristics`), how many requests it may make per period, and how long it
//! stays blocked after going over. Validated and parsed here, with Cloudflare's allowed values; the counting,
//! which needs a clock and shared state, is the proxy's.
//!
//! Characteristics: `cf.colo.id` (accepted as in Cloudflare's API; one edge node is one location, so it adds
//! nothing), any field with a single value (`ip.src`, `http.host`, `cf.tls_client_auth.cert_fingerprint_sha256`,
//! `cf.tls_client_auth.cert_serial`, …: counting per client certificate needs no forwarded header here), and
//! `http.request.headers["name"]`. Not supported: `counting_expression` (the rule's own expression decides what
//! is counted), and characteristics Cloudflare computes elsewhere (JA3, query or cookie values).

use serde::{Deserialize, Serialize};

use crate::schema::{FieldId, Kind, field_by_name};

/// Periods Cloudflare allows, in seconds.
pub const PERIODS: [u32; 6] = [10, 60, 120, 300, 600, 3600];
/// Mitigation timeouts Cloudflare allows, in seconds (0: blocked only while over the rate).
pub const MITIGATION_TIMEOUTS: [u32; 8] = [0, 10, 60, 120, 300, 600, 3600, 86400];
/// Most characteristics per rule.
pub const MAX_CHARACTERISTICS: usize = 5;
/// Largest `requests_per_period`.
pub const MAX_REQUESTS_PER_PERIOD: u64 = 1_000_000_000;

/// A rule's `ratelimit`, as Cloudflare's rulesets API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// What makes two requests the same client's, e.g. `["cf.colo.id", "cf.tls_client_auth.cert_fingerprint_sha256"]`.
    pub characteristics: Vec<String>,
    /// Seconds over which requests are counted: one of [`PERIODS`].
    pub period: u32,
    /// Requests a client may make per period; the next ones get the rule's action.
    pub requests_per_period: u64,
    /// Seconds a client that went over stays blocked: one of [`MITIGATION_TIMEOUTS`].
    #[serde(default)]
    pub mitigation_timeout: u32,
    /// Accepted for compatibility: every request this edge counts goes to the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_to_origin: Option<bool>,
    /// Not supported unless empty; see the module documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counting_expression: Option<String>,
}

/// One parsed characteristic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Characteristic {
    /// `cf.colo.id`: the same for every request of this node.
    Colo,
    /// A field with one value.
    Field(FieldId),
    /// A request header, by its lower-case name (all its values, joined).
    Header(String),
}

/// A validated [`RateLimit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRateLimit {
    /// In the order given; they make up the counting key.
    pub characteristics: Vec<Characteristic>,
    /// Seconds.
    pub period: u32,
    /// Requests allowed per period.
    pub requests_per_period: u64,
    /// Seconds blocked after going over (0: only while over).
    pub mitigation_timeout: u32,
}

fn list(values: &[u32]) -> String {
    values.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

fn characteristic(text: &str) -> Result<Characteristic, String> {
    if text == "cf.colo.id" {
        return Ok(Characteristic::Colo);
    }
    if let Some(name) = text
        .strip_prefix("http.request.headers[\"")
        .and_then(|rest| rest.strip_suffix("\"]"))
    {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        return if valid {
            Ok(Characteristic::Header(name.to_ascii_lowercase()))
        } else {
            Err(format!("characteristic {text:?}: {name:?} is not a header name"))
        };
    }
    let field = field_by_name(text).ok_or_else(|| format!("characteristic {text:?} is not a field"))?;
    match field.kind() {
        Kind::Bool | Kind::Int | Kind::Bytes | Kind::Ip => Ok(Characteristic::Field(field.id())),
        Kind::BytesArray | Kind::BytesArrayMap => Err(format!(
            "characteristic {text:?} has several values; use a field with one value or http.request.headers[\"name\"]"
        )),
    }
}

impl RateLimit {
    /// Checks every parameter against Cloudflare's allowed values; the error names the parameter.
    pub fn compile(&self) -> Result<CompiledRateLimit, String> {
        if !PERIODS.contains(&self.period) {
            return Err(format!(
                "period must be one of {} seconds, found {}",
                list(&PERIODS),
                self.period
            ));
        }
        if !MITIGATION_TIMEOUTS.contains(&self.mitigation_timeout) {
            return Err(format!(
                "mitigation_timeout must be one of {} seconds, found {}",
                list(&MITIGATION_TIMEOUTS),
                self.mitigation_timeout
            ));
        }
        if !(1..=MAX_REQUESTS_PER_PERIOD).contains(&self.requests_per_period) {
            return Err(format!(
                "requests_per_period must be between 1 and {MAX_REQUESTS_PER_PERIOD}, found {}",
                self.requests_per_period
            ));
        }
        if self
            .counting_expression
            .as_deref()
            .is_some_and(|e| !e.trim().is_empty())
        {
            return Err("counting_expression is not supported: the rule's expression decides what is counted".into());
        }
        if self.characteristics.is_empty() || self.characteristics.len() > MAX_CHARACTERISTICS {
            return Err(format!(
                "characteristics must list 1 to {MAX_CHARACTERISTICS} entries, found {}",
                self.characteristics.len()
            ));
        }
        let mut characteristics = Vec::with_capacity(self.characteristics.len());
        for text in &self.characteristics {
            let c = characteristic(text)?;
            if characteristics.contains(&c) {
                return Err(format!("characteristic {text:?} is listed twice"));
            }
            characteristics.push(c);
        }
        Ok(CompiledRateLimit {
            characteristics,
            period: self.period,
            requests_per_period: self.requests_per_period,
            mitigation_timeout: self.mitigation_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields;

    fn limit(characteristics: &[&str], period: u32, rpp: u64, timeout: u32) -> RateLimit {
        RateLimit {
            characteristics: characteristics.iter().map(|s| (*s).to_owned()).collect(),
            period,
            requests_per_period: rpp,
            mitigation_timeout: timeout,
            requests_to_origin: None,
            counting_expression: None,
        }
    }

    #[test]
    fn cloudflare_shapes_compile() {
        let c = limit(
            &[
                "cf.colo.id",
                "cf.tls_client_auth.cert_fingerprint_sha256",
                "http.request.headers[\"X-Api-Key\"]",
            ],
            60,
            100,
            600,
        )
        .compile()
        .unwrap();
        assert_eq!(
            c.characteristics,
            [
                Characteristic::Colo,
                Characteristic::Field(fields::CF_TLS_CLIENT_AUTH_CERT_FINGERPRINT_SHA256),
                Characteristic::Header("x-api-key".into())
            ]
        );
        let json: RateLimit = serde_json::from_str(
            r#"{"characteristics":["ip.src","cf.colo.id"],"period":10,"requests_per_period":5,"mitigation_timeout":0,"requests_to_origin":false,"counting_expression":""}"#,
        )
        .unwrap();
        assert!(json.compile().is_ok());
        assert!(
            serde_json::from_str::<RateLimit>(
                r#"{"characteristics":[],"period":10,"requests_per_period":5,"score":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases = [
            (
                limit(&["ip.src"], 30, 1, 0),
                "period must be one of 10, 60, 120, 300, 600, 3600 seconds, found 30",
            ),
            (
                limit(&["ip.src"], 10, 1, 5),
                "mitigation_timeout must be one of 0, 10, 60, 120, 300, 600, 3600, 86400 seconds, found 5",
            ),
            (
                limit(&["ip.src"], 10, 0, 0),
                "requests_per_period must be between 1 and 1000000000, found 0",
            ),
            (
                limit(&[], 10, 1, 0),
                "characteristics must list 1 to 5 entries, found 0",
            ),
            (
                limit(&["ip.srcc"], 10, 1, 0),
                "characteristic \"ip.srcc\" is not a field",
            ),
            (
                limit(&["http.request.headers"], 10, 1, 0),
                "characteristic \"http.request.headers\" has several values; use a field with one value or http.request.headers[\"name\"]",
            ),
            (
                limit(&["http.request.headers[\"a b\"]"], 10, 1, 0),
                "characteristic \"http.request.headers[\\\"a b\\\"]\": \"a b\" is not a header name",
            ),
            (
                limit(&["ip.src", "ip.src"], 10, 1, 0),
                "characteristic \"ip.src\" is listed twice",
            ),
        ];
        for (rl, message) in cases {
            assert_eq!(rl.compile().unwrap_err(), message);
        }
        let mut counting = limit(&["ip.src"], 10, 1, 0);
        counting.counting_expression = Some("http.request.uri.path eq \"/\"".into());
        assert!(
            counting
                .compile()
                .unwrap_err()
                .starts_with("counting_expression is not supported")
        );
    }
}
