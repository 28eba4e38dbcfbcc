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
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tracing::{debug, warn};

use super::Shared;
use super::snapshot::{Prepared, ScopedResource};
use super::status::{Connection, Held, Protocol, TypeRecord};
use super::stream::StreamProtocol;
use super::view::View;

/// A response awaiting its ACK or NACK.
struct InFlight {
    nonce: String,
    version: String,
    /// What the proxy held before, for each name the response touched (for NACK undo).
    previous: Vec<(String, Option<Held>)>,
}

/// One subscribed type on this stream.
#[derive(Default)]
struct TypeState {
    wildcard: bool,
    names: HashSet<String>,
    view: View,
    /// The first request of a type is always answered, even with nothing, so the proxy knows
    /// it is in sync.
    initial_response_due: bool,
    /// Names whose held version may differ from the view.
    dirty: HashSet<String>,
    /// Compare every name (after the first request or a wildcard change).
    all_dirty: bool,
    /// Names reverted by a NACK; re-examined with the next real change.
    retry: HashSet<String>,
    in_flight: Option<InFlight>,
}

impl TypeState {
    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

pub(crate) struct Delta {
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    types: HashMap<String, TypeState>,
}

impl StreamProtocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const PROTOCOL: Protocol = Protocol::Delta;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(shared: Arc<Shared>, connection: Arc<Connection>) -> Self {
        Self { shared, connection, types: HashMap::new() }
    }

    fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: Option<&Arc<Prepared>>,
        out: &mut Vec<DeltaDiscoveryResponse>,
    ) {
        let type_url = request.type_url;
        if type_url.is_empty() {
            warn!("request without type_url ignored: ADS requires it on every request");
            return;
        }
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
                        for (name, before) in flight.previous {
                            match before {
                                Some(held) => record.held.insert(name.clone(), held),
                                None => record.held.remove(&name),
                            };
                            state.retry.insert(name);
                        }
                        record.nack(error.message);
                    }
                },
            }
        }

        if first {
            let subscribe = &request.resource_names_subscribe;
            // Empty on the first request is the legacy spelling of a wildcard subscription.
            state.wildcard = subscribe.is_empty() || subscribe.iter().any(|n| n == "*");
            state.names = subscribe.iter().filter(|n| *n != "*").cloned().collect();
            record.held = request
                .initial_resource_versions
                .into_iter()
                .map(|(name, version)| (name, Held { version, resource: None }))
                .collect();
            state.all_dirty = true;
            state.initial_response_due = true;
        } else {
            for name in request.resource_names_subscribe {
                if name == "*" {
                    state.all_dirty |= !state.wildcard;
                    state.wildcard = true;
                } else if state.names.insert(name.clone()) {
                    state.dirty.insert(name);
                }
            }
            for name in request.resource_names_unsubscribe {
                if name == "*" {
                    state.all_dirty |= state.wildcard;
                    state.wildcard = false;
                } else {
                    state.names.remove(&name);
                    if !state.wildcard {
                        // The proxy forgets it by itself; no removal is sent (xDS spec).
                        record.held.remove(&name);
                    }
                }
            }
        }

        let Some(snapshot) = snapshot else { return };
        state.view.refresh(snapshot, &type_url, &self.connection.identity);
        if let Some(response) = try_send(&self.shared, &type_url, state, record, snapshot) {
            out.push(response);
        }
    }

    fn on_snapshot(&mut self, snapshot: &Arc<Prepared>, out: &mut Vec<DeltaDiscoveryResponse>) {
        let mut records = self.connection.types();
        for (type_url, state) in &mut self.types {
            let changed = state.view.refresh(snapshot, type_url, &self.connection.identity);
            let record = records.entry(type_url.clone()).or_default();
            state.dirty.extend(
                changed
                    .into_iter()
                    .filter(|n| state.wildcard || state.names.contains(n) || record.held.contains_key(n)),
            );
            if let Some(response) = try_send(&self.shared, type_url, state, record, snapshot) {
                out.push(response);
            }
        }
    }
}

/// Sends what the proxy lacks for one type, unless a response is still in flight.
fn try_send(
    shared: &Shared,
    type_url: &str,
    state: &mut TypeState,
    record: &mut TypeRecord,
    snapshot: &Prepared,
) -> Option<DeltaDiscoveryResponse> {
    if state.in_flight.is_some() {
        if state.all_dirty || !state.dirty.is_empty() {
            // Held back until the ACK: the proxy's view has moved past what it was sent.
            record.current_version = Some(snapshot.version.clone());
        }
        return None;
    }

    let candidates: Vec<String> = if state.all_dirty {
        let mut all: HashSet<String> = state.view.names().cloned().collect();
        all.extend(record.held.keys().cloned());
        all.extend(state.retry.drain());
        state.dirty.clear();
        all.into_iter().collect()
    } else {
        if !state.dirty.is_empty() {
            // NACKed names ride along with the next real change.
            let retry: Vec<String> = state.retry.drain().collect();
            state.dirty.extend(retry);
        }
        state.dirty.drain().collect()
    };
    state.all_dirty = false;

    let mut upserts: Vec<Arc<ScopedResource>> = Vec::new();
    let mut removals: Vec<String> = Vec::new();
    let mut previous = Vec::new();
    for name in candidates {
        let subscribed = state.subscribed(&name);
        let wanted = if subscribed { state.view.get(&name) } else { None };
        let held = record.held.get(&name).cloned();
        match (wanted, held) {
            (Some(r), Some(held)) if held.version == r.version => {
                if held.resource.is_none() {
                    // Reported by the proxy on connect; remember the content for config dumps.
                    record.held.insert(name, Held::sent(r));
                }
            }
            (Some(r), held) => {
                upserts.push(Arc::clone(r));
                record.held.insert(name.clone(), Held::sent(r));
                previous.push((name, held));
            }
            (None, Some(held)) if subscribed => {
                record.held.remove(&name);
                removals.push(name.clone());
                previous.push((name, Some(held)));
            }
            (None, Some(_)) => {
                // No longer subscribed: the proxy dropped it itself.
                record.held.remove(&name);
            }
            (None, None) => {}
        }
    }

    if upserts.is_empty() && removals.is_empty() && !state.initial_response_due {
        record.current_version = record.sent_version.clone();
        return None;
    }
    state.initial_response_due = false;
    upserts.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    removals.sort_unstable();

    let nonce = shared.next_nonce();
    let version = snapshot.version.clone();
    debug!(type_url, version, nonce, upserts = upserts.len(), removals = removals.len(), "push");
    record.sent_version = Some(version.clone());
    record.current_version = Some(version.clone());
    state.in_flight = Some(InFlight { nonce: nonce.clone(), version: version.clone(), previous });

    Some(DeltaDiscoveryResponse {
        system_version_info: version,
        resources: upserts
            .iter()
            .map(|r| Resource {
                name: r.name.clone(),
                version: r.version.clone(),
                resource: Some(r.resource.clone()),
                ..Default::default()
            })
            .collect(),
        type_url: type_url.to_owned(),
        removed_resources: removals,
        nonce,
        ..Default::default()
    })
}
