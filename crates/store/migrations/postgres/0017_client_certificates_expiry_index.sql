-- The quota counts a zone's active certificates that have not expired: this index answers that count by itself,
-- without reading up to the quota's worth of rows.
DROP INDEX client_certificates_zone_status;
CREATE INDEX client_certificates_zone_status_expiry ON client_certificates (zone_id, status, expires_on);
