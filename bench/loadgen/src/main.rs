//! Portcullis' benchmark load generator (issue 7).
//!
//! `loadgen run` drives an mTLS endpoint over HTTP/1.1 or HTTP/2 for a fixed duration in one of three modes:
//!
//! - `keepalive`: N connections, each sending one request after another;
//! - `full`: a new connection per request with TLS resumption disabled in the client
//!   (`ClientConfig::resumption = Resumption::disabled()`), so every handshake is a full one;
//! - `resumed`: a new connection per request with one shared session cache, so every handshake after the first
//!   few can be resumed;
//! - `grpc`: N HTTP/2 connections, each making one gRPC unary call after another (`POST /bench.Echo/Unary`,
//!   `content-type: application/grpc`, `te: trailers`, a length-prefixed message of raw bytes); a call succeeds
//!   only with HTTP 200, trailer `grpc-status: 0` and the message echoed back, and is counted in
//!   `grpc_failures` otherwise.
//!
//! Every handshake's kind is read back from rustls (`handshake_kind()`) and counted, so a run that silently
//! resumes (or silently fails to resume) shows it in `handshakes_full` / `handshakes_resumed`.
//!
//! `loadgen idle` opens N mTLS connections, sends one request on each and holds them open (memory per idle
//! connection); `loadgen origin` is the static origin the proxies forward to (HTTP/1.1), and `loadgen origin --grpc`
//! the gRPC echo origin (h2c with prior knowledge).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::Resumption;
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "mTLS load generator for the Portcullis benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Runtime worker threads (1 = a current-thread runtime, the right choice when pinned to one core).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive an endpoint for a fixed duration and print one JSON object.
    Run(RunArgs),
    /// Open N mTLS connections, one request on each, and hold them open.
    Idle(IdleArgs),
    /// Serve a small static body over HTTP/1.1 (keep-alive): the origin behind every proxy.
    Origin(OriginArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Keepalive,
    Full,
    Resumed,
    /// gRPC unary calls over keep-alive HTTP/2 connections (implies --http 2).
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Proto {
    #[value(name = "1")]
    H1,
    #[value(name = "2")]
    H2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kx {
    /// X25519 only: what NGINX and HAProxy on OpenSSL 3.0 negotiate, so every proxy does the same key exchange.
    X25519,
    /// P-256 ECDHE only.
    P256,
    /// rustls' default preference (X25519MLKEM768 first, then X25519, P-256, P-384).
    Default,
}

#[derive(Debug, Clone, clap::Args)]
struct TlsArgs {
    /// Address to connect to (IP:port).
    #[arg(long)]
    connect: SocketAddr,
    /// SNI and Host / :authority to send.
    #[arg(long, default_value = "bench.local")]
    sni: String,
    /// CA (PEM) that signed the server certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Client private key (PEM, PKCS#8, SEC1 or PKCS#1).
    #[arg(long)]
    key: PathBuf,
    /// HTTP version: 1 (HTTP/1.1, ALPN http/1.1) or 2 (HTTP/2, ALPN h2).
    #[arg(long, value_enum, default_value = "1")]
    http: Proto,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Key-exchange groups offered.
    #[arg(long, value_enum, default_value = "x25519")]
    kx: Kx,
    /// Also offer TLS 1.2 (default: TLS 1.3 only).
    #[arg(long)]
    tls12: bool,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    tls: TlsArgs,
    /// keepalive, full (new connection per request, resumption disabled), resumed (new connection per request,
    /// shared session cache) or grpc (gRPC unary calls over keep-alive HTTP/2 connections).
    #[arg(long, value_enum, default_value = "keepalive")]
    mode: Mode,
    /// Same as --mode grpc.
    #[arg(long)]
    grpc: bool,
    /// gRPC message size in bytes (raw bytes after the 5-byte gRPC frame prefix).
    #[arg(long, default_value_t = 16)]
    grpc_payload: usize,
    /// Concurrent connections (keepalive) or concurrent connect-handshake-request loops (full, resumed).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Concurrent streams per HTTP/2 connection in keepalive mode.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Free-form label copied into the JSON (e.g. the proxy's name).
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Clone, clap::Args)]
struct IdleArgs {
    #[command(flatten)]
    tls: TlsArgs,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Seconds to hold the connections once all are open.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// File created (with the number of open connections) once all connections are open.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Clone, clap::Args)]
struct OriginArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:19080")]
    listen: SocketAddr,
    /// Size of the response body in bytes.
    #[arg(long, default_value_t = 16)]
    body_bytes: usize,
    /// Be a gRPC echo origin instead: HTTP/2 with prior knowledge (h2c), every call answered with a gRPC message
    /// echoing the request's and trailers `grpc-status: 0`.
    #[arg(long)]
    grpc: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Idle(args) => idle(args).await,
            Command::Origin(args) => origin(args).await,
        }
    })
}

