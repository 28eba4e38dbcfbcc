//! A delta ADS client for Weft agents and `weftctl`.
//!
//! It connects to an ADS endpoint (TLS for `https://`, with the root certificate and server
//! name of [`ClientTls`]; plaintext for `http://`, weftd's debugging port), presents the
//! bearer token of its token file (read again at every connect), and a `Node` with the
//! caller's id and `NODE_NAME` / `NAMESPACE` metadata, subscribes (delta, wildcard) to the
//! given type URLs and hands every response to a [`Handler`]. The handler's answer decides
//! the reply: `Ok` is an ACK, `Err(message)` a NACK carrying that message, so a proxy can
//! refuse bad config and keep its last good one.
//!
//! Types in [`ClientConfig::type_urls`] are wildcard subscriptions. Others can be
//! subscribed by name through [`Subscriptions`], which the caller changes while the client
//! runs, as Envoy subscribes to the route tables and endpoints its listeners and clusters
//! name (RDS and EDS): the client sends the (un)subscriptions on the open stream and
//! repeats the whole set on every reconnect. Names dropped from a subscription are
//! forgotten by the client (the server sends no removal for them, per the xDS spec); the
//! caller drops what it held under them itself.
//!
//! The client remembers the versions it accepted; when the server goes away it reconnects
//! with exponential backoff and reports them in `initial_resource_versions`, so the server
//! sends only what changed meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Node, node::UserAgentVersionType};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Any;
use crate::connect::{self, Bearer, ConnectError};
use crate::server::{ISTIO_VERSION, LABELS, NAMESPACE, NODE_NAME};

pub use crate::connect::ClientTls;

/// Weft's version, which every client reports as its `ISTIO_VERSION`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// ADS endpoint URI: `https://weftd.istio-system.svc:15012` (weftd's TLS port), or
    /// `http://…:15010` (its plaintext port, off unless weftd is asked for it).
    pub endpoint: String,
    /// How to check the server's certificate; required for an https endpoint.
    pub tls: Option<ClientTls>,
    /// File holding the bearer token presented on every stream (`authorization: Bearer`),
    /// read again at every (re)connect.
    pub token_file: Option<PathBuf>,
    /// `node.id`; the server keys status and `Scope::Proxy` on it.
    pub node_id: String,
    /// Sent as `NODE_NAME` metadata; selects `Scope::Node` resources.
    pub node_name: Option<String>,
    /// Sent as `NAMESPACE` metadata; selects `Scope::Namespace` resources.
    pub namespace: Option<String>,
    /// Further string metadata (e.g. `CLUSTER_ID`).
    pub metadata: BTreeMap<String, String>,
    /// The proxy pod's labels, sent as the `LABELS` metadata struct (as Istio's proxies
    /// send them): gateways are chosen by label (`Scope::Labels`). None sent when empty.
    pub labels: BTreeMap<String, String>,
    /// Types to subscribe to, each as a wildcard subscription.
    pub type_urls: Vec<String>,
    /// First delay before reconnecting; doubles per failed attempt up to `max_backoff`, and
    /// starts over once a session received a response.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// Largest response accepted. A first delta response carries every resource of a type.
    pub max_response_bytes: usize,
    /// Subscriptions by name, for types not in `type_urls`.
    pub subscriptions: Option<Subscriptions>,
}

/// Subscriptions by resource name (type URL → names), changed by the caller while the
/// client runs. Cheap to clone; clones share the set.
#[derive(Clone, Debug)]
pub struct Subscriptions {
    names: Arc<watch::Sender<BTreeMap<String, BTreeSet<String>>>>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Self { names: Arc::new(watch::channel(BTreeMap::new()).0) }
    }
}

impl Subscriptions {
    /// Subscribes to exactly `names` of `type_url` (none: no subscription to the type).
    /// Does nothing if that is already the set, so it can be called on every update.
    pub fn set(&self, type_url: &str, names: BTreeSet<String>) {
        self.names.send_if_modified(|all| {
            if all.get(type_url).map_or(names.is_empty(), |held| *held == names) {
                return false;
            }
            if names.is_empty() {
                all.remove(type_url);
            } else {
                all.insert(type_url.to_owned(), names);
            }
            true
        });
    }

    /// The names of `type_url` subscribed now.
    pub fn get(&self, type_url: &str) -> BTreeSet<String> {
        self.names.borrow().get(type_url).cloned().unwrap_or_default()
    }
}

