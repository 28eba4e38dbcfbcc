//! `weft-cp-bench`: weftd at the scale of a large mesh (`cargo xtask bench` runs it after the
//! data-path benchmark; no root needed).
//!
//! ```text
//!  driver (this process)                               weftd side (child: `weft-cp-bench serve`)
//!  N × AdsClient (delta, wildcard ADDRESS)  ◀─ gRPC ─  XdsServer ◀─ publish ◀─ translate ◀─ ConfigStore
//!  each handler stamps when it sees the change         ▲ JSON lines on stdin/stdout: stats, change
//! ```
//!
//! The child does what weftd does with a Kubernetes relist and then with one watch event
//! (store → translate → publish), so its peak RSS and CPU time are weftd's alone; the
//! subscribers live in the driver so that their memory and CPU do not count against it. Both
//! processes share the machine's cores. Times across the two processes are wall-clock
//! (`SystemTime`) stamps, which both read from the same kernel clock.
//!
//! Every subscriber holds the whole wildcard ADDRESS state, and both ends keep per-resource
//! bookkeeping per stream, so memory grows with subscribers × addresses. Before a phase the
//! driver extrapolates from the previous one; when the full mesh would not fit in memory (or
//! in the time budget) it measures that phase on a proportionally smaller mesh and says so
//! in the report, rather than taking the machine down.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use weft_controlplane::{
    config::{ConfigStore, SourceId},
    source::{ObjectKey, Origin, RawObject, SourceEvent},
    translate,
};
use weft_xds::server::{ServerConfig, XdsServer};
use weft_xds::type_url;

mod kube;
mod subscriber;

pub use kube::KubeReady;

// ─── The synthetic mesh ──────────────────────────────────────────────────────────────────

/// Shape of the synthetic mesh.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeshSpec {
    /// Services, `svc-N`, spread round-robin over the namespaces.
    pub services: usize,
    /// Pods per service (`svc-N-J`, labels app=svc-N, version v1/v2 alternating).
    pub endpoints: usize,
    /// Nodes the pods are spread over.
    pub nodes: usize,
    /// Namespaces `ns-0`…; the first `ambient_namespaces` are labelled ambient and
    /// use-waypoint=waypoint, and hold a Gateway API waypoint named `waypoint`.
    pub namespaces: usize,
    pub ambient_namespaces: usize,
    /// Services `svc-0`… with a VirtualService (header match, 90/10 split over v1/v2) and a
    /// DestinationRule (subsets v1/v2).
    pub routed: usize,
}

impl MeshSpec {
    fn namespace(&self, service: usize) -> String {
        format!("ns-{}", service % self.namespaces)
    }

    fn pod_ip(&self, service: usize, endpoint: usize) -> Ipv4Addr {
        // 10.0.1.0 onwards: room for 16M pods.
        Ipv4Addr::from(0x0a00_0100 + (service * self.endpoints + endpoint) as u32)
    }

    /// The Address resource name of a pod, as translation names it.
    fn workload_uid(&self, service: usize, endpoint: usize) -> String {
        format!("Kubernetes//Pod/{}/svc-{service}-{endpoint}", self.namespace(service))
    }

    /// Address resources this mesh translates to: one per service and one per pod.
    pub fn addresses(&self) -> usize {
        self.services * (1 + self.endpoints)
    }

    /// The same mesh with about `factor` of its services (and routes), for a phase the full
    /// mesh cannot be measured at.
    fn scaled(&self, factor: f64) -> MeshSpec {
        let services = ((self.services as f64 * factor) as usize / 100 * 100).max(100).min(self.services);
        MeshSpec {
            services,
            routed: (self.routed * services / self.services.max(1)).min(services),
            namespaces: self.namespaces.min(services),
            ambient_namespaces: self.ambient_namespaces.min(self.namespaces.min(services)),
            ..self.clone()
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "{} Services × {} Pods on {} nodes, {} VirtualServices + {} DestinationRules, {} namespaces ({} ambient, each with a waypoint)",
            thousands(self.services),
            self.endpoints,
            self.nodes,
            thousands(self.routed),
            thousands(self.routed),
            self.namespaces,
            self.ambient_namespaces,
        )
    }
}

fn raw(api_version: &str, kind: &str, namespace: Option<&str>, name: &str, mut value: Value) -> RawObject {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    value["apiVersion"] = json!(api_version);
    value["kind"] = json!(kind);
    value["metadata"]["name"] = json!(name);
    if let Some(ns) = namespace {
        value["metadata"]["namespace"] = json!(ns);
    }
    let key = ObjectKey {
        group: group.into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_owned),
        name: name.into(),
    };
    RawObject::from_value(
        key,
        api_version.into(),
        &value,
        Origin::Kubernetes { resource_version: "1".into() },
    )
}

fn pod(spec: &MeshSpec, service: usize, endpoint: usize, ip: Ipv4Addr, resource_version: u64) -> RawObject {
    let ns = spec.namespace(service);
    let app = format!("svc-{service}");
    let mut o = raw(
        "v1",
        "Pod",
        Some(&ns),
        &format!("{app}-{endpoint}"),
        json!({
            "metadata": { "labels": { "app": app, "version": if endpoint.is_multiple_of(2) { "v1" } else { "v2" } } },
            "spec": {
                "nodeName": format!("node-{}", (service * spec.endpoints + endpoint) % spec.nodes),
                "serviceAccountName": app,
                "containers": [{ "name": "app", "ports": [{ "name": "http", "containerPort": 8080 }] }],
            },
            "status": { "phase": "Running", "podIP": ip.to_string(), "podIPs": [{ "ip": ip.to_string() }] },
        }),
    );
    o.origin = Origin::Kubernetes { resource_version: resource_version.to_string() };
    o
}

