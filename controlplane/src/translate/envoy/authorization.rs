//! L7 AuthorizationPolicy at a waypoint → Envoy RBAC HTTP filters, as Istio builds them
//! (pilot/pkg/security/authz/builder and authz/model): one filter with the DENY policies,
//! then one with the ALLOW policies, each Istio rule an RBAC policy
//! `ns[NS]-policy[NAME]-rule[I]`; a denied request gets Envoy's 403 "RBAC: access denied".
//!
//! Which policies bind (Istio ambient): those in the waypoint's namespace whose targetRefs
//! name the waypoint's Gateway, those in the service's namespace whose targetRefs name the
//! service, and those in the root namespace that target the `istio-waypoint`
//! GatewayClass. Policies with a workload selector (or none at all) are the agents' (L4).
//!
//! The client's identity on a waypoint is not the HCM's TLS peer (HBONE ends on another
//! listener), so principals and namespaces match the filter state
//! `io.istio.peer_principal`, as Istio's waypoint does; Weft's waypoint fills it from the
//! client's HBONE identity.
//!
//! The filters go in the service's HTTP connection manager before the router; routes carry
//! no per-route RBAC config.

use super::{super::Options, WAYPOINT_CLASSES};
use crate::config::{
    kinds::{
        PolicyTargetReference,
        kubernetes::Service,
        security::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source},
    },
    store::ConfigSnapshot,
};
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::CidrRange,
            rbac::v3::{Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac},
            route::v3::{HeaderMatcher, header_matcher},
        },
        extensions::filters::{
            http::rbac::v3::Rbac,
            network::http_connection_manager::v3::{HttpFilter, http_filter},
        },
        r#type::matcher::v3::{
            FilterStateMatcher, PathMatcher, RegexMatcher, StringMatcher, filter_state_matcher, path_matcher,
            string_matcher,
        },
    },
    google::protobuf::UInt32Value,
};
use std::collections::HashMap;
use weft_xds::istio::pack;

/// The HTTP filter name Istio gives both RBAC filters.
pub const RBAC_FILTER: &str = "envoy.filters.http.rbac";
pub(crate) const PEER_PRINCIPAL: &str = "io.istio.peer_principal";
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

fn refs(p: &AuthorizationPolicy) -> impl Iterator<Item = &PolicyTargetReference> {
    p.spec.target_ref.iter().chain(p.spec.target_refs.iter())
}

fn binds(p: &AuthorizationPolicy, opts: &Options, waypoint: (&str, &str), svc: &Service) -> bool {
    let ns = p.metadata.namespace.as_str();
    refs(p).any(|r| {
        let r_ns = if r.namespace.is_empty() { ns } else { r.namespace.as_str() };
        match (r.group.as_str(), r.kind.as_str()) {
            (GATEWAY_GROUP, "Gateway") => r_ns == waypoint.0 && ns == waypoint.0 && r.name == waypoint.1,
            ("" | "core", "Service") => {
                r_ns == svc.metadata.namespace && ns == svc.metadata.namespace && r.name == svc.metadata.name
            }
            (GATEWAY_GROUP, "GatewayClass") => {
                ns == opts.root_namespace && WAYPOINT_CLASSES.contains(&r.name.as_str())
            }
            _ => false,
        }
    })
}

/// The RBAC HTTP filters for `svc` on the waypoint `waypoint` = (namespace, name): none
/// when no policy binds, else DENY then ALLOW, as Istio orders them.
pub fn http_filters(
    cfg: &ConfigSnapshot,
    opts: &Options,
    waypoint: (&str, &str),
    svc: &Service,
) -> Vec<HttpFilter> {
    let mut deny = HashMap::new();
    let mut allow = HashMap::new();
    let mut any_allow = false;
    for p in cfg.authorization_policies.iter().filter(|p| binds(p, opts, waypoint, svc)) {
        let key = format!("ns[{}]-policy[{}]", p.metadata.namespace, p.metadata.name);
        if p.dry_run().unwrap_or(false) {
            continue;
        }
        let target = match p.spec.action {
            Action::Allow => {
                any_allow = true;
                &mut allow
            }
            Action::Deny => &mut deny,
            Action::Audit => continue,
            Action::Custom => {
                tracing::warn!(policy = %key, "CUSTOM authorization is not supported at waypoints: policy ignored");
                continue;
            }
        };
        for (i, rule) in p.spec.rules.iter().flatten().enumerate() {
            match policy(rule, &p.metadata.namespace, p.spec.action) {
                Ok(pol) => {
                    target.insert(format!("{key}-rule[{i}]"), pol);
                }
                Err(why) => tracing::warn!(policy = %key, rule = i, why, "authorization rule left out"),
            }
        }
    }
    let filter = |action: rbac::Action, policies: HashMap<String, Policy>| HttpFilter {
        name: RBAC_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(&Rbac {
            rules: Some(RbacRules { action: action as i32, policies, ..Default::default() }),
            ..Default::default()
        }))),
        ..Default::default()
    };
    let mut out = Vec::new();
    if !deny.is_empty() {
        out.push(filter(rbac::Action::Deny, deny));
    }
    // An ALLOW policy binds even when none of its rules survive: nothing is allowed then.
    if any_allow {
        out.push(filter(rbac::Action::Allow, allow));
    }
    out
}

