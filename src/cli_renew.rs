//! `portcullis cert renew`: the client side of EST re-enrollment, for devices and services that hold a certificate
//! of the managed CA. It makes a new key and a CSR with the current certificate's names, presents the current
//! certificate to the server's EST listener (`serve --est-listen`), and writes the new certificate and key: into a
//! directory, or over the current files, for a timer that keeps a service's certificate fresh.
//!
//! The server renews a certificate once, so nothing may go wrong on this side once it has answered: the files'
//! places are prepared (temporary files beside them, created anew; with --replace the old files' mode and, where
//! allowed, owner) before the
//! request, and the answer is checked (a certificate for the new key) before anything is replaced. Should a write
//! still fail, the new certificate is printed with what to do.
//!
//! Not here: the server side (the admin crate's `est`), the admin API (no token is involved).

use std::fs::File;
use std::io::Write as _;
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

/// Largest answer read: a certs-only PKCS#7 of a few certificates is a few KiB.
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
    /// Type of the new key [default: the current key's].
    #[arg(long, value_parser = ["p256", "p384", "rsa2048", "rsa3072", "rsa4096"])]
    pub key_type: Option<String>,
    /// Write cert.pem and key.pem (mode 0600) into this directory, where neither may exist yet.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "replace",
        conflicts_with = "replace"
    )]
    pub out: Option<PathBuf>,
    /// Renew only when the current certificate expires within this many days; otherwise say when it is due and
    /// exit 0 (for a daily timer: `contrib/systemd/portcullis-renew.timer`).
    #[arg(long, value_name = "DAYS")]
    pub within_days: Option<u32>,
    /// Replace --cert and --key (their targets, when they are symbolic links) with the new certificate and key,
    /// keeping each file's mode and, where allowed, its owner. A --cert that held a chain gets the new chain.
    #[arg(long)]
    pub replace: bool,
}

/// Where one new file goes: its destination and, prepared before the request, the temporary file beside it.
struct Target {
    dest: PathBuf,
    tmp: PathBuf,
    file: File,
    /// Whether the destination may be replaced (else it must not exist when the temporary file takes its place).
    replace: bool,
}

impl Target {
    /// Creates the temporary file beside `dest` (a new name, never an existing file or link), with `like`'s mode
    /// and owner when given, else `private` (0600) or the default mode.
    fn prepare(dest: &Path, like: Option<&Path>, private: bool, replace: bool) -> anyhow::Result<Target> {
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest.file_name().context("a file name")?.to_string_lossy().into_owned();
        let tmp = dir.join(format!(".{name}.{}.portcullis-new", crate::serve::random_suffix()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
        let file = options
            .open(&tmp)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        #[cfg(unix)]
        if let Some(like) = like {
            use std::os::unix::fs::MetadataExt as _;
            let old = std::fs::metadata(like).with_context(|| format!("reading {}", like.display()))?;
            // The owner first: a changed owner may clear the mode's special bits.
            let _ = std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()));
            file.set_permissions(old.permissions())
                .with_context(|| format!("setting the mode of {}", tmp.display()))?;
        }
        #[cfg(not(unix))]
        let _ = (like, private);
        Ok(Target {
            dest: dest.to_path_buf(),
            tmp,
            file,
            replace,
        })
    }

    fn write(&mut self, contents: &[u8]) -> std::io::Result<()> {
        self.file.write_all(contents)?;
        self.file.sync_all()
    }

    /// Puts the temporary file in the destination's place.
    fn commit(&self) -> anyhow::Result<()> {
        if self.replace {
            std::fs::rename(&self.tmp, &self.dest)
        } else {
            // A hard link fails if the destination appeared meanwhile: never clobber in --out.
            std::fs::hard_link(&self.tmp, &self.dest).and_then(|()| std::fs::remove_file(&self.tmp))
        }
        .with_context(|| format!("cannot write {}", self.dest.display()))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // Gone already once committed; a leftover would hold a key.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// `path`'s target when it is a symbolic link (so that the link stays and points at the new file), else `path`.
fn resolved(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))
}

fn est_url(est: &str, path: &str) -> anyhow::Result<String> {
    let base = est.trim_end_matches('/');
    let base = base
        .strip_suffix("/simplereenroll")
        .unwrap_or(base)
        .trim_end_matches('/');
    let base = base.strip_suffix("/.well-known/est").unwrap_or(base);
    if !base.to_ascii_lowercase().starts_with("https://") {
        bail!("--est must be an https:// URL (EST authenticates with the TLS client certificate), not {est:?}");
    }
    Ok(format!("{base}/.well-known/est/{path}"))
}

