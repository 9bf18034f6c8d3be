//! The fields Portcullis offers to expressions, the per-request [`Context`] that holds their
//! values, and parsing of textual values (for the CLI and tests).
//!
//! Fields are identified by a dense [`FieldId`], so the hot path indexes a table instead of
//! hashing names. Unset fields read as their type's default: `false`, `0`, `""`, an empty array
//! or map, and `0.0.0.0` (the unspecified IPv4 address) for `ip.src`. This module does not know
//! how the proxy derives the values; it only stores them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::types::{Type, Value};

/// Dense index of a field in [`schema()`]; cheap to copy and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldId(pub(crate) u16);

impl FieldId {
    /// Position in [`schema()`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The field's definition.
    pub fn field(self) -> &'static Field {
        // Ids are only minted from the schema table, so the index is in range.
        &FIELDS[self.index()]
    }
}

/// The shapes of field types in the schema (a `Type` holds boxes and so cannot be in a static).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Int,
    Bytes,
    Ip,
    BytesArray,
    BytesArrayMap,
}

/// One field of the schema.
#[derive(Debug)]
pub struct Field {
    name: &'static str,
    kind: Kind,
    description: &'static str,
    id: u16,
}

impl Field {
    /// The name used in expressions, e.g. `http.host`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A one-line description.
    pub fn description(&self) -> &'static str {
        self.description
    }

    /// The field's type.
    pub fn ty(&self) -> Type {
        match self.kind {
            Kind::Bool => Type::Bool,
            Kind::Int => Type::Int,
            Kind::Bytes => Type::Bytes,
            Kind::Ip => Type::Ip,
            Kind::BytesArray => Type::array_of_bytes(),
            Kind::BytesArrayMap => Type::map_of_byte_arrays(),
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// The field's id.
    pub fn id(&self) -> FieldId {
        FieldId(self.id)
    }
}

macro_rules! schema {
    ($( $konst:ident = $name:literal : $kind:ident, $desc:literal; )*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[repr(u16)]
        enum Ordinal { $( $konst, )* }

        /// Ids of every field, as constants for the proxy (`fields::HTTP_HOST`).
        // Descriptions double as CLI text, where example URLs are plain text.
        #[allow(rustdoc::bare_urls)]
        pub mod fields {
            use super::{FieldId, Ordinal};
            $(
                #[doc = concat!("`", $name, "`: ", $desc)]
                pub const $konst: FieldId = FieldId(Ordinal::$konst as u16);
            )*
        }

        static FIELDS: &[Field] = &[
            $( Field { name: $name, kind: Kind::$kind, description: $desc, id: Ordinal::$konst as u16 }, )*
        ];
    };
}

schema! {
    HTTP_HOST = "http.host": Bytes, "Host name from the request's Host header or :authority (port removed)";
    HTTP_REQUEST_METHOD = "http.request.method": Bytes, "Request method, e.g. \"GET\"";
    HTTP_REQUEST_URI = "http.request.uri": Bytes, "Request path (URL-normalized) and query, e.g. \"/articles?page=2\"";
    HTTP_REQUEST_URI_PATH = "http.request.uri.path": Bytes, "Request path without the query, URL-normalized, e.g. \"/articles\"";
    HTTP_REQUEST_URI_QUERY = "http.request.uri.query": Bytes, "Query string without the leading \"?\"";
    HTTP_REQUEST_URI_ARGS = "http.request.uri.args": BytesArrayMap, "Query arguments: name to the list of its values";
    HTTP_REQUEST_URI_ARGS_NAMES = "http.request.uri.args.names": BytesArray, "Query argument names, in request order, not decoded";
    HTTP_REQUEST_URI_ARGS_VALUES = "http.request.uri.args.values": BytesArray, "Query argument values, in request order, not decoded";
    HTTP_REQUEST_FULL_URI = "http.request.full_uri": Bytes, "Full URI, e.g. \"https://example.com/articles?page=2\"";
    RAW_HTTP_REQUEST_URI = "raw.http.request.uri": Bytes, "Path and query as sent, before URL normalization";
    RAW_HTTP_REQUEST_URI_PATH = "raw.http.request.uri.path": Bytes, "Path as sent, before URL normalization";
    RAW_HTTP_REQUEST_URI_QUERY = "raw.http.request.uri.query": Bytes, "Query string as sent (URL normalization leaves it as is)";
    RAW_HTTP_REQUEST_URI_ARGS = "raw.http.request.uri.args": BytesArrayMap, "Query arguments as sent: name to the list of its values";
    RAW_HTTP_REQUEST_URI_ARGS_NAMES = "raw.http.request.uri.args.names": BytesArray, "Query argument names as sent, in request order";
    RAW_HTTP_REQUEST_URI_ARGS_VALUES = "raw.http.request.uri.args.values": BytesArray, "Query argument values as sent, in request order";
    RAW_HTTP_REQUEST_FULL_URI = "raw.http.request.full_uri": Bytes, "Full URI as sent, before URL normalization";
    HTTP_REQUEST_VERSION = "http.request.version": Bytes, "HTTP version, e.g. \"HTTP/1.1\", \"HTTP/2\"";
    HTTP_REQUEST_HEADERS = "http.request.headers": BytesArrayMap, "Request headers: lower-cased name to the list of its values";
    HTTP_REQUEST_HEADERS_NAMES = "http.request.headers.names": BytesArray, "Request header names as received, in request order";
    HTTP_REQUEST_HEADERS_VALUES = "http.request.headers.values": BytesArray, "Request header values as received, in request order";
    HTTP_USER_AGENT = "http.user_agent": Bytes, "User-Agent header";
    HTTP_COOKIE = "http.cookie": Bytes, "Cookie header";
    HTTP_REQUEST_COOKIES = "http.request.cookies": BytesArrayMap, "Cookies: name (percent-decoded) to the list of its values (as sent)";
    HTTP_REQUEST_TIMESTAMP_SEC = "http.request.timestamp.sec": Int, "When the request arrived, Unix seconds";
    HTTP_REQUEST_TIMESTAMP_MSEC = "http.request.timestamp.msec": Int, "The milliseconds part of the arrival time, 0 to 999";
    HTTP_REFERER = "http.referer": Bytes, "Referer header";
    IP_SRC = "ip.src": Ip, "Client IP address (0.0.0.0 when unset)";
    SSL = "ssl": Bool, "Whether the client connection uses TLS";
    CF_TLS_VERSION = "cf.tls_version": Bytes, "Negotiated TLS version, e.g. \"TLSv1.3\"";
    CF_TLS_CIPHER = "cf.tls_cipher": Bytes, "Negotiated cipher suite, e.g. \"AEAD-AES128-GCM-SHA256\"";
    CF_EDGE_SERVER_PORT = "cf.edge.server_port": Int, "Port the client connected to";
    CF_TLS_CLIENT_AUTH_CERT_PRESENTED = "cf.tls_client_auth.cert_presented": Bool, "A client certificate was presented, valid or not";
    CF_TLS_CLIENT_AUTH_CERT_VERIFIED = "cf.tls_client_auth.cert_verified": Bool, "The client certificate is valid (also true when valid but revoked)";
    CF_TLS_CLIENT_AUTH_CERT_REVOKED = "cf.tls_client_auth.cert_revoked": Bool, "The client certificate is valid but revoked";
    CF_TLS_CLIENT_AUTH_CERT_ISSUER_DN = "cf.tls_client_auth.cert_issuer_dn": Bytes, "Issuer DN, e.g. \"CN=Access Testing CA,O=Access Testing,C=US\"";
    CF_TLS_CLIENT_AUTH_CERT_SUBJECT_DN = "cf.tls_client_auth.cert_subject_dn": Bytes, "Subject DN, e.g. \"CN=James Royal,O=Access,C=US\"";
    CF_TLS_CLIENT_AUTH_CERT_ISSUER_DN_RFC2253 = "cf.tls_client_auth.cert_issuer_dn_rfc2253": Bytes, "Issuer DN in RFC 2253 form";
    CF_TLS_CLIENT_AUTH_CERT_SUBJECT_DN_RFC2253 = "cf.tls_client_auth.cert_subject_dn_rfc2253": Bytes, "Subject DN in RFC 2253 form";
    CF_TLS_CLIENT_AUTH_CERT_ISSUER_DN_LEGACY = "cf.tls_client_auth.cert_issuer_dn_legacy": Bytes, "Issuer DN, legacy OpenSSL one-line form (\"/C=US/O=…/CN=…\")";
    CF_TLS_CLIENT_AUTH_CERT_SUBJECT_DN_LEGACY = "cf.tls_client_auth.cert_subject_dn_legacy": Bytes, "Subject DN, legacy OpenSSL one-line form";
    CF_TLS_CLIENT_AUTH_CERT_SERIAL = "cf.tls_client_auth.cert_serial": Bytes, "Serial number, upper-case hex";
    CF_TLS_CLIENT_AUTH_CERT_ISSUER_SERIAL = "cf.tls_client_auth.cert_issuer_serial": Bytes, "Serial number of the direct issuer, upper-case hex";
    CF_TLS_CLIENT_AUTH_CERT_FINGERPRINT_SHA256 = "cf.tls_client_auth.cert_fingerprint_sha256": Bytes, "SHA-256 fingerprint of the certificate, lower-case hex";
    CF_TLS_CLIENT_AUTH_CERT_FINGERPRINT_SHA1 = "cf.tls_client_auth.cert_fingerprint_sha1": Bytes, "SHA-1 fingerprint of the certificate, lower-case hex";
    CF_TLS_CLIENT_AUTH_CERT_NOT_BEFORE = "cf.tls_client_auth.cert_not_before": Bytes, "Start of validity, e.g. \"Mar 21 13:35:00 2022 GMT\"";
    CF_TLS_CLIENT_AUTH_CERT_NOT_AFTER = "cf.tls_client_auth.cert_not_after": Bytes, "End of validity, e.g. \"Mar 21 13:35:00 2023 GMT\"";
    CF_TLS_CLIENT_AUTH_CERT_SKI = "cf.tls_client_auth.cert_ski": Bytes, "Subject Key Identifier, upper-case hex";
    CF_TLS_CLIENT_AUTH_CERT_ISSUER_SKI = "cf.tls_client_auth.cert_issuer_ski": Bytes, "Subject Key Identifier of the direct issuer, upper-case hex";
    CF_TLS_CLIENT_AUTH_CERT_RFC9440 = "cf.tls_client_auth.cert_rfc9440": Bytes, "Leaf as an RFC 9440 Client-Cert value; \"\" if none or over 10 KiB";
    CF_TLS_CLIENT_AUTH_CERT_RFC9440_TOO_LARGE = "cf.tls_client_auth.cert_rfc9440_too_large": Bool, "The encoded leaf is over 10 KiB";
    CF_TLS_CLIENT_AUTH_CERT_CHAIN_RFC9440 = "cf.tls_client_auth.cert_chain_rfc9440": Bytes, "Chain without the leaf as an RFC 9440 Client-Cert-Chain value; \"\" if none or over 16 KiB";
    CF_TLS_CLIENT_AUTH_CERT_CHAIN_RFC9440_TOO_LARGE = "cf.tls_client_auth.cert_chain_rfc9440_too_large": Bool, "The encoded chain is over 16 KiB";
    PORTCULLIS_TLS_CLIENT_AUTH_VERIFY_ERROR = "portcullis.tls_client_auth.verify_error": Bytes, "Why the certificate is not trusted, e.g. \"certificate has expired\", \"certificate revoked\" (\"\" when trusted or no certificate)";
    PORTCULLIS_TLS_CLIENT_AUTH_VERIFY_RESULT = "portcullis.tls_client_auth.verify_result": Bytes, "SUCCESS, NONE (no certificate) or FAILED:<reason>, as NGINX's $ssl_client_verify (FAILED:certificate revoked for a revoked one)";
    PORTCULLIS_TLS_CLIENT_AUTH_CERT_STATUS = "portcullis.tls_client_auth.cert_status": Bytes, "Verification outcome: ok, absent, untrusted, notyetvalid, expired or revoked";
    PORTCULLIS_TLS_CLIENT_AUTH_CERT_SAN_DNS = "portcullis.tls_client_auth.cert_san_dns": BytesArray, "DNS names in the certificate's subjectAltName";
    PORTCULLIS_TLS_CLIENT_AUTH_CERT_SAN_URI = "portcullis.tls_client_auth.cert_san_uri": BytesArray, "URIs in the certificate's subjectAltName (SPIFFE IDs)";
    PORTCULLIS_TLS_CLIENT_AUTH_CERT_SAN_EMAIL = "portcullis.tls_client_auth.cert_san_email": BytesArray, "E-mail addresses in the certificate's subjectAltName";
    PORTCULLIS_TLS_CLIENT_AUTH_CERT_SAN_IP = "portcullis.tls_client_auth.cert_san_ip": BytesArray, "IP addresses in the certificate's subjectAltName, as text (\"10.0.0.5\", \"2001:db8::1\")";
    PORTCULLIS_TLS_CLIENT_AUTH_CERT_SPKI_SHA256 = "portcullis.tls_client_auth.cert_spki_sha256": Bytes, "SHA-256 of the certificate's public key (DER SubjectPublicKeyInfo), lower-case hex: a pin that survives re-issuance with the same key";
    PORTCULLIS_GRPC_SERVICE = "portcullis.grpc.service": Bytes, "gRPC service, e.g. \"helloworld.Greeter\" (\"\" when not gRPC)";
    PORTCULLIS_GRPC_METHOD = "portcullis.grpc.method": Bytes, "gRPC method, e.g. \"SayHello\" (\"\" when not gRPC)";
}

/// Every field Portcullis offers, in a stable order (the order of [`FieldId`]s).
pub fn schema() -> &'static [Field] {
    FIELDS
}

