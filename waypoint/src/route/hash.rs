//! RouteAction.hash_policy: the key a consistent-hash load balancer places a request by.
//!
//! Envoy's `HashPolicyImpl::generateHash`: every policy that yields a value is folded into
//! the hash (the previous hash rotated left by one, xor the new one), and a terminal policy
//! that has produced a hash stops the walk. The hash function itself is not Envoy's
//! xxHash64 (no proxy shares our ring), but it is fixed, so every waypoint replica places
//! the same key on the same endpoint.

use super::{
    RequestParts,
    error::{FieldError, FieldResult},
    matcher::{first_param, search_regex},
};
use envoy_types::pb::envoy::config::route::v3::route_action::{HashPolicy as PbHashPolicy, hash_policy};
use http::HeaderName;
use std::{hash::Hasher, time::Duration};

#[derive(Debug, Clone)]
pub enum HashSource {
    /// A request header; several values hash in sorted order, as in Envoy.
    Header {
        name: HeaderName,
        rewrite: Option<(regex::Regex, Box<str>)>,
    },
    /// A cookie. With a ttl, a request without it is hashed on a value made up from the
    /// client's address, which the response then sets (`HashPolicy::cookie_to_set`), as
    /// Envoy does.
    Cookie {
        name: Box<str>,
        ttl: Option<Duration>,
        path: Box<str>,
        attributes: Box<[(Box<str>, Box<str>)]>,
    },
    SourceIp,
    QueryParameter(Box<[u8]>),
    /// Filter state: weft-waypoint keeps none, so this never yields a hash.
    FilterState(Box<str>),
}

#[derive(Debug, Clone)]
pub struct HashPolicy {
    pub source: HashSource,
    pub terminal: bool,
}

impl HashPolicy {
    pub(crate) fn compile(p: &PbHashPolicy) -> FieldResult<HashPolicy> {
        use hash_policy::PolicySpecifier as S;
        let source = match &p.policy_specifier {
            Some(S::Header(h)) => HashSource::Header {
                name: HeaderName::from_bytes(h.header_name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| FieldError::invalid("header.header_name", format!("{:?}", h.header_name)))?,
                rewrite: match &h.regex_rewrite {
                    Some(r) => {
                        let pattern = r
                            .pattern
                            .as_ref()
                            .ok_or_else(|| FieldError::invalid("header.regex_rewrite.pattern", "required"))?;
                        Some((
                            search_regex(pattern, "header.regex_rewrite.pattern")?,
                            super::rewrite::substitution(&r.substitution)
                                .map_err(|e| e.within("header.regex_rewrite"))?,
                        ))
                    }
                    None => None,
                },
            },
            Some(S::Cookie(c)) => HashSource::Cookie {
                name: c.name.as_str().into(),
                ttl: super::retry::opt_duration(c.ttl.as_ref(), "cookie.ttl")?,
                path: c.path.as_str().into(),
                attributes: c
                    .attributes
                    .iter()
                    .map(|a| (a.name.as_str().into(), a.value.as_str().into()))
                    .collect(),
            },
            Some(S::ConnectionProperties(c)) if c.source_ip => HashSource::SourceIp,
            Some(S::ConnectionProperties(_)) => {
                return Err(FieldError::invalid("connection_properties", "source_ip is the only property"));
            }
            Some(S::QueryParameter(q)) => HashSource::QueryParameter(q.name.as_bytes().into()),
            Some(S::FilterState(f)) => HashSource::FilterState(f.key.as_str().into()),
            None => return Err(FieldError::invalid("policy_specifier", "required")),
        };
        Ok(HashPolicy { source, terminal: p.terminal })
    }

