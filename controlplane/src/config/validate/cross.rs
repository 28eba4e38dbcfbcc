//! Checks across objects, after `istioctl analyze`: VirtualServices that bind the same
//! host for the mesh (IST0109), routes to subsets no DestinationRule defines (IST0101),
//! HTTPRoute backends in another namespace that no ReferenceGrant there permits (what
//! Istio reports in the route's status as `RefNotPermitted`), and HTTPRoutes a Gateway's
//! listeners do not admit (`NotAllowedByListeners`). All are warnings: every object
//! involved is still served.

use super::names::resolve_short_host;
use crate::config::diagnostic::{Diagnostic, origin_sort_key};
use crate::config::kinds::destination_rule::DestinationRule;
use crate::config::kinds::gateway_api::{HttpRoute, KubernetesGateway, ReferenceGrant};
use crate::config::kinds::kubernetes::Namespace;
use crate::config::kinds::virtual_service::{Destination, VirtualService};
use crate::config::snapshot::Objects;
use crate::source::{ObjectKey, Origin};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// An accepted object with its key and where it came from.
pub struct Entry<'a, T> {
    pub key: &'a ObjectKey,
    pub origin: &'a Origin,
    pub object: &'a T,
}

/// The Gateway API objects the cross-object checks read beside the routes.
pub struct GatewayApi<'a> {
    pub grants: &'a Objects<ReferenceGrant>,
    pub gateways: &'a Objects<KubernetesGateway>,
    pub namespaces: &'a Objects<Namespace>,
}

/// What the cross-object checks found.
#[derive(Debug, Default)]
pub struct CrossCheck {
    pub diagnostics: Vec<Diagnostic>,
    /// Per VirtualService, the mesh hosts it declares but does not own because an older
    /// VirtualService binds them too; translation skips these hosts for it.
    pub shadowed_hosts: BTreeMap<ObjectKey, BTreeSet<String>>,
}

