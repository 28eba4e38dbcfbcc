//! The waypoint as an ADS client of weftd (or any control plane serving the contract's
//! Envoy resources): delta ADS, wildcard Listener and Cluster subscriptions, then the
//! RouteConfigurations and ClusterLoadAssignments they name, by name, as Envoy subscribes
//! to RDS and EDS.
//!
//! Each resource is compiled on arrival (`listener.rs`, `cluster.rs`, the route engine),
//! and a gateway listener's socket bound (`gateway.rs`: a port that cannot be bound is a
//! refusal like any other);
//! one that cannot be applied is refused by name — the NACK names the resource, the field
//! and why — and what was held under that name stays in force, as do the others. After
//! every update the held resources are assembled into a new [`Snapshot`] and swapped in.
//! When weftd goes away nothing changes here: the client reconnects and the last snapshot
//! keeps serving.

pub mod cluster;
pub mod listener;

use crate::{
    config::Config,
    gateway::Sockets,
    metrics::Peer,
    route::RouteTable,
    snapshot::{Chain, KnownWorkload, Snapshot},
    state::Shared,
    upstream::{self, Endpoint},
};
use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    route::v3::RouteConfiguration,
};
use serde::Serialize;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};
use tracing::{info, warn};
use weft_hbone::Identity;
use weft_xds::{
    client::{AdsClient, ClientConfig, ClientError, ClientTls, Subscriptions, Update},
    istio::workload::{Address, address},
    type_url,
};

/// A resource the waypoint cannot apply: the NACK's message names it, the field and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} {name}: {}{reason}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct Refusal {
    pub kind: &'static str,
    pub name: String,
    pub field: String,
    pub reason: String,
}

impl Refusal {
    pub fn new(kind: &'static str, name: &str, field: &str, reason: String) -> Refusal {
        Refusal { kind, name: name.to_owned(), field: field.to_owned(), reason }
    }
}

/// What the admin endpoint shows about the configuration.
#[derive(Debug, Default, Clone, Serialize)]
pub struct XdsStatus {
    /// Type URL → name → version of every resource held.
    pub resources: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// Snapshots swapped in so far.
    pub generation: u64,
    /// Per type URL, the last NACK's message, until an update of that type applies
    /// cleanly.
    pub last_nack: BTreeMap<String, String>,
    /// NACKs sent so far.
    pub nacks: u64,
}

/// An assigned endpoint: its address, and its identity if it is in the mesh.
type AssignedEndpoint = (SocketAddr, Option<Identity>);

/// The resources held, compiled, by name, with their versions.
#[derive(Default)]
pub struct Held {
    listeners: BTreeMap<String, (String, listener::Compiled)>,
    clusters: BTreeMap<String, (String, cluster::Compiled)>,
    routes: BTreeMap<String, (String, Arc<RouteTable>)>,
    assignments: BTreeMap<String, (String, Vec<AssignedEndpoint>)>,
    /// istio.workload.Address: the workloads of the mesh (the agents' resource, scoped to
    /// every proxy), for the labels of a request's client by its address.
    addresses: BTreeMap<String, (String, Option<ClientWorkload>)>,
    /// A first LDS update was applied.
    listeners_received: bool,
    /// The sockets of gateway listeners; `None` compiles them without binding (tests of
    /// what is applied and refused).
    sockets: Option<Sockets>,
}

/// What the waypoint keeps of a Workload: its addresses, its labels (`weft.io/pod-labels`)
/// and its names for metrics (Service addresses are kept as None).
struct ClientWorkload {
    ips: Vec<IpAddr>,
    known: Arc<KnownWorkload>,
}

/// A Workload's addresses, `weft.io/pod-labels` and names.
fn client_workload(a: &Address) -> Result<Option<ClientWorkload>, String> {
    let Some(address::Type::Workload(w)) = &a.r#type else { return Ok(None) };
    let labels = weft_xds::istio::pod_labels(w)?;
    let ips = w
        .addresses
        .iter()
        .filter_map(|b| match b.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(b.as_slice()).ok()?)),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(b.as_slice()).ok()?)),
            _ => None,
        })
        .collect();
    let or = |s: &str, default: &str| -> Box<str> { if s.is_empty() { default.into() } else { s.into() } };
    let peer = Peer {
        workload: or(&w.workload_name, &w.name),
        namespace: or(&w.namespace, "unknown"),
        app: or(&w.canonical_name, "unknown"),
        version: or(&w.canonical_revision, "unknown"),
        cluster: or(&w.cluster_id, "Kubernetes"),
    };
    Ok(Some(ClientWorkload { ips, known: Arc::new(KnownWorkload { labels, peer }) }))
}

