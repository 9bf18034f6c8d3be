//! API tests, in-process (`tower::ServiceExt::oneshot`) on a SQLite store.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use portcullis_store::{Actor, Store, TokenScope};

use crate::{AdminSettings, AdminState, router};

pub(crate) struct Api {
    /// The EST routes (`est::router`), served by the binary's EST listener.
    pub(crate) est: axum::Router,
    pub(crate) router: Router,
    pub(crate) store: Store,
    pub(crate) master_key: std::sync::Arc<portcullis_pki::MasterKey>,
    pub(crate) write: String,
    pub(crate) read: String,
    _dir: tempfile::TempDir,
}

impl Api {
    pub(crate) async fn new() -> Api {
        Api::with_settings(AdminSettings::default()).await
    }

    pub(crate) async fn with_settings(settings: AdminSettings) -> Api {
        Api::build(settings, None).await
    }

    /// An API whose traffic endpoint reads `source`.
    pub(crate) async fn with_traffic(source: std::sync::Arc<dyn crate::TrafficSource>) -> Api {
        Api::build(AdminSettings::default(), Some(source)).await
    }

    async fn build(settings: AdminSettings, traffic: Option<std::sync::Arc<dyn crate::TrafficSource>>) -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(&dir.path().join("p.db")).await.expect("store");
        let (_, write) = store
            .create_token("w", TokenScope::Write, &Default::default(), &Actor::system())
            .await
            .expect("token");
        let (_, read) = store
            .create_token("r", TokenScope::Read, &Default::default(), &Actor::system())
            .await
            .expect("token");
        let master_key = std::sync::Arc::new(portcullis_pki::MasterKey::generate());
        let mut state = AdminState::new(store.clone(), settings, master_key.clone());
        if let Some(source) = traffic {
            state = state.with_traffic(source);
        }
        bootstrap_ca(&state).await;
        let est = crate::est::router(state.clone());
        let router = router(state);
        Api {
            router,
            est,
            store,
            master_key,
            write,
            read,
            _dir: dir,
        }
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some(body) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_owned())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    pub(crate) async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(&self.write.clone()), None).await
    }

    pub(crate) async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PATCH, path, body).await
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&self.write.clone()), None).await
    }

    pub(crate) async fn send(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(method, path, Some(&self.write.clone()), Some(&body.to_string()))
            .await
    }

    pub(crate) async fn zone(&self, name: &str) -> String {
        let (status, body) = self.send(Method::POST, "/client/v4/zones", json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["result"]["id"].as_str().expect("zone id").to_owned()
    }
}

/// What `portcullis serve` does on first start: create the managed CA.
async fn bootstrap_ca(state: &AdminState) {
    let ca = portcullis_pki::ManagedCa::create(&portcullis_pki::CaParams::default(), time::OffsetDateTime::now_utc())
        .expect("CA");
    state
        .store
        .add_managed_ca(
            portcullis_store::NewManagedCa {
                id: ca.id().to_owned(),
                name: ca.name().to_owned(),
                certificate: ca.certificate_pem(),
                sealed_key: ca.sealed_key(&state.master_key),
                key_type: ca.key_type().as_str().to_owned(),
                chain: String::new(),
            },
            &Actor::system(),
        )
        .await
        .expect("store CA");
}

pub(crate) fn error(body: &Value) -> (u64, String) {
    assert_eq!(body["success"], json!(false), "{body}");
    let e = &body["errors"][0];
    (
        e["code"].as_u64().expect("code"),
        e["message"].as_str().expect("message").to_owned(),
    )
}