// ---------------------------------------------------------------------------------------------------------------
// TLS client

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

fn client_config(tls: &TlsArgs, resumption: bool) -> anyhow::Result<ClientConfig> {
    use rustls::crypto::aws_lc_rs::{self as provider, kx_group};
    let mut provider = provider::default_provider();
    match tls.kx {
        Kx::X25519 => provider.kx_groups = vec![kx_group::X25519],
        Kx::P256 => provider.kx_groups = vec![kx_group::SECP256R1],
        Kx::Default => {}
    }
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&tls.ca)? {
        roots.add(cert).context("adding the server CA")?;
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls.tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let key = PrivateKeyDer::from_pem_file(&tls.key).with_context(|| format!("reading {}", tls.key.display()))?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&tls.cert)?, key)
        .context("client certificate and key")?;
    config.alpn_protocols = match tls.http {
        Proto::H1 => vec![b"http/1.1".to_vec()],
        Proto::H2 => vec![b"h2".to_vec()],
    };
    config.resumption = if resumption {
        Resumption::in_memory_sessions(4096)
    } else {
        Resumption::disabled()
    };
    Ok(config)
}

/// Everything a worker needs to open a connection and send a request.
struct Target {
    connect: SocketAddr,
    sni: ServerName<'static>,
    host: String,
    path: String,
    proto: Proto,
    connector: TlsConnector,
    /// The gRPC request body (5-byte prefix + message) when making gRPC calls.
    grpc: Option<Bytes>,
}

/// An open connection, ready for requests.
enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
    Grpc(http2::SendRequest<Full<Bytes>>),
}

/// A gRPC length-prefixed message: compressed flag 0, 4-byte big-endian length, the message.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

/// The value of `grpc-status` in the trailers, or in the headers of a trailers-only response.
fn grpc_status<'a>(headers: &'a HeaderMap, trailers: Option<&'a HeaderMap>) -> Option<&'a str> {
    trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
}

impl Target {
    fn new(tls: &TlsArgs, resumption: bool) -> anyhow::Result<Target> {
        let config = client_config(tls, resumption)?;
        Ok(Target {
            connect: tls.connect,
            sni: ServerName::try_from(tls.sni.clone()).map_err(|e| anyhow!("bad --sni: {e}"))?,
            host: tls.sni.clone(),
            path: tls.path.clone(),
            proto: tls.http,
            connector: TlsConnector::from(Arc::new(config)),
            grpc: None,
        })
    }

