//! AuthorizationPolicy and PeerAuthentication, after Istio's validators.

use super::names::validate_ip_subnet;
use super::{Report, validate_selector_labels};
use crate::config::kinds::PolicyTargetReference;
use crate::config::kinds::security::*;

fn validate_ips(values: &[String], field: &str, r: &mut Report) {
    for (i, v) in values.iter().enumerate() {
        if let Err(e) = validate_ip_subnet(v) {
            r.error(format!("{field}[{i}]"), e);
        }
    }
}

fn validate_ports(values: &[String], field: &str, r: &mut Report) {
    for (i, v) in values.iter().enumerate() {
        if !v.parse::<u32>().is_ok_and(|p| p <= 65535) {
            r.error(format!("{field}[{i}]"), format!("bad port ({v}): must be a number in 0..65535"));
        }
    }
}

fn check_empty_values(values: &Option<Vec<String>>, field: &str, r: &mut Report) {
    for (i, v) in values.iter().flatten().enumerate() {
        if v.is_empty() {
            r.error(format!("{field}[{i}]"), "empty value not allowed");
        }
    }
}

/// `serviceAccounts` values and `source.serviceAccount` conditions: `sa` or `namespace/sa`,
/// no wildcard, at most 16 (Istio's `CheckServiceAccount`).
fn validate_service_accounts(values: &[String], field: &str, r: &mut Report) {
    if values.len() > 16 {
        r.error(field, "may not have more than 16 values");
    }
    for (i, v) in values.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let expected = "expected format 'serviceAccount' or 'namespace/serviceAccount'";
        if v.contains('*') {
            r.error(f, "wildcard not allowed");
        } else if v.len() > 320 {
            r.error(f, "value cannot exceed 320 characters");
        } else if v.matches('/').count() > 1 {
            r.error(f, format!("{expected}, found {v:?}"));
        } else if let Some((ns, sa)) = v.split_once('/') {
            if ns.is_empty() {
                r.error(f, format!("{expected}, found empty namespace {v:?}"));
            } else if sa.is_empty() {
                r.error(f, format!("{expected}, found empty serviceAccount {v:?}"));
            }
        } else if v.is_empty() {
            r.error(f, "empty value not allowed");
        }
    }
}

/// The `istio.io/dry-run` annotation: a boolean, and only on ALLOW and DENY policies.
fn validate_dry_run(ap: &AuthorizationPolicy, r: &mut Report) {
    if !ap.metadata.annotations.contains_key(DRY_RUN_ANNOTATION) {
        return;
    }
    let field = format!("metadata.annotations.{DRY_RUN_ANNOTATION}");
    match ap.spec.action {
        Action::Allow | Action::Deny => {
            if let Err(e) = ap.dry_run() {
                r.error(field, e);
            }
        }
        other => r.error(
            field,
            format!("the annotation {DRY_RUN_ANNOTATION} currently only supports action ALLOW/DENY, found action {other:?}"),
        ),
    }
}

/// What node agents, which see connections and not requests, make of a policy they enforce
/// (one without targetRefs): istiod reports the same on the policy's status.
fn warn_agents(ap: &AuthorizationPolicy, r: &mut Report) {
    if ap.has_target_refs() {
        return;
    }
    if ap.spec.action == Action::Custom {
        r.warn(
            "spec.action",
            "node agents do not enforce CUSTOM policies; attach the policy to a waypoint with targetRefs",
        );
        return;
    }
    let mut found = std::collections::BTreeSet::new();
    for rule in ap.spec.rules.iter().flatten() {
        for op in rule.to.iter().flatten().filter_map(|t| t.operation.as_ref()) {
            found.extend(op.http_fields().map(str::to_owned));
        }
        for src in rule.from.iter().flatten().filter_map(|f| f.source.as_ref()) {
            found.extend(src.http_fields().map(str::to_owned));
        }
        for c in &rule.when {
            if !L4_CONDITIONS.contains(&c.key.as_str()) {
                found.insert(c.key.clone());
            }
        }
    }
    if found.is_empty() {
        return;
    }
    let effect = match ap.spec.action {
        Action::Allow => "rules that use them are left out, so the policy allows less than it says",
        _ => "they are taken as matching, so the policy applies to more connections than it says",
    };
    let found: Vec<String> = found.into_iter().collect();
    r.warn(
        "spec.rules",
        format!(
            "node agents enforce this policy at L4 and cannot see HTTP attributes (found: {}): {effect}; attach it to a waypoint with targetRefs to enforce them",
            found.join(", ")
        ),
    );
}

