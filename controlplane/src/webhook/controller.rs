//! Kubernetes mode: keeps weftd's ValidatingWebhookConfiguration pointing at weftd, as
//! istiod's validation controller does. Every webhook of the configuration gets weftd's root
//! certificate as `clientConfig.caBundle` (so the API server trusts the serving certificate
//! of 15017), on start and whenever the configuration changes (a `helm upgrade` writes it
//! back without one). weftd's root is fixed for the life of the process (a new root means a
//! restart, which patches again).
//!
//! `failurePolicy`, as istiod today: the chart installs the configuration with `Ignore`, so
//! the API server does not refuse every Istio write while no weftd answers yet. Before
//! setting `Fail`, weftd checks that its webhook really is the one answering: it asks the
//! API server for a dry-run create of a Gateway it is bound to refuse (no servers, and
//! istiod's always-reject annotation), and switches to `Fail` only once that create is
//! "denied the request". Until then it keeps `Ignore` and tries again with backoff (100 ms
//! doubling to a minute). A configuration the user set to `Fail` stays `Fail`.

use super::admission::ALWAYS_REJECT;
use futures::StreamExt;
use k8s_openapi::{ByteString, api::admissionregistration::v1::ValidatingWebhookConfiguration};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
    runtime::watcher::{self, Event, watcher},
};
use serde_json::json;
use std::time::Duration;
use tracing::{debug, info, warn};

/// The first wait before trying again; doubled after each failure up to [`MAX_BACKOFF`]
/// (istiod's rate limiter: 100 ms to a minute).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The name of the Gateway weftd asks the API server to create in a dry run.
pub const PROBE_NAME: &str = "invalid-gateway";

/// What the controller keeps in place.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The ValidatingWebhookConfiguration's name (`weft-validator-<namespace>`).
    pub config_name: String,
    /// weftd's namespace, where the probe Gateway is (not) created.
    pub namespace: String,
    /// weftd's root certificates, PEM: the `caBundle` of every webhook.
    pub ca_bundle: String,
}

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot read ValidatingWebhookConfiguration {name}: {source}")]
    Read { name: String, source: kube::Error },
    #[error("cannot update ValidatingWebhookConfiguration {name}: {source}")]
    Update { name: String, source: kube::Error },
}

/// How a reconcile ended.
#[derive(Debug, PartialEq, Eq)]
enum Reconciled {
    /// Up to date (or nothing to patch yet).
    Done,
    /// `caBundle` is in place but `failurePolicy` stays `Ignore` until the webhook answers.
    NotReadyForFail,
}

/// The controller; [`WebhookController::run`] runs it for ever.
pub struct WebhookController {
    client: Client,
    settings: WebhookSettings,
    /// The dry run was refused by the webhook once: `Fail` may be set from now on.
    ready_for_fail: bool,
}

impl WebhookController {
    pub fn new(client: Client, settings: WebhookSettings) -> Self {
        WebhookController { client, settings, ready_for_fail: false }
    }

