//! `portcullis apply FILE` and `portcullis export`: a running server's configuration as a file (TOML), for review
//! and version control, in the admin API's own field names.
//!
//! `apply` makes the server match the file and prints each change (`+` created, `~` changed, `-` removed); with
//! `--dry-run` it only prints them. What the file describes is described whole: a hostname's settings that the file
//! leaves out take their defaults, a zone's `rules` replace its custom rules, a list's `items` replace its items.
//! What the file does not mention is left alone, unless `--prune` asks to remove the hostnames of the file's zones
//! and the lists that it does not name (zones are never removed). The whole file is checked first, with the admin
//! crate's own checks (`normalize_settings`, `normalize_rules`) and the store's hostname check, so that what the
//! API would refuse is refused before anything is written; values are compared in the form the server keeps them,
//! so that a second `apply` finds nothing to change. `export` writes the same shape from the server, so that
//! `export` then `apply` changes nothing. Uploaded CAs are in it, by name (their certificates are public); a CA
//! whose bundle differs from the server's CA of that name is refused, since replacing one is a change of trust
//! done by hand. A zone's `acme` lists the names of each certificate it gets over ACME (its certificate packs): the
//! file says which certificates should exist, the server obtains them. Not here: client certificates, the managed
//! CA and uploaded server certificates, which hold keys and are made with `cert`, `ca` and `server-cert`; `mtls`
//! names a CA by its name or id, or `managed`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use hyper::Method;
use portcullis_admin::{ClientCertificatePolicy, FIREWALL_PHASE, HostnameSettings, RATELIMIT_PHASE};
use serde_json::{Map, Value, json};

use crate::client::{ApiArgs, ApiClient, ApiFailure, account_id, array, s, zones};

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The configuration (TOML), as `portcullis export` writes it.
    file: PathBuf,
    /// Print the changes without making them.
    #[arg(long)]
    dry_run: bool,
    /// Also remove the hostnames of the file's zones and the IP lists that the file does not name.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Only this zone (name or id); by default every zone.
    #[arg(long)]
    zone: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

/// The most bytes of configuration read.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// The rule fields a file manages, with their value when left out.
const RULE_FIELDS: [&str; 6] = [
    "expression",
    "action",
    "description",
    "enabled",
    "action_parameters",
    "ratelimit",
];
/// The file's rule lists and the phases they are.
const RULE_PHASES: [(&str, &str); 2] = [("rules", FIREWALL_PHASE), ("ratelimit_rules", RATELIMIT_PHASE)];
/// How `mtls` names the managed CA.
const MANAGED: &str = "managed";

/// A hostname as `export` writes it: its name and origin first.
#[derive(Debug, serde::Serialize)]
struct HostOut {
    hostname: String,
    origin: String,
    #[serde(flatten)]
    settings: Map<String, Value>,
}

/// A rule as `export` writes it: what it is for, when and what, then the rest.
#[derive(Debug, serde::Serialize)]
struct RuleOut {
    description: Value,
    expression: Value,
    action: Value,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// What `export` writes, in the shape of [`Config`].
#[derive(Debug, serde::Serialize)]
struct ZoneOut {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    url_normalization: Option<UrlNormalization>,
    /// Written even when empty, so that applying the file elsewhere turns the others off.
    managed_request_headers: Vec<String>,
    managed_response_headers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hostnames: Vec<HostOut>,
    rules: Vec<RuleOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ratelimit_rules: Vec<RuleOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    acme: Vec<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate_policy: Option<ClientCertificatePolicy>,
}

/// An uploaded CA (its certificates are public; the CA's key stays with its owner), by name.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct CaConfig {
    name: String,
    /// The PEM bundle: the issuing CA, then the CAs above it.
    certificates: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    crl_urls: Vec<String>,
    /// `off` (the default), `soft` or `hard`.
    #[serde(default = "ocsp_off", skip_serializing_if = "is_off")]
    ocsp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ocsp_responder: Option<String>,
    /// Seconds past a CRL's nextUpdate after which the edge trusts none of the CA's certificates; absent: a stale
    /// CRL stays in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crl_grace_seconds: Option<i64>,
}

fn ocsp_off() -> String {
    "off".to_owned()
}

fn is_off(check: &String) -> bool {
    check == "off"
}

/// How an id in a plan stands for an uploaded CA that the file creates (a dry run never learns its id).
const NEW_CA: &str = "new CA ";

#[derive(Debug, serde::Serialize)]
struct ConfigOut {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cas: Vec<CaConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lists: Vec<ListConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    zones: Vec<ZoneOut>,
}

/// What a configuration file holds.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    cas: Vec<CaConfig>,
    #[serde(default)]
    lists: Vec<ListConfig>,
    #[serde(default)]
    zones: Vec<ZoneConfig>,
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct ListConfig {
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    /// Addresses and CIDR ranges.
    #[serde(default)]
    items: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneConfig {
    name: String,
    #[serde(default)]
    hostnames: Vec<Map<String, Value>>,
    /// The custom rules (http_request_firewall_custom), in order; left out, the zone's rules are left alone.
    #[serde(default)]
    rules: Option<Vec<Map<String, Value>>>,
    /// The rate-limiting rules (http_ratelimit), likewise.
    #[serde(default)]
    ratelimit_rules: Option<Vec<Map<String, Value>>>,
    /// The zone's URL normalization; left out, it is left alone.
    #[serde(default)]
    url_normalization: Option<UrlNormalization>,
    /// The managed request-header transforms that are on (`add_client_certificate_headers`); left out, they are
    /// left alone.
    #[serde(default)]
    managed_request_headers: Option<Vec<String>>,
    /// The managed response-header transforms that are on (`remove_x-powered-by_header`); likewise.
    #[serde(default)]
    managed_response_headers: Option<Vec<String>>,
    /// The certificates obtained over ACME, each the names of one (a certificate pack); left out, they are left
    /// alone.
    #[serde(default)]
    acme: Option<Vec<Vec<String>>>,
    /// What the client certificates issued in the zone may be (`{}` for no limits); left out, it is left alone.
    #[serde(default)]
    client_certificate_policy: Option<ClientCertificatePolicy>,
}

/// A zone's URL normalization, in the API's shape; a field left out takes its default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct UrlNormalization {
    #[serde(default = "default_scope")]
    scope: String,
    #[serde(rename = "type", default = "default_normalization")]
    kind: String,
}

fn default_scope() -> String {
    portcullis_store::URL_NORMALIZATION_SCOPES[0].to_owned()
}

fn default_normalization() -> String {
    portcullis_store::URL_NORMALIZATION_TYPES[0].to_owned()
}

