//! Prometheus text exposition, written once for weft-agent, weft-waypoint and weftd, so
//! the three speak Istio's metric names the same way: label escaping ([`text`]),
//! histograms with fixed bounds ([`histogram`]), `istio_build` ([`build_info`]),
//! `process_*` read from /proc ([`process`]) and the listener that serves
//! `/stats/prometheus` and `/metrics` ([`listener`]).
//!
//! Nothing here locks or allocates when a value is recorded: counters and histogram
//! buckets are relaxed atomic adds; text is made only when Prometheus scrapes.

pub mod build_info;
pub mod histogram;
pub mod listener;
pub mod process;
pub mod text;

pub use histogram::Histogram;

/// What every Weft process exposes besides its own families: `istio_build` as the Istio
/// `component` it stands in for, and the process.
pub fn render_process(out: &mut String, component: &str, tag: &str) {
    build_info::render(out, component, tag);
    process::Process::read().render(out);
}
pub use text::{Kind, family, push_label};
