//! Authorization: the `envoy.filters.http.rbac` filters of a chain (weftd writes one per
//! AuthorizationPolicy action, DENY then ALLOW, controlplane/src/translate/envoy/
//! authorization.rs) compiled into matcher trees and evaluated per request, with Envoy's
//! semantics (extensions/filters/common/rbac):
//!
//! - ALLOW: the request passes iff some policy matches; DENY: it is refused iff some policy
//!   matches; LOG: it always passes. A filter without `rules` passes everything.
//! - A policy matches when one of its permissions and one of its principals match.
//! - A refusal is Envoy's local reply: 403, `text/plain`, "RBAC: access denied", details
//!   `rbac_access_denied_matched_policy[NAME]` (`none` for an ALLOW filter no policy matched).
//!
//! What Envoy sees of the client in a waypoint's `main_internal` chain is what
//! `connect_terminate`'s set_filter_state filter hands on: the peer principal (filter state
//! `io.istio.peer_principal`, here the verified HBONE identity), the client address
//! (`direct_remote_ip` = `remote_ip`: the CONNECT's source; no XFF is trusted) and the
//! destination (the CONNECT authority: `destination_ip` / `destination_port`). The internal
//! connection carries no TLS, so `authenticated` never matches and `requested_server_name`
//! sees an empty name, as in Envoy.
//!
//! What cannot be evaluated (CEL conditions, metadata, the generic matcher API, other
//! filter state keys) is refused, naming the field, so the listener is NACKed rather than
//! served with a policy that means something else. Evaluation allocates nothing: string
//! matchers compare bytes in place, CIDRs are integers.

use crate::route::{HeaderMatch, PEER_PRINCIPAL_KEY, RequestParts, StringMatch};
use envoy_types::pb::envoy::{
    config::{
        core::v3::CidrRange,
        rbac::v3::{self as pb, permission, principal, rbac::Action as PbAction},
    },
    extensions::filters::http::rbac::v3::Rbac as RbacFilter,
    r#type::matcher::v3::{PathMatcher, filter_state_matcher, path_matcher},
};
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// The body of Envoy's RBAC refusal.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// A field of the RBAC config that cannot be applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RbacError {
    /// The path of the field inside the RBAC config (`rules.policies["p"].permissions[0].…`).
    pub field: String,
    pub reason: String,
}

impl RbacError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> RbacError {
        RbacError { field: field.into(), reason: reason.into() }
    }

    fn unsupported(field: impl Into<String>) -> RbacError {
        RbacError::new(field, "not supported by weft-waypoint")
    }

    fn within(mut self, parent: &str) -> RbacError {
        self.field =
            if self.field.is_empty() { parent.to_owned() } else { format!("{parent}.{}", self.field) };
        self
    }
}

type Result<T> = std::result::Result<T, RbacError>;

/// One RBAC filter (or a route's RBACPerRoute policy), compiled.
#[derive(Debug, Clone)]
pub struct Rbac {
    /// None: the filter has no rules and lets everything pass.
    rules: Option<Rules>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    Log,
}

#[derive(Debug, Clone)]
struct Rules {
    action: Action,
    /// Sorted by name, as Envoy keeps them (a `std::map`): the first match names the refusal.
    policies: Box<[(Arc<str>, Policy)]>,
}

#[derive(Debug, Clone)]
struct Policy {
    permissions: Box<[Permission]>,
    principals: Box<[Principal]>,
}

/// What the request does.
#[derive(Debug, Clone)]
enum Permission {
    Any,
    And(Box<[Permission]>),
    Or(Box<[Permission]>),
    Not(Box<Permission>),
    Header(HeaderMatch),
    /// The path without query and fragment.
    UrlPath(StringMatch),
    DestinationIp(Cidr),
    DestinationPort(u32),
    /// `[start, end)`.
    DestinationPortRange(u32, u32),
    /// The SNI of the downstream connection: none on an internal listener.
    RequestedServerName(StringMatch),
}

