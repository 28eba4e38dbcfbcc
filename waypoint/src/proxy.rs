//! The request path: every phase a request goes through, in order, in one place.
//!
//! ```text
//!  CONNECT VIP:PORT ─▶ inbound.rs: authority dispatch ─▶ HTTP chain (this file)
//!  (a gateway: TCP on gateway_<port> ─▶ gateway.rs: the listener's HTTP chain)
//!
//!  request ─▶ 1. route select        (the chain's RDS table, the Host's port stripped if
//!                                     the chain says so; none / no match → 404 NR,
//!                                     answered after RBAC, which runs before the router)
//!          ─▶ 2. RBAC                (rbac.rs: the chain's filters in order, DENY then ALLOW,
//!                                     or the route's RBACPerRoute; refused → 403 "RBAC:
//!                                     access denied"; after fault if the chain says so)
//!          ─▶ 3. fault               (the route's fault config when the chain has the
//!                                     filter: delay, then abort with a status or gRPC status)
//!          ─▶ 4. redirect | direct response
//!          ─▶ 5. forward:
//!                 cluster pick (route's cluster or weighted; unknown → cluster_not_found, NC)
//!                 circuit breaker (max_requests → 503 UO)
//!                 path rewrite, request header mutations (route, vhost, cluster's own)
//!                 mirror  (mirror.rs: a copy per sampled mirror policy, "-shadow" host,
//!                          fire and forget; bodies only when empty or ≤ 1 MiB known)
//!                 retry loop {
//!                    LB pick (hash key; not an ejected endpoint; not the previous try's)
//!                    upstream call over HBONE: HTTP/1.1 pool (max_connections, pending
//!                      → UO) or HTTP/2 stream; per-try timeout (→ 504 UT)
//!                    outlier record (consecutive 5xx / gateway errors → ejection)
//!                    retry? (retry_on, retriable codes, budget: max_retries breaker)
//!                 }                                   all within the route timeout (→ 504 UT)
//!          ─▶ 6. response header mutations
//!          ─▶ 7. metrics / access log
//! ```
//!
//! Phases read the route engine's compiled route (`route/`); metrics are counted when the
//! response body ends (`metrics.rs`), so a streamed answer's bytes and duration are whole.
//!
//! A request reads one config snapshot from start to end (`load_full` once). Nothing on
//! this path takes a lock (the HTTP/1.1 idle list aside, see `upstream/conn.rs`) or
//! allocates but for what hyper needs and what a retry must keep (a copy of headers and
//! body, only when the route allows retries).

use crate::{
    body::{Replayable, RequestBody, ResponseBody},
    error::ProxyError,
    metrics, mirror, rbac,
    retry::{self, Outcome},
    route::{Action, FaultAbortKind, FormatContext, HostRewrite, RequestParts, RouteRbac, Selected},
    snapshot::{HttpChain, Snapshot},
    state::Shared,
    upstream::{Cluster, InFlight, Result5xx, UpstreamProtocol, conn},
};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, Version, header, request::Parts};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{net::SocketAddr, sync::Arc};
use tracing::debug;
use weft_hbone::Identity;

/// Who sent the request: carried in every request's extensions, for routing (source
/// principal and namespace) and metrics.
#[derive(Clone, Debug)]
pub struct Source {
    /// The client's SPIFFE identity, from its HBONE certificate; `None` for a client of a
    /// gateway listener (plain HTTP, no mesh identity).
    pub identity: Option<Arc<Identity>>,
    /// The same as a `spiffe://` URI, made once per connection.
    pub principal: Option<Arc<str>>,
    /// The client's address (the client pod's IP: its agent dials from it).
    pub addr: SocketAddr,
    /// Where the client connected: the CONNECT authority (the service VIP:PORT it
    /// dialled) on HBONE, the listener's local address on a gateway.
    pub authority: SocketAddr,
}

