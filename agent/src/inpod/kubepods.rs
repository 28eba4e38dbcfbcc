//! Finding a running pod's network namespace from its UID, through the kubelet's cgroups.
//!
//! The kubelet puts every pod's containers in a cgroup named after the pod's UID, below
//! the kubepods cgroup, and only the kubelet (root) can create cgroups there. So "a process
//! in the pod's cgroup" is something no pod can fake for another pod, unlike "a namespace
//! holding the pod's address". The two layouts, by the kubelet's cgroup driver:
//!
//! ```text
//! cgroupfs:  <root>/pod<uid>                       (Guaranteed QoS)
//!            <root>/burstable/pod<uid>
//!            <root>/besteffort/pod<uid>/<container>/cgroup.procs
//! systemd:   kubepods.slice/kubepods-pod<uid_>.slice
//!            kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice
//!            kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope
//! ```
//!
//! (`uid_` is the UID with `-` spelled `_`, as systemd unit names need.) The lookup reads
//! at most three directories by name and the pod's own few processes, so its cost does not
//! depend on how many processes or namespaces the node holds. istio-cni reaches the same
//! answer by reading every process's `/proc/<pid>/cgroup` (`podcgroupns_linux.go`); that
//! walks the whole node, which is what this avoids.
//!
//! Which process: the oldest one in the pod (by start time), as istio-cni does. That is
//! the sandbox's pause process, which holds the pod's namespace for the pod's whole life;
//! a container that made a namespace of its own does not get to speak for the pod. A
//! process may exit between being listed and being opened, and its pid may even be reused:
//! each process is opened through its `/proc/<pid>` directory, which stays bound to that
//! one process (opening anything through it fails once the process is gone), and it is
//! checked to still be listed in the pod's cgroup after its namespace was opened.

use crate::netns::{NetNs, NetNsError};
use nix::{
    fcntl::{OFlag, openat},
    sys::stat::Mode,
};
use std::{
    fs::File,
    io::{self, Read},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

/// The kubelet's cgroup directory names, by cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// `--cgroup-driver=cgroupfs`: plain directory names.
    Cgroupfs,
    /// `--cgroup-driver=systemd`: slices named after their parents.
    Systemd,
}

/// How deep below the pod's cgroup processes are looked for: the container cgroups are
/// the pod cgroup's children; a runtime may nest one more level.
const MAX_DEPTH: usize = 2;

/// The kubepods cgroup of this node.
#[derive(Debug, Clone)]
pub struct Kubepods {
    root: PathBuf,
    driver: Driver,
    /// For the systemd driver: the root slice's name without `.slice` (`kubepods`, or
    /// `custom-kubepods` under a kubelet `--cgroup-root`), which prefixes every child.
    slice_prefix: String,
}

/// Why a pod's namespace was not found through its cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupLookupError {
    /// No cgroup by the pod's UID: the pod does not run on this node (yet), or
    /// `--kubepods-cgroup` names the wrong directory.
    #[error("no cgroup for pod UID {uid} under {root} (looked for {tried})")]
    NoPodCgroup { uid: String, root: PathBuf, tried: String },
    /// The cgroup exists but holds no live process (the sandbox is starting or ending).
    #[error("the pod's cgroup {cgroup} holds no running process")]
    NoProcess { cgroup: PathBuf },
    /// A process was found but its namespace could not be opened.
    #[error(transparent)]
    NetNs(#[from] NetNsError),
}

/// A pod's namespace as found through its cgroup.
#[derive(Debug)]
pub struct FoundInCgroup {
    pub netns: NetNs,
    /// The process whose namespace it is.
    pub pid: u32,
    /// The cgroup that lists the process: the pod's, or one of its containers'.
    pub cgroup: PathBuf,
    /// Processes looked at: the pod's, never more.
    pub processes_examined: usize,
}

impl Kubepods {
    /// The kubepods cgroup at `root`; the driver is read from its name (`*.slice` is
    /// systemd's).
    pub fn new(root: impl Into<PathBuf>) -> Kubepods {
        let root = root.into();
        let name = root.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let (driver, slice_prefix) = match name.strip_suffix(".slice") {
            Some(stem) => (Driver::Systemd, stem.to_owned()),
            None => (Driver::Cgroupfs, String::new()),
        };
        Kubepods { root, driver, slice_prefix }
    }