#[tokio::test]
async fn tokens_are_required_and_read_tokens_cannot_write() {
    let api = Api::new().await;
    let (status, body) = api.call(Method::GET, "/client/v4/zones", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error(&body),
        (10000, "Authentication error: missing bearer token".into())
    );
    let (status, body) = api.call(Method::GET, "/client/v4/zones", Some("pct_nope"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error(&body).0, 10000);

    let read = api.read.clone();
    let (status, body) = api.call(Method::GET, "/client/v4/zones", Some(&read), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .call(
            Method::POST,
            "/client/v4/zones",
            Some(&read),
            Some(r#"{"name":"example.com"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error(&body).0, 9109);
    assert!(api.store.list_zones().await.expect("zones").is_empty());
}

#[tokio::test]
async fn zones_follow_cloudflare_shapes() {
    let api = Api::new().await;
    let (status, body) = api
        .send(
            Method::POST,
            "/client/v4/zones",
            json!({"name": "Example.com", "type": "full"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["errors"], json!([]));
    assert_eq!(body["messages"], json!([]));
    let zone = &body["result"];
    assert_eq!(zone["name"], "example.com");
    assert_eq!(zone["status"], "active");
    let id = zone["id"].as_str().expect("id");
    assert!(zone["created_on"].as_str().expect("time").ends_with('Z'));

    let (_, list) = api.get("/client/v4/zones").await;
    assert_eq!(list["result"].as_array().expect("list").len(), 1);
    assert_eq!(list["result_info"]["total_count"], 1);

    // Looked up by name, as scripts and Terraform do; filtered, ordered and paged.
    for name in [
        "b.example.net",
        "c.example.org",
        "d.example.org",
        "e.example.org",
        "f.example.org",
        "g.example.org",
    ] {
        api.zone(name).await;
    }
    let (status, found) = api.get("/client/v4/zones?name=B.example.net").await;
    assert_eq!(status, StatusCode::OK);
    let names = |v: &Value| -> Vec<String> {
        v["result"]
            .as_array()
            .expect("list")
            .iter()
            .map(|z| z["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(names(&found), ["b.example.net"]);
    assert_eq!(found["result_info"]["total_count"], 1);
    assert_eq!(
        names(&api.get("/client/v4/zones?name=nope.example").await.1),
        Vec::<String>::new()
    );
    let account = found["result"][0]["account"]["id"]
        .as_str()
        .expect("account")
        .to_owned();
    let (_, mine) = api
        .get(&format!("/client/v4/zones?account.id={account}&status=active"))
        .await;
    assert_eq!(mine["result_info"]["total_count"], 7);
    let (_, other) = api.get("/client/v4/zones?account.id=someone-else").await;
    assert_eq!(other["result_info"]["total_count"], 0);
    let (_, page2) = api.get("/client/v4/zones?per_page=5&page=2").await;
    assert_eq!(names(&page2), ["f.example.org", "g.example.org"]);
    assert_eq!(
        (
            &page2["result_info"]["page"],
            &page2["result_info"]["total_pages"],
            &page2["result_info"]["count"]
        ),
        (&json!(2), &json!(2), &json!(2))
    );
    let (_, desc) = api.get("/client/v4/zones?per_page=5&direction=desc").await;
    assert_eq!(names(&desc)[0], "g.example.org");
    let (status, body) = api.get("/client/v4/zones?order=size").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&body).1, "unknown order \"size\": use name or status");
    let (status, _) = api.get("/client/v4/zones?nam=x").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown filters are refused, not ignored"
    );
    let (status, got) = api.get(&format!("/client/v4/zones/{id}")).await;
    assert_eq!((status, &got["result"]["id"]), (StatusCode::OK, &json!(id)));

    let (status, body) = api
        .send(Method::POST, "/client/v4/zones", json!({"name": "example.com"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error(&body), (1409, "zone \"example.com\" already exists".into()));

    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/client/v4/zones/{id}"),
            Some(&api.write.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api.get(&format!("/client/v4/zones/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&body), (7003, format!("zone {id:?} not found")));
}

#[tokio::test]
async fn url_normalization_follows_cloudflare_shapes() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let path = format!("/client/v4/zones/{zone}/url_normalization");
    let (status, body) = api.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"], json!({"scope": "incoming", "type": "cloudflare"}));

    let (status, body) = api
        .send(Method::PUT, &path, json!({"scope": "both", "type": "rfc3986"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!({"scope": "both", "type": "rfc3986"}));
    assert_eq!(
        api.get(&path).await.1["result"],
        json!({"scope": "both", "type": "rfc3986"})
    );

    for (bad, message) in [
        (
            json!({"scope": "outgoing", "type": "cloudflare"}),
            "scope \"outgoing\" is not one of incoming, both, none",
        ),
        (
            json!({"scope": "none", "type": "strict"}),
            "type \"strict\" is not one of cloudflare, rfc3986",
        ),
    ] {
        let (status, body) = api.send(Method::PUT, &path, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error(&body).1, message);
    }
    let (status, _) = api.send(Method::PUT, &path, json!({"scope": "none"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "both fields are required");
    assert_eq!(
        api.get(&path).await.1["result"],
        json!({"scope": "both", "type": "rfc3986"})
    );

    let (status, body) = api.call(Method::DELETE, &path, Some(&api.write.clone()), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"], json!({"scope": "incoming", "type": "cloudflare"}));

    let (status, body) = api.get("/client/v4/zones/nope/url_normalization").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&body).0, 7003);
}

#[tokio::test]
async fn certificate_forwarding_settings_follow_cloudflare_shapes() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    for (host, style) in [("a.example.com", "none"), ("b.example.com", "rfc9440")] {
        let (status, body) = api
            .send(
                Method::POST,
                &format!("/client/v4/zones/{zone}/hostnames"),
                json!({"hostname": host, "origin": "http://127.0.0.1:9000", "client_certificate_forwarding": style}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let path = format!("/client/v4/zones/{zone}/access/certificates/settings");
    let entry =
        |host: &str, on: bool| json!({"hostname": host, "china_network": false, "client_certificate_forwarding": on});
    let (status, body) = api.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["result"],
        json!([entry("a.example.com", false), entry("b.example.com", false)])
    );

    let (status, body) = api
        .send(
            Method::PUT,
            &path,
            json!({"settings": [entry("A.example.com", true), entry("b.example.com", false)]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["result"],
        json!([entry("a.example.com", true), entry("b.example.com", false)])
    );
    // `false` leaves another style alone; the hostnames API shows the style.
    let styles = |hosts: &serde_json::Value| -> Vec<serde_json::Value> {
        hosts["result"]
            .as_array()
            .expect("list")
            .iter()
            .map(|h| h["client_certificate_forwarding"].clone())
            .collect()
    };
    let (_, hosts) = api.get(&format!("/client/v4/zones/{zone}/hostnames")).await;
    assert_eq!(styles(&hosts), [json!("cloudflare"), json!("rfc9440")]);
    // `true` adds Cloudflare's headers to another style; `false` takes them away again.
    let (status, body) = api
        .send(Method::PUT, &path, json!({"settings": [entry("b.example.com", true)]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, hosts) = api.get(&format!("/client/v4/zones/{zone}/hostnames")).await;
    assert_eq!(styles(&hosts), [json!("cloudflare"), json!(["rfc9440", "cloudflare"])]);
    let (status, body) = api
        .send(Method::PUT, &path, json!({"settings": [entry("b.example.com", false)]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, hosts) = api.get(&format!("/client/v4/zones/{zone}/hostnames")).await;
    assert_eq!(styles(&hosts), [json!("cloudflare"), json!("rfc9440")]);

    // Refused as a whole: nothing changes when one entry is wrong.
    for (bad, status_code, message) in [
        (
            json!({"settings": [entry("a.example.com", false), {"hostname": "b.example.com", "china_network": true, "client_certificate_forwarding": true}]}),
            StatusCode::BAD_REQUEST,
            "b.example.com: china_network is not available here; send false",
        ),
        (
            json!({"settings": [entry("a.example.com", false), entry("c.example.com", true)]}),
            StatusCode::NOT_FOUND,
            "hostname \"c.example.com\" not found",
        ),
        (
            json!({"settings": [{"hostname": "a.example.com", "client_certificate_forwarding": false}]}),
            StatusCode::BAD_REQUEST,
            "invalid request body: settings[0]: missing field `china_network` at line 1 column 79",
        ),
        (
            json!({"settings": [entry("b.example.com", true), entry("B.example.com.", false)]}),
            StatusCode::BAD_REQUEST,
            "B.example.com. is listed twice",
        ),
    ] {
        let (status, body) = api.send(Method::PUT, &path, bad).await;
        assert_eq!(status, status_code, "{body}");
        assert_eq!(error(&body).1, message);
    }
    assert_eq!(api.get(&path).await.1["result"][0], entry("a.example.com", true));
}

#[tokio::test]
async fn bad_input_is_named_and_leaves_nothing() {
    let api = Api::new().await;
    let w = api.write.clone();
    let cases: &[(&str, u16, u64, &str)] = &[
        (
            "{",
            400,
            6007,
            "malformed JSON in request body: EOF while parsing an object at line 1 column 1",
        ),
        (
            r#"{"name": 5}"#,
            400,
            6007,
            "invalid request body: name: invalid type: integer `5`, expected a string at line 1 column 10",
        ),
        (
            r#"{"name": "a.com", "colour": "red"}"#,
            400,
            6007,
            "invalid request body: colour: unknown field `colour`, expected one of `name`, `account`, `type` at line 1 column 26",
        ),
        (
            r#"{"name": "a_b.com"}"#,
            400,
            1400,
            "invalid DNS name \"a_b.com\": character '_' is not allowed",
        ),
        (
            r#"{"name": "a.com", "type": "partial"}"#,
            400,
            1400,
            "zone type \"partial\" is not supported; use \"full\"",
        ),
    ];
    for (body, status, code, message) in cases {
        let (got_status, got) = api.call(Method::POST, "/client/v4/zones", Some(&w), Some(body)).await;
        assert_eq!(got_status.as_u16(), *status, "{body}: {got}");
        assert_eq!(error(&got), (*code, (*message).to_owned()), "{body}");
    }
    let huge = format!(r#"{{"name": "{}"}}"#, "a".repeat(crate::MAX_BODY_BYTES));
    let (status, body) = api.call(Method::POST, "/client/v4/zones", Some(&w), Some(&huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error(&body),
        (1413, "request body is larger than the limit of 1048576 bytes".into())
    );
    assert!(api.store.list_zones().await.expect("zones").is_empty());

    let (status, body) = api.get("/client/v4/nothing/here").await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7000));
    // API answers, refusals included, are never cached (some carry a secret once).
    for (path, token) in [("/client/v4/zones", Some(w.as_str())), ("/client/v4/zones", None)] {
        let mut req = Request::builder().uri(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let resp = api
            .router
            .clone()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store", "{path} {token:?}");
    }
    let (status, body) = api.call(Method::PUT, "/client/v4/zones", Some(&w), Some("{}")).await;
    assert_eq!((status, error(&body).0), (StatusCode::METHOD_NOT_ALLOWED, 7001));

    // Paths that are not UTF-8 or hold a NUL, and NULs in JSON strings: refused in the envelope, on both stores
    // alike (PostgreSQL cannot store a NUL in text).
    for path in [
        "/client/v4/zones/%FF",
        "/client/v4/zones/%00",
        "/client/v4/zones/a%00b/hostnames",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(error(&body).0, 1400, "{path}: {body}");
    }
    let (status, body) = api
        .call(
            Method::POST,
            "/client/v4/zones",
            Some(&w),
            Some(r#"{"name": "a\u0000.com"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("NUL"), "{body}");
    let (status, body) = api
        .call(
            Method::POST,
            "/client/v4/user/tokens",
            Some(&w),
            Some(r#"{"name": "x\\u0000", "scope": "read"}"#),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a backslash and the text u0000 are no NUL: {body}"
    );
    assert_eq!(body["result"]["name"], r"x\u0000");
    let (status, body) = api
        .call(Method::POST, "/client/v4/zones", Some(&w), Some(r#"{"name": "a.com"}"#))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = api
        .call(Method::POST, "/client/v4/zones", None, Some(r#"{"name": "b.com"}"#))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/client/v4/zones")
        .header(header::AUTHORIZATION, format!("Bearer {w}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"name": "c.com"}"#))
        .expect("request");
    let resp = api.router.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Names, descriptions and rule ids are bounded: they go into every snapshot and listing.
    let long = "n".repeat(crate::api::MAX_NAME_CHARS + 1);
    let (status, body) = api
        .send(
            Method::POST,
            "/client/v4/user/tokens",
            json!({"name": long, "scope": "read"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("the limit is 256"), "{body}");
    let zone = api.zone("rules.example").await;
    let entry = format!("/client/v4/zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint");
    let rule = |extra: Value| {
        let mut rule = json!({"expression": "http.request.uri.path eq \"/x\"", "action": "block"});
        for (k, v) in extra.as_object().expect("object") {
            rule[k] = v.clone();
        }
        json!({"rules": [rule]})
    };
    for (extra, why) in [
        (json!({"description": "d".repeat(501)}), "the limit is 500"),
        (json!({"description": "two\nlines"}), "control character"),
        (json!({"ref": "has space"}), "printable ASCII"),
        (json!({"id": "i".repeat(129)}), "at most 128"),
    ] {
        let (status, body) = api.send(Method::PUT, &entry, rule(extra.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {body}");
        assert!(error(&body).1.contains(why), "{extra}: {body}");
    }
    let (status, body) = api
        .send(
            Method::PUT,
            &entry,
            rule(json!({"ref": "r".repeat(128), "description": "é".repeat(500)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "at the limits: {body}");
}

#[tokio::test]
async fn hostnames_and_associations() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let base = format!("/client/v4/zones/{zone}");
    let (status, body) = api
        .send(
            Method::POST,
            &format!("{base}/hostnames"),
            json!({"hostname": "api.example.com", "origin": "http://127.0.0.1:9000"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let host = &body["result"];
    assert_eq!(host["tls_client_auth"], "request");
    assert_eq!(host["client_certificate_forwarding"], "none");
    assert_eq!(host["origin_tls_verify"], true);
    let host_id = host["id"].as_str().expect("id").to_owned();
    let host_path = format!("{base}/hostnames/{host_id}");

    let (status, body) = api
        .patch(
            &host_path,
            json!({"tls_client_auth": "require", "client_certificate_forwarding": "rfc9440"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["tls_client_auth"], "require");
    assert_eq!(body["result"]["client_certificate_forwarding"], "rfc9440");
    assert_eq!(body["result"]["origin"], "http://127.0.0.1:9000");

    let (status, body) = api
        .patch(&host_path, json!({"client_certificate_forwarding": "smoke-signals"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&body)
            .1
            .contains("unknown forwarding style \"smoke-signals\"; the styles are none, cloudflare, cf_cert_headers, rfc9440, xfcc, xfcc_cert"),
        "{body}"
    );

    // Styles combine; one is shown as a string, several as a list, duplicates once.
    for (sent, shown) in [
        (
            json!(["rfc9440", "xfcc_cert", "rfc9440"]),
            json!(["rfc9440", "xfcc_cert"]),
        ),
        (json!(["cloudflare"]), json!("cloudflare")),
        (json!([]), json!("none")),
        (json!("rfc9440"), json!("rfc9440")),
    ] {
        let (status, body) = api
            .patch(&host_path, json!({ "client_certificate_forwarding": sent }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"]["client_certificate_forwarding"], shown, "{sent}");
    }
    for (sent, message) in [
        (
            json!(["none", "xfcc"]),
            "\"none\" cannot be combined with other forwarding styles",
        ),
        (json!(true), "expected a forwarding style or a list of them, not true"),
    ] {
        let (status, body) = api
            .patch(&host_path, json!({ "client_certificate_forwarding": sent }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error(&body).1.contains(message), "{body}");
    }

    // TLS 1.3 only; the edge speaks nothing older than 1.2, so 1.0 is refused, not stored and ignored.
    assert_eq!(host["min_tls_version"], "1.2");
    let (status, body) = api.patch(&host_path, json!({"min_tls_version": "1.3"})).await;
    assert_eq!(
        (status, &body["result"]["min_tls_version"]),
        (StatusCode::OK, &json!("1.3")),
        "{body}"
    );
    let (status, body) = api.patch(&host_path, json!({"min_tls_version": "1.0"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&body)
            .1
            .contains("unknown variant `1.0`, expected `1.2` or `1.3`"),
        "{body}"
    );

    let path = format!("{base}/certificate_authorities/hostname_associations");
    let (status, body) = api
        .send(Method::PUT, &path, json!({"hostnames": ["api.example.com"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!({"hostnames": ["api.example.com"]}));
    let (_, body) = api.get(&path).await;
    assert_eq!(body["result"]["hostnames"], json!(["api.example.com"]));

    let (status, body) = api
        .send(Method::PUT, &path, json!({"hostnames": ["api.example.org"]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&body).1,
        "hostname \"api.example.org\" is not in zone \"example.com\""
    );
    let (status, body) = api
        .get(&format!("{path}?mtls_certificate_id=ffffffffffffffffffffffffffffffff"))
        .await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));

    // Nested zones: a name under the more specific zone is that zone's, in either order of creation.
    let child = api.zone("team.example.com").await;
    for name in ["x.team.example.com", "*.team.example.com", "team.example.com"] {
        let (status, body) = api
            .send(
                Method::POST,
                &format!("{base}/hostnames"),
                json!({"hostname": name, "origin": "http://127.0.0.1:9000"}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(error(&body).1.contains("more specific"), "{body}");
    }
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/client/v4/zones/{child}/hostnames"),
            json!({"hostname": "x.team.example.com", "origin": "http://127.0.0.1:9000"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api
        .send(
            Method::POST,
            &format!("{base}/hostnames"),
            json!({"hostname": "v.ops.example.com", "origin": "http://127.0.0.1:9000"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api
        .send(Method::POST, "/client/v4/zones", json!({"name": "ops.example.com"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(error(&body).1.contains("v.ops.example.com"), "{body}");
}

#[tokio::test]
async fn the_account_is_listed() {
    let api = Api::new().await;
    let (status, body) = api.get("/client/v4/accounts").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let account = api.store.account().await.expect("account");
    assert_eq!(body["result"][0]["id"], json!(account.id));
    assert_eq!(body["result_info"]["total_count"], 1);
}

#[tokio::test]
async fn every_write_is_in_the_audit_log_with_its_token() {
    let api = Api::new().await;
    let zone = api.zone("audit.example").await;
    let account = api.store.account().await.expect("account").id;
    let token_id = api
        .store
        .authenticate(&api.write)
        .await
        .expect("auth")
        .expect("token")
        .id;
    let (status, body) = api
        .get(&format!("/client/v4/accounts/{account}/audit_logs?per_page=1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entry = &body["result"][0];
    assert_eq!(entry["action"]["type"], "create");
    assert_eq!(entry["resource"], json!({"type": "zone", "id": zone}));
    assert_eq!(entry["actor"], json!({"type": "token", "id": token_id}));
    assert_eq!(entry["metadata"]["detail"], "audit.example");
    let (status, body) = api
        .get("/client/v4/accounts/ffffffffffffffffffffffffffffffff/audit_logs")
        .await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
}

/// A request with a bearer token, from `peer` when given (as the listener records it).
async fn call_from(api: &Api, method: Method, path: &str, token: &str, peer: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    if let Some(peer) = peer {
        req.extensions_mut().insert(axum::extract::ConnectInfo(
            peer.parse::<std::net::SocketAddr>().expect("address"),
        ));
    }
    let resp = api.router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn token_restrictions_are_checked_and_enforced() {
    let api = Api::new().await;
    let a = api.zone("a.example").await;
    let b = api.zone("b.example").await;
    let create = |body: Value| api.send(Method::POST, "/client/v4/user/tokens", body);

    for (body, why) in [
        (
            json!({"name": "x", "scope": "read", "expires_on": "2001-01-01T00:00:00Z"}),
            "in the past",
        ),
        (
            json!({"name": "x", "scope": "read", "expires_on": "tomorrow"}),
            "RFC 3339",
        ),
        (
            json!({"name": "x", "scope": "read", "not_before": "2099-02-01T00:00:00Z", "expires_on": "2099-01-01T00:00:00Z"}),
            "before expires_on",
        ),
        (
            json!({"name": "x", "scope": "read", "condition": {"request_ip": {"in": ["10.0.0.0/33"]}}}),
            "CIDR",
        ),
        (json!({"name": "x", "scope": "read", "zones": []}), "1 to 100"),
        (
            json!({"name": "x", "scope": "read", "condition": {"request_ip": {"not_in": ["::ffff:10.0.0.0/104"]}}}),
            "IPv4 form",
        ),
        (json!({"name": "x", "scope": "read", "zones": ["nope"]}), "not found"),
    ] {
        let (status, resp) = create(body.clone()).await;
        assert!(status.is_client_error(), "{body}: {resp}");
        assert!(resp.to_string().contains(why), "{body}: {resp}");
    }

    // Zones: only its zone, the zone list shows only it, and nothing of the account.
    let (status, made) = create(json!({"name": "team-a", "scope": "write", "zones": [a]})).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["result"]["zones"], json!([a]));
    let secret = made["result"]["value"].as_str().expect("secret").to_owned();
    let (status, _) = call_from(
        &api,
        Method::GET,
        &format!("/client/v4/zones/{a}/hostnames"),
        &secret,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, resp) = call_from(
        &api,
        Method::GET,
        &format!("/client/v4/zones/{b}/hostnames"),
        &secret,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{resp}");
    assert!(resp.to_string().contains("only reach its zones"), "{resp}");
    let (status, list) = call_from(&api, Method::GET, "/client/v4/zones", &secret, None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["result"]
        .as_array()
        .expect("zones")
        .iter()
        .filter_map(|z| z["id"].as_str())
        .collect();
    assert_eq!(ids, [a.as_str()]);
    let (status, _) = call_from(&api, Method::GET, "/client/v4/user/tokens", &secret, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call_from(&api, Method::GET, "/client/v4/user/tokens/verify", &secret, None).await;
    assert_eq!(status, StatusCode::OK);
    // A restricted write token cannot make itself an unrestricted one.
    let (made, limited_secret) = api
        .store
        .create_token(
            "until-friday",
            TokenScope::Write,
            &portcullis_store::TokenRestrictions {
                expires_on: Some(time::OffsetDateTime::now_utc().unix_timestamp() + 3600),
                ..Default::default()
            },
            &Actor::system(),
        )
        .await
        .expect("token");
    let body = r#"{"name": "forever", "scope": "write"}"#;
    let (status, resp) = api
        .call(
            Method::POST,
            "/client/v4/user/tokens",
            Some(&limited_secret),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{resp}");
    assert!(resp.to_string().contains("cannot create tokens"), "{resp}");
    // Nor does it count as the way back in: the unrestricted write token stays the last one.
    let (_, list) = api.get("/client/v4/user/tokens").await;
    let unrestricted = list["result"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| {
            t["scope"] == "write" && t["expires_on"].is_null() && t["zones"].is_null() && t["id"] != made.id.as_str()
        })
        .and_then(|t| t["id"].as_str())
        .expect("the first write token")
        .to_owned();
    let (status, resp) = api.delete(&format!("/client/v4/user/tokens/{unrestricted}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");

    // Client addresses: only from 10.0.0.0/8 (IPv4 clients of a dual-stack listener too), never from 10.9.0.0/16;
    // without the peer's address the condition cannot hold.
    let (status, made) = create(json!({"name": "ci", "scope": "read",
        "condition": {"request_ip": {"in": ["10.0.0.0/8"], "not_in": ["10.9.0.0/16"]}}}))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["result"]["condition"]["request_ip"]["in"], json!(["10.0.0.0/8"]));
    let secret = made["result"]["value"].as_str().expect("secret").to_owned();
    for (peer, want) in [
        (Some("10.1.2.3:5000"), StatusCode::OK),
        (Some("[::ffff:10.1.2.3]:5000"), StatusCode::OK),
        (Some("10.9.0.1:5000"), StatusCode::FORBIDDEN),
        (Some("192.0.2.1:5000"), StatusCode::FORBIDDEN),
        (None, StatusCode::FORBIDDEN),
    ] {
        let (status, resp) = call_from(&api, Method::GET, "/client/v4/zones", &secret, peer).await;
        assert_eq!(status, want, "{peer:?}: {resp}");
    }

    // Validity: an expired token and one not valid yet are refused, and listed as expired.
    let restricted = |not_before: Option<i64>, expires_on: Option<i64>| portcullis_store::TokenRestrictions {
        not_before,
        expires_on,
        ..Default::default()
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (old, old_secret) = api
        .store
        .create_token(
            "old",
            TokenScope::Write,
            &restricted(None, Some(now - 1)),
            &Actor::system(),
        )
        .await
        .expect("token");
    let (status, resp) = call_from(&api, Method::GET, "/client/v4/zones", &old_secret, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{resp}");
    assert!(resp.to_string().contains("expired"), "{resp}");
    let (_, early_secret) = api
        .store
        .create_token(
            "early",
            TokenScope::Read,
            &restricted(Some(now + 3600), None),
            &Actor::system(),
        )
        .await
        .expect("token");
    let (status, resp) = call_from(&api, Method::GET, "/client/v4/zones", &early_secret, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{resp}");
    assert!(resp.to_string().contains("not valid before"), "{resp}");
    let (_, tokens) = api.get("/client/v4/user/tokens").await;
    let listed = tokens["result"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["id"] == old.id.as_str())
        .cloned();
    assert_eq!(listed.expect("listed")["status"], "expired");
}

#[tokio::test]
async fn tokens_via_the_api_show_their_secret_once() {
    let api = Api::new().await;
    let (status, body) = api
        .send(
            Method::POST,
            "/client/v4/user/tokens",
            json!({"name": "ci", "scope": "read"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret = body["result"]["value"].as_str().expect("value").to_owned();
    let id = body["result"]["id"].as_str().expect("id").to_owned();
    let (status, _) = api.call(Method::GET, "/client/v4/zones", Some(&secret), None).await;
    assert_eq!(status, StatusCode::OK);
    // Cloudflare's verify endpoint, as clients and Terraform call it: the token's id, never its secret.
    let (status, verified) = api
        .call(Method::GET, "/client/v4/user/tokens/verify", Some(&secret), None)
        .await;
    assert_eq!(
        (status, &verified["result"]),
        (StatusCode::OK, &json!({"id": id, "status": "active"}))
    );
    let (status, _) = api
        .call(Method::GET, "/client/v4/user/tokens/verify", Some("pct_unknown"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = api.get("/client/v4/user/tokens").await;
    assert!(
        list["result"]
            .as_array()
            .expect("list")
            .iter()
            .all(|t| t.get("value").is_none())
    );
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/client/v4/user/tokens/{id}"),
            Some(&api.write.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.call(Method::GET, "/client/v4/zones", Some(&secret), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The last active write token cannot be revoked: nothing could create tokens again.
    let (_, list) = api.get("/client/v4/user/tokens").await;
    let write_id = list["result"]
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["scope"] == "write")
        .and_then(|t| t["id"].as_str())
        .expect("the write token")
        .to_owned();
    let (status, body) = api.delete(&format!("/client/v4/user/tokens/{write_id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        error(&body).1.contains("last live write token without restrictions"),
        "{body}"
    );
    let (status, body) = api
        .send(
            Method::POST,
            "/client/v4/user/tokens",
            json!({"name": "second admin", "scope": "write"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api.delete(&format!("/client/v4/user/tokens/{write_id}")).await;
    assert_eq!(status, StatusCode::OK, "with another write token it can go: {body}");
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let api = Api::new().await;
    let (status, doc) = api.call(Method::GET, "/client/v4/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/zones",
        "/zones/{zone_id}",
        "/zones/{zone_id}/hostnames",
        "/zones/{zone_id}/certificate_authorities/hostname_associations",
        "/zones/{zone_id}/security/events",
        "/zones/{zone_id}/url_normalization",
        "/accounts/{account_id}/rules/lists/{list_id}/items",
        "/accounts/{account_id}/rules/lists/bulk_operations/{operation_id}",
        "/user/tokens",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
}

/// Rate-limiting rules live in the `http_ratelimit` phase, with Cloudflare's `ratelimit` object.
#[tokio::test]
async fn rate_limiting_rules_follow_cloudflare_shapes() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let entry = format!("/client/v4/zones/{zone}/rulesets/phases/http_ratelimit/entrypoint");
    let ratelimit = json!({
        "characteristics": ["cf.colo.id", "cf.tls_client_auth.cert_fingerprint_sha256"],
        "period": 60,
        "requests_per_period": 100,
        "mitigation_timeout": 600
    });
    let (status, body) = api
        .send(
            Method::PUT,
            &entry,
            json!({"rules": [{"expression": "cf.tls_client_auth.cert_verified", "action": "block", "ratelimit": ratelimit}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["phase"], "http_ratelimit");
    assert_eq!(body["result"]["rules"][0]["ratelimit"], ratelimit);
    let ruleset_id = body["result"]["id"].as_str().expect("id").to_owned();
    assert_eq!(api.get(&entry).await.1["result"]["rules"][0]["ratelimit"]["period"], 60);

    for (bad, message) in [
        (
            json!({"expression": "true", "action": "block", "ratelimit": {"characteristics": ["ip.src"], "period": 45, "requests_per_period": 1}}),
            "invalid ratelimit: period must be one of 10, 60, 120, 300, 600, 3600 seconds, found 45",
        ),
        (
            json!({"expression": "true", "action": "block"}),
            "invalid ratelimit: a rate-limiting rule needs ratelimit",
        ),
        (
            json!({"expression": "true", "action": "skip", "ratelimit": ratelimit}),
            "invalid ratelimit: a rate-limiting rule's action must be block or log",
        ),
    ] {
        let (status, body) = api
            .send(
                Method::POST,
                &format!("/client/v4/zones/{zone}/rulesets/{ruleset_id}/rules"),
                bad,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error(&body).1.contains(message), "{body}");
    }
    // Custom rules do not take ratelimit.
    let custom = format!("/client/v4/zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint");
    let (status, body) = api
        .send(
            Method::PUT,
            &custom,
            json!({"rules": [{"expression": "true", "action": "block", "ratelimit": ratelimit}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        error(&body)
            .1
            .contains("only rules of the http_ratelimit phase have ratelimit"),
        "{body}"
    );
    let (status, _) = api
        .get(&format!(
            "/client/v4/zones/{zone}/rulesets/phases/http_request_late_transform/entrypoint"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Both phases are listed.
    let (status, body) = api
        .send(
            Method::PUT,
            &custom,
            json!({"rules": [{"expression": "true", "action": "log"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = api.get(&format!("/client/v4/zones/{zone}/rulesets")).await;
    let phases: Vec<_> = list["result"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["phase"].clone())
        .collect();
    assert_eq!(phases, [json!("http_ratelimit"), json!("http_request_firewall_custom")]);
}

/// The calls Terraform's `cloudflare_ruleset` resource makes: create, read, update, delete.
#[tokio::test]
async fn rulesets_can_be_managed_the_way_terraform_does() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let base = format!("/client/v4/zones/{zone}/rulesets");
    let (status, list) = api.get(&base).await;
    assert_eq!((status, &list["result"]), (StatusCode::OK, &json!([])));

    let mtls = r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}"#;
    let create = json!({
        "kind": "zone",
        "name": "mTLS",
        "description": "managed by terraform",
        "phase": "http_request_firewall_custom",
        "rules": [{"action": "block", "expression": mtls, "description": "mTLS-enforced authentication", "enabled": true}],
    });
    let (status, body) = api.send(Method::POST, &base, create.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rs = &body["result"];
    assert_eq!(
        (&rs["name"], &rs["description"], &rs["kind"], &rs["phase"]),
        (
            &json!("mTLS"),
            &json!("managed by terraform"),
            &json!("zone"),
            &json!("http_request_firewall_custom")
        )
    );
    assert_eq!(rs["rules"][0]["expression"], mtls);
    let id = rs["id"].as_str().expect("id").to_owned();
    let one = format!("{base}/{id}");

    // The phase has one ruleset: a second create is refused, naming the way to replace it.
    let (status, body) = api.send(Method::POST, &base, create.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        error(&body).1.contains(&format!("PUT /zones/{zone}/rulesets/{id}")),
        "{body}"
    );
    for (bad, message) in [
        (json!({"kind": "zone", "name": "x", "rules": []}), "phase is required"),
        (
            json!({"kind": "zone", "name": "x", "phase": "http_request_late_transform", "rules": []}),
            "phase \"http_request_late_transform\" is not supported",
        ),
    ] {
        let (status, body) = api.send(Method::POST, &base, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error(&body).1.starts_with(message), "{body}");
    }

    let (status, got) = api.get(&one).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["result"]["rules"][0]["description"], "mTLS-enforced authentication");
    let (_, list) = api.get(&base).await;
    assert_eq!(list["result"][0]["id"], json!(id));
    assert!(list["result"][0].get("rules").is_none(), "lists leave the rules out");

    // Update: the rules are replaced, the name kept when not given; a bad expression changes nothing.
    let (status, body) = api
        .send(
            Method::PUT,
            &one,
            json!({"rules": [{"action": "log", "expression": "http.host eq \"a.example.com\""}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["name"], "mTLS");
    assert_eq!(body["result"]["version"], "2");
    assert_eq!(body["result"]["rules"].as_array().expect("rules").len(), 1);
    let (status, body) = api
        .send(
            Method::PUT,
            &one,
            json!({"rules": [{"action": "block", "expression": "http.hots eq \"a\""}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("did you mean \"http.host\""), "{body}");
    assert_eq!(api.get(&one).await.1["result"]["version"], "2");

    // Delete: 204 without a body, as Cloudflare answers; then it is gone, and can be created again.
    let (status, body) = api.call(Method::DELETE, &one, Some(&api.write.clone()), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(api.get(&one).await.0, StatusCode::NOT_FOUND);
    let entry = format!("{base}/phases/http_request_firewall_custom/entrypoint");
    assert_eq!(api.get(&entry).await.0, StatusCode::NOT_FOUND);
    let (status, body) = api.call(Method::DELETE, &one, Some(&api.write.clone()), None).await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
    let (status, body) = api.send(Method::POST, &base, create).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["result"]["id"], json!(id));
    // Another zone's ruleset id is not found here.
    let other = api.zone("example.net").await;
    let new_id = body["result"]["id"].as_str().expect("id");
    let (status, _) = api.get(&format!("/client/v4/zones/{other}/rulesets/{new_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rulesets_compile_on_write_and_keep_order() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let entry = format!("/client/v4/zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint");
    let (status, body) = api.get(&entry).await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));

    let mtls = r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}"#;
    let (status, body) = api
        .send(
            Method::PUT,
            &entry,
            json!({"rules": [{"description": "mTLS-enforced authentication", "expression": mtls, "action": "block"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rs = &body["result"];
    assert_eq!(rs["phase"], "http_request_firewall_custom");
    assert_eq!(rs["kind"], "zone");
    assert_eq!(rs["version"], "1");
    assert_eq!(rs["rules"][0]["expression"], mtls);
    assert_eq!(rs["rules"][0]["enabled"], true);
    let ruleset_id = rs["id"].as_str().expect("id").to_owned();
    let first = rs["rules"][0]["id"].as_str().expect("rule id").to_owned();

    let (status, body) = api
        .send(
            Method::PUT,
            &entry,
            json!({"rules": [{"expression": "http.hots eq \"a\"", "action": "block"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (code, message) = error(&body);
    assert_eq!(code, 1400);
    assert!(
        message.starts_with("rule 1 (no id): invalid expression: unknown field \"http.hots\" at 1:1"),
        "{message}"
    );
    assert!(message.contains("did you mean \"http.host\"?"), "{message}");
    assert!(message.contains('^'), "the caret diagnostic is included: {message}");
    let (_, body) = api.get(&entry).await;
    assert_eq!(
        body["result"]["rules"].as_array().expect("rules").len(),
        1,
        "nothing half-written"
    );

    let rules = format!("/client/v4/zones/{zone}/rulesets/{ruleset_id}/rules");
    let (status, body) = api
        .send(
            Method::POST,
            &rules,
            json!({"expression": "http.host eq \"example.com\"", "action": "log", "position": {"index": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let actions: Vec<_> = body["result"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["action"].clone())
        .collect();
    assert_eq!(actions, [json!("log"), json!("block")]);

    let (status, body) = api
        .send(
            Method::POST,
            &rules,
            json!({"expression": "true", "action": "block",
            "action_parameters": {"response": {"status_code": 200, "content": "x", "content_type": "text/plain"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).1.contains("invalid custom response"), "{body}");

    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("{rules}/{first}"),
            json!({"enabled": false, "position": {"before": ""}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r0 = &body["result"]["rules"][0];
    assert_eq!(
        (r0["id"].as_str(), &r0["enabled"], &r0["version"]),
        (Some(first.as_str()), &json!(false), &json!("2"))
    );

    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("{rules}/{first}"),
            Some(&api.write.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["rules"].as_array().expect("rules").len(), 1);
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("{rules}/{first}"),
            Some(&api.write.clone()),
            None,
        )
        .await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));

    let (status, body) = api
        .get(&format!(
            "/client/v4/zones/{zone}/rulesets/phases/http_request_late_transform/entrypoint"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error(&body).1.contains("not supported"), "{body}");
}

/// IP lists in Cloudflare's Lists API shapes: rules reference them as `$name`, a referenced list cannot be deleted,
/// and bad items are refused by position with nothing written.
#[tokio::test]
async fn lists_follow_cloudflare_shapes_and_rules_reference_them() {
    let api = Api::new().await;
    let account = api.store.account().await.expect("account").id;
    let lists = format!("/client/v4/accounts/{account}/rules/lists");
    let (status, body) = api
        .send(
            Method::POST,
            &lists,
            json!({"name": "office", "kind": "ip", "description": "HQ"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = &body["result"];
    assert_eq!(
        (list["name"].as_str(), list["kind"].as_str()),
        (Some("office"), Some("ip"))
    );
    assert_eq!(
        (list["num_items"].as_i64(), list["num_referencing_filters"].as_i64()),
        (Some(0), Some(0))
    );
    let id = list["id"].as_str().expect("id").to_owned();
    for (bad, want) in [
        (json!({"name": "Office", "kind": "ip"}), "lowercase letters"),
        (json!({"name": "hosts", "kind": "hostname"}), "IP lists"),
        (json!({"name": "office", "kind": "ip"}), "already exists"),
    ] {
        let (status, body) = api.send(Method::POST, &lists, bad.clone()).await;
        assert!(status.is_client_error(), "{bad}: {status}");
        assert!(error(&body).1.contains(want), "{bad}: {body}");
    }

    let items = format!("{lists}/{id}/items");
    let (status, body) = api
        .send(
            Method::POST,
            &items,
            json!([{"ip": "192.0.2.0/24", "comment": "hq"}, {"ip": "10.0.0.1/8"}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).1.starts_with("item 1: "), "{body}");
    assert!(error(&body).1.contains("did you mean 10.0.0.0/8"), "{body}");
    let (status, body) = api
        .send(
            Method::POST,
            &items,
            json!([{"ip": "192.0.2.0/24", "comment": "hq"}, {"ip": "2001:DB8::/32"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let op = body["result"]["operation_id"].as_str().expect("operation").to_owned();
    let (status, body) = api.get(&format!("{lists}/bulk_operations/{op}")).await;
    assert_eq!(
        (status, body["result"]["status"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{body}"
    );

    let (_, body) = api.get(&format!("{items}?per_page=1")).await;
    assert_eq!(body["result"].as_array().expect("items").len(), 1);
    let after = body["result_info"]["cursors"]["after"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, body) = api.get(&format!("{items}?per_page=1&cursor={after}")).await;
    assert_eq!(body["result"].as_array().expect("items").len(), 1);
    assert!(body["result_info"]["cursors"].get("after").is_none(), "{body}");
    let (_, body) = api.get(&format!("{items}?search=2001")).await;
    let v6 = &body["result"][0];
    assert_eq!(v6["ip"], "2001:db8::/32", "stored canonical");
    let (status, body) = api
        .get(&format!("{items}/{}", v6["id"].as_str().expect("item id")))
        .await;
    assert_eq!(
        (status, body["result"]["ip"].as_str()),
        (StatusCode::OK, Some("2001:db8::/32"))
    );

    // A rule naming the list; a typo in the name is caught with a suggestion.
    let zone = api.zone("example.com").await;
    let entry = format!("/client/v4/zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint");
    let (status, body) = api
        .send(
            Method::PUT,
            &entry,
            json!({"rules": [{"expression": "ip.src in $ofice", "action": "block"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&body)
            .1
            .contains("unknown list `$ofice` at 1:11; did you mean $office?"),
        "{body}"
    );
    // A token limited to the zone cannot list the account's lists, and is not shown their names either.
    let (_, zone_token) = api
        .store
        .create_token(
            "zone only",
            portcullis_store::TokenScope::Write,
            &portcullis_store::TokenRestrictions {
                zones: Some(vec![zone.clone()]),
                ..Default::default()
            },
            &portcullis_store::Actor::system(),
        )
        .await
        .expect("token");
    let typo = json!({"rules": [{"expression": "ip.src in $ofice", "action": "block"}]}).to_string();
    let (status, body) = api.call(Method::PUT, &entry, Some(&zone_token), Some(&typo)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error(&body).1;
    assert!(message.contains("unknown list `$ofice` at 1:11"), "{body}");
    assert!(!message.contains("office"), "{body}");
    let (status, body) = api
        .send(
            Method::PUT,
            &entry,
            json!({"rules": [{"expression": "not ip.src in $office", "action": "block"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .send(
            Method::POST,
            "/client/v4/rules/validate",
            json!({"expression": "ip.src in $office"}),
        )
        .await;
    assert_eq!(
        (status, body["result"]["valid"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    let (_, body) = api.get(&format!("{lists}/{id}")).await;
    assert_eq!(body["result"]["num_referencing_filters"], 1);
    assert_eq!(body["result"]["num_items"], 2);
    let (status, body) = api
        .call(Method::DELETE, &format!("{lists}/{id}"), Some(&api.write.clone()), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(error(&body).1.contains("referenced by rules"), "{body}");

    // Replace, delete items, update the description; then free the list and delete it.
    let (status, _) = api.send(Method::PUT, &items, json!([{"ip": "203.0.113.9"}])).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = api.get(&items).await;
    let only = body["result"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(body["result"].as_array().expect("items").len(), 1);
    let (status, _) = api.send(Method::DELETE, &items, json!({"items": [{"id": only}]})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .send(Method::PUT, &format!("{lists}/{id}"), json!({"description": "moved"}))
        .await;
    assert_eq!(
        (status, body["result"]["description"].as_str()),
        (StatusCode::OK, Some("moved"))
    );
    assert_eq!(body["result"]["num_items"], 0);
    let (status, _) = api.send(Method::PUT, &entry, json!({"rules": []})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .call(Method::DELETE, &format!("{lists}/{id}"), Some(&api.write.clone()), None)
        .await;
    assert_eq!(
        (status, body["result"]["id"].as_str()),
        (StatusCode::OK, Some(id.as_str())),
        "{body}"
    );
    let (_, body) = api.get(&lists).await;
    assert_eq!(body["result"].as_array().expect("lists").len(), 0);

    // A read token cannot write lists.
    let read = api.read.clone();
    let (status, _) = api
        .call(
            Method::POST,
            &lists,
            Some(&read),
            Some(r#"{"name": "x", "kind": "ip"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// `/healthz` and `/readyz` need no token; readiness follows the caller's check (the edge draining) and the store.
#[tokio::test]
async fn health_checks_answer_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_sqlite(&dir.path().join("p.db")).await.expect("store");
    let master_key = std::sync::Arc::new(portcullis_pki::MasterKey::generate());
    let draining = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = draining.clone();
    let state =
        AdminState::new(store, AdminSettings::default(), master_key).with_readiness(std::sync::Arc::new(move || {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                Err("shutting down".to_owned())
            } else {
                Ok(())
            }
        }));
    for app in [router(state.clone()), crate::public_router(state)] {
        let get = |path: &str| {
            let app = app.clone();
            let req = Request::builder().uri(path).body(Body::empty()).expect("request");
            async move {
                let resp = app.oneshot(req).await.expect("response");
                let status = resp.status();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        draining.store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(get("/healthz").await, (StatusCode::OK, "ok\n".to_owned()));
        assert_eq!(get("/readyz").await, (StatusCode::OK, "ready\n".to_owned()));
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            get("/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down\n".to_owned())
        );
        assert_eq!(get("/healthz").await.0, StatusCode::OK, "alive while draining");
    }
}
