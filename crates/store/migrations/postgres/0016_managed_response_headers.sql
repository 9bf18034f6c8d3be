-- Cloudflare's managed response-header transforms of a zone that are on (JSON array of their ids, e.g.
-- "remove_x-powered-by_header").
ALTER TABLE zones ADD COLUMN managed_response_headers TEXT NOT NULL DEFAULT '[]';
