//! The weftd binary watching Kubernetes (the scripted fake API server of
//! `weft_tests::kubeapi`, via `--kubernetes-url`) and serving real ADS clients: a node agent
//! (Istio's workload API) and a waypoint (Envoy resources), then live changes — a
//! VirtualService edit and a pod deletion — arriving at them. In-process component tier:
//! loopback sockets only, no root.

use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster,
    endpoint::v3::{ClusterLoadAssignment, lb_endpoint::HostIdentifier},
    listener::v3::Listener,
    route::v3::{RouteConfiguration, route::Action, route_action::ClusterSpecifier},
};
use prost::Message;
use serde_json::{Value, json};
use std::{collections::BTreeMap, time::Duration};
use tokio::{
    sync::mpsc,
    time::{Instant, timeout},
};
use weft_tests::kubeapi::FakeApiServer;
use weft_tests::weftd::LoopbackWeftd;
use weft_xds::{
    Any,
    client::{AdsClient, ClientConfig, Update},
    istio::workload::{Address, TunnelProtocol, Workload, address::Type as AddressType},
    type_url,
};

/// Long enough for any step on a loaded machine; a passing test never waits this long.
const PATIENCE: Duration = Duration::from_secs(30);

const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local";
const REVIEWS_SERVICE: &str = "bookinfo/reviews.bookinfo.svc.cluster.local";
const REVIEWS_V1: &str = "Kubernetes//Pod/bookinfo/reviews-v1";
const REVIEWS_V2: &str = "Kubernetes//Pod/bookinfo/reviews-v2";

fn cluster(subset: &str) -> String {
    format!("outbound|9080|{subset}|{REVIEWS}")
}

/// A port nothing listens on right now: bound, read and released. weftd cannot report the
/// port it was given as `:0`, so the test picks one.
/// weftd watching the fake API server (see `LoopbackWeftd`).
fn start_weftd(kubernetes_url: &str) -> LoopbackWeftd {
    let args = [std::ffi::OsStr::new("--kubernetes-url"), std::ffi::OsStr::new(kubernetes_url)];
    LoopbackWeftd::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_weftd")),
        &args,
        "info,weft_controlplane=debug",
    )
}

/// What a proxy holds: type URL → name → resource.
type Held = BTreeMap<String, BTreeMap<String, Any>>;

/// An ADS client standing in for a proxy, applying what it receives to `held`.
struct Proxy {
    name: &'static str,
    client: AdsClient,
    updates: mpsc::UnboundedReceiver<Update>,
    held: Held,
}

impl Proxy {
    fn connect(name: &'static str, mut config: ClientConfig) -> Proxy {
        config.initial_backoff = Duration::from_millis(50);
        config.max_backoff = Duration::from_millis(500);
        let (tx, updates) = mpsc::unbounded_channel();
        let client = AdsClient::start(config, move |update: Update| {
            tx.send(update).map_err(|_| "test ended".to_owned())
        })
        .expect("start the ADS client");
        Proxy { name, client, updates, held: Held::new() }
    }

    /// Applies updates until `done` holds for what the proxy holds.
    async fn until(&mut self, what: &str, done: impl Fn(&Held) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.held) {
            let update = match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.updates.recv(),
            )
            .await
            {
                Ok(Some(update)) => update,
                Ok(None) => panic!("{}: the client stopped", self.name),
                Err(_) => panic!(
                    "{}: {what}: not seen within {PATIENCE:?}; holding {:#?}; client {:?}",
                    self.name,
                    self.held.iter().map(|(t, r)| (t, r.keys().collect::<Vec<_>>())).collect::<Vec<_>>(),
                    *self.client.state().borrow()
                ),
            };
            let held = self.held.entry(update.type_url).or_default();
            for name in update.removals {
                held.remove(&name);
            }
            for (name, _version, any) in update.upserts {
                held.insert(name, any);
            }
        }
    }
}

/// The resources of one type, decoded.
fn decoded<M: Message + Default>(held: &Held, type_url: &str) -> BTreeMap<String, M> {
    held.get(type_url)
        .into_iter()
        .flatten()
        .map(|(name, any)| {
            assert_eq!(any.type_url, type_url, "{name}");
            (name.clone(), M::decode(any.value.as_slice()).expect("decodes"))
        })
        .collect()
}

fn names(held: &Held, type_url: &str) -> Vec<String> {
    held.get(type_url).map(|r| r.keys().cloned().collect()).unwrap_or_default()
}

fn workloads(held: &Held) -> BTreeMap<String, Workload> {
    decoded::<Address>(held, type_url::ADDRESS)
        .into_iter()
        .filter_map(|(name, a)| match a.r#type {
            Some(AddressType::Workload(w)) => Some((name, w)),
            _ => None,
        })
        .collect()
}

