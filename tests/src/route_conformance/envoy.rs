//! The real-Envoy arm: weftd's translation as a static bootstrap (see the module above).

use super::{Backend, DEAD_LABEL, PRINCIPAL_HEADER, Translated, backend, endpoint_ip, http, http_from};
use anyhow::{Context, Result, bail};
use envoy_types::pb::{
    envoy::{
        config::{
            bootstrap::v3::{Admin, Bootstrap, bootstrap::StaticResources},
            cluster::v3::cluster,
            core::v3::{
                Address, DataSource, SocketAddress, address, data_source, socket_address::PortSpecifier,
                substitution_format_string,
            },
            endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
            listener::v3::{Filter, FilterChain, Listener, filter},
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
    net::{IpAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};
use weft_controlplane::translate::envoy::authorization;

/// A stock Envoy on a static bootstrap.
pub(super) struct EnvoyArm {
    envoy: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
    admin: u16,
    /// Service FQDN → (listener port, service port).
    listeners: HashMap<String, (u16, u32)>,
    _dead: Vec<socket2::Socket>,
}

fn pack<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
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

impl EnvoyArm {
    /// Starts the backends of `t`'s pods on `runtime` and Envoy on the translation.
    pub(super) fn start(
        t: &Translated,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<(EnvoyArm, HashMap<String, Arc<Backend>>)> {
        let mut backends = HashMap::new();
        let Translated { cfg, opts, routes, clusters, assignments, .. } = t;
        let mut by_ip: HashMap<IpAddr, u16> = HashMap::new();
        let mut dead = Vec::new();
        for pod in cfg.pods.iter() {
            let Some(ip) = pod.ips().first().copied() else { continue };
            let backend = Arc::new(Backend::new(&pod.metadata.name));
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
                    backend::serve(l, b).await;
                }
            });
            backends.insert(pod.metadata.name.clone(), backend);
        }

        // The service clusters (EDS); the HBONE plumbing clusters are not this tier's.
        let static_clusters = clusters
            .iter()
            .filter(|c| c.eds_cluster_config.is_some())
            .cloned()
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
                http_filters.extend(authorization::http_filters(cfg, opts, waypoint, svc));
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
        let mut arm = EnvoyArm { envoy, stderr, _dir: dir, admin, listeners, _dead: dead };
        arm.wait_ready()?;
        Ok((arm, backends))
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

    pub(super) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends a request through the listener of `host` (the service's FQDN).
    pub(super) fn send(&self, host: &str, req: &super::Request<'_>) -> Result<super::Response> {
        let (listen, port) =
            *self.listeners.get(host).with_context(|| format!("no waypoint listener for {host}"))?;
        let default_host = format!("{host}:{port}");
        http_from(req.source, listen, req.method, req.path, req.host.unwrap_or(&default_host), req.headers)
    }

    /// An Envoy statistic (from /stats), 0 when absent.
    pub(super) fn stat(&self, name: &str) -> Result<u64> {
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

impl Drop for EnvoyArm {
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
