//! Shared helpers for the integration tests.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `portcullis` binary built for this test run with `args`.
pub fn portcullis(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    for name in PORTCULLIS_ENV {
        command.env_remove(name);
    }
    command.args(args).output().expect("the portcullis binary runs")
}

/// Path of the test's scratch directory root.
#[allow(dead_code)]
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

#[allow(dead_code)]
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Environment variables that would steer the binary away from what a test gives it.
const PORTCULLIS_ENV: &[&str] = &[
    "PORTCULLIS_API",
    "PORTCULLIS_TOKEN",
    "PORTCULLIS_DATA_DIR",
    "PORTCULLIS_DATABASE_URL",
    "PORTCULLIS_ADMIN_LISTEN",
    "PORTCULLIS_MASTER_KEY",
    "PORTCULLIS_CRL_BASE_URL",
    "PORTCULLIS_OCSP_BASE_URL",
    "PORTCULLIS_P12_PASSWORD",
    "PORTCULLIS_LISTEN",
    "PORTCULLIS_DEFAULT_HOST",
    "PORTCULLIS_ACME_DIRECTORY",
    "PORTCULLIS_ACME_CA_FILE",
    "PORTCULLIS_ACME_EAB_KID",
    "PORTCULLIS_ACME_EAB_HMAC_KEY",
    "PORTCULLIS_TSIG_SECRET",
    "PORTCULLIS_ADMIN_TLS_CERT",
    "PORTCULLIS_ADMIN_TLS_KEY",
    "PORTCULLIS_ADMIN_CLIENT_CA",
    "PORTCULLIS_API_CA",
    "PORTCULLIS_API_CERT",
    "PORTCULLIS_API_KEY",
    "PORTCULLIS_PUBLIC_LISTEN",
    "PORTCULLIS_EST_LISTEN",
    "PORTCULLIS_EST_TLS_CERT",
    "PORTCULLIS_EST_TLS_KEY",
    "PORTCULLIS_EST_RENEW_AFTER",
];

/// A `portcullis serve` child process with its own data directory, killed when dropped.
#[allow(dead_code)]
pub struct Server {
    child: std::process::Child,
    /// The admin listener's port.
    pub port: u16,
    /// `http`, or `https` with `--admin-tls-cert`.
    pub admin_scheme: &'static str,
    /// The edge (TLS) listener's port (the first one's, with several `--listen`).
    pub edge_port: u16,
    /// Every edge listener's port, in the order of `--listen`.
    pub edge_ports: Vec<u16>,
    /// The EST listener's port, with `--est-listen`.
    pub est_port: Option<u16>,
    /// Scratch space of the test; the server's data directory is `data` inside it.
    pub dir: tempfile::TempDir,
}

#[allow(dead_code)]
impl Server {
    /// Starts a server on free localhost ports and waits (up to 60 s) until it says where it listens.
    pub fn start() -> Server {
        Server::start_with(scratch(), &[], &[])
    }

