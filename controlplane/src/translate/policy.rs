//! AuthorizationPolicy and PeerAuthentication → `istio.security.Authorization`, the L4
//! policy agents enforce, and the policy names each Workload lists.
//!
//! This follows istiod's ambient conversion (`pilot/pkg/serviceregistry/ambient`:
//! `authorization.go`, `policies.go`, `workloads.go`), with the differences the issue asks
//! for, each marked where it is made:
//!
//! - **Conditions an agent cannot see** (HTTP methods, paths, hosts, request principals, JWT
//!   claims, headers). istiod leaves an ALLOW rule that needs one out — the policy allows
//!   less — and Weft does the same. For DENY, istiod keeps such a condition as an empty match,
//!   which ztunnel skips, so a DENY rule made only of HTTP conditions denies nothing. Weft
//!   fails closed instead, as Istio's sidecars do on TCP ports: the condition is taken as met,
//!   so the rule denies at least what it would at L7. AUDIT is treated like DENY.
//! - **AUDIT** is sent (action AUDIT, a Weft extension) so agents can report its matches;
//!   istiod sends nothing for it.
//! - **remoteIpBlocks** and `remote.ip` are the connection's source address, as for Envoy on a
//!   TCP listener without PROXY protocol (istiod treats them as HTTP attributes); and
//!   `source.serviceAccount` becomes a service-account match like `serviceAccounts` (istiod
//!   treats it as HTTP).
//! - **Dry run** is always sent; istiod sends it only behind a feature flag because old
//!   ztunnels would enforce it. Weft's agent honours it.
//!
//! PeerAuthentication (istiod's `convertedSelectorPeerAuthentications` and
//! `convertPeerAuthentication`): a workload whose effective mode is STRICT lists the static
//! DENY-plaintext policy `<root>/istio_converted_static_strict`, sent whenever any
//! PeerAuthentication exists; a workload PeerAuthentication whose port-level modes differ
//! from its workload's effective mode becomes `converted_peer_authentication_<name>`, listed
//! instead. Weft computes the effective modes once (workload over namespace over mesh, a
//! port over its workload; UNSET inherits; DISABLE counts as PERMISSIVE, since an agent
//! cannot switch mTLS off, only stop refusing plaintext). Where istiod's two functions
//! disagree (`convertPeerAuthentication` drops a STRICT port when the mesh is STRICT even
//! under a workload PERMISSIVE, so the workload names a policy that is never sent;
//! `convertedSelectorPeerAuthentications` ignores a port DISABLE under an inherited STRICT),
//! Weft follows that precedence.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use weft_xds::{
    istio::security::{self, Authorization, string_match::MatchType},
    server::{Scope, ScopedResource},
};

use super::Options;
use crate::config::{
    kinds::{
        Labels,
        kubernetes::Pod,
        security::{Action, AuthorizationPolicy, MtlsMode, PeerAuthentication, Rule, Source},
    },
    store::ConfigSnapshot,
};

/// The DENY-plaintext policy a STRICT workload lists (istiod's name; `_` is not allowed in
/// Kubernetes names, so it cannot collide with an object).
pub const STATIC_STRICT_POLICY: &str = "istio_converted_static_strict";

/// Prefix of the policy converted from a workload PeerAuthentication with port-level modes.
pub const CONVERTED_PEER_AUTHENTICATION_PREFIX: &str = "converted_peer_authentication_";

// ---- what agents receive ------------------------------------------------------------------

/// Every Authorization resource, each sent only to the agents of nodes running a pod it
/// applies to (mesh-wide ones, and the static STRICT policy, to all).
pub fn authorizations(cfg: &ConfigSnapshot, opts: &Options) -> Vec<ScopedResource> {
    let mut out: Vec<ScopedResource> =
        cfg.authorization_policies.iter().filter_map(|p| authorization_policy(cfg, opts, p)).collect();
    out.extend(cfg.peer_authentications.iter().filter_map(|pa| converted_peer_authentication(cfg, opts, pa)));
    if !cfg.peer_authentications.is_empty() {
        out.push(static_strict(opts));
    }
    out
}

