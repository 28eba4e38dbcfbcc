//! Translation from validated config to xDS resources: the workload API for agents and
//! standard Envoy resources for waypoints. In-process: YAML → file source → store →
//! translate, then the resources decoded and checked field by field.

use envoy_types::pb::envoy::config::{
    cluster::v3::{Cluster, cluster::LbPolicy},
    endpoint::v3::ClusterLoadAssignment,
    route::v3::{
        RouteConfiguration, route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
    },
};
use prost::Message;
use weft_controlplane::{
    config::{ConfigStore, SourceId},
    source::file::FileSource,
    translate::{self, Options},
};
use weft_xds::{
    istio::{
        pod_uid,
        security::Authorization,
        workload::{Address, TunnelProtocol, address},
    },
    server::{ProxyIdentity, Snapshot},
    type_url,
};

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: { name: bookinfo, labels: { istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint } }
---
apiVersion: v1
kind: Namespace
metadata: { name: legacy }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v1, namespace: bookinfo, uid: 0b6f1f8e-5f2a-4c1e-9d3b-7a0e2c4d6f81, labels: { app: reviews, version: v1 } }
spec: { nodeName: n1, serviceAccountName: reviews, containers: [{ name: app, ports: [{ name: http, containerPort: 9080 }] }] }
status: { podIP: 10.1.1.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: reviews-v2, namespace: bookinfo, labels: { app: reviews, version: v2, istio.io/dataplane-mode: none } }
spec: { nodeName: n2, containers: [{ name: app, ports: [{ name: http, containerPort: 9080 }] }] }
status: { podIP: 10.1.2.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: old, namespace: legacy, labels: { app: old } }
spec: { nodeName: n2 }
status: { podIP: 10.1.2.3 }
---
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo }
spec: { clusterIP: 10.96.0.10, ports: [{ name: http, port: 9080, targetPort: http }], selector: { app: reviews } }
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
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN }
    connectionPool: { tcp: { maxConnections: 7 }, http: { http1MaxPendingRequests: 3 } }
    outlierDetection: { consecutive5xxErrors: 4, interval: 5s, baseEjectionTime: 30s }
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: { name: reviews, namespace: bookinfo }
spec:
  hosts: [reviews]
  http:
    - match: [{ headers: { end-user: { exact: jason } } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
      timeout: 3s
      retries: { attempts: 5, perTryTimeout: 1s, retryOn: 5xx }
    - route:
        - { destination: { host: reviews, subset: v1 }, weight: 9 }
        - { destination: { host: reviews, subset: v2 }, weight: 1 }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: reviews-v1-only, namespace: bookinfo }
spec:
  selector: { matchLabels: { version: v1 } }
  action: ALLOW
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/bookinfo/sa/productpage"] } }], to: [{ operation: { ports: ["9080"] } }] }]
"#;

fn translate(yaml: &str) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), yaml).unwrap();
    let mut store = ConfigStore::new();
    store.apply_all(SourceId::File, FileSource::read_once(dir.path()).unwrap());
    let errors: Vec<String> = store.diagnostics().iter().map(|d| d.to_string()).collect();
    assert!(errors.iter().all(|e| !e.starts_with("error")), "{errors:#?}");
    translate::snapshot(&store.snapshot(), &Options::default())
}

fn decoded<M: Message + Default>(snap: &Snapshot, type_url: &str) -> Vec<(String, M)> {
    snap.resources
        .get(type_url)
        .into_iter()
        .flatten()
        .map(|r| (r.name.clone(), M::decode(r.resource.value.as_slice()).unwrap()))
        .collect()
}

