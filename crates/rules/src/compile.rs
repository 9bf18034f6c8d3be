//! Type checker and compiler: syntax tree to [`Program`], a tree of pre-resolved field ids and
//! precompiled matchers (sorted sets, `memmem` finders, regexes, wildcard patterns).
//!
//! Everything that can fail fails here, with a span: unknown names, type mismatches, bad
//! literals, invalid regexes. A compiled [`Program`] evaluates without errors (see `eval`).

use std::cmp::Ordering;
use std::net::IpAddr;

use memchr::memmem;

use crate::error::CompileError;
use crate::funcs::{Replacement, Wildcard};
use crate::lists::{IpRanges, List, Lists};
use crate::parse::{self, CmpOp, Index, Node, NodeKind, Rhs, Span, StrLit};
use crate::schema::{self, Context, FieldId, FieldSet, Kind, fields};
use crate::types::{Type, Value};

/// Biggest compiled regex program, in bytes; keeps a pasted pattern from eating memory.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled expression: immutable, `Send + Sync`, cheap to evaluate many times.
#[derive(Debug)]
pub struct Program {
    pub(crate) root: Expr,
    reads: FieldSet,
    lists: Box<[String]>,
}

impl Program {
    /// The fields the expression reads; the proxy needs to fill only these.
    pub fn fields(&self) -> &FieldSet {
        &self.reads
    }

    /// The names of the lists the expression references (`$name`), sorted, each once.
    pub fn lists(&self) -> &[String] {
        &self.lists
    }

    /// What string field `field` must hold for this program to match, when the expression pins it
    /// with `eq`, `in {…}` or `wildcard`/`strict wildcard` (through `and`: any pinned conjunct;
    /// through `or`: all of them, only if every disjunct pins). `None` when the program may match
    /// whatever the field holds. The control plane uses it to tell which hostnames a rule can
    /// apply to (`http.host`): a value that matches no pin cannot match the program.
    pub fn pinned_values(&self, field: FieldId) -> Option<Vec<Pinned>> {
        fn pinned(e: &Expr, field: FieldId) -> Option<Vec<Pinned>> {
            match e {
                Expr::Compare { lhs, m, each: false } => match (&**lhs, m) {
                    (Expr::Field(id, Kind::Bytes), Matcher::Cmp(CmpOp::Eq, Value::Bytes(v))) if *id == field => {
                        Some(vec![Pinned::Exact(v.clone())])
                    }
                    (Expr::Field(id, Kind::Bytes), Matcher::InBytes(set)) if *id == field => {
                        Some(set.iter().map(|v| Pinned::Exact(v.to_vec())).collect())
                    }
                    (Expr::Field(id, Kind::Bytes), Matcher::Wildcard(w)) if *id == field => {
                        Some(vec![Pinned::Pattern(w.clone())])
                    }
                    _ => None,
                },
                Expr::And(items) => items.iter().filter_map(|i| pinned(i, field)).min_by_key(Vec::len),
                Expr::Or(items) => {
                    let mut all = Vec::new();
                    for item in items {
                        all.extend(pinned(item, field)?);
                    }
                    Some(all)
                }
                _ => None,
            }
        }
        pinned(&self.root, field)
    }

    /// Equality tests of which at least one must hold for this program to match: each is a byte
    /// string read straight from the context ([`Accessor`]) and a literal it must equal. Found in
    /// `eq` and `in {…}` tests, through `and` (the smallest set of any conjunct) and `or` (the
    /// union of all disjuncts). `None` when no such set is known (the program must always run).
    pub(crate) fn required_atoms(&self) -> Option<Vec<(Accessor, Vec<u8>)>> {
        fn atoms(e: &Expr) -> Option<Vec<(Accessor, Vec<u8>)>> {
            match e {
                Expr::Compare { lhs, m, each: false } => {
                    let accessor = Accessor::of(lhs)?;
                    match m {
                        Matcher::Cmp(CmpOp::Eq, Value::Bytes(v)) => Some(vec![(accessor, v.clone())]),
                        Matcher::InBytes(set) => Some(set.iter().map(|v| (accessor.clone(), v.to_vec())).collect()),
                        _ => None,
                    }
                }
                Expr::And(items) => items.iter().filter_map(atoms).min_by_key(Vec::len),
                Expr::Or(items) => {
                    let mut all = Vec::new();
                    for item in items {
                        all.extend(atoms(item)?);
                    }
                    Some(all)
                }
                _ => None,
            }
        }
        atoms(&self.root)
    }
}

/// A value a program requires of a string field ([`Program::pinned_values`]).
#[derive(Debug, Clone)]
pub enum Pinned {
    /// `field eq "v"`, or one of an `in {…}` set.
    Exact(Vec<u8>),
    /// `field wildcard "…"` (or `strict wildcard`).
    Pattern(Wildcard),
}

impl Pinned {
    /// Whether `value` satisfies this pin.
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            Pinned::Exact(v) => v == value,
            Pinned::Pattern(w) => w.is_match(value),
        }
    }

    /// The pattern of a wildcard pin, as it would be written (lower-cased unless strict).
    pub fn pattern(&self) -> Option<Vec<u8>> {
        match self {
            Pinned::Exact(_) => None,
            Pinned::Pattern(w) => Some(w.text()),
        }
    }
}

/// A byte string an expression reads from the context without computing anything: a string
/// field, an element of an array field, or an element of one key's values in a map field (e.g.
/// `http.request.headers["x-id"][0]`). Reads exactly what evaluating the expression would.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Accessor {
    Field(FieldId),
    Index(FieldId, usize),
    MapIndex(FieldId, Box<[u8]>, usize),
}

