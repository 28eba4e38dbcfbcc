//! `cargo xtask demo`: a Bookinfo-like application on a three-node Weft mesh, its namespace
//! served by a weft-waypoint, opened to a browser outside the mesh through an ingress
//! gateway (Istio's ambient getting-started: `gateway-api/bookinfo-gateway.yaml`), then
//! walked through Istio's traffic-management tasks in the order of Istio's docs (request
//! routing, fault injection, traffic shifting, request timeouts, circuit breaking), each
//! applying Istio's own YAML, with one table row per batch of requests: which reviews
//! version answered, the median latency, the status codes.
//!
//! ```text
//!  n1                                   n3                      n2
//!  user ──▶ productpage-v1 ─┬─▶ details-v1       every call goes     reviews-v1
//!  (load)       ▲           └─▶ reviews ─────▶   through waypoint ─▶ reviews-v2 ─┬─▶ ratings-v1
//!               │                               (HBONE, mTLS)       reviews-v3 ─┘
//!  browser ─────┼──────────────────────────▶ bookinfo-gateway-istio
//!  (outside)    └──────── HBONE, mTLS ──────────────┘
//! ```
//!
//! The apps are `weft-testapp serve --call …`: each calls its upstreams as Bookinfo's do,
//! relaying the `end-user` header (so "jason" routes at every hop), and answers with the
//! first failing call's status, so a fault deep in the chain shows at the user as what it
//! was. The load is `weft-testapp http --version-of reviews` from the `user` pod, or from
//! the `browser` pod through the gateway.
//!
//! A real Prometheus on n1 scrapes the agents, the waypoint and the gateway (access logs
//! on, as in Istio's demo profile) and weftd every second ([`scrape_targets`]); the live
//! page ([`page`]), served on the host's loopback, shows each service's request rate,
//! error rate and p99 from it while the demo runs.

mod apply;
pub mod page;
pub mod samples;

use crate::{
    Pod, Proc,
    agent::Agent,
    bed::Node,
    bins,
    prometheus::{Prometheus, Target},
    scenario::{self, Scenario},
    waypoint::{GATEWAY_NAME_LABEL, Waypoint, WaypointKind, WaypointOptions},
    weftd::Weftd,
};
use anyhow::{Context, Result, bail};
use apply::Applied;
use samples::Sample;
use serde_json::Value;
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

const PORT: u16 = 9080;
const HBONE_PORT: u16 = 15008;
const PRODUCTPAGE: &str = "productpage.bookinfo.svc.cluster.local=198.19.0.10:9080";
const DETAILS: &str = "details.bookinfo.svc.cluster.local=198.19.0.11:9080";
const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local=198.19.0.12:9080";
const RATINGS: &str = "ratings.bookinfo.svc.cluster.local=198.19.0.13:9080";
/// The waypoint's identity, as the reviews and ratings pods' agent sees it.
pub const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/waypoint";

/// Where a step's requests enter Bookinfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// From the `user` pod inside the mesh, to the productpage Service.
    Mesh,
    /// From the `browser` pod outside the mesh, through the ingress gateway (Istio's
    /// `http://$GATEWAY_URL/productpage`).
    Ingress,
}

/// One step of a task: what it deletes and applies, then the traffic that shows the effect.
struct Step {
    /// Names the step for [`Demo::row`].
    id: &'static str,
    /// Istio's task (istio.io/latest/docs/tasks/traffic-management/<task>/).
    task: &'static str,
    delete: &'static [&'static Sample],
    apply: &'static [&'static Sample],
    via: Via,
    batches: &'static [Batch],
}

/// Requests from the user pod to productpage.
struct Batch {
    /// The `end-user` header (who is logged in), if any.
    user: Option<&'static str>,
    requests: u64,
    /// Requests in flight at once.
    concurrency: u32,
}

const fn batch(user: Option<&'static str>, requests: u64, concurrency: u32) -> Batch {
    Batch { user, requests, concurrency }
}

const JASON: Option<&str> = Some("jason");

