//! State-of-the-world ADS (`StreamAggregatedResources`): every response carries the whole
//! set of a type the proxy subscribed to, sent only when that set changed for this proxy.
//!
//! Protocol points (Envoy's xDS protocol doc): each response has the snapshot version and a
//! fresh nonce; a request echoing the latest nonce is an ACK (no `error_detail`) or a NACK
//! (with one); requests echoing an older nonce are ignored; a NACKed set is not sent again
//! until a newer snapshot changes what the proxy should see.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tracing::{debug, warn};

use super::Shared;
use super::holding::Filter;
use super::identity::ProxyIdentity;
use super::prepared::{Changed, Prepared};
use super::snapshot::ScopedResource;
use super::status::{Connection, Protocol, TypeRecord};
use super::stream::StreamProtocol;
use super::wire::SotwOut;

/// Which names of a type the proxy asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subscription {
    /// Everything the proxy may see (empty `resource_names` on the first request, or `*`).
    Wildcard,
    Names(Arc<HashSet<String>>),
}

impl Subscription {
    /// Reads `resource_names`. An empty list means wildcard on the first request (and keeps
    /// an existing wildcard); after named subscriptions it means "nothing".
    fn from_request(names: &[String], first: bool, current: &Subscription) -> Self {
        if names.iter().any(|n| n == "*") {
            return Subscription::Wildcard;
        }
        if names.is_empty() && (first || *current == Subscription::Wildcard) {
            return Subscription::Wildcard;
        }
        Subscription::Names(Arc::new(names.iter().cloned().collect()))
    }

    fn contains(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(names) => names.contains(name),
        }
    }

    fn filter(&self) -> Filter {
        match self {
            Subscription::Wildcard => Filter::All,
            Subscription::Names(names) => Filter::Names(Arc::clone(names)),
        }
    }
}

/// One subscribed type on this stream.
struct TypeState {
    subscription: Subscription,
    /// Nonce of the last response; `None` until the first one is sent.
    nonce: Option<String>,
    /// Whether the proxy answered (ACK or NACK) the last response.
    acked: bool,
}

pub(crate) struct Sotw {
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    types: HashMap<String, TypeState>,
}

impl StreamProtocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = SotwOut;
    const PROTOCOL: Protocol = Protocol::StateOfTheWorld;

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn type_url(request: &DiscoveryRequest) -> &str {
        &request.type_url
    }

    fn new(shared: Arc<Shared>, connection: Arc<Connection>) -> Self {
        Self { shared, connection, types: HashMap::new() }
    }

    fn on_request(
        &mut self,
        request: DiscoveryRequest,
        snapshot: Option<&Arc<Prepared>>,
        out: &mut Vec<SotwOut>,
    ) {
        let type_url = request.type_url;
        let proxy = &self.connection.identity;
        let first = !self.types.contains_key(&type_url);
        let state = self.types.entry(type_url.clone()).or_insert_with(|| TypeState {
            subscription: Subscription::Names(Arc::default()),
            nonce: None,
            acked: false,
        });
        let mut records = self.connection.types();
        let record = records.entry(type_url.clone()).or_default();

        if !request.response_nonce.is_empty() {
            if state.nonce.as_deref() != Some(request.response_nonce.as_str()) {
                debug!(type_url, nonce = request.response_nonce, "ignoring request with a stale nonce");
                return;
            }
            state.acked = true;
            match request.error_detail {
                Some(error) => {
                    warn!(
                        type_url,
                        rejected = record.sent_version.as_deref().unwrap_or(""),
                        kept = record.acked_version.as_deref().unwrap_or(""),
                        error = error.message,
                        "proxy rejected config (NACK)"
                    );
                    self.shared.metrics.rejected(&type_url);
                    record.nack(error.message);
                }
                None => {
                    debug!(type_url, version = request.version_info, "ACK");
                    record.acked_version = Some(request.version_info);
                }
            }
        }

        let subscription = Subscription::from_request(&request.resource_names, first, &state.subscription);
        let subscription_changed = subscription != state.subscription;
        state.subscription = subscription;

        // Without a snapshot there is nothing to say yet; the first snapshot answers.
        let Some(snapshot) = snapshot else { return };
        // A request without a nonce is a (re)subscription and always gets an answer, even an
        // empty one: Envoy waits for it before it considers the type initialised.
        let must_answer = request.response_nonce.is_empty();
        if must_answer
            || (subscription_changed && differs_from_sent(&type_url, state, record, snapshot, proxy, true))
        {
            out.push(respond(&self.shared, &type_url, state, record, snapshot, proxy));
        }
    }

    fn awaiting_ack(&self) -> bool {
        self.types.values().any(|t| t.nonce.is_some() && !t.acked)
    }

    fn on_snapshot(&mut self, snapshot: &Arc<Prepared>, out: &mut Vec<SotwOut>) {
        let proxy = &self.connection.identity;
        let mut records = self.connection.types();
        for (type_url, state) in &mut self.types {
            let record = records.entry(type_url.clone()).or_default();
            if state.nonce.is_none() || differs_from_sent(type_url, state, record, snapshot, proxy, false) {
                out.push(respond(&self.shared, type_url, state, record, snapshot, proxy));
            }
        }
    }
}

