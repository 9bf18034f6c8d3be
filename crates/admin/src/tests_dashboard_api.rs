//! Tests of the API calls the dashboard added: the traffic endpoint, issuing with a named CA, and editing a rule's
//! custom response away.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::tests::{Api, error};
use crate::{MinuteCount, TrafficSource};

/// A source with fixed counts, remembering the `now` it was asked about.
struct Fixed(std::sync::Mutex<Option<i64>>);

impl TrafficSource for Fixed {
    fn last_hour(&self, now: i64) -> Vec<MinuteCount> {
        *self.0.lock().expect("lock") = Some(now);
        let current = now - now % 60;
        (0..60)
            .rev()
            .map(|ago| MinuteCount {
                minute_start: current - ago * 60,
                requests: if ago == 0 { 7 } else { u64::from(ago == 30) * 3 },
                blocked: if ago == 0 { 2 } else { 0 },
            })
            .collect()
    }
}

async fn account(api: &Api) -> String {
    api.store.account().await.expect("account").id
}

#[tokio::test]
async fn traffic_reports_the_sources_minutes_oldest_first_with_totals() {
    let source = Arc::new(Fixed(std::sync::Mutex::new(None)));
    let api = Api::with_traffic(source.clone()).await;
    let account = account(&api).await;
    let (status, body) = api
        .get(&format!("/client/v4/accounts/{account}/portcullis/traffic"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let asked = source.0.lock().expect("lock").expect("the source was asked");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - asked).abs() <= 5, "asked about {asked}, now is {now}");
    let result = &body["result"];
    assert_eq!(result["scope"], "node");
    assert_eq!(
        (result["requests"].as_u64(), result["blocked"].as_u64()),
        (Some(10), Some(2))
    );
    let minutes = result["minutes"].as_array().expect("minutes");
    assert_eq!(minutes.len(), 60);
    assert_eq!(minutes[59]["requests"], 7);
    assert_eq!(minutes[59]["blocked"], 2);
    assert_eq!(minutes[29]["requests"], 3);
    assert_eq!(result["since"], minutes[0]["minute_start"]);
    let starts: Vec<&str> = minutes
        .iter()
        .map(|m| m["minute_start"].as_str().expect("rfc3339"))
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "oldest first: {starts:?}");
    assert!(starts[59].ends_with(":00Z"), "{}", starts[59]);

    let (status, body) = api
        .get("/client/v4/accounts/0123456789abcdef0123456789abcdef/portcullis/traffic")
        .await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
}

#[tokio::test]
async fn traffic_without_an_edge_is_an_error_not_zeros() {
    let api = Api::new().await;
    let account = account(&api).await;
    let (status, body) = api
        .get(&format!("/client/v4/accounts/{account}/portcullis/traffic"))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (code, message) = error(&body);
    assert_eq!(code, 1503);
    assert!(message.contains("no edge runs in this process"), "{message}");
    assert!(body["result"].is_null(), "{body}");
}