    /// This policy's hash for the request, if it yields one.
    pub fn evaluate(&self, req: &RequestParts<'_>) -> Option<u64> {
        match &self.source {
            HashSource::Header { name, rewrite } => {
                let values = req.parts.headers.get_all(name);
                let mut iter = values.iter();
                let first = iter.next()?;
                let rewritten = |v: &[u8]| -> u64 {
                    match (rewrite, std::str::from_utf8(v)) {
                        (Some((re, with)), Ok(s)) => hash_bytes(re.replace_all(s, &**with).as_bytes(), 0),
                        _ => hash_bytes(v, 0),
                    }
                };
                if iter.next().is_none() {
                    return Some(rewritten(first.as_bytes()));
                }
                let mut sorted: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
                sorted.sort_unstable();
                Some(sorted.iter().fold(0, |h, v| hash_bytes(v, h) ^ rewritten(v).rotate_left(1)))
            }
            HashSource::Cookie { name, ttl, .. } => {
                let found = req
                    .parts
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .find_map(|v| cookie(v.as_bytes(), name.as_bytes()));
                match (found, ttl) {
                    (Some(v), _) => Some(hash_bytes(v, 0)),
                    (None, Some(_)) => Some(hash_bytes(&made_up_cookie(req), 0)),
                    (None, None) => None,
                }
            }
            HashSource::SourceIp => Some(match req.source.ip() {
                std::net::IpAddr::V4(ip) => hash_bytes(&ip.octets(), 0),
                std::net::IpAddr::V6(ip) => hash_bytes(&ip.octets(), 0),
            }),
            HashSource::QueryParameter(name) => {
                req.parts.uri.query().and_then(|q| first_param(q.as_bytes(), name)).map(|v| hash_bytes(v, 0))
            }
            HashSource::FilterState(_) => None,
        }
    }
}

/// A cookie a response must set: the request had none and the policy has a ttl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieToSet {
    /// The Set-Cookie value, as Envoy's `makeSetCookieValue` writes it:
    /// `name="value"; Max-Age=TTL; Path=PATH; ATTR=V; HttpOnly`.
    pub set_cookie: http::HeaderValue,
}

impl HashPolicy {
    /// The cookie to set on the response, when this policy hashed on a made-up value.
    pub fn cookie_to_set(&self, req: &RequestParts<'_>) -> Option<CookieToSet> {
        use std::fmt::Write;
        let HashSource::Cookie { name, ttl: Some(ttl), path, attributes } = &self.source else { return None };
        let present = req
            .parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .any(|v| cookie(v.as_bytes(), name.as_bytes()).is_some());
        if present {
            return None;
        }
        let value = made_up_cookie(req);
        let mut out = format!("{name}=\"{}\"", std::str::from_utf8(&value).expect("hex"));
        if !ttl.is_zero() {
            _ = write!(out, "; Max-Age={}", ttl.as_secs());
        }
        if !path.is_empty() {
            _ = write!(out, "; Path={path}");
        }
        for (k, v) in attributes.iter() {
            if v.is_empty() { _ = write!(out, "; {k}") } else { _ = write!(out, "; {k}={v}") }
        }
        out.push_str("; HttpOnly");
        Some(CookieToSet { set_cookie: http::HeaderValue::from_str(&out).ok()? })
    }
}