/// One downstream HTTP connection (one HBONE stream, or one TCP connection to a gateway
/// listener): what every request on it shares.
pub struct Downstream {
    pub shared: Arc<Shared>,
    pub chain: Arc<crate::snapshot::Chain>,
    pub source: Source,
    /// How its requests are reported: as a waypoint's, or as a gateway's.
    pub reporter: metrics::Reporter,
}

/// Envoy's default `per_request_buffer_limit_bytes` when the route sets none: what a
/// retry may keep of a request body (a larger one is streamed and not retried).
const RETRY_BUFFER_LIMIT: u64 = 1 << 20;

/// Serves one request: the phases, then the local reply for a failure, then metrics.
pub async fn serve(
    ctx: Arc<Downstream>,
    mut request: Request<Incoming>,
) -> Result<Response<metrics::Observed>, std::convert::Infallible> {
    let head = metrics::RequestHead::of(&ctx, &request);
    request.extensions_mut().insert(ctx.source.clone());
    let snapshot = ctx.shared.snapshot.load_full();
    let mut done = Done { injected: Injected::None, cluster: None };
    let (response, flag) = match handle(&ctx, &snapshot, request, &mut done).await {
        Ok(response) => (response, done.injected.flag(None)),
        Err(error) => {
            debug!(%error, flag = error.response_flag(), "local reply");
            (local_reply(&error), done.injected.flag(Some(error.response_flag())))
        }
    };
    // 7. metrics / access log: counted when the response body ends.
    Ok(metrics::observe(&ctx, head, response, flag, done.cluster))
}

/// What the phases did that the metrics report: the fault injected, the cluster chosen
/// (a gateway's `destination_service` is the cluster's service).
struct Done {
    injected: Injected,
    cluster: Option<Arc<str>>,
}

