//! Inbound HBONE: the agent's socket on each enrolled pod's address, port 15008.
//!
//! Per TCP connection: TLS with the pod's own certificate, the client's chain verified
//! against the mesh root and its SPIFFE identity read from it, then HTTP/2. Per CONNECT:
//! the authority must be an address of this pod and not one of the mesh's ports
//! (`plan::inbound`), the connection must be allowed by policy, then the agent connects
//! to the application from the client's own address and answers 200 — or 400, 401/403,
//! 503 — and pumps bytes.

use super::{
    ProxyError,
    admit::admit,
    copy::{self, Carried},
};
use crate::state::{InPod, Shared};
use http::StatusCode;
use std::{sync::Arc, sync::atomic::Ordering::Relaxed, time::Instant};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};
use weft_hbone::HboneRequest;

/// Serves one accepted connection on the pod's :15008 until the client leaves (or the
/// agent drains: then GOAWAY, and the streams in flight finish).
pub(super) async fn serve(tcp: TcpStream, pod: Arc<InPod>, shared: Arc<Shared>) -> Result<(), ProxyError> {
    let Some(cert) = pod.cert.as_ref().and_then(|slot| slot.current()) else {
        // Without its certificate the pod cannot prove who it is: refuse the connection.
        return Err(ProxyError::NoCertificate { identity: pod.workload.identity.clone() });
    };
    let drain = shared.drain.clone();
    let settings = shared.hbone.clone();
    weft_hbone::serve_connection(
        tcp,
        cert.server_config.clone(),
        &settings,
        drain.stopping(),
        move |request| {
            let (pod, shared) = (pod.clone(), shared.clone());
            let guard = shared.drain.guard();
            async move {
                let _guard = guard;
                let peer = request.peer_identity().clone();
                let authority = request.authority();
                if let Err(error) = handle(request, &pod, &shared).await {
                    shared.metrics.inbound_errors.fetch_add(1, Relaxed);
                    if error.is_refusal() {
                        warn!(src.identity = %peer, %authority, %error, "inbound HBONE connection refused");
                    } else {
                        debug!(src.identity = %peer, %authority, %error, "inbound HBONE connection failed");
                    }
                }
            }
        },
    )
    .await
    .map_err(ProxyError::from)
}

async fn handle(request: HboneRequest, pod: &InPod, shared: &Shared) -> Result<(), ProxyError> {
    let start = Instant::now();
    let client_ip = request.peer_addr().ip();
    let dst = request.authority();
    let counters = match admit(shared, pod, dst, client_ip, Some(request.peer_identity_shared())) {
        Ok(counters) => counters,
        Err(refusal) => {
            // As ztunnel: 400 for a destination that is not this pod's, 401 for policy.
            let status = if matches!(refusal, ProxyError::Denied(_)) {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            request.refuse(status);
            return Err(refusal);
        }
    };
    let mut app = match shared.sockets.connect_app(pod, client_ip, dst).await {
        Ok(app) => app,
        Err(source) => {
            // As ztunnel: the application did not take the connection.
            request.refuse(StatusCode::SERVICE_UNAVAILABLE);
            return Err(ProxyError::Connect { dst, source });
        }
    };
    let identity = request.peer_identity_shared().clone();
    let stream = request.accept()?;
    counters.opened.fetch_add(1, Relaxed);
    // Client → server is HBONE → app: "received", as Istio counts it.
    let carried = Carried::default();
    let (up, down) = carried.counts(&counters);
    let result = copy::tcp_hbone(&mut app, stream, down, up).await;
    if result.is_err() {
        // The client reset its stream (its own connection was reset) or the pump failed:
        // the application sees a reset, as it would without the mesh, not an orderly
        // close. This also spares the agent's socket a TIME_WAIT in the pod's netns,
        // which would slow the next transparent bind.
        let _ = app.set_zero_linger();
    }
    counters.closed.fetch_add(1, Relaxed);
    log_complete(&client_ip, Some(&*identity), dst, pod, &carried, start, &result);
    result.map_err(ProxyError::Forwarding)
}

/// An inbound connection's access-log line, as ztunnel's: both ends, the client's
/// identity if it proved one (HBONE) and the bytes each way.
pub(super) fn log_complete(
    src: &dyn std::fmt::Display,
    identity: Option<&weft_hbone::Identity>,
    dst: std::net::SocketAddr,
    pod: &InPod,
    carried: &Carried,
    start: Instant,
    result: &std::io::Result<()>,
) {
    let (sent, received) = carried.totals();
    info!(
        target: "access",
        direction = "inbound",
        src.addr = %src,
        src.identity = identity.map(tracing::field::display),
        dst.addr = %dst,
        dst.workload = %pod.workload.name,
        dst.namespace = %pod.workload.namespace,
        bytes_sent = sent,
        bytes_recv = received,
        duration = ?start.elapsed(),
        error = result.as_ref().err().map(tracing::field::display),
        "connection complete"
    );
}
