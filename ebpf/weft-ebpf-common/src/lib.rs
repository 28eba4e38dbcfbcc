//! Types shared by Weft's eBPF programs (`no_std`) and the agent (user space).
//!
//! Every map key and value is `#[repr(C)]`, `Copy`, and laid out with explicit padding
//! fields: the kernel compares keys byte for byte, so implicit padding with garbage in it
//! would make two equal keys differ. Flags are integers, never `bool`, for the same reason.
//!
//! Byte order: IPv4/IPv6 addresses are kept in network order (as the kernel hands them
//! to the programs); ports are kept in host order.
#![no_std]

/// `AF_INET` as the kernel numbers it.
pub const AF_INET: u16 = 2;
/// `AF_INET6` as the kernel numbers it.
pub const AF_INET6: u16 = 10;

/// Port of the agent's outbound capture socket inside each enrolled pod (127.0.0.1).
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// Port of the agent's inbound plaintext capture socket inside each enrolled pod.
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// Port of HBONE (mTLS HTTP/2 CONNECT) on each enrolled pod's address: the agent's own
/// listener there takes it, so inbound steering leaves it alone. Outbound connections to
/// it are captured like any other (only the agent's own sockets are exempt).
pub const HBONE_PORT: u16 = 15008;

/// Inbound ports never steered to the agent, whatever the configuration says: the agent's
/// own in-pod listeners.
pub const MESH_PORTS: [u16; 3] = [OUTBOUND_CAPTURE_PORT, INBOUND_CAPTURE_PORT, HBONE_PORT];

/// Names of the maps as they appear in the object file and under the bpffs pin directory.
pub mod map_names {
    /// Netns cookie → [`EnrolledPod`]: the pods whose traffic is captured.
    pub const ENROLLED: &str = "WEFT_ENROLLED";
    /// Socket cookie → [`OrigDst`](super::OrigDst), written by connect4/6.
    pub const ORIG_DST_BY_COOKIE: &str = "WEFT_ORIG_DST_BY_COOKIE";
    /// [`ConnKey`](super::ConnKey) → [`OrigDst`](super::OrigDst), written by sock_ops.
    pub const ORIG_DST: &str = "WEFT_ORIG_DST";
    /// Ports that are never captured (outbound), port → 1.
    pub const EXCLUDED_PORTS: &str = "WEFT_EXCLUDED_PORTS";
    /// Enrolled pod IPv4 (network order) → slot in [`INBOUND_LISTENERS`]: every port of
    /// the pod is steered, but those in [`INBOUND_EXCLUDED_PORTS`].
    pub const INBOUND_PODS: &str = "WEFT_INBOUND_PODS";
    /// Inbound ports never steered, port → 1: the mesh's own ports and the configured ones.
    pub const INBOUND_EXCLUDED_PORTS: &str = "WEFT_INBOUND_EXCLUDED_PORTS";
    /// [`BypassKey`](super::BypassKey) → 1: the agent's own connections to a pod's
    /// application (from the client's address), which must reach the app, not the agent.
    pub const INBOUND_BYPASS: &str = "WEFT_INBOUND_BYPASS";
    /// Slot → the agent's inbound capture listener of one pod (a SOCKMAP).
    pub const INBOUND_LISTENERS: &str = "WEFT_INBOUND_LISTENERS";
}

/// Capacity of [`map_names::INBOUND_LISTENERS`]: enrolled pods per node.
pub const MAX_PODS_PER_NODE: u32 = 1024;

/// Value of the `ENROLLED` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnrolledPod {
    /// The pod's own IPv4 address (network order); connections to it stay in the pod.
    pub ipv4: u32,
    /// Reserved for per-pod switches; zero today.
    pub flags: u32,
}

/// An original destination, as the application asked for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigDst {
    /// Address in network order; IPv4 uses `addr[0]` and leaves the rest zero.
    pub addr: [u32; 4],
    /// Port, host order.
    pub port: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
}

/// Identifies a captured connection from the agent's side of the outbound socket: the
/// client's address as the agent's accepted socket sees it, in the pod's netns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub netns_cookie: u64,
    /// Client address, network order; IPv4 uses `addr[0]`.
    pub addr: [u32; 4],
    /// Client port, host order.
    pub port: u16,
    pub family: u16,
    /// Explicit padding to a multiple of 8 bytes; always zero.
    pub _pad: u32,
}

/// One connection the agent opens to a pod's application on behalf of a client, named by
/// both ends as sk_lookup sees them. The agent connects from the client's address
/// (IP_TRANSPARENT), so without this entry sk_lookup would steer it back to the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BypassKey {
    /// Client (remote) IPv4, network order.
    pub remote_ip: u32,
    /// Pod (local) IPv4, network order.
    pub local_ip: u32,
    /// Client port, host order.
    pub remote_port: u16,
    /// Application port, host order.
    pub local_port: u16,
}

/// Capacity of [`map_names::INBOUND_BYPASS`]: the agent's connects to applications that
/// are between bind and accept at once. Entries are removed once connected; the LRU only
/// matters if the agent dies between the two.
pub const MAX_INBOUND_CONNECTS: u32 = 16384;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four are repr(C), Copy, contain only integers and have no implicit
    // padding (checked by the size assertions below), so every byte pattern is valid.
    unsafe impl aya::Pod for super::EnrolledPod {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::BypassKey {}
}

const _: () = assert!(core::mem::size_of::<EnrolledPod>() == 8);
const _: () = assert!(core::mem::size_of::<OrigDst>() == 20);
const _: () = assert!(core::mem::size_of::<ConnKey>() == 32);
const _: () = assert!(core::mem::size_of::<BypassKey>() == 12);
