//! Ingress and egress gateways: an Istio `Gateway` (networking.istio.io) with the
//! VirtualServices bound to it, or a Gateway API `Gateway` of any class but the waypoint
//! one with the HTTPRoutes attached to it. Each becomes, per HTTP port, a listener
//! `gateway_<port>` and a route configuration `http.<port>` (Istio's names), plus the
//! clusters and endpoints of every service they route to.
//!
//! Gateway proxies are chosen by their pod labels (node metadata `LABELS`), as Istio does:
//! the Istio Gateway's `selector`, or `gateway.networking.k8s.io/gateway-name: <name>`
//! for a Gateway API Gateway.
//!
//! A server's (listener's) port is the port of the gateway's Service, as in istiod
//! (`resolvePorts`, pilot/pkg/model/gateway.go): the listener binds the `targetPort` that
//! Service port reaches on the gateway's pods — the gateway chart's Service maps 80 and
//! 443 to 8080 and 8443 — and the number as written when no Service selecting those pods
//! has that port (istiod's fallback for selector-chosen gateways, kept here for Gateway API
//! ones too, which weftd does not deploy).

use super::{HostIndex, Served, WAYPOINT_CLASSES, httproute, listener, route};
use crate::{
    config::{
        kinds::{
            gateway_api::{HttpRoute, Listener},
            virtual_service::VirtualService,
        },
        store::ConfigSnapshot,
    },
    translate::{Options, workload},
};
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use std::collections::{BTreeMap, BTreeSet};
use weft_xds::{istio::pack, server::Scope, type_url};

/// The label Istio puts on the pods of a Gateway API Gateway's deployment.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

type Resources = Vec<(&'static str, weft_xds::server::ScopedResource)>;

/// Virtual hosts being gathered for one port: host → routes, first writer wins (two
/// virtual hosts with one domain would make Envoy refuse the whole route configuration).
#[derive(Default)]
struct Port {
    hosts: BTreeMap<String, Vec<Route>>,
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site per gateway kind; a struct would only rename the arguments"
)]
fn emit(
    out: &mut Resources,
    scope: &Scope,
    ports: BTreeMap<u32, Port>,
    backends: &BTreeSet<String>,
    hosts: &HostIndex<'_>,
    cfg: &ConfigSnapshot,
    opts: &Options,
    endpoints: &std::collections::HashMap<(String, String), Vec<&crate::config::kinds::kubernetes::Pod>>,
) {
    let push = |out: &mut Resources, type_url: &'static str, name: String, any: weft_xds::Any| {
        out.push((type_url, weft_xds::server::ScopedResource::new(name, scope.clone(), any)));
    };
    for (port, p) in ports {
        let route_name = format!("http.{port}");
        push(
            out,
            type_url::LISTENER,
            format!("gateway_{port}"),
            pack(&listener::http(&format!("gateway_{port}"), port, &route_name)),
        );
        let virtual_hosts = p
            .hosts
            .into_iter()
            .map(|(host, routes)| VirtualHost {
                name: format!("{host}:{port}"),
                domains: vec![host],
                routes,
                ..Default::default()
            })
            .collect();
        push(
            out,
            type_url::ROUTE,
            route_name.clone(),
            pack(&RouteConfiguration { name: route_name, virtual_hosts, ..Default::default() }),
        );
    }
    // The services routed to, with their DestinationRules, become clusters as for a waypoint,
    // reaching mesh pods over HBONE through `connect_originate` as Istio's gateways do.
    if !backends.is_empty() {
        let l = listener::connect_originate();
        push(out, type_url::LISTENER, l.name.clone(), pack(&l));
        let c = super::cluster::connect_originate();
        push(out, type_url::CLUSTER, c.name.clone(), pack(&c));
    }
    let served: Vec<Served<'_>> = cfg
        .services
        .iter()
        .filter_map(|svc| {
            let hostname = workload::service_hostname(svc, opts);
            backends.contains(&hostname).then(|| {
                let destination_rule = hosts.destination_rule(&hostname);
                Served { service: svc, hostname, destination_rule, virtual_service: None }
            })
        })
        .collect();
    for c in super::cluster::clusters(&served) {
        push(out, type_url::CLUSTER, c.name.clone(), pack(&c));
    }
    for cla in super::cluster::load_assignments(cfg, opts, &served, endpoints) {
        push(out, type_url::ENDPOINT, cla.cluster_name.clone(), super::cluster::pack_load_assignment(&cla));
    }
}

/// The port a gateway's pods (those `selector` picks) listen on for server port
/// `number`: the target port of the first Service of those pods with that port, else
/// `number` itself.
fn resolve_port(cfg: &ConfigSnapshot, selector: &BTreeMap<String, String>, number: u32) -> u32 {
    let pods = cfg.pods.iter().filter(|p| {
        !selector.is_empty() && selector.iter().all(|(k, v)| p.metadata.labels.get(k) == Some(v))
    });
    for pod in pods {
        for svc in cfg.services.iter().filter(|svc| workload::selects(svc, pod)) {
            if let Some(port) = svc.spec.ports.iter().find(|p| p.port as u32 == number) {
                let target = workload::target_port_for(port, pod);
                if target != 0 {
                    return target;
                }
            }
        }
    }
    number
}

/// Whether HTTPRoute `r` attaches to listener `l` of Gateway `gw_ns/gw_name`, as Gateway
/// API says: a parentRef names the Gateway (and this listener, if it gives a sectionName
/// or a port), and the listener's `allowedRoutes` admits the route's namespace — its own
/// only, unless it says otherwise.
fn attaches(cfg: &ConfigSnapshot, r: &HttpRoute, gw_ns: &str, gw_name: &str, l: &Listener) -> bool {
    let route_ns = r.metadata.namespace.as_str();
    r.spec.parent_refs.iter().any(|p| p.names_gateway(route_ns, gw_ns, gw_name) && p.picks(l))
        && l.admits_namespace(gw_ns, route_ns, cfg.namespaces.get("", route_ns).map(|n| &n.metadata.labels))
}

