//! End-to-end: the waypoint weftd deploys for a waypoint Gateway, run as Kubernetes would
//! run it. weftd watches the fake API server (`weft_tests::kubeapi`, on node n1) holding a
//! small ambient mesh; the test applies a `weft-waypoint` Gateway and labels the namespace
//! `istio.io/use-waypoint`; weftd server-side-applies the waypoint's ServiceAccount,
//! Deployment and Service. The Deployment read back is then run as written: the
//! controllers' ReplicaSet and Pod on the API server, and the bed's kubelet
//! (`weft_tests::kubelet`) running its pod template in a bed pod on n2 (its env from the
//! downward API, the root ConfigMap and a projected token mounted where the template
//! says, `weftd.istio-system.svc` resolved by the pod's /etc/hosts as cluster DNS would),
//! ready when its readinessProbe passes.
//!
//! ```text
//! n1: fake API server ◀─ list/watch ─ weftd ─ xDS, CA ─▶ agents, waypoint
//! productpage (n1) ─HTTP to the reviews VIP─▶ agent n1 ─HBONE─▶ waypoint pod (n2)
//!   ─HBONE─▶ agent n2 ─▶ reviews-v1 (n2)
//! ```
//!
//! Traffic from an enrolled client then goes through that waypoint (its
//! `istio_requests_total{reporter="waypoint"}` counts it; a VirtualService fault weftd
//! translates is applied; the reviews agent sees the waypoint's service-account identity,
//! certified by weftd's CA on the pod's token, which the API server's TokenReview
//! vouched for). A changed Gateway changes the Deployment, and its new template is rolled
//! out and serves; a deleted Gateway takes the Deployment, Service and pod with it, and
//! traffic goes straight to reviews again. Root, network namespaces, real eBPF.

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod as PodObject};
use serde_json::{Value, json};
use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};
use weft_tests::{
    Node, Pod, TestBed,
    agent::{self, Agent, AgentOptions, ModelSource, sum_samples},
    kubeapi::{FakeApiServer, TokenUser},
    kubelet::{self, Kubelet, RunningPod},
    meshconfig::{self, MeshConfig},
    scenario,
    weftd::{SERVER_NAME, Weftd},
};

/// Long enough for any step on a loaded machine; a passing test never waits this long.
const PATIENCE: Duration = Duration::from_secs(60);
const API_PORT: u16 = 6443;
const VIP: &str = "198.19.0.10";
const PORT: u16 = 9080;
const HOST: &str = "reviews.bookinfo.svc.cluster.local";
const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/waypoint";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/productpage";
/// weftd's token audience (istiod's `istio-ca`), which the agents' tokens are for.
const AUDIENCE: &str = "istio-ca";
const GATEWAY_KIND: &str = "Gateway.gateway.networking.k8s.io";

fn gateway(annotations: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": "waypoint", "namespace": "bookinfo",
                      "labels": { "istio.io/waypoint-for": "service" }, "annotations": annotations },
        "spec": { "gatewayClassName": "weft-waypoint",
                  "listeners": [{ "name": "mesh", "port": 15008, "protocol": "HBONE" }] },
    })
}

/// A fault only the waypoint can apply: requests carrying `x-fault: abort` get 418.
fn fault_rule() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": { "name": "reviews", "namespace": "bookinfo" },
        "spec": { "hosts": ["reviews"], "http": [
            { "match": [{ "headers": { "x-fault": { "exact": "abort" } } }],
              "fault": { "abort": { "httpStatus": 418, "percentage": { "value": 100 } } },
              "route": [{ "destination": { "host": "reviews" } }] },
            { "route": [{ "destination": { "host": "reviews" } }] },
        ] },
    })
}

