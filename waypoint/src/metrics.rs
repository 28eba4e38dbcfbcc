//! Istio's request metrics as a waypoint reports them (`reporter="waypoint"`), or as a
//! gateway does (`reporter="source"`, below):
//! `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`
//! and `istio_response_bytes`, with the labels Istio's stats filter sets for a waypoint
//! (istio/proxy `istio_stats.cc`, `Reporter::ServerGateway`), so dashboards built for
//! Istio's waypoints read this one unchanged.
//!
//! What the waypoint knows of each side, and so what the labels say:
//! - source: the client's HBONE certificate (`source_principal`), and the workload at the
//!   client's address in the mesh's istio.workload.Address resources (workload, namespace,
//!   canonical service and revision as app and version, cluster), `unknown` when none is;
//! - destination: the endpoint that answered: its `weft.identity` (principal) and the
//!   workload at its address, as for the source;
//! - service: the HTTP chain the CONNECT reached (`inbound-vip|PORT|http|HOST`).
//!
//! A gateway (a `gateway_<port>` listener, `gateway.rs`) reports as Istio's ingress and
//! egress gateways do, whose Envoy counts its requests on the outbound side: the gateway
//! itself is the source (`reporter="source"`, its own certificate as `source_principal`,
//! its own workload, found by its pod address, as `source_workload` and the rest; the
//! client is not in the mesh), the service is the one of the cluster the route chose, and
//! `connection_security_policy` is `unknown`, as Istio's source reporter always says.
//!
//! Cost on the request path: one lookup per request, when its response ends, of a
//! 128-bit fingerprint of the label values in one of [`SHARDS`] maps under a read lock of
//! that shard only; the label text is rendered once, when a series is first seen, and
//! counting is relaxed atomic adds. Nothing is allocated per request once a series exists.

use crate::{
    access_log::{self, AccessLog, Entry},
    body::ResponseBody,
    proxy::Downstream,
    snapshot::Chain,
    upstream::Endpoint,
};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Instant,
};
use weft_telemetry::{
    Histogram, Kind,
    text::{self, end_labels, push_label},
};

/// Shards of the series map: a new series takes one shard's write lock, never all.
pub const SHARDS: usize = 16;

/// Lines a series renders: its request count and three histograms of 19 buckets, `+Inf`,
/// sum and count.
const LINES_PER_SERIES: usize = 1 + 3 * 22;
/// What a line adds to its labels: the longest name with suffix, braces, the `le` label
/// and the value.
const LINE_OVERHEAD: usize = 90;

/// One label set and its counters; the histograms have Envoy's default buckets, as
/// Istio's stats filter's.
#[derive(Debug)]
pub struct Series {
    labels: String,
    requests: AtomicU64,
    duration_ms: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// A workload's names as Istio's metrics label a peer (`*_workload`, `*_app`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub workload: Box<str>,
    pub namespace: Box<str>,
    /// The canonical service (`service.istio.io/canonical-name`, else `app`).
    pub app: Box<str>,
    /// The canonical revision (`service.istio.io/canonical-revision`, else `version`).
    pub version: Box<str>,
    pub cluster: Box<str>,
}

/// Who reports a request, in Istio's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// A waypoint: `reporter="waypoint"`, the HBONE client as the source.
    Waypoint,
    /// A gateway: `reporter="source"`, the gateway as the source.
    Gateway,
}

/// What a finished request is counted under.
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a> {
    pub reporter: Reporter,
    pub source: Option<&'a weft_hbone::Identity>,
    /// The workload at the client's address (a gateway: its own), if the mesh knows one.
    pub source_peer: Option<&'a Peer>,
    /// Names the destination service after its last `|`: the HTTP chain's name,
    /// `inbound-vip|PORT|http|HOST` (a waypoint), or the cluster's (a gateway).
    pub service: &'a str,
    pub destination: Option<&'a weft_hbone::Identity>,
    /// The workload at the endpoint's address, if the mesh knows one.
    pub destination_peer: Option<&'a Peer>,
    pub grpc: bool,
    pub code: u16,
    /// gRPC status (gRPC requests only; `None` when the answer carried none).
    pub grpc_status: Option<u32>,
    /// Envoy's response flag; `None` is `-`.
    pub flag: Option<&'static str>,
}

