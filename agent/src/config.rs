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
    /// The control plane's ADS endpoint (Istio's workload API): weftd's secure port,
    /// e.g. https://weftd.istio-system.svc:15012 (or http://…:15010, weftd's plaintext
    /// debugging port, when it serves one).
    #[arg(long, env = "WEFT_XDS_ADDRESS")]
    pub xds_address: Option<String>,
    /// The CA's endpoint (Istio's certificate service). Default: --xds-address, as weftd
    /// serves both on one port.
    #[arg(long, env = "WEFT_CA_ADDRESS")]
    pub ca_address: Option<String>,
    /// PEM file of the root(s) weftd's certificate must chain to, for https addresses:
    /// weftd's root-cert.pem (in Kubernetes, the weft-ca-root-cert ConfigMap).
    #[arg(long, env = "WEFT_CA_ROOT_CERT", value_name = "FILE")]
    pub ca_root_cert: Option<PathBuf>,
    /// File holding the agent's bearer token for weftd, read at every connection: the
    /// node's bootstrap token (local mode) or a projected service-account token with
    /// audience istio-ca (Kubernetes).
    #[arg(long, env = "WEFT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The name weftd's certificate must carry when it is not the host of --xds-address
    /// (connecting by IP; ztunnel's ALT_XDS_HOSTNAME).
    #[arg(long, env = "WEFT_XDS_SERVER_NAME")]
    pub xds_server_name: Option<String>,
    /// The same for --ca-address. Default: --xds-server-name when --ca-address is too.
    #[arg(long, env = "WEFT_CA_SERVER_NAME")]
    pub ca_server_name: Option<String>,
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
    /// Kubernetes' readiness probe, `GET /healthz/ready` (200 ready, 503 not yet), on an
    /// address the kubelet reaches (the DaemonSet's 0.0.0.0:15021). Off unless given.
    #[arg(long, env = "WEFT_READINESS_ADDR")]
    pub readiness_addr: Option<SocketAddr>,
    /// Prometheus metrics only (/stats/prometheus and /metrics, no admin endpoints), for
    /// binding on every interface: ztunnel serves them on 0.0.0.0:15020, and the Helm
    /// chart passes --metrics-addr=0.0.0.0:15020. Off unless given.
    #[arg(long, env = "WEFT_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// SO_MARK on the agent's sockets towards other pods and nodes (Istio's 0x539).
    #[arg(long, env = "WEFT_MARK", default_value_t = 0x539)]
    pub mark: u32,
    /// SO_MARK on the agent's connections to a pod's application, which the pod routes
    /// back to the agent (Istio's in-pod 0x111).
    #[arg(long, env = "WEFT_INBOUND_MARK", default_value_t = 0x111)]
    pub inbound_mark: u32,
    /// Where the agent writes the sysctl each enrolled pod needs (net.ipv4.tcp_fwmark_accept,
    /// set from inside the pod's netns). The DaemonSet mounts the host's /proc/sys at
    /// /host/proc/sys, because a container's own /proc/sys is read-only.
    #[arg(long, env = "WEFT_PROC_SYS_DIR", default_value = "/proc/sys", value_name = "DIR")]
    pub proc_sys_dir: PathBuf,
    /// Destination ports never captured (comma separated).
    #[arg(long, env = "WEFT_EXCLUDED_PORTS", value_delimiter = ',')]
    pub excluded_ports: Vec<u16>,
    /// Ports of enrolled pods never steered to the agent, besides the mesh's own
    /// 15001/15006/15008 (comma separated). Every other port of an enrolled pod is.
    #[arg(long, env = "WEFT_EXCLUDED_INBOUND_PORTS", value_delimiter = ',')]
    pub excluded_inbound_ports: Vec<u16>,
    /// The agent's own pod, for its node id (downward API, as ztunnel's POD_NAME).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The agent's own namespace (downward API, as ztunnel's POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    pub pod_namespace: String,
    /// The agent's own address (downward API, as ztunnel's INSTANCE_IP). Default: the
    /// first non-loopback IPv4 address of the agent's network namespace.
    #[arg(long, env = "INSTANCE_IP")]
    pub pod_ip: Option<std::net::IpAddr>,
    /// How long SIGTERM waits for in-flight connections.
    #[arg(long, env = "WEFT_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub drain_timeout: Duration,
    /// Threads carrying connections. 1 runs everything on one thread (no cross-thread
    /// wake-ups: lowest latency); more spread bulk traffic over cores.
    #[arg(long, env = "WEFT_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,
    /// Lifetime asked of the CA for workload certificates (Istio's default: 24h); they are
    /// renewed at half life.
    #[arg(long, env = "WEFT_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub cert_ttl: Duration,
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
    #[error("--mark and --inbound-mark must be non-zero and differ from each other")]
    BadMarks,
    #[error("--pod-ip not given and no IPv4 address found on this network namespace's interfaces")]
    NoPodIp,
    #[error("give the model's source: --xds-address URL (weftd) or --local-config FILE")]
    NoModelSource,
    #[error("--local-config {0}: no such file")]
    NoLocalConfig(PathBuf),
    #[error("--xds-address {0} is https: give --ca-root-cert FILE (weftd's root-cert.pem) to verify weftd")]
    NoRootCert(String),
    #[error("--xds-address {0} is https: give --token-file FILE, the token weftd knows this agent by")]
    NoTokenFile(String),
    #[error("{flag} {}: no such file", path.display())]
    NoSuchFile { flag: &'static str, path: PathBuf },
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
        if self.mark == 0 || self.inbound_mark == 0 || self.mark == self.inbound_mark {
            return Err(ConfigError::BadMarks);
        }
        if self.pod_ip.is_none() {
            self.pod_ip = Some(first_ipv4().ok_or(ConfigError::NoPodIp)?);
        }
        match &self.local_config {
            Some(path) if !path.is_file() => return Err(ConfigError::NoLocalConfig(path.clone())),
            None if self.xds_address.is_none() => return Err(ConfigError::NoModelSource),
            _ => {}
        }
        if let Some(xds) = &self.xds_address {
            if self.ca_address.is_none() {
                self.ca_address = Some(xds.clone());
                if self.ca_server_name.is_none() {
                    self.ca_server_name = self.xds_server_name.clone();
                }
            }
            if xds.starts_with("https://") {
                if self.ca_root_cert.is_none() {
                    return Err(ConfigError::NoRootCert(xds.clone()));
                }
                if self.token_file.is_none() {
                    return Err(ConfigError::NoTokenFile(xds.clone()));
                }
            }
        }
        for (flag, path) in [("--ca-root-cert", &self.ca_root_cert), ("--token-file", &self.token_file)] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(ConfigError::NoSuchFile { flag, path: path.clone() });
            }
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

