//! The weftd binary watching Kubernetes (the scripted fake API server of
//! `weft_tests::kubeapi`, via `--kubernetes-url`) and serving real ADS clients over its
//! secure port: a node agent (Istio's workload API) and a waypoint (Envoy resources), then
//! live changes — a VirtualService edit and a pod deletion — arriving at them. Callers
//! authenticate with service-account tokens that weftd checks with TokenReview; weftd keeps
//! its root in a Secret and publishes it in a ConfigMap. In-process component tier:
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
use weft_tests::kubeapi::{FakeApiServer, TokenUser};
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

/// Istio's name for a waypoint's cluster (and, for the service, its route configuration).
fn cluster(subset: &str) -> String {
    if subset.is_empty() {
        format!("inbound-vip|9080|http|{REVIEWS}")
    } else {
        format!("inbound-vip|9080|http/{subset}|{REVIEWS}")
    }
}

/// weftd watching the fake API server (see `LoopbackWeftd`), ready, with the root it
/// published where its clients read it.
async fn start_weftd(server: &FakeApiServer) -> LoopbackWeftd {
    let args = [std::ffi::OsStr::new("--kubernetes-url"), std::ffi::OsStr::new(server.url())];
    let mut weftd = LoopbackWeftd::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_weftd")),
        &args,
        "info,weft_controlplane=debug",
    );
    weftd.wait_ready(PATIENCE).await;
    weftd.set_root_cert(&published_root(server));
    weftd
}

/// The root certificate in weftd's ConfigMap, as agents mount it.
fn published_root(server: &FakeApiServer) -> String {
    let map =
        server.object("ConfigMap", Some("istio-system"), "weft-ca-root-cert").expect("the root ConfigMap");
    map["data"]["root-cert.pem"].as_str().expect("root-cert.pem in the ConfigMap").to_owned()
}

/// The audience weftd asks TokenReview for (istiod's `istio-ca`).
const AUDIENCE: &str = "istio-ca";

/// A token of `namespace/account` bound to `pod`, for weftd's audience, written to a file
/// in weftd's directory; returns the file.
fn token(
    server: &FakeApiServer,
    weftd: &LoopbackWeftd,
    namespace: &str,
    account: &str,
    pod: &str,
) -> std::path::PathBuf {
    let token = format!("token-{namespace}-{account}-{pod}");
    server.add_token(
        &token,
        TokenUser::service_account(namespace, account).bound_to_pod(pod, "uid").for_audiences(&[AUDIENCE]),
    );
    let path = weftd.dir().join(&token);
    std::fs::write(&path, &token).expect("write the token file");
    path
}

/// The node agent's pod: its service account is the one weftd trusts as an agent's.
fn agent_pod(node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": format!("weft-agent-{node}"), "namespace": "istio-system", "labels": { "app": "weft-agent" } },
        "spec": { "nodeName": node, "serviceAccountName": "weft-agent", "hostNetwork": true,
                  "containers": [{ "name": "agent", "image": "weft-agent" }] },
        "status": { "phase": "Running", "podIP": "198.18.0.1" },
    })
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
    let host = routes.get(&cluster(""))?.virtual_hosts.first()?.clone();
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

/// `ip:port` of each endpoint of a cluster (an enrolled pod's, reached over HBONE, is the
/// internal address's endpoint id).
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
                address::Address::EnvoyInternalAddress(internal) => Some(internal.endpoint_id.clone()),
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
    server.apply(agent_pod("n1"));
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
    let (server, _url) = FakeApiServer::start().await.expect("fake API server");
    bookinfo(&server);
    let weftd = start_weftd(&server).await;

    // A node agent on n1: Istio's workload API.
    let agent_token = token(&server, &weftd, "istio-system", "weft-agent", "weft-agent-n1");
    let mut agent = Proxy::connect("agent", {
        let mut c = weftd.client_config("agent-n1", &[type_url::ADDRESS], &agent_token);
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
    let waypoint_token = token(&server, &weftd, "bookinfo", "waypoint", "waypoint-0");
    let mut waypoint = Proxy::connect("waypoint", {
        let types = [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE, type_url::ENDPOINT];
        let mut c = weftd.client_config("waypoint-bookinfo", &types, &waypoint_token);
        c.namespace = Some("bookinfo".into());
        c
    });
    let clusters = [cluster(""), cluster("v1"), cluster("v2")];
    waypoint
        .until("listeners, route, 3 clusters (and HBONE's 2) and their endpoints", |h| {
            let mut want = clusters.to_vec();
            want.sort();
            let mut all_clusters =
                [&want[..], &["connect_originate".into(), "main_internal".into()]].concat();
            all_clusters.sort();
            names(h, type_url::LISTENER) == ["connect_originate", "connect_terminate", "main_internal"]
                && names(h, type_url::ROUTE) == [cluster("")]
                && names(h, type_url::CLUSTER) == all_clusters
                && names(h, type_url::ENDPOINT) == want
        })
        .await;
    let listener = &decoded::<Listener>(&waypoint.held, type_url::LISTENER)["connect_terminate"];
    assert_eq!(listener.name, "connect_terminate");
    let Some(address::Address::SocketAddress(socket)) =
        listener.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        panic!("a socket address: {listener:#?}")
    };
    assert_eq!(socket.port_specifier, Some(PortSpecifier::PortValue(15008)));
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

fn workload_pod(name: &str, account: &str, node: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "bookinfo", "labels": { "app": name } },
        "spec": { "nodeName": node, "serviceAccountName": account, "containers": [{ "name": "app", "image": "app" }] },
        "status": { "phase": "Running", "podIP": ip },
    })
}

