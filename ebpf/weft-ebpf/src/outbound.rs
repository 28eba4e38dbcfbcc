//! Outbound capture: connect4/connect6 redirection, sock_ops re-keying, getpeername.

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_TCP_CONNECT_CB, bpf_sock_ops},
    helpers::{bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{HashMap, LruHashMap},
    programs::{SockAddrContext, SockOpsContext},
};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use weft_ebpf_common::{AF_INET, AF_INET6, ConnKey, EnrolledPod, OUTBOUND_CAPTURE_PORT, OrigDst};

/// cgroup sock_addr verdicts.
const ALLOW: i32 = 1;
const DENY: i32 = 0;
const SOCK_STREAM: u32 = 1;
/// 127.0.0.1 in network order, as stored in `user_ip4`.
const LOOPBACK_V4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// ::ffff:0:0/96 prefix word, network order.
const V4_MAPPED_PREFIX: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The cgroup v2 id of the agent's own cgroup; set at load time. The agent's connects
/// (its upstream and HBONE sockets, opened inside pods' netns) are the only ones exempt
/// from capture. A mark or a port would not do: a pod with NET_ADMIN can set any mark,
/// and any pod can dial port 15008; no pod can put itself in the agent's cgroup.
/// Zero (not loaded by an agent) exempts nothing.
#[unsafe(no_mangle)]
static WEFT_AGENT_CGROUP_ID: u64 = 0;

#[map(name = "WEFT_ENROLLED")]
static ENROLLED: HashMap<u64, EnrolledPod> = HashMap::pinned(4096, 0);

#[map(name = "WEFT_ORIG_DST_BY_COOKIE")]
static ORIG_DST_BY_COOKIE: LruHashMap<u64, OrigDst> = LruHashMap::pinned(65536, 0);

#[map(name = "WEFT_ORIG_DST")]
static ORIG_DST: LruHashMap<ConnKey, OrigDst> = LruHashMap::pinned(65536, 0);

#[map(name = "WEFT_EXCLUDED_PORTS")]
static EXCLUDED_PORTS: HashMap<u16, u8> = HashMap::pinned(256, 0);

#[cgroup_sock_addr(connect4)]
pub fn weft_connect4(ctx: SockAddrContext) -> i32 {
    try_connect4(&ctx)
}

