//! Consistent-hash load balancing needs two halves: `RING_HASH`/`MAGLEV` on the cluster
//! (`traffic_policy.rs`) and a `hash_policy` on the route, which says what to hash. This is
//! the route half, as Istio's `HashForHTTPDestination` and `ConsistentHashToHashPolicy`
//! (pilot/pkg/networking/core/route/route.go) build it.

use super::route::pb_duration;
use crate::config::kinds::{
    destination_rule::{ConsistentHashLb, DestinationRule, PortTrafficPolicy},
    virtual_service::Destination,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{HashPolicy, hash_policy};

fn port_level(dst: &Destination, settings: &[PortTrafficPolicy]) -> Option<ConsistentHashLb> {
    let port = dst.port.as_ref()?.number;
    settings
        .iter()
        .find(|s| s.port.is_some_and(|p| p.number == port))
        .and_then(|s| s.load_balancer.as_ref()?.consistent_hash.clone())
}

/// Istio's `HashForHTTPDestination`: the subset's port-level hash, else the subset's,
/// else the rule's port-level one (only when the destination names a port), else the
/// rule's.
pub fn for_destination(dr: Option<&DestinationRule>, dst: &Destination) -> Option<ConsistentHashLb> {
    let spec = &dr?.spec;
    let top = spec.traffic_policy.as_ref();
    let mut hash = top.and_then(|t| t.load_balancer.as_ref()?.consistent_hash.clone());
    let pls = top.and_then(|t| port_level(dst, &t.port_level_settings));
    let subset = dst.subset.as_deref().and_then(|s| spec.subset(s)).and_then(|s| s.traffic_policy.as_ref());
    let subset_hash = subset.and_then(|t| t.load_balancer.as_ref()?.consistent_hash.clone());
    let subset_pls = subset.and_then(|t| port_level(dst, &t.port_level_settings));
    if let Some(h) = subset_pls.or(subset_hash).or(pls) {
        hash = Some(h);
    }
    hash
}

/// Istio's `ConsistentHashToHashPolicy`; `None` for a hash without a key (ring size only).
pub fn hash_policy(h: &ConsistentHashLb) -> Option<HashPolicy> {
    use hash_policy::PolicySpecifier;
    let specifier = if let Some(name) = &h.http_header_name {
        PolicySpecifier::Header(hash_policy::Header { header_name: name.clone(), ..Default::default() })
    } else if let Some(cookie) = &h.http_cookie {
        PolicySpecifier::Cookie(hash_policy::Cookie {
            name: cookie.name.clone(),
            ttl: cookie.ttl.as_ref().map(|d| pb_duration(d.0)),
            path: cookie.path.clone().unwrap_or_default(),
            attributes: cookie
                .attributes
                .iter()
                .filter_map(|a| {
                    Some(hash_policy::CookieAttribute {
                        name: a.get("name")?.as_str()?.to_owned(),
                        value: a.get("value").and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
                    })
                })
                .collect(),
        })
    } else if let Some(source_ip) = h.use_source_ip {
        PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties { source_ip })
    } else if let Some(name) = &h.http_query_parameter_name {
        PolicySpecifier::QueryParameter(hash_policy::QueryParameter { name: name.clone() })
    } else {
        return None;
    };
    Some(HashPolicy { policy_specifier: Some(specifier), terminal: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        duration::IstioDuration,
        kinds::{
            destination_rule::{
                DestinationRuleSpec, HttpCookie, LoadBalancerSettings, Subset, TrafficPolicy,
            },
            virtual_service::PortSelector,
        },
    };
    use std::time::Duration;

    fn lb(h: ConsistentHashLb) -> Option<TrafficPolicy> {
        Some(TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings { consistent_hash: Some(h), ..Default::default() }),
            ..Default::default()
        })
    }

    #[test]
    fn subset_hash_wins_over_the_rule_and_each_key_kind_translates() {
        let header = ConsistentHashLb { http_header_name: Some("x-user".into()), ..Default::default() };
        let cookie = ConsistentHashLb {
            http_cookie: Some(HttpCookie {
                name: "session".into(),
                path: Some("/".into()),
                ttl: Some(IstioDuration(Duration::from_secs(60))),
                attributes: Vec::new(),
            }),
            ..Default::default()
        };
        let dr = DestinationRule {
            spec: DestinationRuleSpec {
                host: "reviews".into(),
                traffic_policy: lb(header.clone()),
                subsets: vec![Subset {
                    name: "v2".into(),
                    traffic_policy: lb(cookie.clone()),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let dst = |subset: Option<&str>| Destination {
            host: "reviews".into(),
            subset: subset.map(Into::into),
            port: Some(PortSelector { number: 9080 }),
        };
        assert_eq!(for_destination(Some(&dr), &dst(None)), Some(header));
        let h = hash_policy(&for_destination(Some(&dr), &dst(Some("v2"))).unwrap()).unwrap();
        let Some(hash_policy::PolicySpecifier::Cookie(c)) = h.policy_specifier else { panic!("cookie") };
        assert_eq!((c.name.as_str(), c.path.as_str(), c.ttl.unwrap().seconds), ("session", "/", 60));
        let ip = ConsistentHashLb { use_source_ip: Some(true), ..Default::default() };
        assert!(matches!(
            hash_policy(&ip).unwrap().policy_specifier,
            Some(hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
                source_ip: true
            }))
        ));
        let q = ConsistentHashLb { http_query_parameter_name: Some("u".into()), ..Default::default() };
        assert!(matches!(
            hash_policy(&q).unwrap().policy_specifier,
            Some(hash_policy::PolicySpecifier::QueryParameter(_))
        ));
    }
}
