//! `istio.security.Authorization` → [`Policy`], checked field by field.
//!
//! ztunnel narrows ports with `as u16`, drops string matches without a value and addresses
//! it cannot parse; each of those silently widens or narrows a policy. Here they are errors
//! that name the policy and the field, and the agent NACKs the update with them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use weft_xds::istio::{
    security::{self, string_match::MatchType},
    workload::Extension,
};

use super::{
    CONVERTED_PEER_AUTHENTICATION_PREFIX, STATIC_STRICT_POLICY,
    matcher::{Action, Cidr, Clause, Match, Origin, Policy, Rule, Scope, ServiceAccount, StringMatch},
};

/// Why an Authorization resource cannot become a policy. `policy` is its xDS name; `field`
/// a path such as `rules[0].clauses[1].matches[0].source_ips[2]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// An address is neither 4 (IPv4) nor 16 (IPv6) bytes.
    #[error("authorization {policy}: {field}: address has {length} bytes; IPv4 needs 4, IPv6 16")]
    AddressLength { policy: String, field: String, length: usize },
    /// A CIDR prefix is longer than its address.
    #[error(
        "authorization {policy}: {field}: prefix length {length} is out of range for an IPv{family} address (0..={max})"
    )]
    PrefixLength { policy: String, field: String, family: u8, length: u32, max: u32 },
    /// A port does not fit in 16 bits.
    #[error("authorization {policy}: {field}: port {port} is out of range (0..=65535)")]
    Port { policy: String, field: String, port: u32 },
    /// An enum value this agent does not know (a newer control plane?).
    #[error(
        "authorization {policy}: {field}: unknown value {value}; is the control plane newer than this agent?"
    )]
    UnknownEnum { policy: String, field: &'static str, value: i32 },
    /// A string match with none of exact, prefix, suffix, presence.
    #[error("authorization {policy}: {field}: string match sets none of exact, prefix, suffix, presence")]
    EmptyStringMatch { policy: String, field: String },
    /// An extension: none is defined for policies, and guessing could widen one.
    #[error("authorization {policy}: {field}: extension {extension:?} is not understood by this agent")]
    UnknownExtension { policy: String, field: String, extension: String },
    /// A name that must be set is empty.
    #[error("authorization {policy}: {field} is empty")]
    MissingField { policy: String, field: String },
}

impl Policy {
    /// Builds and validates the policy of one resource; `resource_name` is its xDS name.
    pub fn from_proto(resource_name: &str, proto: &security::Authorization) -> Result<Policy, PolicyError> {
        let cx = Cx { policy: resource_name };
        if proto.name.is_empty() {
            return Err(cx.missing("name".into()));
        }
        if proto.namespace.is_empty() {
            return Err(cx.missing("namespace".into()));
        }
        let scope = match security::Scope::try_from(proto.scope) {
            Ok(security::Scope::Global) => Scope::Global,
            Ok(security::Scope::Namespace) => Scope::Namespace,
            Ok(security::Scope::WorkloadSelector) => Scope::WorkloadSelector,
            Err(_) => {
                return Err(PolicyError::UnknownEnum {
                    policy: cx.owned(),
                    field: "scope",
                    value: proto.scope,
                });
            }
        };
        let action = match security::Action::try_from(proto.action) {
            Ok(security::Action::Allow) => Action::Allow,
            Ok(security::Action::Deny) => Action::Deny,
            Ok(security::Action::Audit) => Action::Audit,
            Err(_) => {
                return Err(PolicyError::UnknownEnum {
                    policy: cx.owned(),
                    field: "action",
                    value: proto.action,
                });
            }
        };
        cx.extensions(&proto.extensions, || "extensions".into())?;
        let origin = if proto.name == STATIC_STRICT_POLICY
            || proto.name.starts_with(CONVERTED_PEER_AUTHENTICATION_PREFIX)
        {
            Origin::PeerAuthentication
        } else {
            Origin::AuthorizationPolicy
        };

        let mut rules = Vec::with_capacity(proto.rules.len());
        for (i, rule) in proto.rules.iter().enumerate() {
            let mut clauses = Vec::with_capacity(rule.clauses.len());
            let mut can_match = true;
            for (j, clause) in rule.clauses.iter().enumerate() {
                let mut matches = Vec::with_capacity(clause.matches.len());
                for (k, m) in clause.matches.iter().enumerate() {
                    let m = cx.convert_match(m, &|| format!("rules[{i}].clauses[{j}].matches[{k}]"))?;
                    // A match with nothing set matches nothing (ztunnel skips it).
                    if !m.is_empty() {
                        matches.push(m);
                    }
                }
                if clause.matches.is_empty() {
                    // No matches at all: the clause holds for every connection.
                    continue;
                }
                if matches.is_empty() {
                    // Only empty matches: the clause, and so the rule, never holds.
                    can_match = false;
                }
                clauses.push(Clause { matches: matches.into_boxed_slice() });
            }
            if can_match {
                rules.push(Rule { clauses: clauses.into_boxed_slice() });
            }
        }

        Ok(Policy {
            key: format!("{}/{}", proto.namespace, proto.name).into(),
            namespace: proto.namespace.as_str().into(),
            scope,
            action,
            dry_run: proto.dry_run,
            origin,
            rules: rules.into_boxed_slice(),
        })
    }
}

