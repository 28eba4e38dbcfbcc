//! Istio Gateway, ServiceEntry, Sidecar and WorkloadEntry, after Istio's validators.

use super::names::{
    is_dns1123_label, is_http_protocol, is_known_protocol, is_tls_protocol, validate_fqdn,
    validate_ip_subnet, validate_namespace_slash_wildcard_hostname, validate_port, validate_wildcard_domain,
};
use super::{Report, validate_export_to, validate_label_map, validate_selector_labels};
use crate::config::kinds::networking::*;
use std::collections::BTreeSet;
use std::net::IpAddr;

const UNIX_PREFIX: &str = "unix://";

fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

fn validate_protocol(p: Option<&str>, field: &str, r: &mut Report) {
    if let Some(p) = p
        && !p.is_empty()
        && !is_known_protocol(p)
    {
        r.error(field, format!("unsupported protocol: {p}"));
    }
}

fn validate_port_name(name: &str, field: &str, r: &mut Report) {
    if !is_dns1123_label(name) {
        r.error(field, format!("invalid port name: {name:?}"));
    }
}

pub(super) fn validate_gateway(gw: &Gateway, r: &mut Report) {
    if !is_dns1123_label(&gw.metadata.name) {
        r.error("metadata.name", format!("invalid gateway name: {:?}", gw.metadata.name));
    }
    let spec = &gw.spec;
    if spec.servers.is_empty() {
        r.error("spec.servers", "gateway must have at least one server");
    }
    let mut port_names = BTreeSet::new();
    for (i, s) in spec.servers.iter().enumerate() {
        let f = format!("spec.servers[{i}]");
        if s.hosts.is_empty() {
            r.error(format!("{f}.hosts"), "server config must contain at least one host");
        }
        for (j, h) in s.hosts.iter().enumerate() {
            r.check(format!("{f}.hosts[{j}]"), validate_namespace_slash_wildcard_hostname(h, true));
        }
        let bind = s.bind.as_deref().unwrap_or("");
        let mut port_ok = false;
        match &s.port {
            None => r.error(format!("{f}.port"), "port is required"),
            Some(p) => {
                let before = r.findings.len();
                if !is_known_protocol(&p.protocol) {
                    r.error(
                        format!("{f}.port.protocol"),
                        format!(
                            "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, HTTPS, TLS",
                            p.protocol
                        ),
                    );
                }
                if p.number > 0 || !bind.starts_with(UNIX_PREFIX) {
                    r.check(format!("{f}.port.number"), validate_port(i64::from(p.number)));
                }
                if p.target_port.is_some_and(|t| t > 0) {
                    r.error(format!("{f}.port.targetPort"), "targetPort has no impact on Gateways");
                }
                if p.name.is_empty() {
                    r.error(format!("{f}.port.name"), "port name must be set");
                } else if !port_names.insert(p.name.clone()) {
                    r.error(
                        format!("{f}.port.name"),
                        format!("port names in servers must be unique: duplicate name {}", p.name),
                    );
                }
                port_ok = r.findings.len() == before;
                if !is_http_protocol(&p.protocol) && s.tls.as_ref().is_some_and(|t| t.https_redirect) {
                    r.warn(
                        format!("{f}.tls.httpsRedirect"),
                        "tls.httpsRedirect should only be used with http servers",
                    );
                }
            }
        }
        if let Some(addr) = bind.strip_prefix(UNIX_PREFIX) {
            r.check(format!("{f}.bind"), validate_unix_address(addr));
            if s.port.as_ref().is_some_and(|p| p.number != 0) {
                r.error(format!("{f}.port.number"), "port number must be 0 for unix domain socket");
            }
        } else if !bind.is_empty() && bind.parse::<IpAddr>().is_err() {
            r.error(format!("{f}.bind"), format!("{bind:?} is not a valid IP address"));
        }
        if let Some(tls) = &s.tls {
            validate_server_tls(tls, &format!("{f}.tls"), r);
        }
        if port_ok && let Some(p) = &s.port {
            if is_tls_protocol(&p.protocol) && s.tls.is_none() {
                r.error(format!("{f}.tls"), "server must have TLS settings for HTTPS/TLS protocols");
            } else if !is_tls_protocol(&p.protocol)
                && let Some(tls) = &s.tls
            {
                if is_http_protocol(&p.protocol) {
                    let has_certs = [&tls.ca_certificates, &tls.private_key, &tls.server_certificate]
                        .iter()
                        .any(|o| o.as_deref().is_some_and(|s| !s.is_empty()));
                    let passthrough_like = tls.mode.is_none() || tls.mode == Some(ServerTlsMode::Passthrough);
                    if !passthrough_like || has_certs {
                        r.error(
                            format!("{f}.tls"),
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                } else {
                    r.error(format!("{f}.tls"), "server cannot have TLS settings for non HTTPS/TLS ports");
                }
            }
        }
    }
}

fn validate_server_tls(tls: &ServerTlsSettings, f: &str, r: &mut Report) {
    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    let mode = tls.mode.unwrap_or(ServerTlsMode::Passthrough);
    match mode {
        ServerTlsMode::IstioMutual => {
            for (name, v) in [
                ("serverCertificate", &tls.server_certificate),
                ("privateKey", &tls.private_key),
                ("caCertificates", &tls.ca_certificates),
                ("credentialName", &tls.credential_name),
            ] {
                if set(v) {
                    r.error(format!("{f}.{name}"), format!("ISTIO_MUTUAL TLS cannot have associated {name}"));
                }
            }
            return;
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
            if set(&tls.ca_crl)
                || set(&tls.server_certificate)
                || set(&tls.private_key)
                || set(&tls.ca_certificates)
                || set(&tls.credential_name) =>
        {
            r.warn(f, format!("{mode:?} mode does not use certificates, they will be ignored"));
        }
        _ => {}
    }
    let has_credential =
        set(&tls.credential_name) || !tls.credential_names.is_empty() || !tls.tls_certificates.is_empty();
    if matches!(mode, ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
        && has_credential
    {
        return;
    }
    match mode {
        ServerTlsMode::Simple => {
            if !set(&tls.server_certificate) {
                r.error(format!("{f}.serverCertificate"), "SIMPLE TLS requires a server certificate");
            }
            if !set(&tls.private_key) {
                r.error(format!("{f}.privateKey"), "SIMPLE TLS requires a private key");
            }
        }
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if !set(&tls.server_certificate) {
                r.error(format!("{f}.serverCertificate"), "MUTUAL TLS requires a server certificate");
            }
            if !set(&tls.private_key) {
                r.error(format!("{f}.privateKey"), "MUTUAL TLS requires a private key");
            }
            if !set(&tls.ca_certificates) {
                r.error(format!("{f}.caCertificates"), "MUTUAL TLS requires a client CA bundle");
            }
        }
        _ => {}
    }
}

pub(super) fn validate_service_entry(se: &ServiceEntry, r: &mut Report) {
    let spec = &se.spec;
    if let Some(sel) = &spec.workload_selector {
        validate_selector_labels(&sel.labels, "spec.workloadSelector.labels", r);
        if !spec.endpoints.is_empty() {
            r.error(
                "spec.workloadSelector",
                "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
            );
        }
    }
    if spec.hosts.is_empty() {
        r.error("spec.hosts", "service entry must have at least one host");
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        if h == "*" {
            r.error(format!("spec.hosts[{i}]"), format!("invalid host {h}"));
        } else {
            r.check(format!("spec.hosts[{i}]"), validate_wildcard_domain(h));
        }
    }
    let mut cidr = false;
    for (i, a) in spec.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        r.check(format!("spec.addresses[{i}]"), validate_ip_subnet(a));
    }
    if cidr && !matches!(spec.resolution, Resolution::None | Resolution::Static) {
        r.error("spec.resolution", "CIDR addresses are allowed only for NONE/STATIC resolution types");
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        if !names.insert(p.name.clone()) {
            r.error(format!("{f}.name"), format!("service entry port name {:?} already defined", p.name));
        }
        if !numbers.insert(p.number) {
            r.error(format!("{f}.number"), format!("service entry port {} already defined", p.number));
        }
        if let Some(t) = p.target_port
            && t != 0
        {
            r.check(format!("{f}.targetPort"), validate_port(i64::from(t)));
            if spec.resolution == Resolution::None {
                r.warn(format!("{f}.targetPort"), "targetPort has no effect when resolution mode is NONE");
            }
        }
        if spec.addresses.is_empty()
            && p.protocol.as_deref().is_none_or(|p| p.is_empty() || p.eq_ignore_ascii_case("TCP"))
        {
            r.findings.push(super::Finding {
                severity: crate::config::Severity::Warning,
                code: Some("IST0134"),
                field: f.clone(),
                message: "ServiceEntry addresses are required for ports serving TCP (or unset) protocol"
                    .into(),
            });
        }
        validate_port_name(&p.name, &format!("{f}.name"), r);
        validate_protocol(p.protocol.as_deref(), &format!("{f}.protocol"), r);
        r.check(format!("{f}.number"), validate_port(i64::from(p.number)));
    }
    match spec.resolution {
        Resolution::None => {
            if !spec.endpoints.is_empty() {
                r.error("spec.endpoints", "no endpoints should be provided for resolution type none");
            }
            if spec.workload_selector.is_some() {
                r.warn(
                    "spec.workloadSelector",
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        Resolution::Static => {
            for (i, ep) in spec.endpoints.iter().enumerate() {
                validate_workload_entry_spec(ep, Some(&names), false, &format!("spec.endpoints[{i}]"), r);
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => {
            if spec.endpoints.is_empty() {
                for (i, h) in spec.hosts.iter().enumerate() {
                    if validate_fqdn(h).is_err() {
                        r.error(
                            format!("spec.hosts[{i}]"),
                            format!(
                                "hosts must be FQDN if no endpoints are provided for resolution mode {:?}",
                                spec.resolution
                            ),
                        );
                    }
                }
            }
            if spec.resolution == Resolution::DnsRoundRobin && spec.endpoints.len() > 1 {
                r.error(
                    "spec.endpoints",
                    "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
                );
            }
            for (i, ep) in spec.endpoints.iter().enumerate() {
                let f = format!("spec.endpoints[{i}]");
                if ep.address.parse::<IpAddr>().is_err() && validate_fqdn(&ep.address).is_err() {
                    r.error(
                        format!("{f}.address"),
                        format!("endpoint address {:?} is not a valid FQDN or an IP address", ep.address),
                    );
                }
                validate_label_map(&ep.labels, &format!("{f}.labels"), r);
                for (name, port) in &ep.ports {
                    if !names.contains(name) {
                        r.error(
                            format!("{f}.ports.{name}"),
                            format!("endpoint port {port} is not defined by the service entry"),
                        );
                    }
                    validate_port_name(name, &format!("{f}.ports.{name}"), r);
                    r.check(format!("{f}.ports.{name}"), validate_port(i64::from(*port)));
                }
            }
            if spec.workload_selector.is_some() {
                r.warn(
                    "spec.workloadSelector",
                    "workloadSelector should not be set when resolution mode is DNS",
                );
            }
        }
    }
    if spec.resolution != Resolution::None && spec.hosts.len() > 1 {
        let plain = spec.ports.iter().any(|p| {
            let proto = p.protocol.as_deref().unwrap_or("");
            !is_http_protocol(proto) && !is_tls_protocol(proto)
        });
        if plain {
            r.error("spec.ports", "multiple hosts provided with non-HTTP, non-TLS ports");
        }
    }
    validate_export_to(&se.metadata.namespace, &spec.export_to, true, "spec.exportTo", r);
}

fn validate_workload_entry_spec(
    we: &WorkloadEntrySpec,
    service_ports: Option<&BTreeSet<String>>,
    allow_fqdn: bool,
    f: &str,
    r: &mut Report,
) {
    let addr = we.address.as_str();
    if addr.is_empty() {
        match &we.network {
            None => {
                r.error(format!("{f}.address"), "address is required");
                return;
            }
            Some(n) => r.warn(format!("{f}.address"), format!("address is unset with network {n:?}")),
        }
    }
    let mut unix = false;
    if let Some(path) = addr.strip_prefix(UNIX_PREFIX) {
        unix = true;
        r.check(format!("{f}.address"), validate_unix_address(path));
        if !we.ports.is_empty() {
            r.error(format!("{f}.ports"), format!("unix endpoint {addr} must not include ports"));
        }
    } else if !addr.is_empty() && addr.parse::<IpAddr>().is_err() {
        if !allow_fqdn {
            r.error(format!("{f}.address"), format!("endpoint address {addr:?} is not a valid IP address"));
        } else if validate_fqdn(addr).is_err() {
            r.error(
                format!("{f}.address"),
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    for (name, port) in &we.ports {
        if let Some(sp) = service_ports
            && !sp.contains(name)
        {
            r.error(
                format!("{f}.ports.{name}"),
                format!("endpoint port {port} is not defined by the service entry"),
            );
        }
        validate_port_name(name, &format!("{f}.ports.{name}"), r);
        r.check(format!("{f}.ports.{name}"), validate_port(i64::from(*port)));
    }
    validate_label_map(&we.labels, &format!("{f}.labels"), r);
    if unix && service_ports.is_some_and(|sp| sp.len() != 1) {
        r.error(f, "exactly 1 service port required for unix endpoints");
    }
}

pub(super) fn validate_workload_entry(we: &WorkloadEntry, r: &mut Report) {
    validate_workload_entry_spec(&we.spec, None, true, "spec", r);
}

pub(super) fn validate_sidecar(sc: &Sidecar, r: &mut Report) {
    let spec = &sc.spec;
    if let Some(sel) = &spec.workload_selector {
        if sel.labels.is_empty() {
            r.warn("spec.workloadSelector", "sidecar: workload selector specified without labels, will be applied to all services in namespace");
        }
        validate_selector_labels_no_warning(&sel.labels, "spec.workloadSelector.labels", r);
    }
    if spec.egress.is_empty()
        && spec.ingress.is_empty()
        && spec.outbound_traffic_policy.is_none()
        && spec.inbound_connection_pool.is_none()
    {
        r.error("spec", "sidecar: empty configuration provided");
        return;
    }
    let mut ports = BTreeSet::new();
    for (i, ing) in spec.ingress.iter().enumerate() {
        let f = format!("spec.ingress[{i}]");
        let Some(p) = &ing.port else {
            r.error(format!("{f}.port"), "sidecar: port is required for ingress listeners");
            continue;
        };
        if let Some(n) = &p.name
            && !n.is_empty()
        {
            validate_port_name(n, &format!("{f}.port.name"), r);
        }
        validate_protocol(p.protocol.as_deref(), &format!("{f}.port.protocol"), r);
        r.check(format!("{f}.port.number"), validate_port(i64::from(p.number)));
        if !ports.insert(p.number) {
            r.error(format!("{f}.port.number"), "sidecar: ports on IP bound listeners must be unique");
        }
    }
    let mut ports = BTreeSet::new();
    for (i, eg) in spec.egress.iter().enumerate() {
        let f = format!("spec.egress[{i}]");
        match &eg.port {
            None if i + 1 != spec.egress.len() => r.error(
                format!("{f}.port"),
                "sidecar: the egress listener with empty port should be the last listener in the list",
            ),
            None => {}
            Some(p) => {
                if let Some(n) = &p.name
                    && !n.is_empty()
                {
                    validate_port_name(n, &format!("{f}.port.name"), r);
                }
                validate_protocol(p.protocol.as_deref(), &format!("{f}.port.protocol"), r);
                if p.number != 0 {
                    r.check(format!("{f}.port.number"), validate_port(i64::from(p.number)));
                    if !ports.insert(p.number) {
                        r.error(
                            format!("{f}.port.number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                } else if !eg.bind.as_deref().unwrap_or("").starts_with(UNIX_PREFIX) {
                    r.error(
                        format!("{f}.bind"),
                        "sidecar: ports with 0 value must have a unix domain socket bind address",
                    );
                }
            }
        }
        if eg.hosts.is_empty() {
            r.error(format!("{f}.hosts"), "sidecar: egress listener must contain at least one host");
        }
        for (j, h) in eg.hosts.iter().enumerate() {
            r.check(format!("{f}.hosts[{j}]"), validate_namespace_slash_wildcard_hostname(h, false));
        }
    }
    if let Some(otp) = &spec.outbound_traffic_policy
        && let Some(proxy) = &otp.egress_proxy
    {
        if otp.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
            r.error(
                "spec.outboundTrafficPolicy.egressProxy",
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
            );
        }
        r.check("spec.outboundTrafficPolicy.egressProxy.host", validate_fqdn(&proxy.host));
        if proxy.port.is_none() {
            r.error(
                "spec.outboundTrafficPolicy.egressProxy.port",
                "sidecar: egress_proxy port must be non-nil",
            );
        }
    }
}

fn validate_selector_labels_no_warning(
    labels: &std::collections::BTreeMap<String, String>,
    field: &str,
    r: &mut Report,
) {
    for (k, v) in labels {
        if k.is_empty() {
            r.error(field, format!("empty key is not supported in selector: \"{k}={v}\""));
        }
        if k.contains('*') || v.contains('*') {
            r.error(format!("{field}.{k}"), format!("wildcard is not supported in selector: \"{k}={v}\""));
        }
    }
}
