//! A DestinationRule's traffic policy on a cluster, as Istio applies it
//! (pilot/pkg/networking/core/cluster_traffic_policy.go, and the merge of a subset's
//! policy over the rule's in pilot/pkg/model/destination_rule.go `MergeTrafficPolicy` with
//! pilot/pkg/networking/util `MergeSubsetTrafficPolicy`).
//!
//! - Which policy: the rule's top-level policy, replaced wholesale by its port-level
//!   settings for the port if any; for a subset, that merged field by field
//!   (connectionPool, outlierDetection, loadBalancer, tls: each taken from the subset when
//!   the subset sets it — all of them when the subset has port-level settings for the port).
//! - Connection pool: circuit-breaker thresholds default to unlimited (Envoy's own defaults,
//!   1024, are not Istio's), each limit set only when positive; the HTTP settings that live
//!   on the connection go in `typed_extension_protocol_options`.
//! - Outlier detection: only the consecutive-error detectors Istio enables (success-rate
//!   ejection off), `minHealthPercent` as the panic threshold.
//! - Load balancer: LEAST_REQUEST by default (and for LEAST_CONN), consistent hash as
//!   RING_HASH (minimum ring 1024) or MAGLEV. The route half of consistent hashing is in
//!   `hash.rs`.

use super::route::pb_duration;
use crate::config::kinds::destination_rule::{
    ConnectionPoolSettings, H2UpgradePolicy, LoadBalancerSettings, OutlierDetection as DrOutlier, SimpleLb,
    Subset, TrafficPolicy,
};
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                CircuitBreakers, Cluster, OutlierDetection,
                circuit_breakers::{Thresholds, thresholds},
                cluster,
            },
            core::v3::{Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttp},
        },
        extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options},
        r#type::v3::Percent,
    },
    google::protobuf::{UInt32Value, UInt64Value},
};
use std::time::Duration;
use weft_xds::istio::pack;

/// Istio's mesh default `connectTimeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The parts of a policy that reach a cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective {
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<DrOutlier>,
    pub load_balancer: Option<LoadBalancerSettings>,
    /// `retryBudget` (not part of port-level settings).
    pub retry_budget: Option<serde_json::Value>,
}

/// Istio's `GetPortLevelTrafficPolicy`: (policy, whether port-level settings applied).
fn for_port(policy: Option<&TrafficPolicy>, port: u32) -> (Option<Effective>, bool) {
    let Some(p) = policy else { return (None, false) };
    if let Some(pl) = p.port_level_settings.iter().find(|s| s.port.is_some_and(|sp| sp.number == port)) {
        // Port-level settings do not inherit: what they leave out falls to the defaults.
        return (
            Some(Effective {
                connection_pool: pl.connection_pool.clone(),
                outlier_detection: pl.outlier_detection.clone(),
                load_balancer: pl.load_balancer.clone(),
                retry_budget: p.retry_budget.clone(),
            }),
            true,
        );
    }
    (
        Some(Effective {
            connection_pool: p.connection_pool.clone(),
            outlier_detection: p.outlier_detection.clone(),
            load_balancer: p.load_balancer.clone(),
            retry_budget: p.retry_budget.clone(),
        }),
        false,
    )
}

/// Istio's `MergeSubsetTrafficPolicy` for `port`: the policy of the plain cluster when
/// `subset` is `None`.
pub fn effective(top: Option<&TrafficPolicy>, subset: Option<&Subset>, port: u32) -> Option<Effective> {
    let (original, _) = for_port(top, port);
    let Some(subset_policy) = subset.and_then(|s| s.traffic_policy.as_ref()) else { return original };
    let (sub, has_port_level) = for_port(Some(subset_policy), port);
    let sub = sub.expect("a policy");
    let Some(mut merged) = original else { return Some(sub) };
    if sub.connection_pool.is_some() || has_port_level {
        merged.connection_pool = sub.connection_pool;
    }
    if sub.outlier_detection.is_some() || has_port_level {
        merged.outlier_detection = sub.outlier_detection;
    }
    if sub.load_balancer.is_some() || has_port_level {
        merged.load_balancer = sub.load_balancer;
    }
    if let Some(b) = subset_policy.retry_budget.clone() {
        merged.retry_budget = Some(b);
    }
    Some(merged)
}

