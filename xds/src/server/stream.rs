//! The life of one ADS stream, shared by both protocol flavours: wait for the first request
//! (it names the proxy), check that the authenticated caller may claim that proxy, register,
//! then react to requests and to new snapshots until the client leaves or the server shuts
//! down. The protocol modules only turn events into responses; they never await.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tonic::Status;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Shared;
use super::auth::StreamCaller;
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

/// A large push in flight on this stream: the permit it holds until the proxy answers, and
/// when the server stops waiting for that answer.
struct LargePush {
    _permit: OwnedSemaphorePermit,
    deadline: Instant,
}

/// `caller` is who authenticated the call (`None` on an unauthenticated service).
pub(crate) async fn run<P: StreamProtocol>(
    shared: Arc<Shared>,
    caller: Option<Arc<dyn StreamCaller>>,
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
    if let Some(caller) = &caller
        && let Err(status) = caller.authorize(&identity)
    {
        // Nothing was sent and nothing is registered: the proxy learns only the status.
        debug!(protocol = P::PROTOCOL.as_str(), proxy = identity.id, %caller, %status, "stream refused");
        let _ = tx.send(Err(status)).await;
        return;
    }
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
            caller = caller.as_ref().map(ToString::to_string).unwrap_or_default(),
            "proxy connected"
        );
        let mut live = shared.live.clone();
        let mut current = live.borrow_and_update().clone();
        let mut protocol = P::new(Arc::clone(&shared), connection);
        let mut out = Vec::new();
        // When the stream began making what is in `out`, and the change behind it if a
        // new snapshot was: for push time and convergence.
        let mut began = std::time::Instant::now();
        let mut change: Option<std::time::Instant> = None;
        handle(&mut protocol, first, current.as_ref(), &mut out);

        // Held while a large response on this stream awaits its ACK: a thousand proxies
        // connecting at once then cost the memory of a few full states in flight, not of a
        // thousand (istiod's PILOT_PUSH_THROTTLE plays the same part). A proxy that never
        // answers would hold its permit for ever and, with a few like it, stall every other
        // proxy's first configuration: past the deadline the stream is closed instead.
        let mut large: Option<LargePush> = None;
        let ack_timeout = shared.large_push_ack_timeout;
        let reason = 'stream: loop {
            for response in out.drain(..) {
                let (type_url, bytes) = (response.type_url().to_owned(), response.encoded_len());
                if large.is_none() && response.len() >= LARGE_RESPONSE {
                    tokio::select! {
                        biased;
                        _ = stopped(&mut shutdown) => break 'stream "server shutting down",
                        permit = Arc::clone(&shared.large_pushes).acquire_owned() => {
                            large = permit.ok().map(|permit| LargePush {
                                _permit: permit,
                                deadline: Instant::now() + ack_timeout,
                            });
                        }
                    }
                }
                // A proxy that stops reading must not hold a permit past its deadline either.
                tokio::select! {
                    biased;
                    _ = stopped(&mut shutdown) => break 'stream "server shutting down",
                    () = deadline(large.as_ref()) => {
                        break 'stream ack_timed_out(&tx, ack_timeout);
                    }
                    sent = tx.send(Ok(response)) => if sent.is_err() {
                        break 'stream "client stopped reading";
                    }
                }
                shared.metrics.pushed(&type_url, bytes, began.elapsed(), change.map(|c| c.elapsed()));
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
                () = deadline(large.as_ref()) => break ack_timed_out(&tx, ack_timeout),
                message = requests.message() => match message {
                    Ok(Some(request)) => {
                        (began, change) = (std::time::Instant::now(), None);
                        handle(&mut protocol, request, current.as_ref(), &mut out)
                    }
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
                        (began, change) = (std::time::Instant::now(), Some(snapshot.changed_at));
                        protocol.on_snapshot(snapshot, &mut out);
                    }
                }
            }
        };
        drop(large);
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

/// Resolves at the large push's deadline; never without one.
async fn deadline(large: Option<&LargePush>) {
    match large {
        Some(push) => tokio::time::sleep_until(push.deadline).await,
        None => std::future::pending().await,
    }
}

/// Ends a stream whose large push went unanswered: DEADLINE_EXCEEDED, as istiod ends a
/// push it cannot deliver in time. The client reconnects and is served afresh, in turn.
fn ack_timed_out<R>(tx: &mpsc::Sender<Result<R, Status>>, timeout: Duration) -> &'static str {
    warn!(
        timeout_ms = timeout.as_millis() as u64,
        "no ACK or NACK for a large push in time; closing the stream so other proxies get their configuration"
    );
    // `try_send`: a proxy that stopped reading has a full queue, and the stream ends anyway.
    let _ = tx.try_send(Err(Status::deadline_exceeded(format!(
        "no ACK or NACK within {timeout:?} of a large push; reconnect"
    ))));
    "large push not acknowledged in time"
}

/// Resolves once `flag` turns true or its sender is gone. Wrapping `wait_for` drops the
/// (non-`Send`) borrow guard it returns before the future completes.
pub(crate) async fn stopped(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}