fn string(v: &str) -> StringMatcher {
    use string_matcher::MatchPattern;
    // Istio's StringMatcherWithPrefix(v, ""): `*` any, `*x` suffix, `x*` prefix, else exact.
    let pattern = if v == "*" {
        MatchPattern::SafeRegex(RegexMatcher { regex: ".+".into(), ..Default::default() })
    } else if let Some(s) = v.strip_prefix('*') {
        MatchPattern::Suffix(s.to_owned())
    } else if let Some(p) = v.strip_suffix('*') {
        MatchPattern::Prefix(p.to_owned())
    } else {
        MatchPattern::Exact(v.to_owned())
    };
    StringMatcher { match_pattern: Some(pattern), ignore_case: false }
}

fn regex(r: String) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: r,
            ..Default::default()
        })),
        ignore_case: false,
    }
}

fn header(name: &str, v: &str, ignore_case: bool) -> HeaderMatcher {
    use header_matcher::HeaderMatchSpecifier;
    let spec = if v == "*" {
        HeaderMatchSpecifier::PresentMatch(true)
    } else {
        let mut m = string(v);
        m.ignore_case = ignore_case;
        HeaderMatchSpecifier::StringMatch(m)
    };
    HeaderMatcher { name: name.to_owned(), header_match_specifier: Some(spec), ..Default::default() }
}

fn peer(m: StringMatcher) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::FilterState(FilterStateMatcher {
            key: PEER_PRINCIPAL.into(),
            matcher: Some(filter_state_matcher::Matcher::StringMatch(m)),
        })),
    }
}

fn cidr(v: &str) -> Result<CidrRange, String> {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().map_err(|_| format!("bad CIDR {v:?}"))?),
        None => (v, if v.contains(':') { 128 } else { 32 }),
    };
    addr.parse::<std::net::IpAddr>().map_err(|_| format!("bad IP {v:?}"))?;
    Ok(CidrRange { address_prefix: addr.to_owned(), prefix_len: Some(UInt32Value { value: len }) })
}

fn namespace_principal(ns: &str) -> Principal {
    let parts: Vec<String> = ns.split('*').map(regex::escape).collect();
    peer(regex(format!(".*/ns/{}/.*", parts.join(".*"))))
}

fn service_account_principal(policy_ns: &str, v: &str) -> Principal {
    let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
    peer(regex(format!("spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?", regex::escape(ns), regex::escape(sa))))
}

fn spiffe_principal(v: &str) -> Principal {
    // Istio's StringMatcherWithPrefix(v, "spiffe://").
    use string_matcher::MatchPattern;
    let pattern = if v == "*" {
        MatchPattern::SafeRegex(RegexMatcher { regex: ".+".into(), ..Default::default() })
    } else if let Some(s) = v.strip_prefix('*') {
        MatchPattern::SafeRegex(RegexMatcher {
            regex: format!("spiffe://.*{}", regex::escape(s)),
            ..Default::default()
        })
    } else if let Some(p) = v.strip_suffix('*') {
        MatchPattern::Prefix(format!("spiffe://{p}"))
    } else {
        MatchPattern::Exact(format!("spiffe://{v}"))
    };
    peer(StringMatcher { match_pattern: Some(pattern), ignore_case: false })
}

fn opt(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or_default()
}

fn or_p(v: Vec<Permission>) -> Permission {
    Permission { rule: Some(permission::Rule::OrRules(permission::Set { rules: v })) }
}

fn not_p(p: Permission) -> Permission {
    Permission { rule: Some(permission::Rule::NotRule(Box::new(p))) }
}

fn or_id(v: Vec<Principal>) -> Principal {
    Principal { identifier: Some(principal::Identifier::OrIds(principal::Set { ids: v })) }
}

fn not_id(p: Principal) -> Principal {
    Principal { identifier: Some(principal::Identifier::NotId(Box::new(p))) }
}

