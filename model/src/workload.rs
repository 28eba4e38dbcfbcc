//! Workloads and services as the agent uses them, typed from Istio's workload API.
//!
//! Every field of `istio.workload.Address` that changes where or how a connection goes is
//! either carried here (and honoured by the data path) or refused with a [`ConvertError`]
//! naming the resource and the field. Nothing that matters is dropped on the floor: an
//! agent that ignored, say, a waypoint would quietly send traffic around the policy that
//! waypoint enforces.

use std::{net::IpAddr, sync::Arc};
use weft_hbone::{Identity, IdentityError};
use weft_xds::istio::workload as pb;

/// How a workload is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelProtocol {
    /// Plain TCP: the workload is not in the mesh (or cannot terminate HBONE).
    Tcp,
    /// HBONE: mTLS HTTP/2 CONNECT to the workload's address on port 15008.
    Hbone,
}

/// A service port and the port it reaches on a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PortMapping {
    pub service_port: u16,
    /// 0 means "not known for this workload" (a named port the workload does not have).
    pub target_port: u16,
}

/// Where a waypoint (or other gateway) is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayAddress {
    /// A workload address; the gateway's identity is that workload's.
    Address { ip: IpAddr, hbone_port: u16 },
    /// A service; one of its endpoints is chosen per connection.
    Hostname { namespace: String, hostname: String, hbone_port: u16 },
}

/// A service a workload backs, with its per-workload ports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Membership {
    /// `namespace/hostname`, the key of the service's Address resource.
    pub service: String,
    pub ports: Vec<PortMapping>,
}

/// Locality of a workload, for locality-aware endpoint choice.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

/// One endpoint of the mesh: a pod, a VM, a WorkloadEntry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    /// The control plane's id (`cluster//Pod/namespace/name` for a pod).
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub ips: Vec<IpAddr>,
    /// The node it runs on; the agent of that node serves it. Empty off-cluster.
    pub node: String,
    pub network: String,
    pub cluster_id: String,
    pub identity: Identity,
    pub protocol: TunnelProtocol,
    /// Traffic addressed to this workload goes through this waypoint first.
    pub waypoint: Option<GatewayAddress>,
    pub canonical_name: String,
    pub canonical_revision: String,
    pub workload_name: String,
    pub services: Vec<Membership>,
    /// Names (`namespace/name`) of the selector-scoped authorization policies that apply.
    pub authorization_policies: Vec<String>,
    /// Unhealthy workloads are not chosen as service endpoints.
    pub healthy: bool,
    /// A host-network workload shares its node's network namespace: never captured, and
    /// reached in plain TCP (there is no pod socket for HBONE).
    pub host_network: bool,
    pub locality: Locality,
    /// The Kubernetes pod UID, when the control plane sent it (weftd's `weft.io/pod-uid`
    /// extension): the agent binds a pod to its network namespace by it, never by address.
    pub pod_uid: Option<String>,
}

/// A service: virtual addresses, ports, and where its traffic must go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    /// `namespace/hostname`: the Address resource's name, and how workloads name it.
    pub key: String,
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vips: Vec<Vip>,
    pub ports: Vec<PortMapping>,
    /// Identities to accept from endpoints instead of each endpoint's own (rarely set).
    pub subject_alt_names: Vec<Identity>,
    pub waypoint: Option<GatewayAddress>,
    /// When non-empty, the waypoint is chosen per connection by these weights.
    pub weighted_waypoints: Vec<(GatewayAddress, u32)>,
    /// Only clients in the service's namespace may resolve and use it.
    pub namespace_only: bool,
    pub load_balancing: Option<LoadBalancing>,
}

/// A virtual address of a service; a prefix shorter than the address stands for a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Vip {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl Vip {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_match(&net.octets(), &ip.octets(), self.prefix_len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_match(&net.octets(), &ip.octets(), self.prefix_len),
            _ => false,
        }
    }

    pub fn is_host(&self) -> bool {
        self.prefix_len == full_len(self.ip)
    }
}

