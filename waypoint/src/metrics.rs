//! Istio's request metrics as a waypoint reports them (`reporter="waypoint"`):
//! `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`
//! and `istio_response_bytes`, with the labels Istio's stats filter sets for a waypoint
//! (istio/proxy `istio_stats.cc`, `Reporter::ServerGateway`), so dashboards built for
//! Istio's waypoints read this one unchanged.
//!
//! What the waypoint knows of each side, and so what the labels say:
//! - source: the client's HBONE certificate (`source_principal`, and
//!   `source_workload_namespace` from it); no peer metadata reaches a waypoint here, so
//!   workload, app, version and cluster are `unknown`, as Istio's are without it;
//! - destination: the endpoint that answered (its `weft.identity`: principal and
//!   namespace); app and version `unknown`, as in Istio (its endpoint encoding has none);
//! - service: the HTTP chain the CONNECT reached (`inbound-vip|PORT|http|HOST`).
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
    fmt::Write as _,
    hash::{DefaultHasher, Hash, Hasher},
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Instant,
};

/// Envoy's default histogram buckets, which Istio's stats filter uses for all three
/// histograms (milliseconds for the duration, bytes for the sizes).
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
    300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The `le` label of each bound of [`BUCKETS`], as Prometheus's text format prints them
/// (rendered once here, not per line per scrape).
const LE: [&str; BUCKETS.len()] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000", "30000",
    "60000", "300000", "600000", "1800000", "3600000",
];

/// Bytes of one sample line besides its labels: the longest family name, the bucket
/// suffix and `le` label, and the value; for sizing the scrape's buffer once.
const LINE_OVERHEAD: usize = 96;

/// Sample lines per series: the counter, and per histogram the buckets, `+Inf`, sum and count.
const LINES_PER_SERIES: usize = 1 + 3 * (BUCKETS.len() + 3);

/// Shards of the series map: a new series takes one shard's write lock, never all.
pub const SHARDS: usize = 16;

/// A histogram with [`BUCKETS`]: per-bucket counts (not cumulative: one add per value),
/// the count and the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, value: u64) {
        // Values above the last bound are only in the count (`+Inf`).
        if let Some(i) = BUCKETS.iter().position(|&b| value as f64 <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    /// A scrape of a waypoint with many series is mostly these lines (67 per series, the
    /// labels repeated on each): pieces are pushed and numbers written by hand rather than
    /// through `format!` machinery, which took most of a scrape's CPU.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let line = |out: &mut String, suffix: &str, le: Option<&str>, value: u64| {
            out.push_str(name);
            out.push_str(suffix);
            out.push('{');
            out.push_str(labels);
            if let Some(le) = le {
                out.push_str(",le=\"");
                out.push_str(le);
                out.push('"');
            }
            out.push_str("} ");
            push_u64(out, value);
            out.push('\n');
        };
        for (le, n) in LE.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            line(out, "_bucket", Some(le), cumulative);
        }
        let count = self.count.load(Relaxed);
        line(out, "_bucket", Some("+Inf"), count);
        line(out, "_sum", None, self.sum.load(Relaxed));
        line(out, "_count", None, count);
    }
}

/// One label set and its counters.
#[derive(Debug)]
pub struct Series {
    labels: String,
    requests: AtomicU64,
    duration_ms: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// What a finished request is counted under.
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a> {
    pub source: Option<&'a weft_hbone::Identity>,
    /// The HTTP chain's name, `inbound-vip|PORT|http|HOST`.
    pub chain: &'a str,
    pub destination: Option<&'a weft_hbone::Identity>,
    pub grpc: bool,
    pub code: u16,
    /// gRPC status (gRPC requests only; `None` when the answer carried none).
    pub grpc_status: Option<u32>,
    /// Envoy's response flag; `None` is `-`.
    pub flag: Option<&'static str>,
}

impl Labels<'_> {
    /// 128 bits of two differently seeded hashes: equal label values give equal keys,
    /// and two label sets colliding is beyond concern. The identities are hashed by their
    /// parts, which determine the principal rendered from them, so nothing is formatted.
    fn fingerprint(&self) -> u128 {
        let one = |seed: u8| {
            let mut h = DefaultHasher::new();
            (seed, self.source, self.chain, self.destination).hash(&mut h);
            (self.grpc, self.code, self.grpc_status, self.flag).hash(&mut h);
            h.finish()
        };
        (u128::from(one(0)) << 64) | u128::from(one(1))
    }

