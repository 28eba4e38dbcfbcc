//! Every kind the fake API server can store: the built-in kinds of `resources.rs`, the
//! other built-in kinds an installation (a Helm chart) creates, and the kinds a stored
//! CustomResourceDefinition defines, as the real server serves a CRD's kind once the CRD
//! exists.
//!
//! The registry is one per process, append-only, and indexes never change, so the store
//! and the HTTP side keep naming a resource by its index (`RESOURCES[i]`) whatever was
//! registered since. Whether a server *serves* a CRD's kind is that server's own state (the
//! store's `failed` flags): a kind registered by one test's server stays unserved (404) on
//! another's until its CRD is stored there too.

use super::resources::{BUILTIN, Resource};
use serde_json::Value;
use std::sync::{LazyLock, RwLock};

/// Built-in kinds beyond those weftd reads or writes (`resources.rs`): what Weft's charts
/// render, so an installation can be applied and read back.
const INSTALLATION: &[Resource] = &[
    installed("", &["v1"], "ServiceAccount", "serviceaccounts", true),
    installed("", &["v1"], "Node", "nodes", false),
    installed("apps", &["v1"], "Deployment", "deployments", true),
    installed("apps", &["v1"], "DaemonSet", "daemonsets", true),
    installed("apps", &["v1"], "ReplicaSet", "replicasets", true),
    installed("policy", &["v1"], "PodDisruptionBudget", "poddisruptionbudgets", true),
    installed("autoscaling", &["v2"], "HorizontalPodAutoscaler", "horizontalpodautoscalers", true),
    installed("rbac.authorization.k8s.io", &["v1"], "ClusterRole", "clusterroles", false),
    installed("rbac.authorization.k8s.io", &["v1"], "ClusterRoleBinding", "clusterrolebindings", false),
    installed("rbac.authorization.k8s.io", &["v1"], "Role", "roles", true),
    installed("rbac.authorization.k8s.io", &["v1"], "RoleBinding", "rolebindings", true),
    installed(
        "admissionregistration.k8s.io",
        &["v1"],
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
    ),
    installed(
        "apiextensions.k8s.io",
        &["v1"],
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
];

const fn installed(
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Resource {
    Resource { group, versions, kind, plural, namespaced, builtin: true }
}

/// The resources in index order; see the module comment.
pub(crate) static RESOURCES: LazyLock<Registry> = LazyLock::new(|| {
    let registry = Registry { entries: RwLock::new(Vec::new()), built_in: 0 };
    for resource in BUILTIN.iter().chain(INSTALLATION) {
        registry.add(resource);
    }
    let built_in = registry.len();
    Registry { built_in, ..registry }
});

pub(crate) struct Registry {
    entries: RwLock<Vec<&'static Resource>>,
    /// Entries before this index are served by every server from the start.
    built_in: usize,
}

impl Registry {
    fn entries(&self) -> std::sync::RwLockReadGuard<'_, Vec<&'static Resource>> {
        self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn iter(&self) -> std::vec::IntoIter<&'static Resource> {
        self.entries().clone().into_iter()
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether a new server serves the resource at `index` before any CRD is stored.
    pub fn served_from_start(&self, index: usize) -> bool {
        index < self.built_in
    }

    /// The index of the resource with `resource`'s group and plural, adding it if new.
    fn add(&self, resource: &'static Resource) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(index) =
            entries.iter().position(|r| r.group == resource.group && r.plural == resource.plural)
        {
            return index;
        }
        entries.push(resource);
        entries.len() - 1
    }

    /// Registers the kind a CustomResourceDefinition defines; returns its index, or `None`
    /// when `object` is no CRD or not one the server can serve (the reason is a test's
    /// mistake, so it is printed).
    pub fn register_crd(&self, object: &Value) -> Option<usize> {
        if object["kind"] != "CustomResourceDefinition" {
            return None;
        }
        match crd_resource(object) {
            Ok(resource) => {
                if let Some(index) = self.position(resource.group, resource.plural) {
                    return Some(index);
                }
                Some(self.add(Box::leak(Box::new(resource))))
            }
            Err(reason) => {
                eprintln!("fake API server: CRD {} not served: {reason}", object["metadata"]["name"]);
                None
            }
        }
    }

    fn position(&self, group: &str, plural: &str) -> Option<usize> {
        self.entries().iter().position(|r| r.group == group && r.plural == plural)
    }
}

impl std::ops::Index<usize> for Registry {
    type Output = Resource;

    fn index(&self, index: usize) -> &Resource {
        self.entries()[index]
    }
}

/// The resource a CRD defines: its group, kind, plural, scope and served versions, the
/// preferred one first (Kubernetes' version priority: GA, then beta, then alpha, newer
/// first). Strings are leaked: a process registers each CRD once.
fn crd_resource(crd: &Value) -> Result<Resource, String> {
    let spec = &crd["spec"];
    let text = |value: &Value, what: &str| -> Result<&'static str, String> {
        let s = value.as_str().filter(|s| !s.is_empty()).ok_or(format!("no {what}"))?;
        Ok(Box::leak(s.to_owned().into_boxed_str()))
    };
    let group = text(&spec["group"], "spec.group")?;
    let kind = text(&spec["names"]["kind"], "spec.names.kind")?;
    let plural = text(&spec["names"]["plural"], "spec.names.plural")?;
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => return Err(format!("spec.scope {other:?} is neither Namespaced nor Cluster")),
    };
    let mut versions: Vec<&'static str> = spec["versions"]
        .as_array()
        .ok_or("no spec.versions")?
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| text(&v["name"], "spec.versions[].name"))
        .collect::<Result<_, _>>()?;
    if versions.is_empty() {
        return Err("no served version".into());
    }
    versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    Ok(Resource {
        group,
        versions: Box::leak(versions.into_boxed_slice()),
        kind,
        plural,
        namespaced,
        builtin: false,
    })
}

