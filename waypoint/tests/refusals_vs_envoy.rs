//! What the route compiler refuses, against what Envoy refuses (`envoy --mode validate`):
//! a configuration Envoy rejects must be refused (weft-waypoint NACKs where Envoy would);
//! one Envoy accepts must compile, except the features weft-waypoint refuses by design
//! (listed last), which Envoy must accept — otherwise the refusal would be Envoy's reason,
//! not ours. Needs no root.

mod envoy_static;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                HeaderValue as PbHeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
            },
            route::v3::{
                DirectResponseAction, HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration,
                RouteMatch, VirtualHost, WeightedCluster, header_matcher, retry_policy, route, route_action,
                route_match::PathSpecifier, weighted_cluster,
            },
        },
        extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate,
        r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher},
    },
    google::protobuf::{Duration as PbDuration, UInt32Value},
};
use weft_waypoint::route::RouteTable;

const CLUSTERS: &[&str] = &["a", "b"];

fn prefix(p: &str) -> RouteMatch {
    RouteMatch { path_specifier: Some(PathSpecifier::Prefix(p.into())), ..Default::default() }
}

fn to(cluster: &str, m: RouteMatch, a: RouteAction) -> Route {
    Route {
        name: "r".into(),
        r#match: Some(m),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: a
                .cluster_specifier
                .clone()
                .or(Some(route_action::ClusterSpecifier::Cluster(cluster.into()))),
            ..a
        })),
        ..Default::default()
    }
}

fn config(vhosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration { name: "rc".into(), virtual_hosts: vhosts, ..Default::default() }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn single(r: Route) -> RouteConfiguration {
    config(vec![vhost("v", &["*"], vec![r])])
}

fn with_route(f: impl FnOnce(&mut Route)) -> RouteConfiguration {
    let mut r = to("a", prefix("/"), RouteAction::default());
    f(&mut r);
    single(r)
}

fn action(a: RouteAction) -> RouteConfiguration {
    single(to("a", prefix("/"), a))
}

fn add(k: &str, v: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue { key: k.into(), value: v.into(), ..Default::default() }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher { regex: r.into(), ..Default::default() }
}

fn weighted(weights: &[u32], total: Option<u32>) -> RouteAction {
    #[expect(deprecated, reason = "Envoy still checks total_weight")]
    let w = WeightedCluster {
        clusters: weights
            .iter()
            .zip(CLUSTERS)
            .map(|(w, c)| weighted_cluster::ClusterWeight {
                name: c.to_string(),
                weight: Some(UInt32Value { value: *w }),
                ..Default::default()
            })
            .collect(),
        total_weight: total.map(|value| UInt32Value { value }),
        ..Default::default()
    };
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(w)),
        ..Default::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Envoy and weft-waypoint both refuse it.
    BothRefuse,
    /// Both accept it.
    BothAccept,
    /// Envoy accepts it, weft-waypoint refuses it by design.
    WeftRefuses,
}