#[test]
fn pods_and_services_become_istio_workload_addresses() {
    let snap = translate(MESH);
    let addresses: Vec<(String, Address)> = decoded(&snap, type_url::ADDRESS);
    let workload = |name: &str| {
        addresses
            .iter()
            .find_map(|(_, a)| match &a.r#type {
                Some(address::Type::Workload(w)) if w.name == name => Some(w.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no workload {name}"))
    };
    let v1 = workload("reviews-v1");
    assert_eq!(v1.uid, "Kubernetes//Pod/bookinfo/reviews-v1");
    assert_eq!(v1.addresses, vec![vec![10, 1, 1, 2]]);
    assert_eq!(v1.tunnel_protocol, TunnelProtocol::Hbone as i32, "ambient namespace");
    assert_eq!((v1.node.as_str(), v1.service_account.as_str()), ("n1", "reviews"));
    assert_eq!((v1.canonical_name.as_str(), v1.canonical_revision.as_str()), ("reviews", "v1"));
    let ports = &v1.services["bookinfo/reviews.bookinfo.svc.cluster.local"].ports;
    assert_eq!((ports[0].service_port, ports[0].target_port), (9080, 9080), "named target port resolved");
    assert_eq!(workload("reviews-v2").tunnel_protocol, TunnelProtocol::None as i32, "pod opted out");
    assert_eq!(workload("old").tunnel_protocol, TunnelProtocol::None as i32, "namespace not enrolled");
    // The Kubernetes UID travels as an extension: the agent binds the pod to its netns by it.
    assert_eq!(pod_uid(&v1).unwrap().as_deref(), Some("0b6f1f8e-5f2a-4c1e-9d3b-7a0e2c4d6f81"));
    assert_eq!(pod_uid(&workload("old")).unwrap(), None, "no metadata.uid, no extension");

    let (name, svc) = addresses
        .iter()
        .find_map(|(n, a)| match &a.r#type {
            Some(address::Type::Service(s)) => Some((n.clone(), s.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(name, "bookinfo/reviews.bookinfo.svc.cluster.local");
    assert_eq!(svc.addresses[0].address, vec![10, 96, 0, 10]);
}

#[test]
fn authorization_reaches_only_the_nodes_of_the_pods_it_selects() {
    let snap = translate(MESH);
    let authz = &snap.resources[type_url::AUTHORIZATION];
    assert_eq!(authz.len(), 1);
    let node =
        |n: &str| ProxyIdentity { id: format!("agent-{n}"), node_name: Some(n.into()), ..Default::default() };
    assert!(authz[0].scope.matches(&node("n1")), "reviews-v1 runs on n1");
    assert!(!authz[0].scope.matches(&node("n2")), "nothing it selects runs on n2");
    let a = Authorization::decode(authz[0].resource.value.as_slice()).unwrap();
    // istiod's clause order: `to`, then `from`.
    assert_eq!(a.rules[0].clauses.len(), 2);
    assert_eq!(a.rules[0].clauses[0].matches[0].destination_ports, vec![9080]);
    assert_eq!(a.rules[0].clauses[1].matches[0].principals.len(), 1);
}

#[test]
fn virtual_service_becomes_envoy_routes_with_istio_defaults() {
    let snap = translate(MESH);
    let routes: Vec<(String, RouteConfiguration)> = decoded(&snap, type_url::ROUTE);
    // One route configuration per HTTP service port, named like its cluster (Istio's).
    assert_eq!(routes[0].0, "inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local");
    assert_eq!(routes[0].1.name, routes[0].0);
    let vh = &routes[0].1.virtual_hosts[0];
    // The filter chain chose the service by VIP:PORT already: any Host.
    assert_eq!((vh.name.as_str(), vh.domains.as_slice()), ("inbound|http|9080", &["*".to_owned()][..]));
    assert_eq!(vh.routes.len(), 2);

    let jason = &vh.routes[0];
    assert_eq!(jason.r#match.as_ref().unwrap().headers[0].name, "end-user");
    let Some(Action::Route(action)) = &jason.action else { panic!("route action") };
    assert_eq!(
        action.cluster_specifier,
        Some(ClusterSpecifier::Cluster("inbound-vip|9080|http/v2|reviews.bookinfo.svc.cluster.local".into()))
    );
    assert_eq!(action.timeout.as_ref().unwrap().seconds, 3);
    let retry = action.retry_policy.as_ref().unwrap();
    assert_eq!((retry.retry_on.as_str(), retry.num_retries.as_ref().unwrap().value), ("5xx", 5));

    let split = &vh.routes[1];
    assert!(
        matches!(split.r#match.as_ref().unwrap().path_specifier, Some(PathSpecifier::Prefix(ref p)) if p == "/")
    );
    let Some(Action::Route(action)) = &split.action else { panic!("route action") };
    let Some(ClusterSpecifier::WeightedClusters(w)) = &action.cluster_specifier else { panic!("weighted") };
    let weights: Vec<(String, u32)> =
        w.clusters.iter().map(|c| (c.name.clone(), c.weight.as_ref().unwrap().value)).collect();
    assert_eq!(
        weights,
        [
            ("inbound-vip|9080|http/v1|reviews.bookinfo.svc.cluster.local".to_owned(), 9),
            ("inbound-vip|9080|http/v2|reviews.bookinfo.svc.cluster.local".to_owned(), 1)
        ]
    );
    // No timeout in the VirtualService: none on the route (Envoy's 15 s default off), and
    // Istio's default retries.
    assert_eq!(action.timeout.as_ref().unwrap().seconds, 0);
    let retry = action.retry_policy.as_ref().unwrap();
    assert_eq!(retry.num_retries.as_ref().unwrap().value, 2);
    assert!(retry.retry_on.contains("connect-failure") && retry.retry_on.contains("retriable-status-codes"));
}

#[test]
fn destination_rule_becomes_clusters_and_subset_endpoints() {
    let snap = translate(MESH);
    let clusters: Vec<(String, Cluster)> = decoded(&snap, type_url::CLUSTER);
    let names: Vec<&str> = clusters.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "main_internal",
            "connect_originate",
            "inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local",
            "inbound-vip|9080|http/v1|reviews.bookinfo.svc.cluster.local",
            "inbound-vip|9080|http/v2|reviews.bookinfo.svc.cluster.local"
        ]
    );
    let c = &clusters[3].1;
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(
        (t.max_connections.as_ref().unwrap().value, t.max_pending_requests.as_ref().unwrap().value),
        (7, 3)
    );
    let od = c.outlier_detection.as_ref().unwrap();
    assert_eq!((od.consecutive_5xx.as_ref().unwrap().value, od.interval.as_ref().unwrap().seconds), (4, 5));

    let cla: Vec<(String, ClusterLoadAssignment)> = decoded(&snap, type_url::ENDPOINT);
    let count = |name: &str| cla.iter().find(|(n, _)| n == name).unwrap().1.endpoints[0].lb_endpoints.len();
    assert_eq!(count("inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local"), 2);
    assert_eq!(count("inbound-vip|9080|http/v1|reviews.bookinfo.svc.cluster.local"), 1);
    // Waypoint resources go only to proxies of the waypoint's namespace.
    let waypoint =
        ProxyIdentity { id: "wp".into(), namespace: Some("bookinfo".into()), ..Default::default() };
    let other = ProxyIdentity { id: "x".into(), namespace: Some("legacy".into()), ..Default::default() };
    let r = &snap.resources[type_url::CLUSTER][0];
    assert!(r.scope.matches(&waypoint) && !r.scope.matches(&other));
}

#[test]
fn http_route_attached_to_a_service_becomes_its_routes() {
    let yaml = MESH.split("---\napiVersion: networking.istio.io/v1alpha3").next().unwrap().to_owned()
        + r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: bookinfo }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /api }, headers: [{ name: x-canary, value: "yes" }] }]
      filters: [{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: x-via, value: weft }] } }]
      backendRefs: [{ name: reviews, port: 9080, weight: 3 }, { name: ratings, port: 9080, weight: 1 }]
      timeouts: { request: 2s }
