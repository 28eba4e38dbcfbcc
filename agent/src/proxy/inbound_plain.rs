//! Inbound plaintext: connections to an enrolled pod's ports from outside the mesh,
//! steered by sk_lookup to the agent's :15006 socket in the pod's netns. The accepted
//! socket's local address is the original destination; the agent checks it
//! (`plan::inbound`), connects to the application from the client's own address (so the
//! application sees its real peer) and pumps bytes.

use super::{ProxyError, authorize::authorize, copy, plan};
use crate::policy::ConnectionAttrs;
use crate::{
    metrics::{ByPtr, Reporter, SeriesKey},
    state::{InPod, Shared},
};
use std::{net::SocketAddr, sync::atomic::Ordering::Relaxed};
use tokio::net::TcpStream;
use tracing::debug;

pub(super) async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    pod: &InPod,
    shared: &Shared,
) -> Result<(), ProxyError> {
    let dst = client.local_addr()?;
    let counters = {
        let state = shared.state.load();
        let this = state.workload_by_ip(pod.ip.into()).unwrap_or(&pod.workload);
        if let Err(refusal) = plan::inbound(dst, this) {
            let _ = client.set_zero_linger();
            return Err(refusal.into());
        }
        let key = SeriesKey {
            source: state.workload_by_ip(peer.ip()).cloned().map(ByPtr),
            destination: Some(ByPtr(this.clone())),
            service: state
                .services_of(this)
                .find(|s| s.ports.iter().any(|p| p.target_port == dst.port()))
                .cloned()
                .map(ByPtr),
            destination_ip: Some(dst.ip()),
            ..SeriesKey::new(Reporter::Destination, false)
        };
        // Plaintext: no identity, which PeerAuthentication STRICT refuses.
        let conn = ConnectionAttrs {
            source_identity: None,
            source_ip: peer.ip(),
            destination_ip: dst.ip(),
            destination_port: dst.port(),
        };
        if let Err(denied) = authorize(shared, &conn, this, &key) {
            let _ = client.set_zero_linger();
            return Err(denied);
        }
        shared.metrics.series(key)
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
    let result = copy::bidirectional(&mut client, &mut app, &counters.received, &counters.sent).await;
    counters.closed.fetch_add(1, Relaxed);
    result.map_err(ProxyError::Forwarding)
}
