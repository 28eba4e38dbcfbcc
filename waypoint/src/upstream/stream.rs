//! The byte stream under an upstream connection: an HBONE stream to a pod in the mesh, or
//! a plain TCP connection to an endpoint outside it (no `weft.identity`: a pod of a
//! namespace not in the mesh, or a gateway's own pod), which Istio's waypoints and
//! gateways also reach directly. One enum rather than a boxed trait object: a match per
//! poll, no allocation per connection.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use weft_hbone::H2Stream;

pub enum UpstreamStream {
    Hbone(H2Stream),
    Plain(tokio::net::TcpStream),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Hbone(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Hbone(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Hbone(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Hbone(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Hbone(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Hbone(s) => s.is_write_vectored(),
            UpstreamStream::Plain(s) => s.is_write_vectored(),
        }
    }
}
