//! bpf_link creation, in-place program replacement and pinning, with raw `bpf(2)` calls.
//!
//! aya 0.14 (the newest that builds with the installed rustc) cannot turn cgroup
//! sock_addr, sock_ops or sk_lookup links into pinnable `FdLink`s, and pinning is what
//! keeps enrolled traffic failing closed while the agent restarts. The calls are small
//! and stable kernel ABI, so they live here rather than behind a newer aya.

use super::sys::{BPF_LINK_CREATE, BPF_LINK_UPDATE, BPF_OBJ_GET, BPF_OBJ_PIN, BpfAttr, bpf, c_path, fd_from};
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

/// `enum bpf_attach_type` values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AttachType {
    SockOps = 3,
    Connect4 = 10,
    Connect6 = 11,
    GetPeerName4 = 29,
    GetPeerName6 = 30,
    SkLookup = 36,
}

/// BPF_LINK_CREATE: attaches `prog` to `target` (a cgroup or netns fd).
pub fn create(prog: BorrowedFd<'_>, target: BorrowedFd<'_>, attach: AttachType) -> io::Result<OwnedFd> {
    let mut attr = BpfAttr::zeroed();
    attr.0[0] = prog.as_raw_fd() as u32;
    attr.0[1] = target.as_raw_fd() as u32;
    attr.0[2] = attach as u32;
    bpf(BPF_LINK_CREATE, &mut attr).map(fd_from)
}

/// BPF_LINK_UPDATE: swaps the program behind an existing link; the hook is never empty.
pub fn update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = BpfAttr::zeroed();
    attr.0[0] = link.as_raw_fd() as u32;
    attr.0[1] = prog.as_raw_fd() as u32;
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

fn obj_pin_or_get(cmd: libc::c_long, path: &Path, fd: Option<BorrowedFd<'_>>) -> io::Result<libc::c_long> {
    let path = c_path(path)?;
    let mut attr = BpfAttr::zeroed();
    let ptr = path.as_ptr() as u64;
    attr.0[0] = ptr as u32;
    attr.0[1] = (ptr >> 32) as u32;
    attr.0[2] = fd.map_or(0, |fd| fd.as_raw_fd() as u32);
    bpf(cmd, &mut attr)
}

pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    obj_pin_or_get(BPF_OBJ_PIN, path, Some(fd)).map(drop)
}

pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    obj_pin_or_get(BPF_OBJ_GET, path, None).map(fd_from)
}

/// Makes `prog` the program attached at `target` through the link pinned at `path`.
///
/// If an earlier agent left a link pinned there, its program is replaced in place, so a
/// restart never opens a window where the hook is empty (which would let an enrolled
/// pod's traffic bypass the mesh). Otherwise a new link is created and pinned.
pub fn attach_pinned(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach: AttachType,
    path: &Path,
) -> io::Result<()> {
    match open_pinned(path) {
        Ok(link) => match update(std::os::fd::AsFd::as_fd(&link), prog) {
            Ok(()) => return Ok(()),
            // The pinned link's target is gone (a netns that was deleted): replace it.
            Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => std::fs::remove_file(path)?,
            Err(e) => return Err(e),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let link = create(prog, target, attach)?;
    pin(std::os::fd::AsFd::as_fd(&link), path)
}
