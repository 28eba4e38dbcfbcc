//! Listeners of the contract's shape, recognised and compiled (CONTRACT.md items 1, 3, 7),
//! and the plain-HTTP listeners of an ingress or egress gateway (`gateway_<port>`).
//! weft-waypoint is not a general Envoy: a listener it cannot give the meaning the contract
//! gives it is refused, naming the field.

use super::Refusal;
use crate::{
    rbac::Rbac,
    route::StripPort,
    snapshot::{Chain, HttpChain, TcpChain, Terminate},
};
use envoy_types::pb::envoy::{
    config::{
        core::v3::{address, socket_address::PortSpecifier},
        listener::v3::{Filter, Listener, filter::ConfigType, listener::ListenerSpecifier},
    },
    extensions::{
        filters::http::rbac::v3::Rbac as RbacFilter,
        filters::network::{
            http_connection_manager::v3::{
                HttpConnectionManager,
                http_connection_manager::{RouteSpecifier, StripPortMode},
                http_filter,
            },
            tcp_proxy::v3::{TcpProxy, tcp_proxy::ClusterSpecifier},
        },
        transport_sockets::tls::v3::{DownstreamTlsContext, common_tls_context::ValidationContextType},
    },
};
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

pub const CONNECT_TERMINATE: &str = "connect_terminate";
pub const MAIN_INTERNAL: &str = "main_internal";
pub const CONNECT_ORIGINATE: &str = "connect_originate";
/// weftd's name for a gateway's listener on a port: `gateway_<port>`.
pub const GATEWAY_PREFIX: &str = "gateway_";

const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
const TLS: &str = "envoy.transport_sockets.tls";
/// The SDS names of the contract: the waypoint's certificate and the mesh root.
const SDS_CERTIFICATE: &str = "default";
const SDS_ROOT: &str = "ROOTCA";

/// HTTP filters whose meaning the waypoint gives itself; anything else is refused unless
/// marked optional.
const FAULT: &str = "envoy.filters.http.fault";
const RBAC: &str = "envoy.filters.http.rbac";
const ROUTER: &str = "envoy.filters.http.router";
/// Istio's connect-authority filter on `connect_terminate` (the authority travels with
/// the CONNECT here, so there is nothing to do).
const SET_FILTER_STATE: &str = "envoy.filters.http.set_filter_state";

/// A listener compiled.
#[derive(Debug)]
pub enum Compiled {
    Terminate(Terminate),
    Dispatch(Vec<(SocketAddr, Arc<Chain>)>),
    Originate,
    Gateway(Gateway),
}

/// A gateway listener: plain HTTP/1.1 and HTTP/2 (prior knowledge) accepted on `address`,
/// every connection served by one HTTP chain.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub address: SocketAddr,
    pub chain: Arc<Chain>,
}

pub fn compile(listener: &Listener) -> Result<Compiled, Refusal> {
    let refuse = |field: &str, reason: String| Refusal::new("listener", &listener.name, field, reason);
    match listener.name.as_str() {
        CONNECT_TERMINATE => terminate(listener).map(Compiled::Terminate),
        MAIN_INTERNAL => {
            internal(listener)?;
            dispatch(listener).map(Compiled::Dispatch)
        }
        CONNECT_ORIGINATE => {
            internal(listener)?;
            Ok(Compiled::Originate)
        }
        name if name.starts_with(GATEWAY_PREFIX) => gateway(listener).map(Compiled::Gateway),
        _ => Err(refuse(
            "name",
            format!(
                "weft-waypoint serves the waypoint listeners {CONNECT_TERMINATE}, {MAIN_INTERNAL} and \
                 {CONNECT_ORIGINATE}, and gateway listeners {GATEWAY_PREFIX}<port>, only"
            ),
        )),
    }
}