/// Looks a field up by its expression name.
pub fn field_by_name(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

/// Set of fields, e.g. the fields a program reads; a fixed-size bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldSet([u64; 2]);

const _: () = assert!(
    (Ordinal::PORTCULLIS_GRPC_METHOD as usize) < FIELD_CAPACITY,
    "FieldSet and Context hold 128 fields; widen them"
);

impl FieldSet {
    /// The empty set.
    pub const fn new() -> Self {
        FieldSet([0; 2])
    }

    /// Adds a field.
    pub fn insert(&mut self, id: FieldId) {
        let i = id.index();
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: FieldId) -> bool {
        let i = id.index();
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Adds every field of `other`.
    pub fn extend(&mut self, other: &FieldSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The fields in id order.
    pub fn iter(&self) -> impl Iterator<Item = FieldId> + '_ {
        FIELDS.iter().map(Field::id).filter(|id| self.contains(*id))
    }

    /// The fields in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet([self.0[0] & other.0[0], self.0[1] & other.0[1]])
    }

    /// The fields in id order, found by their bits: a step per field in the set, not per field in the schema.
    pub fn members(&self) -> impl Iterator<Item = FieldId> {
        self.0.into_iter().enumerate().flat_map(|(word, mut bits)| {
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // A bit is only ever set from an id, so it names a field of the schema (at most 128 of them).
                u16::try_from(word * 64 + bit).ok().map(FieldId)
            })
        })
    }
}

