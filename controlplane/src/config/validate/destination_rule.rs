//! DestinationRule, after Istio's `ValidateDestinationRule`.

use super::names::{is_dns1123_label, validate_port, validate_wildcard_domain};
use super::{Report, validate_duration_ms, validate_export_to, validate_label_map, validate_selector_labels};
use crate::config::kinds::destination_rule::*;
use std::collections::BTreeSet;

pub(super) fn validate(dr: &DestinationRule, r: &mut Report) {
    let spec = &dr.spec;
    r.check("spec.host", validate_wildcard_domain(&spec.host));
    if let Some(tp) = &spec.traffic_policy {
        validate_traffic_policy(tp, "spec.trafficPolicy", r);
    }
    let mut names = BTreeSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let f = format!("spec.subsets[{i}]");
        if !names.insert(subset.name.as_str()) {
            r.error(format!("{f}.name"), format!("duplicate subset names: {}", subset.name));
        }
        if subset.name.is_empty() {
            r.error(format!("{f}.name"), "subset name cannot be empty");
        } else if !is_dns1123_label(&subset.name) {
            r.error(format!("{f}.name"), format!("subset name is invalid: {}", subset.name));
        }
        validate_label_map(&subset.labels, &format!("{f}.labels"), r);
        if let Some(tp) = &subset.traffic_policy {
            validate_traffic_policy(tp, &format!("{f}.trafficPolicy"), r);
        }
    }
    validate_export_to(&dr.metadata.namespace, &spec.export_to, false, "spec.exportTo", r);
    if let Some(sel) = &spec.workload_selector {
        validate_selector_labels(&sel.match_labels, "spec.workloadSelector.matchLabels", r);
        let only_own = spec.export_to.is_empty()
            || spec.export_to.iter().all(|e| e == "." || *e == dr.metadata.namespace);
        if !only_own {
            r.error(
                "spec.exportTo",
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        } else if spec.export_to.len() > 1 {
            r.error(
                "spec.exportTo",
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        }
    }
}

fn validate_traffic_policy(tp: &TrafficPolicy, f: &str, r: &mut Report) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        r.error(f, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        r.error(f, "tunnel and proxyProtocol must not be set together");
    }
    validate_policy_parts(
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
        f,
        r,
    );
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pf = format!("{f}.portLevelSettings[{i}]");
        match pl.port {
            None => r.error(format!("{pf}.port"), "portTrafficPolicy must have valid port"),
            Some(p) => r.check(format!("{pf}.port.number"), validate_port(i64::from(p.number))),
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            r.error(&pf, "port traffic policy must have at least one field");
        } else {
            validate_policy_parts(
                pl.load_balancer.as_ref(),
                pl.connection_pool.as_ref(),
                pl.outlier_detection.as_ref(),
                pl.tls.as_ref(),
                &pf,
                r,
            );
        }
    }
}

fn validate_policy_parts(
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
    f: &str,
    r: &mut Report,
) {
    if let Some(o) = outlier {
        validate_outlier(o, &format!("{f}.outlierDetection"), r);
    }
    if let Some(p) = pool {
        validate_pool(p, &format!("{f}.connectionPool"), r);
    }
    if let Some(lb) = lb {
        validate_lb(lb, &format!("{f}.loadBalancer"), r);
    }
    if let Some(t) = tls {
        validate_client_tls(t, &format!("{f}.tls"), r);
    }
}

