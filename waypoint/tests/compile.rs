//! What the waypoint makes of the contract's resources, and what it refuses (naming the
//! resource and the field), without sockets: `xds::Held` fed updates as the ADS client
//! hands them over.

mod support;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
};
use std::sync::Arc;
use support::{REVIEWS, REVIEWS_V1, resources, resources::any};
use weft_waypoint::{snapshot::Snapshot, upstream::LbPolicy, xds::Held};
use weft_xds::{client::Update, type_url};

fn update<M: prost::Name>(type_url: &str, resources: &[(&str, &M)]) -> Update {
    Update {
        type_url: type_url.into(),
        system_version: "1".into(),
        upserts: resources.iter().map(|(n, m)| ((*n).to_owned(), "1".to_owned(), any(*m))).collect(),
        removals: vec![],
    }
}

fn refusals<M: prost::Name>(type_url: &str, name: &str, m: &M) -> Vec<String> {
    Held::default().apply(&update(type_url, &[(name, m)])).iter().map(ToString::to_string).collect()
}

#[test]
fn listeners_it_cannot_apply_are_refused_by_field() {
    let l = resources::connect_terminate(15009);
    assert_eq!(
        refusals(type_url::LISTENER, "connect_terminate", &l),
        [
            "listener connect_terminate: address.socket_address.port_value: 15009: weft-waypoint terminates HBONE on 15008 only"
        ]
    );
    let mut other_name = resources::connect_terminate(15008);
    other_name.name = "waypoint_http".into();
    let r = refusals(type_url::LISTENER, "waypoint_http", &other_name);
    assert!(
        r[0].starts_with("listener waypoint_http: name: weft-waypoint serves the waypoint listeners"),
        "{r:?}"
    );

    // An HTTP filter the waypoint does not implement.
    let mut l = support::main_internal();
    let chain = &mut l.filter_chains[0];
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) =
        &chain.filters[0].config_type
    else {
        panic!()
    };
    let mut hcm: HttpConnectionManager = weft_xds::istio::unpack(a).unwrap();
    hcm.http_filters.insert(1, HttpFilter { name: "envoy.filters.http.lua".into(), ..Default::default() });
    chain.filters[0].config_type =
        Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any(&hcm)));
    assert_eq!(
        refusals(type_url::LISTENER, "main_internal", &l),
        [
            "listener main_internal: filter_chains[0].filters[0].typed_config.http_filters[1].name: envoy.filters.http.lua: \
             not an HTTP filter weft-waypoint implements (fault, rbac, router)"
        ]
    );
    // The same filter marked optional is ignored, as Envoy would.
    hcm.http_filters[1].is_optional = true;
    l.filter_chains[0].filters[0].config_type =
        Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any(&hcm)));
    assert!(refusals(type_url::LISTENER, "main_internal", &l).is_empty());
}

#[test]
fn clusters_and_endpoints_it_cannot_apply_are_refused_by_field() {
    let mut c = resources::service_cluster(REVIEWS_V1, false);
    c.cluster_discovery_type =
        Some(envoy_types::pb::envoy::config::cluster::v3::cluster::ClusterDiscoveryType::Type(
            envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::StrictDns as i32,
        ));
    let r = refusals(type_url::CLUSTER, REVIEWS_V1, &c);
    assert!(r[0].starts_with(&format!("cluster {REVIEWS_V1}: type: Some(StrictDns)")), "{r:?}");

    let mut cla = resources::assignment(
        REVIEWS_V1,
        &[("10.0.0.5:9080".parse().unwrap(), "spiffe://cluster.local/ns/bookinfo/sa/reviews")],
    );
    cla.endpoints[0].lb_endpoints[0].metadata.as_mut().unwrap().filter_metadata.remove("weft");
    assert_eq!(
        refusals(type_url::ENDPOINT, REVIEWS_V1, &cla),
        [format!(
            "cluster_load_assignment {REVIEWS_V1}: endpoints[0].lb_endpoints[0].metadata.filter_metadata[\"weft\"].identity: \
             required: the SPIFFE identity the endpoint must present"
        )]
    );
}

#[test]
fn a_refused_resource_leaves_what_was_held_under_its_name() {
    let mut held = Held::default();
    assert!(
        held.apply(&update(type_url::LISTENER, &[("main_internal", &support::main_internal())])).is_empty()
    );
    let bad = resources::main_internal(&[(REVIEWS, support::reviews_vip(), 16, resources::ChainSpec::Http)]);
    let good_terminate = resources::connect_terminate(15008);
    let refused = held.apply(&Update {
        type_url: type_url::LISTENER.into(),
        system_version: "2".into(),
        upserts: vec![
            ("main_internal".into(), "2".into(), any(&bad)),
            ("connect_terminate".into(), "2".into(), any(&good_terminate)),
        ],
        removals: vec![],
    });
    assert_eq!(refused.len(), 1, "only the bad one: {refused:?}");
    let s = held.assemble(&Snapshot::default());
    assert_eq!(s.dispatch.len(), 2, "the old main_internal (two chains) is still in force");
    assert!(s.terminate.is_some(), "the good listener of the same update applied");
}

