//! State shared by every task of the agent.

use crate::{
    datapath::{BypassTable, OrigDstTable},
    drain::Drain,
    metrics::Metrics,
    netns::NetNs,
};
use arc_swap::ArcSwap;
use std::{net::Ipv4Addr, sync::Arc};
use weft_model::{Workload, WorkloadState};

/// Read by every connection; written only by the model source (whole snapshots).
pub struct Shared {
    /// Workloads and services. Connections load a snapshot once, at open.
    pub state: ArcSwap<WorkloadState>,
    pub metrics: Metrics,
    pub orig_dst: OrigDstTable,
    pub bypass: BypassTable,
    /// The agent's own netns, where threads return after working inside a pod's.
    pub host_netns: NetNs,
    /// SO_MARK of the agent's sockets towards other nodes.
    pub mark: u32,
    /// SO_MARK of the agent's connections to a pod's application (from the client's
    /// address): the pod routes packets with it back to the agent (policy routing).
    pub inbound_mark: u32,
    pub drain: Arc<Drain>,
}

/// An enrolled pod, as its accept loops and connections see it.
#[derive(Debug)]
pub struct InPod {
    /// The workload as it was when the pod was enrolled; identity and addresses do not
    /// change for the life of a pod.
    pub workload: Arc<Workload>,
    pub ip: Ipv4Addr,
    pub netns: NetNs,
    pub netns_cookie: u64,
}
