//! Standard Envoy v3 resources for waypoints (and, `gateway.rs`, ingress/egress
//! gateways): what a waypoint (Weft's, or a stock Envoy standing in for it) needs to carry
//! the traffic of the services that use it, in the shape istiod gives its waypoints
//! (pilot's `listener_waypoint.go`, `cluster_waypoint.go`), so that a stock Envoy fed by
//! weftd is a waypoint and Weft's waypoint understands what istiod would send.
//!
//! A waypoint is a Gateway API `Gateway` of class `istio-waypoint`. A service uses it
//! when the service or its namespace carries `istio.io/use-waypoint: <name>` (and
//! `istio.io/use-waypoint-namespace` if the waypoint lives elsewhere), as in Istio
//! ambient. Resources for a waypoint are scoped to proxies of the waypoint's namespace:
//!
//! - `listener.rs`: `connect_terminate` (HBONE in, :15008), the internal listener
//!   `main_internal` with one filter chain per service VIP and port (HTTP with RDS, or
//!   TCP), and `connect_originate` (HBONE out); the drawing of the whole way is there;
//! - `route.rs`: one RouteConfiguration per HTTP service port, named like its cluster,
//!   with the routes of the VirtualService bound to the host (or, `httproute.rs`, an
//!   HTTPRoute attached to it), or a default route;
//! - `cluster.rs`: a cluster per service port and DestinationRule subset, named as Istio
//!   names a waypoint's (`inbound-vip|9080|http/v1|reviews.bookinfo.svc.cluster.local`),
//!   with their endpoints (EDS), and the fixed `main_internal` and `connect_originate`;
//!   `traffic_policy.rs` applies the DestinationRule (subset merged over the rule, as
//!   Istio merges them);
//! - the rules inside a route, each as Istio's translation makes it: `route_match.rs`
//!   (matches, source conditions), `retry.rs`, `fault.rs`, `hash.rs` (consistent-hash route
//!   policies), `delegate.rs` (VirtualService delegation merged);
//! - `authorization.rs`: L7 AuthorizationPolicy as the RBAC HTTP filters of a service's
//!   connection manager;
//! - `protocol.rs`: which ports are HTTP; `tls.rs`: HBONE's mTLS settings.

pub mod authorization;
mod cluster;
mod delegate;
mod fault;
mod gateway;
mod hash;
mod httproute;
mod listener;
mod protocol;
mod retry;
mod route;
pub mod route_match;
mod tls;
mod traffic_policy;

use super::{Options, workload};
use crate::config::{
    kinds::{destination_rule::DestinationRule, kubernetes::Service, virtual_service::VirtualService},
    store::ConfigSnapshot,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use std::collections::HashMap;
use weft_xds::{
    server::{Scope, ScopedResource},
    type_url,
};

pub use protocol::PortProtocol;

/// HBONE's port: where `connect_terminate` listens, and where endpoints are reached.
pub const HBONE_PORT: u32 = 15008;
/// The waypoint's HBONE listener (Istio's name).
pub const CONNECT_TERMINATE: &str = "connect_terminate";
/// The internal listener (and the cluster reaching it) that dispatches by VIP:PORT.
pub const MAIN_INTERNAL: &str = "main_internal";
/// The internal listener (and the cluster behind it) that originates HBONE.
pub const CONNECT_ORIGINATE: &str = "connect_originate";
/// Istio's `OriginalDstMetadataKey`: the endpoint metadata (key `local`) and filter state
/// (`.local_ip`) the original_dst listener filter restores a local address from.
pub const ORIGINAL_DST_KEY: &str = "envoy.filters.listener.original_dst";

const USE_WAYPOINT: &str = "istio.io/use-waypoint";
const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
/// Marks a waypoint's own Service (Istio's `gateway.istio.io/managed`), which uses no waypoint.
const GATEWAY_MANAGED: &str = "gateway.istio.io/managed";
const MANAGED_BY_MESH_CONTROLLER: &str = "istio.io-mesh-controller";
pub(crate) const WAYPOINT_CLASSES: [&str; 2] = ["istio-waypoint", "weft-waypoint"];

/// A service a waypoint carries, with what translation needs about it.
pub(crate) struct Served<'a> {
    pub service: &'a Service,
    pub hostname: String,
    pub destination_rule: Option<&'a DestinationRule>,
    /// The mesh VirtualService bound to this host (not shadowed by an older one).
    pub virtual_service: Option<&'a VirtualService>,
}

/// DestinationRules and mesh VirtualServices by the FQDN they name, built once per
/// translation so that finding a service's rules is a lookup, not a scan (10k services
/// × 1k rules would be 10⁷ host comparisons per push). The first one in store order
/// wins, as a scan would have found it; `*` applies where nothing more specific does.
pub(crate) struct HostIndex<'a> {
    destination_rules: HashMap<String, &'a DestinationRule>,
    virtual_services: HashMap<String, &'a VirtualService>,
}

