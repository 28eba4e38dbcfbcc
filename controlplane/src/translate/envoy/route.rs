//! The waypoint's routes: per service, the routes of the VirtualService bound to its host
//! (delegation merged in, `delegate.rs`), or of the HTTPRoutes attached to it
//! (`httproute.rs` converts them to VirtualService routes first, as Istio does), or
//! Istio's default route.
//!
//! Each rule follows Istio's own translation (pilot/pkg/networking/core/route/route.go):
//! `TranslateRoute` and `applyHTTPRouteDestination` here, `TranslateRouteMatch` in
//! `route_match.rs`, `ConvertPolicy` in `retry.rs`, `TranslateFault` in `fault.rs`,
//! `HashForHTTPDestination` in `hash.rs`. Istio's defaults apply where a route is silent:
//! no route timeout (Envoy's own 15 s default is turned off) and Istio's default retries.
//!
//! A route that cannot be translated is left out and logged, never handed to a proxy
//! half-made: one bad route must not make Envoy reject the whole RouteConfiguration and
//! freeze routing for every service on the waypoint.

use super::{HostIndex, Served, cluster_name, delegate, fault, hash, retry, route_match};
use crate::config::{
    kinds::virtual_service::{
        Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRedirect, HttpRoute,
        HttpRouteDestination, RedirectPortSelection, VirtualService,
    },
    store::ConfigSnapshot,
};
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
                header_value_option,
            },
            route::v3::{
                DirectResponseAction, RedirectAction, Route, RouteAction, RouteConfiguration, VirtualHost,
                WeightedCluster, redirect_action, route, route_action, weighted_cluster,
            },
        },
        r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher},
    },
    google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value},
};
use std::{collections::HashMap, time::Duration};
use weft_xds::istio::pack;

pub(crate) fn pb_duration(d: Duration) -> PbDuration {
    PbDuration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// The FQDN a destination host refers to, resolved like Istio: a short name is relative
/// to the namespace of the resource that wrote it.
pub(crate) fn resolve_host(host: &str, namespace: &str, suffix_of: &str) -> String {
    if host.ends_with(".svc") {
        format!("{host}.{suffix_of}")
    } else if host.contains('.') {
        if host.split('.').count() == 2 { format!("{host}.svc.{suffix_of}") } else { host.to_owned() }
    } else {
        format!("{host}.{namespace}.svc.{suffix_of}")
    }
}

/// FQDN → the service's first port: where a destination without a port goes.
pub type Ports = std::collections::HashMap<String, u32>;

/// The cluster Istio names for a backend it could not resolve.
const UNKNOWN_SERVICE: &str = "UnknownService";

/// Name of the fault filter, whose per-route config carries a route's `fault`.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// What translating routes needs besides the routes themselves.
pub(crate) struct Context<'a> {
    /// DestinationRules by host (hash policies, subsets); `None` where none apply.
    pub hosts: Option<&'a HostIndex<'a>>,
    pub ports: &'a Ports,
    /// `cluster.local`.
    pub suffix: &'a str,
    /// The proxy's namespace: stock Istio compares `sourceNamespace` with it.
    pub proxy_namespace: &'a str,
    /// The service port the routes serve (Istio's listener port): a destination of the
    /// served host without a port goes there, `match.port` is compared with it, and a
    /// redirect `derivePort: FROM_REQUEST_PORT` uses it.
    pub listen_port: u32,
    /// The served host (destinations to it without a port keep the listener port).
    pub host: &'a str,
}