"#;
    let snap = translate(&yaml);
    let routes: Vec<(String, RouteConfiguration)> = decoded(&snap, type_url::ROUTE);
    let route = &routes[0].1.virtual_hosts[0].routes[0];
    let m = route.r#match.as_ref().unwrap();
    assert!(matches!(&m.path_specifier, Some(PathSpecifier::PathSeparatedPrefix(p)) if p == "/api"), "{m:?}");
    assert_eq!(m.headers[0].name, "x-canary");
    assert_eq!(route.request_headers_to_add[0].header.as_ref().unwrap().key, "x-via");
    let Some(Action::Route(action)) = &route.action else { panic!("route action") };
    assert_eq!(action.timeout.as_ref().unwrap().seconds, 2);
    let Some(ClusterSpecifier::WeightedClusters(w)) = &action.cluster_specifier else { panic!("weighted") };
    let weights: Vec<(&str, u32)> =
        w.clusters.iter().map(|c| (c.name.as_str(), c.weight.as_ref().unwrap().value)).collect();
    assert_eq!(
        weights,
        [
            ("inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local", 3),
            ("inbound-vip|9080|http|ratings.bookinfo.svc.cluster.local", 1)
        ]
    );
}

/// Policies whose scopes and workload lists follow pods, for the incremental test: a
/// root-namespace selector (it selects pods in every namespace), a namespace-wide STRICT
/// PeerAuthentication and a workload one with a port exception.
const POD_DEPENDENT_POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: v2-everywhere, namespace: istio-system }
spec:
  selector: { matchLabels: { version: v2 } }
  action: DENY
  rules: [{ to: [{ operation: { ports: ["7000"] } }] }]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: bookinfo }
