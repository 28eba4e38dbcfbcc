//! The listeners of a waypoint, in Istio's shape (pilot's `listener_waypoint.go`), and the
//! plain-HTTP listener of an ingress gateway.
//!
//! A connection's way through a waypoint:
//!
//! ```text
//! client agent ─HBONE (mTLS, CONNECT VIP:PORT)─▶ connect_terminate :15008
//!     │ the CONNECT's :authority goes into filter state (original_dst.local_ip)
//!     ▼ cluster main_internal (internal address)
//! main_internal (internal listener; original_dst restores VIP:PORT as local address)
//!     │ filter chain per service VIP and port: HTTP (HCM, RDS) or TCP (tcp_proxy)
//!     ▼ cluster inbound-vip|PORT|http[/SUBSET]|HOST, EDS: internal addresses + metadata
//! connect_originate (internal listener; original_dst restores POD_IP:TARGET_PORT)
//!     │ tcp_proxy tunnelling: CONNECT POD_IP:TARGET_PORT
//!     ▼ cluster connect_originate (ORIGINAL_DST → POD_IP:15008, mTLS, HTTP/2)
//! the endpoint pod's agent
//! ```

use super::{
    CONNECT_ORIGINATE, CONNECT_TERMINATE, HBONE_PORT, MAIN_INTERNAL, ORIGINAL_DST_KEY,
    authorization::PEER_PRINCIPAL as PEER_PRINCIPAL_KEY, tls,
};
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                Address, AggregatedConfigSource, ApiVersion, CidrRange, ConfigSource, DataSource,
                Http2ProtocolOptions, SocketAddress, SubstitutionFormatString, TransportSocket, address,
                config_source::ConfigSourceSpecifier, data_source, socket_address::PortSpecifier,
                substitution_format_string, transport_socket,
            },
            listener::v3::{
                Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener,
            },
            route::v3::{
                Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
            },
        },
        extensions::{
            filters::{
                common::set_filter_state::v3::{FilterStateValue, filter_state_value},
                http::{
                    fault::v3::HttpFault, router::v3::Router, set_filter_state::v3::Config as SetFilterState,
                },
                listener::original_dst::v3::OriginalDst,
                network::{
                    http_connection_manager::v3::{
                        HttpConnectionManager, HttpFilter, Rds,
                        http_connection_manager::{RouteSpecifier, UpgradeConfig},
                        http_filter,
                    },
                    tcp_proxy::v3::{TcpProxy, tcp_proxy},
                },
            },
            transport_sockets::tls::v3::DownstreamTlsContext,
        },
    },
    google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value},
};
use std::net::IpAddr;
use weft_xds::istio::pack;

/// Fetch from the same ADS stream.
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn typed(name: &str, any: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

fn network_filter(name: &str, any: Any) -> Filter {
    Filter { name: name.to_owned(), config_type: Some(filter::ConfigType::TypedConfig(any)) }
}

fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn router() -> HttpFilter {
    typed("envoy.filters.http.router", pack(&Router::default()))
}

const HCM: &str = "envoy.filters.network.http_connection_manager";

/// `0.0.0.0:port`, HTTP connection manager with the fault filter (VirtualService fault
/// injection is configured per route) and the router: an ingress gateway's listener.
pub fn http(name: &str, port: u32, route_config: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds { config_source: Some(ads()), route_config_name: route_config.to_owned() })),
        http_filters: vec![typed("envoy.filters.http.fault", pack(&HttpFault::default())), router()],
        // Clients address services as host:port; virtual hosts match on the host alone.
        strip_port_mode: Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::StripPortMode::StripAnyHostPort(true)),
        ..Default::default()
    };
    Listener {
        name: name.to_owned(),
        address: Some(socket_address("0.0.0.0", port)),
        filter_chains: vec![FilterChain {
            filters: vec![network_filter(HCM, pack(&hcm))],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Istio's `connect_authority` filter: the CONNECT's `:authority` (the VIP:PORT the client
/// dialled) becomes the filter state the next internal listener's original_dst filter
/// reads as its local address, handed over the internal connection once.
fn connect_authority() -> HttpFilter {
    let state = |key: String, format: &str, factory_key: &str| FilterStateValue {
        key: Some(filter_state_value::Key::ObjectKey(key)),
        factory_key: factory_key.to_owned(),
        value: Some(filter_state_value::Value::FormatString(SubstitutionFormatString {
            format: Some(substitution_format_string::Format::TextFormatSource(DataSource {
                specifier: Some(data_source::Specifier::InlineString(format.into())),
                ..Default::default()
            })),
            ..Default::default()
        })),
        shared_with_upstream: filter_state_value::SharedWithUpstream::Once as i32,
        ..Default::default()
    };
    let values = vec![
        state(ORIGINAL_DST_KEY.to_owned() + ".local_ip", "%REQ(:AUTHORITY)%", ""),
        // The client's address, so that the service's chain sees the client (source IP
        // hashing, ipBlocks), not the internal connection.
        state(ORIGINAL_DST_KEY.to_owned() + ".remote_ip", "%DOWNSTREAM_REMOTE_ADDRESS%", ""),
        // The client's verified SPIFFE identity, which the RBAC filters of the service's chain
        // match (`authorization.rs`); Istio's proxy registers its own string factory for
        // this key, stock Envoy has `envoy.string`.
        state(PEER_PRINCIPAL_KEY.to_owned(), "%DOWNSTREAM_PEER_URI_SAN%", "envoy.string"),
    ];
    typed("connect_authority", pack(&SetFilterState { on_request_headers: values, ..Default::default() }))
}

/// `connect_terminate`: HBONE in on 0.0.0.0:15008. mTLS with the waypoint's certificate
/// (client certificate required), HTTP/2 CONNECT only, each CONNECT stream handed as raw
/// bytes to `main_internal`.
pub fn connect_terminate() -> Listener {
    let connect = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(
                envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::ConnectMatcher(
                    Default::default(),
                ),
            ),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(MAIN_INTERNAL.into())),
            upgrade_configs: vec![route_action::UpgradeConfig {
                upgrade_type: "CONNECT".into(),
                connect_config: Some(Default::default()),
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: CONNECT_TERMINATE.into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: CONNECT_TERMINATE.into(),
            virtual_hosts: vec![VirtualHost {
                name: CONNECT_TERMINATE.into(),
                domains: vec!["*".into()],
                routes: vec![connect],
                ..Default::default()
            }],
            ..Default::default()
        })),
        http2_protocol_options: Some(Http2ProtocolOptions { allow_connect: true, ..Default::default() }),
        upgrade_configs: vec![UpgradeConfig { upgrade_type: "CONNECT".into(), ..Default::default() }],
        // A tunnel lives as long as its connection: no idle timeout on the CONNECT stream
        // (Envoy's default would cut a quiet tunnel after 5 minutes), as Istio sets it.
        stream_idle_timeout: Some(PbDuration::default()),
        http_filters: vec![connect_authority(), router()],
        ..Default::default()
    };
    let tls = DownstreamTlsContext {
        common_tls_context: Some(tls::common_context()),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    Listener {
        name: CONNECT_TERMINATE.into(),
        address: Some(socket_address("0.0.0.0", HBONE_PORT)),
        filter_chains: vec![FilterChain {
            filters: vec![network_filter(HCM, pack(&hcm))],
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&tls))),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn original_dst_filter() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(
            envoy_types::pb::envoy::config::listener::v3::listener_filter::ConfigType::TypedConfig(pack(
                &OriginalDst::default(),
            )),
        ),
        ..Default::default()
    }
}

fn internal(name: &str, filter_chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: name.into(),
        listener_specifier: Some(listener::ListenerSpecifier::InternalListener(Default::default())),
        listener_filters: vec![original_dst_filter()],
        filter_chains,
        ..Default::default()
    }
}

