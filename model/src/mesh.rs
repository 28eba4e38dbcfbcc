//! The `--local-config` file: namespaces, pods and services in YAML, validated, and
//! translated into the same `istio.workload.Address` resources weftd would send, so the
//! agent has one model whichever source feeds it.

use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
};
use weft_xds::istio::workload as pb;

/// Label that opts a namespace (or, set to `none`, a pod) in or out of the mesh.
pub const AMBIENT_LABEL: &str = "istio.io/dataplane-mode";
/// Value of [`AMBIENT_LABEL`] that enrolls a namespace.
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";
/// Value of [`AMBIENT_LABEL`] on a pod that keeps it out of an enrolled namespace.
pub const DATAPLANE_MODE_NONE: &str = "none";

/// The whole model as one YAML document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mesh {
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    #[serde(default)]
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    /// Kubernetes' `metadata.uid`. The agent binds an enrolled pod to its network
    /// namespace by this UID (the CNI handover, the kubelet cgroup `pod<uid>`), never by
    /// its IP; a pod without one is never enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub ip: IpAddr,
    /// The node the pod runs on; each agent serves the pods of its own node. Empty for a
    /// workload on no node of this cluster (a VM, another cluster): never enrolled here.
    pub node: String,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// The workload (Deployment) the pod belongs to, as Istio's `*_workload` labels
    /// name it; defaults to the pod name.
    #[serde(default)]
    pub workload: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Container ports, as a Pod spec lists them. Informational: inbound capture steers
    /// every port of an enrolled pod (Istio's behaviour), not only these.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Services this pod backs, as `namespace/name`, besides those whose selector picks
    /// it: Istio's workload API states membership this way, not by selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// The cluster IP.
    pub vip: IpAddr,
    pub ports: Vec<ServicePort>,
    /// Pods whose labels include all of these back the service.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    pub port: u16,
    /// Defaults to `port`, as in Kubernetes.
    #[serde(default)]
    pub target_port: Option<u16>,
}

