//! Fills a rules [`Context`] for one request, only with the fields the ruleset reads.
//!
//! Field values follow Cloudflare's definitions: `http.host` without the port, header names
//! lower-cased in the map, query arguments split on `&` and `=` and not percent-decoded,
//! `http.request.full_uri` with the `https` scheme, the `http.request.uri*` fields with the
//! URL-normalized path and the `raw.http.request.uri*` fields with the path as sent. Does not
//! evaluate anything or normalize anything (the caller passes the normalized path).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use http::request::Parts;
use http::{HeaderMap, Version};
use portcullis_pki::{ClientAuthFacts, FactValue};
use portcullis_rules::{Context, FieldId, FieldSet, Value, field_by_name, fields};

use crate::conn::ConnInfo;

/// What the context needs beyond the request head.
pub(crate) struct RequestFacts<'a> {
    /// Host from `:authority` / `Host`, port removed, lower-cased.
    pub host: &'a str,
    /// The request's path after the zone's URL normalization (the path as sent when none).
    pub path: &'a str,
    pub conn: &'a ConnInfo,
    /// `ip.src`: the connection's address, or the one a trusted front proxy's header names.
    pub client: std::net::IpAddr,
    pub cert: &'a ClientAuthFacts,
    /// (service, method) for a gRPC request.
    pub grpc: Option<(&'a str, &'a str)>,
}

/// The field ids of `ClientAuthFacts::fields()`, in its order; resolved once.
fn fact_ids() -> &'static [Option<FieldId>] {
    static IDS: OnceLock<Vec<Option<FieldId>>> = OnceLock::new();
    IDS.get_or_init(|| {
        ClientAuthFacts::default()
            .fields()
            .iter()
            .map(|(name, _)| field_by_name(name).map(|f| f.id()))
            .collect()
    })
}

/// The certificate fields as a set, and for each field (by its index) its position in `ClientAuthFacts::fields()`:
/// a request's wanted certificate fields are then found by their bits, not by asking for each of the 28.
fn fact_positions() -> &'static (FieldSet, Vec<Option<usize>>) {
    static POSITIONS: OnceLock<(FieldSet, Vec<Option<usize>>)> = OnceLock::new();
    POSITIONS.get_or_init(|| {
        let mut set = FieldSet::new();
        let mut positions = Vec::new();
        for (position, id) in fact_ids().iter().enumerate() {
            if let Some(id) = id {
                set.insert(*id);
                if positions.len() <= id.index() {
                    positions.resize(id.index() + 1, None);
                }
                positions[id.index()] = Some(position);
            }
        }
        (set, positions)
    })
}

fn fact_value(v: FactValue<'_>) -> Value {
    match v {
        FactValue::Bool(b) => Value::Bool(b),
        FactValue::Str(s) => Value::from(s),
        FactValue::Array(items) => Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect()),
    }
}

pub(crate) fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "",
    }
}

/// All values of a header joined with `sep`, as raw bytes.
fn joined(headers: &HeaderMap, name: http::header::HeaderName, sep: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, v) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn query_args(query: &str) -> BTreeMap<Vec<u8>, Value> {
    let mut map: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if let Value::Array(list) = map
            .entry(k.as_bytes().to_vec())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(Value::from(v));
        }
    }
    map
}

/// The query's argument names or values, in request order, not decoded.
fn query_parts(query: &str, names: bool) -> Value {
    Value::Array(
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                Value::from(if names { k } else { v })
            })
            .collect(),
    )
}

/// `%XX` decoded; anything else (a `%` without two hex digits included) kept as is.
fn percent_decoded(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let Some(&[h, l]) = s.get(i + 1..i + 3)
            && let (Some(h), Some(l)) = (crate::normalize::hex_value(h), crate::normalize::hex_value(l))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Cloudflare's `http.request.cookies`: every `Cookie` field split at `;`, names percent-decoded (cookies whose
/// names decode alike share one list), values as sent. A pair without `=` is a value with an empty name, as
/// browsers read it.
fn cookies(headers: &HeaderMap) -> BTreeMap<Vec<u8>, Value> {
    let mut map: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
    for field in headers.get_all(http::header::COOKIE) {
        for pair in field.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (pair[..at].trim_ascii(), pair[at + 1..].trim_ascii()),
                None => (&b""[..], pair),
            };
            if let Value::Array(list) = map
                .entry(percent_decoded(name))
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                list.push(Value::from(value));
            }
        }
    }
    map
}

