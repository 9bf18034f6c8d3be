//! Function implementations and the wildcard matcher shared by the `wildcard` operators and
//! `wildcard_replace()`. Argument types were checked at compile time; a value of an unexpected
//! shape here can only be a missing value, which yields a missing result.

use std::borrow::Cow;
use std::net::IpAddr;

use base64::Engine as _;
use memchr::memmem;

use crate::compile::{Expr, Func, JsonKey};
use crate::eval::Val;
use crate::schema::Context;
use crate::types::Value;

/// Most rounds of recursive `url_decode(…, "r")`; each round must shrink the input, so this
/// only bounds pathological nesting like `%252525…`.
const MAX_URL_DECODE_ROUNDS: usize = 16;

pub(crate) fn call<'a>(f: &'a Func, args: &'a [Expr], each: bool, ctx: &'a Context) -> Val<'a> {
    let Some((first, rest)) = args.split_first() else {
        return Val::Missing;
    };
    let v = first.eval(ctx);
    if !each {
        return apply(f, v, rest, ctx);
    }
    let items = v.unpack();
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        if let Some(r) = apply(f, Val::of(item), rest, ctx).into_value() {
            out.push(r);
        }
    }
    Val::Array(Cow::Owned(out))
}

fn map_bytes<'a>(v: Cow<'a, [u8]>, keep: impl Fn(&[u8]) -> bool, f: impl FnOnce(&[u8]) -> Vec<u8>) -> Val<'a> {
    if keep(&v) {
        Val::Bytes(v)
    } else {
        Val::Bytes(Cow::Owned(f(&v)))
    }
}

fn apply<'a>(f: &'a Func, first: Val<'a>, rest: &'a [Expr], ctx: &'a Context) -> Val<'a> {
    let arg = |i: usize| rest.get(i).map_or(Val::Missing, |e| e.eval(ctx));
    match (f, first) {
        (_, Val::Missing) => match f {
            // The one place a missing value has a defined non-missing result.
            Func::Any | Func::All => Val::Bool(false),
            _ => Val::Missing,
        },
        (Func::Any, Val::Array(items)) => Val::Bool(items.contains(&Value::Bool(true))),
        (Func::All, Val::Array(items)) => Val::Bool(items.iter().all(|v| *v == Value::Bool(true))),
        (Func::Concat, Val::Bytes(b)) => {
            let mut out = b.into_owned();
            for i in 0..rest.len() {
                match arg(i) {
                    Val::Bytes(more) => out.extend_from_slice(&more),
                    _ => return Val::Missing,
                }
            }
            Val::Bytes(Cow::Owned(out))
        }
        (Func::Concat, Val::Array(a)) => {
            let mut out = a.into_owned();
            for i in 0..rest.len() {
                match arg(i) {
                    Val::Array(more) => out.extend_from_slice(&more),
                    _ => return Val::Missing,
                }
            }
            Val::Array(Cow::Owned(out))
        }
        (Func::StartsWith, Val::Bytes(b)) => match arg(0) {
            Val::Bytes(p) => Val::Bool(b.starts_with(&p)),
            _ => Val::Missing,
        },
        (Func::EndsWith, Val::Bytes(b)) => match arg(0) {
            Val::Bytes(p) => Val::Bool(b.ends_with(&p)),
            _ => Val::Missing,
        },
        (Func::Len, v) => {
            let n = match v {
                Val::Bytes(b) => b.len(),
                Val::Array(a) => a.len(),
                Val::Map(m) => m.len(),
                _ => return Val::Missing,
            };
            Val::Int(i64::try_from(n).unwrap_or(i64::MAX))
        }
        (Func::Lower, Val::Bytes(b)) => {
            map_bytes(b, |s| !s.iter().any(u8::is_ascii_uppercase), <[u8]>::to_ascii_lowercase)
        }
        (Func::Upper, Val::Bytes(b)) => {
            map_bytes(b, |s| !s.iter().any(u8::is_ascii_lowercase), <[u8]>::to_ascii_uppercase)
        }
        (Func::UrlDecode { recursive, unicode }, Val::Bytes(b)) => Val::Bytes(url_decode(b, *recursive, *unicode)),
        (Func::ToString, v) => {
            let s = match v {
                Val::Int(i) => i.to_string(),
                Val::Bool(b) => b.to_string(),
                Val::Ip(ip) => ip.to_string(),
                _ => return Val::Missing,
            };
            Val::Bytes(Cow::Owned(s.into_bytes()))
        }
        (Func::Substring, Val::Bytes(b)) => {
            let Val::Int(start) = arg(0) else {
                return Val::Missing;
            };
            let end = match arg(1) {
                Val::Int(e) => Some(e),
                Val::Missing if rest.len() < 2 => None,
                _ => return Val::Missing,
            };
            let (s, e) = substring_range(b.len(), start, end);
            Val::Bytes(match b {
                Cow::Borrowed(b) => Cow::Borrowed(&b[s..e]),
                Cow::Owned(b) => Cow::Owned(b[s..e].to_vec()),
            })
        }
        (Func::Split { sep, limit }, Val::Bytes(b)) => Val::Array(Cow::Owned(split(&b, sep, *limit))),
        (Func::Join, Val::Array(items)) => match arg(0) {
            Val::Bytes(sep) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(&sep);
                    }
                    if let Value::Bytes(s) = item {
                        out.extend_from_slice(s);
                    }
                }
                Val::Bytes(Cow::Owned(out))
            }
            _ => Val::Missing,
        },
        (Func::RemoveBytes, Val::Bytes(b)) => match arg(0) {
            Val::Bytes(set) => map_bytes(
                b,
                |s| !s.iter().any(|c| set.contains(c)),
                |s| s.iter().copied().filter(|c| !set.contains(c)).collect(),
            ),
            _ => Val::Missing,
        },
        (Func::LookupJsonString(keys), Val::Bytes(b)) => match json_lookup(&b, keys) {
            Some(serde_json::Value::String(s)) => Val::Bytes(Cow::Owned(s.into_bytes())),
            _ => Val::Missing,
        },
        (Func::LookupJsonInteger(keys), Val::Bytes(b)) => match json_lookup(&b, keys) {
            Some(serde_json::Value::Number(n)) => n.as_i64().map_or(Val::Missing, Val::Int),
            _ => Val::Missing,
        },
        (Func::Cidr { v4, v6 }, Val::Ip(ip)) => Val::Ip(cidr(ip, *v4, *v6)),
        (Func::DecodeBase64, Val::Bytes(b)) => {
            let engine = &base64::engine::general_purpose::STANDARD;
            let lenient = &base64::engine::general_purpose::STANDARD_NO_PAD;
            match engine.decode(&*b).or_else(|_| lenient.decode(&*b)) {
                Ok(v) => Val::Bytes(Cow::Owned(v)),
                Err(_) => Val::Missing,
            }
        }
        (Func::WildcardReplace { pattern, replacement }, Val::Bytes(b)) => {
            let mut caps = Vec::with_capacity(pattern.stars());
            if pattern.walk(&b, |s, e| caps.push((s, e))) {
                Val::Bytes(Cow::Owned(replacement.expand(&b, &caps)))
            } else {
                Val::Bytes(b)
            }
        }
        _ => Val::Missing,
    }
}

