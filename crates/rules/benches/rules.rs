//! Evaluation speed of the common cases: the default mTLS rule, 1,000-rule rulesets indexed by host
//! or by path and header literals (each against a linear scan of the same rules), and `ip.src in
//! $list` with 100,000 ranges.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_rules::{Action, CompiledRuleset, Context, Lists, Rule, Ruleset, compile, compile_with, fields};

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

/// An IP list of 100,000 disjoint /28 ranges (as a large blocklist would be), probed with an address in
/// it and one outside, against a one-item list.
fn ip_list(c: &mut Criterion) {
    let items: Vec<String> = (0..100_000u32)
        .map(|i| {
            let base = 0x0a00_0000u32 + i * 32;
            format!("{}/28", std::net::Ipv4Addr::from(base))
        })
        .collect();
    let mut lists = Lists::new();
    lists
        .insert_ip("big", items.iter().map(String::as_str))
        .expect("valid items");
    lists.insert_ip("small", ["192.0.2.0/24"]).expect("valid item");
    let big = compile_with("ip.src in $big", &lists).expect("compiles");
    let small = compile_with("ip.src in $small", &lists).expect("compiles");
    let mut ctx = Context::new();
    let inside: std::net::IpAddr = std::net::Ipv4Addr::from(0x0a00_0000u32 + 77_777 * 32 + 5).into();
    let outside: std::net::IpAddr = std::net::Ipv4Addr::from(0x0a00_0000u32 + 77_777 * 32 + 20).into();
    ctx.set(fields::IP_SRC, inside).expect("an IP");
    assert!(big.eval(&ctx));
    c.bench_function("ip_list_100000/inside", |b| b.iter(|| big.eval(black_box(&ctx))));
    ctx.set(fields::IP_SRC, outside).expect("an IP");
    assert!(!big.eval(&ctx));
    c.bench_function("ip_list_100000/outside", |b| b.iter(|| big.eval(black_box(&ctx))));
    c.bench_function("ip_list_1/outside", |b| b.iter(|| small.eval(black_box(&ctx))));
}

criterion_group!(
    benches,
    mtls_rule,
    thousand_rules,
    thousand_path_or_header_rules,
    ip_list
);
criterion_main!(benches);
