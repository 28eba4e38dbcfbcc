//! Clusters (one per service port and DestinationRule subset) and their endpoints, and the
//! two fixed clusters of a waypoint's HBONE plumbing (`main_internal`, `connect_originate`;
//! see `listener.rs` for the whole way).
//!
//! A service cluster's endpoints are not addresses Envoy dials: an enrolled pod is an
//! internal address of the `connect_originate` listener, carrying the pod's
//! `POD_IP:TARGET_PORT` as original-destination metadata (Istio's shape) and the identity
//! the pod must present (`weft.identity`, Weft's own). A pod outside the mesh is its plain
//! socket address, reached in plaintext, as Istio's waypoints do.

use super::{
    CONNECT_ORIGINATE, HBONE_PORT, MAIN_INTERNAL, ORIGINAL_DST_KEY, Served, cluster_name_for, listener::ads,
    protocol::PortProtocol, tls, traffic_policy,
};
use crate::{
    config::{
        kinds::{destination_rule::Subset, kubernetes::Pod},
        store::ConfigSnapshot,
    },
    translate::{Options, workload},
};
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{Cluster, cluster},
            core::v3::{
                Address, EnvoyInternalAddress, Http2ProtocolOptions, Metadata, SocketAddress,
                TransportSocket, address, envoy_internal_address, socket_address::PortSpecifier,
                transport_socket,
            },
            endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
        },
        extensions::{
            transport_sockets::{
                internal_upstream::v3::{InternalUpstreamTransport, internal_upstream_transport},
                raw_buffer::v3::RawBuffer,
                tls::v3::UpstreamTlsContext,
            },
            upstreams::http::v3::{HttpProtocolOptions, http_protocol_options},
        },
        r#type::metadata::v3::{MetadataKind, metadata_key, metadata_kind},
    },
    google::protobuf::{Duration as PbDuration, Struct, UInt32Value, Value, value},
};
use std::{collections::HashMap, time::Duration};
use weft_xds::istio::pack;

/// Istio's default connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Weft's endpoint metadata namespace; `identity` is the SPIFFE ID the pod must present.
pub const WEFT_METADATA: &str = "weft";
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

fn pb(d: Duration) -> PbDuration {
    PbDuration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// The service ports a waypoint carries, with how: every port but UDP.
pub(crate) fn carried_ports<'a>(
    s: &Served<'a>,
) -> impl Iterator<Item = (&'a crate::config::kinds::kubernetes::ServicePort, PortProtocol)> + use<'a> {
    s.service.spec.ports.iter().filter_map(|p| Some((p, PortProtocol::of(p)?)))
}

/// The cluster kinds (`http`, `tcp`) a port gets, as Istio's `buildWaypointInboundVIP`: a
/// port of unknown protocol gets both, so an HTTP route to it still finds its cluster.
pub(crate) fn cluster_kinds(protocol: PortProtocol) -> &'static [&'static str] {
    match protocol {
        PortProtocol::Http | PortProtocol::Http2 => &["http"],
        PortProtocol::Tcp => &["tcp"],
        PortProtocol::Unknown => &["tcp", "http"],
    }
}

/// The clusters of the served services: the plain one per port, and one per subset; each
/// reaches its endpoints through the internal listeners (`internal_upstream`).
pub fn clusters(served: &[Served<'_>]) -> Vec<Cluster> {
    let mut out = Vec::new();
    for s in served {
        let top = s.destination_rule.and_then(|dr| dr.spec.traffic_policy.as_ref());
        let subsets: Vec<&Subset> =
            s.destination_rule.map(|dr| dr.spec.subsets.iter().collect()).unwrap_or_default();
        for (port, protocol) in carried_ports(s) {
            let port = port.port as u32;
            let http2 = protocol == PortProtocol::Http2;
            for kind in cluster_kinds(protocol) {
                let mut push =
                    |c: Cluster| out.push(Cluster { transport_socket: Some(internal_upstream()), ..c });
                let policy = traffic_policy::effective(top, None, port);
                push(cluster(cluster_name_for(kind, port, "", &s.hostname), policy.as_ref(), http2));
                for subset in &subsets {
                    // A subset's policy merges over the top-level one field by field, as Istio's
                    // MergeTrafficPolicy.
                    let policy = traffic_policy::effective(top, Some(subset), port);
                    push(cluster(
                        cluster_name_for(kind, port, &subset.name, &s.hostname),
                        policy.as_ref(),
                        http2,
                    ));
                }
            }
        }
    }
    out
}

fn raw_buffer() -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&RawBuffer::default()))),
    }
}

