//! VirtualService, after Istio's `ValidateVirtualService` and `validateHTTPRoute`.

use super::names::{is_dns1123_label, validate_ip_subnet, validate_port, validate_wildcard_domain};
use super::{
    Report, validate_duration_ms, validate_export_to, validate_gateway_names, validate_label_map,
    validate_regex,
};
use crate::config::kinds::Percent;
use crate::config::kinds::virtual_service::*;
use std::collections::BTreeMap;

const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

pub(crate) const GRPC_STATUS_NAMES: &[&str] = &[
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

const JWT_CLAIM_PREFIX: &str = "@request.auth.claims";

pub(super) fn validate(vs: &VirtualService, r: &mut Report) {
    let spec = &vs.spec;
    let delegate = spec.hosts.is_empty();
    if delegate {
        if !spec.gateways.is_empty() {
            r.error("spec.gateways", "delegate virtual service must have no gateways specified");
        }
        if !spec.tls.is_empty() {
            r.error("spec.tls", "delegate virtual service must have no tls route specified");
        }
        if !spec.tcp.is_empty() {
            r.error("spec.tcp", "delegate virtual service must have no tcp route specified");
        }
    }
    let applies_to_mesh = spec.applies_to_mesh();
    let applies_to_gateway = !spec.gateways.is_empty() && !spec.gateways.iter().any(|g| g == MESH_GATEWAY);
    validate_gateway_names(
        &spec.gateways.iter().filter(|g| *g != MESH_GATEWAY).cloned().collect::<Vec<_>>(),
        "spec.gateways",
        r,
    );

    if !applies_to_gateway {
        for (i, http) in spec.http.iter().enumerate() {
            for (j, m) in http.matches.iter().enumerate() {
                for key in m.headers.keys().chain(m.without_headers.keys()) {
                    if key.starts_with(JWT_CLAIM_PREFIX) {
                        r.error(
                            format!("spec.http[{i}].match[{j}].headers.{key}"),
                            format!("JWT claim based routing (key: {key}) is only supported for gateways"),
                        );
                    }
                }
            }
        }
    }

    let mut all_hosts_valid = true;
    for (i, host) in spec.hosts.iter().enumerate() {
        let field = format!("spec.hosts[{i}]");
        match validate_wildcard_domain(host) {
            Err(e) => {
                if host.parse::<std::net::IpAddr>().is_err() {
                    r.error(field, e);
                    all_hosts_valid = false;
                }
            }
            Ok(()) if applies_to_mesh && host == "*" => {
                r.error(
                    field,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_hosts_valid = false;
            }
            Ok(()) => {}
        }
    }
    if all_hosts_valid {
        for i in 0..spec.hosts.len() {
            for j in i + 1..spec.hosts.len() {
                if hosts_match(&spec.hosts[i], &spec.hosts[j]) {
                    r.error(
                        format!("spec.hosts[{j}]"),
                        format!("duplicate hosts in virtual service: {} & {}", spec.hosts[i], spec.hosts[j]),
                    );
                }
            }
        }
    }

    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        r.error("spec", "http, tcp or tls must be provided in virtual service");
    }
    for (i, http) in spec.http.iter().enumerate() {
        validate_http_route(http, &format!("spec.http[{i}]"), delegate, r);
    }
    for (i, tls) in spec.tls.iter().enumerate() {
        validate_tls_route(tls, spec, &format!("spec.tls[{i}]"), r);
    }
    for (i, tcp) in spec.tcp.iter().enumerate() {
        validate_tcp_route(tcp, &format!("spec.tcp[{i}]"), r);
    }
    validate_export_to(&vs.metadata.namespace, &spec.export_to, false, "spec.exportTo", r);
    analyze_unreachable_http_rules(&spec.http, r);
}

/// Istio's `host.Name.Matches`: equal, or one wildcard covers the other.
pub(crate) fn hosts_match(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => {
            if sa.len() > sb.len() {
                sa.ends_with(sb)
            } else {
                sb.ends_with(sa)
            }
        }
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Istio's `host.Name.SubsetOf`: every name matched by `n` is matched by `o`.
fn host_subset_of(n: &str, o: &str) -> bool {
    match (n.strip_prefix('*'), o.strip_prefix('*')) {
        (Some(sn), Some(so)) => n.len() >= o.len() && sn.ends_with(so),
        (None, Some(so)) => n.ends_with(so),
        (Some(_), None) => false,
        (None, None) => n == o,
    }
}

fn validate_http_route(http: &HttpRoute, f: &str, delegate_vs: bool, r: &mut Report) {
    // Conflicts between route, redirect, direct response and delegate.
    if http.delegate.is_some() {
        if delegate_vs {
            r.error(format!("{f}.delegate"), "delegate HTTP route cannot contain delegate");
        }
        if http.redirect.is_some() {
            r.error(format!("{f}.redirect"), "root HTTP route must not specify redirect");
        }
        if !http.route.is_empty() {
            r.error(format!("{f}.route"), "root HTTP route must not specify route");
        }
    } else if http.redirect.is_some() {
        if !http.route.is_empty() {
            r.error(format!("{f}.redirect"), "HTTP route cannot contain both route and redirect");
        }
        if http.fault.is_some() {
            r.error(format!("{f}.redirect"), "HTTP route cannot contain both fault and redirect");
        }
        if http.rewrite.is_some() {
            r.error(format!("{f}.redirect"), "HTTP route rule cannot contain both rewrite and redirect");
        }
    } else if http.route.is_empty() && http.direct_response.is_none() {
        r.error(f, "HTTP route, redirect or directResponse is required");
    }
    if http.redirect.is_some() && http.direct_response.is_some() {
        r.error(format!("{f}.directResponse"), "HTTP route cannot contain both redirect and directResponse");
    }

    let match_regex_allowed = !delegate_vs && http.delegate.is_none();
    for (j, m) in http.matches.iter().enumerate() {
        validate_match_request(m, &format!("{f}.match[{j}]"), match_regex_allowed, r);
    }

    if let Some(h) = &http.headers {
        validate_headers(h, &format!("{f}.headers"), r);
    }
    if let Some(fault) = &http.fault {
        validate_fault(fault, &format!("{f}.fault"), r);
    }
    if let Some(p) = http.mirror_percent {
        if p > 100 {
            r.error(
                format!("{f}.mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {p})"),
            );
        }
        r.warn(
            format!("{f}.mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(p) = &http.mirror_percentage {
        if p.value > 100.0 {
            r.error(
                format!("{f}.mirrorPercentage.value"),
                format!("mirror percentage {} must be at most 100", p.value),
            );
        }
        if p.value < 0.0 {
            r.error(
                format!("{f}.mirrorPercentage.value"),
                format!("mirror percentage {} must not be negative", p.value),
            );
        }
    }
    if let Some(m) = &http.mirror {
        validate_destination(m, &format!("{f}.mirror"), r);
    }
    for (k, m) in http.mirrors.iter().enumerate() {
        let mf = format!("{f}.mirrors[{k}]");
        match &m.destination {
            None => r.error(format!("{mf}.destination"), "destination is required for mirrors"),
            Some(d) => validate_destination(d, &format!("{mf}.destination"), r),
        }
        if let Some(p) = &m.percentage
            && !(0.0..=100.0).contains(&p.value)
        {
            r.error(
                format!("{mf}.percentage.value"),
                format!("mirror percentage {} is not in range 0..100", p.value),
            );
        }
    }
    if let Some(redirect) = &http.redirect {
        validate_redirect(redirect, &format!("{f}.redirect"), r);
    }
    if let Some(d) = &http.direct_response
        && !(200..=599).contains(&d.status)
    {
        r.error(
            format!("{f}.directResponse.status"),
            format!("HTTP status {} is not in range 200-599", d.status),
        );
    }
    if let Some(retries) = &http.retries {
        validate_retries(retries, &format!("{f}.retries"), r);
    }
    if let Some(rewrite) = &http.rewrite {
        validate_rewrite(rewrite, &format!("{f}.rewrite"), r);
    }
    validate_authority_rewrite(http, f, r);

    // Destinations and their weights: relative, never negative, not all zero.
    let mut total: i64 = 0;
    for (j, dest) in http.route.iter().enumerate() {
        let df = format!("{f}.route[{j}]");
        match &dest.destination {
            None => r.error(format!("{df}.destination"), "destination is required"),
            Some(d) => validate_destination(d, &format!("{df}.destination"), r),
        }
        if let Some(h) = &dest.headers {
            validate_headers(h, &format!("{df}.headers"), r);
        }
        if dest.weight < 0 {
            r.error(format!("{df}.weight"), format!("weight {} is negative", dest.weight));
        }
        total += i64::from(dest.weight);
    }
    if http.route.len() > 1 && total == 0 && http.route.iter().all(|d| d.weight == 0) {
        r.error(
            format!("{f}.route"),
            "total destination weight = 0: weights are relative, give at least one destination a positive weight",
        );
    }
    if let Some(t) = http.timeout {
        validate_duration_ms(t.0, &format!("{f}.timeout"), "timeout", "; omit the timeout to disable it", r);
    }
}

fn validate_string_match(sm: &StringMatch, field: &str, regex_allowed: bool, r: &mut Report) {
    let set = [sm.exact.is_some(), sm.prefix.is_some(), sm.regex.is_some()].iter().filter(|b| **b).count();
    if set > 1 {
        r.error(field, "only one of exact, prefix or regex may be set");
    }
    if let Some(re) = &sm.regex {
        if regex_allowed {
            validate_regex(re, &format!("{field}.regex"), r);
        } else {
            r.error(format!("{field}.regex"), "regex match is not supported in delegate routes");
        }
    }
}

/// Header names: `^[-_A-Za-z0-9]+$`, or a JWT claim (`@request.auth.claims.…`).
fn validate_header_match_name(name: &str, field: &str, r: &mut Report) {
    if name.is_empty() {
        r.error(field, "header name cannot be empty");
    } else if !name.starts_with(JWT_CLAIM_PREFIX)
        && !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        r.error(field, format!("header name {name} is not a valid header name"));
    }
}

fn validate_match_request(m: &HttpMatchRequest, f: &str, regex_allowed: bool, r: &mut Report) {
    for (name, sm) in &m.headers {
        let hf = format!("{f}.headers.{name}");
        validate_header_match_name(name, &hf, r);
        validate_string_match(sm, &hf, regex_allowed, r);
    }
    for (name, sm) in &m.without_headers {
        let hf = format!("{f}.withoutHeaders.{name}");
        validate_header_match_name(name, &hf, r);
        validate_string_match(sm, &hf, regex_allowed, r);
    }
    for (what, sm) in
        [("uri", &m.uri), ("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)]
    {
        if let Some(sm) = sm {
            validate_string_match(sm, &format!("{f}.{what}"), regex_allowed, r);
        }
    }
    for (name, sm) in &m.query_params {
        validate_string_match(sm, &format!("{f}.queryParams.{name}"), regex_allowed, r);
    }
    if let Some(p) = m.port {
        r.check(format!("{f}.port"), validate_port(i64::from(p)));
    }
    validate_label_map(&m.source_labels, &format!("{f}.sourceLabels"), r);
    validate_gateway_names(&m.gateways, &format!("{f}.gateways"), r);
    if let Some(ns) = &m.source_namespace
        && !is_dns1123_label(ns)
    {
        r.error(format!("{f}.sourceNamespace"), format!("sourceNamespace match {ns} is invalid"));
    }
}

/// Envoy's header value syntax: no control characters; `%` starts a `%VARIABLE%` or is
/// escaped as `%%`.
pub(crate) fn validate_header_value(value: &str) -> Result<(), String> {
    if value.chars().any(|c| (c.is_control() && c != '\t') || c == '\u{7f}') {
        return Err(format!("header value {value:?} contains control characters"));
    }
    let mut rest = value;
    while let Some(pos) = rest.find('%') {
        let after = &rest[pos + 1..];
        if let Some(a) = after.strip_prefix('%') {
            rest = a;
            continue;
        }
        match after.find('%') {
            Some(end) if end > 0 => rest = &after[end + 1..],
            _ => {
                return Err(format!(
                    "header value {value:?}: unterminated '%' (write %% for a literal %, or %VARIABLE%)"
                ));
            }
        }
    }
    Ok(())
}

fn is_pseudo_or_host(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn validate_headers(h: &Headers, f: &str, r: &mut Report) {
    if let Some(req) = &h.request {
        for (op, map) in [("set", &req.set), ("add", &req.add)] {
            for (name, value) in map {
                let hf = format!("{f}.request.{op}.{name}");
                if name.is_empty() {
                    r.error(&hf, "header name cannot be empty");
                } else if is_pseudo_or_host(name) && !is_authority(name) {
                    r.error(&hf, format!("invalid header {name:?}: header cannot have \":\" prefix"));
                }
                r.check(&hf, validate_header_value(value));
            }
        }
        for (k, name) in req.remove.iter().enumerate() {
            validate_removable_header(name, &format!("{f}.request.remove[{k}]"), r);
        }
    }
    if let Some(resp) = &h.response {
        for (op, map) in [("set", &resp.set), ("add", &resp.add)] {
            for (name, value) in map {
                let hf = format!("{f}.response.{op}.{name}");
                validate_removable_header(name, &hf, r);
                r.check(&hf, validate_header_value(value));
            }
        }
        for (k, name) in resp.remove.iter().enumerate() {
            validate_removable_header(name, &format!("{f}.response.remove[{k}]"), r);
        }
    }
}

fn validate_removable_header(name: &str, field: &str, r: &mut Report) {
    if name.is_empty() {
        r.error(field, "header name cannot be empty");
    } else if name.eq_ignore_ascii_case("host") {
        r.error(field, format!("invalid header {name:?}: cannot set Host header"));
    } else if name.starts_with(':') {
        r.error(field, format!("invalid header {name:?}: header cannot have \":\" prefix"));
    }
}

fn validate_percentage(p: &Option<Percent>, field: &str, r: &mut Report) {
    if let Some(p) = p
        && (p.value < 0.0 || p.value > 100.0 || (p.value > 0.0 && p.value < 0.0001))
    {
        r.error(
            format!("{field}.value"),
            format!("percentage {} is neither 0.0, nor in range [0.0001, 100.0]", p.value),
        );
    }
}

fn validate_fault(fault: &HttpFaultInjection, f: &str, r: &mut Report) {
    if fault.abort.is_none() && fault.delay.is_none() {
        r.error(f, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(abort) = &fault.abort {
        let af = format!("{f}.abort");
        validate_percentage(&abort.percentage, &format!("{af}.percentage"), r);
        let kinds = [abort.http_status.is_some(), abort.grpc_status.is_some(), abort.http2_error.is_some()];
        if kinds.iter().filter(|b| **b).count() > 1 {
            r.error(&af, "only one of httpStatus, grpcStatus or http2Error may be set");
        }
        if let Some(status) = abort.http_status {
            // Envoy accepts [200, 600); Istio's check lets 600 through and Envoy then NACKs.
            if !(200..=599).contains(&status) {
                r.error(format!("{af}.httpStatus"), format!("HTTP status {status} is not in range 200-599"));
            }
        } else if let Some(g) = &abort.grpc_status {
            if !GRPC_STATUS_NAMES.contains(&g.as_str()) {
                r.error(
                    format!("{af}.grpcStatus"),
                    format!("gRPC status {g:?} is not supported; use a name like NOT_FOUND or UNAVAILABLE"),
                );
            }
        } else if abort.http2_error.is_some() {
            r.error(format!("{af}.http2Error"), "HTTP/2 abort fault injection not supported yet");
        } else {
            r.warn(&af, "abort configured, but error type not set");
        }
    }
    if let Some(delay) = &fault.delay {
        let df = format!("{f}.delay");
        validate_percentage(&delay.percentage, &format!("{df}.percentage"), r);
        if let Some(p) = delay.percent
            && !(0..=100).contains(&p)
        {
            r.error(format!("{df}.percent"), format!("percentage {p} is not in range 0..100"));
        }
        match (delay.fixed_delay, delay.exponential_delay) {
            (Some(d), _) => validate_duration_ms(d.0, &format!("{df}.fixedDelay"), "fixedDelay", "", r),
            (None, Some(d)) => {
                validate_duration_ms(d.0, &format!("{df}.exponentialDelay"), "exponentialDelay", "", r);
                r.error(format!("{df}.exponentialDelay"), "exponentialDelay not supported yet");
            }
            (None, None) => r.warn(&df, "delay configured, but fixedDelay not set; it has no effect"),
        }
    }
}

fn validate_destination(d: &Destination, f: &str, r: &mut Report) {
    if d.host == "*" {
        r.error(format!("{f}.host"), "invalid destination host *");
    } else {
        r.check(format!("{f}.host"), validate_wildcard_domain(&d.host));
    }
    if let Some(subset) = &d.subset {
        if subset.is_empty() {
            r.error(format!("{f}.subset"), "subset name cannot be empty");
        } else if !is_dns1123_label(subset) {
            r.error(format!("{f}.subset"), format!("subset name is invalid: {subset}"));
        }
    }
    if let Some(p) = d.port {
        r.check(format!("{f}.port.number"), validate_port(i64::from(p.number)));
    }
}

fn validate_redirect(redirect: &HttpRedirect, f: &str, r: &mut Report) {
    if redirect.uri.is_none()
        && redirect.authority.is_none()
        && redirect.port.is_none()
        && redirect.derive_port.is_none()
        && redirect.scheme.is_none()
    {
        r.error(f, "redirect must specify URI, authority, scheme, or port");
    }
    if let Some(code) = redirect.redirect_code
        && code != 0
        && !(300..=399).contains(&code)
    {
        r.error(format!("{f}.redirectCode"), format!("{code} is not a valid redirect code, must be 3xx"));
    }
    if let Some(s) = &redirect.scheme
        && s != "http"
        && s != "https"
    {
        r.error(format!("{f}.scheme"), "invalid redirect scheme, must be \"http\" or \"https\"");
    }
    if let Some(p) = redirect.port {
        r.check(format!("{f}.port"), validate_port(i64::from(p)));
    }
    if redirect.port.is_some() && redirect.derive_port.is_some() {
        r.error(f, "only one of port or derivePort may be set");
    }
}

fn validate_retries(retries: &HttpRetry, f: &str, r: &mut Report) {
    if retries.attempts < 0 {
        r.error(format!("{f}.attempts"), "attempts cannot be negative");
    }
    if retries.attempts == 0
        && (retries.per_try_timeout.is_some()
            || retries.retry_on.is_some()
            || retries.retry_remote_localities.is_some())
    {
        r.error(f, "http retry policy configured when attempts are set to 0 (disabled)");
    }
    if let Some(t) = retries.per_try_timeout {
        validate_duration_ms(t.0, &format!("{f}.perTryTimeout"), "perTryTimeout", "", r);
    }
    if let Some(on) = &retries.retry_on
        && !on.is_empty()
    {
        for policy in on.split(',') {
            let is_status = policy.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
            if !is_status && !RETRY_ON_POLICIES.contains(&policy) {
                r.error(format!("{f}.retryOn"), format!("{policy:?} is not a valid retryOn policy"));
            }
        }
    }
    if let Some(b) = retries.backoff {
        validate_duration_ms(b.0, &format!("{f}.backoff"), "backoff", "", r);
    }
}

fn validate_rewrite(rewrite: &HttpRewrite, f: &str, r: &mut Report) {
    if rewrite.uri.is_some() && rewrite.uri_regex_rewrite.is_some() {
        r.error(f, "rewrite may only contain one of URI or UriRegexRewrite");
    }
    if rewrite.uri.is_none() && rewrite.uri_regex_rewrite.is_none() && rewrite.authority.is_none() {
        r.error(f, "rewrite must specify at least one of URI, UriRegexRewrite, or authority");
    }
    if let Some(re) = &rewrite.uri_regex_rewrite {
        if re.match_.is_empty() || re.rewrite.is_empty() {
            r.error(
                format!("{f}.uriRegexRewrite"),
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            );
        } else {
            validate_regex(&re.match_, &format!("{f}.uriRegexRewrite.match"), r);
        }
    }
}

fn validate_authority_rewrite(http: &HttpRoute, f: &str, r: &mut Report) {
    let mut current = http.rewrite.as_ref().and_then(|rw| rw.authority.clone());
    let Some(req) = http.headers.as_ref().and_then(|h| h.request.as_ref()) else { return };
    for map in [&req.set, &req.add] {
        for (k, v) in map {
            if !is_authority(k) {
                continue;
            }
            if let Some(c) = &current {
                r.error(
                    format!("{f}.headers.request"),
                    format!(
                        "authority header cannot be set multiple times: have {c:?}, attempting to set {v:?}"
                    ),
                );
            }
            current = Some(v.clone());
        }
    }
}

fn validate_route_destinations(route: &[RouteDestination], f: &str, r: &mut Report) {
    let mut total: i64 = 0;
    for (j, dest) in route.iter().enumerate() {
        let df = format!("{f}[{j}]");
        match &dest.destination {
            None => r.error(format!("{df}.destination"), "destination is required"),
            Some(d) => validate_destination(d, &format!("{df}.destination"), r),
        }
        if dest.weight < 0 {
            r.error(format!("{df}.weight"), format!("weight {} is negative", dest.weight));
        }
        total += i64::from(dest.weight);
    }
    if route.len() > 1 && total == 0 && route.iter().all(|d| d.weight == 0) {
        r.error(f, "total destination weight = 0: weights are relative, give at least one destination a positive weight");
    }
}

fn validate_tls_route(tls: &TlsRoute, spec: &VirtualServiceSpec, f: &str, r: &mut Report) {
    if tls.matches.is_empty() {
        r.error(format!("{f}.match"), "TLS route must have at least one match condition");
    }
    for (j, m) in tls.matches.iter().enumerate() {
        let mf = format!("{f}.match[{j}]");
        if m.sni_hosts.is_empty() {
            r.error(format!("{mf}.sniHosts"), "TLS match must have at least one SNI host");
        }
        for (k, sni) in m.sni_hosts.iter().enumerate() {
            let sf = format!("{mf}.sniHosts[{k}]");
            if let Err(e) = validate_wildcard_domain(sni) {
                if sni.parse::<std::net::IpAddr>().is_ok() {
                    r.warn(&sf, format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"));
                } else {
                    r.error(&sf, e);
                }
                continue;
            }
            if !spec.hosts.iter().any(|h| host_subset_of(sni, h)) {
                r.error(
                    &sf,
                    format!(
                        "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                        spec.hosts.join(", ")
                    ),
                );
            }
        }
        for (k, s) in m.destination_subnets.iter().enumerate() {
            r.check(format!("{mf}.destinationSubnets[{k}]"), validate_ip_subnet(s));
        }
        if let Some(p) = m.port {
            r.check(format!("{mf}.port"), validate_port(i64::from(p)));
        }
        validate_label_map(&m.source_labels, &format!("{mf}.sourceLabels"), r);
        validate_gateway_names(&m.gateways, &format!("{mf}.gateways"), r);
    }
    if tls.route.is_empty() {
        r.error(format!("{f}.route"), "TLS route is required");
    }
    validate_route_destinations(&tls.route, &format!("{f}.route"), r);
}

fn validate_tcp_route(tcp: &TcpRoute, f: &str, r: &mut Report) {
    for (j, m) in tcp.matches.iter().enumerate() {
        let mf = format!("{f}.match[{j}]");
        for (k, s) in m.destination_subnets.iter().enumerate() {
            r.check(format!("{mf}.destinationSubnets[{k}]"), validate_ip_subnet(s));
        }
        if let Some(s) = &m.source_subnet {
            r.check(format!("{mf}.sourceSubnet"), validate_ip_subnet(s));
        }
        if let Some(p) = m.port {
            r.check(format!("{mf}.port"), validate_port(i64::from(p)));
        }
        validate_label_map(&m.source_labels, &format!("{mf}.sourceLabels"), r);
        validate_gateway_names(&m.gateways, &format!("{mf}.gateways"), r);
    }
    if tcp.route.is_empty() {
        r.error(format!("{f}.route"), "TCP route is required");
    }
    validate_route_destinations(&tcp.route, &format!("{f}.route"), r);
}

/// Istio's unreachable-rule analysis: a second catch-all rule, or a rule whose every match
/// repeats an earlier one, is never used (warnings IST0130/IST0131).
fn analyze_unreachable_http_rules(routes: &[HttpRoute], r: &mut Report) {
    let name = |route: &HttpRoute, i: usize| match &route.name {
        Some(n) => format!("{n:?}"),
        None => format!("#{i}"),
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut catch_all: Option<usize> = None;
    for (i, route) in routes.iter().enumerate() {
        if route.matches.is_empty() {
            if catch_all.is_some() {
                r.findings.push(super::Finding {
                    severity: crate::config::Severity::Warning,
                    code: Some("IST0130"),
                    field: format!("spec.http[{i}]"),
                    message: format!(
                        "VirtualService rule {} not used (only the last rule can have no matches)",
                        name(route, i)
                    ),
                });
            }
            catch_all = Some(i);
            continue;
        }
        let mut duplicates = 0;
        for (j, m) in route.matches.iter().enumerate() {
            let mut unnamed = m.clone();
            unnamed.name = None;
            let key = serde_json::to_string(&unnamed).unwrap_or_default();
            if let Some(&earlier) = seen.get(&key) {
                duplicates += 1;
                let match_name = m.name.as_ref().map(|n| format!("{n:?}")).unwrap_or_else(|| format!("#{j}"));
                r.findings.push(super::Finding {
                    severity: crate::config::Severity::Warning,
                    code: Some("IST0131"),
                    field: format!("spec.http[{i}].match[{j}]"),
                    message: format!(
                        "VirtualService rule {} match {match_name} is not used (duplicate/overlapping match in rule {})",
                        name(route, i),
                        name(&routes[earlier], earlier)
                    ),
                });
            } else {
                seen.insert(key, i);
            }
        }
        if duplicates == route.matches.len() {
            r.findings.push(super::Finding {
                severity: crate::config::Severity::Warning,
                code: Some("IST0130"),
                field: format!("spec.http[{i}]"),
                message: format!(
                    "VirtualService rule {} not used (all matches used by prior rules)",
                    name(route, i)
                ),
            });
        }
    }
}
