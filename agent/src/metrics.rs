//! Istio-compatible TCP metrics, so existing dashboards read the agent unchanged.
//!
//! A connection looks its series up once, when it opens, by a small `Copy` key (no
//! allocation on a hit); bytes are then counted with relaxed atomic adds per chunk.
//! Label text is rendered once, when a series is first seen.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    net::IpAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};
use weft_model::{Service, Workload};
use weft_telemetry::{
    Kind,
    text::{self, end_labels, push_label},
};

/// Which side of the connection reports, as Istio's `reporter` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client's agent (outbound).
    Source,
    /// The server's agent (inbound).
    Destination,
}

/// An `Arc` compared and hashed by address: the model shares one allocation per workload
/// and keeps it across updates that do not change it, so equal pointers mean the same
/// labels and the key stays cheap to hash.
#[derive(Debug, Clone)]
pub struct ByPtr<T>(pub Arc<T>);

impl<T> PartialEq for ByPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl<T> Eq for ByPtr<T> {}
impl<T> Hash for ByPtr<T> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        Arc::as_ptr(&self.0).hash(h)
    }
}

/// Identifies a series: who talked to whom, and how. Labels are rendered from it when
/// the series is created.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub reporter: Reporter,
    pub source: Option<ByPtr<Workload>>,
    /// The client's identity as its certificate proved it (HBONE, destination side):
    /// `source_principal` says what was verified, not what the address suggests.
    pub source_identity: Option<Arc<weft_hbone::Identity>>,
    pub destination: Option<ByPtr<Workload>>,
    /// The service the client addressed, if any.
    pub service: Option<ByPtr<Service>>,
    /// The address dialled, for `destination_service` when nothing in the mesh owns it.
    pub destination_ip: Option<IpAddr>,
    /// Whether the connection crossed the network in mutual TLS (HBONE).
    pub mtls: bool,
    /// Why it failed, for `istio_tcp_connections_failed_total` (Envoy's flags, as
    /// ztunnel uses them); `None` on the series of connections that opened.
    pub response_flags: ResponseFlags,
}

/// Envoy's response flags, the ones the agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ResponseFlags {
    #[default]
    None,
    /// Refused by an authorization policy (or PeerAuthentication STRICT).
    Deny,
    /// The upstream connection could not be made.
    Connect,
}

impl ResponseFlags {
    fn label(self) -> &'static str {
        match self {
            ResponseFlags::None => "-",
            ResponseFlags::Deny => "DENY",
            ResponseFlags::Connect => "CONNECT",
        }
    }
}

impl SeriesKey {
    pub fn new(reporter: Reporter, mtls: bool) -> SeriesKey {
        SeriesKey {
            reporter,
            source: None,
            source_identity: None,
            destination: None,
            service: None,
            destination_ip: None,
            mtls,
            response_flags: ResponseFlags::None,
        }
    }
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
    /// Connections that failed to establish (refused by policy, upstream unreachable).
    pub failed: AtomicU64,
}

struct Series {
    labels: String,
    /// A failure series (response flags set) carries only the failed count.
    failure: bool,
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
    pub hbone_connection_errors: AtomicU64,
    /// Pods handed over but not yet proxied (always 0 today: enrollment is synchronous).
    pub pending_pods: AtomicU64,
    /// xDS responses received, by [`XDS_TYPES`].
    pub xds_messages: [AtomicU64; 2],
    /// ADS streams that ended with an error, or without one.
    pub xds_errors: AtomicU64,
    pub xds_completed: AtomicU64,
}

impl Metrics {
    /// The counters for a connection's series, creating the series on first sight.
    pub fn series(&self, key: SeriesKey) -> Arc<TcpCounters> {
        if let Some(s) = self.tcp.read().expect("metrics lock").get(&key) {
            return s.counters.clone();
        }
        let labels = render_labels(&key);
        let mut map = self.tcp.write().expect("metrics lock");
        let failure = key.response_flags != ResponseFlags::None;
        map.entry(key)
            .or_insert_with(|| Series { labels, failure, counters: Arc::default() })
            .counters
            .clone()
    }

