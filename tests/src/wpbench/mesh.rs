//! The benchmark's mesh on the test bed: weftd and the client pod on n1, the two
//! waypoints (one of each kind, for the same Gateway) on n2, reviews v1 and v2 on n3.
//!
//! ```text
//! client (productpage, n1) ─HBONE CONNECT reviews VIP:9080─▶ waypoint pod :15008 (n2)
//!   Envoy or weft-waypoint: VirtualService (90/10, retries, timeout) ─HBONE─▶ reviews-vN :15008 (n3)
//! ```
//!
//! Every hop crosses veths and the bed's bridge as between real nodes. Two pieces are
//! played by this process instead of agents (see the module above): the client pod's
//! agent (the load client opens HBONE streams from the client pod's address with its
//! certificate) and the reviews pods' agents (HBONE servers answering HTTP themselves).

use super::{
    backend::{Backends, HBONE_PORT},
    load::Target,
};
use crate::{
    Node, Pod, TestBed,
    certs::MeshCa,
    scenario::Scenario,
    waypoint::{GATEWAY_NAME_LABEL, Waypoint, WaypointKind, WaypointOptions},
};
use anyhow::{Context, Result};
use std::{
    net::{SocketAddr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};
use weft_hbone::{Identity, PoolKey, TrustBundle, WorkloadCertificate};

const NAMESPACE: &str = "bookinfo";
/// The Gateway, and so the waypoints' service account.
const GATEWAY: &str = "waypoint";
const PORT: u16 = 9080;
/// The reviews Service's VIP.
const VIP: [u8; 4] = [198, 19, 0, 10];

/// The Services, the Gateway (and the Service Istio makes for it), and the issue's routing
/// config: 90/10 between subsets v1 and v2, two retries on 5xx, a 5 s timeout.
const CONFIG: &str = concat!(
    r#"apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo }
spec:
  clusterIP: 198.19.0.10
  ports: [{ name: http, port: 9080, targetPort: 9080 }]
  selector: { app: reviews }
---
"#,
    crate::bookinfo_waypoint_yaml!(),
    r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: bookinfo }
spec:
  hosts: [reviews]
  http:
    - route:
        - { destination: { host: reviews, subset: v1 }, weight: 90 }
        - { destination: { host: reviews, subset: v2 }, weight: 10 }
      retries: { attempts: 2, retryOn: 5xx }
      timeout: 5s
"#
);

/// The running mesh. Dropping it stops everything and removes the bed.
pub struct Mesh {
    pub envoy: Waypoint,
    pub weft: Waypoint,
    pub client: Pod,
    pub backends: Backends,
    client_cert: Arc<WorkloadCertificate>,
    roots: TrustBundle,
    /// Declared last: dropped after the processes and servers above.
    _scenario: Scenario,
    _nodes: [Node; 3],
}

impl Mesh {
    pub fn start() -> Result<Mesh> {
        TestBed::sweep_stale()?;
        let mut s = Scenario::new("wpbench")?;
        let nodes = [s.bed.node("n1")?, s.bed.node("n2")?, s.bed.node("n3")?];
        let client = s.bed.pod(&nodes[0], NAMESPACE, "productpage")?;
        let reviews =
            [s.bed.pod(&nodes[2], NAMESPACE, "reviews-v1")?, s.bed.pod(&nodes[2], NAMESPACE, "reviews-v2")?];
        let waypoint_pods = [
            s.bed.pod(&nodes[1], NAMESPACE, "waypoint-envoy")?,
            s.bed.pod(&nodes[1], NAMESPACE, "waypoint-weft")?,
        ];

        s.config.namespace(NAMESPACE, true);
        for ns in s.config.mesh.namespaces.iter_mut().filter(|n| n.name == NAMESPACE) {
            ns.labels.insert("istio.io/use-waypoint".into(), GATEWAY.into());
        }
        s.config.pod(&client, NAMESPACE, &[("app", "productpage")], &[]);
        for (pod, v) in reviews.iter().zip(["v1", "v2"]) {
            s.config.pod(pod, NAMESPACE, &[("app", "reviews"), ("version", v)], &[PORT]);
        }
        for pod in &waypoint_pods {
            // As Istio labels a waypoint's pods: the Gateway's, and out of ambient capture.
            s.config.pod(
                pod,
                NAMESPACE,
                &[(GATEWAY_NAME_LABEL, GATEWAY), ("istio.io/dataplane-mode", "none")],
                &[HBONE_PORT],
            );
        }
        // Both waypoints run as the Gateway's service account (the bed names a pod's
        // account after the pod otherwise).
        for p in s.config.mesh.pods.iter_mut().filter(|p| p.name.starts_with("waypoint-")) {
            p.service_account = GATEWAY.into();
        }
        s.write_kubernetes_yaml("reviews.yaml", CONFIG)?;

        let dir = s.dir.clone();
        let weftd = s.control_plane(&nodes[0])?;
        let ca = MeshCa::from_dir(weftd.ca_dir())?;
        let roots = TrustBundle::from_pem(ca.root_pem())?;
        let cert = |pod: &Pod| -> Result<WorkloadCertificate> {
            let identity = Identity::new("cluster.local", NAMESPACE, pod.name())?;
            let pem = ca.issue_for(&identity, Duration::from_secs(24 * 3600))?;
            Ok(WorkloadCertificate::from_pem(&pem.chain, &pem.key)?)
        };
        let backends =
            Backends::start(&[(&reviews[0], cert(&reviews[0])?), (&reviews[1], cert(&reviews[1])?)], &roots)?;
        let client_cert = Arc::new(cert(&client)?);

        // One worker thread each: Envoy as the bed runs it (`--concurrency 1`), weft-waypoint
        // matched to it, so that neither has more threads than the other on 2 cores.
        let options = WaypointOptions { worker_threads: Some(1), ..Default::default() };
        let start = |kind, pod: &Pod| {
            Waypoint::start_with(kind, pod, GATEWAY, weftd, &dir, &options)
                .with_context(|| format!("starting the {kind:?} waypoint; weftd:\n{}", weftd.stderr()))
        };
        let envoy = start(WaypointKind::Envoy, &waypoint_pods[0])?;
        let weft = start(WaypointKind::Weft, &waypoint_pods[1])?;
        Ok(Mesh { envoy, weft, client, backends, client_cert, roots, _scenario: s, _nodes: nodes })
    }

    /// The load client's view of `waypoint`: HBONE from the client's identity to the
    /// waypoint pod's :15008, CONNECT to the reviews VIP.
    pub fn target(&self, waypoint: &Waypoint) -> Result<Target> {
        let key = PoolKey {
            src: self.client_cert.identity().clone(),
            dst: waypoint.identity().parse().context("the waypoint's identity")?,
            dst_addr: SocketAddr::V4(SocketAddrV4::new(waypoint.pod().ip(), HBONE_PORT)),
            extra: 0,
        };
        let authority = SocketAddr::from((VIP, PORT));
        Ok(Target::new(key, self.client_cert.clone(), self.roots.clone(), authority))
    }
}
