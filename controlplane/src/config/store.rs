//! The config store: the last good version of every object, per [`ObjectKey`].
//!
//! Sources feed [`SourceEvent`]s in; each object is parsed and validated on arrival. A
//! valid object replaces the previous version; an invalid new version of an existing
//! object is rejected with diagnostics and the previous version stays in force; an
//! invalid new object is simply absent. Other objects are never affected. After every
//! change the cross-object checks run again and a new immutable [`ConfigSnapshot`] is
//! published with the next generation number.

use super::diagnostic::Diagnostic;
use super::kinds::*;
use super::parse::check;
use super::validate::cross::{self, CrossCheck, Entry};
use crate::source::{ObjectKey, Origin, RawObject, SourceEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Which source an event came from, so a source's `Reset` replaces only what that source
/// sent before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceId {
    File,
    Kubernetes,
}

/// An object in force. Its source text is not kept (on a large mesh the JSON would cost
/// as much memory as everything else together); a digest of it tells an unchanged resend
/// (a Kubernetes relist, a touched file) from a change.
#[derive(Debug)]
struct Accepted {
    source: SourceId,
    origin: Origin,
    digest: u64,
    object: ConfigObject,
    warnings: Vec<Diagnostic>,
}

/// A digest of what a source sent for an object (its API version and text). A source
/// writes the same object as the same text (serde_json's maps are ordered), so equal
/// objects give equal digests.
fn digest(raw: &RawObject) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    raw.api_version.hash(&mut h);
    raw.json.hash(&mut h);
    h.finish()
}

/// An object that is not served: invalid, or of a kind weftd ignores.
#[derive(Debug)]
struct NotServed {
    source: SourceId,
    raw: RawObject,
    diagnostics: Vec<Diagnostic>,
}

/// Keeps the last good configuration. Not thread-safe by itself: one task owns it and
/// hands out [`ConfigSnapshot`]s.
#[derive(Debug)]
pub struct ConfigStore {
    generation: u64,
    accepted: BTreeMap<ObjectKey, Accepted>,
    not_served: BTreeMap<ObjectKey, NotServed>,
    unreadable: BTreeMap<(SourceId, String), Diagnostic>,
    cross: CrossCheck,
    snapshot: Arc<ConfigSnapshot>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigStore {
    pub fn new() -> Self {
        ConfigStore {
            generation: 0,
            accepted: BTreeMap::new(),
            not_served: BTreeMap::new(),
            unreadable: BTreeMap::new(),
            cross: CrossCheck::default(),
            snapshot: Arc::new(ConfigSnapshot::default()),
        }
    }

    /// Applies one event; returns whether the served configuration changed (and so the
    /// generation went up).
    pub fn apply(&mut self, source: SourceId, event: SourceEvent) -> bool {
        self.apply_all(source, [event])
    }

    /// Applies a batch of events and publishes at most one new snapshot for it.
    pub fn apply_all(&mut self, source: SourceId, events: impl IntoIterator<Item = SourceEvent>) -> bool {
        let mut changed = false;
        for event in events {
            changed |= match event {
                SourceEvent::Upsert(raw) => self.upsert(source, raw),
                SourceEvent::Delete(key) => self.delete(&key),
                SourceEvent::Reset(objects) => self.reset(source, objects),
                SourceEvent::Unreadable { origin, message } => {
                    let diagnostic = Diagnostic::unreadable(&origin, message);
                    self.unreadable.insert((source, origin.to_string()), diagnostic);
                    false
                }
            };
        }
        if changed {
            self.generation += 1;
            self.rebuild();
        }
        changed
    }

    /// Increments on every accepted change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        Arc::clone(&self.snapshot)
    }

