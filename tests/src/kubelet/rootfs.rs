//! A container's root filesystem and user, as a container runtime gives them, made by a
//! shell script run under `unshare --mount` (a private mount namespace, so nothing is
//! mounted on the host) and ending in `exec chroot` into it:
//!
//! ```text
//! <pod dir>/roots/<container>   tmpfs, the container's /
//!   /usr /bin /sbin /lib* …     the host's, bound read-only (the image's libc and tools)
//!   /usr/local/bin/<binary>     the repository's built binary (image.rs)
//!   /etc                        a few of the host's files (nsswitch, passwd, …) and the
//!                               pod's own /etc/hosts
//!   /proc /dev /sys             the host's
//!   <mountPath>…                the pod's volumes (volumes.rs)
//! ```
//!
//! The tmpfs lies over an empty directory of the pod's, so the host sees nothing of it; the
//! mount namespace, and with it every mount, ends with the container's process (`unshare`,
//! `sh` and `chroot` each exec the next, so the process is the container's own).

use super::image::Program;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::{fmt::Write as _, os::unix::fs::PermissionsExt, path::Path, process::Command};

/// The host's directories an image's binaries need (dynamic loader, libc, tools).
const SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// The host's `/etc` files name resolution, users and the loader read.
const ETC_FILES: &[&str] = &[
    "ld.so.cache",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "resolv.conf",
    "passwd",
    "group",
    "localtime",
    "ssl",
    "ca-certificates",
];

/// The user and group a container runs as: its securityContext, else the pod's, else root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub fn of(pod: &Pod, container: &Container) -> User {
        let own = container.security_context.as_ref();
        let pods = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let uid = own.and_then(|s| s.run_as_user).or(pods.and_then(|s| s.run_as_user)).unwrap_or(0);
        let gid = own.and_then(|s| s.run_as_group).or(pods.and_then(|s| s.run_as_group)).unwrap_or(0);
        User { uid: uid as u32, gid: gid as u32 }
    }
}

/// A volume at a path in the container.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The volume's directory (or file) on the bed node.
    pub source: std::path::PathBuf,
    /// The container's mountPath.
    pub target: String,
    pub read_only: bool,
}

pub struct Layout<'a> {
    /// An empty directory of the pod's: the root's mount point.
    pub root: &'a Path,
    pub program: &'a Program,
    pub hosts: &'a Path,
    pub mounts: Vec<Mount>,
    pub read_only_root: bool,
    pub user: User,
    pub working_dir: Option<&'a str>,
}

/// The command that makes the root and runs the program in it with `args`.
pub fn command(layout: &Layout<'_>, args: &[String]) -> Result<Command> {
    let script = script(layout)?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-ec", &script, "container"]);
    cmd.args(args);
    Ok(cmd)
}

/// Makes a file the pod's container reads (e.g. its /etc/hosts) readable by any user.
pub fn make_readable(path: &Path) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", path.display()))
}

fn script(layout: &Layout<'_>) -> Result<String> {
    let root = quote(&layout.root.display().to_string());
    let mut s = String::new();
    let mut line = |text: String| {
        s.push_str(&text);
        s.push('\n');
    };
    line(format!("R={root}"));
    line("mount -t tmpfs -o mode=0755 weft-rootfs \"$R\"".into());
    for dir in SYSTEM_DIRS {
        let host = Path::new("/").join(dir);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&host)?;
                line(format!("ln -s {} \"$R\"/{dir}", quote(&target.display().to_string())));
            }
            Ok(m) if m.is_dir() => {
                line(format!("mkdir \"$R\"/{dir}"));
                line(format!("mount --rbind /{dir} \"$R\"/{dir}"));
                line(format!("mount -o remount,bind,ro \"$R\"/{dir}"));
            }
            _ => {}
        }
    }
    // The image's own /usr/local: the binary, and nothing of the host's.
    line("mount -t tmpfs -o mode=0755 weft-usr-local \"$R\"/usr/local".into());
    let binary = &layout.program.in_container;
    check_target(binary)?;
    line(format!("mkdir -p \"$R\"{}", quote(parent(binary))));
    line(format!("touch \"$R\"{}", quote(binary)));
    line(format!(
        "mount --bind {} \"$R\"{}",
        quote(&layout.program.binary.display().to_string()),
        quote(binary)
    ));
    line("mkdir -m 0755 \"$R\"/etc \"$R\"/proc \"$R\"/dev \"$R\"/sys \"$R\"/run".into());
    line("mkdir -m 1777 \"$R\"/tmp".into());
    for dev in ["proc", "dev", "sys"] {
        line(format!("mount --rbind /{dev} \"$R\"/{dev}"));
    }
    for file in ETC_FILES {
        let host = Path::new("/etc").join(file);
        // Followed: /etc/resolv.conf is often a link into /run.
        match std::fs::metadata(&host) {
            Ok(m) if m.is_dir() => line(format!("mkdir \"$R\"/etc/{file}")),
            Ok(_) => line(format!("touch \"$R\"/etc/{file}")),
            Err(_) => continue,
        }
        line(format!("mount --bind /etc/{file} \"$R\"/etc/{file}"));
    }
    line("touch \"$R\"/etc/hosts".into());
    line(format!("mount --bind {} \"$R\"/etc/hosts", quote(&layout.hosts.display().to_string())));
    for mount in &layout.mounts {
        check_target(&mount.target)?;
        let target = quote(&mount.target);
        if mount.source.is_dir() {
            line(format!("mkdir -p \"$R\"{target}"));
        } else {
            line(format!("mkdir -p \"$R\"{}", quote(parent(&mount.target))));
            line(format!("touch \"$R\"{target}"));
        }
        line(format!("mount --bind {} \"$R\"{target}", quote(&mount.source.display().to_string())));
        if mount.read_only {
            line(format!("mount -o remount,bind,ro \"$R\"{target}"));
        }
    }
    if layout.read_only_root {
        line("mount -o remount,ro \"$R\"".into());
        line("mount -o remount,ro \"$R\"/usr/local".into());
    }
    let User { uid, gid } = layout.user;
    let mut exec = format!("exec chroot --userspec={uid}:{gid} --groups={gid} \"$R\"");
    match layout.working_dir {
        // chroot starts in /; a working directory needs a shell in the root to cd first.
        Some(dir) => write!(exec, " /bin/sh -c 'cd \"$0\" && exec \"$@\"' {} {}", quote(dir), quote(binary))?,
        None => write!(exec, " {}", quote(binary))?,
    }
    exec.push_str(" \"$@\"");
    line(exec);
    Ok(s)
}

/// A path in the container: absolute, and not into the host directories bound in (a
/// directory made there would be made on the host).
fn check_target(path: &str) -> Result<()> {
    if !path.starts_with('/') || path.split('/').any(|p| p == "..") {
        bail!("{path:?}: a container path must be absolute, without `..`");
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    if SYSTEM_DIRS.contains(&first) && !path.starts_with("/usr/local/") {
        bail!(
            "{path:?} is inside the host's /{first}, which the bed's root filesystem shares: not supported"
        );
    }
    Ok(())
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| if p.is_empty() { "/" } else { p }).unwrap_or("/")
}

/// Single-quoted for sh.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_into_host_directories_are_refused() {
        assert!(check_target("/var/run/secrets/tokens").is_ok());
        assert!(check_target("/usr/local/bin/weft-waypoint").is_ok());
        assert!(check_target("/usr/share/x").is_err());
        assert!(check_target("relative").is_err());
        assert!(check_target("/a/../usr").is_err());
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(parent("/usr/local/bin/x"), "/usr/local/bin");
    }
}