impl<'a> HostIndex<'a> {
    pub fn new(cfg: &'a ConfigSnapshot, opts: &Options) -> HostIndex<'a> {
        let suffix = &opts.domain_suffix;
        let mut destination_rules = HashMap::new();
        for dr in cfg.destination_rules.iter() {
            let fqdn = if dr.spec.host == "*" {
                "*".to_owned()
            } else {
                route::resolve_host(&dr.spec.host, &dr.metadata.namespace, suffix)
            };
            destination_rules.entry(fqdn).or_insert(dr.as_ref());
        }
        let mut virtual_services = HashMap::new();
        for vs in cfg.virtual_services.iter().filter(|vs| vs.spec.applies_to_mesh()) {
            let key = ConfigSnapshot::virtual_service_key(vs);
            for h in vs.spec.hosts.iter().filter(|h| !cfg.is_host_shadowed(&key, h)) {
                let fqdn = if h == "*" {
                    "*".to_owned()
                } else {
                    route::resolve_host(h, &vs.metadata.namespace, suffix)
                };
                virtual_services.entry(fqdn).or_insert(vs.as_ref());
            }
        }
        HostIndex { destination_rules, virtual_services }
    }

    pub fn destination_rule(&self, fqdn: &str) -> Option<&'a DestinationRule> {
        self.destination_rules.get(fqdn).or_else(|| self.destination_rules.get("*")).copied()
    }

    pub fn virtual_service(&self, fqdn: &str) -> Option<&'a VirtualService> {
        self.virtual_services.get(fqdn).or_else(|| self.virtual_services.get("*")).copied()
    }
}

/// `inbound-vip|PORT|http|HOST`, or `inbound-vip|PORT|http/SUBSET|HOST` for a subset:
/// Istio's name for a waypoint's cluster of an HTTP service port, which routes name.
pub(crate) fn cluster_name(port: u32, subset: &str, host: &str) -> String {
    cluster_name_for("http", port, subset, host)
}

/// Istio's waypoint cluster name for a port carried as `kind` (`http` or `tcp`).
pub(crate) fn cluster_name_for(kind: &str, port: u32, subset: &str, host: &str) -> String {
    if subset.is_empty() {
        format!("inbound-vip|{port}|{kind}|{host}")
    } else {
        format!("inbound-vip|{port}|{kind}/{subset}|{host}")
    }
}

/// The waypoint (namespace, name) a service's traffic goes through, by its own
/// `istio.io/use-waypoint` label or else its namespace's, as Istio's
/// `fetchWaypointForService`: `none` opts out, and a waypoint's own Service uses none.
/// Whether that waypoint exists is the caller's question.
pub(crate) fn waypoint_of<'a>(cfg: &'a ConfigSnapshot, svc: &'a Service) -> Option<(&'a str, &'a str)> {
    let svc_ns = svc.metadata.namespace.as_str();
    if svc.metadata.labels.get(GATEWAY_MANAGED).is_some_and(|v| v == MANAGED_BY_MESH_CONTROLLER) {
        return None;
    }
    // The service's own label wins over its namespace's.
    let labels = if svc.metadata.labels.contains_key(USE_WAYPOINT) {
        &svc.metadata.labels
    } else {
        &cfg.namespaces.get("", svc_ns)?.metadata.labels
    };
    let name = labels.get(USE_WAYPOINT)?.as_str();
    if name.is_empty() || name == "none" {
        return None;
    }
    Some((labels.get(USE_WAYPOINT_NAMESPACE).map_or(svc_ns, String::as_str), name))
}

/// Whether `namespace/name` is a waypoint (a Gateway of a waypoint class).
pub(crate) fn is_waypoint(cfg: &ConfigSnapshot, namespace: &str, name: &str) -> bool {
    cfg.kubernetes_gateways
        .get(namespace, name)
        .is_some_and(|gw| WAYPOINT_CLASSES.contains(&gw.spec.gateway_class_name.as_str()))
}

fn served_by<'a>(
    cfg: &'a ConfigSnapshot,
    opts: &Options,
    hosts: &HostIndex<'a>,
    ns: &str,
    name: &str,
) -> Vec<Served<'a>> {
    cfg.services
        .iter()
        .filter(|svc| waypoint_of(cfg, svc) == Some((ns, name)))
        .map(|svc| {
            let hostname = workload::service_hostname(svc, opts);
            let destination_rule = hosts.destination_rule(&hostname);
            let virtual_service = hosts.virtual_service(&hostname);
            Served { service: svc, hostname, destination_rule, virtual_service }
        })
        .collect()
}

/// What one filter chain of `main_internal` is made of (`listener::Chain` borrows it).
struct ChainParts {
    name: String,
    vips: Vec<std::net::IpAddr>,
    port: u32,
    protocol: PortProtocol,
    rbac: Vec<HttpFilter>,
}

