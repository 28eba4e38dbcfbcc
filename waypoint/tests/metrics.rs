//! Istio's request metrics and the access log, through the waypoint in process: requests
//! answered by an endpoint (200, an upstream's 503, gRPC), and local replies (UH, UO, NR),
//! scraped from `/stats/prometheus` as Prometheus would.

mod support;

use http::StatusCode;
use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};
use support::{Mesh, REVIEWS, REVIEWS_V1, REVIEWS_V2, REVIEWS_V3, resources, resources::route};
use weft_waypoint::access_log::AccessLog;

const NARROW: &str = "inbound-vip|80|http/narrow|reviews.bookinfo.svc.cluster.local";
const PRODUCTPAGE: &str = "source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/productpage\"";

/// The mesh with a route table that has no catch-all (so `/nowhere` is NR) and a cluster
/// that admits one request at a time (UO).
async fn mesh() -> Mesh {
    let mesh = Mesh::start().await;
    let backends = mesh.backend_refs();
    let mut clusters = support::default_clusters(mesh.hbone_port, &backends);
    clusters.push((
        resources::with_max_requests(resources::service_cluster(NARROW, true), 1),
        support::endpoints_of(&backends, &["reviews-v2"]),
    ));
    let routes = resources::route_table_of(
        REVIEWS,
        vec![
            route("/ok", REVIEWS_V1, |_| {}),
            route("/big", REVIEWS_V2, |_| {}),
            route("/grpc", REVIEWS_V2, |_| {}),
            route("/empty", REVIEWS_V3, |_| {}),
            route("/narrow", NARROW, |_| {}),
        ],
    );
    mesh.ads
        .server
        .publish(support::snapshot_with("v2", support::main_internal(), clusters, routes))
        .unwrap();
    mesh.wait_for("the metrics routes", |m| {
        let s = m.waypoint.shared.snapshot.load();
        s.clusters.get(NARROW).is_some_and(|c| c.endpoints.len() == 1)
            && s.routes.get(REVIEWS).is_some_and(|t| !routes_to(t, "/nowhere"))
    })
    .await;
    mesh
}

fn routes_to(table: &weft_waypoint::route::RouteTable, path: &str) -> bool {
    use weft_waypoint::route::{RequestParts, Selected};
    let (parts, ()) = http::Request::get(path).body(()).unwrap().into_parts();
    matches!(table.select(&RequestParts::new(&parts, "127.0.0.1:1".parse().unwrap())), Selected::Route(_))
}

/// The value of the one sample of `family` whose line has every one of `labels`.
fn sample(text: &str, family: &str, labels: &[&str]) -> Option<u64> {
    let prefix = format!("{family}{{");
    let mut found = text.lines().filter(|l| l.starts_with(&prefix) && labels.iter().all(|w| l.contains(w)));
    let line = found.next()?;
    assert!(found.next().is_none(), "{family} {labels:?} matches more than one series:\n{text}");
    Some(line.rsplit(' ').next()?.parse().unwrap())
}

async fn scrape(mesh: &Mesh) -> String {
    let (status, text) = mesh.admin("/stats/prometheus").await;
    assert_eq!(status, StatusCode::OK);
    text
}

