//! The forward phase's resilience through the waypoint in process: retries (conditions,
//! budget, replayed bodies, another endpoint after a connection failure), route and per-try
//! timeouts, connection failures (UF), the max_requests breaker (UO), and upstream
//! connection reuse.

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use support::{Mesh, REVIEWS, REVIEWS_V1, REVIEWS_V2, resources, resources::route};

const DEAD: &str = "inbound-vip|80|http/dead|reviews.bookinfo.svc.cluster.local";
const HALF: &str = "inbound-vip|80|http/half|reviews.bookinfo.svc.cluster.local";
const NARROW: &str = "inbound-vip|80|http/narrow|reviews.bookinfo.svc.cluster.local";
const POOLED: &str = "inbound-vip|80|http/pooled|reviews.bookinfo.svc.cluster.local";
const OUTLIER: &str = "inbound-vip|80|http/outlier|reviews.bookinfo.svc.cluster.local";

/// A pod address where nothing listens (its HBONE port is closed).
fn dead() -> (SocketAddr, String) {
    ("127.0.0.9:8080".parse().unwrap(), support::identity("reviews-v1").to_string())
}

/// The mesh with routes and clusters for these tests.
async fn mesh() -> Mesh {
    let mesh = Mesh::start().await;
    let backends = mesh.backend_refs();
    let mut clusters = support::default_clusters(mesh.hbone_port, &backends);
    let v1 = support::endpoints_of(&backends, &["reviews-v1"]).unwrap().pop().unwrap();
    clusters.push((resources::service_cluster(DEAD, false), Some(vec![dead()])));
    clusters.push((resources::service_cluster(HALF, false), Some(vec![dead(), v1])));
    clusters.push((
        resources::with_max_requests(resources::service_cluster(NARROW, true), 1),
        support::endpoints_of(&backends, &["reviews-v2"]),
    ));
    clusters.push((
        resources::with_outlier(resources::service_cluster(OUTLIER, false), 2, 1500, 100),
        support::endpoints_of(&backends, &["reviews-v1", "broken"]),
    ));
    clusters.push((
        resources::with_h1_pool(resources::service_cluster(POOLED, false), 1, 1, 2),
        support::endpoints_of(&backends, &["reviews-v1"]),
    ));
    let routes = resources::route_table_of(
        REVIEWS,
        vec![
            route("/flaky", REVIEWS_V1, |a| {
                a.retry_policy = Some(resources::retry_policy("retriable-status-codes", 2, &[503], None))
            }),
            route("/timeout", REVIEWS_V1, |a| a.timeout = Some(resources::millis(300))),
            route("/pertry", REVIEWS_V2, |a| {
                a.retry_policy = Some(resources::retry_policy("reset", 1, &[], Some(300)));
                a.timeout = Some(resources::millis(0));
            }),
            route("/dead", DEAD, |_| {}),
            route("/half", HALF, |a| {
                a.retry_policy = Some(resources::retry_policy("connect-failure", 2, &[], None))
            }),
            route("/narrow", NARROW, |_| {}),
            route("/outlier", OUTLIER, |_| {}),
            route("/pooled", POOLED, |_| {}),
            route("/", REVIEWS_V1, |_| {}),
        ],
    );
    let snapshot = support::snapshot_with("v2", support::main_internal(), clusters, routes);
    mesh.ads.server.publish(snapshot).unwrap();
    mesh.wait_for("the resilience routes and clusters", |m| {
        let s = m.waypoint.shared.snapshot.load();
        s.clusters.get(HALF).is_some_and(|c| c.endpoints.len() == 2)
            && s.clusters.get(OUTLIER).is_some_and(|c| c.endpoints.len() == 2)
            && s.clusters.get(POOLED).is_some_and(|c| c.endpoints.len() == 1)
            && s.clusters.get(NARROW).is_some_and(|c| c.endpoints.len() == 1)
            && s.routes.get(REVIEWS).is_some_and(|r| has_retry(r, "/half"))
    })
    .await;
    mesh
}

/// Whether the table's route for `path` has a retry policy (the new table is in force).
fn has_retry(table: &weft_waypoint::route::RouteTable, path: &str) -> bool {
    use weft_waypoint::route::{Action, RequestParts, Selected};
    let (parts, ()) = http::Request::get(path).body(()).unwrap().into_parts();
    let req = RequestParts::new(&parts, "127.0.0.1:1".parse().unwrap());
    matches!(table.select(&req), Selected::Route(r) if matches!(&r.action, Action::Forward(a) if a.retry.is_some()))
}

fn hits(mesh: &Mesh, backend: &str, path: &str) -> usize {
    mesh.backend(backend).requests().iter().filter(|s| s.path == path).count()
}

