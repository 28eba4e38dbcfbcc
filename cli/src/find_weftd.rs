//! `--cluster` for the subcommands that ask weftd's debug endpoint (`proxy-status`,
//! `config-dump`): weftd is found through the API server, as its Service's debug port
//! (15014, istiod's `http-monitoring`) on a ready endpoint of its EndpointSlices. weftctl
//! connects to that address directly: from inside the cluster network, or anywhere the pod
//! addresses are routed (the test bed). Elsewhere, `kubectl port-forward` and `--weftd URL`
//! remain the way (kube-rs's port-forward needs the API server's streaming protocol, which
//! the test bed's fake API server does not speak, so it is not used here).

use crate::cluster::{ClusterArgs, describe};
use anyhow::{Context, bail};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, api::ListParams};

/// weftd's debug port, the Service port weftctl looks for (by number, or by one of
/// [`PORT_NAMES`]).
const DEBUG_PORT: i32 = 15014;
const PORT_NAMES: &[&str] = &["http-monitoring", "http-debug", "debug"];
/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where weftd is in the cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct InCluster {
    /// Find weftd through the Kubernetes API (its Service's debug port on a ready
    /// endpoint) instead of --weftd.
    #[arg(long)]
    pub cluster: bool,
    /// weftd's namespace, with --cluster.
    #[arg(long, default_value = "istio-system")]
    pub weftd_namespace: String,
    /// weftd's Service, with --cluster.
    #[arg(long, default_value = "weftd")]
    pub weftd_service: String,
    #[command(flatten)]
    pub kube: ClusterArgs,
}

impl InCluster {
    /// The URL of weftd's debug endpoint, from its Service and EndpointSlices.
    pub async fn debug_url(&self) -> anyhow::Result<String> {
        let client = self.kube.client().await?;
        let (ns, name) = (&self.weftd_namespace, &self.weftd_service);
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        let service = services
            .get_opt(name)
            .await
            .map_err(|e| anyhow::anyhow!("reading Service {ns}/{name}: {}", describe(&e)))?
            .with_context(|| {
                format!("no Service {ns}/{name}: is weftd installed? (--weftd-namespace, --weftd-service)")
            })?;
        let ports = service.spec.and_then(|s| s.ports).unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.port == DEBUG_PORT || p.name.as_deref().is_some_and(|n| PORT_NAMES.contains(&n)))
            .with_context(|| {
                format!("Service {ns}/{name} has no debug port ({DEBUG_PORT}, named http-monitoring)")
            })?;
        let slices: Api<EndpointSlice> = Api::namespaced(client, ns);
        let slices = slices
            .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name}")))
            .await
            .map_err(|e| anyhow::anyhow!("listing the EndpointSlices of {ns}/{name}: {}", describe(&e)))?;
        for slice in slices
            .items
            .iter()
            .filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) == Some(name))
        {
            let target = slice.ports.iter().flatten().find(|p| p.name == port.name).and_then(|p| p.port);
            let ready = slice
                .endpoints
                .iter()
                .flatten()
                .find(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
            if let (Some(target), Some(endpoint)) = (target, ready)
                && let Some(address) = endpoint.addresses.first()
            {
                let host = if address.contains(':') { format!("[{address}]") } else { address.clone() };
                return Ok(format!("http://{host}:{target}"));
            }
        }
        bail!("Service {ns}/{name} has no ready endpoint for its debug port: is weftd running?")
    }
}
