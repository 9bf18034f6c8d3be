//! The edge's wiring: builds the proxy's immutable `Snapshot` from the store's `EdgeState`, keeps it current from the
//! change feed (the binary is the only writer of snapshots), and batches security events into the store.
//!
//! A snapshot that fails to build is logged and counted, and the previous one stays in service. Hosts without an
//! uploaded server certificate get one from a local development CA (with a warning), so that a fresh install works.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use arc_swap::ArcSwap;
use portcullis_admin::{
    CertificateForwarding, FIREWALL_PHASE, HostnameSettings, OriginSteering, RATELIMIT_PHASE, TlsClientAuth,
    add_stored_list, compile_stored_rules,
};
use portcullis_pki::MasterKey;
use portcullis_proxy::snapshot::TrustedCa;
use portcullis_proxy::{
    EventSink, Forwarding, HealthBook, HealthCheck, Host, HostParams, Mtls, MtlsMode, NormalizationScope,
    NormalizationType, Origin, OriginIdentity, ServerCert, Snapshot, Steering, TlsSessions, Transforms,
    UrlNormalization,
};
use portcullis_rules::CompiledRuleset;
use portcullis_store::{CaRef, EdgeState, Store};
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// A CA made on this machine for hosts that have no uploaded certificate; for development only.
pub struct DevEdgeCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// Where its certificate is written, for `curl --cacert`.
    pub cert_path: PathBuf,
    /// Leaf certificates already made, by hostname, so reloads reuse them.
    leaves: Mutex<HashMap<String, (String, String)>>,
}

impl DevEdgeCa {
    /// Loads the development CA from `data_dir` (its key sealed with the master key), or makes one.
    pub fn load_or_create(data_dir: &Path, master: &MasterKey) -> anyhow::Result<DevEdgeCa> {
        const SEAL_ID: &str = "edge-dev-ca";
        let cert_path = data_dir.join("edge-dev-ca.pem");
        let key_path = data_dir.join("edge-dev-ca.key.sealed");
        let (cert_pem, key) = match (std::fs::read_to_string(&cert_path), std::fs::read(&key_path)) {
            (Ok(pem), Ok(sealed)) => {
                let pkcs8 = portcullis_pki::seal::unseal(master, SEAL_ID, &sealed)
                    .with_context(|| format!("unsealing {} (another master key?)", key_path.display()))?;
                let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).context("the development CA key")?;
                (pem, key)
            }
            _ => {
                let key = rcgen::KeyPair::generate().context("making the development CA key")?;
                let mut params = rcgen::CertificateParams::default();
                params.distinguished_name = rcgen::DistinguishedName::new();
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, "Portcullis development edge CA");
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
                params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
                let now = time::OffsetDateTime::now_utc();
                params.not_before = now - time::Duration::hours(1);
                params.not_after = now + time::Duration::days(3650);
                let cert = params.self_signed(&key).context("making the development CA")?;
                let sealed = portcullis_pki::seal::seal(master, SEAL_ID, &key.serialize_der());
                crate::serve::write_private_file_replacing(&key_path, &sealed)?;
                std::fs::write(&cert_path, cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
                (cert.pem(), key)
            }
        };
        let issuer = rcgen::Issuer::from_ca_cert_pem(&cert_pem, key).context("reading the development CA")?;
        Ok(DevEdgeCa {
            issuer,
            cert_path,
            leaves: Mutex::default(),
        })
    }

    /// A server certificate (chain PEM, key PEM) for `hostname`.
    fn leaf(&self, hostname: &str) -> anyhow::Result<(String, String)> {
        let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pair) = leaves.get(hostname) {
            return Ok(pair.clone());
        }
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![hostname.to_owned()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(397);
        let cert = params.signed_by(&key, &self.issuer)?;
        let pair = (cert.pem(), key.serialize_pem());
        leaves.insert(hostname.to_owned(), pair.clone());
        tracing::warn!(
            hostname,
            "no uploaded server certificate: serving one from the development edge CA"
        );
        Ok(pair)
    }
}

/// What the snapshot builder needs besides the store's state.
pub struct EdgeBuilder {
    pub master_key: Arc<MasterKey>,
    pub dev_ca: DevEdgeCa,
    /// Host used for handshakes without SNI or with an unknown one.
    pub default_host: Option<String>,
    /// Each hostname's TLS session cache and ticket keys, kept from one snapshot to the next so that sessions
    /// resume across reloads; ticket keys come from the master key, so every node of a fleet opens every
    /// other node's tickets.
    pub sessions: Mutex<HashMap<String, TlsSessions>>,
    /// Origin servers' passive health, kept from one snapshot to the next so that a reload does not send
    /// requests back to a server that was found down.
    pub origin_health: HealthBook,
    /// The expiry gauges of the last snapshot built, in Prometheus' text format, for `/metrics` to append.
    pub expiry: Arc<Mutex<String>>,
}

