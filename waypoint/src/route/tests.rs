//! Route-table rules as the Envoy docs state them (config/route/v3 route_components.proto
//! and the HTTP route matching overview). The differential test in waypoint/tests checks
//! the trickier ones against a real Envoy.

use super::*;
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{HeaderValue as PbHeaderValue, HeaderValueOption, RuntimeFractionalPercent},
            route::v3::{
                DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RouteMatch as PbRouteMatch,
                header_matcher, query_parameter_matcher, route_action, route_match::PathSpecifier,
            },
        },
        r#type::{
            matcher::v3::{
                FilterStateMatcher, RegexMatcher, StringMatcher, filter_state_matcher, string_matcher,
            },
            v3::{FractionalPercent, Int64Range},
        },
    },
    google::protobuf::BoolValue,
};

fn direct(name: &str, m: PbRouteMatch) -> pb::Route {
    pb::Route {
        name: name.into(),
        r#match: Some(m),
        action: Some(PbAction::DirectResponse(DirectResponseAction { status: 200, ..Default::default() })),
        ..Default::default()
    }
}

fn prefix(p: &str) -> PbRouteMatch {
    PbRouteMatch { path_specifier: Some(PathSpecifier::Prefix(p.into())), ..Default::default() }
}

fn with_headers(mut m: PbRouteMatch, h: Vec<HeaderMatcher>) -> PbRouteMatch {
    m.headers = h;
    m
}