/// Istio's tasks in the order of its docs. Splits get 400 requests, so a share is known
/// within a few points; the 7 s delay only 3 (at once), to keep the demo short.
const STEPS: &[Step] = &[
    Step {
        id: "ingress",
        task: "getting-started",
        delete: &[],
        apply: &[&samples::BOOKINFO_GATEWAY],
        via: Via::Ingress,
        batches: &[batch(None, 60, 4)],
    },
    Step {
        id: "all-v1",
        task: "request-routing",
        delete: &[],
        apply: &[&samples::VIRTUAL_SERVICE_ALL_V1],
        via: Via::Mesh,
        batches: &[batch(None, 200, 4)],
    },
    Step {
        id: "test-v2",
        task: "request-routing",
        delete: &[],
        apply: &[&samples::VIRTUAL_SERVICE_REVIEWS_TEST_V2],
        via: Via::Mesh,
        batches: &[batch(JASON, 50, 4), batch(None, 50, 4)],
    },
    Step {
        id: "delay-7s",
        task: "fault-injection",
        delete: &[],
        apply: &[&samples::VIRTUAL_SERVICE_RATINGS_TEST_DELAY],
        via: Via::Mesh,
        batches: &[batch(JASON, 3, 3), batch(None, 20, 4)],
    },
    Step {
        id: "abort",
        task: "fault-injection",
        delete: &[],
        apply: &[&samples::VIRTUAL_SERVICE_RATINGS_TEST_ABORT],
        via: Via::Mesh,
        batches: &[batch(JASON, 50, 4), batch(None, 50, 4)],
    },
    Step {
        id: "shift-all-v1",
        task: "traffic-shifting",
        delete: &[],
        apply: &[&samples::VIRTUAL_SERVICE_ALL_V1],
        via: Via::Mesh,
        batches: &[batch(None, 50, 4)],
    },
    Step {
        id: "50-v3",
        task: "traffic-shifting",
        delete: &[],
        apply: &[&samples::VIRTUAL_SERVICE_REVIEWS_50_V3],
        via: Via::Mesh,
        batches: &[batch(None, 400, 4)],
    },
    Step {
        id: "90-10",
        task: "traffic-shifting",
        delete: &[],
        apply: &[&samples::VIRTUAL_SERVICE_REVIEWS_90_V1_10_V3],
        via: Via::Mesh,
        batches: &[batch(None, 400, 4)],
    },
    Step {
        id: "delay-2s",
        task: "request-timeouts",
        delete: &[],
        apply: &[&samples::REVIEWS_V2_RATINGS_DELAY_2S],
        via: Via::Mesh,
        batches: &[batch(None, 8, 4)],
    },
    Step {
        id: "timeout",
        task: "request-timeouts",
        delete: &[],
        apply: &[&samples::REVIEWS_TIMEOUT_0_5S],
        via: Via::Mesh,
        batches: &[batch(None, 20, 4)],
    },
    // request-timeouts cleans up with `kubectl delete -f virtual-service-all-v1.yaml`:
    // reviews is then balanced over all three versions, behind the breaker.
    Step {
        id: "circuit-breaker",
        task: "circuit-breaking",
        delete: &[&samples::VIRTUAL_SERVICE_ALL_V1],
        apply: &[&samples::REVIEWS_CIRCUIT_BREAKER],
        via: Via::Mesh,
        batches: &[batch(None, 200, 10)],
    },
];

/// What one batch saw.
#[derive(Debug, Clone)]
pub struct Row {
    pub step: &'static str,
    pub user: Option<&'static str>,
    pub requests: u64,
    /// The reviews version behind each 200.
    pub versions: BTreeMap<String, u64>,
    pub statuses: BTreeMap<u16, u64>,
    /// Median time of an answered request (any status), at the user.
    pub p50: Duration,
}

impl Row {
    /// Percent of the 200s answered by reviews `version`.
    pub fn share(&self, version: &str) -> f64 {
        let ok: u64 = self.versions.values().sum();
        if ok == 0 {
            0.0
        } else {
            100.0 * self.versions.get(version).copied().unwrap_or(0) as f64 / ok as f64
        }
    }

    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

/// What the demo sets up beyond Bookinfo.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A `legacy` namespace outside the mesh (one pod, `legacy-v1`, behind Service
    /// `legacy`), for plaintext traffic: the mesh's calls to it and its calls into the mesh.
    pub legacy: bool,
}

