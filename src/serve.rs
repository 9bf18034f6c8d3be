//! `portcullis serve`: opens the store, bootstraps first-start state (master key, managed CA, admin token) and runs
//! the admin listener until SIGTERM or Ctrl-C.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use portcullis_admin::{AdminSettings, AdminState};
use portcullis_pki::{CaParams, ManagedCa, MasterKey};
use portcullis_store::{Actor, NewManagedCa, Store, TokenScope};

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::Matcher;

use crate::edge::{self, DevEdgeCa, EdgeBuilder, StoreEvents};

/// How often the metrics recorder folds the histogram samples recorded since into its buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// Upper bounds (seconds) of `portcullis_request_duration_seconds`' buckets: a Prometheus histogram rather than the
/// exporter's default summary, because buckets add up across a fleet of edge nodes and quantiles do not. From a
/// quarter of a millisecond (a keep-alive request to a nearby origin) to the default response timeout's range.
const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Options of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Where Portcullis keeps its SQLite database, master key and admin token.
    #[arg(long, env = "PORTCULLIS_DATA_DIR", default_value = "portcullis-data")]
    pub data_dir: PathBuf,
    /// Use this database instead of SQLite in the data directory (postgres://… for a fleet of nodes).
    #[arg(long, env = "PORTCULLIS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Address of the edge (TLS) listener. Repeat it (or separate addresses with commas) to listen on several
    /// addresses or ports, e.g. `--listen 0.0.0.0:443 --listen [::]:443`.
    #[arg(
        long,
        env = "PORTCULLIS_LISTEN",
        default_value = "0.0.0.0:8443",
        value_delimiter = ',',
        num_args = 1
    )]
    pub listen: Vec<SocketAddr>,
    /// Hostname whose configuration answers handshakes without SNI or with an unknown one; without it they are
    /// refused.
    #[arg(long, env = "PORTCULLIS_DEFAULT_HOST")]
    pub default_host: Option<String>,
    /// Address of the admin API. It carries secrets: keep it on localhost unless you know why not.
    #[arg(long, env = "PORTCULLIS_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// Serve the admin API and dashboard over TLS with this certificate chain (PEM, leaf first), for an admin
    /// listener reached from other machines. Read again when the file or the key changes.
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_TLS_CERT",
        requires = "admin_tls_key",
        value_name = "FILE"
    )]
    pub admin_tls_cert: Option<PathBuf>,
    /// The key of --admin-tls-cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_TLS_KEY",
        requires = "admin_tls_cert",
        value_name = "FILE"
    )]
    pub admin_tls_key: Option<PathBuf>,
    /// With --admin-tls-cert: require every admin client (CLI, dashboard's browser) to present a certificate from
    /// these CAs (PEM) before any request, besides its token.
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_CLIENT_CA",
        requires = "admin_tls_cert",
        value_name = "FILE"
    )]
    pub admin_client_ca: Option<PathBuf>,
    /// Address of an EST listener (RFC 7030, HTTPS): clients renew their own certificates with the certificate they
    /// renew, no API token (`POST /.well-known/est/simplereenroll`, `GET /.well-known/est/cacerts`). Needs
    /// --est-tls-cert and --est-tls-key.
    #[arg(
        long,
        env = "PORTCULLIS_EST_LISTEN",
        requires_all = ["est_tls_cert", "est_tls_key"],
        value_name = "ADDR"
    )]
    pub est_listen: Option<SocketAddr>,
    /// The EST listener's certificate chain (PEM, leaf first), for the name clients reach it by. Read again when the
    /// file or the key changes.
    #[arg(long, env = "PORTCULLIS_EST_TLS_CERT", requires = "est_listen", value_name = "FILE")]
    pub est_tls_cert: Option<PathBuf>,
    /// The key of --est-tls-cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, env = "PORTCULLIS_EST_TLS_KEY", requires = "est_listen", value_name = "FILE")]
    pub est_tls_key: Option<PathBuf>,
    /// How old a client certificate must be before EST renews it, in seconds (1 to 31536000); with each
    /// certificate renewed once, this bounds how fast a client can make new ones.
    #[arg(
        long,
        env = "PORTCULLIS_EST_RENEW_AFTER",
        value_name = "SECONDS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(u32).range(1..=31_536_000)
    )]
    pub est_renew_after: u32,
    /// Most active, unexpired client certificates per zone (Cloudflare's error 1445 past it).
    #[arg(long, default_value_t = 100_000)]
    pub client_certificate_quota: u32,
    /// Remove client certificates' records this many days after they expire, checked hourly (e.g. 90); 0, the
    /// default, keeps them. An expired certificate fails verification and has left its CA's CRL already.
    #[arg(long, value_name = "DAYS", default_value_t = 0)]
    pub tidy_expired_after: u32,
    /// Most bring-your-own CAs (Cloudflare's error 1489 past it).
    #[arg(long, default_value_t = 100)]
    pub ca_limit: u32,
    /// Public base URL under which `/crl/<ca-id>.crl` is reachable; written into issued certificates as their CRL
    /// distribution point. Without it, certificates carry none.
    #[arg(long, env = "PORTCULLIS_CRL_BASE_URL")]
    pub crl_base_url: Option<String>,
    /// Public base URL under which `/ocsp/<ca-id>` (the managed CA's OCSP responder, on the admin and public
    /// listeners) is reachable; written into issued certificates as their OCSP responder. Without it, certificates
    /// name none.
    #[arg(long, env = "PORTCULLIS_OCSP_BASE_URL")]
    pub ocsp_base_url: Option<String>,
    /// Address of a public plain-HTTP listener that serves only the CRLs (`/crl/<ca-id>.crl`, for the relying
    /// parties behind --crl-base-url), the OCSP responders (`/ocsp/<ca-id>`, behind --ocsp-base-url) and the health
    /// checks `/healthz` and `/readyz` (for load balancers). The admin listener serves them too, but belongs on
    /// localhost. On port 80 it is also the edge's plain-HTTP side: ACME HTTP-01 answers, and a redirect to HTTPS
    /// for requests to the edge's hostnames.
    #[arg(long, env = "PORTCULLIS_PUBLIC_LISTEN")]
    pub public_listen: Option<SocketAddr>,
    /// The HTTPS port the public listener's redirects name: by default the first --listen port (set 443 when a
    /// load balancer or NAT maps 443 to the edge's port).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub https_port: Option<u16>,
    /// How often uploaded CAs' CRLs are fetched from their URLs (`crl_urls`), in seconds; a failed fetch is tried
    /// again within a minute.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub crl_refresh: u64,
    /// The ACME directory that certificate packs (`acme order`) get their certificates from: Let's Encrypt by
    /// default, or a private ACME CA (step-ca, …). Ordering a pack agrees to its terms of service.
    #[arg(long, env = "PORTCULLIS_ACME_DIRECTORY", default_value = crate::acme::LETS_ENCRYPT, help_heading = "ACME")]
    pub acme_directory: String,
    /// A contact for the ACME account (an email address or a mailto: URI); repeat for several.
    #[arg(long, env = "PORTCULLIS_ACME_CONTACT", value_delimiter = ',', help_heading = "ACME")]
    pub acme_contact: Vec<String>,
    /// A PEM root certificate to trust for the ACME directory's HTTPS instead of the system's (a private ACME CA).
    #[arg(long, env = "PORTCULLIS_ACME_CA_FILE", help_heading = "ACME")]
    pub acme_ca_file: Option<PathBuf>,
    /// External Account Binding key id, for ACME CAs that require one (ZeroSSL, Google Trust Services, SSL.com).
    /// Its HMAC key (base64url, as the CA gives it) is read from the environment only, PORTCULLIS_ACME_EAB_HMAC_KEY,
    /// so that it shows in no process listing.
    #[arg(long, env = "PORTCULLIS_ACME_EAB_KID", help_heading = "ACME")]
    pub acme_eab_kid: Option<String>,
    /// This node never orders or renews certificates over ACME (another node of the fleet does, e.g. one that may
    /// reach the ACME directory); it still serves the validation answers and the certificates.
    #[arg(long, help_heading = "ACME")]
    pub no_acme: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The edge's limits; every default is the proxy's safe default.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Edge limits")]
