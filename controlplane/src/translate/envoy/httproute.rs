//! Gateway API HTTPRoutes attached to a Service (the GAMMA way) → Envoy routes, the way
//! Istio does it (pilot/pkg/config/kube/gateway/conversion.go): each rule, split into one
//! route per match, becomes a VirtualService HTTP route (`convertHTTPRoute`), the routes of
//! every HTTPRoute attached to the service are sorted by Gateway API precedence
//! (`sortHTTPRoutes`), and the result goes through the same translation as a
//! VirtualService, with Gateway semantics: prefixes match whole path segments and a
//! backend that does not exist answers 500 for its share. So does a backend in another
//! namespace that no ReferenceGrant there lets the route refer to (Istio's
//! `buildDestination`).

use super::route::{self, Context};
use crate::config::kinds::{
    Percent,
    gateway_api::{
        HttpBackendRef, HttpHeaderFilter, HttpPathModifier, HttpRequestRedirectFilter, HttpRoute,
        HttpRouteFilter, HttpRouteFilterType, HttpRouteMatch, HttpUrlRewriteFilter, PathMatchType,
        PathModifierType, ReferenceGrant, ValueMatchType,
    },
    virtual_service::{
        Destination, HeaderOperations, Headers, HttpDirectResponse, HttpMatchRequest, HttpMirrorPolicy,
        HttpRedirect, HttpRetry, HttpRewrite, HttpRoute as VsRoute, HttpRouteDestination, PortSelector,
        RedirectPortSelection, RegexRewrite, StringMatch,
    },
};
use crate::config::snapshot::Objects;
use envoy_types::pb::envoy::config::route::v3::Route;
use std::collections::BTreeMap;

/// Whether the route is attached to the service `namespace/name` (parentRef of kind
/// Service in the core group; a parentRef without namespace means the route's own).
pub fn attached_to(route: &HttpRoute, namespace: &str, name: &str) -> bool {
    parent_port(route, namespace, name).is_some()
}

/// `Some(port)` (0 for every port) when the route is attached to the service.
fn parent_port(route: &HttpRoute, namespace: &str, name: &str) -> Option<u32> {
    route
        .spec
        .parent_refs
        .iter()
        .find(|p| {
            p.kind.as_deref() == Some("Service")
                && p.group.as_deref().unwrap_or("").is_empty()
                && p.name == name
                && p.namespace.as_deref().unwrap_or(&route.metadata.namespace) == namespace
        })
        .map(|p| p.port.unwrap_or(0))
}

/// Envoy routes for the HTTPRoutes attached to the served service, in Gateway API order;
/// `grants` are the snapshot's ReferenceGrants.
pub(crate) fn routes(
    ctx: &Context<'_>,
    grants: &Objects<ReferenceGrant>,
    attached: &[&HttpRoute],
) -> Vec<Route> {
    convert(ctx, grants, attached, true)
}

/// The routes of the HTTPRoutes attached to one host of an ingress Gateway's listener,
/// merged and sorted by Gateway API precedence as Istio merges them into one virtual host
/// (no DestinationRule index, no parentRef ports).
pub(crate) fn gateway_routes(
    attached: &[&HttpRoute],
    gateway_namespace: &str,
    grants: &Objects<ReferenceGrant>,
    listen_port: u32,
    ports: &route::Ports,
    suffix: &str,
) -> Vec<Route> {
    let ctx =
        Context { hosts: None, ports, suffix, proxy_namespace: gateway_namespace, listen_port, host: "" };
    convert(&ctx, grants, attached, false)
}

fn convert(
    ctx: &Context<'_>,
    grants: &Objects<ReferenceGrant>,
    attached: &[&HttpRoute],
    mesh: bool,
) -> Vec<Route> {
    // Gateway API's tie-break between rules of equal precedence (the sort below is
    // stable): the oldest route first, then by namespace/name.
    let mut attached = attached.to_vec();
    fn key(r: &HttpRoute) -> (&str, &str, &str) {
        let m = &r.metadata;
        (m.creation_timestamp.as_deref().unwrap_or_default(), &m.namespace, &m.name)
    }
    attached.sort_by(|a, b| key(a).cmp(&key(b)));
    let mut converted: Vec<(VsRoute, &str)> = Vec::new();
    for r in attached {
        let port = if mesh { ctx_service_port(ctx, r) } else { 0 };
        let backends = Backends { route_ns: &r.metadata.namespace, suffix: ctx.suffix, grants };
        for (pos, rule) in r.spec.rules.iter().enumerate() {
            let matches: Vec<Option<&HttpRouteMatch>> =
                if rule.matches.is_empty() { vec![None] } else { rule.matches.iter().map(Some).collect() };
            for m in matches {
                match convert_rule(r, pos, rule, m, &backends) {
                    Ok(mut vs_route) => {
                        if port != 0 {
                            augment_port(&mut vs_route, port);
                        }
                        converted.push((vs_route, r.metadata.namespace.as_str()));
                    }
                    Err(why) => tracing::warn!(
                        http_route = %format!("{}/{}", r.metadata.namespace, r.metadata.name),
                        rule = pos,
                        why,
                        "HTTPRoute rule left out (as in Istio)"
                    ),
                }
            }
        }
    }
    sort(&mut converted);
    let refs: Vec<(&VsRoute, &str)> = converted.iter().map(|(r, ns)| (r, *ns)).collect();
    route::http_routes(ctx, &refs, "HTTPRoute", true)
}