/// The master-key label of the secret the edge's TLS session-ticket keys are derived from.
const TICKET_SECRET_LABEL: &str = "portcullis/edge/tls-ticket-secret/v1";

/// The newest uploaded server certificate of the hostname's zone that covers it.
fn uploaded_cert<'a>(
    state: &'a EdgeState,
    host: &portcullis_store::Hostname,
) -> Option<&'a portcullis_store::CustomCertificate> {
    state
        .custom_certificates
        .iter()
        .filter(|c| c.zone_id == host.zone_id)
        .find(|c| c.hosts.iter().any(|pattern| covers(pattern, &host.hostname)))
}

/// Gauges of when what the edge relies on runs out, as Unix times, so that an alert can fire weeks ahead
/// (`portcullis_certificate_not_after_timestamp_seconds - time() < 14 * 86400`): each hostname's uploaded server
/// certificate, each managed and uploaded CA (and the chain above a managed CA your root signed), and each uploaded
/// CRL's `nextUpdate`. Rebuilt with every snapshot,
/// so removed objects leave no series behind. A CRL already past its `nextUpdate` is still used (its revocations
/// stay in force rather than every certificate failing) and logged at every build until a newer one is uploaded.
fn expiry_metrics(state: &EdgeState, now: OffsetDateTime) -> String {
    use std::fmt::Write as _;
    // The certificates above managed CAs that the operator's root signed: issued certificates chain through them
    // for relying parties that trust the root, so they must not lapse unnoticed either.
    let mut chains: Vec<(String, String)> = Vec::new();
    for ca in &state.managed_cas {
        let Ok(ders) = portcullis_pki::pem::certificates_from_pem_or_der(ca.chain.as_bytes()) else {
            continue;
        };
        for (n, der) in ders.iter().enumerate() {
            chains.push((
                format!("kind=\"managed_ca_chain\",id=\"{}\",position=\"{}\"", ca.id, n + 1),
                portcullis_pki::pem::encode("CERTIFICATE", der),
            ));
        }
    }
    // (labels, the certificate's PEM, its notAfter when the store has it).
    let mut certs: Vec<(String, &str, Option<i64>)> = Vec::new();
    for host in &state.hostnames {
        if let Some(cert) = uploaded_cert(state, host) {
            let labels = format!("kind=\"server\",host=\"{}\",id=\"{}\"", host.hostname, cert.id);
            certs.push((labels, &cert.certificate, Some(cert.expires_on)));
        }
    }
    for ca in &state.managed_cas {
        certs.push((format!("kind=\"managed_ca\",id=\"{}\"", ca.id), &ca.certificate, None));
    }
    for (labels, pem) in &chains {
        certs.push((labels.clone(), pem, None));
    }
    for cert in &state.mtls_certificates {
        let kind = if cert.ca { "uploaded_ca" } else { "origin_client" };
        let labels = format!("kind=\"{kind}\",id=\"{}\"", cert.id);
        certs.push((labels, &cert.certificates, Some(cert.expires_on)));
    }
    let mut not_after = String::from(
        "# HELP portcullis_certificate_not_after_timestamp_seconds When a certificate the edge relies on expires \
         (Unix time): uploaded server certificates by hostname (those obtained over ACME too), managed and uploaded \
         CAs, the chains above managed CAs your own root signed, origin client certificates.\n\
         # TYPE portcullis_certificate_not_after_timestamp_seconds gauge\n",
    );
    // With notBefore, an alert can scale with the lifetime: certificates over ACME renew when a third is left.
    let mut not_before = String::from(
        "# HELP portcullis_certificate_not_before_timestamp_seconds When a certificate the edge relies on became \
         valid (Unix time); the same series as portcullis_certificate_not_after_timestamp_seconds.\n\
         # TYPE portcullis_certificate_not_before_timestamp_seconds gauge\n",
    );
    for (labels, pem, stored_not_after) in certs {
        match (portcullis_pki::certificate_validity(pem.as_bytes()), stored_not_after) {
            (Ok((from, until)), stored) => {
                let until = stored.unwrap_or(until.unix_timestamp());
                let _ = writeln!(
                    not_after,
                    "portcullis_certificate_not_after_timestamp_seconds{{{labels}}} {until}"
                );
                let _ = writeln!(
                    not_before,
                    "portcullis_certificate_not_before_timestamp_seconds{{{labels}}} {}",
                    from.unix_timestamp()
                );
            }
            (Err(e), Some(until)) => {
                tracing::warn!(certificate = %labels, error = %e, "cannot read a certificate's validity");
                let _ = writeln!(
                    not_after,
                    "portcullis_certificate_not_after_timestamp_seconds{{{labels}}} {until}"
                );
            }
            (Err(e), None) => tracing::warn!(certificate = %labels, error = %e, "cannot read a certificate's expiry"),
        }
    }
    let mut out = not_after;
    out.push_str(&not_before);
    out.push_str(
        "# HELP portcullis_crl_next_update_timestamp_seconds When an uploaded CA's CRL passes its nextUpdate (Unix \
         time); upload a newer CRL before then.\n\
         # TYPE portcullis_crl_next_update_timestamp_seconds gauge\n",
    );
    for ca in &state.mtls_certificates {
        let Some(crl) = &ca.crl else { continue };
        match portcullis_pki::crl_next_update(crl) {
            Ok(Some(next)) => {
                let _ = writeln!(
                    out,
                    "portcullis_crl_next_update_timestamp_seconds{{kind=\"uploaded_ca\",id=\"{}\"}} {}",
                    ca.id,
                    next.unix_timestamp()
                );
                if next < now {
                    tracing::warn!(
                        ca = %ca.id,
                        name = %ca.name,
                        next_update = %next,
                        "the uploaded CA's CRL is past its nextUpdate; it is still used: upload a newer one"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(ca = %ca.id, error = %e, "cannot read the uploaded CRL's nextUpdate"),
        }
    }
    // Per zone, not per certificate: a zone may hold 100,000 devices, one series each would swamp Prometheus.
    out.push_str(
        "# HELP portcullis_client_certificates_active Client certificates the managed CA issued that are active and \
         unexpired, per zone.\n\
         # TYPE portcullis_client_certificates_active gauge\n\
         # HELP portcullis_client_certificate_soonest_not_after_timestamp_seconds When the first active client \
         certificate of the zone expires (Unix time); `portcullis cert list` or the dashboard's overview names it.\n\
         # TYPE portcullis_client_certificate_soonest_not_after_timestamp_seconds gauge\n",
    );
    // Every zone gets a count, 0 included, so that an alert on a zone running out of certificates can fire.
    for zone in &state.zones {
        let found = state.client_certificate_expiry.iter().find(|(id, _, _)| *id == zone.id);
        let active = found.map_or(0, |(_, active, _)| *active);
        let _ = writeln!(
            out,
            "portcullis_client_certificates_active{{zone=\"{}\"}} {active}",
            zone.name
        );
        if let Some((_, _, soonest)) = found {
            let _ = writeln!(
                out,
                "portcullis_client_certificate_soonest_not_after_timestamp_seconds{{zone=\"{}\"}} {soonest}",
                zone.name
            );
        }
    }
    out
}

/// What a hostname takes from its zone.
struct ZoneParts {
    ruleset: Arc<CompiledRuleset>,
    ratelimit: Arc<CompiledRuleset>,
    url_normalization: UrlNormalization,
    /// Whether the zone's "Add TLS client auth headers" managed transform is on, and its other transforms.
    transforms: (bool, Transforms),
}

/// The proxy's form of a zone's stored URL normalization setting.
fn url_normalization(zone: &portcullis_store::Zone) -> anyhow::Result<UrlNormalization> {
    let scope = match zone.url_normalization_scope.as_str() {
        "incoming" => NormalizationScope::Incoming,
        "both" => NormalizationScope::Both,
        "none" => NormalizationScope::None,
        other => return Err(anyhow!("unknown URL normalization scope {other:?}")),
    };
    let kind = match zone.url_normalization_type.as_str() {
        "cloudflare" => NormalizationType::Cloudflare,
        "rfc3986" => NormalizationType::Rfc3986,
        other => return Err(anyhow!("unknown URL normalization type {other:?}")),
    };
    Ok(UrlNormalization { scope, kind })
}

/// Whether the certificate name `pattern` (maybe `*.example.com`) covers `hostname`.
fn covers(pattern: &str, hostname: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => hostname
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == hostname,
    }
}

impl EdgeBuilder {
    /// Compiles `state` into a snapshot. Any invalid piece fails the whole build, naming the host.
    pub fn build(&self, state: &EdgeState) -> anyhow::Result<Snapshot> {
        let mut lists = portcullis_rules::Lists::new();
        for list in &state.lists {
            add_stored_list(&mut lists, list).map_err(|e| anyhow!("stored list: {e}"))?;
        }
        let mut rulesets: HashMap<&str, Arc<CompiledRuleset>> = HashMap::new();
        let mut ratelimits: HashMap<&str, Arc<CompiledRuleset>> = HashMap::new();
        for rs in &state.rulesets {
            let compiled = compile_stored_rules(&rs.phase, &rs.rules, &lists)
                .map_err(|e| anyhow!("zone {}: stored {} rules do not compile: {e}", rs.zone_id, rs.phase))?;
            if rs.phase == FIREWALL_PHASE {
                rulesets.insert(rs.zone_id.as_str(), Arc::new(compiled));
            } else if rs.phase == RATELIMIT_PHASE {
                ratelimits.insert(rs.zone_id.as_str(), Arc::new(compiled));
            }
        }
        let empty =
            Arc::new(CompiledRuleset::compile(&portcullis_rules::Ruleset::default()).map_err(|e| anyhow!("{e}"))?);
        let mut normalization: HashMap<&str, UrlNormalization> = HashMap::new();
        for zone in &state.zones {
            normalization.insert(
                zone.id.as_str(),
                url_normalization(zone).with_context(|| format!("zone {}", zone.name))?,
            );
        }
        // Each zone's managed transforms: "Add TLS client auth headers" makes each of its hostnames forward the
        // cf-cert-* headers, whatever its own forwarding styles; the others apply as they are.
        let transforms: HashMap<&str, (bool, Transforms)> = state
            .zones
            .iter()
            .map(|z| {
                let on = |list: &[String], id: &str| list.iter().any(|h| h == id);
                let (request, response) = (&z.managed_request_headers, &z.managed_response_headers);
                let zone_transforms = Transforms {
                    true_client_ip: on(request, "add_true_client_ip_headers"),
                    security_headers: on(response, "add_security_headers"),
                    remove_powered_by: on(response, "remove_x-powered-by_header"),
                };
                (
                    z.id.as_str(),
                    (on(request, "add_client_certificate_headers"), zone_transforms),
                )
            })
            .collect();
        let mut snapshot = Snapshot::new(state.generation);
        let mut verifiers = Verifiers::new(state);
        for host in &state.hostnames {
            let built = self
                .host(
                    state,
                    &mut verifiers,
                    host,
                    ZoneParts {
                        ruleset: rulesets
                            .get(host.zone_id.as_str())
                            .cloned()
                            .unwrap_or_else(|| empty.clone()),
                        ratelimit: ratelimits
                            .get(host.zone_id.as_str())
                            .cloned()
                            .unwrap_or_else(|| empty.clone()),
                        url_normalization: normalization.get(host.zone_id.as_str()).copied().unwrap_or_default(),
                        transforms: transforms.get(host.zone_id.as_str()).copied().unwrap_or_default(),
                    },
                )
                .with_context(|| format!("hostname {}", host.hostname))?;
            snapshot.insert(built);
        }
        // A broken answer costs its own validation only, never the rest of the configuration.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for answer in state.acme_challenges.iter().filter(|a| a.expires_on > now) {
            if let Err(e) = self
                .acme_answer(answer)
                .and_then(|cert| Ok(snapshot.add_acme_answer(&answer.hostname, cert)?))
            {
                tracing::warn!(hostname = %answer.hostname, error = format!("{e:#}"), "ACME answer left out");
            }
        }
        for answer in state.acme_http_answers.iter().filter(|a| a.expires_on > now) {
            snapshot.add_http_answer(&answer.token, &answer.hostname, &answer.key_authorization);
        }
        snapshot.default_host = self.default_host.clone().filter(|h| snapshot.hosts.contains_key(h));
        *self.expiry.lock().unwrap_or_else(|e| e.into_inner()) = expiry_metrics(state, OffsetDateTime::now_utc());
        // Servers only the previous snapshot used are forgotten once it is gone; until then it holds them.
        self.origin_health.prune();
        // Hostnames that left the configuration take their session state with them.
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| snapshot.hosts.contains_key(name));
        Ok(snapshot)
    }

    fn host(
        &self,
        state: &EdgeState,
        verifiers: &mut Verifiers<'_>,
        host: &portcullis_store::Hostname,
        zone: ZoneParts,
    ) -> anyhow::Result<Host> {
        let settings = HostnameSettings::from_stored(&host.settings).context("stored settings")?;
        // An unusable identity fails this origin's handshakes (502), not the whole snapshot: every other
        // change, revocations included, must still reach the edge.
        let identity = match &settings.origin_client_certificate {
            Some(id) => match self.origin_identity(state, id) {
                Ok(identity) => Some(identity),
                Err(e) => {
                    tracing::error!(
                        hostname = %host.hostname,
                        error = format!("{e:#}"),
                        "origin client certificate unusable; the origin gets none"
                    );
                    None
                }
            },
            None => None,
        };
        let mut origin = Origin::with_identity(
            &host.origin,
            settings.origin_http2,
            settings.origin_ca.as_deref().map(str::as_bytes),
            settings.origin_tls_verify,
            identity,
        )?;
        for server in &settings.additional_origins {
            origin.add_server(server)?;
        }
        origin.steering = match settings.origin_steering {
            OriginSteering::RoundRobin => Steering::RoundRobin,
            OriginSteering::Failover => Steering::Failover,
        };
        origin.track_health(&self.origin_health, &host.hostname);
        origin.health_check = match &settings.origin_health_check {
            Some(check) => Some(HealthCheck {
                path: check
                    .path
                    .parse()
                    .with_context(|| format!("health check path {:?}", check.path))?,
                interval: Duration::from_secs(u64::from(check.interval)),
                timeout: Duration::from_secs(u64::from(check.timeout)),
            }),
            None => None,
        };
        origin.host_header = match &settings.origin_host_header {
            Some(name) => {
                Some(hyper::http::HeaderValue::from_str(name).with_context(|| format!("origin_host_header {name:?}"))?)
            }
            None => None,
        };
        if origin.health_check.is_none() || origin.servers().len() < 2 {
            origin.clear_check_marks();
        }
        let forwarding = settings
            .client_certificate_forwarding
            .styles()
            .into_iter()
            .map(|style| match style {
                CertificateForwarding::None => Forwarding::None,
                CertificateForwarding::Cloudflare => Forwarding::Cloudflare,
                CertificateForwarding::CfCertHeaders => Forwarding::CfCertHeaders,
                CertificateForwarding::Rfc9440 => Forwarding::Rfc9440,
                CertificateForwarding::Xfcc => Forwarding::Xfcc,
                CertificateForwarding::XfccCert => Forwarding::XfccCert,
            })
            .chain(zone.transforms.0.then_some(Forwarding::CfCertHeaders))
            .collect();
        Ok(Host::new(HostParams {
            hostname: host.hostname.clone(),
            zone_id: Some(host.zone_id.clone()),
            cert: self.server_cert(state, host)?,
            mtls: self.mtls(state, verifiers, host, &settings)?,
            origin,
            forwarding,
            transforms: zone.transforms.1,
            ruleset: zone.ruleset,
            ratelimit: zone.ratelimit,
            url_normalization: zone.url_normalization,
            sessions: self.sessions_of(&host.hostname),
            min_tls_version: match settings.min_tls_version {
                portcullis_admin::MinTlsVersion::Tls12 => portcullis_proxy::MinTlsVersion::Tls12,
                portcullis_admin::MinTlsVersion::Tls13 => portcullis_proxy::MinTlsVersion::Tls13,
            },
            field_headers: portcullis_proxy::field_headers::FieldHeaders::new(
                settings
                    .client_certificate_headers
                    .iter()
                    .map(|(header, field)| (header.as_str(), field.as_str())),
            )?,
        })?)
    }

    /// The uploaded client certificate `id` (`"ca": false`) with its key unsealed, for an origin that requires one.
    fn origin_identity(&self, state: &EdgeState, id: &str) -> anyhow::Result<OriginIdentity> {
        let cert = state
            .mtls_certificates
            .iter()
            .find(|c| c.id == id && !c.ca)
            .ok_or_else(|| anyhow!("origin client certificate {id} is not an uploaded client certificate"))?;
        let sealed = cert
            .sealed_key
            .as_deref()
            .ok_or_else(|| anyhow!("origin client certificate {id} has no key"))?;
        let pkcs8 = portcullis_pki::server::unseal_client_key(&self.master_key, &cert.certificates, sealed)
            .with_context(|| format!("unsealing the key of origin client certificate {id}"))?;
        Ok(OriginIdentity::new(id, cert.certificates.as_bytes(), &pkcs8)?)
    }

    /// The hostname's resumption state: the one its previous snapshots used, or a new one.
    fn sessions_of(&self, hostname: &str) -> TlsSessions {
        let name = hostname.to_ascii_lowercase();
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name)
            .or_insert_with_key(|name| TlsSessions::new(name, self.master_key.derive(TICKET_SECRET_LABEL)))
            .clone()
    }

    /// A TLS-ALPN-01 answer's certificate, its key unsealed.
    fn acme_answer(&self, answer: &portcullis_store::AcmeChallenge) -> anyhow::Result<ServerCert> {
        let pkcs8 = portcullis_pki::seal::unseal(
            &self.master_key,
            &crate::acme::answer_seal_label(&answer.hostname),
            &answer.sealed_key,
        )
        .context("unsealing its key")?;
        let key_pem = zeroize::Zeroizing::new(portcullis_pki::pem::encode("PRIVATE KEY", &pkcs8));
        Ok(ServerCert::from_pem(answer.certificate.as_bytes(), key_pem.as_bytes())?)
    }

    /// The newest uploaded certificate of the zone that covers the hostname, else a development one.
    fn server_cert(&self, state: &EdgeState, host: &portcullis_store::Hostname) -> anyhow::Result<ServerCert> {
        let (chain_pem, key_pem) = match uploaded_cert(state, host) {
            Some(cert) => {
                let pkcs8 = portcullis_pki::server::unseal_key(&self.master_key, &cert.certificate, &cert.sealed_key)
                    .with_context(|| format!("unsealing the key of custom certificate {}", cert.id))?;
                (
                    cert.certificate.clone(),
                    portcullis_pki::pem::encode("PRIVATE KEY", &pkcs8),
                )
            }
            None => self.dev_ca.leaf(&host.hostname)?,
        };
        Ok(ServerCert::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?)
    }

    /// The host's client-certificate policy: the CAs associated with it (the managed CAs still trusted, with the
    /// serials revoked through the API; uploaded CAs, with their CRLs), or none when no CA is associated.
    fn mtls(
        &self,
        state: &EdgeState,
        verifiers: &mut Verifiers<'_>,
        host: &portcullis_store::Hostname,
        settings: &HostnameSettings,
    ) -> anyhow::Result<Option<(Mtls, Vec<portcullis_pki::CertificateDer<'static>>)>> {
        let mut cas: Vec<&CaRef> = state
            .associations
            .iter()
            .filter(|a| a.zone_id == host.zone_id && a.hostname == host.hostname)
            .map(|a| &a.ca)
            .collect();
        if cas.is_empty() {
            return Ok(None);
        }
        cas.sort_by_key(|ca| ca_key(ca));
        cas.dedup();
        let (verifier, hints) = verifiers.for_cas(&cas)?;
        let mode = match settings.tls_client_auth {
            TlsClientAuth::Request => MtlsMode::Request,
            TlsClientAuth::Require => MtlsMode::Require,
            TlsClientAuth::VerifyIfGiven => MtlsMode::VerifyIfGiven,
        };
        Ok(Some((
            Mtls { verifier, mode },
            if settings.send_client_ca_names {
                hints
            } else {
                Vec::new()
            },
        )))
    }
}