    /// TCP connect and TLS handshake; returns the stream and whether the handshake was resumed.
    async fn handshake(&self) -> anyhow::Result<(TlsStream<TcpStream>, bool)> {
        let tcp = TcpStream::connect(self.connect).await.context("connect")?;
        tcp.set_nodelay(true)?;
        let tls = self
            .connector
            .connect(self.sni.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let (_, conn) = tls.get_ref();
        let resumed = match conn.handshake_kind() {
            Some(HandshakeKind::Resumed) => true,
            Some(HandshakeKind::Full | HandshakeKind::FullWithHelloRetryRequest) => false,
            None => bail!("handshake finished without a handshake kind"),
        };
        let want: &[u8] = match self.proto {
            Proto::H1 => b"http/1.1",
            Proto::H2 => b"h2",
        };
        if let Some(alpn) = conn.alpn_protocol()
            && alpn != want
        {
            bail!("server chose ALPN {:?}", String::from_utf8_lossy(alpn));
        }
        if self.proto == Proto::H2 && conn.alpn_protocol().is_none() {
            bail!("server did not negotiate h2");
        }
        Ok((tls, resumed))
    }

    async fn open(&self, stats: &mut Stats) -> anyhow::Result<Sender> {
        let (tls, resumed) = self.handshake().await?;
        stats.handshake(resumed);
        let io = TokioIo::new(tls);
        Ok(match self.proto {
            Proto::H1 => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Sender::H1(sender)
            }
            Proto::H2 if self.grpc.is_some() => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Sender::Grpc(sender)
            }
            Proto::H2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Sender::H2(sender)
            }
        })
    }

    /// Sends one request (or gRPC call) on `sender` and reads the whole response: the HTTP status, and for a gRPC
    /// call whether it failed (not 200, `grpc-status` missing or not 0, or the message not echoed back).
    async fn call(&self, sender: &mut Sender, close: bool) -> anyhow::Result<(u16, bool)> {
        let Sender::Grpc(s) = sender else {
            return Ok((sender.send(self.request(close)?).await?, false));
        };
        let frame = self.grpc.clone().expect("a gRPC target");
        let req = Request::post(format!("https://{}/bench.Echo/Unary", self.host))
            .header(CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Full::new(frame.clone()))?;
        s.ready().await?;
        let resp = s.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await?;
        let ok = parts.status == 200
            && grpc_status(&parts.headers, collected.trailers()) == Some("0")
            && collected.to_bytes() == frame;
        Ok((parts.status.as_u16(), !ok))
    }

    fn request(&self, close: bool) -> anyhow::Result<Request<Empty<Bytes>>> {
        let builder = match self.proto {
            Proto::H1 => {
                let b = Request::get(self.path.as_str()).header(hyper::header::HOST, self.host.as_str());
                if close {
                    b.header(hyper::header::CONNECTION, "close")
                } else {
                    b
                }
            }
            Proto::H2 => Request::get(format!("https://{}{}", self.host, self.path)),
        };
        Ok(builder.body(Empty::new())?)
    }
}

impl Sender {
    /// Sends one request and reads the whole response; returns the status code.
    async fn send(&mut self, req: Request<Empty<Bytes>>) -> anyhow::Result<u16> {
        let resp = match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::Grpc(_) => bail!("a gRPC connection sends gRPC calls only"),
        };
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        Ok(status)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics

struct Stats {
    hist: Histogram<u64>,
    requests: u64,
    non_2xx: u64,
    errors: u64,
    full: u64,
    resumed: u64,
    grpc_failures: u64,
    error_samples: Vec<String>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
            requests: 0,
            non_2xx: 0,
            errors: 0,
            full: 0,
            resumed: 0,
            grpc_failures: 0,
            error_samples: Vec::new(),
        }
    }

    fn handshake(&mut self, resumed: bool) {
        if resumed {
            self.resumed += 1;
        } else {
            self.full += 1;
        }
    }

    fn done(&mut self, started: Instant, (status, grpc_failed): (u16, bool)) {
        self.hist.saturating_record(started.elapsed().as_micros() as u64);
        self.requests += 1;
        if !(200..300).contains(&status) {
            self.non_2xx += 1;
        }
        if grpc_failed {
            self.grpc_failures += 1;
        }
    }

    fn error(&mut self, err: anyhow::Error) {
        self.errors += 1;
        if self.error_samples.len() < 3 {
            self.error_samples.push(format!("{err:#}"));
        }
    }

    fn merge(&mut self, other: Stats) {
        self.hist.add(&other.hist).expect("same histogram bounds");
        self.requests += other.requests;
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        self.full += other.full;
        self.resumed += other.resumed;
        self.grpc_failures += other.grpc_failures;
        for e in other.error_samples {
            if self.error_samples.len() < 5 && !self.error_samples.contains(&e) {
                self.error_samples.push(e);
            }
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn emit(value: &serde_json::Value, out: Option<&Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    println!("{text}");
    if let Some(path) = out {
        std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// run

async fn keepalive_worker(target: Arc<Target>, deadline: Instant) -> Stats {
    let mut stats = Stats::new();
    'connect: while Instant::now() < deadline {
        let mut sender = match target.open(&mut stats).await {
            Ok(s) => s,
            Err(err) => {
                stats.error(err);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while Instant::now() < deadline {
            let started = Instant::now();
            match target.call(&mut sender, false).await {
                Ok(outcome) => stats.done(started, outcome),
                Err(err) => {
                    stats.error(err);
                    continue 'connect;
                }
            }
        }
    }
    stats
}

/// Several concurrent streams over one HTTP/2 connection (keepalive mode, --streams > 1). A stream that fails
/// ends; the others go on.
async fn h2_streams_worker(target: Arc<Target>, deadline: Instant, streams: usize) -> Stats {
    let mut stats = Stats::new();
    let sender = match target.open(&mut stats).await {
        Ok(s) => s,
        Err(err) => {
            stats.error(err);
            return stats;
        }
    };
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut sender = match &sender {
            Sender::H2(s) => Sender::H2(s.clone()),
            Sender::Grpc(s) => Sender::Grpc(s.clone()),
            Sender::H1(_) => unreachable!("--streams needs --http 2"),
        };
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                match target.call(&mut sender, false).await {
                    Ok(outcome) => stats.done(started, outcome),
                    Err(err) => {
                        stats.error(err);
                        break;
                    }
                }
            }
            stats
        }));
    }
    for task in tasks {
        if let Ok(s) = task.await {
            stats.merge(s);
        }
    }
    stats
}

