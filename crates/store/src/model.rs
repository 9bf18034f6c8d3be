//! The records the store keeps, as callers see them. Times are unix seconds.

use serde::Serialize;

/// Who made a write, for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The API token that authorised the write; `None` for the server itself (first start, CLI on the data dir).
    pub token_id: Option<String>,
}

impl Actor {
    /// The server acting on its own behalf.
    pub fn system() -> Self {
        Actor { token_id: None }
    }

    /// A write authorised by the API token `token_id`.
    pub fn token(token_id: impl Into<String>) -> Self {
        Actor {
            token_id: Some(token_id.into()),
        }
    }
}

/// The one account, created when the store is first opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_on: i64,
}

/// A zone: a DNS name under which hostnames are configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Zone {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub status: String,
    pub created_on: i64,
    pub modified_on: i64,
    /// Where URL-normalized paths go: one of [`URL_NORMALIZATION_SCOPES`].
    pub url_normalization_scope: String,
    /// Which URL normalization: one of [`URL_NORMALIZATION_TYPES`].
    pub url_normalization_type: String,
    /// Cloudflare's managed request-header transforms that are on (`add_client_certificate_headers`).
    pub managed_request_headers: Vec<String>,
    /// Cloudflare's managed response-header transforms that are on (`remove_x-powered-by_header`).
    pub managed_response_headers: Vec<String>,
}

/// The values of [`Zone::url_normalization_scope`], Cloudflare's; the first is the default.
pub const URL_NORMALIZATION_SCOPES: [&str; 3] = ["incoming", "both", "none"];
/// The values of [`Zone::url_normalization_type`], Cloudflare's; the first is the default.
pub const URL_NORMALIZATION_TYPES: [&str; 2] = ["cloudflare", "rfc3986"];

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// GET requests only.
    Read,
    /// Everything.
    Write,
    /// GET requests, and issuing, revoking and reactivating client certificates.
    Certificates,
}

impl TokenScope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Write => "write",
            TokenScope::Certificates => "certificates",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(TokenScope::Read),
            "write" => Some(TokenScope::Write),
            "certificates" => Some(TokenScope::Certificates),
            _ => None,
        }
    }
}

/// An API token. Only the SHA-256 of its secret is stored; the secret is shown once, at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub scope: TokenScope,
    pub created_on: i64,
    pub revoked_on: Option<i64>,
    pub restrictions: TokenRestrictions,
}

/// Where and when a token works; the default restricts nothing. Checked by the admin API on every request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenRestrictions {
    /// Unix time before which the token does not work.
    pub not_before: Option<i64>,
    /// Unix time from which the token no longer works.
    pub expires_on: Option<i64>,
    /// Client addresses (CIDRs) it works from; empty: any.
    pub ip_in: Vec<String>,
    /// Client addresses (CIDRs) it never works from.
    pub ip_not_in: Vec<String>,
    /// The ids of the zones it may reach; `None`: every zone and the account.
    pub zones: Option<Vec<String>>,
}

impl TokenRestrictions {
    /// Whether the token works at Unix time `now`.
    pub fn live_at(&self, now: i64) -> bool {
        self.not_before.is_none_or(|t| now >= t) && self.expires_on.is_none_or(|t| now < t)
    }

    /// Whether the token works at `now` from anywhere, for every zone and without an end.
    pub fn unrestricted_at(&self, now: i64) -> bool {
        self.live_at(now)
            && self.expires_on.is_none()
            && self.ip_in.is_empty()
            && self.ip_not_in.is_empty()
            && self.zones.is_none()
    }

    /// Whether any restriction is set.
    pub fn any(&self) -> bool {
        *self != TokenRestrictions::default()
    }
}

/// One audited write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub token_id: Option<String>,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub detail: String,
}

/// A hostname the edge serves: its origin and per-host settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hostname {
    pub id: String,
    pub zone_id: String,
    pub hostname: String,
    pub origin: String,
    /// Per-host settings (origin TLS, forwarding style, mTLS mode, limits) as JSON; validated by the admin layer.
    pub settings: serde_json::Value,
    pub created_on: i64,
    pub modified_on: i64,
}

