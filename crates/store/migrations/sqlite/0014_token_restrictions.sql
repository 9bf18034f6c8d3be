-- Restrictions of API tokens, each NULL when there is none: when a token starts and stops working (Cloudflare's
-- `not_before` and `expires_on`), the client addresses it works from (Cloudflare's `condition.request_ip`, JSON
-- `{"in": [...], "not_in": [...]}`), and the zones it may reach (JSON array of zone ids).
ALTER TABLE api_tokens ADD COLUMN not_before BIGINT;
ALTER TABLE api_tokens ADD COLUMN expires_on BIGINT;
ALTER TABLE api_tokens ADD COLUMN request_ip TEXT;
ALTER TABLE api_tokens ADD COLUMN zones TEXT;