#[cgroup_sock_addr(connect6)]
pub fn weft_connect6(ctx: SockAddrContext) -> i32 {
    try_connect6(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn weft_getpeername4(ctx: SockAddrContext) -> i32 {
    restore_peer(&ctx, false)
}

#[cgroup_sock_addr(getpeername6)]
pub fn weft_getpeername6(ctx: SockAddrContext) -> i32 {
    restore_peer(&ctx, true)
}

#[sock_ops]
pub fn weft_sock_ops(ctx: SockOpsContext) -> u32 {
    try_sock_ops(&ctx);
    // sock_ops return values only matter for ops that ask for a reply; none of ours do.
    1
}

/// What connect4/6 decided for an enrolled socket that is not exempt.
enum Capture {
    /// Leave the connect alone.
    Pass,
    /// Record `OrigDst` and redirect to the agent.
    Redirect(OrigDst),
}

/// The checks shared by connect4 and connect6 (an IPv4-mapped address goes through
/// connect6 only, and missing one of these checks there made the agent capture its own
/// upstream connections in a loop).
fn classify_v4(pod: &EnrolledPod, ip: u32, port: u16) -> Capture {
    let first_octet = ip.to_ne_bytes()[0];
    if first_octet == 127 || ip == pod.ipv4 {
        return Capture::Pass;
    }
    // SAFETY: plain map lookup of a Copy value.
    if unsafe { EXCLUDED_PORTS.get(&port) }.is_some() {
        return Capture::Pass;
    }
    Capture::Redirect(OrigDst { addr: [ip, 0, 0, 0], port, family: AF_INET })
}

/// Whether the connecting task is the agent. Checked in both hooks: an IPv4-mapped address
/// goes through connect6 only, and a missing check there made the agent capture its own
/// upstream connections in a loop.
fn is_agent() -> bool {
    // SAFETY: reading a global the loader may have set; volatile so it is not folded.
    let agent = unsafe { read_volatile(&WEFT_AGENT_CGROUP_ID) };
    // SAFETY: helper valid for cgroup sock_addr programs (cgroup_current_func_proto).
    agent != 0 && unsafe { bpf_get_current_cgroup_id() } == agent
}

fn enrolled(ctx: &SockAddrContext) -> Option<EnrolledPod> {
    let sa = ctx.sock_addr;
    // SAFETY: reading the socket type from the context.
    let sock_type = unsafe { read_volatile(addr_of!((*sa).type_)) };
    if sock_type != SOCK_STREAM {
        return None;
    }
    // SAFETY: helper valid for cgroup sock_addr programs.
    let netns = unsafe { bpf_get_netns_cookie(sa.cast()) };
    // SAFETY: plain map lookup; copied out before use.
    unsafe { ENROLLED.get(&netns) }.copied()
}

fn record(ctx: &SockAddrContext, orig: &OrigDst) -> bool {
    // SAFETY: helper valid for cgroup sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    ORIG_DST_BY_COOKIE.insert(&cookie, orig, 0).is_ok()
}

fn try_connect4(ctx: &SockAddrContext) -> i32 {
    let Some(pod) = enrolled(ctx) else { return ALLOW };
    if is_agent() {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: context field reads; user_port holds a be16 in the low bytes.
    let (ip, port) =
        unsafe { (read_volatile(addr_of!((*sa).user_ip4)), read_volatile(addr_of!((*sa).user_port))) };
    let port = u16::from_be(port as u16);
    match classify_v4(&pod, ip, port) {
        Capture::Pass => ALLOW,
        Capture::Redirect(orig) => {
            if !record(ctx, &orig) {
                // Fail closed: without the record the agent could not forward it.
                return DENY;
            }
            // SAFETY: writable context fields of connect4.
            unsafe {
                write_volatile(addr_of_mut!((*sa).user_ip4), LOOPBACK_V4);
                write_volatile(addr_of_mut!((*sa).user_port), u32::from(OUTBOUND_CAPTURE_PORT.to_be()));
            }
            ALLOW
        }
    }
}

fn try_connect6(ctx: &SockAddrContext) -> i32 {
    let Some(pod) = enrolled(ctx) else { return ALLOW };
    if is_agent() {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: context field reads, one word at a time.
    let (w0, w1, w2, w3, port) = unsafe {
        (
            read_volatile(addr_of!((*sa).user_ip6[0])),
            read_volatile(addr_of!((*sa).user_ip6[1])),
            read_volatile(addr_of!((*sa).user_ip6[2])),
            read_volatile(addr_of!((*sa).user_ip6[3])),
            read_volatile(addr_of!((*sa).user_port)),
        )
    };
    let port = u16::from_be(port as u16);
    if w0 == 0 && w1 == 0 && w2 == V4_MAPPED_PREFIX {
        return match classify_v4(&pod, w3, port) {
            Capture::Pass => ALLOW,
            Capture::Redirect(orig) => {
                if !record(ctx, &orig) {
                    return DENY;
                }
                // SAFETY: writable context fields of connect6; ::ffff:127.0.0.1 reaches
                // the agent's IPv4 listener.
                unsafe {
                    write_volatile(addr_of_mut!((*sa).user_ip6[3]), LOOPBACK_V4);
                    write_volatile(addr_of_mut!((*sa).user_port), u32::from(OUTBOUND_CAPTURE_PORT.to_be()));
                }
                ALLOW
            }
        };
    }
    let is_loopback = w0 == 0 && w1 == 0 && w2 == 0 && w3 == u32::from_ne_bytes([0, 0, 0, 1]);
    if is_loopback {
        return ALLOW;
    }
    // Native IPv6 is not carried by the agent yet. Refusing it (EPERM) keeps the promise
    // that enrolled traffic never leaves the pod outside the mesh.
    let _ = AF_INET6;
    DENY
}

fn restore_peer(ctx: &SockAddrContext, v6: bool) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: helper valid for cgroup sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
    // SAFETY: plain map lookup; copied out before use.
    let Some(orig) = (unsafe { ORIG_DST_BY_COOKIE.get(&cookie) }).copied() else {
        return ALLOW;
    };
    // SAFETY: writable context fields of getpeername4/6.
    unsafe {
        if v6 {
            write_volatile(addr_of_mut!((*sa).user_ip6[3]), orig.addr[0]);
        } else {
            write_volatile(addr_of_mut!((*sa).user_ip4), orig.addr[0]);
        }
        write_volatile(addr_of_mut!((*sa).user_port), u32::from(orig.port.to_be()));
    }
    ALLOW
}

fn try_sock_ops(ctx: &SockOpsContext) {
    let ops: *mut bpf_sock_ops = ctx.ops;
    // SAFETY: context field read (volatile: the verifier rejects a modified ctx pointer).
    let op = unsafe { read_volatile(addr_of!((*ops).op)) };
    if op != BPF_SOCK_OPS_TCP_CONNECT_CB {
        return;
    }
    // SAFETY: helpers valid for sock_ops.
    let cookie = unsafe { bpf_get_socket_cookie(ops.cast()) };
    // SAFETY: plain map lookup; copied out before use.
    let Some(orig) = (unsafe { ORIG_DST_BY_COOKIE.get(&cookie) }).copied() else { return };
    // SAFETY: as above.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ops.cast()) };
    // SAFETY: context field reads, one at a time.
    let (family, port, l0, l1, l2, l3, l4) = unsafe {
        (
            read_volatile(addr_of!((*ops).family)),
            read_volatile(addr_of!((*ops).local_port)),
            read_volatile(addr_of!((*ops).local_ip6[0])),
            read_volatile(addr_of!((*ops).local_ip6[1])),
            read_volatile(addr_of!((*ops).local_ip6[2])),
            read_volatile(addr_of!((*ops).local_ip6[3])),
            read_volatile(addr_of!((*ops).local_ip4)),
        )
    };
    // The agent accepts on an IPv4 socket, so an IPv4-mapped client is keyed as IPv4.
    let ipv4 = if family == u32::from(AF_INET) {
        Some(l4)
    } else if l0 == 0 && l1 == 0 && l2 == V4_MAPPED_PREFIX {
        Some(l3)
    } else {
        None
    };
    let Some(ipv4) = ipv4 else { return };
    let key = ConnKey {
        netns_cookie,
        addr: [ipv4, 0, 0, 0],
        // sock_ops hands local_port in host order.
        port: port as u16,
        family: AF_INET,
        _pad: 0,
    };
    let _ = ORIG_DST.insert(&key, &orig, 0);
}
