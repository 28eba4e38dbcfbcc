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
//! - Writes, for what weftd writes (its CA Secret, the root ConfigMap): `POST` to a
//!   collection creates (409 `AlreadyExists` if the name is taken), `PUT` to an object
//!   replaces it (409 `Conflict` on a stale `metadata.resourceVersion`). For weftd's waypoint
//!   controller and weftctl (`writes.rs`): `PATCH` (JSON merge patch, server-side apply),
//!   the `/status` subresource, and `DELETE` with the garbage collector's cascade to the
//!   objects an ownerReference ties to the deleted one.
//! - Validating admission webhooks (`admission.rs`): a create or update that a stored
//!   ValidatingWebhookConfiguration matches is sent to its webhooks first, over TLS, and
//!   refused with their message, as kube-apiserver does; `dryRun=All` admits and stores
//!   nothing. [`FakeApiServer::route_service`] says where a webhook's Service is.
//! - TokenReview (`POST /apis/authentication.k8s.io/v1/tokenreviews`) answers from the tokens
//!   a test registers with [`FakeApiServer::add_token`], as the real server answers for
//!   service-account tokens: the user, groups and pod extras, and the audiences the token
//!   matched; an unknown token or one for other audiences is not authenticated.
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

pub mod admission;
mod http;
mod patch;
mod registry;
mod resources;
mod store;
mod writes;

use anyhow::{Context, Result};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
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
    /// Tokens TokenReview knows.
    tokens: Mutex<HashMap<String, TokenUser>>,
    /// Where a Service (namespace, name) is reached, for calling webhooks.
    services: Mutex<HashMap<(String, String), SocketAddr>>,
}

struct RequestRecord {
    method: String,
    path: String,
    watch: bool,
    uri: String,
}

/// The audience of a token issued for the API server itself (a legacy or default
/// service-account token).
pub const API_SERVER_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Who a token registered with [`FakeApiServer::add_token`] belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUser {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// e.g. `authentication.kubernetes.io/pod-name`.
    pub extra: BTreeMap<String, Vec<String>>,
    /// What the token was issued for; a review for other audiences fails.
    pub audiences: Vec<String>,
}

impl TokenUser {
    /// A service account's token, for the API server's own audience (as a legacy token).
    pub fn service_account(namespace: &str, name: &str) -> TokenUser {
        TokenUser {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: format!("uid-{namespace}-{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            extra: BTreeMap::new(),
            audiences: vec![API_SERVER_AUDIENCE.into()],
        }
    }

    /// A projected token bound to a pod: the review names the pod, as for a real one.
    pub fn bound_to_pod(mut self, pod_name: &str, pod_uid: &str) -> TokenUser {
        self.extra.insert("authentication.kubernetes.io/pod-name".into(), vec![pod_name.into()]);
        self.extra.insert("authentication.kubernetes.io/pod-uid".into(), vec![pod_uid.into()]);
        self
    }

    /// Issued for these audiences instead.
    pub fn for_audiences(mut self, audiences: &[&str]) -> TokenUser {
        self.audiences = audiences.iter().map(|a| (*a).to_owned()).collect();
        self
    }
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The address `namespace/name`'s Service is reached at, if the test routed it.
    fn route(&self, namespace: &str, name: &str) -> Option<SocketAddr> {
        let services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        services.get(&(namespace.to_owned(), name.to_owned())).copied()
    }

    fn requests(&self) -> MutexGuard<'_, Vec<RequestRecord>> {
        self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, method: &str, path: &str, watch: bool, uri: &str) {
        self.requests().push(RequestRecord {
            method: method.to_owned(),
            path: path.to_owned(),
            watch,
            uri: uri.to_owned(),
        });
    }

