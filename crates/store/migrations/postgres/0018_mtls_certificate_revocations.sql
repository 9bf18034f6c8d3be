-- Certificates an uploaded CA issued that the edge refuses as revoked, on top of that CA's CRLs: an operator's
-- revocation that takes effect at once. A certificate is named by the SHA-256 fingerprint of its DER (lower hex),
-- which, unlike a serial number, is unambiguous across the CAs of a bundle.
CREATE TABLE mtls_certificate_revocations (
    id TEXT PRIMARY KEY,
    mtls_certificate_id TEXT NOT NULL REFERENCES mtls_certificates (id) ON DELETE CASCADE,
    fingerprint_sha256 TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    created_on BIGINT NOT NULL,
    UNIQUE (mtls_certificate_id, fingerprint_sha256)
);
