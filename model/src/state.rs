//! The lookups the data path makes per connection, built once per model version.

use crate::workload::{GatewayAddress, LoadBalancingMode, LocalityScope, Resource, Service, Workload};
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

/// Every workload and service the agent knows, with the indexes that make per-connection
/// questions O(1). Built once when a new model arrives and shared read-only (behind an
/// `ArcSwap`); only the round-robin cursors change, atomically, so lookups take no lock.
#[derive(Debug, Default)]
pub struct WorkloadState {
    workloads: Vec<Arc<Workload>>,
    services: Vec<Arc<Service>>,
    workload_by_ip: HashMap<IpAddr, usize>,
    service_by_vip: HashMap<IpAddr, usize>,
    /// Services with a range address (ServiceEntry CIDRs), checked when no host VIP matches.
    service_ranges: Vec<usize>,
    service_by_key: HashMap<String, usize>,
    /// Per service: the workloads that back it, in uid order.
    endpoints: Vec<Vec<usize>>,
    cursors: Vec<AtomicUsize>,
}

/// Where a connection to a service ends up.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub workload: Arc<Workload>,
    /// The workload's address and the port the service port maps to on it.
    pub addr: SocketAddr,
}

impl WorkloadState {
    /// Indexes `resources` (any order). Services are keyed `namespace/hostname`, as their
    /// Address resources are named and as workloads refer to them.
    pub fn new<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> WorkloadState {
        let mut state = WorkloadState::default();
        let mut workloads: Vec<&Arc<Workload>> = Vec::new();
        for r in resources {
            match r {
                Resource::Workload(w) => workloads.push(w),
                Resource::Service(s) => state.services.push(s.clone()),
            }
        }
        workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
        state.services.sort_by(|a, b| (&a.namespace, &a.hostname).cmp(&(&b.namespace, &b.hostname)));
        for (i, s) in state.services.iter().enumerate() {
            state.service_by_key.insert(s.key.clone(), i);
            for vip in &s.vips {
                if vip.is_host() {
                    state.service_by_vip.entry(vip.ip).or_insert(i);
                } else if !state.service_ranges.contains(&i) {
                    state.service_ranges.push(i);
                }
            }
        }
        state.endpoints = vec![Vec::new(); state.services.len()];
        for (wi, w) in workloads.into_iter().enumerate() {
            for ip in &w.ips {
                state.workload_by_ip.entry(*ip).or_insert(wi);
            }
            for m in &w.services {
                if let Some(&si) = state.service_by_key.get(&m.service) {
                    state.endpoints[si].push(wi);
                }
            }
            state.workloads.push(w.clone());
        }
        state.cursors = state.services.iter().map(|_| AtomicUsize::new(0)).collect();
        state
    }

