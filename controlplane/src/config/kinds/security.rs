//! `security.istio.io` AuthorizationPolicy and PeerAuthentication.

use super::{MatchLabelsSelector, ObjectMeta, PolicyTargetReference};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationPolicy {
    pub metadata: ObjectMeta,
    pub spec: AuthorizationPolicySpec,
}

/// An unknown action (`ALOW`) is a schema error, as in Istio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    pub selector: Option<MatchLabelsSelector>,
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    /// `None` (no `rules:` at all) differs from an empty list: an ALLOW policy without rules
    /// allows nothing; with `rules: [{}]` it allows everything.
    pub rules: Option<Vec<Rule>>,
    pub action: Action,
    pub provider: Option<ExtensionProvider>,
}

/// The annotation that makes an AuthorizationPolicy report instead of enforce.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

impl AuthorizationPolicy {
    /// The `istio.io/dry-run` annotation: `Ok(false)` when absent, an error naming the value
    /// when it is not a boolean (Go's `strconv.ParseBool` spellings, as Istio reads it).
    pub fn dry_run(&self) -> Result<bool, String> {
        match self.metadata.annotations.get(DRY_RUN_ANNOTATION).map(String::as_str) {
            None => Ok(false),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(other) => Err(format!("{DRY_RUN_ANNOTATION} must be true or false, not {other:?}")),
        }
    }

    /// Whether the policy goes to waypoints instead (it names its targets).
    pub fn has_target_refs(&self) -> bool {
        self.spec.target_ref.is_some() || !self.spec.target_refs.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ExtensionProvider {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Rule {
    pub from: Option<Vec<RuleFrom>>,
    pub to: Option<Vec<RuleTo>>,
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RuleFrom {
    pub source: Option<Source>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Source {
    pub principals: Option<Vec<String>>,
    pub not_principals: Option<Vec<String>>,
    pub request_principals: Option<Vec<String>>,
    pub not_request_principals: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
    pub not_namespaces: Option<Vec<String>>,
    pub ip_blocks: Option<Vec<String>>,
    pub not_ip_blocks: Option<Vec<String>>,
    pub remote_ip_blocks: Option<Vec<String>>,
    pub not_remote_ip_blocks: Option<Vec<String>>,
    pub service_accounts: Option<Vec<String>>,
    pub not_service_accounts: Option<Vec<String>>,
}

impl Source {
    /// The fields set that only an HTTP proxy can check (node agents see connections).
    pub fn http_fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
        ]
        .into_iter()
        .filter(|(_, v)| v.as_ref().is_some_and(|v| !v.is_empty()))
        .map(|(name, _)| name)
    }
}

/// The `when` keys a node agent can evaluate on a connection; the others need HTTP.
pub const L4_CONDITIONS: [&str; 7] = [
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "destination.ip",
    "destination.port",
];

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RuleTo {
    pub operation: Option<Operation>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Operation {
    pub hosts: Option<Vec<String>>,
    pub not_hosts: Option<Vec<String>>,
    /// Port numbers as strings, as in Istio's API.
    pub ports: Option<Vec<String>>,
    pub not_ports: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub not_methods: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub not_paths: Option<Vec<String>>,
}

impl Operation {
    /// The fields set that only an HTTP proxy can check (node agents see connections).
    pub fn http_fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ]
        .into_iter()
        .filter(|(_, v)| v.as_ref().is_some_and(|v| !v.is_empty()))
        .map(|(name, _)| name)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Condition {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerAuthentication {
    pub metadata: ObjectMeta,
    pub spec: PeerAuthenticationSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent (namespace, then mesh); PERMISSIVE at the top.
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Mtls {
    pub mode: MtlsMode,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    pub selector: Option<MatchLabelsSelector>,
    pub mtls: Option<Mtls>,
    /// Port number → mode. Keys are kept as written (YAML allows `8080:` or `"8080":`);
    /// validation checks they are port numbers, and [`Self::port_modes`] gives them parsed.
    pub port_level_mtls: Option<BTreeMap<String, Mtls>>,
}

impl PeerAuthentication {
    /// The top-level mode; UNSET when `mtls` is absent.
    pub fn mode(&self) -> MtlsMode {
        self.spec.mtls.as_ref().map_or(MtlsMode::Unset, |m| m.mode)
    }

    /// Mesh-wide (in the root namespace) or namespace-wide: no selector, or one without
    /// labels, as Istio reads it.
    pub fn is_namespace_wide(&self) -> bool {
        self.spec.selector.as_ref().is_none_or(|s| s.match_labels.is_empty())
    }
}

impl PeerAuthenticationSpec {
    /// `portLevelMtls` by port number (validated objects only have valid keys).
    pub fn port_modes(&self) -> BTreeMap<u16, MtlsMode> {
        self.port_level_mtls
            .iter()
            .flatten()
            .filter_map(|(port, m)| port.parse().ok().map(|p| (p, m.mode)))
            .collect()
    }
}
