//! The Kubernetes source against the scripted fake API server (`weft_tests::kubeapi`) over
//! real sockets on 127.0.0.1: initial list streamed then Synced, changes, relist after
//! `410 Gone` sending only what changed, a kind the server does not serve, bookmarks.

use serde_json::{Value, json};
use std::{collections::BTreeSet, time::Duration};
use tokio::{sync::mpsc, task::JoinHandle, time::timeout};
use weft_controlplane::source::{
    ObjectKey, Origin, RawObject, SourceEvent,
    kube::{KubeSource, WATCHED_KINDS},
};
use weft_tests::kubeapi::FakeApiServer;

/// Long enough for any step on a loaded machine; a passing test never waits this long.
const PATIENCE: Duration = Duration::from_secs(20);

const VIRTUAL_SERVICES: &str = "/apis/networking.istio.io/v1/virtualservices";
const HTTP_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";

struct Source {
    events: mpsc::Receiver<SourceEvent>,
    task: JoinHandle<()>,
}

impl Source {
    /// Runs a source on `server` with short backoff, so that retries show up quickly.
    fn start(server: &FakeApiServer) -> Source {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("weft_controlplane=debug")
            .try_init();
        let source = KubeSource::from_url(server.url())
            .expect("a source on the fake server")
            .with_backoff(Duration::from_millis(20), Duration::from_millis(200));
        let (tx, events) = mpsc::channel(64);
        Source { events, task: tokio::spawn(source.run(tx)) }
    }

    async fn next(&mut self) -> SourceEvent {
        timeout(PATIENCE, self.events.recv())
            .await
            .expect("no event from the source in time")
            .expect("the source ended")
    }

    /// The initial lists: every object as an Upsert, then Synced.
    async fn initial_state(&mut self) -> Vec<RawObject> {
        let mut objects = Vec::new();
        loop {
            match self.next().await {
                SourceEvent::Upsert(object) => objects.push(object),
                SourceEvent::Synced => return objects,
                other => panic!("expected Upserts then Synced, got {other:?}"),
            }
        }
    }

    async fn next_upsert(&mut self) -> RawObject {
        match self.next().await {
            SourceEvent::Upsert(object) => object,
            other => panic!("expected an Upsert, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for a while.
    async fn assert_quiet(&mut self, wait: Duration) {
        if let Ok(event) = timeout(wait, self.events.recv()).await {
            panic!("expected no event, got {event:?}");
        }
    }
}

fn key(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey {
        group: group.into(),
        kind: kind.into(),
        namespace: namespace.map(Into::into),
        name: name.into(),
    }
}

fn keys(objects: &[RawObject]) -> BTreeSet<String> {
    objects.iter().map(|o| o.key.to_string()).collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn virtual_service(name: &str, host: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": { "name": name, "namespace": "bookinfo" },
        "spec": { "hosts": [host], "http": [{ "route": [{ "destination": { "host": host } }] }] },
    })
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "bookinfo", "labels": { "app": "reviews" } },
        "spec": { "nodeName": "node-1", "containers": [{ "name": "reviews", "image": "reviews:v1" }] },
        "status": { "podIP": "10.0.0.7" },
    })
}

fn http_route(name: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": { "name": name, "namespace": "bookinfo" },
        "spec": { "parentRefs": [{ "name": "reviews", "kind": "Service", "group": "" }] },
    })
}

