//! The waypoint's Envoy routes rule by rule, as Istio's translation makes them
//! (pilot/pkg/networking/core/route, route/retry, cluster_traffic_policy.go,
//! model/virtualservice.go, config/kube/gateway/conversion.go, security/authz): YAML →
//! store → translation, then the RouteConfiguration, Clusters and RBAC filters checked
//! field by field. The same rules run through a real Envoy in
//! tests/tests/route_conformance.rs.

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{Cluster, cluster::LbPolicy},
        rbac::v3::rbac,
        route::v3::{
            HeaderMatcher, Route, RouteAction, RouteConfiguration,
            header_matcher::HeaderMatchSpecifier,
            redirect_action,
            route::Action,
            route_action::{ClusterNotFoundResponseCode, ClusterSpecifier, hash_policy::PolicySpecifier},
            route_match::PathSpecifier,
        },
    },
    extensions::filters::http::{fault::v3::HttpFault, rbac::v3::Rbac},
};
use prost::Message;
use weft_controlplane::{
    config::{ConfigStore, SourceId},
    source::file::FileSource,
    translate::{self, Options, envoy::authorization},
};
use weft_xds::{server::Snapshot, type_url};

const MESH: &str = r#"apiVersion: v1
kind: Namespace
metadata: { name: bookinfo, labels: { istio.io/use-waypoint: waypoint } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: bookinfo }
spec: { gatewayClassName: istio-waypoint, listeners: [{ name: mesh, port: 15008, protocol: HBONE }] }
---
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo }
spec: { clusterIP: 10.96.0.10, ports: [{ name: http, port: 9080 }], selector: { app: reviews } }
---
apiVersion: v1
kind: Service
metadata: { name: ratings, namespace: bookinfo }
spec: { clusterIP: 10.96.0.11, ports: [{ name: http, port: 9080 }], selector: { app: ratings } }
"#;

const HOST: &str = "reviews.bookinfo.svc.cluster.local";

fn translate(extra: &str) -> (Snapshot, std::sync::Arc<weft_controlplane::config::ConfigSnapshot>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), format!("{MESH}{extra}")).unwrap();
    let mut store = ConfigStore::new();
    store.apply_all(SourceId::File, FileSource::read_once(dir.path()).unwrap());
    let errors: Vec<String> =
        store.diagnostics().iter().map(|d| d.to_string()).filter(|e| e.starts_with("error")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let cfg = store.snapshot();
    (translate::snapshot(&cfg, &Options::default()), cfg)
}

fn decoded<M: Message + Default>(snap: &Snapshot, type_url: &str) -> Vec<M> {
    snap.resources
        .get(type_url)
        .into_iter()
        .flatten()
        .map(|r| M::decode(r.resource.value.as_slice()).unwrap())
        .collect()
}

/// The route configuration of reviews' port 9080 on the waypoint (one per service port:
/// the waypoint's filter chain already chose the service).
fn port_routes(snap: &Snapshot) -> RouteConfiguration {
    let rcs: Vec<RouteConfiguration> = decoded(snap, type_url::ROUTE);
    let name = format!("inbound-vip|9080|http|{HOST}");
    rcs.into_iter().find(|rc| rc.name == name).unwrap_or_else(|| panic!("no route configuration {name}"))
}

/// The routes of the reviews virtual host.
fn routes(extra: &str) -> Vec<Route> {
    let (snap, _) = translate(extra);
    let rc = port_routes(&snap);
    assert_eq!(
        rc.validate_clusters.map(|v| v.value),
        Some(false),
        "a missing cluster must not reject the config"
    );
    assert_eq!(rc.virtual_hosts.len(), 1);
    rc.virtual_hosts[0].routes.clone()
}

fn vs(http: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: reviews, namespace: bookinfo }}\nspec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

fn action(r: &Route) -> &RouteAction {
    let Some(Action::Route(a)) = &r.action else { panic!("route action: {r:?}") };
    a
}

fn header<'a>(r: &'a Route, name: &str) -> &'a HeaderMatcher {
    r.r#match
        .as_ref()
        .unwrap()
        .headers
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no {name} in {r:?}"))
}

