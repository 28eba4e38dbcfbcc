//! The route engine: an Envoy v3 RouteConfiguration compiled into an immutable table, and
//! the choice of a route for a request, with Envoy's semantics (config/route/v3).
//!
//! Pure and socket-free. [`RouteTable::compile`] refuses (names the virtual host, route and
//! field) what weft-waypoint cannot apply so that weft-waypoint NACKs it, and ignores what
//! does not change where or how a request goes (stats names, decorators, tracing, rate
//! limits and CORS for filters weft-waypoint does not run). Every route is compiled on its
//! own, so one refusal names all the routes that fail.
//!
//! [`RouteTable::select`] does not allocate for the usual matches (domains, prefix and
//! exact paths, header and query matchers; tests/select_allocations.rs counts): domains
//! and case-insensitive paths are lowercased at compile time, hosts on the stack, regexes
//! compiled once.
//!
//! The proof that the semantics are Envoy's is tests/route_vs_envoy.rs: the same
//! RouteConfiguration served by a real Envoy and compiled here, and a table of requests
//! that must route alike (virtual hosts, matchers, redirects' Locations, rewrites and header
//! mutations as the upstream sees them, weighted picks, fault aborts);
//! tests/refusals_vs_envoy.rs does the same for what is refused, tests/weftd_routes.rs for
//! what weftd sends.

mod action;
mod error;
mod filters;
mod hash;
mod headers;
mod matcher;
mod redirect;
mod retry;
mod rewrite;
mod source;
mod vhost;

pub use action::{
    ClusterRef, ClusterSpecifier, ConnectConfig, DEFAULT_ROUTE_TIMEOUT, GrpcTimeout, HostRewrite,
    MaxStreamDuration, MirrorPolicy, RandomValue, RouteAction, UpgradeConfig, WeightedClusters,
};
pub use error::RouteError;
pub use filters::{FAULT_FILTER, Fault, FaultAbortKind, RBAC_FILTER, RouteRbac};
pub use hash::{CookieToSet, HashPolicy, HashSource};
pub use headers::{AppendAction, FormatContext, HeaderMutations};
pub use matcher::{Fraction, HeaderMatch, QueryMatch, RouteMatch, StringMatch};
pub use redirect::{DirectResponse, Redirect, RedirectPath};
pub use retry::{DEFAULT_BACKOFF_BASE, RetryOn, RetryPolicy};
pub use rewrite::Rewrite;
pub use source::{
    PEER_PRINCIPAL_KEY, SOURCE_HEADER, SOURCE_LABEL_PREFIX, SOURCE_METADATA, SOURCE_NAMESPACE_KEY,
    SourceConditions,
};
pub use vhost::StripPort;
pub(crate) use vhost::routing_host;

use envoy_types::pb::envoy::config::route::v3::{
    self as pb, RouteConfiguration, route::Action as PbAction, virtual_host::TlsRequirementType,
};
use error::{FieldError, FieldResult, route_label};
use filters::FilterConfigs;
use http::HeaderMap;
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

/// A request as the route engine sees it: the request head plus what is known about the
/// client.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub parts: &'a http::request::Parts,
    /// The downstream's address (for HBONE: the client's, as the agent reports it).
    pub source: SocketAddr,
    /// The client's verified SPIFFE identity.
    pub identity: Option<&'a str>,
    pub source_namespace: Option<&'a str>,
    pub source_labels: Option<&'a BTreeMap<String, String>>,
    /// The request's scheme when the URI has none (HTTP/1 origin form): "http" inside HBONE.
    pub default_scheme: &'a str,
    pub strip_port: StripPort,
    /// Sampled by runtime_fraction matchers (`random % denominator < numerator`); the
    /// caller draws it once per request.
    pub random: u64,
}

impl<'a> RequestParts<'a> {
    pub fn new(parts: &'a http::request::Parts, source: SocketAddr) -> RequestParts<'a> {
        RequestParts {
            parts,
            source,
            identity: None,
            source_namespace: None,
            source_labels: None,
            default_scheme: "http",
            strip_port: StripPort::Keep,
            random: 0,
        }
    }

    /// The `:authority`: the URI's (HTTP/2, absolute form), else the Host header.
    pub fn authority(&self) -> Option<&'a str> {
        self.parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| self.parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
    }

    pub fn scheme(&self) -> &'a str {
        self.parts.uri.scheme_str().unwrap_or(self.default_scheme)
    }
}