/// The socket address of a listener bound to the host, or why not.
fn socket_address(l: &Listener) -> Result<(String, u32), Refusal> {
    let refuse = |field: &str, reason: String| Refusal::new("listener", &l.name, field, reason);
    match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => match s.port_specifier {
            Some(PortSpecifier::PortValue(p)) => Ok((s.address.clone(), p)),
            _ => Err(refuse("address.socket_address.port_value", "no port".into())),
        },
        _ => Err(refuse("address", "a socket address (IP and port) is required".into())),
    }
}

/// `gateway_<port>`: weftd's ingress listener (`0.0.0.0:<port>`, one filter chain, an HCM
/// with RDS, the fault filter and the router, any Host port stripped). The chain is the
/// HTTP chain `main_internal`'s are, so requests take the same path; only the way in
/// differs (plain TCP, a client without a mesh identity).
fn gateway(l: &Listener) -> Result<Gateway, Refusal> {
    let refuse = |field: &str, reason: String| Refusal::new("listener", &l.name, field, reason);
    let (ip, port) = socket_address(l)?;
    let ip: IpAddr = ip.parse().map_err(|_| {
        refuse(
            "address.socket_address.address",
            format!("{ip:?} is not an IP address (0.0.0.0 binds every one)"),
        )
    })?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| refuse("address.socket_address.port_value", format!("{port} is not a port")))?;
    if !l.listener_filters.is_empty() {
        return Err(refuse(
            "listener_filters",
            "a gateway listener takes plain HTTP and needs no listener filter (TLS servers are not supported yet)"
                .into(),
        ));
    }
    let [fc] = l.filter_chains.as_slice() else {
        return Err(refuse(
            "filter_chains",
            format!("{} chains; a gateway listener has exactly one", l.filter_chains.len()),
        ));
    };
    if fc.filter_chain_match.as_ref().is_some_and(|m| *m != Default::default()) {
        return Err(refuse(
            "filter_chains[0].filter_chain_match",
            "one chain serves every connection of a gateway listener; matching (SNI, addresses) is not supported"
                .into(),
        ));
    }
    if fc.transport_socket.is_some() {
        return Err(refuse(
            "filter_chains[0].transport_socket",
            "TLS termination at the gateway is not supported yet: plain HTTP only".into(),
        ));
    }
    let [filter] = fc.filters.as_slice() else {
        return Err(refuse(
            "filter_chains[0].filters",
            format!("{} filters; exactly one HTTP connection manager is expected", fc.filters.len()),
        ));
    };
    let name = if fc.name.is_empty() { l.name.as_str() } else { fc.name.as_str() };
    match chain(name, filter, port)
        .map_err(|(field, reason)| refuse(&format!("filter_chains[0].filters[0].{field}"), reason))?
    {
        chain @ Chain::Http(_) => Ok(Gateway { address: SocketAddr::new(ip, port), chain: Arc::new(chain) }),
        Chain::Tcp(_) => Err(refuse(
            "filter_chains[0].filters[0].name",
            format!("{TCP_PROXY}: a gateway listener serves HTTP ({HCM}); TCP servers are not supported yet"),
        )),
    }
}