impl Labels<'_> {
    /// 128 bits of two differently seeded hashes: equal label values give equal keys,
    /// and two label sets colliding is beyond concern. Identities and peers are hashed by
    /// their parts, which determine the text rendered from them, so nothing is formatted.
    fn fingerprint(&self) -> u128 {
        let one = |seed: u8| {
            let mut h = DefaultHasher::new();
            (seed, self.reporter, self.source, self.source_peer, self.service).hash(&mut h);
            (self.destination, self.destination_peer).hash(&mut h);
            (self.grpc, self.code, self.grpc_status, self.flag).hash(&mut h);
            h.finish()
        };
        (u128::from(one(0)) << 64) | u128::from(one(1))
    }

    /// Prometheus label text, in the order Istio's stats filter adds them.
    pub fn render(&self) -> String {
        let unknown = "unknown";
        let mut l = String::with_capacity(1024);
        let (service, name, namespace) = service_of(self.service);
        let source = self.source.map(ToString::to_string);
        let destination = self.destination.map(ToString::to_string);
        let (sp, dp) = (self.source_peer, self.destination_peer);
        fn field(p: Option<&Peer>, f: fn(&Peer) -> &str) -> &str {
            p.map_or("unknown", f)
        }
        // The namespace: the workload's, else the certificate's.
        let source_ns = sp.map(|p| &*p.namespace).or(self.source.map(|i| i.namespace())).unwrap_or(unknown);
        let destination_ns =
            dp.map(|p| &*p.namespace).or(self.destination.map(|i| i.namespace())).unwrap_or(unknown);
        let code = self.code.to_string();
        let (reporter, security) = match self.reporter {
            // HBONE is mutual TLS, both ways, always.
            Reporter::Waypoint => ("waypoint", "mutual_tls"),
            // Istio's source reporter does not know the policy the server applied.
            Reporter::Gateway => ("source", unknown),
        };
        let grpc_status = self.grpc_status.map(|s| s.to_string()).unwrap_or_default();
        let pairs: [(&str, &str); 25] = [
            ("reporter", reporter),
            ("source_workload", field(sp, |p| &p.workload)),
            ("source_canonical_service", field(sp, |p| &p.app)),
            ("source_canonical_revision", field(sp, |p| &p.version)),
            ("source_workload_namespace", source_ns),
            ("source_principal", source.as_deref().unwrap_or(unknown)),
            ("source_app", field(sp, |p| &p.app)),
            ("source_version", field(sp, |p| &p.version)),
            ("source_cluster", field(sp, |p| &p.cluster)),
            ("destination_workload", field(dp, |p| &p.workload)),
            ("destination_workload_namespace", destination_ns),
            ("destination_principal", destination.as_deref().unwrap_or(unknown)),
            ("destination_app", field(dp, |p| &p.app)),
            ("destination_version", field(dp, |p| &p.version)),
            ("destination_service", service),
            ("destination_canonical_service", field(dp, |p| &p.app)),
            ("destination_canonical_revision", field(dp, |p| &p.version)),
            ("destination_service_name", name),
            ("destination_service_namespace", namespace),
            // Istio: the waypoint's own cluster (its node metadata's CLUSTER_ID).
            ("destination_cluster", "Kubernetes"),
            ("request_protocol", if self.grpc { "grpc" } else { "http" }),
            ("response_code", &code),
            ("grpc_response_status", &grpc_status),
            ("response_flags", self.flag.unwrap_or("-")),
            ("connection_security_policy", security),
        ];
        for (name, value) in pairs {
            push_label(&mut l, name, value);
        }
        end_labels(&mut l);
        l
    }
}

/// `HOST`, its name and namespace, from a chain or cluster named `…|HOST` (`HOST` is
/// `NAME.NAMESPACE.svc.DOMAIN`). Istio takes the name from the cluster's
/// `istio.services` metadata, the same host.
pub fn service_of(chain: &str) -> (&str, &str, &str) {
    let host = chain.rsplit('|').next().filter(|h| !h.is_empty()).unwrap_or("unknown");
    let mut labels = host.split('.');
    let name = labels.next().unwrap_or("unknown");
    let namespace = labels.next().unwrap_or("unknown");
    (host, name, namespace)
}

