//! End-to-end tests: real TLS handshakes against the proxy on 127.0.0.1, client certificates
//! from a test `ManagedCa`, and an in-process echo origin (HTTP/1.1 and h2c) that returns the
//! request headers it received as JSON, or a gRPC body with trailers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_pki::{
    CaParams, ClientAuthFacts, GeneratedKeyRequest, IssueOptions, ManagedCa, SubjectAltNames, SubjectFields, Verifier,
    VerifierBuilder,
};
use portcullis_rules::{Action, BlockResponse, CompiledRuleset, Rule, Ruleset};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value as Json;
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;

use crate::{
    EventSink, Forwarding, ForwardingSet, Host, HostParams, Mtls, MtlsMode, Origin, ProxyConfig, ServerCert, Snapshot,
    TlsSessions, TrustedCa, UrlNormalization, VecSink,
};

const DEFAULT_RULE: &str = r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}"#;

// ---------------------------------------------------------------------------------------------
// Certificates

struct ServerPki {
    cert: ServerCert,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
}

fn server_pki(names: &[&str]) -> ServerPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test Server CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    ServerPki {
        cert: ServerCert {
            chain: vec![leaf.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        },
        ca_der: ca_cert.der().clone(),
        ca_pem: ca_cert.pem(),
    }
}

fn managed_ca() -> ManagedCa {
    ManagedCa::create(&CaParams::default(), OffsetDateTime::now_utc()).unwrap()
}

struct ClientCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    serial_hex: String,
    cert_pem: String,
    key_pem: String,
}

fn issue(ca: &ManagedCa, cn: &str, sans: SubjectAltNames) -> ClientCert {
    issue_at(ca, cn, sans, &IssueOptions::default(), OffsetDateTime::now_utc())
}

/// A certificate issued as if at `at` with `options` (for short-lived or backdated certificates).
fn issue_at(ca: &ManagedCa, cn: &str, sans: SubjectAltNames, options: &IssueOptions, at: OffsetDateTime) -> ClientCert {
    let issued = ca
        .issue_with_generated_key(
            &GeneratedKeyRequest {
                subject: SubjectFields {
                    common_name: cn.into(),
                    organization: "Acme, Inc.".into(),
                    country: "US".into(),
                    ..SubjectFields::default()
                },
                sans,
                ..GeneratedKeyRequest::default()
            },
            options,
            at,
        )
        .unwrap();
    ClientCert {
        chain: vec![CertificateDer::from(issued.der.clone())],
        key: PrivateKeyDer::from_pem_slice(issued.private_key_pem.as_bytes()).unwrap(),
        serial_hex: issued.record.serial_number.clone(),
        cert_pem: issued.record.certificate.clone(),
        key_pem: issued.private_key_pem.to_string(),
    }
}

fn verifier(ca: &ManagedCa, revoked: &[&str]) -> Arc<Verifier> {
    let mut b = VerifierBuilder::new();
    let i = b.add_anchor(ca.certificate_der()).unwrap();
    let serials: Vec<Vec<u8>> = revoked.iter().map(|s| portcullis_pki::hex_decode(s).unwrap()).collect();
    b.revoke_serials(i, serials).unwrap();
    Arc::new(b.build())
}

// ---------------------------------------------------------------------------------------------
// The origin

type OriginBody = BoxBody<Bytes, Infallible>;

async fn echo(req: Request<Incoming>) -> Result<Response<OriginBody>, Infallible> {
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if parts.uri.path() == "/drip" {
        return Ok(Response::new(
            Drip {
                left: 6,
                tick: Box::pin(tokio::time::sleep(Duration::from_millis(200))),
            }
            .boxed(),
        ));
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if grpc {
        let reply = Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")).with_trailers(async {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("0"));
            t.insert("grpc-message", HeaderValue::from_static("ok"));
            Some(Ok(t))
        });
        let mut resp = Response::new(reply.boxed());
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        return Ok(resp);
    }
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let entry = headers
            .entry(name.as_str().to_owned())
            .or_insert_with(|| Json::Array(vec![]));
        if let Json::Array(list) = entry {
            list.push(Json::String(String::from_utf8_lossy(value.as_bytes()).into_owned()));
        }
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())).boxed());
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// A body of six `drip` lines, one every 200 ms.
struct Drip {
    left: u8,
    tick: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.tick.as_mut().poll(cx));
        self.left -= 1;
        let next = tokio::time::Instant::now() + Duration::from_millis(200);
        self.tick.as_mut().reset(next);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"drip\n")))))
    }
}

async fn start_origin() -> SocketAddr {
    origin_with(echo).await
}

/// A plain-HTTP origin (HTTP/1.1 and h2c) on a free port answering every request with `handle`.
async fn origin_with<F, Fut, B>(handle: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(handle))
                    .await;
            });
        }
    });
    addr
}

/// An echo origin over TLS (ALPN h2 and http/1.1) with a certificate for `localhost`.
async fn start_tls_origin() -> (SocketAddr, ServerPki) {
    start_tls_origin_requiring(None).await
}

/// [`start_tls_origin`], refusing handshakes without a client certificate from `client_ca` (DER) when given.
async fn start_tls_origin_requiring(client_ca: Option<&[u8]>) -> (SocketAddr, ServerPki) {
    let pki = server_pki(&["localhost"]);
    let builder = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from(ca.to_vec())).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(pki.cert.chain.clone(), pki.cert.key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service_fn(echo))
                    .await;
            });
        }
    });
    (addr, pki)
}

// ---------------------------------------------------------------------------------------------
// The proxy

/// An enabled rule with id `id`.
fn rule(id: String, expression: &str, action: Action, response: Option<BlockResponse>) -> Rule {
    Rule {
        id: Some(id),
        description: String::new(),
        expression: expression.to_owned(),
        action,
        action_parameters: response.map(|r| portcullis_rules::ActionParameters {
            response: Some(r),
            ..Default::default()
        }),
        enabled: true,
        ratelimit: None,
    }
}

fn ruleset(rules: &[(&str, Action, Option<BlockResponse>)]) -> Arc<CompiledRuleset> {
    let rules = rules
        .iter()
        .enumerate()
        .map(|(i, (expr, action, response))| rule(format!("rule{i}"), expr, *action, response.clone()))
        .collect();
    Arc::new(CompiledRuleset::compile(&Ruleset { rules }).unwrap())
}

fn default_rules() -> Arc<CompiledRuleset> {
    ruleset(&[(DEFAULT_RULE, Action::Block, None)])
}

struct HostSpec {
    name: &'static str,
    mtls: Option<(MtlsMode, Arc<Verifier>, Vec<u8>)>,
    h2c: bool,
    forwarding: ForwardingSet,
    rules: Arc<CompiledRuleset>,
    origin: Option<Origin>,
    normalization: UrlNormalization,
    /// Resumption state to build with (a fresh one when none).
    sessions: Option<TlsSessions>,
    /// Rate-limiting rules (none by default).
    ratelimit: Arc<CompiledRuleset>,
    min_tls_version: crate::MinTlsVersion,
    transforms: crate::Transforms,
    field_headers: crate::field_headers::FieldHeaders,
}

impl HostSpec {
    fn new(name: &'static str, ca: &ManagedCa) -> HostSpec {
        HostSpec {
            name,
            mtls: Some((MtlsMode::Request, verifier(ca, &[]), ca.certificate_der().to_vec())),
            h2c: false,
            forwarding: ForwardingSet::default(),
            rules: default_rules(),
            origin: None,
            normalization: UrlNormalization::default(),
            sessions: None,
            ratelimit: Arc::new(CompiledRuleset::compile_ratelimit(&Ruleset::default()).unwrap()),
            min_tls_version: crate::MinTlsVersion::default(),
            transforms: crate::Transforms::default(),
            field_headers: crate::field_headers::FieldHeaders::default(),
        }
    }
}

fn build_snapshot(generation: u64, server: &ServerPki, origin: SocketAddr, specs: Vec<HostSpec>) -> Snapshot {
    let mut snap = Snapshot::new(generation);
    for spec in specs {
        let host = Host::new(HostParams {
            hostname: spec.name.to_owned(),
            zone_id: Some("zone1".into()),
            cert: server.cert.clone(),
            mtls: spec
                .mtls
                .map(|(mode, verifier, ca)| (Mtls { verifier, mode }, vec![CertificateDer::from(ca)])),
            origin: spec
                .origin
                .unwrap_or_else(|| Origin::new(&format!("http://{origin}"), spec.h2c, None, false).unwrap()),
            forwarding: spec.forwarding,
            transforms: spec.transforms,
            ruleset: spec.rules,
            ratelimit: spec.ratelimit,
            url_normalization: spec.normalization,
            sessions: spec.sessions.unwrap_or_else(|| TlsSessions::local(spec.name)),
            min_tls_version: spec.min_tls_version,
            field_headers: spec.field_headers,
        })
        .unwrap();
        snap.insert(host);
    }
    snap
}

struct Proxy {
    addr: SocketAddr,
    snapshot: Arc<ArcSwap<Snapshot>>,
    events: Arc<VecSink>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), crate::ProxyError>>,
}

async fn start_proxy(snapshot: Snapshot) -> Proxy {
    start_proxy_with(
        snapshot,
        ProxyConfig {
            drain_timeout: Duration::from_secs(5),
            ..ProxyConfig::default()
        },
    )
    .await
}

/// A proxy for the one host `api.test` (mTLS `request` with the world's CA), with `config`.
async fn api_proxy(w: &World, config: ProxyConfig) -> Proxy {
    start_proxy_with(
        build_snapshot(1, &w.server, w.origin, vec![HostSpec::new("api.test", &w.ca)]),
        config,
    )
    .await
}

async fn start_proxy_with(snapshot: Snapshot, config: ProxyConfig) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let events = Arc::new(VecSink::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let sink: Arc<dyn EventSink> = events.clone();
    let done = tokio::spawn(crate::serve(listener, snapshot.clone(), config, sink, async move {
        let _ = stopped.await;
    }));
    Proxy {
        addr,
        snapshot,
        events,
        stop: Some(stop),
        done,
    }
}

// ---------------------------------------------------------------------------------------------
// The client

fn client_config(server: &ServerPki, cert: Option<&ClientCert>, alpn: &[u8], sni: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.ca_der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config.enable_sni = sni;
    Arc::new(config)
}

async fn tls_connect(
    proxy: &Proxy,
    server: &ServerPki,
    sni: &str,
    cert: Option<&ClientCert>,
    alpn: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(proxy.addr).await?;
    let connector = tokio_rustls::TlsConnector::from(client_config(server, cert, alpn, true));
    connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
}

/// An HTTP/1.1 connection with a given client config; also says whether the session resumed.
async fn h1_with(proxy: &Proxy, config: Arc<rustls::ClientConfig>, sni: &str) -> (H1, Option<rustls::HandshakeKind>) {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    (H1(sender), kind)
}

type ReqBody = BoxBody<Bytes, Infallible>;

struct H1(hyper::client::conn::http1::SendRequest<ReqBody>);
struct H2(hyper::client::conn::http2::SendRequest<ReqBody>);

async fn h1(proxy: &Proxy, server: &ServerPki, sni: &str, cert: Option<&ClientCert>) -> H1 {
    let tls = tls_connect(proxy, server, sni, cert, b"http/1.1").await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    H1(sender)
}

async fn h2(proxy: &Proxy, server: &ServerPki, sni: &str, cert: Option<&ClientCert>) -> H2 {
    let tls = tls_connect(proxy, server, sni, cert, b"h2").await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    H2(sender)
}

fn empty() -> ReqBody {
    Empty::new().boxed()
}

/// Status and body (as text).
async fn read(resp: Response<Incoming>) -> (StatusCode, HeaderMap, String) {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

impl H1 {
    async fn get(&mut self, host: &str, path: &str, extra: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut b = Request::get(path).header("host", host);
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let resp = self.0.send_request(b.body(empty()).unwrap()).await.unwrap();
        read(resp).await
    }
}

impl H2 {
    async fn get(&mut self, authority: &str, path: &str) -> (StatusCode, HeaderMap, String) {
        let req = Request::get(format!("https://{authority}{path}"))
            .body(empty())
            .unwrap();
        let resp = self.0.send_request(req).await.unwrap();
        read(resp).await
    }

    /// A unary gRPC call; returns the status, headers, body and trailers.
    async fn grpc(&mut self, authority: &str, path: &str) -> (StatusCode, HeaderMap, Bytes, Option<HeaderMap>) {
        let req = Request::post(format!("https://{authority}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\x01x")).boxed())
            .unwrap();
        let resp = self.0.send_request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (status, headers, collected.to_bytes(), trailers)
    }
}