/// Every object of the mesh, as a Kubernetes source would list them.
pub fn mesh(spec: &MeshSpec) -> Vec<RawObject> {
    let mut out =
        Vec::with_capacity(spec.services * (spec.endpoints + 1) + 2 * spec.routed + 2 * spec.namespaces);
    for n in 0..spec.namespaces {
        let ns = format!("ns-{n}");
        let labels = if n < spec.ambient_namespaces {
            json!({ "istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint" })
        } else {
            json!({})
        };
        out.push(raw("v1", "Namespace", None, &ns, json!({ "metadata": { "labels": labels } })));
        if n < spec.ambient_namespaces {
            out.push(raw(
                "gateway.networking.k8s.io/v1",
                "Gateway",
                Some(&ns),
                "waypoint",
                json!({ "spec": {
                    "gatewayClassName": "istio-waypoint",
                    "listeners": [{ "name": "mesh", "port": 15008, "protocol": "HBONE" }],
                } }),
            ));
        }
    }
    for s in 0..spec.services {
        let ns = spec.namespace(s);
        let name = format!("svc-{s}");
        let vip = Ipv4Addr::from(0xac10_0001 + s as u32); // 172.16.0.1 onwards
        out.push(raw(
            "v1",
            "Service",
            Some(&ns),
            &name,
            json!({ "spec": {
                "clusterIP": vip.to_string(),
                "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }],
                "selector": { "app": name },
            } }),
        ));
        for e in 0..spec.endpoints {
            out.push(pod(spec, s, e, spec.pod_ip(s, e), 1));
        }
        if s < spec.routed {
            let to = |subset: &str, weight: u32| json!({ "destination": { "host": name, "subset": subset }, "weight": weight });
            out.push(raw(
                "networking.istio.io/v1",
                "VirtualService",
                Some(&ns),
                &name,
                json!({ "spec": {
                    "hosts": [name],
                    "http": [
                        { "match": [{ "headers": { "x-canary": { "exact": "true" } } }], "route": [to("v1", 90), to("v2", 10)] },
                        { "route": [to("v1", 100)] },
                    ],
                } }),
            ));
            out.push(raw(
                "networking.istio.io/v1",
                "DestinationRule",
                Some(&ns),
                &name,
                json!({ "spec": {
                    "host": name,
                    "subsets": [
                        { "name": "v1", "labels": { "version": "v1" } },
                        { "name": "v2", "labels": { "version": "v2" } },
                    ],
                } }),
            ));
        }
    }
    out
}

// ─── The weftd side (child process) ──────────────────────────────────────────────────────

/// What the driver asks the weftd side, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Request {
    Stats,
    /// Give one pod a new IP: store upsert, translate, publish; answer once it is live.
    Change {
        service: usize,
        endpoint: usize,
        ip: Ipv4Addr,
        resource_version: u64,
    },
}

/// The weftd side's resource usage.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    /// VmHWM: peak resident set size since start.
    pub peak_rss_mib: f64,
    pub rss_mib: f64,
    /// User + system CPU time since start.
    pub cpu_s: f64,
    /// Open ADS streams.
    pub streams: usize,
}

/// The weftd side's answer once the first snapshot is live.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ready {
    pub addr: SocketAddr,
    pub objects: usize,
    /// Resources per type URL.
    pub resources: BTreeMap<String, usize>,
    /// `ConfigStore::apply` of the relist (parse, validate, cross-check, config snapshot).
    pub apply_s: f64,
    /// `translate::snapshot`.
    pub translate_s: f64,
    /// From `XdsServer::publish` to the snapshot being live (debounce + index + diff).
    pub live_s: f64,
    pub usage: Usage,
}

impl Ready {
    pub fn addresses(&self) -> usize {
        self.resources.get(type_url::ADDRESS).copied().unwrap_or(0)
    }
}

/// The weftd side's answer to a change.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Changed {
    apply_s: f64,
    translate_s: f64,
    /// CPU time of the store update and translation.
    translate_cpu_s: f64,
    /// Wall clock when the store got the change, and at `publish`; ns since the epoch.
    changed_ns: u64,
    published_ns: u64,
    live_s: f64,
}