fn validate_target_ref(t: &PolicyTargetReference, field: &str, r: &mut Report) {
    if t.name.is_empty() {
        r.error(format!("{field}.name"), "targetRef name must be set");
    }
    if !t.namespace.is_empty() {
        r.error(
            format!("{field}.namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        );
    }
    let allowed = matches!(
        (t.group.as_str(), t.kind.as_str()),
        ("" | "core", "Service")
            | ("networking.istio.io", "ServiceEntry")
            | ("gateway.networking.k8s.io", "Gateway")
    );
    if !allowed {
        r.error(
            field,
            format!(
                "targetRef must be to one of Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway but was {}/{}",
                t.group, t.kind
            ),
        );
    }
}

/// The `when` keys Istio knows, and how their values are checked.
fn validate_condition_values(key: &str, values: &[String], field: &str, r: &mut Report) {
    let map_key_ok = |k: &str| {
        let open = k.find('[');
        k.ends_with(']') && open.is_some_and(|o| o > 0 && o < k.len() - 2)
    };
    if key.starts_with("request.headers") || key.starts_with("request.auth.claims") {
        if !map_key_ok(key) {
            r.error(field, format!("bad key ({key}): should have format a[b]"));
        }
        return;
    }
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            r.error(format!("{field}[{i}]"), "empty value not allowed");
        }
    }
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => validate_ips(values, field, r),
        "destination.port" => validate_ports(values, field, r),
        "source.serviceAccount" => validate_service_accounts(values, field, r),
        "source.namespace"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => {}
        k if k.starts_with("experimental.envoy.filters.") => {}
        _ => r.error(field, format!("unknown attribute: {key}")),
    }
}