#[tokio::test]
async fn issuing_names_the_ca_and_refuses_one_that_cannot_issue() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let account = account(&api).await;
    let (_, cas) = api.get(&format!("/client/v4/accounts/{account}/managed_ca")).await;
    let active = cas["result"][0]["id"].as_str().expect("the managed CA").to_owned();
    let create = |ca: &str| {
        json!({"generate_key": {"type": "p256"}, "common_name": "dev", "validity_days": 7,
               "certificate_authority_id": ca})
    };
    let certs = format!("/client/v4/zones/{zone}/client_certificates");
    let (status, body) = api.send(Method::POST, &certs, create(&active)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["result"]["certificate_authority"]["id"], json!(active));

    // After a rotation the old CA is only trusted: naming it is refused, and says which CA issues now.
    let (status, rotated) = api
        .send(
            Method::POST,
            &format!("/client/v4/accounts/{account}/managed_ca/rotate"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new_id = rotated["result"]["id"].as_str().expect("id").to_owned();
    let (status, body) = api.send(Method::POST, &certs, create(&active)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = error(&body).1;
    assert!(message.contains("trusted") && message.contains(&new_id), "{message}");

    let (status, body) = api.send(Method::POST, &certs, create("no-such-ca")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("not found"), "{body}");
    let (_, list) = api.get(&certs).await;
    assert_eq!(
        list["result"].as_array().map(Vec::len),
        Some(1),
        "refusals issued nothing"
    );
}

#[tokio::test]
async fn a_rule_edit_changes_expression_and_action_and_can_drop_the_custom_response() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let entry = format!("/client/v4/zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint");
    let rule = json!({"description": "mTLS", "expression": "not cf.tls_client_auth.cert_verified", "action": "block",
                      "action_parameters": {"response": {"status_code": 401, "content_type": "text/plain",
                                                         "content": "no"}}});
    let (status, body) = api.send(Method::PUT, &entry, json!({"rules": [rule]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ruleset = body["result"]["id"].as_str().expect("ruleset id").to_owned();
    let id = body["result"]["rules"][0]["id"].as_str().expect("rule id").to_owned();
    let path = format!("/client/v4/zones/{zone}/rulesets/{ruleset}/rules/{id}");

    // What the dashboard sends when the custom response is unchecked.
    let edit = json!({"description": "edited", "expression": "http.request.uri.path eq \"/x\"", "action": "block",
                      "action_parameters": {}});
    let (status, body) = api.send(Method::PATCH, &path, edit).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got: &Value = &body["result"]["rules"][0];
    assert_eq!(got["description"], "edited");
    assert_eq!(got["expression"], "http.request.uri.path eq \"/x\"");
    assert!(
        got["action_parameters"].get("response").is_none(),
        "the custom response is gone: {got}"
    );

    // An invalid expression is refused with its caret diagnostic and changes nothing.
    let (status, body) = api
        .send(Method::PATCH, &path, json!({"expression": "http.hots eq \"x\""}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains('^'), "{body}");
    let (_, now) = api.get(&entry).await;
    assert_eq!(now["result"]["rules"][0]["description"], "edited");

    // A status outside 400–499 is refused.
    let (status, body) = api
        .send(
            Method::PATCH,
            &path,
            json!({"action_parameters": {"response": {"status_code": 302, "content_type": "text/plain", "content": ""}}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = api.send(Method::PATCH, &path, json!({"action": "log"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["rules"][0]["action"], "log");
}

/// Skip rules take Cloudflare's `ruleset` and `phases`; parameters Portcullis does not know are refused, not
/// dropped, and changing a rule's action drops the parameters of the old one.
#[tokio::test]
async fn skip_rules_take_ruleset_and_phases_and_unknown_parameters_are_refused() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let entry = format!("/client/v4/zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint");
    let skip = json!({"expression": "http.request.uri.path eq \"/partner\"", "action": "skip",
                      "action_parameters": {"phases": ["http_ratelimit"]}});
    let (status, body) = api.send(Method::PUT, &entry, json!({"rules": [skip]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["result"]["rules"][0]["action_parameters"],
        json!({"phases": ["http_ratelimit"]})
    );
    let ruleset = body["result"]["id"].as_str().expect("ruleset id").to_owned();
    let id = body["result"]["rules"][0]["id"].as_str().expect("rule id").to_owned();

    for (params, says) in [
        (json!({"products": ["waf"]}), "unknown field `products`"),
        (json!({"phases": ["http_request_firewall_custom"]}), "cannot be skipped"),
        (json!({"ruleset": "other"}), "ruleset must be \\\"current\\\""),
    ] {
        let rule = json!({"expression": "true", "action": "skip", "action_parameters": params});
        let (status, body) = api
            .send(
                Method::POST,
                &format!("/client/v4/zones/{zone}/rulesets/{ruleset}/rules"),
                rule,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.to_string().contains(says), "{says}: {body}");
    }

    let path = format!("/client/v4/zones/{zone}/rulesets/{ruleset}/rules/{id}");
    let (status, body) = api.send(Method::PATCH, &path, json!({"action": "block"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = &body["result"]["rules"][0];
    assert_eq!(got["action"], "block");
    assert!(
        got.get("action_parameters").is_none_or(|p| p.get("phases").is_none()),
        "{got}"
    );
}

/// The list's extensions the dashboard pages with: `search`, `expires_before` and `order=expires_on`, with bad values
/// named.
#[tokio::test]
async fn certificate_lists_search_and_filter_by_expiry_on_the_server() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let path = format!("/client/v4/zones/{zone}/client_certificates");
    for (cn, days) in [("door-lock-7", 3), ("thermostat", 30), ("Door-Bell", 10)] {
        let (status, body) = api
            .send(
                Method::POST,
                &path,
                json!({"generate_key": {"type": "p256"}, "common_name": cn, "validity_days": days}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let names = |body: &Value| -> Vec<String> {
        body["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|c| c["common_name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, body) = api.get(&format!("{path}?search=DOOR&per_page=1")).await;
    assert_eq!(names(&body).len(), 1);
    assert_eq!(body["result_info"]["total_count"], 2, "{body}");
    let soon = time::OffsetDateTime::now_utc().unix_timestamp() + 15 * 86_400;
    let (_, body) = api
        .get(&format!("{path}?status=active&expires_before={soon}&order=expires_on"))
        .await;
    assert_eq!(names(&body), ["door-lock-7", "Door-Bell"]);
    let at = crate::time_fmt::rfc3339(soon);
    let (_, body) = api.get(&format!("{path}?expires_before={at}&order=expires_on")).await;
    assert_eq!(names(&body), ["door-lock-7", "Door-Bell"]);
    for (query, says) in [
        ("expires_before=tomorrow", "neither an RFC 3339 time"),
        ("order=name", "unknown order \"name\""),
        (&format!("search={}", "x".repeat(257))[..], "search is over 256 bytes"),
    ] {
        let (status, body) = api.get(&format!("{path}?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error(&body).1.contains(says), "{says}: {body}");
    }
}

/// A rule stored by a version without the wrong-case hex check keeps working and does not block edits of its
/// ruleset; new and changed expressions are checked.
#[tokio::test]
async fn rules_stored_before_a_new_check_do_not_block_edits() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let old = portcullis_store::NewRule {
        id: Some("old".into()),
        description: "written by an older version".into(),
        expression: "cf.tls_client_auth.cert_serial eq \"3bb9\"".into(),
        action: "block".into(),
        action_parameters: None,
        ratelimit: None,
        lists: Vec::new(),
        enabled: true,
    };
    let rs = api
        .store
        .put_entrypoint(
            &zone,
            "http_request_firewall_custom",
            "default",
            "",
            vec![old],
            &portcullis_store::Actor::system(),
        )
        .await
        .expect("stored as an older version would have");
    let rules = format!("/client/v4/zones/{zone}/rulesets/{}/rules", rs.id);
    let add = |expression: &str| json!({"expression": expression, "action": "log"});
    let (status, body) = api
        .send(Method::POST, &rules, add("http.request.uri.path eq \"/x\""))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .send(Method::PATCH, &format!("{rules}/old"), json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("{rules}/old"),
            json!({"expression": "cf.tls_client_auth.cert_serial eq \"3bb9aa\""}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("write \"3BB9AA\""), "{body}");
    let (status, body) = api
        .send(Method::POST, &rules, add("cf.tls_client_auth.cert_ski eq \"ab\""))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A whole-ruleset PUT that keeps the old rule as it is passes too.
    let entry = format!("/client/v4/zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint");
    let (status, body) = api
        .send(Method::PUT, &entry, json!({"rules": [{"id": "old", "expression": "cf.tls_client_auth.cert_serial eq \"3bb9\"", "action": "block"}]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