async fn handshake_worker(target: Arc<Target>, deadline: Instant) -> Stats {
    let mut stats = Stats::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        let result = async {
            let mut sender = target.open(&mut stats).await?;
            target.call(&mut sender, true).await
        }
        .await;
        match result {
            Ok(outcome) => stats.done(started, outcome),
            Err(err) => stats.error(err),
        }
    }
    stats
}

async fn run(mut args: RunArgs) -> anyhow::Result<()> {
    if args.grpc {
        args.mode = Mode::Grpc;
    }
    if args.mode == Mode::Grpc {
        args.tls.http = Proto::H2;
    }
    if args.streams > 1 && (args.tls.http != Proto::H2 || !matches!(args.mode, Mode::Keepalive | Mode::Grpc)) {
        bail!("--streams > 1 needs --http 2 and --mode keepalive or grpc");
    }
    let mut shared = Target::new(&args.tls, args.mode == Mode::Resumed)?;
    if args.mode == Mode::Grpc {
        shared.grpc = Some(grpc_frame(&vec![b'g'; args.grpc_payload]));
    }
    let shared = Arc::new(shared);
    let mut priming = Stats::new();
    let mut targets = Vec::new();
    for _ in 0..args.connections.max(1) {
        if args.mode == Mode::Resumed {
            // One session cache per loop, primed with one connection before the clock starts: each loop then
            // resumes with the ticket its previous connection received. (One shared cache would run dry: rustls
            // keeps at most 8 TLS 1.3 tickets per server, fewer than the loops using them.)
            let target = Arc::new(Target::new(&args.tls, true)?);
            let mut sender = target.open(&mut priming).await.context("priming connection")?;
            sender.send(target.request(true)?).await.context("priming request")?;
            targets.push(target);
        } else {
            targets.push(shared.clone());
        }
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for target in targets {
        tasks.push(match args.mode {
            Mode::Keepalive | Mode::Grpc if args.streams > 1 => {
                tokio::spawn(h2_streams_worker(target, deadline, args.streams))
            }
            Mode::Keepalive | Mode::Grpc => tokio::spawn(keepalive_worker(target, deadline)),
            Mode::Full | Mode::Resumed => tokio::spawn(handshake_worker(target, deadline)),
        });
    }
    let mut stats = Stats::new();
    for task in tasks {
        stats.merge(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    for e in &stats.error_samples {
        eprintln!("loadgen: error: {e}");
    }
    let hist = &stats.hist;
    let value = json!({
        "label": args.label,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "http": match args.tls.http { Proto::H1 => "1.1", Proto::H2 => "2" },
        "connections": args.connections,
        "streams": args.streams,
        "sni": args.tls.sni,
        "duration_s": elapsed,
        "requests": stats.requests,
        "non_2xx": stats.non_2xx,
        "errors": stats.errors,
        "grpc_failures": stats.grpc_failures,
        "rps": stats.requests as f64 / elapsed,
        "p50_ms": ms(hist.value_at_quantile(0.50)),
        "p99_ms": ms(hist.value_at_quantile(0.99)),
        "p999_ms": ms(hist.value_at_quantile(0.999)),
        "max_ms": ms(hist.max()),
        "mean_ms": hist.mean() / 1000.0,
        "handshakes_full": stats.full,
        "handshakes_resumed": stats.resumed,
        "handshakes_per_s": (stats.full + stats.resumed) as f64 / elapsed,
        // Handshakes done before the clock started (resumed mode: one per loop, to get its first ticket); a
        // server-side handshake count over the whole run includes them.
        "priming_handshakes_full": priming.full,
        "priming_handshakes_resumed": priming.resumed,
        "error_samples": stats.error_samples,
    });
    emit(&value, args.out.as_deref())
}

// ---------------------------------------------------------------------------------------------------------------
// idle

async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let target = Arc::new(Target::new(&args.tls, false)?);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let total = args.connections as u64;
    let mut tasks = Vec::new();
    for _ in 0..args.parallel.max(1) {
        let target = target.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            let mut held = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let opened = Instant::now();
                let result = async {
                    let mut sender = target.open(&mut stats).await?;
                    let outcome = target.call(&mut sender, false).await?;
                    Ok::<_, anyhow::Error>((sender, outcome))
                }
                .await;
                match result {
                    Ok((sender, outcome)) => {
                        stats.done(opened, outcome);
                        held.push(sender);
                    }
                    Err(err) => stats.error(err),
                }
            }
            (stats, held)
        }));
    }
    let mut stats = Stats::new();
    let mut held = Vec::new();
    for task in tasks {
        let (s, h) = task.await?;
        stats.merge(s);
        held.extend(h);
    }
    let setup = started.elapsed().as_secs_f64();
    eprintln!(
        "loadgen: {} connections open after {setup:.1} s ({} errors)",
        held.len(),
        stats.errors
    );
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", held.len()))?;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    // Check the connections are still there: a closed one fails its ready() at once.
    let mut alive = 0u64;
    for sender in &mut held {
        let ok = match sender {
            Sender::H1(s) => !s.is_closed(),
            Sender::H2(s) => !s.is_closed(),
            Sender::Grpc(s) => !s.is_closed(),
        };
        if ok {
            alive += 1;
        }
    }
    for e in &stats.error_samples {
        eprintln!("loadgen: error: {e}");
    }
    let value = json!({
        "label": args.label,
        "mode": "idle",
        "http": match args.tls.http { Proto::H1 => "1.1", Proto::H2 => "2" },
        "requested": args.connections,
        "opened": held.len(),
        "alive_after_hold": alive,
        "errors": stats.errors,
        "setup_s": setup,
        "hold_s": args.hold,
        "handshakes_full": stats.full,
        "handshakes_resumed": stats.resumed,
        "error_samples": stats.error_samples,
    });
    drop(held);
    emit(&value, args.out.as_deref())
}

