//! Outbound: connections an enrolled pod makes, captured by connect4/6 and accepted on
//! the agent's 127.0.0.1:15001 socket inside the pod's netns.
//!
//! Per connection: find the original destination (eBPF map, keyed by the client
//! address), plan it (`plan::outbound`: plain TCP, HBONE, or through a waypoint), then do
//! what the plan says and pump bytes both ways.

use super::{
    ProxyError, copy,
    plan::{self, Protocol},
    socket,
};
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
    let SocketAddr::V4(peer4) = peer else {
        return Err(ProxyError::NoOriginalDestination { client: peer });
    };
    let orig: SocketAddr = shared
        .orig_dst
        .lookup(pod.netns_cookie, peer4)
        .ok_or(ProxyError::NoOriginalDestination { client: peer })?
        .into();
    let (request, counters) = {
        let state = shared.state.load();
        let source = state.workload_by_ip(pod.ip.into()).unwrap_or(&pod.workload);
        let request = match plan::outbound(orig, source, &state) {
            Ok(r) => r,
            Err(e) => {
                // Reset rather than close, so the client sees a refused connection, as
                // it would have without the mesh.
                let _ = client.set_zero_linger();
                return Err(e.into());
            }
        };
        let key = SeriesKey {
            source: Some(ByPtr(source.clone())),
            destination: request.destination.clone().map(ByPtr),
            service: request.service.clone().map(ByPtr),
            destination_ip: Some(request.authority.ip()),
            ..SeriesKey::new(Reporter::Source, request.protocol != Protocol::Tcp)
        };
        (request, shared.metrics.series(key))
    };
    client.set_nodelay(true)?;
    debug!(orig = %orig, protocol = ?request.protocol, next_hop = %request.next_hop, "outbound planned");
    let result = match request.protocol {
        Protocol::Tcp => {
            let mut upstream =
                socket::connect_in(&pod.netns, &shared.host_netns, request.next_hop, shared.mark)
                    .await
                    .inspect_err(|_| {
                        let _ = client.set_zero_linger();
                    })?;
            counters.opened.fetch_add(1, Relaxed);
            copy::bidirectional(&mut client, &mut upstream, &counters.received, &counters.sent).await
        }
        Protocol::Hbone => {
            // WIP-PLAIN: plain TCP to the authority until weft-hbone lands.
            let mut upstream =
                socket::connect_in(&pod.netns, &shared.host_netns, request.authority, shared.mark)
                    .await
                    .inspect_err(|_| {
                        let _ = client.set_zero_linger();
                    })?;
            counters.opened.fetch_add(1, Relaxed);
            copy::bidirectional(&mut client, &mut upstream, &counters.received, &counters.sent).await
        }
        Protocol::ViaWaypoint => {
            let _ = client.set_zero_linger();
            return Err(ProxyError::HboneUnavailable { dst: request.authority });
        }
    };
    counters.closed.fetch_add(1, Relaxed);
    Ok(result?)
}