    /// Everything wrong with the current input: unreadable documents, rejected objects,
    /// warnings of served objects and cross-object findings, by file and line.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self.unreadable.values().cloned().collect();
        all.extend(self.not_served.values().flat_map(|n| n.diagnostics.iter().cloned()));
        all.extend(self.accepted.values().flat_map(|a| a.warnings.iter().cloned()));
        all.extend(self.cross.diagnostics.iter().cloned());
        all.sort_by(Diagnostic::cmp_by_location);
        all
    }

    fn upsert(&mut self, source: SourceId, raw: RawObject) -> bool {
        let key = raw.key.clone();
        let digest = digest(&raw);
        if self.accepted.get(&key).is_some_and(|a| a.digest == digest && a.origin == raw.origin) {
            self.not_served.remove(&key);
            return false;
        }
        if !self.accepted.contains_key(&key) && self.not_served.get(&key).is_some_and(|n| n.raw == raw) {
            return false;
        }
        let checked = check(&raw);
        match checked.object {
            Some(object) => {
                self.not_served.remove(&key);
                let changed =
                    self.accepted.get(&key).is_none_or(|a| a.object != object || a.origin != raw.origin);
                let accepted =
                    Accepted { source, origin: raw.origin, digest, object, warnings: checked.diagnostics };
                self.accepted.insert(key, accepted);
                changed
            }
            None => {
                let mut diagnostics = checked.diagnostics;
                if let Some(previous) = self.accepted.get(&key)
                    && diagnostics.iter().any(Diagnostic::is_error)
                {
                    diagnostics.push(Diagnostic::warning(
                        &key,
                        &raw.origin,
                        "",
                        format!(
                            "this version is rejected; the last good version (from {}) stays in force",
                            previous.origin
                        ),
                    ));
                }
                self.not_served.insert(key, NotServed { source, raw, diagnostics });
                false
            }
        }
    }

    fn delete(&mut self, key: &ObjectKey) -> bool {
        self.not_served.remove(key);
        self.accepted.remove(key).is_some()
    }

    fn reset(&mut self, source: SourceId, objects: Vec<RawObject>) -> bool {
        let keep: BTreeSet<&ObjectKey> = objects.iter().map(|o| &o.key).collect();
        let stale: Vec<ObjectKey> = self
            .accepted
            .iter()
            .filter(|(k, a)| a.source == source && !keep.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        let mut changed = !stale.is_empty();
        for k in stale {
            self.accepted.remove(&k);
        }
        self.not_served.retain(|k, n| n.source != source || keep.contains(k));
        self.unreadable.retain(|(s, _), _| *s != source);
        for raw in objects {
            changed |= self.upsert(source, raw);
        }
        changed
    }

    fn rebuild(&mut self) {
        let mut vss = Vec::new();
        let mut drs = Vec::new();
        for (key, a) in &self.accepted {
            match &a.object {
                ConfigObject::VirtualService(vs) => vss.push(Entry { key, origin: &a.origin, object: &**vs }),
                ConfigObject::DestinationRule(dr) => {
                    drs.push(Entry { key, origin: &a.origin, object: &**dr })
                }
                _ => {}
            }
        }
        self.cross = cross::check(&vss, &drs);
        let mut s = ConfigSnapshot { generation: self.generation, ..Default::default() };
        for (key, a) in &self.accepted {
            let at = (key.namespace.clone().unwrap_or_default(), key.name.clone());
            match &a.object {
                ConfigObject::Namespace(o) => s.namespaces.insert(at, o),
                ConfigObject::Pod(o) => s.pods.insert(at, o),
                ConfigObject::Service(o) => s.services.insert(at, o),
                ConfigObject::EndpointSlice(o) => s.endpoint_slices.insert(at, o),
                ConfigObject::VirtualService(o) => s.virtual_services.insert(at, o),
                ConfigObject::DestinationRule(o) => s.destination_rules.insert(at, o),
                ConfigObject::Gateway(o) => s.gateways.insert(at, o),
                ConfigObject::ServiceEntry(o) => s.service_entries.insert(at, o),
                ConfigObject::Sidecar(o) => s.sidecars.insert(at, o),
                ConfigObject::WorkloadEntry(o) => s.workload_entries.insert(at, o),
                ConfigObject::AuthorizationPolicy(o) => s.authorization_policies.insert(at, o),
                ConfigObject::PeerAuthentication(o) => s.peer_authentications.insert(at, o),
                ConfigObject::KubernetesGateway(o) => s.kubernetes_gateways.insert(at, o),
                ConfigObject::HttpRoute(o) => s.http_routes.insert(at, o),
            }
            s.origins.insert(key.clone(), a.origin.clone());
        }
        s.shadowed_hosts = self.cross.shadowed_hosts.clone();
        self.snapshot = Arc::new(s);
    }
}

