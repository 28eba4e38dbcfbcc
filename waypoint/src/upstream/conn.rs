//! HTTP connections to one endpoint, each on an HBONE stream (CONNECT `POD_IP:PORT` to
//! `POD_IP:15008`, with the waypoint's certificate, expecting the endpoint's identity), or
//! on a plain TCP connection to an endpoint outside the mesh (no identity).
//!
//! - HTTP/2: one multiplexed connection per endpoint, behind an `ArcSwapOption`, so a
//!   request takes it without a lock; a new one is dialled (under an async lock, once for
//!   all waiters) only when there is none or it closed.
//! - HTTP/1.1: a keep-alive pool of idle connections. A connection goes back to the pool
//!   when its response body ends ([`InFlight`] is dropped); the next request takes it.
//!   The idle list is a `Vec` under a mutex held for one push or pop (never across an
//!   await): uncontended, it costs an atomic exchange. The cluster's breakers apply as
//!   Envoy's HTTP/1.1 pool applies them: at most `max_connections` connections (a request
//!   that finds none idle and no room waits for one, pending), at most
//!   `max_pending_requests` waiting (beyond: 503 UO at once), and a connection retires
//!   after `max_requests_per_connection` requests.
//!
//! The HBONE connections under them are `weft_hbone::Pool`'s, keyed per (waypoint
//! identity, endpoint identity, endpoint address), and shared by every HTTP/1.1 connection
//! to that endpoint as streams of one TLS connection.

use super::{Cluster, ClusterStats, Endpoint, RequestSlot, stream::UpstreamStream};
use crate::{body::RequestBody, error::ProxyError, identity::WaypointIdentity};
use arc_swap::ArcSwapOption;
use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::{TrySendError, http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::{Arc, Mutex, atomic::Ordering};
use tracing::debug;
use weft_hbone::PoolKey;

/// What opening a stream to an endpoint needs: for HBONE, the pool and the waypoint's
/// certificate.
pub struct HboneClient {
    pub pool: weft_hbone::Pool,
    pub identity: Arc<WaypointIdentity>,
}

impl HboneClient {
    /// A new byte stream to `endpoint`: a CONNECT stream if it is in the mesh, else a TCP
    /// connection.
    pub async fn open(&self, endpoint: &Endpoint) -> Result<UpstreamStream, ProxyError> {
        let Some(identity) = &endpoint.identity else {
            let stream = tokio::net::TcpStream::connect(endpoint.address)
                .await
                .map_err(|source| ProxyError::ConnectPlain { endpoint: endpoint.address, source })?;
            // Requests are small and latency-bound, as on the HBONE path.
            let _ = stream.set_nodelay(true);
            return Ok(UpstreamStream::Plain(stream));
        };
        let cert = self.identity.current().ok_or(ProxyError::NoCertificate)?;
        let key = PoolKey {
            src: self.identity.identity().clone(),
            dst: identity.clone(),
            dst_addr: endpoint.hbone,
            extra: 0,
        };
        let hbone = endpoint.hbone;
        self.pool
            .connect(&key, &cert.cert, self.identity.roots(), endpoint.address, || {
                tokio::net::TcpStream::connect(hbone)
            })
            .await
            .map(UpstreamStream::Hbone)
            .map_err(|source| ProxyError::Connect { endpoint: endpoint.address, source: Box::new(source) })
    }
}

/// The HTTP connections of one endpoint.
#[derive(Default)]
pub struct ConnPool {
    h2: ArcSwapOption<http2::SendRequest<RequestBody>>,
    h2_dial: tokio::sync::Mutex<()>,
    h1_idle: Mutex<Vec<H1Conn>>,
}

/// An HTTP/1.1 connection and the requests it has carried.
struct H1Conn {
    sender: http1::SendRequest<RequestBody>,
    used: u32,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool")
            .field("h2", &self.h2.load().as_ref().is_some_and(|s| !s.is_closed()))
            .field("h1_idle", &self.h1_idle.lock().map(|v| v.len()).unwrap_or(0))
            .finish()
    }
}