/// The bed, the API server and weftd on n1, agents on both nodes, the client on n1 and
/// reviews on n2.
struct Cluster {
    /// Declared first: the processes go before the API server they talk to.
    agents: Vec<Agent>,
    _server: weft_tests::Proc,
    weftd: Weftd,
    api: FakeApiServer,
    /// Runs the API server's tasks.
    _runtime: tokio::runtime::Runtime,
    client: Pod,
    nodes: [Node; 2],
    _tokens: tempfile::TempDir,
    bed: TestBed,
}

impl Cluster {
    fn start(test: &str) -> Result<Cluster> {
        let bed = TestBed::new(test)?;
        let nodes = [bed.node("n1")?, bed.node("n2")?];
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-apiserver")
            .enable_all()
            .build()?;
        // Bound in n1's namespace, so that weftd there reaches it on its loopback.
        let listener = nodes[0].run(|| std::net::TcpListener::bind(("127.0.0.1", API_PORT)))?;
        let (api, _) = runtime.block_on(FakeApiServer::start_on(listener))?;
        // The waypoint's Service needs its VIP: the agents resolve the waypoint through it.
        api.set_cluster_ip_allocation(true);

        let client = bed.pod(&nodes[0], "bookinfo", "productpage")?;
        let reviews = bed.pod(&nodes[1], "bookinfo", "reviews-v1")?;
        let mut mesh = MeshConfig::new("unused");
        mesh.namespace("bookinfo", true).pod(&client, "bookinfo", &[("app", "productpage")], &[]).pod(
            &reviews,
            "bookinfo",
            &[("app", "reviews"), ("version", "v1")],
            &[PORT],
        );
        api.apply(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "istio-system" } }));
        for object in meshconfig::kubernetes_objects(&mesh.mesh) {
            api.apply(object);
        }
        // Its port named `http`: the waypoint treats it as HTTP (else plain TCP).
        api.apply(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": { "name": "reviews", "namespace": "bookinfo" },
            "spec": { "clusterIP": VIP, "selector": { "app": "reviews" },
                      "ports": [{ "name": "http", "port": PORT, "targetPort": PORT }] },
        }));

        let weftd = Weftd::start_kubernetes(&nodes[0], &format!("http://127.0.0.1:{API_PORT}"), &[])?;
        let tokens = tempfile::tempdir()?;
        let agents = nodes
            .iter()
            .map(|node| {
                let token = agent_token(&api, node, tokens.path())?;
                let source = ModelSource::Xds(weftd.credentials_with_token(token));
                Agent::start_from(&bed, node, source, AgentOptions::default())
            })
            .collect::<Result<Vec<_>>>()?;
        agents[0].wait_enrolled(&["productpage"], PATIENCE)?;
        agents[1].wait_enrolled(&["reviews-v1"], PATIENCE)?;
        let server = scenario::serve(&reviews, "v1", &[PORT])?;
        Ok(Cluster {
            agents,
            _server: server,
            weftd,
            api,
            _runtime: runtime,
            client,
            nodes,
            _tokens: tokens,
            bed,
        })
    }

    /// The object weftd made, once it exists.
    fn wait_object(&self, kind: &str, name: &str, ready: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(object) = self.api.object(kind, Some("bookinfo"), name).filter(|o| ready(o)) {
                return Ok(object);
            }
            if Instant::now() > deadline {
                bail!("weftd made no {kind} bookinfo/{name} as expected:\n{}", self.weftd.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Deployment weftd made, as the API server holds it, once `ready` holds for it.
    fn deployment(&self, ready: impl Fn(&Value) -> bool) -> Result<Deployment> {
        let object = self.wait_object("Deployment", "waypoint", ready)?;
        serde_json::from_value(object).context("the waypoint Deployment as k8s-openapi reads it")
    }

    /// What the ReplicaSet controller, the scheduler and n2's kubelet do with the
    /// Deployment: one Pod of its current template, run in a bed pod on n2, ready as its
    /// readinessProbe says, reported Running and Ready.
    fn run_replica(&self, deployment: &Deployment) -> Result<Replica> {
        let node = &self.nodes[1];
        let scheduled = kubelet::schedule(&self.api, deployment, node.name())?;
        let sandbox = self.bed.pod_with_uid(node, "bookinfo", scheduled.name(), scheduled.uid())?;
        let kubelet = Kubelet::new(node, &self.api).with_host(IpAddr::V4(self.nodes[0].ip()), SERVER_NAME);
        let mut running = kubelet.start(&sandbox, &scheduled.object)?;
        let (pod_ip, host_ip) = (sandbox.ip().to_string(), node.ip().to_string());
        kubelet::report_status(&self.api, &scheduled.object, &pod_ip, &host_ip, false)?;
        running
            .wait_ready(PATIENCE)
            .with_context(|| format!("the waypoint pod never got ready; weftd:\n{}", self.weftd.stderr()))?;
        kubelet::report_status(&self.api, &scheduled.object, &pod_ip, &host_ip, true)?;
        Ok(Replica { object: scheduled.object, sandbox, running, node: node.clone() })
    }

    /// `count` HTTP requests from productpage to the reviews VIP, with extra headers.
    fn requests(&self, count: u32, headers: &[&str]) -> Result<Value> {
        let to = format!("{VIP}:{PORT}");
        let count = count.to_string();
        let mut args = vec!["http", "--to", &to, "--host", HOST, "--count", &count];
        for h in headers {
            args.extend(["--header", h]);
        }
        let r = scenario::client(&self.client, &args, PATIENCE)?;
        ensure!(r.code == 0, "the http client failed: {r:?}");
        Ok(r.json)
    }

    /// Sends a request with `headers` until it is answered `status` (the mesh has taken a
    /// change); fails with the last answer after [`PATIENCE`].
    fn until_answered(&self, status: u16, headers: &[&str], what: &str) -> Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = self.requests(1, headers)?;
            if r["statuses"][status.to_string()] == 1 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: a request is still answered {}; weftd:\n{}",
                    r["statuses"],
                    self.weftd.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// HBONE connections the reviews agent took from `principal`.
    fn reviews_connections_from(&self, principal: &str) -> Result<u64> {
        self.agents[1].metric(
            "istio_tcp_connections_opened_total",
            &[
                ("reporter", "destination"),
                ("source_principal", principal),
                ("connection_security_policy", "mutual_tls"),
            ],
        )
    }
}

/// A token of the agent DaemonSet's service account bound to the agent's pod on `node`
/// (registered with the API server, as the kubelet's projected token would be), in a file.
fn agent_token(api: &FakeApiServer, node: &Node, dir: &Path) -> Result<std::path::PathBuf> {
    let pod = format!("weft-agent-{}", node.name());
    api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": pod, "namespace": "istio-system", "labels": { "app": "weft-agent" } },
        "spec": { "nodeName": node.name(), "serviceAccountName": "weft-agent", "hostNetwork": true,
                  "containers": [{ "name": "agent", "image": "weft-agent" }] },
        "status": { "phase": "Running", "podIP": node.ip().to_string() },
    }));
    let uid = api.object("Pod", Some("istio-system"), &pod).context("the agent's Pod")?["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let token = format!("agent-{}-{}", node.name(), weft_tests::weftd::random_token());
    api.add_token(
        &token,
        TokenUser::service_account("istio-system", "weft-agent")
            .bound_to_pod(&pod, &uid)
            .for_audiences(&[AUDIENCE]),
    );
    let path = dir.join(&pod);
    std::fs::write(&path, token)?;
    Ok(path)
}

