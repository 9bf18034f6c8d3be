-- Which certificate an EST re-enrollment replaced with which: a certificate is renewed at most once, and renewing
-- the new one revokes the one before it, so a line of renewals holds at most two active certificates.
CREATE TABLE client_certificate_renewals (
    renewed_id TEXT PRIMARY KEY REFERENCES client_certificates (id) ON DELETE CASCADE,
    new_id TEXT NOT NULL,
    renewed_on BIGINT NOT NULL
);
CREATE INDEX client_certificate_renewals_new ON client_certificate_renewals (new_id);
-- A renewal finds the record of the certificate the client authenticated with by its fingerprint.
CREATE INDEX client_certificates_fingerprint ON client_certificates (fingerprint_sha256);
