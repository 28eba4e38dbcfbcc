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
    #[error("give a source: --config-dir DIR or --kubernetes")]
    NoSource,
    #[error("--config-dir {0}: not a directory")]
    NotADirectory(PathBuf),
}

impl Options {
    pub fn validate(self) -> Result<Options, OptionsError> {
        match &self.config_dir {
            Some(dir) if !dir.is_dir() => Err(OptionsError::NotADirectory(dir.clone())),
            None if !self.kubernetes => Err(OptionsError::NoSource),
            _ => Ok(self),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 100ms or 1s"))?;
    match unit {
        "ms" => Ok(Duration::from_secs_f64(n / 1000.0)),
        "s" => Ok(Duration::from_secs_f64(n)),
        _ => Err(format!("{s:?}: unit must be ms or s")),
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}