impl Context<'_> {
    fn cluster_for(&self, d: &Destination, namespace: &str) -> String {
        if d.host.is_empty() {
            // Istio's name for an invalid Gateway API backend: no such cluster, so its share
            // answers cluster_not_found_response_code (500 for HTTPRoutes).
            return UNKNOWN_SERVICE.to_owned();
        }
        let host = resolve_host(&d.host, namespace, self.suffix);
        // Istio: the destination's port; else the service's only port; else the listener's.
        let port = match &d.port {
            Some(p) => p.number,
            None if host == self.host => self.listen_port,
            None => self.ports.get(&host).copied().unwrap_or(self.listen_port),
        };
        cluster_name(port, d.subset.as_deref().unwrap_or(""), &host)
    }

    fn hash_for(&self, d: &Destination, namespace: &str) -> Option<route_action::HashPolicy> {
        if d.host.is_empty() {
            return None;
        }
        let host = resolve_host(&d.host, namespace, self.suffix);
        let dr = self.hosts?.destination_rule(&host);
        hash::hash_policy(&hash::for_destination(dr, d)?)
    }
}

/// One VirtualService's routes, in order, with its delegations merged: Istio's
/// `BuildHTTPRoutesForVirtualService` (and the waypoint's `waypointInboundRoute`).
/// `gateway_semantics` marks routes converted from a Gateway API HTTPRoute.
pub(crate) fn virtual_service_routes(
    cfg: &ConfigSnapshot,
    ctx: &Context<'_>,
    vs: &VirtualService,
    gateway_semantics: bool,
) -> Vec<Route> {
    let resolved = delegate::resolve(cfg, vs);
    let routes: Vec<(&HttpRoute, &str)> = resolved.iter().map(|r| (r.route.as_ref(), r.namespace)).collect();
    http_routes(ctx, &routes, &vs_name(vs), gateway_semantics)
}

fn vs_name(vs: &VirtualService) -> String {
    format!("{}/{}", vs.metadata.namespace, vs.metadata.name)
}

/// Routes of HTTP routes (each with the namespace its hosts resolve in), stopping after a
/// catch-all as Istio does.
pub(crate) fn http_routes(
    ctx: &Context<'_>,
    routes: &[(&HttpRoute, &str)],
    source: &str,
    gateway_semantics: bool,
) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, (http, ns)) in routes.iter().enumerate() {
        if http.delegate.is_some() {
            // Only a delegate VirtualService can leave one here (Istio allows no nesting).
            tracing::warn!(
                source,
                route = i,
                "nested delegation is not supported (as in Istio): route left out"
            );
            continue;
        }
        if http.matches.is_empty() {
            out.extend(translate_route(ctx, http, None, ns, source, gateway_semantics));
            // A route without match catches everything: nothing after it is reachable.
            break;
        }
        let mut catch_all = false;
        for m in &http.matches {
            if let Some(r) = translate_route(ctx, http, Some(m), ns, source, gateway_semantics) {
                catch_all = r.r#match.as_ref().is_some_and(route_match::is_catch_all);
                out.push(r);
                if catch_all {
                    break;
                }
            }
        }
        if catch_all {
            break;
        }
    }
    out
}

