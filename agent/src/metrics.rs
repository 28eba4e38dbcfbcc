//! Istio-compatible TCP metrics, so existing dashboards read the agent unchanged.
//!
//! A connection looks its series up once, when it opens, by a small `Copy` key (no
//! allocation on a hit); bytes are then counted with relaxed atomic adds per chunk.
//! Label text is rendered once, when a series is first seen.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::IpAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};
use weft_model::{MeshIndex, Pod, Service};

/// Which side of the connection reports, as Istio's `reporter` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client's agent (outbound).
    Source,
    /// The server's agent (inbound).
    Destination,
}

/// Identifies a series: who talked to whom, by address. Labels are derived from the
/// model when the series is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub reporter: Reporter,
    pub source: Option<IpAddr>,
    pub destination: Option<IpAddr>,
    /// The service VIP the client used, if any.
    pub service: Option<IpAddr>,
}

/// Counters of one series.
#[derive(Debug, Default)]
pub struct TcpCounters {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    /// Bytes from client to server (Istio: "received during request").
    pub received: AtomicU64,
    /// Bytes from server to client (Istio: "sent during response").
    pub sent: AtomicU64,
}

struct Series {
    labels: String,
    counters: Arc<TcpCounters>,
}

/// The agent's metrics registry.
#[derive(Default)]
pub struct Metrics {
    tcp: RwLock<HashMap<SeriesKey, Series>>,
    pub config_reloads: AtomicU64,
    pub config_rejected: AtomicU64,
    pub enrolled_pods: AtomicU64,
    pub outbound_errors: AtomicU64,
    pub inbound_errors: AtomicU64,
}

impl Metrics {
    /// The counters for a connection's series, creating the series on first sight.
    pub fn series(&self, key: SeriesKey, mesh: &MeshIndex, trust_domain: &str) -> Arc<TcpCounters> {
        if let Some(s) = self.tcp.read().expect("metrics lock").get(&key) {
            return s.counters.clone();
        }
        let labels = render_labels(&key, mesh, trust_domain);
        let mut map = self.tcp.write().expect("metrics lock");
        map.entry(key).or_insert_with(|| Series { labels, counters: Arc::default() }).counters.clone()
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let map = self.tcp.read().expect("metrics lock");
        type Family = (&'static str, &'static str, fn(&TcpCounters) -> u64);
        let families: [Family; 4] = [
            ("istio_tcp_connections_opened_total", "Total TCP connections opened", |c| {
                c.opened.load(Relaxed)
            }),
            ("istio_tcp_connections_closed_total", "Total TCP connections closed", |c| {
                c.closed.load(Relaxed)
            }),
            ("istio_tcp_received_bytes_total", "Bytes received during request (client to server)", |c| {
                c.received.load(Relaxed)
            }),
            ("istio_tcp_sent_bytes_total", "Bytes sent during response (server to client)", |c| {
                c.sent.load(Relaxed)
            }),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
            for s in map.values() {
                let _ = writeln!(out, "{name}{{{}}} {}", s.labels, value(&s.counters));
            }
        }
        drop(map);
        let gauges = [
            ("weft_config_reloads_total", "counter", "Configurations accepted", &self.config_reloads),
            (
                "weft_config_rejected_total",
                "counter",
                "Configurations rejected (the last good one stays in force)",
                &self.config_rejected,
            ),
            (
                "weft_enrolled_pods",
                "gauge",
                "Pods on this node whose traffic is captured",
                &self.enrolled_pods,
            ),
            (
                "weft_outbound_errors_total",
                "counter",
                "Outbound connections that failed before or during forwarding",
                &self.outbound_errors,
            ),
            (
                "weft_inbound_errors_total",
                "counter",
                "Inbound connections that failed before or during forwarding",
                &self.inbound_errors,
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} {kind}\n{name} {}", v.load(Relaxed));
        }
        out
    }
}

