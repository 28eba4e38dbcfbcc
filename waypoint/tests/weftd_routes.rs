//! The contract between weftd and weft-waypoint: every RouteConfiguration weftd translates
//! for a waypoint — here from VirtualServices and an HTTPRoute using most of what Istio's
//! traffic management offers — is compiled by `RouteTable` without a NACK, and accepted
//! by a real Envoy (`envoy --mode validate`), so both proxies run the same configuration.
//! In-process weftd translation (YAML → store → translate), no root.

mod envoy_static;

use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route::Action, route_action::ClusterSpecifier,
};
use prost::Message;
use std::collections::BTreeSet;
use weft_controlplane::{
    config::{ConfigStore, SourceId},
    source::file::FileSource,
    translate::{self, Options},
};
use weft_waypoint::route::{RequestParts, RouteTable};
use weft_xds::type_url;

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: { name: bookinfo, labels: { istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint } }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v1, namespace: bookinfo, labels: { app: reviews, version: v1 } }
spec: { nodeName: n1, serviceAccountName: reviews, containers: [{ name: app, ports: [{ name: http, containerPort: 9080 }] }] }
status: { podIP: 10.1.1.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: ratings-v1, namespace: bookinfo, labels: { app: ratings, version: v1 } }
spec: { nodeName: n1, serviceAccountName: ratings, containers: [{ name: app, ports: [{ name: http, containerPort: 9080 }] }] }
status: { podIP: 10.1.1.3 }
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
kind: Service
metadata: { name: details, namespace: bookinfo }
spec: { clusterIP: 10.96.0.12, ports: [{ name: http, port: 9080, targetPort: 9080 }], selector: { app: details } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: bookinfo }
spec: { gatewayClassName: istio-waypoint, listeners: [{ name: mesh, port: 15008, protocol: HBONE }] }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x-user } } }
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
    - { name: v3, labels: { version: v3 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: bookinfo }
spec:
  hosts: [reviews]
  http:
    - name: jason
      match:
        - headers: { end-user: { exact: jason } }
        - headers: { x-canary: { prefix: "yes" } }
          queryParams: { debug: { exact: "1" } }
      route: [{ destination: { host: reviews, subset: v2 } }]
      timeout: 3s
      retries: { attempts: 5, perTryTimeout: 1s, retryOn: "5xx,409" }
      fault:
        delay: { fixedDelay: 7s, percentage: { value: 50 } }
        abort: { httpStatus: 500, percentage: { value: 10 } }
    - name: regex
      match: [{ uri: { regex: "/reviews/[0-9]+" }, ignoreUriCase: true, method: { exact: GET } }]
      route: [{ destination: { host: reviews, subset: v3 } }]
      headers:
        request: { set: { x-set: a }, add: { x-add: b }, remove: [x-remove] }
        response: { set: { x-resp: c } }
    - name: old
      match: [{ uri: { prefix: /old } }]
      redirect: { uri: /new, authority: reviews.example, redirectCode: 308 }
    - name: rewrite
      match: [{ uri: { exact: /v1/api } }]
      rewrite: { uri: /api, authority: reviews.internal }
      route: [{ destination: { host: reviews, subset: v1 } }]
      mirror: { host: ratings }
      mirrorPercentage: { value: 25 }
    - name: without
      match: [{ withoutHeaders: { x-skip: { exact: "1" } }, uri: { prefix: /w } }]
      route: [{ destination: { host: reviews, subset: v1 } }]
      retries: { attempts: 0 }
    - name: from-productpage
      match:
        - { sourceLabels: { app: productpage }, uri: { prefix: /s } }
        - { sourceNamespace: bookinfo, uri: { prefix: /n } }
        - { sourceNamespace: elsewhere, uri: { prefix: /e } }
      route: [{ destination: { host: reviews, subset: v3 } }]
      retries: { attempts: 2, retryOn: "gateway-error,503", retryRemoteLocalities: true }
    - name: split
      route:
        - { destination: { host: reviews, subset: v1 }, weight: 80 }
        - destination: { host: reviews, subset: v3 }
          weight: 20
          headers: { request: { set: { x-subset: v3 } } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings, namespace: bookinfo }
spec:
  hosts: [ratings]
  http:
    - match: [{ uri: { prefix: /health } }]
      directResponse: { status: 200, body: { string: ok } }
    - fault: { abort: { httpStatus: 503, percentage: { value: 100 } } }
      route: [{ destination: { host: ratings } }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: details, namespace: bookinfo }
spec:
  parentRefs: [{ group: "", kind: Service, name: details, port: 9080 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /v2 } }]
      filters:
        - type: URLRewrite
          urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /v1 } }
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [{ name: x-version, value: v2 }] }
      backendRefs: [{ name: details, port: 9080 }]
    - matches: [{ path: { type: Exact, value: /moved } }]
      filters:
        - type: RequestRedirect
          requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /here }, statusCode: 301 }
    - backendRefs: [{ name: details, port: 9080, weight: 3 }, { name: ratings, port: 9080, weight: 1 }]
