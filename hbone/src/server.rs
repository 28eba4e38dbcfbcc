//! The HBONE server: serves one accepted TCP connection — TLS (client certificate
//! required), the client's identity, HTTP/2 — and hands each CONNECT to the caller's
//! handler in a task of its own.
//!
//! The handler sees the peer's identity and address, the CONNECT authority as a
//! `SocketAddr`, and the request headers, and decides: [`HboneRequest::refuse`] with a
//! status (401, 403, 503, ...) or [`HboneRequest::accept`], which answers 200 and gives
//! the stream to pump. So the agent can check the authority, evaluate policy, connect to
//! the application, and only then answer 200 or 503 (as ztunnel's `inbound.rs` does).
//!
//! Requests that are not CONNECT get 405, an authority that is not `ip:port` gets 400;
//! the handler never sees them. One stream's failure does not touch the others.

use crate::{
    identity::Identity,
    settings::Settings,
    stream::H2Stream,
    tls::{self, TlsError},
};
use bytes::Bytes;
use h2::{RecvStream, server::SendResponse};
use http::{HeaderMap, Method, Response, StatusCode};
use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, warn};

/// Why serving a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS handshake failed; the reason names whose certificate and why.
    #[error("TLS handshake with {peer} failed: {source}")]
    Tls {
        peer: SocketAddr,
        #[source]
        source: TlsError,
    },
    /// The client did not finish the TLS handshake in time.
    #[error("TLS handshake with {peer} did not finish within {timeout:?}")]
    HandshakeTimeout { peer: SocketAddr, timeout: Duration },
    /// HTTP/2 failed (handshake or connection).
    #[error("HTTP/2 with {peer} ({identity}) failed: {source}")]
    Http2 {
        peer: SocketAddr,
        identity: Identity,
        #[source]
        source: h2::Error,
    },
    /// The client stopped answering PINGs.
    #[error("{peer} ({identity}) stopped answering HTTP/2 PINGs: {reason}")]
    Unresponsive { peer: SocketAddr, identity: Identity, reason: String },
}

/// One CONNECT request, for the handler to refuse or accept.
pub struct HboneRequest {
    peer_identity: Arc<Identity>,
    peer_addr: SocketAddr,
    authority: SocketAddr,
    headers: HeaderMap,
    recv: Option<RecvStream>,
    respond: Option<SendResponse<Bytes>>,
}

