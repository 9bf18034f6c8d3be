//! `portcullis rules` end to end: check, eval and fields through the real binary.

use crate::support::portcullis;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_accepts_the_dashboard_mtls_rule() {
    let out = portcullis(&[
        "rules",
        "check",
        r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
}

#[test]
fn check_reports_a_caret_diagnostic() {
    let out = portcullis(&["rules", "check", r#"(http.hots eq "x")"#]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        concat!(
            "error: unknown field \"http.hots\"\n",
            " --> 1:2\n",
            "  |\n",
            "1 | (http.hots eq \"x\")\n",
            "  |  ^^^^^^^^^\n",
            "  = help: did you mean \"http.host\"?\n",
        )
    );
}

#[test]
fn check_reports_type_errors_naming_both_types() {
    let out = portcullis(&["rules", "check", "http.host eq 1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: type mismatch: `eq` cannot compare String with Integer\n --> 1:14\n"),
        "{err}"
    );
    assert!(err.contains("1 | http.host eq 1\n  |              ^\n"), "{err}");
}

#[test]
fn eval_prints_true_or_false() {
    let expr = r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}"#;
    let blocked = portcullis(&["rules", "eval", expr, "--field", "http.request.uri.path=/api"]);
    assert_eq!(blocked.status.code(), Some(0), "{}", stderr(&blocked));
    assert_eq!(stdout(&blocked), "true\n");
    let allowed = portcullis(&[
        "rules",
        "eval",
        expr,
        "--field",
        "http.request.uri.path=/api",
        "--field",
        "cf.tls_client_auth.cert_verified=true",
    ]);
    assert_eq!(allowed.status.code(), Some(0), "{}", stderr(&allowed));
    assert_eq!(stdout(&allowed), "false\n");
}

#[test]
fn eval_parses_values_by_field_type() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("ip.src in {10.0.0.0/8}", &["ip.src=10.1.2.3"], "true\n"),
        ("ip.src in {2001:db8::/32}", &["ip.src=10.1.2.3"], "false\n"),
        (
            "cf.edge.server_port in {8000..9000}",
            &["cf.edge.server_port=8443"],
            "true\n",
        ),
        (
            r#"any(http.request.headers["x-api-key"][*] == "k1")"#,
            &[r#"http.request.headers={"X-Api-Key":["k0","k1"]}"#],
            "true\n",
        ),
        (
            r#"any(http.request.headers.names[*] == "x-api-key")"#,
            &[r#"http.request.headers.names=["host","x-api-key"]"#],
            "true\n",
        ),
        (r#"http.host eq "a=b""#, &["http.host=a=b"], "true\n"),
        ("ssl", &[], "false\n"),
    ];
    for (expr, fields, want) in cases {
        let mut args = vec!["rules", "eval", expr];
        for f in *fields {
            args.extend(["--field", f]);
        }
        let out = portcullis(&args);
        assert_eq!(out.status.code(), Some(0), "{expr}: {}", stderr(&out));
        assert_eq!(stdout(&out), *want, "{expr} {fields:?}");
    }
}

#[test]
fn eval_rejects_unknown_fields_and_bad_values() {
    let out = portcullis(&["rules", "eval", "ssl", "--field", "http.hots=x"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: --field \"http.hots=x\": unknown field \"http.hots\"\n"
    );

    let out = portcullis(&["rules", "eval", "ssl", "--field", "ssl=yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: --field \"ssl=yes\": invalid Boolean value for ssl: expected true or false, found \"yes\"\n"
    );

    let out = portcullis(&["rules", "eval", "ssl", "--field", "ip.src"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("expected NAME=VALUE"), "{}", stderr(&out));

    let out = portcullis(&["rules", "eval", "ssl and", "--field", "ssl=true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: expected a field, function or value, found the end of the expression\n"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn fields_lists_the_schema_in_aligned_columns() {
    let out = portcullis(&["rules", "fields"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), portcullis_rules::schema().len());
    let host = lines
        .iter()
        .find(|l| l.starts_with("http.host "))
        .expect("http.host is listed");
    assert!(host.contains("  String  "), "{host}");
    let headers = lines
        .iter()
        .find(|l| l.starts_with("http.request.headers "))
        .expect("headers are listed");
    assert!(headers.contains("Map<Array<String>>"), "{headers}");
    // The type column starts at the same offset on every line.
    let type_col = |l: &str| l.find("  ").map(|i| i + l[i..].find(|c: char| c != ' ').unwrap_or(0));
    let first = type_col(lines[0]);
    assert!(lines.iter().all(|l| type_col(l) == first), "{text}");
    assert!(text.contains("cf.tls_client_auth.cert_rfc9440_too_large"));
    assert!(text.contains("portcullis.tls_client_auth.cert_san_uri"));
}

#[test]
fn eval_takes_ip_lists_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("office.txt");
    std::fs::write(&file, "# HQ\n192.0.2.0/24\n\n2001:db8::/32 # lab\n").expect("write");
    let list = format!("office={}", file.display());
    for (ip, want) in [
        ("192.0.2.5", "true\n"),
        ("198.51.100.1", "false\n"),
        ("2001:db8::7", "true\n"),
    ] {
        let out = portcullis(&[
            "rules",
            "eval",
            "ip.src in $office",
            "--list",
            &list,
            "-f",
            &format!("ip.src={ip}"),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), want, "{ip}");
    }
    let out = portcullis(&["rules", "check", "ip.src in $office"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown list `$office`"), "{}", stderr(&out));
    std::fs::write(&file, "192.0.2.0/24\n10.0.0.1/8\n").expect("write");
    let out = portcullis(&["rules", "check", "ip.src in $office", "--list", &list]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{}:2: ", file.display())) && stderr(&out).contains("did you mean 10.0.0.0/8"),
        "{}",
        stderr(&out)
    );
}