/// Objects of one kind, ordered by namespace, then name.
#[derive(Debug)]
pub struct Objects<T> {
    map: BTreeMap<(String, String), Arc<T>>,
}

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Objects { map: BTreeMap::new() }
    }
}

impl<T> Objects<T> {
    fn insert(&mut self, at: (String, String), object: &Arc<T>) {
        self.map.insert(at, Arc::clone(object));
    }

    /// All objects, by namespace then name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.map.values()
    }

    /// Namespace "" for cluster-scoped kinds (Namespace).
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<T>> {
        self.map.get(&(namespace.to_string(), name.to_string()))
    }

    /// The objects of one namespace, by name.
    pub fn in_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        self.map.iter().filter(move |((ns, _), _)| ns == namespace).map(|(_, o)| o)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl<'a, T> IntoIterator for &'a Objects<T> {
    type Item = &'a Arc<T>;
    type IntoIter = std::collections::btree_map::Values<'a, (String, String), Arc<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.values()
    }
}

/// An immutable view of the configuration in force, grouped by kind. Iteration order is
/// stable: namespace, then name.
#[derive(Debug, Default)]
pub struct ConfigSnapshot {
    pub generation: u64,
    pub namespaces: Objects<Namespace>,
    pub pods: Objects<Pod>,
    pub services: Objects<Service>,
    pub endpoint_slices: Objects<EndpointSlice>,
    pub virtual_services: Objects<VirtualService>,
    pub destination_rules: Objects<DestinationRule>,
    pub gateways: Objects<Gateway>,
    pub service_entries: Objects<ServiceEntry>,
    pub sidecars: Objects<Sidecar>,
    pub workload_entries: Objects<WorkloadEntry>,
    pub authorization_policies: Objects<AuthorizationPolicy>,
    pub peer_authentications: Objects<PeerAuthentication>,
    /// Gateway API Gateways.
    pub kubernetes_gateways: Objects<KubernetesGateway>,
    pub http_routes: Objects<HttpRoute>,
    origins: BTreeMap<ObjectKey, Origin>,
    shadowed_hosts: BTreeMap<ObjectKey, BTreeSet<String>>,
}

impl ConfigSnapshot {
    /// Where an object in force came from (for messages that point at file:line).
    pub fn origin(&self, key: &ObjectKey) -> Option<&Origin> {
        self.origins.get(key)
    }

    /// Whether `host` of the mesh VirtualService `key` is owned by an older VirtualService
    /// (IST0109): translation must ignore this VirtualService's routes for that host.
    pub fn is_host_shadowed(&self, key: &ObjectKey, host: &str) -> bool {
        self.shadowed_hosts.get(key).is_some_and(|h| h.contains(host))
    }

