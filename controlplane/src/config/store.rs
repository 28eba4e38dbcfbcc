//! The config store: the last good version of every object, per [`ObjectKey`].
//!
//! Sources feed [`SourceEvent`]s in; each object is parsed and validated on arrival. A
//! valid object replaces the previous version; an invalid new version of an existing
//! object is rejected with diagnostics and the previous version stays in force; an
//! invalid new object is simply absent. Other objects are never affected. After every
//! batch that changed something, a new immutable [`ConfigSnapshot`] is published with the
//! next generation number.
//!
//! Publishing costs what changed, not what is there: the store applies each change to a
//! working snapshot (persistent maps, see `snapshot.rs`) and publishes a clone of it,
//! and the cross-object checks run again only when a VirtualService or DestinationRule
//! changed. A large batch (a relist) is parsed and validated on every core.

use super::diagnostic::Diagnostic;
use super::kinds::{ConfigObject, Kind};
use super::parse::{Checked, check};
use super::validate::cross::{self, CrossCheck, Entry};
use crate::source::{ObjectKey, Origin, RawObject, SourceEvent};
use std::collections::hash_map::{self, HashMap};
use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

pub use super::snapshot::{Change, ConfigSnapshot, Iter, Objects};

/// Which source an event came from, so a source's `Reset` replaces only what that source
/// sent before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceId {
    File,
    Kubernetes,
}

/// An object in force. Its source text is not kept (on a large mesh it would cost as much
/// memory as the typed objects); a digest of it tells an unchanged resend (a Kubernetes
/// relist, a touched file) from a change. Its origin is kept once, in the working
/// snapshot.
#[derive(Debug)]
struct Accepted {
    source: SourceId,
    digest: u64,
    object: ConfigObject,
    warnings: Vec<Diagnostic>,
}

/// A digest of what a source sent for an object (its API version and text). A source
/// writes the same object as the same text (serde_json's maps are ordered), so equal
/// objects give equal digests.
fn digest(raw: &RawObject) -> u64 {
    let mut h = DefaultHasher::new();
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

/// What can be worked out about an incoming object without changing the store: its digest,
/// and the outcome of parsing and validating it unless it is a resend. Independent per
/// object, so a relist prepares its objects on every core.
struct Prepared {
    digest: u64,
    checked: Option<Checked>,
}

/// Below this many objects per thread, spawning costs more than it saves.
const MIN_OBJECTS_PER_THREAD: usize = 512;

/// A Reset is taken in batches of this many objects, each prepared on every core and then
/// applied. Applying a batch frees its source text (where the source keeps no copy), and
/// the typed objects of the next batch reuse that memory: a relist's peak is not the
/// whole text plus all typed objects.
const RESET_BATCH: usize = 8192;

/// Keeps the last good configuration. Not thread-safe by itself: one task owns it and
/// hands out [`ConfigSnapshot`]s.
#[derive(Debug)]
pub struct ConfigStore {
    generation: u64,
    accepted: HashMap<ObjectKey, Accepted>,
    not_served: HashMap<ObjectKey, NotServed>,
    unreadable: BTreeMap<(SourceId, String), Diagnostic>,
    /// The findings of the last cross-object check.
    cross: Vec<Diagnostic>,
    /// A VirtualService or DestinationRule changed since the last cross-object check.
    cross_stale: bool,
    /// Every change is applied here; publishing clones it.
    working: ConfigSnapshot,
    snapshot: Arc<ConfigSnapshot>,
    counts: StoreCounts,
}

/// What happened to objects so far, for weftd's metrics (istiod's `pilot_k8s_cfg_events`,
/// `pilot_k8s_reg_events` and `galley_validation_*`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StoreCounts {
    /// Objects put in force, changed or taken out, by kind and event.
    pub events: BTreeMap<(Kind, ConfigEvent), u64>,
    /// Objects validated (Istio's webhook rules) and accepted.
    pub validation_passed: u64,
    /// Objects validated and refused.
    pub validation_failed: u64,
}

/// How an object in force changed, as istiod's event label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigEvent {
    Add,
    Update,
    Delete,
}

