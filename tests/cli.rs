//! The control-plane commands (`zone`, `host`, `mtls`, `token`, `cert`, `ca`, `rule`) end to end: each test starts a
//! real `portcullis serve`, drives it through the real binary, and checks the results with `openssl`.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::{Server, openssl};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Asserts the CLI's failure exit code (2) and returns stderr.
#[track_caller]
fn fails(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    stderr(o)
}

#[track_caller]
fn json(o: &Output) -> Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[track_caller]
fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let out = openssl(dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    format!("{}{}", stdout(&out), stderr(&out))
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {value}"))
}

fn items(value: &Value) -> &[Value] {
    value.as_array().unwrap_or_else(|| panic!("not an array: {value}"))
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).expect("the file exists").permissions().mode() & 0o777
}

/// A server with the zone example.com.
fn server_with_zone() -> Server {
    let server = Server::start();
    let out = ok(&server.cli(&["zone", "add", "example.com"]));
    assert!(out.starts_with("created zone example.com ("), "{out}");
    server
}

#[test]
fn zones_hosts_and_mtls() {
    let server = server_with_zone();
    let list = ok(&server.cli(&["zone", "list"]));
    assert!(list.starts_with("ID"), "{list}");
    assert!(list.contains("example.com"), "{list}");
    let zones = json(&server.cli(&["zone", "list", "--json"]));
    assert_eq!(items(&zones).len(), 1);
    assert_eq!(str_of(&zones[0], "name"), "example.com");

    let added = ok(&server.cli(&["host", "add", "api.example.com", "--origin", "http://127.0.0.1:9"]));
    assert_eq!(
        added,
        "added api.example.com → http://127.0.0.1:9 in zone example.com\n"
    );
    let hosts = ok(&server.cli(&["host", "list"]));
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with("api.example.com") && l.contains("http://127.0.0.1:9")),
        "{hosts}"
    );
    let hosts = json(&server.cli(&["host", "list", "--json"]));
    assert_eq!(str_of(&hosts[0], "hostname"), "api.example.com");

    let managed_mtls = |expected: &str| {
        let show = ok(&server.cli(&["host", "show", "api.example.com"]));
        let line = show
            .lines()
            .find(|l| l.starts_with("managed_ca_mtls"))
            .unwrap_or_else(|| panic!("{show}"));
        assert!(line.ends_with(expected), "{show}");
    };
    managed_mtls("false");
    let enabled = ok(&server.cli(&["mtls", "enable", "api.example.com"]));
    assert_eq!(enabled, "mTLS enabled on api.example.com with the managed CA\n");
    managed_mtls("true");
    let disabled = ok(&server.cli(&["mtls", "disable", "api.example.com"]));
    assert_eq!(disabled, "mTLS disabled on api.example.com for the managed CA\n");
    managed_mtls("false");

    assert_eq!(
        ok(&server.cli(&["host", "remove", "api.example.com"])),
        "removed api.example.com\n"
    );
    assert!(!ok(&server.cli(&["host", "list"])).contains("api.example.com"));
    let err = fails(&server.cli(&["host", "show", "api.example.com"]));
    assert!(err.contains("no hostname \"api.example.com\""), "{err}");

    // With two zones, commands that need one ask for --zone.
    ok(&server.cli(&["zone", "add", "example.org"]));
    let err = fails(&server.cli(&["cert", "create", "--cn", "x", "--out", "two-zones"]));
    assert!(err.contains("say which with --zone"), "{err}");
    assert!(!server.dir.path().join("two-zones").exists());
    let err = fails(&server.cli(&["rule", "add-mtls", "--path", "/x", "--zone", "nope.example"]));
    assert!(err.contains("no zone \"nope.example\""), "{err}");
}

/// The writes that leave mTLS enforcing nothing, or blocking where no certificate is asked for, say so (the API's
/// `messages`, printed by the CLI as warnings), and stop saying so once the setup is right.
#[test]
fn mtls_setups_that_enforce_nothing_are_warned_about() {
    let server = server_with_zone();
    ok(&server.cli(&["host", "add", "api.example.com", "--origin", "http://127.0.0.1:9"]));
    let enabled = server.cli(&["mtls", "enable", "api.example.com"]);
    ok(&enabled);
    let warned = stderr(&enabled);
    assert!(
        warned.contains("warning: mTLS on api.example.com enforces nothing yet"),
        "{warned}"
    );

    // Cloudflare's own template, without the revocation check: warned about too.
    let naive = server.cli(&[
        "rule",
        "add",
        "--expression",
        "not cf.tls_client_auth.cert_verified",
        "--action",
        "block",
    ]);
    ok(&naive);
    let warned = stderr(&naive);
    assert!(!warned.contains("enforces nothing"), "{warned}");
    assert!(
        warned.contains("checks cf.tls_client_auth.cert_verified but not cf.tls_client_auth.cert_revoked"),
        "{warned}"
    );
    let rules = json(&server.cli(&["rule", "list", "--json"]));
    let naive_id = str_of(&items(&rules)[0], "id").to_owned();
    ok(&server.cli(&["rule", "remove", &naive_id]));

    let added = server.cli(&["rule", "add-mtls", "--path", "/api"]);
    ok(&added);
    assert_eq!(
        stderr(&added),
        "",
        "a revocation-aware rule on the only hostname is the right setup"
    );

    // A hostname without mTLS under a rule that applies everywhere: its /api would be blocked for everyone.
    let plain = server.cli(&["host", "add", "www.example.com", "--origin", "http://127.0.0.1:9"]);
    ok(&plain);
    let warned = stderr(&plain);
    assert!(
        warned.contains("applies to www.example.com, where mTLS is not enabled"),
        "{warned}"
    );
    // The API answers the same in its envelope's messages.
    let body = server.api_put(
        &format!(
            "/zones/{}/certificate_authorities/hostname_associations",
            server.zone_id("example.com")
        ),
        &serde_json::json!({"hostnames": ["api.example.com", "www.example.com"]}),
    );
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["messages"], serde_json::json!([]), "{body}");
    let body = server.api_put(
        &format!(
            "/zones/{}/certificate_authorities/hostname_associations",
            server.zone_id("example.com")
        ),
        &serde_json::json!({"hostnames": ["api.example.com"]}),
    );
    assert_eq!(body["messages"][0]["code"], 10100, "{body}");
    assert!(
        body["messages"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("applies to www.example.com")),
        "{body}"
    );

    // `apply` writes the hostname before its rule: it warns only about where it leaves the zone.
    let file = server.dir.path().join("org.toml");
    let config = r#"
[[zones]]
name = "example.org"

[[zones.rules]]
description = "mTLS on /api"
expression = '(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}'
action = "block"