#[test]
fn clusters_compile_their_policy_and_protocol() {
    let mut held = Held::default();
    let mut rr = resources::service_cluster("rr", true);
    rr.lb_policy = envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy::RoundRobin as i32;
    let lr = resources::with_max_requests(resources::service_cluster("lr", false), 7);
    assert!(held.apply(&update(type_url::CLUSTER, &[("rr", &rr), ("lr", &lr)])).is_empty());
    let s = held.assemble(&Snapshot::default());
    assert_eq!(s.clusters["rr"].settings.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(s.clusters["rr"].settings.protocol, weft_waypoint::upstream::UpstreamProtocol::Http2);
    assert_eq!(s.clusters["lr"].settings.lb_policy, LbPolicy::LeastRequest { choice_count: 2 });
    assert_eq!(s.clusters["lr"].settings.thresholds.max_requests, 7);
    assert_eq!(s.clusters["lr"].settings.thresholds.max_retries, 3, "Envoy's default");
}

#[test]
fn endpoints_and_counters_survive_an_eds_update() {
    let mut held = Held::default();
    let c = resources::service_cluster(REVIEWS_V1, false);
    held.apply(&update(type_url::CLUSTER, &[(REVIEWS_V1, &c)]));
    let id = "spiffe://cluster.local/ns/bookinfo/sa/reviews";
    let one = resources::assignment(REVIEWS_V1, &[("10.0.0.5:9080".parse().unwrap(), id)]);
    held.apply(&update(type_url::ENDPOINT, &[(REVIEWS_V1, &one)]));
    let first = held.assemble(&Snapshot::default());
    let e5 = first.clusters[REVIEWS_V1].endpoints[0].clone();
    assert_eq!(e5.hbone, "10.0.0.5:15008".parse().unwrap(), "HBONE to the pod's 15008");
    first.clusters[REVIEWS_V1].stats.requests.fetch_add(5, std::sync::atomic::Ordering::Relaxed);

    let two = resources::assignment(
        REVIEWS_V1,
        &[("10.0.0.5:9080".parse().unwrap(), id), ("10.0.0.6:9080".parse().unwrap(), id)],
    );
    held.apply(&update(type_url::ENDPOINT, &[(REVIEWS_V1, &two)]));
    let second = held.assemble(&first);
    let cluster = &second.clusters[REVIEWS_V1];
    assert_eq!(cluster.endpoints.len(), 2);
    assert!(
        Arc::ptr_eq(&cluster.endpoints[0], &e5),
        "the unchanged endpoint (and its connections) carried over"
    );
    assert_eq!(cluster.stats.requests.load(std::sync::atomic::Ordering::Relaxed), 5, "counters carried over");
}

#[test]
fn route_tables_and_assignments_are_subscribed_by_the_names_held() {
    let mut held = Held::default();
    let subscriptions = weft_xds::client::Subscriptions::default();
    held.apply(&update(type_url::LISTENER, &[("main_internal", &support::main_internal())]));
    held.apply(&update(type_url::CLUSTER, &[(REVIEWS_V1, &resources::service_cluster(REVIEWS_V1, false))]));
    held.subscribe(&subscriptions);
    assert_eq!(subscriptions.get(type_url::ROUTE).into_iter().collect::<Vec<_>>(), [REVIEWS]);
    assert_eq!(subscriptions.get(type_url::ENDPOINT).into_iter().collect::<Vec<_>>(), [REVIEWS_V1]);
    held.apply(&update(
        type_url::ROUTE,
        &[(REVIEWS, &resources::route_table(REVIEWS, &[("/", REVIEWS_V1)]))],
    ));
    assert!(held.assemble(&Snapshot::default()).routes.contains_key(REVIEWS));

    // The chain goes: its table is unsubscribed and forgotten.
    let only_tcp =
        resources::main_internal(&[(support::ECHO, support::echo_vip(), 32, resources::ChainSpec::Tcp)]);
    held.apply(&update(type_url::LISTENER, &[("main_internal", &only_tcp)]));
    held.subscribe(&subscriptions);
    assert!(subscriptions.get(type_url::ROUTE).is_empty());
    assert!(held.assemble(&Snapshot::default()).routes.is_empty());
}
