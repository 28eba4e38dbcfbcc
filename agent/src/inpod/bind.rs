//! The one question enrollment asks: which network namespace is this pod's?
//!
//! Answered from sources a pod cannot forge, in order: the CNI handover for the pod's UID
//! (the runtime's word, given before the pod's containers started), then the kubelet's
//! cgroup for that UID (for pods that were running before the agent). Whatever a source
//! offers must then hold the address the control plane gives the pod; if it does not, the
//! namespace is refused, with a log line naming the pod, the source, the expected and the
//! found addresses. The address check confirms a binding; it never finds one.

use super::{
    kubepods::{CgroupLookupError, Kubepods},
    registry::Sandboxes,
};
use crate::netns::{NetNs, NetNsError};
use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};
use tracing::{debug, info, warn};

/// The pod as the control plane describes it.
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Kubernetes' `metadata.uid`; `None` when the control plane sent none.
    pub uid: Option<&'a str>,
    /// The pod's address; its namespace must hold it.
    pub ip: IpAddr,
}

impl fmt::Display for PodRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a binding came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The CNI plugin's handover.
    Cni,
    /// A process in the pod's kubelet cgroup.
    Cgroup,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Cni => "cni",
            Source::Cgroup => "cgroup",
        })
    }
}

/// A pod's namespace, and how it was found.
#[derive(Debug)]
pub struct Bound {
    pub netns: NetNs,
    pub source: Source,
}

/// Why no namespace is bound to a pod (yet).
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The control plane gave no UID, so nothing can name the pod's namespace.
    #[error(
        "pod {pod}: no UID from the control plane (weftd sends it as the weft.io/pod-uid workload \
         extension; a local config needs `uid:`), so its network namespace cannot be found"
    )]
    NoUid { pod: String },
    /// The UID is not spelled as Kubernetes spells one.
    #[error("pod {pod}: UID {uid:?} is not a Kubernetes UID")]
    BadUid { pod: String, uid: String },
    /// Neither source knows the pod yet: it may not have started. Enrollment retries.
    #[error("pod {pod} (uid {uid}): no CNI handover, and {cgroup}")]
    NotFound { pod: String, uid: String, cgroup: String },
    /// A source offered a namespace that is not the pod's (each refusal is also logged).
    #[error("pod {pod} (uid {uid}): {}", reasons.join("; "))]
    Refused { pod: String, uid: String, reasons: Vec<String> },
}

impl BindError {
    /// Whether the pod is simply not there yet (nothing was refused).
    pub fn is_pending(&self) -> bool {
        matches!(self, BindError::NotFound { .. })
    }
}

/// Answers [`Binder::netns_for`]; shared by the handover server (which fills the
/// sandboxes) and enrollment (which asks).
pub struct Binder {
    sandboxes: Arc<Sandboxes>,
    kubepods: Option<Kubepods>,
    /// The refusals logged per pod (`namespace/name`): a pending pod is asked about every
    /// second, and the same refusal is logged once, not every time.
    logged: Mutex<HashMap<String, Vec<String>>>,
}

/// Past this many remembered refusals the memory is cleared (pods that were deleted are
/// never asked about again, so their entries would otherwise stay).
const MAX_REMEMBERED_REFUSALS: usize = 4096;

impl Binder {
    pub fn new(sandboxes: Arc<Sandboxes>, kubepods: Option<Kubepods>) -> Binder {
        Binder { sandboxes, kubepods, logged: Mutex::default() }
    }

    pub fn sandboxes(&self) -> &Arc<Sandboxes> {
        &self.sandboxes
    }

    pub fn kubepods(&self) -> Option<&Kubepods> {
        self.kubepods.as_ref()
    }

    /// The pod's network namespace: the CNI handover for its UID if there is one that
    /// holds its address, else its kubelet cgroup's. `home` is the agent's own namespace
    /// (never a pod's; the calling thread returns there after looking inside).
    ///
    /// Cost: one map lookup, up to three directories by name and the pod's own processes,
    /// and one visit to a namespace per candidate; nothing that grows with the node.
    pub fn netns_for(&self, pod: &PodRef<'_>, home: &NetNs) -> Result<Bound, BindError> {
        let result = self.look_up(pod, home);
        match &result {
            Ok(_) => self.forget_refusals(pod),
            Err(err @ (BindError::NoUid { .. } | BindError::BadUid { .. })) => {
                self.log_refusal(pod, &err.to_string())
            }
            // Each refused candidate was logged where it was refused.
            Err(_) => {}
        }
        result
    }