[[zones.hostnames]]
hostname = "api.example.org"
origin = "http://127.0.0.1:9"
mtls = ["managed"]
"#;
    std::fs::write(&file, config).expect("write");
    let applied = server.cli(&["apply", file.to_str().expect("utf-8")]);
    ok(&applied);
    assert_eq!(stderr(&applied), "", "the zone as applied is right");
    // `mtls check` says the same for a pipeline: 0 and nothing to warn about here, 1 and the warnings there.
    let checked = server.cli(&["mtls", "check", "--zone", "example.org"]);
    assert_eq!(
        (checked.status.code(), stdout(&checked).as_str()),
        (Some(0), "zone example.org: no warnings\n")
    );
    let checked = server.cli(&["mtls", "check", "--zone", "example.com"]);
    assert_eq!(checked.status.code(), Some(1), "{}", stdout(&checked));
    let warned = stdout(&checked);
    assert!(
        warned.contains("applies to www.example.com, where mTLS is not enabled"),
        "{warned}"
    );
    assert!(
        !warned.contains("mTLS on /api"),
        "example.org's rule is not example.com's: {warned}"
    );
    std::fs::write(&file, config.replace(r#"mtls = ["managed"]"#, "mtls = []")).expect("write");
    let applied = server.cli(&["apply", file.to_str().expect("utf-8")]);
    ok(&applied);
    let warned = stderr(&applied);
    assert_eq!(
        warned.matches("warning: rule \"mTLS on /api\"").count(),
        1,
        "once, about the zone as it is left: {warned}"
    );
    assert!(
        warned.contains("applies to api.example.org, where mTLS is not enabled"),
        "{warned}"
    );

    // A skip of the remaining rules placed before the mTLS rule lets what it matches through without a
    // certificate: named, with the way out.
    let skip_first = config.replace(
        "[[zones.rules]]\ndescription = \"mTLS on /api\"",
        "[[zones.rules]]\ndescription = \"health\"\nexpression = 'http.request.uri.path eq \"/api/health\"'\n\
         action = \"skip\"\n\n[[zones.rules]]\ndescription = \"mTLS on /api\"",
    );
    assert!(skip_first.contains("\"health\""), "{skip_first}");
    std::fs::write(&file, skip_first).expect("write");
    ok(&server.cli(&["apply", file.to_str().expect("utf-8")]));
    let checked = server.cli(&["mtls", "check", "--zone", "example.org"]);
    assert_eq!(checked.status.code(), Some(1), "{}", stdout(&checked));
    assert!(
        stdout(&checked).contains("rule \"health\" (")
            && stdout(&checked).contains("skips the remaining custom rules on api.example.org"),
        "{}",
        stdout(&checked)
    );
}

#[test]
fn cert_create_with_a_generated_key_verifies_with_openssl() {
    let server = server_with_zone();
    let dir = server.dir.path();
    let out = ok(&server.cli(&[
        "cert",
        "create",
        "--cn",
        "alice",
        "--org",
        "Acme",
        "--ou",
        "Payments",
        "--dns",
        "alice.example.com",
        "--email",
        "alice@example.com",
        "--ip",
        "10.0.0.5",
        "2001:db8::1",
        "--key-type",
        "p384",
        "--validity-days",
        "30",
        "--p12-password",
        "s3cret",
        "--out",
        "alice",
    ]));
    assert!(out.starts_with("issued certificate "), "{out}");
    assert!(out.contains("(CN=alice, O=Acme, OU=Payments)"), "{out}");
    for file in ["cert.pem", "ca.pem", "key.pem", "bundle.p12"] {
        assert!(out.contains(&format!("wrote alice/{file}\n")), "{out}");
    }
    let alice = dir.join("alice");
    #[cfg(unix)]
    {
        assert_eq!(mode(&alice.join("key.pem")), 0o600);
        assert_eq!(mode(&alice.join("bundle.p12")), 0o600);
    }
    let key = std::fs::read_to_string(alice.join("key.pem")).expect("key.pem");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");

    let verified = openssl_ok(
        &alice,
        &["verify", "-CAfile", "ca.pem", "-purpose", "sslclient", "cert.pem"],
    );
    assert!(verified.contains("cert.pem: OK"), "{verified}");
    let text = openssl_ok(&alice, &["x509", "-in", "cert.pem", "-noout", "-text"]);
    assert!(text.contains("CN = alice") || text.contains("CN=alice"), "{text}");
    assert!(text.contains("DNS:alice.example.com"), "{text}");
    assert!(text.contains("email:alice@example.com"), "{text}");
    assert!(text.contains("IP Address:10.0.0.5"), "{text}");
    assert!(text.contains("IP Address:2001:DB8:0:0:0:0:0:1"), "{text}");
    assert!(text.contains("NIST CURVE: P-384"), "{text}");
    // The key belongs to the certificate.
    let cert_pub = openssl_ok(&alice, &["x509", "-in", "cert.pem", "-noout", "-pubkey"]);
    let key_pub = openssl_ok(&alice, &["pkey", "-in", "key.pem", "-pubout"]);
    assert_eq!(cert_pub, key_pub);

    let p12 = openssl_ok(
        &alice,
        &[
            "pkcs12",
            "-in",
            "bundle.p12",
            "-info",
            "-nodes",
            "-passin",
            "pass:s3cret",
        ],
    );
    assert!(p12.contains("BEGIN CERTIFICATE"), "{p12}");
    assert!(p12.contains("PRIVATE KEY-----"), "{p12}");
    let wrong = openssl(
        &alice,
        &[
            "pkcs12",
            "-in",
            "bundle.p12",
            "-info",
            "-nodes",
            "-passin",
            "pass:wrong",
        ],
    );
    assert!(!wrong.status.success(), "a wrong password opened the bundle");

    // Existing files are never overwritten, and nothing is issued when they would be.
    let before = json(&server.cli(&["cert", "list", "--json"]));
    assert_eq!(items(&before).len(), 1);
    let err = fails(&server.cli(&["cert", "create", "--cn", "again", "--out", "alice"]));
    assert!(err.contains("already exists; refusing to overwrite"), "{err}");
    assert_eq!(items(&json(&server.cli(&["cert", "list", "--json"]))).len(), 1);
    assert_eq!(std::fs::read_to_string(alice.join("key.pem")).expect("key.pem"), key);

    // --json prints the API's record without the key, which goes only to key.pem.
    let created = json(&server.cli(&["cert", "create", "--cn", "bob", "--json", "--out", "bob"]));
    assert_eq!(str_of(&created, "common_name"), "bob");
    assert_eq!(str_of(&created, "status"), "active");
    assert!(created.get("private_key").is_none(), "{created}");
    assert!(dir.join("bob/key.pem").exists());
    assert!(!dir.join("bob/bundle.p12").exists());

    // Pages: the footer comes from the API's result_info.
    let first = ok(&server.cli(&["cert", "list", "--per-page", "1"]));
    assert_eq!(first.lines().count(), 3, "{first}");
    assert!(
        first.ends_with("page 1 of 2 (1 of 2 certificates; more with --page)\n"),
        "{first}"
    );
    let second = ok(&server.cli(&["cert", "list", "--per-page", "1", "--page", "2"]));
    assert!(second.ends_with("page 2 of 2 (1 of 2 certificates)\n"), "{second}");
    assert_ne!(first.lines().nth(1), second.lines().nth(1));
    let all = ok(&server.cli(&["cert", "list"]));
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(!all.contains("page"), "{all}");
}

#[test]
fn cert_from_a_csr_lifecycle_and_the_crl() {
    let server = server_with_zone();
    let dir = server.dir.path();
    openssl_ok(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "device.key",
            "-out",
            "device.csr",
            "-subj",
            "/CN=device-17/O=Widgets Ltd",
        ],
    );
    let out = ok(&server.cli(&["cert", "create", "--csr", "device.csr", "--out", "device"]));
    assert!(out.contains("(CN=device-17, O=Widgets Ltd)"), "{out}");
    assert!(!out.contains("key.pem"), "{out}");
    let device = dir.join("device");
    assert!(!device.join("key.pem").exists());
    let verified = openssl_ok(
        &device,
        &["verify", "-CAfile", "ca.pem", "-purpose", "sslclient", "cert.pem"],
    );
    assert!(verified.contains("cert.pem: OK"), "{verified}");
    // A CSR and subject fields do not go together.
    for extra in [["--cn", "x"], ["--ip", "10.0.0.5"]] {
        let err = fails(&server.cli(&[&["cert", "create", "--csr", "device.csr"][..], &extra[..]].concat()));
        assert!(err.contains("cannot be used with"), "{err}");
    }

    let list = ok(&server.cli(&["cert", "list"]));
    let header = list.lines().next().expect("a header");
    assert!(header.starts_with("ID") && header.contains("COMMON_NAME") && header.contains("SERIAL"));
    let row = list
        .lines()
        .find(|l| l.contains("device-17"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("Widgets Ltd") && row.ends_with("active"), "{list}");
    let certs = json(&server.cli(&["cert", "list", "--json"]));
    let id = str_of(&certs[0], "id").to_owned();
    let serial = str_of(&certs[0], "serial_number").to_owned();
    assert!(row.starts_with(&id) && row.contains(&serial), "{row}");

    let status_of = |id: &str| {
        let show = ok(&server.cli(&["cert", "show", id]));
        show.lines()
            .find_map(|l| l.strip_prefix("status"))
            .unwrap_or_else(|| panic!("{show}"))
            .trim()
            .to_owned()
    };
    let revoked = ok(&server.cli(&["cert", "revoke", &id]));
    assert_eq!(
        revoked,
        format!("revoked {id} (CN=device-17, O=Widgets Ltd): status revoked\n")
    );
    assert_eq!(status_of(&id), "revoked");
    let only_revoked = json(&server.cli(&["cert", "list", "--status", "revoked", "--json"]));
    assert_eq!(items(&only_revoked).len(), 1);
    assert_eq!(
        items(&json(&server.cli(&["cert", "list", "--status", "active", "--json"]))).len(),
        0
    );

    // The managed CA's CRL lists the revoked serial and verifies against the CA.
    let cas = json(&server.cli(&["ca", "show", "--json"]));
    let ca_id = str_of(&cas[0], "id").to_owned();
    let written = ok(&server.cli(&["ca", "crl", &ca_id, "--out", "ca.crl"]));
    assert!(
        written.starts_with(&format!("wrote the CRL of managed CA {ca_id} to ca.crl")),
        "{written}"
    );
    let crl_verify = openssl_ok(
        dir,
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "ca.crl",
            "-CAfile",
            "device/ca.pem",
            "-noout",
        ],
    );
    assert!(crl_verify.contains("verify OK"), "{crl_verify}");
    let crl_text = openssl_ok(dir, &["crl", "-inform", "DER", "-in", "ca.crl", "-noout", "-text"]);
    let wanted = serial.to_ascii_uppercase();
    assert!(
        crl_text.contains(wanted.trim_start_matches("00")),
        "{serial} not in\n{crl_text}"
    );
    // openssl itself now refuses the certificate.
    openssl_ok(dir, &["crl", "-inform", "DER", "-in", "ca.crl", "-out", "ca-crl.pem"]);
    let refused = openssl(
        dir,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "device/ca.pem",
            "-CRLfile",
            "ca-crl.pem",
            "device/cert.pem",
        ],
    );
    assert!(!refused.status.success());
    assert!(stdout(&refused).contains("revoked") || stderr(&refused).contains("revoked"));

    let reactivated = ok(&server.cli(&["cert", "reactivate", &id]));
    assert!(reactivated.ends_with("status active\n"), "{reactivated}");
    assert_eq!(status_of(&id), "active");
    // Downloading again replaces the file; the serial is gone.
    ok(&server.cli(&["ca", "crl", &ca_id, "--out", "ca.crl"]));
    let crl_text = openssl_ok(dir, &["crl", "-inform", "DER", "-in", "ca.crl", "-noout", "-text"]);
    assert!(crl_text.contains("No Revoked Certificates"), "{crl_text}");
    // The CRL is public: no token is needed to fetch it.
    ok(&server.cli_without_token(&["ca", "crl", &ca_id, "--out", "public.crl"]));
    assert_eq!(
        std::fs::read(dir.join("public.crl")).expect("public.crl"),
        std::fs::read(dir.join("ca.crl")).expect("ca.crl")
    );
    let err = fails(&server.cli_without_token(&["ca", "show"]));
    assert!(err.contains("no --token or PORTCULLIS_TOKEN, and cannot read"), "{err}");

    let shown = json(&server.cli(&["cert", "show", &id, "--json"]));
    assert_eq!(str_of(&shown, "serial_number"), serial);
    let pem = ok(&server.cli(&["cert", "show", &id, "--pem"]));
    assert_eq!(pem, std::fs::read_to_string(device.join("cert.pem")).expect("cert.pem"));
    let err = fails(&server.cli(&["cert", "revoke", "0123456789abcdef0123456789abcdef"]));
    assert!(err.contains("no client certificate"), "{err}");
    let err = fails(&server.cli(&["ca", "crl", "0123456789abcdef", "--out", "x.crl"]));
    assert!(err.contains("not found (code 7003)"), "{err}");
}

