//! The authorization rules, without a network: pods in a config store, callers built by
//! hand, and the token file path end to end.

use super::*;
use crate::config::store::{ConfigStore, SourceId};
use crate::source::{ObjectKey, Origin, RawObject, SourceEvent};
use serde_json::json;

fn pod(namespace: &str, name: &str, account: &str, node: &str, phase: &str) -> SourceEvent {
    let value = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": { "app": name } },
        "spec": { "nodeName": node, "serviceAccountName": account },
        "status": { "phase": phase, "podIP": "198.18.1.2" },
    });
    let key = ObjectKey {
        group: String::new(),
        kind: "Pod".into(),
        namespace: Some(namespace.into()),
        name: name.into(),
    };
    SourceEvent::Upsert(RawObject::from_value(
        key,
        "v1".into(),
        &value,
        Origin::File { path: "p.yaml".into(), line: 1 },
    ))
}

fn config(events: Vec<SourceEvent>) -> ConfigView {
    let mut store = ConfigStore::new();
    store.apply_all(SourceId::File, events);
    watch::channel(Some(store.snapshot())).1
}

fn mesh() -> ConfigView {
    config(vec![
        pod("bookinfo", "reviews-v1", "reviews", "n1", "Running"),
        pod("bookinfo", "ratings-v1", "ratings", "n2", "Running"),
        pod("bookinfo", "job", "batch", "n1", "Succeeded"),
        pod("istio-system", "weft-agent-n1", "weft-agent", "n1", "Running"),
    ])
}

fn token_file(text: &str) -> (tempfile::TempDir, TokenFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, text).unwrap();
    let file = TokenFile::open(&path).unwrap();
    (dir, file)
}

fn agents() -> Vec<ServiceAccountRef> {
    vec!["istio-system/weft-agent".parse().unwrap()]
}

fn authenticator(view: ConfigView) -> (tempfile::TempDir, Authenticator) {
    let (dir, file) =
        token_file("agent-n1,system:node:n1\nwaypoint,system:serviceaccount:bookinfo:waypoint\n");
    (dir, Authenticator::new(Method::TokenFile(file), view, agents(), "cluster.local"))
}

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa).unwrap()
}

fn metadata(authorization: Option<&str>) -> MetadataMap {
    let mut m = MetadataMap::new();
    if let Some(value) = authorization {
        m.insert("authorization", value.parse().unwrap());
    }
    m
}

fn agent(node: &str) -> Caller {
    Caller::Agent { node: node.into(), pod: None }
}

