//! envoy.config.route.v3.RouteAction, compiled: where a forwarded request goes (cluster,
//! weighted clusters, a cluster named by a header) and how (rewrites, timeouts, retries,
//! hashing, mirrors, upgrades).

use super::{
    RequestParts,
    error::{FieldError, FieldResult},
    hash::HashPolicy,
    headers::HeaderMutations,
    matcher::Fraction,
    retry::{RetryPolicy, opt_duration},
    rewrite::Rewrite,
};
use envoy_types::pb::envoy::config::route::v3::{
    RouteAction as PbRouteAction, WeightedCluster, route_action, weighted_cluster,
};
use http::{HeaderName, HeaderValue, StatusCode};
use std::{sync::Arc, time::Duration};

/// Envoy's route timeout when RouteAction.timeout is unset. weftd always sets it (0, as
/// Istio does, unless a VirtualService sets one).
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// A cluster a request may go to, with what applies only when it is chosen.
#[derive(Debug, Clone)]
pub struct ClusterRef {
    pub name: Arc<str>,
    pub weight: u32,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    pub host_rewrite: Option<HeaderValue>,
}

impl ClusterRef {
    fn named(name: &str) -> ClusterRef {
        ClusterRef {
            name: name.into(),
            weight: 1,
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            host_rewrite: None,
        }
    }
}

/// weighted_clusters: the weights are relative to their sum. total_weight is deprecated
/// and Envoy 1.40 ignores it (tests/refusals_vs_envoy.rs: a mismatch is accepted), so it is
/// ignored here too.
#[derive(Debug, Clone)]
pub struct WeightedClusters {
    clusters: Box<[ClusterRef]>,
    total: u64,
    random: RandomValue,
}

/// Where the random value that picks a weighted cluster comes from
/// (WeightedCluster.random_value_specifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RandomValue {
    /// The request's random value (`RequestParts::random`, as Envoy uses the stream's).
    Request,
    /// This request header, read as an unsigned number; the request's random value when
    /// it is absent or not a number.
    Header(HeaderName),
    /// The route's hash policy, when it yields a hash.
    HashPolicy,
}

impl WeightedClusters {
    fn compile(w: &WeightedCluster) -> FieldResult<WeightedClusters> {
        use weighted_cluster::RandomValueSpecifier as R;
        let random = match &w.random_value_specifier {
            None => RandomValue::Request,
            Some(R::HeaderName(h)) => RandomValue::Header(
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| FieldError::invalid("header_name", format!("{h:?} is not a header name")))?,
            ),
            Some(R::UseHashPolicy(b)) if b.value => RandomValue::HashPolicy,
            Some(R::UseHashPolicy(_)) => RandomValue::Request,
        };
        if !w.runtime_key_prefix.is_empty() {
            return Err(FieldError::unsupported("runtime_key_prefix"));
        }
        if w.clusters.is_empty() {
            return Err(FieldError::invalid("clusters", "at least one cluster is required"));
        }
        let clusters: Box<[ClusterRef]> = w
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| cluster_weight(c).map_err(|e| e.within(&format!("clusters[{i}]"))))
            .collect::<FieldResult<_>>()?;
        let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
        if total == 0 {
            return Err(FieldError::invalid("clusters", "the sum of the weights must be greater than 0"));
        }
        Ok(WeightedClusters { clusters, total, random })
    }

    /// The cluster for a random value, as Envoy's `pickWeightedCluster`: `r % total`
    /// falls into one cluster's share. No allocation.
    pub fn pick(&self, r: u64) -> &ClusterRef {
        let mut v = r % self.total;
        for c in self.clusters.iter() {
            if v < u64::from(c.weight) {
                return c;
            }
            v -= u64::from(c.weight);
        }
        unreachable!("the weights add up to total")
    }

    pub fn clusters(&self) -> &[ClusterRef] {
        &self.clusters
    }

    pub fn random_value_source(&self) -> &RandomValue {
        &self.random
    }
}