pub async fn renew(args: RenewArgs) -> anyhow::Result<ExitCode> {
    let url = est_url(&args.est, "simplereenroll")?;
    let (chain, key) = crate::admin_tls::read_pem_pair(&args.cert, &args.key).context("--cert and --key")?;
    let leaf = chain.first().context("--cert holds no certificate")?.as_ref().to_vec();
    if let Some(days) = args.within_days {
        let expires = portcullis_pki::certificate_not_after(&leaf).context("--cert")?;
        let due = expires - time::Duration::days(i64::from(days));
        if time::OffsetDateTime::now_utc() < due {
            outln!(
                "not renewed: {} expires on {}, more than {days} days from now; due from {}",
                args.cert.display(),
                rfc3339(expires),
                rfc3339(due)
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    let with_chain = chain.len() > 1;
    let key_type = match &args.key_type {
        Some(name) => name.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        None => portcullis_pki::est::key_type_of(&leaf).unwrap_or_default(),
    };

    // Everything that can fail locally is done before the server renews.
    let (mut key_file, mut cert_file) = match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for name in ["cert.pem", "key.pem"] {
                if dir.join(name).exists() {
                    bail!(
                        "{} already exists; refusing to overwrite it (choose another --out, or --replace)",
                        dir.join(name).display()
                    );
                }
            }
            (
                Target::prepare(&dir.join("key.pem"), None, true, false)?,
                Target::prepare(&dir.join("cert.pem"), None, false, false)?,
            )
        }
        None => {
            let (cert_path, key_path) = (resolved(&args.cert)?, resolved(&args.key)?);
            if cert_path == key_path {
                bail!(
                    "--cert and --key are the same file ({}); --replace needs them apart (or use --out)",
                    cert_path.display()
                );
            }
            (
                Target::prepare(&key_path, Some(&key_path), true, true)?,
                Target::prepare(&cert_path, Some(&cert_path), false, true)?,
            )
        }
    };
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
    // The chain the new certificate is sent with, when the current one was: read before renewing.
    let cas = if with_chain {
        Some(fetch(&client, &est_url(&args.est, "cacerts")?, None).await?)
    } else {
        None
    };
    let body = base64::engine::general_purpose::STANDARD.encode(&csr);
    let certs = fetch(&client, &url, Some(body)).await?;
    let new_cert = portcullis_pki::est::certificate_for_csr(&certs, &csr).context("the answer")?;
    let mut pem = portcullis_pki::pem::encode("CERTIFICATE", &new_cert);
    if let Some(cas) = &cas {
        for der in portcullis_pki::est::chain_above(&new_cert, cas).context("the new certificate's chain")? {
            pem.push_str(&portcullis_pki::pem::encode("CERTIFICATE", &der));
        }
    }

    // The key first: a reader never sees the new certificate with the old key.
    let written = key_file
        .write(new_key.as_bytes())
        .and_then(|()| cert_file.write(pem.as_bytes()))
        .map_err(anyhow::Error::from)
        .and_then(|()| key_file.commit())
        .and_then(|()| cert_file.commit());
    if let Err(e) = written {
        eprintln!(
            "the server renewed the certificate (it renews each certificate once), but writing it failed; install \
             this certificate as {} with the key written to {} (if that failed too, the new key is lost: ask for a \
             new certificate):\n{pem}",
            cert_file.dest.display(),
            key_file.dest.display()
        );
        return Err(e);
    }
    let facts = portcullis_pki::compute_facts(&[rustls::pki_types::CertificateDer::from(new_cert.as_slice())], &[]);
    outln!(
        "renewed {}: serial {}, expires {}; wrote {} and {}",
        facts.cert_subject_dn_rfc2253,
        facts.cert_serial,
        facts.cert_not_after,
        cert_file.dest.display(),
        key_file.dest.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// GETs (`body` none) or POSTs a CSR to `url` and reads the certs-only PKCS#7 it answers with.
async fn fetch<C>(client: &Client<C, Full<Bytes>>, url: &str, body: Option<String>) -> anyhow::Result<Vec<Vec<u8>>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut req = Request::builder().uri(url);
    req = match &body {
        Some(_) => req
            .method(Method::POST)
            .header(header::CONTENT_TYPE, "application/pkcs10")
            .header("content-transfer-encoding", "base64"),
        None => req.method(Method::GET),
    };
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .with_context(|| format!("building the request to {url}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within 60 s"))?
        .with_context(|| format!("{url}: cannot reach the EST listener (does --ca name the CA of its certificate?)"))?;
    let status = resp.status();
    let answer = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: reading the answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        bail!(
            "the EST listener refused (HTTP {}): {}",
            status.as_u16(),
            String::from_utf8_lossy(&answer).trim()
        );
    }
    let compact: Vec<u8> = answer.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let p7 = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .with_context(|| format!("{url}: the answer is not base64"))?;
    portcullis_pki::est::pkcs7_certificates(&p7).with_context(|| format!("{url}: the answer"))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}
