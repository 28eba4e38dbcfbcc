//! Validating admission webhooks, called as kube-apiserver calls them: on a create or
//! replace (or the create or update a PATCH makes) of an object that a stored
//! ValidatingWebhookConfiguration's rules match, an `admission.k8s.io/v1` AdmissionReview
//! is POSTed to each matching webhook, in order, before anything is stored.
//!
//! - A webhook's `clientConfig.service` is reached at the address the test routes its
//!   namespace and name to ([`super::FakeApiServer::route_service`]), over TLS verified
//!   against the webhook's `caBundle` for the name `<service>.<namespace>.svc`, as the real
//!   server does; `clientConfig.url` is called as given (its host is the TLS name).
//! - A webhook that answers `allowed: false` refuses the write with its `status`: the message
//!   prefixed `admission webhook "<name>" denied the request: `, its code (400 if it gives
//!   none), as kube-apiserver's `ToStatusErr`.
//! - A webhook that cannot be called (no route, TLS refused, timeout, an answer that is not
//!   a review of this request) fails the write with 500 `InternalError` under
//!   `failurePolicy: Fail` (the default) and is skipped under `Ignore`.
//! - Rules match on operations, apiGroups, apiVersions and resources (`*` as a wildcard;
//!   subresources are not admitted); `objectSelector` is honoured (matchLabels and
//!   matchExpressions); `namespaceSelector` is not (every namespace matches).
//! - `dryRun=All` runs admission and stores nothing, with `request.dryRun: true`.

use super::{Shared, resources::RESOURCES, store::ApiError};
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, body::Bytes, header};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpStream;

/// The operation being admitted, as an AdmissionReview names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        }
    }
}

/// One write to admit.
pub(crate) struct Write<'a> {
    pub operation: Operation,
    pub resource: usize,
    pub version: &'a str,
    pub object: &'a Value,
    pub old_object: Option<&'a Value>,
    pub dry_run: bool,
}

/// Runs every matching webhook of every stored ValidatingWebhookConfiguration; the first
/// refusal (or failed call under `Fail`) refuses the write.
pub(crate) async fn admit(shared: &Shared, write: &Write<'_>) -> Result<(), ApiError> {
    let webhooks: Vec<Value> = {
        let store = shared.store();
        let configs = RESOURCES.iter().position(|r| {
            r.group == "admissionregistration.k8s.io" && r.kind == "ValidatingWebhookConfiguration"
        });
        let Some(index) = configs else { return Ok(()) };
        store
            .all(index)
            .into_iter()
            .flat_map(|config| config["webhooks"].as_array().cloned().unwrap_or_default())
            .filter(|webhook| matches(webhook, write))
            .collect()
    };
    for webhook in webhooks {
        let name = webhook["name"].as_str().unwrap_or_default().to_owned();
        match call(shared, &webhook, write).await {
            Ok(response) if response["allowed"] == true => {}
            Ok(response) => return Err(denied(&name, &response["status"])),
            // The real server logs it; the write goes on.
            Err(_) if webhook["failurePolicy"] == "Ignore" => {}
            Err(reason) => {
                return Err(ApiError {
                    code: 500,
                    reason: "InternalError",
                    message: format!("Internal error occurred: failed calling webhook {name:?}: {reason}"),
                });
            }
        }
    }
    Ok(())
}

/// kube-apiserver's refusal: the webhook's status, its message prefixed.
fn denied(name: &str, status: &Value) -> ApiError {
    let prefix = format!("admission webhook {name:?} denied the request");
    let message = match status["message"].as_str().filter(|m| !m.is_empty()) {
        Some(message) => format!("{prefix}: {message}"),
        None => format!("{prefix} without explanation"),
    };
    let code = status["code"].as_u64().filter(|c| *c > 0).unwrap_or(400) as u16;
    ApiError { code, reason: if code == 400 { "BadRequest" } else { "Forbidden" }, message }
}