/// Runs the weftd side: builds the mesh, serves it on 127.0.0.1, prints [`Ready`] as one
/// JSON line, then answers requests on stdin until it closes.
pub fn serve(spec: &MeshSpec, debounce: Duration) -> Result<()> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _entered = runtime.enter();
    let xds = XdsServer::new(ServerConfig { debounce, ..Default::default() });
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    // As weftd mounts it: tonic's defaults.
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(xds.service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let objects = mesh(spec);
    let count = objects.len();
    let mut translator = translate::Translator::new(translate::Options::default());
    let mut store = ConfigStore::new();
    // As weftd's main loop does it (on a runtime thread there, on this one here): one
    // relist is one store batch, then one translation.
    let started = Instant::now();
    store.apply(SourceId::Kubernetes, SourceEvent::Reset(objects));
    let apply_s = started.elapsed().as_secs_f64();
    let errors: Vec<String> =
        store.diagnostics().iter().filter(|d| d.is_error()).map(ToString::to_string).take(5).collect();
    ensure!(errors.is_empty(), "the synthetic mesh has invalid objects (the bench is wrong): {errors:#?}");
    let started = Instant::now();
    let output = translator.translate(store.snapshot());
    let translate_s = started.elapsed().as_secs_f64();
    let translate::Output::Full(snapshot) = &output else {
        bail!("the first translation must be a full one")
    };
    let resources = snapshot.resources.iter().map(|(t, r)| (t.clone(), r.len())).collect();
    let (_, live_s) = publish_live(&xds, output)?;
    let ready = Ready { addr, objects: count, resources, apply_s, translate_s, live_s, usage: usage(&xds) };

    let mut out = std::io::stdout().lock();
    reply(&mut out, &ready)?;
    for line in std::io::stdin().lock().lines() {
        match serde_json::from_str::<Request>(&line?)? {
            Request::Stats => reply(&mut out, &usage(&xds))?,
            Request::Change { service, endpoint, ip, resource_version } => {
                let cpu = cpu_seconds();
                let changed_ns = unix_ns();
                let started = Instant::now();
                store.apply(
                    SourceId::Kubernetes,
                    SourceEvent::Upsert(pod(spec, service, endpoint, ip, resource_version)),
                );
                let apply_s = started.elapsed().as_secs_f64();
                let output = translator.translate(store.snapshot());
                let translate_s = started.elapsed().as_secs_f64() - apply_s;
                let translate_cpu_s = cpu_seconds() - cpu;
                let (published_ns, live_s) = publish_live(&xds, output)?;
                reply(
                    &mut out,
                    &Changed { apply_s, translate_s, translate_cpu_s, changed_ns, published_ns, live_s },
                )?;
            }
        }
    }
    Ok(())
}

fn reply(out: &mut impl Write, message: &impl Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, message)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Publishes (as weftd does: a full snapshot or an update) and waits until the server serves
/// it; returns the publish instant (wall clock, ns) and the seconds until live.
fn publish_live(xds: &XdsServer, output: translate::Output) -> Result<(u64, f64)> {
    let published_ns = unix_ns();
    let started = Instant::now();
    let version = match output {
        translate::Output::Full(snapshot) => {
            let version = snapshot.version.clone();
            xds.publish(snapshot)?;
            version
        }
        translate::Output::Update(update) => {
            let version = update.version.clone();
            xds.update(update)?;
            version
        }
    };
    while xds.live_version().as_deref() != Some(version.as_str()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((published_ns, started.elapsed().as_secs_f64()))
}

fn usage(xds: &XdsServer) -> Usage {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    Usage {
        peak_rss_mib: status_kib(&status, "VmHWM:") / 1024.0,
        rss_mib: status_kib(&status, "VmRSS:") / 1024.0,
        cpu_s: cpu_seconds(),
        streams: xds.status().len(),
    }
}

// ─── The driver ──────────────────────────────────────────────────────────────────────────

/// What `weft-cp-bench` is asked to measure.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mesh: MeshSpec,
    /// Subscriber counts, one phase each, in order.
    pub subscribers: Vec<usize>,
    /// One-endpoint changes per phase, at most.
    pub changes: usize,
    pub debounce: Duration,
    /// Subscribers started together; the next wave starts once these hold the initial state.
    pub connect_batch: usize,
    /// Stop connecting when the machine's MemAvailable falls below this.
    pub mem_reserve_mib: u64,
    /// Longest a phase may spend connecting subscribers (extrapolated from the previous
    /// phase); beyond it the phase runs on a smaller mesh.
    pub connect_budget: Duration,
    /// Run every phase on the full mesh, however large (still stops at `mem_reserve_mib`).
    pub no_shrink: bool,
    /// This binary, to start the weftd side with `serve`.
    pub exe: PathBuf,
    /// The weftd binary for the Kubernetes mode rows; `None` leaves them out.
    pub weftd: Option<PathBuf>,
}

/// What one subscriber phase measured.
#[derive(Clone, Debug)]
pub struct Phase {
    pub wanted: usize,
    pub connected: usize,
    pub mesh: MeshSpec,
    pub addresses: usize,
    /// Why this phase ran on a smaller mesh or with fewer subscribers, if it did.
    pub note: Option<String>,
    pub connect_s: f64,
    /// The weftd side before connecting and with every subscriber connected.
    pub before: Usage,
    pub connected_usage: Usage,
    /// The driver's RSS growth with these subscribers (their client-side state).
    pub driver_rss_growth_mib: f64,
    /// Publish → subscriber saw the new IP, ms, all changes together, sorted.
    pub latencies_ms: Vec<f64>,
    /// Store update → subscriber saw the new IP (translation included), ms, sorted.
    pub end_to_end_ms: Vec<f64>,
    /// Subscriber × change pairs that never saw the change.
    pub missed: usize,
    pub cpu_per_push_s: Vec<f64>,
    pub translate_cpu_s: Vec<f64>,
    pub translate_s: Vec<f64>,
    pub live_s: Vec<f64>,
}

/// The whole run.
#[derive(Clone, Debug)]
pub struct Report {
    pub mesh: MeshSpec,
    pub debounce: Duration,
    pub ready: Ready,
    pub phases: Vec<Phase>,
    /// The same measurements of weftd in Kubernetes mode, when asked for.
    pub kubernetes: Option<KubeReport>,
}

/// weftd in Kubernetes mode, on the fake API server holding the same mesh.
#[derive(Clone, Debug)]
pub struct KubeReport {
    pub ready: KubeReady,
    /// One per subscriber count, always on the full mesh.
    pub phases: Vec<Phase>,
}