/// A pod of the waypoint's Deployment, running.
struct Replica {
    /// Declared first: the containers stop before the bed pod's handle goes.
    running: RunningPod,
    object: PodObject,
    sandbox: Pod,
    node: Node,
}

impl Replica {
    fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    /// Its metrics, scraped from the node on the pod's address and the port its
    /// `prometheus.io/port` annotation names, as Prometheus finds it.
    fn metrics(&self) -> Result<String> {
        let annotations = self.object.metadata.annotations.clone().unwrap_or_default();
        let port = annotations.get("prometheus.io/port").context("no prometheus.io/port annotation")?;
        let path = annotations.get("prometheus.io/path").cloned().unwrap_or_else(|| "/metrics".into());
        let addr = format!("{}:{port}", self.sandbox.ip());
        let (status, body) = self.node.run(move || agent::http_get(&addr, &path))?;
        ensure!(status == 200, "the waypoint's metrics answered {status}: {body}");
        Ok(body)
    }

    /// Requests from productpage to reviews it answered `code`.
    fn requests_answered(&self, code: &str) -> Result<u64> {
        let wanted = [
            ("reporter", "waypoint"),
            ("source_principal", CLIENT_ID),
            ("destination_service", HOST),
            ("response_code", code),
            ("connection_security_policy", "mutual_tls"),
        ];
        Ok(sum_samples(&self.metrics()?, "istio_requests_total", &wanted))
    }