pub struct LimitArgs {
    /// Most client connections open at once (accepting pauses at the limit).
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Seconds for the whole TLS handshake.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Seconds to receive an HTTP/1.1 request's headers (slowloris).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub header_read_timeout: u64,
    /// Seconds an HTTP/1.1 response write may wait for a client that does not read (slow reads).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub send_timeout: u64,
    /// Most headers in an HTTP/1.1 request.
    #[arg(long, default_value_t = 100)]
    pub max_request_headers: usize,
    /// Largest HTTP/2 header block, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024)]
    pub max_header_list_size: u32,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, default_value_t = 128)]
    pub h2_max_concurrent_streams: u32,
    /// Seconds a connection may sit without a request before it is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub idle_timeout: u64,
    /// Seconds after which a connection is closed gracefully, however busy.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub max_connection_age: u64,
    /// Seconds to connect to an origin (then 502).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub upstream_connect_timeout: u64,
    /// Seconds for an origin's response headers (then 504).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub upstream_response_timeout: u64,
    /// Seconds a response body from an origin, or a WebSocket tunnel, may carry no byte before it is cut off
    /// (Envoy's stream_idle_timeout, NGINX's proxy_read_timeout); 0: never.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub stream_idle_timeout: u64,
    /// Largest request body, in bytes (then 413).
    #[arg(long, value_name = "BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_request_body: u64,
    /// Seconds to wait for each piece of a request body (then 408).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub request_body_timeout: u64,
    /// Seconds a query to an uploaded CA's OCSP responder may take (`ca ocsp`); a connection waits for it before its
    /// first request, then its CA's policy decides.
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub ocsp_timeout: u64,
    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Threads serving edge connections, each with its own event loop [default: the CPUs this process may run on].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub edge_threads: Option<u16>,
    /// Load balancers (IP or CIDR; repeat or comma-separate) whose connections start with a PROXY protocol header
    /// (v1 or v2) naming the client, as AWS NLB and HAProxy send it; the header is required from them and never
    /// read from anyone else.
    #[arg(long, value_name = "CIDR", value_parser = proxy_cidrs, help_heading = "Edge")]
    pub proxy_protocol_from: Vec<String>,
    /// A request header in which front proxies that terminate TLS themselves (AWS ALB in mTLS passthrough mode,
    /// NGINX, a CDN) pass the client's certificate: read only on connections from `--client-cert-header-from`,
    /// where on mTLS hosts it is verified and judged as if the client had presented it to the edge (their own
    /// certificates never count as a client's; `require` and `verify_if_given` answer 403 for what their handshake
    /// would refuse); removed from every request before the origin. RFC 9440 (`Client-Cert`, with
    /// `Client-Cert-Chain`), PEM or URL-encoded PEM, or base64 DER.
    #[arg(long, value_name = "NAME", value_parser = cert_header_name, requires = "client_cert_header_from", help_heading = "Edge")]
    pub client_cert_header: Option<String>,
    /// The front proxies (IP or CIDR; repeat or comma-separate) whose `--client-cert-header` is read.
    #[arg(long, value_name = "CIDR", value_parser = front_proxy_cidrs, requires = "client_cert_header", help_heading = "Edge")]
    pub client_cert_header_from: Vec<String>,
    /// A request header in which front proxies name the client's address: `X-Forwarded-For`, `Forwarded` (RFC
    /// 7239), or a one-address header such as `X-Real-IP` or `CF-Connecting-IP`. Read only on connections from
    /// `--client-ip-header-from`, from the right: the first address that is not one of those proxies becomes
    /// `ip.src`, the address rate limits count, and the one events, logs and `True-Client-IP` name.
    #[arg(long, value_name = "NAME", value_parser = ip_header_name, requires = "client_ip_header_from", help_heading = "Edge")]
    pub client_ip_header: Option<String>,
    /// The front proxies (IP or CIDR; repeat or comma-separate) whose `--client-ip-header` is read.
    #[arg(long, value_name = "CIDR", value_parser = front_proxy_cidrs, requires = "client_ip_header", help_heading = "Edge")]
    pub client_ip_header_from: Vec<String>,
}

