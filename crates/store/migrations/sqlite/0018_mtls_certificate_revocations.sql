-- Certificates an uploaded CA issued that the edge refuses as revoked, on top of that CA's CRLs: an operator's
-- revocation that takes effect at once. A certificate is named by its serial number (lower hex, no leading zeros)
-- and issuer (`issuer_der`: hex of the issuer name's DER without its outer header, as webpki reads it; empty for
-- "any certificate of the bundle"), which are inside its signed part: a fingerprint is not, as an ECDSA signature
-- can be re-encoded by whoever holds the certificate. `issuer` and `fingerprint_sha256` are for people.
CREATE TABLE mtls_certificate_revocations (
    id TEXT PRIMARY KEY,
    mtls_certificate_id TEXT NOT NULL REFERENCES mtls_certificates (id) ON DELETE CASCADE,
    serial_number TEXT NOT NULL,
    issuer_der TEXT NOT NULL DEFAULT '',
    issuer TEXT NOT NULL DEFAULT '',
    fingerprint_sha256 TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    created_on BIGINT NOT NULL,
    UNIQUE (mtls_certificate_id, serial_number, issuer_der)
);