/// Whether `webhook`'s rules and object selector take this write.
fn matches(webhook: &Value, write: &Write<'_>) -> bool {
    let r = &RESOURCES[write.resource];
    let has = |list: &Value, value: &str| {
        list.as_array().is_some_and(|l| l.iter().any(|v| v == "*" || v.as_str() == Some(value)))
    };
    let ruled = webhook["rules"].as_array().is_some_and(|rules| {
        rules.iter().any(|rule| {
            has(&rule["operations"], write.operation.as_str())
                && has(&rule["apiGroups"], r.group)
                && has(&rule["apiVersions"], write.version)
                && has(&rule["resources"], r.plural)
        })
    });
    ruled && selects(&webhook["objectSelector"], &write.object["metadata"]["labels"])
}

/// A label selector (matchLabels, matchExpressions) against `labels`; no selector selects all.
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |key: &str| labels[key].as_str();
    let by_labels =
        selector["matchLabels"].as_object().is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let by_expressions = selector["matchExpressions"].as_array().is_none_or(|expressions| {
        expressions.iter().all(|e| {
            let value = label(e["key"].as_str().unwrap_or_default());
            let listed = e["values"].as_array().is_some_and(|vs| vs.iter().any(|v| v.as_str() == value));
            match e["operator"].as_str() {
                Some("In") => value.is_some() && listed,
                Some("NotIn") => value.is_none() || !listed,
                Some("Exists") => value.is_some(),
                Some("DoesNotExist") => value.is_none(),
                _ => false,
            }
        })
    });
    by_labels && by_expressions
}

/// Calls one webhook: its AdmissionReview response, or why the call failed.
async fn call(shared: &Shared, webhook: &Value, write: &Write<'_>) -> Result<Value, String> {
    let r = &RESOURCES[write.resource];
    let uid = format!("{:032x}", rand_uid());
    let object = write.object;
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": r.group, "version": write.version, "kind": r.kind },
            "resource": { "group": r.group, "version": write.version, "resource": r.plural },
            "requestKind": { "group": r.group, "version": write.version, "kind": r.kind },
            "requestResource": { "group": r.group, "version": write.version, "resource": r.plural },
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": write.operation.as_str(),
            "userInfo": { "username": "weft-test", "groups": ["system:authenticated"] },
            "object": object,
            "oldObject": write.old_object,
            "dryRun": write.dry_run,
        },
    });
    let client = &webhook["clientConfig"];
    let timeout = Duration::from_secs(webhook["timeoutSeconds"].as_u64().unwrap_or(10));
    let (address, host, path) = match (client["service"].as_object(), client["url"].as_str()) {
        (Some(service), _) => {
            let (namespace, name) = (
                service.get("namespace").and_then(Value::as_str).unwrap_or_default(),
                service.get("name").and_then(Value::as_str).unwrap_or_default(),
            );
            let port = service.get("port").and_then(Value::as_u64).unwrap_or(443);
            let path = service.get("path").and_then(Value::as_str).unwrap_or("/");
            let host = format!("{name}.{namespace}.svc");
            let Some(address) = shared.route(namespace, name) else {
                return Err(format!(
                    "failed to call webhook: Post \"https://{host}:{port}{path}?timeout={}s\": no endpoints available for service \"{name}\"",
                    timeout.as_secs()
                ));
            };
            (address, host, path.to_owned())
        }
        (None, Some(url)) => {
            let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid webhook URL {url:?}: {e}"))?;
            let host = uri.host().unwrap_or_default().to_owned();
            let address = tokio::net::lookup_host((host.as_str(), uri.port_u16().unwrap_or(443)))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("cannot resolve {host}"))?;
            (address, host, uri.path().to_owned())
        }
        (None, None) => {
            return Err("the webhook has neither clientConfig.service nor clientConfig.url".into());
        }
    };
    let ca = client["caBundle"].as_str().unwrap_or_default();
    let body = serde_json::to_vec(&review).expect("JSON serialises");
    let answer = tokio::time::timeout(timeout, post(address, &host, ca, &path, body))
        .await
        .map_err(|_| {
            format!("failed to call webhook: Post \"https://{host}{path}\": context deadline exceeded")
        })?
        .map_err(|e| format!("failed to call webhook: Post \"https://{host}{path}\": {e}"))?;
    let (status, bytes) = answer;
    if status != StatusCode::OK {
        return Err(format!(
            "received invalid webhook response: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        ));
    }
    let reply: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("received invalid webhook response: {e}"))?;
    let response = reply["response"].clone();
    if reply["kind"] != "AdmissionReview" || response["uid"] != uid.as_str() {
        return Err(format!("expected response.uid={uid:?}, got {}", response["uid"]));
    }
    Ok(response)
}

