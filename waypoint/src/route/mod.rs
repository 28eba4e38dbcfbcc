//! PLACEHOLDER route engine, replaced by the real one (branch `wproute`) at merge time.
//!
//! It understands only what the proxy's own tests need: virtual hosts by domain (exact or
//! `*`), `match.prefix`, `route.cluster` / `route.weighted_clusters`, and the route's
//! `timeout` and `retry_policy` as plain fields (so the proxy's retry loop can be tested). It keeps the real
//! module's names (`RouteTable::compile`, `RouteTable::select`, `RequestParts`,
//! `Selected`, `Route`, `RouteAction`, `WeightedClusters::pick`, `RouteError`), which are
//! all the rest of the waypoint uses.

use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use std::{sync::Arc, time::Duration};

/// A route table that cannot be applied, naming the route and the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RouteError {
    pub field: String,
    pub reason: String,
}

/// What the route match looks at.
pub struct RequestParts<'a> {
    /// `:authority` / `Host`, port included when the client sent one.
    pub host: &'a str,
    /// Path (and query).
    pub path: &'a str,
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
}

/// The outcome of a route match.
pub enum Selected<'a> {
    /// No virtual host's domains match the host: Envoy answers 404.
    NoVirtualHost,
    /// A virtual host matched, none of its routes did: 404.
    NoRoute,
    Route(&'a Route),
}

/// A compiled RouteConfiguration.
#[derive(Debug)]
pub struct RouteTable {
    virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug)]
struct VirtualHost {
    domains: Vec<String>,
    routes: Vec<(String, Route)>,
}

/// One route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub action: RouteAction,
}

/// Where a route sends its requests.
#[derive(Debug)]
pub struct RouteAction {
    pub clusters: WeightedClusters,
    /// The route timeout in force: Envoy's 15 s when the route sets none, none when it
    /// sets 0 (as Istio does by default).
    pub timeout: Option<Duration>,
    pub retry_policy: Option<RetryPolicy>,
}

/// A route's retry policy, Envoy's fields.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on: String,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
}

fn duration(d: &envoy_types::pb::google::protobuf::Duration) -> Duration {
    Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

/// Clusters with weights (one cluster: weight 1).
#[derive(Debug)]
pub struct WeightedClusters {
    clusters: Vec<(Arc<str>, u32)>,
    total: u32,
}

impl WeightedClusters {
    /// The cluster for random number `r`.
    pub fn pick(&self, r: u64) -> &Arc<str> {
        let mut at = (r % u64::from(self.total.max(1))) as u32;
        for (name, weight) in &self.clusters {
            if at < *weight {
                return name;
            }
            at -= weight;
        }
        &self.clusters[0].0
    }
}

impl RouteTable {
    pub fn compile(config: &RouteConfiguration) -> Result<RouteTable, RouteError> {
        let mut virtual_hosts = Vec::new();
        for (v, vh) in config.virtual_hosts.iter().enumerate() {
            let mut routes = Vec::new();
            for (r, route) in vh.routes.iter().enumerate() {
                let at = format!("virtual_hosts[{v}].routes[{r}]");
                let prefix = match route.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
                    Some(PathSpecifier::Prefix(p)) => p.clone(),
                    _ => return Err(error(format!("{at}.match"), "only prefix matches (placeholder)")),
                };
                let Some(Action::Route(action)) = &route.action else {
                    return Err(error(format!("{at}.action"), "only route actions (placeholder)"));
                };
                let clusters = match &action.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) => vec![(Arc::from(c.as_str()), 1)],
                    Some(ClusterSpecifier::WeightedClusters(w)) => w
                        .clusters
                        .iter()
                        .map(|c| (Arc::from(c.name.as_str()), c.weight.map_or(0, |w| w.value)))
                        .collect(),
                    _ => {
                        return Err(error(
                            format!("{at}.route"),
                            "cluster or weighted_clusters (placeholder)",
                        ));
                    }
                };
                if clusters.is_empty() {
                    return Err(error(format!("{at}.route.weighted_clusters"), "no clusters"));
                }
                let total = clusters.iter().map(|(_, w)| *w).sum();
                let timeout = match &action.timeout {
                    None => Some(Duration::from_secs(15)),
                    Some(d) => Some(duration(d)).filter(|d| !d.is_zero()),
                };
                let retry_policy = action.retry_policy.as_ref().map(|p| RetryPolicy {
                    retry_on: p.retry_on.clone(),
                    num_retries: p.num_retries.map_or(1, |n| n.value),
                    per_try_timeout: p.per_try_timeout.as_ref().map(duration).filter(|d| !d.is_zero()),
                    retriable_status_codes: p.retriable_status_codes.iter().map(|c| *c as u16).collect(),
                });
                let action =
                    RouteAction { clusters: WeightedClusters { clusters, total }, timeout, retry_policy };
                routes.push((prefix, Route { name: route.name.clone(), action }));
            }
            virtual_hosts.push(VirtualHost { domains: vh.domains.clone(), routes });
        }
        Ok(RouteTable { virtual_hosts })
    }

    pub fn select(&self, request: &RequestParts<'_>) -> Selected<'_> {
        let host_only = request.host.rsplit_once(':').map_or(request.host, |(h, _)| h);
        let vh = self
            .virtual_hosts
            .iter()
            .find(|vh| vh.domains.iter().any(|d| d == request.host || d == host_only))
            .or_else(|| self.virtual_hosts.iter().find(|vh| vh.domains.iter().any(|d| d == "*")));
        let Some(vh) = vh else { return Selected::NoVirtualHost };
        match vh.routes.iter().find(|(prefix, _)| request.path.starts_with(prefix.as_str())) {
            Some((_, route)) => Selected::Route(route),
            None => Selected::NoRoute,
        }
    }
}

fn error(field: String, reason: &str) -> RouteError {
    RouteError { field, reason: reason.to_owned() }
}
