//! weftd's command line (each flag also readable from the environment).

use clap::Parser;
use serde::Serialize;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

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
    /// ADS (gRPC, plaintext) for agents, waypoints and Envoy.
    #[arg(long, env = "WEFT_XDS_ADDR", default_value = "0.0.0.0:15010")]
    pub xds_addr: SocketAddr,
    /// /ready and /debug/* (syncz, config_dump, diagnostics).
    #[arg(long, env = "WEFT_DEBUG_ADDR", default_value = "127.0.0.1:15014")]
    pub debug_addr: SocketAddr,
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
            Some(dir) if !dir.is_dir() => Err(OptionsError::NotADirectory(dir.clone())),
            None if !self.kubernetes => Err(OptionsError::NoSource),
            _ => Ok(self),
        }
    }
}

/// Istio's duration syntax (`100ms`, `1s`, `1m30s`), as everywhere else in weftd.
fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::Durations::parse(s).map_err(|e| e.to_string())
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
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
}
