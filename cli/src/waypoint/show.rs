//! `weftctl waypoint list` and `status`: istioctl's tables, from the Gateways' labels and
//! conditions.

use super::{condition, gateways, is_waypoint};
use crate::cluster::{ClusterArgs, describe};
use crate::proxy_status::table;
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams},
};
use weft_controlplane::waypoints::objects::WAYPOINT_FOR_LABEL;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The namespace (default: the kubeconfig context's, else "default").
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The namespace (default: the kubeconfig context's, else "default").
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only this waypoint.
    pub name: Option<String>,
}

/// The waypoint Gateways of a namespace (or all), sorted by namespace and name.
async fn waypoints(client: &Client, namespace: Option<&str>) -> anyhow::Result<Vec<DynamicObject>> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &gateways()),
        None => Api::all_with(client.clone(), &gateways()),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("listing Gateways: {}", describe(&e)))?;
    let mut found: Vec<DynamicObject> = list.items.into_iter().filter(is_waypoint).collect();
    found.sort_by_key(|g| (g.metadata.namespace.clone(), g.metadata.name.clone()));
    Ok(found)
}

fn label<'a>(gateway: &'a DynamicObject, key: &str) -> Option<&'a str> {
    gateway.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

pub async fn list(client: Client, args: ListArgs) -> anyhow::Result<()> {
    let ns = (!args.all_namespaces).then(|| ClusterArgs::namespace(&client, args.namespace.as_deref()));
    let found = waypoints(&client, ns.as_deref()).await?;
    if found.is_empty() {
        println!("No waypoints found.");
        return Ok(());
    }
    let mut header = vec!["NAME", "REVISION", "TRAFFIC TYPE", "PROGRAMMED"];
    if ns.is_none() {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for g in &found {
        let programmed = condition(g, "Programmed").and_then(|c| c["status"].as_str()).unwrap_or("False");
        let mut row = vec![
            g.metadata.name.clone().unwrap_or_default(),
            label(g, "istio.io/rev").unwrap_or("default").to_owned(),
            label(g, WAYPOINT_FOR_LABEL).unwrap_or("none").to_owned(),
            programmed.to_owned(),
        ];
        if ns.is_none() {
            row.insert(0, g.metadata.namespace.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    print!("{}", table(&rows));
    Ok(())
}

pub async fn status(client: Client, args: StatusArgs) -> anyhow::Result<()> {
    let ns = (!args.all_namespaces).then(|| ClusterArgs::namespace(&client, args.namespace.as_deref()));
    let mut found = waypoints(&client, ns.as_deref()).await?;
    if let Some(name) = &args.name {
        found.retain(|g| g.metadata.name.as_ref() == Some(name));
        if found.is_empty() {
            anyhow::bail!("waypoint {}/{name} not found", ns.as_deref().unwrap_or("*"));
        }
    }
    if found.is_empty() {
        println!("No waypoints found.");
        return Ok(());
    }
    let mut header = vec!["NAME", "STATUS", "TYPE", "REASON", "MESSAGE"];
    if ns.is_none() {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for g in &found {
        // Istio shows the Programmed condition; an unaccepted Gateway's Accepted says why.
        let accepted = condition(g, "Accepted").filter(|c| c["status"] == "False");
        let shown = accepted.or_else(|| condition(g, "Programmed"));
        let field = |f: &str| shown.and_then(|c| c[f].as_str()).unwrap_or("").to_owned();
        let mut row = vec![
            g.metadata.name.clone().unwrap_or_default(),
            shown.map_or("Unknown".into(), |_| field("status")),
            shown.map_or("Programmed".into(), |_| field("type")),
            shown.map_or("NoStatus".into(), |_| field("reason")),
            shown.map_or("weftd has not reported on this waypoint".into(), |_| field("message")),
        ];
        if ns.is_none() {
            row.insert(0, g.metadata.namespace.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    print!("{}", table(&rows));
    Ok(())
}
