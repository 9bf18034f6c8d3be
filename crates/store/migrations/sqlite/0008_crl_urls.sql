-- CRLs fetched from URLs: an uploaded CA bundle may name the URLs its CRLs are published at (space-separated); the
-- edge fetches them periodically and stores what it fetched in `crl` when it changed. `crl_fetched_on` is the last
-- successful fetch, `crl_fetch_error` the last failure (NULL after a success).
ALTER TABLE mtls_certificates ADD COLUMN crl_urls TEXT NOT NULL DEFAULT '';
ALTER TABLE mtls_certificates ADD COLUMN crl_fetched_on BIGINT;
ALTER TABLE mtls_certificates ADD COLUMN crl_fetch_error TEXT;
