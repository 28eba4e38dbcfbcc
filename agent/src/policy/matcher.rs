//! Typed policies and how one connection is matched against them.
//!
//! The structure is the resource's: a policy matches when any rule matches; a rule when all
//! its clauses match; a clause when any of its matches does; a match when every field it
//! sets matches (any value of a positive field, none of a negative one). ztunnel's edge
//! cases are kept exactly, and settled once when the policy is built rather than on every
//! connection: a match with no field set matches nothing, a clause without matches and a
//! rule without clauses match everything, a policy without rules matches nothing.

use std::{net::IpAddr, sync::Arc};
use weft_hbone::Identity;

use super::evaluate::ConnectionAttrs;

/// Which workloads a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every workload in the mesh.
    Global,
    /// Every workload in the policy's namespace.
    Namespace,
    /// Workloads whose record names the policy (`Workload.authorization_policies`).
    WorkloadSelector,
}

/// What a match does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    /// Reported, never enforced (Weft's extension of the resource; AuthorizationPolicy AUDIT).
    Audit,
}

/// Where a policy comes from, known by its reserved name; it only changes how a denial is
/// explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    AuthorizationPolicy,
    /// Converted from PeerAuthentication: it denies connections without mTLS.
    PeerAuthentication,
}

/// One validated policy, ready to match connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `namespace/name`, how decisions and logs name it.
    pub(super) key: Arc<str>,
    pub(super) namespace: Box<str>,
    pub(super) scope: Scope,
    pub(super) action: Action,
    pub(super) dry_run: bool,
    pub(super) origin: Origin,
    /// Only rules that can match (see the module comment); empty: matches nothing.
    pub(super) rules: Box<[Rule]>,
}

impl Policy {
    /// `namespace/name`.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// Reported instead of enforced.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether the connection matches the policy's rules (whatever its action).
    pub fn matches(&self, conn: &ConnectionAttrs<'_>) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.clauses.iter().all(|clause| clause.matches.iter().any(|m| m.matches(conn))))
    }
}

/// All clauses must match; none are trivially true (those are dropped when built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    pub(super) clauses: Box<[Clause]>,
}

/// Any match may match; never empty, and no match in it is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Clause {
    pub(super) matches: Box<[Match]>,
}

/// Every field that is set must match. At least one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Match {
    pub(super) namespaces: Box<[StringMatch]>,
    pub(super) not_namespaces: Box<[StringMatch]>,
    pub(super) service_accounts: Box<[ServiceAccount]>,
    pub(super) not_service_accounts: Box<[ServiceAccount]>,
    pub(super) principals: Box<[StringMatch]>,
    pub(super) not_principals: Box<[StringMatch]>,
    pub(super) source_ips: Box<[Cidr]>,
    pub(super) not_source_ips: Box<[Cidr]>,
    pub(super) destination_ips: Box<[Cidr]>,
    pub(super) not_destination_ips: Box<[Cidr]>,
    pub(super) destination_ports: Box<[u16]>,
    pub(super) not_destination_ports: Box<[u16]>,
}

impl Match {
    pub(super) fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.not_namespaces.is_empty()
            && self.service_accounts.is_empty()
            && self.not_service_accounts.is_empty()
            && self.principals.is_empty()
            && self.not_principals.is_empty()
            && self.source_ips.is_empty()
            && self.not_source_ips.is_empty()
            && self.destination_ips.is_empty()
            && self.not_destination_ips.is_empty()
            && self.destination_ports.is_empty()
            && self.not_destination_ports.is_empty()
    }

    fn matches(&self, conn: &ConnectionAttrs<'_>) -> bool {
        let id = conn.source_identity;
        // A plaintext source has no identity: no namespace, service account or principal
        // matches it, so positive lists fail and negative lists pass (as in ztunnel).
        field(&self.destination_ports, &self.not_destination_ports, |p| *p == conn.destination_port)
            && field(&self.source_ips, &self.not_source_ips, |c| c.contains(conn.source_ip))
            && field(&self.destination_ips, &self.not_destination_ips, |c| c.contains(conn.destination_ip))
            && field(&self.namespaces, &self.not_namespaces, |m| {
                id.is_some_and(|id| m.matches(id.namespace()))
            })
            && field(&self.service_accounts, &self.not_service_accounts, |sa| {
                id.is_some_and(|id| sa.matches(id))
            })
            && field(&self.principals, &self.not_principals, |m| id.is_some_and(|id| m.matches_principal(id)))
    }
}

/// One field of a match: any positive value matches (or there is none), and no negative one.
fn field<T>(positive: &[T], negative: &[T], mut predicate: impl FnMut(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&mut predicate)) && !negative.iter().any(predicate)
}

/// Istio's string match: `exact`, `prefix*`, `*suffix`, or `*` (any non-empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StringMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Presence,
}

