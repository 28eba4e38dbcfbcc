//! What the control plane hands the server: whole snapshots, or updates to the last one.

use std::collections::HashMap;

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

    /// Applies updates in order (the server does this when updates follow a snapshot
    /// within one debounce window).
    pub fn apply(&mut self, updates: Vec<SnapshotUpdate>) {
        for update in updates {
            if !update.version.is_empty() {
                self.version = update.version;
            }
            for (type_url, sets) in update.set {
                let last: HashMap<String, Vec<ScopedResource>> = sets.into_iter().collect();
                let list = self.resources.entry(type_url).or_default();
                list.retain(|r| !last.contains_key(&r.name));
                list.extend(last.into_values().flatten());
            }
        }
    }

    /// Builder form of [`Snapshot::add`].
    #[must_use]
    pub fn with(mut self, type_url: impl Into<String>, resource: ScopedResource) -> Self {
        self.add(type_url, resource);
        self
    }
}

/// Changes to the last published snapshot: names whose variants are replaced or removed.
/// Cheaper than a whole [`Snapshot`] when little changed (an endpoint moved): the server
/// applies it to its persistent index in O(changes), instead of indexing and diffing
/// everything again.
#[derive(Clone, Debug, Default)]
pub struct SnapshotUpdate {
    /// The version of the snapshot this update makes; empty means the server's generation.
    pub version: String,
    /// Type URL → (name, its new variants), applied in order. No variants removes the name.
    pub set: HashMap<String, Vec<(String, Vec<ScopedResource>)>>,
}

impl SnapshotUpdate {
    /// An empty update that makes version `version`.
    pub fn new(version: impl Into<String>) -> Self {
        Self { version: version.into(), set: HashMap::new() }
    }

    /// Replaces every variant of `name` under `type_url` with `variants` (none removes it).
    /// Each variant's `name` must be `name`.
    pub fn set(&mut self, type_url: &str, name: &str, variants: Vec<ScopedResource>) -> &mut Self {
        self.set.entry(type_url.to_owned()).or_default().push((name.to_owned(), variants));
        self
    }

    /// Removes `name` from `type_url`.
    pub fn remove(&mut self, type_url: &str, name: &str) -> &mut Self {
        self.set(type_url, name, Vec::new())
    }

    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.values().all(Vec::is_empty)
    }

    /// Checks what every proxy would otherwise reject.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        for (type_url, sets) in &self.set {
            for (name, variants) in sets {
                if name.is_empty() {
                    return Err(SnapshotError::EmptyName { type_url: type_url.clone() });
                }
                for r in variants {
                    if r.name != *name {
                        return Err(SnapshotError::NameMismatch {
                            name: name.clone(),
                            found: r.name.clone(),
                        });
                    }
                    check_resource(type_url, r)?;
                }
            }
        }
        Ok(())
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
    /// An update's variant carries another name than the one it is set under.
    #[error("an update sets {name:?} to a resource named {found:?}")]
    NameMismatch {
        /// The name set.
        name: String,
        /// The variant's own name.
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
                check_resource(type_url, r)?;
            }
        }
        Ok(())
    }
}

fn check_resource(type_url: &str, r: &ScopedResource) -> Result<(), SnapshotError> {
    if r.name.is_empty() {
        return Err(SnapshotError::EmptyName { type_url: type_url.to_owned() });
    }
    if r.resource.type_url != type_url {
        return Err(SnapshotError::TypeMismatch {
            type_url: type_url.to_owned(),
            name: r.name.clone(),
            found: r.resource.type_url.clone(),
        });
    }
    Ok(())
}

/// Small snapshots for the server's unit tests: every resource under type URL `t`.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn any(bytes: &[u8]) -> Any {
        Any { type_url: "t".into(), value: bytes.to_vec() }
    }

    pub(crate) fn snap(version: &str, items: &[(&str, Scope, &[u8])]) -> Snapshot {
        let mut s = Snapshot::new(version);
        for (name, scope, bytes) in items {
            s.add("t", ScopedResource::new(*name, scope.clone(), any(bytes)));
        }
        s
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
