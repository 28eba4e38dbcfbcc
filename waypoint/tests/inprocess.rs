//! The waypoint in process, fed the contract's resources by an in-process ADS server, with
//! real HBONE (TLS 1.3, HTTP/2 CONNECT) on loopback both ways: a mesh client → the waypoint
//! → backend pods.

mod support;

use http::StatusCode;
use support::{Mesh, REVIEWS, echo_vip, resources};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_xds::type_url;

#[tokio::test]
async fn http1_and_h2_are_routed_by_cluster_and_pass_through() {
    let mesh = Mesh::start().await;
    let (status, body) = mesh.admin("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // HTTP/1.1 from the client; reviews-v1's cluster speaks HTTP/1.1 (no protocol options).
    let a = mesh.client.h1("GET", "/ratings?user=jason", "").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body, "reviews-v1 /ratings?user=jason HTTP/1.1");
    // reviews-v2's cluster has explicit HTTP/2 options: the waypoint speaks HTTP/2 upstream.
    let a = mesh.client.h1("GET", "/v2/reviews", "").await;
    assert_eq!(a.body, "reviews-v2 /v2/reviews HTTP/2.0");
    assert_eq!(a.headers["x-backend"], "reviews-v2");

    // HTTP/2 prior knowledge from the client, on the same kind of tunnel.
    let a = mesh.client.h2("GET", "/details", "").await;
    assert_eq!(a.body, "reviews-v1 /details HTTP/1.1", "h2 downstream, HTTP/1.1 upstream");
    let a = mesh.client.h2("GET", "/v2/x", "").await;
    assert_eq!(a.body, "reviews-v2 /v2/x HTTP/2.0");

    let v1 = mesh.backend("reviews-v1").requests();
    assert_eq!(v1.len(), 2, "{v1:?}");
    assert!(
        v1.iter().all(|s| s.host.as_deref() == Some("reviews.bookinfo.svc.cluster.local")),
        "the Host reaches HTTP/1.1 upstreams, also from an HTTP/2 client: {v1:?}"
    );
    assert_eq!(mesh.backend("reviews-v2").requests().len(), 2);
}

#[tokio::test]
async fn grpc_like_bodies_and_trailers_pass_through() {
    let mesh = Mesh::start().await;
    let payload = "x".repeat(200_000);
    let a = mesh.client.h2("POST", "/grpc.Reviews/Get", &payload).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.len(), payload.len(), "the body streams through whole");
    let trailers = a.trailers.expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok-reviews-v2");
}

#[tokio::test]
async fn tcp_chains_pump_bytes_to_the_cluster() {
    let mesh = Mesh::start().await;
    let mut stream = mesh.client.connect(echo_vip()).await.expect("CONNECT to the echo VIP");
    stream.write_all(b"hello through the waypoint").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello through the waypoint");
}

#[tokio::test]
async fn an_unknown_authority_is_refused_with_503() {
    let mesh = Mesh::start().await;
    let e = mesh.client.connect("10.96.0.99:80".parse().unwrap()).await.expect_err("no chain serves it");
    assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{e}");
    // The VIP of a chain on another port is unknown too.
    let e = mesh.client.connect("10.96.0.10:81".parse().unwrap()).await.expect_err("no chain serves it");
    assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{e}");
}

