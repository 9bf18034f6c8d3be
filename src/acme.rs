//! The ACME manager: obtains and renews the server certificates of certificate packs (`…/ssl/certificate_packs`)
//! from an ACME directory (Let's Encrypt by default, or a private one such as step-ca), validating with TLS-ALPN-01
//! (RFC 8737) on the edge's own TLS listener, with DNS-01 through the zone's name server (validation method `txt`,
//! which wildcard names need), or with HTTP-01 on the public listener (validation method `http`).
//!
//! How a DNS-01 order goes: the `_acme-challenge` TXT records are added with one signed DNS UPDATE to the zone's
//! primary name server (`acme_dns` settings, see `dns_update`), the settings' propagation time is waited out, the
//! ACME server is told to look, and the records are removed again whatever the outcome.
//!
//! How a TLS-ALPN-01 or HTTP-01 order goes: the answers (one self-signed certificate per name, or one key
//! authorization per token) are written to the store; once this node's snapshot serves them (and, on PostgreSQL, the
//! other nodes have had a moment to rebuild theirs, since the ACME server may reach any of them), the ACME server is
//! told to look.
//!
//! Then the order is finalized with a fresh P-256 key and the certificate is stored as the pack's custom
//! certificate, checked as an upload is, in the same write that withdraws the answers. A pack is due when it has no
//! certificate yet, or when two thirds of its certificate's lifetime have passed (30 days before the end for Let's
//! Encrypt's 90); a failure is tried again after a minute, doubling up to six hours, and its reason is the pack's
//! `validation_errors`. In a fleet, one node at a time holds the `acme` lease and does the work. The account is
//! made at the first order, agreeing to the directory's terms of service, and its credentials are kept in the store,
//! sealed with the master key.
//!
//! External Account Binding is given with `--acme-eab-kid` and `PORTCULLIS_ACME_EAB_HMAC_KEY`, for the CAs that
//! require it.
//! Not here: ARI renewal windows, and knowing that every node of a fleet serves the answers (the nodes are not
//! registered anywhere): the manager waits for its own snapshot, then two seconds more on PostgreSQL, where the
//! other nodes follow within milliseconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use arc_swap::ArcSwap;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use portcullis_pki::MasterKey;
use portcullis_proxy::Snapshot;
use portcullis_store::{AcmeChallenge, AcmeHttpAnswer, CertificatePack, DNS_VALIDATION, HTTP_VALIDATION, Store};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::dns_update;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Where certificates come from. Not `Debug`: it holds the EAB key.
#[derive(Clone)]
pub struct AcmeSettings {
    pub directory: String,
    /// Contact URIs for the account (`mailto:…`).
    pub contact: Vec<String>,
    /// A PEM root to trust for the directory's HTTPS instead of the system's (a private ACME server).
    pub ca_file: Option<PathBuf>,
    /// External Account Binding (RFC 8555 §7.3.4), which ZeroSSL, Google Trust Services and SSL.com require: the key
    /// id and the HMAC key, decoded.
    pub eab: Option<(String, Zeroizing<Vec<u8>>)>,
    /// Whether this server runs the public listener, which serves HTTP-01 answers.
    pub public_listener: bool,
}

/// An EAB HMAC key as CAs hand it out (base64url, with or without padding), decoded.
pub fn decode_eab_key(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    use base64::Engine as _;
    let trimmed = text.trim().trim_end_matches('=');
    // The decoder's error names the offending character and its place: not repeated, so that no part of a key
    // reaches a log.
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| "the EAB HMAC key is not base64url (A-Z, a-z, 0-9, - and _)".to_owned())?;
    if key.len() < 16 {
        return Err(format!(
            "the EAB HMAC key is {} bytes; CAs hand out 32 or more",
            key.len()
        ));
    }
    Ok(Zeroizing::new(key))
}

