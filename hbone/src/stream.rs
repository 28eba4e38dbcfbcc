//! One HBONE tunnel: an HTTP/2 CONNECT stream as tokio `AsyncRead + AsyncWrite`, so the
//! same byte pump serves TCP, TLS and HBONE.
//!
//! - Reads hand out the `Bytes` chunks h2 received, without copying them again when used as
//!   `AsyncBufRead` (`tokio::io::copy_buf`); flow-control capacity is given back to the
//!   peer as each chunk is consumed, so a reader that stops reading stops the sender.
//! - Writes wait for flow-control capacity before handing data to h2, so at most the
//!   configured send buffer is queued per stream. Each write is copied once into a `Bytes`
//!   that h2 owns until it is on the wire and then frees: no buffer stays with an idle
//!   stream. [`H2SendHalf::poll_write_bytes`] sends a caller's `Bytes` without that copy.
//! - `poll_shutdown` sends END_STREAM: a half-close; the other direction keeps flowing.
//! - A RST_STREAM, a GOAWAY or the loss of the connection surfaces as an `io::Error`
//!   (kind `ConnectionReset`, `ConnectionAborted`, or the connection's own error) whose
//!   inner error is the `h2::Error`, so a caller can read the reason.

use crate::client::StreamGuard;
use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use std::{
    fmt, io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

/// An established HBONE stream (after the CONNECT was answered 200).
pub struct H2Stream {
    recv: H2RecvHalf,
    send: H2SendHalf,
}

/// The receiving half of an [`H2Stream`].
pub struct H2RecvHalf {
    recv: RecvStream,
    /// Received and not yet consumed.
    chunk: Bytes,
    /// Bytes consumed from `chunk` whose flow-control capacity is not yet released.
    unreleased: usize,
    eof: bool,
    _guard: Option<Arc<StreamGuard>>,
}

/// The sending half of an [`H2Stream`].
pub struct H2SendHalf {
    send: SendStream<Bytes>,
    shut_down: bool,
    _guard: Option<Arc<StreamGuard>>,
}

impl fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Stream").field("recv", &self.recv).field("send", &self.send).finish()
    }
}

impl fmt::Debug for H2RecvHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2RecvHalf")
            .field("stream_id", &self.recv.stream_id())
            .field("buffered", &self.chunk.len())
            .field("eof", &self.eof)
            .finish()
    }
}

impl fmt::Debug for H2SendHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2SendHalf")
            .field("stream_id", &self.send.stream_id())
            .field("shut_down", &self.shut_down)
            .finish()
    }
}

impl H2Stream {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        guard: Option<Arc<StreamGuard>>,
    ) -> H2Stream {
        H2Stream {
            recv: H2RecvHalf { recv, chunk: Bytes::new(), unreleased: 0, eof: false, _guard: guard.clone() },
            send: H2SendHalf { send, shut_down: false, _guard: guard },
        }
    }

    /// Splits into halves that can move to different tasks (no lock between them).
    pub fn into_split(self) -> (H2RecvHalf, H2SendHalf) {
        (self.recv, self.send)
    }

    /// Resets the stream with CONNECT_ERROR, as RFC 9113 §8.5 asks when the TCP
    /// connection at the other end of the tunnel failed (rather than closed).
    pub fn abort(&mut self) {
        self.send.abort();
    }
}

impl H2SendHalf {
    /// See [`H2Stream::abort`].
    pub fn abort(&mut self) {
        self.send.send_reset(Reason::CONNECT_ERROR);
        self.shut_down = true;
    }