impl ConfigEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigEvent::Add => "add",
            ConfigEvent::Update => "update",
            ConfigEvent::Delete => "delete",
        }
    }
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
            accepted: HashMap::new(),
            not_served: HashMap::new(),
            unreadable: BTreeMap::new(),
            cross: Vec::new(),
            cross_stale: false,
            working: ConfigSnapshot::default(),
            snapshot: Arc::new(ConfigSnapshot::default()),
            counts: StoreCounts::default(),
        }
    }

    /// What happened to objects so far.
    pub fn counts(&self) -> &StoreCounts {
        &self.counts
    }

    fn count(&mut self, kind: Kind, event: ConfigEvent) {
        *self.counts.events.entry((kind, event)).or_default() += 1;
    }

    /// Applies one event; returns whether the served configuration changed (and so the
    /// generation went up).
    pub fn apply(&mut self, source: SourceId, event: SourceEvent) -> bool {
        self.apply_all(source, [event])
    }

    /// Applies a batch of events and publishes at most one new snapshot for it.
    pub fn apply_all(&mut self, source: SourceId, events: impl IntoIterator<Item = SourceEvent>) -> bool {
        let mut changed = false;
        let mut events = events.into_iter().peekable();
        while let Some(event) = events.next() {
            changed |= match event {
                SourceEvent::Upsert(raw) => {
                    // A run of upserts (a Kubernetes list streaming in) is prepared on
                    // every core.
                    let mut run = vec![raw];
                    while let Some(SourceEvent::Upsert(_)) = events.peek() {
                        let Some(SourceEvent::Upsert(raw)) = events.next() else { unreachable!("peeked") };
                        run.push(raw);
                    }
                    self.upsert_all(source, run)
                }
                // Nothing to change: whether to serve is the caller's to decide.
                SourceEvent::Synced => false,
                SourceEvent::Delete(key) => {
                    self.not_served.remove(&key);
                    self.forget(&key)
                }
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
            self.publish();
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
        all.extend(self.cross.iter().cloned());
        all.sort_by(Diagnostic::cmp_by_location);
        all
    }

    fn prepare(&self, raw: &RawObject) -> Prepared {
        let digest = digest(raw);
        let resend = match self.accepted.get(&raw.key) {
            Some(a) => a.digest == digest && self.origin(&raw.key, a) == Some(&raw.origin),
            None => self.not_served.get(&raw.key).is_some_and(|n| n.raw == *raw),
        };
        Prepared { digest, checked: (!resend).then(|| check(raw)) }
    }

    /// [`Self::prepare`] for a batch, spread over the cores.
    fn prepare_all(&self, objects: &[RawObject]) -> Vec<Prepared> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = cores.min(objects.len() / MIN_OBJECTS_PER_THREAD);
        if threads < 2 {
            return objects.iter().map(|raw| self.prepare(raw)).collect();
        }
        let prepare = |chunk: &[RawObject]| chunk.iter().map(|raw| self.prepare(raw)).collect::<Vec<_>>();
        let mut chunks = objects.chunks(objects.len().div_ceil(threads));
        std::thread::scope(|scope| {
            let first = chunks.next().unwrap_or_default();
            let others: Vec<_> = chunks.map(|chunk| scope.spawn(move || prepare(chunk))).collect();
            let mut all = prepare(first);
            for other in others {
                all.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            }
            all
        })
    }

    /// Takes in one object. `prepared` was worked out before the events ahead of this one
    /// in its batch were applied; the resend test is repeated against the store as it is
    /// now, so the outcome is as if the object came alone.
    fn upsert(&mut self, source: SourceId, raw: RawObject, prepared: Prepared) -> bool {
        let Prepared { digest, checked } = prepared;
        match self.accepted.get(&raw.key) {
            Some(a) if a.digest == digest && self.origin(&raw.key, a) == Some(&raw.origin) => {
                // Back to the version in force: a rejected version since is moot.
                self.not_served.remove(&raw.key);
                return false;
            }
            None if self.not_served.get(&raw.key).is_some_and(|n| n.raw == raw) => return false,
            _ => {}
        }
        let Checked { object, diagnostics } = checked.unwrap_or_else(|| check(&raw));
        if object.is_some() {
            self.counts.validation_passed += 1;
        } else if diagnostics.iter().any(Diagnostic::is_error) {
            self.counts.validation_failed += 1;
        }
        match object {
            Some(object) => {
                self.not_served.remove(&raw.key);
                self.accept(source, raw, digest, object, diagnostics)
            }
            None => {
                let mut diagnostics = diagnostics;
                if let Some(previous) = self.accepted.get(&raw.key).and_then(|a| self.origin(&raw.key, a))
                    && diagnostics.iter().any(Diagnostic::is_error)
                {
                    diagnostics.push(Diagnostic::warning(
                        &raw.key,
                        &raw.origin,
                        "",
                        format!(
                            "this version is rejected; the last good version (from {previous}) stays in force"
                        ),
                    ));
                }
                self.not_served.insert(raw.key.clone(), NotServed { source, raw, diagnostics });
                false
            }
        }
    }

    /// Puts a valid object in force; returns whether the served configuration changed.
    fn accept(
        &mut self,
        source: SourceId,
        raw: RawObject,
        digest: u64,
        object: ConfigObject,
        warnings: Vec<Diagnostic>,
    ) -> bool {
        let RawObject { key, origin, .. } = raw;
        let kind = object.kind();
        match self.accepted.entry(key) {
            hash_map::Entry::Occupied(mut entry) => {
                let same_origin = self.working.origin_of(kind, entry.key()) == Some(&origin);
                let a = entry.get_mut();
                let same_object = a.object == object;
                // An equal object keeps its `Arc`: translation tells what changed by
                // pointer.
                if !same_object {
                    a.object = object;
                }
                (a.source, a.digest, a.warnings) = (source, digest, warnings);
                if same_object && same_origin {
                    return false;
                }
                self.working.insert(entry.key(), &entry.get().object, &origin);
                self.count(kind, ConfigEvent::Update);
            }
            hash_map::Entry::Vacant(entry) => {
                self.working.insert(entry.key(), &object, &origin);
                entry.insert(Accepted { source, digest, object, warnings });
                self.count(kind, ConfigEvent::Add);
            }
        }
        self.cross_stale |= is_routing(kind);
        true
    }

    /// Takes an object out of force; returns whether it was in force.
    fn forget(&mut self, key: &ObjectKey) -> bool {
        let Some(a) = self.accepted.remove(key) else { return false };
        let kind = a.object.kind();
        self.working.remove(key, kind);
        self.count(kind, ConfigEvent::Delete);
        self.cross_stale |= is_routing(kind);
        true
    }

    /// Where the object in force under `key` came from.
    fn origin(&self, key: &ObjectKey, accepted: &Accepted) -> Option<&Origin> {
        self.working.origin_of(accepted.object.kind(), key)
    }

    fn reset(&mut self, source: SourceId, objects: Vec<RawObject>) -> bool {
        let mut changed = false;
        // Nothing to replace at the first Reset: skip indexing a large one for nothing.
        if !self.accepted.is_empty() || !self.not_served.is_empty() {
            let keep: HashSet<&ObjectKey> = objects.iter().map(|o| &o.key).collect();
            let stale: Vec<ObjectKey> = self
                .accepted
                .iter()
                .filter(|(k, a)| a.source == source && !keep.contains(k))
                .map(|(k, _)| k.clone())
                .collect();
            self.not_served.retain(|k, n| n.source != source || keep.contains(k));
            for k in &stale {
                changed |= self.forget(k);
            }
        }
        self.unreadable.retain(|(s, _), _| *s != source);
        let mut objects = objects.into_iter();
        loop {
            let batch: Vec<RawObject> = objects.by_ref().take(RESET_BATCH).collect();
            if batch.is_empty() {
                return changed;
            }
            changed |= self.upsert_all(source, batch);
        }
    }

    /// Takes in a batch of objects, prepared on every core; returns whether the served
    /// configuration changed.
    fn upsert_all(&mut self, source: SourceId, batch: Vec<RawObject>) -> bool {
        let prepared = self.prepare_all(&batch);
        let mut changed = false;
        for (raw, prepared) in batch.into_iter().zip(prepared) {
            changed |= self.upsert(source, raw, prepared);
        }
        changed
    }

    fn publish(&mut self) {
        if std::mem::take(&mut self.cross_stale) {
            let CrossCheck { diagnostics, shadowed_hosts } = cross_check(&self.working);
            self.cross = diagnostics;
            self.working.set_shadowed_hosts(shadowed_hosts);
        }
        self.working.generation = self.generation;
        self.snapshot = Arc::new(self.working.clone());
    }
}

