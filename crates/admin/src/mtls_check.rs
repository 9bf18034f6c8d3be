//! Warnings about a zone's mTLS setup that is valid but does not do what it looks like it does, returned in the
//! `messages` of the writes that can cause them (hostnames, CA associations, custom rules). They name the four
//! silent mistakes of Cloudflare's model, where asking for a certificate enforces nothing by itself:
//! - a hostname with mTLS in `request` or `verify_if_given` mode that no enabled block rule checks: clients without
//!   a valid certificate are served;
//! - a block rule that tests `cf.tls_client_auth.cert_verified` but not `cert_revoked`: a revoked certificate
//!   still verifies, so it passes;
//! - a block rule on client-certificate fields that applies to a hostname without mTLS, where no certificate is
//!   ever asked for;
//! - a `skip` rule, reading no verification outcome (`cert_verified`, `verify_result`, `cert_status`), placed
//!   before the block rules that check certificates on an mTLS hostname: the requests it matches there are served
//!   whatever certificate they came with.
//!
//! Not here: refusing anything (every warned-about setup is legal and sometimes wanted), or rules of other phases.

use std::collections::{BTreeSet, HashSet};

use portcullis_rules::{FieldId, Pinned, Program, field_by_name};

use crate::AdminState;
use crate::api::{ApiError, ErrorItem};
use crate::hostnames::{HostnameSettings, TlsClientAuth};

/// The code of every message here (Portcullis' own; Cloudflare has no such warnings).
pub const WARNING_CODE: u32 = 10_100;

/// Most hostnames one message names before it says how many more there are.
const NAMED: usize = 5;

/// A configured hostname, as the checks see it.
#[derive(Debug, Clone)]
pub(crate) struct HostView {
    /// Lower-case, as stored; `*.` for a wildcard hostname.
    pub name: String,
    pub mtls: bool,
    pub mode: TlsClientAuth,
}

/// An enabled custom rule, compiled, in the ruleset's order.
pub(crate) struct RuleView {
    pub label: String,
    pub block: bool,
    /// A `skip` that ends the evaluation of the custom rules.
    pub skips_rules: bool,
    pub program: Program,
}

/// Which hostnames a rule can apply to.
enum Scope {
    /// It does not read `http.host`: every hostname.
    All,
    /// It reads `http.host` in a way that does not say which (e.g. `ne`, `matches`).
    Unknown,
    /// Only hostnames with a name that satisfies one of these.
    Pins(Vec<Pinned>),
}

impl Scope {
    fn of(program: &Program) -> Scope {
        let Some(host) = field("http.host") else {
            return Scope::Unknown;
        };
        if !program.fields().contains(host) {
            // The full URI holds the host too: a rule may be limited through it in ways not read here.
            let through_uri = ["http.request.full_uri", "raw.http.request.full_uri"]
                .iter()
                .filter_map(|name| field(name))
                .any(|f| program.fields().contains(f));
            return if through_uri { Scope::Unknown } else { Scope::All };
        }
        match program.pinned_values(host) {
            Some(pins) => Scope::Pins(pins),
            None => Scope::Unknown,
        }
    }

    /// Whether the rule applies to `host`; `when_unsure` is the answer where the scope does not say (yes for
    /// "can it apply", no for "does it apply for certain"). `exact` holds the zone's hostnames that are not
    /// wildcards, which take their names from a wildcard hostname.
    fn applies(&self, host: &str, exact: &HashSet<&str>, when_unsure: bool) -> bool {
        match self {
            Scope::All => true,
            Scope::Unknown => when_unsure,
            Scope::Pins(pins) => pins.iter().any(|p| match p {
                Pinned::Exact(v) => std::str::from_utf8(v).is_ok_and(|v| serves(host, v, exact)),
                // Which names of a wildcard hostname a pattern matches is not worked out here, but
                // `rule add-mtls --host '*.d.example.com'` writes the hostname itself as the pattern.
                Pinned::Pattern(_) if host.starts_with("*.") => {
                    when_unsure || p.pattern().is_some_and(|t| t == host.as_bytes())
                }
                Pinned::Pattern(_) => p.matches(host.as_bytes()),
            }),
        }
    }
}

