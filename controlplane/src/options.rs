//! weftd's command line (each flag also readable from the environment).

use crate::auth::ServiceAccountRef;
use clap::Parser;
use serde::Serialize;
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "weftd", version, about = "Weft's control plane: config in, validated model, xDS out")]
pub struct Options {
    /// Read Kubernetes and Istio YAML from this directory (watched live) instead of a
    /// Kubernetes API server.
    #[arg(long, env = "WEFT_CONFIG_DIR", conflicts_with = "kubernetes")]
    pub config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API (in-cluster config or $KUBECONFIG).
    #[arg(long, env = "WEFT_KUBERNETES")]
    pub kubernetes: bool,
    /// Watch the Kubernetes API at this plain URL, without credentials (`kubectl proxy`'s
    /// http://127.0.0.1:8001, or a test server) instead of in-cluster config or
    /// $KUBECONFIG. Implies --kubernetes.
    #[arg(long, env = "WEFT_KUBERNETES_URL", value_name = "URL", conflicts_with = "config_dir")]
    pub kubernetes_url: Option<String>,
    /// The secure port (istiod's 15012): ADS and the CA over TLS, for agents, waypoints,
    /// gateways and Envoy. Callers present `authorization: Bearer <token>`.
    #[arg(long, env = "WEFT_SECURE_GRPC_ADDR", default_value = "0.0.0.0:15012")]
    pub secure_grpc_addr: SocketAddr,
    /// Istio's validating admission webhook (istiod's 15017, behind the Service's 443):
    /// `POST /validate` over TLS with weftd's serving certificate.
    #[arg(long, env = "WEFT_WEBHOOK_ADDR", default_value = "0.0.0.0:15017")]
    pub webhook_addr: SocketAddr,
    /// Kubernetes mode: the ValidatingWebhookConfiguration whose webhooks weftd gives its
    /// root as caBundle (and failurePolicy Fail once its webhook answers). Default:
    /// weft-validator-<ns>, as the weftd chart names it.
    #[arg(long, env = "WEFT_WEBHOOK_CONFIG_NAME", value_name = "NAME")]
    pub webhook_config_name: Option<String>,
    /// ADS over plaintext gRPC with no authentication at all (istiod's 15010), for local
    /// debugging only. Off unless an address is given.
    #[arg(long, env = "WEFT_PLAINTEXT_XDS_ADDR", value_name = "ADDR")]
    pub plaintext_xds_addr: Option<SocketAddr>,
    /// /ready and /debug/* (syncz, config_dump, diagnostics).
    #[arg(long, env = "WEFT_DEBUG_ADDR", default_value = "127.0.0.1:15014")]
    pub debug_addr: SocketAddr,
    /// Prometheus metrics only (/metrics and /stats/prometheus), on every interface:
    /// istiod's monitoring port is 15014, which weftd's debug port already holds on
    /// loopback, so weftd's metrics default to the next port, 15015.
    #[arg(long, env = "WEFT_METRICS_ADDR", default_value = "0.0.0.0:15015")]
    pub metrics_addr: SocketAddr,
    /// How long changes are collected before one push.
    #[arg(long, env = "WEFT_DEBOUNCE", default_value = "100ms", value_parser = parse_duration)]
    #[serde(serialize_with = "as_millis")]
    pub debounce: Duration,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Istio's root namespace: policies here apply mesh-wide.
    #[arg(long, env = "WEFT_ROOT_NAMESPACE", default_value = "istio-system")]
    pub root_namespace: String,
    /// weftd's own namespace: where its CA Secret and root ConfigMap live in Kubernetes
    /// mode, and the `<ns>` of its default DNS name weftd.<ns>.svc.
    #[arg(long, env = "WEFT_NAMESPACE", default_value = "istio-system")]
    pub namespace: String,
    /// Directory of weftd's own CA root (ca-cert.pem, ca-key.pem with mode 0600,
    /// root-cert.pem: the file agents trust): made on first start, reused after. Without
    /// it, Kubernetes mode keeps the root in the Secret weft-ca-secret.
    #[arg(long, env = "WEFT_CA_DIR", value_name = "DIR", conflicts_with = "cacerts_dir")]
    pub ca_dir: Option<PathBuf>,
    /// A plug-in CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem), read only: weftd signs with the intermediate it holds.
    #[arg(long, env = "WEFT_CACERTS_DIR", value_name = "DIR")]
    pub cacerts_dir: Option<PathBuf>,
    /// Validity of a workload certificate when the CSR asks for none (istiod's
    /// DEFAULT_WORKLOAD_CERT_TTL).
    #[arg(long, env = "WEFT_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub workload_cert_ttl: Duration,
    /// The longest validity a CSR may ask for; longer requests are refused (istiod's
    /// MAX_WORKLOAD_CERT_TTL).
    #[arg(long, env = "WEFT_MAX_WORKLOAD_CERT_TTL", default_value = "2160h", value_parser = parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub max_workload_cert_ttl: Duration,
    /// DNS names of weftd's serving certificate (comma separated). Default: weftd.<ns>.svc.
    #[arg(long, env = "WEFT_SERVING_DNS_NAMES", value_delimiter = ',')]
    pub serving_dns_names: Vec<String>,
    /// IP addresses of weftd's serving certificate (comma separated), for clients that
    /// connect by address and check it.
    #[arg(long, env = "WEFT_SERVING_IPS", value_delimiter = ',')]
    pub serving_ips: Vec<IpAddr>,
    /// Local mode's caller credentials: Kubernetes' static token file format, one
    /// `token,user` per line, the user `system:node:<node>` (an agent's bootstrap token)
    /// or `system:serviceaccount:<ns>:<sa>` (a waypoint's or gateway's). Re-read when it
    /// changes. Without it, Kubernetes mode checks tokens with TokenReview.
    #[arg(long, env = "WEFT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Service accounts of node agents (comma separated `<ns>/<name>`): they may ask for
    /// the identities of pods on their node (istiod's CA_TRUSTED_NODE_ACCOUNTS).
    /// Default: <ns>/weft-agent.
    #[arg(long, env = "WEFT_AGENT_SERVICE_ACCOUNTS", value_delimiter = ',')]
    pub agent_service_accounts: Vec<ServiceAccountRef>,
    /// Audiences a caller's Kubernetes token must be for (istiod's TOKEN_AUDIENCES).
    #[arg(long, env = "WEFT_TOKEN_AUDIENCES", value_delimiter = ',', default_value = "istio-ca")]
    pub token_audiences: Vec<String>,
    /// The weft-waypoint image of the waypoints weftd deploys for waypoint Gateways
    /// (Kubernetes mode).
    #[arg(long, env = "WEFT_WAYPOINT_IMAGE", default_value = concat!("weft/weft-waypoint:", env!("CARGO_PKG_VERSION")))]
    pub waypoint_image: String,
    /// weftd's secure port as the waypoints weftd deploys reach it. Default:
    /// https://weftd.<ns>.svc:15012.
    #[arg(long, env = "WEFT_WAYPOINT_XDS_ADDRESS", value_name = "URL")]
    pub waypoint_xds_address: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "WEFT_LOG_JSON")]
    pub log_json: bool,
}

