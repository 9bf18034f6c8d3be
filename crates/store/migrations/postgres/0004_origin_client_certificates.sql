-- Origin client certificates: an `mtls_certificates` entry with `ca` false holds a leaf certificate and its private
-- key, sealed with the master key, which the edge presents to `https://` origins that require client certificates
-- (as Cloudflare's store does for the Workers mTLS binding). CA entries keep it NULL.
ALTER TABLE mtls_certificates ADD COLUMN sealed_key BYTEA;