fn vhost(name: &str, domains: &[&str], routes: Vec<pb::Route>) -> pb::VirtualHost {
    pb::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn table(vhosts: Vec<pb::VirtualHost>) -> RouteTable {
    RouteTable::compile(&RouteConfiguration {
        name: "rc".into(),
        virtual_hosts: vhosts,
        ..Default::default()
    })
    .unwrap()
}

fn one(routes: Vec<pb::Route>) -> RouteTable {
    table(vec![vhost("vh", &["*"], routes)])
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn pick(t: &RouteTable, parts: &http::request::Parts) -> Option<String> {
    let req = RequestParts::new(parts, "10.0.0.9:1234".parse().unwrap());
    t.select(&req).route().map(|r| r.name.to_string())
}

fn get(t: &RouteTable, uri: &str, headers: &[(&str, &str)]) -> Option<String> {
    pick(t, &request("GET", uri, headers))
}

fn header(name: &str, spec: header_matcher::HeaderMatchSpecifier) -> HeaderMatcher {
    HeaderMatcher { name: name.into(), header_match_specifier: Some(spec), ..Default::default() }
}

fn string(p: string_matcher::MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher { match_pattern: Some(p), ignore_case }
}

/// Route matching overview: routes are checked in order and the first match wins; no
/// match → no route (404); a host with no virtual host → NoVirtualHost.
#[test]
fn first_match_wins_and_misses() {
    let t = table(vec![vhost(
        "a",
        &["a.example"],
        vec![direct("api", prefix("/api")), direct("all", prefix("/")), direct("never", prefix("/api/x"))],
    )]);
    assert_eq!(get(&t, "/api/x", &[("host", "a.example")]).as_deref(), Some("api"));
    assert_eq!(get(&t, "/other", &[("host", "a.example")]).as_deref(), Some("all"));
    let parts = request("GET", "/", &[("host", "b.example")]);
    assert!(matches!(
        t.select(&RequestParts::new(&parts, "1.1.1.1:1".parse().unwrap())),
        Selected::NoVirtualHost
    ));
    let t = one(vec![direct("api", prefix("/api"))]);
    let parts = request("GET", "/x", &[]);
    assert!(matches!(
        t.select(&RequestParts::new(&parts, "1.1.1.1:1".parse().unwrap())),
        Selected::NoRoute(_)
    ));
}

/// RouteMatch.prefix / path / safe_regex / path_separated_prefix and case_sensitive
/// ("Indicates that prefix/path matching should be case sensitive. The default is true.
/// Ignored for safe_regex matching"); paths are matched without the query.
#[test]
fn path_specifiers() {
    let regex = |r: &str| PathSpecifier::SafeRegex(RegexMatcher { regex: r.into(), ..Default::default() });
    let m = |p: PathSpecifier| PbRouteMatch { path_specifier: Some(p), ..Default::default() };
    let insensitive = |p: PathSpecifier| PbRouteMatch {
        path_specifier: Some(p),
        case_sensitive: Some(BoolValue { value: false }),
        ..Default::default()
    };
    let t = one(vec![
        direct("exact", m(PathSpecifier::Path("/exact".into()))),
        direct("regex", m(regex("/r/[0-9]+"))),
        direct("sep", m(PathSpecifier::PathSeparatedPrefix("/sep".into()))),
        direct("ci", insensitive(PathSpecifier::Prefix("/CI".into()))),
        direct("ci-regex", insensitive(regex("/Rx"))),
    ]);
    assert_eq!(get(&t, "/exact?x=1", &[]).as_deref(), Some("exact"));
    assert_eq!(get(&t, "/exact/", &[]), None);
    assert_eq!(get(&t, "/Exact", &[]), None);
    assert_eq!(get(&t, "/r/123?q", &[]).as_deref(), Some("regex"));
    assert_eq!(get(&t, "/r/123/x", &[]), None, "regexes match the whole path");
    assert_eq!(get(&t, "/sep", &[]).as_deref(), Some("sep"));
    assert_eq!(get(&t, "/sep/x", &[]).as_deref(), Some("sep"));
    assert_eq!(get(&t, "/sepx", &[]), None);
    assert_eq!(get(&t, "/ci/a", &[]).as_deref(), Some("ci"));
    assert_eq!(get(&t, "/cI", &[]).as_deref(), Some("ci"));
    assert_eq!(get(&t, "/rx", &[]), None, "case_sensitive does not apply to regexes");
    assert!(
        RouteTable::compile(&RouteConfiguration {
            virtual_hosts: vec![vhost(
                "v",
                &["*"],
                vec![direct("bad", m(PathSpecifier::PathSeparatedPrefix("/a/".into())))]
            )],
            ..Default::default()
        })
        .is_err()
    );
}

/// RouteMatch.connect_matcher matches CONNECT requests only; other routes never match a
/// request without a path.
#[test]
fn connect_matcher() {
    let connect = PbRouteMatch {
        path_specifier: Some(PathSpecifier::ConnectMatcher(Default::default())),
        ..Default::default()
    };
    let t = one(vec![direct("all", prefix("/")), direct("connect", connect)]);
    assert_eq!(pick(&t, &request("CONNECT", "10.0.0.1:80", &[])).as_deref(), Some("connect"));
    assert_eq!(get(&t, "/", &[]).as_deref(), Some("all"));
}

/// HeaderMatcher: string_match exact/prefix/suffix/contains/regex with ignore_case,
/// present_match, invert_match, treat_missing_header_as_empty, range_match, the legacy
/// exact_match; a header with several values matches when one of them does (as Envoy 1.40
/// does, see waypoint/tests/route_vs_envoy.rs).
#[test]
fn header_matchers() {
    use header_matcher::HeaderMatchSpecifier as S;
    use string_matcher::MatchPattern as P;
    let case = |name: &str, h: HeaderMatcher| direct(name, with_headers(prefix("/"), vec![h]));
    let t = |h: HeaderMatcher| one(vec![case("m", h)]);
    let hit = |t: &RouteTable, hs: &[(&str, &str)]| get(t, "/", hs).is_some();

    let exact = t(header("x", S::StringMatch(string(P::Exact("Jason".into()), false))));
    assert!(hit(&exact, &[("x", "Jason")]));
    assert!(!hit(&exact, &[("x", "jason")]));
    assert!(!hit(&exact, &[]));
    let exact_ci = t(header("x", S::StringMatch(string(P::Exact("Jason".into()), true))));
    assert!(hit(&exact_ci, &[("x", "jASON")]));
    let contains = t(header("x", S::StringMatch(string(P::Contains("Ab".into()), true))));
    assert!(hit(&contains, &[("x", "zzaBzz")]));
    let suffix = t(header("x", S::StringMatch(string(P::Suffix(".com".into()), false))));
    assert!(hit(&suffix, &[("x", "a.com")]) && !hit(&suffix, &[("x", "a.co")]));
    let regex = t(header(
        "x",
        S::StringMatch(string(
            P::SafeRegex(RegexMatcher { regex: "v[12]".into(), ..Default::default() }),
            false,
        )),
    ));
    assert!(hit(&regex, &[("x", "v2")]) && !hit(&regex, &[("x", "v23")]));
    // Several values: one matching value is enough; the joined form is not matched.
    let joined = t(header("x", S::StringMatch(string(P::Exact("a,b".into()), false))));
    assert!(!hit(&joined, &[("x", "a"), ("x", "b")]));
    let second = t(header("x", S::StringMatch(string(P::Exact("b".into()), false))));
    assert!(hit(&second, &[("x", "a"), ("x", "b")]));
    #[expect(deprecated, reason = "testing the legacy field")]
    let legacy = t(header("x", S::ExactMatch("v".into())));
    assert!(hit(&legacy, &[("x", "v")]));

    let present = t(header("x", S::PresentMatch(true)));
    assert!(hit(&present, &[("x", "")]) && !hit(&present, &[]));
    let absent = t(header("x", S::PresentMatch(false)));
    assert!(!hit(&absent, &[("x", "1")]) && hit(&absent, &[]));
    let inverted_present = t(HeaderMatcher { invert_match: true, ..header("x", S::PresentMatch(true)) });
    assert!(hit(&inverted_present, &[]) && !hit(&inverted_present, &[("x", "1")]));
    let no_specifier = t(HeaderMatcher { name: "x".into(), ..Default::default() });
    assert!(hit(&no_specifier, &[("x", "1")]) && !hit(&no_specifier, &[]));

    // invert_match of a value match: a missing header does not match either way.
    let inverted = t(HeaderMatcher {
        invert_match: true,
        ..header("x", S::StringMatch(string(P::Exact("a".into()), false)))
    });
    assert!(hit(&inverted, &[("x", "b")]) && !hit(&inverted, &[("x", "a")]) && !hit(&inverted, &[]));
    // treat_missing_header_as_empty: the matcher sees "".
    let empty = t(HeaderMatcher {
        treat_missing_header_as_empty: true,
        invert_match: true,
        ..header("x", S::StringMatch(string(P::Exact("a".into()), false)))
    });
    assert!(hit(&empty, &[]));

    let range = t(header("x", S::RangeMatch(Int64Range { start: -10, end: 10 })));
    assert!(
        hit(&range, &[("x", "-10")])
            && hit(&range, &[("x", "9")])
            && !hit(&range, &[("x", "10")])
            && !hit(&range, &[("x", "a")])
    );

    let method = t(header(":method", S::StringMatch(string(P::Exact("POST".into()), false))));
    assert!(!hit(&method, &[]));
    assert!(pick(&method, &request("POST", "/", &[])).is_some());
    let authority = t(header(":authority", S::StringMatch(string(P::Prefix("svc".into()), false))));
    assert!(hit(&authority, &[("host", "svc.ns:80")]));
}

/// QueryParameterMatcher: string_match on the first value, present_match, a parameter
/// without "=" has the empty value.
#[test]
fn query_parameter_matchers() {
    use query_parameter_matcher::QueryParameterMatchSpecifier as S;
    let q = |name: &str, spec: Option<S>| {
        one(vec![direct(
            "m",
            PbRouteMatch {
                query_parameters: vec![QueryParameterMatcher {
                    name: name.into(),
                    query_parameter_match_specifier: spec,
                }],
                ..prefix("/")
            },
        )])
    };
    let exact = q("u", Some(S::StringMatch(string(string_matcher::MatchPattern::Exact("7".into()), false))));
    assert!(get(&exact, "/?a=1&u=7", &[]).is_some());
    assert!(get(&exact, "/?u=8&u=7", &[]).is_none(), "first value only");
    assert!(get(&exact, "/", &[]).is_none());
    let present = q("debug", Some(S::PresentMatch(true)));
    assert!(get(&present, "/?debug", &[]).is_some());
    assert!(get(&present, "/?debugx=1", &[]).is_none());
    let empty =
        q("debug", Some(S::StringMatch(string(string_matcher::MatchPattern::Exact("".into()), false))));
    assert!(get(&empty, "/?debug", &[]).is_some());
}

/// RouteMatch.runtime_fraction: `random % denominator < numerator`, with the request's
/// random value.
#[test]
fn runtime_fraction_samples_the_request_random() {
    let m = PbRouteMatch {
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent { numerator: 30, denominator: 0 }),
            runtime_key: "k".into(),
        }),
        ..prefix("/")
    };
    let t = one(vec![direct("sampled", m), direct("rest", prefix("/"))]);
    let parts = request("GET", "/", &[]);
    let hits = (0..1000u64)
        .filter(|r| {
            let req = RequestParts { random: *r, ..RequestParts::new(&parts, "1.1.1.1:1".parse().unwrap()) };
            &*t.select(&req).route().unwrap().name == "sampled"
        })
        .count();
    assert_eq!(hits, 300);
}

