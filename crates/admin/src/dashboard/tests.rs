//! Dashboard tests, in-process: sign-in, session authentication of the API (cookie + CSRF), sign-out, the
//! expression validation route, and the pages' and assets' headers.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::tests::{Api, error};

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn request(
    api: &Api,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, String)>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1:8081");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = match body {
        Some((content_type, body)) => req.header(header::CONTENT_TYPE, content_type).body(Body::from(body)),
        None => req.body(Body::empty()),
    }
    .expect("request");
    let resp = api.router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Signs in with `token`; returns the `Cookie` header value and the page's CSRF token.
async fn sign_in(api: &Api, token: &str) -> (String, String) {
    let reply = request(
        api,
        Method::POST,
        "/dashboard/login",
        &[],
        Some(("application/x-www-form-urlencoded", format!("token={token}"))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.headers[header::LOCATION], "/dashboard");
    let set_cookie = reply.headers[header::SET_COOKIE].to_str().expect("ascii").to_owned();
    assert!(set_cookie.starts_with("portcullis_session="), "{set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie} lacks {attribute}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP: no Secure attribute: {set_cookie}"
    );
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    let page = request(api, Method::GET, "/dashboard", &[("cookie", &cookie)], None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let marker = "<meta name=\"csrf-token\" content=\"";
    let start = page.body.find(marker).expect("a csrf meta tag") + marker.len();
    let csrf = page.body[start..].split('"').next().expect("csrf").to_owned();
    assert_eq!(csrf.len(), 64, "{csrf}");
    (cookie, csrf)
}

#[tokio::test]
async fn sign_in_with_a_good_token_sets_a_session_cookie_and_a_bad_one_shows_an_error() {
    let api = Api::new().await;
    let page = request(&api, Method::GET, "/dashboard", &[], None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/dashboard/login");

    let login = request(&api, Method::GET, "/dashboard/login", &[], None).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("name=\"token\""), "{}", login.body);

    let bad = request(
        &api,
        Method::POST,
        "/dashboard/login",
        &[],
        Some(("application/x-www-form-urlencoded", "token=pct_nope".into())),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.headers.get(header::SET_COOKIE).is_none());
    assert!(bad.body.contains("That token is not valid"), "{}", bad.body);

    let cross_site = request(
        &api,
        Method::POST,
        "/dashboard/login",
        &[("origin", "https://evil.example")],
        Some(("application/x-www-form-urlencoded", format!("token={}", api.write))),
    )
    .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert!(cross_site.headers.get(header::SET_COOKIE).is_none());

    let (cookie, csrf) = sign_in(&api, &api.write.clone()).await;
    let page = request(&api, Method::GET, "/dashboard/events", &[("cookie", &cookie)], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&csrf));
    assert!(
        page.body.contains("aria-current=\"page\">Security events"),
        "{}",
        page.body
    );

    // Behind a TLS-terminating proxy the cookie is Secure.
    let secure = request(
        &api,
        Method::POST,
        "/dashboard/login",
        &[("x-forwarded-proto", "https")],
        Some(("application/x-www-form-urlencoded", format!("token={}", api.write))),
    )
    .await;
    assert!(
        secure.headers[header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .contains("; Secure")
    );
}

#[tokio::test]
async fn the_api_accepts_the_session_cookie_with_csrf_on_writes() {
    let api = Api::new().await;
    let (cookie, csrf) = sign_in(&api, &api.write.clone()).await;
    let zone_body = || Some(("application/json", json!({"name": "example.com"}).to_string()));

    let list = request(&api, Method::GET, "/client/v4/zones", &[("cookie", &cookie)], None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);

    let no_csrf = request(
        &api,
        Method::POST,
        "/client/v4/zones",
        &[("cookie", &cookie)],
        zone_body(),
    )
    .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN, "{}", no_csrf.body);
    assert_eq!(error(&no_csrf.json()).0, 9109);

    let wrong = request(
        &api,
        Method::POST,
        "/client/v4/zones",
        &[("cookie", &cookie), ("x-csrf-token", &"0".repeat(64))],
        zone_body(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.body);

    let created = request(
        &api,
        Method::POST,
        "/client/v4/zones",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        zone_body(),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    let unknown = request(
        &api,
        Method::GET,
        "/client/v4/zones",
        &[("cookie", "portcullis_session=feedface")],
        None,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error(&unknown.json()).0, 10000);
}

#[tokio::test]
async fn a_read_scope_session_can_only_read() {
    let api = Api::new().await;
    let (cookie, csrf) = sign_in(&api, &api.read.clone()).await;
    let page = request(&api, Method::GET, "/dashboard", &[("cookie", &cookie)], None).await;
    assert!(page.body.contains("<meta name=\"can-write\" content=\"false\">"));
    let list = request(&api, Method::GET, "/client/v4/zones", &[("cookie", &cookie)], None).await;
    assert_eq!(list.status, StatusCode::OK);
    let write = request(
        &api,
        Method::POST,
        "/client/v4/zones",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        Some(("application/json", json!({"name": "example.com"}).to_string())),
    )
    .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN, "{}", write.body);
    assert!(error(&write.json()).1.contains("read scope"));
}

#[tokio::test]
async fn a_read_scope_token_can_validate_an_expression_but_still_cannot_write() {
    let api = Api::new().await;
    let read = api.read.clone();
    let expression = json!({"expression": "(http.hots eq \"x\")"}).to_string();

    // Bearer read token: the validation route answers, a write is refused.
    let (status, body) = api
        .call(
            Method::POST,
            "/client/v4/rules/validate",
            Some(&read),
            Some(&expression),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["valid"], json!(false), "{body}");
    assert!(
        body["result"]["diagnostic"].as_str().expect("diagnostic").contains('^'),
        "{body}"
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/client/v4/zones",
            Some(&read),
            Some(&json!({"name": "example.com"}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).1.contains("read scope"), "{body}");

    // Read-scope session: validation still needs the CSRF token, and writes stay refused.
    let (cookie, csrf) = sign_in(&api, &read).await;
    let no_csrf = request(
        &api,
        Method::POST,
        "/client/v4/rules/validate",
        &[("cookie", &cookie)],
        Some(("application/json", expression.clone())),
    )
    .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN, "{}", no_csrf.body);
    assert!(error(&no_csrf.json()).1.contains("X-CSRF-Token"), "{}", no_csrf.body);
    let valid = request(
        &api,
        Method::POST,
        "/client/v4/rules/validate",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        Some((
            "application/json",
            json!({"expression": "http.request.uri.path eq \"/api\""}).to_string(),
        )),
    )
    .await;
    assert_eq!(valid.status, StatusCode::OK, "{}", valid.body);
    assert_eq!(valid.json()["result"], json!({"valid": true}));
    for (method, path, body) in [
        (Method::POST, "/client/v4/zones", json!({"name": "example.com"})),
        (Method::DELETE, "/client/v4/zones/0123456789abcdef", json!({})),
    ] {
        let write = request(
            &api,
            method.clone(),
            path,
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            Some(("application/json", body.to_string())),
        )
        .await;
        assert_eq!(write.status, StatusCode::FORBIDDEN, "{method} {path}: {}", write.body);
        assert!(
            error(&write.json()).1.contains("read scope"),
            "{method} {path}: {}",
            write.body
        );
    }
    let zones = request(&api, Method::GET, "/client/v4/zones", &[("cookie", &cookie)], None).await;
    assert_eq!(zones.json()["result"], json!([]), "nothing was written: {}", zones.body);
}

#[tokio::test]
async fn sign_out_needs_the_csrf_token_and_ends_the_session() {
    let api = Api::new().await;
    let (cookie, csrf) = sign_in(&api, &api.write.clone()).await;
    let form = |csrf: &str| Some(("application/x-www-form-urlencoded", format!("csrf={csrf}")));
    let refused = request(
        &api,
        Method::POST,
        "/dashboard/logout",
        &[("cookie", &cookie)],
        form("nope"),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/html"),
        "{:?}",
        refused.headers
    );
    assert!(refused.body.starts_with("<!doctype html>"), "{}", refused.body);
    assert!(refused.body.contains("Sign-out refused"), "{}", refused.body);
    assert!(refused.body.contains("href=\"/dashboard\""), "{}", refused.body);
    let still = request(&api, Method::GET, "/client/v4/zones", &[("cookie", &cookie)], None).await;
    assert_eq!(still.status, StatusCode::OK);

    let out = request(
        &api,
        Method::POST,
        "/dashboard/logout",
        &[("cookie", &cookie)],
        form(&csrf),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.headers[header::LOCATION], "/dashboard/login");
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );
    let after = request(&api, Method::GET, "/client/v4/zones", &[("cookie", &cookie)], None).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let page = request(&api, Method::GET, "/dashboard", &[("cookie", &cookie)], None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn revoking_the_token_ends_its_sessions() {
    let api = Api::new().await;
    let (_, secret) = api
        .store
        .create_token(
            "dash",
            portcullis_store::TokenScope::Write,
            &Default::default(),
            &portcullis_store::Actor::system(),
        )
        .await
        .expect("token");
    let (cookie, _) = sign_in(&api, &secret).await;
    let tokens = api.store.list_tokens().await.expect("tokens");
    let id = tokens.iter().find(|t| t.name == "dash").expect("the token").id.clone();
    api.store
        .revoke_token(&id, &portcullis_store::Actor::system())
        .await
        .expect("revoke");
    let after = request(&api, Method::GET, "/client/v4/zones", &[("cookie", &cookie)], None).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.body);
}

#[tokio::test]
async fn the_validate_route_reports_the_caret_diagnostic() {
    let api = Api::new().await;
    let (status, body) = api
        .send(
            Method::POST,
            "/client/v4/rules/validate",
            json!({"expression": "not cf.tls_client_auth.cert_verified and http.request.uri.path in {\"/api\"}"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!({"valid": true}));

    let (status, body) = api
        .send(
            Method::POST,
            "/client/v4/rules/validate",
            json!({"expression": "(http.hots eq \"x\")"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = &body["result"];
    assert_eq!(result["valid"], json!(false));
    assert_eq!(result["line"], json!(1));
    assert_eq!(result["column"], json!(2));
    assert!(
        result["message"].as_str().expect("message").contains("http.hots"),
        "{body}"
    );
    assert!(
        result["diagnostic"].as_str().expect("diagnostic").contains("^^^^^^^^^"),
        "{body}"
    );

    let spec = crate::openapi();
    assert!(spec.paths.paths.contains_key("/rules/validate"));
}

#[tokio::test]
async fn pages_and_assets_have_content_types_and_a_csp() {
    let api = Api::new().await;
    let login = request(&api, Method::GET, "/dashboard/login", &[], None).await;
    assert_eq!(login.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = login.headers[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert!(!login.body.contains("<script>"), "no inline script");

    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let reply = request(&api, Method::GET, &format!("/dashboard/assets/{file}"), &[], None).await;
        assert_eq!(reply.status, StatusCode::OK, "{file}");
        assert_eq!(reply.headers[header::CONTENT_TYPE], content_type, "{file}");
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(reply.headers.contains_key(header::CONTENT_SECURITY_POLICY));
    }
    let missing = request(&api, Method::GET, "/dashboard/assets/nope.js", &[], None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[test]
fn escape_covers_html_metacharacters() {
    assert_eq!(
        super::escape("<a href=\"x\">Tom & 'Jerry'</a>"),
        "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
    );
}

#[test]
fn the_sign_in_limiter_counts_attempts_per_address_and_globally_in_bounded_memory() {
    use super::limiter::{CEILING, GLOBAL, MAX_ADDRESSES, PER_ADDRESS, SignInLimiter, WINDOW};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::{Duration, Instant};

    let limiter = SignInLimiter::default();
    let t0 = Instant::now();
    let a = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let b = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));
    // Each attempt counts when it begins, so attempts in parallel cannot outrun the count.
    for i in 0..PER_ADDRESS {
        assert!(
            limiter.begin(a, t0 + Duration::from_secs(u64::from(i))).is_ok(),
            "attempt {i} is allowed"
        );
    }
    let limited = limiter
        .begin(a, t0 + Duration::from_secs(10))
        .expect_err("the sixth is refused");
    assert!(!limited.global);
    assert_eq!(limited.retry_after, 50, "the window started at the first attempt");
    assert!(
        limiter.begin(a, t0 + Duration::from_secs(59)).is_err(),
        "a refused attempt does not count, nor end the wait"
    );
    assert!(
        limiter.begin(b, t0 + Duration::from_secs(10)).is_ok(),
        "other addresses are not affected"
    );
    limiter.succeeded(b, t0 + Duration::from_secs(10));
    assert!(limiter.begin(a, t0 + WINDOW).is_ok(), "the window is over");
    limiter.succeeded(a, t0 + WINDOW);
    assert_eq!(limiter.tracked(), 0, "a sign-in takes back its own attempt");
    // A sign-in takes back only its own attempt: a valid token does not reset the count between guesses.
    let c = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)));
    for _ in 0..PER_ADDRESS - 1 {
        assert!(limiter.begin(c, t0 + WINDOW).is_ok());
    }
    assert!(limiter.begin(c, t0 + WINDOW).is_ok());
    limiter.succeeded(c, t0 + WINDOW);
    assert!(limiter.begin(c, t0 + WINDOW).is_ok(), "the fifth attempt, given back");
    assert!(
        limiter.begin(c, t0 + WINDOW).is_err(),
        "the earlier failures still count"
    );

    // An IPv6 client's /64 is one address; another /64 is another.
    let v6 = |s: &str| Some(IpAddr::V6(s.parse::<Ipv6Addr>().unwrap()));
    let six = SignInLimiter::default();
    for i in 0..PER_ADDRESS {
        assert!(six.begin(v6(&format!("2001:db8:1:2::{:x}", i + 1)), t0).is_ok());
    }
    assert!(six.begin(v6("2001:db8:1:2:ffff::9"), t0).is_err());
    assert!(six.begin(v6("2001:db8:1:3::1"), t0).is_ok());

    // Many addresses: the table stays bounded.
    let many = SignInLimiter::default();
    let t1 = Instant::now();
    // Under the ceiling each minute, from more addresses than the table holds.
    let per_minute = CEILING - 1;
    for i in 0..(MAX_ADDRESSES as u32 + 50) {
        let at = t1 + WINDOW * (i / per_minute);
        assert!(
            many.begin(Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))), at)
                .is_ok()
        );
        assert!(many.tracked() <= MAX_ADDRESSES);
    }
    assert!(many.tracked() >= 50, "the last minute's addresses are tracked");

    // The global limit: after GLOBAL failures in a minute, an address that failed at all waits, and so does an
    // unknown peer; an address with no failure still gets its attempt.
    let global = SignInLimiter::default();
    for _ in 0..GLOBAL {
        assert!(global.begin(None, t1).is_ok());
    }
    assert_eq!(global.tracked(), 0);
    let later = t1 + Duration::from_millis(1500);
    let limited = global.begin(None, later).expect_err("an unknown peer waits");
    assert!(limited.global);
    assert_eq!(limited.retry_after, 59, "rounded up");
    assert!(global.begin(b, later).is_ok(), "a clean address is let in");
    let limited = global.begin(b, later).expect_err("its second attempt waits");
    assert!(limited.global);
    assert!(global.begin(b, t1 + WINDOW).is_ok(), "until its minute is over");

    // Past the ceiling, every attempt waits, however many addresses it comes from.
    let ceiling = SignInLimiter::default();
    for i in 0..CEILING {
        assert!(
            ceiling
                .begin(Some(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i))), t1)
                .is_ok()
        );
    }
    let limited = ceiling
        .begin(Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))), t1)
        .expect_err("a clean address waits too");
    assert!(limited.global);
}

