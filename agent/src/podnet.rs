//! The routing an enrolled pod needs so its application sees real client addresses.
//!
//! The agent connects to the application from the client's own IP (IP_TRANSPARENT), with
//! the inbound mark on its socket. The application's replies are addressed to that client
//! IP, which the pod would route out of its interface. Two settings inside the pod's netns
//! bring them back to the agent's socket instead, without iptables:
//!
//! - `net.ipv4.tcp_fwmark_accept = 1`: a socket accepted from a marked SYN takes the SYN's
//!   mark, so every packet the application sends on it carries the inbound mark;
//! - a policy rule `fwmark <inbound mark> lookup 133` and, in table 133, `local 0.0.0.0/0
//!   dev lo`: marked packets are delivered locally, to the agent's transparent socket.
//!
//! Istio's in-pod mode routes the same way (table 133, a local default route); it marks
//! with iptables connmark where Weft lets the kernel carry the mark over from the SYN.
//! Only sockets carrying the mark are affected: the pod's own traffic is untouched.

use crate::netns::{NetNs, NetNsError};
use std::{
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// The routing table holding the local default route (Istio uses the same number).
pub const TABLE: u32 = 133;
/// Preference of the policy rule: before the main table (32766).
const RULE_PRIORITY: u32 = 32764;

#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error("cannot set {setting} in the pod's netns: {source}")]
    Sysctl { setting: &'static str, source: io::Error },
    #[error("cannot add {what} in the pod's netns (netlink): {source}")]
    Netlink { what: &'static str, source: io::Error },
}

/// How the agent sets up pods' routing.
#[derive(Debug, Clone)]
pub struct PodNet {
    /// The mark on the agent's connections to applications.
    pub inbound_mark: u32,
    /// Where the kernel's sysctls are written: `/proc/sys`, or the host's `/proc/sys`
    /// mounted elsewhere where the container's own is read-only (container runtimes mount
    /// it so). A net sysctl answers for the opening thread's netns whichever procfs mount
    /// it is opened through.
    pub proc_sys: PathBuf,
}

impl PodNet {
    /// Sets the pod's netns up to route replies of marked connections back to the agent.
    /// Idempotent: what is already there is left as it is.
    pub fn prepare(&self, netns: &NetNs, home: &NetNs) -> Result<(), PodNetError> {
        prepare(netns, home, self.inbound_mark, &self.proc_sys.join("net/ipv4/tcp_fwmark_accept"))
    }
}

fn prepare(netns: &NetNs, home: &NetNs, inbound_mark: u32, fwmark_accept: &Path) -> Result<(), PodNetError> {
    netns.run(home, || -> Result<(), PodNetError> {
        // The sysctl answers for the opening thread's netns, which is the pod's here.
        std::fs::write(fwmark_accept, "1")
            .map_err(|source| PodNetError::Sysctl { setting: "net.ipv4.tcp_fwmark_accept", source })?;
        let nl =
            Netlink::open().map_err(|source| PodNetError::Netlink { what: "a netlink socket", source })?;
        nl.add_rule(inbound_mark)
            .map_err(|source| PodNetError::Netlink { what: "the fwmark rule", source })?;
        nl.add_local_default().map_err(|source| PodNetError::Netlink { what: "the local route", source })?;
        Ok(())
    })?
}

const NETLINK_ROUTE: i32 = 0;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWRULE: u16 = 32;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const AF_INET: u8 = 2;
/// fib_rule_hdr.action: look the packet up in a table.
const FR_ACT_TO_TBL: u8 = 1;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_HOST: u8 = 254;
const RTN_LOCAL: u8 = 2;
/// The loopback interface is index 1 in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// A NETLINK_ROUTE socket in the calling thread's netns, speaking just enough rtnetlink
/// for one rule and one route (raw messages: the ABI is small and stable).
struct Netlink {
    fd: std::os::fd::OwnedFd,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(Netlink { fd: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) } })
    }

    /// `ip rule add fwmark MARK/0xffffffff lookup 133 pref 32764`
    fn add_rule(&self, mark: u32) -> io::Result<()> {
        let mut body = vec![AF_INET, 0, 0, 0, 0, 0, 0, FR_ACT_TO_TBL, 0, 0, 0, 0];
        attr_u32(&mut body, FRA_PRIORITY, RULE_PRIORITY);
        attr_u32(&mut body, FRA_FWMARK, mark);
        attr_u32(&mut body, FRA_FWMASK, u32::MAX);
        attr_u32(&mut body, FRA_TABLE, TABLE);
        self.request(RTM_NEWRULE, &body)
    }

    /// `ip route add local 0.0.0.0/0 dev lo table 133`
    fn add_local_default(&self) -> io::Result<()> {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        let mut body = vec![AF_INET, 0, 0, 0, 0, RTPROT_STATIC, RT_SCOPE_HOST, RTN_LOCAL, 0, 0, 0, 0];
        attr_u32(&mut body, RTA_TABLE, TABLE);
        attr_u32(&mut body, RTA_OIF, LOOPBACK_IFINDEX);
        self.request(RTM_NEWROUTE, &body)
    }

    /// Sends one create-exclusive request and reads its ACK; "already exists" is success.
    fn request(&self, kind: u16, body: &[u8]) -> io::Result<()> {
        let len = 16 + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        msg.extend_from_slice(body);
        // SAFETY: sending an initialised buffer of the given length on our socket; the
        // unbound netlink socket addresses the kernel by default.
        if unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; 1024];
        // SAFETY: receiving into a buffer we own, of the size we pass.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let reply = &reply[..n as usize];
        if reply.len() < 20 || u16::from_ne_bytes([reply[4], reply[5]]) != NLMSG_ERROR {
            return Err(io::Error::other("unexpected netlink reply"));
        }
        match -i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]) {
            0 | libc::EEXIST => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// A netlink attribute holding a u32 (4-byte aligned by construction).
fn attr_u32(out: &mut Vec<u8>, kind: u16, value: u32) {
    out.extend_from_slice(&8u16.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&value.to_ne_bytes());
}
