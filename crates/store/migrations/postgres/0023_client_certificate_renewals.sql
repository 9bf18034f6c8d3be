-- Which certificate an EST re-enrollment replaced with which: a certificate is renewed at most once, so a client
-- cannot fan one certificate out into many.
CREATE TABLE client_certificate_renewals (
    renewed_id TEXT PRIMARY KEY REFERENCES client_certificates (id) ON DELETE CASCADE,
    new_id TEXT NOT NULL,
    renewed_on BIGINT NOT NULL
);
-- A renewal finds the record of the certificate the client authenticated with by its fingerprint.
CREATE INDEX client_certificates_fingerprint ON client_certificates (fingerprint_sha256);