impl Accessor {
    fn of(e: &Expr) -> Option<Accessor> {
        match e {
            Expr::Field(id, Kind::Bytes) => Some(Accessor::Field(*id)),
            Expr::Index(base, i) => match &**base {
                Expr::Field(id, Kind::BytesArray) => Some(Accessor::Index(*id, *i)),
                Expr::MapGet(map, key) => match &**map {
                    Expr::Field(id, Kind::BytesArrayMap) => Some(Accessor::MapIndex(*id, key.clone(), *i)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }

    /// The bytes this accessor reads from `ctx`; `None` for a missing value (which no `eq` or
    /// `in` test matches). An unset string field reads as empty, as in evaluation.
    pub(crate) fn read<'a>(&self, ctx: &'a Context) -> Option<&'a [u8]> {
        let bytes = |v: &'a Value| match v {
            Value::Bytes(b) => Some(b.as_slice()),
            _ => None,
        };
        match self {
            Accessor::Field(id) => match ctx.get(*id) {
                None => Some(&[]),
                Some(v) => bytes(v),
            },
            Accessor::Index(id, i) => match ctx.get(*id)? {
                Value::Array(items) => items.get(*i).and_then(bytes),
                _ => None,
            },
            Accessor::MapIndex(id, key, i) => match ctx.get(*id)? {
                Value::Map(m) => match m.get(&**key)? {
                    Value::Array(items) => items.get(*i).and_then(bytes),
                    _ => None,
                },
                _ => None,
            },
        }
    }
}

/// Compiles `src` against the Portcullis schema ([`crate::schema()`]), with no lists: `$name` is
/// an error.
pub fn compile(src: &str) -> Result<Program, CompileError> {
    compile_with(src, &Lists::new())
}

/// Compiles `src` against the Portcullis schema, resolving each `$name` in `lists`. The program
/// keeps what it needs of each list; later changes to `lists` do not reach it.
pub fn compile_with(src: &str, lists: &Lists) -> Result<Program, CompileError> {
    compile_opts(src, lists, true)
}

/// As [`compile_with`]; `refuse_never_matching` off skips the checks that refuse comparisons that can never
/// hold (hex literals in the wrong case), for expressions stored by a version without them.
pub(crate) fn compile_opts(src: &str, lists: &Lists, refuse_never_matching: bool) -> Result<Program, CompileError> {
    let ast = parse::parse(src)?;
    let mut checker = Checker {
        src,
        reads: FieldSet::new(),
        lists,
        used_lists: Vec::new(),
        refuse_never_matching,
    };
    let root = checker.boolean(&ast)?;
    let mut used = checker.used_lists;
    used.sort_unstable();
    used.dedup();
    Ok(Program {
        root,
        reads: checker.reads,
        lists: used.into_boxed_slice(),
    })
}

/// Compiled expression node. Types were checked, so evaluation only matches on shapes.
#[derive(Debug)]
pub(crate) enum Expr {
    Const(Value),
    Field(FieldId, Kind),
    Not(Box<Expr>),
    /// `not` over an `Array<Boolean>`, element by element.
    NotEach(Box<Expr>),
    And(Box<[Expr]>),
    Or(Box<[Expr]>),
    Xor(Box<[Expr]>),
    /// `each`: `lhs` is an array unpacked with `[*]`; the result is an `Array<Boolean>`.
    Compare {
        lhs: Box<Expr>,
        m: Matcher,
        each: bool,
    },
    Index(Box<Expr>, usize),
    MapGet(Box<Expr>, Box<[u8]>),
    /// The values of a map, as an array (`map[*]`).
    MapValues(Box<Expr>),
    /// `each`: the first argument is an unpacked array; the function runs per element.
    Call {
        f: Func,
        args: Box<[Expr]>,
        each: bool,
    },
}

/// A comparison's right-hand side, compiled.
#[derive(Debug)]
pub(crate) enum Matcher {
    Cmp(CmpOp, Value),
    Contains(Box<memmem::Finder<'static>>),
    Regex(regex::bytes::Regex),
    Wildcard(Wildcard),
    /// Sorted and deduplicated, for binary search.
    InBytes(Box<[Box<[u8]>]>),
    InInt(Box<[(i64, i64)]>),
    InIp(IpRanges),
    /// `in $name` for an IP list: shared with every other program that names the list.
    InIpList(std::sync::Arc<IpRanges>),
}

#[derive(Debug)]
pub(crate) enum JsonKey {
    Name(String),
    Pos(usize),
}

#[derive(Debug)]
pub(crate) enum Func {
    Any,
    All,
    Concat,
    StartsWith,
    EndsWith,
    Len,
    Lower,
    Upper,
    UrlDecode {
        recursive: bool,
        unicode: bool,
    },
    ToString,
    Substring,
    Split {
        sep: Box<[u8]>,
        limit: usize,
    },
    Join,
    RemoveBytes,
    LookupJsonString(Box<[JsonKey]>),
    LookupJsonInteger(Box<[JsonKey]>),
    Cidr {
        v4: u8,
        v6: u8,
    },
    DecodeBase64,
    WildcardReplace {
        pattern: Wildcard,
        replacement: Replacement,
    },
}

/// Functions this engine implements.
pub const FUNCTIONS: &[&str] = &[
    "any",
    "all",
    "cidr",
    "cidr6",
    "concat",
    "decode_base64",
    "ends_with",
    "join",
    "len",
    "lookup_json_integer",
    "lookup_json_string",
    "lower",
    "remove_bytes",
    "split",
    "starts_with",
    "substring",
    "to_string",
    "upper",
    "url_decode",
    "wildcard_replace",
];

/// Cloudflare functions that exist but make no sense (or are not offered) at the Portcullis edge.
const UNSUPPORTED_FUNCTIONS: &[&str] = &[
    "regex_replace",
    "remove_query_args",
    "uuidv4",
    "is_timed_hmac_valid_v0",
    "encode_base64",
    "bit_slice",
    "has_key",
    "has_value",
];

struct Typed {
    expr: Expr,
    ty: Type,
    /// The value is an element of an array unpacked with `[*]`, not yet consumed by a
    /// comparison or function.
    each: bool,
}

struct Checker<'s> {
    src: &'s str,
    refuse_never_matching: bool,
    reads: FieldSet,
    lists: &'s Lists,
    used_lists: Vec<String>,
}

/// The parameter type list of a String parameter.
const STR: &[Type] = &[Type::Bytes];

/// Parameters from this position on are literals compiled into the function, not evaluated.
fn literal_params_from(name: &str, nargs: usize) -> usize {
    match name {
        "url_decode"
        | "split"
        | "lookup_json_string"
        | "lookup_json_integer"
        | "cidr"
        | "cidr6"
        | "wildcard_replace" => 1.min(nargs),
        _ => nargs,
    }
}

fn bool_ty() -> Type {
    Type::Bool
}

impl Checker<'_> {
    fn err(&self, span: Span, msg: impl Into<String>) -> CompileError {
        CompileError::new(self.src, span, msg)
    }