/// Why a value could not be stored in a [`Context`] or parsed for a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// No field has that name.
    #[error("unknown field \"{0}\"")]
    UnknownField(String),
    /// The value's type is not the field's type.
    #[error("field {field} is {expected}, the value given is not")]
    WrongType {
        /// The field.
        field: &'static str,
        /// Its type.
        expected: Type,
    },
    /// The text is not a valid value of the field's type.
    #[error("invalid {expected} value for {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Its type.
        expected: Type,
        /// What is wrong.
        reason: String,
    },
}

/// Per-request field values, indexed by [`FieldId`]. Unset fields read as their documented
/// defaults. Reuse one per connection with [`Context::clear`] to keep its allocation.
///
/// Sparse: a request sets the few fields its rules read, so the values sit in a short vector
/// in the order they were set, and a 128-byte table maps each field to its position. A slot
/// per schema field had been a 2 KiB zero-filled allocation per request.
#[derive(Debug, Clone)]
pub struct Context {
    /// Position in `values` plus one, per field id; 0 when unset.
    slots: [u8; FIELD_CAPACITY],
    values: Vec<Value>,
}

/// Fields a [`Context`] (and a [`FieldSet`]) can hold.
const FIELD_CAPACITY: usize = 128;

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

impl Context {
    /// An empty context: every field unset.
    pub fn new() -> Self {
        Context {
            slots: [0; FIELD_CAPACITY],
            values: Vec::new(),
        }
    }