/// The weftd under test, as a phase drives it: the in-process side or weftd in Kubernetes
/// mode.
trait Side {
    /// Where subscribers connect.
    fn addr(&self) -> SocketAddr;
    /// Address resources a subscriber holds once synced.
    fn addresses(&self) -> usize;
    fn usage(&mut self) -> Result<Usage>;
    /// Gives one pod a new IP where this side's weftd reads it.
    fn change(
        &mut self,
        mesh: &MeshSpec,
        service: usize,
        endpoint: usize,
        ip: Ipv4Addr,
        resource_version: u64,
    ) -> Result<Changed>;
}

impl Side for WeftdSide {
    fn addr(&self) -> SocketAddr {
        self.ready().addr
    }

    fn addresses(&self) -> usize {
        self.ready().addresses()
    }

    fn usage(&mut self) -> Result<Usage> {
        WeftdSide::usage(self)
    }

    fn change(
        &mut self,
        _: &MeshSpec,
        service: usize,
        endpoint: usize,
        ip: Ipv4Addr,
        resource_version: u64,
    ) -> Result<Changed> {
        self.ask(&Request::Change { service, endpoint, ip, resource_version })
    }
}

impl Side for kube::KubeSide {
    fn addr(&self) -> SocketAddr {
        kube::KubeSide::addr(self)
    }

    fn addresses(&self) -> usize {
        self.ready.addresses
    }

    fn usage(&mut self) -> Result<Usage> {
        kube::KubeSide::usage(self)
    }

    fn change(
        &mut self,
        mesh: &MeshSpec,
        service: usize,
        endpoint: usize,
        ip: Ipv4Addr,
        _: u64,
    ) -> Result<Changed> {
        kube::KubeSide::change(self, mesh, service, endpoint, ip)
    }
}

/// The weftd side as a child process.
struct WeftdSide {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    ready: Option<Ready>,
}

impl WeftdSide {
    fn start(exe: &std::path::Path, spec: &MeshSpec, debounce: Duration) -> Result<Self> {
        eprintln!("cp-bench: starting the weftd side: {}", spec.describe());
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--mesh")
            .arg(serde_json::to_string(spec)?)
            .arg("--debounce-ms")
            .arg(debounce.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let ready = read_reply(&mut stdout).context("waiting for the weftd side's first snapshot");
        // Dropping the side (on error too) ends the child.
        let side = WeftdSide { child, stdin, stdout, ready: ready.as_ref().ok().cloned() };
        ready?;
        Ok(side)
    }

    fn ready(&self) -> &Ready {
        self.ready.as_ref().expect("set in start")
    }

    fn ask<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T> {
        reply(&mut self.stdin, request)?;
        read_reply(&mut self.stdout)
    }

    fn usage(&mut self) -> Result<Usage> {
        self.ask(&Request::Stats)
    }
}

fn read_reply<T: DeserializeOwned>(from: &mut impl BufRead) -> Result<T> {
    let mut line = String::new();
    if from.read_line(&mut line)? == 0 {
        bail!("the weftd side exited (its error is above)");
    }
    Ok(serde_json::from_str(&line)?)
}

impl Drop for WeftdSide {
    fn drop(&mut self) {
        // Closing stdin ends its request loop; kill it if it does not go.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the subscribers record, one slot each.
struct Probe {
    /// The change being measured: the workload's resource name, its new IP, and a sequence
    /// number.
    target: RwLock<Option<(String, [u8; 4], u64)>>,
    /// Per subscriber: resources in its first response (0 = none yet).
    initial: Vec<AtomicUsize>,
    /// Subscribers whose first response arrived.
    initialized: AtomicUsize,
    /// Per subscriber: the last change seen, and when (wall clock, ns).
    seen: Vec<AtomicU64>,
    seen_ns: Vec<AtomicU64>,
    /// The first subscriber failure, if any.
    failure: std::sync::Mutex<Option<String>>,
}

impl Probe {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Probe {
            target: RwLock::new(None),
            initial: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            initialized: AtomicUsize::new(0),
            seen: (0..n).map(|_| AtomicU64::new(0)).collect(),
            seen_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            failure: std::sync::Mutex::default(),
        })
    }

    /// Counts subscriber `k`'s first non-empty response.
    fn initial_state(&self, k: usize, resources: usize) {
        if resources > 0
            && self.initial[k].compare_exchange(0, resources, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.initialized.fetch_add(1, Ordering::Release);
        }
    }

