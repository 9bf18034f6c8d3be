//! TLS to `https://` origins: the per-origin client config (origin CA or public roots, or no
//! verification, and the client certificate presented to origins that require one) and a
//! connector for hyper-util's legacy client built on tokio-rustls.
//!
//! ALPN offers exactly one protocol: `h2` for origins marked HTTP/2 (gRPC), else `http/1.1`, so
//! the protocol spoken upstream never depends on the origin's preference. Not here: OCSP,
//! custom SNI.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use crate::ProxyError;
use crate::tls::provider;

/// TLS settings of an `https://` origin.
#[derive(Debug, Clone)]
pub struct OriginTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// Identifies the settings, so origins with equal settings share one connection pool.
    pub(crate) key: String,
}

/// Accepts any server certificate but still checks the handshake signature against it.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A client certificate the edge presents to an origin that requires one (upstream mTLS).
pub struct OriginIdentity {
    /// Names the identity in pool keys, so origins with different identities never share a connection.
    pub id: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl std::fmt::Debug for OriginIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl OriginIdentity {
    /// From the chain (PEM, leaf first) and the key (PKCS#8 DER).
    pub fn new(id: &str, chain_pem: &[u8], key_pkcs8: &[u8]) -> Result<OriginIdentity, ProxyError> {
        use rustls::pki_types::pem::PemObject;
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ProxyError::Config(format!("origin client certificate {id}: {e}")))?;
        if chain.is_empty() {
            return Err(ProxyError::Config(format!(
                "origin client certificate {id}: no CERTIFICATE in the PEM"
            )));
        }
        Ok(OriginIdentity {
            id: id.to_owned(),
            chain,
            key: rustls::pki_types::PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()).into(),
        })
    }
}

impl OriginTls {
    /// `ca_pem`: the CA certificates (PEM) that issue the origin's certificate; `None` trusts the
    /// public web roots. `verify: false` accepts any origin certificate (for self-signed origins
    /// on a trusted network). `http2` selects ALPN `h2` instead of `http/1.1`.
    pub fn new(ca_pem: Option<&[u8]>, verify: bool, http2: bool) -> Result<OriginTls, ProxyError> {
        OriginTls::with_identity(ca_pem, verify, http2, None)
    }

    /// [`OriginTls::new`], presenting `identity` to origins that ask for a client certificate.
    pub fn with_identity(
        ca_pem: Option<&[u8]>,
        verify: bool,
        http2: bool,
        identity: Option<OriginIdentity>,
    ) -> Result<OriginTls, ProxyError> {
        use rustls::pki_types::pem::PemObject;
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ProxyError::Config(format!("origin TLS: {e}")))?;
        let mut key = format!("verify={verify};h2={http2};");
        if let Some(identity) = &identity {
            key.push_str(&format!("client={};", identity.id));
        }
        let with_identity =
            |b: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>| match identity {
                Some(i) => b
                    .with_client_auth_cert(i.chain, i.key)
                    .map_err(|e| ProxyError::Config(format!("origin client certificate {}: {e}", i.id))),
                None => Ok(b.with_no_client_auth()),
            };
        let mut config = if !verify {
            with_identity(
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(
                        provider.signature_verification_algorithms,
                    ))),
            )?
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match ca_pem {
                Some(pem) => {
                    for cert in CertificateDer::pem_slice_iter(pem) {
                        let cert = cert.map_err(|e| ProxyError::Config(format!("origin CA: {e}")))?;
                        roots
                            .add(cert)
                            .map_err(|e| ProxyError::Config(format!("origin CA: {e}")))?;
                    }
                    if roots.is_empty() {
                        return Err(ProxyError::Config("origin CA: no CERTIFICATE in the PEM".into()));
                    }
                    key.push_str(&String::from_utf8_lossy(pem));
                }
                None => {
                    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                    key.push_str("webpki-roots");
                }
            }
            with_identity(builder.with_root_certificates(roots))?
        };
        config.alpn_protocols = vec![if http2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
        Ok(OriginTls {
            config: Arc::new(config),
            key,
        })
    }
}

/// A TLS connection to an origin, as hyper's IO.
pub struct HttpsStream {
    io: TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    h2: bool,
}

impl Connection for HttpsStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 { connected.negotiated_h2() } else { connected }
    }
}

impl Read for HttpsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for HttpsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// Connects over TCP with [`HttpConnector`], then TLS with the origin's config. Also what the binary fetches
/// `https://` CRLs with.
#[derive(Clone)]
pub struct HttpsConnector {
    http: HttpConnector,
    tls: tokio_rustls::TlsConnector,
    handshake_timeout: Duration,
}

impl HttpsConnector {
    /// TLS with `tls`'s settings after `http` connects; the handshake may take `handshake_timeout`.
    pub fn new(mut http: HttpConnector, tls: &OriginTls, handshake_timeout: Duration) -> HttpsConnector {
        // The URI says https; the TCP connector must not refuse it.
        http.enforce_http(false);
        HttpsConnector {
            http,
            tls: tokio_rustls::TlsConnector::from(tls.config.clone()),
            handshake_timeout,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for HttpsConnector {
    type Response = HttpsStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpsStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let timeout = self.handshake_timeout;
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let server_name = ServerName::try_from(host)?;
            let tcp = connecting.await?.into_inner();
            let stream = tokio::time::timeout(timeout, tls.connect(server_name, tcp))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "origin TLS handshake timed out"))??;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(HttpsStream {
                io: TokioIo::new(stream),
                h2,
            })
        })
    }
}
