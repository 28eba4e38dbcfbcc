//! The weft-waypoint arm: the waypoint library in process, fed over ADS with weftd's
//! resources as translated, each pod's address made a loopback one where its backend
//! serves HBONE (see the module above).

use super::{Backend, DEAD_LABEL, DEFAULT_CLIENT, PRINCIPAL_HEADER, Request, Response, Translated, backend};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use envoy_types::pb::{
    envoy::config::{
        cluster::v3::{Cluster, cluster::LbConfig},
        core::v3::{Metadata, address},
        endpoint::v3::{ClusterLoadAssignment, LbEndpoint, lb_endpoint},
        listener::v3::Listener,
    },
    google::protobuf::{UInt32Value, value::Kind},
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::{Message, Name};
use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{net::TcpListener, runtime::Runtime};
use tokio_stream::wrappers::TcpListenerStream;
use weft_hbone::{Identity, Pool, PoolKey, TrustBundle, WorkloadCertificate, testing::TestCa};
use weft_waypoint::{
    app::{self, Running, Wiring},
    config::Config,
    identity::Signer,
};
use weft_xds::{
    server::{ScopedResource, ServerConfig, Snapshot, XdsServer},
    type_url,
};

/// Istio's metadata key for an endpoint's `POD_IP:PORT` (CONTRACT.md item 6).
const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";
/// How long the waypoint may take to hold the whole translation, and a request to answer.
const WAIT: Duration = Duration::from_secs(30);

/// weft-waypoint in process, the ADS server feeding it, and an HBONE client.
pub(super) struct WeftArm {
    ca: Arc<TestCa>,
    waypoint: Running,
    waypoint_identity: Identity,
    _ads: XdsServer,
    /// Service FQDN → (the authority `main_internal` dispatches on, the service port).
    services: HashMap<String, (SocketAddr, u16)>,
    pool: Pool,
    roots: TrustBundle,
    /// Client certificates by SPIFFE principal.
    certs: Mutex<HashMap<String, Arc<WorkloadCertificate>>>,
    _dir: tempfile::TempDir,
}

/// The test CA as the waypoint's signer (weftd's CA in production).
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

fn string_field<'a>(metadata: Option<&'a Metadata>, filter: &str, key: &str) -> Option<&'a str> {
    match metadata?.filter_metadata.get(filter)?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Points an endpoint (`POD_IP:PORT`) at the loopback address standing for its pod.
fn relocate(e: &mut LbEndpoint, loopback: &HashMap<IpAddr, IpAddr>) {
    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = e.host_identifier.as_mut() else { return };
    let Some(address::Address::EnvoyInternalAddress(internal)) =
        ep.address.as_mut().and_then(|a| a.address.as_mut())
    else {
        return;
    };
    let Ok(old) = internal.endpoint_id.parse::<SocketAddr>() else { return };
    let Some(ip) = loopback.get(&old.ip()) else { return };
    let new = SocketAddr::new(*ip, old.port()).to_string();
    internal.endpoint_id.clone_from(&new);
    if let Some(local) = e
        .metadata
        .as_mut()
        .and_then(|m| m.filter_metadata.get_mut(ORIGINAL_DST))
        .and_then(|s| s.fields.get_mut("local"))
    {
        local.kind = Some(Kind::StringValue(new));
    }
}