    /// The kubelet's default kubepods cgroup under the cgroup v2 mount, if there is one:
    /// `kubepods.slice` (systemd driver, the common case) or `kubepods` (cgroupfs).
    pub fn find_default(cgroup2_mount: &Path) -> Option<PathBuf> {
        ["kubepods.slice", "kubepods"].iter().map(|name| cgroup2_mount.join(name)).find(|p| p.is_dir())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Where the pod's cgroup is, by QoS class (Guaranteed, Burstable, BestEffort). `uid`
    /// must have been checked with [`weft_model::is_pod_uid`]: it becomes a path.
    pub fn pod_cgroup_candidates(&self, uid: &str) -> [PathBuf; 3] {
        match self.driver {
            Driver::Cgroupfs => {
                let dir = format!("pod{uid}");
                [
                    self.root.join(&dir),
                    self.root.join("burstable").join(&dir),
                    self.root.join("besteffort").join(&dir),
                ]
            }
            Driver::Systemd => {
                let p = &self.slice_prefix;
                let unit = uid.replace('-', "_");
                [
                    self.root.join(format!("{p}-pod{unit}.slice")),
                    self.root
                        .join(format!("{p}-burstable.slice"))
                        .join(format!("{p}-burstable-pod{unit}.slice")),
                    self.root
                        .join(format!("{p}-besteffort.slice"))
                        .join(format!("{p}-besteffort-pod{unit}.slice")),
                ]
            }
        }
    }

    /// The pod's cgroup, if it exists on this node.
    pub fn pod_cgroup(&self, uid: &str) -> Option<PathBuf> {
        self.pod_cgroup_candidates(uid).into_iter().find(|p| p.is_dir())
    }

    /// Opens the network namespace of the pod's oldest live process.
    pub fn open_pod_netns(&self, uid: &str) -> Result<FoundInCgroup, CgroupLookupError> {
        let cgroup = self.pod_cgroup(uid).ok_or_else(|| CgroupLookupError::NoPodCgroup {
            uid: uid.to_owned(),
            root: self.root.clone(),
            tried: self
                .pod_cgroup_candidates(uid)
                .iter()
                .filter_map(|p| p.strip_prefix(&self.root).ok())
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let mut members = Vec::new();
        collect_members(&cgroup, 0, &mut members);
        let examined = members.len();

        let mut candidates: Vec<Candidate> = members.into_iter().filter_map(Candidate::open).collect();
        candidates.sort_by_key(|c| c.start_time);
        for candidate in candidates {
            if let Some(netns) = candidate.netns()? {
                return Ok(FoundInCgroup {
                    netns,
                    pid: candidate.pid,
                    cgroup: candidate.cgroup,
                    processes_examined: examined,
                });
            }
        }
        Err(CgroupLookupError::NoProcess { cgroup })
    }
}

/// A pid as listed in one cgroup's `cgroup.procs`, with that cgroup.
struct Member {
    pid: u32,
    cgroup: PathBuf,
}

/// The processes of `cgroup` and of its descendants down to [`MAX_DEPTH`].
fn collect_members(cgroup: &Path, depth: usize, out: &mut Vec<Member>) {
    out.extend(read_procs(cgroup).into_iter().map(|pid| Member { pid, cgroup: cgroup.to_owned() }));
    if depth == MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(cgroup) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_members(&entry.path(), depth + 1, out);
        }
    }
}

/// The pids in a cgroup's `cgroup.procs` (empty if the cgroup went away meanwhile).
fn read_procs(cgroup: &Path) -> Vec<u32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// A live process of the pod, held by its `/proc/<pid>` directory.
struct Candidate {
    pid: u32,
    cgroup: PathBuf,
    proc_dir: OwnedFd,
    /// Clock ticks since boot when it started (`/proc/<pid>/stat`, field 22).
    start_time: u64,
}

impl Candidate {
    /// Opens the process; `None` if it has already exited.
    fn open(member: Member) -> Option<Candidate> {
        let proc_dir: OwnedFd = File::open(format!("/proc/{}", member.pid)).ok()?.into();
        let stat = read_at(&proc_dir, "stat").ok()?;
        Some(Candidate { pid: member.pid, cgroup: member.cgroup, start_time: start_time(&stat)?, proc_dir })
    }