/// The demo, set up: dropping it tears the mesh down.
pub struct Demo {
    pub rows: Vec<Row>,
    /// HBONE connections (mutual TLS) the reviews and ratings pods' agent took from the
    /// waypoint, and from anyone else (none: every call goes through the waypoint).
    pub from_waypoint: u64,
    pub bypassing: u64,
    /// The live page (request rate, error rate and p99 per service, from Prometheus).
    pub page: page::LivePage,
    pub prometheus: Prometheus,
    pub nodes: [Node; 3],
    pub user: Pod,
    pub productpage: Pod,
    /// reviews-v1, -v2, -v3.
    pub reviews: Vec<Pod>,
    /// The `legacy` pod, with [`Options::legacy`].
    pub legacy: Option<Pod>,
    pub agents: Vec<Agent>,
    pub waypoint: Waypoint,
    /// The ingress gateway (weft-waypoint as pilot-agent's `router`) on n3, and the pod
    /// outside the mesh that browses Bookinfo through it.
    pub ingress: Waypoint,
    pub browser: Pod,
    applied: Applied,
    _servers: Vec<Proc>,
    // Last: the bed goes after every process in it.
    pub scenario: Scenario,
}

impl Demo {
    /// The row of step `id` for `user`.
    pub fn row(&self, id: &str, user: Option<&str>) -> &Row {
        self.rows
            .iter()
            .find(|r| r.step == id && r.user == user)
            .unwrap_or_else(|| panic!("no row for step {id} user {user:?}"))
    }

    /// A steady trickle of requests from the user pod to productpage (ten a second, for
    /// `secs`), so the live page has numbers while the mesh is up; stopped when dropped.
    pub fn background_load(&self, secs: u64) -> Result<Proc> {
        let (host, addr) = PRODUCTPAGE.split_once('=').expect("HOST=ADDR");
        let mut cmd = Command::new(bins::path("weft-testapp"));
        cmd.args(["http", "--to", addr, "--host", host, "--path", "/productpage", "--interval-ms", "100"])
            .args(["--secs", &secs.to_string(), "--timeout-secs", "30"]);
        self.user.spawn(cmd)
    }

    /// Requests from the user pod to productpage (Bookinfo's front page), `concurrency` at
    /// a time, as the user `end_user` if any.
    pub fn load(&self, end_user: Option<&'static str>, requests: u64, concurrency: u32) -> Result<Row> {
        self.send(Via::Mesh, "load", &batch(end_user, requests, concurrency))
    }

    /// The same from the browser outside the mesh, through the ingress gateway.
    pub fn ingress_load(
        &self,
        end_user: Option<&'static str>,
        requests: u64,
        concurrency: u32,
    ) -> Result<Row> {
        self.send(Via::Ingress, "load", &batch(end_user, requests, concurrency))
    }

    /// `requests` GETs of `path` from the browser through the ingress gateway.
    pub fn browse(&self, path: &str, requests: u64) -> Result<Row> {
        let url = self.gateway_url();
        send(&self.browser, &url, &url, path, "browse", &batch(None, requests, 1))
    }

    /// `$GATEWAY_URL`: where the browser reaches the ingress gateway (its pod's port, as
    /// a load balancer in front of the gateway's Service would).
    pub fn gateway_url(&self) -> String {
        format!("{}:{INGRESS_PORT}", self.ingress.pod().ip())
    }

    /// One batch to productpage, entering `via` the mesh or the ingress gateway.
    fn send(&self, via: Via, step: &'static str, b: &Batch) -> Result<Row> {
        match via {
            Via::Mesh => {
                let (host, addr) = PRODUCTPAGE.split_once('=').expect("HOST=ADDR");
                send(&self.user, addr, host, "/productpage", step, b)
            }
            Via::Ingress => {
                let url = self.gateway_url();
                send(&self.browser, &url, &url, "/productpage", step, b)
            }
        }
    }
}

