//! End-to-end tests of the language: compile, then evaluate on sample values.

use proptest::prelude::*;

use crate::{Context, compile, parse_field_value};

pub(crate) fn ctx(values: &[(&str, &str)]) -> Context {
    let mut ctx = Context::new();
    for (name, text) in values {
        let (id, value) = parse_field_value(name, text).unwrap_or_else(|e| panic!("{name}={text}: {e}"));
        ctx.set(id, value).expect("parsed values have the field's type");
    }
    ctx
}

pub(crate) fn eval(expr: &str, values: &[(&str, &str)]) -> bool {
    compile(expr)
        .unwrap_or_else(|e| panic!("{expr}\n{}", e.render(expr)))
        .eval(&ctx(values))
}

const REQ: &[(&str, &str)] = &[
    ("http.host", "www.Example.com"),
    ("http.request.method", "POST"),
    ("http.request.uri.path", "/api/v1/users"),
    ("http.request.uri.query", "a=1&b=%2520x"),
    (
        "http.request.full_uri",
        "https://apps.example.com/calendar/admin?expand=true",
    ),
    (
        "http.request.headers",
        r#"{"X-Api-Key":["k1","k2"],"content-type":["application/json"],"client_id":["MTIzYWJj"],"x-categories":["groceries,electronics,diy,auto"],"x-json":["{\"product\":{\"id\":356},\"ids\":[123,456],\"name\":\"cloudflare\",\"f\":42.0}"]}"#,
    ),
    ("http.request.headers.names", r#"["Host","X-Api-Key","Content-Type"]"#),
    ("http.request.uri.args", r#"{"filter":["waf","botm","cdn"]}"#),
    ("ip.src", "113.10.0.2"),
    ("ssl", "true"),
    ("cf.edge.server_port", "443"),
    ("cf.tls_client_auth.cert_verified", "true"),
    (
        "cf.tls_client_auth.cert_issuer_ski",
        "A5AC554235DBA6D963B9CDE0185CFAD6E3F55E9F",
    ),
    (
        "portcullis.tls_client_auth.cert_san_uri",
        r#"["spiffe://example.org/ns/prod/sa/api"]"#,
    ),
];

#[test]
fn comparison_operators() {
    let cases: &[(&str, bool)] = &[
        (r#"http.request.method eq "POST""#, true),
        (r#"http.request.method == "POST""#, true),
        (r#"http.request.method eq "post""#, false),
        (r#"http.request.method ne "GET""#, true),
        (r#"http.request.method != "POST""#, false),
        (r#"http.request.method lt "Q""#, true),
        (r#"http.request.method < "POST""#, false),
        (r#"http.request.method le "POST""#, true),
        (r#"http.request.method <= "PO""#, false),
        (r#"http.request.method gt "PO""#, true),
        (r#"http.request.method > "POST""#, false),
        (r#"http.request.method ge "POST""#, true),
        (r#"http.request.method >= "POSTX""#, false),
        ("cf.edge.server_port eq 443", true),
        ("cf.edge.server_port ne 443", false),
        ("cf.edge.server_port lt 444", true),
        ("cf.edge.server_port le 442", false),
        ("cf.edge.server_port gt 80", true),
        ("cf.edge.server_port >= 444", false),
        ("cf.edge.server_port in {80 443}", true),
        ("cf.edge.server_port in {80..442 444..8443}", false),
        ("cf.edge.server_port in {80..443}", true),
        ("cf.edge.server_port in {-5..-1 443}", true),
        (r#"http.request.uri.path contains "/v1/""#, true),
        (r#"http.request.uri.path contains "/V1/""#, false),
        (r#"http.request.uri.path matches "^/api/v[0-9]+/""#, true),
        (r#"http.request.uri.path ~ "^/API""#, false),
        (r#"http.request.uri.path matches r"/users$""#, true),
        (r#"http.host wildcard "*.example.com""#, true),
        (r#"http.host wildcard "www.example.*""#, true),
        (r#"http.host strict wildcard "*.example.com""#, false),
        (r#"http.host strict wildcard "*.Example.com""#, true),
        (r#"http.host wildcard "example.com""#, false),
        (r#"http.request.method in {"GET" "POST"}"#, true),
        (r#"http.request.method in {"GET" "HEAD"}"#, false),
        ("ip.src eq 113.10.0.2", true),
        ("ip.src ne 113.10.0.2", false),
        ("ip.src in {113.10.0.0/16}", true),
        ("ip.src in {10.0.0.0/8 192.168.0.0/16}", false),
        ("ip.src in {113.10.0.1..113.10.0.9}", true),
        ("ip.src in 113.10.0.0/24", true),
        (r#"http.request.method in "POST""#, true),
        ("ip.src in {113.10.0.3..113.10.0.9 2001:db8::/32}", false),
        ("ssl", true),
        ("ssl eq true", true),
        ("ssl ne true", false),
        ("not ssl", false),
        ("cf.tls_client_auth.cert_revoked", false),
    ];
    for (expr, want) in cases {
        assert_eq!(eval(expr, REQ), *want, "{expr}");
    }
}

#[test]
fn ipv6_sets_and_equality() {
    let v6 = &[("ip.src", "2001:db8::7")];
    assert!(eval("ip.src in {2001:db8::/32}", v6));
    assert!(eval("ip.src in {198.51.100.1 2001:0db8::/32}", v6));
    assert!(eval("ip.src eq 2001:db8:0:0::7", v6));
    assert!(!eval("ip.src in {10.0.0.0/8 ::1}", v6));
    assert!(eval("ip.src in {2001:db8::1..2001:db8::ff}", v6));
    // IPv4-mapped client addresses match IPv4 rules.
    assert!(eval("ip.src in {192.0.2.0/24}", &[("ip.src", "::ffff:192.0.2.9")]));
    // The documented default of an unset ip.src.
    assert!(eval("ip.src eq 0.0.0.0", &[]));
}

#[test]
fn logical_operators_and_precedence() {
    let t = "ssl";
    let f = "cf.tls_client_auth.cert_revoked";
    let cases: Vec<(String, bool)> = vec![
        (format!("{t} and {f}"), false),
        (format!("{t} && {t}"), true),
        (format!("{t} or {f}"), true),
        (format!("{f} || {f}"), false),
        (format!("{t} xor {f}"), true),
        (format!("{t} ^^ {t}"), false),
        (format!("{t} xor {t} xor {t}"), true),
        (format!("! {t}"), false),
        (format!("not not {t}"), true),
        // not > and: (not f) and t
        (format!("not {f} and {t}"), true),
        // and > or: t or (t and f)
        (format!("{t} or {t} and {f}"), true),
        // and > or: (f and t) or f
        (format!("{f} and {t} or {f}"), false),
        // and > xor: t xor (t and f) = true
        (format!("{t} xor {t} and {f}"), true),
        // xor > or: (t xor t) or f = false
        (format!("{t} xor {t} or {f}"), false),
        // xor > or: t or (t xor t) = true
        (format!("{t} or {t} xor {t}"), true),
        (format!("({t} or {t}) and {f}"), false),
        (format!("not ({t} and {f})"), true),
        (format!("!({t}) && !{f}"), false),
        (format!("!({f}) && !{f}"), true),
        ("true".to_owned(), true),
        ("false or true and true".to_owned(), true),
        ("not true".to_owned(), false),
    ];
    for (expr, want) in cases {
        assert_eq!(eval(&expr, REQ), want, "{expr}");
    }
}

#[test]
fn functions() {
    let cases: &[(&str, bool)] = &[
        (r#"any(http.request.headers.names[*] == "X-Api-Key")"#, true),
        (r#"any(http.request.headers.names[*] == "x-api-key")"#, false),
        (r#"any(lower(http.request.headers.names[*])[*] == "x-api-key")"#, true),
        (
            r#"all(http.request.headers["content-type"][*] == "application/json")"#,
            true,
        ),
        (r#"all(http.request.headers.names[*] contains "t")"#, false),
        (r#"any(http.request.headers["x-api-key"][*] == "k2")"#, true),
        (r#"http.request.headers["x-api-key"][0] == "k1""#, true),
        (r#"http.request.headers["x-api-key"][1] == "k1""#, false),
        (
            r#"concat("/archive", http.request.uri.path) == "/archive/api/v1/users""#,
            true,
        ),
        (r#"concat("String1", " ", "String", "2") == "String1 String2""#, true),
        (
            r#"len(concat(http.request.headers.names, http.request.headers.names)) == 6"#,
            true,
        ),
        (r#"ends_with(http.request.uri.path, "/users")"#, true),
        (r#"ends_with(http.request.uri.path, "/user")"#, false),
        (r#"starts_with(http.request.uri.path, "/api")"#, true),
        (r#"starts_with(http.request.uri.path, "/API")"#, false),
        ("len(http.host) == 15", true),
        ("len(http.request.headers.names) == 3", true),
        (r#"len(http.request.uri.args["filter"][1]) == 4"#, true),
        (r#"all(len(http.request.uri.args["filter"][*])[*] in {3 4})"#, true),
        (r#"all(not len(http.request.uri.args["filter"][*])[*] in {3 4})"#, false),
        (r#"len(http.request.uri.args["filter"]) >= 0"#, true),
        (r#"not len(http.request.uri.args["order"]) >= 0"#, true),
        (r#"lower(http.host) == "www.example.com""#, true),
        (r#"upper(http.host) == "WWW.EXAMPLE.COM""#, true),
        (r#"url_decode(http.request.uri.query) == "a=1&b=%20x""#, true),
        (r#"url_decode(http.request.uri.query, "r") == "a=1&b= x""#, true),
        (r#"to_string(cf.edge.server_port) == "443""#, true),
        (r#"to_string(ssl) == "true""#, true),
        (r#"to_string(ip.src) == "113.10.0.2""#, true),
        (r#"substring(http.request.method, 1, 3) == "OS""#, true),
        (r#"substring(http.request.method, -2) == "ST""#, true),
        (r#"substring(http.request.method, 0, -2) == "PO""#, true),
        (r#"substring(http.request.method, 3, 1) == """#, true),
        (r#"substring(http.request.method, 10) == """#, true),
        (
            r#"split(http.request.headers["x-categories"][0], ",", 64)[3] == "auto""#,
            true,
        ),
        (
            r#"split(http.request.headers["x-categories"][0], ",", 3)[2] == "diy,auto""#,
            true,
        ),
        (
            r#"len(split(http.request.headers["x-categories"][0], ",", 3)) == 3"#,
            true,
        ),
        (
            r#"join(http.request.headers.names, ",") == "Host,X-Api-Key,Content-Type""#,
            true,
        ),
        (r#"remove_bytes(http.host, "\x2e\x77") == "Examplecom""#, true),
        (
            r#"lookup_json_integer(http.request.headers["x-json"][0], "product", "id") == 356"#,
            true,
        ),
        (
            r#"lookup_json_integer(http.request.headers["x-json"][0], "ids", 1) == 456"#,
            true,
        ),
        (
            r#"lookup_json_integer(http.request.headers["x-json"][0], "f") == 42"#,
            false,
        ),
        (
            r#"lookup_json_string(http.request.headers["x-json"][0], "name") == "cloudflare""#,
            true,
        ),
        (
            r#"lookup_json_string(http.request.headers["x-json"][0], "nope") ne "x""#,
            false,
        ),
        ("cidr(ip.src, 24, 24) == 113.10.0.0", true),
        ("cidr(ip.src, 8, 24) == 113.0.0.0", true),
        ("cidr6(ip.src, 24) == 113.10.0.2", true),
        (
            r#"any(decode_base64(http.request.headers["client_id"][*])[*] eq "123abc")"#,
            true,
        ),
        (
            r#"wildcard_replace(http.request.full_uri, "https://*.example.com/*/*", "https://example.com/${1}/${2}/${3}") == "https://example.com/apps/calendar/admin?expand=true""#,
            true,
        ),
        (
            r#"wildcard_replace(http.request.full_uri, "/applications/*", "/apps/${1}") == "https://apps.example.com/calendar/admin?expand=true""#,
            true,
        ),
        (
            r#"any(portcullis.tls_client_auth.cert_san_uri[*] == "spiffe://example.org/ns/prod/sa/api")"#,
            true,
        ),
        (
            r#"any(starts_with(portcullis.tls_client_auth.cert_san_uri[*], "spiffe://example.org/"))"#,
            true,
        ),
        (
            r#"any(starts_with(portcullis.tls_client_auth.cert_san_uri[*], "spiffe://example.org/")[*])"#,
            true,
        ),
        (
            r#"all(ends_with(portcullis.tls_client_auth.cert_san_uri[*], "/api"))"#,
            true,
        ),
        (
            r#"any(ends_with(portcullis.tls_client_auth.cert_san_uri[*], "/web"))"#,
            false,
        ),
    ];
    for (expr, want) in cases {
        assert_eq!(eval(expr, REQ), *want, "{expr}");
    }
}

#[test]
fn function_edge_values() {
    let v6 = &[("ip.src", "2001:0000:130F:0000:0000:09C0:876A:130B")];
    assert!(eval("cidr(ip.src, 24, 24) == 2001::", v6));
    assert!(eval("cidr6(ip.src, 24) == 2001::", v6));
    let p = |path: &str| [("http.request.uri.path", path.to_owned())];
    let run = |expr: &str, path: &str| {
        let vals = p(path);
        let vals: Vec<(&str, &str)> = vals.iter().map(|(k, v)| (*k, v.as_str())).collect();
        eval(expr, &vals)
    };
    assert!(run(
        r#"wildcard_replace(http.request.uri.path, "/*", "/apps/${1}") == "/apps/calendar""#,
        "/calendar"
    ));
    assert!(run(
        r#"wildcard_replace(http.request.uri.path, "/apps/*", "/${1}") == "/calendar""#,
        "/Apps/calendar"
    ));
    assert!(run(
        r#"wildcard_replace(http.request.uri.path, "/apps/*", "/${1}", "s") == "/Apps/calendar""#,
        "/Apps/calendar"
    ));
    assert!(run(
        r#"wildcard_replace(http.request.uri.path, "/apps/*/login", "/${1}/login") == "/calendar/login""#,
        "/apps/calendar/login"
    ));
    assert!(run(
        r#"wildcard_replace(http.request.uri.path, "/*/*", "${2}$$${1}") == "b/c$a""#,
        "/a/b/c"
    ));
    assert!(run(r#"url_decode(http.request.uri.path) == "John Doe""#, "John%20Doe"));
    assert!(run(r#"url_decode(http.request.uri.path) == "John Doe""#, "John+Doe"));
    assert!(run(r#"url_decode(http.request.uri.path) == "%20""#, "%2520"));
    assert!(run(r#"url_decode(http.request.uri.path, "r") == " ""#, "%2520"));
    assert!(run(
        r#"url_decode(http.request.uri.path, "u") == "\xe2\x98\x81""#,
        "%u2601"
    ));
    assert!(run(r#"url_decode(http.request.uri.path) == "%u2601%""#, "%u2601%"));
    assert!(run(
        r#"url_decode(http.request.uri.path) matches "(?u)^\p{Hangul}+$""#,
        "%ED%95%9C%EA%B8%80"
    ));
    assert!(run(
        r#"lookup_json_integer(http.request.uri.path, 1) == -234"#,
        r#"["first_item", -234]"#
    ));
    assert!(run(
        r#"lookup_json_integer(http.request.uri.path, 1, "product_id") == 456"#,
        r#"[{"product_id":123},{"product_id":456}]"#
    ));
    assert!(run(
        r#"lookup_json_string(http.request.uri.path, "networks", 1) == "cloudflare""#,
        r#"{"networks":["other_company","cloudflare"]}"#
    ));
    // Invalid JSON or Base64 gives a missing value: every comparison is false.
    assert!(!run(
        r#"lookup_json_string(http.request.uri.path, "a") ne "x""#,
        "{not json"
    ));
    assert!(!run(r#"decode_base64(http.request.uri.path) ne "x""#, "!!!"));
}

#[test]
fn wildcard_documented_examples() {
    let uri = |u: &str, pat: &str| {
        eval(
            &format!("http.request.full_uri wildcard {pat}"),
            &[("http.request.full_uri", u)],
        )
    };
    let a = r#""https://example.com/a/*""#;
    assert!(uri("https://example.com/a/", a));
    assert!(uri("https://example.com/a/page.html", a));
    assert!(uri("https://example.com/a/sub/folder/?name=value", a));
    assert!(!uri("https://example.com/ab/", a));
    assert!(!uri("https://example.com/b/page.html", a));
    assert!(!uri("https://sub.example.com/a/", a));
    let b = r#""*.example.com/*/page.html""#;
    assert!(uri("http://sub.example.com/folder/page.html", b));
    assert!(uri("https://admin.example.com/team/subteam/page.html", b));
    assert!(!uri("https://example.com/ab/page.html", b));
    assert!(!uri("https://sub.example.com/folder2/page.html?s=value", b));
    assert!(!uri("https://sub.example.com/a/", b));
    // Escaped star and backslash are literal.
    assert!(uri("a*b", r#"r"a\*b""#));
    assert!(!uri("axb", r#"r"a\*b""#));
    assert!(uri(r"a\b", r#"r"a\\b""#));
    assert!(uri("HTTPS://X", r#""https://*""#));
}

#[test]
fn missing_values_compare_false() {
    let cases: &[(&str, bool)] = &[
        (r#"http.request.headers["absent"][0] eq "x""#, false),
        (r#"http.request.headers["absent"][0] ne "x""#, false),
        (r#"not http.request.headers["absent"][0] ne "x""#, true),
        (r#"http.request.headers.names[99] ne "x""#, false),
        (r#"any(http.request.headers["absent"][*] == "x")"#, false),
        (r#"all(http.request.headers["absent"][*] == "x")"#, true),
        (r#"len(http.request.headers["absent"]) >= 0"#, false),
        (r#"starts_with(http.request.headers["absent"][0], "")"#, false),
    ];
    for (expr, want) in cases {
        assert_eq!(eval(expr, REQ), *want, "{expr}");
    }
}

#[test]
fn unset_fields_read_as_defaults() {
    let empty: &[(&str, &str)] = &[];
    assert!(eval(r#"http.host eq """#, empty));
    assert!(eval("cf.edge.server_port eq 0", empty));
    assert!(eval("not cf.tls_client_auth.cert_verified", empty));
    assert!(eval("len(http.request.headers.names) == 0", empty));
    assert!(eval("len(http.request.headers) == 0", empty));
    assert!(eval("ip.src in {0.0.0.0/32}", empty));
}

#[test]
fn context_sets_replace_and_clear_unsets() {
    use crate::{Value, fields};
    let mut c = Context::new();
    assert_eq!(c.get(fields::HTTP_HOST), None);
    c.set(fields::HTTP_HOST, Value::from("a.example")).unwrap();
    c.set(fields::HTTP_REQUEST_URI_PATH, Value::from("/x")).unwrap();
    c.set(fields::HTTP_HOST, Value::from("b.example")).unwrap();
    assert_eq!(c.get(fields::HTTP_HOST), Some(&Value::from("b.example")));
    assert_eq!(c.get(fields::HTTP_REQUEST_URI_PATH), Some(&Value::from("/x")));
    assert!(c.set(fields::HTTP_HOST, Value::Bool(true)).is_err());
    assert_eq!(c.get(fields::HTTP_HOST), Some(&Value::from("b.example")));
    // Every field at once: positions stay in range.
    for f in crate::schema() {
        let (id, v) = parse_field_value(f.name(), "1")
            .or_else(|_| parse_field_value(f.name(), "1.2.3.4"))
            .or_else(|_| parse_field_value(f.name(), "true"))
            .or_else(|_| parse_field_value(f.name(), "[]"))
            .or_else(|_| parse_field_value(f.name(), "{}"))
            .unwrap();
        c.set(id, v).unwrap();
    }
    assert!(crate::schema().iter().all(|f| c.get(f.id()).is_some()));
    c.clear();
    assert_eq!(c.get(fields::HTTP_HOST), None);
    assert!(!compile("http.host eq \"b.example\"").unwrap().eval(&c));
}

/// Every example expression of cloudflare-mtls.md sections 3.4, 4.1, 4.2, 4.3 and 8.3.
#[test]
fn cloudflare_mtls_examples() {
    let no_cert: &[(&str, &str)] = &[("http.host", "mtls.example.com"), ("http.request.uri.path", "/admin")];
    let good: &[(&str, &str)] = &[
        ("http.host", "mtls.example.com"),
        ("http.request.uri.path", "/admin"),
        ("cf.tls_client_auth.cert_presented", "true"),
        ("cf.tls_client_auth.cert_verified", "true"),
        (
            "cf.tls_client_auth.cert_issuer_ski",
            "A5AC554235DBA6D963B9CDE0185CFAD6E3F55E9F",
        ),
        ("cf.tls_client_auth.cert_fingerprint_sha256", "253e08c1"),
        ("cf.tls_client_auth.cert_serial", "527E0F20"),
    ];
    let revoked: Vec<(&str, &str)> = good
        .iter()
        .copied()
        .chain([("cf.tls_client_auth.cert_revoked", "true")])
        .collect();
    let chain: Vec<(&str, &str)> = good
        .iter()
        .copied()
        .chain([
            ("cf.tls_client_auth.cert_chain_rfc9440", ":MIIB:, :MIIC:"),
            ("cf.tls_client_auth.cert_rfc9440", ":MIIA:"),
        ])
        .collect();
    // (expression, no certificate, valid certificate, valid but revoked)
    let cases: &[(&str, bool, bool, bool)] = &[
        (
            r#"(http.host in {"h1" "h2"} and not cf.tls_client_auth.cert_verified)"#,
            false,
            false,
            false,
        ),
        (
            r#"(http.host in {"mtls.example.com" "h2"} and not cf.tls_client_auth.cert_verified)"#,
            true,
            false,
            false,
        ),
        ("not cf.tls_client_auth.cert_verified", true, false, false),
        (
            r#"(not cf.tls_client_auth.cert_verified and http.request.uri.path in {"/your/path"})"#,
            false,
            false,
            false,
        ),
        (
            r#"(not cf.tls_client_auth.cert_verified and http.request.uri.path in {"/admin"})"#,
            true,
            false,
            false,
        ),
        (
            r#"((not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/admin"})"#,
            true,
            false,
            true,
        ),
        (
            r#"(not cf.tls_client_auth.cert_verified and http.request.uri.path in {"/cart"})"#,
            false,
            false,
            false,
        ),
        (
            r#"(http.host in {"a" "b"} and not cf.tls_client_auth.cert_verified)"#,
            false,
            false,
            false,
        ),
        (
            r#"not (cf.tls_client_auth.cert_verified and cf.tls_client_auth.cert_issuer_ski eq "A5AC554235DBA6D963B9CDE0185CFAD6E3F55E9F")"#,
            true,
            false,
            false,
        ),
        (
            r#"not (cf.tls_client_auth.cert_verified and cf.tls_client_auth.cert_fingerprint_sha256 eq "253e08c1")"#,
            true,
            false,
            false,
        ),
        (
            r#"(http.host in {"mtls.example.com" "mtls2.example.com"} and (not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked))"#,
            true,
            false,
            true,
        ),
        (
            r#"(http.host in {"mtls.example.com"} and cf.tls_client_auth.cert_serial ne "527E0F20")"#,
            true,
            false,
            false,
        ),
        (
            r#"(http.request.uri.path in {"/headers"} and http.host in {"mtls.example.com"} and not cf.tls_client_auth.cert_verified and cf.tls_client_auth.cert_fingerprint_sha256 ne "253e08c1")"#,
            false,
            false,
            false,
        ),
        (
            r#"(http.request.uri.path in {"/admin"} and http.host in {"mtls.example.com"} and not cf.tls_client_auth.cert_verified and cf.tls_client_auth.cert_fingerprint_sha256 ne "253e08c1")"#,
            true,
            false,
            false,
        ),
        (
            r#"(http.host in {"mtls.example.com"} and cf.tls_client_auth.cert_verified)"#,
            false,
            true,
            true,
        ),
        ("true", true, true, true),
        (
            "cf.tls_client_auth.cert_verified and not cf.tls_client_auth.cert_revoked and not cf.tls_client_auth.cert_rfc9440_too_large",
            false,
            true,
            false,
        ),
    ];
    for (expr, none, valid, rev) in cases {
        assert_eq!(eval(expr, no_cert), *none, "no cert: {expr}");
        assert_eq!(eval(expr, good), *valid, "valid cert: {expr}");
        assert_eq!(eval(expr, &revoked), *rev, "revoked cert: {expr}");
    }
    // As Cloudflare's pages print them, the fingerprint example is upper-case and the others
    // hold placeholders: rules that could never match. Portcullis refuses them, naming the fix.
    for (expr, hint) in [
        (
            r#"not (cf.tls_client_auth.cert_verified and cf.tls_client_auth.cert_fingerprint_sha256 eq "253E08C1")"#,
            Some("write \"253e08c1\""),
        ),
        (r#"cf.tls_client_auth.cert_serial ne "SERIAL""#, None),
        (r#"cf.tls_client_auth.cert_fingerprint_sha256 ne "FP""#, None),
    ] {
        let e = compile(expr).expect_err(expr);
        assert!(e.to_string().contains("hex without separators"), "{e}");
        assert_eq!(e.hint(), hint, "{expr}");
    }
    let rule4 = r#"cf.tls_client_auth.cert_verified and not cf.tls_client_auth.cert_revoked and cf.tls_client_auth.cert_chain_rfc9440 ne "" and not cf.tls_client_auth.cert_chain_rfc9440_too_large"#;
    assert!(!eval(rule4, good));
    assert!(eval(rule4, &chain));
    assert!(!eval(rule4, no_cert));
}

#[test]
fn operators_documented_examples_compile() {
    for expr in [
        r#"not ( http.host eq "www.cloudflare.com" and ip.src in {203.0.113.0/24} )"#,
        r#"http.host eq "www.cloudflare.com" xor ip.src in {203.0.113.0/24}"#,
        r#"(
 (http.host eq "api.example.com" and http.request.uri.path eq "/api/v2/auth") or
 (http.host matches "^(www|store|blog)\.example\.com" and http.request.uri.path contains "wp-login.php") or
 http.request.method in {"CN" "TH"} or cf.edge.server_port in {12345 54321 11111}
) and not ip.src in {11.22.33.0/24}"#,
        "ip.src in {198.51.100.1 198.51.100.3..198.51.100.7 192.0.2.0/24 2001:0db8::/32}",
        "cf.edge.server_port in {8000..8009 8080..8089}",
        r#"lower(http.request.uri.path) contains "/wp-login.php""#,
        r##"http.request.uri.path matches r#"a"b"#"##,
        r###"http.request.uri.path matches r##"a"#b"##"###,
        r#"http.request.uri.path matches r"/api/login\.aspx$""#,
    ] {
        if let Err(e) = compile(expr) {
            panic!("{expr}\n{}", e.render(expr));
        }
    }
    assert!(eval(
        r#"http.host matches "^(www|store|blog)\.example\.com""#,
        &[("http.host", "store.example.com")]
    ));
    assert!(!eval(
        r#"http.host matches "^(www|store|blog)\.example\.com""#,
        &[("http.host", "storeXexample.com")]
    ));
}

/// Strings: escapes, raw strings, unicode and bytes round-trip to the exact value.
#[test]
fn string_literals() {
    let cases: &[(&str, &str)] = &[
        (r#""plain""#, "plain"),
        (r#""a\"b""#, "a\"b"),
        (r#""back\\slash""#, "back\\slash"),
        (r#""\x41\x42""#, "AB"),
        (r#""héllo ☁️ 日本""#, "héllo ☁️ 日本"),
        (r#"r"C:\path\n""#, "C:\\path\\n"),
        (r##"r#"say "hi""#"##, "say \"hi\""),
        (r###"r##"a"#b"##"###, "a\"#b"),
        (r#""""#, ""),
        (r#"r"""#, ""),
        ("\"multi\nline\"", "multi\nline"),
    ];
    // http.referer: http.host refuses literals that are not lower-case host names.
    for (lit, value) in cases {
        let expr = format!("http.referer eq {lit}");
        assert!(eval(&expr, &[("http.referer", value)]), "{lit} should equal {value:?}");
        assert!(!eval(&expr, &[("http.referer", &format!("{value}x"))]), "{lit}");
    }
    // Non-UTF-8 bytes through \x escapes.
    let p = compile(r#"http.referer eq "\xff\xfe""#).expect("compiles");
    let mut c = Context::new();
    c.set(crate::fields::HTTP_REFERER, vec![0xff_u8, 0xfe])
        .expect("bytes are a String");
    assert!(p.eval(&c));
    // In a regex, backslashes belong to the regex: "\." is a literal dot, "\"" a quote.
    assert!(eval(r#"http.host matches "a\"b\.c""#, &[("http.host", "a\"b.c")]));
    assert!(!eval(r#"http.host matches "a\"b\.c""#, &[("http.host", "a\"bXc")]));
}

#[test]
fn fields_read_are_reported() {
    let p = compile(r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}"#)
        .expect("compiles");
    let names: Vec<&str> = p.fields().iter().map(|id| id.field().name()).collect();
    assert_eq!(
        names,
        [
            "http.request.uri.path",
            "cf.tls_client_auth.cert_verified",
            "cf.tls_client_auth.cert_revoked"
        ]
    );
}

#[test]
fn schema_is_complete() {
    let schema = crate::schema();
    let mtls = schema
        .iter()
        .filter(|f| f.name().starts_with("cf.tls_client_auth."))
        .count();
    assert_eq!(mtls, 21);
    for name in [
        "http.host",
        "http.request.method",
        "http.request.uri",
        "http.request.uri.path",
        "http.request.uri.query",
        "http.request.uri.args",
        "http.request.full_uri",
        "raw.http.request.uri",
        "raw.http.request.uri.path",
        "raw.http.request.uri.query",
        "raw.http.request.uri.args",
        "raw.http.request.full_uri",
        "http.request.version",
        "http.request.headers",
        "http.request.headers.names",
        "http.request.headers.values",
        "http.user_agent",
        "http.cookie",
        "http.request.cookies",
        "http.request.uri.args.names",
        "http.request.uri.args.values",
        "raw.http.request.uri.args.names",
        "raw.http.request.uri.args.values",
        "http.request.timestamp.sec",
        "http.request.timestamp.msec",
        "http.referer",
        "ip.src",
        "ssl",
        "cf.tls_version",
        "cf.tls_cipher",
        "cf.edge.server_port",
        "portcullis.tls_client_auth.verify_error",
        "portcullis.tls_client_auth.verify_result",
        "portcullis.tls_client_auth.cert_status",
        "portcullis.tls_client_auth.cert_san_dns",
        "portcullis.tls_client_auth.cert_san_uri",
        "portcullis.tls_client_auth.cert_san_email",
        "portcullis.grpc.service",
        "portcullis.grpc.method",
    ] {
        assert!(crate::field_by_name(name).is_some(), "{name} missing");
    }
    for (i, f) in schema.iter().enumerate() {
        assert_eq!(f.id().index(), i);
        assert!(!f.description().is_empty());
    }
    assert_eq!(
        crate::field_by_name("http.request.headers").map(|f| f.ty().to_string()),
        Some("Map<Array<String>>".to_owned())
    );
}

#[test]
fn context_rejects_mistyped_values() {
    let mut c = Context::new();
    let err = c.set(crate::fields::SSL, "yes").expect_err("a string is not a Boolean");
    assert_eq!(err.to_string(), "field ssl is Boolean, the value given is not");
    assert!(c.set_by_name("nope", true).is_err());
    let err = parse_field_value("cf.edge.server_port", "x").expect_err("not an integer");
    assert!(
        err.to_string()
            .starts_with("invalid Integer value for cf.edge.server_port: \"x\" is not an integer"),
        "{err}"
    );
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => Just("ssl".to_owned()),
        10 => Just("cf.tls_client_auth.cert_verified".to_owned()),
        10 => Just("true".to_owned()),
        10 => "[a-z/]{0,6}".prop_map(|s| format!("http.request.uri.path eq \"{s}\"")),
        10 => "[a-z]{0,4}".prop_map(|s| format!("http.host wildcard \"*{s}*\"")),
        10 => "[a-z]{0,4}".prop_map(|s| format!("any(http.request.headers.names[*] contains \"{s}\")")),
        10 => (0i64..100, 0i64..100)
            .prop_map(|(a, b)| format!("cf.edge.server_port in {{{a}..{} {b}}}", a + b)),
        10 => Just("ip.src in {10.0.0.0/8 2001:db8::/32}".to_owned()),
        10 => Just("len(split(http.request.uri.path, \"/\", 4)) > 2".to_owned()),
        10 => Just("lookup_json_integer(http.request.uri.query, \"a\", 0) == 1".to_owned()),
        10 => Just("http.request.headers[\"x\"][0] matches \"^a+$\"".to_owned()),
        // Something wrong now and then.
        1 => Just("http.hots eq 1".to_owned()),
        1 => Just("(".to_owned()),
        1 => Just("r#\"".to_owned()),
    ]
}

fn grammar() -> impl Strategy<Value = String> {
    leaf().prop_recursive(8, 64, 4, |inner| {
        prop_oneof![
            (
                inner.clone(),
                inner.clone(),
                prop_oneof![Just(" and "), Just(" or "), Just(" xor "), Just(" && "), Just(" ^^ ")]
            )
                .prop_map(|(a, b, op)| format!("{a}{op}{b}")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            inner.prop_map(|a| format!("({a})")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(s in "\\PC{0,200}") {
        if let Err(e) = compile(&s) {
            let _ = e.render(&s);
            prop_assert!(e.span().end <= s.len());
        }
    }

    #[test]
    fn random_symbols_never_panic(s in "[ a-z._\"r#\\\\(){}\\[\\]*0-9:/=!<>~&|^$,-]{0,120}") {
        if let Err(e) = compile(&s) {
            let _ = e.render(&s);
        }
    }

    #[test]
    fn grammar_shaped_input_compiles_or_errors_and_evaluates(expr in grammar(), path in "[a-z/]{0,8}") {
        match compile(&expr) {
            Ok(p) => {
                let c = ctx(&[("http.request.uri.path", &path), ("http.request.uri.query", "{\"a\":[1]}")]);
                let v = p.eval(&c);
                let _ = p.eval(&Context::new());
                // Wrapping keeps meaning: negation flips it, xor with itself is false.
                let not = compile(&format!("not ({expr})")).expect("the negation of a valid expression compiles");
                prop_assert_eq!(not.eval(&c), !v);
                let x = compile(&format!("({expr}) xor ({expr})")).expect("valid");
                prop_assert!(!x.eval(&c));
            }
            Err(e) => {
                let _ = e.render(&expr);
            }
        }
    }

    /// The wildcard matcher agrees with an equivalent anchored regex, captures included
    /// (lazy `.*?` captures are what Cloudflare documents for wildcard_replace).
    #[test]
    fn wildcard_agrees_with_regex(pattern in "[ab]{0,3}(\\*[ab]{1,3}){0,3}\\*?", value in "[abAB]{0,10}", strict in any::<bool>()) {
        let w = crate::funcs::Wildcard::parse(pattern.as_bytes(), strict).expect("valid pattern");
        let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
        let re = format!("{}^{}$", if strict { "" } else { "(?i)" }, parts.join("(.*?)"));
        let re = regex::Regex::new(&re).expect("valid regex");
        let mut caps = Vec::new();
        let matched = w.walk(value.as_bytes(), |a, b| caps.push(value[a..b].to_owned()));
        prop_assert_eq!(matched, re.is_match(&value), "{} vs {}", pattern, value);
        if let Some(c) = re.captures(&value) {
            let want: Vec<String> = c.iter().skip(1).map(|m| m.map_or(String::new(), |m| m.as_str().to_owned())).collect();
            prop_assert_eq!(caps, want);
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash(depth in 0usize..3000, kind in 0usize..5) {
        let (open, close) = match kind {
            0 => ("(", ")"),
            1 => ("not ", ""),
            2 => ("any(", "[*] == \"a\")"),
            3 => ("lower(", ")"),
            _ => ("!(", ")"),
        };
        let expr = format!("{}ssl{}", open.repeat(depth), close.repeat(depth));
        match compile(&expr) {
            Ok(p) => { let _ = p.eval(&Context::new()); }
            Err(e) => { let _ = e.render(&expr); }
        }
    }
}

#[test]
fn limits_are_named() {
    let deep = format!("{}ssl{}", "(".repeat(100), ")".repeat(100));
    let err = compile(&deep).expect_err("too deep");
    assert_eq!(
        err.to_string(),
        "expression nested too deeply: more than 64 levels at 1:65"
    );
    let long = format!("http.host in {{{}}}", "\"aaaaaaa\" ".repeat(2000));
    let err = compile(&long).expect_err("too long");
    assert_eq!(
        err.to_string(),
        format!(
            "expression too long: {} bytes, the limit is 16384 bytes at 1:16385",
            long.len()
        )
    );
    let many = format!("http.host in {{{}}}", "\"a\"".repeat(5000));
    let err = compile(&many).expect_err("too many nodes");
    assert!(
        err.to_string()
            .starts_with("expression too large: more than 4096 fields, values and operators at "),
        "{err}"
    );
    let indexes = format!("http.request.headers.names{}", "[0]".repeat(70));
    assert!(
        compile(&indexes)
            .expect_err("too deep")
            .to_string()
            .starts_with("expression nested too deeply")
    );
}

/// The deepest accepted nesting compiles and evaluates within a 1 MiB stack even unoptimised
/// (a stack overflow aborts the test binary, so this fails loudly).
#[test]
fn deepest_nesting_fits_a_small_stack() {
    let depth = crate::MAX_NESTING;
    let cases = [
        format!("{}ssl{}", "(".repeat(depth), ")".repeat(depth)),
        format!("{}ssl", "not ".repeat(depth)),
        format!(
            "{}http.host{} == \"a\"",
            "lower(".repeat(depth - 1),
            ")".repeat(depth - 1)
        ),
        format!(
            "{}any(lower(http.request.headers.names[*])[*] == \"a\"){}",
            "(".repeat(depth - 3),
            ")".repeat(depth - 3)
        ),
    ];
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            for expr in cases {
                let p = compile(&expr).unwrap_or_else(|e| panic!("{}", e.render(&expr)));
                let _ = p.eval(&ctx(&[("http.host", "A")]));
            }
        })
        .expect("thread spawns")
        .join()
        .expect("compiles without overflowing");
}

#[test]
fn pinned_values_are_a_superset_of_what_can_match() {
    let host = crate::field_by_name("http.host").unwrap().id();
    let pinned = |src: &str| {
        compile(src).unwrap().pinned_values(host).map(|pins| {
            let mut shown: Vec<String> = pins
                .iter()
                .map(|p| match (p, p.pattern()) {
                    (crate::Pinned::Exact(v), _) => String::from_utf8(v.clone()).unwrap(),
                    (_, Some(pattern)) => format!("~{}", String::from_utf8(pattern).unwrap()),
                    (_, None) => unreachable!(),
                })
                .collect();
            shown.sort();
            shown
        })
    };
    assert_eq!(pinned(r#"http.host eq "a.test""#), Some(vec!["a.test".to_owned()]));
    assert_eq!(
        pinned(r#"http.host in {"b.test" "a.test"} and not cf.tls_client_auth.cert_verified"#),
        Some(vec!["a.test".to_owned(), "b.test".to_owned()])
    );
    assert_eq!(
        pinned(r#"(http.host eq "a.test" and http.request.uri.path eq "/x") or http.host eq "b.test""#),
        Some(vec!["a.test".to_owned(), "b.test".to_owned()])
    );
    // What `rule add-mtls --host a.test --host '*.d.test'` writes.
    assert_eq!(
        pinned(r#"http.request.uri.path in {"/api"} and (http.host in {"a.test"} or http.host wildcard "*.D.test")"#),
        Some(vec!["a.test".to_owned(), "~*.d.test".to_owned()])
    );
    assert_eq!(
        pinned(r#"http.host strict wildcard "x\*y*""#),
        Some(vec!["~x\\*y*".to_owned()])
    );
    let pins = compile(r#"http.host wildcard "*.d.test""#)
        .unwrap()
        .pinned_values(host)
        .unwrap();
    assert!(pins[0].matches(b"a.d.test") && !pins[0].matches(b"d.test"));
    // Anything that does not pin the host: the rule may apply to every hostname.
    for src in [
        r#"http.host eq "a.test" or http.request.uri.path eq "/x""#,
        r#"not http.host eq "a.test""#,
        r#"http.host ne "a.test""#,
        r#"lower(http.host) eq "a.test""#,
        r#"http.host matches "a""#,
        r#"http.request.uri.path eq "/api""#,
    ] {
        assert_eq!(pinned(src), None, "{src}");
    }
}
