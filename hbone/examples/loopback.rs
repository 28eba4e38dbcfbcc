//! Loopback throughput and latency of HBONE beside plain TCP, measured in the same run,
//! so settings can be tuned with numbers:
//!
//! ```sh
//! cargo run -p weft-hbone --release --example loopback -- [--seconds 3] [--rounds 20000] [--chunk 262144]
//! cargo run -p weft-hbone --release --example loopback -- --only throughput|latency|memory
//! ```
//!
//! - throughput: one connection (one HBONE stream) writes `chunk`-sized buffers for
//!   `seconds`; the receiver consumes them (zero-copy `fill_buf`/`consume` on HBONE, as a
//!   `copy_buf` pump does) and answers the total after EOF; Gbit/s = bytes / time to that
//!   answer, and Gbit per CPU-second of the process (steadier on a shared machine).
//! - latency: `rounds` 1-byte request/response exchanges on one connection (one stream);
//!   p50 and p99 of the round trip.
//! - memory: RSS growth for `streams` idle HBONE streams (default 1000, after one 1-byte
//!   exchange each).
//!
//! `--frame BYTES` sets the HTTP/2 max frame size of both ends; `--only` runs one kind
//! alone, HBONE only (for `perf record`).
//!
//! Client and server share this process and its runtime (two worker threads), so a
//! figure is the cost of both ends of a connection on the same cores: indicative only.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use weft_hbone::{HboneRequest, Identity, Pool, PoolKey, Settings, serve_connection, testing::TestCa, tls};

const SINK_PORT: u16 = 1;
const ECHO_PORT: u16 = 2;

struct Args {
    seconds: f64,
    rounds: usize,
    chunk: usize,
    only: Option<String>,
    frame: Option<u32>,
    streams: usize,
}

fn args() -> Args {
    let mut args =
        Args { seconds: 3.0, rounds: 20_000, chunk: 256 * 1024, only: None, frame: None, streams: 1000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse().expect("--seconds: a number"),
            "--rounds" => args.rounds = value.parse().expect("--rounds: a count"),
            "--chunk" => args.chunk = value.parse().expect("--chunk: bytes"),
            "--streams" => args.streams = value.parse().expect("--streams: a count"),
            "--frame" => args.frame = Some(value.parse().expect("--frame: bytes")),
            "--only" if ["throughput", "latency", "memory"].contains(&value.as_str()) => {
                args.only = Some(value)
            }
            other => panic!(
                "unknown flag or value {other}; flags: --seconds, --rounds, --chunk, --frame, --streams, --only throughput|latency|memory"
            ),
        }
    }
    args
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let duration = Duration::from_secs_f64(args.seconds);

    // Plain TCP: a sink and an echo server.
    let tcp_sink = listen(sink).await;
    let tcp_echo = listen(echo).await;

    // HBONE: one server; the CONNECT authority's port picks sink or echo.
    let ca = TestCa::new();
    let roots = ca.trust_bundle();
    let (src, dst) = (
        Identity::new("cluster.local", "bench", "client").unwrap(),
        Identity::new("cluster.local", "bench", "server").unwrap(),
    );
    let client_cert = Arc::new(ca.issue(&src, Duration::from_secs(3600)));
    let server_config = tls::server_config(&ca.issue(&dst, Duration::from_secs(3600)), &roots).unwrap();
    let mut settings = Settings::default();
    if let Some(frame) = args.frame {
        settings.max_frame_size = frame;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone_addr = listener.local_addr().unwrap();
    let server_settings = settings.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (config, settings) = (server_config.clone(), server_settings.clone());
            tokio::spawn(async move {
                let _ = serve_connection(
                    tcp,
                    config,
                    &settings,
                    std::future::pending(),
                    |req: HboneRequest| async move {
                        let port = req.authority().port();
                        let Ok(stream) = req.accept() else { return };
                        match port {
                            SINK_PORT => sink(stream).await,
                            _ => echo(stream).await,
                        }
                    },
                )
                .await;
            });
        }
    });
    let pool = Pool::new(settings);
    let key = PoolKey { src, dst, dst_addr: hbone_addr, extra: 0 };
    let hbone = |port: u16| {
        let (pool, key, cert, roots) = (pool.clone(), key.clone(), client_cert.clone(), roots.clone());
        async move {
            pool.connect(&key, &cert, &roots, SocketAddr::from(([10, 0, 0, 1], port)), move || {
                TcpStream::connect(hbone_addr)
            })
            .await
            .unwrap()
        }
    };

    match args.only.as_deref() {
        Some("throughput") => {
            let (gbps, per_cpu) = throughput(hbone(SINK_PORT).await, duration, args.chunk).await;
            println!("hbone: {gbps:.2} Gbit/s, {per_cpu:.2} Gbit per CPU-second");
            return;
        }
        Some("memory") => {
            memory(args.streams, &pool, hbone).await;
            return;
        }
        Some(_) => {
            let (p50, p99) = latency(hbone(ECHO_PORT).await, args.rounds).await;
            println!("hbone: RTT p50 {p50:.1} µs, p99 {p99:.1} µs");
            return;
        }
        None => {}
    }
    println!(
        "loopback, {:.1} s per throughput run, {} round trips, {} KiB writes",
        args.seconds,
        args.rounds,
        args.chunk / 1024
    );
    let tcp_gbps = throughput(TcpStream::connect(tcp_sink).await.unwrap(), duration, args.chunk).await;
    let hbone_gbps = throughput(hbone(SINK_PORT).await, duration, args.chunk).await;
    let tcp_rtt = latency(TcpStream::connect(tcp_echo).await.unwrap(), args.rounds).await;
    let hbone_rtt = latency(hbone(ECHO_PORT).await, args.rounds).await;

    println!(
        "{:<10} {:>10} {:>12} {:>14} {:>14}",
        "", "Gbit/s", "Gbit/CPU-s", "RTT p50 (µs)", "RTT p99 (µs)"
    );
    for (name, (gbps, per_cpu), (p50, p99)) in [("tcp", tcp_gbps, tcp_rtt), ("hbone", hbone_gbps, hbone_rtt)]
    {
        println!("{name:<10} {gbps:>10.2} {per_cpu:>12.2} {p50:>14.1} {p99:>14.1}");
    }
    println!(
        "hbone/tcp: throughput {:.2}x, per CPU-second {:.2}x, p50 round trip +{:.1} µs",
        hbone_gbps.0 / tcp_gbps.0,
        hbone_gbps.1 / tcp_gbps.1,
        hbone_rtt.0 - tcp_rtt.0
    );

    memory(args.streams, &pool, hbone).await;
}