    fn target(&self) -> Option<(String, [u8; 4], u64)> {
        self.target.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn saw(&self, k: usize, seq: u64, at_ns: u64) {
        self.seen_ns[k].store(at_ns, Ordering::Relaxed);
        self.seen[k].store(seq, Ordering::Release);
    }

    fn failed(&self, k: usize, error: String) {
        let mut failure = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failure.get_or_insert_with(|| format!("subscriber {k}: {error}"));
    }

    fn check(&self) -> Result<()> {
        match self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            Some(failure) => bail!("{failure}"),
            None => Ok(()),
        }
    }
}

/// Runs every phase and returns what they measured.
pub fn run(settings: &Settings) -> Result<Report> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut weftd = WeftdSide::start(&settings.exe, &settings.mesh, settings.debounce)?;
    let ready = weftd.ready().clone();
    eprintln!(
        "cp-bench: first snapshot: apply {:.2} s + translate {:.2} s, live after {:.2} s; {} addresses; peak RSS {:.0} MiB",
        ready.apply_s,
        ready.translate_s,
        ready.live_s,
        ready.addresses(),
        ready.usage.peak_rss_mib
    );
    let mut phases: Vec<Phase> = Vec::new();
    let mut changes_made = 0u64;
    for &wanted in &settings.subscribers {
        let mut note = None;
        let mut mesh = settings.mesh.clone();
        // Extrapolate from the previous phase: per subscriber and per address held, the
        // memory of both ends and the time to connect.
        if let Some(prev) = phases.last().filter(|p| p.connected > 0 && !settings.no_shrink) {
            let per = (prev.connected * prev.addresses) as f64;
            let mib_per = ((prev.connected_usage.rss_mib - prev.before.rss_mib).max(0.0)
                + prev.driver_rss_growth_mib.max(0.0))
                / per;
            let secs_per = prev.connect_s / per;
            let full = (wanted * settings.mesh.addresses()) as f64;
            let need_mib = mib_per * full;
            let need_s = secs_per * full;
            // Memory the previous phase's streams freed stays in the weftd side for reuse.
            let retained = (weftd.usage()?.rss_mib - ready.usage.rss_mib).max(0.0);
            let have_mib = mem_available_mib().saturating_sub(settings.mem_reserve_mib) as f64 + retained;
            let budget_s = settings.connect_budget.as_secs_f64();
            let factor = (have_mib / need_mib).min(budget_s / need_s);
            if factor < 1.0 {
                mesh = settings.mesh.scaled(factor * 0.8);
                note = Some(format!(
                    "measured on {} Services ({} addresses): holding the full mesh's {} addresses in {} subscribers would take about {:.1} GiB (weftd side + subscribers; {:.1} GiB available) and {:.0} s to connect (budget {:.0} s), extrapolated from {} subscribers",
                    thousands(mesh.services),
                    thousands(mesh.addresses()),
                    thousands(settings.mesh.addresses()),
                    thousands(wanted),
                    need_mib / 1024.0,
                    have_mib / 1024.0,
                    need_s,
                    budget_s,
                    prev.connected,
                ));
                eprintln!("cp-bench: {}", note.as_deref().unwrap_or_default());
                drop(weftd);
                weftd = WeftdSide::start(&settings.exe, &mesh, settings.debounce)?;
            }
        }
        let phase = run_phase(&runtime, &mut weftd, settings, wanted, mesh, note, &mut changes_made)?;
        phases.push(phase);
    }
    // One weftd at a time on the machine.
    drop(weftd);
    let kubernetes = match &settings.weftd {
        Some(binary) => Some(run_kubernetes(&runtime, settings, binary, &mut changes_made)?),
        None => None,
    };
    Ok(Report { mesh: settings.mesh.clone(), debounce: settings.debounce, ready, phases, kubernetes })
}

/// The Kubernetes mode rows: weftd's start on the fake API server, then the same phases,
/// on the full mesh.
fn run_kubernetes(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    binary: &std::path::Path,
    changes_made: &mut u64,
) -> Result<KubeReport> {
    let mut side = kube::KubeSide::start(binary, &settings.mesh, settings.debounce, |addr| {
        first_subscriber(runtime, addr)
    })?;
    let mut phases = Vec::new();
    for &wanted in &settings.subscribers {
        let mesh = settings.mesh.clone();
        phases.push(run_phase(runtime, &mut side, settings, wanted, mesh, None, changes_made)?);
    }
    Ok(KubeReport { ready: side.ready.clone(), phases })
}

