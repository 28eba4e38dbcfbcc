//! State shared by every task of the agent.

use crate::{datapath::OrigDstTable, drain::Drain, metrics::Metrics, netns::NetNs};
use arc_swap::ArcSwap;
use std::{net::Ipv4Addr, sync::Arc};
use weft_model::MeshIndex;

/// Read by every connection; written only by the config loader (whole snapshots).
pub struct Shared {
    /// The current model. Connections load a snapshot once, at open.
    pub mesh: ArcSwap<MeshIndex>,
    pub metrics: Metrics,
    pub orig_dst: OrigDstTable,
    /// The agent's own netns, where threads return after working inside a pod's.
    pub host_netns: NetNs,
    pub mark: u32,
    pub trust_domain: String,
    pub drain: Arc<Drain>,
}

/// An enrolled pod, as its accept loops and connections see it.
#[derive(Debug)]
pub struct InPod {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub netns: NetNs,
    pub netns_cookie: u64,
}