    pub fn workloads(&self) -> &[Arc<Workload>] {
        &self.workloads
    }

    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workload_by_ip.get(&ip).map(|&i| &self.workloads[i])
    }

    /// The service a client in `client_namespace` reaches at `ip`: a host VIP first, then a
    /// range. A service visible only in its own namespace is not found from elsewhere.
    pub fn service_by_addr(&self, ip: IpAddr, client_namespace: &str) -> Option<&Arc<Service>> {
        let visible = |&i: &usize| {
            let s = &self.services[i];
            (!s.namespace_only || s.namespace == client_namespace).then_some(s)
        };
        if let Some(s) = self.service_by_vip.get(&ip).and_then(visible) {
            return Some(s);
        }
        self.service_ranges
            .iter()
            .filter(|&&i| self.services[i].vips.iter().any(|v| v.contains(ip)))
            .find_map(visible)
    }

    /// A service by its resource key, `namespace/hostname`.
    pub fn service_by_key(&self, key: &str) -> Option<&Arc<Service>> {
        self.service_by_key.get(key).map(|&i| &self.services[i])
    }

    /// The services `workload` backs.
    pub fn services_of<'a>(&'a self, workload: &'a Workload) -> impl Iterator<Item = &'a Arc<Service>> + 'a {
        workload.services.iter().filter_map(|m| self.service_by_key(&m.service))
    }

    /// The workloads whose agent is the one on `node`.
    pub fn workloads_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Arc<Workload>> + 'a {
        self.workloads.iter().filter(move |w| w.node == node)
    }

    /// Picks an endpoint of `service` for a connection to `service_port` from `source`, as
    /// kube-proxy would have (round robin) but mesh-aware: healthy endpoints only, the
    /// service's locality preferences, and the workload's own target port. `None` when no
    /// endpoint can take it. No allocation: candidates are counted, then the n-th is taken.
    pub fn pick_endpoint(&self, service: &Service, service_port: u16, source: &Workload) -> Option<Upstream> {
        let &si = self.service_by_key.get(&service.key)?;
        let default_target = service.ports.iter().find(|p| p.service_port == service_port)?.target_port;
        let include_unhealthy = service.load_balancing.as_ref().is_some_and(|lb| lb.include_unhealthy);
        let port_on = |w: &Workload| -> Option<u16> {
            if !w.healthy && !include_unhealthy {
                return None;
            }
            let own = w.services.iter().find(|m| m.service == service.key)?;
            match own.ports.iter().find(|p| p.service_port == service_port).map(|p| p.target_port) {
                Some(p) if p != 0 => Some(p),
                _ if default_target != 0 => Some(default_target),
                _ => None,
            }
        };
        // Locality: how many of the preferred scopes, in order, a workload shares with the
        // source; only the best-ranked endpoints (or, when strict, only full matches) count.
        let (prefs, strict) = match &service.load_balancing {
            Some(lb) => (lb.routing_preference.as_slice(), lb.mode == LoadBalancingMode::Strict),
            None => (&[][..], false),
        };
        let rank = |w: &Workload| prefs.iter().take_while(|&&s| same_scope(s, w, source)).count();
        let wanted = if strict {
            prefs.len()
        } else {
            self.endpoints[si]
                .iter()
                .map(|&wi| &*self.workloads[wi])
                .filter(|w| port_on(w).is_some())
                .map(rank)
                .max()?
        };
        let eligible = || {
            self.endpoints[si]
                .iter()
                .map(|&wi| &self.workloads[wi])
                .filter(move |w| rank(w) == wanted)
                .filter_map(move |w| Some((w, port_on(w)?)))
        };
        let count = eligible().count();
        if count == 0 {
            return None;
        }
        let n = self.cursors[si].fetch_add(1, Ordering::Relaxed) % count;
        let (workload, port) = eligible().nth(n)?;
        let ip = *workload.ips.first()?;
        Some(Upstream { addr: SocketAddr::new(ip, port), workload: workload.clone() })
    }

    /// The waypoint a connection to `service` goes through, if any: the single `waypoint`,
    /// or one of `weighted_waypoints` in proportion to the weights (a weighted round robin
    /// on the service's cursor, so shares are exact over a cycle, with no random source).
    pub fn service_waypoint<'a>(&self, service: &'a Service) -> Option<&'a GatewayAddress> {
        if service.weighted_waypoints.is_empty() {
            return service.waypoint.as_ref();
        }
        let total: u64 = service.weighted_waypoints.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return service.waypoint.as_ref();
        }
        let n = self
            .service_by_key
            .get(&service.key)
            .map_or(0, |&si| self.cursors[si].fetch_add(1, Ordering::Relaxed)) as u64
            % total;
        let mut acc = 0;
        service.weighted_waypoints.iter().find_map(|(g, w)| {
            acc += u64::from(*w);
            (n < acc).then_some(g)
        })
    }

    /// Whether `workload` is (one of the endpoints of) `gateway`: traffic a waypoint sends
    /// on must not be sent to the waypoint again.
    pub fn is_gateway(&self, workload: &Workload, gateway: &GatewayAddress) -> bool {
        match gateway {
            GatewayAddress::Address { ip, .. } => workload.ips.contains(ip),
            GatewayAddress::Hostname { namespace, hostname, .. } => workload
                .services
                .iter()
                .any(|m| m.service.split_once('/') == Some((namespace.as_str(), hostname.as_str()))),
        }
    }

    /// Where a waypoint is: the workload that answers for it and its HBONE address.
    pub fn resolve_gateway(&self, gateway: &GatewayAddress) -> Option<Upstream> {
        match gateway {
            GatewayAddress::Address { ip, hbone_port } => {
                let workload = self.workload_by_ip(*ip)?.clone();
                Some(Upstream { addr: SocketAddr::new(*ip, *hbone_port), workload })
            }
            GatewayAddress::Hostname { namespace, hostname, hbone_port } => {
                // Any healthy endpoint of the waypoint's service, on its HBONE port.
                let &si = self.service_by_key.get(&format!("{namespace}/{hostname}"))?;
                let healthy =
                    || self.endpoints[si].iter().map(|&wi| &self.workloads[wi]).filter(|w| w.healthy);
                let count = healthy().count();
                if count == 0 {
                    return None;
                }
                let n = self.cursors[si].fetch_add(1, Ordering::Relaxed) % count;
                let workload = healthy().nth(n)?.clone();
                let ip = *workload.ips.first()?;
                Some(Upstream { addr: SocketAddr::new(ip, *hbone_port), workload })
            }
        }
    }
}

fn same_scope(scope: LocalityScope, w: &Workload, source: &Workload) -> bool {
    match scope {
        LocalityScope::Region => w.locality.region == source.locality.region,
        LocalityScope::Zone => w.locality.zone == source.locality.zone,
        LocalityScope::Subzone => w.locality.subzone == source.locality.subzone,
        LocalityScope::Node => w.node == source.node,
        LocalityScope::Cluster => w.cluster_id == source.cluster_id,
        LocalityScope::Network => w.network == source.network,
    }
}