/// Byte range for `substring`: negative indexes count from the end; out-of-range indexes clamp.
pub(crate) fn substring_range(len: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let norm = |i: i64| -> usize {
        let i = if i < 0 {
            len_i.saturating_add(i).max(0)
        } else {
            i.min(len_i)
        };
        usize::try_from(i).unwrap_or(0)
    };
    let s = norm(start);
    let e = end.map_or(len, norm);
    if s >= e { (s, s) } else { (s, e) }
}

fn split(b: &[u8], sep: &[u8], limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in memmem::find_iter(b, sep) {
        if out.len() + 1 >= limit {
            break;
        }
        if i < start {
            continue;
        }
        out.push(Value::Bytes(b[start..i].to_vec()));
        start = i + sep.len();
    }
    out.push(Value::Bytes(b[start..].to_vec()));
    out
}

fn json_lookup(doc: &[u8], keys: &[JsonKey]) -> Option<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_slice(doc).ok()?;
    for key in keys {
        v = match (key, v) {
            (JsonKey::Name(k), serde_json::Value::Object(mut o)) => o.remove(k)?,
            (JsonKey::Pos(i), serde_json::Value::Array(mut a)) if *i < a.len() => a.swap_remove(*i),
            _ => return None,
        };
    }
    Some(v)
}

