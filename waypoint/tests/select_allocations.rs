//! `RouteTable::select` must not allocate for the usual matches (exact domain, wildcard
//! domain, prefix and exact paths, case-insensitive paths, header and query matchers,
//! weighted picks): counted with dhat's global allocator, in a test binary of its own so
//! that no other test allocates meanwhile.

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost, WeightedCluster, header_matcher, query_parameter_matcher, route, route_action,
    route_match::PathSpecifier, weighted_cluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use weft_waypoint::route::{ClusterSpecifier, RequestParts, RouteTable, Selected};

// dhat's allocator counts heap blocks; the crate's `unsafe_code = "forbid"` holds for
// tests too, so no hand-written GlobalAlloc.
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn string(p: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher { match_pattern: Some(p), ignore_case: false }
}

fn route(name: &str, m: RouteMatch) -> Route {
    Route {
        name: name.into(),
        r#match: Some(m),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 200,
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn select_does_not_allocate() {
    let prefix =
        |p: &str| RouteMatch { path_specifier: Some(PathSpecifier::Prefix(p.into())), ..Default::default() };
    let routes = vec![
        route(
            "exact",
            RouteMatch { path_specifier: Some(PathSpecifier::Path("/exact".into())), ..Default::default() },
        ),
        route("ci", RouteMatch { case_sensitive: Some(BoolValue { value: false }), ..prefix("/CI") }),
        route(
            "header",
            RouteMatch {
                headers: vec![HeaderMatcher {
                    name: "end-user".into(),
                    header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(string(
                        string_matcher::MatchPattern::Exact("jason".into()),
                    ))),
                    ..Default::default()
                }],
                ..prefix("/")
            },
        ),
        route(
            "query",
            RouteMatch {
                query_parameters: vec![QueryParameterMatcher {
                    name: "v".into(),
                    query_parameter_match_specifier: Some(
                        query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string(
                            string_matcher::MatchPattern::Prefix("2".into()),
                        )),
                    ),
                }],
                ..prefix("/")
            },
        ),
        Route {
            name: "split".into(),
            r#match: Some(prefix("/")),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: ["v1", "v2"]
                        .iter()
                        .map(|n| weighted_cluster::ClusterWeight {
                            name: n.to_string(),
                            weight: Some(UInt32Value { value: 50 }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })),
                ..Default::default()
            })),
            ..Default::default()
        },
    ];
    let table = RouteTable::compile(&RouteConfiguration {
        virtual_hosts: vec![
            VirtualHost {
                name: "other".into(),
                domains: vec!["other.example".into()],
                routes: vec![route("o", prefix("/"))],
                ..Default::default()
            },
            VirtualHost {
                name: "reviews".into(),
                domains: vec![
                    "reviews.default.svc.cluster.local".into(),
                    "*.reviews.example".into(),
                    "10.96.0.7".into(),
                ],
                routes,
                ..Default::default()
            },
        ],
        ..Default::default()
    })
    .unwrap();
    let requests: Vec<http::request::Parts> = [
        ("/exact", "reviews.default.svc.cluster.local", None),
        ("/ci/x", "Reviews.Default.svc.cluster.local", None),
        ("/x", "a.reviews.example", Some("jason")),
        ("/x?a=1&v=2.1", "10.96.0.7", None),
        ("/other", "10.96.0.7", None),
    ]
    .iter()
    .map(|(path, host, user)| {
        let mut b = http::Request::get(*path).header("host", *host).header("accept", "*/*");
        if let Some(u) = user {
            b = b.header("end-user", *u);
        }
        b.body(()).unwrap().into_parts().0
    })
    .collect();
    let expected = ["exact", "ci", "header", "query", "split"];

    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get().total_blocks;
    let mut picked = [""; 5];
    let mut clusters = [""; 5];
    for (i, parts) in requests.iter().enumerate() {
        let req = RequestParts {
            random: i as u64 * 37,
            ..RequestParts::new(parts, "10.0.0.1:1000".parse().unwrap())
        };
        let Selected::Route(r) = table.select(&req) else { panic!("no route for request {i}") };
        picked[i] = &r.name;
        if let weft_waypoint::route::Action::Forward(a) = &r.action
            && let ClusterSpecifier::Weighted(w) = &a.cluster
        {
            clusters[i] = &w.pick(req.random).name;
        }
    }
    let allocations = dhat::HeapStats::get().total_blocks - before;
    assert_eq!(picked, expected);
    assert!(!clusters[4].is_empty());
    assert_eq!(allocations, 0, "select allocated {allocations} times for {} requests", requests.len());
}