impl ServicePort {
    pub fn target(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

fn default_service_account() -> String {
    "default".to_owned()
}

/// Why a model document was refused. The agent keeps its last good model on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The text is not YAML of the model's shape (syntax, unknown field, wrong type).
    #[error("{source_name}{location}: {message}")]
    Parse { source_name: String, location: String, message: String },
    /// The document parsed but says something impossible.
    #[error("{source_name}: {object}: field {field}: {reason}")]
    Invalid { source_name: String, object: String, field: &'static str, reason: String },
}

/// Whether `uid` is spelled as Kubernetes writes `metadata.uid`: an RFC 4122 UUID in
/// lowercase hex, `8-4-4-4-12`. The agent builds cgroup paths from it, so nothing else
/// (no `/`, no `..`) may pass.
pub fn is_pod_uid(uid: &str) -> bool {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut parts = uid.split('-');
    GROUPS.iter().all(|&len| {
        parts.next().is_some_and(|p| {
            p.len() == len && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }) && parts.next().is_none()
}

impl Pod {
    pub fn workload_name(&self) -> &str {
        self.workload.as_deref().unwrap_or(&self.name)
    }

    /// The SPIFFE identity the pod runs as.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!("spiffe://{trust_domain}/ns/{}/sa/{}", self.namespace, self.service_account)
    }
}

impl Service {
    /// `name.namespace.svc.cluster.local`, as Istio's `destination_service` label has it.
    pub fn hostname(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// Whether `pod` backs this service: by selector, or by the pod's own list.
    pub fn selects(&self, pod: &Pod) -> bool {
        let by_selector = pod.namespace == self.namespace
            && !self.selector.is_empty()
            && self.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v));
        by_selector
            || pod
                .services
                .iter()
                .any(|s| s.split_once('/') == Some((self.namespace.as_str(), self.name.as_str())))
    }
}

impl Mesh {
    /// Parses and validates one YAML document. `source_name` (a file path) prefixes
    /// every error so a person knows where to look.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Mesh, ModelError> {
        let mesh: Mesh = serde_yaml::from_str(text).map_err(|e| ModelError::Parse {
            source_name: source_name.to_owned(),
            location: e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default(),
            message: e.to_string(),
        })?;
        mesh.validate(source_name)?;
        Ok(mesh)
    }

    /// Checks a model built in code (e.g. from xDS) by the same rules as a parsed one.
    pub fn validate(&self, source_name: &str) -> Result<(), ModelError> {
        let invalid = |object: String, field: &'static str, reason: String| ModelError::Invalid {
            source_name: source_name.to_owned(),
            object,
            field,
            reason,
        };
        let mut namespaces = HashSet::new();
        for ns in &self.namespaces {
            if !namespaces.insert(ns.name.as_str()) {
                return Err(invalid(format!("Namespace/{}", ns.name), "name", "defined twice".into()));
            }
        }
        let mut ips = HashSet::new();
        let mut pod_names = HashSet::new();
        let mut uids = HashSet::new();
        for pod in &self.pods {
            let object = format!("Pod/{}/{}", pod.namespace, pod.name);
            if !pod_names.insert((pod.namespace.as_str(), pod.name.as_str())) {
                return Err(invalid(object, "name", "defined twice".into()));
            }
            if let Some(uid) = &pod.uid {
                if !is_pod_uid(uid) {
                    return Err(invalid(
                        object,
                        "uid",
                        format!("{uid:?} is not a Kubernetes UID (8-4-4-4-12 lowercase hex digits)"),
                    ));
                }
                if !uids.insert(uid.as_str()) {
                    return Err(invalid(object, "uid", format!("{uid} is already another pod's")));
                }
            }
            if !ips.insert(pod.ip) {
                return Err(invalid(object, "ip", format!("{} is already another pod's", pod.ip)));
            }
            if pod.ip.is_unspecified() || pod.ip.is_loopback() || pod.ip.is_multicast() {
                return Err(invalid(object, "ip", format!("{} is not a unicast pod address", pod.ip)));
            }
            if pod.ports.contains(&0) {
                return Err(invalid(object, "ports", "port 0 is not a port".into()));
            }
        }
        let mut vips = HashSet::new();
        for svc in &self.services {
            let object = format!("Service/{}/{}", svc.namespace, svc.name);
            if !vips.insert(svc.vip) || ips.contains(&svc.vip) {
                return Err(invalid(object, "vip", format!("{} is already in use", svc.vip)));
            }
            if svc.ports.is_empty() {
                return Err(invalid(object, "ports", "a service needs at least one port".into()));
            }
            let mut ports = HashSet::new();
            for p in &svc.ports {
                if p.port == 0 || p.target_port == Some(0) {
                    return Err(invalid(object, "ports", "port 0 is not a port".into()));
                }
                if !ports.insert(p.port) {
                    return Err(invalid(object, "ports", format!("port {} listed twice", p.port)));
                }
            }
        }
        Ok(())
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    /// Whether the pod's traffic is captured: its namespace carries
    /// `istio.io/dataplane-mode=ambient` and the pod does not opt out with `=none`.
    pub fn is_enrolled(&self, pod: &Pod) -> bool {
        let ns_ambient = self
            .namespace(&pod.namespace)
            .and_then(|ns| ns.labels.get(AMBIENT_LABEL))
            .is_some_and(|v| v == DATAPLANE_MODE_AMBIENT);
        let pod_opted_out = pod.labels.get(AMBIENT_LABEL).is_some_and(|v| v == DATAPLANE_MODE_NONE);
        ns_ambient && !pod_opted_out
    }

    /// The Addresses weftd would send for this model, named as weftd names them: a
    /// Workload per pod (HBONE when enrolled, its services' ports, its identity) and a
    /// Service per service.
    pub fn to_addresses(&self, trust_domain: &str) -> Vec<(String, pb::Address)> {
        let mut out = Vec::with_capacity(self.services.len() + self.pods.len());
        for svc in &self.services {
            let message = pb::Service {
                name: svc.name.clone(),
                namespace: svc.namespace.clone(),
                hostname: svc.hostname(),
                addresses: vec![pb::NetworkAddress {
                    network: String::new(),
                    address: ip_bytes(svc.vip),
                    length: None,
                }],
                ports: svc
                    .ports
                    .iter()
                    .map(|p| pb::Port { service_port: p.port.into(), target_port: p.target().into() })
                    .collect(),
                ..Default::default()
            };
            let name = format!("{}/{}", svc.namespace, svc.hostname());
            out.push((name, pb::Address { r#type: Some(pb::address::Type::Service(message)) }));
        }
        for pod in &self.pods {
            let services = self
                .services
                .iter()
                .filter(|s| s.selects(pod))
                .map(|s| {
                    let ports = s
                        .ports
                        .iter()
                        .map(|p| pb::Port { service_port: p.port.into(), target_port: p.target().into() })
                        .collect();
                    (format!("{}/{}", s.namespace, s.hostname()), pb::PortList { ports })
                })
                .collect();
            let extensions = pod.uid.iter().map(|uid| weft_xds::istio::pod_uid_extension(uid)).collect();
            let w = pb::Workload {
                uid: format!("{LOCAL_CLUSTER}//Pod/{}/{}", pod.namespace, pod.name),
                name: pod.name.clone(),
                namespace: pod.namespace.clone(),
                addresses: vec![ip_bytes(pod.ip)],
                tunnel_protocol: if self.is_enrolled(pod) {
                    pb::TunnelProtocol::Hbone
                } else {
                    pb::TunnelProtocol::None
                } as i32,
                trust_domain: trust_domain.to_owned(),
                service_account: pod.service_account.clone(),
                node: pod.node.clone(),
                canonical_name: pod.labels.get("app").cloned().unwrap_or_else(|| pod.name.clone()),
                canonical_revision: pod.labels.get("version").cloned().unwrap_or_else(|| "latest".to_owned()),
                workload_name: pod.workload_name().to_owned(),
                services,
                cluster_id: LOCAL_CLUSTER.to_owned(),
                extensions,
                ..Default::default()
            };
            out.push((w.uid.clone(), pb::Address { r#type: Some(pb::address::Type::Workload(w)) }));
        }
        out
    }
}

/// The cluster id local-config workloads carry, as weftd's default.
const LOCAL_CLUSTER: &str = "Kubernetes";

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
namespaces:
  - name: bookinfo
    labels: { istio.io/dataplane-mode: ambient }
  - name: legacy
pods:
  - { name: reviews-v1, namespace: bookinfo, ip: 198.18.1.2, node: n1, labels: { app: reviews }, ports: [9080] }
  - { name: ratings, namespace: bookinfo, ip: 198.18.1.3, node: n1, labels: { app: ratings, istio.io/dataplane-mode: none } }
  - { name: old, namespace: legacy, ip: 198.18.2.2, node: n2 }
services:
  - name: reviews
    namespace: bookinfo
    vip: 198.19.0.10
    ports: [{ port: 80, targetPort: 9080 }, { port: 9090 }]
    selector: { app: reviews }
"#;

    #[test]
    fn parses_and_answers_enrollment() {
        let mesh = Mesh::from_yaml(DOC, "mesh.yaml").unwrap();
        assert!(mesh.is_enrolled(&mesh.pods[0]));
        assert!(!mesh.is_enrolled(&mesh.pods[1]), "pod label none opts out");
        assert!(!mesh.is_enrolled(&mesh.pods[2]), "namespace without the label");
        assert_eq!(mesh.pods[0].service_account, "default");
        assert_eq!(mesh.services[0].hostname(), "reviews.bookinfo.svc.cluster.local");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = Mesh::from_yaml("pods:\n  - name: [unclosed\n", "conf/mesh.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("conf/mesh.yaml:"), "{msg}");
        assert!(matches!(err, ModelError::Parse { ref location, .. } if !location.is_empty()), "{msg}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let err = Mesh::from_yaml("pods: []\nservise: []\n", "m.yaml").unwrap_err();
        assert!(err.to_string().contains("servise"), "{err}");
    }

    #[test]
    fn duplicate_pod_ip_names_the_object_and_field() {
        let doc = "pods:\n - {name: a, namespace: x, ip: 198.18.1.2, node: n1}\n - {name: b, namespace: x, ip: 198.18.1.2, node: n1}\n";
        let err = Mesh::from_yaml(doc, "m.yaml").unwrap_err().to_string();
        assert!(err.contains("Pod/x/b") && err.contains("field ip"), "{err}");
    }

    #[test]
    fn pod_uids_are_checked_for_shape_and_uniqueness() {
        assert!(is_pod_uid("3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10"));
        for bad in [
            "3F2C1A9E-0B1D-4C55-9A57-1E0B4F6D2A10",
            "3f2c1a9e0b1d4c559a571e0b4f6d2a10",
            "3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a1",
            "3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10-00",
            "../../../../etc-0b1d-4c55-9a57-1e0b4f6d2a10",
            "",
        ] {
            assert!(!is_pod_uid(bad), "{bad:?}");
        }
        let uid = "3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10";
        let doc = format!(
            "pods:\n - {{name: a, namespace: x, uid: {uid}, ip: 198.18.1.2, node: n1}}\n - {{name: b, namespace: x, uid: {uid}, ip: 198.18.1.3, node: n1}}\n"
        );
        let err = Mesh::from_yaml(&doc, "m.yaml").unwrap_err().to_string();
        assert!(err.contains("Pod/x/b") && err.contains("field uid"), "{err}");
        let err = Mesh::from_yaml(
            "pods:\n - {name: a, namespace: x, uid: a/b, ip: 198.18.1.2, node: n1}\n",
            "m.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("field uid") && err.contains("not a Kubernetes UID"), "{err}");
        let mesh = Mesh::from_yaml(
            &doc.replace("uid: 3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10, ip: 198.18.1.3", "ip: 198.18.1.3"),
            "m.yaml",
        )
        .unwrap();
        assert_eq!(mesh.pods[0].uid.as_deref(), Some(uid));
        assert_eq!(mesh.pods[1].uid, None);
    }

    #[test]
    fn vip_clashing_with_pod_ip_is_refused() {
        let doc = "pods:\n - {name: a, namespace: x, ip: 198.18.1.2, node: n1}\nservices:\n - {name: s, namespace: x, vip: 198.18.1.2, ports: [{port: 80}]}\n";
        let err = Mesh::from_yaml(doc, "m.yaml").unwrap_err().to_string();
        assert!(err.contains("Service/x/s") && err.contains("field vip"), "{err}");
    }
}