#[test]
fn default_route_has_istio_defaults_and_takes_any_host() {
    let (snap, _) = translate("");
    let rc = port_routes(&snap);
    let vh = &rc.virtual_hosts[0];
    // Istio's waypoint names it by port and takes any Host: the client may write the
    // service's name, its VIP, with or without the port; the Host goes upstream as written.
    assert_eq!((vh.name.as_str(), vh.domains.as_slice()), ("inbound|http|9080", &["*".to_owned()][..]));
    let a = action(&vh.routes[0]);
    assert_eq!(a.timeout.unwrap().seconds, 0, "Envoy's 15 s default off");
    let retry = a.retry_policy.as_ref().unwrap();
    assert_eq!(retry.retry_on, "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes");
    assert!(retry.retriable_status_codes.is_empty(), "no 503 retry (Istio >= 1.24)");
    assert_eq!(retry.retry_host_predicate[0].name, "envoy.retry_host_predicates.previous_hosts");
    assert_eq!(retry.host_selection_retry_max_attempts, 5);
}

#[test]
fn consistent_hash_puts_a_hash_policy_on_the_route() {
    let r = routes(
        &(r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  trafficPolicy: { loadBalancer: { consistentHash: { httpCookie: { name: session, path: /, ttl: 60s } } } }
  subsets:
    - name: v1
      labels: { version: v1 }
      trafficPolicy: { loadBalancer: { consistentHash: { useSourceIp: true } } }
"#
        .to_owned()
            + &vs(r#"    - match: [{ uri: { prefix: /v1 } }]
      route: [{ destination: { host: reviews, subset: v1 } }]
    - route: [{ destination: { host: reviews } }]
"#)),
    );
    let a = action(&r[0]);
    assert!(
        matches!(a.hash_policy[0].policy_specifier, Some(PolicySpecifier::ConnectionProperties(ref c)) if c.source_ip)
    );
    assert!(
        a.retry_policy.as_ref().unwrap().retry_host_predicate.is_empty(),
        "a hashed route keeps its host"
    );
    let Some(PolicySpecifier::Cookie(c)) = &action(&r[1]).hash_policy[0].policy_specifier else {
        panic!("cookie")
    };
    assert_eq!((c.name.as_str(), c.path.as_str(), c.ttl.unwrap().seconds), ("session", "/", 60));
    let (snap, _) = translate(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: reviews, namespace: bookinfo }\nspec: { host: reviews, trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x-user, minimumRingSize: 2048 } } } }\n",
    );
    let rc = port_routes(&snap);
    let vh = &rc.virtual_hosts[0];
    assert!(matches!(
        action(&vh.routes[0]).hash_policy[0].policy_specifier,
        Some(PolicySpecifier::Header(_))
    ));
    let clusters: Vec<Cluster> = decoded(&snap, type_url::CLUSTER);
    let c = clusters.iter().find(|c| c.name.ends_with(HOST)).unwrap();
    assert_eq!(c.lb_policy, LbPolicy::RingHash as i32);
}