fn proxy(node: Option<&str>, namespace: Option<&str>, labels: &[(&str, &str)]) -> ProxyIdentity {
    ProxyIdentity {
        id: "p".into(),
        node_name: node.map(Into::into),
        namespace: namespace.map(Into::into),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn tokens_from_the_file_name_the_caller() {
    let (_dir, auth) = authenticator(mesh());
    let caller = auth.authenticate(None, &metadata(Some("Bearer agent-n1"))).await.unwrap();
    assert_eq!(caller, agent("n1"));
    let caller = auth.authenticate(None, &metadata(Some("bearer waypoint"))).await.unwrap();
    assert_eq!(
        caller,
        Caller::ServiceAccount { namespace: "bookinfo".into(), name: "waypoint".into(), pod: None }
    );

    for (header, code) in [
        (None, tonic::Code::Unauthenticated),
        (Some("Bearer nope"), tonic::Code::Unauthenticated),
        (Some("Basic agent-n1"), tonic::Code::Unauthenticated),
        (Some("Bearer "), tonic::Code::Unauthenticated),
    ] {
        let e = auth.authenticate(None, &metadata(header)).await.unwrap_err();
        assert_eq!(e.status().code(), code, "{header:?}: {e}");
    }
    let e = auth.authenticate(None, &metadata(Some("Bearer nope"))).await.unwrap_err();
    assert_eq!(e.status().message(), "the bearer token was not accepted", "no detail for the caller");
}

#[test]
fn an_agent_gets_the_identities_of_pods_on_its_node_only() {
    let (_dir, auth) = authenticator(mesh());
    assert!(auth.authorize_identity(None, &agent("n1"), &id("bookinfo", "reviews")).is_ok());
    let denied = |caller: &Caller, identity: &Identity| {
        let e = auth.authorize_identity(None, caller, identity).unwrap_err();
        assert_eq!(e.status().code(), tonic::Code::PermissionDenied, "{e}");
        e.to_string()
    };
    let e = denied(&agent("n1"), &id("bookinfo", "ratings"));
    assert_eq!(
        e,
        "the agent of node n1 may not hold spiffe://cluster.local/ns/bookinfo/sa/ratings: \
         no pod of service account bookinfo/ratings runs on node n1"
    );
    denied(&agent("n1"), &id("bookinfo", "nobody"));
    // A finished pod needs no certificate.
    denied(&agent("n1"), &id("bookinfo", "batch"));
    let other_domain = Identity::new("other.domain", "bookinfo", "reviews").unwrap();
    assert!(denied(&agent("n1"), &other_domain).contains("trust domain cluster.local only"));
}

#[test]
fn a_service_account_gets_its_own_identity_only() {
    let (_dir, auth) = authenticator(mesh());
    let waypoint =
        Caller::ServiceAccount { namespace: "bookinfo".into(), name: "waypoint".into(), pod: None };
    assert!(auth.authorize_identity(None, &waypoint, &id("bookinfo", "waypoint")).is_ok());
    let e = auth.authorize_identity(None, &waypoint, &id("bookinfo", "reviews")).unwrap_err();
    assert_eq!(e.status().code(), tonic::Code::PermissionDenied);
}

#[test]
fn before_the_first_configuration_nothing_is_decided() {
    let (_dir, auth) = authenticator(watch::channel(None).1);
    let e = auth.authorize_identity(None, &agent("n1"), &id("bookinfo", "reviews")).unwrap_err();
    assert_eq!(e.status().code(), tonic::Code::Unavailable);
}

#[test]
fn proxies_may_claim_only_what_they_are() {
    let (_dir, auth) = authenticator(mesh());
    let ok = |caller: &Caller, p: ProxyIdentity| auth.authorize_proxy(None, caller, &p).is_ok();
    let waypoint =
        Caller::ServiceAccount { namespace: "bookinfo".into(), name: "waypoint".into(), pod: None };

    assert!(ok(&agent("n1"), proxy(Some("n1"), None, &[])));
    assert!(ok(&agent("n1"), proxy(None, None, &[])));
    // The namespace of the agent DaemonSet's account.
    assert!(ok(&agent("n1"), proxy(Some("n1"), Some("istio-system"), &[])));
    assert!(!ok(&agent("n1"), proxy(Some("n2"), None, &[])));
    assert!(!ok(&agent("n1"), proxy(Some("n1"), Some("bookinfo"), &[])));
    assert!(!ok(&agent("n1"), proxy(Some("n1"), None, &[("istio", "ingressgateway")])));

    assert!(ok(
        &waypoint,
        proxy(None, Some("bookinfo"), &[("gateway.networking.k8s.io/gateway-name", "waypoint")])
    ));
    assert!(!ok(&waypoint, proxy(None, Some("other"), &[])));
    assert!(!ok(&waypoint, proxy(Some("n1"), Some("bookinfo"), &[])), "no pod known: no node to claim");

    let e = auth.authorize_proxy(None, &agent("n1"), &proxy(Some("n2"), None, &[])).unwrap_err();
    assert_eq!(e.status().code(), tonic::Code::PermissionDenied);
    assert_eq!(
        e.to_string(),
        "the agent of node n1 may not claim node n2 (NODE_NAME): it authenticated as the agent of node n1"
    );
}

#[test]
fn a_pod_bound_service_account_is_held_to_its_pod() {
    let (_dir, auth) = authenticator(mesh());
    let pod = PodInfo {
        namespace: "bookinfo".into(),
        name: "waypoint-abc".into(),
        node: Some("n2".into()),
        labels: BTreeMap::from([("gateway.networking.k8s.io/gateway-name".into(), "waypoint".into())]),
    };
    let waypoint =
        Caller::ServiceAccount { namespace: "bookinfo".into(), name: "waypoint".into(), pod: Some(pod) };
    let ok = |p: ProxyIdentity| auth.authorize_proxy(None, &waypoint, &p).is_ok();
    assert!(ok(proxy(
        Some("n2"),
        Some("bookinfo"),
        &[("gateway.networking.k8s.io/gateway-name", "waypoint")]
    )));
    assert!(!ok(proxy(Some("n1"), Some("bookinfo"), &[])));
    assert!(!ok(proxy(None, Some("bookinfo"), &[("istio", "ingressgateway")])));
}

#[test]
fn reviewed_accounts_become_callers() {
    let (_dir, auth) = authenticator(mesh());
    let reviewed = |ns: &str, name: &str, pod: Option<&str>| ReviewedAccount {
        namespace: ns.into(),
        name: name.into(),
        pod_name: pod.map(Into::into),
        pod_uid: None,
    };
    let caller = auth.caller_of(reviewed("istio-system", "weft-agent", Some("weft-agent-n1"))).unwrap();
    let Caller::Agent { node, pod: Some(pod) } = caller else { panic!("an agent: {caller:?}") };
    assert_eq!((node.as_str(), pod.name.as_str()), ("n1", "weft-agent-n1"));

    let e = auth.caller_of(reviewed("istio-system", "weft-agent", None)).unwrap_err();
    assert!(e.to_string().contains("not bound to a pod"), "{e}");
    let e = auth.caller_of(reviewed("istio-system", "weft-agent", Some("gone"))).unwrap_err();
    assert!(e.to_string().contains("does not know its pod istio-system/gone"), "{e}");
    assert_eq!(e.status().code(), tonic::Code::Unauthenticated);
    // A token naming a pod that runs as another account.
    let e = auth.caller_of(reviewed("bookinfo", "ratings", Some("reviews-v1"))).unwrap_err();
    assert_eq!(e.status().code(), tonic::Code::Unauthenticated);

    let caller = auth.caller_of(reviewed("bookinfo", "reviews", Some("reviews-v1"))).unwrap();
    assert!(
        matches!(caller, Caller::ServiceAccount { pod: Some(ref p), .. } if p.node.as_deref() == Some("n1"))
    );
}
