//! What the server counts, under istiod's metric names so Istio's control-plane dashboard
//! reads weftd unchanged: pushes and their time and size by type (`pilot_xds_pushes`,
//! `pilot_xds_push_time`, `pilot_xds_config_size_bytes`), NACKs (`pilot_total_xds_rejects`),
//! connected proxies (`pilot_xds`), and the time from a change to a proxy having it
//! (`pilot_proxy_convergence_time`). Recorded with atomic adds; rendered when scraped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use weft_telemetry::{
    Histogram, Kind,
    text::{self, labels},
};

use crate::type_url;

/// istiod's short names of the types (`GetMetricType`), the `type` label; anything else
/// counts as `other`.
const TYPES: [(&str, &str); 7] = [
    (type_url::CLUSTER, "cds"),
    (type_url::LISTENER, "lds"),
    (type_url::ROUTE, "rds"),
    (type_url::ENDPOINT, "eds"),
    (type_url::SECRET, "sds"),
    (type_url::ADDRESS, "wds"),
    (type_url::AUTHORIZATION, "wads"),
];
const OTHER: usize = TYPES.len();

fn index(type_url: &str) -> usize {
    TYPES.iter().position(|(url, _)| *url == type_url).unwrap_or(OTHER)
}

fn short(i: usize) -> &'static str {
    TYPES.get(i).map_or("other", |(_, s)| s)
}

/// istiod's buckets for `pilot_xds_push_time` (seconds).
const PUSH_TIME_BUCKETS: &[f64] = &[0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// istiod's buckets for `pilot_proxy_convergence_time` (seconds).
const CONVERGENCE_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// istiod's buckets for `pilot_xds_config_size_bytes`: 10K, 1M, 4M (gRPC's default
/// limit), 10M, 40M.
const SIZE_BUCKETS: &[f64] = &[1.0, 10000.0, 1000000.0, 4000000.0, 10000000.0, 40000000.0];

/// The server's counters.
#[derive(Debug)]
pub(crate) struct ServerMetrics {
    pushes: [AtomicU64; OTHER + 1],
    rejects: [AtomicU64; OTHER + 1],
    push_time: Vec<Histogram>,
    config_size: Vec<Histogram>,
    convergence: Histogram,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            pushes: Default::default(),
            rejects: Default::default(),
            push_time: (0..=OTHER).map(|_| Histogram::new(PUSH_TIME_BUCKETS)).collect(),
            config_size: (0..=OTHER).map(|_| Histogram::new(SIZE_BUCKETS)).collect(),
            convergence: Histogram::new(CONVERGENCE_BUCKETS),
        }
    }
}

impl ServerMetrics {
    /// A response sent: of `type_url`, `bytes` long, `took` since the stream began making
    /// it; `since_change`, when a new snapshot caused it, the time since that change.
    pub fn pushed(&self, type_url: &str, bytes: usize, took: Duration, since_change: Option<Duration>) {
        let i = index(type_url);
        self.pushes[i].fetch_add(1, Relaxed);
        self.push_time[i].observe(took.as_secs_f64());
        self.config_size[i].observe(bytes as f64);
        if let Some(d) = since_change {
            self.convergence.observe(d.as_secs_f64());
        }
    }

    /// A NACK of `type_url`.
    pub fn rejected(&self, type_url: &str) {
        self.rejects[index(type_url)].fetch_add(1, Relaxed);
    }

    /// The families, with `connected` proxies by version for `pilot_xds`.
    pub fn render(&self, out: &mut String, connected: &[(String, u64)]) {
        let name = "pilot_xds";
        text::family(out, name, Kind::Gauge, "Number of endpoints connected to this pilot using XDS.");
        for (version, n) in connected {
            text::sample(out, name, &labels(&[("version", version)]), n);
        }
        let name = "pilot_xds_pushes";
        text::family(out, name, Kind::Counter, "Pilot build and send errors for lds, rds, cds and eds.");
        for (i, n) in self.pushes.iter().enumerate() {
            text::sample(out, name, &labels(&[("type", short(i))]), n.load(Relaxed));
        }
        let name = "pilot_total_xds_rejects";
        text::family(out, name, Kind::Counter, "Total number of XDS responses from pilot rejected by proxy.");
        for (i, n) in self.rejects.iter().enumerate() {
            text::sample(out, name, &labels(&[("type", short(i))]), n.load(Relaxed));
        }
        let name = "pilot_total_xds_internal_errors";
        text::family(out, name, Kind::Counter, "Total number of internal XDS errors in pilot.");
        // A response that cannot be built is refused at publish (the snapshot is checked
        // whole), so the server has no internal error to count.
        text::sample(out, name, "", 0);
        type Family<'a> = (&'a str, &'a str, &'a [Histogram]);
        let families: [Family; 2] = [
            (
                "pilot_xds_push_time",
                "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
                &self.push_time,
            ),
            (
                "pilot_xds_config_size_bytes",
                "Distribution of configuration sizes pushed to clients",
                &self.config_size,
            ),
        ];
        for (name, help, histograms) in families {
            text::family(out, name, Kind::Histogram, help);
            for (i, h) in histograms.iter().enumerate() {
                h.render(out, name, &labels(&[("type", short(i))]));
            }
        }
        let name = "pilot_proxy_convergence_time";
        text::family(
            out,
            name,
            Kind::Histogram,
            "Delay in seconds between config change and a proxy receiving all required configuration.",
        );
        self.convergence.render(out, name, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istiod_names_types_and_buckets() {
        let m = ServerMetrics::default();
        m.pushed(type_url::CLUSTER, 5000, Duration::from_millis(20), Some(Duration::from_millis(300)));
        m.pushed("type.googleapis.com/something.Else", 1, Duration::ZERO, None);
        m.rejected(type_url::ROUTE);
        let mut out = String::new();
        m.render(&mut out, &[("1.0".into(), 3)]);
        for want in [
            "pilot_xds{version=\"1.0\"} 3\n",
            "pilot_xds_pushes{type=\"cds\"} 1\n",
            "pilot_xds_pushes{type=\"other\"} 1\n",
            "pilot_total_xds_rejects{type=\"rds\"} 1\n",
            "pilot_xds_push_time_bucket{type=\"cds\",le=\"0.01\"} 0\n",
            "pilot_xds_push_time_bucket{type=\"cds\",le=\"0.1\"} 1\n",
            "pilot_xds_config_size_bytes_bucket{type=\"cds\",le=\"10000\"} 1\n",
            "pilot_proxy_convergence_time_bucket{le=\"0.5\"} 1\n",
            "# TYPE pilot_xds_push_time histogram\n",
        ] {
            assert!(out.contains(want), "{want} missing in\n{out}");
        }
    }
}
