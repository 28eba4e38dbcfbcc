//! The byte pump between two TCP connections.
//!
//! Each direction reads into a buffer borrowed from a per-thread pool only while data is
//! flowing, and gives it back as soon as the socket runs dry: an idle connection holds
//! no buffer, so a thousand idle connections cost sockets and small futures, not a
//! thousand pairs of 64 KiB buffers. No lock and no allocation per chunk once the pool
//! is warm.

use std::{
    cell::RefCell,
    io,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};
use tokio::{
    io::AsyncWriteExt,
    net::{
        TcpStream,
        tcp::{ReadHalf, WriteHalf},
    },
};

const BUF_SIZE: usize = 64 * 1024;
/// Buffers kept per thread; more than this in flight are freed on return.
const POOL_PER_THREAD: usize = 32;

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

/// Copies both ways until both directions have seen EOF. A half-close is passed on: when
/// one side stops sending, the other side's write half is shut down and the opposite
/// direction keeps flowing. `up` counts client→server bytes, `down` server→client.
pub async fn bidirectional(
    client: &mut TcpStream,
    server: &mut TcpStream,
    up: &AtomicU64,
    down: &AtomicU64,
) -> io::Result<()> {
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    tokio::try_join!(one_way(cr, sw, up), one_way(sr, cw, down))?;
    Ok(())
}

async fn one_way(from: ReadHalf<'_>, mut to: WriteHalf<'_>, counter: &AtomicU64) -> io::Result<()> {
    loop {
        from.readable().await?;
        let mut buf = take_buffer();
        loop {
            match from.try_read(&mut buf) {
                Ok(0) => {
                    give_buffer(buf);
                    return to.shutdown().await;
                }
                Ok(n) => {
                    if let Err(e) = to.write_all(&buf[..n]).await {
                        give_buffer(buf);
                        return Err(e);
                    }
                    counter.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    give_buffer(buf);
                    break;
                }
                Err(e) => {
                    give_buffer(buf);
                    return Err(e);
                }
            }
        }
    }
}
