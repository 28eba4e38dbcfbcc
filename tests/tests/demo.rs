//! End-to-end: `cargo xtask demo` walks Istio's traffic-management tasks on Bookinfo
//! through weft-waypoint, and each step shows what Istio's docs say it does. Tolerances:
//! a 50/50 split within ±10 points and 90/10 within ±6 over 400 requests (four standard
//! deviations each: 2.5 and 1.5 points), delays within ±10% at the median. Root, network
//! namespaces, real eBPF, agents, weftd and weft-waypoint; about half a minute.

use std::time::Duration;
use weft_tests::demo::{self, Row};

/// `expected` ± `tolerance`, in seconds, for the median latency of `row`.
fn assert_p50_near(row: &Row, expected: f64, tolerance: f64) {
    let p50 = row.p50.as_secs_f64();
    assert!(
        (p50 - expected).abs() <= tolerance,
        "p50 {p50:.3} s, expected {expected} ± {tolerance} s: {row:?}"
    );
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

    let bed = d.scenario.bed.id().to_owned();
    drop(d);
    let netns = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let left = String::from_utf8_lossy(&netns.stdout);
    assert!(!left.contains(&format!("wb{bed}")), "the demo's namespaces outlived it:\n{left}");
}
