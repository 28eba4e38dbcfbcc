//! The per-bed state file under /run/weft-testbed: who owns a bed, so that a later run can
//! tell a live bed of a parallel test process from the leftovers of one that was killed.
//!
//! The file is created (exclusively) before any namespace or cgroup of the bed and removed
//! after all of them, so a `wb<id>…` namespace without a live owner is always a leftover.
//!
//! Format, one `key=value` per line:
//! ```text
//! pid=1234
//! start=5678        (the owner's start time, from /proc/PID/stat, guards against pid reuse)
//! test=echo_across_nodes
//! dir=/sys/fs/bpf/weft-3fa2c1     (zero or more directories to remove with the bed)
//! ```

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the state files live: tmpfs, so a reboot (which removes every bed) clears it too.
pub const STATE_DIR: &str = "/run/weft-testbed";

/// What a state file records about one bed.
#[derive(Debug, Default)]
pub struct BedState {
    pub id: String,
    pub pid: u32,
    pub start: u64,
    pub test: String,
    pub cleanup_dirs: Vec<PathBuf>,
}

impl BedState {
    /// The state of a new bed owned by this process.
    pub fn new_owned(id: &str, test: &str) -> Result<BedState> {
        let pid = std::process::id();
        let start = start_time(pid).context("cannot read this process's start time")?;
        Ok(BedState { id: id.to_owned(), pid, start, test: test.to_owned(), cleanup_dirs: vec![] })
    }

    /// Writes the state file for a new bed; `Ok(false)` if a bed with this id already has
    /// one (the caller picks another id).
    pub fn reserve(&self) -> Result<bool> {
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("cannot create {STATE_DIR}"))?;
        let path = self.path();
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(self.render().as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(true)
            }
            Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(err).with_context(|| format!("cannot create {}", path.display())),
        }
    }

    /// Rewrites the state file after a change (a new cleanup directory).
    pub fn save(&self) -> Result<()> {
        let path = self.path();
        std::fs::write(&path, self.render()).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn remove(&self) -> Result<()> {
        let path = self.path();
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() != ErrorKind::NotFound => {
                Err(err).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Whether the process that created this bed is still running.
    pub fn owner_alive(&self) -> bool {
        start_time(self.pid).is_ok_and(|start| start == self.start)
    }

    /// Reads every state file; unreadable ones are skipped (they are being written).
    pub fn read_all() -> Vec<BedState> {
        let Ok(entries) = std::fs::read_dir(STATE_DIR) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let id = entry.file_name().into_string().ok()?;
                let text = std::fs::read_to_string(entry.path()).ok()?;
                Some(BedState::parse(&id, &text))
            })
            .collect()
    }

    fn parse(id: &str, text: &str) -> BedState {
        let mut state = BedState { id: id.to_owned(), ..BedState::default() };
        for (key, value) in text.lines().filter_map(|line| line.split_once('=')) {
            match key {
                "pid" => state.pid = value.parse().unwrap_or(0),
                "start" => state.start = value.parse().unwrap_or(0),
                "test" => state.test = value.to_owned(),
                "dir" => state.cleanup_dirs.push(PathBuf::from(value)),
                _ => {}
            }
        }
        state
    }

    fn render(&self) -> String {
        let mut text = format!("pid={}\nstart={}\ntest={}\n", self.pid, self.start, self.test);
        for dir in &self.cleanup_dirs {
            text.push_str(&format!("dir={}\n", dir.display()));
        }
        text
    }

    fn path(&self) -> PathBuf {
        Path::new(STATE_DIR).join(&self.id)
    }
}

/// The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    let after_comm = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let start = after_comm.split_whitespace().nth(19).context("malformed /proc/PID/stat")?.parse()?;
    Ok(start)
}

/// Where node indexes are claimed, one file per index holding the owning bed's id.
const NODE_INDEX_DIR: &str = "/run/weft-testbed-nodes";

/// Claims a node index (1..=MAX_NODES) no other bed on this machine holds.
///
/// Indexes are machine-wide, not per bed, because a node's index picks its pod CIDR: two
/// beds running at once must never both have a pod at the same address. An agent finds a
/// pod's network namespace by its IP, and with a duplicate it would enroll another
/// test's pod. Claims of beds that no longer exist are taken back.
pub fn claim_node_index(bed_id: &str, max: u8) -> Result<u8> {
    std::fs::create_dir_all(NODE_INDEX_DIR).with_context(|| format!("cannot create {NODE_INDEX_DIR}"))?;
    for attempt in 0..2 {
        for k in 1..=max {
            let path = Path::new(NODE_INDEX_DIR).join(k.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(bed_id.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(k);
                }
                Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err).with_context(|| format!("cannot create {}", path.display())),
            }
        }
        if attempt == 0 {
            release_node_indexes(|owner| !Path::new(STATE_DIR).join(owner).exists());
        }
    }
    anyhow::bail!("all {max} node indexes of this machine are claimed by running test beds")
}

/// Removes the claims whose owning bed id satisfies `pred`.
pub fn release_node_indexes(pred: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(NODE_INDEX_DIR) else { return };
    for entry in entries.flatten() {
        if std::fs::read_to_string(entry.path()).is_ok_and(|owner| pred(owner.trim())) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_its_text_form() {
        let state = BedState {
            id: "3fa2c1".into(),
            pid: 42,
            start: 7,
            test: "echo".into(),
            cleanup_dirs: vec!["/sys/fs/bpf/x".into()],
        };
        let parsed = BedState::parse("3fa2c1", &state.render());
        assert_eq!(parsed.pid, 42);
        assert_eq!(parsed.start, 7);
        assert_eq!(parsed.test, "echo");
        assert_eq!(parsed.cleanup_dirs, vec![PathBuf::from("/sys/fs/bpf/x")]);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let mut state = BedState::new_owned("000000", "t").unwrap();
        assert!(state.owner_alive());
        state.start += 1;
        assert!(!state.owner_alive());
    }
}
