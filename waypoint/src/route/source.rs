//! Matching on who sent the request. Envoy routes on the downstream's identity through
//! `RouteMatch.filter_state` matchers; weft-waypoint knows the client's verified SPIFFE
//! identity from HBONE and its workload from weftd, and offers them under these keys:
//!
//! - `io.istio.peer_principal`: the SPIFFE identity (`spiffe://TD/ns/NS/sa/SA`), the key
//!   Istio's own proxies use for the peer principal;
//! - `weft.source_namespace`: the client workload's namespace (VirtualService
//!   `sourceNamespace`);
//! - `weft.source_label.NAME`: the client workload's label NAME (`sourceLabels`).
//!
//! A key whose value is unknown does not match, as in Envoy when the filter state is absent.

use super::{
    RequestParts,
    error::{FieldError, FieldResult},
    matcher::StringMatch,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{FilterStateMatcher, filter_state_matcher};

pub const PEER_PRINCIPAL_KEY: &str = "io.istio.peer_principal";
pub const SOURCE_NAMESPACE_KEY: &str = "weft.source_namespace";
pub const SOURCE_LABEL_PREFIX: &str = "weft.source_label.";

#[derive(Debug, Clone)]
enum SourceKey {
    Principal,
    Namespace,
    Label(Box<str>),
}

#[derive(Debug, Clone)]
pub(crate) struct SourceMatch {
    key: SourceKey,
    value: StringMatch,
}

impl SourceMatch {
    pub(crate) fn compile(m: &FilterStateMatcher) -> FieldResult<SourceMatch> {
        let key = match m.key.as_str() {
            PEER_PRINCIPAL_KEY => SourceKey::Principal,
            SOURCE_NAMESPACE_KEY => SourceKey::Namespace,
            k if k.starts_with(SOURCE_LABEL_PREFIX) && k.len() > SOURCE_LABEL_PREFIX.len() => {
                SourceKey::Label(k[SOURCE_LABEL_PREFIX.len()..].into())
            }
            k => return Err(FieldError::unsupported(format!("key {k:?}"))),
        };
        let value = match &m.matcher {
            Some(filter_state_matcher::Matcher::StringMatch(s)) => {
                StringMatch::compile(s).map_err(|e| e.within("string_match"))?
            }
            Some(filter_state_matcher::Matcher::AddressMatch(_)) => {
                return Err(FieldError::unsupported("address_match"));
            }
            None => return Err(FieldError::invalid("matcher", "a matcher is required")),
        };
        Ok(SourceMatch { key, value })
    }

    pub(crate) fn matches(&self, req: &RequestParts<'_>) -> bool {
        let value = match &self.key {
            SourceKey::Principal => req.identity,
            SourceKey::Namespace => req.source_namespace,
            SourceKey::Label(name) => req.source_labels.and_then(|l| l.get(&**name)).map(String::as_str),
        };
        value.is_some_and(|v| self.value.matches(v.as_bytes()))
    }
}
