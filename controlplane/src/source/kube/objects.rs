//! What the Kubernetes source has sent, per watched kind: each object's name and
//! resourceVersion — not the object, which the config store parses and keeps in its own
//! form — turning watcher events into [`SourceEvent`]s.
//!
//! A list streams in: each listed object goes out as an Upsert as it arrives (unless the
//! store already holds that resourceVersion, as after a relist), so no kind's objects are
//! ever held here as a whole. When a kind's list is complete, what the previous list or
//! watch had and this list does not goes out as Deletes. Once every kind has been listed
//! once or refused by the server (a missing CRD must not hold the others back),
//! [`SourceEvent::Synced`] says the store now holds the cluster's state; weftd serves
//! nothing before it, so no proxy ever sees half a cluster.

use super::WatchedKind;
use crate::source::{ObjectKey, Origin, RawObject, SourceEvent};
use ::kube::{api::DynamicObject, core::TypeMeta};
use std::collections::{HashMap, HashSet};
use tracing::warn;

/// An object's namespace (`None` for a cluster-scoped kind) and name, within its kind.
type Name = (Option<String>, String);

pub(super) struct Objects {
    kinds: Vec<KindObjects>,
    /// [`SourceEvent::Synced`] has been sent.
    synced: bool,
}

struct KindObjects {
    kind: WatchedKind,
    /// What the store holds of this kind: each object's resourceVersion, which the API
    /// server changes on every write (a hash map: a list inserts 100,000 pods, and ordering
    /// four strings per comparison cost more than the rest of the source).
    current: HashMap<Name, String>,
    /// The names seen by a list in progress (between the watcher's `Init` and `InitDone`).
    listing: Option<HashSet<Name>>,
    /// Listed once, or its list refused by the server: Synced need not wait for it.
    settled: bool,
}

impl Objects {
    pub fn new(kinds: &[WatchedKind]) -> Objects {
        let kinds = kinds
            .iter()
            .map(|&kind| KindObjects { kind, current: HashMap::new(), listing: None, settled: false })
            .collect();
        Objects { kinds, synced: false }
    }

    /// A (re)list of kind `index` begins.
    pub fn init(&mut self, index: usize) {
        self.kinds[index].listing = Some(HashSet::new());
    }

    /// An object of the list in progress: sent on unless the store holds it already.
    pub fn init_apply(&mut self, index: usize, object: DynamicObject) -> Option<SourceEvent> {
        let kind = &mut self.kinds[index];
        let (name, resource_version) = identify(&kind.kind, &object)?;
        kind.listing.get_or_insert_default().insert(name.clone());
        kind.upsert(name, resource_version, object)
    }

    /// The list of kind `index` is complete: what the kind had and the list did not is
    /// deleted, and once every kind is settled the source is synced.
    pub fn init_done(&mut self, index: usize) -> Vec<SourceEvent> {
        let kind = &mut self.kinds[index];
        let listed = kind.listing.take().unwrap_or_default();
        let mut out: Vec<SourceEvent> = Vec::new();
        kind.current.retain(|name, _| {
            let keep = listed.contains(name);
            if !keep {
                out.push(SourceEvent::Delete(key(&kind.kind, name.clone())));
            }
            keep
        });
        kind.settled = true;
        out.extend(self.synced_if_ready());
        out
    }

    /// The server answered a list of kind `index` with an error (404 for a missing CRD,
    /// 403 for missing RBAC): the kind keeps what it had and stops holding back Synced.
    pub fn list_refused(&mut self, index: usize) -> Option<SourceEvent> {
        let kind = &mut self.kinds[index];
        kind.listing = None;
        kind.settled = true;
        self.synced_if_ready()
    }

    /// An object was created or changed.
    pub fn apply(&mut self, index: usize, object: DynamicObject) -> Option<SourceEvent> {
        let kind = &mut self.kinds[index];
        let (name, resource_version) = identify(&kind.kind, &object)?;
        kind.upsert(name, resource_version, object)
    }

    /// An object was deleted.
    pub fn delete(&mut self, index: usize, object: DynamicObject) -> Option<SourceEvent> {
        let kind = &mut self.kinds[index];
        let (name, _) = identify(&kind.kind, &object)?;
        kind.current.remove(&name)?;
        Some(SourceEvent::Delete(key(&kind.kind, name)))
    }

    fn synced_if_ready(&mut self) -> Option<SourceEvent> {
        if self.synced || !self.kinds.iter().all(|kind| kind.settled) {
            return None;
        }
        self.synced = true;
        Some(SourceEvent::Synced)
    }
}

impl KindObjects {
    /// Records the object's version and sends it on, unless the store holds that version.
    fn upsert(&mut self, name: Name, resource_version: String, object: DynamicObject) -> Option<SourceEvent> {
        if self.current.get(&name) == Some(&resource_version) {
            return None;
        }
        let raw = raw_object(&self.kind, key(&self.kind, name.clone()), resource_version.clone(), object)?;
        self.current.insert(name, resource_version);
        Some(SourceEvent::Upsert(raw))
    }
}

/// The object's name within its kind and its resourceVersion.
fn identify(kind: &WatchedKind, object: &DynamicObject) -> Option<(Name, String)> {
    let Some(name) = object.metadata.name.clone() else {
        warn!(kind = kind.kind, "ignoring an object without metadata.name from the API server");
        return None;
    };
    let namespace = if kind.namespaced { object.metadata.namespace.clone() } else { None };
    Some(((namespace, name), object.metadata.resource_version.clone().unwrap_or_default()))
}

