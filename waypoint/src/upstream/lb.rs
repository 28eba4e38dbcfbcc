//! Load balancers, as Envoy's: LEAST_REQUEST (power of `choice_count` random choices, 2
//! by default, Istio's default policy), ROUND_ROBIN, RANDOM, RING_HASH and MAGLEV (on the
//! route's hash key; without one they pick at random, as Envoy does). The hash structures
//! are built once per config; a pick reads atomics only.

use super::{ClusterStats, Endpoint};
use std::{
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    sync::{Arc, atomic::Ordering},
};

/// The cluster's `lb_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LbPolicy {
    LeastRequest { choice_count: u32 },
    RoundRobin,
    Random,
    RingHash { min_ring_size: u32 },
    Maglev,
}

/// The Maglev table size Envoy uses by default (a prime).
const MAGLEV_TABLE_SIZE: usize = 65537;

/// A built load balancer: the policy plus what hashing needs.
#[derive(Debug)]
pub enum LoadBalancer {
    LeastRequest {
        choice_count: u32,
    },
    RoundRobin,
    Random,
    /// Points on the ring, sorted by hash: (hash, endpoint index).
    Ring(Vec<(u64, u32)>),
    /// Envoy's Maglev lookup table: slot → endpoint index.
    Maglev(Vec<u32>),
}

/// A stable 64-bit hash (SipHash with fixed keys: the same in every process, so two
/// waypoint replicas hash a key alike).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes)
}

impl LoadBalancer {
    pub fn build(policy: LbPolicy, endpoints: &[Arc<Endpoint>]) -> LoadBalancer {
        match policy {
            LbPolicy::LeastRequest { choice_count } => LoadBalancer::LeastRequest { choice_count },
            LbPolicy::RoundRobin => LoadBalancer::RoundRobin,
            LbPolicy::Random => LoadBalancer::Random,
            LbPolicy::RingHash { min_ring_size } => LoadBalancer::Ring(ring(endpoints, min_ring_size)),
            LbPolicy::Maglev => LoadBalancer::Maglev(maglev(endpoints)),
        }
    }

    /// An endpoint, or none if there is none outside `out` (ejected endpoints). `previous`
    /// is avoided when another exists (Envoy's previous-hosts retry predicate).
    pub fn pick<'a>(
        &self,
        endpoints: &'a [Arc<Endpoint>],
        stats: &ClusterStats,
        hash: Option<u64>,
        previous: Option<&Arc<Endpoint>>,
        out: &dyn Fn(usize) -> bool,
    ) -> Option<&'a Arc<Endpoint>> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return (!out(0)).then(|| &endpoints[0]);
        }
        let avoid = |i: usize| out(i) || previous.is_some_and(|p| Arc::ptr_eq(p, &endpoints[i]));
        let candidate = match (self, hash) {
            (LoadBalancer::Ring(ring), Some(h)) if !ring.is_empty() => {
                let at = ring.partition_point(|(point, _)| *point < h) % ring.len();
                // Walk on from the point to the first endpoint not to avoid.
                (0..ring.len())
                    .map(|k| ring[(at + k) % ring.len()].1 as usize)
                    .find(|&i| !avoid(i))
                    .unwrap_or(ring[at].1 as usize)
            }
            (LoadBalancer::Maglev(table), Some(h)) if !table.is_empty() => {
                table[(h % table.len() as u64) as usize] as usize
            }
            (LoadBalancer::RoundRobin, _) => {
                let i = stats.rr_next.fetch_add(1, Ordering::Relaxed) % n;
                if avoid(i) { stats.rr_next.fetch_add(1, Ordering::Relaxed) % n } else { i }
            }
            (LoadBalancer::LeastRequest { choice_count }, _) => {
                let mut best = random_except(n, &avoid);
                for _ in 1..(*choice_count).max(1) {
                    let other = random_except(n, &avoid);
                    let load = |i: usize| endpoints[i].active.load(Ordering::Relaxed);
                    if load(other) < load(best) {
                        best = other;
                    }
                }
                best
            }
            // RANDOM, and the hash policies without a key.
            _ => random_except(n, &avoid),
        };
        // The policy's choice if it is clear; else the next endpoint that is (new and
        // healthy, else healthy): what Envoy's host selection retries amount to.
        let next = |ok: &dyn Fn(usize) -> bool| (0..n).map(|k| (candidate + k) % n).find(|&i| ok(i));
        let index = next(&|i| !avoid(i)).or_else(|| next(&|i| !out(i)))?;
        endpoints.get(index)
    }
}

/// A random index below `n` (n ≥ 2) that `avoid` does not refuse, if one turns up in a few
/// draws (then any).
fn random_except(n: usize, avoid: &impl Fn(usize) -> bool) -> usize {
    let mut i = fastrand::usize(..n);
    for _ in 0..3 {
        if !avoid(i) {
            break;
        }
        i = fastrand::usize(..n);
    }
    i
}

