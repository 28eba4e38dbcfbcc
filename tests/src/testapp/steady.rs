//! `steady`: one long-lived connection carrying a small chunk of the echo pattern at a
//! steady pace, each chunk's echo checked before the next is sent. It keeps a connection
//! busy for minutes without moving much data: what a test needs to see a connection live
//! through certificate rotations, or to see it break when an agent dies under it.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use serde_json::json;

use super::cli::SteadyArgs;
use super::dial;
use super::pattern;
use super::report::{self, EXIT_IO, EXIT_MISMATCH, EXIT_OK};

/// Prints `{"event":"streaming",…}` after the first chunk came back (a test waits for it to
/// know the connection is in flight), then one result line:
/// `{"ok":true,"chunks":N,"bytes":B,"secs":S,"max_rtt_ms":M,"peer":…,"local":…}`, or
/// `{"ok":false,"error":"io"|"mismatch",…,"chunks":N}` with the chunks that made it.
pub fn steady(args: SteadyArgs) -> i32 {
    let mut stream = match dial::connect(&args.target) {
        Ok(stream) => stream,
        Err(err) => return report::connect_failed(&err),
    };
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let local = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.secs);
    let interval = Duration::from_millis(args.interval_ms);
    let mut sent = vec![0u8; args.chunk];
    let mut echoed = vec![0u8; args.chunk];
    let mut offset = 0u64;
    let mut chunks = 0u64;
    let mut max_rtt = Duration::ZERO;

    let failed = |kind: &str, err: &io::Error, chunks: u64, offset: u64| {
        report::emit(&json!({
            "ok": false,
            "error": kind,
            "kind": report::kind_name(err),
            "message": err.to_string(),
            "chunks": chunks,
            "bytes": offset,
            "secs": start.elapsed().as_secs_f64(),
            "peer": peer,
        }));
        EXIT_IO
    };
    if let Err(err) = stream.write_all(b"E") {
        return failed("io", &err, 0, 0);
    }
    loop {
        let sent_at = Instant::now();
        pattern::fill(offset, &mut sent);
        if let Err(err) = stream.write_all(&sent).and_then(|()| stream.read_exact(&mut echoed)) {
            return failed("io", &err, chunks, offset);
        }
        if echoed != sent {
            let at = offset + echoed.iter().zip(&sent).position(|(a, b)| a != b).unwrap_or(0) as u64;
            report::emit(
                &json!({"ok": false, "error": "mismatch", "offset": at, "chunks": chunks, "peer": peer}),
            );
            return EXIT_MISMATCH;
        }
        max_rtt = max_rtt.max(sent_at.elapsed());
        offset += args.chunk as u64;
        chunks += 1;
        if chunks == 1 {
            report::emit(&json!({"event": "streaming", "peer": peer, "local": local}));
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(interval.saturating_sub(sent_at.elapsed()));
    }
    // A clean end: our half-close reaches the server, whose half-close comes back with
    // nothing after the last chunk.
    let mut rest = Vec::new();
    if let Err(err) = stream.shutdown(Shutdown::Write).and_then(|()| stream.read_to_end(&mut rest).map(drop))
    {
        return failed("io", &err, chunks, offset);
    }
    if !rest.is_empty() {
        report::emit(
            &json!({"ok": false, "error": "mismatch", "offset": offset, "chunks": chunks, "extra": rest.len()}),
        );
        return EXIT_MISMATCH;
    }
    report::emit(&json!({
        "ok": true,
        "chunks": chunks,
        "bytes": offset,
        "secs": start.elapsed().as_secs_f64(),
        "max_rtt_ms": max_rtt.as_millis() as u64,
        "peer": peer,
        "local": local,
    }));
    EXIT_OK
}