spec: { mtls: { mode: STRICT } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: v2-port, namespace: bookinfo }
spec:
  selector: { matchLabels: { version: v2 } }
  portLevelMtls: { 9080: { mode: PERMISSIVE } }
"#;

/// Pods appended to [`MESH`] and [`POD_DEPENDENT_POLICIES`] for the incremental translation
/// test, as a list of documents.
fn with_pods(pods: &[&str]) -> String {
    let mut yaml = format!("{MESH}---{POD_DEPENDENT_POLICIES}");
    for pod in pods {
        yaml.push_str("---\n");
        yaml.push_str(pod);
    }
    yaml
}

const REVIEWS_V3: &str = r#"apiVersion: v1
kind: Pod
metadata: { name: reviews-v3, namespace: bookinfo, labels: { app: reviews, version: v1 } }
spec: { nodeName: n3, containers: [{ name: app, ports: [{ name: http, containerPort: 9080 }] }] }
status: { podIP: 10.1.3.2 }
"#;

type Served = std::collections::BTreeMap<(String, String), Vec<weft_xds::server::ScopedResource>>;

fn served(snapshot: &Snapshot) -> Served {
    let mut out = Served::new();
    for (type_url, resources) in &snapshot.resources {
        for r in resources {
            out.entry((type_url.clone(), r.name.clone())).or_default().push(r.clone());
        }
    }
    out
}

/// What weftd serves after each pod change is what a full translation would serve, while
/// only what the change touches is sent as an update; any other change is a full snapshot.
#[test]
fn pod_changes_translate_incrementally_to_what_a_full_translation_gives() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ConfigStore::new();
    let load = |store: &mut ConfigStore, yaml: &str| {
        std::fs::write(dir.path().join("mesh.yaml"), yaml).unwrap();
        assert!(store.apply_all(SourceId::File, FileSource::read_once(dir.path()).unwrap()), "a change");
    };
    load(&mut store, &with_pods(&[REVIEWS_V3]));
    let mut translator = translate::Translator::new(Options::default());
    let translate::Output::Full(first) = translator.translate(store.snapshot()) else {
        panic!("the first translation is a full one")
    };
    let mut model = served(&first);

    let moved = REVIEWS_V3.replace("10.1.3.2", "10.1.3.9");
    let relabelled = moved.replace("version: v1", "version: v2");
    let rescheduled = relabelled.replace("nodeName: n3", "nodeName: n4");
    let legacy = r#"apiVersion: v1
