//! What translation reads: [`ConfigSnapshot`], the configuration in force grouped by kind,
//! each kind an [`Objects`] map ordered by namespace, then name.
//!
//! The maps are persistent (`imbl::OrdMap`, a B+ tree whose nodes are shared between
//! versions). The store keeps one working snapshot, applies each change to it in
//! O(log n), and publishes a clone, which costs O(1) per map. Consecutive snapshots share
//! every node no change touched: an unchanged object keeps its `Arc`, an unchanged kind
//! is [`Objects::same_as`] its predecessor, and [`Objects::changes_since`] visits only
//! what differs.

use super::kinds::*;
use crate::source::{ObjectKey, Origin};
use equivalent::{Comparable, Equivalent};
use imbl::OrdMap;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// An object in force and where it came from. The origin lives here rather than in a map
/// of its own keyed by [`ObjectKey`]: at 100k objects a second map would cost another
/// copy of every key and another tree insert per change.
struct Entry<T> {
    object: Arc<T>,
    origin: Origin,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry { object: Arc::clone(&self.object), origin: self.origin.clone() }
    }
}

/// Entries are equal when they hold the same `Arc`, which is what
/// [`Objects::changes_since`] reports: `imbl`'s diff compares values with `==`, and a deep
/// comparison would cost as much as the objects are big. A new origin alone (a
/// resourceVersion bump with an identical object) is not a change of the object.
impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.object, &other.object)
    }
}

/// A `(namespace, name)` key borrowed, to look one up without building two `String`s.
struct At<'a>(&'a str, &'a str);

impl Equivalent<(String, String)> for At<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

impl Comparable<(String, String)> for At<'_> {
    fn compare(&self, key: &(String, String)) -> Ordering {
        self.0.cmp(&key.0).then_with(|| self.1.cmp(&key.1))
    }
}

/// Objects of one kind, ordered by namespace, then name. Cloning is O(1).
pub struct Objects<T> {
    map: OrdMap<(String, String), Entry<T>>,
}

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Objects { map: OrdMap::new() }
    }
}

impl<T> Clone for Objects<T> {
    fn clone(&self) -> Self {
        Objects { map: self.map.clone() }
    }
}

impl<T: fmt::Debug> fmt::Debug for Objects<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.map.iter().map(|(at, e)| (at, &e.object))).finish()
    }
}

impl Objects<ReferenceGrant> {
    /// Whether an HTTPRoute in `route_ns` may refer to the Service `namespace/name`: its
    /// own namespace's always, another's only if a grant there allows it (a grant lives in
    /// the namespace it opens, so this scans only that namespace's, without allocating).
    pub fn lets_route_refer_to_service(&self, route_ns: &str, namespace: &str, name: &str) -> bool {
        namespace == route_ns
            || self.in_namespace(namespace).any(|g| {
                g.allows(gateway_api::GroupKind::HTTP_ROUTE, route_ns, gateway_api::GroupKind::SERVICE, name)
            })
    }
}

