-- Foundation: the account, zones, API tokens, the audit log and the change-feed generation.
-- Times are unix seconds (BIGINT) so that SQLite and PostgreSQL share one representation.

CREATE TABLE generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO generation (id, value) VALUES (1, 0);

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_on BIGINT NOT NULL,
    -- Always 1: a unique column that makes "exactly one account" a constraint.
    singleton INTEGER NOT NULL UNIQUE CHECK (singleton = 1)
);

CREATE TABLE zones (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    created_on BIGINT NOT NULL,
    modified_on BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    created_on BIGINT NOT NULL,
    revoked_on BIGINT
);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    token_id TEXT,
    action TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
