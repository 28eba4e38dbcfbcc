//! An in-process mesh around one waypoint: a test CA, an in-process ADS server serving the
//! contract's resources, backends as HBONE servers on loopback addresses (each pod its own
//! 127.0.0.x, all on one HBONE port), and an HBONE client with a mesh certificate.

#![allow(dead_code, reason = "each test uses a different subset")]

pub mod resources;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use resources::ChainSpec;
use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use weft_hbone::{H2Stream, Identity, Pool, PoolKey, TrustBundle, WorkloadCertificate, testing::TestCa};
use weft_waypoint::{
    app::{self, Running, Wiring},
    config::Config,
    identity::Signer,
};
use weft_xds::ca::proto::{
    IstioCertificateRequest, IstioCertificateResponse,
    istio_certificate_service_server::{IstioCertificateService, IstioCertificateServiceServer},
};
use weft_xds::{
    server::{Scope, ScopedResource, ServerConfig, Snapshot, XdsServer},
    type_url,
};

pub const NS: &str = "bookinfo";
pub const WAIT: Duration = Duration::from_secs(10);
pub const REVIEWS: &str = "inbound-vip|80|http|reviews.bookinfo.svc.cluster.local";
pub const REVIEWS_V1: &str = "inbound-vip|80|http/v1|reviews.bookinfo.svc.cluster.local";
pub const REVIEWS_V2: &str = "inbound-vip|80|http/v2|reviews.bookinfo.svc.cluster.local";
pub const REVIEWS_V3: &str = "inbound-vip|80|http/v3|reviews.bookinfo.svc.cluster.local";
pub const ECHO: &str = "inbound-vip|9000|tcp|echo.bookinfo.svc.cluster.local";

pub fn reviews_vip() -> SocketAddr {
    "10.96.0.10:80".parse().unwrap()
}

pub fn echo_vip() -> SocketAddr {
    "10.96.0.11:9000".parse().unwrap()
}

pub fn identity(sa: &str) -> Identity {
    Identity::new("cluster.local", NS, sa).unwrap()
}

/// The test CA as the waypoint's signer.
struct TestSigner(Arc<TestCa>);

impl Signer for TestSigner {
    fn sign(
        &self,
        _identity: &Identity,
        csr_pem: String,
        ttl: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send>> {
        let signed = self.0.sign_csr(&csr_pem, ttl).map(|chain| vec![chain]).map_err(|e| e.to_string());
        Box::pin(async move { signed })
    }
}

/// weftd's certificate service, signing with the test CA.
struct TestCaService(Arc<TestCa>);

#[tonic::async_trait]
impl IstioCertificateService for TestCaService {
    async fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        let request = request.into_inner();
        let ttl = Duration::from_secs(request.validity_duration.max(60) as u64);
        let chain =
            self.0.sign_csr(&request.csr, ttl).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(tonic::Response::new(IstioCertificateResponse { cert_chain: vec![chain] }))
    }
}

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: http::Version,
    pub host: Option<String>,
    pub body_len: usize,
}

/// A pod: an HBONE server answering HTTP (or echoing bytes on port 9000).
pub struct Backend {
    pub name: &'static str,
    pub address: SocketAddr,
    pub identity: Identity,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// HBONE CONNECTs accepted: one per upstream HTTP connection the waypoint opened.
    pub connects: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts the pod's HBONE server on `ip:hbone_port` (0: any), serving `address`.
    pub async fn start(
        ca: &TestCa,
        name: &'static str,
        address: SocketAddr,
        hbone_port: u16,
    ) -> (Backend, u16) {
        let identity = identity(name);
        let cert = ca.issue(&identity, Duration::from_secs(3600));
        let tls = weft_hbone::tls::server_config(&cert, &ca.trust_bundle()).unwrap();
        let listener = TcpListener::bind(SocketAddr::new(address.ip(), hbone_port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connects: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let (record, counted) = (seen.clone(), connects.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (tls, record, counted) = (tls.clone(), record.clone(), counted.clone());
                tokio::spawn(async move {
                    let settings = weft_hbone::Settings::default();
                    let _ =
                        weft_hbone::serve_connection(tcp, tls, &settings, std::future::pending(), |req| {
                            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            serve_connect(name, record.clone(), req)
                        })
                        .await;
                });
            }
        });
        (Backend { name, address, identity, seen, connects, task }, port)
    }