fn cluster_weight(c: &weighted_cluster::ClusterWeight) -> FieldResult<ClusterRef> {
    if !c.cluster_header.is_empty() {
        return Err(FieldError::unsupported("cluster_header"));
    }
    if c.name.is_empty() {
        return Err(FieldError::invalid("name", "required"));
    }
    if c.metadata_match.is_some() {
        return Err(FieldError::unsupported("metadata_match"));
    }
    if !c.typed_per_filter_config.is_empty() {
        return Err(FieldError::unsupported("typed_per_filter_config"));
    }
    let host_rewrite = match &c.host_rewrite_specifier {
        Some(weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h))
            if !h.is_empty() =>
        {
            Some(
                HeaderValue::from_str(h)
                    .map_err(|_| FieldError::invalid("host_rewrite_literal", format!("{h:?}")))?,
            )
        }
        _ => None,
    };
    Ok(ClusterRef {
        name: c.name.as_str().into(),
        weight: c.weight.map_or(0, |w| w.value),
        request_headers: HeaderMutations::compile(
            &c.request_headers_to_add,
            &c.request_headers_to_remove,
            "request",
        )?,
        response_headers: HeaderMutations::compile(
            &c.response_headers_to_add,
            &c.response_headers_to_remove,
            "response",
        )?,
        host_rewrite,
    })
}

#[derive(Debug, Clone)]
pub enum ClusterSpecifier {
    Cluster(ClusterRef),
    /// The cluster named by this request header (missing or unknown →
    /// `cluster_not_found_response_code`).
    Header(HeaderName),
    Weighted(WeightedClusters),
}

#[derive(Debug, Clone)]
pub enum HostRewrite {
    Literal(HeaderValue),
    /// auto_host_rewrite: the chosen endpoint's hostname.
    Auto,
    /// The value of this request header, if present.
    Header(HeaderName),
    /// The path, rewritten by the regex, becomes the host.
    PathRegex(Rewrite),
}

#[derive(Debug, Clone)]
pub struct MirrorPolicy {
    pub cluster: Arc<str>,
    /// Share of requests mirrored (Envoy: all when runtime_fraction is unset).
    pub fraction: Fraction,
    /// Envoy appends "-shadow" to the mirrored request's host unless this is set.
    pub disable_shadow_host_suffix_append: bool,
}

impl MirrorPolicy {
    pub(crate) fn compile(m: &route_action::RequestMirrorPolicy) -> FieldResult<MirrorPolicy> {
        if !m.cluster_header.is_empty() {
            return Err(FieldError::unsupported("cluster_header"));
        }
        if m.cluster.is_empty() {
            return Err(FieldError::invalid("cluster", "required"));
        }
        if !m.request_headers_mutations.is_empty() {
            return Err(FieldError::unsupported("request_headers_mutations"));
        }
        if !m.host_rewrite_literal.is_empty() {
            return Err(FieldError::unsupported("host_rewrite_literal"));
        }
        let fraction = match m.runtime_fraction.as_ref().and_then(|r| r.default_value.as_ref()) {
            Some(p) => Fraction::compile(p).map_err(|e| e.within("runtime_fraction.default_value"))?,
            None if m.runtime_fraction.is_some() => Fraction { numerator: 0, denominator: 100 },
            None => Fraction::ALWAYS,
        };
        Ok(MirrorPolicy {
            cluster: m.cluster.as_str().into(),
            fraction,
            disable_shadow_host_suffix_append: m.disable_shadow_host_suffix_append,
        })
    }
}

#[derive(Debug, Clone)]
pub struct UpgradeConfig {
    /// Lowercase; Envoy compares upgrade types case-insensitively.
    pub upgrade_type: Box<str>,
    pub enabled: bool,
    /// CONNECT terminated here (the request's payload is the tunnel's bytes).
    pub connect: Option<ConnectConfig>,
}

#[derive(Debug, Clone, Copy)]
pub struct ConnectConfig {
    pub allow_post: bool,
}

