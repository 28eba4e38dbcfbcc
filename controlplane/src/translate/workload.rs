//! Istio's workload API for agents: one `istio.workload.Address` per pod (a Workload) and
//! per service with a cluster IP (a Service) — the resources ztunnel takes from istiod, with
//! the same names. The policies a Workload lists come from [`super::policy`].

use super::{Options, policy};
use crate::config::{
    kinds::{
        IntOrString,
        kubernetes::{Pod, Service},
    },
    store::ConfigSnapshot,
};
use std::{collections::HashMap, net::IpAddr};
use weft_xds::{
    istio::workload::{
        Address, GatewayAddress, NamespacedHostname, NetworkAddress, Port, PortList, TunnelProtocol,
        Workload, WorkloadStatus, address, gateway_address,
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
        authorization_policies: policy::workload_policies(cfg, opts, pod),
        status: if running { WorkloadStatus::Healthy } else { WorkloadStatus::Unhealthy } as i32,
        cluster_id: opts.cluster_id.clone(),
        // The agent binds the pod to its network namespace by this UID, never by its IP.
        // The labels, for waypoints matching VirtualService `sourceLabels` (by client address).
        extensions: pod
            .metadata
            .uid
            .as_deref()
            .map(weft_xds::istio::pod_uid_extension)
            .into_iter()
            .chain(
                (!pod.metadata.labels.is_empty())
                    .then(|| weft_xds::istio::pod_labels_extension(&pod.metadata.labels)),
            )
            .collect(),
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
                .map(|ip| NetworkAddress { network: String::new(), address: ip_bytes(*ip), length: None })
                .collect(),
            ports: svc
                .spec
                .ports
                .iter()
                .map(|p| Port { service_port: p.port as u32, target_port: target_port(p, None) })
                .collect(),
            waypoint: waypoint(cfg, svc, opts),
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

/// The waypoint a service's traffic must go through (its `istio.io/use-waypoint`, when
/// that names an existing waypoint): the waypoint's Service by hostname, on HBONE's port,
/// as istiod tells ztunnel. The agent resolves it to a healthy pod of that Service.
fn waypoint(cfg: &ConfigSnapshot, svc: &Service, opts: &Options) -> Option<GatewayAddress> {
    let (namespace, name) = super::envoy::waypoint_of(cfg, svc)?;
    if !super::envoy::is_waypoint(cfg, namespace, name) {
        return None;
    }
    Some(GatewayAddress {
        destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: namespace.to_owned(),
            hostname: format!("{name}.{namespace}.svc.{}", opts.domain_suffix),
        })),
        hbone_mtls_port: super::envoy::HBONE_PORT,
    })
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
