//! Typed forms of every kind weftd reads, one file per API group or kind.
//!
//! Istio and Gateway API `spec`s reject unknown fields (`deny_unknown_fields`), as Istio's
//! own schema does, so a typo is an error instead of a silently ignored setting. Kubernetes
//! core kinds are read leniently: their objects carry many fields weftd does not need.
//! Defaults are Istio's: an absent field is `None`, an empty list or map, or the documented
//! default value of an enum.

pub mod destination_rule;
pub mod gateway_api;
pub mod kubernetes;
pub mod labels;
pub mod networking;
pub mod security;
pub mod virtual_service;

use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, sync::Arc};

pub use destination_rule::DestinationRule;
pub use gateway_api::{HttpRoute, KubernetesGateway, ReferenceGrant};
pub use kubernetes::{EndpointSlice, Namespace, Pod, Service};
pub use labels::Labels;
pub use networking::{Gateway, ServiceEntry, Sidecar, WorkloadEntry};
pub use security::{AuthorizationPolicy, PeerAuthentication};
pub use virtual_service::VirtualService;

/// The part of Kubernetes' `metadata` that weftd uses. Unknown metadata fields
/// (`managedFields`, `ownerReferences`, …) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    pub name: String,
    /// Filled in by parsing from the object's key: the source's default (`default`) when
    /// the YAML leaves it out; empty for cluster-scoped kinds.
    pub namespace: String,
    /// The API server's UID for the object. weftd sends a pod's to its node agent, which
    /// binds the pod to its network namespace by it (CNI handover, kubelet cgroup
    /// `pod<uid>`); absent in files unless written there (the test bed writes it).
    pub uid: Option<String>,
    pub labels: Labels,
    pub annotations: Labels,
    /// RFC 3339, as the API server writes it; absent in files.
    pub creation_timestamp: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
}

/// Istio's `WorkloadSelector` in networking APIs (`labels`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct WorkloadSelector {
    pub labels: BTreeMap<String, String>,
}

/// Istio's `type.v1beta1.WorkloadSelector` in security APIs (`matchLabels`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct MatchLabelsSelector {
    pub match_labels: BTreeMap<String, String>,
}

/// Istio's `PolicyTargetReference` (`targetRef`/`targetRefs`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PolicyTargetReference {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// A percentage `{value: 12.5}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Percent {
    pub value: f64,
}

/// Every kind weftd understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    EndpointSlice,
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    AuthorizationPolicy,
    PeerAuthentication,
    /// `gateway.networking.k8s.io` Gateway.
    KubernetesGateway,
    HttpRoute,
    /// `gateway.networking.k8s.io` ReferenceGrant: what may refer across namespaces.
    ReferenceGrant,
}

pub const NETWORKING_ISTIO: &str = "networking.istio.io";
pub const SECURITY_ISTIO: &str = "security.istio.io";
pub const GATEWAY_API: &str = "gateway.networking.k8s.io";
pub const DISCOVERY: &str = "discovery.k8s.io";

/// What weftd does with a (group, kind) it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindLookup {
    /// Parsed, validated and served.
    Supported(Kind),
    /// A real kind weftd has no use for (a Deployment in a manifest directory): skipped
    /// without a word, like `istioctl analyze` skips kinds it does not analyze.
    Ignored,
    /// A real Istio or Gateway API kind that weftd does not implement: skipped with a
    /// warning, because its author expects it to do something.
    Unsupported,
    /// Not a kind of its group (a typo): an error.
    Unknown,
}

const ALL_KINDS: [Kind; 15] = [
    Kind::Namespace,
    Kind::Pod,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::Gateway,
    Kind::ServiceEntry,
    Kind::Sidecar,
    Kind::WorkloadEntry,
    Kind::AuthorizationPolicy,
    Kind::PeerAuthentication,
    Kind::KubernetesGateway,
    Kind::HttpRoute,
    Kind::ReferenceGrant,
];