/// RouteMatch.grpc: only requests with a gRPC content-type.
#[test]
fn grpc_matcher() {
    let t = one(vec![direct("grpc", PbRouteMatch { grpc: Some(Default::default()), ..prefix("/") })]);
    assert!(get(&t, "/pkg.Svc/M", &[("content-type", "application/grpc")]).is_some());
    assert!(get(&t, "/pkg.Svc/M", &[("content-type", "application/grpc+proto")]).is_some());
    assert!(get(&t, "/pkg.Svc/M", &[("content-type", "application/grpc-web")]).is_none());
    assert!(get(&t, "/pkg.Svc/M", &[]).is_none());
}

/// Weft's source matchers (filter_state keys, see `source`): identity, namespace, labels.
#[test]
fn source_matchers() {
    let fs = |key: &str, v: &str| FilterStateMatcher {
        key: key.into(),
        matcher: Some(filter_state_matcher::Matcher::StringMatch(string(
            string_matcher::MatchPattern::Exact(v.into()),
            false,
        ))),
    };
    let t = one(vec![
        direct("ns", PbRouteMatch { filter_state: vec![fs(SOURCE_NAMESPACE_KEY, "test")], ..prefix("/") }),
        direct(
            "label",
            PbRouteMatch { filter_state: vec![fs("weft.source_label.app", "ratings")], ..prefix("/") },
        ),
        direct(
            "principal",
            PbRouteMatch {
                filter_state: vec![fs(PEER_PRINCIPAL_KEY, "spiffe://td/ns/x/sa/y")],
                ..prefix("/")
            },
        ),
    ]);
    let parts = request("GET", "/", &[]);
    let labels = BTreeMap::from([("app".to_owned(), "ratings".to_owned())]);
    let base = RequestParts::new(&parts, "1.1.1.1:1".parse().unwrap());
    let name = |r: RequestParts<'_>| t.select(&r).route().map(|r| r.name.to_string());
    assert_eq!(name(base), None);
    assert_eq!(name(RequestParts { source_namespace: Some("test"), ..base }).as_deref(), Some("ns"));
    assert_eq!(name(RequestParts { source_labels: Some(&labels), ..base }).as_deref(), Some("label"));
    assert_eq!(
        name(RequestParts { identity: Some("spiffe://td/ns/x/sa/y"), ..base }).as_deref(),
        Some("principal")
    );
}

