//! Inbound plaintext: connections to an enrolled pod's ports from outside the mesh,
//! steered by sk_lookup to the agent's :15006 socket in the pod's netns. The accepted
//! socket's local address is the original destination; the agent checks it
//! (`plan::inbound`), connects to the application from the client's own address (so the
//! application sees its real peer) and pumps bytes.

use super::{
    ProxyError,
    admit::admit,
    copy::{self, Carried},
    inbound,
};
use crate::state::{InPod, Shared};
use std::{net::SocketAddr, sync::atomic::Ordering::Relaxed, time::Instant};
use tokio::net::TcpStream;
use tracing::debug;

pub(super) async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    pod: &InPod,
    shared: &Shared,
) -> Result<(), ProxyError> {
    let start = Instant::now();
    let dst = client.local_addr()?;
    // Plaintext: no identity, which PeerAuthentication STRICT refuses.
    let counters = match admit(shared, pod, dst, peer.ip(), None) {
        Ok(counters) => counters,
        Err(refusal) => {
            let _ = client.set_zero_linger();
            return Err(refusal);
        }
    };
    client.set_nodelay(true)?;
    let mut app = match shared.sockets.connect_app(pod, peer.ip(), dst).await {
        Ok(s) => s,
        Err(source) => {
            // Reset rather than close, so the client sees a failed connection as it
            // would have without the mesh, not an empty reply.
            let _ = client.set_zero_linger();
            return Err(ProxyError::Connect { dst, source });
        }
    };
    counters.opened.fetch_add(1, Relaxed);
    debug!(%dst, "inbound connected");
    let carried = Carried::default();
    let (up, down) = carried.counts(&counters);
    let result = copy::bidirectional(&mut client, &mut app, up, down).await;
    if result.is_err() {
        // One side aborted: abort the other, as a direct connection would show it.
        let _ = client.set_zero_linger();
        let _ = app.set_zero_linger();
    }
    counters.closed.fetch_add(1, Relaxed);
    // Plaintext: the client has no identity.
    inbound::log_complete(&peer, None, dst, pod, &carried, start, &result);
    result.map_err(ProxyError::Forwarding)
}
