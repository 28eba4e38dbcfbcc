//! `cargo xtask demo`: a two-node mesh on this machine, with traffic, explained.

use crate::{
    Proc,
    agent::Agent,
    scenario::{self, Scenario},
};
use anyhow::{Result, bail};
use std::{fmt::Write as _, time::Duration};

const PORT: u16 = 9080;
const REVIEWS_VIP: &str = "198.19.0.10";
const RATINGS_VIP: &str = "198.19.0.11";

/// The running demo: dropping it tears everything down.
pub struct Demo {
    pub scenario: Scenario,
    pub agents: Vec<Agent>,
    _servers: Vec<Proc>,
}

/// Sets up the mesh and runs the traffic, printing as it goes.
pub fn run() -> Result<Demo> {
    let mut s = Scenario::new("demo")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let productpage = s.bed.pod(&n1, "bookinfo", "productpage")?;
    let reviews_v1 = s.bed.pod(&n1, "bookinfo", "reviews-v1")?;
    let reviews_v2 = s.bed.pod(&n2, "bookinfo", "reviews-v2")?;
    let reviews_v3 = s.bed.pod(&n2, "bookinfo", "reviews-v3")?;
    let ratings = s.bed.pod(&n2, "bookinfo", "ratings")?;
    let curl = s.bed.pod(&n1, "legacy", "curl")?;
    s.config
        .namespace("bookinfo", true)
        .namespace("legacy", false)
        .pod(&productpage, "bookinfo", &[("app", "productpage"), ("version", "v1")], &[])
        .pod(&reviews_v1, "bookinfo", &[("app", "reviews"), ("version", "v1")], &[PORT])
        .pod(&reviews_v2, "bookinfo", &[("app", "reviews"), ("version", "v2")], &[PORT])
        .pod(&reviews_v3, "bookinfo", &[("app", "reviews"), ("version", "v3")], &[PORT])
        .pod(&ratings, "bookinfo", &[("app", "ratings"), ("version", "v1")], &[PORT])
        .pod(&curl, "legacy", &[("app", "curl")], &[])
        .service("reviews", "bookinfo", REVIEWS_VIP.parse()?, PORT, PORT, &[("app", "reviews")])
        .service("ratings", "bookinfo", RATINGS_VIP.parse()?, PORT, PORT, &[("app", "ratings")]);
    s.config.write()?;
    println!("Two nodes, six pods, namespace bookinfo enrolled (istio.io/dataplane-mode=ambient):\n");
    println!("{}", s.bed.describe());
    let a1 = s.agent(&n1)?;
    let a2 = s.agent(&n2)?;
    println!(
        "weftd on n1 reads the Kubernetes objects in {} and is the mesh's CA; each agent gets its\n\
         workloads over xDS and a certificate per identity of its pods (mTLS, HBONE between nodes)\n",
        s.dir.join("kubernetes").display()
    );
    a1.wait_enrolled(&["productpage", "reviews-v1"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["ratings", "reviews-v2", "reviews-v3"], Duration::from_secs(10))?;
    println!(
        "agents ready: n1 enrolled productpage, reviews-v1; n2 enrolled ratings, reviews-v2, reviews-v3\n"
    );
    let versions = [(&reviews_v1, "v1"), (&reviews_v2, "v2"), (&reviews_v3, "v3"), (&ratings, "v1")];
    let servers = versions.iter().map(|(p, v)| scenario::serve(p, v, &[PORT])).collect::<Result<Vec<_>>>()?;

    println!(
        "productpage → reviews.bookinfo ({REVIEWS_VIP}:{PORT}), six connections; the agent on n1 picks an endpoint:"
    );
    for _ in 0..6 {
        let r = scenario::client(
            &productpage,
            &["hello", "--to", &format!("{REVIEWS_VIP}:{PORT}")],
            Duration::from_secs(10),
        )?;
        if !r.ok() {
            bail!("hello through the mesh failed: {r:?}");
        }
        println!("  answered by {}", r.json["reply"].as_str().unwrap_or("?"));
    }

    let bytes: u64 = 32 << 20;
    let r = scenario::echo(&productpage, &format!("{RATINGS_VIP}:{PORT}"), bytes)?;
    if !r.ok() {
        bail!("echo through the mesh failed: {r:?}");
    }
    println!(
        "\nproductpage → ratings.bookinfo: {} MiB there and back, byte-exact, in {} ms",
        bytes >> 20,
        r.json["ms"]
    );

    let r = scenario::client(
        &curl,
        &["hello", "--to", &format!("{}:{PORT}", ratings.ip())],
        Duration::from_secs(10),
    )?;
    if !r.ok() {
        bail!("hello from legacy failed: {r:?}");
    }
    println!(
        "curl (namespace legacy, not enrolled) → ratings pod: not captured on n1, captured inbound on n2\n"
    );

    for (name, agent) in [("n1", &a1), ("n2", &a2)] {
        println!("agent {name}: {}", summary(agent)?);
    }
    Ok(Demo { scenario: s, agents: vec![a1, a2], _servers: servers })
}

/// One line per series: reporter, who talked to whom, connections and bytes.
fn summary(agent: &Agent) -> Result<String> {
    let (_, text) = agent.get("/metrics")?;
    let mut out = String::new();
    for line in text.lines().filter(|l| l.starts_with("istio_tcp_connections_opened_total{")) {
        let label = |k: &str| -> String {
            line.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("?").to_owned()
        };
        let opened = line.rsplit(' ').next().unwrap_or("0");
        let selector = line.trim_start_matches("istio_tcp_connections_opened_total");
        let bytes: u64 = ["istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total"]
            .iter()
            .filter_map(|m| {
                text.lines().find(|l| {
                    l.starts_with(m) && l.contains(selector.rsplit_once(' ').map_or(selector, |s| s.0))
                })
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        let _ = write!(
            out,
            "\n  reporter={:<11} {:>12} → {:<12} service={:<36} connections={opened} bytes={bytes}",
            label("reporter"),
            label("source_workload"),
            label("destination_workload"),
            label("destination_service"),
        );
    }
    if out.is_empty() {
        out.push_str("(no connections)");
    }
    Ok(out)
}