fn add(k: &str, v: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue { key: k.into(), value: v.into(), ..Default::default() }),
        append_action: envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// RouteConfiguration.most_specific_header_mutations_wins: by default the route's
/// mutations are applied first and the route configuration's last (so the least specific
/// wins an overwrite); with the flag, the reverse.
#[test]
fn header_mutation_order() {
    let build = |most_specific: bool| {
        let mut r = direct("r", prefix("/"));
        r.response_headers_to_add = vec![add("x-level", "route")];
        let mut vh = vhost("vh", &["*"], vec![r]);
        vh.response_headers_to_add = vec![add("x-level", "vhost")];
        RouteTable::compile(&RouteConfiguration {
            virtual_hosts: vec![vh],
            response_headers_to_add: vec![add("x-level", "config")],
            most_specific_header_mutations_wins: most_specific,
            ..Default::default()
        })
        .unwrap()
    };
    for (flag, expect) in [(false, "config"), (true, "route")] {
        let t = build(flag);
        let parts = request("GET", "/", &[]);
        let req = RequestParts::new(&parts, "1.1.1.1:1".parse().unwrap());
        let route = t.select(&req).route().unwrap();
        let mut h = HeaderMap::new();
        let ctx = FormatContext {
            downstream: req.source,
            peer_identity: None,
            request_headers: Some(&parts.headers),
        };
        route.mutate_response_headers(None, &mut h, &ctx);
        assert_eq!(h.get("x-level").unwrap(), expect, "most_specific_header_mutations_wins: {flag}");
    }
}