impl UrlNormalization {
    fn of(value: &Value) -> UrlNormalization {
        UrlNormalization {
            scope: s(value, "scope"),
            kind: s(value, "type"),
        }
    }

    fn is_default(&self) -> bool {
        self.scope == default_scope() && self.kind == default_normalization()
    }
}

/// Prints changes and, unless it is a dry run, counts them.
struct Plan {
    dry_run: bool,
    changes: usize,
}

impl Plan {
    /// Announces a change; true when it is to be made.
    fn change(&mut self, line: &str) -> bool {
        self.changes += 1;
        outln!("{line}");
        !self.dry_run
    }
}

/// A hostname as the file wants it, checked and in the form the server stores.
struct HostPlan {
    name: String,
    origin: String,
    settings: HostnameSettings,
    /// The CAs it trusts (`None`: the managed CA); `None` when the file does not say.
    mtls: Option<BTreeSet<Option<String>>>,
}

/// A zone as the file wants it and as the server has it.
struct ZonePlan<'a> {
    name: &'a str,
    /// The zone's id, when it exists.
    id: Option<String>,
    current_hosts: Vec<Value>,
    hosts: Vec<HostPlan>,
    /// Per phase the file manages: (file key, phase, wanted rules, current rules), both normalized.
    rules: Vec<(&'static str, &'static str, Vec<Value>, Vec<Value>)>,
    /// The URL normalization the file wants, if it says, and the zone's now.
    url_normalization: Option<(UrlNormalization, UrlNormalization)>,
    /// The managed transforms the file wants on, for requests and for responses (each `None` where it does not
    /// say), and those on now; all sorted.
    managed_headers: Option<ManagedPlan>,
    /// The ACME certificates the file wants (each pack's names, sorted), if it says, and the zone's packs now.
    acme: Option<(Vec<Vec<String>>, Vec<Value>)>,
    /// The client certificate policy the file wants, if it says, and the zone's now.
    cert_policy: Option<(ClientCertificatePolicy, ClientCertificatePolicy)>,
}

pub async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let config = read_config(&args.file)?;
    let api = ApiClient::new(&args.api)?.hold_warnings();
    let applied = apply_to(&api, &args, config).await;
    // Also when a write failed: the warnings describe the zones as the writes that were made left them.
    api.print_held_warnings();
    applied
}

