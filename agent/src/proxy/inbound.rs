//! Inbound plaintext: connections to an enrolled pod's ports, steered by sk_lookup to
//! the agent's :15006 socket in the pod's netns. The accepted socket's local address is
//! the original destination; the agent connects to it from inside the pod (source: the
//! pod IP, which sk_lookup lets through) and pumps bytes.

use super::{ACCEPT_BACKOFF, ProxyError, copy, socket, spawn_connection};
use crate::{
    metrics::{Reporter, SeriesKey},
    state::{InPod, Shared},
};
use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering::Relaxed},
};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, debug_span, warn};

/// Accepts until the task is aborted (pod unenrolled or agent draining). Dropping the
/// listener empties its SOCKMAP slot, and sk_lookup then refuses the pod's ports.
pub async fn serve(listener: TcpListener, pod: Arc<InPod>, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let guard = shared.drain.guard();
                let (pod, shared) = (pod.clone(), shared.clone());
                let span = debug_span!("inbound", pod = %pod.name, src = %peer);
                spawn_connection(
                    async move {
                        let _guard = guard;
                        if let Err(error) = handle(client, peer, &pod, &shared).await {
                            shared.metrics.inbound_errors.fetch_add(1, Relaxed);
                            debug!(%error, "inbound connection failed");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(error) => {
                warn!(pod = %pod.name, %error, "inbound accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn handle(
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