/// An exchange in flight, until its response body ends: holds the cluster's request slot
/// and the endpoint's active count, and gives an HTTP/1.1 connection back to the pool.
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    _slot: Option<RequestSlot>,
    h1: Option<(H1Conn, Arc<ClusterStats>, u32)>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").field("endpoint", &self.endpoint.address).finish_non_exhaustive()
    }
}

impl InFlight {
    /// Counts a request on `endpoint` until dropped.
    pub fn start(endpoint: &Arc<Endpoint>) -> InFlight {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        InFlight { endpoint: endpoint.clone(), _slot: None, h1: None }
    }

    pub fn with_slot(mut self, slot: RequestSlot) -> InFlight {
        self._slot = Some(slot);
        self
    }

    /// Ends the exchange now (the body ended).
    pub fn finish(self) {}

    /// The endpoint answering (for metrics and the access log).
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
        if let Some((conn, stats, max_per_connection)) = self.h1.take() {
            // A retiring connection is dropped: hyper closes it, its task counts it out.
            if !conn.sender.is_closed() && (max_per_connection == 0 || conn.used < max_per_connection) {
                // A body dropped half-read leaves hyper closing the connection; the next
                // taker's `ready()` sees that and drops it.
                self.endpoint.conns.h1_idle.lock().expect("idle list").push(conn);
                stats.conn_freed.notify_one();
            }
        }
    }
}

/// HTTP version of one try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Http1,
    Http2,
}

/// Sends `request` to `endpoint` of `cluster` over a pooled or new connection; `inflight`
/// is the exchange's guard, which takes the HTTP/1.1 connection to give back.
pub async fn send(
    hbone: &HboneClient,
    cluster: &Cluster,
    endpoint: &Arc<Endpoint>,
    wire: Wire,
    request: Request<RequestBody>,
    inflight: &mut InFlight,
) -> Result<Response<Incoming>, ProxyError> {
    match wire {
        Wire::Http1 => send_h1(hbone, cluster, endpoint, request, inflight).await,
        Wire::Http2 => send_h2(hbone, endpoint, request).await,
    }
}

async fn send_h1(
    hbone: &HboneClient,
    cluster: &Cluster,
    endpoint: &Arc<Endpoint>,
    mut request: Request<RequestBody>,
    inflight: &mut InFlight,
) -> Result<Response<Incoming>, ProxyError> {
    // Idle connections may have been closed by the server meanwhile: a request that was
    // never written is taken back and tried on the next one (hyper hands it back).
    loop {
        let (mut conn, reused) = match take_h1(hbone, cluster, endpoint).await? {
            Taken::Idle(c) => (c, true),
            Taken::New(sender) => (H1Conn { sender, used: 0 }, false),
        };
        if reused && conn.sender.ready().await.is_err() {
            continue;
        }
        match conn.sender.try_send_request(request).await {
            Ok(response) => {
                conn.used += 1;
                let max = cluster.settings.max_requests_per_connection;
                inflight.h1 = Some((conn, cluster.stats.clone(), max));
                return Ok(response);
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => {
                    debug!(endpoint = %endpoint.address, "pooled HTTP/1.1 connection was closing; taking another");
                    request = unsent;
                }
                _ => return Err(reset(endpoint, e)),
            },
        }
    }
}

enum Taken {
    Idle(H1Conn),
    New(http1::SendRequest<RequestBody>),
}