fn is_cert_field(id: FieldId) -> bool {
    let name = id.field().name();
    name.starts_with("cf.tls_client_auth.") || name.starts_with("portcullis.tls_client_auth.")
}

fn field(name: &str) -> Option<FieldId> {
    field_by_name(name).map(|f| f.id())
}

/// Whether configured hostname `host` serves requests whose `http.host` is `name` (always lower-case, never a
/// pattern): the same name, or one label under a wildcard hostname's domain unless `exact` (the zone's hostnames
/// that are not wildcards) has that name, as the edge prefers an exact hostname.
fn serves(host: &str, name: &str, exact: &HashSet<&str>) -> bool {
    match host.strip_prefix("*.") {
        Some(_) if exact.contains(name) => false,
        Some(suffix) => name
            .strip_suffix(suffix)
            .and_then(|label| label.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains(['.', '*'])),
        None => host == name,
    }
}

fn named(names: &[&str]) -> String {
    let shown = names.iter().take(NAMED).copied().collect::<Vec<_>>().join(", ");
    match names.len().saturating_sub(NAMED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// The warnings for a zone's hostnames and its enabled custom rules, in a stable order. Each rule's scope is worked
/// out once, so the cost is rules × hostnames × pins.
pub(crate) fn warnings(hosts: &[HostView], rules: &[RuleView]) -> Vec<String> {
    let mut out = Vec::new();
    // With each rule's place in the ruleset, for the skips before it.
    let enforcing: Vec<(usize, &RuleView, Scope)> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.block && r.program.fields().iter().any(is_cert_field))
        .map(|(i, r)| (i, r, Scope::of(&r.program)))
        .collect();

    let exact: HashSet<&str> = hosts
        .iter()
        .map(|h| h.name.as_str())
        .filter(|h| !h.starts_with("*."))
        .collect();
    let everywhere = enforcing
        .iter()
        .any(|(_, _, scope)| matches!(scope, Scope::All | Scope::Unknown));
    let unchecked: Vec<&str> = hosts
        .iter()
        .filter(|h| h.mtls && h.mode != TlsClientAuth::Require && !everywhere)
        .filter(|h| {
            !enforcing
                .iter()
                .any(|(_, _, scope)| scope.applies(&h.name, &exact, true))
        })
        .map(|h| h.name.as_str())
        .collect();
    if !unchecked.is_empty() {
        out.push(format!(
            "mTLS on {} enforces nothing yet: the edge asks for a client certificate, but no enabled block rule that \
             applies there reads cf.tls_client_auth.* or portcullis.tls_client_auth.*, so clients without a valid \
             certificate are served. Add one (portcullis rule add-mtls, or \"Create a mTLS rule\" in the dashboard), \
             or set tls_client_auth to \"require\"",
            named(&unchecked)
        ));
    }

    let verified = [(
        "cf.tls_client_auth.cert_verified",
        field("cf.tls_client_auth.cert_verified"),
    )];
    // verify_result says FAILED for a revoked certificate, as NGINX's $ssl_client_verify does.
    let revocation = [
        field("cf.tls_client_auth.cert_revoked"),
        field("portcullis.tls_client_auth.cert_status"),
        field("portcullis.tls_client_auth.verify_result"),
    ];
    for (_, rule, scope) in &enforcing {
        let reads = rule.program.fields();
        let checked = verified
            .iter()
            .find(|(_, id)| id.is_some_and(|v| reads.contains(v)))
            .map(|(name, _)| *name);
        if let Some(checked) = checked
            && !revocation.iter().flatten().any(|f| reads.contains(*f))
        {
            out.push(format!(
                "rule {} checks {checked} but not cf.tls_client_auth.cert_revoked: a revoked certificate still \
                 verifies (cert_verified stays true, as at Cloudflare), so it passes this rule. Use (not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked)",
                rule.label
            ));
        }
        let plain: Vec<&str> = hosts
            .iter()
            .filter(|h| !h.mtls && scope.applies(&h.name, &exact, false))
            .map(|h| h.name.as_str())
            .collect();
        if !plain.is_empty() {
            out.push(format!(
                "rule {} reads client-certificate fields and applies to {}, where mTLS is not enabled: no certificate \
                 is asked for there, so those fields always describe none (cert_presented and cert_verified are \
                 false) for every request the rule matches. Enable mTLS there, or limit the rule with http.host",
                rule.label,
                named(&plain)
            ));
        }
    }

    // A skip that reads a verification outcome is taken to let only verified clients through (`cert_verified and
    // ip.src in {…}`); one on other certificate fields (`cert_presented`, a subject) lets a self-signed certificate
    // through. One whose hostnames cannot be read is left alone, as above.
    let outcome: Vec<FieldId> = [
        "cf.tls_client_auth.cert_verified",
        "portcullis.tls_client_auth.verify_result",
        "portcullis.tls_client_auth.cert_status",
    ]
    .iter()
    .filter_map(|name| field(name))
    .collect();
    for (i, skip) in rules.iter().enumerate() {
        if !skip.skips_rules || outcome.iter().any(|f| skip.program.fields().contains(*f)) {
            continue;
        }
        let scope = Scope::of(&skip.program);
        let bypassed: Vec<&str> = hosts
            .iter()
            .filter(|h| h.mtls && h.mode != TlsClientAuth::Require && scope.applies(&h.name, &exact, false))
            .filter(|h| {
                enforcing
                    .iter()
                    .any(|(j, _, checks)| *j > i && checks.applies(&h.name, &exact, true))
            })
            .map(|h| h.name.as_str())
            .collect();
        if !bypassed.is_empty() {
            out.push(format!(
                "rule {} skips the remaining custom rules on {} before the block rules there check client \
                 certificates, and does not itself ask for a verified one: the requests it matches are served with \
                 or without a valid certificate. Move it after them, exclude those requests in the block rule \
                 instead, or add (cf.tls_client_auth.cert_verified and not cf.tls_client_auth.cert_revoked) to it",
                skip.label,
                named(&bypassed)
            ));
        }
    }
    out
}

/// Whether a stored `skip` rule's `action_parameters` skip the remaining custom rules: `"ruleset": "current"`, or
/// no `phases` (a skip without parameters), as the rules engine reads them.
fn skips_rules(action: &str, parameters: Option<&serde_json::Value>) -> bool {
    action == "skip" && parameters.is_none_or(|p| p.get("ruleset").is_some() || p.get("phases").is_none())
}

/// The warnings for zone `zone_id` as it is stored now, as envelope messages. A rule that no longer compiles (a
/// list it names was changed meanwhile) is left out rather than failing the write that asked.
pub(crate) async fn zone_messages(state: &AdminState, zone_id: &str) -> Result<Vec<ErrorItem>, ApiError> {
    let mtls: BTreeSet<String> = state.store.mtls_hostnames(zone_id).await?.into_iter().collect();
    let hosts: Vec<HostView> = state
        .store
        .list_hostnames(zone_id)
        .await?
        .into_iter()
        .map(|h| {
            let mode = HostnameSettings::from_stored(&h.settings)
                .map(|s| s.tls_client_auth)
                .unwrap_or_default();
            HostView {
                mtls: mtls.contains(&h.hostname),
                name: h.hostname,
                mode,
            }
        })
        .collect();
    let stored = state
        .store
        .entrypoint(zone_id, crate::rulesets::PHASE)
        .await?
        .map(|r| r.rules)
        .unwrap_or_default();
    // Only block rules that name a client-certificate field can enforce anything, and only skips of the remaining
    // rules can pass them by; the rest are not compiled.
    let candidates: Vec<_> = stored
        .into_iter()
        .filter(|r| {
            r.enabled
                && ((r.action == "block" && r.expression.contains("tls_client_auth."))
                    || skips_rules(&r.action, r.action_parameters.as_ref()))
        })
        .collect();
    // Stored rules name lists that exist; no hint is shown from here.
    let lists = crate::rulesets::lists_named_in(
        state,
        candidates.iter().map(|r| r.expression.as_str()),
        crate::rulesets::Suggest::Nothing,
    )
    .await?;
    // Compiling (regexes included) is CPU work: off the async workers.
    let found = tokio::task::spawn_blocking(move || {
        let rules: Vec<RuleView> = candidates
            .iter()
            .filter_map(|r| {
                let program = portcullis_rules::compile_with(&r.expression, &lists).ok()?;
                let label = if r.description.is_empty() {
                    r.id.clone()
                } else {
                    format!("{:?} ({})", r.description, r.id)
                };
                Some(RuleView {
                    label,
                    block: r.action == "block",
                    skips_rules: skips_rules(&r.action, r.action_parameters.as_ref()),
                    program,
                })
            })
            .collect();
        warnings(&hosts, &rules)
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(found
        .into_iter()
        .map(|message| ErrorItem {
            code: WARNING_CODE,
            message,
        })
        .collect())
}

/// The zone's mTLS setup warnings as they stand (Portcullis extension): what the writes answer with, for the
/// dashboard to show when a page opens and for `portcullis mtls check` in a deployment pipeline.
#[utoipa::path(get, path = "/zones/{zone_id}/portcullis/mtls_check", tag = "mtls",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The warnings; none when the setup enforces what it asks for", body = [ErrorItem])))]
pub async fn get_mtls_check(
    axum::extract::State(state): axum::extract::State<AdminState>,
    crate::api::Path(zone_id): crate::api::Path<String>,
) -> crate::api::ApiResult {
    state.store.zone(&zone_id).await?;
    Ok(crate::api::ok_all(zone_messages(&state, &zone_id).await?))
}

/// The answer to a write in zone `zone_id`: `result`, with the zone's warnings as its `messages`. The write has
/// happened whatever they say; if they cannot be worked out, the answer carries none (and the log says why).
pub(crate) async fn answer<T: serde::Serialize>(
    state: &AdminState,
    zone_id: &str,
    status: axum::http::StatusCode,
    result: T,
) -> axum::response::Response {
    let messages = match zone_messages(state, zone_id).await {
        Ok(messages) => messages,
        Err(e) => {
            tracing::warn!(zone = zone_id, error = e.message, "mTLS setup warnings not computed");
            Vec::new()
        }
    };
    crate::api::ok_with(status, result, messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, mtls: bool, mode: TlsClientAuth) -> HostView {
        HostView {
            name: name.into(),
            mtls,
            mode,
        }
    }

    fn rule(label: &str, expression: &str) -> RuleView {
        RuleView {
            label: label.into(),
            block: true,
            skips_rules: false,
            program: portcullis_rules::compile(expression).unwrap(),
        }
    }

    fn skip(label: &str, expression: &str) -> RuleView {
        RuleView {
            block: false,
            skips_rules: true,
            ..rule(label, expression)
        }
    }

    const GOOD: &str = r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}"#;

    #[test]
    fn an_mtls_hostname_without_a_rule_is_named() {
        let hosts = [
            host("api.test", true, TlsClientAuth::Request),
            host("strict.test", true, TlsClientAuth::Require),
            host("maybe.test", true, TlsClientAuth::VerifyIfGiven),
        ];
        let w = warnings(&hosts, &[]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("mTLS on api.test, maybe.test enforces nothing yet"),
            "{w:?}"
        );
        assert!(warnings(&hosts, &[rule("r", GOOD)]).is_empty());
        // A rule pinned to another hostname, a log rule, or one that reads no certificate field does not count.
        let other = rule("r", &format!(r#"{GOOD} and http.host eq "strict.test""#));
        let mut log = rule("l", GOOD);
        log.block = false;
        let path = rule("p", r#"http.request.uri.path eq "/x""#);
        for rules in [vec![other], vec![log], vec![path]] {
            let w = warnings(&hosts, &rules);
            assert!(
                w[0].starts_with("mTLS on api.test, maybe.test enforces nothing yet"),
                "{w:?}"
            );
        }
    }

    #[test]
    fn a_rule_without_revocation_and_a_rule_on_a_plain_hostname_are_named() {
        let hosts = [
            host("api.test", true, TlsClientAuth::Request),
            host("www.test", false, TlsClientAuth::Request),
        ];
        let naive = rule(
            "naive",
            r#"not cf.tls_client_auth.cert_verified and http.host eq "api.test""#,
        );
        let w = warnings(&hosts, &[naive]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("rule naive checks cf.tls_client_auth.cert_verified but not"),
            "{w:?}"
        );

        let status = rule(
            "status",
            r#"portcullis.tls_client_auth.cert_status ne "ok" and http.host eq "api.test""#,
        );
        assert!(warnings(&hosts, &[status]).is_empty());
        // NGINX's $ssl_client_verify says FAILED for a revoked certificate, and so does verify_result.
        let result = rule(
            "result",
            r#"portcullis.tls_client_auth.verify_result ne "SUCCESS" and http.host eq "api.test""#,
        );
        assert!(warnings(&hosts, &[result]).is_empty());

        let everywhere = rule("everywhere", GOOD);
        let w = warnings(&hosts, &[everywhere]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("rule everywhere reads client-certificate fields and applies to www.test,"),
            "{w:?}"
        );
    }

    #[test]
    fn rules_limited_to_a_wildcard_hostname_or_by_other_tests_are_not_misread() {
        let hosts = [
            host("*.d.test", true, TlsClientAuth::Request),
            host("a.test", true, TlsClientAuth::Request),
            host("www.test", false, TlsClientAuth::Request),
        ];
        // What `rule add-mtls --host a.test --host '*.d.test'` writes.
        let generated = rule(
            "generated",
            &format!(r#"{GOOD} and (http.host in {{"a.test"}} or http.host wildcard "*.d.test")"#),
        );
        assert_eq!(warnings(&hosts, &[generated]), Vec::<String>::new());
        // A scope the check cannot read: no warning either way.
        let unknown = rule("unknown", &format!(r#"{GOOD} and http.host ne "www.test""#));
        assert_eq!(warnings(&hosts, &[unknown]), Vec::<String>::new());
        // A pattern that names one hostname of the wildcard's domain does not cover the others for certain, but
        // may: no warning for the wildcard hostname; a.test stays unchecked.
        let one = rule("one", &format!(r#"{GOOD} and http.host wildcard "x.d.*""#));
        let w = warnings(&hosts, &[one]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("mTLS on a.test enforces nothing yet"), "{w:?}");
    }

    #[test]
    fn an_exact_hostname_takes_its_name_from_the_wildcard() {
        // What `rule add-mtls --host a.d.test` and the dashboard write for the one hostname with mTLS.
        let generated = || rule("generated", &format!(r#"{GOOD} and http.host in {{"a.d.test"}}"#));
        let hosts = [
            host("a.d.test", true, TlsClientAuth::Request),
            host("*.d.test", false, TlsClientAuth::Request),
        ];
        assert_eq!(warnings(&hosts, &[generated()]), Vec::<String>::new());
        let hosts = [
            host("a.d.test", false, TlsClientAuth::Request),
            host("*.d.test", true, TlsClientAuth::Request),
        ];
        let w = warnings(&hosts, &[generated()]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("mTLS on *.d.test enforces nothing yet"), "{w:?}");
        assert!(w[1].contains("applies to a.d.test, where mTLS is not enabled"), "{w:?}");
        // A rule limited through the full URI is not taken to apply everywhere.
        let uri = rule(
            "uri",
            &format!(r#"{GOOD} and http.request.full_uri wildcard "https://a.d.test/*""#),
        );
        assert_eq!(warnings(&hosts, &[uri]), Vec::<String>::new());
    }

    #[test]
    fn a_skip_before_the_certificate_check_is_named() {
        let hosts = [
            host("api.test", true, TlsClientAuth::Request),
            host("strict.test", true, TlsClientAuth::Require),
            host("www.test", false, TlsClientAuth::Request),
        ];
        let check = || rule("check", &format!(r#"{GOOD} and http.host in {{"api.test"}}"#));
        let health = || skip("health", r#"http.request.uri.path eq "/health""#);
        let w = warnings(&hosts, &[health(), check()]);
        assert_eq!(
            w,
            [
                "rule health skips the remaining custom rules on api.test before the block rules there check client \
              certificates, and does not itself ask for a verified one: the requests it matches are served with or \
              without a valid certificate. Move it after them, exclude those requests in the block rule instead, or \
              add (cf.tls_client_auth.cert_verified and not cf.tls_client_auth.cert_revoked) to it"
            ]
        );
        // Presenting any certificate is not having a verified one.
        let presented = skip(
            "presented",
            r#"cf.tls_client_auth.cert_presented and http.request.uri.path eq "/x""#,
        );
        assert_eq!(warnings(&hosts, &[presented, check()]).len(), 1);
        // After the check, it skips nothing the check would have done.
        assert_eq!(warnings(&hosts, &[check(), health()]), Vec::<String>::new());
        // A skip that asks for a valid certificate itself, one limited to another hostname (the `require` one, where
        // the handshake checks, or one without mTLS), or one that is not a skip of the rules: no warning.
        let trusted = skip(
            "trusted",
            r#"cf.tls_client_auth.cert_verified and ip.src in {10.0.0.0/8}"#,
        );
        let elsewhere = skip("elsewhere", r#"http.host in {"strict.test" "www.test"}"#);
        let mut phases_only = health();
        phases_only.skips_rules = false;
        for quiet in [trusted, elsewhere, phases_only] {
            assert_eq!(warnings(&hosts, &[quiet, check()]), Vec::<String>::new());
        }
        // The stored parameters, read as the rules engine reads them.
        assert!(skips_rules("skip", None));
        assert!(skips_rules("skip", Some(&serde_json::json!({"ruleset": "current"}))));
        assert!(skips_rules(
            "skip",
            Some(&serde_json::json!({"ruleset": "current", "phases": ["http_ratelimit"]}))
        ));
        assert!(!skips_rules(
            "skip",
            Some(&serde_json::json!({"phases": ["http_ratelimit"]}))
        ));
        assert!(!skips_rules("block", None));
    }

    #[test]
    fn wildcards_serve_one_label() {
        assert!(serves("*.example.com", "a.example.com", &HashSet::new()));
        // http.host is lower-case and never a pattern.
        assert!(!serves("*.example.com", "A.Example.com", &HashSet::new()));
        assert!(!serves("*.example.com", "*.example.com", &HashSet::new()));
        assert!(!serves("*.example.com", "example.com", &HashSet::new()));
        assert!(!serves("*.example.com", "a.b.example.com", &HashSet::new()));
        assert!(!serves("*.example.com", "aexample.com", &HashSet::new()));
        assert!(serves("api.test", "api.test", &HashSet::new()));
        let many: Vec<String> = (0..7).map(|i| format!("h{i}.test")).collect();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(named(&names), "h0.test, h1.test, h2.test, h3.test, h4.test and 2 more");
    }
}
