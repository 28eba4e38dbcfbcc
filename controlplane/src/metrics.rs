//! weftd's metrics under istiod's names, so Istio's control-plane dashboard reads weftd
//! unchanged: config and registry events (`pilot_k8s_cfg_events`, `pilot_k8s_reg_events`),
//! push triggers, what is known (`pilot_services`, `pilot_virt_services`), validation
//! (`galley_validation_*`: the admission webhook's decisions, by istiod's labels; in file
//! mode, where no webhook sees the objects, also each object read from the directory), the CA (`citadel_server_*`), xDS (from the server: `pilot_xds*`),
//! `istio_build{component="pilot"}` and the process.
//!
//! The config loop writes [`ControlPlaneMetrics::observe_store`] after each batch; the CA
//! counts with atomic adds; nothing here is on a proxy's path.

use crate::config::{ConfigSnapshot, Kind, store::StoreCounts};
use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};
use weft_telemetry::{Kind as MetricKind, text};
use weft_xds::server::XdsServer;

/// istiod's push trigger types that weftd has (`model.TriggerReason`).
const TRIGGERS: [&str; 4] = ["config", "service", "endpoint", "namespace"];

/// What a change of `kind` triggers a push as.
fn trigger(kind: Kind) -> usize {
    match kind {
        Kind::Service | Kind::ServiceEntry => 1,
        Kind::Pod | Kind::EndpointSlice | Kind::WorkloadEntry => 2,
        Kind::Namespace => 3,
        _ => 0,
    }
}

/// The service registry's kinds (`pilot_k8s_reg_events`, with istiod's type names); the
/// others are config (`pilot_k8s_cfg_events`, by kind).
fn registry_type(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Service => Some("Services"),
        Kind::Pod => Some("Pods"),
        Kind::EndpointSlice => Some("EndpointSlice"),
        Kind::Namespace => Some("Namespaces"),
        _ => None,
    }
}

/// weftd's counters.
#[derive(Debug, Default)]
pub struct ControlPlaneMetrics {
    store: Mutex<StoreCounts>,
    services: AtomicU64,
    virtual_services: AtomicU64,
    triggers: [AtomicU64; TRIGGERS.len()],
    /// CSRs received (`citadel_server_csr_count`).
    pub csrs: AtomicU64,
    /// Certificates issued (`citadel_server_success_cert_issuance_count`).
    pub issued: AtomicU64,
    /// Callers refused before their CSR was read (`citadel_server_authentication_failure_count`).
    pub authentication_failures: AtomicU64,
    /// The objects weftd validates as it reads them count as admission decisions too (file
    /// mode: nothing else admits them). In Kubernetes mode the webhook already counted them.
    reads_are_admission: bool,
    webhook: Mutex<WebhookCounts>,
}

/// The webhook's decisions, by istiod's labels.
#[derive(Debug, Default)]
struct WebhookCounts {
    /// By (group, version, resource).
    passed: BTreeMap<(String, String, String), u64>,
    /// By (group, version, resource, reason).
    failed: BTreeMap<(String, String, String, &'static str), u64>,
    /// By HTTP status (`galley_validation_http_error{status}`).
    http_errors: BTreeMap<u16, u64>,
}

impl ControlPlaneMetrics {
    /// Counters at zero. `reads_are_admission`: count the objects validated as they are
    /// read as admission decisions too (file mode).
    pub fn new(reads_are_admission: bool) -> Self {
        ControlPlaneMetrics { reads_are_admission, ..Default::default() }
    }

    /// After a batch: the store's counts now, and what is in force. A batch that changed
    /// objects of a kind counts one push trigger of that kind's type.
    pub fn observe_store(&self, counts: &StoreCounts, snapshot: &ConfigSnapshot) {
        let mut held = self.store.lock().expect("metrics lock");
        let mut fired = [false; TRIGGERS.len()];
        for ((kind, event), n) in &counts.events {
            if held.events.get(&(*kind, *event)) != Some(n) {
                fired[trigger(*kind)] = true;
            }
        }
        for (i, f) in fired.iter().enumerate() {
            if *f {
                self.triggers[i].fetch_add(1, Relaxed);
            }
        }
        if *held != *counts {
            *held = counts.clone();
        }
        drop(held);
        self.services.store((snapshot.services.len() + snapshot.service_entries.len()) as u64, Relaxed);
        self.virtual_services.store(snapshot.virtual_services.len() as u64, Relaxed);
    }