/// The waypoint's metrics registry, and the access log when it is on.
#[derive(Debug, Default)]
pub struct Metrics {
    shards: [RwLock<HashMap<u128, Arc<Series>>>; SHARDS],
    /// CONNECTs refused: unknown authority or not configured yet.
    pub connects_refused: AtomicU64,
    pub tcp_connections: AtomicU64,
    /// The access log, when on (`--access-log`). Swappable so tests can read it.
    pub access_log: ArcSwapOption<AccessLog>,
}

impl Metrics {
    /// The series of `labels`, made on first sight.
    pub fn series(&self, labels: &Labels<'_>) -> Arc<Series> {
        let key = labels.fingerprint();
        let shard = &self.shards[(key as usize) % SHARDS];
        if let Some(s) = shard.read().expect("metrics shard").get(&key) {
            return s.clone();
        }
        let series = Series {
            labels: labels.render(),
            requests: AtomicU64::new(0),
            duration_ms: Histogram::envoy(),
            request_bytes: Histogram::envoy(),
            response_bytes: Histogram::envoy(),
        };
        shard.write().expect("metrics shard").entry(key).or_insert_with(|| Arc::new(series)).clone()
    }

    /// Counts one finished request.
    pub fn record(&self, labels: &Labels<'_>, duration_ms: u64, request_bytes: u64, response_bytes: u64) {
        let series = self.series(labels);
        series.requests.fetch_add(1, Relaxed);
        series.duration_ms.observe(duration_ms as f64);
        series.request_bytes.observe(request_bytes as f64);
        series.response_bytes.observe(response_bytes as f64);
    }

    /// Prometheus text exposition: Istio's families, then the waypoint's own counters.
    pub fn render(&self) -> String {
        let mut all: Vec<Arc<Series>> = Vec::new();
        for shard in &self.shards {
            all.extend(shard.read().expect("metrics shard").values().cloned());
        }
        all.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        // Sized once: growing a buffer of tens of MB by doubling copied it several times.
        let size: usize = all.iter().map(|s| (s.labels.len() + LINE_OVERHEAD) * LINES_PER_SERIES).sum();
        let mut out = String::with_capacity(4096 + size);
        let name = "istio_requests_total";
        text::family(&mut out, name, Kind::Counter, "Total requests.");
        for s in &all {
            text::sample_u64(&mut out, name, "", &s.labels, None, s.requests.load(Relaxed));
        }
        type Pick = fn(&Series) -> &Histogram;
        let histograms: [(&str, &str, Pick); 3] = [
            ("istio_request_duration_milliseconds", "Request duration in milliseconds.", |s| &s.duration_ms),
            ("istio_request_bytes", "Request size in bytes.", |s| &s.request_bytes),
            ("istio_response_bytes", "Response size in bytes.", |s| &s.response_bytes),
        ];
        for (name, help, pick) in histograms {
            text::family(&mut out, name, Kind::Histogram, help);
            let Some(first) = all.first() else { continue };
            let le = pick(first).le_labels();
            for s in &all {
                pick(s).render_with(&mut out, name, &s.labels, &le);
            }
        }
        let counters = [
            (
                "weft_waypoint_connects_refused_total",
                "CONNECTs refused (unknown authority or not configured yet).",
                &self.connects_refused,
            ),
            ("weft_waypoint_tcp_connections_total", "HBONE connections accepted.", &self.tcp_connections),
        ];
        for (name, help, value) in counters {
            text::family(&mut out, name, Kind::Counter, help);
            text::sample(&mut out, name, "", value.load(Relaxed));
        }
        out
    }
}

/// What is taken from the request before the proxy consumes it.
pub struct RequestHead {
    started: Instant,
    grpc: bool,
    /// Header bytes (as HTTP/1.1 would carry them) plus the body's declared length.
    bytes: u64,
    log: Option<Box<Entry>>,
}

