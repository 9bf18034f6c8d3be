//! Client certificates that a trusted front proxy passes in a request header. Behind a load balancer or CDN that
//! terminates TLS itself (AWS ALB in mTLS passthrough mode, NGINX with `$ssl_client_escaped_cert`, Cloudflare's
//! `Cf-Client-Cert-Der-Base64`, HAProxy's `ssl_c_der,base64`, Traefik), the client's certificate arrives in a header;
//! on an mTLS host it is verified against the host's CAs (revocation and OCSP included) and judged by the rules, logged
//! and forwarded exactly as if the client had presented it to the edge.
//!
//! Only requests on connections from the configured front proxies are read this way, and on those the connection's
//! own certificate (the front proxy's, if it has one) never stands for a client: without the header the request has
//! no certificate; `require` and `verify_if_given` refuse (403) what they would refuse at a handshake. From anywhere
//! else the header is ignored. Either way it is removed (in its `_` spellings too) before the request reaches the
//! origin, which gets the host's own forwarding styles instead. The edge cannot check that the client holds the
//! certificate's key: that is what the front proxy is trusted for.
//!
//! Formats, told apart by their first bytes: RFC 9440 (`:base64:`; for the header `Client-Cert`, its chain comes from
//! `Client-Cert-Chain`), PEM or percent-encoded PEM (several certificates: the leaf, then its chain), and base64 DER
//! (several comma-separated, the leaf first). Does not read Envoy's XFCC (whose `Cert` is optional and whose
//! elements name every hop), and does not take the client's address from a header.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use portcullis_pki::ClientAuthFacts;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::proxy_protocol::TrustedProxies;
use crate::snapshot::Host;

/// Most certificates in one header (with its chain header): the leaf and a few intermediates.
const MAX_CERTS: usize = 8;
/// Longest header value read (one header; the request's header limits bound it too).
const MAX_VALUE: usize = 32 * 1024;
/// Most verified headers remembered per edge thread, and most bytes of their chains; the memory is cleared when
/// either is reached.
const MAX_CACHED: usize = 4096;
const MAX_CACHED_BYTES: usize = 8 * 1024 * 1024;
/// How long a verification is kept within one snapshot, so that a certificate that expires meanwhile is seen to.
const KEEP: Duration = Duration::from_secs(60);

/// The header and the front proxies it is read from, as configured (`serve --client-cert-header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertHeader {
    name: HeaderName,
    from: TrustedProxies,
}

impl ClientCertHeader {
    /// `name` read from connections of `from` (which must name at least one address).
    pub fn new(name: &str, from: TrustedProxies) -> Result<ClientCertHeader, String> {
        let name = Self::header_name(name)?;
        if from.is_empty() {
            return Err("a client certificate header needs the front proxies it is read from".into());
        }
        Ok(ClientCertHeader { name, from })
    }