/// Istio's `TranslateRoute` for one match of one HTTP route; `None` when the match does
/// not apply to this proxy or the route cannot be translated (logged).
fn translate_route(
    ctx: &Context<'_>,
    http: &HttpRoute,
    m: Option<&HttpMatchRequest>,
    ns: &str,
    source: &str,
    gateway_semantics: bool,
) -> Option<Route> {
    if let Some(port) = m.and_then(|m| m.port).filter(|p| *p != 0)
        && port != ctx.listen_port
    {
        return None;
    }
    let mut r#match = route_match::route_match(m, gateway_semantics);
    let mut metadata = None;
    match route_match::source_match(m, ctx.proxy_namespace) {
        route_match::SourceMatch::Skip => return None,
        route_match::SourceMatch::Any => {}
        route_match::SourceMatch::Conditions { metadata: md, stock_drops } => {
            if stock_drops {
                r#match.headers.push(route_match::never_in_stock_envoy());
            }
            metadata = Some(md);
        }
    }
    let mut name = http.name.clone().unwrap_or_default();
    if let Some(mn) = m.and_then(|m| m.name.as_deref()).filter(|n| !n.is_empty()) {
        name = format!("{name}.{mn}");
    }
    let mut out = Route { name, r#match: Some(r#match), metadata, ..Default::default() };
    if let Some(sp) = m.and_then(|m| m.stat_prefix.clone()) {
        out.stat_prefix = sp;
    }
    let ops = headers_operations(http.headers.as_ref());
    out.request_headers_to_add = ops.request_add;
    out.request_headers_to_remove = ops.request_remove;
    out.response_headers_to_add = ops.response_add;
    out.response_headers_to_remove = ops.response_remove;
    let action = if let Some(redirect) = &http.redirect {
        match apply_redirect(redirect, ctx.listen_port) {
            Ok(a) => route::Action::Redirect(a),
            Err(why) => {
                tracing::warn!(source, route = %out.name, why, "route left out");
                return None;
            }
        }
    } else if let Some(direct) = &http.direct_response {
        route::Action::DirectResponse(DirectResponseAction {
            status: direct.status,
            body: direct.body.as_ref().and_then(|b| {
                let specifier = match (&b.string, &b.bytes) {
                    (Some(s), _) => data_source::Specifier::InlineString(s.clone()),
                    (None, Some(bytes)) => data_source::Specifier::InlineBytes(
                        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, bytes).ok()?,
                    ),
                    (None, None) => return None,
                };
                Some(DataSource { specifier: Some(specifier), ..Default::default() })
            }),
            ..Default::default()
        })
    } else {
        let prefix = r_match_prefix(&out);
        match route_destination(ctx, http, ns, ops.authority, gateway_semantics, &mut out, &prefix) {
            Ok(a) => route::Action::Route(a),
            Err(why) => {
                tracing::warn!(source, route = %out.name, why, "route left out");
                return None;
            }
        }
    };
    out.action = Some(action);
    if let Some(f) = http.fault.as_ref().and_then(|f| fault::http_fault(f, &out.name)) {
        out.typed_per_filter_config = HashMap::from([(FAULT_FILTER.to_owned(), pack(&f))]);
    }
    Some(out)
}

fn r_match_prefix(r: &Route) -> String {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
    match r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
        Some(PathSpecifier::PathSeparatedPrefix(p)) => p.clone(),
        _ => String::new(),
    }
}

/// Header operations as Istio translates them (`TranslateHeadersOperations`): `set`
/// overwrites, `add` appends, in header-name order; `:authority`/`host` become a host
/// rewrite; pseudo-headers and `host` are never added or removed (Envoy refuses them).
#[derive(Default)]
pub(crate) struct HeaderOps {
    pub request_add: Vec<HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<String>,
    pub authority: Option<String>,
}

fn internal(key: &str) -> bool {
    key.starts_with(':') || key.eq_ignore_ascii_case("host")
}

fn authority_header(key: &str) -> bool {
    key.eq_ignore_ascii_case(":authority") || key.eq_ignore_ascii_case("host")
}

fn append(
    ops: &std::collections::BTreeMap<String, String>,
    add: bool,
    authority: &mut Option<String>,
) -> Vec<HeaderValueOption> {
    use header_value_option::HeaderAppendAction::{AppendIfExistsOrAdd, OverwriteIfExistsOrAdd};
    let mut out = Vec::with_capacity(ops.len());
    for (k, v) in ops {
        if authority_header(k) {
            *authority = Some(v.clone());
        }
        if internal(k) {
            continue;
        }
        out.push(HeaderValueOption {
            header: Some(HeaderValue { key: k.clone(), value: v.clone(), ..Default::default() }),
            append_action: if add { AppendIfExistsOrAdd } else { OverwriteIfExistsOrAdd } as i32,
            ..Default::default()
        });
    }
    out
}

