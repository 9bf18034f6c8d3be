-- OCSP checks of an uploaded CA's client certificates: `ocsp_check` is 'off', 'soft' (accept when no answer can be
-- had) or 'hard' (refuse then); `ocsp_responder` is asked instead of the URL in each certificate (NULL: that URL).
ALTER TABLE mtls_certificates ADD COLUMN ocsp_check TEXT NOT NULL DEFAULT 'off';
ALTER TABLE mtls_certificates ADD COLUMN ocsp_responder TEXT;
