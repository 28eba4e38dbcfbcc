//! `cargo xtask <task>`: Weft's developer tasks. Orchestration only: the eBPF object is
//! built by agent/build.rs, the test bed lives in tests/, and this file runs them.
//!
//! - `setup`: install what a fresh Debian machine lacks (idempotent, seconds when done).
//! - `test [-- FILTER…]`: setup, build every binary, run every test as root, and fail if
//!   any test was skipped.
//! - `demo`: setup, build release, run the demo (Bookinfo through Istio's traffic-management
//!   tasks on a three-node mesh) and keep the mesh up until Ctrl-C.
//! - `bench`: setup, build release, run the benchmarks (data path, waypoint against Envoy,
//!   metrics endpoints, control plane in process and in Kubernetes mode) and record
//!   BENCHMARKS.md.

mod setup;

use anyhow::{Context, Result, bail};
use std::{
    env,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

fn main() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let (task, rest) = args.split_first().map_or(("help", &[][..]), |(t, r)| (t.as_str(), r));
    match task {
        "setup" => setup::run(),
        "test" => test(rest),
        "demo" => demo(rest),
        "bench" => bench(rest),
        _ => {
            eprintln!("usage: cargo xtask <setup|test|demo|bench> [args]");
            eprintln!("  test [-- <cargo test args>]   all tests (root), fails if any test was skipped");
            eprintln!(
                "  demo                          Bookinfo through Istio's traffic tasks, Ctrl-C to stop"
            );
            eprintln!(
                "  bench [ARGS] [--wp ARGS] [--metrics ARGS] [--cp ARGS]  data-path, waypoint, metrics endpoints,"
            );
            eprintln!("                                then control plane benchmarks; writes BENCHMARKS.md;");
            eprintln!(
                "                                --waypoint-only, --metrics-only, --cp-only: those alone"
            );
            if task == "help" { Ok(()) } else { bail!("unknown task {task:?}") }
        }
    }
}