/// The resources whose scope can change when pods of `namespaces` change (were added,
/// removed, relabelled or moved): the policies of those namespaces and the selector
/// policies of the root namespace, which select pods in every namespace.
pub fn authorizations_after_pod_changes(
    cfg: &ConfigSnapshot,
    opts: &Options,
    namespaces: &BTreeSet<String>,
) -> Vec<ScopedResource> {
    let mut out = Vec::new();
    for ns in namespaces {
        out.extend(
            cfg.authorization_policies.in_namespace(ns).filter_map(|p| authorization_policy(cfg, opts, p)),
        );
        out.extend(
            cfg.peer_authentications
                .in_namespace(ns)
                .filter_map(|pa| converted_peer_authentication(cfg, opts, pa)),
        );
    }
    if !namespaces.is_empty() && !namespaces.contains(&opts.root_namespace) {
        out.extend(
            cfg.authorization_policies
                .in_namespace(&opts.root_namespace)
                .filter(|p| selector(p).is_some())
                .filter_map(|p| authorization_policy(cfg, opts, p)),
        );
    }
    out
}

/// One AuthorizationPolicy's resource; `None` when agents have no part in it (it targets
/// waypoints, or its action is CUSTOM).
pub fn authorization_policy(
    cfg: &ConfigSnapshot,
    opts: &Options,
    p: &AuthorizationPolicy,
) -> Option<ScopedResource> {
    let message = convert_authorization_policy(p, opts)?;
    let ns = p.metadata.namespace.as_str();
    let proxies = match (selector(p), ns == opts.root_namespace) {
        (None, true) => Scope::All,
        (None, false) => nodes(cfg.pods.in_namespace(ns).map(AsRef::as_ref)),
        (Some(sel), false) => nodes(
            cfg.pods.in_namespace(ns).filter(|pod| selects(sel, &pod.metadata.labels)).map(AsRef::as_ref),
        ),
        // A root-namespace selector picks workloads in every namespace.
        (Some(sel), true) => {
            nodes(cfg.pods.iter().filter(|pod| selects(sel, &pod.metadata.labels)).map(AsRef::as_ref))
        }
    };
    Some(ScopedResource::from_message(format!("{ns}/{}", p.metadata.name), proxies, &message))
}

// ---- what a workload lists ------------------------------------------------------------------

/// `Workload.authorization_policies` for a pod, as istiod fills it: the selector policies
/// of its namespace and of the root namespace that select it (sorted), then the
/// PeerAuthentication policy for its effective mode, if any.
pub fn workload_policies(cfg: &ConfigSnapshot, opts: &Options, pod: &Pod) -> Vec<String> {
    let ns = pod.metadata.namespace.as_str();
    let root = opts.root_namespace.as_str();
    let candidates = cfg.authorization_policies.in_namespace(root).chain(
        if ns == root { None } else { Some(cfg.authorization_policies.in_namespace(ns)) }
            .into_iter()
            .flatten(),
    );
    let mut names: Vec<String> = candidates
        .filter(|p| for_agents(p) && selector(p).is_some_and(|sel| selects(sel, &pod.metadata.labels)))
        .map(|p| format!("{}/{}", p.metadata.namespace, p.metadata.name))
        .collect();
    names.sort();
    names.extend(peer_authentication_policy(cfg, opts, pod));
    names
}

// ---- AuthorizationPolicy --------------------------------------------------------------------

/// Whether agents receive the policy: it names no targets (those are for waypoints) and
/// its action is not CUSTOM (an external authorizer's business).
fn for_agents(p: &AuthorizationPolicy) -> bool {
    !p.has_target_refs() && p.spec.action != Action::Custom
}

/// The workload selector's labels; `None` for none or no labels (namespace-wide). istiod
/// would mark a selector without labels WORKLOAD_SELECTOR and then attach it to no workload;
/// Weft gives it the meaning a sidecar gives it, the whole namespace.
fn selector(p: &AuthorizationPolicy) -> Option<&BTreeMap<String, String>> {
    p.spec.selector.as_ref().map(|s| &s.match_labels).filter(|l| !l.is_empty())
}

fn selects(selector: &BTreeMap<String, String>, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The agents that need a resource: those of the nodes the pods run on.
fn nodes<'a>(pods: impl Iterator<Item = &'a Pod>) -> Scope {
    let nodes: BTreeSet<&str> = pods.filter_map(|pod| pod.spec.node_name.as_deref()).collect();
    Scope::AnyOf(nodes.into_iter().map(|n| Scope::Node(n.to_owned())).collect())
}

