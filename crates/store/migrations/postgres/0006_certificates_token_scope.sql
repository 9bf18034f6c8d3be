-- A third token scope, `certificates`: read everything, and issue, revoke and reactivate client certificates, nothing
-- else (for a provisioning service).
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_scope_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scope_check CHECK (scope IN ('read', 'write', 'certificates'));