// ---------------------------------------------------------------------------------------------------------------
// origin

async fn origin(args: OriginArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    if args.grpc {
        return grpc_origin(listener, args.listen).await;
    }
    let body = Bytes::from(vec![b'x'; args.body_bytes]);
    eprintln!("loadgen origin: listening on {}", args.listen);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .header(hyper::header::CONTENT_TYPE, "text/plain")
                            .body(Full::new(body))
                            .expect("static response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// The gRPC echo origin: h2c with prior knowledge; every request is answered 200 with `content-type:
/// application/grpc`, the request body (a gRPC message) echoed as the response body, and trailers `grpc-status: 0`.
/// A request whose body is not one whole gRPC message gets `grpc-status: 3` (INVALID_ARGUMENT) instead.
async fn grpc_origin(listener: tokio::net::TcpListener, addr: SocketAddr) -> anyhow::Result<()> {
    eprintln!("loadgen origin: gRPC (h2c) listening on {addr}");
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                let body = req.into_body().collect().await?.to_bytes();
                let whole = body.len() >= 5
                    && body[0] == 0
                    && u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize == body.len() - 5;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static(if whole { "0" } else { "3" }));
                let body = if whole { body } else { Bytes::new() };
                let body = Full::new(body).with_trailers(async move { Some(Ok(trailers)) });
                Ok::<_, hyper::Error>(
                    Response::builder()
                        .header(CONTENT_TYPE, "application/grpc")
                        .body(body)
                        .expect("static response"),
                )
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