impl StringMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == &**s,
            StringMatch::Prefix(s) => value.starts_with(&**s),
            StringMatch::Suffix(s) => value.ends_with(&**s),
            StringMatch::Presence => !value.is_empty(),
        }
    }

    /// Against the identity's principal, `<td>/ns/<ns>/sa/<sa>`, compared piece by piece so
    /// that no string is built per connection.
    fn matches_principal(&self, id: &Identity) -> bool {
        let pieces = [id.trust_domain(), "/ns/", id.namespace(), "/sa/", id.service_account()];
        match self {
            StringMatch::Exact(s) => {
                pieces.iter().map(|p| p.len()).sum::<usize>() == s.len() && starts_with(&pieces, s)
            }
            StringMatch::Prefix(s) => starts_with(&pieces, s),
            StringMatch::Suffix(s) => ends_with(&pieces, s),
            // A workload identity is never empty.
            StringMatch::Presence => true,
        }
    }
}

/// Whether the concatenation of `pieces` starts with `prefix`.
fn starts_with(pieces: &[&str], prefix: &str) -> bool {
    let mut rest = prefix.as_bytes();
    for piece in pieces {
        let n = rest.len().min(piece.len());
        if piece.as_bytes()[..n] != rest[..n] {
            return false;
        }
        rest = &rest[n..];
        if rest.is_empty() {
            return true;
        }
    }
    rest.is_empty()
}

/// Whether the concatenation of `pieces` ends with `suffix`.
fn ends_with(pieces: &[&str], suffix: &str) -> bool {
    let mut rest = suffix.as_bytes();
    for piece in pieces.iter().rev() {
        let n = rest.len().min(piece.len());
        if piece.as_bytes()[piece.len() - n..] != rest[rest.len() - n..] {
            return false;
        }
        rest = &rest[..rest.len() - n];
        if rest.is_empty() {
            return true;
        }
    }
    rest.is_empty()
}

/// A service account by namespace and name; the trust domain is not compared (as ztunnel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServiceAccount {
    pub(super) namespace: Box<str>,
    pub(super) name: Box<str>,
}

impl ServiceAccount {
    fn matches(&self, id: &Identity) -> bool {
        id.namespace() == &*self.namespace && id.service_account() == &*self.name
    }
}

/// An address block, its host bits cleared when built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cidr {
    V4 { network: u32, length: u8 },
    V6 { network: u128, length: u8 },
}

impl Cidr {
    /// `None` when `length` exceeds the family's width.
    pub(super) fn new(ip: IpAddr, length: u32) -> Option<Cidr> {
        match ip {
            IpAddr::V4(v4) if length <= 32 => {
                let length = length as u8;
                Some(Cidr::V4 { network: u32::from(v4) & mask32(length), length })
            }
            IpAddr::V6(v6) if length <= 128 => {
                let length = length as u8;
                Some(Cidr::V6 { network: u128::from(v6) & mask128(length), length })
            }
            _ => None,
        }
    }

    /// `ip` must be canonical (an IPv4-mapped IPv6 address given as IPv4), which
    /// [`ConnectionAttrs`] users get from `evaluate`.
    fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Cidr::V4 { network, length }, IpAddr::V4(v4)) => u32::from(v4) & mask32(length) == network,
            (Cidr::V6 { network, length }, IpAddr::V6(v6)) => u128::from(v6) & mask128(length) == network,
            _ => false,
        }
    }
}

fn mask32(length: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0)
}

fn mask128(length: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_pieces_match_like_the_joined_string() {
        let id = Identity::new("cluster.local", "shop", "cart").unwrap();
        let joined = id.principal();
        for probe in [
            "",
            "c",
            "cluster.local",
            "cluster.local/",
            "cluster.local/ns/",
            "cluster.local/ns/shop/sa/",
            "cluster.local/ns/shop/sa/cart",
            "cluster.local/ns/shop/sa/carts",
            "cluster.local/ns/shopping/sa/cart",
            "/ns/shop/sa/cart",
            "shop/sa/cart",
            "t",
            "other.local/ns/shop/sa/cart",
            "xcluster.local/ns/shop/sa/cart",
        ] {
            let exact = StringMatch::Exact(probe.into());
            let prefix = StringMatch::Prefix(probe.into());
            let suffix = StringMatch::Suffix(probe.into());
            assert_eq!(exact.matches_principal(&id), joined == probe, "exact {probe:?}");
            assert_eq!(prefix.matches_principal(&id), joined.starts_with(probe), "prefix {probe:?}");
            assert_eq!(suffix.matches_principal(&id), joined.ends_with(probe), "suffix {probe:?}");
        }
    }

    #[test]
    fn cidrs_clear_host_bits_and_keep_families_apart() {
        let c = Cidr::new("10.1.2.3".parse().unwrap(), 16).unwrap();
        assert_eq!(c, Cidr::new("10.1.0.0".parse().unwrap(), 16).unwrap());
        assert!(c.contains("10.1.255.1".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::a01:203".parse().unwrap()), "an IPv6 address is never in an IPv4 block");
        let all = Cidr::new("0.0.0.0".parse().unwrap(), 0).unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let host = Cidr::new("2001:db8::1".parse().unwrap(), 128).unwrap();
        assert!(host.contains("2001:db8::1".parse().unwrap()));
        assert!(!host.contains("2001:db8::2".parse().unwrap()));
        let v6 = Cidr::new("2001:db8::".parse().unwrap(), 32).unwrap();
        assert!(v6.contains("2001:db8:ffff::9".parse().unwrap()));
        assert!(Cidr::new("10.0.0.0".parse().unwrap(), 33).is_none());
        assert!(Cidr::new("::".parse().unwrap(), 129).is_none());
    }
}
