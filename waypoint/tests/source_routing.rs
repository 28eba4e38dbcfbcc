//! VirtualService `sourceLabels` / `sourceNamespace` at the waypoint, in process: weftd's
//! route metadata `weft.source` matched against the client's workload — its namespace from
//! its HBONE identity, its labels from the mesh's istio.workload.Address resources (Weft's
//! `weft.io/pod-labels` extension), found by the client's address.

mod support;

use envoy_types::pb::{
    envoy::config::{core::v3::Metadata, route::v3::Route},
    google::protobuf::{Struct, Value, value::Kind},
};
use support::{Mesh, REVIEWS, REVIEWS_V1, REVIEWS_V2, resources};
use weft_xds::{
    istio::workload::{Address, Workload, address},
    server::{Scope, ScopedResource},
    type_url,
};

fn string(s: &str) -> Value {
    Value { kind: Some(Kind::StringValue(s.into())) }
}

/// A route to `cluster` taken only by clients with these labels / namespace.
fn source_route(cluster: &str, labels: &[(&str, &str)], namespace: Option<&str>) -> Route {
    let mut fields = std::collections::HashMap::new();
    if !labels.is_empty() {
        let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), string(v))).collect();
        fields
            .insert("labels".to_owned(), Value { kind: Some(Kind::StructValue(Struct { fields: labels })) });
    }
    if let Some(ns) = namespace {
        fields.insert("namespace".to_owned(), string(ns));
    }
    let mut route = resources::route("/", cluster, |_| {});
    route.metadata = Some(Metadata {
        filter_metadata: [("weft.source".to_owned(), Struct { fields })].into_iter().collect(),
        ..Default::default()
    });
    route
}

/// The client's Workload (it dials from 127.0.0.1) with these labels.
fn client_workload(labels: &[(&str, &str)]) -> ScopedResource {
    let labels: std::collections::BTreeMap<String, String> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let w = Workload {
        uid: "Kubernetes//Pod/bookinfo/productpage-1".into(),
        name: "productpage-1".into(),
        namespace: "bookinfo".into(),
        addresses: vec![vec![127, 0, 0, 1]],
        extensions: vec![weft_xds::istio::pod_labels_extension(&labels)],
        ..Default::default()
    };
    ScopedResource::from_message(
        w.uid.clone(),
        Scope::All,
        &Address { r#type: Some(address::Type::Workload(w)) },
    )
}

/// Publishes the routes (renamed by `version`, so the table changes) and the client's
/// workload if given, and waits until both apply.
async fn publish(mesh: &Mesh, version: &str, mut routes: Vec<Route>, client: Option<ScopedResource>) {
    routes[0].name = version.into();
    let refs = mesh.backend_refs();
    let clusters = support::default_clusters(mesh.hbone_port, &refs);
    let mut snapshot = support::snapshot_with(
        version,
        support::main_internal(),
        clusters,
        resources::route_table_of(REVIEWS, routes),
    );
    let expect_workload = client.is_some();
    if let Some(w) = client {
        snapshot.add(type_url::ADDRESS, w);
    }
    let route_version = |m: &Mesh| {
        m.waypoint.shared.xds_status.lock().unwrap().resources[type_url::ROUTE].get(REVIEWS).cloned()
    };
    let before = route_version(mesh);
    mesh.ads.server.publish(snapshot).unwrap();
    mesh.wait_for("the routes and workloads to apply", |m| {
        route_version(m) != before
            && m.waypoint.shared.snapshot.load().workloads.contains_key(&[127, 0, 0, 1].into())
                == expect_workload
    })
    .await;
}

#[tokio::test]
async fn routes_by_the_clients_labels_found_by_its_address() {
    let mesh = Mesh::start().await;
    let routes = || {
        vec![
            source_route(REVIEWS_V2, &[("app", "productpage")], None),
            resources::route("/", REVIEWS_V1, |_| {}),
        ]
    };
    // The client's workload is not known: its labels match nothing.
    publish(&mesh, "v2", routes(), None).await;
    assert_eq!(mesh.client.h1("GET", "/a", "").await.body, "reviews-v1 /a HTTP/1.1");
    // Known with other labels.
    publish(&mesh, "v3", routes(), Some(client_workload(&[("app", "ratings")]))).await;
    assert_eq!(mesh.client.h1("GET", "/b", "").await.body, "reviews-v1 /b HTTP/1.1");
    // Known with the labels: the source route is taken.
    publish(&mesh, "v4", routes(), Some(client_workload(&[("app", "productpage"), ("version", "v1")]))).await;
    assert_eq!(mesh.client.h1("GET", "/c", "").await.body, "reviews-v2 /c HTTP/2.0");
}

#[tokio::test]
async fn routes_by_the_clients_namespace_from_its_identity() {
    let mesh = Mesh::start().await;
    publish(
        &mesh,
        "v2",
        vec![
            source_route(REVIEWS_V2, &[], Some("other")),
            source_route(REVIEWS_V2, &[], Some("bookinfo")),
            resources::route("/", REVIEWS_V1, |_| {}),
        ],
        None,
    )
    .await;
    assert_eq!(mesh.client.h1("GET", "/n", "").await.body, "reviews-v2 /n HTTP/2.0");
    publish(
        &mesh,
        "v3",
        vec![source_route(REVIEWS_V2, &[], Some("other")), resources::route("/", REVIEWS_V1, |_| {})],
        None,
    )
    .await;
    assert_eq!(mesh.client.h1("GET", "/m", "").await.body, "reviews-v1 /m HTTP/1.1");
}