    /// Sets a field; fails when the value does not have the field's type (so evaluation never
    /// sees a mistyped value).
    pub fn set(&mut self, id: FieldId, value: impl Into<Value>) -> Result<(), ValueError> {
        let value = value.into();
        let field = id.field();
        if !value.has_type(&field.ty()) {
            return Err(ValueError::WrongType {
                field: field.name,
                expected: field.ty(),
            });
        }
        // In range: the schema has fewer than FIELD_CAPACITY fields (asserted at compile time),
        // so a context never holds more than 127 values and a position fits a u8.
        if let Some(slot) = self.slots.get_mut(id.index()) {
            match usize::from(*slot).checked_sub(1) {
                Some(at) => self.values[at] = value,
                None => {
                    self.values.push(value);
                    *slot = self.values.len() as u8;
                }
            }
        }
        Ok(())
    }

    /// Sets a field by name (slow path, for tools and tests).
    pub fn set_by_name(&mut self, name: &str, value: impl Into<Value>) -> Result<(), ValueError> {
        let field = field_by_name(name).ok_or_else(|| ValueError::UnknownField(name.to_owned()))?;
        self.set(field.id(), value)
    }

    /// The value set for a field, if any.
    pub fn get(&self, id: FieldId) -> Option<&Value> {
        let at = usize::from(*self.slots.get(id.index())?).checked_sub(1)?;
        self.values.get(at)
    }

