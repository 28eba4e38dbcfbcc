//! Gateway API Gateway and HTTPRoute, after the CRDs' schema and CEL rules.

use super::names::{is_dns1123_label, is_k8s_namespace, validate_port};
use super::{Report, validate_regex};
use crate::config::kinds::gateway_api::*;
use std::collections::BTreeSet;

/// A Gateway API hostname: lower-case DNS name, optionally `*.`-prefixed, never an IP.
fn validate_hostname(h: &str) -> Result<(), String> {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("hostname {h:?} must not be an IP address"));
    }
    let rest = h.strip_prefix("*.").unwrap_or(h);
    let ok = !rest.is_empty()
        && h.len() <= 253
        && rest.split('.').all(|l| is_dns1123_label(l) && !l.bytes().any(|b| b.is_ascii_uppercase()));
    if ok {
        Ok(())
    } else {
        Err(format!("hostname {h:?} is not a valid (optionally \"*.\"-prefixed) lower-case DNS name"))
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_path_value(value: &str, field: &str, r: &mut Report) {
    if !value.starts_with('/') {
        r.error(field, format!("path {value:?} must be an absolute path starting with '/'"));
        return;
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
        if value.contains(bad) {
            r.error(field, format!("path {value:?} must not contain {bad:?}"));
        }
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        r.error(field, format!("path {value:?} must not end with '/.' or '/..'"));
    }
    if value.len() > 1024 {
        r.error(field, "path must be at most 1024 characters");
    }
}

pub(super) fn validate_gateway(gw: &KubernetesGateway, r: &mut Report) {
    let spec = &gw.spec;
    if spec.gateway_class_name.is_empty() {
        r.error("spec.gatewayClassName", "gatewayClassName is required");
    }
    if spec.listeners.is_empty() || spec.listeners.len() > 64 {
        r.error("spec.listeners", "a Gateway must have 1 to 64 listeners");
    }
    let mut names = BTreeSet::new();
    let mut combos = BTreeSet::new();
    for (i, l) in spec.listeners.iter().enumerate() {
        let f = format!("spec.listeners[{i}]");
        if l.name.is_empty()
            || !l.name.split('.').all(|p| is_dns1123_label(p) && !p.bytes().any(|b| b.is_ascii_uppercase()))
        {
            r.error(format!("{f}.name"), format!("listener name {:?} must be a lower-case DNS name", l.name));
        }
        if !names.insert(l.name.as_str()) {
            r.error(
                format!("{f}.name"),
                format!("listener name {:?} must be unique within the Gateway", l.name),
            );
        }
        r.check(format!("{f}.port"), validate_port(i64::from(l.port)));
        // Gateway API's ProtocolType: a plain token (HTTP, HTTPS, TLS, TCP, UDP, and
        // implementation names such as Istio's HBONE for waypoints) or a domain-prefixed one.
        let p = l.protocol.as_bytes();
        let standard = !p.is_empty()
            && p.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && p[0] != b'-'
            && p[p.len() - 1] != b'-';
        let domain_prefixed = l.protocol.split_once('/').is_some_and(|(d, p)| {
            d.split('.').all(is_dns1123_label)
                && !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        if !standard && !domain_prefixed {
            r.error(
                format!("{f}.protocol"),
                format!(
                    "protocol {:?} must be a token like HTTP or HBONE, or a domain-prefixed name",
                    l.protocol
                ),
            );
        }
        if let Some(h) = &l.hostname {
            if matches!(l.protocol.as_str(), "TCP" | "UDP") {
                r.error(
                    format!("{f}.hostname"),
                    "hostname must not be specified for protocols ['TCP', 'UDP']",
                );
            }
            r.check(format!("{f}.hostname"), validate_hostname(h));
        }
        match (l.protocol.as_str(), &l.tls) {
            ("HTTPS" | "TLS", None) => {
                r.error(format!("{f}.tls"), "tls must be specified for protocols ['HTTPS', 'TLS']")
            }
            ("HTTP" | "TCP" | "UDP", Some(_)) => {
                r.error(format!("{f}.tls"), "tls mode must not be set for protocols ['HTTP', 'TCP', 'UDP']")
            }
            _ => {}
        }
        if !combos.insert((l.port, l.protocol.as_str(), l.hostname.as_deref().unwrap_or(""))) {
            r.error(&f, "combination of port, protocol and hostname must be unique for each listener");
        }
    }
}

fn validate_header_filter(h: &HttpHeaderFilter, f: &str, r: &mut Report) {
    let mut seen = BTreeSet::new();
    for (op, list) in [("set", &h.set), ("add", &h.add)] {
        for (i, hdr) in list.iter().enumerate() {
            let hf = format!("{f}.{op}[{i}]");
            if !is_header_name(&hdr.name) {
                r.error(format!("{hf}.name"), format!("{:?} is not a valid header name", hdr.name));
            }
            if !seen.insert((op, hdr.name.to_ascii_lowercase())) {
                r.error(format!("{hf}.name"), format!("header {:?} appears twice in {op}", hdr.name));
            }
            if let Err(e) = super::virtual_service::validate_header_value(&hdr.value) {
                r.error(format!("{hf}.value"), e);
            }
        }
    }
    let mut removed = BTreeSet::new();
    for (i, name) in h.remove.iter().enumerate() {
        if !is_header_name(name) {
            r.error(format!("{f}.remove[{i}]"), format!("{name:?} is not a valid header name"));
        }
        if !removed.insert(name.to_ascii_lowercase()) {
            r.error(format!("{f}.remove[{i}]"), format!("header {name:?} appears twice in remove"));
        }
    }
}

fn validate_path_modifier(p: &HttpPathModifier, rule: &HttpRouteRule, f: &str, r: &mut Report) {
    match p.type_ {
        PathModifierType::ReplaceFullPath => {
            if p.replace_full_path.is_none() {
                r.error(
                    format!("{f}.replaceFullPath"),
                    "replaceFullPath must be specified when type is set to 'ReplaceFullPath'",
                );
            }
            if p.replace_prefix_match.is_some() {
                r.error(
                    format!("{f}.replacePrefixMatch"),
                    "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set",
                );
            }
        }
        PathModifierType::ReplacePrefixMatch => {
            if p.replace_prefix_match.is_none() {
                r.error(
                    format!("{f}.replacePrefixMatch"),
                    "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'",
                );
            }
            if p.replace_full_path.is_some() {
                r.error(
                    format!("{f}.replaceFullPath"),
                    "type must be 'ReplaceFullPath' when replaceFullPath is set",
                );
            }
            let prefix_matches = rule.matches.is_empty()
                || rule
                    .matches
                    .iter()
                    .all(|m| m.path.as_ref().is_none_or(|p| p.type_ == PathMatchType::PathPrefix));
            if !prefix_matches {
                r.error(
                    f,
                    "replacePrefixMatch can only be used when every match of the rule is a PathPrefix match",
                );
            }
        }
    }
}

fn validate_backend_object(b: &BackendObjectReference, f: &str, r: &mut Report) {
    if b.name.is_empty() {
        r.error(format!("{f}.name"), "name is required");
    }
    let is_service =
        b.group.as_deref().unwrap_or("").is_empty() && b.kind.as_deref().unwrap_or("Service") == "Service";
    match b.port {
        None if is_service => r.error(format!("{f}.port"), "must have port for Service reference"),
        Some(p) => r.check(format!("{f}.port"), validate_port(i64::from(p))),
        None => {}
    }
    if let Some(ns) = &b.namespace
        && !is_k8s_namespace(ns)
    {
        r.error(format!("{f}.namespace"), format!("invalid namespace {ns:?}"));
    }
}

fn validate_filter(filter: &HttpRouteFilter, rule: &HttpRouteRule, f: &str, r: &mut Report) {
    use HttpRouteFilterType as T;
    let present = [
        (T::RequestHeaderModifier, "requestHeaderModifier", filter.request_header_modifier.is_some()),
        (T::ResponseHeaderModifier, "responseHeaderModifier", filter.response_header_modifier.is_some()),
        (T::RequestRedirect, "requestRedirect", filter.request_redirect.is_some()),
        (T::UrlRewrite, "urlRewrite", filter.url_rewrite.is_some()),
        (T::RequestMirror, "requestMirror", filter.request_mirror.is_some()),
        (T::Cors, "cors", filter.cors.is_some()),
        (T::ExtensionRef, "extensionRef", filter.extension_ref.is_some()),
    ];
    for (t, name, is_set) in present {
        if t == filter.type_ && !is_set {
            r.error(format!("{f}.{name}"), format!("filter.{name} must be specified for type {t:?}"));
        }
        if t != filter.type_ && is_set {
            r.error(
                format!("{f}.{name}"),
                format!("filter.{name} must be nil if the filter.type is not {t:?}"),
            );
        }
    }
    if let Some(h) = &filter.request_header_modifier {
        validate_header_filter(h, &format!("{f}.requestHeaderModifier"), r);
    }
    if let Some(h) = &filter.response_header_modifier {
        validate_header_filter(h, &format!("{f}.responseHeaderModifier"), r);
    }
    if let Some(rd) = &filter.request_redirect {
        let rf = format!("{f}.requestRedirect");
        if let Some(s) = &rd.scheme
            && s != "http"
            && s != "https"
        {
            r.error(format!("{rf}.scheme"), format!("scheme {s:?} must be http or https"));
        }
        if let Some(h) = &rd.hostname {
            r.check(format!("{rf}.hostname"), validate_hostname(h));
        }
        if let Some(p) = rd.port {
            r.check(format!("{rf}.port"), validate_port(i64::from(p)));
        }
        if let Some(code) = rd.status_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            r.error(
                format!("{rf}.statusCode"),
                format!("statusCode {code} must be one of 301, 302, 303, 307, 308"),
            );
        }
        if let Some(p) = &rd.path {
            validate_path_modifier(p, rule, &format!("{rf}.path"), r);
        }
    }
    if let Some(rw) = &filter.url_rewrite {
        let rf = format!("{f}.urlRewrite");
        if let Some(h) = &rw.hostname {
            r.check(format!("{rf}.hostname"), validate_hostname(h));
        }
        if let Some(p) = &rw.path {
            validate_path_modifier(p, rule, &format!("{rf}.path"), r);
        }
    }
    if let Some(m) = &filter.request_mirror {
        let mf = format!("{f}.requestMirror");
        validate_backend_object(&m.backend_ref, &format!("{mf}.backendRef"), r);
        if m.percent.is_some() && m.fraction.is_some() {
            r.error(&mf, "only one of percent or fraction may be specified");
        }
        if let Some(p) = m.percent
            && p > 100
        {
            r.error(format!("{mf}.percent"), format!("percent {p} must be in 0..100"));
        }
        if let Some(fr) = m.fraction {
            if fr.denominator == 0 {
                r.error(format!("{mf}.fraction.denominator"), "denominator must be greater than 0");
            } else if fr.numerator > fr.denominator {
                r.error(format!("{mf}.fraction"), "numerator must be less than or equal to denominator");
            }
        }
    }
}

fn validate_filters(filters: &[HttpRouteFilter], rule: &HttpRouteRule, f: &str, r: &mut Report) {
    if filters.len() > 16 {
        r.error(f, "at most 16 filters are allowed");
    }
    let count = |t: HttpRouteFilterType| filters.iter().filter(|x| x.type_ == t).count();
    use HttpRouteFilterType as T;
    for t in [T::RequestHeaderModifier, T::ResponseHeaderModifier, T::RequestRedirect, T::UrlRewrite, T::Cors]
    {
        if count(t) > 1 {
            r.error(f, format!("{t:?} filter cannot be repeated"));
        }
    }
    if count(T::RequestRedirect) > 0 && count(T::UrlRewrite) > 0 {
        r.error(f, "may specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both");
    }
    for (i, filter) in filters.iter().enumerate() {
        validate_filter(filter, rule, &format!("{f}[{i}]"), r);
    }
}

pub(super) fn validate_http_route(route: &HttpRoute, r: &mut Report) {
    let spec = &route.spec;
    if spec.parent_refs.len() > 32 {
        r.error("spec.parentRefs", "at most 32 parentRefs are allowed");
    }
    for (i, p) in spec.parent_refs.iter().enumerate() {
        if p.name.is_empty() {
            r.error(format!("spec.parentRefs[{i}].name"), "name is required");
        }
        if let Some(port) = p.port {
            r.check(format!("spec.parentRefs[{i}].port"), validate_port(i64::from(port)));
        }
    }
    if spec.hostnames.len() > 16 {
        r.error("spec.hostnames", "at most 16 hostnames are allowed");
    }
    for (i, h) in spec.hostnames.iter().enumerate() {
        r.check(format!("spec.hostnames[{i}]"), validate_hostname(h));
    }
    if spec.rules.len() > 16 {
        r.error("spec.rules", "at most 16 rules are allowed");
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let rf = format!("spec.rules[{i}]");
        if rule.matches.len() > 64 {
            r.error(format!("{rf}.matches"), "at most 64 matches are allowed");
        }
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{rf}.matches[{j}]");
            if let Some(p) = &m.path {
                match p.type_ {
                    PathMatchType::RegularExpression => {
                        validate_regex(&p.value, &format!("{mf}.path.value"), r)
                    }
                    _ => validate_path_value(&p.value, &format!("{mf}.path.value"), r),
                }
            }
            for (what, list) in [
                ("headers", m.headers.iter().map(|h| (&h.name, h.type_, &h.value)).collect::<Vec<_>>()),
                ("queryParams", m.query_params.iter().map(|q| (&q.name, q.type_, &q.value)).collect()),
            ] {
                let mut names = BTreeSet::new();
                for (k, (name, type_, value)) in list.into_iter().enumerate() {
                    let hf = format!("{mf}.{what}[{k}]");
                    if !is_header_name(name) {
                        r.error(format!("{hf}.name"), format!("{name:?} is not a valid name"));
                    }
                    let key = if what == "headers" { name.to_ascii_lowercase() } else { name.clone() };
                    if !names.insert(key) {
                        r.error(format!("{hf}.name"), format!("{name:?} is matched twice"));
                    }
                    if type_ == ValueMatchType::RegularExpression {
                        validate_regex(value, &format!("{hf}.value"), r);
                    } else if value.is_empty() || value.len() > 4096 {
                        r.error(format!("{hf}.value"), "value must be 1 to 4096 characters");
                    }
                }
            }
        }
        validate_filters(&rule.filters, rule, &format!("{rf}.filters"), r);
        if rule.filters.iter().any(|f| f.type_ == HttpRouteFilterType::RequestRedirect)
            && !rule.backend_refs.is_empty()
        {
            r.error(&rf, "RequestRedirect filter must not be used together with backendRefs");
        }
        if rule.backend_refs.len() > 16 {
            r.error(format!("{rf}.backendRefs"), "at most 16 backendRefs are allowed");
        }
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let bf = format!("{rf}.backendRefs[{j}]");
            validate_backend_object(
                &BackendObjectReference {
                    group: b.group.clone(),
                    kind: b.kind.clone(),
                    name: b.name.clone(),
                    namespace: b.namespace.clone(),
                    port: b.port,
                },
                &bf,
                r,
            );
            if !(0..=1_000_000).contains(&b.weight) {
                r.error(format!("{bf}.weight"), format!("weight {} must be in 0..1000000", b.weight));
            }
            validate_filters(&b.filters, rule, &format!("{bf}.filters"), r);
        }
        if rule.backend_refs.len() > 1 && rule.backend_refs.iter().all(|b| b.weight == 0) {
            r.warn(
                format!("{rf}.backendRefs"),
                "every backendRef has weight 0: requests matching this rule get HTTP 500",
            );
        }
        if let Some(t) = &rule.timeouts
            && let (Some(req), Some(be)) = (t.request, t.backend_request)
            && !req.0.is_zero()
            && be.0 > req.0
        {
            r.error(
                format!("{rf}.timeouts.backendRequest"),
                "backendRequest timeout cannot be longer than request timeout",
            );
        }
    }
}

