//! L7 AuthorizationPolicy at the waypoint, in process: the chain's RBAC filters as weftd
//! writes them (a DENY filter, then an ALLOW filter, before fault and router), evaluated
//! against the client's verified HBONE identity and address; refusals are Envoy's 403
//! "RBAC: access denied" and never reach a backend.

mod support;

use envoy_types::pb::envoy::{
    config::{
        listener::v3::{Listener, filter},
        rbac::v3::{self as rbac, Permission, Policy, Principal, permission, principal, rbac::Action},
        route::v3::{HeaderMatcher, Route, header_matcher::HeaderMatchSpecifier},
    },
    extensions::filters::{
        http::rbac::v3::{Rbac, RbacPerRoute},
        network::http_connection_manager::v3::{HttpConnectionManager, HttpFilter, http_filter},
    },
    r#type::matcher::v3::{
        FilterStateMatcher, PathMatcher, RegexMatcher, StringMatcher, filter_state_matcher, path_matcher,
        string_matcher::MatchPattern,
    },
};
use http::StatusCode;
use prost::Message;
use std::{collections::HashMap, sync::Arc};
use support::{Mesh, REVIEWS, REVIEWS_V1, REVIEWS_V2, resources};
use weft_xds::type_url;

fn string(p: MatchPattern) -> StringMatcher {
    StringMatcher { match_pattern: Some(p), ignore_case: false }
}

fn path_prefix(p: &str) -> Permission {
    Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(string(MatchPattern::Prefix(p.into())))),
        })),
    }
}

fn header(name: &str, exact: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string(MatchPattern::Exact(
            exact.into(),
        )))),
        ..Default::default()
    }
}

/// Istio's principal matchers: the filter state `io.istio.peer_principal`.
fn peer(pattern: MatchPattern) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::FilterState(FilterStateMatcher {
            key: "io.istio.peer_principal".into(),
            matcher: Some(filter_state_matcher::Matcher::StringMatch(string(pattern))),
        })),
    }
}

fn namespace(ns: &str) -> Principal {
    peer(MatchPattern::SafeRegex(RegexMatcher { regex: format!(".*/ns/{ns}/.*"), ..Default::default() }))
}

fn any_id() -> Principal {
    Principal { identifier: Some(principal::Identifier::Any(true)) }
}

fn rbac_filter(action: Action, policies: Vec<(&str, Policy)>) -> HttpFilter {
    let config = Rbac {
        rules: Some(rbac::Rbac {
            action: action as i32,
            policies: policies.into_iter().map(|(n, p)| (n.to_owned(), p)).collect::<HashMap<_, _>>(),
            ..Default::default()
        }),
        ..Default::default()
    };
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(resources::any(&config))),
        ..Default::default()
    }
}

fn policy(permissions: Vec<Permission>, principals: Vec<Principal>) -> Policy {
    Policy { permissions, principals, ..Default::default() }
}

/// The usual `main_internal` with these RBAC filters first in the reviews chain (weftd's
/// order: RBAC, fault, router).
fn with_rbac(filters: Vec<HttpFilter>) -> Listener {
    let mut listener = support::main_internal();
    let chain = listener.filter_chains.iter_mut().find(|c| c.name == REVIEWS).unwrap();
    let Some(filter::ConfigType::TypedConfig(any)) = &mut chain.filters[0].config_type else { panic!() };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    hcm.http_filters.splice(0..0, filters);
    *any = resources::any(&hcm);
    listener
}

/// Publishes `listener` (and `routes`, else the usual table) and waits until they apply:
/// a new reviews chain, and with `routes` a new route table version.
async fn publish(mesh: &Mesh, version: &str, listener: Listener, routes: Option<Vec<Route>>) {
    let chain = |m: &Mesh| m.waypoint.shared.snapshot.load().dispatch[&support::reviews_vip()].clone();
    let route_version = |m: &Mesh| {
        m.waypoint.shared.xds_status.lock().unwrap().resources[type_url::ROUTE].get(REVIEWS).cloned()
    };
    let (chain_before, routes_before) = (chain(mesh), route_version(mesh));
    let new_routes = routes.is_some();
    let refs = mesh.backend_refs();
    let clusters = support::default_clusters(mesh.hbone_port, &refs);
    let routes = match routes {
        Some(r) => resources::route_table_of(REVIEWS, r),
        None => resources::route_table(REVIEWS, &[("/v2", REVIEWS_V2), ("/", REVIEWS_V1)]),
    };
    mesh.ads.server.publish(support::snapshot_with(version, listener, clusters, routes)).unwrap();
    mesh.wait_for("the listener and routes to apply", |m| {
        !Arc::ptr_eq(&chain(m), &chain_before) && (!new_routes || route_version(m) != routes_before)
    })
    .await;
}

fn assert_denied(a: &support::Answer) {
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    assert_eq!(a.body, "RBAC: access denied");
    assert_eq!(a.headers["content-type"], "text/plain");
}