/// The state of a managed CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ManagedCaStatus {
    /// Issues new certificates and is trusted. At most one CA is active.
    Active,
    /// Replaced by a newer CA but still trusted, so that certificates it issued keep working until it is retired.
    Trusted,
    /// No longer trusted.
    Retired,
}

impl ManagedCaStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ManagedCaStatus::Active => "active",
            ManagedCaStatus::Trusted => "trusted",
            ManagedCaStatus::Retired => "retired",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(ManagedCaStatus::Active),
            "trusted" => Some(ManagedCaStatus::Trusted),
            "retired" => Some(ManagedCaStatus::Retired),
            _ => None,
        }
    }
}

/// A managed CA: its certificate and its sealed private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedCa {
    pub id: String,
    pub account_id: String,
    pub name: String,
    /// The CA certificate, PEM.
    pub certificate: String,
    /// The private key sealed with the master key (see `portcullis-pki`).
    pub sealed_key: Vec<u8>,
    pub key_type: String,
    pub status: ManagedCaStatus,
    /// The number of the last CRL issued by this CA.
    pub crl_number: i64,
    pub created_on: i64,
    pub retired_on: Option<i64>,
    /// The certificates above it when the operator's own CA signed it (PEM, its issuer first, the root last); empty
    /// for a self-signed one.
    pub chain: String,
}

/// A new managed CA to store.
#[derive(Debug, Clone)]
pub struct NewManagedCa {
    /// The id the CA's certificate subject was made with.
    pub id: String,
    pub name: String,
    pub certificate: String,
    pub sealed_key: Vec<u8>,
    pub key_type: String,
    /// See [`ManagedCa::chain`].
    pub chain: String,
}

/// A managed CA waiting for the operator's own CA to sign it: its key (sealed) and the CSR to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedCaRequest {
    /// The id the CA keeps once installed (its key is sealed under it).
    pub id: String,
    pub account_id: String,
    /// The common name asked for.
    pub name: String,
    /// PEM.
    pub csr: String,
    pub sealed_key: Vec<u8>,
    pub key_type: String,
    pub created_on: i64,
}

/// A new request to store.
#[derive(Debug, Clone)]
pub struct NewManagedCaRequest {
    pub id: String,
    pub name: String,
    pub csr: String,
    pub sealed_key: Vec<u8>,
    pub key_type: String,
}

/// A bring-your-own CA (Cloudflare's `mtls_certificates` record), with an optional CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsCertificate {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub ca: bool,
    pub certificates: String,
    pub issuer: String,
    pub serial_number: String,
    pub signature: String,
    pub expires_on: i64,
    pub uploaded_on: i64,
    pub updated_at: i64,
    /// The CRLs: PEM (one per certificate of the bundle at most) or, as stored before, one DER CRL.
    pub crl: Option<Vec<u8>>,
    pub crl_updated_on: Option<i64>,
    /// For a client certificate (`ca` false): its private key, sealed with the master key.
    pub sealed_key: Option<Vec<u8>>,
    /// Where the CRLs are fetched from (empty: they are uploaded).
    pub crl_urls: Vec<String>,
    /// The last successful fetch.
    pub crl_fetched_on: Option<i64>,
    /// Why the last fetch failed, until one succeeds.
    pub crl_fetch_error: Option<String>,
    /// Whether (and how) the client certificates this CA issued are checked with OCSP.
    pub ocsp: Option<portcullis_pki::OcspPolicy>,
    /// `None`: a stale CRL stays in use. `Some(grace)`: seconds past a CRL's `nextUpdate` after which the edge
    /// trusts none of this CA's certificates, nor any while it has no CRL.
    pub crl_grace_seconds: Option<i64>,
}

/// A certificate an uploaded CA issued that the edge refuses as revoked (Portcullis extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MtlsRevocation {
    pub id: String,
    pub mtls_certificate_id: String,
    /// Lower hex, no leading zeros.
    pub serial_number: String,
    /// Hex of the issuer name's DER (without its outer header); empty: issued by any certificate of the bundle.
    pub issuer_der: String,
    /// The issuer, RFC 2253, when known.
    pub issuer: String,
    /// SHA-256 of the certificate, lower hex, when it was given whole.
    pub fingerprint_sha256: String,
    pub note: String,
    pub created_on: i64,
}

