//! SPIFFE identities of Kubernetes workloads: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
//!
//! The same identity is written three ways in Istio, and each place takes its own:
//! the URI SAN of a certificate (`spiffe://cluster.local/ns/shop/sa/cart`), the
//! principal of an AuthorizationPolicy and of the `source_principal` metric label
//! (`cluster.local/ns/shop/sa/cart`), and the parts a workload record carries.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, str::FromStr};

const SCHEME: &str = "spiffe://";

/// A workload identity. Compared and hashed by its three parts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string or a set of parts is not a workload identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The text does not start with `spiffe://`.
    #[error("{0:?} is not a SPIFFE ID: it must start with spiffe://")]
    NotSpiffe(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error(
        "{0:?} is not a workload identity: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    NotWorkload(String),
    /// A part is empty or holds a character SPIFFE does not allow there.
    #[error("{part} {value:?} of a SPIFFE ID must be non-empty letters, digits, '-', '.' or '_'")]
    BadPart { part: &'static str, value: String },
}

impl Identity {
    /// An identity from its parts, each checked as SPIFFE and Kubernetes allow.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Identity, IdentityError> {
        let id = Identity {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        check("trust domain", &id.trust_domain)?;
        check("namespace", &id.namespace)?;
        check("service account", &id.service_account)?;
        Ok(id)
    }

    /// Parses Istio's principal form, `<trust-domain>/ns/<ns>/sa/<sa>` (no scheme).
    pub fn from_principal(principal: &str) -> Result<Identity, IdentityError> {
        let bad = || IdentityError::NotWorkload(principal.to_owned());
        let mut parts = principal.split('/');
        let (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Identity::new(td, ns, sa)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// Istio's principal form: `cluster.local/ns/shop/sa/cart`, as AuthorizationPolicy
    /// `principals` and the `*_principal` metric labels write it.
    pub fn principal(&self) -> String {
        format!("{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    /// Parses the URI form, `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    fn from_str(s: &str) -> Result<Identity, IdentityError> {
        let rest = s.strip_prefix(SCHEME).ok_or_else(|| IdentityError::NotSpiffe(s.to_owned()))?;
        Identity::from_principal(rest).map_err(|e| match e {
            IdentityError::NotWorkload(_) => IdentityError::NotWorkload(s.to_owned()),
            other => other,
        })
    }
}

impl Serialize for Identity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Identity, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// SPIFFE allows letters, digits, '-', '.', '_' in a trust domain and in path segments
/// (Kubernetes names are a subset); '%' escapes are refused rather than decoded, so an
/// identity has exactly one spelling.
fn check(part: &'static str, value: &str) -> Result<(), IdentityError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok { Ok(()) } else { Err(IdentityError::BadPart { part, value: value.to_owned() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_spellings_of_one_identity() {
        let id: Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        assert_eq!(id, Identity::new("cluster.local", "shop", "cart").unwrap());
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        assert_eq!(id.principal(), "cluster.local/ns/shop/sa/cart");
        assert_eq!(Identity::from_principal(&id.principal()).unwrap(), id);
        assert_eq!(
            (id.trust_domain(), id.namespace(), id.service_account()),
            ("cluster.local", "shop", "cart")
        );
    }

    #[test]
    fn what_is_not_a_workload_identity() {
        for (text, want) in [
            ("https://cluster.local/ns/a/sa/b", "must start with spiffe://"),
            ("spiffe://cluster.local/ns/a", "not a workload identity"),
            ("spiffe://cluster.local/ns/a/sa/b/extra", "not a workload identity"),
            ("spiffe://cluster.local/sa/b/ns/a", "not a workload identity"),
            ("spiffe:///ns/a/sa/b", "trust domain"),
            ("spiffe://cluster.local/ns//sa/b", "namespace"),
            ("spiffe://cluster.local/ns/a/sa/b%2F", "service account"),
            ("spiffe://cluster.local/ns/../sa/b", "namespace"),
        ] {
            let err = text.parse::<Identity>().unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn serde_uses_the_uri_form() {
        let id = Identity::new("td", "ns1", "sa1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://td/ns/ns1/sa/sa1\"");
        assert_eq!(serde_json::from_str::<Identity>(&json).unwrap(), id);
        assert!(serde_json::from_str::<Identity>("\"spiffe://td/ns/x\"").is_err());
    }
}
