-- Managed CAs waiting for the operator's own CA to sign them: the key (sealed) and the CSR. Installing the signed
-- certificate moves a request into managed_cas under the same id.
CREATE TABLE managed_ca_requests (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    csr TEXT NOT NULL,
    sealed_key BYTEA NOT NULL,
    key_type TEXT NOT NULL,
    created_on BIGINT NOT NULL
);
-- The certificates above a managed CA that another CA signed (PEM, its issuer first, the root last); '' for a
-- self-signed one.
ALTER TABLE managed_cas ADD COLUMN chain TEXT NOT NULL DEFAULT '';
