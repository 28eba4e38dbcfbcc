//! Runs Weft's benchmarks on the test bed (`cargo xtask bench` builds and calls this).

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use weft_tests::benchmark::{self, Settings};

#[derive(Parser)]
#[command(about = "Pod-to-pod benchmarks: direct, through HBONE, and through the plain L4 path")]
struct Args {
    /// Write the table into this BENCHMARKS.md (between its markers).
    #[arg(long)]
    write: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    throughput_secs: u64,
    #[arg(long, default_value_t = 10_000)]
    latency_count: u64,
    #[arg(long, default_value_t = 5)]
    latency_runs: usize,
    #[arg(long, default_value_t = 5)]
    connrate_secs: u64,
    #[arg(long, default_value_t = 2)]
    connrate_threads: usize,
    #[arg(long, default_value_t = 1000)]
    pooled_streams: usize,
}

fn main() -> Result<()> {
    let a = Args::parse();
    if std::env::var_os("WEFT_AGENT_LOG").is_none() {
        // SAFETY: single-threaded here, before any thread is spawned.
        unsafe { std::env::set_var("WEFT_AGENT_LOG", "info") };
    }
    let settings = Settings {
        throughput_secs: a.throughput_secs,
        latency_count: a.latency_count,
        latency_runs: a.latency_runs,
        connrate_secs: a.connrate_secs,
        connrate_threads: a.connrate_threads,
        pooled_streams: a.pooled_streams,
    };
    let report = benchmark::run(&settings)?;
    let table = report.table();
    println!("{table}");
    if let Some(path) = a.write {
        weft_tests::benchmarks_md::record(&path, BEGIN, END, &table, "", "")
            .with_context(|| format!("updating {}", path.display()))?;
        println!("recorded in {}", path.display());
    }
    Ok(())
}

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";