    /// The process's network namespace, or `None` if the process exited (or left the
    /// pod's cgroup) meanwhile.
    fn netns(&self) -> Result<Option<NetNs>, NetNsError> {
        let path = format!("/proc/{}/ns/net", self.pid);
        let fd = match openat(&self.proc_dir, "ns/net", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            // The process is gone (ESRCH), or a zombie without namespaces (ENOENT).
            Err(nix::Error::ESRCH | nix::Error::ENOENT) => return Ok(None),
            Err(errno) => return Err(NetNsError::Open { path: path.into(), source: errno.into() }),
        };
        // Still ours? If the process is alive now, the pid listed in the pod's cgroup is
        // this process (a pid is not reused while its process lives).
        let still_listed = read_procs(&self.cgroup).contains(&self.pid);
        let still_alive = read_at(&self.proc_dir, "stat").is_ok();
        if !(still_listed && still_alive) {
            return Ok(None);
        }
        NetNs::from_fd(fd, path).map(Some)
    }
}

fn read_at(dir: &OwnedFd, name: &str) -> io::Result<Vec<u8>> {
    let fd = openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut bytes = Vec::new();
    File::from(fd).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn start_time(stat: &[u8]) -> Option<u64> {
    let after_name = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let field = std::str::from_utf8(after_name).ok()?.split_ascii_whitespace().nth(19)?;
    field.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10";

    #[test]
    fn cgroupfs_spelling() {
        let k = Kubepods::new("/sys/fs/cgroup/kubepods");
        assert_eq!(k.driver(), Driver::Cgroupfs);
        assert_eq!(
            k.pod_cgroup_candidates(UID).map(|p| p.display().to_string()),
            [
                "/sys/fs/cgroup/kubepods/pod3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10",
                "/sys/fs/cgroup/kubepods/burstable/pod3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10",
                "/sys/fs/cgroup/kubepods/besteffort/pod3f2c1a9e-0b1d-4c55-9a57-1e0b4f6d2a10",
            ]
        );
    }

    #[test]
    fn systemd_spelling_follows_the_root_slice() {
        let k = Kubepods::new("/sys/fs/cgroup/kubepods.slice");
        assert_eq!(k.driver(), Driver::Systemd);
        assert_eq!(
            k.pod_cgroup_candidates(UID).map(|p| p.display().to_string()),
            [
                "/sys/fs/cgroup/kubepods.slice/kubepods-pod3f2c1a9e_0b1d_4c55_9a57_1e0b4f6d2a10.slice",
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3f2c1a9e_0b1d_4c55_9a57_1e0b4f6d2a10.slice",
                "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f2c1a9e_0b1d_4c55_9a57_1e0b4f6d2a10.slice",
            ]
        );
        // A kubelet --cgroup-root of /custom nests kubepods under custom.slice.
        let k = Kubepods::new("/sys/fs/cgroup/custom.slice/custom-kubepods.slice");
        assert_eq!(
            k.pod_cgroup_candidates(UID)[2].display().to_string(),
            "/sys/fs/cgroup/custom.slice/custom-kubepods.slice/custom-kubepods-besteffort.slice/custom-kubepods-besteffort-pod3f2c1a9e_0b1d_4c55_9a57_1e0b4f6d2a10.slice"
        );
    }

    #[test]
    fn default_root_prefers_the_systemd_slice() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Kubepods::find_default(dir.path()), None);
        std::fs::create_dir(dir.path().join("kubepods")).unwrap();
        assert_eq!(Kubepods::find_default(dir.path()), Some(dir.path().join("kubepods")));
        std::fs::create_dir(dir.path().join("kubepods.slice")).unwrap();
        assert_eq!(Kubepods::find_default(dir.path()), Some(dir.path().join("kubepods.slice")));
    }

    #[test]
    fn a_missing_pod_cgroup_names_what_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        let k = Kubepods::new(dir.path().join("kubepods"));
        let err = k.open_pod_netns(UID).unwrap_err().to_string();
        assert!(err.contains(UID) && err.contains("besteffort/pod3f2c1a9e"), "{err}");
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = b"4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_time(stat), Some(987654));
        assert_eq!(start_time(b"4242 (x) S 1"), None);
        // Our own process: a real stat line parses.
        let own = std::fs::read("/proc/self/stat").unwrap();
        assert!(start_time(&own).is_some());
    }

    #[test]
    fn finds_the_oldest_live_process_of_a_pod_cgroup_layout() {
        // The layout without a cgroup file system: plain directories whose cgroup.procs
        // name this test's process (alive) and a pid that cannot exist.
        let dir = tempfile::tempdir().unwrap();
        let k = Kubepods::new(dir.path().join("kubepods"));
        let pod = dir.path().join(format!("kubepods/besteffort/pod{UID}"));
        std::fs::create_dir_all(pod.join("app")).unwrap();
        std::fs::write(pod.join("cgroup.procs"), "").unwrap();
        let me = std::process::id();
        std::fs::write(pod.join("app/cgroup.procs"), format!("{}\n{me}\n", u32::MAX - 1)).unwrap();
        let found = k.open_pod_netns(UID).unwrap();
        assert_eq!((found.pid, found.processes_examined), (me, 2));
        assert_eq!(found.cgroup, pod.join("app"));
        let own = NetNs::current().unwrap();
        assert_eq!(found.netns.inode(), own.inode(), "this process's namespace");

        std::fs::write(pod.join("app/cgroup.procs"), format!("{}\n", u32::MAX - 1)).unwrap();
        assert!(matches!(k.open_pod_netns(UID), Err(CgroupLookupError::NoProcess { .. })));
    }
}
