//! Whether a try's outcome is retried, as Envoy's router decides it from the route's
//! retry policy (`retry_on` conditions, `retriable_status_codes`, `num_retries`), and the
//! timeouts around the tries. Without a policy a request gets one try; without a timeout
//! (0 in the route, Istio's default) it waits as long as the upstream takes.

use crate::{
    error::RetryCondition,
    route::{RetryOn, RetryPolicy, RouteAction},
};
use http::StatusCode;
use std::time::Duration;

/// One request's retry and timeout plan, borrowed from its route (no copy per request).
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy<'a> {
    pub retry: Option<&'a RetryPolicy>,
    /// The whole request's limit, retries included (until response headers).
    pub timeout: Option<Duration>,
}

/// What a try came back with, as far as retrying goes.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Status(StatusCode),
    Failure(RetryCondition),
}

impl<'a> Policy<'a> {
    pub fn of(action: &'a RouteAction) -> Policy<'a> {
        Policy { retry: action.retry.as_deref(), timeout: action.timeout }
    }

    /// Retries after the first try.
    pub fn num_retries(&self) -> u32 {
        self.retry.map_or(0, |r| r.num_retries)
    }

    /// Each try's limit (until response headers).
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.retry.and_then(|r| r.per_try_timeout)
    }

    /// Whether a retry goes to another endpoint when there is one (`previous_hosts`).
    pub fn avoid_previous(&self) -> bool {
        self.retry.is_some_and(|r| r.avoid_previous_hosts)
    }

    /// How long to wait before retry number `retry` (1 for the first): Envoy's jittered
    /// exponential backoff, a random time below `base × 2^(retry-1)`, capped at `max`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let Some(policy) = self.retry else { return Duration::ZERO };
        let ceiling = policy
            .backoff_base
            .saturating_mul(1 << (retry.saturating_sub(1)).min(16))
            .min(policy.backoff_max);
        let ceiling_ms = ceiling.as_millis() as u64;
        if ceiling_ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(fastrand::u64(..ceiling_ms))
    }

    /// Whether this outcome may be retried under the policy (the budget aside).
    pub fn retriable(&self, outcome: Outcome) -> bool {
        let Some(policy) = self.retry else { return false };
        let on = |c: RetryOn| policy.retry_on.contains(c);
        let (five_xx, gateway) = (on(RetryOn::FIVE_XX), on(RetryOn::GATEWAY_ERROR));
        match outcome {
            Outcome::Status(s) => {
                let code = s.as_u16();
                (five_xx && s.is_server_error())
                    || (gateway && matches!(code, 502..=504))
                    || (on(RetryOn::RETRIABLE_STATUS_CODES) && policy.retriable_status_codes.contains(&code))
            }
            Outcome::Failure(RetryCondition::ConnectFailure) => {
                on(RetryOn::CONNECT_FAILURE) || five_xx || gateway
            }
            Outcome::Failure(RetryCondition::Refused) => {
                on(RetryOn::REFUSED_STREAM) || on(RetryOn::CONNECT_FAILURE) || five_xx
            }
            Outcome::Failure(RetryCondition::Reset | RetryCondition::Timeout) => {
                on(RetryOn::RESET) || five_xx || gateway
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retry policy as the route engine compiles it from Envoy's fields.
    fn policy(retry_on: &str, codes: &[u32]) -> std::sync::Arc<RetryPolicy> {
        use crate::route::{Action, RequestParts, RouteTable, Selected};
        use envoy_types::pb::envoy::config::route::v3 as pb;
        let route = pb::Route {
            r#match: Some(pb::RouteMatch {
                path_specifier: Some(pb::route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(pb::route::Action::Route(pb::RouteAction {
                cluster_specifier: Some(pb::route_action::ClusterSpecifier::Cluster("c".into())),
                retry_policy: Some(pb::RetryPolicy {
                    retry_on: retry_on.into(),
                    num_retries: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 2 }),
                    retriable_status_codes: codes.to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let config = pb::RouteConfiguration {
            name: "t".into(),
            virtual_hosts: vec![pb::VirtualHost {
                name: "v".into(),
                domains: vec!["*".into()],
                routes: vec![route],
                ..Default::default()
            }],
            ..Default::default()
        };
        let table = RouteTable::compile(&config).unwrap();
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let req = RequestParts::new(&parts, "127.0.0.1:1".parse().unwrap());
        match table.select(&req) {
            Selected::Route(r) => match &r.action {
                Action::Forward(a) => a.retry.clone().unwrap(),
                _ => panic!("a forward route"),
            },
            _ => panic!("the route"),
        }
    }

    #[test]
    fn conditions_as_envoy_reads_them() {
        let istio_default = policy("connect-failure,refused-stream,retriable-status-codes", &[409]);
        let p = Policy { retry: Some(&*istio_default), timeout: None };
        assert!(p.retriable(Outcome::Status(StatusCode::CONFLICT)));
        assert!(
            !p.retriable(Outcome::Status(StatusCode::SERVICE_UNAVAILABLE)),
            "503 only under 5xx or listed"
        );
        assert!(p.retriable(Outcome::Failure(RetryCondition::ConnectFailure)));
        assert!(!p.retriable(Outcome::Failure(RetryCondition::Reset)));
        let gw = policy("gateway-error", &[]);
        let p = Policy { retry: Some(&*gw), timeout: None };
        assert!(p.retriable(Outcome::Status(StatusCode::BAD_GATEWAY)));
        assert!(!p.retriable(Outcome::Status(StatusCode::INTERNAL_SERVER_ERROR)));
        let five = policy("5xx", &[]);
        assert!(
            Policy { retry: Some(&five), timeout: None }
                .retriable(Outcome::Status(StatusCode::INTERNAL_SERVER_ERROR))
        );
        assert!(
            !Policy::default().retriable(Outcome::Failure(RetryCondition::ConnectFailure)),
            "no policy, no retry"
        );
    }

    #[test]
    fn backoff_is_jittered_below_an_exponential_ceiling() {
        let p = policy("5xx", &[]);
        let p = Policy { retry: Some(&*p), timeout: None };
        for _ in 0..200 {
            assert!(p.backoff(1) < Duration::from_millis(25));
            assert!(p.backoff(2) < Duration::from_millis(50));
            assert!(p.backoff(10) < Duration::from_millis(250), "capped");
        }
        assert_eq!(Policy::default().backoff(1), Duration::ZERO);
    }
}
