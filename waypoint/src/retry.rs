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

    fn policy(retry_on: &str, codes: &[u16]) -> RetryPolicy {
        RetryPolicy {
            retry_on: RetryOn::parse(retry_on),
            num_retries: 2,
            per_try_timeout: None,
            retriable_status_codes: codes.into(),
            avoid_previous_hosts: true,
        }
    }

    #[test]
    fn conditions_as_envoy_reads_them() {
        let istio_default = policy("connect-failure,refused-stream,retriable-status-codes", &[409]);
        let p = Policy { retry: Some(&istio_default), timeout: None };
        assert!(p.retriable(Outcome::Status(StatusCode::CONFLICT)));
        assert!(
            !p.retriable(Outcome::Status(StatusCode::SERVICE_UNAVAILABLE)),
            "503 only under 5xx or listed"
        );
        assert!(p.retriable(Outcome::Failure(RetryCondition::ConnectFailure)));
        assert!(!p.retriable(Outcome::Failure(RetryCondition::Reset)));
        let gw = policy("gateway-error", &[]);
        let p = Policy { retry: Some(&gw), timeout: None };
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
}