    /// `name` as a header that can carry a certificate (not one that frames the request or routes it).
    pub fn header_name(name: &str) -> Result<HeaderName, String> {
        let header = carrier_header(name, "a client certificate")?;
        if header.as_str() == "client-cert-chain" {
            return Err(format!("{header} cannot carry a client certificate"));
        }
        if crate::forward::same_name(header.as_str(), "x-forwarded-client-cert") {
            // Envoy appends to XFCC, one element per hop, so a client's own element would be read as its certificate.
            return Err("x-forwarded-client-cert (XFCC) is not read: its elements name every hop".into());
        }
        Ok(header)
    }

    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

/// The certificate facts and chain of a request, from the header or the connection.
pub(crate) struct HeaderCert {
    pub facts: Arc<ClientAuthFacts>,
    pub chain: Arc<[CertificateDer<'static>]>,
}

struct Cached {
    generation: u64,
    /// Until when the verification holds: [`KEEP`], or sooner when it may change (see
    /// [`portcullis_pki::Verifier::recheck_at`]).
    until: Instant,
    cert: Arc<HeaderCert>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<[u8; 32], Cached>,
    bytes: usize,
}

/// One edge thread's reader of the header, with the verifications it has done.
pub(crate) struct CertHeaderReader {
    config: ClientCertHeader,
    /// `Client-Cert-Chain` when the header is RFC 9440's `Client-Cert`.
    chain_name: Option<HeaderName>,
    cache: Mutex<Cache>,
}

impl CertHeaderReader {
    pub(crate) fn new(config: ClientCertHeader) -> CertHeaderReader {
        let chain_name = (config.name.as_str() == "client-cert").then(|| HeaderName::from_static("client-cert-chain"));
        CertHeaderReader {
            config,
            chain_name,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Whether requests on a connection from `ip` carry the client's certificate in the header.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.config.from.contains(ip)
    }

    /// Removes the header (and its chain header) before the request goes to the origin, in any spelling an
    /// origin reads as it (`X_Client_Cert` is `HTTP_X_CLIENT_CERT` to CGI, WSGI and Rack, like the real one).
    pub(crate) fn strip(&self, headers: &mut HeaderMap) {
        crate::forward::remove_where(headers, |name| {
            crate::forward::same_name(name, self.config.name.as_str())
                || self
                    .chain_name
                    .as_ref()
                    .is_some_and(|c| crate::forward::same_name(name, c.as_str()))
        });
    }

    /// The certificate in `headers` under `host`'s trust (snapshot `generation`): no certificate without the header,
    /// an unreadable one (presented, not verified) when it cannot be decoded. OCSP is the caller's.
    pub(crate) fn read(&self, headers: &HeaderMap, host: &Host, generation: u64) -> Arc<HeaderCert> {
        let Some(mtls) = &host.mtls else {
            return absent();
        };
        let value = match single(headers, &self.config.name) {
            Ok(Some(v)) => v,
            Ok(None) => return absent(),
            Err(e) => return unreadable(&mtls.verifier, e),
        };
        let chain_value = match self.chain_name.as_ref().map(|n| single(headers, n)) {
            Some(Err(e)) => return unreadable(&mtls.verifier, e),
            Some(Ok(v)) => v,
            None => None,
        };
        let key = cache_key(&host.hostname, value, chain_value);
        if let Ok(cache) = self.cache.lock()
            && let Some(hit) = cache.entries.get(&key)
            && hit.generation == generation
            && Instant::now() < hit.until
        {
            return hit.cert.clone();
        }
        let (now, now_instant) = (OffsetDateTime::now_utc(), Instant::now());
        let cert = match decode(value, chain_value) {
            Ok(chain) => Arc::new(HeaderCert {
                facts: Arc::new(mtls.verifier.client_auth(&chain, now)),
                chain: chain.into(),
            }),
            Err(e) => unreadable(&mtls.verifier, e),
        };
        // Until the verdict may change with time (a certificate expires, a CRL goes stale past its grace).
        let keep = mtls.verifier.recheck_at(&cert.chain, now).map_or(KEEP, |at| {
            OffsetDateTime::from_unix_timestamp(at)
                .ok()
                .and_then(|at| Duration::try_from(at - now).ok())
                .unwrap_or(Duration::ZERO)
                .min(KEEP)
        });
        let size = cert.chain.iter().map(|c| c.as_ref().len()).sum::<usize>() + value.len();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.entries.len() >= MAX_CACHED || cache.bytes + size > MAX_CACHED_BYTES {
                cache.entries.clear();
                cache.bytes = 0;
            }
            let old = cache.entries.insert(
                key,
                Cached {
                    generation,
                    until: now_instant + keep,
                    cert: cert.clone(),
                },
            );
            // The same key is the same header, so a replaced entry was as large.
            if old.is_none() {
                cache.bytes += size;
            }
        }
        cert
    }
}

/// `name` as a header a front proxy can pass `what` in: a valid name, and not one that frames or routes the request.
pub(crate) fn carrier_header(name: &str, what: &str) -> Result<HeaderName, String> {
    let header =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
    if matches!(
        header.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "te" | "upgrade"
    ) {
        return Err(format!("{header} cannot carry {what}"));
    }
    Ok(header)
}

fn absent() -> Arc<HeaderCert> {
    static ABSENT: OnceLock<Arc<HeaderCert>> = OnceLock::new();
    ABSENT
        .get_or_init(|| {
            Arc::new(HeaderCert {
                facts: Arc::new(ClientAuthFacts::default()),
                chain: Arc::from(Vec::new()),
            })
        })
        .clone()
}

/// A header that names a certificate but none can be read from: presented, and not verified ("unable to decode
/// certificate", as for undecodable bytes in a handshake).
fn unreadable(verifier: &portcullis_pki::Verifier, error: DecodeError) -> Arc<HeaderCert> {
    tracing::debug!(%error, "client certificate header not readable");
    let chain = vec![CertificateDer::from(Vec::new())];
    Arc::new(HeaderCert {
        facts: Arc::new(verifier.client_auth(&chain, OffsetDateTime::now_utc())),
        chain: Arc::from(Vec::new()),
    })
}

/// The one value of `name` (empty counts as none); two or more are refused, since only one can be the front
/// proxy's.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a [u8]>, DecodeError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(DecodeError("the header appears more than once"));
    }
    let v = first.as_bytes().trim_ascii();
    if v.len() > MAX_VALUE {
        return Err(DecodeError("the header is too long"));
    }
    Ok((!v.is_empty()).then_some(v))
}