/// An idle connection of the endpoint, or a new one if the cluster has room, or — as a
/// pending request — the first of either to come.
async fn take_h1(
    hbone: &HboneClient,
    cluster: &Cluster,
    endpoint: &Arc<Endpoint>,
) -> Result<Taken, ProxyError> {
    let stats = &cluster.stats;
    let limits = &cluster.settings.thresholds;
    let mut pending: Option<PendingSlot<'_>> = None;
    loop {
        let freed = stats.conn_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some(conn) = endpoint.conns.h1_idle.lock().expect("idle list").pop() {
            return Ok(Taken::Idle(conn));
        }
        let open = stats.h1_connections.fetch_add(1, Ordering::AcqRel);
        if open < limits.max_connections {
            // Boxed: dialling (HBONE, TLS, handshakes) is a large future on the cold
            // path; inline it would grow every request's future by kilobytes.
            return match Box::pin(dial_h1(hbone, stats.clone(), endpoint)).await {
                Ok(sender) => Ok(Taken::New(sender)),
                Err(e) => {
                    stats.h1_connections.fetch_sub(1, Ordering::AcqRel);
                    stats.conn_freed.notify_one();
                    Err(e)
                }
            };
        }
        stats.h1_connections.fetch_sub(1, Ordering::AcqRel);
        if pending.is_none() {
            if stats.pending.fetch_add(1, Ordering::AcqRel) >= limits.max_pending_requests {
                stats.pending.fetch_sub(1, Ordering::AcqRel);
                stats.overflow.fetch_add(1, Ordering::Relaxed);
                return Err(ProxyError::Overflow {
                    cluster: cluster.name.clone(),
                    limit: "max_pending_requests",
                });
            }
            pending = Some(PendingSlot(stats));
        }
        freed.await;
    }
}

/// One request waiting for an HTTP/1.1 connection, until dropped.
struct PendingSlot<'a>(&'a ClusterStats);

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn send_h2(
    hbone: &HboneClient,
    endpoint: &Arc<Endpoint>,
    request: Request<RequestBody>,
) -> Result<Response<Incoming>, ProxyError> {
    let mut request = request;
    for _ in 0..2 {
        let mut sender = match endpoint.conns.h2.load_full() {
            Some(s) if !s.is_closed() => (*s).clone(),
            _ => Box::pin(dial_h2(hbone, endpoint)).await?,
        };
        if sender.ready().await.is_err() {
            endpoint.conns.h2.store(None);
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => return Ok(response),
            Err(mut e) => match e.take_message() {
                // The connection went away before the request left: once more on a new one.
                Some(unsent) => {
                    endpoint.conns.h2.store(None);
                    request = unsent;
                }
                None => return Err(reset(endpoint, e)),
            },
        }
    }
    Err(ProxyError::NoHealthyUpstream(Arc::from(endpoint.address.to_string())))
}

fn reset(endpoint: &Endpoint, e: TrySendError<Request<RequestBody>>) -> ProxyError {
    ProxyError::Reset { endpoint: endpoint.address, source: e.into_error() }
}

async fn dial_h1(
    hbone: &HboneClient,
    stats: Arc<ClusterStats>,
    endpoint: &Endpoint,
) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
    let stream = hbone.open(endpoint).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Handshake { endpoint: endpoint.address, source })?;
    let address = endpoint.address;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            debug!(endpoint = %address, %error, "upstream HTTP/1.1 connection ended");
        }
        stats.h1_connections.fetch_sub(1, Ordering::AcqRel);
        stats.conn_freed.notify_one();
    });
    Ok(sender)
}

async fn dial_h2(
    hbone: &HboneClient,
    endpoint: &Endpoint,
) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
    let _dialing = endpoint.conns.h2_dial.lock().await;
    // Another request may have dialled while this one waited.
    if let Some(s) = endpoint.conns.h2.load_full()
        && !s.is_closed()
    {
        return Ok((*s).clone());
    }
    let stream = hbone.open(endpoint).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Handshake { endpoint: endpoint.address, source })?;
    let address = endpoint.address;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            debug!(endpoint = %address, %error, "upstream HTTP/2 connection ended");
        }
    });
    endpoint.conns.h2.store(Some(Arc::new(sender.clone())));
    Ok(sender)
}
