//! The L4 proxy: one accept loop ([`serve`]) per enrolled pod and listener.
//!
//! - `plan.rs`: the decisions (where a connection goes and how), pure and unit-tested.
//! - `outbound.rs`: the pod's own connections, captured by connect4/6 at 127.0.0.1:15001:
//!   plain TCP, or HBONE to the destination or its waypoint.
//! - `inbound.rs`: HBONE on the pod's :15008: mTLS, CONNECT, policy, to the application.
//! - `inbound_plain.rs`: plaintext connections to the pod's ports from outside the mesh,
//!   steered by sk_lookup to :15006.
//! - `copy.rs`: the byte pump, generic over the stream type (TCP, HBONE).
//! - `sockets.rs`: what the proxy needs from the machine (original destinations, sockets
//!   in pods), and the loopback stand-in the in-process tests use.

mod admit;
pub mod copy;
pub mod inbound;
pub mod inbound_plain;
pub mod outbound;
pub mod plan;
pub mod sockets;

use crate::state::{InPod, Shared};
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, debug_span, warn};

/// Why a proxied connection ended badly. Logged per connection; never fatal to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "no original destination recorded for client {client} (was it captured before the agent started?)"
    )]
    NoOriginalDestination { client: SocketAddr },
    #[error("no route: {0}")]
    Plan(#[from] plan::PlanError),
    #[error("refused: {0}")]
    Refused(#[from] plan::InboundRefusal),
    #[error("{0}")]
    Denied(crate::policy::Denial),
    #[error("{0}")]
    Identity(#[from] crate::identity::IdentityError),
    #[error("pod identity {identity} has no certificate yet; HBONE connections to it are refused")]
    NoCertificate { identity: weft_hbone::Identity },
    // Boxed: HBONE errors are large, and every handler returns this type on its fast path.
    #[error("HBONE: {0}")]
    Hbone(Box<weft_hbone::ConnectError>),
    #[error("HBONE: {0}")]
    HboneServe(Box<weft_hbone::ServeError>),
    #[error("connect to {dst} failed: {source}")]
    Connect { dst: SocketAddr, source: std::io::Error },
    #[error("forwarding failed: {0}")]
    Forwarding(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<weft_hbone::ConnectError> for ProxyError {
    fn from(e: weft_hbone::ConnectError) -> ProxyError {
        ProxyError::Hbone(Box::new(e))
    }
}

impl From<weft_hbone::ServeError> for ProxyError {
    fn from(e: weft_hbone::ServeError) -> ProxyError {
        ProxyError::HboneServe(Box::new(e))
    }
}

impl ProxyError {
    /// Whether the mesh refused the connection (as opposed to a network failure).
    pub fn is_refusal(&self) -> bool {
        matches!(self, ProxyError::Plan(_) | ProxyError::Refused(_) | ProxyError::Denied(_))
    }
}

/// Which of a pod's listeners a loop serves.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// 127.0.0.1:15001: the pod's own connections, redirected by connect4/6.
    Outbound,
    /// 127.0.0.1:15006: plaintext connections to the pod's ports, steered by sk_lookup.
    InboundPlain,
    /// pod IP:15008: HBONE from other pods' agents.
    Hbone,
}

/// Accepts until the task is aborted (pod unenrolled or agent draining) and runs each
/// connection in its own task.
pub async fn serve(listener: TcpListener, pod: Arc<InPod>, shared: Arc<Shared>, direction: Direction) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let guard = shared.drain.guard();
                let (pod, shared) = (pod.clone(), shared.clone());
                let span = debug_span!("connection", ?direction, pod = %pod.workload.name, src = %peer);
                spawn_connection(
                    async move {
                        let _guard = guard;
                        let (result, errors) = match direction {
                            Direction::Outbound => (
                                outbound::handle(client, peer, &pod, &shared).await,
                                &shared.metrics.outbound_errors,
                            ),
                            Direction::InboundPlain => (
                                inbound_plain::handle(client, peer, &pod, &shared).await,
                                &shared.metrics.inbound_errors,
                            ),
                            // Streams are counted and logged one by one inside; what ends
                            // here is the whole HBONE connection.
                            // Boxed: TLS and HTTP/2 server state is large and there are
                            // few of these connections (clients pool them).
                            Direction::Hbone => (
                                Box::pin(inbound::serve(client, pod.clone(), shared.clone())).await,
                                &shared.metrics.hbone_connection_errors,
                            ),
                        };
                        if let Err(error) = result {
                            errors.fetch_add(1, Relaxed);
                            // A refusal is the mesh saying no: worth seeing without debug.
                            if error.is_refusal() {
                                warn!(%error, "connection refused");
                            } else {
                                debug!(%error, "connection failed");
                            }
                        }
                    }
                    .instrument(span),
                );
            }
            Err(error) => {
                warn!(pod = %pod.workload.name, ?direction, %error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// How long accept loops back off after an accept error (e.g. out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Spawns a connection task, checking in debug builds that its future stays small: a
/// per-connection future that grows is a per-connection memory regression on every node.
fn spawn_connection<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    debug_assert!(
        std::mem::size_of_val(&fut) <= 4096,
        "connection future grew to {} bytes",
        std::mem::size_of_val(&fut)
    );
    tokio::spawn(fut);
}