fn origin_headers(body: &str) -> serde_json::Map<String, Json> {
    let json: Json = serde_json::from_str(body).unwrap_or_else(|e| panic!("origin JSON ({e}): {body}"));
    json["headers"].as_object().unwrap().clone()
}

fn header<'a>(headers: &'a serde_json::Map<String, Json>, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v[0].as_str())
}

fn facts_for(ca: &ManagedCa, cert: &ClientCert) -> ClientAuthFacts {
    verifier(ca, &[]).client_auth(&cert.chain, OffsetDateTime::now_utc())
}

struct World {
    ca: ManagedCa,
    server: ServerPki,
    origin: SocketAddr,
}

async fn world() -> World {
    World {
        ca: managed_ca(),
        server: server_pki(&[
            "api.test",
            "other.test",
            "cf.test",
            "cfh.test",
            "rfc.test",
            "xfcc.test",
            "both.test",
            "grpc.test",
        ]),
        origin: start_origin().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Cloudflare's managed transforms: `True-Client-IP` carries the client's address; `X-Powered-By` goes; the security
/// headers are added where the origin set none, on both of the proxy's origin paths (bodyless requests through its
/// own client, the others through hyper's) and over HTTP/2. A client-sent `True-Client-IP`, in either spelling,
/// never reaches the origin, transform or not.
#[tokio::test]
async fn managed_transforms_change_request_and_response_headers() {
    let w = world().await;
    let origin = origin_with(|req: Request<Incoming>| async move {
        let seen = req
            .headers()
            .get("true-client-ip")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(seen)));
        resp.headers_mut()
            .insert("x-powered-by", HeaderValue::from_static("Express"));
        resp.headers_mut()
            .insert("x-frame-options", HeaderValue::from_static("DENY"));
        Ok::<_, Infallible>(resp)
    })
    .await;
    let mut on = HostSpec::new("api.test", &w.ca);
    on.transforms = crate::Transforms {
        true_client_ip: true,
        security_headers: true,
        remove_powered_by: true,
    };
    let off = HostSpec::new("other.test", &w.ca);
    let proxy = start_proxy(build_snapshot(1, &w.server, origin, vec![on, off])).await;

    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    let (status, headers, body) = c
        .get(
            "api.test",
            "/",
            &[("true-client-ip", "10.6.6.6"), ("true_client_ip", "10.7.7.7")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "127.0.0.1", "the client's address, not the one it sent");
    assert!(headers.get("x-powered-by").is_none());
    assert_eq!(headers["x-frame-options"], "DENY", "the origin's own stands");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert_eq!(headers["x-xss-protection"], "1; mode=block");
    // With a body, through hyper's client.
    let req = Request::post("/")
        .header("host", "api.test")
        .body(Full::new(Bytes::from_static(b"payload")).boxed())
        .unwrap();
    let (status, headers, _) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("x-powered-by").is_none() && headers["x-content-type-options"] == "nosniff");

    let mut c2 = h2(&proxy, &w.server, "api.test", None).await;
    let (status, headers, body) = c2.get("api.test", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "127.0.0.1"));
    assert!(headers.get("x-powered-by").is_none() && headers["x-content-type-options"] == "nosniff");

    // A host of a zone without them: as the origin sent it, and still no client-sent True-Client-IP.
    let mut c = h1(&proxy, &w.server, "other.test", None).await;
    let (_, headers, body) = c.get("other.test", "/", &[("true-client-ip", "10.6.6.6")]).await;
    assert_eq!(body, "");
    assert_eq!(headers["x-powered-by"], "Express");
    assert!(headers.get("x-content-type-options").is_none());
}

#[tokio::test]
async fn valid_cert_is_allowed_and_no_cert_is_blocked() {
    let w = world().await;
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());

    let mut c = h1(&proxy, &w.server, "api.test", Some(&good)).await;
    let (status, _, body) = c.get("api.test", "/api", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let headers = origin_headers(&body);
    assert_eq!(header(&headers, "x-forwarded-proto"), Some("https"));
    assert_eq!(header(&headers, "x-forwarded-host"), Some("api.test"));
    assert_eq!(header(&headers, "x-forwarded-for"), Some("127.0.0.1"));
    let (_, _, body) = c
        .get(
            "api.test",
            "/api",
            &[
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "evil.test"),
            ],
        )
        .await;
    let headers = origin_headers(&body);
    assert_eq!(header(&headers, "x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
    assert_eq!(header(&headers, "x-forwarded-proto"), Some("https"));
    assert_eq!(header(&headers, "x-forwarded-host"), Some("api.test"));
    assert_eq!(header(&headers, "host"), Some("api.test"));

    let mut anon = h1(&proxy, &w.server, "api.test", None).await;
    let (status, headers, body) = anon.get("api.test", "/api", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(body.contains("403 Forbidden"), "{body}");
    assert!(!body.contains("rule") && !body.contains("tls_client_auth"));
    // An unprotected path stays open without a certificate, on the same connection.
    let (status, _, _) = anon.get("api.test", "/public", &[]).await;
    assert_eq!(status, StatusCode::OK);

    let events = proxy.events.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].action, "block");
    assert_eq!(events[0].rule_id.as_deref(), Some("rule0"));
    assert_eq!(events[0].mtls_status, "absent");
    assert_eq!(events[0].status_code, 403);
    assert_eq!(events[0].path, "/api");
}

/// A hostname's Host override reaches its HTTP/1.1 origin on every path there: the proxy's own client (bodyless
/// requests), hyper's client (requests with a body), from HTTP/1.1 and HTTP/2 clients; `X-Forwarded-Host` still
/// names what the client asked for.
#[tokio::test]
async fn a_host_override_is_what_the_origin_sees() {
    let w = world().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    let mut origin = Origin::new(&format!("http://{}", w.origin), false, None, true).unwrap();
    origin.host_header = Some(http::HeaderValue::from_static("backend.internal:8080"));
    spec.origin = Some(origin);
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());

    let mut c = h1(&proxy, &w.server, "api.test", Some(&good)).await;
    let (status, _, body) = c.get("api.test", "/api", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let headers = origin_headers(&body);
    assert_eq!(header(&headers, "host"), Some("backend.internal:8080"));
    assert_eq!(header(&headers, "x-forwarded-host"), Some("api.test"));
    let req = Request::post("/api")
        .header("host", "api.test")
        .body(Full::new(Bytes::from_static(b"payload")).boxed())
        .unwrap();
    let (status, _, body) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&origin_headers(&body), "host"), Some("backend.internal:8080"));

    let mut c2 = h2(&proxy, &w.server, "api.test", Some(&good)).await;
    let (status, _, body) = c2.get("api.test", "/api").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&origin_headers(&body), "host"), Some("backend.internal:8080"));
}

/// Certificate fields under header names of the operator's choosing: set from the connection's certificate (a list
/// joined, a boolean as text, NGINX's verify result), client-sent copies removed in any spelling, and no header
/// for a field without a value.
#[tokio::test]
async fn certificate_fields_reach_the_origin_under_the_chosen_names() {
    let w = world().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.rules = ruleset(&[]);
    spec.field_headers = crate::field_headers::FieldHeaders::new([
        ("x-ssl-client-verify", "portcullis.tls_client_auth.verify_result"),
        ("x-ssl-client-s-dn", "cf.tls_client_auth.cert_subject_dn_legacy"),
        ("x-client-spiffe", "portcullis.tls_client_auth.cert_san_uri"),
        ("x-client-verified", "cf.tls_client_auth.cert_verified"),
    ])
    .unwrap();
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let sans = SubjectAltNames {
        uri: vec!["spiffe://example.org/a".into(), "spiffe://example.org/b".into()],
        ..SubjectAltNames::default()
    };
    let good = issue(&w.ca, "svc-a", sans);
    let f = facts_for(&w.ca, &good);

    let spoofed = [
        ("x-ssl-client-verify", "SUCCESS"),
        ("x_ssl_client_s_dn", "/CN=admin"),
        ("X-Client-Spiffe", "spiffe://example.org/admin"),
    ];
    let mut c = h1(&proxy, &w.server, "api.test", Some(&good)).await;
    let (status, _, body) = c.get("api.test", "/api", &spoofed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let headers = origin_headers(&body);
    assert_eq!(header(&headers, "x-ssl-client-verify"), Some("SUCCESS"));
    assert_eq!(
        header(&headers, "x-ssl-client-s-dn"),
        Some(f.cert_subject_dn_legacy.as_str())
    );
    assert!(
        f.cert_subject_dn_legacy.contains("/CN=svc-a"),
        "{}",
        f.cert_subject_dn_legacy
    );
    assert_eq!(
        header(&headers, "x-client-spiffe"),
        Some("spiffe://example.org/a, spiffe://example.org/b")
    );
    assert_eq!(header(&headers, "x-client-verified"), Some("true"));
    assert!(
        !body.contains("x_ssl_client_s_dn") && !body.contains("/CN=admin"),
        "{body}"
    );

    let mut anon = h1(&proxy, &w.server, "api.test", None).await;
    let (status, _, body) = anon.get("api.test", "/api", &spoofed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let headers = origin_headers(&body);
    assert_eq!(header(&headers, "x-ssl-client-verify"), Some("NONE"));
    assert_eq!(header(&headers, "x-client-verified"), Some("false"));
    assert_eq!(
        header(&headers, "x-ssl-client-s-dn"),
        None,
        "no certificate, no subject: {body}"
    );
    assert_eq!(header(&headers, "x-client-spiffe"), None, "{body}");
    assert!(
        !body.contains("/CN=admin") && !body.contains("example.org/admin"),
        "{body}"
    );

    // A certificate the host does not trust: its outcome goes, what it claims about its holder does not.
    let stranger_sans = SubjectAltNames {
        uri: vec!["spiffe://example.org/admin".into()],
        ..SubjectAltNames::default()
    };
    let stranger = issue(&managed_ca(), "admin", stranger_sans);
    let mut s = h1(&proxy, &w.server, "api.test", Some(&stranger)).await;
    let (_, _, body) = s.get("api.test", "/api", &[]).await;
    let headers = origin_headers(&body);
    assert_eq!(
        header(&headers, "x-ssl-client-verify"),
        Some("FAILED:unable to get local issuer certificate")
    );
    assert_eq!(header(&headers, "x-client-verified"), Some("false"));
    assert_eq!(header(&headers, "x-client-spiffe"), None, "{body}");
    assert_eq!(header(&headers, "x-ssl-client-s-dn"), None, "{body}");

    assert!(crate::field_headers::FieldHeaders::new([("x-a", "cf.tls_client_auth.nope")]).is_err());
    assert!(crate::field_headers::FieldHeaders::new([("X_Forwarded_For", "cf.tls_client_auth.cert_serial")]).is_err());
    assert!(crate::field_headers::FieldHeaders::new([("bad header", "cf.tls_client_auth.cert_serial")]).is_err());
}

#[tokio::test]
async fn cert_from_another_ca_is_blocked() {
    let w = world().await;
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let stranger = issue(&managed_ca(), "stranger", SubjectAltNames::default());
    let mut c = h2(&proxy, &w.server, "api.test", Some(&stranger)).await;
    let (status, _, _) = c.get("api.test", "/api").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let event = &proxy.events.events()[0];
    assert_eq!(event.mtls_status, "untrusted");
    // Whose certificate, and why it was not trusted, for the operator reading the event.
    assert_eq!(event.cert_verify_error, "unable to get local issuer certificate");
    assert_eq!(
        event.cert_subject_dn,
        facts_for(&w.ca, &stranger).cert_subject_dn_rfc2253
    );
    assert!(event.cert_subject_dn.contains("CN=stranger"), "{event:?}");
}

#[tokio::test]
async fn revocation_reaches_an_open_http2_connection() {
    let w = world().await;
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let cert = issue(&w.ca, "soon-revoked", SubjectAltNames::default());
    let mut c = h2(&proxy, &w.server, "api.test", Some(&cert)).await;
    let (status, _, _) = c.get("api.test", "/api").await;
    assert_eq!(status, StatusCode::OK);

    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.mtls = Some((
        MtlsMode::Request,
        verifier(&w.ca, &[&cert.serial_hex]),
        w.ca.certificate_der().to_vec(),
    ));
    proxy
        .snapshot
        .store(Arc::new(build_snapshot(2, &w.server, w.origin, vec![spec])));

    let (status, _, _) = c.get("api.test", "/api").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(proxy.events.events()[0].mtls_status, "revoked");
    assert_eq!(proxy.events.events()[0].cert_verify_error, "certificate revoked");
}

/// A connection's facts are kept per snapshot, but not past its certificate's expiry: a client whose certificate
/// expires while its HTTP/2 connection stays open is not trusted for its next request (NGINX and HAProxy judge only
/// at the handshake). Rules see it, and `require` refuses it with no rule at all.
#[tokio::test]
async fn an_open_connection_is_not_trusted_past_its_certificates_expiry() {
    let w = world().await;
    let mut strict = HostSpec::new("other.test", &w.ca);
    strict.mtls = Some((MtlsMode::Require, verifier(&w.ca, &[]), w.ca.certificate_der().to_vec()));
    strict.rules = ruleset(&[]);
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca), strict],
    ))
    .await;
    // Valid for five more seconds (room for the handshakes on a busy machine): issued "a day ago" for one day.
    let cert = issue_at(
        &w.ca,
        "expiring",
        SubjectAltNames::default(),
        &IssueOptions {
            validity_days: 1,
            ..IssueOptions::default()
        },
        OffsetDateTime::now_utc() - time::Duration::days(1) + time::Duration::seconds(5),
    );
    let mut c = h2(&proxy, &w.server, "api.test", Some(&cert)).await;
    let mut strict = h2(&proxy, &w.server, "other.test", Some(&cert)).await;
    assert_eq!(c.get("api.test", "/api").await.0, StatusCode::OK);
    assert_eq!(strict.get("other.test", "/api").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(c.get("api.test", "/api").await.0, StatusCode::FORBIDDEN);
    assert_eq!(strict.get("other.test", "/api").await.0, StatusCode::FORBIDDEN);
    let events = proxy.events.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.mtls_status == "expired"), "{events:?}");
    // Under `require` the connection ends after the 403 (GOAWAY), so that the client connects again with its
    // renewed certificate; under `request` the rules decide each request and the connection stays.
    for _ in 0..50 {
        if strict.0.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(strict.0.is_closed(), "the connection that lost its trust ended");
    assert!(!c.0.is_closed());
}

