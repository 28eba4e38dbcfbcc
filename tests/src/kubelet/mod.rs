//! A kubelet for the test bed: runs a Kubernetes pod spec's containers in a bed pod the way
//! a kubelet and a container runtime would, so that what a controller or a chart generates
//! (a Deployment's pod template, a DaemonSet's) is run as written, not re-typed by a test.
//!
//! For each container of a [`PodSpec`] (init containers first, each to completion):
//!
//! - the program: `command` + `args` as given, `$(VAR)` expanded from the container's
//!   environment; without `command`, the image's entrypoint. Images are not pulled: an
//!   image is one of the repository's binaries, by the one table in `image.rs` ([`entrypoint`]);
//! - the environment (`env.rs`): plain values, the downward API (`fieldRef`:
//!   metadata.name/namespace/uid/labels/annotations, spec.nodeName,
//!   spec.serviceAccountName, status.podIP(s)/hostIP(s); `resourceFieldRef`), ConfigMap
//!   and Secret keys and `envFrom`, read from the fake API server;
//! - the volumes (`volumes.rs`): configMap and secret (files from the fake API server),
//!   projected serviceAccountToken (a token the fake API server's TokenReview accepts for
//!   the pod's service account, bound to the pod, for the projection's audience) and
//!   configMap sources, emptyDir, and hostPath as the test maps it onto the bed node;
//! - a root filesystem of its own (`rootfs.rs`): a private mount namespace holding a tmpfs
//!   root with the host's system directories bound in read-only, the binary at its image
//!   path, `/etc/hosts` (the pod's names, and the cluster DNS names the test gives), and
//!   every volume at its container's mountPath; it runs as the securityContext's user and
//!   group, the root read-only when it says so. Nothing is mounted or written outside the
//!   pod's temporary directory, and the mounts end with the container's process.
//!
//! [`RunningPod::wait_ready`] probes like the kubelet (`probe.rs`): the startupProbe, then
//! the readinessProbe (httpGet or tcpSocket on the pod's IP, from the node). `replicaset.rs`
//! plays the controllers before the kubelet: a Deployment's ReplicaSet and Pod on the fake
//! API server, scheduled to a node.

mod env;
mod image;
mod probe;
mod replicaset;
mod rootfs;
mod volumes;

pub use image::entrypoint;
pub use replicaset::{POD_TEMPLATE_HASH, ScheduledPod, report_status, schedule};

use crate::{Node, Pod, Proc, kubeapi::FakeApiServer};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, Pod as PodObject};
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

/// Runs pods' containers on one bed node, against the cluster's API server.
pub struct Kubelet<'a> {
    node: Node,
    api: &'a FakeApiServer,
    /// Names a container resolves in `/etc/hosts`: the cluster DNS names the test stands
    /// in for (e.g. `weftd.istio-system.svc` → the node weftd runs on).
    hosts: Vec<(IpAddr, String)>,
    /// hostPath volumes: the path a manifest names → where that is on the bed node.
    host_paths: BTreeMap<String, PathBuf>,
}