/// Fills `ctx` with every field in `wanted`.
pub(crate) fn fill(ctx: &mut Context, wanted: &FieldSet, req: &Parts, rf: &RequestFacts<'_>) {
    // `set` fails only for a mistyped value, which this code never produces; ignore the Result.
    // A macro, not a closure: the value is built (and its text copied) only for wanted fields.
    macro_rules! set {
        ($id:expr, $value:expr $(,)?) => {
            if wanted.contains($id) {
                let _ = ctx.set($id, $value);
            }
        };
    }
    let raw_path = req.uri.path();
    let path = rf.path;
    let query = req.uri.query().unwrap_or("");
    let raw_uri = req.uri.path_and_query().map_or(raw_path, |pq| pq.as_str());
    // The normalized path with the query as sent; the same text when normalization changed nothing.
    let uri: std::borrow::Cow<'_, str> = if path == raw_path {
        raw_uri.into()
    } else {
        format!("{path}{}", raw_uri.strip_prefix(raw_path).unwrap_or("")).into()
    };

    set!(fields::HTTP_HOST, Value::from(rf.host));
    set!(fields::HTTP_REQUEST_METHOD, Value::from(req.method.as_str()));
    set!(fields::HTTP_REQUEST_URI, Value::from(&*uri));
    set!(fields::HTTP_REQUEST_URI_PATH, Value::from(path));
    set!(fields::HTTP_REQUEST_URI_QUERY, Value::from(query));
    set!(fields::RAW_HTTP_REQUEST_URI, Value::from(raw_uri));
    set!(fields::RAW_HTTP_REQUEST_URI_PATH, Value::from(raw_path));
    set!(fields::RAW_HTTP_REQUEST_URI_QUERY, Value::from(query));
    for id in [fields::HTTP_REQUEST_URI_ARGS, fields::RAW_HTTP_REQUEST_URI_ARGS] {
        if wanted.contains(id) {
            set!(id, Value::Map(query_args(query)));
        }
    }
    // URL normalization leaves the query as sent, so the normalized and raw argument lists are the same.
    for (id, names) in [
        (fields::HTTP_REQUEST_URI_ARGS_NAMES, true),
        (fields::RAW_HTTP_REQUEST_URI_ARGS_NAMES, true),
        (fields::HTTP_REQUEST_URI_ARGS_VALUES, false),
        (fields::RAW_HTTP_REQUEST_URI_ARGS_VALUES, false),
    ] {
        if wanted.contains(id) {
            set!(id, query_parts(query, names));
        }
    }
    if wanted.contains(fields::HTTP_REQUEST_FULL_URI) {
        set!(
            fields::HTTP_REQUEST_FULL_URI,
            Value::from(format!("https://{}{uri}", rf.host).as_str()),
        );
    }
    if wanted.contains(fields::RAW_HTTP_REQUEST_FULL_URI) {
        set!(
            fields::RAW_HTTP_REQUEST_FULL_URI,
            Value::from(format!("https://{}{raw_uri}", rf.host).as_str()),
        );
    }
    set!(fields::HTTP_REQUEST_VERSION, Value::from(version_name(req.version)));
    if wanted.contains(fields::HTTP_REQUEST_HEADERS) {
        let mut map: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        for (name, value) in &req.headers {
            if let Value::Array(list) = map
                .entry(name.as_str().as_bytes().to_vec())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                list.push(Value::from(value.as_bytes()));
            }
        }
        set!(fields::HTTP_REQUEST_HEADERS, Value::Map(map));
    }
    if wanted.contains(fields::HTTP_REQUEST_HEADERS_NAMES) {
        let names = req.headers.iter().map(|(n, _)| Value::from(n.as_str())).collect();
        set!(fields::HTTP_REQUEST_HEADERS_NAMES, Value::Array(names));
    }
    if wanted.contains(fields::HTTP_REQUEST_HEADERS_VALUES) {
        let values = req.headers.iter().map(|(_, v)| Value::from(v.as_bytes())).collect();
        set!(fields::HTTP_REQUEST_HEADERS_VALUES, Value::Array(values));
    }
    if wanted.contains(fields::HTTP_USER_AGENT) {
        set!(
            fields::HTTP_USER_AGENT,
            Value::Bytes(joined(&req.headers, http::header::USER_AGENT, b", ")),
        );
    }
    if wanted.contains(fields::HTTP_COOKIE) {
        // HTTP/2 clients may split cookies over several fields; they rejoin with "; " (RFC 9113 8.2.3).
        set!(
            fields::HTTP_COOKIE,
            Value::Bytes(joined(&req.headers, http::header::COOKIE, b"; ")),
        );
    }
    if wanted.contains(fields::HTTP_REQUEST_COOKIES) {
        set!(fields::HTTP_REQUEST_COOKIES, Value::Map(cookies(&req.headers)));
    }
    if wanted.contains(fields::HTTP_REQUEST_TIMESTAMP_SEC) || wanted.contains(fields::HTTP_REQUEST_TIMESTAMP_MSEC) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        set!(
            fields::HTTP_REQUEST_TIMESTAMP_SEC,
            Value::Int(i64::try_from(now.as_secs()).unwrap_or(i64::MAX)),
        );
        set!(
            fields::HTTP_REQUEST_TIMESTAMP_MSEC,
            Value::Int(i64::from(now.subsec_millis()))
        );
    }
    if wanted.contains(fields::HTTP_REFERER) {
        set!(
            fields::HTTP_REFERER,
            Value::Bytes(joined(&req.headers, http::header::REFERER, b", ")),
        );
    }
    set!(fields::IP_SRC, Value::Ip(rf.client));
    set!(fields::SSL, Value::Bool(true));
    set!(fields::CF_TLS_VERSION, Value::from(rf.conn.tls_version));
    set!(fields::CF_TLS_CIPHER, Value::from(rf.conn.tls_cipher.as_str()));
    set!(fields::CF_EDGE_SERVER_PORT, Value::Int(i64::from(rf.conn.local_port)));
    let (fact_set, positions) = fact_positions();
    let wanted_facts = wanted.intersection(fact_set);
    if !wanted_facts.is_empty() {
        // Read in place: the list is a 1 KiB array, and moving it costs more than reading it.
        let facts = rf.cert.fields();
        for id in wanted_facts.members() {
            if let Some((_, value)) = positions.get(id.index()).copied().flatten().and_then(|p| facts.get(p)) {
                let _ = ctx.set(id, fact_value(*value));
            }
        }
    }
    let (service, method) = rf.grpc.unwrap_or(("", ""));
    set!(fields::PORTCULLIS_GRPC_SERVICE, Value::from(service));
    set!(fields::PORTCULLIS_GRPC_METHOD, Value::from(method));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fact_has_a_field() {
        assert!(fact_ids().iter().all(Option::is_some));
        assert_eq!(fact_ids().len(), portcullis_pki::FACT_COUNT);
        let (set, positions) = fact_positions();
        assert_eq!(set.members().count(), portcullis_pki::FACT_COUNT);
        for (position, id) in fact_ids().iter().enumerate() {
            assert_eq!(positions[id.expect("id").index()], Some(position));
        }
    }

    #[test]
    fn cookie_map_and_argument_lists() {
        let mut headers = HeaderMap::new();
        headers.append(http::header::COOKIE, "a=1; sess%69on=x%20y ;; flag".parse().unwrap());
        // HTTP/2 clients may send several Cookie fields.
        headers.append(http::header::COOKIE, "session=second; e=".parse().unwrap());
        let m = cookies(&headers);
        assert_eq!(m.get(&b"a"[..]), Some(&Value::Array(vec![Value::from("1")])));
        assert_eq!(
            m.get(&b"session"[..]),
            Some(&Value::Array(vec![Value::from("x%20y"), Value::from("second")])),
            "names decoded and merged, values as sent"
        );
        assert_eq!(m.get(&b""[..]), Some(&Value::Array(vec![Value::from("flag")])));
        assert_eq!(m.get(&b"e"[..]), Some(&Value::Array(vec![Value::from("")])));
        assert_eq!(percent_decoded(b"%zz%4"), b"%zz%4");
        assert_eq!(percent_decoded(b"%+7%-1%41"), b"%+7%-1A");
        assert_eq!(
            query_parts("a=1&b&&a=2&c=x=y", true),
            Value::Array(["a", "b", "a", "c"].map(Value::from).to_vec())
        );
        assert_eq!(
            query_parts("a=1&b&&a=2&c=x=y", false),
            Value::Array(["1", "", "2", "x=y"].map(Value::from).to_vec())
        );
    }

    #[test]
    fn args() {
        let m = query_args("a=1&b&a=2&&c=x=y");
        assert_eq!(
            m.get(&b"a"[..]),
            Some(&Value::Array(vec![Value::from("1"), Value::from("2")]))
        );
        assert_eq!(m.get(&b"b"[..]), Some(&Value::Array(vec![Value::from("")])));
        assert_eq!(m.get(&b"c"[..]), Some(&Value::Array(vec![Value::from("x=y")])));
    }
}
