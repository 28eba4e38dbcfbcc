//! Request mirroring (RouteAction.request_mirror_policies, Istio's `mirror` /
//! `mirrorPercentage`): a copy of the request goes to each mirror cluster its
//! runtime_fraction picks, fire and forget, as Envoy's shadow writer does it:
//!
//! - the copy is the request as the primary gets it (after rewrites and the route's header
//!   mutations), with "-shadow" appended to the host part of its authority, before the port
//!   (`reviews:9080` → `reviews-shadow:9080`; Envoy's `shadowAppendedHost`) unless the policy
//!   sets `disable_shadow_host_suffix_append`;
//! - the mirror's answer is read and dropped; its failures (no endpoint, circuit breaker,
//!   connect errors, timeouts) are logged at debug and never touch the client's request;
//! - it is bounded by the route timeout, like Envoy's shadow request.
//!
//! Bodies: Envoy streams the body to the shadow as it arrives. Here a copy is sent only of
//! a body that is empty or known (content-length) to fit the request buffer limit (1 MiB,
//! Envoy's default `per_request_buffer_limit_bytes`): it is read once and shared by the
//! primary and the mirrors. A larger or chunked body of unknown length streams to the
//! primary only and the mirror is skipped (debug log), so mirroring never holds a large
//! body in memory nor delays the primary behind a slow mirror.

use crate::{
    body::{Replayable, RequestBody},
    route::MirrorPolicy,
    state::Shared,
    upstream::{Cluster, InFlight, conn},
};
use http::{Request, Uri, header, request::Parts};
use http_body_util::BodyExt;
use std::{sync::Arc, time::Duration};
use tracing::debug;

/// The authority with Envoy's "-shadow" on its host part.
pub fn shadow_host(host: &str) -> String {
    match port_start(host) {
        Some(i) => format!("{}-shadow{}", &host[..i], &host[i..]),
        None => format!("{host}-shadow"),
    }
}

/// Where `:port` starts, as Envoy's `HeaderUtility::getPortStart`: after the last ':' when
/// it is not inside an IPv6 literal.
fn port_start(host: &str) -> Option<usize> {
    let i = host.rfind(':')?;
    if host.starts_with('[') {
        // `[v6]:port`, or a bare `[v6]` whose last ':' is inside the brackets.
        return host[..i].ends_with(']').then_some(i);
    }
    // More than one ':' without brackets: an IPv6 address without a port.
    (!host[..i].contains(':')).then_some(i)
}

/// The policies that fire for this request (each samples its runtime_fraction).
pub fn sample(mirrors: &[MirrorPolicy]) -> impl Iterator<Item = &MirrorPolicy> {
    mirrors.iter().filter(|m| m.fraction.sample(fastrand::u64(..)))
}

/// Rewrites the host of a mirror's copy of the head: `Host` and, when the URI is absolute,
/// its authority.
pub fn set_shadow_host(parts: &mut Parts, policy: &MirrorPolicy) {
    if policy.disable_shadow_host_suffix_append {
        return;
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    let Some(host) = host.filter(|h| !h.is_empty()) else { return };
    let shadow = shadow_host(host);
    if parts.headers.contains_key(header::HOST)
        && let Ok(value) = http::HeaderValue::from_str(&shadow)
    {
        parts.headers.insert(header::HOST, value);
    }
    if parts.uri.authority().is_some() {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.authority = shadow.parse().ok();
        parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    }
}

/// Sends `head` (ready for the mirror cluster's wire) with a copy of `body` to `cluster`,
/// in a task of its own; the answer is drained and dropped.
pub fn spawn(
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    wire: conn::Wire,
    head: Parts,
    body: &Replayable,
    timeout: Option<Duration>,
) {
    let request = Request::from_parts(head, RequestBody::replay(body));
    tokio::spawn(async move {
        let send = async {
            let _slot = cluster.admit()?;
            let endpoint = cluster.pick(None, None)?.clone();
            let mut inflight = InFlight::start(&endpoint);
            let response =
                conn::send(&shared.hbone, &cluster, &endpoint, wire, request, &mut inflight).await?;
            let status = response.status();
            // Read to the end, so an HTTP/1.1 connection goes back to the pool.
            let _ = response.into_body().collect().await;
            drop(inflight);
            Ok::<_, crate::error::ProxyError>(status)
        };
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, send).await.unwrap_or(Err(crate::error::ProxyError::Timeout)),
            None => send.await,
        };
        match result {
            Ok(status) => debug!(cluster = %cluster.name, %status, "mirror answered (dropped)"),
            Err(error) => {
                debug!(cluster = %cluster.name, %error, "mirror failed (the request is not affected)")
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Envoy's shadowAppendedHost: the suffix goes on the host, before any port.
    #[test]
    fn shadow_goes_before_the_port() {
        assert_eq!(shadow_host("reviews"), "reviews-shadow");
        assert_eq!(shadow_host("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_host("reviews.ns.svc.cluster.local:80"), "reviews.ns.svc.cluster.local-shadow:80");
        assert_eq!(shadow_host("10.0.0.1:80"), "10.0.0.1-shadow:80");
        assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow_host("[::1]"), "[::1]-shadow");
    }

    #[test]
    fn the_head_gets_the_shadow_host_in_host_and_authority() {
        let policy = |disable| MirrorPolicy {
            cluster: Arc::from("m"),
            fraction: crate::route::Fraction::ALWAYS,
            disable_shadow_host_suffix_append: disable,
        };
        let (mut h1, ()) = Request::get("/a?b").header("host", "reviews:9080").body(()).unwrap().into_parts();
        set_shadow_host(&mut h1, &policy(false));
        assert_eq!(h1.headers["host"], "reviews-shadow:9080");
        let (mut h2, ()) = Request::get("http://reviews/a").body(()).unwrap().into_parts();
        set_shadow_host(&mut h2, &policy(false));
        assert_eq!(h2.uri.to_string(), "http://reviews-shadow/a");
        assert!(!h2.headers.contains_key("host"));
        let (mut off, ()) = Request::get("/").header("host", "reviews").body(()).unwrap().into_parts();
        set_shadow_host(&mut off, &policy(true));
        assert_eq!(off.headers["host"], "reviews");
    }
}
