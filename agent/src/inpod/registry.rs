//! The sandboxes the CNI plugin has handed over, by pod UID.
//!
//! Each entry holds the sandbox's network namespace open: the runtime's path for it
//! (`/var/run/netns/cni-…`) may disappear while the pod runs, the descriptor does not.
//! Entries leave on CNI DEL, when a newer sandbox of the same pod replaces them, or when
//! the pod's cgroup is gone (the DEL was missed while the agent was down): holding a
//! descriptor would otherwise keep a dead pod's namespace, and its veth, alive.

use crate::netns::NetNs;
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

/// More sandboxes than a node can run pods (the kubelet's default is 110): a full registry
/// means DELs are being lost, and refusing new handovers says so loudly.
pub const MAX_SANDBOXES: usize = 2048;

/// One handed-over sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// Opened when the handover arrived.
    pub netns: Arc<NetNs>,
    /// The addresses the cluster's CNI plugin reported (not trusted; shown in logs).
    pub reported_ips: Vec<IpAddr>,
    pub received: Instant,
}

/// A sandbox as the binder sees it: shared, so a lookup does not hold the lock while it
/// enters the namespace.
#[derive(Debug, Clone)]
pub struct SandboxView {
    pub namespace: String,
    pub name: String,
    pub container_id: String,
    pub netns: Arc<NetNs>,
    pub reported_ips: Vec<IpAddr>,
}

/// Why a handover was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the agent already holds {MAX_SANDBOXES} sandboxes: CNI DELs are being lost")]
    Full,
}

#[derive(Debug, Default)]
pub struct Sandboxes {
    by_uid: Mutex<HashMap<String, Sandbox>>,
}

impl Sandboxes {
    /// Records a handover; a sandbox of the same pod UID is replaced (the runtime made a new
    /// one) and returned.
    pub fn insert(&self, sandbox: Sandbox) -> Result<Option<Sandbox>, RegistryError> {
        let mut map = self.lock();
        if map.len() >= MAX_SANDBOXES && !map.contains_key(&sandbox.uid) {
            return Err(RegistryError::Full);
        }
        Ok(map.insert(sandbox.uid.clone(), sandbox))
    }

    /// Forgets sandbox `container_id` of pod `uid`; a newer sandbox of the pod stays.
    /// Returns whether something was removed.
    pub fn remove(&self, uid: &str, container_id: &str) -> bool {
        let mut map = self.lock();
        if map.get(uid).is_some_and(|s| s.container_id == container_id) {
            map.remove(uid);
            return true;
        }
        false
    }

    /// Whether the agent holds sandbox `container_id` of pod `uid`.
    pub fn holds(&self, uid: &str, container_id: &str) -> bool {
        self.lock().get(uid).is_some_and(|s| s.container_id == container_id)
    }

    pub fn get(&self, uid: &str) -> Option<SandboxView> {
        self.lock().get(uid).map(|s| SandboxView {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            container_id: s.container_id.clone(),
            netns: s.netns.clone(),
            reported_ips: s.reported_ips.clone(),
        })
    }

    /// UIDs of the handovers that name pod `namespace/name` (to tell a handover with the
    /// wrong UID from no handover at all).
    pub fn uids_named(&self, namespace: &str, name: &str) -> Vec<String> {
        self.lock()
            .values()
            .filter(|s| s.namespace == namespace && s.name == name)
            .map(|s| s.uid.clone())
            .collect()
    }

    /// Drops the sandboxes `keep` says no to, and returns them.
    pub fn retain(&self, mut keep: impl FnMut(&Sandbox) -> bool) -> Vec<Sandbox> {
        let mut map = self.lock();
        let gone: Vec<String> = map.values().filter(|s| !keep(s)).map(|s| s.uid.clone()).collect();
        gone.iter().filter_map(|uid| map.remove(uid)).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Sandbox>> {
        // The map stays consistent across a panic elsewhere: every change is one call.
        self.by_uid.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(uid: &str, container: &str) -> Sandbox {
        // One descriptor for every test sandbox: thousands would exceed the fd limit.
        static OWN: std::sync::OnceLock<Arc<NetNs>> = std::sync::OnceLock::new();
        Sandbox {
            uid: uid.into(),
            namespace: "shop".into(),
            name: format!("pod-{uid}"),
            container_id: container.into(),
            netns: OWN.get_or_init(|| Arc::new(NetNs::current().unwrap())).clone(),
            reported_ips: Vec::new(),
            received: Instant::now(),
        }
    }

    #[test]
    fn a_newer_sandbox_replaces_and_an_old_del_does_not_remove_it() {
        let s = Sandboxes::default();
        assert!(s.insert(sandbox("u1", "old")).unwrap().is_none());
        assert_eq!(s.insert(sandbox("u1", "new")).unwrap().unwrap().container_id, "old");
        assert!(!s.remove("u1", "old"), "the DEL of the replaced sandbox");
        assert!(s.holds("u1", "new") && !s.holds("u1", "old"));
        assert_eq!(s.get("u1").unwrap().container_id, "new");
        assert!(s.remove("u1", "new"));
        assert!(s.get("u1").is_none() && s.is_empty());
    }

    #[test]
    fn lookups_by_name_and_retain() {
        let s = Sandboxes::default();
        s.insert(sandbox("u1", "a")).unwrap();
        s.insert(sandbox("u2", "b")).unwrap();
        assert_eq!(s.uids_named("shop", "pod-u2"), ["u2"]);
        assert!(s.uids_named("other", "pod-u2").is_empty());
        let gone = s.retain(|sb| sb.uid == "u1");
        assert_eq!(gone.iter().map(|g| g.uid.as_str()).collect::<Vec<_>>(), ["u2"]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_registry_is_bounded() {
        let s = Sandboxes::default();
        for i in 0..MAX_SANDBOXES {
            s.insert(sandbox(&format!("u{i}"), "c")).unwrap();
        }
        assert!(matches!(s.insert(sandbox("one-more", "c")), Err(RegistryError::Full)));
        assert!(s.insert(sandbox("u7", "c2")).is_ok(), "a replacement still fits");
    }
}
