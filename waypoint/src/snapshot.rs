//! The configuration in force: one immutable snapshot, compiled from the xDS resources the
//! waypoint holds and swapped atomically (`ArcSwap`) when they change, so the data path
//! reads it without a lock and a request sees one consistent version from start to end.
//!
//! What the Envoy resources of the contract become (CONTRACT.md):
//!
//! | resource | here |
//! |---|---|
//! | listener `connect_terminate` | [`Terminate`]: HBONE on 15008, `default` = our certificate, `ROOTCA` = the mesh root |
//! | listener `main_internal` | [`Snapshot::dispatch`]: CONNECT authority (VIP:PORT) → [`Chain`] |
//! | RouteConfiguration (RDS) | [`Snapshot::routes`]: compiled route tables by name |
//! | Cluster (EDS) + ClusterLoadAssignment | [`Snapshot::clusters`]: settings, endpoints, load balancer |
//! | istio.workload.Address (Weft's `weft.io/pod-labels`) | [`Snapshot::workloads`]: client labels and both sides' names by address |
//! | listener and cluster `connect_originate` | [`Snapshot::hbone_port`]: endpoints are dialled on POD_IP:15008 |
//! | listener `gateway_<port>` (a gateway's) | [`Snapshot::gateways`]: local address → [`Chain`]; its socket is bound by `gateway.rs` |

use crate::{route::RouteTable, upstream::Cluster};
use serde::Serialize;
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

/// A workload of the mesh as its istio.workload.Address describes it.
#[derive(Debug)]
pub struct KnownWorkload {
    /// Its pod's labels (Weft's `weft.io/pod-labels`), if weftd sent them.
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Its names, as Istio's metrics label a peer.
    pub peer: crate::metrics::Peer,
}

/// HBONE termination as the `connect_terminate` listener asks for it.
#[derive(Clone, Debug, Serialize)]
pub struct Terminate {
    pub port: u16,
}

/// What a CONNECT to one authority is served by (a filter chain of `main_internal`).
#[derive(Debug)]
pub enum Chain {
    Http(HttpChain),
    Tcp(TcpChain),
}

/// An HTTP connection manager: requests routed by an RDS table.
#[derive(Debug)]
pub struct HttpChain {
    /// The filter chain's name (`inbound-vip|PORT|http|HOST`), the stat prefix.
    pub name: Arc<str>,
    pub route_config: Arc<str>,
    /// The HCM's strip_port_mode: the Host's port left out of routing and of the request
    /// sent on (weftd sets strip_any_host_port on gateway listeners).
    pub strip_port: crate::route::StripPort,
    /// The HCM carries the fault filter (its per-route configs then apply).
    pub fault: bool,
    /// The HCM's RBAC filters, in their order (weftd: the DENY filter, then the ALLOW one).
    pub rbac: Box<[Arc<crate::rbac::Rbac>]>,
    /// The RBAC filters come before the fault filter (Istio's order), so a refused request
    /// is neither delayed nor aborted by a fault.
    pub rbac_before_fault: bool,
}

/// A TCP proxy to one cluster.
#[derive(Debug)]
pub struct TcpChain {
    pub name: Arc<str>,
    pub cluster: Arc<str>,
}

impl Chain {
    pub fn name(&self) -> &str {
        match self {
            Chain::Http(h) => &h.name,
            Chain::Tcp(t) => &t.name,
        }
    }
}

/// The configuration in force.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Set once the `connect_terminate` listener is held: until then no CONNECT is served.
    pub terminate: Option<Terminate>,
    /// The `main_internal` listener is held (the dispatch table is known, maybe empty).
    pub main_internal: bool,
    pub dispatch: HashMap<SocketAddr, Arc<Chain>>,
    /// Gateway listeners: the address a connection was accepted on → its chain.
    pub gateways: HashMap<SocketAddr, Arc<Chain>>,
    /// A first LDS update was applied (a gateway is ready on it, as Envoy is once its
    /// listeners are fetched, even if none selects it yet).
    pub listeners_received: bool,
    pub routes: HashMap<Arc<str>, Arc<RouteTable>>,
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
    /// The mesh's workloads by address (istio.workload.Address): a request's client's
    /// labels, for VirtualService `sourceLabels`, and both sides' names, for metrics.
    pub workloads: HashMap<std::net::IpAddr, Arc<KnownWorkload>>,
    /// The port endpoints are dialled on for HBONE (`connect_originate`'s
    /// `upstream_port_override`).
    pub hbone_port: u16,
}
