//! A pod: a network namespace wired to its node calico-style (a /32 address, a veth, and a
//! gateway address the node holds on that veth), created as a kubelet and a container
//! runtime create a sandbox:
//!
//! 1. the pod's cgroup, `<node cgroup>/kubepods/besteffort/pod<uid>/`, with one cgroup per
//!    container (`pause/`, `app/`);
//! 2. the network namespace and its wiring (the bed plays the cluster's CNI plugin);
//! 3. `weft-cni` ADD chained after it, with the pod's namespace, name and UID, pointed at
//!    the node's agent socket (whether or not an agent runs there);
//! 4. the sandbox's pause process (`sleep infinity` in `pause/`), which holds the namespace
//!    for the pod's life, as the kubelet's pause container does.
//!
//! Processes started with [`Pod::spawn`] run in `app/` and in the pod's namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result, ensure};

use super::address;
use super::cgroup;
use super::cni::{self, CniCall};
use super::netns::{self, Netns};
use super::node::Node;
use super::process::{self, Placement, Proc, ProcRegistry};

/// The container cgroups of every bed pod.
const PAUSE: &str = "pause";
const APP: &str = "app";

/// A pod of the bed. Cheap to clone; all clones name the same namespace.
#[derive(Clone, Debug)]
pub struct Pod {
    name: String,
    namespace: String,
    uid: String,
    node_name: String,
    ip: Ipv4Addr,
    host_veth: String,
    netns: Netns,
    netns_path: PathBuf,
    cgroup: PathBuf,
    procs: Arc<ProcRegistry>,
    /// The sandbox's pause process; taken (killed and reaped) by the bed's teardown.
    pause: Arc<Mutex<Option<Proc>>>,
}

/// What `Pod::create` needs from the bed.
pub(super) struct PodSpec<'a> {
    pub name: &'a str,
    /// The pod's Kubernetes namespace (`K8S_POD_NAMESPACE`).
    pub namespace: &'a str,
    /// The pod's UID, when the test chose it; a random one otherwise.
    pub uid: Option<&'a str>,
    pub node: &'a Node,
    pub ip: Ipv4Addr,
    pub netns_name: String,
    /// The pod's veth as seen from the node, e.g. `vp3`.
    pub host_veth: String,
    pub procs: &'a Arc<ProcRegistry>,
}

impl Pod {
    /// Creates the pod as described in the module documentation. A pod that fails to come
    /// up (e.g. `weft-cni` holds it back) is torn down here; its namespace name is in
    /// `created` from the moment it exists until then, so the bed removes whatever this
    /// teardown could not.
    pub(super) fn create(spec: PodSpec<'_>, created: &mut Vec<String>) -> Result<Pod> {
        let PodSpec { name, namespace, uid, node, ip, netns_name, host_veth, procs } = spec;
        let uid = match uid {
            Some(uid) => {
                ensure!(weft_model::is_pod_uid(uid), "{uid:?} is not a Kubernetes pod UID");
                uid.to_owned()
            }
            None => cni::new_pod_uid()?,
        };
        let cgroup = node.besteffort_path().join(format!("pod{uid}"));
        cgroup::create(&cgroup)?;
        let netns = match Netns::create(&netns_name) {
            Ok(netns) => netns,
            Err(err) => {
                let _ = cgroup::remove_tree(&cgroup);
                return Err(err);
            }
        };
        created.push(netns_name.clone());
        let pod = Pod {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid,
            node_name: node.name().to_owned(),
            ip,
            host_veth,
            netns_path: netns.path(),
            netns,
            cgroup,
            procs: Arc::clone(procs),
            pause: Arc::default(),
        };
        // A sandbox that fails to come up is torn down, as a runtime does, so that its
        // address and names are free for the next pod.
        if let Err(err) = pod.start_sandbox(node) {
            drop(pod.take_pause());
            // The veth first: a deleted namespace is freed (and its veth with it) only later,
            // in the background, and the next pod reuses the name.
            let _ = node.netns().ip_batch(&[format!("link del {}", pod.host_veth)]);
            if netns::delete(&netns_name).is_ok() {
                created.retain(|n| *n != netns_name);
            }
            let _ = cgroup::remove_tree(&pod.cgroup);
            return Err(err);
        }
        Ok(pod)
    }

