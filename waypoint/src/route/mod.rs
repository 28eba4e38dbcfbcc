//! PLACEHOLDER route engine, replaced by the real one (branch `wproute`) at merge time.
//!
//! It keeps the real engine's API — the names, fields and signatures `proxy.rs` uses — and
//! compiles only what the proxy's own tests need: virtual hosts by domain (exact or `*`),
//! `match.prefix`, `route.cluster` / `route.weighted_clusters`, `timeout` and
//! `retry_policy`. The other actions and per-route configs (redirect, direct response,
//! fault, RBAC, rewrites, header mutations, hash policies) exist as types the placeholder
//! never builds: the uninhabited ones (`Never`) make that visible to the compiler.

use bytes::Bytes;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route::Action as PbAction, route_action::ClusterSpecifier as PbCluster,
    route_match::PathSpecifier,
};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

/// Envoy's route timeout when RouteAction.timeout is unset.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// A route table that cannot be applied, naming the route and the field.
#[derive(Debug, thiserror::Error)]
#[error("route configuration {config:?}: {field}: {reason}")]
pub struct RouteError {
    pub config: String,
    pub field: String,
    pub reason: String,
}

/// Whether a host's port is stripped before matching domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripPort {
    Keep,
}

/// A request as the route engine sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub parts: &'a http::request::Parts,
    pub source: SocketAddr,
    pub identity: Option<&'a str>,
    pub source_namespace: Option<&'a str>,
    pub source_labels: Option<&'a BTreeMap<String, String>>,
    pub default_scheme: &'a str,
    pub strip_port: StripPort,
    /// Sampled by fractions; drawn once per request by the caller.
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

    /// The `:authority`: the URI's (HTTP/2), else the Host header.
    pub fn authority(&self) -> Option<&'a str> {
        self.parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| self.parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
    }
}

/// What the placeholder never builds.
#[derive(Debug, Clone, Copy)]
pub enum Never {}

/// What a route does.
#[derive(Debug)]
pub enum Action {
    Forward(Box<RouteAction>),
    Redirect(Redirect),
    DirectResponse(DirectResponse),
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: Box<str>,
    pub action: Action,
    pub fault: Option<Arc<Fault>>,
    pub rbac: Option<RouteRbac>,
}

impl Route {
    /// The consistent-hash key of the request, if the route has a hash policy.
    pub fn hash_key(&self, _req: &RequestParts<'_>) -> Option<u64> {
        None
    }

    /// Applies the request header mutations for the chosen cluster.
    pub fn mutate_request_headers(
        &self,
        _cluster: Option<&ClusterRef>,
        _headers: &mut HeaderMap,
        _ctx: &FormatContext<'_>,
    ) {
    }

    /// Applies the response header mutations for the chosen cluster.
    pub fn mutate_response_headers(
        &self,
        _cluster: Option<&ClusterRef>,
        _headers: &mut HeaderMap,
        _ctx: &FormatContext<'_>,
    ) {
    }
}

/// What header formatters may read.
#[derive(Debug, Clone, Copy)]
pub struct FormatContext<'a> {
    pub downstream: SocketAddr,
    pub peer_identity: Option<&'a str>,
    pub request_headers: Option<&'a HeaderMap>,
}

/// A compiled virtual host.
#[derive(Debug)]
pub struct VirtualHost {
    pub name: Arc<str>,
    domains: Vec<String>,
    routes: Vec<(String, Route)>,
}