pub(crate) fn headers_operations(h: Option<&Headers>) -> HeaderOps {
    let Some(h) = h else { return HeaderOps::default() };
    let empty = HeaderOperations::default();
    let req = h.request.as_ref().unwrap_or(&empty);
    let resp = h.response.as_ref().unwrap_or(&empty);
    let (mut set_auth, mut add_auth, mut ignored) = (None, None, None);
    let mut request_add = append(&req.set, false, &mut set_auth);
    request_add.extend(append(&req.add, true, &mut add_auth));
    let mut response_add = append(&resp.set, false, &mut ignored);
    response_add.extend(append(&resp.add, true, &mut ignored));
    let keep = |v: &Vec<String>| v.iter().filter(|k| !internal(k)).cloned().collect();
    HeaderOps {
        request_add,
        request_remove: keep(&req.remove),
        response_add,
        response_remove: keep(&resp.remove),
        authority: set_auth.or(add_auth),
    }
}

/// Istio's `ApplyRedirect`.
fn apply_redirect(r: &HttpRedirect, listen_port: u32) -> Result<RedirectAction, String> {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode as Code, SchemeRewriteSpecifier};
    let mut out =
        RedirectAction { host_redirect: r.authority.clone().unwrap_or_default(), ..Default::default() };
    out.path_rewrite_specifier = match (&r.prefix_rewrite, &r.uri) {
        (Some(p), _) => Some(PathRewriteSpecifier::PrefixRewrite(p.clone())),
        (None, Some(u)) => Some(PathRewriteSpecifier::PathRedirect(u.clone())),
        (None, None) => None,
    };
    if let Some(s) = r.scheme.as_ref().filter(|s| !s.is_empty()) {
        out.scheme_rewrite_specifier = Some(SchemeRewriteSpecifier::SchemeRedirect(s.clone()));
    }
    if r.port.is_some() || r.derive_port.is_some() {
        out.port_redirect = match (r.port, r.derive_port) {
            (Some(p), _) => p,
            // Envoy cannot take the port from the request, but routes are built per port.
            (None, Some(RedirectPortSelection::FromRequestPort)) => listen_port,
            (None, _) => 0,
        };
        // No explicit :80 on http or :443 on https.
        let scheme = r.scheme.as_deref().unwrap_or("http");
        if (out.port_redirect == 80 && scheme == "http") || (out.port_redirect == 443 && scheme == "https") {
            out.port_redirect = 0;
        }
    }
    out.response_code = match r.redirect_code.unwrap_or(0) {
        0 | 301 => Code::MovedPermanently,
        302 => Code::Found,
        303 => Code::SeeOther,
        307 => Code::TemporaryRedirect,
        308 => Code::PermanentRedirect,
        other => return Err(format!("redirect code {other} is not supported (as in Istio)")),
    } as i32;
    Ok(out)
}

/// Istio's `MirrorPercent`: `None` for an explicit 0 %.
fn mirror_percent(http: &HttpRoute) -> Option<RuntimeFractionalPercent> {
    let value = match (&http.mirror_percentage, http.mirror_percent) {
        (Some(p), _) if p.value > 0.0 => fault::percent(p),
        (Some(_), _) => return None,
        (None, Some(p)) if p > 0 => fault::integer_percent(i64::from(p)),
        (None, Some(_)) => return None,
        (None, None) => fault::integer_percent(100),
    };
    Some(RuntimeFractionalPercent { default_value: Some(value), ..Default::default() })
}