/// weftd's snapshot with the pods moved to loopback and HBONE origination to `hbone_port`.
fn relocated(snap: &Snapshot, loopback: &HashMap<IpAddr, IpAddr>, hbone_port: u16) -> Result<Snapshot> {
    fn repack<M: Message + Name + Default>(
        r: &ScopedResource,
        edit: impl FnOnce(&mut M),
    ) -> Result<ScopedResource> {
        let mut m = M::decode(r.resource.value.as_slice()).context("decoding a translated resource")?;
        edit(&mut m);
        Ok(ScopedResource::from_message(r.name.clone(), r.scope.clone(), &m))
    }
    let mut out = Snapshot::new(snap.version.clone());
    for (type_url, resources) in &snap.resources {
        for r in resources {
            let r = match type_url.as_str() {
                type_url::ENDPOINT => repack::<ClusterLoadAssignment>(r, |cla| {
                    for e in cla.endpoints.iter_mut().flat_map(|l| l.lb_endpoints.iter_mut()) {
                        relocate(e, loopback);
                    }
                })?,
                type_url::CLUSTER if r.name == "connect_originate" => repack::<Cluster>(r, |c| {
                    if let Some(LbConfig::OriginalDstLbConfig(o)) = c.lb_config.as_mut() {
                        o.upstream_port_override = Some(UInt32Value { value: u32::from(hbone_port) });
                    }
                })?,
                _ => r.clone(),
            };
            out.add(type_url.clone(), r);
        }
    }
    Ok(out)
}

/// The services `main_internal` dispatches: FQDN → (VIP:PORT, port), from its chains
/// (`inbound-vip|PORT|PROTO|HOST`, matched on the VIP and port).
fn services(listeners: &[Listener]) -> HashMap<String, (SocketAddr, u16)> {
    let mut out = HashMap::new();
    for fc in listeners.iter().filter(|l| l.name == "main_internal").flat_map(|l| l.filter_chains.iter()) {
        let Some(host) = fc.name.rsplit('|').next() else { continue };
        let Some(m) = fc.filter_chain_match.as_ref() else { continue };
        let (Some(port), Some(range)) = (m.destination_port, m.prefix_ranges.first()) else { continue };
        let (Ok(ip), Ok(port)) = (range.address_prefix.parse::<IpAddr>(), u16::try_from(port.value)) else {
            continue;
        };
        out.entry(host.to_owned()).or_insert((SocketAddr::new(ip, port), port));
    }
    out
}

impl WeftArm {
    /// Starts the pods' HBONE backends, the ADS server and the waypoint on `runtime`, and
    /// waits until the waypoint holds every route table and endpoint of the translation.
    pub(super) fn start(
        t: &Translated,
        runtime: &Runtime,
    ) -> Result<(WeftArm, HashMap<String, Arc<Backend>>)> {
        runtime.block_on(Self::start_async(t))
    }

