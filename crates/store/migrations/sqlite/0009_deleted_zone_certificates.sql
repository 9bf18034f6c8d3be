-- Client certificates of deleted zones. Their rows go with the zone, but the managed CA that issued them belongs to
-- the account and stays trusted by other zones' hostnames, so until each certificate expires its serial stays
-- refused by the edge and listed in the CA's CRL: deleting a zone revokes its certificates rather than making them
-- unrevocable.
CREATE TABLE deleted_zone_certificates (
    ca_id TEXT NOT NULL REFERENCES managed_cas (id),
    serial_number TEXT NOT NULL,
    revoked_on BIGINT NOT NULL,
    expires_on BIGINT NOT NULL,
    PRIMARY KEY (ca_id, serial_number)
);
