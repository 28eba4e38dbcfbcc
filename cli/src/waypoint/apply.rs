//! `weftctl waypoint apply`: server-side applies the waypoint Gateway (field manager
//! `weftctl`, as istioctl's is `istioctl`), then, when asked, waits for weftd to program it
//! and labels the namespace `istio.io/use-waypoint=NAME`.

use super::{TrafficType, gateways, progress};
use crate::cluster::{ClusterArgs, describe};
use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::json;
use std::time::Duration;
use weft_controlplane::waypoints::objects::{DATAPLANE_MODE_LABEL, WAYPOINT_FOR_LABEL};

/// The namespace label that sends a namespace's traffic through a waypoint.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// The name of a namespace's waypoint unless told otherwise (istioctl's).
pub const DEFAULT_NAME: &str = "waypoint";
/// Weft's waypoint class.
pub const CLASS: &str = "weft-waypoint";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The namespace (default: the kubeconfig context's, else "default").
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The waypoint's name.
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// The traffic the waypoint handles: its istio.io/waypoint-for label (Istio's default
    /// for a waypoint without it is service).
    #[arg(long = "for", value_enum, value_name = "TYPE")]
    pub traffic: Option<TrafficType>,
    /// Once the waypoint is programmed, label the namespace istio.io/use-waypoint=NAME so
    /// its services use it.
    #[arg(long)]
    pub enroll_namespace: bool,
    /// With --enroll-namespace: replace the namespace's existing istio.io/use-waypoint.
    #[arg(long)]
    pub overwrite: bool,
    /// Wait until weftd has programmed the waypoint (implied by --enroll-namespace).
    #[arg(short, long)]
    pub wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "90s", value_parser = humantime_seconds)]
    pub waypoint_timeout: Duration,
}

/// `90s`, `2m`, `500ms` (istioctl's --waypoint-timeout is a Go duration).
fn humantime_seconds(s: &str) -> Result<Duration, String> {
    weft_controlplane::config::Durations::parse(s).map_err(|e| e.to_string())
}

/// The Gateway weftctl applies.
pub fn gateway(namespace: &str, name: &str, traffic: Option<TrafficType>) -> serde_json::Value {
    let mut gateway = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "gatewayClassName": CLASS,
            "listeners": [{ "name": "mesh", "port": 15008, "protocol": "HBONE" }],
        },
    });
    if let Some(traffic) = traffic {
        gateway["metadata"]["labels"] = json!({ WAYPOINT_FOR_LABEL: traffic.label_value() });
    }
    gateway
}

pub async fn run(client: Client, args: Args) -> anyhow::Result<()> {
    if args.name == "none" {
        bail!("invalid name provided for waypoint, 'none' is a reserved value");
    }
    let ns = ClusterArgs::namespace(&client, args.namespace.as_deref());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = namespaces
        .get_opt(&ns)
        .await
        .map_err(|e| anyhow::anyhow!("failed to get namespace {ns}: {}", describe(&e)))?
        .with_context(|| format!("namespace: {ns} not found"))?;
    let labels = namespace.metadata.labels.unwrap_or_default();
    if labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) != Some("ambient") {
        println!(
            "⚠️ Warning: namespace is not enrolled in ambient. Consider running\t`kubectl label namespace {ns} \
             {DATAPLANE_MODE_LABEL}=ambient`"
        );
    }
    if args.enroll_namespace
        && !args.overwrite
        && let Some(existing) = labels.get(USE_WAYPOINT_LABEL).filter(|w| **w != args.name)
    {
        bail!(
            "namespace ({ns}) already has an enrolled waypoint ({USE_WAYPOINT_LABEL}={existing}); add --overwrite \
             to replace it with {}",
            args.name
        );
    }

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &gateways());
    let object: DynamicObject = serde_json::from_value(gateway(&ns, &args.name, args.traffic))?;
    api.patch(&args.name, &PatchParams::apply("weftctl"), &Patch::Apply(&object)).await.map_err(
        |e| match &e {
            kube::Error::Api(status) if status.code == 404 => anyhow::anyhow!(
                "missing Kubernetes Gateway CRDs need to be installed before applying a waypoint: {}",
                describe(&e)
            ),
            _ => anyhow::anyhow!("applying waypoint {ns}/{}: {}", args.name, describe(&e)),
        },
    )?;
    println!("✅ waypoint {ns}/{} applied", args.name);

    if args.wait || args.enroll_namespace {
        progress::wait_programmed(&api, &ns, &args.name, args.waypoint_timeout).await?;
        println!("✅ waypoint {ns}/{} is ready!", args.name);
    }
    if args.enroll_namespace {
        let patch = json!({ "metadata": { "labels": { USE_WAYPOINT_LABEL: args.name } } });
        namespaces
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| anyhow::anyhow!("failed to label namespace {ns} with waypoint: {}", describe(&e)))?;
        println!("✅ namespace {ns} labeled with \"{USE_WAYPOINT_LABEL}: {}\"", args.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_istioctls_with_wefts_class() {
        let g = gateway("bookinfo", "waypoint", Some(TrafficType::All));
        assert_eq!(g["spec"]["gatewayClassName"], "weft-waypoint");
        assert_eq!(g["spec"]["listeners"], json!([{ "name": "mesh", "port": 15008, "protocol": "HBONE" }]));
        assert_eq!(g["metadata"]["labels"]["istio.io/waypoint-for"], "all");
        assert!(gateway("a", "b", None)["metadata"].get("labels").is_none());
    }
}