/// What one filter chain of `main_internal` serves: a service port, by its VIPs.
pub struct Chain<'a> {
    /// The chain's name and the cluster (TCP) or route configuration (HTTP) it uses.
    pub name: &'a str,
    pub vips: &'a [IpAddr],
    pub port: u32,
    /// An HTTP chain (HCM with RDS), else TCP (tcp_proxy).
    pub http: bool,
    /// HTTP/2 towards the waypoint is expected (gRPC, h2c): the HCM says so, as Istio's.
    pub http2: bool,
    /// L7 AuthorizationPolicy of the service (`authorization.rs`): RBAC filters that go in
    /// front of the fault filter and the router; empty when no policy binds.
    pub rbac: &'a [HttpFilter],
}

fn cidr(ip: &IpAddr) -> CidrRange {
    CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(UInt32Value { value: if ip.is_ipv4() { 32 } else { 128 } }),
    }
}

fn chain(c: &Chain<'_>) -> FilterChain {
    let filter = if c.http {
        let hcm = HttpConnectionManager {
            stat_prefix: c.name.to_owned(),
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                config_source: Some(ads()),
                route_config_name: c.name.to_owned(),
            })),
            // Fault injection is configured per route; RBAC (L7 AuthorizationPolicy)
            // comes in front of the router when a policy applies.
            http_filters: c
                .rbac
                .iter()
                .cloned()
                .chain([typed("envoy.filters.http.fault", pack(&HttpFault::default())), router()])
                .collect(),
            http2_protocol_options: c.http2.then(Http2ProtocolOptions::default),
            ..Default::default()
        };
        network_filter(HCM, pack(&hcm))
    } else {
        let proxy = TcpProxy {
            stat_prefix: c.name.to_owned(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(c.name.to_owned())),
            ..Default::default()
        };
        network_filter("envoy.filters.network.tcp_proxy", pack(&proxy))
    };
    FilterChain {
        name: c.name.to_owned(),
        filter_chain_match: Some(FilterChainMatch {
            prefix_ranges: c.vips.iter().map(cidr).collect(),
            destination_port: Some(UInt32Value { value: c.port }),
            ..Default::default()
        }),
        filters: vec![filter],
        ..Default::default()
    }
}

/// `main_internal`: where `connect_terminate` hands each CONNECT stream; one filter chain
/// per service port the waypoint carries, chosen by the VIP:PORT the client dialled.
pub fn main_internal(chains: &[Chain<'_>]) -> Listener {
    internal(MAIN_INTERNAL, chains.iter().map(chain).collect())
}

/// `connect_originate`: HBONE out. The endpoint's `POD_IP:TARGET_PORT` (restored as the
/// local address from its metadata) becomes the CONNECT authority of a tunnel opened
/// through the `connect_originate` cluster.
pub fn connect_originate() -> Listener {
    let proxy = TcpProxy {
        stat_prefix: CONNECT_ORIGINATE.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(CONNECT_ORIGINATE.into())),
        tunneling_config: Some(tcp_proxy::TunnelingConfig {
            hostname: "%DOWNSTREAM_LOCAL_ADDRESS%".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    internal(
        CONNECT_ORIGINATE,
        vec![FilterChain {
            filters: vec![network_filter("envoy.filters.network.tcp_proxy", pack(&proxy))],
            ..Default::default()
        }],
    )
}
