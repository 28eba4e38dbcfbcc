//! A gateway's listeners as weftd sends them (`gateway_<port>`, from an Istio Gateway and
//! its VirtualService, translated in process: YAML → store → translate) and what
//! weft-waypoint makes of them, or refuses, naming the field — without sockets
//! (`xds::Held` without a socket binder compiles but does not bind).

use envoy_types::pb::envoy::config::{
    core::v3::{TransportSocket, address, socket_address::PortSpecifier},
    listener::v3::{FilterChain, FilterChainMatch, Listener, ListenerFilter},
};
use prost::Message;
use weft_controlplane::{
    config::{ConfigStore, SourceId},
    source::file::FileSource,
    translate::{self, Options},
};
use weft_waypoint::{
    route::StripPort,
    snapshot::{Chain, Snapshot},
    xds::Held,
};
use weft_xds::{client::Update, type_url};

const INGRESS: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo }
spec: { clusterIP: 10.96.0.10, ports: [{ name: http, port: 9080 }], selector: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: ingress, namespace: istio-system }
spec:
  selector: { istio: ingressgateway }
  servers: [{ port: { number: 8080, name: http, protocol: HTTP }, hosts: ["*"] }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews-ingress, namespace: bookinfo }
spec:
  hosts: [reviews.example.com]
  gateways: [istio-system/ingress]
  http: [{ route: [{ destination: { host: reviews } }] }]
"#;

/// weftd's `gateway_8080` listener for the Gateway above.
fn weftd_gateway_listener() -> Listener {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), INGRESS).unwrap();
    let mut store = ConfigStore::new();
    store.apply_all(SourceId::File, FileSource::read_once(dir.path()).unwrap());
    let snap = translate::snapshot(&store.snapshot(), &Options::default());
    snap.resources[type_url::LISTENER]
        .iter()
        .map(|r| Listener::decode(r.resource.value.as_slice()).unwrap())
        .find(|l| l.name == "gateway_8080")
        .expect("weftd sends gateway_8080")
}

fn update(listeners: &[&Listener]) -> Update {
    Update {
        type_url: type_url::LISTENER.into(),
        system_version: "1".into(),
        upserts: listeners
            .iter()
            .map(|l| (l.name.clone(), "1".to_owned(), weft_xds::istio::pack(*l)))
            .collect(),
        removals: vec![],
    }
}

fn refusals(l: &Listener) -> Vec<String> {
    Held::default().apply(&update(&[l])).iter().map(ToString::to_string).collect()
}

#[test]
fn weftds_gateway_listener_compiles_to_a_plain_http_chain_on_its_port() {
    let l = weftd_gateway_listener();
    let mut held = Held::default();
    assert!(held.apply(&update(&[&l])).is_empty(), "weftd's shape is accepted");
    let s = held.assemble(&Snapshot::default());
    assert!(s.listeners_received);
    assert!(s.dispatch.is_empty() && s.terminate.is_none(), "a gateway, not a waypoint");
    let chain = &s.gateways[&"0.0.0.0:8080".parse().unwrap()];
    let Chain::Http(http) = &**chain else { panic!("an HTTP chain: {chain:?}") };
    assert_eq!(&*http.route_config, "http.8080");
    assert_eq!(http.strip_port, StripPort::Any, "strip_any_host_port, as weftd asks");
    assert!(http.fault, "the fault filter is on (VirtualService faults)");
    assert!(http.rbac.is_empty());
    assert_eq!(chain.name(), "gateway_8080");

    // Its route table is subscribed, like a waypoint chain's.
    let subscriptions = weft_xds::client::Subscriptions::default();
    held.subscribe(&subscriptions);
    assert!(subscriptions.get(type_url::ROUTE).contains("http.8080"));

    // Removed: gone from the snapshot.
    let removal = Update { upserts: vec![], removals: vec!["gateway_8080".into()], ..update(&[]) };
    assert!(held.apply(&removal).is_empty());
    assert!(held.assemble(&Snapshot::default()).gateways.is_empty());
}