impl ClientConfig {
    /// Settings with defaults for everything but the endpoint, the node id and the types.
    pub fn new(endpoint: impl Into<String>, node_id: impl Into<String>, type_urls: Vec<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls: None,
            token_file: None,
            node_id: node_id.into(),
            node_name: None,
            namespace: None,
            metadata: BTreeMap::new(),
            labels: BTreeMap::new(),
            type_urls,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_response_bytes: 256 << 20,
            subscriptions: None,
        }
    }

    fn node(&self) -> Node {
        let string = |s: &str| Value { kind: Some(Kind::StringValue(s.to_owned())) };
        let mut fields: HashMap<String, Value> =
            self.metadata.iter().map(|(k, v)| (k.clone(), string(v))).collect();
        if let Some(node_name) = &self.node_name {
            fields.insert(NODE_NAME.to_owned(), string(node_name));
        }
        if let Some(namespace) = &self.namespace {
            fields.insert(NAMESPACE.to_owned(), string(namespace));
        }
        // As every Istio proxy: the server groups its proxies by it (pilot_xds{version}).
        fields.entry(ISTIO_VERSION.to_owned()).or_insert_with(|| string(VERSION));
        if !self.labels.is_empty() {
            let labels = self.labels.iter().map(|(k, v)| (k.clone(), string(v))).collect();
            fields.insert(
                LABELS.to_owned(),
                Value { kind: Some(Kind::StructValue(Struct { fields: labels })) },
            );
        }
        Node {
            id: self.node_id.clone(),
            metadata: Some(Struct { fields }),
            user_agent_name: "weft".to_owned(),
            user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(VERSION.to_owned())),
            ..Default::default()
        }
    }
}

/// One response, as the handler sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    pub type_url: String,
    /// The server's `system_version_info`.
    pub system_version: String,
    /// Added or changed resources: (name, version, resource).
    pub upserts: Vec<(String, String, Any)>,
    /// Names to drop.
    pub removals: Vec<String>,
}

impl Update {
    /// True for a response that changes nothing: the server's answer to a subscription whose
    /// resources the client already holds (for example after a reconnect).
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// Applies updates. `Err(message)` rejects the whole update (NACK with `message`); the
/// client then keeps reporting its previous versions for those resources.
pub trait Handler: Send + 'static {
    fn handle(&mut self, update: Update) -> Result<(), String>;
}

impl<F> Handler for F
where
    F: FnMut(Update) -> Result<(), String> + Send + 'static,
{
    fn handle(&mut self, update: Update) -> Result<(), String> {
        self(update)
    }
}

/// Connection state, for readiness probes and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientState {
    /// A stream is open.
    pub connected: bool,
    /// Streams opened so far (1 after the first connect, 2 after a reconnect, …).
    pub sessions: u64,
    /// Responses received over all sessions.
    pub responses: u64,
    /// Why the last session ended, if one did.
    pub last_error: Option<String>,
}

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not one the client can connect to with its TLS settings.
    #[error(transparent)]
    Endpoint(#[from] ConnectError),
    /// Nothing to subscribe to.
    #[error("no type URLs to subscribe to")]
    NoTypes,
}

/// A running client. Dropping it stops the client too; [`AdsClient::stop`] also waits for
/// the task to finish.
#[derive(Debug)]
pub struct AdsClient {
    stop: watch::Sender<bool>,
    state: watch::Receiver<ClientState>,
    task: JoinHandle<()>,
}

impl AdsClient {
    /// Starts the client on the current Tokio runtime. Connection failures are not errors
    /// here: the client keeps retrying and reports progress through [`AdsClient::state`].
    pub fn start(config: ClientConfig, handler: impl Handler) -> Result<Self, ClientError> {
        if config.type_urls.is_empty() {
            return Err(ClientError::NoTypes);
        }
        connect::check(&config.endpoint, config.tls.as_ref())?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (state_tx, state_rx) = watch::channel(ClientState::default());
        let span = info_span!("xds_client", node = %config.node_id, endpoint = %config.endpoint);
        let subscriptions = config.subscriptions.as_ref().map(|s| s.names.subscribe());
        let runner =
            Runner { config, handler, held: HashMap::new(), stop: stop_rx, state: state_tx, subscriptions };
        let task = tokio::spawn(runner.run().instrument(span));
        Ok(Self { stop: stop_tx, state: state_rx, task })
    }

    /// Watches the connection state.
    pub fn state(&self) -> watch::Receiver<ClientState> {
        self.state.clone()
    }

