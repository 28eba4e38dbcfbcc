//! Snapshots as the control plane hands them over, and their prepared form: indexed by name
//! and diffed against the previous snapshot once, so each stream only looks at what changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::identity::ProxyIdentity;
use crate::Any;

/// Everything the server serves, as of one version: resources grouped by type URL.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Sent as `version_info` (SotW) and `system_version_info` (delta). Should change with
    /// every snapshot; an empty version is replaced by the server's generation number.
    pub version: String,
    /// Type URL → resources of that type. Names must be unique per proxy: when several
    /// resources share a name, a proxy gets the first one whose scope matches it.
    pub resources: HashMap<String, Vec<ScopedResource>>,
}

impl Snapshot {
    /// An empty snapshot with this version.
    pub fn new(version: impl Into<String>) -> Self {
        Self { version: version.into(), resources: HashMap::new() }
    }

    /// Adds one resource under `type_url`.
    pub fn add(&mut self, type_url: impl Into<String>, resource: ScopedResource) -> &mut Self {
        self.resources.entry(type_url.into()).or_default().push(resource);
        self
    }

    /// Builder form of [`Snapshot::add`].
    #[must_use]
    pub fn with(mut self, type_url: impl Into<String>, resource: ScopedResource) -> Self {
        self.add(type_url, resource);
        self
    }
}

/// One resource and which proxies may see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopedResource {
    /// The xDS resource name (e.g. a workload uid, a cluster name).
    pub name: String,
    /// Which proxies see it.
    pub scope: Scope,
    /// The resource itself; its `type_url` must be the type URL it is listed under.
    pub resource: Any,
    /// The resource's own version, compared to decide whether a proxy needs it again (and
    /// sent as the delta `Resource.version`). Leave empty to have the server derive one from
    /// the bytes; set it when you already have a cheap content hash or generation.
    pub version: String,
}

impl ScopedResource {
    /// A resource with a version derived from its bytes.
    pub fn new(name: impl Into<String>, scope: Scope, resource: Any) -> Self {
        Self { name: name.into(), scope, resource, version: String::new() }
    }

    /// Encodes `message` into an `Any` with its own type URL.
    pub fn from_message<M: prost::Name>(name: impl Into<String>, scope: Scope, message: &M) -> Self {
        Self::new(name, scope, crate::istio::pack(message))
    }

    /// Sets an explicit per-resource version.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }
}

/// Which proxies a resource is for. Matched against the identity a proxy presents in its
/// first request (see [`ProxyIdentity`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every proxy.
    All,
    /// Proxies whose `NODE_NAME` metadata is this node: node agents and what runs on them.
    Node(String),
    /// Proxies whose namespace (metadata `NAMESPACE` or Istio-style id) is this one.
    Namespace(String),
    /// The proxy whose `node.id` is exactly this: one waypoint, gateway or Envoy.
    Proxy(String),
    /// Proxies whose `LABELS` metadata include all of these (gateways, chosen by their
    /// Gateway's selector).
    Labels(std::collections::BTreeMap<String, String>),
    /// Proxies matched by any of these scopes.
    AnyOf(Vec<Scope>),
}

impl Scope {
    /// Whether a proxy with this identity sees resources of this scope.
    pub fn matches(&self, proxy: &ProxyIdentity) -> bool {
        match self {
            Scope::All => true,
            Scope::Node(node) => proxy.node_name.as_deref() == Some(node.as_str()),
            Scope::Namespace(ns) => proxy.namespace.as_deref() == Some(ns.as_str()),
            Scope::Proxy(id) => proxy.id == *id,
            Scope::Labels(want) => {
                !want.is_empty() && want.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
            }
            Scope::AnyOf(scopes) => scopes.iter().any(|s| s.matches(proxy)),
        }
    }
}