fn cache_key(host: &str, value: &[u8], chain: Option<&[u8]>) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(host.as_bytes());
    ctx.update(&[0]);
    ctx.update(&(value.len() as u64).to_be_bytes());
    ctx.update(value);
    if let Some(chain) = chain {
        ctx.update(&[1]);
        ctx.update(chain);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// Why a header's certificate could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DecodeError(&'static str);

/// The certificates in a header value (and an RFC 9440 chain value), leaf first.
pub(crate) fn decode(value: &[u8], chain: Option<&[u8]>) -> Result<Vec<CertificateDer<'static>>, DecodeError> {
    let mut certs = if value.starts_with(b":") {
        vec![byte_sequence(value)?]
    } else {
        let text = if value.contains(&b'%') {
            percent_decoded(value)?
        } else {
            value.to_vec()
        };
        if find(&text, b"-----BEGIN").is_some() {
            pem_certificates(&text)?
        } else {
            text.split(|b| *b == b',')
                .map(|part| base64_der(part.trim_ascii()))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    if let Some(chain) = chain {
        for item in chain.split(|b| *b == b',') {
            let item = item.trim_ascii();
            if !item.is_empty() {
                certs.push(byte_sequence(item)?);
            }
            if certs.len() > MAX_CERTS {
                break;
            }
        }
    }
    if certs.len() > MAX_CERTS {
        return Err(DecodeError("more certificates than a chain has"));
    }
    Ok(certs.into_iter().map(CertificateDer::from).collect())
}

/// An RFC 8941 byte sequence, `:base64:` (parameters not allowed).
fn byte_sequence(item: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let inner = item
        .strip_prefix(b":")
        .and_then(|rest| rest.strip_suffix(b":"))
        .ok_or(DecodeError("an RFC 9440 value is not a byte sequence (:base64:)"))?;
    base64_der(inner)
}

/// Standard or URL-safe base64, padded or not.
fn base64_der(text: &[u8]) -> Result<Vec<u8>, DecodeError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let engine = if text.iter().any(|b| matches!(b, b'-' | b'_')) {
        URL_SAFE
    } else {
        STANDARD
    };
    let der = engine
        .decode(text)
        .map_err(|_| DecodeError("a certificate is not valid base64"))?;
    if der.is_empty() {
        return Err(DecodeError("an empty certificate"));
    }
    Ok(der)
}

/// `%XX` decoded; a `%` without two hex digits is an error (the value is not what was encoded).
fn percent_decoded(s: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let (Some(h), Some(l)) = (
                s.get(i + 1).and_then(|b| crate::normalize::hex_value(*b)),
                s.get(i + 2).and_then(|b| crate::normalize::hex_value(*b)),
            ) else {
                return Err(DecodeError("a broken percent-encoding"));
            };
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The `CERTIFICATE` blocks of PEM text, whose line breaks a front proxy may have turned into spaces (and the
/// space in the boundary lines into `+`, as form encoding does).
fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    const BEGIN: &[u8] = b"-----BEGIN";
    const DASHES: &[u8] = b"-----";
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(at) = find(rest, BEGIN) {
        let after = &rest[at + BEGIN.len()..];
        let label_end = find(after, DASHES).ok_or(DecodeError("a PEM boundary is not closed"))?;
        let label = label(&after[..label_end]);
        let body_start = &after[label_end + DASHES.len()..];
        let end = find(body_start, b"-----END").ok_or(DecodeError("a PEM block has no END line"))?;
        let body: Vec<u8> = body_start[..end]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let tail = &body_start[end + b"-----END".len()..];
        let tail_end = find(tail, DASHES).ok_or(DecodeError("a PEM boundary is not closed"))?;
        if label == b"CERTIFICATE" {
            if certs.len() == MAX_CERTS {
                return Err(DecodeError("more certificates than a chain has"));
            }
            certs.push(base64_der(&body)?);
        }
        rest = &tail[tail_end + DASHES.len()..];
    }
    if certs.is_empty() {
        return Err(DecodeError("PEM text without a certificate"));
    }
    Ok(certs)
}

/// A PEM boundary's label with `+` read as a space and the spaces around it trimmed.
fn label(raw: &[u8]) -> Vec<u8> {
    raw.iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect::<Vec<u8>>()
        .trim_ascii()
        .to_vec()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(n: u8) -> Vec<u8> {
        vec![0x30, 0x03, 0x02, 0x01, n]
    }

    fn b64(d: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(d)
    }

    fn pem(d: &[u8]) -> String {
        portcullis_pki::pem::encode("CERTIFICATE", d)
    }

    fn ders(v: Vec<CertificateDer<'static>>) -> Vec<Vec<u8>> {
        v.into_iter().map(|c| c.as_ref().to_vec()).collect()
    }

    #[test]
    fn every_format_reads_the_leaf_then_its_chain() {
        let (a, b) = (der(1), der(2));
        // RFC 9440, the chain in its own header.
        let v = format!(":{}:", b64(&a));
        let chain = format!(":{}:, :{}:", b64(&b), b64(&b));
        assert_eq!(ders(decode(v.as_bytes(), None).unwrap()), vec![a.clone()]);
        assert_eq!(
            ders(decode(v.as_bytes(), Some(chain.as_bytes())).unwrap()),
            vec![a.clone(), b.clone(), b.clone()]
        );
        // PEM, as is, with its line breaks as spaces, and percent-encoded (NGINX, AWS ALB) with `+` for spaces.
        let both = format!("{}{}", pem(&a), pem(&b));
        assert_eq!(ders(decode(both.as_bytes(), None).unwrap()), vec![a.clone(), b.clone()]);
        let spaced = both.replace('\n', " ");
        assert_eq!(
            ders(decode(spaced.as_bytes(), None).unwrap()),
            vec![a.clone(), b.clone()]
        );
        let encoded: String = both
            .bytes()
            .map(|c| match c {
                b' ' => "+".to_owned(),
                c if c.is_ascii_alphanumeric() => char::from(c).to_string(),
                c => format!("%{c:02X}"),
            })
            .collect();
        assert_eq!(
            ders(decode(encoded.as_bytes(), None).unwrap()),
            vec![a.clone(), b.clone()]
        );
        // Base64 DER (Cloudflare, HAProxy), a comma-separated chain (Traefik), URL-safe and unpadded too.
        let list = format!("{},{}", b64(&a), b64(&b));
        assert_eq!(ders(decode(list.as_bytes(), None).unwrap()), vec![a.clone(), b.clone()]);
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb, 0xff, 0xfe, 0x30]);
        assert_eq!(
            ders(decode(url_safe.as_bytes(), None).unwrap()),
            vec![vec![0xfb, 0xff, 0xfe, 0x30]]
        );
    }

    #[test]
    fn broken_values_are_errors_not_panics() {
        let long_chain = vec![format!(":{}:", b64(&der(1))); MAX_CERTS].join(",");
        let many_pems = pem(&der(1)).repeat(MAX_CERTS + 1);
        for (value, chain, why) in [
            (":AAAA", None, "not a byte sequence"),
            ("::", None, "an empty certificate"),
            ("not base64!", None, "not valid base64"),
            ("%zz", None, "percent"),
            ("%4", None, "percent"),
            ("-----BEGIN CERTIFICATE-----\nAAAA", None, "no END"),
            ("-----BEGIN CERTIFICATE", None, "not closed"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                None,
                "without a certificate",
            ),
            (":AAAA:", Some(long_chain.as_str()), "more certificates"),
            (many_pems.as_str(), None, "more certificates"),
            ("AAAA,", None, "an empty certificate"),
        ] {
            let err = decode(value.as_bytes(), chain.map(str::as_bytes)).unwrap_err();
            assert!(err.to_string().contains(why), "{value:?}: {err}");
        }
    }

    #[test]
    fn a_header_needs_a_name_that_can_carry_it_and_front_proxies() {
        let from = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        assert!(ClientCertHeader::new("X-Amzn-Mtls-Clientcert", from.clone()).is_ok());
        assert!(ClientCertHeader::new("bad header", from.clone()).is_err());
        assert!(ClientCertHeader::new("Host", from.clone()).is_err());
        assert!(ClientCertHeader::new("X_Forwarded_Client_Cert", from).is_err());
        assert!(ClientCertHeader::new("client-cert", TrustedProxies::default()).is_err());
    }

    #[test]
    fn two_values_or_an_empty_one_are_not_a_certificate() {
        let name = HeaderName::from_static("x-client-cert");
        let mut headers = HeaderMap::new();
        assert_eq!(single(&headers, &name), Ok(None));
        headers.append(&name, http::HeaderValue::from_static(""));
        assert_eq!(single(&headers, &name), Ok(None));
        headers.append(&name, http::HeaderValue::from_static("AAAA"));
        assert!(single(&headers, &name).is_err());
    }
}
