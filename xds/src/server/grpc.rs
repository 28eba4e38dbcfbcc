//! Envoy's `AggregatedDiscoveryService` on HTTP/2, written out rather than generated: the
//! server frames its own messages (`crate::frame`), so responses are encoded from the
//! snapshot's shared resources (`wire.rs`) and every message buffer, in or out, is freed
//! once handled. (tonic's generated service would keep one growing buffer per stream and
//! direction, as large as the largest message: a full state per connected proxy.)

use std::collections::VecDeque;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::Frame;
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{Body as HttpBody, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;

use super::Shared;
use super::auth::{StreamAuthenticator, StreamCall, peer_address};
use super::stream::{self, StreamProtocol};
use super::wire::Outgoing;
use super::{Handles, delta::Delta, sotw::Sotw};
use crate::frame::Deframer;

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The ADS service of an [`XdsServer`](super::XdsServer); mount it with
/// `Server::builder().add_service(xds.service())`.
#[derive(Clone)]
pub struct AdsService {
    pub(super) shared: Arc<Shared>,
    /// Keeps the server alive while mounted, even if the caller drops its `XdsServer`.
    pub(super) _handles: Arc<Handles>,
    pub(super) max_request_bytes: usize,
    /// Checks every stream before it starts; `None` serves anyone.
    pub(super) authenticator: Option<Arc<dyn StreamAuthenticator>>,
}

impl std::fmt::Debug for AdsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsService")
            .field("max_request_bytes", &self.max_request_bytes)
            .field("authenticated", &self.authenticator.is_some())
            .finish_non_exhaustive()
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for AdsService
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            let response = match request.uri().path() {
                SOTW_PATH => service.open::<Sotw, B>(request).await,
                DELTA_PATH => service.open::<Delta, B>(request).await,
                path => status_response(&Status::unimplemented(format!("{path} is not served here"))),
            };
            Ok(response)
        })
    }
}

impl AdsService {
    /// Authenticates the call, then starts the stream task and answers with its responses.
    async fn open<P: StreamProtocol, B>(&self, request: http::Request<B>) -> http::Response<Body>
    where
        B: HttpBody + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        if *self.shared.shutdown.borrow() {
            return status_response(&Status::unavailable("xDS server is shutting down; reconnect"));
        }
        if request.headers().get("grpc-encoding").is_some_and(|e| e != "identity") {
            return status_response(&Status::unimplemented("compressed requests are not accepted"));
        }
        let caller = match &self.authenticator {
            None => None,
            Some(authenticator) => {
                let call = StreamCall {
                    peer: peer_address(request.extensions()),
                    metadata: tonic::metadata::MetadataMap::from_headers(request.headers().clone()),
                };
                match authenticator.authenticate(call).await {
                    Ok(caller) => Some(caller),
                    Err(status) => return status_response(&status),
                }
            }
        };
        let requests = Requests::new(request.into_body(), self.max_request_bytes);
        let (tx, rx) = mpsc::channel(self.shared.response_buffer);
        tokio::spawn(stream::run::<P>(Arc::clone(&self.shared), caller, requests, tx));
        let mut response = http::Response::new(Body::new(Responses { rx, sending: None, done: false }));
        response.headers_mut().insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
        response
    }
}

/// A response that is only a status (gRPC "trailers-only").
fn status_response(status: &Status) -> http::Response<Body> {
    let mut response = http::Response::new(Body::default());
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
    let _ = status.add_header(headers);
    response
}

/// The requests of one stream, decoded one message at a time.
pub(crate) struct Requests<Req> {
    body: UnsyncBoxBody<Bytes, Status>,
    deframer: Deframer,
    ready: VecDeque<Bytes>,
    _request: PhantomData<fn() -> Req>,
}

impl<Req: prost::Message + Default> Requests<Req> {
    fn new<B>(body: B, max: usize) -> Self
    where
        B: HttpBody + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let body = body
            .map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
            .map_err(|error| Status::from_error(error.into()))
            .boxed_unsync();
        Self { body, deframer: Deframer::new(max), ready: VecDeque::new(), _request: PhantomData }
    }

    /// The next request; `None` once the client closed its side.
    pub async fn message(&mut self) -> Result<Option<Req>, Status> {
        loop {
            if let Some(bytes) = self.ready.pop_front() {
                return Req::decode(bytes)
                    .map(Some)
                    .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.deframer
                            .push(data, &mut self.ready)
                            .map_err(|e| Status::invalid_argument(e.to_string()))?;
                    }
                }
                Some(Err(status)) => return Err(status),
                None => {
                    self.deframer.finish().map_err(|e| Status::invalid_argument(e.to_string()))?;
                    return Ok(None);
                }
            }
        }
    }
}

/// The response body: each response's frame, in pieces of about [`PIECE`] bytes (h2 asks
/// for the next one as the proxy's flow-control window opens), then the status in
/// trailers.
struct Responses<Out> {
    rx: mpsc::Receiver<Result<Out, Status>>,
    /// The response being written and the next resource of it.
    sending: Option<(Out, Option<usize>)>,
    done: bool,
}

/// About the HTTP/2 window a stream gets: a piece is sent as soon as it is made.
const PIECE: usize = 256 << 10;

impl<Out: Outgoing> HttpBody for Responses<Out> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some((response, at)) = &mut self.sending {
            let piece = response.next_piece(at, PIECE);
            if response.finished(*at) {
                self.sending = None;
            }
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let status = match ready!(self.rx.poll_recv(cx)) {
            Some(Ok(response)) => {
                let mut at = None;
                let piece = response.next_piece(&mut at, PIECE);
                if !response.finished(at) {
                    self.sending = Some((response, at));
                }
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        let _ = status.add_header(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