/// Phases 1–6.
async fn handle(
    ctx: &Downstream,
    snapshot: &Snapshot,
    request: Request<Incoming>,
    done: &mut Done,
) -> Result<Response<ResponseBody>, ProxyError> {
    let crate::snapshot::Chain::Http(chain) = &*ctx.chain else {
        unreachable!("inbound.rs and gateway.rs hand only HTTP chains to the HTTP path")
    };
    let (mut parts, body) = request.into_parts();
    let source = &ctx.source;
    let injected = &mut done.injected;

    // Phases 1–4 decide while the request head is borrowed; nothing is changed yet.
    let (route, action, picked, hash, set_cookie) = {
        let mut req = RequestParts::new(&parts, source.addr);
        req.identity = source.principal.as_deref();
        req.source_namespace = source.identity.as_deref().map(Identity::namespace);
        req.strip_port = chain.strip_port;
        // The client's workload labels, by its address (VirtualService `sourceLabels`).
        req.source_labels = snapshot.workloads.get(&source.addr.ip()).and_then(|w| w.labels.as_ref());
        req.random = fastrand::u64(..);

        // 1. Route select. A table not (yet) received is Envoy's "no route": 404 NR — after
        //    the filters before the router had their say (RBAC still refuses first).
        let route = match snapshot.routes.get(&chain.route_config).map(|t| t.select(&req)) {
            Some(Selected::Route(route)) => Some(route),
            _ => None,
        };

        // 2. RBAC, when the chain's filters put it before fault (Istio's order).
        if chain.rbac_before_fault {
            authorize(chain, route, &req, source.authority)?;
        }
        let route = route.ok_or(ProxyError::NoRoute)?;

        // 3. Fault: the route's fault config, when the chain runs the fault filter.
        if chain.fault
            && let Some(fault) = &route.fault
            && fault.headers.iter().all(|h| h.matches(&req))
        {
            if let Some((delay, share)) = fault.delay
                && share.sample(fastrand::u64(..))
            {
                *injected = Injected::Delay;
                tokio::time::sleep(delay).await;
            }
            if let Some((abort, share)) = fault.abort
                && share.sample(fastrand::u64(..))
            {
                *injected = injected.and_abort();
                return Ok(fault_abort(abort));
            }
        }
        if !chain.rbac_before_fault {
            authorize(chain, Some(route), &req, source.authority)?;
        }

        // 4. Redirect | direct response.
        let action = match &route.action {
            Action::Redirect(redirect) => {
                let mut response = Response::new(ResponseBody::local(""));
                *response.status_mut() = redirect.status;
                response.headers_mut().insert(header::LOCATION, redirect.location(&req));
                return Ok(response);
            }
            Action::DirectResponse(direct) => {
                let mut response = Response::new(ResponseBody::Local(direct.body.clone()));
                *response.status_mut() = direct.status;
                return Ok(response);
            }
            Action::Forward(action) => action,
        };
        // A cookie policy with a ttl hashes a made-up value when the request has no
        // cookie, and the response sets it (Envoy's `makeSetCookieValue`).
        let set_cookie = action.hash_policy.iter().find_map(|p| p.cookie_to_set(&req));
        (route, action, action.pick_cluster(&req), route.hash_key(&req), set_cookie)
    };

    // 5. Forward.
    let Some(picked) = picked else {
        return Err(ProxyError::NoCluster { name: Arc::from(""), status: action.cluster_not_found });
    };
    let cluster = snapshot.clusters.get(&picked.name).ok_or_else(|| ProxyError::NoCluster {
        name: picked.name.clone(),
        status: action.cluster_not_found,
    })?;
    done.cluster = Some(cluster.name.clone());
    let slot = cluster.admit()?;
    //    Rewrites and request header mutations (the Host's port first, if the chain strips
    //    it: Envoy sends the Host it routed on).
    strip_host_port(&mut parts, chain.strip_port);
    if let Some(rewrite) = &action.rewrite {
        parts.uri = rewrite.apply(&parts.uri);
    }
    rewrite_host(&mut parts, picked.host_rewrite.as_ref(), action.host_rewrite.as_ref());
    let format = FormatContext {
        downstream: source.addr,
        peer_identity: source.principal.as_deref(),
        request_headers: None,
    };
    route.mutate_request_headers(Some(picked), &mut parts.headers, &format);
    //    Mirror: copies to the route's mirror clusters (mirror.rs), fire and forget.
    let body = if action.mirrors.is_empty() {
        ClientBody::Streaming(body)
    } else {
        mirror_copies(ctx, snapshot, action, &parts, body).await?
    };
    let host = Host::of(&parts);
    let wire = wire(cluster, parts.version);
    prepare_upstream(&mut parts, &host, wire);
    let policy = retry::Policy::of(action);
    let target = Target { chain, cluster, wire, hash };
    let mut response = retry_loop(ctx, &target, &policy, parts, body, slot).await?;

    // 6. Response header mutations.
    strip_hop_by_hop(response.headers_mut());
    route.mutate_response_headers(Some(picked), response.headers_mut(), &format);
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie.set_cookie);
    }
    Ok(response)
}

/// The RBAC phase: the route's override if it has one, else the chain's filters in order.
fn authorize(
    chain: &HttpChain,
    route: Option<&crate::route::Route>,
    req: &RequestParts<'_>,
    destination: SocketAddr,
) -> Result<(), ProxyError> {
    if chain.rbac.is_empty() {
        return Ok(());
    }
    let subject = rbac::Subject { req, destination };
    let verdict = match route.and_then(|r| r.rbac.as_ref()) {
        Some(RouteRbac::Disabled) => return Ok(()),
        Some(RouteRbac::Override(policy)) => policy.evaluate(&subject),
        None => rbac::authorize(chain.rbac.iter().map(|r| &**r), &subject),
    };
    match verdict {
        rbac::Verdict::Allowed => Ok(()),
        rbac::Verdict::Denied(policy) => Err(ProxyError::Denied { policy }),
    }
}

/// What the fault filter did to a request, for its response flags (Envoy's DI and FI, which
/// Istio's metrics and access log carry as `response_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    None,
    Delay,
    Abort,
    DelayAndAbort,
}

