//! envoy.config.route.v3.RetryPolicy, compiled. retry_on is parsed as Envoy's
//! `RetryStateImpl::parseRetryOn` / `parseRetryGrpcOn` do: known conditions set a bit,
//! unknown tokens (a bare "409", say) are ignored — Envoy ignores them too, so honouring
//! them here would make weft-waypoint retry where Envoy does not.

use super::{
    error::{FieldError, FieldResult},
    matcher::HeaderMatch,
};
use envoy_types::pb::envoy::config::route::v3::{RetryPolicy as PbRetryPolicy, retry_policy};
use std::time::Duration;

/// The retry_on conditions as a bitset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const FIVE_XX: RetryOn = RetryOn(1 << 0);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 2);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 3);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 5);
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(1 << 6);
    pub const RESET: RetryOn = RetryOn(1 << 7);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 8);
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 9);
    pub const HTTP3_POST_CONNECT_FAILURE: RetryOn = RetryOn(1 << 10);
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 16);
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 17);
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 18);
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 19);
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 20);

    const NAMES: [(&'static str, RetryOn); 15] = [
        ("5xx", RetryOn::FIVE_XX),
        ("gateway-error", RetryOn::GATEWAY_ERROR),
        ("connect-failure", RetryOn::CONNECT_FAILURE),
        ("retriable-4xx", RetryOn::RETRIABLE_4XX),
        ("refused-stream", RetryOn::REFUSED_STREAM),
        ("retriable-status-codes", RetryOn::RETRIABLE_STATUS_CODES),
        ("retriable-headers", RetryOn::RETRIABLE_HEADERS),
        ("reset", RetryOn::RESET),
        ("reset-before-request", RetryOn::RESET_BEFORE_REQUEST),
        ("envoy-ratelimited", RetryOn::ENVOY_RATELIMITED),
        ("http3-post-connect-failure", RetryOn::HTTP3_POST_CONNECT_FAILURE),
        ("cancelled", RetryOn::GRPC_CANCELLED),
        ("deadline-exceeded", RetryOn::GRPC_DEADLINE_EXCEEDED),
        ("internal", RetryOn::GRPC_INTERNAL),
        ("resource-exhausted", RetryOn::GRPC_RESOURCE_EXHAUSTED),
    ];

    /// Parses a comma-separated retry_on; unknown tokens are ignored, as in Envoy.
    pub fn parse(s: &str) -> RetryOn {
        let mut on = RetryOn::default();
        for token in s.split(',').map(str::trim) {
            if token == "unavailable" {
                on = on | RetryOn::GRPC_UNAVAILABLE;
            } else if let Some((_, bit)) = RetryOn::NAMES.iter().find(|(n, _)| *n == token) {
                on = on | *bit;
            }
        }
        on
    }

    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;
    fn bitor(self, rhs: RetryOn) -> RetryOn {
        RetryOn(self.0 | rhs.0)
    }
}

/// Envoy's retry back-off defaults: 25 ms base, max 10× the base.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// Retries, not attempts (Envoy's default 1 when unset).
    pub num_retries: u32,
    /// None: the route timeout alone bounds each try.
    pub per_try_timeout: Option<Duration>,
    pub per_try_idle_timeout: Option<Duration>,
    pub retriable_status_codes: Box<[u16]>,
    /// `envoy.retry_host_predicates.previous_hosts`: retry on a host not tried before.
    pub avoid_previous_hosts: bool,
    /// `envoy.retry_priorities.previous_priorities`.
    pub avoid_previous_priorities: bool,
    /// How many times host selection is retried to satisfy the predicate (Envoy default 1).
    pub host_selection_retry_max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub retriable_headers: Box<[HeaderMatch]>,
    /// The request must match all of these to be retried at all.
    pub retriable_request_headers: Box<[HeaderMatch]>,
}