/// Values OR'ed, not-values NOT(OR), both AND'ed into `and`.
fn values<T>(
    and: &mut Vec<T>,
    vals: &[String],
    nots: &[String],
    one: impl Fn(&str) -> Result<T, String>,
    or: fn(Vec<T>) -> T,
    not: fn(T) -> T,
) -> Result<(), String> {
    if !vals.is_empty() {
        and.push(or(vals.iter().map(|x| one(x)).collect::<Result<_, _>>()?));
    }
    if !nots.is_empty() {
        and.push(not(or(nots.iter().map(|x| one(x)).collect::<Result<_, _>>()?)));
    }
    Ok(())
}

fn permission_for(op: Option<&Operation>, when: &[Condition]) -> Result<Permission, String> {
    let mut and = Vec::new();
    if let Some(o) = op {
        let port = |v: &str| -> Result<Permission, String> {
            let p = v.parse::<u32>().map_err(|_| format!("bad port {v:?}"))?;
            Ok(Permission { rule: Some(permission::Rule::DestinationPort(p)) })
        };
        values(&mut and, opt(&o.ports), opt(&o.not_ports), port, or_p, not_p)?;
        let path = |v: &str| -> Result<Permission, String> {
            if v.contains('{') {
                return Err(format!("path templates are not supported yet: {v:?}"));
            }
            Ok(Permission {
                rule: Some(permission::Rule::UrlPath(PathMatcher {
                    rule: Some(path_matcher::Rule::Path(string(v))),
                })),
            })
        };
        values(&mut and, opt(&o.paths), opt(&o.not_paths), path, or_p, not_p)?;
        let method =
            |v: &str| Ok(Permission { rule: Some(permission::Rule::Header(header(":method", v, false))) });
        values(&mut and, opt(&o.methods), opt(&o.not_methods), method, or_p, not_p)?;
        let host =
            |v: &str| Ok(Permission { rule: Some(permission::Rule::Header(header(":authority", v, true))) });
        values(&mut and, opt(&o.hosts), opt(&o.not_hosts), host, or_p, not_p)?;
    }
    for c in when {
        let port = |v: &str| -> Result<Permission, String> {
            let p = v.parse::<u32>().map_err(|_| format!("bad port {v:?}"))?;
            Ok(Permission { rule: Some(permission::Rule::DestinationPort(p)) })
        };
        match c.key.as_str() {
            "destination.port" => values(&mut and, &c.values, &c.not_values, port, or_p, not_p)?,
            "destination.ip" => values(
                &mut and,
                &c.values,
                &c.not_values,
                |v| Ok(Permission { rule: Some(permission::Rule::DestinationIp(cidr(v)?)) }),
                or_p,
                not_p,
            )?,
            _ => {}
        }
    }
    if and.is_empty() {
        return Ok(Permission { rule: Some(permission::Rule::Any(true)) });
    }
    Ok(Permission { rule: Some(permission::Rule::AndRules(permission::Set { rules: and })) })
}

fn principal_for(src: Option<&Source>, when: &[Condition], policy_ns: &str) -> Result<Principal, String> {
    let mut and = Vec::new();
    if let Some(s) = src {
        if s.request_principals.as_ref().is_some_and(|v| !v.is_empty())
            || s.not_request_principals.as_ref().is_some_and(|v| !v.is_empty())
        {
            return Err("requestPrincipals need JWT authentication, not supported at waypoints yet".into());
        }
        let ip =
            |v: &str| Ok(Principal { identifier: Some(principal::Identifier::DirectRemoteIp(cidr(v)?)) });
        values(&mut and, opt(&s.ip_blocks), opt(&s.not_ip_blocks), ip, or_id, not_id)?;
        let rip = |v: &str| Ok(Principal { identifier: Some(principal::Identifier::RemoteIp(cidr(v)?)) });
        values(&mut and, opt(&s.remote_ip_blocks), opt(&s.not_remote_ip_blocks), rip, or_id, not_id)?;
        values(
            &mut and,
            opt(&s.namespaces),
            opt(&s.not_namespaces),
            |v| Ok(namespace_principal(v)),
            or_id,
            not_id,
        )?;
        let sa = |v: &str| Ok(service_account_principal(policy_ns, v));
        values(&mut and, opt(&s.service_accounts), opt(&s.not_service_accounts), sa, or_id, not_id)?;
        values(
            &mut and,
            opt(&s.principals),
            opt(&s.not_principals),
            |v| Ok(spiffe_principal(v)),
            or_id,
            not_id,
        )?;
    }
    for c in when {
        let key = c.key.as_str();
        if let Some(name) = key.strip_prefix("request.headers[").and_then(|k| k.strip_suffix(']')) {
            let h = |v: &str| {
                Ok(Principal { identifier: Some(principal::Identifier::Header(header(name, v, false))) })
            };
            values(&mut and, &c.values, &c.not_values, h, or_id, not_id)?;
            continue;
        }
        match key {
            "source.namespace" => {
                values(&mut and, &c.values, &c.not_values, |v| Ok(namespace_principal(v)), or_id, not_id)?
            }
            "source.principal" => {
                values(&mut and, &c.values, &c.not_values, |v| Ok(spiffe_principal(v)), or_id, not_id)?
            }
            "source.serviceAccount" => values(
                &mut and,
                &c.values,
                &c.not_values,
                |v| Ok(service_account_principal(policy_ns, v)),
                or_id,
                not_id,
            )?,
            "source.ip" => values(
                &mut and,
                &c.values,
                &c.not_values,
                |v| Ok(Principal { identifier: Some(principal::Identifier::DirectRemoteIp(cidr(v)?)) }),
                or_id,
                not_id,
            )?,
            "remote.ip" => values(
                &mut and,
                &c.values,
                &c.not_values,
                |v| Ok(Principal { identifier: Some(principal::Identifier::RemoteIp(cidr(v)?)) }),
                or_id,
                not_id,
            )?,
            "destination.port" | "destination.ip" => {}
            other => return Err(format!("condition {other:?} is not supported at waypoints yet")),
        }
    }
    if and.is_empty() {
        return Ok(Principal { identifier: Some(principal::Identifier::Any(true)) });
    }
    Ok(Principal { identifier: Some(principal::Identifier::AndIds(principal::Set { ids: and })) })
}