    /// Waits until the waypoint has counted `expected` answers `code` (a request is
    /// counted when its response ends, which can be just after the client read it).
    fn wait_counted(&self, code: &str, expected: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let counted = self.requests_answered(code)?;
            if counted == expected {
                return Ok(());
            }
            if counted > expected || Instant::now() > deadline {
                bail!("the waypoint counted {counted} answers {code}, not {expected}:\n{}", self.metrics()?);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The container runs as its securityContext's user, in a mount namespace of its own,
/// with its token where its env says; none of it on the host.
fn assert_runs_as_its_template_says(container: &kubelet::RunningContainer) -> Result<()> {
    let pid = container.proc.pid();
    let context = container.spec.security_context.clone().unwrap_or_default();
    let uid = context.run_as_user.context("the template names a user")?.to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uids: Vec<&str> =
        status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or_default().split_whitespace().collect();
    ensure!(uids.iter().all(|u| *u == uid), "the waypoint runs as uids {uids:?}, not {uid}");
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt"));
    ensure!(namespace(&pid.to_string())? != namespace("self")?, "the waypoint shares the host's mounts");
    let env = container.spec.env.clone().unwrap_or_default();
    let token_file = env
        .iter()
        .find(|e| e.name == "WEFT_TOKEN_FILE")
        .and_then(|e| e.value.clone())
        .context("the template's WEFT_TOKEN_FILE")?;
    let token = std::fs::read_to_string(format!("/proc/{pid}/root{token_file}"))?;
    ensure!(!token.is_empty(), "the projected token is empty");
    ensure!(!Path::new(&token_file).exists(), "{token_file} was made on the host");
    Ok(())
}

#[test]
fn weftds_waypoint_deployment_runs_and_carries_the_namespaces_traffic() -> Result<()> {
    let c = Cluster::start("waypoint_deployment")?;
    // Before any waypoint: straight to reviews.
    let r = c.requests(1, &[])?;
    ensure!(r["statuses"]["200"] == 1, "reviews answers: {r}");

    // A waypoint for the namespace, as `weftctl waypoint apply --enroll-namespace` makes it.
    c.api.apply(gateway(json!({})));
    let deployment = c.deployment(|_| true)?;
    let service = c.wait_object("Service", "waypoint", |_| true)?;
    c.wait_object("ServiceAccount", "waypoint", |_| true)?;
    ensure!(
        service["spec"]["clusterIP"].as_str().is_some_and(|ip| ip.parse::<Ipv4Addr>().is_ok()),
        "the API server gave the waypoint's Service a ClusterIP: {service}"
    );
    c.api.apply(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "bookinfo",
        "labels": { "istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint" } } }));