impl<'a> Kubelet<'a> {
    pub fn new(node: &Node, api: &'a FakeApiServer) -> Kubelet<'a> {
        Kubelet { node: node.clone(), api, hosts: Vec::new(), host_paths: BTreeMap::new() }
    }

    /// Resolves `name` to `ip` in the containers (in place of cluster DNS and a Service).
    pub fn with_host(mut self, ip: IpAddr, name: &str) -> Self {
        self.hosts.push((ip, name.to_owned()));
        self
    }

    /// Maps a hostPath volume's `path` onto `on_node`, this bed node's copy of it.
    pub fn with_host_path(mut self, path: &str, on_node: PathBuf) -> Self {
        self.host_paths.insert(path.to_owned(), on_node);
        self
    }

    /// Starts `object` (a Pod as the API server holds it: metadata, spec) in the bed pod
    /// `sandbox`, whose network namespace, cgroup and IP it gets: the init containers run
    /// to completion first, then every container starts. Fails with the container's output
    /// when one cannot start.
    pub fn start(&self, sandbox: &Pod, object: &PodObject) -> Result<RunningPod> {
        let spec = object.spec.as_ref().context("the Pod has no spec")?;
        let pod_name = object.metadata.name.as_deref().context("the Pod has no name")?;
        if pod_name != sandbox.name() || object.metadata.namespace.as_deref() != Some(sandbox.namespace()) {
            bail!(
                "Pod {:?}/{pod_name} cannot run in bed pod {}/{}: the names must agree (the agent checks them)",
                object.metadata.namespace,
                sandbox.namespace(),
                sandbox.name()
            );
        }
        let dir =
            tempfile::Builder::new().prefix("weft-kubelet-").tempdir().context("the pod's directory")?;
        let context = env::PodContext { object, pod_ip: sandbox.ip().into(), host_ip: self.node.ip().into() };
        let mounts = volumes::materialize(self.api, object, &dir.path().join("volumes"), &self.host_paths)
            .with_context(|| format!("the volumes of pod {pod_name}"))?;
        let hosts = self.etc_hosts(sandbox, dir.path())?;
        let mut running =
            RunningPod { containers: Vec::new(), node: self.node.clone(), pod_ip: sandbox.ip().into(), dir };
        for init in spec.init_containers.iter().flatten() {
            let mut proc = self.start_container(sandbox, &context, init, &mounts, &hosts, &running)?;
            let status = proc.wait_timeout(Duration::from_secs(120))?;
            match status {
                Some(s) if s.success() => {}
                other => bail!(
                    "init container {} of pod {pod_name} ended with {other:?}:\n{}",
                    init.name,
                    proc.stderr_text()
                ),
            }
        }
        for container in &spec.containers {
            let proc = self.start_container(sandbox, &context, container, &mounts, &hosts, &running)?;
            running.containers.push(RunningContainer { spec: container.clone(), proc });
        }
        Ok(running)
    }

    fn start_container(
        &self,
        sandbox: &Pod,
        context: &env::PodContext<'_>,
        container: &Container,
        mounts: &volumes::Volumes,
        hosts: &std::path::Path,
        running: &RunningPod,
    ) -> Result<Proc> {
        let what = format!("container {} of pod {}", container.name, sandbox.name());
        let environment =
            env::resolve(self.api, context, container).with_context(|| format!("{what}: env"))?;
        let (program, args) = image::program(container, &environment).with_context(|| what.clone())?;
        let root = running.dir.path().join("roots").join(&container.name);
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let user = rootfs::User::of(context.object, container);
        let layout = rootfs::Layout {
            root: &root,
            program: &program,
            hosts,
            mounts: volumes::mounts_of(container, mounts).with_context(|| what.clone())?,
            read_only_root: container
                .security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem)
                .unwrap_or(false),
            user,
            working_dir: container.working_dir.as_deref(),
        };
        let mut cmd = rootfs::command(&layout, &args).with_context(|| what.clone())?;
        cmd.env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOSTNAME", sandbox.name())
            .envs(environment);
        sandbox.spawn(cmd).with_context(|| format!("starting {what}"))
    }

    /// The pod's `/etc/hosts`, as the kubelet writes it: localhost, the pod's own name on
    /// its IP, then the test's cluster names.
    fn etc_hosts(&self, sandbox: &Pod, dir: &std::path::Path) -> Result<PathBuf> {
        let mut text = format!(
            "# Kubernetes-managed hosts file (weft-tests' kubelet).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
            sandbox.ip(),
            sandbox.name()
        );
        for (ip, name) in &self.hosts {
            text.push_str(&format!("{ip}\t{name}\n"));
        }
        let path = dir.join("etc-hosts");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        rootfs::make_readable(&path)?;
        Ok(path)
    }
}

/// A container the kubelet started.
pub struct RunningContainer {
    pub spec: Container,
    pub proc: Proc,
}

/// A pod's running containers; dropping it kills them (their mounts go with them) and
/// removes the pod's directory.
pub struct RunningPod {
    /// Declared first: the processes die before their files are removed.
    pub containers: Vec<RunningContainer>,
    node: Node,
    pod_ip: IpAddr,
    dir: tempfile::TempDir,
}

impl RunningPod {
    /// Waits until every container is ready as its probes say (a container without probes
    /// is ready once started); fails with the container's output if it exits first or
    /// `patience` runs out.
    pub fn wait_ready(&mut self, patience: Duration) -> Result<()> {
        let deadline = Instant::now() + patience;
        for c in &mut self.containers {
            if let Err(e) = probe::wait_ready(&self.node, self.pod_ip, c, deadline) {
                bail!("container {}: {e:#}\n{}", c.spec.name, c.proc.stderr_text());
            }
        }
        Ok(())
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Option<&RunningContainer> {
        self.containers.iter().find(|c| c.spec.name == name)
    }

    /// Everything each container printed on stderr, for failure messages.
    pub fn stderr(&self) -> String {
        self.containers
            .iter()
            .map(|c| format!("--- {} ---\n{}", c.spec.name, c.proc.stderr_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
