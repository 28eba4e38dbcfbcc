//! A scripted fake Kubernetes API server for testing weftd's Kubernetes source: plain
//! HTTP/1.1 on 127.0.0.1, speaking the list/watch protocol the way kube-rs's watcher needs
//! it, for the kinds Weft reads (see `resources.rs`).
//!
//! - Lists (`GET /api/v1/pods`, `/apis/<group>/<version>/[namespaces/<ns>/]<plural>`) answer a
//!   `<Kind>List` with `metadata.resourceVersion`, honouring `limit`/`continue` (pages of one
//!   snapshot), `resourceVersion` and `resourceVersionMatch=Exact`.
//! - Watches (`?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S`)
//!   answer a chunked stream of JSON lines `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR",
//!   "object":…}`: the changes after N, then live ones. From an N older than the retained
//!   history the stream is a single ERROR event with a `410 Gone` `Status`, which is what
//!   makes a client relist.
//! - Discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`) is served
//!   too, though a client with explicit `ApiResource`s never asks.
//!
//! A test scripts the server between its steps: [`FakeApiServer::apply`] and
//! [`FakeApiServer::delete`] change objects (one global resourceVersion, like etcd),
//! [`FakeApiServer::compact`] forgets history, [`FakeApiServer::bookmark`] sends bookmarks,
//! [`FakeApiServer::fail_kind`] answers 404 for a kind (a missing CRD),
//! [`FakeApiServer::drop_watches`] and [`FakeApiServer::pause_watches`] cut the watch
//! streams, and request counters show what the client asked for.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use weft_tests::kubeapi::FakeApiServer;
//! let (server, url) = FakeApiServer::start().await?;
//! server.apply(serde_json::json!({
//!     "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "bookinfo" },
//! }));
//! // … point a kube::Client at `url` …
//! assert_eq!(server.list_requests("/api/v1/namespaces"), 0);
//! # Ok(()) }
//! ```

mod http;
mod resources;
mod store;

use anyhow::{Context, Result};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::{
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};
use store::Store;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

/// The fake API server; it stops, closing every connection, when dropped.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    url: String,
    accept: tokio::task::JoinHandle<()>,
}

/// What the connection tasks and the test share.
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// True while new watch requests are held unanswered.
    paused: watch::Sender<bool>,
    requests: Mutex<Vec<RequestRecord>>,
}

struct RequestRecord {
    path: String,
    watch: bool,
    uri: String,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn requests(&self) -> MutexGuard<'_, Vec<RequestRecord>> {
        self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, path: &str, watch: bool, uri: &str) {
        self.requests().push(RequestRecord { path: path.to_owned(), watch, uri: uri.to_owned() });
    }
}

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port, empty; returns it and its URL
    /// (`http://127.0.0.1:<port>`). Each connection is served on its own task.
    pub async fn start() -> Result<(FakeApiServer, String)> {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.context("binding the fake API server on 127.0.0.1")?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            paused: watch::Sender::new(false),
            requests: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(serve(listener, shared.clone()));
        Ok((FakeApiServer { shared, url: url.clone(), accept }, url))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates or replaces an object (`apiVersion`, `kind`, `metadata.name` required;
    /// `metadata.namespace` defaults to "default" for namespaced kinds). Sets its
    /// `metadata.resourceVersion` to the next global version and keeps (or makes) its
    /// `metadata.uid`; open watches get an ADDED or MODIFIED event. Returns the new
    /// resourceVersion.
    ///
    /// Panics if the server does not serve the object's kind in its `apiVersion`.
    pub fn apply(&self, object: Value) -> String {
        self.shared.store().apply(object).to_string()
    }

    /// Deletes an object; open watches get a DELETED event. `kind` is a kind ("Pod") or,
    /// where that is ambiguous, `kind.group` ("Gateway.gateway.networking.k8s.io");
    /// `namespace` is ignored for cluster-scoped kinds. Returns whether it existed.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let resource = resources::by_name(kind);
        self.shared.store().delete(resource, namespace, name).is_some()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> String {
        self.shared.store().resource_version().to_string()
    }

    /// Forgets the history, as etcd compaction does: a watch (or an `Exact` list, or a
    /// `continue` page) from any version before now gets `410 Gone`.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Sends a BOOKMARK carrying the current resourceVersion on every open watch that
    /// allows bookmarks.
    pub fn bookmark(&self) {
        self.shared.store().bookmark();
    }

    /// Makes a kind (named as in [`FakeApiServer::delete`]) answer 404 to lists, gets and
    /// watches and vanish from discovery, as if its CRD were not installed; its open
    /// watches end. Its objects are kept, and [`FakeApiServer::serve_kind`] brings it back.
    pub fn fail_kind(&self, kind: &str) {
        self.shared.store().set_failed(resources::by_name(kind), true);
    }

    /// Serves a kind failed by [`FakeApiServer::fail_kind`] again.
    pub fn serve_kind(&self, kind: &str) {
        self.shared.store().set_failed(resources::by_name(kind), false);
    }

    /// Ends every open watch stream cleanly, as the real server does when a watch's
    /// `timeoutSeconds` runs out or it restarts. Clients re-watch from their last version.
    pub fn drop_watches(&self) {
        self.shared.store().drop_watches(None);
    }

    /// Holds new watch requests unanswered until [`FakeApiServer::resume_watches`]; lists
    /// are still answered. With [`FakeApiServer::drop_watches`] this makes a window in which
    /// changes happen while clients are not watching.
    pub fn pause_watches(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Answers the held watch requests and any new ones.
    pub fn resume_watches(&self) {
        self.shared.paused.send_replace(false);
    }

    /// The number of watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.shared.store().open_watches()
    }

    /// How many list requests (GETs without `watch`) were made for `path`, e.g.
    /// "/apis/networking.istio.io/v1/virtualservices".
    pub fn list_requests(&self, path: &str) -> usize {
        self.shared.requests().iter().filter(|r| !r.watch && r.path == path).count()
    }

    /// How many watch requests were made for `path`.
    pub fn watch_requests(&self, path: &str) -> usize {
        self.shared.requests().iter().filter(|r| r.watch && r.path == path).count()
    }

    /// Every request so far, as its path and query, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests().iter().map(|r| r.uri.clone()).collect()
    }

    /// Waits until at least `n` watch streams are open; false on timeout.
    pub async fn wait_for_watches(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.open_watches() < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet), so aborting it ends them all.
        self.accept.abort();
        self.shared.store().drop_watches(None);
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors or similar: let it pass rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(http::handle(&shared, request).await) }
                    });
                    // A client going away mid-request is not the server's problem.
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
