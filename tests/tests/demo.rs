//! End-to-end: `cargo xtask demo` opens Bookinfo through an ingress gateway and walks
//! Istio's traffic-management tasks on it through weft-waypoint, and each step shows what Istio's docs say it does. Tolerances:
//! a 50/50 split within ±10 points and 90/10 within ±6 over 400 requests (four standard
//! deviations each: 2.5 and 1.5 points), delays within ±10% at the median. Root, network
//! namespaces, real eBPF, agents, weftd, weft-waypoint and Prometheus (behind the live
//! page); about half a minute.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};
use weft_tests::demo::{self, Row};

/// `expected` ± `tolerance`, in seconds, for the median latency of `row`.
fn assert_p50_near(row: &Row, expected: f64, tolerance: f64) {
    let p50 = row.p50.as_secs_f64();
    assert!(
        (p50 - expected).abs() <= tolerance,
        "p50 {p50:.3} s, expected {expected} ± {tolerance} s: {row:?}"
    );
}

/// A GET on the live page: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("the live page listens");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// Every request answered 200, by reviews `version` alone.
fn assert_all(row: &Row, version: &str) {
    assert_eq!(row.count(200), row.requests, "{row:?}");
    assert_eq!(row.share(version), 100.0, "{row:?}");
}

#[test]
fn the_demo_walks_istios_traffic_management_tasks_and_tears_down() {
    let d = demo::run().expect("the demo runs");
    let (jason, anyone) = (Some("jason"), None);

    // getting-started: a browser outside the mesh gets Bookinfo's page through the ingress
    // gateway (Gateway API, class istio); with no route for reviews yet, every version
    // answers. The gateway reports the requests as their source (reporter="source").
    let browsed = d.row("ingress", anyone);
    assert_eq!(browsed.count(200), browsed.requests, "{browsed:?}");
    for v in ["v1", "v2", "v3"] {
        assert!(browsed.share(v) > 0.0, "reviews {v} never answered through the gateway: {browsed:?}");
    }
    let (_, stats) = d.ingress.admin("/stats/prometheus").expect("the gateway's metrics");
    let reported = stats.lines().any(|l| {
        l.starts_with("istio_requests_total{")
            && l.contains("reporter=\"source\"")
            && l.contains("source_workload=\"bookinfo-gateway-istio\"")
            && l.contains("destination_service=\"productpage.bookinfo.svc.cluster.local\"")
            && l.contains("response_code=\"200\"")
    });
    assert!(reported, "the gateway did not report its requests:\n{stats}");

    // request-routing: all to v1; then jason to v2, everyone else still v1.
    assert_all(d.row("all-v1", anyone), "v1");
    assert_all(d.row("test-v2", jason), "v2");
    assert_all(d.row("test-v2", anyone), "v1");

    // fault-injection: ratings 7 s late for jason only (reviews v2 calls ratings) …
    let delayed = d.row("delay-7s", jason);
    assert_all(delayed, "v2");
    assert_p50_near(delayed, 7.0, 0.7);
    let others = d.row("delay-7s", anyone);
    assert_all(others, "v1");
    assert!(others.p50 < Duration::from_secs(1), "{others:?}");
    // … then aborted with 500 for jason only.
    let aborted = d.row("abort", jason);
    assert_eq!(aborted.count(500), aborted.requests, "{aborted:?}");
    assert_all(d.row("abort", anyone), "v1");

    // traffic-shifting: back to v1, then 50/50 v1/v3, then 90/10.
    assert_all(d.row("shift-all-v1", anyone), "v1");
    for (id, v1) in [("50-v3", 50.0), ("90-10", 90.0)] {
        let row = d.row(id, anyone);
        let tolerance = if v1 == 50.0 { 10.0 } else { 6.0 };
        assert_eq!(row.count(200), row.requests, "{row:?}");
        assert!((row.share("v1") - v1).abs() <= tolerance, "{id}: v1 {}%: {row:?}", row.share("v1"));
        assert_eq!(row.share("v1") + row.share("v3"), 100.0, "{id}: only v1 and v3: {row:?}");
    }

    // request-timeouts: reviews v2 waits 2 s for ratings; with a 0.5 s timeout on reviews
    // the call is cut at 0.5 s with 504.
    let slow = d.row("delay-2s", anyone);
    assert_all(slow, "v2");
    assert_p50_near(slow, 2.0, 0.2);
    let cut = d.row("timeout", anyone);
    assert_eq!(cut.count(504), cut.requests, "{cut:?}");
    // The user waits for the timeout plus the hops before it (productpage, details).
    assert!(
        (0.45..=0.65).contains(&cut.p50.as_secs_f64()),
        "cut at {:.3} s, expected 0.5 s and the hops before it: {cut:?}",
        cut.p50.as_secs_f64()
    );

    // circuit-breaking: ten at once against one connection and one pending request: some
    // overflow (503), the rest get through.
    let cb = d.row("circuit-breaker", anyone);
    assert!(cb.count(503) > 0, "no request tripped the breaker: {cb:?}");
    assert!(cb.count(200) > 0, "nothing got through the breaker: {cb:?}");
    assert_eq!(cb.count(200) + cb.count(503), cb.requests, "{cb:?}");

    // Every call went through the waypoint, over HBONE with mutual TLS.
    assert!(
        d.from_waypoint > 0 && d.bypassing == 0,
        "from the waypoint {}, bypassing {}",
        d.from_waypoint,
        d.bypassing
    );

    // The live page: request rate, error rate and p99 of every Bookinfo service, from
    // Prometheus. The last steps' traffic is within its window.
    let (status, page) = get(d.page.addr(), "/");
    assert_eq!(status, 200, "{page}");
    let (status, json) = get(d.page.addr(), "/api/services");
    assert_eq!(status, 200, "{json}");
    let stats: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    for service in ["productpage", "details", "reviews", "ratings"] {
        let s = &stats[service];
        let rate = s["requests_per_second"].as_f64().unwrap_or(0.0);
        assert!(rate > 0.0, "{service}: no request rate: {json}");
        let errors = s["error_percent"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=100.0).contains(&errors), "{service}: error rate {errors}: {json}");
        assert!(s["p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{service}: no p99: {json}");
        let row = format!("<tr class=\"service\" data-service=\"{service}\"><td>{service}</td><td>");
        assert!(page.contains(&row), "{service} has no row on the page:\n{page}");
    }
    // The circuit breaker's 503s reach productpage's callers: reviews shows errors.
    assert!(stats["reviews"]["error_percent"].as_f64().unwrap_or(0.0) > 0.0, "{json}");

    let bed = d.scenario.bed.id().to_owned();
    drop(d);
    let netns = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let left = String::from_utf8_lossy(&netns.stdout);
    assert!(!left.contains(&format!("wb{bed}")), "the demo's namespaces outlived it:\n{left}");
}
