//! End-to-end: the edges of capture — what is and is not exempt, and the agent's own
//! ports. Each test is one of the defects the zero-trust issue named, shown fixed.
//! Root, network namespaces, real eBPF programs, real agent processes.

use anyhow::Result;
use std::time::Duration;
use weft_tests::{
    agent::{Agent, AgentOptions},
    scenario::{self, Scenario},
};

const APP_PORT: u16 = 9080;
const AGENT_MARK: &str = "0x539";

fn opened(agent: &Agent, reporter: &str) -> Result<u64> {
    agent.metric("istio_tcp_connections_opened_total", &[("reporter", reporter)])
}

fn open_fds(agent: &mut Agent) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", agent.proc().pid())).map_or(0, |d| d.count())
}

#[test]
fn dialling_the_agents_own_sockets_from_the_pod_is_refused_not_looped() -> Result<()> {
    let mut s = Scenario::new("edges_self_dial")?;
    let n1 = s.bed.node("n1")?;
    let pod = s.bed.pod(&n1, "mesh", "pod")?;
    s.config.namespace("mesh", true).pod(&pod, "mesh", &[], &[APP_PORT]);
    s.config.write()?;
    let mut agent = s.agent(&n1)?;
    agent.wait_enrolled(&["pod"], Duration::from_secs(10))?;
    let fds_before = open_fds(&mut agent);

    // Over loopback to the in-pod inbound socket: the agent must not connect to itself
    // (before the fix it did, until it ran out of file descriptors).
    let r = scenario::echo(&pod, "127.0.0.1:15006", 4096)?;
    assert!(!r.ok(), "a connection to the agent's own inbound socket must fail: {r:?}");
    // The same through the pod's address: the mesh's ports are never steered.
    let r = scenario::echo(&pod, &format!("{}:15006", pod.ip()), 4096)?;
    assert!(!r.ok(), "{r:?}");
    assert_eq!(r.error_kind(), Some("ConnectionRefused"), "{r:?}");

    std::thread::sleep(Duration::from_millis(300));
    assert!(
        open_fds(&mut agent) <= fds_before + 4,
        "the agent's descriptors stay flat: {}",
        open_fds(&mut agent)
    );
    assert_eq!(agent.metric("weft_inbound_errors_total", &[])?, 1, "one refused inbound connection");
    assert_eq!(opened(&agent, "destination")?, 0, "nothing reached an application");
    agent.wait_ready(Duration::from_secs(1))?;
    assert!(
        agent.stderr().contains("a connection to the agent itself"),
        "the refusal is logged with its reason:\n{}",
        agent.stderr()
    );
    Ok(())
}

#[test]
fn a_forged_mark_or_port_15008_does_not_skip_capture() -> Result<()> {
    let mut s = Scenario::new("edges_no_exemptions")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    let legacy = s.bed.pod(&n2, "legacy", "legacy")?;
    s.config.namespace("mesh", true).namespace("legacy", false).pod(&client, "mesh", &[], &[]).pod(
        &legacy,
        "legacy",
        &[],
        &[APP_PORT, 15008],
    );
    s.config.write()?;
    let a1 = s.agent(&n1)?;
    a1.wait_enrolled(&["client"], Duration::from_secs(10))?;
    let _srv = scenario::serve(&legacy, "v1", &[APP_PORT, 15008])?;

    // A socket carrying the agent's own mark (a pod with NET_ADMIN can set it) is captured.
    let to = format!("{}:{APP_PORT}", legacy.ip());
    let r = scenario::client(
        &client,
        &["echo", "--to", &to, "--bytes", "4096", "--mark", AGENT_MARK],
        Duration::from_secs(20),
    )?;
    assert!(r.ok(), "{r:?}");
    assert_eq!(opened(&a1, "source")?, 1, "the marked connection went through the agent");

    // Port 15008 of a destination is a port like any other for the client's capture.
    let r = scenario::echo(&client, &format!("{}:15008", legacy.ip()), 4096)?;
    assert!(r.ok(), "{r:?}");
    assert_eq!(opened(&a1, "source")?, 2, "the connection to :15008 went through the agent too");
    Ok(())
}

#[test]
fn every_port_of_an_enrolled_pod_is_steered_but_the_excluded_ones() -> Result<()> {
    let mut s = Scenario::new("edges_all_ports")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let outsider = s.bed.pod(&n1, "legacy", "outsider")?;
    let server = s.bed.pod(&n2, "mesh", "server")?;
    // The model knows no port of the server: no container port, no service.
    s.config.namespace("mesh", true).namespace("legacy", false).pod(&server, "mesh", &[], &[]).pod(
        &outsider,
        "legacy",
        &[],
        &[],
    );
    s.config.write()?;
    let options =
        AgentOptions { args: vec!["--excluded-inbound-ports".into(), "7071".into()], ..Default::default() };
    let a2 = s.agent_with(&n2, options)?;
    a2.wait_enrolled(&["server"], Duration::from_secs(10))?;
    let srv = scenario::serve(&server, "v1", &[7070, 7071])?;

    assert!(scenario::echo(&outsider, &format!("{}:7070", server.ip()), 4096)?.ok());
    assert_eq!(opened(&a2, "destination")?, 1, "an undeclared port is steered to the agent");
    assert!(scenario::echo(&outsider, &format!("{}:7071", server.ip()), 4096)?.ok());
    assert_eq!(opened(&a2, "destination")?, 1, "an excluded port is not");
    let peers: Vec<_> = scenario::accepted_peers(&srv).iter().map(|p| p.ip()).collect();
    assert_eq!(
        peers,
        [std::net::IpAddr::V4(outsider.ip()); 2],
        "the app sees the client's address either way"
    );
    Ok(())
}

#[test]
fn an_agent_under_its_own_capture_programs_does_not_capture_itself() -> Result<()> {
    let mut s = Scenario::new("edges_agent_under_capture")?;
    let n1 = s.bed.node("n1")?;
    let n2 = s.bed.node("n2")?;
    let client = s.bed.pod(&n1, "mesh", "client")?;
    let server = s.bed.pod(&n2, "mesh", "server")?;
    s.config.namespace("mesh", true).pod(&client, "mesh", &[], &[]).pod(&server, "mesh", &[], &[APP_PORT]);
    s.config.write()?;
    // As on a real node, where the programs sit above the agent's own cgroup.
    let options = AgentOptions { under_capture: true, ..Default::default() };
    let a1 = s.agent_with(&n1, options.clone())?;
    let a2 = s.agent_with(&n2, options)?;
    a1.wait_enrolled(&["client"], Duration::from_secs(10))?;
    a2.wait_enrolled(&["server"], Duration::from_secs(10))?;
    let srv = scenario::serve(&server, "v1", &[APP_PORT])?;
    let r = scenario::echo(&client, &format!("{}:{APP_PORT}", server.ip()), 1 << 20)?;
    assert!(r.ok(), "{r:?}\n{}", a1.stderr());
    assert_eq!(scenario::accepts(&srv), 1);
    assert_eq!(
        (opened(&a1, "source")?, opened(&a2, "destination")?),
        (1, 1),
        "one connection each: the agents' own sockets were not captured again"
    );
    Ok(())
}