fn mirror_policy(cluster: String, fraction: RuntimeFractionalPercent) -> route_action::RequestMirrorPolicy {
    route_action::RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(fraction),
        trace_sampled: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// Istio's `applyHTTPRouteDestination` (with `setTimeout` and the retry policy).
#[expect(deprecated, reason = "Istio sets max_grpc_timeout, deprecated in Envoy's API but still honoured")]
fn route_destination(
    ctx: &Context<'_>,
    http: &HttpRoute,
    ns: &str,
    mut authority: Option<String>,
    gateway_semantics: bool,
    out: &mut Route,
    separated_prefix: &str,
) -> Result<RouteAction, String> {
    let timeout = pb_duration(http.timeout.as_ref().map_or(Duration::ZERO, |t| t.0));
    let mut action = RouteAction {
        // Istio sets the deprecated max_grpc_timeout too, so that gRPC requests time out
        // like others rather than by their grpc-timeout header.
        max_grpc_timeout: Some(timeout),
        timeout: Some(timeout),
        ..Default::default()
    };
    if gateway_semantics {
        // Gateway API: a backend that does not exist answers 500.
        action.cluster_not_found_response_code =
            route_action::ClusterNotFoundResponseCode::InternalServerError as i32;
    }
    if let Some(rw) = &http.rewrite {
        if let Some(re) = &rw.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher { regex: re.match_.clone(), ..Default::default() }),
                substitution: re.rewrite.clone(),
            });
        } else if let Some(uri) = rw.uri.as_ref().filter(|u| !u.is_empty()) {
            if gateway_semantics && uri == "/" {
                // Remove the matched prefix, keeping a `/` when the whole path goes.
                action.regex_rewrite = Some(RegexMatchAndSubstitute {
                    pattern: Some(RegexMatcher {
                        regex: format!("^{}(/?)(.*)", regex::escape(separated_prefix)),
                        ..Default::default()
                    }),
                    substitution: r"/\2".into(),
                });
            } else {
                action.prefix_rewrite = uri.clone();
            }
        }
        if let Some(a) = rw.authority.as_ref().filter(|a| !a.is_empty()) {
            authority = Some(a.clone());
        }
    }
    if let Some(a) = authority {
        action.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(a));
    }
    if let Some(m) = &http.mirror
        && let Some(fraction) = mirror_percent(http)
    {
        action.request_mirror_policies.push(mirror_policy(ctx.cluster_for(m, ns), fraction));
    }
    for m in &http.mirrors {
        let Some(d) = &m.destination else { continue };
        let fraction = match &m.percentage {
            Some(p) if p.value > 0.0 => fault::percent(p),
            Some(_) => continue,
            None => fault::integer_percent(100),
        };
        action.request_mirror_policies.push(mirror_policy(
            ctx.cluster_for(d, ns),
            RuntimeFractionalPercent { default_value: Some(fraction), ..Default::default() },
        ));
    }
    let mut consistent_hash = false;
    if let [only] = http.route.as_slice() {
        let d = destination(only)?;
        action.cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(ctx.cluster_for(d, ns)));
        let ops = headers_operations(only.headers.as_ref());
        out.request_headers_to_add.extend(ops.request_add);
        out.request_headers_to_remove.extend(ops.request_remove);
        out.response_headers_to_add.extend(ops.response_add);
        out.response_headers_to_remove.extend(ops.response_remove);
        if let Some(a) = ops.authority
            && action.host_rewrite_specifier.is_none()
        {
            action.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(a));
        }
        if let Some(h) = ctx.hash_for(d, ns) {
            action.hash_policy.push(h);
            consistent_hash = true;
        }
    } else {
        let mut clusters = Vec::with_capacity(http.route.len());
        // Zero weights are left out when there are other destinations.
        for rd in http.route.iter().filter(|rd| rd.weight != 0) {
            let d = destination(rd)?;
            let ops = headers_operations(rd.headers.as_ref());
            clusters.push(weighted_cluster::ClusterWeight {
                name: ctx.cluster_for(d, ns),
                weight: Some(UInt32Value { value: rd.weight.max(0) as u32 }),
                request_headers_to_add: ops.request_add,
                request_headers_to_remove: ops.request_remove,
                response_headers_to_add: ops.response_add,
                response_headers_to_remove: ops.response_remove,
                host_rewrite_specifier: ops
                    .authority
                    .map(weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral),
                ..Default::default()
            });
            if let Some(h) = ctx.hash_for(d, ns) {
                action.hash_policy.push(h);
            }
        }
        if clusters.iter().map(|c| c.weight.as_ref().map_or(0, |w| u64::from(w.value))).sum::<u64>() == 0 {
            // Envoy rejects a weighted_clusters without weight, and with it the whole
            // RouteConfiguration.
            return Err("no destination with a weight".into());
        }
        action.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters,
            ..Default::default()
        }));
    }
    action.retry_policy = retry::policy(http.retries.as_ref(), consistent_hash);
    Ok(action)
}