/// The outcome of a route match.
#[derive(Debug, Clone, Copy)]
pub enum Selected<'t> {
    /// No virtual host for the request's authority: 404.
    NoVirtualHost,
    /// A virtual host but no route in it matched: 404.
    NoRoute(&'t VirtualHost),
    Route(&'t Route),
}

/// RouteAction, compiled.
#[derive(Debug)]
pub struct RouteAction {
    pub cluster: ClusterSpecifier,
    pub cluster_not_found: StatusCode,
    pub rewrite: Option<Rewrite>,
    /// None: no timeout (0 in the config). Unset in the config: Envoy's 15 s.
    pub timeout: Option<Duration>,
    pub retry: Option<Arc<RetryPolicy>>,
}

impl RouteAction {
    /// The cluster this request goes to (None: named per request by a header).
    pub fn pick_cluster(&self, req: &RequestParts<'_>) -> Option<&ClusterRef> {
        match &self.cluster {
            ClusterSpecifier::Cluster(c) => Some(c),
            ClusterSpecifier::Weighted(w) => Some(w.pick(req.random)),
        }
    }
}

#[derive(Debug)]
pub enum ClusterSpecifier {
    Cluster(ClusterRef),
    Weighted(WeightedClusters),
}

/// A cluster a request may go to.
#[derive(Debug, Clone)]
pub struct ClusterRef {
    pub name: Arc<str>,
    pub weight: u32,
}

/// Clusters with weights.
#[derive(Debug)]
pub struct WeightedClusters {
    clusters: Box<[ClusterRef]>,
    total: u64,
}

impl WeightedClusters {
    /// The cluster for random number `r`.
    pub fn pick(&self, r: u64) -> &ClusterRef {
        let mut at = r % self.total.max(1);
        for c in &self.clusters {
            if at < u64::from(c.weight) {
                return c;
            }
            at -= u64::from(c.weight);
        }
        &self.clusters[0]
    }
}

/// Envoy's `retry_on` conditions, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const FIVE_XX: RetryOn = RetryOn(1 << 0);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 2);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 5);
    pub const RESET: RetryOn = RetryOn(1 << 7);

    pub fn parse(s: &str) -> RetryOn {
        let bit = |c: &str| match c {
            "5xx" => RetryOn::FIVE_XX.0,
            "gateway-error" => RetryOn::GATEWAY_ERROR.0,
            "connect-failure" => RetryOn::CONNECT_FAILURE.0,
            "refused-stream" => RetryOn::REFUSED_STREAM.0,
            "retriable-status-codes" => RetryOn::RETRIABLE_STATUS_CODES.0,
            "reset" => RetryOn::RESET.0,
            _ => 0,
        };
        RetryOn(s.split(',').map(|c| bit(c.trim())).fold(0, |a, b| a | b))
    }

    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
}

/// A route's retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// Retries, not attempts (Envoy's default 1 when unset).
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub retriable_status_codes: Box<[u16]>,
    /// Retry on a host not tried before (`previous_hosts`).
    pub avoid_previous_hosts: bool,
    /// Jittered exponential backoff between tries (Envoy: 25 ms, and 10× that at most).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// `envoy.type.v3.FractionalPercent`, sampled as Envoy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: u32,
}

impl Fraction {
    pub fn sample(&self, random: u64) -> bool {
        random % u64::from(self.denominator.max(1)) < u64::from(self.numerator)
    }
}

/// A header condition (never built by the placeholder).
#[derive(Debug, Clone)]
pub struct HeaderMatch(Never);