/// What a route does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Boxed: it is several times the size of the others.
    Forward(Box<RouteAction>),
    Redirect(Redirect),
    DirectResponse(DirectResponse),
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Box<str>,
    /// The virtual host it belongs to (for logs and stats).
    pub vhost: Arc<str>,
    pub matcher: RouteMatch,
    pub action: Action,
    /// Header mutations in the order Envoy applies them (route, virtual host, route
    /// configuration; the reverse with most_specific_header_mutations_wins). A weighted
    /// cluster's own mutations come before these.
    pub request_headers: Arc<[Arc<HeaderMutations>]>,
    pub response_headers: Arc<[Arc<HeaderMutations>]>,
    /// envoy.filters.http.fault for this route (the route's, else the virtual host's).
    pub fault: Option<Arc<Fault>>,
    /// envoy.filters.http.rbac for this route, when it overrides the listener's.
    pub rbac: Option<RouteRbac>,
    /// x-envoy-attempt-count on the upstream request / on the response.
    pub include_request_attempt_count: bool,
    pub include_attempt_count_in_response: bool,
}

impl Route {
    /// The consistent-hash key of the request (RouteAction.hash_policy), if any.
    pub fn hash_key(&self, req: &RequestParts<'_>) -> Option<u64> {
        match &self.action {
            Action::Forward(a) if !a.hash_policy.is_empty() => hash::combined(&a.hash_policy, req),
            _ => None,
        }
    }

    /// Applies the request header mutations for the chosen cluster, in Envoy's order.
    pub fn mutate_request_headers(
        &self,
        cluster: Option<&ClusterRef>,
        headers: &mut HeaderMap,
        ctx: &FormatContext<'_>,
    ) {
        if let Some(c) = cluster {
            c.request_headers.apply(headers, ctx);
        }
        for m in self.request_headers.iter() {
            m.apply(headers, ctx);
        }
    }

    /// Applies the response header mutations for the chosen cluster, in Envoy's order.
    pub fn mutate_response_headers(
        &self,
        cluster: Option<&ClusterRef>,
        headers: &mut HeaderMap,
        ctx: &FormatContext<'_>,
    ) {
        if let Some(c) = cluster {
            c.response_headers.apply(headers, ctx);
        }
        for m in self.response_headers.iter() {
            m.apply(headers, ctx);
        }
    }
}

/// A compiled virtual host.
#[derive(Debug)]
pub struct VirtualHost {
    pub name: Arc<str>,
    pub routes: Box<[Route]>,
}

/// The result of [`RouteTable::select`].
#[derive(Debug, Clone, Copy)]
pub enum Selected<'t> {
    /// No virtual host for the request's authority: 404.
    NoVirtualHost,
    /// A virtual host but no route in it matched: 404.
    NoRoute(&'t VirtualHost),
    Route(&'t Route),
}

impl<'t> Selected<'t> {
    pub fn route(self) -> Option<&'t Route> {
        match self {
            Selected::Route(r) => Some(r),
            _ => None,
        }
    }
}

/// A compiled RouteConfiguration.
#[derive(Debug)]
pub struct RouteTable {
    pub name: Arc<str>,
    vhosts: Box<[VirtualHost]>,
    domains: vhost::DomainIndex,
    ignore_port_in_host_matching: bool,
}

struct VhostLevel {
    request_headers: Arc<HeaderMutations>,
    response_headers: Arc<HeaderMutations>,
    filters: FilterConfigs,
    inherited: action::Inherited,
    include_request_attempt_count: bool,
    include_attempt_count_in_response: bool,
}

