//! A node: a network namespace on the underlay bridge that routes its pods' /24, with a
//! cgroup its pods run in, laid out as the kubelet lays it out (`kubepods/besteffort/
//! pod<uid>/<container>`, cgroupfs driver). The node agent runs here (`Node::spawn`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::address;
use super::cgroup;
use super::netns::Netns;
use super::process::{self, Placement, Proc, ProcRegistry};

/// The kubelet's kubepods cgroup under the node's cgroup, and its BestEffort QoS child.
const KUBEPODS: &str = "kubepods";
const BESTEFFORT: &str = "besteffort";

/// A node of the bed. Cheap to clone; all clones name the same namespace.
#[derive(Clone, Debug)]
pub struct Node {
    name: String,
    index: u8,
    netns: Netns,
    cgroup: PathBuf,
    cni_socket: PathBuf,
    procs: Arc<ProcRegistry>,
}

/// What `Node::create` needs from the bed.
pub(super) struct NodeSpec<'a> {
    pub name: &'a str,
    /// Claimed machine-wide (unique among running beds); picks the node's addresses.
    pub index: u8,
    pub netns_name: String,
    pub underlay: &'a Netns,
    pub existing: &'a [Node],
    pub cgroup: PathBuf,
    /// Where this node's agent listens for the CNI plugin (the agent creates it).
    pub cni_socket: PathBuf,
    pub procs: &'a Arc<ProcRegistry>,
}