/// The policy being converted, for error messages. Field paths are formatted only when
/// an error is found.
struct Cx<'a> {
    policy: &'a str,
}

impl Cx<'_> {
    fn owned(&self) -> String {
        self.policy.to_owned()
    }

    fn missing(&self, field: String) -> PolicyError {
        PolicyError::MissingField { policy: self.owned(), field }
    }

    fn extensions(&self, extensions: &[Extension], field: impl Fn() -> String) -> Result<(), PolicyError> {
        match extensions.first() {
            None => Ok(()),
            Some(e) => Err(PolicyError::UnknownExtension {
                policy: self.owned(),
                field: field(),
                extension: e.name.clone(),
            }),
        }
    }

    fn convert_match(&self, m: &security::Match, at: &dyn Fn() -> String) -> Result<Match, PolicyError> {
        self.extensions(&m.extensions, || format!("{}.extensions", at()))?;
        let strings = |list: &[security::StringMatch], name: &str| {
            list.iter()
                .enumerate()
                .map(|(n, s)| match &s.match_type {
                    Some(MatchType::Exact(v)) => Ok(StringMatch::Exact(v.as_str().into())),
                    Some(MatchType::Prefix(v)) => Ok(StringMatch::Prefix(v.as_str().into())),
                    Some(MatchType::Suffix(v)) => Ok(StringMatch::Suffix(v.as_str().into())),
                    Some(MatchType::Presence(())) => Ok(StringMatch::Presence),
                    None => Err(PolicyError::EmptyStringMatch {
                        policy: self.owned(),
                        field: format!("{}.{name}[{n}]", at()),
                    }),
                })
                .collect::<Result<Box<[_]>, _>>()
        };
        let accounts = |list: &[security::ServiceAccountMatch], name: &str| {
            list.iter()
                .enumerate()
                .map(|(n, sa)| {
                    for (part, value) in
                        [("namespace", &sa.namespace), ("serviceAccount", &sa.service_account)]
                    {
                        if value.is_empty() {
                            return Err(self.missing(format!("{}.{name}[{n}].{part}", at())));
                        }
                    }
                    Ok(ServiceAccount {
                        namespace: sa.namespace.as_str().into(),
                        name: sa.service_account.as_str().into(),
                    })
                })
                .collect::<Result<Box<[_]>, _>>()
        };
        let cidrs = |list: &[security::Address], name: &str| {
            list.iter()
                .enumerate()
                .map(|(n, a)| self.cidr(a, &|| format!("{}.{name}[{n}]", at())))
                .collect::<Result<Box<[_]>, _>>()
        };
        let ports = |list: &[u32], name: &str| {
            list.iter()
                .enumerate()
                .map(|(n, &port)| {
                    u16::try_from(port).map_err(|_| PolicyError::Port {
                        policy: self.owned(),
                        field: format!("{}.{name}[{n}]", at()),
                        port,
                    })
                })
                .collect::<Result<Box<[_]>, _>>()
        };
        Ok(Match {
            namespaces: strings(&m.namespaces, "namespaces")?,
            not_namespaces: strings(&m.not_namespaces, "not_namespaces")?,
            service_accounts: accounts(&m.service_accounts, "service_accounts")?,
            not_service_accounts: accounts(&m.not_service_accounts, "not_service_accounts")?,
            principals: strings(&m.principals, "principals")?,
            not_principals: strings(&m.not_principals, "not_principals")?,
            source_ips: cidrs(&m.source_ips, "source_ips")?,
            not_source_ips: cidrs(&m.not_source_ips, "not_source_ips")?,
            destination_ips: cidrs(&m.destination_ips, "destination_ips")?,
            not_destination_ips: cidrs(&m.not_destination_ips, "not_destination_ips")?,
            destination_ports: ports(&m.destination_ports, "destination_ports")?,
            not_destination_ports: ports(&m.not_destination_ports, "not_destination_ports")?,
        })
    }

    fn cidr(&self, a: &security::Address, at: &dyn Fn() -> String) -> Result<Cidr, PolicyError> {
        let ip = if let Ok(v4) = <[u8; 4]>::try_from(a.address.as_slice()) {
            IpAddr::V4(Ipv4Addr::from(v4))
        } else if let Ok(v6) = <[u8; 16]>::try_from(a.address.as_slice()) {
            // An IPv4-mapped block is an IPv4 block, as the addresses it is compared with.
            let v6 = Ipv6Addr::from(v6);
            match v6.to_ipv4_mapped() {
                Some(v4) if a.length >= 96 => {
                    return Cidr::new(IpAddr::V4(v4), a.length - 96)
                        .ok_or_else(|| self.prefix(at(), 6, a.length));
                }
                _ => IpAddr::V6(v6),
            }
        } else {
            return Err(PolicyError::AddressLength {
                policy: self.owned(),
                field: at(),
                length: a.address.len(),
            });
        };
        let family = if ip.is_ipv4() { 4 } else { 6 };
        Cidr::new(ip, a.length).ok_or_else(|| self.prefix(at(), family, a.length))
    }

    fn prefix(&self, field: String, family: u8, length: u32) -> PolicyError {
        let max = if family == 4 { 32 } else { 128 };
        PolicyError::PrefixLength { policy: self.owned(), field, family, length, max }
    }
}
