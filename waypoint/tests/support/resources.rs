//! The contract's Envoy resources (CONTRACT.md), built with envoy-types as weftd will
//! build them, for one waypoint namespace.

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{
        ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbConfig, LbPolicy, OriginalDstLbConfig,
    },
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, CidrRange, ConfigSource, EnvoyInternalAddress, Metadata, SocketAddress,
    TransportSocket, address, config_source::ConfigSourceSpecifier, envoy_internal_address,
    socket_address::PortSpecifier, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, filter, listener::ListenerSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, common_tls_context,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config},
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Struct, UInt32Value, Value, value::Kind};
use prost::Name;
use std::{collections::HashMap, net::SocketAddr};

pub fn any<M: Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig { name: name.into(), ..Default::default() }
}

/// Item 1: HBONE termination on 15008.
pub fn connect_terminate(port: u32) -> Listener {
    let tls = DownstreamTlsContext {
        require_client_certificate: Some(BoolValue { value: true }),
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: vec!["h2".into()],
            tls_certificate_sds_secret_configs: vec![sds("default")],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(Default::default()),
                        validation_context_sds_secret_config: Some(sds("ROOTCA")),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "connect_terminate".into(),
        http_filters: vec![HttpFilter { name: "envoy.filters.http.router".into(), ..Default::default() }],
        ..Default::default()
    };
    Listener {
        name: "connect_terminate".into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
            }),
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What one chain of `main_internal` serves.
pub enum ChainSpec {
    /// An HTTP port: HCM with RDS of the chain's name.
    Http,
    /// A TCP port: tcp_proxy to the cluster of the chain's name.
    Tcp,
}

/// Item 3: one chain per (VIP, port).
pub fn main_internal(chains: &[(&str, SocketAddr, u8, ChainSpec)]) -> Listener {
    let filter_chains = chains
        .iter()
        .map(|(name, vip, prefix_len, spec)| {
            let filter = match spec {
                ChainSpec::Http => {
                    let hcm = HttpConnectionManager {
                        stat_prefix: (*name).into(),
                        route_specifier: Some(RouteSpecifier::Rds(Rds {
                            config_source: Some(ads()),
                            route_config_name: (*name).into(),
                        })),
                        http_filters: vec![
                            HttpFilter { name: "envoy.filters.http.fault".into(), ..Default::default() },
                            HttpFilter { name: "envoy.filters.http.router".into(), ..Default::default() },
                        ],
                        ..Default::default()
                    };
                    Filter {
                        name: "envoy.filters.network.http_connection_manager".into(),
                        config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
                    }
                }
                ChainSpec::Tcp => {
                    let tcp = TcpProxy {
                        stat_prefix: (*name).into(),
                        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster((*name).into())),
                        ..Default::default()
                    };
                    Filter {
                        name: "envoy.filters.network.tcp_proxy".into(),
                        config_type: Some(filter::ConfigType::TypedConfig(any(&tcp))),
                    }
                }
            };
            FilterChain {
                name: (*name).into(),
                filter_chain_match: Some(FilterChainMatch {
                    prefix_ranges: vec![CidrRange {
                        address_prefix: vip.ip().to_string(),
                        prefix_len: Some(UInt32Value { value: u32::from(*prefix_len) }),
                    }],
                    destination_port: Some(UInt32Value { value: u32::from(vip.port()) }),
                    ..Default::default()
                }),
                filters: vec![filter],
                ..Default::default()
            }
        })
        .collect();
    Listener {
        name: "main_internal".into(),
        listener_specifier: Some(ListenerSpecifier::InternalListener(Default::default())),
        filter_chains,
        ..Default::default()
    }
}

/// Item 7.
pub fn connect_originate() -> Listener {
    Listener {
        name: "connect_originate".into(),
        listener_specifier: Some(ListenerSpecifier::InternalListener(Default::default())),
        ..Default::default()
    }
}

/// Item 2.
pub fn main_internal_cluster() -> Cluster {
    Cluster {
        name: "main_internal".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        ..Default::default()
    }
}

