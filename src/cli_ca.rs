//! `portcullis ca …`: the managed CA (show, rotate, retire, its CRL, a CA signed by your own root) and bring-your-own CAs (upload, list, delete,
//! their CRLs) of a running server, through its admin API.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{ApiArgs, ApiClient, account_id, array, print_json, print_table, s};

#[derive(Debug, clap::Args)]
pub struct CaArgs {
    #[command(subcommand)]
    pub command: CaCommand,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// List the managed CAs: the active one (it issues) and any still trusted after a rotation.
    Show {
        /// Print only the active CA's certificate (PEM), e.g. for origins that verify forwarded certificates.
        #[arg(long)]
        pem: bool,
    },
    /// Make a new managed CA that issues from now on; the current one stays trusted until `ca retire`.
    Rotate {
        /// Key type of the new CA [default: p256].
        #[arg(long, value_parser = ["p256", "p384", "rsa2048", "rsa3072", "rsa4096"])]
        key_type: Option<String>,
        /// Organization (O=) of the new CA.
        #[arg(long)]
        organization: Option<String>,
    },
    /// Start a managed CA that your own CA signs (an intermediate under your root), instead of a self-signed one.
    ///
    /// The server makes the CA's key (it never leaves the server, sealed like every managed CA key) and a CSR,
    /// written to --out (or printed). Have your CA sign it as a CA (the CSR asks for CA:TRUE, pathlen:0 and
    /// keyCertSign, cRLSign, digitalSignature; e.g. `openssl x509 -req -copy_extensions copyall`), then `ca install`. Nothing issues
    /// from it until then.
    Request {
        /// Key type of the new CA [default: p256].
        #[arg(long, value_parser = ["p256", "p384", "rsa2048", "rsa3072", "rsa4096"])]
        key_type: Option<String>,
        /// Common name (CN=) of the new CA [default: Portcullis Managed CA <first 8 hex of its id>].
        #[arg(long)]
        common_name: Option<String>,
        /// Organization (O=) of the new CA.
        #[arg(long)]
        organization: Option<String>,
        /// Write the CSR (PEM) to this new file instead of standard output.
        #[arg(long, value_name = "FILE.csr")]
        out: Option<PathBuf>,
    },
    /// List the managed CA requests waiting for a certificate (`ca request`).
    Requests,
    /// Install the certificate your CA signed for a request: it becomes the active managed CA (the previous one
    /// stays trusted until `ca retire`).
    ///
    /// Refused, naming why, unless the certificate is for the request's key, is a CA that may sign certificates
    /// and CRLs, is valid now, has a subject key identifier and a subject that can be written again as an issuer,
    /// and the chain goes from its signer up to a self-signed root, every certificate of it a CA valid now within
    /// its pathlen.
    Install {
        /// The request's id (see `ca requests`).
        id: String,
        /// The signed certificate, PEM (the chain may follow it in the same file).
        #[arg(long, value_name = "CERT.pem")]
        cert: PathBuf,
        /// The certificates above it, PEM: the CA that signed it first, up to and including your root.
        #[arg(long, value_name = "CHAIN.pem")]
        chain: Option<PathBuf>,
    },
    /// Delete a managed CA request and its key.
    DeleteRequest {
        /// The request's id (see `ca requests`).
        id: String,
    },
    /// Stop trusting a managed CA that a rotation replaced; certificates it issued stop working.
    Retire {
        /// The managed CA's id (see `ca show`).
        id: String,
    },
    /// Upload your own CA certificate (PEM; intermediates after it) to verify client certificates against.
    Upload {
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// The CA certificate, PEM.
        #[arg(value_name = "FILE.pem")]
        file: PathBuf,
    },
    /// Upload a client certificate and its key for the edge to present to `https://` origins that require one
    /// (`host add|set HOST --origin-client-cert ID`). The key is sealed at rest and never shown again.
    UploadClient {
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// The certificate, then its intermediates, PEM.
        #[arg(value_name = "CERT.pem")]
        cert: PathBuf,
        /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
        #[arg(value_name = "KEY.pem")]
        key: PathBuf,
    },
    /// List the uploaded CAs and client certificates.
    ListUploaded,
    /// Delete an uploaded CA (refused while hostnames use it: `mtls disable HOST --ca ID` first).
    DeleteUploaded {
        /// The uploaded CA's id (see `ca list-uploaded`).
        id: String,
    },
    /// Have the server fetch an uploaded CA's CRLs from URLs (every --crl-refresh seconds); no URLs stops fetching.
    ///
    /// Each fetch is checked like an upload; `ca list-uploaded` shows when the last one worked, or why it failed
    /// (the last good CRLs stay in use).
    CrlUrls {
        /// The uploaded CA's id (see `ca list-uploaded`).
        id: String,
        /// http:// or https:// URLs, one per CA of the bundle that publishes a CRL.
        urls: Vec<String>,
        /// Add the URLs named in the CRL distribution points of the certificates in this PEM file to those given
        /// (the list replaces the current one): a client certificate the CA issued names the CA's CRL, and an
        /// intermediate of the bundle names its root's. Repeatable.
        #[arg(long, value_name = "CERT.pem")]
        from_cert: Vec<PathBuf>,
    },
    /// Have the edge check an uploaded CA's client certificates with OCSP (NGINX's `ssl_ocsp`).
    ///
    /// `soft`: a certificate the responder says is revoked is revoked (as with a CRL); one without an answer
    /// (responder down or unknown, no responder) is accepted as the chain check found it. `hard`: a certificate
    /// without a good answer is not verified. `off` stops checking. Connections wait for the answer (at most
    /// --ocsp-timeout seconds) before their first request; answers are cached until their nextUpdate, at most an
    /// hour.
    Ocsp {
        /// The uploaded CA's id (see `ca list-uploaded`).
        id: String,
        /// off, soft or hard.
        #[arg(value_parser = ["off", "soft", "hard"])]
        check: String,
        /// An http:// responder to ask instead of the one each certificate names.
        #[arg(long, value_name = "URL")]
        responder: Option<String>,
    },
    /// Choose whether an uploaded CA fails closed on stale CRLs.
    ///
    /// `off` (the default): a CRL past its nextUpdate stays in use, so that stale revocation data cannot take the
    /// edge down (the expiry metrics and alerts show it). SECONDS (0 to 2592000): that long past a CRL's
    /// nextUpdate, the edge trusts none of the CA's certificates until a newer CRL arrives, nor any while a
    /// certificate of the bundle on clients' paths (the CA that issued them and every CA above it in the bundle,
    /// the root included) has no CRL (OpenSSL's "CRL has expired", "unable to get certificate CRL"). Connections
    /// already open are judged again at their next request.
    CrlGrace {
        /// The uploaded CA's id (see `ca list-uploaded`).
        id: String,
        /// Seconds of grace past nextUpdate, or `off`.
        #[arg(value_name = "SECONDS|off")]
        grace: String,
    },
    /// Revoke one certificate an uploaded CA issued, at the edge and at once, without waiting for the CA's CRL.
    ///
    /// Every edge node refuses it as revoked from its next snapshot (`cf.tls_client_auth.cert_revoked`; on
    /// hostnames that require a trusted certificate its handshakes fail). Give the certificate (PEM; a certificate
    /// of this CA must have issued it; an intermediate's revokes everything under it), or its serial number for one
    /// that a certificate of this CA issued directly, as security events show it.
    Revoke {
        /// The uploaded CA's id (see `ca list-uploaded`).
        id: String,
        /// The certificate to revoke, PEM.
        #[arg(
            value_name = "CERT.pem",
            required_unless_present = "serial",
            conflicts_with = "serial"
        )]
        cert: Option<PathBuf>,
        /// Its serial number (hex; `:` between bytes allowed) instead.
        #[arg(long, value_name = "HEX")]
        serial: Option<String>,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List the certificates revoked at the edge under an uploaded CA.
    Revocations {
        /// The uploaded CA's id (see `ca list-uploaded`).
        id: String,
    },
    /// Take back a revocation made with `ca revoke`: the certificate is trusted again.
    Unrevoke {
        /// The uploaded CA's id.
        id: String,
        /// The revocation's id (see `ca revocations`).
        revocation_id: String,
    },
    /// Fetch a managed CA's CRL, or give an uploaded CA its CRL.
    ///
    /// `ca crl ID --out FILE` downloads the current CRL (DER) of the managed CA ID from the server's public
    /// /crl/ID.crl and writes it to FILE, replacing FILE (a CRL is refreshed, not kept).
    ///
    /// `ca crl ID --upload FILE…` sends the CRLs in the FILEs (PEM, possibly several per file, or DER) as the CRLs
    /// of the uploaded CA bundle ID, replacing the previous ones: one per certificate of the bundle at most (the
    /// root's, an intermediate's), each signed by it. The edge then refuses the certificates they list.
    Crl(CrlArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("direction").required(true).args(["out", "upload"])))]