fn destination(rd: &HttpRouteDestination) -> Result<&Destination, String> {
    rd.destination.as_ref().ok_or_else(|| "a route destination without destination".to_owned())
}

/// Istio's default waypoint route (`BuildDefaultHTTPOutboundRoute`): everything to the
/// service port's cluster, no timeout, default retries, and the DestinationRule's
/// top-level consistent hash.
#[expect(deprecated, reason = "Istio sets max_grpc_timeout, deprecated in Envoy's API but still honoured")]
fn default_route(ctx: &Context<'_>) -> Route {
    let timeout = pb_duration(Duration::ZERO);
    let dr = ctx.hosts.and_then(|h| h.destination_rule(ctx.host));
    let hash_policy = dr
        .and_then(|dr| dr.spec.traffic_policy.as_ref()?.load_balancer.as_ref()?.consistent_hash.as_ref())
        .and_then(hash::hash_policy)
        .into_iter()
        .collect();
    Route {
        name: "default".into(),
        r#match: Some(route_match::route_match(None, false)),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster_name(
                ctx.listen_port,
                "",
                ctx.host,
            ))),
            timeout: Some(timeout),
            max_grpc_timeout: Some(timeout),
            retry_policy: retry::policy(None, false),
            hash_policy,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The routes of one service port: its VirtualService's, else its HTTPRoutes', else the
/// default route (also when every route was left out, as Istio falls back).
pub(crate) fn service_routes(cfg: &ConfigSnapshot, ctx: &Context<'_>, s: &Served<'_>) -> Vec<Route> {
    let svc = s.service;
    let routes = if let Some(vs) = s.virtual_service {
        virtual_service_routes(cfg, ctx, vs, false)
    } else {
        let attached: Vec<_> = cfg
            .http_routes
            .iter()
            .filter(|r| super::httproute::attached_to(r, &svc.metadata.namespace, &svc.metadata.name))
            .map(AsRef::as_ref)
            .collect();
        if attached.is_empty() {
            Vec::new()
        } else {
            super::httproute::routes(ctx, &cfg.reference_grants, &attached)
        }
    };
    if routes.is_empty() { vec![default_route(ctx)] } else { routes }
}

