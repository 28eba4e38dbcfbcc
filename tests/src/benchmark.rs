//! `cargo xtask bench`: pod → pod across two nodes, directly and through the mesh, in one
//! run, printed side by side as ratios, plus the agents' CPU and memory.
//!
//! Three paths between the same two nodes, measured by the same test app:
//! - **direct**: a client and a server in a namespace without the ambient label;
//! - **HBONE**: a client and a server in an enrolled namespace: app → agent n1 (captured
//!   in the client pod) → mTLS HTTP/2 CONNECT, pooled → agent n2 (on the server pod's
//!   :15008) → app, which sees the client's own address;
//! - **plain L4**: the enrolled client to the server outside the mesh: captured by agent n1,
//!   carried in plain TCP (a mesh pod talking to the rest of the world).
//!
//! weftd runs on n1 as it does in the tests: the agents' model and certificates come from
//! it.

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
    pub metric: String,
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
    pub pooled_rss_mib: f64,
    pub pooled_streams: usize,
    pub hbone_connections: u64,
}

pub struct Settings {
    pub throughput_secs: u64,
    pub latency_count: u64,
    /// Latency runs per path, alternating between the paths; the median p50 is reported.
    pub latency_runs: usize,
    pub connrate_secs: u64,
    /// Client threads opening connections at once.
    pub connrate_threads: usize,
    /// Connections held open through HBONE for the memory figure.
    pub pooled_streams: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            throughput_secs: 10,
            latency_count: 10_000,
            latency_runs: 5,
            connrate_secs: 5,
            connrate_threads: 2,
            pooled_streams: 1000,
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    let direct = (&dclient, format!("{}:{PORT}", dserver.ip()));
    let hbone = (&mclient, format!("{}:{PORT}", mserver.ip()));
    let plain = (&mclient, format!("{}:{PORT}", dserver.ip()));
    let pids = [a1.proc().pid(), a2.proc().pid()];
    let cpu = || -> Result<f64> { Ok(proc_usage(pids[0])?.0 + proc_usage(pids[1])?.0) };
    // The first HBONE connection pays for the certificates' arrival and the pooled
    // connection's handshake; the table measures the steady state.
    if !scenario::echo(&mclient, &hbone.1, 1024)?.ok() {
        bail!("warm-up through HBONE failed:\n{}", a1.stderr());
    }
    let cpu_start = cpu()?;
    let mut rows = Vec::new();
    let long = Duration::from_secs(settings.throughput_secs + 60);

    let secs = settings.throughput_secs.to_string();
    eprintln!("bench: throughput, {secs} s per path…");
    let gbit = |(pod, to): (&Pod, String)| -> Result<f64> {
        num(&app(pod, &["throughput", "--to", &to, "--secs", &secs], long)?, "gbit_per_s")
    };
    let d = gbit(direct.clone())?;
    let h = gbit(hbone.clone())?;
    let p = gbit(plain.clone())?;
    rows.push(row("HBONE: bulk throughput", "Gbit/s", d, h, "≥ 0.40× direct", h >= 0.40 * d));
    rows.push(row("plain L4: bulk throughput", "Gbit/s", d, p, "—", true));

    eprintln!("bench: latency, {} × {} round trips per path…", settings.latency_runs, settings.latency_count);
    let count = settings.latency_count.to_string();
    let (mut d50, mut h50, mut p50, mut d99, mut h99, mut p99) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..settings.latency_runs {
        for ((pod, to), p50s, p99s) in [
            (direct.clone(), &mut d50, &mut d99),
            (hbone.clone(), &mut h50, &mut h99),
            (plain.clone(), &mut p50, &mut p99),
        ] {
            let r = app(pod, &["latency", "--to", &to, "--count", &count], long)?;
            p50s.push(num(&r, "p50_us")?);
            p99s.push(num(&r, "p99_us")?);
        }
    }
    let (d50, h50, p50) = (median(d50), median(h50), median(p50));
    rows.push(row("HBONE: 1-byte round trip p50", "µs", d50, h50, "≤ direct + 80 µs", h50 <= d50 + 80.0));
    rows.push(row("HBONE: 1-byte round trip p99", "µs", median(d99.clone()), median(h99), "—", true));
    rows.push(row("plain L4: 1-byte round trip p50", "µs", d50, p50, "≤ direct + 40 µs", p50 <= d50 + 40.0));
    rows.push(row("plain L4: 1-byte round trip p99", "µs", median(d99), median(p99), "—", true));

    eprintln!("bench: new connections, {} s per path…", settings.connrate_secs);
    let csecs = settings.connrate_secs.to_string();
    let threads = settings.connrate_threads.to_string();
    let rate = |(pod, to): (&Pod, String)| -> Result<f64> {
        num(&app(pod, &["connrate", "--to", &to, "--secs", &csecs, "--threads", &threads], long)?, "per_sec")
    };
    let dc = rate(direct.clone())?;
    let hc = rate(hbone.clone())?;
    let pc = rate(plain.clone())?;
    rows.push(row("HBONE: new connections", "conn/s", dc, hc, "≥ 0.5× direct", hc >= 0.5 * dc));
    rows.push(row("plain L4: new connections", "conn/s", dc, pc, "—", true));

    let agent_cpu_secs = cpu()? - cpu_start;
    let agent_peak_rss_mib = proc_usage(pids[0])?.1.max(proc_usage(pids[1])?.1);

    eprintln!("bench: {} connections held open through HBONE…", settings.pooled_streams);
    let hold = {
        let mut cmd = Command::new(bins::path("weft-testapp"));
        cmd.args(["hold", "--to", &hbone.1, "--count", &settings.pooled_streams.to_string()]);
        mclient.spawn(cmd)?
    };
    hold.wait_for_line(|l| l.contains("\"holding\""), Duration::from_secs(120))
        .context("hold did not open its connections")?;
    std::thread::sleep(Duration::from_millis(500));
    let pooled_rss_mib = proc_usage(pids[0])?.2.max(proc_usage(pids[1])?.2);
    let (_, metrics) = a1.get("/metrics")?;
    let hbone_connections = crate::agent::sum_samples(&metrics, "weft_hbone_pool_connections", &[]);
    drop(hold);

    Ok(Report {
        rows,
        agent_cpu_secs,
        agent_peak_rss_mib,
        pooled_rss_mib,
        pooled_streams: settings.pooled_streams,
        hbone_connections,
    })
}

fn row(metric: &str, unit: &'static str, direct: f64, weft: f64, target: &str, met: bool) -> Row {
    Row { metric: metric.to_owned(), unit, direct, weft, target: target.to_owned(), met }
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
        let ok = self.pooled_rss_mib < 30.0;
        let _ = writeln!(
            t,
            "| agent RSS with {} HBONE streams open, on {} pooled connection(s) (MiB) | — | {:.1} | — | < 30 MiB | {} |",
            self.pooled_streams,
            self.hbone_connections,
            self.pooled_rss_mib,
            if ok { "yes" } else { "**no**" }
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