fn ca_key(ca: &CaRef) -> String {
    match ca {
        CaRef::Managed => "managed".to_owned(),
        CaRef::Mtls(id) => format!("mtls:{id}"),
    }
}

/// One verifier per set of trusted CAs, shared by every host that trusts exactly that set, for one snapshot build:
/// anchors, CRLs and revoked serials are parsed and held once, not once per host (a managed CA with 100,000 revoked
/// certificates behind 1,000 hostnames would otherwise hold 100 million serials).
struct Verifiers<'s> {
    state: &'s EdgeState,
    revoked: HashMap<&'s str, Vec<String>>,
    /// `(serial, issuer)` revoked at the edge under each uploaded CA.
    revoked_at_edge: HashMap<&'s str, Vec<(String, String)>>,
    built: HashMap<
        Vec<String>,
        (
            Arc<portcullis_pki::Verifier>,
            Vec<portcullis_pki::CertificateDer<'static>>,
        ),
    >,
}

impl<'s> Verifiers<'s> {
    fn new(state: &'s EdgeState) -> Verifiers<'s> {
        let mut revoked: HashMap<&str, Vec<String>> = HashMap::new();
        for (ca_id, serial) in &state.revoked_serials {
            revoked.entry(ca_id.as_str()).or_default().push(serial.clone());
        }
        let mut revoked_at_edge: HashMap<&str, Vec<(String, String)>> = HashMap::new();
        for (ca_id, serial, issuer) in &state.mtls_revocations {
            revoked_at_edge
                .entry(ca_id.as_str())
                .or_default()
                .push((serial.clone(), issuer.clone()));
        }
        Verifiers {
            state,
            revoked,
            revoked_at_edge,
            built: HashMap::new(),
        }
    }

    /// The verifier and the CA certificates to hint for `cas` (sorted, without duplicates).
    fn for_cas(
        &mut self,
        cas: &[&CaRef],
    ) -> anyhow::Result<(
        Arc<portcullis_pki::Verifier>,
        Vec<portcullis_pki::CertificateDer<'static>>,
    )> {
        let key: Vec<String> = cas.iter().map(|ca| ca_key(ca)).collect();
        if let Some((verifier, hints)) = self.built.get(&key) {
            return Ok((verifier.clone(), hints.clone()));
        }
        let state = self.state;
        let none = Vec::new();
        let mut trusted = Vec::new();
        for ca in cas {
            match ca {
                CaRef::Managed => trusted.extend(state.managed_cas.iter().map(|managed| TrustedCa {
                    certificates: managed.certificate.as_bytes(),
                    crl: None,
                    revoked_serials: self.revoked.get(managed.id.as_str()).unwrap_or(&none),
                    revoked_at_edge: &[],
                    // Revocations of the managed CA reach the edge directly; its own responder is not asked.
                    ocsp: None,
                    crl_grace: None,
                })),
                CaRef::Mtls(id) => {
                    if let Some(uploaded) = state.mtls_certificates.iter().find(|m| &m.id == id) {
                        trusted.push(TrustedCa {
                            certificates: uploaded.certificates.as_bytes(),
                            crl: uploaded.crl.as_deref(),
                            revoked_serials: &none,
                            revoked_at_edge: self.revoked_at_edge.get(id.as_str()).map_or(&[], Vec::as_slice),
                            ocsp: uploaded.ocsp.as_ref(),
                            crl_grace: uploaded.crl_grace_seconds,
                        });
                    }
                }
            }
        }
        // The mode is the host's; the verifier and hints depend only on the CAs.
        let (mtls, hints) = Mtls::from_cas(MtlsMode::Request, &trusted)?;
        self.built.insert(key, (mtls.verifier.clone(), hints.clone()));
        Ok((mtls.verifier, hints))
    }
}

/// Rebuilds and publishes the snapshot after every change-feed event, until the feed closes.
pub async fn keep_current(store: Store, builder: Arc<EdgeBuilder>, snapshot: Arc<ArcSwap<Snapshot>>) {
    let mut feed = store.subscribe();
    loop {
        // Mark before reading, so that a write landing during the build wakes the next round.
        feed.mark_unchanged();
        match rebuild(&store, &builder).await {
            Ok(next) => {
                tracing::info!(
                    generation = next.generation,
                    hosts = next.hosts.len(),
                    "edge snapshot published"
                );
                portcullis_proxy::observe::record_snapshot(next.generation);
                snapshot.store(Arc::new(next));
                metrics::gauge!("portcullis_snapshot_build_failing").set(0.0);
            }
            Err(err) => {
                metrics::counter!("portcullis_snapshot_builds_failed_total").increment(1);
                // A failed build is not retried until the next change: the gauge says the edge is behind until then.
                metrics::gauge!("portcullis_snapshot_build_failing").set(1.0);
                tracing::error!(
                    error = format!("{err:#}"),
                    "edge snapshot build failed; the previous one stays"
                );
            }
        }
        if feed.changed().await.is_err() {
            return;
        }
    }
}

/// Loads the store's state and builds a snapshot from it.
pub async fn rebuild(store: &Store, builder: &EdgeBuilder) -> anyhow::Result<Snapshot> {
    let state = store.load_edge_state().await?;
    builder.build(&state)
}

/// Batches security events into the store without ever making a request wait: the request path only does a
/// `try_send`; a full queue drops the event and counts it (`portcullis_security_events_dropped_total`).
pub struct StoreEvents {
    tx: mpsc::Sender<portcullis_proxy::SecurityEvent>,
}

/// Most events kept in the store.
const EVENT_RETENTION: u64 = 100_000;

impl StoreEvents {
    /// Starts the writer task; it flushes every second or every 500 events.
    pub fn start(store: Store) -> Arc<StoreEvents> {
        let (tx, mut rx) = mpsc::channel::<portcullis_proxy::SecurityEvent>(10_000);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                let first = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
                match first {
                    Ok(Some(event)) => batch.push(event),
                    Ok(None) => break,
                    Err(_) => {}
                }
                while batch.len() < 500 {
                    match rx.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let rows: Vec<portcullis_store::SecurityEvent> = batch.drain(..).map(to_row).collect();
                if let Err(err) = store.record_security_events(&rows, EVENT_RETENTION).await {
                    tracing::warn!(error = %err, lost = rows.len(), "could not store security events");
                }
            }
        });
        Arc::new(StoreEvents { tx })
    }
}

