//! Matching on who sent the request. weft-waypoint knows the client's verified SPIFFE
//! identity from HBONE and its workload (labels, namespace) from weftd.
//!
//! weftd writes a VirtualService match's `sourceLabels` / `sourceNamespace` as route
//! metadata `filter_metadata["weft.source"]` = `{labels: {k: v, …}, namespace: "ns"}`
//! (Envoy ignores it; the route is taken only for a client whose workload has all those
//! labels and that namespace), plus, where stock Istio would leave the match out, a header
//! matcher on the pseudo-header `:weft-source` that no request can carry — so a stock Envoy
//! never takes the route, while weft-waypoint drops that matcher and decides by the
//! metadata (controlplane/src/translate/envoy/route_match.rs, `SourceMatch`).
//!
//! `RouteMatch.filter_state` matchers are understood under these keys too:
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
use envoy_types::pb::{
    envoy::{
        config::core::v3::Metadata,
        r#type::matcher::v3::{FilterStateMatcher, filter_state_matcher},
    },
    google::protobuf::{Struct, value::Kind},
};

pub const PEER_PRINCIPAL_KEY: &str = "io.istio.peer_principal";
/// Route metadata with a match's source conditions.
pub const SOURCE_METADATA: &str = "weft.source";
/// The header matcher that only stock Envoy evaluates (see the module doc).
pub const SOURCE_HEADER: &str = ":weft-source";
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

/// A route's source conditions from its `weft.source` metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceConditions {
    /// Labels the client's workload must all have.
    pub labels: Box<[(Box<str>, Box<str>)]>,
    pub namespace: Option<Box<str>>,
}

impl SourceConditions {
    /// The conditions in a route's metadata, if it has any.
    pub(crate) fn compile(metadata: Option<&Metadata>) -> FieldResult<Option<SourceConditions>> {
        let Some(source) = metadata.and_then(|m| m.filter_metadata.get(SOURCE_METADATA)) else {
            return Ok(None);
        };
        let field = format!("metadata.filter_metadata[{SOURCE_METADATA:?}]");
        let string = |v: &envoy_types::pb::google::protobuf::Value, what: &str| match &v.kind {
            Some(Kind::StringValue(s)) => Ok(Box::<str>::from(s.as_str())),
            _ => Err(FieldError::invalid(format!("{field}.{what}"), "must be a string")),
        };
        let mut out = SourceConditions::default();
        for (key, value) in &source.fields {
            match (key.as_str(), &value.kind) {
                ("namespace", _) => out.namespace = Some(string(value, "namespace")?),
                ("labels", Some(Kind::StructValue(Struct { fields }))) => {
                    let mut labels: Vec<(Box<str>, Box<str>)> = fields
                        .iter()
                        .map(|(k, v)| Ok((Box::<str>::from(k.as_str()), string(v, &format!("labels.{k}"))?)))
                        .collect::<FieldResult<_>>()?;
                    labels.sort();
                    out.labels = labels.into();
                }
                ("labels", _) => {
                    return Err(FieldError::invalid(format!("{field}.labels"), "must be a struct"));
                }
                (other, _) => return Err(FieldError::unsupported(format!("{field}.{other}"))),
            }
        }
        Ok(Some(out))
    }

    /// Whether the request's client satisfies the conditions; an unknown workload
    /// satisfies none.
    pub fn matches(&self, req: &RequestParts<'_>) -> bool {
        self.namespace.as_deref().is_none_or(|ns| req.source_namespace == Some(ns))
            && (self.labels.is_empty()
                || req.source_labels.is_some_and(|have| {
                    self.labels.iter().all(|(k, v)| have.get(&**k).is_some_and(|hv| hv.as_str() == &**v))
                }))
    }
}
