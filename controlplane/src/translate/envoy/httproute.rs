//! Gateway API HTTPRoute (attached to a Service, the GAMMA way) → Envoy routes, with the
//! same Istio defaults as VirtualService routes (no timeout unless one is set).

use super::{
    cluster_name,
    route::{default_retry, pb_duration},
};
use crate::config::kinds::gateway_api::{
    HttpHeaderFilter, HttpPathModifier, HttpRoute, HttpRouteFilter, HttpRouteFilterType, HttpRouteMatch,
    PathMatchType, PathModifierType, ValueMatchType,
};
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{HeaderValue, HeaderValueOption, RuntimeFractionalPercent, header_value_option},
            route::v3::{
                HeaderMatcher, QueryParameterMatcher, RedirectAction, Route, RouteAction, RouteMatch,
                WeightedCluster, header_matcher, query_parameter_matcher, redirect_action, route,
                route_action, route_match, weighted_cluster,
            },
        },
        r#type::{
            matcher::v3::{RegexMatcher, StringMatcher, string_matcher},
            v3::{FractionalPercent, fractional_percent::DenominatorType},
        },
    },
    google::protobuf::UInt32Value,
};
use std::time::Duration;

/// Whether the route is attached to the service `namespace/name` (parentRef of kind
/// Service in the core group; a parentRef without namespace means the route's own).
pub fn attached_to(route: &HttpRoute, namespace: &str, name: &str) -> bool {
    route.spec.parent_refs.iter().any(|p| {
        p.kind.as_deref() == Some("Service")
            && p.group.as_deref().unwrap_or("").is_empty()
            && p.name == name
            && p.namespace.as_deref().unwrap_or(&route.metadata.namespace) == namespace
    })
}

fn string(exact: bool, value: &str) -> StringMatcher {
    use string_matcher::MatchPattern;
    let pattern = if exact {
        MatchPattern::Exact(value.to_owned())
    } else {
        MatchPattern::SafeRegex(RegexMatcher { regex: value.to_owned(), ..Default::default() })
    };
    StringMatcher { match_pattern: Some(pattern), ignore_case: false }
}

fn route_match(m: Option<&HttpRouteMatch>) -> RouteMatch {
    use route_match::PathSpecifier;
    let Some(m) = m else {
        return RouteMatch { path_specifier: Some(PathSpecifier::Prefix("/".into())), ..Default::default() };
    };
    let path = match &m.path {
        None => PathSpecifier::Prefix("/".into()),
        Some(p) => match p.type_ {
            PathMatchType::Exact => PathSpecifier::Path(p.value.clone()),
            // Gateway API prefixes match whole path elements: `/foo` matches `/foo/bar`,
            // not `/foobar`.
            PathMatchType::PathPrefix if p.value == "/" => PathSpecifier::Prefix("/".into()),
            PathMatchType::PathPrefix => {
                PathSpecifier::PathSeparatedPrefix(p.value.trim_end_matches('/').to_owned())
            }
            PathMatchType::RegularExpression => {
                PathSpecifier::SafeRegex(RegexMatcher { regex: p.value.clone(), ..Default::default() })
            }
        },
    };
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|h| HeaderMatcher {
            name: h.name.clone(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(string(
                matches!(h.type_, ValueMatchType::Exact),
                &h.value,
            ))),
            ..Default::default()
        })
        .collect();
    if let Some(method) = &m.method {
        let name = format!("{method:?}").to_uppercase();
        headers.push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(string(
                true, &name,
            ))),
            ..Default::default()
        });
    }
    let query_parameters = m
        .query_params
        .iter()
        .map(|q| QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string(
                    matches!(q.type_, ValueMatchType::Exact),
                    &q.value,
                )),
            ),
        })
        .collect();
    RouteMatch { path_specifier: Some(path), headers, query_parameters, ..Default::default() }
}

fn header_ops(f: &HttpHeaderFilter) -> (Vec<HeaderValueOption>, Vec<String>) {
    use header_value_option::HeaderAppendAction::{AppendIfExistsOrAdd, OverwriteIfExistsOrAdd};
    let option =
        |name: &str, value: &str, action: header_value_option::HeaderAppendAction| HeaderValueOption {
            header: Some(HeaderValue { key: name.to_owned(), value: value.to_owned(), ..Default::default() }),
            append_action: action as i32,
            ..Default::default()
        };
    let mut add: Vec<HeaderValueOption> =
        f.set.iter().map(|h| option(&h.name, &h.value, OverwriteIfExistsOrAdd)).collect();
    add.extend(f.add.iter().map(|h| option(&h.name, &h.value, AppendIfExistsOrAdd)));
    (add, f.remove.clone())
}

fn filter(filters: &[HttpRouteFilter], kind: HttpRouteFilterType) -> Option<&HttpRouteFilter> {
    filters.iter().find(|f| f.type_ == kind)
}

fn backend_host(name: &str, namespace: Option<&str>, route_ns: &str, suffix: &str) -> String {
    format!("{name}.{}.svc.{suffix}", namespace.unwrap_or(route_ns))
}

