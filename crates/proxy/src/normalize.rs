//! URL normalization, as Cloudflare's zone setting of that name defines it: so that a rule on
//! `/api` also sees `/%61pi`, `/./api`, `//api` and `/x/../api`, which most origins serve as
//! `/api`.
//!
//! - `rfc3986`: percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other
//!   percent-encodings are upper-cased, bytes a path may not carry literally (controls, space,
//!   `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`, `%` not starting an escape, non-ASCII) are
//!   percent-encoded, and dot segments are removed (RFC 3986, 5.2.4);
//! - `cloudflare` (the default): first `\` becomes `/` and runs of `/` become one, then as
//!   `rfc3986`.
//!
//! Only the path is normalized; the query is left as sent. The scope says where the normalized
//! path goes: to the rules only (`incoming`, the default: the origin gets the path as sent), to
//! the rules and the origin (`both`), or nowhere (`none`). The `raw.http.request.*` fields always
//! hold what the client sent. Does not decode `%2F` or any other reserved character: those
//! change what a path means.

use std::borrow::Cow;

/// Where the normalized path is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormalizationScope {
    /// Nowhere: rules and the origin see the path as sent.
    None,
    /// Rules see the normalized path; the origin gets the path as sent.
    #[default]
    Incoming,
    /// Rules and the origin both get the normalized path.
    Both,
}

/// Which normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormalizationType {
    /// RFC 3986 plus backslashes to slashes and merged slashes.
    #[default]
    Cloudflare,
    /// RFC 3986 only.
    Rfc3986,
}

/// A zone's URL normalization setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlNormalization {
    pub scope: NormalizationScope,
    pub kind: NormalizationType,
}

impl UrlNormalization {
    /// The path the rules see.
    pub(crate) fn for_rules<'a>(&self, path: &'a str) -> Cow<'a, str> {
        match self.scope {
            NormalizationScope::None => Cow::Borrowed(path),
            NormalizationScope::Incoming | NormalizationScope::Both => normalize_path(path, self.kind),
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes a path may carry as they are (RFC 3986 `pchar` and `/`), `%` aside.
fn is_path_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'/'
        )
}

pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `path` is already in normal form, checked without allocating: the common case.
fn is_normal(path: &[u8], kind: NormalizationType) -> bool {
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        if b == b'%' {
            // Normal only as an escape of a reserved or other byte, in upper case.
            match (path.get(i + 1), path.get(i + 2)) {
                (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    if h.is_ascii_lowercase() || l.is_ascii_lowercase() {
                        return false;
                    }
                    let (Some(h), Some(l)) = (hex_value(h), hex_value(l)) else {
                        return false;
                    };
                    if is_unreserved(h << 4 | l) {
                        return false;
                    }
                }
                _ => return false,
            }
        } else if !is_path_byte(b) {
            return false;
        }
        if kind == NormalizationType::Cloudflare && b == b'/' && prev == b'/' {
            return false;
        }
        prev = b;
    }
    // A dot segment: "." or ".." between slashes or at either end.
    !path.split(|&b| b == b'/').any(|seg| seg == b"." || seg == b"..")
}