/// The CRD's rules: 1 to 16 `from` and `to` entries, `from` with group, kind and namespace,
/// `to` with a kind.
pub(super) fn validate_reference_grant(grant: &ReferenceGrant, r: &mut Report) {
    let spec = &grant.spec;
    if spec.from.is_empty() || spec.from.len() > 16 {
        r.error("spec.from", "a ReferenceGrant must have 1 to 16 from entries");
    }
    for (i, from) in spec.from.iter().enumerate() {
        let f = format!("spec.from[{i}]");
        if from.group.is_none() {
            r.error(
                format!("{f}.group"),
                "group is required (gateway.networking.k8s.io for routes and Gateways, \"\" for the core group)",
            );
        }
        if from.kind.is_empty() {
            r.error(format!("{f}.kind"), "kind is required");
        }
        if from.namespace.is_empty() {
            r.error(
                format!("{f}.namespace"),
                "namespace is required: the namespace the references come from",
            );
        } else if !is_k8s_namespace(&from.namespace) {
            r.error(format!("{f}.namespace"), format!("invalid namespace {:?}", from.namespace));
        }
    }
    if spec.to.is_empty() || spec.to.len() > 16 {
        r.error("spec.to", "a ReferenceGrant must have 1 to 16 to entries");
    }
    for (i, to) in spec.to.iter().enumerate() {
        let f = format!("spec.to[{i}]");
        if to.kind.is_empty() {
            r.error(format!("{f}.kind"), "kind is required");
        }
        if to.name.as_deref() == Some("") {
            r.error(
                format!("{f}.name"),
                "name must not be empty: leave it out to grant every object of the kind",
            );
        }
    }
}
