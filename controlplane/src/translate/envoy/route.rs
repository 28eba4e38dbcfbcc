//! The waypoint's RouteConfiguration: one virtual host per service it carries, with the
//! routes of the VirtualService bound to that host, or Istio's default route.
//!
//! Istio's defaults apply where the VirtualService is silent: no route timeout (Envoy's
//! own 15 s default is turned off), and 2 retries on connect-failure, refused-stream,
//! unavailable, cancelled and retriable-status-codes.

use super::{Served, cluster_name};
use crate::config::{
    kinds::{
        Percent,
        virtual_service::{
            Destination, HeaderOperations, HttpFaultInjection, HttpMatchRequest, HttpRoute, StringMatch,
            VirtualService,
        },
    },
    store::ConfigSnapshot,
};
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{HeaderValue, HeaderValueOption, RuntimeFractionalPercent, header_value_option},
            route::v3::{
                DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy,
                Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
                header_matcher, query_parameter_matcher, redirect_action, route, route_action, route_match,
                weighted_cluster,
            },
        },
        extensions::filters::{
            common::fault::v3::FaultDelay,
            http::fault::v3::{FaultAbort, HttpFault, fault_abort},
        },
        r#type::{
            matcher::v3::{RegexMatcher, StringMatcher, string_matcher},
            v3::{FractionalPercent, fractional_percent::DenominatorType},
        },
    },
    google::protobuf::{Duration as PbDuration, UInt32Value},
};
use std::{collections::HashMap, time::Duration};
use weft_xds::istio::pack;

/// Istio's default retry policy.
const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRIES: u32 = 2;

pub(crate) fn pb_duration(d: Duration) -> PbDuration {
    PbDuration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// The FQDN a destination host refers to, resolved like Istio: a short name is relative
/// to the namespace of the resource that wrote it.
pub(crate) fn resolve_host(host: &str, namespace: &str, suffix_of: &str) -> String {
    if host.ends_with(".svc") {
        format!("{host}.{suffix_of}")
    } else if host.contains('.') {
        if host.split('.').count() == 2 { format!("{host}.svc.{suffix_of}") } else { host.to_owned() }
    } else {
        format!("{host}.{namespace}.svc.{suffix_of}")
    }
}

/// FQDN → the service's first port: where a destination without a port goes.
pub type Ports = std::collections::HashMap<String, u32>;

pub fn configuration(
    cfg: &ConfigSnapshot,
    name: &str,
    served: &[Served<'_>],
    ports: &Ports,
) -> RouteConfiguration {
    let virtual_hosts = served.iter().map(|s| virtual_host(cfg, s, ports)).collect();
    RouteConfiguration { name: name.to_owned(), virtual_hosts, ..Default::default() }
}

fn domains(s: &Served<'_>) -> Vec<String> {
    let svc = s.service;
    let (name, ns) = (&svc.metadata.name, &svc.metadata.namespace);
    let mut d = vec![s.hostname.clone(), format!("{name}.{ns}.svc"), format!("{name}.{ns}"), name.clone()];
    d.extend(svc.cluster_ips().iter().map(|ip| ip.to_string()));
    d
}

fn virtual_host(cfg: &ConfigSnapshot, s: &Served<'_>, ports: &Ports) -> VirtualHost {
    let svc = s.service;
    let default_port = svc.spec.ports.first().map_or(80, |p| p.port as u32);
    let suffix = s.hostname.splitn(4, '.').nth(3).unwrap_or("cluster.local").to_owned();
    let vs = s.virtual_service;
    // A VirtualService bound to the host wins; otherwise an HTTPRoute attached to the
    // service (the first by namespace/name); otherwise the default route.
    let http_route = || {
        cfg.http_routes
            .iter()
            .find(|r| super::httproute::attached_to(r, &svc.metadata.namespace, &svc.metadata.name))
    };
    let routes = match (vs, http_route()) {
        (Some(vs), _) => vs.spec.http.iter().flat_map(|r| routes_of(vs, r, ports, &suffix)).collect(),
        (None, Some(route)) => super::httproute::routes(route, default_port, &suffix),
        (None, None) => vec![default_route(&s.hostname, default_port)],
    };
    VirtualHost { name: s.hostname.clone(), domains: domains(s), routes, ..Default::default() }
}

fn default_route(host: &str, port: u32) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster_name(port, "", host))),
            timeout: Some(pb_duration(Duration::ZERO)),
            retry_policy: Some(retry_policy(DEFAULT_RETRIES, DEFAULT_RETRY_ON, None)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Istio's default retry policy, for routes that say nothing about retries.
pub(crate) fn default_retry() -> RetryPolicy {
    retry_policy(DEFAULT_RETRIES, DEFAULT_RETRY_ON, None)
}

fn retry_policy(attempts: u32, retry_on: &str, per_try: Option<Duration>) -> RetryPolicy {
    RetryPolicy {
        retry_on: retry_on.to_owned(),
        num_retries: Some(UInt32Value { value: attempts }),
        per_try_timeout: per_try.map(pb_duration),
        // Istio's retriable status code default: 503.
        retriable_status_codes: vec![503],
        ..Default::default()
    }
}

fn string_matcher(m: &StringMatch, ignore_case: bool) -> Option<StringMatcher> {
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

fn header(name: &str, m: &StringMatch, invert: bool) -> Option<HeaderMatcher> {
    Some(HeaderMatcher {
        name: name.to_owned(),
        invert_match: invert,
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(
            m, false,
        )?)),
        ..Default::default()
    })
}

fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    use route_match::PathSpecifier;
    let Some(m) = m else {
        return RouteMatch { path_specifier: Some(PathSpecifier::Prefix("/".into())), ..Default::default() };
    };
    let path = match &m.uri {
        Some(StringMatch { exact: Some(e), .. }) => PathSpecifier::Path(e.clone()),
        Some(StringMatch { prefix: Some(p), .. }) => PathSpecifier::Prefix(p.clone()),
        Some(StringMatch { regex: Some(r), .. }) => {
            PathSpecifier::SafeRegex(RegexMatcher { regex: r.clone(), ..Default::default() })
        }
        _ => PathSpecifier::Prefix("/".into()),
    };
    let mut headers: Vec<HeaderMatcher> =
        m.headers.iter().filter_map(|(name, sm)| header(name, sm, false)).collect();
    headers.extend(m.without_headers.iter().filter_map(|(name, sm)| header(name, sm, true)));
    for (pseudo, sm) in [(":method", &m.method), (":authority", &m.authority), (":scheme", &m.scheme)] {
        if let Some(sm) = sm {
            headers.extend(header(pseudo, sm, false));
        }
    }
    let query_parameters = m
        .query_params
        .iter()
        .filter_map(|(name, sm)| {
            Some(QueryParameterMatcher {
                name: name.clone(),
                query_parameter_match_specifier: Some(
                    query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string_matcher(
                        sm, false,
                    )?),
                ),
            })
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path),
        case_sensitive: m
            .ignore_uri_case
            .then_some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        headers,
        query_parameters,
        ..Default::default()
    }
}