fn duration(d: &envoy_types::pb::google::protobuf::Duration, field: &str) -> FieldResult<Duration> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(FieldError::invalid(field, "must be a non-negative duration"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub(crate) fn opt_duration(
    d: Option<&envoy_types::pb::google::protobuf::Duration>,
    field: &str,
) -> FieldResult<Option<Duration>> {
    d.map(|d| duration(d, field)).transpose()
}

const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_PRIORITIES: &str = "envoy.retry_priorities.previous_priorities";
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

impl RetryPolicy {
    pub(crate) fn compile(p: &PbRetryPolicy) -> FieldResult<RetryPolicy> {
        // previous_priorities (Istio's retryRemoteLocalities) moves retries to other
        // priority levels; weft-waypoint's endpoints have one level, where it changes
        // nothing.
        let avoid_previous_priorities = match &p.retry_priority {
            None => false,
            Some(r) if r.name == PREVIOUS_PRIORITIES => true,
            Some(r) => return Err(FieldError::unsupported(format!("retry_priority {:?}", r.name))),
        };
        if !p.retry_options_predicates.is_empty() {
            return Err(FieldError::unsupported("retry_options_predicates"));
        }
        if p.rate_limited_retry_back_off.is_some() {
            return Err(FieldError::unsupported("rate_limited_retry_back_off"));
        }
        let mut avoid_previous_hosts = false;
        for (i, pred) in p.retry_host_predicate.iter().enumerate() {
            let type_url = match &pred.config_type {
                Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(any)) => {
                    any.type_url.as_str()
                }
                None => "",
            };
            if pred.name == PREVIOUS_HOSTS || type_url == PREVIOUS_HOSTS_TYPE {
                avoid_previous_hosts = true;
            } else {
                return Err(FieldError::unsupported(format!("retry_host_predicate[{i}] {:?}", pred.name)));
            }
        }
        let retriable_status_codes = p
            .retriable_status_codes
            .iter()
            .map(|c| {
                u16::try_from(*c).ok().filter(|c| (100..600).contains(c)).ok_or_else(|| {
                    FieldError::invalid("retriable_status_codes", format!("{c} is not an HTTP status"))
                })
            })
            .collect::<FieldResult<_>>()?;
        let (backoff_base, backoff_max) = match &p.retry_back_off {
            None => (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_BASE * 10),
            Some(b) => {
                let base = opt_duration(b.base_interval.as_ref(), "retry_back_off.base_interval")?
                    .ok_or_else(|| FieldError::invalid("retry_back_off.base_interval", "required"))?;
                if base < Duration::from_millis(1) {
                    return Err(FieldError::invalid("retry_back_off.base_interval", "must be at least 1ms"));
                }
                let max = opt_duration(b.max_interval.as_ref(), "retry_back_off.max_interval")?
                    .unwrap_or(base * 10);
                if max < base {
                    return Err(FieldError::invalid(
                        "retry_back_off.max_interval",
                        "must be greater than or equal to the base_interval",
                    ));
                }
                (base, max)
            }
        };
        let headers = |list: &[envoy_types::pb::envoy::config::route::v3::HeaderMatcher], what: &str| {
            list.iter()
                .enumerate()
                .map(|(i, h)| HeaderMatch::compile(h).map_err(|e| e.within(&format!("{what}[{i}]"))))
                .collect::<FieldResult<Box<[HeaderMatch]>>>()
        };
        Ok(RetryPolicy {
            retry_on: RetryOn::parse(&p.retry_on),
            num_retries: p.num_retries.map_or(1, |n| n.value),
            per_try_timeout: opt_duration(p.per_try_timeout.as_ref(), "per_try_timeout")?
                .filter(|d| !d.is_zero()),
            per_try_idle_timeout: opt_duration(p.per_try_idle_timeout.as_ref(), "per_try_idle_timeout")?
                .filter(|d| !d.is_zero()),
            retriable_status_codes,
            avoid_previous_hosts,
            avoid_previous_priorities,
            host_selection_retry_max_attempts: u32::try_from(p.host_selection_retry_max_attempts.max(1))
                .unwrap_or(u32::MAX),
            backoff_base,
            backoff_max,
            retriable_headers: headers(&p.retriable_headers, "retriable_headers")?,
            retriable_request_headers: headers(&p.retriable_request_headers, "retriable_request_headers")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Any, UInt32Value};

    /// RetryPolicy.retry_on (router filter docs, x-envoy-retry-on and x-envoy-retry-grpc-on):
    /// every documented condition, whitespace around tokens, unknown tokens ignored.
    #[test]
    fn retry_on_parses_envoy_conditions() {
        let on = RetryOn::parse(
            "5xx, gateway-error,reset,connect-failure,retriable-4xx,refused-stream,retriable-status-codes,retriable-headers,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable,409",
        );
        for bit in [
            RetryOn::FIVE_XX,
            RetryOn::GATEWAY_ERROR,
            RetryOn::RESET,
            RetryOn::CONNECT_FAILURE,
            RetryOn::RETRIABLE_4XX,
            RetryOn::REFUSED_STREAM,
            RetryOn::RETRIABLE_STATUS_CODES,
            RetryOn::RETRIABLE_HEADERS,
            RetryOn::GRPC_CANCELLED,
            RetryOn::GRPC_DEADLINE_EXCEEDED,
            RetryOn::GRPC_INTERNAL,
            RetryOn::GRPC_RESOURCE_EXHAUSTED,
            RetryOn::GRPC_UNAVAILABLE,
        ] {
            assert!(on.contains(bit), "{bit:?}");
        }
        assert!(!on.contains(RetryOn::RESET_BEFORE_REQUEST));
        assert!(RetryOn::parse("409,bogus").is_empty());
    }

    /// RetryPolicy.num_retries defaults to 1; retry_back_off defaults to 25 ms and 10× it;
    /// max below base is refused; previous_hosts is the one host predicate.
    #[test]
    fn defaults_and_predicates() {
        let p =
            RetryPolicy::compile(&PbRetryPolicy { retry_on: "5xx".into(), ..Default::default() }).unwrap();
        assert_eq!(p.num_retries, 1);
        assert_eq!((p.backoff_base, p.backoff_max), (Duration::from_millis(25), Duration::from_millis(250)));
        assert!(!p.avoid_previous_hosts);
        assert_eq!(p.host_selection_retry_max_attempts, 1);

        let p = RetryPolicy::compile(&PbRetryPolicy {
            num_retries: Some(UInt32Value { value: 0 }),
            retry_host_predicate: vec![retry_policy::RetryHostPredicate {
                name: PREVIOUS_HOSTS.into(),
                config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(Any {
                    type_url: PREVIOUS_HOSTS_TYPE.into(),
                    value: vec![],
                })),
            }],
            host_selection_retry_max_attempts: 5,
            retry_back_off: Some(retry_policy::RetryBackOff {
                base_interval: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 0,
                    nanos: 100_000_000,
                }),
                max_interval: None,
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.num_retries, 0);
        assert!(p.avoid_previous_hosts);
        assert_eq!(p.host_selection_retry_max_attempts, 5);
        assert_eq!(p.backoff_max, Duration::from_secs(1));

        let err = RetryPolicy::compile(&PbRetryPolicy {
            retry_host_predicate: vec![retry_policy::RetryHostPredicate {
                name: "envoy.retry_host_predicates.omit_canary_hosts".into(),
                config_type: None,
            }],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.field.starts_with("retry_host_predicate[0]"));
    }
}