fn validate_outlier(o: &OutlierDetection, f: &str, r: &mut Report) {
    if let Some(d) = o.base_ejection_time {
        validate_duration_ms(d.0, &format!("{f}.baseEjectionTime"), "baseEjectionTime", "", r);
    }
    if let Some(d) = o.interval {
        validate_duration_ms(d.0, &format!("{f}.interval"), "interval", "", r);
    }
    if o.consecutive_errors.is_some_and(|e| e != 0) {
        r.warn(
            format!("{f}.consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if !o.split_external_local_origin_errors && o.consecutive_local_origin_failures.is_some_and(|v| v > 0) {
        r.error(
            format!("{f}.consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    for (name, v) in
        [("maxEjectionPercent", o.max_ejection_percent), ("minHealthPercent", o.min_health_percent)]
    {
        if let Some(v) = v
            && !(0..=100).contains(&v)
        {
            r.error(format!("{f}.{name}"), format!("percentage {v} is not in range 0..100"));
        }
    }
}

fn validate_pool(p: &ConnectionPoolSettings, f: &str, r: &mut Report) {
    if p.http.is_none() && p.tcp.is_none() {
        r.error(f, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &p.http {
        let hf = format!("{f}.http");
        for (name, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            if v.is_some_and(|v| v < 0) {
                r.error(format!("{hf}.{name}"), format!("{name} must be non-negative"));
            }
        }
        if let Some(d) = h.idle_timeout {
            validate_duration_ms(d.0, &format!("{hf}.idleTimeout"), "idleTimeout", "", r);
        }
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && h.use_client_protocol {
            r.error(&hf, "use client protocol must not be true when H2UpgradePolicy is UPGRADE");
        }
    }
    if let Some(t) = &p.tcp {
        let tf = format!("{f}.tcp");
        if t.max_connections.is_some_and(|v| v < 0) {
            r.error(format!("{tf}.maxConnections"), "max connections must be non-negative");
        }
        for (name, d) in [
            ("connectTimeout", t.connect_timeout),
            ("maxConnectionDuration", t.max_connection_duration),
            ("idleTimeout", t.idle_timeout),
        ] {
            if let Some(d) = d {
                validate_duration_ms(d.0, &format!("{tf}.{name}"), name, "", r);
            }
        }
        if let Some(ka) = &t.tcp_keepalive {
            for (name, d) in [("time", ka.time), ("interval", ka.interval)] {
                if let Some(d) = d {
                    validate_duration_ms(d.0, &format!("{tf}.tcpKeepalive.{name}"), name, "", r);
                }
            }
        }
    }
}

fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let mut f = 3;
    while f * f <= x {
        if x.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

fn validate_lb(lb: &LoadBalancerSettings, f: &str, r: &mut Report) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        r.error(f, "only one of simple or consistentHash may be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        let cf = format!("{f}.consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|b| **b).count() > 1 {
            r.error(
                &cf,
                "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set",
            );
        }
        if let Some(c) = &ch.http_cookie
            && c.name.is_empty()
        {
            r.error(format!("{cf}.httpCookie.name"), "name required for HttpCookie");
        }
        if ch.minimum_ring_size.is_some_and(|v| v != 0) {
            r.warn(
                format!("{cf}.minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                r.error(&cf, "only one of MinimumRingSize or Maglev/Ringhash can be specified");
            }
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            r.error(&cf, "only one of ringHash or maglev may be set");
        }
        if let Some(m) = &ch.maglev {
            let mf = format!("{cf}.maglev.tableSize");
            if m.table_size == 0 {
                r.error(&mf, "tableSize must be set for maglev");
            } else if m.table_size >= 5_000_011 {
                r.error(&mf, "tableSize must be less than 5000011 for maglev");
            } else if !is_prime(m.table_size) {
                r.error(&mf, "tableSize must be a prime number for maglev");
            }
        }
    }
    if let Some(d) = lb.warmup_duration_secs {
        validate_duration_ms(d.0, &format!("{f}.warmupDurationSecs"), "warmupDurationSecs", "", r);
    }
}

fn validate_client_tls(t: &ClientTlsSettings, f: &str, r: &mut Report) {
    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    let mode = t.mode.unwrap_or(ClientTlsMode::Disable);
    if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) && set(&t.credential_name) {
        if set(&t.client_certificate) || set(&t.private_key) || set(&t.ca_certificates) {
            r.error(f, "cannot specify client certificates or CA certificate if credentialName is set");
        }
        return;
    }
    if mode == ClientTlsMode::Mutual {
        if !set(&t.client_certificate) {
            r.error(format!("{f}.clientCertificate"), "client certificate required for mutual tls");
        }
        if !set(&t.private_key) {
            r.error(format!("{f}.privateKey"), "private key required for mutual tls");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn primes() {
        assert!(super::is_prime(65537));
        assert!(!super::is_prime(65535));
    }
}
