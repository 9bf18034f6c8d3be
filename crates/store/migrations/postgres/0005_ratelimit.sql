-- Rate-limiting rules (the `http_ratelimit` phase): a rule's `ratelimit` parameters, JSON in Cloudflare's shape
-- (characteristics, period, requests_per_period, mitigation_timeout). NULL for custom rules.
ALTER TABLE rules ADD COLUMN ratelimit TEXT;