impl<T> Objects<T> {
    /// All objects, by namespace then name.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter(self.map.values())
    }

    /// Namespace "" for cluster-scoped kinds (Namespace).
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<T>> {
        self.map.get(&At(namespace, name)).map(|e| &e.object)
    }

    /// The objects of one namespace, by name.
    pub fn in_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        self.map
            .range(At(namespace, "")..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, e)| &e.object)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// True when the two are known to hold the same objects: one is a snapshot's copy of
    /// the other and no change touched this kind in between. False says nothing.
    pub fn same_as(&self, other: &Objects<T>) -> bool {
        self.map.ptr_eq(&other.map)
    }

    /// What changed from `older` to `self`, by namespace then name: `(key, old, new)` for
    /// every object added (`old` is `None`), removed (`new` is `None`) or replaced by
    /// another `Arc`. Cost follows the size of the change when the two share structure
    /// (consecutive snapshots do), the size of both otherwise.
    pub fn changes_since<'a>(&'a self, older: &'a Objects<T>) -> impl Iterator<Item = Change<'a, T>> {
        use imbl::ordmap::DiffItem;
        older.map.diff(&self.map).map(|item| match item {
            DiffItem::Add(at, new) => (at, None, Some(&new.object)),
            DiffItem::Update { old: (at, old), new: (_, new) } => (at, Some(&old.object), Some(&new.object)),
            DiffItem::Remove(at, old) => (at, Some(&old.object), None),
        })
    }

    /// Each object with its key and origin, by namespace then name.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&(String, String), &Arc<T>, &Origin)> {
        self.map.iter().map(|(at, e)| (at, &e.object, &e.origin))
    }

    fn origin(&self, namespace: &str, name: &str) -> Option<&Origin> {
        self.map.get(&At(namespace, name)).map(|e| &e.origin)
    }

    fn insert(&mut self, namespace: &str, name: &str, object: &Arc<T>, origin: &Origin) {
        let entry = Entry { object: Arc::clone(object), origin: origin.clone() };
        // Replacing in place keeps the key's strings: no allocation for a changed object.
        match self.map.get_mut(&At(namespace, name)) {
            Some(slot) => *slot = entry,
            None => {
                self.map.insert((namespace.to_owned(), name.to_owned()), entry);
            }
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        self.map.remove(&At(namespace, name));
    }
}

/// One entry of [`Objects::changes_since`]: `((namespace, name), old, new)`.
pub type Change<'a, T> = (&'a (String, String), Option<&'a Arc<T>>, Option<&'a Arc<T>>);

/// The objects of one kind, by namespace then name.
pub struct Iter<'a, T>(
    imbl::ordmap::Values<'a, (String, String), Entry<T>, imbl::shared_ptr::DefaultSharedPtr>,
);

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a Arc<T>;

    fn next(&mut self) -> Option<&'a Arc<T>> {
        self.0.next().map(|e| &e.object)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<T> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|e| &e.object)
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}

impl<'a, T> IntoIterator for &'a Objects<T> {
    type Item = &'a Arc<T>;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// An immutable view of the configuration in force, grouped by kind. Iteration order is
/// stable: namespace, then name. Cloning is cheap (O(1) per kind).
#[derive(Debug, Default, Clone)]
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
    /// Gateway API ReferenceGrants, in the namespace of what they let others refer to.
    pub reference_grants: Objects<ReferenceGrant>,
    /// Shared: it changes only when a VirtualService or DestinationRule does.
    shadowed_hosts: Arc<BTreeMap<ObjectKey, BTreeSet<String>>>,
}

impl ConfigSnapshot {
    /// Where an object in force came from (for messages that point at file:line).
    pub fn origin(&self, key: &ObjectKey) -> Option<&Origin> {
        match Kind::lookup(&key.group, &key.kind) {
            KindLookup::Supported(kind) => self.origin_of(kind, key),
            _ => None,
        }
    }

