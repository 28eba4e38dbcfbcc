//! The kubelet's probes: the startupProbe until it succeeds (at most failureThreshold
//! times, periodSeconds apart), then the readinessProbe until it succeeds; each an HTTP GET
//! or a TCP connect to the pod's IP, made from the node as the kubelet makes it.

use super::RunningContainer;
use crate::Node;
use anyhow::{Context, Result, bail};
use k8s_openapi::{api::core::v1::Probe, apimachinery::pkg::util::intstr::IntOrString};
use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

pub fn wait_ready(
    node: &Node,
    pod_ip: IpAddr,
    container: &mut RunningContainer,
    deadline: Instant,
) -> Result<()> {
    let spec = container.spec.clone();
    if let Some(startup) = &spec.startup_probe {
        until_success(node, pod_ip, container, startup, "startupProbe", deadline, true)?;
    }
    if let Some(readiness) = &spec.readiness_probe {
        until_success(node, pod_ip, container, readiness, "readinessProbe", deadline, false)?;
    }
    Ok(())
}

fn until_success(
    node: &Node,
    pod_ip: IpAddr,
    container: &mut RunningContainer,
    probe: &Probe,
    what: &str,
    deadline: Instant,
    bounded: bool,
) -> Result<()> {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let threshold = probe.failure_threshold.unwrap_or(3).max(1);
    std::thread::sleep(Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64));
    let mut failures = 0;
    loop {
        if let Some(status) = container.proc.wait_timeout(Duration::ZERO)? {
            bail!("the container exited ({status}) before its {what} succeeded");
        }
        let last = once(node, pod_ip, container, probe, timeout);
        match &last {
            Ok(()) => return Ok(()),
            Err(_) => failures += 1,
        }
        // A startup probe that fails failureThreshold times gets the container killed; a
        // readiness probe keeps the pod out of endpoints until it passes.
        if bounded && failures >= threshold {
            bail!("{what} failed {failures} times: {:#}", last.unwrap_err());
        }
        if Instant::now() + period > deadline {
            bail!("{what} not passed in time: {:#}", last.unwrap_err());
        }
        std::thread::sleep(period);
    }
}

fn once(
    node: &Node,
    pod_ip: IpAddr,
    container: &RunningContainer,
    probe: &Probe,
    timeout: Duration,
) -> Result<()> {
    let port = |port: &IntOrString| -> Result<u16> {
        match port {
            IntOrString::Int(p) => Ok(*p as u16),
            IntOrString::String(name) => container
                .spec
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port as u16)
                .with_context(|| {
                    format!("the probe names port {name:?}, which the container does not declare")
                }),
        }
    };
    if let Some(get) = &probe.http_get {
        if get.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            bail!("the bed's kubelet probes over HTTP only");
        }
        let host: IpAddr = match get.host.as_deref() {
            Some(h) => h.parse().with_context(|| format!("probe host {h:?}"))?,
            None => pod_ip,
        };
        let addr = SocketAddr::new(host, port(&get.port)?);
        let path = get.path.clone().unwrap_or_else(|| "/".into());
        // Bounded by the client's own read timeout, not the probe's.
        let (status, _) = node.run(move || crate::agent::http_get(&addr.to_string(), &path))?;
        // The kubelet's rule: any 2xx or 3xx is success.
        if !(200..400).contains(&status) {
            bail!("GET {addr}: {status}");
        }
        return Ok(());
    }
    if let Some(tcp) = &probe.tcp_socket {
        let addr = SocketAddr::new(pod_ip, port(&tcp.port)?);
        return node
            .run(move || TcpStream::connect_timeout(&addr, timeout).map(drop))
            .with_context(|| format!("connect {addr}"));
    }
    bail!("the bed's kubelet probes with httpGet and tcpSocket only")
}
