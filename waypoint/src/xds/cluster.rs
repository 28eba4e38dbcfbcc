//! Clusters and ClusterLoadAssignments of the contract's shape (items 2, 5, 6, 8),
//! compiled: EDS clusters into [`ClusterSettings`], their assignments into endpoints
//! (pod address, identity if in the mesh); `main_internal` and `connect_originate`
//! recognised.

use super::Refusal;
use crate::upstream::{ClusterSettings, LbPolicy, OutlierSettings, Thresholds, UpstreamProtocol};
use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            Cluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType, cluster::LbConfig,
            cluster::LbPolicy as EnvoyLb,
        },
        core::v3::{HealthStatus, RoutingPriority, SocketAddress, address, socket_address},
        endpoint::v3::{ClusterLoadAssignment, lb_endpoint::HostIdentifier},
    },
    extensions::upstreams::http::v3::{
        HttpProtocolOptions,
        http_protocol_options::{UpstreamProtocolOptions, explicit_http_config::ProtocolConfig},
    },
};
use envoy_types::pb::google::protobuf::value::Kind;
use std::{net::SocketAddr, time::Duration};
use weft_hbone::Identity;

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const INTERNAL_UPSTREAM: &str = "envoy.transport_sockets.internal_upstream";
const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";
/// Weft's endpoint metadata: the identity the endpoint must present.
const WEFT_METADATA: &str = "weft";
/// Istio's: where the endpoint is (`local: POD_IP:PORT`).
const ORIGINAL_DST_METADATA: &str = "envoy.filters.listener.original_dst";

/// A cluster compiled.
#[derive(Debug)]
pub enum Compiled {
    /// An EDS cluster of service endpoints; its assignment is `service_name`.
    Eds { settings: ClusterSettings, service_name: String },
    /// `main_internal`: the hop to the internal listener, which the waypoint does in
    /// process.
    Internal,
    /// `connect_originate`: endpoints are dialled on this port.
    Originate { port: u16 },
}