kind: Pod
metadata: { name: new, namespace: legacy, labels: { app: old } }
spec: { nodeName: n2 }
status: { podIP: 10.1.2.9 }
"#;
    let pending = legacy.replace("status: { podIP: 10.1.2.9 }\n", "status: { phase: Pending }\n");
    const ROOT_V2: &str = "istio-system/v2-everywhere";
    const CONVERTED: &str = "bookinfo/converted_peer_authentication_v2-port";
    const V1_ONLY: &str = "bookinfo/reviews-v1-only";
    let steps: [(&str, Vec<&str>, usize, &[&str]); 6] = [
        // (what, the pods after MESH, how many Address names the update sets, the
        // Authorizations whose scope it changes)
        ("an IP change", vec![&moved], 1, &[]),
        (
            "a label change moves the pod to another subset and other policies",
            vec![&relabelled],
            1,
            &[CONVERTED, V1_ONLY, ROOT_V2],
        ),
        ("a pod moves node (authorization scope)", vec![&rescheduled], 1, &[CONVERTED, ROOT_V2]),
        ("a pod is added", vec![&rescheduled, legacy], 1, &[]),
        ("a pod loses its IP", vec![&rescheduled, &pending], 1, &[]),
        // The pod after it moves up a document: a new origin, the same object, no update.
        ("a pod is deleted", vec![&pending], 1, &[CONVERTED, ROOT_V2]),
    ];
    // A pod's record lists the policies that select it.
    let listed = |model: &Served, pod: &str| -> Vec<String> {
        let r = &model[&(type_url::ADDRESS.to_owned(), format!("Kubernetes//Pod/bookinfo/{pod}"))][0];
        match Address::decode(r.resource.value.as_slice()).unwrap().r#type {
            Some(address::Type::Workload(w)) => w.authorization_policies,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(listed(&model, "reviews-v3"), [V1_ONLY, "istio-system/istio_converted_static_strict"]);
    for (what, pods, addresses, authorizations) in steps {
        load(&mut store, &with_pods(&pods));
        let translate::Output::Update(update) = translator.translate(store.snapshot()) else {
            panic!("{what}: a pod change gave a full translation")
        };
        assert_eq!(update.set.get(type_url::ADDRESS).map_or(0, Vec::len), addresses, "{what}");
        let mut rescoped: Vec<&str> = update
            .set
            .get(type_url::AUTHORIZATION)
            .into_iter()
            .flatten()
            .map(|(name, _)| name.as_str())
            .collect();
        rescoped.sort_unstable();
        assert_eq!(rescoped, authorizations, "{what}");
        for (type_url, sets) in update.set {
            for (name, variants) in sets {
                let key = (type_url.clone(), name);
                if variants.is_empty() {
                    model.remove(&key);
                } else {
                    model.insert(key, variants);
                }
            }
        }
        assert_eq!(model, served(&translate::snapshot(&store.snapshot(), &Options::default())), "{what}");
        if pods.iter().any(|p| p.contains("version: v2") && p.contains("reviews-v3")) {
            // Relabelled: out of the v1 policy and the namespace's STRICT, into the v2 ones.
            assert_eq!(listed(&model, "reviews-v3"), [ROOT_V2, CONVERTED], "{what}");
        }
    }

    // Anything else is translated in full.
    load(&mut store, &with_pods(&[&pending]).replace("clusterIP: 10.96.0.10", "clusterIP: 10.96.0.11"));
    assert!(matches!(translator.translate(store.snapshot()), translate::Output::Full(_)));
}

/// A TCP service of the waypoint's namespace, beside reviews' HTTP port.
const TCP_SERVICE: &str = r#"---
apiVersion: v1
kind: Service
metadata: { name: db, namespace: bookinfo }
spec: { clusterIP: 10.96.0.20, ports: [{ name: tcp-db, port: 5432 }], selector: { app: db } }
---
apiVersion: v1
kind: Service
metadata: { name: waypoint, namespace: bookinfo, labels: { gateway.istio.io/managed: istio.io-mesh-controller } }
spec: { clusterIP: 10.96.0.30, ports: [{ name: mesh, port: 15008 }], selector: { gateway.networking.k8s.io/gateway-name: waypoint } }
"#;

