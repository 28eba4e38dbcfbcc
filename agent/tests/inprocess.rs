//! In-process tier: the agent's proxy without root, namespaces or eBPF.
//!
//! Two "pods" share this process: the client's outbound listener and the server's HBONE
//! listener are loopback sockets, and `LoopbackSockets` routes the model's pod addresses
//! (10.0.0.x) to them. Everything between is the real thing: the plan, workload
//! certificates from a CA through the agent's secret manager, pooled HBONE over mutual
//! TLS, the inbound checks, the pump and the metrics.

use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
};
use weft_agent::{
    drain::Drain,
    identity::{Ca, SecretManager, Signer},
    metrics::Metrics,
    netns::{NetNs, netns_cookie_of},
    proxy::{
        self, Direction,
        sockets::{LoopbackSockets, Sockets},
    },
    state::{InPod, Shared},
};
use weft_hbone::{Identity, testing::TestCa};
use weft_model::{AddressTable, Workload};
use weft_xds::istio::workload as pb;

const CLIENT: &str = "10.0.0.1";
const SERVER: &str = "10.0.0.2";
const LEGACY: &str = "10.0.0.3";

/// The CA, as the agent sees it: signs CSRs.
struct TestSigner(Arc<TestCa>);

impl Signer for TestSigner {
    fn sign(
        &self,
        _identity: &Identity,
        csr_pem: String,
        ttl: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send>> {
        let result = self.0.sign_csr(&csr_pem, ttl).map(|pem| vec![pem]).map_err(|e| e.to_string());
        Box::pin(async move { result })
    }
}

fn workload(name: &str, ip: &str, hbone: bool) -> (String, pb::Address) {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let w = pb::Workload {
        uid: format!("c//Pod/shop/{name}"),
        name: name.into(),
        namespace: "shop".into(),
        addresses: vec![ip.octets().to_vec()],
        node: "n1".into(),
        service_account: name.into(),
        tunnel_protocol: if hbone { pb::TunnelProtocol::Hbone } else { pb::TunnelProtocol::None } as i32,
        ..Default::default()
    };
    (w.uid.clone(), pb::Address { r#type: Some(pb::address::Type::Workload(w)) })
}

/// An agent's shared state over loopback, with a CA (or none), and its client pod's
/// outbound socket; the server pod's HBONE socket and application are routed to.
struct Bed {
    shared: Arc<Shared>,
    outbound: SocketAddr,
}

fn loopback(shared: &Shared) -> &LoopbackSockets {
    match &shared.sockets {
        Sockets::Loopback(l) => l,
        Sockets::Pods(_) => unreachable!("the in-process bed uses loopback sockets"),
    }
}

async fn echo_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

fn in_pod(shared: &Shared, w: &Arc<Workload>) -> Arc<InPod> {
    let netns = NetNs::current().unwrap();
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cert = shared.secrets.track(&w.identity).ok();
    let ip = match w.ips[0] {
        std::net::IpAddr::V4(v4) => v4,
        _ => unreachable!(),
    };
    Arc::new(InPod { workload: w.clone(), ip, netns, netns_cookie: netns_cookie_of(&probe).unwrap(), cert })
}

async fn bed(with_ca: bool) -> Bed {
    let ca = Arc::new(TestCa::new());
    let mut table = AddressTable::new("cluster.local");
    let all = [
        workload("client", CLIENT, true),
        workload("server", SERVER, true),
        workload("legacy", LEGACY, false),
    ];
    assert!(table.apply(all.iter().map(|(n, a)| (n.as_str(), a)), []).is_empty());
    let state = table.state();
    let ca = with_ca.then(|| Ca { signer: Arc::new(TestSigner(ca.clone())), roots: ca.trust_bundle() });
    let shared = Arc::new(Shared {
        state: arc_swap::ArcSwap::from_pointee(state),
        policies: arc_swap::ArcSwap::from_pointee(weft_agent::policy::PolicyStore::default()),
        metrics: Metrics::default(),
        sockets: Sockets::Loopback(LoopbackSockets::default()),
        secrets: SecretManager::new(ca, Duration::from_secs(3600), tokio::runtime::Handle::current()),
        pool: weft_hbone::Pool::new(weft_hbone::Settings::default()),
        hbone: weft_hbone::Settings::default(),
        drain: Arc::new(Drain::default()),
    });
    let st = shared.state.load();
    let client_pod = in_pod(&shared, st.workload_by_ip(CLIENT.parse().unwrap()).unwrap());
    let server_pod = in_pod(&shared, st.workload_by_ip(SERVER.parse().unwrap()).unwrap());
    let outbound = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (outbound_addr, hbone_addr) = (outbound.local_addr().unwrap(), hbone.local_addr().unwrap());
    tokio::spawn(proxy::serve(outbound, client_pod.clone(), shared.clone(), Direction::Outbound));
    tokio::spawn(proxy::serve(hbone, server_pod, shared.clone(), Direction::Hbone));
    let app = echo_app().await;
    let routes = loopback(&shared);
    routes.route(format!("{SERVER}:15008").parse().unwrap(), hbone_addr);
    routes.route(format!("{SERVER}:9080").parse().unwrap(), app);
    routes.route(format!("{LEGACY}:5432").parse().unwrap(), app);
    Bed { shared, outbound: outbound_addr }
}

impl Bed {
    /// A client in the client pod dialling `to`, captured to the agent's outbound socket.
    async fn dial(&self, to: &str) -> TcpStream {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        loopback(&self.shared).captured(sock.local_addr().unwrap(), to.parse().unwrap());
        sock.connect(self.outbound).await.unwrap()
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let text = self.shared.metrics.render();
        text.lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter(|rest| rest.starts_with('{'))
            .filter(|rest| labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

async fn echo_through(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = stream.split();
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let recv = async { r.read_to_end(&mut back).await.unwrap() };
    tokio::join!(send, recv);
    assert_eq!(back, data, "echoed intact");
    back
}

#[tokio::test]
async fn mesh_to_mesh_goes_over_hbone_with_both_identities() {
    let bed = bed(true).await;
    let mut s = bed.dial(&format!("{SERVER}:9080")).await;
    echo_through(&mut s, 3 << 20).await;
    drop(s);
    // Both sides counted it as mutual TLS, the destination with the client's identity.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let src = [
        ("reporter", "source"),
        ("destination_workload", "server"),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(bed.metric("istio_tcp_connections_opened_total", &src), 1, "{}", bed.shared.metrics.render());
    let dst = [
        ("reporter", "destination"),
        ("source_principal", "spiffe://cluster.local/ns/shop/sa/client"),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(bed.metric("istio_tcp_connections_opened_total", &dst), 1);
    assert!(bed.metric("istio_tcp_received_bytes_total", &dst) >= 3 << 20);
    // A second connection reuses the pooled HBONE connection.
    let mut s = bed.dial(&format!("{SERVER}:9080")).await;
    echo_through(&mut s, 10).await;
    assert_eq!(bed.shared.pool.connections(), 1, "one pooled connection for both");
    let certs = bed.shared.secrets.view();
    assert_eq!(certs.len(), 2, "one certificate per identity of an enrolled pod: {certs:?}");
    assert!(certs.iter().all(|c| c.state == "valid"), "{certs:?}");
}

#[tokio::test]
async fn out_of_mesh_destinations_get_plain_tcp() {
    let bed = bed(true).await;
    let mut s = bed.dial(&format!("{LEGACY}:5432")).await;
    echo_through(&mut s, 4096).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let src = [
        ("reporter", "source"),
        ("destination_workload", "legacy"),
        ("connection_security_policy", "unknown"),
    ];
    assert_eq!(bed.metric("istio_tcp_connections_opened_total", &src), 1);
    assert_eq!(bed.shared.pool.connections(), 0);
}

#[tokio::test]
async fn without_a_ca_mesh_traffic_fails_closed() {
    let bed = bed(false).await;
    let mut s = bed.dial(&format!("{SERVER}:9080")).await;
    let mut buf = [0u8; 1];
    let _ = s.write_all(b"x").await;
    let n = s.read(&mut buf).await;
    assert!(matches!(n, Ok(0) | Err(_)), "no byte crosses without mTLS: {n:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bed.metric("istio_tcp_connections_opened_total", &[]), 0);
    assert_eq!(bed.shared.metrics.outbound_errors.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_mesh_ports_of_a_pod_are_refused() {
    let bed = bed(true).await;
    let mut s = bed.dial(&format!("{SERVER}:15008")).await;
    let mut buf = [0u8; 1];
    let n = s.read(&mut buf).await;
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert_eq!(bed.metric("istio_tcp_connections_opened_total", &[]), 0);
}

#[tokio::test]
async fn a_deny_policy_refuses_the_connect_and_is_counted() {
    use weft_xds::istio::security as sec;
    let bed = bed(true).await;
    let deny = sec::Authorization {
        name: "no-client".into(),
        namespace: "shop".into(),
        scope: sec::Scope::Namespace as i32,
        action: sec::Action::Deny as i32,
        rules: vec![sec::Rule {
            clauses: vec![sec::Clause {
                matches: vec![sec::Match {
                    principals: vec![sec::StringMatch {
                        match_type: Some(sec::string_match::MatchType::Exact(
                            "cluster.local/ns/shop/sa/client".into(),
                        )),
                    }],
                    ..Default::default()
                }],
            }],
        }],
        ..Default::default()
    };
    let store = weft_agent::policy::PolicyStore::from_resources([("shop/no-client", &deny)]).unwrap();
    bed.shared.policies.store(Arc::new(store));
    let mut s = bed.dial(&format!("{SERVER}:9080")).await;
    let _ = s.write_all(b"x").await;
    let mut buf = [0u8; 1];
    let n = s.read(&mut buf).await;
    assert!(matches!(n, Ok(0) | Err(_)), "denied: no byte comes back: {n:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let denied = [
        ("reporter", "destination"),
        ("response_flags", "DENY"),
        ("source_principal", "spiffe://cluster.local/ns/shop/sa/client"),
    ];
    assert_eq!(
        bed.metric("istio_tcp_connections_failed_total", &denied),
        1,
        "{}",
        bed.shared.metrics.render()
    );
    assert_eq!(bed.metric("istio_tcp_connections_opened_total", &[("reporter", "destination")]), 0);
}
