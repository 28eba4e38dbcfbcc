//! A VirtualService `HTTPMatchRequest` → Envoy `RouteMatch`, as Istio's
//! `TranslateRouteMatch` (pilot/pkg/networking/core/route/route.go) builds it, and the
//! source conditions (`sourceLabels`, `sourceNamespace`, `gateways`) Istio evaluates
//! against the proxy instead of the request (`sourceMatchHTTP`, and the waypoint's
//! `waypointInboundRoute`, which leaves out every match with `sourceLabels`).

use crate::config::kinds::virtual_service::{HttpMatchRequest, MESH_GATEWAY, StringMatch};
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::Metadata,
            route::v3::{
                HeaderMatcher, QueryParameterMatcher, RouteMatch, header_matcher, query_parameter_matcher,
                route_match,
            },
        },
        r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher},
    },
    google::protobuf::{BoolValue, Struct, Value, value},
};

/// Route metadata key under which Weft records a match's source conditions (see
/// [`SourceMatch`]).
pub const SOURCE_METADATA: &str = "weft.source";
/// The pseudo-header matcher that keeps a stock Envoy from ever taking a route whose match
/// stock Istio would have left out (see [`SourceMatch`]).
pub const SOURCE_HEADER: &str = ":weft-source";

/// `StringMatch` → Envoy `StringMatcher` (Istio's `util.ConvertToEnvoyMatch`); `None` for
/// an empty match.
pub fn string_matcher(m: &StringMatch, ignore_case: bool) -> Option<StringMatcher> {
    use string_matcher::MatchPattern;
    let pattern = if let Some(e) = &m.exact {
        MatchPattern::Exact(e.clone())
    } else if let Some(p) = &m.prefix {
        MatchPattern::Prefix(p.clone())
    } else if let Some(r) = &m.regex {
        MatchPattern::SafeRegex(RegexMatcher { regex: r.clone(), ..Default::default() })
    } else {
        return None;
    };
    Some(StringMatcher { match_pattern: Some(pattern), ignore_case })
}

/// Istio's `canBeConvertedToPresentMatch`: an empty match (`{}`) and the regex `*` (not an
/// RE2 expression, kept for compatibility) mean "present".
fn present(m: &StringMatch) -> bool {
    (m.exact.is_none() && m.prefix.is_none() && m.regex.is_none()) || m.regex.as_deref() == Some("*")
}

/// Istio's `translateHeaderMatch`.
pub fn header_matcher(name: &str, m: &StringMatch) -> HeaderMatcher {
    use header_matcher::HeaderMatchSpecifier;
    let header_match_specifier = if present(m) {
        Some(HeaderMatchSpecifier::PresentMatch(true))
    } else {
        string_matcher(m, false).map(HeaderMatchSpecifier::StringMatch)
    };
    HeaderMatcher { name: name.to_owned(), header_match_specifier, ..Default::default() }
}

fn query_matcher(name: &str, m: &StringMatch) -> QueryParameterMatcher {
    use query_parameter_matcher::QueryParameterMatchSpecifier;
    let query_parameter_match_specifier = if present(m) {
        Some(QueryParameterMatchSpecifier::PresentMatch(true))
    } else {
        string_matcher(m, false).map(QueryParameterMatchSpecifier::StringMatch)
    };
    QueryParameterMatcher { name: name.to_owned(), query_parameter_match_specifier }
}