fn any<M: Message + Default + prost::Name>(a: &envoy_types::pb::google::protobuf::Any) -> M {
    assert_eq!(a.type_url, M::type_url());
    M::decode(a.value.as_slice()).unwrap()
}

/// The waypoint's resources have Istio's HBONE shape, field by field (what a real Envoy
/// is checked to accept in tests/tests/envoy_interop.rs, and what weft-waypoint reads).
#[test]
fn waypoint_resources_have_istios_hbone_shape() {
    use envoy_types::pb::envoy::{
        config::{
            cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, LbConfig},
            core::v3::{
                address, envoy_internal_address::AddressNameSpecifier, socket_address::PortSpecifier,
            },
            endpoint::v3::lb_endpoint::HostIdentifier,
            listener::v3::{Listener, filter::ConfigType, listener::ListenerSpecifier},
        },
        extensions::{
            filters::{
                common::set_filter_state::v3::filter_state_value,
                http::set_filter_state::v3::Config as SetFilterState,
                network::{
                    http_connection_manager::v3::{
                        HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
                    },
                    tcp_proxy::v3::{TcpProxy, tcp_proxy},
                },
            },
            transport_sockets::{
                internal_upstream::v3::InternalUpstreamTransport,
                tls::v3::{
                    DownstreamTlsContext, UpstreamTlsContext, common_tls_context::ValidationContextType,
                },
            },
        },
    };
    let snap = translate(&format!("{MESH}{TCP_SERVICE}"));
    let listeners: std::collections::HashMap<String, Listener> =
        decoded(&snap, type_url::LISTENER).into_iter().collect();
    let mut names: Vec<&str> = listeners.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["connect_originate", "connect_terminate", "main_internal"]);
    let filter_config = |l: &Listener, chain: usize| match &l.filter_chains[chain].filters[0].config_type {
        Some(ConfigType::TypedConfig(a)) => a.clone(),
        other => panic!("{other:?}"),
    };

    // connect_terminate: :15008, mTLS with the SDS names, CONNECT to main_internal.
    let term = &listeners["connect_terminate"];
    let Some(address::Address::SocketAddress(sa)) = term.address.as_ref().unwrap().address.as_ref() else {
        panic!("socket address")
    };
    assert_eq!(
        (sa.address.as_str(), sa.port_specifier.clone()),
        ("0.0.0.0", Some(PortSpecifier::PortValue(15008)))
    );
    let ts = term.filter_chains[0].transport_socket.as_ref().unwrap();
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(tls)) =
        &ts.config_type
    else {
        panic!("typed TLS")
    };
    let tls: DownstreamTlsContext = any(tls);
    assert!(tls.require_client_certificate.unwrap().value);
    let common = tls.common_tls_context.unwrap();
    assert_eq!(common.alpn_protocols, ["h2"]);
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    assert!(common.tls_certificate_sds_secret_configs[0].sds_config.is_none(), "static secrets");
    let Some(ValidationContextType::CombinedValidationContext(v)) = &common.validation_context_type else {
        panic!("combined validation")
    };
    assert_eq!(v.validation_context_sds_secret_config.as_ref().unwrap().name, "ROOTCA");
    let hcm: HttpConnectionManager = any(&filter_config(term, 0));
    assert!(hcm.http2_protocol_options.unwrap().allow_connect);
    assert_eq!(hcm.upgrade_configs[0].upgrade_type, "CONNECT");
    let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier else { panic!("inline routes") };
    let Some(Action::Route(connect)) = &rc.virtual_hosts[0].routes[0].action else { panic!("route") };
    assert_eq!(connect.cluster_specifier, Some(ClusterSpecifier::Cluster("main_internal".into())));
    assert_eq!(connect.upgrade_configs[0].upgrade_type, "CONNECT");
    let Some(http_filter::ConfigType::TypedConfig(sfs)) = &hcm.http_filters[0].config_type else { panic!() };
    let sfs: SetFilterState = any(sfs);
    // The authority (the internal listener's destination), the client's address and its
    // SPIFFE identity (what the RBAC filters of a service's chain match), all handed on.
    let keys: Vec<_> = sfs
        .on_request_headers
        .iter()
        .map(|v| match &v.key {
            Some(filter_state_value::Key::ObjectKey(k)) => k.as_str(),
            _ => "",
        })
        .collect();
    assert_eq!(
        keys,
        [
            "envoy.filters.listener.original_dst.local_ip",
            "envoy.filters.listener.original_dst.remote_ip",
            "io.istio.peer_principal"
        ]
    );
    assert_eq!(hcm.http_filters[1].name, "envoy.filters.http.router");

    // main_internal: one chain per service port, by VIP and port; HTTP by RDS, TCP by tcp_proxy.
    let main = &listeners["main_internal"];
    assert!(matches!(main.listener_specifier, Some(ListenerSpecifier::InternalListener(_))));
    assert_eq!(main.listener_filters[0].name, "envoy.filters.listener.original_dst");
    let chains: Vec<(&str, String, u32)> = main
        .filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.as_ref().unwrap();
            let r = &m.prefix_ranges[0];
            (
                c.name.as_str(),
                format!("{}/{}", r.address_prefix, r.prefix_len.unwrap().value),
                m.destination_port.unwrap().value,
            )
        })
        .collect();
    assert_eq!(
        chains,
        [
            ("inbound-vip|5432|tcp|db.bookinfo.svc.cluster.local", "10.96.0.20/32".into(), 5432),
            ("inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local", "10.96.0.10/32".into(), 9080),
        ],
        "the waypoint's own Service is served by no waypoint"
    );
    let hcm: HttpConnectionManager = any(&filter_config(main, 1));
    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else { panic!("RDS") };
    assert_eq!(rds.route_config_name, "inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local");
    let tcp: TcpProxy = any(&filter_config(main, 0));
    assert_eq!(
        tcp.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(
            "inbound-vip|5432|tcp|db.bookinfo.svc.cluster.local".into()
        ))
    );

    // connect_originate: a tunnel to the restored local address.
    let orig: TcpProxy = any(&filter_config(&listeners["connect_originate"], 0));
    assert_eq!(orig.tunneling_config.unwrap().hostname, "%DOWNSTREAM_LOCAL_ADDRESS%");

    let clusters: std::collections::HashMap<String, Cluster> =
        decoded(&snap, type_url::CLUSTER).into_iter().collect();
    let c = &clusters["connect_originate"];
    assert_eq!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(DiscoveryType::OriginalDst as i32)));
    assert_eq!(c.lb_policy, LbPolicy::ClusterProvided as i32);
    let Some(LbConfig::OriginalDstLbConfig(od)) = &c.lb_config else { panic!("original_dst_lb_config") };
    assert_eq!(od.upstream_port_override.unwrap().value, 15008);
    assert_eq!(od.metadata_key.as_ref().unwrap().key, "envoy.filters.listener.original_dst");
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(tls)) =
        &c.transport_socket.as_ref().unwrap().config_type
    else {
        panic!()
    };
    let tls: UpstreamTlsContext = any(tls);
    assert_eq!(tls.common_tls_context.unwrap().tls_certificate_sds_secret_configs[0].name, "default");
    let v1 = &clusters["inbound-vip|9080|http/v1|reviews.bookinfo.svc.cluster.local"];
    let ts = v1.transport_socket.as_ref().unwrap();
    assert_eq!(ts.name, "envoy.transport_sockets.internal_upstream");
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(iu)) =
        &ts.config_type
    else {
        panic!()
    };
    let iu: InternalUpstreamTransport = any(iu);
    assert_eq!(iu.passthrough_metadata[0].name, "envoy.filters.listener.original_dst");
    assert!(clusters.contains_key("inbound-vip|5432|tcp|db.bookinfo.svc.cluster.local"));

    // Endpoints: the enrolled pod through connect_originate with its address and identity;
    // the pod that opted out of the mesh at its own address, in plaintext.
    let cla: std::collections::HashMap<String, ClusterLoadAssignment> =
        decoded(&snap, type_url::ENDPOINT).into_iter().collect();
    let eps = &cla["inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local"].endpoints[0].lb_endpoints;
    let Some(HostIdentifier::Endpoint(e)) = &eps[0].host_identifier else { panic!() };
    let Some(address::Address::EnvoyInternalAddress(internal)) = &e.address.as_ref().unwrap().address else {
        panic!("internal address: {e:?}")
    };
    assert_eq!(
        internal.address_name_specifier,
        Some(AddressNameSpecifier::ServerListenerName("connect_originate".into()))
    );
    assert_eq!(internal.endpoint_id, "10.1.1.2:9080");
    let meta = &eps[0].metadata.as_ref().unwrap().filter_metadata;
    let string = |ns: &str, key: &str| match &meta[ns].fields[key].kind {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(string("envoy.filters.listener.original_dst", "local"), "10.1.1.2:9080");
    assert_eq!(string("weft", "identity"), "spiffe://cluster.local/ns/bookinfo/sa/reviews");
    let Some(HostIdentifier::Endpoint(e)) = &eps[1].host_identifier else { panic!() };
    assert!(
        matches!(&e.address.as_ref().unwrap().address, Some(address::Address::SocketAddress(s)) if s.address == "10.1.2.2"),
        "{e:?}"
    );

    // The same input encodes to the same bytes (no hash-ordered maps in what is pushed).
    let again = translate(&format!("{MESH}{TCP_SERVICE}"));
    assert_eq!(snap.resources[type_url::ENDPOINT], again.resources[type_url::ENDPOINT]);

    // Agents learn that reviews goes through the waypoint, by its Service's hostname.
    let addresses: Vec<(String, Address)> = decoded(&snap, type_url::ADDRESS);
    let waypoint_of = |name: &str| {
        addresses.iter().find_map(|(n, a)| match &a.r#type {
            Some(weft_xds::istio::workload::address::Type::Service(s)) if n == name => {
                Some(s.waypoint.clone())
            }
            _ => None,
        })
    };
    let w = waypoint_of("bookinfo/reviews.bookinfo.svc.cluster.local").unwrap().expect("a waypoint");
    assert_eq!(w.hbone_mtls_port, 15008);
    assert!(
        matches!(&w.destination, Some(weft_xds::istio::workload::gateway_address::Destination::Hostname(h))
            if h.namespace == "bookinfo" && h.hostname == "waypoint.bookinfo.svc.cluster.local"),
        "{w:?}"
    );
    assert_eq!(
        waypoint_of("bookinfo/waypoint.bookinfo.svc.cluster.local"),
        Some(None),
        "a waypoint uses none"
    );
}

/// A waypoint no service uses yet: no `main_internal` listener, which would have no filter
/// chain (Envoy refuses those, checked with `envoy --mode validate`), the rest as usual.
#[test]
fn a_waypoint_without_services_gets_no_empty_listener() {
    let yaml = MESH.replace("istio.io/use-waypoint: waypoint", "istio.io/use-waypoint: elsewhere");
    let snap = translate(&yaml);
    let mut listeners: Vec<String> =
        decoded::<envoy_types::pb::envoy::config::listener::v3::Listener>(&snap, type_url::LISTENER)
            .into_iter()
            .map(|(n, l)| {
                assert!(!l.filter_chains.is_empty(), "{n} has no filter chain");
                n
            })
            .collect();
    listeners.sort();
    assert_eq!(listeners, ["connect_originate", "connect_terminate"]);
}