    /// Reconciles on every change of the configuration and retries with backoff.
    pub async fn run(mut self) {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let name = self.settings.config_name.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher(api, config).boxed();
        let mut backoff = FIRST_BACKOFF;
        let mut retry: Option<Duration> = None;
        loop {
            let due = tokio::select! {
                event = events.next() => match event {
                    Some(Ok(Event::Apply(o))) => o.metadata.name.as_deref() == Some(&name),
                    // Once per (re)list, whether or not the configuration is there.
                    Some(Ok(Event::InitDone)) => true,
                    Some(Ok(Event::Init | Event::InitApply(_) | Event::Delete(_))) => false,
                    Some(Err(error)) => {
                        warn!(%error, config = %name, "watching the ValidatingWebhookConfiguration");
                        false
                    }
                    None => return,
                },
                () = tokio::time::sleep(retry.unwrap_or(MAX_BACKOFF)), if retry.is_some() => true,
            };
            if !due {
                continue;
            }
            match self.reconcile().await {
                Ok(Reconciled::Done) => {
                    retry = None;
                    backoff = FIRST_BACKOFF;
                }
                Ok(Reconciled::NotReadyForFail) => {
                    retry = Some(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => {
                    warn!(%error, retry_in_ms = backoff.as_millis() as u64, "webhook configuration not updated");
                    retry = Some(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn reconcile(&mut self) -> Result<Reconciled, WebhookError> {
        let name = &self.settings.config_name.clone();
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let current =
            api.get_opt(name).await.map_err(|source| WebhookError::Read { name: name.clone(), source })?;
        let Some(current) = current else {
            // Patched when it appears (the watch says so).
            info!(config = %name, "no ValidatingWebhookConfiguration to patch yet");
            return Ok(Reconciled::Done);
        };
        let ca = ByteString(self.settings.ca_bundle.clone().into_bytes());
        let webhooks = current.webhooks.as_deref().unwrap_or_default();
        let ca_change = webhooks.iter().any(|w| w.client_config.ca_bundle.as_ref() != Some(&ca));
        // Unset means Fail in admissionregistration/v1.
        let ignore = webhooks.iter().any(|w| w.failure_policy.as_deref().is_some_and(|p| p != "Fail"));
        if !ca_change && !ignore {
            debug!(config = %name, "webhook configuration up to date");
            return Ok(Reconciled::Done);
        }
        let set_fail = !ignore || self.ready_for_fail_close().await;
        if !ca_change && !set_fail {
            return Ok(Reconciled::NotReadyForFail);
        }
        let mut updated = current.clone();
        for webhook in updated.webhooks.iter_mut().flatten() {
            webhook.client_config.ca_bundle = Some(ca.clone());
            if set_fail {
                webhook.failure_policy = Some("Fail".into());
            }
        }
        // A replace carries the resourceVersion read above: a concurrent writer makes it a
        // conflict, and the retry reads again.
        let latest = api
            .replace(name, &PostParams::default(), &updated)
            .await
            .map_err(|source| WebhookError::Update { name: name.clone(), source })?;
        info!(
            config = %name,
            resource_version = latest.metadata.resource_version.as_deref().unwrap_or_default(),
            failure_policy = if set_fail { "Fail" } else { "Ignore" },
            "webhook configuration updated: caBundle is weftd's root"
        );
        Ok(if set_fail { Reconciled::Done } else { Reconciled::NotReadyForFail })
    }

    /// Whether the API server's calls reach weftd's webhook: a dry-run create of a Gateway
    /// the webhook must refuse, as istiod's `isDryRunOfInvalidConfigRejected`.
    async fn ready_for_fail_close(&mut self) -> bool {
        if self.ready_for_fail {
            return true;
        }
        let (ready, why) = self.dry_run_rejected().await;
        if ready {
            info!("the webhook refused the dry-run probe: switching validation to failurePolicy Fail");
            self.ready_for_fail = true;
        } else {
            info!(reason = %why, "not ready to switch validation to failurePolicy Fail");
        }
        ready
    }

    async fn dry_run_rejected(&self) -> (bool, String) {
        let namespace = &self.settings.namespace;
        let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "Gateway");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "gateways");
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &resource);
        let probe: DynamicObject = match serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {
                "name": PROBE_NAME,
                "namespace": namespace,
                "annotations": { ALWAYS_REJECT: "true" },
            },
            "spec": {},
        })) {
            Ok(probe) => probe,
            Err(e) => return (false, format!("cannot build the probe Gateway: {e}")),
        };
        let dry_run = PostParams { dry_run: true, ..PostParams::default() };
        let mut result = api.create(&dry_run, &probe).await;
        if matches!(&result, Err(kube::Error::Api(s)) if s.code == 409) {
            result = api.replace(PROBE_NAME, &dry_run, &probe).await;
        }
        match result {
            Ok(_) => (false, "the probe Gateway was not refused".into()),
            Err(kube::Error::Api(status)) if status.message.contains("denied the request") => {
                (true, String::new())
            }
            // No Gateway CRD: the check cannot be made (istiod assumes ready).
            Err(kube::Error::Api(status)) if status.code == 404 => {
                warn!("no Istio Gateway kind: cannot check the webhook; assuming it answers");
                (true, String::new())
            }
            Err(kube::Error::Api(status)) if status.message.contains("does not support dry run") => {
                warn!(message = %status.message, "a webhook does not support dry run; assuming weftd's answers");
                (true, String::new())
            }
            Err(e) => (false, format!("the probe Gateway was refused for another reason: {e}")),
        }
    }
}
