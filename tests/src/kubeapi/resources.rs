//! The resources the fake API server serves: Kubernetes' built-in kinds Weft reads or
//! writes and the Istio and Gateway API custom resources, each in every version the real
//! server offers. (TokenReview is no stored resource: `http.rs` answers it.)

pub(crate) use super::registry::RESOURCES;

/// One resource (a REST collection) the server serves.
#[derive(Debug)]
pub(crate) struct Resource {
    /// API group, "" for the core group.
    pub group: &'static str,
    /// Served versions, preferred first. Objects are stored once per resource and served in
    /// whichever version a client asks for (the versions of Istio's and the Gateway API's
    /// kinds share one schema, so conversion only rewrites `apiVersion`).
    pub versions: &'static [&'static str],
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Built into the API server rather than a CRD: the real server leaves `apiVersion` and
    /// `kind` out of the items of its lists (kubernetes/kubernetes#3030) for these, so the
    /// fake does too, and clients must not depend on them.
    pub builtin: bool,
}

impl Resource {
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_owned() } else { format!("{}/{version}", self.group) }
    }

    /// `kind` or `kind.group`, as tests name resources.
    pub fn matches(&self, name: &str) -> bool {
        match name.split_once('.') {
            Some((kind, group)) => kind == self.kind && group == self.group,
            None => name == self.kind,
        }
    }
}

const CORE: &[&str] = &["v1"];
const ISTIO_NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const ISTIO_SECURITY: &[&str] = &["v1", "v1beta1"];
const GATEWAY_API: &[&str] = &["v1", "v1beta1"];

const fn builtin(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Resource {
    Resource { group, versions: CORE, kind, plural, namespaced, builtin: true }
}

const fn crd(
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
) -> Resource {
    Resource { group, versions, kind, plural, namespaced: true, builtin: false }
}

/// The built-in and custom kinds Weft reads or writes, served from the start; the full
/// registry (with an installation's kinds and CRD-defined ones) is `registry.rs`.
pub(crate) const BUILTIN: &[Resource] = &[
    builtin("", "Namespace", "namespaces", false),
    builtin("", "Pod", "pods", true),
    builtin("", "Service", "services", true),
    builtin("discovery.k8s.io", "EndpointSlice", "endpointslices", true),
    // Written by weftd's CA (its root Secret, the root ConfigMap agents read).
    builtin("", "Secret", "secrets", true),
    builtin("", "ConfigMap", "configmaps", true),
    crd("networking.istio.io", ISTIO_NETWORKING, "VirtualService", "virtualservices"),
    crd("networking.istio.io", ISTIO_NETWORKING, "DestinationRule", "destinationrules"),
    crd("networking.istio.io", ISTIO_NETWORKING, "Gateway", "gateways"),
    crd("networking.istio.io", ISTIO_NETWORKING, "ServiceEntry", "serviceentries"),
    crd("networking.istio.io", ISTIO_NETWORKING, "Sidecar", "sidecars"),
    crd("networking.istio.io", ISTIO_NETWORKING, "WorkloadEntry", "workloadentries"),
    crd("security.istio.io", ISTIO_SECURITY, "AuthorizationPolicy", "authorizationpolicies"),
    crd("security.istio.io", ISTIO_SECURITY, "PeerAuthentication", "peerauthentications"),
    crd("gateway.networking.k8s.io", GATEWAY_API, "Gateway", "gateways"),
    crd("gateway.networking.k8s.io", GATEWAY_API, "HTTPRoute", "httproutes"),
    crd("gateway.networking.k8s.io", &["v1"], "GRPCRoute", "grpcroutes"),
    // v1beta1 only, as Gateway API's standard channel and the base chart serve it.
    crd("gateway.networking.k8s.io", &["v1beta1"], "ReferenceGrant", "referencegrants"),
    // Written by weftd's waypoint controller (with the Gateway's status) and read by weftctl.
    builtin("apps", "Deployment", "deployments", true),
    builtin("", "ServiceAccount", "serviceaccounts", true),
    Resource {
        namespaced: false,
        ..crd("gateway.networking.k8s.io", GATEWAY_API, "GatewayClass", "gatewayclasses")
    },
];

/// The index in [`RESOURCES`] of the resource a test names as `kind` or `kind.group`
/// ("Gateway" is ambiguous: say "Gateway.networking.istio.io" or
/// "Gateway.gateway.networking.k8s.io").
pub(crate) fn by_name(name: &str) -> usize {
    let found: Vec<usize> =
        RESOURCES.iter().enumerate().filter(|(_, r)| r.matches(name)).map(|(i, _)| i).collect();
    match found.as_slice() {
        [index] => *index,
        [] => panic!("the fake API server does not serve a kind {name:?}"),
        _ => panic!("kind {name:?} is ambiguous: name it as kind.group, e.g. Gateway.networking.istio.io"),
    }
}

/// The index of the resource an object's `apiVersion` and `kind` belong to.
pub(crate) fn by_api_version(api_version: &str, kind: &str) -> Option<usize> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    RESOURCES.iter().position(|r| r.group == group && r.kind == kind && r.versions.contains(&version))
}

/// The index of the resource served at `group`/`version`/`plural`.
pub(crate) fn by_path(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.group == group && r.plural == plural && r.versions.contains(&version))
}