fn ctx_service_port(ctx: &Context<'_>, r: &HttpRoute) -> u32 {
    // The host is `name.namespace.svc.suffix`.
    let mut parts = ctx.host.splitn(3, '.');
    let (Some(name), Some(ns)) = (parts.next(), parts.next()) else { return 0 };
    parent_port(r, ns, name).unwrap_or(0)
}

/// Istio's `augmentPortMatch`: a parentRef with a port narrows every match to it.
fn augment_port(r: &mut VsRoute, port: u32) {
    if r.matches.is_empty() {
        r.matches.push(HttpMatchRequest::default());
    }
    for m in &mut r.matches {
        m.port = Some(port);
    }
}

fn uri_rank(m: &HttpMatchRequest) -> (i32, usize) {
    match &m.uri {
        Some(StringMatch { exact: Some(e), .. }) => (3, e.len()),
        Some(StringMatch { prefix: Some(p), .. }) => (2, p.len()),
        Some(StringMatch { regex: Some(r), .. }) => (1, r.len()),
        _ => (-1, 0),
    }
}

/// Istio's `sortHTTPRoutes` (Gateway API precedence), stable: exact > prefix > regex, then
/// the longer path, then a method match, then more header matches, then more query
/// matches; routes without match last.
fn sort(routes: &mut [(VsRoute, &str)]) {
    use std::cmp::Ordering;
    routes.sort_by(|(a, _), (b, _)| {
        let (Some(m1), Some(m2)) = (a.matches.first(), b.matches.first()) else {
            return match (a.matches.is_empty(), b.matches.is_empty()) {
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => Ordering::Equal,
            };
        };
        let (r1, l1) = uri_rank(m1);
        let (r2, l2) = uri_rank(m2);
        r2.cmp(&r1)
            .then(l2.cmp(&l1))
            .then(m2.method.is_some().cmp(&m1.method.is_some()))
            .then(m2.headers.len().cmp(&m1.headers.len()))
            .then(m2.query_params.len().cmp(&m1.query_params.len()))
    });
}

fn value_match(t: ValueMatchType, v: &str) -> StringMatch {
    match t {
        ValueMatchType::Exact => StringMatch { exact: Some(v.to_owned()), ..Default::default() },
        ValueMatchType::RegularExpression => StringMatch { regex: Some(v.to_owned()), ..Default::default() },
    }
}

