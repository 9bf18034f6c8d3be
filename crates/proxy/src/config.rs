//! Limits and timeouts of the data plane, with safe defaults. See the HTTP/2 abuse-protection
//! notes in the dependency research for why each value is what it is.

use std::time::Duration;

use crate::cert_header::ClientCertHeader;
use crate::client_ip::ClientIpHeader;
use crate::proxy_protocol::TrustedProxies;

/// Limits for [`crate::serve`].
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// One deadline over reading the ClientHello and finishing the handshake.
    pub handshake_timeout: Duration,
    /// HTTP/1.1: time to receive a request's headers.
    pub h1_header_read_timeout: Duration,
    /// HTTP/1.1: how long one response write may wait for a client that does not read.
    pub h1_send_timeout: Duration,
    /// HTTP/1.1: most headers in a request.
    pub h1_max_headers: usize,
    /// HTTP/1.1: read buffer (bounds the header block); at least 8192.
    pub h1_max_buf_size: usize,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: streams reset before being accepted before GOAWAY (Rapid Reset).
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2: streams we reset for protocol errors before GOAWAY.
    pub h2_max_local_error_reset_streams: usize,
    /// HTTP/2: header block size.
    pub h2_max_header_list_size: u32,
    /// HTTP/2: PING interval; the connection closes if a PING is not answered in `h2_keep_alive_timeout`.
    pub h2_keep_alive_interval: Duration,
    pub h2_keep_alive_timeout: Duration,
    /// Connecting to the origin.
    pub upstream_connect_timeout: Duration,
    /// From sending the request to the origin until its response headers arrive.
    pub upstream_response_timeout: Duration,
    /// How long a response body from the origin, or a WebSocket tunnel, may go without a byte (either way, for a
    /// tunnel) before it is cut off: Envoy's `stream_idle_timeout`, NGINX's `proxy_read_timeout`. A stuck origin
    /// then frees the client's connection, and an idle tunnel its slot. Zero: never.
    pub stream_idle_timeout: Duration,
    /// A connection with no request in progress and none started for this long is closed
    /// gracefully (GOAWAY for HTTP/2). hyper has no idle timeout of its own.
    pub idle_timeout: Duration,
    /// Connections are closed gracefully after this long, so no client holds one forever.
    pub max_connection_age: Duration,
    /// Most client connections open at once; accepting pauses at the limit. At most `u32::MAX`.
    pub max_connections: usize,
    /// On shutdown, how long in-flight connections may take to finish.
    pub drain_timeout: Duration,
    /// Largest request body forwarded (gRPC streams included). A larger `content-length` gets 413
    /// before anything is forwarded; a streamed body that grows past it aborts the upstream
    /// request (413 if the response has not started, else the stream is reset).
    pub max_request_body_bytes: u64,
    /// Longest wait for the next piece of a request body while the origin waits for it (per
    /// frame, not overall, so large uploads on slow links still finish). Once the origin's
    /// response has started, the timeout no longer applies: a gRPC bidirectional stream may be
    /// quiet for a long time, and HTTP/2 keep-alive pings detect dead peers.
    pub request_body_timeout: Duration,
    /// Threads that serve connections, each with its own single-threaded runtime (see
    /// [`crate::serve`]); 0 serves on the caller's runtime.
    pub worker_threads: usize,
    /// Load balancers whose connections start with a PROXY protocol header naming the client (none by
    /// default: no connection's address is taken from what it sends).
    pub proxy_protocol_from: TrustedProxies,
    /// The request header in which front proxies that terminate TLS themselves pass the client's certificate, and
    /// the addresses of those proxies (none by default: every certificate comes from a handshake with the edge).
    pub client_cert_header: Option<ClientCertHeader>,
    /// The request header in which front proxies name the client's address (`X-Forwarded-For`, `Forwarded`,
    /// `X-Real-IP`, …), and their addresses (none by default: the client is whoever connected).
    pub client_ip_header: Option<ClientIpHeader>,
    /// How long a query to an OCSP responder (connect, send, answer) may take; a connection waits for it
    /// before its first request.
    pub ocsp_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            handshake_timeout: Duration::from_secs(10),
            h1_header_read_timeout: Duration::from_secs(10),
            h1_send_timeout: Duration::from_secs(60),
            h1_max_headers: 100,
            h1_max_buf_size: 64 * 1024,
            h2_max_concurrent_streams: 128,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 256,
            // Forwarded certificate headers add a few KiB.
            h2_max_header_list_size: 32 * 1024,
            h2_keep_alive_interval: Duration::from_secs(30),
            h2_keep_alive_timeout: Duration::from_secs(10),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
            max_connection_age: Duration::from_secs(3600),
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(30),
            max_request_body_bytes: 10 * 1024 * 1024,
            request_body_timeout: Duration::from_secs(60),
            worker_threads: 0,
            proxy_protocol_from: TrustedProxies::default(),
            client_cert_header: None,
            client_ip_header: None,
            ocsp_timeout: Duration::from_secs(5),
        }
    }
}
