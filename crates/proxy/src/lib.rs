//! Portcullis' data plane as a library: TLS termination with a per-SNI `ServerConfig`,
//! client-certificate facts per connection, Cloudflare-style rules per request, and forwarding
//! of HTTP/1.1, HTTP/2 and gRPC to origins.
//!
//! - [`snapshot`]: the immutable [`Snapshot`] (hosts, TLS configs, trust, origins, rulesets)
//!   that the binary builds from the store and publishes through an `ArcSwap`;
//! - [`tls`]: per-host `ServerConfig`s and the client verifier (`Request`, `Require`, `VerifyIfGiven`);
//! - [`sessions`]: session caches and ticket keys that outlive snapshots (and are shared by a fleet);
//! - [`serve`]: the accept loop, handshake, HTTP/2 (hyper), graceful shutdown;
//! - HTTP/1.1 (internal, `h1`): the proxy's own server side, keep-alive, WebSocket tunnels;
//! - request handling (internal): SNI/Host check (421), rules context, block or forward;
//! - [`normalize`]: URL normalization of request paths (Cloudflare's zone setting);
//! - [`forward`]: header hygiene, certificate forwarding styles, pooled upstream clients (the
//!   proxy's own HTTP/1.1 client for bodyless requests, `origin_h1`; hyper's for the rest);
//! - [`origin_health`]: steering among several origin servers, and their passive health;
//! - [`health_check`]: active health checks of those servers;
//! - [`origin_tls`]: TLS to `https://` origins;
//! - [`proxy_protocol`]: client addresses from TCP load balancers (PROXY protocol v1 and v2);
//! - [`cert_header`]: client certificates that front proxies terminating TLS pass in a header;
//! - [`client_ip`]: client addresses that front proxies pass in a header;
//! - [`events`]: security events for blocked and logged requests;
//! - [`observe`]: metrics (the `metrics` facade), the access log and failed-handshake events.
//!
//! What it does not do: read the store or run the reload loop (the binary does), install a
//! metrics recorder or format logs (the binary does), WebSocket over HTTP/2.

mod body;
mod conn;
mod context;
mod fields;
mod h1;
mod handler;
mod ocsp;
mod origin_h1;
mod ratelimit;
mod respond;
mod server;

pub mod cert_header;
pub mod client_ip;
pub mod config;
pub mod events;
pub mod field_headers;
pub mod forward;
pub mod health_check;
pub mod normalize;
pub mod observe;
pub mod origin_health;
pub mod origin_tls;
pub mod proxy_protocol;
pub mod sessions;
pub mod snapshot;
pub mod tls;
pub mod traffic;

#[cfg(test)]
mod tests;

/// The Unix time in whole seconds; 0 for a clock set before 1970.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

pub use cert_header::ClientCertHeader;
pub use client_ip::ClientIpHeader;
pub use config::ProxyConfig;
pub use events::{EventSink, NoEvents, SecurityEvent, VecSink};
pub use forward::{CERT_HEADERS, CF_CERT_HEADERS};
pub use health_check::{HealthCheck, run_health_checks};
pub use normalize::{NormalizationScope, NormalizationType, UrlNormalization};
pub use observe::{REQUEST_DURATION_SECONDS, describe_metrics, origin_server_gauges, record_snapshot};
pub use origin_health::{HealthBook, Steering};
pub use origin_tls::{OriginIdentity, OriginTls};
pub use proxy_protocol::TrustedProxies;
pub use server::{serve, serve_all};
pub use sessions::TlsSessions;
pub use snapshot::{
    Forwarding, ForwardingSet, Host, HostParams, MinTlsVersion, Mtls, Origin, Snapshot, Transforms, TrustedCa,
};
pub use tls::{MtlsMode, ServerCert};
pub use traffic::{MinuteCount, TRAFFIC, Traffic};

/// Errors from building configuration or serving.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Invalid host configuration (certificate, key, origin, …).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}
