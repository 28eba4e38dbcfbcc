//! Outbound: connections an enrolled pod makes, captured by connect4/6 and accepted on
//! the agent's 127.0.0.1:15001 socket inside the pod's netns.
//!
//! Per connection: find the original destination, plan it (`plan::outbound`), then do
//! what the plan says — a plain TCP connection from the pod, or an HBONE stream (to the
//! destination pod or its waypoint) on a pooled mTLS connection presenting the pod's own
//! certificate — and pump bytes both ways.

use super::{
    ProxyError,
    copy::{self, Carried},
    plan::{self, Protocol, Request},
};
use crate::{
    metrics::{ByPtr, Reporter, SeriesKey, TcpCounters},
    state::{InPod, Shared},
};
use bytes::Bytes;
use std::{
    io,
    net::SocketAddr,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};
use tokio::net::TcpStream;
use tracing::{debug, info};
use weft_hbone::PoolKey;

/// At most this much of the client's first bytes rides with the CONNECT (a request head,
/// a TLS ClientHello); the rest follows through the pump.
const EARLY_MAX: usize = 4096;

/// How long a connection waits for its pod's first certificate (a pod enrolled a moment
/// ago whose CSR is still on its way).
const CERT_WAIT: Duration = Duration::from_secs(10);

pub(super) async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    pod: &InPod,
    shared: &Shared,
) -> Result<(), ProxyError> {
    let start = Instant::now();
    let orig = shared
        .sockets
        .original_destination(pod, peer)
        .ok_or(ProxyError::NoOriginalDestination { client: peer })?;
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
    debug!(%orig, protocol = ?request.protocol, next_hop = %request.next_hop, "outbound planned");
    let carried = Carried::default();
    let result = carry(&mut client, &request, &counters, &carried, pod, shared).await;
    if result.is_err() {
        // Never reached the destination, or the other end aborted: reset, so the client
        // sees a failed connect or a reset as it would without the mesh.
        let _ = client.set_zero_linger();
    }
    let (sent, received) = carried.totals();
    info!(
        target: "access",
        direction = "outbound",
        src.workload = %pod.workload.name,
        src.namespace = %pod.workload.namespace,
        src.identity = %pod.workload.identity,
        dst.addr = %orig,
        dst.hbone_addr = %request.authority,
        dst.service = request.service.as_ref().map_or("", |s| s.hostname.as_str()),
        dst.workload = request.destination.as_ref().map_or("", |w| w.name.as_str()),
        dst.identity = request.destination.as_ref().map(|w| tracing::field::display(&w.identity)),
        protocol = ?request.protocol,
        bytes_sent = sent,
        bytes_recv = received,
        duration = ?start.elapsed(),
        error = result.as_ref().err().map(tracing::field::display),
        "connection complete"
    );
    result
}

/// Does what the plan says; `counters` count the connection once it is open.
async fn carry(
    client: &mut TcpStream,
    request: &Request,
    counters: &TcpCounters,
    carried: &Carried,
    pod: &InPod,
    shared: &Shared,
) -> Result<(), ProxyError> {
    // Client → destination is "received", as Istio counts a source reporter's bytes.
    let (up, down) = carried.counts(counters);
    match request.protocol {
        Protocol::Tcp => {
            let mut upstream = shared
                .sockets
                .connect(pod, request.next_hop)
                .await
                .map_err(|source| ProxyError::Connect { dst: request.next_hop, source })?;
            counters.opened.fetch_add(1, Relaxed);
            let result = copy::bidirectional(client, &mut upstream, up, down).await;
            if result.is_err() {
                // The client aborted (or the pump failed): abort upstream too, rather than
                // end it with a FIN the client never sent.
                let _ = upstream.set_zero_linger();
            }
            counters.closed.fetch_add(1, Relaxed);
            result.map_err(ProxyError::Forwarding)
        }
        Protocol::Hbone | Protocol::ViaWaypoint => {
            let Some(next) = &request.next_hop_workload else {
                unreachable!("plan::outbound names the workload at every HBONE next hop")
            };
            let slot = pod.cert.as_ref().ok_or(crate::identity::IdentityError::NoCa)?;
            let cert = slot.get(&pod.workload.identity, CERT_WAIT).await?;
            let key = PoolKey {
                src: pod.workload.identity.clone(),
                dst: next.identity.clone(),
                dst_addr: request.next_hop,
                extra: pod.netns_cookie,
            };
            let next_hop = request.next_hop;
            let early = early_bytes(client)?;
            let early_len = early.len() as u64;
            // Boxed: dialling, TLS and HTTP/2 set-up make a large future that is done
            // once the stream is open; boxed, it does not swell every idle connection.
            let stream = Box::pin(shared.pool.connect_with_data(
                &key,
                &cert.cert,
                shared.secrets.roots()?,
                request.authority,
                early,
                || shared.sockets.connect(pod, next_hop),
            ))
            .await?;
            counters.opened.fetch_add(1, Relaxed);
            up.add(early_len);
            let result = copy::tcp_hbone(client, stream, up, down).await;
            counters.closed.fetch_add(1, Relaxed);
            result.map_err(ProxyError::Forwarding)
        }
    }
}

/// What the client has already sent, read without waiting (most clients speak first, right
/// after connecting): it travels with the CONNECT. Empty when nothing is there yet; the
/// buffer is allocated only when there is something to keep.
fn early_bytes(client: &TcpStream) -> io::Result<Bytes> {
    let mut buf = [0u8; EARLY_MAX];
    match client.try_read(&mut buf) {
        // Ok(0) is an EOF, which the pump will read again and pass on as such.
        Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
        Err(e) => Err(e),
    }
}
