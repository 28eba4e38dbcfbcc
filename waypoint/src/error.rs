//! Why a request was not served by its upstream, with where the failure came from, whether
//! a retry may follow, and the status and response flag Envoy would answer with — so the
//! retry loop and the local reply read the error instead of guessing.

use http::StatusCode;
use std::{net::SocketAddr, sync::Arc};

/// Which side a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The downstream client (a body that broke off, a request we cannot forward).
    Client,
    /// The upstream endpoint or the path to it.
    Upstream,
    /// The waypoint's own state (no certificate, no such cluster).
    Internal,
}

/// A failed request, as the proxy answers it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matched (Envoy: 404, flag NR).
    #[error("no route for the request")]
    NoRoute,
    /// The route names a cluster the waypoint does not hold (Envoy: the route's
    /// `cluster_not_found_response_code`, 503 by default; flag NC).
    #[error("cluster {name:?} not found")]
    NoCluster { name: Arc<str>, status: StatusCode },
    /// The cluster has no endpoint to pick (Envoy: 503 "no healthy upstream", flag UH).
    #[error("no healthy upstream in {0}")]
    NoHealthyUpstream(Arc<str>),
    /// A circuit breaker of the cluster is open (Envoy: 503, flag UO).
    #[error("{cluster}: {limit} exceeded (circuit breaker)")]
    Overflow { cluster: Arc<str>, limit: &'static str },
    /// The waypoint holds no certificate yet, so it cannot open HBONE.
    #[error("the waypoint has no certificate yet")]
    NoCertificate,
    /// The HBONE connection or stream to the endpoint could not be opened (flag UF).
    #[error("cannot reach {endpoint} over HBONE: {source}")]
    Connect {
        endpoint: SocketAddr,
        #[source]
        source: Box<weft_hbone::ConnectError>,
    },
    /// The TCP connection to an endpoint outside the mesh could not be opened (flag UF).
    #[error("cannot connect to {endpoint}: {source}")]
    ConnectPlain {
        endpoint: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP handshake on a new HBONE stream failed (flag UF).
    #[error("HTTP handshake with {endpoint} failed: {source}")]
    Handshake {
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The upstream reset or closed before answering (flag UC/UR: Envoy's
    /// "upstream connect error or disconnect/reset before headers").
    #[error("{endpoint} reset the request before answering: {source}")]
    Reset {
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// No response headers within the (per-try) timeout (Envoy: 504, flag UT).
    #[error("upstream request timeout")]
    Timeout,
    /// The client's request body broke off while it was read for a retry's copy.
    #[error("the client's request body broke off: {0}")]
    ClientBody(#[source] hyper::Error),
    /// An RBAC filter refused the request (Envoy: 403 "RBAC: access denied", details
    /// `rbac_access_denied_matched_policy[NAME]`, no response flag).
    #[error("RBAC: access denied (matched policy {})", policy.as_deref().unwrap_or("none"))]
    Denied { policy: Option<Arc<str>> },
    /// A TCP chain's byte pump failed.
    #[error("TCP proxying failed: {0}")]
    Tcp(#[source] std::io::Error),
}

impl ProxyError {
    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::NoRoute | ProxyError::ClientBody(_) | ProxyError::Denied { .. } => Origin::Client,
            ProxyError::NoCluster { .. } | ProxyError::NoCertificate => Origin::Internal,
            _ => Origin::Upstream,
        }
    }

    /// Whether `retry_on` conditions can apply at all: only failures before the request
    /// reached an upstream's application, or timeouts and resets, which Envoy retries when
    /// the policy asks.
    pub fn retry_condition(&self) -> Option<RetryCondition> {
        match self {
            ProxyError::Connect { source, .. } if source.status().is_some() => Some(RetryCondition::Refused),
            ProxyError::Connect { .. } | ProxyError::ConnectPlain { .. } | ProxyError::Handshake { .. } => {
                Some(RetryCondition::ConnectFailure)
            }
            ProxyError::Reset { .. } => Some(RetryCondition::Reset),
            ProxyError::Timeout => Some(RetryCondition::Timeout),
            _ => None,
        }
    }

    /// The status of the local reply.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoCluster { status, .. } => *status,
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Denied { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Envoy's response flag (`%RESPONSE_FLAGS%`), as access logs and Istio metrics carry it.
    pub fn response_flag(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "NR",
            ProxyError::NoCluster { .. } => "NC",
            ProxyError::NoHealthyUpstream(_) => "UH",
            ProxyError::Overflow { .. } => "UO",
            ProxyError::NoCertificate
            | ProxyError::Connect { .. }
            | ProxyError::ConnectPlain { .. }
            | ProxyError::Handshake { .. } => "UF",
            ProxyError::Reset { .. } => "UC",
            ProxyError::Timeout => "UT",
            ProxyError::Tcp(_) => "UC",
            ProxyError::ClientBody(_) => "DC",
            // Envoy's RBAC filter sets no flag; the details carry the policy.
            ProxyError::Denied { .. } => "-",
        }
    }

    /// The body of the local reply, in Envoy's words.
    pub fn body(&self) -> &'static str {
        match self {
            ProxyError::NoRoute | ProxyError::NoCluster { .. } | ProxyError::ClientBody(_) => "",
            ProxyError::NoHealthyUpstream(_) => "no healthy upstream",
            ProxyError::Overflow { .. } => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            ProxyError::NoCertificate
            | ProxyError::Connect { .. }
            | ProxyError::ConnectPlain { .. }
            | ProxyError::Handshake { .. } => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            ProxyError::Reset { .. } | ProxyError::Tcp(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            ProxyError::Timeout => "upstream request timeout",
            ProxyError::Denied { .. } => crate::rbac::DENIED_BODY,
        }
    }
}

/// The `retry_on` condition a failure answers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryCondition {
    /// `connect-failure`.
    ConnectFailure,
    /// `refused-stream`: the HBONE CONNECT was refused.
    Refused,
    /// `reset`.
    Reset,
    /// A per-try timeout: retried under `5xx`, `gateway-error` and `reset` (Envoy).
    Timeout,
}
