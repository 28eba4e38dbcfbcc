//! The Kubernetes source: one kube-rs watcher per kind Weft reads, forwarding whole
//! objects as [`SourceEvent`]s. Nothing is parsed here; that is shared with the file source.
//!
//! ```text
//!  per kind:  watcher(Api<DynamicObject>) ─▶ pause after errors (backoff) ─┐
//!  …                                                                      ├▶ select_all ─▶ Objects ─▶ SourceEvent
//!  per kind:  watcher(Api<DynamicObject>) ─▶ pause after errors (backoff) ─┘   (per-kind versions,
//!                                                                               Synced once all listed)
//! ```
//!
//! - Every kind goes through one code path, [`DynamicObject`] with an [`ApiResource`] built
//!   from [`WATCHED_KINDS`]; no typed k8s-openapi structs, since the objects are forwarded
//!   as JSON. The version watched per kind is in that table.
//! - Watcher events map to source events: `Apply` and a list's `InitApply` → Upsert,
//!   `Delete` → Delete; a list's `InitDone` (the first list, and every relist, e.g. after
//!   `410 Gone`) → Deletes of what the kind no longer has, and, once every kind has been
//!   listed, Synced (`kube/objects.rs`).
//! - A kind the server does not serve (404: its CRD is not installed) or may not be read
//!   (403) is logged once and retried with backoff; the other kinds carry on.

mod objects;

use super::SourceEvent;
use ::kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::watcher::{self, Event, watcher},
};
use futures::{Stream, StreamExt};
use objects::Objects;
use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    time::Duration,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// A kind the source watches, and the version it asks the API server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedKind {
    /// API group, "" for core.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource's plural name, its path segment.
    pub plural: &'static str,
    pub namespaced: bool,
}

impl WatchedKind {
    /// e.g. "v1", "networking.istio.io/v1".
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The cluster-wide collection, e.g. "/apis/networking.istio.io/v1/virtualservices".
    pub fn path(&self) -> String {
        let root = if self.group.is_empty() { "/api".to_owned() } else { format!("/apis/{}", self.group) };
        format!("{root}/{}/{}", self.version, self.plural)
    }

    fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

impl fmt::Display for WatchedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() { f.write_str(self.kind) } else { write!(f, "{}.{}", self.kind, self.group) }
    }
}

/// Istio's networking kinds. The API server serves each object in v1, v1beta1 and v1alpha3
/// alike (one schema), so watching one version sees them all; v1 needs Istio 1.22 or later.
const ISTIO_NETWORKING: &str = "v1";
/// Istio's security kinds (v1 and v1beta1 served alike; v1 since Istio 1.22).
const ISTIO_SECURITY: &str = "v1";
/// Gateway API's Gateway and HTTPRoute (v1 since Gateway API 1.0).
const GATEWAY_API: &str = "v1";
/// Gateway API's ReferenceGrant: the standard channel serves v1beta1 only (base chart's
/// crds-gateway-api.yaml too).
const GATEWAY_API_BETA: &str = "v1beta1";

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> WatchedKind {
    WatchedKind { group, version, kind, plural, namespaced }
}

/// What weftd watches, with the version of each.
pub const WATCHED_KINDS: &[WatchedKind] = &[
    kind("", "v1", "Namespace", "namespaces", false),
    kind("", "v1", "Pod", "pods", true),
    kind("", "v1", "Service", "services", true),
    kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true),
    kind("networking.istio.io", ISTIO_NETWORKING, "VirtualService", "virtualservices", true),
    kind("networking.istio.io", ISTIO_NETWORKING, "DestinationRule", "destinationrules", true),
    kind("networking.istio.io", ISTIO_NETWORKING, "Gateway", "gateways", true),
    kind("networking.istio.io", ISTIO_NETWORKING, "ServiceEntry", "serviceentries", true),
    kind("networking.istio.io", ISTIO_NETWORKING, "Sidecar", "sidecars", true),
    kind("networking.istio.io", ISTIO_NETWORKING, "WorkloadEntry", "workloadentries", true),
    kind("security.istio.io", ISTIO_SECURITY, "AuthorizationPolicy", "authorizationpolicies", true),
    kind("security.istio.io", ISTIO_SECURITY, "PeerAuthentication", "peerauthentications", true),
    kind("gateway.networking.k8s.io", GATEWAY_API, "Gateway", "gateways", true),
    kind("gateway.networking.k8s.io", GATEWAY_API, "HTTPRoute", "httproutes", true),
    kind("gateway.networking.k8s.io", GATEWAY_API_BETA, "ReferenceGrant", "referencegrants", true),
];

