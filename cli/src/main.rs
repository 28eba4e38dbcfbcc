//! weftctl: Weft's command line. `main` only parses the command line and dispatches; each
//! subcommand lives in its own module (`analyze.rs`, `proxy_status.rs`, `config_dump.rs`)
//! with its own `Args` and `run`; `weftd.rs` is how the latter two ask weftd; `cluster.rs`
//! is how every subcommand that talks to a cluster reaches it (kube-rs), and `waypoint/`
//! holds `weftctl waypoint`.

mod analyze;
mod cluster;
mod config_dump;
mod find_weftd;
mod profile;
mod proxy_status;
mod waypoint;
mod weftd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Weft's command line: analyze Istio configuration offline, inspect a running mesh.
#[derive(Debug, Parser)]
#[command(name = "weftctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a directory of Kubernetes, Istio and Gateway API YAML the way weftd would,
    /// and print every error and warning with its file and line.
    Analyze(analyze::Args),
    /// Show every proxy connected to weftd and whether it is in sync, type by type
    /// (SYNCED / STALE / NOT SENT), with the last rejection (NACK) of each.
    ProxyStatus(proxy_status::Args),
    /// Show the config weftd has given one proxy (sent and not rejected): each type's
    /// resources with their versions, summarised or (--decode) in full.
    ConfigDump(config_dump::Args),
    /// The charts' profiles (charts/profiles): list them, dump the values one gives each
    /// chart, diff two.
    Profile(profile::Args),
    /// Manage waypoints (Gateway API Gateways of class weft-waypoint) in a cluster: apply,
    /// list, delete, status.
    Waypoint(waypoint::Args),
}

/// Exit codes shared by the subcommands.
pub mod exit {
    /// Everything is fine (warnings may have been printed).
    pub const OK: u8 = 0;
    /// The input has errors.
    pub const FINDINGS: u8 = 1;
    /// Bad usage, or the input could not be read at all: a directory that is not there,
    /// weftd unreachable or not knowing the proxy asked about (clap also exits 2 on usage
    /// errors).
    pub const USAGE: u8 = 2;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::ProxyStatus(args) => proxy_status::run(args),
        Command::ConfigDump(args) => config_dump::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Waypoint(args) => waypoint::run(args),
    }
}
