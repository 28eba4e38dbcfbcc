//! Kubernetes mode: the real weftd binary watching the fake API server (`crate::kubeapi`,
//! the real list/watch protocol) that holds the same synthetic mesh, with the same
//! subscribers on weftd's plaintext xDS port.
//!
//! ```text
//!  driver: FakeApiServer (its own runtime) ◀─ list/watch (kube-rs) ─ weftd process ─ ADS ─▶ N subscribers
//!          a change is `FakeApiServer::apply` of a Pod with a new IP
//! ```
//!
//! Against the in-process side this adds what weftd does in a cluster: process start, the
//! CA (its root kept in a Secret on the API server), listing every watched kind in pages
//! of 500 over HTTP and parsing the JSON, the watch events, and weftd's own main loop.
//! The fake server runs in the driver, so its CPU and memory are not weftd's; how long it
//! takes to serve the mesh on its own is measured first ([`KubeSide::list_s`]).

use super::{Changed, MeshSpec, Usage, mesh, pod, unix_ns};
use crate::{kubeapi::FakeApiServer, weftd::LoopbackWeftd, wpbench::procstat};
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use std::{
    ffi::OsStr,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};
use weft_controlplane::source::kube::WATCHED_KINDS;

/// kube-rs's watcher lists in pages of this many objects (its `watcher::Config` default).
const PAGE: usize = 500;

/// weftd on the fake API server, and what its start measured.
pub(super) struct KubeSide {
    /// Declared before the server: weftd stops first, so it never sees the server vanish.
    weftd: LoopbackWeftd,
    server: FakeApiServer,
    /// Runs the fake server's tasks, on threads of their own.
    _runtime: tokio::runtime::Runtime,
    pub ready: KubeReady,
}

/// What weftd's start in Kubernetes mode measured.
#[derive(Clone, Debug)]
pub struct KubeReady {
    pub objects: usize,
    /// The fake server alone: every watched kind listed in pages of 500 by one client.
    pub list_s: f64,
    /// weftd spawned → `/ready` (a snapshot is live).
    pub ready_s: f64,
    /// weftd spawned → a subscriber holds every address of the mesh.
    pub served_s: f64,
    pub addresses: usize,
    /// Right after the first snapshot was served (VmHWM, VmRSS), and RSS once settled.
    pub usage: Usage,
    pub steady_rss_mib: f64,
}

impl KubeSide {
    /// Fills a fake API server with `spec`'s mesh, measures how fast it lists it, starts
    /// `weftd` on it and waits until `first_served` says a subscriber holds the whole mesh.
    pub(super) fn start(
        weftd: &Path,
        spec: &MeshSpec,
        debounce: Duration,
        first_served: impl FnOnce(SocketAddr) -> Result<usize>,
    ) -> Result<KubeSide> {
        eprintln!("cp-bench: Kubernetes mode: filling the fake API server: {}", spec.describe());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-apiserver")
            .enable_all()
            .build()?;
        let (server, url) = runtime.block_on(FakeApiServer::start())?;
        let objects = mesh(spec);
        let count = objects.len();
        for object in &objects {
            server.apply(object.to_value().context("a mesh object as JSON")?);
        }
        drop(objects);
        // The history of the fill is not needed: watches start from now.
        server.compact();
        let list_s = list_everything(&url)?;
        eprintln!(
            "cp-bench: the fake API server lists all {count} objects in {list_s:.2} s (pages of {PAGE})"
        );

        let plaintext = format!("127.0.0.1:{}", crate::weftd::free_port());
        let debounce = format!("{}ms", debounce.as_millis());
        let args: Vec<&OsStr> = [
            "--kubernetes-url",
            url.as_str(),
            "--plaintext-xds-addr",
            plaintext.as_str(),
            "--debounce",
            debounce.as_str(),
        ]
        .map(OsStr::new)
        .to_vec();
        let started = Instant::now();
        let mut weftd = LoopbackWeftd::start(weftd, &args, "warn");
        let ready_s = wait_ready(&mut weftd, started)?;
        let addr = weftd.plaintext.context("weftd's plaintext xDS address")?;
        let addresses = first_served(addr)?;
        let served_s = started.elapsed().as_secs_f64();
        let usage = usage_of(&weftd)?;
        ensure!(
            addresses == spec.addresses(),
            "weftd served {addresses} addresses from the fake API server, the mesh has {}",
            spec.addresses()
        );
        std::thread::sleep(Duration::from_secs(2));
        let steady_rss_mib = usage_of(&weftd)?.rss_mib;
        eprintln!(
            "cp-bench: Kubernetes mode: ready after {ready_s:.2} s, first subscriber served after {served_s:.2} s; peak RSS {:.0} MiB, steady {steady_rss_mib:.0} MiB",
            usage.peak_rss_mib
        );
        let ready = KubeReady { objects: count, list_s, ready_s, served_s, addresses, usage, steady_rss_mib };
        Ok(KubeSide { weftd, server, _runtime: runtime, ready })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.weftd.plaintext.expect("checked in start")
    }