impl Config {
    /// The node id the agent presents to the control plane, in ztunnel's format
    /// (`ztunnel~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`), so istiod could feed it.
    pub fn node_id(&self) -> String {
        let ip = self.pod_ip.map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string());
        let pod = self.pod_name.clone().unwrap_or_else(|| format!("weft-agent-{}", self.node));
        let ns = &self.pod_namespace;
        format!("ztunnel~{ip}~{pod}.{ns}~{ns}.svc.cluster.local")
    }
}

/// The first non-loopback IPv4 address on this netns's interfaces.
fn first_ipv4() -> Option<std::net::IpAddr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .find(|ip| !ip.is_loopback())
        .map(std::net::IpAddr::V4)
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
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
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

    /// Parses and validates `run` flags, with a stand-in cgroup directory (validate only
    /// looks for its cgroup.procs).
    fn parse(dir: &std::path::Path, args: &[&str]) -> Result<Config, String> {
        let cgroup = dir.join("cgroup");
        std::fs::create_dir_all(&cgroup).unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), "").unwrap();
        let cgroup = cgroup.to_str().unwrap().to_owned();
        let argv = ["weft-agent", "run", "--node", "n1", "--cgroup", &cgroup]
            .into_iter()
            .chain(args.iter().copied());
        let Command::Run(config) = Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command else {
            unreachable!("run")
        };
        config.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn https_needs_a_root_and_a_token_and_the_ca_follows_xds() {
        let dir = std::env::temp_dir().join(format!("weft-agent-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (root, token) = (dir.join("root-cert.pem"), dir.join("token"));
        std::fs::write(&root, "pem").unwrap();
        std::fs::write(&token, "t").unwrap();
        let (root, token) = (root.to_str().unwrap(), token.to_str().unwrap());
        let xds = "https://198.18.0.1:15012";
        let e = parse(&dir, &["--xds-address", xds, "--token-file", token]).unwrap_err();
        assert!(e.contains("give --ca-root-cert FILE"), "{e}");
        let e = parse(&dir, &["--xds-address", xds, "--ca-root-cert", root]).unwrap_err();
        assert!(e.contains("give --token-file FILE"), "{e}");
        let e = parse(&dir, &["--xds-address", xds, "--ca-root-cert", "/nonexistent", "--token-file", token])
            .unwrap_err();
        assert!(e.contains("--ca-root-cert /nonexistent: no such file"), "{e}");
        let tls =
            ["--ca-root-cert", root, "--token-file", token, "--xds-server-name", "weftd.istio-system.svc"];
        let c = parse(&dir, &[&["--xds-address", xds][..], &tls].concat()).unwrap();
        assert_eq!(c.ca_address.as_deref(), Some(xds));
        assert_eq!(c.ca_server_name.as_deref(), Some("weftd.istio-system.svc"));
        let c =
            parse(&dir, &[&["--xds-address", xds, "--ca-address", "https://ca:15012"][..], &tls].concat())
                .unwrap();
        assert_eq!(c.ca_address.as_deref(), Some("https://ca:15012"));
        assert_eq!(c.ca_server_name, None, "another host: its own name");
        // Plaintext (weftd's debugging port) needs neither.
        assert!(parse(&dir, &["--xds-address", "http://127.0.0.1:15010"]).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_id_has_ztunnels_shape() {
        let cli = Cli::try_parse_from([
            "weft-agent",
            "run",
            "--node",
            "n1",
            "--local-config",
            "/dev/null",
            "--pod-name",
            "weft-agent-abc",
            "--pod-ip",
            "10.0.0.7",
        ])
        .unwrap();
        let Command::Run(config) = cli.command else { panic!() };
        assert_eq!(
            config.node_id(),
            "ztunnel~10.0.0.7~weft-agent-abc.istio-system~istio-system.svc.cluster.local"
        );
    }

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
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("5d").is_err());
    }
}