#[derive(Debug, Clone)]
pub struct MaxStreamDuration {
    pub max_stream_duration: Option<Duration>,
    /// Bound on a gRPC client's grpc-timeout; Some(0) means the header is honoured unbounded.
    pub grpc_timeout_header_max: Option<Duration>,
    pub grpc_timeout_header_offset: Option<Duration>,
}

/// RouteAction, compiled.
#[derive(Debug, Clone)]
pub struct RouteAction {
    pub cluster: ClusterSpecifier,
    pub cluster_not_found: StatusCode,
    pub rewrite: Option<Rewrite>,
    pub host_rewrite: Option<HostRewrite>,
    pub append_x_forwarded_host: bool,
    /// None: no timeout (0 in the config). Unset in the config: Envoy's 15 s.
    pub timeout: Option<Duration>,
    /// Unset: the connection manager's stream idle timeout; Some(ZERO): disabled.
    pub idle_timeout: Option<Duration>,
    /// The route's retry policy, else the virtual host's.
    pub retry: Option<Arc<RetryPolicy>>,
    pub hash_policy: Box<[HashPolicy]>,
    /// The route's mirrors, else the virtual host's.
    pub mirrors: Arc<[MirrorPolicy]>,
    pub upgrades: Box<[UpgradeConfig]>,
    pub max_stream_duration: Option<MaxStreamDuration>,
    /// max_grpc_timeout (deprecated, still what Istio sets): a gRPC request's route timeout
    /// is its grpc-timeout header, capped here.
    pub grpc_timeout: Option<GrpcTimeout>,
}

/// RouteAction.max_grpc_timeout / grpc_timeout_offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcTimeout {
    /// The cap on the grpc-timeout header; ZERO: no cap (Istio's value when the route has
    /// no timeout).
    pub max: Duration,
    /// Subtracted from the grpc-timeout header (room for the network).
    pub offset: Duration,
}

impl GrpcTimeout {
    /// The route timeout for a gRPC request with this grpc-timeout header, as Envoy's
    /// `FilterUtility::finalTimeout`: the header less the offset, capped by `max`; None
    /// without a header (the route timeout applies).
    pub fn for_header(&self, grpc_timeout: Option<Duration>) -> Option<Duration> {
        let t = grpc_timeout?;
        let t = if t > self.offset { t - self.offset } else { t };
        Some(if !self.max.is_zero() && (t.is_zero() || t > self.max) { self.max } else { t })
    }
}

/// What a route inherits from its virtual host.
pub(crate) struct Inherited {
    pub retry: Option<Arc<RetryPolicy>>,
    pub mirrors: Arc<[MirrorPolicy]>,
}