/// Resumption skips the handshake's certificate check, so under `require` a resumed session whose
/// certificate has expired since must be refused like a full handshake would be.
#[tokio::test]
async fn require_mode_refuses_a_resumed_session_whose_certificate_expired() {
    refuses_a_resumed_session_whose_certificate_expired(MtlsMode::Require).await;
}

/// The same under `verify_if_given`, which lets resumed sessions without a certificate through.
#[tokio::test]
async fn verify_if_given_refuses_a_resumed_session_whose_certificate_expired() {
    refuses_a_resumed_session_whose_certificate_expired(MtlsMode::VerifyIfGiven).await;
}

async fn refuses_a_resumed_session_whose_certificate_expired(mode: MtlsMode) {
    let w = world().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.mtls = Some((mode, verifier(&w.ca, &[]), w.ca.certificate_der().to_vec()));
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    // Valid for three more seconds: issued "a day ago" for one day.
    let cert = issue_at(
        &w.ca,
        "short-lived",
        SubjectAltNames::default(),
        &IssueOptions {
            validity_days: 1,
            ..IssueOptions::default()
        },
        OffsetDateTime::now_utc() - time::Duration::days(1) + time::Duration::seconds(3),
    );
    let config = client_config(&w.server, Some(&cert), b"http/1.1", true);
    let (mut c, kind) = h1_with(&proxy, config.clone(), "api.test").await;
    assert_eq!(kind, Some(rustls::HandshakeKind::Full));
    assert_eq!(c.get("api.test", "/public", &[]).await.0, StatusCode::OK);

    tokio::time::sleep(Duration::from_secs(4)).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("api.test").unwrap(), tcp)
        .await;
    let refused = match tls {
        Err(_) => true,
        Ok(tls) => {
            assert_eq!(tls.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
            first_request_fails(tls).await
        }
    };
    assert!(
        refused,
        "a resumed session with an expired certificate is refused under {mode:?}"
    );
}

#[tokio::test]
async fn require_mode_refuses_the_handshake_without_a_trusted_cert() {
    let w = world().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.mtls = Some((MtlsMode::Require, verifier(&w.ca, &[]), w.ca.certificate_der().to_vec()));
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;

    for cert in [None, Some(issue(&managed_ca(), "stranger", SubjectAltNames::default()))] {
        let refused = refused_at_handshake(&proxy, &w.server, cert.as_ref()).await;
        assert!(refused, "handshake accepted with {:?}", cert.is_some());
    }

    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let mut c = h1(&proxy, &w.server, "api.test", Some(&good)).await;
    assert_eq!(c.get("api.test", "/api", &[]).await.0, StatusCode::OK);
}

/// Whether `api.test` on `proxy` refuses a client with `cert`: with TLS 1.3 the client finishes
/// first, so the server's refusal arrives as an alert on first use.
async fn refused_at_handshake(proxy: &Proxy, server: &ServerPki, cert: Option<&ClientCert>) -> bool {
    match tls_connect(proxy, server, "api.test", cert, b"http/1.1").await {
        Err(_) => true,
        Ok(tls) => first_request_fails(tls).await,
    }
}

/// Whether the first request on `tls` fails (the server's alert arrives with it).
async fn first_request_fails(tls: tokio_rustls::client::TlsStream<TcpStream>) -> bool {
    match hyper::client::conn::http1::handshake::<_, ReqBody>(TokioIo::new(tls)).await {
        Err(_) => true,
        Ok((mut sender, conn)) => {
            tokio::spawn(conn);
            let req = Request::get("/public")
                .header("host", "api.test")
                .body(empty())
                .unwrap();
            sender.send_request(req).await.is_err()
        }
    }
}

/// `verify_if_given`: no certificate reaches the rules (also on a resumed session), a certificate
/// that does not verify fails the handshake, a good one is served.
#[tokio::test]
async fn verify_if_given_refuses_only_a_certificate_that_does_not_verify() {
    let w = world().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.mtls = Some((
        MtlsMode::VerifyIfGiven,
        verifier(&w.ca, &[]),
        w.ca.certificate_der().to_vec(),
    ));
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;

    let anonymous = client_config(&w.server, None, b"http/1.1", true);
    for expected in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed] {
        let (mut c, kind) = h1_with(&proxy, anonymous.clone(), "api.test").await;
        assert_eq!(kind, Some(expected));
        assert_eq!(c.get("api.test", "/public", &[]).await.0, StatusCode::OK);
        // The test host's rule blocks /api without a verified certificate: the rules still decide.
        assert_eq!(c.get("api.test", "/api", &[]).await.0, StatusCode::FORBIDDEN);
    }

    let stranger = issue(&managed_ca(), "stranger", SubjectAltNames::default());
    assert!(
        refused_at_handshake(&proxy, &w.server, Some(&stranger)).await,
        "an untrusted certificate is refused at the handshake"
    );

    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let mut c = h1(&proxy, &w.server, "api.test", Some(&good)).await;
    assert_eq!(c.get("api.test", "/api", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn sni_host_mismatch_is_misdirected() {
    let w = world().await;
    let snap = build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca), HostSpec::new("other.test", &w.ca)],
    );
    let proxy = start_proxy(snap).await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let mut c = h1(&proxy, &w.server, "api.test", Some(&good)).await;
    assert_eq!(
        c.get("other.test", "/api", &[]).await.0,
        StatusCode::MISDIRECTED_REQUEST
    );
    // Port and case do not matter.
    assert_eq!(c.get("API.test:443", "/api", &[]).await.0, StatusCode::OK);
    let mut c2 = h2(&proxy, &w.server, "api.test", Some(&good)).await;
    assert_eq!(c2.get("other.test", "/api").await.0, StatusCode::MISDIRECTED_REQUEST);

    // Hosts without mTLS: a request for another configured host is misdirected too, so that it never
    // reaches this host's origin; a name that is not configured here is served by the SNI's host.
    let open = |name| HostSpec {
        mtls: None,
        rules: ruleset(&[]),
        ..HostSpec::new(name, &w.ca)
    };
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![open("api.test"), open("other.test")],
    ))
    .await;
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("OTHER.test", "/").await.0, StatusCode::MISDIRECTED_REQUEST);
    let (status, _, body) = c.get("alias.test", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&origin_headers(&body), "x-forwarded-host"), Some("alias.test"));
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("other.test", "/", &[]).await.0, StatusCode::MISDIRECTED_REQUEST);
    // A fully qualified name is the same name.
    assert_eq!(c.get("other.test.", "/", &[]).await.0, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(c.get("api.test.", "/", &[]).await.0, StatusCode::OK);
    assert_eq!(c.get("127.0.0.1", "/", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn unknown_sni_is_refused_without_a_default_host() {
    let w = world().await;
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let err = tls_connect(&proxy, &w.server, "cf.test", None, b"http/1.1").await;
    let err = err.expect_err("handshake must fail");
    assert!(
        err.to_string().contains("UnrecognisedName") || err.to_string().contains("nrecogni"),
        "{err}"
    );

    // With a default host, an unknown SNI lands there (and its mTLS Host check applies).
    let mut snap = build_snapshot(2, &w.server, w.origin, vec![HostSpec::new("api.test", &w.ca)]);
    snap.default_host = Some("api.test".into());
    proxy.snapshot.store(Arc::new(snap));
    let mut c = h1(&proxy, &w.server, "cf.test", None).await;
    assert_eq!(c.get("api.test", "/public", &[]).await.0, StatusCode::OK);
}

const SPOOFED: [(&str, &str); 6] = [
    ("client-cert", ":AAAA:"),
    ("client-cert-chain", ":AAAA:"),
    ("cf-cert-verified", "true"),
    ("cf-client-cert-sha256", "00"),
    ("cf-client-cert-der-base64", "AAAA"),
    ("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\""),
];

#[tokio::test]
async fn spoofed_certificate_headers_never_reach_the_origin() {
    let w = world().await;
    let mut cf = HostSpec::new("cf.test", &w.ca);
    cf.forwarding = Forwarding::Cloudflare.into();
    let mut rfc = HostSpec::new("rfc.test", &w.ca);
    rfc.forwarding = Forwarding::Rfc9440.into();
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca), cf, rfc],
    ))
    .await;
    let stranger = issue(&managed_ca(), "stranger", SubjectAltNames::default());
    for name in ["api.test", "cf.test", "rfc.test"] {
        for cert in [None, Some(&stranger)] {
            let mut c = h1(&proxy, &w.server, name, cert).await;
            let (status, _, body) = c.get(name, "/public", &SPOOFED).await;
            assert_eq!(status, StatusCode::OK);
            let headers = origin_headers(&body);
            for (spoofed, _) in SPOOFED {
                let seen = header(&headers, spoofed);
                let legit = name == "cf.test" && cert.is_some() && spoofed.starts_with("cf-client-cert");
                assert!(
                    seen.is_none() || legit,
                    "{name}: {spoofed} reached the origin: {seen:?}"
                );
                if let Some(v) = seen {
                    assert!(v != "00" && v != "AAAA", "{name}: spoofed {spoofed}");
                }
            }
        }
    }
}

/// A proxy configuration reading client certificates from `X-Client-Cert` on connections from `from`.
fn front_proxy_config(from: &str) -> ProxyConfig {
    ProxyConfig {
        client_cert_header: Some(
            crate::cert_header::ClientCertHeader::new(
                "X-Client-Cert",
                crate::proxy_protocol::TrustedProxies::parse([from]).unwrap(),
            )
            .unwrap(),
        ),
        ..ProxyConfig::default()
    }
}

