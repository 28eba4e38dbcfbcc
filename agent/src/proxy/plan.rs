//! Decide, then do: how a connection travels, decided by pure functions of the original
//! destination, the workloads involved and the model — no sockets, no I/O — so every rule
//! is unit-tested here and the handlers in `outbound.rs` / `inbound.rs` only carry it out.
//! The outbound rules are ztunnel's (`build_request` in its proxy/outbound.rs).

use std::{net::SocketAddr, sync::Arc};
use weft_ebpf_common::{HBONE_PORT, MESH_PORTS};
use weft_hbone::Identity;
use weft_model::{Service, TunnelProtocol, Workload, WorkloadState};

/// How the agent reaches the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A plain TCP connection to the destination (not in the mesh).
    Tcp,
    /// HBONE to the destination pod's port 15008.
    Hbone,
    /// HBONE to the destination's waypoint, which applies L7 policy and carries it on.
    ViaWaypoint,
}

/// What the outbound handler does with one connection.
#[derive(Debug, Clone)]
pub struct Request {
    pub protocol: Protocol,
    /// Where the agent's TCP connection goes: the destination itself (Tcp) or the HBONE
    /// port of the destination pod or of its waypoint.
    pub next_hop: SocketAddr,
    /// The CONNECT `:authority`: the destination pod's address and target port (Hbone),
    /// or the address the client dialled (ViaWaypoint: the waypoint routes on it).
    pub authority: SocketAddr,
    /// The workload at `next_hop`, whose identity the TLS peer must present (HBONE).
    pub next_hop_workload: Option<Arc<Workload>>,
    /// The workload that serves the connection in the end, when known.
    pub destination: Option<Arc<Workload>>,
    /// The service the client addressed, when it used a service address.
    pub service: Option<Arc<Service>>,
}

impl Request {
    /// The identities the next hop may present: its workload's, or a service's
    /// `subject_alt_names` when the service names them (connecting straight to it).
    pub fn expected_identities(&self) -> impl Iterator<Item = &Identity> {
        let sans = match (&self.protocol, &self.service) {
            (Protocol::Hbone, Some(s)) => s.subject_alt_names.as_slice(),
            _ => &[],
        };
        self.next_hop_workload.iter().map(|w| &w.identity).chain(sans)
    }
}

/// Why a connection has nowhere to go. Each is a refusal of the client's connection,
/// never a bypass of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{dst}: port {port} of a mesh workload is the mesh's own (15001/15006/15008); refused")]
    MeshPort { dst: SocketAddr, port: u16 },
    #[error("service {service} has no port {port}")]
    UnknownServicePort { service: String, port: u16 },
    #[error("service {service} has no healthy endpoint for port {port}")]
    NoHealthyEndpoint { service: String, port: u16 },
    #[error(
        "{dst} must go through waypoint {waypoint}, which has no healthy workload; refused rather than bypassed"
    )]
    WaypointUnavailable { dst: SocketAddr, waypoint: String },
    #[error("{dst}: native IPv6 is not carried by the agent yet")]
    Ipv6 { dst: SocketAddr },
}

