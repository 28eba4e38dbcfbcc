//! Per-object validation, following Istio's admission webhook
//! (`pkg/config/validation`) and the Gateway API CRD rules — not stricter, not looser —
//! plus the cross-object checks of `istioctl analyze` ([`cross`]).
//!
//! A validator appends [`Finding`]s to a [`Report`]; parsing turns them into
//! [`Diagnostic`](crate::config::Diagnostic)s that name the object and where it came from.

pub mod cross;
mod destination_rule;
mod gateway_api;
mod kubernetes;
pub mod names;
mod networking;
mod security;
mod virtual_service;

use crate::config::diagnostic::Severity;
use crate::config::kinds::ConfigObject;
use names::{is_dns1123_label, validate_fqdn};
use std::collections::{BTreeMap, BTreeSet};

/// Istio analyzer code for a schema (webhook) validation error.
pub const SCHEMA_ERROR: &str = "IST0106";
/// Istio analyzer code for a schema (webhook) validation warning.
pub const SCHEMA_WARNING: &str = "IST0133";

/// One finding of a validator, before it is tied to an object and an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub code: Option<&'static str>,
    pub field: String,
    pub message: String,
}

/// Collects findings.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Error,
            code: Some(SCHEMA_ERROR),
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Warning,
            code: Some(SCHEMA_WARNING),
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records `result`'s error, if any, at `field`.
    pub fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(e) = result {
            self.error(field, e);
        }
    }

    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// Validates one object on its own.
pub fn validate(object: &ConfigObject, report: &mut Report) {
    match object {
        ConfigObject::Namespace(_) | ConfigObject::Service(_) | ConfigObject::EndpointSlice(_) => {
            kubernetes::validate_other(object, report)
        }
        ConfigObject::Pod(p) => kubernetes::validate_pod(p, report),
        ConfigObject::VirtualService(vs) => virtual_service::validate(vs, report),
        ConfigObject::DestinationRule(dr) => destination_rule::validate(dr, report),
        ConfigObject::Gateway(gw) => networking::validate_gateway(gw, report),
        ConfigObject::ServiceEntry(se) => networking::validate_service_entry(se, report),
        ConfigObject::Sidecar(sc) => networking::validate_sidecar(sc, report),
        ConfigObject::WorkloadEntry(we) => networking::validate_workload_entry(we, report),
        ConfigObject::AuthorizationPolicy(ap) => security::validate_authorization_policy(ap, report),
        ConfigObject::PeerAuthentication(pa) => security::validate_peer_authentication(pa, report),
        ConfigObject::KubernetesGateway(gw) => gateway_api::validate_gateway(gw, report),
        ConfigObject::HttpRoute(r) => gateway_api::validate_http_route(r, report),
        ConfigObject::ReferenceGrant(g) => gateway_api::validate_reference_grant(g, report),
    }
}

/// `exportTo`: `.`, `*`, namespace names, no duplicates; `~` only for ServiceEntries.
fn validate_export_to(
    namespace: &str,
    export_to: &[String],
    is_service_entry: bool,
    field: &str,
    r: &mut Report,
) {
    let mut seen = BTreeSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let key = if e == "." { namespace } else { e.as_str() };
        if !seen.insert(key.to_string()) {
            if key != e {
                r.error(
                    format!("{field}[{i}]"),
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                r.error(format!("{field}[{i}]"), format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        let valid = e == "." || e == "*" || (e == "~" && is_service_entry) || is_dns1123_label(e);
        if !valid {
            r.error(
                format!("{field}[{i}]"),
                format!("invalid exportTo value {e:?}: use \".\", \"*\" or a namespace"),
            );
        }
    }
    if seen.contains("*") && export_to.len() > 1 {
        r.error(field, "cannot have both public (*) and non-public exportTo values for a resource");
    }
    if seen.contains("~") && export_to.len() > 1 {
        r.error(field, "cannot export service entry to no one (~) and someone");
    }
}

/// Gateway references in a VirtualService: `mesh`, `namespace/name`, or a legacy FQDN.
fn validate_gateway_names(gateways: &[String], field: &str, r: &mut Report) {
    for (i, g) in gateways.iter().enumerate() {
        let f = format!("{field}[{i}]");
        match g.split_once('/') {
            None => {
                if g.contains('.') {
                    let parts: Vec<&str> = g.split('.').collect();
                    r.warn(
                        &f,
                        format!(
                            "using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: \"{}/{}\"",
                            parts.get(1).unwrap_or(&""),
                            parts[0]
                        ),
                    );
                }
                r.check(&f, validate_fqdn(g));
            }
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    r.error(&f, "config namespace and gateway name cannot be empty");
                } else {
                    if !is_dns1123_label(ns) {
                        r.error(&f, format!("invalid value for namespace: {ns:?}"));
                    }
                    if !is_dns1123_label(name) {
                        r.error(&f, format!("invalid value for gateway name: {name:?}"));
                    }
                }
            }
        }
    }
}

/// A workload selector's labels: no empty key, no wildcards; empty selects everything
/// (a warning).
fn validate_selector_labels(labels: &BTreeMap<String, String>, field: &str, r: &mut Report) {
    for (k, v) in labels {
        if k.is_empty() {
            r.error(field, format!("empty key is not supported in selector: \"{k}={v}\""));
        }
        if k.contains('*') || v.contains('*') {
            r.error(format!("{field}.{k}"), format!("wildcard is not supported in selector: \"{k}={v}\""));
        }
    }
    if labels.is_empty() {
        r.warn(
            field,
            "workload selector specified without labels; it selects every workload in the namespace",
        );
    }
}

/// Label maps (subset labels, source labels, workload labels).
fn validate_label_map(labels: &BTreeMap<String, String>, field: &str, r: &mut Report) {
    for (k, e) in names::validate_labels(labels) {
        r.error(format!("{field}.{k}"), e);
    }
}

/// Istio's `ValidateDuration`: at least 1 ms, whole milliseconds. `what` names the
/// setting in the message ("timeout"); `hint` is appended to the too-short message.
fn validate_duration_ms(d: std::time::Duration, field: &str, what: &str, hint: &str, r: &mut Report) {
    if d < std::time::Duration::from_millis(1) {
        r.error(field, format!("{what} {} must be at least 1ms{hint}", crate::config::Durations::format(d)));
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        r.error(
            field,
            format!(
                "{what} {}: only durations to ms precision are supported",
                crate::config::Durations::format(d)
            ),
        );
    }
}

/// Checks a regular expression the way Envoy will run it (RE2; the `regex` crate accepts
/// and rejects the same syntax for all practical purposes).
fn validate_regex(re: &str, field: &str, r: &mut Report) {
    if re.is_empty() {
        r.error(field, "regex string match should not be empty");
        return;
    }
    if re.len() > 1024 {
        r.error(field, "regex is too large, max length allowed is 1024");
        return;
    }
    if let Err(e) = regex::Regex::new(re) {
        let detail = match e {
            regex::Error::Syntax(s) => {
                let last = s.lines().last().unwrap_or_default().trim();
                last.strip_prefix("error: ").unwrap_or(last).to_string()
            }
            other => other.to_string(),
        };
        r.error(field, format!("regex {re:?} does not compile: {detail}; Istio uses RE2 syntax (https://github.com/google/re2/wiki/Syntax)"));
    }
}

#[cfg(test)]
mod tests;