fn u32v(v: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value: v })
}

/// Istio's `getDefaultCircuitBreakerThresholds`: no limit unless a DestinationRule sets
/// one. Envoy's own defaults (1,024 connections, pending and active requests) would cap
/// a busy waypoint far below what it can carry.
pub fn default_thresholds() -> Thresholds {
    Thresholds {
        max_connections: u32v(u32::MAX),
        max_pending_requests: u32v(u32::MAX),
        max_requests: u32v(u32::MAX),
        max_retries: u32v(u32::MAX),
        track_remaining: true,
        ..Default::default()
    }
}

/// The default thresholds as a cluster's circuit breakers (the fixed HBONE clusters).
pub fn default_circuit_breakers() -> Option<CircuitBreakers> {
    Some(CircuitBreakers { thresholds: vec![default_thresholds()], ..Default::default() })
}

/// Sets the cluster's connect timeout, circuit breakers, HTTP protocol options, outlier
/// detection and load balancer from `policy`. `http2` says whether the port's protocol is
/// HTTP/2 (gRPC, h2c), for the protocol options Envoy requires beside the HTTP settings.
pub fn apply(c: &mut Cluster, policy: Option<&Effective>, http2: bool) {
    let pool = policy.and_then(|p| p.connection_pool.clone()).unwrap_or_default();
    apply_connection_pool(c, &pool, http2, policy.and_then(|p| p.retry_budget.as_ref()));
    apply_outlier_detection(c, policy.and_then(|p| p.outlier_detection.as_ref()));
    apply_load_balancer(c, policy.and_then(|p| p.load_balancer.as_ref()));
}

/// Istio's `applyRetryBudget`: 20 % of active requests and at least 3 concurrent retries
/// unless the budget says otherwise.
fn retry_budget(b: &serde_json::Value) -> thresholds::RetryBudget {
    let percent = b.get("percent").and_then(|p| p.get("value")).and_then(|v| v.as_f64()).unwrap_or(20.0);
    let min = b.get("minRetryConcurrency").and_then(|v| v.as_u64()).filter(|v| *v > 0).unwrap_or(3);
    let interval = b
        .get("budgetInterval")
        .and_then(|v| v.as_str())
        .and_then(|s| crate::config::duration::Durations::parse(s).ok())
        .map(pb_duration);
    thresholds::RetryBudget {
        budget_percent: Some(Percent { value: percent }),
        min_retry_concurrency: u32v(min.min(u64::from(u32::MAX)) as u32),
        budget_interval: interval,
    }
}

fn apply_connection_pool(
    c: &mut Cluster,
    pool: &ConnectionPoolSettings,
    http2: bool,
    budget: Option<&serde_json::Value>,
) {
    let mut t = Thresholds { retry_budget: budget.map(retry_budget), ..default_thresholds() };
    let positive = |v: Option<i32>| v.filter(|v| *v > 0).map(|v| v as u32);
    let mut common = CommonHttp::default();
    let mut needs_options = false;
    let mut upgrade = false;
    if let Some(h) = &pool.http {
        if let Some(v) = positive(h.http2_max_requests) {
            t.max_requests = u32v(v);
        }
        if let Some(v) = positive(h.http1_max_pending_requests) {
            t.max_pending_requests = u32v(v);
        }
        if let Some(v) = positive(h.max_retries) {
            t.max_retries = u32v(v);
        }
        if let Some(d) = &h.idle_timeout {
            common.idle_timeout = Some(pb_duration(d.0));
            needs_options = true;
        }
        if let Some(v) = positive(h.max_requests_per_connection) {
            common.max_requests_per_connection = u32v(v);
            needs_options = true;
        }
        upgrade = h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && !h.use_client_protocol;
        needs_options |= upgrade;
    }
    c.connect_timeout = Some(pb_duration(CONNECT_TIMEOUT));
    if let Some(tcp) = &pool.tcp {
        if let Some(d) = &tcp.connect_timeout {
            c.connect_timeout = Some(pb_duration(d.0));
        }
        if let Some(v) = positive(tcp.max_connections) {
            t.max_connections = u32v(v);
        }
        if let Some(d) = &tcp.max_connection_duration {
            common.max_connection_duration = Some(pb_duration(d.0));
            needs_options = true;
        }
        if common.idle_timeout.is_none()
            && let Some(d) = &tcp.idle_timeout
        {
            common.idle_timeout = Some(pb_duration(d.0));
            needs_options = true;
        }
    }
    c.circuit_breakers = Some(CircuitBreakers { thresholds: vec![t], ..Default::default() });
    if needs_options {
        use http_protocol_options::{
            ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
        };
        // Envoy requires the upstream protocol beside the HTTP settings.
        let protocol = if http2 || upgrade {
            ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())
        } else {
            ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())
        };
        let options = HttpProtocolOptions {
            common_http_protocol_options: Some(common),
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig { protocol_config: Some(protocol) },
            )),
            ..Default::default()
        };
        c.typed_extension_protocol_options.insert(HTTP_PROTOCOL_OPTIONS.to_owned(), pack(&options));
    }
}

