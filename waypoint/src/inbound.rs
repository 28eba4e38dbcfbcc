//! HBONE termination: the 15008 listener, each connection through
//! `weft_hbone::serve_connection` (TLS 1.3 with the waypoint's certificate, the client's
//! chain checked against the mesh root), and each CONNECT dispatched by its authority
//! (the service VIP:PORT the client dialled) to its chain:
//!
//! - an HTTP chain: the stream is served by hyper's auto server (HTTP/1.1 and HTTP/2 prior
//!   knowledge on the same stream), each request through `proxy.rs`;
//! - a TCP chain: a stream to an endpoint of the cluster is opened first, then the CONNECT
//!   is answered 200 and bytes are pumped both ways.
//!
//! A CONNECT to an authority no chain serves is refused with 503, as ztunnel refuses a
//! CONNECT it cannot serve (Envoy's internal-listener hop would instead reset the tunnel:
//! the client agent sees the same thing, a tunnel that does not open). Before the first
//! configuration or certificate arrives, connections are closed at accept.

use crate::{
    error::ProxyError,
    metrics::Reporter,
    proxy::{self, Downstream, Source},
    snapshot::{Chain, TcpChain},
    state::Shared,
    upstream::InFlight,
};
use http::StatusCode;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tokio::{net::TcpListener, sync::watch};
use tracing::{Instrument, debug, info_span, warn};
use weft_hbone::HboneRequest;

/// Accepts HBONE connections until `shutdown` turns true.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut next_id = 0u64;
    while let Some((tcp, peer)) = accept(&listener, &shutdown, "HBONE").await {
        next_id += 1;
        let shared = shared.clone();
        let span = info_span!("hbone", conn = next_id, %peer);
        tokio::spawn(connection(tcp, shared, shutdown.clone()).instrument(span));
    }
}

/// The next connection on `listener`, or `None` once `shutdown` is true. A failed accept
/// (out of descriptors, a connection reset in the queue) is logged and retried shortly.
pub(crate) async fn accept(
    listener: &TcpListener,
    shutdown: &watch::Receiver<bool>,
    what: &'static str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(error) => {
                    warn!(%error, listener = what, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stopped(&mut stop) => return None,
        }
    }
}

async fn connection(tcp: tokio::net::TcpStream, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    if shared.snapshot.load().terminate.is_none() {
        debug!("no connect_terminate listener from the control plane yet; closing");
        return;
    }
    let Some(cert) = shared.identity.current() else {
        debug!("no certificate yet; closing");
        return;
    };
    let settings = shared.hbone_settings.clone();
    let stop = async move { stopped(&mut shutdown).await };
    let handler = |request: HboneRequest| connect(shared.clone(), request);
    if let Err(error) =
        weft_hbone::serve_connection(tcp, cert.server_config.clone(), &settings, stop, handler).await
    {
        debug!(%error, "HBONE connection ended");
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
}

/// One CONNECT: dispatch by authority, then the chain.
async fn connect(shared: Arc<Shared>, request: HboneRequest) {
    let authority = request.authority();
    let chain = shared.snapshot.load().dispatch.get(&authority).cloned();
    let Some(chain) = chain else {
        debug!(%authority, identity = %request.peer_identity(), "no chain serves this authority; refusing 503");
        shared.metrics.connects_refused.fetch_add(1, Ordering::Relaxed);
        request.refuse(StatusCode::SERVICE_UNAVAILABLE);
        return;
    };
    let identity = request.peer_identity_shared().clone();
    let principal = Arc::from(identity.to_string());
    let source =
        Source { identity: Some(identity), principal: Some(principal), addr: request.peer_addr(), authority };
    match &*chain {
        Chain::Http(_) => {
            let stream = match request.accept() {
                Ok(s) => s,
                Err(error) => return debug!(%error, "CONNECT gone before its answer"),
            };
            let ctx =
                Arc::new(Downstream { shared, chain: chain.clone(), source, reporter: Reporter::Waypoint });
            let service = hyper::service::service_fn(move |req| proxy::serve(ctx.clone(), req));
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                debug!(%error, chain = chain.name(), "downstream HTTP connection ended");
            }
        }
        Chain::Tcp(tcp) => {
            if let Err(error) = tcp_chain(&shared, tcp, request).await {
                debug!(%error, chain = %tcp.name, flag = error.response_flag(), "TCP chain failed");
            }
        }
    }
}

/// A TCP chain: a stream to an endpoint of the cluster (HBONE, or plain TCP outside the
/// mesh), then the bytes.
async fn tcp_chain(shared: &Shared, chain: &TcpChain, request: HboneRequest) -> Result<(), ProxyError> {
    let snapshot = shared.snapshot.load_full();
    let opened = async {
        let cluster = snapshot.clusters.get(&chain.cluster).ok_or_else(|| ProxyError::NoCluster {
            name: chain.cluster.clone(),
            status: StatusCode::SERVICE_UNAVAILABLE,
        })?;
        let endpoint = cluster.pick(None, None)?.clone();
        // Boxed: opening HBONE is a large future, and only this path needs it.
        let stream = Box::pin(shared.hbone.open(&endpoint)).await?;
        Ok::<_, ProxyError>((endpoint, stream))
    };
    let (endpoint, mut upstream) = match opened.await {
        Ok(o) => o,
        Err(error) => {
            request.refuse(StatusCode::SERVICE_UNAVAILABLE);
            return Err(error);
        }
    };
    let _inflight = InFlight::start(&endpoint);
    shared.metrics.tcp_connections.fetch_add(1, Ordering::Relaxed);
    let mut downstream = request.accept().map_err(ProxyError::Tcp)?;
    tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await.map_err(ProxyError::Tcp)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, F>(_: impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn future_size_5<A, B, C, D, E, F>(_: impl Fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// One of these per CONNECT (the downstream HTTP connection or TCP tunnel), and per
    /// client connection of a gateway listener (`gateway.rs`): kept small so many idle
    /// connections cost little.
    #[test]
    fn a_connection_in_flight_stays_small() {
        // 2,336 bytes when written: hyper's auto server connection or the TCP pump (the
        // HBONE dial of a TCP chain is boxed). A gateway's: hyper's auto server connection.
        let sizes = [
            ("CONNECT", future_size(connect)),
            ("gateway connection", future_size_5(crate::gateway::connection)),
        ];
        for (what, size) in sizes {
            println!("{what} future: {size} bytes");
            assert!(size <= 3 * 1024, "the {what} future grew to {size} bytes");
        }
    }
}
