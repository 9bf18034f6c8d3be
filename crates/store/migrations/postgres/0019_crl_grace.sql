-- An uploaded CA's choice to fail closed on stale revocation data: NULL (the default) keeps a CRL in use past its
-- nextUpdate; N has the edge trust none of the CA's certificates N seconds after it, or while it has no CRL.
ALTER TABLE mtls_certificates ADD COLUMN crl_grace_seconds BIGINT;
