//! Standard Envoy v3 resources for waypoints (and, `gateway.rs`, ingress/egress
//! gateways): what a waypoint (Weft's, or a stock Envoy
//! standing in for it) needs to carry the L7 traffic of the services that use it.
//!
//! A waypoint is a Gateway API `Gateway` of class `istio-waypoint`. A service uses it
//! when the service or its namespace carries `istio.io/use-waypoint: <name>` (and
//! `istio.io/use-waypoint-namespace` if the waypoint lives elsewhere), as in Istio
//! ambient. Resources for a waypoint are scoped to proxies of the waypoint's namespace.
//!
//! - `listener.rs`: one plain-HTTP listener on [`WAYPOINT_HTTP_PORT`] (HBONE termination
//!   arrives with mTLS), routes by Host from RDS;
//! - `route.rs`: one virtual host per service, routes from the VirtualService bound to
//!   it (or, `httproute.rs`, the HTTPRoutes attached to it), or a default route, each rule
//!   as Istio's translation makes it: `route_match.rs` (matches, source conditions),
//!   `retry.rs`, `fault.rs`, `hash.rs` (consistent-hash route policies), `delegate.rs`
//!   (VirtualService delegation merged);
//! - `cluster.rs`: a cluster per service port and DestinationRule subset, named as Istio
//!   names them (`outbound|9080|v1|reviews.bookinfo.svc.cluster.local`), with their
//!   endpoints (EDS); `traffic_policy.rs` applies the DestinationRule (subset merged over
//!   the rule, as Istio merges them);
//! - `authorization.rs`: L7 AuthorizationPolicy as the RBAC HTTP filters of a service's
//!   connection manager.

pub mod authorization;
mod cluster;
mod delegate;
mod fault;
mod gateway;
mod hash;
mod httproute;
mod listener;
mod retry;
mod route;
pub mod route_match;
mod traffic_policy;

use super::{Options, workload};
use crate::config::{
    kinds::{destination_rule::DestinationRule, kubernetes::Service, virtual_service::VirtualService},
    store::ConfigSnapshot,
};
use std::collections::HashMap;
use weft_xds::{
    server::{Scope, ScopedResource},
    type_url,
};

/// Port of the waypoint's plain-HTTP listener.
pub const WAYPOINT_HTTP_PORT: u32 = 15080;
/// Names of the waypoint's listener and route configuration.
pub const WAYPOINT_LISTENER: &str = "waypoint_http";
pub const WAYPOINT_ROUTE: &str = "waypoint_http";

const USE_WAYPOINT: &str = "istio.io/use-waypoint";
const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
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

/// `outbound|PORT|SUBSET|HOST`, Istio's cluster naming.
pub(crate) fn cluster_name(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
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
        .filter(|svc| {
            let svc_ns = &svc.metadata.namespace;
            let namespace_labels = cfg.namespaces.get("", svc_ns).map(|n| &n.metadata.labels);
            // The service's own label wins over its namespace's.
            let labels = if svc.metadata.labels.contains_key(USE_WAYPOINT) {
                Some(&svc.metadata.labels)
            } else {
                namespace_labels
            };
            let Some(labels) = labels else { return false };
            let waypoint_ns = labels.get(USE_WAYPOINT_NAMESPACE).unwrap_or(svc_ns);
            labels.get(USE_WAYPOINT).is_some_and(|w| w == name) && waypoint_ns == ns
        })
        .map(|svc| {
            let hostname = workload::service_hostname(svc, opts);
            let destination_rule = hosts.destination_rule(&hostname);
            let virtual_service = hosts.virtual_service(&hostname);
            Served { service: svc, hostname, destination_rule, virtual_service }
        })
        .collect()
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
        push(
            type_url::LISTENER,
            WAYPOINT_LISTENER.into(),
            weft_xds::istio::pack(&listener::http(WAYPOINT_LISTENER, WAYPOINT_HTTP_PORT, WAYPOINT_ROUTE)),
        );
        push(
            type_url::ROUTE,
            WAYPOINT_ROUTE.into(),
            weft_xds::istio::pack(&route::configuration(cfg, &hosts, ns, WAYPOINT_ROUTE, &served, &ports)),
        );
        for c in cluster::clusters(&served) {
            let name = c.name.clone();
            push(type_url::CLUSTER, name, weft_xds::istio::pack(&c));
        }
        for cla in cluster::load_assignments(&served, &endpoints) {
            let name = cla.cluster_name.clone();
            push(type_url::ENDPOINT, name, weft_xds::istio::pack(&cla));
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
    cluster::load_assignments(&served, &endpoints)
        .into_iter()
        .map(|cla| (cla.cluster_name.clone(), weft_xds::istio::pack(&cla)))
        .collect()
}