#[test]
fn ca_rotation_and_uploaded_cas() {
    let server = server_with_zone();
    let dir = server.dir.path();
    let first = json(&server.cli(&["ca", "show", "--json"]));
    assert_eq!(items(&first).len(), 1);
    let old_id = str_of(&first[0], "id").to_owned();

    let rotated = ok(&server.cli(&["ca", "rotate", "--key-type", "p384"]));
    assert!(rotated.starts_with("new active managed CA "), "{rotated}");
    let table = ok(&server.cli(&["ca", "show"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("KEY_TYPE"), "{table}");
    assert!(
        lines.iter().any(|l| l.contains("active") && l.contains("p384")),
        "{table}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&old_id) && l.contains("trusted")),
        "{table}"
    );

    // New certificates come from the new CA, and ca.pem is that CA.
    let pem = ok(&server.cli(&["ca", "show", "--pem"]));
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    ok(&server.cli(&["cert", "create", "--cn", "after-rotation", "--out", "c"]));
    assert_eq!(std::fs::read_to_string(dir.join("c/ca.pem")).expect("ca.pem"), pem);
    let verified = openssl_ok(dir, &["verify", "-CAfile", "c/ca.pem", "c/cert.pem"]);
    assert!(verified.contains("OK"), "{verified}");

    let retired = ok(&server.cli(&["ca", "retire", &old_id]));
    assert!(retired.ends_with("status retired\n"), "{retired}");
    let cas = json(&server.cli(&["ca", "show", "--json"]));
    let old = items(&cas)
        .iter()
        .find(|ca| str_of(ca, "id") == old_id)
        .expect("the old CA is still listed");
    assert_eq!(str_of(old, "status"), "retired");

    // A CA of our own, made by openssl, with an openssl-made CRL.
    openssl_ok(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "own-ca.key",
            "-out",
            "own-ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Own Test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = own\n[own]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\n\
         default_crl_days = 7\n",
    )
    .expect("ca.cnf");
    std::fs::write(dir.join("index.txt"), "").expect("index.txt");
    std::fs::write(dir.join("crlnumber"), "01\n").expect("crlnumber");
    openssl_ok(
        dir,
        &[
            "ca",
            "-config",
            "ca.cnf",
            "-gencrl",
            "-keyfile",
            "own-ca.key",
            "-cert",
            "own-ca.pem",
            "-out",
            "own.crl",
        ],
    );
    openssl_ok(
        dir,
        &["crl", "-in", "own.crl", "-outform", "DER", "-out", "own.crl.der"],
    );

    let uploaded = ok(&server.cli(&["ca", "upload", "--name", "own", "own-ca.pem"]));
    assert!(uploaded.starts_with("uploaded CA own ("), "{uploaded}");
    let list = json(&server.cli(&["ca", "list-uploaded", "--json"]));
    assert_eq!(items(&list).len(), 1);
    let up_id = str_of(&list[0], "id").to_owned();
    assert!(list[0]["crl_updated_on"].is_null(), "{list}");
    let table = ok(&server.cli(&["ca", "list-uploaded"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&up_id) && l.contains("Own Test CA")),
        "{table}"
    );

    let pem_crl = ok(&server.cli(&["ca", "crl", &up_id, "--upload", "own.crl"]));
    assert!(
        pem_crl.starts_with("uploaded 1 CRL with 0 revoked certificate(s)"),
        "{pem_crl}"
    );
    // Two CRLs from the same CA in one upload: refused, naming the CA.
    let err = fails(&server.cli(&["ca", "crl", &up_id, "--upload", "own.crl", "own.crl.der"]));
    assert!(err.contains("are both from"), "{err}");
    let der_crl = json(&server.cli(&["ca", "crl", &up_id, "--upload", "own.crl.der", "--json"]));
    assert_eq!(der_crl["entries"], 0);
    assert_eq!(str_of(&der_crl, "mtls_certificate_id"), up_id);
    let list = json(&server.cli(&["ca", "list-uploaded", "--json"]));
    assert!(list[0]["crl_updated_on"].is_string(), "{list}");
    // A CRL signed by another CA is refused with the API's message.
    let active = items(&cas)
        .iter()
        .find(|ca| str_of(ca, "status") == "active")
        .expect("an active managed CA");
    ok(&server.cli(&["ca", "crl", str_of(active, "id"), "--out", "managed.crl"]));
    let err = fails(&server.cli(&["ca", "crl", &up_id, "--upload", "managed.crl"]));
    assert!(err.contains("(code 1400)"), "{err}");
    // --out and --upload: exactly one.
    let usage = server.cli(&["ca", "crl", &up_id]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(stderr(&usage).contains("--out"), "{}", stderr(&usage));

    let deleted = ok(&server.cli(&["ca", "delete-uploaded", &up_id]));
    assert_eq!(deleted, format!("deleted uploaded CA {up_id}\n"));
    assert_eq!(items(&json(&server.cli(&["ca", "list-uploaded", "--json"]))).len(), 0);
}

#[test]
fn rules_add_list_toggle_and_remove() {
    let server = server_with_zone();
    // No entry-point ruleset yet: an empty list, not an error.
    assert_eq!(
        ok(&server.cli(&["rule", "list"])),
        "ID  ENABLED  ACTION  DESCRIPTION  EXPRESSION\n"
    );
    assert_eq!(json(&server.cli(&["rule", "list", "--json"])), Value::Array(vec![]));

    let expected = r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api" "/odd\"path\\"} and http.host in {"api.example.com"}"#;
    let added = ok(&server.cli(&[
        "rule",
        "add-mtls",
        "--path",
        "/api",
        "/odd\"path\\",
        "--host",
        "api.example.com",
    ]));
    assert!(added.starts_with("added rule "), "{added}");
    assert!(
        added.ends_with(&format!("(block) to zone example.com: {expected}\n")),
        "{added}"
    );
    let rules = json(&server.cli(&["rule", "list", "--json"]));
    assert_eq!(items(&rules).len(), 1);
    let mtls_id = str_of(&rules[0], "id").to_owned();
    assert_eq!(str_of(&rules[0], "expression"), expected);
    assert_eq!(str_of(&rules[0], "action"), "block");
    assert_eq!(str_of(&rules[0], "description"), "mTLS-enforced authentication");
    assert_eq!(rules[0]["enabled"], true);
    let table = ok(&server.cli(&["rule", "list"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&mtls_id) && l.contains("mTLS-enforced authentication")),
        "{table}"
    );

    // An invalid expression: the API's caret diagnostic, as sent, and nothing added.
    let bad = server.cli(&[
        "rule",
        "add",
        "--expression",
        r#"http.hots eq "x""#,
        "--action",
        "block",
    ]);
    let err = fails(&bad);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("(code 1400)"), "{err}");
    assert!(err.contains("1 | http.hots eq \"x\"\n"), "{err}");
    assert!(err.contains("  | ^^^^^^^^^\n"), "{err}");
    assert!(err.contains("did you mean \"http.host\"?"), "{err}");
    assert_eq!(items(&json(&server.cli(&["rule", "list", "--json"]))).len(), 1);

    let added = json(&server.cli(&[
        "rule",
        "add",
        "--expression",
        r#"http.request.uri.path eq "/health""#,
        "--action",
        "skip",
        "--skip",
        "rules",
        "--skip",
        "ratelimit",
        "--description",
        "health checks",
        "--json",
    ]));
    // --json prints the API's result: the whole ruleset.
    assert_eq!(items(&added["rules"]).len(), 2);
    assert_eq!(
        added["rules"][1]["action_parameters"],
        serde_json::json!({"ruleset": "current", "phases": ["http_ratelimit"]})
    );
    let err = fails(&server.cli(&[
        "rule",
        "add",
        "--expression",
        "true",
        "--action",
        "log",
        "--skip",
        "rules",
    ]));
    assert!(err.contains("--skip needs --action skip"), "{err}");
    let custom = json(&server.cli(&[
        "rule",
        "add",
        "--expression",
        r#"http.request.uri.path eq "/admin""#,
        "--action",
        "block",
        "--status",
        "401",
        "--content-type",
        "application/json",
        "--body",
        r#"{"error":"client certificate required"}"#,
        "--json",
    ]));
    let custom = &custom["rules"][2];
    assert_eq!(custom["action_parameters"]["response"]["status_code"], 401);
    assert_eq!(
        custom["action_parameters"]["response"]["content_type"],
        "application/json"
    );
    let err = fails(&server.cli(&[
        "rule",
        "add",
        "--expression",
        "true",
        "--action",
        "log",
        "--status",
        "401",
    ]));
    assert!(err.contains("needs --action block"), "{err}");

    let enabled_of = |id: &str| {
        let rules = json(&server.cli(&["rule", "list", "--json"]));
        items(&rules)
            .iter()
            .find(|r| str_of(r, "id") == id)
            .map(|r| r["enabled"].clone())
            .unwrap_or_else(|| panic!("no rule {id} in {rules}"))
    };
    assert_eq!(
        ok(&server.cli(&["rule", "disable", &mtls_id])),
        format!("disabled rule {mtls_id} in zone example.com\n")
    );
    assert_eq!(enabled_of(&mtls_id), false);
    let table = ok(&server.cli(&["rule", "list"]));
    assert!(
        table.lines().any(|l| l.starts_with(&mtls_id) && l.contains(" false ")),
        "{table}"
    );
    ok(&server.cli(&["rule", "enable", &mtls_id]));
    assert_eq!(enabled_of(&mtls_id), true);

    assert_eq!(
        ok(&server.cli(&["rule", "remove", &mtls_id])),
        format!("removed rule {mtls_id} from zone example.com\n")
    );
    let rules = json(&server.cli(&["rule", "list", "--json"]));
    assert_eq!(items(&rules).len(), 2);
    assert!(items(&rules).iter().all(|r| str_of(r, "id") != mtls_id));
    let err = fails(&server.cli(&["rule", "remove", &mtls_id]));
    assert!(err.contains(&format!("no rule \"{mtls_id}\" in any zone")), "{err}");
}

#[test]
fn tokens_can_be_limited_to_a_zone_an_address_and_a_time() {
    let server = server_with_zone();
    ok(&server.cli(&["zone", "add", "example.net"]));
    let token = json(&server.cli(&[
        "token",
        "create",
        "--scope",
        "write",
        "--name",
        "team-net",
        "--zone",
        "example.net",
        "--expires-in",
        "30d",
        "--allow-ip",
        "127.0.0.0/8",
        "--json",
    ]));
    let secret = str_of(&token, "value").to_owned();
    assert!(str_of(&token, "expires_on").starts_with("20"), "{token}");
    let tokens = ok(&server.cli(&["token", "list"]));
    assert!(
        tokens.lines().any(|l| l.contains("team-net") && l.contains("active")),
        "{tokens}"
    );
    // It sees and changes its zone only.
    let zones = ok(&server.cli(&["zone", "list", "--token", &secret]));
    assert!(
        zones.contains("example.net") && !zones.contains("example.com"),
        "{zones}"
    );
    ok(&server.cli(&[
        "host",
        "add",
        "api.example.net",
        "--origin",
        "http://127.0.0.1:9",
        "--zone",
        "example.net",
        "--token",
        &secret,
    ]));
    let err = fails(&server.cli(&["zone", "add", "example.org", "--token", &secret]));
    assert!(err.contains("only reach its zones"), "{err}");
    // From elsewhere it does not work.
    let far = json(&server.cli(&[
        "token",
        "create",
        "--scope",
        "read",
        "--name",
        "far",
        "--allow-ip",
        "192.0.2.0/24",
        "--json",
    ]));
    let err = fails(&server.cli(&["zone", "list", "--token", str_of(&far, "value")]));
    assert!(err.contains("may not be used from this address"), "{err}");
    let err = fails(&server.cli(&["token", "create", "--scope", "read", "--expires-in", "soon"]));
    assert!(err.contains("a number and a unit"), "{err}");
}

#[test]
fn a_read_token_cannot_write() {
    let server = server_with_zone();
    let token = json(&server.cli(&["token", "create", "--scope", "read", "--name", "viewer", "--json"]));
    let secret = str_of(&token, "value").to_owned();
    let tokens = ok(&server.cli(&["token", "list"]));
    assert!(
        tokens.lines().any(|l| l.contains("viewer") && l.contains("read")),
        "{tokens}"
    );

    let read = ok(&server.cli(&["zone", "list", "--token", &secret]));
    assert!(read.contains("example.com"), "{read}");
    for args in [
        &["zone", "add", "example.net"][..],
        &["cert", "create", "--cn", "x", "--out", "ro"],
        &["rule", "add-mtls", "--path", "/api"],
        &["ca", "rotate"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--token", &secret]);
        let err = fails(&server.cli(&args));
        assert!(
            err.contains("error: Unauthorized to access requested resource: this token has read scope (code 9109)"),
            "{args:?}: {err}"
        );
    }
    assert!(!server.dir.path().join("ro/cert.pem").exists());
    let zones = json(&server.cli(&["zone", "list", "--json"]));
    assert_eq!(items(&zones).len(), 1);

    let err = fails(&server.cli(&["zone", "list", "--token", "pct_not-a-token"]));
    assert!(err.contains("(code 10000)"), "{err}");

    // The audit log names the writes and who made them; the refused ones wrote nothing.
    let audit = ok(&server.cli(&["audit", "--limit", "5"]));
    let mut lines = audit.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("WHEN") && h.contains("ACTOR")),
        "{audit}"
    );
    let newest = lines.next().expect("an entry");
    assert!(
        newest.starts_with("20")
            && newest.contains(" token ")
            && newest.contains("create  api_token")
            && newest.ends_with("read"),
        "{audit}"
    );
    assert!(!audit.contains("example.net"), "{audit}");
    let entries = json(&server.cli(&["audit", "--json", "--token", &secret]));
    assert!(
        items(&entries).iter().any(|e| e["resource"]["type"] == "zone"),
        "{entries}"
    );
}