fn header_ops(ops: Option<&HeaderOperations>) -> (Vec<HeaderValueOption>, Vec<String>) {
    let Some(ops) = ops else { return (Vec::new(), Vec::new()) };
    let option = |k: &String, v: &String, action| HeaderValueOption {
        header: Some(HeaderValue { key: k.clone(), value: v.clone(), ..Default::default() }),
        append_action: action as i32,
        ..Default::default()
    };
    let mut add: Vec<HeaderValueOption> = ops
        .set
        .iter()
        .map(|(k, v)| option(k, v, header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    add.extend(
        ops.add
            .iter()
            .map(|(k, v)| option(k, v, header_value_option::HeaderAppendAction::AppendIfExistsOrAdd)),
    );
    (add, ops.remove.clone())
}

fn fraction(p: Option<&Percent>) -> FractionalPercent {
    // Istio percentages have decimals; a million-based fraction keeps four of them.
    let value = p.map_or(100.0, |p| p.value);
    FractionalPercent {
        numerator: (value * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

fn fault(f: &HttpFaultInjection) -> HttpFault {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
    HttpFault {
        delay: f.delay.as_ref().and_then(|d| {
            let fixed = d.fixed_delay.as_ref()?;
            let pct = d.percentage.or(d.percent.map(|p| Percent { value: f64::from(p) }));
            Some(FaultDelay {
                fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(pb_duration(fixed.0))),
                percentage: Some(fraction(pct.as_ref())),
            })
        }),
        abort: f.abort.as_ref().and_then(|a| {
            Some(FaultAbort {
                error_type: Some(fault_abort::ErrorType::HttpStatus(a.http_status? as u32)),
                percentage: Some(fraction(a.percentage.as_ref())),
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

fn cluster_for(d: &Destination, vs_namespace: &str, ports: &Ports, suffix: &str) -> String {
    let host = resolve_host(&d.host, vs_namespace, suffix);
    // Istio requires a port when the destination service has several; with one, it is it.
    let port = d.port.as_ref().map_or_else(|| ports.get(&host).copied().unwrap_or(80), |p| p.number);
    cluster_name(port, d.subset.as_deref().unwrap_or(""), &host)
}

/// The Envoy routes of one VirtualService HTTP route: one per match, same action.
pub(crate) fn routes_of(vs: &VirtualService, r: &HttpRoute, ports: &Ports, suffix: &str) -> Vec<Route> {
    let ns = vs.metadata.namespace.as_str();
    let action = if let Some(redirect) = &r.redirect {
        route::Action::Redirect(RedirectAction {
            path_rewrite_specifier: redirect
                .uri
                .clone()
                .map(redirect_action::PathRewriteSpecifier::PathRedirect),
            host_redirect: redirect.authority.clone().unwrap_or_default(),
            port_redirect: redirect.port.unwrap_or(0),
            response_code: match redirect.redirect_code.unwrap_or(301) {
                302 => redirect_action::RedirectResponseCode::Found,
                303 => redirect_action::RedirectResponseCode::SeeOther,
                307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
                308 => redirect_action::RedirectResponseCode::PermanentRedirect,
                _ => redirect_action::RedirectResponseCode::MovedPermanently,
            } as i32,
            ..Default::default()
        })
    } else if let Some(direct) = &r.direct_response {
        route::Action::DirectResponse(DirectResponseAction {
            status: direct.status,
            body: direct.body.as_ref().and_then(|b| b.string.clone()).map(|s| {
                envoy_types::pb::envoy::config::core::v3::DataSource {
                    specifier: Some(
                        envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(s),
                    ),
                    ..Default::default()
                }
            }),
            ..Default::default()
        })
    } else {
        let destinations: Vec<(&Destination, i32, Option<&HeaderOperations>, Option<&HeaderOperations>)> = r
            .route
            .iter()
            .filter_map(|rd| {
                let hs = rd.headers.as_ref();
                Some((
                    rd.destination.as_ref()?,
                    rd.weight,
                    hs.and_then(|h| h.request.as_ref()),
                    hs.and_then(|h| h.response.as_ref()),
                ))
            })
            .collect();
        let cluster_specifier =
            if destinations.len() == 1 && destinations[0].2.is_none() && destinations[0].3.is_none() {
                route_action::ClusterSpecifier::Cluster(cluster_for(destinations[0].0, ns, ports, suffix))
            } else {
                // Weights are relative (Istio's rule); a single destination without a weight
                // takes everything.
                let clusters = destinations
                    .iter()
                    .map(|(d, w, req, resp)| {
                        let (request_headers_to_add, request_headers_to_remove) = header_ops(*req);
                        let (response_headers_to_add, response_headers_to_remove) = header_ops(*resp);
                        weighted_cluster::ClusterWeight {
                            name: cluster_for(d, ns, ports, suffix),
                            weight: Some(UInt32Value {
                                value: if destinations.len() == 1 { 100 } else { (*w).max(0) as u32 },
                            }),
                            request_headers_to_add,
                            request_headers_to_remove,
                            response_headers_to_add,
                            response_headers_to_remove,
                            ..Default::default()
                        }
                    })
                    .collect();
                route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters,
                    ..Default::default()
                })
            };
        let retry = match &r.retries {
            None => Some(retry_policy(DEFAULT_RETRIES, DEFAULT_RETRY_ON, None)),
            Some(rt) if rt.attempts <= 0 => None,
            Some(rt) => Some(retry_policy(
                rt.attempts as u32,
                rt.retry_on.as_deref().unwrap_or(DEFAULT_RETRY_ON),
                rt.per_try_timeout.as_ref().map(|d| d.0),
            )),
        };
        let mut mirrors: Vec<(&Destination, Option<&Percent>)> =
            r.mirror.iter().map(|m| (m, r.mirror_percentage.as_ref())).collect();
        mirrors
            .extend(r.mirrors.iter().filter_map(|m| Some((m.destination.as_ref()?, m.percentage.as_ref()))));
        let request_mirror_policies = mirrors
            .into_iter()
            .map(|(d, pct)| route_action::RequestMirrorPolicy {
                cluster: cluster_for(d, ns, ports, suffix),
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(fraction(pct)),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let rewrite = r.rewrite.as_ref();
        route::Action::Route(RouteAction {
            cluster_specifier: Some(cluster_specifier),
            timeout: Some(pb_duration(r.timeout.as_ref().map_or(Duration::ZERO, |t| t.0))),
            retry_policy: retry,
            request_mirror_policies,
            prefix_rewrite: rewrite.and_then(|w| w.uri.clone()).unwrap_or_default(),
            host_rewrite_specifier: rewrite
                .and_then(|w| w.authority.clone())
                .map(route_action::HostRewriteSpecifier::HostRewriteLiteral),
            ..Default::default()
        })
    };
    let (request_headers_to_add, request_headers_to_remove) =
        header_ops(r.headers.as_ref().and_then(|h| h.request.as_ref()));
    let (response_headers_to_add, response_headers_to_remove) =
        header_ops(r.headers.as_ref().and_then(|h| h.response.as_ref()));
    let typed_per_filter_config: HashMap<String, envoy_types::pb::google::protobuf::Any> = r
        .fault
        .as_ref()
        .map(|f| ("envoy.filters.http.fault".to_owned(), pack(&fault(f))))
        .into_iter()
        .collect();
    let matches: Vec<Option<&HttpMatchRequest>> =
        if r.matches.is_empty() { vec![None] } else { r.matches.iter().map(Some).collect() };
    matches
        .into_iter()
        .map(|m| Route {
            name: r.name.clone().unwrap_or_default(),
            r#match: Some(route_match(m)),
            action: Some(action.clone()),
            request_headers_to_add: request_headers_to_add.clone(),
            request_headers_to_remove: request_headers_to_remove.clone(),
            response_headers_to_add: response_headers_to_add.clone(),
            response_headers_to_remove: response_headers_to_remove.clone(),
            typed_per_filter_config: typed_per_filter_config.clone(),
            ..Default::default()
        })
        .collect()
}