/// `connect_terminate`: HBONE on 15008, mTLS with the SDS names this waypoint maps.
fn terminate(l: &Listener) -> Result<Terminate, Refusal> {
    let refuse = |field: &str, reason: String| Refusal::new("listener", &l.name, field, reason);
    let (_, port) = socket_address(l)?;
    if port != u32::from(weft_hbone::HBONE_PORT) {
        return Err(refuse(
            "address.socket_address.port_value",
            format!("{port}: weft-waypoint terminates HBONE on {} only", weft_hbone::HBONE_PORT),
        ));
    }
    let [chain] = l.filter_chains.as_slice() else {
        return Err(refuse(
            "filter_chains",
            format!("{} chains; exactly one is expected", l.filter_chains.len()),
        ));
    };
    let socket = chain.transport_socket.as_ref();
    if socket.map(|s| s.name.as_str()) != Some(TLS) {
        return Err(refuse("filter_chains[0].transport_socket", format!("HBONE needs {TLS}")));
    }
    let tls: DownstreamTlsContext = match socket.and_then(|s| s.config_type.as_ref()) {
        Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(any)) => {
            unpack(any).map_err(|e| refuse("filter_chains[0].transport_socket.typed_config", e))?
        }
        None => return Err(refuse("filter_chains[0].transport_socket.typed_config", "missing".into())),
    };
    if tls.require_client_certificate.map(|b| b.value) != Some(true) {
        return Err(refuse(
            "filter_chains[0].transport_socket.require_client_certificate",
            "must be true: HBONE clients are identified by their certificate".into(),
        ));
    }
    let common = tls.common_tls_context.unwrap_or_default();
    let certs: Vec<&str> =
        common.tls_certificate_sds_secret_configs.iter().map(|s| s.name.as_str()).collect();
    if certs != [SDS_CERTIFICATE] {
        return Err(refuse(
            "filter_chains[0].transport_socket.common_tls_context.tls_certificate_sds_secret_configs",
            format!(
                "{certs:?}: the waypoint serves exactly its own certificate, SDS name {SDS_CERTIFICATE:?}"
            ),
        ));
    }
    let root = match &common.validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            c.validation_context_sds_secret_config.as_ref().map(|s| s.name.as_str())
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => Some(s.name.as_str()),
        _ => None,
    };
    if root != Some(SDS_ROOT) {
        return Err(refuse(
            "filter_chains[0].transport_socket.common_tls_context.validation_context",
            format!("{root:?}: client certificates are checked against the mesh root, SDS name {SDS_ROOT:?}"),
        ));
    }
    Ok(Terminate { port: port as u16 })
}

/// Internal listeners carry no address: the waypoint has no sockets for them.
fn internal(l: &Listener) -> Result<(), Refusal> {
    match l.listener_specifier {
        Some(ListenerSpecifier::InternalListener(_)) => Ok(()),
        _ => {
            Err(Refusal::new("listener", &l.name, "internal_listener", "must be an internal listener".into()))
        }
    }
}

/// `main_internal`: one chain per (VIPs, port), found by the CONNECT authority.
fn dispatch(l: &Listener) -> Result<Vec<(SocketAddr, Arc<Chain>)>, Refusal> {
    let mut table: Vec<(SocketAddr, Arc<Chain>)> = Vec::new();
    for (i, fc) in l.filter_chains.iter().enumerate() {
        let at = |field: &str| format!("filter_chains[{i}].{field}");
        let refuse = |field: &str, reason: String| Refusal::new("listener", &l.name, &at(field), reason);
        let m = fc.filter_chain_match.clone().unwrap_or_default();
        let Some(port) = m.destination_port.map(|p| p.value) else {
            return Err(refuse("filter_chain_match.destination_port", "required (the service port)".into()));
        };
        let port = u16::try_from(port)
            .map_err(|_| refuse("filter_chain_match.destination_port", format!("{port} is not a port")))?;
        if m.prefix_ranges.is_empty() {
            return Err(refuse("filter_chain_match.prefix_ranges", "required (the service VIPs)".into()));
        }
        let [filter] = fc.filters.as_slice() else {
            return Err(refuse(
                "filters",
                format!("{} filters; exactly one (HCM or tcp_proxy) is expected", fc.filters.len()),
            ));
        };
        let chain = Arc::new(
            chain(&fc.name, filter, port)
                .map_err(|(field, reason)| refuse(&format!("filters[0].{field}"), reason))?,
        );
        for (r, range) in m.prefix_ranges.iter().enumerate() {
            let field = format!("filter_chain_match.prefix_ranges[{r}]");
            let ip: IpAddr = range
                .address_prefix
                .parse()
                .map_err(|_| refuse(&field, format!("{:?} is not an IP address", range.address_prefix)))?;
            let full = if ip.is_ipv4() { 32 } else { 128 };
            let len = range.prefix_len.map_or(full, |p| p.value);
            if len != full {
                return Err(refuse(
                    &field,
                    format!("/{len}: only single addresses (/{full}, a service VIP) are supported"),
                ));
            }
            let authority = SocketAddr::new(ip, port);
            if table.iter().any(|(a, _)| *a == authority) {
                return Err(refuse(&field, format!("{authority} is already matched by an earlier chain")));
            }
            table.push((authority, chain.clone()));
        }
    }
    Ok(table)
}