/// The subject of the certificate the edge presents for `sni`.
fn presented_subject(server: &Server, sni: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", server.edge_port)])
        .args(["-servername", sni])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client runs");
    stdout(&out)
        .lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_default()
        .to_owned()
}

#[track_caller]
fn wait_for_subject(server: &Server, sni: &str, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = presented_subject(server, sni);
        if got.contains(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edge presents {got:?}, not {want:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `server-cert upload|list|replace|remove`: what certbot's deploy hook would run, checked by what the edge presents.
#[test]
fn server_certificates_upload_replace_and_remove() {
    let server = server_with_zone();
    let dir = server.dir.path();
    ok(&server.cli(&["host", "add", "app.example.com", "--origin", "http://127.0.0.1:9"]));
    for name in ["first", "second"] {
        openssl_ok(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-days",
                "30",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "subjectAltName=DNS:app.example.com",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ],
        );
    }
    // Until a certificate is uploaded, the development CA's is presented.
    assert!(!presented_subject(&server, "app.example.com").contains("first"));
    let out = ok(&server.cli(&["server-cert", "upload", "first.pem", "first.key"]));
    assert!(
        out.starts_with("uploaded server certificate ") && out.contains(" for app.example.com, issuer CN=first"),
        "{out}"
    );
    wait_for_subject(&server, "app.example.com", "CN = first");
    let listed = json(&server.cli(&["server-cert", "list", "--json"]));
    let id = str_of(&items(&listed)[0], "id").to_owned();
    assert!(
        ok(&server.cli(&["server-cert", "list"]))
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("app.example.com"))
    );

    // A key that is not the certificate's is refused and changes nothing.
    let err = fails(&server.cli(&["server-cert", "replace", &id, "second.pem", "first.key"]));
    assert!(err.contains("does not match the certificate"), "{err}");
    let out = ok(&server.cli(&["server-cert", "replace", &id, "second.pem", "second.key"]));
    assert!(
        out.starts_with(&format!(
            "replaced server certificate {id} for app.example.com, issuer CN=second"
        )),
        "{out}"
    );
    wait_for_subject(&server, "app.example.com", "CN = second");
    assert_eq!(items(&json(&server.cli(&["server-cert", "list", "--json"]))).len(), 1);

    assert_eq!(
        ok(&server.cli(&["server-cert", "remove", &id])),
        format!("removed server certificate {id}\n")
    );
    assert!(items(&json(&server.cli(&["server-cert", "list", "--json"]))).is_empty());
    let err = fails(&server.cli(&["server-cert", "upload", "missing.pem", "second.key"]));
    assert!(err.contains("cannot read missing.pem"), "{err}");
}

/// `serve --public-listen`: the CRL distribution point written into issued certificates is served by a public
/// listener that serves nothing but CRLs and health checks, and follows revocations.
#[test]
fn the_public_listener_serves_crls_and_health_checks_and_nothing_else() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let server = Server::start_with(
        crate::support::scratch(),
        &[
            "--public-listen",
            &listen,
            "--crl-base-url",
            &base,
            "--ocsp-base-url",
            &base,
        ],
        &[],
    );
    ok(&server.cli(&["zone", "add", "example.com"]));
    let dir = server.dir.path();
    ok(&server.cli(&["cert", "create", "--cn", "sensor-1", "--out", "sensor"]));
    let cas = json(&server.cli(&["ca", "show", "--json"]));
    let ca_id = str_of(&cas[0], "id").to_owned();
    let url = format!("{base}/crl/{ca_id}.crl");
    let text = openssl_ok(
        &dir.join("sensor"),
        &["x509", "-in", "cert.pem", "-noout", "-ext", "crlDistributionPoints"],
    );
    assert!(text.contains(&format!("URI:{url}")), "{text}");

    let fetch = |name: &str| {
        let out = std::process::Command::new("curl")
            .current_dir(dir)
            .args(["-sf", "--max-time", "20", "-o", name, &url])
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "curl {url}: {}", stderr(&out));
        openssl_ok(
            dir,
            &[
                "crl",
                "-inform",
                "DER",
                "-in",
                name,
                "-CAfile",
                "sensor/ca.pem",
                "-noout",
                "-text",
            ],
        )
    };
    let first = fetch("first.crl");
    assert!(
        first.contains("verify OK") && first.contains("No Revoked Certificates"),
        "{first}"
    );
    // The same listener is the CA's OCSP responder, named in the certificate; openssl asks it (POST) and
    // checks the answer's signature against the CA.
    let ocsp_url = format!("{base}/ocsp/{ca_id}");
    let uri = openssl_ok(&dir.join("sensor"), &["x509", "-in", "cert.pem", "-noout", "-ocsp_uri"]);
    assert_eq!(uri.trim(), ocsp_url);
    let ask = |extra: &[&str]| {
        let mut args = vec![
            "ocsp", "-issuer", "ca.pem", "-cert", "cert.pem", "-url", &ocsp_url, "-CAfile", "ca.pem",
        ];
        args.extend_from_slice(extra);
        let out = std::process::Command::new("openssl")
            .current_dir(dir.join("sensor"))
            .args(&args)
            .output()
            .expect("openssl runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let answer = ask(&[]);
    assert!(
        answer.contains("Response verify OK") && answer.contains("cert.pem: good"),
        "{answer}"
    );
    assert!(answer.contains("Next Update:"), "{answer}");

    let listed = json(&server.cli(&["cert", "list", "--json"]));
    let id = str_of(&items(&listed)[0], "id").to_owned();
    let serial = str_of(&items(&listed)[0], "serial_number").to_ascii_uppercase();
    ok(&server.cli(&["cert", "revoke", &id]));
    // The public listener rechecks the store at most every 2 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let revoked = fetch("revoked.crl");
        if revoked.contains(serial.trim_start_matches('0')) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{serial} not in {revoked}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let answer = ask(&[]);
    assert!(
        answer.contains("Response verify OK") && answer.contains("cert.pem: revoked"),
        "{answer}"
    );
    // GET, as RFC 6960 A.1 allows for small requests: the request base64-encoded in the path.
    openssl_ok(
        &dir.join("sensor"),
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            "cert.pem",
            "-no_nonce",
            "-reqout",
            "req.der",
        ],
    );
    let request = openssl_ok(&dir.join("sensor"), &["base64", "-A", "-in", "req.der"])
        .trim()
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let out = std::process::Command::new("curl")
        .current_dir(dir.join("sensor"))
        .args([
            "-sf",
            "--max-time",
            "20",
            "-o",
            "resp.der",
            &format!("{ocsp_url}/{request}"),
        ])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "GET {ocsp_url}/…: {}", stderr(&out));
    let answer = openssl_ok(
        &dir.join("sensor"),
        &[
            "ocsp", "-respin", "resp.der", "-issuer", "ca.pem", "-cert", "cert.pem", "-CAfile", "ca.pem",
        ],
    );
    assert!(answer.contains("cert.pem: revoked"), "{answer}");
    // Garbage is an OCSP error, not a crash or an HTTP error page.
    assert_eq!(
        ocsp_post(dir, "not der", &ocsp_url),
        ("200".to_owned(), vec![0x30, 0x03, 0x0a, 0x01, 0x01])
    );
    // A CA that is not ours: nobody here may answer for it (unauthorized).
    assert_eq!(
        ocsp_post(
            dir,
            "@sensor/req.der",
            &format!("{base}/ocsp/00000000000000000000000000000000")
        ),
        ("200".to_owned(), vec![0x30, 0x03, 0x0a, 0x01, 0x06])
    );

    // Health checks for load balancers.
    let (_, status, body) = crate::support::curl(dir, &[&format!("{base}/healthz")]);
    assert_eq!((status.as_str(), body.as_str()), ("200", "ok\n"));
    let (_, status, body) = crate::support::curl(dir, &[&format!("{base}/readyz")]);
    assert_eq!((status.as_str(), body.as_str()), ("200", "ready\n"));
    // Nothing of the admin listener is there.
    for path in [
        "/client/v4/zones",
        "/metrics",
        "/dashboard/",
        "/crl/ffff.crl",
        "/crl/00000000000000000000000000000000.crl",
        "/client/v4/openapi.json",
    ] {
        let (_, status, _) = crate::support::curl(dir, &[&format!("{base}{path}")]);
        assert_eq!(status, "404", "{path}");
    }
    let (_, status, _) = crate::support::curl(dir, &["-X", "POST", &url]);
    assert_eq!(status, "405");
    // A head over the 16 KiB limit is refused, not buffered.
    let big = format!("X-Big: {}", "a".repeat(20_000));
    let (_, status, _) = crate::support::curl(dir, &["-H", &big, &url]);
    assert_eq!(status, "431");
}

