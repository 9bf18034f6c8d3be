-- A zone's limits on the client certificates issued in it (JSON: max_validity_days, allowed_names); '' for none.
ALTER TABLE zones ADD COLUMN client_certificate_policy TEXT NOT NULL DEFAULT '';
