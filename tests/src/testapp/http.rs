//! `http`: HTTP/1.1 requests through a proxy (Envoy or the Weft waypoint), counting which
//! version of the app answered. One connection per request, so every request is routed
//! afresh and a route change shows up at once.
//!
//! [`get`] is also how a chaining server (`serve --call`) calls its upstreams.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cli::HttpArgs;
use super::dial;
use super::report::{self, EXIT_OK};

/// A reply: its status and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One `GET path` on `stream` (`Connection: close`) with `Host: host` and `headers`; reads
/// the whole reply.
pub fn get(stream: TcpStream, host: &str, path: &str, headers: &[(String, String)]) -> io::Result<Response> {
    let mut stream = stream;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {status_line:?}"))
    })?;
    let mut content_length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = Vec::new();
    match content_length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        }
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(Response { status, body })
}

/// The version to count for a reply body: the top-level `version`, or with `--version-of
/// SERVICE` the version of the first upstream the chain called as SERVICE (`calls[].host`'s
/// first label), searched depth first.
pub fn version_of(body: &Value, service: Option<&str>) -> Option<String> {
    let Some(service) = service else {
        return body["version"].as_str().map(str::to_owned);
    };
    let calls = body["calls"].as_array()?;
    calls
        .iter()
        .find(|c| c["host"].as_str().and_then(|h| h.split('.').next()) == Some(service))
        .and_then(|c| c["reply"]["version"].as_str().map(str::to_owned))
        .or_else(|| calls.iter().find_map(|c| version_of(&c["reply"], Some(service))))
}

/// What every client thread adds up.
#[derive(Default)]
struct Tally {
    versions: BTreeMap<String, u64>,
    statuses: BTreeMap<u16, u64>,
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    /// Per answered request (any status), from connect to the last byte.
    latencies: Vec<Duration>,
}

/// Sends `--count` requests (or keeps going for `--secs`) from `--concurrency` threads,
/// then prints one summary line: `{"requests","ok","failed","versions":{..},"statuses":{..},
/// "latency_ms":{"p50","p90","max"},"first_error"}`. With `--trace` it also prints
/// `{"t_ms","status","version"}` per request first.
pub fn http(args: HttpArgs) -> i32 {
    let start = Instant::now();
    let deadline = args.secs.map(|s| start + Duration::from_secs_f64(s));
    let headers: Vec<(String, String)> = args
        .headers
        .iter()
        .map(|h| {
            let (name, value) = h.split_once(':').unwrap_or((h.as_str(), ""));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let claimed = AtomicU64::new(0);
    let tally = Mutex::new(Tally::default());
    let worker = || {
        loop {
            let more = match deadline {
                Some(d) => Instant::now() < d,
                // Threads claim request numbers, so --count is exact whatever the concurrency.
                None => claimed.fetch_add(1, Ordering::Relaxed) < args.count,
            };
            if !more {
                break;
            }
            let sent = Instant::now();
            let reply = dial::connect(&args.target).and_then(|s| get(s, &args.host, &args.path, &headers));
            let took = sent.elapsed();
            let mut t = tally.lock().expect("tally");
            match reply {
                Ok(reply) => {
                    let body = serde_json::from_slice::<Value>(&reply.body).unwrap_or(Value::Null);
                    let version = version_of(&body, args.version_of.as_deref());
                    *t.statuses.entry(reply.status).or_default() += 1;
                    t.latencies.push(took);
                    if reply.status == 200 {
                        t.ok += 1;
                        *t.versions.entry(version.clone().unwrap_or_else(|| "?".into())).or_default() += 1;
                    } else {
                        t.failed += 1;
                        t.first_error.get_or_insert_with(|| format!("status {}", reply.status));
                    }
                    if args.trace {
                        report::emit(&json!({
                            "t_ms": start.elapsed().as_millis() as u64,
                            "status": reply.status,
                            "version": version,
                        }));
                    }
                }
                Err(err) => {
                    t.failed += 1;
                    t.first_error.get_or_insert_with(|| format!("{}: {err}", report::kind_name(&err)));
                    if args.trace {
                        report::emit(&json!({ "t_ms": start.elapsed().as_millis() as u64, "status": 0 }));
                    }
                }
            }
            drop(t);
            if let Some(pause) = args.interval_ms {
                std::thread::sleep(Duration::from_millis(pause));
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..args.concurrency.max(1) {
            scope.spawn(worker);
        }
    });
    let mut t = tally.into_inner().expect("tally");
    t.latencies.sort_unstable();
    let percentile = |p: f64| -> Option<f64> {
        let last = t.latencies.len().checked_sub(1)?;
        let at = ((last as f64) * p).round() as usize;
        Some(t.latencies[at].as_secs_f64() * 1000.0)
    };
    report::emit(&json!({
        "requests": t.ok + t.failed,
        "ok": t.ok,
        "failed": t.failed,
        "versions": t.versions,
        "statuses": t.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "latency_ms": { "p50": percentile(0.5), "p90": percentile(0.9), "max": percentile(1.0) },
        "first_error": t.first_error,
    }));
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_of_finds_the_named_service_down_the_chain() {
        let body = json!({
            "name": "productpage-v1", "version": "v1",
            "calls": [
                { "host": "details.bookinfo.svc.cluster.local", "status": 200,
                  "reply": { "name": "details-v1", "version": "v1" } },
                { "host": "reviews", "status": 200,
                  "reply": { "name": "reviews-v3", "version": "v3", "calls": [
                      { "host": "ratings.bookinfo", "status": 200,
                        "reply": { "name": "ratings-v1", "version": "v1b" } } ] } },
            ],
        });
        assert_eq!(version_of(&body, None).as_deref(), Some("v1"));
        assert_eq!(version_of(&body, Some("reviews")).as_deref(), Some("v3"));
        assert_eq!(version_of(&body, Some("ratings")).as_deref(), Some("v1b"));
        assert_eq!(version_of(&body, Some("details")).as_deref(), Some("v1"));
        assert_eq!(version_of(&body, Some("nothing")), None);
    }
}
