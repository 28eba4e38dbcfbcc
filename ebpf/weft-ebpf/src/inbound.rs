//! Inbound plaintext capture: sk_lookup in each enrolled pod's netns.
//!
//! Every TCP port of an enrolled pod is steered to the agent's :15006 socket, except the
//! mesh's own ports and configured exclusions, so no port of the pod is reachable outside
//! the mesh's policy. The agent then connects to the application from the client's
//! address; those connects are listed in INBOUND_BYPASS and let through.

use aya_ebpf::{
    bindings::{sk_action::SK_DROP, sk_action::SK_PASS},
    macros::{map, sk_lookup},
    maps::{HashMap, LruHashMap, SockMap},
    programs::SkLookupContext,
};
use core::ptr::{addr_of, read_volatile};
use weft_ebpf_common::{AF_INET, BypassKey, MAX_INBOUND_CONNECTS, MAX_PODS_PER_NODE};

const IPPROTO_TCP: u32 = 6;

#[map(name = "WEFT_INBOUND_PODS")]
static INBOUND_PODS: HashMap<u32, u32> = HashMap::pinned(MAX_PODS_PER_NODE, 0);

#[map(name = "WEFT_INBOUND_EXCLUDED_PORTS")]
static INBOUND_EXCLUDED_PORTS: HashMap<u16, u8> = HashMap::pinned(256, 0);

#[map(name = "WEFT_INBOUND_BYPASS")]
static INBOUND_BYPASS: LruHashMap<BypassKey, u8> = LruHashMap::pinned(MAX_INBOUND_CONNECTS, 0);

#[map(name = "WEFT_INBOUND_LISTENERS")]
static INBOUND_LISTENERS: SockMap = SockMap::pinned(MAX_PODS_PER_NODE, 0);

#[sk_lookup]
pub fn weft_sk_lookup(ctx: SkLookupContext) -> u32 {
    try_sk_lookup(&ctx)
}

fn try_sk_lookup(ctx: &SkLookupContext) -> u32 {
    let lk = ctx.lookup;
    // SAFETY: context field reads, one at a time. remote_port holds a big-endian u16 in
    // its low bytes; local_port is host order (see struct bpf_sk_lookup).
    let (family, protocol, local_ip, local_port, remote_ip, remote_port) = unsafe {
        (
            read_volatile(addr_of!((*lk).family)),
            read_volatile(addr_of!((*lk).protocol)),
            read_volatile(addr_of!((*lk).local_ip4)),
            read_volatile(addr_of!((*lk).local_port)),
            read_volatile(addr_of!((*lk).remote_ip4)),
            read_volatile(addr_of!((*lk).remote_port)),
        )
    };
    if protocol != IPPROTO_TCP || family != u32::from(AF_INET) {
        return SK_PASS;
    }
    // Exempt by address, not interface: the pod talking to its own IP arrives on the
    // veth's ifindex too.
    if remote_ip == local_ip || local_ip.to_ne_bytes()[0] == 127 {
        return SK_PASS;
    }
    // Copied onto the stack before use as a key (the verifier refuses a ctx-derived key).
    let pod_ip = local_ip;
    // SAFETY: plain map lookup; copied out before use.
    let Some(slot) = (unsafe { INBOUND_PODS.get(&pod_ip) }).copied() else {
        return SK_PASS;
    };
    let port = local_port as u16;
    // SAFETY: plain map lookup.
    if unsafe { INBOUND_EXCLUDED_PORTS.get(&port) }.is_some() {
        return SK_PASS;
    }
    let key =
        BypassKey { remote_ip, local_ip, remote_port: u16::from_be(remote_port as u16), local_port: port };
    // SAFETY: plain map lookup.
    if unsafe { INBOUND_BYPASS.get(&key) }.is_some() {
        return SK_PASS;
    }
    match INBOUND_LISTENERS.redirect_sk_lookup(ctx, slot, 0) {
        Ok(()) => SK_PASS,
        // The agent's listener is gone (crash, restart): refuse rather than hand the
        // connection to the application outside the mesh.
        Err(_) => SK_DROP,
    }
}
