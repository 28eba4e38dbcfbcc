//! The benchmark clients: `throughput`, `latency`, `connrate`, and `hold` (many idle
//! connections). Each prints one JSON line.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::cli::{ConnrateArgs, HoldArgs, LatencyArgs, ThroughputArgs};
use super::dial;
use super::report::{self, EXIT_CONNECT, EXIT_OK};

/// Size of each write in `throughput`: large enough that syscall cost does not bound it.
const THROUGHPUT_WRITE: usize = 256 * 1024;

/// Sink mode for `--secs`; the rate is computed from the count the server received, not from
/// what this side managed to write into its socket buffer.
pub fn throughput(args: ThroughputArgs) -> i32 {
    let mut stream = match dial::connect(&args.target) {
        Ok(stream) => stream,
        Err(err) => return report::connect_failed(&err),
    };
    let buf = vec![0x5au8; THROUGHPUT_WRITE];
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.secs);
    let mut run = || -> io::Result<u64> {
        stream.write_all(b"S")?;
        while Instant::now() < deadline {
            stream.write_all(&buf)?;
        }
        stream.shutdown(Shutdown::Write)?;
        let mut count = [0u8; 8];
        stream.read_exact(&mut count)?;
        Ok(u64::from_le_bytes(count))
    };
    let bytes = match run() {
        Ok(bytes) => bytes,
        Err(err) => return report::io_failed(&err),
    };
    let secs = start.elapsed().as_secs_f64();
    report::emit(&json!({
        "bytes": bytes,
        "secs": secs,
        "gbit_per_s": bytes as f64 * 8.0 / secs / 1e9,
    }));
    EXIT_OK
}

/// One-byte round trips in ping-pong mode with Nagle off.
pub fn latency(args: LatencyArgs) -> i32 {
    let mut stream = match dial::connect(&args.target) {
        Ok(stream) => stream,
        Err(err) => return report::connect_failed(&err),
    };
    let mut samples = Vec::with_capacity(args.count);
    let mut run = || -> io::Result<()> {
        stream.set_nodelay(true)?;
        stream.write_all(b"P")?;
        let mut byte = [0u8; 1];
        for i in 0..args.warmup + args.count {
            let sent = Instant::now();
            stream.write_all(b"x")?;
            stream.read_exact(&mut byte)?;
            if i >= args.warmup {
                samples.push(sent.elapsed());
            }
        }
        Ok(())
    };
    if let Err(err) = run() {
        return report::io_failed(&err);
    }
    samples.sort_unstable();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = if samples.is_empty() {
        0.0
    } else {
        samples.iter().map(|&d| micros(d)).sum::<f64>() / samples.len() as f64
    };
    report::emit(&json!({
        "count": samples.len(),
        "p50_us": percentile(&samples, 50.0).map(micros),
        "p99_us": percentile(&samples, 99.0).map(micros),
        "mean_us": mean,
    }));
    EXIT_OK
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Connect, exchange one byte, close, in a loop on `--threads` threads for `--secs`.
pub fn connrate(args: ConnrateArgs) -> i32 {
    let conns = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let first_error = std::sync::Mutex::new(None::<String>);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.secs);
    std::thread::scope(|scope| {
        for _ in 0..args.threads.max(1) {
            scope.spawn(|| {
                while Instant::now() < deadline {
                    match exchange_one(&args) {
                        Ok(()) => {
                            conns.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            first.get_or_insert_with(|| report::kind_name(&err));
                            // A refused or unreachable target fails at once: do not spin.
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let conns = conns.into_inner();
    report::emit(&json!({
        "conns": conns,
        "secs": secs,
        "per_sec": conns as f64 / secs,
        "errors": errors.into_inner(),
        "first_error": first_error.into_inner().unwrap_or_else(|e| e.into_inner()),
    }));
    EXIT_OK
}

fn exchange_one(args: &ConnrateArgs) -> io::Result<()> {
    let mut stream = dial::connect(&args.target)?;
    stream.set_nodelay(true)?;
    stream.write_all(b"Px")?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)
}

/// Opens `--count` ping-pong connections and keeps them open until stdin reaches EOF (or the
/// process is killed): load for connection-tracking and drain tests.
pub fn hold(args: HoldArgs) -> i32 {
    let mut held = Vec::with_capacity(args.count);
    for opened in 0..args.count {
        let mut stream = match dial::connect(&args.target) {
            Ok(stream) => stream,
            Err(err) => {
                report::emit(&json!({
                    "ok": false,
                    "error": "connect",
                    "kind": report::kind_name(&err),
                    "message": err.to_string(),
                    "opened": opened,
                }));
                return EXIT_CONNECT;
            }
        };
        if let Err(err) = stream.write_all(b"P") {
            return report::io_failed(&err);
        }
        held.push(stream);
    }
    report::emit(&json!({ "event": "holding", "count": held.len() }));
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    drop(held);
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_micros(50)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_micros(99)));
        assert_eq!(percentile(&samples[..1], 99.0), Some(Duration::from_micros(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