impl Injected {
    fn and_abort(self) -> Injected {
        match self {
            Injected::Delay | Injected::DelayAndAbort => Injected::DelayAndAbort,
            Injected::None | Injected::Abort => Injected::Abort,
        }
    }

    /// The request's `%RESPONSE_FLAGS%`: the fault's flags joined to `other` (the local
    /// reply's) in Envoy's fixed order, where the upstream flags come before DI and FI.
    /// Static strings, so a flag costs no allocation.
    fn flag(self, other: Option<&'static str>) -> Option<&'static str> {
        let other = other.filter(|f| *f != "-");
        match (self, other) {
            (Injected::None, other) => other,
            (Injected::Abort, None) => Some("FI"),
            (Injected::DelayAndAbort, None) => Some("DI,FI"),
            (Injected::Delay, None) => Some("DI"),
            // An abort answers at once: no other flag can join it.
            (Injected::Abort | Injected::DelayAndAbort, Some(f)) => Some(f),
            (Injected::Delay, Some(f)) => Some(match f {
                "UH" => "UH,DI",
                "UT" => "UT,DI",
                "UF" => "UF,DI",
                "UC" => "UC,DI",
                "UO" => "UO,DI",
                "NC" => "DI,NC",
                "DC" => "DI,DC",
                other => other,
            }),
        }
    }
}

/// The fault filter's abort: an HTTP status with Envoy's body, or a gRPC status as a
/// trailers-only answer (HTTP 200, `grpc-status`).
fn fault_abort(abort: FaultAbortKind) -> Response<ResponseBody> {
    match abort {
        FaultAbortKind::Http(status) => {
            let mut response = Response::new(ResponseBody::local("fault filter abort"));
            *response.status_mut() = status;
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            response
        }
        FaultAbortKind::Grpc(code) => {
            let mut response = Response::new(ResponseBody::local(""));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            response.headers_mut().insert("grpc-status", HeaderValue::from(code));
            response
        }
    }
}

/// The HTTP version towards the cluster: its protocol options, or the downstream's.
fn wire(cluster: &Cluster, downstream: Version) -> conn::Wire {
    match cluster.settings.protocol {
        UpstreamProtocol::Http1 => conn::Wire::Http1,
        UpstreamProtocol::Http2 => conn::Wire::Http2,
        UpstreamProtocol::Downstream if downstream == Version::HTTP_2 => conn::Wire::Http2,
        UpstreamProtocol::Downstream => conn::Wire::Http1,
    }
}

/// The client's request body: as it arrives, or already read whole (for mirrors).
enum ClientBody {
    Streaming(Incoming),
    Buffered(Replayable),
}

/// Sends the mirror copies the route's policies sample for this request and gives back
/// the body for the primary: read whole when the mirrors got a copy of it.
async fn mirror_copies(
    ctx: &Downstream,
    snapshot: &Snapshot,
    action: &crate::route::RouteAction,
    parts: &Parts,
    body: Incoming,
) -> Result<ClientBody, ProxyError> {
    let mut firing = mirror::sample(&action.mirrors).peekable();
    if firing.peek().is_none() {
        return Ok(ClientBody::Streaming(body));
    }
    let copy = if body.is_end_stream() {
        Replayable::default()
    } else if body.size_hint().exact().is_some_and(|n| n <= RETRY_BUFFER_LIMIT) {
        let collected = body.collect().await.map_err(ProxyError::ClientBody)?;
        let trailers = collected.trailers().cloned();
        Replayable { data: collected.to_bytes(), trailers }
    } else {
        debug!("request body of unknown or large size: streamed to the primary only, not mirrored");
        return Ok(ClientBody::Streaming(body));
    };
    for policy in firing {
        let Some(cluster) = snapshot.clusters.get(&policy.cluster) else {
            debug!(cluster = %policy.cluster, "mirror cluster not found: not mirrored");
            continue;
        };
        let mut head = clone_parts(parts);
        mirror::set_shadow_host(&mut head, policy);
        let wire = wire(cluster, head.version);
        let host = Host::of(&head);
        prepare_upstream(&mut head, &host, wire);
        mirror::spawn(ctx.shared.clone(), cluster.clone(), wire, head, &copy, action.timeout);
    }
    Ok(ClientBody::Buffered(copy))
}

/// Where a request goes: its chain (for logs), its cluster, the HTTP version.
#[derive(Clone, Copy)]
struct Target<'a> {
    chain: &'a HttpChain,
    cluster: &'a Cluster,
    wire: conn::Wire,
    /// The route's consistent-hash key of the request, for ring hash and Maglev.
    hash: Option<u64>,
}

