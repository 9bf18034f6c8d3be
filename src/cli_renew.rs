//! `portcullis cert renew`: the client side of EST re-enrollment, for devices and services that hold a certificate
//! of the managed CA. It makes a new key and a CSR with the current certificate's names, presents the current
//! certificate to the server's EST listener (`serve --est-listen`), and writes the new certificate and key: into a
//! new directory, or over the current files (each replaced by a rename, the key first), for a timer that keeps a
//! service's certificate fresh.
//!
//! Not here: the server side (the admin crate's `est`), the admin API (no token is involved).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer read: a certs-only PKCS#7 of one certificate is a few KiB.
const MAX_ANSWER: usize = 256 * 1024;

#[derive(Debug, clap::Args)]
pub struct RenewArgs {
    /// The server's EST listener, e.g. https://pki.example.com:8443 (`serve --est-listen`).
    #[arg(long, value_name = "URL")]
    pub est: String,
    /// The current certificate (PEM; the first certificate is the one renewed, any others are sent as its chain).
    #[arg(long, value_name = "CERT.pem")]
    pub cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long, value_name = "KEY.pem")]
    pub key: PathBuf,
    /// The CA of the EST listener's certificate (PEM); public roots by default.
    #[arg(long, value_name = "CA.pem")]
    pub ca: Option<PathBuf>,
    /// Type of the new key.
    #[arg(long, default_value = "p256", value_parser = ["p256", "p384", "rsa2048", "rsa3072", "rsa4096"])]
    pub key_type: String,
    /// Write cert.pem and key.pem (mode 0600) into this new or empty directory.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "replace",
        conflicts_with = "replace"
    )]
    pub out: Option<PathBuf>,
    /// Replace --cert and --key with the new certificate and key instead.
    #[arg(long)]
    pub replace: bool,
}

pub async fn renew(args: RenewArgs) -> anyhow::Result<ExitCode> {
    let url = if args.est.contains("/.well-known/est") {
        format!(
            "{}/simplereenroll",
            args.est.trim_end_matches('/').trim_end_matches("/simplereenroll")
        )
    } else {
        format!("{}/.well-known/est/simplereenroll", args.est.trim_end_matches('/'))
    };
    if !url.starts_with("https://") {
        bail!(
            "--est must be an https:// URL (EST authenticates with the TLS client certificate), not {:?}",
            args.est
        );
    }
    if let Some(dir) = &args.out {
        for name in ["cert.pem", "key.pem"] {
            if dir.join(name).exists() {
                bail!(
                    "{} already exists; refusing to overwrite it (choose another --out, or --replace)",
                    dir.join(name).display()
                );
            }
        }
    }
    let key_type: portcullis_pki::KeyType = args.key_type.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (chain, key) = crate::admin_tls::read_pem_pair(&args.cert, &args.key).context("--cert and --key")?;
    let leaf = chain.first().context("--cert holds no certificate")?.as_ref().to_vec();
    let (csr, new_key) = portcullis_pki::est::renewal_csr(&leaf, key_type).context("making the CSR")?;

    let ca = match &args.ca {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading --ca {}", path.display()))?),
        None => None,
    };
    let identity = portcullis_proxy::OriginIdentity {
        id: "est".to_owned(),
        chain,
        key,
    };
    let tls = portcullis_proxy::OriginTls::with_identity(ca.as_deref(), true, false, Some(identity))
        .context("the TLS settings for --est")?;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    connector.enforce_http(false);
    let https = portcullis_proxy::origin_tls::HttpsConnector::new(connector, &tls, Duration::from_secs(10));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let body = base64::engine::general_purpose::STANDARD.encode(&csr);
    let req = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header(header::CONTENT_TYPE, "application/pkcs10")
        .header("content-transfer-encoding", "base64")
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("building the request to {url}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .map_err(|_| anyhow::anyhow!("POST {url}: no answer within 60 s"))?
        .with_context(|| {
            format!("POST {url}: cannot reach the EST listener (does --ca name the CA of its certificate?)")
        })?;
    let status = resp.status();
    let answer = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("POST {url}: reading the answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        bail!(
            "the EST listener refused the renewal (HTTP {}): {}",
            status.as_u16(),
            String::from_utf8_lossy(&answer).trim()
        );
    }
    let compact: Vec<u8> = answer.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let p7 = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .context("the answer is not base64")?;
    let certs = portcullis_pki::est::pkcs7_certificates(&p7).context("the answer")?;
    let new_cert = certs.first().context("the answer holds no certificate")?;
    let new_cert_pem = portcullis_pki::pem::encode("CERTIFICATE", new_cert);

    let (cert_path, key_path) = match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.join("cert.pem"), dir.join("key.pem"))
        }
        None => (args.cert.clone(), args.key.clone()),
    };
    // The key first: until the certificate follows, the old certificate names a key that is gone, but a reader never
    // sees the new certificate with the old key.
    write_replacing(&key_path, new_key.as_bytes(), true)?;
    write_replacing(&cert_path, new_cert_pem.as_bytes(), false)?;
    let subject = portcullis_pki::compute_facts(&[rustls::pki_types::CertificateDer::from(new_cert.as_slice())], &[]);
    outln!(
        "renewed {}: serial {}, expires {}; wrote {} and {}",
        subject.cert_subject_dn_rfc2253,
        subject.cert_serial,
        subject.cert_not_after,
        cert_path.display(),
        key_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `contents` to a temporary file beside `path` and renames it over `path`, so that readers see the old
/// file or the new one, never half of one; `private` makes it readable by its owner only.
fn write_replacing(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let name = path.file_name().context("a file name")?.to_string_lossy().into_owned();
    let tmp = path.with_file_name(format!(".{name}.portcullis-new"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}