    let first = c.run_replica(&deployment)?;
    let container = &first.running.containers[0];
    ensure!(container.spec.name == "weft-waypoint", "the template's container: {}", container.spec.name);
    assert_runs_as_its_template_says(container)?;
    // Once the agents know the waypoint, every request goes through it, none around it.
    let deadline = Instant::now() + PATIENCE;
    while first.requests_answered("200")? == 0 {
        ensure!(Instant::now() < deadline, "no request went through the waypoint:\n{}", first.metrics()?);
        let r = c.requests(1, &[])?;
        ensure!(r["statuses"]["200"] == 1, "reviews answers: {r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = first.requests_answered("200")?;
    let direct_before = c.reviews_connections_from(CLIENT_ID)?;
    let r = c.requests(20, &[])?;
    ensure!(r["statuses"]["200"] == 20, "20 answers 200: {r}");
    first.wait_counted("200", before + 20)?;
    ensure!(
        c.reviews_connections_from(WAYPOINT_ID)? >= 1,
        "reviews saw no HBONE from the waypoint's identity"
    );
    ensure!(
        c.reviews_connections_from(CLIENT_ID)? == direct_before,
        "the client reached reviews around the waypoint"
    );
    // weftd's L7 translation, applied by the waypoint it deployed.
    c.api.apply(fault_rule());
    c.until_answered(418, &["x-fault: abort"], "the VirtualService's fault")?;
    first.wait_counted("418", 1)?;

    // A changed Gateway: weftd passes its annotation on to the Deployment and its pods; the
    // new template, rolled out, serves in place of the old one.
    let old_hash =
        first.object.metadata.labels.clone().unwrap_or_default()[kubelet::POD_TEMPLATE_HASH].clone();
    c.api.apply(gateway(json!({ "example.com/rollout": "2" })));
    let updated =
        c.deployment(|d| d["spec"]["template"]["metadata"]["annotations"]["example.com/rollout"] == "2")?;
    ensure!(
        updated
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.get("example.com/rollout").is_some_and(|v| v == "2")),
        "the Deployment carries the Gateway's annotation"
    );
    let second = c.run_replica(&updated)?;
    let new_hash =
        second.object.metadata.labels.clone().unwrap_or_default()[kubelet::POD_TEMPLATE_HASH].clone();
    ensure!(old_hash != new_hash, "a new template, a new ReplicaSet");
    // The old pod deleted: out of the endpoints first, then stopped at the end of its grace
    // period, as the kubelet does; requests keep getting the fault throughout.
    ensure!(c.api.delete("Pod", Some("bookinfo"), first.name()), "the old pod was there");
    let faulted = |what: &str| -> Result<()> {
        let r = c.requests(1, &["x-fault: abort"])?;
        ensure!(r["statuses"]["418"] == 1, "the fault holds {what}: {r}");
        Ok(())
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let old = first.requests_answered("418")?;
        for _ in 0..5 {
            faulted("through the rollout")?;
        }
        std::thread::sleep(Duration::from_millis(100));
        if first.requests_answered("418")? == old && second.requests_answered("418")? >= 5 {
            break;
        }
        ensure!(Instant::now() < deadline, "the old waypoint pod still carries requests");
    }
    drop(first);
    let carried = second.requests_answered("418")?;
    for _ in 0..5 {
        faulted("with the old pod gone")?;
    }
    second.wait_counted("418", carried + 5)?;

    // The Gateway deleted: what weftd made for it goes too (its ownerReferences), the
    // kubelet stops the pod, and traffic goes straight to reviews, without the fault.
    ensure!(
        c.api.delete_with_dependents(GATEWAY_KIND, Some("bookinfo"), "waypoint"),
        "the Gateway was there"
    );
    for kind in ["Deployment", "Service", "ServiceAccount"] {
        ensure!(
            c.api.object(kind, Some("bookinfo"), "waypoint").is_none(),
            "the {kind} outlived its Gateway"
        );
    }
    ensure!(
        c.api.object("Pod", Some("bookinfo"), second.name()).is_none(),
        "the pod outlived its Deployment"
    );
    drop(second);
    c.until_answered(200, &["x-fault: abort"], "reviews without the waypoint")?;
    Ok(())
}
