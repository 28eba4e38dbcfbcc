//! Lookups the data path makes per connection, built once per model version.

use crate::mesh::{Mesh, Pod, Service};
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicUsize, Ordering},
};

/// A validated model plus the maps that make per-connection questions O(1).
/// Built once when a new model arrives; shared read-only (behind an `ArcSwap`) after.
#[derive(Debug)]
pub struct MeshIndex {
    pub mesh: Mesh,
    pods_by_ip: HashMap<IpAddr, usize>,
    services_by_vip: HashMap<IpAddr, usize>,
    /// Per service: indices of the pods that back it, in model order.
    endpoints: Vec<Vec<usize>>,
    /// Per service: round-robin cursor. Atomic so lookups need no lock.
    cursors: Vec<AtomicUsize>,
}

/// A service a connection was addressed to, by VIP.
#[derive(Debug, Clone, Copy)]
pub struct ServiceRef<'a> {
    pub service: &'a Service,
}

/// Where a connection goes after service resolution.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub addr: SocketAddr,
    /// The pod behind `addr`, if the model knows it.
    pub pod: Option<&'a Pod>,
    /// The service the client addressed, if it used a VIP.
    pub service: Option<&'a Service>,
}

impl MeshIndex {
    pub fn new(mesh: Mesh) -> MeshIndex {
        let pods_by_ip = mesh.pods.iter().enumerate().map(|(i, p)| (p.ip, i)).collect();
        let services_by_vip = mesh.services.iter().enumerate().map(|(i, s)| (s.vip, i)).collect();
        let endpoints = mesh
            .services
            .iter()
            .map(|s| mesh.pods.iter().enumerate().filter(|(_, p)| s.selects(p)).map(|(i, _)| i).collect())
            .collect();
        let cursors = mesh.services.iter().map(|_| AtomicUsize::new(0)).collect();
        MeshIndex { mesh, pods_by_ip, services_by_vip, endpoints, cursors }
    }

    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods_by_ip.get(&ip).map(|&i| &self.mesh.pods[i])
    }

    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Service> {
        self.services_by_vip.get(&ip).map(|&i| &self.mesh.services[i])
    }

    /// The service a connection to a pod endpoint belongs to: the first service that
    /// selects the pod at `dst` and targets `dst`'s port.
    pub fn service_for(&self, dst: SocketAddr) -> Option<&Service> {
        let &pi = self.pods_by_ip.get(&dst.ip())?;
        self.endpoints.iter().enumerate().find_map(|(si, pods)| {
            let svc = &self.mesh.services[si];
            (pods.contains(&pi) && svc.ports.iter().any(|p| p.target() == dst.port())).then_some(svc)
        })
    }

    /// Resolves an original destination the way kube-proxy would have: a service VIP
    /// and port become one of the service's endpoints (round robin) and its target port;
    /// any other address is used as it is. `None` means a VIP with no endpoint or an
    /// unknown service port: the connection has nowhere to go.
    pub fn resolve(&self, dst: SocketAddr) -> Option<Endpoint<'_>> {
        let Some(&si) = self.services_by_vip.get(&dst.ip()) else {
            return Some(Endpoint { addr: dst, pod: self.pod_by_ip(dst.ip()), service: None });
        };
        let service = &self.mesh.services[si];
        let port = service.ports.iter().find(|p| p.port == dst.port())?;
        let backends = &self.endpoints[si];
        if backends.is_empty() {
            return None;
        }
        let n = self.cursors[si].fetch_add(1, Ordering::Relaxed);
        let pod = &self.mesh.pods[backends[n % backends.len()]];
        Some(Endpoint {
            addr: SocketAddr::new(pod.ip, port.target()),
            pod: Some(pod),
            service: Some(service),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> MeshIndex {
        let doc = r#"
pods:
  - { name: r1, namespace: b, ip: 198.18.1.2, node: n1, labels: { app: reviews } }
  - { name: r2, namespace: b, ip: 198.18.2.2, node: n2, labels: { app: reviews } }
  - { name: other, namespace: c, ip: 198.18.2.3, node: n2, labels: { app: reviews } }
services:
  - { name: reviews, namespace: b, vip: 198.19.0.10, ports: [{ port: 80, targetPort: 9080 }], selector: { app: reviews } }
  - { name: empty, namespace: b, vip: 198.19.0.11, ports: [{ port: 80 }], selector: { app: none } }
"#;
        MeshIndex::new(Mesh::from_yaml(doc, "t").unwrap())
    }

    #[test]
    fn vip_round_robins_over_same_namespace_pods() {
        let idx = index();
        let vip: SocketAddr = "198.19.0.10:80".parse().unwrap();
        let a = idx.resolve(vip).unwrap();
        let b = idx.resolve(vip).unwrap();
        let c = idx.resolve(vip).unwrap();
        assert_eq!(a.addr, "198.18.1.2:9080".parse().unwrap());
        assert_eq!(b.addr, "198.18.2.2:9080".parse().unwrap());
        assert_eq!(c.addr, a.addr);
        assert_eq!(a.service.unwrap().name, "reviews");
    }

    #[test]
    fn a_pod_can_state_membership_without_a_selector() {
        let doc = r#"
pods:
  - { name: w, namespace: b, ip: 198.18.1.2, node: n1, services: [b/reviews] }
services:
  - { name: reviews, namespace: b, vip: 198.19.0.10, ports: [{ port: 80, targetPort: 9080 }] }
"#;
        let idx = MeshIndex::new(Mesh::from_yaml(doc, "t").unwrap());
        let ep = idx.resolve("198.19.0.10:80".parse().unwrap()).unwrap();
        assert_eq!(ep.addr, "198.18.1.2:9080".parse().unwrap());
    }

    #[test]
    fn unknown_port_or_no_endpoints_has_nowhere_to_go() {
        let idx = index();
        assert!(idx.resolve("198.19.0.10:81".parse().unwrap()).is_none());
        assert!(idx.resolve("198.19.0.11:80".parse().unwrap()).is_none());
    }

    #[test]
    fn plain_address_passes_through_with_its_pod() {
        let idx = index();
        let ep = idx.resolve("198.18.2.3:7000".parse().unwrap()).unwrap();
        assert_eq!(ep.addr, "198.18.2.3:7000".parse().unwrap());
        assert_eq!(ep.pod.unwrap().name, "other");
        assert!(ep.service.is_none());
    }
}
