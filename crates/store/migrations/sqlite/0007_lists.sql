-- Named lists (Cloudflare's custom lists, account-level), referenced by rule expressions as `$name`. Only the `ip`
-- kind exists. Item values are stored in their canonical text form, checked by the caller.
CREATE TABLE lists (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_on BIGINT NOT NULL,
    modified_on BIGINT NOT NULL
);

CREATE TABLE list_items (
    id TEXT PRIMARY KEY,
    list_id TEXT NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    value TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_on BIGINT NOT NULL,
    modified_on BIGINT NOT NULL,
    UNIQUE (list_id, value)
);

-- Cloudflare runs item changes as bulk operations that clients poll; here they finish inside the write, and the
-- record says how it ended.
CREATE TABLE list_operations (
    id TEXT PRIMARY KEY,
    list_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    completed_on BIGINT NOT NULL
);

-- The lists a rule's expression references (space-separated names), and the same as rows whose foreign keys make the
-- database refuse to delete a referenced list or to store a rule naming a missing one, even between two writers.
ALTER TABLE rules ADD COLUMN lists TEXT NOT NULL DEFAULT '';
CREATE TABLE rule_list_refs (
    ruleset_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    list_id TEXT NOT NULL REFERENCES lists (id),
    PRIMARY KEY (ruleset_id, rule_id, list_id),
    FOREIGN KEY (ruleset_id, rule_id) REFERENCES rules (ruleset_id, id) ON DELETE CASCADE
);
CREATE INDEX rule_list_refs_list ON rule_list_refs (list_id);
