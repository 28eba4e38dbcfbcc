//! Inbound plaintext: connections to an enrolled pod's ports, steered by sk_lookup to
//! the agent's :15006 socket in the pod's netns. The accepted socket's local address is
//! the original destination; the agent connects to it from inside the pod (source: the
//! pod IP, which sk_lookup lets through) and pumps bytes.

use super::{ProxyError, copy, socket};
use crate::{
    metrics::{Reporter, SeriesKey},
    state::{InPod, Shared},
};
use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::Ordering::Relaxed,
};
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
        let mesh = shared.mesh.load();
        let key = SeriesKey {
            reporter: Reporter::Destination,
            source: Some(peer.ip()),
            destination: Some(IpAddr::V4(pod.ip)),
            service: mesh.service_for(dst).map(|s| s.vip),
        };
        shared.metrics.series(key, &mesh, &shared.trust_domain)
    };
    client.set_nodelay(true)?;
    let mut app = match socket::connect_in(&pod.netns, &shared.host_netns, dst, shared.mark).await {
        Ok(s) => s,
        Err(e) => {
            // Reset rather than close, so the client sees a failed connection as it
            // would have without the mesh, not an empty reply.
            let _ = client.set_zero_linger();
            return Err(e);
        }
    };
    counters.opened.fetch_add(1, Relaxed);
    debug!(%dst, "inbound connected");
    let result = copy::bidirectional(&mut client, &mut app, &counters.received, &counters.sent).await;
    counters.closed.fetch_add(1, Relaxed);
    Ok(result?)
}