/// Who asks.
#[derive(Debug, Clone)]
enum Principal {
    Any,
    And(Box<[Principal]>),
    Or(Box<[Principal]>),
    Not(Box<Principal>),
    /// A TLS peer certificate: never present on the internal connection Envoy evaluates.
    Authenticated,
    /// `direct_remote_ip`, `source_ip` and `remote_ip`: the client's address (no XFF).
    RemoteIp(Cidr),
    Header(HeaderMatch),
    UrlPath(StringMatch),
    /// Filter state `io.istio.peer_principal`: the client's SPIFFE identity.
    Peer(StringMatch),
}

/// An address range, compared as integers.
#[derive(Debug, Clone, Copy)]
enum Cidr {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Cidr {
    fn compile(c: &CidrRange) -> Result<Cidr> {
        let ip: IpAddr = c.address_prefix.parse().map_err(|_| {
            RbacError::new("address_prefix", format!("{:?} is not an IP address", c.address_prefix))
        })?;
        let len = c.prefix_len.map_or(0, |p| p.value);
        Ok(match ip {
            IpAddr::V4(v4) => {
                if len > 32 {
                    return Err(RbacError::new(
                        "prefix_len",
                        format!("/{len} is longer than an IPv4 address"),
                    ));
                }
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                Cidr::V4 { net: u32::from(v4) & mask, mask }
            }
            IpAddr::V6(v6) => {
                if len > 128 {
                    return Err(RbacError::new(
                        "prefix_len",
                        format!("/{len} is longer than an IPv6 address"),
                    ));
                }
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                Cidr::V6 { net: u128::from(v6) & mask, mask }
            }
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Cidr::V4 { net, mask }, IpAddr::V4(a)) => u32::from(a) & mask == *net,
            (Cidr::V6 { net, mask }, IpAddr::V6(a)) => u128::from(a) & mask == *net,
            _ => false,
        }
    }
}

/// What the filters see of one request.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    /// The request head, the client's identity (`identity`) and address (`source`).
    pub req: &'a RequestParts<'a>,
    /// The CONNECT authority: the VIP:PORT the client dialled.
    pub destination: SocketAddr,
}

/// The verdict of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused; the name of the DENY policy that matched (None: no ALLOW policy did).
    Denied(Option<Arc<str>>),
}

impl Rbac {
    /// The HTTP filter's config. `shadow_rules` only feed stats and logs in Envoy, so they
    /// are accepted and have no effect here.
    pub fn compile(filter: &RbacFilter) -> Result<Rbac> {
        if filter.matcher.is_some() {
            return Err(RbacError::unsupported("matcher"));
        }
        let rules =
            filter.rules.as_ref().map(|r| compile_rules(r).map_err(|e| e.within("rules"))).transpose()?;
        Ok(Rbac { rules })
    }

    pub fn evaluate(&self, s: &Subject<'_>) -> Verdict {
        let Some(rules) = &self.rules else { return Verdict::Allowed };
        let matched = rules.policies.iter().find(|(_, p)| p.matches(s)).map(|(name, _)| name);
        match (rules.action, matched) {
            (Action::Allow, Some(_)) | (Action::Deny, None) | (Action::Log, _) => Verdict::Allowed,
            (Action::Allow, None) => Verdict::Denied(None),
            (Action::Deny, Some(name)) => Verdict::Denied(Some(name.clone())),
        }
    }
}

fn compile_rules(r: &pb::Rbac) -> Result<Rules> {
    let action = match PbAction::try_from(r.action) {
        Ok(PbAction::Allow) => Action::Allow,
        Ok(PbAction::Deny) => Action::Deny,
        Ok(PbAction::Log) => Action::Log,
        Err(_) => return Err(RbacError::new("action", format!("{} is not an action", r.action))),
    };
    let mut policies = r
        .policies
        .iter()
        .map(|(name, p)| {
            let policy = compile_policy(p).map_err(|e| e.within(&format!("policies[{name:?}]")))?;
            Ok((Arc::<str>::from(name.as_str()), policy))
        })
        .collect::<Result<Vec<_>>>()?;
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Rules { action, policies: policies.into() })
}