impl std::fmt::Debug for HboneRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneRequest")
            .field("peer_identity", &self.peer_identity.to_string())
            .field("peer_addr", &self.peer_addr)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl HboneRequest {
    /// The client's SPIFFE identity, from its verified certificate.
    pub fn peer_identity(&self) -> &Identity {
        &self.peer_identity
    }

    /// The same, shared by every request of the connection (cloning it is a reference
    /// count, not a copy).
    pub fn peer_identity_shared(&self) -> &Arc<Identity> {
        &self.peer_identity
    }

    /// The client's TCP address (the source pod's IP when the client agent binds it).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Where the client wants to go: the CONNECT `:authority`.
    pub fn authority(&self) -> SocketAddr {
        self.authority
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Answers with `status` (a refusal: 401, 403, 503, ...) and ends the stream.
    pub fn refuse(mut self, status: StatusCode) {
        if let Some(respond) = self.respond.take() {
            answer(respond, status);
        }
    }

    /// Answers 200 and returns the tunnel.
    pub fn accept(mut self) -> io::Result<H2Stream> {
        let (Some(mut respond), Some(recv)) = (self.respond.take(), self.recv.take()) else {
            return Err(io::Error::other("HBONE request already answered"));
        };
        let send = respond.send_response(Response::new(()), false).map_err(crate::stream::h2_error)?;
        Ok(H2Stream::new(send, recv, None))
    }
}

impl Drop for HboneRequest {
    /// A handler that drops the request unanswered (it returned early or panicked) leaves
    /// the client with a 503, not a hanging stream.
    fn drop(&mut self) {
        if let Some(respond) = self.respond.take() {
            debug!(authority = %self.authority, "HBONE request dropped unanswered; answering 503");
            answer(respond, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}

fn answer(mut respond: SendResponse<Bytes>, status: StatusCode) {
    let mut response = Response::new(());
    *response.status_mut() = status;
    // Fails only if the client already reset the stream; nothing is left to tell it.
    let _ = respond.send_response(response, true);
}

/// Serves one accepted TCP connection until the client closes it, it fails, or
/// `shutdown` resolves (then GOAWAY is sent and the streams in flight finish).
///
/// `handler` runs in a task per CONNECT. A failed TLS handshake is logged (with the peer
/// address and the reason; certificate problems as warnings) and returned.
pub async fn serve_connection<H, Fut>(
    tcp: TcpStream,
    tls_config: Arc<rustls::ServerConfig>,
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> Result<(), ServeError>
where
    H: Fn(HboneRequest) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let peer = tcp.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let _ = tcp.set_nodelay(true);
    let timeout = settings.handshake_timeout;
    let (tls_stream, identity) = match tokio::time::timeout(timeout, tls::accept(tls_config, tcp)).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(source)) => {
            if source.is_certificate_problem() {
                warn!(%peer, reason = %source, "HBONE TLS handshake refused");
            } else {
                debug!(%peer, reason = %source, "HBONE TLS handshake failed");
            }
            return Err(ServeError::Tls { peer, source });
        }
        Err(_) => {
            debug!(%peer, ?timeout, "HBONE TLS handshake timed out");
            return Err(ServeError::HandshakeTimeout { peer, timeout });
        }
    };
    let span = tracing::debug_span!("hbone_inbound", %peer, identity = %identity);
    serve_h2(tls_stream, peer, identity, settings, shutdown, handler).instrument(span).await
}

async fn serve_h2<H, Fut>(
    io: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
    identity: Identity,
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> Result<(), ServeError>
where
    H: Fn(HboneRequest) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let http2 = |source| ServeError::Http2 { peer, identity: identity.clone(), source };
    let mut conn = settings.server_builder().handshake::<_, Bytes>(io).await.map_err(http2)?;
    let identity = Arc::new(identity.clone());
    let keepalive =
        crate::keepalive::run(conn.ping_pong(), settings.keepalive_interval, settings.keepalive_timeout);
    tokio::pin!(keepalive, shutdown);
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            next = conn.accept() => {
                let (request, respond) = match next {
                    None => return Ok(()),
                    Some(Ok(accepted)) => accepted,
                    Some(Err(e)) => {
                        return Err(ServeError::Http2 { peer, identity: (*identity).clone(), source: e });
                    }
                };
                if let Some(request) = check(request, respond, &identity, peer) {
                    tokio::spawn(handler(request).in_current_span());
                }
            }
            () = &mut shutdown, if !draining => {
                debug!("draining HBONE connection");
                conn.graceful_shutdown();
                draining = true;
            }
            failure = &mut keepalive => {
                debug!(%failure, "HBONE client unresponsive; closing");
                conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                return Err(ServeError::Unresponsive { peer, identity: (*identity).clone(), reason: failure.to_string() });
            }
        }
    }
}

/// Answers what is not a CONNECT to an `ip:port` itself; hands the rest on.
fn check(
    request: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    identity: &Arc<Identity>,
    peer: SocketAddr,
) -> Option<HboneRequest> {
    if request.method() != Method::CONNECT {
        debug!(method = %request.method(), "HBONE request is not CONNECT; answering 405");
        answer(respond, StatusCode::METHOD_NOT_ALLOWED);
        return None;
    }
    let authority = request.uri().authority().map(|a| a.as_str().parse::<SocketAddr>());
    let Some(Ok(authority)) = authority else {
        debug!(authority = ?request.uri().authority(), "HBONE CONNECT authority is not ip:port; answering 400");
        answer(respond, StatusCode::BAD_REQUEST);
        return None;
    };
    let (parts, recv) = request.into_parts();
    Some(HboneRequest {
        peer_identity: identity.clone(),
        peer_addr: peer,
        authority,
        headers: parts.headers,
        recv: Some(recv),
        respond: Some(respond),
    })
}
