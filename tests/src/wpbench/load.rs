//! The load client: closed loop, one request in flight per connection, each connection an
//! HBONE stream to the waypoint (as the client pod's agent would open it: CONNECT to the
//! service's VIP:port on pooled mTLS connections, up to 100 streams on each) carrying
//! HTTP/1.1 with keep-alive or HTTP/2 with prior knowledge.
//!
//! Latencies are kept per connection in a vector sized up front, so recording one costs
//! no allocation; percentiles are nearest-rank over every request of the measured window.

use super::procstat;
use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes, client::conn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use weft_hbone::{H2Stream, Pool, PoolKey, Settings, TrustBundle, WorkloadCertificate};

/// The Host (HTTP/1.1) or :authority (HTTP/2) of every request: the service's name, which
/// the VirtualService's virtual host matches.
pub const HOST: &str = "reviews.bookinfo.svc.cluster.local";

/// The URI of every HTTP/2 request, whose authority becomes :authority.
const URI_HTTP2: &str = "http://reviews.bookinfo.svc.cluster.local/";

/// How the application speaks inside its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

impl HttpVersion {
    pub fn label(self) -> &'static str {
        match self {
            HttpVersion::Http1 => "HTTP/1.1",
            HttpVersion::Http2 => "HTTP/2",
        }
    }
}

/// Where the client pod's "agent" sends its HBONE streams, and as whom.
#[derive(Clone)]
pub struct Target {
    pub pool: Pool,
    /// Client identity → the waypoint's identity at the waypoint pod's :15008.
    pub key: PoolKey,
    pub cert: Arc<WorkloadCertificate>,
    pub roots: TrustBundle,
    /// The CONNECT authority: the service's VIP and port.
    pub authority: SocketAddr,
}

impl Target {
    pub fn new(
        key: PoolKey,
        cert: Arc<WorkloadCertificate>,
        roots: TrustBundle,
        authority: SocketAddr,
    ) -> Target {
        Target { pool: Pool::new(Settings::default()), key, cert, roots, authority }
    }

    /// One application connection: an HBONE stream through the waypoint. Must run on a
    /// thread inside the client pod's network namespace (its dial is a plain connect).
    pub async fn open(&self) -> Result<H2Stream> {
        let addr = self.key.dst_addr;
        self.pool
            .connect(&self.key, &self.cert, &self.roots, self.authority, || {
                tokio::net::TcpStream::connect(addr)
            })
            .await
            .with_context(|| format!("HBONE CONNECT {} through the waypoint at {addr}", self.authority))
    }
}

/// An application connection, either version.
enum Sender {
    Http1(conn::http1::SendRequest<Empty<Bytes>>),
    Http2(conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn open(target: &Target, version: HttpVersion) -> Result<Sender> {
        let io = TokioIo::new(target.open().await?);
        Ok(match version {
            HttpVersion::Http1 => {
                let (sender, connection) = conn::http1::handshake(io).await?;
                tokio::spawn(connection);
                Sender::Http1(sender)
            }
            HttpVersion::Http2 => {
                let (sender, connection) = conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(connection);
                Sender::Http2(sender)
            }
        })
    }

    /// One GET /, the body read to its end: whether it answered 200.
    async fn get(&mut self) -> Result<bool> {
        let response = match self {
            Sender::Http1(s) => {
                let req = Request::get("/").header("host", HOST).body(Empty::new())?;
                s.send_request(req).await?
            }
            Sender::Http2(s) => {
                // HTTP/2 carries the Host as :authority, from the URI.
                let req = Request::get(URI_HTTP2).body(Empty::new())?;
                s.send_request(req).await?
            }
        };
        let ok = response.status() == 200;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok(ok)
    }
}

/// One load run, as measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests answered 200 that started and ended inside the measured window.
    pub requests: u64,
    /// Requests answered otherwise, or failed, in the window; connections lost.
    pub errors: u64,
    pub secs: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The waypoint's user + system CPU seconds over the window.
    pub cpu_secs: f64,
}

