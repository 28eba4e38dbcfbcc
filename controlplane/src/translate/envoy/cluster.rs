//! Clusters (one per service port and DestinationRule subset) and their endpoints.

use super::{Served, cluster_name, listener::ads, traffic_policy};
use crate::config::kinds::{
    destination_rule::Subset,
    kubernetes::{Pod, ServicePort},
};
use envoy_types::pb::envoy::config::{
    cluster::v3::{Cluster, cluster},
    core::v3::{Address, SocketAddress, address, socket_address::PortSpecifier},
    endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
};
use std::collections::HashMap;

/// Whether a service port speaks HTTP/2 upstream (gRPC, h2c), by appProtocol or name as
/// Istio reads it.
fn http2_port(p: &ServicePort) -> bool {
    let proto = p.app_protocol.as_deref().or(p.name.as_deref()).unwrap_or("");
    let proto = proto.split('-').next().unwrap_or("").to_ascii_lowercase();
    matches!(proto.as_str(), "grpc" | "grpc-web" | "http2" | "h2c" | "kubernetes.io/h2c")
}

/// The clusters of one served service: the plain one per port, and one per subset, each
/// with the DestinationRule's policy for that port and subset (`traffic_policy.rs`).
pub fn clusters(served: &[Served<'_>]) -> Vec<Cluster> {
    let mut out = Vec::new();
    for s in served {
        let top = s.destination_rule.and_then(|dr| dr.spec.traffic_policy.as_ref());
        let subsets: Vec<&Subset> =
            s.destination_rule.map(|dr| dr.spec.subsets.iter().collect()).unwrap_or_default();
        for sp in &s.service.spec.ports {
            let port = sp.port as u32;
            let http2 = http2_port(sp);
            let policy = traffic_policy::effective(top, None, port);
            out.push(cluster(cluster_name(port, "", &s.hostname), policy.as_ref(), http2));
            for subset in &subsets {
                let policy = traffic_policy::effective(top, Some(subset), port);
                out.push(cluster(cluster_name(port, &subset.name, &s.hostname), policy.as_ref(), http2));
            }
        }
    }
    out
}

fn cluster(name: String, policy: Option<&traffic_policy::Effective>, http2: bool) -> Cluster {
    let mut c = Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(cluster::EdsClusterConfig { eds_config: Some(ads()), service_name: name }),
        ..Default::default()
    };
    traffic_policy::apply(&mut c, policy, http2);
    c
}

fn endpoint(pod: &Pod, port: u32) -> Option<LbEndpoint> {
    let ip = pod.ips().first()?.to_string();
    Some(LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip,
                    port_specifier: Some(PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    })
}

/// Endpoints for every cluster `clusters` makes: the service's pods, narrowed to a
/// subset's labels, at the pod's target port.
pub fn load_assignments(
    served: &[Served<'_>],
    endpoints: &HashMap<(String, String), Vec<&Pod>>,
) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    for s in served {
        let key = (s.service.metadata.namespace.clone(), s.service.metadata.name.clone());
        let pods = endpoints.get(&key).map(Vec::as_slice).unwrap_or_default();
        let subsets: Vec<&Subset> =
            s.destination_rule.map(|dr| dr.spec.subsets.iter().collect()).unwrap_or_default();
        for sp in &s.service.spec.ports {
            let port = sp.port as u32;
            let mut assign = |subset: &str, filter: &dyn Fn(&Pod) -> bool| {
                let lb_endpoints = pods
                    .iter()
                    .filter(|p| filter(p))
                    .filter_map(|p| endpoint(p, super::super::workload::target_port_for(sp, p)))
                    .collect();
                out.push(ClusterLoadAssignment {
                    cluster_name: cluster_name(port, subset, &s.hostname),
                    endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
                    ..Default::default()
                });
            };
            assign("", &|_| true);
            for subset in &subsets {
                assign(&subset.name, &|p: &Pod| {
                    subset.labels.iter().all(|(k, v)| p.metadata.labels.get(k) == Some(v))
                });
            }
        }
    }
    out
}