/// POSTs `body` (JSON) to `https://<host><path>` at `address`, trusting only `ca_bundle`
/// (base64 PEM, as in a webhook's clientConfig): the status and body of the answer.
pub async fn post(
    address: SocketAddr,
    host: &str,
    ca_bundle: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle)
        .map_err(|e| format!("tls: caBundle is not base64: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("tls: caBundle is not PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("tls: caBundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err(
            "tls: failed to verify certificate: x509: certificate signed by unknown authority (no caBundle)"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("tls: {host}: {e}"))?;
    let tcp = TcpStream::connect(address).await.map_err(|e| format!("dial tcp {address}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::post(path)
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, bytes))
}

/// A request uid: unique enough for a test server (time and a counter).
fn rand_uid() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    (nanos << 32) ^ u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    /// A TLS server on loopback presenting a certificate for `name` from a fresh CA that
    /// answers every request with 200 `{}`; returns its address and the CA as a caBundle.
    async fn server(name: &str) -> (SocketAddr, String) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], der)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from("{}"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (address, base64::engine::general_purpose::STANDARD.encode(ca_cert.pem()))
    }

    #[tokio::test]
    async fn a_webhook_is_trusted_by_its_ca_bundle_and_service_name_only() {
        let (address, ca_bundle) = server("weftd.istio-system.svc").await;
        let (status, _) =
            post(address, "weftd.istio-system.svc", &ca_bundle, "/validate", b"{}".to_vec()).await.unwrap();
        assert_eq!(status, StatusCode::OK);

        let wrong_name = post(address, "other.istio-system.svc", &ca_bundle, "/validate", Vec::new()).await;
        assert!(wrong_name.as_ref().is_err_and(|e| e.starts_with("tls:")), "{wrong_name:?}");
        let (_, other_ca) = server("weftd.istio-system.svc").await;
        let wrong_ca = post(address, "weftd.istio-system.svc", &other_ca, "/validate", Vec::new()).await;
        assert!(wrong_ca.as_ref().is_err_and(|e| e.starts_with("tls:")), "{wrong_ca:?}");
        let none = post(address, "weftd.istio-system.svc", "", "/validate", Vec::new()).await;
        assert!(none.as_ref().is_err_and(|e| e.contains("no caBundle")), "{none:?}");
    }

    #[test]
    fn rules_and_object_selectors_match_as_kube_apiserver_does() {
        let vs = super::super::resources::by_name("VirtualService");
        let object = json!({ "metadata": { "name": "r", "labels": { "istio.io/rev": "default" } } });
        let write = |operation, version| Write {
            operation,
            resource: vs,
            version,
            object: &object,
            old_object: None,
            dry_run: false,
        };
        let webhook = |selector: Value| {
            json!({ "rules": [{ "operations": ["CREATE", "UPDATE"], "apiGroups": ["networking.istio.io"],
                                "apiVersions": ["*"], "resources": ["*"] }],
                    "objectSelector": selector })
        };
        assert!(matches(&webhook(Value::Null), &write(Operation::Create, "v1beta1")));
        let rev = |op: &str, values: Value| {
            webhook(
                json!({ "matchExpressions": [{ "key": "istio.io/rev", "operator": op, "values": values }] }),
            )
        };
        assert!(matches(&rev("In", json!(["default"])), &write(Operation::Update, "v1")));
        assert!(!matches(&rev("In", json!(["canary"])), &write(Operation::Update, "v1")));
        assert!(!matches(&rev("DoesNotExist", Value::Null), &write(Operation::Update, "v1")));
        let security_only = json!({ "rules": [{ "operations": ["*"], "apiGroups": ["security.istio.io"],
                                                "apiVersions": ["*"], "resources": ["*"] }] });
        assert!(!matches(&security_only, &write(Operation::Create, "v1")));
        let creates_only = json!({ "rules": [{ "operations": ["CREATE"], "apiGroups": ["*"],
                                               "apiVersions": ["v1"], "resources": ["virtualservices"] }] });
        assert!(!matches(&creates_only, &write(Operation::Update, "v1")));
    }
}