/// Why a snapshot was refused. The server keeps serving the previous one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// A resource's `Any` names another type than the type URL it is listed under; proxies
    /// would reject the whole response.
    #[error("resource {name:?} listed under {type_url} holds a {found}: put it under its own type URL")]
    TypeMismatch {
        /// The type URL the resource is listed under.
        type_url: String,
        /// The resource name.
        name: String,
        /// The type URL inside the resource's `Any`.
        found: String,
    },
    /// A resource without a name cannot be subscribed to, updated or removed.
    #[error("a resource listed under {type_url} has an empty name")]
    EmptyName {
        /// The type URL the resource is listed under.
        type_url: String,
    },
}

impl Snapshot {
    /// Checks what every proxy would otherwise reject.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        for (type_url, resources) in &self.resources {
            for r in resources {
                if r.name.is_empty() {
                    return Err(SnapshotError::EmptyName { type_url: type_url.clone() });
                }
                if r.resource.type_url != *type_url {
                    return Err(SnapshotError::TypeMismatch {
                        type_url: type_url.clone(),
                        name: r.name.clone(),
                        found: r.resource.type_url.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A snapshot as streams consume it: per type, resources indexed by name, and the names
/// whose content changed since the previous generation.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// 1 for the first published snapshot, then +1 per published snapshot.
    pub generation: u64,
    pub version: String,
    pub types: HashMap<String, TypeIndex>,
    /// Names that differ from generation - 1 (added, removed, or another version or scope).
    /// A type absent here did not change at all, which is what keeps a one-endpoint change
    /// on a large snapshot cheap for every stream.
    pub changes: HashMap<String, HashSet<String>>,
}

/// One type's resources, by name. Several entries share a name when the control plane
/// serves different variants to different proxies.
#[derive(Debug, Default)]
pub(crate) struct TypeIndex {
    pub by_name: HashMap<String, Vec<Arc<ScopedResource>>>,
}

impl TypeIndex {
    /// The variant of `name` this proxy sees, if any.
    pub fn resolve(&self, name: &str, proxy: &ProxyIdentity) -> Option<&Arc<ScopedResource>> {
        self.by_name.get(name)?.iter().find(|r| r.scope.matches(proxy))
    }
}

impl Prepared {
    /// Indexes `snapshot` and diffs it against `previous` (one pass over each).
    pub fn new(snapshot: Snapshot, generation: u64, previous: Option<&Prepared>) -> Self {
        let version = if snapshot.version.is_empty() { generation.to_string() } else { snapshot.version };
        let mut types: HashMap<String, TypeIndex> = HashMap::with_capacity(snapshot.resources.len());
        for (type_url, resources) in snapshot.resources {
            let index = types.entry(type_url).or_default();
            index.by_name.reserve(resources.len());
            for mut r in resources {
                if r.version.is_empty() {
                    r.version = content_version(&r.resource);
                }
                index.by_name.entry(r.name.clone()).or_default().push(Arc::new(r));
            }
        }

        let mut changes: HashMap<String, HashSet<String>> = HashMap::new();
        let empty = TypeIndex::default();
        for (type_url, index) in &types {
            let before = previous.and_then(|p| p.types.get(type_url)).unwrap_or(&empty);
            let changed = diff_names(before, index);
            if !changed.is_empty() {
                changes.insert(type_url.clone(), changed);
            }
        }
        // Types that disappeared entirely: every name in them is removed.
        for (type_url, before) in previous.map(|p| &p.types).into_iter().flatten() {
            if !types.contains_key(type_url) && !before.by_name.is_empty() {
                changes.insert(type_url.clone(), before.by_name.keys().cloned().collect());
            }
        }
        Self { generation, version, types, changes }
    }
}

/// Names whose variants (scope and version, in order) differ between two indexes.
fn diff_names(before: &TypeIndex, after: &TypeIndex) -> HashSet<String> {
    let same = |a: &[Arc<ScopedResource>], b: &[Arc<ScopedResource>]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.version == y.version && x.scope == y.scope)
    };
    let mut changed = HashSet::new();
    for (name, variants) in &after.by_name {
        match before.by_name.get(name) {
            Some(old) if same(old, variants) => {}
            _ => {
                changed.insert(name.clone());
            }
        }
    }
    for name in before.by_name.keys() {
        if !after.by_name.contains_key(name) {
            changed.insert(name.clone());
        }
    }
    changed
}

/// A version derived from the resource bytes (FNV-1a, 64 bit). Stable across processes and
/// Rust releases, unlike `DefaultHasher`, so a restarted server agrees with the versions a
/// reconnecting client reports in `initial_resource_versions`.
pub(crate) fn content_version(any: &Any) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in any.type_url.as_bytes().iter().chain([0u8].iter()).chain(any.value.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(bytes: &[u8]) -> Any {
        Any { type_url: "t".into(), value: bytes.to_vec() }
    }

    fn snap(version: &str, items: &[(&str, Scope, &[u8])]) -> Snapshot {
        let mut s = Snapshot::new(version);
        for (name, scope, bytes) in items {
            s.add("t", ScopedResource::new(*name, scope.clone(), any(bytes)));
        }
        s
    }

    #[test]
    fn first_snapshot_changes_everything_then_only_the_difference() {
        let a = Prepared::new(snap("1", &[("a", Scope::All, b"1"), ("b", Scope::All, b"1")]), 1, None);
        assert_eq!(a.changes["t"], HashSet::from(["a".to_string(), "b".to_string()]));

        let b = Prepared::new(snap("2", &[("a", Scope::All, b"1"), ("b", Scope::All, b"2")]), 2, Some(&a));
        assert_eq!(b.changes["t"], HashSet::from(["b".to_string()]));

        // Same content, new scope: changed, because other proxies may now see it.
        let c = Prepared::new(
            snap("3", &[("a", Scope::Node("n".into()), b"1"), ("b", Scope::All, b"2")]),
            3,
            Some(&b),
        );
        assert_eq!(c.changes["t"], HashSet::from(["a".to_string()]));

        let d = Prepared::new(snap("4", &[("a", Scope::Node("n".into()), b"1")]), 4, Some(&c));
        assert_eq!(d.changes["t"], HashSet::from(["b".to_string()]));

        let e = Prepared::new(Snapshot::new("5"), 5, Some(&d));
        assert_eq!(e.changes["t"], HashSet::from(["a".to_string()]));

        let f = Prepared::new(Snapshot::new(""), 6, Some(&e));
        assert!(f.changes.is_empty());
        assert_eq!(f.version, "6");
    }

    #[test]
    fn scopes_match_identities() {
        let p = ProxyIdentity {
            id: "w1".into(),
            node_name: Some("n1".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        };
        assert!(Scope::All.matches(&p));
        assert!(Scope::Node("n1".into()).matches(&p));
        assert!(!Scope::Node("n2".into()).matches(&p));
        assert!(Scope::Namespace("ns".into()).matches(&p));
        assert!(Scope::Proxy("w1".into()).matches(&p));
        assert!(!Scope::Proxy("w2".into()).matches(&p));
        assert!(Scope::AnyOf(vec![Scope::Node("n2".into()), Scope::Proxy("w1".into())]).matches(&p));
        assert!(!Scope::Node("n1".into()).matches(&ProxyIdentity::default()));
    }

    #[test]
    fn first_matching_variant_wins() {
        let p = Prepared::new(
            snap("1", &[("a", Scope::Node("n1".into()), b"for-n1"), ("a", Scope::All, b"default")]),
            1,
            None,
        );
        let n1 = ProxyIdentity { node_name: Some("n1".into()), ..Default::default() };
        let other = ProxyIdentity::default();
        assert_eq!(p.types["t"].resolve("a", &n1).unwrap().resource.value, b"for-n1");
        assert_eq!(p.types["t"].resolve("a", &other).unwrap().resource.value, b"default");
    }

    #[test]
    fn validation_names_the_resource() {
        let mut s = Snapshot::new("1");
        s.add("t", ScopedResource::new("a", Scope::All, Any { type_url: "u".into(), value: vec![] }));
        let err = s.validate().unwrap_err();
        assert!(err.to_string().contains("\"a\""), "{err}");
        assert_eq!(
            snap("1", &[("", Scope::All, b"")]).validate(),
            Err(SnapshotError::EmptyName { type_url: "t".into() })
        );
    }
}