/// Istio's `TranslateRouteMatch`. `gateway_semantics` is set for routes converted from a
/// Gateway API HTTPRoute: their prefixes match whole path segments.
pub fn route_match(m: Option<&HttpMatchRequest>, gateway_semantics: bool) -> RouteMatch {
    use route_match::PathSpecifier;
    let mut out =
        RouteMatch { path_specifier: Some(PathSpecifier::Prefix("/".into())), ..Default::default() };
    let Some(m) = m else { return out };
    // Header and withoutHeaders first, sorted by name as Istio sorts them (its maps have no
    // order); then the pseudo-headers, appended unsorted, as Istio does.
    for (name, sm) in &m.headers {
        out.headers.push(header_matcher(name, sm));
    }
    for (name, sm) in &m.without_headers {
        let mut h = header_matcher(name, sm);
        h.invert_match = true;
        // A request without the header must match `withoutHeaders: {h: {exact: v}}`; Envoy
        // forbids treat_missing_header_as_empty next to present_match.
        h.treat_missing_header_as_empty = !present(sm);
        out.headers.push(h);
    }
    out.headers.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(uri) = &m.uri {
        if let Some(e) = &uri.exact {
            out.path_specifier = Some(PathSpecifier::Path(e.clone()));
        } else if let Some(p) = &uri.prefix {
            out.path_specifier = Some(if gateway_semantics && p != "/" {
                PathSpecifier::PathSeparatedPrefix(p.trim_end_matches('/').to_owned())
            } else {
                PathSpecifier::Prefix(p.clone())
            });
        } else if let Some(r) = &uri.regex {
            out.path_specifier =
                Some(PathSpecifier::SafeRegex(RegexMatcher { regex: r.clone(), ..Default::default() }));
        }
    }
    out.case_sensitive = Some(BoolValue { value: !m.ignore_uri_case });
    for (pseudo, sm) in [(":method", &m.method), (":authority", &m.authority), (":scheme", &m.scheme)] {
        if let Some(sm) = sm {
            out.headers.push(header_matcher(pseudo, sm));
        }
    }
    out.query_parameters = m.query_params.iter().map(|(name, sm)| query_matcher(name, sm)).collect();
    out
}

/// Istio's `IsCatchAllRoute`: routes after it in the same VirtualService are never reached.
pub fn is_catch_all(m: &RouteMatch) -> bool {
    use route_match::PathSpecifier;
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) | Some(PathSpecifier::PathSeparatedPrefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(r)) => r.regex == ".*",
        _ => false,
    };
    path && m.headers.is_empty() && m.query_parameters.is_empty() && m.dynamic_metadata.is_empty()
}

/// What a match's source conditions make of its route on a waypoint.
///
/// Stock Istio evaluates `sourceLabels`, `sourceNamespace` and `gateways` against the
/// *proxy* when it builds routes (`sourceMatchHTTP`), and a waypoint leaves out every match
/// with `sourceLabels` (istio/istio#51565). So on a stock waypoint: a match naming gateways
/// but not `mesh` is left out; one with `sourceLabels` is left out; one whose
/// `sourceNamespace` is not the waypoint's namespace is left out; one whose
/// `sourceNamespace` is the waypoint's matches every client.
///
/// Weft's waypoint knows the client's workload from its HBONE identity and honours the
/// conditions as documented. Both read the same route:
/// - the route carries `metadata.filter_metadata["weft.source"]` =
///   `{labels: {k: v, ...}, namespace: "ns"}` — Envoy ignores it, Weft's waypoint takes
///   the route only for a client whose workload has those labels and namespace;
/// - where stock Istio would leave the match out, the route also requires the header
///   `:weft-source` to be present. No request carries it (HTTP/1.1 does not allow `:` in a
///   header name and HTTP/2 rejects unknown pseudo-headers), so a stock Envoy never takes
///   the route, as if it were not there; Weft's waypoint ignores this matcher and decides
///   by the metadata.
#[derive(Debug, PartialEq)]
pub enum SourceMatch {
    /// No source condition: the route as it is.
    Any,
    /// Not for this proxy at all (gateways without `mesh`): left out, as Istio does.
    Skip,
    /// Source conditions, with whether a stock waypoint would leave the route out.
    Conditions { metadata: Metadata, stock_drops: bool },
}

