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
async fn zones_create_list_get_delete() {
    on_both(|store, _| async move {
        let actor = Actor::token("0123456789abcdef0123456789abcdef");
        let zone = store
            .create_zone("Example.COM", &actor)
            .await
            .expect("create");
        assert_eq!(zone.name, "example.com");
        assert_eq!(zone.status, "active");
        assert_eq!(store.zone(&zone.id).await.expect("get"), zone);

        let err = store
            .create_zone("example.com", &actor)
            .await
            .expect_err("duplicate");
        assert_eq!(err.to_string(), "zone \"example.com\" already exists");

        store
            .create_zone("a.example.net", &actor)
            .await
            .expect("second zone");
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
        assert!(
            matches!(err, StoreError::NotFound { kind: "zone", .. }),
            "{err}"
        );
        let err = store
            .delete_zone(&zone.id, &actor)
            .await
            .expect_err("second delete");
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
        assert_eq!(
            audit[0].token_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(audit[0].object_id, zone.id);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_zone_names_are_refused_with_the_reason() {
    on_both(|store, _| async move {
        let cases = [
            ("", "invalid DNS name \"\": it is empty"),
            ("a..b", "invalid DNS name \"a..b\": empty label"),
            (
                "-a.com",
                "invalid DNS name \"-a.com\": a label starts or ends with '-'",
            ),
            (
                "a_b.com",
                "invalid DNS name \"a_b.com\": character '_' is not allowed",
            ),
        ];
        for (name, message) in cases {
            let err = store
                .create_zone(name, &Actor::system())
                .await
                .expect_err(name);
            assert_eq!(err.to_string(), message);
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let err = store
            .create_zone(&long_label, &Actor::system())
            .await
            .expect_err("long label");
        assert!(
            err.to_string()
                .ends_with("a label is longer than 63 characters"),
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
            .create_token("ci", TokenScope::Read, &Actor::system())
            .await
            .expect("create");
        assert!(secret.starts_with("pct_"));
        assert_eq!(
            store.authenticate(&secret).await.expect("auth"),
            Some(token.clone())
        );
        assert_eq!(store.authenticate("pct_wrong").await.expect("auth"), None);
        assert_eq!(store.authenticate("").await.expect("auth"), None);

        store
            .revoke_token(&token.id, &Actor::system())
            .await
            .expect("revoke");
        assert_eq!(store.authenticate(&secret).await.expect("auth"), None);
        let listed = store.list_tokens().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked_on.is_some());
        let err = store
            .revoke_token(&token.id, &Actor::system())
            .await
            .expect_err("already revoked");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
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
        eprintln!(
            "PORTCULLIS_TEST_DATABASE_URL is not set: the cross-node PostgreSQL test did not run"
        );
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
        eprintln!(
            "cross-node change reached node b after {:?}",
            written_at.elapsed()
        );
        assert_eq!(
            node_b.list_zones().await.expect("list on b")[0].name,
            "fleet.example"
        );
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
    assert_eq!(
        url_with_database("postgresql:///postgres", "n"),
        "postgresql:///n"
    );
}