impl RouteTable {
    /// Compiles `config`. Every route is compiled on its own, so a refusal names all the
    /// routes (and virtual hosts) that cannot be applied, not only the first.
    pub fn compile(config: &RouteConfiguration) -> Result<RouteTable, RouteError> {
        let cfg_name = config.name.as_str();
        let config_error = |e: FieldError| RouteError::Config {
            config: cfg_name.to_owned(),
            field: e.field,
            reason: e.reason,
        };
        let mut errors = Vec::new();
        type Global = (Arc<HeaderMutations>, Arc<HeaderMutations>, Arc<[MirrorPolicy]>);
        let global = (|| -> FieldResult<Global> {
            if config.vhds.is_some() {
                return Err(FieldError::unsupported("vhds"));
            }
            if !config.cluster_specifier_plugins.is_empty() {
                return Err(FieldError::unsupported("cluster_specifier_plugins"));
            }
            if !config.vhost_header.is_empty() {
                return Err(FieldError::unsupported("vhost_header"));
            }
            if !config.internal_only_headers.is_empty() {
                return Err(FieldError::unsupported("internal_only_headers"));
            }
            Ok((
                Arc::new(HeaderMutations::compile(
                    &config.request_headers_to_add,
                    &config.request_headers_to_remove,
                    "request",
                )?),
                Arc::new(HeaderMutations::compile(
                    &config.response_headers_to_add,
                    &config.response_headers_to_remove,
                    "response",
                )?),
                mirrors(&config.request_mirror_policies)?,
            ))
        })();
        let (global_req, global_resp, global_mirrors) = match global {
            Ok(g) => g,
            Err(e) => return Err(config_error(e)),
        };
        let max_body = config
            .max_direct_response_body_size_bytes
            .map_or(redirect::DEFAULT_MAX_DIRECT_RESPONSE_BODY, |m| m.value as usize);
        let most_specific_wins = config.most_specific_header_mutations_wins;

        let mut domains = vhost::DomainIndex::default();
        let mut vhosts = Vec::with_capacity(config.virtual_hosts.len());
        for (vi, vh) in config.virtual_hosts.iter().enumerate() {
            let vname: Arc<str> = vh.name.as_str().into();
            let vhost_error = |e: FieldError| RouteError::VirtualHost {
                config: cfg_name.to_owned(),
                vhost: vh.name.clone(),
                field: e.field,
                reason: e.reason,
            };
            if let Err(e) = domains.add(&vh.domains, vi) {
                errors.push(vhost_error(e));
            }
            let level = match compile_vhost(vh, &global_mirrors) {
                Ok(l) => l,
                Err(e) => {
                    errors.push(vhost_error(e));
                    continue;
                }
            };
            let chain =
                |route: Arc<HeaderMutations>, vhost: &Arc<HeaderMutations>, global: &Arc<HeaderMutations>| {
                    let mut all: Vec<Arc<HeaderMutations>> = if most_specific_wins {
                        vec![global.clone(), vhost.clone(), route]
                    } else {
                        vec![route, vhost.clone(), global.clone()]
                    };
                    all.retain(|m| !m.is_empty());
                    Arc::<[Arc<HeaderMutations>]>::from(all)
                };
            let mut routes = Vec::with_capacity(vh.routes.len());
            for (ri, r) in vh.routes.iter().enumerate() {
                match compile_route(r, &vname, &level, max_body) {
                    Ok((mut route, req, resp)) => {
                        route.request_headers = chain(Arc::new(req), &level.request_headers, &global_req);
                        route.response_headers = chain(Arc::new(resp), &level.response_headers, &global_resp);
                        routes.push(route);
                    }
                    Err(e) => errors.push(RouteError::Route {
                        config: cfg_name.to_owned(),
                        vhost: vh.name.clone(),
                        route: route_label(&r.name, ri),
                        field: e.field,
                        reason: e.reason,
                    }),
                }
            }
            vhosts.push(VirtualHost { name: vname, routes: routes.into() });
        }
        if let Some(e) = RouteError::collect(errors) {
            return Err(e);
        }
        Ok(RouteTable {
            name: cfg_name.into(),
            vhosts: vhosts.into(),
            domains,
            ignore_port_in_host_matching: config.ignore_port_in_host_matching,
        })
    }

    /// The route for a request: its virtual host by authority, then the first route of
    /// that virtual host that matches.
    pub fn select(&self, req: &RequestParts<'_>) -> Selected<'_> {
        let Some(vhost) = self.virtual_host(req) else { return Selected::NoVirtualHost };
        match vhost.routes.iter().find(|r| r.matcher.matches(req)) {
            Some(r) => Selected::Route(r),
            None => Selected::NoRoute(vhost),
        }
    }

    /// The virtual host for the request's authority.
    pub fn virtual_host(&self, req: &RequestParts<'_>) -> Option<&VirtualHost> {
        let host = req.authority().unwrap_or("");
        let host = vhost::routing_host(host.as_bytes(), req.strip_port, self.ignore_port_in_host_matching);
        self.domains.find(host).map(|i| &self.vhosts[i])
    }

    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.vhosts
    }
}