    fn start_sandbox(&self, node: &Node) -> Result<()> {
        let (name, namespace, ip, host_veth) = (&self.name, &self.namespace, self.ip, &self.host_veth);
        cgroup::create(&self.cgroup.join(PAUSE))?;
        cgroup::create(&self.cgroup.join(APP))?;
        let gateway = node.pod_gateway();
        self.netns.ip_batch(&[
            "link set lo up".to_owned(),
            format!("link add eth0 type veth peer name {host_veth} netns {}", node.netns_name()),
            format!("addr add {ip}/32 dev eth0"),
            "link set eth0 up".to_owned(),
            format!("route add {gateway} dev eth0 scope link"),
            format!("route add default via {gateway} dev eth0"),
        ])?;
        // The connrate benchmark client opens thousands of short connections from the pod.
        self.netns.set_sysctls(&[("net/ipv4/tcp_tw_reuse", "1")])?;
        node.netns().ip_batch(&[
            format!("link set {host_veth} up"),
            // The same gateway address on every pod veth of the node: each pod answers ARP
            // for it on its own link, and the /32 keeps it from adding a subnet route.
            format!("addr add {gateway}/32 dev {host_veth}"),
            format!("route add {ip}/32 dev {host_veth}"),
        ])?;
        let rp_filter = format!("net/ipv4/conf/{host_veth}/rp_filter");
        node.netns().set_sysctls(&[(rp_filter.as_str(), "0")])?;

        let outcome = cni::invoke(&self.cni_call("ADD", node.cni_socket()))?;
        ensure!(
            outcome.success,
            "weft-cni ADD for pod {namespace}/{name} failed: {}{}",
            outcome.stdout,
            outcome.stderr
        );
        ensure!(
            outcome.stdout.trim_end() == outcome.prev_result,
            "weft-cni must print the previous result unchanged; it printed {:?} for {:?}",
            outcome.stdout,
            outcome.prev_result
        );

        let mut pause = Command::new("sleep");
        pause.arg("infinity");
        let owner = format!("{}/{name} (pause)", node.name());
        let place =
            Placement { owner: &owner, netns: &self.netns_path, cgroup: Some(&self.cgroup.join(PAUSE)) };
        let pause =
            process::spawn(pause, place, &self.procs).context("cannot start the pod's pause process")?;
        *self.pause.lock().unwrap_or_else(PoisonError::into_inner) = Some(pause);
        Ok(())
    }

    /// The plugin invocation a runtime makes for this pod's sandbox (`ADD`, `DEL`, `CHECK`).
    pub fn cni_call<'a>(&'a self, command: &'a str, agent_socket: &'a Path) -> CniCall<'a> {
        CniCall {
            command,
            container_id: self.netns.name(),
            netns: &self.netns_path,
            namespace: &self.namespace,
            name: &self.name,
            uid: &self.uid,
            ip: self.ip,
            gateway: address::pod_gateway(self.ip.octets()[2]),
            agent_socket,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The pod's UID (Kubernetes' `metadata.uid`): its cgroup is `pod<uid>`.
    pub fn uid(&self) -> &str {
        &self.uid
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

    /// The pod's cgroup, `<node cgroup>/kubepods/besteffort/pod<uid>`.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup
    }

    /// The cgroup of the pod's application container, where [`Pod::spawn`] puts processes.
    pub fn app_cgroup_path(&self) -> PathBuf {
        self.cgroup.join(APP)
    }

    /// The pid of the sandbox's pause process, while it runs.
    pub fn pause_pid(&self) -> Option<u32> {
        self.pause.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(Proc::pid)
    }

    /// Starts `cmd` in the pod: in its network namespace and its application container's
    /// cgroup, so the agent's eBPF cgroup programs see its sockets. stdout and stderr are
    /// captured.
    pub fn spawn(&self, cmd: Command) -> Result<Proc> {
        let owner = format!("{}/{}", self.node_name, self.name);
        let cgroup = self.app_cgroup_path();
        let place = Placement { owner: &owner, netns: &self.netns_path, cgroup: Some(&cgroup) };
        process::spawn(cmd, place, &self.procs)
            .with_context(|| format!("cannot start a process in pod {owner}"))
    }

    /// Runs `f` on a thread inside the pod's network namespace and returns its value. The
    /// thread stays in the test's cgroup, so cgroup programs do not see its sockets.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        self.netns.run(f)
    }

    /// Takes the pause process out (the bed's teardown kills and reaps it).
    pub(super) fn take_pause(&self) -> Option<Proc> {
        self.pause.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}