    pub fn connects(&self) -> usize {
        self.connects.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_connect(name: &'static str, seen: Arc<Mutex<Vec<Seen>>>, request: weft_hbone::HboneRequest) {
    let tcp = request.authority().port() == echo_vip().port();
    let Ok(stream) = request.accept() else { return };
    if tcp {
        let (mut r, mut w) = tokio::io::split(stream);
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
        return;
    }
    let service = hyper::service::service_fn(move |req| answer(name, seen.clone(), req));
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

type Frames = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// The backend's answer: its name and what it saw; for `/grpc…`, the request body back
/// with gRPC-style trailers. Query parameters script it: `fail=N` answers 503 to the first
/// N requests of that path and query, `sleep=MS` waits first, `sleep_first=MS` waits on
/// the first request only.
async fn answer(
    name: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Frames>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let param = |key: &str| -> Option<u64> {
        req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let (fail, sleep, sleep_first) = (param("fail"), param("sleep"), param("sleep_first"));
    let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
    let (method, version) = (req.method().to_string(), req.version());
    let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let hits = {
        let mut seen = seen.lock().unwrap();
        seen.push(Seen { method, path: path.clone(), version, host, body_len: body.len() });
        seen.iter().filter(|s| s.path == path).count() as u64
    };
    let wait = sleep.or(sleep_first.filter(|_| hits == 1));
    if let Some(ms) = wait {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let failing = name == "broken" || fail.is_some_and(|n| hits <= n);
    let frames = if path.starts_with("/grpc") {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", format!("ok-{name}").parse().unwrap());
        vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))]
    } else {
        vec![Ok(Frame::data(Bytes::from(format!("{name} {path} {version:?}"))))]
    };
    let mut response = Response::new(StreamBody::new(futures::stream::iter(frames)));
    response.headers_mut().insert("x-backend", name.parse().unwrap());
    if failing {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(response)
}

/// An ADS server on 127.0.0.1.
pub struct Ads {
    pub server: XdsServer,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Ads {
    pub async fn start() -> Ads {
        Ads::start_with_ca(None).await
    }

    /// Serves weftd's CA too (signing with `ca`), on the same port, as weftd does.
    pub async fn start_with_ca(ca: Option<Arc<TestCa>>) -> Ads {
        let server =
            XdsServer::new(ServerConfig { debounce: Duration::from_millis(1), ..ServerConfig::default() });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = server.service();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .add_optional_service(ca.map(|ca| IstioCertificateServiceServer::new(TestCaService(ca))))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Ads { server, addr, stop: Some(stop), task: Some(task) }
    }

    /// Stops serving: every stream ends and the port closes (weftd gone).
    pub async fn stop(&mut self) {
        self.server.shutdown();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.expect("ADS server stops").unwrap();
        }
    }
}

/// A cluster and its assignment's endpoints (None: a cluster without one).
pub type ClusterSpec =
    (envoy_types::pb::envoy::config::cluster::v3::Cluster, Option<Vec<(SocketAddr, String)>>);

/// The contract's resources for the test mesh, with `main_internal` as given.
pub fn snapshot(
    version: &str,
    hbone_port: u16,
    main_internal: envoy_types::pb::envoy::config::listener::v3::Listener,
    backends: &[&Backend],
) -> Snapshot {
    let routes = resources::route_table(
        REVIEWS,
        &[("/v2", REVIEWS_V2), ("/grpc", REVIEWS_V2), ("/empty", REVIEWS_V3), ("/", REVIEWS_V1)],
    );
    snapshot_with(version, main_internal, default_clusters(hbone_port, backends), routes)
}

/// The endpoints of the named backends.
pub fn endpoints_of(backends: &[&Backend], names: &[&str]) -> Option<Vec<(SocketAddr, String)>> {
    Some(
        backends
            .iter()
            .filter(|b| names.contains(&b.name))
            .map(|b| (b.address, b.identity.to_string()))
            .collect(),
    )
}

/// The clusters of the test mesh: the contract's two, reviews v1 (HTTP/1.1), v2 (HTTP/2),
/// v3 (no endpoint), echo (TCP).
pub fn default_clusters(hbone_port: u16, backends: &[&Backend]) -> Vec<ClusterSpec> {
    vec![
        (resources::main_internal_cluster(), None),
        (resources::connect_originate_cluster(hbone_port), None),
        (resources::service_cluster(REVIEWS_V1, false), endpoints_of(backends, &["reviews-v1"])),
        (resources::service_cluster(REVIEWS_V2, true), endpoints_of(backends, &["reviews-v2"])),
        (resources::service_cluster(REVIEWS_V3, false), Some(Vec::new())),
        (resources::service_cluster(ECHO, false), endpoints_of(backends, &["echo"])),
    ]
}

/// A snapshot of these listeners, clusters and route table, scoped to the namespace.
pub fn snapshot_with(
    version: &str,
    main_internal: envoy_types::pb::envoy::config::listener::v3::Listener,
    clusters: Vec<ClusterSpec>,
    routes: envoy_types::pb::envoy::config::route::v3::RouteConfiguration,
) -> Snapshot {
    let scope = || Scope::Namespace(NS.into());
    let mut s = Snapshot::new(version);
    for l in [resources::connect_terminate(15008), main_internal, resources::connect_originate()] {
        s.add(type_url::LISTENER, ScopedResource::from_message(l.name.clone(), scope(), &l));
    }
    for (c, endpoints) in clusters {
        s.add(type_url::CLUSTER, ScopedResource::from_message(c.name.clone(), scope(), &c));
        if let Some(eps) = endpoints {
            let eps: Vec<(SocketAddr, &str)> = eps.iter().map(|(a, i)| (*a, i.as_str())).collect();
            let cla = resources::assignment(&c.name, &eps);
            s.add(type_url::ENDPOINT, ScopedResource::from_message(c.name.clone(), scope(), &cla));
        }
    }
    s.add(type_url::ROUTE, ScopedResource::from_message(routes.name.clone(), scope(), &routes));
    s
}

/// The usual `main_internal`: reviews (HTTP) and echo (TCP).
pub fn main_internal() -> envoy_types::pb::envoy::config::listener::v3::Listener {
    resources::main_internal(&[
        (REVIEWS, reviews_vip(), 32, ChainSpec::Http),
        (ECHO, echo_vip(), 32, ChainSpec::Tcp),
    ])
}

/// A waypoint in a mesh, ready.
pub struct Mesh {
    pub ca: Arc<TestCa>,
    pub ads: Ads,
    pub waypoint: Running,
    pub backends: Vec<Backend>,
    pub hbone_port: u16,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl Mesh {
    pub async fn start() -> Mesh {
        let ca = Arc::new(TestCa::new());
        let (v1, hbone_port) = Backend::start(&ca, "reviews-v1", "127.0.0.2:8080".parse().unwrap(), 0).await;
        let (v2, _) = Backend::start(&ca, "reviews-v2", "127.0.0.3:8080".parse().unwrap(), hbone_port).await;
        let (echo, _) = Backend::start(&ca, "echo", "127.0.0.4:9000".parse().unwrap(), hbone_port).await;
        // A pod that answers 503 to everything (for outlier detection).
        let (broken, _) = Backend::start(&ca, "broken", "127.0.0.5:8080".parse().unwrap(), hbone_port).await;
        let backends = vec![v1, v2, echo, broken];
        let ads = Ads::start().await;
        let refs: Vec<&Backend> = backends.iter().collect();
        ads.server.publish(snapshot("v1", hbone_port, main_internal(), &refs)).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root-cert.pem");
        std::fs::write(&root, ca.root_pem()).unwrap();
        let url = format!("http://{}", ads.addr);
        let config = <Config as clap::Parser>::try_parse_from([
            "weft-waypoint",
            "--xds-address",
            &url,
            "--ca-root-cert",
            root.to_str().unwrap(),
            "--namespace",
            NS,
            "--service-account",
            "waypoint",
            "--hbone-address",
            "127.0.0.1:0",
            "--admin-address",
            "127.0.0.1:0",
        ])
        .unwrap()
        .validate()
        .unwrap();
        let mut xds = weft_waypoint::xds::client_config(&config);
        xds.initial_backoff = Duration::from_millis(50);
        xds.max_backoff = Duration::from_millis(200);
        let wiring =
            Wiring { config, signer: Arc::new(TestSigner(ca.clone())), roots: ca.trust_bundle(), xds };
        let waypoint = app::start(wiring).await.unwrap();
        let client = Client::new(&ca, waypoint.hbone_address);
        let mesh = Mesh { ca, ads, waypoint, backends, hbone_port, client, _dir: dir };
        mesh.wait_for("the waypoint to be ready with the routes and endpoints", |m| {
            m.waypoint.shared.ready()
                && m.waypoint
                    .shared
                    .snapshot
                    .load()
                    .clusters
                    .get(REVIEWS_V2)
                    .is_some_and(|c| !c.endpoints.is_empty())
                && m.waypoint.shared.snapshot.load().routes.contains_key(REVIEWS)
        })
        .await;
        mesh
    }

    /// Another client with the same certificate (its own HBONE pool), for concurrent use.
    pub fn client_clone(&self) -> Client {
        Client::new(&self.ca, self.waypoint.hbone_address)
    }

    pub fn backend(&self, name: &str) -> &Backend {
        self.backends.iter().find(|b| b.name == name).unwrap()
    }

    pub fn backend_refs(&self) -> Vec<&Backend> {
        self.backends.iter().collect()
    }

    /// Waits (polling) until `done` holds; panics naming `what` after [`WAIT`].
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Mesh) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `cluster` has `n` requests in flight (its max_requests breaker's count).
    pub async fn wait_in_flight(&self, cluster: &str, n: u32) {
        self.wait_for(&format!("{n} request(s) in flight on {cluster}"), |m| {
            m.waypoint.shared.snapshot.load().clusters[cluster]
                .stats
                .active_requests
                .load(std::sync::atomic::Ordering::Relaxed)
                == n
        })
        .await;
    }

    /// GET on the waypoint's admin endpoint.
    pub async fn admin(&self, path: &str) -> (StatusCode, String) {
        let tcp = tokio::net::TcpStream::connect(self.waypoint.admin_address).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get(path).header("host", "admin").body(Full::new(Bytes::new())).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        (status, String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
    }
}

/// A mesh client: HBONE to the waypoint with its own certificate, HTTP inside.
pub struct Client {
    pool: Pool,
    cert: Arc<WorkloadCertificate>,
    roots: TrustBundle,
    waypoint: SocketAddr,
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
    pub trailers: Option<http::HeaderMap>,
}

impl Client {
    pub fn new(ca: &TestCa, waypoint: SocketAddr) -> Client {
        let cert = Arc::new(ca.issue(&identity("productpage"), Duration::from_secs(3600)));
        Client { pool: Pool::new(weft_hbone::Settings::default()), cert, roots: ca.trust_bundle(), waypoint }
    }

    /// A CONNECT to the waypoint for `authority`.
    pub async fn connect(&self, authority: SocketAddr) -> Result<H2Stream, weft_hbone::ConnectError> {
        let key = PoolKey {
            src: identity("productpage"),
            dst: identity("waypoint"),
            dst_addr: self.waypoint,
            extra: 0,
        };
        let addr = self.waypoint;
        self.pool
            .connect(&key, &self.cert, &self.roots, authority, || tokio::net::TcpStream::connect(addr))
            .await
    }

    /// One HTTP/1.1 request on a new tunnel to the reviews VIP.
    pub async fn h1(&self, method: &str, path: &str, body: &str) -> Answer {
        self.h1_with(method, path, &[], body).await
    }

    /// One HTTP/1.1 request with extra headers on a new tunnel to the reviews VIP.
    pub async fn h1_with(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let stream = self.connect(reviews_vip()).await.expect("CONNECT to the reviews VIP");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req =
            Request::builder().method(method).uri(path).header("host", "reviews.bookinfo.svc.cluster.local");
        let req = headers
            .iter()
            .fold(req, |req, (k, v)| req.header(*k, *v))
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        read(sender.send_request(req).await.expect("HTTP/1.1 response")).await
    }

    /// One HTTP/2 (prior knowledge) request on a new tunnel to the reviews VIP.
    pub async fn h2(&self, method: &str, path: &str, body: &str) -> Answer {
        let stream = self.connect(reviews_vip()).await.expect("CONNECT to the reviews VIP");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(format!("http://reviews.bookinfo.svc.cluster.local{path}"))
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        read(sender.send_request(req).await.expect("HTTP/2 response")).await
    }
}

async fn read(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("response body");
    let trailers = collected.trailers().cloned();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(collected.to_bytes().to_vec()).unwrap(),
        trailers,
    }
}