#[test]
fn gateway_listeners_it_cannot_serve_are_refused_by_field() {
    let good = weftd_gateway_listener();
    let with = |edit: &dyn Fn(&mut Listener)| {
        let mut l = good.clone();
        edit(&mut l);
        refusals(&l)
    };
    let port = |p: u32| {
        move |l: &mut Listener| {
            if let Some(address::Address::SocketAddress(s)) = l.address.as_mut().unwrap().address.as_mut() {
                s.port_specifier = Some(PortSpecifier::PortValue(p));
            }
        }
    };
    assert_eq!(
        with(&port(70_000)),
        ["listener gateway_8080: address.socket_address.port_value: 70000 is not a port"]
    );
    assert_eq!(
        with(&|l| {
            if let Some(address::Address::SocketAddress(s)) = l.address.as_mut().unwrap().address.as_mut() {
                s.address = "ingress.example".into();
            }
        }),
        [
            "listener gateway_8080: address.socket_address.address: \"ingress.example\" is not an IP address (0.0.0.0 binds every one)"
        ]
    );
    assert_eq!(
        with(&|l| l.address = None),
        ["listener gateway_8080: address: a socket address (IP and port) is required"]
    );
    let r = with(&|l| {
        l.filter_chains[0].transport_socket =
            Some(TransportSocket { name: "envoy.transport_sockets.tls".into(), config_type: None })
    });
    assert!(
        r[0].starts_with("listener gateway_8080: filter_chains[0].transport_socket: TLS termination"),
        "{r:?}"
    );
    let r = with(&|l| l.filter_chains.push(FilterChain::default()));
    assert_eq!(r, ["listener gateway_8080: filter_chains: 2 chains; a gateway listener has exactly one"]);
    let r = with(&|l| {
        l.filter_chains[0].filter_chain_match =
            Some(FilterChainMatch { server_names: vec!["a.example".into()], ..Default::default() })
    });
    assert!(r[0].starts_with("listener gateway_8080: filter_chains[0].filter_chain_match: "), "{r:?}");
    let r = with(&|l| {
        l.listener_filters.push(ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            ..Default::default()
        })
    });
    assert!(r[0].starts_with("listener gateway_8080: listener_filters: "), "{r:?}");
    let r = with(&|l| l.filter_chains[0].filters.clear());
    assert!(r[0].starts_with("listener gateway_8080: filter_chains[0].filters: 0 filters"), "{r:?}");
    // The HCM is checked by the code that checks main_internal's: field paths below it.
    let r = with(&|l| l.filter_chains[0].filters[0].config_type = None);
    assert_eq!(r, ["listener gateway_8080: filter_chains[0].filters[0].typed_config: missing"]);
    let r = with(&|l| l.filter_chains[0].filters[0].name = "envoy.filters.network.redis_proxy".into());
    assert!(
        r[0].starts_with(
            "listener gateway_8080: filter_chains[0].filters[0].name: envoy.filters.network.redis_proxy"
        ),
        "{r:?}"
    );
    // Not a gateway name: still refused by name.
    let r = with(&|l| l.name = "0.0.0.0_8080".into());
    assert!(r[0].contains("name: weft-waypoint serves the waypoint listeners"), "{r:?}");
}

#[test]
fn a_refused_gateway_listener_keeps_the_one_held_under_its_name() {
    let good = weftd_gateway_listener();
    let mut held = Held::default();
    assert!(held.apply(&update(&[&good])).is_empty());
    let mut bad = good.clone();
    bad.filter_chains.push(FilterChain::default());
    let refused = held.apply(&update(&[&bad]));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].field, "filter_chains");
    let s = held.assemble(&Snapshot::default());
    assert!(s.gateways.contains_key(&"0.0.0.0:8080".parse().unwrap()), "the last good listener stays");
}