/// The environment variable that holds the EAB HMAC key.
const EAB_KEY_ENV: &str = "PORTCULLIS_ACME_EAB_HMAC_KEY";

/// The External Account Binding: `--acme-eab-kid` and the HMAC key from the environment, both or neither. No error
/// quotes the key.
fn acme_eab(args: &ServeArgs) -> anyhow::Result<Option<(String, zeroize::Zeroizing<Vec<u8>>)>> {
    let key = std::env::var(EAB_KEY_ENV).ok().map(zeroize::Zeroizing::new);
    match (&args.acme_eab_kid, key) {
        (None, None) => Ok(None),
        (Some(kid), Some(key)) => {
            let key = crate::acme::decode_eab_key(&key).map_err(|e| anyhow::anyhow!("{EAB_KEY_ENV}: {e}"))?;
            Ok(Some((kid.clone(), key)))
        }
        (Some(_), None) => anyhow::bail!("--acme-eab-kid needs the HMAC key in the environment, {EAB_KEY_ENV}"),
        (None, Some(_)) => anyhow::bail!("{EAB_KEY_ENV} is set but --acme-eab-kid is not: give both or neither"),
    }
}

fn cert_header_name(text: &str) -> Result<String, String> {
    portcullis_proxy::ClientCertHeader::header_name(text).map(|_| text.to_owned())
}