impl Kind {
    pub fn all() -> &'static [Kind] {
        &ALL_KINDS
    }

    /// API group without version ("" for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::Service => "",
            Kind::EndpointSlice => DISCOVERY,
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::Sidecar
            | Kind::WorkloadEntry => NETWORKING_ISTIO,
            Kind::AuthorizationPolicy | Kind::PeerAuthentication => SECURITY_ISTIO,
            Kind::KubernetesGateway | Kind::HttpRoute | Kind::ReferenceGrant => GATEWAY_API,
        }
    }

    /// The `kind:` as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway | Kind::KubernetesGateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::HttpRoute => "HTTPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
        }
    }

    /// API versions accepted (all parsed identically).
    pub fn versions(self) -> &'static [&'static str] {
        match self.group() {
            "" | DISCOVERY => &["v1"],
            NETWORKING_ISTIO => &["v1", "v1beta1", "v1alpha3"],
            SECURITY_ISTIO => &["v1", "v1beta1"],
            _ => &["v1", "v1beta1"],
        }
    }

    pub fn is_cluster_scoped(self) -> bool {
        self == Kind::Namespace
    }

    /// The [`ObjectKey`](crate::source::ObjectKey) of an object of this kind, e.g. to look
    /// up its origin in a [`ConfigSnapshot`](crate::config::ConfigSnapshot).
    pub fn key(self, meta: &ObjectMeta) -> crate::source::ObjectKey {
        crate::source::ObjectKey {
            group: self.group().to_string(),
            kind: self.name().to_string(),
            namespace: (!self.is_cluster_scoped()).then(|| meta.namespace.clone()),
            name: meta.name.clone(),
        }
    }

    /// Classifies a (group, kind) pair.
    pub fn lookup(group: &str, kind: &str) -> KindLookup {
        if let Some(k) = ALL_KINDS.iter().find(|k| k.group() == group && k.name() == kind) {
            return KindLookup::Supported(*k);
        }
        let unsupported: &[&str] = match group {
            NETWORKING_ISTIO => &["EnvoyFilter", "WorkloadGroup", "ProxyConfig"],
            SECURITY_ISTIO => &["RequestAuthentication"],
            "telemetry.istio.io" => &["Telemetry"],
            "extensions.istio.io" => &["WasmPlugin"],
            GATEWAY_API => {
                &["GRPCRoute", "TCPRoute", "TLSRoute", "UDPRoute", "BackendTLSPolicy", "ListenerSet"]
            }
            _ => &[],
        };
        if unsupported.contains(&kind) {
            return KindLookup::Unsupported;
        }
        let ignored: &[&str] = match group {
            "" => &[
                "ConfigMap",
                "Secret",
                "ServiceAccount",
                "Endpoints",
                "Node",
                "PersistentVolumeClaim",
                "PersistentVolume",
                "LimitRange",
                "ResourceQuota",
                "Event",
                "ReplicationController",
                "List",
            ],
            "apps" => &["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ControllerRevision"],
            "batch" => &["Job", "CronJob"],
            "rbac.authorization.k8s.io" => &["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"],
            "policy" => &["PodDisruptionBudget"],
            "autoscaling" => &["HorizontalPodAutoscaler"],
            "networking.k8s.io" => &["NetworkPolicy", "Ingress", "IngressClass"],
            "apiextensions.k8s.io" => &["CustomResourceDefinition"],
            "admissionregistration.k8s.io" => {
                &["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
            }
            "coordination.k8s.io" => &["Lease"],
            // A class declaration has no routing effect of its own.
            GATEWAY_API => &["GatewayClass"],
            _ => &[],
        };
        if ignored.contains(&kind) { KindLookup::Ignored } else { KindLookup::Unknown }
    }
}

/// Whether objects of this (group, kind) live outside namespaces; sources use it to leave
/// `ObjectKey::namespace` empty instead of defaulting it.
pub fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Namespace" | "Node" | "PersistentVolume")
            | ("rbac.authorization.k8s.io", "ClusterRole" | "ClusterRoleBinding")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("admissionregistration.k8s.io", _)
            | ("networking.k8s.io", "IngressClass")
            | (GATEWAY_API, "GatewayClass")
    )
}

/// Splits `apiVersion` into (group, version): `"v1"` → `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// One parsed, validated object.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigObject {
    Namespace(Arc<Namespace>),
    Pod(Arc<Pod>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    VirtualService(Arc<VirtualService>),
    DestinationRule(Arc<DestinationRule>),
    Gateway(Arc<Gateway>),
    ServiceEntry(Arc<ServiceEntry>),
    Sidecar(Arc<Sidecar>),
    WorkloadEntry(Arc<WorkloadEntry>),
    AuthorizationPolicy(Arc<AuthorizationPolicy>),
    PeerAuthentication(Arc<PeerAuthentication>),
    KubernetesGateway(Arc<KubernetesGateway>),
    HttpRoute(Arc<HttpRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
}

impl ConfigObject {
    pub fn kind(&self) -> Kind {
        match self {
            ConfigObject::Namespace(_) => Kind::Namespace,
            ConfigObject::Pod(_) => Kind::Pod,
            ConfigObject::Service(_) => Kind::Service,
            ConfigObject::EndpointSlice(_) => Kind::EndpointSlice,
            ConfigObject::VirtualService(_) => Kind::VirtualService,
            ConfigObject::DestinationRule(_) => Kind::DestinationRule,
            ConfigObject::Gateway(_) => Kind::Gateway,
            ConfigObject::ServiceEntry(_) => Kind::ServiceEntry,
            ConfigObject::Sidecar(_) => Kind::Sidecar,
            ConfigObject::WorkloadEntry(_) => Kind::WorkloadEntry,
            ConfigObject::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            ConfigObject::PeerAuthentication(_) => Kind::PeerAuthentication,
            ConfigObject::KubernetesGateway(_) => Kind::KubernetesGateway,
            ConfigObject::HttpRoute(_) => Kind::HttpRoute,
            ConfigObject::ReferenceGrant(_) => Kind::ReferenceGrant,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            ConfigObject::Namespace(o) => &o.metadata,
            ConfigObject::Pod(o) => &o.metadata,
            ConfigObject::Service(o) => &o.metadata,
            ConfigObject::EndpointSlice(o) => &o.metadata,
            ConfigObject::VirtualService(o) => &o.metadata,
            ConfigObject::DestinationRule(o) => &o.metadata,
            ConfigObject::Gateway(o) => &o.metadata,
            ConfigObject::ServiceEntry(o) => &o.metadata,
            ConfigObject::Sidecar(o) => &o.metadata,
            ConfigObject::WorkloadEntry(o) => &o.metadata,
            ConfigObject::AuthorizationPolicy(o) => &o.metadata,
            ConfigObject::PeerAuthentication(o) => &o.metadata,
            ConfigObject::KubernetesGateway(o) => &o.metadata,
            ConfigObject::HttpRoute(o) => &o.metadata,
            ConfigObject::ReferenceGrant(o) => &o.metadata,
        }
    }
}

/// Deserializes a number that may also be written as a string ("8080"), as Kubernetes
/// accepts for int-or-string fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v).map(IntOrString::Int).map_err(|_| E::custom("integer out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}