fn cases() -> Vec<(&'static str, Expect, RouteConfiguration)> {
    use Expect::*;
    let header_string = |p: string_matcher::MatchPattern| HeaderMatcher {
        name: "x".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(p),
            ignore_case: false,
        })),
        ..Default::default()
    };
    vec![
        (
            "weftd-like route",
            BothAccept,
            with_route(|r| {
                r.request_headers_to_add = vec![add("x-a", "1"), add("x-src", "%DOWNSTREAM_REMOTE_ADDRESS%")];
                r.response_headers_to_remove = vec!["x-b".into()];
                r.action = Some(route::Action::Route(RouteAction {
                    timeout: Some(PbDuration::default()),
                    retry_policy: Some(RetryPolicy {
                        retry_on:
                            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,409"
                                .into(),
                        num_retries: Some(UInt32Value { value: 2 }),
                        retry_host_predicate: vec![retry_policy::RetryHostPredicate {
                            name: "envoy.retry_host_predicates.previous_hosts".into(),
                            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                                envoy_static::pack(&PreviousHostsPredicate::default()),
                            )),
                        }],
                        host_selection_retry_max_attempts: 5,
                        retriable_status_codes: vec![503],
                        ..Default::default()
                    }),
                    request_mirror_policies: vec![route_action::RequestMirrorPolicy {
                        cluster: "b".into(),
                        ..Default::default()
                    }],
                    ..weighted(&[90, 10], None)
                }));
            }),
        ),
        ("weights not adding to 100", BothAccept, action(weighted(&[3, 1], None))),
        (
            "duplicate domain",
            BothRefuse,
            config(vec![vhost("v1", &["a.example"], vec![]), vhost("v2", &["A.example"], vec![])]),
        ),
        (
            "two catch-all virtual hosts",
            BothRefuse,
            config(vec![vhost("v1", &["*"], vec![]), vhost("v2", &["*"], vec![])]),
        ),
        ("no domains", BothRefuse, config(vec![vhost("v1", &[], vec![])])),
        (
            "path_separated_prefix ending in /",
            BothRefuse,
            single(to(
                "a",
                RouteMatch {
                    path_specifier: Some(PathSpecifier::PathSeparatedPrefix("/a/".into())),
                    ..Default::default()
                },
                RouteAction::default(),
            )),
        ),
        (
            "bad regex",
            BothRefuse,
            single(to(
                "a",
                RouteMatch {
                    path_specifier: Some(PathSpecifier::SafeRegex(regex("(a"))),
                    ..Default::default()
                },
                RouteAction::default(),
            )),
        ),
        (
            "empty header prefix",
            BothRefuse,
            single(to(
                "a",
                RouteMatch {
                    headers: vec![header_string(string_matcher::MatchPattern::Prefix("".into()))],
                    ..prefix("/")
                },
                RouteAction::default(),
            )),
        ),
        (
            "prefix_rewrite with regex_rewrite",
            BothRefuse,
            action(RouteAction {
                prefix_rewrite: "/x".into(),
                regex_rewrite: Some(RegexMatchAndSubstitute {
                    pattern: Some(regex("a")),
                    substitution: "b".into(),
                }),
                ..Default::default()
            }),
        ),
        (
            "regex_rewrite naming a missing group",
            BothAccept,
            action(RouteAction {
                regex_rewrite: Some(RegexMatchAndSubstitute {
                    pattern: Some(regex("a")),
                    substitution: "\\1".into(),
                }),
                ..Default::default()
            }),
        ),
        ("weights adding to 0", BothRefuse, action(weighted(&[0, 0], None))),
        ("total_weight not the sum", BothAccept, action(weighted(&[90, 5], Some(100)))),
        ("adding :path", BothRefuse, with_route(|r| r.request_headers_to_add = vec![add(":path", "/x")])),
        ("removing host", BothRefuse, with_route(|r| r.request_headers_to_remove = vec!["host".into()])),
        (
            "unterminated formatter",
            BothRefuse,
            with_route(|r| r.request_headers_to_add = vec![add("x", "50%")]),
        ),
        (
            "unknown formatter",
            BothRefuse,
            with_route(|r| r.request_headers_to_add = vec![add("x", "%NOT_A_FORMATTER%")]),
        ),
        (
            "direct response status 100",
            BothRefuse,
            with_route(|r| {
                r.action = Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 100,
                    ..Default::default()
                }))
            }),
        ),
        (
            "retry back-off max below base",
            BothRefuse,
            action(RouteAction {
                retry_policy: Some(RetryPolicy {
                    retry_back_off: Some(retry_policy::RetryBackOff {
                        base_interval: Some(PbDuration { seconds: 1, nanos: 0 }),
                        max_interval: Some(PbDuration { seconds: 0, nanos: 500_000_000 }),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        ),
        (
            "hedge policy",
            WeftRefuses,
            action(RouteAction { hedge_policy: Some(Default::default()), ..Default::default() }),
        ),
        (
            "a formatter weft-waypoint lacks",
            WeftRefuses,
            with_route(|r| r.request_headers_to_add = vec![add("x", "%START_TIME%")]),
        ),
    ]
}

#[test]
fn refusals_agree_with_envoy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut wrong = Vec::new();
    for (i, (name, expect, cfg)) in cases().into_iter().enumerate() {
        let weft = RouteTable::compile(&cfg).map(|_| ()).map_err(|e| e.to_string());
        let envoy = envoy_static::validate(dir.path(), &format!("case{i}"), cfg, CLUSTERS)?;
        let agrees = match expect {
            Expect::BothRefuse => envoy.is_err() && weft.is_err(),
            Expect::BothAccept => envoy.is_ok() && weft.is_ok(),
            Expect::WeftRefuses => envoy.is_ok() && weft.is_err(),
        };
        if !agrees {
            let tail = |r: &Result<(), String>| match r {
                Ok(()) => "accepts".to_owned(),
                Err(e) => format!("refuses: {}", e.lines().rev().take(3).collect::<Vec<_>>().join(" | ")),
            };
            wrong.push(format!(
                "{name} (expected {expect:?}):\n  envoy {}\n  weft  {}",
                tail(&envoy),
                tail(&weft)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}