/// The tries of one request: LB pick, upstream call with per-try timeout, outlier record,
/// retry decision, all within the route timeout.
async fn retry_loop(
    ctx: &Downstream,
    target: &Target<'_>,
    policy: &retry::Policy<'_>,
    parts: Parts,
    body: ClientBody,
    slot: crate::upstream::RequestSlot,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Target { chain, cluster, wire, hash } = *target;
    let tries = async {
        // A body is kept for another try only when retries are possible and it is known
        // to fit the buffer limit; otherwise it streams and the request gets one try.
        let (mut first_body, mut replay) = match body {
            ClientBody::Streaming(body) => (Some(body), None),
            ClientBody::Buffered(copy) => (None, Some(copy)),
        };
        if policy.num_retries() > 0 && replay.is_none() {
            let body = first_body.take().expect("body");
            if body.is_end_stream() {
                replay = Some(Replayable::default());
            } else if body.size_hint().exact().is_some_and(|n| n <= RETRY_BUFFER_LIMIT) {
                let collected = body.collect().await.map_err(ProxyError::ClientBody)?;
                let trailers = collected.trailers().cloned();
                replay = Some(Replayable { data: collected.to_bytes(), trailers });
            } else {
                first_body = Some(body);
            }
        }
        let retries = if replay.is_some() { policy.num_retries() } else { 0 };
        let mut previous = None;
        let mut slot = Some(slot);
        // The head is copied for every try but the last, which takes the original.
        let mut head = Some(parts);
        let mut last = None;
        for attempt in 0..=retries {
            let _retry_slot = if attempt > 0 {
                let Some(slot) = cluster.admit_retry() else { break };
                tokio::time::sleep(policy.backoff(attempt)).await;
                Some(slot)
            } else {
                None
            };
            let avoid = if policy.avoid_previous() { previous.as_ref() } else { None };
            let endpoint = cluster.pick(hash, avoid)?.clone();
            let parts = if attempt == retries {
                head.take().expect("the last try takes the head")
            } else {
                clone_parts(head.as_ref().expect("kept until the last try"))
            };
            let request = match (&replay, first_body.take()) {
                (_, Some(body)) => Request::from_parts(parts, RequestBody::Streaming(body)),
                (Some(r), None) => Request::from_parts(parts, RequestBody::replay(r)),
                (None, None) => unreachable!("a body without a copy is sent once"),
            };
            let mut inflight = InFlight::start(&endpoint);
            let call = conn::send(&ctx.shared.hbone, cluster, &endpoint, wire, request, &mut inflight);
            let result = match policy.per_try_timeout() {
                Some(t) => tokio::time::timeout(t, call).await.unwrap_or(Err(ProxyError::Timeout)),
                None => call.await,
            };
            let outcome = match &result {
                Ok(r) => Some(Outcome::Status(r.status())),
                Err(e) => e.retry_condition().map(Outcome::Failure),
            };
            let Some(outcome) = outcome else {
                // Not an upstream's answer (no endpoint, overflow, ...): no retry helps.
                return Err(result.expect_err("only failures lack an outcome"));
            };
            // Outlier detection's input.
            cluster.record(
                &endpoint,
                match outcome {
                    Outcome::Status(s) if s.is_server_error() => {
                        Result5xx::Status { gateway: matches!(s.as_u16(), 502..=504) }
                    }
                    Outcome::Status(_) => Result5xx::Success,
                    Outcome::Failure(_) => Result5xx::LocalFailure,
                },
            );
            if attempt < retries && policy.retriable(outcome) {
                debug!(chain = %chain.name, cluster = %cluster.name, endpoint = %endpoint.address, attempt, ?outcome, "retrying");
                previous = Some(endpoint);
                last = Some((result, inflight));
                continue;
            }
            return answer(result, inflight, &mut slot);
        }
        // The retry budget ran out: the last try's answer stands.
        match last {
            Some((result, inflight)) => answer(result, inflight, &mut slot),
            None => Err(ProxyError::Overflow { cluster: cluster.name.clone(), limit: "max_retries" }),
        }
    };
    match policy.timeout {
        Some(t) => tokio::time::timeout(t, tries).await.unwrap_or(Err(ProxyError::Timeout)),
        None => tries.await,
    }
}

