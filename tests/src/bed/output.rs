//! The captured stdout and stderr of a spawned process, filled by two reader threads.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Output of one process, shared between its reader threads, its `Proc` and the bed (which
/// prints it when a test fails).
#[derive(Default)]
pub struct Output {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    stdout: Vec<String>,
    stderr: String,
    stdout_closed: bool,
    stderr_closed: bool,
}

impl Output {
    /// Starts the threads that read `stdout` line by line and `stderr` as text.
    pub fn capture(
        label: &str,
        stdout: impl Read + Send + 'static,
        stderr: impl Read + Send + 'static,
    ) -> Arc<Output> {
        let output = Arc::new(Output::default());
        let out = Arc::clone(&output);
        spawn_reader(format!("{label} stdout"), move || out.read_stdout(stdout));
        let err = Arc::clone(&output);
        spawn_reader(format!("{label} stderr"), move || err.read_stderr(stderr));
        output
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.lock().stdout.clone()
    }

    pub fn stderr_text(&self) -> String {
        self.lock().stderr.clone()
    }

    /// Waits until some stdout line (already printed or yet to come) satisfies `pred`.
    /// Fails early when stdout closes without one, since no line can come after that.
    pub fn wait_for_line(
        &self,
        label: &str,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        let mut state = self.lock();
        loop {
            if let Some(line) = state.stdout[seen..].iter().find(|line| pred(line)) {
                return Ok(line.clone());
            }
            seen = state.stdout.len();
            if state.stdout_closed {
                bail!(
                    "{label} closed stdout without printing the expected line\n\
                     stdout:\n{}\nstderr:\n{}",
                    state.stdout.join("\n"),
                    state.stderr
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "{label} printed no matching line within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    state.stdout.join("\n"),
                    state.stderr
                );
            }
            state =
                self.changed.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Waits (up to `timeout`) until both pipes have closed, so that after a process exits
    /// its last lines are in the buffers. A grandchild holding a pipe open keeps it from
    /// closing, hence the limit.
    pub fn wait_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !(state.stdout_closed && state.stderr_closed) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            state =
                self.changed.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// The last `lines` lines of stdout and of stderr, for a failure report.
    pub fn tails(&self, lines: usize) -> (Vec<String>, Vec<String>) {
        let state = self.lock();
        let out = state.stdout.iter().rev().take(lines).rev().cloned().collect();
        let all_err: Vec<&str> = state.stderr.lines().collect();
        let err =
            all_err[all_err.len().saturating_sub(lines)..].iter().map(|line| line.to_string()).collect();
        (out, err)
    }

    fn read_stdout(&self, stdout: impl Read) {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']).to_owned();
                    self.lock().stdout.push(text);
                    self.changed.notify_all();
                }
            }
        }
        self.lock().stdout_closed = true;
        self.changed.notify_all();
    }

    fn read_stderr(&self, mut stderr: impl Read) {
        let mut buf = vec![0u8; 8192];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.lock().stderr.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        self.lock().stderr_closed = true;
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not make the output unreadable for the failure report.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn spawn_reader(name: String, read: impl FnOnce() + Send + 'static) {
    // Detached: the thread ends when the pipe closes, which may be after the `Proc` is gone
    // if the process left a grandchild holding the pipe.
    std::thread::Builder::new()
        .name(name)
        .stack_size(64 * 1024)
        .spawn(read)
        .expect("cannot start an output reader thread");
}
