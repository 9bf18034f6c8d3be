//! Evaluation of a compiled [`Program`] against a [`Context`]. Infallible by construction.
//!
//! Intermediate values borrow from the context and the program where they can (`Cow`), so the
//! common operators (field reads, `eq`, `in`, `contains`, `matches`, `wildcard`, `starts_with`,
//! `lower` of already-lower text) allocate nothing.
//!
//! Missing values, as Cloudflare documents them: an out-of-range index, an absent map key, or a
//! function with no result (invalid JSON or Base64) gives a *missing* value. Any comparison on a
//! missing value is `false` (`ne` included), most functions return missing for a missing
//! argument, and a missing Boolean counts as `false`. `[*]` over a missing array unpacks
//! nothing, so `any(…)` is `false` and `all(…)` is `true` (vacuously) there.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::compile::{Expr, Matcher, Program, cmp_holds};
use crate::schema::{Context, Kind};
use crate::types::{Value, ValueMap};

static EMPTY_MAP: ValueMap = BTreeMap::new();

/// A value during evaluation.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Missing,
    Bool(bool),
    Int(i64),
    Ip(IpAddr),
    Bytes(Cow<'a, [u8]>),
    Array(Cow<'a, [Value]>),
    Map(&'a ValueMap),
}

impl<'a> Val<'a> {
    pub(crate) fn of(v: &'a Value) -> Val<'a> {
        match v {
            Value::Bool(b) => Val::Bool(*b),
            Value::Int(i) => Val::Int(*i),
            Value::Ip(ip) => Val::Ip(*ip),
            Value::Bytes(b) => Val::Bytes(Cow::Borrowed(b)),
            Value::Array(a) => Val::Array(Cow::Borrowed(a)),
            Value::Map(m) => Val::Map(m),
        }
    }

    fn owned(v: Value) -> Val<'a> {
        match v {
            Value::Bool(b) => Val::Bool(b),
            Value::Int(i) => Val::Int(i),
            Value::Ip(ip) => Val::Ip(ip),
            Value::Bytes(b) => Val::Bytes(Cow::Owned(b)),
            Value::Array(a) => Val::Array(Cow::Owned(a)),
            // Owned maps never occur: only fields produce maps.
            Value::Map(_) => Val::Missing,
        }
    }

    pub(crate) fn into_value(self) -> Option<Value> {
        Some(match self {
            Val::Missing => return None,
            Val::Bool(b) => Value::Bool(b),
            Val::Int(i) => Value::Int(i),
            Val::Ip(ip) => Value::Ip(ip),
            Val::Bytes(b) => Value::Bytes(b.into_owned()),
            Val::Array(a) => Value::Array(a.into_owned()),
            Val::Map(m) => Value::Map(m.clone()),
        })
    }

    /// The elements `[*]` unpacks: nothing for a missing array.
    pub(crate) fn unpack(self) -> Cow<'a, [Value]> {
        match self {
            Val::Array(items) => items,
            _ => Cow::Borrowed(&[]),
        }
    }
}

fn default_val(kind: Kind) -> Val<'static> {
    match kind {
        Kind::Bool => Val::Bool(false),
        Kind::Int => Val::Int(0),
        Kind::Bytes => Val::Bytes(Cow::Borrowed(&[])),
        Kind::Ip => Val::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Kind::BytesArray => Val::Array(Cow::Borrowed(&[])),
        Kind::BytesArrayMap => Val::Map(&EMPTY_MAP),
    }
}

impl Program {
    /// Evaluates the expression. Never fails: unset fields read as their defaults and missing
    /// values compare `false` (see the module docs).
    pub fn eval(&self, ctx: &Context) -> bool {
        self.root.eval_bool(ctx)
    }
}

