//! weftd at scale: first snapshot, memory, and push latency to many delta subscribers
//! (`cargo xtask bench` builds and calls this after the data-path benchmark; no root needed).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, time::Duration};
use weft_tests::cpbench::{self, MeshSpec, Settings};

/// As weftd (controlplane/src/main.rs): the weftd side's memory is measured with its allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    about = "Control plane scale: a synthetic 10k-service mesh through weftd's store, translation and xDS server"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    internal: Option<Internal>,
    /// Write the table into this BENCHMARKS.md (between its cpbench markers).
    #[arg(long)]
    write: Option<PathBuf>,
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Pods per service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    #[arg(long, default_value_t = 20)]
    namespaces: usize,
    /// Namespaces labelled ambient, each with a waypoint.
    #[arg(long, default_value_t = 4)]
    ambient_namespaces: usize,
    /// Services with a VirtualService and a DestinationRule.
    #[arg(long, default_value_t = 1000)]
    routed: usize,
    /// Subscriber counts, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    subscribers: Vec<usize>,
    /// One-endpoint changes measured per phase.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    #[arg(long, default_value_t = 10)]
    debounce_ms: u64,
    /// Subscribers connected at once; the next wave waits until these hold the initial state.
    #[arg(long, default_value_t = 25)]
    connect_batch: usize,
    /// Stop connecting subscribers when MemAvailable falls below this.
    #[arg(long, default_value_t = 4096)]
    mem_reserve_mib: u64,
    /// Longest a phase may take to connect its subscribers (extrapolated); beyond it, the phase
    /// runs on a proportionally smaller mesh.
    #[arg(long, default_value_t = 150)]
    connect_budget_secs: u64,
    /// Run every phase on the full mesh even when extrapolation says it will not fit.
    #[arg(long)]
    no_shrink: bool,
    /// Leave out the Kubernetes mode rows (the weftd binary on the fake API server).
    #[arg(long)]
    no_kubernetes: bool,
}

#[derive(Subcommand)]
enum Internal {
    /// The weftd side, started by the driver (JSON lines on stdin/stdout).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        mesh: String,
        #[arg(long)]
        debounce_ms: u64,
    },
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(Internal::Serve { mesh, debounce_ms }) = a.internal {
        let mesh: MeshSpec = serde_json::from_str(&mesh).context("--mesh")?;
        return cpbench::serve(&mesh, Duration::from_millis(debounce_ms));
    }
    let settings = Settings {
        mesh: MeshSpec {
            services: a.services,
            endpoints: a.endpoints,
            nodes: a.nodes,
            namespaces: a.namespaces.min(a.services).max(1),
            ambient_namespaces: a.ambient_namespaces.min(a.namespaces),
            routed: a.routed.min(a.services),
        },
        subscribers: a.subscribers,
        changes: a.changes,
        debounce: Duration::from_millis(a.debounce_ms),
        connect_batch: a.connect_batch.max(1),
        mem_reserve_mib: a.mem_reserve_mib,
        connect_budget: Duration::from_secs(a.connect_budget_secs),
        no_shrink: a.no_shrink,
        exe: std::env::current_exe().context("locating this binary to start the weftd side")?,
        // Beside this binary (or in $WEFT_BIN_DIR), as the other benchmarks find theirs.
        weftd: (!a.no_kubernetes).then(|| weft_tests::bins::path("weftd")),
    };
    let report = cpbench::run(&settings)?;
    let table = report.table();
    println!("{table}");
    if let Some(path) = a.write {
        weft_tests::benchmarks_md::record(&path, BEGIN, END, &table, "## Control plane scale", SECTION)
            .with_context(|| format!("updating {}", path.display()))?;
        println!("recorded in {}", path.display());
    }
    Ok(())
}

const BEGIN: &str = "<!-- cpbench:begin -->";
const END: &str = "<!-- cpbench:end -->";

/// Written once, above the markers, when BENCHMARKS.md has no control plane section yet.
const SECTION: &str = "## Control plane scale

Command: `cargo xtask bench` runs `weft-cp-bench` after the data-path benchmark (no root
needed; `cargo xtask bench --cp ARGS` passes it arguments, and `weft-cp-bench --services 1000
--subscribers 20,200` is a quick run). It builds a synthetic mesh — 10,000 Services with 10
Pods each on 100 nodes, 1,000 VirtualServices (header match, 90/10 split over subsets v1/v2)
with their DestinationRules, 4 of 20 namespaces ambient, each with a Gateway API waypoint —
and hands it to weftd's config store as one Kubernetes relist. The weftd side (store →
`Translator` → `XdsServer` on 127.0.0.1, jemalloc as in weftd) runs in a child process, so
its peak RSS (VmHWM) and CPU time are its own. The subscribers run in the driver process on
the same cores: delta ADS streams on their own HTTP/2 connections, each with its own node
(`NODE_NAME`), wildcard ADDRESS, an ACK per response, and no state kept, as an agent looks
on the wire.

- **First snapshot**: the relist into the store (parse, validate, cross-check), the full
  translation, and the server's indexing until the snapshot is live (10 ms debounce
  included).
- **One endpoint change → every subscriber holds it**: a Pod's IP changes (a watch event
  into the store); measured from the store receiving it, through incremental translation,
  debounce and push, to each subscriber having decoded that workload with the new IP;
  nearest-rank percentiles over all subscribers and changes. **Publish → subscriber** is
  the part after translation.
- **CPU per push**: the weftd side's user + system time from the store update until every
  subscriber has the change and has ACKed.
- A phase runs on a proportionally smaller mesh (the table says so) when extrapolating the
  previous phase shows the full mesh would not fit in memory or in the time budget at that
  many subscribers.
- **Kubernetes mode** (the second column; `--no-kubernetes` leaves it out): the weftd
  binary with `--kubernetes-url` on the repository's fake API server (`tests/src/kubeapi`,
  the real list/watch protocol), which holds the same mesh and runs in the driver process.
  First snapshot is from spawning weftd to a subscriber holding every address (process
  start, CA, listing every kind in pages of 500 as kube-rs does, the store, translation);
  a change is a Pod's new IP applied to the API server, measured to each subscriber. The
  fake server's own time to list the mesh is a row of its own, so it is seen not to be
  what is measured.
";