/// The normalized form of a request path (an origin-form path, or `*`); borrowed when it
/// already is in normal form.
pub fn normalize_path(path: &str, kind: NormalizationType) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    let absolute =
        bytes.first() == Some(&b'/') || (kind == NormalizationType::Cloudflare && bytes.first() == Some(&b'\\'));
    if !absolute || is_normal(bytes, kind) {
        return Cow::Borrowed(path);
    }
    // Cloudflare's extra steps come first, on the path as sent.
    let mut input: Vec<u8> = bytes.to_vec();
    if kind == NormalizationType::Cloudflare {
        for b in &mut input {
            if *b == b'\\' {
                *b = b'/';
            }
        }
        input.dedup_by(|a, b| *a == b'/' && *b == b'/');
    }
    // Escapes: unreserved bytes decoded, the rest upper-cased; bytes a path cannot carry encoded.
    let mut escaped = Vec::with_capacity(input.len() + 8);
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex_value),
                input.get(i + 2).copied().and_then(hex_value),
            )
        {
            let decoded = h << 4 | l;
            if is_unreserved(decoded) {
                escaped.push(decoded);
            } else {
                escaped.extend_from_slice(&[b'%', HEX[usize::from(h)], HEX[usize::from(l)]]);
            }
            i += 3;
            continue;
        }
        if is_path_byte(b) {
            escaped.push(b);
        } else {
            escaped.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        i += 1;
    }
    let out = remove_dot_segments(&escaped);
    // Every byte is ASCII by now: unreserved, reserved or part of an upper-case escape.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// RFC 3986, 5.2.4, on an absolute path: segments kept on a stack, `.` dropped, `..` pops.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = path[1..].split(|&b| b == b'/').collect();
    let last = parts.len() - 1;
    // A trailing "." or ".." leaves the path ending in "/".
    let mut trailing_slash = false;
    for (i, seg) in parts.into_iter().enumerate() {
        match seg {
            b"." => trailing_slash = i == last,
            b".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            _ => {
                segments.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for seg in &segments {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cf(p: &str) -> String {
        normalize_path(p, NormalizationType::Cloudflare).into_owned()
    }

    fn rfc(p: &str) -> String {
        normalize_path(p, NormalizationType::Rfc3986).into_owned()
    }

    #[test]
    fn cloudflare_documentation_examples() {
        // Cloudflare's table of URL normalization examples.
        assert_eq!(cf("/hello"), "/hello");
        assert_eq!(cf("/%68ello"), "/hello");
        assert_eq!(rfc("/%68ello//pa\\th"), "/hello//pa%5Cth");
        assert_eq!(cf("/%68ello//pa\\th"), "/hello/pa/th");
    }

    #[test]
    fn the_bypasses_of_a_path_rule_all_become_the_path() {
        for p in [
            "/api",
            "/%61pi",
            "/%61%70%69",
            "/./api",
            "/x/../api",
            "/x/%2e%2E/api",
            "//api",
            "\\api",
            "/.//api",
            "/x/y/../../api",
            "/../api",
            "/api/.",
        ] {
            let n = cf(p);
            assert!(n == "/api" || n == "/api/", "{p:?} gave {n:?}");
        }
        assert_eq!(rfc("//api"), "//api");
    }

    #[test]
    fn reserved_escapes_stay_and_are_upper_cased() {
        assert_eq!(cf("/a%2fb"), "/a%2Fb");
        assert_eq!(cf("/a%2Fb"), "/a%2Fb");
        assert_eq!(cf("/q%3f"), "/q%3F");
        assert_eq!(cf("/%25"), "/%25");
        // A literal percent sign that starts no escape is escaped itself.
        assert_eq!(cf("/100%"), "/100%25");
        assert_eq!(cf("/%zz"), "/%25zz");
        assert_eq!(cf("/%4"), "/%254");
    }

    #[test]
    fn bytes_a_path_cannot_carry_are_encoded() {
        assert_eq!(cf("/a b"), "/a%20b");
        assert_eq!(cf("/\"<>^`{|}"), "/%22%3C%3E%5E%60%7B%7C%7D");
        assert_eq!(cf("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(rfc("/a\\b"), "/a%5Cb");
    }

    #[test]
    fn dot_segments() {
        assert_eq!(cf("/a/b/c/./../../g"), "/a/g");
        assert_eq!(cf("/mid/content=5/../6"), "/mid/6");
        assert_eq!(cf("/a/.."), "/");
        assert_eq!(cf("/a/b/.."), "/a/");
        assert_eq!(cf("/.."), "/");
        assert_eq!(cf("/..."), "/...");
        assert_eq!(cf("/a/.b/..c"), "/a/.b/..c");
        // An encoded slash does not separate segments.
        assert_eq!(cf("/%2e%2e%2f"), "/..%2F");
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/api/v1/users", "/a%2Fb", "/x;y=1", "/~user/a-b_c.d", "*"] {
            assert!(
                matches!(normalize_path(p, NormalizationType::Cloudflare), Cow::Borrowed(_)),
                "{p}"
            );
        }
        for p in ["/a%2fb", "/%41", "//", "/a/./b", "/a/..", "/a b", "/a\\b"] {
            assert!(
                matches!(normalize_path(p, NormalizationType::Cloudflare), Cow::Owned(_)),
                "{p}"
            );
        }
        // Normalizing twice changes nothing.
        for p in ["/%68ello//pa\\th", "/a/%2e%2e/b", "/100%", "/caf\u{e9}/./x"] {
            let once = cf(p);
            assert_eq!(cf(&once), once, "{p}");
            assert!(matches!(
                normalize_path(&once, NormalizationType::Cloudflare),
                Cow::Borrowed(_)
            ));
        }
    }

    #[test]
    fn scope_none_leaves_the_path() {
        let n = UrlNormalization {
            scope: NormalizationScope::None,
            kind: NormalizationType::Cloudflare,
        };
        assert_eq!(n.for_rules("/%61pi"), "/%61pi");
        assert_eq!(UrlNormalization::default().for_rules("/%61pi"), "/api");
    }
}