/// Every waypoint's resources, each scoped to its namespace.
pub fn resources(cfg: &ConfigSnapshot, opts: &Options) -> Vec<(&'static str, ScopedResource)> {
    let mut out = Vec::new();
    let endpoints = workload::endpoints_by_service(cfg);
    let hosts = HostIndex::new(cfg, opts);
    let ports: route::Ports = cfg
        .services
        .iter()
        .filter_map(|s| Some((workload::service_hostname(s, opts), s.spec.ports.first()?.port as u32)))
        .collect();
    for gw in cfg.kubernetes_gateways.iter() {
        if !WAYPOINT_CLASSES.contains(&gw.spec.gateway_class_name.as_str()) {
            continue;
        }
        let ns = gw.metadata.namespace.as_str();
        let served = served_by(cfg, opts, &hosts, ns, &gw.metadata.name);
        let scope = Scope::Namespace(ns.to_owned());
        let mut push = |type_url: &'static str, name: String, any: weft_xds::Any| {
            out.push((type_url, ScopedResource::new(name, scope.clone(), any)));
        };
        // One filter chain and, for HTTP, one route configuration per service port.
        let mut chains: Vec<ChainParts> = Vec::new();
        for s in &served {
            let vips = s.service.cluster_ips();
            if vips.is_empty() {
                continue; // headless: no VIP a client could dial
            }
            let rbac = authorization::http_filters(cfg, opts, (ns, gw.metadata.name.as_str()), s.service);
            for (port, protocol) in cluster::carried_ports(s) {
                let port = port.port as u32;
                let name = cluster_name_for(protocol.cluster_kind(), port, "", &s.hostname);
                if protocol.is_http() {
                    let rc = route::port_configuration(cfg, &hosts, ns, &name, s, &ports, port);
                    push(type_url::ROUTE, name.clone(), weft_xds::istio::pack(&rc));
                }
                chains.push(ChainParts { name, vips: vips.clone(), port, protocol, rbac: rbac.clone() });
            }
        }
        let chains: Vec<listener::Chain<'_>> = chains
            .iter()
            .map(|c| listener::Chain {
                name: &c.name,
                vips: &c.vips,
                port: c.port,
                http: c.protocol.is_http(),
                http2: c.protocol == PortProtocol::Http2,
                rbac: &c.rbac,
            })
            .collect();
        // Envoy refuses a listener without filter chains ("no filter chains specified"),
        // so a waypoint no service uses yet gets no main_internal: HBONE to it finds
        // nothing to serve and is closed.
        let main_internal = (!chains.is_empty()).then(|| listener::main_internal(&chains));
        for l in [Some(listener::connect_terminate()), main_internal, Some(listener::connect_originate())]
            .into_iter()
            .flatten()
        {
            push(type_url::LISTENER, l.name.clone(), weft_xds::istio::pack(&l));
        }
        for c in [cluster::main_internal(), cluster::connect_originate()]
            .into_iter()
            .chain(cluster::clusters(&served))
        {
            let name = c.name.clone();
            push(type_url::CLUSTER, name, weft_xds::istio::pack(&c));
        }
        for cla in cluster::load_assignments(cfg, opts, &served, &endpoints) {
            let name = cla.cluster_name.clone();
            push(type_url::ENDPOINT, name, cluster::pack_load_assignment(&cla));
        }
    }
    out.extend(gateway::resources(cfg, opts, &hosts, &ports, &endpoints));
    out
}

/// The ClusterLoadAssignments of one service (each port, each subset), named and encoded
/// as [`resources`] makes them, from its pods alone: what an endpoint change rebuilds.
pub(crate) fn service_load_assignments(
    cfg: &ConfigSnapshot,
    opts: &Options,
    hosts: &HostIndex<'_>,
    svc: &Service,
) -> Vec<(String, weft_xds::Any)> {
    let hostname = workload::service_hostname(svc, opts);
    // In `cfg.pods` order, as `endpoints_by_service` lists them.
    let pods: Vec<&crate::config::kinds::kubernetes::Pod> = cfg
        .pods
        .in_namespace(&svc.metadata.namespace)
        .filter(|pod| !pod.ips().is_empty() && workload::selects(svc, pod))
        .map(AsRef::as_ref)
        .collect();
    let endpoints = HashMap::from([((svc.metadata.namespace.clone(), svc.metadata.name.clone()), pods)]);
    let destination_rule = hosts.destination_rule(&hostname);
    let served = [Served { service: svc, hostname, destination_rule, virtual_service: None }];
    cluster::load_assignments(cfg, opts, &served, &endpoints)
        .into_iter()
        .map(|cla| (cla.cluster_name.clone(), cluster::pack_load_assignment(&cla)))
        .collect()
}