    /// Starts a server with its data in `dir/data`, `extra` arguments after `serve`, and `env` set.
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Server {
        use std::io::BufRead as _;

        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("a server log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--admin-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn,portcullis=info")
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log);
        for name in PORTCULLIS_ENV {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("portcullis serve starts");
        let stdout = child.stdout.take().expect("the server's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps draining stdout after the port is known, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut seen = Vec::new();
        let mut edge_ports = Vec::new();
        let mut est_port = None;
        let (port, admin_scheme) = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = line
                        .strip_prefix("edge listening on https://127.0.0.1:")
                        .and_then(|p| p.parse::<u16>().ok())
                    {
                        edge_ports.push(port);
                    }
                    if let Some(port) = line
                        .strip_prefix("EST (client certificate renewal) on https://127.0.0.1:")
                        .and_then(|rest| rest.strip_suffix("/.well-known/est/"))
                        .and_then(|p| p.parse::<u16>().ok())
                    {
                        est_port = Some(port);
                    }
                    let admin = |scheme: &'static str| {
                        line.strip_prefix(&format!("admin API listening on {scheme}://127.0.0.1:"))
                            .and_then(|rest| rest.strip_suffix("/client/v4"))
                            .and_then(|port| port.parse::<u16>().ok())
                            .map(|port| (port, scheme))
                    };
                    if let Some(found) = admin("http").or_else(|| admin("https")) {
                        break found;
                    }
                    seen.push(line);
                }
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "portcullis serve did not report its admin address ({err}); stdout: {seen:?}; log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        };
        let edge_port = *edge_ports
            .first()
            .unwrap_or_else(|| panic!("the server did not report its edge address: {seen:?}"));
        Server {
            child,
            port,
            admin_scheme,
            edge_port,
            edge_ports,
            est_port,
            dir,
        }
    }

    /// For failure messages: whether the process still runs (its state from `/proc`) and its log so far.
    pub fn report(&self) -> String {
        let pid = self.child.id();
        let state = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("State:")).map(str::to_owned))
            .unwrap_or_else(|| "gone".into());
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        format!("server pid {pid} {state}; server log:\n{log}")
    }

    /// The server's data directory (it holds `admin-token`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn api(&self) -> String {
        format!("{}://127.0.0.1:{}", self.admin_scheme, self.port)
    }

    /// `PUT` of `body` to the admin API's `path` (under `/client/v4`) with the admin token, by curl; the envelope.
    pub fn api_put(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let token = std::fs::read_to_string(self.data_dir().join("admin-token")).expect("token");
        let auth = format!("Authorization: Bearer {}", token.trim());
        let url = format!("{}/client/v4{path}", self.api());
        let body = body.to_string();
        let args = [
            "-X",
            "PUT",
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            &url,
        ];
        let (_, _, out) = curl(self.dir.path(), &args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The id of zone `name`.
    pub fn zone_id(&self, name: &str) -> String {
        let out = ok(&self.cli(&["zone", "list", "--json"]));
        let zones: serde_json::Value = serde_json::from_str(&out).expect("json");
        zones
            .as_array()
            .and_then(|z| z.iter().find(|z| z["name"] == name))
            .and_then(|z| z["id"].as_str())
            .unwrap_or_else(|| panic!("no zone {name}: {out}"))
            .to_owned()
    }

    /// Runs `portcullis ARGS --api <this server> --data-dir <its data dir>` in the scratch directory.
    pub fn cli(&self, args: &[&str]) -> Output {
        let data_dir = self.data_dir();
        let data_dir = data_dir.to_str().expect("a UTF-8 path");
        let mut all = args.to_vec();
        all.extend(["--data-dir", data_dir]);
        self.cli_without_token(&all)
    }

    /// Runs `portcullis ARGS --api <this server>` in the scratch directory, where no token is to be found (unless
    /// ARGS give one).
    pub fn cli_without_token(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(args)
            .arg("--api")
            .arg(self.api())
            .current_dir(self.dir.path());
        for name in PORTCULLIS_ENV {
            command.env_remove(name);
        }
        command.output().expect("the portcullis binary runs")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `openssl ARGS` in `dir`.
#[allow(dead_code)]
pub fn openssl(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (Debian's openssl package)")
}

/// A minimal HTTP/1.1 origin on 127.0.0.1: answers every request with `200` and the request head it received as the
/// body (so tests can see exactly which headers reached the origin). Runs until the test process ends.
#[allow(dead_code)]
pub fn echo_origin() -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the echo origin");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&head).to_lowercase();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    port
}

/// What [`file_server`] answers: (status, body), replaceable while it runs.
#[allow(dead_code)]
pub type Served = std::sync::Arc<std::sync::Mutex<(u16, Vec<u8>)>>;

/// A plain HTTP server on a free localhost port answering every request with the current `(status, body)` of the
/// returned handle (a CRL distribution point whose CRL a test replaces). Returns the port and the handle.
#[allow(dead_code)]
pub fn file_server(status: u16, body: Vec<u8>) -> (u16, Served) {
    use std::io::{Read as _, Write as _};
    let served = std::sync::Arc::new(std::sync::Mutex::new((status, body)));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the file server");
    let port = listener.local_addr().expect("its address").port();
    let current = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let (status, body) = current.lock().expect("lock").clone();
            let mut reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            reply.extend_from_slice(&body);
            let _ = stream.write_all(&reply);
        }
    });
    (port, served)
}

/// Runs `curl -s -o BODY_FILE -w %{http_code} ARGS` in `dir`; returns (exit code, HTTP status, body).
#[allow(dead_code)]
pub fn curl(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body_path = dir.join(format!("curl-body-{call}"));
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["-s", "--max-time", "20", "-o"])
        .arg(&body_path)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let body = std::fs::read_to_string(&body_path).unwrap_or_default();
    let _ = std::fs::remove_file(&body_path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        body,
    )
}

/// The command's stdout; panics with its output when it failed.
#[allow(dead_code)]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issues a client certificate named `cn` from the server's managed CA into `<scratch>/<cn>/` (`cert.pem`,
/// `key.pem`); returns its id.
#[allow(dead_code)]
pub fn issue_client_cert(server: &Server, cn: &str) -> String {
    let out_dir = server.dir.path().join(cn);
    std::fs::create_dir_all(&out_dir).expect("a certificate directory");
    let out_dir = out_dir.to_str().expect("a UTF-8 path");
    ok(&server.cli(&["cert", "create", "--cn", cn, "--out", out_dir]));
    let list: serde_json::Value = serde_json::from_str(&ok(&server.cli(&["cert", "list", "--json"]))).expect("json");
    let ids: Vec<&str> = list
        .as_array()
        .expect("a list of certificates")
        .iter()
        .filter(|c| c["common_name"] == cn)
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "one certificate named {cn}: {list}");
    ids[0].to_owned()
}

