//! `istio_build{component, tag}`: which Istio component a process stands in for, and its
//! version, as istiod ("pilot"), ztunnel ("ztunnel") and proxies report it.

use crate::text::{self, Kind};

/// Writes the `istio_build` family with one series, value 1.
pub fn render(out: &mut String, component: &str, tag: &str) {
    text::family(out, "istio_build", Kind::Gauge, "Istio component build info");
    text::sample(out, "istio_build", &text::labels(&[("component", component), ("tag", tag)]), 1);
}