/// Locality-aware endpoint choice, as Istio's `trafficDistribution` / ztunnel do it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadBalancing {
    /// Scopes that must match, most important first.
    pub routing_preference: Vec<LocalityScope>,
    pub mode: LoadBalancingMode,
    /// Unhealthy endpoints are chosen too.
    pub include_unhealthy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalityScope {
    Region,
    Zone,
    Subzone,
    Node,
    Cluster,
    Network,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadBalancingMode {
    /// Prefer the closest endpoints, fall back to farther ones.
    Failover,
    /// Only endpoints matching every preferred scope.
    Strict,
    /// No endpoint selection: connect to the address the client asked for.
    Passthrough,
}

/// Why an Address resource is refused. The agent NACKs with this text and keeps what it
/// held under that name before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{resource}: the Address holds neither a workload nor a service")]
    Empty { resource: String },
    #[error("{resource}: {field}: {len} bytes is neither an IPv4 nor an IPv6 address")]
    BadAddress { resource: String, field: &'static str, len: usize },
    #[error("{resource}: {field}: prefix length {len} is longer than the address")]
    BadPrefix { resource: String, field: &'static str, len: u32 },
    #[error("{resource}: {field}: {value} is not a port (1-65535)")]
    BadPort { resource: String, field: &'static str, value: u32 },
    #[error("{resource}: {field}: unknown value {value} (newer control plane?)")]
    UnknownEnum { resource: String, field: &'static str, value: i32 },
    #[error("{resource}: identity: {source}")]
    Identity { resource: String, source: IdentityError },
    #[error("{resource}: {field}: {reason}")]
    Unsupported { resource: String, field: &'static str, reason: &'static str },
    #[error("{resource}: {reason}")]
    PodUid { resource: String, reason: String },
}

fn full_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn prefix_match(net: &[u8], ip: &[u8], len: u8) -> bool {
    let (bytes, bits) = (usize::from(len / 8), len % 8);
    if net[..bytes] != ip[..bytes] {
        return false;
    }
    bits == 0 || (net[bytes] ^ ip[bytes]) >> (8 - bits) == 0
}

fn ip_from(resource: &str, field: &'static str, bytes: &[u8]) -> Result<IpAddr, ConvertError> {
    match bytes.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(bytes).expect("length checked"))),
        16 => Ok(IpAddr::from(<[u8; 16]>::try_from(bytes).expect("length checked"))),
        len => Err(ConvertError::BadAddress { resource: resource.to_owned(), field, len }),
    }
}

fn port(resource: &str, field: &'static str, value: u32, zero_ok: bool) -> Result<u16, ConvertError> {
    match u16::try_from(value) {
        Ok(0) if !zero_ok => Err(ConvertError::BadPort { resource: resource.to_owned(), field, value }),
        Ok(p) => Ok(p),
        Err(_) => Err(ConvertError::BadPort { resource: resource.to_owned(), field, value }),
    }
}

fn ports(resource: &str, field: &'static str, list: &[pb::Port]) -> Result<Vec<PortMapping>, ConvertError> {
    list.iter()
        .map(|p| {
            Ok(PortMapping {
                service_port: port(resource, field, p.service_port, false)?,
                // 0: a named target port this workload (or service) cannot resolve.
                target_port: port(resource, field, p.target_port, true)?,
            })
        })
        .collect()
}

fn gateway(
    resource: &str,
    field: &'static str,
    g: &pb::GatewayAddress,
) -> Result<GatewayAddress, ConvertError> {
    // A waypoint without a port would be a waypoint nobody can reach; refusing is safer than
    // guessing 15008 for a field istiod always sets.
    let hbone_port = port(resource, field, g.hbone_mtls_port, false)?;
    match &g.destination {
        Some(pb::gateway_address::Destination::Address(a)) => {
            let ip = ip_from(resource, field, &a.address)?;
            if a.length.is_some_and(|l| l != u32::from(full_len(ip))) {
                return Err(ConvertError::Unsupported {
                    resource: resource.to_owned(),
                    field,
                    reason: "a gateway address must be a host address, not a range",
                });
            }
            Ok(GatewayAddress::Address { ip, hbone_port })
        }
        Some(pb::gateway_address::Destination::Hostname(h)) => Ok(GatewayAddress::Hostname {
            namespace: h.namespace.clone(),
            hostname: h.hostname.clone(),
            hbone_port,
        }),
        None => Err(ConvertError::Unsupported {
            resource: resource.to_owned(),
            field,
            reason: "a gateway needs an address or a hostname",
        }),
    }
}

/// A typed resource: what one Address holds. Shared: the state indexes built from a table
/// of resources point at the same allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Workload(Arc<Workload>),
    Service(Arc<Service>),
}

impl Resource {
    /// Converts and checks one Address resource named `name`.
    pub fn from_address(
        name: &str,
        address: &pb::Address,
        default_trust_domain: &str,
    ) -> Result<Resource, ConvertError> {
        match &address.r#type {
            Some(pb::address::Type::Workload(w)) => {
                Ok(Resource::Workload(Arc::new(workload(name, w, default_trust_domain)?)))
            }
            Some(pb::address::Type::Service(s)) => Ok(Resource::Service(Arc::new(service(name, s)?))),
            None => Err(ConvertError::Empty { resource: name.to_owned() }),
        }
    }
}