    fn look_up(&self, pod: &PodRef<'_>, home: &NetNs) -> Result<Bound, BindError> {
        let started = Instant::now();
        let uid = pod.uid.ok_or_else(|| BindError::NoUid { pod: pod.to_string() })?;
        if !weft_model::is_pod_uid(uid) {
            return Err(BindError::BadUid { pod: pod.to_string(), uid: uid.to_owned() });
        }
        let mut reasons = Vec::new();
        // Logged as soon as refused, also when the other source then finds the pod: a lie
        // is worth a line even if it fooled nobody.
        let mut refuse = |reason: String| {
            self.log_refusal(pod, &reason);
            reasons.push(reason);
        };

        match self.sandboxes.get(uid) {
            Some(sandbox)
                if (sandbox.namespace.as_str(), sandbox.name.as_str()) != (pod.namespace, pod.name) =>
            {
                refuse(format!(
                    "the CNI handover for UID {uid} (sandbox {}) names pod {}/{}, not {pod}",
                    sandbox.container_id, sandbox.namespace, sandbox.name
                ));
            }
            Some(sandbox) => match check(pod, &sandbox.netns, home) {
                Ok(()) => {
                    let netns = sandbox.netns.try_clone().map_err(|e| BindError::Refused {
                        pod: pod.to_string(),
                        uid: uid.to_owned(),
                        reasons: vec![e.to_string()],
                    })?;
                    info!(
                        %pod, uid = %uid, via = %Source::Cni, netns = %netns.path().display(),
                        sandbox = %sandbox.container_id, elapsed_us = started.elapsed().as_micros() as u64,
                        "pod bound to its network namespace"
                    );
                    return Ok(Bound { netns, source: Source::Cni });
                }
                Err(why) => refuse(format!(
                    "the network namespace from the CNI handover (sandbox {}, {}) {why}",
                    sandbox.container_id,
                    sandbox.netns.path().display()
                )),
            },
            None => {
                for other in self.sandboxes.uids_named(pod.namespace, pod.name) {
                    refuse(format!(
                        "a CNI handover names pod {pod} with UID {other}, but the control plane's pod has UID {uid}"
                    ));
                }
            }
        }

        let cgroup_miss = match &self.kubepods {
            None => "no kubepods cgroup to look in (--kubepods-cgroup)".to_owned(),
            Some(kubepods) => match kubepods.open_pod_netns(uid) {
                Ok(found) => match check(pod, &found.netns, home) {
                    Ok(()) => {
                        info!(
                            %pod, uid = %uid, via = %Source::Cgroup, netns = %found.netns.path().display(),
                            pid = found.pid, cgroup = %found.cgroup.display(),
                            processes_examined = found.processes_examined,
                            elapsed_us = started.elapsed().as_micros() as u64,
                            "pod bound to its network namespace"
                        );
                        return Ok(Bound { netns: found.netns, source: Source::Cgroup });
                    }
                    Err(why) => {
                        refuse(format!(
                            "the network namespace of process {} in the pod's cgroup {} {why}",
                            found.pid,
                            found.cgroup.display()
                        ));
                        String::new()
                    }
                },
                Err(CgroupLookupError::NetNs(e)) => {
                    refuse(e.to_string());
                    String::new()
                }
                Err(miss) => miss.to_string(),
            },
        };

        if reasons.is_empty() {
            debug!(%pod, uid = %uid, cgroup = %cgroup_miss, "pod's network namespace not found yet");
            return Err(BindError::NotFound {
                pod: pod.to_string(),
                uid: uid.to_owned(),
                cgroup: cgroup_miss,
            });
        }
        Err(BindError::Refused { pod: pod.to_string(), uid: uid.to_owned(), reasons })
    }

    /// Logs a refusal once per pod and distinct reason.
    fn log_refusal(&self, pod: &PodRef<'_>, reason: &str) {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.get(&pod.to_string()).is_some_and(|seen| seen.iter().any(|r| r == reason)) {
            return;
        }
        if logged.len() >= MAX_REMEMBERED_REFUSALS {
            logged.clear();
        }
        warn!(%pod, uid = %pod.uid.unwrap_or_default(), %reason, "refusing to bind a pod to a network namespace");
        logged.entry(pod.to_string()).or_default().push(reason.to_owned());
    }

    fn forget_refusals(&self, pod: &PodRef<'_>) {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if !logged.is_empty() {
            logged.remove(&pod.to_string());
        }
    }
}

