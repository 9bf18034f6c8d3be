//! Compile errors: exact messages, positions and renderings.

use crate::compile;

fn err(src: &str) -> String {
    match compile(src) {
        Ok(_) => panic!("{src:?} compiled"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn error_messages() {
    let cases: &[(&str, &str)] = &[
        (
            r#"(http.hots eq "x")"#,
            r#"unknown field "http.hots" at 1:2; did you mean "http.host"?"#,
        ),
        (
            "frobnicate",
            "unknown field \"frobnicate\" at 1:1; `portcullis rules fields` lists the fields",
        ),
        ("lower", "lower is a function, not a field at 1:1; call it: lower(…)"),
        (
            "http.host eq 1",
            "type mismatch: `eq` cannot compare String with Integer at 1:14",
        ),
        (
            r#"cf.edge.server_port eq "443""#,
            "type mismatch: `eq` cannot compare Integer with String at 1:24",
        ),
        (
            r#"ip.src eq "10.0.0.1""#,
            "type mismatch: `eq` cannot compare IP address with String at 1:11",
        ),
        (
            "ip.src eq 10.0.0.0/8",
            "`eq` compares single addresses, not ranges at 1:11; use a set: ip.src in {10.0.0.0/8}",
        ),
        (
            "ip.src lt 10.0.0.1",
            "`lt` is not supported for IP address; it works on String and Integer at 1:8",
        ),
        (
            r#"cf.edge.server_port contains "4""#,
            "`contains` is not supported for Integer; it works on String at 1:21",
        ),
        (
            r#"http.request.headers.names eq "x""#,
            "`eq` is not supported for Array<String>; it works on String, Integer and IP address at 1:28; pick an element ([0], [\"key\"]) or use [*] inside any(…) or all(…)",
        ),
        (
            r#"ssl eq "true""#,
            "type mismatch: `eq` cannot compare Boolean with String at 1:8",
        ),
        (
            "http.host eq foo",
            "invalid value `foo` for comparison with String at 1:14; strings are quoted: \"…\"",
        ),
        (
            "http.host eq http.referer",
            "the right side of `eq` must be a literal value, not `http.referer` at 1:14",
        ),
        ("http.host", "expected a Boolean, found String at 1:1"),
        ("not http.host", "`not` needs a Boolean, found String at 1:5"),
        ("ssl and http.host", "expected a Boolean, found String at 1:9"),
        (
            r#"http.request.headers.names[*] == "a""#,
            "expected a Boolean, found Array<Boolean> at 1:1; wrap it in any(…) or all(…)",
        ),
        (
            r#"http.host in $office_network"#,
            "unknown list `$office_network` at 1:14; lists are created with the Lists API (/accounts/{account_id}/rules/lists)",
        ),
        (r#"http.host in {}"#, "empty set at 1:14"),
        (
            r#"http.host in {"a" 1}"#,
            "type mismatch: `in` cannot compare String with Integer at 1:19",
        ),
        (
            "cf.edge.server_port in {9..1}",
            "empty range `9..1`: the start is after the end at 1:25",
        ),
        ("ip.src in {10.0.0.0/33}", "invalid CIDR `10.0.0.0/33` at 1:12"),
        (
            "ip.src in {10.0.0.1..::1}",
            "IP range `10.0.0.1..::1` mixes IPv4 and IPv6 at 1:12",
        ),
        (
            "http.host in (\"a\")",
            "expected `{` to start a set of values after `in`, found `(` at 1:14",
        ),
        (
            r#"http.host matches "(""#,
            "invalid regular expression: unclosed group at 1:19",
        ),
        (
            r#"http.host wildcard "a**""#,
            "invalid wildcard pattern: `**` is not allowed at 1:20",
        ),
        (
            r#"http.host eq "a\qb""#,
            "invalid escape in string at 1:16; quoted strings accept \\\", \\\\ and \\xHH; raw strings r\"…\" take text as is",
        ),
        (
            r#"http.host eq "\x4""#,
            "invalid escape: \\x needs two hex digits at 1:15",
        ),
        (
            r#"http.host eq "abc"#,
            "unterminated string: expected a closing `\"` at 1:14",
        ),
        (
            r##"http.host eq r#"abc"##,
            "unterminated raw string: expected a closing `\"#` at 1:14",
        ),
        (
            "(ssl",
            "expected `)` to close the `(` at 1:1, found the end of the expression at 1:5",
        ),
        ("ssl)", "unmatched `)` at 1:4"),
        (
            "ssl and",
            "expected a field, function or value, found the end of the expression at 1:8",
        ),
        (
            "ssl AND ssl",
            "expected a comparison operator, `and`, `or`, `xor` or the end of the expression, found `AND` at 1:5; operators must be lowercase: `and`",
        ),
        (
            r#"http.host EQ "a""#,
            "expected a comparison operator, `and`, `or`, `xor` or the end of the expression, found `EQ` at 1:11; operators must be lowercase: `eq`",
        ),
        (
            r#"http.host equals "a""#,
            "expected a comparison operator, `and`, `or`, `xor` or the end of the expression, found `equals` at 1:11",
        ),
        (
            r#"http.host conatins "a""#,
            "expected a comparison operator, `and`, `or`, `xor` or the end of the expression, found `conatins` at 1:11; did you mean `contains`?",
        ),
        (
            r#"http.request.uri.path ends_with ".html""#,
            "expected a comparison operator, `and`, `or`, `xor` or the end of the expression, found `ends_with` at 1:23; ends_with is a function: ends_with(field, \"value\")",
        ),
        (
            r#"http.host strict "a""#,
            "expected `wildcard` after `strict`, found `\"` at 1:18",
        ),
        ("and ssl", "expected a field, function or value, found `and` at 1:1"),
        (
            "ssl ssl",
            "expected a comparison operator, `and`, `or`, `xor` or the end of the expression, found `ssl` at 1:5",
        ),
        (
            "",
            "expected a field, function or value, found the end of the expression at 1:1",
        ),
        ("ssl\n  and ?", "expected a field, function or value, found `?` at 2:7"),
        ("frob(http.host)", "unknown function frob() at 1:1"),
        (
            "lowr(http.host) eq \"a\"",
            "unknown function lowr() at 1:1; did you mean lower()?",
        ),
        (
            "regex_replace(http.host, \"a\", \"b\") eq \"a\"",
            "function regex_replace() is not supported by Portcullis at 1:1",
        ),
        (
            "lower(http.host, 1) eq \"a\"",
            "lower() takes 1 argument, found 2 at 1:1",
        ),
        (
            "substring(http.host) eq \"a\"",
            "substring() takes 2 to 3 arguments, found 1 at 1:1",
        ),
        (
            "lower(cf.edge.server_port) eq \"a\"",
            "argument 1 of lower() must be String, found Integer at 1:7",
        ),
        (
            "starts_with(http.host, 1)",
            "argument 2 of starts_with() must be String, found Integer at 1:24",
        ),
        (
            "any(ssl)",
            "argument 1 of any() must be Array<Boolean>, found Boolean at 1:5; compare each element: any(field[*] == \"value\")",
        ),
        (
            "any(http.request.headers.names[*])",
            "argument 1 of any() must be Array<Boolean>, found an unpacked String ([*]) at 1:5; compare each element: any(field[*] == \"value\")",
        ),
        (
            r#"split(http.host, "", 2)[0] eq "a""#,
            "the separator of split() must not be empty at 1:18",
        ),
        (
            r#"split(http.host, ",", 129)[0] eq "a""#,
            "argument 3 of split() must be between 1 and 128, found 129 at 1:23",
        ),
        (
            r#"split(http.host, http.host, 2)[0] eq "a""#,
            "argument 2 of split() must be a string literal at 1:18",
        ),
        (
            "cidr(ip.src, 33, 64) eq 1.2.3.4",
            "argument 2 of cidr() must be between 1 and 32, found 33 at 1:14",
        ),
        (
            r#"url_decode(http.host, "x") eq "a""#,
            "url_decode() options are \"r\" (recursive) and \"u\" (%uXXXX) at 1:23",
        ),
        (
            r#"wildcard_replace(http.host, "*", "${2}") eq "a""#,
            "invalid replacement: ${2} refers to a `*` the pattern does not have (it has 1) at 1:34",
        ),
        (
            r#"wildcard_replace(http.host, "*", "$x") eq "a""#,
            "invalid replacement: a `$` must start a reference like ${1} or be doubled ($$) at 1:34",
        ),
        (
            r#"concat(http.host, 1) eq "a""#,
            "argument 2 of concat() must be String, found Integer at 1:19",
        ),
        (
            r#"starts_with(http.request.headers.names[*], http.request.headers.names[*])"#,
            "[*] can only be used in the first argument of a function at 1:44",
        ),
        (
            r#"http.request.headers.names["a"] eq "x""#,
            "Array<String> is indexed by position ([0]) or [*], not by a string key at 1:27",
        ),
        (
            r#"http.request.headers[0][0] eq "x""#,
            "Map<Array<String>> is indexed by a string key ([\"name\"]) or [*], not by a position at 1:21",
        ),
        (r#"http.host[0] eq "x""#, "String cannot be indexed at 1:10"),
        (
            r#"http.request.headers.names[-1] eq "x""#,
            "array indexes must not be negative at 1:27",
        ),
        (
            r#"http.request.headers.names[*][0] eq "x""#,
            "cannot index an element unpacked with [*] at 1:30",
        ),
        (
            "cf.edge.server_port eq 99999999999999999999",
            "invalid value `99999999999999999999` for comparison with Integer at 1:24",
        ),
        (
            "substring(http.host, 99999999999999999999) eq \"\"",
            "integer 99999999999999999999 is out of range at 1:22",
        ),
        (
            r#"http.host eq "a", "b""#,
            "expected `and`, `or`, `xor` or the end of the expression, found `,` at 1:17",
        ),
    ];
    let mut failures = Vec::new();
    for (src, want) in cases {
        let got = err(src);
        if got != *want {
            failures.push(format!("{src}\n   got: {got}\n  want: {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn render_draws_a_caret_under_the_span() {
    let src = "ssl and\n  http.host eq 1";
    let e = compile(src).expect_err("type error");
    assert_eq!((e.line(), e.column(), e.span()), (2, 16, 23..24));
    assert_eq!(
        e.render(src),
        "error: type mismatch: `eq` cannot compare String with Integer\n --> 2:16\n  |\n2 |   http.host eq 1\n  |                ^\n"
    );
    let src = "lower(http.hots) eq \"ü\"";
    let e = compile(src).expect_err("unknown field");
    assert_eq!(
        e.render(src),
        "error: unknown field \"http.hots\"\n --> 1:7\n  |\n1 | lower(http.hots) eq \"ü\"\n  |       ^^^^^^^^^\n  = help: did you mean \"http.host\"?\n"
    );
    // A caret at the end of the input.
    let e = compile("ssl and").expect_err("incomplete");
    assert!(
        e.render("ssl and").ends_with("1 | ssl and\n  |        ^\n"),
        "{}",
        e.render("ssl and")
    );
    // Columns count characters, not bytes.
    let e = compile("\"é\" eq 1").expect_err("literal on the left is a String");
    assert_eq!(e.column(), 8);
}

#[test]
fn english_operators_are_lowercase_only() {
    for op in ["EQ", "Eq", "NE", "CONTAINS", "MATCHES", "IN", "Wildcard"] {
        let src = format!("http.host {op} \"a\"");
        assert!(compile(&src).is_err(), "{src}");
    }
    for op in ["AND", "Or", "XOR"] {
        assert!(compile(&format!("ssl {op} ssl")).is_err(), "{op}");
    }
    assert!(compile("NOT ssl").is_err());
}

#[test]
fn lists_resolve_at_compile_time() {
    use crate::{Context, Lists, compile_with, fields};
    let mut lists = Lists::new();
    lists
        .insert_ip("office", ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"])
        .unwrap();
    let program = compile_with(
        r#"ip.src in $office and not (ip.src in {192.0.2.9}) and http.host eq "a""#,
        &lists,
    )
    .unwrap();
    assert_eq!(program.lists(), ["office"]);
    let mut ctx = Context::new();
    ctx.set(fields::HTTP_HOST, "a").unwrap();
    for (ip, want) in [
        ("192.0.2.1", true),
        ("192.0.2.9", false),
        ("192.0.3.1", false),
        ("198.51.100.7", true),
        ("::ffff:198.51.100.7", true),
        ("2001:db8:5::1", true),
        ("2001:db9::1", false),
    ] {
        ctx.set(fields::IP_SRC, ip.parse::<std::net::IpAddr>().unwrap())
            .unwrap();
        assert_eq!(program.eval(&ctx), want, "{ip}");
    }

    // IPv4-mapped IPv6 ranges in inline sets match IPv4 clients, as in lists.
    let mapped = compile_with(
        "ip.src in {::ffff:198.51.100.0/120 ::ffff:203.0.113.1..::ffff:203.0.113.9}",
        &lists,
    )
    .unwrap();
    for (ip, want) in [("198.51.100.200", true), ("203.0.113.5", true), ("203.0.113.10", false)] {
        ctx.set(fields::IP_SRC, ip.parse::<std::net::IpAddr>().unwrap())
            .unwrap();
        assert_eq!(mapped.eval(&ctx), want, "{ip}");
    }

    let err = |src: &str| compile_with(src, &lists).unwrap_err().to_string();
    assert_eq!(
        err("ip.src in $ofice"),
        "unknown list `$ofice` at 1:11; did you mean $office?"
    );
    assert_eq!(
        err("http.host in $office"),
        "type mismatch: `$office` is an IP list and cannot be compared with String at 1:14"
    );
    assert_eq!(err("ip.src in $"), "a list name must follow `$` at 1:11");
    assert_eq!(
        err("ip.src eq $office"),
        "a list (`$name`) can only follow `in` at 1:11; ip.src in $name"
    );
}

#[test]
fn wildcard_hostnames_in_host_equality_are_refused() {
    assert_eq!(
        err(r#"http.host in {"a.example.com" "*.t.example.com"}"#),
        "`http.host` is the name the request asked for, never a wildcard, so this string can never match it at 1:31; http.host wildcard \"*.t.example.com\""
    );
    assert!(err(r#"not http.host eq "*.t.example.com""#).contains("never a wildcard"));
    assert_eq!(
        err(r#"http.host in {"API.example.com."}"#),
        "`http.host` is lower-case and has no trailing dot, so this string can never match it at 1:15; write \"api.example.com\""
    );
    for src in [
        r#"http.host wildcard "*.t.example.com""#,
        r#"http.host in {"a.example.com"}"#,
        r#"http.request.uri.path eq "/*""#,
    ] {
        compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    }
}

#[test]
fn hex_fields_refuse_literals_that_can_never_match() {
    let cases: &[(&str, &str)] = &[
        (
            r#"cf.tls_client_auth.cert_serial eq "3bb94ff1""#,
            "`cf.tls_client_auth.cert_serial` is upper-case hex without separators, so this string can never match it at 1:35; write \"3BB94FF1\"",
        ),
        (
            r#"cf.tls_client_auth.cert_issuer_ski in {"AB01" "ab:02"}"#,
            "`cf.tls_client_auth.cert_issuer_ski` is upper-case hex without separators, so this string can never match it at 1:47; write \"AB02\"",
        ),
        (
            r#"not cf.tls_client_auth.cert_fingerprint_sha256 ne "9F86D081""#,
            "`cf.tls_client_auth.cert_fingerprint_sha256` is lower-case hex without separators, so this string can never match it at 1:51; write \"9f86d081\"",
        ),
        (
            r#"cf.tls_client_auth.cert_fingerprint_sha1 contains "zz""#,
            "`cf.tls_client_auth.cert_fingerprint_sha1` is lower-case hex without separators, so this string can never match it at 1:51",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(err(src), *want, "{src}");
    }
    // The right case, the empty string (no certificate), other operators and other fields compile.
    for src in [
        r#"cf.tls_client_auth.cert_serial eq "3BB94FF1""#,
        r#"cf.tls_client_auth.cert_serial eq """#,
        r#"cf.tls_client_auth.cert_fingerprint_sha256 in {"9f86d081" "00aa"}"#,
        r#"cf.tls_client_auth.cert_serial matches "(?i)^3bb9""#,
        r#"lower(cf.tls_client_auth.cert_serial) eq "3bb94ff1""#,
        r#"cf.tls_client_auth.cert_subject_dn eq "CN=abc""#,
    ] {
        compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    }
}