fn render_labels(key: &SeriesKey, mesh: &MeshIndex, trust_domain: &str) -> String {
    let src = key.source.and_then(|ip| mesh.pod_by_ip(ip));
    let dst = key.destination.and_then(|ip| mesh.pod_by_ip(ip));
    let svc: Option<&Service> = key.service.and_then(|ip| mesh.service_by_vip(ip));
    let mut l = String::with_capacity(512);
    let reporter = match key.reporter {
        Reporter::Source => "source",
        Reporter::Destination => "destination",
    };
    push(&mut l, "reporter", reporter);
    push_workload(&mut l, "source", src, trust_domain);
    push_workload(&mut l, "destination", dst, trust_domain);
    let (host, name, ns) = match svc {
        Some(s) => (s.hostname(), s.name.as_str(), s.namespace.as_str()),
        None => match key.destination {
            Some(ip) => (ip.to_string(), "unknown", "unknown"),
            None => ("unknown".to_owned(), "unknown", "unknown"),
        },
    };
    push(&mut l, "destination_service", &host);
    push(&mut l, "destination_service_name", name);
    push(&mut l, "destination_service_namespace", ns);
    push(&mut l, "request_protocol", "tcp");
    push(&mut l, "response_flags", "-");
    // Plain TCP between agents for now; HBONE (mutual_tls) comes with the mTLS work.
    push(
        &mut l,
        "connection_security_policy",
        if key.reporter == Reporter::Destination { "none" } else { "unknown" },
    );
    l.pop(); // trailing comma
    l
}

fn push_workload(l: &mut String, side: &str, pod: Option<&Pod>, trust_domain: &str) {
    let unknown = "unknown";
    push(l, &format!("{side}_workload"), pod.map_or(unknown, |p| p.workload_name()));
    push(l, &format!("{side}_workload_namespace"), pod.map_or(unknown, |p| p.namespace.as_str()));
    let principal = pod.map_or_else(|| unknown.to_owned(), |p| p.spiffe_id(trust_domain));
    push(l, &format!("{side}_principal"), &principal);
    push(l, &format!("{side}_app"), pod.and_then(|p| p.labels.get("app")).map_or(unknown, String::as_str));
    push(
        l,
        &format!("{side}_version"),
        pod.and_then(|p| p.labels.get("version")).map_or(unknown, String::as_str),
    );
    push(l, &format!("{side}_cluster"), "Kubernetes");
}

fn push(l: &mut String, name: &str, value: &str) {
    let _ = write!(l, "{name}=\"");
    for c in value.chars() {
        match c {
            '\\' => l.push_str("\\\\"),
            '"' => l.push_str("\\\""),
            '\n' => l.push_str("\\n"),
            c => l.push(c),
        }
    }
    l.push_str("\",");
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_model::Mesh;

    #[test]
    fn renders_istio_names_and_labels() {
        let mesh = MeshIndex::new(
            Mesh::from_yaml(
                "pods:\n - {name: a-1, workload: a, namespace: x, ip: 198.18.1.2, node: n1, serviceAccount: sa-a, labels: {app: a, version: v1}}\n - {name: b-1, namespace: y, ip: 198.18.2.2, node: n2}\nservices:\n - {name: b, namespace: y, vip: 198.19.0.1, ports: [{port: 80}], selector: {app: b}}\n",
                "t",
            )
            .unwrap(),
        );
        let m = Metrics::default();
        let key = SeriesKey {
            reporter: Reporter::Source,
            source: Some("198.18.1.2".parse().unwrap()),
            destination: Some("198.18.2.2".parse().unwrap()),
            service: Some("198.19.0.1".parse().unwrap()),
        };
        let c = m.series(key, &mesh, "cluster.local");
        c.opened.fetch_add(1, Relaxed);
        c.received.fetch_add(10, Relaxed);
        assert!(Arc::ptr_eq(&c, &m.series(key, &mesh, "cluster.local")), "one series per key");
        let text = m.render();
        assert!(text.contains("# TYPE istio_tcp_connections_opened_total counter"), "{text}");
        let line = text.lines().find(|l| l.starts_with("istio_tcp_received_bytes_total{")).unwrap();
        for want in [
            "reporter=\"source\"",
            "source_workload=\"a\"",
            "source_principal=\"spiffe://cluster.local/ns/x/sa/sa-a\"",
            "source_version=\"v1\"",
            "destination_workload=\"b-1\"",
            "destination_service=\"b.y.svc.cluster.local\"",
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
        assert!(line.ends_with("} 10"), "{line}");
    }
}