pub fn source_match(m: Option<&HttpMatchRequest>, proxy_namespace: &str) -> SourceMatch {
    let Some(m) = m else { return SourceMatch::Any };
    if !m.gateways.is_empty() {
        // Istio: a match naming gateways applies to the gateways it names and ignores the
        // source conditions.
        return if m.gateways.iter().any(|g| g == MESH_GATEWAY) {
            SourceMatch::Any
        } else {
            SourceMatch::Skip
        };
    }
    if m.source_labels.is_empty() && m.source_namespace.is_none() {
        return SourceMatch::Any;
    }
    let stock_drops =
        !m.source_labels.is_empty() || m.source_namespace.as_deref().is_some_and(|ns| ns != proxy_namespace);
    let string = |s: &str| Value { kind: Some(value::Kind::StringValue(s.to_owned())) };
    let mut fields = std::collections::BTreeMap::new();
    if !m.source_labels.is_empty() {
        let labels = m.source_labels.iter().map(|(k, v)| (k.clone(), string(v))).collect();
        fields.insert(
            "labels".to_owned(),
            Value { kind: Some(value::Kind::StructValue(Struct { fields: labels })) },
        );
    }
    if let Some(ns) = &m.source_namespace {
        fields.insert("namespace".to_owned(), string(ns));
    }
    let metadata = Metadata {
        filter_metadata: [(SOURCE_METADATA.to_owned(), Struct { fields: fields.into_iter().collect() })]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    SourceMatch::Conditions { metadata, stock_drops }
}

/// The matcher a stock Envoy can never satisfy (see [`SourceMatch`]).
pub fn never_in_stock_envoy() -> HeaderMatcher {
    HeaderMatcher {
        name: SOURCE_HEADER.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sm(exact: Option<&str>, regex: Option<&str>) -> StringMatch {
        StringMatch { exact: exact.map(Into::into), regex: regex.map(Into::into), prefix: None }
    }

    #[test]
    fn empty_string_match_is_presence_and_without_headers_is_inverted() {
        let m = HttpMatchRequest {
            headers: BTreeMap::from([("x-a".into(), sm(None, None)), ("x-b".into(), sm(None, Some("*")))]),
            without_headers: BTreeMap::from([
                ("x-c".into(), sm(Some("v"), None)),
                ("x-d".into(), sm(None, None)),
            ]),
            ..Default::default()
        };
        let out = route_match(Some(&m), false);
        let by = |n: &str| out.headers.iter().find(|h| h.name == n).unwrap().clone();
        use header_matcher::HeaderMatchSpecifier::{PresentMatch, StringMatch as Sm};
        assert_eq!(by("x-a").header_match_specifier, Some(PresentMatch(true)));
        assert_eq!(by("x-b").header_match_specifier, Some(PresentMatch(true)));
        let c = by("x-c");
        assert!(c.invert_match && c.treat_missing_header_as_empty);
        assert!(matches!(c.header_match_specifier, Some(Sm(_))));
        let d = by("x-d");
        assert!(d.invert_match && !d.treat_missing_header_as_empty);
        assert_eq!(d.header_match_specifier, Some(PresentMatch(true)));
        assert_eq!(out.case_sensitive, Some(BoolValue { value: true }));
        assert!(!is_catch_all(&out));
    }

    #[test]
    fn ignore_uri_case_and_gateway_prefixes() {
        let m = HttpMatchRequest {
            uri: Some(StringMatch { prefix: Some("/api/".into()), ..Default::default() }),
            ignore_uri_case: true,
            ..Default::default()
        };
        let out = route_match(Some(&m), false);
        assert_eq!(out.case_sensitive, Some(BoolValue { value: false }));
        assert_eq!(out.path_specifier, Some(route_match::PathSpecifier::Prefix("/api/".into())));
        let out = route_match(Some(&m), true);
        assert_eq!(out.path_specifier, Some(route_match::PathSpecifier::PathSeparatedPrefix("/api".into())));
        assert!(is_catch_all(&route_match(None, false)));
    }

    #[test]
    fn source_conditions_as_a_stock_waypoint_and_weft_read_them() {
        let labels = HttpMatchRequest {
            source_labels: BTreeMap::from([("app".into(), "productpage".into())]),
            ..Default::default()
        };
        assert!(matches!(
            source_match(Some(&labels), "bookinfo"),
            SourceMatch::Conditions { stock_drops: true, .. }
        ));
        let same_ns = HttpMatchRequest { source_namespace: Some("bookinfo".into()), ..Default::default() };
        assert!(matches!(
            source_match(Some(&same_ns), "bookinfo"),
            SourceMatch::Conditions { stock_drops: false, .. }
        ));
        assert!(matches!(
            source_match(Some(&same_ns), "other"),
            SourceMatch::Conditions { stock_drops: true, .. }
        ));
        let gw = HttpMatchRequest { gateways: vec!["ns/ingress".into()], ..Default::default() };
        assert_eq!(source_match(Some(&gw), "bookinfo"), SourceMatch::Skip);
        let mesh = HttpMatchRequest { gateways: vec!["mesh".into()], ..labels.clone() };
        assert_eq!(source_match(Some(&mesh), "bookinfo"), SourceMatch::Any);
    }
}
