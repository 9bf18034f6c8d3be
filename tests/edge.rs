//! The edge end to end: the real `portcullis serve` binary, configured through its CLI, with real clients (`curl`
//! over HTTP/1.1 and HTTP/2, `openssl s_client`) and a real origin; certificates from the server's own managed CA.

use std::path::Path;
use std::time::Duration;

use crate::support::{Server, curl, echo_origin, file_server, ok, openssl};

/// A server with `localhost` (mTLS, managed CA, RFC 9440 forwarding) in front of an echo origin, the
/// revocation-aware rule on /api, and a client certificate in the scratch directory. Returns the certificate's id.
fn setup(server: &Server) -> String {
    let origin = format!("http://127.0.0.1:{}", echo_origin());
    ok(&server.cli(&["zone", "add", "localhost"]));
    ok(&server.cli(&[
        "host",
        "add",
        "localhost",
        "--origin",
        &origin,
        "--forward-cert",
        "rfc9440",
    ]));
    ok(&server.cli(&["mtls", "enable", "localhost"]));
    ok(&server.cli(&["rule", "add-mtls", "--path", "/api"]));
    ok(&server.cli(&["cert", "create", "--cn", "device-1", "--out", "."]));
    let list: serde_json::Value = serde_json::from_str(&ok(&server.cli(&["cert", "list", "--json"]))).expect("json");
    list[0]["id"].as_str().expect("id").to_owned()
}

fn tls_args(server: &Server) -> Vec<String> {
    let ca = server.data_dir().join("edge-dev-ca.pem");
    vec![
        "--cacert".into(),
        ca.display().to_string(),
        "--resolve".into(),
        format!("localhost:{}:127.0.0.1", server.edge_port),
    ]
}

fn get(server: &Server, path: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let url = format!("https://localhost:{}{path}", server.edge_port);
    let mut args: Vec<String> = tls_args(server);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(server.dir.path(), &args)
}

const WITH_CERT: &[&str] = &["--cert", "cert.pem", "--key", "key.pem"];