    /// Prometheus label text, in the order Istio's stats filter adds them.
    pub fn render(&self) -> String {
        let unknown = "unknown";
        let mut l = String::with_capacity(768);
        let (service, name, namespace) = service_of(self.chain);
        let source = self.source.map(ToString::to_string);
        let destination = self.destination.map(ToString::to_string);
        let pairs: [(&str, &str); 21] = [
            ("reporter", "waypoint"),
            ("source_workload", unknown),
            ("source_workload_namespace", self.source.map_or(unknown, |i| i.namespace())),
            ("source_principal", source.as_deref().unwrap_or(unknown)),
            ("source_app", unknown),
            ("source_version", unknown),
            ("source_cluster", unknown),
            ("destination_workload", unknown),
            ("destination_workload_namespace", self.destination.map_or(unknown, |i| i.namespace())),
            ("destination_principal", destination.as_deref().unwrap_or(unknown)),
            ("destination_app", unknown),
            ("destination_version", unknown),
            ("destination_service", service),
            ("destination_service_name", name),
            ("destination_service_namespace", namespace),
            // Istio: the waypoint's own cluster (its node metadata's CLUSTER_ID).
            ("destination_cluster", "Kubernetes"),
            ("request_protocol", if self.grpc { "grpc" } else { "http" }),
            ("response_code", ""),
            ("grpc_response_status", ""),
            ("response_flags", self.flag.unwrap_or("-")),
            // HBONE is mutual TLS, both ways, always.
            ("connection_security_policy", "mutual_tls"),
        ];
        for (name, value) in pairs {
            match name {
                "response_code" => {
                    let _ = write!(l, "response_code=\"{}\",", self.code);
                }
                "grpc_response_status" => match self.grpc_status {
                    Some(s) => {
                        let _ = write!(l, "grpc_response_status=\"{s}\",");
                    }
                    None => l.push_str("grpc_response_status=\"\","),
                },
                _ => push(&mut l, name, value),
            }
        }
        l.pop(); // trailing comma
        l
    }
}

/// `HOST`, its name and namespace, from a chain named `inbound-vip|PORT|http|HOST`
/// (`HOST` is `NAME.NAMESPACE.svc.DOMAIN`). Istio takes the name from the cluster's
/// `istio.services` metadata, the same host.
pub fn service_of(chain: &str) -> (&str, &str, &str) {
    let host = chain.rsplit('|').next().filter(|h| !h.is_empty()).unwrap_or("unknown");
    let mut labels = host.split('.');
    let name = labels.next().unwrap_or("unknown");
    let namespace = labels.next().unwrap_or("unknown");
    (host, name, namespace)
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

/// Prometheus label value escaping: backslash, double quote, newline.
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
            duration_ms: Histogram::default(),
            request_bytes: Histogram::default(),
            response_bytes: Histogram::default(),
        };
        shard.write().expect("metrics shard").entry(key).or_insert_with(|| Arc::new(series)).clone()
    }

    /// Counts one finished request.
    pub fn record(&self, labels: &Labels<'_>, duration_ms: u64, request_bytes: u64, response_bytes: u64) {
        let series = self.series(labels);
        series.requests.fetch_add(1, Relaxed);
        series.duration_ms.observe(duration_ms);
        series.request_bytes.observe(request_bytes);
        series.response_bytes.observe(response_bytes);
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
        let _ = writeln!(out, "# TYPE {name} counter");
        for s in &all {
            out.push_str(name);
            out.push('{');
            out.push_str(&s.labels);
            out.push_str("} ");
            push_u64(&mut out, s.requests.load(Relaxed));
            out.push('\n');
        }
        type Pick = fn(&Series) -> &Histogram;
        let histograms: [(&str, Pick); 3] = [
            ("istio_request_duration_milliseconds", |s| &s.duration_ms),
            ("istio_request_bytes", |s| &s.request_bytes),
            ("istio_response_bytes", |s| &s.response_bytes),
        ];
        for (name, pick) in histograms {
            let _ = writeln!(out, "# TYPE {name} histogram");
            for s in &all {
                pick(s).render(&mut out, name, &s.labels);
            }
        }
        let counters = [
            ("weft_waypoint_connects_refused_total", &self.connects_refused),
            ("weft_waypoint_tcp_connections_total", &self.tcp_connections),
        ];
        for (name, value) in counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", value.load(Relaxed));
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
        let labels = Labels {
            source: Some(&self.ctx.source.identity),
            chain: &chain.name,
            destination: self.endpoint.as_ref().map(|e| &e.identity),
            grpc: self.grpc,
            code: self.code,
            grpc_status: self.grpc_status,
            flag: self.flag,
        };
        let metrics = &self.ctx.shared.metrics;
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
            source: Some(src),
            chain: "inbound-vip|9080|http|reviews.bookinfo.svc.cluster.local",
            destination: dst,
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
source_workload_namespace=\"bookinfo\",source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/productpage\",\
source_app=\"unknown\",source_version=\"unknown\",source_cluster=\"unknown\",destination_workload=\"unknown\",\
destination_workload_namespace=\"bookinfo\",destination_principal=\"spiffe://cluster.local/ns/bookinfo/sa/reviews\",\
destination_app=\"unknown\",destination_version=\"unknown\",destination_service=\"reviews.bookinfo.svc.cluster.local\",\
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
    fn bucket_labels_and_numbers_print_as_prometheus_reads_them() {
        for (le, bound) in LE.iter().zip(BUCKETS) {
            assert_eq!(*le, bound.to_string());
        }
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        let labels = Labels {
            source: None,
            chain: "",
            destination: None,
            grpc: false,
            code: 200,
            grpc_status: None,
            flag: None,
        };
        let m = Metrics::default();
        m.record(&labels, 1, 2, 3);
        let text = m.render();
        let size = (labels.render().len() + LINE_OVERHEAD) * LINES_PER_SERIES;
        assert!(text.len() < 4096 + size, "the buffer is sized for the whole scrape");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), LINES_PER_SERIES + 2);
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
            chain: "inbound-vip|80|http|we\"ird\\na\nme.ns.svc.cluster.local",
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
}
