-- Everything the edge serves: hostnames, CAs, client certificates, server certificates, rules and security events.

CREATE TABLE hostnames (
    id TEXT PRIMARY KEY,
    zone_id TEXT NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    hostname TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    -- Per-host settings as JSON (origin TLS, forwarding style, mTLS mode, limits); the admin layer validates them.
    settings TEXT NOT NULL,
    created_on BIGINT NOT NULL,
    modified_on BIGINT NOT NULL
);
CREATE INDEX hostnames_zone ON hostnames (zone_id);

CREATE TABLE managed_cas (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    certificate TEXT NOT NULL,
    -- The CA private key, sealed with the master key; never stored in the clear.
    sealed_key BLOB NOT NULL,
    key_type TEXT NOT NULL,
    -- active: issues and is trusted; trusted: kept trusted after a rotation; retired: neither.
    status TEXT NOT NULL CHECK (status IN ('active', 'trusted', 'retired')),
    crl_number BIGINT NOT NULL,
    created_on BIGINT NOT NULL,
    retired_on BIGINT
);

CREATE TABLE mtls_certificates (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    ca BIGINT NOT NULL,
    certificates TEXT NOT NULL,
    issuer TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    signature TEXT NOT NULL,
    expires_on BIGINT NOT NULL,
    uploaded_on BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    crl BLOB,
    crl_updated_on BIGINT
);

-- Which CA guards which hostname. ca_ref is 'managed' for the account's managed CA, else an mtls_certificates id.
CREATE TABLE hostname_associations (
    zone_id TEXT NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    hostname TEXT NOT NULL,
    ca_ref TEXT NOT NULL,
    created_on BIGINT NOT NULL,
    PRIMARY KEY (zone_id, hostname, ca_ref)
);
CREATE INDEX hostname_associations_ca ON hostname_associations (ca_ref);

CREATE TABLE client_certificates (
    id TEXT PRIMARY KEY,
    zone_id TEXT NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    ca_id TEXT NOT NULL REFERENCES managed_cas (id),
    certificate TEXT NOT NULL,
    csr TEXT NOT NULL,
    common_name TEXT NOT NULL,
    country TEXT NOT NULL,
    state TEXT NOT NULL,
    location TEXT NOT NULL,
    organization TEXT NOT NULL,
    organizational_unit TEXT NOT NULL,
    ski TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    signature TEXT NOT NULL,
    issued_on BIGINT NOT NULL,
    expires_on BIGINT NOT NULL,
    validity_days BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'pending_revocation', 'revoked', 'pending_reactivation')),
    revoked_on BIGINT
);
CREATE INDEX client_certificates_zone_status ON client_certificates (zone_id, status);
CREATE INDEX client_certificates_ca_status ON client_certificates (ca_id, status);
CREATE UNIQUE INDEX client_certificates_serial ON client_certificates (ca_id, serial_number);

CREATE TABLE custom_certificates (
    id TEXT PRIMARY KEY,
    zone_id TEXT NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    certificate TEXT NOT NULL,
    sealed_key BLOB NOT NULL,
    -- JSON array of the DNS names the certificate covers (its SANs).
    hosts TEXT NOT NULL,
    issuer TEXT NOT NULL,
    signature TEXT NOT NULL,
    expires_on BIGINT NOT NULL,
    uploaded_on BIGINT NOT NULL,
    modified_on BIGINT NOT NULL
);
CREATE INDEX custom_certificates_zone ON custom_certificates (zone_id);

CREATE TABLE rulesets (
    id TEXT PRIMARY KEY,
    zone_id TEXT NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    phase TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    version BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    UNIQUE (zone_id, phase)
);

CREATE TABLE rules (
    id TEXT NOT NULL,
    ruleset_id TEXT NOT NULL REFERENCES rulesets (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    description TEXT NOT NULL,
    expression TEXT NOT NULL,
    action TEXT NOT NULL,
    -- JSON object, or NULL.
    action_parameters TEXT,
    enabled BIGINT NOT NULL,
    version BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    PRIMARY KEY (ruleset_id, id)
);
CREATE INDEX rules_ruleset ON rules (ruleset_id, position);

CREATE TABLE security_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    zone_id TEXT,
    host TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    action TEXT NOT NULL,
    rule_id TEXT,
    status_code BIGINT NOT NULL,
    mtls_status TEXT NOT NULL,
    cert_fingerprint_sha256 TEXT NOT NULL,
    cert_serial TEXT NOT NULL
);
CREATE INDEX security_events_at ON security_events (at);
CREATE INDEX security_events_zone_at ON security_events (zone_id, at);