/// A refusal names the virtual host, the route and the field, and lists every failed
/// route; fields that do not change routing (decorator, per-route stats) are ignored.
#[test]
fn errors_name_every_failed_route() {
    let mut bad_action = direct("bad-action", prefix("/"));
    bad_action.action = Some(PbAction::Route(pb::RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
        hedge_policy: Some(Default::default()),
        ..Default::default()
    }));
    let bad_match = direct("", PbRouteMatch { tls_context: Some(Default::default()), ..prefix("/") });
    let mut fine = direct("fine", prefix("/"));
    fine.decorator = Some(pb::Decorator { operation: "op".into(), ..Default::default() });
    let err = RouteTable::compile(&RouteConfiguration {
        name: "inbound-vip|80|http|reviews".into(),
        virtual_hosts: vec![vhost("reviews", &["*"], vec![fine, bad_action, bad_match])],
        ..Default::default()
    })
    .unwrap_err();
    let all = err.failures();
    assert_eq!(all.len(), 2, "{err}");
    assert_eq!(
        all[0],
        RouteError::Route {
            config: "inbound-vip|80|http|reviews".into(),
            vhost: "reviews".into(),
            route: "\"bad-action\" (#1)".into(),
            field: "route.hedge_policy".into(),
            reason: "not supported by weft-waypoint".into(),
        }
    );
    assert!(
        matches!(&all[1], RouteError::Route { route, field, .. } if route == "#2" && field == "match.tls_context")
    );
    let text = err.to_string();
    assert!(text.contains("bad-action") && text.contains("match.tls_context"), "{text}");
}

/// A redirect route's prefix_rewrite replaces the prefix the route matched.
#[test]
fn redirect_prefix_rewrite_uses_the_matched_prefix() {
    let r = pb::Route {
        name: "r".into(),
        r#match: Some(prefix("/old")),
        action: Some(PbAction::Redirect(pb::RedirectAction {
            path_rewrite_specifier: Some(pb::redirect_action::PathRewriteSpecifier::PrefixRewrite(
                "/new".into(),
            )),
            ..Default::default()
        })),
        ..Default::default()
    };
    let t = one(vec![r]);
    let parts = request("GET", "/old/a?b", &[("host", "h")]);
    let req = RequestParts::new(&parts, "1.1.1.1:1".parse().unwrap());
    let Action::Redirect(redirect) = &t.select(&req).route().unwrap().action else {
        panic!("not a redirect")
    };
    assert_eq!(redirect.location(&req), "http://h/new/a?b");
}

