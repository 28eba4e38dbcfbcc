//! The waypoint benchmark: Envoy and weft-waypoint serving the same weftd config on the
//! test bed (`cargo xtask bench` builds and calls this; `--waypoint-only` runs it alone).

use anyhow::{Context, Result};
use clap::Parser;
use std::{path::PathBuf, time::Duration};
use weft_tests::wpbench::{self, Settings};

#[derive(Parser)]
#[command(about = "Envoy against weft-waypoint: the same VirtualService, the same topology, side by side")]
struct Args {
    /// Write the table into this BENCHMARKS.md (between its markers).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Measured seconds of each load run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Warm-up seconds before each measured window.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Connection counts of the load runs.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64])]
    connections: Vec<usize>,
    /// Runs of every load case per waypoint; each figure is the median over them.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Idle HTTP/2 connections opened at most.
    #[arg(long, default_value_t = 50_000)]
    idle_cap: u64,
    /// Stop opening idle connections when a waypoint's RSS has grown this much (MiB).
    #[arg(long, default_value_t = 3072.0)]
    idle_ceiling_mib: f64,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let settings = Settings {
        warmup: Duration::from_secs(a.warmup_secs),
        duration: Duration::from_secs(a.secs),
        connections: a.connections,
        rounds: a.rounds,
        idle_cap: a.idle_cap,
        idle_ceiling_mib: a.idle_ceiling_mib,
        ..Settings::default()
    };
    let report = wpbench::run(&settings)?;
    let table = report.table();
    println!("{table}");
    if let Some(path) = a.write {
        weft_tests::benchmarks_md::record(&path, BEGIN, END, &table, "", "")
            .with_context(|| format!("updating {}", path.display()))?;
        println!("recorded in {}", path.display());
    }
    Ok(())
}

const BEGIN: &str = "<!-- wpbench:begin -->";
const END: &str = "<!-- wpbench:end -->";