fn apply_outlier_detection(c: &mut Cluster, o: Option<&DrOutlier>) {
    let Some(o) = o else { return };
    let mut out = OutlierDetection { enforcing_success_rate: u32v(0), ..Default::default() };
    // The deprecated consecutiveErrors is ignored, as Istio's applyOutlierDetection does.
    if let Some(v) = o.consecutive5xx_errors {
        out.consecutive_5xx = u32v(v);
        out.enforcing_consecutive_5xx = u32v(if v > 0 { 100 } else { 0 });
    }
    if let Some(v) = o.consecutive_gateway_errors {
        out.consecutive_gateway_failure = u32v(v);
        out.enforcing_consecutive_gateway_failure = u32v(if v > 0 { 100 } else { 0 });
    }
    out.interval = o.interval.as_ref().map(|d| pb_duration(d.0));
    out.base_ejection_time = o.base_ejection_time.as_ref().map(|d| pb_duration(d.0));
    if let Some(p) = o.max_ejection_percent.filter(|p| *p > 0) {
        out.max_ejection_percent = u32v(p as u32);
    }
    if o.split_external_local_origin_errors {
        out.split_external_local_origin_errors = true;
        if let Some(v) = o.consecutive_local_origin_failures.filter(|v| *v > 0) {
            out.consecutive_local_origin_failure = u32v(v);
            out.enforcing_consecutive_local_origin_failure = u32v(100);
        }
        out.enforcing_local_origin_success_rate = u32v(0);
    }
    c.outlier_detection = Some(out);
    let min_health = o.min_health_percent.unwrap_or(0);
    if min_health >= 0 {
        c.common_lb_config.get_or_insert_with(Default::default).healthy_panic_threshold =
            Some(Percent { value: f64::from(min_health) });
    }
}