fn compile_policy(p: &pb::Policy) -> Result<Policy> {
    if p.condition.is_some() {
        return Err(RbacError::unsupported("condition"));
    }
    if p.checked_condition.is_some() {
        return Err(RbacError::unsupported("checked_condition"));
    }
    let permissions = list(&p.permissions, "permissions", compile_permission)?;
    let principals = list(&p.principals, "principals", compile_principal)?;
    Ok(Policy { permissions, principals })
}

fn list<P, T>(items: &[P], field: &str, f: fn(&P) -> Result<T>) -> Result<Box<[T]>> {
    items.iter().enumerate().map(|(i, p)| f(p).map_err(|e| e.within(&format!("{field}[{i}]")))).collect()
}

fn path(m: &PathMatcher) -> Result<StringMatch> {
    match &m.rule {
        Some(path_matcher::Rule::Path(s)) => string(s).map_err(|e| e.within("path")),
        None => Err(RbacError::new("rule", "a path matcher is required")),
    }
}

fn string(s: &envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher) -> Result<StringMatch> {
    StringMatch::compile(s).map_err(|e| RbacError::new(e.field, e.reason))
}

fn header(h: &envoy_types::pb::envoy::config::route::v3::HeaderMatcher) -> Result<HeaderMatch> {
    HeaderMatch::compile(h).map_err(|e| RbacError::new(e.field, e.reason))
}

fn port(p: u32, field: &str) -> Result<u32> {
    if p > 65535 { Err(RbacError::new(field, format!("{p} is not a port"))) } else { Ok(p) }
}

#[expect(deprecated, reason = "metadata is deprecated but still Envoy's API; it is refused")]
fn compile_permission(p: &pb::Permission) -> Result<Permission> {
    use permission::Rule as R;
    Ok(match &p.rule {
        Some(R::Any(true)) => Permission::Any,
        Some(R::Any(false)) => return Err(RbacError::new("any", "must be true")),
        Some(R::AndRules(set)) => Permission::And(list(&set.rules, "and_rules.rules", compile_permission)?),
        Some(R::OrRules(set)) => Permission::Or(list(&set.rules, "or_rules.rules", compile_permission)?),
        Some(R::NotRule(inner)) => {
            Permission::Not(Box::new(compile_permission(inner).map_err(|e| e.within("not_rule"))?))
        }
        Some(R::Header(h)) => Permission::Header(header(h).map_err(|e| e.within("header"))?),
        Some(R::UrlPath(m)) => Permission::UrlPath(path(m).map_err(|e| e.within("url_path"))?),
        Some(R::DestinationIp(c)) => {
            Permission::DestinationIp(Cidr::compile(c).map_err(|e| e.within("destination_ip"))?)
        }
        Some(R::DestinationPort(n)) => Permission::DestinationPort(port(*n, "destination_port")?),
        Some(R::DestinationPortRange(r)) => {
            let start = u32::try_from(r.start).unwrap_or(u32::MAX);
            let end = u32::try_from(r.end).unwrap_or(0);
            if start > end {
                return Err(RbacError::new("destination_port_range", "start must not exceed end"));
            }
            Permission::DestinationPortRange(start, end)
        }
        Some(R::RequestedServerName(s)) => {
            Permission::RequestedServerName(string(s).map_err(|e| e.within("requested_server_name"))?)
        }
        Some(R::Metadata(_)) => return Err(RbacError::unsupported("metadata")),
        Some(R::SourcedMetadata(_)) => return Err(RbacError::unsupported("sourced_metadata")),
        Some(R::Matcher(_)) => return Err(RbacError::unsupported("matcher")),
        Some(R::UriTemplate(_)) => return Err(RbacError::unsupported("uri_template")),
        None => return Err(RbacError::new("rule", "a rule is required")),
    })
}