impl HeaderMatch {
    pub fn matches(&self, _req: &RequestParts<'_>) -> bool {
        match self.0 {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAbortKind {
    Http(StatusCode),
    /// A gRPC status, answered as HTTP 200 with grpc-status.
    Grpc(u32),
}

/// The fault filter's config for a route.
#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<(Duration, Fraction)>,
    pub abort: Option<(FaultAbortKind, Fraction)>,
    pub headers: Box<[HeaderMatch]>,
    pub max_active_faults: Option<u32>,
}

/// The RBAC filter's per-route setting (never built by the placeholder).
#[derive(Debug, Clone)]
pub enum RouteRbac {
    Disabled,
}

/// A redirect (never built by the placeholder).
#[derive(Debug)]
pub struct Redirect {
    pub status: StatusCode,
    never: Never,
}

impl Redirect {
    pub fn location(&self, _req: &RequestParts<'_>) -> HeaderValue {
        match self.never {}
    }
}

/// A direct response.
#[derive(Debug)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Option<Bytes>,
}

/// A path rewrite (never built by the placeholder).
#[derive(Debug, Clone)]
pub enum Rewrite {}

impl Rewrite {
    pub fn apply(&self, _uri: &Uri) -> Uri {
        match *self {}
    }
}

/// A compiled RouteConfiguration.
#[derive(Debug)]
pub struct RouteTable {
    pub name: Arc<str>,
    virtual_hosts: Vec<VirtualHost>,
}

fn duration(d: &envoy_types::pb::google::protobuf::Duration) -> Duration {
    Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

impl RouteTable {
    pub fn compile(config: &RouteConfiguration) -> Result<RouteTable, RouteError> {
        let error = |field: String, reason: &str| RouteError {
            config: config.name.clone(),
            field,
            reason: format!("{reason} (placeholder route engine)"),
        };
        let mut virtual_hosts = Vec::new();
        for (v, vh) in config.virtual_hosts.iter().enumerate() {
            let mut routes = Vec::new();
            for (r, route) in vh.routes.iter().enumerate() {
                let at = format!("virtual_hosts[{v}].routes[{r}]");
                let prefix = match route.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
                    Some(PathSpecifier::Prefix(p)) => p.clone(),
                    _ => return Err(error(format!("{at}.match"), "only prefix matches")),
                };
                let Some(PbAction::Route(action)) = &route.action else {
                    return Err(error(format!("{at}.action"), "only route actions"));
                };
                let named = |name: &str, weight: u32| ClusterRef { name: Arc::from(name), weight };
                let cluster = match &action.cluster_specifier {
                    Some(PbCluster::Cluster(c)) => ClusterSpecifier::Cluster(named(c, 1)),
                    Some(PbCluster::WeightedClusters(w)) if !w.clusters.is_empty() => {
                        let clusters: Box<[ClusterRef]> = w
                            .clusters
                            .iter()
                            .map(|c| named(&c.name, c.weight.map_or(0, |w| w.value)))
                            .collect();
                        let total = clusters.iter().map(|c| u64::from(c.weight)).sum();
                        ClusterSpecifier::Weighted(WeightedClusters { clusters, total })
                    }
                    _ => return Err(error(format!("{at}.route"), "cluster or weighted_clusters")),
                };
                let timeout = match &action.timeout {
                    None => Some(DEFAULT_ROUTE_TIMEOUT),
                    Some(d) => Some(duration(d)).filter(|d| !d.is_zero()),
                };
                let retry = action.retry_policy.as_ref().map(|p| {
                    Arc::new(RetryPolicy {
                        retry_on: RetryOn::parse(&p.retry_on),
                        num_retries: p.num_retries.map_or(1, |n| n.value),
                        per_try_timeout: p.per_try_timeout.as_ref().map(duration).filter(|d| !d.is_zero()),
                        retriable_status_codes: p.retriable_status_codes.iter().map(|c| *c as u16).collect(),
                        avoid_previous_hosts: true,
                        backoff_base: Duration::from_millis(25),
                        backoff_max: Duration::from_millis(250),
                    })
                });
                let action = RouteAction {
                    cluster,
                    cluster_not_found: StatusCode::SERVICE_UNAVAILABLE,
                    rewrite: None,
                    timeout,
                    retry,
                };
                let route = Route {
                    name: route.name.as_str().into(),
                    action: Action::Forward(Box::new(action)),
                    fault: None,
                    rbac: None,
                };
                routes.push((prefix, route));
            }
            virtual_hosts.push(VirtualHost {
                name: Arc::from(vh.name.as_str()),
                domains: vh.domains.clone(),
                routes,
            });
        }
        Ok(RouteTable { name: Arc::from(config.name.as_str()), virtual_hosts })
    }

    pub fn select(&self, req: &RequestParts<'_>) -> Selected<'_> {
        let host = req.authority().unwrap_or("");
        let host_only = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let vh = self
            .virtual_hosts
            .iter()
            .find(|vh| vh.domains.iter().any(|d| d == host || d == host_only))
            .or_else(|| self.virtual_hosts.iter().find(|vh| vh.domains.iter().any(|d| d == "*")));
        let Some(vh) = vh else { return Selected::NoVirtualHost };
        let path = req.parts.uri.path_and_query().map_or("/", |p| p.as_str());
        match vh.routes.iter().find(|(prefix, _)| path.starts_with(prefix.as_str())) {
            Some((_, route)) => Selected::Route(route),
            None => Selected::NoRoute(vh),
        }
    }
}