impl LoadResult {
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.secs
    }

    pub fn cpu_secs_per_10k(&self) -> f64 {
        self.cpu_secs / self.requests as f64 * 10_000.0
    }

    pub fn requests_per_cpu_sec(&self) -> f64 {
        self.requests as f64 / self.cpu_secs
    }
}

/// What one connection's loop saw.
struct ConnectionRun {
    latencies_ns: Vec<u64>,
    errors: u64,
}

/// Opens `connections` connections, runs them closed-loop for `warmup` (not counted), then
/// for `duration`, reading the waypoint's (`waypoint_pid`) CPU time at both ends of the
/// window. Call on a thread inside the client pod's network namespace.
pub async fn run(
    target: &Target,
    version: HttpVersion,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    waypoint_pid: u32,
) -> Result<LoadResult> {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(Sender::open(target, version).await?);
    }
    let start = Instant::now();
    let (measure_from, end) = (start + warmup, start + warmup + duration);
    // Room for 60,000 requests/s in all, more than these runs reach on 2 cores; past it
    // a vector grows (amortised), still not per request.
    let capacity = (60_000.0 * duration.as_secs_f64()) as usize / connections + 1024;
    let mut tasks = tokio::task::JoinSet::new();
    for mut sender in senders {
        tasks.spawn(async move {
            let mut run = ConnectionRun { latencies_ns: Vec::with_capacity(capacity), errors: 0 };
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let answer = sender.get().await;
                let t1 = Instant::now();
                let counted = t0 >= measure_from && t1 <= end;
                match answer {
                    Ok(true) if counted => run.latencies_ns.push((t1 - t0).as_nanos() as u64),
                    Ok(true) => {}
                    Ok(false) => run.errors += u64::from(counted),
                    Err(_) => {
                        // The connection is gone: count it and stop this one.
                        run.errors += 1;
                        break;
                    }
                }
            }
            run
        });
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = procstat::cpu_secs(waypoint_pid)?;
    tokio::time::sleep_until(end.into()).await;
    let cpu_after = procstat::cpu_secs(waypoint_pid)?;
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(run) = tasks.join_next().await {
        let run = run.context("a load connection panicked")?;
        latencies.extend_from_slice(&run.latencies_ns);
        errors += run.errors;
    }
    if latencies.is_empty() {
        bail!("no request succeeded through the waypoint in {duration:?} ({errors} errors)");
    }
    latencies.sort_unstable();
    Ok(LoadResult {
        requests: latencies.len() as u64,
        errors,
        secs: duration.as_secs_f64(),
        p50_us: nearest_rank(&latencies, 50.0) as f64 / 1000.0,
        p99_us: nearest_rank(&latencies, 99.0) as f64 / 1000.0,
        cpu_secs: cpu_after - cpu_before,
    })
}

/// The nearest-rank percentile of sorted, non-empty `values`.
fn nearest_rank(sorted: &[u64], percentile: f64) -> u64 {
    let rank = (percentile / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends single requests on fresh connections until `done` says the waypoint routes
/// (or `timeout` passes): how a run waits for the waypoint to hold the whole config.
pub async fn wait_routed(target: &Target, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match Sender::open(target, HttpVersion::Http1).await {
            Ok(mut s) => {
                for _ in 0..50 {
                    match s.get().await {
                        Ok(true) => {}
                        Ok(false) => last = "a non-200 answer".into(),
                        Err(e) => {
                            last = format!("{e:#}");
                            break;
                        }
                    }
                }
            }
            Err(e) => last = format!("{e:#}"),
        }
        if done() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the waypoint did not route to every subset within {timeout:?}; last: {last}")
}

#[cfg(test)]
mod tests {
    use super::nearest_rank;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 50.0), 50);
        assert_eq!(nearest_rank(&v, 99.0), 99);
        assert_eq!(nearest_rank(&[7], 99.0), 7);
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(nearest_rank(&v, 99.0), 990);
    }
}
