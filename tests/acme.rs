//! Server certificates over ACME, end to end: Let's Encrypt's test server (`pebble`, Debian's package) validates
//! names with TLS-ALPN-01 against the edge's own listener, resolving them through `pebble-challtestsrv`'s DNS, and
//! curl then reaches the edge with a certificate pebble issued. Renewal, a failing validation, and removal too.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Server, curl, echo_origin, ok, scratch};

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
    socket.local_addr().expect("its address").port()
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// pebble's HTTPS certificate, from a CA of the test's own; returns the CA's PEM path.
fn pebble_tls(dir: &Path) -> std::path::PathBuf {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "pebble test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    leaf.subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    std::fs::write(dir.join("pebble-cert.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).expect("write");
    let ca_path = dir.join("pebble-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write");
    ca_path
}

fn packs(server: &Server) -> Vec<Value> {
    let out = ok(&server.cli(&["acme", "list", "--zone", "acme.test", "--json"]));
    serde_json::from_str::<Value>(&out)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn pack_for(server: &Server, host: &str) -> Value {
    packs(server)
        .into_iter()
        .find(|p| p["hosts"].as_array().is_some_and(|h| h.iter().any(|n| n == host)))
        .unwrap_or_else(|| panic!("no pack for {host}"))
}

/// Waits (up to 90 s) until the pack for `host` satisfies `done`.
fn wait_for_pack(server: &Server, host: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pack = pack_for(server, host);
        if done(&pack) {
            return pack;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the pack stayed {pack}; server log:\n{}",
            std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn acme_packs_are_issued_by_pebble_over_tls_alpn_renewed_and_removed() {
    assert!(
        Path::new(PEBBLE).exists() && Path::new(CHALLTESTSRV).exists(),
        "the ACME test needs Let's Encrypt's pebble: apt-get install pebble (.ci/run installs it)"
    );
    let work = scratch();
    let dir = work.path();
    let pebble_ca = pebble_tls(dir);
    let (pebble_port, pebble_mgmt, dns_port, dns_mgmt) = (free_port(), free_port(), free_udp_port(), free_port());

    let server = Server::start_with(
        scratch(),
        &[
            "--acme-directory",
            &format!("https://127.0.0.1:{pebble_port}/dir"),
            "--acme-ca-file",
            pebble_ca.to_str().expect("utf-8"),
            "--acme-contact",
            "ops@acme.test",
        ],
        &[],
    );

    // Every name resolves to 127.0.0.1, where the edge listens, unless told otherwise.
    let dns_log = dir.join("challtestsrv.log");
    let _dns = Killed(
        Command::new(CHALLTESTSRV)
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(std::fs::File::create(&dns_log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts"),
    );
    wait_for_port(dns_mgmt, "pebble-challtestsrv", &dns_log);

    // Certificates valid for 30 s: renewed once two thirds of that have passed.
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{pebble_port}"),
        "managementListenAddress": format!("127.0.0.1:{pebble_mgmt}"),
        "certificate": dir.join("pebble-cert.pem"),
        "privateKey": dir.join("pebble-key.pem"),
        "httpPort": 5002,
        "tlsPort": server.edge_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "certificateValidityPeriod": 30,
    }});
    std::fs::write(dir.join("pebble.json"), config.to_string()).expect("config");
    let pebble_log = dir.join("pebble.log");
    let log = std::fs::File::create(&pebble_log).expect("log");
    let _pebble = Killed(
        Command::new(PEBBLE)
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("pebble starts"),
    );
    wait_for_port(pebble_port, "pebble", &pebble_log);

    let origin = format!("http://127.0.0.1:{}", echo_origin());
    ok(&server.cli(&["zone", "add", "acme.test"]));
    ok(&server.cli(&["host", "add", "api.acme.test", "--origin", &origin]));

    // Names outside the zone, wildcards and other validation methods are refused up front.
    let out = server.cli(&["acme", "order", "--zone", "acme.test", "api.elsewhere.test"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in zone"), "{out:?}");
    let out = server.cli(&["acme", "order", "--zone", "acme.test", "*.acme.test"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("dns-01"), "{out:?}");

    let ordered = ok(&server.cli(&["acme", "order", "--zone", "acme.test", "api.acme.test"]));
    assert!(ordered.contains("ordered certificate pack"), "{ordered}");
    let pack = wait_for_pack(&server, "api.acme.test", "issuance", |p| p["status"] == "active");
    assert_eq!(pack["validation_errors"], serde_json::json!([]));
    let cert_id = pack["primary_certificate"].as_str().expect("certificate id").to_owned();
    let certs = ok(&server.cli(&["server-cert", "list", "--zone", "acme.test", "--json"]));
    assert!(
        certs.contains(&cert_id) && certs.contains("Pebble Intermediate"),
        "{certs}"
    );

    // curl trusts pebble's root only: the edge presents the issued chain.
    let root = dir.join("pebble-root.pem");
    let (code, status, root_pem) = curl(
        dir,
        &[
            "--cacert",
            pebble_ca.to_str().expect("utf-8"),
            &format!("https://127.0.0.1:{pebble_mgmt}/roots/0"),
        ],
    );
    assert_eq!((code, status.as_str()), (Some(0), "200"));
    std::fs::write(&root, root_pem).expect("write");
    let edge = |dir: &Path| {
        curl(
            dir,
            &[
                "--cacert",
                root.to_str().expect("utf-8"),
                "--resolve",
                &format!("api.acme.test:{}:127.0.0.1", server.edge_port),
                &format!("https://api.acme.test:{}/hello", server.edge_port),
            ],
        )
    };
    let (code, status, body) = edge(dir);
    assert_eq!((code, status.as_str()), (Some(0), "200"), "{body}");
    assert!(body.starts_with("get /hello"), "{body}");

    // Two thirds into the 30 s, the pack renews into the same custom certificate.
    let first_expiry = pack["expires_on"].clone();
    let renewed = wait_for_pack(&server, "api.acme.test", "renewal", |p| {
        p["expires_on"] != first_expiry && p["status"] == "active"
    });
    assert_eq!(renewed["primary_certificate"].as_str(), Some(cert_id.as_str()));
    let (code, status, body) = edge(dir);
    assert_eq!((code, status.as_str()), (Some(0), "200"), "{body}");

    // A name the ACME server reaches elsewhere (127.0.0.2, where nothing listens) fails validation, with
    // pebble's reason kept on the pack, and is tried again later.
    let (code, status, _) = curl(
        dir,
        &[
            "-X",
            "POST",
            "--data",
            r#"{"host":"down.acme.test","addresses":["127.0.0.2"]}"#,
            &format!("http://127.0.0.1:{dns_mgmt}/add-a"),
        ],
    );
    assert_eq!((code, status.as_str()), (Some(0), "200"));
    ok(&server.cli(&["acme", "order", "--zone", "acme.test", "down.acme.test"]));
    let failed = wait_for_pack(&server, "down.acme.test", "failure", |p| {
        p["validation_errors"].as_array().is_some_and(|e| !e.is_empty())
    });
    assert_eq!(failed["status"], "pending_validation", "{failed}");
    assert!(failed["next_attempt_on"].is_string(), "{failed}");
    let listed = ok(&server.cli(&["acme", "list", "--zone", "acme.test"]));
    assert!(
        listed.contains("down.acme.test") && listed.contains("127.0.0.2"),
        "{listed}"
    );

    // Removing the pack removes its certificate: the edge falls back to its development CA.
    let id = pack["id"].as_str().expect("id");
    ok(&server.cli(&["acme", "remove", "--zone", "acme.test", id]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, _) = edge(dir);
        if code == Some(60) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the issued certificate is still served (curl exit {code:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let certs = ok(&server.cli(&["server-cert", "list", "--zone", "acme.test", "--json"]));
    assert!(!certs.contains(&cert_id), "{certs}");
}