/// Istio's waypoint RouteConfiguration for one service port
/// (`buildWaypointInboundHTTPRouteConfig`): one virtual host `inbound|http|PORT` for any
/// Host (the chain was already chosen by the service VIP), clusters not validated (a
/// missing cluster answers 503, or 500 for an HTTPRoute, instead of rejecting the
/// configuration).
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "for the per-service-port listener shape (CONTRACT.md item 4), wired in with it"
    )
)]
pub(crate) fn inbound_configuration(
    cfg: &ConfigSnapshot,
    hosts: &HostIndex<'_>,
    ports: &Ports,
    waypoint_namespace: &str,
    s: &Served<'_>,
    port: u32,
    name: String,
) -> RouteConfiguration {
    let suffix = suffix_of(&s.hostname);
    let ctx = Context {
        hosts: Some(hosts),
        ports,
        suffix,
        proxy_namespace: waypoint_namespace,
        listen_port: port,
        host: &s.hostname,
    };
    RouteConfiguration {
        name,
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: service_routes(cfg, &ctx, s),
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

fn suffix_of(hostname: &str) -> &str {
    hostname.splitn(4, '.').nth(3).unwrap_or("cluster.local")
}

/// One HTTP service port's RouteConfiguration on the waypoint: the filter chain already
/// chose the service by the VIP:PORT the client dialled, so one virtual host takes any Host
/// (named as Istio names it), and the port is the listener port the VirtualService's
/// `port` matches and port-less destinations inherit.
pub fn port_configuration(
    cfg: &ConfigSnapshot,
    hosts: &HostIndex<'_>,
    waypoint_namespace: &str,
    name: &str,
    s: &Served<'_>,
    ports: &Ports,
    port: u32,
) -> RouteConfiguration {
    let ctx = Context {
        hosts: Some(hosts),
        ports,
        suffix: suffix_of(&s.hostname),
        proxy_namespace: waypoint_namespace,
        listen_port: port,
        host: &s.hostname,
    };
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: service_routes(cfg, &ctx, s),
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// A gateway's routes for one VirtualService route, with the old call shape (no
/// DestinationRule index: no hash policies).
pub(crate) fn routes_of(vs: &VirtualService, r: &HttpRoute, ports: &Ports, suffix: &str) -> Vec<Route> {
    let ctx = Context {
        hosts: None,
        ports,
        suffix,
        proxy_namespace: &vs.metadata.namespace,
        listen_port: 80,
        host: "",
    };
    http_routes(&ctx, &[(r, vs.metadata.namespace.as_str())], &vs_name(vs), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{ConfigStore, SourceId},
        source::file::FileSource,
        translate::Options,
    };

    const YAML: &str = r#"apiVersion: v1
kind: Namespace
metadata: { name: bookinfo, labels: { istio.io/use-waypoint: waypoint } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: bookinfo }
spec: { gatewayClassName: istio-waypoint, listeners: [{ name: mesh, port: 15008, protocol: HBONE }] }
---
apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: bookinfo }
spec: { clusterIP: 10.96.0.10, ports: [{ name: http, port: 9080 }, { name: admin, port: 9090 }], selector: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: bookinfo }
spec:
  hosts: [reviews]
  http:
    - match: [{ port: 9090 }]
      route: [{ destination: { host: reviews } }]
"#;

    /// The per-service-port RouteConfiguration of the HBONE waypoint shape: one `*` virtual
    /// host named `inbound|http|PORT`, routes for that port only (`match.port`), a
    /// destination without port going to the listener's port, and Istio's default route
    /// where no route is left for the port.
    #[test]
    fn inbound_configuration_is_per_service_port() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), YAML).unwrap();
        let mut store = ConfigStore::new();
        store.apply_all(SourceId::File, FileSource::read_once(dir.path()).unwrap());
        let cfg = store.snapshot();
        let opts = Options::default();
        let hosts = HostIndex::new(&cfg, &opts);
        let served = super::super::served_by(&cfg, &opts, &hosts, "bookinfo", "waypoint");
        let ports = Ports::new();
        let rc = |port| {
            inbound_configuration(&cfg, &hosts, &ports, "bookinfo", &served[0], port, format!("rc{port}"))
        };
        let admin = rc(9090);
        let vh = &admin.virtual_hosts[0];
        assert_eq!((vh.name.as_str(), vh.domains.as_slice()), ("inbound|http|9090", &["*".to_owned()][..]));
        let Some(route::Action::Route(a)) = &vh.routes[0].action else { panic!("route") };
        assert_eq!(
            a.cluster_specifier,
            Some(route_action::ClusterSpecifier::Cluster(cluster_name(
                9090,
                "",
                "reviews.bookinfo.svc.cluster.local"
            )))
        );
        let http = rc(9080);
        assert_eq!(
            http.virtual_hosts[0].routes[0].name, "default",
            "the VirtualService has nothing for 9080"
        );
        assert_eq!(http.validate_clusters, Some(BoolValue { value: false }));
    }
}