pub struct CrlArgs {
    /// A managed CA's id (with --out) or an uploaded CA's id (with --upload).
    pub id: String,
    /// Download the managed CA's CRL (DER) into FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Upload the CRLs in FILE… (PEM or DER) as the uploaded CA bundle's CRLs.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub upload: Vec<PathBuf>,
}

/// Refuses ids that would change the request's path.
fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.contains(['/', '?', '#', '%']) {
        bail!("{id:?} is not a CA id");
    }
    Ok(())
}

const CA_HEADERS: [&str; 7] = ["ID", "NAME", "STATUS", "KEY_TYPE", "CREATED_ON", "EXPIRES_ON", "ISSUER"];

fn ca_row(ca: &Value) -> Vec<String> {
    vec![
        s(ca, "id"),
        s(ca, "name"),
        s(ca, "status"),
        s(ca, "key_type"),
        s(ca, "created_on"),
        s(ca, "expires_on"),
        s(ca, "issuer"),
    ]
}

const REQUEST_HEADERS: [&str; 4] = ["ID", "NAME", "KEY_TYPE", "CREATED_ON"];

fn request_row(request: &Value) -> Vec<String> {
    vec![
        s(request, "id"),
        s(request, "name"),
        s(request, "key_type"),
        s(request, "created_on"),
    ]
}

