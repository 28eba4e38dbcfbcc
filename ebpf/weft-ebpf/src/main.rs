//! Weft's eBPF programs. Built for `bpfel-unknown-none` by the agent's build.rs.
//!
//! - `connect4`/`connect6` (cgroup sock_addr): an enrolled pod's TCP connect() is
//!   rewritten to the agent's outbound socket 127.0.0.1:15001 in the pod's own netns;
//!   the original destination is stored under the socket cookie.
//! - `sock_ops` (same cgroup): when the SYN is about to leave, the record is copied to a
//!   key the agent can build from its accepted socket (netns cookie + client address).
//! - `getpeername4/6`: the application keeps seeing the peer it asked for.
//! - `sk_lookup` (each enrolled pod's netns): connections to the pod's application ports
//!   are handed to the agent's inbound socket; with the agent gone they are refused.
#![no_std]
#![no_main]

mod inbound;
mod outbound;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