/// The leaf's DER in base64, as Cloudflare's and HAProxy's headers carry it.
fn leaf_b64(c: &ClientCert) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(c.chain[0].as_ref())
}

/// A verifier that trusts `ca_der`, with `policy` for its certificates' OCSP checks.
fn ocsp_verifier(ca_der: &[u8], policy: Option<portcullis_pki::OcspPolicy>) -> Arc<Verifier> {
    let mut b = VerifierBuilder::new();
    let i = b.add_anchor(ca_der).unwrap();
    if let Some(policy) = policy {
        b.set_ocsp(i, policy).unwrap();
    }
    Arc::new(b.build())
}

/// Behind a front proxy that terminates TLS itself, the client's certificate comes from the proxy's header (in any
/// of its formats), is verified, revoked and forwarded as a presented one would be; the front proxy's own
/// certificate never counts as a client's, and from any other address the header is ignored. It never reaches the
/// origin.
#[tokio::test]
async fn a_trusted_front_proxy_passes_the_clients_certificate_in_a_header() {
    let w = world().await;
    let spec = |revoked: &[&str]| {
        let mut spec = HostSpec::new("rfc.test", &w.ca);
        spec.forwarding = Forwarding::Rfc9440.into();
        spec.mtls = Some((
            MtlsMode::Request,
            verifier(&w.ca, revoked),
            w.ca.certificate_der().to_vec(),
        ));
        spec
    };
    // A second host that trusts another CA: a header verified for one host is never taken for the other.
    let other_ca = managed_ca();
    let proxy = start_proxy_with(
        build_snapshot(
            1,
            &w.server,
            w.origin,
            vec![spec(&[]), HostSpec::new("other.test", &other_ca)],
        ),
        front_proxy_config("127.0.0.0/8"),
    )
    .await;
    let front = issue(&w.ca, "front-proxy", SubjectAltNames::default());
    let good = issue(&w.ca, "device-1", SubjectAltNames::default());
    let stranger = issue(&managed_ca(), "stranger", SubjectAltNames::default());
    // As NGINX's `$ssl_client_escaped_cert` and AWS ALB send it.
    let url_pem = |c: &ClientCert| -> String {
        portcullis_pki::pem::encode("CERTIFICATE", c.chain[0].as_ref())
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let last_status = || proxy.events.events().last().map(|e| e.mtls_status).unwrap_or_default();

    let mut c = h1(&proxy, &w.server, "rfc.test", Some(&front)).await;
    let (status, _, _) = c.get("rfc.test", "/api", &[]).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the front proxy's own certificate is not a client's"
    );
    assert_eq!(last_status(), "absent");
    let (status, _, body) = c.get("rfc.test", "/api", &[("x-client-cert", &url_pem(&good))]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = origin_headers(&body);
    assert_eq!(
        header(&seen, "client-cert"),
        Some(format!(":{}:", leaf_b64(&good)).as_str())
    );
    assert_eq!(
        header(&seen, "x-client-cert"),
        None,
        "the front proxy's header stops at the edge"
    );
    for (value, want) in [(url_pem(&stranger), "untrusted"), ("%%broken".to_owned(), "untrusted")] {
        let (status, _, _) = c.get("rfc.test", "/api", &[("x-client-cert", &value)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{value}");
        assert_eq!(last_status(), want);
    }
    let mut o = h1(&proxy, &w.server, "other.test", None).await;
    let (status, _, _) = o.get("other.test", "/api", &[("x-client-cert", &url_pem(&good))]).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "verified for rfc.test, not for other.test"
    );
    assert_eq!(last_status(), "untrusted");
    // Over HTTP/2, as base64 DER.
    let mut c2 = h2(&proxy, &w.server, "rfc.test", None).await;
    let req = Request::get("https://rfc.test/api")
        .header("x-client-cert", leaf_b64(&good))
        .body(empty())
        .unwrap();
    let (status, _, _) = read(c2.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);

    // Revoked: at the next request, on the same connection.
    proxy.snapshot.store(Arc::new(build_snapshot(
        2,
        &w.server,
        w.origin,
        vec![spec(&[&good.serial_hex])],
    )));
    let (status, _, _) = c.get("rfc.test", "/api", &[("x-client-cert", &url_pem(&good))]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(last_status(), "revoked");

    // From an address that is not a front proxy the header is nothing: stripped, and the connection's own
    // certificate is the client's.
    let direct = start_proxy_with(
        build_snapshot(1, &w.server, w.origin, vec![spec(&[])]),
        front_proxy_config("10.0.0.0/8"),
    )
    .await;
    let mut c = h1(&direct, &w.server, "rfc.test", None).await;
    let (status, _, _) = c.get("rfc.test", "/api", &[("x-client-cert", &url_pem(&good))]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = c
        .get("rfc.test", "/public", &[("x-client-cert", &url_pem(&good))])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&origin_headers(&body), "x-client-cert"), None);
    let mut c = h1(&direct, &w.server, "rfc.test", Some(&good)).await;
    let (status, _, _) = c
        .get("rfc.test", "/api", &[("x-client-cert", &url_pem(&stranger))])
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// `require` and `verify_if_given` judge a front proxy's header as the handshake judges a presented certificate, with
/// a 403 instead of a failed handshake (the front proxy's own certificate passed that), whatever the rules say; and
/// the header is removed in its underscore spelling too.
#[tokio::test]
async fn require_and_verify_if_given_apply_to_a_front_proxys_header() {
    let w = world().await;
    let host = |name: &'static str, mode: MtlsMode| {
        let mut spec = HostSpec::new(name, &w.ca);
        spec.rules = ruleset(&[]);
        spec.mtls = Some((mode, verifier(&w.ca, &[]), w.ca.certificate_der().to_vec()));
        spec
    };
    let specs = vec![
        host("api.test", MtlsMode::Require),
        host("other.test", MtlsMode::VerifyIfGiven),
    ];
    let proxy = start_proxy_with(
        build_snapshot(1, &w.server, w.origin, specs),
        front_proxy_config("127.0.0.1"),
    )
    .await;
    let front = issue(&w.ca, "front-proxy", SubjectAltNames::default());
    let good = issue(&w.ca, "device-1", SubjectAltNames::default());
    let stranger = issue(&managed_ca(), "stranger", SubjectAltNames::default());

    let mut c = h1(&proxy, &w.server, "api.test", Some(&front)).await;
    let (status, _, _) = c.get("api.test", "/", &[]).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "require: the front proxy's own certificate is not the client's"
    );
    let (status, _, _) = c.get("api.test", "/", &[("x-client-cert", &leaf_b64(&stranger))]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = c
        .get(
            "api.test",
            "/",
            &[("x-client-cert", &leaf_b64(&good)), ("x_client_cert", "spoof")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_ascii_lowercase().contains("client_cert"), "{body}");
    let events = proxy.events.events();
    assert_eq!(
        events.iter().map(|e| (e.action, e.mtls_status)).collect::<Vec<_>>(),
        [("block", "absent"), ("block", "untrusted")]
    );

    let mut c = h1(&proxy, &w.server, "other.test", None).await;
    let (status, _, _) = c.get("other.test", "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "verify_if_given: no certificate is let through");
    let (status, _, _) = c
        .get("other.test", "/", &[("x-client-cert", &leaf_b64(&stranger))])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = c.get("other.test", "/", &[("x-client-cert", &leaf_b64(&good))]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn forwarding_styles_carry_the_facts() {
    let w = world().await;
    let specs = [
        ("cf.test", vec![Forwarding::Cloudflare]),
        ("cfh.test", vec![Forwarding::CfCertHeaders]),
        ("rfc.test", vec![Forwarding::Rfc9440]),
        ("xfcc.test", vec![Forwarding::Xfcc]),
        (
            "both.test",
            vec![Forwarding::Rfc9440, Forwarding::Xfcc, Forwarding::XfccCert],
        ),
    ]
    .into_iter()
    .map(|(name, styles)| {
        let mut s = HostSpec::new(name, &w.ca);
        s.forwarding = styles.into_iter().collect();
        s
    })
    .collect();
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, specs)).await;
    let cert = issue(
        &w.ca,
        "svc-a",
        SubjectAltNames {
            dns: vec!["svc-a.internal".into()],
            uri: vec!["spiffe://acme/svc-a".into()],
            email: vec![],
            ip: vec![],
        },
    );
    let f = facts_for(&w.ca, &cert);
    assert!(f.cert_verified && !f.cert_revoked);

    let fetch = |name: &'static str, cert: Option<&ClientCert>| {
        let proxy = &proxy;
        let server = &w.server;
        let cert = cert.map(|c| ClientCert {
            chain: c.chain.clone(),
            key: c.key.clone_key(),
            serial_hex: c.serial_hex.clone(),
            cert_pem: c.cert_pem.clone(),
            key_pem: c.key_pem.clone(),
        });
        async move {
            let mut c = h2(proxy, server, name, cert.as_ref()).await;
            let (status, _, body) = c.get(name, "/public").await;
            assert_eq!(status, StatusCode::OK);
            origin_headers(&body)
        }
    };

    let h = fetch("cf.test", Some(&cert)).await;
    use base64::Engine as _;
    let der_b64 = base64::engine::general_purpose::STANDARD.encode(cert.chain[0].as_ref());
    assert_eq!(header(&h, "cf-client-cert-der-base64"), Some(der_b64.as_str()));
    assert_eq!(
        header(&h, "cf-client-cert-sha256"),
        Some(f.cert_fingerprint_sha256.as_str())
    );
    let h = fetch("cf.test", None).await;
    assert!(header(&h, "cf-client-cert-der-base64").is_none());

    let h = fetch("cfh.test", Some(&cert)).await;
    let expected: [(&str, &str); 17] = [
        ("cf-cert-revoked", "false"),
        ("cf-cert-verified", "true"),
        ("cf-cert-presented", "true"),
        ("cf-cert-issuer-dn", &f.cert_issuer_dn),
        ("cf-cert-subject-dn", &f.cert_subject_dn),
        ("cf-cert-issuer-dn-rfc2253", &f.cert_issuer_dn_rfc2253),
        ("cf-cert-subject-dn-rfc2253", &f.cert_subject_dn_rfc2253),
        ("cf-cert-issuer-dn-legacy", &f.cert_issuer_dn_legacy),
        ("cf-cert-subject-dn-legacy", &f.cert_subject_dn_legacy),
        ("cf-cert-serial", &f.cert_serial),
        ("cf-cert-issuer-serial", &f.cert_issuer_serial),
        ("cf-cert-fingerprint-sha256", &f.cert_fingerprint_sha256),
        ("cf-cert-fingerprint-sha1", &f.cert_fingerprint_sha1),
        ("cf-cert-not-before", &f.cert_not_before),
        ("cf-cert-not-after", &f.cert_not_after),
        ("cf-cert-ski", &f.cert_ski),
        ("cf-cert-issuer-ski", &f.cert_issuer_ski),
    ];
    for (name, value) in expected {
        assert_eq!(header(&h, name), Some(value), "{name}");
    }
    assert!(f.cert_subject_dn.contains("CN=svc-a"), "{}", f.cert_subject_dn);
    let h = fetch("cfh.test", None).await;
    assert_eq!(header(&h, "cf-cert-presented"), Some("false"));
    assert_eq!(header(&h, "cf-cert-subject-dn"), Some(""));

    let h = fetch("rfc.test", Some(&cert)).await;
    assert_eq!(header(&h, "client-cert"), Some(f.cert_rfc9440.as_str()));
    assert_eq!(header(&h, "client-cert").unwrap(), format!(":{der_b64}:"));
    assert!(header(&h, "client-cert-chain").is_none(), "no intermediates were sent");
    let stranger = issue(&managed_ca(), "stranger", SubjectAltNames::default());
    let h = fetch("rfc.test", Some(&stranger)).await;
    assert!(
        header(&h, "client-cert").is_none(),
        "untrusted certificates are not forwarded"
    );

    let h = fetch("xfcc.test", Some(&cert)).await;
    let xfcc = header(&h, "x-forwarded-client-cert").unwrap();
    assert_eq!(
        xfcc,
        format!(
            "Hash={};Subject=\"{}\";URI=spiffe://acme/svc-a;DNS=svc-a.internal",
            f.cert_fingerprint_sha256, f.cert_subject_dn_rfc2253
        )
    );
    let h = fetch("xfcc.test", None).await;
    assert!(header(&h, "x-forwarded-client-cert").is_none());

    // Styles combine; with `xfcc_cert` the one XFCC field carries the certificate and its chain, URL-encoded.
    let h = fetch("both.test", Some(&cert)).await;
    assert_eq!(header(&h, "client-cert"), Some(f.cert_rfc9440.as_str()));
    assert_eq!(h["x-forwarded-client-cert"].as_array().map(Vec::len), Some(1));
    let xfcc = header(&h, "x-forwarded-client-cert").unwrap();
    let pem: String = cert
        .cert_pem
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    assert_eq!(
        xfcc,
        format!(
            "Hash={};Cert=\"{pem}\";Chain=\"{pem}\";Subject=\"{}\";URI=spiffe://acme/svc-a;DNS=svc-a.internal",
            f.cert_fingerprint_sha256, f.cert_subject_dn_rfc2253
        )
    );
}

fn grpc_spec(ca: &ManagedCa) -> HostSpec {
    let mut spec = HostSpec::new("grpc.test", ca);
    spec.h2c = true;
    spec.rules = ruleset(&[(
        r#"(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and portcullis.grpc.service eq "helloworld.Greeter""#,
        Action::Block,
        None,
    )]);
    spec
}

#[tokio::test]
async fn blocked_grpc_calls_get_a_grpc_status() {
    let w = world().await;
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![grpc_spec(&w.ca)])).await;

    let mut anon = h2(&proxy, &w.server, "grpc.test", None).await;
    let (status, headers, body, trailers) = anon.grpc("grpc.test", "/helloworld.Greeter/SayHello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "16");
    assert!(headers.contains_key("grpc-message"));
    assert!(body.is_empty() && trailers.is_none(), "trailers-only");

    let stranger = issue(&managed_ca(), "stranger", SubjectAltNames::default());
    let mut c = h2(&proxy, &w.server, "grpc.test", Some(&stranger)).await;
    let (status, headers, _, _) = c.grpc("grpc.test", "/helloworld.Greeter/SayHello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["grpc-status"], "7");

    // Another service is not covered by the rule and reaches the origin.
    let (_, headers, _, trailers) = c.grpc("grpc.test", "/other.Service/Call").await;
    assert!(!headers.contains_key("grpc-status"));
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
}

/// One rate-limiting rule: expression, action, characteristics, requests per period, custom response.
type LimitSpec<'a> = (&'a str, Action, &'a [&'a str], u64, Option<BlockResponse>);

/// A rate-limiting ruleset of `rules`, each counted over a minute.
fn ratelimits(rules: &[LimitSpec<'_>]) -> Arc<CompiledRuleset> {
    let rules = rules
        .iter()
        .enumerate()
        .map(|(i, (expr, action, characteristics, rpp, response))| Rule {
            ratelimit: Some(portcullis_rules::RateLimit {
                characteristics: characteristics.iter().map(|c| (*c).to_owned()).collect(),
                period: 60,
                requests_per_period: *rpp,
                mitigation_timeout: 0,
                requests_to_origin: None,
                counting_expression: None,
            }),
            ..rule(format!("rl{i}"), expr, *action, response.clone())
        })
        .collect();
    Arc::new(CompiledRuleset::compile_ratelimit(&Ruleset { rules }).unwrap())
}

#[tokio::test]
async fn rate_limits_count_per_client_certificate() {
    let w = world().await;
    let mut api = HostSpec::new("api.test", &w.ca);
    api.ratelimit = ratelimits(&[
        (
            "cf.tls_client_auth.cert_verified",
            Action::Block,
            &["cf.colo.id", "cf.tls_client_auth.cert_fingerprint_sha256"],
            2,
            None,
        ),
        ("http.request.uri.path eq \"/noisy\"", Action::Log, &["ip.src"], 1, None),
    ]);
    let mut grpc = grpc_spec(&w.ca);
    grpc.ratelimit = ratelimits(&[("true", Action::Block, &["http.request.headers[\"x-tenant\"]"], 1, None)]);
    let mut custom = HostSpec::new("cf.test", &w.ca);
    custom.ratelimit = ratelimits(&[(
        "true",
        Action::Block,
        &["ip.src"],
        1,
        Some(BlockResponse {
            status_code: 429,
            content: "{\"error\":\"slow down\"}".into(),
            content_type: "application/json".into(),
        }),
    )]);
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![api, grpc, custom])).await;
    let (a, b) = (
        issue(&w.ca, "a", SubjectAltNames::default()),
        issue(&w.ca, "b", SubjectAltNames::default()),
    );

    let mut ca = h1(&proxy, &w.server, "api.test", Some(&a)).await;
    for _ in 0..2 {
        assert_eq!(ca.get("api.test", "/public", &[]).await.0, StatusCode::OK);
    }
    let (status, headers, body) = ca.get("api.test", "/public", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=120).contains(&retry), "{retry}");
    assert!(body.starts_with("429 Too Many Requests"), "{body}");
    // Another certificate has its own count, on a new connection or the same address.
    let mut cb = h1(&proxy, &w.server, "api.test", Some(&b)).await;
    assert_eq!(cb.get("api.test", "/public", &[]).await.0, StatusCode::OK);
    // Requests the rule's expression does not match are not counted.
    let mut anon = h1(&proxy, &w.server, "api.test", None).await;
    for _ in 0..4 {
        assert_eq!(anon.get("api.test", "/public", &[]).await.0, StatusCode::OK);
    }
    // A `log` rate limit records and lets through.
    for _ in 0..2 {
        assert_eq!(anon.get("api.test", "/noisy", &[]).await.0, StatusCode::OK);
    }
    let events = proxy.events.events();
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.action, e.rule_id.as_deref(), e.status_code))
        .collect();
    assert_eq!(summary, [("block", Some("rl0"), 429), ("log", Some("rl1"), 0)]);

    // gRPC calls get RESOURCE_EXHAUSTED; the key is the header's value.
    let mut g = h2(&proxy, &w.server, "grpc.test", Some(&a)).await;
    let (_, headers, _, trailers) = g.grpc("grpc.test", "/other.Service/Call").await;
    assert_eq!(trailers.unwrap()["grpc-status"], "0", "{headers:?}");
    let (_, headers, _, _) = g.grpc("grpc.test", "/other.Service/Call").await;
    assert_eq!(headers["grpc-status"], "8");

    // A custom response.
    let mut c = h1(&proxy, &w.server, "cf.test", None).await;
    assert_eq!(c.get("cf.test", "/", &[]).await.0, StatusCode::OK);
    let (status, headers, body) = c.get("cf.test", "/", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "{\"error\":\"slow down\"}")
    );
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.contains_key("retry-after"));
}

