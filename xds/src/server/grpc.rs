//! Envoy's `AggregatedDiscoveryService` as a tonic service, written out rather than
//! generated so that responses can be encoded from the snapshot's shared resources
//! (`wire.rs`) instead of from a copy in a prost message.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codegen::{Body as HttpBody, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Status, Streaming};

use super::stream::{self, StreamProtocol};
use super::wire::AdsCodec;
use super::{Handles, Shared, delta::Delta, sotw::Sotw};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The ADS service of an [`XdsServer`](super::XdsServer); mount it with
/// `Server::builder().add_service(xds.service())`.
#[derive(Clone, Debug)]
pub struct AdsService {
    pub(super) shared: Arc<Shared>,
    /// Keeps the server alive while mounted, even if the caller drops its `XdsServer`.
    pub(super) _handles: Arc<Handles>,
    pub(super) max_request_bytes: usize,
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
        match request.uri().path() {
            SOTW_PATH => Box::pin(async move { Ok(serve::<Sotw, B>(service, request).await) }),
            DELTA_PATH => Box::pin(async move { Ok(serve::<Delta, B>(service, request).await) }),
            _ => Box::pin(async move {
                let mut response = http::Response::new(Body::default());
                let headers = response.headers_mut();
                headers.insert(Status::GRPC_STATUS, (tonic::Code::Unimplemented as i32).into());
                headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
                Ok(response)
            }),
        }
    }
}

async fn serve<P, B>(service: AdsService, request: http::Request<B>) -> http::Response<Body>
where
    P: StreamProtocol,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let max = service.max_request_bytes;
    Grpc::new(AdsCodec::<P::Request, P::Response>::default())
        .apply_max_message_size_config(Some(max), None)
        .streaming(Method::<P>(service, PhantomData), request)
        .await
}

/// One ADS method: each call starts a stream task of protocol `P`.
struct Method<P>(AdsService, PhantomData<fn() -> P>);

impl<P: StreamProtocol> StreamingService<P::Request> for Method<P> {
    type Response = P::Response;
    type ResponseStream = ReceiverStream<Result<P::Response, Status>>;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: tonic::Request<Streaming<P::Request>>) -> Self::Future {
        let shared = Arc::clone(&self.0.shared);
        Box::pin(async move {
            if *shared.shutdown.borrow() {
                return Err(Status::unavailable("xDS server is shutting down; reconnect"));
            }
            let (tx, rx) = mpsc::channel(shared.response_buffer);
            tokio::spawn(stream::run::<P>(Arc::clone(&shared), request.into_inner(), tx));
            Ok(tonic::Response::new(ReceiverStream::new(rx)))
        })
    }
}