/// Errors building the source's Kubernetes client.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    /// Neither a kubeconfig nor a pod's service account was found.
    #[error(
        "cannot find Kubernetes credentials: no kubeconfig ($KUBECONFIG, ~/.kube/config) and not running \
         in a pod; to run without Kubernetes, give weftd a YAML config directory"
    )]
    NoCredentials(#[source] ::kube::config::InferConfigError),
    /// The API server URL given does not parse.
    #[error("invalid Kubernetes API server URL {url:?}")]
    InvalidUrl {
        url: String,
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    /// The API server speaks https and kube-rs was built without a TLS stack.
    #[error(
        "cannot reach the Kubernetes API server at {url} over https: weftd was built without a TLS stack \
         for kube (enable kube's `rustls-tls` feature)"
    )]
    NoTls { url: String },
    /// kube-rs could not build a client from the configuration.
    #[error("cannot build a Kubernetes client for {url}")]
    Client {
        url: String,
        #[source]
        source: ::kube::Error,
    },
}

/// The Kubernetes source. Build it, then [`KubeSource::run`] it.
pub struct KubeSource {
    client: Client,
    kinds: Vec<WatchedKind>,
    backoff: Backoff,
}

impl KubeSource {
    /// A source on a client the caller made.
    pub fn new(client: Client) -> KubeSource {
        KubeSource {
            client,
            kinds: WATCHED_KINDS.to_vec(),
            backoff: Backoff::new(Duration::from_millis(800), Duration::from_secs(30)),
        }
    }

    /// A source with the credentials of the environment: the kubeconfig (`$KUBECONFIG`,
    /// `~/.kube/config`), else the pod's service account.
    pub async fn try_default() -> Result<KubeSource, KubeSourceError> {
        let config = ::kube::Config::infer().await.map_err(KubeSourceError::NoCredentials)?;
        Self::from_config(config)
    }

    /// A source on the API server at `url` with no credentials (`http://127.0.0.1:<port>`
    /// of a test server, or `kubectl proxy`).
    pub fn from_url(url: &str) -> Result<KubeSource, KubeSourceError> {
        let uri =
            url.parse().map_err(|source| KubeSourceError::InvalidUrl { url: url.to_owned(), source })?;
        Self::from_config(::kube::Config::new(uri))
    }

    fn from_config(config: ::kube::Config) -> Result<KubeSource, KubeSourceError> {
        let url = config.cluster_url.to_string();
        match Client::try_from(config) {
            Ok(client) => Ok(Self::new(client)),
            Err(::kube::Error::TlsRequired) => Err(KubeSourceError::NoTls { url }),
            Err(source) => Err(KubeSourceError::Client { url, source }),
        }
    }

