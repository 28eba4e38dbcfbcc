//! The test bed: nodes and pods as network namespaces on this one machine.
//!
//! ```text
//!   underlay netns wb<id>u: bridge br0
//!      |  vn1                     |  vn2
//!   eth0 198.18.0.1            eth0 198.18.0.2
//!   node netns wb<id>n1        node netns wb<id>n2       (routes to each other's pod /24)
//!      |  vp1   | vp3             |  vp2
//!   pod wb<id>p1  pod wb<id>p3  pod wb<id>p2             (eth0 198.18.k.x/32, gw 198.18.k.1)
//! ```
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use weft_tests::TestBed;
//! let bed = TestBed::new("echo_across_nodes")?;
//! let n1 = bed.node("n1")?;
//! let n2 = bed.node("n2")?;
//! let server = bed.pod(&n1, "bookinfo", "reviews-v1")?;
//! let client = bed.pod(&n2, "bookinfo", "productpage")?;
//! # Ok(()) }
//! ```
//!
//! Each pod is made as a kubelet and container runtime make one: a cgroup `pod<uid>` under
//! its node's `kubepods/besteffort`, the namespace, `weft-cni` ADD pointed at the node's
//! agent socket, and a pause process holding the namespace (see [`Pod`]).
//!
//! The host's own network namespace is never touched. Everything the bed made is removed when
//! it is dropped, also when the test panics; beds of test processes that died are removed by
//! [`TestBed::sweep_stale`], which the first bed of each process runs.

pub mod address;
mod cgroup;
pub mod cni;
mod netns;
mod node;
mod output;
mod pod;
mod process;
mod state;
mod teardown;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
use std::time::SystemTime;

use anyhow::{Context, Result, bail, ensure};

pub use nix::sys::signal::Signal;
pub use node::Node;
pub use pod::Pod;
pub use process::Proc;

use netns::Netns;
use process::ProcRegistry;
use state::BedState;
use teardown::Leftovers;

/// Set (to anything) to keep a failed test's bed, processes included, for a person to step
/// into; the next test run's sweep removes it.
pub const KEEP_ON_FAILURE_ENV: &str = "WEFT_TESTBED_KEEP";

/// Prefix of every namespace a bed creates: `wb<id>u`, `wb<id><node>`, `wb<id>p<j>`.
const NETNS_PREFIX: &str = "wb";

/// Prefix of every bed's cgroup directory under the cgroup2 mount.
const CGROUP_PREFIX: &str = "weft-test-";

/// Where each bed's nodes have their agent's CNI socket: `<this>/<bed id>/<node>/cni.sock`.
/// Short, because a Unix socket path holds at most 107 bytes.
pub const CNI_RUN_DIR: &str = "/run/weft-testbed-cni";

/// A set of nodes and pods for one test. Dropping it removes everything it made.
pub struct TestBed {
    id: String,
    test_name: String,
    cgroup: PathBuf,
    cni_dir: PathBuf,
    underlay: Netns,
    topology: Mutex<Topology>,
    state: Mutex<BedState>,
    procs: Arc<ProcRegistry>,
}

#[derive(Default)]
struct Topology {
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    /// Every namespace created so far, in creation order, even of a node or pod whose setup
    /// then failed.
    netns: Vec<String>,
}

impl TestBed {
    /// Creates an empty bed (the underlay bridge and the bed's cgroup) for the test
    /// `test_name`. Needs root.
    pub fn new(test_name: &str) -> Result<TestBed> {
        ensure!(
            nix::unistd::geteuid().is_root(),
            "the test bed needs root (network namespaces, cgroups): run the tests as root, \
             e.g. `sudo -E cargo test -p weft-tests` or `cargo xtask test`"
        );
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| {
            if let Err(err) = TestBed::sweep_stale() {
                eprintln!("weft test bed: sweeping stale beds failed: {err:#}");
            }
        });

