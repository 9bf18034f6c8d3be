//! Client-certificate fields as request headers named by the operator, per hostname (`client_certificate_headers`):
//! what NGINX's `proxy_set_header X-SSL-Client-Verify $ssl_client_verify`, HAProxy's `http-request set-header` and
//! Cloudflare's "Set dynamic" transform rules do, for origins that already read certificate details under names of
//! their own. Client-sent copies of those names, in any `_`/`-` spelling, are always removed first, from the header
//! section and from trailers. The fields that name the certificate's holder (subject, SANs, serial, fingerprints)
//! are sent only for a trusted certificate (verified, not revoked), as the RFC 9440 and XFCC styles are: under
//! `request` anyone can present a self-signed certificate naming anyone. The outcome fields
//! ([`portcullis_pki::OUTCOME_FIELDS`]: `verify_result`, `cert_verified`…) are always sent. A field without a value
//! (a DN when no certificate came) sends no header, as NGINX leaves out an empty one; a list (SANs) is joined with
//! `", "`; control characters become `?`.
//!
//! Not here: the fixed forwarding styles (`forward.rs`).

use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use portcullis_pki::{ClientAuthFacts, FactValue};

use crate::ProxyError;

/// A hostname's header names, each with the position of its field in [`ClientAuthFacts::fields`] and whether the
/// field names the holder (sent for a trusted certificate only).
#[derive(Debug, Clone, Default)]
pub struct FieldHeaders(Arc<[(HeaderName, usize, bool)]>);

impl FieldHeaders {
    /// From (header name, field name) pairs; a name that is not a header name or is reserved
    /// ([`portcullis_pki::reserved_header`]), or a field that is not a client-certificate field, is refused, naming
    /// it.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<FieldHeaders, ProxyError> {
        let facts = ClientAuthFacts::default();
        let names = facts.fields().map(|(name, _)| name);
        let mut out = Vec::new();
        for (header, field) in pairs {
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ProxyError::Config(format!("{header:?} is not a header name")))?;
            if let Some(why) = portcullis_pki::reserved_header(name.as_str()) {
                return Err(ProxyError::Config(format!("{header:?}: {why}")));
            }
            let index = names
                .iter()
                .position(|n| *n == field)
                .ok_or_else(|| ProxyError::Config(format!("{field:?} is not a client-certificate field")))?;
            out.push((name, index, !portcullis_pki::OUTCOME_FIELDS.contains(&field)));
        }
        Ok(FieldHeaders(out.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The header names, for trailers to be cleaned of.
    pub(crate) fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.0.iter().map(|(name, _, _)| name)
    }

    /// Removes client-sent copies of the names, then sets each from `facts`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, facts: &ClientAuthFacts) {
        if self.0.is_empty() {
            return;
        }
        crate::forward::remove_where(headers, |name| self.is_one(name));
        let fields = facts.fields();
        let trusted = facts.cert_verified && !facts.cert_revoked;
        for (name, index, identity) in self.0.iter() {
            if *identity && !trusted {
                continue;
            }
            let Some((_, value)) = fields.get(*index) else { continue };
            let text = match value {
                FactValue::Bool(b) => std::borrow::Cow::Borrowed(if *b { "true" } else { "false" }),
                FactValue::Str(s) => std::borrow::Cow::Borrowed(*s),
                FactValue::Array(items) => std::borrow::Cow::Owned(items.join(", ")),
            };
            if text.is_empty() {
                continue;
            }
            if let Some(value) = crate::forward::value(&text) {
                headers.insert(name.clone(), value);
            }
        }
    }

    /// Whether `name` (lower-case) is one of the names, in any `_`/`-` spelling.
    pub(crate) fn is_one(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|(n, _, _)| crate::forward::same_name(name, n.as_str()))
    }
}
