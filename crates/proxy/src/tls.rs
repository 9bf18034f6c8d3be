//! TLS for one host: its `rustls::ServerConfig` and the client-certificate verifiers behind it.
//!
//! The verifier checks proof of possession (the client's handshake signature against the
//! presented leaf) with the crypto provider's algorithms, so a client can never claim a
//! certificate whose key it does not hold. What it accepts depends on the host's mode:
//! - [`MtlsMode::Request`]: client auth is offered but optional, and *any* chain is accepted at the
//!   handshake; trust is decided later, per request, by the rules (`cf.tls_client_auth.*`).
//!   This is Cloudflare's model, and it lets a rule answer with a readable 403 instead of an alert.
//! - [`MtlsMode::Require`]: a certificate is mandatory and the handshake fails unless the
//!   host's [`portcullis_pki::Verifier`] says verified and not revoked.
//! - [`MtlsMode::VerifyIfGiven`]: a client without a certificate completes the handshake (and the
//!   rules see `cert_presented` false), but one that presents a certificate is held to `require`'s
//!   check (Caddy's `verify_if_given`, HAProxy's `verify optional`).
//!
//! Not here: choosing the host by SNI (see `server`), computing facts (see `conn`).

use std::sync::Arc;

use portcullis_pki::{AuthStatus, Verifier};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoClientAuth, ServerConfig};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use time::OffsetDateTime;

use crate::ProxyError;
use crate::sessions::TlsSessions;

/// How a host treats client certificates at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    /// Ask for a certificate, accept any (or none); the rules decide per request.
    Request,
    /// Refuse the handshake unless a certificate is presented, verifies and is not revoked.
    Require,
    /// Accept a handshake without a certificate; refuse one whose certificate does not verify or is
    /// revoked.
    VerifyIfGiven,
}

impl MtlsMode {
    /// Whether a certificate the client presents has been verified by the handshake itself (so a
    /// full handshake's facts need no second verification, and a resumed session's certificate
    /// that is no longer trusted must be refused).
    pub(crate) fn verifies_at_handshake(self) -> bool {
        self != MtlsMode::Request
    }

    /// Whether the mode lets a request with `facts` through (the handshake's measure, for a certificate the
    /// handshake did not see).
    pub(crate) fn admits(self, facts: &portcullis_pki::ClientAuthFacts) -> bool {
        let trusted = facts.cert_verified && !facts.cert_revoked;
        match self {
            MtlsMode::Request => true,
            MtlsMode::Require => trusted,
            MtlsMode::VerifyIfGiven => !facts.cert_presented || trusted,
        }
    }
}

/// The certificate a `require` or `verify_if_given` verifier refused, for the handshake's failure log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RefusedCert {
    pub subject: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    /// `untrusted`, `notyetvalid`, `expired` or `revoked`.
    pub status: &'static str,
    /// Why, in OpenSSL's words (`unable to get local issuer certificate`, `CRL has expired`).
    pub verify_error: String,
}

thread_local! {
    /// Set by [`ClientVerifier`] when it refuses a certificate and taken by the connection right
    /// after its handshake (`take_refused_cert`). rustls gives the verifier no way to pass data
    /// to the connection, but both run in the same poll on the same thread with nothing in
    /// between, so a per-thread slot attributes the certificate to the right handshake.
    static REFUSED: std::cell::RefCell<Option<RefusedCert>> = const { std::cell::RefCell::new(None) };
}

/// The certificate the last refusal on this thread was about (and clears it).
pub(crate) fn take_refused_cert() -> Option<RefusedCert> {
    REFUSED.with(|slot| slot.borrow_mut().take())
}

