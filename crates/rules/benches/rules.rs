//! Evaluation speed of the common cases: the default mTLS rule, and 1,000-rule rulesets indexed
//! by host or by path and header literals, each against a linear scan of the same rules.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_rules::{Action, CompiledRuleset, Context, Rule, Ruleset, compile, fields};

fn mtls_rule(c: &mut Criterion) {
    let program = compile(
        r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}"#,
    )
    .expect("the default rule compiles");
    let mut ctx = Context::new();
    ctx.set(fields::HTTP_REQUEST_URI_PATH, "/api").expect("a String");
    ctx.set(fields::CF_TLS_CLIENT_AUTH_CERT_VERIFIED, false)
        .expect("a Boolean");
    c.bench_function("mtls_default_rule/blocked", |b| {
        b.iter(|| program.eval(black_box(&ctx)))
    });
    ctx.set(fields::CF_TLS_CLIENT_AUTH_CERT_VERIFIED, true)
        .expect("a Boolean");
    c.bench_function("mtls_default_rule/allowed", |b| {
        b.iter(|| program.eval(black_box(&ctx)))
    });
}

fn thousand_rules(c: &mut Criterion) {
    let rules = (0..1000)
        .map(|i| Rule {
            id: Some(format!("r{i}")),
            description: String::new(),
            expression: format!(r#"http.host eq "h{i}.example.com" and starts_with(http.request.uri.path, "/p{i}")"#),
            action: Action::Block,
            action_parameters: None,
            enabled: true,
            ratelimit: None,
        })
        .collect();
    let ruleset = CompiledRuleset::compile(&Ruleset { rules }).expect("valid");
    let mut ctx = Context::new();
    ctx.set(fields::HTTP_HOST, "h999.example.com").expect("a String");
    ctx.set(fields::HTTP_REQUEST_URI_PATH, "/p999/items").expect("a String");
    c.bench_function("ruleset_1000_hosts/match_last", |b| {
        b.iter(|| black_box(ruleset.eval(black_box(&ctx))).terminal.is_some())
    });
    ctx.set(fields::HTTP_HOST, "unknown.example.com").expect("a String");
    c.bench_function("ruleset_1000_hosts/no_match", |b| {
        b.iter(|| black_box(ruleset.eval(black_box(&ctx))).terminal.is_some())
    });
    ctx.set(fields::HTTP_HOST, "h999.example.com").expect("a String");
    c.bench_function("ruleset_1000_hosts/linear_scan_reference", |b| {
        b.iter(|| black_box(ruleset.eval_linear(black_box(&ctx))).terminal.is_some())
    });
}

/// The `bench/` harness's rules figure: 999 rules on a path or a header (not pinned to a host),
/// then the mTLS rule; the request matches none of the 999.
fn thousand_path_or_header_rules(c: &mut Criterion) {
    let mut rules: Vec<Rule> = (1..1000)
        .map(|i| Rule {
            id: Some(format!("r{i}")),
            description: String::new(),
            expression: format!(
                r#"http.request.uri.path eq "/deny/{i}" or http.request.headers["x-deny"][0] eq "v{i}""#
            ),
            action: Action::Block,
            action_parameters: None,
            enabled: true,
            ratelimit: None,
        })
        .collect();
    rules.push(Rule {
        id: Some("mtls".into()),
        description: String::new(),
        expression: r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}"#.into(),
        action: Action::Block,
        action_parameters: None,
        enabled: true,
        ratelimit: None,
    });
    let ruleset = CompiledRuleset::compile(&Ruleset { rules }).expect("valid");
    let mut ctx = Context::new();
    ctx.set(fields::HTTP_REQUEST_URI_PATH, "/api").expect("a String");
    ctx.set(fields::CF_TLS_CLIENT_AUTH_CERT_VERIFIED, true)
        .expect("a Boolean");
    ctx.set(
        fields::HTTP_REQUEST_HEADERS,
        portcullis_rules::Value::Map(Default::default()),
    )
    .expect("a map");
    c.bench_function("ruleset_1000_path_or_header/no_match", |b| {
        b.iter(|| black_box(ruleset.eval(black_box(&ctx))).terminal.is_some())
    });
    c.bench_function("ruleset_1000_path_or_header/linear_scan_reference", |b| {
        b.iter(|| black_box(ruleset.eval_linear(black_box(&ctx))).terminal.is_some())
    });
}

criterion_group!(benches, mtls_rule, thousand_rules, thousand_path_or_header_rules);
criterion_main!(benches);