/// Plans a connection from `source` (an enrolled pod) to `orig`, the address it dialled.
pub fn outbound(orig: SocketAddr, source: &Workload, state: &WorkloadState) -> Result<Request, PlanError> {
    if orig.is_ipv6() {
        return Err(PlanError::Ipv6 { dst: orig });
    }
    let mut service = None;
    let (dst, addr) = if let Some(svc) = state.service_by_addr(orig.ip(), &source.namespace) {
        if !svc.ports.iter().any(|p| p.service_port == orig.port()) {
            return Err(PlanError::UnknownServicePort { service: svc.hostname.clone(), port: orig.port() });
        }
        if let Some(waypoint) = state.service_waypoint(svc)
            && !state.is_gateway(source, waypoint)
        {
            return via_waypoint(orig, waypoint, state, None, Some(svc.clone()));
        }
        match state.pick_endpoint(svc, orig.port(), source) {
            Some(up) => {
                service = Some(svc.clone());
                (up.workload, up.addr)
            }
            None if passthrough(svc) => return Ok(tcp(orig, None, Some(svc.clone()))),
            None => {
                return Err(PlanError::NoHealthyEndpoint {
                    service: svc.hostname.clone(),
                    port: orig.port(),
                });
            }
        }
    } else if let Some(w) = state.workload_by_ip(orig.ip()) {
        // Addressed to the workload itself: its own waypoint, if it has one.
        if let Some(waypoint) = &w.waypoint
            && !state.is_gateway(source, waypoint)
        {
            return via_waypoint(orig, waypoint, state, Some(w.clone()), None);
        }
        (w.clone(), orig)
    } else {
        // Not a mesh address: out of the mesh, as the client asked.
        return Ok(tcp(orig, None, None));
    };
    if dst.protocol == TunnelProtocol::Hbone && !dst.host_network {
        if MESH_PORTS.contains(&addr.port()) {
            return Err(PlanError::MeshPort { dst: addr, port: addr.port() });
        }
        return Ok(Request {
            protocol: Protocol::Hbone,
            next_hop: SocketAddr::new(addr.ip(), HBONE_PORT),
            authority: addr,
            next_hop_workload: Some(dst.clone()),
            destination: Some(dst),
            service,
        });
    }
    Ok(tcp(addr, Some(dst), service))
}

fn passthrough(svc: &Service) -> bool {
    svc.load_balancing
        .as_ref()
        .is_some_and(|lb| lb.mode == weft_model::workload::LoadBalancingMode::Passthrough)
}

fn tcp(addr: SocketAddr, destination: Option<Arc<Workload>>, service: Option<Arc<Service>>) -> Request {
    Request {
        protocol: Protocol::Tcp,
        next_hop: addr,
        authority: addr,
        next_hop_workload: None,
        destination,
        service,
    }
}

fn via_waypoint(
    orig: SocketAddr,
    waypoint: &weft_model::GatewayAddress,
    state: &WorkloadState,
    destination: Option<Arc<Workload>>,
    service: Option<Arc<Service>>,
) -> Result<Request, PlanError> {
    let up = state
        .resolve_gateway(waypoint)
        .ok_or_else(|| PlanError::WaypointUnavailable { dst: orig, waypoint: describe(waypoint) })?;
    Ok(Request {
        protocol: Protocol::ViaWaypoint,
        next_hop: up.addr,
        authority: orig,
        next_hop_workload: Some(up.workload),
        destination,
        service,
    })
}

fn describe(g: &weft_model::GatewayAddress) -> String {
    match g {
        weft_model::GatewayAddress::Address { ip, hbone_port } => {
            SocketAddr::new(*ip, *hbone_port).to_string()
        }
        weft_model::GatewayAddress::Hostname { namespace, hostname, .. } => format!("{namespace}/{hostname}"),
    }
}

/// Why an inbound connection is refused before the application is tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundRefusal {
    #[error("destination {dst} is not an address of pod {pod}")]
    NotThisPod { dst: SocketAddr, pod: String },
    #[error(
        "destination {dst} is a loopback or mesh port (15001/15006/15008): a connection to the agent itself"
    )]
    SelfCall { dst: SocketAddr },
}

