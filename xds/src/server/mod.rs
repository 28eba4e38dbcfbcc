//! A generic ADS server: the control plane hands it whole snapshots, it serves each proxy
//! the part whose scope matches it, over Envoy's `AggregatedDiscoveryService` in both
//! flavours (state of the world and delta).
//!
//! ```text
//! publish(Snapshot) ─┐
//! update(changes) ───┴▶ debounce ─▶ Prepared (persistent index + change history)
//!                                        │ watch
//!                                        ▼
//!                              one task per stream ─┬─ sotw.rs
//!                                                   └─ delta.rs
//! status() / config_dump() ◀── Registry: per stream and type, a Holding ◀──┘
//! ```
//!
//! Streams share one `Arc` of each prepared snapshot. What a proxy holds is recorded as
//! the generation it was last brought to plus its few differences (`holding.rs`), and a
//! push compares only the names the history says changed since then: a one-endpoint change
//! costs each stream a handful of lookups and no copy, however large the mesh.

mod auth;
mod debounce;
mod delta;
mod grpc;
mod holding;
mod identity;
mod metrics;
mod prepared;
mod snapshot;
mod sotw;
mod status;
mod stream;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

pub use auth::{StreamAuthenticator, StreamCall, StreamCaller, peer_address};
pub use identity::{ISTIO_VERSION, LABELS, NAMESPACE, NODE_NAME, ProxyIdentity};
pub use snapshot::{Scope, ScopedResource, Snapshot, SnapshotError, SnapshotUpdate};
pub use status::{ConfigDump, DumpedResource, Nack, Protocol, ProxyStatus, SyncState, TypeDump, TypeStatus};

pub use grpc::AdsService;

use debounce::{Debouncer, Pending};
use prepared::Prepared;
use status::Registry;
pub(crate) use stream::stopped;

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Quiet period after a publish before it goes live; later publishes restart it.
    pub debounce: Duration,
    /// Longest a publish waits for a quiet period, so constant churn still gets through.
    pub debounce_max: Duration,
    /// Responses queued per stream before the stream waits for the proxy to read.
    pub response_buffer: usize,
    /// Largest request accepted. Delta reconnects list every held resource in
    /// `initial_resource_versions`, which outgrows tonic's 4 MiB default on big meshes.
    pub max_request_bytes: usize,
    /// Large responses (a connecting proxy's full state) in flight at once, across all
    /// streams; more wait for one to be acknowledged. Bounds memory when many proxies
    /// connect together, as after a control plane restart.
    pub large_pushes: usize,
    /// How long a stream holding one of the `large_pushes` permits may leave its push
    /// unanswered (no ACK, no NACK, or not even read) before the server closes it with
    /// DEADLINE_EXCEEDED, so that a few stuck proxies cannot stall every other one.
    pub large_push_ack_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        // 100 ms is istiod's PILOT_DEBOUNCE_AFTER. Its 10 s maximum suits thousands of
        // proxies; a Weft mesh is smaller and a second keeps config changes feeling prompt.
        Self {
            debounce: Duration::from_millis(100),
            debounce_max: Duration::from_secs(1),
            response_buffer: 16,
            max_request_bytes: 64 << 20,
            large_pushes: 4,
            // Generous: a proxy applying a 10k-service state answers within seconds.
            large_push_ack_timeout: Duration::from_secs(30),
        }
    }
}

/// Errors from the server's operator API.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `config_dump` was asked about a proxy that has no open stream.
    #[error(
        "no proxy with id {proxy_id:?} is connected (connected: {connected:?}); `weftctl proxy-status` lists them"
    )]
    UnknownProxy {
        /// The id asked for.
        proxy_id: String,
        /// The ids of the proxies that are connected.
        connected: Vec<String>,
    },
    /// The snapshot was refused before it reached any proxy.
    #[error("snapshot refused: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// State every stream task reads.
#[derive(Debug)]
pub(crate) struct Shared {
    registry: Arc<Registry>,
    live: watch::Receiver<Option<Arc<Prepared>>>,
    shutdown: watch::Receiver<bool>,
    nonces: AtomicU64,
    response_buffer: usize,
    large_pushes: Arc<tokio::sync::Semaphore>,
    large_push_ack_timeout: Duration,
    metrics: metrics::ServerMetrics,
}

impl Shared {
    /// A nonce unique within this server, which is all the protocol asks for.
    fn next_nonce(&self) -> String {
        (self.nonces.fetch_add(1, Ordering::Relaxed) + 1).to_string()
    }
}

/// The ADS server. Cheap to clone; all clones serve the same snapshots.
///
/// Streams end (with `UNAVAILABLE`, so proxies reconnect) when [`XdsServer::shutdown`] is
/// called, or once every clone and every service made by [`XdsServer::service`] is dropped.
#[derive(Clone, Debug)]
pub struct XdsServer {
    shared: Arc<Shared>,
    handles: Arc<Handles>,
    max_request_bytes: usize,
}