pub(super) fn validate_authorization_policy(ap: &AuthorizationPolicy, r: &mut Report) {
    validate_dry_run(ap, r);
    warn_agents(ap, r);
    let spec = &ap.spec;
    let selectors = usize::from(spec.selector.is_some())
        + usize::from(spec.target_ref.is_some())
        + usize::from(!spec.target_refs.is_empty());
    if selectors > 1 {
        r.error("spec", "only one of targetRefs or workloadSelector can be set");
    }
    if let Some(sel) = &spec.selector {
        validate_selector_labels(&sel.match_labels, "spec.selector.matchLabels", r);
    }
    if let Some(t) = &spec.target_ref {
        validate_target_ref(t, "spec.targetRef", r);
    }
    for (i, t) in spec.target_refs.iter().enumerate() {
        validate_target_ref(t, &format!("spec.targetRefs[{i}]"), r);
    }

    if spec.action == Action::Custom {
        match &spec.rules {
            None => r.error(
                "spec.rules",
                "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
            ),
            Some(_) => {
                if spec.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
                    r.error("spec.provider.name", "`provider.name` must not be empty");
                }
            }
        }
        for (i, rule) in spec.rules.iter().flatten().enumerate() {
            for (j, from) in rule.from.iter().flatten().enumerate() {
                if let Some(src) = &from.source {
                    let f = format!("spec.rules[{i}].from[{j}].source");
                    for (name, v) in [
                        ("namespaces", &src.namespaces),
                        ("notNamespaces", &src.not_namespaces),
                        ("principals", &src.principals),
                        ("notPrincipals", &src.not_principals),
                        ("requestPrincipals", &src.request_principals),
                        ("notRequestPrincipals", &src.not_request_principals),
                    ] {
                        if v.as_ref().is_some_and(|v| !v.is_empty()) {
                            r.error(
                                format!("{f}.{name}"),
                                format!("{name} is currently not supported with CUSTOM action"),
                            );
                        }
                    }
                }
            }
            for (j, when) in rule.when.iter().enumerate() {
                if when.key == "source.namespace"
                    || when.key == "source.principal"
                    || when.key.starts_with("request.auth.")
                {
                    r.error(
                        format!("spec.rules[{i}].when[{j}].key"),
                        format!("{} is currently not supported with CUSTOM action", when.key),
                    );
                }
            }
        }
    }
    if spec.provider.is_some() && spec.action != Action::Custom {
        r.error(
            "spec.provider",
            format!("`provider` must not be with non CUSTOM action, found {:?}", spec.action),
        );
    }
    if spec.action == Action::Deny && spec.rules.is_none() {
        r.error(
            "spec.rules",
            "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        );
    }

    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let rf = format!("spec.rules[{i}]");
        if rule.from.as_ref().is_some_and(Vec::is_empty) {
            r.error(format!("{rf}.from"), "`from` must not be empty");
        }
        let (mut tcp_in_from, mut tcp_in_to, mut from_exists, mut to_exists) = (false, false, false, false);
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let ff = format!("{rf}.from[{j}].source");
            let Some(src) = &from.source else {
                r.error(ff, "`from.source` must not be nil");
                continue;
            };
            from_exists = true;
            let lists = [
                ("principals", &src.principals),
                ("requestPrincipals", &src.request_principals),
                ("namespaces", &src.namespaces),
                ("ipBlocks", &src.ip_blocks),
                ("remoteIpBlocks", &src.remote_ip_blocks),
                ("notPrincipals", &src.not_principals),
                ("notRequestPrincipals", &src.not_request_principals),
                ("notNamespaces", &src.not_namespaces),
                ("notIpBlocks", &src.not_ip_blocks),
                ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
                ("serviceAccounts", &src.service_accounts),
                ("notServiceAccounts", &src.not_service_accounts),
            ];
            if lists.iter().all(|(_, v)| v.as_ref().is_none_or(Vec::is_empty)) {
                r.error(&ff, "`from.source` must not be empty");
            }
            let count = |v: &Option<Vec<String>>| v.as_ref().map_or(0, Vec::len);
            if count(&src.principals)
                + count(&src.not_principals)
                + count(&src.namespaces)
                + count(&src.not_namespaces)
                > 0
                && count(&src.service_accounts) + count(&src.not_service_accounts) > 0
            {
                r.error(
                    &ff,
                    format!("cannot set serviceAccounts with namespaces or principals, found at rule {i}"),
                );
            }
            for (name, v) in lists {
                if matches!(name, "serviceAccounts" | "notServiceAccounts") {
                    validate_service_accounts(v.as_deref().unwrap_or_default(), &format!("{ff}.{name}"), r);
                } else {
                    check_empty_values(v, &format!("{ff}.{name}"), r);
                }
            }
            for (name, v) in [
                ("ipBlocks", &src.ip_blocks),
                ("notIpBlocks", &src.not_ip_blocks),
                ("remoteIpBlocks", &src.remote_ip_blocks),
                ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
            ] {
                validate_ips(v.as_deref().unwrap_or_default(), &format!("{ff}.{name}"), r);
            }
            if src.principals.is_some()
                || src.not_principals.is_some()
                || src.ip_blocks.is_some()
                || src.not_ip_blocks.is_some()
                || src.namespaces.is_some()
                || src.not_namespaces.is_some()
                || src.remote_ip_blocks.is_some()
                || src.not_remote_ip_blocks.is_some()
                || src.service_accounts.is_some()
                || src.not_service_accounts.is_some()
            {
                tcp_in_from = true;
            }
        }
        if rule.to.as_ref().is_some_and(Vec::is_empty) {
            r.error(format!("{rf}.to"), "`to` must not be empty");
        }
        for (j, to) in rule.to.iter().flatten().enumerate() {
            let tf = format!("{rf}.to[{j}].operation");
            let Some(op) = &to.operation else {
                r.error(tf, "`to.operation` must not be nil");
                continue;
            };
            to_exists = true;
            let lists = [
                ("ports", &op.ports),
                ("methods", &op.methods),
                ("paths", &op.paths),
                ("hosts", &op.hosts),
                ("notPorts", &op.not_ports),
                ("notMethods", &op.not_methods),
                ("notPaths", &op.not_paths),
                ("notHosts", &op.not_hosts),
            ];
            if lists.iter().all(|(_, v)| v.as_ref().is_none_or(Vec::is_empty)) {
                r.error(&tf, "`to.operation` must not be empty");
            }
            for (name, v) in lists {
                check_empty_values(v, &format!("{tf}.{name}"), r);
            }
            validate_ports(op.ports.as_deref().unwrap_or_default(), &format!("{tf}.ports"), r);
            validate_ports(op.not_ports.as_deref().unwrap_or_default(), &format!("{tf}.notPorts"), r);
            if op.ports.is_some() || op.not_ports.is_some() {
                tcp_in_to = true;
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            let cf = format!("{rf}.when[{j}]");
            if c.key.is_empty() {
                r.error(format!("{cf}.key"), "`key` must not be empty");
            } else if c.values.is_empty() && c.not_values.is_empty() {
                r.error(
                    &cf,
                    format!("at least one of `values` or `notValues` must be set for key {}", c.key),
                );
            } else {
                validate_condition_values(&c.key, &c.values, &format!("{cf}.values"), r);
                validate_condition_values(&c.key, &c.not_values, &format!("{cf}.notValues"), r);
            }
        }
        if spec.action == Action::Deny
            && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
        {
            r.warn(
                &rf,
                "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port",
            );
        }
    }
}

