//! The byte pump: copies both ways between two streams, passing half-closes on, until both
//! directions have ended.
//!
//! - [`bidirectional`]: any two streams (TCP to TCP). Each direction borrows a buffer from
//!   a per-thread pool only while data is flowing and gives it back as soon as its reader
//!   has nothing to offer: an idle connection holds no buffer, so a thousand idle
//!   connections cost sockets and small futures, not a thousand pairs of 64 KiB buffers.
//!   No lock and no allocation per chunk once the pool is warm.
//! - [`tcp_hbone`]: a TCP connection and an HBONE stream, without the pump's own copy:
//!   received HTTP/2 data is written to the socket straight from the frames' buffers, and
//!   bytes read from the socket are handed to HTTP/2 as they are (a buffer reused once
//!   HTTP/2 has sent it, dropped when the socket goes quiet).
//!
//! Each direction's bytes are counted twice as they are written: into the connection's
//! metrics series (shared with every connection of that series) and into the connection's
//! own [`Carried`], which its access-log line reports.

use crate::metrics::TcpCounters;
use bytes::BytesMut;
use std::{
    cell::RefCell,
    future::poll_fn,
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    task::{Context, Poll, ready},
};
use tokio::{
    io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use weft_hbone::H2Stream;

const BUF_SIZE: usize = 64 * 1024;
/// Buffers kept per thread; more than this in flight are freed on return.
const POOL_PER_THREAD: usize = 32;

/// The bytes one connection carried, each way, so far: `up` from the side that opened it
/// towards the side it reached, `down` back.
#[derive(Debug, Default)]
pub struct Carried {
    pub up: AtomicU64,
    pub down: AtomicU64,
}

/// One direction's two counters: the series' and the connection's.
#[derive(Clone, Copy)]
pub struct Count<'c> {
    series: &'c AtomicU64,
    connection: &'c AtomicU64,
}

impl<'c> Count<'c> {
    fn new(series: &'c AtomicU64, connection: &'c AtomicU64) -> Count<'c> {
        Count { series, connection }
    }

    pub fn add(&self, n: u64) {
        self.series.fetch_add(n, Relaxed);
        self.connection.fetch_add(n, Relaxed);
    }
}

impl Carried {
    /// The two directions' counters for a connection of `series`: client → server is
    /// Istio's "received" and server → client its "sent", whichever side reports.
    pub fn counts<'c>(&'c self, series: &'c TcpCounters) -> (Count<'c>, Count<'c>) {
        (Count::new(&series.received, &self.up), Count::new(&series.sent, &self.down))
    }

    /// The connection's counts, as ztunnel's access log prints them.
    pub fn totals(&self) -> (u64, u64) {
        (self.up.load(Relaxed), self.down.load(Relaxed))
    }
}

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| vec![0; BUF_SIZE].into_boxed_slice())
}

fn give_buffer(buf: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_PER_THREAD {
            p.push(buf);
        }
    });
}

/// Copies both ways until both directions have seen EOF. When one side stops sending,
/// the other side's write half is shut down and the opposite direction keeps flowing.
/// `up` counts a→b bytes, `down` b→a.
pub async fn bidirectional<A, B>(a: &mut A, b: &mut B, up: Count<'_>, down: Count<'_>) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut ab, mut ba) = (OneWay::new(up), OneWay::new(down));
    poll_fn(|cx| {
        // Both directions are polled each time; either may finish first.
        let ab_done = ab.poll(cx, &mut *a, &mut *b)?;
        let ba_done = ba.poll(cx, &mut *b, &mut *a)?;
        if ab_done.is_ready() && ba_done.is_ready() { Poll::Ready(Ok(())) } else { Poll::Pending }
    })
    .await
}

