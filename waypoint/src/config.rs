//! The waypoint's command line (each flag also readable from the environment). The flags
//! it shares with the agent (`--xds-address`, `--ca-*`, `--token-file`, `--*-server-name`,
//! `--trust-domain`, `--cert-ttl`) mean what they mean there.

use clap::{Parser, ValueEnum};
use serde::Serialize;
use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};
use weft_hbone::Identity;

#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "weft-waypoint",
    version,
    about = "Weft's L7 proxy (waypoint), configured by weftd over ADS"
)]
pub struct Config {
    /// The control plane's ADS endpoint: weftd's secure port, `https://HOST:PORT` (a bare
    /// `HOST:PORT` means https), or `http://HOST:PORT` for weftd's plaintext debugging port.
    #[arg(long, env = "WEFT_XDS_ADDRESS")]
    pub xds_address: String,
    /// The CA's endpoint (Istio's certificate service). Default: --xds-address, as weftd
    /// serves both on one port.
    #[arg(long, env = "WEFT_CA_ADDRESS")]
    pub ca_address: Option<String>,
    /// PEM file of the root(s) weftd's certificate must chain to: weftd's root-cert.pem. It
    /// is also the mesh root the waypoint checks HBONE peers against.
    #[arg(long, env = "WEFT_CA_ROOT_CERT", value_name = "FILE")]
    pub ca_root_cert: PathBuf,
    /// File holding the waypoint's bearer token for weftd (its service account's token),
    /// read at every connection.
    #[arg(long, env = "WEFT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The name weftd's certificate must carry when it is not the host of --xds-address.
    #[arg(long, env = "WEFT_XDS_SERVER_NAME")]
    pub xds_server_name: Option<String>,
    /// The same for --ca-address. Default: --xds-server-name when --ca-address is too.
    #[arg(long, env = "WEFT_CA_SERVER_NAME")]
    pub ca_server_name: Option<String>,
    /// The id presented to the control plane. Default: Istio's shape for a waypoint,
    /// `waypoint~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`.
    #[arg(long, env = "WEFT_NODE_ID")]
    pub node_id: Option<String>,
    /// The waypoint's namespace: its resources are scoped to it, and its identity is in it.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// The waypoint's service account: its identity is spiffe://TD/ns/NAMESPACE/sa/SA.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: String,
    /// The waypoint's pod, for the default node id.
    #[arg(long, env = "POD_NAME", default_value = "weft-waypoint")]
    pub pod_name: String,
    /// The waypoint's address, for the default node id.
    #[arg(long, env = "INSTANCE_IP", default_value = "0.0.0.0")]
    pub pod_ip: std::net::IpAddr,
    /// Where HBONE is terminated. The port must be the one the `connect_terminate`
    /// listener names (15008) unless that check is turned off for tests.
    #[arg(long, env = "WEFT_HBONE_ADDRESS", default_value = "0.0.0.0:15008")]
    pub hbone_address: SocketAddr,
    /// Admin HTTP: /ready, /config_dump, /stats/prometheus.
    #[arg(long, env = "WEFT_ADMIN_ADDRESS", default_value = "127.0.0.1:15000")]
    pub admin_address: SocketAddr,
    /// Prometheus metrics only (/stats/prometheus and /metrics, no admin endpoints), for
    /// binding on every interface: Istio's waypoints serve them on 0.0.0.0:15020, and the
    /// Helm chart passes --metrics-addr=0.0.0.0:15020. Off unless given.
    #[arg(long, env = "WEFT_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// SPIFFE trust domain of mesh identities.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Lifetime asked of the CA for the waypoint's certificate; renewed at half life.
    #[arg(long, env = "WEFT_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub cert_ttl: Duration,
    /// Threads carrying requests.
    #[arg(long, env = "WEFT_WORKER_THREADS", default_value_t = 2)]
    pub worker_threads: usize,
    #[arg(long, env = "WEFT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// One JSON line per request on stdout, with the fields of Istio's default JSON
    /// access log format.
    #[arg(long, env = "WEFT_ACCESS_LOG")]
    pub access_log: bool,
    /// What this proxy is, in pilot-agent's words (`pilot-agent proxy TYPE`): `waypoint`
    /// (HBONE in, the `connect_terminate` / `main_internal` listeners) or `router`, an
    /// ingress or egress gateway (plain HTTP in on the `gateway_<port>` listeners weftd
    /// sends for the Gateways selecting its labels). It sets the default node id's type
    /// and what "ready" means.
    #[arg(long, env = "WEFT_PROXY_TYPE", value_enum, default_value_t = ProxyType::Waypoint)]
    pub proxy_type: ProxyType,
    /// The pod's labels as the downward API writes them (`key="value"` lines; Istio's
    /// gateways mount them at /etc/istio/pod/labels), sent to the control plane as the
    /// `LABELS` node metadata: an Istio `Gateway`'s `selector`, or a Gateway API Gateway's
    /// `gateway.networking.k8s.io/gateway-name` label, chooses a gateway by them.
    #[arg(long, env = "WEFT_POD_LABELS_FILE", value_name = "FILE")]
    pub pod_labels_file: Option<PathBuf>,
    /// The labels read from --pod-labels-file.
    #[arg(skip)]
    pub pod_labels: BTreeMap<String, String>,
}