/// Istio's rule for conflicting configuration: the oldest object wins. Files carry no
/// creation time, so there the first by file path and line wins; namespace and name
/// break the remaining ties.
pub fn precedence(a: &Entry<'_, VirtualService>, b: &Entry<'_, VirtualService>) -> Ordering {
    let ts = |e: &Entry<'_, VirtualService>| e.object.metadata.creation_timestamp.clone();
    let by_time = match (ts(a), ts(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => Ordering::Equal,
    };
    by_time
        .then_with(|| origin_sort_key(a.origin).cmp(&origin_sort_key(b.origin)))
        .then_with(|| a.key.cmp(b.key))
}

pub fn check(
    vss: &[Entry<'_, VirtualService>],
    drs: &[Entry<'_, DestinationRule>],
    routes: &[Entry<'_, HttpRoute>],
    gateway_api: &GatewayApi<'_>,
) -> CrossCheck {
    let mut out = CrossCheck::default();
    conflicting_mesh_hosts(vss, &mut out);
    missing_subsets(vss, drs, &mut out);
    ungranted_backends(routes, gateway_api.grants, &mut out);
    unadmitted_parents(routes, gateway_api, &mut out);
    out
}

/// HTTPRoute parentRefs to an existing Gateway none of whose HTTP listeners (the one the
/// sectionName or port picks, if given) admits routes of the route's namespace (Gateway
/// API's `NotAllowedByListeners`): the route serves nothing there.
fn unadmitted_parents(routes: &[Entry<'_, HttpRoute>], api: &GatewayApi<'_>, out: &mut CrossCheck) {
    for e in routes {
        let route_ns = e.object.metadata.namespace.as_str();
        let labels = api.namespaces.get("", route_ns).map(|n| &n.metadata.labels);
        for (i, p) in e.object.spec.parent_refs.iter().enumerate() {
            let gw_ns = p.namespace.as_deref().unwrap_or(route_ns);
            if !p.names_gateway(route_ns, gw_ns, &p.name) {
                continue; // a Service (GAMMA) or another kind of parent
            }
            let Some(gw) = api.gateways.get(gw_ns, &p.name) else { continue };
            let mut http =
                gw.spec.listeners.iter().filter(|l| l.protocol.eq_ignore_ascii_case("HTTP")).peekable();
            if http.peek().is_none() {
                continue;
            }
            let mut picked = http.filter(|l| p.picks(l)).peekable();
            let why = if picked.peek().is_none() {
                "no HTTP listener of it has the sectionName or port this parentRef names".to_owned()
            } else if picked.any(|l| l.admits_namespace(gw_ns, route_ns, labels)) {
                continue;
            } else {
                format!(
                    "its listeners admit no HTTPRoutes from namespace {route_ns} (allowedRoutes.namespaces.from \
                     defaults to Same; set All or a selector)"
                )
            };
            out.diagnostics.push(Diagnostic::warning(
                e.key,
                e.origin,
                format!("spec.parentRefs[{i}]"),
                format!("not attached to Gateway {gw_ns}/{} (NotAllowedByListeners): {why}", p.name),
            ));
        }
    }
}

/// HTTPRoute backendRefs and mirrors to a Service in another namespace that no
/// ReferenceGrant there opens to HTTPRoutes of the route's namespace: translation makes
/// them invalid backends (their share answers 500, the mirror goes nowhere), as Istio does.
fn ungranted_backends(
    routes: &[Entry<'_, HttpRoute>],
    grants: &Objects<ReferenceGrant>,
    out: &mut CrossCheck,
) {
    for e in routes {
        let route_ns = e.object.metadata.namespace.as_str();
        let mut check = |namespace: Option<&str>, name: &str, service: bool, field: String| {
            let Some(ns) = namespace.filter(|_| service) else { return };
            if !grants.lets_route_refer_to_service(route_ns, ns, name) {
                out.diagnostics.push(Diagnostic::warning(
                    e.key,
                    e.origin,
                    field,
                    format!(
                        "backendRef to Service {ns}/{name} is not permitted: no ReferenceGrant in namespace {ns} \
                         allows HTTPRoutes from namespace {route_ns} to reference it (RefNotPermitted); its share \
                         of requests answers 500 until one does"
                    ),
                ));
            }
        };
        for (i, rule) in e.object.spec.rules.iter().enumerate() {
            for (j, b) in rule.backend_refs.iter().enumerate() {
                check(
                    b.namespace.as_deref(),
                    &b.name,
                    b.is_service(),
                    format!("spec.rules[{i}].backendRefs[{j}]"),
                );
            }
            for (j, f) in rule.filters.iter().enumerate() {
                if let Some(m) = &f.request_mirror {
                    let b = &m.backend_ref;
                    let field = format!("spec.rules[{i}].filters[{j}].requestMirror.backendRef");
                    check(b.namespace.as_deref(), &b.name, b.is_service(), field);
                }
            }
        }
    }
}

fn short(key: &ObjectKey) -> String {
    format!("{}/{}", key.namespace.as_deref().unwrap_or(""), key.name)
}

fn conflicting_mesh_hosts(vss: &[Entry<'_, VirtualService>], out: &mut CrossCheck) {
    // (export scope, FQDN) → [(index into vss, index of the host in spec.hosts)]
    let mut by_host: BTreeMap<(String, String), Vec<(usize, usize)>> = BTreeMap::new();
    for (i, e) in vss.iter().enumerate() {
        let spec = &e.object.spec;
        if !spec.applies_to_mesh() {
            continue;
        }
        let ns = e.object.metadata.namespace.as_str();
        let scopes: BTreeSet<String> = if spec.export_to.is_empty() || spec.export_to.iter().any(|x| x == "*")
        {
            ["*".to_string()].into()
        } else {
            spec.export_to.iter().map(|x| if x == "." { ns.to_string() } else { x.clone() }).collect()
        };
        for scope in &scopes {
            for (h, host) in spec.hosts.iter().enumerate() {
                by_host.entry((scope.clone(), resolve_short_host(host, ns))).or_default().push((i, h));
            }
        }
    }
    for ((_, fqdn), mut users) in by_host {
        users.dedup_by_key(|(i, _)| *i);
        if users.len() < 2 {
            continue;
        }
        users.sort_by(|a, b| precedence(&vss[a.0], &vss[b.0]));
        let names: Vec<String> = users.iter().map(|(i, _)| short(vss[*i].key)).collect();
        let winner = &vss[users[0].0];
        let why = if winner.object.metadata.creation_timestamp.is_some() {
            "the oldest"
        } else {
            "the first by file and line"
        };
        for (pos, (i, h)) in users.iter().enumerate() {
            let e = &vss[*i];
            let verdict = if pos == 0 {
                format!("weftd uses this one ({why}) and ignores the others for this host")
            } else {
                out.shadowed_hosts.entry(e.key.clone()).or_default().insert(e.object.spec.hosts[*h].clone());
                format!(
                    "weftd uses {} ({why}, at {}) and ignores this one for this host",
                    short(winner.key),
                    winner.origin
                )
            };
            out.diagnostics.push(
                Diagnostic::warning(
                    e.key,
                    e.origin,
                    format!("spec.hosts[{h}]"),
                    format!(
                        "the VirtualServices {} associated with mesh gateway define the same host {fqdn}; {verdict}. Merge the conflicting VirtualServices into a single resource",
                        names.join(",")
                    ),
                )
                .with_code("IST0109"),
            );
        }
    }
}

fn missing_subsets(
    vss: &[Entry<'_, VirtualService>],
    drs: &[Entry<'_, DestinationRule>],
    out: &mut CrossCheck,
) {
    let mut defined: BTreeSet<(String, &str)> = BTreeSet::new();
    for e in drs {
        let host = resolve_short_host(&e.object.spec.host, &e.object.metadata.namespace);
        for s in &e.object.spec.subsets {
            defined.insert((host.clone(), s.name.as_str()));
        }
    }
    for e in vss {
        let ns = e.object.metadata.namespace.as_str();
        let mut check = |d: &Option<Destination>, field: String, what: &str| {
            let Some(d) = d else { return };
            let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) else { return };
            let host = resolve_short_host(&d.host, ns);
            if !defined.contains(&(host.clone(), subset)) {
                out.diagnostics.push(
                    Diagnostic::warning(
                        e.key,
                        e.origin,
                        field,
                        format!(
                            "Referenced {what} in destinationrule not found: \"{}+{subset}\"; no DestinationRule for {host} defines subset {subset:?}, so requests {} get HTTP 503 until one does",
                            d.host,
                            if what == "mirror+subset" { "mirrored there" } else { "routed there" }
                        ),
                    )
                    .with_code("IST0101"),
                );
            }
        };
        let spec = &e.object.spec;
        for (i, http) in spec.http.iter().enumerate() {
            for (j, rd) in http.route.iter().enumerate() {
                check(
                    &rd.destination,
                    format!("spec.http[{i}].route[{j}].destination.subset"),
                    "host+subset",
                );
            }
            check(&http.mirror, format!("spec.http[{i}].mirror.subset"), "mirror+subset");
            for (j, m) in http.mirrors.iter().enumerate() {
                check(
                    &m.destination,
                    format!("spec.http[{i}].mirrors[{j}].destination.subset"),
                    "mirror+subset",
                );
            }
        }
        for (i, tcp) in spec.tcp.iter().enumerate() {
            for (j, rd) in tcp.route.iter().enumerate() {
                check(&rd.destination, format!("spec.tcp[{i}].route[{j}].destination.subset"), "host+subset");
            }
        }
        for (i, tls) in spec.tls.iter().enumerate() {
            for (j, rd) in tls.route.iter().enumerate() {
                check(&rd.destination, format!("spec.tls[{i}].route[{j}].destination.subset"), "host+subset");
            }
        }
    }
}
