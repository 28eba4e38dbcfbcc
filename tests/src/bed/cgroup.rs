//! cgroup v2 directories for beds and nodes: finding the mount, creating, emptying and
//! removing them.
//!
//! A node's pods run in the node's cgroup because that is where the agent attaches its eBPF
//! cgroup programs (connect4, sockops, …); the programs then see exactly the pods' sockets.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long to keep retrying `rmdir` on a cgroup that a just-killed process still occupies.
const REMOVE_RETRY_FOR: Duration = Duration::from_secs(3);

/// Finds where the cgroup v2 hierarchy is mounted (e.g. /sys/fs/cgroup on a pure v2 host,
/// /sys/fs/cgroup/unified on a hybrid one) by reading /proc/mounts.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .next()
        .context(
            "no cgroup2 file system in /proc/mounts: mount one with \
             `mount -t cgroup2 none /sys/fs/cgroup/unified` (the eBPF cgroup programs need it)",
        )
}

/// Creates one cgroup directory (its parent must exist).
pub fn create(path: &Path) -> Result<()> {
    std::fs::create_dir(path).with_context(|| format!("cannot create cgroup {}", path.display()))
}

/// Kills every process in the cgroup tree at `path` (SIGKILL through `cgroup.kill`, or
/// through `cgroup.procs` on kernels older than 5.14).
pub fn kill_all(path: &Path) {
    if !path.exists() {
        return;
    }
    if std::fs::write(path.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in procs_in_tree(path) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Pids of the processes in the cgroup at `path` and all its descendants.
pub fn procs_in_tree(path: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    for child in child_dirs(path) {
        pids.extend(procs_in_tree(&child));
    }
    pids
}

/// Removes the cgroup at `path` and its descendants, children first. A cgroup cannot be
/// removed while a process is in it, and a process killed a moment ago may still be exiting,
/// so `EBUSY` is retried for a few seconds.
pub fn remove_tree(path: &Path) -> Result<()> {
    for child in child_dirs(path) {
        remove_tree(&child)?;
    }
    let deadline = Instant::now() + REMOVE_RETRY_FOR;
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) if err.kind() == ErrorKind::ResourceBusy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => {
                let procs = procs_in_tree(path);
                bail!("cannot remove cgroup {}: {err} (processes still in it: {procs:?})", path.display());
            }
        }
    }
}

fn child_dirs(path: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect()
}