async fn listen<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            tokio::spawn(serve(tcp));
        }
    });
    addr
}

/// Consumes everything, then answers the byte count. Errors end it quietly: the runtime
/// drops connections mid-way when the run is over.
async fn sink<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, stream);
    let mut total: u64 = 0;
    loop {
        let Ok(buf) = reader.fill_buf().await else { return };
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        total += n as u64;
        reader.consume(n);
    }
    let mut stream = reader.into_inner();
    if stream.write_all(&total.to_be_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).await.is_ok() {
        if stream.write_all(&byte).await.is_err() {
            return;
        }
    }
}

/// (Gbit/s, Gbit per CPU-second of this process): the second is steadier on a busy machine.
async fn throughput<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    duration: Duration,
    chunk: usize,
) -> (f64, f64) {
    let buf = vec![0x5a; chunk];
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let mut sent: u64 = 0;
    while start.elapsed() < duration {
        stream.write_all(&buf).await.unwrap();
        sent += buf.len() as u64;
    }
    stream.shutdown().await.unwrap();
    let mut total = [0u8; 8];
    stream.read_exact(&mut total).await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(u64::from_be_bytes(total), sent, "the sink counted other than what was sent");
    let gbit = sent as f64 * 8.0 / 1e9;
    (gbit / elapsed.as_secs_f64(), gbit / (cpu_seconds() - cpu_start))
}

/// RSS growth for `count` idle streams, each after one 1-byte exchange.
async fn memory<F, Fut>(count: usize, pool: &Pool, hbone: F)
where
    F: Fn(u16) -> Fut,
    Fut: Future<Output = weft_hbone::H2Stream>,
{
    let before = rss_kib();
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = hbone(ECHO_PORT).await;
        let mut byte = [1u8];
        stream.write_all(&byte).await.unwrap();
        stream.read_exact(&mut byte).await.unwrap();
        streams.push(stream);
    }
    let after = rss_kib();
    let grown = after.saturating_sub(before);
    println!(
        "{} idle HBONE streams on {} connections: RSS +{:.1} MiB ({:.1} KiB per stream, client and server ends together), {:.1} MiB in all",
        streams.len(),
        pool.connections(),
        grown as f64 / 1024.0,
        grown as f64 / streams.len().max(1) as f64,
        after as f64 / 1024.0
    );
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB")
}

/// User + system CPU time of this process (all threads), from /proc (USER_HZ = 100).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// (p50, p99) of a 1-byte round trip, in µs.
async fn latency<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, rounds: usize) -> (f64, f64) {
    let mut samples = Vec::with_capacity(rounds);
    let mut byte = [7u8; 1];
    for i in 0..rounds + rounds / 10 {
        let start = Instant::now();
        stream.write_all(&byte).await.unwrap();
        stream.read_exact(&mut byte).await.unwrap();
        // The first tenth warms up caches, allocators and windows.
        if i >= rounds / 10 {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    let pick =
        |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6;
    (pick(0.50), pick(0.99))
}