/// Sets up the mesh and walks the tasks, printing as it goes.
pub fn run() -> Result<Demo> {
    let mut demo = start(Options::default())?;
    demo.walk()?;
    Ok(demo)
}

/// `legacy` published at the ingress gateway under `/legacy` ([`Options::legacy`]): an
/// HTTPRoute in Bookinfo's namespace (the listener admits routes of its own namespace
/// only) to the Service in `legacy`, which that namespace grants.
const LEGACY_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: legacy, namespace: bookinfo }
spec:
  parentRefs: [{ name: bookinfo-gateway }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /legacy } }]
      backendRefs: [{ name: legacy, namespace: legacy, port: 9080 }]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: bookinfo-routes, namespace: legacy }
spec:
  from: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: bookinfo }]
  to: [{ group: "", kind: Service }]
"#;

/// The port of `bookinfo-gateway`'s listener, which its pods serve.
const INGRESS_PORT: u16 = 80;
/// The Gateway's Service, as istiod makes it for a Gateway of class `istio` (its
/// listener's port and the status port; ClusterIP, as the ambient getting-started
/// annotates it with `networking.istio.io/service-type`).
const INGRESS_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: bookinfo-gateway-istio
  namespace: bookinfo
  labels: { gateway.networking.k8s.io/gateway-name: bookinfo-gateway }
spec:
  clusterIP: 198.19.0.20
  ports: [{ name: status-port, port: 15021, targetPort: 15021 }, { name: http, port: 80, targetPort: 80 }]
  selector: { gateway.networking.k8s.io/gateway-name: bookinfo-gateway }
"#;
/// The labels istiod gives the pods of Gateway `bookinfo-gateway`'s Deployment.
const INGRESS_LABELS: [(&str, &str); 2] =
    [(GATEWAY_NAME_LABEL, "bookinfo-gateway"), ("service.istio.io/canonical-name", "bookinfo-gateway-istio")];

/// `legacy`: a Service outside the mesh ([`Options::legacy`]).
const LEGACY: &str = "legacy.legacy.svc.cluster.local=198.19.0.30:9080";
const LEGACY_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata: { name: legacy, namespace: legacy, labels: { app: legacy } }
spec:
  clusterIP: 198.19.0.30
  ports: [{ name: http, port: 9080, targetPort: 9080 }]
  selector: { app: legacy }
"#;

