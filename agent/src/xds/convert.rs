//! Istio's workload API (what weftd, or istiod, sends) → the agent's model.
//!
//! The agent's data path reads a [`Mesh`]: the same model `--local-config` gives it. So
//! xDS only changes where the model comes from, not how enrollment or the proxy work.
//! What the workload API says differently is translated here:
//! - enrollment: a workload whose `tunnel_protocol` is HBONE is in the mesh (that is how
//!   istiod marks ambient pods); its namespace is labelled ambient, and a non-HBONE
//!   workload in such a namespace is marked with the pod opt-out label;
//! - service membership: stated per workload (`services`, keyed `namespace/hostname`)
//!   rather than by selector.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};
use weft_model::{
    AMBIENT_LABEL, DATAPLANE_MODE_AMBIENT, DATAPLANE_MODE_NONE, Mesh, Namespace, Pod, Service, ServicePort,
};
use weft_xds::istio::workload::{Address, TunnelProtocol, Workload, address};

/// Why a set of addresses cannot become a model; the agent NACKs with this text.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("workload {uid}: address of {len} bytes is neither IPv4 nor IPv6")]
    BadAddress { uid: String, len: usize },
    #[error("{0}")]
    Invalid(#[from] weft_model::ModelError),
    #[error(transparent)]
    PodUid(#[from] weft_xds::istio::PodUidError),
}

fn ip_from(bytes: &[u8], uid: &str) -> Result<IpAddr, ConvertError> {
    match bytes.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(bytes).expect("length checked"))),
        16 => Ok(IpAddr::from(<[u8; 16]>::try_from(bytes).expect("length checked"))),
        len => Err(ConvertError::BadAddress { uid: uid.to_owned(), len }),
    }
}

/// Builds and validates the model from every Address resource the agent holds.
pub fn mesh_from_addresses<'a>(
    addresses: impl IntoIterator<Item = &'a Address>,
) -> Result<Mesh, ConvertError> {
    let mut workloads: Vec<&Workload> = Vec::new();
    let mut mesh = Mesh::default();
    // hostname → (namespace, name), to turn a workload's `namespace/hostname` keys
    // into the model's `namespace/name`.
    let mut by_hostname: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut services = Vec::new();
    for a in addresses {
        match &a.r#type {
            Some(address::Type::Workload(w)) => workloads.push(w),
            Some(address::Type::Service(s)) => services.push(s),
            None => {}
        }
    }
    for s in &services {
        by_hostname.insert(s.hostname.as_str(), (s.namespace.as_str(), s.name.as_str()));
        // A service without a cluster IP (headless) has no VIP to capture.
        let Some(vip) = s.addresses.first() else { continue };
        mesh.services.push(Service {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            vip: ip_from(&vip.address, &s.hostname)?,
            ports: s
                .ports
                .iter()
                .map(|p| ServicePort { port: p.service_port as u16, target_port: Some(p.target_port as u16) })
                .collect(),
            selector: BTreeMap::new(),
        });
    }

    let mut ambient_namespaces: BTreeMap<&str, bool> = BTreeMap::new();
    for w in &workloads {
        let hbone = w.tunnel_protocol == TunnelProtocol::Hbone as i32;
        *ambient_namespaces.entry(w.namespace.as_str()).or_default() |= hbone;
    }
    for w in workloads {
        let Some(first) = w.addresses.first() else { continue };
        let mut labels = BTreeMap::new();
        if !w.canonical_name.is_empty() {
            labels.insert("app".to_owned(), w.canonical_name.clone());
        }
        if !w.canonical_revision.is_empty() {
            labels.insert("version".to_owned(), w.canonical_revision.clone());
        }
        if w.tunnel_protocol != TunnelProtocol::Hbone as i32 {
            labels.insert(AMBIENT_LABEL.to_owned(), DATAPLANE_MODE_NONE.to_owned());
        }
        let mut ports: Vec<u16> = w
            .services
            .values()
            .flat_map(|pl| pl.ports.iter().map(|p| p.target_port as u16))
            .filter(|&p| p != 0)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let services = w
            .services
            .keys()
            .filter_map(|key| {
                let (_, hostname) = key.split_once('/')?;
                let (ns, name) = by_hostname.get(hostname)?;
                Some(format!("{ns}/{name}"))
            })
            .collect();
        mesh.pods.push(Pod {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            uid: weft_xds::istio::pod_uid(w)?,
            ip: ip_from(first, &w.uid)?,
            node: w.node.clone(),
            service_account: if w.service_account.is_empty() {
                "default".into()
            } else {
                w.service_account.clone()
            },
            workload: (!w.workload_name.is_empty()).then(|| w.workload_name.clone()),
            labels,
            ports,
            services,
        });
    }
    for (ns, ambient) in ambient_namespaces {
        let mut labels = BTreeMap::new();
        if ambient {
            labels.insert(AMBIENT_LABEL.to_owned(), DATAPLANE_MODE_AMBIENT.to_owned());
        }
        mesh.namespaces.push(Namespace { name: ns.to_owned(), labels });
    }
    mesh.validate("xds")?;
    Ok(mesh)
}