/// The crypto provider every config uses (aws-lc-rs, rustls' default).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The client-certificate verifier for a host with mTLS.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    mode: MtlsMode,
    /// Sent in the CertificateRequest so clients (browsers, curl) pick a matching certificate.
    hints: Vec<DistinguishedName>,
    verifier: Arc<Verifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientVerifier {
    pub(crate) fn new(
        mode: MtlsMode,
        verifier: Arc<Verifier>,
        ca_certs: &[CertificateDer<'_>],
        provider: &CryptoProvider,
    ) -> ClientVerifier {
        // A RootCertStore is the simplest correct way to get the DER subjects rustls wants; a CA
        // that does not parse gives no hint (the pki verifier already refused or accepted it).
        let mut store = rustls::RootCertStore::empty();
        for ca in ca_certs {
            let _ = store.add(ca.clone());
        }
        ClientVerifier {
            mode,
            hints: store.subjects(),
            verifier,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

fn to_offset(now: UnixTime) -> OffsetDateTime {
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mode == MtlsMode::Require
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.mode == MtlsMode::Request {
            return Ok(ClientCertVerified::assertion());
        }
        let mut chain = Vec::with_capacity(intermediates.len() + 1);
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let verdict = self.verifier.verify(&chain, to_offset(now));
        if verdict.is_trusted() {
            return Ok(ClientCertVerified::assertion());
        }
        // Only on refusal, so the facts' formatting costs nothing on accepted handshakes.
        let facts = portcullis_pki::compute_facts(&chain, &[]);
        REFUSED.with(|slot| {
            *slot.borrow_mut() = Some(RefusedCert {
                subject: facts.cert_subject_dn_rfc2253,
                serial: facts.cert_serial,
                fingerprint_sha256: facts.cert_fingerprint_sha256,
                status: verdict.status.as_str(),
                verify_error: if verdict.revoked {
                    "certificate revoked".to_owned()
                } else {
                    verdict.reason.strip_prefix("FAILED:").unwrap_or("").to_owned()
                },
            });
        });
        let err = match verdict.status {
            AuthStatus::Revoked => CertificateError::Revoked,
            AuthStatus::Expired => CertificateError::Expired,
            AuthStatus::NotYetValid => CertificateError::NotValidYet,
            AuthStatus::Ok | AuthStatus::Absent | AuthStatus::Untrusted => CertificateError::UnknownIssuer,
        };
        Err(rustls::Error::InvalidCertificate(err))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A host's server certificate: the chain (leaf first) and its private key.
#[derive(Debug)]
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ServerCert {
    fn clone(&self) -> Self {
        ServerCert {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ServerCert {
    /// From PEM: a certificate chain (leaf first) and a PKCS#8, PKCS#1 or SEC1 private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<ServerCert, ProxyError> {
        use rustls::pki_types::pem::PemObject;
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ProxyError::Config(format!("server certificate: {e}")))?;
        if chain.is_empty() {
            return Err(ProxyError::Config(
                "server certificate: no CERTIFICATE in the PEM".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ProxyError::Config(format!("server key: {e}")))?;
        Ok(ServerCert { chain, key })
    }
}

/// A host's two `ServerConfig`s, the same but for session tickets.
#[derive(Debug, Clone)]
pub(crate) struct HostConfigs {
    /// For clients that offer TLS 1.3: tickets from the host's ticketer.
    pub tls13: Arc<ServerConfig>,
    /// For clients that offer only TLS 1.2: no tickets, the session cache only.
    pub tls12: Arc<ServerConfig>,
}

impl HostConfigs {
    /// The config for a ClientHello offering `suites`.
    pub(crate) fn for_suites(&self, suites: &[rustls::CipherSuite]) -> Arc<ServerConfig> {
        use rustls::CipherSuite as S;
        let tls13 = suites.iter().any(|s| {
            matches!(
                s,
                S::TLS13_AES_128_GCM_SHA256 | S::TLS13_AES_256_GCM_SHA384 | S::TLS13_CHACHA20_POLY1305_SHA256
            )
        });
        if tls13 { self.tls13.clone() } else { self.tls12.clone() }
    }
}

#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }

    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// Builds a host's `ServerConfig`s: TLS 1.2 (unless `min` is 1.3) and 1.3, ALPN `h2` then `http/1.1`, the server
/// certificate, and (when `client_auth` is given) the client-certificate policy.
pub(crate) fn server_config(
    cert: ServerCert,
    client_auth: Option<(MtlsMode, Arc<Verifier>, &[CertificateDer<'_>])>,
    sessions: &TlsSessions,
    min: crate::snapshot::MinTlsVersion,
) -> Result<HostConfigs, ProxyError> {
    let provider = provider();
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        crate::snapshot::MinTlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        // A TLS 1.2-only client is then handed this config too, and refused with a protocol_version alert.
        crate::snapshot::MinTlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| ProxyError::Config(format!("TLS versions: {e}")))?;
    let builder = match client_auth {
        Some((mode, verifier, cas)) => {
            builder.with_client_cert_verifier(Arc::new(ClientVerifier::new(mode, verifier, cas, &provider)))
        }
        None => builder.with_client_cert_verifier(Arc::new(NoClientAuth)),
    };
    let mut config = builder
        .with_single_cert(cert.chain, cert.key)
        .map_err(|e| ProxyError::Config(format!("server certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // One ticket is enough for a client's next connection; rustls' default of two costs every
    // full handshake another key derivation and record, and fills the session cache twice as fast.
    config.send_tls13_tickets = 1;
    // The host's own cache and ticket keys, kept across rebuilds: a session never resumes on another
    // host, and survives every write to the store.
    config.session_storage = sessions.cache.clone();
    let mut without_tickets = config.clone();
    config.ticketer = sessions.ticketer.clone();
    // TLS 1.2 tickets carry the session's master secret, and ticket keys can be derived again from the
    // master key: TLS 1.2 clients resume from the session cache instead. (TLS 1.3 resumption always runs
    // a fresh key exchange, so its tickets never expose a session's traffic.)
    without_tickets.ticketer = Arc::new(NoTickets);
    Ok(HostConfigs {
        tls13: Arc::new(config),
        tls12: Arc::new(without_tickets),
    })
}

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The `ServerConfig` of a TLS-ALPN-01 answer: TLS 1.2 and 1.3, `acme-tls/1` only, no client certificate, no
/// sessions. RFC 8737 has the server present the answer certificate and then close; nothing is served over it.
pub(crate) fn acme_answer_config(cert: ServerCert) -> Result<Arc<ServerConfig>, ProxyError> {
    let provider = provider();
    let key = provider
        .key_provider
        .load_private_key(cert.key)
        .map_err(|e| ProxyError::Config(format!("ACME answer key: {e}")))?;
    // Not `with_single_cert`: it parses the certificate with webpki, which refuses the critical acmeIdentifier
    // extension that is the whole point of the answer.
    let answer = rustls::sign::CertifiedKey::new(cert.chain, key);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ProxyError::Config(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(Arc::new(NoClientAuth))
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(answer)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.ticketer = Arc::new(NoTickets);
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// True when a ClientHello offers `acme-tls/1` and nothing else, as an ACME server validating TLS-ALPN-01 does.
pub(crate) fn offers_only_acme<'a>(mut alpn: impl Iterator<Item = &'a [u8]>) -> bool {
    alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none()
}

/// Cloudflare's `cf.tls_version` spelling.
pub(crate) fn version_name(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    }
}

/// Cloudflare's `cf.tls_cipher` spelling (BoringSSL names, e.g. `AEAD-AES128-GCM-SHA256`), with
/// the IANA name as a fallback for suites Cloudflare does not list.
pub(crate) fn cipher_name(suite: Option<rustls::SupportedCipherSuite>) -> String {
    use rustls::CipherSuite as C;
    let Some(suite) = suite else {
        return String::new();
    };
    let id = suite.suite();
    let name = match id {
        C::TLS13_AES_128_GCM_SHA256 => "AEAD-AES128-GCM-SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "AEAD-AES256-GCM-SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "AEAD-CHACHA20-POLY1305-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => return other.as_str().unwrap_or("").to_owned(),
    };
    name.to_owned()
}

#[cfg(test)]
mod acme_tests {
    use super::offers_only_acme;

    #[test]
    fn only_a_client_hello_offering_acme_tls_alone_is_answered() {
        let offers = |protocols: &[&'static [u8]]| offers_only_acme(protocols.iter().copied());
        assert!(offers(&[b"acme-tls/1"]));
        assert!(!offers(&[b"acme-tls/1", b"h2"]));
        assert!(!offers(&[b"h2", b"acme-tls/1"]));
        assert!(!offers(&[b"h2"]));
        assert!(!offers(&[]));
    }
}