/// Pumps between a TCP connection and an HBONE stream until both directions ended.
/// `to_stream` counts TCP→HBONE bytes, `from_stream` HBONE→TCP.
pub async fn tcp_hbone(
    tcp: &mut TcpStream,
    stream: H2Stream,
    to_stream: Count<'_>,
    from_stream: Count<'_>,
) -> io::Result<()> {
    let (mut from_h2, mut to_h2) = stream.into_split();
    let (tcp_read, mut tcp_write) = tcp.split();
    let up = async {
        let mut buf = BytesMut::new();
        loop {
            tcp_read.readable().await?;
            if buf.capacity() < BUF_SIZE / 2 {
                // Reuses the last allocation when HTTP/2 has sent (and dropped) what we
                // gave it from there; allocates otherwise.
                buf.reserve(BUF_SIZE);
            }
            match tcp_read.try_read_buf(&mut buf) {
                Ok(0) => {
                    poll_fn(|cx| Pin::new(&mut to_h2).poll_shutdown(cx)).await?;
                    return Ok::<_, io::Error>(());
                }
                Ok(n) => {
                    let mut chunk = buf.split().freeze();
                    while !chunk.is_empty() {
                        poll_fn(|cx| to_h2.poll_write_bytes(cx, &mut chunk)).await?;
                    }
                    to_stream.add(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Quiet: hold no buffer while idle.
                    buf = BytesMut::new();
                }
                Err(e) => return Err(e),
            }
        }
    };
    let down = async {
        poll_fn(|cx| {
            loop {
                let chunk = ready!(Pin::new(&mut from_h2).poll_fill_buf(cx))?;
                if chunk.is_empty() {
                    return Poll::Ready(Ok::<_, io::Error>(()));
                }
                let n = ready!(Pin::new(&mut tcp_write).poll_write(cx, chunk))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Pin::new(&mut from_h2).consume(n);
                from_stream.add(n as u64);
            }
        })
        .await?;
        tcp_write.shutdown().await
    };
    tokio::try_join!(up, down)?;
    Ok(())
}

/// One direction's state.
struct OneWay<'c> {
    /// Data read but not yet written: `buf[pos..len]`. `None` while idle.
    buf: Option<Box<[u8]>>,
    pos: usize,
    len: usize,
    read_done: bool,
    done: bool,
    need_flush: bool,
    counter: Count<'c>,
}

impl<'c> OneWay<'c> {
    fn new(counter: Count<'c>) -> OneWay<'c> {
        OneWay { buf: None, pos: 0, len: 0, read_done: false, done: false, need_flush: false, counter }
    }

    fn poll<R, W>(&mut self, cx: &mut Context<'_>, reader: &mut R, writer: &mut W) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(buf) = &self.buf
                && self.pos < self.len
            {
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, &buf[self.pos..self.len]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.counter.add(n as u64);
                self.need_flush = true;
                continue;
            }
            if self.read_done {
                if self.need_flush {
                    ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                    self.need_flush = false;
                }
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut buf = self.buf.take().unwrap_or_else(take_buffer);
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.read_done = true;
                        give_buffer(buf);
                    } else {
                        (self.pos, self.len) = (0, n);
                        self.buf = Some(buf);
                    }
                }
                Poll::Ready(Err(e)) => {
                    give_buffer(buf);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // Nothing to read: the buffer goes back (an idle direction holds none),
                    // and what was written is pushed out of any buffering writer.
                    give_buffer(buf);
                    if self.need_flush {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for OneWay<'_> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            give_buffer(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_closes_on() {
        // client <-> (a | pump | b) <-> server, over in-memory pipes.
        let (mut client, mut a) = duplex(1024);
        let (mut b, mut server) = duplex(1024);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let carried = Carried::default();
        let pump = async {
            bidirectional(&mut a, &mut b, Count::new(&up, &carried.up), Count::new(&down, &carried.down))
                .await
        };
        let peers = async {
            let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
            let send = async {
                client.write_all(&data).await.unwrap();
                client.shutdown().await.unwrap();
                let mut back = Vec::new();
                client.read_to_end(&mut back).await.unwrap();
                back
            };
            let echo = async {
                let mut got = Vec::new();
                server.read_to_end(&mut got).await.unwrap(); // EOF: the half-close arrived
                server.write_all(&got[..1000]).await.unwrap(); // the other way still flows
                server.shutdown().await.unwrap();
                got
            };
            let (back, got) = tokio::join!(send, echo);
            assert_eq!(got, data);
            assert_eq!(back, data[..1000]);
        };
        let (result, ()) = tokio::join!(pump, peers);
        result.unwrap();
        assert_eq!((up.load(Relaxed), down.load(Relaxed)), (200_000, 1000));
        assert_eq!(carried.totals(), (200_000, 1000));
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() {
        POOL.with(|p| p.borrow_mut().clear());
        let (_client, mut a) = duplex(64);
        let (mut b, _server) = duplex(64);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let carried = Carried::default();
        let mut pump = Box::pin(bidirectional(
            &mut a,
            &mut b,
            Count::new(&up, &carried.up),
            Count::new(&down, &carried.down),
        ));
        assert!(futures_poll_once(pump.as_mut()).await.is_pending());
        // Each direction took the pool's one buffer to try a read and gave it back: it is
        // in the pool, not in the pump.
        assert_eq!(POOL.with(|p| p.borrow().len()), 1);
    }

    async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> Poll<F::Output> {
        poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await
    }
}
