//! `http`: HTTP/1.1 requests through a proxy (Envoy or the Weft waypoint), counting which
//! version of the app answered. One connection per request, so every request is routed
//! afresh and a route change shows up at once.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cli::HttpArgs;
use super::dial;
use super::report::{self, EXIT_OK};

/// What one request got back.
struct Reply {
    status: u16,
    version: Option<String>,
}

fn request(args: &HttpArgs) -> io::Result<Reply> {
    let mut stream = dial::connect(&args.target)?;
    let mut head = format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", args.path, args.host);
    for h in &args.headers {
        let (name, value) = h.split_once(':').unwrap_or((h.as_str(), ""));
        head.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
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
    let version =
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["version"].as_str().map(str::to_owned));
    Ok(Reply { status, version })
}

/// Sends `--count` requests (or keeps going for `--secs`), then prints one summary line:
/// `{"requests","ok","failed","versions":{..},"statuses":{..},"first_error"}`. With
/// `--trace` it also prints `{"t_ms","status","version"}` per request first.
pub fn http(args: HttpArgs) -> i32 {
    let start = Instant::now();
    let deadline = args.secs.map(|s| start + Duration::from_secs_f64(s));
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut requests, mut ok, mut failed) = (0u64, 0u64, 0u64);
    let mut first_error: Option<String> = None;
    loop {
        let done = match deadline {
            Some(d) => Instant::now() >= d,
            None => requests >= args.count,
        };
        if done {
            break;
        }
        requests += 1;
        match request(&args) {
            Ok(reply) => {
                *statuses.entry(reply.status).or_default() += 1;
                if reply.status == 200 {
                    ok += 1;
                    *versions.entry(reply.version.clone().unwrap_or_else(|| "?".into())).or_default() += 1;
                } else {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("status {}", reply.status));
                }
                if args.trace {
                    report::emit(&json!({
                        "t_ms": start.elapsed().as_millis() as u64,
                        "status": reply.status,
                        "version": reply.version,
                    }));
                }
            }
            Err(err) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{}: {err}", report::kind_name(&err)));
                if args.trace {
                    report::emit(&json!({ "t_ms": start.elapsed().as_millis() as u64, "status": 0 }));
                }
            }
        }
        if let Some(pause) = args.interval_ms {
            std::thread::sleep(Duration::from_millis(pause));
        }
    }
    report::emit(&json!({
        "requests": requests,
        "ok": ok,
        "failed": failed,
        "versions": versions,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "first_error": first_error,
    }));
    EXIT_OK
}