/// What [`crate::Store::add_mtls_revocation`] records.
#[derive(Debug, Clone, Default)]
pub struct NewMtlsRevocation {
    /// Hex (either case), at most 20 bytes.
    pub serial_number: String,
    /// Hex; empty for any certificate of the bundle.
    pub issuer_der: String,
    pub issuer: String,
    pub fingerprint_sha256: String,
    pub note: String,
}

/// A new bring-your-own CA to store; its fields were computed from the PEM by `portcullis-pki`.
#[derive(Debug, Clone)]
pub struct NewMtlsCertificate {
    pub name: String,
    pub ca: bool,
    pub certificates: String,
    pub issuer: String,
    pub serial_number: String,
    pub signature: String,
    pub expires_on: i64,
    /// For a client certificate (`ca` false): its private key, sealed with the master key.
    pub sealed_key: Option<Vec<u8>>,
}

/// Which CA a hostname association names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CaRef {
    /// The account's managed CA (every CA of it that is still trusted).
    Managed,
    /// A bring-your-own CA, by `mtls_certificates` id.
    Mtls(String),
}

impl CaRef {
    pub(crate) fn as_db(&self) -> &str {
        match self {
            CaRef::Managed => "managed",
            CaRef::Mtls(id) => id,
        }
    }

    pub(crate) fn from_db(s: String) -> Self {
        if s == "managed" { CaRef::Managed } else { CaRef::Mtls(s) }
    }
}

/// One hostname guarded by one CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostnameAssociation {
    pub zone_id: String,
    pub hostname: String,
    pub ca: CaRef,
}

/// The status of an issued client certificate, with Cloudflare's names (`portcullis-pki` owns the status machine).
pub use portcullis_pki::CertificateStatus as ClientCertificateStatus;

/// A client certificate issued by a managed CA, with Cloudflare's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub id: String,
    pub zone_id: String,
    pub ca_id: String,
    pub certificate: String,
    pub csr: String,
    pub common_name: String,
    pub country: String,
    pub state: String,
    pub location: String,
    pub organization: String,
    pub organizational_unit: String,
    /// Lower hex.
    pub ski: String,
    /// Lower hex.
    pub serial_number: String,
    /// Lower hex.
    pub fingerprint_sha256: String,
    pub signature: String,
    pub issued_on: i64,
    pub expires_on: i64,
    pub validity_days: i64,
    pub status: ClientCertificateStatus,
    pub revoked_on: Option<i64>,
}

/// A server certificate (and sealed key) the edge presents for the hostnames it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomCertificate {
    pub id: String,
    pub zone_id: String,
    /// Leaf first, then intermediates, PEM.
    pub certificate: String,
    pub sealed_key: Vec<u8>,
    /// The DNS names (SANs) the certificate covers, wildcards included.
    pub hosts: Vec<String>,
    pub issuer: String,
    pub signature: String,
    pub expires_on: i64,
    pub uploaded_on: i64,
    pub modified_on: i64,
}

/// A new server certificate to store.
#[derive(Debug, Clone)]
pub struct NewCustomCertificate {
    pub certificate: String,
    pub sealed_key: Vec<u8>,
    pub hosts: Vec<String>,
    pub issuer: String,
    pub signature: String,
    pub expires_on: i64,
}

/// A zone's entry-point ruleset for one phase, with its rules in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Ruleset {
    pub id: String,
    pub zone_id: String,
    pub phase: String,
    pub name: String,
    pub description: String,
    pub version: i64,
    pub last_updated: i64,
    pub rules: Vec<Rule>,
}

/// One stored rule. The expression was compiled by the admin layer before it was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub expression: String,
    pub action: String,
    pub action_parameters: Option<serde_json::Value>,
    /// Rate-limiting parameters (`http_ratelimit` rules), JSON in Cloudflare's shape.
    pub ratelimit: Option<serde_json::Value>,
    /// The lists the expression references (`$name`), as the rules engine found them.
    pub lists: Vec<String>,
    pub enabled: bool,
    pub version: i64,
    pub last_updated: i64,
}