    /// Checks a node that must be a plain Boolean.
    fn boolean(&mut self, n: &Node) -> Result<Expr, CompileError> {
        let t = self.check(n)?;
        if t.each {
            return Err(self
                .err(
                    n.span.clone(),
                    format!("expected a Boolean, found an unpacked {} ([*])", t.ty),
                )
                .with_hint("[*] works inside a function call, e.g. any(field[*] == \"value\")"));
        }
        if t.ty != Type::Bool {
            let err = self.err(n.span.clone(), format!("expected a Boolean, found {}", t.ty));
            return Err(match t.ty {
                Type::Array(ref e) if **e == Type::Bool => err.with_hint("wrap it in any(…) or all(…)"),
                _ => err,
            });
        }
        Ok(t.expr)
    }

    // Checking recurses once per nesting level, so `check` and the helpers it recurses through
    // stay small; the bulky, non-recursive work sits in separate `inline(never)` functions.
    // Unoptimised builds give every temporary its own stack slot, which made a 64-level
    // expression overflow a 2 MiB thread stack before this split.
    fn check(&mut self, n: &Node) -> Result<Typed, CompileError> {
        match &n.kind {
            NodeKind::Or(items) | NodeKind::And(items) | NodeKind::Xor(items) => {
                let mut exprs = Vec::with_capacity(items.len());
                for item in items {
                    exprs.push(self.boolean(item)?);
                }
                Ok(Self::logic(&n.kind, exprs))
            }
            NodeKind::Not(inner) => {
                let t = self.check(inner)?;
                self.not(t, inner.span.clone())
            }
            NodeKind::Index {
                base,
                index,
                index_span,
            } => {
                let b = self.check(base)?;
                self.index(b, index, index_span.clone())
            }
            NodeKind::Compare { lhs, op, op_span, rhs } => {
                let l = self.check(lhs)?;
                self.compare(l, *op, op_span.clone(), rhs)
            }
            NodeKind::Call { name, name_span, args } => {
                self.call_prelude(name, name_span.clone(), args.len(), n.span.clone())?;
                let literal_from = literal_params_from(name, args.len());
                let mut typed = Vec::with_capacity(literal_from);
                for arg in &args[..literal_from] {
                    typed.push(self.check(arg)?);
                }
                self.call(name, name_span.clone(), args, typed)
            }
            _ => self.leaf(n),
        }
    }

    #[inline(never)]
    fn logic(kind: &NodeKind, exprs: Vec<Expr>) -> Typed {
        let exprs = exprs.into_boxed_slice();
        let expr = match kind {
            NodeKind::Or(_) => Expr::Or(exprs),
            NodeKind::And(_) => Expr::And(exprs),
            _ => Expr::Xor(exprs),
        };
        Typed {
            expr,
            ty: Type::Bool,
            each: false,
        }
    }

    #[inline(never)]
    fn not(&self, t: Typed, span: Span) -> Result<Typed, CompileError> {
        match (&t.ty, t.each) {
            (Type::Bool, false) => Ok(Typed {
                expr: Expr::Not(Box::new(t.expr)),
                ty: Type::Bool,
                each: false,
            }),
            (Type::Array(e), false) if **e == Type::Bool => Ok(Typed {
                expr: Expr::NotEach(Box::new(t.expr)),
                ty: t.ty,
                each: false,
            }),
            _ => Err(self.err(span, format!("`not` needs a Boolean, found {}", describe(&t)))),
        }
    }

    #[inline(never)]
    fn leaf(&mut self, n: &Node) -> Result<Typed, CompileError> {
        let plain = |expr, ty| Typed { expr, ty, each: false };
        match &n.kind {
            NodeKind::Bool(b) => Ok(plain(Expr::Const(Value::Bool(*b)), bool_ty())),
            NodeKind::Int(i) => Ok(plain(Expr::Const(Value::Int(*i)), Type::Int)),
            NodeKind::Str(s) => {
                let bytes = self.unescape_basic(s)?;
                Ok(plain(Expr::Const(Value::Bytes(bytes)), Type::Bytes))
            }
            NodeKind::Ident(name) => {
                let Some(field) = schema::field_by_name(name) else {
                    return Err(self.unknown_field(name, n.span.clone()));
                };
                self.reads.insert(field.id());
                Ok(plain(Expr::Field(field.id(), field.kind()), field.ty()))
            }
            _ => Err(self.err(n.span.clone(), "unexpected expression")),
        }
    }

    #[inline(never)]
    fn compare(&mut self, l: Typed, op: CmpOp, op_span: Span, rhs: &Rhs) -> Result<Typed, CompileError> {
        if let Expr::Field(id, _) = &l.expr
            && self.refuse_never_matching
        {
            self.check_hex_literals(*id, op, rhs)?;
            self.check_host_literals(*id, op, rhs)?;
        }
        let m = self.matcher(&l.ty, op, op_span, rhs)?;
        let ty = if l.each {
            Type::Array(Box::new(Type::Bool))
        } else {
            Type::Bool
        };
        Ok(Typed {
            expr: Expr::Compare {
                lhs: Box::new(l.expr),
                m,
                each: l.each,
            },
            ty,
            each: false,
        })
    }

