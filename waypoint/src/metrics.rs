//! A few counters until Istio's metrics arrive (`istio_requests_total` and friends, with
//! their labels, come with the metrics work): totals by response class, CONNECTs refused,
//! TCP chains served. Relaxed atomics: counting never waits.

use http::StatusCode;
use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by class: 1xx … 5xx.
    pub responses: [AtomicU64; 5],
    /// Sum of request durations, microseconds.
    pub duration_us: AtomicU64,
    /// CONNECTs refused: unknown authority or not configured yet.
    pub connects_refused: AtomicU64,
    pub tcp_connections: AtomicU64,
}

impl Metrics {
    pub fn record_response(&self, status: StatusCode, took: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        self.duration_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE weft_waypoint_responses_total counter\n");
        for (i, n) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "weft_waypoint_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                n.load(Ordering::Relaxed)
            );
        }
        let counters = [
            ("weft_waypoint_request_duration_microseconds_total", &self.duration_us),
            ("weft_waypoint_connects_refused_total", &self.connects_refused),
            ("weft_waypoint_tcp_connections_total", &self.tcp_connections),
        ];
        for (name, value) in counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}
