//! `gateway.networking.k8s.io` Gateway, HTTPRoute and ReferenceGrant (v1 and v1beta1 are
//! the same schema). Defaults follow the Gateway API CRDs: a backendRef weighs 1, a path
//! match is `PathPrefix /`, a header or query match is `Exact`.

use super::{GATEWAY_API, ObjectMeta, labels::Labels};
use crate::config::duration::GatewayDuration;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Gateway API Gateway (named so to tell it from Istio's `networking.istio.io` Gateway).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubernetesGateway {
    pub metadata: ObjectMeta,
    pub spec: GatewaySpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct GatewaySpec {
    pub gateway_class_name: String,
    pub listeners: Vec<Listener>,
    pub addresses: Vec<GatewayAddress>,
    pub infrastructure: Option<Value>,
    pub backend_tls: Option<Value>,
    pub allowed_listeners: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct GatewayAddress {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub hostname: Option<String>,
    pub port: u32,
    /// HTTP, HTTPS, TLS, TCP, UDP, or a domain-prefixed protocol.
    pub protocol: String,
    pub tls: Option<Value>,
    pub allowed_routes: Option<AllowedRoutes>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AllowedRoutes {
    pub namespaces: Option<RouteNamespaces>,
    pub kinds: Vec<RouteGroupKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FromNamespaces {
    All,
    #[default]
    Same,
    Selector,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RouteNamespaces {
    pub from: FromNamespaces,
    pub selector: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RouteGroupKind {
    pub group: Option<String>,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRoute {
    pub metadata: ObjectMeta,
    pub spec: HttpRouteSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub hostnames: Vec<String>,
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ParentReference {
    /// `gateway.networking.k8s.io` when unset; "" for a Service (GAMMA mesh routing).
    pub group: Option<String>,
    /// `Gateway` when unset.
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<u32>,
}

impl ParentReference {
    /// Whether this parentRef names Gateway `gw_ns/gw_name` (a route's parentRef without a
    /// namespace means the route's own).
    pub fn names_gateway(&self, route_ns: &str, gw_ns: &str, gw_name: &str) -> bool {
        self.group.as_deref().is_none_or(|g| g == GATEWAY_API)
            && self.kind.as_deref().unwrap_or("Gateway") == "Gateway"
            && self.name == gw_name
            && self.namespace.as_deref().unwrap_or(route_ns) == gw_ns
    }

    /// Whether this parentRef's `sectionName` and `port`, where given, pick listener `l`.
    pub fn picks(&self, l: &Listener) -> bool {
        self.section_name.as_deref().is_none_or(|s| s == l.name)
            && self.port.is_none_or(|port| port == l.port)
    }
}

impl Listener {
    /// Whether `allowedRoutes` admits routes of namespace `route_ns` (its labels, if
    /// known, for a selector) to this listener of a Gateway in `gw_ns`: the Gateway's own
    /// namespace only unless it says All or a selector.
    pub fn admits_namespace(&self, gw_ns: &str, route_ns: &str, route_ns_labels: Option<&Labels>) -> bool {
        let from = self.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref());
        match from.map_or(FromNamespaces::Same, |n| n.from) {
            FromNamespaces::Same => route_ns == gw_ns,
            FromNamespaces::All => true,
            FromNamespaces::Selector => from
                .and_then(|n| n.selector.as_ref())
                .is_some_and(|selector| route_ns_labels.is_some_and(|l| selects(selector, l))),
        }
    }
}

/// Whether a Kubernetes label selector (`matchLabels`, `matchExpressions` with In, NotIn,
/// Exists, DoesNotExist) selects these labels; a selector it cannot read selects nothing.
fn selects(selector: &Value, labels: &Labels) -> bool {
    let match_labels = selector["matchLabels"].as_object().into_iter().flatten();
    let labels_ok = match_labels
        .into_iter()
        .all(|(k, v)| v.as_str().is_some_and(|v| labels.get(k).is_some_and(|l| l == v)));
    let expressions = selector["matchExpressions"].as_array().into_iter().flatten();
    labels_ok
        && expressions.into_iter().all(|e| {
            let Some(key) = e["key"].as_str() else { return false };
            let values: Vec<&str> =
                e["values"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str() {
                Some("In") => value.is_some_and(|v| values.contains(&v)),
                Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
                Some("Exists") => value.is_some(),
                Some("DoesNotExist") => value.is_none(),
                _ => false,
            }
        })
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpRouteRule {
    pub name: Option<String>,
    /// Empty means one match: `PathPrefix /`.
    pub matches: Vec<HttpRouteMatch>,
    pub filters: Vec<HttpRouteFilter>,
    pub backend_refs: Vec<HttpBackendRef>,
    pub timeouts: Option<HttpRouteTimeouts>,
    pub retry: Option<Value>,
    pub session_persistence: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// `PathPrefix /` when unset.
    pub path: Option<HttpPathMatch>,
    pub headers: Vec<HttpHeaderMatch>,
    pub query_params: Vec<HttpQueryParamMatch>,
    pub method: Option<HttpMethod>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpPathMatch {
    #[serde(rename = "type")]
    pub type_: PathMatchType,
    pub value: String,
}

impl Default for HttpPathMatch {
    fn default() -> Self {
        HttpPathMatch { type_: PathMatchType::PathPrefix, value: "/".into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ValueMatchType {
    #[default]
    Exact,
    RegularExpression,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpHeaderMatch {
    #[serde(rename = "type")]
    pub type_: ValueMatchType,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpQueryParamMatch {
    #[serde(rename = "type")]
    pub type_: ValueMatchType,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpRouteFilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    RequestMirror,
    #[serde(rename = "CORS")]
    Cors,
    ExtensionRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub type_: HttpRouteFilterType,
    #[serde(default)]
    pub request_header_modifier: Option<HttpHeaderFilter>,
    #[serde(default)]
    pub response_header_modifier: Option<HttpHeaderFilter>,
    #[serde(default)]
    pub request_redirect: Option<HttpRequestRedirectFilter>,
    #[serde(default, rename = "urlRewrite")]
    pub url_rewrite: Option<HttpUrlRewriteFilter>,
    #[serde(default)]
    pub request_mirror: Option<HttpRequestMirrorFilter>,
    #[serde(default)]
    pub cors: Option<Value>,
    #[serde(default)]
    pub extension_ref: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpHeaderFilter {
    pub set: Vec<HttpHeader>,
    pub add: Vec<HttpHeader>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathModifier {
    #[serde(rename = "type")]
    pub type_: PathModifierType,
    #[serde(default)]
    pub replace_full_path: Option<String>,
    #[serde(default)]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpRequestRedirectFilter {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<HttpPathModifier>,
    pub port: Option<u32>,
    /// 302 when unset.
    pub status_code: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpUrlRewriteFilter {
    pub hostname: Option<String>,
    pub path: Option<HttpPathModifier>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpRequestMirrorFilter {
    pub backend_ref: BackendObjectReference,
    pub percent: Option<u32>,
    pub fraction: Option<Fraction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fraction {
    pub numerator: u32,
    #[serde(default = "hundred")]
    pub denominator: u32,
}

fn hundred() -> u32 {
    100
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct BackendObjectReference {
    /// "" (core) when unset.
    pub group: Option<String>,
    /// `Service` when unset.
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<u32>,
}

impl BackendObjectReference {
    /// Whether it refers to a Service (the core group and kind `Service` when unset).
    pub fn is_service(&self) -> bool {
        refers_to_service(self.group.as_deref(), self.kind.as_deref())
    }
}

/// A reference's group and kind name a Kubernetes Service: the core group and kind
/// `Service`, the defaults when unset.
fn refers_to_service(group: Option<&str>, kind: Option<&str>) -> bool {
    group.unwrap_or("").is_empty() && kind.unwrap_or("Service") == "Service"
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpBackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<u32>,
    /// 1 when unset.
    pub weight: i32,
    pub filters: Vec<HttpRouteFilter>,
}

impl Default for HttpBackendRef {
    fn default() -> Self {
        HttpBackendRef {
            group: None,
            kind: None,
            name: String::new(),
            namespace: None,
            port: None,
            weight: 1,
            filters: Vec::new(),
        }
    }
}

impl HttpBackendRef {
    /// Whether this refers to a Kubernetes Service (the default group and kind).
    pub fn is_service(&self) -> bool {
        refers_to_service(self.group.as_deref(), self.kind.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    /// `0s` disables the timeout.
    pub request: Option<GatewayDuration>,
    pub backend_request: Option<GatewayDuration>,
}

/// A ReferenceGrant: lets objects of the kinds and namespaces in `from` refer to objects of
/// the kinds in `to` in the grant's own namespace. The standard channel serves it as
/// v1beta1; v1 is read the same.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrant {
    pub metadata: ObjectMeta,
    pub spec: ReferenceGrantSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ReferenceGrantSpec {
    pub from: Vec<ReferenceGrantFrom>,
    pub to: Vec<ReferenceGrantTo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ReferenceGrantFrom {
    /// Required, "" for the core group. An `Option` so that validation can tell a missing
    /// group from the core group: an HTTPRoute grant without its group would grant nothing.
    pub group: Option<String>,
    pub kind: String,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ReferenceGrantTo {
    /// "" (core) when unset. The CRD requires it, but an absent group read as the core
    /// group still means what its author meant: a grant to Services or Secrets.
    pub group: String,
    pub kind: String,
    /// Every object of the kind when unset.
    pub name: Option<String>,
}

/// A kind as references name it: API group ("" for core) and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupKind<'a> {
    pub group: &'a str,
    pub kind: &'a str,
}

impl GroupKind<'_> {
    pub const HTTP_ROUTE: GroupKind<'static> = GroupKind { group: GATEWAY_API, kind: "HTTPRoute" };
    pub const SERVICE: GroupKind<'static> = GroupKind { group: "", kind: "Service" };
}

impl ReferenceGrant {
    /// Whether this grant lets an object of kind `from` in namespace `from_namespace` refer
    /// to the `to` object named `name` in the grant's namespace (the caller looks the grant
    /// up there). As in Istio, groups and kinds compare exactly.
    pub fn allows(&self, from: GroupKind<'_>, from_namespace: &str, to: GroupKind<'_>, name: &str) -> bool {
        self.spec.from.iter().any(|f| {
            f.group.as_deref() == Some(from.group) && f.kind == from.kind && f.namespace == from_namespace
        }) && self
            .spec
            .to
            .iter()
            .any(|t| t.group == to.group && t.kind == to.kind && t.name.as_deref().is_none_or(|n| n == name))
    }
}