/// Envoy routes for every rule × match of `route`, in order.
pub fn routes(route: &HttpRoute, default_port: u32, suffix: &str) -> Vec<Route> {
    let ns = route.metadata.namespace.as_str();
    let mut out = Vec::new();
    for rule in &route.spec.rules {
        let action = if let Some(r) = filter(&rule.filters, HttpRouteFilterType::RequestRedirect)
            .and_then(|f| f.request_redirect.as_ref())
        {
            route::Action::Redirect(RedirectAction {
                host_redirect: r.hostname.clone().unwrap_or_default(),
                port_redirect: r.port.unwrap_or(0),
                scheme_rewrite_specifier: r
                    .scheme
                    .clone()
                    .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
                path_rewrite_specifier: r.path.as_ref().and_then(|p: &HttpPathModifier| match p.type_ {
                    PathModifierType::ReplaceFullPath => {
                        p.replace_full_path.clone().map(redirect_action::PathRewriteSpecifier::PathRedirect)
                    }
                    PathModifierType::ReplacePrefixMatch => p
                        .replace_prefix_match
                        .clone()
                        .map(redirect_action::PathRewriteSpecifier::PrefixRewrite),
                }),
                response_code: match r.status_code.unwrap_or(302) {
                    301 => redirect_action::RedirectResponseCode::MovedPermanently,
                    303 => redirect_action::RedirectResponseCode::SeeOther,
                    307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
                    308 => redirect_action::RedirectResponseCode::PermanentRedirect,
                    _ => redirect_action::RedirectResponseCode::Found,
                } as i32,
                ..Default::default()
            })
        } else {
            let clusters: Vec<weighted_cluster::ClusterWeight> = rule
                .backend_refs
                .iter()
                .filter(|b| b.is_service())
                .map(|b| weighted_cluster::ClusterWeight {
                    name: cluster_name(
                        b.port.unwrap_or(default_port),
                        "",
                        &backend_host(&b.name, b.namespace.as_deref(), ns, suffix),
                    ),
                    weight: Some(UInt32Value { value: b.weight.max(0) as u32 }),
                    ..Default::default()
                })
                .collect();
            let rewrite =
                filter(&rule.filters, HttpRouteFilterType::UrlRewrite).and_then(|f| f.url_rewrite.as_ref());
            let mirrors = rule
                .filters
                .iter()
                .filter_map(|f| f.request_mirror.as_ref())
                .map(|m| route_action::RequestMirrorPolicy {
                    cluster: cluster_name(
                        m.backend_ref.port.unwrap_or(default_port),
                        "",
                        &backend_host(&m.backend_ref.name, m.backend_ref.namespace.as_deref(), ns, suffix),
                    ),
                    runtime_fraction: Some(RuntimeFractionalPercent {
                        default_value: Some(FractionalPercent {
                            numerator: m.fraction.as_ref().map_or(m.percent.unwrap_or(100) * 10_000, |f| {
                                (u64::from(f.numerator) * 1_000_000 / u64::from(f.denominator.max(1))) as u32
                            }),
                            denominator: DenominatorType::Million as i32,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect();
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters,
                    ..Default::default()
                })),
                timeout: Some(pb_duration(
                    rule.timeouts.as_ref().and_then(|t| t.request.as_ref()).map_or(Duration::ZERO, |d| d.0),
                )),
                retry_policy: Some(default_retry()),
                request_mirror_policies: mirrors,
                host_rewrite_specifier: rewrite
                    .and_then(|r| r.hostname.clone())
                    .map(route_action::HostRewriteSpecifier::HostRewriteLiteral),
                prefix_rewrite: rewrite
                    .and_then(|r| r.path.as_ref())
                    .and_then(|p| p.replace_prefix_match.clone())
                    .unwrap_or_default(),
                ..Default::default()
            })
        };
        let (request_headers_to_add, request_headers_to_remove) =
            filter(&rule.filters, HttpRouteFilterType::RequestHeaderModifier)
                .and_then(|f| f.request_header_modifier.as_ref())
                .map(header_ops)
                .unwrap_or_default();
        let (response_headers_to_add, response_headers_to_remove) =
            filter(&rule.filters, HttpRouteFilterType::ResponseHeaderModifier)
                .and_then(|f| f.response_header_modifier.as_ref())
                .map(header_ops)
                .unwrap_or_default();
        let matches: Vec<Option<&HttpRouteMatch>> =
            if rule.matches.is_empty() { vec![None] } else { rule.matches.iter().map(Some).collect() };
        for m in matches {
            out.push(Route {
                name: rule.name.clone().unwrap_or_default(),
                r#match: Some(route_match(m)),
                action: Some(action.clone()),
                request_headers_to_add: request_headers_to_add.clone(),
                request_headers_to_remove: request_headers_to_remove.clone(),
                response_headers_to_add: response_headers_to_add.clone(),
                response_headers_to_remove: response_headers_to_remove.clone(),
                ..Default::default()
            });
        }
    }
    out
}