/// Whether a VirtualService names this gateway (`name` in its own namespace, or `ns/name`).
fn binds(vs: &VirtualService, gw_ns: &str, gw_name: &str) -> bool {
    vs.spec.gateways.iter().any(|g| match g.split_once('/') {
        Some((ns, name)) => ns == gw_ns && name == gw_name,
        None => g == gw_name && vs.metadata.namespace == gw_ns,
    })
}

/// Whether a server host (`*`, `host`, `ns/host`, `*.suffix`) admits a VirtualService host.
fn admits(server_host: &str, host: &str) -> bool {
    let pattern = server_host.split_once('/').map_or(server_host, |(_, h)| h);
    pattern == "*"
        || pattern == host
        || pattern.strip_prefix('*').is_some_and(|suffix| host.ends_with(suffix))
}

pub fn resources(
    cfg: &ConfigSnapshot,
    opts: &Options,
    hosts: &HostIndex<'_>,
    ports_of: &route::Ports,
    endpoints: &std::collections::HashMap<(String, String), Vec<&crate::config::kinds::kubernetes::Pod>>,
) -> Resources {
    let mut out = Vec::new();
    let suffix = &opts.domain_suffix;
    for gw in cfg.gateways.iter() {
        if gw.spec.selector.is_empty() {
            continue;
        }
        let (ns, name) = (gw.metadata.namespace.as_str(), gw.metadata.name.as_str());
        let mut ports: BTreeMap<u32, Port> = BTreeMap::new();
        let mut backends = BTreeSet::new();
        for server in &gw.spec.servers {
            let Some(port) = &server.port else { continue };
            if !matches!(port.protocol.to_ascii_uppercase().as_str(), "HTTP" | "HTTP2" | "GRPC") {
                continue; // TLS termination and TCP come with the gateway work
            }
            let entry = ports.entry(resolve_port(cfg, &gw.spec.selector, port.number)).or_default();
            for vs in cfg.virtual_services.iter().filter(|vs| binds(vs, ns, name)) {
                for host in vs.spec.hosts.iter().filter(|h| server.hosts.iter().any(|sh| admits(sh, h))) {
                    if entry.hosts.contains_key(host) {
                        continue;
                    }
                    let routes =
                        vs.spec.http.iter().flat_map(|r| route::routes_of(vs, r, ports_of, suffix)).collect();
                    entry.hosts.insert(host.clone(), routes);
                    backends.extend(
                        vs.spec
                            .http
                            .iter()
                            .flat_map(|r| r.route.iter())
                            .filter_map(|rd| rd.destination.as_ref())
                            .map(|d| route::resolve_host(&d.host, &vs.metadata.namespace, suffix)),
                    );
                }
            }
        }
        let scope = Scope::Labels(gw.spec.selector.clone());
        emit(&mut out, &scope, ports, &backends, hosts, cfg, opts, endpoints);
    }
    for gw in cfg.kubernetes_gateways.iter() {
        if WAYPOINT_CLASSES.contains(&gw.spec.gateway_class_name.as_str()) {
            continue;
        }
        let (ns, name) = (gw.metadata.namespace.as_str(), gw.metadata.name.as_str());
        let mut ports: BTreeMap<u32, Port> = BTreeMap::new();
        let mut backends = BTreeSet::new();
        let selector = BTreeMap::from([(GATEWAY_NAME_LABEL.to_owned(), name.to_owned())]);
        for l in gw.spec.listeners.iter().filter(|l| l.protocol.eq_ignore_ascii_case("HTTP")) {
            let attached: Vec<&HttpRoute> = cfg
                .http_routes
                .iter()
                .map(|r| r.as_ref())
                .filter(|r| attaches(cfg, r, ns, name, l))
                .collect();
            let entry = ports.entry(resolve_port(cfg, &selector, l.port)).or_default();
            // Every route of a host, merged into its one virtual host (two HTTPRoutes
            // without hostnames both serve the listener's).
            let mut by_host: BTreeMap<String, Vec<&HttpRoute>> = BTreeMap::new();
            for r in &attached {
                if r.spec.hostnames.is_empty() {
                    by_host.entry(l.hostname.clone().unwrap_or_else(|| "*".into())).or_default().push(r);
                }
                for host in &r.spec.hostnames {
                    by_host.entry(host.clone()).or_default().push(r);
                }
            }
            for (host, routes) in by_host {
                // A host an earlier listener on this port serves keeps its routes.
                entry.hosts.entry(host).or_insert_with(|| {
                    httproute::gateway_routes(&routes, ns, &cfg.reference_grants, 80, ports_of, suffix)
                });
            }
            for r in &attached {
                // The Services the routes may reach (ungranted ones answer 500: no cluster).
                let route_ns = r.metadata.namespace.as_str();
                backends.extend(
                    r.spec
                        .rules
                        .iter()
                        .flat_map(|rule| rule.backend_refs.iter())
                        .filter(|b| b.is_service())
                        .map(|b| (b.namespace.as_deref().unwrap_or(route_ns), b.name.as_str()))
                        .filter(|(ns, name)| {
                            cfg.reference_grants.lets_route_refer_to_service(route_ns, ns, name)
                        })
                        .map(|(ns, name)| format!("{name}.{ns}.svc.{suffix}")),
                );
            }
        }
        let scope = Scope::Labels(selector);
        emit(&mut out, &scope, ports, &backends, hosts, cfg, opts, endpoints);
    }
    out
}
