//! Server certificates over ACME, end to end: Let's Encrypt's test server (`pebble`, Debian's package) validates
//! names with TLS-ALPN-01 against the edge's own listener, resolving them through `pebble-challtestsrv`'s DNS, and
//! curl then reaches the edge with a certificate pebble issued. Renewal, a failing validation, and removal too. And
//! DNS-01: BIND's `named` is the zone's name server, Portcullis publishes the `_acme-challenge` records there with
//! signed DNS UPDATEs, and pebble looks them up there. And HTTP-01 on the public listener, with its redirects.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Server, curl, echo_origin, ok, scratch};

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";
const NAMED: &str = "/usr/sbin/named";
const DIG: &str = "/usr/bin/dig";

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

/// curl, trusting only `root`, to `https://HOST:PORT/PATH` on the edge at 127.0.0.1:`port`.
fn curl_edge(dir: &Path, root: &Path, host: &str, port: u16, path: &str) -> (Option<i32>, String, String) {
    curl(
        dir,
        &[
            "--cacert",
            root.to_str().expect("utf-8"),
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            &format!("https://{host}:{port}{path}"),
        ],
    )
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

/// Waits (up to 90 s) until the pack for `host` records a failure; returns the pack.
fn wait_for_failure(server: &Server, host: &str, what: &str) -> Value {
    wait_for_pack(server, host, what, |p| {
        p["validation_errors"].as_array().is_some_and(|e| !e.is_empty())
    })
}

/// pebble and its DNS, on free ports; killed when dropped.
struct Pebble {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    port: u16,
    mgmt: u16,
    dns_port: u16,
    dns_mgmt: u16,
    /// A DNS server for pebble other than pebble-challtestsrv.
    dns_server: Option<String>,
    children: Vec<Killed>,
}

impl Pebble {
    /// Ports and pebble's HTTPS certificate; nothing runs yet (pebble needs the edge's port first).
    fn prepare() -> Pebble {
        assert!(
            Path::new(PEBBLE).exists() && Path::new(CHALLTESTSRV).exists(),
            "the ACME test needs Let's Encrypt's pebble: apt-get install pebble (.ci/run installs it)"
        );
        let dir = scratch();
        let ca = pebble_tls(dir.path());
        Pebble {
            dir,
            ca,
            port: free_port(),
            mgmt: free_port(),
            dns_port: free_udp_port(),
            dns_mgmt: free_port(),
            dns_server: None,
            children: Vec::new(),
        }
    }

    /// `serve` arguments that point the ACME manager at this pebble.
    fn serve_args(&self) -> Vec<String> {
        vec![
            "--acme-directory".into(),
            format!("https://127.0.0.1:{}/dir", self.port),
            "--acme-ca-file".into(),
            self.ca.display().to_string(),
        ]
    }

    /// pebble's root, which its certificates chain to, written to a file.
    fn root(&self) -> std::path::PathBuf {
        let dir = self.dir.path();
        let (code, status, pem) = curl(
            dir,
            &[
                "--cacert",
                self.ca.to_str().expect("utf-8"),
                &format!("https://127.0.0.1:{}/roots/0", self.mgmt),
            ],
        );
        assert_eq!((code, status.as_str()), (Some(0), "200"));
        let path = dir.join("pebble-root.pem");
        std::fs::write(&path, pem).expect("write");
        path
    }

    /// Starts the DNS (every name is 127.0.0.1 unless told otherwise) and pebble, validating TLS-ALPN-01 on
    /// `edge_port`, with `extra` in its configuration.
    fn start(&mut self, edge_port: u16, extra: serde_json::Value) {
        let dir = self.dir.path().to_owned();
        // A port found free may be taken by another test before the child binds it: the ports nothing else has
        // been told of yet are picked again then (pebble's own is in the edge's arguments already).
        let dns_log = dir.join("challtestsrv.log");
        for attempt in 0.. {
            let mut child = Command::new(CHALLTESTSRV)
                .args(["-dns01", &format!("127.0.0.1:{}", self.dns_port)])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{}", self.dns_mgmt)])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .stdout(std::fs::File::create(&dns_log).expect("log"))
                .stderr(Stdio::null())
                .spawn()
                .expect("pebble-challtestsrv starts");
            match wait_listening(&mut child, &[self.dns_mgmt], &dns_log) {
                Ok(()) => {
                    self.children.push(Killed(child));
                    break;
                }
                Err(log) if attempt < 4 && log.contains("address already in use") => {
                    self.dns_port = free_udp_port();
                    self.dns_mgmt = free_port();
                }
                Err(log) => panic!("pebble-challtestsrv did not start; log:\n{log}"),
            }
        }
        let pebble_log = dir.join("pebble.log");
        for attempt in 0.. {
            let mut config = serde_json::json!({
                "listenAddress": format!("127.0.0.1:{}", self.port),
                "managementListenAddress": format!("127.0.0.1:{}", self.mgmt),
                "certificate": dir.join("pebble-cert.pem"),
                "privateKey": dir.join("pebble-key.pem"),
                "httpPort": 5002,
                "tlsPort": edge_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            });
            if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
                config.extend(extra.clone());
            }
            std::fs::write(
                dir.join("pebble.json"),
                serde_json::json!({ "pebble": config }).to_string(),
            )
            .expect("config");
            let log = std::fs::File::create(&pebble_log).expect("log");
            let mut child = Command::new(PEBBLE)
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args([
                    "-dnsserver",
                    &self
                        .dns_server
                        .clone()
                        .unwrap_or_else(|| format!("127.0.0.1:{}", self.dns_port)),
                ])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("pebble starts");
            match wait_listening(&mut child, &[self.port, self.mgmt], &pebble_log) {
                Ok(()) => {
                    self.children.push(Killed(child));
                    return;
                }
                Err(log)
                    if attempt < 4
                        && log.contains(&format!("127.0.0.1:{}: bind: address already in use", self.mgmt)) =>
                {
                    self.mgmt = free_port();
                }
                Err(log) => panic!("pebble did not start; log:\n{log}"),
            }
        }
    }
}

