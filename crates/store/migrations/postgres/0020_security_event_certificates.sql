-- Whose certificate a security event was about, and why it failed verification (OpenSSL's wording, '' when it
-- verified or none was presented): under `request` mode the event is where an operator learns why.
ALTER TABLE security_events ADD COLUMN cert_subject_dn TEXT NOT NULL DEFAULT '';
ALTER TABLE security_events ADD COLUMN cert_verify_error TEXT NOT NULL DEFAULT '';
