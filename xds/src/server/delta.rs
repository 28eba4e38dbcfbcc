//! Incremental ADS (`DeltaAggregatedResources`): responses carry only resources the proxy
//! lacks or holds at another version, and the names it must drop.
//!
//! The server tracks what each proxy holds (seeded from `initial_resource_versions`, so a
//! reconnecting proxy is only sent the difference). One response per type is in flight at a
//! time: changes that arrive meanwhile are collected and sent after the ACK or NACK, which
//! keeps "what the proxy holds" exact and makes a NACK easy to undo. A NACK reverts the
//! rejected names to what the proxy had; they are offered again only together with a newer
//! change to the type, never in a loop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tracing::{debug, warn};

use super::Shared;
use super::holding::{Filter, Holding};
use super::identity::ProxyIdentity;
use super::prepared::{Changed, Name, Prepared};
use super::snapshot::ScopedResource;
use super::status::{Connection, Protocol, TypeRecord};
use super::stream::StreamProtocol;
use super::wire::DeltaOut;

/// A response awaiting its ACK or NACK.
struct InFlight {
    nonce: String,
    version: String,
    /// What the proxy held before it (for NACK undo).
    previous: Holding,
}

/// One subscribed type on this stream.
#[derive(Default)]
struct TypeState {
    wildcard: bool,
    names: Arc<HashSet<String>>,
    /// The first request of a type is always answered, even with nothing, so the proxy knows
    /// it is in sync.
    initial_response_due: bool,
    /// Names (un)subscribed since the last response; their held version may differ.
    dirty: HashSet<Name>,
    /// Compare every name (after the first request or a wildcard change).
    all_dirty: bool,
    /// A NACK reverted the proxy's record: nothing is offered again until a newer snapshot
    /// changes this type (or the subscription changes), so a rejected config never loops.
    nacked: bool,
    in_flight: Option<InFlight>,
}

impl TypeState {
    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    fn filter(&self) -> Filter {
        if self.wildcard { Filter::All } else { Filter::Names(Arc::clone(&self.names)) }
    }
}

pub(crate) struct Delta {
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    types: HashMap<String, TypeState>,
}

impl StreamProtocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaOut;
    const PROTOCOL: Protocol = Protocol::Delta;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn type_url(request: &DeltaDiscoveryRequest) -> &str {
        &request.type_url
    }

    fn new(shared: Arc<Shared>, connection: Arc<Connection>) -> Self {
        Self { shared, connection, types: HashMap::new() }
    }

    fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: Option<&Arc<Prepared>>,
        out: &mut Vec<DeltaOut>,
    ) {
        let type_url = request.type_url;
        let proxy = &self.connection.identity;
        let first = !self.types.contains_key(&type_url);
        let state = self.types.entry(type_url.clone()).or_default();
        let mut records = self.connection.types();
        let record = records.entry(type_url.clone()).or_default();

        if !request.response_nonce.is_empty() {
            match state.in_flight.take_if(|f| f.nonce == request.response_nonce) {
                None => {
                    debug!(type_url, nonce = request.response_nonce, "ignoring ACK/NACK with a stale nonce")
                }
                Some(flight) => match request.error_detail {
                    None => {
                        debug!(type_url, version = flight.version, "ACK");
                        record.acked_version = Some(flight.version);
                    }
                    Some(error) => {
                        warn!(
                            type_url,
                            rejected = flight.version,
                            kept = record.acked_version.as_deref().unwrap_or(""),
                            error = error.message,
                            "proxy rejected config (NACK)"
                        );
                        record.held = flight.previous;
                        state.nacked = true;
                        self.shared.metrics.rejected(&type_url);
                        record.nack(error.message);
                    }
                },
            }
        }

        if first {
            let subscribe = &request.resource_names_subscribe;
            // Empty on the first request is the legacy spelling of a wildcard subscription.
            state.wildcard = subscribe.is_empty() || subscribe.iter().any(|n| n == "*");
            state.names = Arc::new(subscribe.iter().filter(|n| *n != "*").cloned().collect());
            record.held = Holding::reported(request.initial_resource_versions);
            state.all_dirty = true;
            state.initial_response_due = true;
        } else {
            let mut names = None;
            for name in request.resource_names_subscribe {
                if name == "*" {
                    state.all_dirty |= !state.wildcard;
                    state.wildcard = true;
                } else if !state.names.contains(&name) {
                    state.dirty.insert(Name::from(name.as_str()));
                    names.get_or_insert_with(|| (*state.names).clone()).insert(name);
                }
            }
            for name in request.resource_names_unsubscribe {
                if name == "*" {
                    if state.wildcard {
                        state.wildcard = false;
                        state.all_dirty = true;
                        // What the proxy holds was sent under the wildcard; list it
                        // explicitly so the names it now drops can be taken out.
                        record.held.materialize(&type_url, proxy);
                        let keep = names.as_ref().unwrap_or(&state.names);
                        let mut dropped = Vec::new();
                        record.held.for_each_name(&type_url, |n| {
                            if !keep.contains(&**n) {
                                dropped.push(Arc::clone(n));
                            }
                        });
                        for n in dropped {
                            record.held.set(&type_url, n, None, proxy);
                        }
                    }
                } else if state.names.contains(&name) || names.as_ref().is_some_and(|n| n.contains(&name)) {
                    names.get_or_insert_with(|| (*state.names).clone()).remove(&name);
                    if !state.wildcard {
                        // The proxy forgets it by itself; no removal is sent (xDS spec).
                        record.held.set(&type_url, Name::from(name.as_str()), None, proxy);
                    }
                }
            }
            if let Some(names) = names {
                state.names = Arc::new(names);
            }
        }
        if state.all_dirty || !state.dirty.is_empty() {
            state.nacked = false;
        }

        let Some(snapshot) = snapshot else { return };
        if let Some(response) = try_send(&self.shared, &type_url, state, record, snapshot, proxy) {
            out.push(response);
        }
    }

    fn awaiting_ack(&self) -> bool {
        self.types.values().any(|t| t.in_flight.is_some())
    }

    fn on_snapshot(&mut self, snapshot: &Arc<Prepared>, out: &mut Vec<DeltaOut>) {
        let proxy = &self.connection.identity;
        let mut records = self.connection.types();
        for (type_url, state) in &mut self.types {
            if state.nacked {
                if !snapshot.changes.contains_key(type_url) {
                    continue;
                }
                state.nacked = false;
            }
            let record = records.entry(type_url.clone()).or_default();
            if let Some(response) = try_send(&self.shared, type_url, state, record, snapshot, proxy) {
                out.push(response);
            }
        }
    }
}

