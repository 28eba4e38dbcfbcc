//! The raw `bpf(2)` calls aya 0.14 does not offer for our uses (link pinning, map updates
//! from many tasks through a shared descriptor): the attribute union and the syscall.

use std::{
    ffi::CString,
    io,
    os::fd::{FromRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::Path,
};

/// `enum bpf_cmd` values used here (include/uapi/linux/bpf.h).
pub const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
pub const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
pub const BPF_OBJ_PIN: libc::c_long = 6;
pub const BPF_OBJ_GET: libc::c_long = 7;
pub const BPF_LINK_CREATE: libc::c_long = 28;
pub const BPF_LINK_UPDATE: libc::c_long = 29;

/// `union bpf_attr`, as zeroed words; each command fills the fields it reads. The kernel
/// requires every byte past a command's last field to be zero, which this guarantees.
#[repr(C, align(8))]
pub struct BpfAttr(pub [u32; 32]);

impl BpfAttr {
    pub fn zeroed() -> BpfAttr {
        BpfAttr([0; 32])
    }
}

/// One `bpf(2)` call.
pub fn bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, fully initialised buffer of the size we pass; the kernel
    // reads (and for some commands writes) within it only.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut BpfAttr, std::mem::size_of::<BpfAttr>()) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

pub fn fd_from(ret: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

pub fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// BPF_MAP_UPDATE_ELEM (`flags` = BPF_ANY, BPF_NOEXIST, …) on a map descriptor, with key and
/// value as the raw bytes of `#[repr(C)]` types.
pub fn map_update(map: std::os::fd::BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut attr = BpfAttr::zeroed();
    attr.0[0] = map.as_raw_fd() as u32;
    let (k, v) = (key.as_ptr() as u64, value.as_ptr() as u64);
    attr.0[2] = k as u32;
    attr.0[3] = (k >> 32) as u32;
    attr.0[4] = v as u32;
    attr.0[5] = (v >> 32) as u32;
    attr.0[6] = flags as u32;
    attr.0[7] = (flags >> 32) as u32;
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// BPF_MAP_DELETE_ELEM; a missing key is not an error.
pub fn map_delete(map: std::os::fd::BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut attr = BpfAttr::zeroed();
    attr.0[0] = map.as_raw_fd() as u32;
    let k = key.as_ptr() as u64;
    attr.0[2] = k as u32;
    attr.0[3] = (k >> 32) as u32;
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map(drop),
    }
}
