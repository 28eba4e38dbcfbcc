//! weftd's root in Kubernetes mode: a Secret in weftd's namespace, as istiod keeps its
//! self-signed root in `istio-ca-secret`. Weft's is named [`CA_SECRET`], so weftd and istiod
//! can share a namespace without sharing a root. The root certificate is also written to a
//! ConfigMap ([`ROOT_CONFIG_MAP`], key `root-cert.pem`, like istiod's
//! `istio-ca-root-cert`), which agents mount and read with `--ca-root-cert`.

use super::authority::{CA_CERT, CA_KEY, MaterialError, ROOT_CERT, SigningMaterial};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::info;

/// Weft's counterpart of istiod's `istio-ca-secret`.
pub const CA_SECRET: &str = "weft-ca-secret";
/// Weft's counterpart of istiod's `istio-ca-root-cert` ConfigMap.
pub const ROOT_CONFIG_MAP: &str = "weft-ca-root-cert";
/// The Secret type istiod gives its CA Secret.
const SECRET_TYPE: &str = "istio.io/ca-root";

/// Why the CA Secret or root ConfigMap could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The API server refused or could not be reached.
    #[error(
        "{action} {what} {namespace}/{name}: {error} (weftd needs get/create on secrets and get/create/update on configmaps in its namespace)"
    )]
    Api {
        action: &'static str,
        what: &'static str,
        namespace: String,
        name: String,
        /// Boxed: kube's error is large, and this one travels up through every `?`.
        error: Box<kube::Error>,
    },
    /// The Secret exists but does not hold a usable CA.
    #[error(transparent)]
    Material(#[from] MaterialError),
}

/// Reads the CA Secret, or makes a root and creates the Secret when there is none. Two
/// weftd starting at once both try to create it; the one that loses reads the winner's.
pub async fn load_or_create(
    client: &kube::Client,
    namespace: &str,
    trust_domain: &str,
    root_ttl: Duration,
) -> Result<SigningMaterial, SecretError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api_error = |action, error| SecretError::Api {
        action,
        what: "Secret",
        namespace: namespace.to_owned(),
        name: CA_SECRET.to_owned(),
        error: Box::new(error),
    };
    match secrets.get_opt(CA_SECRET).await.map_err(|e| api_error("reading", e))? {
        Some(secret) => {
            info!(secret = CA_SECRET, namespace, "CA: using the root in the Secret");
            return from_secret(namespace, &secret);
        }
        None => info!(secret = CA_SECRET, namespace, "CA: no root yet; making one"),
    }
    let (material, cert_pem, key_pem) = SigningMaterial::generate_root(trust_domain, root_ttl)?;
    let data = BTreeMap::from([
        (CA_CERT.to_owned(), ByteString(cert_pem.clone().into_bytes())),
        (CA_KEY.to_owned(), ByteString(key_pem.into_bytes())),
        (ROOT_CERT.to_owned(), ByteString(cert_pem.into_bytes())),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        data: Some(data),
        type_: Some(SECRET_TYPE.to_owned()),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(material),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            info!(secret = CA_SECRET, namespace, "CA: another weftd created the root first; using it");
            let secret = secrets.get(CA_SECRET).await.map_err(|e| api_error("reading", e))?;
            from_secret(namespace, &secret)
        }
        Err(e) => Err(api_error("creating", e)),
    }
}

fn from_secret(namespace: &str, secret: &Secret) -> Result<SigningMaterial, SecretError> {
    let place = format!("Secret {namespace}/{CA_SECRET}");
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let get = |key: &'static str| {
        data.get(key).map(|b| b.0.as_slice()).ok_or_else(|| MaterialError {
            place: place.clone(),
            file: key,
            reason: "is missing from the Secret".into(),
        })
    };
    let cert = get(CA_CERT)?;
    // A Secret made before root-cert.pem was written (or by hand) may lack it: the
    // self-signed certificate is its own root.
    let roots = data.get(ROOT_CERT).map_or(cert, |b| b.0.as_slice());
    Ok(SigningMaterial::from_pem(&place, cert, get(CA_KEY)?, None, roots)?)
}

/// Writes the root certificate to the ConfigMap agents read, if it is not there already.
pub async fn publish_root(
    client: &kube::Client,
    namespace: &str,
    roots_pem: &str,
) -> Result<(), SecretError> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let api_error = |action, error| SecretError::Api {
        action,
        what: "ConfigMap",
        namespace: namespace.to_owned(),
        name: ROOT_CONFIG_MAP.to_owned(),
        error: Box::new(error),
    };
    let data = BTreeMap::from([(ROOT_CERT.to_owned(), roots_pem.to_owned())]);
    match maps.get_opt(ROOT_CONFIG_MAP).await.map_err(|e| api_error("reading", e))? {
        Some(existing) if existing.data.as_ref() == Some(&data) => Ok(()),
        Some(mut existing) => {
            existing.data = Some(data);
            maps.replace(ROOT_CONFIG_MAP, &PostParams::default(), &existing)
                .await
                .map_err(|e| api_error("updating", e))?;
            info!(config_map = ROOT_CONFIG_MAP, namespace, "CA: root certificate updated");
            Ok(())
        }
        None => {
            let map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CONFIG_MAP.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            maps.create(&PostParams::default(), &map).await.map_err(|e| api_error("creating", e))?;
            info!(config_map = ROOT_CONFIG_MAP, namespace, "CA: root certificate published");
            Ok(())
        }
    }
}