/// Sets up Bookinfo on the mesh, Prometheus scraping it and the live page; prints the
/// mesh and the page's URL.
pub fn start(options: Options) -> Result<Demo> {
    let mut s = Scenario::new("demo")?;
    let nodes = [s.bed.node("n1")?, s.bed.node("n2")?, s.bed.node("n3")?];
    let pod = |s: &mut Scenario, node: usize, ns: &str, name: &str| s.bed.pod(&nodes[node], ns, name);
    let user = pod(&mut s, 0, "bookinfo", "user")?;
    let productpage = pod(&mut s, 0, "bookinfo", "productpage-v1")?;
    let details = pod(&mut s, 0, "bookinfo", "details-v1")?;
    let reviews: Vec<Pod> = ["v1", "v2", "v3"]
        .iter()
        .map(|v| pod(&mut s, 1, "bookinfo", &format!("reviews-{v}")))
        .collect::<Result<_>>()?;
    let ratings = pod(&mut s, 1, "bookinfo", "ratings-v1")?;
    let waypoint_pod = pod(&mut s, 2, "bookinfo", "waypoint")?;
    let ingress_pod = pod(&mut s, 2, "bookinfo", "bookinfo-gateway-istio")?;
    let browser = pod(&mut s, 0, "external", "browser")?;
    let legacy = if options.legacy { Some(pod(&mut s, 2, "legacy", "legacy-v1")?) } else { None };

    // The namespace is ambient and uses the waypoint: every call to its services goes
    // through it (istio.io/use-waypoint), as after `istioctl waypoint apply --enroll-namespace`.
    s.config.namespace("bookinfo", true);
    for ns in s.config.mesh.namespaces.iter_mut().filter(|n| n.name == "bookinfo") {
        ns.labels.insert("istio.io/use-waypoint".into(), "waypoint".into());
    }
    s.config.pod(&user, "bookinfo", &[("app", "user")], &[]);
    for (p, app, version) in [(&productpage, "productpage", "v1"), (&details, "details", "v1")]
        .into_iter()
        .chain(reviews.iter().zip(["v1", "v2", "v3"]).map(|(p, v)| (p, "reviews", v)))
        .chain([(&ratings, "ratings", "v1")])
    {
        s.config.pod(p, "bookinfo", &[("app", app), ("version", version)], &[PORT]);
    }
    // Not enrolled, as Istio labels a waypoint's pod; the bed names its service account
    // after the pod: `waypoint`, the Gateway's name.
    s.config.pod(
        &waypoint_pod,
        "bookinfo",
        &[(GATEWAY_NAME_LABEL, "waypoint"), ("istio.io/dataplane-mode", "none")],
        &[HBONE_PORT],
    );
    let mut ingress_labels = INGRESS_LABELS.to_vec();
    ingress_labels.push(("istio.io/dataplane-mode", "none"));
    s.config.pod(&ingress_pod, "bookinfo", &ingress_labels, &[INGRESS_PORT]);
    s.config.namespace("external", false);
    s.config.pod(&browser, "external", &[("app", "browser")], &[]);
    s.write_kubernetes_yaml("bookinfo.yaml", samples::BOOKINFO)?;
    s.write_kubernetes_yaml("ingress.yaml", INGRESS_SERVICE)?;
    if let Some(legacy) = &legacy {
        s.config.namespace("legacy", false);
        s.config.pod(legacy, "legacy", &[("app", "legacy"), ("version", "v1")], &[PORT]);
        s.write_kubernetes_yaml("legacy.yaml", LEGACY_SERVICE)?;
        s.write_kubernetes_yaml("legacy-route.yaml", LEGACY_ROUTE)?;
    }
    let mut applied = Applied::new("bookinfo");
    applied.apply(&samples::DESTINATION_RULE_ALL)?;
    applied.write(&s)?;

    println!("Bookinfo in namespace bookinfo (ambient, every service through the waypoint on n3):\n");
    println!("{}", s.bed.describe());
    let agents = vec![s.agent(&nodes[0])?, s.agent(&nodes[1])?, s.agent(&nodes[2])?];
    agents[0].wait_enrolled(&["user", "productpage-v1", "details-v1"], Duration::from_secs(10))?;
    agents[1]
        .wait_enrolled(&["reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"], Duration::from_secs(10))?;
    agents[2].wait_enrolled(&[], Duration::from_secs(10))?;
    let productpage_calls: &[&str] =
        if options.legacy { &[DETAILS, REVIEWS, LEGACY] } else { &[DETAILS, REVIEWS] };
    let mut servers = vec![
        serve(&productpage, "v1", productpage_calls)?,
        serve(&details, "v1", &[])?,
        serve(&reviews[0], "v1", &[])?,
        serve(&reviews[1], "v2", &[RATINGS])?,
        serve(&reviews[2], "v3", &[RATINGS])?,
        serve(&ratings, "v1", &[])?,
    ];
    if let Some(legacy) = &legacy {
        servers.push(serve(legacy, "v1", &[])?);
    }
    let dir = s.dir.clone();
    let weftd = s.control_plane(&nodes[0])?;
    let waypoint_options = WaypointOptions { access_log: true, ..Default::default() };
    let waypoint =
        Waypoint::start_with(WaypointKind::Weft, &waypoint_pod, "waypoint", weftd, &dir, &waypoint_options)
            .with_context(|| format!("weftd: {}", weftd.stderr()))?;
    wait_for_services(&waypoint)?;
    let ingress_options = WaypointOptions {
        access_log: true,
        gateway_labels: INGRESS_LABELS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..Default::default()
    };
    let ingress = Waypoint::start_with(
        WaypointKind::Weft,
        &ingress_pod,
        "bookinfo-gateway-istio",
        weftd,
        &dir,
        &ingress_options,
    )
    .with_context(|| format!("weftd: {}", weftd.stderr()))?;

    let prometheus_dir = dir.join("prometheus");
    std::fs::create_dir_all(&prometheus_dir)?;
    let prometheus =
        Prometheus::start(&nodes[0], &prometheus_dir, &scrape_targets(&nodes, &waypoint_pod, &ingress_pod))?;
    prometheus.wait_all_up(Duration::from_secs(20))?;
    let page = page::LivePage::start(prometheus.api())?;
    println!(
        "Prometheus (on n1) scrapes the agents, the waypoint, the ingress gateway and weftd every second.\n\
         Live page: {} (request rate, error rate and p99 per service, from Prometheus)\n",
        page.url()
    );
    Ok(Demo {
        rows: Vec::new(),
        from_waypoint: 0,
        bypassing: 0,
        page,
        prometheus,
        nodes,
        user,
        productpage,
        reviews,
        legacy,
        agents,
        waypoint,
        ingress,
        browser,
        applied,
        _servers: servers,
        scenario: s,
    })
}

