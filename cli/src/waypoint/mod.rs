//! `weftctl waypoint apply | list | delete | status`: waypoints as Gateway API Gateways of
//! class `weft-waypoint`, with istioctl's behaviour (istioctl/pkg/waypoint): apply warns
//! when the namespace is not in the mesh, refuses to take over a namespace's
//! `istio.io/use-waypoint` without `--overwrite`, and with `--enroll-namespace` labels the
//! namespace once weftd has programmed the waypoint.
//!
//! - `apply.rs`: the Gateway weftctl applies, and the namespace checks and label.
//! - `show.rs`: `list` and `status`, tables of the waypoints' labels and conditions.
//! - `delete.rs`: deleting Gateways (Kubernetes deletes what weftd made for them).
//! - `progress.rs`: the wait for Programmed, shown as it goes.

mod apply;
mod delete;
mod progress;
mod show;

use crate::cluster::{self, ClusterArgs};
use crate::exit;
use clap::Subcommand;
use kube::api::{ApiResource, DynamicObject};
use std::process::ExitCode;
use weft_controlplane::waypoints::{classes, controller::gateway_resource};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply a waypoint (a Gateway of class weft-waypoint) to a namespace; with --wait or
    /// --enroll-namespace, wait until weftd has programmed it.
    Apply(apply::Args),
    /// List the waypoints of a namespace (or of all, -A) and whether they are programmed.
    List(show::ListArgs),
    /// Delete waypoints by name, or all of a namespace's (--all).
    Delete(delete::Args),
    /// Show each waypoint's Programmed condition: status, reason and message.
    Status(show::StatusArgs),
}

/// The traffic a waypoint handles (its `istio.io/waypoint-for` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrafficType {
    Service,
    Workload,
    All,
    None,
}

impl TrafficType {
    pub fn label_value(self) -> &'static str {
        match self {
            TrafficType::Service => "service",
            TrafficType::Workload => "workload",
            TrafficType::All => "all",
            TrafficType::None => "none",
        }
    }
}

pub fn run(args: Args) -> ExitCode {
    let result = cluster::block_on(async {
        let client = args.cluster.client().await?;
        match args.command {
            Command::Apply(a) => apply::run(client, a).await,
            Command::List(a) => show::list(client, a).await,
            Command::Delete(a) => delete::run(client, a).await,
            Command::Status(a) => show::status(client, a).await,
        }
    });
    match result.and_then(|inner| inner) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("weftctl waypoint: {e:#}");
            ExitCode::from(exit::FINDINGS)
        }
    }
}

fn gateways() -> ApiResource {
    gateway_resource()
}

/// A Gateway of one of the waypoint classes weftd handles.
fn is_waypoint(gateway: &DynamicObject) -> bool {
    gateway.data["spec"]["gatewayClassName"].as_str().and_then(classes::by_name).is_some()
}

/// The Gateway's condition of `type_`, if it has one.
fn condition<'a>(gateway: &'a DynamicObject, type_: &str) -> Option<&'a serde_json::Value> {
    gateway.data["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// Whether the Gateway's Programmed condition is True.
fn programmed(gateway: &DynamicObject) -> bool {
    condition(gateway, "Programmed").is_some_and(|c| c["status"] == "True")
}
