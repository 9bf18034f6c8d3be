//! Security events: one per request a rule blocked or logged, handed to an [`EventSink`] the
//! binary provides (it batches them into the store). The sink is called on the request path, so
//! it must not block; a full queue should drop, not wait.

use std::sync::Mutex;

/// A request that matched a `block` or `log` rule (the store's `SecurityEvent`, minus its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEvent {
    /// Unix seconds.
    pub at: i64,
    pub zone_id: Option<String>,
    pub host: String,
    pub method: String,
    pub path: String,
    pub client_ip: String,
    /// `block` or `log`.
    pub action: &'static str,
    pub rule_id: Option<String>,
    /// The status sent for a block (for gRPC, 200 with a `grpc-status`); 0 for a log event.
    pub status_code: u16,
    /// `ok|absent|untrusted|notyetvalid|expired|revoked`.
    pub mtls_status: &'static str,
    pub cert_fingerprint_sha256: String,
    pub cert_serial: String,
    /// The certificate's subject (RFC 2253, at most 1 KiB), so that an operator sees whose request it was.
    pub cert_subject_dn: String,
    /// Why the certificate is not trusted, OpenSSL-style (`certificate has expired`, `certificate revoked`, `unable
    /// to get local issuer certificate`); `""` when it is trusted or none was presented. Under `request` this is the
    /// only place an operator learns why a client's certificate was not trusted.
    pub cert_verify_error: String,
}

/// Receives security events. Must be cheap and non-blocking.
pub trait EventSink: Send + Sync {
    fn record(&self, event: SecurityEvent);
}

/// Drops every event.
#[derive(Debug, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn record(&self, _event: SecurityEvent) {}
}

/// Collects events in memory; for tests.
#[derive(Debug, Default)]
pub struct VecSink {
    events: Mutex<Vec<SecurityEvent>>,
}

impl VecSink {
    /// The events so far.
    pub fn events(&self) -> Vec<SecurityEvent> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl EventSink for VecSink {
    fn record(&self, event: SecurityEvent) {
        if let Ok(mut v) = self.events.lock() {
            v.push(event);
        }
    }
}