/// Towards an internal listener, passing the endpoint's original-destination metadata on
/// (Istio's `WaypointInternalUpstreamTransportSocket`, without its telemetry keys).
fn internal_upstream() -> TransportSocket {
    let passthrough = internal_upstream_transport::MetadataValueSource {
        kind: Some(MetadataKind { kind: Some(metadata_kind::Kind::Host(Default::default())) }),
        name: ORIGINAL_DST_KEY.into(),
    };
    let config = InternalUpstreamTransport {
        passthrough_metadata: vec![passthrough],
        transport_socket: Some(raw_buffer()),
    };
    TransportSocket {
        name: "envoy.transport_sockets.internal_upstream".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&config))),
    }
}

fn internal_address(listener: &str, endpoint_id: String) -> Address {
    Address {
        address: Some(address::Address::EnvoyInternalAddress(EnvoyInternalAddress {
            address_name_specifier: Some(envoy_internal_address::AddressNameSpecifier::ServerListenerName(
                listener.into(),
            )),
            endpoint_id,
        })),
    }
}

/// `main_internal`: the one way from `connect_terminate` into the `main_internal` listener.
/// The filter state `connect_terminate` shares with upstream crosses with the connection.
pub fn main_internal() -> Cluster {
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(internal_address(MAIN_INTERNAL, String::new())),
            ..Default::default()
        })),
        ..Default::default()
    };
    Cluster {
        name: MAIN_INTERNAL.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: MAIN_INTERNAL.into(),
            endpoints: vec![LocalityLbEndpoints { lb_endpoints: vec![endpoint], ..Default::default() }],
            ..Default::default()
        }),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.internal_upstream".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&InternalUpstreamTransport {
                transport_socket: Some(raw_buffer()),
                ..Default::default()
            }))),
        }),
        circuit_breakers: traffic_policy::default_circuit_breakers(),
        ..Default::default()
    }
}

/// `connect_originate`: HBONE to the endpoint pod. The destination is the endpoint's
/// original-destination metadata (`POD_IP:TARGET_PORT`) with the port replaced by 15008;
/// HTTP/2 with CONNECT over mTLS with the proxy's certificate, the peer checked against
/// the mesh root.
pub fn connect_originate() -> Cluster {
    let h2 = HttpProtocolOptions {
        upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions { allow_connect: true, ..Default::default() },
                    ),
                ),
            },
        )),
        ..Default::default()
    };
    let tls = UpstreamTlsContext { common_tls_context: Some(tls::common_context()), ..Default::default() };
    Cluster {
        name: CONNECT_ORIGINATE.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(pb(CONNECT_TIMEOUT)),
        lb_config: Some(cluster::LbConfig::OriginalDstLbConfig(cluster::OriginalDstLbConfig {
            upstream_port_override: Some(UInt32Value { value: HBONE_PORT }),
            metadata_key: Some(envoy_types::pb::envoy::r#type::metadata::v3::MetadataKey {
                key: ORIGINAL_DST_KEY.into(),
                path: vec![metadata_key::PathSegment {
                    segment: Some(metadata_key::path_segment::Segment::Key("local".into())),
                }],
            }),
            ..Default::default()
        })),
        typed_extension_protocol_options: HashMap::from([(HTTP_PROTOCOL_OPTIONS.to_owned(), pack(&h2))]),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&tls))),
        }),
        circuit_breakers: traffic_policy::default_circuit_breakers(),
        ..Default::default()
    }
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

fn string_struct(key: &str, value: String) -> Struct {
    Struct { fields: [(key.to_owned(), Value { kind: Some(value::Kind::StringValue(value)) })].into() }
}

/// One pod as an endpoint: HBONE through `connect_originate` when it is in the mesh,
/// else its own address.
fn endpoint(cfg: &ConfigSnapshot, opts: &Options, pod: &Pod, port: u32) -> Option<LbEndpoint> {
    let ip = pod.ips().first()?.to_string();
    if !workload::is_enrolled(cfg, pod) {
        let address = Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip,
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        };
        return Some(LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(address),
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    let target = format!("{ip}:{port}");
    let identity =
        format!("spiffe://{}/ns/{}/sa/{}", opts.trust_domain, pod.metadata.namespace, pod.service_account());
    let metadata = Metadata {
        filter_metadata: HashMap::from([
            (ORIGINAL_DST_KEY.to_owned(), string_struct("local", target.clone())),
            (WEFT_METADATA.to_owned(), string_struct("identity", identity)),
        ]),
        ..Default::default()
    };
    Some(LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            // The endpoint id keeps pods apart: without it every pod would be the same
            // internal address to Envoy's load balancer.
            address: Some(internal_address(CONNECT_ORIGINATE, target)),
            ..Default::default()
        })),
        metadata: Some(metadata),
        ..Default::default()
    })
}

