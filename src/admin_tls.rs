//! TLS on the admin listener (`serve --admin-tls-cert FILE --admin-tls-key FILE [--admin-client-ca FILE]`): the
//! API's tokens and the dashboard's sign-in cross the network encrypted when the admin API has to be reached from
//! other machines (a fleet's operators, `portcullis apply` in CI), without a TLS-terminating proxy in front, which
//! would also hide the client's address from tokens limited to addresses. With `--admin-client-ca`, a client must
//! also present a certificate from those CAs before any request is read: a second factor beside the token.
//!
//! The certificate and key are read again when either file has changed, looked at by a new connection's handshake
//! at most every [`RECHECK_EVERY`], so a renewal (certbot, cert-manager, an ACME client) needs no restart and is
//! served from the next connection on; a pair that does not load is logged and the one in service stays. Client
//! CAs are read at start. HTTP/1.1 only: the API and the dashboard need nothing more.
//!
//! The EST listener (`serve --est-listen ADDR --est-tls-cert FILE --est-tls-key FILE`) is served the same way, with
//! client certificates asked for but not required: its routes (the admin crate's `est`) decide who may renew.
//!
//! Not here: what the API serves (the admin crate), plain HTTP (axum's own server, as without these options).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;

/// How often at most a handshake looks at the certificate and key files' modification times.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// Connections served at once; past it, new ones are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// Time for a client to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Time in-flight requests get to finish once the server stops.
const DRAIN: Duration = Duration::from_secs(10);
/// A connection's whole life, keep-alive included: without it, connections left idle after one request would hold
/// the slots. Clients (the CLI, a browser, `events -f`) simply connect again.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// A listener's certificate (the admin or the EST listener's), as last loaded from its files.
pub struct FileCert {
    /// The listener, for log lines ("admin listener").
    name: &'static str,
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The files' modification times when `current` was loaded, and when they were last looked at.
    loaded: Mutex<Stamps>,
}

struct Stamps {
    files: (FileStamp, FileStamp),
    checked: Instant,
}

/// A file's modification time and length: a rewrite within the clock's resolution still changes one of them.
type FileStamp = Option<(SystemTime, u64)>;

impl std::fmt::Debug for FileCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn stamp(path: &Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The chain (PEM, leaf first) and its key (PEM: PKCS#8, SEC1 or PKCS#1), checked to belong together.
fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let (chain, key_der) = read_pem_pair(cert, key)?;
    CertifiedKey::from_der(chain, key_der, &provider())
        .with_context(|| format!("{} and {} do not make a usable pair", cert.display(), key.display()))
}

/// A certificate chain (PEM, leaf first) and a key (PEM: PKCS#8, SEC1 or PKCS#1) from their files; also the CLI's
/// client certificate for an admin listener that asks for one. Errors name the file.
pub fn read_pem_pair(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading the certificates in {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no CERTIFICATE", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the key in {}", key.display()))?;
    Ok((chain, key))
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

impl FileCert {
    /// Loads the pair; an error names the file and what is wrong with it.
    pub fn load(name: &'static str, cert: &Path, key: &Path) -> anyhow::Result<Arc<FileCert>> {
        let stamps = (stamp(cert), stamp(key));
        let pair = load_pair(cert, key)?;
        Ok(Arc::new(FileCert {
            name,
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(pair),
            loaded: Mutex::new(Stamps {
                files: stamps,
                checked: Instant::now(),
            }),
        }))
    }

    /// Loads the pair again if either file changed since the last load, looking at most every [`RECHECK_EVERY`].
    /// A pair that does not load is logged once (until a file changes again) and the one in service stays.
    fn refresh(&self) {
        // Another handshake is looking: this one serves the pair in service rather than wait.
        let Ok(mut loaded) = self.loaded.try_lock() else {
            return;
        };
        if loaded.checked.elapsed() < RECHECK_EVERY {
            return;
        }
        loaded.checked = Instant::now();
        let stamps = (stamp(&self.cert), stamp(&self.key));
        if loaded.files == stamps {
            return;
        }
        loaded.files = stamps;
        match load_pair(&self.cert, &self.key) {
            Ok(pair) => {
                self.current.store(Arc::new(pair));
                tracing::info!(cert = %self.cert.display(), "{}: certificate reloaded", self.name);
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "{}: the changed certificate or key does not load; the previous one stays in service",
                self.name
            ),
        }
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A stat of two files at most once a second; they are read only when they changed.
        self.refresh();
        Some(self.current.load_full())
    }
}

/// What a listener asks of its clients' certificates.
#[derive(Debug, Clone, Copy)]
pub enum ClientAuth<'a> {
    /// Nothing.
    None,
    /// A certificate from the CAs in this PEM file, before any request.
    Required(&'a Path),
    /// A certificate if the client has one, any issuer (its handshake signature is checked): the routes judge it.
    Offered,
}

/// Asks for a client certificate and takes any whose handshake signature verifies, for routes that judge the
/// certificate themselves (EST: a chain to a managed CA, on record, active).
#[derive(Debug)]
struct OfferedClientAuth {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::server::danger::ClientCertVerifier for OfferedClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The listener's TLS configuration: `cert` for every name, TLS 1.2 and 1.3, and what `client_auth` asks of
/// clients.
pub fn server_config(cert: Arc<FileCert>, client_auth: ClientAuth<'_>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let builder = match client_auth {
        ClientAuth::Offered => builder.with_client_cert_verifier(Arc::new(OfferedClientAuth {
            algorithms: provider.signature_verification_algorithms,
        })),
        ClientAuth::Required(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(path).with_context(|| format!("reading {}", path.display()))? {
                let ca = ca.with_context(|| format!("reading the certificates in {}", path.display()))?;
                roots
                    .add(ca)
                    .with_context(|| format!("a CA certificate in {}", path.display()))?;
            }
            if roots.is_empty() {
                bail!("{} holds no CERTIFICATE", path.display());
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("the admin client CA")?;
            builder.with_client_cert_verifier(verifier)
        }
        ClientAuth::None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listener` until `stop`, then lets in-flight requests finish for up to [`DRAIN`].
/// `name` ("admin listener") starts its log lines.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: axum::Router,
    config: Arc<rustls::ServerConfig>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = crate::bounded_http::Limits {
        connections: MAX_CONNECTIONS,
        head_timeout: HEAD_TIMEOUT,
        max_head: MAX_HEAD_BYTES,
        lifetime: CONNECTION_LIFETIME,
        drain: DRAIN,
    };
    let tls = crate::bounded_http::Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(config),
        handshake_timeout: HANDSHAKE_TIMEOUT,
    };
    crate::bounded_http::serve(name, listener, router, limits, Some(tls), stop).await;
    Ok(())
}
