//! The test bed's address plan, written once.
//!
//! Everything lives in 198.18.0.0/15, the range RFC 2544 sets aside for benchmarking, so a
//! test address can never be mistaken for (or routed to) a real network:
//!
//! | what                  | address                                  |
//! |-----------------------|------------------------------------------|
//! | node k underlay (eth0)| 198.18.0.k/24, on the bed's own bridge   |
//! | node k pod CIDR       | 198.18.k.0/24                            |
//! | pod gateway on node k | 198.18.k.1 (on every pod veth of node k) |
//! | n-th pod of node k    | 198.18.k.(n + 2)                         |
//! | service VIPs          | 198.19.0.0/16 (not routed by the bed)    |
//!
//! Node indexes start at 1 and stop at 254, so a node's pod CIDR never collides with the
//! underlay /24 (index 0). They are claimed machine-wide, not per bed (see
//! `state::claim_node_index`): beds running at once never share a pod address, because
//! agents find a pod's network namespace by its IP.

use std::net::Ipv4Addr;

/// The most nodes a bed can hold: k must fit in the third octet, and 0 is the underlay.
pub const MAX_NODES: u8 = 254;

/// The most pods one node can hold: .0, .1 (gateway) and .255 are never pod addresses.
pub const MAX_PODS_PER_NODE: u8 = 253;

/// The range service VIPs are allocated from; the bed itself routes none of it.
pub const SERVICE_VIP_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 0, 0), 16);

/// Prefix length of the underlay subnet all nodes share.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;

/// Underlay address of node `k` (1-based).
pub fn node_ip(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, k)
}

/// Pod CIDR of node `k`, as network address and prefix length.
pub fn pod_cidr(k: u8) -> (Ipv4Addr, u8) {
    (Ipv4Addr::new(198, 18, k, 0), 24)
}

/// The gateway address pods on node `k` route through (calico-style, on each pod veth).
pub fn pod_gateway(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, k, 1)
}

/// Address of the `n`-th (0-based) pod placed on node `k`.
pub fn pod_ip(k: u8, n: u8) -> Ipv4Addr {
    debug_assert!(n < MAX_PODS_PER_NODE);
    Ipv4Addr::new(198, 18, k, n + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_avoid_network_gateway_and_broadcast() {
        let first = pod_ip(3, 0);
        let last = pod_ip(3, MAX_PODS_PER_NODE - 1);
        assert_eq!(first, Ipv4Addr::new(198, 18, 3, 2));
        assert_eq!(last, Ipv4Addr::new(198, 18, 3, 254));
        assert_ne!(first, pod_gateway(3));
    }

    #[test]
    fn pod_cidrs_never_overlap_the_underlay() {
        for k in 1..=MAX_NODES {
            assert_ne!(pod_cidr(k).0.octets()[2], node_ip(k).octets()[2]);
        }
    }
}
