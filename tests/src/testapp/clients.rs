//! The correctness clients: `echo` (every byte comes back, in order) and `hello` (who
//! answered, and which address it saw).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use serde_json::json;

use super::cli::{EchoArgs, HelloArgs};
use super::dial;
use super::pattern;
use super::report::{self, EXIT_MISMATCH, EXIT_OK};

const CHUNK: usize = 64 * 1024;

/// Sends `E` and `--bytes` of the pattern on one thread while checking the echo on this one.
pub fn echo(args: EchoArgs) -> i32 {
    let start = Instant::now();
    let mut stream = match dial::connect(&args.target) {
        Ok(stream) => stream,
        Err(err) => return report::connect_failed(&err),
    };
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let local = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let sender = match stream.try_clone() {
        Ok(writer) => std::thread::spawn(move || send_pattern(writer, args.bytes)),
        Err(err) => return report::io_failed(&err),
    };
    let received = check_echo(&mut stream, args.bytes);
    if !matches!(received, Ok(Checked::Complete(_))) {
        // Unblocks the sender, which may be stuck writing to a server that no one reads.
        let _ = stream.shutdown(Shutdown::Both);
    }
    let sent = sender.join().expect("the sender thread panicked");

    match (received, sent) {
        (Err(err), _) => report::io_failed(&err),
        // A mismatch is the more telling failure: a send error after it is only its echo.
        (Ok(Checked::Mismatch { offset, received }), _) => {
            report::emit(&json!({
                "ok": false,
                "error": "mismatch",
                "offset": offset,
                "sent": args.bytes,
                "received": received,
                "peer": peer,
                "local": local,
            }));
            EXIT_MISMATCH
        }
        (Ok(Checked::Complete(_)), Err(err)) => report::io_failed(&err),
        (Ok(Checked::Complete(received)), Ok(())) => {
            report::emit(&json!({
                "ok": true,
                "sent": args.bytes,
                "received": received,
                "peer": peer,
                "local": local,
                "ms": start.elapsed().as_millis() as u64,
            }));
            EXIT_OK
        }
    }
}

fn send_pattern(mut stream: TcpStream, bytes: u64) -> io::Result<()> {
    stream.write_all(b"E")?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < bytes {
        let len = (bytes - offset).min(CHUNK as u64) as usize;
        pattern::fill(offset, &mut buf[..len]);
        stream.write_all(&buf[..len])?;
        offset += len as u64;
    }
    stream.shutdown(Shutdown::Write)
}

enum Checked {
    /// Exactly the pattern came back, this many bytes, then EOF.
    Complete(u64),
    /// The byte at `offset` was wrong (or was one too many, or EOF came before it).
    Mismatch { offset: u64, received: u64 },
}

fn check_echo(stream: &mut TcpStream, expected: u64) -> io::Result<Checked> {
    let mut buf = vec![0u8; CHUNK];
    let mut scratch = Vec::with_capacity(CHUNK);
    let mut received = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let in_pattern = (expected.saturating_sub(received)).min(n as u64) as usize;
        if let Some(offset) = pattern::first_mismatch(received, &chunk[..in_pattern], &mut scratch) {
            return Ok(Checked::Mismatch { offset, received: received + n as u64 });
        }
        if in_pattern < n {
            // More bytes than were sent.
            return Ok(Checked::Mismatch { offset: expected, received: received + n as u64 });
        }
        received += n as u64;
    }
    if received < expected {
        return Ok(Checked::Mismatch { offset: received, received });
    }
    Ok(Checked::Complete(received))
}

/// Sends `H` and prints the server's `NAME VERSION PEER` line.
pub fn hello(args: HelloArgs) -> i32 {
    let mut stream = match dial::connect(&args.target) {
        Ok(stream) => stream,
        Err(err) => return report::connect_failed(&err),
    };
    let mut reply = String::new();
    let result = stream.write_all(b"H").and_then(|()| stream.read_to_string(&mut reply));
    if let Err(err) = result {
        return report::io_failed(&err);
    }
    report::emit(&json!({ "ok": true, "reply": reply.trim_end() }));
    EXIT_OK
}