#[test]
fn matches_presence_absence_and_source_conditions() {
    let r = routes(&vs(r#"    - match:
        - { headers: { x-a: {} }, withoutHeaders: { x-b: { exact: v } } }
        - { sourceLabels: { app: productpage } }
        - { sourceNamespace: bookinfo }
        - { gateways: [bookinfo/ingress] }
        - { port: 9999 }
      route: [{ destination: { host: reviews } }]
"#));
    assert_eq!(header(&r[0], "x-a").header_match_specifier, Some(HeaderMatchSpecifier::PresentMatch(true)));
    let b = header(&r[0], "x-b");
    assert!(b.invert_match && b.treat_missing_header_as_empty);
    // sourceLabels: Weft's metadata, and a header no request to a stock Envoy carries.
    assert!(r[1].metadata.as_ref().unwrap().filter_metadata.contains_key("weft.source"));
    assert_eq!(
        header(&r[1], ":weft-source").header_match_specifier,
        Some(HeaderMatchSpecifier::PresentMatch(true))
    );
    // sourceNamespace equal to the waypoint's: a stock waypoint matches everyone.
    assert!(r[2].metadata.is_some());
    assert!(r[2].r#match.as_ref().unwrap().headers.is_empty());
    assert_eq!(r.len(), 3, "other gateways and other ports are left out: {r:#?}");
}

#[test]
fn retries_parse_status_codes_and_attempts_zero_disables() {
    let r = routes(&vs(r#"    - match: [{ uri: { prefix: /a } }]
      route: [{ destination: { host: reviews } }]
      retries: { attempts: 3, retryOn: "5xx,409", perTryTimeout: 1s, retryRemoteLocalities: true }
    - route: [{ destination: { host: reviews } }]
      retries: { attempts: 0 }
"#));
    let p = action(&r[0]).retry_policy.as_ref().unwrap();
    assert_eq!(
        (p.retry_on.as_str(), p.retriable_status_codes.as_slice()),
        ("5xx,retriable-status-codes", &[409][..])
    );
    assert_eq!(p.per_try_timeout.unwrap().seconds, 1);
    assert!(p.retry_priority.is_some());
    assert!(action(&r[1]).retry_policy.is_none());
}

#[test]
fn faults_follow_istio_percentages() {
    let r = routes(&vs(
        r#"    - fault: { abort: { httpStatus: 500 }, delay: { fixedDelay: 2s, percentage: { value: 50 } } }
      route: [{ destination: { host: reviews } }]
"#,
    ));
    let f =
        HttpFault::decode(r[0].typed_per_filter_config["envoy.filters.http.fault"].value.as_slice()).unwrap();
    assert_eq!(f.abort.unwrap().percentage, None, "no percentage: Envoy aborts 0 %");
    assert_eq!(f.delay.unwrap().percentage.unwrap().numerator, 500_000);
}

#[test]
fn delegation_is_merged_and_a_missing_delegate_drops_only_its_route() {
    let r = routes(
        &(vs(r#"    - match: [{ uri: { prefix: /api } }]
      delegate: { name: api }
    - match: [{ uri: { prefix: /gone } }]
      delegate: { name: does-not-exist }
    - route: [{ destination: { host: reviews } }]
"#) + r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: api, namespace: bookinfo }
spec:
  http:
    - match: [{ uri: { prefix: /api/v2 } }]
      route: [{ destination: { host: ratings } }]
"#),
    );
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(r[0].r#match.as_ref().unwrap().path_specifier, Some(PathSpecifier::Prefix("/api/v2".into())));
    assert_eq!(
        action(&r[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster("inbound-vip|9080|http|ratings.bookinfo.svc.cluster.local".into()))
    );
    for route in &r {
        if let Some(ClusterSpecifier::WeightedClusters(w)) = &action(route).cluster_specifier {
            assert!(!w.clusters.is_empty());
        }
    }
}

#[test]
fn headers_authority_redirect_ports_and_mirrors() {
    let r = routes(&vs(r#"    - match: [{ uri: { exact: /r } }]
      redirect: { uri: /x, derivePort: FROM_REQUEST_PORT }
    - match: [{ uri: { exact: /r80 } }]
      redirect: { uri: /x, port: 80 }
    - headers: { request: { set: { ":authority": a.example, x-k: v }, remove: [x-r] } }
      mirror: { host: ratings }
      mirrorPercentage: { value: 0 }
      mirrors: [{ destination: { host: ratings }, percentage: { value: 25 } }]
      route:
        - destination: { host: reviews }
          weight: 100
          headers: { request: { set: { x-dest: "1" } } }
        - destination: { host: ratings }
          weight: 0
"#));
    let Some(Action::Redirect(rd)) = &r[0].action else { panic!("redirect") };
    assert_eq!(rd.port_redirect, 9080);
    assert_eq!(
        rd.path_rewrite_specifier,
        Some(redirect_action::PathRewriteSpecifier::PathRedirect("/x".into()))
    );
    let Some(Action::Redirect(rd80)) = &r[1].action else { panic!("redirect") };
    assert_eq!(rd80.port_redirect, 0, "no explicit :80 on http");
    let route = &r[2];
    let keys: Vec<&str> =
        route.request_headers_to_add.iter().map(|h| h.header.as_ref().unwrap().key.as_str()).collect();
    assert_eq!(keys, ["x-k"], "pseudo-headers and host are never set");
    assert_eq!(route.request_headers_to_remove, ["x-r"]);
    let a = action(route);
    assert!(a.host_rewrite_specifier.is_some());
    assert_eq!(a.request_mirror_policies.len(), 1, "0 % mirrors nothing; 25 % of mirrors[0]");
    assert_eq!(
        a.request_mirror_policies[0].runtime_fraction.as_ref().unwrap().default_value.unwrap().numerator,
        250_000
    );
    let Some(ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else { panic!("weighted") };
    assert_eq!(w.clusters.len(), 1, "zero weights are left out");
    assert_eq!(w.clusters[0].request_headers_to_add[0].header.as_ref().unwrap().key, "x-dest");
}

#[test]
fn a_route_that_cannot_be_translated_is_left_out_alone() {
    let r = routes(&vs(r#"    - match: [{ uri: { prefix: /bad } }]
      redirect: { uri: /x, redirectCode: 399 }
    - route: [{ destination: { host: reviews } }]
"#));
    assert_eq!(r.len(), 1, "{r:#?}");
}

#[test]
fn subset_clusters_merge_the_rule_policy_field_by_field() {
    let (snap, _) = translate(
        r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN }
    connectionPool: { tcp: { maxConnections: 7 } }
  subsets:
    - name: v2
      labels: { version: v2 }
      trafficPolicy: { connectionPool: { http: { http1MaxPendingRequests: 1 } } }
"#,
    );
    let clusters: Vec<Cluster> = decoded(&snap, type_url::CLUSTER);
    let v2 = clusters.iter().find(|c| c.name.contains("/v2|")).unwrap();
    assert_eq!(v2.lb_policy, LbPolicy::RoundRobin as i32, "inherited");
    let t = &v2.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_pending_requests.unwrap().value, 1);
    assert_eq!(t.max_connections.unwrap().value, u32::MAX, "the subset's pool replaces the rule's");
}

#[test]
fn http_routes_sort_by_precedence_and_answer_500_for_missing_backends() {
    let r = routes(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: bookinfo }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
    - backendRefs: [{ name: reviews, port: 9080 }]
    - matches: [{ path: { type: PathPrefix, value: /a } }]
      filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplaceFullPath, replaceFullPath: /full } } }]
      backendRefs: [{ name: missing, port: 9080 }]
    - matches: [{ path: { type: Exact, value: /a/b } }]
      backendRefs: [{ name: reviews, port: 9080 }, { group: example.com, kind: Thing, name: x, port: 1 }]
"#,
    );
    let paths: Vec<_> =
        r.iter().map(|x| x.r#match.as_ref().unwrap().path_specifier.clone().unwrap()).collect();
    assert_eq!(
        paths,
        [
            PathSpecifier::Path("/a/b".into()),
            PathSpecifier::PathSeparatedPrefix("/a".into()),
            PathSpecifier::Prefix("/".into())
        ]
    );
    let a = action(&r[1]);
    assert_eq!(a.cluster_not_found_response_code, ClusterNotFoundResponseCode::InternalServerError as i32);
    assert_eq!(a.regex_rewrite.as_ref().unwrap().substitution, "/full");
    let Some(ClusterSpecifier::WeightedClusters(w)) = &action(&r[0]).cluster_specifier else {
        panic!("weighted")
    };
    assert_eq!(w.clusters[1].name, "UnknownService", "an unsupported backend kind answers 500 for its share");
}

#[test]
fn authorization_policies_become_deny_then_allow_rbac_filters() {
    let (_, cfg) = translate(
        r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow, namespace: bookinfo }
spec:
  targetRefs: [{ kind: Service, group: "", name: reviews }]
  rules: [{ to: [{ operation: { methods: [GET] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny, namespace: bookinfo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules: [{ to: [{ operation: { paths: [/admin] } }] }]
"#,
    );
    let svc = |name: &str| cfg.services.get("bookinfo", name).unwrap().clone();
    let filters =
        authorization::http_filters(&cfg, &Options::default(), ("bookinfo", "waypoint"), &svc("reviews"));
    let rules: Vec<_> = filters
        .iter()
        .map(|f| {
            let Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(any)) = &f.config_type else { panic!() };
            Rbac::decode(any.value.as_slice()).unwrap().rules.unwrap()
        })
        .collect();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].action, rbac::Action::Deny as i32);
    assert!(rules[0].policies.contains_key("ns[bookinfo]-policy[deny]-rule[0]"));
    assert_eq!(rules[1].action, rbac::Action::Allow as i32);
    let ratings =
        authorization::http_filters(&cfg, &Options::default(), ("bookinfo", "waypoint"), &svc("ratings"));
    assert_eq!(ratings.len(), 1, "only the waypoint-wide DENY");
}

#[test]
fn services_named_alike_get_route_configurations_of_their_own() {
    let (snap, _) = translate(
        r#"---
apiVersion: v1
kind: Namespace
metadata: { name: other, labels: { istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: bookinfo } }
---
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: other }
spec: { clusterIP: 10.96.0.12, ports: [{ name: http, port: 9080 }] }
"#,
    );
    let rcs: Vec<RouteConfiguration> = decoded(&snap, type_url::ROUTE);
    let names: std::collections::HashSet<&str> = rcs.iter().map(|rc| rc.name.as_str()).collect();
    assert!(names.contains(format!("inbound-vip|9080|http|{HOST}").as_str()), "{names:?}");
    assert!(names.contains("inbound-vip|9080|http|reviews.other.svc.cluster.local"), "{names:?}");
}

/// istiod's `resolvePorts` (pilot/pkg/model/gateway.go): an Istio Gateway's server port is
/// its Service's port; the gateway's listener binds the targetPort that port reaches on
/// the gateway's pods (the gateway chart: 80 → 8080), and the number as written when no
/// Service of those pods has it. The route configuration is named after the bound port.
#[test]
fn gateway_server_ports_resolve_to_the_gateway_services_target_ports() {
    let gateway = r#"---
apiVersion: v1
kind: Pod
metadata: { name: ingress-1, namespace: istio-system, labels: { istio: ingressgateway } }
spec: { nodeName: n1, containers: [{ name: istio-proxy }] }
status: { podIP: 10.1.0.9 }
---
apiVersion: v1
kind: Service
metadata: { name: istio-ingressgateway, namespace: istio-system }
spec:
  clusterIP: 10.96.0.99
  selector: { istio: ingressgateway }
  ports: [{ name: http2, port: 80, targetPort: 8080 }, { name: https, port: 443, targetPort: 8443 }]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: ingress, namespace: istio-system }
spec:
  selector: { istio: ingressgateway }
  servers:
    - { port: { number: 80, name: http, protocol: HTTP }, hosts: ["*"] }
    - { port: { number: 9000, name: http-other, protocol: HTTP }, hosts: ["*"] }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews-ingress, namespace: bookinfo }
spec:
  hosts: [reviews.example.com]
  gateways: [istio-system/ingress]
  http: [{ route: [{ destination: { host: reviews } }] }]
"#;
    let (snap, _) = translate(gateway);
    let listeners: Vec<envoy_types::pb::envoy::config::listener::v3::Listener> =
        decoded(&snap, type_url::LISTENER);
    let mut names: Vec<&str> =
        listeners.iter().map(|l| l.name.as_str()).filter(|n| n.starts_with("gateway_")).collect();
    names.sort_unstable();
    assert_eq!(names, ["gateway_8080", "gateway_9000"], "80 → the Service's 8080; 9000 as written");
    let routes: Vec<RouteConfiguration> = decoded(&snap, type_url::ROUTE);
    for name in ["http.8080", "http.9000"] {
        let rc = routes.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(rc.virtual_hosts[0].domains, ["reviews.example.com"]);
    }
}

/// Gateway API attachment to an ingress Gateway's listeners, as Istio does it: every
/// HTTPRoute of a host is merged into that host's one virtual host (two routes without
/// hostnames both serve the listener); a parentRef's sectionName picks one listener; a
/// listener admits routes of its own namespace only unless `allowedRoutes` says All or
/// names a namespace selector.
#[test]
fn gateway_api_routes_merge_per_host_and_attach_as_the_listener_allows() {
    let (snap, _) = translate(
        r#"---
apiVersion: v1
kind: Namespace
metadata: { name: web, labels: { team: web } }
---
apiVersion: v1
kind: Namespace
metadata: { name: third }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: gw, namespace: bookinfo }
spec:
  gatewayClassName: istio
  listeners:
    - { name: http, port: 80, protocol: HTTP }
    - { name: all, port: 81, protocol: HTTP, allowedRoutes: { namespaces: { from: All } } }
    - name: team
      port: 82
      protocol: HTTP
      allowedRoutes:
        namespaces:
          from: Selector
          selector: { matchExpressions: [{ key: team, operator: In, values: [web, ops] }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: a, namespace: bookinfo }
spec:
  parentRefs: [{ name: gw }]
  rules: [{ matches: [{ path: { type: PathPrefix, value: /a } }], backendRefs: [{ name: reviews, port: 9080 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: b, namespace: bookinfo }
spec:
  parentRefs: [{ name: gw, sectionName: http }]
  rules: [{ matches: [{ path: { type: Exact, value: /b } }], backendRefs: [{ name: ratings, port: 9080 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: c, namespace: web }
spec:
  parentRefs: [{ name: gw, namespace: bookinfo }]
  rules: [{ matches: [{ path: { type: PathPrefix, value: /c } }], backendRefs: [{ name: web, port: 80 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: d, namespace: third }
spec:
  parentRefs: [{ name: gw, namespace: bookinfo, port: 81 }]
  rules: [{ matches: [{ path: { type: PathPrefix, value: /d } }], backendRefs: [{ name: third, port: 80 }] }]
"#,
    );
    let routes: Vec<RouteConfiguration> = decoded(&snap, type_url::ROUTE);
    let paths = |name: &str| -> Vec<String> {
        let Some(rc) = routes.iter().find(|r| r.name == name) else { return Vec::new() };
        assert_eq!(rc.virtual_hosts.len(), 1, "one virtual host for `*`: {rc:?}");
        assert_eq!(rc.virtual_hosts[0].domains, ["*"]);
        rc.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| match r.r#match.as_ref().unwrap().path_specifier.clone().unwrap() {
                PathSpecifier::Path(p) | PathSpecifier::Prefix(p) | PathSpecifier::PathSeparatedPrefix(p) => {
                    p
                }
                other => format!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(paths("http.80"), ["/b", "/a"], "both bookinfo routes, merged by precedence (Exact first)");
    assert_eq!(
        paths("http.81"),
        ["/a", "/d", "/c"],
        "any namespace, ties by namespace/name (third/d before web/c); b names the other listener"
    );
    assert_eq!(paths("http.82"), ["/c"], "only the namespace the selector picks");
}

/// Service ratings in namespace `other`.
const OTHER_RATINGS: &str = r#"---
apiVersion: v1
kind: Namespace
metadata: { name: other }
---
apiVersion: v1
kind: Service
metadata: { name: ratings, namespace: other }
spec: { clusterIP: 10.96.0.21, ports: [{ name: http, port: 9080 }], selector: { app: ratings } }
"#;

/// An HTTPRoute on reviews whose `/cross` rule sends everything to ratings in namespace
/// `other`, with `grants` beside it.
fn cross_namespace_route(grants: &str) -> String {
    format!(
        r#"{OTHER_RATINGS}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: reviews, namespace: bookinfo }}
spec:
  parentRefs: [{{ group: "", kind: Service, name: reviews, port: 9080 }}]
  rules:
    - matches: [{{ path: {{ type: PathPrefix, value: /cross }} }}]
      backendRefs: [{{ name: ratings, namespace: other, port: 9080 }}]
{grants}"#
    )
}

/// A ReferenceGrant in `namespace` from `from` to `to` (flow-style YAML entries).
fn grant(namespace: &str, from: &str, to: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{ name: g, namespace: {namespace} }}\nspec:\n  from: [{from}]\n  to: [{to}]\n"
    )
}

const FROM_BOOKINFO_ROUTES: &str =
    "{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: bookinfo }";
const TO_SERVICES: &str = r#"{ group: "", kind: Service }"#;
const RATINGS_OTHER: &str = "inbound-vip|9080|http|ratings.other.svc.cluster.local";

/// The cluster the `/cross` rule sends to.
fn cross_cluster(grants: &str) -> String {
    let r = routes(&cross_namespace_route(grants));
    let cross = r
        .iter()
        .find(|x| {
            x.r#match.as_ref().unwrap().path_specifier
                == Some(PathSpecifier::PathSeparatedPrefix("/cross".into()))
        })
        .unwrap_or_else(|| panic!("no /cross route in {r:#?}"));
    let a = action(cross);
    assert_eq!(a.cluster_not_found_response_code, ClusterNotFoundResponseCode::InternalServerError as i32);
    let Some(ClusterSpecifier::Cluster(c)) = &a.cluster_specifier else { panic!("one cluster: {a:?}") };
    c.clone()
}

#[test]
fn a_backend_in_another_namespace_needs_a_reference_grant_there() {
    assert_eq!(cross_cluster(""), "UnknownService", "no grant: the backend answers 500");
    assert_eq!(cross_cluster(&grant("other", FROM_BOOKINFO_ROUTES, TO_SERVICES)), RATINGS_OTHER);
    let to_ratings = r#"{ group: "", kind: Service, name: ratings }"#;
    assert_eq!(cross_cluster(&grant("other", FROM_BOOKINFO_ROUTES, to_ratings)), RATINGS_OTHER);
}

#[test]
fn a_reference_grant_counts_only_for_its_namespaces_kinds_and_name() {
    let cases = [
        (
            "another Service's name",
            grant("other", FROM_BOOKINFO_ROUTES, r#"{ group: "", kind: Service, name: details }"#),
        ),
        (
            "routes of another namespace",
            grant(
                "other",
                "{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: elsewhere }",
                TO_SERVICES,
            ),
        ),
        ("a grant in another namespace", grant("bookinfo", FROM_BOOKINFO_ROUTES, TO_SERVICES)),
        (
            "Gateways, not HTTPRoutes",
            grant(
                "other",
                "{ group: gateway.networking.k8s.io, kind: Gateway, namespace: bookinfo }",
                TO_SERVICES,
            ),
        ),
        ("Secrets, not Services", grant("other", FROM_BOOKINFO_ROUTES, r#"{ group: "", kind: Secret }"#)),
    ];
    for (why, grants) in cases {
        assert_eq!(cross_cluster(&grants), "UnknownService", "a grant for {why} does not count");
    }
}

#[test]
fn an_ungranted_share_and_mirror_answer_nothing_while_the_rest_still_route() {
    let route = |grants: &str| {
        routes(&format!(
            "{}    - matches: [{{ path: {{ type: PathPrefix, value: /split }} }}]
      filters: [{{ type: RequestMirror, requestMirror: {{ backendRef: {{ name: ratings, namespace: other, port: 9080 }} }} }}]
      backendRefs: [{{ name: reviews, port: 9080, weight: 3 }}, {{ name: ratings, namespace: other, port: 9080, weight: 1 }}]
{grants}",
            cross_namespace_route("")
        ))
    };
    let split = |r: &[Route]| {
        let a = action(
            r.iter()
                .find(|x| {
                    x.r#match.as_ref().unwrap().path_specifier
                        == Some(PathSpecifier::PathSeparatedPrefix("/split".into()))
                })
                .unwrap(),
        )
        .clone();
        let Some(ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else { panic!("weighted") };
        let shares: Vec<String> = w.clusters.iter().map(|c| c.name.clone()).collect();
        let mirrors: Vec<String> = a.request_mirror_policies.iter().map(|m| m.cluster.clone()).collect();
        (shares, mirrors)
    };
    let reviews = "inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local";
    let (shares, mirrors) = split(&route(""));
    assert_eq!(shares, [reviews, "UnknownService"], "the same-namespace share needs no grant");
    assert_eq!(mirrors, ["UnknownService"], "an ungranted mirror goes to no cluster");
    let (shares, mirrors) = split(&route(&grant("other", FROM_BOOKINFO_ROUTES, TO_SERVICES)));
    assert_eq!(shares, [reviews, RATINGS_OTHER]);
    assert_eq!(mirrors, [RATINGS_OTHER]);
}

/// At an ingress Gateway, a backend in another namespace gets a cluster only once a
/// ReferenceGrant there lets the route reach it (without one its share answers 500 and
/// no cluster is built for it).
#[test]
fn an_ingress_gateway_builds_clusters_only_for_granted_backends() {
    let yaml = |grants: &str| {
        format!(
            r#"{OTHER_RATINGS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: gw, namespace: bookinfo }}
spec: {{ gatewayClassName: istio, listeners: [{{ name: http, port: 80, protocol: HTTP }}] }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: r, namespace: bookinfo }}
spec:
  parentRefs: [{{ name: gw }}]
  rules: [{{ backendRefs: [{{ name: ratings, namespace: other, port: 9080 }}] }}]
{grants}"#
        )
    };
    let gateway_clusters = |grants: &str| -> Vec<String> {
        let (snap, _) = translate(&yaml(grants));
        let clusters: Vec<Cluster> = decoded(&snap, type_url::CLUSTER);
        clusters.into_iter().map(|c| c.name).filter(|n| n.contains("ratings.other")).collect()
    };
    assert!(gateway_clusters("").is_empty(), "{:?}", gateway_clusters(""));
    assert!(!gateway_clusters(&grant("other", FROM_BOOKINFO_ROUTES, TO_SERVICES)).is_empty());
}