/// Whether what the proxy should see of a type differs from the set last sent. Only the
/// names changed since then are compared, unless `everything` (the subscription changed).
fn differs_from_sent(
    type_url: &str,
    state: &TypeState,
    record: &TypeRecord,
    snapshot: &Prepared,
    proxy: &ProxyIdentity,
    everything: bool,
) -> bool {
    let index = snapshot.types.get(type_url);
    let differs = |name: &str| {
        let wanted =
            if state.subscription.contains(name) { index.and_then(|i| i.resolve(name, proxy)) } else { None };
        let held = record.held.get(type_url, name, proxy);
        match (wanted, held) {
            (Some(w), Some(h)) => w.version != h.version(),
            (None, None) => false,
            _ => true,
        }
    };
    let changed = match record.held.base() {
        Some(base) if !everything => snapshot.changed_since(type_url, base.generation),
        _ => Changed::Everything,
    };
    match changed {
        Changed::Names(sets) => sets.into_iter().flatten().any(|n| differs(n)),
        Changed::Everything => {
            let mut count = 0;
            for (name, _) in index.into_iter().flat_map(|i| i.by_name.iter()) {
                if differs(name) {
                    return true;
                }
                count += usize::from(
                    state.subscription.contains(name) && record.held.get(type_url, name, proxy).is_some(),
                );
            }
            count != record.held.len()
        }
    }
}

/// Builds the full response for one type and records it as sent.
fn respond(
    shared: &Shared,
    type_url: &str,
    state: &mut TypeState,
    record: &mut TypeRecord,
    snapshot: &Arc<Prepared>,
    proxy: &ProxyIdentity,
) -> SotwOut {
    let mut resources: Vec<Arc<ScopedResource>> = snapshot
        .types
        .get(type_url)
        .into_iter()
        .flat_map(|i| i.by_name.iter())
        .filter(|(name, _)| state.subscription.contains(name))
        .filter_map(|(_, variants)| variants.iter().find(|r| r.scope.matches(proxy)).cloned())
        .collect();
    // Stable order: easier to read in dumps and to compare in tests; proxies do not care.
    resources.sort_unstable_by(|a, b| a.name.cmp(&b.name));

    let nonce = shared.next_nonce();
    record.held.rebase(Arc::clone(snapshot), state.subscription.filter(), resources.len());
    record.sent_version = Some(snapshot.version.clone());
    record.current_version = Some(snapshot.version.clone());
    state.nonce = Some(nonce.clone());
    state.acked = false;
    debug!(type_url, version = snapshot.version, nonce, resources = resources.len(), "push");

    SotwOut {
        head: DiscoveryResponse {
            version_info: snapshot.version.clone(),
            type_url: type_url.to_owned(),
            nonce,
            ..Default::default()
        },
        resources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_rules() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = Subscription::Names(Arc::default());
        assert_eq!(Subscription::from_request(&[], true, &none), Subscription::Wildcard);
        assert_eq!(Subscription::from_request(&[], false, &Subscription::Wildcard), Subscription::Wildcard);
        let named = Subscription::from_request(&names(&["a"]), true, &none);
        assert!(named.contains("a") && !named.contains("b"));
        assert_eq!(Subscription::from_request(&[], false, &named), none);
        assert_eq!(Subscription::from_request(&names(&["*", "a"]), false, &named), Subscription::Wildcard);
    }
}