    /// Stops the client and waits until its stream is closed.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// How a session ended.
enum SessionEnd {
    Stopped,
    Failed { error: String, received: bool },
}

struct Runner<H> {
    config: ClientConfig,
    handler: H,
    /// type URL → name → version, of what the handler accepted.
    held: HashMap<String, HashMap<String, String>>,
    stop: watch::Receiver<bool>,
    state: watch::Sender<ClientState>,
    /// The caller's subscriptions by name, if it has any.
    subscriptions: Option<watch::Receiver<BTreeMap<String, BTreeSet<String>>>>,
}

impl<H: Handler> Runner<H> {
    async fn run(mut self) {
        let mut backoff = self.config.initial_backoff;
        loop {
            let (error, received) = match self.session().await {
                SessionEnd::Stopped => break,
                SessionEnd::Failed { error, received } => (error, received),
            };
            self.state.send_modify(|s| {
                s.connected = false;
                s.last_error = Some(error.clone());
            });
            if received {
                backoff = self.config.initial_backoff;
            }
            warn!(error, retry_in_ms = backoff.as_millis() as u64, "xDS stream ended; reconnecting");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = crate::server::stopped(&mut self.stop) => break,
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
        self.state.send_modify(|s| s.connected = false);
        debug!("xDS client stopped");
    }

    /// The endpoint and token of one session, from the files as they are now.
    fn credentials(&self) -> Result<(tonic::transport::Endpoint, Bearer), ConnectError> {
        let root = match &self.config.tls {
            Some(tls) => Some((tls, connect::read_root(tls)?)),
            None => None,
        };
        let endpoint = connect::endpoint(
            &self.config.endpoint,
            root.as_ref().map(|(tls, pem)| (*tls, pem.as_slice())),
            self.config.connect_timeout,
        )?;
        let token = self.config.token_file.as_deref().map(connect::bearer).transpose()?;
        Ok((endpoint, Bearer(token)))
    }

    /// One stream, from connect to its end.
    async fn session(&mut self) -> SessionEnd {
        let (endpoint, bearer) = match self.credentials() {
            Ok(credentials) => credentials,
            Err(e) => return SessionEnd::Failed { error: e.to_string(), received: false },
        };
        let channel = tokio::select! {
            _ = crate::server::stopped(&mut self.stop) => return SessionEnd::Stopped,
            channel = endpoint.connect() => match channel {
                Ok(channel) => channel,
                Err(e) => return SessionEnd::Failed { error: format!("cannot connect: {}", error_chain(&e)), received: false },
            },
        };
        let mut client = AggregatedDiscoveryServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(self.config.max_response_bytes);

        // Room for every initial request plus a backlog of ACKs, so queuing never blocks
        // before the stream is open.
        let (tx, rx) = mpsc::channel(self.config.type_urls.len() + 16);
        let node = self.config.node();
        for (i, type_url) in self.config.type_urls.iter().enumerate() {
            let request = DeltaDiscoveryRequest {
                // The node is only required on the first request of a stream.
                node: (i == 0).then(|| node.clone()),
                type_url: type_url.clone(),
                // Empty subscribe list on the first request: wildcard, which every xDS
                // server (istiod included) understands.
                initial_resource_versions: self.held.get(type_url).cloned().unwrap_or_default(),
                ..Default::default()
            };
            if tx.try_send(request).is_err() {
                return SessionEnd::Failed { error: "request queue full".into(), received: false };
            }
        }

        // What this stream is subscribed to by name; each session starts from nothing.
        let mut named: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if self.resubscribe(&mut named, &tx, &node).is_err() {
            return SessionEnd::Failed { error: "request queue full".into(), received: false };
        }

        let call = client.delta_aggregated_resources(ReceiverStream::new(rx));
        let mut responses = tokio::select! {
            _ = crate::server::stopped(&mut self.stop) => return SessionEnd::Stopped,
            response = call => match response {
                Ok(response) => response.into_inner(),
                Err(status) => return SessionEnd::Failed { error: format!("stream refused: {}", describe(&status)), received: false },
            },
        };
        info!("xDS stream open");
        self.state.send_modify(|s| {
            s.connected = true;
            s.sessions += 1;
        });

        let mut received = false;
        loop {
            let message = tokio::select! {
                _ = crate::server::stopped(&mut self.stop) => return SessionEnd::Stopped,
                message = responses.message() => message,
                Some(()) = changed(self.subscriptions.as_mut()) => {
                    if self.resubscribe(&mut named, &tx, &node).is_err() {
                        return SessionEnd::Failed { error: "request stream closed".into(), received };
                    }
                    continue;
                }
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return SessionEnd::Failed { error: "server closed the stream".into(), received },
                Err(status) => {
                    return SessionEnd::Failed {
                        error: format!("stream failed: {}", describe(&status)),
                        received,
                    };
                }
            };
            received = true;
            self.state.send_modify(|s| s.responses += 1);
            let reply = self.apply(response);
            if tx.send(reply).await.is_err() {
                return SessionEnd::Failed { error: "request stream closed".into(), received };
            }
        }
    }

    /// Brings the stream's named subscriptions (`named`) to the caller's set: a first
    /// request for a type newly subscribed (with the versions held of its names), then
    /// (un)subscriptions for the names that changed. The node rides on the first request
    /// of the stream when there was no wildcard type to carry it.
    fn resubscribe(
        &mut self,
        named: &mut BTreeMap<String, BTreeSet<String>>,
        tx: &mpsc::Sender<DeltaDiscoveryRequest>,
        node: &Node,
    ) -> Result<(), ()> {
        let Some(wanted) = self.subscriptions.as_mut().map(|s| s.borrow_and_update().clone()) else {
            return Ok(());
        };
        let mut requests = Vec::new();
        for (type_url, names) in &wanted {
            let had = named.get(type_url);
            let subscribe: Vec<String> =
                names.iter().filter(|n| had.is_none_or(|h| !h.contains(*n))).cloned().collect();
            let unsubscribe: Vec<String> =
                had.map(|h| h.difference(names).cloned().collect()).unwrap_or_default();
            if subscribe.is_empty() && unsubscribe.is_empty() {
                continue;
            }
            let held = self.held.entry(type_url.clone()).or_default();
            held.retain(|name, _| names.contains(name));
            let initial_resource_versions = if had.is_none() { held.clone() } else { HashMap::new() };
            requests.push(DeltaDiscoveryRequest {
                type_url: type_url.clone(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                initial_resource_versions,
                ..Default::default()
            });
        }
        // A type no longer wanted at all: unsubscribe every name it had.
        for (type_url, had) in named.iter().filter(|(t, _)| !wanted.contains_key(*t)) {
            self.held.remove(type_url);
            requests.push(DeltaDiscoveryRequest {
                type_url: type_url.clone(),
                resource_names_unsubscribe: had.iter().cloned().collect(),
                ..Default::default()
            });
        }
        if let Some(first) = requests.first_mut()
            && self.config.type_urls.is_empty()
            && named.is_empty()
        {
            first.node = Some(node.clone());
        }
        for request in requests {
            debug!(
                type_url = request.type_url,
                subscribe = ?request.resource_names_subscribe,
                unsubscribe = ?request.resource_names_unsubscribe,
                "xDS subscription by name"
            );
            tx.try_send(request).map_err(|_| ())?;
        }
        *named = wanted;
        Ok(())
    }

    /// Hands one response to the handler and builds the ACK or NACK.
    fn apply(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let DeltaDiscoveryResponse {
            system_version_info, resources, type_url, removed_resources, nonce, ..
        } = response;
        let mut upserts = Vec::with_capacity(resources.len());
        for r in resources {
            match r.resource {
                Some(any) => upserts.push((r.name, r.version, any)),
                // A body-less entry refreshes a TTL; there is nothing to apply.
                None => debug!(type_url, name = r.name, "resource without a body ignored"),
            }
        }
        let versions: Vec<(String, String)> =
            upserts.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect();
        let update = Update {
            type_url: type_url.clone(),
            system_version: system_version_info.clone(),
            upserts,
            removals: removed_resources.clone(),
        };

        let error_detail = match self.handler.handle(update) {
            Ok(()) => {
                let held = self.held.entry(type_url.clone()).or_default();
                for name in &removed_resources {
                    held.remove(name);
                }
                held.extend(versions);
                debug!(type_url, version = system_version_info, "ACK");
                None
            }
            Err(message) => {
                warn!(type_url, version = system_version_info, error = message, "rejecting config (NACK)");
                // INVALID_ARGUMENT, as Envoy reports rejected config.
                Some(rpc::Status { code: 3, message, details: Vec::new() })
            }
        };
        DeltaDiscoveryRequest { type_url, response_nonce: nonce, error_detail, ..Default::default() }
    }
}

/// Resolves when the caller's subscriptions change; never without any.
async fn changed(
    subscriptions: Option<&mut watch::Receiver<BTreeMap<String, BTreeSet<String>>>>,
) -> Option<()> {
    match subscriptions {
        Some(rx) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}

/// A status as `Code: message`, e.g. "PermissionDenied: …" (tonic's own `Display` spells
/// out the code's description instead of its name).
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(" (");
        text.push_str(&error_chain(source));
        text.push(')');
    }
    text
}

/// An error with its sources, so "transport error" says what failed underneath (a refused
/// connection, an unknown CA, a name mismatch).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ProxyIdentity;

    /// The node a client presents is read back by the server as the same identity:
    /// namespace, node name and the `LABELS` struct gateways are chosen by.
    #[test]
    fn the_server_reads_back_the_node_the_client_presents() {
        let mut config = ClientConfig::new("http://weftd:15010", "router~10.1.0.9~gw.istio-system~x", vec![]);
        config.namespace = Some("istio-system".into());
        config.labels = BTreeMap::from([("istio".to_owned(), "ingressgateway".to_owned())]);
        let identity = ProxyIdentity::from_node(Some(&config.node()));
        assert_eq!(identity.namespace.as_deref(), Some("istio-system"));
        assert_eq!(identity.labels, config.labels);
        config.labels.clear();
        let node = config.node();
        assert!(!node.metadata.unwrap().fields.contains_key(LABELS), "no LABELS when there are none");
    }
}