/// The policy as agents enforce it (istiod's `convertAuthorizationPolicy`, with the
/// differences in the module comment); `None` when agents have no part in it.
pub fn convert_authorization_policy(p: &AuthorizationPolicy, opts: &Options) -> Option<Authorization> {
    if !for_agents(p) {
        return None;
    }
    let (action, unseen) = match p.spec.action {
        Action::Allow => (security::Action::Allow, Unseen::LeaveRuleOut),
        Action::Deny => (security::Action::Deny, Unseen::TakeAsMet),
        Action::Audit => (security::Action::Audit, Unseen::TakeAsMet),
        Action::Custom => return None,
    };
    let scope = match (selector(p), p.metadata.namespace == opts.root_namespace) {
        (Some(_), _) => security::Scope::WorkloadSelector,
        (None, true) => security::Scope::Global,
        (None, false) => security::Scope::Namespace,
    };
    let ns = p.metadata.namespace.as_str();
    Some(Authorization {
        name: p.metadata.name.clone(),
        namespace: ns.to_owned(),
        scope: scope as i32,
        action: action as i32,
        // `None` (no `rules:`) is no rule: ALLOW then allows nothing.
        rules: p.spec.rules.iter().flatten().filter_map(|rule| convert_rule(rule, ns, unseen)).collect(),
        // Validation rejected values that are not booleans.
        dry_run: p.dry_run().unwrap_or(false),
        extensions: Vec::new(),
    })
}

/// What to do with a condition on something an agent cannot see (an HTTP attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unseen {
    /// ALLOW: the rule cannot be shown to hold, so it allows nothing and is left out.
    LeaveRuleOut,
    /// DENY and AUDIT: the condition counts as met, so the rule covers at least what it
    /// would with HTTP in view.
    TakeAsMet,
}

/// One rule: a clause for `to`, one for `from`, one per `when` condition (istiod's order).
/// `None` when the rule is left out or can never match.
fn convert_rule(rule: &Rule, ns: &str, unseen: Unseen) -> Option<security::Rule> {
    let mut clauses = Vec::new();
    let mut needs_http = false;

    // `to`: alternatives (OR), each its ports.
    let mut to = Alternatives::default();
    for op in rule.to.iter().flatten().filter_map(|t| t.operation.as_ref()) {
        let http = op.http_fields().next().is_some();
        needs_http |= http;
        to.push(
            security::Match {
                destination_ports: ports(op.ports.as_deref()),
                not_destination_ports: ports(op.not_ports.as_deref()),
                ..Default::default()
            },
            http,
        );
    }
    clauses.extend(to.into_clause()?);

    // `from`: alternatives (OR), each the AND of its fields.
    let mut from = Alternatives::default();
    for src in rule.from.iter().flatten().filter_map(|f| f.source.as_ref()) {
        let http = src.http_fields().next().is_some();
        needs_http |= http;
        match source_match(src, ns) {
            Some(m) => from.push(m, http),
            None => from.impossible(),
        }
    }
    clauses.extend(from.into_clause()?);

    // `when`: each condition a clause of its own. The keys matched here are
    // `L4_CONDITIONS`, the ones validation does not warn about.
    for c in &rule.when {
        let (values, not_values) = (c.values.as_slice(), c.not_values.as_slice());
        let m = match c.key.as_str() {
            "source.ip" | "remote.ip" => security::Match {
                source_ips: addresses(values),
                not_source_ips: addresses(not_values),
                ..Default::default()
            },
            "destination.ip" => security::Match {
                destination_ips: addresses(values),
                not_destination_ips: addresses(not_values),
                ..Default::default()
            },
            "destination.port" => security::Match {
                destination_ports: ports(Some(values)),
                not_destination_ports: ports(Some(not_values)),
                ..Default::default()
            },
            "source.namespace" => security::Match {
                namespaces: string_matches(values),
                not_namespaces: string_matches(not_values),
                ..Default::default()
            },
            "source.principal" => security::Match {
                principals: string_matches(values),
                not_principals: string_matches(not_values),
                ..Default::default()
            },
            "source.serviceAccount" => security::Match {
                service_accounts: service_accounts(values, ns),
                not_service_accounts: service_accounts(not_values, ns),
                ..Default::default()
            },
            _ => {
                needs_http = true;
                continue;
            }
        };
        clauses.push(security::Clause { matches: vec![m] });
    }

    if needs_http && unseen == Unseen::LeaveRuleOut {
        return None;
    }
    Some(security::Rule { clauses })
}