/// The client settings for `config.xds_address`: wildcard Listener and Cluster, TLS and
/// token as the agent's, the waypoint's namespace (its resources' scope).
pub fn client_config(config: &Config) -> ClientConfig {
    let endpoint = config.xds_address.clone();
    let mut client = ClientConfig::new(
        &endpoint,
        config.node_id(),
        vec![type_url::LISTENER.into(), type_url::CLUSTER.into(), type_url::ADDRESS.into()],
    );
    client.tls = endpoint.starts_with("https://").then(|| ClientTls {
        root_cert: config.ca_root_cert.clone(),
        server_name: config.xds_server_name.clone(),
    });
    client.token_file = config.token_file.clone();
    client.namespace = Some(config.namespace.clone());
    client.labels = config.pod_labels.clone();
    client
}

/// Starts a client with these settings (tests point it at an in-process server); gateway
/// listeners get their sockets from `sockets`.
pub fn start_with(
    mut client: ClientConfig,
    shared: Arc<Shared>,
    sockets: Sockets,
) -> Result<AdsClient, ClientError> {
    let subscriptions = Subscriptions::default();
    client.subscriptions = Some(subscriptions.clone());
    let mut held = Held { sockets: Some(sockets), ..Held::default() };
    let handler = move |update: Update| -> Result<(), String> {
        let refused = held.apply(&update);
        held.subscribe(&subscriptions);
        let snapshot = held.assemble(&shared.snapshot.load());
        shared.snapshot.store(Arc::new(snapshot));
        let mut status = shared.xds_status.lock().expect("xds status");
        status.generation += 1;
        status.resources = held.versions();
        info!(type_url = %update.type_url, upserts = update.upserts.len(), removals = update.removals.len(), refused = refused.len(), "xDS update applied");
        if refused.is_empty() {
            status.last_nack.remove(&update.type_url);
            return Ok(());
        }
        let message = refused.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        warn!(type_url = %update.type_url, error = %message, "xDS resources refused (NACK); what was held under those names stays");
        status.last_nack.insert(update.type_url.clone(), message.clone());
        status.nacks += 1;
        Err(message)
    };
    AdsClient::start(client, handler)
}

