//! End-to-end: a real Prometheus (Debian package `prometheus`) scrapes the bed's agents,
//! waypoint, ingress gateway and weftd while Bookinfo walks Istio's traffic-management tasks (the demo),
//! plus plaintext traffic to and from a namespace outside the mesh; then every query of
//! Istio's Mesh, Service, Workload, Ztunnel and Control Plane dashboards
//! (`tests/data/istio-dashboards/`) is run with Grafana's variables set as the dashboard
//! would offer them on this bed, and must return series whose labels name the bed's
//! services, workloads and components — except the queries [`cannot_be_non_empty`] lists,
//! each with its reason, which must then be empty (so the list cannot hide a working
//! panel). Weft's own dashboards (`charts/dashboards/`) must parse, every query. Root,
//! network namespaces, real eBPF, agents, weftd, weft-waypoint and Prometheus; about two
//! minutes.

use anyhow::{Context, Result};
use serde_json::Value;
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use weft_tests::{
    demo::{self, Demo},
    prometheus::Api,
    scenario,
};

/// Grafana's `$__rate_interval` as the bed sets it: many scrapes (every second) of traffic.
const RATE_INTERVAL: &str = "30s";

/// One panel query.
#[derive(Debug, Clone, serde::Deserialize)]
struct Query {
    dashboard: String,
    panel: String,
    expr: String,
}

fn istio_queries() -> Vec<Query> {
    serde_json::from_str(include_str!("../data/istio-dashboards/queries.json")).expect("queries.json parses")
}

/// The L7 metrics' names: on an ambient mesh only the waypoint reports them.
const L7: [&str; 4] =
    ["istio_requests_total", "istio_request_duration", "istio_request_bytes", "istio_response_bytes"];

/// Why a query cannot return anything on this bed, if it cannot.
fn cannot_be_non_empty(q: &Query) -> Option<&'static str> {
    let e = q.expr.as_str();
    let listed: [(&str, &str); 5] = [
        (
            "container_",
            "cAdvisor's container metrics come from the kubelet; the bed runs no kubelet (Weft's dashboards use the process's own process_* instead)",
        ),
        ("go_memstats_", "Go runtime metrics: weftd is not a Go program (Weft's dashboard leaves them out)"),
        ("go_goroutines", "Go runtime metrics: weftd is not a Go program (Weft's dashboard leaves them out)"),
        ("sidecar_injection_", "sidecar injection: an ambient mesh injects no sidecars"),
        ("istio_dns_requests_total", "ztunnel's DNS proxy: the agent has none"),
    ];
    if let Some((_, why)) = listed.iter().find(|(m, _)| e.contains(m)) {
        return Some(why);
    }
    // L7 metrics a server-side sidecar reports (reporter="destination"): on an ambient
    // mesh the waypoint reports them (reporter="waypoint"), and the gateway as the source.
    // Istio's ambient shows the same empty panels; Weft's dashboards offer "waypoint".
    let l7 = L7.iter().any(|m| e.contains(m));
    if l7 && e.contains("reporter=\"destination\"") {
        return Some(
            "L7 metrics a server-side sidecar reports (reporter=\"destination\"): in ambient the waypoint reports them \
             (reporter=\"waypoint\"); Weft's dashboards offer it",
        );
    }
    // The L7 mTLS panels with the source reporter ($qrep's other choice): only the server
    // side knows the policy it applied, so Istio's source reporters (sidecars, gateways;
    // here the ingress gateway) say connection_security_policy="unknown", as Weft's does.
    if l7 && e.contains("connection_security_policy=\"mutual_tls\"") && !e.contains("waypoint") {
        return Some(
            "L7 mTLS as a server-side sidecar reports it: a source reporter (the gateway) says \
             connection_security_policy=\"unknown\" as Istio's do; in ambient the server side is the waypoint \
             (reporter=\"waypoint\"), which $qrep does not offer",
        );
    }
    None
}