impl RequestHead {
    pub fn of<B: Body>(ctx: &Downstream, request: &Request<B>) -> RequestHead {
        let headers = request.headers();
        let grpc =
            headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let line = request.method().as_str().len() + request.uri().path().len() + 12;
        let bytes = (line + header_bytes(headers)) as u64 + request.body().size_hint().lower();
        let log = ctx.shared.metrics.access_log.load().as_ref().map(|_| Box::new(Entry::of(ctx, request)));
        RequestHead { started: Instant::now(), grpc, bytes, log }
    }
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// Wraps the response so that the request is counted (and logged) when its body ends,
/// or when the client goes away first (`DC`).
pub fn observe(
    ctx: &Arc<Downstream>,
    head: RequestHead,
    response: Response<ResponseBody>,
    flag: Option<&'static str>,
    cluster: Option<Arc<str>>,
) -> Response<Observed> {
    let endpoint = match response.body() {
        ResponseBody::Upstream { keep: Some(keep), .. } => Some(keep.endpoint().clone()),
        _ => None,
    };
    let grpc_status = head.grpc.then(|| grpc_status(response.headers())).flatten();
    let headers_at = head.started.elapsed();
    let mut log = head.log;
    if let Some(entry) = &mut log {
        entry.upstream_service_time = endpoint.is_some().then_some(headers_at);
    }
    let pending = Pending {
        ctx: ctx.clone(),
        endpoint,
        cluster,
        started: head.started,
        code: response.status().as_u16(),
        flag,
        grpc: head.grpc,
        grpc_status,
        request_bytes: head.bytes,
        response_header_bytes: (header_bytes(response.headers()) + 17) as u64,
        response_body_bytes: 0,
        log,
    };
    response.map(|inner| Observed { inner, pending: Some(pending) })
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

struct Pending {
    ctx: Arc<Downstream>,
    endpoint: Option<Arc<Endpoint>>,
    /// The cluster the route chose, if it got that far.
    cluster: Option<Arc<str>>,
    started: Instant,
    code: u16,
    flag: Option<&'static str>,
    grpc: bool,
    grpc_status: Option<u32>,
    request_bytes: u64,
    response_header_bytes: u64,
    response_body_bytes: u64,
    log: Option<Box<Entry>>,
}

impl Pending {
    fn finish(self) {
        let took = self.started.elapsed();
        let Chain::Http(chain) = &*self.ctx.chain else { return };
        // The snapshot in force now: a workload that left meanwhile is `unknown`.
        let snapshot = self.ctx.shared.snapshot.load();
        let peer = |ip| snapshot.workloads.get(&ip).map(|w| &w.peer);
        let shared = &self.ctx.shared;
        let (source, source_peer, service) = match self.ctx.reporter {
            Reporter::Waypoint => {
                (self.ctx.source.identity.as_deref(), peer(self.ctx.source.addr.ip()), &*chain.name)
            }
            Reporter::Gateway => {
                (Some(shared.identity.identity()), peer(shared.pod_ip), self.cluster.as_deref().unwrap_or(""))
            }
        };
        let labels = Labels {
            reporter: self.ctx.reporter,
            source,
            source_peer,
            service,
            destination: self.endpoint.as_ref().and_then(|e| e.identity.as_ref()),
            destination_peer: self.endpoint.as_ref().and_then(|e| peer(e.address.ip())),
            grpc: self.grpc,
            code: self.code,
            grpc_status: self.grpc_status,
            flag: self.flag,
        };
        let metrics = &shared.metrics;
        // Logged before counted: whoever sees the count finds the line written.
        if let (Some(mut entry), Some(log)) = (self.log, metrics.access_log.load_full()) {
            entry.finish(access_log::Finish {
                code: self.code,
                flag: self.flag,
                bytes_sent: self.response_body_bytes,
                duration: took,
                upstream: self.endpoint.as_ref().map(|e| e.address),
            });
            log.write(&entry);
        }
        metrics.record(
            &labels,
            took.as_millis() as u64,
            self.request_bytes,
            self.response_header_bytes + self.response_body_bytes,
        );
    }
}

/// The response body, counted as it goes; the request is recorded when it ends.
pub struct Observed {
    inner: ResponseBody,
    pending: Option<Pending>,
}

impl Body for Observed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(p) = &mut this.pending {
                    if let Some(data) = frame.data_ref() {
                        p.response_body_bytes += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref()
                        && p.grpc
                    {
                        p.grpc_status = grpc_status(trailers).or(p.grpc_status);
                    }
                }
                if this.inner.is_end_stream()
                    && let Some(p) = this.pending.take()
                {
                    p.finish();
                }
            }
            Poll::Ready(None) => {
                if let Some(p) = this.pending.take() {
                    p.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut p) = this.pending.take() {
                    // Envoy: upstream connection termination after the headers.
                    p.flag = p.flag.or(Some("UPE"));
                    p.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // Dropped before its end (or an empty body hyper never polled).
        if let Some(mut p) = self.pending.take() {
            if !self.inner.is_end_stream() {
                // Envoy: downstream connection termination.
                p.flag = p.flag.or(Some("DC"));
            }
            p.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_hbone::Identity;

    fn labels<'a>(
        src: &'a Identity,
        dst: Option<&'a Identity>,
        code: u16,
        flag: Option<&'static str>,
    ) -> Labels<'a> {
        Labels {
            reporter: Reporter::Waypoint,
            source: Some(src),
            source_peer: None,
            service: "inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local",
            destination: dst,
            destination_peer: None,
            grpc: false,
            code,
            grpc_status: None,
            flag,
        }
    }

    #[test]
    fn renders_istio_names_labels_and_buckets() {
        let src = Identity::new("cluster.local", "bookinfo", "productpage").unwrap();
        let dst = Identity::new("cluster.local", "bookinfo", "reviews").unwrap();
        let m = Metrics::default();
        m.record(&labels(&src, Some(&dst), 200, None), 3, 100, 2_000);
        m.record(&labels(&src, Some(&dst), 200, None), 70, 100, 4_000_000);
        m.record(&labels(&src, None, 503, Some("UH")), 0, 50, 19);
        let text = m.render();
        assert!(text.contains("# TYPE istio_requests_total counter\n"), "{text}");
        for family in ["istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"] {
            assert!(text.contains(&format!("# TYPE {family} histogram\n")), "{family}: {text}");
        }
        let ok = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
            .unwrap();
        let want = "istio_requests_total{reporter=\"waypoint\",source_workload=\"unknown\",\
source_canonical_service=\"unknown\",source_canonical_revision=\"unknown\",\
source_workload_namespace=\"bookinfo\",source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/productpage\",\
source_app=\"unknown\",source_version=\"unknown\",source_cluster=\"unknown\",destination_workload=\"unknown\",\
destination_workload_namespace=\"bookinfo\",destination_principal=\"spiffe://cluster.local/ns/bookinfo/sa/reviews\",\
destination_app=\"unknown\",destination_version=\"unknown\",destination_service=\"reviews.bookinfo.svc.cluster.local\",\
destination_canonical_service=\"unknown\",destination_canonical_revision=\"unknown\",\
destination_service_name=\"reviews\",destination_service_namespace=\"bookinfo\",destination_cluster=\"Kubernetes\",\
request_protocol=\"http\",response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",\
connection_security_policy=\"mutual_tls\"} 2";
        assert_eq!(ok, want);
        let uh =
            text.lines().find(|l| l.starts_with("istio_requests_total{") && l.contains("\"UH\"")).unwrap();
        assert!(
            uh.contains("destination_principal=\"unknown\"") && uh.contains("response_code=\"503\""),
            "{uh}"
        );
        assert!(uh.ends_with("} 1"), "{uh}");

        // Buckets: Envoy's defaults, cumulative, +Inf = count, integer sum.
        let bounds: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("istio_request_duration_milliseconds_bucket{") && l.contains("\"200\""))
            .map(|l| l.split("le=\"").nth(1).unwrap().split('"').next().unwrap())
            .collect();
        assert_eq!(
            bounds,
            [
                "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
                "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf"
            ]
        );
        let value = |prefix: &str, le: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(prefix) && l.contains("\"200\"") && l.contains(le))
                .unwrap_or_else(|| panic!("{prefix} {le}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let d = "istio_request_duration_milliseconds_bucket{";
        assert_eq!(value(d, "le=\"1\""), 0);
        assert_eq!(value(d, "le=\"5\""), 1);
        assert_eq!(value(d, "le=\"50\""), 1);
        assert_eq!(value(d, "le=\"100\""), 2);
        assert_eq!(value(d, "le=\"+Inf\""), 2);
        assert_eq!(value("istio_request_duration_milliseconds_sum{", ""), 73);
        assert_eq!(value("istio_request_duration_milliseconds_count{", ""), 2);
        let r = "istio_response_bytes_bucket{";
        assert_eq!(value(r, "le=\"3600000\""), 1, "4 MB is above the last bound");
        assert_eq!(value(r, "le=\"+Inf\""), 2);
        assert_eq!(value("istio_response_bytes_sum{", ""), 4_002_000);
    }

    #[test]
    fn workloads_at_both_ends_name_the_peers() {
        let src = Identity::new("cluster.local", "bookinfo", "productpage").unwrap();
        let dst = Identity::new("cluster.local", "bookinfo", "reviews").unwrap();
        let peer = |workload: &str, app: &str, version: &str| Peer {
            workload: workload.into(),
            namespace: "bookinfo".into(),
            app: app.into(),
            version: version.into(),
            cluster: "Kubernetes".into(),
        };
        let (p, r) = (peer("productpage-v1", "productpage", "v1"), peer("reviews-v2", "reviews", "v2"));
        let l = Labels {
            source_peer: Some(&p),
            destination_peer: Some(&r),
            ..labels(&src, Some(&dst), 200, None)
        };
        let text = l.render();
        for want in [
            "source_workload=\"productpage-v1\",source_canonical_service=\"productpage\",source_canonical_revision=\"v1\"",
            "source_app=\"productpage\",source_version=\"v1\",source_cluster=\"Kubernetes\"",
            "destination_workload=\"reviews-v2\",destination_workload_namespace=\"bookinfo\"",
            "destination_app=\"reviews\",destination_version=\"v2\"",
            "destination_canonical_service=\"reviews\",destination_canonical_revision=\"v2\"",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
        let m = Metrics::default();
        let other = peer("reviews-v3", "reviews", "v3");
        let a = m.series(&l);
        let b = m.series(&Labels { destination_peer: Some(&other), ..l });
        assert!(!Arc::ptr_eq(&a, &b), "another destination workload is another series");
    }

    #[test]
    fn one_series_per_label_set() {
        let src = Identity::new("cluster.local", "bookinfo", "productpage").unwrap();
        let again = Identity::new("cluster.local", "bookinfo", "productpage").unwrap();
        let m = Metrics::default();
        let a = m.series(&labels(&src, None, 200, None));
        let b = m.series(&labels(&again, None, 200, None));
        assert!(Arc::ptr_eq(&a, &b), "equal label values share a series");
        let c = m.series(&labels(&src, None, 200, Some("UO")));
        assert!(!Arc::ptr_eq(&a, &c));
        let grpc = Labels { grpc: true, grpc_status: Some(14), ..labels(&src, None, 200, None) };
        let text = {
            m.record(&grpc, 1, 1, 1);
            m.render()
        };
        assert!(
            text.contains("request_protocol=\"grpc\",response_code=\"200\",grpc_response_status=\"14\""),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let src = Identity::new("cluster.local", "bookinfo", "productpage").unwrap();
        let l = Labels {
            service: "inbound-vip|80|http|we\"ird\\na\nme.ns.svc.cluster.local",
            ..labels(&src, None, 200, None)
        };
        let text = l.render();
        assert!(text.contains(r#"destination_service="we\"ird\\na\nme.ns.svc.cluster.local""#), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn service_from_the_chain_name() {
        assert_eq!(
            service_of("inbound-vip|80|http|reviews.bookinfo.svc.cluster.local"),
            ("reviews.bookinfo.svc.cluster.local", "reviews", "bookinfo")
        );
        assert_eq!(service_of(""), ("unknown", "unknown", "unknown"));
    }

    /// A gateway reports as Istio's gateways: `reporter="source"`, itself as the source,
    /// the service of the cluster its route chose, and an unknown security policy.
    #[test]
    fn a_gateway_reports_as_the_source() {
        let gateway = Identity::new("cluster.local", "istio-system", "istio-ingressgateway").unwrap();
        let dst = Identity::new("cluster.local", "bookinfo", "reviews").unwrap();
        let l = Labels {
            reporter: Reporter::Gateway,
            service: "inbound-vip|9080|http/v2|reviews.bookinfo.svc.cluster.local",
            ..labels(&gateway, Some(&dst), 200, None)
        };
        let text = l.render();
        for want in [
            "reporter=\"source\"",
            "source_workload_namespace=\"istio-system\"",
            "source_principal=\"spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway\"",
            "destination_service=\"reviews.bookinfo.svc.cluster.local\",",
            "destination_service_name=\"reviews\",destination_service_namespace=\"bookinfo\"",
            "connection_security_policy=\"unknown\"",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
        let m = Metrics::default();
        let waypoint = Labels { reporter: Reporter::Waypoint, ..l };
        assert!(!Arc::ptr_eq(&m.series(&l), &m.series(&waypoint)), "the reporter is part of the series");
    }
}