/// Waits (up to 20 s) until `child` accepts connections on every one of `ports` and is still running a moment
/// later; else its log, with the child ended.
fn wait_listening(child: &mut Child, ports: &[u16], log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(read_log());
        }
        if ports
            .iter()
            .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            // A port another process holds also accepts: the child must still be running once it has bound its own.
            std::thread::sleep(Duration::from_millis(200));
            if let Ok(None) = child.try_wait() {
                return Ok(());
            }
            return Err(read_log());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("not listening on {ports:?} after 20 s\n{}", read_log()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// BIND's `named`, authoritative for one zone on a free port, letting TSIG key `portcullis-acme` update the zone's
/// TXT records; killed when dropped.
struct Named {
    dir: tempfile::TempDir,
    port: u16,
    _child: Killed,
}

impl Named {
    const KEY: &'static str = "portcullis-acme";

    fn start(zone: &str, secret: &str) -> Named {
        assert!(
            Path::new(NAMED).exists() && Path::new(DIG).exists(),
            "the DNS-01 test needs BIND: apt-get install bind9 bind9-dnsutils (.ci/run installs them)"
        );
        let dir = scratch();
        let d = dir.path().display().to_string();
        let log = dir.path().join("named.log");
        // A port free for TCP and UDP both, picked again if it is taken before named binds it.
        let (port, child) = (0..5)
            .find_map(|_| {
                let port = loop {
                    let port = free_port();
                    if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                        break port;
                    }
                };
                std::fs::write(
                    dir.path().join("named.conf"),
                    format!(
                        r#"options {{
    directory "{d}"; pid-file "{d}/named.pid"; session-keyfile "{d}/session.key";
    listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
    recursion no; dnssec-validation no; notify no;
}};
key "{key}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{zone}" {{ type primary; file "{d}/zone.db"; update-policy {{ grant {key} zonesub TXT; }}; }};
"#,
                        key = Named::KEY
                    ),
                )
                .expect("named.conf");
                std::fs::write(
                    dir.path().join("zone.db"),
                    format!(
                        "$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
                    ),
                )
                .expect("zone file");
                let mut child = Command::new(NAMED)
                    .args(["-g", "-c"])
                    .arg(dir.path().join("named.conf"))
                    .stdout(std::fs::File::create(&log).expect("log"))
                    .stderr(std::fs::File::options().append(true).open(&log).expect("log"))
                    .spawn()
                    .expect("named starts");
                let started = wait_listening(&mut child, &[port], &log);
                // named goes on running when it cannot listen: its log says so.
                let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                if started.is_ok() && !log_text.contains("address in use") {
                    return Some((port, Killed(child)));
                }
                let _ = child.kill();
                let _ = child.wait();
                None
            })
            .unwrap_or_else(|| {
                panic!(
                    "named did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Named {
            dir,
            port,
            _child: child,
        }
    }

    /// The TXT records at `name`, as `dig +short` prints them.
    fn txt(&self, name: &str) -> String {
        let out = Command::new(DIG)
            .args([
                "+short",
                "+tcp",
                "-p",
                &self.port.to_string(),
                "@127.0.0.1",
                "TXT",
                name,
            ])
            .output()
            .expect("dig runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }
}

/// DNS-01: a wildcard certificate, its `_acme-challenge` records published in BIND with signed updates, validated
/// by pebble there, and withdrawn afterwards; a wrong TSIG secret is BIND's BADSIG on the pack.
#[test]
fn wildcard_packs_are_validated_over_dns_through_the_zone_s_name_server() {
    const SECRET: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";
    let named = Named::start("acme.test", SECRET);
    let mut pebble = Pebble::prepare();
    pebble.dns_server = Some(format!("127.0.0.1:{}", named.port));
    let args = pebble.serve_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with(scratch(), &args, &[]);
    pebble.start(server.edge_port, serde_json::json!({}));
    let dir = pebble.dir.path();

    let origin = format!("http://127.0.0.1:{}", echo_origin());
    ok(&server.cli(&["zone", "add", "acme.test"]));
    ok(&server.cli(&["host", "add", "*.acme.test", "--origin", &origin]));

    // A wildcard needs the zone's DNS update settings, and the refusal says how to give them.
    let out = server.cli(&["acme", "order", "--zone", "acme.test", "*.acme.test"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("acme dns set"), "{out:?}");

    // The key as `tsig-keygen` writes it.
    let key_file = dir.join("portcullis-acme.key");
    std::fs::write(
        &key_file,
        format!(
            "key \"{}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n",
            Named::KEY
        ),
    )
    .expect("key file");
    let server_addr = format!("127.0.0.1:{}", named.port);
    let set = ok(&server.cli(&[
        "acme",
        "dns",
        "set",
        "--zone",
        "acme.test",
        "--server",
        &server_addr,
        "--key-file",
        key_file.to_str().expect("utf-8"),
        "--propagation-seconds",
        "0",
    ]));
    assert!(set.contains(Named::KEY) && !set.contains(SECRET), "{set}");
    let shown = ok(&server.cli(&["acme", "dns", "show", "--zone", "acme.test", "--json"]));
    assert!(shown.contains(&server_addr) && !shown.contains(SECRET), "{shown}");

    let ordered = ok(&server.cli(&["acme", "order", "--zone", "acme.test", "*.acme.test", "acme.test"]));
    assert!(ordered.contains("validated by txt"), "{ordered}");
    let pack = wait_for_pack(&server, "*.acme.test", "issuance over DNS-01", |p| {
        p["status"] == "active"
    });
    assert_eq!(pack["validation_method"], "txt");
    assert_eq!(pack["validation_errors"], serde_json::json!([]));
    // The records were withdrawn once validated.
    assert_eq!(
        named.txt("_acme-challenge.acme.test"),
        "",
        "named log:\n{}",
        named.log()
    );

    // Any name under the wildcard gets the issued certificate.
    let root = pebble.root();
    let (code, status, body) = curl_edge(dir, &root, "anything.acme.test", server.edge_port, "/wild");
    assert_eq!((code, status.as_str()), (Some(0), "200"), "{body}");
    assert!(body.starts_with("get /wild"), "{body}");

    // The settings stay while a pack is validated over DNS.
    let out = server.cli(&["acme", "dns", "remove", "--zone", "acme.test"]);
    assert!(!out.status.success(), "{out:?}");

    // A wrong secret: BIND refuses the signature, and the pack says so.
    let wrong = dir.join("wrong.key");
    std::fs::write(
        &wrong,
        format!(
            "key \"{}\" {{ algorithm hmac-sha256; secret \"d3JvbmdzZWNyZXR3cm9uZ3NlY3JldHdyb25nc2VjcmV0\"; }};",
            Named::KEY
        ),
    )
    .expect("key file");
    ok(&server.cli(&[
        "acme",
        "dns",
        "set",
        "--zone",
        "acme.test",
        "--server",
        &server_addr,
        "--key-file",
        wrong.to_str().expect("utf-8"),
        "--propagation-seconds",
        "0",
    ]));
    ok(&server.cli(&["acme", "order", "--zone", "acme.test", "www.acme.test"]));
    let failed = wait_for_failure(&server, "www.acme.test", "refusal of a wrong TSIG secret");
    assert!(failed.to_string().contains("BADSIG"), "{failed}");
}

/// HTTP-01 on the public listener (port 80's stand-in): pebble fetches the answer there. The same listener sends the
/// edge's hostnames to HTTPS and still serves its own routes.
#[test]
fn http_01_answers_and_https_redirects_are_served_on_the_public_listener() {
    let mut pebble = Pebble::prepare();
    let public_port = free_port();
    let mut args = pebble.serve_args();
    args.extend(["--public-listen".into(), format!("127.0.0.1:{public_port}")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with(scratch(), &args, &[]);
    pebble.start(server.edge_port, serde_json::json!({"httpPort": public_port}));
    let dir = pebble.dir.path();
    let origin = format!("http://127.0.0.1:{}", echo_origin());
    ok(&server.cli(&["zone", "add", "acme.test"]));
    ok(&server.cli(&["host", "add", "api.acme.test", "--origin", &origin]));

    let ordered = ok(&server.cli(&[
        "acme",
        "order",
        "--zone",
        "acme.test",
        "--method",
        "http",
        "api.acme.test",
    ]));
    assert!(ordered.contains("validated by http"), "{ordered}");
    let pack = wait_for_pack(&server, "api.acme.test", "issuance over HTTP-01", |p| {
        p["status"] == "active"
    });
    assert_eq!(pack["validation_method"], "http");
    let root = pebble.root();
    let (code, status, body) = curl_edge(dir, &root, "api.acme.test", server.edge_port, "/over-http-01");
    assert_eq!((code, status.as_str()), (Some(0), "200"), "{body}");

    // Plain HTTP to an edge hostname is sent to HTTPS, with the method kept for anything but GET and HEAD.
    let public = |host: &str, extra: &[&str], path: &str| {
        let url = format!("http://127.0.0.1:{public_port}{path}");
        let header = format!("Host: {host}");
        let mut args = vec!["-H", header.as_str(), "-w", "%{http_code} %{redirect_url}"];
        args.extend_from_slice(extra);
        args.push(url.as_str());
        curl(dir, &args)
    };
    let edge = server.edge_port;
    let (_, status, _) = public("API.acme.test", &[], "/v1/items?page=2");
    assert_eq!(status, format!("301 https://api.acme.test:{edge}/v1/items?page=2"));
    let (_, status, _) = public("api.acme.test:80", &["-X", "POST", "--data", "x"], "/v1/items");
    assert_eq!(status, format!("308 https://api.acme.test:{edge}/v1/items"));
    let (_, status, _) = public("api.acme.test", &["-X", "OPTIONS", "--request-target", "*"], "/");
    assert_eq!(status, format!("308 https://api.acme.test:{edge}/"));
    // Other names, the public routes and unknown challenges are not redirected.
    let (_, status, _) = public("elsewhere.test", &[], "/v1/items");
    assert_eq!(status, "404 ");
    let (_, status, body) = public("api.acme.test", &[], "/healthz");
    assert_eq!((status.as_str(), body.as_str()), ("200 ", "ok\n"));
    let (_, status, _) = public("api.acme.test", &[], "/.well-known/acme-challenge/unknown-token");
    assert_eq!(status, "404 ");

    // Without the public listener, an HTTP-01 order fails and says why.
    let bare_args = pebble.serve_args();
    let bare_args: Vec<&str> = bare_args.iter().map(String::as_str).collect();
    let bare = Server::start_with(scratch(), &bare_args, &[]);
    ok(&bare.cli(&["zone", "add", "acme.test"]));
    ok(&bare.cli(&[
        "acme",
        "order",
        "--zone",
        "acme.test",
        "--method",
        "http",
        "www.acme.test",
    ]));
    let failed = wait_for_failure(&bare, "www.acme.test", "HTTP-01 without the public listener");
    assert!(failed.to_string().contains("--public-listen"), "{failed}");
}

#[test]
fn acme_packs_are_issued_by_pebble_over_tls_alpn_renewed_and_removed() {
    let mut pebble = Pebble::prepare();
    let mut args = pebble.serve_args();
    args.extend(["--acme-contact".into(), "ops@acme.test".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with(scratch(), &args, &[]);
    // Certificates valid for 30 s: renewed once two thirds of that have passed.
    pebble.start(server.edge_port, serde_json::json!({"certificateValidityPeriod": 30}));
    let dir = pebble.dir.path();
    let dns_mgmt = pebble.dns_mgmt;

    let origin = format!("http://127.0.0.1:{}", echo_origin());
    ok(&server.cli(&["zone", "add", "acme.test"]));
    ok(&server.cli(&["host", "add", "api.acme.test", "--origin", &origin]));

    // Names outside the zone, wildcards and other validation methods are refused up front.
    let out = server.cli(&["acme", "order", "--zone", "acme.test", "api.elsewhere.test"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in zone"), "{out:?}");
    let out = server.cli(&["acme", "order", "--zone", "acme.test", "*.acme.test"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("over DNS"), "{out:?}");

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
    let root = pebble.root();
    let edge = |dir: &Path| curl_edge(dir, &root, "api.acme.test", server.edge_port, "/hello");
    let (code, status, body) = edge(dir);
    assert_eq!((code, status.as_str()), (Some(0), "200"), "{body}\n{}", server.report());
    assert!(body.starts_with("get /hello"), "{body}");

    // Two thirds into the 30 s, the pack renews into the same custom certificate.
    let first_expiry = pack["expires_on"].clone();
    let renewed = wait_for_pack(&server, "api.acme.test", "renewal", |p| {
        p["expires_on"] != first_expiry && p["status"] == "active"
    });
    assert_eq!(renewed["primary_certificate"].as_str(), Some(cert_id.as_str()));
    let (code, status, body) = edge(dir);
    assert_eq!((code, status.as_str()), (Some(0), "200"), "{body}\n{}", server.report());

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
    let failed = wait_for_failure(&server, "down.acme.test", "failure");
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

/// CAs that require External Account Binding (ZeroSSL, Google Trust Services, SSL.com): with the key id and HMAC
/// key the account is made and the certificate issued; without them the CA's refusal is the pack's error.
#[test]
fn acme_accounts_bind_to_an_external_account_when_the_ca_requires_it() {
    const KID: &str = "kid-1";
    const HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let mut pebble = Pebble::prepare();
    let mut args = pebble.serve_args();
    args.extend(["--acme-eab-kid".into(), KID.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The HMAC key from the environment, as the systemd unit's environment file gives it.
    let server = Server::start_with(scratch(), &args, &[("PORTCULLIS_ACME_EAB_HMAC_KEY", HMAC)]);
    pebble.start(
        server.edge_port,
        serde_json::json!({"externalAccountBindingRequired": true, "externalAccountMACKeys": {KID: HMAC}}),
    );
    let origin = format!("http://127.0.0.1:{}", echo_origin());
    ok(&server.cli(&["zone", "add", "acme.test"]));
    ok(&server.cli(&["host", "add", "api.acme.test", "--origin", &origin]));
    ok(&server.cli(&["acme", "order", "--zone", "acme.test", "api.acme.test"]));
    wait_for_pack(&server, "api.acme.test", "issuance with EAB", |p| {
        p["status"] == "active"
    });

    // Another edge without the binding is refused by the CA, and says so.
    let unbound_args = pebble.serve_args();
    let unbound_args: Vec<&str> = unbound_args.iter().map(String::as_str).collect();
    let unbound = Server::start_with(scratch(), &unbound_args, &[]);
    ok(&unbound.cli(&["zone", "add", "acme.test"]));
    ok(&unbound.cli(&["acme", "order", "--zone", "acme.test", "www.acme.test"]));
    let failed = wait_for_failure(&unbound, "www.acme.test", "refusal without EAB");
    assert!(failed.to_string().contains("externalAccountRequired"), "{failed}");

    // Half a binding does not start, and a key that is not base64url is refused without being quoted.
    let scratch_dir = scratch();
    let serve = |kid: Option<&str>, key: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args([
                "serve",
                "--admin-listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(scratch_dir.path().join("data"))
            .env_remove("PORTCULLIS_ACME_EAB_HMAC_KEY")
            .env_remove("PORTCULLIS_ACME_EAB_KID");
        if let Some(kid) = kid {
            command.args(["--acme-eab-kid", kid]);
        }
        if let Some(key) = key {
            command.env("PORTCULLIS_ACME_EAB_HMAC_KEY", key);
        }
        let out = command.output().expect("runs");
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(serve(Some(KID), None).contains("PORTCULLIS_ACME_EAB_HMAC_KEY"));
    assert!(serve(None, Some(HMAC)).contains("--acme-eab-kid"));
    let leaked = "s3cr3t+key/with=padding";
    let err = serve(Some(KID), Some(leaked));
    assert!(err.contains("not base64url") && !err.contains("s3cr3t"), "{err}");
    assert!(
        !scratch_dir.path().join("data").exists(),
        "refused before anything is made"
    );
}

/// A fleet on PostgreSQL: node A orders (it may reach the ACME directory), node B (`--no-acme`) is the one the ACME
/// server validates, so the answers must reach it through the shared store; then node B serves the certificate.
#[test]
fn in_a_fleet_the_answers_of_one_node_s_order_are_served_by_another() {
    let Ok(admin_url) = std::env::var("PORTCULLIS_TEST_DATABASE_URL") else {
        eprintln!("SKIPPED ACME fleet test: PORTCULLIS_TEST_DATABASE_URL is not set");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let db = crate::fleet::ScratchDb::create(&rt, &admin_url);
    let master_key = crate::fleet::random_hex(32);
    let env = [("PORTCULLIS_MASTER_KEY", master_key.as_str())];
    let mut pebble = Pebble::prepare();
    let mut args = pebble.serve_args();
    args.extend(["--database-url".into(), db.url.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Server::start_with(scratch(), &args, &env);
    let b = Server::start_with(scratch(), &["--database-url", &db.url, "--no-acme"], &env);
    // pebble validates on node B's edge only.
    pebble.start(b.edge_port, serde_json::json!({}));

    let origin = format!("http://127.0.0.1:{}", echo_origin());
    ok(&a.cli(&["zone", "add", "acme.test"]));
    ok(&a.cli(&["host", "add", "api.acme.test", "--origin", &origin]));
    ok(&a.cli(&["acme", "order", "--zone", "acme.test", "api.acme.test"]));
    wait_for_pack(&a, "api.acme.test", "issuance validated on node B", |p| {
        p["status"] == "active"
    });

    let root = pebble.root();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, status, body) = curl_edge(pebble.dir.path(), &root, "api.acme.test", b.edge_port, "/fleet");
        if (code, status.as_str()) == (Some(0), "200") {
            assert!(body.starts_with("get /fleet"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B does not serve the issued certificate: curl {code:?} {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