#[tokio::test]
async fn no_endpoint_is_503_no_healthy_upstream() {
    let mesh = Mesh::start().await;
    let a = mesh.client.h1("GET", "/empty", "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.body, "no healthy upstream");
}

/// An endpoint outside the mesh (a `socket_address`, no identity: a pod of a namespace
/// not in the mesh, or a gateway's own pod) is reached over plain TCP, as Envoy reaches
/// one, beside clusters on HBONE; it does not make the waypoint refuse the assignment.
#[tokio::test]
async fn an_endpoint_outside_the_mesh_is_reached_over_plain_tcp() {
    let mesh = Mesh::start().await;
    let plain = tokio::net::TcpListener::bind("127.0.0.6:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = plain.accept().await {
            let service =
                hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = format!("plain {} {:?}", req.uri().path(), req.version());
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(body),
                    )))
                });
            let io = hyper_util::rt::TokioIo::new(tcp);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
        }
    });
    // reviews-v3's cluster, otherwise without endpoints, gets the plain one.
    let mut clusters = support::default_clusters(mesh.hbone_port, &mesh.backend_refs());
    for (c, endpoints) in &mut clusters {
        if c.name == support::REVIEWS_V3 {
            *endpoints = None;
        }
    }
    let routes = resources::route_table(
        support::REVIEWS,
        &[("/v2", support::REVIEWS_V2), ("/empty", support::REVIEWS_V3), ("/", support::REVIEWS_V1)],
    );
    let mut snapshot = support::snapshot_with("v2", support::main_internal(), clusters, routes);
    let cla = resources::plain_assignment(support::REVIEWS_V3, &[plain_addr]);
    snapshot.add(
        type_url::ENDPOINT,
        weft_xds::server::ScopedResource::from_message(
            support::REVIEWS_V3.to_owned(),
            weft_xds::server::Scope::Namespace(support::NS.into()),
            &cla,
        ),
    );
    mesh.ads.server.publish(snapshot).unwrap();
    mesh.wait_for("the plain endpoint", |m| {
        m.waypoint.shared.snapshot.load().clusters[support::REVIEWS_V3].endpoints.len() == 1
    })
    .await;
    let a = mesh.client.h1("GET", "/empty/page", "").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "plain /empty/page HTTP/1.1"), "{a:?}");
    let a = mesh.client.h1("GET", "/v2/x", "").await;
    assert_eq!(a.body, "reviews-v2 /v2/x HTTP/2.0", "HBONE endpoints are unaffected");
    let nacks = mesh.waypoint.shared.xds_status.lock().unwrap().last_nack.clone();
    assert!(nacks.is_empty(), "{nacks:?}");
    let (_, dump) = mesh.admin("/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let v3 = dump["clusters"].as_array().unwrap().iter().find(|c| c["name"] == support::REVIEWS_V3).unwrap();
    assert_eq!(v3["endpoints"][0]["address"], plain_addr.to_string());
    assert!(v3["endpoints"][0]["identity"].is_null(), "no identity to check: {v3}");
}

#[tokio::test]
async fn a_listener_it_cannot_apply_is_nacked_and_the_old_config_keeps_serving() {
    let mesh = Mesh::start().await;
    // A /24 range: no single VIP for the dispatch table.
    let bad = resources::main_internal(&[(REVIEWS, support::reviews_vip(), 24, resources::ChainSpec::Http)]);
    mesh.ads.server.publish(support::snapshot("v2", mesh.hbone_port, bad, &mesh.backend_refs())).unwrap();
    let nack_of =
        |m: &Mesh| m.waypoint.shared.xds_status.lock().unwrap().last_nack.get(type_url::LISTENER).cloned();
    mesh.wait_for("the NACK", |m| nack_of(m).is_some()).await;
    let nack = nack_of(&mesh).unwrap();
    assert_eq!(
        nack,
        "listener main_internal: filter_chains[0].filter_chain_match.prefix_ranges[0]: /24: only single addresses \
         (/32, a service VIP) are supported"
    );
    // weftd sees the NACK on its side too.
    let status = mesh.ads.server.status();
    let listeners = status[0].types.iter().find(|t| t.type_url == type_url::LISTENER).unwrap();
    assert!(listeners.last_nack.as_ref().is_some_and(|n| n.message == nack), "{listeners:?}");
    // The listener held before stays in force: the TCP chain it had is still there.
    assert!(mesh.waypoint.shared.snapshot.load().dispatch.contains_key(&echo_vip()));
    let a = mesh.client.h1("GET", "/still", "").await;
    assert_eq!(a.body, "reviews-v1 /still HTTP/1.1");
    let (_, dump) = mesh.admin("/config_dump").await;
    assert!(dump.contains("only single addresses"), "{dump}");
}

#[tokio::test]
async fn the_last_config_keeps_serving_when_weftd_goes_away() {
    let mut mesh = Mesh::start().await;
    mesh.ads.stop().await;
    mesh.wait_for("the xDS stream to end", |m| !m.waypoint.xds_state().borrow().connected).await;
    for _ in 0..3 {
        let a = mesh.client.h1("GET", "/v2/after", "").await;
        assert_eq!(a.body, "reviews-v2 /v2/after HTTP/2.0");
    }
    let (status, _) = mesh.admin("/ready").await;
    assert_eq!(status, StatusCode::OK, "still ready on the last good config");
}
