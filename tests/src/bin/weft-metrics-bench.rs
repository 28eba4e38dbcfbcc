//! What a Prometheus scrape costs the agent and the waypoint (`cargo xtask bench` builds and
//! calls this; `cargo xtask bench --metrics-only` runs it alone). Root: it builds a test bed.

use anyhow::{Context, Result};
use clap::Parser;
use std::{path::PathBuf, time::Duration};
use weft_tests::metricsbench::{self, Settings};

#[derive(Parser)]
#[command(about = "The agent's and the waypoint's /metrics: CPU per scrape against their CPU under load")]
struct Args {
    /// Write the table into this BENCHMARKS.md (between its markers).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Services with traffic at each measured step (one label set each in both processes).
    #[arg(long, value_delimiter = ',', default_values_t = [16, 250, 1000])]
    steps: Vec<usize>,
    /// Seconds of load for the processes' CPU under load.
    #[arg(long, default_value_t = 20.0)]
    load_secs: f64,
    /// Pause between two requests of one load client (ms).
    #[arg(long, default_value_t = 2)]
    load_interval_ms: u64,
    /// Load clients at once.
    #[arg(long, default_value_t = 4)]
    load_concurrency: u32,
    /// Scrapes per process and step (CPU time is counted in 10 ms ticks: many scrapes make
    /// a fine figure).
    #[arg(long, default_value_t = 100)]
    scrapes: usize,
    /// Pause between the starts of two scrapes (ms).
    #[arg(long, default_value_t = 100)]
    scrape_interval_ms: u64,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let mut steps = a.steps;
    steps.sort_unstable();
    steps.dedup();
    let settings = Settings {
        steps,
        load_secs: a.load_secs,
        load_interval_ms: a.load_interval_ms,
        load_concurrency: a.load_concurrency.max(1),
        scrapes: a.scrapes.max(1),
        scrape_interval: Duration::from_millis(a.scrape_interval_ms),
    };
    let report = metricsbench::run(&settings)?;
    let table = report.table();
    println!("{table}");
    if let Some(path) = a.write {
        weft_tests::benchmarks_md::record(&path, BEGIN, END, &table, "## Metrics endpoints", SECTION)
            .with_context(|| format!("updating {}", path.display()))?;
        println!("recorded in {}", path.display());
    }
    Ok(())
}

const BEGIN: &str = "<!-- metricsbench:begin -->";
const END: &str = "<!-- metricsbench:end -->";

/// Written once, above the markers, when BENCHMARKS.md has no such section yet.
const SECTION: &str = "## Metrics endpoints

Command: `cargo xtask bench` runs `weft-metrics-bench` after the waypoint benchmark;
`cargo xtask bench --metrics-only [--metrics ARGS]` runs it alone (`--metrics --steps 16,100
--load-secs 5 --scrapes 20` is a quick run). The issue asks that the agent's and the
waypoint's metrics endpoints cost under 1 % of their CPU at 1,000 series scraped every 15 s.

The series come from real traffic on the test bed: N Services in one ambient namespace,
all selecting one backend pod and all sent through the namespace's weft-waypoint; one HTTP
request from a client pod to each Service makes one label set per Service in the client's
agent (`reporter=\"source\"`, 4 samples: connections opened and closed, bytes each way)
and in the waypoint (its chain per Service: the request counter and three histograms with
Envoy's 19 buckets, 67 samples). A series in Prometheus's sense is one sample line, so a
step is judged once the scrape holds at least 1,000 samples; the 1,000-Services step is
1,000 label sets in each process, far beyond.

- **Load**: `weft-testapp http` from the client pod to one Service: 4 clients, each making
  one request per connection with 2 ms between requests, for 20 s; each process's user +
  system CPU (`/proc/PID/stat`, all threads) over the window.
- **CPU per scrape**: with no load, 100 GETs of `/metrics` 100 ms apart; the process's CPU
  over them less its CPU over as long an idle window, per scrape. At one scrape every 15 s
  that is a share of one core, and, divided by the process's CPU per second under the load,
  a share of its CPU.
- **Scrape wall time**: the median GET, as a scraper sees it (the admin endpoint; the
  `--metrics-addr` port on 15020 serves the same text).
";
