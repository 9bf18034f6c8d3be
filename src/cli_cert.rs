//! `portcullis cert …`: client certificates from the command line.
//!
//! Today only `inspect`, which works offline and shows what the edge would compute for a
//! certificate: every `cf.tls_client_auth.*` and `portcullis.tls_client_auth.*` value and the
//! verdict. Commands that talk to a server (`create`, `list`, `show`, `revoke`, `reactivate`) will
//! join [`CertCommand`] later. Exit codes: 0 verified and not revoked, 1 not, 2 unreadable input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use portcullis_pki::{CertificateDer, FactValue, VerifierBuilder};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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
        println!("{}", serde_json::to_string_pretty(&serde_json::Value::Object(map))?);
    } else {
        let width = fields.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, value) in &fields {
            let shown = match value {
                FactValue::Bool(b) => b.to_string(),
                FactValue::Str("") => "\"\"".to_owned(),
                FactValue::Str(s) => (*s).to_owned(),
                FactValue::Array(items) => serde_json::to_string(items)?,
            };
            println!("{name:<width$}  {shown}");
        }
        println!();
        println!(
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