#[expect(deprecated, reason = "source_ip is deprecated but still Envoy's API (= direct_remote_ip)")]
fn compile_principal(p: &pb::Principal) -> Result<Principal> {
    use principal::Identifier as I;
    Ok(match &p.identifier {
        Some(I::Any(true)) => Principal::Any,
        Some(I::Any(false)) => return Err(RbacError::new("any", "must be true")),
        Some(I::AndIds(set)) => Principal::And(list(&set.ids, "and_ids.ids", compile_principal)?),
        Some(I::OrIds(set)) => Principal::Or(list(&set.ids, "or_ids.ids", compile_principal)?),
        Some(I::NotId(inner)) => {
            Principal::Not(Box::new(compile_principal(inner).map_err(|e| e.within("not_id"))?))
        }
        Some(I::Authenticated(_)) => Principal::Authenticated,
        Some(I::SourceIp(c)) => Principal::RemoteIp(Cidr::compile(c).map_err(|e| e.within("source_ip"))?),
        Some(I::DirectRemoteIp(c)) => {
            Principal::RemoteIp(Cidr::compile(c).map_err(|e| e.within("direct_remote_ip"))?)
        }
        Some(I::RemoteIp(c)) => Principal::RemoteIp(Cidr::compile(c).map_err(|e| e.within("remote_ip"))?),
        Some(I::Header(h)) => Principal::Header(header(h).map_err(|e| e.within("header"))?),
        Some(I::UrlPath(m)) => Principal::UrlPath(path(m).map_err(|e| e.within("url_path"))?),
        Some(I::FilterState(fs)) => {
            if fs.key != PEER_PRINCIPAL_KEY {
                return Err(RbacError::new(
                    "filter_state.key",
                    format!("{:?}: only {PEER_PRINCIPAL_KEY:?} (the client's identity) is known", fs.key),
                ));
            }
            match &fs.matcher {
                Some(filter_state_matcher::Matcher::StringMatch(s)) => {
                    Principal::Peer(string(s).map_err(|e| e.within("filter_state.string_match"))?)
                }
                Some(filter_state_matcher::Matcher::AddressMatch(_)) => {
                    return Err(RbacError::unsupported("filter_state.address_match"));
                }
                None => return Err(RbacError::new("filter_state.matcher", "a matcher is required")),
            }
        }
        Some(I::Metadata(_)) => return Err(RbacError::unsupported("metadata")),
        Some(I::SourcedMetadata(_)) => return Err(RbacError::unsupported("sourced_metadata")),
        Some(I::Custom(_)) => return Err(RbacError::unsupported("custom")),
        None => return Err(RbacError::new("identifier", "an identifier is required")),
    })
}

impl Policy {
    fn matches(&self, s: &Subject<'_>) -> bool {
        self.permissions.iter().any(|p| p.matches(s)) && self.principals.iter().any(|p| p.matches(s))
    }
}

impl Permission {
    fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(all) => all.iter().all(|p| p.matches(s)),
            Permission::Or(any) => any.iter().any(|p| p.matches(s)),
            Permission::Not(p) => !p.matches(s),
            Permission::Header(h) => h.matches(s.req),
            Permission::UrlPath(m) => m.matches(s.req.parts.uri.path().as_bytes()),
            Permission::DestinationIp(c) => c.contains(s.destination.ip()),
            Permission::DestinationPort(p) => u32::from(s.destination.port()) == *p,
            Permission::DestinationPortRange(start, end) => {
                (*start..*end).contains(&u32::from(s.destination.port()))
            }
            Permission::RequestedServerName(m) => m.matches(b""),
        }
    }
}

impl Principal {
    fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(all) => all.iter().all(|p| p.matches(s)),
            Principal::Or(any) => any.iter().any(|p| p.matches(s)),
            Principal::Not(p) => !p.matches(s),
            Principal::Authenticated => false,
            Principal::RemoteIp(c) => c.contains(s.req.source.ip()),
            Principal::Header(h) => h.matches(s.req),
            Principal::UrlPath(m) => m.matches(s.req.parts.uri.path().as_bytes()),
            // No identity (no filter state): no match, as Envoy.
            Principal::Peer(m) => s.req.identity.is_some_and(|id| m.matches(id.as_bytes())),
        }
    }
}

/// The chain's RBAC filters in their order, or a route's override: the first refusal wins.
pub fn authorize<'r>(filters: impl IntoIterator<Item = &'r Rbac>, s: &Subject<'_>) -> Verdict {
    for filter in filters {
        if let denied @ Verdict::Denied(_) = filter.evaluate(s) {
            return denied;
        }
    }
    Verdict::Allowed
}

#[cfg(test)]
mod tests;
