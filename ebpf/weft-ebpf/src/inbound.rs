//! Inbound plaintext capture: sk_lookup in each enrolled pod's netns.

use aya_ebpf::{
    bindings::{sk_action::SK_DROP, sk_action::SK_PASS},
    macros::{map, sk_lookup},
    maps::{HashMap, SockMap},
    programs::SkLookupContext,
};
use core::ptr::{addr_of, read_volatile};
use weft_ebpf_common::{AF_INET, InboundKey, MAX_PODS_PER_NODE};

const IPPROTO_TCP: u32 = 6;

#[map(name = "WEFT_INBOUND_PORTS")]
static INBOUND_PORTS: HashMap<InboundKey, u32> = HashMap::pinned(16384, 0);

#[map(name = "WEFT_INBOUND_LISTENERS")]
static INBOUND_LISTENERS: SockMap = SockMap::pinned(MAX_PODS_PER_NODE, 0);

#[sk_lookup]
pub fn weft_sk_lookup(ctx: SkLookupContext) -> u32 {
    try_sk_lookup(&ctx)
}

fn try_sk_lookup(ctx: &SkLookupContext) -> u32 {
    let lk = ctx.lookup;
    // SAFETY: context field reads, one at a time.
    let (family, protocol, local_ip, local_port, remote_ip) = unsafe {
        (
            read_volatile(addr_of!((*lk).family)),
            read_volatile(addr_of!((*lk).protocol)),
            read_volatile(addr_of!((*lk).local_ip4)),
            read_volatile(addr_of!((*lk).local_port)),
            read_volatile(addr_of!((*lk).remote_ip4)),
        )
    };
    if protocol != IPPROTO_TCP || family != u32::from(AF_INET) {
        return SK_PASS;
    }
    // Exempt by address, not interface: the pod talking to its own IP arrives on the
    // veth, and the agent's own connection to the app comes from the pod IP too.
    if remote_ip == local_ip || local_ip.to_ne_bytes()[0] == 127 {
        return SK_PASS;
    }
    let key = InboundKey { ipv4: local_ip, port: local_port as u16, _pad: 0 };
    // SAFETY: plain map lookup; copied out before use.
    let Some(slot) = (unsafe { INBOUND_PORTS.get(&key) }).copied() else {
        return SK_PASS;
    };
    match INBOUND_LISTENERS.redirect_sk_lookup(ctx, slot, 0) {
        Ok(()) => SK_PASS,
        // The agent's listener is gone (crash, restart): refuse rather than hand the
        // connection to the application outside the mesh.
        Err(_) => SK_DROP,
    }
}
