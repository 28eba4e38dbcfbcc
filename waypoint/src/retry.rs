//! Whether a try's outcome is retried, as Envoy's router decides it from a route's retry
//! policy (`retry_on` conditions, `retriable_status_codes`, `num_retries`), and the
//! timeouts around the tries. The route engine's policy is read into a [`Policy`] once per
//! request (`proxy.rs`); without one a request gets one try and no timeout (Istio's
//! default route timeout is none).

use crate::error::RetryCondition;
use http::StatusCode;
use std::time::Duration;

/// Envoy's `retry_on` conditions that the waypoint knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub connect_failure: bool,
    pub reset: bool,
    pub refused_stream: bool,
    pub retriable_status_codes: bool,
}

impl RetryOn {
    /// Parses Envoy's comma-separated `retry_on`; unknown conditions are ignored, as Envoy
    /// ignores the gRPC ones on HTTP upstreams it cannot see.
    pub fn parse(s: &str) -> RetryOn {
        let mut on = RetryOn::default();
        for c in s.split(',').map(str::trim) {
            match c {
                "5xx" => on.five_xx = true,
                "gateway-error" => on.gateway_error = true,
                "connect-failure" => on.connect_failure = true,
                "reset" => on.reset = true,
                "refused-stream" => on.refused_stream = true,
                "retriable-status-codes" => on.retriable_status_codes = true,
                _ => {}
            }
        }
        on
    }
}

/// One request's retry and timeout plan, borrowing the route's lists (no copy per request).
#[derive(Clone, Debug, Default)]
pub struct Policy<'a> {
    /// Retries after the first try.
    pub num_retries: u32,
    pub retry_on: RetryOn,
    pub retriable_status_codes: &'a [u16],
    /// Each try's limit (until response headers).
    pub per_try_timeout: Option<Duration>,
    /// The whole request's limit, retries included (until response headers).
    pub timeout: Option<Duration>,
}

/// What a try came back with, as far as retrying goes.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Status(StatusCode),
    Failure(RetryCondition),
}

impl Policy<'_> {
    /// One try, no timeout.
    pub fn none() -> Policy<'static> {
        Policy::default()
    }

    /// Whether this outcome may be retried under the policy (the budget aside).
    pub fn retriable(&self, outcome: Outcome) -> bool {
        let on = &self.retry_on;
        match outcome {
            Outcome::Status(s) => {
                let code = s.as_u16();
                (on.five_xx && s.is_server_error())
                    || (on.gateway_error && matches!(code, 502..=504))
                    || (on.retriable_status_codes && self.retriable_status_codes.contains(&code))
            }
            Outcome::Failure(RetryCondition::ConnectFailure) => {
                on.connect_failure || on.five_xx || on.gateway_error
            }
            Outcome::Failure(RetryCondition::Refused) => {
                on.refused_stream || on.connect_failure || on.five_xx
            }
            Outcome::Failure(RetryCondition::Reset) => on.reset || on.five_xx || on.gateway_error,
            Outcome::Failure(RetryCondition::Timeout) => on.reset || on.five_xx || on.gateway_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_as_envoy_reads_them() {
        let p = Policy {
            num_retries: 2,
            retry_on: RetryOn::parse("connect-failure,refused-stream,retriable-status-codes"),
            retriable_status_codes: &[409],
            ..Policy::default()
        };
        assert!(p.retriable(Outcome::Status(StatusCode::CONFLICT)));
        assert!(
            !p.retriable(Outcome::Status(StatusCode::SERVICE_UNAVAILABLE)),
            "503 only under 5xx or listed"
        );
        assert!(p.retriable(Outcome::Failure(RetryCondition::ConnectFailure)));
        assert!(!p.retriable(Outcome::Failure(RetryCondition::Reset)));
        let gw = Policy { retry_on: RetryOn::parse("gateway-error"), ..Policy::default() };
        assert!(gw.retriable(Outcome::Status(StatusCode::BAD_GATEWAY)));
        assert!(!gw.retriable(Outcome::Status(StatusCode::INTERNAL_SERVER_ERROR)));
        assert!(
            Policy { retry_on: RetryOn::parse("5xx"), ..Policy::default() }
                .retriable(Outcome::Status(StatusCode::INTERNAL_SERVER_ERROR))
        );
    }
}