fn to_row(e: portcullis_proxy::SecurityEvent) -> portcullis_store::SecurityEvent {
    portcullis_store::SecurityEvent {
        id: 0,
        at: e.at,
        zone_id: e.zone_id,
        host: e.host,
        method: e.method,
        path: e.path,
        client_ip: e.client_ip,
        action: e.action.to_owned(),
        rule_id: e.rule_id,
        status_code: i64::from(e.status_code),
        mtls_status: e.mtls_status.to_owned(),
        cert_fingerprint_sha256: e.cert_fingerprint_sha256,
        cert_serial: e.cert_serial,
        cert_subject_dn: e.cert_subject_dn,
        cert_verify_error: e.cert_verify_error,
    }
}

impl EventSink for StoreEvents {
    fn record(&self, event: portcullis_proxy::SecurityEvent) {
        if self.tx.try_send(event).is_err() {
            metrics::counter!("portcullis_security_events_dropped_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(super::covers("*.example.com", "api.example.com"));
        assert!(!super::covers("*.example.com", "a.b.example.com"));
        assert!(!super::covers("*.example.com", "example.com"));
        assert!(super::covers("API.example.com", "api.example.com"));
    }

    /// Hosts that trust the same CAs share one verifier (parsed once per snapshot); hosts without mTLS have none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hosts_trusting_the_same_cas_share_one_verifier() {
        use portcullis_store::{Actor, CaRef};

        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(&dir.path().join("p.db")).await.expect("store");
        let master = Arc::new(MasterKey::generate());
        let builder = EdgeBuilder {
            master_key: master.clone(),
            dev_ca: DevEdgeCa::load_or_create(dir.path(), &master).expect("dev CA"),
            default_host: None,
            sessions: Default::default(),
            origin_health: Default::default(),
            expiry: Default::default(),
        };
        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        for name in ["a.example.com", "b.example.com", "c.example.com", "open.example.com"] {
            store
                .create_hostname(&zone.id, name, "http://127.0.0.1:9", serde_json::json!({}), &a)
                .await
                .expect("host");
        }
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        store
            .replace_hostname_associations(
                &zone.id,
                &CaRef::Managed,
                &names(&["a.example.com", "b.example.com"]),
                &a,
            )
            .await
            .expect("associations");
        let state = store.load_edge_state().await.expect("state");
        let snapshot = builder.build(&state).expect("build");
        let verifier = |name: &str| snapshot.hosts[name].mtls.as_ref().map(|m| m.verifier.clone());
        let (va, vb) = (
            verifier("a.example.com").expect("a"),
            verifier("b.example.com").expect("b"),
        );
        assert!(Arc::ptr_eq(&va, &vb), "the same CAs, one verifier");
        assert!(verifier("open.example.com").is_none());
        assert!(verifier("c.example.com").is_none());
    }

    /// A state that does not build (here an origin the admin API would have refused, written to the store directly)
    /// leaves the previous snapshot in service; the next good state is published again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_build_keeps_the_previous_snapshot() {
        use std::time::Duration;

        use portcullis_store::Actor;

        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(&dir.path().join("p.db")).await.expect("store");
        let master = Arc::new(MasterKey::generate());
        let builder = Arc::new(EdgeBuilder {
            master_key: master.clone(),
            dev_ca: DevEdgeCa::load_or_create(dir.path(), &master).expect("dev CA"),
            default_host: None,
            sessions: Default::default(),
            origin_health: Default::default(),
            expiry: Default::default(),
        });
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::new(0)));
        tokio::spawn(keep_current(store.clone(), builder, snapshot.clone()));
        let published = |generation: u64| {
            let snapshot = snapshot.clone();
            async move {
                for _ in 0..100 {
                    if snapshot.load().generation == generation {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                false
            }
        };

        let a = Actor::system();
        let zone = store.create_zone("example.com", &a).await.expect("zone");
        let json = serde_json::json!({});
        store
            .create_hostname(&zone.id, "good.example.com", "http://127.0.0.1:9", json.clone(), &a)
            .await
            .expect("host");
        let good = store.generation().await.expect("generation");
        assert!(published(good).await, "the good state is published");
        assert!(snapshot.load().hosts.contains_key("good.example.com"));

        let bad = store
            .create_hostname(&zone.id, "bad.example.com", "ftp://nowhere", json, &a)
            .await
            .expect("host");
        let broken = store.generation().await.expect("generation");
        assert!(!published(broken).await, "a state that does not build is not published");
        assert_eq!(
            snapshot.load().generation,
            good,
            "the previous snapshot stays in service"
        );
        assert!(!snapshot.load().hosts.contains_key("bad.example.com"));

        store.delete_hostname(&zone.id, &bad.id, &a).await.expect("delete");
        let fixed = store.generation().await.expect("generation");
        assert!(published(fixed).await, "the next good state is published");
    }
}
