//! The L4 proxy: one accept loop ([`serve`]) per enrolled pod and direction.
//!
//! - `plan.rs`: the decisions (where a connection goes and how), pure and unit-tested.
//! - `outbound.rs`: the pod's own connections, captured by connect4/6 at 127.0.0.1:15001.
//! - `inbound.rs`: connections to the pod's ports, steered by sk_lookup to :15006.
//! - `copy.rs`: the byte pump, generic over the stream type.
//! - `socket.rs`: opening sockets inside a pod's netns.

pub mod copy;
pub mod inbound;
pub mod outbound;
pub mod plan;
pub mod socket;

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
    #[error("{dst} is reached over HBONE, which this agent cannot originate yet")]
    HboneUnavailable { dst: SocketAddr },
    #[error("cannot open a socket in the pod's netns: {0}")]
    Socket(#[from] crate::netns::NetNsError),
    #[error("connect to {dst} failed: {source}")]
    Connect { dst: SocketAddr, source: std::io::Error },
    #[error("forwarding failed: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyError {
    /// Whether the mesh refused the connection (as opposed to a network failure).
    pub fn is_refusal(&self) -> bool {
        matches!(self, ProxyError::Plan(_) | ProxyError::Refused(_))
    }
}

/// Which of a pod's two capture sockets a loop serves.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// 127.0.0.1:15001: the pod's own connections, redirected by connect4/6.
    Outbound,
    /// 127.0.0.1:15006: connections to the pod's ports, steered by sk_lookup.
    Inbound,
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
                            Direction::Inbound => (
                                inbound::handle(client, peer, &pod, &shared).await,
                                &shared.metrics.inbound_errors,
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
