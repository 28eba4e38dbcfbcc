//! Name, host, label, port and address checks shared by the validators, following Istio's
//! `pkg/config/validation/agent` and `pkg/config/labels` (hosts may use upper case, as
//! there; Kubernetes object names may not).

use std::collections::BTreeMap;
use std::net::IpAddr;

/// A DNS-1123 label as Istio checks it: 1–63 of `[a-zA-Z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A Kubernetes object name (DNS-1123 subdomain): lower case, at most 253 characters.
pub fn is_k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| is_dns1123_label(l) && !l.bytes().any(|b| b.is_ascii_uppercase()))
}

/// A Kubernetes namespace name (DNS-1123 label, lower case).
pub fn is_k8s_namespace(s: &str) -> bool {
    is_dns1123_label(s) && !s.bytes().any(|b| b.is_ascii_uppercase())
}

fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s.strip_prefix("*-").or_else(|| s.strip_prefix('*')).unwrap_or(s);
    s.len() <= 63 && is_dns1123_label(rest)
}

fn check_dns_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

fn validate_dns1123_labels(domain: &str, whole: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {whole:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!("domain name {whole:?} invalid (label {label:?} invalid)"));
        }
    }
    Ok(())
}

/// A fully qualified domain name without wildcards.
pub fn validate_fqdn(fqdn: &str) -> Result<(), String> {
    check_dns_preconditions(fqdn)?;
    validate_dns1123_labels(fqdn, fqdn)
}

/// A domain name whose first label may be a wildcard (`*`, `*.example.com`, `*-foo.bar`).
pub fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    check_dns_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!("domain name {domain:?} invalid (label {first:?} invalid)"));
    }
    match rest {
        Some(rest) => validate_dns1123_labels(rest, domain),
        None => Ok(()),
    }
}

/// A host in a Gateway server (`ns/host` or a bare host) or a Sidecar egress
/// listener (`ns/host` only).
pub fn validate_namespace_slash_wildcard_hostname(hostname: &str, is_gateway: bool) -> Result<(), String> {
    let Some((ns, host)) = hostname.split_once('/') else {
        return if is_gateway {
            validate_wildcard_domain(hostname)
        } else {
            Err(format!("host {hostname:?} must be of form namespace/dnsName"))
        };
    };
    if ns.is_empty() || host.is_empty() {
        return Err("config namespace and dnsName in host entry cannot be empty".into());
    }
    let special = ns == "*" || ns == "." || (!is_gateway && ns == "~");
    if !special && !is_dns1123_label(ns) {
        let what = if is_gateway { "gateway" } else { "sidecar" };
        return Err(format!("invalid namespace value {ns:?} in {what}"));
    }
    validate_wildcard_domain(host)
}

pub fn validate_port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

/// An IP address or a CIDR block.
pub fn validate_ip_subnet(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some((ip, bits)) => {
            let ip: IpAddr = ip.parse().map_err(|_| format!("{s:?} is not a valid CIDR block"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match bits.parse::<u8>() {
                Ok(b) if b <= max => Ok(()),
                _ => Err(format!("{s:?} is not a valid CIDR block (prefix length must be 0..{max})")),
            }
        }
        None => s.parse::<IpAddr>().map(|_| ()).map_err(|_| format!("{s:?} is not a valid IP address")),
    }
}

fn is_qualified_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A Kubernetes label key: optional DNS prefix and `/`, then a qualified name.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.split('.').all(is_dns1123_label))
    {
        return Err(format!("invalid label key {key:?}: the prefix must be a DNS subdomain"));
    }
    if !is_qualified_name(name) {
        return Err(format!(
            "invalid label key {key:?}: must be 1-63 alphanumeric characters, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    Ok(())
}

pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: must be empty or 1-63 alphanumeric characters, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

/// Checks every key and value of a label map; returns (map key, message) pairs.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in labels {
        if let Err(e) = validate_label_key(k) {
            out.push((k.clone(), e));
        }
        if let Err(e) = validate_label_value(v) {
            out.push((k.clone(), e));
        }
    }
    out
}

/// Protocols Istio knows (`protocol.Parse`), compared case-insensitively.
pub fn is_known_protocol(p: &str) -> bool {
    const KNOWN: &[&str] = &[
        "TCP",
        "UDP",
        "GRPC",
        "GRPC-WEB",
        "HTTP",
        "HTTP_PROXY",
        "HTTP2",
        "HTTPS",
        "TLS",
        "MONGO",
        "REDIS",
        "MYSQL",
    ];
    KNOWN.iter().any(|k| k.eq_ignore_ascii_case(p))
}

pub fn is_http_protocol(p: &str) -> bool {
    ["HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"].iter().any(|k| k.eq_ignore_ascii_case(p))
}

pub fn is_tls_protocol(p: &str) -> bool {
    ["HTTPS", "TLS"].iter().any(|k| k.eq_ignore_ascii_case(p))
}

/// Istio's host-name resolution of a short name: `reviews` in namespace `bookinfo` is
/// `reviews.bookinfo.svc.cluster.local`; a name with a dot or a wildcard stays as it is.
pub fn resolve_short_host(host: &str, namespace: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("reviews.bookinfo.svc.cluster.local").is_ok());
        assert!(validate_wildcard_domain("Reviews.Example.com").is_ok());
        assert!(validate_wildcard_domain("foo.*.com").is_err());
        assert!(validate_wildcard_domain("-bad.com").is_err());
        assert!(validate_wildcard_domain("1.2.3.4").is_err(), "all-numeric TLD");
        assert!(validate_wildcard_domain("").is_err());
        assert!(validate_fqdn("*.example.com").is_err());
    }

    #[test]
    fn gateway_hosts() {
        assert!(validate_namespace_slash_wildcard_hostname("*/*", true).is_ok());
        assert!(validate_namespace_slash_wildcard_hostname("./foo.com", true).is_ok());
        assert!(validate_namespace_slash_wildcard_hostname("foo.com", true).is_ok());
        assert!(validate_namespace_slash_wildcard_hostname("foo.com", false).is_err());
        assert!(validate_namespace_slash_wildcard_hostname("~/foo.com", true).is_err());
        assert!(validate_namespace_slash_wildcard_hostname("~/foo.com", false).is_ok());
    }

    #[test]
    fn labels_and_addresses() {
        assert!(validate_label_key("app.kubernetes.io/name").is_ok());
        assert!(validate_label_key("version").is_ok());
        assert!(validate_label_key("-x").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("v1").is_ok());
        assert!(validate_label_value("v 1").is_err());
        assert!(validate_ip_subnet("10.0.0.0/8").is_ok());
        assert!(validate_ip_subnet("::1").is_ok());
        assert!(validate_ip_subnet("10.0.0.0/33").is_err());
        assert!(validate_ip_subnet("ten").is_err());
        assert!(is_k8s_name("reviews-v1.x"));
        assert!(!is_k8s_name("Reviews"));
        assert_eq!(resolve_short_host("reviews", "bookinfo"), "reviews.bookinfo.svc.cluster.local");
    }
}
