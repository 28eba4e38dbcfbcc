//! The fake API server's state: objects under one global resourceVersion, the history of
//! changes a watch can resume from, and the open watches.
//!
//! Like etcd behind the real server, every change gets the next resourceVersion and the
//! history keeps each change with the object before it, so the state at any retained
//! version can be rebuilt (for `resourceVersionMatch=Exact` lists and `continue` pages).
//! [`Store::compact`] forgets the history: a watch or list from before it gets `410 Gone`.

use super::resources::{RESOURCES, Resource, by_api_version};
use hyper::body::Bytes;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// An object's place in the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    /// Index in [`RESOURCES`].
    pub resource: usize,
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, Copy)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    fn event_type(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One change in the history.
#[derive(Debug)]
struct Change {
    rv: u64,
    key: Key,
    change: ChangeType,
    /// The object after the change; for a deletion, its last state at the deletion's
    /// resourceVersion (what a DELETED event carries).
    object: Value,
    /// The object before the change, to rebuild older states.
    previous: Option<Value>,
}

/// An open watch stream.
struct Watch {
    resource: usize,
    /// The version the client asked for; objects are served in it.
    version: String,
    namespace: Option<String>,
    bookmarks: bool,
    lines: mpsc::UnboundedSender<Bytes>,
}

impl Watch {
    fn sees(&self, key: &Key) -> bool {
        key.resource == self.resource && (self.namespace.is_none() || self.namespace == key.namespace)
    }
}

/// A request the server refuses, answered with a `Status` object.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn not_found() -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
        }
    }

    /// 409 `AlreadyExists` (`exists`) or 404 `NotFound` for the object `name` of
    /// `resource`, worded as the real server words them.
    pub fn about(resource: usize, name: &str, exists: bool) -> ApiError {
        let r = &RESOURCES[resource];
        let (code, reason, what) =
            if exists { (409, "AlreadyExists", "already exists") } else { (404, "NotFound", "not found") };
        ApiError { code, reason, message: format!("{}.{} {name:?} {what}", r.plural, r.group) }
    }

    pub fn bad_request(message: String) -> ApiError {
        ApiError { code: 400, reason: "BadRequest", message }
    }

    fn expired(message: String) -> ApiError {
        ApiError { code: 410, reason: "Expired", message }
    }

    /// The `Status` object the real server sends, in a response body or a watch ERROR event.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// What a list request asks for.
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    pub resource_version: Option<u64>,
    /// `resourceVersionMatch=Exact`: the state at `resource_version` rather than anything
    /// at least as new (which this server answers with its newest state).
    pub exact: bool,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// What a watch request asks for.
#[derive(Debug, Default)]
pub(crate) struct WatchQuery {
    /// Events after this version; `None` (unset or "0") starts with an ADDED event for every
    /// current object.
    pub resource_version: Option<u64>,
    pub bookmarks: bool,
    /// `sendInitialEvents=true` (streaming lists): the synthetic ADDED events end with a
    /// bookmark annotated `k8s.io/initial-events-end`.
    pub send_initial_events: bool,
}

pub(crate) struct Store {
    rv: u64,
    /// The oldest version a watch or consistent list can start from.
    compacted: u64,
    objects: BTreeMap<Key, Value>,
    /// Changes after `compacted`, oldest first.
    history: Vec<Change>,
    watches: Vec<Watch>,
    /// Per resource: answer 404 as if its CRD were not installed.
    failed: Vec<bool>,
    next_uid: u64,
    /// Service ClusterIPs handed out so far (see [`Store::allocate_cluster_ip`]).
    cluster_ips: u16,
    /// Whether Services get ClusterIPs, as on the real server; off unless a test asks
    /// ([`super::FakeApiServer::set_cluster_ip_allocation`]).
    pub allocate_cluster_ips: bool,
}

/// Where the fake server allocates Services' ClusterIPs: the upper half of the bed's
/// service range (tests/README.md's address plan), so that a VIP a test chooses itself
/// (198.19.0.x) is never handed out.
const CLUSTER_IP_BASE: [u8; 2] = [198, 19];
const CLUSTER_IP_FIRST: u16 = 0x8001;

