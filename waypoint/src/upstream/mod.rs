//! Upstream clusters as the data path uses them: settings compiled from the Cluster, the
//! endpoints of its ClusterLoadAssignment (pods reached by HBONE), the load balancer over
//! them, and per-endpoint HTTP connections.
//!
//! A [`Cluster`] is immutable and lives in a config snapshot; what must outlive a config
//! update — counters of requests in flight, connections — lives in `Arc`s that the next
//! compile carries over by name (cluster) and by (address, identity) (endpoint), so an EDS
//! update neither drops connections nor forgets the least-request counts.

pub mod conn;
pub mod lb;
pub mod outlier;
pub mod stream;

use crate::error::ProxyError;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use weft_hbone::Identity;

pub use conn::{ConnPool, InFlight};
pub use lb::{LbPolicy, LoadBalancer};
pub use outlier::{OutlierSettings, OutlierState, Result5xx};

/// The HTTP version spoken to a cluster's endpoints (the cluster's
/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum UpstreamProtocol {
    /// Envoy's default without protocol options.
    Http1,
    Http2,
    /// `use_downstream_protocol_config` (and `auto_config`: there is no ALPN inside HBONE
    /// to negotiate with, so the downstream's version is the best guess).
    Downstream,
}

/// A cluster's circuit-breaker thresholds (default priority), Envoy's defaults when unset.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Thresholds {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds { max_connections: 1024, max_pending_requests: 1024, max_requests: 1024, max_retries: 3 }
    }
}

/// What the Cluster resource says, compiled.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterSettings {
    pub lb_policy: LbPolicy,
    pub protocol: UpstreamProtocol,
    pub thresholds: Thresholds,
    /// Requests per HTTP/1.1 connection before it is closed (`max_requests_per_connection`;
    /// 0: unlimited).
    pub max_requests_per_connection: u32,
    pub connect_timeout: Duration,
    /// Outlier detection, when the cluster has it.
    pub outlier: Option<OutlierSettings>,
    /// Below this percentage of healthy (not ejected) endpoints, ejections are ignored
    /// (Envoy's `healthy_panic_threshold`, 50 by default; Istio sets 0: never).
    pub panic_threshold: f64,
}

/// Counters of one cluster that survive config updates.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Requests in flight (the `max_requests` breaker).
    pub active_requests: AtomicU32,
    /// Retries in flight (the `max_retries` breaker).
    pub active_retries: AtomicU32,
    pub requests: AtomicU64,
    pub overflow: AtomicU64,
    pub retries: AtomicU64,
    /// Round robin's position.
    pub rr_next: AtomicUsize,
    /// HTTP/1.1 connections open to the cluster's endpoints (the `max_connections` breaker).
    pub h1_connections: AtomicU32,
    /// Requests waiting for an HTTP/1.1 connection (the `max_pending_requests` breaker).
    pub pending: AtomicU32,
    /// Woken when an HTTP/1.1 connection goes back to its pool or closes.
    pub conn_freed: tokio::sync::Notify,
    /// Endpoints ejected now (an upper bound until their time is noticed to be up).
    pub ejected: AtomicU32,
    pub ejections_total: AtomicU64,
}

/// One endpoint: a pod port reached over HBONE, or directly if it is outside the mesh.
#[derive(Debug)]
pub struct Endpoint {
    /// `POD_IP:TARGET_PORT`, the CONNECT authority.
    pub address: SocketAddr,
    /// `POD_IP:15008`.
    pub hbone: SocketAddr,
    /// The identity the endpoint must present (`weft.identity`); none for an endpoint
    /// outside the mesh, reached over plain TCP as Istio's waypoints reach one.
    pub identity: Option<Identity>,
    /// Requests in flight (least-request).
    pub active: AtomicU32,
    pub outlier: OutlierState,
    pub conns: ConnPool,
}

impl Endpoint {
    pub fn new(address: SocketAddr, hbone_port: u16, identity: Option<Identity>) -> Endpoint {
        Endpoint {
            address,
            hbone: SocketAddr::new(address.ip(), hbone_port),
            identity,
            active: AtomicU32::new(0),
            outlier: OutlierState::default(),
            conns: ConnPool::default(),
        }
    }
}

/// A cluster as the data path uses it.
#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    pub settings: ClusterSettings,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub lb: LoadBalancer,
    pub stats: Arc<ClusterStats>,
}