    async fn start_async(t: &Translated) -> Result<(WeftArm, HashMap<String, Arc<Backend>>)> {
        let ca = Arc::new(TestCa::new());
        let Some(gateway) =
            t.cfg.kubernetes_gateways.iter().find(|g| g.spec.gateway_class_name.contains("waypoint"))
        else {
            bail!("no waypoint Gateway in the YAML");
        };
        let (ns, sa) = (gateway.metadata.namespace.clone(), gateway.metadata.name.clone());

        // The identity each pod's endpoints say it presents.
        let mut identities: HashMap<IpAddr, String> = HashMap::new();
        for e in t.assignments.iter().flat_map(|a| a.endpoints.iter().flat_map(|l| l.lb_endpoints.iter())) {
            if let (Some(ip), Some(id)) =
                (super::endpoint_ip(e), string_field(e.metadata.as_ref(), "weft", "identity"))
            {
                identities.insert(ip, id.to_owned());
            }
        }

        // Each pod its own loopback address, all on one HBONE port; a dead pod's address
        // has nothing listening there.
        let mut backends = HashMap::new();
        let mut loopback: HashMap<IpAddr, IpAddr> = HashMap::new();
        let mut hbone_port = 0u16;
        for (i, pod) in t.cfg.pods.iter().enumerate() {
            let Some(ip) = pod.ips().first().copied() else { continue };
            let index = u8::try_from(i + 10).context("too many pods for 127.0.0.0/24")?;
            let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, index));
            loopback.insert(ip, local);
            let b = Arc::new(Backend::new(&pod.metadata.name));
            backends.insert(pod.metadata.name.clone(), b.clone());
            if pod.metadata.labels.get(DEAD_LABEL).is_some_and(|v| v == "true") {
                continue;
            }
            let identity: Identity = match identities.get(&ip) {
                Some(id) => {
                    id.parse().with_context(|| format!("pod {}'s identity {id}", pod.metadata.name))?
                }
                None => Identity::new("cluster.local", &pod.metadata.namespace, "default")?,
            };
            let cert = ca.issue(&identity, Duration::from_secs(3600));
            let tls = weft_hbone::tls::server_config(&cert, &ca.trust_bundle())?;
            let listener = TcpListener::bind(SocketAddr::new(local, hbone_port))
                .await
                .with_context(|| format!("binding {local}:{hbone_port} for pod {}", pod.metadata.name))?;
            hbone_port = listener.local_addr()?.port();
            // A pod's HBONE server: each CONNECT accepted and served as HTTP by the backend.
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { return };
                    let (tls, b) = (tls.clone(), b.clone());
                    tokio::spawn(async move {
                        let settings = weft_hbone::Settings::default();
                        let _ = weft_hbone::serve_connection(
                            tcp,
                            tls,
                            &settings,
                            std::future::pending(),
                            |req| {
                                let b = b.clone();
                                async move {
                                    if let Ok(stream) = req.accept() {
                                        backend::serve_io(stream, b).await;
                                    }
                                }
                            },
                        )
                        .await;
                    });
                }
            });
        }
        if hbone_port == 0 {
            bail!("no live pod in the YAML");
        }

        let ads =
            XdsServer::new(ServerConfig { debounce: Duration::from_millis(1), ..ServerConfig::default() });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let ads_addr = listener.local_addr()?;
        let service = ads.service();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
            if let Err(e) = served {
                eprintln!("the conformance ADS server stopped: {e}");
            }
        });
        ads.publish(relocated(&t.snap, &loopback, hbone_port)?)?;

        let dir = tempfile::tempdir()?;
        let root = dir.path().join("root-cert.pem");
        std::fs::write(&root, ca.root_pem())?;
        let url = format!("http://{ads_addr}");
        let config = <Config as clap::Parser>::try_parse_from([
            "weft-waypoint",
            "--xds-address",
            &url,
            "--ca-root-cert",
            &root.display().to_string(),
            "--namespace",
            &ns,
            "--service-account",
            &sa,
            "--hbone-address",
            "127.0.0.1:0",
            "--admin-address",
            "127.0.0.1:0",
        ])?
        .validate()?;
        let waypoint_identity = config.identity()?;
        let mut xds = weft_waypoint::xds::client_config(&config);
        xds.initial_backoff = Duration::from_millis(50);
        xds.max_backoff = Duration::from_millis(200);
        let waypoint = app::start(Wiring {
            config,
            signer: Arc::new(TestSigner(ca.clone())),
            roots: ca.trust_bundle(),
            xds,
        })
        .await?;

        let services = services(&t.listeners);
        if services.is_empty() {
            bail!("weftd made no waypoint chains for this YAML (no waypoint, or no service using it)");
        }
        let arm = WeftArm {
            roots: ca.trust_bundle(),
            ca,
            waypoint,
            waypoint_identity,
            _ads: ads,
            services,
            pool: Pool::new(weft_hbone::Settings::default()),
            certs: Mutex::default(),
            _dir: dir,
        };
        arm.wait_ready(t).await?;
        Ok((arm, backends))
    }

    /// Waits until the waypoint holds the route table of every HTTP chain and the
    /// endpoints of every cluster that has some; a NACK fails at once.
    async fn wait_ready(&self, t: &Translated) -> Result<()> {
        let routes: Vec<&str> = t
            .listeners
            .iter()
            .filter(|l| l.name == "main_internal")
            .flat_map(|l| l.filter_chains.iter())
            .filter(|fc| fc.name.contains("|http|"))
            .map(|fc| fc.name.as_str())
            .collect();
        let with_endpoints: Vec<&str> = t
            .clusters
            .iter()
            .filter(|c| {
                let eds =
                    c.eds_cluster_config.as_ref().map(|e| e.service_name.as_str()).filter(|n| !n.is_empty());
                let name = eds.unwrap_or(&c.name);
                t.assignments
                    .iter()
                    .any(|a| a.cluster_name == name && a.endpoints.iter().any(|l| !l.lb_endpoints.is_empty()))
            })
            .map(|c| c.name.as_str())
            .collect();
        let shared = &self.waypoint.shared;
        let deadline = Instant::now() + WAIT;
        loop {
            let nacks = shared.xds_status.lock().map(|s| s.last_nack.clone()).unwrap_or_default();
            if !nacks.is_empty() {
                bail!("weft-waypoint refuses weftd's translation: {nacks:#?}");
            }
            let s = shared.snapshot.load();
            if shared.ready()
                && routes.iter().all(|r| s.routes.contains_key(*r))
                && with_endpoints.iter().all(|c| s.clusters.get(*c).is_some_and(|c| !c.endpoints.is_empty()))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let held =
                    shared.xds_status.lock().map(|s| format!("{:#?}", s.resources)).unwrap_or_default();
                bail!(
                    "weft-waypoint not ready after {WAIT:?} (routes {routes:?}, clusters with endpoints \
                     {with_endpoints:?}); it holds {held}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The client certificate for `principal`, issued once.
    fn cert(&self, principal: &str) -> Result<Arc<WorkloadCertificate>> {
        let mut certs = self.certs.lock().map_err(|_| anyhow::anyhow!("certificate cache poisoned"))?;
        if let Some(c) = certs.get(principal) {
            return Ok(c.clone());
        }
        let identity: Identity = principal.parse().with_context(|| format!("principal {principal}"))?;
        let cert = Arc::new(self.ca.issue(&identity, Duration::from_secs(3600)));
        certs.insert(principal.to_owned(), cert.clone());
        Ok(cert)
    }

    /// The waypoint's `istio_requests_total` for destination service `host` with response
    /// flags `flags`.
    pub(super) fn requests_flagged(&self, host: &str, flags: &str) -> u64 {
        let text = self.waypoint.shared.metrics.render();
        crate::agent::sum_samples(
            &text,
            "istio_requests_total",
            &[("destination_service", host), ("response_flags", flags)],
        )
    }

    /// Sends `req` to `host` (the service's FQDN) through an HBONE CONNECT to its VIP:PORT.
    pub(super) fn send(&self, runtime: &Runtime, host: &str, req: &Request<'_>) -> Result<Response> {
        let (authority, port) =
            *self.services.get(host).with_context(|| format!("no waypoint chain for {host}"))?;
        let default_host = format!("{host}:{port}");
        let principal = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(PRINCIPAL_HEADER))
            .map_or(DEFAULT_CLIENT, |(_, v)| *v);
        let cert = self.cert(principal)?;
        let exchange = self.exchange(cert, authority, req, req.host.unwrap_or(&default_host));
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), exchange).await })
            .context("no answer in 20 s")?
    }

    async fn exchange(
        &self,
        cert: Arc<WorkloadCertificate>,
        authority: SocketAddr,
        req: &Request<'_>,
        host: &str,
    ) -> Result<Response> {
        let key = PoolKey {
            src: cert.identity().clone(),
            dst: self.waypoint_identity.clone(),
            dst_addr: self.waypoint.hbone_address,
            // One pooled connection per client address, as an agent keeps one per pod.
            extra: req.source.map_or(0, |ip| u64::from(u32::from(ip))),
        };
        let addr = self.waypoint.hbone_address;
        let source = req.source;
        let stream = self
            .pool
            .connect(&key, &cert, &self.roots, authority, || async move {
                let Some(ip) = source else { return tokio::net::TcpStream::connect(addr).await };
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((ip, 0)))?;
                socket.connect(addr).await
            })
            .await
            .with_context(|| format!("HBONE CONNECT {authority} through the waypoint"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut request = http::Request::builder().method(req.method).uri(req.path).header("host", host);
        for (k, v) in req.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(PRINCIPAL_HEADER)) {
            request = request.header(*k, *v);
        }
        let response = sender.send_request(request.body(Full::new(Bytes::new()))?).await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    }
}