/// Values of `label` in the answer to a template variable's query, as Grafana's
/// `query_result(…)` with a regex picking one label.
fn label_values(api: &Api, promql: &str, labels: &[&str], at: f64) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for r in api.query(promql, Some(at))? {
        for l in labels {
            if let Some(v) = r["metric"][*l].as_str() {
                out.insert(v.to_owned());
            }
        }
    }
    Ok(out)
}

/// The ways a dashboard's variables can be set on this bed, as its variable queries offer
/// them (Istio's `templating` section): every choice of the single-value variables, "All"
/// (`.*`) for the multi-value ones.
fn bindings(api: &Api, dashboard: &str, at: f64) -> Result<Vec<BTreeMap<&'static str, String>>> {
    let all = |mut b: BTreeMap<&'static str, String>| {
        for v in ["srcns", "srcwl", "srccluster", "dstns", "dstwl", "dstcluster", "dstsvc"] {
            b.insert(v, ".*".to_owned());
        }
        b.insert("__rate_interval", RATE_INTERVAL.to_owned());
        b
    };
    let mut out = Vec::new();
    match dashboard {
        "service" => {
            let services = label_values(
                api,
                "sum(istio_requests_total{}) by (destination_service) or sum(istio_tcp_sent_bytes_total{}) by (destination_service)",
                &["destination_service"],
                at,
            )?;
            for service in services {
                for qrep in ["source", "destination"] {
                    out.push(all(BTreeMap::from([("service", service.clone()), ("qrep", qrep.to_owned())])));
                }
            }
        }
        "workload" => {
            let namespaces = label_values(
                api,
                "sum(istio_requests_total) by (destination_workload_namespace) or sum(istio_tcp_sent_bytes_total) by (destination_workload_namespace)",
                &["destination_workload_namespace"],
                at,
            )?;
            for ns in namespaces {
                let workloads = label_values(
                    api,
                    &format!(
                        "(sum(istio_requests_total{{destination_workload_namespace=~\"{ns}\"}}) by (destination_workload) \
                         or sum(istio_requests_total{{source_workload_namespace=~\"{ns}\"}}) by (source_workload)) \
                         or (sum(istio_tcp_sent_bytes_total{{destination_workload_namespace=~\"{ns}\"}}) by (destination_workload) \
                         or sum(istio_tcp_sent_bytes_total{{source_workload_namespace=~\"{ns}\"}}) by (source_workload))"
                    ),
                    &["destination_workload", "source_workload"],
                    at,
                )?;
                for wl in workloads {
                    for qrep in ["source", "destination"] {
                        out.push(all(BTreeMap::from([
                            ("namespace", ns.clone()),
                            ("workload", wl.clone()),
                            ("qrep", qrep.to_owned()),
                        ])));
                    }
                }
            }
        }
        _ => out.push(all(BTreeMap::new())),
    }
    Ok(out)
}

/// `expr` with `$name` replaced by its value, longest names first.
fn substitute(expr: &str, binding: &BTreeMap<&str, String>) -> String {
    let mut names: Vec<&&str> = binding.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_owned();
    for n in names {
        out = out.replace(&format!("${n}"), &binding[*n]);
    }
    out
}

/// What the bed's series may say, by label.
struct Expected {
    services: BTreeSet<String>,
    workloads: BTreeSet<String>,
    namespaces: BTreeSet<&'static str>,
    pods: BTreeSet<String>,
}

impl Expected {
    fn of(d: &Demo) -> Expected {
        let mut workloads: BTreeSet<String> = [
            "user",
            "productpage-v1",
            "details-v1",
            "reviews-v1",
            "reviews-v2",
            "reviews-v3",
            "ratings-v1",
            "waypoint",
            "bookinfo-gateway-istio",
            "legacy-v1",
        ]
        .map(String::from)
        .into();
        // The source of a plaintext connection from outside the mesh can be unknown.
        workloads.insert("unknown".into());
        let services = ["productpage", "details", "reviews", "ratings"]
            .iter()
            .map(|s| format!("{s}.bookinfo.svc.cluster.local"))
            .chain(["legacy.legacy.svc.cluster.local".to_owned()])
            .collect();
        let mut pods: BTreeSet<String> = d.nodes.iter().map(|n| format!("ztunnel-{}", n.name())).collect();
        pods.extend(["waypoint".to_owned(), "bookinfo-gateway-istio".to_owned(), "istiod-weftd".to_owned()]);
        Expected { services, workloads, namespaces: ["bookinfo", "legacy", "unknown"].into(), pods }
    }