    /// Counts one xDS response of `type_url` (ztunnel's `istio_xds_message_total`).
    pub fn xds_message(&self, type_url: &str) {
        if let Some(i) = XDS_TYPES.iter().position(|t| *t == type_url) {
            self.xds_messages[i].fetch_add(1, Relaxed);
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let map = self.tcp.read().expect("metrics lock");
        type Family = (&'static str, &'static str, fn(&TcpCounters) -> u64);
        let families: [Family; 5] = [
            ("istio_tcp_connections_opened_total", "The total number of TCP connections opened.", |c| {
                c.opened.load(Relaxed)
            }),
            ("istio_tcp_connections_closed_total", "The total number of TCP connections closed.", |c| {
                c.closed.load(Relaxed)
            }),
            (
                "istio_tcp_received_bytes_total",
                "The size of total bytes received during request in case of a TCP connection.",
                |c| c.received.load(Relaxed),
            ),
            (
                "istio_tcp_sent_bytes_total",
                "The size of total bytes sent during response in case of a TCP connection.",
                |c| c.sent.load(Relaxed),
            ),
            (
                "istio_tcp_connections_failed_total",
                "The total number of TCP connections that failed to establish.",
                |c| c.failed.load(Relaxed),
            ),
        ];
        for (name, help, value) in families {
            text::family(&mut out, name, Kind::Counter, help);
            let failed_family = name == "istio_tcp_connections_failed_total";
            for s in map.values().filter(|s| s.failure == failed_family) {
                text::sample(&mut out, name, &s.labels, value(&s.counters));
            }
        }
        drop(map);
        let name = "istio_xds_message_total";
        text::family(&mut out, name, Kind::Counter, "Total number of messages received.");
        for (url, n) in XDS_TYPES.iter().zip(&self.xds_messages) {
            text::sample(&mut out, name, &text::labels(&[("url", url)]), n.load(Relaxed));
        }
        let name = "istio_xds_connection_terminations_total";
        text::family(
            &mut out,
            name,
            Kind::Counter,
            "The total number of completed connections to xds server.",
        );
        for (reason, n) in [("ConnectionError", &self.xds_errors), ("Complete", &self.xds_completed)] {
            text::sample(&mut out, name, &text::labels(&[("reason", reason)]), n.load(Relaxed));
        }
        let single = [
            ("weft_config_reloads_total", Kind::Counter, "Configurations accepted.", &self.config_reloads),
            (
                "weft_config_rejected_total",
                Kind::Counter,
                "Configurations rejected (the last good one stays in force).",
                &self.config_rejected,
            ),
            (
                "weft_enrolled_pods",
                Kind::Gauge,
                "Pods on this node whose traffic is captured.",
                &self.enrolled_pods,
            ),
            // ztunnel's names for the pods it proxies (in-pod mode): all enrolled pods are
            // served at once here, none waits.
            (
                "workload_manager_active_proxy_count",
                Kind::Gauge,
                "The total number current workloads with active proxies.",
                &self.enrolled_pods,
            ),
            (
                "workload_manager_pending_proxy_count",
                Kind::Gauge,
                "The total number current workloads with pending proxies.",
                &self.pending_pods,
            ),
            (
                "weft_outbound_errors_total",
                Kind::Counter,
                "Outbound connections that failed before or during forwarding.",
                &self.outbound_errors,
            ),
            (
                "weft_inbound_errors_total",
                Kind::Counter,
                "Inbound connections (plaintext, or HBONE streams) that failed before or during forwarding.",
                &self.inbound_errors,
            ),
            (
                "weft_hbone_connection_errors_total",
                Kind::Counter,
                "HBONE connections to this node's pods that failed (TLS handshake refused, broken HTTP/2).",
                &self.hbone_connection_errors,
            ),
        ];
        for (name, kind, help, v) in single {
            text::family(&mut out, name, kind, help);
            text::sample(&mut out, name, "", v.load(Relaxed));
        }
        out
    }
}

/// The xDS types the agent subscribes to, for `istio_xds_message_total{url}`.
const XDS_TYPES: [&str; 2] = [weft_xds::type_url::ADDRESS, weft_xds::type_url::AUTHORIZATION];

/// Labels in ztunnel's order (its `CommonTrafficLabels`), so the text reads as ztunnel's.
fn render_labels(key: &SeriesKey) -> String {
    let mut l = String::with_capacity(768);
    let reporter = match key.reporter {
        Reporter::Source => "source",
        Reporter::Destination => "destination",
    };
    push_label(&mut l, "reporter", reporter);
    let verified = key.source_identity.as_deref();
    let source = key.source.as_ref().map(|w| &*w.0);
    let destination = key.destination.as_ref().map(|w| &*w.0);
    let unknown = "unknown";
    let (host, name, ns) = match (&key.service, key.destination_ip) {
        (Some(s), _) => (s.0.hostname.clone(), s.0.name.as_str(), s.0.namespace.as_str()),
        (None, Some(ip)) => (ip.to_string(), unknown, unknown),
        (None, None) => (unknown.to_owned(), unknown, unknown),
    };
    push_workload(&mut l, "source", source, verified);
    push_label(&mut l, "destination_service", &host);
    push_label(&mut l, "destination_service_namespace", ns);
    push_label(&mut l, "destination_service_name", name);
    push_workload(&mut l, "destination", destination, None);
    push_label(&mut l, "request_protocol", "tcp");
    push_label(&mut l, "response_flags", key.response_flags.label());
    // Istio: "mutual_tls" when the connection was mTLS, "none" otherwise; the source side
    // reports "unknown" for plaintext (it cannot know the server's policy).
    let security = match (key.mtls, key.reporter) {
        (true, _) => "mutual_tls",
        (false, Reporter::Destination) => "none",
        (false, Reporter::Source) => "unknown",
    };
    push_label(&mut l, "connection_security_policy", security);
    end_labels(&mut l);
    l
}

/// One side's labels, as ztunnel orders them: workload, canonical service and revision,
/// namespace, principal, app, version, cluster. `verified`, when given, is the identity
/// the peer's certificate proved and the principal shown.
fn push_workload(l: &mut String, side: &str, w: Option<&Workload>, verified: Option<&weft_hbone::Identity>) {
    let unknown = "unknown";
    let or_unknown = |s: &'_ str| if s.is_empty() { unknown.to_owned() } else { s.to_owned() };
    let name = w.map_or(unknown, |w| if w.workload_name.is_empty() { &w.name } else { &w.workload_name });
    let app = or_unknown(w.map_or("", |w| w.canonical_name.as_str()));
    let version = or_unknown(w.map_or("", |w| w.canonical_revision.as_str()));
    let principal = match (verified, w) {
        (Some(id), _) => id.to_string(),
        (None, Some(w)) => w.identity.to_string(),
        (None, None) => unknown.to_owned(),
    };
    let cluster = w.map(|w| w.cluster_id.as_str()).filter(|s| !s.is_empty()).unwrap_or("Kubernetes");
    let labels: [(&str, &str); 8] = [
        ("workload", name),
        ("canonical_service", &app),
        ("canonical_revision", &version),
        ("workload_namespace", w.map_or(unknown, |w| w.namespace.as_str())),
        ("principal", &principal),
        ("app", &app),
        ("version", &version),
        ("cluster", cluster),
    ];
    for (suffix, value) in labels {
        push_label(l, &format!("{side}_{suffix}"), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_model::{AddressTable, Mesh};

    #[test]
    fn renders_istio_names_and_labels() {
        let mesh = Mesh::from_yaml(
            "namespaces: [{name: x, labels: {istio.io/dataplane-mode: ambient}}]\npods:\n - {name: a-1, workload: a, namespace: x, ip: 198.18.1.2, node: n1, serviceAccount: sa-a, labels: {app: a, version: v1}}\n - {name: b-1, namespace: y, ip: 198.18.2.2, node: n2, labels: {app: b}}\nservices:\n - {name: b, namespace: y, vip: 198.19.0.1, ports: [{port: 80}], selector: {app: b}}\n",
            "t",
        )
        .unwrap();
        let addresses = mesh.to_addresses("cluster.local");
        let mut table = AddressTable::new("cluster.local");
        assert!(table.apply(addresses.iter().map(|(n, a)| (n.as_str(), a)), []).is_empty());
        let state = table.state();
        let m = Metrics::default();
        let key = SeriesKey {
            source: state.workload_by_ip("198.18.1.2".parse().unwrap()).cloned().map(ByPtr),
            destination: state.workload_by_ip("198.18.2.2".parse().unwrap()).cloned().map(ByPtr),
            service: state.service_by_addr("198.19.0.1".parse().unwrap(), "x").cloned().map(ByPtr),
            ..SeriesKey::new(Reporter::Source, true)
        };
        let c = m.series(key.clone());
        c.opened.fetch_add(1, Relaxed);
        c.received.fetch_add(10, Relaxed);
        assert!(Arc::ptr_eq(&c, &m.series(key)), "one series per key");
        let text = m.render();
        assert!(text.contains("# TYPE istio_tcp_connections_opened_total counter"), "{text}");
        let line = text.lines().find(|l| l.starts_with("istio_tcp_received_bytes_total{")).unwrap();
        for want in [
            "reporter=\"source\"",
            "source_workload=\"a\"",
            "source_principal=\"spiffe://cluster.local/ns/x/sa/sa-a\"",
            "source_version=\"v1\"",
            "destination_workload=\"b-1\"",
            "destination_version=\"latest\"",
            "destination_service=\"b.y.svc.cluster.local\"",
            "connection_security_policy=\"mutual_tls\"",
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
        assert!(line.ends_with("} 10"), "{line}");
    }
}