    /// Serials, key identifiers and fingerprints are hex in one case and without separators, so
    /// a literal in the other case (as `openssl x509 -serial` and the API print serials) or with
    /// colons can never be equal to them. Such a rule is refused rather than left to fail open:
    /// a block on `cert_serial eq "3bb9…"` would never fire.
    fn check_hex_literals(&self, id: FieldId, op: CmpOp, rhs: &Rhs) -> Result<(), CompileError> {
        let upper = match id {
            fields::CF_TLS_CLIENT_AUTH_CERT_SERIAL
            | fields::CF_TLS_CLIENT_AUTH_CERT_ISSUER_SERIAL
            | fields::CF_TLS_CLIENT_AUTH_CERT_SKI
            | fields::CF_TLS_CLIENT_AUTH_CERT_ISSUER_SKI => true,
            fields::CF_TLS_CLIENT_AUTH_CERT_FINGERPRINT_SHA256
            | fields::CF_TLS_CLIENT_AUTH_CERT_FINGERPRINT_SHA1
            | fields::PORTCULLIS_TLS_CLIENT_AUTH_CERT_SPKI_SHA256 => false,
            _ => return Ok(()),
        };
        if !matches!(op, CmpOp::Eq | CmpOp::Ne | CmpOp::In | CmpOp::Contains) {
            return Ok(());
        }
        for (s, bytes) in self.string_literals(rhs) {
            let fits = |b: &u8| {
                b.is_ascii_digit()
                    || if upper {
                        (b'A'..=b'F').contains(b)
                    } else {
                        (b'a'..=b'f').contains(b)
                    }
            };
            if bytes.iter().all(fits) {
                continue;
            }
            let name = id.field().name();
            let case = if upper { "upper-case" } else { "lower-case" };
            let err = self.err(
                s.span.clone(),
                format!("`{name}` is {case} hex without separators, so this string can never match it"),
            );
            let fixed: String = bytes
                .iter()
                .filter(|b| !matches!(b, b':' | b' ' | b'-'))
                .map(|&b| if upper { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() } as char)
                .collect();
            return Err(if fixed.bytes().all(|b| fits(&b)) {
                err.with_hint(format!("write \"{fixed}\""))
            } else {
                err
            });
        }
        Ok(())
    }

