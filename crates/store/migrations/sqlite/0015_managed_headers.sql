-- Cloudflare's Managed Transforms of a zone that are on (JSON array of their ids, e.g. "add_client_certificate_headers").
ALTER TABLE zones ADD COLUMN managed_request_headers TEXT NOT NULL DEFAULT '[]';