pub fn compile(c: &Cluster) -> Result<Compiled, Refusal> {
    let refuse = |field: &str, reason: String| Refusal::new("cluster", &c.name, field, reason);
    let kind = match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).ok(),
        Some(ClusterDiscoveryType::ClusterType(_)) => {
            return Err(refuse("cluster_type", "custom cluster types are not supported".into()));
        }
        None => Some(DiscoveryType::Static),
    };
    match (c.name.as_str(), kind) {
        (super::listener::MAIN_INTERNAL, Some(DiscoveryType::Static)) => return Ok(Compiled::Internal),
        (super::listener::CONNECT_ORIGINATE, Some(DiscoveryType::OriginalDst)) => {
            let port = match &c.lb_config {
                Some(LbConfig::OriginalDstLbConfig(o)) => o.upstream_port_override.map(|p| p.value),
                _ => None,
            }
            .unwrap_or(u32::from(weft_hbone::HBONE_PORT));
            let port = u16::try_from(port)
                .map_err(|_| refuse("original_dst_lb_config.upstream_port_override", format!("{port}")))?;
            return Ok(Compiled::Originate { port });
        }
        (_, Some(DiscoveryType::Eds)) => {}
        (_, other) => {
            return Err(refuse(
                "type",
                format!(
                    "{other:?}: service clusters must be EDS (only main_internal is STATIC, connect_originate ORIGINAL_DST)"
                ),
            ));
        }
    }
    let service_name = c
        .eds_cluster_config
        .as_ref()
        .map(|e| e.service_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| c.name.clone());
    let lb_policy = match EnvoyLb::try_from(c.lb_policy) {
        // Envoy's default (enum 0) is ROUND_ROBIN; Istio sets LEAST_REQUEST explicitly.
        Ok(EnvoyLb::RoundRobin) => LbPolicy::RoundRobin,
        Ok(EnvoyLb::LeastRequest) => LbPolicy::LeastRequest {
            choice_count: match &c.lb_config {
                Some(LbConfig::LeastRequestLbConfig(l)) => l.choice_count.map_or(2, |n| n.value),
                _ => 2,
            },
        },
        Ok(EnvoyLb::Random) => LbPolicy::Random,
        Ok(EnvoyLb::RingHash) => LbPolicy::RingHash {
            min_ring_size: match &c.lb_config {
                Some(LbConfig::RingHashLbConfig(r)) => {
                    r.minimum_ring_size.map_or(1024, |n| n.value.min(8 * 1024 * 1024) as u32)
                }
                _ => 1024,
            },
        },
        Ok(EnvoyLb::Maglev) => LbPolicy::Maglev,
        other => return Err(refuse("lb_policy", format!("{other:?} is not supported for service clusters"))),
    };
    let mut thresholds = Thresholds::default();
    if let Some(cb) = &c.circuit_breakers
        && let Some(t) = cb.thresholds.iter().find(|t| t.priority == RoutingPriority::Default as i32)
    {
        let or = |v: Option<u32>, d: u32| v.unwrap_or(d);
        thresholds = Thresholds {
            max_connections: or(t.max_connections.map(|v| v.value), thresholds.max_connections),
            max_pending_requests: or(
                t.max_pending_requests.map(|v| v.value),
                thresholds.max_pending_requests,
            ),
            max_requests: or(t.max_requests.map(|v| v.value), thresholds.max_requests),
            max_retries: or(t.max_retries.map(|v| v.value), thresholds.max_retries),
        };
    }
    let mut protocol = UpstreamProtocol::Http1;
    let mut max_requests_per_connection = 0;
    for (name, any) in &c.typed_extension_protocol_options {
        if name != HTTP_PROTOCOL_OPTIONS {
            return Err(refuse(
                &format!("typed_extension_protocol_options[{name:?}]"),
                "not supported".into(),
            ));
        }
        let field = format!("typed_extension_protocol_options[{name:?}]");
        let options: HttpProtocolOptions =
            weft_xds::istio::unpack(any).map_err(|e| refuse(&field, e.to_string()))?;
        protocol = match &options.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
                Some(ProtocolConfig::HttpProtocolOptions(_)) => UpstreamProtocol::Http1,
                _ => {
                    return Err(refuse(
                        &format!("{field}.explicit_http_config"),
                        "HTTP/3 is not supported".into(),
                    ));
                }
            },
            Some(
                UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)
                | UpstreamProtocolOptions::AutoConfig(_),
            ) => UpstreamProtocol::Downstream,
            None => UpstreamProtocol::Http1,
        };
        max_requests_per_connection = options
            .common_http_protocol_options
            .and_then(|o| o.max_requests_per_connection)
            .map_or(0, |v| v.value);
    }
    if let Some(ts) = &c.transport_socket
        && ts.name != INTERNAL_UPSTREAM
        && ts.name != RAW_BUFFER
    {
        return Err(refuse(
            "transport_socket.name",
            format!("{}: service clusters reach pods over HBONE ({INTERNAL_UPSTREAM})", ts.name),
        ));
    }
    let connect_timeout = c
        .connect_timeout
        .map_or(Duration::from_secs(5), |d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32));
    let outlier = c.outlier_detection.as_ref().map(|o| {
        let d = OutlierSettings::default();
        let duration = |d: &envoy_types::pb::google::protobuf::Duration| {
            Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
        };
        let enforcing = |v: Option<u32>, default: u32| v.unwrap_or(default) > 0;
        OutlierSettings {
            consecutive_5xx: enforcing(o.enforcing_consecutive_5xx.map(|v| v.value), 100)
                .then(|| o.consecutive_5xx.map_or(5, |v| v.value)),
            consecutive_gateway_failure: enforcing(
                o.enforcing_consecutive_gateway_failure.map(|v| v.value),
                0,
            )
            .then(|| o.consecutive_gateway_failure.map_or(5, |v| v.value)),
            base_ejection_time: o.base_ejection_time.as_ref().map_or(d.base_ejection_time, duration),
            max_ejection_time: o.max_ejection_time.as_ref().map_or(d.max_ejection_time, duration),
            max_ejection_percent: o.max_ejection_percent.map_or(d.max_ejection_percent, |v| v.value),
        }
    });
    let panic_threshold = c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.healthy_panic_threshold.as_ref())
        .map_or(50.0, |p| p.value);
    Ok(Compiled::Eds {
        settings: ClusterSettings {
            lb_policy,
            protocol,
            thresholds,
            max_requests_per_connection,
            connect_timeout,
            outlier,
            panic_threshold,
        },
        service_name,
    })
}

