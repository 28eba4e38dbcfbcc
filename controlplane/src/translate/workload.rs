//! Istio's workload API for agents: one `istio.workload.Address` per pod (a Workload) and
//! per service with a cluster IP (a Service), and one `istio.security.Authorization` per
//! AuthorizationPolicy — the resources ztunnel takes from istiod, with the same names.

use super::Options;
use crate::config::{
    kinds::{
        IntOrString,
        kubernetes::{Pod, Service},
        security::{Action, AuthorizationPolicy},
    },
    store::ConfigSnapshot,
};
use std::{collections::HashMap, net::IpAddr};
use weft_xds::{
    istio::{
        security::{self, Authorization},
        workload::{
            Address, NetworkAddress, Port, PortList, TunnelProtocol, Workload, WorkloadStatus, address,
        },
    },
    server::{Scope, ScopedResource},
};

const AMBIENT_LABEL: &str = "istio.io/dataplane-mode";

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// `name.namespace.svc.<suffix>`, the hostname Istio gives a Kubernetes service.
pub fn service_hostname(svc: &Service, opts: &Options) -> String {
    format!("{}.{}.svc.{}", svc.metadata.name, svc.metadata.namespace, opts.domain_suffix)
}

/// Whether a service's selector picks the pod (same namespace, non-empty selector).
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    svc.metadata.namespace == pod.metadata.namespace
        && !svc.spec.selector.is_empty()
        && svc.spec.selector.iter().all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
}

/// A pod is in the mesh when its namespace says `istio.io/dataplane-mode=ambient` and
/// the pod does not opt out with `=none`.
pub fn is_enrolled(cfg: &ConfigSnapshot, pod: &Pod) -> bool {
    let ns_ambient = cfg
        .namespaces
        .get("", &pod.metadata.namespace)
        .and_then(|ns| ns.metadata.labels.get(AMBIENT_LABEL))
        .is_some_and(|v| v == "ambient");
    ns_ambient && pod.metadata.labels.get(AMBIENT_LABEL).is_none_or(|v| v != "none")
}

/// The port a service port reaches on one pod: a number, or a container port's name.
fn target_port(port: &crate::config::kinds::kubernetes::ServicePort, pod: Option<&Pod>) -> u32 {
    match &port.target_port {
        None => port.port as u32,
        Some(IntOrString::Int(n)) => *n as u32,
        Some(IntOrString::String(s)) => match s.parse::<u32>() {
            Ok(n) => n,
            Err(_) => pod
                .into_iter()
                .flat_map(|p| p.spec.containers.iter().flat_map(|c| c.ports.iter()))
                .find(|cp| cp.name.as_deref() == Some(s))
                .map_or(0, |cp| cp.container_port as u32),
        },
    }
}

/// The port a service port reaches on `pod`.
pub fn target_port_for(port: &crate::config::kinds::kubernetes::ServicePort, pod: &Pod) -> u32 {
    target_port(port, Some(pod))
}

fn first_label<'a>(pod: &'a Pod, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| pod.metadata.labels.get(k)).map(String::as_str)
}

fn workload(
    cfg: &ConfigSnapshot,
    pod: &Pod,
    ips: &[IpAddr],
    services: &[(&Service, String)],
    selecting: &[usize],
    opts: &Options,
) -> Workload {
    let ns = &pod.metadata.namespace;
    let services = selecting
        .iter()
        .map(|&i| &services[i])
        .map(|(svc, hostname)| {
            let ports = svc
                .spec
                .ports
                .iter()
                .map(|p| Port { service_port: p.port as u32, target_port: target_port(p, Some(pod)) })
                .collect();
            (format!("{}/{hostname}", svc.metadata.namespace), PortList { ports })
        })
        .collect();
    let running = pod.status.phase.as_deref().is_none_or(|p| p == "Running");
    Workload {
        uid: workload_uid(pod, opts),
        name: pod.metadata.name.clone(),
        namespace: ns.clone(),
        addresses: ips.iter().map(|ip| ip_bytes(*ip)).collect(),
        tunnel_protocol: if is_enrolled(cfg, pod) { TunnelProtocol::Hbone } else { TunnelProtocol::None }
            as i32,
        trust_domain: opts.trust_domain.clone(),
        service_account: pod.service_account().to_owned(),
        node: pod.spec.node_name.clone().unwrap_or_default(),
        canonical_name: first_label(
            pod,
            &["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"],
        )
        .unwrap_or(&pod.metadata.name)
        .to_owned(),
        canonical_revision: first_label(
            pod,
            &["service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"],
        )
        .unwrap_or("latest")
        .to_owned(),
        workload_name: pod.metadata.name.clone(),
        services,
        status: if running { WorkloadStatus::Healthy } else { WorkloadStatus::Unhealthy } as i32,
        cluster_id: opts.cluster_id.clone(),
        // The agent binds the pod to its network namespace by this UID, never by its IP.
        extensions: pod.metadata.uid.as_deref().map(weft_xds::istio::pod_uid_extension).into_iter().collect(),
        ..Default::default()
    }
}

