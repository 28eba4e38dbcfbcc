//! Network namespaces: holding one open, and running code inside it.
//!
//! Which namespace is a pod's is decided in `inpod` (the CNI handover, the kubelet's
//! cgroups), never here: an address inside a namespace is no proof of whose it is.
//!
//! The agent stays in the node's netns. To open a socket in a pod, a thread enters the
//! pod's netns, creates the socket and comes back: a socket belongs to the netns it was
//! created in for its whole life, whichever thread uses it later.

use nix::sched::{CloneFlags, setns};
use std::{
    fs::File,
    io,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// `NS_GET_NSTYPE` from linux/nsfs.h, `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {path}: {source} (the agent needs CAP_SYS_ADMIN)")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("cannot return to the agent's own network namespace: {0}")]
    Return(nix::Error),
    #[error("cannot read the netns cookie of {path}: {source} (needs Linux 5.14+)")]
    Cookie { path: PathBuf, source: io::Error },
    #[error("cannot list the addresses in network namespace {path}: {source}")]
    Addresses { path: PathBuf, source: nix::Error },
}

/// An open handle on a network namespace. Holding the file keeps the namespace alive.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
    inode: u64,
}

impl NetNs {
    pub fn open(path: impl Into<PathBuf>) -> Result<NetNs, NetNsError> {
        let path = path.into();
        let file = File::open(&path).map_err(|source| NetNsError::Open { path: path.clone(), source })?;
        let inode = file.metadata().map_err(|source| NetNsError::Open { path: path.clone(), source })?.ino();
        Ok(NetNs { file, path, inode })
    }

    /// Wraps a descriptor already open on a namespace (e.g. opened through a process's
    /// `/proc/<pid>` directory); `path` is what logs and the admin endpoint show.
    pub fn from_fd(fd: OwnedFd, path: impl Into<PathBuf>) -> Result<NetNs, NetNsError> {
        let path = path.into();
        let file = File::from(fd);
        let inode = file.metadata().map_err(|source| NetNsError::Open { path: path.clone(), source })?.ino();
        Ok(NetNs { file, path, inode })
    }

    /// Another handle on the same namespace (a duplicated descriptor).
    pub fn try_clone(&self) -> Result<NetNs, NetNsError> {
        let file =
            self.file.try_clone().map_err(|source| NetNsError::Open { path: self.path.clone(), source })?;
        Ok(NetNs { file, path: self.path.clone(), inode: self.inode })
    }

    /// Whether the open file is a network namespace, not another kind of namespace or an
    /// ordinary file (a path from outside the agent could be either).
    pub fn is_network_namespace(&self) -> bool {
        // SAFETY: NS_GET_NSTYPE takes no argument; on any file the kernel answers with the
        // namespace type or -1 (ENOTTY for files that are not namespaces).
        let kind = unsafe { libc::ioctl(self.file.as_raw_fd(), NS_GET_NSTYPE as _) };
        kind == libc::CLONE_NEWNET
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs, NetNsError> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// Runs `f` on the calling thread inside this namespace, then returns the thread to
    /// `home`. `f` must not block on async work: the thread is borrowed, not owned.
    pub fn run<T>(&self, home: &NetNs, f: impl FnOnce() -> T) -> Result<T, NetNsError> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetNsError::Enter { path: self.path.clone(), source })?;
        let out = f();
        setns(home.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(NetNsError::Return)?;
        Ok(out)
    }

    /// The kernel's cookie for this namespace, the key the eBPF programs use.
    pub fn cookie(&self, home: &NetNs) -> Result<u64, NetNsError> {
        let res = self.run(home, || {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            netns_cookie_of(&sock)
        })?;
        res.map_err(|source| NetNsError::Cookie { path: self.path.clone(), source })
    }

    /// The addresses on this namespace's interfaces, loopback included.
    pub fn addresses(&self, home: &NetNs) -> Result<Vec<IpAddr>, NetNsError> {
        let listed = self.run(home, || {
            nix::ifaddrs::getifaddrs().map(|addrs| {
                addrs
                    .filter_map(|a| a.address)
                    .filter_map(|sa| {
                        sa.as_sockaddr_in()
                            .map(|s| IpAddr::V4(s.ip()))
                            .or_else(|| sa.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
                    })
                    .collect()
            })
        })?;
        listed.map_err(|source| NetNsError::Addresses { path: self.path.clone(), source })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `SO_NETNS_COOKIE` of a socket: equals what `bpf_get_netns_cookie` returns for
/// sockets of the same namespace.
pub fn netns_cookie_of(sock: &impl AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd, and a buffer of the size we pass.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(cookie) }
}