        let state = reserve_id(test_name)?;
        let id = state.id.clone();
        let cgroup = cgroup::cgroup2_mount()?.join(format!("{CGROUP_PREFIX}{id}"));
        let underlay_name = format!("{NETNS_PREFIX}{id}u");
        let cni_dir = Path::new(CNI_RUN_DIR).join(&id);
        let mut bed = TestBed {
            id: id.clone(),
            test_name: test_name.to_owned(),
            cgroup: cgroup.clone(),
            cni_dir: cni_dir.clone(),
            // Named before it exists so a failure below still tears down what was made.
            underlay: Netns::named(&underlay_name),
            topology: Mutex::new(Topology::default()),
            state: Mutex::new(state),
            procs: Arc::default(),
        };
        bed.register_cleanup_dir(&cni_dir)?;
        bed.underlay = Netns::create(&underlay_name)?;
        bed.topology().netns.push(underlay_name);
        bed.underlay.ip_batch(&["link set lo up", "link add br0 type bridge", "link set br0 up"])?;
        cgroup::create(&cgroup)?;
        Ok(bed)
    }

    /// The bed's short id (6 hex digits), part of every namespace and cgroup name it makes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bed's cgroup; node cgroups are below it.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup
    }

    /// The underlay namespace holding the bridge `br0` all nodes are plugged into.
    pub fn underlay_netns_name(&self) -> &str {
        self.underlay.name()
    }

    /// Adds node `name` (letters, digits and `-`; not `u` or `p<digits>`, which would clash
    /// with the bed's other namespace names).
    pub fn node(&self, name: &str) -> Result<Node> {
        validate_node_name(name)?;
        let mut topology = self.topology();
        let Topology { nodes, netns, .. } = &mut *topology;
        ensure!(nodes.iter().all(|node| node.name() != name), "the bed already has a node named {name}");
        let index = state::claim_node_index(&self.id, address::MAX_NODES)?;
        let spec = node::NodeSpec {
            name,
            index,
            netns_name: format!("{NETNS_PREFIX}{}{name}", self.id),
            underlay: &self.underlay,
            existing: nodes,
            cgroup: self.cgroup.join(name),
            cni_socket: cni::agent_socket(&self.cni_dir, name),
            procs: &self.procs,
        };
        let node = Node::create(spec, netns)
            .with_context(|| format!("cannot set up node {name} of bed {}", self.id))?;
        nodes.push(node.clone());
        Ok(node)
    }

    /// Adds pod `name` of Kubernetes namespace `namespace` on `node`, running `weft-cni` for
    /// it as a runtime would. Pod names need not be unique.
    pub fn pod(&self, node: &Node, namespace: &str, name: &str) -> Result<Pod> {
        self.make_pod(node, namespace, name, None)
    }

    /// Like [`TestBed::pod`], with the UID the test chose: for a pod the control plane
    /// knows before it runs.
    pub fn pod_with_uid(&self, node: &Node, namespace: &str, name: &str, uid: &str) -> Result<Pod> {
        self.make_pod(node, namespace, name, Some(uid))
    }

    /// The addresses the next `count` pods made on `node` get, in the order they are made.
    pub fn next_pod_ips(&self, node: &Node, count: u8) -> Vec<Ipv4Addr> {
        let on_node = self.topology().pods.iter().filter(|p| p.node_name() == node.name()).count();
        (0..count)
            .filter_map(|i| u8::try_from(on_node + usize::from(i)).ok())
            .map(|n| address::pod_ip(node.index(), n))
            .collect()
    }

    /// A bare network namespace `wb<id>_<label>` with only `lo` up, that no pod owns (e.g. a
    /// rogue one for a test to fill); removed with the bed.
    pub fn bare_netns(&self, label: &str) -> Result<BareNetns> {
        ensure!(
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric()),
            "netns label {label:?} must be letters and digits"
        );
        let name = format!("{NETNS_PREFIX}{}_{label}", self.id);
        let netns = Netns::create(&name)?;
        self.topology().netns.push(name);
        netns.ip_batch(&["link set lo up"])?;
        Ok(BareNetns { netns })
    }

    fn make_pod(&self, node: &Node, namespace: &str, name: &str, uid: Option<&str>) -> Result<Pod> {
        validate_dns_label("namespace", namespace)?;
        validate_dns_label("pod name", name)?;
        let mut topology = self.topology();
        ensure!(
            topology.nodes.iter().any(|n| n.netns_name() == node.netns_name()),
            "node {} is not part of bed {}",
            node.name(),
            self.id
        );
        let on_node = topology.pods.iter().filter(|p| p.node_name() == node.name()).count();
        let n = u8::try_from(on_node)
            .ok()
            .filter(|&n| n < address::MAX_PODS_PER_NODE)
            .with_context(|| format!("node {} already holds the most pods it can", node.name()))?;
        let j = topology.pods.len() + 1;
        let spec = pod::PodSpec {
            name,
            namespace,
            uid,
            node,
            ip: address::pod_ip(node.index(), n),
            netns_name: format!("{NETNS_PREFIX}{}p{j}", self.id),
            host_veth: format!("vp{j}"),
            procs: &self.procs,
        };
        let pod = Pod::create(spec, &mut topology.netns)
            .with_context(|| format!("cannot set up pod {namespace}/{name} on node {}", node.name()))?;
        topology.pods.push(pod.clone());
        Ok(pod)
    }

    /// Registers a directory to `rm -rf` when the bed goes (e.g. the agent's bpffs pin
    /// directory). It is recorded in the bed's state file, so a sweep removes it too.
    pub fn register_cleanup_dir(&self, path: impl Into<PathBuf>) -> Result<()> {
        let path = path.into();
        ensure!(path.is_absolute(), "cleanup directory {} is not absolute", path.display());
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.cleanup_dirs.push(path);
        state.save()
    }

    /// Every node and pod with its addresses, and the command to step into each namespace.
    pub fn describe(&self) -> String {
        let topology = self.topology();
        let mut text = format!(
            "weft test bed {} (test {}), cgroup {}\n  underlay {} (bridge br0)\n    nsenter --net={} bash\n",
            self.id,
            self.test_name,
            self.cgroup.display(),
            self.underlay.name(),
            self.underlay.path().display(),
        );
        for node in &topology.nodes {
            let (cidr, len) = node.pod_cidr();
            text.push_str(&format!(
                "  node {} {} pods {cidr}/{len} netns {} cgroup {}\n    nsenter --net={} bash\n",
                node.name(),
                node.ip(),
                node.netns_name(),
                node.cgroup_path().display(),
                node.netns_path().display(),
            ));
            for pod in topology.pods.iter().filter(|p| p.node_name() == node.name()) {
                text.push_str(&format!(
                    "    pod {} {} netns {} (veth {} on the node) namespace {} uid {}\n      nsenter --net={} bash\n",
                    pod.name(),
                    pod.ip(),
                    pod.netns_name(),
                    pod.host_veth(),
                    pod.namespace(),
                    pod.uid(),
                    pod.netns_path().display(),
                ));
            }
        }
        text
    }

    /// Removes the leftovers of beds whose owning process has died (namespaces, cgroups,
    /// registered directories and the processes still in them), and of any `wb<id>…`
    /// namespace, `weft-test-<id>` cgroup or CNI socket directory that no bed claims. Returns how many beds it
    /// removed. Safe while other test processes run their own beds.
    pub fn sweep_stale() -> Result<usize> {
        // Listed before the state files are read: a bed writes its state file before it
        // makes any namespace, so whatever is listed here and then has no state file is
        // not a bed being built right now.
        let netns_names = netns::list_names();
        let cgroup_root = cgroup::cgroup2_mount()?;
        let cgroup_ids: Vec<String> = std::fs::read_dir(&cgroup_root)
            .with_context(|| format!("cannot list {}", cgroup_root.display()))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| name.strip_prefix(CGROUP_PREFIX).map(str::to_owned))
            .collect();
        let states = BedState::read_all();
        let claimed: Vec<String> = states.iter().map(|state| state.id.clone()).collect();

        let mut stale: Vec<(String, Vec<PathBuf>, Option<BedState>)> = states
            .into_iter()
            .filter(|state| !state.owner_alive())
            .map(|state| (state.id.clone(), state.cleanup_dirs.clone(), Some(state)))
            .collect();
        let cni_ids: Vec<String> = std::fs::read_dir(CNI_RUN_DIR)
            .map(|dir| dir.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        let orphan_ids = netns_names
            .iter()
            .filter_map(|name| bed_id_of_netns(name))
            .chain(cgroup_ids.iter().filter(|id| is_bed_id(id)).cloned())
            .chain(cni_ids.iter().filter(|id| is_bed_id(id)).cloned());
        for id in orphan_ids {
            if !claimed.contains(&id) && !stale.iter().any(|(s, _, _)| *s == id) {
                stale.push((id, Vec::new(), None));
            }
        }

        for (id, dirs, state) in &stale {
            let prefix = format!("{NETNS_PREFIX}{id}");
            let cgroup = cgroup_root.join(format!("{CGROUP_PREFIX}{id}"));
            Leftovers {
                who: format!("weft test bed {id} (stale)"),
                netns: netns_names.iter().filter(|n| n.starts_with(&prefix)).cloned().collect(),
                cgroup: cgroup.exists().then_some(cgroup),
                dirs: dirs.iter().cloned().chain([Path::new(CNI_RUN_DIR).join(id)]).collect(),
            }
            .remove();
            state::release_node_indexes(|owner| owner == id);
            if let Some(state) = state
                && let Err(err) = state.remove()
            {
                eprintln!("weft test bed {id} (stale): {err:#}");
            }
        }
        Ok(stale.len())
    }

    fn topology(&self) -> MutexGuard<'_, Topology> {
        self.topology.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if std::thread::panicking() {
            eprintln!("\n{}", self.describe());
            let report = self.procs.report(20);
            if !report.is_empty() {
                eprintln!("processes of the bed, with their last output:\n{report}");
            }
            if std::env::var_os(KEEP_ON_FAILURE_ENV).is_some() {
                eprintln!(
                    "weft test bed {}: kept, processes included, because {KEEP_ON_FAILURE_ENV} \
                     is set; the next test run removes it (TestBed::sweep_stale)",
                    self.id
                );
                return;
            }
            eprintln!(
                "weft test bed {}: removing it now; rerun with {KEEP_ON_FAILURE_ENV}=1 to keep \
                 it and step in with the nsenter lines above",
                self.id
            );
        }
        self.procs.kill_all();
        let topology = self.topology();
        // Reaped before the cgroups go: a killed pause process is gone from its cgroup only
        // once it has been waited for.
        drop(topology.pods.iter().filter_map(Pod::take_pause).collect::<Vec<_>>());
        Leftovers {
            who: format!("weft test bed {}", self.id),
            netns: topology.netns.clone(),
            cgroup: Some(self.cgroup.clone()),
            dirs: state.cleanup_dirs.clone(),
        }
        .remove();
        state::release_node_indexes(|owner| owner == self.id);
        if let Err(err) = state.remove() {
            eprintln!("weft test bed {}: {err:#}", self.id);
        }
    }
}

