//! The store suite. Every test runs on SQLite, and on PostgreSQL when `PORTCULLIS_TEST_DATABASE_URL` is set (each test
//! gets a database of its own there, created and dropped around it).

use std::future::Future;
use std::time::Duration;

use sqlx::Connection as _;

use crate::{Actor, Store, StoreError, TokenScope};

/// A PostgreSQL database made for one test; dropped (best effort) when the test ends.
struct PgScratch {
    admin_url: String,
    name: String,
}

impl PgScratch {
    async fn new(admin_url: &str) -> (PgScratch, String) {
        let name = format!("portcullis_test_{}", crate::ids::new_id());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let mut url = url_with_database(admin_url, &name);
        if url.is_empty() {
            url = admin_url.to_owned();
        }
        (
            PgScratch {
                admin_url: admin_url.to_owned(),
                name,
            },
            url,
        )
    }

    async fn drop_db(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// `postgres://user@host:port/db?x` with the database part replaced by `name`.
fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Runs `test` against a fresh SQLite store, then against a fresh PostgreSQL store if one is configured.
async fn on_both<F, Fut>(test: F)
where
    F: Fn(Store, Option<String>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_sqlite(&dir.path().join("portcullis.db"))
        .await
        .expect("open sqlite store");
    test(store, None).await;

    if let Ok(admin_url) = std::env::var("PORTCULLIS_TEST_DATABASE_URL") {
        let (scratch, url) = PgScratch::new(&admin_url).await;
        let store = Store::open(&url).await.expect("open postgres store");
        test(store.clone(), Some(url)).await;
        drop(store);
        scratch.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_is_created_once_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    let first = Store::open_sqlite(&path)
        .await
        .expect("open")
        .account()
        .await
        .expect("account");
    assert_eq!(first.id.len(), 32);
    assert!(
        first
            .id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let again = Store::open_sqlite(&path)
        .await
        .expect("reopen")
        .account()
        .await
        .expect("account");
    assert_eq!(first, again);

    on_both(|store, url| async move {
        let account = store.account().await.expect("account");
        if let Some(url) = url {
            // A second node opening the same database sees the same account.
            let other = Store::open(&url).await.expect("second handle");
            assert_eq!(other.account().await.expect("account"), account);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zones_client_certificate_policy_is_set_read_and_removed() {
    on_both(|store, _| async move {
        let actor = Actor::token("0123456789abcdef0123456789abcdef");
        let zone = store.create_zone("policy.example", &actor).await.expect("create");
        assert_eq!(store.client_certificate_policy(&zone.id).await.expect("read"), None);
        let policy = serde_json::json!({"max_validity_days": 90, "allowed_names": ["*.devices.policy.example"]});
        store
            .set_client_certificate_policy(&zone.id, Some(&policy), &actor)
            .await
            .expect("set");
        assert_eq!(
            store.client_certificate_policy(&zone.id).await.expect("read"),
            Some(policy)
        );
        store
            .set_client_certificate_policy(&zone.id, None, &actor)
            .await
            .expect("remove");
        assert_eq!(store.client_certificate_policy(&zone.id).await.expect("read"), None);
        assert!(store.client_certificate_policy("nope").await.is_err());
        assert!(store.set_client_certificate_policy("nope", None, &actor).await.is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_create_list_get_delete() {
    on_both(|store, _| async move {
        let actor = Actor::token("0123456789abcdef0123456789abcdef");
        let zone = store.create_zone("Example.COM", &actor).await.expect("create");
        assert_eq!(zone.name, "example.com");
        assert_eq!(zone.status, "active");
        assert_eq!(store.zone(&zone.id).await.expect("get"), zone);

        let err = store.create_zone("example.com", &actor).await.expect_err("duplicate");
        assert_eq!(err.to_string(), "zone \"example.com\" already exists");

        store.create_zone("a.example.net", &actor).await.expect("second zone");
        let names: Vec<_> = store
            .list_zones()
            .await
            .expect("list")
            .into_iter()
            .map(|z| z.name)
            .collect();
        assert_eq!(names, ["a.example.net", "example.com"]);

        store.delete_zone(&zone.id, &actor).await.expect("delete");
        let err = store.zone(&zone.id).await.expect_err("gone");
        assert!(matches!(err, StoreError::NotFound { kind: "zone", .. }), "{err}");
        let err = store.delete_zone(&zone.id, &actor).await.expect_err("second delete");
        assert_eq!(err.to_string(), format!("zone {:?} not found", zone.id));

        let audit = store.audit_log(10).await.expect("audit");
        let actions: Vec<_> = audit
            .iter()
            .map(|a| (a.action.as_str(), a.object_type.as_str()))
            .collect();
        assert_eq!(
            actions[..3],
            [("delete", "zone"), ("create", "zone"), ("create", "zone")]
        );
        assert_eq!(audit[0].token_id.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(audit[0].object_id, zone.id);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_normalization_defaults_and_changes() {
    on_both(|store, _| async move {
        let actor = Actor::token("0123456789abcdef0123456789abcdef");
        let zone = store.create_zone("example.com", &actor).await.expect("create");
        assert_eq!(
            (
                zone.url_normalization_scope.as_str(),
                zone.url_normalization_type.as_str()
            ),
            ("incoming", "cloudflare")
        );
        let before = store.generation().await.expect("generation");
        let changed = store
            .set_url_normalization(&zone.id, "both", "rfc3986", &actor)
            .await
            .expect("set");
        assert_eq!(
            (
                changed.url_normalization_scope.as_str(),
                changed.url_normalization_type.as_str()
            ),
            ("both", "rfc3986")
        );
        assert!(
            store.generation().await.expect("generation") > before,
            "the edge rebuilds"
        );
        let state = store.load_edge_state().await.expect("edge state");
        assert_eq!(state.zones[0].url_normalization_scope, "both");

        let err = store
            .set_url_normalization(&zone.id, "outgoing", "rfc3986", &actor)
            .await
            .expect_err("bad scope");
        assert_eq!(err.to_string(), "scope \"outgoing\" is not one of incoming, both, none");
        let err = store
            .set_url_normalization(&zone.id, "none", "strict", &actor)
            .await
            .expect_err("bad type");
        assert_eq!(err.to_string(), "type \"strict\" is not one of cloudflare, rfc3986");
        let err = store
            .set_url_normalization("nope", "none", "rfc3986", &actor)
            .await
            .expect_err("no zone");
        assert!(matches!(err, StoreError::NotFound { kind: "zone", .. }), "{err}");
        // Refused writes change nothing.
        assert_eq!(store.zone(&zone.id).await.expect("get"), changed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_zone_names_are_refused_with_the_reason() {
    on_both(|store, _| async move {
        let cases = [
            ("", "invalid DNS name \"\": it is empty"),
            ("a..b", "invalid DNS name \"a..b\": empty label"),
            ("-a.com", "invalid DNS name \"-a.com\": a label starts or ends with '-'"),
            ("a_b.com", "invalid DNS name \"a_b.com\": character '_' is not allowed"),
        ];
        for (name, message) in cases {
            let err = store.create_zone(name, &Actor::system()).await.expect_err(name);
            assert_eq!(err.to_string(), message);
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let err = store
            .create_zone(&long_label, &Actor::system())
            .await
            .expect_err("long label");
        assert!(
            err.to_string().ends_with("a label is longer than 63 characters"),
            "{err}"
        );
        assert!(
            store.list_zones().await.expect("list").is_empty(),
            "nothing half-written"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_authenticate_until_revoked() {
    on_both(|store, _| async move {
        let (token, secret) = store
            .create_token("ci", TokenScope::Read, &Default::default(), &Actor::system())
            .await
            .expect("create");
        assert!(secret.starts_with("pct_"));
        assert_eq!(store.authenticate(&secret).await.expect("auth"), Some(token.clone()));
        assert_eq!(store.authenticate("pct_wrong").await.expect("auth"), None);
        assert_eq!(store.authenticate("").await.expect("auth"), None);

        store.revoke_token(&token.id, &Actor::system()).await.expect("revoke");
        assert_eq!(store.authenticate(&secret).await.expect("auth"), None);
        let listed = store.list_tokens().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked_on.is_some());
        let err = store
            .revoke_token(&token.id, &Actor::system())
            .await
            .expect_err("already revoked");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");

        // Restrictions are kept as given.
        let restrictions = crate::TokenRestrictions {
            not_before: Some(1_700_000_000),
            expires_on: Some(2_000_000_000),
            ip_in: vec!["10.0.0.0/8".into(), "192.0.2.7".into()],
            ip_not_in: vec!["10.9.0.0/16".into()],
            zones: Some(vec!["zone-a".into(), "zone-b".into()]),
        };
        let (limited, secret) = store
            .create_token("limited", TokenScope::Certificates, &restrictions, &Actor::system())
            .await
            .expect("create");
        assert_eq!(limited.restrictions, restrictions);
        let read = store.authenticate(&secret).await.expect("auth").expect("live");
        assert_eq!(read.restrictions, restrictions);
        assert!(read.restrictions.live_at(1_800_000_000));
        assert!(!read.restrictions.live_at(2_000_000_000) && !read.restrictions.live_at(1_600_000_000));
        let listed = store.list_tokens().await.expect("list");
        let listed = listed.iter().find(|t| t.id == limited.id).expect("listed");
        assert_eq!(listed.restrictions, restrictions);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_bumps_the_generation_and_notifies_subscribers() {
    on_both(|store, _| async move {
        let mut feed = store.subscribe();
        let before = *feed.borrow_and_update();
        assert_eq!(before, store.generation().await.expect("generation"));
        store
            .create_zone("feed.example", &Actor::system())
            .await
            .expect("create");
        tokio::time::timeout(Duration::from_secs(1), feed.changed())
            .await
            .expect("notified")
            .expect("open");
        assert_eq!(*feed.borrow(), before + 1);

        // A refused write changes nothing and announces nothing.
        store
            .create_zone("feed.example", &Actor::system())
            .await
            .expect_err("duplicate");
        assert_eq!(store.generation().await.expect("generation"), before + 1);
        assert!(!feed.has_changed().expect("open"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_postgres_handle_reaches_another_within_a_second() {
    let Ok(admin_url) = std::env::var("PORTCULLIS_TEST_DATABASE_URL") else {
        eprintln!("PORTCULLIS_TEST_DATABASE_URL is not set: the cross-node PostgreSQL test did not run");
        return;
    };
    let (scratch, url) = PgScratch::new(&admin_url).await;
    {
        let node_a = Store::open(&url).await.expect("node a");
        let node_b = Store::open(&url).await.expect("node b");
        let mut feed_b = node_b.subscribe();
        let seen = *feed_b.borrow_and_update();
        // Give node b's listener a moment to LISTEN; the catch-up read would cover a miss anyway.
        tokio::time::sleep(Duration::from_millis(200)).await;

        let written_at = std::time::Instant::now();
        node_a
            .create_zone("fleet.example", &Actor::system())
            .await
            .expect("write on a");
        let wanted = node_a.generation().await.expect("generation");
        assert!(wanted > seen);
        tokio::time::timeout(Duration::from_secs(1), feed_b.wait_for(|g| *g >= wanted))
            .await
            .expect("node b saw the write within a second")
            .expect("feed open");
        eprintln!("cross-node change reached node b after {:?}", written_at.elapsed());
        assert_eq!(node_b.list_zones().await.expect("list on b")[0].name, "fleet.example");
    }
    scratch.drop_db().await;
}

#[tokio::test]
async fn unsupported_urls_are_named() {
    let err = Store::open("mysql://x").await.expect_err("mysql");
    assert_eq!(
        err.to_string(),
        "unsupported database URL \"mysql://x\": expected sqlite://PATH or postgres://…"
    );
}

#[test]
fn database_name_is_replaced_in_urls() {
    assert_eq!(
        url_with_database("postgres://u@h:5/db?sslmode=disable", "n"),
        "postgres://u@h:5/n?sslmode=disable"
    );
    assert_eq!(url_with_database("postgres://u@h", "n"), "postgres://u@h/n");
    assert_eq!(url_with_database("postgresql:///postgres", "n"), "postgresql:///n");
}

fn sample_cert(zone_id: &str, ca_id: &str, n: u32) -> crate::ClientCertificate {
    crate::ClientCertificate {
        id: crate::ids::new_id(),
        zone_id: zone_id.to_owned(),
        ca_id: ca_id.to_owned(),
        certificate: "-----BEGIN CERTIFICATE-----\n…".to_owned(),
        csr: String::new(),
        common_name: format!("device-{n}"),
        country: "US".into(),
        state: String::new(),
        location: String::new(),
        organization: "Acme".into(),
        organizational_unit: String::new(),
        ski: "aa".repeat(20),
        serial_number: format!("{n:040x}"),
        fingerprint_sha256: format!("{n:064x}"),
        signature: "ECDSAWithSHA256".into(),
        issued_on: 1_700_000_000 + i64::from(n),
        expires_on: 2_000_000_000,
        validity_days: 3650,
        status: crate::ClientCertificateStatus::Active,
        revoked_on: None,
    }
}

fn sample_ca(name: &str) -> crate::NewManagedCa {
    crate::NewManagedCa {
        id: crate::ids::new_id(),
        name: name.to_owned(),
        certificate: format!("PEM of {name}"),
        sealed_key: vec![1, 2, 3, 0, 255],
        key_type: "p256".to_owned(),
        chain: String::new(),
    }
}

fn sample_byo(name: &str) -> crate::NewMtlsCertificate {
    crate::NewMtlsCertificate {
        name: name.to_owned(),
        ca: true,
        certificates: "-----BEGIN CERTIFICATE-----\n…".to_owned(),
        issuer: "CN=Example Root".to_owned(),
        serial_number: "0a1b".to_owned(),
        signature: "SHA256WithRSA".to_owned(),
        expires_on: 2_000_000_000,
        sealed_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostnames_live_in_their_zone() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let settings = serde_json::json!({"mtls_mode": "request", "forwarding": "rfc9440"});
        let host = store
            .create_hostname(
                &zone.id,
                "API.example.com",
                "http://127.0.0.1:9000",
                settings.clone(),
                &a,
            )
            .await
            .expect("host");
        assert_eq!(host.hostname, "api.example.com");
        assert_eq!(
            store.hostname(&zone.id, &host.id).await.expect("get").settings,
            settings
        );

        let err = store
            .create_hostname(&zone.id, "api.example.net", "http://x", serde_json::json!({}), &a)
            .await;
        assert_eq!(
            err.expect_err("other zone").to_string(),
            "hostname \"api.example.net\" is not in zone \"example.com\""
        );
        let err = store
            .create_hostname(&zone.id, "badexample.com", "http://x", serde_json::json!({}), &a)
            .await;
        assert!(err.is_err(), "a suffix that is not a label boundary is not in the zone");
        let err = store
            .create_hostname(&zone.id, "api.example.com", "http://x", serde_json::json!({}), &a)
            .await;
        assert_eq!(
            err.expect_err("duplicate").to_string(),
            "hostname \"api.example.com\" already exists"
        );

        let updated = store
            .update_hostname(&zone.id, &host.id, Some("https://origin.internal"), None, None, &a)
            .await
            .expect("update");
        assert_eq!(updated.origin, "https://origin.internal");
        assert_eq!(updated.settings, settings);
        assert_eq!(store.list_hostnames(&zone.id).await.expect("list"), vec![updated]);

        store
            .replace_hostname_associations(&zone.id, &crate::CaRef::Managed, &["api.example.com".into()], &a)
            .await
            .expect("assoc");
        store.delete_hostname(&zone.id, &host.id, &a).await.expect("delete");
        assert!(store.list_hostnames(&zone.id).await.expect("list").is_empty());
        assert!(
            store
                .hostname_associations(&zone.id, &crate::CaRef::Managed)
                .await
                .expect("assoc")
                .is_empty()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_ca_request_becomes_the_active_ca_when_installed() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let first = store.add_managed_ca(sample_ca("first"), &a).await.expect("first");
        let request = |name: &str| crate::NewManagedCaRequest {
            id: crate::ids::new_id(),
            name: name.to_owned(),
            csr: format!("CSR of {name}"),
            sealed_key: vec![9, 8, 7],
            key_type: "p384".to_owned(),
        };
        let waiting = store.add_managed_ca_request(request("sub"), &a).await.expect("request");
        assert_eq!(
            store.managed_ca_requests().await.expect("list"),
            std::slice::from_ref(&waiting)
        );
        // A request is not a CA: the edge and issuance see only the first CA.
        assert_eq!(store.managed_cas().await.expect("cas").len(), 1);
        assert_eq!(store.load_edge_state().await.expect("state").managed_cas.len(), 1);

        let mut ca = sample_ca("sub");
        let err = store
            .install_managed_ca(&waiting.id, ca.clone(), &a)
            .await
            .expect_err("other id");
        assert!(err.to_string().contains("is not request"), "{err}");
        ca.id = waiting.id.clone();
        ca.sealed_key = waiting.sealed_key.clone();
        ca.chain = "PEM of the root".to_owned();
        let installed = store
            .install_managed_ca(&waiting.id, ca.clone(), &a)
            .await
            .expect("install");
        assert_eq!(installed.status, crate::ManagedCaStatus::Active);
        let cas = store.managed_cas().await.expect("cas");
        assert_eq!(cas[0], installed);
        assert_eq!(cas[0].chain, "PEM of the root");
        assert_eq!(
            (cas[1].id.as_str(), cas[1].status),
            (first.id.as_str(), crate::ManagedCaStatus::Trusted)
        );
        assert!(store.managed_ca_requests().await.expect("list").is_empty());
        // Installed once: the same certificate cannot be installed again, nor a second CA under that id.
        let err = store.install_managed_ca(&waiting.id, ca, &a).await.expect_err("twice");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        assert_eq!(store.managed_cas().await.expect("cas").len(), 2);

        for n in 0..crate::MAX_MANAGED_CA_REQUESTS {
            store
                .add_managed_ca_request(request(&format!("r{n}")), &a)
                .await
                .expect("request");
        }
        let err = store
            .add_managed_ca_request(request("one more"), &a)
            .await
            .expect_err("limit");
        assert!(err.to_string().contains("install or delete one first"), "{err}");
        let id = store.managed_ca_requests().await.expect("list")[0].id.clone();
        store.delete_managed_ca_request(&id, &a).await.expect("delete");
        let err = store.delete_managed_ca_request(&id, &a).await.expect_err("gone");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        store
            .add_managed_ca_request(request("room again"), &a)
            .await
            .expect("request");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_ca_rotation_keeps_the_old_ca_trusted_until_retired() {
    on_both(|store, _| async move {
        let a = Actor::system();
        assert_eq!(store.active_managed_ca().await.expect("none yet"), None);
        let first = store.add_managed_ca(sample_ca("first"), &a).await.expect("first");
        assert_eq!(first.sealed_key, vec![1, 2, 3, 0, 255]);
        let second = store.add_managed_ca(sample_ca("second"), &a).await.expect("second");
        assert_eq!(
            store.active_managed_ca().await.expect("active").map(|c| c.id),
            Some(second.id.clone())
        );
        let statuses: Vec<_> = store
            .managed_cas()
            .await
            .expect("list")
            .into_iter()
            .map(|c| (c.name, c.status))
            .collect();
        assert!(statuses.contains(&("first".into(), crate::ManagedCaStatus::Trusted)));
        assert!(statuses.contains(&("second".into(), crate::ManagedCaStatus::Active)));

        let err = store.retire_managed_ca(&second.id, &a).await.expect_err("active");
        assert_eq!(
            err.to_string(),
            "the active managed CA cannot be retired; rotate to a new CA first"
        );
        store.retire_managed_ca(&first.id, &a).await.expect("retire");
        let state = store.load_edge_state().await.expect("state");
        assert_eq!(
            state.managed_cas.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            [second.id.as_str()]
        );

        assert_eq!(store.next_crl_number(&second.id).await.expect("crl 1"), 1);
        assert_eq!(store.next_crl_number(&second.id).await.expect("crl 2"), 2);
        assert!(matches!(
            store.next_crl_number("nope").await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byo_cas_have_a_limit_and_cannot_be_deleted_while_associated() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let ca = store.add_mtls_certificate(sample_byo("one"), 2, &a).await.expect("one");
        store.add_mtls_certificate(sample_byo("two"), 2, &a).await.expect("two");
        match store.add_mtls_certificate(sample_byo("three"), 2, &a).await {
            Err(StoreError::LimitReached { code: 1489, message }) => {
                assert_eq!(message, "Hit maximum CA cert allocation.")
            }
            other => panic!("expected the CA limit, got {other:?}"),
        }

        let byo = crate::CaRef::Mtls(ca.id.clone());
        let names = store
            .replace_hostname_associations(
                &zone.id,
                &byo,
                &["b.example.com".into(), "a.example.com".into(), "a.example.com".into()],
                &a,
            )
            .await
            .expect("associate");
        assert_eq!(names, ["a.example.com", "b.example.com"]);
        assert_eq!(
            store.mtls_certificate_associations(&ca.id).await.expect("assocs").len(),
            2
        );
        let err = store.delete_mtls_certificate(&ca.id, &a).await.expect_err("in use");
        assert!(err.to_string().contains("is associated with 2 hostname(s)"), "{err}");

        let unknown = crate::CaRef::Mtls("ffffffffffffffffffffffffffffffff".into());
        assert!(matches!(
            store.replace_hostname_associations(&zone.id, &unknown, &[], &a).await,
            Err(StoreError::NotFound { .. })
        ));
        let err = store
            .replace_hostname_associations(&zone.id, &byo, &["x.other.org".into()], &a)
            .await
            .expect_err("zone");
        assert_eq!(
            err.to_string(),
            "hostname \"x.other.org\" is not in zone \"example.com\""
        );
        assert_eq!(
            store
                .hostname_associations(&zone.id, &byo)
                .await
                .expect("unchanged")
                .len(),
            2,
            "nothing half-written"
        );

        store
            .set_mtls_certificate_crl(&ca.id, &[0x30, 0x03, 1, 2, 3], &a)
            .await
            .expect("crl");
        assert_eq!(
            store.mtls_certificate(&ca.id).await.expect("get").crl,
            Some(vec![0x30, 0x03, 1, 2, 3])
        );

        assert!(
            store
                .replace_hostname_associations(&zone.id, &byo, &[], &a)
                .await
                .expect("clear")
                .is_empty()
        );
        store.delete_mtls_certificate(&ca.id, &a).await.expect("delete");
        assert_eq!(store.list_mtls_certificates().await.expect("list").len(), 1);
    })
    .await;
}

#[tokio::test]
async fn certificates_revoked_under_an_uploaded_ca_reach_the_edge_state_and_go_with_it() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let ca = store.add_mtls_certificate(sample_byo("one"), 2, &a).await.expect("ca");
        let by_serial = |serial: &str| crate::NewMtlsRevocation {
            serial_number: serial.to_owned(),
            note: "lost laptop".into(),
            ..Default::default()
        };
        let first = store
            .add_mtls_revocation(&ca.id, &by_serial("00:0A:BC"), &a)
            .await
            .expect("revoke");
        assert_eq!(first.serial_number, "0abc", "hex of the magnitude, lower case");
        let again = store
            .add_mtls_revocation(&ca.id, &by_serial("abc"), &a)
            .await
            .expect("again");
        assert_eq!(again, first, "revoking twice keeps the first");
        let zero = store
            .add_mtls_revocation(&ca.id, &by_serial("0"), &a)
            .await
            .expect("serial zero");
        assert_eq!(zero.serial_number, "00", "whole bytes, as the edge decodes them");
        store
            .delete_mtls_revocation(&ca.id, &zero.id, &a)
            .await
            .expect("unrevoke");
        let long = store
            .add_mtls_revocation(&ca.id, &by_serial(&format!("00:{}ab", "ab:".repeat(19))), &a)
            .await
            .expect("20 bytes after a sign byte");
        assert_eq!(long.serial_number, "ab".repeat(20));
        store
            .delete_mtls_revocation(&ca.id, &long.id, &a)
            .await
            .expect("unrevoke");
        for bad in ["", "xyz", &"ab".repeat(21)] {
            assert!(
                matches!(
                    store.add_mtls_revocation(&ca.id, &by_serial(bad), &a).await,
                    Err(StoreError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            store
                .add_mtls_revocation("ffffffffffffffffffffffffffffffff", &by_serial("01"), &a)
                .await,
            Err(StoreError::NotFound { .. })
        ));
        let whole = crate::NewMtlsRevocation {
            serial_number: "7f".into(),
            issuer_der: "3110300E".into(),
            issuer: "CN=Team CA".into(),
            fingerprint_sha256: "CD".repeat(32),
            note: String::new(),
        };
        let second = store.add_mtls_revocation(&ca.id, &whole, &a).await.expect("second");
        assert_eq!(
            (second.issuer_der.as_str(), second.fingerprint_sha256.as_str()),
            ("3110300e", "cd".repeat(32).as_str())
        );
        // Oldest first; both were made within the same second, so compare them by id.
        let mut listed = store.mtls_revocations(&ca.id).await.expect("list");
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        let mut made = vec![first.clone(), second.clone()];
        made.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(listed, made);
        let state = store.load_edge_state().await.expect("edge state");
        assert_eq!(
            state.mtls_revocations,
            [
                (ca.id.clone(), "0abc".to_owned(), String::new()),
                (ca.id.clone(), "7f".to_owned(), "3110300e".to_owned())
            ]
        );
        store
            .delete_mtls_revocation(&ca.id, &first.id, &a)
            .await
            .expect("unrevoke");
        assert!(matches!(
            store.delete_mtls_revocation(&ca.id, &first.id, &a).await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.mtls_revocations(&ca.id).await.expect("list"), [second]);
        // Failing closed on stale CRLs, read back by the API and the edge.
        store.set_mtls_crl_grace(&ca.id, Some(3600), &a).await.expect("grace");
        assert_eq!(
            store.mtls_certificate(&ca.id).await.expect("ca").crl_grace_seconds,
            Some(3600)
        );
        let state = store.load_edge_state().await.expect("edge state");
        assert_eq!(state.mtls_certificates[0].crl_grace_seconds, Some(3600));
        assert!(matches!(
            store.set_mtls_crl_grace(&ca.id, Some(-1), &a).await,
            Err(StoreError::Invalid(_))
        ));
        store.set_mtls_crl_grace(&ca.id, None, &a).await.expect("off");
        assert_eq!(
            store.mtls_certificate(&ca.id).await.expect("ca").crl_grace_seconds,
            None
        );
        store.delete_mtls_certificate(&ca.id, &a).await.expect("delete the CA");
        assert!(
            store
                .load_edge_state()
                .await
                .expect("edge state")
                .mtls_revocations
                .is_empty()
        );
    })
    .await;
}

/// Associates a hostname with a CA that a transaction on `other` (another connection) is deleting meanwhile. Once
/// the delete commits, the association must have been refused: none may name a CA that is gone. A macro, as the
/// two backends' connections share no convenient trait bound.
macro_rules! associate_during_delete {
    ($store:expr, $other:expr) => {{
        let store: &Store = $store;
        let mut other = $other;
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let ca = store.add_mtls_certificate(sample_byo("one"), 2, &a).await.expect("ca");
        let mut delete = other.begin().await.expect("begin");
        sqlx::query("DELETE FROM mtls_certificates WHERE id = $1")
            .bind(ca.id.clone())
            .execute(&mut *delete)
            .await
            .expect("delete, uncommitted");
        let writer = store.clone();
        let (zone_id, ca_id) = (zone.id.clone(), ca.id.clone());
        let associate = tokio::spawn(async move {
            writer
                .replace_hostname_associations(&zone_id, &crate::CaRef::Mtls(ca_id), &["api.example.com".into()], &a)
                .await
        });
        // Long enough for the association's transaction to reach the delete's lock.
        tokio::time::sleep(Duration::from_millis(300)).await;
        delete.commit().await.expect("commit the delete");
        match associate.await.expect("task") {
            Err(StoreError::NotFound { .. } | StoreError::Conflict(_)) => {}
            other => panic!("the association of a deleted CA was {other:?}"),
        }
        assert!(
            store
                .hostname_associations(&zone.id, &crate::CaRef::Mtls(ca.id.clone()))
                .await
                .expect("associations")
                .is_empty(),
            "an association outlived its CA"
        );
    }};
}

/// The other order: a CA deleted while a transaction on `other` is associating a hostname with it (its row
/// written, and on PostgreSQL the CA's row share-locked, as `replace_hostname_associations` does). Once that
/// commits, the delete must have been refused.
macro_rules! delete_during_associate {
    ($store:expr, $other:expr, $postgres:expr) => {{
        let store: &Store = $store;
        let mut other = $other;
        let a = Actor::system();
        let zone = store.create_zone("example.org", &a).await.expect("zone");
        let ca = store.add_mtls_certificate(sample_byo("two"), 2, &a).await.expect("ca");
        let mut associate = other.begin().await.expect("begin");
        sqlx::query("INSERT INTO hostname_associations (zone_id, hostname, ca_ref, created_on) VALUES ($1, $2, $3, 0)")
            .bind(zone.id.clone())
            .bind("api.example.org".to_owned())
            .bind(ca.id.clone())
            .execute(&mut *associate)
            .await
            .expect("association, uncommitted");
        if $postgres {
            sqlx::query("SELECT id FROM mtls_certificates WHERE id = $1 FOR SHARE")
                .bind(ca.id.clone())
                .execute(&mut *associate)
                .await
                .expect("share lock");
        }
        let deleter = store.clone();
        let id = ca.id.clone();
        let delete = tokio::spawn(async move { deleter.delete_mtls_certificate(&id, &Actor::system()).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        associate.commit().await.expect("commit the association");
        match delete.await.expect("task") {
            Err(StoreError::Conflict(_)) => {}
            other => panic!("deleting a CA being associated was {other:?}"),
        }
        store.mtls_certificate(&ca.id).await.expect("the CA stays");
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_association_written_while_its_ca_is_deleted_does_not_outlive_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.db");
    let store = Store::open_sqlite(&path).await.expect("sqlite");
    let other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("second sqlite connection");
    associate_during_delete!(&store, other);
    let other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("second sqlite connection");
    delete_during_associate!(&store, other, false);
    if let Ok(admin_url) = std::env::var("PORTCULLIS_TEST_DATABASE_URL") {
        let (scratch, url) = PgScratch::new(&admin_url).await;
        let store = Store::open(&url).await.expect("postgres");
        let other = sqlx::PgConnection::connect(&url)
            .await
            .expect("second postgres connection");
        associate_during_delete!(&store, other);
        let other = sqlx::PgConnection::connect(&url)
            .await
            .expect("second postgres connection");
        delete_during_associate!(&store, other, true);
        drop(store);
        scratch.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_client_certificates_keep_their_key_and_stay_while_used() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let client = store
            .add_mtls_certificate(
                crate::NewMtlsCertificate {
                    ca: false,
                    sealed_key: Some(vec![1, 2, 3]),
                    ..sample_byo("origin client")
                },
                5,
                &a,
            )
            .await
            .expect("client certificate");
        let got = store.mtls_certificate(&client.id).await.expect("get");
        assert_eq!((got.ca, got.sealed_key.as_deref()), (false, Some(&[1u8, 2, 3][..])));
        let state = store.load_edge_state().await.expect("state");
        assert_eq!(state.mtls_certificates[0].sealed_key.as_deref(), Some(&[1u8, 2, 3][..]));

        // It cannot verify clients.
        let err = store
            .replace_hostname_associations(
                &zone.id,
                &crate::CaRef::Mtls(client.id.clone()),
                &["a.example.com".into()],
                &a,
            )
            .await
            .expect_err("not a CA");
        assert!(err.to_string().contains("is a client certificate"), "{err}");

        // Named by a hostname, it stays.
        let settings = serde_json::json!({"origin_client_certificate": client.id});
        store
            .create_hostname(&zone.id, "a.example.com", "https://origin.internal", settings, &a)
            .await
            .expect("hostname");
        let err = store.delete_mtls_certificate(&client.id, &a).await.expect_err("in use");
        assert!(
            err.to_string().contains("origin client certificate of a.example.com"),
            "{err}"
        );
        let host = store.list_hostnames(&zone.id).await.expect("hosts").remove(0);
        store
            .update_hostname(&zone.id, &host.id, None, Some(serde_json::json!({})), None, &a)
            .await
            .expect("update");
        // An edit derived from settings that changed since is refused, not applied over the other edit.
        let stale = serde_json::json!({"tls_client_auth": "request"});
        let err = store
            .update_hostname(
                &zone.id,
                &host.id,
                None,
                Some(serde_json::json!({"origin_http2": true})),
                Some(&stale),
                &a,
            )
            .await
            .expect_err("stale");
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        store
            .update_hostname(
                &zone.id,
                &host.id,
                None,
                Some(serde_json::json!({"origin_http2": true})),
                Some(&serde_json::json!({})),
                &a,
            )
            .await
            .expect("current");
        // The same for several hostnames at once: a stale one refuses the whole change.
        let now_set = serde_json::json!({"origin_http2": true});
        let err = store
            .update_hostname_settings(
                &zone.id,
                &[(
                    host.id.clone(),
                    stale.clone(),
                    serde_json::json!({"origin_http2": false}),
                )],
                &a,
            )
            .await
            .expect_err("stale");
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        store
            .update_hostname_settings(&zone.id, &[(host.id.clone(), now_set, serde_json::json!({}))], &a)
            .await
            .expect("current");
        assert_eq!(
            store.hostname(&zone.id, &host.id).await.expect("host").settings,
            serde_json::json!({})
        );
        store.delete_mtls_certificate(&client.id, &a).await.expect("delete");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_renewed_at_most_once() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let ca = store.add_managed_ca(sample_ca("ca"), &a).await.expect("ca");
        let old = sample_cert(&zone.id, &ca.id, 1);
        store.add_client_certificate(&old, 10, &a).await.expect("issue");
        let found = store
            .client_certificate_by_fingerprint(&old.fingerprint_sha256)
            .await
            .expect("lookup");
        assert_eq!(found.map(|c| c.id), Some(old.id.clone()));
        assert_eq!(
            store
                .client_certificate_by_fingerprint(&"ff".repeat(32))
                .await
                .expect("lookup"),
            None
        );
        assert_eq!(
            store.client_certificate_renewed_by(&old.id).await.expect("renewed"),
            None
        );

        let new = sample_cert(&zone.id, &ca.id, 2);
        store
            .add_renewed_client_certificate(&old.id, &new, 10, &a)
            .await
            .expect("renew");
        assert_eq!(
            store.client_certificate_renewed_by(&old.id).await.expect("renewed"),
            Some(new.id.clone())
        );
        let again = sample_cert(&zone.id, &ca.id, 3);
        let err = store
            .add_renewed_client_certificate(&old.id, &again, 10, &a)
            .await
            .expect_err("twice");
        assert!(
            err.to_string().contains(&format!("already renewed, as {}", new.id)),
            "{err}"
        );
        // Nothing of the refused renewal was written.
        let missing = store.client_certificate_by_fingerprint(&again.fingerprint_sha256).await;
        assert_eq!(missing.expect("lookup"), None);
        // The quota counts renewals too (one active once the first is revoked as renewing the renewal does), and a
        // refusal undoes that revocation.
        let over = sample_cert(&zone.id, &ca.id, 4);
        let err = store
            .add_renewed_client_certificate(&new.id, &over, 1, &a)
            .await
            .expect_err("quota");
        assert!(err.to_string().contains("maximum certificate allocation"), "{err}");
        assert_eq!(
            store.client_certificate_renewed_by(&new.id).await.expect("renewed"),
            None
        );
        let old_now = store.client_certificate(&zone.id, &old.id).await.expect("old");
        assert_eq!(old_now.status, crate::ClientCertificateStatus::Active);
        // Renewing the renewal revokes the one it renewed, first thing: a line of renewals holds at most two
        // active certificates, and stays within a quota of two.
        let third = sample_cert(&zone.id, &ca.id, 5);
        let superseded = store
            .add_renewed_client_certificate(&new.id, &third, 2, &a)
            .await
            .expect("renew");
        assert_eq!(superseded, Some(old.id.clone()));
        let old_now = store.client_certificate(&zone.id, &old.id).await.expect("old");
        assert_eq!(old_now.status, crate::ClientCertificateStatus::Revoked);
        let new_now = store.client_certificate(&zone.id, &new.id).await.expect("new");
        assert_eq!(new_now.status, crate::ClientCertificateStatus::Active);
        let from = store.client_certificate_renewed_from(&third.id).await.expect("from");
        assert_eq!(from, Some(new.id.clone()));
        // A certificate no longer active does not renew.
        let fourth = sample_cert(&zone.id, &ca.id, 6);
        let err = store
            .add_renewed_client_certificate(&old.id, &fourth, 10, &a)
            .await
            .expect_err("revoked");
        assert!(err.to_string().contains("is no longer active"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactivation_respects_the_quota() {
    use crate::ClientCertificateStatus as S;
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let ca = store.add_managed_ca(sample_ca("ca"), &a).await.expect("ca");
        let first = sample_cert(&zone.id, &ca.id, 1);
        store.add_client_certificate(&first, 1, &a).await.expect("issue");
        store
            .set_client_certificate_status_within_quota(&zone.id, &first.id, S::Active, S::Revoked, 1, &a)
            .await
            .expect("revoke");
        store
            .add_client_certificate(&sample_cert(&zone.id, &ca.id, 2), 1, &a)
            .await
            .expect("the slot is free");
        match store
            .set_client_certificate_status_within_quota(&zone.id, &first.id, S::Revoked, S::Active, 1, &a)
            .await
        {
            Err(StoreError::LimitReached { code: 1445, message }) => assert_eq!(
                message,
                "Hit maximum certificate allocation: 1 certificates per zone are allowed"
            ),
            other => panic!("expected the quota, got {other:?}"),
        }
        assert_eq!(
            store.client_certificate(&zone.id, &first.id).await.expect("get").status,
            S::Revoked,
            "nothing changed"
        );
        let back = store
            .set_client_certificate_status_within_quota(&zone.id, &first.id, S::Revoked, S::Active, 2, &a)
            .await
            .expect("room under a larger quota");
        assert_eq!(back.status, S::Active);
    })
    .await;
}

/// Deleting a zone revokes its unexpired client certificates for good: the account's managed CA issued them and other
/// zones trust it, so their serials stay refused and in the CRL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_zone_revokes_its_certificates() {
    use crate::ClientCertificateStatus as S;
    on_both(|store, _| async move {
        let a = Actor::system();
        let gone = store.create_zone("gone.example", &a).await.expect("zone");
        let kept = store.create_zone("kept.example", &a).await.expect("zone");
        let ca = store.add_managed_ca(sample_ca("ca"), &a).await.expect("ca");
        let certs: Vec<_> = (0..4).map(|n| sample_cert(&gone.id, &ca.id, n)).collect();
        for cert in &certs {
            store.add_client_certificate(cert, 10, &a).await.expect("issue");
        }
        let mut expired = sample_cert(&gone.id, &ca.id, 7);
        expired.expires_on = 1;
        store.add_client_certificate(&expired, 10, &a).await.expect("issue");
        store
            .set_client_certificate_status(&gone.id, &certs[1].id, S::Active, S::Revoked, &a)
            .await
            .expect("revoke");
        let other = sample_cert(&kept.id, &ca.id, 9);
        store.add_client_certificate(&other, 10, &a).await.expect("issue");

        store.delete_zone(&gone.id, &a).await.expect("delete");
        let mut want: Vec<String> = certs.iter().map(|c| c.serial_number.clone()).collect();
        want.sort();
        let listed: Vec<String> = store
            .revoked_client_certificates(&ca.id, 1_900_000_000)
            .await
            .expect("crl entries")
            .into_iter()
            .map(|(serial, _)| serial)
            .collect();
        assert_eq!(
            listed, want,
            "every unexpired certificate of the deleted zone; not the other zone's"
        );
        let state = store.load_edge_state().await.expect("state");
        let refused: Vec<&str> = state.revoked_serials.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(refused, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            store
                .revoked_client_certificates(&ca.id, 2_000_000_000)
                .await
                .expect("crl")
                .is_empty()
        );
    })
    .await;
}

/// The dashboard's queries: search (any case, LIKE's wildcards taken literally), expiring before a time, soonest
/// first, with the count of all that match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_search_and_expiry() {
    use crate::ClientCertQuery as Q;
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let ca = store.add_managed_ca(sample_ca("ca"), &a).await.expect("ca");
        for n in 0..5u32 {
            let mut cert = sample_cert(&zone.id, &ca.id, n);
            cert.expires_on = 2_000_000_000 - i64::from(n) * 100;
            if n == 3 {
                cert.common_name = "Sensor_100%".into();
                cert.organizational_unit = "Plant B".into();
            }
            store.add_client_certificate(&cert, 10, &a).await.expect("issue");
        }
        let names =
            |certs: &[crate::ClientCertificate]| certs.iter().map(|c| c.common_name.clone()).collect::<Vec<_>>();
        let list = |q: Q<'static>, limit| {
            let store = store.clone();
            let zone = zone.id.clone();
            async move { store.list_client_certificates(&zone, &q, 0, limit).await.expect("list") }
        };
        let (certs, total) = list(
            Q {
                search: Some("sensor_100%"),
                ..Q::default()
            },
            10,
        )
        .await;
        assert_eq!((names(&certs), total), (vec!["Sensor_100%".to_owned()], 1));
        // `_` and `%` are not wildcards, and the OU is searched.
        assert_eq!(
            list(
                Q {
                    search: Some("sensor_1%"),
                    ..Q::default()
                },
                10
            )
            .await
            .1,
            0
        );
        assert_eq!(
            list(
                Q {
                    search: Some("PLANT b"),
                    ..Q::default()
                },
                10
            )
            .await
            .1,
            1
        );
        // Serials are searched: device-2's ends in 2.
        let (certs, _) = list(
            Q {
                search: Some("0000000000000000000000000000000000000002"),
                ..Q::default()
            },
            10,
        )
        .await;
        assert_eq!(names(&certs), ["device-2"]);
        // Expiring before a time, soonest first; the total counts beyond the page.
        let (certs, total) = list(
            Q {
                expires_before: Some(2_000_000_000 - 150),
                by_expiry: true,
                ..Q::default()
            },
            2,
        )
        .await;
        assert_eq!(
            (names(&certs), total),
            (vec!["device-4".to_owned(), "Sensor_100%".to_owned()], 3)
        );
        // Newest first by default.
        assert_eq!(names(&list(Q::default(), 2).await.0), ["device-4", "Sensor_100%"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidy_removes_only_certificates_expired_before_the_cut() {
    use crate::ClientCertificateStatus as S;
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let ca = store.add_managed_ca(sample_ca("ca"), &a).await.expect("ca");
        let now = crate::ids::now();
        let mut old = sample_cert(&zone.id, &ca.id, 0);
        old.expires_on = now - 100 * 86_400;
        let mut old_revoked = sample_cert(&zone.id, &ca.id, 1);
        old_revoked.expires_on = now - 100 * 86_400;
        let mut recent = sample_cert(&zone.id, &ca.id, 2);
        recent.expires_on = now - 86_400;
        let live = sample_cert(&zone.id, &ca.id, 3);
        for cert in [&old, &old_revoked, &recent, &live] {
            store.add_client_certificate(cert, 10, &a).await.expect("issue");
        }
        store
            .set_client_certificate_status(&zone.id, &old_revoked.id, S::Active, S::Revoked, &a)
            .await
            .expect("revoke");
        let before = store.generation().await.expect("generation");

        let ninety_days = 90 * 86_400;
        assert_eq!(store.tidy_client_certificates(ninety_days, &a).await.expect("tidy"), 2);
        let (left, total) = store
            .list_client_certificates(&zone.id, &crate::ClientCertQuery::default(), 0, 50)
            .await
            .expect("list");
        assert_eq!(total, 2);
        let mut ids: Vec<&str> = left.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        let mut expected = [recent.id.as_str(), live.id.as_str()];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        assert!(
            store.generation().await.expect("generation") > before,
            "the edge hears of it"
        );

        // Nothing more to remove: nothing is written.
        let after = store.generation().await.expect("generation");
        assert_eq!(store.tidy_client_certificates(ninety_days, &a).await.expect("tidy"), 0);
        assert_eq!(store.generation().await.expect("generation"), after);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_do_not_count_towards_the_quota() {
    use crate::ClientCertificateStatus as S;
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let ca = store.add_managed_ca(sample_ca("ca"), &a).await.expect("ca");
        let mut expired = sample_cert(&zone.id, &ca.id, 0);
        expired.expires_on = crate::ids::now() - 10;
        store
            .add_client_certificate(&expired, 1, &a)
            .await
            .expect("expired one");
        let live = sample_cert(&zone.id, &ca.id, 1);
        store
            .add_client_certificate(&live, 1, &a)
            .await
            .expect("the expired certificate holds no slot");
        match store
            .add_client_certificate(&sample_cert(&zone.id, &ca.id, 2), 1, &a)
            .await
        {
            Err(StoreError::LimitReached { code: 1445, .. }) => {}
            other => panic!("the live certificate holds the slot, got {other:?}"),
        }
        // Reactivating a revoked certificate that has expired since takes no slot either, while a live one does.
        store
            .set_client_certificate_status(&zone.id, &expired.id, S::Active, S::Revoked, &a)
            .await
            .expect("revoke the expired one");
        store
            .set_client_certificate_status(&zone.id, &live.id, S::Active, S::Revoked, &a)
            .await
            .expect("revoke the live one");
        store
            .set_client_certificate_status_within_quota(&zone.id, &live.id, S::Revoked, S::Active, 1, &a)
            .await
            .expect("reactivate the live one");
        store
            .set_client_certificate_status_within_quota(&zone.id, &expired.id, S::Revoked, S::Active, 1, &a)
            .await
            .expect("the live one is the only one counted");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_quota_pages_and_status() {
    use crate::ClientCertificateStatus as S;
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let ca = store.add_managed_ca(sample_ca("ca"), &a).await.expect("ca");
        let certs: Vec<_> = (0..3).map(|n| sample_cert(&zone.id, &ca.id, n)).collect();
        for cert in &certs {
            store.add_client_certificate(cert, 3, &a).await.expect("issue");
        }
        match store
            .add_client_certificate(&sample_cert(&zone.id, &ca.id, 9), 3, &a)
            .await
        {
            Err(StoreError::LimitReached { code: 1445, message }) => {
                assert_eq!(
                    message,
                    "Hit maximum certificate allocation: 3 certificates per zone are allowed"
                )
            }
            other => panic!("expected the quota, got {other:?}"),
        }

        let (page, total) = store
            .list_client_certificates(&zone.id, &crate::ClientCertQuery::default(), 0, 2)
            .await
            .expect("page 1");
        assert_eq!(total, 3);
        assert_eq!(
            page.iter().map(|c| c.common_name.as_str()).collect::<Vec<_>>(),
            ["device-2", "device-1"]
        );
        let (page, _) = store
            .list_client_certificates(&zone.id, &crate::ClientCertQuery::default(), 2, 2)
            .await
            .expect("page 2");
        assert_eq!(page[0], certs[0]);

        let revoked = store
            .set_client_certificate_status(&zone.id, &certs[1].id, S::Active, S::Revoked, &a)
            .await
            .expect("revoke");
        assert_eq!(revoked.status, S::Revoked);
        assert!(revoked.revoked_on.is_some());
        let err = store
            .set_client_certificate_status(&zone.id, &certs[1].id, S::Active, S::Revoked, &a)
            .await
            .expect_err("stale");
        assert_eq!(
            err.to_string(),
            format!("client_certificate {:?} is revoked, not active", certs[1].id)
        );

        // A revoked certificate frees its quota slot at once.
        store
            .add_client_certificate(&sample_cert(&zone.id, &ca.id, 9), 3, &a)
            .await
            .expect("slot freed");
        let (revoked_list, total) = store
            .list_client_certificates(
                &zone.id,
                &crate::ClientCertQuery {
                    status: Some(S::Revoked),
                    ..Default::default()
                },
                0,
                50,
            )
            .await
            .expect("filter");
        assert_eq!((revoked_list.len(), total), (1, 1));

        let state = store.load_edge_state().await.expect("state");
        assert_eq!(
            state.revoked_serials,
            vec![(ca.id.clone(), certs[1].serial_number.clone())]
        );
        // The CRL lists it until the certificate expires (2,000,000,000 in sample_cert), then drops it.
        let listed = store
            .revoked_client_certificates(&ca.id, 1_999_999_999)
            .await
            .expect("crl entries");
        assert_eq!(
            listed.iter().map(|(serial, _)| serial.as_str()).collect::<Vec<_>>(),
            [certs[1].serial_number.as_str()]
        );
        assert!(
            store
                .revoked_client_certificates(&ca.id, 2_000_000_000)
                .await
                .expect("crl entries")
                .is_empty()
        );

        let back = store
            .set_client_certificate_status(&zone.id, &certs[1].id, S::Revoked, S::Active, &a)
            .await
            .expect("reactivate");
        assert_eq!((back.status, back.revoked_on), (S::Active, None));
        assert!(store.load_edge_state().await.expect("state").revoked_serials.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_certificates_round_trip() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let new = crate::NewCustomCertificate {
            certificate: "PEM".into(),
            sealed_key: vec![9; 40],
            hosts: vec!["example.com".into(), "*.example.com".into()],
            issuer: "CN=Edge CA".into(),
            signature: "ECDSAWithSHA256".into(),
            expires_on: 2_000_000_000,
        };
        let cert = store.add_custom_certificate(&zone.id, new, &a).await.expect("add");
        assert_eq!(store.custom_certificate(&zone.id, &cert.id).await.expect("get"), cert);
        assert_eq!(
            store.list_custom_certificates(&zone.id).await.expect("list"),
            vec![cert.clone()]
        );
        assert_eq!(
            store.load_edge_state().await.expect("state").custom_certificates,
            vec![cert.clone()]
        );
        let renewed = crate::NewCustomCertificate {
            certificate: "PEM 2".into(),
            sealed_key: vec![7; 40],
            hosts: vec!["api.example.com".into()],
            issuer: "CN=Edge CA 2".into(),
            signature: "SHA256WithRSA".into(),
            expires_on: 2_100_000_000,
        };
        let replaced = store
            .replace_custom_certificate(&zone.id, &cert.id, renewed, &a)
            .await
            .expect("replace");
        assert_eq!(
            (
                replaced.id.as_str(),
                replaced.uploaded_on,
                replaced.certificate.as_str()
            ),
            (cert.id.as_str(), cert.uploaded_on, "PEM 2")
        );
        assert_eq!(
            (replaced.hosts.clone(), replaced.sealed_key.clone(), replaced.expires_on),
            (vec!["api.example.com".to_owned()], vec![7; 40], 2_100_000_000)
        );
        assert_eq!(
            store.load_edge_state().await.expect("state").custom_certificates,
            vec![replaced.clone()]
        );
        let other = crate::NewCustomCertificate {
            certificate: "x".into(),
            sealed_key: vec![1],
            hosts: vec![],
            issuer: String::new(),
            signature: String::new(),
            expires_on: 0,
        };
        assert!(matches!(
            store.replace_custom_certificate(&zone.id, "missing", other, &a).await,
            Err(StoreError::NotFound { .. })
        ));
        store
            .delete_custom_certificate(&zone.id, &cert.id, &a)
            .await
            .expect("delete");
        assert!(matches!(
            store.custom_certificate(&zone.id, &cert.id).await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

fn rule(id: Option<&str>, expression: &str) -> crate::NewRule {
    crate::NewRule {
        id: id.map(str::to_owned),
        description: format!("rule {expression}"),
        expression: expression.to_owned(),
        action: "block".to_owned(),
        action_parameters: Some(serde_json::json!({"response": {"status_code": 401}})),
        ratelimit: None,
        lists: Vec::new(),
        enabled: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_a_ruleset_never_replace_each_other() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let create = |name: &'static str| {
            let store = store.clone();
            let zone = zone.id.clone();
            async move {
                store
                    .create_entrypoint(
                        &zone,
                        "http_request_firewall_custom",
                        name,
                        "",
                        vec![rule(None, name)],
                        &Actor::system(),
                    )
                    .await
            }
        };
        let (first, second) = tokio::join!(create("one"), create("two"));
        let (ok, conflict): (Vec<_>, Vec<_>) = [first, second].into_iter().partition(Result::is_ok);
        assert_eq!((ok.len(), conflict.len()), (1, 1), "{conflict:?}");
        assert!(matches!(conflict[0], Err(StoreError::Conflict(_))), "{conflict:?}");
        let kept = ok.into_iter().next().expect("one").expect("created");
        let stored = store
            .entrypoint(&zone.id, "http_request_firewall_custom")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!((stored.name.as_str(), stored.rules.len()), (kept.name.as_str(), 1));
        assert_eq!(
            stored.rules[0].expression, kept.name,
            "the winner's rules, not the loser's"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rulesets_keep_rule_order_through_edits() {
    use crate::Position;
    const PHASE: &str = "http_request_firewall_custom";
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        assert_eq!(store.entrypoint(&zone.id, PHASE).await.expect("none"), None);
        let rs = store
            .put_entrypoint(
                &zone.id,
                PHASE,
                "default",
                "",
                vec![rule(Some("r1"), "a"), rule(None, "b")],
                &a,
            )
            .await
            .expect("put");
        assert_eq!(rs.version, 1);
        let exprs = |rs: &crate::Ruleset| rs.rules.iter().map(|r| r.expression.clone()).collect::<Vec<_>>();
        assert_eq!(exprs(&rs), ["a", "b"]);
        assert_eq!(
            rs.rules[0].action_parameters,
            Some(serde_json::json!({"response": {"status_code": 401}}))
        );

        let rs = store
            .add_rule(&zone.id, &rs.id, rule(Some("r0"), "first"), Position::Index(1), &a)
            .await
            .expect("add");
        assert_eq!(exprs(&rs), ["first", "a", "b"]);
        let rs = store
            .add_rule(
                &zone.id,
                &rs.id,
                rule(None, "after-a"),
                Position::After("r1".into()),
                &a,
            )
            .await
            .expect("add");
        assert_eq!(exprs(&rs), ["first", "a", "after-a", "b"]);
        let rs = store
            .add_rule(&zone.id, &rs.id, rule(None, "last"), Position::Last, &a)
            .await
            .expect("add");
        assert_eq!(exprs(&rs).last().map(String::as_str), Some("last"));

        let mut disabled = rule(None, "a2");
        disabled.enabled = false;
        let rs = store
            .update_rule(
                &zone.id,
                &rs.id,
                "r1",
                disabled,
                Some(Position::Before("r0".into())),
                &a,
            )
            .await
            .expect("update");
        assert_eq!(exprs(&rs), ["a2", "first", "after-a", "b", "last"]);
        assert_eq!(
            (rs.rules[0].id.as_str(), rs.rules[0].enabled, rs.rules[0].version),
            ("r1", false, 2)
        );

        let rs = store.delete_rule(&zone.id, &rs.id, "r0", &a).await.expect("delete");
        assert_eq!(exprs(&rs), ["a2", "after-a", "b", "last"]);
        assert!(matches!(
            store.delete_rule(&zone.id, &rs.id, "r0", &a).await,
            Err(StoreError::NotFound { .. })
        ));
        let err = store
            .add_rule(&zone.id, &rs.id, rule(Some("r1"), "dup"), Position::Last, &a)
            .await
            .expect_err("dup");
        assert_eq!(err.to_string(), "rule id \"r1\" appears twice");
        let err = store
            .add_rule(&zone.id, &rs.id, rule(None, "x"), Position::After("nope".into()), &a)
            .await
            .expect_err("pos");
        assert_eq!(err.to_string(), "no rule \"nope\" to position against");

        let state = store.load_edge_state().await.expect("state");
        assert_eq!(state.rulesets.len(), 1);
        assert_eq!(exprs(&state.rulesets[0]), ["a2", "after-a", "b", "last"]);

        let rs = store
            .put_entrypoint(&zone.id, PHASE, "default", "", vec![], &a)
            .await
            .expect("clear");
        assert!(rs.rules.is_empty());
        assert!(rs.version > 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_are_filtered_and_bounded() {
    on_both(|store, _| async move {
        let event = |n: i64, action: &str, host: &str| crate::SecurityEvent {
            id: 0,
            at: 1_700_000_000 + n,
            zone_id: Some("z".into()),
            host: host.into(),
            method: "GET".into(),
            path: format!("/p{n}"),
            client_ip: "127.0.0.1".into(),
            action: action.into(),
            rule_id: Some("r".into()),
            status_code: 403,
            mtls_status: "absent".into(),
            cert_fingerprint_sha256: String::new(),
            cert_serial: String::new(),
            cert_subject_dn: format!("CN=device-{n},O=Acme"),
            cert_verify_error: if n == 9 {
                "certificate has expired".into()
            } else {
                String::new()
            },
        };
        let batch: Vec<_> = (0..10)
            .map(|n| event(n, if n % 2 == 0 { "block" } else { "log" }, "a.example"))
            .collect();
        store.record_security_events(&batch, 6).await.expect("record");
        let all = store
            .list_security_events(&crate::EventFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(
            all.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["/p9", "/p8", "/p7", "/p6", "/p5", "/p4"]
        );
        assert_eq!(
            (all[0].cert_subject_dn.as_str(), all[0].cert_verify_error.as_str()),
            ("CN=device-9,O=Acme", "certificate has expired")
        );
        assert_eq!(
            (all[1].cert_subject_dn.as_str(), all[1].cert_verify_error.as_str()),
            ("CN=device-8,O=Acme", "")
        );
        let blocks = store
            .list_security_events(&crate::EventFilter {
                action: Some("block".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("blocks");
        assert_eq!(blocks.len(), 3);
        let newer = store
            .list_security_events(&crate::EventFilter {
                after_id: Some(all[1].id),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("after");
        assert_eq!(newer, vec![all[0].clone()]);
        let other_host = store
            .list_security_events(&crate::EventFilter {
                host: Some("b.example".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("host");
        assert!(other_host.is_empty());
        let before = store.generation().await.expect("generation");
        store
            .record_security_events(&[event(11, "block", "a.example")], 6)
            .await
            .expect("record");
        assert_eq!(
            store.generation().await.expect("generation"),
            before,
            "events are not configuration"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_hold_unique_items_and_stay_while_rules_reference_them() {
    use crate::NewListItem;
    const PHASE: &str = "http_request_firewall_custom";
    on_both(|store, _| async move {
        let a = Actor::system();
        let list = store.create_list("office", "ip", "HQ", &a).await.expect("create");
        assert_eq!((list.num_items, list.num_referencing_filters), (0, 0));
        let err = store
            .create_list("office", "ip", "", &a)
            .await
            .expect_err("duplicate name");
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

        let item = |v: &str, c: &str| NewListItem {
            value: v.to_owned(),
            comment: c.to_owned(),
        };
        let op = store
            .write_list_items(
                &list.id,
                vec![item("192.0.2.0/24", "hq"), item("198.51.100.7", "")],
                false,
                &a,
            )
            .await
            .expect("add");
        assert_eq!(store.list_operation(&op.id).await.expect("op").status, "completed");
        // Adding an existing value changes its comment, not the count.
        store
            .write_list_items(&list.id, vec![item("192.0.2.0/24", "head office")], false, &a)
            .await
            .expect("add again");
        let (items, next) = store.list_items(&list.id, None, 10, None).await.expect("items");
        assert_eq!((items.len(), next), (2, None));
        let hq = items.iter().find(|i| i.value == "192.0.2.0/24").expect("hq");
        assert_eq!(hq.comment, "head office");
        assert_eq!(
            store.list_item(&list.id, &hq.id).await.expect("one").value,
            "192.0.2.0/24"
        );
        // Paging by cursor and searching (a `_` in the search is literal).
        let (page, cursor) = store.list_items(&list.id, None, 1, None).await.expect("page 1");
        let (rest, end) = store
            .list_items(&list.id, cursor.as_deref(), 1, None)
            .await
            .expect("page 2");
        assert_eq!((page.len(), rest.len(), end), (1, 1, None));
        assert_ne!(page[0].id, rest[0].id);
        let (found, _) = store
            .list_items(&list.id, None, 10, Some("head"))
            .await
            .expect("search");
        assert_eq!(found.len(), 1);
        let (found, _) = store
            .list_items(&list.id, None, 10, Some("HEAD"))
            .await
            .expect("search");
        assert_eq!(found.len(), 1, "search ignores case on both backends");
        let (found, _) = store.list_items(&list.id, None, 10, Some("_")).await.expect("search");
        assert!(found.is_empty());

        // The same value twice in one request: stored once, with the later comment.
        store
            .write_list_items(
                &list.id,
                vec![item("203.0.113.1", "a"), item("203.0.113.1", "b")],
                false,
                &a,
            )
            .await
            .expect("twice");
        let (found, _) = store
            .list_items(&list.id, None, 10, Some("203.0.113.1"))
            .await
            .expect("search");
        assert_eq!((found.len(), found[0].comment.as_str()), (1, "b"));
        let (found, _) = store
            .list_items(&list.id, None, 10, Some("203.0.113.1"))
            .await
            .expect("search");
        store
            .delete_list_items(&list.id, &[found[0].id.clone()], &a)
            .await
            .expect("delete");
        assert_eq!(store.list(&list.id).await.expect("list").num_items, 2);

        // A rule naming a missing list is refused; one naming this list pins it.
        let mut r = rule(Some("r1"), "ip.src in $office");
        r.lists = vec!["nope".to_owned()];
        let err = store
            .put_entrypoint(&zone_id(&store).await, PHASE, "default", "", vec![r.clone()], &a)
            .await
            .expect_err("missing list");
        assert!(err.to_string().contains("$nope"), "{err}");
        r.lists = vec!["office".to_owned()];
        let zone = zone_id(&store).await;
        let rs = store
            .put_entrypoint(&zone, PHASE, "default", "", vec![r], &a)
            .await
            .expect("rule");
        assert_eq!(rs.rules[0].lists, ["office"]);
        assert_eq!(store.list(&list.id).await.expect("list").num_referencing_filters, 1);
        let err = store.delete_list(&list.id, &a).await.expect_err("referenced");
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

        let state = store.load_edge_state().await.expect("edge state");
        assert_eq!(state.lists.len(), 1);
        assert_eq!(state.lists[0].values, ["192.0.2.0/24", "198.51.100.7"]);

        // Replacing the items, deleting one, then the rule and the list.
        store
            .write_list_items(&list.id, vec![item("203.0.113.0/24", "")], true, &a)
            .await
            .expect("replace");
        let (items, _) = store.list_items(&list.id, None, 10, None).await.expect("items");
        assert_eq!(items.len(), 1);
        store
            .delete_list_items(&list.id, &[items[0].id.clone(), "unknown".to_owned()], &a)
            .await
            .expect("delete items");
        assert_eq!(store.list(&list.id).await.expect("list").num_items, 0);
        store.delete_rule(&zone, &rs.id, "r1", &a).await.expect("delete rule");
        store.delete_list(&list.id, &a).await.expect("unreferenced");
        assert!(matches!(store.list(&list.id).await, Err(StoreError::NotFound { .. })));
        let err = store
            .write_list_items(&list.id, vec![item("192.0.2.1", "")], false, &a)
            .await;
        assert!(matches!(err, Err(StoreError::NotFound { .. })), "{err:?}");
    })
    .await;
}

/// The id of the zone `example.com`, created on first use.
async fn zone_id(store: &Store) -> String {
    match store
        .list_zones()
        .await
        .expect("zones")
        .into_iter()
        .find(|z| z.name == "example.com")
    {
        Some(z) => z.id,
        None => {
            store
                .create_zone("example.com", &Actor::system())
                .await
                .expect("zone")
                .id
        }
    }
}

/// CRL fetches: a new CRL is stored and announced, the same one only marks the time, a failure keeps the last CRL,
/// and a result for URLs that changed meanwhile is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_fetches_store_changes_only_and_keep_the_last_good_crl() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let ca = store.add_mtls_certificate(sample_byo("pki"), 10, &a).await.expect("ca");
        let urls = vec!["http://pki.example/ca.crl".to_owned()];
        store.set_mtls_crl_urls(&ca.id, &urls, &a).await.expect("urls");
        assert_eq!(
            store.crl_sources().await.expect("sources"),
            [(ca.id.clone(), "pki".to_owned(), urls.clone())]
        );
        let generation = *store.subscribe().borrow();
        assert!(
            store
                .record_crl_fetch(&ca.id, &urls, None, Ok(b"crl-1"))
                .await
                .expect("first")
        );
        let after_first = *store.subscribe().borrow();
        assert!(after_first > generation, "a new CRL is announced to the edge");
        let one: Option<&[u8]> = Some(b"crl-1");
        assert!(
            !store
                .record_crl_fetch(&ca.id, &urls, one, Ok(b"crl-1"))
                .await
                .expect("same")
        );
        assert_eq!(
            *store.subscribe().borrow(),
            after_first,
            "the same CRL changes nothing the edge sees"
        );
        assert!(
            !store
                .record_crl_fetch(&ca.id, &urls, one, Err("HTTP 503"))
                .await
                .expect("failure")
        );
        let stored = store.mtls_certificate(&ca.id).await.expect("read");
        assert_eq!(stored.crl.as_deref(), one);
        assert_eq!(stored.crl_fetch_error.as_deref(), Some("HTTP 503"));
        assert!(stored.crl_fetched_on.is_some());
        assert_eq!(stored.crl_urls, urls);
        // Results judged against something else are dropped: other URLs, or CRLs that changed since.
        let other = vec!["http://elsewhere.example/ca.crl".to_owned()];
        assert!(
            !store
                .record_crl_fetch(&ca.id, &other, one, Ok(b"crl-2"))
                .await
                .expect("stale urls")
        );
        assert!(
            !store
                .record_crl_fetch(&ca.id, &urls, None, Ok(b"crl-2"))
                .await
                .expect("stale crl")
        );
        assert_eq!(store.mtls_certificate(&ca.id).await.expect("read").crl.as_deref(), one);
        assert!(
            store
                .record_crl_fetch(&ca.id, &urls, one, Ok(b"crl-2"))
                .await
                .expect("second")
        );
        let stored = store.mtls_certificate(&ca.id).await.expect("read");
        assert_eq!(
            (stored.crl.as_deref(), stored.crl_fetch_error),
            (Some(&b"crl-2"[..]), None)
        );
        // An upload, or new URLs, mean the next fetch starts afresh.
        store
            .set_mtls_certificate_crl(&ca.id, b"uploaded", &a)
            .await
            .expect("upload");
        assert!(
            store
                .mtls_certificate(&ca.id)
                .await
                .expect("read")
                .crl_fetched_on
                .is_none()
        );
        store.set_mtls_crl_urls(&ca.id, &[], &a).await.expect("stop");
        assert!(store.mtls_certificate(&ca.id).await.expect("read").crl_urls.is_empty());
    })
    .await;
}

/// An uploaded CA's OCSP policy is stored, read by the edge's state, announced, and cleared; an unknown id is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_policies_are_stored_and_reach_the_edge_state() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let ca = store.add_mtls_certificate(sample_byo("pki"), 10, &a).await.expect("ca");
        assert_eq!(ca.ocsp, None);
        let policy = portcullis_pki::OcspPolicy {
            hard_fail: true,
            responder: Some("http://ocsp.example/".into()),
        };
        let before = *store.subscribe().borrow();
        store.set_mtls_ocsp(&ca.id, Some(&policy), &a).await.expect("set");
        assert!(*store.subscribe().borrow() > before, "a change the edge hears of");
        assert_eq!(
            store.mtls_certificate(&ca.id).await.expect("read").ocsp,
            Some(policy.clone())
        );
        let state = store.load_edge_state().await.expect("state");
        let stored = state
            .mtls_certificates
            .iter()
            .find(|m| m.id == ca.id)
            .expect("in the state");
        assert_eq!(stored.ocsp, Some(policy));
        let soft = portcullis_pki::OcspPolicy {
            hard_fail: false,
            responder: None,
        };
        store.set_mtls_ocsp(&ca.id, Some(&soft), &a).await.expect("soft");
        assert_eq!(store.mtls_certificate(&ca.id).await.expect("read").ocsp, Some(soft));
        store.set_mtls_ocsp(&ca.id, None, &a).await.expect("off");
        assert_eq!(store.mtls_certificate(&ca.id).await.expect("read").ocsp, None);
        assert!(matches!(
            store.set_mtls_ocsp("nope", None, &a).await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn managed_headers_are_read_and_changed_in_one_write() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        assert!(zone.managed_request_headers.is_empty() && zone.managed_response_headers.is_empty());
        let before = store.generation().await.expect("generation");
        let changed = store
            .update_managed_headers(&zone.id, &a, |request, response| {
                assert!(request.is_empty() && response.is_empty());
                Ok((
                    vec!["add_true_client_ip_headers".into()],
                    vec!["add_security_headers".into()],
                ))
            })
            .await
            .expect("changed");
        assert_eq!(changed.managed_request_headers, ["add_true_client_ip_headers"]);
        assert_eq!(changed.managed_response_headers, ["add_security_headers"]);
        let state = store.load_edge_state().await.expect("state");
        assert_eq!(state.zones[0].managed_response_headers, ["add_security_headers"]);
        // No change, no write.
        let after = store.generation().await.expect("generation");
        store
            .update_managed_headers(&zone.id, &a, |request, response| {
                Ok((request.to_vec(), response.to_vec()))
            })
            .await
            .expect("same");
        assert_eq!(store.generation().await.expect("generation"), after);
        assert!(after > before);
        let err = store
            .update_managed_headers(&zone.id, &a, |_, _| Err("not offered".into()))
            .await
            .expect_err("refused");
        assert!(matches!(err, StoreError::Invalid(ref m) if m == "not offered"), "{err}");
        assert!(matches!(
            store
                .update_managed_headers("nope", &a, |r, s| Ok((r.to_vec(), s.to_vec())))
                .await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn dns_validation_needs_the_zone_s_dns_settings_which_stay_while_packs_use_them() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let wildcard = vec!["*.example.com".to_owned(), "example.com".to_owned()];
        assert!(store.acme_dns(&zone.id).await.expect("read").is_none());
        let err = store
            .add_certificate_pack(&zone.id, &wildcard, crate::DNS_VALIDATION, &a)
            .await
            .expect_err("no settings yet");
        assert!(err.to_string().contains("DNS update settings"), "{err}");

        let settings = crate::AcmeDns {
            zone_id: zone.id.clone(),
            server: "192.0.2.53:53".into(),
            dns_zone: "example.com".into(),
            key_name: "portcullis".into(),
            algorithm: "hmac-sha256".into(),
            sealed_secret: vec![1, 2, 3],
            propagation_seconds: 10,
            modified_on: 0,
        };
        let stored = store.set_acme_dns(&settings, &a).await.expect("set");
        assert_eq!(store.acme_dns(&zone.id).await.expect("read"), Some(stored.clone()));
        let changed = crate::AcmeDns {
            server: "192.0.2.54:5353".into(),
            ..settings.clone()
        };
        store.set_acme_dns(&changed, &a).await.expect("replace");
        let read = store.acme_dns(&zone.id).await.expect("read").expect("there");
        assert_eq!(read.server, "192.0.2.54:5353");
        assert!(matches!(
            store
                .set_acme_dns(
                    &crate::AcmeDns {
                        zone_id: "nope".into(),
                        ..settings.clone()
                    },
                    &a
                )
                .await,
            Err(StoreError::NotFound { .. })
        ));
        // The secret stays out of the audit log.
        let audit = format!("{:?}", store.audit_log(10).await.expect("audit"));
        assert!(
            audit.contains("192.0.2.54:5353") && audit.contains("portcullis"),
            "{audit}"
        );

        let pack = store
            .add_certificate_pack(&zone.id, &wildcard, crate::DNS_VALIDATION, &a)
            .await
            .expect("a wildcard pack over DNS");
        assert_eq!(pack.validation_method, "txt");
        let err = store.delete_acme_dns(&zone.id, &a).await.expect_err("in use");
        assert!(
            matches!(err, StoreError::Conflict(_)) && err.to_string().contains(&pack.id),
            "{err}"
        );
        store
            .delete_certificate_pack(&zone.id, &pack.id, &a)
            .await
            .expect("pack removed");
        store.delete_acme_dns(&zone.id, &a).await.expect("then the settings");
        assert!(store.acme_dns(&zone.id).await.expect("read").is_none());
        assert!(matches!(
            store.delete_acme_dns(&zone.id, &a).await,
            Err(StoreError::NotFound { .. })
        ));

        // They go with their zone.
        store.set_acme_dns(&settings, &a).await.expect("set again");
        store.delete_zone(&zone.id, &a).await.expect("zone deleted");
        assert!(store.acme_dns(&zone.id).await.expect("read").is_none());
    })
    .await;
}

#[tokio::test]
async fn certificate_packs_issue_renew_and_go_with_their_certificate() {
    on_both(|store, _| async move {
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let hosts = vec!["api.example.com".to_owned(), "www.example.com".to_owned()];
        let pack = store
            .add_certificate_pack(&zone.id, &hosts, "tls-alpn-01", &a)
            .await
            .expect("pack");
        assert_eq!(pack.status, "initializing");
        assert_eq!(
            store.list_certificate_packs(&zone.id).await.expect("list"),
            vec![pack.clone()]
        );
        // A name is in one pack only.
        let err = store
            .add_certificate_pack(&zone.id, &["www.example.com".to_owned()], "tls-alpn-01", &a)
            .await
            .expect_err("taken");
        assert!(err.to_string().contains(&pack.id), "{err}");
        assert!(matches!(
            store.add_certificate_pack(&zone.id, &[], "tls-alpn-01", &a).await,
            Err(StoreError::Invalid(_))
        ));

        // Answers reach the edge's state, and the write's generation is returned.
        let answer = |host: &str| crate::AcmeChallenge {
            hostname: host.to_owned(),
            pack_id: pack.id.clone(),
            certificate: format!("PEM {host}"),
            sealed_key: vec![1, 2, 3],
            expires_on: 2_000_000_000,
        };
        let http = |token: &str| crate::AcmeHttpAnswer {
            token: token.to_owned(),
            hostname: "www.example.com".to_owned(),
            pack_id: pack.id.clone(),
            key_authorization: format!("{token}.thumbprint"),
            expires_on: 2_000_000_000,
        };
        let generation = store
            .set_acme_challenges(
                &pack.id,
                &[answer("api.example.com"), answer("www.example.com")],
                &[http("tok-1")],
            )
            .await
            .expect("answers");
        let state = store.load_edge_state().await.expect("state");
        assert_eq!(state.generation, generation);
        assert_eq!(state.acme_challenges.len(), 2);
        assert_eq!(state.acme_challenges[0], answer("api.example.com"));
        assert_eq!(state.acme_http_answers, vec![http("tok-1")]);
        let pending = store.certificate_pack(&zone.id, &pack.id).await.expect("get");
        assert_eq!(pending.status, "pending_validation");

        // A failure withdraws the answers and keeps the reason.
        store
            .certificate_pack_failed(&pack.id, &["connection refused".to_owned()], 1_900_000_000)
            .await
            .expect("failed");
        let failed = store.certificate_pack(&zone.id, &pack.id).await.expect("get");
        assert_eq!(failed.validation_errors, ["connection refused"]);
        assert_eq!((failed.attempts, failed.next_attempt_on), (1, 1_900_000_000));
        let state = store.load_edge_state().await.expect("state");
        assert!(state.acme_challenges.is_empty() && state.acme_http_answers.is_empty());

        // Issuance stores the certificate and clears the failure; a renewal replaces it under the same id.
        let cert = |n: i64| crate::NewCustomCertificate {
            certificate: format!("PEM {n}"),
            sealed_key: vec![9; 40],
            hosts: hosts.clone(),
            issuer: "CN=ACME".into(),
            signature: "ECDSAWithSHA256".into(),
            expires_on: 2_000_000_000 + n,
        };
        store
            .set_acme_challenges(&pack.id, &[answer("api.example.com")], &[http("tok-2")])
            .await
            .expect("answers");
        let issued = store
            .certificate_pack_issued(&pack.id, cert(1), 1_800_000_000)
            .await
            .expect("issued");
        assert_eq!(issued.status, "active");
        assert!(issued.validation_errors.is_empty());
        assert_eq!(
            (issued.attempts, issued.issued_on, issued.expires_on),
            (0, Some(1_800_000_000), Some(2_000_000_001))
        );
        let cert_id = issued.certificate_id.clone().expect("certificate id");
        let state = store.load_edge_state().await.expect("state");
        assert!(state.acme_challenges.is_empty() && state.acme_http_answers.is_empty());
        assert_eq!(state.custom_certificates.len(), 1);
        assert_eq!(state.custom_certificates[0].id, cert_id);
        let renewed = store
            .certificate_pack_issued(&pack.id, cert(2), 1_800_000_100)
            .await
            .expect("renewed");
        assert_eq!(renewed.certificate_id.as_deref(), Some(cert_id.as_str()));
        let stored = store.custom_certificate(&zone.id, &cert_id).await.expect("cert");
        assert_eq!(stored.certificate, "PEM 2");
        // The pack's certificate is the pack's: it is neither removed nor replaced by hand.
        for err in [
            store
                .delete_custom_certificate(&zone.id, &cert_id, &a)
                .await
                .expect_err("rm"),
            store
                .replace_custom_certificate(&zone.id, &cert_id, cert(3), &a)
                .await
                .expect_err("replace"),
        ] {
            assert!(matches!(&err, StoreError::Conflict(m) if m.contains(&pack.id)), "{err}");
        }
        // Restarting validation clears the failure count and the wait.
        store
            .certificate_pack_failed(&pack.id, &["timeout".to_owned()], 1_900_000_000)
            .await
            .expect("failed");
        store
            .retry_certificate_pack(&zone.id, &pack.id, &a)
            .await
            .expect("retry");
        let retried = store.certificate_pack(&zone.id, &pack.id).await.expect("get");
        assert_eq!((retried.attempts, retried.next_attempt_on), (0, 0));

        // Deleting the pack takes its certificate; a late issuance for it stores nothing.
        store
            .delete_certificate_pack(&zone.id, &pack.id, &a)
            .await
            .expect("delete");
        assert!(store.list_custom_certificates(&zone.id).await.expect("list").is_empty());
        assert!(matches!(
            store.certificate_pack_issued(&pack.id, cert(4), 1_800_000_300).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(store.list_custom_certificates(&zone.id).await.expect("list").is_empty());
        assert!(matches!(
            store.delete_certificate_pack(&zone.id, &pack.id, &a).await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn leases_have_one_holder_until_they_run_out_and_accounts_are_kept_once() {
    on_both(|store, _| async move {
        assert!(store.try_lease("acme", "node-a", 60).await.expect("take"));
        assert!(store.try_lease("acme", "node-a", 60).await.expect("extend"));
        assert!(!store.try_lease("acme", "node-b", 60).await.expect("held"));
        store.release_lease("acme", "node-b").await.expect("not b's");
        assert!(!store.try_lease("acme", "node-b", 60).await.expect("still held"));
        store.release_lease("acme", "node-a").await.expect("release");
        assert!(store.try_lease("acme", "node-b", -1).await.expect("free"));
        // node-b's lease ran out at once, so node-a can take it.
        assert!(store.try_lease("acme", "node-a", 60).await.expect("expired"));

        let dir = "https://acme.example/directory";
        assert_eq!(store.acme_account(dir).await.expect("none"), None);
        assert_eq!(store.save_acme_account(dir, b"first").await.expect("save"), b"first");
        assert_eq!(store.save_acme_account(dir, b"second").await.expect("kept"), b"first");
        assert_eq!(
            store.acme_account(dir).await.expect("some").as_deref(),
            Some(&b"first"[..])
        );
    })
    .await;
}