/// The kinds the cross-object checks read.
fn is_routing(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::VirtualService
            | Kind::DestinationRule
            | Kind::HttpRoute
            | Kind::ReferenceGrant
            | Kind::KubernetesGateway
            | Kind::Namespace
    )
}

/// The cross-object checks over the VirtualServices, DestinationRules, HTTPRoutes,
/// ReferenceGrants, Gateway API Gateways and Namespaces of `snapshot`.
fn cross_check(snapshot: &ConfigSnapshot) -> CrossCheck {
    /// Each object with its full key (the checks name objects by key).
    fn keyed<T>(kind: Kind, objects: &Objects<T>) -> Vec<(ObjectKey, &Origin, &T)> {
        objects
            .entries()
            .map(|((ns, name), object, origin)| {
                let key = ObjectKey {
                    group: kind.group().to_owned(),
                    kind: kind.name().to_owned(),
                    namespace: Some(ns.clone()),
                    name: name.clone(),
                };
                (key, origin, &**object)
            })
            .collect()
    }
    fn entries<'a, T>(keyed: &'a [(ObjectKey, &'a Origin, &'a T)]) -> Vec<Entry<'a, T>> {
        keyed.iter().map(|(key, origin, object)| Entry { key, origin, object: *object }).collect()
    }
    let vss = keyed(Kind::VirtualService, &snapshot.virtual_services);
    let drs = keyed(Kind::DestinationRule, &snapshot.destination_rules);
    let routes = keyed(Kind::HttpRoute, &snapshot.http_routes);
    let gateway_api = cross::GatewayApi {
        grants: &snapshot.reference_grants,
        gateways: &snapshot.kubernetes_gateways,
        namespaces: &snapshot.namespaces,
    };
    cross::check(&entries(&vss), &entries(&drs), &entries(&routes), &gateway_api)
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

    fn dr_in(namespace: &str, name: &str, host: &str) -> RawObject {
        let mut o = dr(name, k8s());
        o.key.namespace = Some(namespace.into());
        o.json = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                        "metadata": {"name": name, "namespace": namespace}, "spec": {"host": host}})
        .to_string()
        .into();
        o
    }

    fn vs(name: &str, line: usize, host: &str) -> RawObject {
        raw(
            "VirtualService",
            name,
            file(line),
            json!({"hosts": [host], "http": [{"route": [{"destination": {"host": host}}]}]}),
        )
    }

    #[test]
    fn unchanged_objects_keep_their_arc_and_changes_are_listed() {
        let mut store = ConfigStore::new();
        store.apply_all(SourceId::Kubernetes, [dr("a", k8s()), dr("b", k8s())].map(SourceEvent::Upsert));
        let before = store.snapshot();
        let changed = raw("DestinationRule", "b", k8s(), json!({"host": "other"}));
        store.apply_all(SourceId::Kubernetes, [changed, dr("c", k8s())].map(SourceEvent::Upsert));
        let after = store.snapshot();

        let (a0, a1) = (
            before.destination_rules.get("ns", "a").unwrap(),
            after.destination_rules.get("ns", "a").unwrap(),
        );
        assert!(Arc::ptr_eq(a0, a1), "an untouched object is the same Arc in the next snapshot");
        assert!(after.namespaces.same_as(&before.namespaces));
        assert!(!after.destination_rules.same_as(&before.destination_rules));
        let changes: Vec<(&str, bool, bool)> = after
            .destination_rules
            .changes_since(&before.destination_rules)
            .map(|((_, name), old, new)| (name.as_str(), old.is_some(), new.is_some()))
            .collect();
        assert_eq!(changes, [("b", true, true), ("c", false, true)]);
        let gone: Vec<_> = before.destination_rules.changes_since(&after.destination_rules).collect();
        assert_eq!(gone.len(), 2, "the other way round, c is removed and b replaced");

        // A new resourceVersion of an identical object: a new origin, the same Arc.
        let bumped = Origin::Kubernetes { resource_version: "8".into() };
        assert!(store.apply(SourceId::Kubernetes, SourceEvent::Upsert(dr("a", bumped.clone()))));
        let later = store.snapshot();
        assert!(Arc::ptr_eq(a0, later.destination_rules.get("ns", "a").unwrap()));
        assert_eq!(later.destination_rules.changes_since(&after.destination_rules).count(), 0);
        assert_eq!(later.origin(&dr("a", k8s()).key), Some(&bumped));
    }

    #[test]
    fn in_namespace_reads_one_namespace_only() {
        let mut store = ConfigStore::new();
        let objects =
            [dr_in("b", "x", "h"), dr_in("a", "y", "h"), dr_in("ab", "x", "h"), dr_in("a", "x", "h")];
        store.apply(SourceId::Kubernetes, SourceEvent::Reset(objects.into()));
        let s = store.snapshot();
        let names =
            |ns| s.destination_rules.in_namespace(ns).map(|d| d.metadata.name.clone()).collect::<Vec<_>>();
        assert_eq!(names("a"), ["x", "y"]);
        assert_eq!(names("ab"), ["x"]);
        assert!(names("c").is_empty());
        assert!(names("").is_empty());
    }

    #[test]
    fn cross_checks_follow_virtual_service_changes() {
        let mut store = ConfigStore::new();
        store.apply_all(
            SourceId::File,
            [vs("first", 1, "reviews"), vs("second", 9, "reviews")].map(SourceEvent::Upsert),
        );
        let second = vs("second", 9, "reviews").key;
        let ist0109 =
            |store: &ConfigStore| store.diagnostics().iter().filter(|d| d.code == Some("IST0109")).count();
        assert!(store.snapshot().is_host_shadowed(&second, "reviews"));
        assert_eq!(ist0109(&store), 2);

        // Another kind changes: the findings stay.
        store.apply(SourceId::File, SourceEvent::Upsert(raw("Namespace", "ns", file(20), json!({}))));
        assert!(store.snapshot().is_host_shadowed(&second, "reviews"));
        assert_eq!(ist0109(&store), 2);

        store.apply(SourceId::File, SourceEvent::Delete(vs("first", 1, "reviews").key));
        assert!(!store.snapshot().is_host_shadowed(&second, "reviews"));
        assert_eq!(ist0109(&store), 0);
    }

    #[test]
    fn a_large_reset_has_the_outcome_of_one_object_at_a_time() {
        // Enough objects to be checked on several threads, a few of them invalid.
        let objects: Vec<RawObject> = (0..3 * MIN_OBJECTS_PER_THREAD)
            .map(|i| match i % 500 {
                7 => raw("DestinationRule", &format!("d{i}"), k8s(), json!({"host": ""})),
                _ => dr(&format!("d{i}"), k8s()),
            })
            .collect();
        let mut at_once = ConfigStore::new();
        at_once.apply(SourceId::Kubernetes, SourceEvent::Reset(objects.clone()));
        let mut one_by_one = ConfigStore::new();
        one_by_one.apply_all(SourceId::Kubernetes, objects.into_iter().map(SourceEvent::Upsert));

        let (a, b) = (at_once.snapshot(), one_by_one.snapshot());
        assert_eq!(a.destination_rules.len(), 3 * MIN_OBJECTS_PER_THREAD - 4);
        assert!(
            a.destination_rules
                .iter()
                .map(|d| &d.metadata.name)
                .eq(b.destination_rules.iter().map(|d| &d.metadata.name))
        );
        assert_eq!(at_once.diagnostics(), one_by_one.diagnostics());
        assert_eq!(at_once.diagnostics().iter().filter(|d| d.is_error()).count(), 4);
    }
}