impl std::fmt::Debug for TestBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A network namespace of the bed that is neither a node nor a pod.
#[derive(Debug, Clone)]
pub struct BareNetns {
    netns: Netns,
}

impl BareNetns {
    pub fn name(&self) -> &str {
        self.netns.name()
    }

    pub fn path(&self) -> PathBuf {
        self.netns.path()
    }

    /// Runs `ip` commands (without the leading `ip`) inside it.
    pub fn ip_batch<S: AsRef<str>>(&self, commands: &[S]) -> Result<()> {
        self.netns.ip_batch(commands)
    }

    /// Runs `f` on a thread inside it.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        self.netns.run(f)
    }
}

/// Picks a free bed id and writes its state file. The id is a hash of the test name, this
/// process and a counter, so parallel tests in one process and in several get different
/// ids; the exclusive state file settles the rare collision.
fn reserve_id(test_name: &str) -> Result<BedState> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..64 {
        let mut hasher = DefaultHasher::new();
        test_name.hash(&mut hasher);
        std::process::id().hash(&mut hasher);
        COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut hasher);
        SystemTime::now().hash(&mut hasher);
        let id = format!("{:06x}", hasher.finish() & 0xff_ffff);
        let state = BedState::new_owned(&id, test_name)?;
        if state.reserve()? {
            return Ok(state);
        }
    }
    bail!("no free test bed id after 64 tries: are there stale files in {}?", state::STATE_DIR)
}