    /// The string literals of a comparison's right side (itself, or a set's members), each with its
    /// unescaped bytes. A literal that does not unescape is left out: the matcher reports it.
    fn string_literals<'r>(&self, rhs: &'r Rhs) -> Vec<(&'r StrLit, Vec<u8>)> {
        let items: &[Rhs] = match rhs {
            Rhs::Set(items, _) => items,
            one => std::slice::from_ref(one),
        };
        items
            .iter()
            .filter_map(|item| match item {
                Rhs::Str(s) => self.unescape_basic(s).ok().map(|bytes| (s, bytes)),
                _ => None,
            })
            .collect()
    }

    /// `http.host` is the name a request asked for, lower-cased and without a trailing dot, never a
    /// pattern: a literal with `*` (a wildcard hostname copied into `eq` or `in`), an upper-case letter or
    /// a trailing dot can never equal it, and a block on it would never fire.
    fn check_host_literals(&self, id: FieldId, op: CmpOp, rhs: &Rhs) -> Result<(), CompileError> {
        if id != fields::HTTP_HOST || !matches!(op, CmpOp::Eq | CmpOp::Ne | CmpOp::In) {
            return Ok(());
        }
        for (s, bytes) in self.string_literals(rhs) {
            if bytes.contains(&b'*') {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                return Err(self
                    .err(
                        s.span.clone(),
                        "`http.host` is the name the request asked for, never a wildcard, so this string can never match it",
                    )
                    .with_hint(format!("http.host wildcard \"{text}\"")));
            }
            if bytes.iter().any(u8::is_ascii_uppercase) || (bytes.len() > 1 && bytes.ends_with(b".")) {
                let fixed = String::from_utf8_lossy(&bytes)
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                return Err(self
                    .err(
                        s.span.clone(),
                        "`http.host` is lower-case and has no trailing dot, so this string can never match it",
                    )
                    .with_hint(format!("write \"{fixed}\"")));
            }
        }
        Ok(())
    }

    fn unknown_field(&self, name: &str, span: Span) -> CompileError {
        if FUNCTIONS.contains(&name) {
            return self
                .err(span, format!("{name} is a function, not a field"))
                .with_hint(format!("call it: {name}(…)"));
        }
        let err = self.err(span, format!("unknown field \"{name}\""));
        match crate::suggest(name, schema::schema().iter().map(|f| f.name())) {
            Some(s) => err.with_hint(format!("did you mean \"{s}\"?")),
            None => err.with_hint("`portcullis rules fields` lists the fields"),
        }
    }

    #[inline(never)]
    fn index(&mut self, b: Typed, index: &Index, span: Span) -> Result<Typed, CompileError> {
        if b.each {
            return Err(self.err(span, "cannot index an element unpacked with [*]"));
        }
        match (b.ty, index) {
            (Type::Array(elem), Index::Int(i)) => {
                let i =
                    usize::try_from(*i).map_err(|_| self.err(span.clone(), "array indexes must not be negative"))?;
                Ok(Typed {
                    expr: Expr::Index(Box::new(b.expr), i),
                    ty: *elem,
                    each: false,
                })
            }
            (Type::Array(elem), Index::Star) => Ok(Typed {
                expr: b.expr,
                ty: *elem,
                each: true,
            }),
            (Type::Map(elem), Index::Key(k)) => {
                let key = self.unescape_basic(k)?;
                Ok(Typed {
                    expr: Expr::MapGet(Box::new(b.expr), key.into_boxed_slice()),
                    ty: *elem,
                    each: false,
                })
            }
            (Type::Map(elem), Index::Star) => Ok(Typed {
                expr: Expr::MapValues(Box::new(b.expr)),
                ty: *elem,
                each: true,
            }),
            (ty @ Type::Array(_), Index::Key(_)) => Err(self.err(
                span,
                format!("{ty} is indexed by position ([0]) or [*], not by a string key"),
            )),
            (ty @ Type::Map(_), Index::Int(_)) => Err(self.err(
                span,
                format!("{ty} is indexed by a string key ([\"name\"]) or [*], not by a position"),
            )),
            (ty, _) => Err(self.err(span, format!("{ty} cannot be indexed"))),
        }
    }

    fn unescape_basic(&self, s: &StrLit) -> Result<Vec<u8>, CompileError> {
        if s.raw {
            return Ok(s.body.as_bytes().to_vec());
        }
        let b = s.body.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'\\' {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let at = s.body_start + i;
            match b.get(i + 1) {
                Some(b'"') => out.push(b'"'),
                Some(b'\\') => out.push(b'\\'),
                Some(b'x') => {
                    let hex = b.get(i + 2..i + 4).and_then(|h| std::str::from_utf8(h).ok());
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(v) => {
                            out.push(v);
                            i += 4;
                            continue;
                        }
                        None => {
                            return Err(self.err(
                                at..(at + 4).min(s.body_start + b.len()),
                                "invalid escape: \\x needs two hex digits",
                            ));
                        }
                    }
                }
                _ => {
                    let len = s.body[i + 1..].chars().next().map_or(1, |c| c.len_utf8() + 1);
                    return Err(self
                        .err(at..at + len, "invalid escape in string")
                        .with_hint("quoted strings accept \\\", \\\\ and \\xHH; raw strings r\"…\" take text as is"));
                }
            }
            i += 2;
        }
        Ok(out)
    }

    /// For `matches` and `wildcard`: only `\"` is an escape of the string; other backslashes
    /// belong to the regex or wildcard syntax, as Cloudflare documents.
    fn unescape_pattern(s: &StrLit) -> String {
        if s.raw {
            s.body.clone()
        } else {
            s.body.replace("\\\"", "\"")
        }
    }

    fn rhs_str<'r>(&self, ty: &Type, op: CmpOp, rhs: &'r Rhs) -> Result<&'r StrLit, CompileError> {
        match rhs {
            Rhs::Str(s) => Ok(s),
            other => Err(self.mismatch(ty, op, other)),
        }
    }

    fn mismatch(&self, ty: &Type, op: CmpOp, rhs: &Rhs) -> CompileError {
        let found = match rhs {
            Rhs::Str(_) => "String",
            Rhs::Word(w, _) => classify_word(w),
            Rhs::Set(..) => "a set",
            Rhs::List(_) => "a list",
        };
        if let Rhs::Word(w, span) = rhs
            && (schema::field_by_name(w).is_some() || w.contains('('))
        {
            return self.err(
                span.clone(),
                format!("the right side of `{}` must be a literal value, not `{w}`", op.name()),
            );
        }
        if found == "invalid value" {
            let w = match rhs {
                Rhs::Word(w, _) => w.as_str(),
                _ => "",
            };
            let err = self.err(rhs.span(), format!("invalid value `{w}` for comparison with {ty}"));
            return match ty {
                Type::Bytes => err.with_hint("strings are quoted: \"…\""),
                _ => err,
            };
        }
        self.err(
            rhs.span(),
            format!("type mismatch: `{}` cannot compare {ty} with {found}", op.name()),
        )
    }

    fn matcher(&mut self, ty: &Type, op: CmpOp, op_span: Span, rhs: &Rhs) -> Result<Matcher, CompileError> {
        if let Rhs::List(span) = rhs {
            return self.list_matcher(ty, span.clone());
        }
        let unsupported = |this: &Self| {
            let works_on = match op {
                CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => "String and Integer",
                CmpOp::Contains | CmpOp::Matches | CmpOp::Wildcard | CmpOp::StrictWildcard => "String",
                _ => "String, Integer and IP address",
            };
            let err = this.err(
                op_span.clone(),
                format!("`{}` is not supported for {ty}; it works on {works_on}", op.name()),
            );
            match ty {
                Type::Array(_) | Type::Map(_) => {
                    err.with_hint("pick an element ([0], [\"key\"]) or use [*] inside any(…) or all(…)")
                }
                _ => err,
            }
        };
        match (ty, op) {
            (Type::Bytes, CmpOp::In) => {
                let Rhs::Set(items, span) = rhs else {
                    return Err(self.mismatch(ty, op, rhs));
                };
                if items.is_empty() {
                    return Err(self.err(span.clone(), "empty set"));
                }
                let mut set = Vec::with_capacity(items.len());
                for item in items {
                    let s = self.rhs_str(ty, op, item)?;
                    set.push(self.unescape_basic(s)?.into_boxed_slice());
                }
                set.sort();
                set.dedup();
                Ok(Matcher::InBytes(set.into_boxed_slice()))
            }
            (Type::Bytes, CmpOp::Eq | CmpOp::Ne | CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge) => {
                let s = self.rhs_str(ty, op, rhs)?;
                Ok(Matcher::Cmp(op, Value::Bytes(self.unescape_basic(s)?)))
            }
            (Type::Bytes, CmpOp::Contains) => {
                let s = self.rhs_str(ty, op, rhs)?;
                let needle = self.unescape_basic(s)?;
                Ok(Matcher::Contains(Box::new(memmem::Finder::new(&needle).into_owned())))
            }
            (Type::Bytes, CmpOp::Matches) => {
                let s = self.rhs_str(ty, op, rhs)?;
                let pattern = Self::unescape_pattern(s);
                regex::bytes::RegexBuilder::new(&pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map(Matcher::Regex)
                    .map_err(|e| {
                        let detail = match e {
                            regex::Error::CompiledTooBig(_) => {
                                format!("regular expression too big: over the {REGEX_SIZE_LIMIT}-byte limit")
                            }
                            other => {
                                let text = other.to_string();
                                let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                                format!(
                                    "invalid regular expression: {}",
                                    last.trim().trim_start_matches("error: ")
                                )
                            }
                        };
                        self.err(s.span.clone(), detail)
                    })
            }
            (Type::Bytes, CmpOp::Wildcard | CmpOp::StrictWildcard) => {
                let s = self.rhs_str(ty, op, rhs)?;
                let pattern = Self::unescape_pattern(s);
                Wildcard::parse(pattern.as_bytes(), op == CmpOp::StrictWildcard)
                    .map(Matcher::Wildcard)
                    .map_err(|e| self.err(s.span.clone(), format!("invalid wildcard pattern: {e}")))
            }
            (Type::Int, CmpOp::Eq | CmpOp::Ne | CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge) => match rhs {
                Rhs::Word(w, _) => match w.parse::<i64>() {
                    Ok(v) => Ok(Matcher::Cmp(op, Value::Int(v))),
                    Err(_) => Err(self.mismatch(ty, op, rhs)),
                },
                _ => Err(self.mismatch(ty, op, rhs)),
            },
            (Type::Int, CmpOp::In) => {
                let Rhs::Set(items, span) = rhs else {
                    return Err(self.mismatch(ty, op, rhs));
                };
                if items.is_empty() {
                    return Err(self.err(span.clone(), "empty set"));
                }
                let mut ranges = Vec::with_capacity(items.len());
                for item in items {
                    let Rhs::Word(w, wspan) = item else {
                        return Err(self.mismatch(ty, op, item));
                    };
                    let range = match w.split_once("..") {
                        Some((a, b)) => a.parse::<i64>().ok().zip(b.parse::<i64>().ok()),
                        None => w.parse::<i64>().ok().map(|v| (v, v)),
                    };
                    match range {
                        Some((a, b)) if a <= b => ranges.push((a, b)),
                        Some(_) => {
                            return Err(
                                self.err(wspan.clone(), format!("empty range `{w}`: the start is after the end"))
                            );
                        }
                        None => return Err(self.mismatch(ty, op, item)),
                    }
                }
                ranges.sort_unstable();
                Ok(Matcher::InInt(ranges.into_boxed_slice()))
            }
            (Type::Ip, CmpOp::Eq | CmpOp::Ne) => match rhs {
                Rhs::Word(w, span) => match w.parse::<IpAddr>() {
                    Ok(ip) => Ok(Matcher::Cmp(op, Value::Ip(ip.to_canonical()))),
                    Err(_) if w.parse::<ipnet::IpNet>().is_ok() || w.contains("..") => Err(self
                        .err(
                            span.clone(),
                            format!("`{}` compares single addresses, not ranges", op.name()),
                        )
                        .with_hint(format!("use a set: ip.src in {{{w}}}"))),
                    Err(_) => Err(self.mismatch(ty, op, rhs)),
                },
                _ => Err(self.mismatch(ty, op, rhs)),
            },
            (Type::Ip, CmpOp::In) => {
                let Rhs::Set(items, span) = rhs else {
                    return Err(self.mismatch(ty, op, rhs));
                };
                if items.is_empty() {
                    return Err(self.err(span.clone(), "empty set"));
                }
                let mut ranges = Vec::with_capacity(items.len());
                for item in items {
                    let Rhs::Word(w, wspan) = item else {
                        return Err(self.mismatch(ty, op, item));
                    };
                    ranges.push(self.ip_range(w, wspan.clone(), ty, op, item)?);
                }
                Ok(Matcher::InIp(IpRanges::new(ranges)))
            }
            (Type::Bool, CmpOp::Eq | CmpOp::Ne) => match rhs {
                Rhs::Word(w, _) if w == "true" || w == "false" => Ok(Matcher::Cmp(op, Value::Bool(w == "true"))),
                _ => Err(self.mismatch(ty, op, rhs)),
            },
            _ => Err(unsupported(self)),
        }
    }

    /// `in $name`: the list must exist and hold values of the field's type.
    fn list_matcher(&mut self, ty: &Type, span: Span) -> Result<Matcher, CompileError> {
        let name = self.src.get(span.start + 1..span.end).unwrap_or("");
        if name.is_empty() {
            return Err(self.err(span, "a list name must follow `$`"));
        }
        let Some(list) = self.lists.get(name) else {
            let err = self.err(span, format!("unknown list `${name}`"));
            return Err(match crate::suggest(name, self.lists.names()) {
                Some(s) => err.with_hint(format!("did you mean ${s}?")),
                None => err.with_hint("lists are created with the Lists API (/accounts/{account_id}/rules/lists)"),
            });
        };
        match (list, ty) {
            (List::Ip(ranges), Type::Ip) => {
                self.used_lists.push(name.to_owned());
                Ok(Matcher::InIpList(ranges.clone()))
            }
            (List::Ip(_), other) => Err(self.err(
                span,
                format!("type mismatch: `${name}` is an IP list and cannot be compared with {other}"),
            )),
        }
    }

    fn ip_range(
        &self,
        w: &str,
        span: Span,
        ty: &Type,
        op: CmpOp,
        item: &Rhs,
    ) -> Result<(IpAddr, IpAddr), CompileError> {
        if let Some((a, b)) = w.split_once("..") {
            let (Ok(a), Ok(b)) = (a.parse::<IpAddr>(), b.parse::<IpAddr>()) else {
                return Err(self.err(span, format!("invalid IP range `{w}`")));
            };
            // Clients' addresses are compared in their IPv4 form when they have one.
            let (a, b) = (a.to_canonical(), b.to_canonical());
            if a.is_ipv4() != b.is_ipv4() {
                return Err(self.err(span, format!("IP range `{w}` mixes IPv4 and IPv6")));
            }
            if a > b {
                return Err(self.err(span, format!("empty range `{w}`: the start is after the end")));
            }
            return Ok((a, b));
        }
        if let Ok(ip) = w.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            return Ok((ip, ip));
        }
        if w.contains('/') {
            return match w.parse::<ipnet::IpNet>().map(crate::lists::canonical_net) {
                Ok(net) => Ok((net.network(), net.broadcast())),
                Err(_) => Err(self.err(span, format!("invalid CIDR `{w}`"))),
            };
        }
        Err(self.mismatch(ty, op, item))
    }

    #[inline(never)]
    fn call_prelude(&self, name: &str, name_span: Span, nargs: usize, span: Span) -> Result<(), CompileError> {
        if !FUNCTIONS.contains(&name) {
            if UNSUPPORTED_FUNCTIONS.contains(&name) {
                return Err(self.err(name_span, format!("function {name}() is not supported by Portcullis")));
            }
            let err = self.err(name_span, format!("unknown function {name}()"));
            return Err(match crate::suggest(name, FUNCTIONS.iter().copied()) {
                Some(s) => err.with_hint(format!("did you mean {s}()?")),
                None => err,
            });
        }
        let arity = |min: usize, max: usize| -> Result<(), CompileError> {
            if nargs < min || nargs > max {
                let want = match (min, max) {
                    (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
                    (a, usize::MAX) => {
                        format!("at least {a} argument{}", if a == 1 { "" } else { "s" })
                    }
                    (a, b) => format!("{a} to {b} arguments"),
                };
                return Err(CompileError::new(
                    self.src,
                    span.clone(),
                    format!("{name}() takes {want}, found {}", nargs),
                ));
            }
            Ok(())
        };
        match name {
            "any" | "all" | "len" | "lower" | "upper" | "to_string" | "decode_base64" => arity(1, 1)?,
            "starts_with" | "ends_with" | "join" | "remove_bytes" => arity(2, 2)?,
            "url_decode" => arity(1, 2)?,
            "substring" => arity(2, 3)?,
            "split" | "cidr" => arity(3, 3)?,
            "cidr6" => arity(2, 2)?,
            "wildcard_replace" => arity(3, 4)?,
            "concat" => arity(1, usize::MAX)?,
            "lookup_json_string" | "lookup_json_integer" => arity(2, usize::MAX)?,
            _ => {}
        }
        Ok(())
    }

    #[inline(never)]
    fn call(&mut self, name: &str, name_span: Span, args: &[Node], typed: Vec<Typed>) -> Result<Typed, CompileError> {
        if let Some(i) = typed.iter().skip(1).position(|t| t.each).map(|i| i + 1) {
            return Err(self.err(
                args[i].span.clone(),
                "[*] can only be used in the first argument of a function",
            ));
        }
        let each = typed.first().is_some_and(|t| t.each);
        let expect = |this: &Self, i: usize, want: &[Type]| -> Result<(), CompileError> {
            let t = &typed[i];
            if want.contains(&t.ty) {
                return Ok(());
            }
            let names: Vec<String> = want.iter().map(ToString::to_string).collect();
            Err(this.err(
                args[i].span.clone(),
                format!(
                    "argument {} of {name}() must be {}, found {}",
                    i + 1,
                    names.join(" or "),
                    describe(t)
                ),
            ))
        };
        let ret: Type;
        let f = match name {
            "any" | "all" => {
                // `any(bools[*])` means `any(bools)`: an unpacked expression evaluates to its array.
                let ok = if typed[0].each {
                    typed[0].ty == Type::Bool
                } else {
                    typed[0].ty == Type::Array(Box::new(Type::Bool))
                };
                if !ok {
                    return Err(self
                        .err(
                            args[0].span.clone(),
                            format!(
                                "argument 1 of {name}() must be Array<Boolean>, found {}",
                                describe(&typed[0])
                            ),
                        )
                        .with_hint(format!("compare each element: {name}(field[*] == \"value\")")));
                }
                ret = Type::Bool;
                if name == "any" { Func::Any } else { Func::All }
            }
            "concat" => {
                let first = typed[0].ty.clone();
                if !matches!(first, Type::Bytes | Type::Array(_)) {
                    expect(self, 0, STR)?;
                }
                for i in 1..typed.len() {
                    expect(self, i, std::slice::from_ref(&first))?;
                }
                ret = first;
                Func::Concat
            }
            "starts_with" | "ends_with" => {
                expect(self, 0, STR)?;
                expect(self, 1, STR)?;
                ret = Type::Bool;
                if name == "starts_with" {
                    Func::StartsWith
                } else {
                    Func::EndsWith
                }
            }
            "len" => {
                if !matches!(typed[0].ty, Type::Bytes | Type::Array(_) | Type::Map(_)) {
                    expect(self, 0, STR)?;
                }
                ret = Type::Int;
                Func::Len
            }
            "lower" | "upper" | "decode_base64" => {
                expect(self, 0, STR)?;
                ret = Type::Bytes;
                match name {
                    "lower" => Func::Lower,
                    "upper" => Func::Upper,
                    _ => Func::DecodeBase64,
                }
            }
            "to_string" => {
                expect(self, 0, &[Type::Int, Type::Bool, Type::Ip])?;
                ret = Type::Bytes;
                Func::ToString
            }
            "substring" => {
                expect(self, 0, STR)?;
                for i in 1..typed.len() {
                    expect(self, i, &[Type::Int])?;
                }
                ret = Type::Bytes;
                Func::Substring
            }
            "join" => {
                expect(self, 0, &[Type::array_of_bytes()])?;
                expect(self, 1, STR)?;
                ret = Type::Bytes;
                Func::Join
            }
            "remove_bytes" => {
                expect(self, 0, STR)?;
                expect(self, 1, STR)?;
                ret = Type::Bytes;
                Func::RemoveBytes
            }
            "url_decode" => {
                expect(self, 0, STR)?;
                let (mut recursive, mut unicode) = (false, false);
                if let Some(opt) = args.get(1) {
                    for c in self.lit_str(name, 2, opt)? {
                        match c {
                            b'r' => recursive = true,
                            b'u' => unicode = true,
                            _ => {
                                return Err(self.err(
                                    opt.span.clone(),
                                    "url_decode() options are \"r\" (recursive) and \"u\" (%uXXXX)",
                                ));
                            }
                        }
                    }
                }
                ret = Type::Bytes;
                Func::UrlDecode { recursive, unicode }
            }
            "split" => {
                expect(self, 0, STR)?;
                let sep = self.lit_str(name, 2, &args[1])?;
                if sep.is_empty() {
                    return Err(self.err(args[1].span.clone(), "the separator of split() must not be empty"));
                }
                let limit = self.lit_int(name, 3, &args[2], 1, 128)?;
                ret = Type::array_of_bytes();
                Func::Split {
                    sep: sep.into_boxed_slice(),
                    limit: usize::try_from(limit).unwrap_or(1),
                }
            }
            "lookup_json_string" | "lookup_json_integer" => {
                expect(self, 0, STR)?;
                let mut keys = Vec::new();
                for (i, arg) in args.iter().enumerate().skip(1) {
                    keys.push(match &arg.kind {
                        NodeKind::Str(lit) => {
                            JsonKey::Name(String::from_utf8_lossy(&self.unescape_basic(lit)?).into_owned())
                        }
                        NodeKind::Int(n) => JsonKey::Pos(
                            usize::try_from(*n)
                                .map_err(|_| self.err(arg.span.clone(), "JSON array positions must not be negative"))?,
                        ),
                        _ => {
                            return Err(self.err(
                                arg.span.clone(),
                                format!("argument {} of {name}() must be a string or integer literal", i + 1),
                            ));
                        }
                    });
                }
                if name == "lookup_json_string" {
                    ret = Type::Bytes;
                    Func::LookupJsonString(keys.into_boxed_slice())
                } else {
                    ret = Type::Int;
                    Func::LookupJsonInteger(keys.into_boxed_slice())
                }
            }
            "cidr" | "cidr6" => {
                expect(self, 0, &[Type::Ip])?;
                let (v4, v6) = if name == "cidr" {
                    (
                        self.lit_int(name, 2, &args[1], 1, 32)?,
                        self.lit_int(name, 3, &args[2], 1, 128)?,
                    )
                } else {
                    (32, self.lit_int(name, 2, &args[1], 1, 128)?)
                };
                ret = Type::Ip;
                Func::Cidr {
                    v4: u8::try_from(v4).unwrap_or(32),
                    v6: u8::try_from(v6).unwrap_or(128),
                }
            }
            "wildcard_replace" => {
                expect(self, 0, STR)?;
                let case_sensitive = match args.get(3) {
                    None => false,
                    Some(flags) => {
                        let f = self.lit_str(name, 4, flags)?;
                        match f.as_slice() {
                            b"" => false,
                            b"s" => true,
                            _ => {
                                return Err(self.err(
                                    flags.span.clone(),
                                    "the only wildcard_replace() flag is \"s\" (case-sensitive)",
                                ));
                            }
                        }
                    }
                };
                let pattern_text = self.lit_pattern(name, 2, &args[1])?;
                let pattern = Wildcard::parse(pattern_text.as_bytes(), case_sensitive)
                    .map_err(|e| self.err(args[1].span.clone(), format!("invalid wildcard pattern: {e}")))?;
                let replacement_text = self.lit_str(name, 3, &args[2])?;
                let replacement = Replacement::parse(&replacement_text, pattern.stars())
                    .map_err(|e| self.err(args[2].span.clone(), format!("invalid replacement: {e}")))?;
                ret = Type::Bytes;
                Func::WildcardReplace { pattern, replacement }
            }
            _ => return Err(self.err(name_span, format!("unknown function {name}()"))),
        };
        let each = each && !matches!(f, Func::Any | Func::All);
        let exprs: Box<[Expr]> = typed.into_iter().map(|t| t.expr).collect();
        let ty = if each { Type::Array(Box::new(ret)) } else { ret };
        Ok(Typed {
            expr: Expr::Call { f, args: exprs, each },
            ty,
            each: false,
        })
    }

    fn lit_str(&self, func: &str, pos: usize, n: &Node) -> Result<Vec<u8>, CompileError> {
        match &n.kind {
            NodeKind::Str(s) => self.unescape_basic(s),
            _ => Err(self.err(
                n.span.clone(),
                format!("argument {pos} of {func}() must be a string literal"),
            )),
        }
    }

    fn lit_pattern(&self, func: &str, pos: usize, n: &Node) -> Result<String, CompileError> {
        match &n.kind {
            NodeKind::Str(s) => Ok(Self::unescape_pattern(s)),
            _ => Err(self.err(
                n.span.clone(),
                format!("argument {pos} of {func}() must be a string literal"),
            )),
        }
    }

    fn lit_int(&self, func: &str, pos: usize, n: &Node, min: i64, max: i64) -> Result<i64, CompileError> {
        match &n.kind {
            NodeKind::Int(v) if (min..=max).contains(v) => Ok(*v),
            NodeKind::Int(v) => Err(self.err(
                n.span.clone(),
                format!("argument {pos} of {func}() must be between {min} and {max}, found {v}"),
            )),
            _ => Err(self.err(
                n.span.clone(),
                format!("argument {pos} of {func}() must be an integer literal"),
            )),
        }
    }
}