/// The (cluster, weight) pairs of the reviews virtual host's weighted route.
fn weights(held: &Held) -> Option<Vec<(String, u32)>> {
    let routes = decoded::<RouteConfiguration>(held, type_url::ROUTE);
    let host = routes.get("waypoint_http")?.virtual_hosts.iter().find(|v| v.name == REVIEWS)?.clone();
    host.routes.iter().find_map(|r| match &r.action {
        Some(Action::Route(a)) => match &a.cluster_specifier {
            Some(ClusterSpecifier::WeightedClusters(w)) => Some(
                w.clusters
                    .iter()
                    .map(|c| (c.name.clone(), c.weight.as_ref().map_or(0, |w| w.value)))
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    })
}

/// `ip:port` of each endpoint of a cluster.
fn endpoints(held: &Held, cluster: &str) -> Vec<String> {
    let all = decoded::<ClusterLoadAssignment>(held, type_url::ENDPOINT);
    let Some(cla) = all.get(cluster) else { return Vec::new() };
    let mut out: Vec<String> = cla
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => match ep.address.as_ref()?.address.as_ref()? {
                address::Address::SocketAddress(s) => match s.port_specifier {
                    Some(PortSpecifier::PortValue(port)) => Some(format!("{}:{port}", s.address)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn pod(name: &str, version: &str, node: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "bookinfo", "labels": { "app": "reviews", "version": version } },
        "spec": {
            "nodeName": node, "serviceAccountName": "bookinfo-reviews",
            "containers": [{ "name": "reviews", "image": "reviews", "ports": [{ "name": "http", "containerPort": 9080 }] }],
        },
        "status": { "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }] },
    })
}

fn virtual_service(v1: u32, v2: u32) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": { "name": "reviews", "namespace": "bookinfo" },
        "spec": {
            "hosts": ["reviews"],
            "http": [{ "route": [
                { "destination": { "host": "reviews", "subset": "v1" }, "weight": v1 },
                { "destination": { "host": "reviews", "subset": "v2" }, "weight": v2 },
            ] }],
        },
    })
}

fn bookinfo(server: &FakeApiServer) {
    server.apply(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": "bookinfo", "labels": {
            "istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint",
        } },
    }));
    server.apply(pod("reviews-v1", "v1", "n1", "198.18.1.2"));
    server.apply(pod("reviews-v2", "v2", "n2", "198.18.2.2"));
    server.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "reviews", "namespace": "bookinfo" },
        "spec": {
            "clusterIP": "198.19.0.10", "clusterIPs": ["198.19.0.10"],
            "ports": [{ "name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP" }],
            "selector": { "app": "reviews" },
        },
    }));
    server.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": "waypoint", "namespace": "bookinfo" },
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{ "name": "mesh", "port": 15008, "protocol": "HBONE" }],
        },
    }));
    server.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": { "name": "reviews", "namespace": "bookinfo" },
        "spec": {
            "host": "reviews",
            "subsets": [
                { "name": "v1", "labels": { "version": "v1" } },
                { "name": "v2", "labels": { "version": "v2" } },
            ],
        },
    }));
    server.apply(virtual_service(80, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weftd_serves_agents_and_waypoints_from_kubernetes() {
    let (server, url) = FakeApiServer::start().await.expect("fake API server");
    bookinfo(&server);
    let mut weftd = start_weftd(&url);
    weftd.wait_ready(PATIENCE).await;

    // A node agent on n1: Istio's workload API.
    let mut agent = Proxy::connect("agent", {
        let mut c = ClientConfig::new(weftd.ads_url(), "agent-n1", vec![type_url::ADDRESS.into()]);
        c.node_name = Some("n1".into());
        c
    });
    agent
        .until("2 workloads and the service", |h| {
            names(h, type_url::ADDRESS) == [REVIEWS_V1, REVIEWS_V2, REVIEWS_SERVICE]
        })
        .await;
    let addresses = decoded::<Address>(&agent.held, type_url::ADDRESS);
    let Some(AddressType::Service(service)) = &addresses[REVIEWS_SERVICE].r#type else { panic!("a service") };
    assert_eq!(service.hostname, REVIEWS);
    assert_eq!(
        service.addresses.iter().map(|a| a.address.clone()).collect::<Vec<_>>(),
        [vec![198, 19, 0, 10]]
    );
    assert_eq!(
        service.ports.iter().map(|p| (p.service_port, p.target_port)).collect::<Vec<_>>(),
        [(9080, 9080)]
    );
    let workloads = workloads(&agent.held);
    for (uid, name, node, ip, version) in [
        (REVIEWS_V1, "reviews-v1", "n1", [198, 18, 1, 2], "v1"),
        (REVIEWS_V2, "reviews-v2", "n2", [198, 18, 2, 2], "v2"),
    ] {
        let w = &workloads[uid];
        assert_eq!(w.uid, uid);
        assert_eq!((w.name.as_str(), w.namespace.as_str(), w.node.as_str()), (name, "bookinfo", node));
        assert_eq!(w.addresses, [ip.to_vec()], "{name}");
        assert_eq!(w.tunnel_protocol, TunnelProtocol::Hbone as i32, "{name}: the namespace is ambient");
        assert_eq!(w.service_account, "bookinfo-reviews");
        assert_eq!((w.canonical_name.as_str(), w.canonical_revision.as_str()), ("reviews", version));
        let ports = w.services.get(REVIEWS_SERVICE).unwrap_or_else(|| panic!("{name} is in reviews: {w:#?}"));
        assert_eq!(
            ports.ports.iter().map(|p| (p.service_port, p.target_port)).collect::<Vec<_>>(),
            [(9080, 9080)]
        );
    }

    // The waypoint of bookinfo: Envoy listeners, routes, clusters, endpoints.
    let mut waypoint = Proxy::connect("waypoint", {
        let types = [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE, type_url::ENDPOINT];
        let mut c = ClientConfig::new(weftd.ads_url(), "waypoint-bookinfo", types.map(Into::into).to_vec());
        c.namespace = Some("bookinfo".into());
        c
    });
    let clusters = [cluster(""), cluster("v1"), cluster("v2")];
    waypoint
        .until("listener, route, 3 clusters and their endpoints", |h| {
            let mut want = clusters.to_vec();
            want.sort();
            names(h, type_url::LISTENER) == ["waypoint_http"]
                && names(h, type_url::ROUTE) == ["waypoint_http"]
                && names(h, type_url::CLUSTER) == want
                && names(h, type_url::ENDPOINT) == want
        })
        .await;
    let listener = &decoded::<Listener>(&waypoint.held, type_url::LISTENER)["waypoint_http"];
    assert_eq!(listener.name, "waypoint_http");
    let Some(address::Address::SocketAddress(socket)) =
        listener.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        panic!("a socket address: {listener:#?}")
    };
    assert_eq!(socket.port_specifier, Some(PortSpecifier::PortValue(15080)));
    for (name, c) in decoded::<Cluster>(&waypoint.held, type_url::CLUSTER) {
        assert_eq!(c.name, name);
    }
    assert_eq!(
        weights(&waypoint.held).expect("a weighted route for reviews"),
        [(cluster("v1"), 80), (cluster("v2"), 20)]
    );
    assert_eq!(endpoints(&waypoint.held, &cluster("")), ["198.18.1.2:9080", "198.18.2.2:9080"]);
    assert_eq!(endpoints(&waypoint.held, &cluster("v1")), ["198.18.1.2:9080"]);
    assert_eq!(endpoints(&waypoint.held, &cluster("v2")), ["198.18.2.2:9080"]);

    // Both show up in weftd's sync status.
    let (status, body) = weftd.get("/debug/syncz").await.expect("syncz");
    assert_eq!(status, 200, "{body}");
    let syncz: Value = serde_json::from_str(&body).expect("syncz is JSON");
    let ids: Vec<&str> = syncz.as_array().unwrap().iter().filter_map(|p| p["proxy_id"].as_str()).collect();
    assert!(ids.contains(&"agent-n1") && ids.contains(&"waypoint-bookinfo"), "{body}");

    // A VirtualService edit in Kubernetes reaches the waypoint's routes.
    server.apply(virtual_service(10, 90));
    waypoint
        .until("the route with the new weights", |h| {
            weights(h).is_some_and(|w| w == [(cluster("v1"), 10), (cluster("v2"), 90)])
        })
        .await;

    // A deleted pod leaves the agent's addresses and the waypoint's endpoints.
    assert!(server.delete("Pod", Some("bookinfo"), "reviews-v2"));
    agent.until("reviews-v2 removed", |h| names(h, type_url::ADDRESS) == [REVIEWS_V1, REVIEWS_SERVICE]).await;
    waypoint
        .until("reviews-v2's endpoint removed", |h| {
            endpoints(h, &cluster("")) == ["198.18.1.2:9080"] && endpoints(h, &cluster("v2")).is_empty()
        })
        .await;

    agent.client.stop().await;
    waypoint.client.stop().await;
    drop(weftd);
}