    /// The labels of `series` the bed does not have, if any.
    fn unexpected(&self, series: &Value) -> Vec<String> {
        let mut wrong = Vec::new();
        let Some(metric) = series["metric"].as_object() else { return wrong };
        for (k, v) in metric {
            let v = v.as_str().unwrap_or_default();
            let ok = match k.as_str() {
                // A service address, or a pod address the client dialled directly.
                "destination_service" => {
                    self.services.contains(v)
                        || v.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_string().starts_with("198.1"))
                }
                "destination_workload" | "source_workload" => self.workloads.contains(v),
                "destination_workload_namespace" | "source_workload_namespace" => self.namespaces.contains(v),
                "destination_workload_var" => v
                    .split_once('.')
                    .is_some_and(|(w, ns)| self.workloads.contains(w) && self.namespaces.contains(ns)),
                "pod" => self.pods.contains(v),
                "component" => ["ztunnel", "proxy", "pilot"].contains(&v),
                "tag" => v == env!("CARGO_PKG_VERSION"),
                _ => true,
            };
            if !ok {
                wrong.push(format!("{k}={v:?}"));
            }
        }
        wrong
    }
}

/// Traffic beyond the demo's walk, for a while, so every rate has samples: Bookinfo's page
/// for anyone and for jason, from inside the mesh and through the ingress gateway
/// (productpage also calls `legacy`, outside the mesh, in plaintext; the gateway serves
/// it too, under `/legacy`), and `legacy` calling reviews-v1's pod directly (plaintext
/// into the mesh).
fn more_traffic(d: &Demo) -> Result<()> {
    let legacy = d.legacy.as_ref().context("the demo runs with its legacy namespace")?;
    let reviews_v1 = format!("{}:9080", d.reviews[0].ip());
    for round in 0..6 {
        d.load(None, 60, 4)?;
        d.load(Some("jason"), 20, 2)?;
        d.ingress_load(None, 30, 2)?;
        d.ingress_load(Some("jason"), 10, 2)?;
        let row = d.browse("/legacy/page", 10)?;
        anyhow::ensure!(row.count(200) == 10, "browser → gateway → legacy: {row:?}");
        let r = scenario::client(
            legacy,
            &["http", "--to", &reviews_v1, "--host", "reviews.bookinfo.svc.cluster.local", "--count", "20"],
            Duration::from_secs(60),
        )?;
        anyhow::ensure!(r.code == 0, "legacy → reviews-v1 round {round}: {r:?}");
    }
    Ok(())
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

#[test]
fn istios_dashboards_read_the_mesh_from_a_real_prometheus() {
    let mut d = demo::start(demo::Options { legacy: true }).expect("the demo starts");
    d.walk().expect("the demo walks the tasks");
    more_traffic(&d).expect("more traffic");
    // A moment for the last scrapes; the queries are asked at that instant, so that their
    // rate windows hold the traffic however long the queries take.
    std::thread::sleep(Duration::from_secs(3));
    let at = now();
    let api = d.prometheus.api();
    let expected = Expected::of(&d);

    let mut non_empty: BTreeMap<String, usize> = BTreeMap::new();
    let mut listed: Vec<(Query, &str)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut bindings_of: BTreeMap<String, Vec<BTreeMap<&str, String>>> = BTreeMap::new();
    for q in istio_queries() {
        let binds = match bindings_of.get(&q.dashboard) {
            Some(b) => b.clone(),
            None => {
                let b = bindings(&api, &q.dashboard, at).expect("variable queries");
                assert!(!b.is_empty(), "no value for {}'s variables", q.dashboard);
                bindings_of.insert(q.dashboard.clone(), b.clone());
                b
            }
        };
        let why = cannot_be_non_empty(&q);
        let mut found: Option<(String, Vec<Value>)> = None;
        for b in &binds {
            let promql = substitute(&q.expr, b);
            match api.query(&promql, Some(at)) {
                Ok(series) if !series.is_empty() => {
                    found = Some((promql, series));
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    failures.push(format!("[{}] {}: does not run: {e:#}\n  {promql}", q.dashboard, q.panel));
                    break;
                }
            }
        }
        match (found, why) {
            (Some((promql, series)), None) => {
                let wrong: Vec<String> = series.iter().flat_map(|s| expected.unexpected(s)).collect();
                if !wrong.is_empty() {
                    failures.push(format!(
                        "[{}] {}: unexpected labels {wrong:?}\n  {promql}",
                        q.dashboard, q.panel
                    ));
                }
                *non_empty.entry(q.dashboard.clone()).or_default() += 1;
            }
            (None, Some(why)) => listed.push((q, why)),
            (Some((promql, _)), Some(why)) => failures.push(format!(
                "[{}] {}: listed as empty ({why}) but returns series: shorten the list\n  {promql}",
                q.dashboard, q.panel
            )),
            (None, None) => failures.push(format!("[{}] {}: empty\n  {}", q.dashboard, q.panel, q.expr)),
        }
    }
    println!("non-empty, by dashboard: {non_empty:?}");
    println!("{} listed as empty on this bed:", listed.len());
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (q, why) in &listed {
        reasons.entry(why).or_default().push(format!("[{}] {}", q.dashboard, q.panel));
    }
    for (why, panels) in &reasons {
        println!("  {} × {why}", panels.len());
    }
    assert!(
        failures.is_empty(),
        "{} of Istio's dashboard queries fail:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Weft's own dashboards: every query parses and runs (Prometheus refuses a query that
    // does not parse with bad_data).
    let mut weft_total = 0;
    let mut weft_non_empty = 0;
    let mut weft_empty: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/dashboards"))
        .expect("charts/dashboards")
    {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        let mut exprs = Vec::new();
        collect_exprs(&dashboard["panels"], &mut exprs);
        assert!(!exprs.is_empty(), "{} has no queries", path.display());
        let kind = match path.file_stem().and_then(|s| s.to_str()) {
            Some("weft-service") => "service",
            Some("weft-workload") => "workload",
            _ => "other",
        };
        let mut binds = bindings(&api, kind, at).expect("variables");
        for b in &mut binds {
            if b.get("qrep").is_some_and(|q| q == "destination") {
                b.insert("qrep", "waypoint".into());
            }
        }
        for e in exprs {
            weft_total += 1;
            let promql = substitute(&e, &binds[0]);
            let mut any = false;
            for b in &binds {
                match api.query(&substitute(&e, b), Some(at)) {
                    Ok(s) => {
                        if !s.is_empty() {
                            any = true;
                            break;
                        }
                    }
                    Err(err) => panic!("{}: {promql} does not run: {err:#}", path.display()),
                }
            }
            weft_non_empty += usize::from(any);
            if !any {
                weft_empty.push(format!("{}: {e}", path.file_name().unwrap_or_default().to_string_lossy()));
            }
        }
    }
    println!(
        "Weft's dashboards: {weft_total} queries parse and run, {weft_non_empty} return series; empty here:"
    );
    for e in &weft_empty {
        println!("  {e}");
    }
    assert!(
        weft_non_empty * 10 >= weft_total * 7,
        "Weft's dashboards mostly empty: {weft_non_empty}/{weft_total}"
    );
}

fn collect_exprs(panels: &Value, out: &mut Vec<String>) {
    for p in panels.as_array().into_iter().flatten() {
        collect_exprs(&p["panels"], out);
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str().filter(|e| !e.is_empty()) {
                out.push(e.to_owned());
            }
        }
    }
}
