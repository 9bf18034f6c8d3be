//! What the data plane tells operators: metrics through the `metrics` facade (no-ops until the
//! binary installs a recorder), one access-log event per request and one event per failed
//! handshake, both through `tracing`.
//!
//! Label values are bounded: hosts come from the snapshot (never from the client), actions,
//! reasons and statuses from fixed lists. Logged strings that come from the client (path, SNI)
//! are truncated. Nothing here decides anything or holds state besides the metrics handles.

use std::net::IpAddr;
use std::time::Duration;

/// Requests by host and action: `allow` (forwarded, no rule matched), `log` (forwarded, a log
/// rule matched), `skip` (forwarded after a skip rule), `block`, `misdirected` (421), `error`
/// (the proxy answered with an error of its own: 405, 408, 413, 501, 502, 504). Requests hyper
/// refuses before the handler runs (431, malformed) are not counted here.
pub const REQUESTS_TOTAL: &str = "portcullis_requests_total";
/// Time from receiving a request's head to sending the response head, by host.
pub const REQUEST_DURATION_SECONDS: &str = "portcullis_request_duration_seconds";
/// Handshakes by `result` (`ok|failed`) and `reason`: `ok`, `timeout`, `closed` (the client
/// hung up), `bad_client_hello`, `no_sni`, `unknown_sni`, `client_cert_required`,
/// `client_cert_invalid` (untrusted, expired or revoked under `Require` or `VerifyIfGiven`), `tls_error` (anything
/// else rustls refused, e.g. no common version or cipher, or the client's alert).
pub const HANDSHAKES_TOTAL: &str = "portcullis_handshakes_total";
/// Successful handshakes that resumed an earlier TLS session (a subset of `result="ok"`), so
/// a benchmark or an operator can see how many full handshakes the edge really did.
pub const HANDSHAKES_RESUMED_TOTAL: &str = "portcullis_handshakes_resumed_total";
/// Client certificates by `host` and `status` (`ok|absent|untrusted|notyetvalid|expired|revoked`): once per
/// handshake that reached a host, accepted or refused (a `require` host's refusals count here too, by the status
/// that refused them; a missing certificate as `absent`), so an alert can say which hostname's clients fail and why.
pub const CLIENT_CERT_TOTAL: &str = "portcullis_client_cert_total";
/// Failed origin requests by host and `kind` (`connect|timeout|protocol`).
pub const UPSTREAM_ERRORS_TOTAL: &str = "portcullis_upstream_errors_total";
/// Origin servers left alone after a failed connection, by host.
pub const ORIGIN_SERVERS_DOWN_TOTAL: &str = "portcullis_origin_servers_down_total";
/// Queries to uploaded CAs' OCSP responders, by `outcome`.
pub const OCSP_QUERIES_TOTAL: &str = "portcullis_ocsp_queries_total";
/// Client connections open now (TCP accepted, until closed).
pub const CONNECTIONS_OPEN: &str = "portcullis_connections_open";
/// The generation of the snapshot in service.
pub const SNAPSHOT_GENERATION: &str = "portcullis_snapshot_generation";

/// The host label of a request whose host has left the configuration.
pub const UNKNOWN_HOST: &str = "_unknown";

/// The longest path (bytes) written to a log line or a security event.
pub(crate) const MAX_LOGGED_PATH: usize = 1024;
/// The longest method (bytes) written to a log line or a security event.
pub(crate) const MAX_LOGGED_METHOD: usize = 32;
/// The longest SNI (bytes) written to a log line; DNS names are at most 253.
const MAX_LOGGED_SNI: usize = 255;
/// The longest certificate subject (bytes) written to a log line or a security event.
pub(crate) const MAX_LOGGED_SUBJECT: usize = 1024;

/// Registers descriptions (units, help text) with the installed recorder. Optional; call it
/// once after installing the recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(REQUESTS_TOTAL, "Requests by host and action.");
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from a request's head to the response's head."
    );
    metrics::describe_counter!(HANDSHAKES_TOTAL, "TLS handshakes by result and reason.");
    metrics::describe_counter!(
        HANDSHAKES_RESUMED_TOTAL,
        "Successful TLS handshakes that resumed a session."
    );
    metrics::describe_counter!(
        CLIENT_CERT_TOTAL,
        "Client-certificate status by host, once per handshake that reached a host, accepted or refused."
    );
    metrics::describe_counter!(UPSTREAM_ERRORS_TOTAL, "Failed origin requests by host and kind.");
    metrics::describe_counter!(
        ORIGIN_SERVERS_DOWN_TOTAL,
        "Origin servers left alone after a failed connection, by host (hosts with several origin servers)."
    );
    metrics::describe_counter!(
        OCSP_QUERIES_TOTAL,
        "Queries to uploaded CAs' OCSP responders, by outcome (good, revoked, unknown, failed)."
    );
    metrics::describe_gauge!(CONNECTIONS_OPEN, "Client connections open.");
    metrics::describe_gauge!(SNAPSHOT_GENERATION, "Store generation of the snapshot in service.");
}

/// Records the generation of a snapshot the binary has just published.
pub fn record_snapshot(generation: u64) {
    // f64 is exact up to 2^53 generations.
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(SNAPSHOT_GENERATION).set(generation as f64);
}

/// The `action` label values of [`REQUESTS_TOTAL`].
const ACTIONS: [&str; 6] = ["allow", "log", "skip", "block", "misdirected", "error"];

/// One host's request metrics, registered once when the host is built, so that a request costs
/// two atomic updates instead of a label allocation and a registry lookup.
pub(crate) struct HostMetrics {
    requests: [metrics::Counter; ACTIONS.len()],
    duration: metrics::Histogram,
    client_certs: [metrics::Counter; CERT_STATUSES.len()],
}

