//! The waypoint's listener: plain HTTP, routes from RDS over ADS.

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
                config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
            },
            listener::v3::{Filter, FilterChain, Listener, filter},
        },
        extensions::filters::{
            http::{fault::v3::HttpFault, router::v3::Router},
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
            },
        },
    },
    google::protobuf::Any,
};
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

/// `0.0.0.0:port`, HTTP connection manager with the fault filter (VirtualService fault
/// injection is configured per route) and the router.
pub fn http(name: &str, port: u32, route_config: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds { config_source: Some(ads()), route_config_name: route_config.to_owned() })),
        http_filters: vec![
            typed("envoy.filters.http.fault", pack(&HttpFault::default())),
            typed("envoy.filters.http.router", pack(&Router::default())),
        ],
        // Clients address services as host:port; virtual hosts match on the host alone.
        strip_port_mode: Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::StripPortMode::StripAnyHostPort(true)),
        ..Default::default()
    };
    Listener {
        name: name.to_owned(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}