impl Node {
    /// Creates the node's namespace, plugs it into the underlay bridge, routes pod CIDRs
    /// between it and the `existing` nodes, and creates its cgroup. The namespace name is
    /// pushed to `created` as soon as it exists, so the bed removes it even if a later step
    /// fails.
    pub(super) fn create(spec: NodeSpec<'_>, created: &mut Vec<String>) -> Result<Node> {
        let k = spec.index;
        let netns = Netns::create(&spec.netns_name)?;
        created.push(spec.netns_name.clone());
        let port = format!("vn{k}");
        netns.ip_batch(&[
            "link set lo up".to_owned(),
            format!("link add eth0 type veth peer name {port} netns {}", spec.underlay.name()),
            format!("addr add {}/{} dev eth0", address::node_ip(k), address::UNDERLAY_PREFIX_LEN),
            "link set eth0 up".to_owned(),
        ])?;
        spec.underlay.ip_batch(&[format!("link set {port} master br0"), format!("link set {port} up")])?;
        netns.set_sysctls(&[
            ("net/ipv4/ip_forward", "1"),
            // Pod traffic arrives on one veth and its replies leave by another, and pod source
            // addresses are not on any node subnet: strict reverse-path filtering drops it.
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/default/rp_filter", "0"),
            ("net/ipv4/conf/eth0/rp_filter", "0"),
            // The agent opens many short upstream connections from the node (connrate bench).
            ("net/ipv4/tcp_tw_reuse", "1"),
        ])?;

        let (new_cidr, new_len) = address::pod_cidr(k);
        for other in spec.existing {
            other.netns.ip_batch(&[format!(
                "route add {new_cidr}/{new_len} via {} dev eth0",
                address::node_ip(k)
            )])?;
        }
        let to_existing: Vec<String> = spec
            .existing
            .iter()
            .map(|other| {
                let (cidr, len) = address::pod_cidr(other.index);
                format!("route add {cidr}/{len} via {} dev eth0", other.ip())
            })
            .collect();
        if !to_existing.is_empty() {
            netns.ip_batch(&to_existing)?;
        }

        cgroup::create(&spec.cgroup)?;
        cgroup::create(&spec.cgroup.join(KUBEPODS))?;
        cgroup::create(&spec.cgroup.join(KUBEPODS).join(BESTEFFORT))?;
        Ok(Node {
            name: spec.name.to_owned(),
            index: k,
            netns,
            cgroup: spec.cgroup,
            cni_socket: spec.cni_socket,
            procs: Arc::clone(spec.procs),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Machine-wide node index (unique among running beds); node k has underlay 198.18.0.k and pods 198.18.k.0/24.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The node's underlay address (on its `eth0`).
    pub fn ip(&self) -> Ipv4Addr {
        address::node_ip(self.index)
    }

    /// The node's pod CIDR as network address and prefix length.
    pub fn pod_cidr(&self) -> (Ipv4Addr, u8) {
        address::pod_cidr(self.index)
    }

    /// The address the node holds on every pod veth, and pods use as default gateway.
    pub fn pod_gateway(&self) -> Ipv4Addr {
        address::pod_gateway(self.index)
    }

    pub fn netns_name(&self) -> &str {
        self.netns.name()
    }

    pub fn netns_path(&self) -> PathBuf {
        self.netns.path()
    }

    /// The cgroup the node's pods run in (below it, in `kubepods/`); attach eBPF cgroup
    /// programs here: they apply to every cgroup below.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup
    }

    /// The node's kubepods cgroup (cgroupfs driver spelling), for the agent's
    /// `--kubepods-cgroup`.
    pub fn kubepods_path(&self) -> PathBuf {
        self.cgroup.join(KUBEPODS)
    }

    /// Where the pods of QoS class BestEffort (all the bed's pods) get their cgroups.
    pub(super) fn besteffort_path(&self) -> PathBuf {
        self.cgroup.join(KUBEPODS).join(BESTEFFORT)
    }

    /// The Unix socket this node's agent listens on for the CNI plugin (`--cni-socket`);
    /// the bed runs `weft-cni` against it for every pod, agent or not.
    pub fn cni_socket(&self) -> &Path {
        &self.cni_socket
    }

    /// Starts `cmd` in the node's network namespace. It stays in the test's own cgroup, not
    /// the pods' one, so the agent's cgroup programs do not see the agent's own sockets.
    /// (For a process in the node's cgroup but in no pod's, see `spawn_in_node_cgroup`.)
    pub fn spawn(&self, cmd: Command) -> Result<Proc> {
        let place = Placement { owner: &self.name, netns: &self.netns.path(), cgroup: None };
        process::spawn(cmd, place, &self.procs)
            .with_context(|| format!("cannot start a process on node {}", self.name))
    }

    /// Starts `cmd` in the node's network namespace and in a child cgroup `child` of the
    /// node's cgroup, i.e. below where the agent attaches its cgroup programs: what a real
    /// node looks like when the programs sit on the root cgroup and the agent is a pod.
    pub fn spawn_in_child_cgroup(&self, cmd: Command, child: &str) -> Result<Proc> {
        let cgroup = self.cgroup.join(child);
        if !cgroup.exists() {
            cgroup::create(&cgroup)?;
        }
        let place = Placement { owner: &self.name, netns: &self.netns.path(), cgroup: Some(&cgroup) };
        process::spawn(cmd, place, &self.procs)
            .with_context(|| format!("cannot start a process on node {} in cgroup {child}", self.name))
    }

    /// Starts `cmd` in the network namespace at `netns` and in the node's own cgroup, not in
    /// any pod's: a process on the node that the kubelet did not start (the capture programs
    /// attached to the node's cgroup see its sockets).
    pub fn spawn_in_node_cgroup(&self, cmd: Command, netns: &Path) -> Result<Proc> {
        let place = Placement { owner: &self.name, netns, cgroup: Some(&self.cgroup) };
        process::spawn(cmd, place, &self.procs)
            .with_context(|| format!("cannot start a process in node {}'s cgroup", self.name))
    }

    /// Runs `f` on a thread inside the node's network namespace (e.g. to query the agent's
    /// admin endpoint on the node's 127.0.0.1) and returns its value.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        self.netns.run(f)
    }

    pub(super) fn netns(&self) -> &Netns {
        &self.netns
    }
}
