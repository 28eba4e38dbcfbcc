//! `cargo xtask bench`'s waypoint benchmark: the same VirtualService and DestinationRule
//! (a 90/10 split between subsets, two retries on 5xx, a 5 s timeout), served by weftd to a
//! real Envoy and to weft-waypoint in the same topology, driven by the same client, side
//! by side with ratios (weft / Envoy).
//!
//! What is real and what is played (`mesh.rs` draws it): weftd, both waypoints, their
//! mesh certificates from weftd's CA, every hop over HBONE (mTLS HTTP/2 CONNECT) across
//! the bed's veths and bridge. The agents at the two ends are not run: on this 2-core
//! machine two agents would take more CPU per request than the waypoint does (each
//! carries every request twice: application leg and HBONE leg), so requests/s and
//! latency would measure them, not the waypoint. Instead the load client speaks HBONE
//! itself from the client pod, with the client's mesh certificate, on pooled connections
//! as the agent would, and the reviews pods serve HBONE themselves (`backend.rs`).
//!
//! The phases, each for both kinds:
//! - `load.rs`: closed-loop load, HTTP/1.1 and HTTP/2 at 16 and 64 connections, for each
//!   case Envoy then weft-waypoint (interleaved, so a slow minute of the shared machine
//!   hits both): requests/s, nearest-rank p50/p99, and the waypoint's CPU seconds over
//!   the measured window (`procstat.rs`, /proc/PID/stat). Every case runs in several
//!   rounds and each figure is the median over them: one run on a shared 2-core machine
//!   moves by ±15 %.
//! - peak RSS (VmHWM) after the load runs;
//! - `idle.rs`: idle HTTP/2 connections opened until 50,000 are held or memory runs high:
//!   how many fit in 50 MiB of RSS growth, and whether 50,000 are held.

mod backend;
mod idle;
mod load;
mod mesh;
pub(crate) mod procstat;

pub use idle::IdleResult;
pub use load::{HttpVersion, LoadResult};

use crate::Pod;
use anyhow::{Context, Result};
use std::{fmt::Write as _, time::Duration};

/// What the runs are.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Closed-loop load before the measured window, not counted.
    pub warmup: Duration,
    /// The measured window of each load run.
    pub duration: Duration,
    /// Connection counts of the load runs.
    pub connections: Vec<usize>,
    /// Runs of every load case per kind; each figure is the median over them.
    pub rounds: usize,
    /// The memory the idle-connection figure is read at (RSS growth, MiB).
    pub idle_limit_mib: f64,
    /// Idle connections opened at most.
    pub idle_cap: u64,
    /// Opening idle connections stops when the waypoint's RSS has grown this much (MiB).
    pub idle_ceiling_mib: f64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            connections: vec![16, 64],
            rounds: 3,
            idle_limit_mib: 50.0,
            idle_cap: 50_000,
            idle_ceiling_mib: 3072.0,
        }
    }
}

/// One load case, both kinds, every round.
pub struct Case {
    pub version: HttpVersion,
    pub connections: usize,
    pub envoy: Vec<LoadResult>,
    pub weft: Vec<LoadResult>,
    /// Share of requests subset v2 answered over every run (the split asks 10 %).
    pub v2_share: f64,
}