/// CONTRACT.md item 1: the `connect_terminate` route configuration — one virtual host
/// `*`, a connect_matcher route to `main_internal` with a CONNECT upgrade that terminates
/// the tunnel here.
#[test]
fn connect_terminate_shape_from_the_contract() {
    let route = pb::Route {
        r#match: Some(PbRouteMatch {
            path_specifier: Some(PathSpecifier::ConnectMatcher(Default::default())),
            ..Default::default()
        }),
        action: Some(PbAction::Route(pb::RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("main_internal".into())),
            upgrade_configs: vec![route_action::UpgradeConfig {
                upgrade_type: "CONNECT".into(),
                connect_config: Some(Default::default()),
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    let t = RouteTable::compile(&RouteConfiguration {
        name: "connect_terminate".into(),
        virtual_hosts: vec![vhost("connect", &["*"], vec![route])],
        ..Default::default()
    })
    .unwrap();
    let parts = request("CONNECT", "10.96.0.7:9080", &[]);
    let req = RequestParts::new(&parts, "10.0.0.5:40000".parse().unwrap());
    let Action::Forward(a) = &t.select(&req).route().expect("CONNECT is routed").action else {
        panic!("not forwarded")
    };
    assert!(matches!(&a.cluster, ClusterSpecifier::Cluster(c) if &*c.name == "main_internal"));
    assert!(a.upgrade("connect").and_then(|u| u.connect).is_some());
    assert!(get(&t, "/", &[]).is_none(), "plain requests do not match the CONNECT route");
}

/// A route as weftd writes one for a VirtualService (route.rs): weighted subsets, no
/// timeout, Istio's retry policy, a fault packed as typed_per_filter_config, header
/// operations; the fault and retry arrive as typed fields.
#[test]
fn weftd_shaped_route_compiles_to_typed_fields() {
    use envoy_types::pb::envoy::{
        extensions::filters::{
            common::fault::v3::{FaultDelay, fault_delay},
            http::fault::v3::{FaultAbort, HttpFault, fault_abort},
        },
        r#type::v3::fractional_percent::DenominatorType,
    };
    use prost::{Message, Name};
    let fault = HttpFault {
        delay: Some(FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(
                envoy_types::pb::google::protobuf::Duration { seconds: 7, nanos: 0 },
            )),
            percentage: Some(FractionalPercent {
                numerator: 1_000_000,
                denominator: DenominatorType::Million as i32,
            }),
        }),
        abort: Some(FaultAbort {
            error_type: Some(fault_abort::ErrorType::HttpStatus(500)),
            percentage: Some(FractionalPercent {
                numerator: 500_000,
                denominator: DenominatorType::Million as i32,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let route = pb::Route {
        name: "reviews-v2".into(),
        r#match: Some(with_headers(
            prefix("/"),
            vec![header(
                "end-user",
                header_matcher::HeaderMatchSpecifier::StringMatch(string(
                    string_matcher::MatchPattern::Exact("jason".into()),
                    false,
                )),
            )],
        )),
        action: Some(PbAction::Route(pb::RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(pb::WeightedCluster {
                clusters: ["v1", "v3"]
                    .iter()
                    .map(|s| pb::weighted_cluster::ClusterWeight {
                        name: format!("inbound-vip|9080|http/{s}|reviews.default.svc.cluster.local"),
                        weight: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 50 }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })),
            timeout: Some(Default::default()),
            retry_policy: Some(pb::RetryPolicy {
                retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                    .into(),
                num_retries: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 2 }),
                retriable_status_codes: vec![503],
                ..Default::default()
            }),
            ..Default::default()
        })),
        request_headers_to_add: vec![add("x-route", "reviews")],
        typed_per_filter_config: std::collections::HashMap::from([(
            FAULT_FILTER.to_owned(),
            envoy_types::pb::google::protobuf::Any {
                type_url: HttpFault::type_url(),
                value: fault.encode_to_vec(),
            },
        )]),
        ..Default::default()
    };
    let t = one(vec![route]);
    let parts = request("GET", "/reviews/1", &[("end-user", "jason")]);
    let req = RequestParts::new(&parts, "10.0.0.5:40000".parse().unwrap());
    let r = t.select(&req).route().unwrap();
    let Action::Forward(a) = &r.action else { panic!("not forwarded") };
    assert_eq!(a.timeout, None);
    let retry = a.retry.as_ref().unwrap();
    assert_eq!(retry.num_retries, 2);
    assert!(retry.retry_on.contains(RetryOn::GRPC_UNAVAILABLE | RetryOn::CONNECT_FAILURE));
    assert!(!retry.retry_on.contains(RetryOn::FIVE_XX));
    let f = r.fault.as_ref().unwrap();
    assert_eq!(f.delay.unwrap().0, std::time::Duration::from_secs(7));
    assert!(
        matches!(f.abort, Some((FaultAbortKind::Http(s), p)) if s == 500 && p.sample(499_999) && !p.sample(500_000))
    );
}

