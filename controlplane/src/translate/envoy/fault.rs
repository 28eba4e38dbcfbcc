//! VirtualService `fault` → the per-route config of Envoy's fault filter, as Istio's
//! `TranslateFault` (pilot/pkg/networking/core/route/route.go) builds it.
//!
//! Percentages follow Istio, not intuition: a delay or an abort without `percentage` (and
//! without the deprecated integer `percent`) applies to 0 % of requests, since Istio leaves
//! Envoy's fraction at zero.

use super::route::pb_duration;
use crate::config::kinds::{Percent, virtual_service::HttpFaultInjection};
use envoy_types::pb::envoy::{
    extensions::filters::{
        common::fault::v3::{FaultDelay, fault_delay::FaultDelaySecifier},
        http::fault::v3::{FaultAbort, HttpFault, fault_abort},
    },
    r#type::v3::{FractionalPercent, fractional_percent::DenominatorType},
};

/// Istio's `translatePercentToFractionalPercent`: a million-based fraction.
pub fn percent(p: &Percent) -> FractionalPercent {
    FractionalPercent { numerator: (p.value * 10_000.0) as u32, denominator: DenominatorType::Million as i32 }
}

/// Istio's `translateIntegerToFractionalPercent`.
pub fn integer_percent(p: i64) -> FractionalPercent {
    FractionalPercent { numerator: p.max(0) as u32, denominator: DenominatorType::Hundred as i32 }
}

/// gRPC status names Istio accepts (`grpc.SupportedGRPCStatus`).
fn grpc_code(name: &str) -> Option<u32> {
    const CODES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    CODES.iter().position(|c| *c == name).map(|i| i as u32)
}

/// `None` when nothing in the fault can be translated (Istio then sets no per-route
/// config); the parts left out are logged.
pub fn http_fault(f: &HttpFaultInjection, route: &str) -> Option<HttpFault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let Some(fixed) = &d.fixed_delay else {
            tracing::warn!(route, "exponential fault delays are not supported (as in Istio): delay left out");
            return None;
        };
        let percentage = match (&d.percentage, d.percent) {
            (Some(p), _) => percent(p),
            (None, p) => integer_percent(p.map_or(0, i64::from)),
        };
        Some(FaultDelay {
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(pb_duration(fixed.0))),
            percentage: Some(percentage),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = if let Some(status) = a.http_status {
            fault_abort::ErrorType::HttpStatus(status.max(0) as u32)
        } else if let Some(code) = a.grpc_status.as_deref().and_then(grpc_code) {
            fault_abort::ErrorType::GrpcStatus(code)
        } else {
            tracing::warn!(
                route,
                "only HTTP and gRPC status aborts are supported (as in Istio): abort left out"
            );
            return None;
        };
        Some(FaultAbort {
            error_type: Some(error_type),
            percentage: a.percentage.as_ref().map(percent),
            ..Default::default()
        })
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(HttpFault { delay, abort, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        duration::IstioDuration,
        kinds::virtual_service::{FaultAbort as Abort, FaultDelay as Delay},
    };
    use std::time::Duration;

    #[test]
    fn abort_without_percentage_aborts_nothing_and_grpc_status_is_kept() {
        let f = HttpFaultInjection {
            abort: Some(Abort { grpc_status: Some("UNAVAILABLE".into()), ..Default::default() }),
            ..Default::default()
        };
        let out = http_fault(&f, "r").unwrap();
        let abort = out.abort.unwrap();
        assert_eq!(abort.error_type, Some(fault_abort::ErrorType::GrpcStatus(14)));
        assert_eq!(abort.percentage, None, "Envoy reads an unset fraction as 0 %");
    }

    #[test]
    fn delay_percentages() {
        let fixed = Some(IstioDuration(Duration::from_secs(2)));
        let f = HttpFaultInjection {
            delay: Some(Delay {
                fixed_delay: fixed,
                percentage: Some(Percent { value: 12.5 }),
                ..Default::default()
            }),
            abort: Some(Abort {
                http_status: Some(418),
                percentage: Some(Percent { value: 100.0 }),
                ..Default::default()
            }),
        };
        let out = http_fault(&f, "r").unwrap();
        assert_eq!(out.delay.unwrap().percentage.unwrap().numerator, 125_000);
        assert_eq!(out.abort.unwrap().percentage.unwrap().numerator, 1_000_000);
        let legacy = HttpFaultInjection {
            delay: Some(Delay { fixed_delay: fixed, percent: Some(30), ..Default::default() }),
            ..Default::default()
        };
        let d = http_fault(&legacy, "r").unwrap().delay.unwrap().percentage.unwrap();
        assert_eq!((d.numerator, d.denominator), (30, DenominatorType::Hundred as i32));
        let none = HttpFaultInjection {
            delay: Some(Delay { fixed_delay: fixed, ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(http_fault(&none, "r").unwrap().delay.unwrap().percentage.unwrap().numerator, 0);
    }
}
