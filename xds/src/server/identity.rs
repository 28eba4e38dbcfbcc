//! Who is on the other end of a stream: the proxy identity taken from the Envoy `Node` of
//! its first request, which is what resource scopes are matched against.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use serde::Serialize;

/// Node metadata key carrying the Kubernetes node a proxy runs on (Istio's name for it).
pub const NODE_NAME: &str = "NODE_NAME";
/// Node metadata key carrying the proxy's namespace (Istio's name for it).
pub const NAMESPACE: &str = "NAMESPACE";
/// Node metadata key carrying the proxy pod's labels, a struct of strings (Istio's name
/// for it): gateways are chosen by label, as Istio's `Gateway.spec.selector` does.
pub const LABELS: &str = "LABELS";
/// Node metadata key carrying the proxy's Istio version (`pilot_xds{version}`).
pub const ISTIO_VERSION: &str = "ISTIO_VERSION";

/// The identity a proxy presented on its stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProxyIdentity {
    /// `node.id` as sent. Unique per proxy by convention, not enforced: two streams may
    /// carry the same id (a reconnect racing the old stream's teardown).
    pub id: String,
    /// Kubernetes node name, from the `NODE_NAME` metadata field.
    pub node_name: Option<String>,
    /// Namespace, from the `NAMESPACE` metadata field or else from an Istio-style id.
    pub namespace: Option<String>,
    /// The proxy pod's labels, from the `LABELS` metadata struct.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The proxy's version, from the `ISTIO_VERSION` metadata field.
    pub version: Option<String>,
}

impl ProxyIdentity {
    /// Reads the identity from a request's `node`. A missing node gives an anonymous identity
    /// that only sees resources scoped to everyone.
    pub fn from_node(node: Option<&Node>) -> Self {
        let Some(node) = node else { return Self::default() };
        let metadata = node.metadata.as_ref();
        let node_name = metadata.and_then(|m| string_field(m, NODE_NAME));
        let namespace =
            metadata.and_then(|m| string_field(m, NAMESPACE)).or_else(|| namespace_from_istio_id(&node.id));
        let labels = metadata
            .and_then(|m| match m.fields.get(LABELS)?.kind.as_ref()? {
                Kind::StructValue(s) => Some(
                    s.fields
                        .iter()
                        .filter_map(|(k, v)| match v.kind.as_ref()? {
                            Kind::StringValue(v) => Some((k.clone(), v.clone())),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        let version = metadata.and_then(|m| string_field(m, ISTIO_VERSION));
        Self { id: node.id.clone(), node_name, namespace, labels, version }
    }
}

/// A non-empty string field of node metadata.
fn string_field(metadata: &Struct, key: &str) -> Option<String> {
    match metadata.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Istio proxies identify as `type~ip~pod.namespace~namespace.svc.cluster.local`
/// (e.g. `sidecar~10.0.0.1~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local`). The DNS
/// domain's first label is the namespace; the pod segment is a fallback because pod names
/// may themselves contain dots.
fn namespace_from_istio_id(id: &str) -> Option<String> {
    let parts: Vec<&str> = id.split('~').collect();
    let [_kind, _ip, pod, domain] = parts.as_slice() else { return None };
    let from_domain = domain.split('.').next().filter(|s| !s.is_empty());
    let from_pod = pod.rsplit_once('.').map(|(_, ns)| ns).filter(|s| !s.is_empty());
    from_domain.or(from_pod).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Value;

    fn node(id: &str, meta: &[(&str, &str)]) -> Node {
        let fields = meta
            .iter()
            .map(|(k, v)| (k.to_string(), Value { kind: Some(Kind::StringValue(v.to_string())) }))
            .collect();
        Node { id: id.into(), metadata: Some(Struct { fields }), ..Default::default() }
    }

    #[test]
    fn metadata_wins_over_the_id() {
        let id = ProxyIdentity::from_node(Some(&node(
            "sidecar~10.0.0.1~p.other~other.svc.cluster.local",
            &[(NODE_NAME, "n1"), (NAMESPACE, "ns1")],
        )));
        assert_eq!(id.node_name.as_deref(), Some("n1"));
        assert_eq!(id.namespace.as_deref(), Some("ns1"));
    }

    #[test]
    fn namespace_from_istio_id_format() {
        let id = ProxyIdentity::from_node(Some(&node(
            "sidecar~10.0.0.1~reviews.v1.bookinfo~bookinfo.svc.cluster.local",
            &[],
        )));
        assert_eq!(id.namespace.as_deref(), Some("bookinfo"));
        assert_eq!(id.node_name, None);
        let id = ProxyIdentity::from_node(Some(&node("ztunnel~10.0.0.1~zt.istio-system~", &[])));
        assert_eq!(id.namespace.as_deref(), Some("istio-system"));
        let id = ProxyIdentity::from_node(Some(&node("agent-1", &[])));
        assert_eq!(id.namespace, None);
    }

    #[test]
    fn no_node_is_anonymous() {
        assert_eq!(ProxyIdentity::from_node(None), ProxyIdentity::default());
    }
}