#[tokio::test]
async fn too_many_failed_sign_ins_from_an_address_get_429_with_retry_after() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;

    let api = Api::new().await;
    let login = |peer: &str, token: &str| {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/dashboard/login")
            .header(header::HOST, "127.0.0.1:8081")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().expect("address")));
        let router = api.router.clone();
        async move {
            let resp = router.oneshot(req).await.expect("response");
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            (status, headers, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    for _ in 0..super::limiter::PER_ADDRESS {
        let (status, _, _) = login("198.51.100.7:40000", "pct_wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Another port of the same address is the same client; even the right token waits.
    let (status, headers, body) = login("198.51.100.7:40001", &api.write.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(headers.get(header::SET_COOKIE).is_none());
    assert!(
        body.contains("Too many failed sign-ins from your address. Try again in"),
        "{body}"
    );
    // IPv4-mapped IPv6 is the same address.
    let (status, _, _) = login("[::ffff:198.51.100.7]:40002", &api.write.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Another address signs in.
    let (status, headers, _) = login("198.51.100.8:40000", &api.write.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers.contains_key(header::SET_COOKIE));
    // Attempts sent at once are counted as they begin: no more than the limit are checked.
    let tasks: Vec<_> = (0..12)
        .map(|i| tokio::spawn(login(&format!("203.0.113.9:{}", 40000 + i), "pct_wrong")))
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task").0);
    }
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(
        (checked, refused),
        (
            super::limiter::PER_ADDRESS as usize,
            12 - super::limiter::PER_ADDRESS as usize
        ),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn the_overview_is_the_landing_page_and_certificates_moved() {
    let api = Api::new().await;
    let (cookie, _) = sign_in(&api, &api.write.clone()).await;
    let landing = request(&api, Method::GET, "/dashboard", &[("cookie", &cookie)], None).await;
    assert!(landing.body.contains("data-page=\"overview\""), "{}", landing.body);
    assert!(
        landing.body.contains("aria-current=\"page\">Overview"),
        "{}",
        landing.body
    );
    assert!(landing.body.contains("id=\"ov-chart\""));
    let certs = request(
        &api,
        Method::GET,
        "/dashboard/certificates",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(certs.status, StatusCode::OK);
    assert!(certs.body.contains("data-page=\"certificates\""), "{}", certs.body);
    assert!(
        certs
            .body
            .contains("<a href=\"/dashboard/certificates\" aria-current=\"page\">Client Certificates")
    );
}
