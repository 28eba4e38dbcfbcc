//! Kubernetes core kinds: Namespace, Pod, Service (group "") and EndpointSlice
//! (`discovery.k8s.io`). Only the fields the mesh needs; everything else a real object
//! carries is ignored, so these structs do not deny unknown fields.
//!
//! The test bed's inventory is written as plain Pods with `status.podIP` and
//! `spec.nodeName`; no special kind is needed.

use super::{IntOrString, ObjectMeta};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, net::IpAddr};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    pub status: PodStatus,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub node_name: Option<String>,
    pub service_account_name: Option<String>,
    pub host_network: bool,
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: i32,
    /// TCP (the default), UDP or SCTP.
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodIp {
    pub ip: String,
}

impl Pod {
    /// The pod's addresses: `status.podIPs`, or `status.podIP` when that list is empty.
    /// Validation has checked that they parse.
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.status.pod_ips.iter().filter_map(|p| p.ip.parse().ok()).collect();
        if let Some(ip) = self.status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
            && !ips.contains(&ip)
        {
            ips.insert(0, ip);
        }
        ips
    }

    /// The service account, `default` when unset (as Kubernetes fills it in).
    pub fn service_account(&self) -> &str {
        self.spec.service_account_name.as_deref().filter(|s| !s.is_empty()).unwrap_or("default")
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Service {
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// ClusterIP (the default), NodePort, LoadBalancer or ExternalName.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    pub external_name: Option<String>,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: i32,
    /// A number, or the name of a container port; the service port when unset.
    pub target_port: Option<IntOrString>,
    /// TCP (the default), UDP or SCTP.
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
    pub node_port: Option<i32>,
}

impl Service {
    /// `spec.clusterIPs`, or `spec.clusterIP` when that list is empty; "None" (headless)
    /// and unparseable values are left out.
    pub fn cluster_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.spec.cluster_ips.iter().filter_map(|ip| ip.parse().ok()).collect();
        if let Some(ip) = self.spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
            && !ips.contains(&ip)
        {
            ips.insert(0, ip);
        }
        ips
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSlice {
    pub metadata: ObjectMeta,
    /// IPv4, IPv6 or FQDN.
    pub address_type: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<EndpointPort>,
}

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl EndpointSlice {
    pub fn service_name(&self) -> Option<&str> {
        self.metadata.labels.get(SERVICE_NAME_LABEL).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoint {
    pub addresses: Vec<String>,
    pub conditions: EndpointConditions,
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub target_ref: Option<ObjectReference>,
}

/// Kubernetes says an unknown `ready` must be read as ready.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

impl EndpointConditions {
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectReference {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: Option<i32>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}
