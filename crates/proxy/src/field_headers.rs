//! Client-certificate fields as request headers named by the operator, per hostname (`client_certificate_headers`):
//! what NGINX's `proxy_set_header X-SSL-Client-Verify $ssl_client_verify`, HAProxy's `http-request set-header` and
//! Cloudflare's "Set dynamic" transform rules do, for origins that already read certificate details under names of
//! their own. Client-sent copies of those names, in any `_`/`-` spelling, are always removed first, from the header
//! section and from trailers. A field without a value (a DN when no certificate came) sends no header, as NGINX
//! leaves out an empty one; a list (SANs) is joined with `", "`; control characters become `?`.
//!
//! Not here: which names an operator may choose (the admin API refuses framing, hop-by-hop, routing and
//! authentication fields and the proxy's own), the fixed forwarding styles (`forward.rs`).

use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use portcullis_pki::{ClientAuthFacts, FactValue};

use crate::ProxyError;

/// A hostname's header names, each with the position of its field in [`ClientAuthFacts::fields`].
#[derive(Debug, Clone, Default)]
pub struct FieldHeaders(Arc<[(HeaderName, usize)]>);

impl FieldHeaders {
    /// From (header name, field name) pairs; a name that is not a header name or a field that is not a client
    /// certificate field is refused, naming it.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<FieldHeaders, ProxyError> {
        let facts = ClientAuthFacts::default();
        let names = facts.fields().map(|(name, _)| name);
        let mut out = Vec::new();
        for (header, field) in pairs {
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ProxyError::Config(format!("{header:?} is not a header name")))?;
            let index = names
                .iter()
                .position(|n| *n == field)
                .ok_or_else(|| ProxyError::Config(format!("{field:?} is not a client-certificate field")))?;
            out.push((name, index));
        }
        Ok(FieldHeaders(out.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The header names, for trailers to be cleaned of.
    pub(crate) fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.0.iter().map(|(name, _)| name)
    }

    /// Removes client-sent copies of the names, then sets each from `facts`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, facts: &ClientAuthFacts) {
        if self.0.is_empty() {
            return;
        }
        crate::forward::remove_where(headers, |name| self.is_one(name));
        let fields = facts.fields();
        for (name, index) in self.0.iter() {
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
        self.0.iter().any(|(n, _)| crate::forward::same_name(name, n.as_str()))
    }
}