/// Envoy's ring: each endpoint hashed onto the ring `ring_size / n` times (as
/// `address_k`), at least `min_ring_size` points in all (Envoy's default 1024).
fn ring(endpoints: &[Arc<Endpoint>], min_ring_size: u32) -> Vec<(u64, u32)> {
    if endpoints.is_empty() {
        return Vec::new();
    }
    let per_endpoint = (min_ring_size.max(1) as usize).div_ceil(endpoints.len());
    let mut points = Vec::with_capacity(per_endpoint * endpoints.len());
    for (i, e) in endpoints.iter().enumerate() {
        for k in 0..per_endpoint {
            points.push((hash_bytes(format!("{}_{k}", e.address).as_bytes()), i as u32));
        }
    }
    points.sort_unstable();
    points
}

/// Maglev's table (Eisenbud et al., as Envoy builds it): each endpoint fills slots in the
/// order of its own permutation, in turns, until the table is full.
fn maglev(endpoints: &[Arc<Endpoint>]) -> Vec<u32> {
    let n = endpoints.len();
    if n == 0 {
        return Vec::new();
    }
    let m = MAGLEV_TABLE_SIZE as u64;
    let perms: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|e| {
            let name = e.address.to_string();
            let offset = hash_bytes(name.as_bytes()) % m;
            let skip = hash_bytes(format!("{name}#skip").as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut table = vec![u32::MAX; MAGLEV_TABLE_SIZE];
    let mut filled = 0;
    'fill: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut slot = (offset + next[i] * skip) % m;
            while table[slot as usize] != u32::MAX {
                next[i] += 1;
                slot = (offset + next[i] * skip) % m;
            }
            table[slot as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == MAGLEV_TABLE_SIZE {
                break 'fill;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_hbone::Identity;

    fn endpoints(n: u8) -> Vec<Arc<Endpoint>> {
        let id = Identity::new("cluster.local", "ns", "sa").unwrap();
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(format!("10.0.0.{i}:80").parse().unwrap(), 15008, Some(id.clone())))
            })
            .collect()
    }

    fn index(eps: &[Arc<Endpoint>], e: &Arc<Endpoint>) -> usize {
        eps.iter().position(|x| Arc::ptr_eq(x, e)).unwrap()
    }

    #[test]
    fn round_robin_takes_turns() {
        let eps = endpoints(3);
        let stats = ClusterStats::default();
        let lb = LoadBalancer::build(LbPolicy::RoundRobin, &eps);
        let picks: Vec<usize> =
            (0..6).map(|_| index(&eps, lb.pick(&eps, &stats, None, None, &|_| false).unwrap())).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let eps = endpoints(2);
        eps[0].active.store(10, Ordering::Relaxed);
        let stats = ClusterStats::default();
        let lb = LoadBalancer::build(LbPolicy::LeastRequest { choice_count: 2 }, &eps);
        let busy = (0..1000)
            .filter(|_| index(&eps, lb.pick(&eps, &stats, None, None, &|_| false).unwrap()) == 0)
            .count();
        // With two choices out of two, the busy one wins only when both draws land on it:
        // about a quarter of the time.
        assert!((150..350).contains(&busy), "{busy}");
    }

    #[test]
    fn hashes_are_sticky_and_spread() {
        for policy in [LbPolicy::RingHash { min_ring_size: 1024 }, LbPolicy::Maglev] {
            let eps = endpoints(4);
            let stats = ClusterStats::default();
            let lb = LoadBalancer::build(policy, &eps);
            let mut seen = [0usize; 4];
            for key in 0..400u32 {
                let h = hash_bytes(&key.to_be_bytes());
                let first = index(&eps, lb.pick(&eps, &stats, Some(h), None, &|_| false).unwrap());
                assert_eq!(
                    first,
                    index(&eps, lb.pick(&eps, &stats, Some(h), None, &|_| false).unwrap()),
                    "{policy:?}"
                );
                seen[first] += 1;
            }
            assert!(seen.iter().all(|&s| s > 40), "{policy:?}: {seen:?}");
        }
    }

    #[test]
    fn ejected_endpoints_are_skipped_by_every_policy() {
        let eps = endpoints(3);
        let stats = ClusterStats::default();
        let policies = [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest { choice_count: 2 },
            LbPolicy::Maglev,
            LbPolicy::RingHash { min_ring_size: 64 },
        ];
        for policy in policies {
            let lb = LoadBalancer::build(policy, &eps);
            for key in 0..50u32 {
                let h = Some(hash_bytes(&key.to_be_bytes()));
                let e = lb.pick(&eps, &stats, h, None, &|i| i != 1).unwrap();
                assert_eq!(index(&eps, e), 1, "{policy:?}");
            }
            assert!(lb.pick(&eps, &stats, None, None, &|_| true).is_none(), "{policy:?}: none left");
        }
    }

    #[test]
    fn a_retry_avoids_the_previous_endpoint() {
        let eps = endpoints(2);
        let stats = ClusterStats::default();
        for policy in [LbPolicy::RoundRobin, LbPolicy::Maglev, LbPolicy::RingHash { min_ring_size: 64 }] {
            let lb = LoadBalancer::build(policy, &eps);
            let h = Some(hash_bytes(b"user"));
            let first = lb.pick(&eps, &stats, h, None, &|_| false).unwrap().clone();
            let retry = lb.pick(&eps, &stats, h, Some(&first), &|_| false).unwrap();
            assert!(!Arc::ptr_eq(&first, retry), "{policy:?}");
        }
    }
}