/// Kubernetes' order of API versions: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else.
fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else { return (0, 0, 0) };
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let Ok(major) = rest[..digits].parse::<u32>() else { return (0, 0, 0) };
    let (stability, minor) = match &rest[digits..] {
        "" => (3, 0),
        tail => match tail
            .strip_prefix("beta")
            .map(|n| (2, n))
            .or_else(|| tail.strip_prefix("alpha").map(|n| (1, n)))
        {
            Some((stability, n)) => match n.parse() {
                Ok(minor) => (stability, minor),
                Err(_) => return (0, 0, 0),
            },
            None => return (0, 0, 0),
        },
    };
    (stability, major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_crd_defines_a_kind_with_its_preferred_version_first() {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": { "name": "telemetries.telemetry.weft-test.io" },
            "spec": { "group": "telemetry.weft-test.io", "scope": "Cluster",
                      "names": { "kind": "Telemetry", "plural": "telemetries" },
                      "versions": [{ "name": "v1alpha1", "served": true }, { "name": "v1", "served": true },
                                   { "name": "v1beta1", "served": true }, { "name": "v0", "served": false }] },
        });
        let index = RESOURCES.register_crd(&crd).unwrap();
        let r = &RESOURCES[index];
        assert_eq!(
            (r.group, r.kind, r.plural, r.namespaced),
            ("telemetry.weft-test.io", "Telemetry", "telemetries", false)
        );
        assert_eq!(r.versions, ["v1", "v1beta1", "v1alpha1"]);
        assert!(!RESOURCES.served_from_start(index));
        assert_eq!(RESOURCES.register_crd(&crd), Some(index), "registered once");
        let istio = json!({ "kind": "CustomResourceDefinition", "spec": {
            "group": "networking.istio.io", "scope": "Namespaced",
            "names": { "kind": "VirtualService", "plural": "virtualservices" },
            "versions": [{ "name": "v1", "served": true }] } });
        let index = RESOURCES.register_crd(&istio).unwrap();
        assert!(RESOURCES.served_from_start(index), "a kind served from the start keeps its entry");
        assert_eq!(RESOURCES.register_crd(&json!({ "kind": "Pod" })), None);
    }

    #[test]
    fn version_priority_is_kubernetes_order() {
        let mut versions = vec!["v1alpha1", "foo", "v1beta1", "v2", "v1", "v1beta2", "v10alpha1"];
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(versions, ["v2", "v1", "v1beta2", "v1beta1", "v10alpha1", "v1alpha1", "foo"]);
    }
}