fn apply_load_balancer(c: &mut Cluster, lb: Option<&LoadBalancerSettings>) {
    c.lb_policy = match lb.and_then(|l| l.simple) {
        Some(SimpleLb::Random) => cluster::LbPolicy::Random,
        Some(SimpleLb::RoundRobin) => cluster::LbPolicy::RoundRobin,
        // LEAST_CONN is LEAST_REQUEST's old name; PASSTHROUGH needs an original-destination
        // cluster, which a waypoint's service cluster is not.
        _ => cluster::LbPolicy::LeastRequest,
    } as i32;
    let Some(h) = lb.and_then(|l| l.consistent_hash.as_ref()) else { return };
    if let Some(m) = &h.maglev {
        c.lb_policy = cluster::LbPolicy::Maglev as i32;
        if m.table_size != 0 {
            c.lb_config = Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
                table_size: Some(UInt64Value { value: m.table_size }),
            }));
        }
    } else if let Some(r) = &h.ring_hash {
        c.lb_policy = cluster::LbPolicy::RingHash as i32;
        if let Some(min) = r.minimum_ring_size.filter(|m| *m != 0) {
            c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(cluster::RingHashLbConfig {
                minimum_ring_size: Some(UInt64Value { value: min }),
                ..Default::default()
            }));
        }
    } else {
        c.lb_policy = cluster::LbPolicy::RingHash as i32;
        c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(cluster::RingHashLbConfig {
            minimum_ring_size: Some(UInt64Value {
                value: h.minimum_ring_size.filter(|m| *m != 0).unwrap_or(1024),
            }),
            ..Default::default()
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        duration::IstioDuration,
        kinds::{
            destination_rule::{ConsistentHashLb, HttpSettings, PortTrafficPolicy, TcpSettings},
            virtual_service::PortSelector,
        },
    };

    fn pool(max_connections: i32) -> Option<ConnectionPoolSettings> {
        Some(ConnectionPoolSettings {
            tcp: Some(TcpSettings { max_connections: Some(max_connections), ..Default::default() }),
            ..Default::default()
        })
    }

    #[test]
    fn subset_policy_overrides_the_rule_field_by_field() {
        let top = TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                simple: Some(SimpleLb::RoundRobin),
                ..Default::default()
            }),
            connection_pool: pool(7),
            ..Default::default()
        };
        let subset = Subset {
            name: "v2".into(),
            traffic_policy: Some(TrafficPolicy {
                load_balancer: Some(LoadBalancerSettings {
                    simple: Some(SimpleLb::Random),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = effective(Some(&top), Some(&subset), 9080).unwrap();
        assert_eq!(e.load_balancer.unwrap().simple, Some(SimpleLb::Random));
        assert_eq!(e.connection_pool, pool(7), "inherited from the rule");
        // Port-level settings in the subset replace everything, defaults for what they omit.
        let port_level = Subset {
            name: "v3".into(),
            traffic_policy: Some(TrafficPolicy {
                port_level_settings: vec![PortTrafficPolicy {
                    port: Some(PortSelector { number: 9080 }),
                    connection_pool: pool(1),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = effective(Some(&top), Some(&port_level), 9080).unwrap();
        assert_eq!((e.connection_pool, e.load_balancer), (pool(1), None));
        let e = effective(Some(&top), Some(&port_level), 9081).unwrap();
        assert_eq!(e.connection_pool, pool(7));
    }

    #[test]
    fn cluster_gets_istio_thresholds_outlier_and_ring_hash() {
        let mut c = Cluster::default();
        let policy = Effective {
            connection_pool: Some(ConnectionPoolSettings {
                tcp: Some(TcpSettings { max_connections: Some(1), ..Default::default() }),
                http: Some(HttpSettings {
                    http1_max_pending_requests: Some(1),
                    max_requests_per_connection: Some(1),
                    ..Default::default()
                }),
            }),
            outlier_detection: Some(DrOutlier {
                consecutive5xx_errors: Some(1),
                interval: Some(IstioDuration(Duration::from_secs(1))),
                base_ejection_time: Some(IstioDuration(Duration::from_secs(3))),
                max_ejection_percent: Some(100),
                ..Default::default()
            }),
            load_balancer: Some(LoadBalancerSettings {
                consistent_hash: Some(ConsistentHashLb {
                    http_header_name: Some("x-u".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            retry_budget: Some(serde_json::json!({ "percent": { "value": 50.0 } })),
        };
        apply(&mut c, Some(&policy), false);
        let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
        assert_eq!(t.max_connections.unwrap().value, 1);
        assert_eq!(t.max_pending_requests.unwrap().value, 1);
        assert_eq!(t.max_requests.unwrap().value, u32::MAX, "unset limits are unlimited, as in Istio");
        let budget = t.retry_budget.unwrap();
        assert_eq!(
            (budget.budget_percent.unwrap().value, budget.min_retry_concurrency.unwrap().value),
            (50.0, 3)
        );
        assert!(c.typed_extension_protocol_options.contains_key(HTTP_PROTOCOL_OPTIONS));
        let od = c.outlier_detection.as_ref().unwrap();
        assert_eq!(od.enforcing_consecutive_5xx.unwrap().value, 100);
        assert_eq!(od.enforcing_success_rate.unwrap().value, 0);
        assert_eq!(c.common_lb_config.as_ref().unwrap().healthy_panic_threshold.unwrap().value, 0.0);
        assert_eq!(c.lb_policy, cluster::LbPolicy::RingHash as i32);
        let mut plain = Cluster::default();
        apply(&mut plain, None, false);
        assert_eq!(plain.lb_policy, cluster::LbPolicy::LeastRequest as i32);
        assert!(plain.outlier_detection.is_none() && plain.typed_extension_protocol_options.is_empty());
    }
}