/// The `status` values of [`CLIENT_CERT_TOTAL`].
const CERT_STATUSES: [&str; 6] = ["ok", "absent", "untrusted", "notyetvalid", "expired", "revoked"];

impl std::fmt::Debug for HostMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostMetrics")
    }
}

impl HostMetrics {
    pub(crate) fn new(host: &str) -> HostMetrics {
        HostMetrics {
            requests: ACTIONS
                .map(|action| metrics::counter!(REQUESTS_TOTAL, "host" => host.to_owned(), "action" => action)),
            duration: metrics::histogram!(REQUEST_DURATION_SECONDS, "host" => host.to_owned()),
            client_certs: CERT_STATUSES
                .map(|status| metrics::counter!(CLIENT_CERT_TOTAL, "host" => host.to_owned(), "status" => status)),
        }
    }

    /// Counts a handshake's client-certificate status (see [`CLIENT_CERT_TOTAL`]).
    pub(crate) fn client_cert(&self, status: &'static str) {
        match CERT_STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.client_certs[i].increment(1),
            None => debug_assert!(false, "unknown client certificate status {status}"),
        }
    }

    pub(crate) fn request(&self, action: &'static str, elapsed: Duration) {
        match ACTIONS.iter().position(|a| *a == action) {
            Some(i) => self.requests[i].increment(1),
            None => request_slow(UNKNOWN_HOST, action, elapsed),
        }
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// Counts a request of a host that has no [`HostMetrics`] at hand (it left the configuration).
pub(crate) fn request_slow(host: &str, action: &'static str, elapsed: Duration) {
    metrics::counter!(REQUESTS_TOTAL, "host" => host.to_owned(), "action" => action).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "host" => host.to_owned()).record(elapsed.as_secs_f64());
}

pub(crate) fn upstream_error(host: &str, kind: &'static str) {
    metrics::counter!(UPSTREAM_ERRORS_TOTAL, "host" => host.to_owned(), "kind" => kind).increment(1);
}

/// Gauges of the origin servers of every host with several, in Prometheus' text format, for `/metrics` to append:
/// `portcullis_origin_server_up{host, server}` is 1 while a server takes requests and 0 while it is passed over
/// (after failed connections or health checks). Read from the snapshot at each scrape, so servers that left the
/// configuration leave no series behind.
pub fn origin_server_gauges(snapshot: &crate::Snapshot) -> String {
    let mut hosts: Vec<_> = snapshot
        .hosts
        .values()
        .filter(|h| h.origin.servers().len() > 1)
        .collect();
    if hosts.is_empty() {
        return String::new();
    }
    hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    let label = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut out = String::from(
        "# HELP portcullis_origin_server_up Whether an origin server of a hostname with several takes requests (1) \
         or is passed over after failed connections or health checks (0).\n# TYPE portcullis_origin_server_up gauge\n",
    );
    for host in hosts {
        for (server, up) in host.origin.servers().iter().zip(host.origin.servers_up()) {
            out.push_str(&format!(
                "portcullis_origin_server_up{{host=\"{}\",server=\"{}\"}} {}\n",
                label(&host.hostname),
                label(server.as_str()),
                u8::from(up)
            ));
        }
    }
    out
}

pub(crate) fn origin_server_down(host: &str) {
    metrics::counter!(ORIGIN_SERVERS_DOWN_TOTAL, "host" => host.to_owned()).increment(1);
}

pub(crate) fn handshake_ok(resumed: bool) {
    metrics::counter!(HANDSHAKES_TOTAL, "result" => "ok", "reason" => "ok").increment(1);
    if resumed {
        metrics::counter!(HANDSHAKES_RESUMED_TOTAL).increment(1);
    }
}

/// Counts a connection closed before its ClientHello (`reason="closed"`), without a log line.
pub(crate) fn handshake_closed_early() {
    metrics::counter!(HANDSHAKES_TOTAL, "result" => "failed", "reason" => "closed").increment(1);
}

/// Counts a failed handshake and writes one event on `portcullis::handshake` saying why.
/// `reason` is from a fixed list; `detail` is our own error text (never key material).
pub(crate) fn handshake_failed(client: IpAddr, sni: Option<&str>, reason: &'static str, detail: &str) {
    handshake_refused(client, sni, reason, detail, None);
}

/// [`handshake_failed`] for a handshake that presented a certificate the host refused: the line
/// also names the certificate (subject, serial, SHA-256 fingerprint), so an operator can tell
/// which client was turned away.
pub(crate) fn handshake_refused(
    client: IpAddr,
    sni: Option<&str>,
    reason: &'static str,
    detail: &str,
    cert: Option<&crate::tls::RefusedCert>,
) {
    metrics::counter!(HANDSHAKES_TOTAL, "result" => "failed", "reason" => reason).increment(1);
    tracing::info!(
        target: "portcullis::handshake",
        client_ip = %client.to_canonical(),
        sni = truncate(sni.unwrap_or(""), MAX_LOGGED_SNI),
        reason,
        detail,
        cert_subject = truncate(cert.map_or("", |c| c.subject.as_str()), MAX_LOGGED_SUBJECT),
        cert_serial = cert.map_or("", |c| c.serial.as_str()),
        cert_fingerprint_sha256 = cert.map_or("", |c| c.fingerprint_sha256.as_str()),
        verify_error = cert.map_or("", |c| c.verify_error.as_str()),
        "TLS handshake failed"
    );
}

/// Counts an open connection until dropped.
pub(crate) struct OpenConnection(());

impl OpenConnection {
    pub(crate) fn new() -> OpenConnection {
        metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("", 0), "");
    }
}