fn ip_header_name(text: &str) -> Result<String, String> {
    portcullis_proxy::ClientIpHeader::header_name(text).map(|_| text.to_owned())
}

/// As [`proxy_cidrs`], and naming at least one address: an empty value (an unset variable) must not leave the
/// header unread, and so unstripped.
fn front_proxy_cidrs(text: &str) -> Result<String, String> {
    match portcullis_proxy::TrustedProxies::parse([text]) {
        Ok(list) if list.is_empty() => Err("names no address".into()),
        Ok(_) => Ok(text.to_owned()),
        Err(e) => Err(e),
    }
}

fn proxy_cidrs(text: &str) -> Result<String, String> {
    portcullis_proxy::TrustedProxies::parse([text]).map(|_| text.to_owned())
}

/// The addresses of CIDR flags already checked by [`proxy_cidrs`] or [`front_proxy_cidrs`].
fn trusted(items: &[String]) -> portcullis_proxy::TrustedProxies {
    portcullis_proxy::TrustedProxies::parse(items.iter().map(String::as_str)).unwrap_or_default()
}

impl LimitArgs {
    /// The proxy's configuration with these limits.
    pub fn proxy_config(&self) -> portcullis_proxy::ProxyConfig {
        use std::time::Duration;
        portcullis_proxy::ProxyConfig {
            max_connections: self.max_connections,
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            h1_header_read_timeout: Duration::from_secs(self.header_read_timeout),
            h1_send_timeout: Duration::from_secs(self.send_timeout),
            h1_max_headers: self.max_request_headers,
            h2_max_header_list_size: self.max_header_list_size,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_connection_age: Duration::from_secs(self.max_connection_age),
            upstream_connect_timeout: Duration::from_secs(self.upstream_connect_timeout),
            upstream_response_timeout: Duration::from_secs(self.upstream_response_timeout),
            stream_idle_timeout: Duration::from_secs(self.stream_idle_timeout),
            drain_timeout: Duration::from_secs(self.drain_timeout),
            max_request_body_bytes: self.max_request_body,
            request_body_timeout: Duration::from_secs(self.request_body_timeout),
            ocsp_timeout: Duration::from_secs(self.ocsp_timeout),
            // Linux's answer honours the affinity mask (taskset, cgroup cpusets).
            worker_threads: self.edge_threads.map_or_else(
                || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
                usize::from,
            ),
            // Each value was checked when the arguments were parsed, and each header flag requires its `-from`.
            proxy_protocol_from: trusted(&self.proxy_protocol_from),
            client_cert_header: self.client_cert_header.as_deref().and_then(|name| {
                portcullis_proxy::ClientCertHeader::new(name, trusted(&self.client_cert_header_from)).ok()
            }),
            client_ip_header: self.client_ip_header.as_deref().and_then(|name| {
                portcullis_proxy::ClientIpHeader::new(name, trusted(&self.client_ip_header_from)).ok()
            }),
            ..portcullis_proxy::ProxyConfig::default()
        }
    }
}

/// Everything `serve` starts from, ready to run.
pub struct Bootstrapped {
    pub store: Store,
    pub master_key: Arc<MasterKey>,
    /// The admin token's secret when this start created it (first start), so it can be shown once.
    pub new_admin_token: Option<String>,
}