/// Rules that read no field (`true`, a maintenance switch) still run: the proxy once skipped evaluation when the
/// rules read nothing and the zone had no rate limits, so `true` → block let everything through.
#[tokio::test]
async fn a_rule_that_reads_no_field_still_blocks() {
    let w = world().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.rules = ruleset(&[("true", Action::Block, None)]);
    let mut off = HostSpec::new("other.test", &w.ca);
    let mut disabled = rule("off".into(), "true", Action::Block, None);
    disabled.enabled = false;
    off.rules = Arc::new(CompiledRuleset::compile(&Ruleset { rules: vec![disabled] }).unwrap());
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec, off])).await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("api.test", "/", &[]).await.0, StatusCode::FORBIDDEN);
    let mut c = h1(&proxy, &w.server, "other.test", None).await;
    assert_eq!(
        c.get("other.test", "/", &[]).await.0,
        StatusCode::OK,
        "a disabled rule does nothing"
    );
}

/// A Host that names no configured host (an alias, an address) is served by the SNI's host, and its rules see that
/// host's name: a host-scoped rule cannot be stepped around by sending another Host.
#[tokio::test]
async fn rules_see_the_routed_host_whatever_host_the_client_sends() {
    let w = world().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.mtls = None;
    spec.rules = ruleset(&[(
        r#"http.host eq "api.test" and http.request.uri.path eq "/admin""#,
        Action::Block,
        None,
    )]);
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    for host in ["api.test", "API.test", "203.0.113.9", "alias.example"] {
        assert_eq!(
            c.get(host, "/admin", &[]).await.0,
            StatusCode::FORBIDDEN,
            "Host: {host}"
        );
    }
    let (status, _, body) = c.get("alias.example", "/public", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&origin_headers(&body), "x-forwarded-host"),
        Some("alias.example"),
        "the origin still gets the name asked for"
    );
}

/// A wildcard host without mTLS still serves only the names it covers.
#[tokio::test]
async fn a_wildcard_host_refuses_names_it_does_not_cover() {
    let w = world().await;
    let mut spec = HostSpec::new("*.w.test", &w.ca);
    spec.mtls = None;
    let server = server_pki(&["*.w.test"]);
    let proxy = start_proxy(build_snapshot(1, &server, w.origin, vec![spec])).await;
    let mut c = h1(&proxy, &server, "a.w.test", None).await;
    assert_eq!(c.get("b.w.test", "/", &[]).await.0, StatusCode::OK);
    for other in ["evil.example", "x.b.w.test", "w.test"] {
        assert_eq!(
            c.get(other, "/", &[]).await.0,
            StatusCode::MISDIRECTED_REQUEST,
            "Host: {other}"
        );
    }
}