/// The lease one node of a fleet holds while it orders.
const LEASE: &str = "acme";
/// How long the lease lasts unless extended; longer than one order may take.
const LEASE_SECS: i64 = 600;
/// The most one order (validation, finalization, download) may take; within the lease.
const ORDER_TIMEOUT: Duration = Duration::from_secs(420);
/// The most a DNS-01 validation may take: the propagation wait (up to 120 s) and the ACME server's checks (polled for
/// up to 90 s). The records are removed after it, or by [`Published`]'s drop if the whole order is cut short.
const DNS_VALIDATION_TIMEOUT: Duration = Duration::from_secs(240);
/// Most orders in one round, so that failing packs cannot hold the others off for long.
const MAX_ORDERS_PER_ROUND: usize = 10;
/// How often packs are looked at when nothing changes.
const CHECK_EVERY: Duration = Duration::from_secs(60);
/// The first retry after a failure, doubled per failure up to [`MAX_BACKOFF_SECS`].
const FIRST_BACKOFF_SECS: i64 = 60;
const MAX_BACKOFF_SECS: i64 = 6 * 3600;

/// The TTL of `_acme-challenge` records: short, since they are removed once validated.
const TXT_TTL: u32 = 60;

/// A zone's DNS-01 settings, ready to use. Not `Debug`: the key holds the secret.
struct DnsSettings {
    server: String,
    zone: String,
    key: Arc<dns_update::TsigKey>,
    propagation: Duration,
}

/// The sealing label of a TLS-ALPN-01 answer's key; the snapshot builder unseals with it.
pub fn answer_seal_label(hostname: &str) -> String {
    format!("acme-answer:{hostname}")
}

fn account_seal_label(directory: &str) -> String {
    format!("acme-account:{directory}")
}

/// Whether `pack` should be worked on at `now` (Unix seconds).
pub fn due(pack: &CertificatePack, now: i64) -> bool {
    if pack.next_attempt_on > now {
        return false;
    }
    match (pack.status.as_str(), pack.issued_on, pack.expires_on) {
        ("active", Some(issued), Some(expires)) => now >= renew_at(issued, expires),
        _ => true,
    }
}

/// When a certificate valid from `issued` to `expires` is renewed: after two thirds of its lifetime.
pub fn renew_at(issued: i64, expires: i64) -> i64 {
    expires - (expires - issued).max(0) / 3
}

/// When to try again after the `attempts`-th failure in a row (1 for the first).
pub fn next_attempt(now: i64, attempts: i64) -> i64 {
    let shift = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    now + FIRST_BACKOFF_SECS.saturating_mul(1 << shift).min(MAX_BACKOFF_SECS)
}

