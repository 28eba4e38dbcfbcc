//! `cargo xtask bench`: pod→pod across two nodes, directly and through the agents, in one
//! run, printed side by side as ratios, plus the agents' CPU and memory.
//!
//! Two pairs of pods on the same two nodes: `direct` in a namespace without the ambient
//! label, `mesh` in one with it. The same test app measures both, so the only difference
//! is the mesh.

use crate::{
    Pod, Proc, bins,
    scenario::{self, Scenario},
};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::{fmt::Write as _, process::Command, time::Duration};

const PORT: u16 = 9080;

/// One row of the table.
pub struct Row {
    pub metric: &'static str,
    pub unit: &'static str,
    pub direct: f64,
    pub weft: f64,
    /// What the issue asks for, as text.
    pub target: String,
    /// Whether `weft` meets it.
    pub met: bool,
}

pub struct Report {
    pub rows: Vec<Row>,
    pub agent_cpu_secs: f64,
    pub agent_peak_rss_mib: f64,
    pub idle_rss_mib: f64,
    pub idle_conns: usize,
}

pub struct Settings {
    pub throughput_secs: u64,
    pub latency_count: u64,
    pub connrate_secs: u64,
    /// Client threads opening connections at once.
    pub connrate_threads: usize,
    pub idle_conns: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            throughput_secs: 10,
            latency_count: 20_000,
            connrate_secs: 5,
            connrate_threads: 2,
            idle_conns: 1000,
        }
    }
}

fn app(pod: &Pod, args: &[&str], timeout: Duration) -> Result<Value> {
    let r = scenario::client(pod, args, timeout)?;
    if r.code != 0 {
        bail!("weft-testapp {args:?} in {} failed: {:?}", pod.name(), r);
    }
    Ok(r.json)
}

fn num(v: &Value, key: &str) -> Result<f64> {
    v[key].as_f64().with_context(|| format!("no {key} in {v}"))
}

/// (CPU seconds, peak RSS MiB, current RSS MiB) of a process, from /proc.
fn proc_usage(pid: u32) -> Result<(f64, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("stat format")?.1.split_whitespace().collect();
    // After "pid (comm)": state is field 0; utime and stime are fields 11 and 12.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc_sysconf(2) } as f64; // _SC_CLK_TCK
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((ticks / hz, kib("VmHWM:") / 1024.0, kib("VmRSS:") / 1024.0))
}

unsafe extern "C" {
    #[link_name = "sysconf"]
    fn libc_sysconf(name: i32) -> i64;
}

