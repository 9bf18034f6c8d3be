//! The web dashboard under `/dashboard`: server-rendered HTML shells and a small vanilla-JavaScript module that
//! drives the JSON API under `/client/v4` with the browser's session cookie. Everything is embedded in the binary
//! (no CDN, no build step).
//!
//! Sign-in takes an API token, checks it with the store and starts a server-side session (see [`sessions`]): the
//! browser holds only a random id in an HttpOnly, SameSite=Strict cookie. Pages carry the session's CSRF token in a
//! `<meta name="csrf-token">`; the API's auth middleware requires it in `X-CSRF-Token` on every non-GET call made
//! with the cookie. Pages are served with a Content-Security-Policy that allows only this origin's scripts and
//! styles and no inline script.
//!
//! Failed sign-ins are limited per client address and for the whole process (see [`limiter`]).

pub mod limiter;
pub mod sessions;
pub mod validate;

use axum::Form;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use portcullis_store::TokenScope;

use crate::AdminState;
use sessions::{COOKIE, LIFETIME, Session, cookie_value, same_secret};

/// The pages' Content-Security-Policy.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const STYLE: &str = include_str!("../../assets/style.css");
const APP_JS: &str = include_str!("../../assets/app.js");
const FAVICON: &str = include_str!("../../assets/favicon.svg");

/// The pages: (key, path, title, body).
const PAGES: &[(&str, &str, &str, &str)] = &[
    (
        "overview",
        "/dashboard",
        "Overview",
        include_str!("../../assets/overview.html"),
    ),
    (
        "certificates",
        "/dashboard/certificates",
        "Client Certificates",
        include_str!("../../assets/certificates.html"),
    ),
    (
        "mtls-rule",
        "/dashboard/mtls-rule",
        "Create a mTLS rule",
        include_str!("../../assets/mtls-rule.html"),
    ),
    (
        "rules",
        "/dashboard/rules",
        "Security rules",
        include_str!("../../assets/rules.html"),
    ),
    (
        "events",
        "/dashboard/events",
        "Security events",
        include_str!("../../assets/events.html"),
    ),
    (
        "hostnames",
        "/dashboard/hostnames",
        "Hostnames",
        include_str!("../../assets/hostnames.html"),
    ),
    (
        "lists",
        "/dashboard/lists",
        "IP lists",
        include_str!("../../assets/lists.html"),
    ),
    (
        "tokens",
        "/dashboard/tokens",
        "API tokens",
        include_str!("../../assets/tokens.html"),
    ),
];

/// The dashboard's routes (outside `/client/v4`; pages check the session themselves).
pub fn routes() -> Router<AdminState> {
    let mut router = Router::new()
        .route("/dashboard/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", axum::routing::post(logout))
        .route("/dashboard/assets/{file}", get(asset));
    for (index, (_, path, _, _)) in PAGES.iter().enumerate() {
        router = router.route(
            path,
            get(move |state: State<AdminState>, headers: HeaderMap| page(state, headers, index)),
        );
    }
    router
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("same-origin")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

fn head(title: &str, extra_meta: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n{extra_meta}\
         <title>{} · Portcullis</title>\n\
         <link rel=\"icon\" href=\"/dashboard/assets/favicon.svg\" type=\"image/svg+xml\">\n\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/style.css\">\n\
         <script type=\"module\" src=\"/dashboard/assets/app.js\"></script>\n</head>\n",
        escape(title)
    )
}

fn session_of(state: &AdminState, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie_value(headers)?;
    let session = state.sessions.get(&id)?;
    Some((id, session))
}

async fn page(State(state): State<AdminState>, headers: HeaderMap, index: usize) -> Response {
    let Some((_, session)) = session_of(&state, &headers) else {
        return Redirect::to("/dashboard/login").into_response();
    };
    let (key, _, title, body) = PAGES[index];
    let can_write = session.scope == TokenScope::Write;
    let meta = format!(
        "<meta name=\"csrf-token\" content=\"{}\">\n<meta name=\"can-write\" content=\"{can_write}\">\n",
        escape(&session.csrf)
    );
    let mut out = head(title, &meta);
    out.push_str("<body>\n<a class=\"skip\" href=\"#main\">Skip to content</a>\n<header class=\"top\">\n");
    out.push_str("<a class=\"brand\" href=\"/dashboard\">Portcullis</a>\n");
    out.push_str(
        "<label class=\"zone\"><span class=\"zone-text\">Zone</span> <select id=\"zone-picker\" name=\"zone\">\
         <option value=\"\">Loading…</option></select></label>\n",
    );
    if !can_write {
        out.push_str("<span class=\"badge badge-muted\" title=\"This token can only read\">read only</span>\n");
    }
    out.push_str(&format!(
        "<form method=\"post\" action=\"/dashboard/logout\" class=\"logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" class=\"btn-link\">Sign out</button>\
         </form>\n</header>\n<nav class=\"side\" aria-label=\"Dashboard\"><ul>\n",
        escape(&session.csrf)
    ));
    for (other, path, other_title, _) in PAGES {
        let current = if *other == key { " aria-current=\"page\"" } else { "" };
        out.push_str(&format!(
            "<li><a href=\"{path}\"{current}>{}</a></li>\n",
            escape(other_title)
        ));
    }
    out.push_str(&format!(
        "</ul></nav>\n<main id=\"main\" data-page=\"{key}\" tabindex=\"-1\">\n<h1>{}</h1>\n\
         <div id=\"page-error\" class=\"alert alert-error\" role=\"alert\" hidden></div>\n\
         <div id=\"page-warning\" class=\"alert alert-warn\" role=\"status\" hidden></div>\n{body}</main>\n\
         <div id=\"toast\" class=\"toast\" role=\"status\" aria-live=\"polite\"></div>\n</body>\n</html>\n",
        escape(title)
    ));
    html(StatusCode::OK, out)
}