impl Store {
    pub fn new() -> Store {
        Store {
            // Start above 0: "0" means "any version" in list and watch requests.
            rv: 1,
            compacted: 1,
            objects: BTreeMap::new(),
            history: Vec::new(),
            watches: Vec::new(),
            failed: (0..RESOURCES.len()).map(|index| !RESOURCES.served_from_start(index)).collect(),
            next_uid: 1,
            cluster_ips: 0,
            allocate_cluster_ips: false,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Creates or replaces an object, returning its new resourceVersion.
    ///
    /// Panics on an object the server does not serve: that is a mistake in the test.
    pub fn apply(&mut self, mut object: Value) -> u64 {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let resource = by_api_version(&api_version, &kind)
            .unwrap_or_else(|| panic!("the fake API server does not serve {kind} in {api_version:?}"));
        let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            panic!("{kind} without metadata: {object}");
        };
        let name =
            metadata.get("name").and_then(Value::as_str).expect("object without metadata.name").to_owned();
        let namespace = RESOURCES[resource]
            .namespaced
            .then(|| metadata.get("namespace").and_then(Value::as_str).unwrap_or("default").to_owned());
        let key = Key { resource, namespace, name };
        let previous = self.objects.get(&key).cloned();

        self.rv += 1;
        // A test may create an object with the uid it chose (a bed pod's, which the agent
        // binds the pod by); the real server would make one.
        let given = metadata.get("uid").and_then(Value::as_str).filter(|uid| !uid.is_empty());
        let uid = match previous.as_ref().and_then(|p| p["metadata"]["uid"].as_str()).or(given) {
            Some(uid) => uid.to_owned(),
            None => {
                self.next_uid += 1;
                format!("00000000-0000-4000-8000-{:012}", self.next_uid)
            }
        };
        metadata.insert("uid".into(), uid.into());
        metadata.insert("resourceVersion".into(), self.rv.to_string().into());
        match &key.namespace {
            Some(ns) => metadata.insert("namespace".into(), ns.clone().into()),
            None => metadata.remove("namespace"),
        };
        if self.allocate_cluster_ips && RESOURCES[resource].group.is_empty() && kind == "Service" {
            self.allocate_cluster_ip(&mut object, previous.as_ref());
        }

        let change = if previous.is_some() { ChangeType::Modified } else { ChangeType::Added };
        if let Some(defined) = RESOURCES.register_crd(&object) {
            self.set_failed(defined, false);
        }
        self.objects.insert(key.clone(), object.clone());
        self.record(Change { rv: self.rv, key, change, object, previous });
        self.rv
    }

    /// What the real server's Service REST strategy does: a ClusterIP Service (the default
    /// type) created without `spec.clusterIP` gets one, kept for the Service's life (an
    /// update that leaves it out keeps the allocated one, as the field is immutable);
    /// `clusterIPs` follows. Headless (`None`) and ExternalName Services get none.
    fn allocate_cluster_ip(&mut self, object: &mut Value, previous: Option<&Value>) {
        let spec = &mut object["spec"];
        if !spec.is_object() || spec["type"].as_str().is_some_and(|t| t == "ExternalName") {
            return;
        }
        if spec["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty()) {
            if !spec["clusterIPs"].is_array() {
                spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
            }
            return;
        }
        let ip = match previous.and_then(|p| p["spec"]["clusterIP"].as_str()).filter(|ip| !ip.is_empty()) {
            Some(kept) => kept.to_owned(),
            None => {
                let n = CLUSTER_IP_FIRST + self.cluster_ips;
                self.cluster_ips += 1;
                let [a, b] = CLUSTER_IP_BASE;
                format!("{a}.{b}.{}.{}", n >> 8, n & 0xff)
            }
        };
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }

    /// Deletes an object and, unless `orphan`, its dependents (the objects an
    /// ownerReference ties to it, and theirs), as the garbage collector does after a
    /// delete with background propagation. Returns the object as it was, or `None` if
    /// there was no such object.
    pub fn delete_cascading(
        &mut self,
        resource: usize,
        namespace: Option<&str>,
        name: &str,
        orphan: bool,
    ) -> Option<Value> {
        let object = self.get(resource, RESOURCES[resource].versions[0], namespace, name)?;
        self.delete(resource, namespace, name);
        if !orphan {
            let mut owners: Vec<String> =
                object["metadata"]["uid"].as_str().map(str::to_owned).into_iter().collect();
            while let Some(uid) = owners.pop() {
                for key in self.dependents(&uid) {
                    let dependent = self
                        .get(
                            key.resource,
                            RESOURCES[key.resource].versions[0],
                            key.namespace.as_deref(),
                            &key.name,
                        )
                        .expect("a dependent just listed");
                    self.delete(key.resource, key.namespace.as_deref(), &key.name);
                    owners.extend(dependent["metadata"]["uid"].as_str().map(str::to_owned));
                }
            }
        }
        Some(object)
    }

    /// Deletes an object; returns the deletion's resourceVersion, or `None` if there was no
    /// such object.
    pub fn delete(&mut self, resource: usize, namespace: Option<&str>, name: &str) -> Option<u64> {
        let namespace = RESOURCES[resource].namespaced.then(|| namespace.unwrap_or("default").to_owned());
        let key = Key { resource, namespace, name: name.to_owned() };
        let previous = self.objects.remove(&key)?;
        self.rv += 1;
        let mut object = previous.clone();
        object["metadata"]["resourceVersion"] = self.rv.to_string().into();
        self.record(Change {
            rv: self.rv,
            key,
            change: ChangeType::Deleted,
            object,
            previous: Some(previous),
        });
        Some(self.rv)
    }

    /// The objects with an ownerReference to `uid` (what the garbage collector deletes
    /// after their owner).
    pub fn dependents(&self, uid: &str) -> Vec<Key> {
        let owned_by = |object: &Value| {
            object["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|owners| owners.iter().any(|owner| owner["uid"] == uid))
        };
        self.objects.iter().filter(|(_, object)| owned_by(object)).map(|(key, _)| key.clone()).collect()
    }

    fn record(&mut self, change: Change) {
        self.watches.retain(|watch| {
            if !watch.sees(&change.key) {
                return true;
            }
            let object = served(&RESOURCES[watch.resource], &watch.version, &change.object, true);
            watch.lines.send(event_line(change.change.event_type(), object)).is_ok()
        });
        self.history.push(change);
    }

    /// Forgets the history: watches and lists from any version before now get `410 Gone`.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// Sends a BOOKMARK at the current version to every watch that allows them.
    pub fn bookmark(&mut self) {
        let rv = self.rv.to_string();
        self.watches.retain(|watch| {
            if !watch.bookmarks {
                return true;
            }
            watch.lines.send(bookmark_line(&RESOURCES[watch.resource], &watch.version, &rv, false)).is_ok()
        });
    }

    /// Ends every open watch stream (or only those of one resource).
    pub fn drop_watches(&mut self, resource: Option<usize>) {
        self.watches.retain(|watch| resource.is_some_and(|r| r != watch.resource));
    }

    pub fn open_watches(&mut self) -> usize {
        self.watches.retain(|watch| !watch.lines.is_closed());
        self.watches.len()
    }

    /// Makes a resource answer 404 (or serves it again); failing ends its open watches.
    pub fn set_failed(&mut self, resource: usize, failed: bool) {
        if self.failed.len() <= resource {
            // Registered (by a CRD) after this store was made: not served until now.
            self.failed.resize(resource + 1, true);
        }
        self.failed[resource] = failed;
        if failed {
            self.drop_watches(Some(resource));
        }
    }

    pub fn is_failed(&self, resource: usize) -> bool {
        self.failed.get(resource).copied().unwrap_or(true)
    }

    /// The objects of `resource` (in `namespace`) as they were at version `rv`, in key order.
    ///
    /// Borrowed, and only this resource's: a paged list asks for one snapshot per page, and
    /// copying the whole store for each made listing 100,000 pods in pages of 500 quadratic
    /// (minutes, for the control plane benchmark's mesh).
    fn snapshot(&self, resource: usize, namespace: Option<&str>, rv: u64) -> Result<Vec<&Value>, ApiError> {
        if rv < self.compacted {
            return Err(ApiError::expired(format!("too old resource version: {rv} ({})", self.compacted)));
        }
        let wanted = |key: &Key| {
            key.resource == resource && (namespace.is_none() || key.namespace.as_deref() == namespace)
        };
        // Keys sort by resource first: this resource's objects are one range.
        let first = |resource| Key { resource, namespace: None, name: String::new() };
        let current = self.objects.range(first(resource)..first(resource + 1)).filter(|(key, _)| wanted(key));
        let mut undo = self
            .history
            .iter()
            .rev()
            .take_while(|change| change.rv > rv)
            .filter(|c| wanted(&c.key))
            .peekable();
        if undo.peek().is_none() {
            return Ok(current.map(|(_, object)| object).collect());
        }
        let mut objects: BTreeMap<&Key, &Value> = current.collect();
        for change in undo {
            match &change.previous {
                Some(previous) => objects.insert(&change.key, previous),
                None => objects.remove(&change.key),
            };
        }
        Ok(objects.into_values().collect())
    }

    /// Answers a list request: a `<Kind>List` page in `version`.
    pub fn list(
        &self,
        resource: usize,
        version: &str,
        namespace: Option<&str>,
        query: &ListQuery,
    ) -> Result<Value, ApiError> {
        // A continue token is "<rv>-<offset>": the next page of the same snapshot.
        let (rv, offset) = match &query.continue_token {
            Some(token) => {
                let parsed = token
                    .split_once('-')
                    .and_then(|(rv, offset)| Some((rv.parse().ok()?, offset.parse().ok()?)));
                let (rv, offset) = parsed
                    .ok_or_else(|| ApiError::bad_request(format!("invalid continue token {token:?}")))?;
                if rv < self.compacted {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter."
                            .into(),
                    ));
                }
                (rv, offset)
            }
            None => match query.resource_version {
                Some(rv) if query.exact => (rv, 0),
                _ => (self.rv, 0),
            },
        };
        let r = &RESOURCES[resource];
        let objects = self.snapshot(resource, namespace, rv)?;
        let remaining = objects.len().saturating_sub(offset);
        let take = query.limit.filter(|&limit| limit > 0).unwrap_or(usize::MAX).min(remaining);
        let items: Vec<Value> = objects
            .iter()
            .skip(offset)
            .take(take)
            .map(|object| served(r, version, object, !r.builtin))
            .collect();
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if take < remaining {
            metadata["continue"] = format!("{rv}-{}", offset + take).into();
            metadata["remainingItemCount"] = (remaining - take).into();
        }
        Ok(json!({
            "kind": format!("{}List", r.kind),
            "apiVersion": r.api_version(version),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Answers a create (POST to a collection): the object as stored, or 409 if it exists.
    pub fn create(
        &mut self,
        resource: usize,
        version: &str,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        let (object, name) = self.checked(resource, version, namespace, object)?;
        let key = Key { resource, namespace: namespace.map(str::to_owned), name: name.clone() };
        let r = &RESOURCES[resource];
        if self.objects.contains_key(&key) {
            return Err(ApiError::about(resource, &name, true));
        }
        self.apply(object);
        Ok(served(r, version, &self.objects[&key], true))
    }

    /// Answers a replace (PUT to an object): 404 if it does not exist, 409 if the body
    /// carries a `metadata.resourceVersion` that is not the current one (optimistic
    /// concurrency, as the real server).
    pub fn replace(
        &mut self,
        resource: usize,
        version: &str,
        namespace: Option<&str>,
        name: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let (object, body_name) = self.checked(resource, version, namespace, object)?;
        let r = &RESOURCES[resource];
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let key = Key { resource, namespace: namespace.map(str::to_owned), name: name.to_owned() };
        let Some(current) = self.objects.get(&key) else {
            return Err(ApiError::about(resource, name, false));
        };
        if let Some(given) = object["metadata"]["resourceVersion"].as_str()
            && !given.is_empty()
            && Some(given) != current["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on {}.{} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                    r.plural, r.group
                ),
            });
        }
        self.apply(object);
        Ok(served(r, version, &self.objects[&key], true))
    }

    /// A written object checked against where it was sent: its kind, name and namespace.
    /// Returns it with `apiVersion`, `kind` and `metadata.namespace` filled in.
    pub fn checked(
        &self,
        resource: usize,
        version: &str,
        namespace: Option<&str>,
        mut object: Value,
    ) -> Result<(Value, String), ApiError> {
        let r = &RESOURCES[resource];
        if let Some(kind) = object["kind"].as_str()
            && kind != r.kind
        {
            return Err(ApiError::bad_request(format!("a {kind} sent to the {} collection", r.plural)));
        }
        let Some(fields) = object.as_object_mut() else {
            return Err(ApiError::bad_request("the body is not a JSON object".into()));
        };
        fields.insert("apiVersion".into(), r.api_version(version).into());
        fields.insert("kind".into(), r.kind.into());
        let metadata = fields.entry("metadata").or_insert_with(|| json!({}));
        let Some(name) = metadata["name"].as_str().filter(|n| !n.is_empty()).map(str::to_owned) else {
            return Err(ApiError::bad_request(
                "metadata.name is required (generateName is not supported here)".into(),
            ));
        };
        match (namespace, metadata["namespace"].as_str()) {
            (Some(url), Some(body)) if url != body => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the object ({body}) does not match the namespace on the URL ({url})"
                )));
            }
            (Some(url), _) => metadata["namespace"] = url.into(),
            (None, _) if r.namespaced => {
                return Err(ApiError::bad_request(format!(
                    "{} are namespaced: POST to a namespace",
                    r.plural
                )));
            }
            (None, _) => {}
        }
        Ok((object, name))
    }

    /// Every stored object of `resource`, in key order (as stored: the preferred version).
    pub fn all(&self, resource: usize) -> Vec<Value> {
        let first = |resource| Key { resource, namespace: None, name: String::new() };
        self.objects.range(first(resource)..first(resource + 1)).map(|(_, object)| object.clone()).collect()
    }

    /// Answers a single-object GET.
    pub fn get(&self, resource: usize, version: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = Key { resource, namespace: namespace.map(str::to_owned), name: name.to_owned() };
        self.objects.get(&key).map(|object| served(&RESOURCES[resource], version, object, true))
    }

    /// Opens a watch: the returned channel yields the event lines after
    /// `query.resource_version` and then live ones, until the watch is dropped. From a
    /// version older than the history, it yields one ERROR event with a 410 `Status` and
    /// ends, as the real server does.
    pub fn watch(
        &mut self,
        resource: usize,
        version: &str,
        namespace: Option<String>,
        query: &WatchQuery,
    ) -> mpsc::UnboundedReceiver<Bytes> {
        let (lines, receiver) = mpsc::unbounded_channel();
        let r = &RESOURCES[resource];
        let watch =
            Watch { resource, version: version.to_owned(), namespace, bookmarks: query.bookmarks, lines };
        // Sends cannot fail here: the receiver is still in hand.
        match query.resource_version {
            Some(rv) if rv < self.compacted => {
                let error = ApiError::expired(format!("too old resource version: {rv} ({})", self.compacted));
                let _ = watch.lines.send(event_line("ERROR", error.status()));
                return receiver;
            }
            Some(rv) => {
                for change in self.history.iter().filter(|change| change.rv > rv && watch.sees(&change.key)) {
                    let object = served(r, version, &change.object, true);
                    let _ = watch.lines.send(event_line(change.change.event_type(), object));
                }
            }
            None => {
                for (_, object) in self.objects.iter().filter(|(key, _)| watch.sees(key)) {
                    let _ = watch.lines.send(event_line("ADDED", served(r, version, object, true)));
                }
                if query.send_initial_events && query.bookmarks {
                    let _ = watch.lines.send(bookmark_line(r, version, &self.rv.to_string(), true));
                }
            }
        }
        self.watches.push(watch);
        receiver
    }
}

