//! `portcullis cert …`: client certificates from the command line.
//!
//! `inspect` works offline and shows what the edge would compute for a certificate: every
//! `cf.tls_client_auth.*` and `portcullis.tls_client_auth.*` value and the verdict (exit codes: 0
//! verified and not revoked, 1 not, 2 unreadable input). `create`, `list`, `show`, `revoke` and
//! `reactivate` talk to a running server through its admin API.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use hyper::Method;
use portcullis_pki::{CertificateDer, FactValue, VerifierBuilder};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::client::{
    ApiArgs, ApiClient, ApiFailure, array, page_footer, print_json, print_table, s, zone_or_only, zones,
};

#[derive(Debug, clap::Args)]
pub struct CertArgs {
    #[command(subcommand)]
    pub command: CertCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Show every cf.tls_client_auth.* value the edge would compute for a certificate (offline).
    ///
    /// Without --ca nothing is trusted, so the certificate cannot be verified: the verdict is
    /// FAILED:unable to get local issuer certificate (or FAILED:self signed certificate).
    /// Exit status: 0 verified and not revoked, 1 otherwise, 2 when an input cannot be read.
    Inspect(InspectArgs),
    /// Issue a client certificate from the managed CA, with a key Portcullis generates or from your CSR.
    ///
    /// Writes cert.pem, ca.pem (the issuing managed CA), key.pem (mode 0600, generated keys only) and, with
    /// --p12-password, bundle.p12 (mode 0600) into --out; refuses to overwrite any of them. When your own CA signed
    /// the managed CA (`ca request`), also fullchain.pem: the certificate, the managed CA and the intermediates
    /// above it (not the root), what a client presents to servers that trust your root. The generated key is
    /// returned by the server once and never stored there. --json prints the API's result without the private key
    /// and the PKCS#12 bundle, which go only to the files.
    Create(Box<CreateArgs>),
    /// List client certificates (of --zone, or of every zone).
    List(ListArgs),
    /// Show one client certificate.
    Show(ShowArgs),
    /// Revoke a client certificate; the edge refuses it at once. It stays listed and can be reactivated.
    Revoke(OneCertArgs),
    /// Reactivate a revoked client certificate.
    Reactivate(OneCertArgs),
    /// Renew a certificate of the managed CA from the device that holds it, over the server's EST listener.
    ///
    /// Makes a new key and a CSR with the current certificate's names, presents the current certificate as the TLS
    /// client certificate (no API token), and writes the new certificate and key into --out, or over --cert and
    /// --key with --replace (the key first, each by a rename). The server renews each certificate once, once it is
    /// old enough (`serve --est-renew-after`), from its active managed CA.
    Renew(Box<crate::cli_renew::RenewArgs>),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Sign this PEM certificate signing request instead of generating a key; the subject and SANs come from it.
    #[arg(long, value_name = "CSR.pem",
          conflicts_with_all = ["key_type", "cn", "org", "ou", "country", "dns", "uri", "email", "ip", "p12_password"])]
    pub csr: Option<PathBuf>,
    /// Type of the key to generate [default: p256].
    #[arg(long, value_parser = ["p256", "p384", "rsa2048", "rsa3072"])]
    pub key_type: Option<String>,
    /// Subject common name (CN).
    #[arg(long, value_name = "NAME")]
    pub cn: Option<String>,
    /// Subject organization (O).
    #[arg(long, value_name = "O")]
    pub org: Option<String>,
    /// Subject organizational unit (OU).
    #[arg(long, value_name = "OU")]
    pub ou: Option<String>,
    /// Subject country (C), two letters.
    #[arg(long, value_name = "C")]
    pub country: Option<String>,
    /// DNS subject alternative names.
    #[arg(long, value_name = "NAME", num_args = 1..)]
    pub dns: Vec<String>,
    /// URI subject alternative names (e.g. spiffe://example.com/service).
    #[arg(long, value_name = "URI", num_args = 1..)]
    pub uri: Vec<String>,
    /// Email subject alternative names.
    #[arg(long, value_name = "EMAIL", num_args = 1..)]
    pub email: Vec<String>,
    /// IP address subject alternative names (IPv4 or IPv6).
    #[arg(long, value_name = "ADDRESS", num_args = 1..)]
    pub ip: Vec<std::net::IpAddr>,
    /// Days the certificate is valid (1 to 5475; the server's default is 3650, or the zone policy's
    /// max_validity_days when shorter, and shortened to end, in whole days, before the managed CA or its chain
    /// expires).
    #[arg(long, value_name = "N")]
    pub validity_days: Option<u32>,
    /// Zone id or name; by default the only zone there is.
    #[arg(long)]
    pub zone: Option<String>,
    /// Directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Also write bundle.p12 (certificate, key, the managed CA and, when your own CA signed it, the intermediates
    /// above it, not the root) protected by this password.
    #[arg(long, value_name = "PW", env = "PORTCULLIS_P12_PASSWORD", hide_env_values = true)]
    pub p12_password: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only certificates with this status.
    #[arg(long, value_parser = ["all", "active", "pending_revocation", "pending_reactivation", "revoked"])]
    pub status: Option<String>,
    /// Zone id or name; by default every zone.
    #[arg(long)]
    pub zone: Option<String>,
    /// Page to show (from 1).
    #[arg(long, value_name = "N")]
    pub page: Option<u32>,
    /// Certificates per page (the server's default is 20).
    #[arg(long, value_name = "N")]
    pub per_page: Option<u32>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The certificate's id.
    pub id: String,
    /// Zone id or name; by default every zone is searched.
    #[arg(long)]
    pub zone: Option<String>,
    /// Print only the certificate's PEM.
    #[arg(long, conflicts_with = "json")]
    pub pem: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct OneCertArgs {
    /// The certificate's id.
    pub id: String,
    /// Zone id or name; by default every zone is searched.
    #[arg(long)]
    pub zone: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The client certificate (PEM or DER). More certificates in the same PEM file are taken as
    /// the chain the client sends.
    pub cert: PathBuf,
    /// Intermediate certificates the client would send (PEM), after any in CERT.
    #[arg(long, value_name = "INTERMEDIATES.pem")]
    pub chain: Option<PathBuf>,
    /// A trusted CA certificate file (PEM bundle or DER). Repeat for several CAs.
    #[arg(long = "ca", value_name = "CA.pem")]
    pub ca: Vec<PathBuf>,
    /// A CRL (PEM or DER) signed by one of the --ca certificates. Repeatable.
    #[arg(long, value_name = "CRL")]
    pub crl: Vec<PathBuf>,
    /// Evaluate at this time (RFC 3339, e.g. 2030-01-01T00:00:00Z) instead of now.
    #[arg(long, value_name = "RFC3339-TIME")]
    pub at: Option<String>,
    /// Print one JSON object keyed by field name.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CertArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CertCommand::Inspect(args) => inspect(&args),
        CertCommand::Create(args) => crate::block_on(create(*args)),
        CertCommand::List(args) => crate::block_on(list(args)),
        CertCommand::Show(args) => crate::block_on(show(args)),
        CertCommand::Revoke(args) => crate::block_on(change_status(args, false)),
        CertCommand::Reactivate(args) => crate::block_on(change_status(args, true)),
        CertCommand::Renew(args) => crate::block_on(crate::cli_renew::renew(*args)),
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let data = read(path)?;
    let certs = portcullis_pki::pem::certificates_from_pem_or_der(&data)
        .with_context(|| format!("{} holds no certificate", path.display()))?;
    Ok(certs.into_iter().map(CertificateDer::from).collect())
}

fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let now = match &args.at {
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .with_context(|| format!("--at {text:?} is not an RFC 3339 time such as 2030-01-01T00:00:00Z"))?,
        None => OffsetDateTime::now_utc(),
    };
    let mut chain = certificates(&args.cert)?;
    if let Some(path) = &args.chain {
        chain.extend(certificates(path)?);
    }
    let mut builder = VerifierBuilder::new();
    for path in &args.ca {
        let data = read(path)?;
        builder
            .add_anchors_pem_or_der(&data)
            .with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
    }
    for path in &args.crl {
        let data = read(path)?;
        if args.ca.is_empty() {
            bail!("{}: a CRL needs the CA that signed it (--ca)", path.display());
        }
        builder
            .add_crl(&data)
            .with_context(|| format!("{}: CRL not accepted", path.display()))?;
    }
    let facts = builder.build().client_auth(&chain, now);
    let fields = facts.fields();

    if args.json {
        let mut map = serde_json::Map::new();
        for (name, value) in &fields {
            let value = match value {
                FactValue::Bool(b) => serde_json::Value::Bool(*b),
                FactValue::Str(s) => serde_json::Value::String((*s).to_owned()),
                FactValue::Array(items) => {
                    serde_json::Value::Array(items.iter().cloned().map(serde_json::Value::String).collect())
                }
            };
            map.insert((*name).to_owned(), value);
        }
        outln!("{}", serde_json::to_string_pretty(&serde_json::Value::Object(map))?);
    } else {
        let width = fields.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, value) in &fields {
            let shown = match value {
                FactValue::Bool(b) => b.to_string(),
                FactValue::Str("") => "\"\"".to_owned(),
                FactValue::Str(s) => (*s).to_owned(),
                FactValue::Array(items) => serde_json::to_string(items)?,
            };
            outln!("{name:<width$}  {shown}");
        }
        outln!();
        outln!(
            "verdict: presented={} verified={} revoked={} reason={} status={}",
            facts.cert_presented,
            facts.cert_verified,
            facts.cert_revoked,
            facts.verify_result,
            facts.status.as_str()
        );
    }
    Ok(if facts.cert_verified && !facts.cert_revoked {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The files `create` writes, in `out`.
struct OutFiles {
    cert: PathBuf,
    ca: PathBuf,
    /// Written only when your own CA signed the managed CA: the certificate, the managed CA and the intermediates
    /// above it.
    fullchain: PathBuf,
    key: Option<PathBuf>,
    p12: Option<PathBuf>,
}

impl OutFiles {
    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        [
            Some(&self.cert),
            Some(&self.ca),
            Some(&self.fullchain),
            self.key.as_ref(),
            self.p12.as_ref(),
        ]
        .into_iter()
        .flatten()
    }
}

/// The intermediates of a managed CA's chain (PEM): every certificate of it but the last, the root, which relying
/// parties hold already.
fn intermediates(chain: &str) -> anyhow::Result<String> {
    if chain.trim().is_empty() {
        return Ok(String::new());
    }
    let mut ders = portcullis_pki::pem::certificates_from_pem_or_der(chain.as_bytes())?;
    ders.pop();
    Ok(ders
        .iter()
        .map(|der| portcullis_pki::pem::encode("CERTIFICATE", der))
        .collect())
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let generated = args.csr.is_none();
    let api = ApiClient::new(&args.api)?;
    let zone = zone_or_only(&api, args.zone.as_deref()).await?;
    // Read before issuing: a generated key exists only in the answer, so nothing may fail between it and the files.
    let account = s(&zone["account"], "id");
    let cas = api.get(&format!("/accounts/{account}/managed_ca")).await?.result;
    let files = OutFiles {
        cert: args.out.join("cert.pem"),
        ca: args.out.join("ca.pem"),
        // Checked whatever CA issues: which one does is known only from the answer.
        fullchain: args.out.join("fullchain.pem"),
        key: generated.then(|| args.out.join("key.pem")),
        p12: args.p12_password.as_ref().map(|_| args.out.join("bundle.p12")),
    };
    // Checked before issuing, so that a refusal leaves no certificate behind on the server.
    for path in files.all() {
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite it (choose another --out)",
                path.display()
            );
        }
    }
    let mut body = match &args.csr {
        Some(path) => {
            let csr = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            json!({ "csr": csr })
        }
        None => {
            let mut body = json!({
                "generate_key": { "type": args.key_type.as_deref().unwrap_or("p256") },
            });
            for (key, value) in [
                ("common_name", &args.cn),
                ("organization", &args.org),
                ("organizational_unit", &args.ou),
                ("country", &args.country),
                ("pkcs12_password", &args.p12_password),
            ] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            if !(args.dns.is_empty() && args.uri.is_empty() && args.email.is_empty() && args.ip.is_empty()) {
                body["subject_alt_names"] =
                    json!({ "dns": args.dns, "uri": args.uri, "email": args.email, "ip": args.ip });
            }
            body
        }
    };
    if let Some(days) = args.validity_days {
        body["validity_days"] = json!(days);
    }

    let mut cert = api
        .send(
            Method::POST,
            &format!("/zones/{}/client_certificates", s(&zone, "id")),
            &body,
        )
        .await?
        .result;
    let id = s(&cert, "id");
    let issued = || format!("certificate {id} was issued, but");

    let issuer_id = s(&cert["certificate_authority"], "id");
    let ca = array(&cas)
        .iter()
        .find(|ca| s(ca, "id") == issuer_id)
        .or_else(|| array(&cas).iter().find(|ca| s(ca, "status") == "active"))
        .with_context(|| format!("{} the server lists no managed CA", issued()))?;

    // Everything computed before the first file is written, and the key right after the certificate: a failure
    // past this point must not lose a generated key.
    let intermediates = intermediates(&s(ca, "chain")).with_context(issued)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("{} cannot create {}", issued(), args.out.display()))?;
    write_new(&files.cert, s(&cert, "certificate").as_bytes(), false).with_context(issued)?;
    if let Some(path) = &files.key {
        let key = s(&cert, "private_key");
        if key.is_empty() {
            bail!("{} the server returned no private key", issued());
        }
        write_new(path, key.as_bytes(), true).with_context(issued)?;
    }
    if let Some(path) = &files.p12 {
        let bundle = decode_base64(&s(&cert, "pkcs12"))
            .with_context(|| format!("{} its PKCS#12 bundle is not valid base64", issued()))?;
        write_new(path, &bundle, true).with_context(issued)?;
    }
    write_new(&files.ca, s(ca, "certificate").as_bytes(), false).with_context(issued)?;
    // Only when the operator's root signed the CA: there is nothing above a self-signed one to present.
    if !s(ca, "chain").is_empty() {
        let full = format!("{}{}{intermediates}", s(&cert, "certificate"), s(ca, "certificate"));
        write_new(&files.fullchain, full.as_bytes(), false).with_context(issued)?;
    }

    if let Some(object) = cert.as_object_mut() {
        object.remove("private_key");
        object.remove("pkcs12");
    }
    if args.api.json {
        print_json(&cert)?;
    } else {
        outln!(
            "issued certificate {id} ({}), serial {}, expires {}, in zone {}",
            subject(&cert),
            s(&cert, "serial_number"),
            s(&cert, "expires_on"),
            s(&zone, "name")
        );
        for path in files.all().filter(|path| path.exists()) {
            outln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a new file (never replacing one); `private` makes it readable by its owner only.
fn write_new(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Decodes standard base64 (the API's encoding of binary results).
fn decode_base64(text: &str) -> anyhow::Result<Vec<u8>> {
    // The PEM reader is a strict base64 decoder; a PEM block is base64 between two marker lines.
    let blocks =
        portcullis_pki::pem::parse_blocks(&format!("-----BEGIN DATA-----\n{}\n-----END DATA-----\n", text.trim()))?;
    blocks.into_iter().next().map(|b| b.der).context("no data")
}

/// `CN=…, O=…, OU=…` of a certificate record, for messages.
fn subject(cert: &Value) -> String {
    let parts: Vec<String> = [
        ("CN", "common_name"),
        ("O", "organization"),
        ("OU", "organizational_unit"),
    ]
    .iter()
    .filter_map(|(short, key)| {
        let value = s(cert, key);
        (!value.is_empty()).then(|| format!("{short}={value}"))
    })
    .collect();
    if parts.is_empty() {
        "no subject".to_owned()
    } else {
        parts.join(", ")
    }
}

fn org_ou(cert: &Value) -> String {
    [s(cert, "organization"), s(cert, "organizational_unit")]
        .into_iter()
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

fn cert_row(cert: &Value) -> Vec<String> {
    vec![
        s(cert, "id"),
        s(cert, "common_name"),
        org_ou(cert),
        s(cert, "serial_number"),
        s(cert, "expires_on"),
        s(cert, "status"),
    ]
}

const CERT_HEADERS: [&str; 6] = ["ID", "COMMON_NAME", "ORGANIZATION/OU", "SERIAL", "EXPIRES_ON", "STATUS"];

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let zones = match &args.zone {
        Some(zone) => vec![zone_or_only(&api, Some(zone)).await?],
        None => zones(&api).await?,
    };
    let mut query = Vec::new();
    if let Some(status) = &args.status {
        query.push(format!("status={status}"));
    }
    if let Some(page) = args.page {
        query.push(format!("page={page}"));
    }
    if let Some(per_page) = args.per_page {
        query.push(format!("per_page={per_page}"));
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let mut all = Vec::new();
    let mut rows = Vec::new();
    let mut footers = Vec::new();
    for zone in &zones {
        let page = api
            .get(&format!("/zones/{}/client_certificates{query}", s(zone, "id")))
            .await?;
        for cert in array(&page.result) {
            let mut row = cert_row(cert);
            if zones.len() > 1 {
                row.push(s(zone, "name"));
            }
            rows.push(row);
            all.push(cert.clone());
        }
        if let Some(footer) = page_footer(page.result_info.as_ref(), "certificates") {
            footers.push(if zones.len() > 1 {
                format!("{}: {footer}", s(zone, "name"))
            } else {
                footer
            });
        }
    }
    if args.api.json {
        print_json(&Value::Array(all))?;
    } else {
        let mut headers = CERT_HEADERS.to_vec();
        if zones.len() > 1 {
            headers.push("ZONE");
        }
        print_table(&headers, &rows);
        for footer in footers {
            outln!("{footer}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The certificate `id` and its zone: in --zone, or in whichever zone has it.
async fn find_cert(api: &ApiClient, zone: Option<&str>, id: &str) -> anyhow::Result<(Value, Value)> {
    if id.is_empty() || id.contains(['/', '?', '#']) {
        bail!("{id:?} is not a certificate id");
    }
    let candidates = match zone {
        Some(zone) => vec![zone_or_only(api, Some(zone)).await?],
        None => zones(api).await?,
    };
    for zone in candidates {
        match api
            .get(&format!("/zones/{}/client_certificates/{id}", s(&zone, "id")))
            .await
        {
            Ok(found) => return Ok((zone, found.result)),
            Err(err) if ApiFailure::is_not_found(&err) => {}
            Err(err) => return Err(err),
        }
    }
    match zone {
        Some(zone) => bail!("no client certificate {id:?} in zone {zone}"),
        None => bail!("no client certificate {id:?} in any zone"),
    }
}

async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let (zone, cert) = find_cert(&api, args.zone.as_deref(), &args.id).await?;
    if args.api.json {
        print_json(&cert)?;
    } else if args.pem {
        out!("{}", s(&cert, "certificate"));
    } else {
        let ca = &cert["certificate_authority"];
        for (key, value) in [
            ("id", s(&cert, "id")),
            ("zone", s(&zone, "name")),
            ("status", s(&cert, "status")),
            ("common_name", s(&cert, "common_name")),
            ("organization", s(&cert, "organization")),
            ("organizational_unit", s(&cert, "organizational_unit")),
            ("country", s(&cert, "country")),
            ("serial_number", s(&cert, "serial_number")),
            ("fingerprint_sha256", s(&cert, "fingerprint_sha256")),
            ("issued_on", s(&cert, "issued_on")),
            ("expires_on", s(&cert, "expires_on")),
            ("validity_days", s(&cert, "validity_days")),
            ("certificate_authority", format!("{} ({})", s(ca, "name"), s(ca, "id"))),
        ] {
            outln!("{key:<22} {value}");
        }
        // A line of EST renewals (`cert renew`).
        for key in ["renewed_from", "renewed_as"] {
            if let Some(id) = cert[key].as_str() {
                outln!("{key:<22} {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn change_status(args: OneCertArgs, reactivate: bool) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let (zone, cert) = find_cert(&api, args.zone.as_deref(), &args.id).await?;
    let path = format!("/zones/{}/client_certificates/{}", s(&zone, "id"), s(&cert, "id"));
    let updated = if reactivate {
        api.send(Method::PATCH, &path, &json!({ "reactivate": true })).await?
    } else {
        api.delete(&path).await?
    }
    .result;
    if args.api.json {
        print_json(&updated)?;
    } else {
        outln!(
            "{} {} ({}): status {}",
            if reactivate { "reactivated" } else { "revoked" },
            s(&updated, "id"),
            subject(&updated),
            s(&updated, "status")
        );
    }
    Ok(ExitCode::SUCCESS)
}