/// Creates the data directory, loads or makes the master key, opens the store, and creates the managed CA and the
/// first admin token when they do not exist yet.
pub async fn bootstrap(args: &ServeArgs) -> anyhow::Result<Bootstrapped> {
    create_private_dir(&args.data_dir)?;
    let master_key = Arc::new(load_master_key(&args.data_dir)?);
    let store = match &args.database_url {
        Some(url) => Store::open(url).await.with_context(|| "opening the database")?,
        None => {
            let path = args.data_dir.join("portcullis.db");
            Store::open_sqlite(&path)
                .await
                .with_context(|| format!("opening {}", path.display()))?
        }
    };

    if store.active_managed_ca().await?.is_none() {
        let now = time::OffsetDateTime::now_utc();
        let ca = ManagedCa::create(&CaParams::default(), now).context("creating the managed CA")?;
        store
            .add_managed_ca(
                NewManagedCa {
                    id: ca.id().to_owned(),
                    name: ca.name().to_owned(),
                    certificate: ca.certificate_pem(),
                    sealed_key: ca.sealed_key(&master_key),
                    key_type: ca.key_type().as_str().to_owned(),
                    chain: String::new(),
                },
                &Actor::system(),
            )
            .await?;
        tracing::info!(ca = ca.name(), "created the managed CA");
    }

    let mut new_admin_token = None;
    if store.list_tokens().await?.is_empty() {
        let (token, secret) = store
            .create_token("admin", TokenScope::Write, &Default::default(), &Actor::system())
            .await?;
        // A token file left from an earlier database names a token that no longer exists: replace it.
        let path = args.data_dir.join("admin-token");
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::warn!(path = %path.display(), "replaced a stale admin token file"),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("removing {}", path.display())),
        }
        write_private_file(&path, format!("{secret}\n").as_bytes())?;
        tracing::info!(token_id = token.id, "created the first admin token");
        new_admin_token = Some(secret);
    }
    Ok(Bootstrapped {
        store,
        master_key,
        new_admin_token,
    })
}

/// A started server: its listeners bound and serving.
pub struct Running {
    /// The first edge listener's address.
    pub edge_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub dev_ca_path: PathBuf,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until the server stops (SIGTERM or Ctrl-C, after draining).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task failed")?
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    start(&args).await?.wait().await
}