/// Whether `netns` can be `pod`'s: not the node's own, and holding the pod's address.
/// Returns the reason it cannot, phrased to follow "the namespace …".
fn check(pod: &PodRef<'_>, netns: &NetNs, home: &NetNs) -> Result<(), String> {
    if netns.inode() == home.inode() {
        return Err("is the node's own network namespace (pods with hostNetwork are never captured)".into());
    }
    let found = netns.addresses(home).map_err(|e: NetNsError| format!("cannot be inspected: {e}"))?;
    if found.contains(&pod.ip) {
        return Ok(());
    }
    // Loopback and IPv6 link-local addresses are in every namespace: listing them says nothing.
    let found: Vec<String> = found
        .iter()
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback(),
            IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
        })
        .map(IpAddr::to_string)
        .collect();
    Err(format!("holds [{}], not the control plane's address {} for pod {pod}", found.join(", "), pod.ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inpod::registry::Sandbox;

    const UID: &str = "3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10";

    fn pod(uid: Option<&str>) -> PodRef<'_> {
        PodRef { namespace: "shop", name: "cart-0", uid, ip: "198.18.1.5".parse().unwrap() }
    }

    #[test]
    fn without_a_usable_uid_nothing_is_looked_up() {
        let binder = Binder::new(Arc::default(), None);
        let home = NetNs::current().unwrap();
        let err = binder.netns_for(&pod(None), &home).unwrap_err();
        assert!(
            matches!(err, BindError::NoUid { .. }) && err.to_string().contains("weft.io/pod-uid"),
            "{err}"
        );
        let err = binder.netns_for(&pod(Some("../../x")), &home).unwrap_err();
        assert!(matches!(err, BindError::BadUid { .. }), "{err}");
        let err = binder.netns_for(&pod(Some(UID)), &home).unwrap_err();
        assert!(err.is_pending(), "{err}");
        assert!(err.to_string().contains("--kubepods-cgroup"), "{err}");
    }

    #[test]
    fn handovers_naming_another_pod_or_uid_are_refused() {
        let sandboxes = Arc::new(Sandboxes::default());
        let home = NetNs::current().unwrap();
        let other_uid = "0b6f1f8e-5f2a-4c1e-9d3b-7a0e2c4d6f81";
        sandboxes
            .insert(Sandbox {
                uid: other_uid.into(),
                namespace: "shop".into(),
                name: "cart-0".into(),
                container_id: "c1".into(),
                netns: Arc::new(NetNs::current().unwrap()),
                reported_ips: Vec::new(),
                received: Instant::now(),
            })
            .unwrap();
        let binder = Binder::new(sandboxes.clone(), None);
        let err = binder.netns_for(&pod(Some(UID)), &home).unwrap_err();
        assert!(!err.is_pending());
        let text = err.to_string();
        assert!(text.contains(other_uid) && text.contains(UID) && text.contains("shop/cart-0"), "{text}");

        // Right UID, another pod's name.
        sandboxes
            .insert(Sandbox {
                uid: UID.into(),
                namespace: "shop".into(),
                name: "cart-1".into(),
                container_id: "c2".into(),
                netns: Arc::new(NetNs::current().unwrap()),
                reported_ips: Vec::new(),
                received: Instant::now(),
            })
            .unwrap();
        let text = binder.netns_for(&pod(Some(UID)), &home).unwrap_err().to_string();
        assert!(text.contains("names pod shop/cart-1, not shop/cart-0"), "{text}");
    }

    #[test]
    fn the_nodes_own_namespace_is_never_a_pods() {
        // Entering a namespace needs root; comparing with `home` happens before that.
        let sandboxes = Arc::new(Sandboxes::default());
        sandboxes
            .insert(Sandbox {
                uid: UID.into(),
                namespace: "shop".into(),
                name: "cart-0".into(),
                container_id: "c1".into(),
                netns: Arc::new(NetNs::current().unwrap()),
                reported_ips: Vec::new(),
                received: Instant::now(),
            })
            .unwrap();
        let binder = Binder::new(sandboxes, None);
        let text = binder.netns_for(&pod(Some(UID)), &NetNs::current().unwrap()).unwrap_err().to_string();
        assert!(text.contains("the node's own network namespace"), "{text}");
    }
}