impl RouteAction {
    pub(crate) fn compile(
        a: &PbRouteAction,
        matched_len: Option<usize>,
        inherited: &Inherited,
    ) -> FieldResult<RouteAction> {
        use route_action::{ClusterSpecifier as C, HostRewriteSpecifier as H};
        let cluster = match &a.cluster_specifier {
            Some(C::Cluster(name)) if !name.is_empty() => ClusterSpecifier::Cluster(ClusterRef::named(name)),
            Some(C::Cluster(_)) => return Err(FieldError::invalid("cluster", "must not be empty")),
            Some(C::ClusterHeader(h)) => {
                ClusterSpecifier::Header(HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(
                    |_| FieldError::invalid("cluster_header", format!("{h:?} is not a header name")),
                )?)
            }
            Some(C::WeightedClusters(w)) => ClusterSpecifier::Weighted(
                WeightedClusters::compile(w).map_err(|e| e.within("weighted_clusters"))?,
            ),
            Some(C::ClusterSpecifierPlugin(_)) => {
                return Err(FieldError::unsupported("cluster_specifier_plugin"));
            }
            Some(C::InlineClusterSpecifierPlugin(_)) => {
                return Err(FieldError::unsupported("inline_cluster_specifier_plugin"));
            }
            None => return Err(FieldError::invalid("cluster_specifier", "a cluster specifier is required")),
        };
        let cluster_not_found =
            match route_action::ClusterNotFoundResponseCode::try_from(a.cluster_not_found_response_code) {
                Ok(route_action::ClusterNotFoundResponseCode::ServiceUnavailable) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                Ok(route_action::ClusterNotFoundResponseCode::NotFound) => StatusCode::NOT_FOUND,
                Ok(route_action::ClusterNotFoundResponseCode::InternalServerError) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                Err(_) => return Err(FieldError::invalid("cluster_not_found_response_code", "unknown code")),
            };
        let rewrite = match (a.prefix_rewrite.as_str(), &a.regex_rewrite) {
            ("", None) => None,
            (p, None) => Some(Rewrite::Prefix { replacement: p.into(), matched_len }),
            ("", Some(r)) => Some(Rewrite::regex(r).map_err(|e| e.within("regex_rewrite"))?),
            (_, Some(_)) => {
                return Err(FieldError::invalid(
                    "prefix_rewrite",
                    "cannot be used together with regex_rewrite",
                ));
            }
        };
        if a.path_rewrite_policy.is_some() {
            return Err(FieldError::unsupported("path_rewrite_policy"));
        }
        if !a.path_rewrite.is_empty() {
            return Err(FieldError::unsupported("path_rewrite"));
        }
        let host_rewrite = match &a.host_rewrite_specifier {
            None => None,
            Some(H::HostRewriteLiteral(h)) if h.is_empty() => None,
            Some(H::HostRewriteLiteral(h)) => Some(HostRewrite::Literal(
                HeaderValue::from_str(h)
                    .map_err(|_| FieldError::invalid("host_rewrite_literal", format!("{h:?}")))?,
            )),
            Some(H::AutoHostRewrite(b)) => b.value.then_some(HostRewrite::Auto),
            Some(H::HostRewriteHeader(h)) => Some(HostRewrite::Header(
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| FieldError::invalid("host_rewrite_header", format!("{h:?}")))?,
            )),
            Some(H::HostRewritePathRegex(r)) => Some(HostRewrite::PathRegex(
                Rewrite::regex(r).map_err(|e| e.within("host_rewrite_path_regex"))?,
            )),
            Some(H::HostRewrite(_)) => return Err(FieldError::unsupported("host_rewrite")),
        };
        if a.metadata_match.is_some() {
            return Err(FieldError::unsupported("metadata_match"));
        }
        if a.retry_policy_typed_config.is_some() {
            return Err(FieldError::unsupported("retry_policy_typed_config"));
        }
        if a.hedge_policy.is_some() {
            return Err(FieldError::unsupported("hedge_policy"));
        }
        if a.internal_redirect_policy.is_some() {
            return Err(FieldError::unsupported("internal_redirect_policy"));
        }
        #[expect(deprecated, reason = "a deprecated field Envoy still honours")]
        if a.internal_redirect_action == route_action::InternalRedirectAction::HandleInternalRedirect as i32 {
            return Err(FieldError::unsupported("internal_redirect_action"));
        }
        // RoutingPriority::HIGH selects other circuit-breaker thresholds.
        if a.priority != 0 {
            return Err(FieldError::unsupported("priority"));
        }
        #[expect(deprecated, reason = "Istio still sets max_grpc_timeout (its replacement regressed)")]
        let grpc_timeout = match &a.max_grpc_timeout {
            None => None,
            Some(max) => Some(GrpcTimeout {
                max: opt_duration(Some(max), "max_grpc_timeout")?.unwrap_or_default(),
                offset: opt_duration(a.grpc_timeout_offset.as_ref(), "grpc_timeout_offset")?
                    .unwrap_or_default(),
            }),
        };
        let timeout = match &a.timeout {
            None => Some(DEFAULT_ROUTE_TIMEOUT),
            Some(t) => opt_duration(Some(t), "timeout")?.filter(|d| !d.is_zero()),
        };
        let retry = match &a.retry_policy {
            Some(p) => Some(Arc::new(RetryPolicy::compile(p).map_err(|e| e.within("retry_policy"))?)),
            None => inherited.retry.clone(),
        };
        let hash_policy = a
            .hash_policy
            .iter()
            .enumerate()
            .map(|(i, h)| HashPolicy::compile(h).map_err(|e| e.within(&format!("hash_policy[{i}]"))))
            .collect::<FieldResult<_>>()?;
        let mirrors = if a.request_mirror_policies.is_empty() {
            inherited.mirrors.clone()
        } else {
            a.request_mirror_policies
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    MirrorPolicy::compile(m).map_err(|e| e.within(&format!("request_mirror_policies[{i}]")))
                })
                .collect::<FieldResult<_>>()?
        };
        let upgrades = a
            .upgrade_configs
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let connect = match &u.connect_config {
                    Some(c) if c.proxy_protocol_config.is_some() => {
                        return Err(FieldError::unsupported(format!(
                            "upgrade_configs[{i}].connect_config.proxy_protocol_config"
                        )));
                    }
                    Some(c) => Some(ConnectConfig { allow_post: c.allow_post }),
                    None => None,
                };
                if connect.is_some() && !u.upgrade_type.eq_ignore_ascii_case("CONNECT") {
                    return Err(FieldError::invalid(
                        format!("upgrade_configs[{i}].connect_config"),
                        "only for upgrade_type CONNECT",
                    ));
                }
                Ok(UpgradeConfig {
                    upgrade_type: u.upgrade_type.to_ascii_lowercase().into(),
                    enabled: u.enabled.is_none_or(|b| b.value),
                    connect,
                })
            })
            .collect::<FieldResult<_>>()?;
        let max_stream_duration = match &a.max_stream_duration {
            None => None,
            Some(m) => Some(MaxStreamDuration {
                max_stream_duration: opt_duration(
                    m.max_stream_duration.as_ref(),
                    "max_stream_duration.max_stream_duration",
                )?
                .filter(|d| !d.is_zero()),
                grpc_timeout_header_max: opt_duration(
                    m.grpc_timeout_header_max.as_ref(),
                    "max_stream_duration.grpc_timeout_header_max",
                )?,
                grpc_timeout_header_offset: opt_duration(
                    m.grpc_timeout_header_offset.as_ref(),
                    "max_stream_duration.grpc_timeout_header_offset",
                )?,
            }),
        };
        Ok(RouteAction {
            cluster,
            cluster_not_found,
            rewrite,
            host_rewrite,
            append_x_forwarded_host: a.append_x_forwarded_host,
            timeout,
            idle_timeout: opt_duration(a.idle_timeout.as_ref(), "idle_timeout")?,
            retry,
            hash_policy,
            mirrors,
            upgrades,
            max_stream_duration,
            grpc_timeout,
        })
    }

    /// The cluster this request goes to: the route's cluster, or the weighted pick (by
    /// the random value the config says). None for cluster_header, which names the
    /// cluster per request (the proxy reads the header and answers
    /// `cluster_not_found` when it names no cluster).
    pub fn pick_cluster(&self, req: &RequestParts<'_>) -> Option<&ClusterRef> {
        match &self.cluster {
            ClusterSpecifier::Cluster(c) => Some(c),
            ClusterSpecifier::Header(_) => None,
            ClusterSpecifier::Weighted(w) => {
                let random = match &w.random {
                    RandomValue::Request => req.random,
                    RandomValue::Header(name) => req
                        .parts
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(req.random),
                    RandomValue::HashPolicy => {
                        super::hash::combined(&self.hash_policy, req).unwrap_or(req.random)
                    }
                };
                Some(w.pick(random))
            }
        }
    }

    /// The upgrade config for an upgrade type (`websocket`, `connect`), if enabled.
    pub fn upgrade(&self, upgrade_type: &str) -> Option<&UpgradeConfig> {
        self.upgrades.iter().find(|u| u.enabled && u.upgrade_type.eq_ignore_ascii_case(upgrade_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    fn inherited() -> Inherited {
        Inherited { retry: None, mirrors: Arc::from(Vec::new()) }
    }

    fn weighted(weights: &[u32]) -> WeightedClusters {
        WeightedClusters::compile(&WeightedCluster {
            clusters: weights
                .iter()
                .enumerate()
                .map(|(i, w)| weighted_cluster::ClusterWeight {
                    name: format!("c{i}"),
                    weight: Some(UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .unwrap()
    }

    /// WeightedCluster.clusters[].weight: a cluster's share is its weight over the sum,
    /// whatever the sum (Envoy dropped the 100 total); a 0 weight gets nothing.
    #[test]
    fn weighted_pick_is_relative_to_the_sum() {
        let w = weighted(&[9, 1]);
        let counts = (0..1000u64).fold([0; 2], |mut n, r| {
            n[if &*w.pick(r).name == "c0" { 0 } else { 1 }] += 1;
            n
        });
        assert_eq!(counts, [900, 100]);
        let w = weighted(&[0, 3, 1]);
        assert!((0..400u64).all(|r| &*w.pick(r).name != "c0"));
        assert_eq!(&*w.pick(3).name, "c2");
        assert!(
            WeightedClusters::compile(&WeightedCluster { clusters: vec![], ..Default::default() }).is_err()
        );
    }

    /// RouteAction.timeout: unset is Envoy's 15 s, 0 disables it.
    #[test]
    fn timeout_defaults() {
        let mut a = PbRouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
            ..Default::default()
        };
        assert_eq!(
            RouteAction::compile(&a, None, &inherited()).unwrap().timeout,
            Some(DEFAULT_ROUTE_TIMEOUT)
        );
        a.timeout = Some(PbDuration::default());
        assert_eq!(RouteAction::compile(&a, None, &inherited()).unwrap().timeout, None);
        a.timeout = Some(PbDuration { seconds: 0, nanos: 500_000_000 });
        assert_eq!(
            RouteAction::compile(&a, None, &inherited()).unwrap().timeout,
            Some(Duration::from_millis(500))
        );
        a.hedge_policy = Some(Default::default());
        assert_eq!(RouteAction::compile(&a, None, &inherited()).unwrap_err().field, "hedge_policy");
    }

    /// RouteAction.max_grpc_timeout: "If specified, the router will use the grpc-timeout
    /// header as the timeout, capped by this value; 0 means the header is not capped"; the
    /// offset is taken off the header.
    #[test]
    fn grpc_timeout_from_the_header() {
        let unbounded = GrpcTimeout { max: Duration::ZERO, offset: Duration::ZERO };
        assert_eq!(unbounded.for_header(None), None);
        assert_eq!(unbounded.for_header(Some(Duration::from_secs(30))), Some(Duration::from_secs(30)));
        let capped = GrpcTimeout { max: Duration::from_secs(3), offset: Duration::from_millis(100) };
        assert_eq!(capped.for_header(Some(Duration::from_secs(30))), Some(Duration::from_secs(3)));
        assert_eq!(capped.for_header(Some(Duration::from_secs(1))), Some(Duration::from_millis(900)));
        #[expect(deprecated, reason = "the field Istio sets")]
        let a = PbRouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
            max_grpc_timeout: Some(PbDuration::default()),
            ..Default::default()
        };
        assert_eq!(RouteAction::compile(&a, None, &inherited()).unwrap().grpc_timeout, Some(unbounded));
    }

    /// RequestMirrorPolicy.runtime_fraction: unset mirrors everything.
    #[test]
    fn mirror_fraction() {
        let m = MirrorPolicy::compile(&route_action::RequestMirrorPolicy {
            cluster: "m".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.fraction, Fraction::ALWAYS);
    }
}