/// Item 8, with the HBONE port the test's backends listen on.
pub fn connect_originate_cluster(hbone_port: u16) -> Cluster {
    Cluster {
        name: "connect_originate".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::OriginalDst as i32)),
        lb_policy: LbPolicy::ClusterProvided as i32,
        lb_config: Some(LbConfig::OriginalDstLbConfig(OriginalDstLbConfig {
            upstream_port_override: Some(UInt32Value { value: u32::from(hbone_port) }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Item 5: an EDS service cluster; `http2` sets explicit HTTP/2 protocol options.
pub fn service_cluster(name: &str, http2: bool) -> Cluster {
    let mut options = HashMap::new();
    if http2 {
        let o = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Default::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        options.insert("envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(), any(&o));
    }
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig { eds_config: Some(ads()), service_name: String::new() }),
        lb_policy: LbPolicy::LeastRequest as i32,
        typed_extension_protocol_options: options,
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.internal_upstream".into(),
            config_type: None,
        }),
        ..Default::default()
    }
}

fn string(s: &str) -> Value {
    Value { kind: Some(Kind::StringValue(s.into())) }
}

/// Item 6: the endpoints (pod address, identity) of a cluster.
pub fn assignment(cluster: &str, endpoints: &[(SocketAddr, &str)]) -> ClusterLoadAssignment {
    let lb_endpoints = endpoints
        .iter()
        .map(|(addr, identity)| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::EnvoyInternalAddress(EnvoyInternalAddress {
                        address_name_specifier: Some(
                            envoy_internal_address::AddressNameSpecifier::ServerListenerName(
                                "connect_originate".into(),
                            ),
                        ),
                        endpoint_id: addr.to_string(),
                    })),
                }),
                ..Default::default()
            })),
            metadata: Some(Metadata {
                filter_metadata: HashMap::from([
                    (
                        "envoy.filters.listener.original_dst".to_owned(),
                        Struct { fields: HashMap::from([("local".to_owned(), string(&addr.to_string()))]) },
                    ),
                    (
                        "weft".to_owned(),
                        Struct { fields: HashMap::from([("identity".to_owned(), string(identity))]) },
                    ),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    one_locality(cluster, lb_endpoints)
}

/// An assignment of `lb_endpoints` in one locality.
fn one_locality(cluster: &str, lb_endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
        ..Default::default()
    }
}

/// An assignment of endpoints outside the mesh: plain `socket_address`es, no identity.
pub fn plain_assignment(cluster: &str, endpoints: &[SocketAddr]) -> ClusterLoadAssignment {
    let lb_endpoints = endpoints
        .iter()
        .map(|addr| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: addr.ip().to_string(),
                        port_specifier: Some(PortSpecifier::PortValue(addr.port().into())),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    one_locality(cluster, lb_endpoints)
}

/// Item 4: routes by path prefix to clusters, in order.
pub fn route_table(name: &str, routes: &[(&str, &str)]) -> RouteConfiguration {
    route_table_of(name, routes.iter().map(|(prefix, cluster)| route(prefix, cluster, |_| {})).collect())
}

/// A route table of these routes.
pub fn route_table_of(name: &str, routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: name.into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A route by path prefix to a cluster; `edit` sets its action's other fields.
pub fn route(prefix: &str, cluster: &str, edit: impl FnOnce(&mut RouteAction)) -> Route {
    let mut action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    edit(&mut action);
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(Action::Route(action)),
        ..Default::default()
    }
}

/// The cluster with a `max_requests` circuit breaker.
pub fn with_max_requests(mut c: Cluster, max_requests: u32) -> Cluster {
    use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, circuit_breakers::Thresholds};
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_requests: Some(UInt32Value { value: max_requests }),
            ..Default::default()
        }],
        ..Default::default()
    });
    c
}

/// A protobuf duration.
pub fn millis(ms: u64) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A retry policy: Envoy's fields.
pub fn retry_policy(
    retry_on: &str,
    num_retries: u32,
    codes: &[u32],
    per_try_ms: Option<u64>,
) -> envoy_types::pb::envoy::config::route::v3::RetryPolicy {
    use envoy_types::pb::envoy::config::route::v3::retry_policy::{RetryHostPredicate, retry_host_predicate};
    use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
    envoy_types::pb::envoy::config::route::v3::RetryPolicy {
        retry_on: retry_on.into(),
        num_retries: Some(UInt32Value { value: num_retries }),
        retriable_status_codes: codes.to_vec(),
        per_try_timeout: per_try_ms.map(millis),
        // As Istio sends every retry policy: each retry on another host when there is one.
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_host_predicate::ConfigType::TypedConfig(any(&PreviousHostsPredicate {}))),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

/// The cluster with outlier detection on consecutive 5xx, as Istio sets it (panic
/// threshold 0: ejected endpoints stay out even when few are left).
pub fn with_outlier(
    mut c: Cluster,
    consecutive_5xx: u32,
    base_ejection_ms: u64,
    max_ejection_percent: u32,
) -> Cluster {
    use envoy_types::pb::envoy::config::cluster::v3::{OutlierDetection, cluster::CommonLbConfig};
    c.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: Some(UInt32Value { value: consecutive_5xx }),
        enforcing_consecutive_5xx: Some(UInt32Value { value: 100 }),
        base_ejection_time: Some(millis(base_ejection_ms)),
        max_ejection_percent: Some(UInt32Value { value: max_ejection_percent }),
        interval: Some(millis(base_ejection_ms)),
        ..Default::default()
    });
    c.common_lb_config = Some(CommonLbConfig {
        healthy_panic_threshold: Some(envoy_types::pb::envoy::r#type::v3::Percent { value: 0.0 }),
        ..Default::default()
    });
    c
}

/// The cluster with Istio's connectionPool for HTTP/1.1: maxConnections,
/// http1MaxPendingRequests, maxRequestsPerConnection.
pub fn with_h1_pool(mut c: Cluster, max_connections: u32, max_pending: u32, per_connection: u32) -> Cluster {
    use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, circuit_breakers::Thresholds};
    use envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions as Common;
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: Some(UInt32Value { value: max_connections }),
            max_pending_requests: Some(UInt32Value { value: max_pending }),
            ..Default::default()
        }],
        ..Default::default()
    });
    let options = HttpProtocolOptions {
        common_http_protocol_options: Some(Common {
            max_requests_per_connection: Some(UInt32Value { value: per_connection }),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.typed_extension_protocol_options
        .insert("envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(), any(&options));
    c
}