    pub(super) fn usage(&self) -> Result<Usage> {
        usage_of(&self.weftd)
    }

    /// Gives one pod a new IP on the API server, as a kubelet's status update would.
    pub(super) fn change(
        &self,
        spec: &MeshSpec,
        service: usize,
        endpoint: usize,
        ip: Ipv4Addr,
    ) -> Result<Changed> {
        let object = pod(spec, service, endpoint, ip, 0).to_value()?;
        let changed_ns = unix_ns();
        self.server.apply(object);
        // weftd's inner steps are not visible from here: the whole is end to end.
        Ok(Changed {
            apply_s: 0.0,
            translate_s: 0.0,
            translate_cpu_s: f64::NAN,
            changed_ns,
            published_ns: changed_ns,
            live_s: 0.0,
        })
    }
}

fn wait_ready(weftd: &mut LoopbackWeftd, started: Instant) -> Result<f64> {
    let debug = weftd.debug.to_string();
    let deadline = started + Duration::from_secs(600);
    loop {
        if let Ok((200, _)) = crate::agent::http_get(&debug, "/ready") {
            return Ok(started.elapsed().as_secs_f64());
        }
        if let Some(status) = weftd.exited() {
            bail!("weftd exited ({status}) before it was ready:\n{}", weftd.log());
        }
        ensure!(Instant::now() < deadline, "weftd not ready after 600 s:\n{}", weftd.log());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn usage_of(weftd: &LoopbackWeftd) -> Result<Usage> {
    let pid = weftd.pid();
    let (rss_mib, peak_rss_mib) = procstat::rss_mib(pid)?;
    let (_, syncz) = crate::agent::http_get(&weftd.debug.to_string(), "/debug/syncz")?;
    let streams = match serde_json::from_str::<Value>(&syncz).context("weftd's /debug/syncz")? {
        Value::Array(proxies) => proxies.len(),
        Value::Object(proxies) => proxies.len(),
        _ => 0,
    };
    Ok(Usage { peak_rss_mib, rss_mib, cpu_s: procstat::cpu_secs(pid)?, streams })
}

/// Lists every kind weftd watches, page by page as kube-rs does, parsing each page;
/// returns the seconds it took.
fn list_everything(url: &str) -> Result<f64> {
    let addr = url.trim_start_matches("http://");
    let started = Instant::now();
    for kind in WATCHED_KINDS {
        let mut token = String::new();
        loop {
            let path = format!("{}?limit={PAGE}&continue={token}", kind.path());
            let page = get_json(addr, &path).with_context(|| format!("listing {path}"))?;
            match page["metadata"]["continue"].as_str() {
                Some(next) if !next.is_empty() => token = next.to_owned(),
                _ => break,
            }
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One GET on a fresh connection, its body parsed.
fn get_json(addr: &str, path: &str) -> Result<Value> {
    let mut s = TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    let at = response.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    ensure!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response[..at]));
    Ok(serde_json::from_slice(&response[at + 4..])?)
}
