//! Runs Weft's benchmarks on the test bed (`cargo xtask bench` builds and calls this).

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use weft_tests::benchmark::{self, Settings};

#[derive(Parser)]
#[command(about = "Pod-to-pod benchmarks, direct versus through the Weft agents")]
struct Args {
    /// Write the table into this BENCHMARKS.md (between its markers).
    #[arg(long)]
    write: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    throughput_secs: u64,
    #[arg(long, default_value_t = 20_000)]
    latency_count: u64,
    #[arg(long, default_value_t = 5)]
    connrate_secs: u64,
    #[arg(long, default_value_t = 2)]
    connrate_threads: usize,
    #[arg(long, default_value_t = 1000)]
    idle_conns: usize,
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
        connrate_secs: a.connrate_secs,
        connrate_threads: a.connrate_threads,
        idle_conns: a.idle_conns,
    };
    let report = benchmark::run(&settings)?;
    let table = report.table();
    println!("{table}");
    if let Some(path) = a.write {
        record(&path, &table).with_context(|| format!("updating {}", path.display()))?;
        println!("recorded in {}", path.display());
    }
    Ok(())
}

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";

/// Replaces the text between the markers in BENCHMARKS.md, leaving the prose around it.
fn record(path: &PathBuf, table: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let machine = format!(
        "Measured {} on {} cores, kernel {}, with `cargo xtask bench`.",
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    );
    let block = format!("{BEGIN}\n{machine}\n\n{table}{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{old}\n{block}\n"),
    };
    std::fs::write(path, new)?;
    Ok(())
}
