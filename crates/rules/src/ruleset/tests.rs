//! Rulesets: order, actions, validation, serde shape and the literal index.

use proptest::prelude::*;

use crate::tests::ctx;
use crate::{Action, ActionParameters, BlockResponse, CompiledRuleset, Rule, RuleProblem, Ruleset};

fn rule(id: &str, expression: &str, action: Action) -> Rule {
    Rule {
        id: Some(id.to_owned()),
        description: String::new(),
        expression: expression.to_owned(),
        action,
        action_parameters: None,
        enabled: true,
        ratelimit: None,
    }
}

fn ids(v: &crate::Verdict<'_>) -> (Option<String>, Vec<String>) {
    let id = |r: &crate::CompiledRule| r.rule().id.clone().unwrap_or_default();
    (v.terminal.map(id), v.logged.iter().map(|r| id(r)).collect())
}

#[test]
fn first_match_order_with_log_skip_and_disabled_rules() {
    let mut disabled = rule("off", "true", Action::Block);
    disabled.enabled = false;
    let rs = Ruleset {
        rules: vec![
            disabled,
            rule("log-all", "true", Action::Log),
            rule("skip-health", r#"http.request.uri.path eq "/health""#, Action::Skip),
            rule("log-api", r#"starts_with(http.request.uri.path, "/api")"#, Action::Log),
            rule("mtls", "not cf.tls_client_auth.cert_verified", Action::Block),
            rule("after", "true", Action::Block),
        ],
    };
    let c = CompiledRuleset::compile(&rs).expect("valid");
    let v = c.eval(&ctx(&[("http.request.uri.path", "/health")]));
    assert_eq!(ids(&v), (Some("skip-health".into()), vec!["log-all".into()]));
    assert!(!v.is_blocked());
    let v = c.eval(&ctx(&[("http.request.uri.path", "/api/x")]));
    assert_eq!(ids(&v), (Some("mtls".into()), vec!["log-all".into(), "log-api".into()]));
    assert!(v.is_blocked());
    let v = c.eval(&ctx(&[
        ("http.request.uri.path", "/"),
        ("cf.tls_client_auth.cert_verified", "true"),
    ]));
    assert_eq!(ids(&v), (Some("after".into()), vec!["log-all".into()]));
}

#[test]
fn custom_responses_are_validated() {
    let with = |status: u16, ct: &str, body: String, action: Action| {
        let mut r = rule("r", "true", action);
        r.action_parameters = Some(ActionParameters {
            response: Some(BlockResponse {
                status_code: status,
                content: body,
                content_type: ct.to_owned(),
            }),
            ..ActionParameters::default()
        });
        CompiledRuleset::compile(&Ruleset { rules: vec![r] })
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(with(403, "application/json", "{}".into(), Action::Block), Ok(()));
    assert_eq!(with(499, "text/xml", "x".repeat(2048), Action::Block), Ok(()));
    assert_eq!(
        with(500, "text/html", String::new(), Action::Block),
        Err("rule 1 (id \"r\"): invalid custom response: status_code must be between 400 and 499, found 500".into())
    );
    assert_eq!(
        with(399, "text/html", String::new(), Action::Block),
        Err("rule 1 (id \"r\"): invalid custom response: status_code must be between 400 and 499, found 399".into())
    );
    assert_eq!(
        with(403, "text/csv", String::new(), Action::Block),
        Err("rule 1 (id \"r\"): invalid custom response: content_type must be one of text/html, text/plain, application/json, text/xml, found \"text/csv\"".into())
    );
    assert_eq!(
        with(403, "text/plain", "x".repeat(2049), Action::Block),
        Err("rule 1 (id \"r\"): invalid custom response: content is 2049 bytes, the limit is 2048 bytes".into())
    );
    assert_eq!(
        with(403, "text/plain", String::new(), Action::Log),
        Err("rule 1 (id \"r\"): invalid custom response: only block rules can have a custom response".into())
    );
}

#[test]
fn invalid_rules_name_the_rule() {
    let rs = Ruleset {
        rules: vec![
            rule("a", "true", Action::Log),
            rule("b", "http.hots eq \"x\"", Action::Block),
        ],
    };
    let e = CompiledRuleset::compile(&rs).expect_err("unknown field");
    assert_eq!(e.index, 1);
    assert!(matches!(e.problem, RuleProblem::Expression(_)));
    assert_eq!(
        e.to_string(),
        "rule 2 (id \"b\"): invalid expression: unknown field \"http.hots\" at 1:1; did you mean \"http.host\"?"
    );
    let dup = Ruleset {
        rules: vec![rule("a", "true", Action::Log), rule("a", "true", Action::Log)],
    };
    assert_eq!(
        CompiledRuleset::compile(&dup).expect_err("duplicate").to_string(),
        "rule 2 (id \"a\"): duplicate rule id \"a\""
    );
}

#[test]
fn serde_uses_cloudflare_field_names() {
    let json = r#"{"rules":[{"description":"mTLS-enforced authentication","expression":"(not cf.tls_client_auth.cert_verified and http.request.uri.path in {\"/api\"})","action":"block","action_parameters":{"response":{"status_code":403,"content":"{\"error\":\"client certificate required\"}","content_type":"application/json"}},"enabled":true},{"id":"l","expression":"true","action":"log"}]}"#;
    let rs: Ruleset = serde_json::from_str(json).expect("Cloudflare's rule shape parses");
    assert_eq!(rs.rules[0].action, Action::Block);
    assert_eq!(
        rs.rules[0]
            .action_parameters
            .as_ref()
            .and_then(|p| p.response.as_ref())
            .map(|r| r.status_code),
        Some(403)
    );
    assert!(rs.rules[1].enabled, "enabled defaults to true");
    let back: serde_json::Value = serde_json::to_value(&rs).expect("serializes");
    assert_eq!(
        back["rules"][0]["action_parameters"]["response"]["content_type"],
        "application/json"
    );
    assert_eq!(back["rules"][1]["action"], "log");
    assert_eq!(back["rules"][1]["id"], "l");
    assert!(back["rules"][0].get("id").is_none());
    let again: Ruleset = serde_json::from_value(back).expect("round-trips");
    assert_eq!(again, rs);
    let c = CompiledRuleset::compile(&rs).expect("valid");
    let v = c.eval(&ctx(&[("http.request.uri.path", "/api")]));
    assert_eq!(
        v.terminal.and_then(|r| r.response()).map(|r| r.content.as_str()),
        Some("{\"error\":\"client certificate required\"}")
    );
    assert!(serde_json::from_str::<Rule>(r#"{"expression":"true","action":"managed_challenge"}"#).is_err());
}

#[test]
fn fields_of_a_ruleset_are_the_union_of_enabled_rules() {
    let mut off = rule("off", "ip.src eq 1.2.3.4", Action::Block);
    off.enabled = false;
    let rs = Ruleset {
        rules: vec![
            rule("a", r#"http.host eq "a""#, Action::Block),
            rule("b", "ssl", Action::Log),
            off,
        ],
    };
    let c = CompiledRuleset::compile(&rs).expect("valid");
    let names: Vec<&str> = c.fields().iter().map(|f| f.field().name()).collect();
    assert_eq!(names, ["http.host", "ssl"]);
}

fn host_rules() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
    // (host shape, path, action) per rule; shapes cover eq, in, unpinned and `or` forms.
    proptest::collection::vec((0u8..6, 0u8..3, 0u8..3), 0..24)
}

fn expression(shape: u8, path: u8) -> String {
    let p = format!(r#"starts_with(http.request.uri.path, "/p{path}")"#);
    match shape {
        0 => format!(r#"http.host eq "h{path}" and {p}"#),
        1 => format!(r#"{p} and http.host in {{"h0" "h{path}"}}"#),
        2 => p,
        3 => format!(r#"http.host eq "h1" or {p}"#),
        4 => format!(r#"not http.host eq "h2" and {p}"#),
        _ => r#"http.host in {"h2"}"#.to_owned(),
    }
}

proptest! {
    /// The host index gives exactly the verdict of a linear scan.
    #[test]
    fn host_index_keeps_first_match_semantics(rules in host_rules(), host in 0u8..4, path in 0u8..3) {
        let rules: Vec<Rule> = rules
            .iter()
            .enumerate()
            .map(|(i, (shape, p, action))| {
                let action = [Action::Block, Action::Log, Action::Skip][usize::from(*action)];
                let mut r = rule(&i.to_string(), &expression(*shape, *p), action);
                r.enabled = i % 7 != 3;
                r
            })
            .collect();
        let c = CompiledRuleset::compile(&Ruleset { rules }).expect("valid");
        let cx = ctx(&[("http.host", &format!("h{host}")), ("http.request.uri.path", &format!("/p{path}/x"))]);
        prop_assert_eq!(ids(&c.eval(&cx)), ids(&c.eval_linear(&cx)));
    }
}

#[test]
fn thousand_host_rules_pick_the_right_one() {
    let rules: Vec<Rule> = (0..1000)
        .map(|i| {
            rule(
                &format!("r{i}"),
                &format!(r#"http.host eq "h{i}.example.com" and starts_with(http.request.uri.path, "/p{i}")"#),
                Action::Block,
            )
        })
        .collect();
    let c = CompiledRuleset::compile(&Ruleset { rules }).expect("valid");
    let v = c.eval(&ctx(&[
        ("http.host", "h777.example.com"),
        ("http.request.uri.path", "/p777/x"),
    ]));
    assert_eq!(ids(&v).0.as_deref(), Some("r777"));
    let v = c.eval(&ctx(&[
        ("http.host", "h777.example.com"),
        ("http.request.uri.path", "/p778"),
    ]));
    assert_eq!(ids(&v).0, None);
}

/// Expressions over a path, a header element and the host, in the shapes the literal index
/// recognises (`eq`, `in`, `and`, `or`, indexed headers) and shapes it must leave alone (`not`,
/// `ne`, functions, `[*]`, a missing header).
fn indexed_expression(shape: u8, a: u8, b: u8) -> String {
    match shape {
        0 => format!(r#"http.request.uri.path eq "/p{a}""#),
        1 => format!(r#"http.request.uri.path in {{"/p{a}" "/p{b}"}}"#),
        2 => format!(r#"http.request.uri.path eq "/p{a}" or http.request.headers["x-h"][0] eq "v{b}""#),
        3 => format!(r#"http.request.headers["x-h"][0] eq "v{a}" and http.host eq "h{b}""#),
        4 => format!(r#"http.request.headers["x-h"][1] in {{"v{a}" "v{b}"}}"#),
        5 => format!(r#"not http.request.uri.path eq "/p{a}""#),
        6 => format!(r#"http.request.uri.path ne "/p{a}" and http.host eq "h{b}""#),
        7 => format!(r#"any(http.request.headers["x-h"][*] eq "v{a}")"#),
        8 => format!(r#"http.request.headers["x-missing"][0] eq "v{a}" or http.request.uri.path eq "/p{b}""#),
        9 => format!(
            r#"(http.request.uri.path eq "/p{a}" or starts_with(http.request.uri.path, "/p{b}")) and http.host eq "h{a}""#
        ),
        10 => r#"http.request.uri.query eq """#.to_owned(),
        _ => format!(r#"lower(http.request.uri.path) eq "/p{a}""#),
    }
}

fn request(host: u8, path: u8, headers: &[u8]) -> crate::Context {
    use crate::Value;
    let mut cx = ctx(&[
        ("http.host", &format!("h{host}")),
        ("http.request.uri.path", &format!("/p{path}")),
    ]);
    let mut map = std::collections::BTreeMap::new();
    if !headers.is_empty() {
        let values = headers.iter().map(|v| Value::from(format!("v{v}").as_str())).collect();
        map.insert(b"x-h".to_vec(), Value::Array(values));
    }
    let field = crate::field_by_name("http.request.headers").expect("a field");
    cx.set(field.id(), Value::Map(map)).expect("a map of arrays");
    cx
}

proptest! {
    /// The literal index gives exactly the verdict of a linear scan.
    #[test]
    fn literal_index_keeps_first_match_semantics(
        rules in proptest::collection::vec((0u8..12, 0u8..4, 0u8..4, 0u8..3), 0..32),
        host in 0u8..4,
        path in 0u8..4,
        headers in proptest::collection::vec(0u8..4, 0..3),
    ) {
        let rules: Vec<Rule> = rules
            .iter()
            .enumerate()
            .map(|(i, (shape, a, b, action))| {
                let action = [Action::Block, Action::Log, Action::Skip][usize::from(*action)];
                let mut r = rule(&i.to_string(), &indexed_expression(*shape, *a, *b), action);
                r.enabled = i % 7 != 3;
                r
            })
            .collect();
        let c = CompiledRuleset::compile(&Ruleset { rules }).expect("valid");
        let cx = request(host, path, &headers);
        prop_assert_eq!(ids(&c.eval(&cx)), ids(&c.eval_linear(&cx)));
    }
}

/// The benchmark's shape: 999 rules on a path or a header, then the mTLS rule.
#[test]
fn thousand_path_or_header_rules_select_by_value() {
    let mut rules: Vec<Rule> = (1..1000)
        .map(|i| {
            rule(
                &format!("r{i}"),
                &format!(r#"http.request.uri.path eq "/deny/{i}" or http.request.headers["x-h"][0] eq "v{i}""#),
                Action::Block,
            )
        })
        .collect();
    rules.push(rule(
        "mtls",
        r#"not cf.tls_client_auth.cert_verified and http.request.uri.path in {"/api"}"#,
        Action::Block,
    ));
    let c = CompiledRuleset::compile(&Ruleset { rules }).expect("valid");
    assert_eq!(c.unindexed.len(), 0, "every rule requires a literal");
    let mut cx = request(0, 0, &[]);
    let path = crate::field_by_name("http.request.uri.path").expect("a field").id();
    cx.set(path, crate::Value::from("/deny/512")).expect("a string");
    assert_eq!(ids(&c.eval(&cx)).0.as_deref(), Some("r512"));
    let mut cx = request(0, 0, &[3]);
    cx.set(path, crate::Value::from("/api")).expect("a string");
    assert_eq!(
        ids(&c.eval(&cx)).0.as_deref(),
        Some("r3"),
        "the header selects rule 3 before the mTLS rule"
    );
    let mut cx = request(0, 0, &[]);
    cx.set(path, crate::Value::from("/api")).expect("a string");
    assert_eq!(ids(&c.eval(&cx)).0.as_deref(), Some("mtls"));
}

#[test]
fn rate_limiting_rules_belong_to_their_phase() {
    let limit = crate::RateLimit {
        characteristics: vec!["cf.colo.id".into(), "cf.tls_client_auth.cert_fingerprint_sha256".into()],
        period: 60,
        requests_per_period: 10,
        mitigation_timeout: 600,
        requests_to_origin: Some(false),
        counting_expression: None,
    };
    let limited = |action, ratelimit: Option<crate::RateLimit>| Ruleset {
        rules: vec![Rule {
            ratelimit,
            ..rule("rl", "cf.tls_client_auth.cert_verified", action)
        }],
    };
    let c = CompiledRuleset::compile_ratelimit(&limited(Action::Block, Some(limit.clone()))).expect("valid");
    assert_eq!(c.rules()[0].ratelimit().expect("parsed").requests_per_period, 10);
    let fingerprint = crate::field_by_name("cf.tls_client_auth.cert_fingerprint_sha256")
        .expect("field")
        .id();
    assert!(
        c.fields().contains(fingerprint),
        "characteristic fields are filled for the proxy"
    );
    assert!(CompiledRuleset::compile_ratelimit(&limited(Action::Log, Some(limit.clone()))).is_ok());

    let problem = |r: Result<CompiledRuleset, crate::RulesetError>| r.expect_err("invalid").to_string();
    assert_eq!(
        problem(CompiledRuleset::compile(&limited(Action::Block, Some(limit.clone())))),
        "rule 1 (id \"rl\"): invalid ratelimit: only rules of the http_ratelimit phase have ratelimit"
    );
    assert_eq!(
        problem(CompiledRuleset::compile_ratelimit(&limited(Action::Block, None))),
        "rule 1 (id \"rl\"): invalid ratelimit: a rate-limiting rule needs ratelimit (characteristics, period, requests_per_period)"
    );
    assert_eq!(
        problem(CompiledRuleset::compile_ratelimit(&limited(
            Action::Skip,
            Some(limit.clone())
        ))),
        "rule 1 (id \"rl\"): invalid ratelimit: a rate-limiting rule's action must be block or log"
    );
    let bad = crate::RateLimit { period: 7, ..limit };
    assert!(matches!(
        CompiledRuleset::compile_ratelimit(&limited(Action::Block, Some(bad))).map_err(|e| e.problem),
        Err(RuleProblem::RateLimit(m)) if m.starts_with("period must be one of")
    ));
}

/// Rules stored before the wrong-case hex check still compile for the edge, and keep their meaning; new writes
/// are refused.
#[test]
fn stored_rules_skip_checks_added_later() {
    let rs = Ruleset {
        rules: vec![rule(
            "old",
            r#"cf.tls_client_auth.cert_serial eq "3bb9""#,
            Action::Block,
        )],
    };
    let err = CompiledRuleset::compile_with(&rs, false, &crate::Lists::new()).expect_err("refused when written");
    assert!(err.to_string().contains("write \"3BB9\""), "{err}");
    let c = CompiledRuleset::compile_stored(&rs, false, &crate::Lists::new()).expect("stored rules compile");
    assert!(!c.eval(&ctx(&[("cf.tls_client_auth.cert_serial", "3BB9")])).is_blocked());
}

fn skip(id: &str, expression: &str, params: serde_json::Value) -> Rule {
    let mut r = rule(id, expression, Action::Skip);
    r.action_parameters = Some(serde_json::from_value(params).expect("action_parameters"));
    r
}

/// Cloudflare's skip parameters: `ruleset: "current"` ends the ruleset, `phases: ["http_ratelimit"]` exempts the
/// request from rate limiting without ending it; unknown parameters and phases are refused, not dropped.
#[test]
fn skip_parameters_skip_the_ruleset_or_phases() {
    let compile = |rules: Vec<Rule>| CompiledRuleset::compile(&Ruleset { rules });
    let partners = r#"http.request.uri.path eq "/partner""#;
    let c = compile(vec![
        skip("no-limits", partners, serde_json::json!({"phases": ["http_ratelimit"]})),
        rule("mtls", "not cf.tls_client_auth.cert_verified", Action::Block),
    ])
    .expect("valid");
    let v = c.eval(&ctx(&[("http.request.uri.path", "/partner")]));
    assert!(v.is_blocked(), "a phase skip does not end the custom rules");
    assert!(v.skip_ratelimit);
    assert_eq!(v.phase_skip.and_then(|r| r.rule().id.clone()), Some("no-limits".into()));
    let v = c.eval(&ctx(&[
        ("http.request.uri.path", "/partner"),
        ("cf.tls_client_auth.cert_verified", "true"),
    ]));
    assert!(!v.is_blocked() && v.terminal.is_none() && v.skip_ratelimit);
    let v = c.eval(&ctx(&[("http.request.uri.path", "/")]));
    assert!(!v.skip_ratelimit && v.phase_skip.is_none());
    assert!(
        c.eval_linear(&ctx(&[("http.request.uri.path", "/partner")]))
            .skip_ratelimit
    );

    let c = compile(vec![
        skip(
            "both",
            partners,
            serde_json::json!({"ruleset": "current", "phases": ["http_ratelimit", "http_request_sbfm"]}),
        ),
        rule("mtls", "not cf.tls_client_auth.cert_verified", Action::Block),
    ])
    .expect("valid");
    let v = c.eval(&ctx(&[("http.request.uri.path", "/partner")]));
    assert!(!v.is_blocked() && v.skip_ratelimit);
    assert_eq!(v.terminal.and_then(|r| r.rule().id.clone()), Some("both".into()));
    // Without parameters (as earlier versions stored it) a skip ends the ruleset and leaves rate limits on.
    let c = compile(vec![
        rule("plain", partners, Action::Skip),
        rule("all", "true", Action::Block),
    ])
    .expect("valid");
    let v = c.eval(&ctx(&[("http.request.uri.path", "/partner")]));
    assert!(!v.is_blocked() && !v.skip_ratelimit);

    let err = |r: Rule| compile(vec![r]).map(|_| ()).expect_err("refused").to_string();
    assert_eq!(
        err(skip("r", "true", serde_json::json!({"ruleset": "other"}))),
        "rule 1 (id \"r\"): invalid action_parameters: ruleset must be \"current\", found \"other\""
    );
    assert!(
        err(skip(
            "r",
            "true",
            serde_json::json!({"phases": ["http_request_firewall_custom"]})
        ))
        .contains("\"http_request_firewall_custom\" cannot be skipped; the phases are http_ratelimit,")
    );
    assert!(err(skip("r", "true", serde_json::json!({"phases": []}))).contains("phases is empty"));
    let mut block = rule("r", "true", Action::Block);
    block.action_parameters = Some(serde_json::from_value(serde_json::json!({"ruleset": "current"})).unwrap());
    assert!(err(block).contains("ruleset and phases are parameters of skip rules only"));
    let unknown = serde_json::from_value::<ActionParameters>(serde_json::json!({"products": ["waf"]}));
    assert!(
        unknown
            .expect_err("refused")
            .to_string()
            .contains("unknown field `products`")
    );
}
