//! A fleet on PostgreSQL: two real `portcullis serve` nodes sharing one database and one master key. Configured
//! through node A's API only, node B's edge enforces it, and a revocation made through node A blocks the certificate
//! on node B within a second. Runs when `PORTCULLIS_TEST_DATABASE_URL` names a PostgreSQL server it may create
//! databases on (CI sets it); each run gets a database of its own, dropped afterwards.

use std::io::Read as _;
use std::time::{Duration, Instant};

use sqlx::Connection as _;

use crate::support::{EdgeConn, Server, issue_client_cert, keep_alive_origin, ok, scratch, tls_client_config};

/// A database made for one test, dropped (best effort, with its connections) when this is dropped.
pub(crate) struct ScratchDb {
    admin_url: String,
    name: String,
    pub(crate) url: String,
}

impl ScratchDb {
    pub(crate) fn create(rt: &tokio::runtime::Runtime, admin_url: &str) -> ScratchDb {
        let name = format!("portcullis_fleet_{}", random_hex(6));
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(admin_url)
                .await
                .expect("connect to the test PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create the test database");
        });
        ScratchDb {
            admin_url: admin_url.to_owned(),
            url: url_with_database(admin_url, &name),
            name,
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Its own thread and runtime: this may run while a panic unwinds out of another runtime's `block_on`.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// `postgres://user@host:port/db?x` with the database part replaced by `name`.
fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Polls GET /api on `conn` every 50 ms until it answers `want`, for at most `limit` after `from`; returns the time
/// from `from` to the first such answer, or the statuses seen.
fn poll_until(
    rt: &tokio::runtime::Runtime,
    conn: &mut EdgeConn,
    want: u16,
    from: Instant,
    limit: Duration,
) -> Result<Duration, Vec<String>> {
    let mut seen = Vec::new();
    loop {
        let got = rt.block_on(conn.get("/api"));
        let at = from.elapsed();
        match got {
            Ok((status, _)) if status == want => return Ok(at),
            Ok((status, _)) => seen.push(format!("{status} at {} ms", at.as_millis())),
            Err(err) => seen.push(format!("{err} at {} ms", at.as_millis())),
        }
        if at >= limit {
            return Err(seen);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_revocation_through_node_a_blocks_on_node_b_within_a_second() {
    let Ok(admin_url) = std::env::var("PORTCULLIS_TEST_DATABASE_URL") else {
        eprintln!(
            "SKIPPED fleet test: PORTCULLIS_TEST_DATABASE_URL is not set, so the two-node PostgreSQL test did not run"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let db = ScratchDb::create(&rt, &admin_url);
    let master_key = random_hex(32);
    let env = [("PORTCULLIS_MASTER_KEY", master_key.as_str())];
    let a = Server::start_with(scratch(), &["--database-url", &db.url], &env);
    let b = Server::start_with(scratch(), &["--database-url", &db.url], &env);
    assert!(
        a.data_dir().join("admin-token").exists() && !b.data_dir().join("admin-token").exists(),
        "node A made the first admin token; node B found it in the shared database"
    );

    // Configured through node A only.
    let origin = format!("http://127.0.0.1:{}", rt.block_on(keep_alive_origin()));
    ok(&a.cli(&["zone", "add", "localhost"]));
    ok(&a.cli(&["host", "add", "localhost", "--origin", &origin]));
    ok(&a.cli(&["mtls", "enable", "localhost"]));
    ok(&a.cli(&["rule", "add-mtls", "--path", "/api"]));
    let id = issue_client_cert(&a, "device");
    let device = a.dir.path().join("device");
    let (cert, key) = (device.join("cert.pem"), device.join("key.pem"));

    // Node B (its own development edge CA) serves it: with the certificate 200, without it 403.
    let with_cert = tls_client_config(&b, Some((&cert, &key)), &[b"http/1.1"]);
    let mut conn = rt
        .block_on(EdgeConn::connect(b.edge_port, with_cert, false))
        .expect("a connection to node B's edge");
    let configured = Instant::now();
    let took = poll_until(&rt, &mut conn, 200, configured, Duration::from_secs(5))
        .unwrap_or_else(|seen| panic!("node B never let the certificate through: {seen:?}"));
    eprintln!(
        "fleet: node B served node A's configuration {} ms after it was written",
        took.as_millis()
    );
    let (status, body) = rt.block_on(conn.get("/api")).expect("a response");
    assert_eq!((status, body.as_str()), (200, "origin saw /api"));
    let anonymous = tls_client_config(&b, None, &[b"http/1.1"]);
    let (status, body) = rt
        .block_on(async {
            EdgeConn::connect(b.edge_port, anonymous, false)
                .await?
                .get("/api")
                .await
        })
        .expect("a response");
    assert_eq!(status, 403, "node B enforces the rule written through node A: {body}");

    // Revoked through node A: node B blocks it within a second.
    let start = Instant::now();
    ok(&a.cli(&["cert", "revoke", &id]));
    let revoked = Instant::now();
    let blocked = poll_until(&rt, &mut conn, 403, revoked, Duration::from_secs(1))
        .unwrap_or_else(|seen| panic!("node B did not block the revoked certificate within 1 s: {seen:?}"));
    eprintln!(
        "fleet: node B blocked the certificate revoked through node A {} ms after `cert revoke` returned ({} ms after \
         it started; polled every 50 ms)",
        blocked.as_millis(),
        (revoked - start + blocked).as_millis()
    );
    assert!(blocked <= Duration::from_secs(1));

    // And reactivated through node A: node B lets it through again.
    ok(&a.cli(&["cert", "reactivate", &id]));
    let reactivated = Instant::now();
    let back = poll_until(&rt, &mut conn, 200, reactivated, Duration::from_secs(1))
        .unwrap_or_else(|seen| panic!("node B did not let the reactivated certificate through within 1 s: {seen:?}"));
    eprintln!(
        "fleet: node B let it through again {} ms after `cert reactivate` returned",
        back.as_millis()
    );

    // Node A, where the reactivation was written, serves it too before its sessions are tried (its edge takes the
    // change with its next snapshot, which a busy machine may make a moment later than node B's).
    let with_cert_a = tls_client_config(&a, Some((&cert, &key)), &[b"http/1.1"]);
    let mut conn_a = rt
        .block_on(EdgeConn::connect(a.edge_port, with_cert_a, false))
        .expect("connect to node A");
    poll_until(&rt, &mut conn_a, 200, Instant::now(), Duration::from_secs(5))
        .unwrap_or_else(|seen| panic!("node A did not let the reactivated certificate through: {seen:?}"));
    drop(conn_a);

    // A TLS session made with node A resumes on node B: both derive their ticket keys from the shared master
    // key. One client (one session store) that trusts both nodes' development edge CAs.
    let both = {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for node in [&a, &b] {
            for cert in CertificateDer::pem_file_iter(node.data_dir().join("edge-dev-ca.pem")).expect("edge CA") {
                roots.add(cert.expect("PEM")).expect("root");
            }
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .expect("client certificate")
            .map(|c| c.expect("PEM"))
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).expect("client key");
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client identity");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    };
    let handshake = |port: u16| -> rustls::HandshakeKind {
        rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let mut tls = tokio_rustls::TlsConnector::from(both.clone())
                .connect(rustls_pki_types::ServerName::try_from("localhost").expect("name"), tcp)
                .await
                .expect("handshake");
            // The ticket follows the handshake: read the response to a request, and with it the ticket.
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            tls.write_all(b"GET /api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .expect("request");
            let mut response = Vec::new();
            let _ = tls.read_to_end(&mut response).await;
            assert!(
                response.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&response)
            );
            tls.get_ref().1.handshake_kind().expect("handshake done")
        })
    };
    assert_eq!(handshake(a.edge_port), rustls::HandshakeKind::Full);
    assert_eq!(
        handshake(b.edge_port),
        rustls::HandshakeKind::Resumed,
        "node B resumed node A's session"
    );
    drop((a, b));
    drop(db);
}
