//! Building blocks the end-to-end tests, the benchmark and the demo share: a bed with a
//! mesh config file, the test app as server and client.

use crate::{
    Node, Pod, Proc, TestBed,
    agent::{Agent, AgentOptions, ModelSource},
    bins,
    meshconfig::MeshConfig,
    weftd::Weftd,
};
use anyhow::{Context, Result, bail};
use std::{path::PathBuf, process::Command, time::Duration};

/// A bed, the directory holding its mesh config (removed with the bed), and its control
/// plane once an agent needs one.
pub struct Scenario {
    pub bed: TestBed,
    pub dir: PathBuf,
    pub config: MeshConfig,
    weftd: Option<Weftd>,
}

impl Scenario {
    pub fn new(test_name: &str) -> Result<Scenario> {
        let bed = TestBed::new(test_name)?;
        let dir = PathBuf::from(format!("/tmp/weft-test-{}", bed.id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        bed.register_cleanup_dir(&dir)?;
        let config = MeshConfig::new(dir.join("mesh.yaml"));
        Ok(Scenario { bed, dir, config, weftd: None })
    }

    /// The bed's control plane: weftd reading the mesh config as Kubernetes objects (CA,
    /// xDS). Started on `node` by the first call; later calls return it wherever it runs.
    pub fn control_plane(&mut self, node: &Node) -> Result<&mut Weftd> {
        if self.weftd.is_none() {
            let dir = self.kubernetes_dir();
            self.config.with_kubernetes_dir(&dir);
            self.config.write()?;
            self.weftd = Some(Weftd::start(node, &dir)?);
        }
        Ok(self.weftd.as_mut().expect("started above"))
    }

    /// weftd's config directory: the bed's `mesh.yaml`, and whatever else a test writes
    /// there ([`Scenario::write_kubernetes_yaml`]).
    pub fn kubernetes_dir(&self) -> PathBuf {
        self.dir.join("kubernetes")
    }

    /// Writes Kubernetes or Istio objects (YAML, `---` between documents) as `file` in
    /// weftd's config directory, next to `mesh.yaml`, atomically (write, then rename), as
    /// a config update would land. weftd reads it when it starts, or at once if it runs.
    pub fn write_kubernetes_yaml(&self, file: &str, yaml: &str) -> Result<()> {
        let dir = self.kubernetes_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(file)).with_context(|| format!("renaming {file} into place"))
    }

    /// An agent on `node` fed and certified by the bed's control plane (started on this
    /// node if none runs yet). Waits until it is ready.
    pub fn agent(&mut self, node: &Node) -> Result<Agent> {
        self.agent_with(node, AgentOptions::default())
    }

    /// The same, with options.
    pub fn agent_with(&mut self, node: &Node, options: AgentOptions) -> Result<Agent> {
        let credentials = self.control_plane(node)?.agent_credentials(node.name())?;
        Agent::start_from(&self.bed, node, ModelSource::Xds(credentials), options)
    }

    /// An agent on `node` reading the mesh config file (`--local-config`), with the bed's
    /// control plane as its CA only.
    pub fn agent_local(&mut self, node: &Node) -> Result<Agent> {
        let credentials = self.control_plane(node)?.agent_credentials(node.name())?;
        let source = ModelSource::FileWithCa(self.config.path().to_owned(), credentials);
        Agent::start_from(&self.bed, node, source, AgentOptions::default())
    }
}

/// Starts `weft-testapp serve` in `pod` and waits until it listens.
pub fn serve(pod: &Pod, version: &str, ports: &[u16]) -> Result<Proc> {
    let mut cmd = Command::new(bins::path("weft-testapp"));
    cmd.args(["serve", "--name", pod.name(), "--version", version]);
    for p in ports {
        cmd.arg("--port").arg(p.to_string());
    }
    let proc = pod.spawn(cmd)?;
    proc.wait_for_line(|l| l.contains("\"listening\""), Duration::from_secs(10))
        .with_context(|| format!("server in {} did not start", pod.name()))?;
    Ok(proc)
}

/// What a client run of the test app printed and how it ended.
#[derive(Debug)]
pub struct ClientResult {
    pub code: i32,
    pub json: serde_json::Value,
}

impl ClientResult {
    pub fn ok(&self) -> bool {
        self.code == 0 && self.json["ok"].as_bool() != Some(false)
    }

    /// The io::ErrorKind name a failed connect reported, e.g. "ConnectionRefused".
    pub fn error_kind(&self) -> Option<&str> {
        self.json["kind"].as_str()
    }
}

/// Runs `weft-testapp ARGS…` inside `pod` (captured by the node's agent if the pod is
/// enrolled) and returns its JSON result line.
pub fn client(pod: &Pod, args: &[&str], timeout: Duration) -> Result<ClientResult> {
    let mut cmd = Command::new(bins::path("weft-testapp"));
    cmd.args(args);
    let mut proc = pod.spawn(cmd)?;
    let Some(status) = proc.wait_timeout(timeout)? else {
        bail!("weft-testapp {args:?} in {} still running after {timeout:?}", pod.name());
    };
    let line = proc.stdout_lines().pop().unwrap_or_default();
    let json = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
    Ok(ClientResult { code: status.code().unwrap_or(-1), json })
}

/// `echo --to ADDR --bytes N`: N bytes there and back, checked byte for byte.
pub fn echo(pod: &Pod, to: &str, bytes: u64) -> Result<ClientResult> {
    client(pod, &["echo", "--to", to, "--bytes", &bytes.to_string()], Duration::from_secs(120))
}

/// The peer addresses a server has accepted connections from, in order.
pub fn accepted_peers(server: &Proc) -> Vec<std::net::SocketAddr> {
    server
        .stdout_lines()
        .iter()
        .filter(|l| l.contains("\"event\":\"accept\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["peer"].as_str()?.parse().ok())
        .collect()
}

/// How many connections a server has accepted so far.
pub fn accepts(server: &Proc) -> usize {
    server.stdout_lines().iter().filter(|l| l.contains("\"event\":\"accept\"")).count()
}
