//! Virtual host selection, as Envoy's `RouteMatcher::findVirtualHost`: the host (the
//! `:authority`, lowercased) is looked up as an exact domain, then against suffix
//! wildcards (`*.foo.com`, longest first), then prefix wildcards (`foo.*`, longest
//! first), then `*`. A wildcard never matches an empty remainder: `*.foo.com` does not
//! match `.foo.com`. Domains carry ports literally (`foo:8080`); the port of the request
//! is ignored only with ignore_port_in_host_matching or the connection manager's
//! strip_port_mode (see [`StripPort`]).

use super::error::{FieldError, FieldResult};
use std::collections::HashMap;

/// The connection manager's strip_port_mode (strip_matching_host_port /
/// strip_any_host_port): the port is removed from the Host before routing. (Envoy also
/// sends the stripped Host upstream; that is the proxy's part.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StripPort {
    #[default]
    Keep,
    /// strip_matching_host_port: only when it is the listener's port.
    Matching(u16),
    /// strip_any_host_port.
    Any,
}

/// Envoy's `HeaderUtility::getPortStart`: where the `:port` of a host begins, if any
/// (an IPv6 literal's colons are inside brackets).
pub(crate) fn port_start(host: &[u8]) -> Option<usize> {
    let colon = host.iter().rposition(|b| *b == b':')?;
    match host.iter().rposition(|b| *b == b']') {
        Some(v6_end) if v6_end > colon => None,
        _ => Some(colon),
    }
}

/// The host to route on, without its port when the mode says so.
pub(crate) fn routing_host(host: &[u8], strip: StripPort, ignore_port: bool) -> &[u8] {
    let Some(at) = port_start(host) else { return host };
    let port = std::str::from_utf8(&host[at + 1..]).ok().and_then(|p| p.parse::<u16>().ok());
    let strip = ignore_port
        || match (strip, port) {
            (StripPort::Keep, _) | (_, None) => false,
            (StripPort::Any, Some(_)) => true,
            (StripPort::Matching(listener), Some(p)) => listener == p,
        };
    if strip { &host[..at] } else { host }
}

/// Wildcard domains of one length, by their fixed part.
type ByLength = Vec<(usize, HashMap<Box<[u8]>, usize>)>;

#[derive(Debug, Default)]
pub(crate) struct DomainIndex {
    exact: HashMap<Box<[u8]>, usize>,
    /// `*.foo.com` → ".foo.com", longest first.
    suffixes: ByLength,
    /// `foo.*` → "foo.", longest first.
    prefixes: ByLength,
    default: Option<usize>,
}

fn insert(by_len: &mut ByLength, key: &[u8], vhost: usize) -> bool {
    let at = match by_len.binary_search_by(|(len, _)| key.len().cmp(len)) {
        Ok(at) => at,
        Err(at) => {
            by_len.insert(at, (key.len(), HashMap::new()));
            at
        }
    };
    by_len[at].1.insert(key.into(), vhost).is_none()
}

