//! HTTP connections to one endpoint, each on an HBONE stream (CONNECT `POD_IP:PORT` to
//! `POD_IP:15008`, with the waypoint's certificate, expecting the endpoint's identity).
//!
//! - HTTP/2: one multiplexed connection per endpoint, behind an `ArcSwapOption`, so a
//!   request takes it without a lock; a new one is dialled (under an async lock, once for
//!   all waiters) only when there is none or it closed.
//! - HTTP/1.1: a keep-alive pool of idle connections. A connection goes back to the pool
//!   when its response body ends ([`InFlight`] is dropped); the next request takes it.
//!   The idle list is a `Vec` under a mutex held for one push or pop (never across an
//!   await): uncontended, it costs an atomic exchange.
//!
//! The HBONE connections under them are `weft_hbone::Pool`'s, keyed per (waypoint
//! identity, endpoint identity, endpoint address), and shared by every HTTP/1.1 connection
//! to that endpoint as streams of one TLS connection.

use super::{Endpoint, RequestSlot};
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
use weft_hbone::{H2Stream, PoolKey};

/// What opening HBONE to an endpoint needs: the pool and the waypoint's certificate.
pub struct HboneClient {
    pub pool: weft_hbone::Pool,
    pub identity: Arc<WaypointIdentity>,
}

impl HboneClient {
    /// A new CONNECT stream to `endpoint`.
    pub async fn open(&self, endpoint: &Endpoint) -> Result<H2Stream, ProxyError> {
        let cert = self.identity.current().ok_or(ProxyError::NoCertificate)?;
        let key = PoolKey {
            src: self.identity.identity().clone(),
            dst: endpoint.identity.clone(),
            dst_addr: endpoint.hbone,
            extra: 0,
        };
        let hbone = endpoint.hbone;
        self.pool
            .connect(&key, &cert.cert, self.identity.roots(), endpoint.address, || {
                tokio::net::TcpStream::connect(hbone)
            })
            .await
            .map_err(|source| ProxyError::Connect { endpoint: endpoint.address, source: Box::new(source) })
    }
}

/// The HTTP connections of one endpoint.
#[derive(Default)]
pub struct ConnPool {
    h2: ArcSwapOption<http2::SendRequest<RequestBody>>,
    h2_dial: tokio::sync::Mutex<()>,
    h1_idle: Mutex<Vec<http1::SendRequest<RequestBody>>>,
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
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    _slot: Option<RequestSlot>,
    h1: Option<http1::SendRequest<RequestBody>>,
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
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(sender) = self.h1.take()
            && !sender.is_closed()
        {
            // A body dropped half-read leaves hyper closing the connection; the next
            // taker's `ready()` sees that and drops it.
            self.endpoint.conns.h1_idle.lock().expect("idle list").push(sender);
        }
    }
}

/// HTTP version of one try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Http1,
    Http2,
}

/// Sends `request` to `endpoint` over a pooled or new connection; `inflight` is the
/// exchange's guard, which takes the HTTP/1.1 connection to give back.
pub async fn send(
    hbone: &HboneClient,
    endpoint: &Arc<Endpoint>,
    wire: Wire,
    request: Request<RequestBody>,
    inflight: &mut InFlight,
) -> Result<Response<Incoming>, ProxyError> {
    match wire {
        Wire::Http1 => send_h1(hbone, endpoint, request, inflight).await,
        Wire::Http2 => send_h2(hbone, endpoint, request).await,
    }
}

async fn send_h1(
    hbone: &HboneClient,
    endpoint: &Arc<Endpoint>,
    mut request: Request<RequestBody>,
    inflight: &mut InFlight,
) -> Result<Response<Incoming>, ProxyError> {
    // Idle connections may have been closed by the server meanwhile: a request that was
    // never written is taken back and tried on the next one (hyper hands it back).
    loop {
        let pooled = endpoint.conns.h1_idle.lock().expect("idle list").pop();
        let (mut sender, reused) = match pooled {
            Some(mut s) => match s.ready().await {
                Ok(()) => (s, true),
                Err(_) => continue,
            },
            // Boxed: dialling (HBONE, TLS, handshakes) is a large future on the cold path;
            // inline it would grow every request's future by kilobytes.
            None => (Box::pin(dial_h1(hbone, endpoint)).await?, false),
        };
        match sender.try_send_request(request).await {
            Ok(response) => {
                inflight.h1 = Some(sender);
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