pub(crate) fn cidr(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = !u32::MAX.checked_shr(u32::from(v4)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = !u128::MAX.checked_shr(u32::from(v6)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// `%XX` and `+` decoding (and `%uXXXX` with `unicode`); malformed escapes are kept as they are.
fn url_decode_once(b: &[u8], unicode: bool) -> Option<Vec<u8>> {
    if !b.iter().any(|c| *c == b'%' || *c == b'+') {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                if let (Some(h), Some(l)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                if unicode && matches!(b.get(i + 1), Some(b'u' | b'U')) {
                    let code = b
                        .get(i + 2..i + 6)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32);
                    if let Some(ch) = code {
                        let mut buf = [0; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        i += 6;
                        continue;
                    }
                }
                out.push(b'%');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

pub(crate) fn url_decode(b: Cow<'_, [u8]>, recursive: bool, unicode: bool) -> Cow<'_, [u8]> {
    let Some(mut cur) = url_decode_once(&b, unicode) else {
        return b;
    };
    if recursive {
        for _ in 1..MAX_URL_DECODE_ROUNDS {
            match url_decode_once(&cur, unicode) {
                Some(next) if next != cur => cur = next,
                _ => break,
            }
        }
    }
    Cow::Owned(cur)
}

/// A whole-value pattern where `*` matches any run of bytes; `\*` and `\\` are literal.
/// Case-insensitive (ASCII) unless `case_sensitive`.
#[derive(Debug, Clone)]
pub struct Wildcard {
    /// Literal text between the stars; `parts.len() - 1` stars.
    parts: Vec<Vec<u8>>,
    case_sensitive: bool,
}

impl Wildcard {
    pub(crate) fn parse(p: &[u8], case_sensitive: bool) -> Result<Wildcard, String> {
        let mut parts = vec![Vec::new()];
        let mut i = 0;
        let mut prev_star = false;
        while i < p.len() {
            let cur = parts.len() - 1;
            match p[i] {
                b'\\' => match p.get(i + 1) {
                    Some(c @ (b'*' | b'\\')) => {
                        parts[cur].push(*c);
                        i += 2;
                        prev_star = false;
                    }
                    _ => {
                        return Err(
                            "a backslash must be followed by `*` or `\\` (write `\\\\` for a backslash)".into(),
                        );
                    }
                },
                b'*' => {
                    if prev_star {
                        return Err("`**` is not allowed".into());
                    }
                    parts.push(Vec::new());
                    prev_star = true;
                    i += 1;
                }
                c => {
                    parts[cur].push(c);
                    prev_star = false;
                    i += 1;
                }
            }
        }
        if !case_sensitive {
            parts.iter_mut().for_each(|p| p.make_ascii_lowercase());
        }
        Ok(Wildcard { parts, case_sensitive })
    }

    /// The pattern as text: the parts joined by `*`, with their own `*` and `\\` escaped.
    pub(crate) fn text(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push(b'*');
            }
            for &c in part {
                if c == b'*' || c == b'\\' {
                    out.push(b'\\');
                }
                out.push(c);
            }
        }
        out
    }

    pub(crate) fn stars(&self) -> usize {
        self.parts.len() - 1
    }

    pub(crate) fn is_match(&self, s: &[u8]) -> bool {
        self.walk(s, |_, _| {})
    }

    /// Matches `s`, reporting each star's byte range in order. Case-insensitive patterns are
    /// stored lower-cased, so only a value with upper-case letters needs a lower-cased copy;
    /// after that every comparison is exact and searches use `memmem` (linear time).
    pub(crate) fn walk(&self, s: &[u8], on_star: impl FnMut(usize, usize)) -> bool {
        if self.case_sensitive || !s.iter().any(u8::is_ascii_uppercase) {
            self.walk_exact(s, on_star)
        } else {
            self.walk_exact(&s.to_ascii_lowercase(), on_star)
        }
    }

    /// Taking the leftmost occurrence of every middle part is both correct (a later occurrence
    /// leaves a suffix of the same remainder, so it cannot succeed where the leftmost fails)
    /// and the lazy match Cloudflare documents for `wildcard_replace` captures.
    fn walk_exact(&self, s: &[u8], mut on_star: impl FnMut(usize, usize)) -> bool {
        let n = self.parts.len();
        let (first, last) = (&self.parts[0], &self.parts[n - 1]);
        if n == 1 {
            return s == first.as_slice();
        }
        if s.len() < first.len() + last.len() || !s.starts_with(first) || !s.ends_with(last) {
            return false;
        }
        let end = s.len() - last.len();
        let mut pos = first.len();
        for part in &self.parts[1..n - 1] {
            match memmem::find(&s[pos..end], part) {
                Some(i) => {
                    on_star(pos, pos + i);
                    pos += i + part.len();
                }
                None => return false,
            }
        }
        on_star(pos, end);
        true
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Lit(Vec<u8>),
    Group(usize),
}

/// A `wildcard_replace` replacement: text with `${N}` references and `$$` for a dollar.
#[derive(Debug, Clone)]
pub(crate) struct Replacement(Vec<Piece>);

impl Replacement {
    pub(crate) fn parse(r: &[u8], stars: usize) -> Result<Replacement, String> {
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < r.len() {
            if r[i] != b'$' {
                lit.push(r[i]);
                i += 1;
                continue;
            }
            match r.get(i + 1) {
                Some(b'$') => {
                    lit.push(b'$');
                    i += 2;
                }
                Some(b'{') => {
                    let close = r[i..].iter().position(|c| *c == b'}').map(|p| p + i);
                    let n = close
                        .and_then(|c| std::str::from_utf8(&r[i + 2..c]).ok())
                        .and_then(|d| d.parse::<usize>().ok());
                    let (Some(n), Some(close)) = (n, close) else {
                        return Err("`${` must be followed by a number and `}`".into());
                    };
                    if n == 0 || n > 8 {
                        return Err(format!("${{{n}}}: references go from ${{1}} to ${{8}}"));
                    }
                    if n > stars {
                        return Err(format!(
                            "${{{n}}} refers to a `*` the pattern does not have (it has {stars})"
                        ));
                    }
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Group(n));
                    i = close + 1;
                }
                _ => return Err("a `$` must start a reference like ${1} or be doubled ($$)".into()),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Replacement(pieces))
    }

    fn expand(&self, s: &[u8], caps: &[(usize, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
            match p {
                Piece::Lit(l) => out.extend_from_slice(l),
                Piece::Group(n) => {
                    if let Some((a, b)) = caps.get(n - 1) {
                        out.extend_from_slice(&s[*a..*b]);
                    }
                }
            }
        }
        out
    }
}
