//! `portcullis rule …`: the custom rules of a zone (its `http_request_firewall_custom` entry-point ruleset) on a
//! running server. Expressions are compiled by the server; an invalid one fails with the server's caret diagnostic.

use std::process::ExitCode;

use anyhow::bail;
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{ApiArgs, ApiClient, ApiFailure, array, print_json, print_table, s, zone_or_only, zones};

/// The phase whose entry-point ruleset holds the zone's custom rules.
const PHASE: &str = "http_request_firewall_custom";
const RATELIMIT_PHASE: &str = "http_ratelimit";

#[derive(Debug, clap::Args)]
pub struct RuleArgs {
    #[command(subcommand)]
    pub command: RuleCommand,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum RuleCommand {
    /// Add a rule after the zone's other custom rules.
    ///
    /// A block rule answers 403 unless --status, --content-type or --body give a custom response
    /// (defaults then: 403, text/plain, an empty body).
    Add {
        /// The Rules-language expression, e.g. 'http.request.uri.path eq "/admin"'.
        #[arg(long)]
        expression: String,
        #[arg(long, value_parser = ["block", "log", "skip"])]
        action: String,
        /// Status code of a custom block response (400 to 499).
        #[arg(long, value_name = "N")]
        status: Option<u16>,
        /// Content type of a custom block response: text/html, text/plain, application/json or text/xml.
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
        /// Body of a custom block response (at most 2 KB).
        #[arg(long, value_name = "TEXT")]
        body: Option<String>,
        /// What a skip rule skips for the requests it matches: `rules` (the remaining custom rules; the default)
        /// and/or `ratelimit` (the rate limits). Repeat for both.
        #[arg(long, value_name = "rules|ratelimit", value_parser = ["rules", "ratelimit"])]
        skip: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Zone id or name; by default the only zone there is.
        #[arg(long)]
        zone: Option<String>,
    },
    /// Add the "mTLS-enforced authentication" rule: block requests to the paths (on the hosts) that come without a
    /// verified client certificate, or with a revoked one.
    ///
    /// The expression is Cloudflare's mTLS rule template made revocation-aware:
    /// (not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked)
    /// and http.request.uri.path in {"/a" "/b"} [and http.host in {"h1" "h2"}]
    AddMtls {
        /// URI paths to protect (exact matches).
        #[arg(long = "path", value_name = "PATH", required = true, num_args = 1..)]
        paths: Vec<String>,
        /// Only on these hostnames; by default on every hostname of the zone.
        #[arg(long = "host", value_name = "HOST", num_args = 1..)]
        hosts: Vec<String>,
        /// Zone id or name; by default the only zone there is.
        #[arg(long)]
        zone: Option<String>,
    },
    /// Add a rate limit (Cloudflare's rate limiting rules): at most --requests per --period seconds per client
    /// certificate (--per cert, the default), client address (--per ip) or header (--per header:NAME). Requests that
    /// --expression matches are counted: by default, those with a verified certificate for --per cert, and every
    /// request otherwise. Over the limit: 429 with Retry-After (or only a security event with --action log).
    #[command(name = "add-ratelimit")]
    AddRateLimit {
        #[arg(long, default_value = "cert", value_name = "cert|ip|header:NAME")]
        per: String,
        /// Requests allowed per period.
        #[arg(long, value_name = "N")]
        requests: u64,
        /// Seconds: 10, 60, 120, 300, 600 or 3600.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        period: u32,
        /// Seconds a client that went over stays blocked (0: only while over): 0, 10, 60, 120, 300, 600, 3600 or
        /// 86400.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        timeout: u32,
        /// Which requests count (a Rules-language expression).
        #[arg(long)]
        expression: Option<String>,
        #[arg(long, value_parser = ["block", "log"], default_value = "block")]
        action: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Zone id or name; by default the only zone there is.
        #[arg(long)]
        zone: Option<String>,
    },
    /// List the custom rules, in evaluation order (of --zone, or of every zone). --json prints the rules.
    List {
        #[arg(long)]
        zone: Option<String>,
    },
    /// Delete a rule.
    Remove {
        id: String,
        /// Zone id or name; by default every zone is searched for the rule.
        #[arg(long)]
        zone: Option<String>,
    },
    /// Enable a disabled rule.
    Enable {
        id: String,
        #[arg(long)]
        zone: Option<String>,
    },
    /// Disable a rule: it stays in the ruleset (and keeps being validated) but is not evaluated.
    Disable {
        id: String,
        #[arg(long)]
        zone: Option<String>,
    },
}

/// A Rules-language string literal holding exactly `text`.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn set(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("{{{}}}", quoted.join(" "))
}

