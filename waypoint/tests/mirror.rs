//! Request mirroring in process: the client gets the primary's answer while a copy, with
//! Envoy's "-shadow" host, reaches the mirror cluster; a mirror that cannot be served does
//! not touch the request.

mod support;

use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use http::StatusCode;
use support::{Mesh, REVIEWS, REVIEWS_V1, REVIEWS_V2, REVIEWS_V3, resources};
use weft_xds::type_url;

fn mirror(cluster: &str) -> RequestMirrorPolicy {
    RequestMirrorPolicy { cluster: cluster.into(), ..Default::default() }
}

async fn publish_routes(mesh: &Mesh, routes: Vec<envoy_types::pb::envoy::config::route::v3::Route>) {
    let version = |m: &Mesh| {
        m.waypoint.shared.xds_status.lock().unwrap().resources[type_url::ROUTE].get(REVIEWS).cloned()
    };
    let before = version(mesh);
    let refs = mesh.backend_refs();
    let clusters = support::default_clusters(mesh.hbone_port, &refs);
    let snapshot = support::snapshot_with(
        "v2",
        support::main_internal(),
        clusters,
        resources::route_table_of(REVIEWS, routes),
    );
    mesh.ads.server.publish(snapshot).unwrap();
    mesh.wait_for("the routes to apply", |m| version(m) != before).await;
}

#[tokio::test]
async fn the_mirror_gets_a_shadow_copy_and_the_client_the_primary_answer() {
    let mesh = Mesh::start().await;
    publish_routes(
        &mesh,
        vec![
            // The primary speaks HTTP/2, the mirror (reviews-v1) HTTP/1.1, so its Host is seen.
            resources::route("/", REVIEWS_V2, |a| {
                a.request_mirror_policies = vec![mirror(REVIEWS_V1), mirror(REVIEWS_V3)]
            }),
        ],
    )
    .await;

    let a = mesh.client.h1("GET", "/ratings", "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "reviews-v2 /ratings HTTP/2.0", "the primary's answer, not the mirror's");
    let a = mesh.client.h1("POST", "/post", "hello mirror").await;
    assert_eq!(a.body, "reviews-v2 /post HTTP/2.0");
    assert_eq!(mesh.backend("reviews-v2").requests().last().unwrap().body_len, 12);

    mesh.wait_for("both copies at the mirror", |m| m.backend("reviews-v1").requests().len() == 2).await;
    let copies = mesh.backend("reviews-v1").requests();
    for (copy, (method, path, len)) in copies.iter().zip([("GET", "/ratings", 0), ("POST", "/post", 12)]) {
        assert_eq!(
            (copy.method.as_str(), copy.path.as_str(), copy.body_len),
            (method, path, len),
            "{copies:?}"
        );
        assert_eq!(copy.host.as_deref(), Some("reviews.bookinfo.svc.cluster.local-shadow"), "{copies:?}");
    }
}

#[tokio::test]
async fn a_mirror_fraction_of_zero_sends_nothing() {
    let mesh = Mesh::start().await;
    let mut never = mirror(REVIEWS_V1);
    never.runtime_fraction = Some(envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent {
        default_value: Some(envoy_types::pb::envoy::r#type::v3::FractionalPercent {
            numerator: 0,
            denominator: 0,
        }),
        runtime_key: String::new(),
    });
    publish_routes(
        &mesh,
        vec![resources::route("/", REVIEWS_V2, move |a| a.request_mirror_policies = vec![never])],
    )
    .await;
    for _ in 0..5 {
        assert_eq!(mesh.client.h1("GET", "/x", "").await.body, "reviews-v2 /x HTTP/2.0");
    }
    // A request after them that is mirrored always, to know the mirror had its chance.
    publish_routes(
        &mesh,
        vec![resources::route("/", REVIEWS_V2, |a| a.request_mirror_policies = vec![mirror(REVIEWS_V1)])],
    )
    .await;
    assert_eq!(mesh.client.h1("GET", "/last", "").await.status, StatusCode::OK);
    mesh.wait_for("the last copy", |m| !m.backend("reviews-v1").requests().is_empty()).await;
    let paths: Vec<String> = mesh.backend("reviews-v1").requests().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/last"]);
}