pub fn run(settings: &Settings) -> Result<Report> {
    let mut s = Scenario::new("bench")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let dclient = s.bed.pod(&n1, "direct", "direct-client")?;
    let dserver = s.bed.pod(&n2, "direct", "direct-server")?;
    let mclient = s.bed.pod(&n1, "mesh", "mesh-client")?;
    let mserver = s.bed.pod(&n2, "mesh", "mesh-server")?;
    s.config
        .namespace("direct", false)
        .namespace("mesh", true)
        .pod(&dclient, "direct", &[], &[])
        .pod(&dserver, "direct", &[], &[PORT])
        .pod(&mclient, "mesh", &[], &[])
        .pod(&mserver, "mesh", &[], &[PORT]);
    s.config.write()?;
    let mut a1 = s.agent(&n1)?;
    let mut a2 = s.agent(&n2)?;
    a1.wait_enrolled(&["mesh-client"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["mesh-server"], Duration::from_secs(10))?;
    let _ds: Proc = scenario::serve(&dserver, "v1", &[PORT])?;
    let _ms: Proc = scenario::serve(&mserver, "v1", &[PORT])?;
    let dto = format!("{}:{PORT}", dserver.ip());
    let mto = format!("{}:{PORT}", mserver.ip());
    let pids = [a1.proc().pid(), a2.proc().pid()];
    let cpu = || -> Result<f64> { Ok(proc_usage(pids[0])?.0 + proc_usage(pids[1])?.0) };
    let cpu_start = cpu()?;

    let mut rows = Vec::new();
    let secs = settings.throughput_secs.to_string();
    let long = Duration::from_secs(settings.throughput_secs + 60);
    eprintln!("bench: throughput, {secs} s each way…");
    let d = num(&app(&dclient, &["throughput", "--to", &dto, "--secs", &secs], long)?, "gbit_per_s")?;
    let w = num(&app(&mclient, &["throughput", "--to", &mto, "--secs", &secs], long)?, "gbit_per_s")?;
    rows.push(Row {
        metric: "bulk throughput",
        unit: "Gbit/s",
        direct: d,
        weft: w,
        target: "≥ 0.65× direct".into(),
        met: w >= 0.65 * d,
    });

    eprintln!("bench: latency, {} round trips each way…", settings.latency_count);
    let count = settings.latency_count.to_string();
    let dl = app(&dclient, &["latency", "--to", &dto, "--count", &count], long)?;
    let wl = app(&mclient, &["latency", "--to", &mto, "--count", &count], long)?;
    let (d50, w50) = (num(&dl, "p50_us")?, num(&wl, "p50_us")?);
    rows.push(Row {
        metric: "1-byte round trip p50",
        unit: "µs",
        direct: d50,
        weft: w50,
        target: "≤ direct + 40 µs".into(),
        met: w50 <= d50 + 40.0,
    });
    let (d99, w99) = (num(&dl, "p99_us")?, num(&wl, "p99_us")?);
    rows.push(Row {
        metric: "1-byte round trip p99",
        unit: "µs",
        direct: d99,
        weft: w99,
        target: "—".into(),
        met: true,
    });

    eprintln!("bench: new connections, {} s each way…", settings.connrate_secs);
    let csecs = settings.connrate_secs.to_string();
    let threads = settings.connrate_threads.to_string();
    let dc = num(
        &app(&dclient, &["connrate", "--to", &dto, "--secs", &csecs, "--threads", &threads], long)?,
        "per_sec",
    )?;
    let wc = num(
        &app(&mclient, &["connrate", "--to", &mto, "--secs", &csecs, "--threads", &threads], long)?,
        "per_sec",
    )?;
    rows.push(Row {
        metric: "new connections",
        unit: "conn/s",
        direct: dc,
        weft: wc,
        target: "≥ 0.6× direct".into(),
        met: wc >= 0.6 * dc,
    });

    let agent_cpu_secs = cpu()? - cpu_start;
    let agent_peak_rss_mib = proc_usage(pids[0])?.1.max(proc_usage(pids[1])?.1);

    eprintln!("bench: {} idle connections through the agents…", settings.idle_conns);
    let hold = {
        let mut cmd = Command::new(bins::path("weft-testapp"));
        cmd.args(["hold", "--to", &mto, "--count", &settings.idle_conns.to_string()]);
        mclient.spawn(cmd)?
    };
    hold.wait_for_line(|l| l.contains("\"holding\""), Duration::from_secs(60))
        .context("hold did not open its connections")?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss_mib = proc_usage(pids[0])?.2.max(proc_usage(pids[1])?.2);
    drop(hold);

    Ok(Report { rows, agent_cpu_secs, agent_peak_rss_mib, idle_rss_mib, idle_conns: settings.idle_conns })
}

impl Report {
    /// The markdown table BENCHMARKS.md keeps and the terminal shows.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "| pod → pod across nodes | direct | through Weft | ratio | target | met |");
        let _ = writeln!(t, "|---|---:|---:|---:|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                t,
                "| {} ({}) | {:.2} | {:.2} | {:.2}× | {} | {} |",
                r.metric,
                r.unit,
                r.direct,
                r.weft,
                r.weft / r.direct,
                r.target,
                if r.met { "yes" } else { "**no**" }
            );
        }
        let idle_ok = self.idle_rss_mib < 20.0;
        let _ = writeln!(
            t,
            "| agent RSS at {} idle connections (MiB) | — | {:.1} | — | < 20 MiB | {} |",
            self.idle_conns,
            self.idle_rss_mib,
            if idle_ok { "yes" } else { "**no**" }
        );
        let _ = writeln!(
            t,
            "| agent peak RSS during the runs above (MiB) | — | {:.1} | — | — | — |",
            self.agent_peak_rss_mib
        );
        let _ = writeln!(
            t,
            "| agents' CPU seconds, both nodes, all runs above | — | {:.2} | — | — | — |",
            self.agent_cpu_secs
        );
        t
    }
}