/// What Prometheus scrapes: each node's agent, the waypoint, the ingress gateway and weftd,
/// labelled as Kubernetes service discovery labels Istio's pods (`pod`, `app`,
/// `namespace`: ztunnel, the waypoint, the gateway, istiod), so Istio's dashboards find
/// them, under Weft's job names. The agents' labels are those of the agent chart installed
/// with Istio's names (`resourceName=ztunnel`: pods `ztunnel-*`, `app: ztunnel`).
pub fn scrape_targets(nodes: &[Node], waypoint: &Pod, ingress: &Pod) -> Vec<Target> {
    let mut targets: Vec<Target> = nodes
        .iter()
        .map(|n| {
            let pod = format!("ztunnel-{}", n.name());
            Target::new(
                "weft-agent",
                format!("{}:{}", n.ip(), crate::agent::METRICS_PORT),
                "/stats/prometheus",
                &[("pod", &pod), ("app", "ztunnel"), ("namespace", "istio-system"), ("node", n.name())],
            )
        })
        .collect();
    targets.push(Target::new(
        "weft-waypoint",
        format!("{}:{}", waypoint.ip(), crate::waypoint::METRICS_PORT),
        "/stats/prometheus",
        &[("pod", waypoint.name()), ("app", "waypoint"), ("namespace", waypoint.namespace())],
    ));
    targets.push(Target::new(
        "weft-gateway",
        format!("{}:{}", ingress.ip(), crate::waypoint::METRICS_PORT),
        "/stats/prometheus",
        &[("pod", ingress.name()), ("app", "bookinfo-gateway-istio"), ("namespace", ingress.namespace())],
    ));
    // weftd runs on the first node, beside Prometheus.
    targets.push(Target::new(
        "weftd",
        format!("127.0.0.1:{}", crate::weftd::METRICS_PORT),
        "/metrics",
        &[("pod", "istiod-weftd"), ("app", "istiod"), ("namespace", "istio-system")],
    ));
    targets
}

