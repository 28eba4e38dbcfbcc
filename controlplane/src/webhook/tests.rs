//! The webhook over real TLS on loopback, called as the API server calls it (the fake API
//! server's client: the root as caBundle, the name weftd.istio-system.svc).

use super::server;
use crate::ca::{CertificateAuthority, SigningMaterial, Validity, serving};
use crate::metrics::ControlPlaneMetrics;
use base64::Engine as _;
use hyper::StatusCode;
use serde_json::{Value, json};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use weft_tests::kubeapi::admission::post;
use weft_xds::server::XdsServer;

const NAME: &str = "weftd.istio-system.svc";

struct Webhook {
    address: SocketAddr,
    ca_bundle: String,
    metrics: Arc<ControlPlaneMetrics>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start() -> Webhook {
    let (material, _, _) =
        SigningMaterial::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(material.roots_pem());
    let ca = CertificateAuthority::new(material, Validity::default(), "cluster.local");
    let names = serving::ServingNames { dns_names: vec![NAME.into()], ips: vec![] };
    let certificate = serving::ServingCertificate::issue(&ca, names, Duration::from_secs(3600)).unwrap();
    let tls = certificate.tls_config(&[b"http/1.1"]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let metrics = Arc::new(ControlPlaneMetrics::new(false));
    let task = tokio::spawn(server::serve(listener, tls, Arc::clone(&metrics)));
    Webhook { address, ca_bundle, metrics, task }
}

impl Webhook {
    async fn call(&self, body: Vec<u8>) -> (StatusCode, String) {
        let (status, bytes) = post(self.address, NAME, &self.ca_bundle, "/validate", body).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The review's `response`, for a request of `operation` on `object`.
    async fn review(&self, operation: &str, resource: (&str, &str, &str), object: Value) -> Value {
        let (group, kind, plural) = resource;
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "0c9f", "operation": operation,
                "kind": { "group": group, "version": "v1", "kind": kind },
                "resource": { "group": group, "version": "v1", "resource": plural },
                "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
                "userInfo": { "username": "admin" },
                "object": object,
            },
        });
        let (status, body) = self.call(serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
        assert_eq!(answer["response"]["uid"], "0c9f", "{answer}");
        answer["response"].clone()
    }

    fn metrics(&self) -> String {
        let xds = XdsServer::new(Default::default());
        self.metrics.render(&xds)
    }
}

const VS: (&str, &str, &str) = ("networking.istio.io", "VirtualService", "virtualservices");

fn virtual_service(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": { "name": name, "namespace": "bookinfo" }, "spec": spec })
}

#[tokio::test]
async fn a_good_virtual_service_is_allowed() {
    let webhook = start().await;
    let good = virtual_service(
        "reviews",
        json!({ "hosts": ["reviews"], "http": [{ "route": [{ "destination": { "host": "reviews" } }] }] }),
    );
    let response = webhook.review("CREATE", VS, good).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response["warnings"].is_null(), "{response}");

    // weftd's warnings come back as the review's warnings (kubectl prints them).
    let legacy = virtual_service(
        "legacy",
        json!({ "hosts": ["reviews"], "gateways": ["gw.istio-system.svc.cluster.local"],
                "http": [{ "route": [{ "destination": { "host": "reviews" } }] }] }),
    );
    let response = webhook.review("CREATE", VS, legacy).await;
    assert_eq!(response["allowed"], true, "{response}");
    let warning = response["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.starts_with("spec.gateways[0]: using legacy gatewayName format"), "{response}");
    let metrics = webhook.metrics();
    assert!(
        metrics.contains(
            "galley_validation_passed{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\"} 2\n"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_bad_virtual_service_is_denied_by_name_field_and_reason() {
    let webhook = start().await;
    let bad = virtual_service(
        "reviews-broken",
        json!({ "hosts": ["reviews"],
                "http": [{ "route": [{ "destination": { "host": "reviews" }, "weight": -10 }] }] }),
    );
    let response = webhook.review("UPDATE", VS, bad).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 400, "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("configuration is invalid: VirtualService bookinfo/reviews-broken: "),
        "{message}"
    );
    assert!(message.contains("spec.http[0].route[0].weight"), "names the field: {message}");
    let metrics = webhook.metrics();
    assert!(
        metrics.contains("galley_validation_failed{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\",reason=\"invalid_resource\"} 1\n"),
        "{metrics}"
    );

    // A schema error (a field weftd does not know) is refused by its path too.
    let typo = virtual_service("typo", json!({ "hosts": ["reviews"], "htp": [] }));
    let response = webhook.review("CREATE", VS, typo).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(response["status"]["message"].as_str().unwrap().contains("htp"), "{response}");
}

#[tokio::test]
async fn unknown_kinds_deletes_and_other_versions_are_allowed() {
    let webhook = start().await;
    let filter = json!({ "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
                         "metadata": { "name": "f", "namespace": "bookinfo" }, "spec": { "anything": 1 } });
    let response =
        webhook.review("CREATE", ("networking.istio.io", "EnvoyFilter", "envoyfilters"), filter).await;
    assert_eq!(response["allowed"], true, "{response}");

    let bad = virtual_service("bad", json!({ "hosts": [] }));
    let response = webhook.review("DELETE", VS, bad).await;
    assert_eq!(response["allowed"], true, "a DELETE is not validated: {response}");

    // A version weftd does not list is judged by its kind, as istiod does.
    let mut good = virtual_service(
        "v1alpha3",
        json!({ "hosts": ["reviews"], "http": [{ "route": [{ "destination": { "host": "reviews" } }] }] }),
    );
    good["apiVersion"] = "networking.istio.io/v1alpha9".into();
    let response = webhook.review("CREATE", VS, good).await;
    assert_eq!(response["allowed"], true, "{response}");

    let metrics = webhook.metrics();
    for want in ["reason=\"unknown_type\"} 1\n", "reason=\"unsupported_operation\"} 1\n"] {
        assert!(metrics.contains(want), "{want} in {metrics}");
    }
}

#[tokio::test]
async fn istiods_always_reject_annotation_is_refused() {
    let webhook = start().await;
    let probe = json!({ "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                        "metadata": { "name": "invalid-gateway", "namespace": "istio-system",
                                      "annotations": { super::admission::ALWAYS_REJECT: "true" } },
                        "spec": { "servers": [{ "hosts": ["*"], "port": { "number": 80, "name": "http", "protocol": "HTTP" } }] } });
    let response = webhook.review("CREATE", ("networking.istio.io", "Gateway", "gateways"), probe).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(response["status"]["message"].as_str().unwrap().contains("webhook-always-reject"), "{response}");
}

#[tokio::test]
async fn a_malformed_review_is_a_400_and_the_webhook_keeps_serving() {
    let webhook = start().await;
    for garbage in [
        &b"{not json"[..],
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
        b"[1,2]",
    ] {
        let (status, body) = webhook.call(garbage.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("AdmissionReview"), "says what was expected: {body}");
    }
    let (status, body) = webhook.call(Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(webhook.metrics().contains("galley_validation_http_error{status=\"400\"} 4\n"));
    // Still serving.
    let good = virtual_service(
        "after",
        json!({ "hosts": ["reviews"], "http": [{ "route": [{ "destination": { "host": "reviews" } }] }] }),
    );
    let response = webhook.review("CREATE", VS, good).await;
    assert_eq!(response["allowed"], true, "{response}");
}