/// One chain's filter: an HCM with RDS, or a tcp_proxy to a cluster. `port` is the
/// listener port the chain serves (for `strip_matching_host_port`).
fn chain(name: &str, filter: &Filter, port: u16) -> Result<Chain, (String, String)> {
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        return Err(("typed_config".into(), "missing".into()));
    };
    match filter.name.as_str() {
        HCM => {
            let hcm: HttpConnectionManager = unpack(any).map_err(|e| ("typed_config".to_owned(), e))?;
            let route_config = match &hcm.route_specifier {
                Some(RouteSpecifier::Rds(rds)) if !rds.route_config_name.is_empty() => {
                    rds.route_config_name.as_str()
                }
                _ => return Err(("typed_config.rds".into(), "an RDS route_config_name is required".into())),
            };
            let (mut fault, mut router) = (None, false);
            let mut rbac = Vec::new();
            let mut rbac_before_fault = true;
            for (k, f) in hcm.http_filters.iter().enumerate() {
                if let Some(http_filter::ConfigType::ConfigDiscovery(_)) = &f.config_type {
                    return Err((
                        format!("typed_config.http_filters[{k}].config_discovery"),
                        "ECDS is not supported".into(),
                    ));
                }
                match f.name.as_str() {
                    FAULT => fault = Some(k),
                    RBAC => {
                        let field = format!("typed_config.http_filters[{k}].typed_config");
                        let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                            return Err((field, "missing".into()));
                        };
                        let config: RbacFilter = unpack(any).map_err(|e| (field.clone(), e))?;
                        let compiled =
                            Rbac::compile(&config).map_err(|e| (format!("{field}.{}", e.field), e.reason))?;
                        rbac.push(Arc::new(compiled));
                        rbac_before_fault &= fault.is_none();
                    }
                    ROUTER => router = true,
                    SET_FILTER_STATE => {}
                    other if f.is_optional => tracing::debug!(filter = other, "optional HTTP filter ignored"),
                    other => {
                        return Err((
                            format!("typed_config.http_filters[{k}].name"),
                            format!(
                                "{other}: not an HTTP filter weft-waypoint implements (fault, rbac, router)"
                            ),
                        ));
                    }
                }
            }
            if !router {
                return Err(("typed_config.http_filters".into(), format!("{ROUTER} is required, last")));
            }
            let strip_port = match &hcm.strip_port_mode {
                Some(StripPortMode::StripAnyHostPort(true)) => StripPort::Any,
                _ if hcm.strip_matching_host_port => StripPort::Matching(port),
                _ => StripPort::Keep,
            };
            Ok(Chain::Http(HttpChain {
                name: Arc::from(name),
                route_config: Arc::from(route_config),
                strip_port,
                fault: fault.is_some(),
                rbac: rbac.into(),
                rbac_before_fault,
            }))
        }
        TCP_PROXY => {
            let tcp: TcpProxy = unpack(any).map_err(|e| ("typed_config".to_owned(), e))?;
            match &tcp.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
                    Ok(Chain::Tcp(TcpChain { name: Arc::from(name), cluster: Arc::from(c.as_str()) }))
                }
                _ => Err(("typed_config.cluster".into(), "one cluster is required".into())),
            }
        }
        other => Err(("name".into(), format!("{other}: a chain must be {HCM} or {TCP_PROXY}"))),
    }
}

fn unpack<M: prost::Name + Default>(any: &envoy_types::pb::google::protobuf::Any) -> Result<M, String> {
    weft_xds::istio::unpack(any).map_err(|e| e.to_string())
}