/// Mirror policies of one level.
fn mirrors(list: &[pb::route_action::RequestMirrorPolicy]) -> FieldResult<Arc<[MirrorPolicy]>> {
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            MirrorPolicy::compile(m).map_err(|e| e.within(&format!("request_mirror_policies[{i}]")))
        })
        .collect()
}

/// A virtual host's own settings; mirrors fall back to the route configuration's (the
/// most specific level's mirrors apply: route, virtual host, route configuration).
fn compile_vhost(vh: &pb::VirtualHost, config_mirrors: &Arc<[MirrorPolicy]>) -> FieldResult<VhostLevel> {
    if vh.matcher.is_some() {
        return Err(FieldError::unsupported("matcher"));
    }
    if vh.require_tls != TlsRequirementType::None as i32 {
        return Err(FieldError::unsupported("require_tls"));
    }
    if vh.hedge_policy.is_some() {
        return Err(FieldError::unsupported("hedge_policy"));
    }
    if vh.retry_policy_typed_config.is_some() {
        return Err(FieldError::unsupported("retry_policy_typed_config"));
    }
    if !vh.route_specifiers.is_empty() {
        return Err(FieldError::unsupported("route_specifiers"));
    }
    let retry = match &vh.retry_policy {
        Some(p) => Some(Arc::new(RetryPolicy::compile(p).map_err(|e| e.within("retry_policy"))?)),
        None => None,
    };
    let mirrors = if vh.request_mirror_policies.is_empty() {
        config_mirrors.clone()
    } else {
        mirrors(&vh.request_mirror_policies)?
    };
    Ok(VhostLevel {
        request_headers: Arc::new(HeaderMutations::compile(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            "request",
        )?),
        response_headers: Arc::new(HeaderMutations::compile(
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
            "response",
        )?),
        filters: FilterConfigs::compile(&vh.typed_per_filter_config)?,
        inherited: action::Inherited { retry, mirrors },
        include_request_attempt_count: vh.include_request_attempt_count,
        include_attempt_count_in_response: vh.include_attempt_count_in_response,
    })
}

/// A route, and its own request and response header mutations (the caller chains them
/// with the virtual host's and the configuration's).
fn compile_route(
    r: &pb::Route,
    vhost: &Arc<str>,
    level: &VhostLevel,
    max_body: usize,
) -> FieldResult<(Route, HeaderMutations, HeaderMutations)> {
    let m = r.r#match.as_ref().ok_or_else(|| FieldError::invalid("match", "required"))?;
    let mut matcher = RouteMatch::compile(m).map_err(|e| e.within("match"))?;
    matcher.source = source::SourceConditions::compile(r.metadata.as_ref())?;
    let matched_len = matcher.path.matched_len();
    let action = match &r.action {
        Some(PbAction::Route(a)) => Action::Forward(Box::new(
            RouteAction::compile(a, matched_len, &level.inherited).map_err(|e| e.within("route"))?,
        )),
        Some(PbAction::Redirect(a)) => {
            Action::Redirect(Redirect::compile(a, matched_len).map_err(|e| e.within("redirect"))?)
        }
        Some(PbAction::DirectResponse(a)) => Action::DirectResponse(
            DirectResponse::compile(a, max_body).map_err(|e| e.within("direct_response"))?,
        ),
        Some(PbAction::FilterAction(_)) => return Err(FieldError::unsupported("filter_action")),
        Some(PbAction::NonForwardingAction(_)) => {
            return Err(FieldError::unsupported("non_forwarding_action"));
        }
        None => {
            return Err(FieldError::invalid("action", "one of route, redirect, direct_response is required"));
        }
    };
    if !r.route_specifiers.is_empty() {
        return Err(FieldError::unsupported("route_specifiers"));
    }
    let request =
        HeaderMutations::compile(&r.request_headers_to_add, &r.request_headers_to_remove, "request")?;
    let response =
        HeaderMutations::compile(&r.response_headers_to_add, &r.response_headers_to_remove, "response")?;
    let filters = FilterConfigs::compile(&r.typed_per_filter_config)?.or(&level.filters);
    let route = Route {
        name: r.name.as_str().into(),
        vhost: vhost.clone(),
        matcher,
        action,
        request_headers: Arc::from(Vec::new()),
        response_headers: Arc::from(Vec::new()),
        fault: filters.fault,
        rbac: filters.rbac,
        include_request_attempt_count: level.include_request_attempt_count,
        include_attempt_count_in_response: level.include_attempt_count_in_response,
    };
    Ok((route, request, response))
}

#[cfg(test)]
mod tests;