/// Every Address resource: services first, then workloads. Scoped to every agent: any
/// agent may need any endpoint to resolve a VIP, and any peer's identity for metrics.
pub fn addresses(cfg: &ConfigSnapshot, opts: &Options) -> Vec<ScopedResource> {
    let services: Vec<(&Service, String)> =
        cfg.services.iter().map(|s| (s.as_ref(), service_hostname(s, opts))).collect();
    let mut out = Vec::with_capacity(cfg.services.len() + cfg.pods.len());
    for (svc, hostname) in &services {
        let vips = svc.cluster_ips();
        if vips.is_empty() {
            continue; // headless: nothing to capture by VIP
        }
        let message = weft_xds::istio::workload::Service {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            hostname: hostname.clone(),
            addresses: vips
                .iter()
                .map(|ip| NetworkAddress { network: String::new(), address: ip_bytes(*ip) })
                .collect(),
            ports: svc
                .spec
                .ports
                .iter()
                .map(|p| Port { service_port: p.port as u32, target_port: target_port(p, None) })
                .collect(),
            ..Default::default()
        };
        let name = format!("{}/{hostname}", svc.metadata.namespace);
        out.push(resource(name, Address { r#type: Some(address::Type::Service(message)) }));
    }
    let membership = Membership::new(cfg);
    for (pod, selecting) in cfg.pods.iter().zip(&membership.services_of_pod) {
        let ips = pod.ips();
        if ips.is_empty() || pod.spec.host_network {
            continue;
        }
        let w = workload(cfg, pod, &ips, &services, selecting, opts);
        out.push(resource(w.uid.clone(), Address { r#type: Some(address::Type::Workload(w)) }));
    }
    out
}

/// A pod's workload uid, as istiod names it: `<cluster>//Pod/<namespace>/<name>`.
pub fn workload_uid(pod: &Pod, opts: &Options) -> String {
    format!("{}//Pod/{}/{}", opts.cluster_id, pod.metadata.namespace, pod.metadata.name)
}

/// One pod's Address, as [`addresses`] makes it; `None` for pods that get none (no IP
/// yet, host network). Looks only at the services of the pod's namespace.
pub fn pod_address(cfg: &ConfigSnapshot, pod: &Pod, opts: &Options) -> Option<ScopedResource> {
    let ips = pod.ips();
    if ips.is_empty() || pod.spec.host_network {
        return None;
    }
    // In `cfg.services` order, as the full translation lists them.
    let services: Vec<(&Service, String)> = cfg
        .services
        .in_namespace(&pod.metadata.namespace)
        .filter(|svc| selects(svc, pod))
        .map(|s| (s.as_ref(), service_hostname(s, opts)))
        .collect();
    let selecting: Vec<usize> = (0..services.len()).collect();
    let w = workload(cfg, pod, &ips, &services, &selecting, opts);
    Some(resource(w.uid.clone(), Address { r#type: Some(address::Type::Workload(w)) }))
}

fn resource<M: prost::Name>(name: String, message: M) -> ScopedResource {
    ScopedResource::from_message(name, Scope::All, &message)
}

/// L4 authorization policies, as ztunnel enforces them, each sent only to the agents of
/// nodes that run a pod it applies to (mesh-wide ones to all). HTTP-only conditions (paths,
/// methods, request principals) are for waypoints and do not appear here.
pub fn authorizations(cfg: &ConfigSnapshot, opts: &Options) -> Vec<ScopedResource> {
    cfg.authorization_policies.iter().filter_map(|p| authorization(cfg, opts, p)).collect()
}

/// One policy's Authorization; `None` for actions agents do not enforce.
pub fn authorization(
    cfg: &ConfigSnapshot,
    opts: &Options,
    p: &AuthorizationPolicy,
) -> Option<ScopedResource> {
    let action = match p.spec.action {
        Action::Allow => security::Action::Allow,
        Action::Deny => security::Action::Deny,
        // AUDIT and CUSTOM need an L7 proxy or an external provider.
        Action::Audit | Action::Custom => return None,
    };
    let scope = if p.metadata.namespace == opts.root_namespace {
        security::Scope::Global
    } else if p.spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty()) {
        security::Scope::WorkloadSelector
    } else {
        security::Scope::Namespace
    };
    let selector = p.spec.selector.as_ref().map(|s| &s.match_labels).filter(|l| !l.is_empty());
    let scope_for_proxies = if scope == security::Scope::Global {
        Scope::All
    } else {
        // Only the agents of nodes running a pod the policy applies to need it.
        let mut nodes: Vec<String> = cfg
            .pods
            .in_namespace(&p.metadata.namespace)
            .filter(|pod| {
                selector.is_none_or(|sel| sel.iter().all(|(k, v)| pod.metadata.labels.get(k) == Some(v)))
            })
            .filter_map(|pod| pod.spec.node_name.clone())
            .collect();
        nodes.sort();
        nodes.dedup();
        Scope::AnyOf(nodes.into_iter().map(Scope::Node).collect())
    };
    let message = Authorization {
        name: p.metadata.name.clone(),
        namespace: p.metadata.namespace.clone(),
        scope: scope as i32,
        action: action as i32,
        rules: rules(p),
    };
    let name = format!("{}/{}", p.metadata.namespace, p.metadata.name);
    Some(ScopedResource::from_message(name, scope_for_proxies, &message))
}

fn string_matches(values: Option<&Vec<String>>) -> Vec<security::StringMatch> {
    use security::string_match::MatchType;
    values
        .into_iter()
        .flatten()
        .map(|v| {
            let match_type = if v == "*" {
                MatchType::Presence(())
            } else if let Some(rest) = v.strip_suffix('*') {
                MatchType::Prefix(rest.to_owned())
            } else if let Some(rest) = v.strip_prefix('*') {
                MatchType::Suffix(rest.to_owned())
            } else {
                MatchType::Exact(v.clone())
            };
            security::StringMatch { match_type: Some(match_type) }
        })
        .collect()
}

fn addresses_of(blocks: Option<&Vec<String>>) -> Vec<security::Address> {
    blocks
        .into_iter()
        .flatten()
        .filter_map(|b| {
            let (ip, len) = b.split_once('/').unwrap_or((b, ""));
            let ip: IpAddr = ip.parse().ok()?;
            let length = len.parse().unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
            Some(security::Address { address: ip_bytes(ip), length })
        })
        .collect()
}

fn rules(p: &AuthorizationPolicy) -> Vec<security::Rule> {
    let mut out = Vec::new();
    for rule in p.spec.rules.iter().flatten() {
        let mut clauses = Vec::new();
        let from: Vec<security::Match> = rule
            .from
            .iter()
            .flatten()
            .filter_map(|f| f.source.as_ref())
            .map(|s| security::Match {
                namespaces: string_matches(s.namespaces.as_ref()),
                not_namespaces: string_matches(s.not_namespaces.as_ref()),
                principals: string_matches(s.principals.as_ref()),
                not_principals: string_matches(s.not_principals.as_ref()),
                source_ips: addresses_of(s.ip_blocks.as_ref()),
                not_source_ips: addresses_of(s.not_ip_blocks.as_ref()),
                ..Default::default()
            })
            .collect();
        if !from.is_empty() {
            clauses.push(security::Clause { matches: from });
        }
        let to: Vec<security::Match> = rule
            .to
            .iter()
            .flatten()
            .filter_map(|t| t.operation.as_ref())
            .map(|o| security::Match {
                destination_ports: o.ports.iter().flatten().filter_map(|p| p.parse().ok()).collect(),
                not_destination_ports: o.not_ports.iter().flatten().filter_map(|p| p.parse().ok()).collect(),
                ..Default::default()
            })
            .collect();
        if !to.is_empty() {
            clauses.push(security::Clause { matches: to });
        }
        out.push(security::Rule { clauses });
    }
    out
}

/// Which services select which pods, computed once per translation. Each service is
/// indexed under (namespace, its first selector label), so a pod is checked only against
/// the services sharing one of its labels: linear in pods × labels, where checking every
/// pod against every service was quadratic (10⁹ comparisons at 10k services × 100k pods).
pub struct Membership {
    /// Per pod, in `cfg.pods` order: indices into `cfg.services` order.
    pub services_of_pod: Vec<Vec<usize>>,
}

impl Membership {
    pub fn new(cfg: &ConfigSnapshot) -> Membership {
        let services: Vec<&Service> = cfg.services.iter().map(|s| s.as_ref()).collect();
        let mut index: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        for (i, svc) in services.iter().enumerate() {
            if let Some((k, v)) = svc.spec.selector.iter().next() {
                index.entry((svc.metadata.namespace.as_str(), k.as_str(), v.as_str())).or_default().push(i);
            }
        }
        let services_of_pod = cfg
            .pods
            .iter()
            .map(|pod| {
                let ns = pod.metadata.namespace.as_str();
                let mut mine: Vec<usize> = pod
                    .metadata
                    .labels
                    .iter()
                    .filter_map(|(k, v)| index.get(&(ns, k.as_str(), v.as_str())))
                    .flatten()
                    .copied()
                    .filter(|&i| selects(services[i], pod))
                    .collect();
                mine.sort_unstable();
                mine
            })
            .collect();
        Membership { services_of_pod }
    }
}

/// Index: which pods back which service (namespace/name), for the Envoy side.
pub fn endpoints_by_service(cfg: &ConfigSnapshot) -> HashMap<(String, String), Vec<&Pod>> {
    let services: Vec<&Service> = cfg.services.iter().map(|s| s.as_ref()).collect();
    let mut out: HashMap<(String, String), Vec<&Pod>> = services
        .iter()
        .map(|s| ((s.metadata.namespace.clone(), s.metadata.name.clone()), Vec::new()))
        .collect();
    let membership = Membership::new(cfg);
    for (pod, selecting) in cfg.pods.iter().zip(&membership.services_of_pod) {
        if pod.ips().is_empty() {
            continue;
        }
        for &i in selecting {
            let svc = services[i];
            if let Some(pods) = out.get_mut(&(svc.metadata.namespace.clone(), svc.metadata.name.clone())) {
                pods.push(pod.as_ref());
            }
        }
    }
    out
}