/// Repeats `get` until the edge answers `want` (it picks up a change with its next snapshot); the body. Fails after
/// 10 s, naming the last answer.
fn get_until(server: &Server, path: &str, extra: &[&str], want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status, body) = get(server, path, extra);
        if status == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status}, wanted {want}: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `openssl s_client` to the edge as `localhost` with `args`, sending one `GET /` and reading to the end (so that
/// session tickets arrive before `-sess_out` saves them); its standard output.
fn s_client_get(server: &Server, args: &[&str]) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", server.edge_port)])
        .args(["-servername", "localhost", "-ign_eof", "-CAfile"])
        .arg(server.data_dir().join("edge-dev-ca.pem"))
        .args(args)
        .current_dir(server.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().expect("stdin");
    // openssl may have quit already (a refused handshake), closing the pipe: its output says what happened.
    let _ = stdin.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    drop(stdin);
    String::from_utf8_lossy(&child.wait_with_output().expect("openssl ends").stdout).into_owned()
}

#[test]
fn curl_sees_rules_enforced_over_http1_and_http2() {
    let server = Server::start();
    setup(&server);
    for version in ["--http1.1", "--http2"] {
        let with: Vec<&str> = WITH_CERT.iter().copied().chain([version]).collect();
        let (_, status, body) = get(&server, "/api", &with);
        assert_eq!(status, "200", "{version} with a certificate: {body}");
        assert!(
            body.contains("client-cert: :"),
            "the origin got the certificate: {body}"
        );
        assert!(body.contains("x-forwarded-proto: https"), "{body}");
        let (_, status, body) = get(&server, "/api", &[version]);
        assert_eq!(status, "403", "{version} without a certificate: {body}");
        assert!(body.contains("403 Forbidden"), "{body}");
        let (_, status, _) = get(&server, "/", &[version]);
        assert_eq!(status, "200", "{version}: paths the rule does not name stay open");
    }
}

/// A Host override from the CLI reaches the origin (and shows in `host show`), is refused with an HTTP/2 origin,
/// and is removed again; so do certificate fields under header names of the operator's choosing.
#[test]
fn the_origin_gets_the_host_and_certificate_headers_the_hostname_names() {
    let server = Server::start();
    setup(&server);
    // The edge takes a change with its next snapshot, a moment after the write.
    let origin_sees = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, _, body) = get(&server, "/", &[]);
            if body.contains(needle) {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "{needle:?} not in {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    ok(&server.cli(&[
        "host",
        "set",
        "localhost",
        "--origin-host-header",
        "Backend.Internal:8080",
    ]));
    let body = origin_sees("\r\nhost: backend.internal:8080\r\n");
    assert!(body.contains("x-forwarded-host: localhost"), "{body}");
    let shown = ok(&server.cli(&["host", "show", "localhost"]));
    assert!(shown.contains("backend.internal:8080"), "{shown}");

    let out = server.cli(&["host", "set", "localhost", "--origin-h2", "true"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP/1.1 origins"),
        "{out:?}"
    );
    let out = server.cli(&["host", "set", "localhost", "--origin-host-header", "user@evil"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid origin_host_header"),
        "{out:?}"
    );

    ok(&server.cli(&["host", "set", "localhost", "--no-origin-host-header"]));
    origin_sees("\r\nhost: localhost:");

    // Certificate fields under the names an NGINX-fronted origin reads; a client's own copy never passes.
    ok(&server.cli(&[
        "host",
        "set",
        "localhost",
        "--cert-header",
        "X-SSL-Client-Verify=portcullis.tls_client_auth.verify_result",
        "--cert-header",
        "X-SSL-Client-S-DN=cf.tls_client_auth.cert_subject_dn_legacy",
    ]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, _, body) = get(
            &server,
            "/",
            &[WITH_CERT, &["-H", "X-SSL-Client-S-DN: /CN=admin"]].concat(),
        );
        if body.contains("x-ssl-client-verify: success") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains("\r\nx-ssl-client-s-dn: /cn=device-1"), "{body}");
    assert!(!body.contains("/cn=admin"), "{body}");
    let (_, _, body) = get(&server, "/", &[]);
    assert!(
        body.contains("x-ssl-client-verify: none") && !body.contains("x-ssl-client-s-dn"),
        "{body}"
    );
    let shown = ok(&server.cli(&["host", "show", "localhost"]));
    assert!(
        shown.contains("x-ssl-client-verify: portcullis.tls_client_auth.verify_result"),
        "{shown}"
    );
    let out = server.cli(&[
        "host",
        "set",
        "localhost",
        "--cert-header",
        "Host=cf.tls_client_auth.cert_serial",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sets or reads this field itself"),
        "{out:?}"
    );
    ok(&server.cli(&["host", "set", "localhost", "--no-cert-headers"]));
    origin_sees("\r\nhost: localhost:");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&server, "/", &[]).2.contains("x-ssl-client-verify") {
        assert!(
            std::time::Instant::now() < deadline,
            "the headers are gone once removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Cloudflare's "Add TLS client auth headers" managed transform, turned on for the zone by `apply`: every hostname
/// of the zone forwards the cf-cert-* headers besides its own style, and client-sent copies still never pass. And
/// "Add security headers" on the responses.
#[test]
fn the_managed_transform_adds_cf_cert_headers_for_every_hostname_of_the_zone() {
    let server = Server::start();
    setup(&server);
    let file = server.dir.path().join("headers.toml");
    std::fs::write(
        &file,
        "[[zones]]\nname = \"localhost\"\nmanaged_request_headers = [\"add_client_certificate_headers\"]\n\
         managed_response_headers = [\"add_security_headers\"]\n",
    )
    .expect("write");
    let applied = ok(&server.cli(&["apply", file.to_str().expect("utf-8")]));
    assert!(
        applied.contains(
            "~ localhost managed headers: requests [add_client_certificate_headers], responses [add_security_headers]"
        ),
        "{applied}"
    );
    let again = ok(&server.cli(&["apply", file.to_str().expect("utf-8")]));
    assert!(again.contains("no changes"), "{again}");
    let exported = ok(&server.cli(&["export"]));
    assert!(
        exported.contains("managed_request_headers = [\"add_client_certificate_headers\"]")
            && exported.contains("managed_response_headers = [\"add_security_headers\"]"),
        "{exported}"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, status, body) = get(&server, "/", &[WITH_CERT, &["-H", "cf-cert-serial: spoofed"]].concat());
        if status == "200" && body.contains("cf-cert-verified: true") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "no cf-cert-* headers: {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        body.contains("cf-cert-presented: true") && body.contains("cf-cert-subject-dn: "),
        "{body}"
    );
    assert!(
        body.contains("client-cert: :mii"),
        "the hostname's own style stays: {body}"
    );
    assert!(!body.contains("spoofed"), "{body}");
    let (_, _, body) = get(&server, "/", &["-D", "response-headers.txt"]);
    assert!(body.contains("cf-cert-presented: false"), "{body}");
    let headers = std::fs::read_to_string(server.dir.path().join("response-headers.txt")).expect("headers");
    assert!(
        headers.to_ascii_lowercase().contains("x-content-type-options: nosniff"),
        "{headers}"
    );
}

#[test]
fn spoofed_certificate_headers_never_reach_the_origin_and_host_must_match_sni() {
    let server = Server::start();
    setup(&server);
    let spoof = [
        "-H",
        "Client-Cert: :c3Bvb2Y=:",
        "-H",
        "X-Forwarded-Client-Cert: Hash=evil",
        "-H",
        "cf-cert-verified: true",
    ];
    let (_, status, body) = get(&server, "/", &spoof);
    assert_eq!(status, "200");
    assert!(
        !body.contains("c3bvb2y") && !body.contains("evil") && !body.contains("cf-cert-verified"),
        "{body}"
    );
    let with: Vec<&str> = WITH_CERT.iter().copied().chain(spoof).collect();
    let (_, status, body) = get(&server, "/api", &with);
    assert_eq!(status, "200");
    assert!(
        !body.contains("c3bvb2y") && body.contains("client-cert: :mii"),
        "only the real certificate: {body}"
    );

    let (_, status, _) = get(&server, "/api", &["-H", "Host: other.example"]);
    assert_eq!(status, "421", "a Host that is not the SNI is misdirected");

    // Styles combine, and the spoofed copies still go.
    ok(&server.cli(&["host", "set", "localhost", "--forward-cert", "rfc9440,xfcc_cert"]));
    let shown = ok(&server.cli(&["host", "show", "localhost"]));
    assert!(shown.contains("rfc9440,xfcc_cert"), "{shown}");
    // The edge takes the change with its next snapshot.
    let body = (0..200)
        .find_map(|_| {
            let (_, _, body) = get(&server, "/api", &with);
            if body.contains("x-forwarded-client-cert") {
                return Some(body);
            }
            std::thread::sleep(Duration::from_millis(50));
            None
        })
        .expect("the XFCC field within 10 s");
    assert!(body.contains("client-cert: :mii"), "{body}");
    assert!(
        body.contains("x-forwarded-client-cert: hash=") && body.contains(";cert=\"-----begin%20certificate-----%0a"),
        "{body}"
    );
    assert!(!body.contains("evil"), "{body}");
}

#[test]
fn a_revocation_blocks_the_next_request_within_100_ms() {
    let server = Server::start();
    let id = setup(&server);
    assert_eq!(get(&server, "/api", WITH_CERT).1, "200");
    ok(&server.cli(&["cert", "revoke", &id]));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(get(&server, "/api", WITH_CERT).1, "403", "revoked");
    ok(&server.cli(&["cert", "reactivate", &id]));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(get(&server, "/api", WITH_CERT).1, "200", "reactivated");

    // The blocks are security events, with the mTLS status of each.
    let zones: serde_json::Value = serde_json::from_str(&ok(&server.cli(&["zone", "list", "--json"]))).expect("json");
    let zone = zones[0]["id"].as_str().expect("zone id");
    let token = std::fs::read_to_string(server.data_dir().join("admin-token")).expect("token");
    let url = format!("{}/client/v4/zones/{zone}/security/events", server.api());
    let auth = format!("Authorization: Bearer {}", token.trim());
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let (_, status, body) = curl(server.dir.path(), &["-H", &auth, &url]);
        assert_eq!(status, "200", "{body}");
        let events: serde_json::Value = serde_json::from_str(&body).expect("json");
        statuses = events["result"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["mtls_status"].clone())
            .collect();
        if !statuses.is_empty() {
            break;
        }
        // Events are batched into the store about once a second.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(statuses, [serde_json::json!("revoked")]);
}

#[test]
fn require_and_verify_if_given_modes_fail_the_handshake_of_a_bad_certificate() {
    let server = Server::start();
    setup(&server);
    let origin = format!("http://127.0.0.1:{}", echo_origin());
    ok(&server.cli(&[
        "host",
        "add",
        "strict.localhost",
        "--origin",
        &origin,
        "--tls-client-auth",
        "require",
    ]));
    ok(&server.cli(&["mtls", "enable", "strict.localhost"]));
    std::thread::sleep(Duration::from_millis(200));
    let base: Vec<String> = vec![
        "--cacert".into(),
        server.data_dir().join("edge-dev-ca.pem").display().to_string(),
        "--resolve".into(),
        format!("strict.localhost:{}:127.0.0.1", server.edge_port),
    ];
    let url = format!("https://strict.localhost:{}/", server.edge_port);
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend(extra);
        args.push(&url);
        curl(server.dir.path(), &args)
    };
    let (code, status, _) = run(&[]);
    assert_ne!(code, Some(0), "no certificate: the handshake fails");
    assert_eq!(status, "000");
    let (code, status, _) = run(WITH_CERT);
    assert_eq!((code, status.as_str()), (Some(0), "200"));

    // verify_if_given: without a certificate the handshake completes; a certificate from a CA the host does not
    // trust fails it (openssl makes one from a CA of its own).
    let (stranger_cert, stranger_key) = crate::support::foreign_client_cert(server.dir.path());
    let (stranger_cert, stranger_key) = (
        stranger_cert.to_str().expect("utf-8").to_owned(),
        stranger_key.to_str().expect("utf-8").to_owned(),
    );
    let untrusted: &[&str] = &["--cert", &stranger_cert, "--key", &stranger_key];
    let (code, status, _) = run(untrusted);
    assert_ne!(code, Some(0), "require refuses a stranger too");
    assert_eq!(status, "000");
    ok(&server.cli(&[
        "host",
        "set",
        "strict.localhost",
        "--tls-client-auth",
        "verify_if_given",
    ]));
    let shown = ok(&server.cli(&["host", "show", "strict.localhost"]));
    assert!(shown.contains("verify_if_given"), "{shown}");
    // The edge takes the new mode with its next snapshot, milliseconds after the write (given 10 s here).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut answer = run(&[]);
    while answer.1 != "200" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        answer = run(&[]);
    }
    assert_eq!(
        (answer.0, answer.1.as_str()),
        (Some(0), "200"),
        "no certificate reaches the rules"
    );
    let (code, status, _) = run(untrusted);
    assert_ne!(code, Some(0), "an untrusted certificate fails the handshake");
    assert_eq!(status, "000");
    let (code, status, _) = run(WITH_CERT);
    assert_eq!((code, status.as_str()), (Some(0), "200"));
}

#[test]
fn openssl_s_client_is_asked_for_a_certificate_from_the_managed_ca() {
    let server = Server::start();
    setup(&server);
    let dir = server.dir.path();
    let ca = ok(&server.cli(&["ca", "show", "--pem"]));
    let name = openssl_subject_cn(dir, &ca);
    let connect = format!("127.0.0.1:{}", server.edge_port);
    let edge_ca = server.data_dir().join("edge-dev-ca.pem");
    let edge_ca = edge_ca.to_str().expect("utf-8");
    // `openssl s_client` to the edge as localhost, trusting its CA, with `extra` arguments.
    let s_client = |extra: &[&str]| {
        let mut args = vec![
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "localhost",
            "-CAfile",
            edge_ca,
        ];
        args.extend_from_slice(extra);
        openssl(dir, &args)
    };
    let out = s_client(&["-cert", "cert.pem", "-key", "key.pem", "-brief"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Verification: OK"),
        "the edge certificate verifies: {text}"
    );
    // What the edge's CertificateRequest says, as `openssl s_client` prints it.
    let request = || {
        let out = s_client(&[]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let full = request();
    assert!(full.contains("Acceptable client certificate CA names"), "{full}");
    assert!(full.contains(&name), "the managed CA {name:?} is hinted: {full}");

    // The CA names can be kept to ourselves; a certificate is still asked for, and still works.
    ok(&server.cli(&["host", "set", "localhost", "--client-ca-names", "false"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = request();
        if text.contains("No client certificate CA names sent") {
            assert!(!text.contains(&name), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still naming CAs: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, status, _) = get(&server, "/api", WITH_CERT);
    assert_eq!(status, "200");
    let (_, status, _) = get(&server, "/api", &[]);
    assert_eq!(status, "403");
}

/// `min_tls_version` 1.3 on a hostname: `openssl s_client -tls1_2` is refused, TLS 1.3 is served; back to 1.2, both.
#[test]
fn a_hostname_can_refuse_tls_1_2() {
    let server = Server::start();
    setup(&server);
    let answer = |version: &str| s_client_get(&server, &["-cert", "cert.pem", "-key", "key.pem", version]);
    assert!(
        answer("-tls1_2").contains("HTTP/1.1 200"),
        "TLS 1.2 is served by default"
    );
    ok(&server.cli(&["host", "set", "localhost", "--min-tls-version", "1.3"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = answer("-tls1_2");
        if !text.contains("HTTP/1.1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "TLS 1.2 still served: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tls13 = answer("-tls1_3");
    assert!(tls13.contains("HTTP/1.1 200") && tls13.contains("TLSv1.3"), "{tls13}");
    let show = ok(&server.cli(&["host", "show", "localhost"]));
    assert!(
        show.lines()
            .any(|l| l.starts_with("min_tls_version") && l.ends_with("1.3")),
        "{show}"
    );
    let err = server.cli(&["host", "set", "localhost", "--min-tls-version", "1.0"]);
    assert_eq!(err.status.code(), Some(2), "clap refuses 1.0");
    ok(&server.cli(&["host", "set", "localhost", "--min-tls-version", "1.2"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !answer("-tls1_2").contains("HTTP/1.1 200") {
        assert!(std::time::Instant::now() < deadline, "TLS 1.2 not served again");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The edge resumes TLS 1.3 sessions (with the client certificate) and counts resumed handshakes apart, so an operator
/// or a benchmark can tell full handshakes from resumed ones.
#[test]
fn resumed_handshakes_are_counted() {
    let server = Server::start();
    setup(&server);
    let dir = server.dir.path();
    // One request per connection, read to the end, so that s_client has the session tickets before it saves them.
    let s_client = |session: &str| {
        s_client_get(
            &server,
            &[
                "-cert",
                "cert.pem",
                "-key",
                "key.pem",
                "-tls1_3",
                session,
                "session.pem",
            ],
        )
    };
    let first = s_client("-sess_out");
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    // A write to the store in between rebuilds every host's TLS configuration; the session survives it.
    let generation = || -> u64 {
        let (_, _, metrics) = curl(dir, &[&format!("{}/metrics", server.api())]);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("portcullis_snapshot_generation "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = generation();
    std::fs::create_dir_all(dir.join("other")).expect("dir");
    ok(&server.cli(&["cert", "create", "--cn", "device-2", "--out", "other"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while generation() <= before {
        assert!(std::time::Instant::now() < deadline, "no new snapshot after the write");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = s_client("-sess_in");
    assert!(
        second.contains("Reused, TLSv1.3"),
        "the second connection resumed: {second}"
    );
    assert!(
        second.contains("HTTP/1.1 200"),
        "with the client certificate of the first: {second}"
    );
    let (_, status, metrics) = curl(dir, &[&format!("{}/metrics", server.api())]);
    assert_eq!(status, "200");
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_handshakes_resumed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("a resumed-handshake counter: {metrics}"));
    assert_eq!(counted, 1, "one of the two handshakes resumed: {metrics}");
}

fn openssl_subject_cn(dir: &Path, pem: &str) -> String {
    let path = dir.join("managed-ca.pem");
    std::fs::write(&path, pem).expect("write");
    let out = openssl(
        dir,
        &[
            "x509",
            "-in",
            "managed-ca.pem",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
        ],
    );
    let subject = String::from_utf8_lossy(&out.stdout).into_owned();
    subject
        .split("CN=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .expect("a CN")
        .trim()
        .to_owned()
}

/// A bring-your-own CA works through the edge, and an expired certificate from it is refused (its status recorded as
/// `expired`). The CA and certificates are made in the test with `portcullis-pki`, backdated so that one has expired.
#[test]
fn uploaded_ca_certificates_verify_and_expired_ones_are_refused() {
    use portcullis_pki::{CaParams, GeneratedKeyRequest, IssueOptions, ManagedCa, SubjectFields};

    let server = Server::start();
    setup(&server);
    let dir = server.dir.path();
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(3 * 365);
    let ca = ManagedCa::create(&CaParams::default(), long_ago).expect("a CA");
    std::fs::write(dir.join("byo-ca.pem"), ca.certificate_pem()).expect("write");
    ok(&server.cli(&["ca", "upload", "--name", "partner CA", "byo-ca.pem"]));
    let uploaded: serde_json::Value =
        serde_json::from_str(&ok(&server.cli(&["ca", "list-uploaded", "--json"]))).expect("json");
    let ca_id = uploaded[0]["id"].as_str().expect("id").to_owned();
    ok(&server.cli(&["mtls", "enable", "localhost", "--ca", &ca_id]));

    let issue = |name: &str, at: time::OffsetDateTime, days: u32| {
        let request = GeneratedKeyRequest {
            subject: SubjectFields {
                common_name: name.to_owned(),
                ..SubjectFields::default()
            },
            ..GeneratedKeyRequest::default()
        };
        let options = IssueOptions {
            validity_days: days,
            ..IssueOptions::default()
        };
        let issued = ca.issue_with_generated_key(&request, &options, at).expect("issued");
        std::fs::write(dir.join(format!("{name}.pem")), &issued.record.certificate).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), issued.private_key_pem.as_bytes()).expect("write");
    };
    issue("partner", time::OffsetDateTime::now_utc(), 30);
    issue("old", long_ago, 30);
    std::thread::sleep(Duration::from_millis(200));

    let (_, status, body) = get(&server, "/api", &["--cert", "partner.pem", "--key", "partner.key"]);
    assert_eq!(status, "200", "a certificate from the uploaded CA: {body}");
    let (_, status, _) = get(&server, "/api", &["--cert", "old.pem", "--key", "old.key"]);
    assert_eq!(status, "403", "an expired certificate");
    let (_, status, _) = get(&server, "/api", WITH_CERT);
    assert_eq!(status, "200", "the managed CA is still associated too");

    let zones: serde_json::Value = serde_json::from_str(&ok(&server.cli(&["zone", "list", "--json"]))).expect("json");
    let zone = zones[0]["id"].as_str().expect("zone id");
    let token = std::fs::read_to_string(server.data_dir().join("admin-token")).expect("token");
    let url = format!(
        "{}/client/v4/zones/{zone}/security/events?mtls_status=expired",
        server.api()
    );
    let auth = format!("Authorization: Bearer {}", token.trim());
    let mut found = false;
    for _ in 0..50 {
        let (_, _, body) = curl(dir, &["-H", &auth, &url]);
        let events: serde_json::Value = serde_json::from_str(&body).expect("json");
        if events["result"].as_array().is_some_and(|e| !e.is_empty()) {
            assert_eq!(events["result"][0]["action"], "block");
            // Why, in OpenSSL's words, and whose certificate it was.
            assert_eq!(events["result"][0]["cert_verify_error"], "certificate has expired");
            assert!(
                events["result"][0]["cert_subject_dn"]
                    .as_str()
                    .is_some_and(|s| s.contains("CN=")),
                "{events}"
            );
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        found,
        "the expired certificate's block is a security event with mtls_status=expired"
    );

    // A CRL past its nextUpdate still revokes what it lists (rather than failing every certificate), and the
    // expiry gauges show it, with the CAs' own expiry, for an alert to catch.
    issue("revoked", time::OffsetDateTime::now_utc(), 30);
    let revoked_serial = {
        let pem = std::fs::read(dir.join("revoked.pem")).expect("read");
        let facts = portcullis_pki::compute_facts(
            &[portcullis_pki::CertificateDer::from(
                portcullis_pki::pem::certificates_from_pem_or_der(&pem)
                    .expect("pem")
                    .remove(0),
            )],
            &[],
        );
        portcullis_pki::hex_decode(&facts.cert_serial).expect("hex")
    };
    let now = time::OffsetDateTime::now_utc();
    let stale_until = now - time::Duration::days(1);
    let crl = ca
        .build_crl(
            &portcullis_pki::CrlParams {
                crl_number: 1,
                this_update: now - time::Duration::days(8),
                next_update: stale_until,
            },
            &[portcullis_pki::RevokedEntry {
                serial: revoked_serial,
                revoked_at: now - time::Duration::days(2),
                reason: None,
            }],
        )
        .expect("crl");
    std::fs::write(dir.join("byo.crl"), crl.pem()).expect("write");
    ok(&server.cli(&["ca", "crl", &ca_id, "--upload", "byo.crl"]));
    let crl_line = format!(
        "portcullis_crl_next_update_timestamp_seconds{{kind=\"uploaded_ca\",id=\"{ca_id}\"}} {}",
        stale_until.unix_timestamp()
    );
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = curl(dir, &[&format!("{}/metrics", server.api())]).2;
        if metrics.contains(&crl_line) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(metrics.contains(&crl_line), "{metrics}");
    let ca_line = format!(
        "portcullis_certificate_not_after_timestamp_seconds{{kind=\"uploaded_ca\",id=\"{ca_id}\"}} {}",
        portcullis_pki::certificate_not_after(ca.certificate_pem().as_bytes())
            .expect("not after")
            .unix_timestamp()
    );
    assert!(metrics.contains(&ca_line), "{metrics}");
    // Its notBefore beside it, so that an alert can scale with the certificate's lifetime.
    let (not_before, _) = portcullis_pki::certificate_validity(ca.certificate_pem().as_bytes()).expect("validity");
    let from_line = format!(
        "portcullis_certificate_not_before_timestamp_seconds{{kind=\"uploaded_ca\",id=\"{ca_id}\"}} {}",
        not_before.unix_timestamp()
    );
    assert!(metrics.contains(&from_line), "{metrics}");
    assert!(
        metrics.contains("portcullis_certificate_not_after_timestamp_seconds{kind=\"managed_ca\",id=\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_certificate_not_before_timestamp_seconds{kind=\"managed_ca\",id=\""),
        "{metrics}"
    );
    // The issued client certificates, per zone: the one setup() made.
    let listed: serde_json::Value = serde_json::from_str(&ok(&server.cli(&["cert", "list", "--json"]))).expect("json");
    let expires = time::OffsetDateTime::parse(
        listed[0]["expires_on"].as_str().expect("expires_on"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert!(
        metrics.contains("portcullis_client_certificates_active{zone=\"localhost\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "portcullis_client_certificate_soonest_not_after_timestamp_seconds{{zone=\"localhost\"}} {}\n",
            expires.unix_timestamp()
        )),
        "{metrics}"
    );
    let (_, status, _) = get(&server, "/api", &["--cert", "revoked.pem", "--key", "revoked.key"]);
    assert_eq!(status, "403", "listed in a stale CRL: still revoked");
    let (_, status, body) = get(&server, "/api", &["--cert", "partner.pem", "--key", "partner.key"]);
    assert_eq!(status, "200", "not listed: still served: {body}");
    // Unless the CA is set to fail closed: a day past nextUpdate is past an hour's grace, and not past two days'.
    ok(&server.cli(&["ca", "crl-grace", &ca_id, "3600"]));
    let partner_args = ["--cert", "partner.pem", "--key", "partner.key"];
    get_until(&server, "/api", &partner_args, "403");
    ok(&server.cli(&["ca", "crl-grace", &ca_id, "172800"]));
    get_until(&server, "/api", &partner_args, "200");
    ok(&server.cli(&["ca", "crl-grace", &ca_id, "off"]));

    // One certificate revoked at the edge by the operator, at once, without a new CRL; then taken back.
    let partner = ["--cert", "partner.pem", "--key", "partner.key"];
    let revoked: serde_json::Value = serde_json::from_str(&ok(&server.cli(&[
        "ca",
        "revoke",
        &ca_id,
        "partner.pem",
        "--note",
        "lost laptop",
        "--json",
    ])))
    .expect("json");
    get_until(&server, "/api", &partner, "403");
    let partner_pem = std::fs::read(dir.join("partner.pem")).expect("read");
    let facts = portcullis_pki::compute_facts(
        &[portcullis_pki::CertificateDer::from(
            portcullis_pki::pem::certificates_from_pem_or_der(&partner_pem)
                .expect("pem")
                .remove(0),
        )],
        &[],
    );
    let serial = revoked["serial_number"].as_str().expect("serial").to_owned();
    assert_eq!(
        serial.trim_start_matches('0'),
        facts.cert_serial.trim_start_matches('0'),
        "the rule field's value"
    );
    assert_eq!(revoked["fingerprint_sha256"], facts.cert_fingerprint_sha256.as_str());
    let (_, status, _) = get(&server, "/api", WITH_CERT);
    assert_eq!(status, "200", "other certificates are not affected");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&server.cli(&["ca", "revocations", &ca_id, "--json"]))).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["note"], "lost laptop");
    // A certificate another CA issued is not this CA's to revoke.
    let out = server.cli(&["ca", "revoke", &ca_id, "cert.pem"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no certificate of this CA issued it"), "{err}");
    let id = revoked["id"].as_str().expect("id");
    ok(&server.cli(&["ca", "unrevoke", &ca_id, id]));
    get_until(&server, "/api", &partner, "200");
    // By serial number, in lower case with colons as some tools print it.
    let colons: Vec<String> = serial
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_ascii_lowercase())
        .collect();
    ok(&server.cli(&["ca", "revoke", &ca_id, "--serial", &colons.join(":")]));
    get_until(&server, "/api", &partner, "403");
}

/// Operators see every request as one JSON access-log line with its mTLS facts, and Prometheus counters move.
#[test]
fn access_log_lines_are_json_and_metrics_count_requests() {
    let server = Server::start();
    setup(&server);
    assert_eq!(get(&server, "/api", &[]).1, "403");
    assert_eq!(get(&server, "/api", WITH_CERT).1, "200");

    let (_, status, metrics) = curl(server.dir.path(), &[&format!("{}/metrics", server.api())]);
    assert_eq!(status, "200");
    assert!(
        metrics.contains(r#"portcullis_requests_total{host="localhost",action="block"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_requests_total{host="localhost",action="allow"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("portcullis_snapshot_generation "), "{metrics}");
    // Request latency is a histogram with buckets (they add up across edge nodes), not a summary.
    assert!(
        metrics.contains(r#"portcullis_request_duration_seconds_bucket{host="localhost",le="+Inf"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_request_duration_seconds_bucket{host="localhost",le="60"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_request_duration_seconds_count{host="localhost"} 2"#),
        "{metrics}"
    );
    assert!(!metrics.contains("quantile="), "{metrics}");

    // The server's stderr is not a terminal, so its log is JSON, one object per line.
    let log = std::fs::read_to_string(server.dir.path().join("server.log")).expect("the server log");
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["target"] == "portcullis::access")
        .collect();
    let blocked = access
        .iter()
        .find(|v| v["status"] == 403)
        .expect("the blocked request is logged");
    assert_eq!(blocked["mtls_status"], "absent");
    assert_eq!(blocked["action"], "block");
    assert_eq!(blocked["path"], "/api");
    let allowed = access
        .iter()
        .find(|v| v["status"] == 200)
        .expect("the allowed request is logged");
    assert_eq!(allowed["mtls_status"], "ok");
    assert_eq!(allowed["cert_fingerprint_sha256"].as_str().map(str::len), Some(64));
}

#[test]
fn url_normalization_keeps_encoded_and_dotted_paths_under_the_rule() {
    let server = Server::start();
    setup(&server);
    // curl would clean up dot segments itself; --path-as-is sends them as written.
    for path in ["/%61pi", "/x/../api", "//api", "/./%61%70%69"] {
        let (_, status, body) = get(&server, path, &["--path-as-is"]);
        assert_eq!(status, "403", "{path} without a certificate: {body}");
        let with: Vec<&str> = WITH_CERT.iter().copied().chain(["--path-as-is"]).collect();
        let (_, status, body) = get(&server, path, &with);
        assert_eq!(status, "200", "{path} with a certificate: {body}");
    }

    let out = ok(&server.cli(&["zone", "url-normalization", "localhost"]));
    assert_eq!(
        out.trim(),
        "zone localhost: URL normalization scope incoming, type cloudflare"
    );
    let out = ok(&server.cli(&["zone", "url-normalization", "localhost", "--scope", "none"]));
    assert_eq!(
        out.trim(),
        "zone localhost: URL normalization scope none, type cloudflare"
    );
    // With normalization off the rule sees the path as sent, as on Cloudflare; the edge picks the
    // change up with its next snapshot.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status, _) = get(&server, "/%61pi", &["--path-as-is"]);
        if status == "200" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} with normalization off"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, status, _) = get(&server, "/api", &[]);
    assert_eq!(status, "403");
}

#[test]
fn behind_a_tcp_balancer_the_proxy_protocol_is_required_from_it() {
    let server = Server::start_with(
        crate::support::scratch(),
        &["--proxy-protocol-from", "127.0.0.0/8"],
        &[],
    );
    setup(&server);
    // curl sends a PROXY v1 header naming itself, as a balancer would name its client.
    let (_, status, body) = get(&server, "/", &["--haproxy-protocol", "-v"]);
    assert_eq!(status, "200", "{body}");
    let (code, status, _) = get(&server, "/", &[]);
    assert_ne!(
        status, "200",
        "a trusted address must send the header (curl exit {code:?})"
    );
}

/// Behind a front proxy that terminates TLS (NGINX's `$ssl_client_escaped_cert`, AWS ALB): curl, as the front
/// proxy, sends no certificate of its own and the client's in the header; the rule judges that one, a revocation
/// reaches it, and the header never gets to the origin. The client's address comes from `X-Forwarded-For` and is
/// the one the security event names. Without `--client-cert-header-from` the flag is refused.
#[test]
fn behind_a_front_proxy_the_clients_certificate_comes_from_its_header() {
    let server = Server::start_with(
        crate::support::scratch(),
        &[
            "--client-cert-header",
            "X-Client-Cert",
            "--client-cert-header-from",
            "127.0.0.1",
            "--client-ip-header",
            "X-Forwarded-For",
            "--client-ip-header-from",
            "127.0.0.0/8",
        ],
        &[],
    );
    let id = setup(&server);
    let pem = std::fs::read(server.dir.path().join("cert.pem")).expect("cert.pem");
    let escaped: String = pem
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(*b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let header = format!("X-Client-Cert: {escaped}");
    let with_header = ["-H", header.as_str()];
    let (_, status, body) = get(&server, "/api", &with_header);
    assert_eq!(status, "200", "{body}");
    assert!(
        body.contains("client-cert: :mii"),
        "the certificate forwarded as configured: {body}"
    );
    assert!(!body.contains("x-client-cert"), "{body}");
    assert_eq!(get(&server, "/api", &[]).1, "403", "no header, no certificate");
    ok(&server.cli(&["cert", "revoke", &id]));
    get_until(&server, "/api", &with_header, "403");
    let (_, status, _) = get(
        &server,
        "/api",
        &["-H", header.as_str(), "-H", "X-Forwarded-For: 203.0.113.9"],
    );
    assert_eq!(status, "403");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = ok(&server.cli(&["events", "--action", "block", "--json"]));
        let events: serde_json::Value = serde_json::from_str(&out).expect("json");
        let named = |e: &serde_json::Value| e["client_ip"] == "203.0.113.9" && e["mtls_status"] == "revoked";
        if events.as_array().is_some_and(|e| e.iter().any(named)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no event for 203.0.113.9: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = crate::support::portcullis(&["serve", "--client-cert-header", "X-Client-Cert"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--client-cert-header-from"), "{err}");
}

/// An origin that requires a client certificate (`openssl s_server -Verify`): the hostname presents the one
/// uploaded for it through the API (`"ca": false`, key sealed at rest), and without it the origin refuses.
#[test]
fn origins_requiring_a_client_certificate_get_the_uploaded_one() {
    let server = Server::start();
    setup(&server);
    let dir = server.dir.path();
    let run = |args: &[&str]| ok(&openssl(dir, args));
    // The origin's own PKI: a CA, its server certificate for localhost, and the edge's client certificate.
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "o-ca.key",
        "-out",
        "o-ca.pem",
        "-subj",
        "/CN=Origin CA",
        "-days",
        "30",
    ]);
    for (name, ext) in [
        ("o-srv", "subjectAltName=DNS:localhost"),
        ("o-cli", "extendedKeyUsage=clientAuth"),
    ] {
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "o-ca.pem",
            "-CAkey",
            "o-ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let origin = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "o-srv.pem",
            "-key",
            "o-srv.key",
            "-CAfile",
            "o-ca.pem",
            "-Verify",
            "1",
            "-www",
            "-quiet",
        ])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _origin = Kill(origin);

    // Through the CLI: upload the certificate with its key, then point the host at the origin with its CA.
    let out = ok(&server.cli(&[
        "ca",
        "upload-client",
        "--name",
        "edge to origin",
        "o-cli.pem",
        "o-cli.key",
    ]));
    assert!(out.starts_with("uploaded client certificate edge to origin ("), "{out}");
    let uploaded: serde_json::Value =
        serde_json::from_str(&ok(&server.cli(&["ca", "list-uploaded", "--json"]))).expect("json");
    let cert_id = uploaded
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["ca"] == false)
        .and_then(|c| c["id"].as_str())
        .expect("the client certificate")
        .to_owned();
    let table = ok(&server.cli(&["ca", "list-uploaded"]));
    assert!(
        table.lines().next().is_some_and(|h| h.contains(" KIND "))
            && table.lines().any(|l| l.starts_with(&cert_id) && l.contains(" client ")),
        "{table}"
    );
    let origin_url = format!("https://localhost:{port}");
    let until = |want: &str| get_until(&server, "/", &[], want);
    let out = ok(&server.cli(&[
        "host",
        "set",
        "localhost",
        "--origin",
        &origin_url,
        "--origin-ca",
        "o-ca.pem",
        "--origin-client-cert",
        &cert_id,
    ]));
    assert_eq!(out.trim(), format!("updated localhost → {origin_url}"));
    let body = until("200");
    assert!(body.contains("s_server"), "the origin's page: {body}");
    let shown = ok(&server.cli(&["host", "show", "localhost"]));
    assert!(
        shown.contains(&format!("origin_client_certificate      {cert_id}")),
        "{shown}"
    );
    assert!(shown.contains("origin_ca                      set"), "{shown}");
    ok(&server.cli(&["host", "set", "localhost", "--no-origin-client-cert"]));
    until("502");
    let nothing = server.cli(&["host", "set", "localhost"]);
    assert!(!nothing.status.success());
}

/// A rate limit per client certificate, set through Cloudflare's `http_ratelimit` entry point: the third request
/// of one certificate within the period gets 429 with `Retry-After`; another certificate is counted apart.
#[test]
fn rate_limits_per_client_certificate_through_the_api() {
    let server = Server::start();
    setup(&server);
    let dir = server.dir.path();
    let zones: serde_json::Value = serde_json::from_str(&ok(&server.cli(&["zone", "list", "--json"]))).expect("json");
    let zone = zones[0]["id"].as_str().expect("zone").to_owned();
    let body = serde_json::json!({"rules": [{
        "description": "2 requests a minute per certificate",
        "expression": "cf.tls_client_auth.cert_verified",
        "action": "block",
        "ratelimit": {
            "characteristics": ["cf.colo.id", "cf.tls_client_auth.cert_fingerprint_sha256"],
            "period": 60,
            "requests_per_period": 2,
            "mitigation_timeout": 600
        }
    }]});
    let answer = server.api_put(
        &format!("/zones/{zone}/rulesets/phases/http_ratelimit/entrypoint"),
        &body,
    );
    assert_eq!(answer["success"], true, "{answer}");

    // The edge picks the rule up with its next snapshot; until then requests are not counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut statuses = Vec::new();
    loop {
        let (_, status, _) = get(&server, "/", WITH_CERT);
        statuses.push(status.clone());
        if status == "429" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never limited: {statuses:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(statuses.len() >= 3, "two requests pass first: {statuses:?}");
    let (_, status, _) = get(
        &server,
        "/",
        &["--cert", "cert.pem", "--key", "key.pem", "-D", "limited-head.txt"],
    );
    assert_eq!(status, "429");
    let head = std::fs::read_to_string(dir.join("limited-head.txt"))
        .expect("head")
        .to_ascii_lowercase();
    assert!(head.contains("retry-after: "), "{head}");
    let other = crate::support::issue_client_cert(&server, "device-2");
    let other_dir = dir.join("device-2");
    let (_, status, body) = get(
        &server,
        "/",
        &[
            "--cert",
            &other_dir.join("cert.pem").display().to_string(),
            "--key",
            &other_dir.join("key.pem").display().to_string(),
        ],
    );
    assert_eq!(status, "200", "another certificate is counted apart ({other}): {body}");
}

/// TLS 1.2 clients resume from the session cache and get no session ticket (a TLS 1.2 ticket would carry the
/// session's master secret); TLS 1.3 clients get tickets.
#[test]
fn tls12_clients_get_no_session_tickets_but_still_resume() {
    let server = Server::start();
    setup(&server);
    let s_client = |version: &str, session: &str, file: &str| {
        s_client_get(
            &server,
            &["-cert", "cert.pem", "-key", "key.pem", version, session, file],
        )
    };
    let first = s_client("-tls1_2", "-sess_out", "s12.pem");
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    assert!(!first.contains("TLS session ticket:"), "no ticket for TLS 1.2: {first}");
    let second = s_client("-tls1_2", "-sess_in", "s12.pem");
    assert!(second.contains("Reused, TLSv1.2"), "resumed from the cache: {second}");
    let third = s_client("-tls1_3", "-sess_out", "s13.pem");
    assert!(third.contains("TLS session ticket:"), "TLS 1.3 gets a ticket: {third}");
}

/// The same through the CLI: `rule add-ratelimit`, then `rule remove` finds the rate-limiting rule too.
#[test]
fn rate_limits_from_the_cli() {
    let server = Server::start();
    setup(&server);
    let out = ok(&server.cli(&[
        "rule",
        "add-ratelimit",
        "--per",
        "ip",
        "--requests",
        "1",
        "--period",
        "10",
    ]));
    assert!(out.contains("(block)"), "{out}");
    let id = out.split_whitespace().nth(2).expect("rule id").to_owned();
    let until = |want: &str| get_until(&server, "/", &[], want);
    until("429");
    let out = ok(&server.cli(&["rule", "remove", &id]));
    assert!(out.starts_with(&format!("removed rule {id}")), "{out}");
    until("200");
    let err = crate::support::portcullis(&["rule", "add-ratelimit", "--per", "user", "--requests", "1"]);
    assert!(!err.status.success());
}

/// An IP list in a rule (`ip.src in $name`) through the CLI: adding the client's address blocks it at the edge,
/// removing it lets it through again, and the list cannot be deleted while the rule uses it.
#[test]
fn ip_lists_block_and_release_addresses_without_editing_the_rule() {
    let server = Server::start();
    setup(&server);
    let dir = server.dir.path();
    let out = ok(&server.cli(&["list", "create", "blocked", "--description", "abusers"]));
    assert!(out.starts_with("created list $blocked"), "{out}");
    let out = ok(&server.cli(&[
        "rule",
        "add",
        "--expression",
        "ip.src in $blocked and http.request.uri.path ne \"/health\"",
        "--action",
        "block",
    ]));
    assert!(out.contains("(block)"), "{out}");
    let until = |want: &str| get_until(&server, "/", WITH_CERT, want);
    until("200");
    // A file of ranges, with comments and a blank line; then the client's own address.
    std::fs::write(
        dir.join("ranges.txt"),
        "# partners\n192.0.2.0/24\n\n2001:db8::/32 # lab\n",
    )
    .expect("file");
    let out = ok(&server.cli(&["list", "add", "blocked", "--file", "ranges.txt"]));
    assert_eq!(out.trim(), "added 2 items to $blocked");
    let bad = server.cli(&["list", "add", "blocked", "10.0.0.1/8"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("did you mean 10.0.0.0/8"));
    until("200");
    ok(&server.cli(&["list", "add", "blocked", "127.0.0.0/8", "--comment", "loopback"]));
    until("403");
    let (_, status, _) = get(&server, "/health", WITH_CERT);
    assert_eq!(status, "200", "the rule's other condition still applies");

    let shown = ok(&server.cli(&["list", "show", "blocked"]));
    assert!(shown.contains("127.0.0.0/8") && shown.contains("loopback"), "{shown}");
    let listed = ok(&server.cli(&["list", "ls"]));
    let row = listed.lines().find(|l| l.starts_with("$blocked")).expect("row");
    assert_eq!(
        row.split_whitespace().take(4).collect::<Vec<_>>(),
        ["$blocked", "ip", "3", "1"]
    );
    let refused = server.cli(&["list", "delete", "blocked"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("referenced by rules"));

    ok(&server.cli(&["list", "remove", "blocked", "127.0.0.0/8"]));
    until("200");

    // A replace too big for one request (several): the new set, whole, and the old items gone.
    let big: String = (0..30_000u32)
        .map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x0a00_0000 + i * 4)))
        .collect();
    std::fs::write(dir.join("big.txt"), format!("{big}127.0.0.1\n")).expect("file");
    let out = ok(&server.cli(&[
        "list",
        "add",
        "blocked",
        "--file",
        "big.txt",
        "--replace",
        "--comment",
        &"c".repeat(100),
    ]));
    assert_eq!(out.trim(), "set 30001 items as $blocked");
    let listed = ok(&server.cli(&["list", "ls"]));
    let row = listed.lines().find(|l| l.starts_with("$blocked")).expect("row");
    assert_eq!(row.split_whitespace().nth(2), Some("30001"), "{row}");
    let shown = ok(&server.cli(&["list", "show", "blocked"]));
    assert!(!shown.contains("192.0.2.0/24"), "the old items are gone");
    until("403");
}

/// An uploaded CA's CRL fetched from its URL: a revocation published there reaches the edge within the refresh
/// period, and an older CRL served later (a replay that would un-revoke) is refused with the last good one kept.
#[test]
fn crls_fetched_from_a_url_revoke_at_the_edge_and_old_ones_are_refused() {
    use portcullis_pki::{
        CaParams, CrlParams, GeneratedKeyRequest, IssueOptions, ManagedCa, RevokedEntry, SubjectFields,
    };

    let server = Server::start_with(crate::support::scratch(), &["--crl-refresh", "1"], &[]);
    setup(&server);
    let dir = server.dir.path();
    let now = time::OffsetDateTime::now_utc();
    let ca = ManagedCa::create(&CaParams::default(), now - time::Duration::days(1)).expect("a CA");
    std::fs::write(dir.join("pki-ca.pem"), ca.certificate_pem()).expect("write");
    ok(&server.cli(&["ca", "upload", "--name", "corporate PKI", "pki-ca.pem"]));
    let uploaded: serde_json::Value =
        serde_json::from_str(&ok(&server.cli(&["ca", "list-uploaded", "--json"]))).expect("json");
    let ca_id = uploaded[0]["id"].as_str().expect("id").to_owned();
    ok(&server.cli(&["mtls", "enable", "localhost", "--ca", &ca_id]));
    let crl = |number: u64, age_hours: i64, revoked: &[Vec<u8>]| {
        let this_update = now - time::Duration::hours(age_hours);
        ca.build_crl(
            &CrlParams {
                crl_number: number,
                this_update,
                next_update: this_update + time::Duration::days(7),
            },
            &revoked
                .iter()
                .map(|serial| RevokedEntry {
                    serial: serial.clone(),
                    revoked_at: this_update,
                    reason: None,
                })
                .collect::<Vec<_>>(),
        )
        .expect("crl")
    };
    let (port, served) = crate::support::file_server(200, crl(1, 2, &[]).der().to_vec());
    let crl_url = format!("http://127.0.0.1:{port}/pki.crl");
    let mut serials = Vec::new();
    for name in ["laptop", "stolen"] {
        let request = GeneratedKeyRequest {
            subject: SubjectFields {
                common_name: name.to_owned(),
                ..SubjectFields::default()
            },
            ..GeneratedKeyRequest::default()
        };
        let options = IssueOptions {
            validity_days: 30,
            crl_distribution_point: Some(crl_url.clone()),
            ..IssueOptions::default()
        };
        let issued = ca.issue_with_generated_key(&request, &options, now).expect("issued");
        std::fs::write(dir.join(format!("{name}.pem")), &issued.record.certificate).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), issued.private_key_pem.as_bytes()).expect("write");
        serials.push(portcullis_pki::hex_decode(&issued.record.serial_number).expect("hex"));
    }
    // The URL is taken from a client certificate's CRL distribution point; a certificate naming none is refused.
    let out = server.cli(&["ca", "crl-urls", &ca_id, "--from-cert", "pki-ca.pem"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("names no http:// or https:// CRL distribution point"),
        "{out:?}"
    );
    let out = ok(&server.cli(&["ca", "crl-urls", &ca_id, "--from-cert", "laptop.pem"]));
    assert!(out.contains(&format!("CRLs are fetched from {crl_url}")), "{out}");
    let source = || {
        let table = ok(&server.cli(&["ca", "list-uploaded"]));
        table
            .lines()
            .find(|l| l.starts_with(&ca_id))
            .unwrap_or_default()
            .to_owned()
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}: {}", source());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("the first fetch", &|| source().contains("(fetched "));
    let status = |name: &str| {
        get(
            &server,
            "/api",
            &["--cert", &format!("{name}.pem"), "--key", &format!("{name}.key")],
        )
        .1
    };
    assert_eq!(
        (status("laptop"), status("stolen")),
        ("200".to_owned(), "200".to_owned())
    );

    // The PKI revokes a certificate and publishes a new CRL (PEM this time).
    served.lock().expect("lock").1 = crl(2, 1, &serials[1..]).pem().into_bytes();
    wait_for("the revocation", &|| status("stolen") == "403");
    assert_eq!(status("laptop"), "200");

    // An older CRL (without the revocation) is refused; the certificate stays revoked.
    served.lock().expect("lock").1 = crl(1, 2, &[]).der().to_vec();
    wait_for("the refusal", &|| source().contains("older than the one in use"));
    assert_eq!(status("stolen"), "403");
    // An answer that is not exactly one CRL (here the CA's certificate) is refused.
    served.lock().expect("lock").1 = ca.certificate_pem().into_bytes();
    wait_for("the refusal of a non-CRL", &|| {
        source().contains("must be exactly one CRL")
    });
    assert_eq!(status("stolen"), "403");
    // A dead URL is reported the same way.
    *served.lock().expect("lock") = (404, b"gone".to_vec());
    wait_for("the 404", &|| {
        source().contains("failing: http://127.0.0.1:") && source().contains("HTTP 404")
    });
    assert_eq!(status("stolen"), "403");
    let metrics = curl(dir, &[&format!("{}/metrics", server.api())]).2;
    assert!(metrics.contains("portcullis_crl_fetch_failures_total"), "{metrics}");
}

/// `portcullis events` lists the blocks the edge recorded, filtered, and `-f` prints new ones as they happen.
#[test]
fn events_lists_and_follows_blocks() {
    let server = Server::start();
    setup(&server);
    let (_, status, _) = get(&server, "/api", &[]);
    assert_eq!(status, "403");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let out = ok(&server.cli(&["events", "--action", "block", "--json"]));
        let events: serde_json::Value = serde_json::from_str(&out).expect("json");
        if events.as_array().is_some_and(|e| !e.is_empty()) {
            break events;
        }
        assert!(std::time::Instant::now() < deadline, "no event recorded");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (listed[0]["path"].as_str(), listed[0]["mtls_status"].as_str()),
        (Some("/api"), Some("absent"))
    );
    let table = ok(&server.cli(&["events"]));
    assert!(
        table.starts_with("TIME") && table.contains("block   403") && table.contains("GET /api"),
        "{table}"
    );
    assert!(ok(&server.cli(&["events", "--action", "log", "--json"])).trim() == "[]");

    // Followed: the header, the block already there, then a new one as it happens.
    let (mut follow, rx) = follow_events(&server, &[]);
    let next_line = |what: &str| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("events -f printed no {what}: {e}"))
    };
    assert!(next_line("header").starts_with("TIME"));
    assert!(next_line("first block").contains("GET /api"));
    let (_, status, _) = get(&server, "/api?again", &[]);
    assert_eq!(status, "403");
    let next = next_line("new block");
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(next.contains("block") && next.contains("GET /api"), "{next}");

    // With --limit 1 it starts from the newest and never prints the older ones later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while json_events(&server).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second block was not recorded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut follow, rx) = follow_events(&server, &["--json", "--limit", "1"]);
    let id_of = |line: String| -> i64 {
        serde_json::from_str::<serde_json::Value>(&line).expect("a JSON line")["id"]
            .as_i64()
            .expect("id")
    };
    let first = id_of(rx.recv_timeout(Duration::from_secs(10)).expect("the newest event"));
    // Let a poll or two pass: with the look-back of late commits, the older events must still not appear.
    std::thread::sleep(Duration::from_millis(2500));
    let (_, status, _) = get(&server, "/api?third", &[]);
    assert_eq!(status, "403");
    let next = id_of(rx.recv_timeout(Duration::from_secs(10)).expect("the new event"));
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        next > first,
        "printed an older event ({next}) after the newest ({first})"
    );
}

/// `portcullis events -f` with `args`, and its output lines, read on a thread so that a test waiting for a line fails
/// after a timeout instead of hanging.
fn follow_events(server: &Server, args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead as _;
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["events", "-f", "--api", &server.api(), "--data-dir"])
        .arg(server.data_dir())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("events -f runs");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (follow, rx)
}

fn json_events(server: &Server) -> Vec<serde_json::Value> {
    let out = ok(&server.cli(&["events", "--json"]));
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A certificate issued in one zone works on another zone's hostnames that trust the account's managed CA; deleting
/// its zone revokes it there too, instead of leaving it trusted and impossible to revoke.
#[test]
fn removing_a_zone_revokes_its_client_certificates_everywhere() {
    let server = Server::start();
    setup(&server);
    ok(&server.cli(&["zone", "add", "example.com"]));
    ok(&server.cli(&[
        "cert",
        "create",
        "--zone",
        "example.com",
        "--cn",
        "tenant-a",
        "--out",
        "tenant",
    ]));
    let tenant = ["--cert", "tenant/cert.pem", "--key", "tenant/key.pem"];
    let (_, status, body) = get(&server, "/api", &tenant);
    assert_eq!(status, "200", "the managed CA is the account's: {body}");
    let refused = server.cli(&["zone", "remove", "example.com"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("run again with --yes"));
    let out = ok(&server.cli(&["zone", "remove", "example.com", "--yes"]));
    assert!(out.starts_with("removed zone example.com ("), "{out}");
    get_until(&server, "/api", &tenant, "403");
    // The zone that stays keeps its own certificate.
    let (_, status, _) = get(&server, "/api", WITH_CERT);
    assert_eq!(status, "200");
}

#[test]
fn several_origin_servers_share_requests_and_stand_in_for_a_dead_one() {
    let server = Server::start();
    let (one, _) = file_server(200, b"one".to_vec());
    let (two, _) = file_server(200, b"two".to_vec());
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    ok(&server.cli(&["zone", "add", "localhost"]));
    ok(&server.cli(&[
        "host",
        "add",
        "localhost",
        "--origin",
        &url(dead),
        "--origin",
        &url(one),
        "--origin",
        &url(two),
    ]));
    let shown = ok(&server.cli(&["host", "show", "localhost"]));
    assert!(shown.contains(&format!("{}, {}", url(one), url(two))), "{shown}");
    assert!(shown.contains("round_robin"), "{shown}");

    // Round robin over three servers, one of them dead: no request fails, and the two others share them.
    get_until(&server, "/", &[], "200");
    let bodies: Vec<String> = (0..6)
        .map(|_| {
            let (_, status, body) = get(&server, "/", &[]);
            assert_eq!(status, "200", "{body}");
            body
        })
        .collect();
    assert_eq!(bodies.iter().filter(|b| *b == "one").count(), 3, "{bodies:?}");
    assert_eq!(bodies.iter().filter(|b| *b == "two").count(), 3, "{bodies:?}");
    let (_, _, metrics) = curl(server.dir.path(), &[&format!("{}/metrics", server.api())]);
    assert!(
        metrics.contains("portcullis_origin_servers_down_total{host=\"localhost\"} 1"),
        "{metrics}"
    );
    for (port, up) in [(dead, 0), (one, 1), (two, 1)] {
        let series = format!("portcullis_origin_server_up{{host=\"localhost\",server=\"127.0.0.1:{port}\"}} {up}");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }

    // Failover: the second server takes every request while the first is down.
    ok(&server.cli(&[
        "host",
        "set",
        "localhost",
        "--origin",
        &url(dead),
        "--origin",
        &url(two),
        "--origin",
        &url(one),
        "--steering",
        "failover",
    ]));
    get_until(&server, "/", &[], "200");
    for _ in 0..3 {
        assert_eq!(get(&server, "/", &[]).2, "two");
    }

    // Active health checks: a server that answers 503 to its check is taken out though it accepts connections.
    let (sick, _) = file_server(503, b"sick".to_vec());
    ok(&server.cli(&[
        "host",
        "set",
        "localhost",
        "--origin",
        &url(one),
        "--origin",
        &url(sick),
        "--steering",
        "round_robin",
        "--health-check",
        "/healthz",
        "--health-check-interval",
        "1",
    ]));
    let shown = ok(&server.cli(&["host", "show", "localhost"]));
    assert!(shown.contains("GET /healthz every 1 s (timeout 1 s)"), "{shown}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut in_a_row = 0;
    while in_a_row < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sick server still takes requests"
        );
        let (_, status, body) = get(&server, "/", &[]);
        in_a_row = if (status.as_str(), body.as_str()) == ("200", "one") {
            in_a_row + 1
        } else {
            0
        };
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&server.cli(&["host", "set", "localhost", "--no-health-check"]));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&server.cli(&["host", "show", "localhost", "--json"]))).expect("json");
    assert!(json.get("origin_health_check").is_none(), "{json}");

    // Every server of a hostname has the same scheme, since they share its TLS settings.
    let out = server.cli(&[
        "host",
        "set",
        "localhost",
        "--origin",
        &url(one),
        "--origin",
        "https://127.0.0.1:1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must use the scheme of origin"), "{err}");

    // One --origin leaves one server.
    ok(&server.cli(&["host", "set", "localhost", "--origin", &url(one)]));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&server.cli(&["host", "show", "localhost", "--json"]))).expect("json");
    assert_eq!(json["additional_origins"], serde_json::json!([]));
}

#[test]
fn a_wildcard_hostname_serves_the_names_under_it_that_have_no_host_of_their_own() {
    let server = Server::start();
    let echo = format!("http://127.0.0.1:{}", echo_origin());
    let (exact, _) = file_server(200, b"exact".to_vec());
    ok(&server.cli(&["zone", "add", "localhost"]));
    ok(&server.cli(&["host", "add", "*.t.localhost", "--origin", &echo]));
    ok(&server.cli(&[
        "host",
        "add",
        "a.t.localhost",
        "--origin",
        &format!("http://127.0.0.1:{exact}"),
    ]));
    ok(&server.cli(&["mtls", "enable", "*.t.localhost"]));
    let added = ok(&server.cli(&["rule", "add-mtls", "--path", "/api", "--host", "*.t.localhost"]));
    assert!(added.contains("added"), "{added}");
    let rules = ok(&server.cli(&["rule", "list", "--json"]));
    assert!(rules.contains(r#"http.host wildcard \"*.t.localhost\""#), "{rules}");
    ok(&server.cli(&["cert", "create", "--cn", "device-1", "--out", "."]));

    let ca = server.data_dir().join("edge-dev-ca.pem");
    let get_as = |name: &str, path: &str, extra: &[&str]| {
        let mut args = vec![
            "--cacert".to_owned(),
            ca.display().to_string(),
            "--resolve".to_owned(),
            format!("{name}:{}:127.0.0.1", server.edge_port),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("https://{name}:{}{path}", server.edge_port));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(server.dir.path(), &args)
    };

    // Any one label under it, with the dev CA's wildcard certificate (curl checks it), the request's own name
    // reaching the origin.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, status, body) = get_as("x.t.localhost", "/", &[]);
        if status == "200" {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{status}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(body.contains("host: x.t.localhost"), "{body}");
    assert!(body.contains("x-forwarded-host: x.t.localhost"), "{body}");
    assert!(!body.contains("*.t"), "{body}");

    // mTLS and the rule apply to every name it covers.
    assert_eq!(get_as("y.t.localhost", "/api", &[]).1, "403");
    assert_eq!(get_as("y.t.localhost", "/api", WITH_CERT).1, "200");
    // Names under it on one connection are the same host; a name with a host of its own is another: 421.
    assert_eq!(get_as("y.t.localhost", "/", &["-H", "Host: z.t.localhost"]).1, "200");
    assert_eq!(get_as("y.t.localhost", "/", &["-H", "Host: a.t.localhost"]).1, "421");

    // The exact hostname wins over the wildcard, and only one label is covered.
    assert_eq!(get_as("a.t.localhost", "/", &[]).2, "exact");
    let (code, status, _) = get_as("deep.x.t.localhost", "/", &[]);
    assert_ne!(
        code,
        Some(0),
        "no host for two labels under the wildcard: the handshake is refused ({status})"
    );

    // A wildcard copied into an equality can never match a request's host: refused, with the operator to use.
    let out = server.cli(&[
        "rule",
        "add",
        "--action",
        "block",
        "--expression",
        r#"http.host eq "*.t.localhost""#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"http.host wildcard "*.t.localhost""#), "{err}");

    // A wildcard is a whole first label.
    let out = server.cli(&["host", "add", "x*.t.localhost", "--origin", &echo]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("a wildcard is a whole first label"));
}

#[test]
fn the_edge_serves_on_every_listen_address() {
    let server = Server::start_with(crate::support::scratch(), &["--listen", "127.0.0.1:0"], &[]);
    assert_eq!(server.edge_ports.len(), 2, "two --listen, two listeners");
    setup(&server);
    let ca = server.data_dir().join("edge-dev-ca.pem");
    for port in &server.edge_ports {
        let resolve = format!("localhost:{port}:127.0.0.1");
        let url = format!("https://localhost:{port}/api");
        let with = curl(
            server.dir.path(),
            &[
                "--cacert",
                ca.to_str().expect("utf-8"),
                "--resolve",
                &resolve,
                "--cert",
                "cert.pem",
                "--key",
                "key.pem",
                &url,
            ],
        );
        assert_eq!(with.1, "200", "port {port}: {}", with.2);
        let without = curl(
            server.dir.path(),
            &["--cacert", ca.to_str().expect("utf-8"), "--resolve", &resolve, &url],
        );
        assert_eq!(without.1, "403", "port {port}");
    }
}

/// An uploaded CA's client certificates checked with OCSP against `openssl ocsp` as the CA's responder, signing
/// with a delegated responder certificate: a revoked certificate is refused at once, a good one passes, and when
/// the responder is gone a new certificate passes under `soft` and is refused under `hard`.
#[test]
fn ocsp_answers_from_an_uploaded_cas_responder_decide_at_the_edge() {
    let server = Server::start();
    setup(&server);
    let dir = server.dir.path();
    let run = |args: &[&str]| crate::support::openssl_stdout(dir, args);
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("addr").port()
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "pki-ca.key",
        "-out",
        "pki-ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Corporate PKI",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca);
    std::fs::write(dir.join("responder.ext"), "extendedKeyUsage=OCSPSigning\n").expect("write");
    std::fs::write(
        dir.join("client.ext"),
        format!("extendedKeyUsage=clientAuth\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:{port}/\n"),
    )
    .expect("write");
    let mut index = String::new();
    for (name, ext, revoked) in [
        ("responder", "responder.ext", false),
        ("good", "client.ext", false),
        ("stolen", "client.ext", true),
        ("new", "client.ext", false),
    ] {
        let mut csr = vec!["req"];
        csr.extend(ec);
        let (key, req, cert) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        csr.extend(["-keyout", &key, "-out", &req, "-subj"]);
        let subject = format!("/CN={name}-device");
        csr.push(&subject);
        run(&csr);
        run(&[
            "x509",
            "-req",
            "-in",
            &req,
            "-CA",
            "pki-ca.pem",
            "-CAkey",
            "pki-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            &cert,
        ]);
        let serial = run(&["x509", "-in", &cert, "-noout", "-serial"]);
        let serial = serial.trim().trim_start_matches("serial=");
        // openssl's CA database: status, expiry, revocation time, serial, file, subject.
        let status = if revoked {
            "R\t301231000000Z\t250101000000Z"
        } else {
            "V\t301231000000Z\t"
        };
        // The newest certificate is left out until the responder is gone (it is then never asked about it).
        if name != "new" {
            index.push_str(&format!("{status}\t{serial}\tunknown\t{subject}\n"));
        }
    }
    std::fs::write(dir.join("index.txt"), index).expect("write");
    struct Responder(std::process::Child);
    impl Drop for Responder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut responder = Responder(
        std::process::Command::new("openssl")
            .args([
                "ocsp",
                "-index",
                "index.txt",
                "-port",
                &port.to_string(),
                "-CA",
                "pki-ca.pem",
            ])
            .args(["-rsigner", "responder.pem", "-rkey", "responder.key", "-nmin", "5"])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl ocsp runs"),
    );
    // It says so once it listens. (A probing connection would not do: it hangs on one that closes unasked.)
    let mut started = std::io::BufReader::new(responder.0.stderr.take().expect("stderr"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut started, &mut line).expect("openssl ocsp starts");
    assert!(line.contains("waiting for OCSP client connections"), "{line}");

    ok(&server.cli(&["ca", "upload", "--name", "corporate PKI", "pki-ca.pem"]));
    let uploaded: serde_json::Value =
        serde_json::from_str(&ok(&server.cli(&["ca", "list-uploaded", "--json"]))).expect("json");
    let ca_id = uploaded[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(uploaded[0]["ocsp_check"], "off");
    ok(&server.cli(&["mtls", "enable", "localhost", "--ca", &ca_id]));
    let with = |name: &str| {
        [
            "--cert".to_owned(),
            format!("{name}.pem"),
            "--key".to_owned(),
            format!("{name}.key"),
        ]
    };
    let status = |name: &str| {
        let args = with(name);
        get(&server, "/api", &[&args[0], &args[1], &args[2], &args[3]]).1
    };
    // Without OCSP, the chain is all that counts.
    for name in ["good", "stolen"] {
        let args = with(name);
        get_until(&server, "/api", &[&args[0], &args[1], &args[2], &args[3]], "200");
    }

    let out = ok(&server.cli(&["ca", "ocsp", &ca_id, "soft"]));
    assert!(out.contains("OCSP soft (each certificate's responder)"), "{out}");
    let stolen = with("stolen");
    get_until(
        &server,
        "/api",
        &[&stolen[0], &stolen[1], &stolen[2], &stolen[3]],
        "403",
    );
    assert_eq!(status("good"), "200");
    // Revocation decides rules, as a CRL's does; off the rule's path the request passes.
    let (_, code, body) = get(&server, "/", &[&stolen[0], &stolen[1], &stolen[2], &stolen[3]]);
    assert_eq!(code, "200", "{body}");
    let metrics = curl(dir, &[&format!("{}/metrics", server.api())]).2;
    for outcome in ["good", "revoked"] {
        let line = format!("portcullis_ocsp_queries_total{{outcome=\"{outcome}\"}} ");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // The responder goes away: a certificate it never answered for passes under soft, not under hard.
    drop(responder);
    assert_eq!(status("new"), "200");
    let out = ok(&server.cli(&["ca", "ocsp", &ca_id, "hard"]));
    assert!(out.contains("OCSP hard"), "{out}");
    let new = with("new");
    get_until(&server, "/api", &[&new[0], &new[1], &new[2], &new[3]], "403");
    // Answers already had stay good until their nextUpdate.
    assert_eq!(status("good"), "200");
    assert_eq!(status("stolen"), "403");
    let table = ok(&server.cli(&["ca", "list-uploaded"]));
    assert!(table.contains("hard (each certificate's responder)"), "{table}");

    // Bad settings are refused with the reason.
    let bad = server.cli(&["ca", "ocsp", &ca_id, "hard", "--responder", "https://ocsp.example/"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("must start with http://"),
        "{bad:?}"
    );
    ok(&server.cli(&["ca", "ocsp", &ca_id, "off"]));
    get_until(&server, "/api", &[&new[0], &new[1], &new[2], &new[3]], "200");
}

/// `portcullis apply` makes the server match a file and says what it changes (nothing with --dry-run, nothing the
/// second time); `export` writes a file that applies with no changes; the edge serves what the file says; --prune
/// removes what the file does not name; bad files are refused with the reason.
#[test]
fn apply_makes_the_server_match_a_file_and_export_round_trips() {
    // An ACME directory that refuses at once: the packs the file orders stay pending.
    let server = Server::start_with(
        crate::support::scratch(),
        &["--acme-directory", "https://127.0.0.1:1/directory"],
        &[],
    );
    let dir = server.dir.path();
    let origin = format!("http://127.0.0.1:{}", echo_origin());
    let file = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).expect("write");
        name.to_owned()
    };
    let rule = r#"
[[zones.rules]]
description = "mTLS on /api"
expression = '(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}'
action = "block"
"#;
    // A CA of the company's own (openssl), with a client certificate it issued.
    let (foreign_cert, foreign_key) = crate::support::foreign_client_cert(dir);
    let corp_pem = std::fs::read_to_string(dir.join("foreign-ca.pem")).expect("the CA");
    let config = |items: &str, extra: &str, rules: &str| {
        format!(
            "[[cas]]\nname = \"corp\"\ncertificates = '''\n{corp_pem}'''\ncrl_urls = [\"http://127.0.0.1:1/corp.crl\"]\n\
             ocsp = \"soft\"\n\n\
             [[lists]]\nname = \"office\"\ndescription = \"Office networks\"\nitems = [{items}]\n\n\
             [[zones]]\nname = \"localhost\"\n{rules}\n\
             [[zones.hostnames]]\nhostname = \"localhost\"\norigin = \"{origin}\"\n\
             client_certificate_forwarding = \"rfc9440\"\nmtls = [\"managed\", \"corp\"]\n{extra}\n"
        )
    };
    let first = file("first.toml", &config(r#""10.1.0.0/16", "192.0.2.7""#, "", rule));

    let plan = ok(&server.cli(&["apply", &first, "--dry-run"]));
    for line in [
        "+ CA \"corp\"",
        "~ mtls with the \"corp\" CA: +localhost",
        "+ list $office",
        "+ zone localhost",
        "+ hostname localhost",
        "(dry run: nothing was changed)",
    ] {
        assert!(plan.contains(line), "{line:?} in {plan}");
    }
    assert!(
        !ok(&server.cli(&["zone", "list"])).contains("localhost"),
        "a dry run changes nothing"
    );

    let applied = ok(&server.cli(&["apply", &first]));
    for line in [
        "+ CA \"corp\"",
        "~ CA \"corp\" crl_urls: http://127.0.0.1:1/corp.crl",
        "~ CA \"corp\" ocsp: soft",
        "~ mtls with the \"corp\" CA: +localhost",
        "+ list $office",
        "~ list $office items: 2 added, 0 removed",
        "+ zone localhost",
        "+ hostname localhost",
        "~ mtls with the managed CA: +localhost",
        "~ localhost rules: 1 rule in place of 0",
        "changes made",
    ] {
        assert!(applied.contains(line), "{line:?} in {applied}");
    }
    ok(&server.cli(&["cert", "create", "--cn", "device-1", "--out", "."]));
    get_until(&server, "/api", &[], "403");
    let echoed = get_until(&server, "/api", WITH_CERT, "200");
    // The company's own certificates too (soft OCSP: their CA names no responder, so no answer, and accepted).
    let (corp_cert, corp_key) = (foreign_cert.display().to_string(), foreign_key.display().to_string());
    get_until(&server, "/api", &["--cert", &corp_cert, "--key", &corp_key], "200");
    assert!(echoed.contains("client-cert: :"), "forwarded as RFC 9440: {echoed}");
    assert_eq!(
        ok(&server.cli(&["apply", &first])).trim(),
        format!("no changes: the server matches {first}")
    );

    // What export writes applies with no changes.
    let exported = ok(&server.cli(&["export"]));
    for part in [
        "name = \"office\"",
        "\"10.1.0.0/16\"",
        "mtls = [\"managed\", \"corp\"]",
        "client_certificate_forwarding = \"rfc9440\"",
        "[[cas]]\nname = \"corp\"",
        "ocsp = \"soft\"",
        "crl_urls = [\"http://127.0.0.1:1/corp.crl\"]",
    ] {
        assert!(exported.contains(part), "{part:?} in {exported}");
    }
    let again = file("exported.toml", &exported);
    assert!(
        ok(&server.cli(&["apply", &again])).starts_with("no changes"),
        "{exported}"
    );

    // Failing closed without a fresh CRL: the corp CA has none (its URL answers nothing), so none of its
    // certificates is trusted while the file asks for it.
    let strict = config(r#""10.1.0.0/16", "192.0.2.7""#, "", rule).replacen(
        "ocsp = \"soft\"\n",
        "ocsp = \"soft\"\ncrl_grace_seconds = 86400\n",
        1,
    );
    let strict = file("strict.toml", &strict);
    let applied = ok(&server.cli(&["apply", &strict]));
    assert!(applied.contains("~ CA \"corp\" crl_grace_seconds: 86400"), "{applied}");
    get_until(&server, "/api", &["--cert", &corp_cert, "--key", &corp_key], "403");
    let exported = ok(&server.cli(&["export"]));
    assert!(exported.contains("crl_grace_seconds = 86400"), "{exported}");
    let applied = ok(&server.cli(&["apply", &first]));
    assert!(applied.contains("~ CA \"corp\" crl_grace_seconds: off"), "{applied}");
    get_until(&server, "/api", &["--cert", &corp_cert, "--key", &corp_key], "200");

    // Changes: items, a setting, the rules gone.
    // Values written otherwise than the server keeps them (an origin in capitals with a slash, a rate limit
    // without its defaults) still settle: the next apply finds no changes.
    let ratelimit = r#"
[[zones.ratelimit_rules]]
expression = 'http.request.uri.path eq "/limited"'
action = "block"
ratelimit = { characteristics = ["cf.colo.id", "cf.tls_client_auth.cert_fingerprint_sha256"], period = 60, requests_per_period = 100 }
"#;
    let second = file(
        "second.toml",
        &config(
            r#""10.1.0.0/16", "198.51.100.0/24""#,
            "min_tls_version = \"1.3\"\nadditional_origins = [\"HTTP://127.0.0.1:9/\"]\norigin_steering = \"failover\"\n\
             origin_host_header = \"Backend.Internal\"",
            &format!(
                "acme = [[\"www.localhost\", \"API.localhost\"]]\nrules = []\n\
                 [zones.url_normalization]\nscope = \"both\"\n{ratelimit}"
            ),
        ),
    );
    let applied = ok(&server.cli(&["apply", &second]));
    for line in [
        "~ list $office items: 1 added, 1 removed",
        "~ hostname localhost (additional_origins, min_tls_version, origin_host_header, origin_steering)",
        "~ localhost rules: 0 rules in place of 1",
        "~ localhost ratelimit_rules: 1 rule in place of 0",
        "~ localhost url_normalization: scope both, type cloudflare (was incoming, cloudflare)",
        "+ acme certificate api.localhost, www.localhost",
        "6 changes made",
    ] {
        assert!(applied.contains(line), "{line:?} in {applied}");
    }
    assert!(ok(&server.cli(&["apply", &second])).starts_with("no changes"));
    let exported = ok(&server.cli(&["export", "--zone", "localhost"]));
    assert!(
        exported.contains("[zones.url_normalization]\nscope = \"both\""),
        "{exported}"
    );
    assert!(
        exported.contains("acme = [[\"api.localhost\", \"www.localhost\"]]"),
        "{exported}"
    );
    assert!(
        exported.contains("origin_host_header = \"backend.internal\""),
        "{exported}"
    );
    get_until(&server, "/api", &[], "200");
    let shown = ok(&server.cli(&["list", "show", "office"]));
    assert!(
        shown.contains("198.51.100.0/24") && !shown.contains("192.0.2.7"),
        "{shown}"
    );

    // --prune removes the zone's hostnames and the lists the file does not name; nothing else.
    ok(&server.cli(&["host", "add", "other.localhost", "--origin", &origin]));
    ok(&server.cli(&["list", "create", "extra"]));
    let kept = ok(&server.cli(&["apply", &second]));
    assert!(kept.starts_with("no changes"), "without --prune: {kept}");
    let pruned = ok(&server.cli(&["apply", &second, "--prune"]));
    assert!(
        pruned.contains("- hostname other.localhost") && pruned.contains("- list $extra"),
        "{pruned}"
    );
    assert!(!ok(&server.cli(&["host", "list"])).contains("other.localhost"));

    // Bad files: refused with the reason, and nothing changed.
    let refused = |name: &str, text: &str| {
        let out = server.cli(&["apply", &file(name, text)]);
        assert!(!out.status.success(), "{name} was applied");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let items = r#""10.1.0.0/16""#;
    let err = refused("wildcard.toml", &config(items, "", "acme = [[\"*.localhost\"]]"));
    assert!(err.contains("over DNS only") && err.contains("acme dns set"), "{err}");
    let err = refused("typo.toml", &config(items, "orign_http2 = true", ""));
    assert!(err.contains("unknown field `orign_http2`"), "{err}");
    let err = refused(
        "ca.toml",
        &config(items, "", "").replace("[\"managed\", \"corp\"]", "[\"nobody's CA\"]"),
    );
    assert!(err.contains("no uploaded CA is called \"nobody's CA\""), "{err}");
    refused("item.toml", &config(r#""10.1.0.0/33""#, "", ""));
    let typo_rule = "[[zones.rules]]\nexpression = 'true'\naction = \"block\"\nenabeld = false\n";
    let err = refused("typo-rule.toml", &config(items, "", typo_rule));
    assert!(err.contains("rule 1: unknown field `enabeld`"), "{err}");
    ok(&server.cli(&["zone", "add", "elsewhere.localhost"]));
    ok(&server.cli(&["host", "add", "moved.elsewhere.localhost", "--origin", &origin]));
    let moved = format!(
        "[[zones]]\nname = \"localhost\"\n[[zones.hostnames]]\nhostname = \"moved.elsewhere.localhost\"\norigin = \"{origin}\"\n"
    );
    let err = refused("moved.toml", &moved);
    assert!(err.contains("belongs to zone elsewhere.localhost"), "{err}");
    // Zones nest: a name with an ACME certificate in the inner zone is refused to the outer one before any change.
    ok(&server.cli(&[
        "acme",
        "order",
        "--zone",
        "elsewhere.localhost",
        "x.elsewhere.localhost",
    ]));
    let nested = "[[zones]]\nname = \"localhost\"\nacme = [[\"x.elsewhere.localhost\"]]\n";
    let err = refused("nested.toml", nested);
    assert!(
        err.contains("x.elsewhere.localhost has an ACME certificate in zone elsewhere.localhost"),
        "{err}"
    );
    let other = dir.join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    crate::support::foreign_client_cert(&other);
    let other_pem = std::fs::read_to_string(other.join("foreign-ca.pem")).expect("another CA");
    let err = refused(
        "replaced.toml",
        &config(items, "", "").replace(corp_pem.as_str(), &other_pem),
    );
    assert!(
        err.contains("CA \"corp\" on the server has other certificates"),
        "{err}"
    );
    let err = refused(
        "scope.toml",
        &config(items, "", "[zones.url_normalization]\nscope = \"sometimes\"\n"),
    );
    assert!(err.contains("url_normalization scope must be one of"), "{err}");
    let bad_rule = "[[zones.rules]]\nexpression = 'ip.src in $ofice'\naction = \"block\"\n";
    let err = refused("rule.toml", &config(items, "", bad_rule));
    assert!(
        err.contains("rule 1") && err.contains("unknown list `$ofice`") && err.contains("did you mean $office"),
        "{err}"
    );
    let shown = ok(&server.cli(&["list", "show", "office"]));
    assert!(shown.contains("198.51.100.0/24"), "unchanged: {shown}");

    // With the zone's DNS update settings (a `tsig-keygen` file), a wildcard is ordered, over DNS.
    let key = dir.join("acme.key");
    std::fs::write(
        &key,
        "key \"portcullis-acme\" { algorithm hmac-sha256; secret \"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\"; };",
    )
    .expect("key file");
    ok(&server.cli(&[
        "acme",
        "dns",
        "set",
        "--zone",
        "elsewhere.localhost",
        "--server",
        "127.0.0.1:1",
        "--key-file",
        key.to_str().expect("utf-8"),
    ]));
    let wild = "[[zones]]\nname = \"elsewhere.localhost\"\nacme = [[\"x.elsewhere.localhost\"], [\"*.elsewhere.localhost\"]]\n";
    let applied = ok(&server.cli(&["apply", &file("wild.toml", wild)]));
    assert!(
        applied.contains("+ acme certificate *.elsewhere.localhost"),
        "{applied}"
    );
    let packs: serde_json::Value = serde_json::from_str(&ok(&server.cli(&[
        "acme",
        "list",
        "--zone",
        "elsewhere.localhost",
        "--json",
    ])))
    .expect("json");
    let wildcard = packs
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|p| p["hosts"] == serde_json::json!(["*.elsewhere.localhost"]))
        })
        .unwrap_or_else(|| panic!("no wildcard pack: {packs}"));
    assert_eq!(wildcard["validation_method"], "txt");
    let again = ok(&server.cli(&["apply", &file("wild.toml", wild)]));
    assert!(again.contains("no changes"), "{again}");
}

/// A managed CA signed by the operator's own root (made by openssl): requested, signed and installed from the CLI.
/// Its certificates pass the edge and chain to the root for openssl; the CA before it stays trusted; a revocation
/// under it blocks at once, as under a self-signed one.
#[test]
fn a_managed_ca_signed_by_your_own_root_issues_what_the_edge_accepts() {
    let server = Server::start();
    setup(&server);
    let dir = server.dir.path();
    let run = |args: &[&str]| {
        let out = openssl(dir, args);
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let requested = ok(&server.cli(&["ca", "request", "--common-name", "Acme Devices CA", "--out", "sub.csr"]));
    let id = requested
        .strip_prefix("managed CA request ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{requested}"))
        .to_owned();
    assert!(ok(&server.cli(&["ca", "requests"])).contains(&id));
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Acme Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "sub.csr",
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-copy_extensions",
        "copyall",
        "-days",
        "20",
        "-out",
        "sub.pem",
    ]);

    let refused = server.cli(&["ca", "install", &id, "--cert", "sub.pem"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("no chain"), "{err}");
    let installed = ok(&server.cli(&["ca", "install", &id, "--cert", "sub.pem", "--chain", "root.pem"]));
    assert!(
        installed.starts_with(&format!(
            "new active managed CA Acme Devices CA ({id}, signed by CN=Acme Root"
        )),
        "{installed}"
    );
    let table = ok(&server.cli(&["ca", "show"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("active") && l.ends_with("CN=Acme Root")),
        "{table}"
    );
    assert_eq!(
        ok(&server.cli(&["ca", "requests"])).lines().count(),
        1,
        "only the header is left"
    );

    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    ok(&server.cli(&["cert", "create", "--cn", "device-2", "--out", "sub"]));
    let full = std::fs::read_to_string(dir.join("sub/fullchain.pem")).expect("fullchain.pem");
    assert_eq!(
        full.matches("BEGIN CERTIFICATE").count(),
        2,
        "the certificate and the managed CA: {full}"
    );
    let verified = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "sub/fullchain.pem",
            "sub/cert.pem",
        ],
    );
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains(": OK"),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );

    let new_cert: &[&str] = &["--cert", "sub/fullchain.pem", "--key", "sub/key.pem"];
    get_until(&server, "/api", new_cert, "200");
    assert_eq!(get(&server, "/api", WITH_CERT).1, "200", "the CA before stays trusted");
    let list: serde_json::Value = serde_json::from_str(&ok(&server.cli(&["cert", "list", "--json"]))).expect("json");
    let new_id = list
        .as_array()
        .expect("certificates")
        .iter()
        .find(|c| c["common_name"] == "device-2")
        .and_then(|c| c["id"].as_str())
        .expect("device-2")
        .to_owned();
    ok(&server.cli(&["cert", "revoke", &new_id]));
    get_until(&server, "/api", new_cert, "403");
}
