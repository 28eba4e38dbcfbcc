//! Outlier detection, Envoy's consecutive-errors kind (what Istio's DestinationRule
//! `outlierDetection` sets): an endpoint with `consecutive_5xx` 5xx answers in a row (local
//! failures — connect errors, resets, timeouts — count as 5xx, Envoy's default without
//! `split_external_local_origin_errors`), or `consecutive_gateway_failure` 502/503/504 or
//! local failures in a row, is ejected for `base_ejection_time` × the times it has been
//! ejected (capped at `max_ejection_time`), unless `max_ejection_percent` of the cluster is
//! already out. An ejected endpoint returns by itself when its time is up.
//!
//! The data path pays one atomic load per pick while nothing is ejected; the time is read
//! (tokio's clock, so tests run on paused time) only when something is.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

/// What the cluster's `outlier_detection` says, with Envoy's defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct OutlierSettings {
    /// None when not enforced (`enforcing_consecutive_5xx: 0`).
    pub consecutive_5xx: Option<u32>,
    /// None when not enforced (Envoy enforces it only when asked).
    pub consecutive_gateway_failure: Option<u32>,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

impl Default for OutlierSettings {
    fn default() -> OutlierSettings {
        OutlierSettings {
            consecutive_5xx: Some(5),
            consecutive_gateway_failure: None,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }
}

/// One endpoint's record.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Ejected until this many ms on the waypoint's clock; 0: not ejected.
    ejected_until_ms: AtomicU64,
    /// Times ejected (the ejection time's multiplier).
    ejections: AtomicU32,
}

/// How one try ended, as outlier detection counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Result5xx {
    /// A 2xx–4xx answer.
    Success,
    /// A 5xx answer: gateway (502–504) or not.
    Status { gateway: bool },
    /// A connect failure, reset or timeout.
    LocalFailure,
}

/// Milliseconds on the waypoint's clock (tokio's, so paused time in tests moves it).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<tokio::time::Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| tokio::time::Instant::now() - Duration::from_millis(1));
    tokio::time::Instant::now().duration_since(epoch).as_millis() as u64
}

impl OutlierState {
    /// Ejected at `now`.
    pub fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// An ejection whose time is up is over: true if this call ended it (the caller then
    /// counts one ejection fewer).
    pub fn expire(&self, now: u64) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0
            && now >= until
            && self.ejected_until_ms.compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Records one try; true if the endpoint should be ejected now (the caller checks the
    /// cluster's `max_ejection_percent` and calls [`OutlierState::eject`]).
    pub fn record(&self, result: Result5xx, settings: &OutlierSettings) -> bool {
        let (five_xx, gateway) = match result {
            Result5xx::Success => {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
                self.consecutive_gateway.store(0, Ordering::Relaxed);
                return false;
            }
            Result5xx::Status { gateway } => (true, gateway),
            Result5xx::LocalFailure => (true, true),
        };
        let n5 = if five_xx { self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 };
        let gw = if gateway {
            self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        settings.consecutive_5xx.is_some_and(|t| n5 >= t)
            || settings.consecutive_gateway_failure.is_some_and(|t| gw >= t)
    }

    /// Ejects the endpoint from `now`; false if it already was.
    pub fn eject(&self, now: u64, settings: &OutlierSettings) -> bool {
        let times = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let time = (settings.base_ejection_time * times)
            .min(settings.max_ejection_time.max(settings.base_ejection_time));
        let until = now + time.as_millis() as u64;
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        self.ejected_until_ms.swap(until, Ordering::AcqRel) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_errors_eject_and_success_resets() {
        let s = OutlierSettings { consecutive_5xx: Some(3), ..OutlierSettings::default() };
        let o = OutlierState::default();
        let fail = Result5xx::Status { gateway: false };
        assert!(!o.record(fail, &s));
        assert!(!o.record(fail, &s));
        assert!(!o.record(Result5xx::Success, &s), "a success starts the count over");
        assert!(!o.record(fail, &s));
        assert!(!o.record(Result5xx::LocalFailure, &s));
        assert!(o.record(fail, &s), "third in a row");
    }

    #[test]
    fn gateway_failures_count_only_when_enforced() {
        let s = OutlierSettings {
            consecutive_5xx: None,
            consecutive_gateway_failure: Some(2),
            ..Default::default()
        };
        let o = OutlierState::default();
        assert!(!o.record(Result5xx::Status { gateway: false }, &s), "a 500 is no gateway failure");
        assert!(!o.record(Result5xx::Status { gateway: true }, &s));
        assert!(o.record(Result5xx::LocalFailure, &s));
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_and_ends_by_itself() {
        let s = OutlierSettings { base_ejection_time: Duration::from_secs(30), ..Default::default() };
        let o = OutlierState::default();
        assert!(o.eject(1_000, &s));
        assert!(o.is_ejected(30_999));
        assert!(!o.expire(30_999));
        assert!(o.expire(31_000), "back after 30 s");
        assert!(!o.is_ejected(31_000));
        assert!(o.eject(40_000, &s));
        assert!(o.is_ejected(99_999), "second ejection: 60 s");
        assert!(o.expire(100_000));
    }
}
