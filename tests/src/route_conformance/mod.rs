//! Route conformance through a real Envoy, without network namespaces: the YAML a user
//! writes (VirtualService, DestinationRule, HTTPRoute, AuthorizationPolicy) goes through
//! weftd's store and translation, and the waypoint resources weftd would serve are handed
//! to a stock Envoy as static configuration:
//!
//! - one plain-HTTP listener on 127.0.0.1 per service a waypoint carries, its HTTP
//!   connection manager holding the service's translated RouteConfiguration inline (no
//!   Host port stripping, as Istio's waypoint) and the filters Istio puts there: the RBAC
//!   filters weftd builds for the service, the fault filter, the router — behind a
//!   `set_filter_state` that takes the client's SPIFFE principal from the test header
//!   [`PRINCIPAL_HEADER`], standing in for the HBONE identity Istio's waypoint gets;
//! - the translated clusters under their translated names (lb policy, circuit breakers,
//!   outlier detection as weftd made them), made STATIC with the endpoints of weftd's
//!   ClusterLoadAssignments, each pod address replaced by a local test backend for that
//!   pod ([`Backend`]: answers with its pod's name and what it received, can fail or
//!   delay, counts what it served).
//!
//! The bootstrap is an `envoy_types` Bootstrap encoded with prost as `bootstrap.pb` (Envoy
//! reads a `.pb` config as binary proto). The cases live in
//! `tests/tests/route_conformance.rs`; the same cases can later drive Weft's waypoint.