/// A rule to store. Without an `id`, the store assigns one.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRule {
    pub id: Option<String>,
    pub description: String,
    pub expression: String,
    pub action: String,
    pub action_parameters: Option<serde_json::Value>,
    /// Rate-limiting parameters (`http_ratelimit` rules), JSON in Cloudflare's shape.
    pub ratelimit: Option<serde_json::Value>,
    /// The lists the expression references (`$name`), as the rules engine found them; the store refuses the rule
    /// when one does not exist, and refuses to delete a list a rule references.
    pub lists: Vec<String>,
    pub enabled: bool,
}

/// One security event: a request the rules blocked or logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityEvent {
    /// Assigned by the store; ignored on insert.
    pub id: i64,
    pub at: i64,
    pub zone_id: Option<String>,
    pub host: String,
    pub method: String,
    pub path: String,
    pub client_ip: String,
    pub action: String,
    pub rule_id: Option<String>,
    pub status_code: i64,
    pub mtls_status: String,
    pub cert_fingerprint_sha256: String,
    pub cert_serial: String,
    /// RFC 2253; `""` when no certificate was presented.
    pub cert_subject_dn: String,
    /// Why the certificate failed verification; `""` when it verified or none was presented.
    pub cert_verify_error: String,
}

/// Which security events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub zone_id: Option<String>,
    pub host: Option<String>,
    pub action: Option<String>,
    pub mtls_status: Option<String>,
    /// Only events with an id greater than this (for polling).
    pub after_id: Option<i64>,
    /// At most this many, newest first (capped at 1,000).
    pub limit: u32,
}

/// Everything the edge needs, read in one consistent transaction: the binary compiles it into a snapshot.
#[derive(Debug, Clone)]
pub struct EdgeState {
    pub generation: u64,
    pub account: Account,
    pub zones: Vec<Zone>,
    pub hostnames: Vec<Hostname>,
    pub associations: Vec<HostnameAssociation>,
    /// Managed CAs that are active or still trusted.
    pub managed_cas: Vec<ManagedCa>,
    pub mtls_certificates: Vec<MtlsCertificate>,
    /// `(uploaded CA id, serial, issuer_der)` of the certificates operators revoked under uploaded CAs (see
    /// [`MtlsRevocation`]).
    pub mtls_revocations: Vec<(String, String, String)>,
    /// Serial numbers (lower hex) of managed-CA certificates that must be refused (any status but `active`, and
    /// those of deleted zones), by CA id.
    pub revoked_serials: Vec<(String, String)>,
    pub custom_certificates: Vec<CustomCertificate>,
    /// The TLS-ALPN-01 answers of ACME orders being validated.
    pub acme_challenges: Vec<crate::AcmeChallenge>,
    /// Pending HTTP-01 answers (public listener).
    pub acme_http_answers: Vec<crate::AcmeHttpAnswer>,
    pub rulesets: Vec<Ruleset>,
    /// Every named list with its items' values.
    pub lists: Vec<EdgeList>,
    /// Per zone id with any: how many issued client certificates are active and unexpired, and when the first of
    /// them expires (Unix seconds), for the expiry gauges.
    pub client_certificate_expiry: Vec<(String, u64, i64)>,
}

/// A named list as the edge needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeList {
    pub name: String,
    pub kind: String,
    pub values: Vec<String>,
}

/// A named list (Cloudflare's custom list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct List {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub num_items: i64,
    /// How many rules reference the list.
    pub num_referencing_filters: i64,
    pub created_on: i64,
    pub modified_on: i64,
}

/// One item of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListItem {
    pub id: String,
    /// The canonical text of the item (for `ip` lists, an address or CIDR range).
    pub value: String,
    pub comment: String,
    pub created_on: i64,
    pub modified_on: i64,
}

/// An item to add to a list; `value` must already be canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewListItem {
    pub value: String,
    pub comment: String,
}

/// A finished change to a list's items (Cloudflare's bulk operation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListOperation {
    pub id: String,
    pub list_id: String,
    /// `completed` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub completed_on: i64,
}