    /// A valid object admitted (`galley_validation_passed`).
    pub fn webhook_passed(&self, group: &str, version: &str, resource: &str) {
        let mut counts = self.webhook.lock().expect("metrics lock");
        *counts.passed.entry((group.into(), version.into(), resource.into())).or_default() += 1;
    }

    /// A request not validated or refused, with istiod's reason (`galley_validation_failed`).
    pub fn webhook_failed(&self, group: &str, version: &str, resource: &str, reason: &'static str) {
        let mut counts = self.webhook.lock().expect("metrics lock");
        *counts.failed.entry((group.into(), version.into(), resource.into(), reason)).or_default() += 1;
    }

    /// A request answered with an HTTP error instead of a review (`galley_validation_http_error`).
    pub fn webhook_http_error(&self, status: u16) {
        *self.webhook.lock().expect("metrics lock").http_errors.entry(status).or_default() += 1;
    }

    /// Prometheus text: weftd's families, the xDS server's, `istio_build`, the process.
    pub fn render(&self, xds: &XdsServer) -> String {
        let mut out = String::with_capacity(8192);
        let store = self.store.lock().expect("metrics lock").clone();
        // Summed by label text: two kinds may share a name (Istio's and Gateway API's Gateway).
        let mut cfg: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let mut reg: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for ((kind, event), n) in &store.events {
            match registry_type(*kind) {
                Some(t) => *reg.entry((t, event.as_str())).or_default() += n,
                None => *cfg.entry((kind.name(), event.as_str())).or_default() += n,
            }
        }
        for (name, help, events) in [
            ("pilot_k8s_cfg_events", "Events from k8s config.", &cfg),
            ("pilot_k8s_reg_events", "Events from k8s registry.", &reg),
        ] {
            text::family(&mut out, name, MetricKind::Counter, help);
            for ((t, event), n) in events {
                text::sample(&mut out, name, &text::labels(&[("type", t), ("event", event)]), n);
            }
        }
        let name = "pilot_push_triggers";
        text::family(
            &mut out,
            name,
            MetricKind::Counter,
            "Total number of times a push was triggered, labeled by reason for the push.",
        );
        for (t, n) in TRIGGERS.iter().zip(&self.triggers) {
            text::sample(&mut out, name, &text::labels(&[("type", t)]), n.load(Relaxed));
        }
        let gauges: [(&str, &str, u64); 4] = [
            ("pilot_services", "Total services known to pilot.", self.services.load(Relaxed)),
            (
                "pilot_virt_services",
                "Total virtual services known to pilot.",
                self.virtual_services.load(Relaxed),
            ),
            // weftd builds no per-port listeners for proxies (agents get workloads, the
            // waypoint one HBONE listener), so the listener conflicts istiod counts cannot
            // arise: the gauges are there, and 0.
            ("pilot_conflict_inbound_listener", "Number of conflicting inbound listeners.", 0),
            (
                "pilot_conflict_outbound_listener_tcp_over_current_tcp",
                "Number of conflicting tcp listeners with current tcp listener.",
                0,
            ),
        ];
        for (name, help, v) in gauges {
            text::family(&mut out, name, MetricKind::Gauge, help);
            text::sample(&mut out, name, "", v);
        }
        self.render_validation(&mut out, &store);
        let counters: [(&str, &str, u64); 3] = [
            (
                "citadel_server_csr_count",
                "The number of CSRs received by Citadel server.",
                self.csrs.load(Relaxed),
            ),
            (
                "citadel_server_success_cert_issuance_count",
                "The number of certificates issuances that have succeeded.",
                self.issued.load(Relaxed),
            ),
            (
                "citadel_server_authentication_failure_count",
                "The number of authentication failures.",
                self.authentication_failures.load(Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            text::family(&mut out, name, MetricKind::Counter, help);
            text::sample(&mut out, name, "", v);
        }
        xds.render_metrics(&mut out);
        weft_telemetry::render_process(&mut out, "pilot", env!("CARGO_PKG_VERSION"));
        out
    }
}

impl ControlPlaneMetrics {
    /// `galley_validation_*`: the webhook's decisions by group, version, resource (and
    /// reason); in file mode also the objects read, unlabelled (no request names a resource).
    fn render_validation(&self, out: &mut String, store: &StoreCounts) {
        let webhook = self.webhook.lock().expect("metrics lock");
        let (passed, failed) = ("galley_validation_passed", "galley_validation_failed");
        text::family(out, passed, MetricKind::Counter, "Resource is valid.");
        for ((group, version, resource), n) in &webhook.passed {
            let labels = text::labels(&[("group", group), ("version", version), ("resource", resource)]);
            text::sample(out, passed, &labels, n);
        }
        if self.reads_are_admission {
            text::sample(out, passed, "", store.validation_passed);
        }
        text::family(out, failed, MetricKind::Counter, "Resource validation failed.");
        for ((group, version, resource, reason), n) in &webhook.failed {
            let labels = text::labels(&[
                ("group", group),
                ("version", version),
                ("resource", resource),
                ("reason", reason),
            ]);
            text::sample(out, failed, &labels, n);
        }
        if self.reads_are_admission {
            text::sample(out, failed, "", store.validation_failed);
        }
        let name = "galley_validation_http_error";
        text::family(out, name, MetricKind::Counter, "Resource validation http serve errors.");
        for (status, n) in &webhook.http_errors {
            text::sample(out, name, &text::labels(&[("status", &status.to_string())]), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::store::ConfigEvent;

    #[test]
    fn events_by_istio_type_and_triggers_per_batch() {
        let m = ControlPlaneMetrics::new(true);
        let mut counts = StoreCounts::default();
        counts.events.insert((Kind::VirtualService, ConfigEvent::Add), 2);
        counts.events.insert((Kind::Pod, ConfigEvent::Add), 3);
        counts.validation_failed = 1;
        let snapshot = ConfigSnapshot::default();
        m.observe_store(&counts, &snapshot);
        m.observe_store(&counts, &snapshot); // nothing new: no trigger
        counts.events.insert((Kind::Gateway, ConfigEvent::Delete), 1);
        counts.events.insert((Kind::KubernetesGateway, ConfigEvent::Delete), 1);
        m.observe_store(&counts, &snapshot);
        m.webhook_passed("networking.istio.io", "v1", "virtualservices");
        m.webhook_failed("networking.istio.io", "v1", "virtualservices", "invalid_resource");
        m.webhook_http_error(400);
        let xds =
            tokio::runtime::Runtime::new().unwrap().block_on(async { XdsServer::new(Default::default()) });
        let out = m.render(&xds);
        for want in [
            "pilot_k8s_cfg_events{type=\"VirtualService\",event=\"add\"} 2\n",
            "pilot_k8s_cfg_events{type=\"Gateway\",event=\"delete\"} 2\n",
            "pilot_k8s_reg_events{type=\"Pods\",event=\"add\"} 3\n",
            "pilot_push_triggers{type=\"config\"} 2\n",
            "pilot_push_triggers{type=\"endpoint\"} 1\n",
            "galley_validation_failed 1\n",
            "galley_validation_passed{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\"} 1\n",
            "galley_validation_failed{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\",reason=\"invalid_resource\"} 1\n",
            "galley_validation_http_error{status=\"400\"} 1\n",
            "istio_build{component=\"pilot\",tag=\"",
            "# TYPE pilot_xds_pushes counter\n",
            "process_open_fds ",
        ] {
            assert!(out.contains(want), "{want} missing in\n{out}");
        }
    }
}