fn login_html(status: StatusCode, error: Option<&str>) -> Response {
    let mut out = head("Sign in", "");
    out.push_str("<body class=\"login\">\n<main id=\"main\" class=\"login-card\">\n<h1>Portcullis</h1>\n");
    out.push_str("<p>Sign in with an API token. The first start of <code>portcullis serve</code> printed one; it is ");
    out.push_str("also in <code>portcullis-data/admin-token</code>.</p>\n");
    if let Some(error) = error {
        out.push_str(&format!(
            "<div class=\"alert alert-error\" role=\"alert\" id=\"login-error\">{}</div>\n",
            escape(error)
        ));
    }
    out.push_str(
        "<form method=\"post\" action=\"/dashboard/login\">\n\
         <label for=\"token\">API token</label>\n\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\n\
         <button type=\"submit\" class=\"btn-primary\">Sign in</button>\n</form>\n\
         <p class=\"muted\">Sessions last 12 hours and end when the server restarts.</p>\n</main>\n</body>\n</html>\n",
    );
    html(status, out)
}

async fn login_page(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if session_of(&state, &headers).is_some() {
        return Redirect::to("/dashboard").into_response();
    }
    login_html(StatusCode::OK, None)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

/// Refuses cross-site form posts: when the browser names the origin, it must be this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

fn https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("portcullis_session=; Path=/; Max-Age=0"))
}

/// The peer's address when the listener recorded it (`into_make_service_with_connect_info`).
type Peer = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

async fn login(
    State(state): State<AdminState>,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return login_html(StatusCode::FORBIDDEN, Some("Cross-site sign-in refused."));
    }
    let address = peer.map(|axum::Extension(info)| info.0.ip().to_canonical());
    let now = std::time::Instant::now();
    if let Err(limited) = state.sign_in_limiter.begin(address, now) {
        let who = if limited.global {
            "Too many failed sign-ins on this server, and one from your address"
        } else {
            "Too many failed sign-ins from your address"
        };
        let mut response = login_html(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!("{who}. Try again in {} seconds.", limited.retry_after)),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after));
        return response;
    }
    let token = match state.store.authenticate(form.token.trim()).await {
        Ok(Some(token)) => token,
        Ok(None) => {
            return login_html(
                StatusCode::UNAUTHORIZED,
                Some("That token is not valid (or was revoked)."),
            );
        }
        Err(err) => {
            tracing::error!(error = %err, "dashboard sign-in: store error");
            return login_html(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("Sign-in failed on the server; see its log."),
            );
        }
    };
    if !token
        .restrictions
        .live_at(time::OffsetDateTime::now_utc().unix_timestamp())
    {
        return login_html(
            StatusCode::UNAUTHORIZED,
            Some("That token has expired, or is not valid yet."),
        );
    }
    if !crate::auth::address_allowed(&token.restrictions, address) {
        return login_html(
            StatusCode::FORBIDDEN,
            Some("That token may not be used from your address."),
        );
    }
    if token.restrictions.zones.is_some() {
        return login_html(
            StatusCode::FORBIDDEN,
            Some("That token may only reach some zones; the dashboard needs a token for the whole account."),
        );
    }
    state.sign_in_limiter.succeeded(address, now);
    let (id, _) = state.sessions.create(token.id, token.scope);
    let mut response = Redirect::to("/dashboard").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&id, LIFETIME.as_secs(), https(&headers)));
    response
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// The page a sign-out with a missing or wrong CSRF token gets (a stale tab, or a cross-site form).
fn logout_refused() -> Response {
    let mut out = head("Sign-out refused", "");
    out.push_str(
        "<body class=\"login\">\n<main id=\"main\" class=\"login-card\">\n<h1>Sign-out refused</h1>\n\
         <div class=\"alert alert-error\" role=\"alert\">The sign-out form did not carry this session's CSRF token \
         (the page may be from an earlier session, or another site sent the form). You are still signed in.</div>\n\
         <p><a class=\"btn-primary\" href=\"/dashboard\">Back to the dashboard</a> and sign out from there.</p>\n\
         </main>\n</body>\n</html>\n",
    );
    html(StatusCode::FORBIDDEN, out)
}

async fn logout(State(state): State<AdminState>, headers: HeaderMap, Form(form): Form<LogoutForm>) -> Response {
    if let Some((id, session)) = session_of(&state, &headers) {
        if !same_secret(&form.csrf, &session.csrf) {
            return logout_refused();
        }
        state.sessions.remove(&id);
    }
    let mut response = Redirect::to("/dashboard/login").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, https(&headers)));
    response
}

async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "style.css" => ("text/css; charset=utf-8", STYLE),
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "favicon.svg" => ("image/svg+xml", FAVICON),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
