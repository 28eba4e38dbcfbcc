//! `weft-cni`: Weft's chained CNI plugin, and the handover protocol it shares with the
//! node agent.
//!
//! The agent must know which network namespace belongs to which pod, from a source no pod
//! can forge (an address inside a namespace proves nothing: any process on the node can
//! make a namespace holding any address). The container runtime is such a source: it
//! creates each pod's sandbox and runs the CNI chain for it, as root, before any of the
//! pod's containers start. Chained after the cluster's own CNI plugin, `weft-cni` passes
//! the agent what the runtime told it — the pod's namespace, name and UID, the sandbox's
//! network namespace, and the addresses the previous plugin gave it — over a root-only
//! Unix socket, and prints the previous result unchanged. The agent keeps the namespace
//! open by descriptor and binds it to the pod when the control plane names that UID.
//! This is istio-cni's ambient model (`cni/pkg/plugin`), without its Kubernetes client.
//!
//! Commands (CNI 0.3.0–1.0.0):
//! - ADD: hand the sandbox over; print the previous result.
//! - DEL: ask the agent to forget the sandbox; succeed whatever happens.
//! - CHECK: succeed if the agent holds the sandbox.
//! - VERSION: the versions above.
//!
//! When the agent cannot be reached, pods of namespaces in the mesh are held back (CNI
//! error 11, "try again later": the kubelet retries) and all other pods start: see
//! [`plugin`] for the rule and why. Pods of `exclude_namespaces` (default `kube-system`;
//! list the agent's own namespace too) are never handed over and never held back.
//!
//! Configuration, as a plugin entry in the runtime's conflist:
//!
//! ```json
//! { "type": "weft-cni", "agent_socket": "/var/run/weft/cni.sock",
//!   "exclude_namespaces": ["kube-system", "weft-system"] }
//! ```
//!
//! `weft-cni install` puts the plugin on a node (the agent DaemonSet's init container runs
//! it): see [`install`].
#![forbid(unsafe_code)]

pub mod install;
pub mod plugin;
pub mod protocol;
pub mod spec;