#[tokio::test]
async fn initial_lists_stream_in_then_synced() {
    let (server, _url) = FakeApiServer::start().await.unwrap();
    let namespace_rv = server.apply(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": "bookinfo", "labels": { "istio.io/dataplane-mode": "ambient" } },
    }));
    server.apply(pod("reviews-v1-abc"));
    server.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "reviews", "namespace": "bookinfo" },
        "spec": { "selector": { "app": "reviews" }, "ports": [{ "port": 9080 }] },
    }));
    server.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "reviews-x1", "namespace": "bookinfo", "labels": { "kubernetes.io/service-name": "reviews" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["10.0.0.7"] }],
    }));
    let vs_rv = server.apply(virtual_service("reviews", "reviews"));
    // Applied as v1beta1: the server serves it in v1, the version the source watches.
    server.apply(json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
        "metadata": { "name": "reviews", "namespace": "bookinfo" },
        "spec": { "host": "reviews", "subsets": [{ "name": "v1", "labels": { "version": "v1" } }] },
    }));
    server.apply(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": { "name": "allow-productpage", "namespace": "bookinfo" },
        "spec": { "action": "ALLOW", "rules": [{ "from": [{ "source": { "principals": ["cluster.local/ns/bookinfo/sa/productpage"] } }] }] },
    }));
    server.apply(http_route("reviews"));
    // Gateway API's standard channel serves ReferenceGrant in v1beta1 only.
    server.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": { "name": "from-bookinfo", "namespace": "ratings" },
        "spec": {
            "from": [{ "group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "bookinfo" }],
            "to": [{ "group": "", "kind": "Service" }],
        },
    }));

    let mut source = Source::start(&server);
    let reset = source.initial_state().await;

    let expected = [
        (key("", "Namespace", None, "bookinfo"), "v1"),
        (key("", "Pod", Some("bookinfo"), "reviews-v1-abc"), "v1"),
        (key("", "Service", Some("bookinfo"), "reviews"), "v1"),
        (key("discovery.k8s.io", "EndpointSlice", Some("bookinfo"), "reviews-x1"), "discovery.k8s.io/v1"),
        (key("networking.istio.io", "VirtualService", Some("bookinfo"), "reviews"), "networking.istio.io/v1"),
        (
            key("networking.istio.io", "DestinationRule", Some("bookinfo"), "reviews"),
            "networking.istio.io/v1",
        ),
        (
            key("security.istio.io", "AuthorizationPolicy", Some("bookinfo"), "allow-productpage"),
            "security.istio.io/v1",
        ),
        (
            key("gateway.networking.k8s.io", "HTTPRoute", Some("bookinfo"), "reviews"),
            "gateway.networking.k8s.io/v1",
        ),
        (
            key("gateway.networking.k8s.io", "ReferenceGrant", Some("ratings"), "from-bookinfo"),
            "gateway.networking.k8s.io/v1beta1",
        ),
    ];
    assert_eq!(reset.len(), expected.len(), "{:?}", keys(&reset));
    for (key, api_version) in &expected {
        let object = reset
            .iter()
            .find(|o| &o.key == key)
            .unwrap_or_else(|| panic!("{key} missing from the initial state"));
        assert_eq!(object.api_version, *api_version, "{key}");
        // The whole object, with its type set even where the list left it out.
        let value = object.to_value().unwrap();
        assert_eq!(value["apiVersion"], *api_version, "{key}");
        assert_eq!(value["kind"], key.kind.as_str(), "{key}");
        assert_eq!(value["metadata"]["name"], key.name.as_str(), "{key}");
    }

    let namespace = reset.iter().find(|o| o.key.kind == "Namespace").unwrap();
    assert_eq!(namespace.to_value().unwrap()["metadata"]["labels"]["istio.io/dataplane-mode"], "ambient");
    assert_eq!(namespace.origin, Origin::Kubernetes { resource_version: namespace_rv });
    let vs = reset.iter().find(|o| o.key.kind == "VirtualService").unwrap();
    assert_eq!(vs.to_value().unwrap()["spec"]["hosts"], json!(["reviews"]));
    assert_eq!(vs.origin, Origin::Kubernetes { resource_version: vs_rv });
    let slice = reset.iter().find(|o| o.key.kind == "EndpointSlice").unwrap();
    assert_eq!(slice.to_value().unwrap()["endpoints"][0]["addresses"], json!(["10.0.0.7"]));

    // One list per kind, at the version in the table.
    for kind in WATCHED_KINDS {
        assert_eq!(server.list_requests(&kind.path()), 1, "{}", kind.path());
    }
    source.task.abort();
}

#[tokio::test]
async fn changes_after_start_arrive_as_upserts_and_deletes_in_order() {
    let (server, _url) = FakeApiServer::start().await.unwrap();
    let mut source = Source::start(&server);
    assert!(source.initial_state().await.is_empty());

    let created = server.apply(virtual_service("reviews", "reviews"));
    let modified = server.apply(virtual_service("reviews", "reviews.bookinfo.svc.cluster.local"));
    server.delete("VirtualService", Some("bookinfo"), "reviews");

    let vs = key("networking.istio.io", "VirtualService", Some("bookinfo"), "reviews");
    let first = source.next_upsert().await;
    assert_eq!(first.key, vs);
    assert_eq!(first.api_version, "networking.istio.io/v1");
    assert_eq!(first.origin, Origin::Kubernetes { resource_version: created });
    assert_eq!(first.to_value().unwrap()["spec"]["hosts"], json!(["reviews"]));
    let second = source.next_upsert().await;
    assert_eq!(second.origin, Origin::Kubernetes { resource_version: modified });
    assert_eq!(second.to_value().unwrap()["spec"]["hosts"], json!(["reviews.bookinfo.svc.cluster.local"]));
    match source.next().await {
        SourceEvent::Delete(key) => assert_eq!(key, vs),
        other => panic!("expected a Delete, got {other:?}"),
    }

    // Another kind, on its own watch.
    server.apply(pod("ratings-v1-xyz"));
    let pod = source.next_upsert().await;
    assert_eq!(pod.key, key("", "Pod", Some("bookinfo"), "ratings-v1-xyz"));
    assert_eq!(pod.to_value().unwrap()["status"]["podIP"], "10.0.0.7");

    // The source stops once nobody listens.
    drop(source.events);
    timeout(PATIENCE, source.task).await.expect("the source did not stop").unwrap();
}

