-- URL normalization per zone, as Cloudflare's `/zones/{zone_id}/url_normalization`: where the normalized path goes
-- (`none`, `incoming`: the rules only, `both`: the rules and the origin) and which normalization (`cloudflare`,
-- `rfc3986`). Existing zones get Cloudflare's defaults.
ALTER TABLE zones ADD COLUMN url_normalization_scope TEXT NOT NULL DEFAULT 'incoming'
    CHECK (url_normalization_scope IN ('none', 'incoming', 'both'));
ALTER TABLE zones ADD COLUMN url_normalization_type TEXT NOT NULL DEFAULT 'cloudflare'
    CHECK (url_normalization_type IN ('cloudflare', 'rfc3986'));