    /// The ObjectKey of a VirtualService in this snapshot.
    pub fn virtual_service_key(vs: &VirtualService) -> ObjectKey {
        Kind::VirtualService.key(&vs.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(kind: &str, name: &str, origin: Origin, spec: serde_json::Value) -> RawObject {
        let (api_version, group) = match kind {
            "Namespace" => ("v1", ""),
            _ => ("networking.istio.io/v1", "networking.istio.io"),
        };
        let namespace = (kind != "Namespace").then(|| "ns".to_string());
        RawObject::from_value(
            ObjectKey { group: group.into(), kind: kind.into(), namespace, name: name.into() },
            api_version.into(),
            &json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": spec}),
            origin,
        )
    }

    fn file(line: usize) -> Origin {
        Origin::File { path: "c.yaml".into(), line }
    }

    fn k8s() -> Origin {
        Origin::Kubernetes { resource_version: "7".into() }
    }

    fn dr(name: &str, origin: Origin) -> RawObject {
        raw("DestinationRule", name, origin, json!({"host": name}))
    }

    #[test]
    fn reset_replaces_only_its_own_source() {
        let mut store = ConfigStore::new();
        assert!(store.apply(SourceId::Kubernetes, SourceEvent::Upsert(dr("from-k8s", k8s()))));
        assert!(store.apply(SourceId::File, SourceEvent::Reset(vec![dr("a", file(1)), dr("b", file(5))])));
        assert_eq!(store.snapshot().destination_rules.len(), 3);
        assert!(store.apply(SourceId::File, SourceEvent::Reset(vec![dr("a", file(1))])));
        let s = store.snapshot();
        assert!(s.destination_rules.get("ns", "from-k8s").is_some());
        assert!(s.destination_rules.get("ns", "a").is_some());
        assert!(s.destination_rules.get("ns", "b").is_none());
    }

    #[test]
    fn generation_counts_accepted_changes_only() {
        let mut store = ConfigStore::new();
        assert_eq!(store.generation(), 0);
        store.apply(SourceId::File, SourceEvent::Upsert(dr("a", file(1))));
        assert_eq!(store.generation(), 1);
        assert_eq!(store.snapshot().generation, 1);
        // The same object again: no change.
        assert!(!store.apply(SourceId::File, SourceEvent::Upsert(dr("a", file(1)))));
        // An unreadable document: a diagnostic, no change.
        assert!(
            !store.apply(SourceId::File, SourceEvent::Unreadable { origin: file(9), message: "bad".into() })
        );
        assert_eq!(store.diagnostics().len(), 1);
        // An invalid new object: a diagnostic, no change.
        let bad = raw(
            "DestinationRule",
            "b",
            file(12),
            json!({"host": "b", "subsets": [{"name": "v1"}, {"name": "v1"}]}),
        );
        assert!(!store.apply(SourceId::File, SourceEvent::Upsert(bad)));
        assert_eq!(store.generation(), 1);
        assert!(store.snapshot().destination_rules.get("ns", "b").is_none());
        assert_eq!(store.diagnostics().iter().filter(|d| d.is_error()).count(), 2);
        // Deleting the invalid object clears its diagnostics without a change.
        let key = dr("b", file(12)).key;
        assert!(!store.apply(SourceId::File, SourceEvent::Delete(key)));
        assert_eq!(store.diagnostics().len(), 1);
        // A real delete is a change.
        assert!(store.apply(SourceId::File, SourceEvent::Delete(dr("a", file(1)).key)));
        assert_eq!(store.generation(), 2);
        assert!(store.snapshot().destination_rules.is_empty());
    }

    #[test]
    fn snapshot_iteration_is_ordered_and_old_snapshots_stay_valid() {
        let mut store = ConfigStore::new();
        store.apply_all(SourceId::File, [dr("zeta", file(1)), dr("alpha", file(2))].map(SourceEvent::Upsert));
        let before = store.snapshot();
        let names: Vec<&str> = before.destination_rules.iter().map(|d| d.metadata.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        store.apply(SourceId::File, SourceEvent::Delete(dr("alpha", file(2)).key));
        assert_eq!(before.destination_rules.len(), 2, "a published snapshot never changes");
        assert_eq!(store.snapshot().destination_rules.len(), 1);
        let key = dr("zeta", file(1)).key;
        assert_eq!(store.snapshot().origin(&key), Some(&file(1)));
    }
}