/// `Metadata` with its namespaces in key order: prost encodes Envoy's `filter_metadata`
/// (a `HashMap`) in hash order, which differs from one map to the next, so the same
/// endpoints would encode differently every translation (and be pushed again).
#[derive(Clone, PartialEq, prost::Message)]
struct SortedMetadata {
    #[prost(btree_map = "string, message", tag = "1")]
    filter_metadata: std::collections::BTreeMap<String, Struct>,
}

/// Appends field `tag` holding an encoded message.
fn put_message(buf: &mut Vec<u8>, tag: u32, message: &[u8]) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(message.len() as u64, buf);
    buf.extend_from_slice(message);
}

/// A ClusterLoadAssignment as an xDS `Any`, its bytes the same for the same content:
/// each endpoint's metadata is written with sorted namespaces (a protobuf message is its
/// fields in any order, so the endpoints and their metadata are appended after the rest).
pub fn pack_load_assignment(cla: &ClusterLoadAssignment) -> weft_xds::Any {
    use prost::Message;
    let mut out = ClusterLoadAssignment { endpoints: Vec::new(), ..cla.clone() }.encode_to_vec();
    for locality in &cla.endpoints {
        let mut l = LocalityLbEndpoints { lb_endpoints: Vec::new(), ..locality.clone() }.encode_to_vec();
        for endpoint in &locality.lb_endpoints {
            let mut e = LbEndpoint { metadata: None, ..endpoint.clone() }.encode_to_vec();
            if let Some(metadata) = &endpoint.metadata {
                let sorted = SortedMetadata {
                    filter_metadata: metadata.filter_metadata.clone().into_iter().collect(),
                };
                let mut m = sorted.encode_to_vec();
                let mut typed: Vec<_> = metadata.typed_filter_metadata.iter().collect();
                typed.sort_by_key(|(key, _)| *key);
                for (key, value) in typed {
                    let mut entry = Vec::new();
                    prost::encoding::string::encode(1, key, &mut entry);
                    prost::encoding::message::encode(2, value, &mut entry);
                    put_message(&mut m, 2, &entry);
                }
                put_message(&mut e, 3, &m);
            }
            put_message(&mut l, 2, &e);
        }
        put_message(&mut out, 2, &l);
    }
    weft_xds::Any { type_url: <ClusterLoadAssignment as prost::Name>::type_url(), value: out }
}

/// Endpoints for every cluster `clusters` makes: the service's pods, narrowed to a
/// subset's labels, at the pod's target port.
pub fn load_assignments(
    cfg: &ConfigSnapshot,
    opts: &Options,
    served: &[Served<'_>],
    endpoints: &HashMap<(String, String), Vec<&Pod>>,
) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    for s in served {
        let key = (s.service.metadata.namespace.clone(), s.service.metadata.name.clone());
        let pods = endpoints.get(&key).map(Vec::as_slice).unwrap_or_default();
        let subsets: Vec<&Subset> =
            s.destination_rule.map(|dr| dr.spec.subsets.iter().collect()).unwrap_or_default();
        for (sp, protocol) in carried_ports(s) {
            let port = sp.port as u32;
            for kind in cluster_kinds(protocol) {
                let mut assign = |subset: &str, filter: &dyn Fn(&Pod) -> bool| {
                    let lb_endpoints = pods
                        .iter()
                        .filter(|p| filter(p))
                        .filter_map(|p| endpoint(cfg, opts, p, workload::target_port_for(sp, p)))
                        .collect();
                    out.push(ClusterLoadAssignment {
                        cluster_name: cluster_name_for(kind, port, subset, &s.hostname),
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
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_hbone_clusters_are_not_capped_by_envoys_default_breakers() {
        // Envoy's defaults would stop a waypoint at 1,024 concurrent streams through
        // `main_internal`; Istio lifts them on both fixed clusters.
        for c in [main_internal(), connect_originate()] {
            let t = &c.circuit_breakers.as_ref().expect(&c.name).thresholds[0];
            let limits = [t.max_connections, t.max_pending_requests, t.max_requests, t.max_retries];
            assert!(limits.iter().all(|l| l.unwrap().value == u32::MAX), "{}: {t:?}", c.name);
        }
    }
}
