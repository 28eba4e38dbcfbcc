//! Binding pods to their network namespaces, from sources no pod can forge.
//!
//! Any process on a node can make a network namespace holding any address, so an address
//! is never how the agent finds a pod's namespace (it used to scan every namespace for
//! the pod's IP). As istio-cni does, it learns the binding from:
//!
//! - **the CNI handover** ([`server`]): `weft-cni`, chained after the cluster's CNI plugin,
//!   passes each new sandbox's namespace, pod namespace/name and UID over a root-only Unix
//!   socket before the pod's containers start; the agent keeps the namespace open
//!   ([`registry`]) until the sandbox's DEL;
//! - **the kubelet's cgroups** ([`kubepods`]): for pods already running when the agent
//!   starts, the namespace of the oldest process in the cgroup named by the pod's UID.
//!
//! [`Binder::netns_for`] is the one call enrollment makes: given the pod as the control
//! plane describes it (namespace, name, UID, IP), the handover first, then the cgroup; a
//! candidate whose addresses do not include the control plane's IP is refused with a log
//! line. Nothing here lists the node's processes or namespaces: the cost of binding one
//! pod does not grow with them.

pub mod bind;
pub mod kubepods;
pub mod registry;
pub mod server;

pub use bind::{BindError, Binder, Bound, PodRef, Source};
pub use kubepods::Kubepods;
pub use registry::Sandboxes;

/// The namespaces whose pods the agent captures (labelled `istio.io/dataplane-mode=ambient`),
/// as the mesh-namespaces file lists them for the CNI plugin.
pub fn mesh_namespaces(state: &weft_model::WorkloadState) -> std::collections::BTreeSet<String> {
    state
        .workloads()
        .iter()
        .filter(|w| w.protocol == weft_model::TunnelProtocol::Hbone)
        .map(|w| w.namespace.clone())
        .collect()
}
