//! A `weft-agent` process on a bed node, and what tests ask its admin endpoint.

use crate::weftd::{AdsCredentials, Weftd};
use crate::{Node, Proc, Signal, TestBed, bins};
use anyhow::{Context, Result, bail};
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

const ADMIN: &str = "127.0.0.1:15000";
/// Where a bed agent serves Prometheus, on the node's address (ztunnel's port, as the
/// Helm chart passes it).
pub const METRICS_PORT: u16 = 15020;

/// How long the drain may take in tests: long enough for any transfer a test makes.
const TEST_DRAIN_TIMEOUT: &str = "60s";

/// Agent log filter: per-connection debug lines help a failing test; the benchmark sets
/// `WEFT_AGENT_LOG=info` so logging does not weigh on what it measures.
const LOG_ENV: &str = "WEFT_AGENT_LOG";

/// Where an agent gets its model.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// `--local-config FILE`.
    File(PathBuf),
    /// weftd's secure port: `--xds-address https://…:15012 --ca-root-cert … --token-file …`.
    Xds(AdsCredentials),
    /// `--local-config FILE`, with weftd as the CA (`--ca-address …`): the model from a
    /// file, the certificates from the control plane.
    FileWithCa(PathBuf, AdsCredentials),
}

/// How an agent is started, beyond its node and model.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Further command-line flags.
    pub args: Vec<String>,
    /// Run the agent in a child of the node's cgroup, under its own capture programs.
    pub under_capture: bool,
}

pub struct Agent {
    node: Node,
    proc: Proc,
    source: ModelSource,
    bpffs_dir: PathBuf,
    options: AgentOptions,
}

impl Agent {
    /// Starts an agent on `node` reading `config`, capturing the node's pods' cgroup, with
    /// its pins in a bpffs directory of its own (removed with the bed), the node's kubepods
    /// cgroup and its CNI socket. Waits until ready.
    pub fn start(bed: &TestBed, node: &Node, config: &Path) -> Result<Agent> {
        Self::start_with(bed, node, ModelSource::File(config.to_owned()))
    }

    /// Starts an agent fed by `weftd` over xDS, with the node's bootstrap token.
    pub fn start_xds(bed: &TestBed, node: &Node, weftd: &Weftd) -> Result<Agent> {
        Self::start_with(bed, node, ModelSource::Xds(weftd.agent_credentials(node.name())?))
    }

    fn start_with(bed: &TestBed, node: &Node, source: ModelSource) -> Result<Agent> {
        Self::start_from(bed, node, source, AgentOptions::default())
    }

    /// Starts an agent on `node` with its model from `source`, with `options`.
    pub fn start_from(
        bed: &TestBed,
        node: &Node,
        source: ModelSource,
        options: AgentOptions,
    ) -> Result<Agent> {
        let bpffs_dir = PathBuf::from(format!("/sys/fs/bpf/weft-test-{}-{}", bed.id(), node.name()));
        bed.register_cleanup_dir(&bpffs_dir)?;
        let proc = Self::spawn(node, &source, &bpffs_dir, &options)?;
        let agent = Agent { node: node.clone(), proc, source, bpffs_dir, options };
        agent.wait_ready(Duration::from_secs(20))?;
        Ok(agent)
    }

    fn spawn(node: &Node, source: &ModelSource, bpffs_dir: &Path, options: &AgentOptions) -> Result<Proc> {
        let mut cmd = Command::new(bins::path("weft-agent"));
        cmd.arg("run").arg("--node").arg(node.name());
        match source {
            ModelSource::File(path) => cmd.arg("--local-config").arg(path),
            ModelSource::Xds(ads) => cmd
                .arg("--xds-address")
                .arg(&ads.url)
                .arg("--ca-root-cert")
                .arg(&ads.root_cert)
                .arg("--token-file")
                .arg(&ads.token_file),
            ModelSource::FileWithCa(path, ads) => cmd
                .arg("--local-config")
                .arg(path)
                .arg("--ca-address")
                .arg(&ads.url)
                .arg("--ca-root-cert")
                .arg(&ads.root_cert)
                .arg("--token-file")
                .arg(&ads.token_file),
        };
        cmd.arg("--cgroup")
            .arg(node.cgroup_path())
            .arg("--kubepods-cgroup")
            .arg(node.kubepods_path())
            .arg("--cni-socket")
            .arg(node.cni_socket())
            .arg("--bpffs-dir")
            .arg(bpffs_dir)
            .arg("--drain-timeout")
            .arg(TEST_DRAIN_TIMEOUT)
            .arg("--metrics-addr")
            .arg(format!("0.0.0.0:{METRICS_PORT}"))
            .args(&options.args)
            .env("RUST_LOG", std::env::var(LOG_ENV).unwrap_or_else(|_| "info,weft_agent=debug".into()));
        if options.under_capture { node.spawn_in_child_cgroup(cmd, "weft-agent") } else { node.spawn(cmd) }
    }

    /// Starts the agent again after it was killed: same node, config and pins.
    pub fn restart(&mut self) -> Result<()> {
        self.proc = Self::spawn(&self.node, &self.source, &self.bpffs_dir, &self.options)?;
        self.wait_ready(Duration::from_secs(20))
    }

    pub fn kill(&self, signal: Signal) -> Result<()> {
        self.proc.kill(signal)
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.get("/ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "agent on {} not ready after {timeout:?}; stderr:\n{}",
                    self.node.name(),
                    self.proc.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET on the admin endpoint, from inside the node's netns: (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let path = path.to_owned();
        self.node.run(move || http_get(ADMIN, &path))
    }

    pub fn config_dump(&self) -> Result<serde_json::Value> {
        let (status, body) = self.get("/config_dump")?;
        anyhow::ensure!(status == 200, "config_dump answered {status}");
        serde_json::from_str(&body).context("config_dump is not JSON")
    }

    /// Names of the pods the agent has enrolled.
    pub fn enrolled(&self) -> Result<Vec<String>> {
        let dump = self.config_dump()?;
        Ok(dump["enrollment"]["enrolled"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// Waits until the set of enrolled pods, sorted, equals `names`.
    pub fn wait_enrolled(&self, names: &[&str], timeout: Duration) -> Result<()> {
        let mut want: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        let deadline = Instant::now() + timeout;
        loop {
            let mut got = self.enrolled()?;
            got.sort();
            if got == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("agent on {}: enrolled {got:?}, wanted {want:?}", self.node.name());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sum of a metric's samples whose labels include every `name="value"` in `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<u64> {
        let (_, body) = self.get("/metrics")?;
        Ok(sum_samples(&body, name, labels))
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr_text()
    }
}

/// Sums the samples of `name` in Prometheus text whose label set includes `labels`.
pub fn sum_samples(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .filter(|rest| labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A minimal HTTP/1.0 GET: the admin endpoint is ours and answers simply.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::sum_samples;

    #[test]
    fn sums_matching_samples() {
        let text =
            "# TYPE x counter\nx{a=\"1\",b=\"2\"} 5\nx{a=\"1\",b=\"3\"} 7\nxy{a=\"1\"} 100\nx_total 1\n";
        assert_eq!(sum_samples(text, "x", &[("a", "1")]), 12);
        assert_eq!(sum_samples(text, "x", &[("b", "3")]), 7);
        assert_eq!(sum_samples(text, "x", &[("a", "2")]), 0);
    }
}