/// Sends what the proxy lacks for one type, unless a response is still in flight or a
/// NACK is waiting for a newer change.
fn try_send(
    shared: &Shared,
    type_url: &str,
    state: &mut TypeState,
    record: &mut TypeRecord,
    snapshot: &Arc<Prepared>,
    proxy: &ProxyIdentity,
) -> Option<DeltaOut> {
    if state.nacked {
        return None;
    }
    let behind = record.held.base().is_none_or(|b| b.generation != snapshot.generation);
    if state.in_flight.is_some() {
        if behind || state.all_dirty || !state.dirty.is_empty() {
            // Held back until the ACK: the proxy's view has moved past what it was sent.
            record.current_version = Some(snapshot.version.clone());
        }
        return None;
    }
    if !behind && !state.all_dirty && state.dirty.is_empty() && !state.initial_response_due {
        return None;
    }

    let index = snapshot.types.get(type_url);
    let previous = record.held.clone();
    let changed = match record.held.base() {
        Some(base) if !state.all_dirty => snapshot.changed_since(type_url, base.generation),
        _ => Changed::Everything,
    };
    state.all_dirty = false;

    let mut upserts: Vec<Arc<ScopedResource>> = Vec::new();
    let mut removals: Vec<String> = Vec::new();
    let mut count = previous.len();
    let mut examine = |name: &Name| {
        let wanted = if state.subscribed(name) { index.and_then(|i| i.resolve(name, proxy)) } else { None };
        let held = previous.get(type_url, name, proxy);
        match (wanted, held) {
            (Some(r), Some(held)) if held.version() == r.version => {}
            (Some(r), held) => {
                upserts.push(Arc::clone(r));
                if held.is_none() {
                    count += 1;
                }
            }
            (None, Some(_)) => {
                // Unsubscribed names the proxy dropped itself are in the record as not
                // held; anything still held here must be removed.
                removals.push(name.to_string());
                count -= 1;
            }
            (None, None) => {}
        }
    };
    match changed {
        Changed::Everything => {
            for name in index.into_iter().flat_map(|i| i.by_name.keys()) {
                examine(name);
            }
            previous.for_each_name(type_url, |name| {
                if !index.is_some_and(|i| i.contains(name)) {
                    examine(name);
                }
            });
        }
        Changed::Names(sets) => {
            let mut seen: HashSet<&Name> = HashSet::new();
            let dirty = state.dirty.iter();
            let exceptions = previous.exceptions();
            for name in sets.into_iter().flatten().chain(dirty).chain(exceptions) {
                if seen.insert(name) {
                    examine(name);
                }
            }
        }
    }
    state.dirty.clear();
    // Every name that may differ was examined: from now on the proxy holds exactly what
    // this snapshot resolves to for it.
    record.held.rebase(Arc::clone(snapshot), state.filter(), count);

    if upserts.is_empty() && removals.is_empty() && !state.initial_response_due {
        record.current_version = record.sent_version.clone();
        return None;
    }
    state.initial_response_due = false;
    if upserts.len() <= SORTED_UP_TO {
        upserts.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        removals.sort_unstable();
    }

    let nonce = shared.next_nonce();
    let version = snapshot.version.clone();
    debug!(type_url, version, nonce, upserts = upserts.len(), removals = removals.len(), "push");
    record.sent_version = Some(version.clone());
    record.current_version = Some(version.clone());
    state.in_flight = Some(InFlight { nonce: nonce.clone(), version: version.clone(), previous });

    Some(DeltaOut {
        head: DeltaDiscoveryResponse {
            system_version_info: version,
            type_url: type_url.to_owned(),
            removed_resources: removals,
            nonce,
            ..Default::default()
        },
        resources: upserts,
    })
}

/// Responses up to this size list resources by name, which makes dumps and tests easy to
/// read; proxies do not care, and sorting a full mesh for every new agent would.
const SORTED_UP_TO: usize = 4096;
