//! Removing what a bed made, shared by `TestBed`'s drop and the sweep of stale beds.
//!
//! Each step logs its failure and goes on: teardown runs in `Drop`, often while a test is
//! already panicking, and a half-removed bed is better than a second panic (which aborts).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{cgroup, netns};

/// How long to wait for processes to leave the bed's namespaces after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(3);

/// Everything one bed may have left on the host.
pub struct Leftovers {
    /// Shown in log lines, e.g. `weft test bed 3fa2c1`.
    pub who: String,
    /// Network namespace names, in creation order (removed in reverse).
    pub netns: Vec<String>,
    /// The bed's cgroup (with the node cgroups below it), if it was created.
    pub cgroup: Option<PathBuf>,
    /// Directories to `rm -rf` (e.g. the agent's bpffs pin directory).
    pub dirs: Vec<PathBuf>,
}

impl Leftovers {
    /// Kills the processes in the bed's cgroup and namespaces, then deletes the namespaces,
    /// the cgroups and the registered directories.
    pub fn remove(&self) {
        self.kill_processes();
        for name in self.netns.iter().rev() {
            if netns::path_of(name).exists()
                && let Err(err) = netns::delete(name)
            {
                eprintln!("{}: {err:#}", self.who);
            }
        }
        if let Some(path) = &self.cgroup
            && let Err(err) = cgroup::remove_tree(path)
        {
            eprintln!("{}: {err:#}", self.who);
        }
        for dir in &self.dirs {
            remove_dir(&self.who, dir);
        }
    }

    /// SIGKILLs every process in the cgroup tree or whose network namespace is one of the
    /// bed's (this also catches grandchildren and processes the test started itself), and
    /// waits for them to be gone.
    fn kill_processes(&self) {
        if let Some(path) = &self.cgroup {
            cgroup::kill_all(path);
        }
        let namespaces: HashSet<(u64, u64)> =
            self.netns.iter().filter_map(|name| netns::identity(&netns::path_of(name)).ok()).collect();
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            let inside = pids_in_namespaces(&namespaces);
            if inside.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                eprintln!("{}: processes {inside:?} survived SIGKILL", self.who);
                return;
            }
            for pid in inside {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Pids (other than this process) whose network namespace is one of `namespaces`. A process
/// that has exited but not been reaped no longer shows a namespace, so it is not listed.
fn pids_in_namespaces(namespaces: &HashSet<(u64, u64)>) -> Vec<u32> {
    if namespaces.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let link = PathBuf::from(format!("/proc/{pid}/ns/net"));
            netns::identity(&link).is_ok_and(|id| namespaces.contains(&id))
        })
        .collect()
}

/// `rm -rf dir`, refusing paths too short to be a directory the bed could have registered
/// (an empty or root path here would be a bug, not something to delete).
fn remove_dir(who: &str, dir: &Path) {
    if !dir.is_absolute() || dir.components().count() < 3 {
        eprintln!("{who}: not removing {}: refusing a path this short", dir.display());
        return;
    }
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("{who}: cannot remove {}: {err}", dir.display());
        }
        _ => {}
    }
}