pub(super) fn validate_peer_authentication(pa: &PeerAuthentication, r: &mut Report) {
    let spec = &pa.spec;
    if pa.metadata.annotations.contains_key(DRY_RUN_ANNOTATION) {
        r.error(
            format!("metadata.annotations.{DRY_RUN_ANNOTATION}"),
            format!(
                "{}/{} has unsupported annotation {DRY_RUN_ANNOTATION}, please remove the annotation",
                pa.metadata.namespace, pa.metadata.name
            ),
        );
    }
    let disable = "DISABLE is PERMISSIVE to node agents: plaintext is accepted, and traffic between enrolled workloads stays mTLS";
    if pa.mode() == MtlsMode::Disable {
        r.warn("spec.mtls.mode", disable);
    }
    for (port, m) in spec.port_level_mtls.iter().flatten() {
        if m.mode == MtlsMode::Disable {
            r.warn(format!("spec.portLevelMtls.{port}.mode"), disable);
        }
    }
    let empty_selector = spec.selector.as_ref().is_none_or(|s| s.match_labels.is_empty());
    if let Some(levels) = &spec.port_level_mtls {
        if empty_selector && !levels.is_empty() {
            r.error("spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS");
        }
        if levels.is_empty() {
            r.error("spec.portLevelMtls", "port level mTLS, if defined, must have at least one element");
        }
        for port in levels.keys() {
            if !port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
                r.error(
                    format!("spec.portLevelMtls.{port}"),
                    format!("port {port:?} must be a number in range 1..65535"),
                );
            }
        }
    }
    if let Some(sel) = &spec.selector {
        validate_selector_labels(&sel.match_labels, "spec.selector.matchLabels", r);
    }
}