impl Cluster {
    pub fn new(
        name: Arc<str>,
        settings: ClusterSettings,
        endpoints: Vec<Arc<Endpoint>>,
        stats: Arc<ClusterStats>,
    ) -> Cluster {
        let lb = LoadBalancer::build(settings.lb_policy, &endpoints);
        // Endpoints dropped by this update take their ejections with them.
        let now = outlier::now_ms();
        let ejected = endpoints.iter().filter(|e| e.outlier.is_ejected(now)).count() as u32;
        stats.ejected.store(ejected, Ordering::Relaxed);
        Cluster { name, settings, endpoints, lb, stats }
    }

    /// An endpoint for one try: the load balancer's choice among the endpoints not
    /// ejected, avoiding `previous` (the endpoint of the failed try before) when there is
    /// another.
    pub fn pick(
        &self,
        hash: Option<u64>,
        previous: Option<&Arc<Endpoint>>,
    ) -> Result<&Arc<Endpoint>, ProxyError> {
        let none = || ProxyError::NoHealthyUpstream(self.name.clone());
        if self.stats.ejected.load(Ordering::Relaxed) == 0 {
            return self.lb.pick(&self.endpoints, &self.stats, hash, previous, &|_| false).ok_or_else(none);
        }
        let now = outlier::now_ms();
        self.expire(now);
        let out = |i: usize| self.endpoints[i].outlier.is_ejected(now);
        let n = self.endpoints.len();
        let healthy = (0..n).filter(|&i| !out(i)).count();
        if (healthy as f64) * 100.0 < self.settings.panic_threshold * n as f64 {
            // Panic mode: too few left to carry the load; Envoy spreads over all of them.
            return self.lb.pick(&self.endpoints, &self.stats, hash, previous, &|_| false).ok_or_else(none);
        }
        self.lb.pick(&self.endpoints, &self.stats, hash, previous, &out).ok_or_else(none)
    }

    /// Records how a try on `endpoint` ended; ejects it when outlier detection says so
    /// and `max_ejection_percent` allows.
    pub fn record(&self, endpoint: &Endpoint, result: Result5xx) {
        let Some(settings) = &self.settings.outlier else { return };
        if !endpoint.outlier.record(result, settings) {
            return;
        }
        let now = outlier::now_ms();
        self.expire(now);
        let ejected = self.endpoints.iter().filter(|e| e.outlier.is_ejected(now)).count();
        // Envoy's check: the share already ejected, before this one.
        if ejected as f64 * 100.0 >= f64::from(settings.max_ejection_percent) * self.endpoints.len() as f64 {
            return;
        }
        if endpoint.outlier.eject(now, settings) {
            self.stats.ejected.fetch_add(1, Ordering::Relaxed);
            self.stats.ejections_total.fetch_add(1, Ordering::Relaxed);
            tracing::info!(cluster = %self.name, endpoint = %endpoint.address, "outlier ejected");
        }
    }

    /// Ends the ejections whose time is up.
    fn expire(&self, now: u64) {
        for e in &self.endpoints {
            if e.outlier.expire(now) {
                let _ = self
                    .stats
                    .ejected
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
    }

    /// Admits one more request under the `max_requests` breaker, or answers overflow.
    pub fn admit(&self) -> Result<RequestSlot, ProxyError> {
        let active = self.stats.active_requests.fetch_add(1, Ordering::AcqRel);
        if active >= self.settings.thresholds.max_requests {
            self.stats.active_requests.fetch_sub(1, Ordering::AcqRel);
            self.stats.overflow.fetch_add(1, Ordering::Relaxed);
            return Err(ProxyError::Overflow { cluster: self.name.clone(), limit: "max_requests" });
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Ok(RequestSlot { stats: self.stats.clone() })
    }

    /// Admits one retry under the `max_retries` breaker.
    pub fn admit_retry(&self) -> Option<RetrySlot> {
        let active = self.stats.active_retries.fetch_add(1, Ordering::AcqRel);
        if active >= self.settings.thresholds.max_retries {
            self.stats.active_retries.fetch_sub(1, Ordering::AcqRel);
            self.stats.overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        Some(RetrySlot { stats: self.stats.clone() })
    }
}

/// One request admitted by the cluster's breaker, until it is dropped.
#[derive(Debug)]
pub struct RequestSlot {
    stats: Arc<ClusterStats>,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.stats.active_requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One retry in flight, until it is dropped.
#[derive(Debug)]
pub struct RetrySlot {
    stats: Arc<ClusterStats>,
}

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.stats.active_retries.fetch_sub(1, Ordering::AcqRel);
    }
}