fn convert_match(m: &HttpRouteMatch) -> HttpMatchRequest {
    let uri = match &m.path {
        None => StringMatch { prefix: Some("/".into()), ..Default::default() },
        Some(p) => match p.type_ {
            PathMatchType::PathPrefix => {
                let v = if p.value == "/" { "/" } else { p.value.trim_end_matches('/') };
                StringMatch { prefix: Some(v.to_owned()), ..Default::default() }
            }
            PathMatchType::Exact => StringMatch { exact: Some(p.value.clone()), ..Default::default() },
            PathMatchType::RegularExpression => {
                StringMatch { regex: Some(p.value.clone()), ..Default::default() }
            }
        },
    };
    HttpMatchRequest {
        uri: Some(uri),
        headers: m.headers.iter().map(|h| (h.name.clone(), value_match(h.type_, &h.value))).collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| (q.name.clone(), value_match(q.type_, &q.value)))
            .collect(),
        method: m.method.map(|meth| StringMatch {
            exact: Some(format!("{meth:?}").to_uppercase()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Istio's `headerListToMap`: names lower-cased, later duplicates ignored.
fn header_map(list: &[crate::config::kinds::gateway_api::HttpHeader]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for h in list {
        out.entry(h.name.to_ascii_lowercase()).or_insert_with(|| h.value.clone());
    }
    out
}

fn header_ops(f: &HttpHeaderFilter) -> HeaderOperations {
    HeaderOperations { set: header_map(&f.set), add: header_map(&f.add), remove: f.remove.clone() }
}

/// What resolving one HTTPRoute's backendRefs needs.
struct Backends<'a> {
    route_ns: &'a str,
    /// `cluster.local`.
    suffix: &'a str,
    /// The snapshot's ReferenceGrants: a grant lives in the namespace it opens, so a lookup
    /// scans only that namespace's (an ordered-map range, no allocation).
    grants: &'a Objects<ReferenceGrant>,
}

impl Backends<'_> {
    /// Istio's `buildDestination` for a backendRef (or a mirror's): a kind other than
    /// Service (`service` false), or a Service in another namespace that no ReferenceGrant
    /// opens to HTTPRoutes of the route's namespace, is an invalid backend,
    /// `Destination::default()`: its share answers 500. Errors leave the whole rule out.
    fn destination(
        &self,
        service: bool,
        name: &str,
        namespace: Option<&str>,
        port: Option<u32>,
    ) -> Result<Destination, String> {
        if !service {
            return Ok(Destination::default());
        }
        let namespace = namespace.unwrap_or(self.route_ns);
        if !self.grants.lets_route_refer_to_service(self.route_ns, namespace, name) {
            tracing::debug!(
                backend = %format!("{namespace}/{name}"),
                route_namespace = self.route_ns,
                "backendRef not accessible to an HTTPRoute in the route's namespace (missing a ReferenceGrant?): it answers 500"
            );
            return Ok(Destination::default());
        }
        if name.contains('.') {
            return Err("service name invalid; the name of the Service must be used, not the hostname".into());
        }
        let port = port.ok_or("port is required in backendRef")?;
        Ok(Destination {
            host: format!("{name}.{namespace}.svc.{}", self.suffix),
            subset: None,
            port: Some(PortSelector { number: port }),
        })
    }
}

fn rewrite(f: &HttpUrlRewriteFilter) -> Option<HttpRewrite> {
    let mut out = HttpRewrite::default();
    if let Some(p) = &f.path {
        match p.type_ {
            PathModifierType::ReplacePrefixMatch => {
                let v = p.replace_prefix_match.as_deref().unwrap_or("/").trim_end_matches('/');
                out.uri = Some(if v.is_empty() { "/".into() } else { v.to_owned() });
            }
            PathModifierType::ReplaceFullPath => {
                out.uri_regex_rewrite = Some(RegexRewrite {
                    match_: "/.*".into(),
                    rewrite: p.replace_full_path.clone().unwrap_or_default(),
                });
            }
        }
    }
    out.authority = f.hostname.clone();
    (out.uri.is_some() || out.uri_regex_rewrite.is_some() || out.authority.is_some()).then_some(out)
}

fn redirect(f: &HttpRequestRedirectFilter) -> HttpRedirect {
    let mut out = HttpRedirect {
        // The CRD defaults statusCode to 302; the API server fills it in before Istio reads
        // it, YAML files get it here.
        redirect_code: Some(f.status_code.unwrap_or(302)),
        authority: f.hostname.clone(),
        scheme: f.scheme.clone(),
        ..Default::default()
    };
    if let Some(p) = f.port {
        out.port = Some(p);
    } else {
        // "When empty, port (if specified) of the request is used" — unless the scheme
        // changes, then the scheme's default.
        out.derive_port = Some(if f.scheme.is_some() {
            RedirectPortSelection::FromProtocolDefault
        } else {
            RedirectPortSelection::FromRequestPort
        });
    }
    if let Some(HttpPathModifier { type_, replace_full_path, replace_prefix_match }) = &f.path {
        match type_ {
            PathModifierType::ReplaceFullPath => out.uri = replace_full_path.clone(),
            PathModifierType::ReplacePrefixMatch => out.prefix_rewrite = replace_prefix_match.clone(),
        }
    }
    out
}

fn retries(v: &serde_json::Value) -> HttpRetry {
    let attempts = v.get("attempts").and_then(|a| a.as_i64()).unwrap_or(2) as i32;
    let mut on: Vec<String> = ["connect-failure", "refused-stream", "unavailable", "cancelled"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if let Some(codes) = v.get("codes").and_then(|c| c.as_array()) {
        on.extend(codes.iter().filter_map(|c| c.as_i64()).map(|c| c.to_string()));
    }
    HttpRetry { attempts, retry_on: (attempts != 0).then(|| on.join(",")), ..Default::default() }
}

/// Istio's `convertHTTPRoute` for one rule narrowed to one match.
fn convert_rule(
    r: &HttpRoute,
    pos: usize,
    rule: &crate::config::kinds::gateway_api::HttpRouteRule,
    m: Option<&HttpRouteMatch>,
    backends: &Backends<'_>,
) -> Result<VsRoute, String> {
    let ns = r.metadata.namespace.as_str();
    let mut out = VsRoute {
        name: Some(rule.name.clone().unwrap_or_else(|| format!("{ns}.{}.{pos}", r.metadata.name))),
        matches: m.map(convert_match).into_iter().collect(),
        ..Default::default()
    };
    for f in &rule.filters {
        apply_filter(&mut out, f, backends)?;
    }
    if let Some(retry) = &rule.retry {
        out.retries = Some(retries(retry));
    }
    if let Some(t) = &rule.timeouts {
        if let Some(req) = t.request.as_ref().filter(|d| !d.0.is_zero()) {
            out.timeout = Some(crate::config::duration::IstioDuration(req.0));
        }
        if let Some(backend) = t.backend_request.as_ref().filter(|d| !d.0.is_zero()) {
            let d = crate::config::duration::IstioDuration(backend.0);
            match &mut out.retries {
                Some(rt) => rt.per_try_timeout = Some(d),
                None => out.timeout = Some(d),
            }
        }
    }
    let weighted: Vec<&HttpBackendRef> = rule.backend_refs.iter().filter(|b| b.weight != 0).collect();
    if weighted.is_empty() && out.redirect.is_none() {
        // Gateway API: no backend with a weight → 500.
        out.direct_response = Some(HttpDirectResponse { status: 500, body: None });
        return Ok(out);
    }
    let single = weighted.len() == 1;
    for b in weighted {
        let destination = backends.destination(b.is_service(), &b.name, b.namespace.as_deref(), b.port)?;
        let mut rd = HttpRouteDestination {
            destination: Some(destination),
            weight: if single { 0 } else { b.weight },
            headers: None,
        };
        for f in &b.filters {
            let headers = rd.headers.get_or_insert_with(Headers::default);
            match (f.type_, &f.request_header_modifier, &f.response_header_modifier) {
                (HttpRouteFilterType::RequestHeaderModifier, Some(h), _) => {
                    headers.request = Some(header_ops(h))
                }
                (HttpRouteFilterType::ResponseHeaderModifier, _, Some(h)) => {
                    headers.response = Some(header_ops(h))
                }
                (other, ..) => return Err(format!("unsupported backendRef filter type {other:?}")),
            }
        }
        out.route.push(rd);
    }
    Ok(out)
}

fn apply_filter(out: &mut VsRoute, f: &HttpRouteFilter, backends: &Backends<'_>) -> Result<(), String> {
    match f.type_ {
        HttpRouteFilterType::RequestHeaderModifier => {
            if let Some(h) = &f.request_header_modifier {
                out.headers.get_or_insert_with(Headers::default).request = Some(header_ops(h));
            }
        }
        HttpRouteFilterType::ResponseHeaderModifier => {
            if let Some(h) = &f.response_header_modifier {
                out.headers.get_or_insert_with(Headers::default).response = Some(header_ops(h));
            }
        }
        HttpRouteFilterType::RequestRedirect => out.redirect = f.request_redirect.as_ref().map(redirect),
        HttpRouteFilterType::UrlRewrite => out.rewrite = f.url_rewrite.as_ref().and_then(rewrite),
        HttpRouteFilterType::RequestMirror => {
            if let Some(m) = &f.request_mirror {
                let b = &m.backend_ref;
                // An invalid mirror backend mirrors to no cluster: nothing is mirrored (Istio
                // leaves the mirror out, to the same effect).
                let destination =
                    backends.destination(b.is_service(), &b.name, b.namespace.as_deref(), b.port)?;
                let percentage = match (&m.fraction, m.percent) {
                    (Some(f), _) => Some(Percent {
                        value: 100.0 * f64::from(f.numerator) / f64::from(f.denominator.max(1)),
                    }),
                    (None, Some(p)) => Some(Percent { value: f64::from(p) }),
                    (None, None) => None,
                };
                out.mirrors.push(HttpMirrorPolicy { destination: Some(destination), percentage });
            }
        }
        // CORS is not translated for waypoints yet: ignored, as a waypoint without the CORS
        // filter would.
        HttpRouteFilterType::Cors => {}
        HttpRouteFilterType::ExtensionRef => return Err("unsupported filter type ExtensionRef".into()),
    }
    Ok(())
}
