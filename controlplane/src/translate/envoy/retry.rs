//! VirtualService `retries` → Envoy `RetryPolicy`, as Istio's `ConvertPolicy` and
//! `parseRetryOn` (pilot/pkg/networking/core/route/retry/retry.go) build it.
//!
//! Istio's default (no `retries` on the route, mesh `defaultHttpRetryPolicy` unset): 2
//! retries on `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
//! with no retriable status code listed (so no status is retried: Istio ≥ 1.24 no longer
//! retries 503), on another host than the ones tried (`previous_hosts`, up to 5 host
//! selections) unless the route hashes to a sticky host.

use super::route::pb_duration;
use crate::config::kinds::virtual_service::HttpRetry;
use envoy_types::pb::{
    envoy::{
        config::route::v3::{RetryPolicy, retry_policy},
        extensions::retry::{
            host::previous_hosts::v3::PreviousHostsPredicate,
            priority::previous_priorities::v3::PreviousPrioritiesConfig,
        },
    },
    google::protobuf::UInt32Value,
};
use weft_xds::istio::pack;

pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_ATTEMPTS: u32 = 2;
const HOST_SELECTION_ATTEMPTS: i64 = 5;

fn previous_hosts() -> retry_policy::RetryHostPredicate {
    retry_policy::RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".into(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(pack(
            &PreviousHostsPredicate {},
        ))),
    }
}

fn base(hash_policy: bool) -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.into(),
        num_retries: Some(UInt32Value { value: DEFAULT_ATTEMPTS }),
        host_selection_retry_max_attempts: HOST_SELECTION_ATTEMPTS,
        // A consistent-hash route must keep its host: another one would break stickiness.
        retry_host_predicate: if hash_policy { Vec::new() } else { vec![previous_hosts()] },
        ..Default::default()
    }
}

/// Istio's `ConvertPolicy`: `None` when retries are off (`attempts: 0`).
pub fn policy(retries: Option<&HttpRetry>, hash_policy: bool) -> Option<RetryPolicy> {
    let Some(r) = retries else { return Some(base(hash_policy)) };
    if r.attempts <= 0 {
        return None;
    }
    let mut out = base(hash_policy);
    out.num_retries = Some(UInt32Value { value: r.attempts as u32 });
    if let Some(retry_on) = r.retry_on.as_deref().filter(|s| !s.is_empty()) {
        let (on, codes) = parse_retry_on(retry_on);
        out.retry_on = on;
        out.retriable_status_codes = codes;
        if !out.retriable_status_codes.is_empty() && !out.retry_on.contains("retriable-status-codes") {
            if !out.retry_on.is_empty() {
                out.retry_on.push(',');
            }
            out.retry_on.push_str("retriable-status-codes");
        }
    }
    out.per_try_timeout = r.per_try_timeout.as_ref().map(|d| pb_duration(d.0));
    if let Some(ignore) = r.retry_ignore_previous_hosts {
        out.retry_host_predicate = if ignore { vec![previous_hosts()] } else { Vec::new() };
    }
    if r.retry_remote_localities == Some(true) {
        out.retry_priority = Some(retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".into(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(pack(
                &PreviousPrioritiesConfig { update_frequency: 2 },
            ))),
        });
    }
    out.retry_back_off = r
        .backoff
        .as_ref()
        .map(|b| retry_policy::RetryBackOff { base_interval: Some(pb_duration(b.0)), ..Default::default() });
    Some(out)
}

/// Istio's `parseRetryOn`: the parts that are HTTP status codes Go's `http.StatusText`
/// knows become retriable status codes, the rest stay retry conditions.
pub fn parse_retry_on(retry_on: &str) -> (String, Vec<u32>) {
    let mut codes = Vec::new();
    let mut on = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) if known_status(code) => codes.push(code),
            _ => on.push(part),
        }
    }
    (on.join(","), codes)
}

/// The codes Go's `net/http.StatusText` names.
fn known_status(code: u32) -> bool {
    matches!(
        code,
        100..=103
            | 200..=208
            | 226
            | 300..=305
            | 307
            | 308
            | 400..=418
            | 421..=426
            | 428
            | 429
            | 431
            | 451
            | 500..=508
            | 510
            | 511
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::IstioDuration;
    use std::time::Duration;

    #[test]
    fn default_policy_retries_no_status_and_avoids_previous_hosts() {
        let p = policy(None, false).unwrap();
        assert_eq!(p.retry_on, DEFAULT_RETRY_ON);
        assert_eq!(p.num_retries.unwrap().value, 2);
        assert!(p.retriable_status_codes.is_empty(), "Istio >= 1.24 retries no 503 by default");
        assert_eq!(p.retry_host_predicate[0].name, "envoy.retry_host_predicates.previous_hosts");
        assert_eq!(p.host_selection_retry_max_attempts, 5);
        assert!(policy(None, true).unwrap().retry_host_predicate.is_empty());
    }

    #[test]
    fn bare_status_codes_become_retriable_status_codes() {
        let r = HttpRetry {
            attempts: 3,
            retry_on: Some("gateway-error, 409,503,999,connect-failure".into()),
            per_try_timeout: Some(IstioDuration(Duration::from_millis(250))),
            retry_remote_localities: Some(true),
            ..Default::default()
        };
        let p = policy(Some(&r), false).unwrap();
        assert_eq!(p.retry_on, "gateway-error,999,connect-failure,retriable-status-codes");
        assert_eq!(p.retriable_status_codes, vec![409, 503]);
        assert_eq!(p.num_retries.unwrap().value, 3);
        assert_eq!(p.per_try_timeout.unwrap().nanos, 250_000_000);
        assert_eq!(p.retry_priority.unwrap().name, "envoy.retry_priorities.previous_priorities");
        let only_codes = HttpRetry { attempts: 1, retry_on: Some("409".into()), ..Default::default() };
        assert_eq!(policy(Some(&only_codes), false).unwrap().retry_on, "retriable-status-codes");
    }

    #[test]
    fn zero_attempts_disable_retries_and_unset_retry_on_keeps_the_default_conditions() {
        assert!(policy(Some(&HttpRetry { attempts: 0, ..Default::default() }), false).is_none());
        let p = policy(Some(&HttpRetry { attempts: 4, ..Default::default() }), false).unwrap();
        assert_eq!((p.retry_on.as_str(), p.num_retries.unwrap().value), (DEFAULT_RETRY_ON, 4));
        let no_prev =
            HttpRetry { attempts: 1, retry_ignore_previous_hosts: Some(false), ..Default::default() };
        assert!(policy(Some(&no_prev), false).unwrap().retry_host_predicate.is_empty());
    }
}