/// Cloudflare's cookie map, argument lists and request timestamp reach rules from real requests.
#[tokio::test]
async fn cookies_argument_lists_and_the_timestamp_reach_rules() {
    let w = world().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.rules = ruleset(&[
        (
            r#"any(http.request.cookies["session"][*] == "revoked-42")"#,
            Action::Block,
            None,
        ),
        (r#"any(http.request.uri.args.names[*] == "debug")"#, Action::Block, None),
        (
            r#"any(raw.http.request.uri.args.values[*] eq "%3Cscript%3E")"#,
            Action::Block,
            None,
        ),
        (r#"any(http.request.uri.args.values[*] eq "<x>")"#, Action::Block, None),
        // Arrived after 2020 and before 2200: always true, unless the field is missing (0).
        (
            "http.request.timestamp.sec lt 1577836800 or http.request.timestamp.sec gt 7258118400",
            Action::Block,
            None,
        ),
    ]);
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    let status = |r: (StatusCode, HeaderMap, String)| r.0;
    assert_eq!(
        status(
            c.get("api.test", "/?q=1", &[("cookie", "theme=dark; session=ok")])
                .await
        ),
        StatusCode::OK
    );
    assert_eq!(
        status(
            c.get("api.test", "/", &[("cookie", "theme=dark; sess%69on=revoked-42")])
                .await
        ),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(c.get("api.test", "/?a=1&debug", &[]).await),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(c.get("api.test", "/?a=1&b=%3Cscript%3E", &[]).await),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(c.get("api.test", "/?a=%3Cx%3E", &[]).await),
        StatusCode::OK,
        "values are not decoded"
    );
}

/// A custom rule that skips the `http_ratelimit` phase exempts the requests it matches, and only those; the
/// custom rules after it still run.
#[tokio::test]
async fn skip_rules_exempt_requests_from_rate_limits() {
    let w = world().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    let mut partners = rule(
        "partners".into(),
        r#"http.request.uri.path eq "/partner""#,
        Action::Skip,
        None,
    );
    partners.action_parameters =
        Some(serde_json::from_value(serde_json::json!({"phases": ["http_ratelimit"]})).unwrap());
    let header = rule(
        "no-header".into(),
        r#"not any(http.request.headers.names[*] eq "x-ok")"#,
        Action::Block,
        None,
    );
    spec.rules = Arc::new(
        CompiledRuleset::compile(&Ruleset {
            rules: vec![partners, header],
        })
        .unwrap(),
    );
    spec.ratelimit = ratelimits(&[("true", Action::Block, &["ip.src"], 1, None)]);
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    let ok = [("x-ok", "1")];
    for _ in 0..3 {
        assert_eq!(c.get("api.test", "/partner", &ok).await.0, StatusCode::OK);
    }
    // The skip did not end the custom rules.
    assert_eq!(c.get("api.test", "/partner", &[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(c.get("api.test", "/other", &ok).await.0, StatusCode::OK);
    assert_eq!(c.get("api.test", "/other", &ok).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(c.get("api.test", "/partner", &ok).await.0, StatusCode::OK);
}

/// The proxy's own errors reach gRPC clients as gRPC statuses, not HTTP error pages they cannot
/// read: a body over the limit is RESOURCE_EXHAUSTED, an origin that refuses is UNAVAILABLE.
#[tokio::test]
async fn proxy_errors_on_grpc_calls_are_grpc_statuses() {
    let w = world().await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let small = start_proxy_with(
        build_snapshot(1, &w.server, w.origin, vec![grpc_spec(&w.ca)]),
        ProxyConfig {
            max_request_body_bytes: 4,
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut c = h2(&small, &w.server, "grpc.test", Some(&good)).await;
    let (status, headers, body, _) = c.grpc("grpc.test", "/helloworld.Greeter/SayHello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "8", "{headers:?}");
    assert_eq!(headers["grpc-message"], "413 Payload Too Large");
    assert!(body.is_empty());

    let mut dead = HostSpec::new("other.test", &w.ca);
    dead.origin = Some(Origin::new("http://127.0.0.1:1", false, None, true).unwrap());
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![dead])).await;
    let mut c = h2(&proxy, &w.server, "other.test", Some(&good)).await;
    let (status, headers, _, _) = c.grpc("other.test", "/helloworld.Greeter/SayHello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["grpc-status"], "14", "{headers:?}");
    // A plain HTTP request to the same origin still gets an HTTP error page.
    assert_eq!(c.get("other.test", "/").await.0, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn allowed_grpc_call_streams_body_and_trailers() {
    let w = world().await;
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![grpc_spec(&w.ca)])).await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let mut c = h2(&proxy, &w.server, "grpc.test", Some(&good)).await;
    for _ in 0..3 {
        let (status, headers, body, trailers) = c.grpc("grpc.test", "/helloworld.Greeter/SayHello").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(&body[..], b"\0\0\0\0\x02hi");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "ok");
    }
}

/// An origin that answers with the names and values of the request's trailers, as JSON.
async fn trailer_echo(req: Request<Incoming>) -> Result<Response<OriginBody>, Infallible> {
    let collected = req.into_body().collect().await.ok();
    let trailers: serde_json::Map<String, Json> = collected
        .as_ref()
        .and_then(|c| c.trailers())
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Json::String(String::from_utf8_lossy(v.as_bytes()).into()),
            )
        })
        .collect();
    Ok(Response::new(
        Full::new(Bytes::from(Json::Object(trailers).to_string())).boxed(),
    ))
}

/// A request body whose trailer section carries forged proxy headers next to a legitimate one.
fn body_with_forged_trailers() -> ReqBody {
    Full::new(Bytes::from_static(b"payload"))
        .with_trailers(async {
            let mut t = HeaderMap::new();
            for (name, value) in [
                ("x-checksum", "abc"),
                ("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\""),
                ("cf-cert-verified", "true"),
                ("x_forwarded_for", "10.0.0.1"),
                ("authorization", "Bearer forged"),
                ("x-client-cert", "forged"),
            ] {
                t.insert(name, HeaderValue::from_static(value));
            }
            Some(Ok(t))
        })
        .boxed()
}

/// Request trailers reach an HTTP/2 origin, from HTTP/2 and from chunked HTTP/1.1 clients, without the certificate
/// headers, the forwarded fields, credentials and the front proxy's certificate header: an origin that merges
/// trailers into the header section must not find forged ones there.
#[tokio::test]
async fn request_trailers_cannot_carry_forged_proxy_headers() {
    let w = world().await;
    let origin = origin_with(trailer_echo).await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.h2c = true;
    let proxy = start_proxy_with(
        build_snapshot(1, &w.server, origin, vec![spec]),
        front_proxy_config("192.0.2.0/24"),
    )
    .await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let check = |body: &str| {
        let seen: serde_json::Map<String, Json> = serde_json::from_str(body).unwrap();
        assert_eq!(seen.get("x-checksum"), Some(&Json::String("abc".into())), "{body}");
        assert_eq!(seen.len(), 1, "only the checksum goes on: {body}");
    };

    let mut c = h2(&proxy, &w.server, "api.test", Some(&good)).await;
    let req = Request::post("https://api.test/upload")
        .body(body_with_forged_trailers())
        .unwrap();
    let (status, _, body) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    check(&body);

    // hyper's HTTP/1.1 client sends the trailers its `Trailer` field declares; the proxy's own server decodes them.
    let mut c = h1(&proxy, &w.server, "api.test", Some(&good)).await;
    let req = Request::post("/upload")
        .header("host", "api.test")
        .header("transfer-encoding", "chunked")
        .header(
            "trailer",
            "x-checksum, x-forwarded-client-cert, cf-cert-verified, x_forwarded_for, authorization, x-client-cert",
        )
        .body(body_with_forged_trailers())
        .unwrap();
    let (status, _, body) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    check(&body);
}

#[tokio::test]
async fn custom_block_response_log_rules_and_tls_fields() {
    let w = world().await;
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.rules = ruleset(&[
        (
            r#"cf.tls_version eq "TLSv1.3" and cf.tls_cipher ne "" and ssl"#,
            Action::Log,
            None,
        ),
        (r#"http.request.uri.args["skip"][0] eq "1""#, Action::Skip, None),
        (
            r#"not cf.tls_client_auth.cert_presented and http.request.method eq "GET""#,
            Action::Block,
            Some(BlockResponse {
                status_code: 401,
                content: r#"{"error":"certificate required"}"#.into(),
                content_type: "application/json".into(),
            }),
        ),
    ]);
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    let (status, headers, body) = c.get("api.test", "/x", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, r#"{"error":"certificate required"}"#);
    let (status, _, _) = c.get("api.test", "/x?skip=1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<&str> = proxy.events.events().iter().map(|e| e.action).collect();
    assert_eq!(actions, ["log", "block", "log"]);
}

#[tokio::test]
async fn origin_down_is_502_without_details() {
    let w = world().await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        dead,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    let (status, _, body) = c.get("api.test", "/public", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(!body.contains("127.0.0.1") && !body.contains("refused"), "{body}");
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting_and_returns() {
    let w = world().await;
    let mut proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("api.test", "/public").await.0, StatusCode::OK);
    let _ = proxy.stop.take().unwrap().send(());
    let done = tokio::time::timeout(Duration::from_secs(10), &mut proxy.done).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    assert!(TcpStream::connect(proxy.addr).await.is_err());
}

#[tokio::test]
async fn origins_that_require_a_client_certificate_get_the_hosts_own() {
    let w = world().await;
    // The origin trusts a CA of its own; the edge's identity comes from it.
    let origin_ca = managed_ca();
    let (addr, origin_pki) = start_tls_origin_requiring(Some(origin_ca.certificate_der())).await;
    let url = format!("https://localhost:{}", addr.port());
    let edge_cert = issue(&origin_ca, "edge", SubjectAltNames::default());
    let pkcs8 = PrivateKeyDer::from_pem_slice(edge_cert.key_pem.as_bytes()).unwrap();
    let identity =
        |id: &str| crate::OriginIdentity::new(id, edge_cert.cert_pem.as_bytes(), pkcs8.secret_der()).unwrap();
    let ca = Some(origin_pki.ca_pem.as_bytes());
    let spec = |name, origin| HostSpec {
        mtls: None,
        rules: ruleset(&[]),
        origin: Some(origin),
        ..HostSpec::new(name, &w.ca)
    };
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![
            spec(
                "api.test",
                Origin::with_identity(&url, false, ca, true, Some(identity("c1"))).unwrap(),
            ),
            spec(
                "grpc.test",
                Origin::with_identity(&url, true, ca, true, Some(identity("c1"))).unwrap(),
            ),
            spec("other.test", Origin::new(&url, false, ca, true).unwrap()),
        ],
    ))
    .await;
    for sni in ["api.test", "grpc.test"] {
        let mut c = h2(&proxy, &w.server, sni, None).await;
        let (status, _, body) = c.get(sni, "/x").await;
        assert_eq!(status, StatusCode::OK, "{sni}: {body}");
    }
    // Without the identity the origin refuses the handshake: 502, naming nothing internal.
    let mut c = h2(&proxy, &w.server, "other.test", None).await;
    assert_eq!(c.get("other.test", "/x").await.0, StatusCode::BAD_GATEWAY);
    // An identity is only ever sent over TLS.
    let err = Origin::with_identity("http://127.0.0.1:1", false, None, true, Some(identity("c1"))).unwrap_err();
    assert!(err.to_string().contains("needs an https:// origin"), "{err}");
}

#[tokio::test]
async fn https_origins_http1_and_h2_with_origin_ca() {
    let w = world().await;
    let (addr, origin_pki) = start_tls_origin().await;
    let url = format!("https://localhost:{}", addr.port());
    let ca = origin_pki.ca_pem.as_bytes();
    let wrong_ca = w.server.ca_pem.as_bytes();

    let mut api = HostSpec::new("api.test", &w.ca);
    api.origin = Some(Origin::new(&url, false, Some(ca), true).unwrap());
    let mut grpc = grpc_spec(&w.ca);
    grpc.origin = Some(Origin::new(&url, true, Some(ca), true).unwrap());
    let mut wrong = HostSpec::new("other.test", &w.ca);
    wrong.origin = Some(Origin::new(&url, false, Some(wrong_ca), true).unwrap());
    let mut unverified = HostSpec::new("cf.test", &w.ca);
    unverified.origin = Some(Origin::new(&url, false, Some(wrong_ca), false).unwrap());
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![api, grpc, wrong, unverified],
    ))
    .await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());

    let mut c = h2(&proxy, &w.server, "api.test", Some(&good)).await;
    let (status, _, body) = c.get("api.test", "/api?x=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["uri"], "/api?x=1");
    assert_eq!(header(&origin_headers(&body), "host"), Some("api.test"));

    let mut g = h2(&proxy, &w.server, "grpc.test", Some(&good)).await;
    let (status, _, body, trailers) = g.grpc("grpc.test", "/helloworld.Greeter/SayHello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"\0\0\0\0\x02hi");
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");

    let mut c = h1(&proxy, &w.server, "other.test", None).await;
    let (status, _, body) = c.get("other.test", "/public", &[]).await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "an origin certificate from the wrong CA is refused"
    );
    assert!(!body.contains("certificate"), "{body}");

    let mut c = h1(&proxy, &w.server, "cf.test", None).await;
    assert_eq!(c.get("cf.test", "/public", &[]).await.0, StatusCode::OK);
}

#[test]
fn origin_urls() {
    assert!(Origin::new("ftp://x", false, None, true).is_err());
    assert!(Origin::new("/relative", false, None, true).is_err());
    assert!(Origin::new("https://x", false, Some(b"not pem"), true).is_err());
    let o = Origin::new("https://example.com", true, None, true).unwrap();
    assert!(o.tls.is_some() && o.http2);
    let o = Origin::new("http://127.0.0.1:8080/ignored", false, None, true).unwrap();
    assert!(o.tls.is_none());
    assert_eq!(o.servers()[0].as_str(), "127.0.0.1:8080");
}

#[tokio::test]
async fn sessions_resume_across_rebuilds_and_across_nodes_sharing_the_secret() {
    let w = world().await;
    let secret = [42; 32];
    let sessions = TlsSessions::new("api.test", secret);
    let spec = |sessions: &TlsSessions| HostSpec {
        sessions: Some(sessions.clone()),
        ..HostSpec::new("api.test", &w.ca)
    };
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec(&sessions)])).await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let config = client_config(&w.server, Some(&good), b"http/1.1", true);
    let (mut c, kind) = h1_with(&proxy, config.clone(), "api.test").await;
    assert_eq!(kind, Some(rustls::HandshakeKind::Full));
    // The ticket comes after the handshake; a request reads it.
    assert_eq!(c.get("api.test", "/api", &[]).await.0, StatusCode::OK);

    // A rebuilt snapshot (every write to the store makes one) keeps the host's sessions.
    proxy
        .snapshot
        .store(Arc::new(build_snapshot(2, &w.server, w.origin, vec![spec(&sessions)])));
    let (mut c, kind) = h1_with(&proxy, config.clone(), "api.test").await;
    assert_eq!(kind, Some(rustls::HandshakeKind::Resumed));
    assert_eq!(c.get("api.test", "/api", &[]).await.0, StatusCode::OK);

    // Another node with the same secret (a fleet sharing the master key) resumes it too; one with its
    // own does not, and falls back to a full handshake.
    let twin = TlsSessions::new("api.test", secret);
    let node2 = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec(&twin)])).await;
    let (mut c, kind) = h1_with(&node2, config.clone(), "api.test").await;
    assert_eq!(kind, Some(rustls::HandshakeKind::Resumed));
    let (status, _, body) = c.get("api.test", "/api", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stranger = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let fresh = client_config(&w.server, Some(&good), b"http/1.1", true);
    let (mut c, _) = h1_with(&node2, fresh.clone(), "api.test").await;
    assert_eq!(c.get("api.test", "/api", &[]).await.0, StatusCode::OK);
    let (mut c, kind) = h1_with(&stranger, fresh, "api.test").await;
    assert_eq!(kind, Some(rustls::HandshakeKind::Full));
    assert_eq!(c.get("api.test", "/api", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn resumed_sessions_keep_the_client_certificate() {
    let w = world().await;
    let mut spec = HostSpec::new("cfh.test", &w.ca);
    spec.forwarding = Forwarding::CfCertHeaders.into();
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let config = client_config(&w.server, Some(&good), b"http/1.1", true);

    let (mut c, kind) = h1_with(&proxy, config.clone(), "cfh.test").await;
    assert_eq!(kind, Some(rustls::HandshakeKind::Full));
    assert_eq!(c.get("cfh.test", "/api", &[]).await.0, StatusCode::OK);

    let (mut c, kind) = h1_with(&proxy, config, "cfh.test").await;
    assert_eq!(kind, Some(rustls::HandshakeKind::Resumed));
    let (status, _, body) = c.get("cfh.test", "/api", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let headers = origin_headers(&body);
    assert_eq!(header(&headers, "cf-cert-verified"), Some("true"));
    assert_eq!(
        header(&headers, "cf-cert-serial"),
        Some(facts_for(&w.ca, &good).cert_serial.as_str())
    );
}

#[tokio::test]
async fn tls_version_cipher_and_client_ip_fields() {
    let w = world().await;
    let good = issue(
        &w.ca,
        "good",
        SubjectAltNames {
            dns: vec!["a.internal".into()],
            ..SubjectAltNames::default()
        },
    );
    // The public-key pin of the client's certificate (tests/pki.rs checks the value against openssl).
    let spki = portcullis_pki::compute_facts(&good.chain[..1], &[]).cert_spki_sha256;
    assert_eq!(spki.len(), 64);
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.rules = ruleset(&[
        (
            r#"cf.tls_version eq "TLSv1.2" and cf.tls_cipher in {"ECDHE-ECDSA-AES128-GCM-SHA256" "ECDHE-ECDSA-AES256-GCM-SHA384" "ECDHE-ECDSA-CHACHA20-POLY1305"}"#,
            Action::Log,
            None,
        ),
        (
            r#"cf.tls_version eq "TLSv1.3" and cf.tls_cipher in {"AEAD-AES128-GCM-SHA256" "AEAD-AES256-GCM-SHA384" "AEAD-CHACHA20-POLY1305-SHA256"}"#,
            Action::Log,
            None,
        ),
        (
            r#"ip.src eq 127.0.0.1 and ssl and http.request.version eq "HTTP/1.1" and cf.edge.server_port gt 0 and http.request.full_uri eq "https://api.test/api?a=1" and http.request.headers["x-test"][0] eq "yes""#,
            Action::Log,
            None,
        ),
        (
            r#"cf.tls_client_auth.cert_verified and portcullis.tls_client_auth.cert_status eq "ok" and portcullis.tls_client_auth.cert_san_dns[0] eq "a.internal""#,
            Action::Log,
            None,
        ),
        (
            &format!(r#"portcullis.tls_client_auth.cert_spki_sha256 in {{"{spki}"}}"#),
            Action::Log,
            None,
        ),
    ]);
    let proxy = start_proxy(build_snapshot(1, &w.server, w.origin, vec![spec])).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(w.server.ca_der.clone()).unwrap();
    let mut tls12 = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(good.chain.clone(), good.key.clone_key())
        .unwrap();
    tls12.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (mut c, _) = h1_with(&proxy, Arc::new(tls12), "api.test").await;
    assert_eq!(
        c.get("api.test", "/api?a=1", &[("x-test", "yes")]).await.0,
        StatusCode::OK
    );
    let rules: Vec<String> = proxy.events.events().into_iter().filter_map(|e| e.rule_id).collect();
    assert_eq!(rules, ["rule0", "rule2", "rule3", "rule4"]);

    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("api.test", "/", &[]).await.0, StatusCode::OK);
    let rules: Vec<String> = proxy.events.events().into_iter().filter_map(|e| e.rule_id).collect();
    assert_eq!(rules, ["rule0", "rule2", "rule3", "rule4", "rule1"]);
}

/// curl (OpenSSL) as a real client, over HTTP/2 and HTTP/1.1; skipped when curl is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_and_without_a_certificate() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl not found; skipping");
        return;
    }
    let w = world().await;
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    std::fs::write(path("ca.pem"), &w.server.ca_pem).unwrap();
    std::fs::write(path("cert.pem"), &good.cert_pem).unwrap();
    std::fs::write(path("key.pem"), &good.key_pem).unwrap();
    let port = proxy.addr.port();
    let curl = |extra: Vec<String>| {
        let mut args = vec![
            "-sS".to_owned(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code} %{http_version}".into(),
            "--cacert".into(),
            path("ca.pem"),
            "--resolve".into(),
            format!("api.test:{port}:127.0.0.1"),
        ];
        args.extend(extra);
        args.push(format!("https://api.test:{port}/api"));
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl").args(&args).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let with_cert = vec!["--cert".to_owned(), path("cert.pem"), "--key".into(), path("key.pem")];
    assert_eq!(curl(with_cert.clone()).await.unwrap(), "200 2");
    let mut h1 = with_cert;
    h1.push("--http1.1".into());
    assert_eq!(curl(h1).await.unwrap(), "200 1.1");
    assert_eq!(curl(vec![]).await.unwrap(), "403 2");
}

#[tokio::test]
async fn idle_and_old_connections_are_closed() {
    let w = world().await;
    let snap = || build_snapshot(1, &w.server, w.origin, vec![HostSpec::new("api.test", &w.ca)]);
    let proxy = start_proxy_with(
        snap(),
        ProxyConfig {
            idle_timeout: Duration::from_millis(300),
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("api.test", "/public").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        c.get("api.test", "/public").await.0,
        StatusCode::OK,
        "activity resets the idle timer"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(c.0.ready().await.is_err(), "idle connection still open");

    let proxy = start_proxy_with(
        snap(),
        ProxyConfig {
            max_connection_age: Duration::from_millis(300),
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    for _ in 0..3 {
        assert_eq!(c.get("api.test", "/public", &[]).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.0.ready().await.is_err(), "old connection still open");
}

#[tokio::test]
async fn mtls_from_store_shaped_cas() {
    let w = world().await;
    let good = issue(&w.ca, "good", SubjectAltNames::default());
    let revoked = issue(&w.ca, "revoked", SubjectAltNames::default());
    let ca_pem = w.ca.certificate_pem();
    let serials = vec![revoked.serial_hex.clone()];
    let (mtls, hints) = Mtls::from_cas(
        MtlsMode::Request,
        &[TrustedCa {
            certificates: ca_pem.as_bytes(),
            crl: None,
            revoked_serials: &serials,
            revoked_at_edge: &[],
            ocsp: None,
            crl_grace: None,
        }],
    )
    .unwrap();
    assert_eq!(hints.len(), 1);
    let now = OffsetDateTime::now_utc();
    assert!(mtls.verifier.verify(&good.chain, now).is_trusted());
    let v = mtls.verifier.verify(&revoked.chain, now);
    assert!(v.verified && v.revoked);

    let bad = [TrustedCa {
        certificates: b"not a certificate",
        crl: None,
        revoked_serials: &[],
        revoked_at_edge: &[],
        ocsp: None,
        crl_grace: None,
    }];
    assert!(Mtls::from_cas(MtlsMode::Require, &bad).is_err());
}

/// A host named `name` with `cert`, no mTLS and the default rules, for lookups that serve nothing.
fn bare_host(name: &str, cert: &ServerCert) -> Host {
    Host::new(HostParams {
        hostname: name.into(),
        zone_id: None,
        cert: cert.clone(),
        mtls: None,
        origin: Origin::new("http://127.0.0.1:1", false, None, true).unwrap(),
        forwarding: ForwardingSet::default(),
        transforms: crate::Transforms::default(),
        ruleset: default_rules(),
        ratelimit: ruleset(&[]),
        url_normalization: UrlNormalization::default(),
        sessions: TlsSessions::local(name),
        min_tls_version: crate::MinTlsVersion::default(),
        field_headers: crate::field_headers::FieldHeaders::default(),
    })
    .unwrap()
}

#[test]
fn sni_lookup_is_case_insensitive_and_falls_back() {
    let mut snap = Snapshot::new(1);
    assert!(snap.host_for_sni(Some("a.test")).is_none());
    let pki = server_pki(&["a.test"]);
    snap.insert(bare_host("A.test", &pki.cert));
    assert_eq!(snap.host_for_sni(Some("A.TEST")).unwrap().hostname, "a.test");
    assert!(snap.host_for_sni(None).is_none());
    snap.default_host = Some("a.test".into());
    assert!(snap.host_for_sni(Some("b.test")).is_some());
}

#[test]
fn a_wildcard_host_covers_one_label_and_yields_to_an_exact_host() {
    let mut snap = Snapshot::new(1);
    let pki = server_pki(&["*.w.test", "a.w.test"]);
    for name in ["*.w.test", "a.w.test"] {
        snap.insert(bare_host(name, &pki.cert));
    }
    let named = |n: &str| snap.host_for_sni(Some(n)).map(|h| h.hostname.clone());
    assert_eq!(named("B.w.test").as_deref(), Some("*.w.test"));
    assert_eq!(named("a.w.test").as_deref(), Some("a.w.test"));
    assert_eq!(named("x.b.w.test"), None, "one label only");
    assert_eq!(named("w.test"), None, "not the name itself");
    assert_eq!(named(".w.test"), None);
    assert_eq!(
        named("*.w.test").as_deref(),
        Some("*.w.test"),
        "its own name, as the store keys it"
    );
}

#[tokio::test]
async fn large_bodies_stream_and_slow_origins_time_out() {
    let w = world().await;
    let proxy = api_proxy(
        &w,
        ProxyConfig {
            upstream_response_timeout: Duration::from_millis(300),
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut c = h2(&proxy, &w.server, "api.test", None).await;
    let big = "x".repeat(1 << 20);
    let req = Request::post("https://api.test/upload")
        .body(Full::new(Bytes::from(big.clone())).boxed())
        .unwrap();
    let (status, _, body) = read(c.0.send_request(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let json: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["body"].as_str().unwrap().len(), big.len());

    let (status, _, body) = c.get("api.test", "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "504 Gateway Timeout\n");
}

/// Presents a certificate with a key that is not its own.
#[derive(Debug)]
struct Imposter(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Imposter {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_certificate_without_its_key_is_refused_at_the_handshake() {
    let w = world().await;
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let victim = issue(&w.ca, "victim", SubjectAltNames::default());
    let attacker = issue(&managed_ca(), "attacker", SubjectAltNames::default());
    let provider = crate::tls::provider();
    let signing_key = provider
        .key_provider
        .load_private_key(attacker.key.clone_key())
        .unwrap();
    let stolen = rustls::sign::CertifiedKey::new(victim.chain.clone(), signing_key);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(w.server.ca_der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Imposter(Arc::new(stolen))));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let refused = match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("api.test").unwrap(), tcp)
        .await
    {
        Err(_) => true,
        Ok(tls) => match hyper::client::conn::http1::handshake::<_, ReqBody>(TokioIo::new(tls)).await {
            Err(_) => true,
            Ok((mut sender, conn)) => {
                tokio::spawn(conn);
                let req = Request::get("/api").header("host", "api.test").body(empty()).unwrap();
                sender.send_request(req).await.is_err()
            }
        },
    };
    assert!(refused, "a stolen certificate was accepted");
    assert!(proxy.events.events().is_empty(), "no request may have been served");
}

#[tokio::test]
async fn clients_without_sni_use_the_default_host() {
    let w = world().await;
    let mut snap = build_snapshot(1, &w.server, w.origin, vec![HostSpec::new("api.test", &w.ca)]);
    let proxy = start_proxy(build_snapshot(
        1,
        &w.server,
        w.origin,
        vec![HostSpec::new("api.test", &w.ca)],
    ))
    .await;
    let connect = || async {
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(client_config(&w.server, None, b"http/1.1", false))
            .connect(ServerName::try_from("api.test").unwrap(), tcp)
            .await
    };
    assert!(connect().await.is_err(), "no SNI and no default host");
    snap.default_host = Some("api.test".into());
    proxy.snapshot.store(Arc::new(snap));
    let tls = connect().await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, ReqBody>(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/public")
        .header("host", "api.test")
        .body(empty())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn slow_handshakes_and_slow_headers_are_cut_off() {
    use tokio::io::AsyncReadExt;
    let w = world().await;
    let proxy = api_proxy(
        &w,
        ProxyConfig {
            handshake_timeout: Duration::from_millis(300),
            h1_header_read_timeout: Duration::from_millis(300),
            ..ProxyConfig::default()
        },
    )
    .await;

    // A TCP connection that never sends a ClientHello is closed after the handshake timeout.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    // Headers that never finish are cut off after the header read timeout.
    let tls = tls_connect(&proxy, &w.server, "api.test", None, b"http/1.1")
        .await
        .unwrap();
    assert_stalled_head_is_cut_off(tls).await;
}

/// Sends the start of a request head that never finishes and expects the proxy to close the
/// connection (within a few header-read timeouts) without answering it.
async fn assert_stalled_head_is_cut_off(mut tls: TlsStream<TcpStream>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /public HTTP/1.1\r\nHost: api.test\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "connection still open after the header timeout");
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
}

/// The header-read timeout bounds how long a request head takes to arrive, not how long a
/// keep-alive connection waits for its next request (that is the idle timeout).
#[tokio::test]
async fn idle_keep_alive_outlives_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world().await;
    let proxy = api_proxy(
        &w,
        ProxyConfig {
            h1_header_read_timeout: Duration::from_millis(300),
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut c = h1(&proxy, &w.server, "api.test", None).await;
    assert_eq!(c.get("api.test", "/public", &[]).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        c.get("api.test", "/public", &[]).await.0,
        StatusCode::OK,
        "the idle keep-alive connection is still open"
    );

    // After an idle pause, a head that starts but never finishes is still cut off.
    let mut tls = tls_connect(&proxy, &w.server, "api.test", None, b"http/1.1")
        .await
        .unwrap();
    tls.write_all(b"GET /public HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_stalled_head_is_cut_off(tls).await;
}

/// A response that is still streaming keeps its request in progress: bytes of a pipelined next
/// request arriving meanwhile do not start the header-read clock against it.
#[tokio::test]
async fn a_streaming_response_is_not_cut_off_by_a_pipelined_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world().await;
    let proxy = api_proxy(
        &w,
        ProxyConfig {
            h1_header_read_timeout: Duration::from_millis(200),
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut tls = tls_connect(&proxy, &w.server, "api.test", None, b"http/1.1")
        .await
        .unwrap();
    tls.write_all(b"GET /drip HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    // The next request goes out once the first response has begun to stream.
    let mut out = vec![0u8; 4096];
    let n = tls.read(&mut out).await.unwrap();
    out.truncate(n);
    assert!(String::from_utf8_lossy(&out).contains("200 OK"));
    tls.write_all(b"GET /public HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection closes after the second response");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("drip").count(), 6, "the whole streamed body: {text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "both responses: {text}");
}

mod http1;
mod http2;
mod limits;
mod origins;

/// An OCSP responder for `ca` on a free port: `revoked` serials (hex) are revoked, every other one good; counts
/// the queries, and takes 200 ms over each, so that connections arriving together wait for the same one.
async fn ocsp_responder(ca: ManagedCa, revoked: &[&str]) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let ca = Arc::new(ca);
    let revoked: Arc<Vec<Vec<u8>>> = Arc::new(
        revoked
            .iter()
            .map(|s| {
                let bytes = portcullis_pki::hex_decode(s).unwrap();
                bytes.iter().skip_while(|b| **b == 0).copied().collect()
            })
            .collect(),
    );
    let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = queries.clone();
    let addr = origin_with(move |req: Request<Incoming>| {
        let (ca, revoked, counted) = (ca.clone(), revoked.clone(), counted.clone());
        async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let now = OffsetDateTime::now_utc();
            let answers: Vec<_> = portcullis_pki::ocsp::parse_request(&body)
                .unwrap()
                .into_iter()
                .map(|id| {
                    let status = if revoked.contains(&id.serial) {
                        portcullis_pki::OcspStatus::Revoked { at: now, reason: None }
                    } else {
                        portcullis_pki::OcspStatus::Good
                    };
                    (id, status)
                })
                .collect();
            let der = ca
                .ocsp_response(&answers, now, now + time::Duration::minutes(10))
                .unwrap();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(der))))
        }
    })
    .await;
    (addr, queries)
}

/// A GET / over a new HTTP/1.1 connection with `cert`: the status, or the error that ended the connection.
async fn get_once(proxy: &Proxy, server: &ServerPki, cert: &ClientCert) -> Result<StatusCode, String> {
    let tls = tls_connect(proxy, server, "api.test", Some(cert), b"http/1.1")
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get("/").header("host", "api.test").body(empty()).unwrap();
    sender
        .send_request(req)
        .await
        .map(|r| r.status())
        .map_err(|e| e.to_string())
}

/// Under `require`, a front proxy's header certificate that the CA's OCSP responder says is revoked is refused, as
/// its handshake would have been; a good one goes through, and the front proxy's own is checked at its handshake.
#[tokio::test]
async fn ocsp_answers_decide_a_front_proxys_header_under_require() {
    let w = world().await;
    let ca = managed_ca();
    let front = issue(&ca, "front-proxy", SubjectAltNames::default());
    let good = issue(&ca, "good", SubjectAltNames::default());
    let revoked = issue(&ca, "revoked", SubjectAltNames::default());
    let ca_der = ca.certificate_der().to_vec();
    let (responder, _) = ocsp_responder(ca, &[&revoked.serial_hex]).await;
    let policy = portcullis_pki::OcspPolicy {
        hard_fail: true,
        responder: Some(format!("http://{responder}/")),
    };
    let mut spec = HostSpec::new("api.test", &w.ca);
    spec.rules = ruleset(&[]);
    spec.mtls = Some((MtlsMode::Require, ocsp_verifier(&ca_der, Some(policy)), ca_der.clone()));
    let proxy = start_proxy_with(
        build_snapshot(1, &w.server, w.origin, vec![spec]),
        front_proxy_config("127.0.0.1"),
    )
    .await;
    let mut c = h1(&proxy, &w.server, "api.test", Some(&front)).await;
    let (status, _, body) = c.get("api.test", "/", &[("x-client-cert", &leaf_b64(&good))]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = c.get("api.test", "/", &[("x-client-cert", &leaf_b64(&revoked))]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "OCSP says revoked");
    assert_eq!(proxy.events.events().last().map(|e| e.mtls_status), Some("revoked"));
}

/// Under `require`, OCSP decides before any request: a revoked certificate's connection is closed, a good one is
/// served, one query per certificate however many connections; and under a hard-fail policy a responder that
/// cannot be reached closes the connection, where soft-fail serves it.
#[tokio::test]
async fn ocsp_answers_decide_connections_under_require() {
    let w = world().await;
    let ca = managed_ca();
    let good = issue(&ca, "good", SubjectAltNames::default());
    let revoked = issue(&ca, "revoked", SubjectAltNames::default());
    let many = issue(&ca, "many", SubjectAltNames::default());
    let ca_der = ca.certificate_der().to_vec();
    let (responder, queries) = ocsp_responder(ca, &[&revoked.serial_hex]).await;
    let policy = |hard_fail, url: String| portcullis_pki::OcspPolicy {
        hard_fail,
        responder: Some(url),
    };
    let snapshot = |p| {
        let mut spec = HostSpec::new("api.test", &w.ca);
        spec.mtls = Some((MtlsMode::Require, ocsp_verifier(&ca_der, Some(p)), ca_der.clone()));
        build_snapshot(1, &w.server, w.origin, vec![spec])
    };
    let proxy = start_proxy(snapshot(policy(true, format!("http://{responder}/")))).await;
    assert_eq!(get_once(&proxy, &w.server, &good).await, Ok(StatusCode::OK));
    assert!(get_once(&proxy, &w.server, &revoked).await.is_err(), "revoked: closed");
    assert_eq!(get_once(&proxy, &w.server, &good).await, Ok(StatusCode::OK));
    assert!(get_once(&proxy, &w.server, &revoked).await.is_err());
    assert_eq!(
        queries.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "answers are cached"
    );
    // Connections at once with a certificate not asked about yet share one query.
    let results = tokio::join!(
        get_once(&proxy, &w.server, &many),
        get_once(&proxy, &w.server, &many),
        get_once(&proxy, &w.server, &many),
        get_once(&proxy, &w.server, &many),
    );
    let ok = Ok(StatusCode::OK);
    assert_eq!(
        results,
        (ok.clone(), ok.clone(), ok.clone(), ok),
        "four connections at once"
    );
    assert_eq!(
        queries.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one query for the four"
    );

    // A responder that refuses connections: hard-fail closes, soft-fail serves.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let proxy = start_proxy(snapshot(policy(true, format!("http://{dead}/")))).await;
    assert!(
        get_once(&proxy, &w.server, &good).await.is_err(),
        "hard-fail without an answer"
    );
    let proxy = start_proxy(snapshot(policy(false, format!("http://{dead}/")))).await;
    assert_eq!(
        get_once(&proxy, &w.server, &good).await,
        Ok(StatusCode::OK),
        "soft-fail"
    );
}

/// On a host that lets rules decide (`request`), a connection's OCSP answer (here: none, the responder is down)
/// is judged under its CA's policy in the newest snapshot: soft lets the request through, hard blocks it on the
/// same connection, and turning the check off lets it through again.
#[tokio::test]
async fn an_open_connection_follows_its_cas_current_ocsp_policy() {
    let w = world().await;
    let cert = issue(&w.ca, "device", SubjectAltNames::default());
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let snapshot = |generation, hard_fail: Option<bool>| {
        let policy = hard_fail.map(|hard_fail| portcullis_pki::OcspPolicy {
            hard_fail,
            responder: Some(format!("http://{dead}/")),
        });
        let mut spec = HostSpec::new("api.test", &w.ca);
        spec.mtls = Some((
            MtlsMode::Request,
            ocsp_verifier(w.ca.certificate_der(), policy),
            w.ca.certificate_der().to_vec(),
        ));
        build_snapshot(generation, &w.server, w.origin, vec![spec])
    };
    let proxy = start_proxy(snapshot(1, Some(false))).await;
    let mut c = h1(&proxy, &w.server, "api.test", Some(&cert)).await;
    assert_eq!(c.get("api.test", "/api", &[]).await.0, StatusCode::OK, "soft fail");
    proxy.snapshot.store(Arc::new(snapshot(2, Some(true))));
    let (status, _, body) = c.get("api.test", "/api", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "hard fail, same connection: {body}");
    proxy.snapshot.store(Arc::new(snapshot(3, None)));
    assert_eq!(c.get("api.test", "/api", &[]).await.0, StatusCode::OK, "check off");
}