/// The response of the try that stands, carrying what must live until its body ends.
fn answer(
    result: Result<Response<Incoming>, ProxyError>,
    inflight: InFlight,
    slot: &mut Option<crate::upstream::RequestSlot>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let response = result?;
    let keep = match slot.take() {
        Some(slot) => inflight.with_slot(slot),
        None => inflight,
    };
    Ok(response.map(|body| ResponseBody::Upstream { body, keep: Some(keep) }))
}

/// A copy of the request head for one try (the original is kept for the next).
fn clone_parts(parts: &Parts) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

/// The request's host: `:authority` (HTTP/2) or `Host` (HTTP/1.1). Both are backed by
/// the request's own `Bytes`, so keeping one is a reference count, not a copy.
enum Host {
    Authority(http::uri::Authority),
    Header(HeaderValue),
    None,
}

impl Host {
    fn of(parts: &Parts) -> Host {
        match (parts.uri.authority(), parts.headers.get(header::HOST)) {
            (Some(a), _) => Host::Authority(a.clone()),
            (None, Some(h)) => Host::Header(h.clone()),
            (None, None) => Host::None,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Host::Authority(a) => a.as_str(),
            Host::Header(h) => h.to_str().unwrap_or(""),
            Host::None => "",
        }
    }
}

/// The route's host rewrite (a weighted cluster's own first, as Envoy), before the head
/// is fitted to the upstream's version: the `:authority` if the request has one, else
/// `Host`. `auto_host_rewrite` keeps the host: endpoints are pods, which have no hostname
/// (Envoy then leaves it as well); a path-regex host rewrite is not applied yet.
fn rewrite_host(parts: &mut Parts, cluster: Option<&HeaderValue>, route: Option<&HostRewrite>) {
    let value = match (cluster, route) {
        (Some(literal), _) | (None, Some(HostRewrite::Literal(literal))) => literal.clone(),
        (None, Some(HostRewrite::Header(name))) => match parts.headers.get(name) {
            Some(v) => v.clone(),
            None => return,
        },
        _ => return,
    };
    if parts.uri.authority().is_some() {
        let Ok(authority) = http::uri::Authority::try_from(value.as_bytes()) else { return };
        let mut uri = parts.uri.clone().into_parts();
        uri.authority = Some(authority);
        if let Ok(rebuilt) = Uri::from_parts(uri) {
            parts.uri = rebuilt;
        }
    } else {
        parts.headers.insert(header::HOST, value);
    }
}