/// A configuration weftd cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// Neither a directory nor Kubernetes was asked for.
    #[error("give a source: --config-dir DIR, --kubernetes, or --kubernetes-url URL")]
    NoSource,
    /// `--config-dir` names something that is not a directory.
    #[error("--config-dir {0}: not a directory")]
    NotADirectory(PathBuf),
    /// `--kubernetes-url` is not an absolute http(s) URL.
    #[error("--kubernetes-url {0:?}: expected an http:// or https:// URL such as http://127.0.0.1:8001")]
    BadKubernetesUrl(String),
    /// Local mode without a place for the CA.
    #[error("local mode needs a CA: --ca-dir DIR (a root is made there on first start) or --cacerts-dir DIR")]
    NoCa,
    /// Local mode without caller credentials.
    #[error(
        "local mode needs --token-file FILE: one `token,user` per line, user system:node:<node> or \
         system:serviceaccount:<ns>:<sa>"
    )]
    NoTokenFile,
    /// A file or directory flag names nothing usable.
    #[error("{flag} {}: {reason}", path.display())]
    BadPath { flag: &'static str, path: PathBuf, reason: &'static str },
    /// Certificate validities that cannot both hold.
    #[error(
        "--workload-cert-ttl {default:?} must be more than 0 and at most --max-workload-cert-ttl {max:?}"
    )]
    BadTtl { default: Duration, max: Duration },
}