/// The median of `f` over `runs` (the mean of the middle two for an even count).
fn median(runs: &[LoadResult], f: impl Fn(&LoadResult) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Both kinds' figures.
pub struct Report {
    pub settings: Settings,
    pub cases: Vec<Case>,
    /// VmHWM after the load runs (MiB).
    pub envoy_peak_mib: f64,
    pub weft_peak_mib: f64,
    pub envoy_idle: IdleResult,
    pub weft_idle: IdleResult,
}

/// Starts the mesh, runs every phase, tears everything down (also on error: the bed's
/// guards remove namespaces, cgroups and processes on drop).
pub fn run(settings: &Settings) -> Result<Report> {
    raise_open_files_limit()?;
    let mesh = mesh::Mesh::start()?;
    let kinds = [&mesh.envoy, &mesh.weft];
    for waypoint in kinds {
        let target = mesh.target(waypoint)?;
        let before = mesh.backends.counts();
        in_pod(&mesh.client, async {
            load::wait_routed(&target, Duration::from_secs(60), || {
                let now = mesh.backends.counts();
                now.iter().zip(&before).all(|(n, b)| n > b)
            })
            .await
        })
        .with_context(|| format!("{:?} waypoint:\n{}", waypoint.kind(), waypoint.stderr()))?;
    }

    let mut cases = Vec::new();
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        for &connections in &settings.connections {
            let before = mesh.backends.counts();
            let (mut envoy, mut weft) = (Vec::new(), Vec::new());
            for round in 1..=settings.rounds.max(1) {
                for waypoint in kinds {
                    let target = mesh.target(waypoint)?;
                    let r = in_pod(&mesh.client, async {
                        load::run(
                            &target,
                            version,
                            connections,
                            settings.warmup,
                            settings.duration,
                            waypoint.pid(),
                        )
                        .await
                    })
                    .with_context(|| {
                        format!(
                            "{:?} waypoint, {} × {connections}, round {round}:\n{}",
                            waypoint.kind(),
                            version.label(),
                            waypoint.stderr()
                        )
                    })?;
                    eprintln!(
                        "wpbench: {:?} {} × {connections} round {round}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, {:.3} CPU s / 10k, {} errors",
                        waypoint.kind(),
                        version.label(),
                        r.requests_per_sec(),
                        r.p50_us,
                        r.p99_us,
                        r.cpu_secs_per_10k(),
                        r.errors
                    );
                    match waypoint.kind() {
                        crate::waypoint::WaypointKind::Envoy => envoy.push(r),
                        crate::waypoint::WaypointKind::Weft => weft.push(r),
                    }
                }
            }
            let after = mesh.backends.counts();
            let served: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            let v2_share = served[1] as f64 / served.iter().sum::<u64>().max(1) as f64;
            cases.push(Case { version, connections, envoy, weft, v2_share });
        }
    }
    let envoy_peak_mib = procstat::rss_mib(mesh.envoy.pid())?.1;
    let weft_peak_mib = procstat::rss_mib(mesh.weft.pid())?.1;

    let mut idle = Vec::new();
    for waypoint in kinds {
        let target = mesh.target(waypoint)?;
        let r = in_pod(&mesh.client, async {
            idle::run(
                &target,
                waypoint.pid(),
                settings.idle_limit_mib,
                settings.idle_cap,
                settings.idle_ceiling_mib,
            )
            .await
        })
        .with_context(|| {
            format!("{:?} waypoint, idle connections:\n{}", waypoint.kind(), waypoint.stderr())
        })?;
        let mut r = r;
        if let Some(envoy) = waypoint.envoy() {
            // Where Envoy stopped taking connections, if a circuit breaker did it.
            let (_, stats) = envoy.admin("/stats?filter=cx_overflow")?;
            let overflowed: Vec<&str> = stats.lines().filter(|l| !l.ends_with(": 0")).collect();
            if !overflowed.is_empty() {
                r.stopped = format!("{} (Envoy's stats: {})", r.stopped, overflowed.join(", "));
            }
        }
        eprintln!("wpbench: {:?} idle: {r:?}", waypoint.kind());
        idle.push(r);
    }
    let weft_idle = idle.pop().expect("two runs");
    let envoy_idle = idle.pop().expect("two runs");
    Ok(Report { settings: settings.clone(), cases, envoy_peak_mib, weft_peak_mib, envoy_idle, weft_idle })
}

/// Runs `f` to completion on a one-thread runtime in a thread inside `pod`'s network
/// namespace, so every socket it opens is the pod's. One thread: the client takes at most
/// one core from the waypoint.
fn in_pod<T: Send>(pod: &Pod, f: impl Future<Output = Result<T>> + Send) -> Result<T> {
    pod.run(|| tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f))
}

/// Idle connections ride pooled HBONE connections (100 streams each), so 50,000 of them
/// are ~500 sockets here and in the waypoint; raised anyway, inherited by the waypoints.
fn raise_open_files_limit() -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let want = hard.max(1 << 20);
    setrlimit(Resource::RLIMIT_NOFILE, want, want)
        .or_else(|_| setrlimit(Resource::RLIMIT_NOFILE, hard, hard))
        .context("raising RLIMIT_NOFILE")
}

