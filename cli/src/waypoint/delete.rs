//! `weftctl waypoint delete NAME… | --all`: deletes the Gateways; Kubernetes' garbage
//! collector then deletes the Deployment, Service and ServiceAccount weftd made for each
//! (they name the Gateway as their owner). A name that is no waypoint is reported and
//! skipped, as istioctl does.

use super::{gateways, is_waypoint};
use crate::cluster::{ClusterArgs, describe};
use anyhow::bail;
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The waypoints to delete.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Delete every waypoint of the namespace.
    #[arg(long)]
    pub all: bool,
    /// The namespace (default: the kubeconfig context's, else "default").
    #[arg(short, long)]
    pub namespace: Option<String>,
}

pub async fn run(client: Client, args: Args) -> anyhow::Result<()> {
    let ns = ClusterArgs::namespace(&client, args.namespace.as_deref());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &gateways());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("listing Gateways: {}", describe(&e)))?;
    let waypoints: Vec<String> =
        list.items.iter().filter(|g| is_waypoint(g)).filter_map(|g| g.metadata.name.clone()).collect();
    let names: Vec<String> = if args.all {
        waypoints.clone()
    } else {
        args.names
            .iter()
            .filter(|n| {
                let found = waypoints.contains(n);
                if !found {
                    println!("waypoint {ns}/{n} not found");
                }
                found
            })
            .cloned()
            .collect()
    };
    let mut failed = Vec::new();
    for name in names {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => println!("waypoint {ns}/{name} deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => println!("waypoint {ns}/{name} not found"),
            Err(e) => failed.push(format!("{name}: {}", describe(&e))),
        }
    }
    if !failed.is_empty() {
        bail!("cannot delete waypoint(s) in {ns}: {}", failed.join("; "));
    }
    Ok(())
}