/// The alternatives of a `to` or `from` list, becoming one clause.
#[derive(Default)]
struct Alternatives {
    matches: Vec<security::Match>,
    /// An alternative with only HTTP conditions, taken as met: the clause always holds.
    always: bool,
    /// Some alternative could never match (disjoint address blocks) and was left out.
    impossible: bool,
}

impl Alternatives {
    fn push(&mut self, m: security::Match, http: bool) {
        if is_empty(&m) {
            // Validation refuses an empty `source`/`operation`, so an empty match had only
            // HTTP conditions. (Under ALLOW the whole rule is left out anyway.)
            self.always |= http;
        } else {
            self.matches.push(m);
        }
    }

    fn impossible(&mut self) {
        self.impossible = true;
    }

    /// `Some(None)`: no clause (the list is absent or always holds); `None`: the rule can
    /// never match.
    fn into_clause(self) -> Option<Option<security::Clause>> {
        if self.always {
            Some(None)
        } else if self.matches.is_empty() {
            if self.impossible { None } else { Some(None) }
        } else {
            Some(Some(security::Clause { matches: self.matches }))
        }
    }
}

fn is_empty(m: &security::Match) -> bool {
    *m == security::Match::default()
}

/// One `from.source`; `None` when its `ipBlocks` and `remoteIpBlocks` have no address in
/// common (both are the source address at L4, so both must hold).
fn source_match(src: &Source, ns: &str) -> Option<security::Match> {
    let blocks =
        |v: &Option<Vec<String>>| v.iter().flatten().filter_map(|b| Block::parse(b)).collect::<Vec<_>>();
    let (ip_blocks, remote_ip_blocks) = (blocks(&src.ip_blocks), blocks(&src.remote_ip_blocks));
    let source_ips = match (ip_blocks.is_empty(), remote_ip_blocks.is_empty()) {
        (false, false) => {
            let common = Block::intersect(&ip_blocks, &remote_ip_blocks);
            if common.is_empty() {
                return None;
            }
            common
        }
        (false, true) => ip_blocks,
        (true, _) => remote_ip_blocks,
    };
    // Neither list may hold the address: their union may not.
    let mut not_source_ips = blocks(&src.not_ip_blocks);
    not_source_ips.extend(blocks(&src.not_remote_ip_blocks));
    let list = |v: &Option<Vec<String>>| string_matches(v.as_deref().unwrap_or_default());
    Some(security::Match {
        namespaces: list(&src.namespaces),
        not_namespaces: list(&src.not_namespaces),
        service_accounts: service_accounts(src.service_accounts.as_deref().unwrap_or_default(), ns),
        not_service_accounts: service_accounts(src.not_service_accounts.as_deref().unwrap_or_default(), ns),
        principals: list(&src.principals),
        not_principals: list(&src.not_principals),
        source_ips: source_ips.into_iter().map(Block::to_proto).collect(),
        not_source_ips: not_source_ips.into_iter().map(Block::to_proto).collect(),
        ..Default::default()
    })
}

/// Istio's wildcards: `*` any non-empty value, `*x` a suffix, `x*` a prefix (checked in
/// istiod's order).
fn string_matches(values: &[String]) -> Vec<security::StringMatch> {
    values
        .iter()
        .map(|v| {
            let match_type = if v == "*" {
                MatchType::Presence(())
            } else if let Some(rest) = v.strip_prefix('*') {
                MatchType::Suffix(rest.to_owned())
            } else if let Some(rest) = v.strip_suffix('*') {
                MatchType::Prefix(rest.to_owned())
            } else {
                MatchType::Exact(v.clone())
            };
            security::StringMatch { match_type: Some(match_type) }
        })
        .collect()
}

/// `sa` (in the policy's namespace) or `namespace/sa`.
fn service_accounts(values: &[String], ns: &str) -> Vec<security::ServiceAccountMatch> {
    values
        .iter()
        .map(|v| {
            let (namespace, service_account) = v.split_once('/').unwrap_or((ns, v));
            security::ServiceAccountMatch {
                namespace: namespace.to_owned(),
                service_account: service_account.to_owned(),
            }
        })
        .collect()
}

/// Port numbers (validation has checked them).
fn ports(values: Option<&[String]>) -> Vec<u32> {
    values.unwrap_or_default().iter().filter_map(|p| p.parse::<u16>().ok()).map(u32::from).collect()
}