fn key(kind: &WatchedKind, (namespace, name): Name) -> ObjectKey {
    ObjectKey { group: kind.group.to_owned(), kind: kind.kind.to_owned(), namespace, name }
}

/// The object as the source forwards it: the whole object, as the server sent it, except
/// for two fields.
fn raw_object(
    kind: &WatchedKind,
    key: ObjectKey,
    resource_version: String,
    mut object: DynamicObject,
) -> Option<RawObject> {
    // Server-side apply's bookkeeping: often bigger than the spec, and nothing reads it.
    object.metadata.managed_fields = None;
    // The items of a built-in kind's list come without `apiVersion` and `kind`
    // (kubernetes/kubernetes#3030). The server converts every object to the version we
    // watch, so the table says what they are.
    let api_version = kind.api_version();
    object.types = Some(TypeMeta { api_version: api_version.clone(), kind: kind.kind.to_owned() });
    // Straight to compact text, never a `serde_json::Value` tree.
    let json = match serde_json::to_string(&object) {
        Ok(json) => json.into(),
        Err(error) => {
            warn!(object = %key, %error, "ignoring an object that does not serialise back to JSON");
            return None;
        }
    };
    Some(RawObject { key, api_version, json, origin: Origin::Kubernetes { resource_version } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kube::WATCHED_KINDS;
    use serde_json::json;

    fn index(kind: &str, group: &str) -> usize {
        WATCHED_KINDS.iter().position(|k| k.kind == kind && k.group == group).unwrap()
    }

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn pod(name: &str, rv: &str) -> DynamicObject {
        // As in a list: no apiVersion or kind.
        object(json!({
            "metadata": { "name": name, "namespace": "ns", "resourceVersion": rv,
                          "managedFields": [{ "manager": "kubectl" }] },
            "spec": { "nodeName": "n1" },
        }))
    }

    /// Each event as text: "upsert Pod/ns/a", "delete Pod/ns/b", "synced".
    fn describe(events: impl IntoIterator<Item = SourceEvent>) -> Vec<String> {
        events
            .into_iter()
            .map(|event| match event {
                SourceEvent::Upsert(raw) => format!("upsert {}", raw.key),
                SourceEvent::Delete(key) => format!("delete {key}"),
                SourceEvent::Synced => "synced".to_owned(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn lists_stream_in_and_synced_waits_for_every_kind() {
        let kinds = &WATCHED_KINDS[..2];
        let (namespaces, pods) = (index("Namespace", ""), index("Pod", ""));
        assert!(namespaces < 2 && pods < 2, "the table starts with Namespace and Pod");
        let mut objects = Objects::new(kinds);

        objects.init(pods);
        assert_eq!(describe(objects.init_apply(pods, pod("a", "5"))), ["upsert Pod/ns/a"]);
        assert!(objects.init_done(pods).is_empty(), "namespaces are not listed yet");
        assert_eq!(describe(objects.apply(pods, pod("b", "6"))), ["upsert Pod/ns/b"]);
        assert_eq!(describe(objects.list_refused(namespaces)), ["synced"]);
        assert!(objects.list_refused(namespaces).is_none(), "synced once");

        let Some(SourceEvent::Upsert(raw)) = objects.apply(pods, pod("a", "7")) else {
            panic!("expected an Upsert")
        };
        assert_eq!(
            raw.key,
            ObjectKey {
                group: "".into(),
                kind: "Pod".into(),
                namespace: Some("ns".into()),
                name: "a".into()
            }
        );
        assert_eq!(raw.api_version, "v1");
        let value = raw.to_value().unwrap();
        assert_eq!(value["kind"], "Pod");
        assert_eq!(value["apiVersion"], "v1");
        assert_eq!(value["spec"]["nodeName"], "n1");
        assert!(value["metadata"].get("managedFields").is_none());
        assert_eq!(raw.origin, Origin::Kubernetes { resource_version: "7".into() });
        assert!(objects.apply(pods, pod("a", "7")).is_none(), "an unchanged object is not sent again");

        assert_eq!(describe(objects.delete(pods, pod("b", "8"))), ["delete Pod/ns/b"]);
        assert!(objects.delete(pods, pod("b", "8")).is_none(), "nothing to delete twice");

        // A relist: "a" unchanged is not sent again, "c" is new, and "d" (seen before the
        // relist, gone from it) is deleted when the list is complete.
        assert_eq!(describe(objects.apply(pods, pod("d", "9"))), ["upsert Pod/ns/d"]);
        objects.init(pods);
        assert!(objects.init_apply(pods, pod("a", "7")).is_none());
        assert_eq!(describe(objects.init_apply(pods, pod("c", "10"))), ["upsert Pod/ns/c"]);
        assert_eq!(describe(objects.init_done(pods)), ["delete Pod/ns/d"]);
    }

    #[test]
    fn cluster_scoped_objects_have_no_namespace() {
        let namespaces = index("Namespace", "");
        let mut objects = Objects::new(WATCHED_KINDS);
        for i in 0..WATCHED_KINDS.len() {
            objects.list_refused(i);
        }
        let namespace = object(
            json!({ "metadata": { "name": "bookinfo", "namespace": "ignored", "resourceVersion": "3" } }),
        );
        let Some(SourceEvent::Upsert(raw)) = objects.apply(namespaces, namespace) else {
            panic!("expected an Upsert")
        };
        assert_eq!(raw.key.namespace, None);
        assert_eq!(raw.key.to_string(), "Namespace/bookinfo");
    }
}
