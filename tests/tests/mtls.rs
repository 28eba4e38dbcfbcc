//! End-to-end: traffic between enrolled pods on different nodes crosses the node link only
//! as TLS to port 15008 (checked on a packet capture, beside a plaintext run that shows
//! the check can see a leak), and the server's side knows who the client is: its agent
//! logs and labels metrics with the client's verified SPIFFE identity, and the application
//! sees the client pod's own address.
//! Root, network namespaces, real eBPF programs, real agent and weftd processes, tcpdump.

use anyhow::Result;
use std::{net::Ipv4Addr, time::Duration};
use weft_tests::{
    Pod,
    agent::{Agent, AgentOptions},
    logs::{self, AGENT_JSON_ARGS},
    scenario::{self, Scenario},
    weftd::SECURE_PORT,
    wire::{self, Analysis, Capture},
};

const APP_PORT: u16 = 9080;
/// How long a log line may trail the connection it reports.
const PATIENCE: Duration = Duration::from_secs(5);
const HBONE_PORT: u16 = 15008;
/// Bytes echoed in each captured transfer: enough for many TLS records each way.
const ECHO_BYTES: u64 = 1 << 20;
/// Sent in an HTTP header of each captured transfer; must never be readable on the link
/// when both pods are in the mesh.
const MARKER: &str = "weft-e2e-marker-3b9f1c0d2a";

fn json_logs() -> AgentOptions {
    AgentOptions { args: AGENT_JSON_ARGS.map(String::from).to_vec(), ..Default::default() }
}

/// What a workload sends across: HTTP requests carrying the marker, then a checked echo.
fn transfer(client: &Pod, server: Ipv4Addr) -> Result<()> {
    let to = format!("{server}:{APP_PORT}");
    let header = format!("x-marker: {MARKER}");
    let r = scenario::client(
        client,
        &["http", "--to", &to, "--host", "server", "--header", &header, "--count", "3"],
        Duration::from_secs(20),
    )?;
    anyhow::ensure!(r.code == 0, "HTTP requests from {} failed: {r:?}", client.name());
    let r = scenario::echo(client, &to, ECHO_BYTES)?;
    anyhow::ensure!(r.ok(), "echo from {} failed: {r:?}", client.name());
    Ok(())
}

