//! The bodies the proxy moves, as enums rather than boxed trait objects (no allocation per
//! request):
//!
//! - [`RequestBody`], what goes upstream: the client's body streamed as it arrives, or a
//!   copy kept for retries ([`Replayable`]: the whole body, only when it is within the
//!   buffer limit, Envoy's `per_request_buffer_limit_bytes`), or nothing;
//! - [`ResponseBody`], what goes downstream: the upstream's body streamed through (with
//!   what must live until it ends: the in-flight counters and, for HTTP/1.1, the
//!   connection to give back to the pool), or a local reply.
//!
//! Trailers pass through both ways (gRPC status travels in them).

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

/// A request body kept whole so it can be sent again.
#[derive(Clone, Debug, Default)]
pub struct Replayable {
    pub data: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// What goes upstream.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    Streaming(Incoming),
    /// A replay of a buffered body: data, then trailers.
    Replay {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
}

impl RequestBody {
    pub fn replay(body: &Replayable) -> RequestBody {
        RequestBody::Replay {
            data: (!body.data.is_empty()).then(|| body.data.clone()),
            trailers: body.trailers.clone(),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Streaming(incoming) => Pin::new(incoming).poll_frame(cx),
            RequestBody::Replay { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Streaming(incoming) => incoming.is_end_stream(),
            RequestBody::Replay { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Streaming(incoming) => incoming.size_hint(),
            RequestBody::Replay { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// What goes downstream.
pub enum ResponseBody {
    /// The upstream's body; `_keep` lives until the body ends or is dropped.
    Upstream { body: Incoming, keep: Option<crate::upstream::InFlight> },
    /// A local reply (404, 503, ...).
    Local(Option<Bytes>),
}

impl ResponseBody {
    pub fn local(text: &'static str) -> ResponseBody {
        ResponseBody::Local((!text.is_empty()).then(|| Bytes::from_static(text.as_bytes())))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream { body, keep } => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(None) = polled {
                    // The exchange is over: the counters drop and an HTTP/1.1 connection
                    // goes back to its pool now, not when hyper drops the body.
                    if let Some(keep) = keep.take() {
                        keep.finish();
                    }
                }
                polled
            }
            ResponseBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