/// POSTs `data` (curl's `--data-binary` argument: text, or `@FILE`) to the OCSP responder at `url` from `dir`; the
/// HTTP status and the answer's bytes.
fn ocsp_post(dir: &Path, data: &str, url: &str) -> (String, Vec<u8>) {
    let out = std::process::Command::new("curl")
        .current_dir(dir)
        .args(["-s", "--max-time", "20", "-o", "ocsp-answer.der", "-w", "%{http_code}"])
        .args([
            "--data-binary",
            data,
            "-H",
            "Content-Type: application/ocsp-request",
            url,
        ])
        .output()
        .expect("curl runs");
    let answer = std::fs::read(dir.join("ocsp-answer.der")).unwrap_or_default();
    let _ = std::fs::remove_file(dir.join("ocsp-answer.der"));
    (String::from_utf8_lossy(&out.stdout).into_owned(), answer)
}

/// `portcullis backup` copies the database while the server runs; a server started on the copy (with the same
/// master key) has everything, and can still use the CA's sealed key.
#[test]
fn a_backup_taken_while_serving_restores_everything() {
    let server = server_with_zone();
    ok(&server.cli(&["cert", "create", "--cn", "before-backup", "--out", "before"]));
    let dir = server.dir.path();
    let out = dir.join("backup.db");
    let data = server.data_dir();
    let data = data.to_str().expect("utf-8");
    let backed_up = ok(&crate::support::portcullis(&[
        "backup",
        "--data-dir",
        data,
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(backed_up.contains("master key"), "{backed_up}");
    assert_eq!(mode(&out) & 0o777, 0o600, "the copy is as private as the database");
    // Never over an existing file.
    let again = crate::support::portcullis(&["backup", "--data-dir", data, "--out", out.to_str().expect("utf-8")]);
    assert!(stderr(&again).contains("exists already"), "{}", stderr(&again));
    // Nor for PostgreSQL, which has its own tools.
    let pg = crate::support::portcullis(&[
        "backup",
        "--data-dir",
        data,
        "--out",
        "x.db",
        "--database-url",
        "postgres://localhost/x",
    ]);
    assert!(stderr(&pg).contains("pg_dump"), "{}", stderr(&pg));
    // Changes after the backup are not in it.
    ok(&server.cli(&["cert", "create", "--cn", "after-backup", "--out", "after"]));

    let restored = crate::support::scratch();
    let restored_data = restored.path().join("data");
    std::fs::create_dir_all(&restored_data).expect("a data directory");
    std::fs::copy(&out, restored_data.join("portcullis.db")).expect("the backup in place");
    for file in ["master.key", "admin-token"] {
        std::fs::copy(server.data_dir().join(file), restored_data.join(file)).expect("copied");
    }
    drop(server);
    let server = Server::start_with(restored, &[], &[]);
    let certs = json(&server.cli(&["cert", "list", "--json"]));
    let names: Vec<&str> = items(&certs).iter().map(|c| str_of(c, "common_name")).collect();
    assert_eq!(names, ["before-backup"]);
    // The CA's sealed key opens with the master key: it still issues.
    ok(&server.cli(&["cert", "create", "--cn", "after-restore", "--out", "restored"]));
}

/// A wildcard hostname cannot be the default host, and the refusal comes before anything is written.
#[test]
fn a_wildcard_default_host_is_refused_before_the_data_directory_is_made() {
    let dir = crate::support::scratch();
    let data = dir.path().join("data");
    let out = crate::support::portcullis(&[
        "serve",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--default-host",
        "*.example.com",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a wildcard hostname cannot be the default host"),
        "{}",
        stderr(&out)
    );
    assert!(!data.exists(), "nothing was created");
}

/// The systemd unit in `contrib/` passes `systemd-analyze verify` without a warning, and every option its
/// `ExecStart` gives is one `portcullis serve` takes.
#[test]
fn the_systemd_unit_verifies_and_gives_only_real_options() {
    let options = check_units(&["portcullis.service"], &["serve"]);
    assert!(options.len() >= 4, "{options:?}");
}

/// The device's renewal unit and timer in `contrib/` verify, and give `cert renew` only options it has.
#[test]
fn the_renewal_unit_and_timer_verify_and_give_only_real_options() {
    let options = check_units(
        &["portcullis-renew.service", "portcullis-renew.timer"],
        &["cert", "renew"],
    );
    assert!(
        options.iter().any(|o| o == "--within-days") && options.iter().any(|o| o == "--replace"),
        "{options:?}"
    );
}

/// That `files` of `contrib/systemd` (the service first) pass `systemd-analyze verify` with the binary of this test
/// run in place of `/usr/local/bin/portcullis`, and that `portcullis COMMAND --help` knows every option of the
/// service's `ExecStart`; those options.
fn check_units(files: &[&str], command: &[&str]) -> Vec<String> {
    let dir = crate::support::repo_root().join("contrib/systemd");
    let unit = std::fs::read_to_string(dir.join(files[0])).expect("the unit file");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut args = command.to_vec();
    args.push("--help");
    let help = ok(&crate::support::portcullis(&args));
    let options: Vec<String> = exec
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(str::to_owned)
        .collect();
    for option in &options {
        assert!(
            help.contains(&format!("{option} ")) || help.contains(&format!("{option}\n")),
            "`portcullis {}` has no {option}:\n{help}",
            command.join(" ")
        );
    }
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let copies: Vec<_> = files
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(name)).expect("a unit file");
            let copy = scratch.path().join(name);
            std::fs::write(
                &copy,
                text.replace("/usr/local/bin/portcullis", env!("CARGO_BIN_EXE_portcullis")),
            )
            .expect("write");
            copy
        })
        .collect();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
        .expect("systemd-analyze (Debian's systemd package) runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        stderr(&out)
    );
    options
}

/// The Prometheus alerting rules in `contrib/` pass `promtool check rules`, their unit tests pass `promtool test
/// rules`, and every metric they name is one Portcullis exports (so a renamed metric cannot leave an alert that
/// never fires).
#[test]
fn the_prometheus_alerts_check_pass_their_tests_and_name_real_metrics() {
    let dir = crate::support::repo_root().join("contrib/prometheus");
    for args in [
        ["check", "rules", "portcullis-alerts.yml"],
        ["test", "rules", "portcullis-alerts.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian's prometheus package) runs");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    fn sources(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).expect("read"));
            }
        }
    }
    let mut code = String::new();
    for part in ["src", "crates"] {
        sources(&crate::support::repo_root().join(part), &mut code);
    }
    let rules = std::fs::read_to_string(dir.join("portcullis-alerts.yml")).expect("the rules");
    let mut names: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("portcullis_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");
    // The failure counters the alerts watch with increase() are there from the start, at 0, and the first snapshot
    // build succeeded (with the hourly tidy of expired certificates on, which also runs at start).
    let server = Server::start_with(crate::support::scratch(), &["--tidy-expired-after", "30"], &[]);
    let (_, status, metrics) = crate::support::curl(server.dir.path(), &[&format!("{}/metrics", server.api())]);
    assert_eq!(status, "200");
    for series in [
        "portcullis_snapshot_builds_failed_total 0",
        "portcullis_security_events_dropped_total 0",
        "portcullis_crl_fetch_failures_total 0",
        "portcullis_acme_orders_total{outcome=\"failed\"} 0",
        "portcullis_acme_orders_total{outcome=\"issued\"} 0",
        "portcullis_snapshot_build_failing 0",
    ] {
        assert!(metrics.lines().any(|l| l == series), "{series} in\n{metrics}");
    }
    for name in names {
        assert!(
            code.contains(&format!("\"{name}\"")) || code.contains(&format!("{name}{{")),
            "the alerts name {name}, which Portcullis does not export"
        );
    }
}

