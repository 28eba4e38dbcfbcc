//! Idle HTTP/2 client connections: how many a waypoint holds for its memory.
//!
//! Each connection is what an idle HTTP/2 application connection is at the waypoint: an
//! HBONE stream (pooled on the client side, up to 100 on one mTLS connection, as the
//! client's agent would carry it) in which the client sent the HTTP/2 preface and its
//! SETTINGS, read the waypoint's SETTINGS and acknowledged them, and then sends nothing.

use super::{load::Target, procstat};
use anyhow::{Result, bail};
use futures::FutureExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_hbone::H2Stream;

/// The client preface, then an empty SETTINGS frame (length 0, type 4, no flags, stream 0).
const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
/// SETTINGS with the ACK flag.
const SETTINGS_ACK: &[u8] = b"\0\0\0\x04\x01\0\0\0\0";
/// Connections opened at once between two looks at the waypoint's memory.
const BATCH: usize = 250;

/// How many idle connections a waypoint held, and what they cost it.
#[derive(Debug, Clone)]
pub struct IdleResult {
    /// The waypoint's RSS before the first idle connection (MiB).
    pub baseline_mib: f64,
    /// Connections open when its RSS had first grown by the limit, if it did.
    pub at_limit: Option<u64>,
    /// Connections opened in all.
    pub opened: u64,
    /// Of those, still open after a few idle seconds.
    pub held: u64,
    /// Its RSS with them all open (MiB).
    pub rss_mib: f64,
    /// Why opening stopped.
    pub stopped: String,
}

impl IdleResult {
    /// Resident memory per idle connection (KiB), over all of them.
    pub fn kib_per_connection(&self) -> f64 {
        (self.rss_mib - self.baseline_mib) * 1024.0 / self.opened.max(1) as f64
    }
}

/// Opens idle connections to the waypoint (`pid`) in batches until `cap` are open or its
/// RSS has grown by `ceiling_mib`, noting the count when the growth first reached
/// `limit_mib`. Call on a thread inside the client pod's network namespace.
pub async fn run(
    target: &Target,
    pid: u32,
    limit_mib: f64,
    cap: u64,
    ceiling_mib: f64,
) -> Result<IdleResult> {
    let baseline_mib = procstat::rss_mib(pid)?.0;
    let mut held: Vec<H2Stream> = Vec::with_capacity(cap as usize);
    let mut at_limit = None;
    let stopped = loop {
        let batch = BATCH.min((cap - held.len() as u64) as usize);
        let opened = futures::future::join_all((0..batch).map(|_| async {
            tokio::time::timeout(Duration::from_secs(20), open_idle(target))
                .await
                .map_err(|_| anyhow::anyhow!("no HTTP/2 SETTINGS exchange within 20 s"))?
        }))
        .await;
        let mut failed = None;
        for o in opened {
            match o {
                Ok(s) => held.push(s),
                Err(e) => failed = Some(e),
            }
        }
        let growth = procstat::rss_mib(pid)?.0 - baseline_mib;
        eprintln!("wpbench: {} idle connections, RSS +{growth:.1} MiB", held.len());
        if at_limit.is_none() && growth >= limit_mib {
            at_limit = Some(held.len() as u64);
        }
        if let Some(e) = failed {
            break format!("a connection failed after {}: {e:#}", held.len());
        }
        if held.len() as u64 >= cap {
            break format!("reached the cap of {cap}");
        }
        if growth >= ceiling_mib {
            break format!("its RSS grew by {growth:.0} MiB");
        }
    };
    // Let the waypoint settle (and close what it will not keep), then count what is open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_mib = procstat::rss_mib(pid)?.0;
    let mut buf = [0u8; 64];
    let mut open = 0;
    for s in &mut held {
        // Pending: open and quiet. Bytes: open (a PING, say). End or error: closed.
        match s.read(&mut buf).now_or_never() {
            None | Some(Ok(1..)) => open += 1,
            Some(Ok(0) | Err(_)) => {}
        }
    }
    Ok(IdleResult { baseline_mib, at_limit, opened: held.len() as u64, held: open as u64, rss_mib, stopped })
}

/// One idle HTTP/2 connection through the waypoint, its SETTINGS exchanged.
async fn open_idle(target: &Target) -> Result<H2Stream> {
    let mut s = target.open().await?;
    s.write_all(PREFACE_AND_SETTINGS).await?;
    // The server's first frame is its SETTINGS: read until it is whole, then ack it.
    let mut buf = [0u8; 512];
    let mut have = 0;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf[have..])).await??;
        if n == 0 {
            bail!("the waypoint closed an HTTP/2 connection before its SETTINGS");
        }
        have += n;
        if have >= 9 {
            if buf[3] != 4 {
                bail!("the waypoint's first HTTP/2 frame is of type {}, not SETTINGS", buf[3]);
            }
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if have >= 9 + len || have == buf.len() {
                break;
            }
        }
    }
    s.write_all(SETTINGS_ACK).await?;
    s.flush().await?;
    Ok(s)
}