/// Runs until the process ends.
pub async fn run(store: Store, master: Arc<MasterKey>, settings: AcmeSettings, snapshot: Arc<ArcSwap<Snapshot>>) {
    let node = format!(
        "{}-{}",
        std::process::id(),
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let mut manager = Manager {
        store: store.clone(),
        master,
        settings,
        snapshot,
        node,
        account: None,
    };
    let mut changes = store.subscribe();
    loop {
        let wait = match manager.round().await {
            Ok(Some(next)) => {
                let now = OffsetDateTime::now_utc().unix_timestamp();
                Duration::from_secs(u64::try_from(next - now).unwrap_or(0).clamp(1, CHECK_EVERY.as_secs()))
            }
            Ok(None) => CHECK_EVERY,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "ACME round failed");
                CHECK_EVERY
            }
        };
        // Our own writes wake this too; a round with nothing due costs one query.
        changes.mark_unchanged();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// When `pack` next becomes due, if it is not due at `now`.
fn due_at(pack: &CertificatePack) -> i64 {
    match (pack.status.as_str(), pack.issued_on, pack.expires_on) {
        ("active", Some(issued), Some(expires)) => renew_at(issued, expires).max(pack.next_attempt_on),
        _ => pack.next_attempt_on,
    }
}

struct Manager {
    store: Store,
    master: Arc<MasterKey>,
    settings: AcmeSettings,
    snapshot: Arc<ArcSwap<Snapshot>>,
    node: String,
    account: Option<Account>,
}

impl Manager {
    /// Works on the packs that are due; returns when the next one will be.
    async fn round(&mut self) -> anyhow::Result<Option<i64>> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let (ready, later): (Vec<CertificatePack>, Vec<CertificatePack>) = self
            .store
            .all_certificate_packs()
            .await?
            .into_iter()
            .partition(|p| due(p, now));
        let next = later.iter().map(due_at).min();
        if ready.is_empty() {
            return Ok(next);
        }
        for pack in ready.into_iter().take(MAX_ORDERS_PER_ROUND) {
            // Taken (or extended) before each order, so that a node that stops mid-way hands over within minutes.
            if !self.store.try_lease(LEASE, &self.node, LEASE_SECS).await? {
                tracing::debug!("another node holds the ACME lease");
                return Ok(Some(now + CHECK_EVERY.as_secs() as i64));
            }
            // Read again under the lease: another node may have issued it, or someone removed it, meanwhile.
            let pack = match self.store.certificate_pack(&pack.zone_id, &pack.id).await {
                Ok(pack) if due(&pack, OffsetDateTime::now_utc().unix_timestamp()) => pack,
                _ => continue,
            };
            let outcome = match tokio::time::timeout(ORDER_TIMEOUT, self.order(&pack)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow!("the order took longer than {} s", ORDER_TIMEOUT.as_secs())),
            };
            match outcome {
                Ok(expires) => {
                    metrics::counter!("portcullis_acme_orders_total", "outcome" => "issued").increment(1);
                    tracing::info!(pack = %pack.id, hosts = ?pack.hosts, %expires, "ACME certificate issued");
                }
                Err(e) => {
                    metrics::counter!("portcullis_acme_orders_total", "outcome" => "failed").increment(1);
                    let message = format!("{e:#}");
                    let at = OffsetDateTime::now_utc().unix_timestamp();
                    let next = next_attempt(at, pack.attempts + 1);
                    tracing::warn!(pack = %pack.id, hosts = ?pack.hosts, error = %message, retry_in_s = next - at,
                        "ACME order failed");
                    if let Err(e) = self.store.certificate_pack_failed(&pack.id, &[message], next).await {
                        // Unrecorded, the pack would look due again at once: wait as if it had been.
                        tracing::warn!(pack = %pack.id, error = %e, "could not record the ACME failure");
                        return Ok(Some(now + CHECK_EVERY.as_secs() as i64));
                    }
                }
            }
        }
        self.store.release_lease(LEASE, &self.node).await?;
        // Read again in a second, for when the packs just worked on are due next.
        Ok(Some(now))
    }

    fn builder(&self) -> anyhow::Result<instant_acme::AccountBuilder> {
        Ok(match &self.settings.ca_file {
            Some(path) => Account::builder_with_root(path)
                .with_context(|| format!("reading --acme-ca-file {}", path.display()))?,
            None => Account::builder().context("setting up the ACME client")?,
        })
    }

    /// The directory's account: this process's, the store's, or a new one.
    async fn account(&mut self) -> anyhow::Result<Account> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let directory = self.settings.directory.clone();
        let label = account_seal_label(&directory);
        let sealed = match self.store.acme_account(&directory).await? {
            Some(sealed) => sealed,
            None => {
                let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
                let eab = self
                    .settings
                    .eab
                    .as_ref()
                    .map(|(kid, key)| instant_acme::ExternalAccountKey::new(kid.clone(), key));
                let (_, credentials) = self
                    .builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.clone(),
                        eab.as_ref(),
                    )
                    .await
                    .with_context(|| format!("creating an ACME account at {directory}"))?;
                let json = Zeroizing::new(serde_json::to_vec(&credentials)?);
                let sealed = portcullis_pki::seal::seal(&self.master, &label, &json);
                tracing::info!(%directory, "ACME account created");
                // Another node may have stored one first: then that one is used.
                self.store.save_acme_account(&directory, &sealed).await?
            }
        };
        let json = portcullis_pki::seal::unseal(&self.master, &label, &sealed)
            .context("unsealing the ACME account (another master key?)")?;
        let credentials: AccountCredentials =
            serde_json::from_slice(&json).context("reading the stored ACME account")?;
        let account = self
            .builder()?
            .from_credentials(credentials)
            .await
            .with_context(|| format!("reaching the ACME directory {directory}"))?;
        self.account = Some(account.clone());
        Ok(account)
    }

    /// The zone's DNS-01 settings, with the TSIG secret unsealed.
    async fn dns_settings(&self, zone_id: &str) -> anyhow::Result<DnsSettings> {
        let settings = self
            .store
            .acme_dns(zone_id)
            .await?
            .ok_or_else(|| anyhow!("the zone has no DNS update settings (portcullis acme dns set)"))?;
        let secret = portcullis_pki::seal::unseal(
            &self.master,
            &portcullis_admin::tsig_seal_label(zone_id),
            &settings.sealed_secret,
        )
        .context("unsealing the TSIG secret (another master key?)")?;
        let algorithm = dns_update::Algorithm::parse(&settings.algorithm).map_err(|e| anyhow!(e))?;
        Ok(DnsSettings {
            server: settings.server,
            zone: settings.dns_zone,
            key: Arc::new(dns_update::TsigKey {
                name: settings.key_name,
                algorithm,
                secret,
            }),
            propagation: Duration::from_secs(u64::try_from(settings.propagation_seconds).unwrap_or(0)),
        })
    }

    /// Orders `pack`'s certificate and stores it; returns when it expires.
    async fn order(&mut self, pack: &CertificatePack) -> anyhow::Result<OffsetDateTime> {
        // Checked before anything is asked of the ACME server, whose rate limits count orders.
        let http = pack.validation_method == HTTP_VALIDATION;
        if http && !self.settings.public_listener {
            bail!(
                "validation over HTTP (http-01) needs the public listener, on what port 80 of each name reaches: \
                 serve --public-listen 0.0.0.0:80 (on every node that orders)"
            );
        }
        let dns = if pack.validation_method == DNS_VALIDATION {
            Some(self.dns_settings(&pack.zone_id).await?)
        } else {
            None
        };
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = pack.hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .context("placing the order")?;

        // The answers, for every authorization still pending: TLS-ALPN-01 certificates, or DNS-01 TXT records.
        let now = OffsetDateTime::now_utc();
        let mut answers = Vec::new();
        let mut http_answers = Vec::new();
        let mut records: Vec<(String, String)> = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.context("reading an authorization")?;
            let identifier = authz.identifier();
            let name = identifier.to_string();
            let Identifier::Dns(base) = identifier.identifier else {
                bail!("the ACME server asks about {name}, which is not a DNS name");
            };
            let base = base.clone();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => bail!("the authorization for {name} is {other:?}"),
            }
            if dns.is_some() {
                let challenge = authz
                    .challenge(ChallengeType::Dns01)
                    .ok_or_else(|| anyhow!("the ACME server offers no dns-01 challenge for {name}"))?;
                records.push((
                    format!("_acme-challenge.{base}"),
                    challenge.key_authorization().dns_value(),
                ));
                continue;
            }
            if http {
                let challenge = authz
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| anyhow!("the ACME server offers no http-01 challenge for {name}"))?;
                http_answers.push(AcmeHttpAnswer {
                    token: challenge.token.clone(),
                    hostname: base,
                    pack_id: pack.id.clone(),
                    key_authorization: challenge.key_authorization().as_str().to_owned(),
                    expires_on: (now + time::Duration::days(1)).unix_timestamp(),
                });
                continue;
            }
            let challenge = authz
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or_else(|| anyhow!("the ACME server offers no tls-alpn-01 challenge for {name}"))?;
            let digest = challenge.key_authorization().digest();
            let answer = portcullis_pki::acme::tls_alpn_01(&name, digest.as_ref(), now)?;
            answers.push(AcmeChallenge {
                sealed_key: portcullis_pki::seal::seal(&self.master, &answer_seal_label(&name), &answer.key_pkcs8),
                hostname: name,
                pack_id: pack.id.clone(),
                certificate: answer.certificate_pem,
                expires_on: answer.expires_on.unix_timestamp(),
            });
        }

        match dns {
            Some(dns) => {
                if let Some((name, _)) = records.iter().find(|(name, _)| !in_dns_zone(name, &dns.zone)) {
                    bail!(
                        "{name} is not in the DNS zone {} of the zone's DNS update settings",
                        dns.zone
                    );
                }
                // The pack shows as being validated, as a TLS-ALPN-01 one does once its answers are out.
                self.store.set_acme_challenges(&pack.id, &[], &[]).await?;
                // Armed before the update is sent: its answer may be lost after the server applied it.
                let published = Published {
                    server: dns.server.clone(),
                    zone: dns.zone.clone(),
                    key: dns.key.clone(),
                    records,
                };
                if !published.records.is_empty() {
                    let added: Vec<dns_update::Change<'_>> = published
                        .records
                        .iter()
                        .map(|(name, txt)| dns_update::Change::AddTxt {
                            name,
                            txt,
                            ttl: TXT_TTL,
                        })
                        .collect();
                    dns_update::update(&dns.server, &dns.zone, &added, &dns.key)
                        .await
                        .context("publishing the _acme-challenge records")?;
                }
                let authorized = tokio::time::timeout(
                    DNS_VALIDATION_TIMEOUT,
                    authorize(&mut order, ChallengeType::Dns01, dns.propagation),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow!(
                        "validation took longer than {} s",
                        DNS_VALIDATION_TIMEOUT.as_secs()
                    ))
                });
                // Withdrawn whatever the outcome, before the certificate is fetched.
                published.withdraw(&pack.id).await;
                authorized?;
            }
            None => {
                if !answers.is_empty() || !http_answers.is_empty() {
                    let generation = self
                        .store
                        .set_acme_challenges(&pack.id, &answers, &http_answers)
                        .await?;
                    self.wait_for_snapshot(generation).await?;
                }
                let kind = if http {
                    ChallengeType::Http01
                } else {
                    ChallengeType::TlsAlpn01
                };
                authorize(&mut order, kind, Duration::ZERO).await?;
            }
        }
        let (key, csr) = portcullis_pki::acme::order_csr(&pack.hosts)?;
        order.finalize_csr(&csr).await.context("finalizing the order")?;
        let chain = order
            .poll_certificate(&polling())
            .await
            .context("downloading the certificate")?;
        let key_pem = Zeroizing::new(portcullis_pki::pem::encode("PRIVATE KEY", &key));
        let parsed = portcullis_pki::parse_server_certificate(&chain, &key_pem, OffsetDateTime::now_utc())
            .context("checking the issued certificate")?;
        if let Some(missing) = pack.hosts.iter().find(|h| !parsed.hosts.contains(h)) {
            bail!("the issued certificate does not cover {missing}");
        }
        let new = portcullis_admin::sealed_custom_certificate(&self.master, &parsed);
        self.store
            .certificate_pack_issued(&pack.id, new, parsed.not_before.unix_timestamp())
            .await?;
        Ok(parsed.expires_on)
    }

    /// Waits until this node serves the answers of store generation `generation`; on PostgreSQL, a little longer,
    /// for the other nodes of the fleet.
    async fn wait_for_snapshot(&self, generation: u64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.snapshot.load().generation < generation {
            if tokio::time::Instant::now() > deadline {
                bail!("the edge did not pick the answers up within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.store.backend() == "postgres" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Ok(())
    }
}

/// Once the answers are out (after `wait`), asks the ACME server to check each pending authorization's `kind`
/// challenge and waits until the order is ready to be finalized.
async fn authorize(order: &mut instant_acme::Order, kind: ChallengeType, wait: Duration) -> anyhow::Result<()> {
    tokio::time::sleep(wait).await;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.context("reading an authorization")?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        if let Some(mut challenge) = authz.challenge(kind.clone()) {
            challenge.set_ready().await.context("asking for validation")?;
        }
    }
    let status = match order.poll_ready(&polling()).await {
        Ok(status) => status,
        Err(instant_acme::Error::Api(problem)) => {
            bail!("validation failed: {problem}{}", failure_reasons(order).await)
        }
        Err(e) => return Err(e).context("waiting for validation"),
    };
    if status != OrderStatus::Ready {
        bail!(
            "validation failed: the order is {status:?}{}",
            failure_reasons(order).await
        );
    }
    Ok(())
}

/// Whether `name` is `zone` or under it.
fn in_dns_zone(name: &str, zone: &str) -> bool {
    name == zone || name.strip_suffix(zone).is_some_and(|prefix| prefix.ends_with('.'))
}

/// An order's `_acme-challenge` records while they are published. [`Published::withdraw`] removes them; dropped
/// without that (an error, or the order's timeout cancelling it), it removes them in the background, so that they
/// never stay behind.
struct Published {
    server: String,
    zone: String,
    key: Arc<dns_update::TsigKey>,
    records: Vec<(String, String)>,
}

impl Published {
    async fn withdraw(mut self, pack_id: &str) {
        let records = std::mem::take(&mut self.records);
        if let Err(e) = remove_records(&self.server, &self.zone, &self.key, &records).await {
            tracing::warn!(pack = %pack_id, error = format!("{e:#}"), "could not remove the _acme-challenge records");
        }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        let records = std::mem::take(&mut self.records);
        if records.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (server, zone, key) = (self.server.clone(), self.zone.clone(), self.key.clone());
        runtime.spawn(async move {
            if let Err(e) = remove_records(&server, &zone, &key, &records).await {
                tracing::warn!(error = format!("{e:#}"), "could not remove the _acme-challenge records");
            }
        });
    }
}

/// Deletes exactly these TXT records (a record already gone is no error).
async fn remove_records(
    server: &str,
    zone: &str,
    key: &dns_update::TsigKey,
    records: &[(String, String)],
) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let removed: Vec<dns_update::Change<'_>> = records
        .iter()
        .map(|(name, txt)| dns_update::Change::DeleteTxt { name, txt })
        .collect();
    dns_update::update(server, zone, &removed, key)
        .await
        .context("removing the _acme-challenge records")
}