use anyhow::{Context, Result, bail};
use envoy_types::pb::{
    envoy::{
        config::{
            bootstrap::v3::{Admin, Bootstrap, bootstrap::StaticResources},
            cluster::v3::{Cluster, cluster},
            core::v3::{
                Address, DataSource, SocketAddress, address, data_source, socket_address::PortSpecifier,
                substitution_format_string,
            },
            endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
            listener::v3::{Filter, FilterChain, Listener, filter},
            route::v3::RouteConfiguration,
        },
        extensions::filters::{
            common::set_filter_state::v3::{FilterStateValue, filter_state_value},
            http::{
                fault::v3::HttpFault, router::v3::Router, set_filter_state::v3::Config as SetFilterState,
            },
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier, http_filter,
            },
        },
    },
    google::protobuf::Any,
};
use prost::{Message, Name};
use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{IpAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use weft_controlplane::{
    config::{ConfigStore, SourceId, store::ConfigSnapshot},
    source::file::FileSource,
    translate::{self, Options, envoy::authorization},
};
use weft_xds::type_url;

/// The request header whose value the Envoy listeners put in the filter state
/// `io.istio.peer_principal` (a SPIFFE URI), where Istio's waypoint has the client's
/// HBONE identity.
pub const PRINCIPAL_HEADER: &str = "x-weft-test-principal";

/// A pod labelled `weft-test/dead: "true"` has no backend: its address refuses
/// connections.
pub const DEAD_LABEL: &str = "weft-test/dead";

fn pack<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

/// What a backend does with the next requests; shared with its server task.
#[derive(Default)]
pub struct Backend {
    name: String,
    hits: AtomicU64,
    fail_next: AtomicU32,
    fail_status: AtomicU32,
    delay_ms: AtomicU64,
    last_host: std::sync::Mutex<String>,
}

impl Backend {
    /// The Host of the last request it received.
    pub fn last_host(&self) -> String {
        self.last_host.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// The pod this backend stands for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests it received, failed ones included.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Answer the next `n` requests with `status` (and no body).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.fail_status.store(u32::from(status), Ordering::SeqCst);
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Wait this long before answering each request.
    pub fn delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn reset(&self) {
        self.hits.store(0, Ordering::SeqCst);
        self.fail_next.store(0, Ordering::SeqCst);
        self.delay_ms.store(0, Ordering::SeqCst);
    }
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
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Request<'a> {
        Request { method: "GET", path, host: None, headers: &[] }
    }

    pub fn headers(mut self, headers: &'a [(&'a str, &'a str)]) -> Self {
        self.headers = headers;
        self
    }
}

/// A real Envoy running weftd's translation of some YAML, and the backends behind it.
pub struct Conformance {
    envoy: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
    admin: u16,
    /// Service FQDN → (listener port, service port).
    listeners: HashMap<String, (u16, u32)>,
    backends: HashMap<String, Arc<Backend>>,
    _dead: Vec<socket2::Socket>,
    _runtime: tokio::runtime::Runtime,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
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
    /// Translates `yaml` with weftd and starts Envoy on the result.
    pub fn start(yaml: &str) -> Result<Conformance> {
        let opts = Options::default();
        let cfg = config(yaml)?;
        let snap = translate::snapshot(&cfg, &opts);
        let routes: Vec<RouteConfiguration> = decoded(&snap, type_url::ROUTE)?;
        let clusters: Vec<Cluster> = decoded(&snap, type_url::CLUSTER)?;
        let assignments: Vec<ClusterLoadAssignment> = decoded(&snap, type_url::ENDPOINT)?;

        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let mut backends = HashMap::new();
        let mut by_ip: HashMap<IpAddr, u16> = HashMap::new();
        let mut dead = Vec::new();
        for pod in cfg.pods.iter() {
            let Some(ip) = pod.ips().first().copied() else { continue };
            let backend = Arc::new(Backend { name: pod.metadata.name.clone(), ..Default::default() });
            if pod.metadata.labels.get(DEAD_LABEL).is_some_and(|v| v == "true") {
                // A socket bound but not listening: connections to it are refused, and no
                // one else can take the port meanwhile.
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
                let port = s.local_addr()?.as_socket().context("an inet socket")?.port();
                by_ip.insert(ip, port);
                dead.push(s);
                backends.insert(pod.metadata.name.clone(), backend);
                continue;
            }
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            by_ip.insert(ip, listener.local_addr()?.port());
            let b = backend.clone();
            runtime.spawn(async move {
                if let Ok(l) = tokio::net::TcpListener::from_std(listener) {
                    backend_server::serve(l, b).await;
                }
            });
            backends.insert(pod.metadata.name.clone(), backend);
        }

        // The service clusters (EDS); the HBONE plumbing clusters are not this tier's.
        let static_clusters = clusters
            .into_iter()
            .filter(|c| c.eds_cluster_config.is_some())
            .map(|mut c| {
                let eds_name =
                    c.eds_cluster_config.as_ref().map(|e| e.service_name.clone()).unwrap_or_default();
                let cla = assignments.iter().find(|a| {
                    a.cluster_name == c.name || (!eds_name.is_empty() && a.cluster_name == eds_name)
                });
                let lb_endpoints: Vec<LbEndpoint> = cla
                    .into_iter()
                    .flat_map(|a| a.endpoints.iter().flat_map(|l| l.lb_endpoints.iter()))
                    .filter_map(|e| {
                        let port = by_ip.get(&endpoint_ip(e)?)?;
                        Some(LbEndpoint {
                            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                                address: Some(socket("127.0.0.1", u32::from(*port))),
                                ..Default::default()
                            })),
                            ..Default::default()
                        })
                    })
                    .collect();
                c.cluster_discovery_type =
                    Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32));
                c.eds_cluster_config = None;
                // The HBONE hop (internal upstream, TLS) is not this tier's business.
                c.transport_socket = None;
                c.load_assignment = Some(ClusterLoadAssignment {
                    cluster_name: c.name.clone(),
                    endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
                    ..Default::default()
                });
                c
            })
            .collect();

        let mut listeners = HashMap::new();
        let mut static_listeners = Vec::new();
        for gw in cfg.kubernetes_gateways.iter().filter(|g| g.spec.gateway_class_name.contains("waypoint")) {
            let waypoint = (gw.metadata.namespace.as_str(), gw.metadata.name.as_str());
            for svc in cfg.services.iter() {
                let host =
                    format!("{}.{}.svc.{}", svc.metadata.name, svc.metadata.namespace, opts.domain_suffix);
                let Some(port) = svc.spec.ports.first().map(|p| p.port as u32) else { continue };
                // The per-service-port RouteConfiguration, or the shared one with a virtual
                // host for this service.
                let rc = routes
                    .iter()
                    .find(|r| r.name.ends_with(&format!("|{port}|http|{host}")))
                    .or_else(|| routes.iter().find(|r| r.virtual_hosts.iter().any(|v| v.name == host)));
                let Some(rc) = rc else { continue };
                if listeners.contains_key(&host) {
                    continue;
                }
                let listen = free_port()?;
                let mut http_filters = vec![principal_from_header()];
                http_filters.extend(authorization::http_filters(&cfg, &opts, waypoint, svc));
                http_filters.push(typed("envoy.filters.http.fault", pack(&HttpFault::default())));
                http_filters.push(typed("envoy.filters.http.router", pack(&Router::default())));
                let hcm = HttpConnectionManager {
                    stat_prefix: host.clone(),
                    route_specifier: Some(RouteSpecifier::RouteConfig(rc.clone())),
                    http_filters,
                    ..Default::default()
                };
                static_listeners.push(Listener {
                    name: host.clone(),
                    address: Some(socket("127.0.0.1", u32::from(listen))),
                    filter_chains: vec![FilterChain {
                        filters: vec![Filter {
                            name: "envoy.filters.network.http_connection_manager".into(),
                            config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                });
                listeners.insert(host, (listen, port));
            }
        }
        if listeners.is_empty() {
            bail!("weftd made no waypoint routes for this YAML (no waypoint, or no service using it)");
        }

        let admin = free_port()?;
        let bootstrap = Bootstrap {
            admin: Some(Admin { address: Some(socket("127.0.0.1", u32::from(admin))), ..Default::default() }),
            static_resources: Some(StaticResources {
                listeners: static_listeners,
                clusters: static_clusters,
                ..Default::default()
            }),
            ..Default::default()
        };
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bootstrap.pb");
        std::fs::write(&path, bootstrap.encode_to_vec())?;
        let stderr = dir.path().join("envoy.log");
        let envoy = Command::new(crate::envoy::binary()?)
            .arg("-c")
            .arg(&path)
            .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .context("starting envoy")?;
        let mut c = Conformance {
            envoy,
            stderr,
            _dir: dir,
            admin,
            listeners,
            backends,
            _dead: dead,
            _runtime: runtime,
        };
        c.wait_ready()?;
        Ok(c)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.envoy.try_wait()? {
                bail!("envoy exited ({status}) on weftd's translation:\n{}", self.stderr());
            }
            if let Ok(r) = http(self.admin, "GET", "/ready", "127.0.0.1", &[])
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("envoy not ready after 30 s:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The backend for pod `name`.
    pub fn backend(&self, name: &str) -> &Backend {
        self.backends.get(name).unwrap_or_else(|| panic!("no pod {name} in the YAML"))
    }

    /// Sends `req` through the listener of `service` (`name.namespace`), Host
    /// `name.namespace.svc.cluster.local:PORT` unless the request sets one.
    pub fn send(&self, service: &str, req: &Request<'_>) -> Result<Response> {
        let host = format!("{service}.svc.cluster.local");
        let (listen, port) =
            *self.listeners.get(&host).with_context(|| format!("no waypoint listener for {host}"))?;
        let default_host = format!("{host}:{port}");
        http(listen, req.method, req.path, req.host.unwrap_or(&default_host), req.headers)
    }

    /// GET `path` on `service` with `headers`.
    pub fn get(&self, service: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
        self.send(service, &Request::get(path).headers(headers))
    }

    /// An Envoy statistic (from /stats), 0 when absent.
    pub fn stat(&self, name: &str) -> Result<u64> {
        let r = http(
            self.admin,
            "GET",
            &format!("/stats?filter=^{}$", name.replace('|', "\\|").replace('.', "\\.")),
            "127.0.0.1",
            &[],
        )?;
        Ok(r.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for Conformance {
    fn drop(&mut self) {
        let _ = self.envoy.kill();
        let _ = self.envoy.wait();
    }
}

fn typed(name: &str, any: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

/// `set_filter_state` putting [`PRINCIPAL_HEADER`] in `io.istio.peer_principal`.
fn principal_from_header() -> HttpFilter {
    let value = FilterStateValue {
        key: Some(filter_state_value::Key::ObjectKey("io.istio.peer_principal".into())),
        factory_key: "envoy.string".into(),
        value: Some(filter_state_value::Value::FormatString(
            envoy_types::pb::envoy::config::core::v3::SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(format!(
                        "%REQ({PRINCIPAL_HEADER})%"
                    ))),
                    ..Default::default()
                })),
                ..Default::default()
            },
        )),
        skip_if_empty: true,
        ..Default::default()
    };
    typed(
        "envoy.filters.http.set_filter_state",
        pack(&SetFilterState { on_request_headers: vec![value], ..Default::default() }),
    )
}

/// One HTTP/1.1 request on a new connection to 127.0.0.1:`port`.
pub fn http(port: u16, method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
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

mod backend_server {
    //! The test backends: HTTP/1.1, one task per connection.
    use super::Backend;
    use http_body_util::Full;
    use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;
    use std::{convert::Infallible, sync::Arc, sync::atomic::Ordering, time::Duration};

    pub async fn serve(listener: tokio::net::TcpListener, b: Arc<Backend>) {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let b = b.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(b.clone(), req));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }

    async fn answer(
        b: Arc<Backend>,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        b.hits.fetch_add(1, Ordering::SeqCst);
        if let (Ok(mut last), Some(h)) =
            (b.last_host.lock(), req.headers().get("host").and_then(|h| h.to_str().ok()))
        {
            *last = h.to_owned();
        }
        let delay = b.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let failing =
            b.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing {
            let status = b.fail_status.load(Ordering::SeqCst) as u16;
            return Ok(Response::builder()
                .status(status)
                .header("x-pod", b.name.as_str())
                .body(Full::new(Bytes::new()))
                .expect("a response"));
        }
        // Repeated headers joined with commas, as HTTP allows.
        let mut headers = serde_json::Map::new();
        for (k, v) in req.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            match headers.get_mut(k.as_str()) {
                Some(serde_json::Value::String(prev)) => {
                    prev.push(',');
                    prev.push_str(&v);
                }
                _ => {
                    headers.insert(k.as_str().to_owned(), serde_json::Value::String(v));
                }
            }
        }
        let echo = serde_json::json!({
            "pod": b.name,
            "method": req.method().as_str(),
            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            "host": req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or(""),
            "headers": headers,
        });
        Ok(Response::builder()
            .header("x-pod", b.name.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(echo.to_string())))
            .expect("a response"))
    }
}