/// One Istio rule as an RBAC policy: `from` entries OR'ed as principals, `to` entries OR'ed
/// as permissions, `when` AND'ed into each. A rule that cannot be translated is left out:
/// for ALLOW that allows less, for DENY it is translated without what it cannot express
/// (denies more), so both fail closed.
fn policy(rule: &Rule, policy_ns: &str, action: Action) -> Result<Policy, String> {
    let when = rule.when.as_slice();
    let tos: Vec<Option<&Operation>> = match rule.to.as_ref().filter(|t| !t.is_empty()) {
        Some(t) => t.iter().map(|t| t.operation.as_ref()).collect(),
        None => vec![None],
    };
    let froms: Vec<Option<&Source>> = match rule.from.as_ref().filter(|f| !f.is_empty()) {
        Some(f) => f.iter().map(|f| f.source.as_ref()).collect(),
        None => vec![None],
    };
    let deny = action == Action::Deny;
    let permissions = tos
        .into_iter()
        .map(|op| match permission_for(op, when) {
            Err(_) if deny => Ok(Permission { rule: Some(permission::Rule::Any(true)) }),
            r => r,
        })
        .collect::<Result<_, _>>()?;
    let principals = froms
        .into_iter()
        .map(|s| match principal_for(s, when, policy_ns) {
            Err(_) if deny => Ok(Principal { identifier: Some(principal::Identifier::Any(true)) }),
            r => r,
        })
        .collect::<Result<_, _>>()?;
    Ok(Policy { permissions, principals, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::kinds::security::{RuleFrom, RuleTo};

    #[test]
    fn rule_becomes_or_of_froms_and_tos_with_and_inside() {
        let rule = Rule {
            from: Some(vec![RuleFrom {
                source: Some(Source { namespaces: Some(vec!["bookinfo".into()]), ..Default::default() }),
            }]),
            to: Some(vec![RuleTo {
                operation: Some(Operation {
                    methods: Some(vec!["GET".into()]),
                    paths: Some(vec!["/api/*".into()]),
                    not_paths: Some(vec!["/api/admin".into()]),
                    ..Default::default()
                }),
            }]),
            when: Vec::new(),
        };
        let p = policy(&rule, "bookinfo", Action::Allow).unwrap();
        let Some(permission::Rule::AndRules(set)) = &p.permissions[0].rule else { panic!("and") };
        assert_eq!(set.rules.len(), 3, "{set:?}");
        assert!(matches!(set.rules[1].rule, Some(permission::Rule::NotRule(_))));
        let Some(principal::Identifier::AndIds(ids)) = &p.principals[0].identifier else { panic!("and ids") };
        let Some(principal::Identifier::OrIds(or)) = &ids.ids[0].identifier else { panic!("or") };
        let Some(principal::Identifier::FilterState(fs)) = &or.ids[0].identifier else {
            panic!("filter state")
        };
        assert_eq!(fs.key, PEER_PRINCIPAL);
    }

    #[test]
    fn unsupported_conditions_fail_closed() {
        let rule = Rule {
            when: vec![Condition {
                key: "request.auth.claims[group]".into(),
                values: vec!["x".into()],
                not_values: Vec::new(),
            }],
            ..Default::default()
        };
        assert!(policy(&rule, "ns", Action::Allow).is_err());
        let deny = policy(&rule, "ns", Action::Deny).unwrap();
        assert_eq!(deny.principals[0].identifier, Some(principal::Identifier::Any(true)));
    }
}
