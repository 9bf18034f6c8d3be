-- Server certificates obtained and renewed over ACME (Cloudflare's certificate packs). `certificate_id` is the
-- custom certificate the pack keeps current (NULL until the first issuance). `validation_errors` is a JSON array of
-- messages from the last failed attempt; `next_attempt_on` says when the next one may start.
CREATE TABLE certificate_packs (
    id TEXT PRIMARY KEY,
    zone_id TEXT NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    hosts TEXT NOT NULL,
    validation_method TEXT NOT NULL,
    status TEXT NOT NULL,
    certificate_id TEXT,
    issued_on BIGINT,
    expires_on BIGINT,
    validation_errors TEXT NOT NULL DEFAULT '[]',
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_on BIGINT NOT NULL DEFAULT 0,
    created_on BIGINT NOT NULL,
    modified_on BIGINT NOT NULL
);
CREATE INDEX certificate_packs_zone ON certificate_packs (zone_id);

-- TLS-ALPN-01 answers (RFC 8737) the edge serves while an order is being validated: a self-signed certificate per
-- name, its key sealed with the master key.
CREATE TABLE acme_challenges (
    hostname TEXT PRIMARY KEY,
    pack_id TEXT NOT NULL REFERENCES certificate_packs (id) ON DELETE CASCADE,
    certificate TEXT NOT NULL,
    sealed_key BYTEA NOT NULL,
    expires_on BIGINT NOT NULL
);

-- The ACME account of each directory, its credentials (key included) sealed with the master key.
CREATE TABLE acme_accounts (
    directory TEXT PRIMARY KEY,
    sealed_credentials BYTEA NOT NULL,
    created_on BIGINT NOT NULL
);

-- Leases, so that one node of a fleet does a job at a time (`acme`: ordering and renewing certificates).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_on BIGINT NOT NULL
);