#[tokio::test]
async fn deny_then_allow_by_path_method_and_header() {
    let mesh = Mesh::start().await;
    let deny = rbac_filter(
        Action::Deny,
        vec![(
            "ns[bookinfo]-policy[deny-admin]-rule[0]",
            policy(vec![path_prefix("/admin")], vec![any_id()]),
        )],
    );
    let allow = rbac_filter(
        Action::Allow,
        vec![
            (
                "get",
                policy(
                    vec![Permission { rule: Some(permission::Rule::Header(header(":method", "GET"))) }],
                    vec![namespace("bookinfo")],
                ),
            ),
            (
                "writer",
                policy(
                    vec![Permission { rule: Some(permission::Rule::Any(true)) }],
                    vec![Principal {
                        identifier: Some(principal::Identifier::Header(header("x-writer", "yes"))),
                    }],
                ),
            ),
        ],
    );
    publish(&mesh, "v2", with_rbac(vec![deny, allow]), None).await;

    let a = mesh.client.h1("GET", "/ratings", "").await;
    assert_eq!(a.status, StatusCode::OK, "GET from bookinfo is allowed: {a:?}");
    assert_denied(&mesh.client.h1("GET", "/admin/users", "").await);
    assert_denied(&mesh.client.h1("POST", "/ratings", "x").await);
    let a = mesh.client.h1_with("POST", "/ratings", &[("x-writer", "yes")], "x").await;
    assert_eq!(a.status, StatusCode::OK, "the header principal allows the POST: {a:?}");
    assert_denied(&mesh.client.h1_with("POST", "/admin", &[("x-writer", "yes")], "x").await);

    let seen: Vec<(String, String)> =
        mesh.backend("reviews-v1").requests().into_iter().map(|s| (s.method, s.path)).collect();
    assert_eq!(seen, [("GET".to_owned(), "/ratings".to_owned()), ("POST".to_owned(), "/ratings".to_owned())]);
}

#[tokio::test]
async fn principals_and_namespaces_are_the_clients_hbone_identity() {
    let mesh = Mesh::start().await;
    // Only clients of another namespace: the productpage client (bookinfo) is refused.
    let allow = rbac_filter(
        Action::Allow,
        vec![("other-ns", policy(vec![path_prefix("/")], vec![namespace("other")]))],
    );
    publish(&mesh, "v2", with_rbac(vec![allow]), None).await;
    assert_denied(&mesh.client.h1("GET", "/", "").await);

    // Its exact principal, by Istio's service-account regex and by exact match.
    let allow = rbac_filter(
        Action::Allow,
        vec![(
            "sa",
            policy(
                vec![path_prefix("/")],
                vec![peer(MatchPattern::SafeRegex(RegexMatcher {
                    regex: "spiffe://.+/ns/bookinfo/(.+/|)sa/productpage(/.+)?".into(),
                    ..Default::default()
                }))],
            ),
        )],
    );
    publish(&mesh, "v3", with_rbac(vec![allow]), None).await;
    assert_eq!(mesh.client.h1("GET", "/", "").await.status, StatusCode::OK);
    let deny = rbac_filter(
        Action::Deny,
        vec![(
            "me",
            policy(
                vec![path_prefix("/")],
                vec![peer(MatchPattern::Exact("spiffe://cluster.local/ns/bookinfo/sa/productpage".into()))],
            ),
        )],
    );
    publish(&mesh, "v4", with_rbac(vec![deny]), None).await;
    assert_denied(&mesh.client.h1("GET", "/", "").await);
    assert!(mesh.backend("reviews-v1").requests().len() == 1, "only the allowed request got through");
}

#[tokio::test]
async fn a_route_override_replaces_or_disables_the_chain_policy() {
    let mesh = Mesh::start().await;
    let deny_all = rbac_filter(Action::Deny, vec![("all", policy(vec![path_prefix("/")], vec![any_id()]))]);
    let mut open = resources::route("/v2", REVIEWS_V2, |_| {});
    open.typed_per_filter_config
        .insert("envoy.filters.http.rbac".into(), resources::any(&RbacPerRoute { rbac: None }));
    let only_get = Rbac {
        rules: Some(rbac::Rbac {
            action: Action::Allow as i32,
            policies: HashMap::from([(
                "get".to_owned(),
                policy(
                    vec![Permission { rule: Some(permission::Rule::Header(header(":method", "GET"))) }],
                    vec![any_id()],
                ),
            )]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut get_only = resources::route("/get", REVIEWS_V1, |_| {});
    get_only
        .typed_per_filter_config
        .insert("envoy.filters.http.rbac".into(), resources::any(&RbacPerRoute { rbac: Some(only_get) }));
    let routes = vec![open, get_only, resources::route("/", REVIEWS_V1, |_| {})];
    publish(&mesh, "v2", with_rbac(vec![deny_all]), Some(routes)).await;

    assert_eq!(mesh.client.h1("GET", "/v2/x", "").await.status, StatusCode::OK, "RBAC off on this route");
    assert_eq!(mesh.client.h1("GET", "/get", "").await.status, StatusCode::OK, "the route's own policy");
    assert_denied(&mesh.client.h1("POST", "/get", "").await);
    assert_denied(&mesh.client.h1("GET", "/other", "").await);
}

#[tokio::test]
async fn a_policy_that_cannot_be_evaluated_is_nacked_by_field() {
    let mesh = Mesh::start().await;
    let mut p = policy(vec![path_prefix("/")], vec![any_id()]);
    p.condition = Some(Default::default());
    let bad = rbac_filter(Action::Allow, vec![("cel", p)]);
    let refs = mesh.backend_refs();
    let clusters = support::default_clusters(mesh.hbone_port, &refs);
    let routes = resources::route_table(REVIEWS, &[("/", REVIEWS_V1)]);
    mesh.ads.server.publish(support::snapshot_with("v2", with_rbac(vec![bad]), clusters, routes)).unwrap();
    let nack_of =
        |m: &Mesh| m.waypoint.shared.xds_status.lock().unwrap().last_nack.get(type_url::LISTENER).cloned();
    mesh.wait_for("the NACK", |m| nack_of(m).is_some()).await;
    assert_eq!(
        nack_of(&mesh).unwrap(),
        "listener main_internal: filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.rules.\
         policies[\"cel\"].condition: not supported by weft-waypoint"
    );
    assert_eq!(mesh.client.h1("GET", "/", "").await.status, StatusCode::OK, "the old listener still serves");
}