/// The sending halves that keep the server's tasks alive.
#[derive(Debug)]
struct Handles {
    pending: Pending,
    signal: watch::Sender<()>,
    shutdown: watch::Sender<bool>,
}

impl XdsServer {
    /// Creates a server and starts its debouncer. Must be called within a Tokio runtime.
    /// Proxies that connect before the first [`publish`](Self::publish) wait for it.
    pub fn new(config: ServerConfig) -> Self {
        let (live_tx, live_rx) = watch::channel(None);
        let (signal_tx, signal_rx) = watch::channel(());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let pending: Pending = Arc::default();
        tokio::spawn(
            Debouncer {
                pending: Arc::clone(&pending),
                signal: signal_rx,
                live: live_tx,
                debounce: config.debounce,
                debounce_max: config.debounce_max.max(config.debounce),
            }
            .run(),
        );
        Self {
            shared: Arc::new(Shared {
                registry: Arc::default(),
                live: live_rx,
                shutdown: shutdown_rx,
                nonces: AtomicU64::new(0),
                response_buffer: config.response_buffer.max(1),
                large_pushes: Arc::new(tokio::sync::Semaphore::new(config.large_pushes.max(1))),
                large_push_ack_timeout: config.large_push_ack_timeout,
                metrics: metrics::ServerMetrics::default(),
            }),
            handles: Arc::new(Handles { pending, signal: signal_tx, shutdown: shutdown_tx }),
            max_request_bytes: config.max_request_bytes,
        }
    }

    /// Replaces the served snapshot. It goes live after the debounce; a later publish in the
    /// same burst replaces it unseen. A snapshot that proxies would reject outright (an
    /// `Any` under the wrong type URL, an empty name) is refused and the previous one kept.
    pub fn publish(&self, snapshot: Snapshot) -> Result<(), ServerError> {
        snapshot.validate()?;
        let mut pending = self.handles.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.full = Some(snapshot);
        pending.updates.clear();
        drop(pending);
        self.handles.signal.send_replace(());
        Ok(())
    }

    /// Changes some names of the last published snapshot (an update before any snapshot
    /// applies to an empty one). Goes live with the debounce like [`publish`](Self::publish);
    /// updates in one burst are applied together, in order. O(changes), however large the
    /// snapshot: this is the path for endpoint churn.
    pub fn update(&self, update: SnapshotUpdate) -> Result<(), ServerError> {
        update.validate()?;
        if update.is_empty() && update.version.is_empty() {
            return Ok(());
        }
        self.handles.pending.lock().unwrap_or_else(PoisonError::into_inner).updates.push(update);
        self.handles.signal.send_replace(());
        Ok(())
    }

    /// The version of the snapshot being served (after debounce), if any.
    pub fn live_version(&self) -> Option<String> {
        self.shared.live.borrow().as_ref().map(|p| p.version.clone())
    }

    /// How many snapshots have gone live; bursts of publishes count once.
    pub fn generation(&self) -> u64 {
        self.shared.live.borrow().as_ref().map_or(0, |p| p.generation)
    }

    /// Every connected stream and how far it got, sorted by connection id.
    pub fn status(&self) -> Vec<ProxyStatus> {
        self.shared.registry.status()
    }

    /// What was last sent to the proxy with this `node.id` (its newest stream).
    pub fn config_dump(&self, proxy_id: &str) -> Result<ConfigDump, ServerError> {
        self.shared.registry.config_dump(proxy_id).ok_or_else(|| ServerError::UnknownProxy {
            proxy_id: proxy_id.to_owned(),
            connected: self.shared.registry.proxy_ids(),
        })
    }

    /// istiod's xDS metrics in Prometheus text (`pilot_xds`, `pilot_xds_pushes`,
    /// `pilot_total_xds_rejects`, `pilot_xds_push_time`, `pilot_xds_config_size_bytes`,
    /// `pilot_proxy_convergence_time`, …).
    pub fn render_metrics(&self, out: &mut String) {
        self.shared.metrics.render(out, &self.shared.registry.by_version());
    }

    /// Ends every stream with `UNAVAILABLE` and refuses new ones, so a tonic server's
    /// graceful shutdown can complete (it waits for open streams).
    pub fn shutdown(&self) {
        self.handles.shutdown.send_replace(true);
    }

    /// The tonic service to mount, serving anyone who connects:
    /// `Server::builder().add_service(xds.service())`. For a port only trusted clients
    /// reach (a local debugging port); otherwise use
    /// [`authenticated_service`](Self::authenticated_service).
    pub fn service(&self) -> AdsService {
        AdsService {
            shared: Arc::clone(&self.shared),
            _handles: Arc::clone(&self.handles),
            max_request_bytes: self.max_request_bytes,
            authenticator: None,
        }
    }

    /// The tonic service with every stream authenticated by `authenticator` before it
    /// starts, and its first request's node checked against the caller
    /// ([`StreamCaller::authorize`]).
    pub fn authenticated_service(&self, authenticator: Arc<dyn StreamAuthenticator>) -> AdsService {
        AdsService { authenticator: Some(authenticator), ..self.service() }
    }
}