/// Runs `openssl` in `dir`, asserting that it succeeds; its standard output.
#[allow(dead_code)]
pub fn openssl_stdout(dir: &std::path::Path, args: &[&str]) -> String {
    let out = openssl(dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes a CA of its own with `openssl req -x509` and a client certificate it signs, in `dir`; returns the paths of
/// the client certificate and key. The edge knows nothing of this CA.
#[allow(dead_code)]
pub fn foreign_client_cert(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let run = |args: &[&str]| openssl_stdout(dir, args);
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "foreign-ca.key",
        "-out",
        "foreign-ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Foreign test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "foreign-key.pem",
        "-out",
        "foreign.csr",
        "-subj",
        "/CN=foreign-device",
    ]);
    run(&csr);
    std::fs::write(dir.join("foreign.ext"), "extendedKeyUsage=clientAuth\n").expect("write");
    run(&[
        "x509",
        "-req",
        "-in",
        "foreign.csr",
        "-CA",
        "foreign-ca.pem",
        "-CAkey",
        "foreign-ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "foreign.ext",
        "-out",
        "foreign-cert.pem",
    ]);
    (dir.join("foreign-cert.pem"), dir.join("foreign-key.pem"))
}

/// An HTTP/1.1 + h2c origin on 127.0.0.1 (hyper, keep-alive) in the calling tokio runtime: answers every request
/// with `200` and the body `origin saw <path>`. Returns its port.
#[allow(dead_code)]
pub async fn keep_alive_origin() -> u16 {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the origin");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("origin saw {}", req.uri().path());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(body),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// A rustls client configuration trusting the server's development edge CA, presenting `identity` (certificate and
/// key PEM files) when given, offering `alpn`.
#[allow(dead_code)]
pub fn tls_client_config(
    server: &Server,
    identity: Option<(&std::path::Path, &std::path::Path)>,
    alpn: &[&[u8]],
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server.data_dir().join("edge-dev-ca.pem")).expect("the edge CA") {
        roots.add(cert.expect("a PEM certificate")).expect("a root");
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .expect("the client certificate")
                .map(|c| c.expect("a PEM certificate"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).expect("the client key");
            builder.with_client_auth_cert(chain, key).expect("a client identity")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    std::sync::Arc::new(config)
}

/// One kept-alive TLS connection to the edge, speaking HTTP/1.1 or HTTP/2 as ALPN chose.
#[allow(dead_code)]
pub struct EdgeConn {
    /// The SNI, also sent as the request's host.
    host: String,
    send: Sender,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>),
}

#[allow(dead_code)]
impl EdgeConn {
    /// Connects to 127.0.0.1:`edge_port` with SNI `localhost`; see [`EdgeConn::connect_to`].
    pub async fn connect(
        edge_port: u16,
        config: std::sync::Arc<rustls::ClientConfig>,
        h2: bool,
    ) -> Result<EdgeConn, Box<dyn std::error::Error + Send + Sync>> {
        EdgeConn::connect_to(edge_port, config, h2, "localhost").await
    }

    /// Connects to 127.0.0.1:`edge_port` with `config` and SNI `host`; `h2` picks the protocol (it must match the
    /// ALPN offered).
    pub async fn connect_to(
        edge_port: u16,
        config: std::sync::Arc<rustls::ClientConfig>,
        h2: bool,
        host: &str,
    ) -> Result<EdgeConn, Box<dyn std::error::Error + Send + Sync>> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", edge_port)).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from(host.to_owned())?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
        let io = TokioIo::new(tls);
        let send = if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(send)
        };
        Ok(EdgeConn {
            host: host.to_owned(),
            send,
        })
    }

    /// `GET https://<host><path>`: the status and body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, String), Box<dyn std::error::Error + Send + Sync>> {
        use http_body_util::BodyExt as _;
        let response = match &mut self.send {
            Sender::H1(send) => {
                let req = hyper::Request::get(path)
                    .header("host", &self.host)
                    .body(http_body_util::Empty::new())?;
                send.ready().await?;
                send.send_request(req).await?
            }
            Sender::H2(send) => {
                let req =
                    hyper::Request::get(format!("https://{}{path}", self.host)).body(http_body_util::Empty::new())?;
                send.ready().await?;
                send.send_request(req).await?
            }
        };
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