fn addresses(values: &[String]) -> Vec<security::Address> {
    values.iter().filter_map(|b| Block::parse(b)).map(Block::to_proto).collect()
}

/// An address block, `ip` or `ip/len` (validation has checked them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    ip: IpAddr,
    len: u32,
}

impl Block {
    fn parse(text: &str) -> Option<Block> {
        let (ip, len) = text.split_once('/').map_or((text, None), |(ip, len)| (ip, Some(len)));
        let ip: IpAddr = ip.parse().ok()?;
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let len = len.map_or(Some(width), |l| l.parse().ok().filter(|l| *l <= width))?;
        Some(Block { ip, len })
    }

    fn to_proto(self) -> security::Address {
        let address = match self.ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        security::Address { address, length: self.len }
    }

    /// The address as a number, and its family's width.
    fn bits(&self) -> (u128, u32) {
        match self.ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    }

    /// Whether every address of `inner` is in `self`.
    fn covers(&self, inner: &Block) -> bool {
        let ((outer_bits, width), (inner_bits, inner_width)) = (self.bits(), inner.bits());
        let shift = width - self.len;
        width == inner_width
            && inner.len >= self.len
            && outer_bits.checked_shr(shift).unwrap_or(0) == inner_bits.checked_shr(shift).unwrap_or(0)
    }

    /// The addresses in both lists: two blocks overlap only when one holds the other.
    fn intersect(a: &[Block], b: &[Block]) -> Vec<Block> {
        let mut out = Vec::new();
        for x in a {
            for y in b {
                let common = if x.covers(y) {
                    *y
                } else if y.covers(x) {
                    *x
                } else {
                    continue;
                };
                if !out.contains(&common) {
                    out.push(common);
                }
            }
        }
        out
    }
}

// ---- PeerAuthentication ---------------------------------------------------------------------

/// The static policy: DENY any connection without a client identity.
fn static_strict(opts: &Options) -> ScopedResource {
    let message = Authorization {
        name: STATIC_STRICT_POLICY.to_owned(),
        namespace: opts.root_namespace.clone(),
        scope: security::Scope::WorkloadSelector as i32,
        action: security::Action::Deny as i32,
        rules: vec![security::Rule { clauses: vec![plaintext_clause()] }],
        ..Default::default()
    };
    let name = format!("{}/{STATIC_STRICT_POLICY}", opts.root_namespace);
    ScopedResource::from_message(name, Scope::All, &message)
}

/// Matches a connection without a client identity (`notPrincipals: ["*"]`).
fn plaintext_match() -> security::Match {
    security::Match {
        not_principals: vec![security::StringMatch { match_type: Some(MatchType::Presence(())) }],
        ..Default::default()
    }
}

fn plaintext_clause() -> security::Clause {
    security::Clause { matches: vec![plaintext_match()] }
}

/// Whether a mode makes mTLS required, given the mode it inherits (UNSET). DISABLE counts as
/// PERMISSIVE: an agent cannot switch mTLS off, only stop refusing plaintext.
fn strict(mode: MtlsMode, inherited: bool) -> bool {
    match mode {
        MtlsMode::Unset => inherited,
        MtlsMode::Strict => true,
        MtlsMode::Permissive | MtlsMode::Disable => false,
    }
}

/// The oldest of several policies, which Istio lets win a conflict; the name breaks ties
/// (and orders objects without a creation time, as in files).
fn oldest<'a>(policies: impl Iterator<Item = &'a PeerAuthentication>) -> Option<&'a PeerAuthentication> {
    policies.min_by(|a, b| {
        (a.metadata.creation_timestamp.as_deref(), &a.metadata.name)
            .cmp(&(b.metadata.creation_timestamp.as_deref(), &b.metadata.name))
    })
}

/// Whether mTLS is required in `ns` by its namespace-wide policy or, where that is UNSET
/// or absent, the mesh-wide one (PERMISSIVE when neither says).
fn namespace_strict(cfg: &ConfigSnapshot, opts: &Options, ns: &str) -> bool {
    let root = opts.root_namespace.as_str();
    let mesh = oldest(
        cfg.peer_authentications.in_namespace(root).map(AsRef::as_ref).filter(|pa| pa.is_namespace_wide()),
    );
    let namespace = if ns == root {
        None
    } else {
        oldest(
            cfg.peer_authentications.in_namespace(ns).map(AsRef::as_ref).filter(|pa| pa.is_namespace_wide()),
        )
    };
    let mesh_strict = strict(mesh.map_or(MtlsMode::Unset, PeerAuthentication::mode), false);
    strict(namespace.map_or(MtlsMode::Unset, PeerAuthentication::mode), mesh_strict)
}