impl Options {
    /// Checks what clap cannot, and fills in what a flag implies (`--kubernetes-url` means
    /// Kubernetes mode), so the effective configuration logged at startup is the whole truth.
    pub fn validate(mut self) -> Result<Options, OptionsError> {
        if let Some(url) = &self.kubernetes_url {
            let uri: hyper::Uri = url.parse().map_err(|_| OptionsError::BadKubernetesUrl(url.clone()))?;
            let http = matches!(uri.scheme_str(), Some("http" | "https"));
            if !http || uri.authority().is_none() {
                return Err(OptionsError::BadKubernetesUrl(url.clone()));
            }
            self.kubernetes = true;
        }
        match &self.config_dir {
            Some(dir) if !dir.is_dir() => return Err(OptionsError::NotADirectory(dir.clone())),
            None if !self.kubernetes => return Err(OptionsError::NoSource),
            _ => {}
        }
        if !self.kubernetes {
            if self.ca_dir.is_none() && self.cacerts_dir.is_none() {
                return Err(OptionsError::NoCa);
            }
            if self.token_file.is_none() {
                return Err(OptionsError::NoTokenFile);
            }
        }
        if let Some(dir) = &self.cacerts_dir
            && !dir.is_dir()
        {
            return Err(OptionsError::BadPath {
                flag: "--cacerts-dir",
                path: dir.clone(),
                reason: "not a directory",
            });
        }
        if let Some(dir) = &self.ca_dir
            && dir.exists()
            && !dir.is_dir()
        {
            return Err(OptionsError::BadPath {
                flag: "--ca-dir",
                path: dir.clone(),
                reason: "not a directory",
            });
        }
        if let Some(file) = &self.token_file
            && !file.is_file()
        {
            return Err(OptionsError::BadPath {
                flag: "--token-file",
                path: file.clone(),
                reason: "no such file",
            });
        }
        if self.workload_cert_ttl.is_zero() || self.workload_cert_ttl > self.max_workload_cert_ttl {
            return Err(OptionsError::BadTtl {
                default: self.workload_cert_ttl,
                max: self.max_workload_cert_ttl,
            });
        }
        if self.serving_dns_names.is_empty() {
            self.serving_dns_names = vec![format!("weftd.{}.svc", self.namespace)];
        }
        if self.webhook_config_name.is_none() {
            self.webhook_config_name = Some(format!("weft-validator-{}", self.namespace));
        }
        if self.waypoint_xds_address.is_none() {
            self.waypoint_xds_address = Some(format!("https://weftd.{}.svc:15012", self.namespace));
        }
        if self.agent_service_accounts.is_empty() {
            self.agent_service_accounts =
                vec![ServiceAccountRef { namespace: self.namespace.clone(), name: "weft-agent".into() }];
        }
        Ok(self)
    }
}

