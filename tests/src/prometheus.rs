//! A real Prometheus (Debian package `prometheus`) on a bed node, scraping the bed's
//! agents, waypoint and weftd as static targets, and its HTTP API, asked from the host
//! through a socket opened in the node's network namespace.

use crate::{Node, Proc, agent::http_get};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::{
    fmt::Write as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

/// The Prometheus binary the Debian package installs.
pub const BINARY: &str = "/usr/bin/prometheus";
/// Where it listens, in its node's network namespace.
const LISTEN: &str = "127.0.0.1:9090";
/// Scrape and rule evaluation interval: short, so a test sees its traffic within seconds.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// One scrape target and the labels Prometheus attaches to its series (as Kubernetes
/// service discovery would: `pod`, `app`, `namespace`).
#[derive(Debug, Clone)]
pub struct Target {
    pub job: String,
    /// `HOST:PORT`.
    pub address: String,
    /// `/stats/prometheus` or `/metrics`.
    pub path: String,
    pub labels: Vec<(String, String)>,
}

impl Target {
    pub fn new(job: &str, address: impl Into<String>, path: &str, labels: &[(&str, &str)]) -> Target {
        Target {
            job: job.to_owned(),
            address: address.into(),
            path: path.to_owned(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }
}

/// Prometheus's configuration for `targets`: one scrape config per target (each may have
/// its own metrics path), JSON being YAML.
pub fn config(targets: &[Target]) -> String {
    let interval = format!("{}s", SCRAPE_INTERVAL.as_secs());
    let scrape: Vec<Value> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let labels: serde_json::Map<String, Value> =
                t.labels.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
            serde_json::json!({
                // Job names must be unique per scrape config; the `job` label is set back.
                "job_name": format!("{}-{i}", t.job),
                "metrics_path": t.path,
                "static_configs": [{"targets": [t.address], "labels": labels}],
                "relabel_configs": [{"target_label": "job", "replacement": t.job}],
            })
        })
        .collect();
    serde_json::json!({
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "scrape_configs": scrape,
    })
    .to_string()
}

/// A Prometheus process on a node; killed when dropped. Its API ([`Api`]) is reached
/// through [`std::ops::Deref`].
pub struct Prometheus {
    api: Api,
    proc: Proc,
}

/// Prometheus's HTTP API, asked from the host through sockets opened in its node's
/// network namespace. Cheap to clone (for a thread that polls it).
#[derive(Debug, Clone)]
pub struct Api {
    node: Node,
}

impl std::ops::Deref for Prometheus {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Prometheus {
    /// Starts Prometheus in `node`'s network namespace with its files in `dir`, scraping
    /// `targets`; waits until it is ready.
    pub fn start(node: &Node, dir: &Path, targets: &[Target]) -> Result<Prometheus> {
        if !Path::new(BINARY).is_file() {
            bail!("{BINARY} is missing: install the Debian package prometheus (`cargo xtask setup` does)");
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config(targets))
            .with_context(|| format!("writing {}", config_file.display()))?;
        let mut cmd = Command::new(BINARY);
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={LISTEN}"))
            .arg("--log.level=warn");
        let proc = node.spawn(cmd)?;
        let prometheus = Prometheus { api: Api { node: node.clone() }, proc };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = prometheus.get("/-/ready") {
                return Ok(prometheus);
            }
            if Instant::now() > deadline {
                bail!("Prometheus not ready after 30 s:\n{}", prometheus.proc.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr_text()
    }
}

impl Api {
    fn get(&self, path: &str) -> Result<(u16, String)> {
        let path = path.to_owned();
        self.node.run(move || http_get(LISTEN, &path))
    }

    /// `/api/v1/query` at `time` (Unix seconds; now when `None`): the result vector, or the
    /// error Prometheus gave (a query that does not parse, for one).
    pub fn query(&self, promql: &str, time: Option<f64>) -> Result<Vec<Value>> {
        let mut path = format!("/api/v1/query?query={}", encode(promql));
        if let Some(t) = time {
            let _ = write!(path, "&time={t:.3}");
        }
        let (status, body) = self.get(&path)?;
        let reply: Value = serde_json::from_str(&body)
            .with_context(|| format!("Prometheus answered {status} with no JSON: {body}"))?;
        if reply["status"] != "success" {
            bail!(
                "{}: {}",
                reply["errorType"].as_str().unwrap_or("error"),
                reply["error"].as_str().unwrap_or(&body)
            );
        }
        let result = &reply["data"]["result"];
        Ok(match reply["data"]["resultType"].as_str() {
            // A scalar or string is one value.
            Some("scalar" | "string") => vec![result.clone()],
            _ => result.as_array().cloned().unwrap_or_default(),
        })
    }

    /// Every scrape target's health, `job` → `up`.
    pub fn targets_up(&self) -> Result<Vec<(String, String, bool)>> {
        let (_, body) = self.get("/api/v1/targets")?;
        let reply: Value = serde_json::from_str(&body).context("Prometheus's /api/v1/targets")?;
        Ok(reply["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let label = |k: &str| t["labels"][k].as_str().unwrap_or("").to_owned();
                (label("job"), t["scrapeUrl"].as_str().unwrap_or("").to_owned(), t["health"] == "up")
            })
            .collect())
    }

    /// Waits until every target has been scraped successfully.
    pub fn wait_all_up(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let targets = self.targets_up()?;
            if !targets.is_empty() && targets.iter().all(|(_, _, up)| *up) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not every target is up after {timeout:?}: {targets:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Percent-encoding of a query parameter value (everything but RFC 3986's unreserved).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The sample value of one result of an instant query (`[time, "value"]`).
pub fn value(result: &Value) -> Option<f64> {
    let v = result.get("value").unwrap_or(result);
    v.get(1)?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql() {
        assert_eq!(
            encode("sum(rate(x{a=~\"b|c\"}[5s]))"),
            "sum%28rate%28x%7Ba%3D~%22b%7Cc%22%7D%5B5s%5D%29%29"
        );
    }

    #[test]
    fn one_scrape_config_per_target_with_its_labels() {
        let c: Value = serde_json::from_str(&config(&[
            Target::new("weft-agent", "198.18.0.1:15020", "/stats/prometheus", &[("pod", "ztunnel-n1")]),
            Target::new("weftd", "127.0.0.1:15015", "/metrics", &[]),
        ]))
        .unwrap();
        let s = &c["scrape_configs"];
        assert_eq!(s[0]["static_configs"][0]["labels"]["pod"], "ztunnel-n1");
        assert_eq!(s[0]["metrics_path"], "/stats/prometheus");
        assert_eq!(s[1]["relabel_configs"][0]["replacement"], "weftd");
        assert_eq!(c["global"]["scrape_interval"], "1s");
        assert_eq!(value(&serde_json::json!({"value": [1.0, "2.5"]})), Some(2.5));
    }
}
