//! Times on the wire: RFC 3339 in UTC with whole seconds (`2033-02-20T23:18:00Z`), as Cloudflare writes them.

use time::OffsetDateTime;
use time::macros::format_description;

/// `unix` seconds as `YYYY-MM-DDTHH:MM:SSZ`; out-of-range values are clamped to the epoch.
pub fn rfc3339(unix: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_cloudflare() {
        assert_eq!(super::rfc3339(1_677_194_280), "2023-02-23T23:18:00Z");
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