#[tokio::test]
async fn gone_watch_relists_and_sends_only_what_changed_meanwhile() {
    let (server, _url) = FakeApiServer::start().await.unwrap();
    server.apply(virtual_service("reviews", "reviews"));
    server.apply(virtual_service("ratings", "ratings"));
    server.apply(pod("reviews-v1-abc"));
    let mut source = Source::start(&server);
    assert_eq!(source.initial_state().await.len(), 3);
    assert!(
        server.wait_for_watches(WATCHED_KINDS.len(), PATIENCE).await,
        "the source did not start watching"
    );
    let lists_before = server.list_requests(VIRTUAL_SERVICES);

    // The watches break and stay down while "reviews" is deleted, "details" is created and
    // the history is compacted: resuming from the old version now answers 410 Gone.
    server.pause_watches();
    server.drop_watches();
    server.delete("VirtualService", Some("bookinfo"), "reviews");
    server.apply(virtual_service("details", "details"));
    server.compact();
    server.resume_watches();

    // Every kind relists. What did not change ("ratings", the pod) is not sent again;
    // "details" comes as an Upsert, "reviews" as a Delete once the list is complete.
    // Watching goes on from the relist: "productpage" comes last.
    let mut seen = BTreeSet::new();
    let mut relisted = false;
    loop {
        if !relisted && server.list_requests(VIRTUAL_SERVICES) > lists_before {
            relisted = true;
            server.apply(virtual_service("productpage", "productpage"));
        }
        let Ok(event) = timeout(Duration::from_millis(50), source.events.recv()).await else { continue };
        let event = event.expect("the source ended");
        let done = matches!(&event, SourceEvent::Upsert(o) if o.key.name == "productpage");
        seen.insert(match event {
            SourceEvent::Upsert(object) => format!("upsert {}", object.key),
            SourceEvent::Delete(key) => format!("delete {key}"),
            other => panic!("expected only Upserts and Deletes, got {other:?}"),
        });
        if done {
            break;
        }
    }
    assert_eq!(
        seen,
        set(&[
            "delete VirtualService/bookinfo/reviews",
            "upsert VirtualService/bookinfo/details",
            "upsert VirtualService/bookinfo/productpage",
        ])
    );
    source.assert_quiet(Duration::from_millis(300)).await;
    source.task.abort();
}

#[tokio::test]
async fn a_kind_the_server_does_not_serve_does_not_stop_the_others() {
    let (server, _url) = FakeApiServer::start().await.unwrap();
    // The Gateway API CRDs are not installed (yet).
    server.fail_kind("HTTPRoute");
    server.apply(http_route("reviews"));
    server.apply(virtual_service("reviews", "reviews"));

    let mut source = Source::start(&server);
    assert_eq!(keys(&source.initial_state().await), set(&["VirtualService/bookinfo/reviews"]));
    server.apply(virtual_service("ratings", "ratings"));
    assert_eq!(source.next_upsert().await.key.name, "ratings");

    // Retried with backoff meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.list_requests(HTTP_ROUTES) >= 2, "{:?}", server.requests());

    // Installed: its objects arrive.
    server.serve_kind("HTTPRoute");
    let route = source.next_upsert().await;
    assert_eq!(route.key, key("gateway.networking.k8s.io", "HTTPRoute", Some("bookinfo"), "reviews"));
    assert_eq!(route.key.group, "gateway.networking.k8s.io");
    assert_eq!(route.api_version, "gateway.networking.k8s.io/v1");

    // And then changes to it.
    server.apply(http_route("ratings"));
    assert_eq!(
        source.next_upsert().await.key,
        key("gateway.networking.k8s.io", "HTTPRoute", Some("bookinfo"), "ratings")
    );
    source.task.abort();
}

#[tokio::test]
async fn bookmarks_produce_no_events_and_spare_a_relist() {
    let (server, _url) = FakeApiServer::start().await.unwrap();
    server.apply(pod("reviews-v1-abc"));
    let mut source = Source::start(&server);
    assert_eq!(source.initial_state().await.len(), 1);
    assert!(
        server.wait_for_watches(WATCHED_KINDS.len(), PATIENCE).await,
        "the source did not start watching"
    );

    // A change elsewhere moves the global resourceVersion past what most watches last saw.
    server.apply(virtual_service("reviews", "reviews"));
    assert_eq!(source.next_upsert().await.key.kind, "VirtualService");
    server.bookmark();
    server.bookmark();
    source.assert_quiet(Duration::from_millis(500)).await;

    // The bookmarks moved every watch to the current version, so resuming after a
    // compaction needs no relist.
    let lists: Vec<usize> = WATCHED_KINDS.iter().map(|kind| server.list_requests(&kind.path())).collect();
    server.compact();
    server.drop_watches();
    assert!(server.wait_for_watches(WATCHED_KINDS.len(), PATIENCE).await, "the source did not watch again");
    source.assert_quiet(Duration::from_millis(300)).await;
    let after: Vec<usize> = WATCHED_KINDS.iter().map(|kind| server.list_requests(&kind.path())).collect();
    assert_eq!(lists, after, "relisted: {:?}", server.requests());

    server.apply(pod("ratings-v1-xyz"));
    assert_eq!(source.next_upsert().await.key.name, "ratings-v1-xyz");
    source.task.abort();
}