fn validate_node_name(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "node name {name:?} must be letters, digits and '-'"
    );
    let clashes_with_pods =
        name.strip_prefix('p').is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()));
    ensure!(
        name != "u" && !clashes_with_pods,
        "node name {name:?} clashes with the bed's underlay (u) or pod (p<n>) namespace names"
    );
    Ok(())
}

/// Kubernetes' rule for namespace names (RFC 1123 label), which also keeps `;` and `=` out
/// of the plugin's `CNI_ARGS`. Pod names follow it in the bed too.
fn validate_dns_label(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    ensure!(ok, "{what} {name:?} must be lowercase letters, digits and '-' (an RFC 1123 label)");
    Ok(())
}

fn is_bed_id(id: &str) -> bool {
    id.len() == 6 && id.chars().all(|c| c.is_ascii_hexdigit())
}

/// The bed id in a namespace name like `wb3fa2c1n1`, if it is one of ours.
fn bed_id_of_netns(name: &str) -> Option<String> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let id = rest.get(..6)?;
    (is_bed_id(id) && rest.len() > 6).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_that_clash_with_bed_namespaces_are_refused() {
        assert!(validate_node_name("n1").is_ok());
        assert!(validate_node_name("worker-2").is_ok());
        assert!(validate_node_name("u").is_err());
        assert!(validate_node_name("p3").is_err());
        assert!(validate_node_name("").is_err());
        assert!(validate_node_name("a b").is_err());
    }

    #[test]
    fn namespaces_and_pod_names_are_dns_labels() {
        assert!(validate_dns_label("namespace", "bookinfo").is_ok());
        assert!(validate_dns_label("pod name", "reviews-v1").is_ok());
        for bad in ["", "Shop", "a;b", "x=y", "-a", "a-", &"a".repeat(64)] {
            assert!(validate_dns_label("namespace", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bed_ids_are_read_back_from_namespace_names() {
        assert_eq!(bed_id_of_netns("wb3fa2c1n1").as_deref(), Some("3fa2c1"));
        assert_eq!(bed_id_of_netns("wb3fa2c1u").as_deref(), Some("3fa2c1"));
        assert_eq!(bed_id_of_netns("wb3fa2c1"), None);
        assert_eq!(bed_id_of_netns("wbzzzzzzn1"), None);
        assert_eq!(bed_id_of_netns("other"), None);
    }
}
