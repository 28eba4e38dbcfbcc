//! The agent's command line (each flag also readable from the environment).

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

#[derive(Debug, Parser)]
#[command(name = "weft-agent", version, about = "Weft's node agent: eBPF capture and L4 proxy")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent for one node.
    Run(Box<Config>),
    /// Remove every pinned program, link and map: enrolled pods talk directly again.
    Uninstall {
        #[arg(long, env = "WEFT_BPFFS_DIR", default_value = "/sys/fs/bpf/weft")]
        bpffs_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct Config {
    /// The node this agent serves; pods of other nodes are left alone.
    #[arg(long, env = "WEFT_NODE")]
    pub node: String,
    /// YAML file with the workload model (namespaces, pods, services); watched live.
    /// For debugging and benchmarks; the alternative to --xds-address.
    #[arg(long, env = "WEFT_LOCAL_CONFIG", conflicts_with = "xds_address")]
    pub local_config: Option<PathBuf>,
    /// The control plane's ADS endpoint (Istio's workload API), e.g. http://weftd:15010.
    #[arg(long, env = "WEFT_XDS_ADDRESS")]
    pub xds_address: Option<String>,
    /// cgroup v2 directory whose processes are captured. Default: the cgroup v2 root.
    #[arg(long, env = "WEFT_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// Unix socket where the `weft-cni` plugin hands over new pods' network namespaces. Its
    /// directory is created 0700 (an existing one must not be open to others); the plugin
    /// finds the mesh-namespaces file beside it.
    #[arg(long, env = "WEFT_CNI_SOCKET", default_value = "/var/run/weft/cni.sock")]
    pub cni_socket: PathBuf,
    /// The kubelet's kubepods cgroup, where pods already running when the agent starts are
    /// found by UID. Default: kubepods.slice or kubepods under the cgroup v2 mount; without
    /// one, only CNI handovers bind pods.
    #[arg(long, env = "WEFT_KUBEPODS_CGROUP")]
    pub kubepods_cgroup: Option<PathBuf>,
    /// bpffs directory for this agent's pinned maps and links.
    #[arg(long, env = "WEFT_BPFFS_DIR", default_value = "/sys/fs/bpf/weft")]
    pub bpffs_dir: PathBuf,
    /// Admin HTTP (/ready, /metrics, /config_dump), in the agent's netns.
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// SO_MARK on the agent's own sockets; the capture programs skip it.
    #[arg(long, env = "WEFT_MARK", default_value_t = 0x539)]
    pub mark: u32,
    /// Destination ports never captured (comma separated).
    #[arg(long, env = "WEFT_EXCLUDED_PORTS", value_delimiter = ',')]
    pub excluded_ports: Vec<u16>,
    /// How long SIGTERM waits for in-flight connections.
    #[arg(long, env = "WEFT_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub drain_timeout: Duration,
    /// Threads carrying connections. 1 runs everything on one thread (no cross-thread
    /// wake-ups: lowest latency); more spread bulk traffic over cores.
    #[arg(long, env = "WEFT_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    #[arg(long, env = "WEFT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration that cannot work, found before anything is bound or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--node must not be empty")]
    EmptyNode,
    #[error("--worker-threads must be at least 1")]
    ZeroWorkers,
    #[error("--mark must not be 0: unmarked sockets would all look like the agent's")]
    ZeroMark,
    #[error("give the model's source: --xds-address URL (weftd) or --local-config FILE")]
    NoModelSource,
    #[error("--local-config {0}: no such file")]
    NoLocalConfig(PathBuf),
    #[error("--cgroup {0}: not a cgroup v2 directory (no cgroup.procs)")]
    NotACgroup(PathBuf),
    #[error("no cgroup v2 mount found in /proc/mounts; pass --cgroup")]
    NoCgroup2,
    #[error("--cni-socket {0}: must be an absolute path of at most 107 bytes (a Unix socket address)")]
    BadCniSocket(PathBuf),
    #[error("--kubepods-cgroup {0}: not a cgroup directory (no cgroup.procs)")]
    NotKubepods(PathBuf),
}

impl Config {
    /// Checks what can be checked before touching the kernel, and fills defaults that
    /// depend on the machine.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        if self.node.is_empty() {
            return Err(ConfigError::EmptyNode);
        }
        if self.worker_threads == 0 {
            return Err(ConfigError::ZeroWorkers);
        }
        if self.mark == 0 {
            return Err(ConfigError::ZeroMark);
        }
        match &self.local_config {
            Some(path) if !path.is_file() => return Err(ConfigError::NoLocalConfig(path.clone())),
            None if self.xds_address.is_none() => return Err(ConfigError::NoModelSource),
            _ => {}
        }
        let cgroup = match self.cgroup.take() {
            Some(c) => c,
            None => cgroup2_root().ok_or(ConfigError::NoCgroup2)?,
        };
        if !cgroup.join("cgroup.procs").is_file() {
            return Err(ConfigError::NotACgroup(cgroup));
        }
        self.cgroup = Some(cgroup);
        // sun_path holds 108 bytes, the terminating NUL included.
        if !self.cni_socket.is_absolute() || self.cni_socket.as_os_str().len() > 107 {
            return Err(ConfigError::BadCniSocket(self.cni_socket.clone()));
        }
        match &self.kubepods_cgroup {
            Some(dir) if !dir.join("cgroup.procs").is_file() => {
                return Err(ConfigError::NotKubepods(dir.clone()));
            }
            Some(_) => {}
            None => {
                self.kubepods_cgroup = cgroup2_root().and_then(|m| crate::inpod::Kubepods::find_default(&m))
            }
        }
        Ok(self)
    }
}

/// Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid
/// systems).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, at, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(at))
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 30s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

mod duration_secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a `run` command line and validates it, with a model file and cgroup of its own.
    fn validated(extra: &[&str]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), "").unwrap();
        let (cgroup, model) = (dir.path().to_str().unwrap(), dir.path().join("mesh.yaml"));
        let mut args = vec!["weft-agent", "run", "--node", "n1", "--cgroup", cgroup, "--local-config"];
        args.push(model.to_str().unwrap());
        args.extend_from_slice(extra);
        let Command::Run(config) = Cli::try_parse_from(args).unwrap().command else { panic!("run") };
        config.validate()
    }

    #[test]
    fn cni_socket_and_kubepods_cgroup_are_checked() {
        assert!(matches!(validated(&["--cni-socket", "run/cni.sock"]), Err(ConfigError::BadCniSocket(_))));
        let long = format!("/{}", "x".repeat(107));
        assert!(matches!(validated(&["--cni-socket", &long]), Err(ConfigError::BadCniSocket(_))));
        let err = validated(&["--kubepods-cgroup", "/nonexistent/kubepods"]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kubepods"), "{err}");
        let config = validated(&["--cni-socket", "/run/weft/cni.sock"]).unwrap();
        assert_eq!(config.cni_socket, std::path::Path::new("/run/weft/cni.sock"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
