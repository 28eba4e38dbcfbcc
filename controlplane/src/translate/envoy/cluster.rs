//! Clusters (one per service port and DestinationRule subset) and their endpoints.

use super::{Served, cluster_name, listener::ads};
use crate::config::kinds::{
    destination_rule::{SimpleLb, Subset, TrafficPolicy},
    kubernetes::Pod,
};
use envoy_types::pb::{
    envoy::config::{
        cluster::v3::{CircuitBreakers, Cluster, OutlierDetection, circuit_breakers::Thresholds, cluster},
        core::v3::{Address, SocketAddress, address, socket_address::PortSpecifier},
        endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
    },
    google::protobuf::{Duration as PbDuration, UInt32Value},
};
use std::{collections::HashMap, time::Duration};

/// Istio's default connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn pb(d: Duration) -> PbDuration {
    PbDuration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn u32v(v: i32) -> Option<UInt32Value> {
    Some(UInt32Value { value: v.max(0) as u32 })
}

/// The clusters of one served service: the plain one per port, and one per subset.
pub fn clusters(served: &[Served<'_>]) -> Vec<Cluster> {
    let mut out = Vec::new();
    for s in served {
        let top = s.destination_rule.and_then(|dr| dr.spec.traffic_policy.as_ref());
        let subsets: Vec<&Subset> =
            s.destination_rule.map(|dr| dr.spec.subsets.iter().collect()).unwrap_or_default();
        for port in &s.service.spec.ports {
            let port = port.port as u32;
            out.push(cluster(cluster_name(port, "", &s.hostname), top));
            for subset in &subsets {
                // A subset's policy replaces the top-level one, as in Istio.
                let policy = subset.traffic_policy.as_ref().or(top);
                out.push(cluster(cluster_name(port, &subset.name, &s.hostname), policy));
            }
        }
    }
    out
}

fn cluster(name: String, policy: Option<&TrafficPolicy>) -> Cluster {
    let lb = policy.and_then(|p| p.load_balancer.as_ref());
    let lb_policy = match lb.and_then(|l| l.simple.as_ref()) {
        Some(SimpleLb::RoundRobin) => cluster::LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => cluster::LbPolicy::Random,
        _ if lb.is_some_and(|l| l.consistent_hash.is_some()) => cluster::LbPolicy::RingHash,
        // Istio's default (and LEAST_CONN's meaning).
        _ => cluster::LbPolicy::LeastRequest,
    };
    let pool = policy.and_then(|p| p.connection_pool.as_ref());
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    let thresholds = Thresholds {
        max_connections: tcp.and_then(|t| t.max_connections).and_then(u32v),
        max_pending_requests: http.and_then(|h| h.http1_max_pending_requests).and_then(u32v),
        max_requests: http.and_then(|h| h.http2_max_requests).and_then(u32v),
        max_retries: http.and_then(|h| h.max_retries).and_then(u32v),
        ..Default::default()
    };
    let outlier_detection = policy.and_then(|p| p.outlier_detection.as_ref()).map(|o| OutlierDetection {
        consecutive_5xx: o.consecutive5xx_errors.and_then(|v| u32v(v as i32)),
        consecutive_gateway_failure: o.consecutive_gateway_errors.and_then(|v| u32v(v as i32)),
        interval: o.interval.as_ref().map(|d| pb(d.0)),
        base_ejection_time: o.base_ejection_time.as_ref().map(|d| pb(d.0)),
        max_ejection_percent: o.max_ejection_percent.and_then(u32v),
        ..Default::default()
    });
    Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(cluster::EdsClusterConfig { eds_config: Some(ads()), service_name: name }),
        connect_timeout: Some(pb(tcp
            .and_then(|t| t.connect_timeout.as_ref())
            .map_or(CONNECT_TIMEOUT, |d| d.0))),
        lb_policy: lb_policy as i32,
        circuit_breakers: Some(CircuitBreakers { thresholds: vec![thresholds], ..Default::default() }),
        outlier_detection,
        ..Default::default()
    }
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