async fn apply_to(api: &ApiClient, args: &ApplyArgs, config: Config) -> anyhow::Result<ExitCode> {
    let mut plan = Plan {
        dry_run: args.dry_run,
        changes: 0,
    };
    let account = account_id(api).await?;
    let uploaded = uploaded_certificates(api, &account).await?;
    let cas = ca_names(&uploaded);
    let lists_path = format!("/accounts/{account}/rules/lists");
    let server_lists = array(&api.get(&lists_path).await?.result).to_vec();
    let existing = zones(api).await?;

    // Everything that can be found wrong with the file is found before anything is changed.
    let cas_plan = plan_cas(&uploaded, &config.cas)?;
    let mut cas = cas;
    for ca in &cas_plan {
        if ca.id.is_none() {
            cas.push((format!("{NEW_CA}{}", ca.config.name), ca.config.name.clone()));
        }
    }
    let lists = check_lists(&config, &server_lists)?;
    let mut hosts_of = BTreeMap::new();
    let mut packs_of = BTreeMap::new();
    for zone in &existing {
        let id = s(zone, "id");
        let hosts = array(&api.get(&format!("/zones/{id}/hostnames")).await?.result).to_vec();
        hosts_of.insert(id.clone(), hosts);
        if config.zones.iter().any(|z| z.acme.is_some()) {
            let packs = array(&api.get(&format!("/zones/{id}/ssl/certificate_packs")).await?.result).to_vec();
            packs_of.insert(id, packs);
        }
    }
    let mut zones_plan = Vec::new();
    for zone in &config.zones {
        zones_plan.push(plan_zone(api, zone, &existing, (&hosts_of, &packs_of), (&cas, &uploaded), &lists).await?);
    }
    let pruned_lists: Vec<&Value> = if args.prune {
        let named: BTreeSet<&str> = config.lists.iter().map(|l| l.name.as_str()).collect();
        server_lists
            .iter()
            .filter(|l| !named.contains(s(l, "name").as_str()))
            .collect()
    } else {
        Vec::new()
    };
    for list in &pruned_lists {
        let reference = format!("${}", s(list, "name"));
        if let Some(zone) = zones_plan.iter().find(|z| {
            z.rules
                .iter()
                .any(|(_, _, want, _)| want.iter().any(|r| mentions(r, &reference)))
        }) {
            bail!(
                "--prune would remove the list {reference}, which the rules of zone {} use: name it in the file",
                zone.name
            );
        }
    }

    let created = apply_cas(api, &account, &cas_plan, &mut plan).await?;
    // The CAs the file created, under their ids from now on.
    for (placeholder, id) in &created {
        for (ca_id, _) in cas.iter_mut() {
            if ca_id == placeholder {
                ca_id.clone_from(id);
            }
        }
        for zone in zones_plan.iter_mut() {
            for host in zone.hosts.iter_mut() {
                if let Some(set) = host.mtls.as_mut()
                    && set.remove(&Some(placeholder.clone()))
                {
                    set.insert(Some(id.clone()));
                }
            }
        }
    }
    apply_lists(api, &lists_path, &config.lists, &server_lists, &mut plan).await?;
    for zone in &mut zones_plan {
        apply_zone(api, zone, &cas, args.prune, &mut plan).await?;
    }
    for list in pruned_lists {
        let name = s(list, "name");
        if plan.change(&format!("- list ${name}")) {
            // Rules of zones the file leaves out may still use it; the API refuses then, and nothing else is left
            // to do.
            if let Err(err) = api.delete(&format!("{lists_path}/{}", s(list, "id"))).await {
                eprintln!("warning: list ${name} not removed: {err:#}");
            }
        }
    }
    match (plan.changes, args.dry_run) {
        (0, _) => outln!("no changes: the server matches {}", args.file.display()),
        (n, true) => outln!("{n} change{} to make (dry run: nothing was changed)", plural(n)),
        (n, false) => outln!("{n} change{} made", plural(n)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a rule's expression names `reference` (`$name`) as a whole list name.
fn mentions(rule: &Value, reference: &str) -> bool {
    let expression = rule["expression"].as_str().unwrap_or_default();
    expression.match_indices(reference).any(|(i, _)| {
        !expression[i + reference.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Reads a configuration file and checks its shape; errors name the file and, for TOML errors, the line.
fn read_config(path: &std::path::Path) -> anyhow::Result<Config> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!("{} is larger than {MAX_FILE_BYTES} bytes", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: Config =
        toml::from_str(&text).with_context(|| format!("{} is not a valid configuration", path.display()))?;
    let mut names = BTreeSet::new();
    for zone in &config.zones {
        if !names.insert(zone.name.to_ascii_lowercase()) {
            bail!("{}: zone {:?} is listed twice", path.display(), zone.name);
        }
        for host in &zone.hostnames {
            let name = host.get("hostname").and_then(Value::as_str).with_context(|| {
                format!(
                    "{}: a hostname of zone {:?} has no `hostname`",
                    path.display(),
                    zone.name
                )
            })?;
            if host.get("origin").and_then(Value::as_str).is_none() {
                bail!("{}: hostname {name:?} has no `origin`", path.display());
            }
            desired_settings(host).with_context(|| format!("{}: hostname {name:?}", path.display()))?;
        }
    }
    let mut lists = BTreeSet::new();
    for list in &config.lists {
        if !lists.insert(list.name.as_str()) {
            bail!("{}: list {:?} is listed twice", path.display(), list.name);
        }
    }
    Ok(config)
}

/// A CA of the file and the server's CA of that name, if any.
struct CaPlan<'a> {
    config: &'a CaConfig,
    /// The bundle as the server would store it.
    certificates: String,
    crl_urls: Vec<String>,
    ocsp: (String, Option<String>),
    id: Option<String>,
    current: Option<Value>,
}

/// Checks the file's CAs as an upload would be checked and finds them on the server by name, changing nothing. A
/// CA of the server with the same name and other certificates is refused: replacing a CA moves hostnames, which
/// is done by hand.
fn plan_cas<'a>(uploaded: &[Value], cas: &'a [CaConfig]) -> anyhow::Result<Vec<CaPlan<'a>>> {
    let mut plans: Vec<CaPlan<'a>> = Vec::new();
    for ca in cas {
        if ca.name.trim().is_empty() {
            bail!("a CA in the file has no name: `mtls` names CAs by name");
        }
        if ca.name == MANAGED || plans.iter().any(|p| p.config.name == ca.name) {
            bail!("CA {:?} is listed twice, or is the managed CA's name", ca.name);
        }
        let parsed = portcullis_pki::parse_ca_bundle(&ca.certificates, &ca.name, time::OffsetDateTime::now_utc())
            .map_err(|e| anyhow::anyhow!("CA {:?}: {e}", ca.name))?;
        if ca.crl_urls.len() > portcullis_admin::MAX_CRL_URLS {
            bail!("CA {:?}: at most {} CRL URLs", ca.name, portcullis_admin::MAX_CRL_URLS);
        }
        let mut crl_urls = Vec::new();
        for url in &ca.crl_urls {
            let url = portcullis_admin::check_crl_url(url).map_err(|e| anyhow::anyhow!("CA {:?}: {e}", ca.name))?;
            if !crl_urls.contains(&url) {
                crl_urls.push(url);
            }
        }
        if !["off", "soft", "hard"].contains(&ca.ocsp.as_str()) {
            bail!(
                "CA {:?}: ocsp must be \"off\", \"soft\" or \"hard\" (got {:?})",
                ca.name,
                ca.ocsp
            );
        }
        if let Some(grace) = ca.crl_grace_seconds
            && !(0..=portcullis_store::MAX_CRL_GRACE_SECONDS).contains(&grace)
        {
            bail!(
                "CA {:?}: crl_grace_seconds must be 0 to {} (30 days), or absent",
                ca.name,
                portcullis_store::MAX_CRL_GRACE_SECONDS
            );
        }
        let responder = match ca.ocsp_responder.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(_) if ca.ocsp == "off" => bail!("CA {:?}: an ocsp_responder needs ocsp \"soft\" or \"hard\"", ca.name),
            Some(url) => Some(
                portcullis_admin::check_ocsp_responder(url).map_err(|e| anyhow::anyhow!("CA {:?}: {e}", ca.name))?,
            ),
        };
        let named: Vec<&Value> = uploaded
            .iter()
            .filter(|c| c["ca"].as_bool() != Some(false) && s(c, "name") == ca.name)
            .collect();
        let current = match named.as_slice() {
            [] => None,
            [one] => Some((*one).clone()),
            _ => bail!("several uploaded CAs are called {:?}: rename all but one", ca.name),
        };
        if let Some(current) = &current
            && s(current, "certificates").trim() != parsed.record.certificates.trim()
        {
            bail!(
                "CA {:?} on the server has other certificates: upload the new bundle under another name, move the \
                 hostnames to it, then delete the old one",
                ca.name
            );
        }
        plans.push(CaPlan {
            config: ca,
            certificates: parsed.record.certificates,
            crl_urls,
            ocsp: (ca.ocsp.clone(), responder),
            id: current.as_ref().map(|c| s(c, "id")),
            current,
        });
    }
    Ok(plans)
}

/// Uploads the file's new CAs and sets their CRL URLs and OCSP checks; returns (placeholder, id) for each CA made.
async fn apply_cas(
    api: &ApiClient,
    account: &str,
    cas: &[CaPlan<'_>],
    plan: &mut Plan,
) -> anyhow::Result<Vec<(String, String)>> {
    let base = format!("/accounts/{account}/mtls_certificates");
    let mut created = Vec::new();
    for ca in cas {
        let name = &ca.config.name;
        let id = match &ca.id {
            Some(id) => Some(id.clone()),
            None if plan.change(&format!("+ CA {name:?}")) => {
                let body = json!({"ca": true, "name": name, "certificates": ca.certificates});
                let id = s(&api.send(Method::POST, &base, &body).await?.result, "id");
                created.push((format!("{NEW_CA}{name}"), id.clone()));
                Some(id)
            }
            None => None,
        };
        let current = ca.current.as_ref();
        let urls: Vec<String> = current
            .map(|c| {
                array(&c["crl_urls"])
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if urls != ca.crl_urls
            && plan.change(&format!("~ CA {name:?} crl_urls: {}", ca.crl_urls.join(" ")))
            && let Some(id) = &id
        {
            api.send(
                Method::PUT,
                &format!("{base}/{id}/crl_urls"),
                &json!({"urls": ca.crl_urls}),
            )
            .await?;
        }
        let have = current.map_or_else(
            || ("off".to_owned(), None),
            |c| (s(c, "ocsp_check"), c["ocsp_responder"].as_str().map(str::to_owned)),
        );
        if have != ca.ocsp
            && plan.change(&format!("~ CA {name:?} ocsp: {}", ca.ocsp.0))
            && let Some(id) = &id
        {
            let body = json!({"check": ca.ocsp.0, "responder": ca.ocsp.1});
            api.send(Method::PUT, &format!("{base}/{id}/ocsp"), &body).await?;
        }
        let grace = ca.config.crl_grace_seconds;
        let have = current.and_then(|c| c["crl_grace_seconds"].as_i64());
        if have != grace
            && plan.change(&format!(
                "~ CA {name:?} crl_grace_seconds: {}",
                grace.map_or_else(|| "off".to_owned(), |g| g.to_string())
            ))
            && let Some(id) = &id
        {
            let body = json!({"grace_seconds": grace});
            api.send(Method::PUT, &format!("{base}/{id}/crl_grace"), &body).await?;
        }
    }
    Ok(created)
}

/// The file's lists are valid; returns every list name the rules may use (the file's and the server's).
fn check_lists(config: &Config, server_lists: &[Value]) -> anyhow::Result<portcullis_rules::Lists> {
    // Only the names matter to compiling: the items are the server's business.
    let mut lists = portcullis_rules::Lists::new();
    for list in server_lists {
        let _ = lists.insert_ip(&s(list, "name"), []);
    }
    for list in &config.lists {
        lists
            .insert_ip(&list.name, list.items.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("list ${}: {e}", list.name))?;
    }
    Ok(lists)
}

/// Objects of the server's zones (hostnames, certificate packs), by zone id.
type ByZone = BTreeMap<String, Vec<Value>>;

/// Checks a zone of the file against the server and works out what it wants, changing nothing.
async fn plan_zone<'a>(
    api: &ApiClient,
    zone: &'a ZoneConfig,
    existing: &[Value],
    (hosts_of, packs_of): (&ByZone, &ByZone),
    (cas, uploaded): (&[(String, String)], &[Value]),
    lists: &portcullis_rules::Lists,
) -> anyhow::Result<ZonePlan<'a>> {
    let found = existing.iter().find(|z| s(z, "name").eq_ignore_ascii_case(&zone.name));
    let id = found.map(|z| s(z, "id"));
    let zone_name = found.map_or_else(|| zone.name.to_ascii_lowercase(), |z| s(z, "name"));
    let current_hosts = id.as_ref().and_then(|id| hosts_of.get(id)).cloned().unwrap_or_default();
    let mut hosts: Vec<HostPlan> = Vec::new();
    for host in &zone.hostnames {
        let given = host.get("hostname").and_then(Value::as_str).unwrap_or_default();
        let name = portcullis_store::check_hostname(given, &zone_name).map_err(|e| anyhow::anyhow!("{e}"))?;
        if hosts.iter().any(|h| h.name == name) {
            bail!("hostname {name:?} is listed twice in zone {}", zone.name);
        }
        // Hostnames are unique across zones: one in another zone must leave it first.
        for (other, other_hosts) in hosts_of {
            if Some(other) != id.as_ref() && other_hosts.iter().any(|h| s(h, "hostname") == name) {
                let other_name = existing
                    .iter()
                    .find(|z| s(z, "id") == *other)
                    .map_or_else(|| other.clone(), |z| s(z, "name"));
                bail!(
                    "hostname {name:?} belongs to zone {other_name}: remove it there (`portcullis host remove {name}`) before listing it in zone {}",
                    zone.name
                );
            }
        }
        let origin = host.get("origin").and_then(Value::as_str).unwrap_or_default();
        let (origin, settings) = portcullis_admin::normalize_settings(origin, desired_settings(host)?)
            .map_err(|e| anyhow::anyhow!("hostname {name:?}: {}", e.message))?;
        if let Some(id) = &settings.origin_client_certificate
            && !is_client_certificate(uploaded, id)
        {
            bail!("hostname {name:?}: origin_client_certificate {id:?} is not an uploaded client certificate");
        }
        hosts.push(HostPlan {
            mtls: mtls_cas(host, cas)?,
            name,
            origin,
            settings,
        });
    }
    let mut rules = Vec::new();
    for (key, phase) in RULE_PHASES {
        let given = match key {
            "rules" => zone.rules.as_ref(),
            _ => zone.ratelimit_rules.as_ref(),
        };
        let Some(given) = given else { continue };
        let current = match &id {
            Some(id) => match api
                .get(&format!("/zones/{id}/rulesets/phases/{phase}/entrypoint"))
                .await
            {
                Ok(rs) => array(&rs.result["rules"]).to_vec(),
                Err(err) if ApiFailure::is_not_found(&err) => Vec::new(),
                Err(err) => return Err(err),
            },
            None => Vec::new(),
        };
        let expressions: std::collections::HashSet<String> = current.iter().map(|r| s(r, "expression")).collect();
        let given: Vec<Value> = given.iter().cloned().map(Value::Object).collect();
        let want = portcullis_admin::normalize_rules(phase, &given, lists, &expressions)
            .map_err(|e| anyhow::anyhow!("zone {} {key}: {e}", zone.name))?;
        // The server's rules as the same function puts them; failing that (data of an older version), as shown.
        let have = portcullis_admin::normalize_rules(phase, &current, lists, &expressions)
            .unwrap_or_else(|_| current.iter().map(rule_fields).collect());
        rules.push((key, phase, want, have));
    }
    let managed_headers = if zone.managed_request_headers.is_none() && zone.managed_response_headers.is_none() {
        None
    } else {
        let wanted = |list: &Option<Vec<String>>, offered: &[&str], key: &str| -> anyhow::Result<Option<Vec<String>>> {
            let Some(list) = list else { return Ok(None) };
            if let Some(unknown) = list.iter().find(|id| !offered.contains(&id.as_str())) {
                bail!(
                    "zone {}: {key}: {unknown:?} is not offered (only {offered:?})",
                    zone.name
                );
            }
            let mut list = list.clone();
            list.sort();
            list.dedup();
            Ok(Some(list))
        };
        let request = wanted(
            &zone.managed_request_headers,
            &portcullis_admin::MANAGED_REQUEST_TRANSFORMS,
            "managed_request_headers",
        )?;
        let response = wanted(
            &zone.managed_response_headers,
            &portcullis_admin::MANAGED_RESPONSE_TRANSFORMS,
            "managed_response_headers",
        )?;
        let have = match &id {
            Some(id) => managed_on(&api.get(&format!("/zones/{id}/managed_headers")).await?.result),
            None => (Vec::new(), Vec::new()),
        };
        Some(ManagedPlan {
            request,
            response,
            have,
        })
    };
    let url_normalization = match &zone.url_normalization {
        Some(want) => {
            let (scopes, kinds) = (
                portcullis_store::URL_NORMALIZATION_SCOPES,
                portcullis_store::URL_NORMALIZATION_TYPES,
            );
            if !scopes.contains(&want.scope.as_str()) {
                bail!(
                    "zone {}: url_normalization scope must be one of {scopes:?} (got {:?})",
                    zone.name,
                    want.scope
                );
            }
            if !kinds.contains(&want.kind.as_str()) {
                bail!(
                    "zone {}: url_normalization type must be one of {kinds:?} (got {:?})",
                    zone.name,
                    want.kind
                );
            }
            let have = match &id {
                Some(id) => UrlNormalization::of(&api.get(&format!("/zones/{id}/url_normalization")).await?.result),
                None => UrlNormalization {
                    scope: default_scope(),
                    kind: default_normalization(),
                },
            };
            Some((want.clone(), have))
        }
        None => None,
    };
    let acme = match &zone.acme {
        Some(packs) => {
            if packs.len() > portcullis_store::MAX_PACKS_PER_ZONE {
                bail!(
                    "zone {} acme: at most {} certificates per zone, not {}",
                    zone.name,
                    portcullis_store::MAX_PACKS_PER_ZONE,
                    packs.len()
                );
            }
            let mut want: Vec<Vec<String>> = Vec::new();
            for names in packs {
                let mut names = portcullis_admin::check_pack_hosts(names, &zone_name)
                    .map_err(|e| anyhow::anyhow!("zone {} acme: {}", zone.name, e.message))?;
                names.sort();
                // A wildcard is validated over DNS only: the zone must have its DNS update settings, which `apply`
                // does not set (they hold a secret), before anything changes.
                if let Some(wildcard) = names.iter().find(|n| n.starts_with("*.")) {
                    let has_dns = match &id {
                        Some(id) => !api.get(&format!("/zones/{id}/ssl/acme_dns")).await?.result.is_null(),
                        None => false,
                    };
                    if !has_dns {
                        bail!(
                            "zone {} acme: {wildcard} is validated over DNS only: give the zone its DNS update \
                             settings first (portcullis acme dns set)",
                            zone.name
                        );
                    }
                }
                if let Some(name) = names.iter().find(|n| want.iter().flatten().any(|w| w == *n)) {
                    bail!("zone {} acme: {name} is in two certificates", zone.name);
                }
                // A name in a pack of another zone (zones nest: `a.example.com` in `example.com`'s) must leave it
                // there first; found now, before anything is removed here.
                for (other, other_packs) in packs_of {
                    if Some(other) == id.as_ref() {
                        continue;
                    }
                    if let Some(name) = names
                        .iter()
                        .find(|n| other_packs.iter().any(|p| pack_names(p).contains(n)))
                    {
                        let other_name = existing
                            .iter()
                            .find(|z| s(z, "id") == *other)
                            .map_or_else(|| other.clone(), |z| s(z, "name"));
                        bail!(
                            "zone {} acme: {name} has an ACME certificate in zone {other_name}: remove it there first",
                            zone.name
                        );
                    }
                }
                want.push(names);
            }
            let have = id.as_ref().and_then(|id| packs_of.get(id)).cloned().unwrap_or_default();
            Some((want, have))
        }
        None => None,
    };
    let cert_policy = match &zone.client_certificate_policy {
        Some(want) => {
            want.check()
                .map_err(|e| anyhow::anyhow!("zone {}: client_certificate_policy: {}", zone.name, e.message))?;
            let have = match &id {
                Some(id) => serde_json::from_value(
                    api.get(&format!("/zones/{id}/portcullis/client_certificate_policy"))
                        .await?
                        .result,
                )
                .context("reading a zone's client certificate policy from the server")?,
                None => ClientCertificatePolicy::default(),
            };
            Some((want.clone(), have))
        }
        None => None,
    };
    Ok(ZonePlan {
        name: &zone.name,
        id,
        current_hosts,
        hosts,
        rules,
        url_normalization,
        managed_headers,
        acme,
        cert_policy,
    })
}

/// What a file wants of a zone's managed transforms, and what is on now.
struct ManagedPlan {
    request: Option<Vec<String>>,
    response: Option<Vec<String>>,
    /// (request, response) on now.
    have: (Vec<String>, Vec<String>),
}

/// The ids of the managed transforms that are on, sorted, for requests and for responses, from
/// `GET …/managed_headers`.
fn managed_on(result: &Value) -> (Vec<String>, Vec<String>) {
    let on = |key: &str| {
        let mut on: Vec<String> = array(&result[key])
            .iter()
            .filter(|h| h["enabled"].as_bool() == Some(true))
            .map(|h| s(h, "id"))
            .collect();
        on.sort();
        on
    };
    (on("managed_request_headers"), on("managed_response_headers"))
}

/// Whether `id` is an uploaded client certificate (for an origin).
fn is_client_certificate(uploaded: &[Value], id: &str) -> bool {
    uploaded
        .iter()
        .any(|c| s(c, "id") == id && c["ca"].as_bool() == Some(false))
}

/// A hostname's settings as the file gives them: every setting it leaves out at its default. Refuses unknown
/// fields and wrong types, naming them.
fn desired_settings(host: &Map<String, Value>) -> anyhow::Result<HostnameSettings> {
    let mut fields = host.clone();
    for key in ["hostname", "origin", "mtls"] {
        fields.remove(key);
    }
    Ok(serde_json::from_value(Value::Object(fields))?)
}

/// The settings of a hostname as the API shows it.
fn current_settings(view: &Value) -> anyhow::Result<HostnameSettings> {
    let mut fields = view.as_object().cloned().unwrap_or_default();
    for key in ["id", "zone_id", "hostname", "origin", "created_on", "modified_on"] {
        fields.remove(key);
    }
    serde_json::from_value(Value::Object(fields)).context("reading a hostname's settings from the server")
}

/// The account's uploaded certificates: CAs, and client certificates for origins (`"ca": false`).
async fn uploaded_certificates(api: &ApiClient, account: &str) -> anyhow::Result<Vec<Value>> {
    Ok(array(&api.get(&format!("/accounts/{account}/mtls_certificates")).await?.result).to_vec())
}

/// The uploaded CAs among `uploaded`: (id, name) pairs.
fn ca_names(uploaded: &[Value]) -> Vec<(String, String)> {
    uploaded
        .iter()
        .filter(|c| c["ca"].as_bool() != Some(false))
        .map(|c| (s(c, "id"), s(c, "name")))
        .collect()
}

/// The CA `name` in a file's `mtls` stands for: `None` for the managed CA, else an uploaded CA's id.
fn ca_id(cas: &[(String, String)], name: &str) -> anyhow::Result<Option<String>> {
    if name == MANAGED {
        return Ok(None);
    }
    if let Some((id, _)) = cas.iter().find(|(id, _)| id == name) {
        return Ok(Some(id.clone()));
    }
    let named: Vec<&String> = cas.iter().filter(|(_, n)| n == name).map(|(id, _)| id).collect();
    match named.as_slice() {
        [id] => Ok(Some((*id).clone())),
        [] => {
            bail!("no uploaded CA is called {name:?} (`portcullis ca list-uploaded`; \"{MANAGED}\" is the managed CA)")
        }
        _ => bail!("several uploaded CAs are called {name:?}: name one by its id"),
    }
}

/// The CAs a hostname's `mtls` names (`None`: the managed CA), or `None` when the file does not say.
fn mtls_cas(host: &Map<String, Value>, cas: &[(String, String)]) -> anyhow::Result<Option<BTreeSet<Option<String>>>> {
    let Some(mtls) = host.get("mtls") else {
        return Ok(None);
    };
    let name = host.get("hostname").and_then(Value::as_str).unwrap_or_default();
    let Some(list) = mtls.as_array() else {
        bail!("hostname {name:?}: mtls must be a list of CA names (\"{MANAGED}\" for the managed CA)");
    };
    let mut set = BTreeSet::new();
    for ca in list {
        let ca = ca
            .as_str()
            .with_context(|| format!("hostname {name:?}: mtls must list CA names"))?;
        set.insert(ca_id(cas, ca).with_context(|| format!("hostname {name:?}"))?);
    }
    Ok(Some(set))
}

async fn apply_lists(
    api: &ApiClient,
    base: &str,
    lists: &[ListConfig],
    current: &[Value],
    plan: &mut Plan,
) -> anyhow::Result<()> {
    for list in lists {
        let mut items = BTreeSet::new();
        for item in &list.items {
            let (canonical, _) = portcullis_rules::lists::parse_ip_item(item)
                .map_err(|e| anyhow::anyhow!("list ${}: {e}", list.name))?;
            items.insert(canonical);
        }
        let found = current.iter().find(|l| s(l, "name") == list.name);
        let id = match found {
            Some(found) => {
                if s(found, "description") != list.description
                    && plan.change(&format!("~ list ${} description", list.name))
                {
                    api.send(
                        Method::PUT,
                        &format!("{base}/{}", s(found, "id")),
                        &json!({"description": list.description}),
                    )
                    .await?;
                }
                Some(s(found, "id"))
            }
            None => {
                if plan.change(&format!("+ list ${}", list.name)) {
                    let body = json!({"name": list.name, "kind": "ip", "description": list.description});
                    Some(s(&api.send(Method::POST, base, &body).await?.result, "id"))
                } else {
                    None
                }
            }
        };
        let have: BTreeSet<String> = match &id {
            Some(id) => crate::cli_list::all_items(api, &format!("{base}/{id}/items"))
                .await?
                .iter()
                .map(|i| s(i, "ip"))
                .collect(),
            None => BTreeSet::new(),
        };
        if have != items {
            let line = format!(
                "~ list ${} items: {} added, {} removed",
                list.name,
                items.difference(&have).count(),
                have.difference(&items).count()
            );
            if plan.change(&line)
                && let Some(id) = &id
            {
                let values: Vec<String> = items.into_iter().collect();
                crate::cli_list::replace_items(api, &format!("{base}/{id}/items"), &values, "").await?;
            }
        }
    }
    Ok(())
}

async fn apply_zone(
    api: &ApiClient,
    zone: &mut ZonePlan<'_>,
    cas: &[(String, String)],
    prune: bool,
    plan: &mut Plan,
) -> anyhow::Result<()> {
    if zone.id.is_none() && plan.change(&format!("+ zone {}", zone.name)) {
        let created = api
            .send(Method::POST, "/zones", &json!({"name": zone.name}))
            .await?
            .result;
        zone.id = Some(s(&created, "id"));
    }
    let hosts_path = zone.id.as_ref().map(|id| format!("/zones/{id}/hostnames"));

    if let Some((want, have)) = &zone.url_normalization
        && want != have
        && plan.change(&format!(
            "~ {} url_normalization: scope {}, type {} (was {}, {})",
            zone.name, want.scope, want.kind, have.scope, have.kind
        ))
        && let Some(id) = &zone.id
    {
        api.send(
            Method::PUT,
            &format!("/zones/{id}/url_normalization"),
            &serde_json::to_value(want)?,
        )
        .await?;
    }

    if let Some((want, have)) = &zone.cert_policy
        && want != have
        && plan.change(&format!(
            "~ {} client_certificate_policy: {} (was {})",
            zone.name,
            serde_json::to_string(want)?,
            serde_json::to_string(have)?
        ))
        && let Some(id) = &zone.id
    {
        api.send(
            Method::PUT,
            &format!("/zones/{id}/portcullis/client_certificate_policy"),
            &serde_json::to_value(want)?,
        )
        .await?;
    }

    if let Some(plan_headers) = &zone.managed_headers {
        let (have_request, have_response) = &plan_headers.have;
        let want_request = plan_headers.request.as_ref().unwrap_or(have_request);
        let want_response = plan_headers.response.as_ref().unwrap_or(have_response);
        if (want_request != have_request || want_response != have_response)
            && plan.change(&format!(
                "~ {} managed headers: requests [{}], responses [{}] (were [{}], [{}])",
                zone.name,
                want_request.join(", "),
                want_response.join(", "),
                have_request.join(", "),
                have_response.join(", ")
            ))
            && let Some(id) = &zone.id
        {
            // Only the lists the file gives: the server keeps the other as it is.
            let changes = |offered: &[&str], want: &Option<Vec<String>>| -> Vec<Value> {
                let Some(want) = want else { return Vec::new() };
                offered
                    .iter()
                    .map(|t| json!({"id": t, "enabled": want.iter().any(|w| w == t)}))
                    .collect()
            };
            api.send(
                Method::PATCH,
                &format!("/zones/{id}/managed_headers"),
                &json!({
                    "managed_request_headers":
                        changes(&portcullis_admin::MANAGED_REQUEST_TRANSFORMS, &plan_headers.request),
                    "managed_response_headers":
                        changes(&portcullis_admin::MANAGED_RESPONSE_TRANSFORMS, &plan_headers.response),
                }),
            )
            .await?;
        }
    }

    for host in &zone.hosts {
        let name = &host.name;
        let current = zone.current_hosts.iter().find(|h| s(h, "hostname") == *name);
        match current {
            None => {
                if plan.change(&format!("+ hostname {name}"))
                    && let Some(path) = &hosts_path
                {
                    let mut body = serde_json::to_value(&host.settings)?;
                    body["hostname"] = json!(name);
                    body["origin"] = json!(host.origin);
                    api.send(Method::POST, path, &body).await?;
                }
            }
            Some(current) => {
                let have = current_settings(current)?;
                let mut changed = settings_diff(&have, &host.settings);
                if s(current, "origin") != host.origin {
                    changed.insert(0, "origin".to_owned());
                }
                if !changed.is_empty()
                    && plan.change(&format!("~ hostname {name} ({})", changed.join(", ")))
                    && let Some(path) = &hosts_path
                {
                    let mut body = serde_json::to_value(&host.settings)?;
                    body["origin"] = json!(host.origin);
                    // Left out means default: cleared, where the API reads an absent field as "unchanged".
                    for (key, cleared) in [
                        ("origin_ca", json!("")),
                        ("origin_client_certificate", json!("")),
                        ("origin_health_check", Value::Null),
                        ("origin_host_header", json!("")),
                        ("client_certificate_headers", json!({})),
                    ] {
                        if body.get(key).is_none() {
                            body[key] = cleared;
                        }
                    }
                    api.send(Method::PATCH, &format!("{path}/{}", s(current, "id")), &body)
                        .await?;
                }
            }
        }
    }

    apply_mtls(api, zone, cas, plan).await?;

    for (key, phase, want, have) in &zone.rules {
        if want != have
            && plan.change(&format!(
                "~ {} {key}: {} rule{} in place of {}",
                zone.name,
                want.len(),
                plural(want.len()),
                have.len()
            ))
            && let Some(id) = &zone.id
        {
            api.send(
                Method::PUT,
                &format!("/zones/{id}/rulesets/phases/{phase}/entrypoint"),
                &json!({"rules": want}),
            )
            .await?;
        }
    }

    if let Some((want, have)) = &zone.acme {
        let base = zone.id.as_ref().map(|id| format!("/zones/{id}/ssl/certificate_packs"));
        // Removed first, so that a name can move from one pack to another (it has no ACME certificate between).
        for pack in have {
            let names = pack_names(pack);
            if !want.contains(&names)
                && plan.change(&format!("- acme certificate {} ({})", names.join(", "), s(pack, "id")))
                && let Some(base) = &base
            {
                api.delete(&format!("{base}/{}", s(pack, "id"))).await?;
            }
        }
        for names in want {
            if !have.iter().any(|p| pack_names(p) == *names)
                && plan.change(&format!("+ acme certificate {}", names.join(", ")))
                && let Some(base) = &base
            {
                api.send(Method::POST, &format!("{base}/order"), &json!({"hosts": names}))
                    .await?;
            }
        }
    }

    if prune && let Some(path) = &hosts_path {
        let wanted: BTreeSet<&str> = zone.hosts.iter().map(|h| h.name.as_str()).collect();
        for host in &zone.current_hosts {
            let name = s(host, "hostname");
            if !wanted.contains(name.as_str()) && plan.change(&format!("- hostname {name}")) {
                api.delete(&format!("{path}/{}", s(host, "id"))).await?;
            }
        }
    }
    Ok(())
}

/// A certificate pack's names, sorted.
fn pack_names(pack: &Value) -> Vec<String> {
    let mut names: Vec<String> = array(&pack["hosts"])
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// The names of the settings that differ.
fn settings_diff(have: &HostnameSettings, want: &HostnameSettings) -> Vec<String> {
    let (Ok(Value::Object(have)), Ok(Value::Object(want))) = (serde_json::to_value(have), serde_json::to_value(want))
    else {
        return vec!["settings".to_owned()];
    };
    let keys: BTreeSet<&String> = have.keys().chain(want.keys()).collect();
    keys.into_iter()
        .filter(|k| have.get(*k) != want.get(*k))
        .map(|k| k.to_string())
        .collect()
}

/// A rule's managed fields, with their defaults, as the server shows them.
fn rule_fields(rule: &Value) -> Value {
    let mut out = Map::new();
    for key in RULE_FIELDS {
        let value = rule.get(key).filter(|v| !v.is_null()).cloned();
        match (key, value) {
            ("enabled", None) => {
                out.insert(key.into(), json!(true));
            }
            ("description", None) => {
                out.insert(key.into(), json!(""));
            }
            (_, Some(v)) => {
                out.insert(key.into(), v);
            }
            (_, None) => {}
        }
    }
    Value::Object(out)
}

/// Each hostname with `mtls` in the file trusts exactly the CAs it names. Hostnames are added to CAs before
/// they are removed from others, so that a hostname moving from one CA to another always trusts one.
async fn apply_mtls(
    api: &ApiClient,
    zone: &ZonePlan<'_>,
    cas: &[(String, String)],
    plan: &mut Plan,
) -> anyhow::Result<()> {
    let wanted: Vec<(&str, &BTreeSet<Option<String>>)> = zone
        .hosts
        .iter()
        .filter_map(|h| h.mtls.as_ref().map(|m| (h.name.as_str(), m)))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let path = zone
        .id
        .as_ref()
        .map(|id| format!("/zones/{id}/certificate_authorities/hostname_associations"));
    let every_ca = std::iter::once(None).chain(cas.iter().map(|(id, _)| Some(id.clone())));
    // Per CA: its hostnames now and as the file wants them.
    let mut changes = Vec::new();
    for ca in every_ca {
        let query = ca
            .as_ref()
            .map(|id| format!("?mtls_certificate_id={id}"))
            .unwrap_or_default();
        let made_by_file = ca.as_ref().is_some_and(|id| id.starts_with(NEW_CA));
        let current: BTreeSet<String> = match &path {
            Some(path) if !made_by_file => array(&api.get(&format!("{path}{query}")).await?.result["hostnames"])
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect(),
            _ => BTreeSet::new(),
        };
        let mut next = current.clone();
        for (host, set) in &wanted {
            if set.contains(&ca) {
                next.insert((*host).to_owned());
            } else {
                next.remove(*host);
            }
        }
        if next != current {
            changes.push((ca, current, next));
        }
    }
    let label = |ca: &Option<String>| match ca {
        None => MANAGED.to_owned(),
        Some(id) => cas
            .iter()
            .find(|(i, _)| i == id)
            .map_or_else(|| id.clone(), |(_, n)| format!("{n:?}")),
    };
    let mut write = Vec::new();
    for (ca, current, next) in &changes {
        let added: Vec<&str> = next.difference(current).map(String::as_str).collect();
        let removed: Vec<&str> = current.difference(next).map(String::as_str).collect();
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("+{}", added.join(",")));
        }
        if !removed.is_empty() {
            parts.push(format!("-{}", removed.join(",")));
        }
        if plan.change(&format!("~ mtls with the {} CA: {}", label(ca), parts.join(" "))) {
            write.push((ca, current, next));
        }
    }
    let Some(path) = path else { return Ok(()) };
    let put = |ca: &Option<String>, hostnames: Vec<&String>| {
        let mut body = json!({ "hostnames": hostnames });
        if let Some(id) = ca {
            body["mtls_certificate_id"] = json!(id);
        }
        body
    };
    // Additions first, then removals.
    for (ca, current, next) in &write {
        if next.difference(current).next().is_some() {
            api.send(Method::PUT, &path, &put(ca, current.union(next).collect()))
                .await?;
        }
    }
    for (ca, current, next) in &write {
        if current.difference(next).next().is_some() {
            api.send(Method::PUT, &path, &put(ca, next.iter().collect())).await?;
        }
    }
    Ok(())
}

pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let account = account_id(&api).await?;
    let uploaded = uploaded_certificates(&api, &account).await?;
    let cas = ca_names(&uploaded);
    let mut config = ConfigOut {
        cas: Vec::new(),
        lists: Vec::new(),
        zones: Vec::new(),
    };
    // Only CAs a file can name: with a name no other CA has. The others stay on the server, named by id in `mtls`.
    for ca in &uploaded {
        let name = s(ca, "name");
        if ca["ca"].as_bool() == Some(false)
            || name.is_empty()
            || name == MANAGED
            || cas.iter().filter(|(_, n)| *n == name).count() != 1
        {
            continue;
        }
        config.cas.push(CaConfig {
            name: s(ca, "name"),
            certificates: s(ca, "certificates"),
            crl_urls: array(&ca["crl_urls"])
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            ocsp: match s(ca, "ocsp_check") {
                check if check.is_empty() => ocsp_off(),
                check => check,
            },
            ocsp_responder: ca["ocsp_responder"].as_str().map(str::to_owned),
            crl_grace_seconds: ca["crl_grace_seconds"].as_i64(),
        });
    }
    let lists_path = format!("/accounts/{account}/rules/lists");
    for list in array(&api.get(&lists_path).await?.result) {
        let items = crate::cli_list::all_items(&api, &format!("{lists_path}/{}/items", s(list, "id"))).await?;
        config.lists.push(ListConfig {
            name: s(list, "name"),
            description: s(list, "description"),
            items: items.iter().map(|i| s(i, "ip")).collect(),
        });
    }
    let mut all = zones(&api).await?;
    if let Some(wanted) = &args.zone {
        all.retain(|z| s(z, "id") == *wanted || s(z, "name").eq_ignore_ascii_case(wanted));
        if all.is_empty() {
            bail!("no zone {wanted:?}");
        }
    }
    // The name a file uses for each CA: an uploaded CA's name when no other CA has it, else its id.
    let labels: Vec<(Option<String>, String)> = std::iter::once((None, MANAGED.to_owned()))
        .chain(cas.iter().map(|(id, name)| {
            let unique = !name.is_empty() && name != MANAGED && cas.iter().filter(|(_, n)| n == name).count() == 1;
            (Some(id.clone()), if unique { name.clone() } else { id.clone() })
        }))
        .collect();
    let defaults = serde_json::to_value(HostnameSettings::default())?;
    for zone in &all {
        let id = s(zone, "id");
        let path = format!("/zones/{id}/certificate_authorities/hostname_associations");
        let mut trusts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (ca, label) in &labels {
            let query = ca
                .as_ref()
                .map(|i| format!("?mtls_certificate_id={i}"))
                .unwrap_or_default();
            for host in array(&api.get(&format!("{path}{query}")).await?.result["hostnames"]) {
                if let Some(h) = host.as_str() {
                    trusts.entry(h.to_ascii_lowercase()).or_default().push(label.clone());
                }
            }
        }
        let mut hostnames = Vec::new();
        for host in array(&api.get(&format!("/zones/{id}/hostnames")).await?.result) {
            let name = s(host, "hostname");
            // Only what differs from the defaults, so that the file says what was chosen.
            let mut settings = Map::new();
            if let Value::Object(fields) = serde_json::to_value(current_settings(host)?)? {
                for (key, value) in fields {
                    if defaults.get(&key) != Some(&value) {
                        settings.insert(key, value);
                    }
                }
            }
            // Said even when empty, so that applying the file keeps a hostname without mTLS that way.
            let trusted = trusts.get(&name.to_ascii_lowercase()).cloned().unwrap_or_default();
            settings.insert("mtls".into(), json!(trusted));
            hostnames.push(HostOut {
                hostname: name,
                origin: s(host, "origin"),
                settings,
            });
        }
        let mut phases = Vec::new();
        for (_, phase) in RULE_PHASES {
            let rules = match api
                .get(&format!("/zones/{id}/rulesets/phases/{phase}/entrypoint"))
                .await
            {
                Ok(rs) => array(&rs.result["rules"]).to_vec(),
                Err(err) if ApiFailure::is_not_found(&err) => Vec::new(),
                Err(err) => return Err(err),
            };
            phases.push(rules.iter().map(rule_out).collect::<Vec<_>>());
        }
        let ratelimit_rules = phases.pop().unwrap_or_default();
        let rules = phases.pop().unwrap_or_default();
        let url_normalization = UrlNormalization::of(&api.get(&format!("/zones/{id}/url_normalization")).await?.result);
        let acme = array(&api.get(&format!("/zones/{id}/ssl/certificate_packs")).await?.result)
            .iter()
            .map(pack_names)
            .collect();
        let (managed_request_headers, managed_response_headers) =
            managed_on(&api.get(&format!("/zones/{id}/managed_headers")).await?.result);
        let policy: ClientCertificatePolicy = serde_json::from_value(
            api.get(&format!("/zones/{id}/portcullis/client_certificate_policy"))
                .await?
                .result,
        )
        .context("reading a zone's client certificate policy from the server")?;
        config.zones.push(ZoneOut {
            client_certificate_policy: (policy != ClientCertificatePolicy::default()).then_some(policy),
            url_normalization: (!url_normalization.is_default()).then_some(url_normalization),
            managed_request_headers,
            managed_response_headers,
            name: s(zone, "name"),
            hostnames,
            rules,
            ratelimit_rules,
            acme,
        });
    }
    let text = toml::to_string(&config).context("writing the configuration as TOML")?;
    outln!("# portcullis export: apply with `portcullis apply FILE`");
    out!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// A rule of the server as `export` writes it.
fn rule_out(rule: &Value) -> RuleOut {
    let mut rest = match rule_fields(rule) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut take = |key: &str| rest.remove(key).unwrap_or(Value::String(String::new()));
    let (description, expression, action) = (take("description"), take("expression"), take("action"));
    RuleOut {
        description,
        expression,
        action,
        rest,
    }
}