fn describe(t: &Typed) -> String {
    if t.each {
        format!("an unpacked {} ([*])", t.ty)
    } else {
        t.ty.to_string()
    }
}

/// What an unquoted literal looks like, for type-mismatch messages.
fn classify_word(w: &str) -> &'static str {
    if w == "true" || w == "false" {
        "Boolean"
    } else if w.parse::<i64>().is_ok() {
        "Integer"
    } else if w.parse::<IpAddr>().is_ok() {
        "IP address"
    } else if w.parse::<ipnet::IpNet>().is_ok() {
        "CIDR"
    } else if let Some((a, b)) = w.split_once("..") {
        if a.parse::<i64>().is_ok() && b.parse::<i64>().is_ok() {
            "Integer range"
        } else if a.parse::<IpAddr>().is_ok() && b.parse::<IpAddr>().is_ok() {
            "IP range"
        } else {
            "invalid value"
        }
    } else {
        "invalid value"
    }
}

/// Compares `v` with `lit` for `op`; values of different types never match.
pub(crate) fn cmp_holds(op: CmpOp, ord: Option<Ordering>) -> bool {
    match (op, ord) {
        (_, None) => false,
        (CmpOp::Eq, Some(o)) => o == Ordering::Equal,
        (CmpOp::Ne, Some(o)) => o != Ordering::Equal,
        (CmpOp::Lt, Some(o)) => o == Ordering::Less,
        (CmpOp::Le, Some(o)) => o != Ordering::Greater,
        (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
        (CmpOp::Ge, Some(o)) => o != Ordering::Less,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