/// The value made up for a client without the cookie: a hash of its address in hex,
/// so the same client gets the same value.
fn made_up_cookie(req: &RequestParts<'_>) -> [u8; 16] {
    let h = match req.source.ip() {
        std::net::IpAddr::V4(ip) => hash_bytes(&ip.octets(), 1),
        std::net::IpAddr::V6(ip) => hash_bytes(&ip.octets(), 1),
    };
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((h >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// Envoy's fold of several hash policies (see the module doc).
pub(crate) fn combined(policies: &[HashPolicy], req: &RequestParts<'_>) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for p in policies {
        if let Some(new) = p.evaluate(req) {
            hash = Some(hash.map_or(0, |h| h.rotate_left(1)) ^ new);
        }
        if p.terminal && hash.is_some() {
            break;
        }
    }
    hash
}

fn hash_bytes(v: &[u8], seed: u64) -> u64 {
    // SipHash with fixed keys: stable across processes and replicas.
    #[expect(deprecated, reason = "SipHasher is the std hasher with fixed, documented keys")]
    let mut h = std::hash::SipHasher::new_with_keys(seed, 0x7765_6674);
    h.write(v);
    h.finish()
}

/// The value of cookie `name` in one Cookie header (`a=1; b=2`).
fn cookie<'v>(header: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| {
            let v = pair[eq + 1..].trim_ascii();
            v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RequestParts;

    fn policy(s: HashSource, terminal: bool) -> HashPolicy {
        HashPolicy { source: s, terminal }
    }

    /// RouteAction.HashPolicy: header, cookie, query parameter and source IP each yield a
    /// key that depends only on their input; `terminal` stops at the first policy that
    /// produced one.
    #[test]
    fn policies_yield_stable_keys() {
        let parts = http::Request::get("/p?user=7&x=1")
            .header("x-user", "jason")
            .header("cookie", "a=1; session=\"abc\"")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let req = RequestParts::new(&parts, "10.1.2.3:5555".parse().unwrap());
        let header =
            policy(HashSource::Header { name: HeaderName::from_static("x-user"), rewrite: None }, false);
        let cookie_p = policy(
            HashSource::Cookie {
                name: "session".into(),
                ttl: None,
                path: "".into(),
                attributes: Box::new([]),
            },
            false,
        );
        let query = policy(HashSource::QueryParameter((*b"user").into()), false);
        let ip = policy(HashSource::SourceIp, false);
        let missing = policy(HashSource::QueryParameter((*b"nope").into()), true);
        assert_eq!(header.evaluate(&req), Some(hash_bytes(b"jason", 0)));
        assert_eq!(cookie_p.evaluate(&req), Some(hash_bytes(b"abc", 0)));
        assert_eq!(query.evaluate(&req), Some(hash_bytes(b"7", 0)));
        assert!(ip.evaluate(&req).is_some());
        assert_eq!(missing.evaluate(&req), None);

        // A terminal policy without a value does not stop the walk; one with a value does.
        let h = hash_bytes(b"jason", 0);
        assert_eq!(combined(&[missing.clone(), header.clone()], &req), Some(h));
        let term =
            policy(HashSource::Header { name: HeaderName::from_static("x-user"), rewrite: None }, true);
        assert_eq!(combined(&[term, query.clone()], &req), Some(h));
        assert_eq!(combined(&[header, query], &req), Some(h.rotate_left(1) ^ hash_bytes(b"7", 0)));
    }

    /// HashPolicy.Cookie.ttl: "If specified, a cookie with the TTL will be generated if the
    /// cookie is not present"; the request hashes on the generated value.
    #[test]
    fn cookie_with_ttl_is_made_up_when_absent() {
        let p = policy(
            HashSource::Cookie {
                name: "sticky".into(),
                ttl: Some(Duration::from_secs(60)),
                path: "/".into(),
                attributes: Box::new([("SameSite".into(), "Strict".into())]),
            },
            true,
        );
        let without = http::Request::get("/").body(()).unwrap().into_parts().0;
        let req = RequestParts::new(&without, "10.1.2.3:5555".parse().unwrap());
        let set = p.cookie_to_set(&req).unwrap().set_cookie;
        let set = set.to_str().unwrap();
        let value = set.strip_prefix("sticky=\"").unwrap().split('"').next().unwrap().to_owned();
        assert!(set.ends_with("\"; Max-Age=60; Path=/; SameSite=Strict; HttpOnly"), "{set}");
        // The next request carries the cookie and hashes the same.
        let with = http::Request::get("/")
            .header("cookie", format!("sticky={value}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let req2 = RequestParts::new(&with, "10.9.9.9:1".parse().unwrap());
        assert_eq!(p.evaluate(&req), p.evaluate(&req2));
        assert_eq!(p.cookie_to_set(&req2), None);
    }
}