impl Demo {
    /// Walks Istio's traffic-management tasks, printing each step's rows.
    pub fn walk(&mut self) -> Result<()> {
        println!(
            "weftd (on n1) reads the YAML in {} and feeds the agents, the waypoint and the ingress\n\
             gateway (both weft-waypoint) over xDS. Before the tasks: destination-rule-all.yaml. Each row:\n\
             requests to productpage from the user pod in the mesh, or (getting-started) from a browser\n\
             outside it through the ingress gateway at $GATEWAY_URL = {}; the reviews version behind\n\
             each 200, the median latency, the status codes. The 7 s delay gets only 3 requests (at\n\
             once), to keep the demo short.\n",
            self.scenario.kubernetes_dir().display(),
            self.gateway_url(),
        );
        println!("{}", header());
        let n1 = self.nodes[0].clone();
        for step in STEPS {
            // The proxy whose configuration the step changes.
            let proxy = match step.via {
                Via::Mesh => &self.waypoint,
                Via::Ingress => &self.ingress,
            };
            let proxy_id = proxy.node_id().to_owned();
            let weftd = self.scenario.control_plane(&n1)?;
            let before = wait_pushed(weftd, &proxy_id, None)?;
            for sample in step.delete {
                self.applied.delete(sample)?;
            }
            for sample in step.apply {
                self.applied.apply(sample)?;
            }
            self.applied.write(&self.scenario)?;
            let weftd = self.scenario.control_plane(&n1)?;
            wait_pushed(weftd, &proxy_id, Some(&before))
                .with_context(|| format!("step {}: {}", step.id, proxy.stderr()))?;
            let files: Vec<String> = step
                .delete
                .iter()
                .map(|d| format!("delete {}", d.file))
                .chain(step.apply.iter().map(|a| a.file.to_owned()))
                .collect();
            let mut step_rows = Vec::new();
            for b in step.batches {
                step_rows.push(self.send(step.via, step.id, b)?);
            }
            println!("{}", format_step(step.task, &files, &step_rows));
            self.rows.extend(step_rows);
        }

        let from = |principal: Option<&str>| {
            let mut labels = vec![("reporter", "destination"), ("connection_security_policy", "mutual_tls")];
            labels.extend(principal.map(|p| ("source_principal", p)));
            self.agents[1].metric("istio_tcp_connections_opened_total", &labels)
        };
        self.from_waypoint = from(Some(WAYPOINT_ID))?;
        self.bypassing = from(None)?.saturating_sub(self.from_waypoint);
        println!(
            "\nagent n2: reviews and ratings took {} HBONE connections (mutual TLS) from {WAYPOINT_ID}, {} from \
             anyone else",
            self.from_waypoint, self.bypassing
        );
        Ok(())
    }
}

/// `weft-testapp serve` in `pod`, calling `calls` (`HOST=ADDR`) on every request.
fn serve(pod: &Pod, version: &str, calls: &[&str]) -> Result<Proc> {
    let mut cmd = Command::new(bins::path("weft-testapp"));
    cmd.args(["serve", "--name", pod.name(), "--version", version, "--port", &PORT.to_string()]);
    for call in calls {
        cmd.args(["--call", call]);
    }
    let proc = pod.spawn(cmd)?;
    proc.wait_for_line(|l| l.contains("\"listening\""), Duration::from_secs(10))
        .with_context(|| format!("{} did not start", pod.name()))?;
    Ok(proc)
}

/// One batch of requests for `path` from `from` to `addr`, with Host `host`.
fn send(from: &Pod, addr: &str, host: &str, path: &str, step: &'static str, b: &Batch) -> Result<Row> {
    let (requests, concurrency) = (b.requests.to_string(), b.concurrency.to_string());
    let header = b.user.map(|u| format!("end-user: {u}"));
    let mut args = vec!["http", "--to", addr, "--host", host, "--path", path];
    args.extend(["--count", &requests, "--concurrency", &concurrency]);
    args.extend(["--version-of", "reviews", "--timeout-secs", "30"]);
    if let Some(h) = &header {
        args.extend(["--header", h]);
    }
    let r = scenario::client(from, &args, Duration::from_secs(120))?;
    if r.code != 0 {
        bail!("the load from pod {} failed: {r:?}", from.name());
    }
    let j = &r.json;
    let map = |v: &Value| -> BTreeMap<String, u64> {
        v.as_object().into_iter().flatten().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect()
    };
    Ok(Row {
        step,
        user: b.user,
        requests: j["requests"].as_u64().unwrap_or(0),
        versions: map(&j["versions"]),
        statuses: map(&j["statuses"]).into_iter().filter_map(|(k, n)| Some((k.parse().ok()?, n))).collect(),
        p50: Duration::from_secs_f64(j["latency_ms"]["p50"].as_f64().unwrap_or(0.0) / 1000.0),
    })
}