/// pilot-agent's proxy types this binary plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyType {
    Waypoint,
    /// An ingress or egress gateway.
    Router,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration that cannot work, found before any socket is bound.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--worker-threads must be at least 1")]
    ZeroWorkers,
    #[error("--namespace and --service-account must make a SPIFFE identity: {0}")]
    BadIdentity(weft_hbone::IdentityError),
    #[error("--xds-address {0} is https: give --token-file FILE, the token weftd knows this waypoint by")]
    NoTokenFile(String),
    #[error("{flag} {}: no such file", path.display())]
    NoSuchFile { flag: &'static str, path: PathBuf },
    #[error("--pod-labels-file {}: {reason}", path.display())]
    BadLabels { path: PathBuf, reason: String },
}

impl Config {
    /// Checks the configuration and fills the defaults that depend on other flags.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        if self.worker_threads == 0 {
            return Err(ConfigError::ZeroWorkers);
        }
        self.identity()?;
        if !self.xds_address.contains("://") {
            self.xds_address = format!("https://{}", self.xds_address);
        }
        if let Some(ca) = &mut self.ca_address
            && !ca.contains("://")
        {
            *ca = format!("https://{ca}");
        }
        if self.ca_address.is_none() {
            self.ca_address = Some(self.xds_address.clone());
            if self.ca_server_name.is_none() {
                self.ca_server_name = self.xds_server_name.clone();
            }
        }
        if self.xds_address.starts_with("https://") && self.token_file.is_none() {
            return Err(ConfigError::NoTokenFile(self.xds_address.clone()));
        }
        let files = [
            ("--ca-root-cert", Some(&self.ca_root_cert)),
            ("--token-file", self.token_file.as_ref()),
            ("--pod-labels-file", self.pod_labels_file.as_ref()),
        ];
        for (flag, path) in files {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(ConfigError::NoSuchFile { flag, path: path.clone() });
            }
        }
        if let Some(path) = &self.pod_labels_file {
            let bad = |reason: String| ConfigError::BadLabels { path: path.clone(), reason };
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            self.pod_labels = parse_downward_labels(&text).map_err(bad)?;
        }
        Ok(self)
    }

    /// The waypoint's own SPIFFE identity.
    pub fn identity(&self) -> Result<Identity, ConfigError> {
        Identity::new(&self.trust_domain, &self.namespace, &self.service_account)
            .map_err(ConfigError::BadIdentity)
    }

    /// The node id presented to the control plane.
    pub fn node_id(&self) -> String {
        match &self.node_id {
            Some(id) => id.clone(),
            None => {
                let (ip, pod, ns) = (self.pod_ip, &self.pod_name, &self.namespace);
                let kind = match self.proxy_type {
                    ProxyType::Waypoint => "waypoint",
                    ProxyType::Router => "router",
                };
                format!("{kind}~{ip}~{pod}.{ns}~{ns}.svc.cluster.local")
            }
        }
    }
}

