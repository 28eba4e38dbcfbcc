//! The L4 proxy: one accept loop per enrolled pod and direction.
//!
//! - `outbound.rs`: the pod's own connections, captured by connect4/6 at 127.0.0.1:15001.
//! - `inbound.rs`: connections to the pod's ports, steered by sk_lookup to :15006.
//! - `copy.rs`: the byte pump both share.
//! - `socket.rs`: opening upstream sockets inside a pod's netns.

pub mod copy;
pub mod inbound;
pub mod outbound;
pub mod socket;

use std::{net::SocketAddr, time::Duration};

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