    /// Answers a TokenReview as the API server does for service-account tokens.
    fn review(&self, review: &Value) -> Value {
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        let requested: Vec<String> = match review["spec"]["audiences"].as_array() {
            Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => vec![API_SERVER_AUDIENCE.to_owned()],
        };
        let user = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(token).cloned();
        let status = match user {
            None => serde_json::json!({ "authenticated": false, "error": "[invalid bearer token]" }),
            Some(user) => {
                let matched: Vec<&String> = user.audiences.iter().filter(|a| requested.contains(a)).collect();
                if matched.is_empty() {
                    serde_json::json!({
                        "authenticated": false,
                        "error": format!("[invalid bearer token, token audiences {:?} is invalid for the target audiences {requested:?}]", user.audiences),
                    })
                } else {
                    serde_json::json!({
                        "authenticated": true,
                        "user": { "username": user.username, "uid": user.uid, "groups": user.groups, "extra": user.extra },
                        "audiences": matched,
                    })
                }
            }
        };
        serde_json::json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": { "creationTimestamp": null },
            "spec": review["spec"],
            "status": status,
        })
    }
}

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port, empty; returns it and its URL
    /// (`http://127.0.0.1:<port>`). Each connection is served on its own task.
    pub async fn start() -> Result<(FakeApiServer, String)> {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.context("binding the fake API server on 127.0.0.1")?;
        Self::serve_on(listener)
    }

    /// Starts a server on a listener the caller bound, e.g. in a bed node's network
    /// namespace (a socket stays in the namespace it was made in), so that processes on the
    /// bed reach it; the URL names the listener's address.
    pub async fn start_on(listener: std::net::TcpListener) -> Result<(FakeApiServer, String)> {
        listener.set_nonblocking(true).context("a non-blocking listener")?;
        Self::serve_on(TcpListener::from_std(listener).context("the fake API server's listener")?)
    }

    fn serve_on(listener: TcpListener) -> Result<(FakeApiServer, String)> {
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            paused: watch::Sender::new(false),
            requests: Mutex::new(Vec::new()),
            tokens: Mutex::new(HashMap::new()),
            services: Mutex::new(HashMap::new()),
        });
        let accept = tokio::spawn(serve(listener, shared.clone()));
        Ok((FakeApiServer { shared, url: url.clone(), accept }, url))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates or replaces an object (`apiVersion`, `kind`, `metadata.name` required;
    /// `metadata.namespace` defaults to "default" for namespaced kinds). Sets its
    /// `metadata.resourceVersion` to the next global version and keeps its `metadata.uid`
    /// (the stored object's, else the one given, else a new one); a Service of type
    /// ClusterIP without `spec.clusterIP` gets one if the test asked for that
    /// ([`FakeApiServer::set_cluster_ip_allocation`]). Open watches get an ADDED or
    /// MODIFIED event. Returns the new resourceVersion.
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

    /// Gives a Service of type ClusterIP created without `spec.clusterIP` an address, as the
    /// real server does, from 198.19.128.0/17 (kept across updates). Off by default: the
    /// in-process tests and the control plane benchmark count the Address resources of
    /// a mesh in which the Services weftd makes for waypoints have no VIP (and so are no
    /// Address resources); a test that runs those waypoints turns it on.
    pub fn set_cluster_ip_allocation(&self, on: bool) {
        self.shared.store().allocate_cluster_ips = on;
    }

    /// Deletes an object and what it owns, as `kubectl delete` does (background
    /// propagation: the garbage collector follows ownerReferences). Returns whether it
    /// existed.
    pub fn delete_with_dependents(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let resource = resources::by_name(kind);
        self.shared.store().delete_cascading(resource, namespace, name, false).is_some()
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

    /// Makes TokenReview accept `token` as `user`'s.
    pub fn add_token(&self, token: &str, user: TokenUser) {
        self.shared.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(token.to_owned(), user);
    }

    /// Routes Service `namespace/name` to `address`, as kube-proxy would route its port:
    /// webhooks whose `clientConfig.service` names it are called there (see `admission.rs`).
    pub fn route_service(&self, namespace: &str, name: &str, address: SocketAddr) {
        let mut services = self.shared.services.lock().unwrap_or_else(|p| p.into_inner());
        services.insert((namespace.to_owned(), name.to_owned()), address);
    }

    /// The object stored under `kind` (as in [`FakeApiServer::delete`]), namespace and name,
    /// as a GET in its preferred version would answer.
    pub fn object(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let index = resources::by_name(kind);
        let r = &resources::RESOURCES[index];
        let namespace = r.namespaced.then(|| namespace.unwrap_or("default"));
        self.shared.store().get(index, r.versions[0], namespace, name)
    }

    /// How many list requests (GETs without `watch`) were made for `path`, e.g.
    /// "/apis/networking.istio.io/v1/virtualservices".
    pub fn list_requests(&self, path: &str) -> usize {
        self.shared.requests().iter().filter(|r| r.method == "GET" && !r.watch && r.path == path).count()
    }

    /// How many requests with `method` (e.g. "POST") were made for `path`.
    pub fn requests_of(&self, method: &str, path: &str) -> usize {
        self.shared.requests().iter().filter(|r| r.method == method && r.path == path).count()
    }

    /// How many watch requests were made for `path`.
    pub fn watch_requests(&self, path: &str) -> usize {
        self.shared.requests().iter().filter(|r| r.watch && r.path == path).count()
    }

    /// Every request so far, as its path and query (preceded by the method when it is not
    /// GET), in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests()
            .iter()
            .map(|r| if r.method == "GET" { r.uri.clone() } else { format!("{} {}", r.method, r.uri) })
            .collect()
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
