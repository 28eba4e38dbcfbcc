//! The L4 proxy: one accept loop ([`serve`]) per enrolled pod and direction.
//!
//! - `outbound.rs`: the pod's own connections, captured by connect4/6 at 127.0.0.1:15001.
//! - `inbound.rs`: connections to the pod's ports, steered by sk_lookup to :15006.
//! - `copy.rs`: the byte pump both share.
//! - `socket.rs`: opening upstream sockets inside a pod's netns.

pub mod copy;
pub mod inbound;
pub mod outbound;
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
    #[error("service address {dst} has no endpoint for that port")]
    NoEndpoint { dst: SocketAddr },
    #[error("cannot open a socket in the pod's netns: {0}")]
    Socket(#[from] crate::netns::NetNsError),
    #[error("connect to {dst} failed: {source}")]
    Connect { dst: SocketAddr, source: std::io::Error },
    #[error("forwarding failed: {0}")]
    Io(#[from] std::io::Error),
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
                let span = debug_span!("connection", ?direction, pod = %pod.name, src = %peer);
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
                            debug!(%error, "connection failed");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(error) => {
                warn!(pod = %pod.name, ?direction, %error, "accept failed");
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