/// An object as served in `version`: `apiVersion` rewritten, type fields left out of the
/// items of built-in lists.
fn served(resource: &Resource, version: &str, object: &Value, with_type: bool) -> Value {
    let mut object = object.clone();
    let Some(fields) = object.as_object_mut() else { return object };
    if with_type {
        fields.insert("apiVersion".into(), resource.api_version(version).into());
        fields.insert("kind".into(), resource.kind.into());
    } else {
        fields.remove("apiVersion");
        fields.remove("kind");
    }
    object
}

fn event_line(event_type: &str, object: Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({ "type": event_type, "object": object })).expect("JSON serialises");
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark_line(resource: &Resource, version: &str, rv: &str, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": rv });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    let object =
        json!({ "kind": resource.kind, "apiVersion": resource.api_version(version), "metadata": metadata });
    event_line("BOOKMARK", object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeapi::resources::by_name;

    fn pod(name: &str, image: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": "ns" },
            "spec": { "containers": [{ "name": "c", "image": image }] },
        })
    }

    fn names(list: &Value) -> Vec<&str> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["metadata"]["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn exact_list_rebuilds_an_older_state() {
        let mut store = Store::new();
        let pods = by_name("Pod");
        let first = store.apply(pod("a", "v1"));
        store.apply(pod("b", "v1"));
        store.apply(pod("a", "v2"));
        store.delete(pods, Some("ns"), "b");

        let now = store.list(pods, "v1", None, &ListQuery::default()).unwrap();
        assert_eq!(names(&now), ["a"]);
        assert_eq!(now["items"][0]["spec"]["containers"][0]["image"], "v2");
        // Built-in list items come without type fields, like the real server's.
        assert!(now["items"][0].get("kind").is_none());

        let query = ListQuery { resource_version: Some(first + 1), exact: true, ..Default::default() };
        let then = store.list(pods, "v1", None, &query).unwrap();
        assert_eq!(names(&then), ["a", "b"]);
        assert_eq!(then["items"][0]["spec"]["containers"][0]["image"], "v1");
        assert_eq!(then["metadata"]["resourceVersion"], (first + 1).to_string());

        store.compact();
        assert_eq!(store.list(pods, "v1", None, &query).unwrap_err().code, 410);
    }

    #[test]
    fn pages_continue_from_the_same_snapshot() {
        let mut store = Store::new();
        let pods = by_name("Pod");
        for name in ["a", "b", "c"] {
            store.apply(pod(name, "v1"));
        }
        let first =
            store.list(pods, "v1", None, &ListQuery { limit: Some(2), ..Default::default() }).unwrap();
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first["metadata"]["remainingItemCount"], 1);
        store.apply(pod("0", "v1"));
        let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
        let query = ListQuery { limit: Some(2), continue_token: Some(token), ..Default::default() };
        let second = store.list(pods, "v1", None, &query).unwrap();
        assert_eq!(names(&second), ["c"]);
        assert!(second["metadata"].get("continue").is_none());
    }

    #[test]
    fn create_and_replace_as_the_real_server() {
        let mut store = Store::new();
        let secrets = by_name("Secret");
        let secret = |rv: Option<&str>, value: &str| {
            let mut s = json!({ "metadata": { "name": "ca" }, "data": { "k": value } });
            if let Some(rv) = rv {
                s["metadata"]["resourceVersion"] = rv.into();
            }
            s
        };
        let created = store.create(secrets, "v1", Some("istio-system"), secret(None, "a")).unwrap();
        assert_eq!(created["kind"], "Secret");
        assert_eq!(created["metadata"]["namespace"], "istio-system");
        let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
        assert_eq!(
            store.create(secrets, "v1", Some("istio-system"), secret(None, "b")).unwrap_err().code,
            409
        );

        let replaced =
            store.replace(secrets, "v1", Some("istio-system"), "ca", secret(Some(&rv), "b")).unwrap();
        assert_eq!(replaced["data"]["k"], "b");
        assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);
        let stale =
            store.replace(secrets, "v1", Some("istio-system"), "ca", secret(Some(&rv), "c")).unwrap_err();
        assert_eq!((stale.code, stale.reason), (409, "Conflict"));
        assert_eq!(
            store.replace(secrets, "v1", Some("istio-system"), "other", secret(None, "c")).unwrap_err().code,
            400
        );
        assert_eq!(
            store.replace(secrets, "v1", Some("default"), "ca", secret(None, "c")).unwrap_err().code,
            404
        );
        let e = store
            .create(secrets, "v1", Some("a"), json!({ "metadata": { "name": "x", "namespace": "b" } }))
            .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn watch_replays_history_and_expires_after_compaction() {
        let mut store = Store::new();
        let routes = by_name("HTTPRoute");
        let route = |name: &str| json!({ "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": { "name": name } });
        let start = store.apply(route("r1"));
        store.apply(route("r2"));
        let mut lines = store.watch(
            routes,
            "v1beta1",
            None,
            &WatchQuery { resource_version: Some(start), ..Default::default() },
        );
        let line: Value = serde_json::from_slice(&lines.try_recv().unwrap()).unwrap();
        assert_eq!(line["type"], "ADDED");
        assert_eq!(line["object"]["metadata"]["name"], "r2");
        assert_eq!(line["object"]["apiVersion"], "gateway.networking.k8s.io/v1beta1");
        assert!(lines.try_recv().is_err());

        store.compact();
        let mut old = store.watch(
            routes,
            "v1",
            None,
            &WatchQuery { resource_version: Some(start), ..Default::default() },
        );
        let line: Value = serde_json::from_slice(&old.try_recv().unwrap()).unwrap();
        assert_eq!(line["type"], "ERROR");
        assert_eq!(line["object"]["code"], 410);
        assert!(old.try_recv().is_err(), "the expired watch ends after its ERROR event");
    }
}