/// A CSR for `identity` with a fresh key, as an agent makes it.
fn csr(identity: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(identity.try_into().expect("IA5"))];
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}

/// Signs a CSR for `bookinfo/<account>` with the token in `token_file`.
async fn sign(
    weftd: &LoopbackWeftd,
    token_file: &std::path::Path,
    account: &str,
) -> Result<Vec<String>, tonic::Code> {
    let identity = format!("spiffe://cluster.local/ns/bookinfo/sa/{account}");
    weftd
        .ca_client(token_file)
        .sign(&identity, &csr(&identity), Duration::ZERO)
        .await
        .map_err(|e| e.code().unwrap_or_else(|| panic!("a refusal, not {e}")))
}

/// The error an ADS client's session ended with, once it contains `text`.
async fn refusal(client: &AdsClient, text: &str) -> String {
    let mut state = client.state();
    let s = timeout(PATIENCE, state.wait_for(|s| s.last_error.as_deref().is_some_and(|e| e.contains(text))))
        .await
        .unwrap_or_else(|_| panic!("no refusal with {text:?}: {:?}", *client.state().borrow()))
        .expect("client running")
        .clone();
    s.last_error.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_by_token_review_and_the_root_lives_in_a_secret() {
    let (server, _url) = FakeApiServer::start().await.expect("fake API server");
    server.apply(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "bookinfo" } }));
    server.apply(agent_pod("n1"));
    server.apply(agent_pod("n2"));
    server.apply(workload_pod("reviews-v1", "reviews", "n1", "198.18.1.2"));
    server.apply(workload_pod("ratings-v1", "ratings", "n2", "198.18.2.2"));
    let mut weftd = start_weftd(&server).await;

    // The root is in weft-ca-secret (key included), and its certificate in the ConfigMap.
    let secret =
        server.object("Secret", Some("istio-system"), "weft-ca-secret").expect("weftd made its CA Secret");
    for key in ["ca-cert.pem", "ca-key.pem", "root-cert.pem"] {
        assert!(secret["data"][key].is_string(), "{key} in {secret}");
    }
    let root = published_root(&server);

    // An agent's token names its pod; its pod's node is what it may sign for.
    let agent_n1 = token(&server, &weftd, "istio-system", "weft-agent", "weft-agent-n1");
    let chain = sign(&weftd, &agent_n1, "reviews").await.expect("reviews runs on n1");
    assert_eq!(chain.last(), Some(&root));
    assert_eq!(sign(&weftd, &agent_n1, "ratings").await.unwrap_err(), tonic::Code::PermissionDenied);
    let agent_n2 = token(&server, &weftd, "istio-system", "weft-agent", "weft-agent-n2");
    assert!(sign(&weftd, &agent_n2, "ratings").await.is_ok(), "ratings runs on n2");

    // A waypoint's account: its own identity only.
    let waypoint = token(&server, &weftd, "bookinfo", "waypoint", "waypoint-0");
    assert!(sign(&weftd, &waypoint, "waypoint").await.is_ok());
    assert_eq!(sign(&weftd, &waypoint, "reviews").await.unwrap_err(), tonic::Code::PermissionDenied);

    // A token the API server does not know, and a real one issued for another audience.
    let unknown = weftd.dir().join("unknown-token");
    std::fs::write(&unknown, "not-a-token").unwrap();
    assert_eq!(sign(&weftd, &unknown, "reviews").await.unwrap_err(), tonic::Code::Unauthenticated);
    server.add_token(
        "api-audience",
        TokenUser::service_account("istio-system", "weft-agent").bound_to_pod("weft-agent-n1", "uid"),
    );
    let api_audience = weftd.dir().join("api-audience-token");
    std::fs::write(&api_audience, "api-audience").unwrap();
    assert_eq!(sign(&weftd, &api_audience, "reviews").await.unwrap_err(), tonic::Code::Unauthenticated);
    assert!(server.requests_of("POST", "/apis/authentication.k8s.io/v1/tokenreviews") >= 7);
    weftd.wait_log("refused a call to the secure port", PATIENCE).await;

    // xDS with the same tokens: the agent of n1 as n1, not as n2.
    let mut c = weftd.client_config("agent-n1", &[type_url::ADDRESS], &agent_n1);
    c.node_name = Some("n2".into());
    let liar = Proxy::connect("liar", c);
    let e = refusal(&liar.client, "PermissionDenied").await;
    assert!(e.contains("may not claim node n2"), "{e}");
    liar.client.stop().await;
    let mut c = weftd.client_config("agent-n1", &[type_url::ADDRESS], &agent_n1);
    c.node_name = Some("n1".into());
    let mut agent = Proxy::connect("agent", c);
    agent.until("both workloads", |h| names(h, type_url::ADDRESS).len() == 2).await;
    agent.client.stop().await;
    let mut c = weftd.client_config("waypoint-bookinfo", &[type_url::CLUSTER], &waypoint);
    c.namespace = Some("istio-system".into());
    let wrong_namespace = Proxy::connect("waypoint", c);
    let e = refusal(&wrong_namespace.client, "PermissionDenied").await;
    assert!(e.contains("may not claim namespace istio-system"), "{e}");
    wrong_namespace.client.stop().await;

    // A restarted weftd keeps the root: the Secret is read, not made again.
    weftd.restart();
    weftd.wait_ready(PATIENCE).await;
    assert_eq!(published_root(&server), root);
    assert_eq!(server.requests_of("POST", "/api/v1/namespaces/istio-system/secrets"), 1);
    let chain = sign(&weftd, &agent_n1, "reviews").await.expect("signed after the restart");
    assert_eq!(chain.last(), Some(&root));
}