/// The endpoints of an assignment, healthy ones only: (POD_IP:PORT, identity) for a pod in
/// the mesh, reached over HBONE (an `envoy_internal_address` to `connect_originate`, with
/// `weft.identity`), or (IP:PORT, none) for one outside it (a `socket_address`), reached
/// directly as Envoy would.
pub fn endpoints(cla: &ClusterLoadAssignment) -> Result<Vec<(SocketAddr, Option<Identity>)>, Refusal> {
    let mut out = Vec::new();
    for (l, locality) in cla.endpoints.iter().enumerate() {
        for (e, lb) in locality.lb_endpoints.iter().enumerate() {
            let at = format!("endpoints[{l}].lb_endpoints[{e}]");
            let refuse = |field: &str, reason: String| {
                Refusal::new("cluster_load_assignment", &cla.cluster_name, &format!("{at}.{field}"), reason)
            };
            if matches!(
                HealthStatus::try_from(lb.health_status),
                Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout)
            ) {
                continue;
            }
            let Some(HostIdentifier::Endpoint(endpoint)) = &lb.host_identifier else {
                return Err(refuse("endpoint", "named endpoints are not supported".into()));
            };
            let address = match endpoint.address.as_ref().and_then(|a| a.address.as_ref()) {
                Some(address::Address::EnvoyInternalAddress(internal)) => {
                    internal.endpoint_id.parse::<SocketAddr>().map_err(|_| {
                        refuse(
                            "endpoint.address.envoy_internal_address.endpoint_id",
                            format!("{:?} is not POD_IP:PORT", internal.endpoint_id),
                        )
                    })?
                }
                Some(address::Address::SocketAddress(socket)) => {
                    out.push((
                        plain_address(socket)
                            .map_err(|why| refuse("endpoint.address.socket_address", why))?,
                        None,
                    ));
                    continue;
                }
                _ => {
                    return Err(refuse(
                        "endpoint.address",
                        "required: envoy_internal_address { server_listener_name: connect_originate, endpoint_id: \
                         POD_IP:PORT } for a pod in the mesh, or socket_address for one outside it"
                            .into(),
                    ));
                }
            };
            let metadata = lb.metadata.as_ref().map(|m| &m.filter_metadata);
            if let Some(local) = metadata
                .and_then(|m| m.get(ORIGINAL_DST_METADATA))
                .and_then(|s| s.fields.get("local"))
                .and_then(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                })
                && local.parse::<SocketAddr>().ok() != Some(address)
            {
                return Err(refuse(
                    &format!("metadata.filter_metadata[{ORIGINAL_DST_METADATA:?}].local"),
                    format!("{local} differs from the endpoint_id {address}"),
                ));
            }
            let identity = metadata
                .and_then(|m| m.get(WEFT_METADATA))
                .and_then(|s| s.fields.get("identity"))
                .and_then(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                });
            // The HBONE client checks the server against exactly one identity: without it
            // the waypoint could not tell the pod from an impostor.
            let Some(identity) = identity else {
                return Err(refuse(
                    &format!("metadata.filter_metadata[{WEFT_METADATA:?}].identity"),
                    "required: the SPIFFE identity the endpoint must present".into(),
                ));
            };
            let identity = identity.parse::<Identity>().map_err(|e| {
                refuse(&format!("metadata.filter_metadata[{WEFT_METADATA:?}].identity"), e.to_string())
            })?;
            out.push((address, Some(identity)));
        }
    }
    Ok(out)
}

/// An endpoint outside the mesh: `IP:port_value`, TCP.
fn plain_address(socket: &SocketAddress) -> Result<SocketAddr, String> {
    if socket.protocol != socket_address::Protocol::Tcp as i32 {
        return Err("only TCP endpoints are supported".into());
    }
    let ip = socket
        .address
        .parse::<std::net::IpAddr>()
        .map_err(|_| format!("{:?} is not an IP address", socket.address))?;
    match socket.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(port)) if (1..=65535).contains(&port) => {
            Ok(SocketAddr::new(ip, port as u16))
        }
        _ => Err("port_value between 1 and 65535 is required".into()),
    }
}
