//! Named network namespaces: creating them with `ip`, configuring them, and entering them
//! from a thread.
//!
//! Everything is done either inside a namespace (`ip -n NAME …`, or a thread that has called
//! `setns`) so the host's own namespace is never changed.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

/// Where `ip netns add` bind-mounts the namespaces it names.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// A network namespace that `ip netns` knows by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name` (`ip netns add`); fails if it already exists.
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name]).with_context(|| format!("cannot create network namespace {name}"))?;
        Ok(Netns { name: name.to_owned() })
    }

    /// A handle on the namespace `name`, which may not exist yet.
    pub fn named(name: &str) -> Netns {
        Netns { name: name.to_owned() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mount that keeps the namespace alive: `nsenter --net=<this>` steps into it.
    pub fn path(&self) -> PathBuf {
        path_of(&self.name)
    }

    /// Runs `ip` commands (one per entry, without the leading `ip`) inside this namespace, as
    /// a single `ip -batch` so a bed with many pods stays quick to build.
    pub fn ip_batch<S: AsRef<str>>(&self, commands: &[S]) -> Result<()> {
        let script: String = commands.iter().map(|c| format!("{}\n", c.as_ref())).collect();
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run `ip`: is iproute2 installed?")?;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin.write_all(script.as_bytes()).context("cannot write to `ip -batch`")?;
        drop(stdin);
        let out = child.wait_with_output().context("cannot wait for `ip -batch`")?;
        if !out.status.success() {
            bail!(
                "`ip -n {} -batch` failed ({}): {}\ncommands:\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                script
            );
        }
        Ok(())
    }

    /// Sets sysctls of this namespace. `key` is the path under /proc/sys, e.g.
    /// `net/ipv4/ip_forward`.
    ///
    /// Written from a thread inside the namespace because /proc/sys/net shows the namespace of
    /// the task that opens it; this avoids `ip netns exec`, which remounts /sys.
    pub fn set_sysctls(&self, settings: &[(&str, &str)]) -> Result<()> {
        self.run(|| {
            for (key, value) in settings {
                let path = Path::new("/proc/sys").join(key);
                std::fs::write(&path, value).with_context(|| {
                    format!("cannot set {} = {value} in netns {}", path.display(), self.name)
                })?;
            }
            Ok(())
        })
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its value.
    /// A panic in `f` is passed on to the caller.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        let path = self.path();
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name(format!("netns-{}", self.name))
                .spawn_scoped(scope, move || {
                    if let Err(err) = enter(&path) {
                        panic!("cannot enter network namespace {}: {err:#}", path.display());
                    }
                    f()
                })
                .expect("cannot start a thread to enter a network namespace");
            match thread.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// Moves the calling thread into the network namespace bind-mounted at `path`.
fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET).context("setns(CLONE_NEWNET)")?;
    Ok(())
}

/// The bind-mount path of the namespace called `name`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Identity of a namespace file (its nsfs device and inode), to compare with
/// `/proc/PID/ns/net`.
pub fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Deletes the named namespace (`ip netns del`), which also destroys the veths inside it.
pub fn delete(name: &str) -> Result<()> {
    ip(&["netns", "del", name]).with_context(|| format!("cannot delete network namespace {name}"))
}

/// Names of all namespaces `ip netns` knows, read from its run directory.
pub fn list_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect()
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip`: is iproute2 installed?")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
