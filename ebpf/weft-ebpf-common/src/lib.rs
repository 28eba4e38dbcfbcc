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
/// Port of HBONE (mTLS HTTP/2 CONNECT) between nodes; never captured.
pub const HBONE_PORT: u16 = 15008;

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
    /// [`InboundKey`](super::InboundKey) → slot in [`INBOUND_LISTENERS`].
    pub const INBOUND_PORTS: &str = "WEFT_INBOUND_PORTS";
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

/// Key of the inbound steering map: a pod IP and one of its application ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InboundKey {
    /// Pod IPv4 address, network order.
    pub ipv4: u32,
    /// Port, host order.
    pub port: u16,
    /// Explicit padding; always zero.
    pub _pad: u16,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four are repr(C), Copy, contain only integers and have no implicit
    // padding (checked by the size assertions below), so every byte pattern is valid.
    unsafe impl aya::Pod for super::EnrolledPod {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::InboundKey {}
}

const _: () = assert!(core::mem::size_of::<EnrolledPod>() == 8);
const _: () = assert!(core::mem::size_of::<OrigDst>() == 20);
const _: () = assert!(core::mem::size_of::<ConnKey>() == 32);
const _: () = assert!(core::mem::size_of::<InboundKey>() == 8);