impl Held {
    /// Applies one update: each resource that compiles replaces what was held under its
    /// name; the others are refused.
    pub fn apply(&mut self, update: &Update) -> Vec<Refusal> {
        let mut refused = Vec::new();
        match update.type_url.as_str() {
            type_url::LISTENER => {
                self.listeners_received = true;
                let sockets = &mut self.sockets;
                apply_type(&mut self.listeners, update, &mut refused, "listener", |l: &Listener| {
                    let compiled = listener::compile(l)?;
                    // A gateway listener is applied only once its socket is bound: one that
                    // cannot be is refused, and what was held under its name stays.
                    if let (listener::Compiled::Gateway(g), Some(sockets)) = (&compiled, sockets.as_mut()) {
                        sockets.bind(&l.name, g.address, &update.removals).map_err(|reason| {
                            Refusal::new("listener", &l.name, "address.socket_address", reason)
                        })?;
                    }
                    Ok(compiled)
                });
                let keep = self.gateway_addresses();
                if let Some(sockets) = &mut self.sockets {
                    sockets.retain(&keep);
                }
            }
            type_url::CLUSTER => {
                apply_type(&mut self.clusters, update, &mut refused, "cluster", |c: &Cluster| {
                    cluster::compile(c)
                })
            }
            type_url::ROUTE => apply_type(
                &mut self.routes,
                update,
                &mut refused,
                "route_configuration",
                |r: &RouteConfiguration| {
                    RouteTable::compile(r)
                        .map(Arc::new)
                        // The route engine's error names the route and field itself.
                        .map_err(|e| Refusal::new("route_configuration", &r.name, "", e.to_string()))
                },
            ),
            type_url::ENDPOINT => apply_type(
                &mut self.assignments,
                update,
                &mut refused,
                "cluster_load_assignment",
                |c: &ClusterLoadAssignment| cluster::endpoints(c),
            ),
            type_url::ADDRESS => {
                apply_type(&mut self.addresses, update, &mut refused, "address", |a: &Address| {
                    let uid = match &a.r#type {
                        Some(address::Type::Workload(w)) => w.uid.as_str(),
                        _ => "",
                    };
                    client_workload(a).map_err(|e| Refusal::new("address", uid, "workload.extensions", e))
                })
            }
            other => refused.push(Refusal::new("resource", other, "type_url", "not subscribed".into())),
        }
        refused
    }

    /// The addresses of the gateway listeners held, and their names.
    fn gateway_addresses(&self) -> BTreeMap<SocketAddr, String> {
        self.listeners
            .iter()
            .filter_map(|(name, (_, l))| match l {
                listener::Compiled::Gateway(g) => Some((g.address, name.clone())),
                _ => None,
            })
            .collect()
    }

    /// Subscribes to the route tables the HTTP chains name and the assignments the EDS
    /// clusters name, and forgets those no longer named.
    pub fn subscribe(&mut self, subscriptions: &Subscriptions) {
        let routes: BTreeSet<String> = self
            .listeners
            .values()
            .flat_map(|(_, l)| match l {
                listener::Compiled::Dispatch(table) => table.iter().map(|(_, c)| c).collect(),
                listener::Compiled::Gateway(g) => vec![&g.chain],
                _ => Vec::new(),
            })
            .filter_map(|chain| match &**chain {
                Chain::Http(h) => Some(h.route_config.to_string()),
                Chain::Tcp(_) => None,
            })
            .collect();
        let assignments: BTreeSet<String> = self
            .clusters
            .values()
            .filter_map(|(_, c)| match c {
                cluster::Compiled::Eds { service_name, .. } => Some(service_name.clone()),
                _ => None,
            })
            .collect();
        self.routes.retain(|name, _| routes.contains(name));
        self.assignments.retain(|name, _| assignments.contains(name));
        subscriptions.set(type_url::ROUTE, routes);
        subscriptions.set(type_url::ENDPOINT, assignments);
    }

    /// The snapshot of what is held. Endpoints and cluster counters of `previous` are
    /// carried over where they still apply, so connections and least-request counts
    /// survive the update.
    pub fn assemble(&self, previous: &Snapshot) -> Snapshot {
        let mut snapshot = Snapshot {
            hbone_port: weft_hbone::HBONE_PORT,
            listeners_received: self.listeners_received,
            ..Snapshot::default()
        };
        for (_, l) in self.listeners.values() {
            match l {
                listener::Compiled::Terminate(t) => snapshot.terminate = Some(t.clone()),
                listener::Compiled::Dispatch(table) => {
                    snapshot.main_internal = true;
                    snapshot.dispatch = table.iter().cloned().collect();
                }
                listener::Compiled::Originate => {}
                listener::Compiled::Gateway(g) => {
                    snapshot.gateways.insert(g.address, g.chain.clone());
                }
            }
        }
        for (_, c) in self.clusters.values() {
            if let cluster::Compiled::Originate { port } = c {
                snapshot.hbone_port = *port;
            }
        }
        snapshot.workloads = self
            .addresses
            .values()
            .filter_map(|(_, w)| w.as_ref())
            .flat_map(|w| w.ips.iter().map(|ip| (*ip, w.known.clone())))
            .collect();
        snapshot.routes = self.routes.iter().map(|(n, (_, t))| (Arc::from(n.as_str()), t.clone())).collect();
        for (name, (_, c)) in &self.clusters {
            let cluster::Compiled::Eds { settings, service_name } = c else { continue };
            let old = previous.clusters.get(name.as_str());
            let reuse: HashMap<SocketAddr, &Arc<Endpoint>> =
                old.map(|o| o.endpoints.iter().map(|e| (e.address, e)).collect()).unwrap_or_default();
            let endpoints = self
                .assignments
                .get(service_name)
                .map(|(_, eps)| {
                    eps.iter()
                        .map(|(address, identity)| match reuse.get(address) {
                            Some(e) if e.identity == *identity && e.hbone.port() == snapshot.hbone_port => {
                                (*e).clone()
                            }
                            _ => Arc::new(Endpoint::new(*address, snapshot.hbone_port, identity.clone())),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let stats = old.map(|o| o.stats.clone()).unwrap_or_default();
            let name: Arc<str> = Arc::from(name.as_str());
            let cluster = upstream::Cluster::new(name.clone(), settings.clone(), endpoints, stats);
            snapshot.clusters.insert(name, Arc::new(cluster));
        }
        snapshot
    }

    fn versions(&self) -> BTreeMap<&'static str, BTreeMap<String, String>> {
        fn names<T>(m: &BTreeMap<String, (String, T)>) -> BTreeMap<String, String> {
            m.iter().map(|(n, (v, _))| (n.clone(), v.clone())).collect()
        }
        BTreeMap::from([
            (type_url::LISTENER, names(&self.listeners)),
            (type_url::CLUSTER, names(&self.clusters)),
            (type_url::ROUTE, names(&self.routes)),
            (type_url::ENDPOINT, names(&self.assignments)),
            (type_url::ADDRESS, names(&self.addresses)),
        ])
    }
}

/// Decodes and compiles each upsert of one type; removals drop names.
fn apply_type<M: prost::Name + Default, T>(
    held: &mut BTreeMap<String, (String, T)>,
    update: &Update,
    refused: &mut Vec<Refusal>,
    kind: &'static str,
    mut compile: impl FnMut(&M) -> Result<T, Refusal>,
) {
    for (name, version, any) in &update.upserts {
        let compiled = weft_xds::istio::unpack::<M>(any)
            .map_err(|e| Refusal::new(kind, name, "(resource)", e.to_string()))
            .and_then(|m| compile(&m));
        match compiled {
            Ok(c) => {
                held.insert(name.clone(), (version.clone(), c));
            }
            Err(e) => refused.push(e),
        }
    }
    for name in &update.removals {
        held.remove(name);
    }
}