    /// [`Self::origin`] of an object whose kind the caller knows.
    pub(super) fn origin_of(&self, kind: Kind, key: &ObjectKey) -> Option<&Origin> {
        let (ns, name) = (key.namespace.as_deref().unwrap_or_default(), key.name.as_str());
        match kind {
            Kind::Namespace => self.namespaces.origin(ns, name),
            Kind::Pod => self.pods.origin(ns, name),
            Kind::Service => self.services.origin(ns, name),
            Kind::EndpointSlice => self.endpoint_slices.origin(ns, name),
            Kind::VirtualService => self.virtual_services.origin(ns, name),
            Kind::DestinationRule => self.destination_rules.origin(ns, name),
            Kind::Gateway => self.gateways.origin(ns, name),
            Kind::ServiceEntry => self.service_entries.origin(ns, name),
            Kind::Sidecar => self.sidecars.origin(ns, name),
            Kind::WorkloadEntry => self.workload_entries.origin(ns, name),
            Kind::AuthorizationPolicy => self.authorization_policies.origin(ns, name),
            Kind::PeerAuthentication => self.peer_authentications.origin(ns, name),
            Kind::KubernetesGateway => self.kubernetes_gateways.origin(ns, name),
            Kind::HttpRoute => self.http_routes.origin(ns, name),
            Kind::ReferenceGrant => self.reference_grants.origin(ns, name),
        }
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

    /// Puts `object` in force under `key`, replacing what was there.
    pub(super) fn insert(&mut self, key: &ObjectKey, object: &ConfigObject, origin: &Origin) {
        let (ns, name) = (key.namespace.as_deref().unwrap_or_default(), key.name.as_str());
        match object {
            ConfigObject::Namespace(o) => self.namespaces.insert(ns, name, o, origin),
            ConfigObject::Pod(o) => self.pods.insert(ns, name, o, origin),
            ConfigObject::Service(o) => self.services.insert(ns, name, o, origin),
            ConfigObject::EndpointSlice(o) => self.endpoint_slices.insert(ns, name, o, origin),
            ConfigObject::VirtualService(o) => self.virtual_services.insert(ns, name, o, origin),
            ConfigObject::DestinationRule(o) => self.destination_rules.insert(ns, name, o, origin),
            ConfigObject::Gateway(o) => self.gateways.insert(ns, name, o, origin),
            ConfigObject::ServiceEntry(o) => self.service_entries.insert(ns, name, o, origin),
            ConfigObject::Sidecar(o) => self.sidecars.insert(ns, name, o, origin),
            ConfigObject::WorkloadEntry(o) => self.workload_entries.insert(ns, name, o, origin),
            ConfigObject::AuthorizationPolicy(o) => self.authorization_policies.insert(ns, name, o, origin),
            ConfigObject::PeerAuthentication(o) => self.peer_authentications.insert(ns, name, o, origin),
            ConfigObject::KubernetesGateway(o) => self.kubernetes_gateways.insert(ns, name, o, origin),
            ConfigObject::HttpRoute(o) => self.http_routes.insert(ns, name, o, origin),
            ConfigObject::ReferenceGrant(o) => self.reference_grants.insert(ns, name, o, origin),
        }
    }

    /// Takes the object of `kind` under `key` out of force.
    pub(super) fn remove(&mut self, key: &ObjectKey, kind: Kind) {
        let (ns, name) = (key.namespace.as_deref().unwrap_or_default(), key.name.as_str());
        match kind {
            Kind::Namespace => self.namespaces.remove(ns, name),
            Kind::Pod => self.pods.remove(ns, name),
            Kind::Service => self.services.remove(ns, name),
            Kind::EndpointSlice => self.endpoint_slices.remove(ns, name),
            Kind::VirtualService => self.virtual_services.remove(ns, name),
            Kind::DestinationRule => self.destination_rules.remove(ns, name),
            Kind::Gateway => self.gateways.remove(ns, name),
            Kind::ServiceEntry => self.service_entries.remove(ns, name),
            Kind::Sidecar => self.sidecars.remove(ns, name),
            Kind::WorkloadEntry => self.workload_entries.remove(ns, name),
            Kind::AuthorizationPolicy => self.authorization_policies.remove(ns, name),
            Kind::PeerAuthentication => self.peer_authentications.remove(ns, name),
            Kind::KubernetesGateway => self.kubernetes_gateways.remove(ns, name),
            Kind::HttpRoute => self.http_routes.remove(ns, name),
            Kind::ReferenceGrant => self.reference_grants.remove(ns, name),
        }
    }

    pub(super) fn set_shadowed_hosts(&mut self, shadowed: BTreeMap<ObjectKey, BTreeSet<String>>) {
        self.shadowed_hosts = Arc::new(shadowed);
    }
}