/// Istio's duration syntax (`100ms`, `1s`, `1m30s`), as everywhere else in weftd.
fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::Durations::parse(s).map_err(|e| e.to_string())
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        let argv = std::iter::once("weftd").chain(args.iter().copied());
        let options = Options::try_parse_from(argv).map_err(|e| format!("{:?}", e.kind()))?;
        options.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn kubernetes_url_implies_kubernetes_mode() {
        let o = parse(&["--kubernetes-url", "http://127.0.0.1:8001"]).unwrap();
        assert!(o.kubernetes);
        assert_eq!(o.kubernetes_url.as_deref(), Some("http://127.0.0.1:8001"));
        assert!(o.config_dir.is_none());
    }

    #[test]
    fn kubernetes_url_must_be_http() {
        for bad in ["127.0.0.1:8001", "ftp://host", "/api", "http://"] {
            let e = parse(&["--kubernetes-url", bad]).unwrap_err();
            assert!(e.contains("expected an http:// or https:// URL"), "{bad}: {e}");
        }
        assert!(parse(&["--kubernetes-url", "https://kubernetes.default.svc"]).is_ok());
    }

    #[test]
    fn kubernetes_url_conflicts_with_config_dir() {
        let e = parse(&["--kubernetes-url", "http://127.0.0.1:8001", "--config-dir", "."]).unwrap_err();
        assert_eq!(e, "ArgumentConflict");
    }

    #[test]
    fn a_source_is_required() {
        assert!(parse(&[]).unwrap_err().contains("give a source"));
        assert!(parse(&["--kubernetes"]).is_ok());
    }

    #[test]
    fn local_mode_needs_a_ca_and_a_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "t,system:node:n1\n").unwrap();
        let (d, t) = (dir.path().to_str().unwrap(), tokens.to_str().unwrap());
        assert!(
            parse(&["--config-dir", d, "--token-file", t]).unwrap_err().contains("local mode needs a CA")
        );
        assert!(parse(&["--config-dir", d, "--ca-dir", d]).unwrap_err().contains("needs --token-file"));
        let o = parse(&["--config-dir", d, "--ca-dir", d, "--token-file", t]).unwrap();
        assert_eq!(o.serving_dns_names, ["weftd.istio-system.svc"]);
        assert_eq!(o.agent_service_accounts, ["istio-system/weft-agent".parse().unwrap()]);
        assert_eq!(o.workload_cert_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(o.max_workload_cert_ttl, Duration::from_secs(90 * 24 * 3600));
        assert!(o.plaintext_xds_addr.is_none(), "the plaintext port is off by default");
        assert_eq!(o.secure_grpc_addr, "0.0.0.0:15012".parse().unwrap());
        let e = parse(&["--config-dir", d, "--ca-dir", d, "--token-file", "/nonexistent"]).unwrap_err();
        assert!(e.contains("--token-file /nonexistent: no such file"), "{e}");
        let e = parse(&["--kubernetes", "--workload-cert-ttl", "100h", "--max-workload-cert-ttl", "10h"])
            .unwrap_err();
        assert!(e.contains("at most --max-workload-cert-ttl"), "{e}");
        assert_eq!(
            parse(&["--kubernetes", "--ca-dir", d, "--cacerts-dir", d]).unwrap_err(),
            "ArgumentConflict"
        );
    }

    #[test]
    fn names_follow_the_namespace() {
        let o = parse(&["--kubernetes", "--namespace", "weft-system"]).unwrap();
        assert_eq!(o.serving_dns_names, ["weftd.weft-system.svc"]);
        assert_eq!(o.waypoint_xds_address.as_deref(), Some("https://weftd.weft-system.svc:15012"));
        assert_eq!(o.webhook_config_name.as_deref(), Some("weft-validator-weft-system"));
        assert_eq!(o.webhook_addr, "0.0.0.0:15017".parse().unwrap());
        assert!(o.waypoint_image.starts_with("weft/weft-waypoint:"), "{}", o.waypoint_image);
        assert_eq!(o.agent_service_accounts[0].to_string(), "weft-system/weft-agent");
        let o = parse(&["--kubernetes", "--agent-service-accounts", "a/b,c/d", "--serving-ips", "10.0.0.1"])
            .unwrap();
        assert_eq!(o.agent_service_accounts.len(), 2);
        assert_eq!(o.serving_ips, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(parse(&["--kubernetes", "--agent-service-accounts", "nobody"]).is_err());
    }
}
