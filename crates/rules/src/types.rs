//! The language's types and the owned values the proxy puts into an evaluation [`Context`].
//!
//! Strings are byte strings (`Vec<u8>`), never required to be UTF-8, as in Cloudflare's engine.
//! This module does not evaluate anything; see [`crate::Program`].
//!
//! [`Context`]: crate::Context

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// The type of a field, literal or intermediate value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Type {
    /// `true` or `false`.
    Bool,
    /// A signed 64-bit integer.
    Int,
    /// A byte string (Cloudflare's "String" and "Bytes").
    Bytes,
    /// An IPv4 or IPv6 address.
    Ip,
    /// An ordered list of values of one type.
    Array(Box<Type>),
    /// String keys to values of one type.
    Map(Box<Type>),
}

impl Type {
    /// `Array<String>`, the most common array type.
    pub fn array_of_bytes() -> Type {
        Type::Array(Box::new(Type::Bytes))
    }

    /// `Map<Array<String>>`, the type of headers and query arguments.
    pub fn map_of_byte_arrays() -> Type {
        Type::Map(Box::new(Type::array_of_bytes()))
    }

    /// The value an unset field of this type reads as.
    pub fn default_value(&self) -> Value {
        match self {
            Type::Bool => Value::Bool(false),
            Type::Int => Value::Int(0),
            Type::Bytes => Value::Bytes(Vec::new()),
            Type::Ip => Value::Ip(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            Type::Array(_) => Value::Array(Vec::new()),
            Type::Map(_) => Value::Map(BTreeMap::new()),
        }
    }
}

/// Cloudflare's names, so messages read like the field reference.
impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Bool => f.write_str("Boolean"),
            Type::Int => f.write_str("Integer"),
            Type::Bytes => f.write_str("String"),
            Type::Ip => f.write_str("IP address"),
            Type::Array(t) => write!(f, "Array<{t}>"),
            Type::Map(t) => write!(f, "Map<{t}>"),
        }
    }
}

/// A map value: byte-string keys (sorted, so lookups need no hashing) to values.
pub type ValueMap = BTreeMap<Vec<u8>, Value>;

/// An owned value of some [`Type`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A Boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A byte string.
    Bytes(Vec<u8>),
    /// An IP address.
    Ip(IpAddr),
    /// An array; the element type comes from the field's declared type.
    Array(Vec<Value>),
    /// A map; the value type comes from the field's declared type.
    Map(ValueMap),
}

impl Value {
    /// Whether this value can stand for a value of type `ty` (recursively for arrays and maps).
    pub fn has_type(&self, ty: &Type) -> bool {
        match (self, ty) {
            (Value::Bool(_), Type::Bool)
            | (Value::Int(_), Type::Int)
            | (Value::Bytes(_), Type::Bytes)
            | (Value::Ip(_), Type::Ip) => true,
            (Value::Array(items), Type::Array(elem)) => items.iter().all(|v| v.has_type(elem)),
            (Value::Map(map), Type::Map(elem)) => map.values().all(|v| v.has_type(elem)),
            _ => false,
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Bytes(v.as_bytes().to_vec())
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

impl From<IpAddr> for Value {
    fn from(v: IpAddr) -> Self {
        Value::Ip(v)
    }
}
