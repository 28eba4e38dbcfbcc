//! A pod: a network namespace wired to its node calico-style (a /32 address, a veth, and a
//! gateway address the node holds on that veth), whose processes run in the node's cgroup.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::netns::Netns;
use super::node::Node;
use super::process::{self, Placement, Proc, ProcRegistry};

/// A pod of the bed. Cheap to clone; all clones name the same namespace.
#[derive(Clone, Debug)]
pub struct Pod {
    name: String,
    node_name: String,
    ip: Ipv4Addr,
    host_veth: String,
    netns: Netns,
    cgroup: PathBuf,
    procs: Arc<ProcRegistry>,
}

/// What `Pod::create` needs from the bed.
pub(super) struct PodSpec<'a> {
    pub name: &'a str,
    pub node: &'a Node,
    pub ip: Ipv4Addr,
    pub netns_name: String,
    /// The pod's veth as seen from the node, e.g. `vp3`.
    pub host_veth: String,
    pub procs: &'a Arc<ProcRegistry>,
}

impl Pod {
    /// Creates the pod's namespace and veth and the routes both ways. The namespace name is
    /// pushed to `created` as soon as it exists, so the bed removes it even if a later step
    /// fails.
    pub(super) fn create(spec: PodSpec<'_>, created: &mut Vec<String>) -> Result<Pod> {
        let PodSpec { name, node, ip, netns_name, host_veth, procs } = spec;
        let gateway = node.pod_gateway();
        let netns = Netns::create(&netns_name)?;
        created.push(netns_name);
        netns.ip_batch(&[
            "link set lo up".to_owned(),
            format!("link add eth0 type veth peer name {host_veth} netns {}", node.netns_name()),
            format!("addr add {ip}/32 dev eth0"),
            "link set eth0 up".to_owned(),
            format!("route add {gateway} dev eth0 scope link"),
            format!("route add default via {gateway} dev eth0"),
        ])?;
        // The connrate benchmark client opens thousands of short connections from the pod.
        netns.set_sysctls(&[("net/ipv4/tcp_tw_reuse", "1")])?;
        node.netns().ip_batch(&[
            format!("link set {host_veth} up"),
            // The same gateway address on every pod veth of the node: each pod answers ARP
            // for it on its own link, and the /32 keeps it from adding a subnet route.
            format!("addr add {gateway}/32 dev {host_veth}"),
            format!("route add {ip}/32 dev {host_veth}"),
        ])?;
        let rp_filter = format!("net/ipv4/conf/{host_veth}/rp_filter");
        node.netns().set_sysctls(&[(rp_filter.as_str(), "0")])?;
        Ok(Pod {
            name: name.to_owned(),
            node_name: node.name().to_owned(),
            ip,
            host_veth,
            netns,
            cgroup: node.cgroup_path().to_owned(),
            procs: Arc::clone(procs),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node this pod runs on.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The pod's address (a /32 on its `eth0`).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The node-side end of the pod's veth, e.g. `vp3`.
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }

    pub fn netns_name(&self) -> &str {
        self.netns.name()
    }

    pub fn netns_path(&self) -> PathBuf {
        self.netns.path()
    }

    /// The cgroup the pod's processes run in: its node's.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup
    }

    /// Starts `cmd` in the pod: in its network namespace and its node's cgroup, so the
    /// agent's eBPF cgroup programs see its sockets. stdout and stderr are captured.
    pub fn spawn(&self, cmd: Command) -> Result<Proc> {
        let owner = format!("{}/{}", self.node_name, self.name);
        let netns = self.netns.path();
        let place = Placement { owner: &owner, netns: &netns, cgroup: Some(&self.cgroup) };
        process::spawn(cmd, place, &self.procs)
            .with_context(|| format!("cannot start a process in pod {owner}"))
    }

    /// Runs `f` on a thread inside the pod's network namespace and returns its value. The
    /// thread stays in the test's cgroup, so cgroup programs do not see its sockets.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        self.netns.run(f)
    }
}
