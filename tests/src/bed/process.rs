//! Processes started inside a node or pod: spawning them into a namespace and cgroup, the
//! `Proc` handle, and the bed's registry that kills whatever a test leaves running.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::output::Output;

/// How long, after a process exits, to wait for the last of its output to be read.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Every process a bed has started and not yet reaped.
///
/// A pid stays in the registry until its `Proc` has reaped it, and reaping happens under the
/// registry lock, so the bed never signals a pid that has been reused by another process.
#[derive(Default)]
pub struct ProcRegistry {
    procs: Mutex<Vec<Registered>>,
}

struct Registered {
    pid: u32,
    label: String,
    output: Arc<Output>,
}

impl std::fmt::Debug for ProcRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pids: Vec<u32> = self.lock().iter().map(|proc| proc.pid).collect();
        f.debug_struct("ProcRegistry").field("pids", &pids).finish()
    }
}

impl ProcRegistry {
    /// SIGKILLs every process that has not been reaped; returns how many were signalled.
    pub fn kill_all(&self) -> usize {
        let procs = self.lock();
        for proc in procs.iter() {
            let _ = kill(Pid::from_raw(proc.pid as i32), Signal::SIGKILL);
        }
        procs.len()
    }

    /// Label, pid and the tail of the output of each process, for a failure report.
    pub fn report(&self, lines: usize) -> String {
        let mut report = String::new();
        for proc in self.lock().iter() {
            let (out, err) = proc.output.tails(lines);
            report.push_str(&format!("--- {} (pid {})\n", proc.label, proc.pid));
            for line in out {
                report.push_str(&format!("  stdout| {line}\n"));
            }
            for line in err {
                report.push_str(&format!("  stderr| {line}\n"));
            }
        }
        report
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Registered>> {
        self.procs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a spawned process runs.
pub struct Placement<'a> {
    /// Shown in failure reports, e.g. `n1/reviews-v1`.
    pub owner: &'a str,
    /// The network namespace file to enter.
    pub netns: &'a Path,
    /// The cgroup to join, or `None` to stay in the test's own cgroup.
    pub cgroup: Option<&'a Path>,
}

/// Starts `cmd` in the given network namespace (and cgroup), with stdout and stderr captured.
pub fn spawn(mut cmd: Command, place: Placement<'_>, registry: &Arc<ProcRegistry>) -> Result<Proc> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let label = format!("{}: {}", place.owner, program);

    // Opened here, before the fork: the child may only make plain system calls between fork
    // and exec, and `O_CLOEXEC` (std's default) closes both at exec.
    let netns: OwnedFd = File::open(place.netns)
        .with_context(|| format!("cannot open network namespace {}", place.netns.display()))?
        .into();
    let cgroup_procs: Option<OwnedFd> = match place.cgroup {
        Some(dir) => Some(
            OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .with_context(|| format!("cannot open {}/cgroup.procs", dir.display()))?
                .into(),
        ),
        None => None,
    };

    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: the closure only makes two system calls (write, setns) on descriptors opened
    // before the fork; it allocates nothing and takes no locks, so it is safe to run in the
    // forked child of a multi-threaded process.
    unsafe {
        cmd.pre_exec(move || {
            // Joining the cgroup first: writing "0" to cgroup.procs moves the writing process,
            // i.e. this child, so eBPF cgroup programs see every socket it opens.
            if let Some(procs) = &cgroup_procs {
                nix::unistd::write(procs, b"0")?;
            }
            setns(&netns, CloneFlags::CLONE_NEWNET)?;
            Ok(())
        });
    }

    let mut child = cmd.spawn().with_context(|| format!("cannot start {label}"))?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let output = Output::capture(&label, stdout, stderr);
    registry.lock().push(Registered { pid: child.id(), label: label.clone(), output: Arc::clone(&output) });
    Ok(Proc { child, label, output, registry: Arc::clone(registry), status: None })
}

/// A process running in a node or pod. Killed (SIGKILL) and reaped when dropped (unless a
/// test is failing with `WEFT_TESTBED_KEEP` set, which keeps the bed as it is).
pub struct Proc {
    child: Child,
    label: String,
    output: Arc<Output>,
    registry: Arc<ProcRegistry>,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where it runs and what it is, e.g. `n1/reviews-v1: /…/weft-testapp`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sends `signal`; a process that has already been reaped is left alone.
    pub fn kill(&self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        kill(Pid::from_raw(self.pid() as i32), signal)
            .with_context(|| format!("cannot send {signal} to {}", self.label))
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running. Once it
    /// returns `Some`, all the output the process wrote is in `stdout_lines`/`stderr_text`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_reap()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.output.stdout_lines()
    }

    /// All of stderr so far.
    pub fn stderr_text(&self) -> String {
        self.output.stderr_text()
    }

    /// Waits until a stdout line, printed before or after this call, satisfies `pred`, and
    /// returns it. Fails after `timeout`, or as soon as stdout closes without such a line; the
    /// error holds the output so far.
    pub fn wait_for_line(&self, pred: impl FnMut(&str) -> bool, timeout: Duration) -> Result<String> {
        self.output.wait_for_line(&self.label, pred, timeout)
    }

    /// The process's stdin, if the command was given `Stdio::piped()` for it.
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.child.stdin.as_mut()
    }

    /// Closes stdin, so a process reading it (e.g. `weft-testapp hold`) sees EOF.
    pub fn close_stdin(&mut self) {
        self.child.stdin = None;
    }

    fn try_reap(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut registered = self.registry.lock();
        let status = self.child.try_wait().with_context(|| format!("cannot wait for {}", self.label))?;
        if let Some(status) = status {
            self.status = Some(status);
            let pid = self.pid();
            registered.retain(|proc| proc.pid != pid);
            drop(registered);
            self.output.wait_drained(DRAIN_WAIT);
        }
        Ok(status)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if std::thread::panicking() && std::env::var_os(super::KEEP_ON_FAILURE_ENV).is_some() {
            // The bed is kept for a person to inspect; so are the processes in it.
            return;
        }
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        let mut registered = self.registry.lock();
        if let Err(err) = self.child.wait() {
            eprintln!("weft test bed: cannot reap {} (pid {}): {err}", self.label, self.pid());
        }
        let pid = self.pid();
        registered.retain(|proc| proc.pid != pid);
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("label", &self.label)
            .field("pid", &self.pid())
            .field("status", &self.status)
            .finish()
    }
}