#[tokio::test]
async fn retriable_status_codes_are_retried_within_the_budget() {
    let mesh = mesh().await;
    let a = mesh.client.h1("GET", "/flaky?fail=2&id=a", "").await;
    assert_eq!(a.status, StatusCode::OK, "third try answers");
    assert_eq!(hits(&mesh, "reviews-v1", "/flaky?fail=2&id=a"), 3);
    let a = mesh.client.h1("GET", "/flaky?fail=3&id=b", "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "two retries, then the last answer stands");
    assert_eq!(hits(&mesh, "reviews-v1", "/flaky?fail=3&id=b"), 3);
    // Not retried where the route has no policy.
    let a = mesh.client.h1("GET", "/plain?fail=1", "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits(&mesh, "reviews-v1", "/plain?fail=1"), 1);
}

#[tokio::test]
async fn a_retried_request_carries_its_body_each_time() {
    let mesh = mesh().await;
    let a = mesh.client.h1("POST", "/flaky?fail=1&id=body", "the request body").await;
    assert_eq!(a.status, StatusCode::OK);
    let seen: Vec<usize> = mesh
        .backend("reviews-v1")
        .requests()
        .iter()
        .filter(|s| s.path == "/flaky?fail=1&id=body")
        .map(|s| s.body_len)
        .collect();
    assert_eq!(seen, [16, 16]);
}

#[tokio::test]
async fn the_route_timeout_answers_504() {
    let mesh = mesh().await;
    let a = mesh.client.h1("GET", "/timeout?sleep=3000", "").await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.body, "upstream request timeout");
    let a = mesh.client.h1("GET", "/timeout?id=fast", "").await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn a_per_try_timeout_is_retried_on_http2() {
    let mesh = mesh().await;
    let a = mesh.client.h2("GET", "/pertry?sleep_first=3000", "").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(hits(&mesh, "reviews-v2", "/pertry?sleep_first=3000"), 2);
    let a = mesh.client.h2("GET", "/pertry?sleep=3000", "").await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "both tries time out");
}

#[tokio::test]
async fn a_connection_failure_is_503_uf_and_retried_on_another_endpoint() {
    let mesh = mesh().await;
    let a = mesh.client.h1("GET", "/dead", "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        a.body,
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    );
    for i in 0..10 {
        let path = format!("/half?i={i}");
        let a = mesh.client.h1("GET", &path, "").await;
        assert_eq!(a.status, StatusCode::OK, "a retry avoids the dead endpoint: {a:?}");
    }
}

#[tokio::test]
async fn the_max_requests_breaker_answers_overflow_at_once() {
    let mesh = mesh().await;
    let client = std::sync::Arc::new(mesh.client_clone());
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.h2("GET", "/narrow?sleep=1500", "").await }
    });
    mesh.wait_in_flight(NARROW, 1).await;
    let a = mesh.client.h2("GET", "/narrow?id=second", "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.body, "upstream connect error or disconnect/reset before headers. reset reason: overflow");
    assert_eq!(hits(&mesh, "reviews-v2", "/narrow?id=second"), 0, "never sent");
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    let a = mesh.client.h2("GET", "/narrow?id=third", "").await;
    assert_eq!(a.status, StatusCode::OK, "the slot is free again");
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let mesh = Mesh::start().await;
    for i in 0..5 {
        assert_eq!(mesh.client.h1("GET", &format!("/seq?{i}"), "").await.status, StatusCode::OK);
        assert_eq!(mesh.client.h2("GET", &format!("/v2/seq?{i}"), "").await.status, StatusCode::OK);
    }
    assert_eq!(mesh.backend("reviews-v1").connects(), 1, "HTTP/1.1 keep-alive");
    assert_eq!(mesh.backend("reviews-v2").connects(), 1, "HTTP/2 multiplexed");
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_then_returns() {
    let mesh = mesh().await;
    let mut failures = 0;
    for i in 0..30 {
        let a = mesh.client.h1("GET", &format!("/outlier?i={i}"), "").await;
        if a.status != StatusCode::OK {
            failures += 1;
        }
    }
    // Two 503s in a row from the broken pod eject it (consecutive_5xx 2); everything
    // after goes to the healthy one. (It gets its two with near certainty in 30 picks.)
    assert_eq!(mesh.backend("broken").requests().len(), 2);
    assert_eq!(failures, 2);
    let stats = mesh.waypoint.shared.snapshot.load().clusters[OUTLIER].stats.clone();
    assert_eq!(stats.ejections_total.load(std::sync::atomic::Ordering::Relaxed), 1);
    // After the ejection time it is picked again.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    for i in 100.. {
        let a = mesh.client.h1("GET", &format!("/outlier?i={i}"), "").await;
        if a.status != StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the broken pod was never picked again");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(mesh.backend("broken").requests().len(), 3);
}

#[tokio::test]
async fn http1_connection_limits_queue_one_and_refuse_the_rest() {
    // maxConnections 1, http1MaxPendingRequests 1 (Istio's circuit-breaking task).
    let mesh = mesh().await;
    let cluster = mesh.waypoint.shared.snapshot.load().clusters[POOLED].clone();
    let stats = cluster.stats.clone();
    let first = tokio::spawn({
        let client = mesh.client_clone();
        async move { client.h1("GET", "/pooled?sleep=1500&n=1", "").await }
    });
    mesh.wait_for("the first request on the only connection", |_| {
        stats.h1_connections.load(std::sync::atomic::Ordering::Relaxed) == 1
            && cluster.stats.active_requests.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    let second = tokio::spawn({
        let client = mesh.client_clone();
        async move { client.h1("GET", "/pooled?n=2", "").await }
    });
    mesh.wait_for("the second request to wait (pending)", |_| {
        stats.pending.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    let third = mesh.client.h1("GET", "/pooled?n=3", "").await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE, "no room to wait: overflow at once");
    assert_eq!(
        third.body,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    );
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(second.await.unwrap().status, StatusCode::OK, "the pending one got the connection");
    assert_eq!(hits(&mesh, "reviews-v1", "/pooled?n=3"), 0);
}

#[tokio::test]
async fn a_connection_retires_after_max_requests_per_connection() {
    let mesh = mesh().await;
    let before = mesh.backend("reviews-v1").connects();
    for i in 0..4 {
        assert_eq!(mesh.client.h1("GET", &format!("/pooled?seq={i}"), "").await.status, StatusCode::OK);
    }
    assert_eq!(mesh.backend("reviews-v1").connects() - before, 2, "two requests per connection");
}