/// The connection manager's strip_port_mode applied to the request head: the port of the
/// `:authority` or `Host`, when the mode strips it. Only a request that carries a port to
/// strip pays for a new value.
fn strip_host_port(parts: &mut Parts, mode: crate::route::StripPort) {
    if mode == crate::route::StripPort::Keep {
        return;
    }
    // The host as routing saw it: a prefix of the one sent.
    let kept = |host: &str| crate::route::routing_host(host.as_bytes(), mode, false).len();
    if let Some(authority) = parts.uri.authority() {
        let host = authority.as_str();
        let at = kept(host);
        if at == host.len() {
            return;
        }
        let Ok(host) = http::uri::Authority::try_from(&host[..at]) else { return };
        let mut uri = parts.uri.clone().into_parts();
        uri.authority = Some(host);
        if let Ok(rebuilt) = Uri::from_parts(uri) {
            parts.uri = rebuilt;
        }
    } else if let Some(host) = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok())
        && kept(host) < host.len()
        && let Ok(value) = HeaderValue::from_str(&host[..kept(host)])
    {
        parts.headers.insert(header::HOST, value);
    }
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1; HTTP/2
/// forbids them).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Makes the head fit the upstream's HTTP version: an origin-form URI and `Host` for
/// HTTP/1.1, an absolute URI (`:scheme`, `:authority`) for HTTP/2; `te` only as
/// `trailers` (gRPC needs it).
fn prepare_upstream(parts: &mut Parts, host: &Host, wire: conn::Wire) {
    strip_hop_by_hop(&mut parts.headers);
    if parts.headers.get(header::TE).is_some_and(|te| te != "trailers") {
        parts.headers.remove(header::TE);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    match wire {
        conn::Wire::Http1 => {
            parts.version = Version::HTTP_11;
            if parts.uri.authority().is_some() {
                parts.uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
            }
            if !parts.headers.contains_key(header::HOST) {
                let value = match host {
                    Host::Authority(a) => HeaderValue::from_str(a.as_str()).ok(),
                    Host::Header(h) => Some(h.clone()),
                    Host::None => None,
                };
                if let Some(value) = value {
                    parts.headers.insert(header::HOST, value);
                }
            }
        }
        conn::Wire::Http2 => {
            parts.version = Version::HTTP_2;
            if parts.uri.authority().is_none() {
                let absolute =
                    Uri::builder().scheme("http").authority(host.as_str()).path_and_query(path).build();
                if let Ok(uri) = absolute {
                    parts.uri = uri;
                }
            }
            parts.headers.remove(header::HOST);
        }
    }
}

/// Envoy's local reply for a failure: its status, body and `x-envoy`-less headers.
pub fn local_reply(error: &ProxyError) -> Response<ResponseBody> {
    let body = error.body();
    let mut response = Response::new(ResponseBody::local(body));
    *response.status_mut() = error.status();
    if !body.is_empty() {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn returns, without calling it.
    fn future_size<A, B, F>(_: impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request in flight holds one of these: a regression in its size costs memory
    /// per request on every waypoint, so it fails here first.
    #[test]
    fn a_request_in_flight_stays_small() {
        let size = future_size(serve);
        println!("request future: {size} bytes");
        // 4,504 bytes when written: hyper's send futures (~1.5 KiB), the retry loop's
        // state, and the two timeouts around them.
        assert!(size <= 5 * 1024, "the request future grew to {size} bytes");
    }

    /// Envoy's flag strings: DI and FI after the upstream flags, before NC and DC.
    #[test]
    fn fault_flags_join_the_local_replys_in_envoys_order() {
        assert_eq!(Injected::None.flag(None), None);
        assert_eq!(Injected::None.flag(Some("UF")), Some("UF"));
        assert_eq!(Injected::Delay.flag(None), Some("DI"));
        assert_eq!(Injected::None.and_abort().flag(None), Some("FI"));
        assert_eq!(Injected::Delay.and_abort().flag(None), Some("DI,FI"));
        assert_eq!(Injected::Delay.flag(Some("UT")), Some("UT,DI"));
        assert_eq!(Injected::Delay.flag(Some("NC")), Some("DI,NC"));
        assert_eq!(Injected::Delay.flag(Some("-")), Some("DI"), "a denial sets no flag of its own");
    }
}