/// A workload PeerAuthentication's effect: whether mTLS is required by default and the
/// ports (ascending) where that is reversed.
fn port_exceptions(pa: &PeerAuthentication, inherited: bool) -> (bool, Vec<u16>) {
    let default = strict(pa.mode(), inherited);
    let exceptions = pa
        .spec
        .port_modes()
        .into_iter()
        .filter(|&(_, mode)| strict(mode, default) != default)
        .map(|(port, _)| port)
        .collect();
    (default, exceptions)
}

/// The Authorization a workload PeerAuthentication becomes when it has port exceptions;
/// `None` otherwise (its workloads then list the static policy, or nothing).
pub fn converted_peer_authentication(
    cfg: &ConfigSnapshot,
    opts: &Options,
    pa: &PeerAuthentication,
) -> Option<ScopedResource> {
    let ns = pa.metadata.namespace.as_str();
    // Only workload policies outside the root namespace (istiod ignores selectors there).
    if pa.is_namespace_wide() || ns == opts.root_namespace {
        return None;
    }
    let (default_strict, exceptions) = port_exceptions(pa, namespace_strict(cfg, opts, ns));
    if exceptions.is_empty() {
        return None;
    }
    let rules = if default_strict {
        // Deny plaintext unless the port is an exception: one rule, all clauses must hold.
        let ports = exceptions.iter().map(|&p| security::Clause {
            matches: vec![security::Match {
                not_destination_ports: vec![u32::from(p)],
                ..Default::default()
            }],
        });
        // istiod puts the plaintext clause first when the workload's own mode is STRICT and
        // last when STRICT is inherited; the order does not change the meaning.
        let clauses = if pa.mode() == MtlsMode::Strict {
            std::iter::once(plaintext_clause()).chain(ports).collect()
        } else {
            ports.chain(std::iter::once(plaintext_clause())).collect()
        };
        vec![security::Rule { clauses }]
    } else {
        // Deny plaintext on each STRICT port: one rule per port.
        exceptions
            .iter()
            .map(|&p| security::Rule {
                clauses: vec![security::Clause {
                    matches: vec![security::Match {
                        destination_ports: vec![u32::from(p)],
                        ..plaintext_match()
                    }],
                }],
            })
            .collect()
    };
    let name = format!("{CONVERTED_PEER_AUTHENTICATION_PREFIX}{}", pa.metadata.name);
    let message = Authorization {
        name: name.clone(),
        namespace: ns.to_owned(),
        scope: security::Scope::WorkloadSelector as i32,
        action: security::Action::Deny as i32,
        rules,
        ..Default::default()
    };
    let labels = pa.spec.selector.as_ref().map(|s| &s.match_labels)?;
    let proxies = nodes(
        cfg.pods.in_namespace(ns).filter(|pod| selects(labels, &pod.metadata.labels)).map(AsRef::as_ref),
    );
    Some(ScopedResource::from_message(format!("{ns}/{name}"), proxies, &message))
}

/// The PeerAuthentication policy a pod lists: the converted one of the workload policy that
/// selects it (the oldest, if several) when that has port exceptions, else the static STRICT
/// one when its effective mode is STRICT, else none.
fn peer_authentication_policy(cfg: &ConfigSnapshot, opts: &Options, pod: &Pod) -> Option<String> {
    let ns = pod.metadata.namespace.as_str();
    let inherited = namespace_strict(cfg, opts, ns);
    let workload = if ns == opts.root_namespace {
        None
    } else {
        oldest(cfg.peer_authentications.in_namespace(ns).map(AsRef::as_ref).filter(|pa| {
            pa.spec
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty() && selects(&s.match_labels, &pod.metadata.labels))
        }))
    };
    let (default_strict, exceptions) = match workload {
        Some(pa) => port_exceptions(pa, inherited),
        None => (inherited, Vec::new()),
    };
    match workload {
        Some(pa) if !exceptions.is_empty() => {
            Some(format!("{ns}/{CONVERTED_PEER_AUTHENTICATION_PREFIX}{}", pa.metadata.name))
        }
        _ if default_strict => Some(format!("{}/{STATIC_STRICT_POLICY}", opts.root_namespace)),
        _ => None,
    }
}