/// Waits until weft-waypoint holds a dispatch entry for each service and a cluster with an
/// endpoint for each subset in use.
fn wait_for_services(waypoint: &Waypoint) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted: Vec<(String, String)> = [
        (PRODUCTPAGE, "v1"),
        (DETAILS, "v1"),
        (REVIEWS, "v1"),
        (REVIEWS, "v2"),
        (REVIEWS, "v3"),
        (RATINGS, "v1"),
    ]
    .iter()
    .map(|(call, subset)| {
        let (host, addr) = call.split_once('=').expect("HOST=ADDR");
        (addr.to_owned(), format!("inbound-vip|{PORT}|http/{subset}|{host}"))
    })
    .collect();
    loop {
        let (_, body) = waypoint.admin("/config_dump")?;
        let dump: Value = serde_json::from_str(&body).context("weft-waypoint's config dump")?;
        let ready = wanted.iter().all(|(addr, cluster)| {
            let dispatched =
                dump["dispatch"].as_array().is_some_and(|d| d.iter().any(|e| e[0] == addr.as_str()));
            let served = dump["clusters"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["name"] == cluster.as_str() && c["endpoints"].as_array().is_some_and(|e| !e.is_empty())
                })
            });
            dispatched && served
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("weft-waypoint never held Bookinfo's services:\n{body}\n{}", waypoint.stderr());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The versions the waypoint has acknowledged, by resource type (weftd's `/debug/syncz`),
/// if it is in sync on every type.
fn acked(weftd: &Weftd, node_id: &str) -> Result<Option<BTreeMap<String, String>>> {
    let (_, body) = weftd.get("/debug/syncz")?;
    let proxies: Value = serde_json::from_str(&body).context("weftd's /debug/syncz")?;
    let Some(proxy) = proxies.as_array().into_iter().flatten().find(|p| p["proxy_id"] == node_id) else {
        return Ok(None);
    };
    let types = proxy["types"].as_array().context("syncz without types")?;
    if types.iter().any(|t| t["state"] != "SYNCED") {
        return Ok(None);
    }
    Ok(Some(
        types
            .iter()
            .map(|t| (t["type_url"].as_str().unwrap_or("").to_owned(), t["acked_version"].to_string()))
            .collect(),
    ))
}

/// Waits until the waypoint is in sync and has acknowledged a configuration other than
/// `before` (weftd read a step's YAML, translated it and pushed it, and the waypoint applied
/// it); returns what it acknowledged.
fn wait_pushed(
    weftd: &Weftd,
    node_id: &str,
    before: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(now) = acked(weftd, node_id)?
            && Some(&now) != before
        {
            return Ok(now);
        }
        if Instant::now() > deadline {
            let (_, syncz) = weftd.get("/debug/syncz")?;
            bail!(
                "the waypoint did not take the new configuration within 20 s:\n{syncz}\n{}",
                weftd.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn header() -> String {
    let mut out = format!(
        "{:<17} {:<42} {:<6} {:>5} {:>17} {:>8}  {}\n",
        "task", "YAML applied", "user", "reqs", "reviews v1/v2/v3", "p50", "status codes"
    );
    out.push_str(&"-".repeat(118));
    out
}

/// A step's rows: the task and each file on the left, one batch per line on the right.
fn format_step(task: &str, files: &[String], rows: &[Row]) -> String {
    let mut out = String::new();
    for i in 0..files.len().max(rows.len()) {
        let task = if i == 0 { task } else { "" };
        let file = files.get(i).map_or("", String::as_str);
        let _ = write!(out, "{task:<17} {file:<42}");
        if let Some(r) = rows.get(i) {
            let split = if r.versions.values().sum::<u64>() == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}/{:.0}/{:.0} %", r.share("v1"), r.share("v2"), r.share("v3"))
            };
            let codes: Vec<String> = r.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
            let failed = r.requests - r.statuses.values().sum::<u64>();
            let codes =
                if failed > 0 { format!("{} no-reply×{failed}", codes.join(" ")) } else { codes.join(" ") };
            let p50 = r.p50.as_secs_f64();
            let p50 = if p50 < 1.0 { format!("{:.0} ms", p50 * 1000.0) } else { format!("{p50:.2} s") };
            let _ =
                write!(out, " {:<6} {:>5} {split:>17} {p50:>8}  {codes}", r.user.unwrap_or("-"), r.requests);
        }
        // The padding of a line without a batch would trail.
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out.pop();
    out
}
