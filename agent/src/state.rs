//! State shared by every task of the agent.

use crate::{
    drain::Drain,
    identity::{CertSlot, SecretManager},
    metrics::Metrics,
    netns::NetNs,
    policy::PolicyStore,
    proxy::sockets::Sockets,
};
use arc_swap::ArcSwap;
use std::{net::Ipv4Addr, sync::Arc};
use weft_model::{Workload, WorkloadState};

/// Read by every connection; written only by the model source (whole snapshots).
pub struct Shared {
    /// Workloads and services. Connections load a snapshot once, at open.
    pub state: ArcSwap<WorkloadState>,
    /// Authorization policies (and converted PeerAuthentications) for this node's pods.
    pub policies: ArcSwap<PolicyStore>,
    pub metrics: Metrics,
    /// Original destinations and sockets in pods (eBPF and netns on a node).
    pub sockets: Sockets,
    /// Certificates of the identities of this node's pods.
    pub secrets: SecretManager,
    /// Pooled HBONE connections to other pods.
    pub pool: weft_hbone::Pool,
    pub hbone: weft_hbone::Settings,
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
    /// Its identity's certificate; None when the agent has no CA.
    pub cert: Option<Arc<CertSlot>>,
}