"#;

fn route_configurations() -> Vec<(String, RouteConfiguration)> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let mut store = ConfigStore::new();
    store.apply_all(SourceId::File, FileSource::read_once(dir.path()).unwrap());
    let errors: Vec<String> = store.diagnostics().iter().map(|d| d.to_string()).collect();
    assert!(errors.iter().all(|e| !e.starts_with("error")), "{errors:#?}");
    let snap = translate::snapshot(&store.snapshot(), &Options::default());
    snap.resources
        .get(type_url::ROUTE)
        .into_iter()
        .flatten()
        .map(|r| (r.name.clone(), RouteConfiguration::decode(r.resource.value.as_slice()).unwrap()))
        .collect()
}

/// The clusters a route configuration names (for Envoy's cluster validation).
fn clusters(rc: &RouteConfiguration) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rc.virtual_hosts.iter().flat_map(|v| &v.routes) {
        if let Some(Action::Route(a)) = &r.action {
            match &a.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => _ = out.insert(c.clone()),
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    out.extend(w.clusters.iter().map(|c| c.name.clone()))
                }
                _ => {}
            }
            out.extend(a.request_mirror_policies.iter().map(|m| m.cluster.clone()));
        }
    }
    out
}

#[test]
fn every_route_configuration_weftd_sends_compiles_and_envoy_accepts_it() -> anyhow::Result<()> {
    let configs = route_configurations();
    assert!(!configs.is_empty(), "weftd sent no route configuration");
    let dir = tempfile::tempdir()?;
    let mut failures = Vec::new();
    for (i, (name, rc)) in configs.iter().enumerate() {
        if let Err(e) = RouteTable::compile(rc) {
            failures.push(format!("weft-waypoint refuses {name}: {e}"));
        }
        let names: Vec<String> = clusters(rc).into_iter().collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Err(e) = envoy_static::validate(dir.path(), &format!("weftd{i}"), rc.clone(), &names)? {
            failures.push(format!(
                "Envoy refuses {name}: {}",
                e.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // And the table routes a VirtualService match as written: jason to v2.
    let all: Vec<RouteTable> = configs.iter().map(|(_, rc)| RouteTable::compile(rc).unwrap()).collect();
    let parts = http::Request::get("/reviews/1")
        .header("host", "reviews.bookinfo.svc.cluster.local:9080")
        .header("end-user", "jason")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let req = RequestParts {
        strip_port: weft_waypoint::route::StripPort::Any,
        ..RequestParts::new(&parts, "10.1.1.9:1".parse()?)
    };
    let picked: Vec<String> = all
        .iter()
        .filter_map(|t| t.select(&req).route())
        .filter_map(|r| match &r.action {
            weft_waypoint::route::Action::Forward(a) => a.pick_cluster(&req).map(|c| c.name.to_string()),
            _ => None,
        })
        .collect();
    assert!(picked.iter().any(|c| c.contains("|v2|") || c.contains("http/v2")), "{picked:?}");
    Ok(())
}