/// Where an inbound connection for `pod` may go: `dst` (the CONNECT authority, or the
/// captured socket's original destination) must be one of the pod's addresses and not
/// one of the agent's own ports, else the agent would connect to itself or let a client
/// use the pod as a relay to elsewhere.
pub fn inbound(dst: SocketAddr, pod: &Workload) -> Result<SocketAddr, InboundRefusal> {
    if dst.ip().is_loopback() || dst.ip().is_unspecified() || MESH_PORTS.contains(&dst.port()) {
        return Err(InboundRefusal::SelfCall { dst });
    }
    if !pod.ips.contains(&dst.ip()) {
        return Err(InboundRefusal::NotThisPod { dst, pod: format!("{}/{}", pod.namespace, pod.name) });
    }
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_model::AddressTable;
    use weft_xds::istio::workload as pb;

    /// A model: `src` (HBONE, shop), `rev-1` and `rev-2` behind service `reviews` (VIP
    /// 198.19.0.10:80 → 9080), `legacy` (not in the mesh), a waypoint pod `wp`.
    fn model(edit: impl FnOnce(&mut Vec<(String, pb::Address)>)) -> WorkloadState {
        let w = |name: &str, ip: [u8; 4], hbone: bool, services: &[&str]| {
            let services = services
                .iter()
                .map(|s| {
                    (
                        s.to_string(),
                        pb::PortList { ports: vec![pb::Port { service_port: 80, target_port: 9080 }] },
                    )
                })
                .collect();
            let w = pb::Workload {
                uid: format!("c//Pod/shop/{name}"),
                name: name.into(),
                namespace: "shop".into(),
                addresses: vec![ip.to_vec()],
                node: "n1".into(),
                service_account: name.into(),
                tunnel_protocol: if hbone { pb::TunnelProtocol::Hbone } else { pb::TunnelProtocol::None }
                    as i32,
                services,
                ..Default::default()
            };
            (w.uid.clone(), pb::Address { r#type: Some(pb::address::Type::Workload(w)) })
        };
        let svc = pb::Service {
            name: "reviews".into(),
            namespace: "shop".into(),
            hostname: "reviews.shop.svc.cluster.local".into(),
            addresses: vec![pb::NetworkAddress {
                network: String::new(),
                address: vec![198, 19, 0, 10],
                length: None,
            }],
            ports: vec![pb::Port { service_port: 80, target_port: 9080 }],
            ..Default::default()
        };
        let mut all = vec![
            w("src", [198, 18, 1, 2], true, &[]),
            w("rev-1", [198, 18, 2, 2], true, &["shop/reviews.shop.svc.cluster.local"]),
            w("rev-2", [198, 18, 2, 3], true, &["shop/reviews.shop.svc.cluster.local"]),
            w("legacy", [198, 18, 2, 4], false, &[]),
            w("wp", [198, 18, 3, 2], true, &[]),
            (
                "shop/reviews.shop.svc.cluster.local".into(),
                pb::Address { r#type: Some(pb::address::Type::Service(svc)) },
            ),
        ];
        edit(&mut all);
        let mut table = AddressTable::new("cluster.local");
        assert!(table.apply(all.iter().map(|(n, a)| (n.as_str(), a)), []).is_empty());
        table.state()
    }

    fn src(state: &WorkloadState) -> Arc<Workload> {
        state.workload_by_ip("198.18.1.2".parse().unwrap()).unwrap().clone()
    }

    fn sa(a: &str) -> SocketAddr {
        a.parse().unwrap()
    }

    fn waypoint() -> pb::GatewayAddress {
        pb::GatewayAddress {
            destination: Some(pb::gateway_address::Destination::Address(pb::NetworkAddress {
                network: String::new(),
                address: vec![198, 18, 3, 2],
                length: None,
            })),
            hbone_mtls_port: 15008,
        }
    }

    fn edit_workload(all: &mut [(String, pb::Address)], name: &str, f: impl FnOnce(&mut pb::Workload)) {
        for (_, a) in all.iter_mut() {
            if let Some(pb::address::Type::Workload(w)) = &mut a.r#type
                && w.name == name
            {
                return f(w);
            }
        }
    }

    fn edit_service(all: &mut [(String, pb::Address)], f: impl FnOnce(&mut pb::Service)) {
        for (_, a) in all.iter_mut() {
            if let Some(pb::address::Type::Service(s)) = &mut a.r#type {
                f(s);
                return;
            }
        }
    }

    #[test]
    fn a_mesh_pod_is_reached_over_hbone_with_its_identity() {
        let state = model(|_| {});
        let r = outbound(sa("198.18.2.2:9080"), &src(&state), &state).unwrap();
        assert_eq!(r.protocol, Protocol::Hbone);
        assert_eq!(r.next_hop, sa("198.18.2.2:15008"));
        assert_eq!(r.authority, sa("198.18.2.2:9080"));
        let ids: Vec<String> = r.expected_identities().map(ToString::to_string).collect();
        assert_eq!(ids, ["spiffe://cluster.local/ns/shop/sa/rev-1"]);
        assert!(r.service.is_none());
    }

    #[test]
    fn a_service_vip_becomes_an_endpoint_round_robin() {
        let state = model(|_| {});
        let s = src(&state);
        let a = outbound(sa("198.19.0.10:80"), &s, &state).unwrap();
        let b = outbound(sa("198.19.0.10:80"), &s, &state).unwrap();
        assert_eq!((a.protocol, b.protocol), (Protocol::Hbone, Protocol::Hbone));
        let mut got = [a.authority, b.authority];
        got.sort();
        assert_eq!(got, [sa("198.18.2.2:9080"), sa("198.18.2.3:9080")]);
        assert_eq!(a.service.as_ref().unwrap().hostname, "reviews.shop.svc.cluster.local");
        assert_eq!(a.next_hop.port(), 15008);
    }

    #[test]
    fn out_of_mesh_and_unknown_destinations_get_plain_tcp() {
        let state = model(|_| {});
        let s = src(&state);
        let r = outbound(sa("198.18.2.4:5432"), &s, &state).unwrap();
        assert_eq!((r.protocol, r.next_hop), (Protocol::Tcp, sa("198.18.2.4:5432")));
        assert_eq!(r.destination.as_ref().unwrap().name, "legacy");
        assert_eq!(r.expected_identities().count(), 0);
        let r = outbound(sa("203.0.113.9:443"), &s, &state).unwrap();
        assert_eq!((r.protocol, r.next_hop), (Protocol::Tcp, sa("203.0.113.9:443")));
        assert!(r.destination.is_none());
    }

    #[test]
    fn the_mesh_ports_of_a_mesh_pod_are_refused() {
        let state = model(|_| {});
        for port in [15001, 15006, 15008] {
            let err = outbound(SocketAddr::new("198.18.2.2".parse().unwrap(), port), &src(&state), &state)
                .unwrap_err();
            assert_eq!(
                err,
                PlanError::MeshPort { dst: SocketAddr::new("198.18.2.2".parse().unwrap(), port), port }
            );
        }
        // A server outside the mesh may listen on 15008: that is just a port there.
        let r = outbound(sa("198.18.2.4:15008"), &src(&state), &state).unwrap();
        assert_eq!(r.protocol, Protocol::Tcp);
    }

    #[test]
    fn unknown_service_ports_and_empty_services_are_refused() {
        let state = model(|_| {});
        let err = outbound(sa("198.19.0.10:81"), &src(&state), &state).unwrap_err();
        assert!(matches!(err, PlanError::UnknownServicePort { port: 81, .. }), "{err}");
        let state = model(|all| {
            edit_workload(all, "rev-1", |w| w.status = pb::WorkloadStatus::Unhealthy as i32);
            edit_workload(all, "rev-2", |w| w.services.clear());
        });
        let err = outbound(sa("198.19.0.10:80"), &src(&state), &state).unwrap_err();
        assert!(matches!(err, PlanError::NoHealthyEndpoint { port: 80, .. }), "{err}");
    }

    #[test]
    fn a_service_waypoint_takes_the_connection_with_the_vip_as_authority() {
        let state = model(|all| edit_service(all, |s| s.waypoint = Some(waypoint())));
        let r = outbound(sa("198.19.0.10:80"), &src(&state), &state).unwrap();
        assert_eq!(r.protocol, Protocol::ViaWaypoint);
        assert_eq!(r.next_hop, sa("198.18.3.2:15008"));
        assert_eq!(r.authority, sa("198.19.0.10:80"));
        assert_eq!(
            r.next_hop_workload.as_ref().unwrap().identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/wp"
        );
        // The waypoint's own onward connection is not sent back to itself.
        let wp = state.workload_by_ip("198.18.3.2".parse().unwrap()).unwrap().clone();
        let r = outbound(sa("198.19.0.10:80"), &wp, &state).unwrap();
        assert_eq!(r.protocol, Protocol::Hbone);
    }

    #[test]
    fn a_workload_waypoint_takes_connections_addressed_to_the_workload() {
        let state = model(|all| edit_workload(all, "rev-1", |w| w.waypoint = Some(waypoint())));
        let r = outbound(sa("198.18.2.2:9080"), &src(&state), &state).unwrap();
        assert_eq!((r.protocol, r.authority), (Protocol::ViaWaypoint, sa("198.18.2.2:9080")));
        assert_eq!(r.destination.unwrap().name, "rev-1");
    }

    #[test]
    fn a_missing_waypoint_refuses_rather_than_bypasses() {
        let state = model(|all| {
            edit_service(all, |s| s.waypoint = Some(waypoint()));
            all.retain(|(n, _)| !n.ends_with("/wp"));
        });
        let err = outbound(sa("198.19.0.10:80"), &src(&state), &state).unwrap_err();
        assert!(matches!(err, PlanError::WaypointUnavailable { .. }), "{err}");
    }

    #[test]
    fn weighted_waypoints_share_connections_by_weight() {
        let other = pb::GatewayAddress {
            destination: Some(pb::gateway_address::Destination::Address(pb::NetworkAddress {
                network: String::new(),
                address: vec![198, 18, 2, 4],
                length: None,
            })),
            hbone_mtls_port: 15008,
        };
        let state = model(|all| {
            edit_service(all, |s| {
                s.waypoint = Some(waypoint());
                s.weighted_waypoints = vec![
                    pb::WeightedWaypoint { destination: Some(waypoint()), weight: 3 },
                    pb::WeightedWaypoint { destination: Some(other), weight: 1 },
                ];
            })
        });
        let s = src(&state);
        let to_other = (0..400)
            .filter(|_| {
                outbound(sa("198.19.0.10:80"), &s, &state).unwrap().next_hop.ip().to_string() == "198.18.2.4"
            })
            .count();
        assert_eq!(to_other, 100, "a quarter of the connections");
    }

    #[test]
    fn namespace_visible_services_are_unknown_elsewhere() {
        let state =
            model(|all| edit_service(all, |s| s.visibility = pb::service::Visibility::Namespace as i32));
        assert_eq!(outbound(sa("198.19.0.10:80"), &src(&state), &state).unwrap().protocol, Protocol::Hbone);
        let mut other = (*src(&state)).clone();
        other.namespace = "elsewhere".into();
        let r = outbound(sa("198.19.0.10:80"), &other, &state).unwrap();
        assert_eq!(
            (r.protocol, r.next_hop),
            (Protocol::Tcp, sa("198.19.0.10:80")),
            "not resolved: dialled as is"
        );
    }

    #[test]
    fn inbound_accepts_only_the_pods_own_application_ports() {
        let state = model(|_| {});
        let pod = state.workload_by_ip("198.18.2.2".parse().unwrap()).unwrap();
        assert_eq!(inbound(sa("198.18.2.2:9080"), pod), Ok(sa("198.18.2.2:9080")));
        assert!(matches!(inbound(sa("198.18.2.3:9080"), pod), Err(InboundRefusal::NotThisPod { .. })));
        for dst in
            ["127.0.0.1:15006", "127.0.0.1:9080", "198.18.2.2:15006", "198.18.2.2:15008", "198.18.2.2:15001"]
        {
            assert!(matches!(inbound(sa(dst), pod), Err(InboundRefusal::SelfCall { .. })), "{dst}");
        }
    }
}
