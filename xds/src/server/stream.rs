//! The life of one ADS stream, shared by both protocol flavours: wait for the first request
//! (it names the proxy), register, then react to requests and to new snapshots until the
//! client leaves or the server shuts down. The protocol modules only turn events into
//! responses; they never await.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Shared;
use super::identity::ProxyIdentity;
use super::prepared::Prepared;
use super::status::{Connection, Protocol};
use super::wire::Outgoing as _;

/// One protocol flavour's reaction to events. Responses are appended to `out` and sent by the
/// driver afterwards, so no lock is ever held across a send.
pub(crate) trait StreamProtocol: Send + 'static {
    type Request: prost::Message + Default + Send + 'static;
    type Response: super::wire::Outgoing;
    const PROTOCOL: Protocol;

    fn node(request: &Self::Request) -> Option<&Node>;
    /// The request's `type_url`; requests without one are dropped before `on_request`.
    fn type_url(request: &Self::Request) -> &str;
    fn new(shared: Arc<Shared>, connection: Arc<Connection>) -> Self;
    /// Handles a request; `snapshot` is the newest snapshot this stream has seen, if any.
    fn on_request(
        &mut self,
        request: Self::Request,
        snapshot: Option<&Arc<Prepared>>,
        out: &mut Vec<Self::Response>,
    );
    /// Brings every subscribed type to `snapshot`.
    fn on_snapshot(&mut self, snapshot: &Arc<Prepared>, out: &mut Vec<Self::Response>);
    /// Whether a response sent on this stream is not acknowledged yet.
    fn awaiting_ack(&self) -> bool;
}

pub(crate) async fn run<P: StreamProtocol>(
    shared: Arc<Shared>,
    mut requests: super::grpc::Requests<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
) {
    let mut shutdown = shared.shutdown.clone();
    let first = tokio::select! {
        _ = stopped(&mut shutdown) => return,
        message = requests.message() => match message {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(status) => {
                debug!(protocol = P::PROTOCOL.as_str(), %status, "stream ended before its first request");
                return;
            }
        },
    };
    let identity = ProxyIdentity::from_node(P::node(&first));
    let registration = shared.registry.register(identity, P::PROTOCOL);
    let connection = Arc::clone(registration.connection());
    let span = info_span!(
        "xds_stream",
        conn = connection.id,
        proxy = %connection.identity.id,
        protocol = P::PROTOCOL.as_str(),
    );
    async move {
        info!(
            node_name = connection.identity.node_name.as_deref().unwrap_or(""),
            namespace = connection.identity.namespace.as_deref().unwrap_or(""),
            "proxy connected"
        );
        let mut live = shared.live.clone();
        let mut current = live.borrow_and_update().clone();
        let mut protocol = P::new(Arc::clone(&shared), connection);
        let mut out = Vec::new();
        handle(&mut protocol, first, current.as_ref(), &mut out);

        // Held while a large response on this stream awaits its ACK: a thousand proxies
        // connecting at once then cost the memory of a few full states in flight, not of a
        // thousand (istiod's PILOT_PUSH_THROTTLE plays the same part).
        let mut large: Option<tokio::sync::OwnedSemaphorePermit> = None;
        let reason = 'stream: loop {
            for response in out.drain(..) {
                if large.is_none() && response.len() >= LARGE_RESPONSE {
                    tokio::select! {
                        biased;
                        _ = stopped(&mut shutdown) => break 'stream "server shutting down",
                        permit = Arc::clone(&shared.large_pushes).acquire_owned() => {
                            large = permit.ok();
                        }
                    }
                }
                if tx.send(Ok(response)).await.is_err() {
                    break 'stream "client stopped reading";
                }
            }
            if large.is_some() && !protocol.awaiting_ack() {
                large = None;
            }
            tokio::select! {
                // Shutdown first, so a busy stream cannot starve it.
                biased;
                _ = stopped(&mut shutdown) => {
                    let _ = tx.send(Err(Status::unavailable("xDS server is shutting down; reconnect"))).await;
                    break "server shutting down";
                }
                message = requests.message() => match message {
                    Ok(Some(request)) => handle(&mut protocol, request, current.as_ref(), &mut out),
                    Ok(None) => break "client closed the stream",
                    Err(status) => {
                        debug!(%status, "request stream failed");
                        break "request stream failed";
                    }
                },
                changed = live.changed() => {
                    if changed.is_err() {
                        let _ = tx.send(Err(Status::unavailable("xDS server stopped publishing; reconnect"))).await;
                        break "server stopped publishing";
                    }
                    current = live.borrow_and_update().clone();
                    if let Some(snapshot) = &current {
                        protocol.on_snapshot(snapshot, &mut out);
                    }
                }
            }
        };
        info!(reason, "proxy disconnected");
        drop(registration);
    }
    .instrument(span)
    .await;
}

/// Passes a request to the protocol, unless it lacks the `type_url` ADS requires on every
/// request (there is nothing to do with it).
fn handle<P: StreamProtocol>(
    protocol: &mut P,
    request: P::Request,
    snapshot: Option<&Arc<Prepared>>,
    out: &mut Vec<P::Response>,
) {
    if P::type_url(&request).is_empty() {
        warn!("request without type_url ignored: ADS requires it on every request");
        return;
    }
    protocol.on_request(request, snapshot, out);
}

/// Responses with at least this many resources count against the server's limit of large
/// pushes in flight.
const LARGE_RESPONSE: usize = 1024;

/// Resolves once `flag` turns true or its sender is gone. Wrapping `wait_for` drops the
/// (non-`Send`) borrow guard it returns before the future completes.
pub(crate) async fn stopped(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}