/// The expression of `rule add-mtls`.
fn mtls_expression(paths: &[String], hosts: &[String]) -> String {
    let mut expression = format!(
        "(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {}",
        set(paths)
    );
    // http.host is lower-case without a trailing dot; a wildcard hostname is no value of it, but a pattern
    // for the wildcard operator.
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let (wild, exact): (Vec<String>, Vec<String>) = hosts.into_iter().partition(|h| h.starts_with("*."));
    let mut tests: Vec<String> = wild
        .iter()
        .map(|h| format!("http.host wildcard {}", quote(h)))
        .collect();
    if !exact.is_empty() {
        tests.insert(0, format!("http.host in {}", set(&exact)));
    }
    match tests.len() {
        0 => {}
        1 => expression.push_str(&format!(" and {}", tests[0])),
        _ => expression.push_str(&format!(" and ({})", tests.join(" or "))),
    }
    expression
}

fn entrypoint_path(zone: &Value, phase: &str) -> String {
    format!("/zones/{}/rulesets/phases/{phase}/entrypoint", s(zone, "id"))
}

/// The zone's entry-point ruleset of `phase`, or `None` when it has none yet.
async fn entrypoint(api: &ApiClient, zone: &Value, phase: &str) -> anyhow::Result<Option<Value>> {
    match api.get(&entrypoint_path(zone, phase)).await {
        Ok(rs) => Ok(Some(rs.result)),
        Err(err) if ApiFailure::is_not_found(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Appends `rule` to the zone's ruleset of `phase` (creating the ruleset when there is none) and returns the
/// ruleset.
async fn add(api: &ApiClient, zone: &Value, phase: &str, rule: &Value) -> anyhow::Result<Value> {
    Ok(match entrypoint(api, zone, phase).await? {
        Some(rs) => {
            let path = format!("/zones/{}/rulesets/{}/rules", s(zone, "id"), s(&rs, "id"));
            api.send(Method::POST, &path, rule).await?.result
        }
        None => {
            api.send(Method::PUT, &entrypoint_path(zone, phase), &json!({ "rules": [rule] }))
                .await?
                .result
        }
    })
}

/// The rule of `rule add-ratelimit`.
fn ratelimit_rule(
    per: &str,
    requests: u64,
    period: u32,
    timeout: u32,
    expression: Option<String>,
    action: &str,
    description: &str,
) -> anyhow::Result<Value> {
    let (characteristic, default_expression) = match per {
        "cert" => (
            "cf.tls_client_auth.cert_fingerprint_sha256".to_owned(),
            "cf.tls_client_auth.cert_verified",
        ),
        "ip" => ("ip.src".to_owned(), "true"),
        other => match other.strip_prefix("header:").filter(|n| !n.is_empty()) {
            Some(name) => (
                format!("http.request.headers[{}]", quote(&name.to_ascii_lowercase())),
                "true",
            ),
            None => bail!("--per must be cert, ip or header:NAME, not {other:?}"),
        },
    };
    Ok(json!({
        "expression": expression.unwrap_or_else(|| default_expression.to_owned()),
        "action": action,
        "description": description,
        "ratelimit": {
            "characteristics": ["cf.colo.id", characteristic],
            "period": period,
            "requests_per_period": requests,
            "mitigation_timeout": timeout,
        },
    }))
}

/// The zone and ruleset holding rule `id`: in --zone, or in whichever zone has it.
async fn find_rule(api: &ApiClient, zone: Option<&str>, id: &str) -> anyhow::Result<(Value, Value)> {
    if id.is_empty() || id.contains(['/', '?', '#', '%']) {
        bail!("{id:?} is not a rule id");
    }
    let candidates = match zone {
        Some(zone) => vec![zone_or_only(api, Some(zone)).await?],
        None => zones(api).await?,
    };
    for zone in candidates {
        for phase in [PHASE, RATELIMIT_PHASE] {
            if let Some(rs) = entrypoint(api, &zone, phase).await?
                && array(&rs["rules"]).iter().any(|r| s(r, "id") == id)
            {
                return Ok((zone, rs));
            }
        }
    }
    match zone {
        Some(zone) => bail!("no rule {id:?} in zone {zone}"),
        None => bail!("no rule {id:?} in any zone"),
    }
}

fn rule_row(rule: &Value) -> Vec<String> {
    vec![
        s(rule, "id"),
        s(rule, "enabled"),
        s(rule, "action"),
        s(rule, "description"),
        s(rule, "expression"),
    ]
}

pub async fn rule(args: RuleArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let json = args.api.json;
    match args.command {
        RuleCommand::Add {
            expression,
            action,
            status,
            content_type,
            body,
            skip,
            description,
            zone,
        } => {
            let mut rule = json!({ "expression": expression, "action": action, "description": description });
            if !skip.is_empty() {
                if action != "skip" {
                    bail!("--skip needs --action skip");
                }
                let mut params = json!({});
                if skip.iter().any(|s| s == "rules") {
                    params["ruleset"] = json!("current");
                }
                if skip.iter().any(|s| s == "ratelimit") {
                    params["phases"] = json!(["http_ratelimit"]);
                }
                rule["action_parameters"] = params;
            }
            if status.is_some() || content_type.is_some() || body.is_some() {
                if action != "block" {
                    bail!("a custom response (--status, --content-type, --body) needs --action block");
                }
                rule["action_parameters"] = json!({ "response": {
                    "status_code": status.unwrap_or(403),
                    "content_type": content_type.as_deref().unwrap_or("text/plain"),
                    "content": body.unwrap_or_default(),
                }});
            }
            let zone = zone_or_only(&api, zone.as_deref()).await?;
            let rs = add(&api, &zone, PHASE, &rule).await?;
            report_added(&rs, &zone, json)?;
        }
        RuleCommand::AddRateLimit {
            per,
            requests,
            period,
            timeout,
            expression,
            action,
            description,
            zone,
        } => {
            let rule = ratelimit_rule(&per, requests, period, timeout, expression, &action, &description)?;
            let zone = zone_or_only(&api, zone.as_deref()).await?;
            let rs = add(&api, &zone, RATELIMIT_PHASE, &rule).await?;
            report_added(&rs, &zone, json)?;
        }
        RuleCommand::AddMtls { paths, hosts, zone } => {
            let rule = json!({
                "expression": mtls_expression(&paths, &hosts),
                "action": "block",
                "description": "mTLS-enforced authentication",
            });
            let zone = zone_or_only(&api, zone.as_deref()).await?;
            let rs = add(&api, &zone, PHASE, &rule).await?;
            report_added(&rs, &zone, json)?;
        }
        RuleCommand::List { zone } => {
            let zones = match zone {
                Some(zone) => vec![zone_or_only(&api, Some(&zone)).await?],
                None => zones(&api).await?,
            };
            let mut all = Vec::new();
            let mut rows = Vec::new();
            for zone in &zones {
                if let Some(rs) = entrypoint(&api, zone, PHASE).await? {
                    for rule in array(&rs["rules"]) {
                        let mut row = rule_row(rule);
                        if zones.len() > 1 {
                            row.insert(1, s(zone, "name"));
                        }
                        rows.push(row);
                        all.push(rule.clone());
                    }
                }
            }
            if json {
                print_json(&Value::Array(all))?;
            } else {
                let mut headers = vec!["ID", "ENABLED", "ACTION", "DESCRIPTION", "EXPRESSION"];
                if zones.len() > 1 {
                    headers.insert(1, "ZONE");
                }
                print_table(&headers, &rows);
            }
        }
        RuleCommand::Remove { id, zone } => {
            let (zone, rs) = find_rule(&api, zone.as_deref(), &id).await?;
            let path = format!("/zones/{}/rulesets/{}/rules/{id}", s(&zone, "id"), s(&rs, "id"));
            let rs = api.delete(&path).await?.result;
            if json {
                print_json(&rs)?;
            } else {
                outln!("removed rule {id} from zone {}", s(&zone, "name"));
            }
        }
        RuleCommand::Enable { id, zone } => set_enabled(&api, &id, zone.as_deref(), true, json).await?,
        RuleCommand::Disable { id, zone } => set_enabled(&api, &id, zone.as_deref(), false, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_enabled(api: &ApiClient, id: &str, zone: Option<&str>, enable: bool, json: bool) -> anyhow::Result<()> {
    let (zone, rs) = find_rule(api, zone, id).await?;
    let path = format!("/zones/{}/rulesets/{}/rules/{id}", s(&zone, "id"), s(&rs, "id"));
    let rs = api
        .send(Method::PATCH, &path, &json!({ "enabled": enable }))
        .await?
        .result;
    if json {
        print_json(&rs)?;
    } else {
        let word = if enable { "enabled" } else { "disabled" };
        outln!("{word} rule {id} in zone {}", s(&zone, "name"));
    }
    Ok(())
}

/// Prints the rule just added (the ruleset's last one), or with `--json` the API's result: the whole ruleset.
fn report_added(rs: &Value, zone: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(rs);
    }
    let rules = array(&rs["rules"]);
    let Some(rule) = rules.last() else {
        bail!("the server answered with an empty ruleset");
    };
    outln!(
        "added rule {} ({}) to zone {}: {}",
        s(rule, "id"),
        s(rule, "action"),
        s(zone, "name"),
        s(rule, "expression")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratelimit_rules_per_certificate_address_or_header() {
        let cert = ratelimit_rule("cert", 100, 60, 600, None, "block", "").unwrap();
        assert_eq!(cert["expression"], "cf.tls_client_auth.cert_verified");
        assert_eq!(
            cert["ratelimit"],
            json!({"characteristics": ["cf.colo.id", "cf.tls_client_auth.cert_fingerprint_sha256"],
                   "period": 60, "requests_per_period": 100, "mitigation_timeout": 600})
        );
        let header = ratelimit_rule("header:X-Api-Key", 5, 10, 0, Some("true".into()), "log", "").unwrap();
        assert_eq!(
            header["ratelimit"]["characteristics"][1],
            r#"http.request.headers["x-api-key"]"#
        );
        assert!(ratelimit_rule("user", 1, 10, 0, None, "block", "").is_err());
    }

    #[test]
    fn mtls_expression_quotes_and_escapes_strings() {
        assert_eq!(
            mtls_expression(&["/api".into(), "/a\"b\\c".into()], &[]),
            r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api" "/a\"b\\c"}"#
        );
        assert_eq!(
            mtls_expression(&["/x".into()], &["a.example.com".into(), "b.example.com".into()]),
            r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/x"} and http.host in {"a.example.com" "b.example.com"}"#
        );
        assert_eq!(
            mtls_expression(&["/x".into()], &["API.example.com.".into()]),
            r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/x"} and http.host in {"api.example.com"}"#
        );
        assert_eq!(
            mtls_expression(&["/x".into()], &["*.t.example.com".into()]),
            r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/x"} and http.host wildcard "*.t.example.com""#
        );
        assert_eq!(
            mtls_expression(&["/x".into()], &["*.t.example.com".into(), "a.example.com".into()]),
            r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/x"} and (http.host in {"a.example.com"} or http.host wildcard "*.t.example.com")"#
        );
        assert_eq!(quote("tab\there"), r#""tab\x09here""#);
    }
}