/// How an order is polled: every 2 s (a Retry-After from the server wins) for up to 90 s. instant-acme stops at the
/// first wait that would end past the deadline, so a growing back-off leaves much of the budget unpolled: its
/// default (from 250 ms, doubling) stops after about 30 s of 90.
fn polling() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_secs(2))
        .backoff(1.0)
        .timeout(Duration::from_secs(90))
}

/// What the ACME server said about each failed challenge, as `: name: problem; …`, or nothing.
async fn failure_reasons(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for challenge in &authz.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!("{}: {problem}", authz.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(status: &str, issued: Option<i64>, expires: Option<i64>, next: i64) -> CertificatePack {
        CertificatePack {
            id: "p".into(),
            zone_id: "z".into(),
            hosts: vec!["a.example.com".into()],
            validation_method: "tls-alpn-01".into(),
            status: status.into(),
            certificate_id: None,
            issued_on: issued,
            expires_on: expires,
            validation_errors: Vec::new(),
            attempts: 0,
            next_attempt_on: next,
            created_on: 0,
            modified_on: 0,
        }
    }

    #[test]
    fn packs_are_due_when_new_failed_long_enough_ago_or_two_thirds_through() {
        let day = 86_400;
        assert!(due(&pack("initializing", None, None, 0), 1_000));
        assert!(due(&pack("pending_validation", None, None, 999), 1_000));
        assert!(!due(&pack("pending_validation", None, None, 1_001), 1_000));
        // Let's Encrypt's 90 days: renewed 30 days before the end.
        let issued = 10 * day;
        let expires = issued + 90 * day;
        assert_eq!(renew_at(issued, expires), expires - 30 * day);
        assert!(!due(
            &pack("active", Some(issued), Some(expires), 0),
            expires - 30 * day - 1
        ));
        assert!(due(&pack("active", Some(issued), Some(expires), 0), expires - 30 * day));
        // A failing renewal waits for its retry even when due.
        assert!(!due(
            &pack("active", Some(issued), Some(expires), expires),
            expires - day
        ));
    }

    #[test]
    fn eab_keys_are_base64url_with_or_without_padding() {
        let key = decode_eab_key("zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W").expect("key");
        assert_eq!(key.len(), 48);
        assert_eq!(decode_eab_key("AAECAwQFBgcICQoLDA0ODw==").expect("padded").len(), 16);
        assert!(
            decode_eab_key("not base64!")
                .expect_err("bad")
                .contains("not base64url")
        );
        assert!(decode_eab_key("AAEC").expect_err("short").contains("3 bytes"));
    }

    #[test]
    fn challenge_records_must_be_in_the_updated_zone() {
        assert!(in_dns_zone("_acme-challenge.example.com", "example.com"));
        assert!(in_dns_zone("_acme-challenge.api.example.com", "com"));
        assert!(!in_dns_zone("_acme-challenge.example.com", "ample.com"));
        assert!(!in_dns_zone("_acme-challenge.example.com", "example.org"));
    }

    #[test]
    fn retries_back_off_from_a_minute_to_six_hours() {
        assert_eq!(next_attempt(0, 1), 60);
        assert_eq!(next_attempt(0, 2), 120);
        assert_eq!(next_attempt(0, 5), 960);
        assert_eq!(next_attempt(0, 10), 6 * 3600);
        assert_eq!(next_attempt(0, 1_000), 6 * 3600);
    }
}