    /// The source's client, for weftd's other calls to the same API server (the CA
    /// Secret, TokenReview).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Sets the pause after a kind's watch fails: `initial`, doubling up to `max`, back to
    /// `initial` once the kind works again. Defaults: 800 ms to 30 s, as kube-rs's.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> KubeSource {
        self.backoff = Backoff::new(initial, max);
        self
    }

    /// Watches `kinds` instead of [`WATCHED_KINDS`].
    pub fn with_kinds(mut self, kinds: &[WatchedKind]) -> KubeSource {
        self.kinds = kinds.to_vec();
        self
    }

    pub fn kinds(&self) -> &[WatchedKind] {
        &self.kinds
    }

    /// Watches until `events`' receiver is dropped (or the future is). Sends each listed
    /// object as an Upsert as it arrives, then [`SourceEvent::Synced`] once every kind has
    /// been listed or refused by the server, then Upserts and Deletes; a relist sends what
    /// changed meanwhile.
    pub async fn run(self, events: mpsc::Sender<SourceEvent>) {
        let kinds: Vec<String> = self.kinds.iter().map(|kind| format!("{kind}/{}", kind.version)).collect();
        info!(kinds = %kinds.join(","), "watching Kubernetes");
        let watches = self
            .kinds
            .iter()
            .enumerate()
            .map(|(index, &kind)| watch_kind(self.client.clone(), index, kind, self.backoff).boxed());
        let mut watches = futures::stream::select_all(watches);
        let mut objects = Objects::new(&self.kinds);
        let mut failing: Vec<Option<Failure>> = vec![None; self.kinds.len()];

        loop {
            let (index, event) = tokio::select! {
                () = events.closed() => return,
                next = watches.next() => match next {
                    Some(next) => next,
                    None => return,
                },
            };
            let kind = &self.kinds[index];
            // At most one event, but for the end of a list: the objects it no longer has.
            let out: Vec<SourceEvent> = match event {
                Ok(event) => {
                    if !matches!(event, Event::Init) && failing[index].take().is_some() {
                        info!(%kind, "watching again after errors");
                    }
                    match event {
                        Event::Init => {
                            debug!(%kind, "listing");
                            objects.init(index);
                            Vec::new()
                        }
                        Event::InitApply(object) => objects.init_apply(index, object).into_iter().collect(),
                        Event::InitDone => objects.init_done(index),
                        Event::Apply(object) => objects.apply(index, object).into_iter().collect(),
                        Event::Delete(object) => objects.delete(index, object).into_iter().collect(),
                    }
                }
                Err(error) => {
                    report(kind, &error, &mut failing[index]);
                    match error {
                        watcher::Error::InitialListFailed(::kube::Error::Api(_)) => {
                            objects.list_refused(index).into_iter().collect()
                        }
                        _ => Vec::new(),
                    }
                }
            };
            for out in out {
                if events.send(out).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One kind's watcher, paused after each error. (kube-rs's own `StreamBackoff` resets on
/// every `Ok`, and the watcher yields `Ok(Init)` before each list attempt, so a kind whose
/// list keeps failing would be retried at the shortest pause forever.)
fn watch_kind(
    client: Client,
    index: usize,
    kind: WatchedKind,
    backoff: Backoff,
) -> impl Stream<Item = (usize, watcher::Result<Event<DynamicObject>>)> + Send {
    let api = Api::<DynamicObject>::all_with(client, &kind.api_resource());
    let events = watcher(api, watcher::Config::default()).boxed();
    futures::stream::unfold((events, backoff, None), move |(mut events, mut backoff, pause)| async move {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        let event = events.next().await?;
        let pause = match &event {
            Err(_) => Some(backoff.next_pause()),
            Ok(Event::Init) => None,
            Ok(_) => {
                backoff.reset();
                None
            }
        };
        Some(((index, event), (events, backoff, pause)))
    })
}

/// What is wrong with a kind, so that a streak of the same failure is logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    NotServed,
    Forbidden,
    Other,
}

fn report(kind: &WatchedKind, error: &watcher::Error, failing: &mut Option<Failure>) {
    let status = match error {
        watcher::Error::InitialListFailed(::kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(::kube::Error::Api(status))
        | watcher::Error::WatchFailed(::kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    };
    let failure = match status {
        // The watch fell out of the server's history: the watcher relists. Routine.
        Some(410) => {
            debug!(%kind, "resourceVersion expired (410 Gone), relisting");
            return;
        }
        Some(404) => Failure::NotServed,
        Some(403) => Failure::Forbidden,
        _ => Failure::Other,
    };
    let first = *failing != Some(failure);
    *failing = Some(failure);
    if !first {
        debug!(%kind, %error, "still failing, retrying with backoff");
        return;
    }
    let path = kind.path();
    match failure {
        Failure::NotServed => warn!(
            %kind, %path,
            "the API server does not serve this kind (is its CRD installed?); watching the others, retrying with backoff"
        ),
        Failure::Forbidden => warn!(
            %kind, %path, %error,
            "not allowed to list/watch this kind: grant weftd's service account list and watch on it; retrying with backoff"
        ),
        Failure::Other => warn!(%kind, %path, %error, "watch failed, retrying with backoff"),
    }
}

/// Exponential backoff with up to 25 % jitter, so that many kinds (or weftd replicas)
/// failing together do not retry in lockstep.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial), next: initial }
    }

    fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        // RandomState's keys are random per instance: a cheap source of jitter.
        let fraction = (RandomState::new().hash_one(0u8) % 1024) as u32;
        pause + pause / 4 * fraction / 1024
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let pauses: Vec<Duration> = (0..4).map(|_| backoff.next_pause()).collect();
        for (pause, base) in pauses.iter().zip([100, 200, 350, 350]) {
            let base = Duration::from_millis(base);
            assert!(*pause >= base && *pause <= base + base / 4, "{pause:?} for {base:?}");
        }
        backoff.reset();
        assert!(backoff.next_pause() < Duration::from_millis(126));
    }

    #[test]
    fn table_paths_and_versions() {
        let vs = WATCHED_KINDS.iter().find(|k| k.kind == "VirtualService").unwrap();
        assert_eq!(vs.path(), "/apis/networking.istio.io/v1/virtualservices");
        assert_eq!(vs.api_version(), "networking.istio.io/v1");
        assert_eq!(WATCHED_KINDS[0].path(), "/api/v1/namespaces");
        assert_eq!(WATCHED_KINDS[0].api_version(), "v1");
        let gateways: Vec<String> =
            WATCHED_KINDS.iter().filter(|k| k.kind == "Gateway").map(|k| k.to_string()).collect();
        assert_eq!(gateways, ["Gateway.networking.istio.io", "Gateway.gateway.networking.k8s.io"]);
    }
}