/// A row: metric, Envoy, weft-waypoint, ratio, target, met.
struct Row {
    metric: String,
    envoy: String,
    weft: String,
    ratio: Option<f64>,
    target: &'static str,
    met: Option<bool>,
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let push =
            |rows: &mut Vec<Row>, metric: String, e: f64, w: f64, target: &'static str, met: Option<bool>| {
                rows.push(Row { metric, envoy: num(e), weft: num(w), ratio: Some(w / e), target, met });
            };
        for c in &self.cases {
            let case = format!("{} × {}", c.version.label(), c.connections);
            let both = |f: fn(&LoadResult) -> f64| (median(&c.envoy, f), median(&c.weft, f));
            let (e, w) = both(LoadResult::requests_per_sec);
            push(&mut rows, format!("{case}: requests/s"), e, w, "—", None);
            let (e, w) = both(|r| r.p50_us);
            push(&mut rows, format!("{case}: p50 latency (µs)"), e, w, "—", None);
            let (e, w) = both(|r| r.p99_us);
            push(&mut rows, format!("{case}: p99 latency (µs)"), e, w, "≤ 1× Envoy", Some(w <= e));
            let (ec, wc) = both(LoadResult::cpu_secs_per_10k);
            push(&mut rows, format!("{case}: waypoint CPU s per 10,000 requests"), ec, wc, "—", None);
            let (er, wr) = both(LoadResult::requests_per_cpu_sec);
            push(
                &mut rows,
                format!("{case}: requests per waypoint CPU second"),
                er,
                wr,
                "≥ 1.5× Envoy",
                Some(wr >= 1.5 * er),
            );
        }
        let (e, w) = (self.envoy_peak_mib, self.weft_peak_mib);
        push(
            &mut rows,
            "peak RSS after the load runs, VmHWM (MiB)".into(),
            e,
            w,
            "≤ 0.5× Envoy",
            Some(w <= 0.5 * e),
        );
        let (ei, wi) = (&self.envoy_idle, &self.weft_idle);
        let limit = self.settings.idle_limit_mib;
        push(
            &mut rows,
            "RSS before the idle connections (MiB)".into(),
            ei.baseline_mib,
            wi.baseline_mib,
            "—",
            None,
        );
        let cap = self.settings.idle_cap;
        let held_at = |r: &IdleResult| {
            let growth = r.rss_mib - r.baseline_mib;
            match r.at_limit {
                Some(n) => (n as f64, n.to_string()),
                None if r.opened >= cap => (r.opened as f64, format!("≥ {} (+{growth:.0} MiB)", r.opened)),
                // Stopped short of the limit (see the note below the table): extrapolated
                // from its own growth per connection.
                None => {
                    let n = r.opened as f64 * limit / growth.max(0.1);
                    (n, format!("≈ {n:.0} ({} measured, +{growth:.0} MiB)", r.opened))
                }
            }
        };
        let ((en, es), (wn, ws)) = (held_at(ei), held_at(wi));
        rows.push(Row {
            metric: format!("idle HTTP/2 connections held within {limit:.0} MiB of RSS growth"),
            envoy: es,
            weft: ws,
            ratio: Some(wn / en),
            target: "—",
            met: None,
        });
        push(
            &mut rows,
            "RSS per idle HTTP/2 connection (KiB)".into(),
            ei.kib_per_connection(),
            wi.kib_per_connection(),
            "—",
            None,
        );
        rows.push(Row {
            metric: format!("idle HTTP/2 connections held of {cap} opened (RSS with them, MiB)"),
            envoy: format!("{} of {} ({:.0})", ei.held, ei.opened, ei.rss_mib),
            weft: format!("{} of {} ({:.0})", wi.held, wi.opened, wi.rss_mib),
            ratio: None,
            target: "50,000 held",
            met: Some(wi.held >= 50_000),
        });
        rows
    }

    /// The Markdown table, with the notes a reader needs to trust it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "Each load run: {:.0} s of closed-loop load after {:.0} s of warm-up; each load figure is the \
             median of {} rounds (Envoy and weft-waypoint interleaved); both waypoints with one worker \
             thread; the client, the backends and both waypoints share the machine's cores.\n",
            s.duration.as_secs_f64(),
            s.warmup.as_secs_f64(),
            s.rounds.max(1)
        );
        out.push_str(
            "| metric | Envoy | weft-waypoint | ratio | target | met |\n|---|---:|---:|---:|---|---|\n",
        );
        for r in self.rows() {
            let ratio = r.ratio.map_or("—".into(), |x| format!("{x:.2}×"));
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let _ =
                writeln!(out, "| {} | {} | {} | {ratio} | {} | {met} |", r.metric, r.envoy, r.weft, r.target);
        }
        let errors: Vec<String> = self
            .cases
            .iter()
            .map(|c| {
                let errors = |runs: &[LoadResult]| runs.iter().map(|r| r.errors).sum::<u64>();
                (c, errors(&c.envoy), errors(&c.weft))
            })
            .filter(|(_, e, w)| e + w > 0)
            .map(|(c, e, w)| {
                format!("{} × {}: Envoy {e}, weft-waypoint {w}", c.version.label(), c.connections)
            })
            .collect();
        let _ = writeln!(
            out,
            "\nFailed requests: {}. Share of requests answered by v2 (the split asks 10 %): {}.",
            if errors.is_empty() { "none".to_owned() } else { errors.join("; ") },
            self.cases.iter().map(|c| format!("{:.1} %", c.v2_share * 100.0)).collect::<Vec<_>>().join(", ")
        );
        let _ = writeln!(
            out,
            "Idle connections stopped: Envoy: {}; weft-waypoint: {}.",
            self.envoy_idle.stopped, self.weft_idle.stopped
        );
        out
    }
}