/// Scrapes until `done` holds (requests are counted when their response body ends, which
/// may be just after the client has read it).
async fn scrape_until(mesh: &Mesh, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let text = scrape(mesh).await;
        if done(&text) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "never counted: {what}\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn requests_are_counted_by_istio_labels() {
    let mesh = mesh().await;
    for i in 0..3 {
        assert_eq!(mesh.client.h1("GET", &format!("/ok?i={i}"), "").await.status, StatusCode::OK);
    }
    let a = mesh.client.h1("GET", "/ok?fail=1", "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "the upstream's own 503");
    assert_eq!(mesh.client.h1("GET", "/empty", "").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(mesh.client.h1("GET", "/nowhere", "").await.status, StatusCode::NOT_FOUND);
    let a = mesh.client.h2("POST", "/grpc", "ping").await;
    assert_eq!(a.status, StatusCode::OK);

    // UO: one request holds the cluster's only slot while another arrives.
    let client = Arc::new(mesh.client_clone());
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.h1("GET", "/narrow?sleep=300", "").await }
    });
    mesh.wait_in_flight(NARROW, 1).await;
    let a = mesh.client.h1("GET", "/narrow?id=second", "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);

    let v1 = "destination_principal=\"spiffe://cluster.local/ns/bookinfo/sa/reviews-v1\"";
    let v2 = "destination_principal=\"spiffe://cluster.local/ns/bookinfo/sa/reviews-v2\"";
    let http = "request_protocol=\"http\"";
    let total = "istio_requests_total";
    let text = scrape_until(&mesh, "all nine requests", |t| {
        let all: u64 = t
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        all == 9
    })
    .await;
    let common = [
        "reporter=\"waypoint\"",
        PRODUCTPAGE,
        "source_workload_namespace=\"bookinfo\"",
        "destination_service=\"reviews.bookinfo.svc.cluster.local\"",
        "destination_service_name=\"reviews\"",
        "destination_service_namespace=\"bookinfo\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    let with =
        |extra: &[&'static str]| -> Vec<&'static str> { common.iter().chain(extra).copied().collect() };
    let ok = with(&[v1, http, "response_code=\"200\"", "response_flags=\"-\"", "grpc_response_status=\"\""]);
    assert_eq!(sample(&text, total, &ok), Some(3), "{text}");
    let upstream_503 = with(&[v1, "response_code=\"503\"", "response_flags=\"-\""]);
    assert_eq!(sample(&text, total, &upstream_503), Some(1), "{text}");
    let uh = with(&["destination_principal=\"unknown\"", "response_code=\"503\"", "response_flags=\"UH\""]);
    assert_eq!(sample(&text, total, &uh), Some(1), "{text}");
    let nr = with(&["destination_principal=\"unknown\"", "response_code=\"404\"", "response_flags=\"NR\""]);
    assert_eq!(sample(&text, total, &nr), Some(1), "{text}");
    let uo = with(&["destination_principal=\"unknown\"", "response_code=\"503\"", "response_flags=\"UO\""]);
    assert_eq!(sample(&text, total, &uo), Some(1), "{text}");
    let narrow_ok = with(&[v2, http, "response_code=\"200\""]);
    assert_eq!(sample(&text, total, &narrow_ok), Some(1), "{text}");
    let grpc =
        with(&[v2, "request_protocol=\"grpc\"", "response_code=\"200\"", "grpc_response_status=\"0\""]);
    assert_eq!(sample(&text, total, &grpc), Some(1), "{text}");

    // Every request is in each histogram of its series, once.
    for family in ["istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"] {
        assert_eq!(sample(&text, &format!("{family}_count"), &ok), Some(3), "{family}");
        let inf: Vec<&str> = ok.iter().copied().chain(["le=\"+Inf\""]).collect();
        assert_eq!(sample(&text, &format!("{family}_bucket"), &inf), Some(3), "{family}");
    }
    // The slow request took at least the 300 ms its backend slept.
    let narrow_250: Vec<&str> = narrow_ok.iter().copied().chain(["le=\"250\""]).collect();
    assert_eq!(sample(&text, "istio_request_duration_milliseconds_bucket", &narrow_250), Some(0));
    assert!(sample(&text, "istio_request_duration_milliseconds_sum", &narrow_ok).unwrap() >= 300);
}

#[tokio::test]
async fn request_and_response_bytes_are_counted() {
    let mesh = mesh().await;
    let body = "x".repeat(3000);
    let a = mesh.client.h1("POST", "/big", &body).await;
    assert_eq!(a.status, StatusCode::OK);
    let sent = a.body.len() as u64;
    let series = [PRODUCTPAGE, "reviews-v2\"", "response_code=\"200\""];
    let text =
        scrape_until(&mesh, "the POST", |t| sample(t, "istio_requests_total", &series) == Some(1)).await;
    // Bytes include the head (as HTTP/1.1 carries it), so a little more than the bodies.
    let request = sample(&text, "istio_request_bytes_sum", &series).unwrap();
    assert!((3000..3000 + 512).contains(&request), "request bytes {request}");
    let le = |bound: &'static str| -> Vec<&'static str> { series.iter().copied().chain([bound]).collect() };
    assert_eq!(sample(&text, "istio_request_bytes_bucket", &le("le=\"1000\"")), Some(0));
    assert_eq!(sample(&text, "istio_request_bytes_bucket", &le("le=\"5000\"")), Some(1));
    let response = sample(&text, "istio_response_bytes_sum", &series).unwrap();
    assert!((sent..sent + 512).contains(&response), "response bytes {response} for a body of {sent}");
}

/// An access log sink the test reads.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_access_log_is_off_by_default_and_writes_istios_fields_when_on() {
    let mesh = mesh().await;
    assert!(mesh.waypoint.shared.metrics.access_log.load().is_none(), "off without --access-log");
    let lines = Lines::default();
    mesh.waypoint.shared.metrics.access_log.store(Some(Arc::new(AccessLog::to(Box::new(lines.clone())))));

    assert_eq!(mesh.client.h1("GET", "/ok?log=1", "").await.status, StatusCode::OK);
    assert_eq!(mesh.client.h1("GET", "/empty", "").await.status, StatusCode::SERVICE_UNAVAILABLE);
    scrape_until(&mesh, "both requests", |t| {
        sample(t, "istio_requests_total", &["response_flags=\"UH\""]) == Some(1)
            && sample(t, "istio_requests_total", &["response_code=\"200\""]) == Some(1)
    })
    .await;
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let logged: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(logged.len(), 2, "{text}");
    let ok = logged.iter().find(|l| l["response_code"] == 200).unwrap();
    assert_eq!(ok["path"], "/ok?log=1");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["response_flags"], "-");
    assert_eq!(ok["upstream_host"], "127.0.0.2:8080");
    assert_eq!(ok["downstream_local_address"], "10.96.0.10:80");
    assert_eq!(ok["bytes_sent"], "reviews-v1 /ok?log=1 HTTP/1.1".len());
    assert!(ok["start_time"].as_str().unwrap().ends_with('Z'), "{ok}");
    assert!(ok["upstream_service_time"].is_string(), "{ok}");
    let uh = logged.iter().find(|l| l["response_code"] == 503).unwrap();
    assert_eq!(uh["response_flags"], "UH");
    assert_eq!(uh["upstream_host"], serde_json::Value::Null);
    assert_eq!(uh["bytes_sent"], "no healthy upstream".len());
}