fn enum_value<T: TryFrom<i32>>(resource: &str, field: &'static str, value: i32) -> Result<T, ConvertError> {
    T::try_from(value).map_err(|_| ConvertError::UnknownEnum { resource: resource.to_owned(), field, value })
}

fn workload(name: &str, w: &pb::Workload, default_trust_domain: &str) -> Result<Workload, ConvertError> {
    let unsupported = |field, reason| ConvertError::Unsupported { resource: name.to_owned(), field, reason };
    if w.addresses.is_empty() && !w.hostname.is_empty() {
        return Err(unsupported(
            "hostname",
            "workloads reached by DNS name are not supported; give addresses",
        ));
    }
    if w.network_gateway.is_some() {
        return Err(unsupported(
            "network_gateway",
            "multi-network meshes (east-west gateways) are not supported",
        ));
    }
    if let Some(tunnel) = &w.application_tunnel {
        let protocol: pb::application_tunnel::Protocol =
            enum_value(name, "application_tunnel.protocol", tunnel.protocol)?;
        if protocol != pb::application_tunnel::Protocol::None || tunnel.port != 0 {
            return Err(unsupported(
                "application_tunnel",
                "PROXY-protocol and port-overriding application tunnels are not supported",
            ));
        }
    }
    let ips = w.addresses.iter().map(|a| ip_from(name, "addresses", a)).collect::<Result<Vec<_>, _>>()?;
    let protocol = match enum_value::<pb::TunnelProtocol>(name, "tunnel_protocol", w.tunnel_protocol)? {
        pb::TunnelProtocol::None => TunnelProtocol::Tcp,
        pb::TunnelProtocol::Hbone => TunnelProtocol::Hbone,
    };
    let status: pb::WorkloadStatus = enum_value(name, "status", w.status)?;
    let mode: pb::NetworkMode = enum_value(name, "network_mode", w.network_mode)?;
    let _: pb::WorkloadType = enum_value(name, "workload_type", w.workload_type)?;
    let trust_domain = if w.trust_domain.is_empty() { default_trust_domain } else { &w.trust_domain };
    let service_account = if w.service_account.is_empty() { "default" } else { &w.service_account };
    let identity = Identity::new(trust_domain, &w.namespace, service_account)
        .map_err(|source| ConvertError::Identity { resource: name.to_owned(), source })?;
    let mut services = w
        .services
        .iter()
        .map(|(service, list)| {
            Ok(Membership { service: service.clone(), ports: ports(name, "services", &list.ports)? })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    // The proto map has no order; a stable order keeps dumps and choices reproducible.
    services.sort_by(|a, b| a.service.cmp(&b.service));
    let pod_uid = weft_xds::istio::pod_uid(w)
        .map_err(|e| ConvertError::PodUid { resource: name.to_owned(), reason: e.to_string() })?;
    let locality = w.locality.as_ref().map_or_else(Locality::default, |l| Locality {
        region: l.region.clone(),
        zone: l.zone.clone(),
        subzone: l.subzone.clone(),
    });
    Ok(Workload {
        uid: if w.uid.is_empty() { name.to_owned() } else { w.uid.clone() },
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        ips,
        node: w.node.clone(),
        network: w.network.clone(),
        cluster_id: w.cluster_id.clone(),
        identity,
        protocol,
        waypoint: w.waypoint.as_ref().map(|g| gateway(name, "waypoint", g)).transpose()?,
        canonical_name: w.canonical_name.clone(),
        canonical_revision: w.canonical_revision.clone(),
        workload_name: w.workload_name.clone(),
        services,
        authorization_policies: w.authorization_policies.clone(),
        healthy: status == pb::WorkloadStatus::Healthy,
        host_network: mode == pb::NetworkMode::HostNetwork,
        locality,
        pod_uid,
    })
}

fn service(name: &str, s: &pb::Service) -> Result<Service, ConvertError> {
    let vips = s
        .addresses
        .iter()
        .map(|a| {
            let ip = ip_from(name, "addresses", &a.address)?;
            let prefix_len = match a.length {
                None => full_len(ip),
                Some(l) if l <= u32::from(full_len(ip)) => l as u8,
                Some(len) => {
                    return Err(ConvertError::BadPrefix {
                        resource: name.to_owned(),
                        field: "addresses",
                        len,
                    });
                }
            };
            Ok(Vip { ip, prefix_len })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let subject_alt_names = s
        .subject_alt_names
        .iter()
        .map(|san| {
            san.parse::<Identity>()
                .map_err(|source| ConvertError::Identity { resource: name.to_owned(), source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let visibility: pb::service::Visibility = enum_value(name, "visibility", s.visibility)?;
    let load_balancing = s.load_balancing.as_ref().map(|lb| load_balancing(name, lb)).transpose()?;
    let _: pb::IpFamilies = enum_value(name, "ip_families", s.ip_families)?;
    Ok(Service {
        key: format!("{}/{}", s.namespace, s.hostname),
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        hostname: s.hostname.clone(),
        vips,
        ports: ports(name, "ports", &s.ports)?,
        subject_alt_names,
        waypoint: s.waypoint.as_ref().map(|g| gateway(name, "waypoint", g)).transpose()?,
        weighted_waypoints: s
            .weighted_waypoints
            .iter()
            .map(|ww| {
                let destination = ww.destination.as_ref().ok_or_else(|| ConvertError::Unsupported {
                    resource: name.to_owned(),
                    field: "weighted_waypoints",
                    reason: "a weighted waypoint needs a destination",
                })?;
                Ok((gateway(name, "weighted_waypoints", destination)?, ww.weight))
            })
            .collect::<Result<Vec<_>, ConvertError>>()?,
        namespace_only: visibility == pb::service::Visibility::Namespace,
        load_balancing,
    })
}

fn load_balancing(name: &str, lb: &pb::LoadBalancing) -> Result<LoadBalancing, ConvertError> {
    use pb::load_balancing::{HealthPolicy, Mode, Scope};
    let routing_preference = lb
        .routing_preference
        .iter()
        .map(|&v| {
            Ok(match enum_value::<Scope>(name, "load_balancing.routing_preference", v)? {
                Scope::UnspecifiedScope => {
                    return Err(ConvertError::Unsupported {
                        resource: name.to_owned(),
                        field: "load_balancing.routing_preference",
                        reason: "UNSPECIFIED_SCOPE is not a scope",
                    });
                }
                Scope::Region => LocalityScope::Region,
                Scope::Zone => LocalityScope::Zone,
                Scope::Subzone => LocalityScope::Subzone,
                Scope::Node => LocalityScope::Node,
                Scope::Cluster => LocalityScope::Cluster,
                Scope::Network => LocalityScope::Network,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mode = match enum_value::<Mode>(name, "load_balancing.mode", lb.mode)? {
        // Istio: unspecified means failover when preferences are given.
        Mode::UnspecifiedMode | Mode::Failover => LoadBalancingMode::Failover,
        Mode::Strict => LoadBalancingMode::Strict,
        Mode::Passthrough => LoadBalancingMode::Passthrough,
    };
    let health: HealthPolicy = enum_value(name, "load_balancing.health_policy", lb.health_policy)?;
    Ok(LoadBalancing { routing_preference, mode, include_unhealthy: health == HealthPolicy::AllowAll })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::istio::workload::{Address, address};

    fn w(f: impl FnOnce(&mut pb::Workload)) -> Address {
        let mut w = pb::Workload {
            uid: "c//Pod/shop/cart-1".into(),
            name: "cart-1".into(),
            namespace: "shop".into(),
            addresses: vec![vec![198, 18, 1, 2]],
            node: "n1".into(),
            service_account: "cart".into(),
            tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
            ..Default::default()
        };
        f(&mut w);
        Address { r#type: Some(address::Type::Workload(w)) }
    }

    fn s(f: impl FnOnce(&mut pb::Service)) -> Address {
        let mut s = pb::Service {
            name: "cart".into(),
            namespace: "shop".into(),
            hostname: "cart.shop.svc.cluster.local".into(),
            addresses: vec![pb::NetworkAddress {
                network: String::new(),
                address: vec![198, 19, 0, 1],
                length: None,
            }],
            ports: vec![pb::Port { service_port: 80, target_port: 8080 }],
            ..Default::default()
        };
        f(&mut s);
        Address { r#type: Some(address::Type::Service(s)) }
    }

    fn convert(a: &Address) -> Result<Resource, String> {
        Resource::from_address("res", a, "cluster.local").map_err(|e| e.to_string())
    }

    #[test]
    fn a_workload_is_typed_with_its_identity() {
        let Resource::Workload(w) = convert(&w(|_| {})).unwrap() else { panic!() };
        assert_eq!(w.identity.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        assert_eq!(w.protocol, TunnelProtocol::Hbone);
        assert_eq!(w.ips, ["198.18.1.2".parse::<IpAddr>().unwrap()]);
        assert!(w.healthy && !w.host_network && w.waypoint.is_none() && w.pod_uid.is_none());
    }

    #[test]
    fn ports_out_of_range_are_refused_not_narrowed() {
        let err = convert(&s(|s| s.ports[0].target_port = 70_000)).unwrap_err();
        assert!(err.contains("ports: 70000 is not a port"), "{err}");
        let err = convert(&s(|s| s.ports[0].service_port = 0)).unwrap_err();
        assert!(err.contains("0 is not a port"), "{err}");
        let mut list = pb::PortList::default();
        list.ports.push(pb::Port { service_port: 65_536, target_port: 80 });
        let err = convert(&w(|w| {
            w.services.insert("shop/cart.shop.svc.cluster.local".into(), list);
        }))
        .unwrap_err();
        assert!(err.contains("services: 65536"), "{err}");
    }

    #[test]
    fn fields_that_change_meaning_are_carried_or_refused() {
        // Waypoints are carried.
        let wp = pb::GatewayAddress {
            destination: Some(pb::gateway_address::Destination::Address(pb::NetworkAddress {
                network: String::new(),
                address: vec![198, 18, 2, 9],
                length: None,
            })),
            hbone_mtls_port: 15008,
        };
        let Resource::Workload(x) = convert(&w(|w| w.waypoint = Some(wp.clone()))).unwrap() else { panic!() };
        assert_eq!(
            x.waypoint,
            Some(GatewayAddress::Address { ip: "198.18.2.9".parse().unwrap(), hbone_port: 15008 })
        );
        let err = convert(&w(|w| w.waypoint = Some(pb::GatewayAddress { hbone_mtls_port: 0, ..wp.clone() })))
            .unwrap_err();
        assert!(err.contains("waypoint: 0 is not a port"), "{err}");
        // Visibility, CIDR VIPs and weighted waypoints are carried.
        let Resource::Service(svc) = convert(&s(|s| {
            s.visibility = pb::service::Visibility::Namespace as i32;
            s.addresses[0].length = Some(24);
            s.weighted_waypoints.push(pb::WeightedWaypoint { destination: Some(wp.clone()), weight: 3 });
        }))
        .unwrap() else {
            panic!()
        };
        assert!(svc.namespace_only);
        assert_eq!(svc.vips[0].prefix_len, 24);
        assert!(
            svc.vips[0].contains("198.19.0.77".parse().unwrap())
                && !svc.vips[0].contains("198.19.1.1".parse().unwrap())
        );
        assert_eq!(svc.weighted_waypoints.len(), 1);
        let err = convert(&s(|s| s.addresses[0].length = Some(33))).unwrap_err();
        assert!(err.contains("prefix length 33"), "{err}");
        // An enum value from a newer control plane is refused, not read as the default.
        let err = convert(&s(|s| s.visibility = 7)).unwrap_err();
        assert!(err.contains("visibility: unknown value 7"), "{err}");
        let err = convert(&w(|w| w.tunnel_protocol = 5)).unwrap_err();
        assert!(err.contains("tunnel_protocol: unknown value 5"), "{err}");
        // What the agent cannot do is refused by name.
        let err = convert(&w(|w| w.network_gateway = Some(wp.clone()))).unwrap_err();
        assert!(err.contains("network_gateway"), "{err}");
        let err = convert(&w(|w| {
            w.application_tunnel = Some(pb::ApplicationTunnel {
                protocol: pb::application_tunnel::Protocol::Proxy as i32,
                port: 0,
            })
        }))
        .unwrap_err();
        assert!(err.contains("application_tunnel"), "{err}");
    }

    #[test]
    fn bad_addresses_and_identities_name_the_resource() {
        let err = convert(&w(|w| w.addresses = vec![vec![1, 2, 3]])).unwrap_err();
        assert!(err.starts_with("res: addresses: 3 bytes"), "{err}");
        let err = convert(&w(|w| w.service_account = "a/b".into())).unwrap_err();
        assert!(err.contains("res: identity"), "{err}");
        let err = convert(&Address { r#type: None }).unwrap_err();
        assert!(err.contains("neither a workload nor a service"), "{err}");
    }

    #[test]
    fn cidr_containment() {
        let v = Vip { ip: "10.0.0.0".parse().unwrap(), prefix_len: 9 };
        assert!(v.contains("10.127.255.255".parse().unwrap()));
        assert!(!v.contains("10.128.0.0".parse().unwrap()));
        assert!(!v.contains("::1".parse().unwrap()));
        let host = Vip { ip: "10.0.0.1".parse().unwrap(), prefix_len: 32 };
        assert!(
            host.is_host()
                && host.contains("10.0.0.1".parse().unwrap())
                && !host.contains("10.0.0.2".parse().unwrap())
        );
    }
}
