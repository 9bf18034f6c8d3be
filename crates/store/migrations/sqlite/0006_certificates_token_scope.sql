-- A third token scope, `certificates`: read everything, and issue, revoke and reactivate client certificates, nothing
-- else (for a provisioning service). SQLite cannot change a CHECK constraint in place: the table is rebuilt.
CREATE TABLE api_tokens_new (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'write', 'certificates')),
    created_on BIGINT NOT NULL,
    revoked_on BIGINT
);
INSERT INTO api_tokens_new (id, name, secret_sha256, scope, created_on, revoked_on)
    SELECT id, name, secret_sha256, scope, created_on, revoked_on FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;
