-- HTTP-01 answers (certificate packs with validation method 'http'): what the public listener serves at
-- /.well-known/acme-challenge/<token> for `hostname` while an order is validated. The key authorization is public by
-- design (the ACME server fetches it over plain HTTP), so it is not sealed.
CREATE TABLE acme_http_answers (
    token TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pack_id TEXT NOT NULL REFERENCES certificate_packs (id) ON DELETE CASCADE,
    key_authorization TEXT NOT NULL,
    expires_on BIGINT NOT NULL
);
CREATE INDEX acme_http_answers_pack ON acme_http_answers (pack_id);