/// Bootstraps, builds the first edge snapshot, binds both listeners and serves in the background.
pub async fn start(args: &ServeArgs) -> anyhow::Result<Running> {
    if let Some(host) = args.default_host.as_deref().filter(|h| h.starts_with("*.")) {
        // Clients without SNI name no host a wildcard could stand for: every request would be misdirected. Refused
        // before anything is created in the data directory.
        anyhow::bail!(
            "--default-host {host:?}: a wildcard hostname cannot be the default host; give an exact hostname"
        );
    }
    let eab = acme_eab(args)?;
    // Loaded before the data directory is touched or anything is bound: a certificate that does not load stops the
    // start, naming the file.
    let admin_tls = match (&args.admin_tls_cert, &args.admin_tls_key) {
        (Some(cert), Some(key)) => {
            let cert = crate::admin_tls::FileCert::load("admin listener", cert, key)
                .context("the admin listener's certificate")?;
            let client_auth = match args.admin_client_ca.as_deref() {
                Some(path) => crate::admin_tls::ClientAuth::Required(path),
                None => crate::admin_tls::ClientAuth::None,
            };
            Some(crate::admin_tls::server_config(cert, client_auth)?)
        }
        _ => None,
    };
    let est_tls = match (&args.est_tls_cert, &args.est_tls_key) {
        (Some(cert), Some(key)) => {
            let cert = crate::admin_tls::FileCert::load("EST listener", cert, key)
                .context("the EST listener's certificate")?;
            Some(crate::admin_tls::server_config(
                cert,
                crate::admin_tls::ClientAuth::Offered,
            )?)
        }
        _ => None,
    };
    let boot = bootstrap(args).await?;
    if let Some(secret) = &boot.new_admin_token {
        // Shown once, on the first start; it is also in <data-dir>/admin-token (mode 0600).
        outln!(
            "admin token (also written to {}): {secret}",
            args.data_dir.join("admin-token").display()
        );
    }
    let state = AdminState::new(
        boot.store.clone(),
        AdminSettings {
            client_certificate_quota: args.client_certificate_quota,
            mtls_certificate_limit: args.ca_limit,
            crl_base_url: args.crl_base_url.clone(),
            ocsp_base_url: args.ocsp_base_url.clone(),
            est_renew_after: i64::from(args.est_renew_after),
        },
        boot.master_key.clone(),
    );
    // Filled by every snapshot build, appended to every scrape.
    let expiry: Arc<std::sync::Mutex<String>> = Arc::default();
    // The snapshot in service; the first build replaces this empty one before anything is served.
    let snapshot = Arc::new(ArcSwap::from_pointee(portcullis_proxy::Snapshot::new(0)));
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(portcullis_proxy::REQUEST_DURATION_SECONDS.to_owned()),
            REQUEST_DURATION_BUCKETS,
        )
        .and_then(|b| b.install_recorder());
    let state = match recorder {
        Ok(handle) => {
            // install_recorder leaves the upkeep to its caller. Without it every histogram sample (one per
            // request) is kept until the next scrape of /metrics: an edge that nobody scrapes grew by about 20
            // bytes per request, over 1 MiB a second under load.
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(METRICS_UPKEEP);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            portcullis_proxy::describe_metrics();
            metrics::describe_counter!(
                "portcullis_snapshot_builds_failed_total",
                "Edge snapshot builds that failed (the previous snapshot stayed in service)"
            );
            metrics::describe_gauge!(
                "portcullis_snapshot_build_failing",
                "1 while the latest edge snapshot build failed (the edge serves an older state until a build succeeds)"
            );
            metrics::describe_counter!(
                "portcullis_acme_orders_total",
                "ACME orders of certificate packs, by outcome (issued, failed)"
            );
            metrics::describe_counter!(
                "portcullis_security_events_dropped_total",
                "Security events dropped because the store writer fell behind"
            );
            // Failure counters are exported at 0 from the start: Prometheus' increase() cannot see a counter's first
            // step from nothing, so an alert on the first failure would never fire.
            for name in [
                "portcullis_snapshot_builds_failed_total",
                "portcullis_security_events_dropped_total",
                "portcullis_crl_fetch_failures_total",
            ] {
                metrics::counter!(name).increment(0);
            }
            for outcome in ["failed", "issued"] {
                metrics::counter!("portcullis_acme_orders_total", "outcome" => outcome).increment(0);
            }
            let expiry = expiry.clone();
            let serving = snapshot.clone();
            state.with_metrics(Arc::new(move || {
                let mut text = handle.render();
                text.push_str(&expiry.lock().unwrap_or_else(|e| e.into_inner()));
                text.push_str(&portcullis_proxy::origin_server_gauges(&serving.load()));
                text
            }))
        }
        Err(err) => {
            tracing::warn!(error = %err, "metrics are off: cannot install the Prometheus recorder");
            state
        }
    };

    // The overview's traffic chart reads the edge's per-minute counters of this process.
    let state = state.with_traffic(Arc::new(EdgeTraffic(&portcullis_proxy::TRAFFIC)));

    // The edge serves from a snapshot; build the first one before accepting anything.
    let builder = Arc::new(EdgeBuilder {
        master_key: boot.master_key.clone(),
        dev_ca: DevEdgeCa::load_or_create(&args.data_dir, &boot.master_key)?,
        default_host: args.default_host.as_ref().map(|h| h.to_ascii_lowercase()),
        sessions: Default::default(),
        origin_health: Default::default(),
        expiry,
    });
    let dev_ca_path = builder.dev_ca.cert_path.clone();
    outln!(
        "development edge CA (for hosts without an uploaded certificate; curl --cacert): {}",
        dev_ca_path.display()
    );
    let first = edge::rebuild(&boot.store, &builder)
        .await
        .context("building the edge configuration")?;
    snapshot.store(Arc::new(first));
    // Set before the listeners open, so that the alert's gauge is there from the first scrape.
    metrics::gauge!("portcullis_snapshot_build_failing").set(0.0);
    tokio::spawn(edge::keep_current(
        boot.store.clone(),
        builder.clone(),
        snapshot.clone(),
    ));
    let events = StoreEvents::start(boot.store.clone());
    if args.tidy_expired_after > 0 {
        tokio::spawn(tidy(boot.store.clone(), args.tidy_expired_after));
    }
    tokio::spawn(crate::crl_fetch::run(
        boot.store.clone(),
        std::time::Duration::from_secs(args.crl_refresh),
    ));

    let mut edge_listeners = Vec::with_capacity(args.listen.len());
    for addr in &args.listen {
        let listener =
            bind_edge(*addr, &args.listen).with_context(|| format!("binding the edge listener to {addr}"))?;
        edge_listeners.push(listener);
    }
    let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener to {}", args.admin_listen))?;
    let public_listener = match args.public_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the public listener to {addr}"))?,
        ),
        None => None,
    };
    let est_listener = match args.est_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the EST listener to {addr}"))?,
        ),
        None => None,
    };
    let edge_addrs = edge_listeners
        .iter()
        .map(tokio::net::TcpListener::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let edge_addr = edge_addrs[0];
    let admin_addr = admin_listener.local_addr()?;
    if !admin_addr.ip().is_loopback() && admin_tls.is_none() {
        tracing::warn!(
            %admin_addr,
            "the admin API listens beyond localhost over plain HTTP; serve it over TLS (--admin-tls-cert, \
             --admin-tls-key, and --admin-client-ca to require client certificates) or keep it behind a firewall"
        );
    }
    for addr in &edge_addrs {
        outln!("edge listening on https://{addr}");
    }
    // Before the admin API's line, which tests and scripts wait for as the last one.
    if let Some(listener) = &est_listener {
        outln!(
            "EST (client certificate renewal) on https://{}/.well-known/est/",
            listener.local_addr()?
        );
    }
    let admin_scheme = if admin_tls.is_some() { "https" } else { "http" };
    outln!("admin API listening on {admin_scheme}://{admin_addr}/client/v4");
    outln!("dashboard on {admin_scheme}://{admin_addr}/dashboard (sign in with an API token)");
    if let Some(listener) = &public_listener {
        outln!(
            "public listener (CRLs, /healthz, /readyz, ACME HTTP-01, redirects to HTTPS) on http://{}",
            listener.local_addr()?
        );
    }
    tracing::info!(edge_addrs = ?edge_addrs, %admin_addr, backend = boot.store.backend(), "listening");

    // After the listeners are bound: validation reaches the edge.
    if !args.no_acme {
        tokio::spawn(crate::acme::run(
            boot.store.clone(),
            boot.master_key.clone(),
            crate::acme::AcmeSettings {
                directory: args.acme_directory.clone(),
                contact: args
                    .acme_contact
                    .iter()
                    .map(|c| {
                        if c.contains(':') {
                            c.clone()
                        } else {
                            format!("mailto:{c}")
                        }
                    })
                    .collect(),
                ca_file: args.acme_ca_file.clone(),
                eab,
                public_listener: args.public_listen.is_some(),
            },
            snapshot.clone(),
        ));
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Active health checks of origin servers, on this runtime, until shutdown.
    tokio::spawn(portcullis_proxy::run_health_checks(
        snapshot.clone(),
        args.limits.proxy_config(),
        stopped(stop_rx.clone()),
    ));
    let public_snapshot = snapshot.clone();
    let edge = portcullis_proxy::serve_all(
        edge_listeners,
        snapshot,
        args.limits.proxy_config(),
        events,
        stopped(stop_rx.clone()),
    );
    // Not ready once shutdown begins, so that load balancers stop sending new connections while the edge drains.
    let draining = stop_rx.clone();
    let state = state.with_readiness(Arc::new(move || {
        if *draining.borrow() {
            Err("shutting down".to_owned())
        } else {
            Ok(())
        }
    }));
    if let Some(listener) = public_listener {
        // Served until the process exits, not stopped with the others: during the drain, load balancers must
        // read the 503 of /readyz rather than a refused connection they may retry.
        let edge_side = crate::public_listen::EdgeSide {
            snapshot: public_snapshot,
            https_port: args.https_port.unwrap_or(edge_addr.port()),
        };
        tokio::spawn(crate::public_listen::serve(
            listener,
            crate::public_listen::with_edge(portcullis_admin::public_router(state.clone()), edge_side),
            std::future::pending(),
        ));
    }
    if let (Some(listener), Some(config)) = (est_listener, est_tls) {
        let router = portcullis_admin::est::router(state.clone());
        tokio::spawn(crate::admin_tls::serve(
            "EST listener",
            listener,
            router,
            config,
            stopped(stop_rx.clone()),
        ));
    }
    // With the peer's address, for the dashboard's limit on failed sign-ins.
    let admin: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> = match admin_tls {
        Some(config) => Box::pin(crate::admin_tls::serve(
            "admin listener",
            admin_listener,
            portcullis_admin::router(state),
            config,
            stopped(stop_rx),
        )),
        None => Box::pin(
            axum::serve(
                admin_listener,
                portcullis_admin::router(state).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future(),
        ),
    };
    let task = tokio::spawn(async move {
        let (edge, admin) = tokio::join!(edge, admin);
        edge.context("edge listener failed")?;
        admin.context("admin listener failed")?;
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Running {
        edge_addr,
        admin_addr,
        dev_ca_path,
        task,
    })
}

/// Binds one edge listener. An IPv6 wildcard address is made IPv6-only when an IPv4 listener shares its port, so
/// that `--listen 0.0.0.0:443 --listen [::]:443` works (Linux would otherwise give the IPv6 socket IPv4 too, and
/// the second bind would fail); alone, `[::]:443` keeps taking both.
fn bind_edge(addr: SocketAddr, all: &[SocketAddr]) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && all.iter().any(|other| other.is_ipv4() && other.port() == addr.port()) {
        socket.set_only_v6(true)?;
    }
    // As std's and tokio's bind do on Unix: a restart must not wait for the old connections' TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// The proxy's per-minute counters as the admin API's traffic source (a newtype: neither the trait nor the type is
/// this crate's).
struct EdgeTraffic(&'static portcullis_proxy::Traffic);

impl portcullis_admin::TrafficSource for EdgeTraffic {
    fn last_hour(&self, now: i64) -> Vec<portcullis_admin::MinuteCount> {
        self.0
            .last_hour(now)
            .into_iter()
            .map(|m| portcullis_admin::MinuteCount {
                minute_start: m.minute_start,
                requests: m.requests,
                blocked: m.blocked,
            })
            .collect()
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The master key from `PORTCULLIS_MASTER_KEY`, else `<data-dir>/master.key`, made on the first start.
fn load_master_key(data_dir: &Path) -> anyhow::Result<MasterKey> {
    if let Ok(text) = std::env::var("PORTCULLIS_MASTER_KEY") {
        return MasterKey::from_text(&text).context("PORTCULLIS_MASTER_KEY");
    }
    let path = data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => MasterKey::from_text(text.trim()).with_context(|| format!("reading {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate();
            write_private_file(&path, format!("{}\n", key.to_hex()).as_bytes())?;
            tracing::warn!(path = %path.display(), "generated a master key; back it up: CA keys cannot be unsealed without it");
            Ok(key)
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

/// Writes a secret to a new file readable only by its owner; refuses to overwrite an existing one.
fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; refusing to overwrite a secret", path.display())
        }
        Err(err) => return Err(err).with_context(|| format!("creating {}", path.display())),
    };
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("writing {}", path.display()))
}

/// Writes a secret file readable only by its owner, replacing any earlier one.
pub fn write_private_file_replacing(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("removing {}", path.display())),
    }
    write_private_file(path, contents)
}

/// Eight random hex characters, for names of scratch directories.
pub fn random_suffix() -> String {
    let key = MasterKey::generate();
    key.to_hex()[..8].to_owned()
}

/// Removes client certificates `days` after they expire, at start and then hourly (`--tidy-expired-after`). Every
/// node of a fleet may run it: a second run finds nothing and writes nothing.
async fn tidy(store: Store, days: u32) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store
            .tidy_client_certificates(i64::from(days) * 86_400, &Actor::system())
            .await
        {
            Ok(0) => {}
            Ok(removed) => tracing::info!(
                removed,
                days,
                "removed client certificates expired for longer than --tidy-expired-after"
            ),
            Err(e) => tracing::warn!(error = %e, "could not remove long-expired client certificates"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bind_edge;

    #[tokio::test]
    async fn an_ipv6_wildcard_listener_beside_an_ipv4_one_on_the_same_port_binds() {
        let v4 = bind_edge("0.0.0.0:0".parse().unwrap(), &[]).expect("an IPv4 listener");
        let port = v4.local_addr().unwrap().port();
        let v6: std::net::SocketAddr = format!("[::]:{port}").parse().unwrap();
        let v4_addr: std::net::SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
        match socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None) {
            // A machine without IPv6 has nothing to test here.
            Err(_) => {}
            Ok(_) => {
                let both = bind_edge(v6, &[v4_addr, v6]).expect("IPv6-only beside the IPv4 listener");
                assert_eq!(both.local_addr().unwrap().port(), port);
            }
        }
    }
}