#[test]
fn enrolled_cross_node_traffic_is_only_tls_to_15008_and_its_payload_never_crosses_in_clear() -> Result<()> {
    let mut s = Scenario::new("mtls_wire")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    let server = s.bed.pod(&n2, "mesh", "server")?;
    let plain_client = s.bed.pod(&n1, "legacy", "plain-client")?;
    let plain_server = s.bed.pod(&n2, "legacy", "plain-server")?;
    s.config
        .namespace("mesh", true)
        .namespace("legacy", false)
        .pod(&client, "mesh", &[], &[])
        .pod(&server, "mesh", &[], &[APP_PORT])
        .pod(&plain_client, "legacy", &[], &[])
        .pod(&plain_server, "legacy", &[], &[APP_PORT]);
    s.config.write()?;
    let a1 = s.agent(&n1)?;
    let a2 = s.agent(&n2)?;
    a1.wait_enrolled(&["client"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["server"], Duration::from_secs(10))?;
    let _srv = scenario::serve(&server, "v1", &[APP_PORT])?;
    let _plain_srv = scenario::serve(&plain_server, "v1", &[APP_PORT])?;

    // The server's node link: everything n2 exchanges with other nodes crosses its eth0.
    // (weftd runs on n1, so n2's agent's control-plane connection crosses it too.)
    let capture = Capture::start(&n2, "eth0", &s.dir.join("mesh.pcap"))?;
    transfer(&client, server.ip())?;
    let mesh = wire::analyze(&capture.stop()?, MARKER.as_bytes())?;

    let capture = Capture::start(&n2, "eth0", &s.dir.join("plaintext.pcap"))?;
    transfer(&plain_client, plain_server.ip())?;
    let plain = wire::analyze(&capture.stop()?, MARKER.as_bytes())?;

    // The check itself can see a leak: outside the mesh, the same transfer is readable.
    assert!(plain.marker_found, "the plaintext run's marker must be visible on the wire:\n{plain}");
    let leaked: Vec<_> =
        plain.flows.iter().filter(|f| f.src.ip() == &plain_client.ip() && f.dst.port() == APP_PORT).collect();
    assert_eq!(leaked.len(), 4, "three HTTP requests and an echo, each its own connection:\n{plain}");
    assert!(leaked.iter().all(|f| matches!(f.tls, Some(Err(_)))), "plaintext is not read as TLS:\n{plain}");
    assert!(leaked.iter().map(|f| f.payload_bytes).sum::<u64>() >= ECHO_BYTES, "{plain}");

    assert_only_tls_to_15008(&mesh, &client, &server, &[n1.ip(), n2.ip()]);
    Ok(())
}

/// The mesh capture: no marker; every packet is TCP; pod traffic is only the client's
/// connection(s) to the server pod's 15008 and back, seen from the SYN, TLS records from
/// the first byte with the transfer inside application data records; anything else is the
/// agents' control-plane connections between node addresses on weftd's secure port.
fn assert_only_tls_to_15008(mesh: &Analysis, client: &Pod, server: &Pod, node_ips: &[Ipv4Addr]) {
    assert!(!mesh.marker_found, "the marker crossed the link in clear:\n{mesh}");
    assert!(mesh.other_ipv4.is_empty(), "only TCP crosses the link:\n{mesh}");
    assert_eq!(mesh.ipv6_transport, 0, "{mesh}");
    let hbone = |f: &&wire::Flow| {
        (f.src.ip() == &client.ip() && f.dst == std::net::SocketAddrV4::new(server.ip(), HBONE_PORT))
            || (f.dst.ip() == &client.ip() && f.src == std::net::SocketAddrV4::new(server.ip(), HBONE_PORT))
    };
    for flow in &mesh.flows {
        let control_plane =
            flow.on_port(SECURE_PORT) && node_ips.contains(flow.src.ip()) && node_ips.contains(flow.dst.ip());
        assert!(hbone(&flow) || control_plane, "unexpected flow on the link: {flow}\n{mesh}");
        if let Some(tls) = &flow.tls {
            assert!(tls.is_ok(), "every connection seen from its start is TLS: {flow}");
        }
    }
    let hbone_flows: Vec<_> = mesh.flows.iter().filter(hbone).collect();
    assert!(hbone_flows.len() >= 2, "the transfer crossed as HBONE, both ways:\n{mesh}");
    for flow in &hbone_flows {
        assert!(flow.saw_syn, "the HBONE connection was opened during the capture: {flow}");
    }
    for (from, to) in [(client.ip(), server.ip()), (server.ip(), client.ip())] {
        let carried: u64 = hbone_flows
            .iter()
            .filter(|f| f.src.ip() == &from && f.dst.ip() == &to)
            .filter_map(|f| f.tls.as_ref()?.as_ref().ok())
            .map(|t| t.application_data_bytes)
            .sum();
        assert!(
            carried >= ECHO_BYTES,
            "{from} -> {to}: the echo's {ECHO_BYTES} bytes travel inside TLS application data \
             records (0x17 0x03 0x03), {carried} did:\n{mesh}"
        );
    }
}

#[test]
fn server_side_agent_knows_the_clients_verified_identity_and_the_app_its_address() -> Result<()> {
    let mut s = Scenario::new("mtls_identity")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "front", "web")?;
    let outsider = s.bed.pod(&n1, "legacy", "outsider")?;
    let server = s.bed.pod(&n2, "shop", "server")?;
    s.config
        .namespace("front", true)
        .namespace("shop", true)
        .namespace("legacy", false)
        .pod(&client, "front", &[("app", "web")], &[])
        .pod(&outsider, "legacy", &[], &[])
        .pod(&server, "shop", &[("app", "server")], &[APP_PORT]);
    s.config.write()?;
    let a1 = s.agent_with(&n1, json_logs())?;
    let a2 = s.agent_with(&n2, json_logs())?;
    a1.wait_enrolled(&["web"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["server"], Duration::from_secs(10))?;
    let srv = scenario::serve(&server, "v1", &[APP_PORT])?;
    let to = format!("{}:{APP_PORT}", server.ip());
    // The bed's service account is the pod's name.
    let client_id = "spiffe://cluster.local/ns/front/sa/web";
    let server_id = "spiffe://cluster.local/ns/shop/sa/server";

    let r = scenario::echo(&client, &to, 64 * 1024)?;
    assert!(r.ok(), "{r:?}\n{}", a1.stderr());
    let r = scenario::client(&client, &["hello", "--to", &to], Duration::from_secs(10))?;
    assert!(r.ok(), "{r:?}");
    // As ztunnel: the agent connects to the app from the client's own address.
    let reply = r.json["reply"].as_str().unwrap_or_default();
    let seen: std::net::SocketAddr = reply.split(' ').nth(2).unwrap_or_default().parse()?;
    assert_eq!(seen.ip(), client.ip(), "the app answers to the client pod's address: {reply}");
    assert_eq!(
        scenario::accepted_peers(&srv).iter().map(|p| p.ip()).collect::<Vec<_>>(),
        [client.ip(), client.ip()],
        "the app accepted both connections from the client pod's address"
    );

    let inbound = [
        ("reporter", "destination"),
        ("source_principal", client_id),
        ("source_workload", "web"),
        ("source_workload_namespace", "front"),
        ("destination_workload", "server"),
        ("destination_principal", server_id),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(a2.metric("istio_tcp_connections_opened_total", &inbound)?, 2, "{}", metrics(&a2)?);
    assert!(a2.metric("istio_tcp_received_bytes_total", &inbound)? >= 64 * 1024);
    let outbound = [
        ("reporter", "source"),
        ("source_principal", client_id),
        ("destination_principal", server_id),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(a1.metric("istio_tcp_connections_opened_total", &outbound)?, 2, "{}", metrics(&a1)?);

    let client_ip = client.ip().to_string();
    let complete = [
        ("direction", "inbound"),
        ("src.identity", client_id),
        ("src.addr", client_ip.as_str()),
        ("dst.addr", to.as_str()),
        ("dst.workload", "server"),
    ];
    assert_eq!(
        logs::wait_matching(|| a2.stderr(), "connection complete", &complete, 2, PATIENCE).len(),
        2,
        "the server's agent logs each connection with the client's identity:\n{}",
        a2.stderr()
    );
    // As ztunnel's access log: each connection's bytes each way (sent: client → server).
    // The echo client sends its verb byte, then the 64 KiB it gets back.
    let echoed = [("bytes_sent", "65537"), ("bytes_recv", "65536")];
    let echo_in = [&complete[..], &echoed].concat();
    assert_eq!(logs::matching(&a2.stderr(), "connection complete", &echo_in).len(), 1, "{}", a2.stderr());
    let echo_out = [("direction", "outbound"), ("dst.identity", server_id), echoed[0], echoed[1]];
    assert_eq!(
        logs::wait_matching(|| a1.stderr(), "connection complete", &echo_out, 1, PATIENCE).len(),
        1,
        "the client's agent logs the echo's bytes:\n{}",
        a1.stderr()
    );

    // Plaintext from outside the mesh (PERMISSIVE by default) is labelled as such: the
    // mTLS series above counted only what came with a certificate.
    let r = scenario::echo(&outsider, &to, 4096)?;
    assert!(r.ok(), "{r:?}");
    let plaintext = [
        ("reporter", "destination"),
        ("source_workload", "outsider"),
        ("connection_security_policy", "none"),
    ];
    assert_eq!(a2.metric("istio_tcp_connections_opened_total", &plaintext)?, 1, "{}", metrics(&a2)?);
    assert_eq!(a2.metric("istio_tcp_connections_opened_total", &inbound)?, 2);
    assert_eq!(
        a2.metric("istio_tcp_connections_opened_total", &[("connection_security_policy", "mutual_tls")])?,
        2
    );
    Ok(())
}

fn metrics(agent: &Agent) -> Result<String> {
    Ok(agent
        .get("/metrics")?
        .1
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_opened"))
        .collect::<Vec<_>>()
        .join("\n"))
}