/// weftd's source conditions (see `source`): route metadata `weft.source` with labels and
/// namespace decides; the `:weft-source` matcher (for stock Envoy) is dropped.
#[test]
fn source_conditions_from_route_metadata() {
    use envoy_types::pb::{
        envoy::config::core::v3::Metadata,
        google::protobuf::{Struct, Value, value::Kind},
    };
    let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
    let metadata = Metadata {
        filter_metadata: std::collections::HashMap::from([(
            SOURCE_METADATA.to_owned(),
            Struct {
                fields: [
                    ("namespace".to_owned(), s("bookinfo")),
                    (
                        "labels".to_owned(),
                        Value {
                            kind: Some(Kind::StructValue(Struct {
                                fields: [("app".to_owned(), s("productpage"))].into_iter().collect(),
                            })),
                        },
                    ),
                ]
                .into_iter()
                .collect(),
            },
        )]),
        ..Default::default()
    };
    let mut sourced = direct(
        "sourced",
        with_headers(
            prefix("/"),
            vec![HeaderMatcher {
                name: SOURCE_HEADER.into(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
                ..Default::default()
            }],
        ),
    );
    sourced.metadata = Some(metadata);
    let t = one(vec![sourced, direct("rest", prefix("/"))]);
    let parts = request("GET", "/", &[]);
    let base = RequestParts::new(&parts, "1.1.1.1:1".parse().unwrap());
    let name = |r: RequestParts<'_>| t.select(&r).route().map(|r| r.name.to_string()).unwrap();
    let productpage =
        BTreeMap::from([("app".to_owned(), "productpage".to_owned()), ("v".to_owned(), "1".to_owned())]);
    let other = BTreeMap::from([("app".to_owned(), "reviews".to_owned())]);
    assert_eq!(name(base), "rest", "an unknown client satisfies no condition");
    assert_eq!(
        name(RequestParts { source_namespace: Some("bookinfo"), source_labels: Some(&productpage), ..base }),
        "sourced"
    );
    assert_eq!(
        name(RequestParts { source_namespace: Some("bookinfo"), source_labels: Some(&other), ..base }),
        "rest"
    );
    assert_eq!(
        name(RequestParts { source_namespace: Some("other"), source_labels: Some(&productpage), ..base }),
        "rest"
    );
}

/// request_mirror_policies at the route, virtual host and route configuration levels:
/// the most specific level's apply.
#[test]
fn mirror_policies_by_level() {
    let mirror = |c: &str| pb::route_action::RequestMirrorPolicy { cluster: c.into(), ..Default::default() };
    let forward = |name: &str, p: &str, mirrors: Vec<pb::route_action::RequestMirrorPolicy>| pb::Route {
        name: name.into(),
        r#match: Some(prefix(p)),
        action: Some(PbAction::Route(pb::RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
            request_mirror_policies: mirrors,
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut with_own = vhost("own", &["own"], vec![forward("vh", "/", vec![])]);
    with_own.request_mirror_policies = vec![mirror("vhost-mirror")];
    let t = RouteTable::compile(&RouteConfiguration {
        virtual_hosts: vec![
            vhost(
                "plain",
                &["*"],
                vec![forward("route", "/r", vec![mirror("route-mirror")]), forward("config", "/", vec![])],
            ),
            with_own,
        ],
        request_mirror_policies: vec![mirror("config-mirror")],
        ..Default::default()
    })
    .unwrap();
    let mirrored = |uri: &str, host: &str| {
        let parts = request("GET", uri, &[("host", host)]);
        let req = RequestParts::new(&parts, "1.1.1.1:1".parse().unwrap());
        let Action::Forward(a) = &t.select(&req).route().unwrap().action else { panic!() };
        a.mirrors.iter().map(|m| m.cluster.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(mirrored("/r", "x"), ["route-mirror"]);
    assert_eq!(mirrored("/", "x"), ["config-mirror"]);
    assert_eq!(mirrored("/", "own"), ["vhost-mirror"]);
}
