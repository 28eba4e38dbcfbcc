//! Outbound: connections an enrolled pod makes, captured by connect4/6 and accepted on
//! the agent's 127.0.0.1:15001 socket inside the pod's netns.
//!
//! Per connection: find the original destination (eBPF map, keyed by the client
//! address), resolve a service VIP to an endpoint, connect from inside the pod's netns,
//! then pump bytes both ways.

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
    let SocketAddr::V4(peer4) = peer else {
        return Err(ProxyError::NoOriginalDestination { client: peer });
    };
    let orig = shared
        .orig_dst
        .lookup(pod.netns_cookie, peer4)
        .ok_or(ProxyError::NoOriginalDestination { client: peer })?;
    let (target, counters) = {
        let mesh = shared.mesh.load();
        let ep = mesh.resolve(orig.into()).ok_or(ProxyError::NoEndpoint { dst: orig.into() })?;
        let key = SeriesKey {
            reporter: Reporter::Source,
            source: Some(IpAddr::V4(pod.ip)),
            destination: Some(ep.addr.ip()),
            service: ep.service.map(|s| s.vip),
        };
        (ep.addr, shared.metrics.series(key, &mesh, &shared.trust_domain))
    };
    client.set_nodelay(true)?;
    let mut upstream = match socket::connect_in(&pod.netns, &shared.host_netns, target, shared.mark).await {
        Ok(s) => s,
        Err(e) => {
            // Reset rather than close, so the client sees a failed connection as it
            // would have without the mesh, not an empty reply.
            let _ = client.set_zero_linger();
            return Err(e);
        }
    };
    counters.opened.fetch_add(1, Relaxed);
    debug!(dst = %target, orig = %orig, "outbound connected");
    let result = copy::bidirectional(&mut client, &mut upstream, &counters.received, &counters.sent).await;
    counters.closed.fetch_add(1, Relaxed);
    Ok(result?)
}