pub async fn ca(args: CaArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let json = args.api.json;
    match args.command {
        CaCommand::Show { pem } => {
            let account = account_id(&api).await?;
            let cas = api.get(&format!("/accounts/{account}/managed_ca")).await?.result;
            if json {
                print_json(&cas)?;
            } else if pem {
                let active = array(&cas)
                    .iter()
                    .find(|ca| s(ca, "status") == "active")
                    .context("the server has no active managed CA")?;
                out!("{}", s(active, "certificate"));
            } else {
                print_table(&CA_HEADERS, &array(&cas).iter().map(ca_row).collect::<Vec<_>>());
            }
        }
        CaCommand::Rotate { key_type, organization } => {
            let account = account_id(&api).await?;
            let mut body = json!({});
            if let Some(key_type) = key_type {
                body["key_type"] = json!(key_type);
            }
            if let Some(organization) = organization {
                body["organization"] = json!(organization);
            }
            let ca = api
                .send(Method::POST, &format!("/accounts/{account}/managed_ca/rotate"), &body)
                .await?
                .result;
            if json {
                print_json(&ca)?;
            } else {
                outln!(
                    "new active managed CA {} ({}, {}); the previous one stays trusted until `portcullis ca retire ID`",
                    s(&ca, "name"),
                    s(&ca, "id"),
                    s(&ca, "key_type")
                );
            }
        }
        CaCommand::Request {
            key_type,
            common_name,
            organization,
            out,
        } => {
            if let Some(path) = &out
                && path.exists()
            {
                bail!("{} already exists; refusing to overwrite it", path.display());
            }
            let account = account_id(&api).await?;
            let mut body = json!({});
            for (key, value) in [
                ("key_type", key_type),
                ("common_name", common_name),
                ("organization", organization),
            ] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            let request = api
                .send(Method::POST, &format!("/accounts/{account}/managed_ca/requests"), &body)
                .await?
                .result;
            let id = s(&request, "id");
            if let Some(path) = &out {
                std::fs::write(path, s(&request, "csr"))
                    .with_context(|| format!("request {id} was made, but {} cannot be written", path.display()))?;
            }
            if json {
                print_json(&request)?;
            } else {
                if out.is_none() {
                    out!("{}", s(&request, "csr"));
                }
                let next = format!(
                    "managed CA request {id} ({}): have your CA sign {}, then `portcullis ca install {id} --cert \
                     SIGNED.pem --chain CHAIN.pem`",
                    s(&request, "name"),
                    out.as_ref()
                        .map_or_else(|| "the CSR above".to_owned(), |p| p.display().to_string())
                );
                if out.is_some() {
                    outln!("{next}");
                } else {
                    eprintln!("{next}");
                }
            }
        }
        CaCommand::Requests => {
            let account = account_id(&api).await?;
            let requests = api
                .get(&format!("/accounts/{account}/managed_ca/requests"))
                .await?
                .result;
            if json {
                print_json(&requests)?;
            } else {
                print_table(
                    &REQUEST_HEADERS,
                    &array(&requests).iter().map(request_row).collect::<Vec<_>>(),
                );
            }
        }
        CaCommand::Install { id, cert, chain } => {
            check_id(&id)?;
            let read = |path: &Path| {
                std::fs::read_to_string(path).with_context(|| format!("cannot read {} as PEM text", path.display()))
            };
            let mut body = json!({ "certificate": read(&cert)? });
            if let Some(chain) = &chain {
                body["chain"] = json!(read(chain)?);
            }
            let account = account_id(&api).await?;
            let ca = api
                .send(
                    Method::POST,
                    &format!("/accounts/{account}/managed_ca/requests/{id}/install"),
                    &body,
                )
                .await?
                .result;
            if json {
                print_json(&ca)?;
            } else {
                outln!(
                    "new active managed CA {} ({}, signed by {}, expires {}); the previous one stays trusted until \
                     `portcullis ca retire ID`",
                    s(&ca, "name"),
                    s(&ca, "id"),
                    s(&ca, "issuer"),
                    s(&ca, "expires_on")
                );
            }
        }
        CaCommand::DeleteRequest { id } => {
            check_id(&id)?;
            let account = account_id(&api).await?;
            api.delete(&format!("/accounts/{account}/managed_ca/requests/{id}"))
                .await?;
            if json {
                print_json(&json!({ "id": id }))?;
            } else {
                outln!("deleted managed CA request {id}");
            }
        }
        CaCommand::Retire { id } => {
            check_id(&id)?;
            let account = account_id(&api).await?;
            let ca = api
                .delete(&format!("/accounts/{account}/managed_ca/{id}"))
                .await?
                .result;
            if json {
                print_json(&ca)?;
            } else {
                outln!(
                    "retired managed CA {} ({}): status {}",
                    s(&ca, "name"),
                    s(&ca, "id"),
                    s(&ca, "status")
                );
            }
        }
        CaCommand::Upload { name, file } => {
            let pem = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {} as PEM text", file.display()))?;
            upload(
                &api,
                json,
                json!({ "ca": true, "certificates": pem, "name": name }),
                "CA",
                "use it with `portcullis mtls enable HOST --ca",
            )
            .await?;
        }
        CaCommand::UploadClient { name, cert, key } => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path).with_context(|| format!("cannot read {} as PEM text", path.display()))
            };
            upload(
                &api,
                json,
                json!({ "ca": false, "certificates": read(&cert)?, "private_key": read(&key)?, "name": name }),
                "client certificate",
                "present it with `portcullis host set HOST --origin-client-cert",
            )
            .await?;
        }
        CaCommand::ListUploaded => {
            let account = account_id(&api).await?;
            let list = api.get(&format!("/accounts/{account}/mtls_certificates")).await?.result;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<_> = array(&list)
                    .iter()
                    .map(|c| {
                        vec![
                            s(c, "id"),
                            s(c, "name"),
                            if c["ca"].as_bool() == Some(false) {
                                "client"
                            } else {
                                "CA"
                            }
                            .to_owned(),
                            s(c, "issuer"),
                            s(c, "serial_number"),
                            s(c, "expires_on"),
                            s(c, "crl_updated_on"),
                            crl_source(c),
                            ocsp_policy(c),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "ID",
                        "NAME",
                        "KIND",
                        "ISSUER",
                        "SERIAL",
                        "EXPIRES_ON",
                        "CRL_UPDATED_ON",
                        "CRL_SOURCE",
                        "OCSP",
                    ],
                    &rows,
                );
            }
        }
        CaCommand::DeleteUploaded { id } => {
            check_id(&id)?;
            let account = account_id(&api).await?;
            let deleted = api
                .delete(&format!("/accounts/{account}/mtls_certificates/{id}"))
                .await?
                .result;
            if json {
                print_json(&deleted)?;
            } else {
                outln!("deleted uploaded CA {id}");
            }
        }
        CaCommand::CrlUrls {
            id,
            mut urls,
            from_cert,
        } => {
            check_id(&id)?;
            for path in &from_cert {
                let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                let named = portcullis_pki::crl_distribution_points(&pem)
                    .with_context(|| format!("{} is not a certificate", path.display()))?;
                if named.is_empty() {
                    bail!("{} names no http:// or https:// CRL distribution point", path.display());
                }
                for url in named {
                    if !urls.contains(&url) {
                        urls.push(url);
                    }
                }
            }
            let account = account_id(&api).await?;
            let ca = api
                .send(
                    Method::PUT,
                    &format!("/accounts/{account}/mtls_certificates/{id}/crl_urls"),
                    &json!({ "urls": urls }),
                )
                .await?
                .result;
            if json {
                print_json(&ca)?;
            } else if urls.is_empty() {
                outln!("CA {id}: CRLs are no longer fetched (the last ones stay in use)");
            } else {
                outln!("CA {id}: CRLs are fetched from {}", urls.join(", "));
            }
        }
        CaCommand::CrlGrace { id, grace } => {
            check_id(&id)?;
            let seconds: Option<i64> = match grace.as_str() {
                "off" => None,
                n => Some(
                    n.parse()
                        .with_context(|| format!("the grace is a number of seconds or off, not {n:?}"))?,
                ),
            };
            let account = account_id(&api).await?;
            let ca = api
                .send(
                    Method::PUT,
                    &format!("/accounts/{account}/mtls_certificates/{id}/crl_grace"),
                    &json!({ "grace_seconds": seconds }),
                )
                .await?
                .result;
            if json {
                print_json(&ca)?;
            } else {
                match seconds {
                    None => outln!("CA {id}: a CRL past its nextUpdate stays in use"),
                    Some(s) => outln!("CA {id}: its certificates are refused {s} s after a CRL's nextUpdate passes"),
                }
            }
        }
        CaCommand::Revoke { id, cert, serial, note } => {
            check_id(&id)?;
            let account = account_id(&api).await?;
            let body = match (cert, serial) {
                (Some(path), _) => {
                    let pem = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    json!({ "certificate": pem, "note": note })
                }
                (None, Some(hex)) => json!({ "serial_number": hex, "note": note }),
                (None, None) => bail!("give the certificate (CERT.pem) or --serial"),
            };
            let revocation = api
                .send(
                    Method::POST,
                    &format!("/accounts/{account}/mtls_certificates/{id}/revocations"),
                    &body,
                )
                .await?
                .result;
            if json {
                print_json(&revocation)?;
            } else {
                outln!(
                    "CA {id}: certificate with serial {} revoked at the edge (revocation {})",
                    s(&revocation, "serial_number"),
                    s(&revocation, "id")
                );
            }
        }
        CaCommand::Revocations { id } => {
            check_id(&id)?;
            let account = account_id(&api).await?;
            let list = api
                .get(&format!("/accounts/{account}/mtls_certificates/{id}/revocations"))
                .await?
                .result;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<_> = array(&list)
                    .iter()
                    .map(|r| {
                        vec![
                            s(r, "id"),
                            s(r, "serial_number"),
                            r["issuer"].as_str().unwrap_or("(any of the CA)").to_owned(),
                            s(r, "created_on"),
                            s(r, "note"),
                        ]
                    })
                    .collect();
                print_table(&["ID", "SERIAL", "ISSUER", "REVOKED", "NOTE"], &rows);
            }
        }
        CaCommand::Unrevoke { id, revocation_id } => {
            check_id(&id)?;
            check_id(&revocation_id)?;
            let account = account_id(&api).await?;
            let removed = api
                .delete(&format!(
                    "/accounts/{account}/mtls_certificates/{id}/revocations/{revocation_id}"
                ))
                .await?
                .result;
            if json {
                print_json(&removed)?;
            } else {
                outln!("CA {id}: revocation {revocation_id} taken back");
            }
        }
        CaCommand::Ocsp { id, check, responder } => {
            check_id(&id)?;
            let account = account_id(&api).await?;
            let ca = api
                .send(
                    Method::PUT,
                    &format!("/accounts/{account}/mtls_certificates/{id}/ocsp"),
                    &json!({ "check": check, "responder": responder }),
                )
                .await?
                .result;
            if json {
                print_json(&ca)?;
            } else {
                outln!("CA {id}: OCSP {}", ocsp_policy(&ca));
            }
        }
        CaCommand::Crl(crl) => {
            check_id(&crl.id)?;
            match (crl.out, crl.upload.is_empty()) {
                (Some(out), _) => {
                    let der = api.get_raw(&format!("/crl/{}.crl", crl.id)).await?;
                    replace_file(&out, &der)?;
                    if json {
                        print_json(&json!({ "id": crl.id, "file": out, "bytes": der.len() }))?;
                    } else {
                        outln!(
                            "wrote the CRL of managed CA {} to {} ({} bytes)",
                            crl.id,
                            out.display(),
                            der.len()
                        );
                    }
                }
                (None, false) => {
                    let mut text = String::new();
                    for file in &crl.upload {
                        let data = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
                        match std::str::from_utf8(&data) {
                            Ok(pem) if pem.trim_start().starts_with("-----BEGIN") => {
                                text.push_str(pem.trim());
                                text.push('\n');
                            }
                            _ => text.push_str(&portcullis_pki::pem::encode("X509 CRL", &data)),
                        }
                    }
                    let account = account_id(&api).await?;
                    let result = api
                        .send(
                            Method::PUT,
                            &format!("/accounts/{account}/mtls_certificates/{}/crl", crl.id),
                            &json!({ "crl": text }),
                        )
                        .await?
                        .result;
                    if json {
                        print_json(&result)?;
                    } else {
                        let count = array(&result["crls"]).len();
                        outln!(
                            "uploaded {count} CRL{} with {} revoked certificate(s) for CA {} (this update {}, next update {})",
                            if count == 1 { "" } else { "s" },
                            s(&result, "entries"),
                            crl.id,
                            s(&result, "this_update"),
                            match s(&result, "next_update") {
                                next if next.is_empty() => "none".to_owned(),
                                next => next,
                            }
                        );
                    }
                }
                (None, true) => bail!("give --out FILE or --upload FILE…"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Posts `body` to `mtls_certificates` and reports what was stored, ending with `use_it` and its id (how to use it).
async fn upload(api: &ApiClient, json: bool, body: Value, kind: &str, use_it: &str) -> anyhow::Result<()> {
    let account = account_id(api).await?;
    let uploaded = api
        .send(Method::POST, &format!("/accounts/{account}/mtls_certificates"), &body)
        .await?
        .result;
    if json {
        print_json(&uploaded)?;
    } else {
        outln!(
            "uploaded {kind} {} ({}), issuer {}, expires {}; {use_it} {}`",
            s(&uploaded, "name"),
            s(&uploaded, "id"),
            s(&uploaded, "issuer"),
            s(&uploaded, "expires_on"),
            s(&uploaded, "id")
        );
    }
    Ok(())
}

/// Where an uploaded CA's CRLs come from, for `ca list-uploaded`: its URLs with the last fetch's outcome, or
/// `upload`.
fn crl_source(ca: &Value) -> String {
    if ca["ca"].as_bool() == Some(false) {
        return String::new();
    }
    let urls: Vec<&str> = array(&ca["crl_urls"]).iter().filter_map(Value::as_str).collect();
    if urls.is_empty() {
        return "upload".to_owned();
    }
    let outcome = match (ca["crl_fetch_error"].as_str(), ca["crl_fetched_on"].as_str()) {
        (Some(error), _) => format!("failing: {error}"),
        (None, Some(at)) => format!("fetched {at}"),
        (None, None) => "not fetched yet".to_owned(),
    };
    format!("{} ({outcome})", urls.join(" "))
}

/// An uploaded CA's OCSP policy, for people: `off`, or the check and the responder asked.
fn ocsp_policy(ca: &Value) -> String {
    if ca["ca"].as_bool() == Some(false) {
        return String::new();
    }
    match (s(ca, "ocsp_check"), ca["ocsp_responder"].as_str()) {
        (check, _) if check == "off" || check.is_empty() => "off".to_owned(),
        (check, Some(url)) => format!("{check} ({url})"),
        (check, None) => format!("{check} (each certificate's responder)"),
    }
}

/// Writes `contents` to `path` through a temporary file and a rename, so readers never see half a file.
fn replace_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}