/// The downward API's labels file: one `key="value"` line per label, the value quoted
/// as Go's `%q` does (`\"`, `\\`, `\n`, `\t` escapes).
pub fn parse_downward_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        let (key, quoted) = line.split_once('=').ok_or_else(|| bad("no '='"))?;
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .ok_or_else(|| bad("the value is not in double quotes"))?;
        let mut value = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            value.push(match c {
                '\\' => match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some(c @ ('"' | '\\')) => c,
                    _ => return Err(bad("an escape other than \\\", \\\\, \\n or \\t")),
                },
                c => c,
            });
        }
        labels.insert(key.trim().to_owned(), value);
    }
    Ok(labels)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.pem");
        let token = dir.path().join("token");
        std::fs::write(&root, "").unwrap();
        std::fs::write(&token, "t").unwrap();
        let mut args = vec![
            "weft-waypoint".to_owned(),
            "--ca-root-cert".into(),
            root.display().to_string(),
            "--token-file".into(),
            token.display().to_string(),
            "--namespace".into(),
            "bookinfo".into(),
            "--service-account".into(),
            "waypoint".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Config::try_parse_from(args).unwrap().validate()
    }

    #[test]
    fn shared_flags_follow_the_agents_meaning() {
        let c =
            parse(&["--xds-address", "weftd:15012", "--xds-server-name", "weftd.istio-system.svc"]).unwrap();
        assert_eq!(c.xds_address, "https://weftd:15012", "a bare HOST:PORT is https");
        assert_eq!(c.ca_address.as_deref(), Some("https://weftd:15012"), "the CA defaults to xDS");
        assert_eq!(c.ca_server_name.as_deref(), Some("weftd.istio-system.svc"));
        let c = parse(&["--xds-address", "weftd:15012", "--ca-address", "ca:15012"]).unwrap();
        assert_eq!(c.ca_address.as_deref(), Some("https://ca:15012"));
        assert_eq!(c.ca_server_name, None, "another host: its own name");
        assert_eq!(c.identity().unwrap().to_string(), "spiffe://cluster.local/ns/bookinfo/sa/waypoint");
        assert_eq!(c.node_id(), "waypoint~0.0.0.0~weft-waypoint.bookinfo~bookinfo.svc.cluster.local");
        assert!(matches!(
            parse(&["--xds-address", "w:1", "--worker-threads", "0"]),
            Err(ConfigError::ZeroWorkers)
        ));
    }

    #[test]
    fn access_log_is_off_unless_asked_for() {
        assert!(!parse(&["--xds-address", "http://w:1"]).unwrap().access_log);
        assert!(parse(&["--xds-address", "http://w:1", "--access-log"]).unwrap().access_log);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn a_router_reads_its_labels_from_the_downward_api_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("labels");
        std::fs::write(
            &file,
            "app=\"istio-ingressgateway\"\nistio=\"ingressgateway\"\nodd=\"a \\\"b\\\" \\\\c\"\n",
        )
        .unwrap();
        let path = file.display().to_string();
        let c = parse(&["--xds-address", "http://w:1", "--proxy-type", "router", "--pod-labels-file", &path])
            .unwrap();
        assert_eq!(c.pod_labels["istio"], "ingressgateway");
        assert_eq!(c.pod_labels["odd"], "a \"b\" \\c");
        assert!(c.node_id().starts_with("router~"), "{}", c.node_id());
        std::fs::write(&file, "istio=ingressgateway\n").unwrap();
        let e = parse(&["--xds-address", "http://w:1", "--pod-labels-file", &path]).unwrap_err().to_string();
        assert!(e.contains("line 1: the value is not in double quotes"), "{e}");
    }
}
