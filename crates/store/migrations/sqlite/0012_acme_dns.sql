-- DNS-01 for certificate packs (validation_method 'txt'): the zone's primary name server, the DNS zone to update
-- there, and the TSIG key (RFC 8945) allowed to update it, its secret sealed with the master key.
-- `propagation_seconds` is how long to wait after an update before the ACME server is told to look.
CREATE TABLE acme_dns (
    zone_id TEXT PRIMARY KEY REFERENCES zones (id) ON DELETE CASCADE,
    server TEXT NOT NULL,
    dns_zone TEXT NOT NULL,
    key_name TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    sealed_secret BLOB NOT NULL,
    propagation_seconds BIGINT NOT NULL,
    modified_on BIGINT NOT NULL
);