impl Expr {
    pub(crate) fn eval_bool(&self, ctx: &Context) -> bool {
        match self {
            Expr::Const(Value::Bool(b)) => *b,
            Expr::Field(id, _) => matches!(ctx.get(*id), Some(Value::Bool(true))),
            Expr::Not(e) => !e.eval_bool(ctx),
            Expr::And(items) => items.iter().all(|e| e.eval_bool(ctx)),
            Expr::Or(items) => items.iter().any(|e| e.eval_bool(ctx)),
            Expr::Xor(items) => items.iter().fold(false, |acc, e| acc ^ e.eval_bool(ctx)),
            Expr::Compare { lhs, m, each: false } => m.test(&lhs.eval(ctx)),
            other => matches!(other.eval(ctx), Val::Bool(true)),
        }
    }

    pub(crate) fn eval<'a>(&'a self, ctx: &'a Context) -> Val<'a> {
        match self {
            Expr::Const(v) => Val::of(v),
            Expr::Field(id, kind) => ctx.get(*id).map_or_else(|| default_val(*kind), Val::of),
            Expr::Not(_) | Expr::And(_) | Expr::Or(_) | Expr::Xor(_) | Expr::Compare { each: false, .. } => {
                Val::Bool(self.eval_bool(ctx))
            }
            Expr::NotEach(e) => match e.eval(ctx) {
                Val::Array(items) => Val::Array(Cow::Owned(
                    items
                        .iter()
                        .map(|v| Value::Bool(!matches!(v, Value::Bool(true))))
                        .collect(),
                )),
                _ => Val::Missing,
            },
            Expr::Compare { lhs, m, each: true } => {
                let items = lhs.eval(ctx).unpack();
                Val::Array(Cow::Owned(
                    items.iter().map(|v| Value::Bool(m.test(&Val::of(v)))).collect(),
                ))
            }
            Expr::Index(base, i) => match base.eval(ctx) {
                Val::Array(Cow::Borrowed(items)) => items.get(*i).map_or(Val::Missing, Val::of),
                Val::Array(Cow::Owned(items)) => items.into_iter().nth(*i).map_or(Val::Missing, Val::owned),
                _ => Val::Missing,
            },
            Expr::MapGet(base, key) => match base.eval(ctx) {
                Val::Map(m) => m.get(&**key).map_or(Val::Missing, Val::of),
                _ => Val::Missing,
            },
            Expr::MapValues(base) => match base.eval(ctx) {
                Val::Map(m) => Val::Array(Cow::Owned(m.values().cloned().collect())),
                _ => Val::Missing,
            },
            Expr::Call { f, args, each } => crate::funcs::call(f, args, *each, ctx),
        }
    }
}

impl Matcher {
    pub(crate) fn test(&self, v: &Val<'_>) -> bool {
        match (self, v) {
            (_, Val::Missing) => false,
            (Matcher::Cmp(op, lit), v) => cmp_holds(*op, compare(v, lit)),
            (Matcher::Contains(f), Val::Bytes(b)) => f.find(b).is_some(),
            (Matcher::Regex(r), Val::Bytes(b)) => r.is_match(b),
            (Matcher::Wildcard(w), Val::Bytes(b)) => w.is_match(b),
            (Matcher::InBytes(set), Val::Bytes(b)) => set.binary_search_by(|e| (**e).cmp(&**b)).is_ok(),
            (Matcher::InInt(ranges), Val::Int(i)) => ranges.iter().any(|(a, b)| a <= i && i <= b),
            (Matcher::InIp(ranges), Val::Ip(ip)) => ranges.contains(*ip),
            (Matcher::InIpList(ranges), Val::Ip(ip)) => ranges.contains(*ip),
            _ => false,
        }
    }
}

fn compare(v: &Val<'_>, lit: &Value) -> Option<Ordering> {
    match (v, lit) {
        (Val::Bytes(a), Value::Bytes(b)) => Some((**a).cmp(b.as_slice())),
        (Val::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Val::Ip(a), Value::Ip(b)) => {
            let a = a.to_canonical();
            // Addresses of different families are simply unequal.
            Some(if a == *b { Ordering::Equal } else { a.cmp(b) })
        }
        _ => None,
    }
}