    /// Sends a prefix of `data` without copying it, as much as flow control allows now,
    /// and advances `data` past it. Ready with the number of bytes sent.
    pub fn poll_write_bytes(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<usize>> {
        let n = ready!(self.poll_capacity(cx, data.len()))?;
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let chunk = data.split_to(n);
        Poll::Ready(self.send_chunk(cx, chunk).map(|()| n))
    }

    /// Capacity for up to `want` bytes: how many may be sent now (0 only if `want` is 0).
    fn poll_capacity(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if want == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.shut_down {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "HBONE stream already shut down",
            )));
        }
        loop {
            let capacity = self.send.capacity();
            if capacity > 0 {
                return Poll::Ready(Ok(capacity.min(want)));
            }
            // Asks for room for this write on top of what h2 already buffers; h2 grants it
            // as the peer's windows and the send buffer limit allow.
            self.send.reserve_capacity(want);
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(self.why_closed(cx, e))),
                None => return Poll::Ready(Err(self.reset_reason(cx))),
            }
        }
    }

    fn send_chunk(&mut self, cx: &mut Context<'_>, chunk: Bytes) -> io::Result<()> {
        self.send.send_data(chunk, false).map_err(|e| self.why_closed(cx, e))
    }

    /// A send failed: the stream's reset reason says more than the error h2 returned.
    fn why_closed(&mut self, cx: &mut Context<'_>, err: h2::Error) -> io::Error {
        match self.send.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => reset_error(reason),
            Poll::Ready(Err(conn_err)) => h2_error(conn_err),
            Poll::Pending => h2_error(err),
        }
    }

    fn reset_reason(&mut self, cx: &mut Context<'_>) -> io::Error {
        match self.send.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => reset_error(reason),
            Poll::Ready(Err(conn_err)) => h2_error(conn_err),
            Poll::Pending => io::Error::new(io::ErrorKind::BrokenPipe, "HBONE stream closed for sending"),
        }
    }
}

impl AsyncWrite for H2SendHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(this.poll_capacity(cx, buf.len()))?;
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        Poll::Ready(this.send_chunk(cx, Bytes::copy_from_slice(&buf[..n])).map(|()| n))
    }

    /// h2's connection task writes and flushes; there is nothing to wait for here.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends END_STREAM (idempotent). Data written before is delivered first.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shut_down {
            return Poll::Ready(Ok(()));
        }
        this.shut_down = true;
        match this.send.send_data(Bytes::new(), true) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(this.why_closed(cx, e))),
        }
    }
}

impl H2RecvHalf {
    fn release_consumed(&mut self) {
        if self.unreleased > 0 {
            // Fails only if the stream is gone, and then there is nothing to give back.
            let _ = self.recv.flow_control().release_capacity(self.unreleased);
            self.unreleased = 0;
        }
    }
}

impl AsyncBufRead for H2RecvHalf {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.chunk.is_empty() && !this.eof {
            match ready!(this.recv.poll_data(cx)) {
                None => this.eof = true,
                Some(Ok(data)) => this.chunk = data,
                Some(Err(e)) => return Poll::Ready(Err(h2_error(e))),
            }
        }
        Poll::Ready(Ok(&this.chunk))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.chunk.advance(amt);
        this.unreleased += amt;
        // Capacity goes back once per received chunk, not per read: each release takes
        // the connection's lock.
        if this.chunk.is_empty() {
            this.release_consumed();
        }
    }
}

impl AsyncRead for H2RecvHalf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().recv).poll_read(cx, buf)
    }
}

impl AsyncBufRead for H2Stream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().recv).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.get_mut().recv).consume(amt)
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().send).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_shutdown(cx)
    }
}

fn reset_error(reason: Reason) -> io::Error {
    h2_error(h2::Error::from(reason))
}

/// An h2 error as an `io::Error` whose kind says what happened and whose inner error is
/// the `h2::Error` (for its reason).
pub(crate) fn h2_error(err: h2::Error) -> io::Error {
    if err.is_io() {
        return err.into_io().unwrap_or_else(|| io::Error::other("HBONE connection failed"));
    }
    let kind = if err.is_go_away() {
        io::ErrorKind::ConnectionAborted
    } else if err.is_reset() || err.reason().is_some() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, err)
}