impl DomainIndex {
    /// Adds a virtual host's domains; a domain already taken is refused, as in Envoy.
    pub(crate) fn add(&mut self, domains: &[String], vhost: usize) -> FieldResult<()> {
        if domains.is_empty() {
            return Err(FieldError::invalid("domains", "at least one domain is required"));
        }
        for (i, d) in domains.iter().enumerate() {
            let lower = d.to_ascii_lowercase();
            let fresh = if lower == "*" {
                self.default.replace(vhost).is_none()
            } else if lower.is_empty() {
                return Err(FieldError::invalid(format!("domains[{i}]"), "must not be empty"));
            } else if let Some(suffix) = lower.strip_prefix('*') {
                insert(&mut self.suffixes, suffix.as_bytes(), vhost)
            } else if let Some(prefix) = lower.strip_suffix('*') {
                insert(&mut self.prefixes, prefix.as_bytes(), vhost)
            } else {
                self.exact.insert(lower.as_bytes().into(), vhost).is_none()
            };
            if !fresh {
                return Err(FieldError::invalid(
                    format!("domains[{i}]"),
                    format!(
                        "only unique values for domains are permitted: {d:?} is also in another virtual host"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The virtual host for `host` (already without the port if it is to be ignored).
    /// Lowercases on the stack; no allocation for hosts up to 255 bytes.
    pub(crate) fn find(&self, host: &[u8]) -> Option<usize> {
        if self.exact.is_empty() && self.suffixes.is_empty() && self.prefixes.is_empty() {
            return self.default;
        }
        let mut buf = [0u8; 255];
        let owned;
        let host: &[u8] = if host.len() <= buf.len() {
            let b = &mut buf[..host.len()];
            b.copy_from_slice(host);
            b.make_ascii_lowercase();
            b
        } else {
            owned = host.to_ascii_lowercase();
            &owned
        };
        if let Some(v) = self.exact.get(host) {
            return Some(*v);
        }
        for (len, map) in &self.suffixes {
            if *len < host.len()
                && let Some(v) = map.get(&host[host.len() - len..])
            {
                return Some(*v);
            }
        }
        for (len, map) in &self.prefixes {
            if *len < host.len()
                && let Some(v) = map.get(&host[..*len])
            {
                return Some(*v);
            }
        }
        self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(vhosts: &[&[&str]]) -> DomainIndex {
        let mut idx = DomainIndex::default();
        for (i, d) in vhosts.iter().enumerate() {
            idx.add(&d.iter().map(|s| s.to_string()).collect::<Vec<_>>(), i).unwrap();
        }
        idx
    }

    /// VirtualHost.domains search order: exact, suffix wildcards (longest first), prefix
    /// wildcards, then `*`; the wildcard does not match the empty string; case-insensitive.
    #[test]
    fn search_order_from_the_docs() {
        let idx = index(&[
            &["www.foo.com"],
            &["*.foo.com"],
            &["*-bar.foo.com"],
            &["foo.*"],
            &["foo-*"],
            &["*"],
            &["*.baz.foo.com"],
        ]);
        assert_eq!(idx.find(b"www.foo.com"), Some(0));
        assert_eq!(idx.find(b"WWW.Foo.COM"), Some(0));
        assert_eq!(idx.find(b"a.foo.com"), Some(1));
        assert_eq!(idx.find(b"baz-bar.foo.com"), Some(2));
        assert_eq!(idx.find(b"-bar.foo.com"), Some(1), "*-bar needs one character");
        assert_eq!(idx.find(b"x.baz.foo.com"), Some(6), "longest suffix wins");
        assert_eq!(idx.find(b".foo.com"), Some(5), "*.foo.com does not match an empty name");
        assert_eq!(idx.find(b"foo.org"), Some(3));
        assert_eq!(idx.find(b"foo.foo.com"), Some(1), "suffix before prefix");
        assert_eq!(idx.find(b"foo-x"), Some(4));
        assert_eq!(idx.find(b"other"), Some(5));
        let no_default = index(&[&["a"]]);
        assert_eq!(no_default.find(b"b"), None);
    }

    /// Duplicate domains make Envoy reject the configuration.
    #[test]
    fn duplicate_domains_are_refused() {
        let mut idx = DomainIndex::default();
        idx.add(&["A.com".into(), "*".into()], 0).unwrap();
        assert!(idx.add(&["a.com".into()], 1).is_err());
        assert!(idx.add(&["*".into()], 1).is_err());
    }

    /// Port handling: domains with ports match literally; strip_any_host_port,
    /// strip_matching_host_port and ignore_port_in_host_matching drop the port; IPv6.
    #[test]
    fn ports() {
        assert_eq!(routing_host(b"foo:80", StripPort::Keep, false), b"foo:80");
        assert_eq!(routing_host(b"foo:80", StripPort::Any, false), b"foo");
        assert_eq!(routing_host(b"foo:80", StripPort::Matching(80), false), b"foo");
        assert_eq!(routing_host(b"foo:81", StripPort::Matching(80), false), b"foo:81");
        assert_eq!(routing_host(b"[::1]:80", StripPort::Any, false), b"[::1]");
        assert_eq!(routing_host(b"[::1]", StripPort::Any, false), b"[::1]");
        assert_eq!(routing_host(b"foo:80", StripPort::Keep, true), b"foo");
        assert_eq!(routing_host(b"foo:x", StripPort::Any, false), b"foo:x");
    }
}
