//! End-to-end: enrolled pods' TCP traffic is captured by eBPF and carried by the agents.
//! Root, network namespaces, real eBPF programs, real agent processes.

use anyhow::Result;
use std::time::Duration;
use weft_tests::scenario::{self, Scenario};

const MIB: u64 = 1024 * 1024;
const APP_PORT: u16 = 9080;

#[test]
fn pod_to_pod_across_and_within_nodes_passes_through_the_agents() -> Result<()> {
    let mut s = Scenario::new("l4_pod_to_pod")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    let remote = s.bed.pod(&n2, "mesh", "remote")?;
    let local = s.bed.pod(&n1, "mesh", "local")?;
    s.config
        .namespace("mesh", true)
        .pod(&client, "mesh", &[("app", "client")], &[])
        .pod(&remote, "mesh", &[("app", "remote")], &[APP_PORT])
        .pod(&local, "mesh", &[("app", "local")], &[APP_PORT]);
    s.config.write()?;
    let a1 = s.agent(&n1)?;
    let a2 = s.agent(&n2)?;
    a1.wait_enrolled(&["client", "local"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["remote"], Duration::from_secs(10))?;
    let remote_srv = scenario::serve(&remote, "v1", &[APP_PORT])?;
    let local_srv = scenario::serve(&local, "v1", &[APP_PORT])?;

    for (target, name, server, dst_agent) in
        [(&remote, "remote", &remote_srv, &a2), (&local, "local", &local_srv, &a1)]
    {
        let to = format!("{}:{APP_PORT}", target.ip());
        let r = scenario::echo(&client, &to, 64 * MIB)?;
        assert!(r.ok(), "64 MiB echo to {name} failed: {r:?}\nagent n1:\n{}", a1.stderr());
        assert_eq!(r.json["received"].as_u64(), Some(64 * MIB), "{r:?}");
        assert_eq!(
            r.json["peer"].as_str(),
            Some(to.as_str()),
            "the app sees the peer it dialled (getpeername restored)"
        );
        assert_eq!(scenario::accepts(server), 1);
        let peers = scenario::accepted_peers(server);
        assert_eq!(
            peers.iter().map(|p| p.ip()).collect::<Vec<_>>(),
            [std::net::IpAddr::V4(client.ip())],
            "the server application sees the client pod's own address, as without the mesh"
        );

        let src = [("reporter", "source"), ("source_workload", "client"), ("destination_workload", name)];
        let dst =
            [("reporter", "destination"), ("source_workload", "client"), ("destination_workload", name)];
        assert_eq!(
            a1.metric("istio_tcp_connections_opened_total", &src)?,
            1,
            "outbound on the client's node"
        );
        assert_eq!(a1.metric("istio_tcp_connections_closed_total", &src)?, 1);
        assert!(a1.metric("istio_tcp_received_bytes_total", &src)? >= 64 * MIB);
        assert!(a1.metric("istio_tcp_sent_bytes_total", &src)? >= 64 * MIB);
        assert_eq!(
            dst_agent.metric("istio_tcp_connections_opened_total", &dst)?,
            1,
            "inbound on the server's node"
        );
        assert!(dst_agent.metric("istio_tcp_received_bytes_total", &dst)? >= 64 * MIB);
        assert!(dst_agent.metric("istio_tcp_sent_bytes_total", &dst)? >= 64 * MIB);
    }
    Ok(())
}

#[test]
fn service_vip_is_resolved_to_an_endpoint_by_the_agent() -> Result<()> {
    let mut s = Scenario::new("l4_vip")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "bookinfo", "client")?;
    let v1 = s.bed.pod(&n2, "bookinfo", "reviews-v1")?;
    let v2 = s.bed.pod(&n1, "bookinfo", "reviews-v2")?;
    s.config
        .namespace("bookinfo", true)
        .pod(&client, "bookinfo", &[("app", "productpage")], &[])
        .pod(&v1, "bookinfo", &[("app", "reviews"), ("version", "v1")], &[])
        .pod(&v2, "bookinfo", &[("app", "reviews"), ("version", "v2")], &[])
        .service("reviews", "bookinfo", "198.19.0.10".parse()?, 80, APP_PORT, &[("app", "reviews")]);
    s.config.write()?;
    let a1 = s.agent(&n1)?;
    let a2 = s.agent(&n2)?;
    a1.wait_enrolled(&["client", "reviews-v2"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["reviews-v1"], Duration::from_secs(10))?;
    let _s1 = scenario::serve(&v1, "v1", &[APP_PORT])?;
    let _s2 = scenario::serve(&v2, "v2", &[APP_PORT])?;

    let mut versions = Vec::new();
    for _ in 0..4 {
        let r = scenario::client(&client, &["hello", "--to", "198.19.0.10:80"], Duration::from_secs(10))?;
        assert!(r.ok(), "{r:?}");
        let reply = r.json["reply"].as_str().unwrap_or_default().to_owned();
        versions.push(reply.split(' ').nth(1).unwrap_or_default().to_owned());
    }
    versions.sort();
    assert_eq!(versions, ["v1", "v1", "v2", "v2"], "round robin over both endpoints");
    let svc = [("reporter", "source"), ("destination_service", "reviews.bookinfo.svc.cluster.local")];
    assert_eq!(a1.metric("istio_tcp_connections_opened_total", &svc)?, 4);
    let inbound =
        [("reporter", "destination"), ("destination_service", "reviews.bookinfo.svc.cluster.local")];
    assert_eq!(a2.metric("istio_tcp_connections_opened_total", &inbound)?, 2);
    Ok(())
}

#[test]
fn namespace_without_the_label_is_not_captured() -> Result<()> {
    let mut s = Scenario::new("l4_unlabelled")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "legacy", "client")?;
    let server = s.bed.pod(&n2, "legacy", "server")?;
    s.config.namespace("legacy", false).pod(&client, "legacy", &[], &[]).pod(
        &server,
        "legacy",
        &[],
        &[APP_PORT],
    );
    s.config.write()?;
    let a1 = s.agent(&n1)?;
    let a2 = s.agent(&n2)?;
    let srv = scenario::serve(&server, "v1", &[APP_PORT])?;

    let r = scenario::echo(&client, &format!("{}:{APP_PORT}", server.ip()), 4 * MIB)?;
    assert!(r.ok(), "{r:?}");
    assert_eq!(scenario::accepts(&srv), 1);
    for a in [&a1, &a2] {
        assert!(a.enrolled()?.is_empty());
        assert_eq!(
            a.metric("istio_tcp_connections_opened_total", &[])?,
            0,
            "nothing passed through an agent"
        );
    }
    Ok(())
}