    /// Unsets every field, keeping the allocation.
    pub fn clear(&mut self) {
        self.slots = [0; FIELD_CAPACITY];
        self.values.clear();
    }
}

/// Parses the textual form of a value for field `name`: `true`/`false`, decimal integers, IP
/// addresses, strings taken verbatim, and arrays and maps as JSON (`["a","b"]`,
/// `{"x-api-key":["k1"]}`; a map value may also be a single string). Header-map keys are
/// lower-cased, as the proxy does.
pub fn parse_field_value(name: &str, text: &str) -> Result<(FieldId, Value), ValueError> {
    let field = field_by_name(name).ok_or_else(|| ValueError::UnknownField(name.to_owned()))?;
    let ty = field.ty();
    let invalid = |reason: String| ValueError::Invalid {
        field: field.name,
        expected: ty.clone(),
        reason,
    };
    let mut value = parse_value(&ty, text).map_err(invalid)?;
    if field.id() == fields::HTTP_REQUEST_HEADERS
        && let Value::Map(map) = &mut value
    {
        *map = std::mem::take(map)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
    }
    Ok((field.id(), value))
}

/// Parses `text` as a value of type `ty` (see [`parse_field_value`]).
pub fn parse_value(ty: &Type, text: &str) -> Result<Value, String> {
    match ty {
        Type::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, found \"{text}\"")),
        },
        Type::Int => text
            .trim()
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|e| format!("\"{text}\" is not an integer ({e})")),
        Type::Bytes => Ok(Value::Bytes(text.as_bytes().to_vec())),
        Type::Ip => text
            .trim()
            .parse::<IpAddr>()
            .map(Value::Ip)
            .map_err(|_| format!("\"{text}\" is not an IP address")),
        Type::Array(_) | Type::Map(_) => {
            let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
            from_json(ty, &json)
        }
    }
}

fn from_json(ty: &Type, json: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    match (ty, json) {
        (Type::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (Type::Int, J::Number(n)) => n
            .as_i64()
            .map(Value::Int)
            .ok_or_else(|| format!("{n} is not a 64-bit integer")),
        (Type::Bytes, J::String(s)) => Ok(Value::Bytes(s.as_bytes().to_vec())),
        (Type::Ip, J::String(s)) => s
            .parse::<IpAddr>()
            .map(Value::Ip)
            .map_err(|_| format!("\"{s}\" is not an IP address")),
        (Type::Array(elem), J::Array(items)) => items
            .iter()
            .map(|item| from_json(elem, item))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Type::Map(elem), J::Object(obj)) => {
            let mut map = BTreeMap::new();
            for (k, v) in obj {
                let value = match (elem.as_ref(), v) {
                    // A lone string for a map of arrays is the common one-value case.
                    (Type::Array(inner), J::String(_)) => Value::Array(vec![from_json(inner, v)?]),
                    _ => from_json(elem, v)?,
                };
                map.insert(k.as_bytes().to_vec(), value);
            }
            Ok(Value::Map(map))
        }
        (_, other) => Err(format!("expected {ty}, found JSON {other}")),
    }
}

#[cfg(test)]
mod field_set_tests {
    use super::*;

    #[test]
    fn members_walk_the_bits_in_id_order() {
        let all: Vec<FieldId> = FIELDS.iter().map(Field::id).collect();
        let mut set = FieldSet::new();
        assert_eq!(set.members().count(), 0);
        // Every third field, across both words of the set.
        for id in all.iter().step_by(3) {
            set.insert(*id);
        }
        assert_eq!(set.members().collect::<Vec<_>>(), set.iter().collect::<Vec<_>>());
        let mut first_and_last = FieldSet::new();
        first_and_last.insert(all[0]);
        first_and_last.insert(*all.last().expect("fields"));
        assert_eq!(
            set.intersection(&first_and_last).members().collect::<Vec<_>>(),
            all.iter()
                .enumerate()
                .filter(|(i, _)| *i == 0 || (*i == all.len() - 1 && i % 3 == 0))
                .map(|(_, id)| *id)
                .collect::<Vec<_>>()
        );
    }
}