fn workspace_root() -> PathBuf {
    // `cargo run` sets it for this run. The compile-time value is only a fallback: with a
    // target directory shared between checkouts (CI's), a binary built in another clone is
    // reused as fresh and would point there.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    Path::new(&manifest_dir).parent().expect("xtask lives in the workspace").to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd.env("PATH", setup::path_with_tools());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn require_root(task: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("`cargo xtask {task}` needs root: it creates network namespaces and loads eBPF programs");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn test(args: &[String]) -> Result<()> {
    require_root("test")?;
    setup::run()?;
    run(cargo().args(["build", "--bins"]))?;
    let args = args.strip_prefix(&["--".to_owned()][..]).unwrap_or(args);
    let mut child = cargo()
        .args(["test", "--no-fail-fast", "--"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    // Pass the output through while counting skipped tests: a skipped end-to-end test
    // is a capability nobody checked, so it fails the run.
    let mut ignored = 0u64;
    let mut ran = 0u64;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            ignored += count_before(rest, " ignored");
            ran += count_before(rest, " passed") + count_before(rest, " failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("tests failed");
    }
    if ignored > 0 {
        bail!("{ignored} test(s) were skipped (ignored); every test must run");
    }
    if ran == 0 {
        bail!("no test ran");
    }
    println!("xtask: {ran} tests ran, none skipped");
    Ok(())
}

/// In "ok. 3 passed; 0 failed; 1 ignored; …", the number before `what`.
fn count_before(summary: &str, what: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(what.trim_start())
                .map(str::trim)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn release_bin(name: &str) -> PathBuf {
    let target =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    target.join("release").join(name)
}

fn demo(args: &[String]) -> Result<()> {
    require_root("demo")?;
    setup::run()?;
    run(cargo().args(["build", "--release", "--bins"]))?;
    run(Command::new(release_bin("weft-demo")).args(args).env("WEFT_BIN_DIR", release_bin("")))
}

/// `bench [--waypoint-only | --cp-only | --metrics-only] [DATA-PATH ARGS] [--wp WAYPOINT ARGS]
/// [--cp CONTROL-PLANE ARGS] [--metrics METRICS ARGS]`: the data-path benchmark (weft-bench),
/// the waypoint one (weft-wp-bench: Envoy against weft-waypoint), the metrics endpoints'
/// (weft-metrics-bench), then the control plane one (weft-cp-bench, in process and in
/// Kubernetes mode); each records its own table in BENCHMARKS.md. An `--…-only` flag runs
/// that benchmark alone.
fn bench(args: &[String]) -> Result<()> {
    require_root("bench")?;
    setup::run()?;
    run(cargo().args(["build", "--release", "--bins"]))?;
    let only = ["--waypoint-only", "--cp-only", "--metrics-only"];
    let chosen: Vec<&str> = only.iter().copied().filter(|o| args.iter().any(|a| a == o)).collect();
    // No `--…-only` flag: all of them; otherwise the ones named (the data path has none).
    let runs = |which: Option<&str>| chosen.is_empty() || which.is_some_and(|w| chosen.contains(&w));
    let args: Vec<String> = args.iter().filter(|a| !only.contains(&a.as_str())).cloned().collect();
    let sections = bench_sections(&args);
    let benchmarks = workspace_root().join("BENCHMARKS.md");
    let bin_dir = release_bin("");
    // In order: (the `--…-only` flag that picks it, its binary, its arguments).
    let benchmarks_in_order: [(Option<&str>, &str, &[String]); 4] = [
        (None, "weft-bench", sections.data_path),
        (Some("--waypoint-only"), "weft-wp-bench", sections.waypoint),
        (Some("--metrics-only"), "weft-metrics-bench", sections.metrics),
        (Some("--cp-only"), "weft-cp-bench", sections.control_plane),
    ];
    for (flag, binary, args) in benchmarks_in_order {
        if runs(flag) {
            run(Command::new(release_bin(binary))
                .arg("--write")
                .arg(&benchmarks)
                .args(args)
                .env("WEFT_BIN_DIR", &bin_dir))?;
        }
    }
    Ok(())
}

/// The arguments of each benchmark: those before the first section flag are the data
/// path's; `--wp`, `--cp` and `--metrics` start the waypoint's, the control plane's and the
/// metrics endpoints'.
struct BenchSections<'a> {
    data_path: &'a [String],
    waypoint: &'a [String],
    control_plane: &'a [String],
    metrics: &'a [String],
}

fn bench_sections(args: &[String]) -> BenchSections<'_> {
    const STARTS: [&str; 3] = ["--wp", "--cp", "--metrics"];
    let mut sections = BenchSections { data_path: &[], waypoint: &[], control_plane: &[], metrics: &[] };
    let starts: Vec<usize> =
        args.iter().enumerate().filter(|(_, a)| STARTS.contains(&a.as_str())).map(|(i, _)| i).collect();
    sections.data_path = &args[..starts.first().copied().unwrap_or(args.len())];
    for (n, &i) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(args.len());
        let part = &args[i + 1..end];
        match args[i].as_str() {
            "--wp" => sections.waypoint = part,
            "--cp" => sections.control_plane = part,
            _ => sections.metrics = part,
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::{bench_sections, count_before};

    #[test]
    fn splits_bench_arguments_into_sections() {
        let args: Vec<String> = [
            "--latency-runs",
            "3",
            "--cp",
            "--services",
            "10",
            "--wp",
            "--secs",
            "5",
            "--metrics",
            "--steps",
            "16",
        ]
        .map(String::from)
        .to_vec();
        let s = bench_sections(&args);
        assert_eq!(s.data_path, ["--latency-runs", "3"]);
        assert_eq!(s.control_plane, ["--services", "10"]);
        assert_eq!(s.waypoint, ["--secs", "5"]);
        assert_eq!(s.metrics, ["--steps", "16"]);
        let none = bench_sections(&[]);
        assert!(
            none.data_path.is_empty()
                && none.waypoint.is_empty()
                && none.control_plane.is_empty()
                && none.metrics.is_empty()
        );
    }

    #[test]
    fn reads_cargo_test_summaries() {
        let s = "ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count_before(s, " passed"), 12);
        assert_eq!(count_before(s, " ignored"), 3);
        assert_eq!(count_before("FAILED. 1 passed; 2 failed; 0 ignored", " failed"), 2);
    }
}