/// The admin listener's certificate for 127.0.0.1, issued in `dir` by the CA of `foreign_client_cert` (written over
/// `admin.pem` and `admin.key` each time).
fn admin_server_cert(dir: &Path, cn: &str) {
    let subject = format!("/CN={cn}");
    openssl_ok(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "admin.key",
            "-out",
            "admin.csr",
            "-subj",
            &subject,
        ],
    );
    std::fs::write(
        dir.join("admin.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write");
    openssl_ok(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "admin.csr",
            "-CA",
            "foreign-ca.pem",
            "-CAkey",
            "foreign-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "admin.ext",
            "-out",
            "admin.pem",
        ],
    );
}

/// The admin API served over TLS with client certificates required (`serve --admin-tls-cert --admin-tls-key
/// --admin-client-ca`): the CLI reaches it with `--api https://… --api-ca --api-cert --api-key`; no client without
/// a certificate from the admin CA gets a request in (a certificate of the edge's managed CA included); a renewed
/// certificate written over the files is served from the next connection on, and a broken one is not.
#[test]
fn the_admin_api_over_tls_takes_only_clients_with_an_admin_certificate() {
    let dir = crate::support::scratch();
    let (client_cert, client_key) = crate::support::foreign_client_cert(dir.path());
    let (client_cert, client_key) = (client_cert.display().to_string(), client_key.display().to_string());
    admin_server_cert(dir.path(), "admin-one");
    let server = Server::start_with(
        dir,
        &[
            "--admin-tls-cert",
            "admin.pem",
            "--admin-tls-key",
            "admin.key",
            "--admin-client-ca",
            "foreign-ca.pem",
        ],
        &[],
    );
    assert!(server.api().starts_with("https://"), "{}", server.api());
    let tls = [
        "--api-ca",
        "foreign-ca.pem",
        "--api-cert",
        &client_cert,
        "--api-key",
        &client_key,
    ];
    let with = |args: &[&str]| server.cli(&[args, &tls[..]].concat());
    let out = ok(&with(&["zone", "add", "example.com"]));
    assert!(out.starts_with("created zone example.com ("), "{out}");
    assert!(ok(&with(&["zone", "list"])).contains("example.com"));

    // Without the client certificate, or without trusting the admin CA, nothing is read.
    let err = stderr(&server.cli(&["zone", "list", "--api-ca", "foreign-ca.pem"]));
    assert!(err.contains("cannot reach the admin API over TLS"), "{err}");
    let err = stderr(&server.cli(&["zone", "list", "--api-cert", &client_cert, "--api-key", &client_key]));
    assert!(err.contains("cannot reach") && err.contains("UnknownIssuer"), "{err}");
    let curl = |extra: &[&str]| {
        let url = format!("{}/client/v4/zones", server.api());
        let token = std::fs::read_to_string(server.data_dir().join("admin-token")).expect("token");
        let auth = format!("Authorization: Bearer {}", token.trim());
        let mut args = vec!["--cacert", "foreign-ca.pem", "-H", &auth];
        args.extend(extra);
        args.push(&url);
        crate::support::curl(server.dir.path(), &args)
    };
    let (code, status, body) = curl(&["--cert", &client_cert, "--key", &client_key]);
    assert_eq!((code, status.as_str()), (Some(0), "200"), "{body}");
    // The dashboard's session cookie is Secure here.
    let token = std::fs::read_to_string(server.data_dir().join("admin-token")).expect("token");
    let login = format!("{}/dashboard/login", server.api());
    let form = format!("token={}", token.trim());
    let args = [
        "--cacert",
        "foreign-ca.pem",
        "--cert",
        &client_cert,
        "--key",
        &client_key,
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--data",
        &form,
        &login,
    ];
    let out = std::process::Command::new("curl")
        .args(["-s"])
        .args(args)
        .current_dir(server.dir.path())
        .output()
        .expect("curl runs");
    let head = stdout(&out).to_ascii_lowercase();
    let cookie = head.lines().find(|l| l.starts_with("set-cookie:")).unwrap_or_default();
    assert!(
        cookie.contains("portcullis_session=") && cookie.contains("; secure"),
        "{head}"
    );
    let (code, _, _) = curl(&[]);
    assert_ne!(code, Some(0), "no client certificate");
    // A certificate of the edge's managed CA is the edge's clients', not the admin API's.
    ok(&with(&["cert", "create", "--cn", "device-1", "--out", "."]));
    let (code, _, _) = curl(&["--cert", "cert.pem", "--key", "key.pem"]);
    assert_ne!(code, Some(0), "a managed-CA certificate");

    // A renewal written over the files: served from a connection a moment later, without a restart.
    let presented = || {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", server.port)])
            .args(["-cert", &client_cert, "-key", &client_key])
            .current_dir(server.dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client runs");
        stdout(&out)
            .lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(presented().contains("admin-one"), "{}", presented());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let dir = server.dir.path();
    admin_server_cert(dir, "admin-two");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !presented().contains("admin-two") {
        assert!(std::time::Instant::now() < deadline, "still {}", presented());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A key that does not belong to the certificate: logged, and the renewed pair stays in service.
    std::fs::copy(dir.join("foreign-key.pem"), dir.join("admin.key")).expect("copy");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(presented().contains("admin-two"), "{}", presented());
    assert!(ok(&with(&["zone", "list"])).contains("example.com"));
    let log = std::fs::read_to_string(dir.join("server.log")).expect("log");
    assert!(log.contains("does not load"), "{log}");
}

/// A zone's client certificate policy: how long its certificates may live (also their default validity) and which
/// names they may carry, checked before anything is signed; only an account-wide token may change it, so a token
/// limited to the zone (a `certificates` token for a provisioning service, say) stays inside it.
#[test]
fn a_zones_client_certificate_policy_bounds_what_is_issued() {
    let server = server_with_zone();
    let shown = ok(&server.cli(&["zone", "cert-policy", "example.com"]));
    assert_eq!(
        shown,
        "zone example.com: client certificates of any validity; names: any\n"
    );
    let shown = ok(&server.cli(&[
        "zone",
        "cert-policy",
        "example.com",
        "--max-validity-days",
        "30",
        "--allow",
        "cn:device-*",
        "--allow",
        "dns:*.devices.example.com",
    ]));
    assert_eq!(
        shown,
        "zone example.com: client certificates valid for at most 30 days; names: cn:device-*, dns:*.devices.example.com\n"
    );

    // Within the policy: issued, for 30 days when the request names no validity.
    let issued = json(&server.cli(&[
        "cert",
        "create",
        "--cn",
        "device-1",
        "--dns",
        "a.devices.example.com",
        "--out",
        ".",
        "--json",
    ]));
    assert_eq!(issued["validity_days"], 30, "{issued}");
    let end = openssl_ok(
        server.dir.path(),
        &["x509", "-in", "cert.pem", "-noout", "-subject", "-enddate"],
    );
    assert!(end.contains("CN=device-1") || end.contains("CN = device-1"), "{end}");

    // Outside it: refused, naming what is wrong, and nothing is recorded.
    let err = fails(&server.cli(&["cert", "create", "--cn", "admin", "--out", "r1"]));
    assert!(
        err.contains("the name \"cn:admin\" is not allowed by the zone's client certificate policy"),
        "{err}"
    );
    let err = fails(&server.cli(&[
        "cert",
        "create",
        "--cn",
        "device-2",
        "--dns",
        "evil.example.org",
        "--out",
        "r2",
    ]));
    assert!(err.contains("\"dns:evil.example.org\""), "{err}");
    let err = fails(&server.cli(&[
        "cert",
        "create",
        "--cn",
        "device-3",
        "--validity-days",
        "90",
        "--out",
        "r3",
    ]));
    assert!(
        err.contains("validity_days 90 is more than the zone's client certificate policy allows (30"),
        "{err}"
    );
    // From a CSR too: its names are checked before it is signed.
    openssl_ok(
        server.dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "csr.key",
            "-out",
            "admin.csr",
            "-subj",
            "/CN=admin",
        ],
    );
    let err = fails(&server.cli(&["cert", "create", "--csr", "admin.csr", "--out", "r4"]));
    assert!(err.contains("\"cn:admin\""), "{err}");
    let listed = json(&server.cli(&["cert", "list", "--json"]));
    assert_eq!(items(&listed).len(), 1, "only device-1 was issued: {listed}");
    // A certificate revoked, then the policy made stricter: reactivating it is refused.
    let device_1 = str_of(&items(&listed)[0], "id").to_owned();
    ok(&server.cli(&["cert", "revoke", &device_1]));
    ok(&server.cli(&["zone", "cert-policy", "example.com", "--max-validity-days", "7"]));
    let err = fails(&server.cli(&["cert", "reactivate", &device_1]));
    assert!(
        err.contains("issued for 30 days, more than the zone's client certificate policy allows (7"),
        "{err}"
    );
    ok(&server.cli(&["zone", "cert-policy", "example.com", "--max-validity-days", "30"]));

    // A token limited to the zone issues within the policy but cannot change it.
    let token = json(&server.cli(&[
        "token",
        "create",
        "--scope",
        "write",
        "--name",
        "zone-team",
        "--zone",
        "example.com",
        "--json",
    ]));
    let secret = str_of(&token, "value").to_owned();
    let err = fails(&server.cli(&["zone", "cert-policy", "example.com", "--clear", "--token", &secret]));
    assert!(err.contains("only an account-wide token may change it"), "{err}");
    ok(&server.cli(&[
        "cert",
        "create",
        "--cn",
        "device-4",
        "--zone",
        "example.com",
        "--out",
        "d4",
        "--token",
        &secret,
    ]));

    let shown = ok(&server.cli(&["zone", "cert-policy", "example.com", "--clear"]));
    assert_eq!(
        shown,
        "zone example.com: client certificates of any validity; names: any\n"
    );
    ok(&server.cli(&["cert", "create", "--cn", "admin", "--out", "admin"]));
    let err = fails(&server.cli(&["zone", "cert-policy", "example.com", "--max-validity-days", "0"]));
    assert!(err.contains("max_validity_days must be between 1 and 5475"), "{err}");

    // In an apply file, and back out of export.
    let file = server.dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "[[zones]]\nname = \"example.com\"\n\n[zones.client_certificate_policy]\nmax_validity_days = 7\n\
         allowed_names = [\"uri:spiffe://example.com/*\"]\n",
    )
    .expect("write");
    let applied = ok(&server.cli(&["apply", file.to_str().expect("utf-8")]));
    assert!(
        applied.contains(
            "~ example.com client_certificate_policy: {\"max_validity_days\":7,\"allowed_names\":[\"uri:spiffe://example.com/*\"]} (was {})"
        ),
        "{applied}"
    );
    assert!(ok(&server.cli(&["apply", file.to_str().expect("utf-8")])).starts_with("no changes"));
    let exported = ok(&server.cli(&["export", "--zone", "example.com"]));
    assert!(
        exported.contains(
            "[zones.client_certificate_policy]\nmax_validity_days = 7\nallowed_names = [\"uri:spiffe://example.com/*\"]"
        ),
        "{exported}"
    );
}

/// EST re-enrollment over the EST listener (`serve --est-listen`): curl presents the certificate it renews and posts
/// a CSR (base64 DER, as RFC 7030 sends it) for a new key with the same names; the answer is a certs-only PKCS#7 that
/// openssl reads, holding a certificate for the new key from the managed CA. Refused, each with its reason: no
/// client certificate, a certificate of another CA, a CSR with other names, a second renewal of one certificate, a
/// revoked certificate. `cacerts` gives the managed CA.
#[test]
fn clients_renew_their_own_certificates_over_est() {
    use base64::Engine as _;
    let dir = crate::support::scratch();
    let (foreign_cert, foreign_key) = crate::support::foreign_client_cert(dir.path());
    let (foreign_cert, foreign_key) = (foreign_cert.display().to_string(), foreign_key.display().to_string());
    admin_server_cert(dir.path(), "est-server");
    let server = Server::start_with(
        dir,
        &[
            "--est-listen",
            "127.0.0.1:0",
            "--est-tls-cert",
            "admin.pem",
            "--est-tls-key",
            "admin.key",
            "--est-renew-after",
            "1",
        ],
        &[],
    );
    let dir = server.dir.path();
    let base = format!(
        "https://127.0.0.1:{}/.well-known/est",
        server.est_port.expect("the EST listener's port")
    );
    ok(&server.cli(&["zone", "add", "example.com"]));
    for name in ["d1", "d2"] {
        ok(&server.cli(&[
            "cert",
            "create",
            "--cn",
            &format!("device-{name}"),
            "--dns",
            &format!("{name}.devices.example.com"),
            "--out",
            name,
        ]));
    }
    let est = |args: &[&str], path: &str| {
        let mut all = vec!["--cacert", "foreign-ca.pem"];
        all.extend_from_slice(args);
        let url = format!("{base}/{path}");
        all.push(&url);
        crate::support::curl(dir, &all)
    };
    // A CSR for a new key, as EST sends it: base64 of the DER.
    let csr = |name: &str, subject: &str, san: &str| {
        openssl_ok(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-subj",
                subject,
                "-addext",
                &format!("subjectAltName={san}"),
                "-outform",
                "DER",
                "-out",
                &format!("{name}.csr.der"),
            ],
        );
        let der = std::fs::read(dir.join(format!("{name}.csr.der"))).expect("csr");
        std::fs::write(
            dir.join(format!("{name}.b64")),
            base64::engine::general_purpose::STANDARD.encode(der),
        )
        .expect("write");
        format!("@{name}.b64")
    };
    // The answer's certificates, PEM, through openssl.
    let certs_of = |name: &str, body: &str| {
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .unwrap_or_else(|e| panic!("base64 ({e}): {body}"));
        std::fs::write(dir.join(format!("{name}.p7")), der).expect("write");
        openssl_ok(
            dir,
            &["pkcs7", "-inform", "DER", "-in", &format!("{name}.p7"), "-print_certs"],
        )
    };
    let post = ["-H", "Content-Type: application/pkcs10", "--data-binary"];

    let (_, status, body) = est(&[], "cacerts");
    assert_eq!(status, "200", "{body}");
    let cas = certs_of("cacerts", &body);
    assert!(cas.contains("Portcullis Managed CA"), "{cas}");

    let new1 = csr("new1", "/CN=device-d1", "DNS:d1.devices.example.com");
    let mut args = post.to_vec();
    args.push(&new1);
    let (_, status, body) = est(&args, "simplereenroll");
    assert_eq!(status, "401", "no client certificate: {body}");
    assert!(body.contains("needs the certificate it renews"), "{body}");

    // Certificates renew from a second after issuance in this server.
    let aged = || std::thread::sleep(std::time::Duration::from_millis(1100));
    let with = |cert: &'static str, key: &'static str, data: &str| -> (String, String) {
        aged();
        let (_, status, body) = est(
            &[
                "--cert",
                cert,
                "--key",
                key,
                "-H",
                "Content-Type: application/pkcs10",
                "--data-binary",
                data,
            ],
            "simplereenroll",
        );
        (status, body)
    };
    let (status, body) = with("d1/cert.pem", "d1/key.pem", &new1);
    assert_eq!(status, "200", "{body}");
    std::fs::write(dir.join("new1.pem"), certs_of("new1", &body)).expect("write");
    let verified = openssl_ok(dir, &["verify", "-CAfile", "d1/ca.pem", "new1.pem"]);
    assert!(verified.contains(": OK"), "{verified}");
    let text = openssl_ok(
        dir,
        &[
            "x509",
            "-in",
            "new1.pem",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
        ],
    );
    assert!(
        text.contains("CN = device-d1") && text.contains("DNS:d1.devices.example.com"),
        "{text}"
    );
    let key_of = |args: &[&str]| openssl_ok(dir, args);
    assert_eq!(
        key_of(&["x509", "-in", "new1.pem", "-noout", "-pubkey"]),
        key_of(&["pkey", "-in", "new1.key", "-pubout"]),
        "the new certificate is for the new key"
    );
    let list = json(&server.cli(&["cert", "list", "--json"]));
    assert_eq!(items(&list).len(), 3, "{list}");

    // Once per certificate; the new one renews in turn, which revokes the first (two active per line at most).
    let again = csr("again", "/CN=device-d1", "DNS:d1.devices.example.com");
    let (status, body) = with("d1/cert.pem", "d1/key.pem", &again);
    assert_eq!(status, "409", "{body}");
    assert!(body.contains("was already renewed"), "{body}");
    let (status, body) = with("new1.pem", "new1.key", &again);
    assert_eq!(status, "200", "{body}");
    // The line shows in `cert show`, and revoking a renewed certificate warns of the one that replaced it.
    let fingerprint = openssl_ok(dir, &["x509", "-in", "new1.pem", "-noout", "-fingerprint", "-sha256"]);
    let fingerprint = fingerprint
        .trim()
        .rsplit('=')
        .next()
        .expect("a fingerprint")
        .replace(':', "")
        .to_lowercase();
    let new1_id = items(&json(&server.cli(&["cert", "list", "--json"])))
        .iter()
        .find(|c| str_of(c, "fingerprint_sha256") == fingerprint)
        .map(|c| str_of(c, "id").to_owned())
        .expect("the renewed certificate is listed");
    let shown = ok(&server.cli(&["cert", "show", &new1_id]));
    assert!(
        shown.contains("renewed_from") && shown.contains("renewed_as"),
        "{shown}"
    );
    let revoked = server.cli(&["cert", "revoke", &new1_id]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(
        stderr(&revoked).contains("was renewed over EST as"),
        "{}",
        stderr(&revoked)
    );
    let statuses: Vec<(String, String)> = items(&json(&server.cli(&["cert", "list", "--json"])))
        .iter()
        .filter(|c| str_of(c, "common_name") == "device-d1")
        .map(|c| (str_of(c, "id").to_owned(), str_of(c, "status").to_owned()))
        .collect();
    assert_eq!(
        statuses.iter().filter(|(_, status)| status == "active").count(),
        1,
        "the first was revoked when its renewal renewed, the second just now: {statuses:?}"
    );

    let other = csr("other", "/CN=someone-else", "DNS:d2.devices.example.com");
    let (status, body) = with("d2/cert.pem", "d2/key.pem", &other);
    assert_eq!(status, "400", "{body}");
    assert!(body.contains("a re-enrollment keeps the subject"), "{body}");

    let foreign = csr("foreign", "/CN=foreign-device", "DNS:x.example.com");
    let (_, status, body) = est(
        &[
            "--cert",
            &foreign_cert,
            "--key",
            &foreign_key,
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            &foreign,
        ],
        "simplereenroll",
    );
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("not one of a managed CA's"), "{body}");

    let d2 = items(&json(&server.cli(&["cert", "list", "--json"])))
        .iter()
        .find(|c| str_of(c, "common_name") == "device-d2")
        .map(|c| str_of(c, "id").to_owned())
        .expect("device-d2");
    ok(&server.cli(&["cert", "revoke", &d2]));
    let renew2 = csr("renew2", "/CN=device-d2", "DNS:d2.devices.example.com");
    let (status, body) = with("d2/cert.pem", "d2/key.pem", &renew2);
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("is revoked, not active"), "{body}");

    // `portcullis cert renew` on the device: over the files in place, twice (each new certificate renews in turn),
    // then into a new directory; a refusal names the server's reason.
    ok(&server.cli(&["cert", "create", "--cn", "device-d3", "--ip", "10.0.0.3", "--out", "d3"]));
    let before = std::fs::read_to_string(dir.join("d3/cert.pem")).expect("cert");
    let path = |p: &str| dir.join(p).display().to_string();
    let renew = |extra: &[&str]| {
        let mut args = vec!["cert", "renew", "--est", &base, "--ca"];
        let ca = path("foreign-ca.pem");
        args.push(&ca);
        args.extend_from_slice(extra);
        aged();
        crate::support::portcullis(&args)
    };
    let (cert3, key3) = (path("d3/cert.pem"), path("d3/key.pem"));
    // Not due yet: nothing asked, nothing written.
    let said = ok(&renew(&[
        "--cert",
        &cert3,
        "--key",
        &key3,
        "--within-days",
        "30",
        "--replace",
    ]));
    assert!(said.starts_with("not renewed: ") && said.contains("due from"), "{said}");
    assert_eq!(std::fs::read_to_string(dir.join("d3/cert.pem")).expect("cert"), before);
    for round in 0..2 {
        let out = renew(&["--cert", &cert3, "--key", &key3, "--replace"]);
        let said = ok(&out);
        assert!(
            said.starts_with("renewed CN=device-d3: serial "),
            "round {round}: {said}"
        );
    }
    let after = std::fs::read_to_string(dir.join("d3/cert.pem")).expect("cert");
    assert_ne!(before, after);
    let verified = openssl_ok(dir, &["verify", "-CAfile", "d3/ca.pem", "d3/cert.pem"]);
    assert!(verified.contains(": OK"), "{verified}");
    let text = openssl_ok(dir, &["x509", "-in", "d3/cert.pem", "-noout", "-ext", "subjectAltName"]);
    assert!(text.contains("IP Address:10.0.0.3"), "{text}");
    assert_eq!(
        openssl_ok(dir, &["x509", "-in", "d3/cert.pem", "-noout", "-pubkey"]),
        openssl_ok(dir, &["pkey", "-in", "d3/key.pem", "-pubout"]),
        "the replaced key is the new certificate's"
    );
    assert_eq!(mode(&dir.join("d3/key.pem")) & 0o777, 0o600);
    let out = renew(&["--cert", &cert3, "--key", &key3, "--out", &path("d3-next")]);
    assert!(ok(&out).contains("d3-next/cert.pem"));
    // One file holding both: --replace would leave one of them, so it is refused before the server is asked.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("d3/cert.pem")).expect("cert"),
        std::fs::read_to_string(dir.join("d3/key.pem")).expect("key")
    );
    std::fs::write(dir.join("both.pem"), both).expect("write");
    let err = fails(&renew(&[
        "--cert",
        &path("both.pem"),
        "--key",
        &path("both.pem"),
        "--replace",
    ]));
    assert!(err.contains("are the same file"), "{err}");
    let err = fails(&renew(&["--cert", &cert3, "--key", &key3, "--out", &path("d3-again")]));
    assert!(
        err.contains("refused (HTTP 409)") && err.contains("already renewed"),
        "{err}"
    );
}
