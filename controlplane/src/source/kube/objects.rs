//! The Kubernetes source's copy of what it has sent: the current objects of every watched
//! kind, turned from watcher events into [`SourceEvent`]s.
//!
//! [`SourceEvent::Reset`] replaces everything a source sent before, but a watcher relists
//! one kind at a time (at start, and after `410 Gone`). So the source keeps each kind's
//! current objects here and answers a kind's relist with a Reset of *all* kinds' objects:
//! the config store sees one complete set without knowing about kinds, and `mod.rs` needs
//! no per-kind Reset. The cost is a copy of the watched objects in memory (compact JSON
//! text without `managedFields`, shared with the Resets and Upserts sent, not copied into
//! them), and a full Reset per relist, which is rare.
//!
//! At start nothing is sent until every kind has been listed once or the server has
//! refused its list (a missing CRD must not hold the others back); then one Reset carries
//! them all, instead of one growing Reset per kind.

use super::WatchedKind;
use crate::source::{ObjectKey, Origin, RawObject, SourceEvent};
use ::kube::{api::DynamicObject, core::TypeMeta};
use std::collections::BTreeMap;
use tracing::warn;

pub(super) struct Objects {
    kinds: Vec<KindObjects>,
    /// The first Reset has been sent: changes are forwarded from now on.
    started: bool,
}

struct KindObjects {
    kind: WatchedKind,
    current: BTreeMap<ObjectKey, RawObject>,
    /// A list in progress (between the watcher's `Init` and `InitDone`).
    listing: Option<BTreeMap<ObjectKey, RawObject>>,
    /// Listed once, or its list refused by the server: the first Reset need not wait for it.
    settled: bool,
}

impl Objects {
    pub fn new(kinds: &[WatchedKind]) -> Objects {
        let kinds = kinds
            .iter()
            .map(|&kind| KindObjects { kind, current: BTreeMap::new(), listing: None, settled: false })
            .collect();
        Objects { kinds, started: false }
    }

    /// A (re)list of kind `index` begins.
    pub fn init(&mut self, index: usize) {
        self.kinds[index].listing = Some(BTreeMap::new());
    }

    /// An object of the list in progress.
    pub fn init_apply(&mut self, index: usize, object: DynamicObject) {
        let kind = &mut self.kinds[index];
        if let Some(object) = raw_object(&kind.kind, object) {
            kind.listing.get_or_insert_default().insert(object.key.clone(), object);
        }
    }

    /// The list of kind `index` is complete: its objects replace the kind's, and the whole
    /// set goes out as a Reset (once every kind is settled).
    pub fn init_done(&mut self, index: usize) -> Option<SourceEvent> {
        let kind = &mut self.kinds[index];
        kind.current = kind.listing.take().unwrap_or_default();
        kind.settled = true;
        self.reset_if_ready()
    }

    /// The server answered a list of kind `index` with an error (404 for a missing CRD,
    /// 403 for missing RBAC): the kind keeps what it had and stops holding back the start.
    pub fn list_refused(&mut self, index: usize) -> Option<SourceEvent> {
        let kind = &mut self.kinds[index];
        kind.listing = None;
        if kind.settled {
            return None;
        }
        kind.settled = true;
        self.reset_if_ready()
    }

    /// An object was created or changed.
    pub fn apply(&mut self, index: usize, object: DynamicObject) -> Option<SourceEvent> {
        let kind = &mut self.kinds[index];
        let object = raw_object(&kind.kind, object)?;
        if kind.current.get(&object.key) == Some(&object) {
            return None;
        }
        kind.current.insert(object.key.clone(), object.clone());
        self.started.then_some(SourceEvent::Upsert(object))
    }

    /// An object was deleted.
    pub fn delete(&mut self, index: usize, object: DynamicObject) -> Option<SourceEvent> {
        let kind = &mut self.kinds[index];
        let key = object_key(&kind.kind, &object)?;
        kind.current.remove(&key)?;
        self.started.then_some(SourceEvent::Delete(key))
    }

    fn reset_if_ready(&mut self) -> Option<SourceEvent> {
        if !self.started && !self.kinds.iter().all(|kind| kind.settled) {
            return None;
        }
        self.started = true;
        let all = self.kinds.iter().flat_map(|kind| kind.current.values().cloned()).collect();
        Some(SourceEvent::Reset(all))
    }
}

fn object_key(kind: &WatchedKind, object: &DynamicObject) -> Option<ObjectKey> {
    let Some(name) = object.metadata.name.clone() else {
        warn!(kind = kind.kind, "ignoring an object without metadata.name from the API server");
        return None;
    };
    Some(ObjectKey {
        group: kind.group.to_owned(),
        kind: kind.kind.to_owned(),
        namespace: if kind.namespaced { object.metadata.namespace.clone() } else { None },
        name,
    })
}

/// The object as the source forwards it: the whole object, as the server sent it, except
/// for two fields.
fn raw_object(kind: &WatchedKind, mut object: DynamicObject) -> Option<RawObject> {
    let key = object_key(kind, &object)?;
    let resource_version = object.metadata.resource_version.clone().unwrap_or_default();
    // Server-side apply's bookkeeping: often bigger than the spec, and nothing reads it.
    object.metadata.managed_fields = None;
    // The items of a built-in kind's list come without `apiVersion` and `kind`
    // (kubernetes/kubernetes#3030). The server converts every object to the version we
    // watch, so the table says what they are.
    let api_version = kind.api_version();
    object.types = Some(TypeMeta { api_version: api_version.clone(), kind: kind.kind.to_owned() });
    // Straight to compact text, never a `serde_json::Value` tree: during a relist every
    // object of the cluster is held here at once.
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

    fn names(event: &SourceEvent) -> Vec<String> {
        match event {
            SourceEvent::Reset(objects) => objects.iter().map(|o| o.key.to_string()).collect(),
            other => panic!("expected a Reset, got {other:?}"),
        }
    }

    #[test]
    fn first_reset_waits_for_every_kind_then_changes_flow() {
        let kinds = &WATCHED_KINDS[..2];
        let (namespaces, pods) = (index("Namespace", ""), index("Pod", ""));
        assert!(namespaces < 2 && pods < 2, "the table starts with Namespace and Pod");
        let mut objects = Objects::new(kinds);

        objects.init(pods);
        objects.init_apply(pods, pod("a", "5"));
        assert!(objects.init_done(pods).is_none(), "namespaces are not listed yet");
        // A change of a listed kind before the start is folded in, not sent.
        assert!(objects.apply(pods, pod("b", "6")).is_none());
        assert!(
            objects.list_refused(namespaces).is_some_and(|reset| names(&reset) == ["Pod/ns/a", "Pod/ns/b"])
        );

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

        assert!(
            matches!(objects.delete(pods, pod("b", "8")), Some(SourceEvent::Delete(key)) if key.name == "b")
        );
        assert!(objects.delete(pods, pod("b", "8")).is_none(), "nothing to delete twice");

        // A relist replaces the kind: "a" is gone, "c" is new.
        objects.init(pods);
        objects.init_apply(pods, pod("c", "9"));
        assert_eq!(names(&objects.init_done(pods).unwrap()), ["Pod/ns/c"]);
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