/// Connects one subscriber and waits for its initial state; returns how many addresses it
/// holds.
fn first_subscriber(runtime: &tokio::runtime::Runtime, addr: SocketAddr) -> Result<usize> {
    let probe = Probe::new(1);
    let _entered = runtime.enter();
    let client = subscriber::start(addr, 0, Arc::clone(&probe));
    let deadline = Instant::now() + Duration::from_secs(300);
    while probe.initialized.load(Ordering::Acquire) == 0 {
        if let Err(e) = probe.check() {
            client.abort();
            return Err(e);
        }
        ensure!(Instant::now() < deadline, "the first subscriber got no state within 300 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    client.abort();
    Ok(probe.initial[0].load(Ordering::Relaxed))
}

fn run_phase(
    runtime: &tokio::runtime::Runtime,
    weftd: &mut dyn Side,
    settings: &Settings,
    wanted: usize,
    mesh: MeshSpec,
    mut note: Option<String>,
    changes_made: &mut u64,
) -> Result<Phase> {
    let addresses = weftd.addresses();
    let addr = weftd.addr();
    let before = weftd.usage()?;
    let driver_before = status_kib(&std::fs::read_to_string("/proc/self/status")?, "VmRSS:") / 1024.0;
    let probe = Probe::new(wanted);
    let mut clients = Vec::with_capacity(wanted);
    let started = Instant::now();
    let _entered = runtime.enter();
    while clients.len() < wanted {
        let available = mem_available_mib();
        if available < settings.mem_reserve_mib {
            let why = format!(
                "stopped at {} of {} subscribers: MemAvailable fell to {available} MiB (reserve {} MiB)",
                thousands(clients.len()),
                thousands(wanted),
                settings.mem_reserve_mib
            );
            eprintln!("cp-bench: {why}");
            note = Some(note.map_or(why.clone(), |n| format!("{n}; {why}")));
            break;
        }
        let wave = settings.connect_batch.min(wanted - clients.len());
        for _ in 0..wave {
            let k = clients.len();
            clients.push(subscriber::start(addr, k, Arc::clone(&probe)));
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while probe.initialized.load(Ordering::Acquire) < clients.len() {
            probe.check()?;
            ensure!(
                Instant::now() < deadline,
                "only {} of {} subscribers received their initial state within 300 s",
                probe.initialized.load(Ordering::Acquire),
                clients.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if clients.len() % (settings.connect_batch * 4).max(100) == 0 || clients.len() == wanted {
            eprintln!(
                "cp-bench: {} subscribers hold the initial state ({:.1} s)",
                clients.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    let connected = clients.len();
    let short: Vec<usize> = (0..connected)
        .map(|k| probe.initial[k].load(Ordering::Relaxed))
        .filter(|&n| n != addresses)
        .collect();
    ensure!(short.is_empty(), "subscribers got {short:?} resources initially, expected {addresses}");
    // Let the ACKs land before reading the weftd side's memory.
    std::thread::sleep(Duration::from_millis(200));
    let connected_usage = weftd.usage()?;
    let driver_rss_growth_mib =
        status_kib(&std::fs::read_to_string("/proc/self/status")?, "VmRSS:") / 1024.0 - driver_before;

    let mut phase = Phase {
        wanted,
        connected,
        mesh,
        addresses,
        note,
        connect_s,
        before,
        connected_usage,
        driver_rss_growth_mib,
        latencies_ms: Vec::new(),
        end_to_end_ms: Vec::new(),
        missed: 0,
        cpu_per_push_s: Vec::new(),
        translate_cpu_s: Vec::new(),
        translate_s: Vec::new(),
        live_s: Vec::new(),
    };
    let changes = settings.changes;
    for r in 0..changes {
        *changes_made += 1;
        let seq = *changes_made;
        // Spread the changes over services and namespaces; each gets an IP no pod has.
        let service = (r * 7919 + 13 * wanted) % phase.mesh.services;
        let endpoint = r % phase.mesh.endpoints;
        let ip = Ipv4Addr::from(0x0ac8_0000 + seq as u32); // 10.200.0.0 onwards
        *probe.target.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((phase.mesh.workload_uid(service, endpoint), ip.octets(), seq));
        let cpu_before = weftd.usage()?.cpu_s;
        let changed = weftd.change(&phase.mesh, service, endpoint, ip, 1 + seq)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let done = || (0..connected).all(|k| probe.seen[k].load(Ordering::Acquire) == seq);
        while !done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let the ACKs land, so their handling is counted in this push's CPU time.
        std::thread::sleep(Duration::from_millis(100));
        let cpu_after = weftd.usage()?.cpu_s;
        let mut these = Vec::with_capacity(connected);
        for k in 0..connected {
            if probe.seen[k].load(Ordering::Acquire) == seq {
                let at = probe.seen_ns[k].load(Ordering::Relaxed);
                these.push(at.saturating_sub(changed.published_ns) as f64 / 1e6);
                phase.end_to_end_ms.push(at.saturating_sub(changed.changed_ns) as f64 / 1e6);
            } else {
                phase.missed += 1;
            }
        }
        let mut sorted = these.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!(
            "cp-bench: {connected} subscribers, change {}: store+translate {:.2} s, live after {:.3} s, p50 {:.1} ms, p99 {:.1} ms, missed {}, weftd CPU {:.2} s",
            r + 1,
            changed.apply_s + changed.translate_s,
            changed.live_s,
            percentile(&sorted, 50.0),
            percentile(&sorted, 99.0),
            connected - these.len(),
            cpu_after - cpu_before,
        );
        phase.latencies_ms.extend(these);
        phase.cpu_per_push_s.push(cpu_after - cpu_before);
        phase.translate_cpu_s.push(changed.translate_cpu_s);
        phase.translate_s.push(changed.apply_s + changed.translate_s);
        phase.live_s.push(changed.live_s);
    }
    *probe.target.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    phase.latencies_ms.sort_by(f64::total_cmp);
    phase.end_to_end_ms.sort_by(f64::total_cmp);

    probe.check()?;
    for client in &clients {
        client.abort();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while weftd.usage()?.streams > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(phase)
}

// ─── The report ──────────────────────────────────────────────────────────────────────────

impl Report {
    /// The markdown table and the notes under it: each figure of the in-process side (the
    /// baseline) beside weftd's in Kubernetes mode, when measured, and their ratio.
    pub fn table(&self) -> String {
        let mut rows: Vec<Row> = Vec::new();
        let k8s = self.kubernetes.as_ref();
        let r = &self.ready;
        // Until proxies can be served: the relist into the store, translation, and the
        // server's indexing (its debounce included).
        let first = r.apply_s + r.translate_s + r.live_s;
        let kr = k8s.map(|k| &k.ready);
        rows.push(Row {
            metric: format!(
                "first snapshot (s): in process, store apply + translate + index until live; Kubernetes, weftd started → a subscriber holds all {} resources",
                thousands(r.addresses())
            ),
            file: format!("{first:.2} ({:.2} + {:.2} + {:.2})", r.apply_s, r.translate_s, r.live_s),
            kube: kr.map(|k| format!("{:.2} (/ready after {:.2})", k.served_s, k.ready_s)),
            ratio: kr.map(|k| ratio(k.served_s, first)),
            target: "< 2 s".into(),
            met: both(first < 2.0, kr.map(|k| k.served_s < 2.0)),
        });
        if let Some(k) = kr {
            rows.push(Row {
                metric: format!(
                    "the fake API server alone: every watched kind listed in pages of 500, {} objects (s)",
                    thousands(k.objects)
                ),
                file: "—".into(),
                kube: Some(format!("{:.2}", k.list_s)),
                ratio: None,
                target: "≪ first snapshot".into(),
                met: yes_no(k.list_s < k.served_s / 2.0),
            });
        }
        rows.push(Row {
            metric: "weftd peak RSS after the first snapshot, VmHWM (MiB)".into(),
            file: format!("{:.0}", r.usage.peak_rss_mib),
            kube: kr.map(|k| format!("{:.0}", k.usage.peak_rss_mib)),
            ratio: kr.map(|k| ratio(k.usage.peak_rss_mib, r.usage.peak_rss_mib)),
            target: "< 400 MiB".into(),
            met: both(r.usage.peak_rss_mib < 400.0, kr.map(|k| k.usage.peak_rss_mib < 400.0)),
        });
        if let Some(k) = kr {
            rows.push(Row {
                metric: "weftd RSS after the first snapshot, steady, VmRSS (MiB)".into(),
                file: format!("{:.0}", r.usage.rss_mib),
                kube: Some(format!("{:.0}", k.steady_rss_mib)),
                ratio: Some(ratio(k.steady_rss_mib, r.usage.rss_mib)),
                target: "—".into(),
                met: "—".into(),
            });
        }
        let mut notes = Vec::new();
        for (i, p) in self.phases.iter().enumerate() {
            let kp = k8s.and_then(|k| k.phases.get(i));
            let who = if p.connected == p.wanted {
                format!("{} subscribers", thousands(p.wanted))
            } else {
                format!("{} of {} subscribers†", thousands(p.connected), thousands(p.wanted))
            };
            let on = if p.mesh == self.mesh {
                String::new()
            } else {
                format!(
                    ", on {} Services ({} addresses) in process†",
                    thousands(p.mesh.services),
                    thousands(p.addresses)
                )
            };
            if let Some(n) = &p.note {
                notes.push(format!("† {} subscribers: {n}.", thousands(p.wanted)));
            }
            if let Some(n) = kp.and_then(|k| k.note.as_ref()) {
                notes.push(format!("‡ {} subscribers, Kubernetes mode: {n}.", thousands(p.wanted)));
            }
            let full = p.connected == p.wanted && p.mesh == self.mesh;
            let k_full = |k: &Phase| k.connected == k.wanted;
            let rss_target = p.wanted >= 1000;
            rows.push(Row {
                metric: format!("weftd peak RSS with {who} connected{on} (MiB)"),
                file: format!("{:.0}", p.connected_usage.peak_rss_mib),
                kube: kp.map(|k| format!("{:.0}", k.connected_usage.peak_rss_mib)),
                ratio: kp.map(|k| ratio(k.connected_usage.peak_rss_mib, p.connected_usage.peak_rss_mib)),
                target: if rss_target { "< 400 MiB".into() } else { "—".into() },
                met: if rss_target {
                    both_met(
                        (p.connected_usage.peak_rss_mib < 400.0, full),
                        kp.map(|k| (k.connected_usage.peak_rss_mib < 400.0, k_full(k))),
                    )
                } else {
                    "—".into()
                },
            });
            // The issue's measure: from the change reaching weftd (in process: its store; in
            // Kubernetes mode: the API server) to each subscriber holding it.
            let p50 = percentile(&p.end_to_end_ms, 50.0);
            let p99 = percentile(&p.end_to_end_ms, 99.0);
            let target = p.wanted >= 1000;
            let missed =
                |p: &Phase| if p.missed > 0 { format!(" ({} missed)", p.missed) } else { String::new() };
            let changes = p.cpu_per_push_s.len();
            let k_p = |k: &Phase, q: f64| percentile(&k.end_to_end_ms, q);
            rows.push(Row {
                metric: format!(
                    "one endpoint change → every subscriber holds it, p50 / p99, {who}{on}, {changes} change{} (ms)",
                    if changes == 1 { "" } else { "s" }
                ),
                file: format!("{p50:.1} / {p99:.1}{}", missed(p)),
                kube: kp.map(|k| format!("{:.1} / {:.1}{}", k_p(k, 50.0), k_p(k, 99.0), missed(k))),
                ratio: kp.map(|k| format!("{} / {}", ratio(k_p(k, 50.0), p50), ratio(k_p(k, 99.0), p99))),
                target: if target { "p99 < 200 ms".into() } else { "—".into() },
                met: if target {
                    both_met(
                        (p99 < 200.0 && p.missed == 0, full),
                        kp.map(|k| (k_p(k, 99.0) < 200.0 && k.missed == 0, k_full(k))),
                    )
                } else {
                    "—".into()
                },
            });
            rows.push(Row {
                metric: format!("of which publish → subscriber, p50 / p99, {who}{on} (ms)"),
                file: format!(
                    "{:.1} / {:.1}",
                    percentile(&p.latencies_ms, 50.0),
                    percentile(&p.latencies_ms, 99.0)
                ),
                kube: kp.map(|_| "—".into()),
                ratio: None,
                target: "—".into(),
                met: "—".into(),
            });
            rows.push(Row {
                metric: format!("weftd CPU seconds per push, {who}{on}"),
                file: format!(
                    "{:.3} (store + translate {:.3})",
                    mean(&p.cpu_per_push_s),
                    mean(&p.translate_cpu_s)
                ),
                kube: kp.map(|k| format!("{:.3}", mean(&k.cpu_per_push_s))),
                ratio: kp.map(|k| ratio(mean(&k.cpu_per_push_s), mean(&p.cpu_per_push_s))),
                target: "printed".into(),
                met: "—".into(),
            });
            let sync = |p: &Phase| {
                let per = |mib: f64| mib / p.connected.max(1) as f64;
                format!(
                    "{:.1}; {:.1} / {:.1}",
                    p.connect_s,
                    per(p.connected_usage.rss_mib - p.before.rss_mib),
                    per(p.driver_rss_growth_mib),
                )
            };
            rows.push(Row {
                metric: format!(
                    "initial sync of {who}{on} (s); RSS growth per subscriber, weftd side / subscriber side (MiB)"
                ),
                file: sync(p),
                kube: kp.map(sync),
                ratio: kp.map(|k| ratio(k.connect_s, p.connect_s)),
                target: "—".into(),
                met: "—".into(),
            });
        }
        let mut out = format!(
            "Mesh: {}. Agents subscribe (delta, wildcard) to ADDRESS, each on its own node; debounce {} ms. In process: the weftd side in a child process, subscribers in the driver process, same cores.",
            self.mesh.describe(),
            self.debounce.as_millis(),
        );
        if k8s.is_some() {
            out.push_str(" Kubernetes: the weftd binary (`--kubernetes-url`, plaintext xDS) on the fake API server in the driver process, which holds the same mesh; ratio = Kubernetes ÷ in process; where two verdicts are given, the first is in process.");
            out.push_str("\n\n| metric | in process | Kubernetes mode | ratio | target | met |\n|---|---:|---:|---:|---|---|\n");
        } else {
            out.push_str("\n\n| metric | value | target | met |\n|---|---:|---|---|\n");
        }
        for row in rows {
            match (k8s.is_some(), row.kube) {
                (true, kube) => out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    row.metric,
                    row.file,
                    kube.unwrap_or_else(|| "—".into()),
                    row.ratio.unwrap_or_else(|| "—".into()),
                    row.target,
                    row.met
                )),
                (false, _) => out
                    .push_str(&format!("| {} | {} | {} | {} |\n", row.metric, row.file, row.target, row.met)),
            }
        }
        out.push_str("\nReference: Istio's sizing guide (1.21) puts istiod at 1 vCPU and 1.5 GB of memory per 1,000 services and 2,000 sidecars.\n");
        for n in notes {
            out.push_str(&format!("\n{n}\n"));
        }
        out
    }
}

/// One row of the table: the in-process figure and, when measured, Kubernetes mode's.
struct Row {
    metric: String,
    file: String,
    kube: Option<String>,
    ratio: Option<String>,
    target: String,
    met: String,
}

fn ratio(kube: f64, file: f64) -> String {
    if file > 0.0 && kube.is_finite() { format!("{:.2}×", kube / file) } else { "—".into() }
}

fn yes_no(ok: bool) -> String {
    if ok { "yes".to_owned() } else { "**no**".to_owned() }
}

/// The in-process verdict, and Kubernetes mode's after it when measured.
fn both(file: bool, kube: Option<bool>) -> String {
    both_met((file, true), kube.map(|k| (k, true)))
}

fn both_met(file: (bool, bool), kube: Option<(bool, bool)>) -> String {
    match kube {
        None => met(file.0, file.1),
        Some(k) => format!("{} / {}", met(file.0, file.1), met(k.0, k.1)),
    }
}

fn met(ok: bool, full: bool) -> String {
    match (ok, full) {
        (true, true) => "yes".into(),
        (true, false) => "yes, on the smaller run only".into(),
        (false, _) => "**no**".into(),
    }
}

// ─── Small measurements ──────────────────────────────────────────────────────────────────

/// Nearest-rank percentile of sorted values; 0 when empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 }
}

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A `kB` field of /proc/self/status.
fn status_kib(status: &str, field: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

fn mem_available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib / 1024)
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        s(u.user_time()) + s(u.system_time())
    })
}

/// Each subscriber is one TCP connection at both ends: more than the usual soft limit.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> MeshSpec {
        MeshSpec { services: 40, endpoints: 3, nodes: 5, namespaces: 4, ambient_namespaces: 2, routed: 8 }
    }

    #[test]
    fn the_synthetic_mesh_is_valid_and_translates_to_every_address() {
        let spec = small();
        let mut store = ConfigStore::new();
        store.apply(SourceId::Kubernetes, SourceEvent::Reset(mesh(&spec)));
        let errors: Vec<String> =
            store.diagnostics().iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let snap = translate::snapshot(&store.snapshot(), &translate::Options::default());
        let addresses = &snap.resources[type_url::ADDRESS];
        assert_eq!(addresses.len(), spec.addresses());
        assert!(addresses.iter().any(|r| r.name == spec.workload_uid(7, 2)));
        assert!(snap.resources.contains_key(type_url::CLUSTER), "the waypoints get Envoy resources");
    }

    #[test]
    fn shrinking_keeps_the_shape() {
        let spec = MeshSpec {
            services: 10_000,
            endpoints: 10,
            nodes: 100,
            namespaces: 20,
            ambient_namespaces: 4,
            routed: 1000,
        };
        let s = spec.scaled(0.25);
        assert_eq!((s.services, s.routed, s.namespaces), (2500, 250, 20));
        assert_eq!(spec.scaled(2.0), spec);
    }

    #[test]
    fn percentiles_and_numbers() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((percentile(&v, 50.0), percentile(&v, 99.0)), (50.0, 99.0));
        assert_eq!(thousands(110_000), "110,000");
        assert_eq!(thousands(999), "999");
    }
}
